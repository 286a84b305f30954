/* join.c - joining results of steps of one run; see include/dora/join.h. */
#define _XOPEN_SOURCE 700 /* strdup, with POSIX 2008 */
#include "dora/join.h"
#include "core/util.h"

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

/* The head group of module NAME in part P, or -1. */
static long find_head(const dora_result *p, const char *name)
{
    for (size_t h = 0; h < p->nhead_mods; h++)
        if (strcmp(p->modules[p->head_module[h]], name) == 0)
            return (long)h;
    return -1;
}

/* The per-head values of step SA of A and SB of B, where both have them, the
 * same bit for bit. */
static int same_step_heads(const dora_result *a, size_t sa, const dora_result *b, size_t sb)
{
    const size_t NA = a->nhead_mods ? (size_t)a->head_offset[a->nhead_mods] : 0;
    const size_t NB = b->nhead_mods ? (size_t)b->head_offset[b->nhead_mods] : 0;
    for (size_t h = 0; h < a->nhead_mods; h++) {
        long hb = find_head(b, a->modules[a->head_module[h]]);
        if (hb < 0)
            continue;
        const size_t n = (size_t)a->head_count[h], ia = sa * NA + (size_t)a->head_offset[h],
                     ib = sb * NB + (size_t)b->head_offset[hb];
        if ((size_t)b->head_count[hb] != n ||
            memcmp(&a->head_dm[ia], &b->head_dm[ib], n * sizeof(double)) != 0 ||
            memcmp(&a->head_dd[ia], &b->head_dd[ib], n * sizeof(double)) != 0)
            return 0;
    }
    return 1;
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
            a->zero_rows[sa * L + l] != b->zero_rows[sb * L + l] ||
            (a->delta_m_passive && b->delta_m_passive &&
             (memcmp(&a->delta_m_passive[sa * L + l], &b->delta_m_passive[sb * L + l],
                     sizeof(double)) != 0 ||
              memcmp(&a->delta_m_active[sa * L + l], &b->delta_m_active[sb * L + l],
                     sizeof(double)) != 0)))
            return 0;
    return same_step_heads(a, sa, b, sb);
}

/* What a join works from: the parts, their steps sorted, an index of each
 * part's modules by name, and which of the first part's modules every part has. */
typedef struct joinctx {
    const dora_result *const *parts;
    size_t n;
    const dora_result *p0;
    int adapters;
    stepref *refs; /* [total], then the S distinct steps ascending */
    size_t total, S;
    namedidx **ix; /* [n], each [parts[i]->nmodules] sorted by name */
    char *keep;    /* [p0->nmodules]: in every part */
    size_t L, dropped;
    const char *first_dropped;
} joinctx;

/* The parts are of one run (name, paths) and all full weights or all adapters; *METHOD:
 * "ft", "dora" when a part is, else the adapter family of the parts ("lora", "ia3", ...). */
static int check_parts(joinctx *j, const char **method, dora_err *err)
{
    const dora_result *p0 = j->p0;
    int any_ft = 0;
    const char *adapter = NULL;
    for (size_t i = 0; i < j->n; i++) {
        const dora_result *p = j->parts[i];
        if (strcmp(p->name, p0->name) != 0 || strcmp(p->source_path, p0->source_path) != 0 ||
            strcmp(p->base_path, p0->base_path) != 0)
            return dora_errf(err, "cannot join results of run '%s' ('%s', base '%s') with run "
                                  "'%s' ('%s', base '%s')",
                             p0->name, p0->source_path, p0->base_path, p->name, p->source_path,
                             p->base_path);
        const int ft = strcmp(p->method, "ft") == 0;
        any_ft |= ft;
        if (!ft && (!adapter || strcmp(p->method, "dora") == 0))
            adapter = p->method;
        j->total += p->nsteps;
    }
    if (any_ft && adapter)
        return dora_errf(err, "run '%s' ('%s'): some checkpoints are full weights and some "
                              "adapters: a run is either full weights or adapters",
                         p0->name, p0->source_path);
    j->adapters = adapter != NULL;
    *method = adapter ? adapter : "ft";
    return 0;
}

