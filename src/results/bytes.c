/* bytes.c - byte buffers for the wire format; see results/bytes.h. */
#include "results/bytes.h"
#include "core/le.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void wire_put_bytes(wbuf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n)
            nc *= 2;
        unsigned char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

void wire_put_u64(wbuf *b, uint64_t v)
{
    unsigned char x[8];
    le_store64(x, v);
    wire_put_bytes(b, x, 8);
}

void wire_put_u32(wbuf *b, uint32_t v)
{
    unsigned char x[4];
    le_store32(x, v);
    wire_put_bytes(b, x, 4);
}

void wire_put_f64(wbuf *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    wire_put_u64(b, v);
}

void wire_put_str(wbuf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    wire_put_u64(b, n);
    wire_put_bytes(b, s ? s : "", n);
}

const unsigned char *wire_get_bytes(rbuf *b, size_t n)
{
    if (b->bad || n > b->n - b->off) {
        b->bad = 1;
        return NULL;
    }
    const unsigned char *q = b->p + b->off;
    b->off += n;
    return q;
}

uint64_t wire_get_u64(rbuf *b)
{
    const unsigned char *x = wire_get_bytes(b, 8);
    return x ? le_load64(x) : 0;
}

uint32_t wire_get_u32(rbuf *b)
{
    const unsigned char *x = wire_get_bytes(b, 4);
    return x ? le_load32(x) : 0;
}

double wire_get_f64(rbuf *b)
{
    uint64_t v = wire_get_u64(b);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* A string of at most the bytes left, without NUL; NULL (and b->bad) if not. */
char *wire_get_str(rbuf *b)
{
    uint64_t n = wire_get_u64(b);
    if (b->bad || n > b->n - b->off) {
        b->bad = 1;
        return NULL;
    }
    const unsigned char *q = wire_get_bytes(b, (size_t)n);
    if (!q || memchr(q, '\0', (size_t)n)) {
        b->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        b->bad = 2;
        return NULL;
    }
    memcpy(s, q, (size_t)n);
    s[n] = '\0';
    return s;
}

