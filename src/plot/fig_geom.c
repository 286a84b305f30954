/* fig_geom.c - the figure of where magnitude change comes from (plots/geom.gp):
 * passive and active dM against dD, a panel per run, for one module kind, and
 * the figures this file adds beside plot_fig_names (draw.h). */
#define _GNU_SOURCE
#include "plot/draw.h"
#include "dora/geom.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const plot_extra_names[PLOT_NEXTRA] = {"geom", "heads"};

int plot_draw_template(const char *tmpl_name, const char *out, const plot_where *w,
                       int (*params)(FILE *p, const char *outfile, void *ctx), void *ctx,
                       dora_err *err)
{
    char par[4096], errp[4096], tmpl[4096];
    snprintf(par, sizeof par, "%s/params.gp", w->work);
    snprintf(errp, sizeof errp, "%s/gnuplot.err", w->work);
    snprintf(tmpl, sizeof tmpl, "%s/%s.gp", w->tdir, tmpl_name);
    util_out o;
    if (util_out_begin(&o, out, err) != 0)
        return -1;
    FILE *p = fopen(par, "w");
    int rc = 0;
    if (!p)
        rc = dora_errf(err, "'%s': cannot write: %s", par, strerror(errno));
    else {
        fprintf(p, "tdir = ");
        plot_gp_str(p, w->tdir);
        fputc('\n', p);
        rc = params(p, o.tmp, ctx);
        int bad = ferror(p);
        bad |= fclose(p) != 0;
        if (rc != 0)
            rc = dora_errf(err, "out of memory");
        else if (bad)
            rc = dora_errf(err, "'%s': cannot write", par);
    }
    if (rc == 0 && plot_run_gnuplot(par, tmpl, errp, err) != 0)
        rc = -1;
    else if (rc == 0 && !util_is_file(o.tmp))
        rc = dora_errf(err, "'%s': gnuplot wrote no file", out);
    if (rc != 0) {
        util_out_abort(&o);
        return -1;
    }
    return util_out_commit(&o, err);
}

/* What geom.gp is drawn from. */
typedef struct geom_ctx {
    const char *kind, *format, *datafile;
    const plot_pick *picks; /* the runs that have delta_m_passive */
    size_t np;
    const plot_extent *x;
} geom_ctx;

static int geom_params(FILE *p, const char *outfile, void *vctx)
{
    const geom_ctx *g = vctx;
    char title[1024], rt[512];
    snprintf(title, sizeof title, "Where ΔM comes from: passive and active ΔM vs ΔD, %s", g->kind);
    plot_gp_files(p, g->format, outfile, g->datafile, title);
    fprintf(p, "nruns = %zu\nnlayers = %zu\narray layer_num[%zu]\n", g->np, g->x->nlayers,
            g->x->nlayers);
    for (size_t l = 0; l < g->x->nlayers; l++)
        fprintf(p, "layer_num[%zu] = %d\n", l + 1, (int)g->x->layers[l]);
    fprintf(p, "array run_title[%zu]\narray ratio[%zu]\narray ratio_defined[%zu]\n", g->np, g->np,
            g->np);
    for (size_t i = 0; i < g->np; i++) {
        double q;
        int r = dora_passive_ratio(g->picks[i].run, g->kind, &q);
        if (r == -2)
            return -1;
        plot_run_title(rt, sizeof rt, g->picks[i].run);
        fprintf(p, "run_title[%zu] = ", i + 1);
        plot_gp_str(p, rt);
        fprintf(p, "\nratio[%zu] = %.17g\nratio_defined[%zu] = %d\n", i + 1, q, i + 1, r == 0);
    }
    return 0;
}

/* geom.dat: "dD passive active dM layer" per (step, module) of each run, runs
 * separated by two blank lines. */
static int geom_data(const char *path, const plot_pick *picks, size_t np, dora_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return dora_errf(err, "'%s': cannot write the plot data: %s", path, strerror(errno));
    for (size_t i = 0; i < np; i++) {
        const dora_result *r = picks[i].run;
        const size_t L = r->nmodules;
        for (size_t s = 0; s < r->nsteps; s++)
            for (size_t j = 0; j < picks[i].n; j++) {
                size_t at = s * L + picks[i].mods[j];
                fprintf(f, "%.17g %.17g %.17g %.17g %d\n", r->delta_d[at],
                        r->delta_m_passive[at], r->delta_m_active[at], r->delta_m[at],
                        (int)plot_layer_of(&picks[i], j));
            }
        fputs("\n\n", f);
    }
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    return bad ? dora_errf(err, "'%s': cannot write the plot data", path) : 0;
}

int plot_draw_geom(const char *kind, const plot_pick *picks, size_t np, char *const *formats,
                   const plot_where *w, int *drawn, dora_err *err)
{
    plot_pick *have = calloc(np + 1, sizeof *have);
    if (!have)
        return dora_errf(err, "out of memory");
    size_t nh = 0;
    for (size_t i = 0; i < np; i++)
        if (picks[i].run->delta_m_passive)
            have[nh++] = picks[i];
    int rc = 0;
    plot_extent x;
    memset(&x, 0, sizeof x);
    char data[4200];
    snprintf(data, sizeof data, "%s/geom.dat", w->work);
    if (nh > 0) {
        if (plot_extent_of(have, nh, &x) != 0)
            rc = dora_errf(err, "out of memory");
        else
            rc = geom_data(data, have, nh, err);
    }
    for (size_t fi = 0; nh > 0 && formats[fi] && rc == 0; fi++) {
        char out[4096];
        snprintf(out, sizeof out, "%s/geom_%s.%s", w->outdir, kind, formats[fi]);
        geom_ctx g = {kind, formats[fi], data, have, nh, &x};
        if ((rc = plot_draw_template("geom", out, w, geom_params, &g, err)) == 0)
            (*drawn)++;
    }
    plot_extent_release(&x);
    free(have);
    return rc;
}
