/* safetensors.c - see include/dora/safetensors.h for the format and contract. */
#define _POSIX_C_SOURCE 200809L
#include "dora/safetensors.h"
#include "core/le.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A JSON value as a non-negative integer, or -1 with *what set. */
static int json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    size_t index;
} span;

static int span_cmp(const void *pa, const void *pb)
{
    const span *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return a->index < b->index ? -1 : (a->index > b->index);
}

static int parse_metadata(st_file *f, const json_t *meta, dora_err *err)
{
    /* null means no metadata, as in the reference reader (MLX writes it) */
    if (json_is_null(meta))
        return 0;
    if (!json_is_object(meta))
        return dora_errf(err, "'__metadata__' is not an object");
    size_t n = json_object_size(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(n ? n : 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values)
        return dora_errf(err, "out of memory reading '__metadata__'");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val)
    {
        if (!json_is_string(val))
            return dora_errf(err, "'__metadata__' entry '%s' is not a string", key);
        f->meta_keys[f->nmeta] = strdup(key);
        f->meta_values[f->nmeta] = strdup(json_string_value(val));
        if (!f->meta_keys[f->nmeta] || !f->meta_values[f->nmeta])
            return dora_errf(err, "out of memory reading '__metadata__'");
        f->nmeta++;
    }
    return 0;
}

/* Fill one tensor from its header entry; offsets are checked later as a set. */
static int parse_entry(dora_tensor *t, span *sp, const char *name, const json_t *v, dora_err *err)
{
    if (!json_is_object(v))
        return dora_errf(err, "tensor '%s': entry is not an object", name);
    const json_t *jd = json_object_get(v, "dtype");
    const json_t *js = json_object_get(v, "shape");
    const json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return dora_errf(err, "tensor '%s': missing or non-string 'dtype'", name);
    if (!json_is_array(js))
        return dora_errf(err, "tensor '%s': missing or non-array 'shape'", name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return dora_errf(err, "tensor '%s': 'data_offsets' must be an array [begin, end]", name);

    t->dtype = dora_dtype_parse(json_string_value(jd));
    if (t->dtype == DORA_DT_INVALID)
        return dora_errf(err, "tensor '%s': unknown dtype '%s'", name, json_string_value(jd));

    size_t ndim = json_array_size(js);
    if (ndim > DORA_MAX_DIMS)
        return dora_errf(err, "tensor '%s': rank %zu exceeds the limit of %d dims", name, ndim,
                         DORA_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t d;
        if (json_u64(json_array_get(js, i), &d) != 0)
            return dora_errf(err, "tensor '%s': shape[%zu] is not a non-negative integer", name, i);
        if (__builtin_mul_overflow(numel, d, &numel) || d > (uint64_t)INT64_MAX)
            return dora_errf(err, "tensor '%s': shape product overflows 64 bits", name);
        t->shape[i] = (int64_t)d;
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)dora_dtype_size(t->dtype), &nbytes))
        return dora_errf(err, "tensor '%s': byte size overflows 64 bits", name);
    t->numel = numel;
    t->nbytes = nbytes;

    if (json_u64(json_array_get(jo, 0), &sp->begin) != 0 ||
        json_u64(json_array_get(jo, 1), &sp->end) != 0)
        return dora_errf(err, "tensor '%s': data_offsets are not non-negative integers", name);
    if (sp->end < sp->begin)
        return dora_errf(err, "tensor '%s': data_offsets [%llu, %llu] end before they begin", name,
                         (unsigned long long)sp->begin, (unsigned long long)sp->end);
    if (sp->end - sp->begin != nbytes) {
        char shp[256];
        dora_shape_str(t, shp, sizeof shp);
        return dora_errf(err,
                         "tensor '%s': data_offsets [%llu, %llu] span %llu bytes, expected %llu "
                         "(shape %s x %s)",
                         name, (unsigned long long)sp->begin, (unsigned long long)sp->end,
                         (unsigned long long)(sp->end - sp->begin), (unsigned long long)nbytes, shp,
                         dora_dtype_name(t->dtype));
    }
    return 0;
}

