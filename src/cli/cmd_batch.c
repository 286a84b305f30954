/* cmd_batch.c - `dora-analyze batch`: the options into a dora_batch_opts,
 * the outputs checked against the inputs before any work, dora_batch_run
 * (batch/batch.c), and its outcome as an exit status. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/batch.h"
#include "core/util.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char batch_help[] =
    "usage: dora-analyze batch MANIFEST [options]\n"
    "\n"
    "Run every study a manifest (JSON, see analysis/README.md) lists: each checkpoint\n"
    "of each run is a unit, analysed in parallel; each study's results go to its\n"
    "output HDF5, its figures are drawn, and its expectations on the regression of\n"
    "dM on dD are checked. Finished units are kept in OUT.journal beside each output:\n"
    "a re-run skips those whose checkpoint files are unchanged.\n"
    "\n"
    "options:\n"
    "  -j, --jobs N          threads (default: all cores); units run side by side\n"
    "  --mem SIZE            memory for the LoRA/DoRA factors and buffers of the units\n"
    "                        running side by side, e.g. 256M (default: 56M)\n"
    "  --progress=WHEN       progress bar on stderr: auto (if stderr is a terminal),\n"
    "                        always, never\n"
    "  -q, --quiet           only failures on stderr\n"
    "  -v, --verbose         one line per unit (analysed, up to date, failed)\n"
    "  --report-json FILE    write a JSON report (studies, units, expectations)\n"
    "  --junit FILE          write a JUnit XML report (a testcase per expectation, per\n"
    "                        failed unit, per study and for figures)\n"
    "  --shard K/N           run only units K, K+N, K+2N... (1 <= K <= N) into shard\n"
    "                        files NAME.shard-K-of-N.h5; no figures or expectations.\n"
    "                        Join them with `dora-analyze merge`, or let a later run\n"
    "                        without --shard pick them up\n"
    "  --dry-run             check the manifest and the inputs, print the units each\n"
    "                        study has and which are up to date; write nothing\n"
    "  --force               replace existing outputs, journals and reports that this\n"
    "                        tool did not write (an input is never replaced)\n"
    "  --bootstrap B         replicates of the layer-cluster bootstrap behind the 95%\n"
    "                        intervals of r (100 to 1000000; default 10000)\n"
    "  -h, --help            this help\n"
    "\n"
    "Built with `make MPI=1` and started by mpirun, rank 0 hands units to the other\n"
    "ranks and writes the results (the same numbers as one process).\n"
    "\n"
    "exit status: 0 every study ran and every expectation held, 1 otherwise,\n"
    "2 usage error or invalid manifest\n";

static int parse_shard(const char *s, unsigned *k, unsigned *n)
{
    const char *slash = strchr(s, '/');
    int64_t a, b;
    if (!slash)
        return -1;
    char *left = strndup(s, (size_t)(slash - s));
    int rc = left && util_parse_i64(left, 1, 1000000, &a) == 0 &&
                     util_parse_i64(slash + 1, 1, 1000000, &b) == 0 && a <= b
                 ? 0
                 : -1;
    free(left);
    if (rc == 0) {
        *k = (unsigned)a;
        *n = (unsigned)b;
    }
    return rc;
}

/* ---- outputs against inputs, before any work ----------------------------- */

typedef struct out_item {
    char *path; /* owned */
    cli_out_kind kind;
    const char *what; /* "study 'x' output", ... for messages */
    char who[300];
} out_item;

/* Every file the batch writes (each study's output or shard file and its
 * journal, the reports) against every file it reads (the manifest, each
 * study's base and runs): none may be an input, none may be an existing file
 * this tool did not write (unless --force), no two may be one file, and no
 * input may sit in a figures folder under a figure's name. Returns EXIT_OK or
 * EXIT_USAGE (message printed). */
