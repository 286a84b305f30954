/* spectrum_in.c - reading back the summary of a `spectrum` results file (layout:
 * docs/hdf5.md, "spectrum"); see include/dora/spectral.h, dora_spectrum_read. */
#define _POSIX_C_SOURCE 200809L
#include "dora/adapter.h"
#include "dora/spectral.h"
#include "results/h5read.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rd {
    const char *path;
    char where[512]; /* the group being read, for messages */
    dora_err *err;
} rd;

static void *alloc_n(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

/* The static spelling of an update kind, or NULL. */
static const char *update_static(const char *s)
{
    static const char *const kinds[] = {"lora", "lora-part", "dora", "dense"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (strcmp(s, kinds[i]) == 0)
            return kinds[i];
    return NULL;
}

/* Every value of V[n] finite and in [lo, hi]; else an error naming NAME. */
static int in_range(const rd *c, const char *name, const double *v, size_t n, double lo,
                    double hi)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || v[i] < lo || v[i] > hi)
            return dora_errf(c->err, "'%s': '%s/%s' holds %g, outside [%g, %g]", c->path,
                             c->where, name, v[i], lo, hi);
    return 0;
}

/* The per-module lists of run group G into R (S, L known). */
static int read_modules(hid_t g, dora_spec_run *r, const rd *c)
{
    const size_t L = r->nmodules;
    const hsize_t l1[1] = {L};
    char **names = alloc_n(L, sizeof *names), **upd = alloc_n(L, sizeof *upd);
    int32_t *layer = alloc_n(L, sizeof *layer), *rank = alloc_n(L, sizeof *rank),
            *bits = alloc_n(L, sizeof *bits);
    int64_t *rows = alloc_n(L, sizeof *rows), *cols = alloc_n(L, sizeof *cols),
            *nsig = alloc_n(L, sizeof *nsig);
    int rc = -1;
    if (!names || !upd || !layer || !rank || !bits || !rows || !cols || !nsig) {
        dora_errf(c->err, "out of memory");
        goto done;
    }
    if (h5r_strings(g, "modules", L, names, c->path, c->where, c->err) != 0 ||
        h5r_strings(g, "update", L, upd, c->path, c->where, c->err) != 0 ||
        h5r_read(g, "layer", 1, l1, H5T_NATIVE_INT32, layer, c->path, c->where, c->err) != 0 ||
        h5r_read(g, "rank", 1, l1, H5T_NATIVE_INT32, rank, c->path, c->where, c->err) != 0 ||
        h5r_read(g, "precision", 1, l1, H5T_NATIVE_INT32, bits, c->path, c->where, c->err) !=
            0 ||
        h5r_read(g, "rows", 1, l1, H5T_NATIVE_INT64, rows, c->path, c->where, c->err) != 0 ||
        h5r_read(g, "cols", 1, l1, H5T_NATIVE_INT64, cols, c->path, c->where, c->err) != 0 ||
        h5r_read(g, "nsigma", 1, l1, H5T_NATIVE_INT64, nsig, c->path, c->where, c->err) != 0)
        goto done;
    for (size_t l = 0; l < L; l++) {
        dora_spec_module *m = &r->mods[l];
        m->name = names[l];
        names[l] = NULL;
        if (!(m->update = update_static(upd[l]))) {
            dora_errf(c->err, "'%s': '%s/update' holds '%s', not lora, lora-part, dora or dense",
                      c->path, c->where, upd[l]);
            goto done;
        }
        if (rows[l] < 1 || cols[l] < 1 || rank[l] < 0 || nsig[l] < 0 ||
            (bits[l] != 32 && bits[l] != 64)) {
            dora_errf(c->err, "'%s': '%s': module '%s' has an impossible shape, rank, "
                              "precision or nsigma",
                      c->path, c->where, m->name);
            goto done;
        }
        m->layer = layer[l];
        m->rank = rank[l];
        m->bits = bits[l];
        m->rows = rows[l];
        m->cols = cols[l];
        m->nsigma = nsig[l];
    }
    rc = 0;
done:
    for (size_t l = 0; names && l < L; l++)
        free(names[l]);
    for (size_t l = 0; upd && l < L; l++)
        free(upd[l]);
    free(names);
    free(upd);
    free(layer);
    free(rank);
    free(bits);
    free(rows);
    free(cols);
    free(nsig);
    return rc;
}

