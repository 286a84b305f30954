/* h5util.h - checked HDF5 writing helpers (internal). Every call is checked
 * and a failure fills err naming the object; explicit little-endian file types
 * are chosen by the caller, memory types are native. */
#ifndef DORA_H5UTIL_H
#define DORA_H5UTIL_H

#include "dora/error.h"
#include "core/util.h"

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Every H5 call is checked; the failing object is named in the message. The
 * enclosing function has a dora_err *err and a fail: label. */
#define CHECK(expr, ...)                                                                           \
    do {                                                                                           \
        if ((expr) < 0) {                                                                          \
            dora_errf(err, __VA_ARGS__);                                                           \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Variable-length UTF-8 string type (h5py's str); close with H5Tclose. */
hid_t h5u_str_type(void);
/* Scalar attributes. */
int h5u_attr_str(hid_t loc, const char *name, const char *value, dora_err *err);
int h5u_attr_i32(hid_t loc, const char *name, int32_t value, dora_err *err);
/* A dataset of any rank written from DATA in MEM_TYPE, stored as FILE_TYPE
 * (e.g. H5T_IEEE_F64LE from H5T_NATIVE_DOUBLE); nothing is written when it has
 * no element. */
int h5u_dataset(hid_t loc, const char *name, int rank, const hsize_t *dims, hid_t file_type,
                hid_t mem_type, const void *data, dora_err *err);
/* A scalar numeric attribute. */
int h5u_attr_num(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *v,
                 dora_err *err);
/* An HDF5 link name for a tensor name, newly allocated: '/' -> %2F, '%' -> %25,
 * "." -> %2E, "" -> %00 (HDF5 names cannot hold '/', nor be "." or ""). */
char *h5u_link_name(const char *s);
/* A group whose links keep their creation order (runs in command-line order). */
hid_t h5u_ordered_group(hid_t loc, const char *name);
/* A 1-D dataset of N variable-length UTF-8 strings. */
int h5u_strings(hid_t loc, const char *name, size_t n, char *const *v, dora_err *err);

/* Create a results file in memory (HDF5's core driver without a backing
 * store: the library never writes to disk, so a full disk cannot fail inside
 * it), named NAME in HDF5's messages, with the root attributes every results
 * file has: tool_version, command_line, created (UTC, ISO 8601),
 * layout_version. H5Fclose closes every object still open in it
 * (H5F_CLOSE_STRONG). Returns the file, or -1 (nothing left open). */
hid_t h5u_create(const char *name, const char *command_line, int32_t layout_version, dora_err *err);
/* Take the image of F, close F (always), and write the image into O's
 * temporary file (util_out_write: written in full and fsync'ed), without
 * renaming it: the caller commits O. A group, dataset, type or attribute
 * still open in F is an error (a missing close in the writer). */
int h5u_commit(hid_t f, const util_out *o, dora_err *err);
/* After a failed write: close every object still open in F and F itself (if
 * open, i.e. >= 0), and name PATH in ERR unless its message already does.
 * The caller aborts its util_out. */
void h5u_abandon(hid_t f, const char *path, dora_err *err);
/* Writes the contents of a results file: the groups, datasets and attributes
 * below its root, into the open file F. Returns 0, or -1 with ERR filled;
 * either way it closes what it opened (h5u_commit holds a missing close for
 * an error). */
typedef int (*h5u_body_fn)(hid_t f, const void *ctx, dora_err *err);
/* The one way to write a results file at PATH: create it in memory
 * (h5u_create: the root attributes every results file has, LAYOUT_VERSION),
 * let BODY(f, CTX, err) fill it, then commit it (h5u_commit, util_out_commit:
 * PATH is replaced whole, or left as it was). On any failure the file is
 * abandoned (h5u_abandon: ERR names PATH) and nothing is left behind.
 * Returns 0 or -1. */
int h5u_write_file(const char *path, const char *command_line, int32_t layout_version,
                   h5u_body_fn body, const void *ctx, dora_err *err);
/* 1 if PATH is a regular file with the HDF5 signature at byte 0 whose root
 * has the attributes tool_version, layout_version and a command_line that
 * starts with "dora-analyze": a results file of this tool. 0 otherwise. */
int h5u_is_ours(const char *path);

#endif