int st_parse_header(st_file *f, const char *json, size_t json_len, const unsigned char *data,
                    uint64_t data_len, dora_err *err)
{
    json_error_t jerr;
    /* Duplicate names are an error; jansson also rejects bad UTF-8, nesting
     * deeper than its limit and integers beyond 64 bits. Trailing spaces are
     * allowed by the format and by jansson's end check. */
    json_t *root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return dora_errf(err, "header is not valid JSON: %s (at byte %d of the header)", jerr.text,
                         jerr.position);
    int rc = -1;
    span *spans = NULL;
    if (!json_is_object(root)) {
        dora_errf(err, "header is not a JSON object");
        goto done;
    }
    size_t n = json_object_size(root);
    if (n > ST_MAX_TENSORS + 1) {
        dora_errf(err, "header lists %zu entries, over the limit of %d tensors", n, ST_MAX_TENSORS);
        goto done;
    }
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    spans = calloc(n ? n : 1, sizeof *spans);
    if (!f->tensors || !spans) {
        dora_errf(err, "out of memory for %zu tensors", n);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(f, val, err) != 0)
                goto done;
            continue;
        }
        dora_tensor *t = &f->tensors[f->ntensors];
        span *sp = &spans[f->ntensors];
        if (parse_entry(t, sp, key, val, err) != 0)
            goto done;
        t->name = strdup(key);
        if (!t->name) {
            dora_errf(err, "out of memory");
            goto done;
        }
        t->file = f->path;
        t->owner = f;
        sp->index = f->ntensors;
        f->ntensors++;
    }

    /* Sorted by offset, the spans must tile [0, data_len) exactly. */
    qsort(spans, f->ntensors, sizeof *spans, span_cmp);
    uint64_t expect = 0;
    for (size_t i = 0; i < f->ntensors; i++) {
        const dora_tensor *t = &f->tensors[spans[i].index];
        if (spans[i].begin != expect) {
            if (spans[i].begin < expect)
                dora_errf(err, "tensor '%s': data_offsets [%llu, %llu] overlap the previous tensor, "
                               "which ends at %llu",
                          t->name, (unsigned long long)spans[i].begin,
                          (unsigned long long)spans[i].end, (unsigned long long)expect);
            else
                dora_errf(err, "tensor '%s': data_offsets begin at %llu, expected %llu (a gap in "
                               "the data buffer)",
                          t->name, (unsigned long long)spans[i].begin, (unsigned long long)expect);
            goto done;
        }
        expect = spans[i].end;
    }
    if (expect != data_len) {
        if (expect > data_len)
            dora_errf(err, "data buffer holds %llu bytes but the tensors need %llu (file truncated?)",
                      (unsigned long long)data_len, (unsigned long long)expect);
        else
            dora_errf(err, "data buffer holds %llu bytes, %llu more than the tensors use "
                           "(trailing bytes)",
                      (unsigned long long)data_len, (unsigned long long)(data_len - expect));
        goto done;
    }

    /* Reorder the tensors into file order and point them at their bytes. */
    dora_tensor *sorted = calloc(f->ntensors ? f->ntensors : 1, sizeof *sorted);
    if (!sorted) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < f->ntensors; i++) {
        sorted[i] = f->tensors[spans[i].index];
        sorted[i].data = sorted[i].nbytes ? data + spans[i].begin : NULL;
    }
    free(f->tensors);
    f->tensors = sorted;
    rc = 0;
done:
    free(spans);
    json_decref(root);
    return rc;
}

