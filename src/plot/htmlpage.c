/* htmlpage.c - the HTML report of a results file (plot.h, dora_report_write): the runs, the
 * regression beside the paper's numbers, each module kind's figures as inline
 * SVG, and the per-layer values at the final step. */
#define _GNU_SOURCE
#include "dora/plot.h"
#include "dora/spectral.h"
#include "dora/version.h"
#include "plot/draw.h"
#include "plot/html.h"
#include "core/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the paper's numbers ------------------------------------------------- */

/* Pearson r of dD and dM for the query projection, n = 24 (6 layers x 4 steps),
 * with Fisher-z 95% intervals (REFERENCE.md section 4; the paper's Fig. 2). */
static const struct paper_r {
    const char *method;
    double r, lo, hi;
} paper[] = {{"ft", -0.62, -0.82, -0.29}, {"lora", 0.83, 0.64, 0.92}, {"dora", -0.31, -0.63, 0.11}};

static const struct paper_r *paper_for(const dora_regression *g)
{
    if (strcmp(g->kind, "q_proj") && strcmp(g->kind, "query") && strcmp(g->kind, "q"))
        return NULL;
    for (size_t i = 0; i < sizeof paper / sizeof *paper; i++)
        if (strcmp(paper[i].method, g->method) == 0)
            return &paper[i];
    return NULL;
}

/* ---- the sections -------------------------------------------------------- */

static const char style[] =
    "body{font-family:sans-serif;margin:1.5em auto;max-width:1800px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left;vertical-align:top}"
    "th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "figure{margin:1em 0}svg{max-width:100%;height:auto;display:block}"
    "figcaption{font-size:0.9em;color:#444}code{font-size:0.95em;overflow-wrap:anywhere}"
    "p.note{color:#444;max-width:60em}";

static void write_head(FILE *f, const char *input)
{
    char *base = util_basename(input);
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n", f);
    fputs("<meta name=\"generator\" content=\"dora-analyze report " DORA_VERSION "\">\n", f);
    fputs("<title>dora-analyze report: ", f);
    html_text(f, base ? base : input);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n", style);
    fputs("<h1>How fine-tuning changed the weights: ", f);
    html_text(f, base ? base : input);
    fputs("</h1>\n<p class=\"note\">Results file <code>", f);
    html_text(f, input);
    fputs("</code>. ΔM is the mean absolute change of the row norms (the DoRA paper's Eq. 3), "
          "ΔD the mean of 1 − cos between each row and its pre-trained row (Eq. 4). Layers are "
          "numbered as the file numbers them (the number in the tensor name, from 0); steps are "
          "the training steps of the checkpoints.</p>\n",
          f);
    free(base);
}

static void write_runs(FILE *f, const dora_plot_study *s)
{
    fputs("<h2 id=\"runs\">Runs</h2>\n<table class=\"runs\">\n<tr><th>run</th><th>method</th>"
          "<th>source</th><th>base</th><th>steps</th><th>modules</th></tr>\n",
          f);
    for (size_t i = 0; i < s->nruns; i++) {
        const dora_result *r = &s->runs[i];
        fputs("<tr>", f);
        html_elem(f, "td", r->name);
        html_elem(f, "td", r->method);
        fputs("<td><code>", f);
        html_text(f, r->source_path);
        fputs("</code></td><td><code>", f);
        html_text(f, r->base_path);
        fputs("</code></td><td class=\"steps\">", f);
        for (size_t t = 0; t < r->nsteps; t++)
            fprintf(f, "%s%lld", t ? ", " : "", (long long)r->steps[t]);
        fprintf(f, "</td><td class=\"num\">%zu</td></tr>\n", r->nmodules);
    }
    fputs("</table>\n", f);
}

/* "r [lo, hi]" or NA */
static void r_cell(FILE *f, double r, int defined, int ci, double lo, double hi)
{
    fputs("<td class=\"num\">", f);
    if (!defined)
        fputs("NA", f);
    else if (ci)
        fprintf(f, "%+.3f [%+.2f, %+.2f]", r, lo, hi);
    else
        fprintf(f, "%+.3f", r);
    fputs("</td>", f);
}

