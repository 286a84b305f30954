/* study.c - running the units of a batch and finishing each study: joined,
 * written, its expectations checked; see batch/engine.h. */
#define _GNU_SOURCE
#include "batch/engine.h"
#include "batch/common.h"
#include "dora/h5out.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* S's regressions of its joined runs, computed on first use and kept: the file's
 * /regression, the expectations and the figures share one bootstrap. 0, or -1 (no
 * memory). */
static int study_regs(batch *b, study_state *s)
{
    if (s->regs)
        return 0;
    return dora_regressions_opts(s->joined, s->njoined, &b->stats, &s->regs, &s->nregs);
}

/* (cli_guard_signals is installed by cmd_batch; h5o_write registers its temporary) */
/* The study's HDF5, with its regressions. */
static int write_h5(batch *b, study_state *s, dora_err *err)
{
    if (study_regs(b, s) != 0)
        return dora_errf(err, "out of memory computing the regressions");
    pthread_mutex_lock(&b->h5_lock);
    int rc = h5o_write_regs(s->out, s->joined, s->njoined, b->cmdline, &b->stats, s->regs,
                            s->nregs, err);
    pthread_mutex_unlock(&b->h5_lock);
    return rc;
}

static int add_failure(dora_study_report *rep, const char *run, int64_t step, const char *path,
                       const char *msg)
{
    dora_unit_failure *f = realloc(rep->failures, (rep->nfailures + 1) * sizeof *f);
    if (!f)
        return -1;
    rep->failures = f;
    f += rep->nfailures;
    f->run = strdup(run);
    f->step = step;
    f->path = strdup(path ? path : "");
    f->message = strdup(msg);
    rep->nfailures++;
    return f->run && f->path && f->message ? 0 : -1;
}

/* Join the units per run (manifest order) and write the study's HDF5. Called
 * with the study's lock held (or before any thread starts). */
void batch_finalize_study(batch *b, study_state *s)
{
    dora_study *st = s->st;
    dora_err e = {{0}, 0};
    const dora_result **parts = calloc(s->ndone + 1, sizeof *parts);
    s->joined = calloc(st->nruns + 1, sizeof *s->joined);
    if (!parts || !s->joined) {
        batch_study_error(b, s, "out of memory");
        free(parts);
        return;
    }
    for (size_t r = 0; r < st->nruns; r++) {
        size_t np = 0;
        for (size_t i = 0; i < s->ndone; i++)
            if (strcmp(s->done[i].name, st->runs[r].name) == 0)
                parts[np++] = &s->done[i];
        if (np == 0)
            continue;
        if (dora_result_join(&s->joined[s->njoined], parts, np, &e) != 0) {
            batch_study_error(b, s, e.msg);
            free(parts);
            return;
        }
        const dora_result *j = &s->joined[s->njoined++];
        if (!b->quiet)
            for (size_t k = 0; k < j->nnotes; k++)
                batch_log(b, "note: study '%s', run '%s': %s", st->name, j->name, j->notes[k]);
    }
    free(parts);
    if (s->njoined > 0) {
        if (write_h5(b, s, &e) != 0) {
            batch_study_error(b, s, e.msg);
            return;
        }
        s->written = 1;
    }
    s->rep.status = s->rep.units_failed ? DORA_STUDY_INCOMPLETE : DORA_STUDY_COMPLETE;
    dora_journal_close(s->journal);
    s->journal = NULL;
    dora_model_close(s->base); /* no unit of this study is left to read it */
    s->base = NULL;
    dora_study_close_saved(s->st);
    s->rep.seconds = batch_now() - s->t0;
}

