/* libFuzzer target: the fuzzer's bytes as a program that writes a pickle from
 * valid opcode sequences (state dicts, OrderedDict, nested dicts, lists and
 * tuples, _rebuild_tensor_v2 with hostile shapes, strides, offsets and storage
 * sizes, _rebuild_parameter and _rebuild_from_type_v2 wrappers, memo graphs
 * that share or cycle, protocols 2 and 4), wraps it with matching (or nearly
 * matching) storage records in a valid torch.save archive and opens it with
 * pt_open. Every byte drawn past the input's end is 0, so every input is a
 * program; the seeds are a few short byte strings (tests/fuzz/gen_seeds.py). */
#include "dora/torchzip.h"
#include "fuzz_files.h"
#include "fuzz_zip.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define NSTOR 4
#define NMEMO 16

typedef struct gen {
    const unsigned char *p, *end;
    fbuf pk;
    int proto;
    uint32_t memo; /* next memo index */
    int budget;    /* values left to write */
    int nstor;
    struct {
        int type;
        int64_t numel;
        size_t rec;       /* bytes of its record */
        int64_t pid_memo; /* memo index of its persistent id, -1 before the first use */
    } st[NSTOR];
    uint32_t tensors[NMEMO], containers[NMEMO]; /* memoised values to refer to again */
    int ntensors, ncontainers;
} gen;

static unsigned u8(gen *g)
{
    return g->p < g->end ? *g->p++ : 0;
}

static const struct {
    const char *name;
    size_t es;
} types[] = {{"FloatStorage", 4}, {"HalfStorage", 2},  {"BFloat16Storage", 2},
             {"DoubleStorage", 8}, {"LongStorage", 8}, {"IntStorage", 4},
             {"ShortStorage", 2}, {"CharStorage", 1},  {"ByteStorage", 1},
             {"BoolStorage", 1},  {"UntypedStorage", 1}};

/* an integer a hostile file would try */
static int64_t pick(gen *g)
{
    static const int64_t v[] = {0,          1,           2,           3,
                                4,          7,           16,          255,
                                256,        65535,       65536,       INT32_MAX,
                                1LL << 31,  1LL << 32,   1LL << 40,   1LL << 62,
                                INT64_MAX,  -1,          INT32_MIN,   INT64_MIN,
                                (1LL << 62) + 1, 3LL << 61, 1LL << 33, 1000003};
    unsigned c = u8(g);
    return c < 2 * sizeof v / sizeof v[0] ? v[c % (sizeof v / sizeof v[0])] : (int64_t)(c % 64);
}

static void op(gen *g, unsigned c)
{
    fb_byte(&g->pk, c);
}

