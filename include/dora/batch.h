/* batch.h - many studies from one manifest, split into (run, checkpoint)
 * units that can run in any order, on any thread or machine.
 *
 * A manifest (JSON, see analysis/README.md) lists studies; a study names a
 * base, runs, module filters, an output file, figures and expectations on the
 * regression of dM on dD. Each checkpoint of each run is one unit: analysed
 * alone (a dora_result with one step), it gives the same numbers as within the
 * whole run, so units can be shared out and joined back (dora_result_join,
 * dora/join.h); journal records carry them as dora/wire.h packs them.
 *
 * Finished units go to a journal beside the output (OUT.journal): an
 * append-only file of checksummed records, each one unit's result, written
 * and flushed (fdatasync) as the unit finishes. Its first record is a header
 * holding the study's fingerprint (tool version, the base's real path and the
 * size and mtime of its files, module filters): a later run skips the units the
 * journal holds for the same fingerprint whose checkpoint files have the same
 * stamp (dora_step_stamp), and redoes the others. A record cut short by a kill
 * is detected by its length and checksum and ignored.
 *
 * Everything here returns 0 or -1 with a dora_err naming the file and field;
 * nothing prints or exits.
 */
#ifndef DORA_BATCH_H
#define DORA_BATCH_H

#include "dora/analyze.h"
#include "dora/error.h"
#include "dora/filter.h"
#include "dora/join.h"
#include "dora/progress.h"
#include "dora/quant.h"
#include "dora/wire.h"
#include "dora/stats.h"

#include <stddef.h>
#include <stdint.h>

/* ---- manifest ---------------------------------------------------------- */

typedef enum dora_stat {
    DORA_STAT_PEARSON_R = 0, /* "pearson_r" */
    DORA_STAT_WITHIN_STEP_R, /* "within_step_r" */
    DORA_STAT_SLOPE,         /* "slope" */
    DORA_STAT_INTERCEPT      /* "intercept" */
} dora_stat;

typedef enum dora_op { DORA_OP_LT = 0, DORA_OP_GT, DORA_OP_LE, DORA_OP_GE } dora_op;

typedef struct dora_expect {
    char *name;       /* as given, else "RUN KIND STAT OP VALUE"; owned */
    char *run;        /* run name in the study, owned */
    char *kind;       /* module kind ("q_proj"), owned */
    dora_stat stat;
    dora_op op;
    double value;
} dora_expect;

typedef struct dora_study_run {
    char *name;       /* HDF5 group name, owned */
    char *path;       /* resolved against the manifest's folder, owned */
    const char *method; /* "ft", "lora", "dora" the run must be, or NULL (static) */
    char *initial_adapter; /* "initial_adapter" (analyze's --initial-adapter), resolved, or NULL */
    struct dora_adapter *initial; /* opened from it by dora_study_run_initial, owned */
} dora_study_run;

typedef struct dora_study {
    char *name;       /* owned */
    char *base;       /* resolved path, owned */
    size_t nruns;
    dora_study_run *runs;
    char *include, *exclude;  /* regular expressions as written (POSIX ERE), or NULL */
    dora_filter filter;         /* compiled from them (filter.h) */
    char *output;     /* resolved HDF5 path, owned */
    int figures;      /* 1 if figures are wanted */
    char *fig_kinds;  /* comma-separated module kinds for `plot --modules`, or NULL */
    char *fig_formats;/* comma-separated formats for `plot --format` ("png" by default) */
    char *fig_dir;    /* resolved folder, owned */
    size_t nexpect;
    dora_expect *expect;
    /* as analyze's options (analyze.h): "rename" (a rule or a list), "transpose",
     * "no_split", "base_quant" */
    char **renames;   /* REGEX=REPLACEMENT rules (align.h), owned */
    size_t nrenames;
    char *transpose;  /* RE (POSIX extended), or NULL */
    int no_split;
    dora_quant base_quant; /* as given; batch_study_settle follows the base's config.json */
    char *quant_skip; /* llm_int8_skip_modules of the base's config (JSON), or NULL */
    int quant_settled;
    dora_quant quant_asked; /* base_quant as the manifest gave it (before settling) */
    dora_quant_base *saved; /* a base saved by bitsandbytes, dequantised (dora_study_open_base) */
} dora_study;

