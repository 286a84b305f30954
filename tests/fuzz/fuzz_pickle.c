/* libFuzzer target: arbitrary bytes through the restricted pickle interpreter.
 * Must end in a tensor list or a clean error: no crash, no sanitizer report,
 * no unbounded allocation or recursion. */
#include "dora/pickle.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    pk_tensor *t = NULL;
    size_t n = 0;
    dora_err err;
    err.msg[0] = '\0';
    if (pk_load_tensors(data, size, &t, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!t[i].name || !t[i].storage_key || t[i].ndim < 0 || t[i].ndim > DORA_MAX_DIMS)
                abort();
        pk_tensors_free(t, n);
    } else if (strlen(err.msg) == 0) {
        abort(); /* a failure must say why */
    }
    return 0;
}
