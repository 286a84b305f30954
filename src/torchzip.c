/* torchzip.c - reading torch.save zip archives; see include/dora/torchzip.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/torchzip.h"
#include "dora/pickle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

/* A libzip source over the mapped file that remembers where each read
 * started: after opening an entry and reading its first byte, the last read
 * began at the entry's data. */
typedef struct zsrc {
    const unsigned char *buf;
    zip_uint64_t len, pos, last_read;
    zip_error_t error;
} zsrc;

static zip_int64_t zsrc_cb(void *ud, void *data, zip_uint64_t n, zip_source_cmd_t cmd)
{
    zsrc *s = ud;
    switch (cmd) {
    case ZIP_SOURCE_OPEN:
        s->pos = 0;
        return 0;
    case ZIP_SOURCE_READ: {
        zip_uint64_t m = s->pos >= s->len ? 0 : s->len - s->pos;
        if (n < m)
            m = n;
        if (m)
            memcpy(data, s->buf + s->pos, (size_t)m);
        s->last_read = s->pos;
        s->pos += m;
        return (zip_int64_t)m;
    }
    case ZIP_SOURCE_CLOSE:
    case ZIP_SOURCE_FREE:
        return 0;
    case ZIP_SOURCE_STAT: {
        zip_stat_t *st = data;
        if (n < sizeof *st)
            return -1;
        zip_stat_init(st);
        st->size = s->len;
        st->valid |= ZIP_STAT_SIZE;
        return sizeof *st;
    }
    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&s->error, data, n);
    case ZIP_SOURCE_SEEK: {
        zip_int64_t np = zip_source_seek_compute_offset(s->pos, s->len, data, n, &s->error);
        if (np < 0)
            return -1;
        s->pos = (zip_uint64_t)np;
        return 0;
    }
    case ZIP_SOURCE_TELL:
        return (zip_int64_t)s->pos;
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE,
                                              ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE,
                                              ZIP_SOURCE_SEEK, ZIP_SOURCE_TELL,
                                              ZIP_SOURCE_SUPPORTS, -1);
    default:
        zip_error_set(&s->error, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
}

/* Read a whole (small) entry through libzip, decompressing if needed. */
static int read_entry(zip_t *za, zip_uint64_t idx, zip_uint64_t max, unsigned char **buf,
                      size_t *len, const char *what, dora_err *err)
{
    zip_stat_t st;
    if (zip_stat_index(za, idx, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return dora_errf(err, "cannot stat '%s'", what);
    if (st.size > max)
        return dora_errf(err, "'%s' is %llu bytes, over the limit of %llu", what,
                         (unsigned long long)st.size, (unsigned long long)max);
    unsigned char *b = malloc((size_t)st.size + 1);
    zip_file_t *zf = b ? zip_fopen_index(za, idx, 0) : NULL;
    if (!zf) {
        free(b);
        return dora_errf(err, "cannot open '%s': %s", what, b ? zip_strerror(za) : "out of memory");
    }
    zip_int64_t got = zip_fread(zf, b, st.size);
    int bad = got < 0 || (zip_uint64_t)got != st.size;
    const char *why = bad ? zip_file_strerror(zf) : NULL;
    if (bad) {
        dora_errf(err, "cannot read '%s': %s", what, why ? why : "short read");
        zip_fclose(zf);
        free(b);
        return -1;
    }
    if (zip_fclose(zf) != 0) { /* libzip checks the CRC when an entry is read whole */
        free(b);
        return dora_errf(err, "'%s' fails its CRC check", what);
    }
    *buf = b;
    *len = (size_t)st.size;
    return 0;
}

typedef struct record {
    const char *key;
    const unsigned char *data;
    uint64_t size;
} record;

/* Where a stored record's bytes are in the mapping. */
static int locate(zip_t *za, zsrc *src, const char *name, record *r, dora_err *err)
{
    zip_int64_t idx = zip_name_locate(za, name, ZIP_FL_ENC_RAW);
    if (idx < 0)
        return dora_errf(err, "storage record '%s' is missing from the archive", name);
    zip_stat_t st;
    if (zip_stat_index(za, (zip_uint64_t)idx, 0, &st) != 0)
        return dora_errf(err, "cannot stat '%s'", name);
    if ((st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method != ZIP_CM_STORE)
        return dora_errf(err, "record '%s' is compressed; torch.save stores records uncompressed",
                         name);
    if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE)
        return dora_errf(err, "record '%s' is encrypted", name);
    r->size = st.size;
    if (st.size == 0) {
        r->data = NULL;
        return 0;
    }
    zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)idx, 0);
    if (!zf)
        return dora_errf(err, "cannot open '%s': %s", name, zip_strerror(za));
    unsigned char first;
    zip_int64_t got = zip_fread(zf, &first, 1);
    zip_uint64_t off = src->last_read;
    zip_fclose(zf);
    if (got != 1 || off >= src->len || src->len - off < st.size || src->buf[off] != first)
        return dora_errf(err, "cannot locate the bytes of record '%s' in the file", name);
    r->data = src->buf + off;
    return 0;
}

