/* spectrum_h5.c - the results file of `spectrum` (layout: docs/hdf5.md,
 * "spectrum"), written through results/h5util.h; see include/dora/spectral.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/spectral.h"
#include "dora/version.h"
#include "results/h5util.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

static int write_spec_run(hid_t runs, const dora_spectrum *sp, const dora_spec_run *r,
                          dora_err *err)
{
    hid_t g = -1, sg = -1, mg = -1;
    char *ln = NULL;
    const size_t S = r->nsteps, L = r->nmodules, P = r->npairs;
    const hsize_t K = (hsize_t)sp->opts.subspace;
    char **mods = calloc(L + 1, sizeof *mods), **upd = calloc(L + 1, sizeof *upd);
    int32_t *layer = calloc(L + 1, sizeof *layer), *rank = calloc(L + 1, sizeof *rank),
            *bits = calloc(L + 1, sizeof *bits);
    int64_t *rows = calloc(L + 1, sizeof *rows), *cols = calloc(L + 1, sizeof *cols),
            *nsig = calloc(L + 1, sizeof *nsig);
    if (!mods || !upd || !layer || !rank || !bits || !rows || !cols || !nsig) {
        dora_errf(err, "out of memory");
        goto fail;
    }
    for (size_t l = 0; l < L; l++) {
        mods[l] = r->mods[l].name;
        upd[l] = (char *)r->mods[l].update;
        layer[l] = r->mods[l].layer;
        rank[l] = r->mods[l].rank;
        bits[l] = r->mods[l].bits;
        rows[l] = r->mods[l].rows;
        cols[l] = r->mods[l].cols;
        nsig[l] = r->mods[l].nsigma;
    }
    CHECK(g = H5Gcreate2(runs, r->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            "cannot create group '/runs/%s'", r->name);
    hsize_t s1[1] = {S}, l1[1] = {L}, sl[2] = {S, L}, p2[2] = {P, 2};
    if (h5u_attr_str(g, "method", r->method, err) != 0 ||
        h5u_attr_str(g, "source_path", r->source_path, err) != 0 ||
        h5u_attr_str(g, "base_path", sp->base_path ? sp->base_path : "", err) != 0 ||
        h5u_dataset(g, "steps", 1, s1, H5T_STD_I64LE, H5T_NATIVE_INT64, r->steps, err) != 0 ||
        h5u_strings(g, "checkpoints", S, r->step_paths, err) != 0 ||
        h5u_strings(g, "modules", L, mods, err) != 0 ||
        h5u_dataset(g, "layer", 1, l1, H5T_STD_I32LE, H5T_NATIVE_INT32, layer, err) != 0 ||
        h5u_dataset(g, "rows", 1, l1, H5T_STD_I64LE, H5T_NATIVE_INT64, rows, err) != 0 ||
        h5u_dataset(g, "cols", 1, l1, H5T_STD_I64LE, H5T_NATIVE_INT64, cols, err) != 0 ||
        h5u_dataset(g, "rank", 1, l1, H5T_STD_I32LE, H5T_NATIVE_INT32, rank, err) != 0 ||
        h5u_strings(g, "update", L, upd, err) != 0 ||
        h5u_dataset(g, "precision", 1, l1, H5T_STD_I32LE, H5T_NATIVE_INT32, bits, err) != 0 ||
        h5u_dataset(g, "nsigma", 1, l1, H5T_STD_I64LE, H5T_NATIVE_INT64, nsig, err) != 0 ||
        h5u_dataset(g, "fro_norm", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->fro_norm, err) !=
            0 ||
        h5u_dataset(g, "sigma1", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->sigma1, err) != 0 ||
        h5u_dataset(g, "r90", 2, sl, H5T_STD_I64LE, H5T_NATIVE_INT64, r->r90, err) != 0 ||
        h5u_dataset(g, "stable_rank", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->stable_rank,
                    err) != 0 ||
        h5u_dataset(g, "svd_method", 2, sl, H5T_STD_I32LE, H5T_NATIVE_INT32, r->svd_method, err) !=
            0 ||
        h5u_dataset(g, "phi_prev", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->phi_prev, err) !=
            0 ||
        h5u_dataset(g, "phi_final", 2, sl, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, r->phi_final, err) !=
            0 ||
        h5u_dataset(g, "phi_pairs", 2, p2, H5T_STD_I64LE, H5T_NATIVE_INT64, r->pairs, err) != 0 ||
        (r->intruders && h5u_dataset(g, "intruders", 2, sl, H5T_STD_I32LE, H5T_NATIVE_INT32,
                                     r->intruders, err) != 0))
        goto fail_named;
    CHECK(sg = H5Gcreate2(g, "spectrum", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            "cannot create group '/runs/%s/spectrum'", r->name);
    for (size_t l = 0; l < L; l++) {
        const dora_spec_module *m = &r->mods[l];
        if (!(ln = h5u_link_name(m->name))) {
            dora_errf(err, "out of memory");
            goto fail;
        }
        CHECK(mg = H5Gcreate2(sg, ln, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                "cannot create group '/runs/%s/spectrum/%s'", r->name, ln);
        hsize_t sn[2] = {S, (hsize_t)m->nsigma}, pkk[3] = {P, K, K},
                si[2] = {S, DORA_SPEC_INTRUDER_TOP};
        if (h5u_dataset(mg, "sigma", 2, sn, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, m->sigma, err) !=
                0 ||
            h5u_dataset(mg, "phi", 3, pkk, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, m->phi, err) != 0 ||
            h5u_dataset(mg, "phi_k", 2, p2, H5T_STD_I32LE, H5T_NATIVE_INT32, m->phi_k, err) != 0 ||
            (m->intruder_cos && h5u_dataset(mg, "intruder_cos", 2, si, H5T_IEEE_F64LE,
                                            H5T_NATIVE_DOUBLE, m->intruder_cos, err) != 0)) {
            dora_errprefix(err, "run '%s', spectrum/%s", r->name, ln);
            goto fail;
        }
        H5Gclose(mg);
        mg = -1;
        free(ln);
        ln = NULL;
    }
    H5Gclose(sg);
    H5Gclose(g);
    free(mods);
    free(upd);
    free(layer);
    free(rank);
    free(bits);
    free(rows);
    free(cols);
    free(nsig);
    return 0;
fail_named:
    dora_errprefix(err, "run '%s'", r->name);
fail:
    free(ln);
    if (mg >= 0)
        H5Gclose(mg);
    if (sg >= 0)
        H5Gclose(sg);
    if (g >= 0)
        H5Gclose(g);
    free(mods);
    free(upd);
    free(layer);
    free(rank);
    free(bits);
    free(rows);
    free(cols);
    free(nsig);
    return -1;
}

static int write_compare(hid_t top, const dora_spectrum *sp, const dora_spec_compare *cp,
                         dora_err *err)
{
    const char *na = sp->runs[cp->run_a].name, *nb = sp->runs[cp->run_b].name;
    hid_t ga = -1, g = -1, gg = -1, mg = -1;
    char *ln = NULL;
    const hsize_t P = cp->npairs, M = cp->nmodules, K = (hsize_t)sp->opts.subspace;
    htri_t exists = H5Lexists(top, na, H5P_DEFAULT);
    CHECK(exists, "cannot look up '/compare/%s'", na);
    if (exists > 0)
        CHECK(ga = H5Gopen2(top, na, H5P_DEFAULT), "cannot open group '/compare/%s'", na);
    else
        CHECK(ga = H5Gcreate2(top, na, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                "cannot create group '/compare/%s'", na);
    CHECK(g = H5Gcreate2(ga, nb, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            "cannot create group '/compare/%s/%s'", na, nb);
    hsize_t p1[1] = {P}, pm[2] = {P, M};
    if (h5u_attr_str(g, "run_a", na, err) != 0 || h5u_attr_str(g, "run_b", nb, err) != 0 ||
        h5u_strings(g, "modules", M, cp->modules, err) != 0 ||
        h5u_dataset(g, "steps_a", 1, p1, H5T_STD_I64LE, H5T_NATIVE_INT64, cp->steps_a, err) != 0 ||
        h5u_dataset(g, "steps_b", 1, p1, H5T_STD_I64LE, H5T_NATIVE_INT64, cp->steps_b, err) != 0 ||
        h5u_dataset(g, "phi", 2, pm, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, cp->phi, err) != 0 ||
        h5u_dataset(g, "k", 2, pm, H5T_STD_I32LE, H5T_NATIVE_INT32, cp->k, err) != 0)
        goto fail_named;
    CHECK(gg = H5Gcreate2(g, "grid", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            "cannot create group '/compare/%s/%s/grid'", na, nb);
    for (size_t i = 0; i < M; i++) {
        if (!(ln = h5u_link_name(cp->modules[i]))) {
            dora_errf(err, "out of memory");
            goto fail;
        }
        CHECK(mg = H5Gcreate2(gg, ln, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                "cannot create group '/compare/%s/%s/grid/%s'", na, nb, ln);
        hsize_t pkk[3] = {P, K, K};
        if (h5u_dataset(mg, "phi", 3, pkk, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, cp->grid[i], err) != 0)
            goto fail_named;
        H5Gclose(mg);
        mg = -1;
        free(ln);
        ln = NULL;
    }
    H5Gclose(gg);
    H5Gclose(g);
    H5Gclose(ga);
    return 0;
fail_named:
    dora_errprefix(err, "compare '%s' / '%s'", na, nb);
fail:
    free(ln);
    if (mg >= 0)
        H5Gclose(mg);
    if (gg >= 0)
        H5Gclose(gg);
    if (g >= 0)
        H5Gclose(g);
    if (ga >= 0)
        H5Gclose(ga);
    return -1;
}

static const char spec_definitions[] =
    "dW = W_t - W0 with W viewed as [out, in] (rows = output features; fan_in_fan_out bases read "
    "transposed). sigma: singular values of dW, descending (LoRA: the first min(r, out, in), the "
    "rest are 0). fro_norm = ||dW||_F. r90: smallest k with sum_{i<=k} sigma_i^2 >= 0.9 "
    "||dW||_F^2; 0 for a zero update; -1 when only the top K values were computed and they hold "
    "less. stable_rank = ||dW||_F^2 / sigma_1^2 (0 for a zero update). intruders: among the top "
    "min(10, out, in) left singular vectors of W_t, those whose largest |cos| with every left "
    "singular vector of W0 is below threshold (intruder_cos holds those largest |cos|, -1 past "
    "min(10, out, in)); only with a base. phi[p, i-1, j-1] = ||U_a[:, :i]^T U_b[:, :j]||_F^2 / "
    "min(i, j), U = top left singular vectors of the update, for i <= phi_k[p, 0], j <= "
    "phi_k[p, 1], -1 elsewhere; phi_k = min(subspace, numerical rank) of each side (rank: "
    "sigma_i > max(out, in) * eps * sigma_1). phi_pairs: (t-1, t) for t = 1..S-1, then (t, S-1) "
    "for t = 0..S-3 (step indexes). phi_prev / phi_final: phi(k, k), k = min(phi_k), with the "
    "previous / the final step; phi_final of the final step is 1; -1 undefined. update: lora "
    "(s*B@A, exact low-rank path), lora-part (DoRA without base: its low-rank part s*B@A), dora "
    "(the merged m*V/||V|| - W0, dense), dense (full weights or modules_to_save). precision: bits "
    "of the arithmetic of the update's SVD (dense SVDs, also those of W0 and W_t for intruders, "
    "are float64 up to f64_max_elements elements, float32 above).";

static const char spec_methods[] =
    "1 low-rank: thin QR of B and A^T + SVD of the r x r core (float64, exact); 2 dense LAPACK "
    "gesdd (every value); 3 dense LAPACK gesvdx (the top K values); 4 randomised subspace "
    "iteration, every Ritz triplet's residual |A v - s u| <= tol * sigma_1 (tol 1e-10 in float64, "
    "1e-4 in float32), else method 3";

/* The contents of a spectrum file: root attributes of the analysis, /runs,
 * then /compare when runs were compared. */
