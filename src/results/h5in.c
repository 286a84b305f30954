/* h5in.c - reading results files; see include/dora/h5in.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/h5in.h"
#include "dora/adapter.h"
#include "results/h5read.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>


typedef struct ctx {
    const char *path;
    dora_err *err;
} ctx;

/* Dataset NAME of G, of rank RANK and dimensions D0 (x D1), into OUT; errors
 * name the file and /runs/RUN/NAME (results/h5read.h). */
static int read_num(hid_t g, const char *name, int rank, hsize_t d0, hsize_t d1, hid_t memtype,
                    void *out, const ctx *c, const char *run)
{
    char where[1300]; /* "/runs/" and the run (or its heads group: up to 1200 bytes) */
    const hsize_t dims[2] = {d0, d1};
    snprintf(where, sizeof where, "/runs/%s", run);
    return h5r_read(g, name, rank, dims, memtype, out, c->path, where, c->err);
}

/* A 1-D variable-length string dataset of length N into newly allocated strings. */
static int read_strings(hid_t g, const char *name, hsize_t n, char **out, const ctx *c,
                        const char *run)
{
    char where[1300]; /* "/runs/" and the run (or its heads group: up to 1200 bytes) */
    snprintf(where, sizeof where, "/runs/%s", run);
    return h5r_strings(g, name, n, out, c->path, where, c->err);
}

/* delta_m_passive and delta_m_active: both, or neither (a file written before
 * them: both NULL); finite and >= 0. */
static int read_geom(hid_t g, dora_result *r, const ctx *c, const char *name)
{
    const size_t S = r->nsteps, L = r->nmodules;
    int hp = H5Lexists(g, "delta_m_passive", H5P_DEFAULT) > 0;
    int ha = H5Lexists(g, "delta_m_active", H5P_DEFAULT) > 0;
    if (!hp && !ha) {
        free(r->delta_m_passive);
        free(r->delta_m_active);
        r->delta_m_passive = r->delta_m_active = NULL;
        return 0;
    }
    if (hp != ha)
        return dora_errf(c->err, "'%s': run '%s' has '%s' without '%s'", c->path, name,
                         hp ? "delta_m_passive" : "delta_m_active",
                         hp ? "delta_m_active" : "delta_m_passive");
    if (read_num(g, "delta_m_passive", 2, S, L, H5T_NATIVE_DOUBLE, r->delta_m_passive, c, name) ||
        read_num(g, "delta_m_active", 2, S, L, H5T_NATIVE_DOUBLE, r->delta_m_active, c, name))
        return -1;
    for (size_t i = 0; i < S * L; i++)
        if (!isfinite(r->delta_m_passive[i]) || !isfinite(r->delta_m_active[i]) ||
            r->delta_m_passive[i] < 0 || r->delta_m_active[i] < 0)
            return dora_errf(c->err,
                             "'%s': run '%s' holds a non-finite or negative delta_m_passive or "
                             "delta_m_active",
                             c->path, name);
    return 0;
}

/* /runs/NAME/heads, when there (docs/hdf5.md): every count checked against
 * the run's modules and rows before anything is read into memory. */
