/* fig_heads.c - the heatmap of dM and dD per layer and attention head at each
 * run's final step (plots/heads.gp), for one module kind: from the runs'
 * per-head values (analyze.h head_*), when they have them. */
#define _GNU_SOURCE
#include "plot/draw.h"
#include "dora/stats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What heads.gp is drawn from. */
typedef struct heads_ctx {
    const char *kind, *format, *datafile;
    const dora_result *const *runs; /* [n] the runs with heads of the kind */
    size_t n;
    int64_t maxheads;
    const int32_t *layers; /* [nlayers] ascending, distinct */
    size_t nlayers;
} heads_ctx;

static int heads_params(FILE *p, const char *outfile, void *vctx)
{
    const heads_ctx *g = vctx;
    char title[1024], rt[512];
    snprintf(title, sizeof title, "ΔM and ΔD per layer and attention head at the final step, %s",
             g->kind);
    plot_gp_files(p, g->format, outfile, g->datafile, title);
    fprintf(p, "nruns = %zu\nmaxheads = %lld\nnlayers = %zu\narray layer_num[%zu]\n", g->n,
            (long long)g->maxheads, g->nlayers, g->nlayers);
    for (size_t l = 0; l < g->nlayers; l++)
        fprintf(p, "layer_num[%zu] = %d\n", l + 1, (int)g->layers[l]);
    fprintf(p, "array run_title[%zu]\narray step[%zu]\n", g->n, g->n);
    for (size_t i = 0; i < g->n; i++) {
        plot_run_title(rt, sizeof rt, g->runs[i]);
        fprintf(p, "run_title[%zu] = ", i + 1);
        plot_gp_str(p, rt);
        fprintf(p, "\nstep[%zu] = %lld\n", i + 1, (long long)g->runs[i]->steps[g->runs[i]->nsteps - 1]);
    }
    return 0;
}

/* 1 if head module H of R is of KIND, 0 if not, -1 when out of memory. */
static int head_of_kind(const dora_result *r, size_t h, const char *kind)
{
    char *k = dora_module_kind(r->modules[r->head_module[h]]);
    if (!k)
        return -1;
    int hit = strcmp(k, kind) == 0;
    free(k);
    return hit;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* heads.dat: "layer head dM dD" at the final step per head of each run's
 * modules of the kind; fills the layers and the most heads. */
static int heads_data(const char *path, heads_ctx *g, int32_t *layers, dora_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return dora_errf(err, "'%s': cannot write the plot data: %s", path, strerror(errno));
    int rc = 0;
    for (size_t i = 0; i < g->n && rc == 0; i++) {
        const dora_result *r = g->runs[i];
        const size_t NH = (size_t)r->head_offset[r->nhead_mods], s = r->nsteps - 1;
        for (size_t h = 0; h < r->nhead_mods && rc == 0; h++) {
            int hit = head_of_kind(r, h, g->kind);
            if (hit < 0)
                rc = dora_errf(err, "out of memory");
            if (hit <= 0)
                continue;
            int32_t layer = r->layer[r->head_module[h]];
            layers[g->nlayers++] = layer;
            if (r->head_count[h] > g->maxheads)
                g->maxheads = r->head_count[h];
            for (int64_t j = 0; j < r->head_count[h]; j++) {
                size_t at = s * NH + (size_t)(r->head_offset[h] + j);
                fprintf(f, "%d %lld %.17g %.17g\n", (int)layer, (long long)j, r->head_dm[at],
                        r->head_dd[at]);
            }
        }
        fputs("\n\n", f);
    }
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (rc == 0 && bad)
        rc = dora_errf(err, "'%s': cannot write the plot data", path);
    /* the layers drawn, ascending and distinct */
    qsort(layers, g->nlayers, sizeof *layers, cmp_i32);
    size_t k = 0;
    for (size_t l = 0; l < g->nlayers; l++)
        if (k == 0 || layers[k - 1] != layers[l])
            layers[k++] = layers[l];
    g->nlayers = k;
    return rc;
}

int plot_draw_heads(const char *kind, const plot_pick *picks, size_t np, char *const *formats,
                    const plot_where *w, int *drawn, dora_err *err)
{
    const dora_result **runs = calloc(np + 1, sizeof *runs);
    size_t n = 0, nmods = 0;
    int rc = 0;
    if (!runs)
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < np && rc == 0; i++) {
        const dora_result *r = picks[i].run;
        int any = 0;
        for (size_t h = 0; h < r->nhead_mods && rc == 0; h++) {
            int hit = head_of_kind(r, h, kind);
            if (hit < 0)
                rc = dora_errf(err, "out of memory");
            any |= hit > 0;
            nmods += hit > 0;
        }
        if (any)
            runs[n++] = r;
    }
    int32_t *layers = calloc(nmods + 1, sizeof *layers);
    char data[4200];
    snprintf(data, sizeof data, "%s/heads.dat", w->work);
    heads_ctx g = {kind, NULL, data, runs, n, 0, layers, 0};
    if (rc == 0 && !layers)
        rc = dora_errf(err, "out of memory");
    if (rc == 0 && n > 0)
        rc = heads_data(data, &g, layers, err);
    for (size_t fi = 0; n > 0 && formats[fi] && rc == 0; fi++) {
        char out[4096];
        snprintf(out, sizeof out, "%s/heads_%s.%s", w->outdir, kind, formats[fi]);
        g.format = formats[fi];
        if ((rc = plot_draw_template("heads", out, w, heads_params, &g, err)) == 0)
            (*drawn)++;
    }
    free(layers);
    free(runs);
    return rc;
}
