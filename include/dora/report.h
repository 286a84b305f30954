/* report.h - one self-contained HTML page of a results file (`dora-analyze report`).
 *
 * The page holds: each run's method, source and base paths, steps and module
 * count; the regression of dM on dD per run and module kind (stats.h) beside the
 * paper's numbers (REFERENCE.md: r for the query projection, FT -0.62, LoRA
 * +0.83, DoRA -0.31, with their Fisher-z 95% intervals); for each module kind
 * the figures of plot.h (Fig. 2 / 7, Fig. 8, the trajectory), drawn by gnuplot
 * as SVG and written into the page; and the per-layer dM and dD at each run's
 * final step. Every number comes from the file; every text from the file is
 * escaped. The page loads nothing: no network, no script, no external font or
 * style.
 *
 * The page is written as every output of the tool is (core/util.h util_out): into
 * a private temporary folder beside OUT, then renamed over OUT, so a failure or
 * a signal leaves no partial page. A caller that wants those temporaries removed
 * on SIGINT installs its signal guard first.
 */
#ifndef DORA_REPORT_H
#define DORA_REPORT_H

#include "dora/error.h"
#include "dora/plot.h"

typedef struct dora_report_opts {
    const char *kinds;     /* module kinds, comma-separated; NULL: every kind of the file */
    const char *templates; /* gnuplot templates' folder; NULL: dora_plot_templates_dir() */
    int force;             /* replace an existing OUT that is not a report of this tool */
} dora_report_opts;

/* Write the report of RESULTS_H5 to OUT (REP is filled, also on failure: drawn =
 * figures in the page, notes = remarks for the user; release it). Refused, with
 * REP->refused set and nothing written (a usage error): OUT is the results file
 * (the same file after symlinks), OUT is a folder, FIFO or device, OUT exists and
 * is not a report of this tool unless O->force. Other errors name the file: the
 * results file cannot be read (h5in.h), a kind asked for is in no run, gnuplot is
 * missing or fails, OUT cannot be written, out of memory. */
int dora_report_write(const char *results_h5, const char *out, const dora_report_opts *o,
                      dora_plot_report *rep, dora_err *err);

#endif
