/* libFuzzer target: the fuzzer's bytes as the pickle of a valid torch.save
 * archive, so that mutations reach the interpreter and the view building of
 * pt_open instead of breaking the zip's CRC (as they do in fuzz_torchzip).
 *
 * Input: byte 0 = R (mod 5) storage records; R little-endian 16-bit sizes
 * (at most 16384 bytes each) of the records archive/data/0 .. R-1; the rest is
 * archive/data.pkl. Seeds: tests/fuzz/gen_seeds.py (from real torch.save). */
#include "dora/torchzip.h"
#include "fuzz_files.h"
#include "fuzz_zip.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* Touch every byte of every view: a view outside its record faults or draws
 * an ASan report; the sizes must agree with the shape. */
static void fuzz_check_file(st_file *f)
{
    for (size_t i = 0; i < f->ntensors; i++) {
        const dora_tensor *t = &f->tensors[i];
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= (uint64_t)t->shape[d];
        if (!t->name || numel != t->numel || t->nbytes != numel * dora_dtype_size(t->dtype) ||
            (t->nbytes && !t->data))
            abort();
        volatile unsigned char sink = 0;
        for (uint64_t b = 0; b < t->nbytes; b++)
            sink ^= t->data[b];
        (void)sink;
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 1)
        return 0;
    int nrec = data[0] % 5;
    size_t sizes[4] = {0}, at = 1;
    for (int i = 0; i < nrec; i++, at += 2)
        sizes[i] = at + 1 < size ? (data[at] | (size_t)data[at + 1] << 8) % 16385 : 0;
    if (at > size)
        at = size;
    fzip z;
    memset(&z, 0, sizeof z);
    fz_torch(&z, data + at, size - at, sizes, nrec);
    const char *p = fuzz_write("x.pt", z.out.b, z.out.n);
    fz_free(&z);
    st_file *f = NULL;
    dora_err err;
    err.msg[0] = '\0';
    if (pt_open(&f, p, &err) == 0) {
        fuzz_check_file(f);
        st_close(f);
    } else if (!err.msg[0]) {
        abort(); /* a failure must say why */
    }
    return 0;
}
