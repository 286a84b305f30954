/* cmd_merge.c - `dora-analyze merge OUT.h5 SHARD...`: the shard files of one
 * study (written by `batch --shard K/N`) joined into one results file. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/batch.h"
#include "core/util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char merge_help[] =
    "usage: dora-analyze merge [-q] [--force] [--bootstrap B] OUT.h5 SHARD...\n"
    "\n"
    "Join the shard files of one study, written by `dora-analyze batch --shard K/N`,\n"
    "into OUT.h5 (and OUT.h5.journal, so that a later batch run finds every unit\n"
    "done). Each SHARD is a shard's HDF5 file, whose journal SHARD.journal holds its\n"
    "results in full, or that journal itself. The shards must come from the same\n"
    "study and inputs; the result is the same, number for number, as one run of\n"
    "the whole study.\n"
    "\n"
    "options:\n"
    "  -q, --quiet   no notes or summary line on stderr\n"
    "  --force       replace an existing OUT.h5 or OUT.h5.journal that this tool did\n"
    "                not write (a shard is never replaced)\n"
    "  --progress=WHEN  progress line on stderr (bytes read, rate, time left, the\n"
    "                shard): auto (if stderr is a terminal), always, never\n"
    "  --bootstrap B replicates of the layer-cluster bootstrap behind the 95%\n"
    "                intervals of r in /regression of OUT.h5, drawn again over the\n"
    "                merged study (100 to 1000000; default 10000)\n"
    "  -h, --help    this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or units missing from the shards (the\n"
    "output then holds those there are), 2 usage error\n";

/* OUT and its journal against the shards and their journals, which merge
 * reads and never replaces: EXIT_OK, or the status with the message printed. */
static int check_merge_outputs(const char *out, char *const *shards, int nshards, int force)
{
    char *jout = dora_journal_path(out);
    if (!jout) {
        dora_err e;
        dora_errf(&e, "out of memory");
        return cli_fail(&e);
    }
    cli_inputs inputs = {0};
    for (int i = 0; i < nshards; i++) {
        cli_inputs_add(&inputs, shards[i]);
        char *j = util_has_suffix(shards[i], ".journal") ? NULL : dora_journal_path(shards[i]);
        if (j)
            cli_inputs_add(&inputs, j);
        free(j);
    }
    int st = inputs.oom ? EXIT_BAD_INPUT : EXIT_OK;
    if (st == EXIT_OK)
        st = cli_check_output("merge", out, CLI_OUT_H5, &inputs, force);
    if (st == EXIT_OK)
        st = cli_check_output("merge", jout, CLI_OUT_JOURNAL, &inputs, force);
    cli_inputs_release(&inputs);
    free(jout);
    if (st == EXIT_BAD_INPUT)
        fprintf(stderr, "dora-analyze: error: out of memory\n");
    return st;
}

/* 0 if the folder of OUT exists, else -1 with *err set. */
static int check_out_dir(const char *out, dora_err *err)
{
    char *dir = util_dirname(out);
    int ok = dir && util_is_dir(dir);
    if (!ok)
        dora_errf(err, "'%s': the output folder '%s' does not exist", out, dir ? dir : "?");
    free(dir);
    return ok ? 0 : -1;
}

/* "dora-analyze ARGV..." joined by spaces as given (recorded in the output),
 * or NULL with *err set. */
static char *merge_command_line(int argc, char **argv, dora_err *err)
{
    size_t n = 0;
    for (int i = 0; i < argc; i++)
        n += strlen(argv[i]) + 1;
    char *cmdline = malloc(n + sizeof "dora-analyze");
    if (!cmdline) {
        dora_errf(err, "out of memory");
        return NULL;
    }
    strcpy(cmdline, "dora-analyze");
    for (int i = 0; i < argc; i++) {
        strcat(cmdline, " ");
        strcat(cmdline, argv[i]);
    }
    return cmdline;
}

/* The options of one `merge`. */
typedef struct merge_args {
    int quiet, force, progress;
    dora_stats_opts stats; /* --bootstrap */
} merge_args;

/* Options into *A (optind then at OUT.h5): -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, merge_args *a)
{
    enum { OPT_FORCE = 256, OPT_PROGRESS, OPT_BOOTSTRAP };
    static const struct option longopts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"force", no_argument, NULL, OPT_FORCE},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, st;
    cli_seen seen = {{0}};
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", longopts, NULL)) != -1) {
        if ((st = cli_option_once(&seen, "merge", c, longopts)) >= 0)
            return st;
        switch (c) {
        case 'q': a->quiet = 1; break;
        case OPT_FORCE: a->force = 1; break;
        case OPT_PROGRESS:
            if ((st = cli_parse_progress("merge", optarg, &a->progress)) >= 0)
                return st;
            break;
        case OPT_BOOTSTRAP:
            if ((st = cli_parse_bootstrap("merge", optarg, &a->stats.bootstrap)) >= 0)
                return st;
            break;
        case 'h':
            fputs(merge_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("merge", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_unknown_option("merge", argv[optind - 1], longopts);
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("merge", "an output file and at least one shard file are needed");
    for (int i = optind + 1; i < argc; i++)
        if (util_same_output(argv[i], argv[optind]))
            return cli_usage_error("merge", "'%s' is both the output and a shard ('%s')",
                                   argv[optind], argv[i]);
    return -1;
}

int cmd_merge(int argc, char **argv)
{
    merge_args a = {0};
    int st = parse_options(argc, argv, &a);
    if (st >= 0)
        return st;
    const char *out = argv[optind];
    char *const *shards = argv + optind + 1;
    const int nshards = argc - optind - 1;
    if ((st = check_merge_outputs(out, shards, nshards, a.force)) != EXIT_OK)
        return st;
    cli_guard_signals();
    dora_err err = {{0}, 0};
    char *cmdline = check_out_dir(out, &err) == 0 ? merge_command_line(argc, argv, &err) : NULL;
    if (!cmdline)
        return cli_fail(&err);
    size_t missing = 0;
    char msg[512];
    cli_term term;
    cli_term_init(&term, cli_progress_shown(a.progress, a.quiet), "shards");
    cli_term_start(&term);
    int rc = dora_merge_shards_stats(out, (const char *const *)shards, (size_t)nshards, cmdline,
                                     &a.stats, &missing, msg, sizeof msg, &term.prog, &err);
    cli_term_stop(&term);
    free(cmdline);
    if (rc != 0)
        st = cli_fail(&err);
    else if (missing)
        fprintf(stderr, "dora-analyze: error: %zu unit(s) of the study are in no shard (%s); "
                        "'%s' holds the others\n",
                missing, msg, out);
    else if (!a.quiet)
        cli_term_summary(&term, out, "%d shard file(s) merged", nshards);
    cli_term_release(&term);
    return rc != 0 ? st : missing ? EXIT_BAD_INPUT : EXIT_OK;
}
