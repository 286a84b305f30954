/* util.h - small internal helpers for paths, files and strict number parsing. */
#ifndef DORA_UTIL_H
#define DORA_UTIL_H

#include "dora/error.h"

#include <stddef.h>
#include <stdint.h>

int util_has_suffix(const char *s, const char *suffix);
/* "dir/name", newly allocated (NULL when out of memory). */
char *util_join(const char *dir, const char *name);
/* *S = *S + "; " + ADD (just ADD when *S is NULL), reallocated: 0, or -1 out
 * of memory (*S unchanged). */
int util_append_item(char **s, const char *add);
/* Folder part of a path ("." when there is none), newly allocated. */
char *util_dirname(const char *path);
/* Last component without trailing slashes, newly allocated. */
char *util_basename(const char *path);
int util_is_file(const char *path);
int util_is_dir(const char *path);
/* Read a whole file of at most MAX bytes into a NUL-terminated buffer the
 * caller frees. Errors name the file. Only a regular file is read: it is
 * opened with O_NONBLOCK, so a FIFO or a device is refused, never waited on. */
int util_read_file(const char *path, size_t max, char **buf, size_t *len, dora_err *err);
/* Open PATH read-only the same way (O_NONBLOCK, then refused unless it is a
 * regular file; O_NONBLOCK is cleared again). Returns the descriptor, or -1
 * with ERR naming the file. */
int util_open_regular(const char *path, dora_err *err);

/* ---- outputs: private temporaries, committed by rename -----------------
 *
 * An output PATH is written as DIR/NAME/out, where NAME is the private folder
 * ".BASE.dora-tmp-HOST-PID-XXXXXX" that mkdtemp creates (mode 0700) beside
 * PATH (BASE: PATH's last component, cut to 100 bytes). Nobody else can plant
 * a file or a symlink in it, and the file is created O_EXCL|O_NOFOLLOW. It is
 * renamed over PATH when complete and the folder removed. While it exists the
 * pair is in a table that util_out_remove_all (async-signal-safe) empties, so
 * a signal handler can remove the temporaries of every output in flight. The
 * folder's name lets a later run remove one left by a process killed with
 * SIGKILL (util_out_begin does, see util_out_clean_stale). */
typedef struct util_out {
    char *path; /* the final name, owned */
    char *dir;  /* the private folder, owned */
    char *tmp;  /* dir/out, the file being written, owned */
    int slot;   /* in the signal table, or -1 */
} util_out;

/* Remove stale temporaries of PATH (util_out_clean_stale), create the private
 * folder and register it. The file itself is not created. */
int util_out_begin(util_out *o, const char *path, dora_err *err);
/* Create o->tmp (O_CREAT|O_EXCL|O_NOFOLLOW, 0644 less umask) and return its
 * descriptor, or -1 with ERR set. */
int util_out_open(const util_out *o, dora_err *err);
/* write() all LEN bytes of BUF to FD, again after EINTR: 0, or the errno of
 * the failure (ENOSPC for a write of 0 bytes); *DONE (if not NULL) gets the
 * bytes written. */
int util_write_all(int fd, const void *buf, size_t len, size_t *done);
/* Create o->tmp holding LEN bytes of BUF, written in full, fsync'ed and
 * closed. A short write (disk full) is an error naming PATH. */
int util_out_write(const util_out *o, const void *buf, size_t len, dora_err *err);
/* Rename o->tmp over o->path, remove the folder, sync the destination folder,
 * and release O. On failure the temporary is removed and O released too. */
int util_out_commit(util_out *o, dora_err *err);
/* Remove the temporary and its folder, and release O (no-op when not begun). */
void util_out_abort(util_out *o);
/* Remove every registered temporary and its folder: unlink and rmdir only,
 * for signal handlers. */
void util_out_remove_all(void);
/* Remove, in PATH's folder, the private folders of earlier runs for PATH
 * that are certainly stale: named as util_out_begin names them, for this
 * host, of a PID that is not alive, a real folder (not a symlink) owned by
 * this user, holding nothing but the file "out". Anything else is left. */
void util_out_clean_stale(const char *path);

/* PATH cleaned lexically: "//" and "." removed, "name/.." dropped, a
 * leading ".." of a relative path kept, "/.." read as "/"; "" and "a/.."
 * give "."; newly allocated, NULL when out of memory. */
char *util_path_clean(const char *path);
/* PATH with its folder resolved (realpath of the longest existing prefix of
 * the folder, the rest appended lexically, "." and ".." removed) and its last
 * component kept as is (a rename replaces a symlink there, not its target);
 * newly allocated, NULL when out of memory. Two outputs are one file when
 * these are equal, or when both exist and stat() gives one device and inode. */
char *util_resolve_output(const char *path);
/* 1 if A and B are the same output (see util_resolve_output), else 0. */
int util_same_output(const char *a, const char *b);
/* Strict decimal parse of a whole string into [min, max]; -1 if it is not one. */
int util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* The N decimal digits at S (not NUL-terminated: the step number inside a file name) into
 * *OUT: 0, or -1 when N is 0, S holds a non-digit, or the number does not fit int64. */
int util_parse_digits(const char *s, size_t n, int64_t *out);
/* FNV-1a, 64 bits, of N bytes: the checksum of the journal's records and of
 * spectrum's cache files. */
uint64_t util_fnv1a64(const void *data, size_t n);
/* Fault in the whole pages of [P, P + N) as written, in one call
 * (MADV_POPULATE_WRITE, Linux 5.14; before it, or on error, nothing happens and
 * the pages fault on first use as always). For buffers the caller fills at once:
 * on this project's VMs the first touch of a page costs ~17 us as a fault and
 * ~1 us so (docs/performance.md). The contents are not changed. */
void util_populate(void *p, size_t n);
/* Advice for a read-only file mapping at MAP of N bytes: fill it in 2 MiB folios where the
 * kernel can (MADV_HUGEPAGE). Pages the mapping faults in are then read in 2 MiB pieces and
 * later runs map each with one entry instead of 512; pages already cached stay as they are.
 * Advice only: on a kernel or file system without it nothing changes. */
void util_map_hint(void *map, size_t n);
/* A size in bytes: a whole number >= 1 with an optional binary suffix K, M, G or T
 * (also KB/KiB, ...): "512M", "8G". -1 if it is not one or overflows int64. */
int util_parse_size(const char *s, int64_t *out);
/* Compare names so that embedded numbers order numerically (layers.2 < layers.10). */
int util_natural_cmp(const char *a, const char *b);

#endif
