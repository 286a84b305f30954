/* pickle_int.h - what the files of the pickle interpreter share inside formats/:
 * pickle_values.c (the values, their memory and the dicts), pickle_globals.c (the
 * allowed globals and what calling them builds), pickle_run.c (the stack, the
 * memo and the opcodes) and pickle.c (the tensor list and the public API of
 * include/dora/pickle.h).
 *
 * Values live in slabs of PK_SLAB slots. Each value counts the references to
 * it (from the stack, the memo, containers and tensors); when the count falls
 * to zero the value and what only it held are freed at once, without
 * recursion, and their slots go to a free list for reuse. What is left at the
 * end (the result, and cycles made through the memo) is freed slab by slab.
 * None, the booleans and the integers 0..255 are shared constants. Every
 * allocation is counted against the memory limit of the pickle (pk.limit).
 *
 * Errors: a function returning int gives 0 or -1, one returning a pointer
 * NULL on failure; either way k->err already says what failed (pk_fail).
 */
#ifndef DORA_PICKLE_INT_H
#define DORA_PICKLE_INT_H

#include "dora/pickle.h"

#include <stddef.h>
#include <stdint.h>

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
    PV_TENSOR,
    PV_OPAQUE /* what calling a placeholder global made: inert, its state ignored */
} pv_kind;

typedef enum glob {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_PARAMETER,
    G_REBUILD_PARAMETER_STATE,
    G_REBUILD_FROM_TYPE_V2,
    G_TENSOR_TYPE,    /* torch.Tensor, torch.nn.Parameter: only as new_type */
    G_STORAGE_TYPE,   /* torch.*Storage: only inside a persistent id */
    G_PLACEHOLDER,    /* any other global: never called; calling it makes a PV_OPAQUE */
} glob;

#define PK_MAX_PLACEHOLDERS 256 /* distinct globals outside the allow-list */

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
            uint32_t ph;   /* placeholders and opaque values: index in pk.ph */
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
    char *ph[PK_MAX_PLACEHOLDERS]; /* "module.name" of each placeholder global (pk_alloc) */
    size_t nph;
    dora_err *err;
} pk;

/* ---------------------------------------------------------------- pickle_values.c */

/* Fill k->err with "pickle: WHAT (at byte N)"; returns -1. */
int pk_fail(pk *k, const char *what);

/* malloc / free counted against k->limit (an error past it). pk_free wants the
 * size that was allocated (NULL is fine); pk_grow resizes P from OLD_N to N
 * elements of size ES, overflow checked, and keeps P on failure. */
void *pk_alloc(pk *k, size_t n);
void pk_free(pk *k, void *p, size_t n);
void *pk_grow(pk *k, void *p, size_t old_n, size_t n, size_t es);

/* A new value of KIND, zeroed, with no references yet (at most PK_MAX_OBJECTS). */
pv *pk_mk(pk *k, pv_kind kind);
/* Take one reference to V (shared constants are not counted). */
void pk_hold(pv *v);
/* Drop one reference to V (NULL is fine); free it, and what it alone held,
 * when none is left. Iterative: a chain of any length is freed in constant
 * stack. */
void pk_release(pk *k, pv *v);
/* Free every value left, whatever its count (cycles, values of a failed run). */
void pk_free_all(pk *k);

/* Append V to the tuple or list S; takes over the caller's reference. */
int pk_seq_add(pk *k, pv *s, pv *v);
/* A new tuple or list of the N values at V, taking over their references. */
pv *pk_mkseq(pk *k, pv_kind kind, pv *const *v, size_t n);
/* d[key] = val, taking over the caller's references to both. A repeated key
 * replaces the value and keeps the first key object, as in Python. */
int pk_dict_set(pk *k, pv *d, pv *key, pv *val);

/* A string of the N bytes at S (a copy, NUL-terminated). */
pv *pk_mkstr(pk *k, const unsigned char *s, size_t n);
/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF): 1 if so. */
int pk_utf8_ok(const unsigned char *s, size_t n);
/* The integer I (0..255 shared). */
pv *pk_mkint(pk *k, int64_t i);

/* ---------------------------------------------------------------- pickle_globals.c */

/* The global MOD.NAME (MODLEN, NAMELEN bytes, matched exactly) if it is one a
 * state dict needs; any other becomes an inert placeholder (G_PLACEHOLDER,
 * its name kept in k->ph), never called. A name holding a NUL byte, or more
 * than PK_MAX_PLACEHOLDERS distinct ones, is refused. */
pv *pk_resolve_global(pk *k, const char *mod, size_t modlen, const char *name,
                      size_t namelen);
/* REDUCE / NEWOBJ: apply the allowed callable FN to the argument tuple ARGS.
 * The result is a new value or one of the arguments (lent, not held); for a
 * placeholder, a new PV_OPAQUE (nothing is called). */
pv *pk_apply(pk *k, const pv *fn, const pv *args);
/* BINPERSID: the storage of the persistent id PID, a new value. */
pv *pk_persistent(pk *k, const pv *pid);

/* ---------------------------------------------------------------- pickle_run.c */

/* Interpret from k->p to STOP; *result gets the stack's reference to the
 * value STOP pops. The stack and the memo keep theirs (the caller frees). */
int pk_run(pk *k, pv **result);

#endif
