/* torchzip.c - reading torch.save zip archives; see include/dora/torchzip.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/torchzip.h"
#include "dora/pickle.h"
#include "dora/guard.h"
#include "core/util.h"

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
 * began at the entry's data. Each read copies from the mapping in a guarded
 * region (guard.h), so that a file that shrinks while libzip reads it gives a
 * read error (SHRUNK set), not a SIGBUS inside libzip; the jump only leaves
 * the copy, never libzip's own frames. */
typedef struct zsrc {
    const unsigned char *buf;
    zip_uint64_t len, pos, last_read;
    int shrunk; /* a read faulted: the file was truncated underneath */
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
        if (m && dora_guard_copy(data, s->buf + s->pos, (size_t)m, NULL) != 0) {
            s->shrunk = 1;
            zip_error_set(&s->error, ZIP_ER_READ, EIO);
            return -1;
        }
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
static int locate(zip_t *za, zsrc *src, const unsigned char *map, const char *name, record *r,
                  dora_err *err)
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
    unsigned char again;
    if (got != 1 || off >= src->len || src->len - off < st.size ||
        dora_guard_copy(&again, map + off, 1, NULL) != 0 || again != first)
        return dora_errf(err, "cannot locate the bytes of record '%s' in the file", name);
    r->data = map + off;
    return 0;
}

/* "(a, b, c)" of N int64 values into buf (truncated if too small). */
static void ints_str(const int64_t *v, int n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i <= n && used < len; i++) {
        int k = i == n ? snprintf(buf + used, len - used, ")")
                       : snprintf(buf + used, len - used, "%s%lld", i ? ", " : "(",
                                  (long long)v[i]);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

/* Check the view T (offset, shape, strides over a storage of
 * t->storage_numel elements): no negative value, every product and sum
 * within 64 bits, the farthest element inside the storage. Fills *numel,
 * *contiguous, and *overlap: 1 when elements repeat (an expand()ed tensor,
 * stride 0 on a dim of size > 1, or strides that revisit elements), found by
 * sorting the dims of size > 1 by stride: without overlap each stride exceeds
 * the farthest offset the dims with smaller strides reach, so every element
 * is a distinct element of the storage and numel <= storage numel. A view
 * with overlap is bounded by its caller (PT_MAX_OVERLAP_BYTES). */
static int check_view(const pk_tensor *t, uint64_t *numel, int *contiguous, int *overlap,
                      dora_err *err)
{
    char sh[200], st[200];
    ints_str(t->shape, t->ndim, sh, sizeof sh);
    ints_str(t->stride, t->ndim, st, sizeof st);
    if (t->offset < 0)
        return dora_errf(err, "storage offset %lld is negative", (long long)t->offset);
    uint64_t n = 1;
    for (int k = 0; k < t->ndim; k++) {
        if (t->shape[k] < 0 || t->stride[k] < 0)
            return dora_errf(err, "view of shape %s with strides %s: a negative %s", sh, st,
                             t->shape[k] < 0 ? "size" : "stride");
        if (__builtin_mul_overflow(n, (uint64_t)t->shape[k], &n))
            return dora_errf(err, "shape %s: its product overflows 64 bits", sh);
    }
    *numel = n;
    *contiguous = 1;
    *overlap = 0;
    if (n == 0)
        return 0; /* no element, no byte: strides do not matter */
    int dims[DORA_MAX_DIMS], nd = 0;
    uint64_t expect = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (t->shape[k] == 1)
            continue;
        if ((uint64_t)t->stride[k] != expect)
            *contiguous = 0;
        expect *= (uint64_t)t->shape[k]; /* <= numel: no overflow */
        /* insertion by stride, ascending */
        int j = nd++;
        while (j > 0 && t->stride[dims[j - 1]] > t->stride[k]) {
            dims[j] = dims[j - 1];
            j--;
        }
        dims[j] = k;
    }
    uint64_t reach = 0; /* farthest offset from the first element, over dims[0..i) */
    for (int i = 0; i < nd; i++) {
        const int k = dims[i];
        const uint64_t stride = (uint64_t)t->stride[k];
        if (stride <= reach) /* a stride of 0 is <= any reach */
            *overlap = 1;
        uint64_t span;
        if (__builtin_mul_overflow((uint64_t)(t->shape[k] - 1), stride, &span) ||
            __builtin_add_overflow(reach, span, &reach))
            return dora_errf(err, "view of shape %s with strides %s: its extent overflows 64 bits",
                             sh, st);
    }
    uint64_t last;
    if (__builtin_add_overflow((uint64_t)t->offset, reach, &last) ||
        last >= (uint64_t)t->storage_numel)
        return dora_errf(err, "view (offset %lld, shape %s, strides %s) reaches element %llu of a "
                              "storage of %lld",
                         (long long)t->offset, sh, st,
                         (unsigned long long)(last >= (uint64_t)t->offset ? last : UINT64_MAX),
                         (long long)t->storage_numel);
    return 0;
}

