/* stats.c - regressions of dM on dD; see include/dora/stats.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/stats.h"
#include "dora/fused.h"
#include "core/util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* CX, CY: the S x M points X, Y (step-major) centred on each step's mean. */
static void centre_steps(const double *x, const double *y, size_t S, size_t m, double *cx,
                         double *cy)
{
    for (size_t s = 0; s < S; s++) {
        double mx = 0, my = 0;
        for (size_t i = s * m; i < (s + 1) * m; i++) {
            mx += x[i];
            my += y[i];
        }
        for (size_t i = s * m; i < (s + 1) * m; i++) {
            cx[i] = x[i] - mx / (double)m;
            cy[i] = y[i] - my / (double)m;
        }
    }
}

/* The Pearson r of N points; 0 if defined. */
static int pearson(const double *x, const double *y, size_t n, double *r)
{
    double slope, icpt;
    return dora_linfit(x, y, n, &slope, &icpt, r);
}

/* 97.5% quantile of the standard normal (scipy.special.ndtri(0.975)) */
#define Z975 1.959963984540054

int dora_fisher_ci(double r, long long n, double ci[2])
{
    ci[0] = ci[1] = 0;
    if (n < 4 || !(r >= -1 && r <= 1))
        return -1;
    double z = atanh(r), h = Z975 / sqrt((double)(n - 3)); /* r = +-1: tanh(+-inf) */
    ci[0] = tanh(z - h);
    ci[1] = tanh(z + h);
    return 0;
}

typedef struct ranked {
    double v;
    size_t i;
} ranked;

static int ranked_cmp(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    return (a->v > b->v) - (a->v < b->v);
}

/* RANK[i]: the 1-based rank of V[i] among V[0..n), ties at their average. */
static int ranks(const double *v, size_t n, double *rank)
{
    ranked *t = malloc((n + 1) * sizeof *t);
    if (!t)
        return -1;
    for (size_t i = 0; i < n; i++)
        t[i] = (ranked){v[i], i};
    qsort(t, n, sizeof *t, ranked_cmp);
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && t[b].v == t[a].v)
            b++;
        double avg = 0.5 * (double)(a + 1 + b); /* mean of ranks a+1..b */
        for (size_t k = a; k < b; k++)
            rank[t[k].i] = avg;
        a = b;
    }
    free(t);
    return 0;
}

int dora_spearman(const double *x, const double *y, size_t n, double *rho)
{
    *rho = 0;
    if (n < 2)
        return -1;
    double *rx = malloc(n * sizeof *rx), *ry = malloc(n * sizeof *ry);
    int rc = -1;
    if (rx && ry && ranks(x, n, rx) == 0 && ranks(y, n, ry) == 0)
        rc = pearson(rx, ry, n, rho);
    if (rc != 0)
        *rho = 0;
    free(rx);
    free(ry);
    return rc;
}

uint64_t dora_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t dora_draw_below(uint64_t *state, uint64_t m)
{
    uint64_t low = (0 - m) % m; /* 2^64 mod m: the values below it would favour small indices */
    uint64_t z;
    do
        z = dora_splitmix64(state);
    while (z < low);
    return z % m;
}

/* Reorder V[0..n) so that V[k] is its k-th smallest value, those before it no larger,
 * those after it no smaller (quickselect with a median-of-three pivot and a three-way
 * partition, so runs of equal values, common among replicates, end it early). */
static void select_kth(double *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n; /* the k-th lies in [lo, hi) */
    while (hi - lo > 1) {
        const double a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi - 1];
        const double piv = a < b ? (b < c ? b : a < c ? c : a) : (a < c ? a : b < c ? c : b);
        size_t lt = lo, i = lo, gt = hi; /* [lo, lt) < piv, [lt, i) == piv, [gt, hi) > piv */
        while (i < gt) {
            const double x = v[i];
            if (x < piv) {
                v[i++] = v[lt];
                v[lt++] = x;
            } else if (x > piv) {
                v[i] = v[--gt];
                v[gt] = x;
            } else {
                i++;
            }
        }
        if (k < lt)
            hi = lt;
        else if (k >= gt)
            lo = gt;
        else
            return;
    }
}

int dora_percentile(double *v, size_t n, double p, double *out)
{
    *out = 0;
    if (n == 0 || !(p >= 0 && p <= 1))
        return -1;
    const double h = (double)(n - 1) * p;
    size_t lo = (size_t)floor(h);
    lo = lo < n ? lo : n - 1;
    select_kth(v, n, lo);
    double next = v[lo];
    if (lo + 1 < n) { /* the next order statistic: the least of those after lo */
        next = v[lo + 1];
        for (size_t i = lo + 2; i < n; i++)
            next = v[i] < next ? v[i] : next;
    }
    *out = lo + 1 < n ? v[lo] + (h - (double)lo) * (next - v[lo]) : v[n - 1];
    return 0;
}

