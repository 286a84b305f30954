/* batch.c - running a manifest: dora_batch_run; see include/dora/batch.h. */
#define _GNU_SOURCE
#include "batch/engine.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void batch_log(batch *b, const char *fmt, ...)
{
    if (!b->log)
        return;
    char small[1024], *line = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof small && (line = malloc((size_t)n + 1)) != NULL) {
        va_start(ap, fmt);
        vsnprintf(line, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_lock(&b->log_lock);
    b->log(b->log_ctx, line ? line : small); /* out of memory: the line cut short */
    pthread_mutex_unlock(&b->log_lock);
    if (line != small)
        free(line);
}

/* The outcome of each study and of the batch on stderr, and its counts in
 * *REP; 1 if every study is complete and every expectation and figure held. */
static int summarise(batch *b, double seconds, dora_batch_report *rep)
{
    int ok = 1;
    size_t units = 0, run = 0, up = 0, failed = 0, held = 0, efail = 0;
    for (size_t i = 0; i < b->m.nstudies; i++) {
        const study_state *s = &b->ss[i];
        const dora_study_report *r = &s->rep;
        if (r->status != DORA_STUDY_COMPLETE)
            ok = 0;
        units += r->units_total;
        run += r->units_run;
        up += r->units_skipped;
        failed += r->units_failed;
        if (r->status == DORA_STUDY_ERROR) {
            batch_log(b, "error: study '%s': %s", r->name, r->error ? r->error : "failed");
            continue;
        }
        if (!b->quiet)
            batch_log(b, "batch: study '%s': %s: %zu unit(s), %zu analysed, %zu up to date, %zu "
                    "failed%s%s",
                 r->name, r->status == DORA_STUDY_COMPLETE ? "complete" : "incomplete",
                 r->units_total, r->units_run, r->units_skipped, r->units_failed,
                 s->written ? " -> " : "", s->written ? s->out : "");
        for (size_t e = 0; e < r->nexpect; e++) {
            const dora_expect_result *x = &r->results[e];
            if (x->outcome == DORA_OUTCOME_HELD) {
                held++;
                if (!b->quiet)
                    batch_log(b, "batch: study '%s': held: %s", r->name, x->message);
            } else if (x->outcome == DORA_OUTCOME_FAILED) {
                efail++;
                ok = 0;
                batch_log(b, "error: study '%s': expectation '%s' failed: %s", r->name,
                     r->expect[e].name, x->message);
            }
        }
        if (r->figures == DORA_FIG_FAILED) {
            ok = 0;
            batch_log(b, "error: study '%s': figures: %s", r->name, r->figures_message);
        } else if (r->figures == DORA_FIG_DRAWN && !b->quiet) {
            batch_log(b, "batch: study '%s': figures in %s", r->name, r->figures_message);
        }
    }
    if (!ok || !b->quiet)
        batch_log(b, "batch: %zu stud%s, %zu unit(s): %zu analysed, %zu up to date, %zu failed; "
                "expectations: %zu held, %zu failed; %.1f s: %s",
             b->m.nstudies, b->m.nstudies == 1 ? "y" : "ies", units, run, up, failed, held, efail,
             seconds, ok ? "ok" : "FAILED");
    *rep = (dora_batch_report){rep->refused, b->m.nstudies, units, run, up, failed, held, efail,
                               seconds};
    return ok;
}

/* --dry-run: what each study would do, on stdout (flushed by the caller).
 * 1 if every study could be planned. */
static int print_plan(batch *b)
{
    int ok = 1;
    for (size_t i = 0; i < b->m.nstudies; i++) {
        const study_state *s = &b->ss[i];
        const dora_study *st = s->st;
        if (s->rep.status == DORA_STUDY_ERROR) {
            printf("study '%s': error: %s\n", st->name, s->rep.error);
            ok = 0;
            continue;
        }
        printf("study '%s': base '%s', %zu unit(s), %zu up to date, %zu to do -> %s\n", st->name,
               st->base, s->rep.units_total, s->rep.units_skipped, s->pending, s->out);
        for (size_t r = 0; r < st->nruns; r++) {
            printf("  run '%s' (%s, '%s'): steps", st->runs[r].name, s->runs[r].method,
                   st->runs[r].path);
            for (size_t k = 0; k < s->runs[r].nsteps; k++)
                printf(" %lld", (long long)s->runs[r].steps[k].step);
            printf("\n");
        }
        for (size_t e = 0; e < st->nexpect; e++)
            printf("  expect: %s\n", st->expect[e].name);
        if (st->figures)
            printf("  figures: %s (%s%s%s)\n", st->fig_dir, st->fig_formats,
                   st->fig_kinds ? "; " : "", st->fig_kinds ? st->fig_kinds : "");
    }
    return ok;
}

static void release(batch *b)
{
    for (size_t i = 0; b->ss && i < b->m.nstudies; i++) {
        study_state *s = &b->ss[i];
        for (size_t r = 0; r < s->ndiscovered; r++)
            dora_run_release(&s->runs[r]);
        free(s->runs);
        dora_model_close(s->base);
        free(s->fingerprint);
        free(s->header);
        dora_journal_close(s->journal);
        for (size_t k = 0; k < s->ndone; k++)
            dora_result_release(&s->done[k]);
        free(s->done);
        for (size_t k = 0; k < s->njoined; k++)
            dora_result_release(&s->joined[k]);
        free(s->joined);
        dora_regressions_free(s->regs, s->nregs);
        dora_study_report_release(&s->rep);
        free(s->out);
        pthread_mutex_destroy(&s->lock);
    }
    free(b->ss);
    for (size_t i = 0; i < b->nunits; i++)
        free(b->units[i].stamp);
    free(b->units);
    free(b->cmdline);
    dora_manifest_release(&b->m);
    pthread_mutex_destroy(&b->log_lock);
    pthread_mutex_destroy(&b->h5_lock);
}

static void setup(batch *b, const dora_batch_opts *o)
{
    memset(b, 0, sizeof *b);
    b->jobs = o->jobs;
    b->mem = o->mem_bytes;
    b->quiet = o->quiet;
    b->verbose = o->verbose;
    b->prog = o->progress;
    b->log = o->log;
    b->log_ctx = o->log_ctx;
    b->dry_run = o->dry_run;
    b->force = o->force;
    b->shard_k = o->shard_k;
    b->shard_n = o->shard_n;
    if (b->shard_n)
        snprintf(b->shard_text, sizeof b->shard_text, "%u/%u", b->shard_k, b->shard_n);
    b->mpi_size = 1;
    pthread_mutex_init(&b->log_lock, NULL);
    pthread_mutex_init(&b->h5_lock, NULL);
}

/* Plan every study; a study with nothing left to do is finished at once. */
static int plan(batch *b, dora_err *err)
{
    b->ss = calloc(b->m.nstudies, sizeof *b->ss);
    if (!b->cmdline || !b->ss)
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < b->m.nstudies; i++) {
        b->ss[i].st = &b->m.studies[i];
        pthread_mutex_init(&b->ss[i].lock, NULL);
    }
    size_t global_index = 0;
    for (size_t i = 0; i < b->m.nstudies; i++) {
        study_state *s = &b->ss[i];
        if (batch_plan_study(b, s, &global_index) != 0)
            return dora_errf(err, "out of memory planning study '%s'", s->st->name);
        if (s->rep.status == DORA_STUDY_ERROR) {
            dora_model_close(s->base);
            s->base = NULL;
            continue;
        }
        if (s->pending == 0 && !b->dry_run)
            batch_finalize_study(b, s);
    }
    return 0;
}

