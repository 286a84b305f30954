/* analyze.c - per-run, per-step, per-tensor dM and dD; see include/dora/analyze.h.
 * The tensors are chosen in analyze_select.c and analysed in analyze_jobs.c. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "dora/adapter.h"
#include "dora/guard.h"
#include "dora/notes.h"
#include "dora/kernel.h"
#include "core/util.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int32_t dora_layer_index(const char *name)
{
    const char *p = name;
    while (*p) {
        const char *end = strchr(p, '.');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && n <= 10 && strspn(p, "0123456789") == n) {
            long long v = strtoll(p, NULL, 10);
            if (v <= INT32_MAX)
                return (int32_t)v;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return -1;
}

static int add_failure(dora_result *res, const char *msg)
{
    char **nf = realloc(res->failures, (res->nfailures + 1) * sizeof *nf);
    if (!nf)
        return -1;
    res->failures = nf;
    if (!(nf[res->nfailures] = strdup(msg)))
        return -1;
    res->nfailures++;
    return 0;
}

/* Open every step: a full model, or an adapter checked against the base. In a
 * Trainer folder, a checkpoint whose files are not all there yet (still being
 * written) is left out and recorded as a failure; the others go on. Fills
 * sd[0..*kept) and idx (the kept steps' positions in run->steps). */
static int open_steps(const dora_run *run, const dora_model *base, stepdata *sd, size_t *idx,
                      size_t *kept, dora_result *res, dora_err *err)
{
    size_t k = 0;
    for (size_t s = 0; s < run->nsteps; s++) {
        dora_model_kind kind;
        stepdata *d = &sd[k];
        if (dora_model_probe(run->steps[s].path, &kind, NULL, err) != 0)
            return -1;
        /* an adapter that discovery opened is borrowed, not parsed again */
        d->borrowed = kind == DORA_MODEL_ADAPTER && run->steps[s].adapter != NULL;
        if (d->borrowed)
            d->adapter = run->steps[s].adapter;
        int r = kind == DORA_MODEL_ADAPTER
                    ? ((!d->borrowed &&
                        dora_adapter_open(&d->adapter, run->steps[s].path, err) != 0) ||
                       dora_adapter_check(d->adapter, base, err) != 0)
                    : dora_model_open(&d->model, run->steps[s].path, err) != 0;
        if (r) {
            dora_model_close(d->model);
            if (!d->borrowed)
                dora_adapter_close(d->adapter);
            d->model = NULL;
            d->adapter = NULL;
            d->borrowed = 0;
            if (!(err->missing && run->layout == DORA_RUN_TRAINER && run->nsteps > 1))
                return -1;
            char buf[DORA_ERR_MAX + 64];
            snprintf(buf, sizeof buf, "step %lld left out, incomplete: %s",
                     (long long)run->steps[s].step, err->msg);
            if (add_failure(res, buf) != 0)
                return dora_errf(err, "out of memory");
            continue;
        }
        if (k > 0 && (d->adapter != NULL) != (sd[0].adapter != NULL))
            return dora_errf(err, "'%s' is %s but '%s' is %s: a run is either full weights or "
                                  "adapters",
                             run->steps[s].path, d->adapter ? "an adapter" : "a full model",
                             run->steps[idx[0]].path,
                             sd[0].adapter ? "an adapter" : "a full model");
        idx[k++] = s;
    }
    *kept = k;
    if (k == 0)
        return dora_err_missing(err, "'%s': no checkpoint is complete (%s)", run->path,
                                res->nfailures ? res->failures[0] : "none found");
    return 0;
}

/* 1 if a file of the step changed since it was opened. */
static const char *step_changed(const stepdata *d)
{
    const dora_model *m = d->model ? d->model : d->adapter->weights;
    for (size_t i = 0; i < m->nfiles; i++)
        if (st_file_changed(m->files[i]))
            return m->files[i]->path;
    return NULL;
}

