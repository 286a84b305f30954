/* cmd_inspect.c - `dora-analyze inspect PATH`: what a file or run folder holds.
 *
 * The printing stays here rather than in a library function: it is the
 * command's presentation of what checkpoints/ already returns (dora_run,
 * dora_model, dora_adapter), with no computation of its own beyond a sum of
 * bytes, and no other caller wants that text. Discovery, probing and opening
 * are library calls; this file only lays out their results as TSV. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/adapter.h"
#include "dora/h5in.h"
#include "dora/h5out.h"
#include "dora/model.h"
#include "dora/quant.h"
#include "dora/run.h"
#include "core/util.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char inspect_help[] =
    "usage: dora-analyze inspect PATH\n"
    "\n"
    "For a model file or checkpoint folder: its tensors as TSV (name, dtype, shape,\n"
    "bytes, file), after '#' lines with the format and metadata. For a Trainer\n"
    "output folder: the checkpoints and steps found (step, path, tensors, bytes)\n"
    "and the method detected. For a results file of this tool (analyze, batch,\n"
    "merge, spectrum): its analysis, layout_version, tool version and command line\n"
    "in '#' lines, then one line per run (run, method, steps, modules, the steps).\n"
    "\n"
    "exit status: 0 success, 1 bad or unreadable input, 2 usage error\n";

/* The bytes of every tensor of M. */
static uint64_t model_bytes(const dora_model *m)
{
    uint64_t total = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        total += m->by_name[i]->nbytes;
    return total;
}

static void print_tensors(const dora_model *m)
{
    uint64_t total = model_bytes(m);
    printf("# model: %s (%s%s, %zu file(s), %zu tensors, %llu bytes)\n", m->path,
           m->kind == DORA_MODEL_SHARDED ? "sharded " : "",
           m->nfiles ? m->files[0]->format : "?", m->nfiles, m->ntensors,
           (unsigned long long)total);
    for (size_t f = 0; f < m->nfiles; f++)
        for (size_t k = 0; k < m->files[f]->nmeta; k++)
            printf("# metadata %s: %s = %s\n", m->files[f]->path, m->files[f]->meta_keys[k],
                   m->files[f]->meta_values[k]);
    printf("name\tdtype\tshape\tbytes\tfile\n");
    for (size_t i = 0; i < m->ntensors; i++) {
        const dora_tensor *t = m->by_name[i];
        char shape[512];
        dora_shape_str(t, shape, sizeof shape);
        printf("%s\t%s\t%s\t%llu\t%s\n", t->name, dora_dtype_name(t->dtype), shape,
               (unsigned long long)t->nbytes, t->file);
    }
}

/* The parameters of PEFT's other families (IA3, AdaLoRA, VeRA, LoHa, LoKr). */
static void print_family(const dora_adapter *a)
{
    printf("# family %s: fan_in_fan_out %s\n", a->method, a->fan_in_fan_out ? "true" : "false");
    if (strcmp(a->method, "adalora") == 0)
        printf("# init_r %lld (ranknum), lora_alpha %.17g (scaling)\n", (long long)a->init_r,
               a->lora_alpha);
    for (size_t i = 0; i < a->nmask; i++)
        printf("# rank_pattern %s keeps %lld of %lld ranks\n", a->masks[i].pattern,
               (long long)a->masks[i].rank, (long long)a->init_r);
    if (strcmp(a->method, "vera") == 0)
        printf("# r %lld (scale 1)\n", (long long)a->r);
    if (strcmp(a->method, "loha") == 0 || strcmp(a->method, "lokr") == 0)
        printf("# r %lld, alpha %.17g (scale alpha / r)\n", (long long)a->r, a->lora_alpha);
    for (size_t i = 0; i < a->nff; i++)
        printf("# feedforward_modules %s (columns scaled)\n", a->ff[i]);
    if (a->ff_regex)
        printf("# feedforward_modules regex %s (columns scaled)\n", a->ff_regex);
    const dora_tensor *vp[2] = {a->vera_A, a->vera_B};
    for (int i = 0; i < 2; i++)
        if (vp[i]) {
            char shp[256];
            dora_shape_str(vp[i], shp, sizeof shp);
            printf("# shared projection %s %s (sliced per module)\n", vp[i]->name, shp);
        }
    for (size_t i = 0; i < a->nrank_pattern; i++)
        printf("# rank_pattern %s = %lld\n", a->rank_pattern[i].pattern,
               (long long)a->rank_pattern[i].rank);
    for (size_t i = 0; i < a->nalpha_pattern; i++)
        printf("# alpha_pattern %s = %.17g\n", a->alpha_pattern[i].pattern,
               a->alpha_pattern[i].value);
    printf("# target_modules %s\n", a->targets);
    printf("# base model %s\n", a->base_model ? a->base_model : "(not named)");
}