/* Every step of every part, sorted; each part's modules indexed by name. */
static int index_parts(joinctx *j, dora_err *err)
{
    j->refs = calloc(j->total + 1, sizeof *j->refs);
    j->ix = calloc(j->n, sizeof *j->ix);
    if (!j->refs || !j->ix)
        return dora_errf(err, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < j->n; i++) {
        const dora_result *p = j->parts[i];
        for (size_t s = 0; s < p->nsteps; s++)
            j->refs[k++] = (stepref){i, s, p->steps[s]};
        if (!(j->ix[i] = calloc(p->nmodules + 1, sizeof **j->ix)))
            return dora_errf(err, "out of memory");
        for (size_t l = 0; l < p->nmodules; l++)
            j->ix[i][l] = (namedidx){p->modules[l], l};
        qsort(j->ix[i], p->nmodules, sizeof **j->ix, namedidx_cmp);
    }
    qsort(j->refs, j->total, sizeof *j->refs, stepref_cmp);
    return 0;
}

/* A step held twice must be the same result; the first is kept. */
static int unique_steps(joinctx *j, dora_err *err)
{
    const dora_result *const *parts = j->parts;
    stepref *refs = j->refs;
    size_t S = 0;
    for (size_t i = 0; i < j->total; i++) {
        if (S > 0 && refs[S - 1].step == refs[i].step) {
            const stepref *a = &refs[S - 1], *b = &refs[i];
            if (!same_step_numbers(parts[a->part], a->s, parts[b->part], b->s))
                return dora_errf(err, "run '%s': step %lld is held twice with different results "
                                      "('%s' and '%s')",
                                 j->p0->name, (long long)a->step, parts[a->part]->step_paths[a->s],
                                 parts[b->part]->step_paths[b->s]);
            continue;
        }
        refs[S++] = refs[i];
    }
    j->S = S;
    return 0;
}

/* The modules every part has, in the order of the first part's (natural
 * order); adapters must all adapt the same ones. */
static int common_modules(joinctx *j, dora_err *err)
{
    const dora_result *const *parts = j->parts, *p0 = j->p0;
    if (!(j->keep = calloc(p0->nmodules + 1, 1)))
        return dora_errf(err, "out of memory");
    for (size_t l = 0; l < p0->nmodules; l++) {
        int all = 1;
        for (size_t i = 1; i < j->n && all; i++)
            all = find_module(j->ix[i], parts[i]->nmodules, p0->modules[l]) >= 0;
        j->keep[l] = (char)all;
        j->L += (size_t)all;
        if (!all && !j->first_dropped)
            j->first_dropped = p0->modules[l];
        j->dropped += (size_t)!all;
    }
    for (size_t i = 1; i < j->n; i++)
        for (size_t l = 0; l < parts[i]->nmodules; l++)
            if (find_module(j->ix[0], p0->nmodules, parts[i]->modules[l]) < 0) {
                j->dropped++;
                if (!j->first_dropped)
                    j->first_dropped = parts[i]->modules[l];
            }
    if (j->dropped && j->adapters)
        return dora_errf(err, "run '%s': its checkpoints do not adapt the same modules (first "
                              "difference: '%s'): the checkpoints of a run must adapt the same "
                              "modules",
                         p0->name, j->first_dropped);
    if (j->L == 0)
        return dora_errf(err, "run '%s': no tensor is in every checkpoint", p0->name);
    return 0;
}

/* Module metadata from the part holding the first step, checked against all. */
static int join_modules(const joinctx *j, dora_result *out, dora_err *err)
{
    const dora_result *const *parts = j->parts, *p0 = j->p0;
    const dora_result *pf = parts[j->refs[0].part];
    size_t m = 0;
    for (size_t l = 0; l < p0->nmodules; l++) {
        if (!j->keep[l])
            continue;
        const char *name = p0->modules[l];
        long lf = find_module(j->ix[j->refs[0].part], pf->nmodules, name);
        out->modules[m] = strdup(name);
        out->layer[m] = pf->layer[lf];
        out->rows[m] = pf->rows[lf];
        out->cols[m] = pf->cols[lf];
        out->rank[m] = pf->rank[lf];
        if (!out->modules[m])
            return dora_errf(err, "out of memory");
        for (size_t i = 0; i < j->n; i++) {
            long li = find_module(j->ix[i], parts[i]->nmodules, name);
            if (parts[i]->rows[li] != out->rows[m] || parts[i]->cols[li] != out->cols[m] ||
                parts[i]->layer[li] != out->layer[m])
                return dora_errf(err, "run '%s': module '%s' has %lld x %lld in '%s' but %lld x "
                                      "%lld in '%s'",
                                 p0->name, name, (long long)parts[i]->rows[li],
                                 (long long)parts[i]->cols[li], parts[i]->step_paths[0],
                                 (long long)out->rows[m], (long long)out->cols[m],
                                 pf->step_paths[0]);
        }
        m++;
    }
    return 0;
}

