/* h5out.h - the HDF5 results file (layout documented in README.md).
 *
 * All of hdf5.h stays inside h5out.c. The file is written under a temporary
 * name in the destination folder and renamed over PATH only when complete and
 * closed, so an interrupted or failed run never leaves a file that looks
 * finished; on failure the temporary file is removed.
 */
#ifndef DORA_H5OUT_H
#define DORA_H5OUT_H

#include "dora/analyze.h"
#include "dora/error.h"

#define DORA_LAYOUT_VERSION 1

int h5o_write(const char *path, const dora_result *runs, size_t nruns, const char *command_line,
              dora_err *err);

/* Path of the temporary file h5o_write uses for PATH (newly allocated), so
 * that a signal handler set up by the caller can remove it. */
char *h5o_temp_path(const char *path);

#endif
