/* cmd_plot.c - `dora-analyze plot`: the paper's figures from a results file,
 * drawn by gnuplot from the templates in plots/, and the regression table. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/analyze.h"
#include "dora/h5in.h"
#include "dora/stats.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char plot_help[] =
    "usage: dora-analyze plot RESULT.h5 -o DIR [options]\n"
    "       dora-analyze plot RESULT.h5 --stats[=tsv|json] --no-figures [--modules K1,K2]\n"
    "\n"
    "Draw, for each module kind, the paper's figures from an `analyze` results file:\n"
    "  DIR/fig2_KIND.FMT  dD (x) vs dM (y), one panel per run, one point per (layer,\n"
    "                     step): colour = layer, marker = step, least-squares line,\n"
    "                     Pearson r, within-step r and slope in each panel (Fig. 2/7)\n"
    "  DIR/fig8_KIND.FMT  dM and dD by layer at each run's final step, runs overlaid\n"
    "                     (Fig. 8)\n"
    "gnuplot draws them (templates in ../share/dora-analyze/plots or ../plots\n"
    "beside the program, or in $DORA_PLOTS_DIR).\n"
    "\n"
    "options:\n"
    "  -o, --output DIR      folder for the figures (created if missing)\n"
    "  --modules K1,K2       module kinds (default: the query and value projections\n"
    "                        found: q_proj, v_proj, query, value, q, v)\n"
    "  --runs R1,R2          runs and their panel order (default: all, in file order)\n"
    "  --format F1,F2        png, pdf, svg (default: png,pdf)\n"
    "  --stats[=tsv|json]    print the regression table on stdout (default tsv; the\n"
    "                        module kinds of --modules only, when given)\n"
    "  --no-figures          only the table (with --stats)\n"
    "  -h, --help            this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or gnuplot failure, 2 usage error\n";

/* Split "a,b,c" into a NULL-terminated array of newly allocated strings. */
static char **split_list(const char *s, size_t *n)
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
        if (len > 0 && !(v[(*n)++] = strndup(p, len)))
            return NULL;
        if (!e)
            break;
        p = e + 1;
    }
    return v;
}

static void free_list(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* gnuplot single-quoted string: only ' needs doubling. */
static void gp_str(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        if (*s != '\n')
            fputc(*s, f);
    }
    fputc('\'', f);
}

/* Templates: $DORA_PLOTS_DIR; else, beside the executable's folder (PREFIX/bin
 * or the source tree's bin/), share/dora-analyze/plots (an installed tree, which
 * may have been moved) or plots (the source tree); else the plots/ folder of the
 * tree it was built in. */
static char *templates_dir(void)
{
    const char *env = getenv("DORA_PLOTS_DIR");
    if (env && *env)
        return strdup(env);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        static const char *const beside[] = {"share/dora-analyze/plots", "plots"};
        char *bin = util_dirname(exe);
        char *top = bin ? util_dirname(bin) : NULL;
        for (size_t i = 0; top && i < sizeof beside / sizeof *beside; i++) {
            char *p = util_join(top, beside[i]);
            char *probe = p ? util_join(p, "fig2.gp") : NULL;
            int found = probe && util_is_file(probe);
            free(probe);
            if (found) {
                free(bin);
                free(top);
                return p;
            }
            free(p);
        }
        free(bin);
        free(top);
    }
#ifdef DORA_DEFAULT_PLOTS_DIR
    return strdup(DORA_DEFAULT_PLOTS_DIR);
#else
    return strdup("plots");
#endif
}

