/* pickle.c - the restricted pickle interpreter; see include/dora/pickle.h.
 *
 * Values live in one arena list and are freed together. The interpreter keeps
 * a value stack, a stack of MARK positions and a memo; every count read from
 * the file is checked against the bytes left and the limits in pickle.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "dora/pickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum pv_kind {
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_FLOAT,
    PV_STR, /* unicode or bytes: only compared and used as names */
    PV_TUPLE,
    PV_LIST,
    PV_DICT,
    PV_GLOBAL,
    PV_STORAGE,
    PV_TENSOR
} pv_kind;

typedef enum glob {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_PARAMETER,
    G_REBUILD_PARAMETER_STATE,
    G_REBUILD_FROM_TYPE_V2,
    G_TENSOR_TYPE,    /* torch.Tensor, torch.nn.Parameter: only as new_type */
    G_STORAGE_TYPE,   /* torch.*Storage: only inside a persistent id */
} glob;

typedef struct pv pv;
struct pv {
    pv_kind k;
    pv *all; /* arena chain */
    union {
        int64_t i;
        double f;
        struct {
            char *s;
            size_t n;
        } str;
        struct {
            pv **v;
            size_t n, cap;
        } seq; /* tuple, list */
        struct {
            pv **key, **val;
            size_t n, cap;
        } dict;
        struct {
            glob g;
            dora_dtype dt; /* storages */
        } glob;
        struct {
            char *key;
            dora_dtype dt;
            int64_t numel;
        } storage;
        struct {
            pv *storage;
            int64_t offset;
            int ndim;
            int64_t shape[DORA_MAX_DIMS], stride[DORA_MAX_DIMS];
        } tensor;
    } u;
};

typedef struct pk {
    const unsigned char *p, *end, *start;
    pv **stack;
    size_t sp, cap;
    size_t marks[PK_MAX_MARKS];
    size_t nmarks;
    pv **memo;
    size_t nmemo;    /* slots allocated */
    size_t memo_len; /* slots set: MEMOIZE stores at this index, as len(memo) */
    pv *all;
    size_t nobj;
    dora_err *err;
} pk;

static int fail(pk *k, const char *what)
{
    return dora_errf(k->err, "pickle: %s (at byte %zu)", what, (size_t)(k->p - k->start));
}

static pv *mk(pk *k, pv_kind kind)
{
    if (k->nobj >= PK_MAX_OBJECTS) {
        fail(k, "more objects than the limit");
        return NULL;
    }
    pv *v = calloc(1, sizeof *v);
    if (!v) {
        fail(k, "out of memory");
        return NULL;
    }
    v->k = kind;
    v->all = k->all;
    k->all = v;
    k->nobj++;
    return v;
}

static void free_all(pv *v)
{
    while (v) {
        pv *next = v->all;
        switch (v->k) {
        case PV_STR:
            free(v->u.str.s);
            break;
        case PV_TUPLE:
        case PV_LIST:
            free(v->u.seq.v);
            break;
        case PV_DICT:
            free(v->u.dict.key);
            free(v->u.dict.val);
            break;
        case PV_STORAGE:
            free(v->u.storage.key);
            break;
        default:
            break;
        }
        free(v);
        v = next;
    }
}

static int push(pk *k, pv *v)
{
    if (!v)
        return -1;
    if (k->sp == k->cap) {
        if (k->cap >= PK_MAX_STACK)
            return fail(k, "stack deeper than the limit");
        size_t nc = k->cap ? 2 * k->cap : 64;
        pv **ns = realloc(k->stack, nc * sizeof *ns);
        if (!ns)
            return fail(k, "out of memory");
        k->stack = ns;
        k->cap = nc;
    }
    k->stack[k->sp++] = v;
    return 0;
}

