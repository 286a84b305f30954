/* stats.c - regressions of dM on dD; see include/dora/stats.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/stats.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

char *dora_module_kind(const char *name)
{
    size_t n = strlen(name);
    if (util_has_suffix(name, ".weight"))
        n -= strlen(".weight");
    size_t b = n;
    while (b > 0 && name[b - 1] != '.')
        b--;
    if (b == n) /* "x." or "" : keep the whole name */
        b = 0;
    char *k = malloc(n - b + 1);
    if (k) {
        memcpy(k, name + b, n - b);
        k[n - b] = '\0';
    }
    return k;
}

int dora_linfit(const double *x, const double *y, size_t n, double *slope, double *intercept,
                double *r)
{
    if (n < 2)
        return -1;
    double mx = 0, my = 0;
    for (size_t i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    double sxx = 0, syy = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    if (!(sxx > 0) || !(syy > 0) || !isfinite(sxx) || !isfinite(syy))
        return -1;
    *slope = sxy / sxx;
    *intercept = my - *slope * mx;
    *r = sxy / sqrt(sxx * syy);
    if (*r > 1)
        *r = 1;
    if (*r < -1)
        *r = -1;
    return 0;
}

static int add(dora_regression **out, size_t *n, size_t *cap, dora_regression v)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        dora_regression *p = realloc(*out, nc * sizeof *p);
        if (!p)
            return -1;
        *out = p;
        *cap = nc;
    }
    (*out)[(*n)++] = v;
    return 0;
}

/* Regression for the modules of RUN whose kind is KIND. */
static int one(const dora_result *run, char **kinds, const char *kind, dora_regression *g)
{
    size_t S = run->nsteps, L = run->nmodules, n = 0, layers = 0;
    double *x = malloc((S * L + 1) * sizeof *x), *y = malloc((S * L + 1) * sizeof *y);
    double *cx = malloc((S * L + 1) * sizeof *cx), *cy = malloc((S * L + 1) * sizeof *cy);
    if (!x || !y || !cx || !cy) {
        free(x);
        free(y);
        free(cx);
        free(cy);
        return -1;
    }
    for (size_t l = 0; l < L; l++)
        layers += strcmp(kinds[l], kind) == 0;
    for (size_t s = 0; s < S; s++) {
        size_t first = n;
        double mx = 0, my = 0;
        for (size_t l = 0; l < L; l++) {
            if (strcmp(kinds[l], kind) != 0)
                continue;
            x[n] = run->delta_d[s * L + l];
            y[n] = run->delta_m[s * L + l];
            mx += x[n];
            my += y[n];
            n++;
        }
        size_t m = n - first;
        for (size_t i = first; i < n; i++) { /* centred on the step's mean */
            cx[i] = x[i] - mx / (double)m;
            cy[i] = y[i] - my / (double)m;
        }
    }
    g->n = (long long)n;
    g->layers = (long long)layers;
    g->defined = dora_linfit(x, y, n, &g->slope, &g->intercept, &g->r) == 0;
    double ws, wi;
    g->within_defined = dora_linfit(cx, cy, n, &ws, &wi, &g->within_r) == 0;
    if (!g->defined)
        g->slope = g->intercept = g->r = 0;
    if (!g->within_defined)
        g->within_r = 0;
    free(x);
    free(y);
    free(cx);
    free(cy);
    return 0;
}

int dora_regressions(const dora_result *runs, size_t nruns, dora_regression **out, size_t *nout)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    *nout = 0;
    for (size_t i = 0; i < nruns; i++) {
        const dora_result *run = &runs[i];
        char **kinds = calloc(run->nmodules + 1, sizeof *kinds);
        if (!kinds)
            goto fail;
        int ok = 1;
        for (size_t l = 0; l < run->nmodules && ok; l++)
            ok = (kinds[l] = dora_module_kind(run->modules[l])) != NULL;
        for (size_t l = 0; l < run->nmodules && ok; l++) {
            size_t k = 0;
            while (k < l && strcmp(kinds[k], kinds[l]) != 0)
                k++;
            if (k < l)
                continue; /* kind already done */
            dora_regression g = {0};
            g.method = run->method;
            g.run = strdup(run->name);
            g.kind = strdup(kinds[l]);
            if (!g.run || !g.kind || one(run, kinds, kinds[l], &g) != 0 || add(out, &n, &cap, g)) {
                free(g.run);
                free(g.kind);
                ok = 0;
            }
        }
        for (size_t l = 0; l < run->nmodules; l++)
            free(kinds[l]);
        free(kinds);
        if (!ok)
            goto fail;
    }
    *nout = n;
    return 0;
fail:
    dora_regressions_free(*out, n);
    *out = NULL;
    return -1;
}

void dora_regressions_free(dora_regression *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].run);
        free(r[i].kind);
    }
    free(r);
}
