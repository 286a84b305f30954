/* wire.h - a dora_result as bytes: the records of the batch journal and the
 * messages between MPI ranks.
 *
 * Explicit little-endian integers and IEEE doubles, length-prefixed strings,
 * behind a magic ("DRU1", version 1). Per-row data are not carried. */
#ifndef DORA_WIRE_H
#define DORA_WIRE_H

#include "dora/analyze.h"
#include "dora/error.h"

#include <stddef.h>

/* R as bytes. *buf is allocated; free() it. */
int dora_result_pack(const dora_result *r, unsigned char **buf, size_t *len, dora_err *err);
/* Read bytes written by dora_result_pack, checked as hostile input (counts
 * against the bytes left, finite numbers, known method, ascending steps).
 * WHAT names the source in errors. On failure *r is released. */
int dora_result_unpack(dora_result *r, const unsigned char *buf, size_t len, const char *what,
                       dora_err *err);

#endif