/* Run "gnuplot PARAMS TEMPLATE"; anything on its stderr is a failure. */
static int run_gnuplot(const char *params, const char *tmpl, const char *errpath, dora_err *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char *argv[] = {"gnuplot", (char *)params, (char *)tmpl, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == ENOENT)
        return dora_errf(err, "gnuplot is not installed: install it with 'apt-get install "
                              "gnuplot-nox'");
    if (rc != 0)
        return dora_errf(err, "cannot run gnuplot: %s", strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return dora_errf(err, "waiting for gnuplot: %s", strerror(errno));
    char *text = NULL;
    size_t len = 0;
    dora_err ignore;
    util_read_file(errpath, 1 << 16, &text, &len, &ignore);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && len == 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        rc = dora_errf(err, "gnuplot is not installed: install it with 'apt-get install "
                            "gnuplot-nox'");
    else if (!ok)
        rc = dora_errf(err, "gnuplot failed on '%s' (%s %d): %.600s", tmpl,
                       WIFEXITED(status) ? "exit status" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                       text ? text : "");
    free(text);
    return ok ? 0 : -1;
}

/* Axis multiplier and label: values below 0.01 are shown x 10^k. */
static void axis_scale(double maxabs, const char *sym, double *mult, char *label, size_t n)
{
    int e = maxabs > 0 ? (int)floor(log10(maxabs)) : 0;
    if (e <= -2) {
        *mult = pow(10.0, -e);
        snprintf(label, n, "%s (×10^{%d})", sym, e);
    } else {
        *mult = 1;
        snprintf(label, n, "%s", sym);
    }
}

typedef struct pick {
    const dora_result *run;
    size_t *mods; /* indices of the modules of the kind, by layer */
    size_t n;
} pick;

static int layer_cmp_ctx;
static const dora_result *layer_cmp_run;
static int by_layer(const void *a, const void *b)
{
    (void)layer_cmp_ctx;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int32_t li = layer_cmp_run->layer[i], lj = layer_cmp_run->layer[j];
    if (li != lj)
        return li < lj ? -1 : 1;
    return util_natural_cmp(layer_cmp_run->modules[i], layer_cmp_run->modules[j]);
}

static int pick_modules(const dora_result *r, const char *kind, pick *p)
{
    p->run = r;
    p->n = 0;
    p->mods = calloc(r->nmodules + 1, sizeof *p->mods);
    if (!p->mods)
        return -1;
    for (size_t l = 0; l < r->nmodules; l++) {
        char *k = dora_module_kind(r->modules[l]);
        if (!k)
            return -1;
        if (strcmp(k, kind) == 0)
            p->mods[p->n++] = l;
        free(k);
    }
    layer_cmp_run = r;
    qsort(p->mods, p->n, sizeof *p->mods, by_layer);
    return 0;
}

static const dora_regression *find_reg(const dora_regression *g, size_t n, const char *run,
                                       const char *kind)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(g[i].run, run) == 0 && strcmp(g[i].kind, kind) == 0)
            return &g[i];
    return NULL;
}

static const char *method_label(const char *m)
{
    return strcmp(m, "ft") == 0 ? "FT" : strcmp(m, "lora") == 0 ? "LoRA" : "DoRA";
}

static char *model_name(const dora_result *r)
{
    char *b = util_basename(r->base_path);
    if (b && util_has_suffix(b, ".safetensors"))
        b[strlen(b) - strlen(".safetensors")] = '\0';
    return b;
}

