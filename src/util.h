/* util.h - small internal helpers for paths, files and strict number parsing. */
#ifndef DORA_UTIL_H
#define DORA_UTIL_H

#include "dora/error.h"

#include <stddef.h>
#include <stdint.h>

int util_has_suffix(const char *s, const char *suffix);
/* "dir/name", newly allocated (NULL when out of memory). */
char *util_join(const char *dir, const char *name);
/* Folder part of a path ("." when there is none), newly allocated. */
char *util_dirname(const char *path);
/* Last component without trailing slashes, newly allocated. */
char *util_basename(const char *path);
int util_is_file(const char *path);
int util_is_dir(const char *path);
/* Read a whole file of at most MAX bytes into a NUL-terminated buffer the
 * caller frees. Errors name the file. */
int util_read_file(const char *path, size_t max, char **buf, size_t *len, dora_err *err);
/* Strict decimal parse of a whole string into [min, max]; -1 if it is not one. */
int util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Compare names so that embedded numbers order numerically (layers.2 < layers.10). */
int util_natural_cmp(const char *a, const char *b);

#endif