static int read_heads(hid_t g, dora_result *r, const ctx *c, const char *name)
{
    if (H5Lexists(g, "heads", H5P_DEFAULT) <= 0)
        return 0;
    hid_t hg = H5Gopen2(g, "heads", H5P_DEFAULT);
    if (hg < 0)
        return dora_errf(c->err, "'%s': '/runs/%s/heads' is not a group", c->path, name);
    int rc = -1;
    char **mods = NULL;
    hsize_t dims[1] = {0};
    hid_t d = H5Dopen2(hg, "heads", H5P_DEFAULT);
    int shp = d >= 0 && h5r_dims(d, 1, dims) == 0;
    if (d >= 0)
        H5Dclose(d);
    const size_t H = shp ? (size_t)dims[0] : 0, S = r->nsteps;
    if (!shp || H == 0 || H > r->nmodules) {
        dora_errf(c->err, "'%s': '/runs/%s/heads' has no valid 'heads' dataset", c->path, name);
        goto done;
    }
    r->nhead_mods = H;
    if (!(mods = calloc(H + 1, sizeof *mods)) ||
        !(r->head_module = calloc(H + 1, sizeof *r->head_module)) ||
        !(r->head_count = calloc(H + 1, sizeof *r->head_count)) ||
        !(r->head_offset = calloc(H + 2, sizeof *r->head_offset))) {
        dora_errf(c->err, "out of memory reading run '%s'", name);
        goto done;
    }
    char hname[1200];
    snprintf(hname, sizeof hname, "%s/heads", name);
    if (read_strings(hg, "modules", H, mods, c, hname) != 0 ||
        read_num(hg, "heads", 1, H, 0, H5T_NATIVE_INT64, r->head_count, c, hname) != 0 ||
        read_num(hg, "offset", 1, H + 1, 0, H5T_NATIVE_INT64, r->head_offset, c, hname) != 0)
        goto done;
    r->head_dim = 0;
    for (size_t h = 0; h < H; h++) {
        size_t l = 0;
        while (l < r->nmodules && strcmp(r->modules[l], mods[h]) != 0)
            l++;
        int64_t n = r->head_count[h];
        if (l == r->nmodules || n <= 0 || r->rows[l] % n != 0 || r->head_offset[h] < 0 ||
            r->head_offset[h + 1] < r->head_offset[h] ||
            r->head_offset[h + 1] - r->head_offset[h] != n || r->head_offset[0] != 0 ||
            (r->head_dim && r->rows[l] / n != r->head_dim)) {
            dora_errf(c->err, "'%s': '/runs/%s/heads' does not match the run's modules at '%s'",
                      c->path, name, mods[h]);
            goto done;
        }
        r->head_module[h] = l;
        r->head_dim = r->rows[l] / n;
    }
    const size_t NH = (size_t)r->head_offset[H];
    if (NH > H5R_MAX_ITEMS || (S && NH > H5R_MAX_ITEMS / S)) {
        dora_errf(c->err, "'%s': '/runs/%s/heads' holds too many heads", c->path, name);
        goto done;
    }
    if (!(r->head_dm = calloc(S * NH + 1, sizeof *r->head_dm)) ||
        !(r->head_dd = calloc(S * NH + 1, sizeof *r->head_dd))) {
        dora_errf(c->err, "out of memory reading run '%s'", name);
        goto done;
    }
    if (read_num(hg, "delta_m", 2, S, NH, H5T_NATIVE_DOUBLE, r->head_dm, c, hname) != 0 ||
        read_num(hg, "delta_d", 2, S, NH, H5T_NATIVE_DOUBLE, r->head_dd, c, hname) != 0)
        goto done;
    for (size_t i = 0; i < S * NH; i++)
        if (!isfinite(r->head_dm[i]) || !isfinite(r->head_dd[i])) {
            dora_errf(c->err, "'%s': run '%s' holds a non-finite per-head value", c->path, name);
            goto done;
        }
    rc = 0;
done:
    for (size_t h = 0; mods && h < H; h++)
        free(mods[h]);
    free(mods);
    H5Gclose(hg);
    return rc;
}