/* Write data + parameters for one kind and draw both figures in every format. */
static int draw_kind(const char *kind, pick *picks, size_t np, const dora_regression *g,
                     size_t ng, char *const *formats, const char *outdir, const char *tdir,
                     const char *work, int *drawn, dora_err *err)
{
    char dat2[4096], dat8[4096], par[4096], errp[4096];
    snprintf(dat2, sizeof dat2, "%s/fig2.dat", work);
    snprintf(dat8, sizeof dat8, "%s/fig8.dat", work);
    snprintf(par, sizeof par, "%s/params.gp", work);
    snprintf(errp, sizeof errp, "%s/gnuplot.err", work);
    FILE *f2 = fopen(dat2, "w"), *f8 = fopen(dat8, "w");
    if (!f2 || !f8) {
        if (f2)
            fclose(f2);
        if (f8)
            fclose(f8);
        return dora_errf(err, "'%s': cannot write the plot data: %s", work, strerror(errno));
    }
    size_t nlayers = 0, nsteps = 0;
    double maxm8 = 0, maxd8 = 0;
    for (size_t i = 0; i < np; i++) {
        const dora_result *r = picks[i].run;
        size_t L = r->nmodules, S = r->nsteps;
        if (picks[i].n > nlayers)
            nlayers = picks[i].n;
        if (S > nsteps)
            nsteps = S;
        for (size_t s = 0; s < S; s++)
            for (size_t j = 0; j < picks[i].n; j++) {
                size_t l = picks[i].mods[j];
                fprintf(f2, "%.17g %.17g %zu %zu %d\n", r->delta_d[s * L + l], r->delta_m[s * L + l],
                        j, s + 1, s + 1 == S);
            }
        for (size_t j = 0; j < picks[i].n; j++) {
            size_t l = picks[i].mods[j];
            double m = r->delta_m[(S - 1) * L + l], d = r->delta_d[(S - 1) * L + l];
            fprintf(f8, "%zu %.17g %.17g\n", j, m, d);
            maxm8 = fmax(maxm8, fabs(m));
            maxd8 = fmax(maxd8, fabs(d));
        }
        fputs("\n\n", f2);
        fputs("\n\n", f8);
    }
    int bad = ferror(f2) || ferror(f8);
    bad |= fclose(f2) != 0;
    bad |= fclose(f8) != 0;
    if (bad)
        return dora_errf(err, "'%s': cannot write the plot data", work);

    char *model = model_name(picks[0].run);
    for (size_t fi = 0; formats[fi]; fi++) {
        for (int fig = 2; fig <= 8; fig += 6) {
            char out[4096], tmpl[4096];
            snprintf(out, sizeof out, "%s/fig%d_%s.%s", outdir, fig, kind, formats[fi]);
            /* gnuplot writes into our private folder beside the figure: nothing can be
               planted at that name; renamed over the figure when gnuplot succeeds */
            util_out o;
            if (util_out_begin(&o, out, err) != 0) {
                free(model);
                return -1;
            }
            const char *tmp = o.tmp;
            snprintf(tmpl, sizeof tmpl, "%s/fig%d.gp", tdir, fig);
            FILE *p = fopen(par, "w");
            if (!p) {
                util_out_abort(&o);
                free(model);
                return dora_errf(err, "'%s': cannot write: %s", par, strerror(errno));
            }
            fprintf(p, "term_kind = ");
            gp_str(p, formats[fi]);
            fprintf(p, "\noutfile = ");
            gp_str(p, tmp);
            fprintf(p, "\ndatafile = ");
            gp_str(p, fig == 2 ? dat2 : dat8);
            char title[1024];
            if (fig == 2)
                snprintf(title, sizeof title, "ΔD vs ΔM, %s, model %s", kind, model ? model : "?");
            else
                snprintf(title, sizeof title, "ΔM and ΔD by layer at the final step, %s, model %s",
                         kind, model ? model : "?");
            fprintf(p, "\nmain_title = ");
            gp_str(p, title);
            fprintf(p, "\nnruns = %zu\nnlayers = %zu\nnsteps = %zu\n", np, nlayers, nsteps);
            fprintf(p, "array run_title[%zu]\narray xs[%zu]\narray ys[%zu]\narray xlab[%zu]\n"
                       "array ylab[%zu]\narray slope[%zu]\narray icpt[%zu]\narray corr[%zu]\n"
                       "array defined[%zu]\narray wcorr[%zu]\narray wdefined[%zu]\n"
                       "array npts[%zu]\narray step_label[%zu]\n",
                    np, np, np, np, np, np, np, np, np, np, np, np, nsteps);
            for (size_t s = 1; s <= nsteps; s++) {
                char lab[64];
                if (s == nsteps)
                    snprintf(lab, sizeof lab, "Final step");
                else
                    snprintf(lab, sizeof lab, "Inter step %zu", s);
                fprintf(p, "step_label[%zu] = ", s);
                gp_str(p, lab);
                fputc('\n', p);
            }
            for (size_t i = 0; i < np; i++) {
                const dora_result *r = picks[i].run;
                const dora_regression *rg = find_reg(g, ng, r->name, kind);
                double mx = 0, my = 0, xm, ym;
                for (size_t s = 0; s < r->nsteps; s++)
                    for (size_t j = 0; j < picks[i].n; j++) {
                        size_t l = picks[i].mods[j];
                        mx = fmax(mx, fabs(r->delta_d[s * r->nmodules + l]));
                        my = fmax(my, fabs(r->delta_m[s * r->nmodules + l]));
                    }
                char xl[128], yl[128], rt[512];
                axis_scale(mx, "ΔD", &xm, xl, sizeof xl);
                axis_scale(my, "ΔM", &ym, yl, sizeof yl);
                snprintf(rt, sizeof rt, "%s (%s)", method_label(r->method), r->name);
                fprintf(p, "run_title[%zu] = ", i + 1);
                gp_str(p, rt);
                fprintf(p, "\nxlab[%zu] = ", i + 1);
                gp_str(p, xl);
                fprintf(p, "\nylab[%zu] = ", i + 1);
                gp_str(p, yl);
                fprintf(p, "\nxs[%zu] = %.17g\nys[%zu] = %.17g\n", i + 1, xm, i + 1, ym);
                fprintf(p, "slope[%zu] = %.17g\nicpt[%zu] = %.17g\ncorr[%zu] = %.17g\n", i + 1,
                        rg ? rg->slope : 0.0, i + 1, rg ? rg->intercept : 0.0, i + 1,
                        rg ? rg->r : 0.0);
                fprintf(p, "defined[%zu] = %d\nwcorr[%zu] = %.17g\nwdefined[%zu] = %d\n"
                           "npts[%zu] = %lld\n",
                        i + 1, rg ? rg->defined : 0, i + 1, rg ? rg->within_r : 0.0, i + 1,
                        rg ? rg->within_defined : 0, i + 1, rg ? rg->n : 0LL);
            }
            double ms, ds;
            char ml[128], dl[128];
            axis_scale(maxm8, "ΔM", &ms, ml, sizeof ml);
            axis_scale(maxd8, "ΔD", &ds, dl, sizeof dl);
            fprintf(p, "mscale = %.17g\ndscale = %.17g\nmlab = ", ms, ds);
            gp_str(p, ml);
            fprintf(p, "\ndlab = ");
            gp_str(p, dl);
            fputc('\n', p);
            if (fclose(p) != 0) {
                util_out_abort(&o);
                free(model);
                return dora_errf(err, "'%s': cannot write", par);
            }
            if (run_gnuplot(par, tmpl, errp, err) != 0) {
                util_out_abort(&o);
                free(model);
                return -1;
            }
            if (!util_is_file(tmp)) {
                util_out_abort(&o);
                free(model);
                return dora_errf(err, "'%s': gnuplot wrote no file", out);
            }
            if (util_out_commit(&o, err) != 0) {
                free(model);
                return -1;
            }
            (*drawn)++;
        }
    }
    free(model);
    return 0;
}

