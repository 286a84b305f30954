#include "dora/tensor.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[DORA_DT_COUNT] = {
    [DORA_DT_INVALID] = {"?", 0},    [DORA_DT_BOOL] = {"BOOL", 1},
    [DORA_DT_U8] = {"U8", 1},        [DORA_DT_I8] = {"I8", 1},
    [DORA_DT_U16] = {"U16", 2},      [DORA_DT_I16] = {"I16", 2},
    [DORA_DT_U32] = {"U32", 4},      [DORA_DT_I32] = {"I32", 4},
    [DORA_DT_U64] = {"U64", 8},      [DORA_DT_I64] = {"I64", 8},
    [DORA_DT_F16] = {"F16", 2},      [DORA_DT_BF16] = {"BF16", 2},
    [DORA_DT_F32] = {"F32", 4},      [DORA_DT_F64] = {"F64", 8},
    [DORA_DT_F8_E4M3] = {"F8_E4M3", 1}, [DORA_DT_F8_E5M2] = {"F8_E5M2", 1},
};

dora_dtype dora_dtype_parse(const char *name)
{
    for (int t = 1; t < DORA_DT_COUNT; t++)
        if (strcmp(name, dtype_info[t].name) == 0)
            return (dora_dtype)t;
    return DORA_DT_INVALID;
}

const char *dora_dtype_name(dora_dtype t)
{
    return (t > 0 && t < DORA_DT_COUNT) ? dtype_info[t].name : "?";
}

size_t dora_dtype_size(dora_dtype t)
{
    return (t > 0 && t < DORA_DT_COUNT) ? dtype_info[t].size : 0;
}

int dora_dtype_is_analysable(dora_dtype t)
{
    return t == DORA_DT_F16 || t == DORA_DT_BF16 || t == DORA_DT_F32 || t == DORA_DT_F64;
}

int64_t dora_tensor_rows(const dora_tensor *t)
{
    return t->ndim >= 1 ? t->shape[0] : 1;
}

int64_t dora_tensor_cols(const dora_tensor *t)
{
    int64_t c = 1;
    for (int i = 1; i < t->ndim; i++)
        c *= t->shape[i]; /* cannot overflow: numel was checked when the file was parsed */
    return c;
}

void dora_shape_str(const dora_tensor *t, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (int i = 0; i <= t->ndim && used < len; i++) {
        int n;
        if (i == t->ndim)
            n = snprintf(buf + used, len - used, "]");
        else
            n = snprintf(buf + used, len - used, "%s%lld", i ? ", " : "[", (long long)t->shape[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (t->ndim == 0 && used < len)
        snprintf(buf, len, "[]");
}