/* The [S, L] summaries of run group G into R. */
static int read_tables(hid_t g, dora_spec_run *r, const rd *c)
{
    const size_t S = r->nsteps, L = r->nmodules, SL = S * L, P = r->npairs;
    const hsize_t sl[2] = {S, L}, p2[2] = {P, 2};
    const char *p = c->path, *w = c->where;
    int base = H5Lexists(g, "intruders", H5P_DEFAULT) > 0;
    r->fro_norm = alloc_n(SL, sizeof *r->fro_norm);
    r->sigma1 = alloc_n(SL, sizeof *r->sigma1);
    r->r90 = alloc_n(SL, sizeof *r->r90);
    r->stable_rank = alloc_n(SL, sizeof *r->stable_rank);
    r->svd_method = alloc_n(SL, sizeof *r->svd_method);
    r->phi_prev = alloc_n(SL, sizeof *r->phi_prev);
    r->phi_final = alloc_n(SL, sizeof *r->phi_final);
    r->pairs = alloc_n(2 * P, sizeof *r->pairs);
    r->intruders = base ? alloc_n(SL, sizeof *r->intruders) : NULL;
    if (!r->fro_norm || !r->sigma1 || !r->r90 || !r->stable_rank || !r->svd_method ||
        !r->phi_prev || !r->phi_final || !r->pairs || (base && !r->intruders))
        return dora_errf(c->err, "out of memory");
    if (h5r_read(g, "fro_norm", 2, sl, H5T_NATIVE_DOUBLE, r->fro_norm, p, w, c->err) != 0 ||
        h5r_read(g, "sigma1", 2, sl, H5T_NATIVE_DOUBLE, r->sigma1, p, w, c->err) != 0 ||
        h5r_read(g, "r90", 2, sl, H5T_NATIVE_INT64, r->r90, p, w, c->err) != 0 ||
        h5r_read(g, "stable_rank", 2, sl, H5T_NATIVE_DOUBLE, r->stable_rank, p, w, c->err) != 0 ||
        h5r_read(g, "svd_method", 2, sl, H5T_NATIVE_INT32, r->svd_method, p, w, c->err) != 0 ||
        h5r_read(g, "phi_prev", 2, sl, H5T_NATIVE_DOUBLE, r->phi_prev, p, w, c->err) != 0 ||
        h5r_read(g, "phi_final", 2, sl, H5T_NATIVE_DOUBLE, r->phi_final, p, w, c->err) != 0 ||
        (P > 0 &&
         h5r_read(g, "phi_pairs", 2, p2, H5T_NATIVE_INT64, r->pairs, p, w, c->err) != 0) ||
        (base &&
         h5r_read(g, "intruders", 2, sl, H5T_NATIVE_INT32, r->intruders, p, w, c->err) != 0))
        return -1;
    if (in_range(c, "fro_norm", r->fro_norm, SL, 0, HUGE_VAL) != 0 ||
        in_range(c, "sigma1", r->sigma1, SL, 0, HUGE_VAL) != 0 ||
        in_range(c, "stable_rank", r->stable_rank, SL, 0, HUGE_VAL) != 0 ||
        in_range(c, "phi_prev", r->phi_prev, SL, -1, 1) != 0 ||
        in_range(c, "phi_final", r->phi_final, SL, -1, 1) != 0)
        return -1;
    for (size_t i = 0; i < SL; i++) {
        const dora_spec_module *m = &r->mods[i % L];
        int64_t most = m->rows < m->cols ? m->rows : m->cols;
        if (r->r90[i] < -1 || r->r90[i] > most || (r->intruders && (r->intruders[i] < 0 ||
                                                                    r->intruders[i] > most)))
            return dora_errf(c->err, "'%s': '%s': r90 or intruders of module '%s' outside "
                                     "[-1, min(rows, cols)]",
                             p, w, m->name);
    }
    for (size_t i = 0; i < 2 * P; i++)
        if (r->pairs[i] < 0 || (uint64_t)r->pairs[i] >= S)
            return dora_errf(c->err, "'%s': '%s/phi_pairs' names a step index outside [0, %zu)",
                             p, w, S);
    return 0;
}

