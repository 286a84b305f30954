/* h5read.c - checked HDF5 reading helpers; see results/h5read.h. */
#define _POSIX_C_SOURCE 200809L
#include "results/h5read.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

hid_t h5r_open(const char *path, dora_err *err)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return dora_errf(err, "'%s': not a regular file (or cannot be read)", path);
    if (H5Fis_hdf5(path) <= 0)
        return dora_errf(err, "'%s': not an HDF5 file (or cannot be read)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return dora_errf(err, "'%s': cannot open as HDF5", path);
    return f;
}

/* The string of attribute A (type FT): variable-length or fixed-size. */
static char *read_str(hid_t a, hid_t ft)
{
    hid_t mt = H5Tcopy(H5T_C_S1);
    char *out = NULL;
    if (mt < 0)
        return NULL;
    H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 does not convert between ASCII and UTF-8 */
    if (H5Tis_variable_str(ft) > 0) {
        char *v = NULL;
        H5Tset_size(mt, H5T_VARIABLE);
        if (H5Aread(a, mt, &v) >= 0 && v) {
            out = strdup(v);
            H5free_memory(v);
        }
    } else {
        size_t n = H5Tget_size(ft);
        char *v = n < (1u << 20) ? calloc(n + 1, 1) : NULL;
        H5Tset_size(mt, n + 1);
        if (v && H5Aread(a, mt, v) >= 0)
            out = v;
        else
            free(v);
    }
    H5Tclose(mt);
    return out;
}

char *h5r_attr_str(hid_t loc, const char *name)
{
    if (H5Aexists(loc, name) <= 0)
        return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return NULL;
    hid_t ft = H5Aget_type(a);
    char *out = ft >= 0 && H5Tget_class(ft) == H5T_STRING ? read_str(a, ft) : NULL;
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    return out;
}

int h5r_attr_num(hid_t loc, const char *name, hid_t mem_type, void *out)
{
    if (H5Aexists(loc, name) <= 0)
        return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t cl = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    int ok = (cl == H5T_INTEGER || cl == H5T_FLOAT) && sp >= 0 &&
             H5Sget_simple_extent_npoints(sp) == 1 && H5Aread(a, mem_type, out) >= 0;
    if (sp >= 0)
        H5Sclose(sp);
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    return ok ? 0 : -1;
}

int h5r_dims(hid_t ds, int rank, hsize_t *dims)
{
    hid_t sp = H5Dget_space(ds);
    if (sp < 0)
        return -1;
    int r = H5Sget_simple_extent_ndims(sp);
    int ok = r == rank && H5Sget_simple_extent_dims(sp, dims, NULL) == rank;
    H5Sclose(sp);
    return ok ? 0 : -1;
}

long long h5r_length(hid_t g, const char *name)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return -1;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    hsize_t d[1];
    long long n = ds >= 0 && h5r_dims(ds, 1, d) == 0 && d[0] <= H5R_MAX_ITEMS ? (long long)d[0]
                                                                               : -1;
    if (ds >= 0)
        H5Dclose(ds);
    return n;
}

int h5r_read(hid_t g, const char *name, int rank, const hsize_t *dims, hid_t mem_type, void *out,
             const char *path, const char *where, dora_err *err)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return dora_errf(err, "'%s': '%s' has no dataset '%s'", path, where, name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0)
        return dora_errf(err, "'%s': '%s/%s' is not a dataset", path, where, name);
    hsize_t got[8] = {0}, n = 1;
    int rc = 0, same = rank <= 8 && h5r_dims(ds, rank, got) == 0;
    for (int i = 0; same && i < rank; i++) {
        same = got[i] == dims[i];
        n *= dims[i];
    }
    hid_t ft = H5Dget_type(ds);
    H5T_class_t cl = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    if (ft >= 0)
        H5Tclose(ft);
    if (!same)
        rc = dora_errf(err, "'%s': '%s/%s' does not have the shape the layout requires", path,
                       where, name);
    else if (cl != H5T_INTEGER && cl != H5T_FLOAT)
        rc = dora_errf(err, "'%s': '%s/%s' is not numeric", path, where, name);
    else if (n > 0 && H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        rc = dora_errf(err, "'%s': cannot read '%s/%s'", path, where, name);
    H5Dclose(ds);
    return rc;
}

int h5r_strings(hid_t g, const char *name, hsize_t n, char **out, const char *path,
                const char *where, dora_err *err)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return dora_errf(err, "'%s': '%s' has no dataset '%s'", path, where, name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0)
        return dora_errf(err, "'%s': '%s/%s' is not a dataset", path, where, name);
    hid_t mt = H5Tcopy(H5T_C_S1), ft = H5Dget_type(ds);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5T_CSET_UTF8);
    int isstr = ft >= 0 && H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0;
    if (isstr)
        H5Tset_cset(mt, H5Tget_cset(ft));
    hsize_t dims[1];
    int rc = 0;
    char **tmp = calloc(n + 1, sizeof *tmp);
    if (!tmp)
        rc = dora_errf(err, "out of memory");
    else if (!isstr || h5r_dims(ds, 1, dims) != 0 || dims[0] != n)
        rc = dora_errf(err, "'%s': '%s/%s' is not a string list of length %llu", path, where,
                       name, (unsigned long long)n);
    else if (n > 0 && H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) < 0)
        rc = dora_errf(err, "'%s': cannot read '%s/%s'", path, where, name);
    else {
        for (hsize_t i = 0; rc == 0 && i < n; i++)
            if (!(out[i] = strdup(tmp[i] ? tmp[i] : "")))
                rc = dora_errf(err, "out of memory");
        if (n > 0) {
            hid_t sp = H5Dget_space(ds);
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, tmp);
            H5Sclose(sp);
        }
    }
    free(tmp);
    if (ft >= 0)
        H5Tclose(ft);
    H5Tclose(mt);
    H5Dclose(ds);
    return rc;
}

typedef struct names {
    char **v;
    size_t n, cap;
} names;

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *op)
{
    (void)g;
    (void)info;
    names *nm = op;
    if (nm->n == nm->cap) {
        size_t nc = nm->cap ? 2 * nm->cap : 8;
        char **p = realloc(nm->v, nc * sizeof *p);
        if (!p)
            return -1;
        nm->v = p;
        nm->cap = nc;
    }
    if (!(nm->v[nm->n] = strdup(name)))
        return -1;
    nm->n++;
    return 0;
}

int h5r_names(hid_t g, char ***v, size_t *n)
{
    hsize_t idx = 0;
    hid_t gcpl = H5Gget_create_plist(g);
    unsigned order = 0;
    if (gcpl >= 0) {
        H5Pget_link_creation_order(gcpl, &order);
        H5Pclose(gcpl);
    }
    H5_index_t by = (order & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
    names nm = {0};
    if (H5Literate(g, by, H5_ITER_INC, &idx, collect, &nm) < 0) {
        h5r_names_free(nm.v, nm.n);
        *v = NULL;
        *n = 0;
        return -1;
    }
    *v = nm.v;
    *n = nm.n;
    return 0;
}

void h5r_names_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}