/* CI: the 2.5% and 97.5% percentiles of V[0..n) (reordered here), interpolated
 * linearly between order statistics; 0 if at least HALF of B values are there. */
static int percentile_ci(double *v, size_t n, long long b, double ci[2])
{
    ci[0] = ci[1] = 0;
    if (n == 0 || (long long)n * 2 < b)
        return -1;
    dora_percentile(v, n, 0.025, &ci[0]);
    dora_percentile(v, n, 0.975, &ci[1]);
    return 0;
}

int dora_cluster_bootstrap(const double *x, const double *y, size_t S, size_t m, long long b,
                           uint64_t seed, double ci[2], int *def, double wci[2], int *wdef)
{
    *def = *wdef = 0;
    ci[0] = ci[1] = wci[0] = wci[1] = 0;
    if (m < 2 || S < 1 || b < 1)
        return 0;
    size_t n = S * m;
    double *bx = malloc(n * sizeof *bx), *by = malloc(n * sizeof *by);
    double *cx = malloc(n * sizeof *cx), *cy = malloc(n * sizeof *cy);
    double *rs = malloc((size_t)b * sizeof *rs), *ws = malloc((size_t)b * sizeof *ws);
    size_t *pick = malloc(m * sizeof *pick);
    int rc = -1;
    if (!bx || !by || !cx || !cy || !rs || !ws || !pick)
        goto done;
    uint64_t state = seed;
    size_t nr = 0, nw = 0;
    for (long long k = 0; k < b; k++) {
        int one_layer = 1; /* every draw the same layer: no spread within a step */
        for (size_t i = 0; i < m; i++) {
            pick[i] = (size_t)dora_draw_below(&state, m);
            one_layer &= pick[i] == pick[0];
        }
        for (size_t s = 0; s < S; s++)
            for (size_t i = 0; i < m; i++) {
                bx[s * m + i] = x[s * m + pick[i]];
                by[s * m + i] = y[s * m + pick[i]];
            }
        if (pearson(bx, by, n, &rs[nr]) == 0)
            nr++;
        /* (centring m copies of one value leaves rounding, not spread: not a number) */
        centre_steps(bx, by, S, m, cx, cy);
        if (!one_layer && pearson(cx, cy, n, &ws[nw]) == 0)
            nw++;
    }
    *def = percentile_ci(rs, nr, b, ci) == 0;
    *wdef = percentile_ci(ws, nw, b, wci) == 0;
    rc = 0;
done:
    free(bx);
    free(by);
    free(cx);
    free(cy);
    free(rs);
    free(ws);
    free(pick);
    return rc;
}

/* Regression over the modules MEMBERS[0..m) of RUN (ascending indices, all of
 * one kind): the points (dD, dM) step by step, and within a step in module
 * order; then its intervals (O). O(S * m * B) time, O(S * m + B) memory. */
static int one(const dora_result *run, const size_t *members, size_t m,
               const dora_stats_opts *o, dora_regression *g)
{
    size_t S = run->nsteps, L = run->nmodules, n = S * m;
    double *x = malloc((n + 1) * sizeof *x), *y = malloc((n + 1) * sizeof *y);
    double *cx = malloc((n + 1) * sizeof *cx), *cy = malloc((n + 1) * sizeof *cy);
    int rc = -1;
    if (!x || !y || !cx || !cy)
        goto done;
    for (size_t s = 0; s < S; s++)
        for (size_t i = 0; i < m; i++) {
            x[s * m + i] = run->delta_d[s * L + members[i]];
            y[s * m + i] = run->delta_m[s * L + members[i]];
        }
    if (m > 0)
        centre_steps(x, y, S, m, cx, cy);
    g->n = (long long)n;
    g->layers = (long long)m;
    g->defined = dora_linfit(x, y, n, &g->slope, &g->intercept, &g->r) == 0;
    g->within_defined = pearson(cx, cy, n, &g->within_r) == 0;
    if (!g->defined)
        g->slope = g->intercept = g->r = 0;
    if (!g->within_defined)
        g->within_r = 0;
    g->fisher_defined = g->defined && dora_fisher_ci(g->r, g->n, g->fisher_ci) == 0;
    g->spearman_defined = dora_spearman(x, y, n, &g->spearman_rho) == 0;
    g->bootstrap = o->bootstrap;
    g->seed = o->seed;
    if (dora_cluster_bootstrap(x, y, S, m, o->bootstrap, o->seed, g->boot_ci, &g->boot_defined,
                               g->within_boot_ci, &g->within_boot_defined) != 0)
        goto done;
    /* an interval of an undefined estimate says nothing */
    if (!g->defined)
        g->boot_defined = 0;
    if (!g->within_defined)
        g->within_boot_defined = 0;
    if (!g->boot_defined)
        g->boot_ci[0] = g->boot_ci[1] = 0;
    if (!g->within_boot_defined)
        g->within_boot_ci[0] = g->within_boot_ci[1] = 0;
    rc = 0;
done:
    free(x);
    free(y);
    free(cx);
    free(cy);
    return rc;
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

/* One regression to compute: a group of RUN's modules, into G (rc: one()'s). */
typedef struct reg_task {
    const dora_result *run;
    const dora_stats_opts *o;
    size_t *members, m;
    dora_regression g;
    int rc;
} reg_task;

typedef struct reg_pool {
    reg_task *t;
    size_t n, next; /* next: atomic */
} reg_pool;

static void *reg_worker(void *arg)
{
    reg_pool *p = arg;
    for (size_t i; (i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED)) < p->n;)
        p->t[i].rc = one(p->t[i].run, p->t[i].members, p->t[i].m, p->t[i].o, &p->t[i].g);
    return NULL;
}