static int read_run(hid_t runs, const char *name, dora_spec_run *r, rd *c)
{
    snprintf(c->where, sizeof c->where, "/runs/%s", name);
    hid_t g = H5Gopen2(runs, name, H5P_DEFAULT);
    if (g < 0)
        return dora_errf(c->err, "'%s': '%s' is not a group", c->path, c->where);
    int rc = -1;
    char *method = h5r_attr_str(g, "method");
    long long S = h5r_length(g, "steps"), L = h5r_length(g, "modules");
    r->name = strdup(name);
    r->source_path = h5r_attr_str(g, "source_path");
    r->method = method ? dora_method_static(method) : NULL;
    if (!r->name || !r->source_path || !r->method) {
        dora_errf(c->err, "'%s': '%s' lacks a known 'method' or its 'source_path'", c->path,
                  c->where);
        goto done;
    }
    if (S < 1 || L < 0 || (unsigned long long)(S * L) > H5R_MAX_ITEMS) {
        dora_errf(c->err, "'%s': '%s' has no valid 'steps' and 'modules'", c->path, c->where);
        goto done;
    }
    r->nsteps = (size_t)S;
    r->nmodules = (size_t)L;
    r->npairs = S >= 2 ? (size_t)(2 * S - 3) : 0;
    const hsize_t s1[1] = {r->nsteps};
    r->steps = alloc_n(r->nsteps, sizeof *r->steps);
    r->step_paths = alloc_n(r->nsteps, sizeof *r->step_paths);
    r->mods = alloc_n(r->nmodules, sizeof *r->mods);
    if (!r->steps || !r->step_paths || !r->mods) {
        dora_errf(c->err, "out of memory");
        goto done;
    }
    if (h5r_read(g, "steps", 1, s1, H5T_NATIVE_INT64, r->steps, c->path, c->where, c->err) != 0 ||
        h5r_strings(g, "checkpoints", s1[0], r->step_paths, c->path, c->where, c->err) != 0 ||
        read_modules(g, r, c) != 0 || read_tables(g, r, c) != 0)
        goto done;
    for (size_t s = 1; s < r->nsteps; s++)
        if (r->steps[s] <= r->steps[s - 1]) {
            dora_errf(c->err, "'%s': '%s/steps' are not ascending", c->path, c->where);
            goto done;
        }
    rc = 0;
done:
    free(method);
    H5Gclose(g);
    return rc;
}

