/* figure.c - one module kind's figures: the modules of the kind by layer, the
 * data files, the parameters each template reads, and gnuplot drawing each
 * figure into a private temporary that is renamed over it. */
#define _GNU_SOURCE
#include "plot/draw.h"
#include "dora/hub.h"
#include "core/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the modules of a kind --------------------------------------------- */

static int by_layer(const void *a, const void *b, void *ctx)
{
    const dora_result *r = ctx;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int32_t li = r->layer[i], lj = r->layer[j];
    if (li != lj)
        return li < lj ? -1 : 1;
    return util_natural_cmp(r->modules[i], r->modules[j]);
}

int plot_pick_modules(const dora_result *r, const char *kind, plot_pick *p)
{
    p->run = r;
    p->n = 0;
    p->mods = calloc(r->nmodules + 1, sizeof *p->mods);
    if (!p->mods)
        return -1;
    for (size_t l = 0; l < r->nmodules; l++) {
        char *k = dora_module_kind(r->modules[l]);
        if (!k)
            return -1;
        if (strcmp(k, kind) == 0)
            p->mods[p->n++] = l;
        free(k);
    }
    qsort_r(p->mods, p->n, sizeof *p->mods, by_layer, (void *)r);
    return 0;
}

/* ---- parameters ---------------------------------------------------------- */

const char *const plot_fig_names[PLOT_NFIGS] = {"fig2", "fig8", "trajectory"};

/* Axis multiplier and label: values below 0.01 are shown x 10^k. */
static void axis_scale(double maxabs, const char *sym, double *mult, char *label, size_t n)
{
    int e = maxabs > 0 ? (int)floor(log10(maxabs)) : 0;
    if (e <= -2) {
        *mult = pow(10.0, -e);
        snprintf(label, n, "%s (×10^{%d})", sym, e);
    } else {
        *mult = 1;
        snprintf(label, n, "%s", sym);
    }
}

static const dora_regression *find_reg(const dora_regression *g, size_t n, const char *run,
                                       const char *kind)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(g[i].run, run) == 0 && strcmp(g[i].kind, kind) == 0)
            return &g[i];
    return NULL;
}

