/* cmd_spectrum.c - `dora-analyze spectrum`: singular value spectra of the
 * updates, r90, stable rank, intruder dimensions and subspace similarity, into
 * HDF5, with a tidy table on stdout. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/align.h"
#include "dora/h5out.h"
#include "dora/model.h"
#include "dora/notes.h"
#include "dora/quant.h"
#include "dora/run.h"
#include "dora/spectral.h"
#include "core/util.h"

#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <math.h>
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
    "  --rename 'RE=REP' rewrite checkpoint tensor names (PCRE2, every match; $1 for a\n"
    "                    group) before they are matched to the base's; repeatable\n"
    "  --transpose RE    FT weights whose name matches RE are stored [in, out] (Conv1D):\n"
    "                    read them as [out, in] (gpt2-like bases: from config.json)\n"
    "  --no-split        analyse fused projections (qkv_proj, query_key_value, c_attn,\n"
    "                    Wqkv, W_pack, gate_up_proj, linear_qkv) whole, not split into\n"
    "                    q/k/v parts; with --base, modules are chosen as analyze\n"
    "                    chooses them (names aligned, Conv1D transposed, fused split)\n"
    "  --top K           keep the top K singular values per module and step (dense\n"
    "                    updates: partial SVD, randomised when K is small)\n"
    "  --threshold T     intruder threshold on |cos|, 0 < T <= 1 (default 0.5)\n"
    "  --subspace K      singular vectors compared by phi, 1..256 (default 16)\n"
    "  --compare         also phi between every pair of runs\n"
    "  --exact           no randomised SVD (LAPACK dgesvdx for --top and for W_t's\n"
    "                    top 10 vectors)\n"
    "  -j, --jobs N      modules decomposed at once (default: one per CPU)\n"
    "  --mem SIZE        memory for the modules in flight, e.g. 8G (default: half\n"
    "                    the RAM); fewer at once rather than failing\n"
    "  --cache DIR       keep the base's SVDs in folder DIR, and take them from there\n"
    "                    when a later command has the same base file and tensor\n"
    "  --initial-adapter DIR  the adapter as PEFT initialised it (before training), for\n"
    "                    init_lora_weights pissa_niter_K runs without a checkpoint-0/\n"
    "  --base-quant Q    W0 of adapter runs is the bitsandbytes round trip of the base,\n"
    "                    as in analyze: nf4, fp4, nf4-dq, fp4-dq, int8; a\n"
    "                    quantization_config in the base's config.json is followed\n"
    "                    without it\n"
    "  --force           replace an existing OUT.h5 that this tool did not write (an\n"
    "                    input is never replaced)\n"
    "  --progress=WHEN   progress line on stderr (modules done, time left, the module):\n"
    "                    auto (if stderr is a terminal), always, never\n"
    "  -q, --quiet       no notes or summary line on stderr (errors are still printed)\n"
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

/* The options of one `spectrum`. */
typedef struct spectrum_args {
    const char *base_path, *out, *modules_re, *exclude_re;
    dora_spectrum_opts opts;
    const char *renames[DORA_MAX_RENAMES];
    int quiet, force, progress;
    cli_term term; /* the progress line */
    const char *initial_adapter; /* --initial-adapter DIR, or NULL */
    dora_quant base_quant;       /* --base-quant, or none */
    dora_adapter *initial;       /* opened from it */
} spectrum_args;

/* One option that takes a number into A->opts: -1 to go on, else EXIT_USAGE. */
static int parse_number(int c, const char *arg, spectrum_args *a);

enum { OPT_BASE = 256, OPT_MODULES, OPT_EXCLUDE, OPT_TOP, OPT_THRESHOLD, OPT_SUBSPACE,
       OPT_COMPARE, OPT_EXACT, OPT_FORCE, OPT_MEM, OPT_CACHE, OPT_PROGRESS, OPT_RENAME,
       OPT_TRANSPOSE, OPT_NO_SPLIT, OPT_INITIAL, OPT_BASE_QUANT };

