/* cmd_analyze.c - `dora-analyze analyze`: runs against a base, into HDF5. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/align.h"
#include "dora/analyze.h"
#include "dora/h5out.h"
#include "dora/run.h"
#include "core/util.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char analyze_help[] =
    "usage: dora-analyze analyze --base PATH -o OUT.h5 [options] [NAME=]RUN ...\n"
    "\n"
    "Compare every checkpoint of each RUN with the pre-trained base: per tensor and\n"
    "step, the mean change of row magnitude (dM) and of row direction (dD, mean of\n"
    "1 - cos), as in the DoRA paper (Eq. 3, 4). Writes OUT.h5 and prints a tidy\n"
    "TSV table (run, method, step, module, layer, delta_m, delta_d) on stdout.\n"
    "\n"
    "RUN is a Trainer output folder (checkpoint-STEP/ subfolders, plus a final\n"
    "model in the folder itself), a single checkpoint folder, or a .safetensors\n"
    "file. NAME (default: the folder or file name) names the run in the output.\n"
    "\n"
    "options:\n"
    "  --base PATH       pre-trained model: .safetensors file or model folder (sharded ok)\n"
    "  -o, --output FILE HDF5 file to write (replaced atomically when complete)\n"
    "  --modules RE      analyse only tensors whose name matches RE (POSIX extended)\n"
    "  --exclude RE      leave out tensors whose name matches RE\n"
    "  --rename 'RE=REP' rewrite checkpoint tensor names (PCRE2, every match; $1 for a\n"
    "                    group) before they are matched to the base's; repeatable\n"
    "  --transpose RE    FT weights whose name matches RE are stored [in, out] (Conv1D):\n"
    "                    read them as [out, in] (gpt2-like bases: from config.json)\n"
    "  --no-split        analyse fused projections (qkv_proj, query_key_value, c_attn,\n"
    "                    Wqkv, W_pack, gate_up_proj) whole, not split into q/k/v parts\n"
    "  -j, --jobs N      threads (default: all cores)\n"
    "  --per-row         also store per-row magnitudes and cosines\n"
    "  --base-quant Q    W0 of adapter runs is the bitsandbytes round trip of the base:\n"
    "                    nf4, fp4, nf4-dq, fp4-dq (double quant), int8 (LLM.int8); a\n"
    "                    quantization_config in the base's config.json is followed\n"
    "                    without it\n"
    "  --csv FILE        write the table as CSV to FILE instead of TSV on stdout\n"
    "  --force           replace an existing OUT.h5 or CSV file that this tool did not\n"
    "                    write (an input is never replaced)\n"
    "  -q, --quiet       no notes on stderr (errors are still printed)\n"
    "  -h, --help        this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or failed analysis, 2 usage error\n";

static void print_field(FILE *f, const char *s, int csv)
{
    if (!csv) {
        for (const char *p = s; *p; p++) {
            if (*p == '\t')
                fputs("\\t", f);
            else if (*p == '\n')
                fputs("\\n", f);
            else if (*p == '\\')
                fputs("\\\\", f);
            else
                fputc(*p, f);
        }
        return;
    }
    if (strpbrk(s, ",\"\n\r") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

static void print_table(FILE *f, const dora_result *res, size_t nres, int csv)
{
    const char sep = csv ? ',' : '\t';
    fprintf(f, "run%cmethod%cstep%cmodule%clayer%cdelta_m%cdelta_d\n", sep, sep, sep, sep, sep, sep);
    for (size_t i = 0; i < nres; i++) {
        const dora_result *r = &res[i];
        for (size_t s = 0; s < r->nsteps; s++)
            for (size_t l = 0; l < r->nmodules; l++) {
                print_field(f, r->name, csv);
                fprintf(f, "%c%s%c%lld%c", sep, r->method, sep, (long long)r->steps[s], sep);
                print_field(f, r->modules[l], csv);
                fprintf(f, "%c%d%c%.17g%c%.17g\n", sep, (int)r->layer[l], sep,
                        r->delta_m[s * r->nmodules + l], sep, r->delta_d[s * r->nmodules + l]);
            }
    }
}

/* The CSV table into O's temporary file (flushed to disk), not yet renamed:
 * it is committed with the HDF5 file, after it. */
static int stage_csv(util_out *o, const char *path, const dora_result *res, size_t nres,
                     dora_err *err)
{
    if (util_out_begin(o, path, err) != 0)
        return -1;
    int fd = util_out_open(o, err);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0) {
            dora_errf(err, "'%s': cannot write: %s", path, strerror(errno));
            close(fd);
        }
        util_out_abort(o);
        return -1;
    }
    print_table(f, res, nres, 1);
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        dora_errf(err, "'%s': cannot write: %s", path, strerror(e));
        util_out_abort(o);
        return -1;
    }
    return 0;
}