/* The N tasks on up to one thread per online CPU (the caller's included): the bootstrap is
 * most of a regression's cost (B replicates of S x m points), and each regression restarts
 * its draws from the seed, so the results do not depend on the threads. */
static void run_tasks(reg_task *t, size_t n)
{
    reg_pool p = {t, n, 0};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = cpus > 1 ? (size_t)cpus : 1;
    nt = nt > n ? n : nt;
    nt = nt > 16 ? 16 : nt;
    pthread_t tid[16];
    size_t started = 0;
    for (size_t i = 1; i < nt; i++)
        if (pthread_create(&tid[started], NULL, reg_worker, &p) == 0)
            started++; /* fewer threads is still correct */
    reg_worker(&p);
    for (size_t i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
}

/* The regressions of one run, appended to *out in the order in which the
 * kinds first appear. The modules are sorted by (kind, index) once, so that
 * the whole run costs O(L log L + S * L), not a pass over all modules per
 * kind. */
static int run_regressions(const dora_result *run, const dora_stats_opts *o,
                           dora_regression **out, size_t *n, size_t *cap)
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
    /* each group's members in its own slice of MEMBERS (the groups partition the modules) */
    reg_task *task = ok ? calloc(ng ? ng : 1, sizeof *task) : NULL;
    ok = ok && task;
    for (size_t k = 0; k < ng && ok; k++) {
        const kind_group *gr = &groups[k];
        reg_task *t = &task[k];
        t->run = run;
        t->o = o;
        t->m = gr->end - gr->begin;
        t->members = members + gr->begin;
        for (size_t i = 0; i < t->m; i++)
            t->members[i] = km[gr->begin + i].index;
        t->g.method = run->method;
        t->g.run = strdup(run->name);
        t->g.kind = strdup(km[gr->begin].kind);
        ok = t->g.run && t->g.kind;
    }
    if (ok)
        run_tasks(task, ng);
    for (size_t k = 0; k < ng && task; k++) {
        if (ok && task[k].rc == 0 && add(out, n, cap, task[k].g) == 0)
            continue; /* its strings are *out's now */
        ok = 0;
        free(task[k].g.run);
        free(task[k].g.kind);
    }
    free(task);
    for (size_t l = 0; km && l < L; l++)
        free(km[l].kind);
    free(km);
    free(groups);
    free(members);
    return ok ? 0 : -1;
}

int dora_regressions_opts(const dora_result *runs, size_t nruns, const dora_stats_opts *o,
                          dora_regression **out, size_t *nout)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    *nout = 0;
    dora_stats_opts d = {DORA_BOOTSTRAP_DEFAULT, DORA_BOOTSTRAP_SEED};
    if (o && o->bootstrap)
        d.bootstrap = o->bootstrap;
    if (o && o->seed)
        d.seed = o->seed;
    if (d.bootstrap < DORA_BOOTSTRAP_MIN || d.bootstrap > DORA_BOOTSTRAP_MAX)
        return -1;
    for (size_t i = 0; i < nruns; i++)
        if (run_regressions(&runs[i], &d, out, &n, &cap) != 0) {
            dora_regressions_free(*out, n);
            *out = NULL;
            return -1;
        }
    *nout = n;
    return 0;
}

int dora_regressions(const dora_result *runs, size_t nruns, dora_regression **out, size_t *nout)
{
    return dora_regressions_opts(runs, nruns, NULL, out, nout);
}

void dora_regressions_free(dora_regression *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].run);
        free(r[i].kind);
    }
    free(r);
}
