/* st_write.h - write small safetensors files for the C tests. */
#ifndef ST_WRITE_H
#define ST_WRITE_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Write HEADER (JSON, used as is) and DATA_LEN bytes of DATA to PATH. */
static inline int st_write_raw(const char *path, const char *header, const void *data,
                               size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint64_t n = strlen(header);
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(n >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, n, f);
    if (data_len)
        fwrite(data, 1, data_len, f);
    return fclose(f);
}

/* One F32 tensor NAME of shape [rows, cols]. */
static inline int st_write_f32(const char *path, const char *name, int rows, int cols,
                               const float *v)
{
    char header[512];
    size_t nbytes = (size_t)rows * (size_t)cols * 4;
    snprintf(header, sizeof header,
             "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[0,%zu]}}", name, rows,
             cols, nbytes);
    return st_write_raw(path, header, v, nbytes);
}

#endif
