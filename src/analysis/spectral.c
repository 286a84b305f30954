/* spectral.c - spectra of weight updates, intruder dimensions, subspace
 * similarity over runs: module selection, the results and the entry point;
 * see include/dora/spectral.h. The SVDs are in svd.c, the work on one module
 * in spectral_module.c. */
#define _POSIX_C_SOURCE 200809L
#include "analysis/spectral_int.h"
#include "analysis/analyze_int.h"
#include "dora/analyze.h"
#include "dora/guard.h"
#include "dora/kernel.h"
#include "dora/notes.h"
#include "core/util.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/* ================================================================ runs */

void dora_spectrum_opts_init(dora_spectrum_opts *o)
{
    memset(o, 0, sizeof *o);
    o->top = 0;
    o->subspace = DORA_SPEC_SUBSPACE_DEFAULT;
    o->threshold = DORA_SPEC_THRESHOLD_DEFAULT;
    o->randomized = 1;
    o->f64_max_elems = DORA_SPEC_F64_MAX_ELEMS;
    o->dense_max_elems = DORA_SPEC_DENSE_MAX_ELEMS;
}


static int kept(const dora_spectrum_opts *o, const char *name)
{
    return dora_filter_match(o->include, o->exclude, name);
}

static rmod *add_rmod(rctx *rc, size_t S)
{
    if (rc->nmods == rc->capmods) {
        size_t cap = rc->capmods ? 2 * rc->capmods : 16;
        rmod *nm = realloc(rc->mods, cap * sizeof *nm);
        if (!nm)
            return NULL;
        rc->mods = nm;
        rc->capmods = cap;
    }
    rmod *m = &rc->mods[rc->nmods];
    memset(m, 0, sizeof *m);
    m->wt = calloc(S ? S : 1, sizeof *m->wt);
    m->ad = calloc(S ? S : 1, sizeof *m->ad);
    if (!m->wt || !m->ad) {
        free(m->wt);
        free(m->ad);
        return NULL;
    }
    rc->nmods++;
    return m;
}

static void free_rctx(rctx *rc)
{
    for (size_t i = 0; i < rc->nmods; i++) {
        free(rc->mods[i].wt);
        free(rc->mods[i].ad);
    }
    free(rc->mods);
    an_free_modules(rc->amods, rc->namods);
    for (size_t s = 0; rc->run && s < rc->run->nsteps; s++) {
        if (rc->model)
            dora_model_close(rc->model[s]);
        if (rc->adapter && rc->adapter[s] != rc->run->steps[s].adapter) /* not borrowed */
            dora_adapter_close(rc->adapter[s]);
    }
    free(rc->model);
    free(rc->adapter);
}

/* Open every step: a full model, or an adapter (the one run discovery opened, or
 * opened here; checked against the base when there is one). A run is all full
 * models or all adapters. */
static int open_steps(rctx *rc, const dora_model *base, dora_err *err)
{
    const dora_run *run = rc->run;
    const size_t S = run->nsteps;
    rc->model = calloc(S ? S : 1, sizeof *rc->model);
    rc->adapter = calloc(S ? S : 1, sizeof *rc->adapter);
    if (!rc->model || !rc->adapter)
        return dora_errf(err, "out of memory");
    if (S == 0)
        return dora_errf(err, "'%s': the run has no checkpoints", run->path);
    for (size_t s = 0; s < S; s++) {
        dora_model_kind kind;
        if (dora_model_probe(run->steps[s].path, &kind, NULL, err) != 0)
            return -1;
        if (kind == DORA_MODEL_ADAPTER) {
            /* an adapter that discovery opened is borrowed, not parsed again */
            rc->adapter[s] = run->steps[s].adapter;
            if (!rc->adapter[s] && dora_adapter_open(&rc->adapter[s], run->steps[s].path, err) != 0)
                return -1;
            if (base && dora_adapter_check(rc->adapter[s], base, err) != 0)
                return -1;
        } else {
            if (!base)
                return dora_errf(err, "run '%s': '%s' holds full weights: the update W_t - W0 "
                                      "needs the pre-trained model (--base PATH)",
                                 rc->name, run->steps[s].path);
            if (dora_model_open(&rc->model[s], run->steps[s].path, err) != 0)
                return -1;
        }
        if ((rc->adapter[s] != NULL) != (rc->adapter[0] != NULL))
            return dora_errf(err, "'%s' is %s but '%s' is %s: a run is either full weights or "
                                  "adapters",
                             run->steps[s].path, rc->adapter[s] ? "an adapter" : "a full model",
                             run->steps[0].path, rc->adapter[0] ? "an adapter" : "a full model");
    }
    return 0;
}