/* The options of one `analyze`. */
typedef struct analyze_args {
    const char *base_path, *out, *modules_re, *exclude_re, *csv;
    int64_t jobs;
    int per_row, quiet, force;
    const char *renames[DORA_MAX_RENAMES];
    const char *transpose;
    int no_split;
    size_t nrenames;
    dora_quant base_quant;
} analyze_args;

/* Options into *A (optind then at the first run). -1 to go on, else the exit
 * status to return (--help, a usage error). */
static int parse_options(int argc, char **argv, analyze_args *a)
{
    enum { OPT_BASE = 256, OPT_MODULES, OPT_EXCLUDE, OPT_PER_ROW, OPT_CSV, OPT_FORCE,
           OPT_RENAME, OPT_TRANSPOSE, OPT_NO_SPLIT, OPT_BASE_QUANT };
    static const struct option longopts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"jobs", required_argument, NULL, 'j'},
        {"per-row", no_argument, NULL, OPT_PER_ROW},
        {"base-quant", required_argument, NULL, OPT_BASE_QUANT},
        {"csv", required_argument, NULL, OPT_CSV},
        {"force", no_argument, NULL, OPT_FORCE},
        {"rename", required_argument, NULL, OPT_RENAME},
        {"transpose", required_argument, NULL, OPT_TRANSPOSE},
        {"no-split", no_argument, NULL, OPT_NO_SPLIT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:j:qh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BASE: a->base_path = optarg; break;
        case 'o': a->out = optarg; break;
        case OPT_MODULES: a->modules_re = optarg; break;
        case OPT_EXCLUDE: a->exclude_re = optarg; break;
        case 'j':
            if (util_parse_i64(optarg, 1, 4096, &a->jobs) != 0)
                return cli_usage_error("analyze", "-j wants a whole number from 1 to 4096, not '%s'",
                                       optarg);
            break;
        case OPT_PER_ROW: a->per_row = 1; break;
        case OPT_BASE_QUANT:
            if (dora_quant_parse(optarg, &a->base_quant) != 0)
                return cli_usage_error("analyze", "--base-quant wants nf4, fp4, int8, nf4-dq, "
                                                  "fp4-dq or none, not '%s'",
                                       optarg);
            break;
        case OPT_CSV: a->csv = optarg; break;
        case OPT_FORCE: a->force = 1; break;
        case OPT_RENAME: {
            dora_err e;
            if (a->nrenames == DORA_MAX_RENAMES)
                return cli_usage_error("analyze", "at most %d --rename options", DORA_MAX_RENAMES);
            if (dora_rename_check(optarg, &e) != 0)
                return cli_usage_error("analyze", "--rename %s", e.msg);
            a->renames[a->nrenames++] = optarg;
            break;
        }
        case OPT_NO_SPLIT: a->no_split = 1; break;
        case OPT_TRANSPOSE: {
            dora_filter f;
            dora_err e;
            if (dora_filter_compile(&f, optarg, NULL, &e) != 0)
                return cli_usage_error("analyze", "--transpose %s", e.msg);
            dora_filter_free(&f);
            a->transpose = optarg;
            break;
        }
        case 'q': a->quiet = 1; break;
        case 'h':
            fputs(analyze_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("analyze", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("analyze", "unknown option '%s'", argv[optind - 1]);
        }
    }
    return -1;
}

/* Without --base: say why for an adapter run, which cannot be analysed alone. */
static int no_base(int nargs, char **args)
{
    for (int i = 0; i < nargs; i++) {
        char *name;
        const char *path;
        dora_run run;
        dora_err e;
        if (cli_split_run_arg(args[i], &name, &path) != 0)
            break;
        free(name);
        const char *method = "ft";
        if (dora_run_discover(&run, path, &e) == 0) {
            method = run.method; /* a static string */
            dora_run_release(&run);
        }
        if (strcmp(method, "ft") != 0)
            return cli_usage_error("analyze", "'%s' holds %s adapters: dM and dD compare the "
                                              "merged weights with the pre-trained ones, so the "
                                              "base model they were trained on is needed "
                                              "(--base PATH)",
                                   args[i], method);
    }
    return cli_usage_error("analyze", "--base PATH is required");
}

