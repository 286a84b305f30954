/* Unit tests for the safetensors reader: every validation rule, and the views. */
#define _POSIX_C_SOURCE 200809L
#include "dora/safetensors.h"
#include "st_write.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/dora-unit-st-XXXXXX";

/* Parse HEADER against a buffer of DATA_LEN zero bytes; returns 0/-1 and the message. */
static int parse(const char *header, uint64_t data_len, dora_err *err, st_file **keep)
{
    static unsigned char zeros[4096];
    st_file *f = calloc(1, sizeof *f);
    err->msg[0] = '\0';
    int rc = st_parse_header(f, header, strlen(header), zeros, data_len, err);
    if (keep && rc == 0)
        *keep = f;
    else
        st_close(f);
    return rc;
}

/* The header must be refused with a message containing NEEDLE. */
static void refused(const char *header, uint64_t data_len, const char *needle)
{
    dora_err err;
    int rc = parse(header, data_len, &err, NULL);
    CHECK_MSG(rc == -1, "accepted: %s", header);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

static void test_valid(void)
{
    dora_err err;
    st_file *f = NULL;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                    "\"e\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[28,28]},"
                    "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[28,36]}}   ";
    CHECK_MSG(parse(h, 36, &err, &f) == 0, "%s", err.msg);
    if (!f)
        return;
    CHECK(f->ntensors == 4);
    CHECK(strcmp(f->tensors[0].name, "a") == 0); /* file order */
    CHECK(f->tensors[0].dtype == DORA_DT_F32 && f->tensors[0].nbytes == 16);
    CHECK(strcmp(f->tensors[1].name, "b") == 0 && f->tensors[1].ndim == 2);
    CHECK(f->tensors[1].shape[1] == 3 && f->tensors[1].numel == 6);
    CHECK(f->tensors[2].nbytes == 0 && f->tensors[2].data == NULL);
    CHECK(f->tensors[3].ndim == 0 && f->tensors[3].numel == 1);
    CHECK(f->nmeta == 1 && strcmp(f->meta_keys[0], "format") == 0);
    CHECK(strcmp(f->meta_values[0], "pt") == 0);
    st_close(f);
}

static void test_rules(void)
{
    refused("not json", 0, "not valid JSON");
    refused("[1,2]", 0, "not a JSON object");
    refused("{\"a\":1}", 0, "tensor 'a': entry is not an object");
    refused("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'dtype'");
    refused("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "'shape'");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    refused("{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
            "unknown dtype 'F31'");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
            "shape[0] is not a non-negative integer");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
            4, "overflows");
    refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
            "overflows");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
            "end before they begin");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
            "span 4 bytes, expected 8");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
            12, "tensor 'b': data_offsets begin at 8, expected 4");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, "overlap");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
            "begin at 4, expected 0");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
            "4 more than the tensors use");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
            "truncated");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, "duplicate");
    refused("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "decode byte");
    refused("{\"__metadata__\":{\"k\":1}}", 0, "'__metadata__' entry 'k' is not a string");
    refused("{\"__metadata__\":[]}", 0, "'__metadata__' is not an object");
    dora_err err;
    CHECK_MSG(parse("{\"__metadata__\":null}", 0, &err, NULL) == 0, "null metadata: %s", err.msg);
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4,
            "not non-negative integers");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}",
            4, "too big integer");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
            "\"data_offsets\":[0,4]}}",
            4, "rank 17 exceeds");
    /* Deep nesting ends in an error, not a stack overflow. */
    char *deep = malloc(200001);
    memset(deep, '[', 200000);
    deep[200000] = '\0';
    refused(deep, 0, "not valid JSON");
    free(deep);
}

/* st_open on files: size and header-length rules, and the message names the file. */
static void test_files(void)
{
    char path[256];
    dora_err err;
    st_file *f;
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    fwrite("1234567", 1, 7, fp);
    fclose(fp);
    CHECK(st_open(&f, path, &err) == -1);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "shorter than the 8-byte"));

    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    fclose(fopen(path, "wb"));
    CHECK(st_open(&f, path, &err) == -1 && strstr(err.msg, path));

    snprintf(path, sizeof path, "%s/huge.safetensors", dir);
    fp = fopen(path, "wb");
    unsigned char le[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100000001 */
    fwrite(le, 1, 10, fp);
    fclose(fp);
    CHECK(st_open(&f, path, &err) == -1 && strstr(err.msg, "exceeds the limit"));

    snprintf(path, sizeof path, "%s/past.safetensors", dir);
    fp = fopen(path, "wb");
    unsigned char le2[10] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    fwrite(le2, 1, 10, fp);
    fclose(fp);
    CHECK(st_open(&f, path, &err) == -1 && strstr(err.msg, "runs past the end"));

    snprintf(path, sizeof path, "%s/ok.safetensors", dir);
    float v[6] = {1, 2, 3, 4, 5, 6};
    st_write_f32(path, "w", 2, 3, v);
    CHECK_MSG(st_open(&f, path, &err) == 0, "%s", err.msg);
    if (f) {
        float got[6];
        memcpy(got, f->tensors[0].data, sizeof got);
        CHECK(memcmp(got, v, sizeof v) == 0); /* zero-copy view of the right bytes */
        CHECK(strcmp(f->tensors[0].file, path) == 0);
        st_close(f);
    }
    CHECK(st_open(&f, dir, &err) == -1 && strstr(err.msg, "not a regular file"));
}

int main(void)
{
    if (!mkdtemp(dir))
        return 2;
    test_valid();
    test_rules();
    test_files();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_summary("test_safetensors");
}
