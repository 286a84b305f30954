/* h5out.c - writing the results with the HDF5 C library; see h5out.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/h5out.h"
#include "results/h5util.h"
#include "dora/geom.h"
#include "dora/stats.h"
#include "dora/version.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


static int write_per_row(hid_t grp, const dora_result *r, dora_err *err)
{
    hid_t pr = -1, g = -1;
    char *ln = NULL;
    CHECK(pr = H5Gcreate2(grp, "per_row", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create group 'per_row' of run '%s'", r->name);
    for (size_t l = 0; l < r->nmodules; l++) {
        ln = h5u_link_name(r->modules[l]);
        if (!ln) {
            dora_errf(err, "out of memory");
            goto fail;
        }
        CHECK(g = H5Gcreate2(pr, ln, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              "cannot create group 'per_row/%s' of run '%s'", ln, r->name);
        hsize_t k[1] = {(hsize_t)r->rows[l]};
        hsize_t sk[2] = {(hsize_t)r->nsteps, (hsize_t)r->rows[l]};
        if (h5u_dataset(g, "m0", 1, k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->m0[l], err) != 0 ||
            h5u_dataset(g, "m", 2, sk, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->m[l], err) != 0 ||
            h5u_dataset(g, "cos", 2, sk, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->cos[l], err) != 0 ||
            h5u_dataset(g, "one_minus_cos", 2, sk, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                    r->one_minus_cos[l], err) != 0) {
            dora_errprefix(err, "run '%s', per_row/%s", r->name, ln);
            goto fail;
        }
        H5Gclose(g);
        g = -1;
        free(ln);
        ln = NULL;
    }
    H5Gclose(pr);
    return 0;
fail:
    free(ln);
    if (g >= 0)
        H5Gclose(g);
    if (pr >= 0)
        H5Gclose(pr);
    return -1;
}

/* /runs/NAME/heads (docs/hdf5.md): the modules that group by attention head,
 * their head counts and first columns, and dM and dD per (step, head). */