/* Gather a strided view into a contiguous buffer: the innermost dim in one
 * loop, the others by a row-major odometer. Runs in a guarded region
 * (guard.h): it only reads the mapping and writes OUT. */
typedef struct gather_job {
    const unsigned char *base; /* the storage's first element */
    size_t es;
    const pk_tensor *t;
    unsigned char *out;
} gather_job;

static void gather_fn(void *arg)
{
    const gather_job *g = arg;
    const pk_tensor *t = g->t;
    const size_t es = g->es;
    const int nd = t->ndim;
    if (nd == 0) {
        memcpy(g->out, g->base + (uint64_t)t->offset * es, es);
        return;
    }
    const uint64_t inner = (uint64_t)t->shape[nd - 1], istep = (uint64_t)t->stride[nd - 1] * es;
    int64_t idx[DORA_MAX_DIMS] = {0};
    unsigned char *o = g->out;
    for (;;) {
        uint64_t off = (uint64_t)t->offset;
        for (int d = 0; d < nd - 1; d++)
            off += (uint64_t)idx[d] * (uint64_t)t->stride[d];
        const unsigned char *p = g->base + off * es;
        for (uint64_t j = 0; j < inner; j++, p += istep, o += es)
            memcpy(o, p, es);
        int d = nd - 2;
        for (; d >= 0; d--) { /* row-major odometer over the outer dims */
            if (++idx[d] < t->shape[d])
                break;
            idx[d] = 0;
        }
        if (d < 0)
            return;
    }
}

static int add_owned(st_file *f, unsigned char *p, size_t *cap)
{
    if (f->nowned == *cap) {
        size_t nc = *cap ? 2 * *cap : 8;
        unsigned char **no = realloc(f->owned, nc * sizeof *no);
        if (!no)
            return -1;
        f->owned = no;
        *cap = nc;
    }
    f->owned[f->nowned++] = p;
    return 0;
}

typedef struct keyed {
    const char *key;
    size_t i;
} keyed;

/* By storage key, then tensor index. */
static int keyed_cmp(const void *pa, const void *pb)
{
    const keyed *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    return c ? c : (a->i > b->i) - (a->i < b->i);
}

/* Turn the pickle's tensor list into views over the records. Each distinct
 * storage is located once (tensors sorted by key: O(n log n) for 10^5). */