/* The rmod of analyze's module MD, S steps. */
static int rmod_of(rctx *rc, const module *md, size_t S)
{
    rmod *m = add_rmod(rc, S);
    if (!m)
        return -1;
    m->name = md->base->name; /* "NAME[q]" for a part */
    m->base = md->base;
    m->transposed = md->transposed;
    m->rows = md->rows;
    m->cols = md->cols;
    m->update = "dense";
    m->dense = 1;
    int dora = 0;
    for (size_t s = 0; s < S; s++) {
        const dora_adapted *ad = md->lora ? md->src[s].ad : NULL;
        m->wt[s] = ad ? NULL : md->src[s].dense;
        m->ad[s] = ad;
        if (ad) {
            dora |= ad->magnitude != NULL;
            m->maxr = ad->r > m->maxr ? ad->r : m->maxr;
        }
    }
    if (md->lora) {
        m->rank = md->src[0].ad->r;
        m->update = dora ? "dora" : "lora";
        m->dense = dora; /* the merged DoRA update is formed densely */
    }
    return 0;
}

/* With a base: the modules analyze chooses (analyze_select.c: names aligned to
 * the base's, Conv1D weights transposed, fused projections split), kept in
 * RC->amods for the rmods that point into them; its notes are the run's. */
static int select_shared(sctx *c, rctx *rc, dora_err *err)
{
    const size_t S = rc->run->nsteps;
    stepdata *sd = calloc(S, sizeof *sd);
    dora_result res;
    memset(&res, 0, sizeof res);
    const dora_analysis_opts ao = {.include = c->opts->include, .exclude = c->opts->exclude,
                                   .threads = 1, .renames = c->opts->renames,
                                   .nrenames = c->opts->nrenames,
                                   .transpose = c->opts->transpose,
                                   .no_split = c->opts->no_split};
    int rc_ = sd ? 0 : dora_errf(err, "out of memory");
    for (size_t s = 0; rc_ == 0 && s < S; s++) {
        sd[s].model = rc->model[s];
        sd[s].adapter = rc->adapter[s];
        sd[s].borrowed = 1;
    }
    if (rc_ == 0)
        rc_ = an_select_modules(&res, c->base, sd, S, &ao, &rc->amods, &rc->namods, err);
    for (size_t k = 0; rc_ == 0 && k < res.nnotes; k++)
        dora_notes_add(&c->sp->notes, &c->sp->nnotes, 0, "run '%s': %s", rc->name,
                       res.notes[k]);
    size_t big = 0;
    const char *first_big = NULL;
    for (size_t l = 0; rc_ == 0 && l < rc->namods; l++) {
        const module *md = &rc->amods[l];
        if (md->rows * md->cols > c->opts->dense_max_elems) {
            if (!big++)
                first_big = md->base->name;
            continue;
        }
        if (rmod_of(rc, md, S) != 0)
            rc_ = dora_errf(err, "out of memory");
    }
    if (big)
        dora_notes_add(&c->sp->notes, &c->sp->nnotes, 0,
                       "run '%s': %zu module(s) above %lld elements were left out: too large "
                       "for a dense SVD (first: '%s')",
                       rc->name, big, (long long)c->opts->dense_max_elems, first_big);
    free(sd);
    dora_result_release(&res);
    return rc_;
}

/* Adapter runs without a base: the modules the adapters adapt, the same in
 * every step, as saved (nothing to align names or split fused weights by). */
