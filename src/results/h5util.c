/* h5util.c - small checked HDF5 writers shared by the result files; see h5util.h. */
#define _POSIX_C_SOURCE 200809L
#include "results/h5util.h"
#include "dora/version.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


hid_t h5u_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

int h5u_attr_str(hid_t loc, const char *name, const char *value, dora_err *err)
{
    hid_t t = -1, sp = -1, a = -1;
    CHECK(t = h5u_str_type(), "cannot make a string type for attribute '%s'", name);
    CHECK(sp = H5Screate(H5S_SCALAR), "cannot make a dataspace for attribute '%s'", name);
    CHECK(a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT), "cannot create attribute '%s'",
          name);
    CHECK(H5Awrite(a, t, &value), "cannot write attribute '%s'", name);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return 0;
fail:
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    return -1;
}

int h5u_attr_i32(hid_t loc, const char *name, int32_t value, dora_err *err)
{
    hid_t sp = -1, a = -1;
    CHECK(sp = H5Screate(H5S_SCALAR), "cannot make a dataspace for attribute '%s'", name);
    CHECK(a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create attribute '%s'", name);
    CHECK(H5Awrite(a, H5T_NATIVE_INT32, &value), "cannot write attribute '%s'", name);
    H5Aclose(a);
    H5Sclose(sp);
    return 0;
fail:
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return -1;
}

/* A dataset of RANK (1 or 2) with the given file and memory types. */
int h5u_dataset(hid_t loc, const char *name, int rank, const hsize_t *dims, hid_t file_type,
                   hid_t mem_type, const void *data, dora_err *err)
{
    hid_t sp = -1, ds = -1, dx = -1;
    hsize_t total = 1;
    for (int i = 0; i < rank; i++)
        total *= dims[i];
    CHECK(sp = H5Screate_simple(rank, dims, NULL), "cannot make a dataspace for dataset '%s'", name);
    CHECK(ds = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create dataset '%s'", name);
    if (total > 0) { /* an empty dataset has nothing to write */
        /* HDF5 allocates and clears a 1 MiB conversion buffer (and another for the
         * background) for every write that converts, variable-length strings among
         * them: with a few dozen datasets that was 14% of a warm FT analysis. A buffer
         * the size of this dataset's elements does the same conversion. */
        size_t el = H5Tget_size(file_type), em = H5Tget_size(mem_type);
        size_t per = el > em ? el : em, cap = (size_t)1 << 20, want = 4096;
        if (per > 0 && total < cap / per)
            want = (size_t)total * per > want ? (size_t)total * per : want;
        else
            want = cap;
        CHECK(dx = H5Pcreate(H5P_DATASET_XFER), "cannot write dataset '%s'", name);
        CHECK(H5Pset_buffer(dx, want, NULL, NULL), "cannot write dataset '%s'", name);
        CHECK(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, dx, data), "cannot write dataset '%s'",
              name);
        H5Pclose(dx);
    }
    H5Dclose(ds);
    H5Sclose(sp);
    return 0;
fail:
    if (dx >= 0)
        H5Pclose(dx);
    if (ds >= 0)
        H5Dclose(ds);
    if (sp >= 0)
        H5Sclose(sp);
    return -1;
}

int h5u_strings(hid_t loc, const char *name, size_t n, char *const *v, dora_err *err)
{
    hid_t t = h5u_str_type();
    if (t < 0)
        return dora_errf(err, "cannot make a string type for dataset '%s'", name);
    hsize_t dims[1] = {n};
    int rc = h5u_dataset(loc, name, 1, dims, t, t, v, err);
    H5Tclose(t);
    return rc;
}


int h5u_attr_num(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *v,
                    dora_err *err)
{
    hid_t sp = -1, a = -1;
    CHECK(sp = H5Screate(H5S_SCALAR), "cannot make a dataspace for attribute '%s'", name);
    CHECK(a = H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create attribute '%s'", name);
    CHECK(H5Awrite(a, mem_type, v), "cannot write attribute '%s'", name);
    H5Aclose(a);
    H5Sclose(sp);
    return 0;
fail:
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return -1;
}

/* An HDF5 link name for a tensor name: '/' -> %2F, '%' -> %25; "." -> %2E,
 * "" -> %00 (the rule of the per_row groups of `analyze`). */
char *h5u_link_name(const char *s)
{
    size_t n = 4;
    for (const char *p = s; *p; p++)
        n += (*p == '/' || *p == '%') ? 3 : 1;
    char *o = malloc(n);
    if (!o)
        return NULL;
    size_t k = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '/' || *p == '%')
            k += (size_t)snprintf(o + k, n - k, "%%%02X", (unsigned)(unsigned char)*p);
        else
            o[k++] = *p;
    }
    o[k] = '\0';
    if (k == 0)
        strcpy(o, "%00");
    else if (strcmp(o, ".") == 0)
        strcpy(o, "%2E");
    return o;
}

hid_t h5u_ordered_group(hid_t loc, const char *name)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl >= 0)
        H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl >= 0 ? gcpl : H5P_DEFAULT, H5P_DEFAULT);
    if (gcpl >= 0)
        H5Pclose(gcpl);
    return g;
}

/* HDF5's free lists keep a freed block of a kind for the next one only up to 64 KiB a
 * list (1 MiB in all) by default. Its metadata cache (H5C_t, ~0.5 MiB) is larger, so
 * each file opened after another (the output's check, then the file written) got a
 * new one and cleared it: a tiny FT run had 820 faults, now 708 (~17 us each here;
 * median 29.9 -> 28.9 ms). Up to 1 MiB a list (4 MiB in all) is kept; the array and
 * block lists keep HDF5's defaults. */
