/* plot.c - the figures of a results file (plot.h): the study read and its runs
 * chosen, the module kinds drawn, the output and work folders, and the loop
 * over kinds; the drawing itself is figure.c's. */
#define _GNU_SOURCE
#include "dora/plot.h"
#include "dora/notes.h"
#include "dora/h5in.h"
#include "plot/draw.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- lists --------------------------------------------------------------- */

char **plot_list_split(const char *s, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char **v = calloc(cap + 1, sizeof *v);
    *n = 0;
    if (!v)
        return NULL;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0 && !(v[(*n)++] = strndup(p, len))) {
            plot_list_free(v);
            return NULL;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return v;
}

void plot_list_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* ---- the study ----------------------------------------------------------- */

void dora_plot_release(dora_plot_study *s)
{
    dora_regressions_free(s->own_regs, s->nregs); /* NULL when the regressions were lent */
    for (size_t i = 0; i < s->nall; i++)
        dora_result_release(&s->all[i]);
    free(s->all);
    free(s->runs);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* S->runs: the runs named in RUNS, in that order, or all of them. */
static int select_runs(dora_plot_study *s, const char *runs, dora_err *err)
{
    s->runs = calloc(s->nall, sizeof *s->runs);
    if (!s->runs)
        return dora_errf(err, "out of memory");
    if (!runs) {
        memcpy(s->runs, s->all, s->nall * sizeof *s->runs);
        s->nruns = s->nall;
        return 0;
    }
    size_t nwant = 0;
    char **want = plot_list_split(runs, &nwant);
    if (!want)
        return dora_errf(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < nwant && rc == 0; i++) {
        size_t j = 0;
        while (j < s->nall && strcmp(s->all[j].name, want[i]) != 0)
            j++;
        if (j == s->nall)
            rc = dora_errf(err, "'%s': no run named '%s'", s->path, want[i]);
        else
            s->runs[s->nruns++] = s->all[j]; /* shallow: all owns the data */
    }
    plot_list_free(want);
    return rc;
}

int dora_plot_open(dora_plot_study *s, const char *results_h5, const char *runs, dora_err *err)
{
    return dora_plot_open_stats(s, results_h5, runs, NULL, err);
}

/* S's own regressions of its runs with STATS. */
static int own_regs(dora_plot_study *s, const dora_stats_opts *stats, dora_err *err)
{
    if (dora_regressions_opts(s->runs, s->nruns, stats, &s->own_regs, &s->nregs) != 0)
        return dora_errf(err, "out of memory");
    s->regs = s->own_regs;
    return 0;
}

/* dora_plot_open_stats, with the regressions computed when COMPUTE. */
static int plot_open(dora_plot_study *s, const char *results_h5, const char *runs,
                     const dora_stats_opts *stats, int compute, dora_err *err)
{
    memset(s, 0, sizeof *s);
    int fd = util_open_regular(results_h5, err); /* a FIFO would hold HDF5's open() forever */
    if (fd < 0)
        return -1;
    close(fd);
    if (h5i_read(results_h5, &s->all, &s->nall, err) != 0)
        return -1;
    int rc = 0;
    if (!(s->path = strdup(results_h5)))
        rc = dora_errf(err, "out of memory");
    if (rc == 0)
        rc = select_runs(s, runs, err);
    if (rc == 0 && compute)
        rc = own_regs(s, stats, err);
    if (rc != 0)
        dora_plot_release(s);
    return rc;
}

int dora_plot_open_stats(dora_plot_study *s, const char *results_h5, const char *runs,
                         const dora_stats_opts *stats, dora_err *err)
{
    return plot_open(s, results_h5, runs, stats, 1, err);
}

/* 1 if the regressions G [N] are those of the runs of S: each names one of them, and
 * each of them that has modules is named (a caller's set for another file fails). */
static int regs_fit(const dora_plot_study *s, const dora_regression *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t r = 0;
        while (r < s->nruns && strcmp(s->runs[r].name, g[i].run) != 0)
            r++;
        if (r == s->nruns)
            return 0;
    }
    for (size_t r = 0; r < s->nruns; r++) {
        size_t i = 0;
        while (i < n && strcmp(s->runs[r].name, g[i].run) != 0)
            i++;
        if (i == n && s->runs[r].nmodules > 0)
            return 0;
    }
    return 1;
}

/* ---- options and report ------------------------------------------------- */

