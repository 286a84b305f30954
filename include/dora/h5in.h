/* h5in.h - reading a results file written by `analyze` (layout in docs/hdf5.md).
 *
 * The file is checked as input: every dataset the layout needs must be there
 * with the documented rank, consistent lengths and finite values; an error
 * names the file and the dataset. All of hdf5.h stays in h5in.c.
 */
#ifndef DORA_H5IN_H
#define DORA_H5IN_H

#include "dora/analyze.h"
#include "dora/error.h"

/* Read every run of PATH, in the file's order of /runs (creation order when
 * tracked, else name order). *runs is allocated; release each with
 * dora_result_release and free the array. */
int h5i_read(const char *path, dora_result **runs, size_t *nruns, dora_err *err);

#endif
