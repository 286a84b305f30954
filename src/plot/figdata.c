/* figdata.c - what one module kind's figures are drawn from: the layer and step
 * numbers they show (the union over the runs), and the data files gnuplot reads.
 *
 * A point's layer is the number in its tensor name, as /runs/NAME/layer holds it
 * (0-based, as the model numbers its layers); a module without one is drawn at
 * its position among the modules of its kind. A point's step is its real
 * training step, so that runs saved at different steps line up. */
#define _GNU_SOURCE
#include "plot/draw.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int32_t plot_layer_of(const plot_pick *p, size_t j)
{
    int32_t l = p->run->layer[p->mods[j]];
    return l >= 0 ? l : (int32_t)j;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort the N items of size SZ at V and drop repeats; the count kept. */
static size_t sort_unique(void *v, size_t n, size_t sz, int (*cmp)(const void *, const void *))
{
    qsort(v, n, sz, cmp);
    char *b = v;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || cmp(b + i * sz, b + (k - 1) * sz) != 0)
            memmove(b + k++ * sz, b + i * sz, sz);
    return k;
}

void plot_extent_release(plot_extent *x)
{
    free(x->steps);
    free(x->layers);
    memset(x, 0, sizeof *x);
}

int plot_extent_of(const plot_pick *picks, size_t np, plot_extent *x)
{
    memset(x, 0, sizeof *x);
    size_t ns = 0, nl = 0;
    for (size_t i = 0; i < np; i++) {
        ns += picks[i].run->nsteps;
        nl += picks[i].n;
    }
    x->steps = malloc((ns + 1) * sizeof *x->steps);
    x->layers = malloc((nl + 1) * sizeof *x->layers);
    if (!x->steps || !x->layers) {
        plot_extent_release(x);
        return -1;
    }
    for (size_t i = 0; i < np; i++) {
        const dora_result *r = picks[i].run;
        size_t L = r->nmodules, S = r->nsteps;
        memcpy(x->steps + x->nsteps, r->steps, S * sizeof *r->steps);
        x->nsteps += S;
        for (size_t j = 0; j < picks[i].n; j++) {
            x->layers[x->nlayers++] = plot_layer_of(&picks[i], j);
            size_t l = picks[i].mods[j];
            for (size_t s = 0; s < S; s++) {
                x->maxm = fmax(x->maxm, fabs(r->delta_m[s * L + l]));
                x->maxd = fmax(x->maxd, fabs(r->delta_d[s * L + l]));
            }
            x->maxm8 = fmax(x->maxm8, fabs(r->delta_m[(S - 1) * L + l]));
            x->maxd8 = fmax(x->maxd8, fabs(r->delta_d[(S - 1) * L + l]));
        }
    }
    x->nsteps = sort_unique(x->steps, x->nsteps, sizeof *x->steps, cmp_i64);
    x->nlayers = sort_unique(x->layers, x->nlayers, sizeof *x->layers, cmp_i32);
    return 0;
}

/* The 1-based rank of STEP among the steps of X (it is one of them). */
static size_t step_rank(const plot_extent *x, int64_t step)
{
    const int64_t *p = bsearch(&step, x->steps, x->nsteps, sizeof *x->steps, cmp_i64);
    return p ? (size_t)(p - x->steps) + 1 : 0;
}

static FILE *open_data(const char *work, const char *name, char *path, size_t n, dora_err *err)
{
    snprintf(path, n, "%s/%s", work, name);
    FILE *f = fopen(path, "w");
    if (!f)
        dora_errf(err, "'%s': cannot write the plot data: %s", path, strerror(errno));
    return f;
}

static int close_data(FILE *f, const char *path, dora_err *err)
{
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    return bad ? dora_errf(err, "'%s': cannot write the plot data", path) : 0;
}

/* fig2.dat: "dD dM layer step step_rank final" per (run, step, module); fig8.dat:
 * "layer dM dD" at each run's final step; traj.dat: "step dM dD layer" per
 * (run, module, step), a blank line after each module. Runs are separated by
 * two blank lines (gnuplot's index). */
int plot_write_data(const char *work, const plot_pick *picks, size_t np, const plot_extent *x,
                    dora_err *err)
{
    static const char *const names[] = {"fig2.dat", "fig8.dat", "traj.dat"};
    char path[3][4096];
    FILE *f[3] = {NULL, NULL, NULL};
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++)
        if (!(f[k] = open_data(work, names[k], path[k], sizeof path[k], err)))
            rc = -1;
    for (size_t i = 0; i < np && rc == 0; i++) {
        const dora_result *r = picks[i].run;
        size_t L = r->nmodules, S = r->nsteps;
        for (size_t s = 0; s < S; s++)
            for (size_t j = 0; j < picks[i].n; j++) {
                size_t l = picks[i].mods[j];
                fprintf(f[0], "%.17g %.17g %d %lld %zu %d\n", r->delta_d[s * L + l],
                        r->delta_m[s * L + l], (int)plot_layer_of(&picks[i], j),
                        (long long)r->steps[s], step_rank(x, r->steps[s]), s + 1 == S);
            }
        for (size_t j = 0; j < picks[i].n; j++) {
            size_t l = picks[i].mods[j];
            int32_t layer = plot_layer_of(&picks[i], j);
            fprintf(f[1], "%d %.17g %.17g\n", (int)layer, r->delta_m[(S - 1) * L + l],
                    r->delta_d[(S - 1) * L + l]);
            for (size_t s = 0; s < S; s++)
                fprintf(f[2], "%lld %.17g %.17g %d\n", (long long)r->steps[s],
                        r->delta_m[s * L + l], r->delta_d[s * L + l], (int)layer);
            fputc('\n', f[2]);
        }
        for (int k = 0; k < 3; k++)
            fputs(k == 2 ? "\n" : "\n\n", f[k]);
    }
    for (int k = 0; k < 3; k++)
        if (f[k] && close_data(f[k], path[k], err) != 0)
            rc = -1;
    return rc;
}
