/* pickle.c - the restricted pickle interpreter; see include/dora/pickle.h.
 *
 * Values live in slabs of PK_SLAB slots. Each value counts the references to
 * it (from the stack, the memo, containers and tensors); when the count falls
 * to zero the value and what only it held are freed at once, without
 * recursion, and their slots go to a free list for reuse. What is left at the
 * end (the result, and cycles made through the memo) is freed slab by slab.
 * None, the booleans and the integers 0..255 are shared constants. Every
 * allocation is counted against the memory limit of the pickle (pk.limit).
 *
 * The result is turned into the tensor list in three passes: count the tensor
 * paths below each container (each visited once; a cycle or a nesting deeper
 * than PK_MAX_DEPTH is an error) and the distinct tensors; refuse a graph whose
 * paths outnumber the tensors (see pickle.h); then name the paths into one
 * buffer, and refuse two equal names.
 */
#define _POSIX_C_SOURCE 200809L
#include "dora/pickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum pv_kind {
    PV_FREE, /* a slot on the free list */
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

/* offset, shape and strides of a tensor: d[0..ndim) the shape, d[ndim..2 ndim)
 * the strides */
typedef struct pk_view {
    int64_t offset;
    int ndim;
    int64_t d[];
} pk_view;

typedef struct pv pv;
struct pv {
    unsigned char k;     /* pv_kind */
    unsigned char fixed; /* a shared constant: not counted, never freed */
    unsigned char walk;  /* collecting: 0 not seen, 1 on the current path, 2 done */
    uint32_t rc;         /* references held to it */
    uint32_t paths;      /* collecting: tensor paths below (containers) */
    pv *link;            /* the free list; the list of values being freed */
    union {
        int64_t i; /* ints and booleans */
        double f;
        struct {
            char *s; /* NUL-terminated, may hold NULs */
            size_t n;
        } str;
        struct {
            pv **v;
            size_t n, cap;
        } seq; /* tuple, list */
        struct {
            pv **kv;         /* key i at kv[2i], its value at kv[2i+1] */
            uint32_t *index; /* hashed keys (1 + entry, 0 free); when cap > 8 */
            uint32_t n, cap; /* the index has 2 cap slots */
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
            pk_view *view;
        } tensor;
    } u;
};

#define PK_SLAB 1024
typedef struct slab {
    struct slab *next;
    pv v[PK_SLAB];
} slab;

typedef struct pk {
    const unsigned char *p, *end, *start;
    pv **stack;
    size_t sp, cap;
    size_t marks[PK_MAX_MARKS];
    size_t nmarks;
    pv **memo;
    size_t nmemo;    /* slots allocated */
    size_t memo_len; /* slots set: MEMOIZE stores at this index, as len(memo) */
    slab *slabs;
    pv *free; /* free slots */
    size_t nobj;
    size_t used, limit; /* bytes allocated, and the most allowed */
    pv none, yes, no, small[256];
    dora_err *err;
} pk;

static int fail(pk *k, const char *what)
{
    return dora_errf(k->err, "pickle: %s (at byte %zu)", what, (size_t)(k->p - k->start));
}

/* ---------------------------------------------------------------- memory */

static size_t cost(size_t n)
{
    return n + PK_MEM_OVERHEAD;
}

static int over_limit(pk *k)
{
    char msg[256];
    snprintf(msg, sizeof msg,
             "the objects need more than %zu MiB of memory, the limit for a pickle of %zu "
             "bytes (%u bytes per byte + %u MiB, at most %llu MiB)",
             k->limit >> 20, (size_t)(k->end - k->start), PK_MEM_PER_BYTE, PK_MEM_BASE >> 20,
             PK_MEM_MAX >> 20);
    return fail(k, msg);
}

/* malloc / realloc / free that count against k->limit. pk_realloc keeps P on
 * failure; pk_free wants the size that was allocated. */
static void *pk_realloc(pk *k, void *p, size_t old, size_t n)
{
    size_t was = p ? cost(old) : 0;
    if (n > k->limit || cost(n) > k->limit - (k->used - was)) {
        over_limit(k);
        return NULL;
    }
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fail(k, "out of memory");
        return NULL;
    }
    k->used = k->used - was + cost(n);
    return q;
}

static void *pk_alloc(pk *k, size_t n)
{
    return pk_realloc(k, NULL, 0, n);
}

static void pk_free(pk *k, void *p, size_t n)
{
    if (p) {
        k->used -= cost(n);
        free(p);
    }
}

/* n elements of size es, with overflow checked */
static void *pk_grow(pk *k, void *p, size_t old_n, size_t n, size_t es)
{
    if (n > SIZE_MAX / es) {
        over_limit(k);
        return NULL;
    }
    return pk_realloc(k, p, old_n * es, n * es);
}