/* "size:mtime_ns;size:mtime_ns..." of the step's weight files. */
static char *step_stamp(const stepdata *d)
{
    const dora_model *m = d->model ? d->model : d->adapter->weights;
    size_t cap = 48 * (m->nfiles + 1), used = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < m->nfiles; i++)
        used += (size_t)snprintf(s + used, cap - used, "%s%llu:%lld", i ? ";" : "",
                                 (unsigned long long)m->files[i]->size,
                                 (long long)m->files[i]->mtime_ns);
    return s;
}

/* Drop the steps marked in BAD from the result, keeping the order. */
static void drop_steps(dora_result *res, const int *bad)
{
    const size_t S = res->nsteps, L = res->nmodules;
    size_t k = 0;
    for (size_t s = 0; s < S; s++) {
        if (bad[s]) {
            free(res->step_paths[s]);
            free(res->step_stamps[s]);
            continue;
        }
        res->steps[k] = res->steps[s];
        res->step_paths[k] = res->step_paths[s];
        res->step_stamps[k] = res->step_stamps[s];
        memmove(res->delta_m + k * L, res->delta_m + s * L, L * sizeof *res->delta_m);
        memmove(res->delta_d + k * L, res->delta_d + s * L, L * sizeof *res->delta_d);
        memmove(res->zero_rows + k * L, res->zero_rows + s * L, L * sizeof *res->zero_rows);
        memmove(res->delta_m_passive + k * L, res->delta_m_passive + s * L,
                L * sizeof *res->delta_m_passive);
        memmove(res->delta_m_active + k * L, res->delta_m_active + s * L,
                L * sizeof *res->delta_m_active);
        for (size_t l = 0; res->m && l < L; l++) {
            size_t rows = (size_t)res->rows[l];
            memmove(res->m[l] + k * rows, res->m[l] + s * rows, rows * sizeof **res->m);
            memmove(res->cos[l] + k * rows, res->cos[l] + s * rows, rows * sizeof **res->cos);
            memmove(res->one_minus_cos[l] + k * rows, res->one_minus_cos[l] + s * rows,
                    rows * sizeof **res->one_minus_cos);
        }
        k++;
    }
    res->nsteps = k;
}

/* After the pass: a file that changed without faulting (rewritten in place, or
 * shrunk within its last page) is caught here. A changed base fails the run
 * (it is needed by all); a changed step is marked in BAD (WHY says why) and
 * recorded as a failure of RES, counted in *NBAD. -1 with ERR set when the
 * base changed, every step is bad, or out of memory. */
static int check_changed(dora_result *res, const char *name, const dora_model *base,
                         const stepdata *sd, size_t S, int *bad, char **why, size_t *nbad,
                         dora_err *err)
{
    for (size_t i = 0; i < base->nfiles; i++)
        if (st_file_changed(base->files[i]))
            return dora_errf(err, "'%s' changed while it was read: the base is needed for every "
                                  "result",
                             base->files[i]->path);
    for (size_t s = 0; s < S; s++) {
        const char *changed = bad[s] ? NULL : step_changed(&sd[s]);
        if (changed) {
            char buf[1200];
            snprintf(buf, sizeof buf, "'%s' changed while it was read", changed);
            why[s] = strdup(buf);
            bad[s] = 1;
        }
        if (bad[s]) {
            char buf[1400];
            snprintf(buf, sizeof buf, "step %lld left out: %s", (long long)res->steps[s],
                     why[s] ? why[s] : "a file changed while it was read");
            if (add_failure(res, buf) != 0)
                return dora_errf(err, "out of memory");
            ++*nbad;
        }
    }
    if (*nbad == S)
        return dora_errf(err, "run '%s': %s", name, res->failures[res->nfailures - 1]);
    return 0;
}

/* --base-quant (or the base's quantization_config): *BASE becomes the view
 * *QB of the base with the adapted weights replaced by their round trip.
 * Without it, a note when the adapter's base looks quantised. */
