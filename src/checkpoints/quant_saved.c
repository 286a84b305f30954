/* quant_saved.c - a base saved by bitsandbytes (4-bit with its quant_state,
 * or LLM.int8 with SCB), read dequantised as bitsandbytes dequantises it; the
 * layout and the arithmetic are in include/dora/quant.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/guard.h"
#include "dora/quant.h"
#include "dora/tensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QS_PREFIX ".quant_state.bitsandbytes__"
#define QS_MAX_BYTES 4096 /* the packed JSON holds a few fields */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int dora_bnb_saved(const dora_model *base)
{
    for (size_t i = 0; i < base->ntensors; i++) {
        const char *n = base->by_name[i]->name;
        if (strstr(n, QS_PREFIX) || ends_with(n, ".SCB"))
            return 1;
    }
    return 0;
}

static int name_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, (*(const dora_tensor *const *)elem)->name);
}

/* BASE's tensor STEM + SUFFIX, or NULL. */
static const dora_tensor *find2(const dora_model *base, const char *stem, size_t len,
                                const char *suffix)
{
    char name[1024];
    if (len + strlen(suffix) >= sizeof name)
        return NULL;
    memcpy(name, stem, len);
    strcpy(name + len, suffix);
    const dora_tensor *const *t = bsearch(name, base->by_name, base->ntensors,
                                          sizeof *base->by_name, name_cmp);
    return t ? *t : NULL;
}

/* T's bytes, copied under the SIGBUS guard (a base truncated underneath is an
 * error, not a crash); owned by the caller. */
static unsigned char *copy_bytes(const dora_tensor *t, dora_err *err)
{
    unsigned char *b = malloc(t->nbytes ? t->nbytes : 1);
    const void *fault;
    if (!b) {
        dora_errf(err, "out of memory reading '%s'", t->name);
        return NULL;
    }
    if (t->nbytes && dora_guard_copy(b, t->data, t->nbytes, &fault) != 0) {
        free(b);
        dora_errf(err, "'%s' changed while it was read (truncated?)", t->file);
        return NULL;
    }
    return b;
}

/* T, a float32 vector of N values, into a new array (NULL with ERR). */
static float *f32_vector(const dora_tensor *t, uint64_t n, const char *what, dora_err *err)
{
    if (!t || t->dtype != DORA_DT_F32 || t->numel != n) {
        if (t) {
            char s[128];
            dora_shape_str(t, s, sizeof s);
            dora_errf(err, "'%s': tensor '%s' is %s %s, but bitsandbytes' %s is %llu float32 "
                           "values",
                      t->file, t->name, dora_dtype_name(t->dtype), s, what,
                      (unsigned long long)n);
        }
        return NULL;
    }
    float *v = (float *)(void *)copy_bytes(t, err);
    for (uint64_t i = 0; v && i < n; i++)
        if (!isfinite(v[i])) {
            dora_errf(err, "'%s': tensor '%s' holds NaN or Inf at %llu", t->file, t->name,
                      (unsigned long long)i);
            free(v);
            return NULL;
        }
    return v;
}

