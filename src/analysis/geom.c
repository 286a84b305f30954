/* geom.c - dM / dM_passive per run and module kind; see include/dora/geom.h. */
#include "dora/geom.h"
#include "dora/stats.h"

#include <stdlib.h>
#include <string.h>

int dora_passive_ratio(const dora_result *run, const char *kind, double *ratio)
{
    *ratio = 0.0;
    if (!run->delta_m_passive)
        return -1;
    const size_t S = run->nsteps, L = run->nmodules;
    double dm = 0.0, pm = 0.0;
    size_t hits = 0;
    for (size_t l = 0; l < L; l++) {
        char *k = dora_module_kind(run->modules[l]);
        if (!k)
            return -2;
        int hit = strcmp(k, kind) == 0;
        free(k);
        if (!hit)
            continue;
        hits++;
        for (size_t s = 0; s < S; s++) {
            dm += run->delta_m[s * L + l];
            pm += run->delta_m_passive[s * L + l];
        }
    }
    if (!hits || !(pm > 0.0))
        return -1;
    *ratio = dm / pm;
    return 0;
}

/* One kind's sums over a run's modules; L is the module, for a stable order. */
typedef struct kindsum {
    char *kind;
    size_t l;
    double dm, pm;
} kindsum;

static int kindsum_cmp(const void *a, const void *b)
{
    const kindsum *x = a, *y = b;
    int c = strcmp(x->kind, y->kind);
    return c ? c : (x->l > y->l) - (x->l < y->l);
}

static int kind_only_cmp(const void *a, const void *b)
{
    return strcmp(((const kindsum *)a)->kind, ((const kindsum *)b)->kind);
}

/* RUN's kinds with their sums, sorted by kind, into *OUT (*N of them); -1 when
 * out of memory. */
static int run_kind_sums(const dora_result *run, kindsum **out, size_t *n)
{
    const size_t S = run->nsteps, L = run->nmodules;
    kindsum *v = calloc(L + 1, sizeof *v);
    if (!v)
        return -1;
    for (size_t l = 0; l < L; l++) {
        if (!(v[l].kind = dora_module_kind(run->modules[l]))) {
            for (size_t k = 0; k < l; k++)
                free(v[k].kind);
            free(v);
            return -1;
        }
        v[l].l = l;
        for (size_t s = 0; s < S; s++) {
            v[l].dm += run->delta_m[s * L + l];
            v[l].pm += run->delta_m_passive[s * L + l];
        }
    }
    qsort(v, L, sizeof *v, kindsum_cmp);
    size_t m = 0;
    for (size_t l = 0; l < L; l++) {
        if (m && strcmp(v[m - 1].kind, v[l].kind) == 0) {
            v[m - 1].dm += v[l].dm;
            v[m - 1].pm += v[l].pm;
            free(v[l].kind);
        } else {
            v[m++] = v[l];
        }
    }
    *out = v;
    *n = m;
    return 0;
}

int dora_passive_ratios(const dora_result *runs, size_t nruns, const dora_regression *regs,
                        size_t n, double *ratio, int *defined)
{
    for (size_t i = 0; i < n; i++) {
        ratio[i] = 0.0;
        defined[i] = 0;
    }
    for (size_t k = 0; k < nruns; k++) {
        const dora_result *run = &runs[k];
        kindsum *v = NULL;
        size_t m = 0;
        if (!run->delta_m_passive)
            continue;
        if (run_kind_sums(run, &v, &m) != 0)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(regs[i].run, run->name) != 0)
                continue;
            kindsum key = {regs[i].kind, 0, 0, 0};
            const kindsum *hit = bsearch(&key, v, m, sizeof *v, kind_only_cmp);
            if (hit && hit->pm > 0.0) {
                ratio[i] = hit->dm / hit->pm;
                defined[i] = 1;
            }
        }
        for (size_t j = 0; j < m; j++)
            free(v[j].kind);
        free(v);
    }
    return 0;
}
