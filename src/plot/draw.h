/* draw.h - the pieces of the plot layer behind plot.h: comma-separated lists,
 * running gnuplot, and drawing one module kind's figures. */
#ifndef DORA_PLOT_DRAW_H
#define DORA_PLOT_DRAW_H

#include "dora/analyze.h"
#include "dora/error.h"
#include "dora/stats.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- lists (plot.c) -------------------------------------------------------- */

/* Split "a,b,c" into a NULL-terminated array of newly allocated strings, empty
 * items left out; *n is the count. NULL when out of memory. */
char **plot_list_split(const char *s, size_t *n);
void plot_list_free(char **v);

/* ---- gnuplot (gnuplot.c) ------------------------------------------------- */

/* S as a gnuplot single-quoted string on F (' doubled, newlines dropped). */
void plot_gp_str(FILE *f, const char *s);
/* "VAR = 'VAL'" and a newline on F (plot_gp_str). */
void plot_gp_assign(FILE *f, const char *var, const char *val);
/* The assignments every figure's template starts from: term_kind (FORMAT),
 * outfile, datafile and main_title. */
void plot_gp_files(FILE *f, const char *format, const char *outfile, const char *datafile,
                   const char *title);
/* Run "gnuplot PARAMS TEMPLATE" with its stdout to /dev/null and its stderr to
 * ERRPATH; a nonzero exit or anything on stderr is a failure, whose message
 * keeps gnuplot's (up to 600 bytes). A missing gnuplot says how to install it. */
int plot_run_gnuplot(const char *params, const char *tmpl, const char *errpath, dora_err *err);

/* ---- one module kind's figures (figure.c) -------------------------------- */

/* The modules of one kind in one run, by layer. */
typedef struct plot_pick {
    const dora_result *run;
    size_t *mods; /* [n] indices into run->modules, sorted by layer then name, owned */
    size_t n;
} plot_pick;

/* Fill P with the modules of R whose kind is KIND (P->mods freed by the caller,
 * also on failure). -1 when out of memory. */
int plot_pick_modules(const dora_result *r, const char *kind, plot_pick *p);

/* The layer and step numbers the figures of one kind show, and the largest
 * values (axis multipliers). */
typedef struct plot_extent {
    int64_t *steps;   /* [nsteps] every run's steps, ascending, distinct, owned */
    size_t nsteps;
    int32_t *layers;  /* [nlayers] the layers drawn (plot_layer_of), ascending, distinct, owned */
    size_t nlayers;
    double maxm, maxd;   /* largest |dM|, |dD| over every step of every run */
    double maxm8, maxd8; /* the same at each run's final step (fig. 8) */
} plot_extent;

/* The layer a module J of P is drawn as: its /runs/NAME/layer number, or its
 * position J among the modules of its kind when it has none (-1). */
int32_t plot_layer_of(const plot_pick *p, size_t j);
/* Fill X from the NP runs of PICKS (release it, also on failure). -1 when out of memory. */
int plot_extent_of(const plot_pick *picks, size_t np, plot_extent *x);
void plot_extent_release(plot_extent *x);
/* The data files fig2.dat, fig8.dat and traj.dat in the folder WORK (figdata.c). */
int plot_write_data(const char *work, const plot_pick *picks, size_t np, const plot_extent *x,
                    dora_err *err);

/* The figures drawn for each kind, by template name: "fig2", "fig8", "trajectory";
 * each is drawn from plots/NAME.gp into OUTDIR/NAME_KIND.FMT. */
#define PLOT_NFIGS 3
extern const char *const plot_fig_names[PLOT_NFIGS];

/* Where one kind's figures are drawn from and to, and how. */
typedef struct plot_where {
    const char *outdir; /* the figures' folder */
    const char *tdir;   /* the templates' folder */
    const char *work;   /* a private folder for gnuplot's inputs and stderr */
    int overlay;        /* fig. 2 with every run in one panel */
} plot_where;

/* Write the data of kind KIND of the NP runs of PICKS (all with modules of it)
 * and draw every figure in each of FORMATS (NULL-terminated); *drawn counts
 * the figures written. */
int plot_draw_kind(const char *kind, const plot_pick *picks, size_t np, const dora_regression *g,
                   size_t ng, char *const *formats, const plot_where *w, int *drawn,
                   dora_err *err);

/* ---- the figures beside plot_fig_names (fig_geom.c, fig_heads.c) ---------- */

/* "METHOD (NAME)" of a run, NAME cut to 28 bytes with an ellipsis (figure.c). */
void plot_run_title(char *out, size_t n, const dora_result *r);

/* Drawn per kind into OUTDIR/NAME_KIND.FMT after the figures above: "geom"
 * (where dM comes from, plots/geom.gp), "heads" (dM and dD per layer and
 * attention head at the final step, plots/heads.gp). */
#define PLOT_NEXTRA 2
extern const char *const plot_extra_names[PLOT_NEXTRA];

/* Draw OUT from the template TMPL_NAME.gp of W->tdir: PARAMS writes the
 * template's parameters (tdir is written first; OUTFILE is where gnuplot must
 * write, the private temporary renamed over OUT when gnuplot succeeds) and
 * returns -1 only when out of memory. */
int plot_draw_template(const char *tmpl_name, const char *out, const plot_where *w,
                       int (*params)(FILE *p, const char *outfile, void *ctx), void *ctx,
                       dora_err *err);

/* geom_KIND.FMT in every format, a panel per run of PICKS that has
 * delta_m_passive (none: nothing drawn, 0); *drawn counts the figures. */
int plot_draw_geom(const char *kind, const plot_pick *picks, size_t np, char *const *formats,
                   const plot_where *w, int *drawn, dora_err *err);
/* heads_KIND.FMT in every format, a row per run of PICKS with per-head values
 * of the kind (none: nothing drawn, 0); *drawn counts the figures. */
int plot_draw_heads(const char *kind, const plot_pick *picks, size_t np, char *const *formats,
                    const plot_where *w, int *drawn, dora_err *err);

#endif
