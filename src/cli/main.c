/* main.c - dora-analyze: dispatch to the subcommands. Only this layer prints
 * messages and chooses exit statuses (0 ok, 1 bad input or failed analysis,
 * 2 usage error). */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"
#include "dora/version.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Every command: one line each (its name, its function, its line in the usage). */
static const struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"analyze", cmd_analyze, "per-layer, per-step magnitude and direction change (dM, dD) to HDF5"},
    {"inspect", cmd_inspect, "list a file's tensors, or a run folder's checkpoints and steps"},
    {"plot", cmd_plot, "the paper's figures (dD vs dM, per-layer) and the regression table"},
    {"batch", cmd_batch, "every study of a manifest: parallel, resumable, checked against expectations"},
    {"merge", cmd_merge, "join the shard files of a study (batch --shard) into one results file"},
    {"spectrum", cmd_spectrum, "singular values, r90, intruder dimensions, subspace similarity of the updates"},
    {"report", cmd_report, "one self-contained HTML page: runs, regression, figures, per-layer tables"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out);

/* "'WORD' is not a command", the closest command suggested, and the usage. */
static int unknown_command(const char *word)
{
    const char *names[NCOMMANDS];
    for (size_t i = 0; i < NCOMMANDS; i++)
        names[i] = commands[i].name;
    const char *near = cli_closest(word, names, NCOMMANDS);
    if (near)
        fprintf(stderr, "dora-analyze: '%s' is not a command; did you mean '%s'?\n", word, near);
    else
        fprintf(stderr, "dora-analyze: '%s' is not a command.\n", word);
    usage(stderr);
    return EXIT_USAGE;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dora-analyze <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'dora-analyze <command> --help' (or 'dora-analyze help <command>') "
                 "describes a command.\n"
                 "exit status: 0 success, 1 bad input or failed analysis, 2 usage error\n");
}

int cli_fail(const dora_err *err)
{
    fprintf(stderr, "dora-analyze: error: %s\n", err->msg[0] ? err->msg : "unknown failure");
    return EXIT_BAD_INPUT;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "dora-analyze %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'dora-analyze %s --help'.\n", cmd);
    return EXIT_USAGE;
}

int cli_finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "dora-analyze: error: writing to standard output failed: %s\n",
                strerror(errno));
        return EXIT_BAD_INPUT;
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 && argc > 2) { /* help CMD is CMD --help */
        const struct command *c = find_command(argv[2]);
        if (!c)
            return unknown_command(argv[2]);
        if (argc > 3) {
            fprintf(stderr, "dora-analyze: help takes one command, not %d words\n", argc - 2);
            return EXIT_USAGE;
        }
        char help[] = "--help";
        char *args[] = {(char *)c->name, help, NULL}; /* getopt moves pointers, not text */
        return c->fn(2, args);
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return cli_finish_stdout();
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("dora-analyze %s\n", DORA_VERSION);
        return cli_finish_stdout();
    }
    const struct command *c = find_command(cmd);
    return c ? c->fn(argc - 1, argv + 1) : unknown_command(cmd);
}
