/* fuzz_zip.h - shared by the torch archive fuzz targets: a growable byte
 * buffer, and a writer of valid zip archives in torch.save's layout (entries
 * stored, CRC-32 right, central directory and end record), so that a fuzzed
 * pickle reaches pt_open's pickle and view code instead of failing the zip
 * checks. No zip64, no data descriptors: every entry is small. */
#ifndef FUZZ_ZIP_H
#define FUZZ_ZIP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fbuf {
    unsigned char *b;
    size_t n, cap;
} fbuf;

static void fb_put(fbuf *f, const void *p, size_t n)
{
    if (f->n + n > f->cap) {
        size_t nc = f->cap ? f->cap : 256;
        while (nc < f->n + n)
            nc *= 2;
        unsigned char *nb = realloc(f->b, nc);
        if (!nb)
            abort();
        f->b = nb;
        f->cap = nc;
    }
    if (n)
        memcpy(f->b + f->n, p, n);
    f->n += n;
}

static void fb_byte(fbuf *f, unsigned v)
{
    unsigned char c = (unsigned char)v;
    fb_put(f, &c, 1);
}

static void fb_le(fbuf *f, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        fb_byte(f, (unsigned)(v >> (8 * i)) & 0xff);
}

static uint32_t fz_crc32(const unsigned char *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

#define FZ_MAX_ENTRIES 16

typedef struct fzip {
    fbuf out, cdir;
    int n;
} fzip;

/* Add a stored entry NAME holding DATA (N bytes). */
static void fz_add(fzip *z, const char *name, const unsigned char *data, size_t n)
{
    size_t nl = strlen(name);
    uint32_t crc = fz_crc32(data, n);
    uint64_t off = z->out.n;
    fb_le(&z->out, 0x04034b50u, 4); /* local file header */
    fb_le(&z->out, 20, 2);          /* version needed */
    fb_le(&z->out, 0, 2);           /* flags */
    fb_le(&z->out, 0, 2);           /* stored */
    fb_le(&z->out, 0, 4);           /* time, date */
    fb_le(&z->out, crc, 4);
    fb_le(&z->out, n, 4);
    fb_le(&z->out, n, 4);
    fb_le(&z->out, nl, 2);
    fb_le(&z->out, 0, 2); /* no extra field */
    fb_put(&z->out, name, nl);
    fb_put(&z->out, data, n);
    fb_le(&z->cdir, 0x02014b50u, 4); /* central directory entry */
    fb_le(&z->cdir, 20, 2);          /* made by */
    fb_le(&z->cdir, 20, 2);
    fb_le(&z->cdir, 0, 2);
    fb_le(&z->cdir, 0, 2);
    fb_le(&z->cdir, 0, 4);
    fb_le(&z->cdir, crc, 4);
    fb_le(&z->cdir, n, 4);
    fb_le(&z->cdir, n, 4);
    fb_le(&z->cdir, nl, 2);
    fb_le(&z->cdir, 0, 2); /* extra */
    fb_le(&z->cdir, 0, 2); /* comment */
    fb_le(&z->cdir, 0, 2); /* disk */
    fb_le(&z->cdir, 0, 2); /* internal attributes */
    fb_le(&z->cdir, 0, 4); /* external attributes */
    fb_le(&z->cdir, off, 4);
    fb_put(&z->cdir, name, nl);
    z->n++;
}

/* Finish the archive: z->out holds it; free both with fz_free. */
static void fz_finish(fzip *z)
{
    uint64_t off = z->out.n;
    fb_put(&z->out, z->cdir.b, z->cdir.n);
    fb_le(&z->out, 0x06054b50u, 4); /* end of central directory */
    fb_le(&z->out, 0, 2);
    fb_le(&z->out, 0, 2);
    fb_le(&z->out, (uint64_t)z->n, 2);
    fb_le(&z->out, (uint64_t)z->n, 2);
    fb_le(&z->out, z->cdir.n, 4);
    fb_le(&z->out, off, 4);
    fb_le(&z->out, 0, 2);
}

static void fz_free(fzip *z)
{
    free(z->out.b);
    free(z->cdir.b);
}

/* A torch.save archive: archive/data.pkl = PKL, archive/data/I = record I
 * (SIZES[i] bytes of a fixed pattern) for i < NREC, byteorder, version. */
static void fz_torch(fzip *z, const unsigned char *pkl, size_t pkl_len, const size_t *sizes,
                     int nrec)
{
    fz_add(z, "archive/data.pkl", pkl, pkl_len);
    for (int i = 0; i < nrec; i++) {
        unsigned char *r = malloc(sizes[i] ? sizes[i] : 1);
        if (!r)
            abort();
        for (size_t j = 0; j < sizes[i]; j++)
            r[j] = (unsigned char)(j * 37 + (size_t)i * 11 + 1);
        char name[32];
        snprintf(name, sizeof name, "archive/data/%d", i);
        fz_add(z, name, r, sizes[i]);
        free(r);
    }
    fz_add(z, "archive/byteorder", (const unsigned char *)"little", 6);
    fz_add(z, "archive/version", (const unsigned char *)"3\n", 2);
    fz_finish(z);
}

#endif
