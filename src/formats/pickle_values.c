/* pickle_values.c - the values of the pickle interpreter: their slabs and
 * reference counts, the memory budget every allocation is counted against,
 * the dicts (keys hashed as Python compares them) and the scalars. See
 * formats/pickle_int.h. */
#define _POSIX_C_SOURCE 200809L
#include "formats/pickle_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int pk_fail(pk *k, const char *what)
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
    return pk_fail(k, msg);
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
        pk_fail(k, "out of memory");
        return NULL;
    }
    k->used = k->used - was + cost(n);
    return q;
}

void *pk_alloc(pk *k, size_t n)
{
    return pk_realloc(k, NULL, 0, n);
}

void pk_free(pk *k, void *p, size_t n)
{
    if (p) {
        k->used -= cost(n);
        free(p);
    }
}

/* n elements of size es, with overflow checked */
void *pk_grow(pk *k, void *p, size_t old_n, size_t n, size_t es)
{
    if (n > SIZE_MAX / es) {
        over_limit(k);
        return NULL;
    }
    return pk_realloc(k, p, old_n * es, n * es);
}

/* ---------------------------------------------------------------- values */

pv *pk_mk(pk *k, pv_kind kind)
{
    if (k->nobj >= PK_MAX_OBJECTS) {
        pk_fail(k, "more objects than the limit");
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

void pk_hold(pv *v)
{
    if (!v->fixed)
        v->rc++;
}

/* Drop one reference to V (NULL is fine); free it, and what it alone held,
 * when none is left. Iterative: a chain of any length is freed in constant
 * stack. */
void pk_release(pk *k, pv *v)
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
void pk_free_all(pk *k)
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

/* Append V to the tuple or list S; takes over the caller's reference. */
int pk_seq_add(pk *k, pv *s, pv *v)
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
pv *pk_mkseq(pk *k, pv_kind kind, pv *const *v, size_t n)
{
    pv *s = pk_mk(k, kind);
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
int pk_dict_set(pk *k, pv *d, pv *key, pv *val)
{
    if (d->k != PV_DICT)
        return pk_fail(k, "SETITEM on something that is not a dict");
    if (hashable(key)) {
        int64_t e = dict_find(d, key);
        if (e >= 0) {
            pv *old = d->u.dict.kv[2 * e + 1];
            d->u.dict.kv[2 * e + 1] = val;
            pk_release(k, old);
            pk_release(k, key);
            return 0;
        }
    }
    if (d->u.dict.n == d->u.dict.cap) {
        if (d->u.dict.cap >= (1u << 30))
            return pk_fail(k, "a dict larger than the limit");
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

pv *pk_mkstr(pk *k, const unsigned char *s, size_t n)
{
    pv *v = pk_mk(k, PV_STR);
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
int pk_utf8_ok(const unsigned char *s, size_t n)
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

pv *pk_mkint(pk *k, int64_t i)
{
    if (i >= 0 && i < 256)
        return &k->small[i];
    pv *v = pk_mk(k, PV_INT);
    if (v)
        v->u.i = i;
    return v;
}
