/* bytes.h - growing and reading byte buffers, little-endian, for the wire
 * format of results (results/wire.c) and the records and text built on it
 * above (the batch journal, its reports).
 *
 * A wbuf starts zeroed ({0}); a failed allocation sets oom and every later
 * put is a no-op, so callers check oom once at the end; p is theirs to free().
 * An rbuf reads N bytes at P (borrowed, not copied): a read past the end sets
 * bad to 1 and returns zero or NULL; wire_get_str sets bad to 2 when out of
 * memory. */
#ifndef DORA_RESULTS_BYTES_H
#define DORA_RESULTS_BYTES_H

#include <stddef.h>
#include <stdint.h>

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} wbuf;

void wire_put_bytes(wbuf *b, const void *src, size_t n);
void wire_put_u64(wbuf *b, uint64_t v);
void wire_put_u32(wbuf *b, uint32_t v);
/* the IEEE bits of D, as a u64 */
void wire_put_f64(wbuf *b, double d);
/* u64 length, then the bytes without a terminator (NULL: the empty string) */
void wire_put_str(wbuf *b, const char *s);

typedef struct rbuf {
    const unsigned char *p;
    size_t n, off;
    int bad;
} rbuf;

/* N bytes at the read position (a view into p), or NULL */
const unsigned char *wire_get_bytes(rbuf *b, size_t n);
uint64_t wire_get_u64(rbuf *b);
uint32_t wire_get_u32(rbuf *b);
double wire_get_f64(rbuf *b);
/* a string written by wire_put_str, newly allocated; NULL (bad set) when it
 * runs past the end or holds a NUL byte */
char *wire_get_str(rbuf *b);

#endif
