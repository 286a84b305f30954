/* libFuzzer target: adapter_config.json (peft_type, r, alpha, patterns
 * compiled with PCRE2, MLX parameters) through dora_adapter_open, over a
 * small valid adapter_model.safetensors. */
#include "dora/adapter.h"
#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int ready;
    if (!ready) {
        const char *h = "{\"base_model.model.m.q.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                        "\"data_offsets\":[0,24]},\"base_model.model.m.q.lora_B.weight\":"
                        "{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[24,56]}}";
        size_t n = strlen(h);
        unsigned char buf[512] = {0};
        buf[0] = (unsigned char)n;
        memcpy(buf + 8, h, n);
        fuzz_write("adapter_model.safetensors", buf, 8 + n + 56);
        ready = 1;
    }
    fuzz_write("adapter_config.json", data, size);
    dora_adapter *a = NULL;
    dora_err err;
    err.msg[0] = '\0';
    char dir[256];
    snprintf(dir, sizeof dir, "%s", fuzz_path(""));
    if (dora_adapter_open(&a, dir, &err) == 0)
        dora_adapter_close(a);
    else if (!err.msg[0])
        abort();
    return 0;
}
