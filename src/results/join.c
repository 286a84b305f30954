/* join.c - joining results of steps of one run; see include/dora/join.h. */
#define _XOPEN_SOURCE 700 /* strdup, realpath, with POSIX 2008 */
#include "dora/join.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int add_str(char ***v, size_t *n, const char *s)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i], s) == 0)
            return 0;
    char **p = realloc(*v, (*n + 1) * sizeof *p);
    if (!p)
        return -1;
    *v = p;
    if (!(p[*n] = strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

int dora_result_copy(dora_result *out, const dora_result *in, dora_err *err)
{
    const dora_result *parts[1] = {in};
    return dora_result_join(out, parts, 1, err);
}

typedef struct stepref {
    size_t part, s;
    int64_t step;
} stepref;

static int stepref_cmp(const void *pa, const void *pb)
{
    const stepref *a = pa, *b = pb;
    if (a->step != b->step)
        return a->step < b->step ? -1 : 1;
    return a->part < b->part ? -1 : a->part > b->part;
}

typedef struct namedidx {
    const char *name;
    size_t i;
} namedidx;

static int namedidx_cmp(const void *pa, const void *pb)
{
    return strcmp(((const namedidx *)pa)->name, ((const namedidx *)pb)->name);
}

/* Position of NAME in a part's modules (through its sorted index), or -1. */
static long find_module(const namedidx *ix, size_t n, const char *name)
{
    namedidx key = {name, 0};
    const namedidx *hit = bsearch(&key, ix, n, sizeof *ix, namedidx_cmp);
    return hit ? (long)hit->i : -1;
}

static int same_step_numbers(const dora_result *a, size_t sa, const dora_result *b, size_t sb)
{
    if (a->nmodules != b->nmodules || strcmp(a->step_paths[sa], b->step_paths[sb]) != 0)
        return 0;
    const size_t L = a->nmodules;
    for (size_t l = 0; l < L; l++)
        if (strcmp(a->modules[l], b->modules[l]) != 0 ||
            memcmp(&a->delta_m[sa * L + l], &b->delta_m[sb * L + l], sizeof(double)) != 0 ||
            memcmp(&a->delta_d[sa * L + l], &b->delta_d[sb * L + l], sizeof(double)) != 0 ||
            a->zero_rows[sa * L + l] != b->zero_rows[sb * L + l])
            return 0;
    return 1;
}

int dora_result_join(dora_result *out, const dora_result *const *parts, size_t n, dora_err *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return dora_errf(err, "nothing to join");
    const dora_result *p0 = parts[0];
    int any_ft = 0, any_lora = 0, any_dora = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const dora_result *p = parts[i];
        if (strcmp(p->name, p0->name) != 0 || strcmp(p->source_path, p0->source_path) != 0 ||
            strcmp(p->base_path, p0->base_path) != 0)
            return dora_errf(err, "cannot join results of run '%s' ('%s', base '%s') with run "
                                  "'%s' ('%s', base '%s')",
                             p0->name, p0->source_path, p0->base_path, p->name, p->source_path,
                             p->base_path);
        any_ft |= strcmp(p->method, "ft") == 0;
        any_lora |= strcmp(p->method, "lora") == 0;
        any_dora |= strcmp(p->method, "dora") == 0;
        total += p->nsteps;
    }
    if (any_ft && (any_lora || any_dora))
        return dora_errf(err, "run '%s' ('%s'): some checkpoints are full weights and some "
                              "adapters: a run is either full weights or adapters",
                         p0->name, p0->source_path);
    int adapters = any_lora || any_dora;

    stepref *refs = calloc(total + 1, sizeof *refs);
    namedidx **ix = calloc(n, sizeof *ix);
    int rc = -1;
    if (!refs || !ix) {
        dora_errf(err, "out of memory");
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t s = 0; s < parts[i]->nsteps; s++)
            refs[k++] = (stepref){i, s, parts[i]->steps[s]};
        if (!(ix[i] = calloc(parts[i]->nmodules + 1, sizeof **ix))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        for (size_t l = 0; l < parts[i]->nmodules; l++)
            ix[i][l] = (namedidx){parts[i]->modules[l], l};
        qsort(ix[i], parts[i]->nmodules, sizeof **ix, namedidx_cmp);
    }
    qsort(refs, total, sizeof *refs, stepref_cmp);
    /* a step held twice must be the same result; keep the first */
    size_t S = 0;
    for (size_t i = 0; i < total; i++) {
        if (S > 0 && refs[S - 1].step == refs[i].step) {
            const stepref *a = &refs[S - 1], *b = &refs[i];
            if (!same_step_numbers(parts[a->part], a->s, parts[b->part], b->s)) {
                dora_errf(err, "run '%s': step %lld is held twice with different results ('%s' "
                               "and '%s')",
                          p0->name, (long long)a->step, parts[a->part]->step_paths[a->s],
                          parts[b->part]->step_paths[b->s]);
                goto done;
            }
            continue;
        }
        refs[S++] = refs[i];
    }

    /* the modules every part has, in the order of the first part's (natural order) */
    size_t L = 0, dropped = 0;
    const char *first_dropped = NULL;
    char *keep = calloc(p0->nmodules + 1, 1);
    if (!keep) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t l = 0; l < p0->nmodules; l++) {
        int all = 1;
        for (size_t i = 1; i < n && all; i++)
            all = find_module(ix[i], parts[i]->nmodules, p0->modules[l]) >= 0;
        keep[l] = (char)all;
        L += (size_t)all;
        if (!all && !first_dropped)
            first_dropped = p0->modules[l];
        dropped += (size_t)!all;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t l = 0; l < parts[i]->nmodules; l++)
            if (find_module(ix[0], p0->nmodules, parts[i]->modules[l]) < 0) {
                dropped++;
                if (!first_dropped)
                    first_dropped = parts[i]->modules[l];
            }
    if (dropped && adapters) {
        dora_errf(err, "run '%s': its checkpoints do not adapt the same modules (first "
                       "difference: '%s'): the checkpoints of a run must adapt the same modules",
                  p0->name, first_dropped);
        free(keep);
        goto done;
    }
    if (L == 0) {
        dora_errf(err, "run '%s': no tensor is in every checkpoint", p0->name);
        free(keep);
        goto done;
    }

    out->method = any_dora ? "dora" : any_lora ? "lora" : "ft";
    out->name = strdup(p0->name);
    out->source_path = strdup(p0->source_path);
    out->base_path = strdup(p0->base_path);
    if (!out->name || !out->source_path || !out->base_path || dora_result_alloc(out, S, L) != 0) {
        dora_errf(err, "out of memory");
        free(keep);
        goto done;
    }
    /* module metadata from the part holding the first step, checked against all */
    const dora_result *pf = parts[refs[0].part];
    size_t j = 0;
    for (size_t l = 0; l < p0->nmodules; l++) {
        if (!keep[l])
            continue;
        const char *name = p0->modules[l];
        long lf = find_module(ix[refs[0].part], pf->nmodules, name);
        out->modules[j] = strdup(name);
        out->layer[j] = pf->layer[lf];
        out->rows[j] = pf->rows[lf];
        out->cols[j] = pf->cols[lf];
        out->rank[j] = pf->rank[lf];
        if (!out->modules[j]) {
            dora_errf(err, "out of memory");
            free(keep);
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            long li = find_module(ix[i], parts[i]->nmodules, name);
            if (parts[i]->rows[li] != out->rows[j] || parts[i]->cols[li] != out->cols[j] ||
                parts[i]->layer[li] != out->layer[j]) {
                dora_errf(err, "run '%s': module '%s' has %lld x %lld in '%s' but %lld x %lld in "
                               "'%s'",
                          p0->name, name, (long long)parts[i]->rows[li],
                          (long long)parts[i]->cols[li], parts[i]->step_paths[0],
                          (long long)out->rows[j], (long long)out->cols[j], pf->step_paths[0]);
                free(keep);
                goto done;
            }
        }
        j++;
    }
    free(keep);
    for (size_t s = 0; s < S; s++) {
        const dora_result *p = parts[refs[s].part];
        const size_t ps = refs[s].s, PL = p->nmodules;
        out->steps[s] = refs[s].step;
        out->step_paths[s] = strdup(p->step_paths[ps]);
        out->step_stamps[s] = strdup(p->step_stamps[ps] ? p->step_stamps[ps] : "");
        if (!out->step_paths[s] || !out->step_stamps[s]) {
            dora_errf(err, "out of memory");
            goto done;
        }
        for (size_t l = 0; l < L; l++) {
            long pl = find_module(ix[refs[s].part], PL, out->modules[l]);
            out->delta_m[s * L + l] = p->delta_m[ps * PL + (size_t)pl];
            out->delta_d[s * L + l] = p->delta_d[ps * PL + (size_t)pl];
            out->zero_rows[s * L + l] = p->zero_rows[ps * PL + (size_t)pl];
        }
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t q = 0; q < parts[i]->nnotes; q++)
            if (add_str(&out->notes, &out->nnotes, parts[i]->notes[q]) != 0)
                goto oom;
        for (size_t q = 0; q < parts[i]->nfailures; q++)
            if (add_str(&out->failures, &out->nfailures, parts[i]->failures[q]) != 0)
                goto oom;
    }
    if (dropped && n > 1) {
        char buf[1200];
        snprintf(buf, sizeof buf, "%zu tensor(s) are not in every checkpoint and were left out "
                                  "(first: '%s')",
                 dropped, first_dropped);
        if (add_str(&out->notes, &out->nnotes, buf) != 0)
            goto oom;
    }
    rc = 0;
    goto done;
oom:
    dora_errf(err, "out of memory");
done:
    for (size_t i = 0; ix && i < n; i++)
        free(ix[i]);
    free(ix);
    free(refs);
    if (rc != 0)
        dora_result_release(out);
    return rc;
}
