/* libFuzzer target: a model.safetensors.index.json (JSON, shard names, the
 * weight map checked against two real shards) through dora_model_open. */
#include "dora/model.h"
#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void shard(const char *name, const char *tensor)
{
    char header[160];
    int n = snprintf(header, sizeof header,
                     "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", tensor);
    unsigned char buf[8 + 160 + 16] = {0};
    buf[0] = (unsigned char)n;
    memcpy(buf + 8, header, (size_t)n);
    fuzz_write(name, buf, 8 + (size_t)n + 16);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int ready;
    if (!ready) {
        shard("model-00001-of-00002.safetensors", "a");
        shard("model-00002-of-00002.safetensors", "b");
        ready = 1;
    }
    fuzz_write("model.safetensors.index.json", data, size);
    dora_model *m = NULL;
    dora_err err;
    err.msg[0] = '\0';
    char dir[256];
    snprintf(dir, sizeof dir, "%s", fuzz_path(""));
    if (dora_model_open(&m, dir, &err) == 0)
        dora_model_close(m);
    else if (!err.msg[0])
        abort();
    return 0;
}
