/* libFuzzer target: a whole safetensors file image through the validating
 * parser. Any input must end in success or a clean error, never a crash, a
 * sanitizer report or an unbounded allocation. `make fuzz` runs it. */
#include "dora/safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    st_file *f = calloc(1, sizeof *f);
    if (!f)
        return 0;
    dora_err err;
    if (st_parse_bytes(f, data, size, &err) == 0) {
        /* every view must lie inside the input */
        for (size_t i = 0; i < f->ntensors; i++) {
            const dora_tensor *t = &f->tensors[i];
            if (t->nbytes && (t->data < data || t->data + t->nbytes > data + size))
                abort();
        }
    } else if (strlen(err.msg) == 0) {
        abort(); /* a failure must say why */
    }
    st_close(f);
    return 0;
}