/* Usage errors that need no file: EXIT_OK when the options hold together. */
static int check_args(const analyze_args *a, int nargs, char **args)
{
    if (!a->base_path)
        return no_base(nargs, args);
    if (!a->out)
        return cli_usage_error("analyze", "-o OUT.h5 is required");
    if (nargs < 1)
        return cli_usage_error("analyze", "no run given");
    if (strlen(a->out) + 64 > 4096)
        return cli_usage_error("analyze", "output path too long");
    if (a->csv && util_same_output(a->out, a->csv))
        return cli_usage_error("analyze", "-o '%s' and --csv '%s' are the same file", a->out,
                               a->csv);
    return EXIT_OK;
}

/* Notes on stderr unless quiet (CTX points to the flag); steps left out always. */
static void on_note(void *ctx, const char *run, const char *msg, int failed)
{
    if (failed)
        fprintf(stderr, "dora-analyze: error: run '%s': %s\n", run, msg);
    else if (!*(const int *)ctx)
        cli_note(run, msg);
}

/* OUT.h5, and the table to --csv or stdout: both outputs or neither, so the
 * CSV is staged first and renamed after the HDF5 file. */
static int write_outputs(const analyze_args *a, const dora_result *res, size_t nruns,
                         const char *cmdline)
{
    util_out csv_out = {0};
    csv_out.slot = -1;
    dora_err err;
    int status;
    if (a->csv && stage_csv(&csv_out, a->csv, res, nruns, &err) != 0)
        return cli_fail(&err);
    if (h5o_write(a->out, res, nruns, cmdline, &err) != 0) {
        status = cli_fail(&err);
    } else if (a->csv) {
        status = EXIT_OK;
        if (util_out_commit(&csv_out, &err) != 0) {
            unlink(a->out); /* not one without the other */
            dora_errprefix(&err, "'%s' not written either", a->out);
            status = cli_fail(&err);
        }
    } else {
        print_table(stdout, res, nruns, 0);
        status = cli_finish_stdout();
    }
    util_out_abort(&csv_out);
    return status;
}

int cmd_analyze(int argc, char **argv)
{
    analyze_args a = {0};
    int status = parse_options(argc, argv, &a);
    if (status >= 0)
        return status;
    char **args = argv + optind;
    const size_t nruns = argc > optind ? (size_t)(argc - optind) : 0;
    if ((status = check_args(&a, (int)nruns, args)) != EXIT_OK)
        return status;
    dora_filter filter;
    if ((status = cli_compile_filter("analyze", &filter, a.modules_re, a.exclude_re)) != EXIT_OK)
        return status;

    char **names = calloc(nruns, sizeof *names);
    const char **paths = calloc(nruns, sizeof *paths);
    dora_result *res = calloc(nruns, sizeof *res);
    char *cmdline = cli_command_line(argc, argv);
    dora_err err;
    size_t done = 0;
    if (!names || !paths || !res || !cmdline) {
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
        goto cleanup;
    }
    /* before any work: no output may replace an input, or a file not ours */
    if ((status = cli_parse_runs("analyze", nruns, args, names, paths)) != EXIT_OK ||
        (status = cli_check_output_dir(a.out)) != EXIT_OK ||
        (status = cli_check_outputs("analyze", a.out, a.csv, a.base_path, paths, nruns,
                                    a.force)) != EXIT_OK)
        goto cleanup;
    cli_guard_signals();
    const dora_analysis_opts opts = {
        .include = dora_filter_include(&filter),
        .exclude = dora_filter_exclude(&filter),
        .threads = a.jobs > 0 ? (int)a.jobs : (int)sysconf(_SC_NPROCESSORS_ONLN),
        .per_row = a.per_row,
        .renames = a.renames,
        .nrenames = a.nrenames,
        .transpose = a.transpose,
        .no_split = a.no_split,
        .base_quant = a.base_quant,
    };
    if (dora_analyze_runs(res, &done, a.base_path, names, paths, nruns, &opts, on_note, &a.quiet,
                          &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    if ((status = write_outputs(&a, res, nruns, cmdline)) != EXIT_OK)
        goto cleanup;
    size_t incomplete = 0;
    for (size_t i = 0; i < nruns; i++)
        incomplete += res[i].nfailures;
    if (incomplete) {
        /* the results hold every step that could be read; the others are named above */
        fprintf(stderr, "dora-analyze: error: %zu step(s) left out; '%s' holds the others\n",
                incomplete, a.out);
        status = EXIT_BAD_INPUT;
    }
cleanup:
    for (size_t i = 0; i < done; i++)
        dora_result_release(&res[i]);
    for (size_t i = 0; names && i < nruns; i++)
        free(names[i]);
    free(names);
    free(paths);
    free(res);
    free(cmdline);
    dora_filter_free(&filter);
    return status;
}