/* ---------------------------------------------------------------- values */

static pv *mk(pk *k, pv_kind kind)
{
    if (k->nobj >= PK_MAX_OBJECTS) {
        fail(k, "more objects than the limit");
        return NULL;
    }
    if (!k->free) {
        slab *s = pk_alloc(k, sizeof *s);
        if (!s)
            return NULL;
        s->next = k->slabs;
        k->slabs = s;
        for (size_t i = 0; i < PK_SLAB; i++) {
            s->v[i].k = PV_FREE;
            s->v[i].link = i + 1 < PK_SLAB ? &s->v[i + 1] : NULL;
        }
        k->free = &s->v[0];
    }
    pv *v = k->free;
    k->free = v->link;
    memset(v, 0, sizeof *v);
    v->k = (unsigned char)kind;
    k->nobj++;
    return v;
}

/* Free what V owns besides its references (strings, arrays). */
static void payload_free(pk *k, pv *v)
{
    switch (v->k) {
    case PV_STR:
        pk_free(k, v->u.str.s, v->u.str.n + 1);
        break;
    case PV_TUPLE:
    case PV_LIST:
        pk_free(k, v->u.seq.v, v->u.seq.cap * sizeof *v->u.seq.v);
        break;
    case PV_DICT:
        pk_free(k, v->u.dict.kv, (size_t)v->u.dict.cap * 2 * sizeof *v->u.dict.kv);
        pk_free(k, v->u.dict.index, (size_t)v->u.dict.cap * 2 * sizeof *v->u.dict.index);
        break;
    case PV_STORAGE:
        pk_free(k, v->u.storage.key, strlen(v->u.storage.key) + 1);
        break;
    case PV_TENSOR:
        pk_free(k, v->u.tensor.view,
                sizeof *v->u.tensor.view + 2 * (size_t)v->u.tensor.view->ndim * sizeof(int64_t));
        break;
    default:
        break;
    }
}

static void hold(pv *v)
{
    if (!v->fixed)
        v->rc++;
}

/* Drop one reference to V (NULL is fine); free it, and what it alone held,
 * when none is left. Iterative: a chain of any length is freed in constant
 * stack. */
static void release(pk *k, pv *v)
{
    if (!v || v->fixed || --v->rc > 0)
        return;
    v->link = NULL;
    pv *todo = v;
    while (todo) {
        pv *x = todo;
        todo = x->link;
        pv **child = NULL;
        size_t nchild = 0;
        if (x->k == PV_TUPLE || x->k == PV_LIST) {
            child = x->u.seq.v;
            nchild = x->u.seq.n;
        } else if (x->k == PV_DICT) {
            child = x->u.dict.kv;
            nchild = 2 * (size_t)x->u.dict.n;
        } else if (x->k == PV_TENSOR) {
            child = &x->u.tensor.storage;
            nchild = 1;
        }
        for (size_t i = 0; i < nchild; i++) {
            pv *c = child[i];
            if (!c->fixed && --c->rc == 0) {
                c->link = todo;
                todo = c;
            }
        }
        payload_free(k, x);
        x->k = PV_FREE;
        x->link = k->free;
        k->free = x;
    }
}

/* Free every value left, whatever its count (cycles, values of a failed run). */
static void free_all(pk *k)
{
    slab *s = k->slabs;
    while (s) {
        slab *next = s->next;
        for (size_t i = 0; i < PK_SLAB; i++)
            if (s->v[i].k != PV_FREE)
                payload_free(k, &s->v[i]);
        pk_free(k, s, sizeof *s);
        s = next;
    }
    k->slabs = NULL;
    k->free = NULL;
}

/* The stack holds one reference to each of its values: push takes a new one,
 * pop hands the stack's reference to the caller, top lends it. */
static int push(pk *k, pv *v)
{
    if (!v)
        return -1;
    if (k->sp == k->cap) {
        if (k->cap >= PK_MAX_STACK)
            return fail(k, "stack deeper than the limit");
        size_t nc = k->cap ? 2 * k->cap : 64;
        pv **ns = pk_grow(k, k->stack, k->cap, nc, sizeof *ns);
        if (!ns)
            return -1;
        k->stack = ns;
        k->cap = nc;
    }
    hold(v);
    k->stack[k->sp++] = v;
    return 0;
}

static size_t floor_of(const pk *k)
{
    return k->nmarks ? k->marks[k->nmarks - 1] : 0;
}

