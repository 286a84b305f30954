/* h5read.h - checked HDF5 reading helpers for results files (internal): a
 * results file is input like any other, so every dataset is read only after
 * its rank and dimensions match what the caller expects, and every failure
 * names the file and the object. */
#ifndef DORA_H5READ_H
#define DORA_H5READ_H

#include "dora/error.h"

#include <hdf5.h>
#include <stddef.h>

/* Bound on any one dimension, and on the product of two, read from a file. */
#define H5R_MAX_ITEMS 100000000ULL

/* PATH opened read-only, HDF5's own error printing off; -1 with ERR naming
 * PATH when it is not a regular file (a FIFO would make HDF5 wait for a
 * writer), not HDF5, or cannot be opened. */
hid_t h5r_open(const char *path, dora_err *err);

/* A string attribute of LOC, newly allocated; NULL when absent, not a string,
 * or out of memory. */
char *h5r_attr_str(hid_t loc, const char *name);
/* A scalar numeric attribute read as MEM_TYPE into OUT: 0, or -1 when absent
 * or not a one-element number. */
int h5r_attr_num(hid_t loc, const char *name, hid_t mem_type, void *out);

/* The dimensions of dataset DS when it has rank RANK (0, else -1). */
int h5r_dims(hid_t ds, int rank, hsize_t *dims);
/* The length of the rank-1 dataset NAME in G, or -1 when it is absent, of
 * another rank, or longer than H5R_MAX_ITEMS. */
long long h5r_length(hid_t g, const char *name);

/* Dataset NAME of G (whose path in the file is WHERE, e.g. "/runs/ft") read as
 * MEM_TYPE into OUT after checking that it has rank RANK and dimensions DIMS.
 * Errors name PATH and WHERE/NAME: missing, another shape, unreadable. */
int h5r_read(hid_t g, const char *name, int rank, const hsize_t *dims, hid_t mem_type, void *out,
             const char *path, const char *where, dora_err *err);
/* The rank-1 variable-length string dataset NAME of G, of length N, into OUT[0..N)
 * (each newly allocated; on failure those set are left for the caller to free). */
int h5r_strings(hid_t g, const char *name, hsize_t n, char **out, const char *path,
                const char *where, dora_err *err);

/* The link names of group G, in creation order where the group tracks it (the
 * command line's order of runs), else by name, into a newly allocated array
 * (*v, *n; release with h5r_names_free). 0, or -1 (unreadable, out of memory). */
int h5r_names(hid_t g, char ***v, size_t *n);
void h5r_names_free(char **v, size_t n);

#endif