/* The planned units, on threads or over the MPI ranks, counted in b->prog. */
static void work(batch *b)
{
    if (b->nunits > 0) {
        dora_progress_add_total(b->prog, b->bytes_total, b->nunits);
        dora_progress_begin(b->prog);
    }
    if (b->mpi_size > 1) {
        batch_mpi_dispatch(b);
        b->dispatched = 1;
    } else {
        batch_run_local(b);
    }
    dora_progress_end(b->prog);
}

/* A report that cannot be written fails the batch, said as the command's errors are. */
static void report_error(batch *b, const dora_err *e)
{
    batch_log(b, "error: %s", e->msg[0] ? e->msg : "unknown failure");
}

static dora_batch_outcome write_reports(batch *b, const dora_batch_opts *o, int ok,
                                        double seconds, dora_err *err)
{
    dora_study_report *reps = calloc(b->m.nstudies, sizeof *reps);
    if (!reps) {
        dora_errf(err, "out of memory");
        return DORA_BATCH_ERROR;
    }
    for (size_t i = 0; i < b->m.nstudies; i++) {
        reps[i] = b->ss[i].rep; /* shallow: the study states keep ownership */
        if (!b->ss[i].written)
            reps[i].output = NULL;
    }
    dora_batch_outcome out = ok ? DORA_BATCH_OK : DORA_BATCH_FAILED;
    dora_err e = {{0}, 0};
    if (o->report_json && dora_report_json(o->report_json, b->m.path,
                                           b->shard_n ? b->shard_text : NULL, ok, reps,
                                           b->m.nstudies, seconds, &e) != 0) {
        report_error(b, &e);
        out = DORA_BATCH_FAILED;
    }
    if (o->junit &&
        dora_report_junit(o->junit, b->m.path, reps, b->m.nstudies, seconds, &e) != 0) {
        report_error(b, &e);
        out = DORA_BATCH_FAILED;
    }
    free(reps);
    return out;
}

/* Rank 0's part, or the whole batch without MPI: from the output checks to the reports. */
static dora_batch_outcome run_studies(batch *b, const dora_batch_opts *o,
                                      dora_batch_report *rep, dora_err *err)
{
    double t_start = batch_now();
    if (o->before_work && (rep->refused = o->before_work(&b->m, o->ctx)) != 0)
        return DORA_BATCH_REFUSED; /* before any work; MPI workers are sent their stop */
    b->cmdline = o->command_line ? strdup(o->command_line) : NULL;
    b->stats = o->stats;
    if (plan(b, err) != 0)
        return DORA_BATCH_ERROR;
    if (b->dry_run)
        return print_plan(b) ? DORA_BATCH_OK : DORA_BATCH_FAILED;
    work(b);
    for (size_t i = 0; i < b->m.nstudies; i++)
        batch_check_study(b, &b->ss[i]);
    double seconds = batch_now() - t_start;
    int ok = summarise(b, seconds, rep);
    return write_reports(b, o, ok, seconds, err);
}

dora_batch_outcome dora_batch_run(const dora_batch_opts *o, dora_batch_report *report,
                                  dora_err *err)
{
    dora_batch_report none;
    if (!report)
        report = &none;
    memset(report, 0, sizeof *report);
    batch b;
    setup(&b, o);
    if (dora_manifest_load(&b.m, o->manifest, err) != 0) {
        release(&b);
        return DORA_BATCH_BAD_MANIFEST;
    }
    int rank = 0, mpi_on = batch_mpi_begin(&b, &rank);
    if (b.mpi_size > 1 && rank > 0) {
        batch_mpi_worker(&b);
        release(&b);
        batch_mpi_end(mpi_on, b.mpi_size, 0);
        return DORA_BATCH_OK;
    }
    dora_batch_outcome out = run_studies(&b, o, report, err);
    release(&b);
    batch_mpi_end(mpi_on, b.mpi_size, !b.dispatched);
    return out;
}
