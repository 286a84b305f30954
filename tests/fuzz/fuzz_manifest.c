/* libFuzzer target: batch manifests (JSON, studies, runs, filters,
 * expectations) through dora_manifest_load. */
#include "dora/batch.h"
#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *p = fuzz_write("manifest.json", data, size);
    dora_manifest m;
    dora_err err;
    err.msg[0] = '\0';
    if (dora_manifest_load(&m, p, &err) == 0)
        dora_manifest_release(&m);
    else if (!err.msg[0])
        abort();
    return 0;
}