static int select_adapter(sctx *c, rctx *rc, dora_err *err)
{
    const size_t S = rc->run->nsteps;
    const dora_adapter *first = rc->adapter[0];
    size_t saved_skipped = 0, big = 0;
    const char *first_saved = NULL, *first_big = NULL;
    for (size_t s = 1; s < S; s++)
        for (size_t i = 0; i < rc->adapter[s]->nmodules; i++)
            if (!dora_adapter_find(first, rc->adapter[s]->modules[i].base_name))
                return dora_errf(err, "'%s' adapts '%s', which '%s' does not: the checkpoints of a "
                                      "run must adapt the same modules",
                                 rc->adapter[s]->weights->path,
                                 rc->adapter[s]->modules[i].base_name, first->weights->path);
    for (size_t i = 0; i < first->nmodules; i++) {
        const dora_adapted *a0 = &first->modules[i];
        const char *name = a0->base_name;
        for (size_t s = 1; s < S; s++) {
            const dora_adapted *as = dora_adapter_find(rc->adapter[s], name);
            if (!as)
                return dora_errf(err, "'%s' does not adapt '%s', which '%s' does: the checkpoints "
                                      "of a run must adapt the same modules",
                                 rc->adapter[s]->weights->path, name, first->weights->path);
            if (as->kind != a0->kind ||
                (as->kind == DORA_ADAPTED_LORA && as->fan_in_fan_out != a0->fan_in_fan_out))
                return dora_errf(err, "'%s': module '%s' is adapted differently than in '%s'",
                                 rc->adapter[s]->weights->path, name, first->weights->path);
            if (as->kind == DORA_ADAPTED_LORA &&
                (as->L.rows != a0->L.rows || as->R.cols != a0->R.cols))
                return dora_errf(err, "'%s': module '%s': the update is [%lld, %lld] but "
                                      "[%lld, %lld] in '%s'",
                                 rc->adapter[s]->weights->path, name, (long long)as->L.rows,
                                 (long long)as->R.cols, (long long)a0->L.rows,
                                 (long long)a0->R.cols, first->weights->path);
            if (as->kind == DORA_ADAPTED_SAVED &&
                (dora_tensor_rows(as->saved) != dora_tensor_rows(a0->saved) ||
                 dora_tensor_cols(as->saved) != dora_tensor_cols(a0->saved)))
                return dora_errf(err, "'%s': tensor '%s' differs in shape from '%s'",
                                 rc->adapter[s]->weights->path, as->saved->name,
                                 first->weights->path);
        }
        if (!kept(c->opts, name))
            continue;
        const dora_tensor *bt = c->base ? dora_model_find(c->base, name) : NULL;
        int64_t rows, cols, maxr = 0;
        int dora = 0;
        if (a0->kind == DORA_ADAPTED_SAVED) {
            if (!c->base) {
                if (!saved_skipped++)
                    first_saved = name;
                continue;
            }
            rows = dora_tensor_rows(a0->saved);
            cols = dora_tensor_cols(a0->saved);
        } else {
            rows = a0->L.rows;
            cols = a0->R.cols;
            for (size_t s = 0; s < S; s++) {
                const dora_adapted *as = dora_adapter_find(rc->adapter[s], name);
                if (as->magnitude)
                    dora = 1;
                if (as->r > maxr)
                    maxr = as->r;
            }
        }
        if (rows < 1 || cols < 1)
            continue;
        int dense = a0->kind == DORA_ADAPTED_SAVED || (dora && c->base);
        if ((dense || c->base) && rows * cols > c->opts->dense_max_elems) {
            if (!big++)
                first_big = name;
            continue;
        }
        rmod *m = add_rmod(rc, S);
        if (!m)
            return dora_errf(err, "out of memory");
        m->name = name;
        m->base = bt;
        m->rows = rows;
        m->cols = cols;
        m->dense = dense;
        if (a0->kind == DORA_ADAPTED_SAVED) {
            m->update = "dense";
            for (size_t s = 0; s < S; s++)
                m->wt[s] = dora_adapter_find(rc->adapter[s], name)->saved;
        } else {
            m->transposed = a0->fan_in_fan_out;
            m->rank = a0->r;
            m->maxr = maxr;
            m->update = dora ? (c->base ? "dora" : "lora-part") : "lora";
            for (size_t s = 0; s < S; s++)
                m->ad[s] = dora_adapter_find(rc->adapter[s], name);
        }
    }
    if (saved_skipped)
        dora_notes_add(&c->sp->notes, &c->sp->nnotes, 0,
                       "run '%s': %zu modules_to_save weight(s) left out: their update needs "
                       "the base (first: '%s')",
                       rc->name, saved_skipped, first_saved);
    if (big)
        dora_notes_add(&c->sp->notes, &c->sp->nnotes, 0,
                       "run '%s': %zu module(s) above %lld elements were left out: too large "
                       "for a dense SVD (first: '%s')",
                       rc->name, big, (long long)c->opts->dense_max_elems, first_big);
    return 0;
}