/* The index of the run named NAME, or -1. */
static long run_index(const dora_spectrum *sp, const char *name)
{
    for (size_t i = 0; name && i < sp->nruns; i++)
        if (strcmp(sp->runs[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* One /compare/A/B group G into CP. */
static int read_compare(hid_t g, dora_spectrum *sp, dora_spec_compare *cp, rd *c)
{
    char *a = h5r_attr_str(g, "run_a"), *b = h5r_attr_str(g, "run_b");
    long ia = run_index(sp, a), ib = run_index(sp, b);
    int rc = -1;
    long long M = h5r_length(g, "modules"), P = h5r_length(g, "steps_a");
    if (ia < 0 || ib < 0 || ia == ib) {
        dora_errf(c->err, "'%s': '%s': run_a and run_b do not name two runs of the file",
                  c->path, c->where);
        goto done;
    }
    if (M < 0 || P < 0 || (unsigned long long)(M * P) > H5R_MAX_ITEMS) {
        dora_errf(c->err, "'%s': '%s' has no valid 'modules' and 'steps_a'", c->path, c->where);
        goto done;
    }
    cp->run_a = (size_t)ia;
    cp->run_b = (size_t)ib;
    cp->nmodules = (size_t)M;
    cp->npairs = (size_t)P;
    const hsize_t m1[1] = {cp->nmodules}, p1[1] = {cp->npairs}, pm[2] = {cp->npairs, cp->nmodules};
    cp->modules = alloc_n(cp->nmodules, sizeof *cp->modules);
    cp->steps_a = alloc_n(cp->npairs, sizeof *cp->steps_a);
    cp->steps_b = alloc_n(cp->npairs, sizeof *cp->steps_b);
    cp->phi = alloc_n(cp->npairs * cp->nmodules, sizeof *cp->phi);
    cp->k = alloc_n(cp->npairs * cp->nmodules, sizeof *cp->k);
    if (!cp->modules || !cp->steps_a || !cp->steps_b || !cp->phi || !cp->k) {
        dora_errf(c->err, "out of memory");
        goto done;
    }
    const char *p = c->path, *w = c->where;
    if (h5r_strings(g, "modules", m1[0], cp->modules, p, w, c->err) != 0 ||
        h5r_read(g, "steps_a", 1, p1, H5T_NATIVE_INT64, cp->steps_a, p, w, c->err) != 0 ||
        h5r_read(g, "steps_b", 1, p1, H5T_NATIVE_INT64, cp->steps_b, p, w, c->err) != 0 ||
        h5r_read(g, "phi", 2, pm, H5T_NATIVE_DOUBLE, cp->phi, p, w, c->err) != 0 ||
        h5r_read(g, "k", 2, pm, H5T_NATIVE_INT32, cp->k, p, w, c->err) != 0 ||
        in_range(c, "phi", cp->phi, cp->npairs * cp->nmodules, -1, 1) != 0)
        goto done;
    for (size_t i = 0; i < cp->npairs * cp->nmodules; i++)
        if (cp->k[i] < 0 || cp->k[i] > DORA_SPEC_SUBSPACE_MAX) {
            dora_errf(c->err, "'%s': '%s/k' holds %d, outside [0, %d]", p, w, (int)cp->k[i],
                      DORA_SPEC_SUBSPACE_MAX);
            goto done;
        }
    rc = 0;
done:
    free(a);
    free(b);
    return rc;
}

/* Every /compare/A/B of file F. */
static int read_compares(hid_t f, dora_spectrum *sp, rd *c)
{
    if (H5Lexists(f, "compare", H5P_DEFAULT) <= 0)
        return 0;
    hid_t top = H5Gopen2(f, "compare", H5P_DEFAULT);
    char **av = NULL;
    size_t na = 0;
    int rc = -1;
    if (top < 0 || h5r_names(top, &av, &na) != 0) {
        dora_errf(c->err, "'%s': cannot list '/compare'", c->path);
        goto done;
    }
    for (size_t i = 0; i < na; i++) {
        hid_t ga = H5Gopen2(top, av[i], H5P_DEFAULT);
        char **bv = NULL;
        size_t nb = 0;
        int ok = ga >= 0 && h5r_names(ga, &bv, &nb) == 0;
        for (size_t j = 0; ok && j < nb; j++) {
            dora_spec_compare *grown = realloc(sp->cmp, (sp->ncompare + 1) * sizeof *grown);
            if (!grown) {
                ok = 0;
                break;
            }
            sp->cmp = grown;
            dora_spec_compare *cp = &sp->cmp[sp->ncompare++];
            memset(cp, 0, sizeof *cp);
            snprintf(c->where, sizeof c->where, "/compare/%s/%s", av[i], bv[j]);
            hid_t gb = H5Gopen2(ga, bv[j], H5P_DEFAULT);
            ok = gb >= 0 && read_compare(gb, sp, cp, c) == 0;
            if (gb >= 0)
                H5Gclose(gb);
            else
                dora_errf(c->err, "'%s': '%s' is not a group", c->path, c->where);
        }
        if (!ok && c->err && !c->err->msg[0])
            dora_errf(c->err, "'%s': cannot read '/compare/%s'", c->path, av[i]);
        h5r_names_free(bv, nb);
        if (ga >= 0)
            H5Gclose(ga);
        if (!ok)
            goto done;
    }
    rc = 0;
done:
    h5r_names_free(av, na);
    if (top >= 0)
        H5Gclose(top);
    return rc;
}

/* The root attributes of F that the summary shows. */
static int read_root(hid_t f, dora_spectrum *sp, rd *c)
{
    char *analysis = h5r_attr_str(f, "analysis");
    int ours = analysis && strcmp(analysis, "spectrum") == 0;
    free(analysis);
    if (!ours)
        return dora_errf(c->err, "'%s': not a results file of `dora-analyze spectrum` (no "
                                 "root attribute analysis = \"spectrum\")",
                         c->path);
    int32_t layout = 0;
    if (h5r_attr_num(f, "layout_version", H5T_NATIVE_INT32, &layout) != 0 ||
        layout != DORA_SPEC_LAYOUT_VERSION)
        return dora_errf(c->err, "'%s': spectrum layout_version %d, this tool reads %d",
                         c->path, (int)layout, DORA_SPEC_LAYOUT_VERSION);
    char *base = h5r_attr_str(f, "base_path");
    if (base && *base)
        sp->base_path = base;
    else
        free(base);
    if (h5r_attr_num(f, "threshold", H5T_NATIVE_DOUBLE, &sp->opts.threshold) != 0 ||
        h5r_attr_num(f, "top", H5T_NATIVE_INT64, &sp->opts.top) != 0 ||
        h5r_attr_num(f, "subspace", H5T_NATIVE_INT64, &sp->opts.subspace) != 0 ||
        !(sp->opts.threshold > 0 && sp->opts.threshold <= 1) || sp->opts.top < 0 ||
        sp->opts.subspace < 1 || sp->opts.subspace > DORA_SPEC_SUBSPACE_MAX)
        return dora_errf(c->err, "'%s': the root attributes threshold, top and subspace are "
                                 "missing or out of range",
                         c->path);
    return 0;
}

int dora_spectrum_read(const char *path, dora_spectrum *sp, dora_err *err)
{
    memset(sp, 0, sizeof *sp);
    rd c = {path, "/", err};
    hid_t f = h5r_open(path, err), g = -1;
    if (f < 0)
        return -1;
    char **nv = NULL;
    size_t nn = 0;
    int rc = -1;
    if (read_root(f, sp, &c) != 0)
        goto done;
    if ((g = H5Gopen2(f, "runs", H5P_DEFAULT)) < 0 || h5r_names(g, &nv, &nn) != 0 || nn == 0) {
        dora_errf(err, "'%s': no readable '/runs' group with a run in it", path);
        goto done;
    }
    if (!(sp->runs = alloc_n(nn, sizeof *sp->runs))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    while (sp->nruns < nn) {
        dora_spec_run *r = &sp->runs[sp->nruns++]; /* released with the others on failure */
        if (read_run(g, nv[sp->nruns - 1], r, &c) != 0)
            goto done;
    }
    rc = read_compares(f, sp, &c);
done:
    h5r_names_free(nv, nn);
    if (g >= 0)
        H5Gclose(g);
    H5Fclose(f);
    if (rc != 0)
        dora_spectrum_release(sp);
    return rc;
}
