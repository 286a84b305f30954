/* figure.c - one module kind's figures: the modules of the kind by layer, the
 * data files, the parameters each template reads, and gnuplot drawing each
 * figure into a private temporary that is renamed over it. */
#define _GNU_SOURCE
#include "plot/draw.h"
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

/* ---- data files ---------------------------------------------------------- */

/* What the templates need beyond the data: the largest counts, and the largest
 * |dM| and |dD| at the final steps (the axes of fig. 8). */
typedef struct plot_extent {
    size_t nlayers, nsteps;
    double maxm8, maxd8;
} plot_extent;

/* DAT2: "dD dM layer step final" per (run, step, layer); DAT8: "layer dM dD" at
 * each run's final step; runs separated by two blank lines (gnuplot's index). */
static int write_data(const char *dat2, const char *dat8, const char *work,
                      const plot_pick *picks, size_t np, plot_extent *x, dora_err *err)
{
    FILE *f2 = fopen(dat2, "w"), *f8 = fopen(dat8, "w");
    if (!f2 || !f8) {
        if (f2)
            fclose(f2);
        if (f8)
            fclose(f8);
        return dora_errf(err, "'%s': cannot write the plot data: %s", work, strerror(errno));
    }
    *x = (plot_extent){0, 0, 0, 0};
    for (size_t i = 0; i < np; i++) {
        const dora_result *r = picks[i].run;
        size_t L = r->nmodules, S = r->nsteps;
        if (picks[i].n > x->nlayers)
            x->nlayers = picks[i].n;
        if (S > x->nsteps)
            x->nsteps = S;
        for (size_t s = 0; s < S; s++)
            for (size_t j = 0; j < picks[i].n; j++) {
                size_t l = picks[i].mods[j];
                fprintf(f2, "%.17g %.17g %zu %zu %d\n", r->delta_d[s * L + l], r->delta_m[s * L + l],
                        j, s + 1, s + 1 == S);
            }
        for (size_t j = 0; j < picks[i].n; j++) {
            size_t l = picks[i].mods[j];
            double m = r->delta_m[(S - 1) * L + l], d = r->delta_d[(S - 1) * L + l];
            fprintf(f8, "%zu %.17g %.17g\n", j, m, d);
            x->maxm8 = fmax(x->maxm8, fabs(m));
            x->maxd8 = fmax(x->maxd8, fabs(d));
        }
        fputs("\n\n", f2);
        fputs("\n\n", f8);
    }
    int bad = ferror(f2) || ferror(f8);
    bad |= fclose(f2) != 0;
    bad |= fclose(f8) != 0;
    if (bad)
        return dora_errf(err, "'%s': cannot write the plot data", work);
    return 0;
}

/* ---- parameters ---------------------------------------------------------- */

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
    return strcmp(m, "ft") == 0 ? "FT" : strcmp(m, "lora") == 0 ? "LoRA" : "DoRA";
}

static char *model_name(const dora_result *r)
{
    char *b = util_basename(r->base_path);
    if (b && util_has_suffix(b, ".safetensors"))
        b[strlen(b) - strlen(".safetensors")] = '\0';
    return b;
}

/* One figure to draw: which, of what, in which format, from which data. */
typedef struct plot_fig {
    int fig;            /* 2 or 8 */
    const char *kind, *format, *model;
    const char *outfile, *datafile;
    size_t np;
    const plot_extent *x;
} plot_fig;

/* The terminal, files, title, counts, array declarations and step labels. */
static void write_head(FILE *p, const plot_fig *f)
{
    size_t np = f->np, nsteps = f->x->nsteps;
    fprintf(p, "term_kind = ");
    plot_gp_str(p, f->format);
    fprintf(p, "\noutfile = ");
    plot_gp_str(p, f->outfile);
    fprintf(p, "\ndatafile = ");
    plot_gp_str(p, f->datafile);
    char title[1024];
    const char *model = f->model ? f->model : "?";
    if (f->fig == 2)
        snprintf(title, sizeof title, "ΔD vs ΔM, %s, model %s", f->kind, model);
    else
        snprintf(title, sizeof title, "ΔM and ΔD by layer at the final step, %s, model %s",
                 f->kind, model);
    fprintf(p, "\nmain_title = ");
    plot_gp_str(p, title);
    fprintf(p, "\nnruns = %zu\nnlayers = %zu\nnsteps = %zu\n", np, f->x->nlayers, nsteps);
    fprintf(p, "array run_title[%zu]\narray xs[%zu]\narray ys[%zu]\narray xlab[%zu]\n"
               "array ylab[%zu]\narray slope[%zu]\narray icpt[%zu]\narray corr[%zu]\n"
               "array defined[%zu]\narray wcorr[%zu]\narray wdefined[%zu]\n"
               "array npts[%zu]\narray step_label[%zu]\n",
            np, np, np, np, np, np, np, np, np, np, np, np, nsteps);
    for (size_t s = 1; s <= nsteps; s++) {
        char lab[64];
        if (s == nsteps)
            snprintf(lab, sizeof lab, "Final step");
        else
            snprintf(lab, sizeof lab, "Inter step %zu", s);
        fprintf(p, "step_label[%zu] = ", s);
        plot_gp_str(p, lab);
        fputc('\n', p);
    }
}