/* The length rules of the 8-byte header length N in a file of SIZE bytes. */
static int check_header_len(uint64_t n, uint64_t size, dora_err *err)
{
    if (n > ST_MAX_HEADER)
        return dora_errf(err, "header length %llu exceeds the limit of %llu bytes",
                         (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > size - 8)
        return dora_errf(err, "header length %llu runs past the end of the file (%llu bytes)",
                         (unsigned long long)n, (unsigned long long)size);
    return 0;
}

int st_parse_bytes(st_file *f, const unsigned char *buf, uint64_t size, dora_err *err)
{
    if (size < 8)
        return dora_errf(err, "file is %llu bytes, shorter than the 8-byte header length",
                         (unsigned long long)size);
    uint64_t n = le_load64(buf);
    if (check_header_len(n, size, err) != 0)
        return -1;
    f->header_len = n;
    return st_parse_header(f, (const char *)buf + 8, (size_t)n, buf + 8 + n, size - 8 - n, err);
}

/* Read exactly LEN bytes at OFF of FD; a short read is a file that shrank. */
static int pread_all(int fd, void *buf, size_t len, uint64_t off, dora_err *err)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, (unsigned char *)buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return dora_errf(err, "cannot read: %s", strerror(errno));
        if (r == 0)
            return dora_errf(err, "the file ended at byte %llu while it was read, %llu bytes "
                                  "short (truncated while it was read?)",
                             (unsigned long long)(off + got), (unsigned long long)(len - got));
        got += (size_t)r;
    }
    return 0;
}

static int st_open_inner(st_file *f, dora_err *err)
{
    /* O_NONBLOCK: a FIFO is refused below instead of waited on; a regular
     * file's reads and mapping do not see the flag */
    int fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return dora_errf(err, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return dora_errf(err, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return dora_errf(err, "not a regular file");
    }
    f->size = (uint64_t)sb.st_size;
    st_file_stamp(f, fd);
    if (f->size < 8) { /* nothing to map; st_parse_bytes refuses it without reading */
        close(fd);
        return st_parse_bytes(f, NULL, f->size, err);
    }
    /* The header is read with pread, not through the mapping: a file that
     * shrinks while it is parsed gives a short read, not a SIGBUS inside the
     * JSON parser (whose allocations a jump out of it would leak). */
    unsigned char len8[8];
    char *json = NULL;
    int rc = pread_all(fd, len8, 8, 0, err);
    uint64_t n = rc == 0 ? le_load64(len8) : 0;
    if (rc == 0)
        rc = check_header_len(n, f->size, err);
    if (rc == 0 && !(json = malloc((size_t)n + 1)))
        rc = dora_errf(err, "out of memory for a header of %llu bytes", (unsigned long long)n);
    if (rc == 0)
        rc = pread_all(fd, json, (size_t)n, 8, err);
    if (rc == 0) {
        f->map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = dora_errf(err, "cannot map %llu bytes: %s", (unsigned long long)f->size,
                           strerror(errno));
        } else {
            util_map_hint(f->map, (size_t)f->size);
        }
    }
    close(fd);
    if (rc == 0) {
        f->header_len = n;
        rc = st_parse_header(f, json, (size_t)n, f->map + 8 + n, f->size - 8 - n, err);
    }
    free(json);
    return rc;
}

void st_file_stamp(st_file *f, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return;
    f->dev = (uint64_t)sb.st_dev;
    f->ino = (uint64_t)sb.st_ino;
    f->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
}

int st_file_changed(const st_file *f)
{
    struct stat sb;
    if (stat(f->path, &sb) != 0)
        return 1;
    int64_t m = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    return (uint64_t)sb.st_dev != f->dev || (uint64_t)sb.st_ino != f->ino ||
           (uint64_t)sb.st_size != f->size || m != f->mtime_ns;
}

int st_open(st_file **out, const char *path, dora_err *err)
{
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return dora_errf(err, "'%s': out of memory", path);
    }
    f->format = "safetensors";
    f->global_step = -1;
    if (st_open_inner(f, err) != 0) {
        dora_errprefix(err, "'%s'", path);
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, (size_t)f->size);
    for (size_t i = 0; i < f->ntensors; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    for (size_t i = 0; i < f->nowned; i++)
        free(f->owned[i]);
    free(f->owned);
    for (size_t i = 0; i < f->nglobals; i++)
        free(f->globals[i]);
    free(f->globals);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}
