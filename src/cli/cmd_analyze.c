/* cmd_analyze.c - `dora-analyze analyze`: runs against a base, into HDF5. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/analyze.h"
#include "dora/h5out.h"
#include "dora/model.h"
#include "dora/run.h"
#include "core/util.h"

#include <errno.h>
#include <getopt.h>
#include <regex.h>
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
    "  -j, --jobs N      threads (default: all cores)\n"
    "  --per-row         also store per-row magnitudes and cosines\n"
    "  --csv FILE        write the table as CSV to FILE instead of TSV on stdout\n"
    "  --force           replace an existing OUT.h5 or CSV file that this tool did not\n"
    "                    write (an input is never replaced)\n"
    "  -q, --quiet       no notes on stderr (errors are still printed)\n"
    "  -h, --help        this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or failed analysis, 2 usage error\n";

typedef struct run_arg {
    char *name;
    const char *path;
} run_arg;

static int parse_run_arg(const char *arg, run_arg *out)
{
    return cli_split_run_arg(arg, &out->name, &out->path);
}

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

int cmd_analyze(int argc, char **argv)
{
    enum { OPT_BASE = 256, OPT_MODULES, OPT_EXCLUDE, OPT_PER_ROW, OPT_CSV, OPT_FORCE };
    static const struct option longopts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"jobs", required_argument, NULL, 'j'},
        {"per-row", no_argument, NULL, OPT_PER_ROW},
        {"csv", required_argument, NULL, OPT_CSV},
        {"force", no_argument, NULL, OPT_FORCE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *base_path = NULL, *out = NULL, *modules_re = NULL, *exclude_re = NULL, *csv = NULL;
    int64_t jobs = 0;
    int per_row = 0, quiet = 0, force = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:j:qh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BASE:
            base_path = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case OPT_MODULES:
            modules_re = optarg;
            break;
        case OPT_EXCLUDE:
            exclude_re = optarg;
            break;
        case 'j':
            if (util_parse_i64(optarg, 1, 4096, &jobs) != 0)
                return cli_usage_error("analyze", "-j wants a whole number from 1 to 4096, not '%s'",
                                       optarg);
            break;
        case OPT_PER_ROW:
            per_row = 1;
            break;
        case OPT_CSV:
            csv = optarg;
            break;
        case OPT_FORCE:
            force = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(analyze_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("analyze", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("analyze", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!base_path) {
        /* say why for adapter runs: they cannot be analysed alone */
        for (int i = optind; i < argc; i++) {
            run_arg ra0;
            dora_run run;
            dora_err e;
            if (parse_run_arg(argv[i], &ra0) != 0)
                break;
            const char *method = "ft";
            if (dora_run_discover(&run, ra0.path, &e) == 0) {
                method = run.method; /* a static string */
                dora_run_release(&run);
            }
            int adapter = strcmp(method, "ft") != 0;
            free(ra0.name);
            if (adapter)
                return cli_usage_error("analyze", "'%s' holds %s adapters: dM and dD compare the "
                                                  "merged weights with the pre-trained ones, so "
                                                  "the base model they were trained on is needed "
                                                  "(--base PATH)",
                                       argv[i], method);
        }
        return cli_usage_error("analyze", "--base PATH is required");
    }
    if (!out)
        return cli_usage_error("analyze", "-o OUT.h5 is required");
    if (optind >= argc)
        return cli_usage_error("analyze", "no run given");
    if (strlen(out) + 64 > 4096)
        return cli_usage_error("analyze", "output path too long");
    if (csv && util_same_output(out, csv))
        return cli_usage_error("analyze", "-o '%s' and --csv '%s' are the same file", out, csv);

    regex_t re_in, re_ex;
    int have_in = 0, have_ex = 0, status = EXIT_BAD_INPUT;
    char rmsg[256];
    if (modules_re) {
        int r = regcomp(&re_in, modules_re, REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            regerror(r, &re_in, rmsg, sizeof rmsg);
            return cli_usage_error("analyze", "--modules '%s': %s", modules_re, rmsg);
        }
        have_in = 1;
    }
    if (exclude_re) {
        int r = regcomp(&re_ex, exclude_re, REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            regerror(r, &re_ex, rmsg, sizeof rmsg);
            if (have_in)
                regfree(&re_in);
            return cli_usage_error("analyze", "--exclude '%s': %s", exclude_re, rmsg);
        }
        have_ex = 1;
    }

    size_t nruns = (size_t)(argc - optind);
    run_arg *ra = calloc(nruns, sizeof *ra);
    dora_result *res = calloc(nruns, sizeof *res);
    dora_model *base = NULL;
    char *cmdline = cli_command_line(argc, argv);
    dora_err err = {{0}, 0};
    size_t done = 0, incomplete = 0;
    cli_inputs inputs = {0};
    util_out csv_out = {0};
    csv_out.slot = -1;
    if (!ra || !res || !cmdline) {
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
        goto cleanup;
    }
    for (size_t i = 0; i < nruns; i++) {
        if (parse_run_arg(argv[optind + (int)i], &ra[i]) != 0) {
            dora_errf(&err, "out of memory");
            status = cli_fail(&err);
            goto cleanup;
        }
        if (!cli_valid_run_name(ra[i].name)) {
            status = cli_usage_error("analyze", "'%s': a run name must be non-empty, not '.' or "
                                                "'..', and without '/'",
                                     argv[optind + (int)i]);
            goto cleanup;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(ra[i].name, ra[j].name) == 0) {
                status = cli_usage_error("analyze", "two runs are named '%s'; name them with "
                                                    "NAME=RUN",
                                         ra[i].name);
                goto cleanup;
            }
    }
    {
        char *dir = util_dirname(out);
        int ok = dir && util_is_dir(dir);
        if (!ok)
            dora_errf(&err, "'%s': the output folder '%s' does not exist", out, dir ? dir : "?");
        free(dir);
        if (!ok) {
            status = cli_fail(&err);
            goto cleanup;
        }
    }
    /* before any work: no output may replace an input, or a file not ours */
    cli_inputs_add(&inputs, base_path);
    for (size_t i = 0; i < nruns; i++)
        cli_inputs_add(&inputs, ra[i].path);
    if (inputs.oom) {
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
        goto cleanup;
    }
    if ((status = cli_check_output("analyze", out, CLI_OUT_H5, &inputs, force)) != EXIT_OK ||
        (csv && (status = cli_check_output("analyze", csv, CLI_OUT_CSV, &inputs, force)) !=
                    EXIT_OK))
        goto cleanup;
    status = EXIT_BAD_INPUT;
    cli_guard_signals();

    if (dora_model_open(&base, base_path, &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    dora_analysis_opts opts = {
        .include = have_in ? &re_in : NULL,
        .exclude = have_ex ? &re_ex : NULL,
        .threads = jobs > 0 ? (int)jobs : (int)sysconf(_SC_NPROCESSORS_ONLN),
        .per_row = per_row,
    };
    for (size_t i = 0; i < nruns; i++) {
        dora_run run;
        if (dora_run_discover(&run, ra[i].path, &err) != 0) {
            status = cli_fail(&err);
            goto cleanup;
        }
        if (!quiet)
            for (size_t k = 0; k < run.nnotes; k++)
                fprintf(stderr, "dora-analyze: note: %s\n", run.notes[k]);
        int r = dora_analyze_run(&res[i], ra[i].name, base, base_path, &run, &opts, &err);
        dora_run_release(&run);
        if (r != 0) {
            status = cli_fail(&err);
            goto cleanup;
        }
        done++;
        if (!quiet)
            for (size_t k = 0; k < res[i].nnotes; k++)
                fprintf(stderr, "dora-analyze: note: run '%s': %s\n", res[i].name, res[i].notes[k]);
        for (size_t k = 0; k < res[i].nfailures; k++) /* errors: printed even with -q */
            fprintf(stderr, "dora-analyze: error: run '%s': %s\n", res[i].name,
                    res[i].failures[k]);
        incomplete += res[i].nfailures;
    }

    /* both outputs or neither: the CSV is staged first, renamed after the HDF5 file */
    if (csv && stage_csv(&csv_out, csv, res, nruns, &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    if (h5o_write(out, res, nruns, cmdline, &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    if (csv) {
        if (util_out_commit(&csv_out, &err) != 0) {
            unlink(out); /* not one without the other */
            dora_errprefix(&err, "'%s' not written either", out);
            status = cli_fail(&err);
            goto cleanup;
        }
        status = EXIT_OK;
    } else {
        print_table(stdout, res, nruns, 0);
        status = cli_finish_stdout();
    }
    if (status == EXIT_OK && incomplete) {
        /* the results hold every step that could be read; the others are named above */
        fprintf(stderr, "dora-analyze: error: %zu step(s) left out; '%s' holds the others\n",
                incomplete, out);
        status = EXIT_BAD_INPUT;
    }
cleanup:
    util_out_abort(&csv_out);
    cli_inputs_release(&inputs);
    for (size_t i = 0; i < done; i++)
        dora_result_release(&res[i]);
    for (size_t i = 0; ra && i < nruns; i++)
        free(ra[i].name);
    free(ra);
    free(res);
    free(cmdline);
    dora_model_close(base);
    if (have_in)
        regfree(&re_in);
    if (have_ex)
        regfree(&re_ex);
    return status;
}