/* Panel I (1-based) of fig. 2: the run's title, axes and regression (RG, or
 * zeros when there is none). */
static void write_panel(FILE *p, size_t i, const plot_pick *pk, const dora_regression *rg)
{
    const dora_result *r = pk->run;
    double mx = 0, my = 0, xm, ym;
    for (size_t s = 0; s < r->nsteps; s++)
        for (size_t j = 0; j < pk->n; j++) {
            size_t l = pk->mods[j];
            mx = fmax(mx, fabs(r->delta_d[s * r->nmodules + l]));
            my = fmax(my, fabs(r->delta_m[s * r->nmodules + l]));
        }
    char xl[128], yl[128], rt[512];
    axis_scale(mx, "ΔD", &xm, xl, sizeof xl);
    axis_scale(my, "ΔM", &ym, yl, sizeof yl);
    snprintf(rt, sizeof rt, "%s (%s)", method_label(r->method), r->name);
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
        write_panel(p, i + 1, &picks[i], find_reg(g, ng, picks[i].run->name, f->kind));
    double ms, ds;
    char ml[128], dl[128];
    axis_scale(f->x->maxm8, "ΔM", &ms, ml, sizeof ml);
    axis_scale(f->x->maxd8, "ΔD", &ds, dl, sizeof dl);
    fprintf(p, "mscale = %.17g\ndscale = %.17g\nmlab = ", ms, ds);
    plot_gp_str(p, ml);
    fprintf(p, "\ndlab = ");
    plot_gp_str(p, dl);
    fputc('\n', p);
    if (fclose(p) != 0)
        return dora_errf(err, "'%s': cannot write", par);
    return 0;
}

/* ---- drawing ------------------------------------------------------------- */

int plot_draw_kind(const char *kind, const plot_pick *picks, size_t np, const dora_regression *g,
                   size_t ng, char *const *formats, const plot_where *w, int *drawn,
                   dora_err *err)
{
    char dat2[4096], dat8[4096], par[4096], errp[4096];
    snprintf(dat2, sizeof dat2, "%s/fig2.dat", w->work);
    snprintf(dat8, sizeof dat8, "%s/fig8.dat", w->work);
    snprintf(par, sizeof par, "%s/params.gp", w->work);
    snprintf(errp, sizeof errp, "%s/gnuplot.err", w->work);
    plot_extent x = {0, 0, 0, 0};
    if (write_data(dat2, dat8, w->work, picks, np, &x, err) != 0)
        return -1;

    char *model = model_name(picks[0].run);
    int rc = 0;
    for (size_t fi = 0; formats[fi] && rc == 0; fi++) {
        for (int fig = 2; fig <= 8 && rc == 0; fig += 6) {
            char out[4096], tmpl[4096];
            snprintf(out, sizeof out, "%s/fig%d_%s.%s", w->outdir, fig, kind, formats[fi]);
            /* gnuplot writes into our private folder beside the figure: nothing can be
               planted at that name; renamed over the figure when gnuplot succeeds */
            util_out o;
            if (util_out_begin(&o, out, err) != 0) {
                rc = -1;
                break;
            }
            snprintf(tmpl, sizeof tmpl, "%s/fig%d.gp", w->tdir, fig);
            plot_fig f = {fig, kind, formats[fi], model, o.tmp, fig == 2 ? dat2 : dat8, np, &x};
            if (write_params(par, &f, picks, g, ng, err) != 0 ||
                plot_run_gnuplot(par, tmpl, errp, err) != 0)
                rc = -1;
            else if (!util_is_file(o.tmp))
                rc = dora_errf(err, "'%s': gnuplot wrote no file", out);
            if (rc != 0) {
                util_out_abort(&o);
                break;
            }
            if (util_out_commit(&o, err) != 0) {
                rc = -1;
                break;
            }
            (*drawn)++;
        }
    }
    free(model);
    return rc;
}