static int record_cmp(const void *a, const void *b)
{
    return strcmp(((const record *)a)->key, ((const record *)b)->key);
}

/* Gather a strided view into a new contiguous buffer (element by element). */
static unsigned char *gather(const unsigned char *base, size_t es, const pk_tensor *t,
                             uint64_t numel)
{
    unsigned char *out = malloc(numel ? numel * es : 1);
    if (!out)
        return NULL;
    int64_t idx[DORA_MAX_DIMS] = {0};
    for (uint64_t n = 0; n < numel; n++) {
        int64_t off = t->offset;
        for (int d = 0; d < t->ndim; d++)
            off += idx[d] * t->stride[d];
        memcpy(out + n * es, base + (uint64_t)off * es, es);
        for (int d = t->ndim - 1; d >= 0; d--) { /* row-major odometer */
            if (++idx[d] < t->shape[d])
                break;
            idx[d] = 0;
        }
    }
    return out;
}

static int add_owned(st_file *f, unsigned char *p)
{
    unsigned char **no = realloc(f->owned, (f->nowned + 1) * sizeof *no);
    if (!no)
        return -1;
    f->owned = no;
    f->owned[f->nowned++] = p;
    return 0;
}

/* Turn the pickle's tensor list into views over the records. */
static int build(st_file *f, zip_t *za, zsrc *src, const char *prefix, pk_tensor *pt, size_t npt,
                 dora_err *err)
{
    record *recs = calloc(npt ? npt : 1, sizeof *recs);
    size_t nrec = 0;
    int rc = -1;
    if (!recs)
        return dora_errf(err, "out of memory");
    f->tensors = calloc(npt ? npt : 1, sizeof *f->tensors);
    if (!f->tensors) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < npt; i++) {
        const pk_tensor *t = &pt[i];
        record key = {t->storage_key, NULL, 0};
        record *r = nrec ? bsearch(&key, recs, nrec, sizeof *recs, record_cmp) : NULL;
        if (!r) {
            char name[512];
            snprintf(name, sizeof name, "%s/data/%s", prefix, t->storage_key);
            recs[nrec].key = t->storage_key;
            if (locate(za, src, name, &recs[nrec], err) != 0)
                goto named;
            r = &recs[nrec++];
            qsort(recs, nrec, sizeof *recs, record_cmp);
            r = bsearch(&key, recs, nrec, sizeof *recs, record_cmp);
        }
        size_t es = dora_dtype_size(t->dtype);
        uint64_t want;
        if (__builtin_mul_overflow((uint64_t)t->storage_numel, (uint64_t)es, &want)) {
            dora_errf(err, "storage '%s' declares %lld elements of %s: its byte size overflows 64 "
                           "bits",
                      t->storage_key, (long long)t->storage_numel, dora_dtype_name(t->dtype));
            goto named;
        }
        if (want != r->size) {
            dora_errf(err, "storage '%s' declares %lld elements of %s (%llu bytes) but its record "
                           "holds %llu bytes",
                      t->storage_key, (long long)t->storage_numel, dora_dtype_name(t->dtype),
                      (unsigned long long)want, (unsigned long long)r->size);
            goto named;
        }
        dora_tensor *d = &f->tensors[f->ntensors];
        d->dtype = t->dtype;
        d->ndim = t->ndim;
        d->file = f->path;
        d->owner = f;
        uint64_t numel = 1, last = (uint64_t)t->offset, expect = 1;
        int contiguous = 1;
        for (int k = t->ndim - 1; k >= 0; k--) {
            d->shape[k] = t->shape[k];
            if (__builtin_mul_overflow(numel, (uint64_t)t->shape[k], &numel)) {
                dora_errf(err, "shape product overflows 64 bits");
                goto named;
            }
            if (t->shape[k] > 1 && (uint64_t)t->stride[k] != expect)
                contiguous = 0;
            uint64_t span;
            if (t->shape[k] > 0 &&
                (__builtin_mul_overflow((uint64_t)(t->shape[k] - 1), (uint64_t)t->stride[k],
                                        &span) ||
                 __builtin_add_overflow(last, span, &last))) {
                dora_errf(err, "view extent overflows 64 bits");
                goto named;
            }
            if (__builtin_mul_overflow(expect, (uint64_t)t->shape[k], &expect))
                expect = UINT64_MAX;
        }
        d->numel = numel;
        d->nbytes = numel * es; /* numel <= storage numel below, so no overflow */
        if (numel > 0 && last >= (uint64_t)t->storage_numel) {
            dora_errf(err, "view (offset %lld, shape and strides) reaches element %llu of a "
                           "storage of %lld",
                      (long long)t->offset, (unsigned long long)last,
                      (long long)t->storage_numel);
            goto named;
        }
        if (numel == 0) {
            d->data = NULL;
        } else if (contiguous) {
            d->data = r->data + (uint64_t)t->offset * es;
        } else {
            unsigned char *buf = gather(r->data, es, t, numel);
            if (!buf || add_owned(f, buf) != 0) {
                free(buf);
                dora_errf(err, "out of memory making a strided view contiguous");
                goto named;
            }
            d->data = buf;
        }
        if (!(d->name = strdup(t->name))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        f->ntensors++;
        continue;
    named:
        dora_errprefix(err, "tensor '%s'", t->name);
        goto done;
    }
    rc = 0;
done:
    free(recs);
    return rc;
}