static int write_heads(hid_t grp, const dora_result *r, dora_err *err)
{
    const size_t H = r->nhead_mods, NH = (size_t)r->head_offset[H];
    hid_t g = -1;
    int rc = -1;
    char **names = calloc(H + 1, sizeof *names);
    int32_t *layer = calloc(H + 1, sizeof *layer);
    int32_t *head = calloc(NH + 1, sizeof *head);
    if (!names || !layer || !head) {
        dora_errf(err, "out of memory");
        goto fail;
    }
    for (size_t h = 0; h < H; h++) {
        names[h] = r->modules[r->head_module[h]];
        layer[h] = r->layer[r->head_module[h]];
        for (int64_t j = 0; j < r->head_count[h]; j++)
            head[r->head_offset[h] + j] = (int32_t)j;
    }
    CHECK(g = H5Gcreate2(grp, "heads", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create group 'heads' of run '%s'", r->name);
    hsize_t h1[1] = {H}, o1[1] = {H + 1}, n1[1] = {NH}, sn[2] = {r->nsteps, NH};
    if (h5u_attr_num(g, "head_dim", H5T_STD_I64LE, H5T_NATIVE_INT64, &r->head_dim, err) != 0 ||
        h5u_strings(g, "modules", H, names, err) != 0 ||
        h5u_dataset(g, "layer", 1, h1, H5T_STD_I32LE, H5T_NATIVE_INT32, layer, err) != 0 ||
        h5u_dataset(g, "heads", 1, h1, H5T_STD_I64LE, H5T_NATIVE_INT64, r->head_count, err) != 0 ||
        h5u_dataset(g, "offset", 1, o1, H5T_STD_I64LE, H5T_NATIVE_INT64, r->head_offset, err) !=
            0 ||
        h5u_dataset(g, "head", 1, n1, H5T_STD_I32LE, H5T_NATIVE_INT32, head, err) != 0 ||
        h5u_dataset(g, "delta_m", 2, sn, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->head_dm, err) != 0 ||
        h5u_dataset(g, "delta_d", 2, sn, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->head_dd, err) != 0) {
        dora_errprefix(err, "run '%s', heads", r->name);
        goto fail;
    }
    rc = 0;
fail:
    if (g >= 0)
        H5Gclose(g);
    free(names);
    free(layer);
    free(head);
    return rc;
}

static int write_run(hid_t runs, const dora_result *r, dora_err *err)
{
    hid_t g = -1;
    CHECK(g = H5Gcreate2(runs, r->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create group '/runs/%s'", r->name);
    if (h5u_attr_str(g, "method", r->method, err) != 0 ||
        h5u_attr_str(g, "source_path", r->source_path, err) != 0 ||
        h5u_attr_str(g, "base_path", r->base_path, err) != 0 ||
        (r->name_alignment && h5u_attr_str(g, "name_alignment", r->name_alignment, err) != 0))
        goto fail_named;
    hsize_t s[1] = {r->nsteps}, l[1] = {r->nmodules}, sl[2] = {r->nsteps, r->nmodules};
    if (h5u_dataset(g, "steps", 1, s, H5T_STD_I64LE, H5T_NATIVE_INT64, r->steps, err) != 0 ||
        h5u_strings(g, "checkpoints", r->nsteps, r->step_paths, err) != 0 ||
        (r->step_stamps &&
         h5u_strings(g, "checkpoint_stamps", r->nsteps, r->step_stamps, err) != 0) ||
        h5u_strings(g, "modules", r->nmodules, r->modules, err) != 0 ||
        h5u_dataset(g, "layer", 1, l, H5T_STD_I32LE, H5T_NATIVE_INT32, r->layer, err) != 0 ||
        h5u_dataset(g, "rows", 1, l, H5T_STD_I64LE, H5T_NATIVE_INT64, r->rows, err) != 0 ||
        h5u_dataset(g, "cols", 1, l, H5T_STD_I64LE, H5T_NATIVE_INT64, r->cols, err) != 0 ||
        h5u_dataset(g, "rank", 1, l, H5T_STD_I32LE, H5T_NATIVE_INT32, r->rank, err) != 0 ||
        h5u_dataset(g, "delta_m", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->delta_m, err) != 0 ||
        h5u_dataset(g, "delta_d", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->delta_d, err) != 0 ||
        h5u_dataset(g, "zero_rows", 2, sl, H5T_STD_I64LE, H5T_NATIVE_INT64, r->zero_rows, err) != 0)
        goto fail_named;
    if (r->delta_m_passive && r->delta_m_active &&
        (h5u_dataset(g, "delta_m_passive", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                     r->delta_m_passive, err) != 0 ||
         h5u_dataset(g, "delta_m_active", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                     r->delta_m_active, err) != 0))
        goto fail_named;
    if (r->m0 && write_per_row(g, r, err) != 0)
        goto fail;
    if (r->nhead_mods && write_heads(g, r, err) != 0)
        goto fail;
    H5Gclose(g);
    return 0;
fail_named:
    dora_errprefix(err, "run '%s'", r->name);
fail:
    if (g >= 0)
        H5Gclose(g);
    return -1;
}

/* An interval or value of the regressions and its flag: the dataset NAME
 * [K, width] (width 1: [K]) from the double(s) at offset VALUE of each
 * dora_regression, NaN where the int at offset DEFINED is 0; FLAG [K] that int. */
typedef struct reg_value {
    const char *name, *flag;
    size_t value, defined;
    int width;
} reg_value;

static const reg_value reg_values[] = {
    {"pearson_r_ci_fisher", "pearson_r_ci_fisher_defined", offsetof(dora_regression, fisher_ci),
     offsetof(dora_regression, fisher_defined), 2},
    {"pearson_r_ci_bootstrap", "pearson_r_ci_bootstrap_defined",
     offsetof(dora_regression, boot_ci), offsetof(dora_regression, boot_defined), 2},
    {"within_step_r_ci_bootstrap", "within_step_r_ci_bootstrap_defined",
     offsetof(dora_regression, within_boot_ci), offsetof(dora_regression, within_boot_defined),
     2},
    {"spearman_rho", "spearman_defined", offsetof(dora_regression, spearman_rho),
     offsetof(dora_regression, spearman_defined), 1},
};

static int write_reg_value(hid_t grp, const dora_regression *g, size_t n, const reg_value *v,
                           dora_err *err)
{
    double *d = malloc((n * (size_t)v->width + 1) * sizeof *d);
    int32_t *def = malloc((n + 1) * sizeof *def);
    int rc = -1;
    if (!d || !def) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const char *row = (const char *)&g[i];
        def[i] = *(const int *)(row + v->defined);
        for (int w = 0; w < v->width; w++) /* undefined: NaN beside its flag (docs/hdf5.md) */
            d[i * (size_t)v->width + (size_t)w] =
                def[i] ? ((const double *)(row + v->value))[w] : NAN;
    }
    hsize_t dims[2] = {n, (hsize_t)v->width};
    rc = h5u_dataset(grp, v->name, v->width == 1 ? 1 : 2, dims, H5T_IEEE_F64LE,
                     H5T_NATIVE_DOUBLE, d, err) != 0 ||
                 h5u_dataset(grp, v->flag, 1, dims, H5T_STD_I32LE, H5T_NATIVE_INT32, def, err) != 0
             ? -1
             : 0;
done:
    free(d);
    free(def);
    return rc;
}

/* The intervals and rho of /regression, and how the bootstrap was drawn (O). */
static int write_intervals(hid_t grp, const dora_regression *g, size_t n,
                           const dora_stats_opts *o, dora_err *err)
{
    int64_t b = o && o->bootstrap ? o->bootstrap : DORA_BOOTSTRAP_DEFAULT;
    uint64_t seed = o && o->seed ? o->seed : DORA_BOOTSTRAP_SEED;
    if (h5u_attr_str(grp, "intervals",
                     "95% intervals [K, 2] (low, high): pearson_r_ci_fisher = "
                     "tanh(atanh(r) -+ 1.959963984540054 / sqrt(n - 3)); *_ci_bootstrap = the "
                     "2.5% and 97.5% percentiles (linear interpolation) of r over "
                     "bootstrap_replicates layer-cluster resamples (layers drawn with replacement, "
                     "each with all its steps; splitmix64 from bootstrap_seed, restarted for every "
                     "row; replicates with undefined r left out); spearman_rho = Pearson r of the "
                     "average ranks; each with its *_defined flag",
                     err) != 0 ||
        h5u_attr_num(grp, "bootstrap_replicates", H5T_STD_I64LE, H5T_NATIVE_INT64, &b, err) != 0 ||
        h5u_attr_num(grp, "bootstrap_seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &seed, err) != 0)
        return -1;
    for (size_t k = 0; k < sizeof reg_values / sizeof reg_values[0]; k++)
        if (write_reg_value(grp, g, n, &reg_values[k], err) != 0)
            return -1;
    return 0;
}

/* /regression: one row per (run, module kind), G[0..n) (dora_regressions_opts); see
 * README "Regression". */
static int write_regression(hid_t f, const dora_regression *g, size_t n,
                            const dora_stats_opts *o, dora_err *err)
{
    int rc = -1;
    hid_t grp = -1;
    char **run = calloc(n + 1, sizeof *run), **kind = calloc(n + 1, sizeof *kind);
    char **method = calloc(n + 1, sizeof *method);
    int64_t *cnt = calloc(n + 1, sizeof *cnt), *layers = calloc(n + 1, sizeof *layers);
    int32_t *def = calloc(n + 1, sizeof *def), *wdef = calloc(n + 1, sizeof *wdef);
    double *slope = calloc(n + 1, sizeof *slope), *icpt = calloc(n + 1, sizeof *icpt);
    double *r = calloc(n + 1, sizeof *r), *wr = calloc(n + 1, sizeof *wr);
    if (!run || !kind || !method || !cnt || !layers || !def || !wdef || !slope || !icpt || !r ||
        !wr) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        run[i] = g[i].run;
        kind[i] = g[i].kind;
        method[i] = (char *)g[i].method;
        cnt[i] = g[i].n;
        layers[i] = g[i].layers;
        def[i] = g[i].defined;
        wdef[i] = g[i].within_defined;
        /* undefined: NaN in the file, the one place a NaN is written (docs/hdf5.md) */
        slope[i] = g[i].defined ? g[i].slope : NAN;
        icpt[i] = g[i].defined ? g[i].intercept : NAN;
        r[i] = g[i].defined ? g[i].r : NAN;
        wr[i] = g[i].within_defined ? g[i].within_r : NAN;
    }
    CHECK(grp = H5Gcreate2(f, "regression", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create group '/regression'");
    hsize_t k[1] = {n};
    if (h5u_attr_str(grp, "definition",
                 "x = delta_d, y = delta_m over every (layer, step) of the run's modules of one "
                 "kind; least squares y = intercept + slope * x; pearson_r over the same points; "
                 "within_step_r after centring each step's points on that step's mean; a value "
                 "whose *defined flag is 0 is undefined (fewer than 2 points or no spread) and "
                 "stored as NaN",
                 err) != 0 ||
        h5u_strings(grp, "run", n, run, err) != 0 || h5u_strings(grp, "method", n, method, err) != 0 ||
        h5u_strings(grp, "module_kind", n, kind, err) != 0 ||
        h5u_dataset(grp, "n", 1, k, H5T_STD_I64LE, H5T_NATIVE_INT64, cnt, err) != 0 ||
        h5u_dataset(grp, "layers", 1, k, H5T_STD_I64LE, H5T_NATIVE_INT64, layers, err) != 0 ||
        h5u_dataset(grp, "defined", 1, k, H5T_STD_I32LE, H5T_NATIVE_INT32, def, err) != 0 ||
        h5u_dataset(grp, "slope", 1, k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, slope, err) != 0 ||
        h5u_dataset(grp, "intercept", 1, k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, icpt, err) != 0 ||
        h5u_dataset(grp, "pearson_r", 1, k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r, err) != 0 ||
        h5u_dataset(grp, "within_step_defined", 1, k, H5T_STD_I32LE, H5T_NATIVE_INT32, wdef, err) !=
            0 ||
        h5u_dataset(grp, "within_step_r", 1, k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, wr, err) != 0 ||
        write_intervals(grp, g, n, o, err) != 0)
        goto fail;
    rc = 0;
fail:
done:
    if (grp >= 0)
        H5Gclose(grp);
    free(run);
    free(kind);
    free(method);
    free(cnt);
    free(layers);
    free(def);
    free(wdef);
    free(slope);
    free(icpt);
    free(r);
    free(wr);
    return rc;
}

/* /regression/dm_over_passive [K] and its flag, row for row with the regression
 * (geom.h): undefined (a run without delta_m_passive, nothing turned) is NaN
 * with the flag 0. */
static int write_passive_ratio(hid_t f, const dora_result *runs, size_t nruns,
                               const dora_regression *g, size_t n, dora_err *err)
{
    int rc = -1;
    hid_t grp = -1;
    double *ratio = calloc(n + 1, sizeof *ratio);
    int32_t *def = calloc(n + 1, sizeof *def);
    if (!ratio || !def) {
        dora_errf(err, "out of memory");
        goto done;
    }
    int *ok = calloc(n + 1, sizeof *ok);
    if (!ok || dora_passive_ratios(runs, nruns, g, n, ratio, ok) != 0) {
        free(ok);
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        def[i] = ok[i];
        if (!def[i])
            ratio[i] = NAN;
    }
    free(ok);
    CHECK(grp = H5Gopen2(f, "regression", H5P_DEFAULT), "cannot open group '/regression'");
    hsize_t k[1] = {n};
    if (h5u_dataset(grp, "dm_over_passive", 1, k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, ratio,
                    err) != 0 ||
        h5u_dataset(grp, "dm_over_passive_defined", 1, k, H5T_STD_I32LE, H5T_NATIVE_INT32, def,
                    err) != 0)
        goto fail;
    rc = 0;
fail:
done:
    if (grp >= 0)
        H5Gclose(grp);
    free(ratio);
    free(def);
    return rc;
}

typedef struct h5o_input {
    const dora_result *runs;
    size_t nruns;
    const dora_stats_opts *stats;
    const dora_regression *regs; /* [nregs] of runs with stats, or NULL: computed here */
    size_t nregs;
} h5o_input;

int h5o_is_results_file(const char *path)
{
    return h5u_is_ours(path);
}

/* The contents of a results file of dora_analyze: /runs, then /regression. */
static int write_results(hid_t f, const void *ctx, dora_err *err)
{
    const h5o_input *in = ctx;
    hid_t g = -1;
    /* runs keep the order of the command line: track link creation order */
    CHECK(g = h5u_ordered_group(f, "runs"), "cannot create group '/runs'");
    for (size_t i = 0; i < in->nruns; i++)
        if (write_run(g, &in->runs[i], err) != 0)
            goto fail;
    H5Gclose(g);
    g = -1;
    /* once, for both: the bootstrap is most of their cost */
    dora_regression *own = NULL;
    const dora_regression *reg = in->regs;
    size_t nreg = in->nregs;
    if (!reg) {
        if (dora_regressions_opts(in->runs, in->nruns, in->stats, &own, &nreg) != 0)
            return dora_errf(err, "out of memory computing the regressions");
        reg = own;
    }
    const int rc = write_regression(f, reg, nreg, in->stats, err) != 0 ||
                           write_passive_ratio(f, in->runs, in->nruns, reg, nreg, err) != 0
                       ? -1
                       : 0;
    dora_regressions_free(own, nreg); /* NULL when the caller's were used */
    return rc;
fail:
    if (g >= 0)
        H5Gclose(g);
    return -1;
}

int h5o_write(const char *path, const dora_result *runs, size_t nruns, const char *command_line,
              dora_err *err)
{
    return h5o_write_stats(path, runs, nruns, command_line, NULL, err);
}

int h5o_write_stats(const char *path, const dora_result *runs, size_t nruns,
                    const char *command_line, const dora_stats_opts *stats, dora_err *err)
{
    return h5o_write_regs(path, runs, nruns, command_line, stats, NULL, 0, err);
}

int h5o_write_regs(const char *path, const dora_result *runs, size_t nruns,
                   const char *command_line, const dora_stats_opts *stats,
                   const dora_regression *regs, size_t nregs, dora_err *err)
{
    const h5o_input in = {runs, nruns, stats, regs, nregs};
    return h5u_write_file(path, command_line, DORA_LAYOUT_VERSION, write_results, &in, err);
}
