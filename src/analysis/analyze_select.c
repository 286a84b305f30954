/* analyze_select.c - which tensors dora_analyze_run analyses (kept by the
 * filter, present and alike in every step) and where each step's weights come
 * from: dense tensors, or LoRA factors (their Gram matrices are formed by the
 * work units, analyze_jobs.c); see include/dora/analyze.h. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "dora/adapter.h"
#include "dora/align.h"
#include "dora/guard.h"
#include "dora/kernel.h"
#include "dora/notes.h"
#include "core/util.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int module_cmp(const void *pa, const void *pb)
{
    const module *a = pa, *b = pb;
    return util_natural_cmp(a->base->name, b->base->name);
}



static int kept(const dora_analysis_opts *opts, const char *name)
{
    return dora_filter_match(opts->include, opts->exclude, name);
}

void an_free_modules(module *mods, size_t L)
{
    for (size_t i = 0; i < L; i++)
        an_module_release(&mods[i]);
    free(mods);
}

void an_module_release(module *m)
{
    for (size_t c = 0; m->copies && c <= m->nsrc; c++)
        free((void *)m->copies[c].data);
    free(m->copies);
    free(m->part_name);
    for (size_t c = 0; m->part_t && c < 2 * m->nsrc; c++)
        free((void *)m->part_t[c].data);
    free(m->part_t);
    free(m->part_ad);
    free(m->src);
    memset(m, 0, sizeof *m);
}

/* The note for EMPTY tensors without elements left out (FIRST among them). */
static void note_empty(dora_result *res, size_t empty, const char *first, const dora_model *base)
{
    if (!empty)
        return;
    char shp[256];
    dora_shape_str(dora_model_find(base, first), shp, sizeof shp);
    dora_notes_add(&res->notes, &res->nnotes, 0,
                   "%zu tensor(s) without elements were left out (first: '%s', shape %s)", empty,
                   first, shp);
}

/* The tensors of the base an FT run analyses: floating, of rank >= 2, kept by
 * the filters, with elements; into WANT (allocated), with notes for the rest. */
static int wanted(dora_result *res, const dora_model *base, const dora_analysis_opts *opts,
                  const dora_tensor ***want, size_t *nwant, dora_err *err)
{
    size_t n = 0, skipped_type = 0, empty = 0;
    const char *first_empty = NULL;
    const dora_tensor **w = calloc(base->ntensors ? base->ntensors : 1, sizeof *w);
    if (!w)
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < base->ntensors; i++) {
        const dora_tensor *t = base->by_name[i];
        if (t->ndim < 2 || !dora_dtype_is_analysable(t->dtype)) {
            if (t->ndim >= 2)
                skipped_type++;
            continue;
        }
        if (!kept(opts, t->name))
            continue;
        if (t->numel == 0) { /* [2^40, 0] holds nothing: no loop over its rows */
            if (!empty++)
                first_empty = t->name;
            continue;
        }
        w[n++] = t;
    }
    if (skipped_type)
        dora_notes_add(&res->notes, &res->nnotes, 0,
                       "%zu non-floating tensor(s) of rank >= 2 were left out", skipped_type);
    note_empty(res, empty, first_empty, base);
    *want = w;
    *nwant = n;
    return 0;
}

/* A note naming the globals M's torch files read as inert placeholders
 * (pickle.h), unless an earlier note named the same ones. */
static void note_globals(dora_result *res, const dora_model *m)
{
    for (size_t f = 0; f < m->nfiles; f++) {
        const st_file *sf = m->files[f];
        if (!sf->nglobals)
            continue;
        char list[600];
        size_t used = 0;
        list[0] = '\0';
        for (size_t g = 0; g < sf->nglobals && used < sizeof list; g++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", g ? ", " : "",
                                     sf->globals[g]);
        int seen = 0;
        for (size_t k = 0; k < res->nnotes && !seen; k++)
            seen = strstr(res->notes[k], list) != NULL && strstr(res->notes[k], "placeholder");
        if (!seen)
            dora_notes_add(&res->notes, &res->nnotes, 0,
                           "'%s' (and the files like it): objects of %zu class(es) outside the "
                           "allow-list were read as inert placeholders, never called: %s",
                           sf->path, sf->nglobals, list);
    }
}

/* Each step's names aligned to the base's (align.h); what was applied, once
 * per distinct rule, into a note and res->name_alignment. */
