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

/* What a results file of any command holds, as `inspect` shows it. */
typedef struct h5i_run_summary {
    char *name;             /* the group's name, owned */
    char *method;           /* its method attribute, owned; NULL when absent */
    size_t nsteps, nmodules;
    int64_t *steps;         /* [nsteps] */
} h5i_run_summary;

typedef struct h5i_summary {
    char *analysis;         /* "analyze" (analyze, batch, merge) or "spectrum" */
    char *tool_version;     /* root attributes, owned; created and command_line NULL */
    char *created, *command_line; /* when absent */
    int32_t layout_version;
    long long nregression;  /* rows of /regression, -1 when there is none */
    size_t nruns;
    h5i_run_summary *runs;  /* in the file's order of /runs */
} h5i_summary;

/* The summary of PATH: an HDF5 file with the root attributes tool_version
 * and layout_version and a /runs group whose runs each have 1-D steps and
 * modules. 0, or -1 with ERR naming what is missing. Release with
 * h5i_summary_release. */
int h5i_summarise(const char *path, h5i_summary *s, dora_err *err);
void h5i_summary_release(h5i_summary *s);

#endif