/* Options into *A (optind then at the first run). -1 to go on, else the exit
 * status to return (--help, a usage error). */
static int parse_options(int argc, char **argv, spectrum_args *a)
{
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
        {"jobs", required_argument, NULL, 'j'},
        {"mem", required_argument, NULL, OPT_MEM},
        {"cache", required_argument, NULL, OPT_CACHE},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        {"rename", required_argument, NULL, OPT_RENAME},
        {"transpose", required_argument, NULL, OPT_TRANSPOSE},
        {"no-split", no_argument, NULL, OPT_NO_SPLIT},
        {"initial-adapter", required_argument, NULL, OPT_INITIAL},
        {"base-quant", required_argument, NULL, OPT_BASE_QUANT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, r;
    cli_seen seen = {{0}};
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:j:qh", longopts, NULL)) != -1) {
        if (c != OPT_RENAME && (r = cli_option_once(&seen, "spectrum", c, longopts)) >= 0)
            return r;
        switch (c) {
        case OPT_BASE: a->base_path = optarg; break;
        case 'o': a->out = optarg; break;
        case OPT_MODULES: a->modules_re = optarg; break;
        case OPT_EXCLUDE: a->exclude_re = optarg; break;
        case OPT_TOP:
        case OPT_THRESHOLD:
        case OPT_SUBSPACE:
        case 'j':
        case OPT_MEM:
            if ((r = parse_number(c, optarg, a)) >= 0)
                return r;
            break;
        case OPT_COMPARE: a->opts.compare = 1; break;
        case OPT_CACHE: a->opts.cache_dir = optarg; break;
        case OPT_EXACT: a->opts.randomized = 0; break;
        case OPT_RENAME:
            if ((r = cli_add_rename("spectrum", optarg, a->renames, &a->opts.nrenames)) >= 0)
                return r;
            a->opts.renames = a->renames;
            break;
        case OPT_TRANSPOSE:
            if ((r = cli_check_transpose("spectrum", optarg)) >= 0)
                return r;
            a->opts.transpose = optarg;
            break;
        case OPT_NO_SPLIT: a->opts.no_split = 1; break;
        case OPT_INITIAL: a->initial_adapter = optarg; break;
        case OPT_BASE_QUANT:
            if (dora_quant_parse(optarg, &a->base_quant) != 0)
                return cli_usage_error("spectrum", "--base-quant wants nf4, fp4, int8, nf4-dq, "
                                                   "fp4-dq or none, not '%s'",
                                       optarg);
            break;
        case OPT_FORCE: a->force = 1; break;
        case OPT_PROGRESS:
            if ((r = cli_parse_progress("spectrum", optarg, &a->progress)) >= 0)
                return r;
            break;
        case 'q': a->quiet = 1; break;
        case 'h':
            fputs(spectrum_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("spectrum", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_unknown_option("spectrum", argv[optind - 1], longopts);
        }
    }
    if (!a->out)
        return cli_usage_error("spectrum", "-o OUT.h5 is required");
    if (optind >= argc)
        return cli_usage_error("spectrum", "no run given");
    if (strlen(a->out) + 64 > 4096)
        return cli_usage_error("spectrum", "output path too long");
    if (!a->base_path && a->base_quant != DORA_QUANT_NONE)
        return cli_usage_error("spectrum", "--base-quant quantises the base: it needs --base");
    if (!a->base_path && (a->opts.nrenames || a->opts.transpose))
        return cli_usage_error("spectrum", "%s names full weights, which need --base",
                               a->opts.nrenames ? "--rename" : "--transpose");
    if (a->opts.compare && argc - optind < 2)
        return cli_usage_error("spectrum", "--compare needs at least two runs");
    struct stat st;
    if (a->opts.cache_dir && (stat(a->opts.cache_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return cli_usage_error("spectrum", "--cache '%s' is not a folder", a->opts.cache_dir);
    return -1;
}

static int parse_number(int c, const char *arg, spectrum_args *a)
{
    dora_spectrum_opts *o = &a->opts;
    if (c == OPT_TOP && util_parse_i64(arg, 1, INT32_MAX, &o->top) != 0)
        return cli_usage_error("spectrum", "--top wants a whole number >= 1, not '%s'", arg);
    if (c == OPT_THRESHOLD &&
        (parse_double(arg, &o->threshold) != 0 || !(o->threshold > 0) || o->threshold > 1))
        return cli_usage_error("spectrum", "--threshold wants a number in (0, 1], not '%s'", arg);
    if (c == OPT_SUBSPACE && util_parse_i64(arg, 1, DORA_SPEC_SUBSPACE_MAX, &o->subspace) != 0)
        return cli_usage_error("spectrum", "--subspace wants a whole number from 1 to %d, not '%s'",
                               DORA_SPEC_SUBSPACE_MAX, arg);
    int64_t j;
    if (c == 'j' && util_parse_i64(arg, 1, 4096, &j) != 0)
        return cli_usage_error("spectrum", "-j wants a whole number from 1 to 4096, not '%s'", arg);
    if (c == 'j')
        o->threads = (int)j;
    if (c == OPT_MEM && util_parse_size(arg, &o->mem_bytes) != 0)
        return cli_usage_error("spectrum", "--mem wants a size such as 512M or 8G, not '%s'", arg);
    return -1;
}

/* pissa_niter_K: RUN's adapters take B0 A0 from --initial-adapter (as
 * analyze's do); without --base, their factors are bound here (with a base,
 * by dora_adapter_check), and pissa / olora are refused. */
static int spectrum_initial(dora_run *run, const spectrum_args *a, dora_err *err)
{
    if (a->initial)
        dora_run_set_initial(run, a->initial);
    for (size_t s = 0; !a->base_path && s < run->nsteps; s++)
        if (dora_adapter_bind_alone(run->steps[s].adapter, err) != 0)
            return -1;
    return 0;
}

/* Discover each run into RUNS[0..*discovered), its notes on stderr unless
 * quiet; a full-weight run without --base is a usage error. */
static int discover_runs(dora_run *runs, size_t *discovered, const spectrum_args *a,
                         char *const *args, const char *const *paths, size_t nruns)
{
    dora_err err;
    for (size_t i = 0; i < nruns; i++) {
        if (dora_run_discover(&runs[i], paths[i], &err) != 0)
            return cli_fail(&err);
        ++*discovered;
        if (spectrum_initial(&runs[i], a, &err) != 0)
            return cli_fail(&err);
        if (!a->base_path && strcmp(runs[i].method, "ft") == 0)
            return cli_usage_error("spectrum", "'%s' holds full weights: the update W_t - W0 "
                                               "needs the pre-trained model (--base PATH); only "
                                               "LoRA adapters can be analysed without it",
                                   args[i]);
        for (size_t k = 0; !a->quiet && k < runs[i].nnotes; k++)
            cli_note(NULL, runs[i].notes[k]);
    }
    return EXIT_OK;
}

/* W0 as QLoRA's adapters saw it (--base-quant Q, or the base's
 * quantization_config; SKIP its llm_int8_skip_modules): the round trip of
 * BASE for the modules any run's adapters adapt, into *QB. One view serves
 * every run: spectrum analyses only the modules a run adapts, so a module
 * quantised for another run is never read in this one. Full-weight runs
 * are refused, as analyze refuses them. */
static int spectrum_quant(const dora_model *base, const dora_run *runs, size_t nruns,
                          dora_quant q, const char *skip, dora_quant_base **qb, char *note,
                          size_t len, dora_err *err)
{
    size_t cap = 0;
    for (size_t i = 0; i < nruns; i++)
        for (size_t s = 0; s < runs[i].nsteps; s++) {
            const dora_adapter *ad = runs[i].steps[s].adapter;
            if (!ad)
                return dora_errf(err, "'%s': --base-quant %s applies to adapter runs: which "
                                      "weights of a fully fine-tuned model were quantised is "
                                      "not known",
                                 runs[i].steps[s].path, dora_quant_name(q));
            cap += ad->nmodules;
        }
    dora_adapter u; /* the union of the runs' modules, for dora_quant_base_open */
    memset(&u, 0, sizeof u);
    if (!(u.modules = calloc(cap + 1, sizeof *u.modules)))
        return dora_errf(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < nruns && rc == 0; i++)
        for (size_t s = 0; s < runs[i].nsteps && rc == 0; s++) {
            const dora_adapter *ad = runs[i].steps[s].adapter;
            if (ad->init_lora && !u.init_lora) { /* refused there, naming it */
                u.init_lora = ad->init_lora;
                u.config_path = ad->config_path;
            }
            for (size_t k = 0; k < ad->nmodules && rc == 0; k++) {
                const dora_adapted *m = &ad->modules[k];
                size_t j = 0;
                while (j < u.nmodules && strcmp(u.modules[j].base_name, m->base_name) != 0)
                    j++;
                if (j == u.nmodules)
                    u.modules[u.nmodules++] = *m;
                else if (u.modules[j].kind != m->kind ||
                         u.modules[j].fan_in_fan_out != m->fan_in_fan_out)
                    rc = dora_errf(err, "'%s': module '%s' is adapted otherwise than in another "
                                        "run (kind or fan_in_fan_out): which layout bitsandbytes "
                                        "quantised is ambiguous (give the runs to separate "
                                        "commands)",
                                   ad->config_path, m->base_name);
            }
        }
    if (rc == 0 && dora_quant_base_open(qb, base, &u, q, skip, err) != 0)
        rc = -1;
    free(u.modules);
    if (rc == 0)
        snprintf(note, len, "W0 is the bitsandbytes %s round trip of the base for %zu adapted "
                            "weight(s); %zu adapted tensor(s) (not nn.Linear, lm_head or "
                            "skipped) are the base as given",
                 dora_quant_name(q), (*qb)->nquant, (*qb)->nkept);
    return rc;
}

/* The base as the runs were trained on it into *W0: BASE, its dequantised
 * view *SAVED when bitsandbytes saved it, or its round trip *QB (as analyze
 * settles them); the notes on stderr unless quiet. */
static int spectrum_w0(const spectrum_args *a, const dora_model *base, const dora_run *runs,
                       size_t nruns, dora_quant_base **saved, dora_quant_base **qb,
                       const dora_model **w0, dora_err *err)
{
    char note[DORA_NOTE_MAX];
    dora_quant q = a->base_quant;
    char *skip = NULL;
    *w0 = base;
    if (dora_bnb_saved_w0(base, a->base_quant, saved, note, sizeof note, err) != 0)
        return -1;
    if (*saved) {
        *w0 = &(*saved)->view;
    } else {
        if (dora_quant_settle(a->base_path, &q, &skip, err) != 0)
            return -1;
        int rc = q == DORA_QUANT_NONE
                     ? 0
                     : spectrum_quant(base, runs, nruns, q, skip, qb, note, sizeof note, err);
        free(skip);
        if (rc != 0)
            return -1;
        if (*qb)
            *w0 = &(*qb)->view;
    }
    if ((*saved || *qb) && !a->quiet)
        cli_note(NULL, note);
    return 0;
}

/* Open the base (if any), analyse the runs, write OUT.h5 and print the table. */
static int analyse_and_write(spectrum_args *a, char *const *names, const dora_run *runs,
                             size_t nruns, const char *cmdline)
{
    dora_model *base = NULL;
    dora_quant_base *saved = NULL, *qb = NULL; /* bnb-saved and dequantised; a round trip */
    const dora_model *w0 = NULL;
    dora_spectrum sp;
    dora_err err;
    if (a->base_path && (dora_model_open(&base, a->base_path, &err) != 0 ||
                         spectrum_w0(a, base, runs, nruns, &saved, &qb, &w0, &err) != 0)) {
        dora_quant_base_close(saved);
        dora_quant_base_close(qb);
        dora_model_close(base);
        return cli_fail(&err);
    }
    cli_term_start(&a->term);
    int rc = dora_spectrum_run(&sp, w0, a->base_path, names, runs, nruns, &a->opts, &err);
    cli_term_stop(&a->term);
    if (rc != 0) {
        dora_quant_base_close(saved);
        dora_quant_base_close(qb);
        dora_model_close(base);
        return cli_fail(&err);
    }
    for (size_t k = 0; !a->quiet && k < sp.nnotes; k++)
        cli_note(NULL, sp.notes[k]);
    int status;
    if (dora_spectrum_write(a->out, &sp, cmdline, &err) != 0) {
        status = cli_fail(&err);
    } else {
        print_table(&sp);
        status = cli_finish_stdout();
        size_t nmod = 0;
        for (size_t i = 0; i < sp.nruns; i++)
            nmod += sp.runs[i].nmodules;
        if (status == EXIT_OK && !a->quiet)
            cli_term_summary(&a->term, a->out, "%zu run(s), %zu module(s)", sp.nruns, nmod);
    }
    dora_spectrum_release(&sp);
    dora_quant_base_close(saved);
    dora_quant_base_close(qb);
    dora_model_close(base);
    return status;
}

int cmd_spectrum(int argc, char **argv)
{
    spectrum_args a = {0};
    dora_spectrum_opts_init(&a.opts);
    int status = parse_options(argc, argv, &a);
    if (status >= 0)
        return status;
    char **args = argv + optind;
    const size_t nruns = (size_t)(argc - optind);
    dora_filter filter;
    if ((status = cli_compile_filter("spectrum", &filter, a.modules_re, a.exclude_re)) != EXIT_OK)
        return status;
    a.opts.include = dora_filter_include(&filter);
    a.opts.exclude = dora_filter_exclude(&filter);

    cli_term_init(&a.term, cli_progress_shown(a.progress, a.quiet), "modules");
    a.opts.progress = &a.term.prog;
    char **names = calloc(nruns, sizeof *names);
    const char **paths = calloc(nruns, sizeof *paths);
    dora_run *runs = calloc(nruns, sizeof *runs);
    size_t discovered = 0;
    char *cmdline = cli_command_line(argc, argv);
    if (!names || !paths || !runs || !cmdline) {
        dora_err err;
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
        goto cleanup;
    }
    /* before any work: the output may not replace an input, or a file not ours */
    if ((status = cli_parse_runs("spectrum", nruns, args, names, paths)) != EXIT_OK ||
        (status = cli_check_outputs("spectrum", a.out, NULL, a.base_path, paths, nruns,
                                    a.force)) != EXIT_OK)
        goto cleanup;
    cli_guard_signals();
    dora_err ierr;
    if (a.initial_adapter && dora_adapter_open(&a.initial, a.initial_adapter, &ierr) != 0) {
        status = cli_fail(&ierr);
        goto cleanup;
    }
    if ((status = discover_runs(runs, &discovered, &a, args, paths, nruns)) == EXIT_OK &&
        (status = cli_check_output_dir(a.out)) == EXIT_OK)
        status = analyse_and_write(&a, names, runs, nruns, cmdline);
cleanup:
    for (size_t i = 0; i < discovered; i++)
        dora_run_release(&runs[i]);
    for (size_t i = 0; names && i < nruns; i++)
        free(names[i]);
    free(names);
    free(paths);
    free(runs);
    free(cmdline);
    dora_adapter_close(a.initial);
    dora_filter_free(&filter);
    cli_term_release(&a.term);
    return status;
}