int dora_plot_check_formats(const char *formats, dora_err *err)
{
    size_t n = 0;
    char **v = plot_list_split(formats, &n);
    int rc = 0;
    for (size_t i = 0; v && i < n && rc == 0; i++)
        if (strcmp(v[i], "png") && strcmp(v[i], "pdf") && strcmp(v[i], "svg"))
            rc = dora_errf(err, "unknown format '%s' (png, pdf, svg)", v[i]);
    if (rc == 0 && (!v || n == 0))
        rc = dora_errf(err, "--format needs at least one of png, pdf, svg");
    plot_list_free(v);
    return rc;
}

void dora_plot_report_release(dora_plot_report *rep)
{
    dora_notes_free(rep->notes, rep->nnotes);
    memset(rep, 0, sizeof *rep);
}

static int add_note(dora_plot_report *rep, const char *run, const char *kind)
{
    return dora_notes_add(&rep->notes, &rep->nnotes, 0,
                          "run '%s' has no '%s' modules; left out of its figures", run, kind);
}

/* ---- before drawing ------------------------------------------------------ */

/* The module kinds asked for, or the query and value projections present. */
static char **choose_kinds(const dora_plot_study *s, const char *kinds, size_t *n, dora_err *err)
{
    *n = 0;
    if (kinds) {
        char **v = plot_list_split(kinds, n);
        if (!v)
            dora_errf(err, "out of memory");
        return v;
    }
    static const char *const qv[] = {"q_proj", "v_proj", "query", "value", "q", "v"};
    size_t nqv = sizeof qv / sizeof *qv;
    char **v = calloc(nqv + 1, sizeof *v);
    for (size_t q = 0; v && q < nqv; q++)
        for (size_t i = 0; i < s->nregs; i++)
            if (strcmp(s->regs[i].kind, qv[q]) == 0) {
                if (!(v[(*n)++] = strdup(qv[q]))) {
                    plot_list_free(v);
                    v = NULL;
                }
                break;
            }
    if (!v) {
        dora_errf(err, "out of memory");
        return NULL;
    }
    if (*n == 0) {
        dora_errf(err, "'%s': no query or value projections (q_proj, v_proj, query, value); "
                       "choose module kinds with --modules",
                  s->path);
        plot_list_free(v);
        return NULL;
    }
    return v;
}

/* NAMES[N]_KIND.FMT in OUTDIR, for every kind and format: -1 (ERR) when one is
 * the file IN describes. */
static int refuse_names(const char *input, const struct stat *in, const char *outdir,
                        char *const *kinds, char *const *formats, const char *const *names,
                        int n, dora_err *err)
{
    for (size_t k = 0; kinds[k]; k++)
        for (size_t fi = 0; formats[fi]; fi++)
            for (int fig = 0; fig < n; fig++) {
                char out[4096];
                struct stat sb;
                snprintf(out, sizeof out, "%s/%s_%s.%s", outdir, names[fig], kinds[k],
                         formats[fi]);
                if (stat(out, &sb) == 0 && sb.st_dev == in->st_dev && sb.st_ino == in->st_ino)
                    return dora_errf(err, "refusing to write '%s': it is the input '%s' (the "
                                          "same file)",
                                     out, input);
            }
    return 0;
}

/* No figure may replace the results file it is drawn from (stat(), so after
 * symlinks). */
static int refuse_input(const char *input, const char *outdir, char *const *kinds,
                        char *const *formats, dora_err *err)
{
    struct stat in;
    if (stat(input, &in) != 0)
        return 0;
    return refuse_names(input, &in, outdir, kinds, formats, plot_fig_names, PLOT_NFIGS, err) ||
                   refuse_names(input, &in, outdir, kinds, formats, plot_extra_names,
                                PLOT_NEXTRA, err)
               ? -1
               : 0;
}

/* The output folder (made if missing) and the templates' folder, checked. */
static int prepare_folders(const dora_plot_opts *o, char **tdir, dora_err *err)
{
    if (mkdir(o->outdir, 0777) != 0 && errno != EEXIST)
        return dora_errf(err, "'%s': cannot create the output folder: %s", o->outdir,
                         strerror(errno));
    if (!util_is_dir(o->outdir))
        return dora_errf(err, "'%s': not a folder", o->outdir);
    *tdir = o->templates ? strdup(o->templates) : dora_plot_templates_dir();
    if (!*tdir)
        return dora_errf(err, "out of memory");
    int found = 1;
    static const char *const need[] = {"common.gp", "layerkey.gp", "fig2.gp", "fig8.gp",
                                       "trajectory.gp"};
    for (size_t i = 0; i < sizeof need / sizeof *need && found; i++) {
        char *probe = util_join(*tdir, need[i]);
        found = probe && util_is_file(probe);
        free(probe);
    }
    if (!found)
        return dora_errf(err, "the gnuplot templates (common.gp, layerkey.gp, fig2.gp, "
                              "fig8.gp, trajectory.gp) are not all in '%s'; set "
                              "DORA_PLOTS_DIR to the project's plots/ folder",
                         *tdir);
    return 0;
}