static pv *pop(pk *k)
{
    size_t floor = k->nmarks ? k->marks[k->nmarks - 1] : 0;
    if (k->sp <= floor) {
        fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[--k->sp];
}

static pv *top(pk *k)
{
    size_t floor = k->nmarks ? k->marks[k->nmarks - 1] : 0;
    if (k->sp <= floor) {
        fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[k->sp - 1];
}

static int need(pk *k, size_t n)
{
    return (size_t)(k->end - k->p) >= n ? 0 : fail(k, "truncated");
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int seq_add(pk *k, pv *s, pv *v)
{
    if (s->u.seq.n == s->u.seq.cap) {
        size_t nc = s->u.seq.cap ? 2 * s->u.seq.cap : 4;
        pv **nv = realloc(s->u.seq.v, nc * sizeof *nv);
        if (!nv)
            return fail(k, "out of memory");
        s->u.seq.v = nv;
        s->u.seq.cap = nc;
    }
    s->u.seq.v[s->u.seq.n++] = v;
    return 0;
}

static int dict_set(pk *k, pv *d, pv *key, pv *val)
{
    if (d->k != PV_DICT)
        return fail(k, "SETITEM on something that is not a dict");
    /* a repeated string key replaces the value, as in Python */
    if (key->k == PV_STR)
        for (size_t i = 0; i < d->u.dict.n; i++) {
            pv *o = d->u.dict.key[i];
            if (o->k == PV_STR && o->u.str.n == key->u.str.n &&
                memcmp(o->u.str.s, key->u.str.s, key->u.str.n) == 0) {
                d->u.dict.val[i] = val;
                return 0;
            }
        }
    if (d->u.dict.n == d->u.dict.cap) {
        size_t nc = d->u.dict.cap ? 2 * d->u.dict.cap : 8;
        pv **nk = realloc(d->u.dict.key, nc * sizeof *nk);
        if (!nk)
            return fail(k, "out of memory");
        d->u.dict.key = nk;
        pv **nv = realloc(d->u.dict.val, nc * sizeof *nv);
        if (!nv)
            return fail(k, "out of memory");
        d->u.dict.val = nv;
        d->u.dict.cap = nc;
    }
    d->u.dict.key[d->u.dict.n] = key;
    d->u.dict.val[d->u.dict.n++] = val;
    return 0;
}

static pv *mkstr(pk *k, const unsigned char *s, size_t n)
{
    pv *v = mk(k, PV_STR);
    if (!v)
        return NULL;
    v->u.str.s = malloc(n + 1);
    if (!v->u.str.s) {
        fail(k, "out of memory");
        return NULL;
    }
    memcpy(v->u.str.s, s, n);
    v->u.str.s[n] = '\0';
    v->u.str.n = n;
    return v;
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF), as Python
 * requires of the unicode opcodes. */
static int utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static pv *mkint(pk *k, int64_t i)
{
    pv *v = mk(k, PV_INT);
    if (v)
        v->u.i = i;
    return v;
}

/* The globals a state dict needs, and nothing else. */
static pv *resolve_global(pk *k, const char *mod, const char *name)
{
    static const struct {
        const char *mod, *name;
        glob g;
        dora_dtype dt;
    } allowed[] = {
        {"collections", "OrderedDict", G_ORDERED_DICT, DORA_DT_INVALID},
        {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, DORA_DT_INVALID},
        {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, DORA_DT_INVALID},
        {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAMETER_STATE,
         DORA_DT_INVALID},
        {"torch._tensor", "_rebuild_from_type_v2", G_REBUILD_FROM_TYPE_V2, DORA_DT_INVALID},
        {"torch", "Tensor", G_TENSOR_TYPE, DORA_DT_INVALID},
        {"torch.nn.parameter", "Parameter", G_TENSOR_TYPE, DORA_DT_INVALID},
        {"torch", "FloatStorage", G_STORAGE_TYPE, DORA_DT_F32},
        {"torch", "HalfStorage", G_STORAGE_TYPE, DORA_DT_F16},
        {"torch", "BFloat16Storage", G_STORAGE_TYPE, DORA_DT_BF16},
        {"torch", "DoubleStorage", G_STORAGE_TYPE, DORA_DT_F64},
        {"torch", "LongStorage", G_STORAGE_TYPE, DORA_DT_I64},
        {"torch", "IntStorage", G_STORAGE_TYPE, DORA_DT_I32},
        {"torch", "ShortStorage", G_STORAGE_TYPE, DORA_DT_I16},
        {"torch", "CharStorage", G_STORAGE_TYPE, DORA_DT_I8},
        {"torch", "ByteStorage", G_STORAGE_TYPE, DORA_DT_U8},
        {"torch", "BoolStorage", G_STORAGE_TYPE, DORA_DT_BOOL},
        {"torch", "UntypedStorage", G_STORAGE_TYPE, DORA_DT_U8},
    };
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (strcmp(mod, allowed[i].mod) == 0 && strcmp(name, allowed[i].name) == 0) {
            pv *v = mk(k, PV_GLOBAL);
            if (v) {
                v->u.glob.g = allowed[i].g;
                v->u.glob.dt = allowed[i].dt;
            }
            return v;
        }
    char msg[1024];
    snprintf(msg, sizeof msg,
             "refused global '%.200s.%.200s': only the globals of a plain state dict "
             "(collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch typed storages, "
             "...) are allowed, nothing is executed",
             mod, name);
    fail(k, msg);
    return NULL;
}

static int as_int(pk *k, const pv *v, int64_t *out, const char *what)
{
    if (!v || (v->k != PV_INT && v->k != PV_BOOL)) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s is not an integer", what);
        return fail(k, msg);
    }
    *out = v->u.i;
    return 0;
}

static int int_tuple(pk *k, const pv *v, int64_t *out, int *n, const char *what)
{
    char msg[128];
    if (!v || v->k != PV_TUPLE) {
        snprintf(msg, sizeof msg, "%s is not a tuple", what);
        return fail(k, msg);
    }
    if (v->u.seq.n > DORA_MAX_DIMS) {
        snprintf(msg, sizeof msg, "%s has %zu dims, over the limit of %d", what, v->u.seq.n,
                 DORA_MAX_DIMS);
        return fail(k, msg);
    }
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (as_int(k, v->u.seq.v[i], &out[i], what) != 0)
            return -1;
        if (out[i] < 0) {
            snprintf(msg, sizeof msg, "%s holds a negative value", what);
            return fail(k, msg);
        }
    }
    *n = (int)v->u.seq.n;
    return 0;
}

/* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) */
static pv *rebuild_tensor(pk *k, const pv *args)
{
    if (args->u.seq.n < 4) {
        fail(k, "_rebuild_tensor_v2 with fewer than 4 arguments");
        return NULL;
    }
    const pv *st = args->u.seq.v[0];
    if (st->k != PV_STORAGE) {
        fail(k, "_rebuild_tensor_v2: first argument is not a storage");
        return NULL;
    }
    pv *t = mk(k, PV_TENSOR);
    if (!t)
        return NULL;
    int nst = 0;
    t->u.tensor.storage = (pv *)st;
    if (as_int(k, args->u.seq.v[1], &t->u.tensor.offset, "tensor storage offset") != 0 ||
        int_tuple(k, args->u.seq.v[2], t->u.tensor.shape, &t->u.tensor.ndim, "tensor size") != 0 ||
        int_tuple(k, args->u.seq.v[3], t->u.tensor.stride, &nst, "tensor stride") != 0)
        return NULL;
    if (nst != t->u.tensor.ndim) {
        fail(k, "tensor size and stride differ in length");
        return NULL;
    }
    if (t->u.tensor.offset < 0) {
        fail(k, "negative tensor storage offset");
        return NULL;
    }
    return t;
}

/* REDUCE / NEWOBJ: apply an allowed callable to an argument tuple. */
static pv *apply(pk *k, const pv *fn, const pv *args)
{
    if (fn->k != PV_GLOBAL) {
        fail(k, "REDUCE on something that is not an allowed global");
        return NULL;
    }
    if (args->k != PV_TUPLE) {
        fail(k, "REDUCE arguments are not a tuple");
        return NULL;
    }
    const size_t n = args->u.seq.n;
    switch (fn->u.glob.g) {
    case G_ORDERED_DICT:
        if (n != 0) {
            fail(k, "OrderedDict() with arguments");
            return NULL;
        }
        return mk(k, PV_DICT);
    case G_REBUILD_TENSOR_V2:
        return rebuild_tensor(k, args);
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_STATE:
        if (n < 1 || args->u.seq.v[0]->k != PV_TENSOR) {
            fail(k, "_rebuild_parameter without a tensor");
            return NULL;
        }
        return args->u.seq.v[0];
    case G_REBUILD_FROM_TYPE_V2: /* (func, new_type, args, state) */
        if (n < 3 || args->u.seq.v[1]->k != PV_GLOBAL ||
            args->u.seq.v[1]->u.glob.g != G_TENSOR_TYPE) {
            fail(k, "_rebuild_from_type_v2 with a type other than torch.Tensor/Parameter");
            return NULL;
        }
        return apply(k, args->u.seq.v[0], args->u.seq.v[2]);
    case G_TENSOR_TYPE: /* Parameter(data, requires_grad) */
        if (n >= 1 && args->u.seq.v[0]->k == PV_TENSOR)
            return args->u.seq.v[0];
        fail(k, "torch.Tensor/Parameter called without a tensor");
        return NULL;
    default:
        fail(k, "a storage class cannot be called");
        return NULL;
    }
}

/* BINPERSID: ('storage', StorageType, key, location, numel) */
static pv *persistent(pk *k, const pv *pid)
{
    if (pid->k != PV_TUPLE || pid->u.seq.n < 5 || pid->u.seq.v[0]->k != PV_STR ||
        strcmp(pid->u.seq.v[0]->u.str.s, "storage") != 0) {
        fail(k, "persistent id is not ('storage', type, key, location, numel)");
        return NULL;
    }
    const pv *type = pid->u.seq.v[1], *key = pid->u.seq.v[2];
    if (type->k != PV_GLOBAL || type->u.glob.g != G_STORAGE_TYPE) {
        fail(k, "persistent id names no storage type");
        return NULL;
    }
    if (key->k != PV_STR || key->u.str.n == 0 || key->u.str.n > 64 ||
        strspn(key->u.str.s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
            key->u.str.n) {
        fail(k, "storage key is not a short alphanumeric name");
        return NULL;
    }
    pv *s = mk(k, PV_STORAGE);
    if (!s)
        return NULL;
    if (as_int(k, pid->u.seq.v[4], &s->u.storage.numel, "storage size") != 0)
        return NULL;
    if (s->u.storage.numel < 0) {
        fail(k, "negative storage size");
        return NULL;
    }
    if (!(s->u.storage.key = strdup(key->u.str.s))) {
        fail(k, "out of memory");
        return NULL;
    }
    s->u.storage.dt = type->u.glob.dt;
    return s;
}

static int memo_put(pk *k, size_t idx, pv *v)
{
    if (!v)
        return -1;
    if (idx >= PK_MAX_MEMO)
        return fail(k, "memo index over the limit");
    if (idx >= k->nmemo) {
        size_t nn = idx + 1 > 2 * k->nmemo ? idx + 1 : 2 * k->nmemo;
        if (nn > PK_MAX_MEMO)
            nn = PK_MAX_MEMO;
        pv **nm = realloc(k->memo, nn * sizeof *nm);
        if (!nm)
            return fail(k, "out of memory");
        memset(nm + k->nmemo, 0, (nn - k->nmemo) * sizeof *nm);
        k->memo = nm;
        k->nmemo = nn;
    }
    if (!k->memo[idx])
        k->memo_len++;
    k->memo[idx] = v;
    return 0;
}

static int memo_get(pk *k, size_t idx)
{
    if (idx >= k->nmemo || !k->memo[idx])
        return fail(k, "memo read of an index never written");
    return push(k, k->memo[idx]);
}

/* Pop everything above the last MARK into a new tuple or list. */
static pv *from_mark(pk *k, pv_kind kind)
{
    if (k->nmarks == 0) {
        fail(k, "no MARK to collect from");
        return NULL;
    }
    size_t m = k->marks[--k->nmarks];
    pv *s = mk(k, kind);
    if (!s)
        return NULL;
    for (size_t i = m; i < k->sp; i++)
        if (seq_add(k, s, k->stack[i]) != 0)
            return NULL;
    k->sp = m;
    return s;
}

static int run(pk *k, pv **result)
{
    for (;;) {
        if (need(k, 1) != 0)
            return -1;
        unsigned char op = *k->p++;
        pv *a, *b, *c, *v;
        uint64_t n;
        switch (op) {
        case 0x80: /* PROTO */
            if (need(k, 1) != 0)
                return -1;
            if (*k->p > 5)
                return fail(k, "pickle protocol above 5");
            k->p++;
            break;
        case 0x95: /* FRAME: a length hint only */
            if (need(k, 8) != 0)
                return -1;
            k->p += 8;
            break;
        case '.': /* STOP */
            if (!(*result = pop(k)))
                return -1;
            return 0;
        case '(': /* MARK */
            if (k->nmarks >= PK_MAX_MARKS)
                return fail(k, "nesting deeper than the limit");
            k->marks[k->nmarks++] = k->sp;
            break;
        case '}': /* EMPTY_DICT */
            if (push(k, mk(k, PV_DICT)) != 0)
                return -1;
            break;
        case ']': /* EMPTY_LIST */
            if (push(k, mk(k, PV_LIST)) != 0)
                return -1;
            break;
        case ')': /* EMPTY_TUPLE */
            if (push(k, mk(k, PV_TUPLE)) != 0)
                return -1;
            break;
        case 't': /* TUPLE */
            if (push(k, from_mark(k, PV_TUPLE)) != 0)
                return -1;
            break;
        case 'l': /* LIST */
            if (push(k, from_mark(k, PV_LIST)) != 0)
                return -1;
            break;
        case 'd': { /* DICT */
            pv *s = from_mark(k, PV_TUPLE);
            if (!s || s->u.seq.n % 2)
                return s ? fail(k, "DICT with an odd number of items") : -1;
            pv *d = mk(k, PV_DICT);
            if (!d)
                return -1;
            for (size_t i = 0; i < s->u.seq.n; i += 2)
                if (dict_set(k, d, s->u.seq.v[i], s->u.seq.v[i + 1]) != 0)
                    return -1;
            if (push(k, d) != 0)
                return -1;
            break;
        }
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: { /* TUPLE3 */
            size_t cnt = (size_t)(op - 0x84);
            pv *items[3];
            for (size_t i = 0; i < cnt; i++)
                if (!(items[cnt - 1 - i] = pop(k)))
                    return -1;
            pv *t = mk(k, PV_TUPLE);
            if (!t)
                return -1;
            for (size_t i = 0; i < cnt; i++)
                if (seq_add(k, t, items[i]) != 0)
                    return -1;
            if (push(k, t) != 0)
                return -1;
            break;
        }
        case 'a': /* APPEND */
            if (!(a = pop(k)) || !(b = top(k)))
                return -1;
            if (b->k != PV_LIST)
                return fail(k, "APPEND to something that is not a list");
            if (seq_add(k, b, a) != 0)
                return -1;
            break;
        case 'e': { /* APPENDS */
            pv *s = from_mark(k, PV_TUPLE);
            if (!s || !(b = top(k)))
                return -1;
            if (b->k != PV_LIST)
                return fail(k, "APPENDS to something that is not a list");
            for (size_t i = 0; i < s->u.seq.n; i++)
                if (seq_add(k, b, s->u.seq.v[i]) != 0)
                    return -1;
            break;
        }
        case 's': /* SETITEM */
            if (!(c = pop(k)) || !(a = pop(k)) || !(b = top(k)))
                return -1;
            if (dict_set(k, b, a, c) != 0)
                return -1;
            break;
        case 'u': { /* SETITEMS */
            pv *s = from_mark(k, PV_TUPLE);
            if (!s || !(b = top(k)))
                return -1;
            if (s->u.seq.n % 2)
                return fail(k, "SETITEMS with an odd number of items");
            for (size_t i = 0; i < s->u.seq.n; i += 2)
                if (dict_set(k, b, s->u.seq.v[i], s->u.seq.v[i + 1]) != 0)
                    return -1;
            break;
        }
        case 'q': /* BINPUT */
            if (need(k, 1) != 0 || !(v = top(k)) || memo_put(k, *k->p++, v) != 0)
                return -1;
            break;
        case 'r': /* LONG_BINPUT */
            if (need(k, 4) != 0 || !(v = top(k)))
                return -1;
            n = le(k->p, 4);
            k->p += 4;
            if (memo_put(k, (size_t)n, v) != 0)
                return -1;
            break;
        case 0x94: /* MEMOIZE */
            if (!(v = top(k)) || memo_put(k, k->memo_len, v) != 0)
                return -1;
            break;
        case 'h': /* BINGET */
            if (need(k, 1) != 0 || memo_get(k, *k->p++) != 0)
                return -1;
            break;
        case 'j': /* LONG_BINGET */
            if (need(k, 4) != 0)
                return -1;
            n = le(k->p, 4);
            k->p += 4;
            if (memo_get(k, (size_t)n) != 0)
                return -1;
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const unsigned char *nl1 = memchr(k->p, '\n', (size_t)(k->end - k->p));
            const unsigned char *nl2 =
                nl1 ? memchr(nl1 + 1, '\n', (size_t)(k->end - nl1 - 1)) : NULL;
            if (!nl2 || nl1 - k->p > 200 || nl2 - nl1 > 200)
                return fail(k, "malformed GLOBAL");
            char mod[256], name[256];
            snprintf(mod, sizeof mod, "%.*s", (int)(nl1 - k->p), (const char *)k->p);
            snprintf(name, sizeof name, "%.*s", (int)(nl2 - nl1 - 1), (const char *)(nl1 + 1));
            k->p = nl2 + 1;
            if (push(k, resolve_global(k, mod, name)) != 0)
                return -1;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(k)) || !(a = pop(k)))
                return -1;
            if (a->k != PV_STR || b->k != PV_STR)
                return fail(k, "STACK_GLOBAL without two strings");
            if (push(k, resolve_global(k, a->u.str.s, b->u.str.s)) != 0)
                return -1;
            break;
        case 'J': /* BININT */
            if (need(k, 4) != 0)
                return -1;
            n = le(k->p, 4);
            k->p += 4;
            if (push(k, mkint(k, (int32_t)(uint32_t)n)) != 0)
                return -1;
            break;
        case 'K': /* BININT1 */
            if (need(k, 1) != 0 || push(k, mkint(k, *k->p++)) != 0)
                return -1;
            break;
        case 'M': /* BININT2 */
            if (need(k, 2) != 0)
                return -1;
            n = le(k->p, 2);
            k->p += 2;
            if (push(k, mkint(k, (int64_t)n)) != 0)
                return -1;
            break;
        case 0x8a: { /* LONG1: n bytes, little-endian two's complement */
            if (need(k, 1) != 0)
                return -1;
            size_t len = *k->p++;
            if (len > 8)
                return fail(k, "integer wider than 64 bits");
            if (need(k, len) != 0)
                return -1;
            uint64_t u = len ? le(k->p, (int)len) : 0;
            if (len && len < 8 && (k->p[len - 1] & 0x80))
                u |= ~(uint64_t)0 << (8 * len);
            k->p += len;
            if (push(k, mkint(k, (int64_t)u)) != 0)
                return -1;
            break;
        }
        case 'G': { /* BINFLOAT, big-endian */
            if (need(k, 8) != 0)
                return -1;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++)
                u = (u << 8) | k->p[i];
            k->p += 8;
            pv *f = mk(k, PV_FLOAT);
            if (!f)
                return -1;
            memcpy(&f->u.f, &u, 8);
            if (push(k, f) != 0)
                return -1;
            break;
        }
        case 'N':
            if (push(k, mk(k, PV_NONE)) != 0)
                return -1;
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (!(v = mk(k, PV_BOOL)))
                return -1;
            v->u.i = op == 0x88;
            if (push(k, v) != 0)
                return -1;
            break;
        case 'X':    /* BINUNICODE */
        case 0x8c:   /* SHORT_BINUNICODE */
        case 0x8d:   /* BINUNICODE8 */
        case 'T':    /* BINSTRING */
        case 'U':    /* SHORT_BINSTRING */
        case 'B':    /* BINBYTES */
        case 'C':    /* SHORT_BINBYTES */
        case 0x8e: { /* BINBYTES8 */
            int w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            if (need(k, (size_t)w) != 0)
                return -1;
            n = le(k->p, w);
            k->p += w;
            if (op == 'T' && n > INT32_MAX)
                return fail(k, "negative string length");
            if (need(k, n) != 0)
                return -1;
            if ((op == 'X' || op == 0x8c || op == 0x8d) && !utf8_ok(k->p, (size_t)n))
                return fail(k, "a unicode string is not valid UTF-8");
            v = mkstr(k, k->p, (size_t)n);
            k->p += n;
            if (push(k, v) != 0)
                return -1;
            break;
        }
        case 'R':    /* REDUCE */
        case 0x81: { /* NEWOBJ */
            if (!(b = pop(k)) || !(a = pop(k)))
                return -1;
            if (push(k, apply(k, a, b)) != 0)
                return -1;
            break;
        }
        case 'b': /* BUILD: state on an OrderedDict (_metadata) or a tensor: ignored */
            if (!(b = pop(k)) || !(a = top(k)))
                return -1;
            if (a->k != PV_DICT && a->k != PV_TENSOR)
                return fail(k, "BUILD on something other than a dict or a tensor");
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(k)) || push(k, persistent(k, a)) != 0)
                return -1;
            break;
        case '0': /* POP */
            if (!pop(k))
                return -1;
            break;
        case '1': /* POP_MARK */
            if (k->nmarks == 0)
                return fail(k, "POP_MARK without a MARK");
            k->sp = k->marks[--k->nmarks];
            break;
        case '2': /* DUP */
            if (!(v = top(k)) || push(k, v) != 0)
                return -1;
            break;
        default: {
            char msg[96];
            snprintf(msg, sizeof msg, "unsupported opcode 0x%02x", op);
            k->p--;
            return fail(k, msg);
        }
        }
    }
}

