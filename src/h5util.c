/* h5util.c - small checked HDF5 writers shared by the result files; see h5util.h. */
#include "h5util.h"


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
    CHECK(sp = H5Screate_simple(rank, dims, NULL), "cannot make a dataspace for dataset '%s'", name);
    CHECK(ds = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "cannot create dataset '%s'", name);
    if (dims[0] > 0 && (rank == 1 || dims[1] > 0))
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

