/* cli.h - the subcommands of the dora-analyze program. */
#ifndef DORA_CLI_H
#define DORA_CLI_H

#include "dora/error.h"

/* Exit statuses, the same for every subcommand. */
enum { EXIT_OK = 0, EXIT_BAD_INPUT = 1, EXIT_USAGE = 2 };

int cmd_analyze(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_plot(int argc, char **argv);
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
/* A run name is an HDF5 group name: non-empty, not "." or "..", no '/'. */
int cli_valid_run_name(const char *s);
/* While an output is written under the temporary name TMP, SIGINT and
 * SIGTERM remove it before the process dies of the signal. */
void cli_guard_tmp(const char *tmp);
void cli_unguard_tmp(void);

/* Flush stdout and report a write error (full disk, closed pipe) as a failure. */
int cli_finish_stdout(void);

#endif