static pthread_once_t limits_once = PTHREAD_ONCE_INIT;
static void set_limits(void)
{
    H5set_free_list_limits(4 << 20, 1 << 20, 4 << 20, 256 << 10, 16 << 20, 1 << 20);
}

static void h5u_setup(void)
{
    pthread_once(&limits_once, set_limits);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages, not HDF5's stack dumps */
}

hid_t h5u_create(const char *name, const char *command_line, int32_t layout_version, dora_err *err)
{
    h5u_setup();
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, (size_t)64 << 10, 0) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        dora_errf(err, "'%s': cannot set up HDF5's in-memory driver", name);
        return -1;
    }
    hid_t f = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        dora_errf(err, "'%s': cannot create the HDF5 file in memory", name);
        return -1;
    }
    if (h5u_attr_str(f, "tool_version", DORA_VERSION, err) != 0 ||
        h5u_attr_str(f, "command_line", command_line, err) != 0 ||
        h5u_attr_str(f, "created", created, err) != 0 ||
        h5u_attr_i32(f, "layout_version", layout_version, err) != 0) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

/* Close every group, dataset, named type and attribute still open in F. */
static void close_all(hid_t f)
{
    const unsigned types = H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR |
                           H5F_OBJ_LOCAL;
    ssize_t n = H5Fget_obj_count(f, types);
    if (n <= 0)
        return;
    hid_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids)
        return; /* H5F_CLOSE_STRONG closes them with the file */
    n = H5Fget_obj_ids(f, types, (size_t)n, ids);
    for (ssize_t i = 0; i < n; i++) {
        H5I_type_t t = H5Iget_type(ids[i]);
        if (t == H5I_DATASET)
            H5Dclose(ids[i]);
        else if (t == H5I_GROUP)
            H5Gclose(ids[i]);
        else if (t == H5I_DATATYPE)
            H5Tclose(ids[i]);
        else if (t == H5I_ATTR)
            H5Aclose(ids[i]);
    }
    free(ids);
}

void h5u_abandon(hid_t f, const char *path, dora_err *err)
{
    if (f >= 0) {
        close_all(f);
        H5Fclose(f);
    }
    if (!strstr(err->msg, path))
        dora_errprefix(err, "'%s'", path);
}

int h5u_commit(hid_t f, const util_out *o, dora_err *err)
{
    const unsigned types = H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR |
                           H5F_OBJ_LOCAL;
    ssize_t open_objs = H5Fget_obj_count(f, types);
    if (open_objs != 0) {
        close_all(f);
        H5Fclose(f);
        return dora_errf(err, "'%s': %zd HDF5 object(s) left open by the writer", o->path,
                         open_objs);
    }
    unsigned char *img = NULL;
    ssize_t n = -1;
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0 && (n = H5Fget_file_image(f, NULL, 0)) > 0 &&
        (img = malloc((size_t)n)) && H5Fget_file_image(f, img, (size_t)n) != n)
        n = -1;
    int closed = H5Fclose(f) >= 0;
    if (n <= 0 || !img || !closed) {
        free(img);
        return dora_errf(err, "'%s': %s", o->path,
                         n > 0 && !img ? "out of memory for the file's image"
                                       : "HDF5 could not finish the file in memory");
    }
    int rc = util_out_write(o, img, (size_t)n, err);
    free(img);
    return rc;
}

int h5u_write_file(const char *path, const char *command_line, int32_t layout_version,
                   h5u_body_fn body, const void *ctx, dora_err *err)
{
    util_out o;
    if (util_out_begin(&o, path, err) != 0)
        return -1;
    hid_t f = h5u_create(o.tmp, command_line, layout_version, err);
    if (f < 0 || body(f, ctx, err) != 0)
        goto fail;
    hid_t done = f;
    f = -1; /* h5u_commit closes it, whatever happens */
    if (h5u_commit(done, &o, err) != 0 || util_out_commit(&o, err) != 0)
        goto fail;
    return 0;
fail:
    h5u_abandon(f, path, err);
    util_out_abort(&o);
    return -1;
}

int h5u_is_ours(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    int fd = util_open_regular(path, NULL);
    if (fd < 0)
        return 0;
    unsigned char head[8];
    ssize_t got = read(fd, head, sizeof head);
    close(fd);
    if (got != (ssize_t)sizeof head || memcmp(head, sig, sizeof sig) != 0)
        return 0;
    h5u_setup();
    /* a look, not a use: no lock (a file system without locks must not make it "not ours") */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0)
        H5Pset_file_locking(fapl, 0, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0)
        H5Pclose(fapl);
    if (f < 0)
        return 0;
    int ours = H5Aexists(f, "tool_version") > 0 && H5Aexists(f, "layout_version") > 0 &&
               H5Aexists(f, "command_line") > 0;
    if (ours) {
        ours = 0;
        hid_t a = H5Aopen(f, "command_line", H5P_DEFAULT);
        hid_t t = a >= 0 ? H5Aget_type(a) : -1;
        hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
        hid_t mt = h5u_str_type();
        char *v = NULL;
        if (t >= 0 && sp >= 0 && mt >= 0 && H5Tget_class(t) == H5T_STRING &&
            H5Tis_variable_str(t) > 0 && H5Sget_simple_extent_npoints(sp) == 1 &&
            H5Aread(a, mt, &v) >= 0 && v) {
            ours = strncmp(v, "dora-analyze", strlen("dora-analyze")) == 0;
            H5free_memory(v);
        }
        if (mt >= 0)
            H5Tclose(mt);
        if (sp >= 0)
            H5Sclose(sp);
        if (t >= 0)
            H5Tclose(t);
        if (a >= 0)
            H5Aclose(a);
    }
    H5Fclose(f);
    return ours;
}
