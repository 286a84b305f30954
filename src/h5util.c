/* h5util.c - small checked HDF5 writers shared by the result files; see h5util.h. */
#define _POSIX_C_SOURCE 200809L
#include "h5util.h"
#include "dora/version.h"

#include <errno.h>
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
    hid_t sp = -1, ds = -1;
    hsize_t total = 1;
    for (int i = 0; i < rank; i++)
        total *= dims[i];
    CHECK(sp = H5Screate_simple(rank, dims, NULL), "cannot make a dataspace for dataset '%s'", name);
    CHECK(ds = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create dataset '%s'", name);
    if (total > 0) /* an empty dataset has nothing to write */
        CHECK(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
              "cannot write dataset '%s'", name);
    H5Dclose(ds);
    H5Sclose(sp);
    return 0;
fail:
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

hid_t h5u_create(const char *tmp, const char *command_line, int32_t layout_version, dora_err *err)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages, not HDF5's stack dumps */
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        dora_errf(err, "cannot create '%s' (is the folder writable?)", tmp);
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

void h5u_abandon(hid_t f, const char *tmp, const char *path, dora_err *err)
{
    if (f >= 0)
        H5Fclose(f);
    unlink(tmp);
    if (!strstr(err->msg, path))
        dora_errprefix(err, "'%s'", path);
}

int h5u_commit(hid_t f, const char *tmp, const char *path, dora_err *err)
{
    int flushed = H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0;
    int closed = H5Fclose(f) >= 0;
    if (!flushed)
        return dora_errf(err, "cannot flush '%s'", tmp);
    if (!closed)
        return dora_errf(err, "cannot close '%s' (disk full?)", tmp);
    if (rename(tmp, path) != 0)
        return dora_errf(err, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    return 0;
}