static int quant_base(dora_result *res, const dora_model **base, dora_quant_base **qb,
                      const stepdata *sd, size_t S, const dora_analysis_opts *opts,
                      dora_err *err)
{
    char hint[DORA_NOTE_MAX];
    if (opts->base_quant == DORA_QUANT_NONE)
        return sd[0].adapter && dora_quant_hint(sd[0].adapter, hint, sizeof hint) &&
                       dora_notes_add(&res->notes, &res->nnotes, 0, "%s", hint) != 0
                   ? dora_errf(err, "out of memory")
                   : 0;
    if (!sd[0].adapter)
        return dora_errf(err, "'%s': --base-quant %s applies to adapter runs: which weights of a "
                              "fully fine-tuned model were quantised is not known",
                         res->source_path, dora_quant_name(opts->base_quant));
    if (dora_quant_base_open(qb, *base, sd[0].adapter, opts->base_quant, opts->quant_skip, err))
        return -1;
    *base = &(*qb)->view;
    for (size_t s = 0; s < S; s++) /* factors formed from W0 (IA3) are formed again */
        if (dora_adapter_check(sd[s].adapter, *base, err) != 0)
            return -1;
    if (dora_notes_add(&res->notes, &res->nnotes, 0,
                       "W0 is the bitsandbytes %s round trip of the base for %zu adapted "
                       "weight(s); %zu adapted tensor(s) (not nn.Linear, lm_head or skipped) "
                       "are the base as given",
                       dora_quant_name(opts->base_quant), (*qb)->nquant, (*qb)->nkept) != 0)
        return dora_errf(err, "out of memory");
    return 0;
}

int dora_analyze_run(dora_result *res, const char *name, const dora_model *base,
                     const char *base_path, const dora_run *run, const dora_analysis_opts *opts,
                     dora_err *err)
{
    /* Before any BLAS call (the Gram matrices come first): our threads split the
     * work, and each GEMM is small and runs on its caller. Once per process:
     * analyses may run at once (batch), and OpenBLAS's setter reallocates its
     * buffers unlocked; and a first multi-threaded call from two threads at
     * once (OpenMP build) gave a wrong Gram matrix, rarely (1 run in ~50). The
     * OpenMP build reads the count per calling thread: set on this one too (a
     * batch worker's), and on each worker of ours (analyze_jobs.c). */
    an_blas_single_thread();
    dora_adapter_set_init_factoriser(an_init_factors); /* PiSSA / OLoRA: B0 A0 from W0 */
    memset(res, 0, sizeof *res);
    size_t S = 0;
    const size_t S0 = run->nsteps;
    stepdata *sd = calloc(S0 ? S0 : 1, sizeof *sd);
    size_t *idx = calloc(S0 ? S0 : 1, sizeof *idx);
    int *bad = calloc(S0 ? S0 : 1, sizeof *bad);
    char **why = calloc(S0 ? S0 : 1, sizeof *why);
    module *mods = NULL;
    size_t L = 0;
    job jb;
    memset(&jb, 0, sizeof jb);
    pthread_mutex_init(&jb.lock, NULL);
    dora_quant_base *qb = NULL;
    int rc = -1;

    res->method = "ft";
    res->name = strdup(name);
    res->source_path = strdup(run->path);
    res->base_path = strdup(base_path);
    if (!sd || !idx || !bad || !why || !res->name || !res->source_path || !res->base_path) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (S0 == 0) {
        dora_errf(err, "'%s': the run has no checkpoints", run->path);
        goto done;
    }
    if (open_steps(run, base, sd, idx, &S, res, err) != 0)
        goto done;
    if (sd[0].adapter) {
        res->method = sd[0].adapter->method; /* lora, ia3, adalora, vera, loha, lokr */
        for (size_t s = 0; s < S; s++)
            if (strcmp(sd[s].adapter->method, "dora") == 0)
                res->method = "dora";
    }
    if (quant_base(res, &base, &qb, sd, S, opts, err) != 0) /* W0 as the adapter saw it */
        goto done;
    /* the hook runs before any byte of data is read (the Gram matrices of
     * select_modules read the adapters' factors) */
    if (opts->after_open)
        opts->after_open(opts->after_open_ctx);
    if (an_select_modules(res, base, sd, S, opts, &mods, &L, err) != 0)
        goto done;
    if (L == 0) {
        dora_errf(err, "run '%s': no tensor to analyse (none of rank >= 2 and floating type is in "
                       "both the base '%s' and every checkpoint%s)",
                  name, base_path, opts->include || opts->exclude ? " and kept by the filters" : "");
        goto done;
    }
    if (an_alloc_result(res, mods, S, L, opts->per_row) != 0) {
        dora_errf(err, "out of memory for the results of run '%s'", name);
        goto done;
    }
    for (size_t s = 0; s < S; s++) {
        res->steps[s] = run->steps[idx[s]].step;
        if (!(res->step_paths[s] = strdup(run->steps[idx[s]].path)) ||
            !(res->step_stamps[s] = step_stamp(&sd[s]))) {
            dora_errf(err, "out of memory");
            goto done;
        }
    }

    jb.S = S;
    jb.mods = mods;
    jb.res = res;
    jb.per_row = opts->per_row;
    jb.step_bad = bad;
    jb.step_why = why;
    jb.threads = opts->threads;
    jb.mem = opts->mem_bytes ? opts->mem_bytes : DORA_ANALYZE_MEM_DEFAULT;
    if (an_make_chunks(&jb, L, err) != 0 ||
        an_heads_plan(res, base, mods, L, S, &jb, err) != 0)
        goto done;
    jb.prog = opts->progress;
    for (size_t c = 0; c < jb.nchunks; c++)
        dora_progress_add_total(jb.prog, jb.chunks[c].bytes, 0);
    if (dora_guard_install() != 0) {
        dora_errf(err, "cannot install the SIGBUS guard");
        goto done;
    }
    if (an_run_jobs(&jb, err) != 0)
        goto done;

    size_t nbad = 0;
    if (check_changed(res, name, base, sd, S, bad, why, &nbad, err) != 0)
        goto done;
    an_sums_finish(&jb); /* the sums were folded into RES as each module was done */
    an_heads_reduce(res, &jb, nbad ? bad : NULL, S);
    if (nbad)
        drop_steps(res, bad);
    rc = 0;
done:
    dora_quant_base_close(qb);
    pthread_mutex_destroy(&jb.lock);
    an_heads_free(&jb);
    an_plan_free(&jb);
    an_free_modules(mods, L);
    for (size_t s = 0; sd && s < S0; s++) {
        dora_model_close(sd[s].model);
        if (!sd[s].borrowed)
            dora_adapter_close(sd[s].adapter);
    }
    for (size_t s = 0; why && s < S0; s++)
        free(why[s]);
    free(why);
    free(bad);
    free(idx);
    free(sd);
    if (rc != 0)
        dora_result_release(res);
    return rc;
}