static void op_int(gen *g, int64_t v)
{
    if (v >= 0 && v < 256) {
        op(g, 'K');
        op(g, (unsigned)v);
    } else if (v >= 0 && v < 65536) {
        op(g, 'M');
        fb_le(&g->pk, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        op(g, 'J');
        fb_le(&g->pk, (uint64_t)v, 4);
    } else { /* LONG1, 8 bytes of two's complement */
        op(g, 0x8a);
        op(g, 8);
        fb_le(&g->pk, (uint64_t)v, 8);
    }
}

static void op_str(gen *g, const char *s, size_t n)
{
    if (g->proto >= 4 && n < 256) {
        op(g, 0x8c);
        op(g, (unsigned)n);
    } else {
        op(g, 'X');
        fb_le(&g->pk, n, 4);
    }
    fb_put(&g->pk, s, n);
}

static void op_cstr(gen *g, const char *s)
{
    op_str(g, s, strlen(s));
}

/* memoise the top of the stack; its index */
static uint32_t memoize(gen *g)
{
    uint32_t i = g->memo++;
    if (g->proto >= 4) {
        op(g, 0x94);
    } else if (i < 256) {
        op(g, 'q');
        op(g, i);
    } else {
        op(g, 'r');
        fb_le(&g->pk, i, 4);
    }
    return i;
}

static void memo_get(gen *g, uint32_t i)
{
    if (i < 256) {
        op(g, 'h');
        op(g, i);
    } else {
        op(g, 'j');
        fb_le(&g->pk, i, 4);
    }
}

static void op_global(gen *g, const char *mod, const char *name)
{
    if (g->proto >= 4) {
        op_cstr(g, mod);
        op_cstr(g, name);
        op(g, 0x93);
    } else {
        op(g, 'c');
        fb_put(&g->pk, mod, strlen(mod));
        op(g, '\n');
        fb_put(&g->pk, name, strlen(name));
        op(g, '\n');
    }
}

static void ordered_dict(gen *g)
{
    op_global(g, "collections", "OrderedDict");
    op(g, ')');
    op(g, 'R');
}

/* ('storage', torch.TYPE, key, 'cpu', numel) BINPERSID, memoised once */
static void persid(gen *g, int i)
{
    if (g->st[i].pid_memo >= 0) {
        memo_get(g, (uint32_t)g->st[i].pid_memo);
        return;
    }
    char key[8];
    snprintf(key, sizeof key, "%d", i);
    op(g, '(');
    op_cstr(g, "storage");
    op_global(g, "torch", types[g->st[i].type].name);
    op_cstr(g, u8(g) == 255 ? "9" : key); /* rarely a record that is not there */
    op_cstr(g, "cpu");
    op_int(g, g->st[i].numel);
    op(g, 't');
    op(g, 'Q');
    g->st[i].pid_memo = memoize(g);
}

static void int_tuple(gen *g, const int64_t *v, int n)
{
    if (n == 0) {
        op(g, ')');
        return;
    }
    int short_form = n <= 3 && (u8(g) & 1);
    if (!short_form)
        op(g, '(');
    for (int i = 0; i < n; i++)
        op_int(g, v[i]);
    op(g, short_form ? 0x84 + (unsigned)n : 't');
}

/* _rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict()) */
static void rebuild_args(gen *g)
{
    int i = (int)(u8(g) % (unsigned)g->nstor);
    unsigned c = u8(g);
    int ndim = c == 255 ? 17 : (int)(c % 5);
    int64_t shape[17], stride[17];
    for (int d = 0; d < ndim; d++) {
        unsigned k = u8(g) % 8;
        shape[d] = k < 5 ? (int64_t)k : k == 5 ? (int64_t)(u8(g) % 8 + 1) : pick(g);
    }
    unsigned mode = u8(g) % 6;
    int64_t e = 1;
    for (int d = ndim - 1; d >= 0; d--) { /* contiguous, then bent */
        stride[d] = e;
        if (shape[d] > 0 && shape[d] < (1 << 20) && e < (1LL << 40))
            e *= shape[d];
    }
    if (mode == 1 && ndim >= 2) { /* transposed */
        int64_t t = stride[ndim - 1];
        stride[ndim - 1] = stride[ndim - 2];
        stride[ndim - 2] = t;
    } else if (mode == 2) { /* broadcast */
        for (int d = 0; d < ndim; d++)
            stride[d] = u8(g) & 1 ? 0 : stride[d];
    } else if (mode == 3) { /* overlapping */
        for (int d = 0; d < ndim; d++)
            stride[d] = 1;
    } else if (mode == 4) {
        for (int d = 0; d < ndim; d++)
            stride[d] = pick(g);
    }
    unsigned o = u8(g) % 6;
    int64_t numel = g->st[i].numel;
    int64_t offset = o < 2   ? (int64_t)o
                     : o == 2 ? (int64_t)((uint64_t)numel - 1)
                     : o == 3 ? numel
                              : pick(g);
    op(g, '(');
    persid(g, i);
    op_int(g, offset);
    int_tuple(g, shape, ndim);
    int_tuple(g, stride, u8(g) == 255 && ndim > 0 ? ndim - 1 : ndim);
    op(g, 0x89);
    ordered_dict(g);
    op(g, 't');
}

static void tensor(gen *g)
{
    unsigned wrap = u8(g) % 8;
    if (wrap == 6) { /* _rebuild_parameter(tensor, requires_grad, hooks) */
        op_global(g, "torch._utils", "_rebuild_parameter");
        op(g, '(');
    } else if (wrap == 7) { /* _rebuild_from_type_v2(func, type, args, state) */
        op_global(g, "torch._tensor", "_rebuild_from_type_v2");
        op(g, '(');
        op_global(g, "torch._utils", "_rebuild_tensor_v2");
        op_global(g, u8(g) & 1 ? "torch" : "torch.nn.parameter", u8(g) & 1 ? "Tensor" : "Parameter");
        rebuild_args(g);
        op(g, '}');
        op(g, 't');
        op(g, 'R');
        return;
    }
    op_global(g, "torch._utils", "_rebuild_tensor_v2");
    rebuild_args(g);
    op(g, 'R');
    if (wrap == 6) {
        op(g, 0x88);
        ordered_dict(g);
        op(g, 't');
        op(g, 'R');
    }
    if (u8(g) & 1) {
        op(g, '}'); /* BUILD with a state, ignored */
        op(g, 'b');
    }
}

static void value(gen *g, int depth);

static void key(gen *g)
{
    static const char *names[] = {"w", "weight", "a", "b", "a.b", "0", "1",
                                  "model.layers.0.self_attn.q_proj.weight", "bias", "x"};
    unsigned c = u8(g) % 16;
    if (c < sizeof names / sizeof names[0]) {
        op_cstr(g, names[c]);
    } else if (c < 14) {
        op_int(g, pick(g));
    } else {
        char s[8];
        snprintf(s, sizeof s, "k%u", u8(g));
        op_cstr(g, s);
    }
}

static void container_memo(gen *g)
{
    uint32_t i = memoize(g);
    if (g->ncontainers < NMEMO)
        g->containers[g->ncontainers++] = i;
}

static void dict(gen *g, int depth)
{
    if (u8(g) & 1)
        op(g, '}');
    else
        ordered_dict(g);
    if (u8(g) & 1)
        container_memo(g); /* before it is filled: a value inside may be it */
    unsigned n = u8(g) % 6, batched = u8(g) & 1;
    if (batched && n)
        op(g, '(');
    for (unsigned i = 0; i < n; i++) {
        key(g);
        value(g, depth + 1);
        if (!batched)
            op(g, 's');
    }
    if (batched && n)
        op(g, 'u');
}

static void value(gen *g, int depth)
{
    if (--g->budget <= 0 || depth > 6) {
        op(g, 'N');
        return;
    }
    unsigned c = u8(g) % 10;
    if (c == 7 && g->ntensors) {
        memo_get(g, g->tensors[u8(g) % (unsigned)g->ntensors]);
        return;
    }
    if (c == 8 && g->ncontainers) {
        memo_get(g, g->containers[u8(g) % (unsigned)g->ncontainers]);
        return;
    }
    switch (c) {
    case 4:
        dict(g, depth);
        return;
    case 5: { /* list */
        op(g, ']');
        if (u8(g) & 1)
            container_memo(g);
        unsigned n = u8(g) % 5;
        op(g, '(');
        for (unsigned i = 0; i < n; i++)
            value(g, depth + 1);
        op(g, 'e');
        return;
    }
    case 6: { /* tuple */
        unsigned n = u8(g) % 4;
        op(g, '(');
        for (unsigned i = 0; i < n; i++)
            value(g, depth + 1);
        op(g, 't');
        return;
    }
    case 9: /* a leaf that is not a tensor */
        switch (u8(g) % 4) {
        case 0:
            op_int(g, pick(g));
            return;
        case 1:
            op_cstr(g, "cpu");
            return;
        case 2:
            op(g, 0x88);
            return;
        default:
            op(g, 'N');
            return;
        }
    default:
        tensor(g);
        if (u8(g) & 1) {
            uint32_t i = memoize(g);
            if (g->ntensors < NMEMO)
                g->tensors[g->ntensors++] = i;
        }
        return;
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    gen g;
    memset(&g, 0, sizeof g);
    g.p = data;
    g.end = data + size;
    g.proto = u8(&g) & 1 ? 4 : 2;
    g.budget = 64;
    g.nstor = 1 + (int)(u8(&g) % NSTOR);
    size_t sizes[NSTOR];
    for (int i = 0; i < g.nstor; i++) {
        g.st[i].type = (int)(u8(&g) % (sizeof types / sizeof types[0]));
        unsigned c = u8(&g);
        g.st[i].numel = c < 200 ? (int64_t)(c % 64) : pick(&g);
        g.st[i].pid_memo = -1;
        size_t es = types[g.st[i].type].es;
        uint64_t want = (uint64_t)g.st[i].numel * es;
        unsigned m = u8(&g) % 8; /* mostly right; else short, long or empty */
        size_t rec = g.st[i].numel >= 0 && want <= 16384 ? (size_t)want : 16;
        sizes[i] = m == 5 && rec ? rec - 1 : m == 6 ? rec + es : m == 7 ? 0 : rec;
    }
    op(&g, 0x80);
    op(&g, (unsigned)g.proto);
    if (g.proto >= 4) {
        op(&g, 0x95); /* FRAME: a length hint only */
        fb_le(&g.pk, 0, 8);
    }
    dict(&g, 0);
    op(&g, '.');

    fzip z;
    memset(&z, 0, sizeof z);
    fz_torch(&z, g.pk.b, g.pk.n, sizes, g.nstor);
    free(g.pk.b);
    const char *p = fuzz_write("g.pt", z.out.b, z.out.n);
    fz_free(&z);
    st_file *f = NULL;
    dora_err err;
    err.msg[0] = '\0';
    if (pt_open(&f, p, &err) == 0) {
        for (size_t i = 0; i < f->ntensors; i++) { /* every byte of every view */
            const dora_tensor *t = &f->tensors[i];
            if (t->nbytes != t->numel * dora_dtype_size(t->dtype) || (t->nbytes && !t->data))
                abort();
            volatile unsigned char sink = 0;
            for (uint64_t b = 0; b < t->nbytes; b++)
                sink ^= t->data[b];
            (void)sink;
        }
        st_close(f);
    } else if (!err.msg[0]) {
        abort(); /* a failure must say why */
    }
    return 0;
}