static const char *method_label(const char *m)
{
    static const char *const names[][2] = {{"ft", "FT"},         {"lora", "LoRA"},
                                           {"dora", "DoRA"},     {"ia3", "IA3"},
                                           {"adalora", "AdaLoRA"}, {"vera", "VeRA"},
                                           {"loha", "LoHa"},     {"lokr", "LoKr"},
                                           {"glora", "GLoRA"},   {"oft", "OFT"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(m, names[i][0]) == 0)
            return names[i][1];
    return m;
}

/* The base's name for titles: its hub repository id (not a snapshot's hash),
 * else the file or folder name. */
static char *model_name(const dora_result *r)
{
    char *id = dora_hub_repo_id(r->base_path);
    if (id)
        return id;
    char *b = util_basename(r->base_path);
    if (b && util_has_suffix(b, ".safetensors"))
        b[strlen(b) - strlen(".safetensors")] = '\0';
    return b;
}

/* "METHOD (NAME)", NAME cut to 28 bytes (at a UTF-8 boundary) with an ellipsis,
 * so that a title fits its panel and a legend its column. */
void plot_run_title(char *out, size_t n, const dora_result *r)
{
    size_t len = strlen(r->name), keep = len;
    if (len > 28) {
        keep = 27;
        while (keep > 0 && ((unsigned char)r->name[keep] & 0xC0) == 0x80)
            keep--;
    }
    snprintf(out, n, "%s (%.*s%s)", method_label(r->method), (int)keep, r->name,
             keep < len ? "…" : "");
}

/* One figure to draw: which, of what, in which format. */
typedef struct plot_fig {
    int fig;            /* index into plot_fig_names[] */
    const char *kind, *format, *model;
    const char *outfile;
    size_t np;
    const plot_extent *x;
    const plot_where *w;
} plot_fig;

/* The terminal, files, title, counts, the layers and steps drawn, the arrays. */
static void write_head(FILE *p, const plot_fig *f)
{
    const plot_extent *x = f->x;
    size_t np = f->np;
    char path[4200], title[1024];
    static const char *const what[PLOT_NFIGS] = {
        "ΔD vs ΔM", "ΔM and ΔD by layer at the final step", "ΔM and ΔD over training"};
    static const char *const data[PLOT_NFIGS] = {"fig2.dat", "fig8.dat", "traj.dat"};
    snprintf(path, sizeof path, "%s/%s", f->w->work, data[f->fig]);
    snprintf(title, sizeof title, "%s, %s, model %s", what[f->fig], f->kind,
             f->model ? f->model : "?");
    plot_gp_files(p, f->format, f->outfile, path, title);
    plot_gp_assign(p, "tdir", f->w->tdir);
    fprintf(p, "nruns = %zu\noverlay = %d\nnlayers = %zu\nnsteps = %zu\n", np, f->w->overlay,
            x->nlayers, x->nsteps);
    fprintf(p, "array run_title[%zu]\narray xs[%zu]\narray ys[%zu]\narray xlab[%zu]\n"
               "array ylab[%zu]\narray slope[%zu]\narray icpt[%zu]\narray corr[%zu]\n"
               "array defined[%zu]\narray wcorr[%zu]\narray wdefined[%zu]\n"
               "array npts[%zu]\narray step_num[%zu]\narray layer_num[%zu]\n",
            np, np, np, np, np, np, np, np, np, np, np, np, x->nsteps, x->nlayers);
    /* the 95% intervals: Fisher-z of r, the layer bootstrap of r and of within-step r */
    static const char *const ci_arrays[] = {"flo", "fhi", "fdef", "blo", "bhi", "bdef",
                                            "wlo", "whi", "wbdef"};
    for (size_t k = 0; k < sizeof ci_arrays / sizeof ci_arrays[0]; k++)
        fprintf(p, "array %s[%zu]\n", ci_arrays[k], np);
    for (size_t s = 0; s < x->nsteps; s++)
        fprintf(p, "step_num[%zu] = %lld\n", s + 1, (long long)x->steps[s]);
    for (size_t l = 0; l < x->nlayers; l++)
        fprintf(p, "layer_num[%zu] = %d\n", l + 1, (int)x->layers[l]);
}

/* Panel I (1-based) of fig. 2: the run's title, axes and regression (RG, or
 * zeros when there is none). The axes' multipliers are the run's own, or, in
 * one panel for all runs, those of every run (X). */
static void write_panel(FILE *p, size_t i, const plot_pick *pk, const dora_regression *rg,
                        const plot_extent *x, int overlay)
{
    const dora_result *r = pk->run;
    double mx = 0, my = 0, xm, ym;
    for (size_t s = 0; s < r->nsteps; s++)
        for (size_t j = 0; j < pk->n; j++) {
            size_t l = pk->mods[j];
            mx = fmax(mx, fabs(r->delta_d[s * r->nmodules + l]));
            my = fmax(my, fabs(r->delta_m[s * r->nmodules + l]));
        }
    if (overlay) {
        mx = x->maxd;
        my = x->maxm;
    }
    char xl[128], yl[128], rt[512];
    axis_scale(mx, "ΔD", &xm, xl, sizeof xl);
    axis_scale(my, "ΔM", &ym, yl, sizeof yl);
    plot_run_title(rt, sizeof rt, r);
    fprintf(p, "run_title[%zu] = ", i);
    plot_gp_str(p, rt);
    fprintf(p, "\nxlab[%zu] = ", i);
    plot_gp_str(p, xl);
    fprintf(p, "\nylab[%zu] = ", i);
    plot_gp_str(p, yl);
    fprintf(p, "\nxs[%zu] = %.17g\nys[%zu] = %.17g\n", i, xm, i, ym);
    fprintf(p, "slope[%zu] = %.17g\nicpt[%zu] = %.17g\ncorr[%zu] = %.17g\n", i,
            rg ? rg->slope : 0.0, i, rg ? rg->intercept : 0.0, i, rg ? rg->r : 0.0);
    fprintf(p, "defined[%zu] = %d\nwcorr[%zu] = %.17g\nwdefined[%zu] = %d\n"
               "npts[%zu] = %lld\n",
            i, rg ? rg->defined : 0, i, rg ? rg->within_r : 0.0, i, rg ? rg->within_defined : 0,
            i, rg ? rg->n : 0LL);
    const double zero[2] = {0, 0};
    const struct {
        const char *lo, *hi, *def;
        int defined;
        const double *v;
    } ci[3] = {{"flo", "fhi", "fdef", rg && rg->fisher_defined, rg ? rg->fisher_ci : zero},
               {"blo", "bhi", "bdef", rg && rg->boot_defined, rg ? rg->boot_ci : zero},
               {"wlo", "whi", "wbdef", rg && rg->within_boot_defined,
                rg ? rg->within_boot_ci : zero}};
    for (int k = 0; k < 3; k++)
        fprintf(p, "%s[%zu] = %.17g\n%s[%zu] = %.17g\n%s[%zu] = %d\n", ci[k].lo, i, ci[k].v[0],
                ci[k].hi, i, ci[k].v[1], ci[k].def, i, ci[k].defined);
}

/* The parameters file PAR of figure F: head, a panel per run, fig. 8's scales. */
static int write_params(const char *par, const plot_fig *f, const plot_pick *picks,
                        const dora_regression *g, size_t ng, dora_err *err)
{
    FILE *p = fopen(par, "w");
    if (!p)
        return dora_errf(err, "'%s': cannot write: %s", par, strerror(errno));
    write_head(p, f);
    for (size_t i = 0; i < f->np; i++)
        write_panel(p, i + 1, &picks[i], find_reg(g, ng, picks[i].run->name, f->kind), f->x,
                    f->w->overlay);
    double ms, ds;
    char ml[128], dl[128];
    axis_scale(f->x->maxm8, "ΔM", &ms, ml, sizeof ml);
    axis_scale(f->x->maxd8, "ΔD", &ds, dl, sizeof dl);
    fprintf(p, "mscale = %.17g\ndscale = %.17g\n", ms, ds);
    plot_gp_assign(p, "mlab", ml);
    plot_gp_assign(p, "dlab", dl);
    if (ferror(p) | (fclose(p) != 0))
        return dora_errf(err, "'%s': cannot write", par);
    return 0;
}

/* ---- drawing ------------------------------------------------------------- */

/* Figure F (its outfile aside) into OUT: gnuplot writes into our private folder
 * beside the figure, where nothing can be planted at that name; renamed over the
 * figure when gnuplot succeeds. */
static int draw_one(plot_fig *f, const char *out, const plot_pick *picks,
                    const dora_regression *g, size_t ng, dora_err *err)
{
    char par[4096], errp[4096], tmpl[4096];
    snprintf(par, sizeof par, "%s/params.gp", f->w->work);
    snprintf(errp, sizeof errp, "%s/gnuplot.err", f->w->work);
    snprintf(tmpl, sizeof tmpl, "%s/%s.gp", f->w->tdir, plot_fig_names[f->fig]);
    util_out o;
    if (util_out_begin(&o, out, err) != 0)
        return -1;
    f->outfile = o.tmp;
    int rc = 0;
    if (write_params(par, f, picks, g, ng, err) != 0 || plot_run_gnuplot(par, tmpl, errp, err) != 0)
        rc = -1;
    else if (!util_is_file(o.tmp))
        rc = dora_errf(err, "'%s': gnuplot wrote no file", out);
    if (rc != 0) {
        util_out_abort(&o);
        return -1;
    }
    return util_out_commit(&o, err);
}

int plot_draw_kind(const char *kind, const plot_pick *picks, size_t np, const dora_regression *g,
                   size_t ng, char *const *formats, const plot_where *w, int *drawn,
                   dora_err *err)
{
    plot_extent x;
    if (plot_extent_of(picks, np, &x) != 0) {
        plot_extent_release(&x);
        return dora_errf(err, "out of memory");
    }
    int rc = plot_write_data(w->work, picks, np, &x, err);
    char *model = model_name(picks[0].run);
    for (size_t fi = 0; formats[fi] && rc == 0; fi++)
        for (int k = 0; k < PLOT_NFIGS && rc == 0; k++) {
            char out[4096];
            snprintf(out, sizeof out, "%s/%s_%s.%s", w->outdir, plot_fig_names[k], kind,
                     formats[fi]);
            plot_fig f = {k, kind, formats[fi], model, NULL, np, &x, w};
            if ((rc = draw_one(&f, out, picks, g, ng, err)) == 0)
                (*drawn)++;
        }
    free(model);
    plot_extent_release(&x);
    return rc;
}
