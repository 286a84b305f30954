/* cmd_report.c - `dora-analyze report`: one self-contained HTML page of a
 * results file (plot.h dora_report_write does the work; this file parses the options and
 * chooses the exit status). */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/plot.h"

#include <getopt.h>
#include <stdio.h>

static const char report_help[] =
    "usage: dora-analyze report RESULT.h5 -o REPORT.html [--spectrum SPEC.h5]\n"
    "                           [--modules K1,K2] [--force]\n"
    "\n"
    "Write one self-contained HTML page of an `analyze` results file: each run's\n"
    "method, paths, steps and module count; the regression of dM on dD beside the\n"
    "paper's numbers; for each module kind the figures of `plot` (Fig. 2/7, Fig. 8,\n"
    "the trajectory) as inline SVG; the per-layer dM and dD at the final step; with\n"
    "--spectrum, the spectral summary of a `spectrum` results file (r90, stable rank,\n"
    "intruders and subspace similarity by run and module kind). The page loads\n"
    "nothing from the network. gnuplot draws the figures.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE     the page (written under a temporary name, then renamed)\n"
    "  --spectrum SPEC.h5    also summarise this results file of `spectrum`\n"
    "  --modules K1,K2       module kinds (default: every kind in the file)\n"
    "  --force               replace FILE even if it is not a report of dora-analyze\n"
    "  --bootstrap B         replicates of the layer-cluster bootstrap behind the 95%\n"
    "                        intervals of r (100 to 1000000; default 10000)\n"
    "  -h, --help            this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or gnuplot failure, 2 usage error\n";

int cmd_report(int argc, char **argv)
{
    enum { OPT_MODULES = 256, OPT_FORCE, OPT_SPECTRUM, OPT_BOOTSTRAP };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"force", no_argument, NULL, OPT_FORCE},
        {"spectrum", required_argument, NULL, OPT_SPECTRUM},
        {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    dora_report_opts o = {NULL, NULL, 0, NULL, {0, 0}};
    const char *out = NULL;
    int c, r;
    cli_seen seen = {{0}};
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        if ((r = cli_option_once(&seen, "report", c, longopts)) >= 0)
            return r;
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_MODULES: o.kinds = optarg; break;
        case OPT_FORCE: o.force = 1; break;
        case OPT_SPECTRUM: o.spectrum = optarg; break;
        case OPT_BOOTSTRAP:
            if ((r = cli_parse_bootstrap("report", optarg, &o.stats.bootstrap)) >= 0)
                return r;
            break;
        case 'h': fputs(report_help, stdout); return cli_finish_stdout();
        case ':': return cli_usage_error("report", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_unknown_option("report", argv[optind - 1], longopts);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("report", "expected exactly one RESULT.h5");
    if (!out)
        return cli_usage_error("report", "-o REPORT.html is required");
    dora_err err = {{0}, 0};
    dora_plot_report rep;
    cli_guard_signals(); /* the page's and the figures' temporaries go on SIGINT */
    int rc = dora_report_write(argv[optind], out, &o, &rep, &err);
    int status = cli_plot_outcome("report", rc, &rep, &err);
    if (status == EXIT_OK)
        fprintf(stderr, "dora-analyze: wrote '%s' (%d figure(s))\n", out, rep.drawn);
    dora_plot_report_release(&rep);
    return status;
}
