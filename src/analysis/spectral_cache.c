/* spectral_cache.c - the base's SVDs kept between commands (spectrum --cache DIR).
 *
 * Intruders need every left singular vector of W0, the costliest decomposition
 * of `spectrum` and the same for every run and step of that base. With a cache
 * folder each one is stored once, in a file named by a hash of its key, and read
 * back by a later command instead of being computed again.
 *
 * The key says exactly what was decomposed and how: the tool's version, the base
 * file's device, inode, size and modification time, the tensor's name, offset,
 * dtype and shape, the orientation and the precision. A file is used only when
 * its key is that key, byte for byte, its size is what its header says and its
 * checksum (FNV-1a 64 of everything before it) holds; anything else is a miss
 * (computed again and the file rewritten), with a note when a file was there but
 * not valid. File layout, little-endian:
 *
 *     "DORAW0C1"  u64 key length  key  i64 m, n, ns, nu, rank, complete, method, bits
 *     f64 s[ns]  f64 u[m * nu] (column-major)  u64 checksum
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/spectral_int.h"
#include "core/le.h"
#include "core/util.h"
#include "dora/safetensors.h"
#include "dora/version.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "DORAW0C1"
#define NFIELDS 8

/* The key of module RM's W0 SVD in BITS; NULL when out of memory. */
static char *cache_key(const rmod *rm, int bits)
{
    const dora_tensor *t = rm->base;
    const st_file *f = t->owner;
    char shape[DORA_MAX_DIMS * 24 + 2] = "";
    for (int i = 0; i < t->ndim; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? "," : "",
                 (long long)t->shape[i]);
    const long long off = t->data && f->map ? (long long)(t->data - f->map) : -1;
#define KEY_ARGS                                                                                   \
    "dora-analyze %s W0 SVD\ndev %llu ino %llu size %llu mtime %lld\ntensor %s\n"                \
    "offset %lld dtype %d shape %s\ntransposed %d bits %d\n",                                     \
        DORA_VERSION, (unsigned long long)f->dev, (unsigned long long)f->ino,                     \
        (unsigned long long)f->size, (long long)f->mtime_ns, t->name, off, (int)t->dtype, shape,  \
        rm->transposed, bits
    int n = snprintf(NULL, 0, KEY_ARGS);
    char *k = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (k)
        snprintf(k, (size_t)n + 1, KEY_ARGS);
#undef KEY_ARGS
    return k;
}

static char *cache_path(const char *dir, const char *key)
{
    char name[32];
    snprintf(name, sizeof name, "w0-%016llx.svd",
             (unsigned long long)util_fnv1a64((const unsigned char *)key, strlen(key)));
    return util_join(dir, name);
}

/* The bytes of a cache file with a key of KL bytes, NS values and NU vectors of M. */
static uint64_t file_bytes(uint64_t kl, int64_t ns, int64_t m, int64_t nu)
{
    return 16 + kl + 8 * NFIELDS + 8 * (uint64_t)ns + 8 * (uint64_t)(m * nu) + 8;
}

/* Check buffer B (N bytes) against KEY and the shape of RM; fill OUT. NULL, or
 * what is wrong. */
static const char *parse(const unsigned char *b, uint64_t n, const char *key, const rmod *rm,
                         int bits, dora_svd *out)
{
    const uint64_t kl = strlen(key), head = 16 + kl + 8 * NFIELDS;
    if (n < 16 || memcmp(b, MAGIC, 8) != 0)
        return "no cache file of this kind";
    if (le_load64(b + 8) != kl || n < head + 8 || memcmp(b + 16, key, kl) != 0)
        return "the key of another tensor or base file (copied, or a hash collision)";
    int64_t v[NFIELDS];
    for (int i = 0; i < NFIELDS; i++)
        v[i] = (int64_t)le_load64(b + 16 + kl + 8 * (uint64_t)i);
    const int64_t m = v[0], cols = v[1], ns = v[2], nu = v[3], k = min64(rm->rows, rm->cols);
    if (m != rm->rows || cols != rm->cols || ns < 1 || ns > k || nu != k || v[4] < 0 ||
        v[4] > ns || v[7] != bits)
        return "a header that does not fit the tensor";
    if (n != file_bytes(kl, ns, m, nu))
        return "a size that is not what its header says (truncated?)";
    if (le_load64(b + n - 8) != util_fnv1a64(b, (size_t)(n - 8)))
        return "a checksum that does not hold";
    out->s = alloc_n((size_t)ns, sizeof *out->s);
    out->u = alloc_n((size_t)(m * nu), sizeof *out->u);
    if (!out->s || !out->u)
        return "out of memory";
    const unsigned char *p = b + head;
    for (int64_t i = 0; i < ns; i++, p += 8) {
        uint64_t x = le_load64(p);
        memcpy(&out->s[i], &x, 8);
    }
    for (int64_t i = 0; i < m * nu; i++, p += 8) {
        uint64_t x = le_load64(p);
        memcpy(&out->u[i], &x, 8);
    }
    for (int64_t i = 0; i < ns; i++)
        if (!isfinite(out->s[i]) || out->s[i] < 0 || (i && out->s[i] > out->s[i - 1]))
            return "singular values that are not finite and descending";
    for (int64_t i = 0; i < m * nu; i++)
        if (!isfinite(out->u[i]))
            return "vectors that are not finite";
    out->m = m;
    out->n = cols;
    out->ns = ns;
    out->nu = nu;
    out->rank = v[4];
    out->complete = v[5] != 0;
    out->method = (dora_svd_method)v[6];
    out->bits = bits;
    return NULL;
}