/* A kohya / LyCORIS file: what its keys say (the prefixes, the dora_scale forms). */
static void print_kohya(const dora_adapter *a)
{
    static const char *const pre[] = {"lora_unet_", "lora_te1_", "lora_te2_", "lora_te_",
                                      "lycoris_", "lora_"};
    size_t npre[6] = {0}, ncol = 0, nrow = 0, nconv = 0;
    for (size_t i = 0; i < a->nmodules; i++) {
        const dora_adapted *m = &a->modules[i];
        for (size_t k = 0; k < 6; k++)
            if (strncmp(m->key, pre[k], strlen(pre[k])) == 0) {
                npre[k]++;
                break;
            }
        ncol += m->dora_scale && m->dora_cols != 0;
        nrow += m->dora_scale && m->dora_cols == 0;
        nconv += (m->R.t && m->R.t->ndim == 4) || m->aux; /* aux: a kohya conv's kernel */
    }
    printf("# kohya / LyCORIS file: %zu module(s), method %s, %zu conv(s); prefixes", a->nmodules,
           a->method, nconv);
    for (size_t k = 0; k < 6; k++)
        if (npre[k])
            printf(" %s %zu", pre[k], npre[k]);
    printf("\n# scale alpha / r (1 without alpha); dora_scale: %zu [1, in] (column norms), %zu "
           "[out, 1] (row norms, wd_on_output)\n",
           ncol, nrow);
    printf("# modules are keyed as in the file; analyze matches them to the base's tensors\n");
}

static void print_adapter(const dora_adapter *a)
{
    printf("# adapter: %s (format %s, peft_type %s, method %s)\n", a->dir, a->format, a->peft_type,
           a->method);
    if (a->kohya) {
        print_kohya(a);
    } else if (strcmp(a->format, "mlx") == 0) {
        printf("# r %lld, scale %.17g (lora_parameters)\n", (long long)a->r,
               a->lora_alpha / (double)a->r);
    } else if (strcmp(a->method, "lora") != 0 && strcmp(a->method, "dora") != 0) {
        print_family(a);
    } else {
        printf("# r %lld, lora_alpha %.17g, use_rslora %s, use_dora %s, fan_in_fan_out %s\n",
               (long long)a->r, a->lora_alpha, a->use_rslora ? "true" : "false",
               a->use_dora ? "true" : "false", a->fan_in_fan_out ? "true" : "false");
        printf("# target_modules %s\n", a->targets);
        for (size_t i = 0; i < a->nrank_pattern; i++)
            printf("# rank_pattern %s = %.17g\n", a->rank_pattern[i].pattern,
                   a->rank_pattern[i].value);
        for (size_t i = 0; i < a->nalpha_pattern; i++)
            printf("# alpha_pattern %s = %.17g\n", a->alpha_pattern[i].pattern,
                   a->alpha_pattern[i].value);
        printf("# base model %s\n", a->base_model ? a->base_model : "(not named)");
    }
    printf("module\tkind\tr\talpha\tscale\tupdate\tmagnitude\n");
    for (size_t i = 0; i < a->nmodules; i++) {
        const dora_adapted *m = &a->modules[i];
        if (m->kind == DORA_ADAPTED_SAVED) {
            char shp[256];
            dora_shape_str(m->saved, shp, sizeof shp);
            printf("%s\t%s\t-\t-\t-\t%s %s\t-\n", m->base_name,
                   a->kohya && m->layout ? m->layout : "saved", /* LyCORIS full / OFT */
                   dora_dtype_name(m->saved->dtype), shp);
            continue;
        }
        if (m->ia3 && !m->L.t) { /* its factors are formed against the base */
            char shp[256];
            dora_shape_str(m->ia3, shp, sizeof shp);
            printf("%s\t%s%s\t-\t-\t1\t%s %s\t-\n", m->base_name, m->layout,
                   m->fan_in_fan_out ? " (fan_in_fan_out)" : "", m->ia3->name, shp);
            continue;
        }
        printf("%s\t%s%s\t%lld\t%.17g\t%.17g\t[%lld, %lld] x [%lld, %lld]\t%s\n", m->base_name,
               m->layout, m->fan_in_fan_out ? " (fan_in_fan_out)" : "", (long long)m->r, m->alpha,
               m->scale, (long long)m->L.rows, (long long)m->L.cols, (long long)m->R.rows,
               (long long)m->R.cols,
               m->magnitude    ? m->magnitude->name
               : m->dora_scale ? m->dora_scale->name
                               : "-");
    }
}