static void print_stats(const dora_regression *g, size_t n, int json)
{
    if (json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            printf("%s\n  {\"run\": \"", i ? "," : "");
            for (const char *c = g[i].run; *c; c++) {
                if (*c == '"' || *c == '\\')
                    putchar('\\');
                if ((unsigned char)*c >= 0x20)
                    putchar(*c);
            }
            printf("\", \"method\": \"%s\", \"module_kind\": \"%s\", \"n\": %lld, "
                   "\"layers\": %lld, ",
                   g[i].method, g[i].kind, g[i].n, g[i].layers);
            if (g[i].defined)
                printf("\"slope\": %.17g, \"intercept\": %.17g, \"pearson_r\": %.17g, ",
                       g[i].slope, g[i].intercept, g[i].r);
            else
                printf("\"slope\": null, \"intercept\": null, \"pearson_r\": null, ");
            if (g[i].within_defined)
                printf("\"within_step_r\": %.17g}", g[i].within_r);
            else
                printf("\"within_step_r\": null}");
        }
        printf("\n]\n");
        return;
    }
    printf("run\tmethod\tmodule_kind\tn\tlayers\tslope\tintercept\tpearson_r\twithin_step_r\n");
    for (size_t i = 0; i < n; i++) {
        printf("%s\t%s\t%s\t%lld\t%lld\t", g[i].run, g[i].method, g[i].kind, g[i].n, g[i].layers);
        if (g[i].defined)
            printf("%.17g\t%.17g\t%.17g\t", g[i].slope, g[i].intercept, g[i].r);
        else
            printf("NA\tNA\tNA\t");
        if (g[i].within_defined)
            printf("%.17g\n", g[i].within_r);
        else
            printf("NA\n");
    }
}

