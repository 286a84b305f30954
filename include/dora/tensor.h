/* tensor.h - element types and read-only tensor views.
 *
 * A dora_tensor is a view into bytes owned by a container (a memory-mapped
 * safetensors file). It stays valid until that container is closed. Data are
 * row-major and little-endian; the pointer may be unaligned, so readers load
 * elements with memcpy.
 */
#ifndef DORA_TENSOR_H
#define DORA_TENSOR_H

#include <stddef.h>
#include <stdint.h>

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

/* Rows (dim 0) and columns (product of the other dims) of a tensor of rank >= 1. */
int64_t dora_tensor_rows(const dora_tensor *t);
int64_t dora_tensor_cols(const dora_tensor *t);

/* Write "[a, b, c]" into buf (always NUL-terminated, truncated if too small). */
void dora_shape_str(const dora_tensor *t, char *buf, size_t len);

#endif