typedef struct dora_manifest {
    char *path;       /* owned */
    size_t nstudies;
    dora_study *studies;
} dora_manifest;

/* Read and check the manifest at PATH: JSON syntax (line and column), every
 * key known (a misspelt key is an error, "comment" is allowed anywhere), types,
 * names unique, regular expressions compiled, outputs distinct. Relative
 * paths are taken from the manifest's folder. Errors name the file and the
 * field ("'m.json': studies[1].runs[0].method: 'qlora' is not ft, lora or
 * dora"). On failure *m is released. */
int dora_manifest_load(dora_manifest *m, const char *path, dora_err *err);
void dora_manifest_release(dora_manifest *m);

const char *dora_stat_name(dora_stat s);
const char *dora_op_name(dora_op o);

/* ---- units ------------------------------------------------------------- */

/* "size:mtime_ns;..." of the weight files of the model or adapter checkpoint
 * at PATH (the same text as dora_result.step_stamps), newly allocated in
 * *stamp, and their total size in *bytes (may be NULL). The files are opened
 * and validated, not read. */
int dora_step_stamp(const char *path, char **stamp, uint64_t *bytes, dora_err *err);

/* The same for an open model (the base). */
char *dora_model_stamp(const dora_model *m, uint64_t *bytes);

/* The study's fingerprint: what its results depend on besides the
 * checkpoints. JSON text, newly allocated, or NULL when out of memory. */
char *dora_study_fingerprint(const dora_study *st, const char *base_stamp);

/* Open ST's base into *BASE as `analyze` opens it: base_quant settled
 * against its config.json (batch_study_settle), and a base saved by
 * bitsandbytes read dequantised into ST->saved (dora_bnb_saved_w0: a
 * base_quant the manifest asks for is then refused; base_quant becomes none),
 * with NOTE (LEN bytes) saying so ("" otherwise). 0, or -1 with ERR. */
int dora_study_open_base(dora_study *st, dora_model **base, char *note, size_t len,
                         dora_err *err);
/* The W0 of ST's units: the dequantised view of a saved base, or BASE. */
const dora_model *dora_study_w0(const dora_study *st, const dora_model *base);
/* Free ST->saved (with or after its base: no unit of ST is left). */
void dora_study_close_saved(dora_study *st);
/* SR's initial_adapter, opened once, given to RUN's "pissa_niter_K" adapters
 * (dora_run_set_initial) as analyze --initial-adapter gives it. 0, or -1
 * with ERR naming the file. */
int dora_study_run_initial(dora_study_run *sr, struct dora_run *run, dora_err *err);

/* Analyse step STEP_INDEX of RUN alone: a result with one step (S = 1). */
int dora_analyze_unit(dora_result *res, const char *name, const dora_model *base,
                      const char *base_path, const dora_run *run, size_t step_index,
                      const dora_analysis_opts *opts, dora_err *err);

/* ---- journal ----------------------------------------------------------- */

typedef struct dora_journal dora_journal;

/* Read the journal at PATH. Returns 1 with *header (the header text) and the
 * unit results when it was read, 0 when there is no file (nothing is set),
 * -1 when it is not a journal or is damaged before its first unit. A damaged
 * tail (a write cut short) ends the journal: *tail_bytes (may be NULL) gets
 * the bytes ignored. Free with dora_journal_results_free. */
int dora_journal_read(const char *path, char **header, dora_result **units, size_t *nunits,
                      uint64_t *tail_bytes, dora_err *err);
void dora_journal_results_free(dora_result *units, size_t n);

/* Write a new journal at PATH holding HEADER and UNITS (temporary file,
 * flushed, renamed over PATH), and keep it open for dora_journal_append. */
int dora_journal_create(dora_journal **j, const char *path, const char *header,
                        const dora_result *units, size_t nunits, dora_err *err);
/* Append one unit's result and flush it to disk (fdatasync) before returning. */
int dora_journal_append(dora_journal *j, const dora_result *unit, dora_err *err);
void dora_journal_close(dora_journal *j);