/* Each step's paths and numbers, from the part that holds it. */
static int join_steps(const joinctx *j, dora_result *out, dora_err *err)
{
    const size_t L = j->L;
    for (size_t s = 0; s < j->S; s++) {
        const dora_result *p = j->parts[j->refs[s].part];
        const size_t ps = j->refs[s].s, PL = p->nmodules;
        out->steps[s] = j->refs[s].step;
        out->step_paths[s] = strdup(p->step_paths[ps]);
        out->step_stamps[s] = strdup(p->step_stamps[ps] ? p->step_stamps[ps] : "");
        if (!out->step_paths[s] || !out->step_stamps[s])
            return dora_errf(err, "out of memory");
        for (size_t l = 0; l < L; l++) {
            long pl = find_module(j->ix[j->refs[s].part], PL, out->modules[l]);
            out->delta_m[s * L + l] = p->delta_m[ps * PL + (size_t)pl];
            out->delta_d[s * L + l] = p->delta_d[ps * PL + (size_t)pl];
            out->zero_rows[s * L + l] = p->zero_rows[ps * PL + (size_t)pl];
            if (out->delta_m_passive && p->delta_m_passive) {
                out->delta_m_passive[s * L + l] = p->delta_m_passive[ps * PL + (size_t)pl];
                out->delta_m_active[s * L + l] = p->delta_m_active[ps * PL + (size_t)pl];
            }
        }
    }
    return 0;
}

/* delta_m_passive and delta_m_active only when every part has them (a part
 * read from an older journal or file has not). */
static void join_geom_presence(const joinctx *j, dora_result *out)
{
    for (size_t i = 0; i < j->n; i++)
        if (!j->parts[i]->delta_m_passive || !j->parts[i]->delta_m_active) {
            free(out->delta_m_passive);
            free(out->delta_m_active);
            out->delta_m_passive = out->delta_m_active = NULL;
            return;
        }
}

/* Of the kept modules, those grouped by head in the parts: in every part with
 * the same heads, else an error (never a guess). 0 when every part has heads,
 * 1 when some part has none (a record of an earlier version), -1 with ERR. */
static int head_modules(const joinctx *j, dora_result *out, dora_err *err)
{
    for (size_t i = 0; i < j->n; i++)
        if (!j->parts[i]->nhead_mods && j->parts[i]->nsteps)
            return 1;
    const dora_result *pf = j->parts[j->refs[0].part];
    if (!(out->head_module = calloc(j->L + 1, sizeof *out->head_module)) ||
        !(out->head_count = calloc(j->L + 1, sizeof *out->head_count)) ||
        !(out->head_offset = calloc(j->L + 2, sizeof *out->head_offset)))
        return dora_errf(err, "out of memory");
    size_t H = 0;
    for (size_t m = 0; m < j->L; m++) {
        const char *name = out->modules[m];
        const long hf = find_head(pf, name);
        for (size_t i = 0; i < j->n; i++) {
            const dora_result *p = j->parts[i];
            const long hi = find_head(p, name);
            if (p->nsteps == 0) /* all its steps left out: it holds no values */
                continue;
            if ((hi < 0) != (hf < 0) ||
                (hf >= 0 && (p->head_count[hi] != pf->head_count[hf] ||
                             p->head_dim != pf->head_dim)))
                return dora_errf(err, "run '%s': module '%s' is grouped by attention head "
                                      "differently in '%s' and '%s' (did the base's config.json "
                                      "change between them?)",
                                 j->p0->name, name, pf->step_paths[0], p->step_paths[0]);
        }
        if (hf < 0)
            continue;
        out->head_module[H] = m;
        out->head_count[H] = pf->head_count[hf];
        out->head_offset[H + 1] = out->head_offset[H] + out->head_count[H];
        H++;
    }
    out->nhead_mods = H;
    out->head_dim = pf->head_dim;
    return 0;
}

/* dM and dD per head of each step, from the part that holds it, when every
 * part has them (a note when only some have). */