static int build(st_file *f, zip_t *za, zsrc *src, const char *prefix, pk_tensor *pt, size_t npt,
                 dora_err *err)
{
    record *recs = calloc(npt ? npt : 1, sizeof *recs);
    keyed *order = malloc((npt ? npt : 1) * sizeof *order);
    size_t *rec_of = malloc((npt ? npt : 1) * sizeof *rec_of);
    size_t nrec = 0, owned_cap = 0;
    uint64_t overlap_bytes = 0; /* made contiguous from views whose elements repeat */
    int rc = -1;
    f->tensors = calloc(npt ? npt : 1, sizeof *f->tensors);
    if (!recs || !order || !rec_of || !f->tensors) {
        dora_errf(err, "out of memory for %zu tensors", npt);
        goto done;
    }
    for (size_t i = 0; i < npt; i++)
        order[i] = (keyed){pt[i].storage_key, i};
    qsort(order, npt, sizeof *order, keyed_cmp);
    for (size_t j = 0; j < npt; j++) {
        const pk_tensor *t = &pt[order[j].i];
        if (j == 0 || strcmp(order[j - 1].key, t->storage_key) != 0) {
            char name[512];
            snprintf(name, sizeof name, "%s/data/%s", prefix, t->storage_key);
            recs[nrec].key = t->storage_key;
            if (locate(za, src, f->map, name, &recs[nrec], err) != 0) {
                dora_errprefix(err, "tensor '%s'", t->name);
                goto done;
            }
            nrec++;
        }
        rec_of[order[j].i] = nrec - 1;
    }
    for (size_t i = 0; i < npt; i++) {
        const pk_tensor *t = &pt[i];
        const record *r = &recs[rec_of[i]];
        size_t es = dora_dtype_size(t->dtype);
        uint64_t want;
        if (t->storage_numel < 0 ||
            __builtin_mul_overflow((uint64_t)t->storage_numel, (uint64_t)es, &want)) {
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
        uint64_t numel = 0, bytes;
        int contiguous = 1, overlap = 0;
        if (check_view(t, &numel, &contiguous, &overlap, err) != 0)
            goto named;
        if (__builtin_mul_overflow(numel, (uint64_t)es, &bytes)) {
            dora_errf(err, "view of %llu elements of %s: its byte size overflows 64 bits",
                      (unsigned long long)numel, dora_dtype_name(t->dtype));
            goto named;
        }
        /* a view whose elements repeat takes more memory made contiguous than its
         * record holds: all such views of one file share a small budget */
        if (overlap && (bytes > PT_MAX_OVERLAP_BYTES - overlap_bytes)) {
            char sh[200], st[200];
            ints_str(t->shape, t->ndim, sh, sizeof sh);
            ints_str(t->stride, t->ndim, st, sizeof st);
            dora_errf(err, "view of shape %s with strides %s repeats elements of its storage "
                           "(an expand()ed tensor, or strides that overlap): made contiguous it "
                           "would take %llu bytes, over the %llu bytes this reader gives such "
                           "views in one file (save it with .contiguous())",
                      sh, st, (unsigned long long)bytes,
                      (unsigned long long)(PT_MAX_OVERLAP_BYTES - overlap_bytes));
            goto named;
        }
        if (overlap)
            overlap_bytes += bytes;
        dora_tensor *d = &f->tensors[f->ntensors];
        d->dtype = t->dtype;
        d->ndim = t->ndim;
        d->file = f->path;
        d->owner = f;
        for (int k = 0; k < t->ndim; k++)
            d->shape[k] = t->shape[k];
        d->numel = numel;
        d->nbytes = bytes; /* distinct elements: <= the record's bytes; else within the budget */
        if (numel == 0) {
            d->data = NULL;
        } else if (contiguous) {
            d->data = r->data + (uint64_t)t->offset * es;
        } else {
            /* at most the record's bytes (which are in the file), or within the budget */
            gather_job g = {r->data, es, t, malloc((size_t)d->nbytes)};
            const void *fault;
            int gr = g.out ? dora_guard_run(gather_fn, &g, &fault) : -2;
            if (gr != 0 || add_owned(f, g.out, &owned_cap) != 0) {
                free(g.out);
                if (gr == 1)
                    dora_errf(err, "the file changed while its strided view was read "
                                   "(truncated?)");
                else if (gr == -1)
                    dora_errf(err, "cannot install the SIGBUS guard");
                else
                    dora_errf(err, "out of memory making a strided view of %llu bytes "
                                   "contiguous",
                              (unsigned long long)d->nbytes);
                goto named;
            }
            d->data = g.out;
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
    free(order);
    free(rec_of);
    return rc;
}

/* The archive of f->path, open as FD (f->size bytes). Every read of the
 * mapping while the archive is parsed is guarded (zsrc, locate, gather): a
 * file truncated underneath is an error naming it, never a SIGBUS. */
static int read_archive(st_file *f, int fd, dora_err *err)
{
    if (f->size < 4)
        return dora_errf(err, "file is %llu bytes: not a torch.save archive",
                         (unsigned long long)f->size);
    unsigned char magic[4];
    if (pread(fd, magic, 4, 0) != 4)
        return dora_errf(err, "cannot read its first 4 bytes (truncated while it was read?)");
    if (memcmp(magic, "PK\x03\x04", 4) != 0) {
        if (magic[0] == 0x80 && magic[1] <= 5)
            return dora_errf(err, "the legacy torch.save format (before PyTorch 1.6, or "
                                  "_use_new_zipfile_serialization=False) is not supported: load "
                                  "and save it again with a current PyTorch");
        return dora_errf(err, "not a zip archive, so not a torch.save checkpoint");
    }
    f->map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return dora_errf(err, "cannot map: %s", strerror(errno));
    }
    util_map_hint(f->map, (size_t)f->size);
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
        if (src->shrunk)
            dora_errf(err, "the file shrank while its zip directory was read (truncated?)");
        else
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
    pk_extras extras = {0};
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
        pk_load_tensors_ex(pkl, pkl_len, &pt, &npt, &extras, err) != 0)
        goto done;
    f->global_step = extras.global_step;
    f->globals = extras.globals; /* the file owns them now */
    f->nglobals = extras.nglobals;
    extras.globals = NULL;
    if (build(f, za, src, prefix, pt, npt, err) != 0)
        goto done;
    rc = 0;
done:
    if (rc != 0 && src->shrunk)
        dora_errprefix(err, "the file shrank while it was read (truncated?)");
    pk_tensors_free(pt, npt);
    pk_extras_free(&extras);
    free(pkl);
    free(bo);
    free(prefix);
    zip_discard(za); /* also frees the source */
    zip_error_fini(&src->error);
    free(src);
    return rc;
}

static int open_archive(st_file *f, dora_err *err)
{
    /* O_NONBLOCK: a FIFO is refused below instead of waited on */
    int fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return dora_errf(err, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return dora_errf(err, "not a readable regular file");
    }
    f->size = (uint64_t)sb.st_size;
    st_file_stamp(f, fd);
    int rc = read_archive(f, fd, err);
    close(fd);
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
    f->global_step = -1;
    if (open_archive(f, err) != 0) {
        dora_errprefix(err, "'%s'", path);
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}