/* A positive integer field of the quant_state JSON. */
static int qs_int(json_t *qs, const char *field, int64_t lo, int64_t hi, int64_t *out,
                  const dora_tensor *t, dora_err *err)
{
    json_t *v = json_object_get(qs, field);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return dora_errf(err, "'%s': '%s': quant_state field '%s' is missing or not an integer "
                              "from %lld to %lld",
                         t->file, t->name, field, (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

/* The quant_state of tensor QT: quant type, blocksize, dtype, shape (numel
 * into *N), nested fields. */
typedef struct qstate {
    int fp4, nested;
    int64_t blocksize, nested_blocksize;
    float offset;
    dora_dtype dtype;
    int ndim;
    int64_t shape[DORA_MAX_DIMS];
    uint64_t n;
} qstate;

static int read_qstate(const dora_tensor *qt, const char *kind, qstate *q, dora_err *err)
{
    memset(q, 0, sizeof *q);
    if (qt->dtype != DORA_DT_U8 || qt->nbytes == 0 || qt->nbytes > QS_MAX_BYTES)
        return dora_errf(err, "'%s': '%s' is not bitsandbytes' packed quant_state (U8 JSON of at "
                              "most %d bytes)",
                         qt->file, qt->name, QS_MAX_BYTES);
    unsigned char *b = copy_bytes(qt, err);
    if (!b)
        return -1;
    json_error_t jerr;
    json_t *qs = json_loadb((const char *)b, qt->nbytes, JSON_REJECT_DUPLICATES, &jerr);
    free(b);
    int rc = 0;
    json_t *qt_v = json_object_get(qs, "quant_type"), *dt = json_object_get(qs, "dtype"),
           *sh = json_object_get(qs, "shape");
    if (!json_is_object(qs))
        rc = dora_errf(err, "'%s': '%s' is not a JSON object (%s)", qt->file, qt->name,
                       qs ? "another value" : jerr.text);
    else if (!json_is_string(qt_v) || strcmp(json_string_value(qt_v), kind) != 0)
        rc = dora_errf(err, "'%s': '%s': quant_type is not '%s', as its name says", qt->file,
                       qt->name, kind);
    else if (qs_int(qs, "blocksize", 32, 4096, &q->blocksize, qt, err) != 0)
        rc = -1;
    else if (!json_is_string(dt) ||
             (strcmp(json_string_value(dt), "bfloat16") != 0 &&
              strcmp(json_string_value(dt), "float16") != 0 &&
              strcmp(json_string_value(dt), "float32") != 0))
        rc = dora_errf(err, "'%s': '%s': dtype is not bfloat16, float16 or float32", qt->file,
                       qt->name);
    else if (!json_is_array(sh) || json_array_size(sh) < 1 ||
             json_array_size(sh) > DORA_MAX_DIMS)
        rc = dora_errf(err, "'%s': '%s': shape is not a list of 1 to %d sizes", qt->file,
                       qt->name, DORA_MAX_DIMS);
    if (rc == 0) {
        const char *d = json_string_value(dt);
        q->dtype = strcmp(d, "bfloat16") == 0 ? DORA_DT_BF16
                   : strcmp(d, "float16") == 0 ? DORA_DT_F16
                                               : DORA_DT_F32;
        q->fp4 = strcmp(kind, "fp4") == 0;
        q->ndim = (int)json_array_size(sh);
        q->n = 1;
        for (int k = 0; k < q->ndim && rc == 0; k++) {
            json_t *v = json_array_get(sh, (size_t)k);
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > ((int64_t)1 << 40) ||
                q->n > (UINT64_MAX >> 41) / 2)
                rc = dora_errf(err, "'%s': '%s': shape entry %d is not a size", qt->file,
                               qt->name, k);
            else
                q->n *= (uint64_t)(q->shape[k] = json_integer_value(v));
        }
        if (q->n > ((uint64_t)1 << 40))
            rc = dora_errf(err, "'%s': '%s': shape of %llu values is absurd", qt->file, qt->name,
                           (unsigned long long)q->n);
        json_t *off = json_object_get(qs, "nested_offset");
        q->nested = json_object_get(qs, "nested_blocksize") != NULL;
        if (rc == 0 && q->nested &&
            (qs_int(qs, "nested_blocksize", 32, 4096, &q->nested_blocksize, qt, err) != 0 ||
             !json_is_number(off) || !isfinite(json_number_value(off))))
            rc = rc ? rc
                    : dora_errf(err, "'%s': '%s': nested_offset is missing or not a finite "
                                     "number",
                                qt->file, qt->name);
        if (rc == 0 && q->nested)
            q->offset = (float)json_number_value(off);
    }
    json_decref(qs);
    return rc;
}

/* Store float V as DT at D. */
static void store(unsigned char *d, float v, dora_dtype dt)
{
    uint16_t h;
    if (dt == DORA_DT_F32) {
        memcpy(d, &v, 4);
        return;
    }
    h = dt == DORA_DT_BF16 ? dora_f32_to_bf16(v) : dora_f32_to_f16(v);
    memcpy(d, &h, 2);
}

/* The 4-bit weight W (stem of LEN bytes, quant_state QT of KIND) into OUT. */
static int dequant_4bit(const dora_model *base, const dora_tensor *qt, size_t len,
                        const char *kind, dora_tensor *out, dora_err *err)
{
    qstate q;
    if (read_qstate(qt, kind, &q, err) != 0)
        return -1;
    const dora_tensor *w = find2(base, qt->name, len, ""), *am = find2(base, qt->name, len, ".absmax"),
                      *qm = find2(base, qt->name, len, ".quant_map");
    const uint64_t nb = (q.n + (uint64_t)q.blocksize - 1) / (uint64_t)q.blocksize;
    if (!w || w->dtype != DORA_DT_U8 || w->numel != (q.n + 1) / 2)
        return dora_errf(err, "'%s': the packed 4-bit weight of '%s' is missing or is not %llu U8 "
                              "bytes (two codes a byte for its %llu values)",
                         qt->file, qt->name, (unsigned long long)((q.n + 1) / 2),
                         (unsigned long long)q.n);
    if (!am || !qm)
        return dora_errf(err, "'%s': '%.*s' lacks its %s", qt->file, (int)len, qt->name,
                         am ? ".quant_map" : ".absmax");
    float code[16], *map = f32_vector(qm, 16, "quant_map", err), *absmax = NULL, *n_am = NULL,
                    *n_map = NULL;
    unsigned char *packed = NULL, *codes8 = NULL, *data = NULL;
    int rc = -1;
    if (!map)
        goto done;
    dora_quant_code4(q.fp4, code);
    for (int i = 0; i < 16; i++)
        if (map[i] != code[i]) {
            dora_errf(err, "'%s': '%s' entry %d is %.9g, not bitsandbytes' %s value %.9g (its "
                           "CUDA kernels use their own table: which one the adapter saw is "
                           "ambiguous)",
                      qm->file, qm->name, i, (double)map[i], kind, (double)code[i]);
            goto done;
        }
    if (q.nested) {
        const dora_tensor *na = find2(base, qt->name, len, ".nested_absmax"),
                          *nm = find2(base, qt->name, len, ".nested_quant_map");
        const uint64_t nb2 = (nb + (uint64_t)q.nested_blocksize - 1) / (uint64_t)q.nested_blocksize;
        if (am->dtype != DORA_DT_U8 || am->numel != nb) {
            dora_errf(err, "'%s': '%s' is not %llu U8 codes (double quantisation)", am->file,
                      am->name, (unsigned long long)nb);
            goto done;
        }
        if (!na || !nm) {
            dora_errf(err, "'%s': '%.*s' is double-quantised but lacks %s", qt->file, (int)len,
                      qt->name, na ? ".nested_quant_map" : ".nested_absmax");
            goto done;
        }
        if (!(n_am = f32_vector(na, nb2, "nested_absmax", err)) ||
            !(n_map = f32_vector(nm, 256, "nested_quant_map", err)) ||
            !(codes8 = copy_bytes(am, err)))
            goto done;
        if (!(absmax = malloc(nb * sizeof *absmax))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        for (uint64_t b = 0; b < nb; b++) /* dequantize_blockwise, then the offset */
            absmax[b] = (float)(n_map[codes8[b]] * n_am[b / (uint64_t)q.nested_blocksize]) +
                        q.offset;
    } else if (!(absmax = f32_vector(am, nb, "absmax", err))) {
        goto done;
    }
    if (!(packed = copy_bytes(w, err)))
        goto done;
    const size_t esz = dora_dtype_size(q.dtype);
    if (!(data = malloc(q.n * esz))) {
        dora_errf(err, "out of memory dequantising '%s'", w->name);
        goto done;
    }
    for (uint64_t i = 0; i < q.n; i++) {
        unsigned c = i % 2 ? packed[i / 2] & 0x0fu : packed[i / 2] >> 4;
        store(data + i * esz, (float)(map[c] * absmax[i / (uint64_t)q.blocksize]), q.dtype);
    }
    *out = *w;
    out->owner = NULL;
    out->dtype = q.dtype;
    out->ndim = q.ndim;
    memcpy(out->shape, q.shape, sizeof q.shape);
    out->numel = q.n;
    out->nbytes = q.n * esz;
    out->data = data;
    data = NULL;
    rc = 0;
done:
    free(map);
    free(absmax);
    free(n_am);
    free(n_map);
    free(codes8);
    free(packed);
    free(data);
    return rc;
}

/* The LLM.int8 weight STEM.weight with its SCB (tensor S, stem LEN bytes) into OUT. */
static int dequant_int8(const dora_model *base, const dora_tensor *s, size_t len,
                        dora_tensor *out, dora_err *err)
{
    const dora_tensor *w = find2(base, s->name, len, ".weight");
    if (!w || w->dtype != DORA_DT_I8 || w->ndim != 2)
        return dora_errf(err, "'%s': '%s' has no int8 [out, in] weight '%.*s.weight' beside it",
                         s->file, s->name, (int)len, s->name);
    const int64_t rows = w->shape[0], cols = w->shape[1];
    float *scb = f32_vector(s, (uint64_t)rows, "SCB (one absmax per row)", err);
    unsigned char *q = scb ? copy_bytes(w, err) : NULL;
    float *data = q ? malloc((size_t)(rows * cols) * sizeof *data + 1) : NULL;
    if (!data) {
        if (q)
            dora_errf(err, "out of memory dequantising '%s'", w->name);
        free(scb);
        free(q);
        return -1;
    }
    const float inv127 = 7.874015718698502e-3f; /* int8_vectorwise_dequant's factor */
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            data[i * cols + j] = (float)((int8_t)q[i * cols + j] * scb[i]) * inv127;
    free(scb);
    free(q);
    *out = *w;
    out->owner = NULL;
    out->dtype = DORA_DT_F32;
    out->nbytes = w->numel * 4;
    out->data = (const unsigned char *)data;
    return 0;
}

static int tensor_cmp(const void *a, const void *b)
{
    return strcmp(((const dora_tensor *)a)->name, ((const dora_tensor *)b)->name);
}

/* NAME is an auxiliary tensor of a saved weight (left out of the view). */
static int auxiliary(const dora_model *base, const char *name)
{
    static const char *const sfx[] = {".absmax", ".quant_map", ".nested_absmax",
                                      ".nested_quant_map"};
    if (strstr(name, QS_PREFIX) || ends_with(name, ".SCB") || ends_with(name, ".weight_format"))
        return 1;
    for (size_t k = 0; k < sizeof sfx / sizeof sfx[0]; k++) {
        size_t n = strlen(name), m = strlen(sfx[k]);
        if (n > m && strcmp(name + n - m, sfx[k]) == 0 &&
            (find2(base, name, n - m, QS_PREFIX "nf4") || find2(base, name, n - m, QS_PREFIX "fp4")))
            return 1;
    }
    return 0;
}

int dora_bnb_saved_open(dora_quant_base **out, const dora_model *base, dora_err *err)
{
    *out = NULL;
    dora_quant_base *qb = dora_quant_view(base, base->ntensors);
    if (!qb)
        return dora_errf(err, "out of memory");
    int rc = 0;
    /* the dequantised weights, in name order (their names are the weights') */
    for (size_t i = 0; i < base->ntensors && rc == 0; i++) {
        const dora_tensor *t = base->by_name[i];
        const char *qs = strstr(t->name, QS_PREFIX);
        if (qs && (strcmp(qs + strlen(QS_PREFIX), "nf4") == 0 ||
                   strcmp(qs + strlen(QS_PREFIX), "fp4") == 0))
            rc = dequant_4bit(base, t, (size_t)(qs - t->name), qs + strlen(QS_PREFIX),
                              &qb->tensors[qb->nquant++], err);
        else if (qs)
            rc = dora_errf(err, "'%s': '%s': bitsandbytes quant type '%s' is not read (nf4 and "
                                "fp4 are)",
                           t->file, t->name, qs + strlen(QS_PREFIX));
        else if (ends_with(t->name, ".SCB"))
            rc = dequant_int8(base, t, strlen(t->name) - 4, &qb->tensors[qb->nquant++], err);
        if (rc != 0)
            qb->nquant--;
    }
    if (rc == 0)
        qsort(qb->tensors, qb->nquant, sizeof *qb->tensors, tensor_cmp);
    /* the view: the base's tensors, the saved ones replaced, the auxiliary left out */
    for (size_t i = 0, k = 0; i < base->ntensors && rc == 0; i++) {
        const dora_tensor *t = base->by_name[i];
        if (auxiliary(base, t->name))
            continue;
        while (k < qb->nquant && strcmp(qb->tensors[k].name, t->name) < 0)
            k++;
        qb->view.by_name[qb->view.ntensors++] =
            k < qb->nquant && strcmp(qb->tensors[k].name, t->name) == 0 ? &qb->tensors[k] : t;
    }
    if (rc != 0) {
        dora_quant_base_close(qb);
        return -1;
    }
    *out = qb;
    return 0;
}

int dora_bnb_saved_w0(const dora_model *base, dora_quant asked, dora_quant_base **saved,
                      char *note, size_t len, dora_err *err)
{
    *saved = NULL;
    if (len)
        note[0] = '\0';
    if (!dora_bnb_saved(base))
        return 0;
    if (asked != DORA_QUANT_NONE)
        return dora_errf(err, "'%s' is saved quantised by bitsandbytes and is read dequantised: "
                              "--base-quant %s would quantise it twice",
                         base->path, dora_quant_name(asked));
    if (dora_bnb_saved_open(saved, base, err) != 0)
        return -1;
    snprintf(note, len, "'%s': saved quantised by bitsandbytes: %zu weight(s) read dequantised "
                        "as W0",
             base->path, (*saved)->nquant);
    return 0;
}
