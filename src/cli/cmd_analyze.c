/* cmd_analyze.c - `dora-analyze analyze`: runs against a base, into HDF5. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/align.h"
#include "dora/analyze.h"
#include "dora/run.h"
#include "dora/tidy.h"
#include "core/util.h"

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
    "model in the folder itself), a single checkpoint folder, or a model file.\n"
    "NAME (default: the folder or file name) names the run in the output.\n"
    "\n"
    "Inputs read (the base and every checkpoint):\n"
    "  safetensors       a .safetensors file, or a folder with model.safetensors, its\n"
    "                    sharded model.safetensors.index.json, or one *.safetensors\n"
    "  PyTorch           torch.save zip archives (.bin, .pt, .pth; pytorch_model.bin and\n"
    "                    its .index.json shards), read without executing the pickle\n"
    "  adapters          a folder with adapter_config.json: HF PEFT LoRA and DoRA\n"
    "                    (adapter_model.safetensors or .bin; rsLoRA, rank/alpha_pattern,\n"
    "                    fan_in_fan_out, modules_to_save), the DoRA paper's format, and\n"
    "                    MLX adapters.safetensors (lora_parameters)\n"
    "\n"
    "options:\n"
    "  --base PATH       pre-trained model: .safetensors file or model folder (sharded ok),\n"
    "                    or a hub id ORG/NAME[@REV] in the HF cache; for adapter runs,\n"
    "                    default: the base_model_name_or_path their configs name\n"
    "  -o, --output FILE HDF5 file to write (replaced atomically when complete)\n"
    "  --modules RE      analyse only tensors whose name matches RE (POSIX extended)\n"
    "  --exclude RE      leave out tensors whose name matches RE\n"
    "  --rename 'RE=REP' rewrite checkpoint tensor names (PCRE2, every match; $1 for a\n"
    "                    group) before they are matched to the base's; repeatable\n"
    "  --transpose RE    FT weights whose name matches RE are stored [in, out] (Conv1D):\n"
    "                    read them as [out, in] (gpt2-like bases: from config.json)\n"
    "  --no-split        analyse fused projections (qkv_proj, query_key_value, c_attn,\n"
    "                    Wqkv, W_pack, gate_up_proj, linear_qkv, linear_fc1) whole, not\n"
    "                    split into q/k/v parts\n"
    "  -j, --jobs N      threads (default: all cores)\n"
    "  --mem SIZE        memory for the LoRA/DoRA factors and buffers, all threads,\n"
    "                    e.g. 256M (default: 56M, the process under 64M); steps are\n"
    "                    taken in groups that fit\n"
    "  --per-row         also store per-row magnitudes and cosines\n"
    "  --base-quant Q    W0 of adapter runs is the bitsandbytes round trip of the base:\n"
    "                    nf4, fp4, nf4-dq, fp4-dq (double quant), int8 (LLM.int8); a\n"
    "                    quantization_config in the base's config.json is followed\n"
    "                    without it\n"
    "  --initial-adapter DIR  the adapter as PEFT initialised it (before training), for\n"
    "                    init_lora_weights pissa_niter_K runs without a checkpoint-0/\n"
    "  --bootstrap B     replicates of the layer-cluster bootstrap behind the 95%\n"
    "                    intervals of r in /regression (100 to 1000000; default 10000)\n"
    "  --csv FILE        write the table as CSV to FILE instead of TSV on stdout\n"
    "                    ('-': CSV on stdout)\n"
    "  --force           replace an existing OUT.h5 or CSV file that this tool did not\n"
    "                    write (an input is never replaced)\n"
    "  --progress=WHEN   progress line on stderr (bytes read, rate, time left, the run):\n"
    "                    auto (if stderr is a terminal), always, never\n"
    "  -q, --quiet       no notes or summary line on stderr (errors are still printed)\n"
    "  -h, --help        this help\n"
    "\n"
    "exit status: 0 success, 1 bad input or failed analysis, 2 usage error\n";

/* The options of one `analyze`. */
typedef struct analyze_args {
    const char *base_path, *out, *modules_re, *exclude_re, *csv;
    int64_t jobs;
    uint64_t mem; /* --mem, 0: the default */
    int per_row, quiet, force, progress;
    int csv_stdout; /* --csv -: the CSV table on stdout */
    cli_term term; /* the progress line and the notes on stderr */
    const char *renames[DORA_MAX_RENAMES];
    const char *transpose;
    int no_split;
    size_t nrenames;
    dora_quant base_quant;
    const char *initial_adapter;
    dora_stats_opts stats; /* --bootstrap */
    char *base_owned; /* the base the adapters name, without --base */
} analyze_args;