static int align_steps(dora_result *res, const dora_model *base, const stepdata *sd, size_t S,
                       const dora_analysis_opts *opts, const dora_tensor *const *want,
                       size_t nwant, dora_align *al, dora_err *err)
{
    note_globals(res, base);
    for (size_t s = 0; s < S; s++) {
        note_globals(res, sd[s].model);
        if (dora_align_choose(&al[s], base, sd[s].model, want, nwant, opts->renames,
                              opts->nrenames, err) != 0)
            return -1;
        const char *d = al[s].desc;
        int seen = 0;
        for (size_t k = 0; d && k < s && !seen; k++)
            seen = al[k].desc && strcmp(al[k].desc, d) == 0;
        if (!d || seen)
            continue;
        dora_notes_add(&res->notes, &res->nnotes, 0, "names of '%s'%s: %s", sd[s].model->path,
                       S > 1 ? " (and the steps like it)" : "", d);
        if (util_append_item(&res->name_alignment, d) != 0)
            return dora_errf(err, "out of memory");
    }
    return 0;
}

/* T's source in every step, through the alignments AL; *PRESENT is 0 when a
 * step lacks it (it is left out). */
static int place_dense(const dora_tensor *t, const dora_align *al, size_t S, module *md,
                       int *present, dora_err *err)
{
    *present = 1;
    for (size_t s = 0; s < S; s++) {
        const dora_tensor *c = dora_align_find_rope(&al[s], t->name, &md->src[s].rope_heads);
        if (!c) {
            *present = 0;
            return 0;
        }
        if (!dora_align_same_shape(t, c)) {
            char s0[256], s1[256];
            dora_shape_str(t, s0, sizeof s0);
            dora_shape_str(c, s1, sizeof s1);
            return dora_errf(err, "'%s': tensor '%s' has shape %s, but %s in the base '%s'",
                             c->file, c->name, s1, s0, t->file);
        }
        if (!dora_dtype_is_analysable(c->dtype))
            return dora_errf(err, "'%s': tensor '%s' is %s, not a floating type (the base has "
                                  "%s)",
                             c->file, c->name, dora_dtype_name(c->dtype),
                             dora_dtype_name(t->dtype));
        md->src[s].dense = c;
    }
    return 0;
}

/* FT runs: every wanted tensor of the base (see wanted), in every checkpoint
 * under its aligned name. */