/* The journal path of an output file: "OUT.journal", newly allocated. */
char *dora_journal_path(const char *output);
/* The shard file of OUTPUT for shard K of N: "dir/name.shard-K-of-N.h5" for
 * "dir/name.h5" (the suffix is inserted before a final ".h5"), newly allocated. */
char *dora_shard_path(const char *output, unsigned k, unsigned n);

/* ---- expectations and reports ------------------------------------------ */

typedef enum dora_outcome {
    DORA_OUTCOME_HELD = 0,
    DORA_OUTCOME_FAILED,       /* evaluated and false, or the statistic is undefined */
    DORA_OUTCOME_NOT_EVALUATED /* the study did not complete */
} dora_outcome;

typedef struct dora_expect_result {
    dora_outcome outcome;
    int defined;            /* actual is a number */
    double actual;
    char message[512];      /* why it failed, or what held */
} dora_expect_result;

/* Evaluate E against the regressions of a study's results. A run or module
 * kind that is not there, or a statistic that is undefined (too few points,
 * no spread), fails with a message saying so. */
void dora_expect_eval(const dora_expect *e, const dora_regression *regs, size_t nregs,
                      dora_expect_result *out);

typedef struct dora_unit_failure {
    char *run;       /* owned */
    int64_t step;
    char *path;      /* the checkpoint, owned */
    char *message;   /* owned */
} dora_unit_failure;

typedef enum dora_study_status {
    DORA_STUDY_COMPLETE = 0,  /* every unit done */
    DORA_STUDY_INCOMPLETE,    /* some unit failed: the output holds the others */
    DORA_STUDY_ERROR          /* the study could not start (base, run discovery, output) */
} dora_study_status;

typedef enum dora_fig_status {
    DORA_FIG_NONE = 0,   /* none asked for */
    DORA_FIG_DRAWN,
    DORA_FIG_FAILED,
    DORA_FIG_SKIPPED     /* asked for, but the study is incomplete or this is a shard */
} dora_fig_status;

typedef struct dora_study_report {
    const char *name;        /* the study's, borrowed */
    const char *output;      /* the file written (output or shard file), borrowed */
    dora_study_status status;
    char *error;             /* DORA_STUDY_ERROR: why, owned */
    size_t units_total, units_run, units_skipped, units_failed;
    size_t nfailures;
    dora_unit_failure *failures;
    dora_fig_status figures;
    char *figures_message;   /* owned, or NULL */
    size_t nexpect;
    const dora_expect *expect;   /* the study's, borrowed */
    dora_expect_result *results; /* [nexpect], owned */
    double seconds;
} dora_study_report;

void dora_study_report_release(dora_study_report *r);

/* Machine-readable reports, each written to a temporary file and renamed over
 * PATH. SHARD is "K/N" or NULL. The JSON report holds every study, unit
 * counts, unit failures, figures and expectations with actual values; the
 * JUnit XML has one testsuite per study and one testcase per expectation, per
 * unit failure and for the figures. */
int dora_report_json(const char *path, const char *manifest, const char *shard, int ok,
                     const dora_study_report *r, size_t n, double seconds, dora_err *err);
int dora_report_junit(const char *path, const char *manifest, const dora_study_report *r,
                      size_t n, double seconds, dora_err *err);

/* ---- merging shard files ----------------------------------------------- */

/* Join the journals of shard files (each SHARD's "SHARD.journal", or SHARD
 * itself when it ends in ".journal") into OUTPUT (HDF5, via h5o_write) and its
 * journal. The journals must hold the same study (the same header). Runs are
 * written in the order the header lists them. *missing (may be NULL) gets the
 * number of planned units that no shard holds, and MISSING_MSG (may be NULL,
 * of size MSG_SIZE) names the first few; the output is written with the units
 * there are. PROGRESS (may be NULL) counts the journals' bytes and the shards
 * read. */
int dora_merge_shards(const char *output, const char *const *shards, size_t nshards,
                      const char *command_line, size_t *missing, char *missing_msg,
                      size_t msg_size, dora_progress *progress, dora_err *err);
/* The same with the bootstrap settings of STATS for the output's /regression
 * (NULL: the defaults of stats.h, as dora_merge_shards). */