static int check_outputs(const dora_manifest *m, const dora_batch_opts *opts)
{
    cli_inputs in = {0};
    cli_inputs_add(&in, m->path);
    for (size_t i = 0; i < m->nstudies; i++) {
        const dora_study *st = &m->studies[i];
        cli_inputs_add(&in, st->base);
        for (size_t r = 0; r < st->nruns; r++)
            cli_inputs_add(&in, st->runs[r].path);
    }
    size_t cap = 2 * m->nstudies + 2, n = 0;
    out_item *o = calloc(cap, sizeof *o);
    int status = EXIT_OK;
    if (!o || in.oom) {
        fprintf(stderr, "dora-analyze: error: out of memory\n");
        status = EXIT_BAD_INPUT;
        goto done;
    }
    for (size_t i = 0; i < m->nstudies; i++) {
        const dora_study *st = &m->studies[i];
        char *out = opts->shard_n ? dora_shard_path(st->output, opts->shard_k, opts->shard_n)
                               : strdup(st->output);
        char *jp = out ? dora_journal_path(out) : NULL;
        o[n] = (out_item){out, CLI_OUT_H5, "the output of study", ""};
        snprintf(o[n++].who, sizeof o[0].who, "'%.250s'", st->name);
        o[n] = (out_item){jp, CLI_OUT_JOURNAL, "the journal of study", ""};
        snprintf(o[n++].who, sizeof o[0].who, "'%.250s'", st->name);
        if (!out || !jp) {
            fprintf(stderr, "dora-analyze: error: out of memory\n");
            status = EXIT_BAD_INPUT;
            goto done;
        }
    }
    if (opts->report_json)
        o[n++] = (out_item){strdup(opts->report_json), CLI_OUT_JSON, "--report-json", ""};
    if (opts->junit)
        o[n++] = (out_item){strdup(opts->junit), CLI_OUT_JUNIT, "--junit", ""};
    for (size_t i = 0; i < n; i++)
        if (!o[i].path) {
            fprintf(stderr, "dora-analyze: error: out of memory\n");
            status = EXIT_BAD_INPUT;
            goto done;
        }
    for (size_t i = 0; i < n && status == EXIT_OK; i++) {
        status = cli_check_output("batch", o[i].path, o[i].kind, &in, opts->force);
        for (size_t k = 0; k < i && status == EXIT_OK; k++)
            if (util_same_output(o[i].path, o[k].path))
                status = cli_usage_error("batch", "%s %s ('%s') and %s %s ('%s') are one file",
                                         o[k].what, o[k].who, o[k].path, o[i].what, o[i].who,
                                         o[i].path);
    }
    /* a figure is written as fig2_KIND.FMT / fig8_KIND.FMT in the figures folder */
    for (size_t i = 0; i < m->nstudies && status == EXIT_OK; i++) {
        const dora_study *st = &m->studies[i];
        struct stat fd;
        if (!st->figures || stat(st->fig_dir, &fd) != 0)
            continue;
        for (size_t k = 0; k < in.n && status == EXIT_OK; k++) {
            char *dir = util_dirname(in.v[k].path), *base = util_basename(in.v[k].path);
            struct stat dd;
            if (dir && base && stat(dir, &dd) == 0 && dd.st_dev == fd.st_dev &&
                dd.st_ino == fd.st_ino && (strncmp(base, "fig2_", 5) == 0 ||
                                           strncmp(base, "fig8_", 5) == 0))
                status = cli_usage_error("batch", "study '%s': the figures folder '%s' holds the "
                                                  "input '%s' under a figure's name",
                                         st->name, st->fig_dir, in.v[k].path);
            free(dir);
            free(base);
        }
    }
done:
    for (size_t i = 0; o && i < n; i++)
        free(o[i].path);
    free(o);
    cli_inputs_release(&in);
    return status;
}

/* The outputs checked, then the signal handlers that remove temporaries:
 * dora_batch_run calls this before any work. */
static int before_work(const dora_manifest *m, void *ctx)
{
    int st = check_outputs(m, ctx);
    if (st == EXIT_OK)
        cli_guard_signals();
    return st;
}

/* The options into *O: -1 when the batch is to run, else the exit status
 * (help printed, or a usage error). */