static int write_spectrum(hid_t f, const void *ctx, dora_err *err)
{
    const dora_spectrum *sp = ctx;
    hid_t g = -1;
    const double thr = sp->opts.threshold;
    const int64_t top = sp->opts.top, sub = sp->opts.subspace, f64max = sp->opts.f64_max_elems,
                  dmax = sp->opts.dense_max_elems;
    const int32_t itop = DORA_SPEC_INTRUDER_TOP;

    if (h5u_attr_str(f, "analysis", "spectrum", err) != 0 ||
        h5u_attr_str(f, "base_path", sp->base_path ? sp->base_path : "", err) != 0 ||
        h5u_attr_num(f, "threshold", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &thr, err) != 0 ||
        h5u_attr_num(f, "top", H5T_STD_I64LE, H5T_NATIVE_INT64, &top, err) != 0 ||
        h5u_attr_num(f, "subspace", H5T_STD_I64LE, H5T_NATIVE_INT64, &sub, err) != 0 ||
        h5u_attr_num(f, "intruder_top", H5T_STD_I32LE, H5T_NATIVE_INT32, &itop, err) != 0 ||
        h5u_attr_num(f, "f64_max_elements", H5T_STD_I64LE, H5T_NATIVE_INT64, &f64max, err) != 0 ||
        h5u_attr_num(f, "dense_max_elements", H5T_STD_I64LE, H5T_NATIVE_INT64, &dmax, err) != 0 ||
        h5u_attr_str(f, "definitions", spec_definitions, err) != 0 ||
        h5u_attr_str(f, "svd_methods", spec_methods, err) != 0)
        goto fail;
    CHECK(g = h5u_ordered_group(f, "runs"), "cannot create group '/runs'");
    for (size_t i = 0; i < sp->nruns; i++)
        if (write_spec_run(g, sp, &sp->runs[i], err) != 0)
            goto fail;
    H5Gclose(g);
    g = -1;
    if (sp->ncompare) {
        CHECK(g = h5u_ordered_group(f, "compare"), "cannot create group '/compare'");
        for (size_t i = 0; i < sp->ncompare; i++)
            if (write_compare(g, sp, &sp->cmp[i], err) != 0)
                goto fail;
        H5Gclose(g);
        g = -1;
    }
    return 0;
fail:
    if (g >= 0)
        H5Gclose(g);
    return -1;
}

int dora_spectrum_write(const char *path, const dora_spectrum *sp, const char *command_line,
                        dora_err *err)
{
    return h5u_write_file(path, command_line, DORA_SPEC_LAYOUT_VERSION, write_spectrum, sp, err);
}
