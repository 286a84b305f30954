/* libFuzzer target: whole .bin files (the zip container through libzip, the
 * record lookup, the pickle, the views) through pt_open. */
#include "dora/torchzip.h"
#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *p = fuzz_write("x.bin", data, size);
    st_file *f = NULL;
    dora_err err;
    err.msg[0] = '\0';
    if (pt_open(&f, p, &err) == 0) {
        for (size_t i = 0; i < f->ntensors; i++) { /* touch every byte of every view */
            volatile unsigned char sink = 0;
            for (uint64_t b = 0; b < f->tensors[i].nbytes; b++)
                sink ^= f->tensors[i].data[b];
            (void)sink;
        }
        st_close(f);
    } else if (!err.msg[0]) {
        abort();
    }
    return 0;
}
