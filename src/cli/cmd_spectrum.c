/* cmd_spectrum.c - `dora-analyze spectrum`: singular value spectra of the
 * updates, r90, stable rank, intruder dimensions and subspace similarity, into
 * HDF5, with a tidy table on stdout. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/h5out.h"
#include "dora/model.h"
#include "dora/run.h"
#include "dora/spectral.h"
#include "core/util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char spectrum_help[] =
    "usage: dora-analyze spectrum [--base PATH] -o OUT.h5 [options] [NAME=]RUN ...\n"
    "\n"
    "Per run, module and step, the singular values of the update dW = W_t - W0, its\n"
    "r90 (smallest k whose top-k singular values hold 90% of ||dW||_F^2) and stable\n"
    "rank ||dW||_F^2 / s1^2; with the base, the intruder dimensions of W_t (top-10\n"
    "left singular vectors whose largest |cos| with every singular vector of W0 is\n"
    "below the threshold); the subspace similarity phi between the top singular\n"
    "vectors of the updates of consecutive steps and of each step and the final\n"
    "one (and, with --compare, between runs). Writes OUT.h5 and prints a TSV table\n"
    "(run, method, step, module, layer, update, rank, fro_norm, sigma1, r90,\n"
    "stable_rank, intruders, phi_prev, phi_final; NA where undefined) on stdout.\n"
    "\n"
    "LoRA updates s*B@A are decomposed exactly from their factors (thin QR of B and\n"
    "A^T and an r x r SVD), without a base model; full-weight runs, modules_to_save\n"
    "and DoRA's merged update m*V/||V|| - W0 need --base and a dense SVD. Without\n"
    "--base a DoRA adapter is analysed through its low-rank part s*B@A.\n"
    "\n"
    "options:\n"
    "  --base PATH       pre-trained model (.safetensors file or model folder)\n"
    "  -o, --output FILE HDF5 file to write (replaced atomically when complete)\n"
    "  --modules RE      analyse only modules whose name matches RE (POSIX extended)\n"
    "  --exclude RE      leave out modules whose name matches RE\n"
    "  --top K           keep the top K singular values per module and step (dense\n"
    "                    updates: partial SVD, randomised when K is small)\n"
    "  --threshold T     intruder threshold on |cos|, 0 < T <= 1 (default 0.5)\n"
    "  --subspace K      singular vectors compared by phi, 1..256 (default 16)\n"
    "  --compare         also phi between every pair of runs\n"
    "  --exact           no randomised SVD (LAPACK dgesvdx for --top)\n"
    "  --force           replace an existing OUT.h5 that this tool did not write (an\n"
    "                    input is never replaced)\n"
    "  -q, --quiet       no notes on stderr (errors are still printed)\n"
    "  -h, --help        this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or failed analysis, 2 usage error\n";

/* A strict decimal number (no spaces, no trailing text, finite). */
static int parse_double(const char *s, double *out)
{
    if (!s || !*s || strchr(" \t\n", *s))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static void tsv_field(const char *s)
{
    for (; *s; s++) {
        if (*s == '\t')
            fputs("\\t", stdout);
        else if (*s == '\n')
            fputs("\\n", stdout);
        else if (*s == '\\')
            fputs("\\\\", stdout);
        else
            putchar(*s);
    }
}

static void print_table(const dora_spectrum *sp)
{
    printf("run\tmethod\tstep\tmodule\tlayer\tupdate\trank\tfro_norm\tsigma1\tr90\tstable_rank\t"
           "intruders\tphi_prev\tphi_final\n");
    for (size_t i = 0; i < sp->nruns; i++) {
        const dora_spec_run *r = &sp->runs[i];
        for (size_t s = 0; s < r->nsteps; s++)
            for (size_t l = 0; l < r->nmodules; l++) {
                const size_t at = s * r->nmodules + l;
                const dora_spec_module *m = &r->mods[l];
                tsv_field(r->name);
                printf("\t%s\t%lld\t", r->method, (long long)r->steps[s]);
                tsv_field(m->name);
                printf("\t%d\t%s\t%d\t%.17g\t%.17g\t", (int)m->layer, m->update, (int)m->rank,
                       r->fro_norm[at], r->sigma1[at]);
                if (r->r90[at] < 0)
                    printf("NA");
                else
                    printf("%lld", (long long)r->r90[at]);
                printf("\t%.17g\t", r->stable_rank[at]);
                if (r->intruders)
                    printf("%d", (int)r->intruders[at]);
                else
                    printf("NA");
                const double pp = r->phi_prev[at], pf = r->phi_final[at];
                if (pp < 0)
                    printf("\tNA");
                else
                    printf("\t%.17g", pp);
                if (pf < 0)
                    printf("\tNA\n");
                else
                    printf("\t%.17g\n", pf);
            }
    }
}

int cmd_spectrum(int argc, char **argv)
{
    enum { OPT_BASE = 256, OPT_MODULES, OPT_EXCLUDE, OPT_TOP, OPT_THRESHOLD, OPT_SUBSPACE,
           OPT_COMPARE, OPT_EXACT, OPT_FORCE };
    static const struct option longopts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"top", required_argument, NULL, OPT_TOP},
        {"threshold", required_argument, NULL, OPT_THRESHOLD},
        {"subspace", required_argument, NULL, OPT_SUBSPACE},
        {"compare", no_argument, NULL, OPT_COMPARE},
        {"exact", no_argument, NULL, OPT_EXACT},
        {"force", no_argument, NULL, OPT_FORCE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *base_path = NULL, *out = NULL, *modules_re = NULL, *exclude_re = NULL;
    dora_spectrum_opts opts;
    dora_spectrum_opts_init(&opts);
    int quiet = 0, force = 0, c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
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
        case OPT_TOP:
            if (util_parse_i64(optarg, 1, INT32_MAX, &opts.top) != 0)
                return cli_usage_error("spectrum", "--top wants a whole number >= 1, not '%s'",
                                       optarg);
            break;
        case OPT_THRESHOLD:
            if (parse_double(optarg, &opts.threshold) != 0 || !(opts.threshold > 0) ||
                opts.threshold > 1)
                return cli_usage_error("spectrum", "--threshold wants a number in (0, 1], not "
                                                   "'%s'",
                                       optarg);
            break;
        case OPT_SUBSPACE:
            if (util_parse_i64(optarg, 1, DORA_SPEC_SUBSPACE_MAX, &opts.subspace) != 0)
                return cli_usage_error("spectrum", "--subspace wants a whole number from 1 to %d, "
                                                   "not '%s'",
                                       DORA_SPEC_SUBSPACE_MAX, optarg);
            break;
        case OPT_COMPARE:
            opts.compare = 1;
            break;
        case OPT_EXACT:
            opts.randomized = 0;
            break;
        case OPT_FORCE:
            force = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(spectrum_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("spectrum", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("spectrum", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!out)
        return cli_usage_error("spectrum", "-o OUT.h5 is required");
    if (optind >= argc)
        return cli_usage_error("spectrum", "no run given");
    if (strlen(out) + 64 > 4096)
        return cli_usage_error("spectrum", "output path too long");
    const size_t nruns = (size_t)(argc - optind);
    if (opts.compare && nruns < 2)
        return cli_usage_error("spectrum", "--compare needs at least two runs");

    regex_t re_in, re_ex;
    int have_in = 0, have_ex = 0, status = EXIT_BAD_INPUT;
    char rmsg[256];
    if (modules_re) {
        int r = regcomp(&re_in, modules_re, REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            regerror(r, &re_in, rmsg, sizeof rmsg);
            return cli_usage_error("spectrum", "--modules '%s': %s", modules_re, rmsg);
        }
        have_in = 1;
        opts.include = &re_in;
    }
    if (exclude_re) {
        int r = regcomp(&re_ex, exclude_re, REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            regerror(r, &re_ex, rmsg, sizeof rmsg);
            if (have_in)
                regfree(&re_in);
            return cli_usage_error("spectrum", "--exclude '%s': %s", exclude_re, rmsg);
        }
        have_ex = 1;
        opts.exclude = &re_ex;
    }

    char **names = calloc(nruns, sizeof *names);
    const char **paths = calloc(nruns, sizeof *paths);
    dora_run *runs = calloc(nruns, sizeof *runs);
    size_t discovered = 0;
    dora_model *base = NULL;
    dora_spectrum sp;
    int have_sp = 0;
    char *cmdline = cli_command_line(argc, argv);
    dora_err err = {0};
    cli_inputs inputs = {0};
    if (!names || !paths || !runs || !cmdline) {
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
        goto cleanup;
    }
    for (size_t i = 0; i < nruns; i++) {
        const char *arg = argv[optind + (int)i];
        if (cli_split_run_arg(arg, &names[i], &paths[i]) != 0) {
            dora_errf(&err, "out of memory");
            status = cli_fail(&err);
            goto cleanup;
        }
        if (!cli_valid_run_name(names[i])) {
            status = cli_usage_error("spectrum", "'%s': a run name must be non-empty, not '.' or "
                                                 "'..', and without '/'",
                                     arg);
            goto cleanup;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                status = cli_usage_error("spectrum", "two runs are named '%s'; name them with "
                                                     "NAME=RUN",
                                         names[i]);
                goto cleanup;
            }
    }
    /* before any work: the output may not replace an input, or a file not ours */
    if (base_path)
        cli_inputs_add(&inputs, base_path);
    for (size_t i = 0; i < nruns; i++)
        cli_inputs_add(&inputs, paths[i]);
    if (inputs.oom) {
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
        goto cleanup;
    }
    if ((status = cli_check_output("spectrum", out, CLI_OUT_H5, &inputs, force)) != EXIT_OK)
        goto cleanup;
    status = EXIT_BAD_INPUT;
    cli_guard_signals();
    for (size_t i = 0; i < nruns; i++) {
        if (dora_run_discover(&runs[i], paths[i], &err) != 0) {
            status = cli_fail(&err);
            goto cleanup;
        }
        discovered++;
        if (!base_path && strcmp(runs[i].method, "ft") == 0) {
            status = cli_usage_error("spectrum", "'%s' holds full weights: the update W_t - W0 "
                                                 "needs the pre-trained model (--base PATH); "
                                                 "only LoRA adapters can be analysed without it",
                                     argv[optind + (int)i]);
            goto cleanup;
        }
        if (!quiet)
            for (size_t k = 0; k < runs[i].nnotes; k++)
                fprintf(stderr, "dora-analyze: note: %s\n", runs[i].notes[k]);
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
    if (base_path && dora_model_open(&base, base_path, &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    if (dora_spectrum_run(&sp, base, base_path, names, runs, nruns, &opts, &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    have_sp = 1;
    if (!quiet)
        for (size_t k = 0; k < sp.nnotes; k++)
            fprintf(stderr, "dora-analyze: note: %s\n", sp.notes[k]);

    if (dora_spectrum_write(out, &sp, cmdline, &err) != 0) {
        status = cli_fail(&err);
        goto cleanup;
    }
    print_table(&sp);
    status = cli_finish_stdout();
cleanup:
    cli_inputs_release(&inputs);
    if (have_sp)
        dora_spectrum_release(&sp);
    for (size_t i = 0; i < discovered; i++)
        dora_run_release(&runs[i]);
    for (size_t i = 0; names && i < nruns; i++)
        free(names[i]);
    free(names);
    free(paths);
    free(runs);
    free(cmdline);
    dora_model_close(base);
    if (have_in)
        regfree(&re_in);
    if (have_ex)
        regfree(&re_ex);
    return status;
}