static int parse_opts(int argc, char **argv, dora_batch_opts *o, int *progress)
{
    enum { OPT_PROGRESS = 256, OPT_REPORT_JSON, OPT_JUNIT, OPT_SHARD, OPT_DRY_RUN, OPT_FORCE, OPT_MEM,
           OPT_BOOTSTRAP };
    static const struct option longopts[] = {
        {"jobs", required_argument, NULL, 'j'},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        {"mem", required_argument, NULL, OPT_MEM},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"report-json", required_argument, NULL, OPT_REPORT_JSON},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"shard", required_argument, NULL, OPT_SHARD},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"force", no_argument, NULL, OPT_FORCE},
        {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    int64_t jobs = 0;
    int c, st;
    cli_seen seen = {{0}};
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:qvh", longopts, NULL)) != -1) {
        if ((st = cli_option_once(&seen, "batch", c, longopts)) >= 0)
            return st;
        switch (c) {
        case 'j':
            if (util_parse_i64(optarg, 1, 4096, &jobs) != 0)
                return cli_usage_error("batch", "-j wants a whole number from 1 to 4096, not '%s'",
                                       optarg);
            break;
        case OPT_PROGRESS:
            if ((st = cli_parse_progress("batch", optarg, progress)) >= 0)
                return st;
            break;
        case OPT_MEM:
            if ((st = cli_parse_lora_mem("batch", optarg, &o->mem_bytes)) >= 0)
                return st;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'v':
            o->verbose = 1;
            break;
        case OPT_REPORT_JSON:
            o->report_json = optarg;
            break;
        case OPT_JUNIT:
            o->junit = optarg;
            break;
        case OPT_SHARD:
            if (parse_shard(optarg, &o->shard_k, &o->shard_n) != 0)
                return cli_usage_error("batch", "--shard wants K/N with 1 <= K <= N, not '%s'",
                                       optarg);
            break;
        case OPT_DRY_RUN:
            o->dry_run = 1;
            break;
        case OPT_FORCE:
            o->force = 1;
            break;
        case OPT_BOOTSTRAP:
            if ((st = cli_parse_bootstrap("batch", optarg, &o->stats.bootstrap)) >= 0)
                return st;
            break;
        case 'h':
            fputs(batch_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("batch", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_unknown_option("batch", argv[optind - 1], longopts);
        }
    }
    if (optind >= argc)
        return cli_usage_error("batch", "no manifest given");
    if (optind + 1 < argc)
        return cli_usage_error("batch", "one manifest, not %d arguments", argc - optind);
    o->manifest = argv[optind];
    o->jobs = jobs > 0 ? (int)jobs : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o->jobs < 1)
        o->jobs = 1;
    return -1;
}

int cmd_batch(int argc, char **argv)
{
    dora_batch_opts o;
    int progress = CLI_PROGRESS_AUTO;
    int st = parse_opts(argc, argv, &o, &progress);
    if (st >= 0)
        return st;
    char *cmdline = cli_command_line(argc, argv); /* NULL: dora_batch_run says out of memory */
    cli_term term;
    cli_term_init(&term, cli_progress_shown(progress, o.quiet), "units");
    o.command_line = cmdline;
    o.before_work = before_work;
    o.ctx = &o;
    o.progress = &term.prog;
    o.log = cli_term_line;
    o.log_ctx = &term;
    dora_err err = {{0}, 0};
    dora_batch_report rep;
    cli_term_start(&term);
    dora_batch_outcome r = dora_batch_run(&o, &rep, &err);
    cli_term_release(&term);
    free(cmdline);
    switch (r) {
    case DORA_BATCH_OK:
    case DORA_BATCH_FAILED:
        if (o.dry_run && (st = cli_finish_stdout()) != EXIT_OK)
            return st;
        return r == DORA_BATCH_OK ? EXIT_OK : EXIT_BAD_INPUT;
    case DORA_BATCH_BAD_MANIFEST:
        fprintf(stderr, "dora-analyze batch: invalid manifest: %s\n", err.msg);
        return EXIT_USAGE;
    case DORA_BATCH_REFUSED:
        return rep.refused;
    default:
        return cli_fail(&err);
    }
}
