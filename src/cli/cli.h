/* cli.h - the subcommands of the dora-analyze program. */
#ifndef DORA_CLI_H
#define DORA_CLI_H

#include "dora/error.h"
#include "dora/filter.h"
#include "dora/progress.h"

#include <getopt.h>
#include <pthread.h>

#include <stddef.h>

/* Exit statuses, the same for every subcommand. */
enum { EXIT_OK = 0, EXIT_BAD_INPUT = 1, EXIT_USAGE = 2 };

int cmd_analyze(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_report(int argc, char **argv);
/* After `plot`'s or `report`'s drawing (RC its return): the notes of REP on
 * stderr, then the exit status: EXIT_OK, a usage error of CMD when REP->refused,
 * else the failure of ERR (cmd_plot.c). */
struct dora_plot_report;
int cli_plot_outcome(const char *cmd, int rc, const struct dora_plot_report *rep,
                     const dora_err *err);
int cmd_spectrum(int argc, char **argv);

/* "dora-analyze: error: MSG" on stderr; returns EXIT_BAD_INPUT. */
int cli_fail(const dora_err *err);
/* "dora-analyze CMD: MSG" + a hint to --help on stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The command line as a shell would read it back ("dora-analyze" + ARGV,
 * quoted where needed), newly allocated. */
char *cli_command_line(int argc, char **argv);
/* "NAME=PATH" when the part before '=' has no '/' and the whole argument is
 * not itself an existing path (folders like "lr=1e-4" are common); else the
 * whole is the path and the name is its last component (a .safetensors
 * file's without the suffix). *name is allocated; -1 when out of memory. */
int cli_split_run_arg(const char *arg, char **name, const char **path);
/* SIGINT, SIGTERM, SIGHUP and SIGQUIT remove every output temporary in
 * flight (util_out_remove_all) before the process dies of the signal. Each
 * subcommand that writes files installs it first. */
void cli_guard_signals(void);

/* ---- what analyze and spectrum share ------------------------------------ */

/* Compile --modules MODULES_RE and --exclude EXCLUDE_RE (each NULL for none)
 * into *F. EXIT_OK, or a usage error of CMD naming the option whose
 * expression does not compile ("--modules 'RE': what regerror says"),
 * EXIT_USAGE, with *F left empty. dora_filter_free releases *F. */
int cli_compile_filter(const char *cmd, dora_filter *f, const char *modules_re,
                       const char *exclude_re);
/* Split the N run arguments ARGS ([NAME=]RUN) into NAMES[i] (allocated; the
 * caller frees every one, NAMES zeroed first) and PATHS[i] (into ARGS).
 * EXIT_OK; a usage error of CMD for a name that is not a valid run name or
 * two runs of the same name; EXIT_BAD_INPUT (reported) when out of memory. */
int cli_parse_runs(const char *cmd, size_t n, char *const *args, char **names, const char **paths);
/* EXIT_OK when the folder OUT is to be written into exists; else reported,
 * EXIT_BAD_INPUT. */
int cli_check_output_dir(const char *out);
/* Before any work: may OUT (an HDF5 results file) and CSV (analyze's table,
 * NULL for none) be written, given that BASE_PATH (NULL for none) and the N
 * PATHS are read? EXIT_OK, or the status of the refusal (reported). */
int cli_check_outputs(const char *cmd, const char *out, const char *csv, const char *base_path,
                      const char *const *paths, size_t n, int force);
/* "dora-analyze: note: [run 'RUN': ]MSG" on stderr (RUN NULL: no run named). */
void cli_note(const char *run, const char *msg);

/* ---- inputs and outputs: an output never replaces an input -------------- */

/* The files a command reads, by device and inode. */
typedef struct cli_input {
    unsigned long long dev, ino;
    char *path; /* as found, owned */
} cli_input;
typedef struct cli_inputs {
    size_t n, cap;
    cli_input *v;
    int oom;
} cli_inputs;

/* Add PATH: a file as it is (symlinks followed); for a folder, the files in
 * it and in its subfolders two levels down (checkpoint-STEP/, DeepSpeed's
 * checkpoint-STEP/global_stepSTEP/) whose names end in .safetensors, .json,
 * .bin, .pt, .pth, .ckpt or .h5: every weight file, shard,
 * index, adapter config and trainer_state.json a model, checkpoint, adapter
 * or run folder can make the tool read. A path that does not exist adds
 * nothing (the reader says so later). */
void cli_inputs_add(cli_inputs *in, const char *path);
void cli_inputs_release(cli_inputs *in);
/* The input that is the same file as PATH (stat(), so after symlinks), or NULL. */
const char *cli_inputs_find(const cli_inputs *in, const char *path);

typedef enum cli_out_kind {
    CLI_OUT_H5 = 0,  /* an HDF5 results file (h5o_is_results_file) */
    CLI_OUT_CSV,     /* analyze --csv: first line the table's header */
    CLI_OUT_JOURNAL, /* a batch journal: its magic */
    CLI_OUT_JSON,    /* batch --report-json: "tool": "dora-analyze ..." near the top */
    CLI_OUT_JUNIT    /* batch --junit: <testsuites name="dora-analyze batch ... */
} cli_out_kind;

/* May PATH be written as an output of KIND? Refused, with a usage error on
 * stderr naming PATH and the reason ("dora-analyze CMD: refusing to write
 * 'PATH': ..."), returning EXIT_USAGE: when PATH is the same file as an input
 * (always, even with FORCE); when it is a folder, FIFO or device; when it is
 * an existing file that is not one of KIND written by this tool (unless
 * FORCE). Returns 0 when it may be written. */
int cli_check_output(const char *cmd, const char *path, cli_out_kind kind, const cli_inputs *in,
                     int force);
/* 1 if an existing PATH holds what this tool writes as KIND, else 0. */
int cli_output_is_ours(const char *path, cli_out_kind kind);

/* Flush stdout and report a write error (full disk, closed pipe) as a failure. */
int cli_finish_stdout(void);

/* ---- mistyped words and repeated options (suggest.c) --------------------- */

/* Levenshtein distance of A and B (words up to 64 bytes; longer: the longer length). */
size_t cli_edit_distance(const char *a, const char *b);
/* The one of NAMES[0..N) closest to WORD when it is close enough to be a typo
 * of it (at most 2 edits, or a third of WORD), else NULL. */
const char *cli_closest(const char *word, const char *const *names, size_t n);
/* The usage error of CMD for the unknown option ARG (as given, "--x=v" too),
 * suggesting the closest of LONGOPTS: EXIT_USAGE. */
int cli_unknown_option(const char *cmd, const char *arg, const struct option *longopts);

/* The options seen so far by one parse (zeroed first). */
typedef struct cli_seen {
    unsigned char bit[64]; /* by getopt code, 0..511 */
} cli_seen;
/* Option code C was just parsed: -1 to go on, or a usage error of CMD
 * (EXIT_USAGE) when C takes a value (required_argument in LONGOPTS) and was
 * given before. Flags may repeat. */
int cli_option_once(cli_seen *seen, const char *cmd, int c, const struct option *longopts);

/* --mem SIZE of analyze and batch (util_parse_size: 512K, 64M, 2G...): the
 * buffers of the LoRA/DoRA path, at least CLI_LORA_MEM_MIN (less cannot hold
 * the work buffers of one row); into *BYTES. -1 to go on, else a usage error
 * of CMD (EXIT_USAGE). */
#define CLI_LORA_MEM_MIN ((int64_t)1 << 20)
int cli_parse_lora_mem(const char *cmd, const char *arg, uint64_t *bytes);

/* --rename ARG of CMD (repeatable: not through cli_option_once) checked and
 * appended to RENAMES[*N] (DORA_MAX_RENAMES of them, align.h); --transpose
 * ARG checked: -1 to go on, else a usage error (EXIT_USAGE). */
int cli_add_rename(const char *cmd, const char *arg, const char **renames, size_t *n);
int cli_check_transpose(const char *cmd, const char *arg);

/* --bootstrap B (cmd_common.c): the replicates into *B (DORA_BOOTSTRAP_MIN..MAX of
 * stats.h): -1 to go on, else a usage error of CMD (EXIT_USAGE). */
int cli_parse_bootstrap(const char *cmd, const char *arg, long long *b);

/* ---- the terminal of a long command (term.c) ---------------------------- */

/* --progress=WHEN */
enum { CLI_PROGRESS_AUTO = 0, CLI_PROGRESS_ALWAYS, CLI_PROGRESS_NEVER };
/* WHEN ("auto", "always", "never") into *MODE: -1 to go on, else a usage
 * error of CMD (EXIT_USAGE). */
int cli_parse_progress(const char *cmd, const char *when, int *mode);
/* Whether the progress line is drawn: always; or auto, not QUIET and stderr
 * a terminal. */
int cli_progress_shown(int mode, int quiet);

/* The progress line on stderr, the counters it is drawn from (PROG: what the
 * library advances), and the lines written between its redraws. */
typedef struct cli_term {
    dora_progress prog;
    dora_ticker tick;
    pthread_mutex_t lock; /* stderr, drawn, stopped */
    int show, drawn, stopped;
    int ever;             /* a line was drawn at some time */
    double t0;            /* the command's start, for the summary line */
    double last_draw;
} cli_term;

/* SHOW: draw the line (cli_progress_shown); UNIT_WORD names PROG's units. */
void cli_term_init(cli_term *t, int show, const char *unit_word);
/* Start drawing the line while PROG is active, redrawn 4 times a second
 * (nothing when not SHOW). */
void cli_term_start(cli_term *t);
/* Stop redrawing and clear the line; may be called more than once. A pass that
 * ended before the first tick gets its line once, in its final state, before
 * it is cleared. */
void cli_term_stop(cli_term *t);
void cli_term_release(cli_term *t);
/* "dora-analyze: LINE" on stderr, the progress line cleared first (it is
 * redrawn on the next tick); CTX is the cli_term. */
void cli_term_line(void *ctx, const char *line);
/* "dora-analyze: wrote OUT: WHAT, BYTES read in SECONDS s" (no BYTES when
 * none were counted): the summary of a command, WHAT printf-style ("3 runs,
 * 4 steps, 273 tensors"), SECONDS since cli_term_init. */
void cli_term_summary(cli_term *t, const char *out, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