int dora_analyze_runs(dora_result *res, size_t *done, const char *base_path,
                      char *const *names, const char *const *paths, size_t nruns,
                      const dora_analysis_opts *opts, dora_note_fn note, void *ctx,
                      dora_err *err)
{
    dora_model *base = NULL;
    *done = 0;
    dora_analysis_opts o = *opts; /* the base's quantization_config, followed without asking */
    const dora_quant asked = opts->base_quant;
    char *skip = NULL;
    if (dora_quant_settle(base_path, &o.base_quant, &skip, err) != 0)
        return -1;
    o.quant_skip = skip;
    opts = &o;
    dora_adapter *initial = NULL;
    if (dora_model_open(&base, base_path, err) != 0 ||
        (opts->initial_adapter &&
         dora_adapter_open(&initial, opts->initial_adapter, err) != 0)) {
        dora_model_close(base);
        free(skip);
        return -1;
    }
    /* a base saved by bitsandbytes: read dequantised; its config's
     * quantization_config describes that form, not a round trip to make */
    dora_quant_base *saved = NULL;
    const dora_model *b0 = base;
    char msg[DORA_NOTE_MAX];
    if (dora_bnb_saved_w0(base, asked, &saved, msg, sizeof msg, err) != 0) {
        dora_model_close(base);
        dora_adapter_close(initial);
        free(skip);
        return -1;
    }
    if (saved) {
        b0 = &saved->view;
        o.base_quant = DORA_QUANT_NONE;
        free(skip);
        skip = NULL;
        o.quant_skip = NULL;
        if (note)
            note(ctx, NULL, msg, 0);
    }
    int rc = 0;
    dora_progress_add_total(opts->progress, 0, nruns);
    dora_progress_begin(opts->progress);
    for (size_t i = 0; i < nruns && rc == 0; i++) {
        dora_run run;
        if (dora_run_discover(&run, paths[i], err) != 0) {
            rc = -1;
            break;
        }
        if (initial)
            dora_run_set_initial(&run, initial);
        dora_progress_label(opts->progress, "run '%s': %zu step(s)", names[i], run.nsteps);
        for (size_t k = 0; note && k < run.nnotes; k++)
            note(ctx, NULL, run.notes[k], 0);
        rc = dora_analyze_run(&res[i], names[i], b0, base_path, &run, opts, err);
        dora_run_release(&run);
        if (rc != 0)
            break;
        ++*done;
        dora_progress_add_done(opts->progress, 0, 1);
        for (size_t k = 0; note && k < res[i].nnotes; k++)
            note(ctx, res[i].name, res[i].notes[k], 0);
        for (size_t k = 0; note && k < res[i].nfailures; k++)
            note(ctx, res[i].name, res[i].failures[k], 1);
    }
    dora_progress_end(opts->progress);
    dora_quant_base_close(saved);
    dora_model_close(base);
    dora_adapter_close(initial);
    free(skip);
    return rc;
}