typedef struct collector {
    pk_tensor *v;
    size_t n, cap;
    size_t visits; /* bounds the walk of a shared (DAG) object graph */
    pk *k;
} collector;

static int collect(collector *c, const pv *v, const char *prefix, int depth)
{
    if (depth > PK_MAX_MARKS)
        return fail(c->k, "object nested deeper than the limit");
    if (++c->visits > PK_MAX_OBJECTS)
        return fail(c->k, "object graph larger than the limit (shared sub-objects?)");
    if (v->k == PV_TENSOR) {
        if (c->n == c->cap) {
            size_t nc = c->cap ? 2 * c->cap : 64;
            pk_tensor *nt = realloc(c->v, nc * sizeof *nt);
            if (!nt)
                return fail(c->k, "out of memory");
            c->v = nt;
            c->cap = nc;
        }
        pk_tensor *t = &c->v[c->n];
        memset(t, 0, sizeof *t);
        const pv *st = v->u.tensor.storage;
        t->name = strdup(prefix);
        t->storage_key = strdup(st->u.storage.key);
        c->n++; /* owned now, freed on failure too */
        if (!t->name || !t->storage_key)
            return fail(c->k, "out of memory");
        t->dtype = st->u.storage.dt;
        t->storage_numel = st->u.storage.numel;
        t->offset = v->u.tensor.offset;
        t->ndim = v->u.tensor.ndim;
        memcpy(t->shape, v->u.tensor.shape, sizeof t->shape);
        memcpy(t->stride, v->u.tensor.stride, sizeof t->stride);
        return 0;
    }
    size_t count = v->k == PV_DICT ? v->u.dict.n
                   : (v->k == PV_LIST || v->k == PV_TUPLE) ? v->u.seq.n
                                                            : 0;
    for (size_t i = 0; i < count; i++) {
        char key[64];
        const char *part;
        const pv *child;
        if (v->k == PV_DICT) {
            const pv *kv = v->u.dict.key[i];
            child = v->u.dict.val[i];
            if (kv->k == PV_STR) {
                if (strlen(kv->u.str.s) != kv->u.str.n)
                    return fail(c->k, "a dict key holds a NUL byte");
                part = kv->u.str.s;
            } else if (kv->k == PV_INT) {
                snprintf(key, sizeof key, "%lld", (long long)kv->u.i);
                part = key;
            } else {
                continue; /* other keys cannot name a tensor */
            }
        } else {
            child = v->u.seq.v[i];
            snprintf(key, sizeof key, "%zu", i);
            part = key;
        }
        size_t len = strlen(prefix) + strlen(part) + 2;
        char *name = malloc(len);
        if (!name)
            return fail(c->k, "out of memory");
        snprintf(name, len, "%s%s%s", prefix, *prefix ? "." : "", part);
        int r = collect(c, child, name, depth + 1);
        free(name);
        if (r != 0)
            return -1;
    }
    return 0;
}

int pk_load_tensors(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                    dora_err *err)
{
    *out = NULL;
    *n = 0;
    pk k;
    memset(&k, 0, sizeof k);
    k.p = k.start = data;
    k.end = data + len;
    k.err = err;
    pv *root = NULL;
    collector c = {NULL, 0, 0, 0, &k};
    int rc = run(&k, &root);
    if (rc == 0)
        rc = collect(&c, root, "", 0);
    free(k.stack);
    free(k.memo);
    free_all(k.all);
    if (rc != 0) {
        pk_tensors_free(c.v, c.n);
        return -1;
    }
    *out = c.v;
    *n = c.n;
    return 0;
}

void pk_tensors_free(pk_tensor *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        free(t[i].name);
        free(t[i].storage_key);
    }
    free(t);
}
