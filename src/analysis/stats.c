/* stats.c - regressions of dM on dD; see include/dora/stats.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/stats.h"
#include "dora/fused.h"
#include "core/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

char *dora_module_kind(const char *name)
{
    const char *part = dora_fused_part_kind(name); /* "...qkv_proj.weight[q]": q_proj */
    if (part)
        return strdup(part);
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

/* Regression over the modules MEMBERS[0..m) of RUN (ascending indices, all of
 * one kind): the points (dD, dM) step by step, and within a step in module
 * order. O(S * m) time and memory. */
static int one(const dora_result *run, const size_t *members, size_t m, dora_regression *g)
{
    size_t S = run->nsteps, L = run->nmodules, n = 0;
    double *x = malloc((S * m + 1) * sizeof *x), *y = malloc((S * m + 1) * sizeof *y);
    double *cx = malloc((S * m + 1) * sizeof *cx), *cy = malloc((S * m + 1) * sizeof *cy);
    if (!x || !y || !cx || !cy) {
        free(x);
        free(y);
        free(cx);
        free(cy);
        return -1;
    }
    for (size_t s = 0; s < S; s++) {
        size_t first = n;
        double mx = 0, my = 0;
        for (size_t i = 0; i < m; i++) {
            size_t l = members[i];
            x[n] = run->delta_d[s * L + l];
            y[n] = run->delta_m[s * L + l];
            mx += x[n];
            my += y[n];
            n++;
        }
        for (size_t i = first; i < n; i++) { /* centred on the step's mean */
            cx[i] = x[i] - mx / (double)m;
            cy[i] = y[i] - my / (double)m;
        }
    }
    g->n = (long long)n;
    g->layers = (long long)m;
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

/* A module of a run and its kind, for grouping the modules by kind. */
typedef struct kinded {
    char *kind;   /* owned */
    size_t index; /* in run->modules */
} kinded;

static int kinded_cmp(const void *pa, const void *pb)
{
    const kinded *a = pa, *b = pb;
    int c = strcmp(a->kind, b->kind);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

/* A group of modules of one kind: [begin, end) of the sorted kinded array;
 * first is the index of its first module (the kind's first appearance). */
typedef struct kind_group {
    size_t begin, end, first;
} kind_group;

static int group_cmp(const void *pa, const void *pb)
{
    const kind_group *a = pa, *b = pb;
    return (a->first > b->first) - (a->first < b->first);
}

/* The regressions of one run, appended to *out in the order in which the
 * kinds first appear. The modules are sorted by (kind, index) once, so that
 * the whole run costs O(L log L + S * L), not a pass over all modules per
 * kind. */
static int run_regressions(const dora_result *run, dora_regression **out, size_t *n,
                           size_t *cap)
{
    const size_t L = run->nmodules;
    kinded *km = calloc(L ? L : 1, sizeof *km);
    kind_group *groups = calloc(L ? L : 1, sizeof *groups);
    size_t *members = calloc(L ? L : 1, sizeof *members);
    size_t ng = 0;
    int ok = km && groups && members;
    for (size_t l = 0; l < L && ok; l++) {
        km[l].index = l;
        ok = (km[l].kind = dora_module_kind(run->modules[l])) != NULL;
    }
    if (ok) {
        qsort(km, L, sizeof *km, kinded_cmp);
        for (size_t i = 0; i < L; i++) {
            if (i == 0 || strcmp(km[i].kind, km[i - 1].kind) != 0)
                groups[ng++] = (kind_group){i, i, km[i].index};
            groups[ng - 1].end = i + 1;
        }
        qsort(groups, ng, sizeof *groups, group_cmp);
    }
    for (size_t k = 0; k < ng && ok; k++) {
        const kind_group *gr = &groups[k];
        size_t m = gr->end - gr->begin;
        for (size_t i = 0; i < m; i++)
            members[i] = km[gr->begin + i].index;
        dora_regression g = {0};
        g.method = run->method;
        g.run = strdup(run->name);
        g.kind = strdup(km[gr->begin].kind);
        if (!g.run || !g.kind || one(run, members, m, &g) != 0 || add(out, n, cap, g)) {
            free(g.run);
            free(g.kind);
            ok = 0;
        }
    }
    for (size_t l = 0; km && l < L; l++)
        free(km[l].kind);
    free(km);
    free(groups);
    free(members);
    return ok ? 0 : -1;
}

int dora_regressions(const dora_result *runs, size_t nruns, dora_regression **out, size_t *nout)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    *nout = 0;
    for (size_t i = 0; i < nruns; i++)
        if (run_regressions(&runs[i], out, &n, &cap) != 0) {
            dora_regressions_free(*out, n);
            *out = NULL;
            return -1;
        }
    *nout = n;
    return 0;
}

void dora_regressions_free(dora_regression *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].run);
        free(r[i].kind);
    }
    free(r);
}