int dora_result_alloc(dora_result *r, size_t S, size_t L)
{
    r->nsteps = S;
    r->nmodules = L;
    r->steps = calloc(S + 1, sizeof *r->steps);
    r->step_paths = calloc(S + 1, sizeof *r->step_paths);
    r->step_stamps = calloc(S + 1, sizeof *r->step_stamps);
    r->modules = calloc(L + 1, sizeof *r->modules);
    r->layer = calloc(L + 1, sizeof *r->layer);
    r->rows = calloc(L + 1, sizeof *r->rows);
    r->cols = calloc(L + 1, sizeof *r->cols);
    r->rank = calloc(L + 1, sizeof *r->rank);
    r->delta_m = calloc(S * L + 1, sizeof *r->delta_m);
    r->delta_d = calloc(S * L + 1, sizeof *r->delta_d);
    r->zero_rows = calloc(S * L + 1, sizeof *r->zero_rows);
    r->delta_m_passive = calloc(S * L + 1, sizeof *r->delta_m_passive);
    r->delta_m_active = calloc(S * L + 1, sizeof *r->delta_m_active);
    return r->steps && r->step_paths && r->step_stamps && r->modules && r->layer && r->rows &&
                   r->cols && r->rank && r->delta_m && r->delta_d && r->zero_rows &&
                   r->delta_m_passive && r->delta_m_active
               ? 0
               : -1;
}

void dora_result_release(dora_result *res)
{
    if (!res)
        return;
    for (size_t s = 0; s < res->nsteps && res->step_paths; s++)
        free(res->step_paths[s]);
    for (size_t s = 0; s < res->nsteps && res->step_stamps; s++)
        free(res->step_stamps[s]);
    free(res->step_stamps);
    for (size_t l = 0; l < res->nmodules && res->modules; l++) {
        free(res->modules[l]);
        if (res->m0)
            free(res->m0[l]);
        if (res->m)
            free(res->m[l]);
        if (res->cos)
            free(res->cos[l]);
        if (res->one_minus_cos)
            free(res->one_minus_cos[l]);
    }
    free(res->m0);
    free(res->m);
    free(res->cos);
    free(res->one_minus_cos);
    free(res->steps);
    free(res->step_paths);
    free(res->modules);
    free(res->layer);
    free(res->rows);
    free(res->cols);
    free(res->rank);
    free(res->delta_m);
    free(res->delta_d);
    free(res->zero_rows);
    free(res->delta_m_passive);
    free(res->delta_m_active);
    free(res->head_module);
    free(res->head_count);
    free(res->head_offset);
    free(res->head_dm);
    free(res->head_dd);
    free(res->name_alignment);
    dora_notes_free(res->notes, res->nnotes);
    for (size_t i = 0; i < res->nfailures; i++)
        free(res->failures[i]);
    free(res->failures);
    free(res->name);
    free(res->source_path);
    free(res->base_path);
    memset(res, 0, sizeof *res);
}