static pv *pop(pk *k)
{
    if (k->sp <= floor_of(k)) {
        fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[--k->sp];
}

static pv *top(pk *k)
{
    if (k->sp <= floor_of(k)) {
        fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[k->sp - 1];
}

/* Pop the last MARK into *m: the values above it are stack[*m .. sp). */
static int pop_mark(pk *k, size_t *m)
{
    if (k->nmarks == 0)
        return fail(k, "no MARK to collect from");
    *m = k->marks[--k->nmarks];
    return 0;
}

/* The value just below a popped MARK at M (the list or dict of APPENDS and
 * SETITEMS), lent. */
static pv *below_mark(pk *k, size_t m)
{
    if (m <= floor_of(k)) {
        fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[m - 1];
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

/* Append V to the tuple or list S; takes over the caller's reference. */
static int seq_add(pk *k, pv *s, pv *v)
{
    if (s->u.seq.n == s->u.seq.cap) {
        size_t nc = s->u.seq.cap ? 2 * s->u.seq.cap : 4;
        pv **nv = pk_grow(k, s->u.seq.v, s->u.seq.cap, nc, sizeof *nv);
        if (!nv)
            return -1;
        s->u.seq.v = nv;
        s->u.seq.cap = nc;
    }
    s->u.seq.v[s->u.seq.n++] = v;
    return 0;
}

/* A new tuple or list of the N values at V, taking over their references. */
static pv *mkseq(pk *k, pv_kind kind, pv *const *v, size_t n)
{
    pv *s = mk(k, kind);
    if (!s)
        return NULL;
    if (n) {
        if (!(s->u.seq.v = pk_grow(k, NULL, 0, n, sizeof *s->u.seq.v)))
            return NULL;
        memcpy(s->u.seq.v, v, n * sizeof *v);
        s->u.seq.n = s->u.seq.cap = n;
    }
    return s;
}

/* ---------------------------------------------------------------- dicts */

/* Keys compared as Python would for the keys a state dict has: strings by
 * their bytes, integers and booleans by value. Other keys are never equal to
 * anything (none of them can name a tensor). */
static int hashable(const pv *key)
{
    return key->k == PV_STR || key->k == PV_INT || key->k == PV_BOOL;
}

static uint64_t key_hash(const pv *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    if (key->k == PV_STR) {
        for (size_t i = 0; i < key->u.str.n; i++)
            h = (h ^ (unsigned char)key->u.str.s[i]) * 1099511628211ull;
        return h;
    }
    h ^= (uint64_t)key->u.i;
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static int key_eq(const pv *a, const pv *b)
{
    if (a->k == PV_STR || b->k == PV_STR)
        return a->k == b->k && a->u.str.n == b->u.str.n &&
               memcmp(a->u.str.s, b->u.str.s, a->u.str.n) == 0;
    return a->u.i == b->u.i;
}

static void index_insert(pv *d, uint32_t entry)
{
    size_t mask = 2 * (size_t)d->u.dict.cap - 1;
    size_t h = (size_t)key_hash(d->u.dict.kv[2 * (size_t)entry]) & mask;
    while (d->u.dict.index[h])
        h = (h + 1) & mask;
    d->u.dict.index[h] = entry + 1;
}

/* The entry of KEY in D, or -1. */
static int64_t dict_find(const pv *d, const pv *key)
{
    if (!d->u.dict.index) {
        for (size_t i = 0; i < d->u.dict.n; i++)
            if (hashable(d->u.dict.kv[2 * i]) && key_eq(d->u.dict.kv[2 * i], key))
                return (int64_t)i;
        return -1;
    }
    size_t mask = 2 * (size_t)d->u.dict.cap - 1;
    for (size_t h = (size_t)key_hash(key) & mask; d->u.dict.index[h]; h = (h + 1) & mask) {
        uint32_t e = d->u.dict.index[h] - 1;
        if (hashable(d->u.dict.kv[2 * (size_t)e]) && key_eq(d->u.dict.kv[2 * (size_t)e], key))
            return e;
    }
    return -1;
}

/* d[key] = val, taking over the caller's references to both. A repeated key
 * replaces the value and keeps the first key object, as in Python. */
static int dict_set(pk *k, pv *d, pv *key, pv *val)
{
    if (d->k != PV_DICT)
        return fail(k, "SETITEM on something that is not a dict");
    if (hashable(key)) {
        int64_t e = dict_find(d, key);
        if (e >= 0) {
            pv *old = d->u.dict.kv[2 * e + 1];
            d->u.dict.kv[2 * e + 1] = val;
            release(k, old);
            release(k, key);
            return 0;
        }
    }
    if (d->u.dict.n == d->u.dict.cap) {
        if (d->u.dict.cap >= (1u << 30))
            return fail(k, "a dict larger than the limit");
        uint32_t nc = d->u.dict.cap ? 2 * d->u.dict.cap : 8;
        uint32_t *ni = NULL; /* past 8 entries, an index of twice the entries */
        if (nc > 8 && !(ni = pk_grow(k, NULL, 0, 2 * (size_t)nc, sizeof *ni)))
            return -1;
        pv **nkv = pk_grow(k, d->u.dict.kv, 2 * (size_t)d->u.dict.cap, 2 * (size_t)nc,
                           sizeof *nkv);
        if (!nkv) {
            pk_free(k, ni, 2 * (size_t)nc * sizeof *ni);
            return -1;
        }
        pk_free(k, d->u.dict.index, 2 * (size_t)d->u.dict.cap * sizeof *ni);
        d->u.dict.kv = nkv;
        d->u.dict.index = ni;
        d->u.dict.cap = nc;
        if (ni) {
            memset(ni, 0, 2 * (size_t)nc * sizeof *ni);
            for (uint32_t i = 0; i < d->u.dict.n; i++)
                if (hashable(d->u.dict.kv[2 * (size_t)i]))
                    index_insert(d, i);
        }
    }
    uint32_t e = d->u.dict.n++;
    d->u.dict.kv[2 * (size_t)e] = key;
    d->u.dict.kv[2 * (size_t)e + 1] = val;
    if (d->u.dict.index && hashable(key))
        index_insert(d, e);
    return 0;
}

/* ---------------------------------------------------------------- scalars */

static pv *mkstr(pk *k, const unsigned char *s, size_t n)
{
    pv *v = mk(k, PV_STR);
    if (!v)
        return NULL;
    if (n == SIZE_MAX || !(v->u.str.s = pk_alloc(k, n + 1))) {
        v->k = PV_NONE; /* nothing to free */
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
    if (i >= 0 && i < 256)
        return &k->small[i];
    pv *v = mk(k, PV_INT);
    if (v)
        v->u.i = i;
    return v;
}

/* ---------------------------------------------------------------- globals */

/* S (N bytes, not NUL-terminated) for a message: at most 120 bytes of it,
 * bytes outside printable ASCII as \xNN. */
static const char *shown(char *out, size_t size, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < 120 && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
    }
    if (n > 120 && o + 4 < size) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* The globals a state dict needs, and nothing else. MOD and NAME (MODLEN,
 * NAMELEN bytes) must match exactly. */
static pv *resolve_global(pk *k, const char *mod, size_t modlen, const char *name,
                          size_t namelen)
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
    char msg[1024], m[512], nm[512];
    if (memchr(mod, '\0', modlen) || memchr(name, '\0', namelen)) {
        snprintf(msg, sizeof msg, "refused global '%s.%s': its module or name holds a NUL byte",
                 shown(m, sizeof m, mod, modlen), shown(nm, sizeof nm, name, namelen));
        fail(k, msg);
        return NULL;
    }
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (strlen(allowed[i].mod) == modlen && memcmp(mod, allowed[i].mod, modlen) == 0 &&
            strlen(allowed[i].name) == namelen && memcmp(name, allowed[i].name, namelen) == 0) {
            pv *v = mk(k, PV_GLOBAL);
            if (v) {
                v->u.glob.g = allowed[i].g;
                v->u.glob.dt = allowed[i].dt;
            }
            return v;
        }
    snprintf(msg, sizeof msg,
             "refused global '%s.%s': only the globals of a plain state dict "
             "(collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch typed storages, "
             "...) are allowed, nothing is executed",
             shown(m, sizeof m, mod, modlen), shown(nm, sizeof nm, name, namelen));
    fail(k, msg);
    return NULL;
}

/* ---------------------------------------------------------------- tensors */

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
    pv *st = args->u.seq.v[0];
    if (st->k != PV_STORAGE) {
        fail(k, "_rebuild_tensor_v2: first argument is not a storage");
        return NULL;
    }
    int64_t offset = 0, shape[DORA_MAX_DIMS], stride[DORA_MAX_DIMS];
    int ndim = 0, nst = 0;
    if (as_int(k, args->u.seq.v[1], &offset, "tensor storage offset") != 0 ||
        int_tuple(k, args->u.seq.v[2], shape, &ndim, "tensor size") != 0 ||
        int_tuple(k, args->u.seq.v[3], stride, &nst, "tensor stride") != 0)
        return NULL;
    if (nst != ndim) {
        fail(k, "tensor size and stride differ in length");
        return NULL;
    }
    if (offset < 0) {
        fail(k, "negative tensor storage offset");
        return NULL;
    }
    pv *t = mk(k, PV_TENSOR);
    if (!t)
        return NULL;
    pk_view *w = pk_alloc(k, sizeof *w + 2 * (size_t)ndim * sizeof(int64_t));
    if (!w) {
        t->k = PV_NONE; /* nothing to free */
        return NULL;
    }
    w->offset = offset;
    w->ndim = ndim;
    memcpy(w->d, shape, (size_t)ndim * sizeof *shape);
    memcpy(w->d + ndim, stride, (size_t)ndim * sizeof *stride);
    t->u.tensor.view = w;
    t->u.tensor.storage = st;
    hold(st);
    return t;
}

/* REDUCE / NEWOBJ: apply an allowed callable to an argument tuple. The result
 * is a new value or one of the arguments (lent, not held). A chain of
 * _rebuild_from_type_v2 is followed in a loop, at most PK_MAX_DEPTH long. */
static pv *apply(pk *k, const pv *fn, const pv *args)
{
    for (int depth = 0;; depth++) {
        if (depth > PK_MAX_DEPTH) {
            fail(k, "_rebuild_from_type_v2 nested deeper than the limit of 1000");
            return NULL;
        }
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
        case G_REBUILD_FROM_TYPE_V2: /* (func, new_type, args, state): func(*args) */
            if (n < 3 || args->u.seq.v[1]->k != PV_GLOBAL ||
                args->u.seq.v[1]->u.glob.g != G_TENSOR_TYPE) {
                fail(k, "_rebuild_from_type_v2 with a type other than torch.Tensor/Parameter");
                return NULL;
            }
            fn = args->u.seq.v[0];
            args = args->u.seq.v[2];
            continue;
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
}

/* BINPERSID: ('storage', StorageType, key, location, numel) */
static pv *persistent(pk *k, const pv *pid)
{
    if (pid->k != PV_TUPLE || pid->u.seq.n < 5 || pid->u.seq.v[0]->k != PV_STR ||
        pid->u.seq.v[0]->u.str.n != 7 || memcmp(pid->u.seq.v[0]->u.str.s, "storage", 7) != 0) {
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
    int64_t numel = 0;
    if (as_int(k, pid->u.seq.v[4], &numel, "storage size") != 0)
        return NULL;
    if (numel < 0) {
        fail(k, "negative storage size");
        return NULL;
    }
    pv *s = mk(k, PV_STORAGE);
    if (!s)
        return NULL;
    if (!(s->u.storage.key = pk_alloc(k, key->u.str.n + 1))) {
        s->k = PV_NONE; /* nothing to free */
        return NULL;
    }
    memcpy(s->u.storage.key, key->u.str.s, key->u.str.n + 1);
    s->u.storage.numel = numel;
    s->u.storage.dt = type->u.glob.dt;
    return s;
}

/* ---------------------------------------------------------------- memo */

/* memo[idx] = v: the memo holds its own reference. */
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
        pv **nm = pk_grow(k, k->memo, k->nmemo, nn, sizeof *nm);
        if (!nm)
            return -1;
        memset(nm + k->nmemo, 0, (nn - k->nmemo) * sizeof *nm);
        k->memo = nm;
        k->nmemo = nn;
    }
    pv *old = k->memo[idx];
    if (!old)
        k->memo_len++;
    hold(v);
    k->memo[idx] = v;
    release(k, old);
    return 0;
}

static int memo_get(pk *k, size_t idx)
{
    if (idx >= k->nmemo || !k->memo[idx])
        return fail(k, "memo read of an index never written");
    return push(k, k->memo[idx]);
}

/* ---------------------------------------------------------------- opcodes */

/* TUPLE, LIST: the values above the last MARK into a new tuple or list. */
static int collect_mark(pk *k, pv_kind kind)
{
    size_t m = 0;
    if (pop_mark(k, &m) != 0)
        return -1;
    pv *s = mkseq(k, kind, k->sp > m ? k->stack + m : NULL, k->sp - m);
    if (!s)
        return -1;
    k->sp = m; /* their references are the tuple's now */
    return push(k, s);
}

/* GLOBAL "module\nname\n": each line at most 200 bytes */
static int op_global(pk *k)
{
    size_t left = (size_t)(k->end - k->p);
    const unsigned char *nl1 = memchr(k->p, '\n', left < 201 ? left : 201);
    const unsigned char *nl2 = NULL;
    if (nl1) {
        left = (size_t)(k->end - nl1 - 1);
        nl2 = memchr(nl1 + 1, '\n', left < 201 ? left : 201);
    }
    if (!nl2)
        return fail(k, "malformed GLOBAL");
    const char *mod = (const char *)k->p, *name = (const char *)(nl1 + 1);
    size_t modlen = (size_t)(nl1 - k->p), namelen = (size_t)(nl2 - nl1 - 1);
    k->p = nl2 + 1;
    return push(k, resolve_global(k, mod, modlen, name, namelen));
}

static int run(pk *k, pv **result)
{
    for (;;) {
        if (need(k, 1) != 0)
            return -1;
        unsigned char op = *k->p++;
        pv *a, *b, *c, *v;
        uint64_t n;
        size_t m = 0;
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
        case '.': /* STOP: the caller gets the stack's reference */
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
            if (collect_mark(k, PV_TUPLE) != 0)
                return -1;
            break;
        case 'l': /* LIST */
            if (collect_mark(k, PV_LIST) != 0)
                return -1;
            break;
        case 'd': { /* DICT */
            if (pop_mark(k, &m) != 0)
                return -1;
            if ((k->sp - m) % 2)
                return fail(k, "DICT with an odd number of items");
            pv *d = mk(k, PV_DICT);
            if (!d)
                return -1;
            for (size_t i = m; i < k->sp; i += 2)
                if (dict_set(k, d, k->stack[i], k->stack[i + 1]) != 0)
                    return -1;
            k->sp = m;
            if (push(k, d) != 0)
                return -1;
            break;
        }
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: { /* TUPLE3 */
            size_t cnt = (size_t)(op - 0x84);
            if (k->sp < floor_of(k) + cnt)
                return fail(k, "stack underflow");
            pv *t = mkseq(k, PV_TUPLE, k->stack + k->sp - cnt, cnt);
            if (!t)
                return -1;
            k->sp -= cnt;
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
        case 'e': /* APPENDS */
            if (pop_mark(k, &m) != 0 || !(b = below_mark(k, m)))
                return -1;
            if (b->k != PV_LIST)
                return fail(k, "APPENDS to something that is not a list");
            for (size_t i = m; i < k->sp; i++)
                if (seq_add(k, b, k->stack[i]) != 0)
                    return -1;
            k->sp = m;
            break;
        case 's': /* SETITEM */
            if (!(c = pop(k)) || !(a = pop(k)) || !(b = top(k)))
                return -1;
            if (dict_set(k, b, a, c) != 0)
                return -1;
            break;
        case 'u': /* SETITEMS */
            if (pop_mark(k, &m) != 0 || !(b = below_mark(k, m)))
                return -1;
            if ((k->sp - m) % 2)
                return fail(k, "SETITEMS with an odd number of items");
            for (size_t i = m; i < k->sp; i += 2)
                if (dict_set(k, b, k->stack[i], k->stack[i + 1]) != 0)
                    return -1;
            k->sp = m;
            break;
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
        case 'c': /* GLOBAL */
            if (op_global(k) != 0)
                return -1;
            break;
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(k)) || !(a = pop(k)))
                return -1;
            if (a->k != PV_STR || b->k != PV_STR)
                return fail(k, "STACK_GLOBAL without two strings");
            if (push(k, resolve_global(k, a->u.str.s, a->u.str.n, b->u.str.s, b->u.str.n)) != 0)
                return -1;
            release(k, a);
            release(k, b);
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
            if (push(k, &k->none) != 0)
                return -1;
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (push(k, op == 0x88 ? &k->yes : &k->no) != 0)
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
            /* pushed before the arguments are released: it may be one of them */
            if (push(k, apply(k, a, b)) != 0)
                return -1;
            release(k, a);
            release(k, b);
            break;
        }
        case 'b': /* BUILD: state on an OrderedDict (_metadata) or a tensor: ignored */
            if (!(b = pop(k)) || !(a = top(k)))
                return -1;
            if (a->k != PV_DICT && a->k != PV_TENSOR)
                return fail(k, "BUILD on something other than a dict or a tensor");
            release(k, b);
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(k)) || push(k, persistent(k, a)) != 0)
                return -1;
            release(k, a);
            break;
        case '0': /* POP */
            if (!(v = pop(k)))
                return -1;
            release(k, v);
            break;
        case '1': /* POP_MARK */
            if (k->nmarks == 0)
                return fail(k, "POP_MARK without a MARK");
            m = k->marks[--k->nmarks];
            while (k->sp > m)
                release(k, k->stack[--k->sp]);
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

/* ---------------------------------------------------------------- the tensor list */

static int is_container(const pv *v)
{
    return v->k == PV_DICT || v->k == PV_LIST || v->k == PV_TUPLE;
}

/* Child I of container V, and whether it can be named (a dict key that is a
 * string or an integer; every list and tuple element). */
static const pv *child_of(const pv *v, size_t i, const pv **key)
{
    if (v->k == PV_DICT) {
        *key = v->u.dict.kv[2 * i];
        return ((*key)->k == PV_STR || (*key)->k == PV_INT) ? v->u.dict.kv[2 * i + 1] : NULL;
    }
    *key = NULL;
    return v->u.seq.v[i];
}

static size_t nchildren(const pv *v)
{
    return v->k == PV_DICT ? v->u.dict.n : is_container(v) ? v->u.seq.n : 0;
}

typedef struct collector {
    pk *k;
    size_t distinct; /* tensor objects */
    size_t visits;   /* bounds the naming walk of a shared (DAG) object graph */
    pk_tensor *v;
    size_t n, cap;
    char name[PK_MAX_NAME + 1];
} collector;

/* Pass 1: V->paths = the tensor paths below container V (at most
 * PK_MAX_TENSORS + 1), each container counted once; tensors seen are counted
 * in c->distinct. Recursion at most PK_MAX_DEPTH deep. */
static int count_paths(collector *c, pv *v, int depth, size_t *out)
{
    if (v->k == PV_TENSOR) {
        if (!v->walk) {
            v->walk = 2;
            c->distinct++;
        }
        *out = 1;
        return 0;
    }
    if (!is_container(v)) {
        *out = 0;
        return 0;
    }
    if (v->walk == 1)
        return fail(c->k, "the object contains itself (a cycle through the memo)");
    if (v->walk == 2) {
        *out = v->paths;
        return 0;
    }
    if (depth >= PK_MAX_DEPTH)
        return fail(c->k, "object nested deeper than the limit of 1000");
    v->walk = 1;
    size_t sum = 0, nc = nchildren(v);
    for (size_t i = 0; i < nc; i++) {
        const pv *key;
        pv *child = (pv *)child_of(v, i, &key);
        if (key && key->k == PV_STR && strlen(key->u.str.s) != key->u.str.n)
            return fail(c->k, "a dict key holds a NUL byte");
        size_t p = 0;
        if (child && count_paths(c, child, depth + 1, &p) != 0)
            return -1;
        sum += p;
        if (sum > PK_MAX_TENSORS) {
            char msg[160];
            snprintf(msg, sizeof msg, "the object names more than %u tensors, the limit",
                     PK_MAX_TENSORS);
            return fail(c->k, msg);
        }
    }
    v->walk = 2;
    v->paths = (uint32_t)sum;
    *out = sum;
    return 0;
}

/* Pass 2: name each tensor path below V; c->name holds the LEN bytes of V's
 * path. */
static int name_paths(collector *c, const pv *v, size_t len, int depth)
{
    if (++c->visits > PK_MAX_OBJECTS)
        return fail(c->k, "object graph larger than the limit (shared sub-objects?)");
    if (v->k == PV_TENSOR) {
        if (c->n == c->cap)
            return fail(c->k, "more tensor paths than counted"); /* cannot happen */
        pk_tensor *t = &c->v[c->n];
        memset(t, 0, sizeof *t);
        const pv *st = v->u.tensor.storage;
        const pk_view *w = v->u.tensor.view;
        size_t klen = strlen(st->u.storage.key);
        t->name = pk_alloc(c->k, len + 1);
        t->storage_key = t->name ? pk_alloc(c->k, klen + 1) : NULL;
        c->n++; /* owned now, freed on failure too */
        if (!t->storage_key)
            return -1;
        memcpy(t->name, c->name, len + 1);
        memcpy(t->storage_key, st->u.storage.key, klen + 1);
        t->dtype = st->u.storage.dt;
        t->storage_numel = st->u.storage.numel;
        t->offset = w->offset;
        t->ndim = w->ndim;
        memcpy(t->shape, w->d, (size_t)w->ndim * sizeof *w->d);
        memcpy(t->stride, w->d + w->ndim, (size_t)w->ndim * sizeof *w->d);
        return 0;
    }
    if (!is_container(v) || v->paths == 0)
        return 0;
    if (depth >= PK_MAX_DEPTH) /* a shared container reached by a longer path */
        return fail(c->k, "object nested deeper than the limit of 1000");
    size_t nc = nchildren(v);
    for (size_t i = 0; i < nc; i++) {
        const pv *key;
        const pv *child = child_of(v, i, &key);
        if (!child)
            continue;
        char num[32];
        const char *part = num;
        size_t plen;
        if (key && key->k == PV_STR) {
            part = key->u.str.s;
            plen = key->u.str.n;
        } else {
            plen = (size_t)snprintf(num, sizeof num, "%lld",
                                    key ? (long long)key->u.i : (long long)i);
        }
        size_t sep = len ? 1 : 0;
        if (plen > PK_MAX_NAME - len - sep) {
            char msg[300];
            snprintf(msg, sizeof msg, "a tensor name is longer than %d bytes ('%.100s...')",
                     PK_MAX_NAME, c->name);
            return fail(c->k, msg);
        }
        if (sep)
            c->name[len] = '.';
        memcpy(c->name + len + sep, part, plen);
        c->name[len + sep + plen] = '\0';
        int r = name_paths(c, child, len + sep + plen, depth + 1);
        c->name[len] = '\0';
        if (r != 0)
            return -1;
    }
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((*(pk_tensor *const *)a)->name, (*(pk_tensor *const *)b)->name);
}

/* Pass 3: two paths may not give one name ({"a.b": T, "a": {"b": U}}). */
static int unique_names(collector *c)
{
    if (c->n < 2)
        return 0;
    pk_tensor **order = pk_grow(c->k, NULL, 0, c->n, sizeof *order);
    if (!order)
        return -1;
    for (size_t i = 0; i < c->n; i++)
        order[i] = &c->v[i];
    qsort(order, c->n, sizeof *order, name_cmp);
    int rc = 0;
    for (size_t i = 1; i < c->n && rc == 0; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "two tensors are named '%.200s' (a key holding a dot "
                     "and a nested dict, or a string and an integer key?)", order[i]->name);
            rc = fail(c->k, msg);
        }
    pk_free(c->k, order, c->n * sizeof *order);
    return rc;
}

static int collect(collector *c, pv *root)
{
    size_t paths = 0;
    if (count_paths(c, root, 0, &paths) != 0)
        return -1;
    if (paths > PK_NAMES_PER_TENSOR * c->distinct + PK_NAMES_SLACK) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "the object names %zu tensors but holds only %zu distinct ones: shared "
                 "sub-objects repeat them (the limit is %u names per tensor + %u)",
                 paths, c->distinct, PK_NAMES_PER_TENSOR, PK_NAMES_SLACK);
        return fail(c->k, msg);
    }
    if (paths && !(c->v = pk_grow(c->k, NULL, 0, paths, sizeof *c->v)))
        return -1;
    c->cap = paths;
    c->name[0] = '\0';
    if (name_paths(c, root, 0, 0) != 0)
        return -1;
    return unique_names(c);
}

