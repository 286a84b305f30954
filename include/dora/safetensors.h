/* safetensors.h - a memory-mapped, zero-copy safetensors reader.
 *
 * File layout (all integers little-endian):
 *
 *   +---------+------------------------------+--------------------------------+
 *   | u64  N  | N bytes UTF-8 JSON header    | data buffer                    |
 *   +---------+------------------------------+--------------------------------+
 *   0         8                              8+N                        file end
 *
 *   header = {"NAME": {"dtype": "BF16", "shape": [..], "data_offsets": [B, E]},
 *             ..., "__metadata__": {"key": "value", ...}}
 *
 * Offsets are relative to the data buffer, E exclusive. The file is treated as
 * hostile: st_open checks every rule of the format (header size cap, bounds,
 * UTF-8, JSON, dtype, shape overflow, size = numel x dtype size, offsets that
 * tile the buffer without gap or overlap, no trailing or missing bytes,
 * duplicate names, metadata string-to-string) and fails with a message that
 * names the file and the tensor.
 */
#ifndef DORA_SAFETENSORS_H
#define DORA_SAFETENSORS_H

#include "dora/error.h"
#include "dora/tensor.h"

#include <stdint.h>

#define ST_MAX_HEADER 100000000ULL /* as the reference implementation */
#define ST_MAX_TENSORS 1000000     /* no real model has more; bounds allocation */

typedef struct st_file {
    char *path;              /* as given to st_open, owned */
    unsigned char *map;      /* read-only mapping of the whole file, NULL if empty */
    uint64_t size;           /* file size in bytes */
    uint64_t header_len;     /* N */
    size_t ntensors;
    dora_tensor *tensors;    /* sorted by data offset (file order) */
    size_t nmeta;
    char **meta_keys;        /* __metadata__, in header order, owned */
    char **meta_values;
    const char *format;      /* "safetensors" or "pytorch" (see torchzip.h) */
    uint64_t dev, ino;       /* identity and state at open, to notice a file that */
    int64_t mtime_ns;        /* changes while it is read (st_file_changed) */
    size_t nowned;
    unsigned char **owned;   /* buffers some tensors point into (strided views made
                                contiguous), freed by st_close */
    int64_t global_step;     /* pytorch: the pickled dict's top-level "global_step"
                                (Lightning), else -1 */
    size_t nglobals;
    char **globals;          /* pytorch: globals outside the pickle's allow-list, read as
                                inert placeholders (pickle.h), owned */
} st_file;

/* Open, map and validate PATH. The header is read with pread, not through
 * the mapping (a file that shrinks meanwhile gives an error naming it, not a
 * SIGBUS). On success *out owns the mapping: every dora_tensor in it stays
 * valid until st_close. */
int st_open(st_file **out, const char *path, dora_err *err);

/* Validate a whole file image already in memory (BUF, SIZE bytes): the header
 * length rules, then st_parse_header. Used by st_open and the fuzzer. */
int st_parse_bytes(st_file *f, const unsigned char *buf, uint64_t size, dora_err *err);

/* Validate a header already in memory (the N JSON bytes) against a data buffer
 * of DATA_LEN bytes; fills f->tensors (with data pointers relative to DATA) and
 * f->meta_*. Exposed for the fuzzer and the unit tests; st_open uses it. */
int st_parse_header(st_file *f, const char *json, size_t json_len,
                    const unsigned char *data, uint64_t data_len, dora_err *err);

/* Record the identity, size and mtime of the open descriptor FD in f (used by
 * st_open and pt_open). */
void st_file_stamp(st_file *f, int fd);

/* 1 if the file at f->path is no longer the one that was mapped (replaced,
 * resized or modified since it was opened), else 0. A mapping of a file that
 * changed may read wrong bytes or fault (SIGBUS); see guard.h. */
int st_file_changed(const st_file *f);

/* Release the mapping and everything st_open allocated. NULL is a no-op. */
void st_close(st_file *f);

#endif
