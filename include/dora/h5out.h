/* h5out.h - the HDF5 results file (layout documented in docs/hdf5.md).
 *
 * All of hdf5.h stays inside h5out.c and h5util.c. The file is built in
 * memory (HDF5 never writes to disk itself, so a full disk is an ordinary
 * write error), written into a private temporary folder beside PATH (see
 * util_out in src/core/util.h: created 0700 by mkdtemp, the file O_EXCL and
 * O_NOFOLLOW, so nothing can be planted there), fsync'ed and renamed over PATH
 * only when complete, so an interrupted or failed run never leaves a file that
 * looks finished; on failure the temporary is removed, and on SIGINT, SIGTERM,
 * SIGHUP or SIGQUIT too when the command installed cli_guard_signals.
 */
#ifndef DORA_H5OUT_H
#define DORA_H5OUT_H

#include "dora/analyze.h"
#include "dora/error.h"
#include "dora/stats.h"

#define DORA_LAYOUT_VERSION 1

int h5o_write(const char *path, const dora_result *runs, size_t nruns, const char *command_line,
              dora_err *err);
/* The same with the bootstrap settings of STATS for /regression (NULL: the
 * defaults of stats.h). */
int h5o_write_stats(const char *path, const dora_result *runs, size_t nruns,
                    const char *command_line, const dora_stats_opts *stats, dora_err *err);
/* The same with /regression from REGS [NREGS]: dora_regressions_opts(RUNS, NRUNS,
 * STATS), computed already by a caller that needs them too (batch: its
 * expectations and figures), so that the bootstrap runs once. */
int h5o_write_regs(const char *path, const dora_result *runs, size_t nruns,
                   const char *command_line, const dora_stats_opts *stats,
                   const dora_regression *regs, size_t nregs, dora_err *err);

/* 1 if PATH is an HDF5 results file this tool wrote (the HDF5 signature and
 * the root attributes tool_version, layout_version and a command_line of
 * dora-analyze), else 0: what an existing output must be to be replaced
 * without --force. */
int h5o_is_results_file(const char *path);

#endif
