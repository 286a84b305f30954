/* tensor.h - element types and read-only tensor views.
 *
 * A dora_tensor is a view into bytes owned by a container (a memory-mapped
 * safetensors file). It stays valid until that container is closed. Data are
 * row-major and little-endian; the pointer may be unaligned, so readers load
 * elements with memcpy.
 */
#ifndef DORA_TENSOR_H
#define DORA_TENSOR_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DORA_MAX_DIMS 16 /* rank limit; a file asking for more is refused */

typedef enum dora_dtype {
    DORA_DT_INVALID = 0,
    DORA_DT_BOOL,
    DORA_DT_U8,
    DORA_DT_I8,
    DORA_DT_U16,
    DORA_DT_I16,
    DORA_DT_U32,
    DORA_DT_I32,
    DORA_DT_U64,
    DORA_DT_I64,
    DORA_DT_F16,
    DORA_DT_BF16,
    DORA_DT_F32,
    DORA_DT_F64,
    DORA_DT_F8_E4M3,
    DORA_DT_F8_E5M2,
    DORA_DT_COUNT
} dora_dtype;

/* Parse a safetensors dtype name ("BF16", "F32", ...). DORA_DT_INVALID if unknown. */
dora_dtype dora_dtype_parse(const char *name);
/* Canonical name, "?" for an invalid value. */
const char *dora_dtype_name(dora_dtype t);
/* Size of one element in bytes, 0 for an invalid value. */
size_t dora_dtype_size(dora_dtype t);
/* Non-zero for the types whose weights are analysed: F16, BF16, F32, F64. */
int dora_dtype_is_analysable(dora_dtype t);

struct st_file; /* the container that owns a tensor's bytes (safetensors.h) */

typedef struct dora_tensor {
    const char *name;              /* owned by the container */
    const char *file;              /* path of the file holding the bytes; owned by the container */
    dora_dtype dtype;
    int ndim;
    int64_t shape[DORA_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;               /* numel * dtype size */
    const unsigned char *data;     /* into the mapping; NULL when nbytes == 0 */
    const struct st_file *owner;   /* the file holding the bytes */
} dora_tensor;

/* Scalar element conversions, exact (every bf16 and f16 value is a float).
 * Inline: the kernels' scalar tails use them too. */
static inline float dora_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16; /* bf16 is the top half of an IEEE single */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float dora_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* Inf, NaN (payload kept) */
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13); /* rebias 15 -> 127 */
    } else if (man == 0) {
        u = sign; /* signed zero */
    } else {
        /* subnormal: normalise the mantissa */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One element of type t (F16, BF16, F32, F64; NaN for others) at p, which
 * may be unaligned, as a double. */
static inline double dora_elem_to_f64(const void *p, dora_dtype t)
{
    uint16_t h;
    float f;
    double d;
    switch (t) {
    case DORA_DT_BF16:
        memcpy(&h, p, 2);
        return dora_bf16_to_f32(h);
    case DORA_DT_F16:
        memcpy(&h, p, 2);
        return dora_f16_to_f32(h);
    case DORA_DT_F32:
        memcpy(&f, p, 4);
        return f;
    case DORA_DT_F64:
        memcpy(&d, p, 8);
        return d;
    default:
        return NAN;
    }
}

/* Rows (dim 0) and columns (product of the other dims) of a tensor of rank >= 1. */
int64_t dora_tensor_rows(const dora_tensor *t);
int64_t dora_tensor_cols(const dora_tensor *t);

/* Write "[a, b, c]" into buf (always NUL-terminated, truncated if too small). */
void dora_shape_str(const dora_tensor *t, char *buf, size_t len);

#endif