/* natural order, then byte order so that distinct names never compare equal */
static int name_cmp(const char *a, const char *b)
{
    int r = util_natural_cmp(a, b);
    return r ? r : strcmp(a, b);
}

static int rmod_cmp(const void *pa, const void *pb)
{
    return name_cmp(((const rmod *)pa)->name, ((const rmod *)pb)->name);
}

static int gname_cmp(const void *pa, const void *pb)
{
    return name_cmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* The union of the runs' module names, and each run's index of each. */
static int global_modules(sctx *c, dora_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < c->nruns; i++)
        total += c->rc[i].nmods;
    const char **names = calloc(total ? total : 1, sizeof *names);
    if (!names)
        return dora_errf(err, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < c->nruns; i++)
        for (size_t j = 0; j < c->rc[i].nmods; j++)
            names[k++] = c->rc[i].mods[j].name;
    qsort(names, total, sizeof *names, gname_cmp);
    c->g = calloc(total ? total : 1, sizeof *c->g);
    if (!c->g) {
        free(names);
        return dora_errf(err, "out of memory");
    }
    for (size_t j = 0; j < total; j++) {
        if (c->ng && strcmp(c->g[c->ng - 1].name, names[j]) == 0)
            continue;
        gmod *g = &c->g[c->ng++];
        g->name = names[j];
        if (!(g->idx = malloc(c->nruns * sizeof *g->idx))) {
            free(names);
            return dora_errf(err, "out of memory");
        }
        for (size_t i = 0; i < c->nruns; i++)
            g->idx[i] = SIZE_MAX;
    }
    free(names);
    /* every run's modules are sorted the same way: one merge pass each */
    for (size_t i = 0; i < c->nruns; i++) {
        size_t gi = 0;
        for (size_t j = 0; j < c->rc[i].nmods; j++) {
            while (strcmp(c->g[gi].name, c->rc[i].mods[j].name) != 0)
                gi++;
            c->g[gi].idx[i] = j;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- results */

static void release_run(dora_spec_run *r)
{
    for (size_t l = 0; r->mods && l < r->nmodules; l++) {
        dora_spec_module *m = &r->mods[l];
        free(m->name);
        free(m->sigma);
        free(m->intruder_cos);
        free(m->phi);
        free(m->phi_k);
    }
    for (size_t s = 0; r->step_paths && s < r->nsteps; s++)
        free(r->step_paths[s]);
    free(r->mods);
    free(r->step_paths);
    free(r->steps);
    free(r->name);
    free(r->source_path);
    free(r->fro_norm);
    free(r->sigma1);
    free(r->r90);
    free(r->stable_rank);
    free(r->intruders);
    free(r->svd_method);
    free(r->phi_prev);
    free(r->phi_final);
    free(r->pairs);
}

static void release_compare(dora_spec_compare *c)
{
    for (size_t i = 0; c->modules && i < c->nmodules; i++)
        free(c->modules[i]);
    for (size_t i = 0; c->grid && i < c->nmodules; i++)
        free(c->grid[i]);
    free(c->modules);
    free(c->grid);
    free(c->steps_a);
    free(c->steps_b);
    free(c->phi);
    free(c->k);
    free(c->mod_a);
    free(c->mod_b);
    free(c->idx_a);
    free(c->idx_b);
}

void dora_spectrum_release(dora_spectrum *sp)
{
    if (!sp)
        return;
    for (size_t i = 0; sp->runs && i < sp->nruns; i++)
        release_run(&sp->runs[i]);
    for (size_t i = 0; sp->cmp && i < sp->ncompare; i++)
        release_compare(&sp->cmp[i]);
    dora_notes_free(sp->notes, sp->nnotes);
    free(sp->runs);
    free(sp->cmp);
    free(sp->base_path);
    memset(sp, 0, sizeof *sp);
}

static double *filled(size_t n, double v)
{
    double *p = alloc_n(n, sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = v;
    return p;
}

static int alloc_run(sctx *c, size_t i, const char *name)
{
    const rctx *rc = &c->rc[i];
    dora_spec_run *r = &c->sp->runs[i];
    const size_t S = rc->run->nsteps, L = rc->nmods, SL = S * L;
    const int64_t K = c->opts->subspace;
    r->nsteps = S;
    r->nmodules = L;
    r->npairs = S >= 2 ? (S - 1) + (S - 2) : 0;
    r->method = rc->run->method;
    if (rc->adapter[0]) {
        r->method = rc->adapter[0]->method; /* lora, ia3, adalora, vera, loha, lokr */
        for (size_t s = 0; s < S; s++)
            if (strcmp(rc->adapter[s]->method, "dora") == 0)
                r->method = "dora";
    }
    if (!(r->name = strdup(name)) || !(r->source_path = strdup(rc->run->path)))
        return -1;
    r->steps = alloc_n(S, sizeof *r->steps);
    r->step_paths = calloc(S ? S : 1, sizeof *r->step_paths);
    r->mods = calloc(L ? L : 1, sizeof *r->mods);
    r->fro_norm = filled(SL, 0);
    r->sigma1 = filled(SL, 0);
    r->stable_rank = filled(SL, 0);
    r->phi_prev = filled(SL, -1);
    r->phi_final = filled(SL, -1);
    r->r90 = alloc_n(SL, sizeof *r->r90);
    r->svd_method = calloc(SL ? SL : 1, sizeof *r->svd_method);
    r->intruders = c->base ? alloc_n(SL, sizeof *r->intruders) : NULL;
    r->pairs = alloc_n(2 * r->npairs, sizeof *r->pairs);
    if (!r->steps || !r->step_paths || !r->mods || !r->fro_norm || !r->sigma1 ||
        !r->stable_rank || !r->phi_prev || !r->phi_final || !r->r90 || !r->svd_method ||
        (c->base && !r->intruders) || !r->pairs)
        return -1;
    for (size_t k = 0; k < SL; k++) {
        r->r90[k] = 0;
        if (r->intruders)
            r->intruders[k] = -1;
    }
    for (size_t s = 0; s < S; s++) {
        r->steps[s] = rc->run->steps[s].step;
        if (!(r->step_paths[s] = strdup(rc->run->steps[s].path)))
            return -1;
    }
    size_t p = 0;
    for (size_t t = 1; t < S; t++, p++) {
        r->pairs[2 * p] = (int64_t)(t - 1);
        r->pairs[2 * p + 1] = (int64_t)t;
    }
    for (size_t t = 0; t + 2 < S; t++, p++) {
        r->pairs[2 * p] = (int64_t)t;
        r->pairs[2 * p + 1] = (int64_t)(S - 1);
    }
    for (size_t l = 0; l < L; l++) {
        const rmod *rm = &rc->mods[l];
        dora_spec_module *m = &r->mods[l];
        if (!(m->name = strdup(rm->name)))
            return -1;
        m->layer = dora_layer_index(rm->name);
        m->rows = rm->rows;
        m->cols = rm->cols;
        m->rank = (int32_t)rm->rank;
        m->update = rm->update;
        const int64_t mn = min64(rm->rows, rm->cols);
        const int dense_bits = rm->rows * rm->cols <= c->opts->f64_max_elems ? 64 : 32;
        m->bits = rm->dense ? dense_bits : 64;
        m->nsigma = rm->dense ? mn : min64(rm->maxr, mn);
        if (c->opts->top > 0)
            m->nsigma = min64(m->nsigma, c->opts->top);
        m->sigma = filled(S * (size_t)m->nsigma, 0);
        m->phi = filled(r->npairs * (size_t)(K * K), -1);
        m->phi_k = calloc(2 * r->npairs + 1, sizeof *m->phi_k);
        if (!m->sigma || !m->phi || !m->phi_k)
            return -1;
        if (c->base && !(m->intruder_cos = filled(S * DORA_SPEC_INTRUDER_TOP, -1)))
            return -1;
    }
    return 0;
}

/* The comparisons of every pair of runs: modules both have with the same
 * shape; the step numbers both have, and the two final steps. */
static int plan_compares(sctx *c, dora_err *err)
{
    dora_spectrum *sp = c->sp;
    const size_t R = c->nruns;
    sp->ncompare = R * (R - 1) / 2;
    sp->cmp = calloc(sp->ncompare ? sp->ncompare : 1, sizeof *sp->cmp);
    c->cmp_mi = alloc_n(sp->ncompare * c->ng, sizeof *c->cmp_mi);
    if (!sp->cmp || !c->cmp_mi)
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < sp->ncompare * c->ng; i++)
        c->cmp_mi[i] = SIZE_MAX;
    const int64_t K = c->opts->subspace;
    size_t ci = 0, nothing = 0;
    const char *first_a = NULL, *first_b = NULL;
    for (size_t a = 0; a < R; a++)
        for (size_t b = a + 1; b < R; b++, ci++) {
            dora_spec_compare *cp = &sp->cmp[ci];
            const dora_spec_run *ra = &sp->runs[a], *rb = &sp->runs[b];
            cp->run_a = a;
            cp->run_b = b;
            size_t M = 0;
            for (size_t g = 0; g < c->ng; g++) {
                size_t ia = c->g[g].idx[a], ib = c->g[g].idx[b];
                if (ia != SIZE_MAX && ib != SIZE_MAX && ra->mods[ia].rows == rb->mods[ib].rows &&
                    ra->mods[ia].cols == rb->mods[ib].cols)
                    M++;
            }
            size_t P = 0, cap = ra->nsteps + 1;
            cp->modules = calloc(M + 1, sizeof *cp->modules);
            cp->grid = calloc(M + 1, sizeof *cp->grid);
            cp->mod_a = alloc_n(M, sizeof *cp->mod_a);
            cp->mod_b = alloc_n(M, sizeof *cp->mod_b);
            cp->idx_a = alloc_n(cap, sizeof *cp->idx_a);
            cp->idx_b = alloc_n(cap, sizeof *cp->idx_b);
            cp->steps_a = alloc_n(cap, sizeof *cp->steps_a);
            cp->steps_b = alloc_n(cap, sizeof *cp->steps_b);
            if (!cp->modules || !cp->grid || !cp->mod_a || !cp->mod_b || !cp->idx_a ||
                !cp->idx_b || !cp->steps_a || !cp->steps_b)
                return dora_errf(err, "out of memory");
            for (size_t sa = 0; sa < ra->nsteps; sa++)
                for (size_t sb = 0; sb < rb->nsteps; sb++)
                    if (ra->steps[sa] == rb->steps[sb]) {
                        cp->idx_a[P] = sa;
                        cp->idx_b[P++] = sb;
                    }
            if (P == 0 || cp->idx_a[P - 1] != ra->nsteps - 1 || cp->idx_b[P - 1] != rb->nsteps - 1) {
                cp->idx_a[P] = ra->nsteps - 1;
                cp->idx_b[P++] = rb->nsteps - 1;
            }
            cp->npairs = P;
            for (size_t p = 0; p < P; p++) {
                cp->steps_a[p] = ra->steps[cp->idx_a[p]];
                cp->steps_b[p] = rb->steps[cp->idx_b[p]];
            }
            cp->phi = filled(P * M, -1);
            cp->k = calloc(P * M + 1, sizeof *cp->k);
            if (!cp->phi || !cp->k)
                return dora_errf(err, "out of memory");
            for (size_t g = 0; g < c->ng; g++) {
                size_t ia = c->g[g].idx[a], ib = c->g[g].idx[b];
                if (ia == SIZE_MAX || ib == SIZE_MAX || ra->mods[ia].rows != rb->mods[ib].rows ||
                    ra->mods[ia].cols != rb->mods[ib].cols)
                    continue;
                size_t mi = cp->nmodules;
                c->cmp_mi[ci * c->ng + g] = mi;
                cp->mod_a[mi] = ia;
                cp->mod_b[mi] = ib;
                if (!(cp->modules[mi] = strdup(c->g[g].name)) ||
                    !(cp->grid[mi] = filled(P * (size_t)(K * K), -1)))
                    return dora_errf(err, "out of memory");
                cp->nmodules++;
            }
            if (M == 0 && !nothing++) {
                first_a = ra->name;
                first_b = rb->name;
            }
        }
    if (nothing)
        dora_notes_add(&sp->notes, &sp->nnotes, 0,
                       "%zu pair(s) of runs have no module of the same shape in common: "
                       "nothing to compare (first: '%s' and '%s')",
                       nothing, first_a, first_b);
    return 0;
}

int dora_spectrum_run(dora_spectrum *sp, const dora_model *base, const char *base_path,
                      char *const *names, const dora_run *runs, size_t nruns,
                      const dora_spectrum_opts *opts, dora_err *err)
{
    memset(sp, 0, sizeof *sp);
    dora_adapter_set_init_factoriser(an_init_factors); /* PiSSA / OLoRA: B0 A0 from W0 */
    if (dora_guard_install() != 0)
        return dora_errf(err, "cannot install the SIGBUS guard");
    sctx c;
    memset(&c, 0, sizeof c);
    c.sp = sp;
    c.opts = opts;
    c.base = base;
    c.nruns = nruns;
    int rc = -1;
    sp->opts = *opts;
    sp->opts.include = sp->opts.exclude = NULL;
    sp->opts.progress = NULL;
    if (opts->subspace < 1 || opts->subspace > DORA_SPEC_SUBSPACE_MAX || opts->top < 0 ||
        !(opts->threshold > 0 && opts->threshold <= 1)) {
        dora_errf(err, "spectrum: bad options (subspace %lld, top %lld, threshold %g)",
                  (long long)opts->subspace, (long long)opts->top, opts->threshold);
        goto done;
    }
    if (nruns == 0) {
        dora_errf(err, "spectrum: no run");
        goto done;
    }
    if (base_path && base && !(sp->base_path = strdup(base_path))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    c.rc = calloc(nruns, sizeof *c.rc);
    sp->runs = calloc(nruns, sizeof *sp->runs);
    if (!c.rc || !sp->runs) {
        dora_errf(err, "out of memory");
        goto done;
    }
    sp->nruns = nruns;
    for (size_t i = 0; i < nruns; i++) {
        rctx *rx = &c.rc[i];
        rx->name = names[i];
        rx->run = &runs[i];
        if (open_steps(rx, base, err) != 0)
            goto done;
        if ((base ? select_shared(&c, rx, err) : select_adapter(&c, rx, err)) != 0)
            goto done;
        if (rx->nmods == 0) {
            dora_errf(err, "run '%s': no module to analyse (none of rank >= 2 and floating type%s%s)",
                      names[i], base ? " in both the base and every checkpoint" : "",
                      opts->include || opts->exclude ? " kept by the filters" : "");
            goto done;
        }
        qsort(rx->mods, rx->nmods, sizeof *rx->mods, rmod_cmp);
        rx->need_vectors = runs[i].nsteps >= 2 || (opts->compare && nruns >= 2);
        if (alloc_run(&c, i, names[i]) != 0) {
            dora_errf(err, "out of memory for the results of run '%s'", names[i]);
            goto done;
        }
    }
    if (!base) {
        int dora = 0;
        for (size_t i = 0; i < nruns; i++)
            for (size_t l = 0; l < c.rc[i].nmods; l++)
                dora |= strcmp(c.rc[i].mods[l].update, "lora-part") == 0;
        dora_notes_add(&sp->notes, &sp->nnotes, 0,
                       "no --base: intruder dimensions are not computed%s",
                       dora ? "; DoRA modules are analysed through their low-rank part s*B@A "
                              "(the merged DoRA update m*V/||V|| - W0 needs the base)"
                            : "");
    }
    if (global_modules(&c, err) != 0)
        goto done;
    if (opts->compare && plan_compares(&c, err) != 0)
        goto done;
    dora_progress_add_total(opts->progress, 0, c.ng);
    dora_progress_begin(opts->progress);
    if (spec_do_modules(&c, err) != 0)
        goto done;
    rc = 0;
done:
    dora_progress_end(opts->progress);
    for (size_t i = 0; c.rc && i < nruns; i++)
        free_rctx(&c.rc[i]);
    free(c.rc);
    for (size_t g = 0; g < c.ng; g++)
        free(c.g[g].idx);
    free(c.g);
    free(c.cmp_mi);
    if (rc != 0)
        dora_spectrum_release(sp);
    return rc;
}