static void write_regression(FILE *f, const dora_plot_study *s)
{
    fputs("<h2 id=\"regression\">ΔM against ΔD</h2>\n<p class=\"note\">Least squares ΔM = "
          "intercept + slope · ΔD and Pearson r over every (layer, step) point of a run and "
          "module kind, with its Fisher-z 95% interval, which treats the points as independent; "
          "they are not (each layer appears at every step), so the layer bootstrap beside it "
          "resamples whole layers, each with all its steps (percentile 95%, B replicates); the "
          "within-step r after centring each step's points on their mean, with its layer "
          "bootstrap interval; Spearman's ρ of the same points. The paper reports r for the "
          "query projection only: FT −0.62, LoRA +0.83, DoRA −0.31 (n = 24), with Fisher-z "
          "intervals; DoRA's includes 0.</p>\n<table class=\"regression\">\n<tr><th>run</th>"
          "<th>method</th><th>module kind</th><th>n</th><th>layers</th><th>slope</th>"
          "<th>intercept</th><th>r [Fisher 95%]</th><th>within-step r [layer bootstrap 95%]</th>"
          "<th>r: layer bootstrap 95%</th><th>Spearman ρ</th><th>paper r [Fisher 95%]</th></tr>\n",
          f);
    for (size_t i = 0; i < s->nregs; i++) {
        const dora_regression *g = &s->regs[i];
        fputs("<tr>", f);
        html_elem(f, "td", g->run);
        html_elem(f, "td", g->method);
        html_elem(f, "td", g->kind);
        fprintf(f, "<td class=\"num\">%lld</td><td class=\"num\">%lld</td>", g->n, g->layers);
        html_num(f, "%.6g", g->slope, g->defined);
        html_num(f, "%.6g", g->intercept, g->defined);
        r_cell(f, g->r, g->defined, g->fisher_defined, g->fisher_ci[0], g->fisher_ci[1]);
        r_cell(f, g->within_r, g->within_defined, g->within_boot_defined, g->within_boot_ci[0],
               g->within_boot_ci[1]);
        if (g->boot_defined)
            fprintf(f, "<td class=\"num\">[%+.2f, %+.2f] (B = %lld)</td>", g->boot_ci[0],
                    g->boot_ci[1], g->bootstrap);
        else
            fputs("<td class=\"num\">NA</td>", f);
        html_num(f, "%+.3f", g->spearman_rho, g->spearman_defined);
        const struct paper_r *p = paper_for(g);
        if (p)
            r_cell(f, p->r, 1, 1, p->lo, p->hi);
        else
            fputs("<td>–</td>", f);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

/* ---- one module kind ------------------------------------------------------ */

static int write_figures(FILE *f, const char *figdir, const char *kind, size_t ki, dora_err *err)
{
    static const char *const caption[PLOT_NFIGS] = {
        "ΔD (x) against ΔM (y), a panel per run, a point per (layer, step): the paper's Fig. 2 "
        "(query) and Fig. 7 (value).",
        "ΔM and ΔD by layer at each run's final step: the paper's Fig. 8.",
        "ΔM and ΔD against the training step, a line per layer."};
    for (int k = 0; k < PLOT_NFIGS; k++) {
        char path[4200], prefix[64];
        snprintf(path, sizeof path, "%s/%s_%s.svg", figdir, plot_fig_names[k], kind);
        snprintf(prefix, sizeof prefix, "k%zu-%s-", ki, plot_fig_names[k]);
        fprintf(f, "<figure class=\"%s\">\n", plot_fig_names[k]);
        if (html_inline_svg(f, path, prefix, err) != 0)
            return -1;
        fputs("<figcaption>", f);
        html_text(f, kind);
        fprintf(f, ": %s</figcaption>\n</figure>\n", caption[k]);
    }
    return 0;
}

/* The rows of the per-layer table: module J of run pick P. */
typedef struct layer_row {
    int32_t layer;
    const char *module;
} layer_row;

static int by_row(const void *a, const void *b)
{
    const layer_row *x = a, *y = b;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    return util_natural_cmp(x->module, y->module);
}

/* The value of MODULE in the pick P at its final step, as two cells (empty when
 * the run has no such module). */
static void layer_cells(FILE *f, const plot_pick *p, const char *module)
{
    const dora_result *r = p->run;
    for (size_t j = 0; j < p->n; j++) {
        size_t l = p->mods[j];
        if (strcmp(r->modules[l], module) == 0) {
            size_t at = (r->nsteps - 1) * r->nmodules + l;
            html_num(f, "%.6g", r->delta_m[at], 1);
            html_num(f, "%.6g", r->delta_d[at], 1);
            return;
        }
    }
    fputs("<td></td><td></td>", f);
}

/* The table of dM and dD at each run's final step, a row per module of KIND (by
 * layer), a pair of columns per run with modules of it. */
static int write_layers(FILE *f, const plot_pick *picks, size_t np, const char *kind)
{
    size_t n = 0;
    for (size_t i = 0; i < np; i++)
        n += picks[i].n;
    layer_row *rows = malloc((n + 1) * sizeof *rows);
    if (!rows)
        return -1;
    n = 0;
    for (size_t i = 0; i < np; i++)
        for (size_t j = 0; j < picks[i].n; j++)
            rows[n++] = (layer_row){plot_layer_of(&picks[i], j),
                                    picks[i].run->modules[picks[i].mods[j]]};
    qsort(rows, n, sizeof *rows, by_row);
    fputs("<h3>Per layer at the final step: ", f);
    html_text(f, kind);
    fputs("</h3>\n<table class=\"layers\" data-kind=\"", f);
    html_text(f, kind);
    fputs("\">\n<tr><th rowspan=\"2\">layer</th><th rowspan=\"2\">module</th>", f);
    for (size_t i = 0; i < np; i++) {
        const dora_result *r = picks[i].run;
        fputs("<th colspan=\"2\">", f);
        html_text(f, r->name);
        fprintf(f, " (step %lld)</th>", (long long)r->steps[r->nsteps - 1]);
    }
    fputs("</tr>\n<tr>", f);
    for (size_t i = 0; i < np; i++)
        fputs("<th>ΔM</th><th>ΔD</th>", f);
    fputs("</tr>\n", f);
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && strcmp(rows[k].module, rows[k - 1].module) == 0 &&
            rows[k].layer == rows[k - 1].layer)
            continue;
        fprintf(f, "<tr><td class=\"num\">%d</td>", (int)rows[k].layer);
        html_elem(f, "td", rows[k].module);
        for (size_t i = 0; i < np; i++)
            layer_cells(f, &picks[i], rows[k].module);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
    free(rows);
    return 0;
}

static int write_kind(FILE *f, const dora_plot_study *s, const char *kind, size_t ki,
                      const char *figdir, dora_err *err)
{
    plot_pick *picks = calloc(s->nruns + 1, sizeof *picks);
    if (!picks)
        return dora_errf(err, "out of memory");
    size_t np = 0;
    int rc = 0;
    for (size_t i = 0; i < s->nruns && rc == 0; i++) {
        if (plot_pick_modules(&s->runs[i], kind, &picks[np]) != 0)
            rc = dora_errf(err, "out of memory");
        else if (picks[np].n > 0)
            np++;
        else
            free(picks[np].mods);
    }
    if (rc == 0) {
        fprintf(f, "<h2 id=\"kind-%zu\">Module kind ", ki);
        html_text(f, kind);
        fputs("</h2>\n", f);
        rc = write_figures(f, figdir, kind, ki, err);
    }
    if (rc == 0 && write_layers(f, picks, np, kind) != 0)
        rc = dora_errf(err, "out of memory");
    for (size_t i = 0; i < np; i++)
        free(picks[i].mods);
    free(picks);
    return rc;
}

/* ---- the page ------------------------------------------------------------- */

/* Every module kind of the regressions, in their order, comma-separated; NULL
 * when out of memory. */
static char *all_kinds(const dora_plot_study *s)
{
    size_t len = 1;
    for (size_t i = 0; i < s->nregs; i++)
        len += strlen(s->regs[i].kind) + 1;
    char *v = calloc(len, 1);
    for (size_t i = 0; v && i < s->nregs; i++) {
        size_t j = 0;
        while (j < i && strcmp(s->regs[j].kind, s->regs[i].kind) != 0)
            j++;
        if (j == i) {
            if (*v)
                strcat(v, ",");
            strcat(v, s->regs[i].kind);
        }
    }
    return v;
}

/* The page of S with the figures of FIGDIR into a buffer; *page owned by the caller. */
static int build_page(const dora_plot_study *s, char *const *kinds, const char *figdir,
                      const char *spec_path, const dora_spectrum *spec, char **page, size_t *len,
                      dora_err *err)
{
    FILE *f = open_memstream(page, len);
    if (!f)
        return dora_errf(err, "out of memory");
    write_head(f, s->path);
    fputs("<p class=\"note\">Contents: <a href=\"#runs\">runs</a>, <a href=\"#regression\">"
          "regression</a>",
          f);
    for (size_t k = 0; kinds[k]; k++) {
        fprintf(f, ", <a href=\"#kind-%zu\">", k);
        html_text(f, kinds[k]);
        fputs("</a>", f);
    }
    if (spec)
        fputs(", <a href=\"#spectrum\">spectrum</a>", f);
    fputs(".</p>\n", f);
    write_runs(f, s);
    write_regression(f, s);
    int rc = 0;
    for (size_t k = 0; kinds[k] && rc == 0; k++)
        rc = write_kind(f, s, kinds[k], k, figdir, err);
    if (rc == 0 && spec && html_spectrum(f, spec_path, spec) != 0)
        rc = dora_errf(err, "out of memory");
    fputs("</body>\n</html>\n", f);
    if (fclose(f) != 0 && rc == 0)
        rc = dora_errf(err, "out of memory");
    return rc;
}

/* May OUT be written, given that INPUT is read? 0, or -1 with ERR (a usage error). */
static int check_output(const char *input, const char *out, int force, dora_err *err)
{
    if (util_same_output(input, out))
        return dora_errf(err, "refusing to write '%s': it is the input '%s' (the same file)", out,
                         input);
    struct stat sb;
    if (stat(out, &sb) != 0)
        return 0; /* a new file, or a dangling symlink the rename replaces */
    if (!S_ISREG(sb.st_mode))
        return dora_errf(err, "refusing to write '%s': it exists and is not a regular file", out);
    /* ours: the generator line near the top (write_head) */
    char head[512] = {0};
    dora_err ignore = {{0}, 0};
    int fd = util_open_regular(out, &ignore), ours = 0;
    if (fd >= 0) {
        ssize_t got = read(fd, head, sizeof head - 1);
        ours = got > 0 && strstr(head, "<meta name=\"generator\" content=\"dora-analyze report");
        close(fd);
    }
    if (!ours && !force)
        return dora_errf(err, "refusing to replace '%s': it exists and is not a report of "
                              "dora-analyze (--force replaces it)",
                         out);
    return 0;
}

/* Draw every kind's figures as SVG into a private folder, build the page from
 * them, remove the folder. */
static int draw_and_build(const dora_plot_study *s, const char *kinds, const dora_report_opts *o,
                          const dora_spectrum *spec, dora_plot_report *rep, char **page,
                          size_t *len, dora_err *err)
{
    char figdir[] = "/tmp/dora-report-XXXXXX";
    if (!mkdtemp(figdir))
        return dora_errf(err, "cannot create a temporary folder: %s", strerror(errno));
    dora_plot_opts po = {kinds, "svg", figdir, o->templates, 0, NULL, NULL, 0};
    int rc = dora_plot_draw(s, &po, rep, err);
    size_t nk = 0;
    char **kv = plot_list_split(kinds, &nk);
    if (!kv && rc == 0)
        rc = dora_errf(err, "out of memory");
    if (rc == 0)
        rc = build_page(s, kv, figdir, o->spectrum, spec, page, len, err);
    for (size_t k = 0; k < nk; k++)
        for (int fi = 0; fi < PLOT_NFIGS; fi++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%s_%s.svg", figdir, plot_fig_names[fi], kv[k]);
            unlink(p);
        }
    rmdir(figdir);
    plot_list_free(kv);
    return rc;
}

int dora_report_write(const char *results_h5, const char *out, const dora_report_opts *o,
                      dora_plot_report *rep, dora_err *err)
{
    memset(rep, 0, sizeof *rep);
    if (check_output(results_h5, out, o->force, err) != 0 ||
        (o->spectrum && util_same_output(o->spectrum, out) &&
         dora_errf(err, "refusing to write '%s': it is the input '%s' (the same file)", out,
                   o->spectrum))) {
        rep->refused = 1;
        return -1;
    }
    dora_spectrum spec;
    if (o->spectrum && dora_spectrum_read(o->spectrum, &spec, err) != 0)
        return -1;
    dora_plot_study s;
    if (dora_plot_open_stats(&s, results_h5, NULL, &o->stats, err) != 0) {
        if (o->spectrum)
            dora_spectrum_release(&spec);
        return -1;
    }
    char *kinds = o->kinds ? strdup(o->kinds) : all_kinds(&s);
    char *page = NULL;
    size_t len = 0;
    int rc = kinds ? draw_and_build(&s, kinds, o, o->spectrum ? &spec : NULL, rep, &page, &len,
                                    err)
                   : dora_errf(err, "out of memory");
    if (o->spectrum)
        dora_spectrum_release(&spec);
    util_out uo;
    if (rc == 0 && (rc = util_out_begin(&uo, out, err)) == 0) {
        if ((rc = util_out_write(&uo, page, len, err)) != 0)
            util_out_abort(&uo);
        else
            rc = util_out_commit(&uo, err);
    }
    free(page);
    free(kinds);
    dora_plot_release(&s);
    return rc;
}