int cmd_plot(int argc, char **argv)
{
    enum { OPT_MODULES = 256, OPT_RUNS, OPT_FORMAT, OPT_STATS, OPT_NOFIG };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"runs", required_argument, NULL, OPT_RUNS},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"stats", optional_argument, NULL, OPT_STATS},
        {"no-figures", no_argument, NULL, OPT_NOFIG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *outdir = NULL, *mods_arg = NULL, *runs_arg = NULL, *fmt_arg = "png,pdf";
    int stats = 0, json = 0, figures = 1, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            outdir = optarg;
            break;
        case OPT_MODULES:
            mods_arg = optarg;
            break;
        case OPT_RUNS:
            runs_arg = optarg;
            break;
        case OPT_FORMAT:
            fmt_arg = optarg;
            break;
        case OPT_STATS:
            stats = 1;
            if (optarg && strcmp(optarg, "json") == 0)
                json = 1;
            else if (optarg && strcmp(optarg, "tsv") != 0)
                return cli_usage_error("plot", "--stats takes tsv or json, not '%s'", optarg);
            break;
        case OPT_NOFIG:
            figures = 0;
            break;
        case 'h':
            fputs(plot_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("plot", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("plot", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("plot", "expected exactly one RESULT.h5");
    if (figures && !outdir)
        return cli_usage_error("plot", "-o DIR is required (or --stats --no-figures)");
    if (!figures && !stats)
        return cli_usage_error("plot", "--no-figures without --stats leaves nothing to do");
    size_t nfmt = 0, nwant = 0, nkinds = 0;
    char **formats = split_list(fmt_arg, &nfmt), **want = NULL, **kinds = NULL;
    for (size_t i = 0; formats && i < nfmt; i++)
        if (strcmp(formats[i], "png") && strcmp(formats[i], "pdf") && strcmp(formats[i], "svg")) {
            int r = cli_usage_error("plot", "unknown format '%s' (png, pdf, svg)", formats[i]);
            free_list(formats);
            return r;
        }
    if (!formats || nfmt == 0) {
        free_list(formats);
        return cli_usage_error("plot", "--format needs at least one of png, pdf, svg");
    }

    dora_err err = {{0}, 0};
    dora_result *all = NULL, *sel = NULL;
    size_t nall = 0, nsel = 0, ng = 0;
    dora_regression *g = NULL;
    pick *picks = NULL;
    char work[] = "/tmp/dora-plot-XXXXXX";
    int have_work = 0, status = EXIT_BAD_INPUT;
    char *tdir = NULL;

    {   /* a FIFO would hold HDF5's open() forever */
        int fd = util_open_regular(argv[optind], &err);
        if (fd < 0) {
            status = cli_fail(&err);
            goto done;
        }
        close(fd);
    }
    if (h5i_read(argv[optind], &all, &nall, &err) != 0) {
        status = cli_fail(&err);
        goto done;
    }
    sel = calloc(nall, sizeof *sel);
    if (!sel)
        goto oom;
    if (runs_arg) {
        want = split_list(runs_arg, &nwant);
        if (!want)
            goto oom;
        for (size_t i = 0; i < nwant; i++) {
            size_t j = 0;
            while (j < nall && strcmp(all[j].name, want[i]) != 0)
                j++;
            if (j == nall) {
                dora_errf(&err, "'%s': no run named '%s'", argv[optind], want[i]);
                status = cli_fail(&err);
                goto done;
            }
            sel[nsel++] = all[j]; /* shallow: all owns the data */
        }
    } else {
        memcpy(sel, all, nall * sizeof *sel);
        nsel = nall;
    }
    if (dora_regressions(sel, nsel, &g, &ng) != 0)
        goto oom;
    if (stats && mods_arg) { /* the table follows --modules too */
        size_t nk = 0, keep = 0;
        char **want_k = split_list(mods_arg, &nk);
        if (!want_k)
            goto oom;
        for (size_t i = 0; i < ng; i++) {
            int hit = 0;
            for (size_t k = 0; k < nk; k++)
                hit |= strcmp(g[i].kind, want_k[k]) == 0;
            if (hit) {
                dora_regression t = g[keep];
                g[keep++] = g[i];
                g[i] = t;
            }
        }
        free_list(want_k);
        print_stats(g, keep, json);
        if (cli_finish_stdout() != EXIT_OK)
            goto done;
    } else if (stats) {
        print_stats(g, ng, json);
        if (cli_finish_stdout() != EXIT_OK)
            goto done;
    }
    if (!figures) {
        status = EXIT_OK;
        goto done;
    }

    /* module kinds: asked for, or the query/value projections present */
    if (mods_arg) {
        kinds = split_list(mods_arg, &nkinds);
        if (!kinds)
            goto oom;
    } else {
        static const char *const qv[] = {"q_proj", "v_proj", "query", "value", "q", "v"};
        kinds = calloc(7, sizeof *kinds);
        if (!kinds)
            goto oom;
        for (size_t q = 0; q < 6; q++)
            for (size_t i = 0; i < ng; i++)
                if (strcmp(g[i].kind, qv[q]) == 0) {
                    if (!(kinds[nkinds++] = strdup(qv[q])))
                        goto oom;
                    break;
                }
        if (nkinds == 0) {
            dora_errf(&err, "'%s': no query or value projections (q_proj, v_proj, query, value); "
                            "choose module kinds with --modules",
                      argv[optind]);
            status = cli_fail(&err);
            goto done;
        }
    }
    {   /* no figure may replace the results file it is drawn from */
        cli_inputs in = {0};
        cli_inputs_add(&in, argv[optind]);
        int refused = EXIT_OK;
        for (size_t k = 0; k < nkinds && refused == EXIT_OK; k++)
            for (size_t fi = 0; formats[fi] && refused == EXIT_OK; fi++)
                for (int fig = 2; fig <= 8 && refused == EXIT_OK; fig += 6) {
                    char out[4096];
                    snprintf(out, sizeof out, "%s/fig%d_%s.%s", outdir, fig, kinds[k],
                             formats[fi]);
                    const char *same = cli_inputs_find(&in, out);
                    if (same)
                        refused = cli_usage_error("plot", "refusing to write '%s': it is the "
                                                          "input '%s' (the same file)",
                                                  out, same);
                }
        cli_inputs_release(&in);
        if (refused != EXIT_OK) {
            status = refused;
            goto done;
        }
    }
    cli_guard_signals();
    if (mkdir(outdir, 0777) != 0 && errno != EEXIST) {
        dora_errf(&err, "'%s': cannot create the output folder: %s", outdir, strerror(errno));
        status = cli_fail(&err);
        goto done;
    }
    if (!util_is_dir(outdir)) {
        dora_errf(&err, "'%s': not a folder", outdir);
        status = cli_fail(&err);
        goto done;
    }
    if (!(tdir = templates_dir()))
        goto oom;
    {
        char *probe = util_join(tdir, "fig2.gp");
        int found = probe && util_is_file(probe);
        free(probe);
        if (!found) {
            dora_errf(&err, "the gnuplot templates (fig2.gp, fig8.gp) are not in '%s'; set "
                            "DORA_PLOTS_DIR to the project's plots/ folder",
                      tdir);
            status = cli_fail(&err);
            goto done;
        }
    }
    if (!mkdtemp(work)) {
        dora_errf(&err, "cannot create a temporary folder: %s", strerror(errno));
        status = cli_fail(&err);
        goto done;
    }
    have_work = 1;
    picks = calloc(nsel, sizeof *picks);
    if (!picks)
        goto oom;
    int drawn = 0;
    for (size_t k = 0; k < nkinds; k++) {
        size_t np = 0;
        for (size_t i = 0; i < nsel; i++) {
            free(picks[np].mods);
            picks[np].mods = NULL;
            if (pick_modules(&sel[i], kinds[k], &picks[np]) != 0)
                goto oom;
            if (picks[np].n > 0)
                np++;
            else
                fprintf(stderr, "dora-analyze: note: run '%s' has no '%s' modules; left out of "
                                "its figures\n",
                        sel[i].name, kinds[k]);
        }
        if (np == 0) {
            dora_errf(&err, "'%s': no run has modules of kind '%s'", argv[optind], kinds[k]);
            status = cli_fail(&err);
            goto done;
        }
        if (draw_kind(kinds[k], picks, np, g, ng, formats, outdir, tdir, work, &drawn, &err) != 0) {
            status = cli_fail(&err);
            goto done;
        }
    }
    fprintf(stderr, "dora-analyze: wrote %d figure(s) to '%s'\n", drawn, outdir);
    status = EXIT_OK;
    goto done;
oom:
    dora_errf(&err, "out of memory");
    status = cli_fail(&err);
done:
    if (have_work) {
        char p[4200];
        const char *files[] = {"fig2.dat", "fig8.dat", "params.gp", "gnuplot.err"};
        for (size_t i = 0; i < 4; i++) {
            snprintf(p, sizeof p, "%s/%s", work, files[i]);
            unlink(p);
        }
        rmdir(work);
    }
    for (size_t i = 0; picks && i < nsel; i++)
        free(picks[i].mods);
    free(picks);
    free(tdir);
    dora_regressions_free(g, ng);
    for (size_t i = 0; i < nall; i++)
        dora_result_release(&all[i]);
    free(all);
    free(sel);
    free_list(formats);
    free_list(want);
    free_list(kinds);
    return status;
}