int spec_cache_load(const char *dir, const rmod *rm, int bits, dora_svd *out, char *why,
                    size_t whylen)
{
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    char *key = cache_key(rm, bits), *path = key ? cache_path(dir, key) : NULL;
    int hit = path ? 0 : -1;
    if (path && util_is_file(path)) {
        /* any valid cache file fits (m * k <= DORA_SPEC_DENSE_MAX_ELEMS, so k <= 2^14), and
         * one of another tensor is read whole and told apart by its key */
        const uint64_t most =
            file_bytes(strlen(key), INT64_C(1) << 14, DORA_SPEC_DENSE_MAX_ELEMS, 1);
        char *b = NULL;
        size_t n = 0;
        dora_err e;
        const char *bad = NULL;
        if (util_read_file(path, (size_t)most, &b, &n, &e) != 0)
            snprintf(why, whylen, "%s: computed again", e.msg);
        else if ((bad = parse((const unsigned char *)b, n, key, rm, bits, out)) != NULL)
            snprintf(why, whylen, "the cache file '%s' holds %s: computed again", path, bad);
        hit = b && !bad;
        if (!hit) {
            dora_svd_release(out);
            memset(out, 0, sizeof *out);
        }
        free(b);
    }
    free(path);
    free(key);
    return hit;
}

int spec_cache_store(const char *dir, const rmod *rm, const dora_svd *sv, dora_err *err)
{
    char *key = cache_key(rm, sv->bits), *path = key ? cache_path(dir, key) : NULL;
    const uint64_t kl = key ? strlen(key) : 0, head = 16 + kl + 8 * NFIELDS;
    const uint64_t n = file_bytes(kl, sv->ns, sv->m, sv->nu);
    unsigned char *b = path ? malloc((size_t)n) : NULL;
    int rc = -1;
    if (!b) {
        dora_errf(err, "out of memory");
        goto done;
    }
    memcpy(b, MAGIC, 8);
    le_store64(b + 8, kl);
    memcpy(b + 16, key, kl);
    const int64_t v[NFIELDS] = {sv->m, sv->n, sv->ns, sv->nu, sv->rank, sv->complete,
                                (int64_t)sv->method, sv->bits};
    for (int i = 0; i < NFIELDS; i++)
        le_store64(b + 16 + kl + 8 * (uint64_t)i, (uint64_t)v[i]);
    unsigned char *p = b + head;
    for (int64_t i = 0; i < sv->ns; i++, p += 8) {
        uint64_t x;
        memcpy(&x, &sv->s[i], 8);
        le_store64(p, x);
    }
    for (int64_t i = 0; i < sv->m * sv->nu; i++, p += 8) {
        uint64_t x;
        memcpy(&x, &sv->u[i], 8);
        le_store64(p, x);
    }
    le_store64(p, util_fnv1a64(b, (size_t)(n - 8)));
    util_out o;
    if (util_out_begin(&o, path, err) != 0)
        goto done;
    if (util_out_write(&o, b, (size_t)n, err) != 0) {
        util_out_abort(&o);
        goto done;
    }
    rc = util_out_commit(&o, err);
done:
    free(b);
    free(path);
    free(key);
    return rc;
}