/* ---- drawing ------------------------------------------------------------- */

/* Every kind: its modules in each run (a note for a run without any), then its
 * figures. */
static int draw_kinds(const dora_plot_study *s, char *const *kinds, char *const *formats,
                      const plot_where *w, dora_plot_report *rep, dora_err *err)
{
    plot_pick *picks = calloc(s->nruns + 1, sizeof *picks);
    if (!picks)
        return dora_errf(err, "out of memory");
    int rc = 0;
    for (size_t k = 0; kinds[k] && rc == 0; k++) {
        size_t np = 0;
        for (size_t i = 0; i < s->nruns && rc == 0; i++) {
            free(picks[np].mods);
            picks[np].mods = NULL;
            if (plot_pick_modules(&s->runs[i], kinds[k], &picks[np]) != 0)
                rc = dora_errf(err, "out of memory");
            else if (picks[np].n > 0)
                np++;
            else if (add_note(rep, s->runs[i].name, kinds[k]) != 0)
                rc = dora_errf(err, "out of memory");
        }
        if (rc == 0 && np == 0)
            rc = dora_errf(err, "'%s': no run has modules of kind '%s'", s->path, kinds[k]);
        if (rc == 0)
            rc = plot_draw_kind(kinds[k], picks, np, s->regs, s->nregs, formats, w, &rep->drawn,
                                err);
        if (rc == 0)
            rc = plot_draw_geom(kinds[k], picks, np, formats, w, &rep->drawn, err);
        if (rc == 0)
            rc = plot_draw_heads(kinds[k], picks, np, formats, w, &rep->drawn, err);
    }
    for (size_t i = 0; i < s->nruns; i++)
        free(picks[i].mods);
    free(picks);
    return rc;
}

int dora_plot_draw(const dora_plot_study *s, const dora_plot_opts *o, dora_plot_report *rep,
                   dora_err *err)
{
    memset(rep, 0, sizeof *rep);
    size_t nfmt = 0, nkinds = 0;
    char **formats = NULL, **kinds = NULL, *tdir = NULL;
    char work[] = "/tmp/dora-plot-XXXXXX";
    int have_work = 0, rc = -1;
    const char *fmt = o->formats ? o->formats : "png,pdf";
    if (dora_plot_check_formats(fmt, err) != 0)
        goto done;
    if (!(formats = plot_list_split(fmt, &nfmt))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (!(kinds = choose_kinds(s, o->kinds, &nkinds, err)))
        goto done;
    if (refuse_input(s->path, o->outdir, kinds, formats, err) != 0) {
        rep->refused = 1;
        goto done;
    }
    if (prepare_folders(o, &tdir, err) != 0)
        goto done;
    if (!mkdtemp(work)) {
        dora_errf(err, "cannot create a temporary folder: %s", strerror(errno));
        goto done;
    }
    have_work = 1;
    plot_where w = {o->outdir, tdir, work, o->overlay};
    rc = draw_kinds(s, kinds, formats, &w, rep, err);
done:
    if (have_work) {
        static const char *const files[] = {"fig2.dat", "fig8.dat", "traj.dat", "params.gp",
                                            "gnuplot.err", "geom.dat", "heads.dat"};
        char p[4200];
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
            snprintf(p, sizeof p, "%s/%s", work, files[i]);
            unlink(p);
        }
        rmdir(work);
    }
    free(tdir);
    plot_list_free(formats);
    plot_list_free(kinds);
    return rc;
}

int dora_plot_figures(const char *results_h5, const dora_plot_opts *o, dora_plot_report *rep,
                      dora_err *err)
{
    dora_plot_study s;
    memset(rep, 0, sizeof *rep);
    if (plot_open(&s, results_h5, NULL, o->stats, 0, err) != 0)
        return -1;
    if (o->regs && regs_fit(&s, o->regs, o->nregs)) {
        s.regs = o->regs;
        s.nregs = o->nregs;
    } else if (own_regs(&s, o->stats, err) != 0) { /* none lent, or not this file's */
        dora_plot_release(&s);
        return -1;
    }
    int rc = dora_plot_draw(&s, o, rep, err);
    dora_plot_release(&s);
    return rc;
}