/* A unit is over: RES is its result (moved in), or NULL with WHY. */
void batch_unit_finished(batch *b, const unit *u, dora_result *res, const char *why,
                          double seconds, int rank)
{
    study_state *s = &b->ss[u->study];
    const dora_study_run *sr = &s->st->runs[u->run];
    const dora_step *sp = &s->runs[u->run].steps[u->step];
    char where[64] = "";
    if (rank > 0)
        snprintf(where, sizeof where, " on rank %d", rank);
    char msg[DORA_ERR_MAX + 64];
    pthread_mutex_lock(&s->lock);
    if (res && res->nfailures > 0) {
        snprintf(msg, sizeof msg, "%s", res->failures[0]);
        dora_result_release(res);
        res = NULL;
        why = msg;
    }
    if (res) {
        dora_err e = {{0}, 0};
        if (s->journal && dora_journal_append(s->journal, res, &e) != 0) {
            snprintf(msg, sizeof msg, "analysed, but not kept: %s", e.msg);
            dora_result_release(res);
            res = NULL;
            why = msg;
        } else if (batch_add_done(s, res) != 0) {
            dora_result_release(res);
            res = NULL;
            why = "out of memory";
        }
    }
    if (res) {
        s->rep.units_run++;
        if (b->verbose)
            batch_log(b, "batch: study '%s': unit %s@%lld analysed in %.2f s%s", s->st->name,
                 sr->name, (long long)sp->step, seconds, where);
    } else {
        s->rep.units_failed++;
        if (add_failure(&s->rep, sr->name, sp->step, sp->path, why) != 0)
            why = "out of memory";
        batch_log(b, "error: study '%s': unit %s@%lld failed%s: %s", s->st->name, sr->name,
             (long long)sp->step, where, why);
    }
    if (--s->pending == 0)
        batch_finalize_study(b, s);
    pthread_mutex_unlock(&s->lock);
    dora_progress_add_done(b->prog, u->bytes, 1);
}

static void run_unit(batch *b, const unit *u)
{
    study_state *s = &b->ss[u->study];
    const dora_study *st = s->st;
    dora_analysis_opts opts;
    batch_analysis_opts(st, b->unit_threads, &opts);
    opts.mem_bytes = b->unit_mem;
    dora_result res;
    dora_err e = {{0}, 0};
    double t0 = batch_now();
    const dora_model *w0 = dora_study_w0(st, s->base); /* a bnb-saved base: dequantised */
    int rc = dora_analyze_unit(&res, st->runs[u->run].name, w0, st->base, &s->runs[u->run],
                               u->step, &opts, &e);
    batch_unit_finished(b, u, rc == 0 ? &res : NULL, e.msg, batch_now() - t0, 0);
}

static void *worker(void *arg)
{
    batch *b = arg;
    for (;;) {
        size_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->nunits)
            break;
        run_unit(b, &b->units[i]);
    }
    return NULL;
}

void batch_run_local(batch *b)
{
    int w = b->jobs;
    if ((size_t)w > b->nunits)
        w = (int)b->nunits;
    if (w < 1)
        return;
    b->unit_threads = b->jobs / w > 1 ? b->jobs / w : 1;
    b->unit_mem = (b->mem ? b->mem : DORA_ANALYZE_MEM_DEFAULT) / (uint64_t)w;
    pthread_t *tid = calloc((size_t)w, sizeof *tid);
    int started = 0;
    for (int i = 1; tid && i < w; i++) {
        if (pthread_create(&tid[i], NULL, worker, b) != 0)
            break; /* fewer threads is still correct */
        started++;
    }
    worker(b);
    for (int i = 1; i <= started; i++)
        pthread_join(tid[i], NULL);
    free(tid);
}

/* Expectations and figures of a study whose units are all in. */
void batch_check_study(batch *b, study_state *s)
{
    dora_study *st = s->st;
    const char *why = NULL;
    if (s->rep.status != DORA_STUDY_COMPLETE)
        why = "not evaluated: the study is incomplete";
    else if (b->shard_n)
        why = "not evaluated: this run computes one shard of the study";
    else if (s->njoined == 0)
        why = "not evaluated: the study has no results";
    if (why) {
        for (size_t e = 0; e < st->nexpect; e++) {
            s->rep.results[e].outcome = DORA_OUTCOME_NOT_EVALUATED;
            snprintf(s->rep.results[e].message, sizeof s->rep.results[e].message, "%s", why);
        }
        if (st->figures) {
            s->rep.figures = DORA_FIG_SKIPPED;
            s->rep.figures_message = strdup(why + strlen("not evaluated: "));
        }
        return;
    }
    /* those of the file (write_h5), unless it was not written */
    if (st->nexpect && study_regs(b, s) != 0) {
        for (size_t e = 0; e < st->nexpect; e++)
            snprintf(s->rep.results[e].message, sizeof s->rep.results[e].message,
                     "out of memory computing the regressions");
    } else {
        for (size_t e = 0; e < st->nexpect; e++)
            dora_expect_eval(&st->expect[e], s->regs, s->nregs, &s->rep.results[e]);
    }
    if (st->figures)
        batch_draw_figures(b, s);
}