int pk_load_tensors(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                    dora_err *err)
{
    *out = NULL;
    *n = 0;
    pk *k = calloc(1, sizeof *k);
    if (!k)
        return dora_errf(err, "pickle: out of memory");
    k->p = k->start = data;
    k->end = data + len;
    k->err = err;
    k->limit = len > (PK_MEM_MAX - PK_MEM_BASE) / PK_MEM_PER_BYTE
                   ? (size_t)PK_MEM_MAX
                   : (size_t)(PK_MEM_BASE + (uint64_t)len * PK_MEM_PER_BYTE);
    k->none.k = PV_NONE;
    k->yes.k = k->no.k = PV_BOOL;
    k->yes.u.i = 1;
    k->none.fixed = k->yes.fixed = k->no.fixed = 1;
    for (int i = 0; i < 256; i++) {
        k->small[i].k = PV_INT;
        k->small[i].fixed = 1;
        k->small[i].u.i = i;
    }
    collector *c = calloc(1, sizeof *c);
    pv *root = NULL;
    int rc = c ? run(k, &root) : dora_errf(err, "pickle: out of memory");
    if (rc == 0) {
        /* only what the result reaches is needed now: the memo's and the stack's
         * references go first, and with them what only they held (argument
         * tuples, persistent ids), before the tensor list is allocated */
        for (size_t i = 0; i < k->nmemo; i++)
            release(k, k->memo[i]);
        pk_free(k, k->memo, k->nmemo * sizeof *k->memo);
        k->memo = NULL;
        k->nmemo = 0;
        while (k->sp)
            release(k, k->stack[--k->sp]);
        c->k = k;
        rc = collect(c, root);
    }
    pk_free(k, k->stack, k->cap * sizeof *k->stack);
    pk_free(k, k->memo, k->nmemo * sizeof *k->memo);
    free_all(k);
    if (c && rc != 0) {
        for (size_t i = 0; i < c->n; i++) {
            free(c->v[i].name);
            free(c->v[i].storage_key);
        }
        free(c->v);
    } else if (c) {
        *out = c->v;
        *n = c->n;
    }
    free(c);
    free(k);
    return rc;
}

void pk_tensors_free(pk_tensor *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        free(t[i].name);
        free(t[i].storage_key);
    }
    free(t);
}
