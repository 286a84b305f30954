/* engine.h - the state of a running batch, shared by the files of
 * dora_batch_run (batch.c): planning (plan.c), running units and finishing
 * studies (study.c), MPI (mpi.c), figures (figures.c); log lines go to the
 * caller's sink and progress to its counters (batch.c).
 *
 * One batch is filled by batch.c before any thread starts. During the run a
 * study's state is changed only with its lock held; the counters marked
 * atomic are read and written with __atomic builtins; log lines are handed
 * to the caller's sink with log_lock held (batch_log). */
#ifndef DORA_BATCH_ENGINE_H
#define DORA_BATCH_ENGINE_H

#include "dora/batch.h"
#include "dora/model.h"
#include "dora/progress.h"
#include "dora/run.h"
#include "dora/stats.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct unit {
    size_t study, run, step; /* study, run in the study, step in the discovered run */
    char *stamp;             /* of the checkpoint's files now, NULL if it cannot be opened */
    uint64_t bytes;          /* checkpoint + base bytes, for the progress bar */
} unit;

typedef struct study_state {
    dora_study *st;
    dora_run *runs;      /* [nruns] discovered */
    size_t ndiscovered;
    dora_model *base;
    uint64_t base_bytes;
    char *fingerprint, *header;
    char *out;           /* the output, or this shard's file */
    int written;         /* out was written */
    dora_journal *journal;
    dora_result *done;   /* unit results: resumed, then new */
    size_t ndone, capdone;
    size_t pending;      /* units to do that have not finished */
    dora_result *joined; /* per run, after finalize */
    size_t njoined;
    dora_regression *regs; /* [nregs] of joined, after finalize: the file's /regression,
                              the expectations and the figures share one bootstrap */
    size_t nregs;
    dora_study_report rep;
    double t0;
    pthread_mutex_t lock;
} study_state;

typedef struct batch {
    dora_manifest m;
    study_state *ss;
    unit *units;         /* to do, in plan order */
    size_t nunits, capunits;
    size_t next;         /* atomic: next unit to take */
    int jobs, unit_threads;
    uint64_t mem, unit_mem; /* --mem (0: the default), and each running unit's share */
    int quiet, verbose, progress, dry_run, force;
    unsigned shard_k, shard_n;
    char shard_text[32];
    char *cmdline;
    dora_stats_opts stats;  /* the bootstrap of each study's regressions */
    int mpi_size;
    int dispatched;      /* the MPI ranks were sent the units (and their stop) */
    /* progress: the caller's counters (NULL: none), and the bytes planned */
    dora_progress *prog;
    uint64_t bytes_total;
    void (*log)(void *ctx, const char *line); /* the caller's sink, or NULL */
    void *log_ctx;
    pthread_mutex_t log_lock;   /* one log line at a time */
    pthread_mutex_t h5_lock;    /* HDF5 is not built thread-safe: one call at a time */
} batch;

/* Seconds on the monotonic clock. */
static inline double batch_now(void)
{
    return dora_now();
}
/* The line FMT to the caller's log sink (batch.c). */
void batch_log(batch *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The study could not start, or failed as a whole: MSG is kept for the report. */
void batch_study_error(batch *b, study_state *s, const char *msg);
/* Move R into the study's done results; -1 when out of memory (R is still
 * the caller's then). */
int batch_add_done(study_state *s, const dora_result *r);
/* Open the study's base, discover its runs, plan its units (those of this
 * shard, numbered from *GLOBAL_INDEX), take the units its journals hold,
 * and (not in a dry run) start a fresh journal. Returns -1 only when out of
 * memory; a study that cannot start is marked DORA_STUDY_ERROR. */
int batch_plan_study(batch *b, study_state *s, size_t *global_index);

/* Join the units per run, write the study's HDF5 and close its journal and
 * base. Called with the study's lock held (or before any thread starts). */
void batch_finalize_study(batch *b, study_state *s);
/* A unit is over: RES is its result (moved in), or NULL with WHY. RANK is
 * the MPI rank that analysed it (0: this process). Finalizes the study when
 * it was its last unit. */
void batch_unit_finished(batch *b, const unit *u, dora_result *res, const char *why,
                         double seconds, int rank);
/* Run every planned unit on b->jobs threads. */
void batch_run_local(batch *b);
/* Expectations and figures of a study whose units are all in. */
void batch_check_study(batch *b, study_state *s);
/* `dora-analyze plot OUT -o DIR --format F [--modules K]` as a child
 * process; the outcome and plot's stderr go to the study's report. */
void batch_draw_figures(batch *b, study_state *s);

/* MPI (no-ops in a build without MPI, where b->mpi_size stays 1). Started by
 * mpirun: initialise MPI and set *rank and b->mpi_size; returns 1 if MPI was
 * initialised. */
int batch_mpi_begin(batch *b, int *rank);
/* On a rank other than 0: analyse the units rank 0 sends until it says stop. */
int batch_mpi_worker(batch *b);
/* On rank 0: hand every planned unit out to the other ranks and gather them. */
void batch_mpi_dispatch(batch *b);
/* Tell the other ranks to stop when STOP_WORKERS (they wait for work) and
 * finalize MPI, when ON. */
void batch_mpi_end(int on, int mpi_size, int stop_workers);

#endif