/* Options into *A (optind then at the first run). -1 to go on, else the exit
 * status to return (--help, a usage error). */
static int parse_options(int argc, char **argv, analyze_args *a)
{
    enum { OPT_BASE = 256, OPT_MODULES, OPT_EXCLUDE, OPT_PER_ROW, OPT_CSV, OPT_FORCE,
           OPT_RENAME, OPT_TRANSPOSE, OPT_NO_SPLIT, OPT_BASE_QUANT, OPT_PROGRESS, OPT_MEM,
           OPT_INITIAL, OPT_BOOTSTRAP };
    static const struct option longopts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"output", required_argument, NULL, 'o'},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"jobs", required_argument, NULL, 'j'},
        {"mem", required_argument, NULL, OPT_MEM},
        {"per-row", no_argument, NULL, OPT_PER_ROW},
        {"base-quant", required_argument, NULL, OPT_BASE_QUANT},
        {"initial-adapter", required_argument, NULL, OPT_INITIAL},
        {"csv", required_argument, NULL, OPT_CSV},
        {"force", no_argument, NULL, OPT_FORCE},
        {"rename", required_argument, NULL, OPT_RENAME},
        {"transpose", required_argument, NULL, OPT_TRANSPOSE},
        {"no-split", no_argument, NULL, OPT_NO_SPLIT},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, st;
    cli_seen seen = {{0}};
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:j:qh", longopts, NULL)) != -1) {
        if (c != OPT_RENAME && (st = cli_option_once(&seen, "analyze", c, longopts)) >= 0)
            return st;
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
        case OPT_MEM:
            if ((st = cli_parse_lora_mem("analyze", optarg, &a->mem)) >= 0)
                return st;
            break;
        case OPT_INITIAL: a->initial_adapter = optarg; break;
        case OPT_BASE_QUANT:
            if (dora_quant_parse(optarg, &a->base_quant) != 0)
                return cli_usage_error("analyze", "--base-quant wants nf4, fp4, int8, nf4-dq, "
                                                  "fp4-dq or none, not '%s'",
                                       optarg);
            break;
        case OPT_CSV:
            a->csv_stdout = strcmp(optarg, "-") == 0;
            a->csv = a->csv_stdout ? NULL : optarg;
            break;
        case OPT_FORCE: a->force = 1; break;
        case OPT_PROGRESS:
            if ((st = cli_parse_progress("analyze", optarg, &a->progress)) >= 0)
                return st;
            break;
        case OPT_RENAME:
            if ((st = cli_add_rename("analyze", optarg, a->renames, &a->nrenames)) >= 0)
                return st;
            break;
        case OPT_NO_SPLIT: a->no_split = 1; break;
        case OPT_BOOTSTRAP:
            if ((st = cli_parse_bootstrap("analyze", optarg, &a->stats.bootstrap)) >= 0)
                return st;
            break;
        case OPT_TRANSPOSE:
            if ((st = cli_check_transpose("analyze", optarg)) >= 0)
                return st;
            a->transpose = optarg;
            break;
        case 'q': a->quiet = 1; break;
        case 'h':
            fputs(analyze_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("analyze", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_unknown_option("analyze", argv[optind - 1], longopts);
        }
    }
    return -1;
}

/* Without --base: say why for an adapter run, which cannot be analysed alone. */
/* Without --base: the base every adapter run's config names (a path or a hub
 * id), noted unless quiet; else a usage error that says why --base is needed. */
