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
    "usage: dora-analyze merge [-q] [--force] OUT.h5 SHARD...\n"
    "\n"
    "Join the shard files of one study, written by `dora-analyze batch --shard K/N`,\n"
    "into OUT.h5 (and OUT.h5.journal, so that a later batch run finds every unit\n"
    "done). Each SHARD is a shard's HDF5 file, whose journal SHARD.journal holds its\n"
    "results in full, or that journal itself. The shards must come from the same\n"
    "study and inputs; the result is the same, number for number, as one run of\n"
    "the whole study.\n"
    "\n"
    "options:\n"
    "  -q, --quiet   no notes on stderr\n"
    "  --force       replace an existing OUT.h5 or OUT.h5.journal that this tool did\n"
    "                not write (a shard is never replaced)\n"
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

int cmd_merge(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int quiet = 0, force = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'q':
            quiet = 1;
            break;
        case 'f':
            force = 1;
            break;
        case 'h':
            fputs(merge_help, stdout);
            return cli_finish_stdout();
        default:
            return cli_usage_error("merge", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("merge", "an output file and at least one shard file are needed");
    const char *out = argv[optind];
    for (int i = optind + 1; i < argc; i++)
        if (util_same_output(argv[i], out))
            return cli_usage_error("merge", "'%s' is both the output and a shard ('%s')", out,
                                   argv[i]);
    int st = check_merge_outputs(out, argv + optind + 1, argc - optind - 1, force);
    if (st != EXIT_OK)
        return st;
    cli_guard_signals();
    dora_err err = {{0}, 0};
    char *cmdline = check_out_dir(out, &err) == 0 ? merge_command_line(argc, argv, &err) : NULL;
    if (!cmdline)
        return cli_fail(&err);
    size_t missing = 0;
    char msg[512];
    int rc = dora_merge_shards(out, (const char *const *)argv + optind + 1,
                               (size_t)(argc - optind - 1), cmdline, &missing, msg, sizeof msg,
                               &err);
    free(cmdline);
    if (rc != 0)
        return cli_fail(&err);
    if (missing) {
        fprintf(stderr, "dora-analyze: error: %zu unit(s) of the study are in no shard (%s); "
                        "'%s' holds the others\n",
                missing, msg, out);
        return EXIT_BAD_INPUT;
    }
    if (!quiet)
        fprintf(stderr, "dora-analyze: merged %d shard file(s) into '%s'\n", argc - optind - 1,
                out);
    return EXIT_OK;
}
