/* cmd_plot.c - `dora-analyze plot`: the paper's figures from a results file
 * and the regression table. Options become a dora_plot_opts; the plot layer
 * (plot.h) reads, draws and writes the table; this file prints its notes and
 * chooses the exit status. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/plot.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char plot_help[] =
    "usage: dora-analyze plot RESULT.h5 -o DIR [options]\n"
    "       dora-analyze plot RESULT.h5 --stats[=tsv|json] --no-figures [--modules K1,K2]\n"
    "\n"
    "Draw, for each module kind, the paper's figures from an `analyze` results file:\n"
    "  DIR/fig2_KIND.FMT  dD (x) vs dM (y), one panel per run, one point per (layer,\n"
    "                     step): colour = layer, marker (beyond 5 steps: size) = step,\n"
    "                     least-squares line, Pearson r, within-step r and slope\n"
    "                     above each panel (Fig. 2/7)\n"
    "  DIR/fig8_KIND.FMT  dM and dD by layer at each run's final step, runs overlaid\n"
    "                     (Fig. 8)\n"
    "  DIR/trajectory_KIND.FMT  dM and dD against the training step, a line per\n"
    "                     layer, a pair of panels per run\n"
    "Layers are numbered as in the file (from 0), steps are the real step numbers.\n"
    "gnuplot draws them (templates in ../share/dora-analyze/plots or ../plots\n"
    "beside the program, or in $DORA_PLOTS_DIR).\n"
    "\n"
    "options:\n"
    "  -o, --output DIR      folder for the figures (created if missing)\n"
    "  --modules K1,K2       module kinds (default: the query and value projections\n"
    "                        found: q_proj, v_proj, query, value, q, v)\n"
    "  --runs R1,R2          runs and their panel order (default: all, in file order)\n"
    "  --format F1,F2        png, pdf, svg (default: png,pdf)\n"
    "  --overlay             fig. 2 with every run in one panel, coloured by run\n"
    "  --stats[=tsv|json]    print the regression table on stdout (default tsv; the\n"
    "                        module kinds of --modules only, when given)\n"
    "  --no-figures          only the table (with --stats)\n"
    "  --bootstrap B         replicates of the layer-cluster bootstrap behind the 95%\n"
    "                        intervals of r (100 to 1000000; default 10000)\n"
    "  -h, --help            this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or gnuplot failure, 2 usage error\n";

typedef struct plot_args {
    const char *input;
    dora_plot_opts opts;
    const char *runs;
    int stats, json, figures;
    dora_stats_opts boot; /* --bootstrap */
} plot_args;

/* Parse ARGV into A: -1 to go on, else the exit status (help or a usage error). */
static int parse_args(int argc, char **argv, plot_args *a)
{
    enum { OPT_MODULES = 256, OPT_RUNS, OPT_FORMAT, OPT_STATS, OPT_NOFIG, OPT_OVERLAY,
           OPT_BOOTSTRAP };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"runs", required_argument, NULL, OPT_RUNS},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"stats", optional_argument, NULL, OPT_STATS},
        {"no-figures", no_argument, NULL, OPT_NOFIG},
        {"overlay", no_argument, NULL, OPT_OVERLAY},
        {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *a = (plot_args){NULL, {NULL, "png,pdf", NULL, NULL, 0, NULL, NULL, 0}, NULL, 0, 0, 1, {0, 0}};
    int c, r;
    cli_seen seen = {{0}};
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        if ((r = cli_option_once(&seen, "plot", c, longopts)) >= 0)
            return r;
        switch (c) {
        case 'o': a->opts.outdir = optarg; break;
        case OPT_MODULES: a->opts.kinds = optarg; break;
        case OPT_RUNS: a->runs = optarg; break;
        case OPT_FORMAT: a->opts.formats = optarg; break;
        case OPT_STATS:
            a->stats = 1;
            if (optarg && strcmp(optarg, "json") == 0)
                a->json = 1;
            else if (optarg && strcmp(optarg, "tsv") != 0)
                return cli_usage_error("plot", "--stats takes tsv or json, not '%s'", optarg);
            break;
        case OPT_NOFIG: a->figures = 0; break;
        case OPT_OVERLAY: a->opts.overlay = 1; break;
        case OPT_BOOTSTRAP:
            if ((r = cli_parse_bootstrap("plot", optarg, &a->boot.bootstrap)) >= 0)
                return r;
            break;
        case 'h':
            fputs(plot_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("plot", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_unknown_option("plot", argv[optind - 1], longopts);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("plot", "expected exactly one RESULT.h5");
    if (a->figures && !a->opts.outdir)
        return cli_usage_error("plot", "-o DIR is required (or --stats --no-figures)");
    if (!a->figures && !a->stats)
        return cli_usage_error("plot", "--no-figures without --stats leaves nothing to do");
    dora_err err = {{0}, 0};
    if (dora_plot_check_formats(a->opts.formats, &err) != 0)
        return cli_usage_error("plot", "%s", err.msg);
    a->input = argv[optind];
    return -1;
}

int cli_plot_outcome(const char *cmd, int rc, const dora_plot_report *rep, const dora_err *err)
{
    for (size_t i = 0; i < rep->nnotes; i++)
        fprintf(stderr, "dora-analyze: note: %s\n", rep->notes[i]);
    if (rc == 0)
        return EXIT_OK;
    return rep->refused ? cli_usage_error(cmd, "%s", err->msg) : cli_fail(err);
}

/* The figures of S, with the plot layer's notes; the exit status. */
static int draw(const dora_plot_study *s, const dora_plot_opts *o)
{
    dora_err err = {{0}, 0};
    dora_plot_report rep;
    cli_guard_signals(); /* the figures' temporaries go on SIGINT */
    int rc = dora_plot_draw(s, o, &rep, &err);
    int status = cli_plot_outcome("plot", rc, &rep, &err);
    if (status == EXIT_OK)
        fprintf(stderr, "dora-analyze: wrote %d figure(s) to '%s'\n", rep.drawn, o->outdir);
    dora_plot_report_release(&rep);
    return status;
}

int cmd_plot(int argc, char **argv)
{
    plot_args a;
    int status = parse_args(argc, argv, &a);
    if (status >= 0)
        return status;
    dora_err err = {{0}, 0};
    dora_plot_study s;
    if (dora_plot_open_stats(&s, a.input, a.runs, &a.boot, &err) != 0)
        return cli_fail(&err);
    status = EXIT_OK;
    if (a.stats) /* the table follows --modules too */
        status = dora_plot_stats(stdout, &s, a.opts.kinds, a.json, &err) != 0
                     ? cli_fail(&err)
                     : cli_finish_stdout();
    if (status == EXIT_OK && a.figures)
        status = draw(&s, &a.opts);
    dora_plot_release(&s);
    return status;
}
