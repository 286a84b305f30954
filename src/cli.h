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
/* Flush stdout and report a write error (full disk, closed pipe) as a failure. */
int cli_finish_stdout(void);

#endif
