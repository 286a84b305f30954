/* le.h - little-endian integers in byte buffers, whatever the host's order:
 * the one decoder (and encoder) of the project, for file formats (the
 * safetensors header length, pickle opcodes) and the wire format of results.
 * P points to at least as many bytes as the width read or written; nothing is
 * checked here, the caller has checked the bytes are there. */
#ifndef DORA_CORE_LE_H
#define DORA_CORE_LE_H

#include <stdint.h>

/* The first N (0..8) bytes at P as an unsigned little-endian integer. */
static inline uint64_t le_load(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t le_load64(const unsigned char *p)
{
    return le_load(p, 8);
}

static inline uint32_t le_load32(const unsigned char *p)
{
    return (uint32_t)le_load(p, 4);
}

/* V as N (0..8) little-endian bytes at P. */
static inline void le_store(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void le_store64(unsigned char *p, uint64_t v)
{
    le_store(p, v, 8);
}

static inline void le_store32(unsigned char *p, uint32_t v)
{
    le_store(p, v, 4);
}

#endif