static int read_run(hid_t runs, const char *name, dora_result *r, const ctx *c)
{
    hid_t g = H5Gopen2(runs, name, H5P_DEFAULT);
    if (g < 0)
        return dora_errf(c->err, "'%s': '/runs/%s' is not a group", c->path, name);
    int rc = -1;
    hsize_t ds_s[1], ds_l[1];
    char *method = h5r_attr_str(g, "method");
    r->name = strdup(name);
    r->method = method ? dora_method_static(method) : NULL;
    r->source_path = h5r_attr_str(g, "source_path");
    r->base_path = h5r_attr_str(g, "base_path");
    free(method);
    if (!r->name || !r->source_path || !r->base_path) {
        dora_errf(c->err, "'%s': run '%s' lacks its attributes (source_path, base_path)", c->path,
                  name);
        goto done;
    }
    if (!r->method) {
        dora_errf(c->err, "'%s': run '%s': attribute 'method' is not ft, lora, dora, ia3, adalora, vera, loha or lokr", c->path,
                  name);
        goto done;
    }
    hid_t d1 = H5Dopen2(g, "steps", H5P_DEFAULT), d2 = H5Dopen2(g, "modules", H5P_DEFAULT);
    int shp = d1 >= 0 && d2 >= 0 && h5r_dims(d1, 1, ds_s) == 0 && h5r_dims(d2, 1, ds_l) == 0;
    if (d1 >= 0)
        H5Dclose(d1);
    if (d2 >= 0)
        H5Dclose(d2);
    if (!shp || ds_s[0] > H5R_MAX_ITEMS || ds_l[0] > H5R_MAX_ITEMS || ds_s[0] * ds_l[0] > H5R_MAX_ITEMS) {
        dora_errf(c->err, "'%s': run '%s' has no valid 'steps' and 'modules' datasets", c->path,
                  name);
        goto done;
    }
    size_t S = ds_s[0], L = ds_l[0];
    if (dora_result_alloc(r, S, L) != 0) {
        dora_errf(c->err, "out of memory reading run '%s'", name);
        goto done;
    }
    if (!r->step_stamps) {
        dora_errf(c->err, "out of memory reading run '%s'", name);
        goto done;
    }
    if (read_num(g, "steps", 1, S, 0, H5T_NATIVE_INT64, r->steps, c, name) != 0 ||
        read_strings(g, "checkpoints", S, r->step_paths, c, name) != 0 ||
        (H5Lexists(g, "checkpoint_stamps", H5P_DEFAULT) > 0 &&
         read_strings(g, "checkpoint_stamps", S, r->step_stamps, c, name) != 0) ||
        read_strings(g, "modules", L, r->modules, c, name) != 0 ||
        read_num(g, "layer", 1, L, 0, H5T_NATIVE_INT32, r->layer, c, name) != 0 ||
        read_num(g, "delta_m", 2, S, L, H5T_NATIVE_DOUBLE, r->delta_m, c, name) != 0 ||
        read_num(g, "delta_d", 2, S, L, H5T_NATIVE_DOUBLE, r->delta_d, c, name) != 0 ||
        read_num(g, "rows", 1, L, 0, H5T_NATIVE_INT64, r->rows, c, name) != 0 ||
        read_num(g, "cols", 1, L, 0, H5T_NATIVE_INT64, r->cols, c, name) != 0 ||
        read_num(g, "zero_rows", 2, S, L, H5T_NATIVE_INT64, r->zero_rows, c, name) != 0 ||
        (H5Lexists(g, "rank", H5P_DEFAULT) > 0 && /* files of layout 1 before adapters lack it */
         read_num(g, "rank", 1, L, 0, H5T_NATIVE_INT32, r->rank, c, name) != 0))
        goto done;
    for (size_t i = 0; i < S * L; i++)
        if (!isfinite(r->delta_m[i]) || !isfinite(r->delta_d[i])) {
            dora_errf(c->err, "'%s': run '%s' holds a non-finite delta_m or delta_d", c->path,
                      name);
            goto done;
        }
    if (read_geom(g, r, c, name) != 0 || read_heads(g, r, c, name) != 0)
        goto done;
    for (size_t s = 1; s < S; s++)
        if (r->steps[s] <= r->steps[s - 1]) {
            dora_errf(c->err, "'%s': run '%s': steps are not ascending", c->path, name);
            goto done;
        }
    rc = 0;
done:
    H5Gclose(g);
    return rc;
}

typedef struct names {
    char **v;
    size_t n;
} names;

/* The names of /runs, the group G (may be -1) and the file F, released. */
static void close_runs(names *nm, hid_t g, hid_t f)
{
    h5r_names_free(nm->v, nm->n);
    if (g >= 0)
        H5Gclose(g);
    H5Fclose(f);
}

int h5i_read(const char *path, dora_result **runs, size_t *nruns, dora_err *err)
{
    *runs = NULL;
    *nruns = 0;
    ctx c = {path, err};
    hid_t f = h5r_open(path, err);
    if (f < 0)
        return -1;
    int rc = -1;
    names nm = {0};
    dora_result *res = NULL;
    hid_t g = H5Gopen2(f, "runs", H5P_DEFAULT);
    if (g < 0) {
        dora_errf(err, "'%s': no '/runs' group: not a dora-analyze results file", path);
        goto done;
    }
    if (h5r_names(g, &nm.v, &nm.n) != 0) {
        dora_errf(err, "'%s': cannot list '/runs'", path);
        goto done;
    }
    if (nm.n == 0) {
        dora_errf(err, "'%s': '/runs' holds no run", path);
        goto done;
    }
    res = calloc(nm.n, sizeof *res);
    if (!res) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nm.n; i++) {
        if (read_run(g, nm.v[i], &res[i], &c) != 0) {
            for (size_t j = 0; j <= i; j++)
                dora_result_release(&res[j]);
            free(res);
            res = NULL;
            goto done;
        }
    }
    *runs = res;
    *nruns = nm.n;
    rc = 0;
