/* plot.h - the paper's figures from a results file, drawn by gnuplot, and the
 * regression table.
 *
 * A study (dora_plot_open) is the runs of one results file that are drawn, in
 * panel order, with their regressions of dM on dD (stats.h). dora_plot_stats
 * writes the regression table; dora_plot_draw writes, for each module kind,
 *   DIR/fig2_KIND.FMT  dD (x) vs dM (y), one panel per run (Fig. 2/7)
 *   DIR/fig8_KIND.FMT  dM and dD by layer at each run's final step (Fig. 8)
 *   DIR/trajectory_KIND.FMT  dM and dD against the step, a line per layer, a
 *                      panel pair per run
 * by running gnuplot on the templates of the same names (NAME.gp, each loading
 * common.gp). Layers are numbered as in the file's /runs/NAME/layer (the number
 * in the tensor name, 0-based) and steps are the real training steps
 * (docs/figures.md). Each figure is drawn
 * into a private temporary beside it and renamed over it when gnuplot succeeds
 * (util_out), so a failure leaves no partial figure. A caller that wants those
 * temporaries removed on SIGINT installs its signal guard first.
 *
 * Lists (runs, module kinds, formats) are comma-separated, as on the command
 * line and in a batch manifest. Nothing here prints: notes for the user come
 * back in the report, failures in the dora_err.
 */
#ifndef DORA_PLOT_H
#define DORA_PLOT_H

#include "dora/analyze.h"
#include "dora/error.h"
#include "dora/stats.h"

#include <stddef.h>
#include <stdio.h>

typedef struct dora_plot_study {
    char *path;             /* the results file, as given, owned */
    dora_result *runs;      /* [nruns] the runs drawn, in panel order: shallow copies of
                               entries of all, valid until dora_plot_release */
    size_t nruns;
    const dora_regression *regs; /* [nregs] one per (run of runs, module kind): own_regs,
                                    or the caller's (dora_plot_opts.regs) */
    size_t nregs;
    dora_regression *own_regs; /* what dora_plot_release frees */
    dora_result *all;       /* [nall] every run of the file, owned */
    size_t nall;
} dora_plot_study;

/* Read RESULTS_H5 (h5in.h; a FIFO or device is refused before HDF5 opens it)
 * and keep the runs named in RUNS, in that order (NULL: all, in file order),
 * with their regressions. Errors: the file cannot be read, "no run named 'X'",
 * out of memory. On failure S holds nothing to release. */
int dora_plot_open(dora_plot_study *s, const char *results_h5, const char *runs, dora_err *err);
/* The same with the bootstrap of STATS (stats.h; NULL: the defaults). */
int dora_plot_open_stats(dora_plot_study *s, const char *results_h5, const char *runs,
                         const dora_stats_opts *stats, dora_err *err);
void dora_plot_release(dora_plot_study *s);

/* The regression table of S on OUT: TSV with a header line (JSON = 0) or a JSON
 * array (JSON = 1), one row per (run, module kind), undefined numbers as NA or
 * null. KINDS (NULL: all) keeps only those module kinds, in the table's order.
 * -1 only when out of memory; the caller flushes OUT and checks it for write
 * errors. */
int dora_plot_stats(FILE *out, const dora_plot_study *s, const char *kinds, int json,
                    dora_err *err);

typedef struct dora_plot_opts {
    const char *kinds;     /* module kinds, a figure pair each; NULL: the query and value
                              projections found (q_proj, v_proj, query, value, q, v) */
    const char *formats;   /* png, pdf, svg; NULL: "png,pdf" */
    const char *outdir;    /* folder of the figures, created if missing (not its parents) */
    const char *templates; /* folder of the templates; NULL: dora_plot_templates_dir() */
    int overlay;           /* 1: fig. 2 with every run in one panel, coloured by run */
    const dora_stats_opts *stats; /* the bootstrap of dora_plot_figures' regressions
                                     (NULL: the defaults of stats.h) */
    const dora_regression *regs;  /* [nregs] the regressions of every run of the file with
                                     STATS, from a caller that computed them for the runs
                                     it wrote there (batch): used, not computed again.
                                     NULL: dora_plot_figures computes them */
    size_t nregs;
} dora_plot_opts;

/* 0 if FORMATS lists at least one format and only png, pdf and svg; else -1 with
 * "unknown format 'X' (png, pdf, svg)" or "--format needs at least one of png,
 * pdf, svg". */
int dora_plot_check_formats(const char *formats, dora_err *err);

/* The templates' folder, newly allocated (NULL when out of memory):
 * $DORA_PLOTS_DIR; else, beside the executable's folder (PREFIX/bin or the
 * source tree's bin/), share/dora-analyze/plots (an installed tree, which may
 * have been moved) or plots (the source tree), whichever holds fig2.gp; else
 * the plots/ folder of the tree the program was built in. */
char *dora_plot_templates_dir(void);

typedef struct dora_plot_report {
    int drawn;     /* figures written */
    int refused;   /* the failure is a figure that would replace the results file
                      itself: a usage error, nothing was written */
    size_t nnotes;
    char **notes;  /* [nnotes] remarks for the user ("run 'X' has no 'K' modules; left
                      out of its figures"), owned; kept on failure too */
} dora_plot_report;
void dora_plot_report_release(dora_plot_report *rep);

/* Draw both figures of every module kind of O in every format of O into
 * O->outdir (REP is filled, also on failure; release it). gnuplot runs with
 * its own temporaries (data files, parameters, its stderr) in a private folder
 * of /tmp, removed afterwards; anything gnuplot writes on stderr is a failure.
 * Errors name the file: the results file has no kind asked for (or, by default,
 * no query or value projection), a figure is the results file (REP->refused),
 * the output folder cannot be made, the templates are missing, gnuplot is not
 * installed or fails (its message is kept), out of memory. Figures of kinds
 * drawn before a failure stay written. */
int dora_plot_draw(const dora_plot_study *s, const dora_plot_opts *o, dora_plot_report *rep,
                   dora_err *err);

/* dora_plot_open (every run) + dora_plot_draw + dora_plot_release: the figures
 * of a results file, for a caller that needs no table (batch). */
int dora_plot_figures(const char *results_h5, const dora_plot_opts *o, dora_plot_report *rep,
                      dora_err *err);

/* ---- the HTML report (`dora-analyze report`, plot/htmlpage.c) --------------
 *
 * One self-contained HTML page of a results file.
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
typedef struct dora_report_opts {
    const char *kinds;     /* module kinds, comma-separated; NULL: every kind of the file */
    const char *templates; /* gnuplot templates' folder; NULL: dora_plot_templates_dir() */
    int force;             /* replace an existing OUT that is not a report of this tool */
    const char *spectrum;  /* a results file of `spectrum` whose summary the page shows
                              (NULL: none) */
    dora_stats_opts stats; /* the bootstrap of the regressions (zero: the defaults) */
} dora_report_opts;

/* Write the report of RESULTS_H5 to OUT (REP is filled, also on failure: drawn =
 * figures in the page, notes = remarks for the user; release it). Refused, with
 * REP->refused set and nothing written (a usage error): OUT is the results file
 * or O->spectrum (the same file after symlinks), OUT is a folder, FIFO or device, OUT exists and
 * is not a report of this tool unless O->force. Other errors name the file: the
 * results file or O->spectrum cannot be read (h5in.h, spectral.h), a kind asked for is in no run, gnuplot is
 * missing or fails, OUT cannot be written, out of memory. */
int dora_report_write(const char *results_h5, const char *out, const dora_report_opts *o,
                      dora_plot_report *rep, dora_err *err);

#endif