static int select_dense(dora_result *res, const dora_model *base, const stepdata *sd, size_t S,
                        const dora_analysis_opts *opts, module *mods, size_t *nout,
                        dora_err *err)
{
    const dora_tensor **want = NULL;
    size_t nwant = 0, L = 0, missing = 0;
    const char *first_missing = NULL;
    dora_align *al = calloc(S ? S : 1, sizeof *al);
    int rc = -1;
    if (!al) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (wanted(res, base, opts, &want, &nwant, err) != 0 ||
        align_steps(res, base, sd, S, opts, want, nwant, al, err) != 0)
        goto done;
    for (size_t i = 0; i < nwant; i++) {
        module *md = &mods[L];
        md->base = want[i];
        md->rows = dora_tensor_rows(want[i]);
        md->cols = dora_tensor_cols(want[i]);
        md->nsrc = S;
        if (!(md->src = calloc(S, sizeof *md->src))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        *nout = ++L; /* owned from here: the caller frees on failure */
        int present;
        if (place_dense(want[i], al, S, md, &present, err) != 0)
            goto done;
        if (!present) {
            free(md->src);
            md->src = NULL;
            *nout = --L;
            if (!missing++)
                first_missing = want[i]->name;
        }
    }
    if (missing)
        dora_notes_add(&res->notes, &res->nnotes, 0,
                       "%zu tensor(s) of the base are missing from a checkpoint and were left "
                       "out (first: '%s')",
                       missing, first_missing);
    rc = 0;
done:
    for (size_t s = 0; al && s < S; s++)
        dora_align_release(&al[s]);
    free(al);
    free(want);
    return rc;
}

/* Adapter runs: the modules the adapters adapt (the same in every step). */
static int select_adapted(dora_result *res, const dora_model *base, const stepdata *sd,
                          size_t S, const dora_analysis_opts *opts, module *mods, size_t *nout,
                          dora_err *err)
{
    const dora_adapter *first = sd[0].adapter;
    for (size_t s = 1; s < S; s++)
        for (size_t i = 0; i < sd[s].adapter->nmodules; i++)
            if (!dora_adapter_find(first, sd[s].adapter->modules[i].base_name))
                return dora_errf(err, "'%s' adapts '%s', which '%s' does not: the checkpoints of a "
                                      "run must adapt the same modules",
                                 sd[s].adapter->weights->path, sd[s].adapter->modules[i].base_name,
                                 first->weights->path);
    size_t L = 0, empty = 0;
    const char *first_empty = NULL;
    for (size_t i = 0; i < first->nmodules; i++) {
        const char *name = first->modules[i].base_name;
        if (!kept(opts, name))
            continue;
        const dora_tensor *t = dora_model_find(base, name); /* exists: dora_adapter_check */
        if (t->numel == 0) {
            if (!empty++)
                first_empty = name;
            continue;
        }
        module *md = &mods[L];
        md->base = t;
        md->nsrc = S;
        if (!(md->src = calloc(S, sizeof *md->src)))
            return dora_errf(err, "out of memory");
        *nout = ++L;
        md->lora = first->modules[i].kind == DORA_ADAPTED_LORA;
        md->transposed = md->lora && first->modules[i].fan_in_fan_out;
        md->rows = md->transposed ? t->shape[1] : dora_tensor_rows(t);
        md->cols = md->transposed ? t->shape[0] : dora_tensor_cols(t);
        for (size_t s = 0; s < S; s++) {
            const dora_adapted *ad = dora_adapter_find(sd[s].adapter, name);
            if (!ad)
                return dora_errf(err, "'%s' does not adapt '%s', which '%s' does: the checkpoints "
                                      "of a run must adapt the same modules",
                                 sd[s].adapter->weights->path, name, first->weights->path);
            if ((ad->kind == DORA_ADAPTED_LORA) != md->lora ||
                (md->lora && ad->fan_in_fan_out != first->modules[i].fan_in_fan_out))
                return dora_errf(err, "'%s': module '%s' is adapted differently than in '%s'",
                                 sd[s].adapter->weights->path, name, first->weights->path);
            if (!md->lora) {
                md->src[s].dense = ad->saved;
                continue;
            }
            md->src[s].ad = ad;
            md->src[s].off = md->rsum;
            md->rsum += ad->r;
        }
    }
    note_empty(res, empty, first_empty, base);
    return 0;
}

/* Choose the tensors to analyse; fills mods (allocated) and their step sources. */
int an_select_modules(dora_result *res, const dora_model *base, const stepdata *sd, size_t S,
                      const dora_analysis_opts *opts, module **out, size_t *nout,
                      dora_err *err)
{
    size_t cap = sd[0].adapter ? sd[0].adapter->nmodules : base->ntensors;
    module *mods = calloc(cap ? cap : 1, sizeof *mods);
    size_t L = 0;
    if (!mods)
        return dora_errf(err, "out of memory");
    int rc = sd[0].adapter ? select_adapted(res, base, sd, S, opts, mods, &L, err)
                           : select_dense(res, base, sd, S, opts, mods, &L, err);
    if (rc == 0)
        rc = an_reshape_modules(res, base, &mods, &L, opts, sd[0].adapter != NULL, err);
    if (rc != 0) {
        an_free_modules(mods, L);
        return -1;
    }
    qsort(mods, L, sizeof *mods, module_cmp);
    *out = mods;
    *nout = L;
    return 0;
}

int an_alloc_result(dora_result *res, const module *mods, size_t S, size_t L, int per_row)
{
    if (dora_result_alloc(res, S, L) != 0)
        return -1;
    for (size_t l = 0; l < L; l++) {
        if (!(res->modules[l] = strdup(mods[l].base->name)))
            return -1;
        res->layer[l] = dora_layer_index(mods[l].base->name);
        res->rows[l] = mods[l].rows;
        res->cols[l] = mods[l].cols;
        res->rank[l] = mods[l].lora ? (int32_t)mods[l].src[0].ad->r : 0;
    }
    if (per_row) {
        res->m0 = calloc(L ? L : 1, sizeof *res->m0);
        res->m = calloc(L ? L : 1, sizeof *res->m);
        res->cos = calloc(L ? L : 1, sizeof *res->cos);
        res->one_minus_cos = calloc(L ? L : 1, sizeof *res->one_minus_cos);
        if (!res->m0 || !res->m || !res->cos || !res->one_minus_cos)
            return -1;
        for (size_t l = 0; l < L; l++) {
            size_t k = (size_t)mods[l].rows;
            res->m0[l] = calloc(k, sizeof **res->m0);
            res->m[l] = calloc(S * k, sizeof **res->m);
            res->cos[l] = calloc(S * k, sizeof **res->cos);
            res->one_minus_cos[l] = calloc(S * k, sizeof **res->one_minus_cos);
            if (!res->m0[l] || !res->m[l] || !res->cos[l] || !res->one_minus_cos[l])
                return -1;
        }
    }
    return 0;
}