int dora_merge_shards_stats(const char *output, const char *const *shards, size_t nshards,
                            const char *command_line, const dora_stats_opts *stats,
                            size_t *missing, char *missing_msg, size_t msg_size,
                            dora_progress *progress, dora_err *err);

/* Journal header text for a study: the fingerprint and the planned units
 * (runs in order, each with its steps), newly allocated. */
char *dora_journal_header(const char *study, const char *fingerprint, const dora_study *st,
                          const dora_run *runs);

/* The fingerprint inside a header (newly allocated, canonical JSON), or NULL
 * if the header is not one. */
char *dora_header_fingerprint(const char *header);

/* ---- running a manifest (batch.c) --------------------------------------- */

typedef struct dora_batch_opts {
    const char *manifest;      /* path of the manifest */
    int jobs;                  /* threads, >= 1; units run side by side */
    uint64_t mem_bytes;        /* --mem: the LoRA/DoRA buffers of the units running at
                                  once, shared among them (0: DORA_ANALYZE_MEM_DEFAULT) */
    int quiet;                 /* only failures on stderr */
    int verbose;               /* one line per unit */
    dora_progress *progress;   /* counters advanced as units finish, or NULL */
    int dry_run;               /* plan, print the plan on stdout, write nothing */
    int force;                 /* replace a journal that cannot be read */
    unsigned shard_k, shard_n; /* this run's shard K of N, or 0 and 0 */
    const char *report_json;   /* write dora_report_json here, or NULL */
    const char *junit;         /* write dora_report_junit here, or NULL */
    const char *command_line;  /* recorded in each output, borrowed */
    /* Called once the manifest is read, before anything is planned or
     * written (under MPI on rank 0 only): checks the outputs and installs
     * what must be in place while they are written. A nonzero return stops
     * the batch; dora_batch_run returns DORA_BATCH_REFUSED with the value in
     * report->refused. May be NULL. */
    int (*before_work)(const dora_manifest *m, void *ctx);
    void *ctx;
    /* Takes each log line (notes, unit lines, failures, the summary; without
     * "dora-analyze: " or a newline), one at a time, from any thread. NULL:
     * the lines are dropped. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    dora_stats_opts stats;     /* the bootstrap of the regressions (zero: the defaults) */
} dora_batch_opts;

typedef enum dora_batch_outcome {
    DORA_BATCH_OK = 0,       /* every study ran and every expectation held (dry run:
                                every study could be planned) */
    DORA_BATCH_FAILED,       /* a study, unit, expectation, figure or report failed; said
                                on stderr */
    DORA_BATCH_BAD_MANIFEST, /* the manifest is invalid: err says why; nothing was done */
    DORA_BATCH_REFUSED,      /* before_work returned nonzero: report->refused */
    DORA_BATCH_ERROR         /* out of memory: err says why */
} dora_batch_outcome;

typedef struct dora_batch_report {
    int refused;             /* what before_work returned */
    size_t studies, units, units_run, units_skipped, units_failed;
    size_t held, failed;     /* expectations */
    double seconds;
} dora_batch_report;

/* Run every study of the manifest OPTS->manifest: plan (open each base once,
 * discover the runs, stamp each checkpoint, take the units a journal holds
 * for unchanged inputs), run the rest on OPTS->jobs threads (or, built with
 * MPI and started by mpirun, rank 0 hands units to the other ranks), write
 * each study's HDF5 when its last unit is in, then draw figures (by running
 * this program as `dora-analyze plot`), check expectations and write the
 * reports. Each finished unit is appended to the study's journal before it
 * counts as done.
 *
 * The run reports as it goes: notes, unit lines, failures and the summary go
 * to OPTS->log, the planned bytes and units and those finished to
 * OPTS->progress (active while the units run), and the dry run's plan to
 * stdout (the caller flushes it). On a
 * rank other than 0 it analyses what it is sent and returns DORA_BATCH_OK.
 * REPORT (may be NULL) gets the counts. */
dora_batch_outcome dora_batch_run(const dora_batch_opts *opts, dora_batch_report *report,
                                  dora_err *err);

#endif