static int join_heads(const joinctx *j, dora_result *out, dora_err *err)
{
    int r = head_modules(j, out, err);
    if (r < 0)
        return -1;
    for (size_t i = 0; r == 1 && i < j->n; i++)
        if (j->parts[i]->nhead_mods) {
            if (add_str(&out->notes, &out->nnotes,
                        "no per-head values: some of the run's units were analysed by an "
                        "earlier version, whose results have none (analyse the run again "
                        "without its journal records to get them)") != 0)
                return dora_errf(err, "out of memory");
            break;
        }
    const size_t H = out->nhead_mods, NH = H ? (size_t)out->head_offset[H] : 0;
    if (H == 0)
        return 0;
    if (!(out->head_dm = calloc(j->S * NH + 1, sizeof *out->head_dm)) ||
        !(out->head_dd = calloc(j->S * NH + 1, sizeof *out->head_dd)))
        return dora_errf(err, "out of memory");
    for (size_t s = 0; s < j->S; s++) {
        const dora_result *p = j->parts[j->refs[s].part];
        const size_t PNH = (size_t)p->head_offset[p->nhead_mods], ps = j->refs[s].s;
        for (size_t h = 0; h < H; h++) {
            const long hp = find_head(p, out->modules[out->head_module[h]]);
            const size_t at = s * NH + (size_t)out->head_offset[h],
                         from = ps * PNH + (size_t)p->head_offset[hp],
                         n = (size_t)out->head_count[h];
            memcpy(&out->head_dm[at], &p->head_dm[from], n * sizeof(double));
            memcpy(&out->head_dd[at], &p->head_dd[from], n * sizeof(double));
        }
    }
    return 0;
}

/* The parts' notes and failures, each once, and a note on the tensors left out. */
static int join_notes(const joinctx *j, dora_result *out, dora_err *err)
{
    for (size_t i = 0; i < j->n; i++) {
        for (size_t q = 0; q < j->parts[i]->nnotes; q++)
            if (add_str(&out->notes, &out->nnotes, j->parts[i]->notes[q]) != 0)
                return dora_errf(err, "out of memory");
        for (size_t q = 0; q < j->parts[i]->nfailures; q++)
            if (add_str(&out->failures, &out->nfailures, j->parts[i]->failures[q]) != 0)
                return dora_errf(err, "out of memory");
    }
    /* how names were matched: each part's, once, as analyze joins its steps' */
    for (size_t i = 0; i < j->n; i++) {
        const char *a = j->parts[i]->name_alignment;
        if (a && !(out->name_alignment && strstr(out->name_alignment, a)) &&
            util_append_item(&out->name_alignment, a) != 0)
            return dora_errf(err, "out of memory");
    }
    if (j->dropped && j->n > 1) {
        char buf[1200];
        snprintf(buf, sizeof buf, "%zu tensor(s) are not in every checkpoint and were left out "
                                  "(first: '%s')",
                 j->dropped, j->first_dropped);
        if (add_str(&out->notes, &out->nnotes, buf) != 0)
            return dora_errf(err, "out of memory");
    }
    return 0;
}

int dora_result_join(dora_result *out, const dora_result *const *parts, size_t n, dora_err *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return dora_errf(err, "nothing to join");
    joinctx j = {.parts = parts, .n = n, .p0 = parts[0]};
    const char *method = "ft";
    if (check_parts(&j, &method, err) != 0)
        return -1;
    int rc = -1;
    if (index_parts(&j, err) != 0 || unique_steps(&j, err) != 0 || common_modules(&j, err) != 0)
        goto done;
    out->method = method;
    out->name = strdup(j.p0->name);
    out->source_path = strdup(j.p0->source_path);
    out->base_path = strdup(j.p0->base_path);
    if (!out->name || !out->source_path || !out->base_path ||
        dora_result_alloc(out, j.S, j.L) != 0) {
        dora_errf(err, "out of memory");
        goto done;
    }
    join_geom_presence(&j, out);
    if (join_modules(&j, out, err) != 0 || join_steps(&j, out, err) != 0 ||
        join_notes(&j, out, err) != 0 || join_heads(&j, out, err) != 0)
        goto done;
    rc = 0;
done:
    for (size_t i = 0; j.ix && i < n; i++)
        free(j.ix[i]);
    free(j.ix);
    free(j.refs);
    free(j.keep);
    if (rc != 0)
        dora_result_release(out);
    return rc;
}