static int base_from_adapters(analyze_args *a, int nargs, char **args)
{
    const char **paths = calloc(nargs > 0 ? (size_t)nargs : 1, sizeof *paths);
    int status = EXIT_OK;
    for (int i = 0; paths && i < nargs && status == EXIT_OK; i++) {
        char *name;
        if (cli_split_run_arg(args[i], &name, &paths[i]) != 0)
            status = EXIT_BAD_INPUT;
        free(name);
    }
    dora_err e;
    if (!paths || status != EXIT_OK)
        status = cli_usage_error("analyze", "--base PATH is required");
    else if (nargs < 1 || dora_runs_adapter_base(paths, (size_t)nargs, &a->base_owned, &e) != 0)
        status = cli_usage_error("analyze", "--base PATH is required%s%s%s: dM and dD compare "
                                            "the weights with the pre-trained ones",
                                 nargs < 1 ? "" : " (", nargs < 1 ? "" : e.msg,
                                 nargs < 1 ? "" : ")");
    free(paths);
    if (status != EXIT_OK)
        return status;
    a->base_path = a->base_owned;
    if (!a->quiet)
        fprintf(stderr, "dora-analyze: note: base '%s', as the adapters' "
                        "base_model_name_or_path names it\n",
                a->base_path);
    return EXIT_OK;
}

/* Usage errors that need no file: EXIT_OK when the options hold together. */
static int check_args(const analyze_args *a, int nargs)
{
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

/* Notes on stderr unless quiet (CTX: the analyze_args); steps left out always. */
static void on_note(void *ctx, const char *run, const char *msg, int failed)
{
    analyze_args *a = ctx;
    char line[DORA_ERR_MAX + 600];
    snprintf(line, sizeof line, "%s: %s%s%s%s", failed ? "error" : "note", run ? "run '" : "",
             run ? run : "", run ? "': " : "", msg);
    if (failed || !a->quiet)
        cli_term_line(&a->term, line);
}

/* OUT.h5, and the table to --csv FILE (both files or neither) or stdout (TSV,
 * or CSV for --csv -). */
static int write_outputs(const analyze_args *a, const dora_result *res, size_t nruns,
                         const char *cmdline)
{
    dora_err err;
    if (dora_tidy_write_stats(a->out, a->csv, res, nruns, cmdline, &a->stats, &err) != 0)
        return cli_fail(&err);
    if (a->csv)
        return EXIT_OK;
    dora_tidy_print(stdout, res, nruns, a->csv_stdout);
    return cli_finish_stdout();
}

/* Analyse the runs under the progress line, write the outputs, and say what
 * was written (unless quiet). */
static int analyse_and_write(analyze_args *a, char **names, const char *const *paths,
                             size_t nruns, dora_result *res, size_t *done, const char *cmdline,
                             const dora_analysis_opts *opts)
{
    dora_err err;
    cli_term_start(&a->term);
    int rc = dora_analyze_runs(res, done, a->base_path, names, paths, nruns, opts, on_note, a,
                               &err);
    cli_term_stop(&a->term);
    if (rc != 0)
        return cli_fail(&err);
    int status = write_outputs(a, res, nruns, cmdline);
    if (status != EXIT_OK)
        return status;
    size_t steps = 0, tensors = 0, incomplete = 0;
    for (size_t i = 0; i < nruns; i++) {
        steps += res[i].nsteps;
        tensors += res[i].nmodules;
        incomplete += res[i].nfailures;
    }
    if (!a->quiet)
        cli_term_summary(&a->term, a->out, "%zu run(s), %zu step(s), %zu tensor(s)", nruns, steps,
                         tensors);
    if (incomplete) {
        /* the results hold every step that could be read; the others are named above */
        fprintf(stderr, "dora-analyze: error: %zu step(s) left out; '%s' holds the others\n",
                incomplete, a->out);
        return EXIT_BAD_INPUT;
    }
    return EXIT_OK;
}

int cmd_analyze(int argc, char **argv)
{
    analyze_args a = {0};
    int status = parse_options(argc, argv, &a);
    if (status >= 0)
        return status;
    char **args = argv + optind;
    const size_t nruns = argc > optind ? (size_t)(argc - optind) : 0;
    dora_filter filter;
    if ((status = check_args(&a, (int)nruns)) != EXIT_OK ||
        (!a.base_path && (status = base_from_adapters(&a, (int)nruns, args)) != EXIT_OK) ||
        (status = cli_compile_filter("analyze", &filter, a.modules_re, a.exclude_re)) != EXIT_OK) {
        free(a.base_owned);
        return status;
    }

    cli_term_init(&a.term, cli_progress_shown(a.progress, a.quiet), "runs");
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
        .initial_adapter = a.initial_adapter,
        .progress = &a.term.prog,
        .mem_bytes = a.mem,
    };
    status = analyse_and_write(&a, names, paths, nruns, res, &done, cmdline, &opts);
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
    cli_term_release(&a.term);
    free(a.base_owned);
    return status;
}