static int open_archive(st_file *f, dora_err *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dora_errf(err, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return dora_errf(err, "not a readable regular file");
    }
    f->size = (uint64_t)sb.st_size;
    st_file_stamp(f, fd);
    if (f->size < 4) {
        close(fd);
        return dora_errf(err, "file is %llu bytes: not a torch.save archive",
                         (unsigned long long)f->size);
    }
    f->map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return dora_errf(err, "cannot map: %s", strerror(errno));
    }
    if (memcmp(f->map, "PK\x03\x04", 4) != 0) {
        if (f->map[0] == 0x80 && f->map[1] <= 5)
            return dora_errf(err, "the legacy torch.save format (before PyTorch 1.6, or "
                                  "_use_new_zipfile_serialization=False) is not supported: load "
                                  "and save it again with a current PyTorch");
        return dora_errf(err, "not a zip archive, so not a torch.save checkpoint");
    }
    zsrc *src = calloc(1, sizeof *src);
    if (!src)
        return dora_errf(err, "out of memory");
    src->buf = f->map;
    src->len = f->size;
    zip_error_init(&src->error);
    zip_error_t zerr;
    zip_error_init(&zerr);
    zip_source_t *zs = zip_source_function_create(zsrc_cb, src, &zerr);
    zip_t *za = zs ? zip_open_from_source(zs, ZIP_RDONLY | ZIP_CHECKCONS, &zerr) : NULL;
    if (!za) {
        dora_errf(err, "not a valid zip archive: %s", zip_error_strerror(&zerr));
        if (zs)
            zip_source_free(zs);
        zip_error_fini(&zerr);
        zip_error_fini(&src->error);
        free(src);
        return -1;
    }
    zip_error_fini(&zerr);

    int rc = -1;
    unsigned char *pkl = NULL, *bo = NULL;
    size_t pkl_len = 0, bo_len = 0;
    pk_tensor *pt = NULL;
    size_t npt = 0;
    char *prefix = NULL;
    zip_int64_t n = zip_get_num_entries(za, 0), pkl_idx = -1;
    if (n < 0 || n > PT_MAX_ENTRIES) {
        dora_errf(err, "%lld zip entries, over the limit of %d", (long long)n, PT_MAX_ENTRIES);
        goto done;
    }
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        size_t len = name ? strlen(name) : 0;
        if (len > 9 && strcmp(name + len - 9, "/data.pkl") == 0 &&
            memchr(name, '/', len - 9) == NULL) {
            if (pkl_idx >= 0) {
                dora_errf(err, "two pickles ('%s' and another): not one torch.save archive", name);
                goto done;
            }
            pkl_idx = i;
            if (!(prefix = strndup(name, len - 9))) {
                dora_errf(err, "out of memory");
                goto done;
            }
        }
    }
    if (pkl_idx < 0) {
        dora_errf(err, "no ARCHIVE/data.pkl entry: not a torch.save checkpoint");
        goto done;
    }
    char bname[512];
    snprintf(bname, sizeof bname, "%s/byteorder", prefix);
    zip_int64_t bidx = zip_name_locate(za, bname, ZIP_FL_ENC_RAW);
    if (bidx >= 0) {
        if (read_entry(za, (zip_uint64_t)bidx, 64, &bo, &bo_len, bname, err) != 0)
            goto done;
        if (!(bo_len == 6 && memcmp(bo, "little", 6) == 0)) {
            dora_errf(err, "byte order '%.*s' is not supported (only little-endian records)",
                      (int)(bo_len < 16 ? bo_len : 16), bo);
            goto done;
        }
    }
    if (read_entry(za, (zip_uint64_t)pkl_idx, PT_MAX_PICKLE, &pkl, &pkl_len, "data.pkl", err) !=
            0 ||
        pk_load_tensors(pkl, pkl_len, &pt, &npt, err) != 0)
        goto done;
    if (build(f, za, src, prefix, pt, npt, err) != 0)
        goto done;
    rc = 0;
done:
    pk_tensors_free(pt, npt);
    free(pkl);
    free(bo);
    free(prefix);
    zip_discard(za); /* also frees the source */
    zip_error_fini(&src->error);
    free(src);
    return rc;
}

int pt_open(st_file **out, const char *path, dora_err *err)
{
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return dora_errf(err, "'%s': out of memory", path);
    }
    f->format = "pytorch";
    if (open_archive(f, err) != 0) {
        dora_errprefix(err, "'%s'", path);
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}