done:
    close_runs(&nm, g, f);
    return rc;
}

/* ---- the summary of any results file (inspect) --------------------------- */

/* Run NAME of /runs (G) into *R: its method, steps and number of modules. */
static int summarise_run(hid_t g, const char *name, h5i_run_summary *r, const ctx *c)
{
    hid_t rg = H5Gopen2(g, name, H5P_DEFAULT);
    if (rg < 0)
        return dora_errf(c->err, "'%s': '/runs/%s' is not a group", c->path, name);
    int rc = 0;
    long long S = h5r_length(rg, "steps"), L = h5r_length(rg, "modules");
    r->name = strdup(name);
    r->method = h5r_attr_str(rg, "method");
    if (S < 0 || L < 0)
        rc = dora_errf(c->err, "'%s': run '%s' has no 1-D 'steps' and 'modules'", c->path, name);
    else if (!r->name || !(r->steps = calloc((size_t)S + 1, sizeof *r->steps)))
        rc = dora_errf(c->err, "out of memory");
    else if ((rc = read_num(rg, "steps", 1, (hsize_t)S, 0, H5T_NATIVE_INT64, r->steps, c, name)) ==
             0) {
        r->nsteps = (size_t)S;
        r->nmodules = (size_t)L;
    }
    H5Gclose(rg);
    return rc;
}

int h5i_summarise(const char *path, h5i_summary *s, dora_err *err)
{
    memset(s, 0, sizeof *s);
    ctx c = {path, err};
    hid_t f = h5r_open(path, err);
    if (f < 0)
        return -1;
    int rc = -1;
    names nm = {0};
    hid_t g = -1;
    s->tool_version = h5r_attr_str(f, "tool_version");
    s->created = h5r_attr_str(f, "created");
    s->command_line = h5r_attr_str(f, "command_line");
    s->analysis = h5r_attr_str(f, "analysis"); /* spectrum's; analyze's files have none */
    hid_t a = H5Aexists(f, "layout_version") > 0 ? H5Aopen(f, "layout_version", H5P_DEFAULT) : -1;
    int have_layout = a >= 0 && H5Aread(a, H5T_NATIVE_INT32, &s->layout_version) >= 0;
    if (a >= 0)
        H5Aclose(a);
    if (!s->tool_version || !have_layout) {
        dora_errf(err, "'%s': an HDF5 file, but not a results file of dora-analyze (no "
                       "tool_version and layout_version attributes)",
                  path);
        goto done;
    }
    if (!s->analysis && !(s->analysis = strdup("analyze"))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    s->nregression = h5r_length(f, "regression/run");
    if ((g = H5Gopen2(f, "runs", H5P_DEFAULT)) < 0 || h5r_names(g, &nm.v, &nm.n) != 0) {
        dora_errf(err, "'%s': no readable '/runs' group", path);
        goto done;
    }
    if (!(s->runs = calloc(nm.n + 1, sizeof *s->runs))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (; s->nruns < nm.n; s->nruns++)
        if (summarise_run(g, nm.v[s->nruns], &s->runs[s->nruns], &c) != 0) {
            s->nruns++; /* released with the others */
            goto done;
        }
    rc = 0;
done:
    close_runs(&nm, g, f);
    if (rc != 0)
        h5i_summary_release(s);
    return rc;
}

void h5i_summary_release(h5i_summary *s)
{
    for (size_t i = 0; s->runs && i < s->nruns; i++) {
        free(s->runs[i].name);
        free(s->runs[i].method);
        free(s->runs[i].steps);
    }
    free(s->runs);
    free(s->analysis);
    free(s->tool_version);
    free(s->created);
    free(s->command_line);
    memset(s, 0, sizeof *s);
}