/* A single model or adapter (RUN's one step): its header line and listing. */
static int inspect_one(const char *path, const dora_run *run)
{
    dora_err err = {{0}, 0};
    dora_model_kind kind = DORA_MODEL_NONE;
    const char *step_path = run->steps[0].path;
    if (dora_model_probe(step_path, &kind, NULL, &err) == 0 && kind == DORA_MODEL_ADAPTER) {
        dora_adapter *a;
        if (dora_adapter_open(&a, step_path, &err) != 0)
            return cli_fail(&err);
        printf("# %s: %s, method %s, step %lld\n", path, dora_run_layout_name(run->layout),
               run->method, (long long)run->steps[0].step);
        print_adapter(a);
        dora_adapter_close(a);
        return EXIT_OK;
    }
    dora_model *m;
    if (dora_model_open(&m, step_path, &err) != 0)
        return cli_fail(&err);
    printf("# %s: %s, method %s, step %lld\n", path, dora_run_layout_name(run->layout),
           run->method, (long long)run->steps[0].step);
    if (dora_bnb_saved(m)) /* the conventions found: bitsandbytes' saved form */
        printf("# saved quantised by bitsandbytes (quant_state / SCB tensors): analyze reads its "
               "weights dequantised as W0\n");
    print_tensors(m);
    dora_model_close(m);
    return EXIT_OK;
}

/* A Trainer output folder: one line per step (step, path, tensors, bytes). */
static int inspect_steps(const char *path, const dora_run *run)
{
    dora_err err = {{0}, 0};
    printf("# %s: %s, method %s, %zu step(s)\n", path, dora_run_layout_name(run->layout),
           run->method, run->nsteps);
    printf("step\tpath\ttensors\tbytes\n");
    for (size_t s = 0; s < run->nsteps; s++) {
        dora_model_kind kind = DORA_MODEL_NONE;
        dora_model *m;
        dora_adapter *a = NULL;
        if (dora_model_probe(run->steps[s].path, &kind, NULL, &err) != 0 ||
            (kind == DORA_MODEL_ADAPTER ? dora_adapter_open(&a, run->steps[s].path, &err)
                                        : dora_model_open(&m, run->steps[s].path, &err)) != 0)
            return cli_fail(&err);
        if (a) { /* the adapter's own weights file */
            m = a->weights;
            a->weights = NULL;
            dora_adapter_close(a);
        }
        printf("%lld\t%s\t%zu\t%llu\n", (long long)run->steps[s].step, run->steps[s].path,
               m->ntensors, (unsigned long long)model_bytes(m));
        dora_model_close(m);
    }
    return EXIT_OK;
}

/* A results file of this tool: what it holds, one line per run. */
static int inspect_results(const char *path)
{
    h5i_summary s;
    dora_err err;
    if (h5i_summarise(path, &s, &err) != 0)
        return cli_fail(&err);
    printf("# %s: dora-analyze results, analysis %s, layout_version %d, tool_version %s\n", path,
           s.analysis, (int)s.layout_version, s.tool_version);
    if (s.created)
        printf("# created %s\n", s.created);
    if (s.command_line)
        printf("# command_line %s\n", s.command_line);
    if (s.nregression >= 0)
        printf("# regression: %lld row(s) (run, module kind)\n", s.nregression);
    printf("run\tmethod\tsteps\tmodules\tstep_list\n");
    for (size_t i = 0; i < s.nruns; i++) {
        const h5i_run_summary *r = &s.runs[i];
        printf("%s\t%s\t%zu\t%zu\t", r->name, r->method ? r->method : "-", r->nsteps,
               r->nmodules);
        for (size_t k = 0; k < r->nsteps; k++)
            printf("%s%lld", k ? "," : "", (long long)r->steps[k]);
        printf("\n");
    }
    h5i_summary_release(&s);
    return EXIT_OK;
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == 'h') {
            fputs(inspect_help, stdout);
            return cli_finish_stdout();
        }
        return cli_unknown_option("inspect", argv[optind - 1], longopts);
    }
    if (argc - optind != 1)
        return cli_usage_error("inspect", "expected exactly one PATH");
    const char *path = argv[optind];
    if (util_has_suffix(path, ".h5") || h5o_is_results_file(path)) {
        int st = inspect_results(path);
        return st == EXIT_OK ? cli_finish_stdout() : st;
    }
    dora_err err = {{0}, 0};
    dora_run run;
    if (dora_run_discover(&run, path, &err) != 0)
        return cli_fail(&err);
    for (size_t k = 0; k < run.nnotes; k++)
        fprintf(stderr, "dora-analyze: note: %s\n", run.notes[k]);
    int status = run.layout == DORA_RUN_TRAINER ? inspect_steps(path, &run)
                                                : inspect_one(path, &run);
    dora_run_release(&run);
    if (status == EXIT_OK)
        status = cli_finish_stdout();
    return status;
}
