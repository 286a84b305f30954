/* pickle.c - the restricted pickle interpreter's public side; see
 * include/dora/pickle.h. The values and the opcodes are in the other
 * pickle_*.c files (formats/pickle_int.h).
 *
 * The result is turned into the tensor list in three passes: count the tensor
 * paths below each container (each visited once; a cycle or a nesting deeper
 * than PK_MAX_DEPTH is an error) and the distinct tensors; refuse a graph whose
 * paths outnumber the tensors (see pickle.h); then name the paths into one
 * buffer, and refuse two equal names.
 */
#define _POSIX_C_SOURCE 200809L
#include "formats/pickle_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        return pk_fail(c->k, "the object contains itself (a cycle through the memo)");
    if (v->walk == 2) {
        *out = v->paths;
        return 0;
    }
    if (depth >= PK_MAX_DEPTH)
        return pk_fail(c->k, "object nested deeper than the limit of 1000");
    v->walk = 1;
    size_t sum = 0, nc = nchildren(v);
    for (size_t i = 0; i < nc; i++) {
        const pv *key;
        pv *child = (pv *)child_of(v, i, &key);
        if (key && key->k == PV_STR && strlen(key->u.str.s) != key->u.str.n)
            return pk_fail(c->k, "a dict key holds a NUL byte");
        size_t p = 0;
        if (child && count_paths(c, child, depth + 1, &p) != 0)
            return -1;
        sum += p;
        if (sum > PK_MAX_TENSORS) {
            char msg[160];
            snprintf(msg, sizeof msg, "the object names more than %u tensors, the limit",
                     PK_MAX_TENSORS);
            return pk_fail(c->k, msg);
        }
    }
    v->walk = 2;
    v->paths = (uint32_t)sum;
    *out = sum;
    return 0;
}

/* A state dict (a dict holding a tensor directly) whose key K holds an object
 * of a class outside the allow-list is an error naming K and the class: the
 * object would stand where a weight is expected. C->name holds V's path. */
static int opaque_beside_tensor(collector *c, const pv *v, size_t len)
{
    const pv *opaque = NULL, *okey = NULL;
    int tensor = 0;
    for (size_t i = 0; i < v->u.dict.n; i++) {
        const pv *key;
        const pv *child = child_of(v, i, &key);
        if (!child)
            continue;
        tensor |= child->k == PV_TENSOR;
        if (child->k == PV_OPAQUE && !opaque) {
            opaque = child;
            okey = key;
        }
    }
    if (!tensor || !opaque)
        return 0;
    char msg[1400], kn[64];
    const char *ks = kn;
    if (okey->k == PV_STR)
        ks = okey->u.str.s;
    else
        snprintf(kn, sizeof kn, "%lld", (long long)okey->u.i);
    snprintf(msg, sizeof msg, "'%.*s%s%.200s' is an object of %s beside tensors, not a tensor "
             "(the class is outside the allow-list; nothing was called)",
             (int)(len > 400 ? 400 : len), c->name, len ? "." : "", ks,
             c->k->ph[opaque->u.glob.ph]);
    return pk_fail(c->k, msg);
}

/* Pass 2: name each tensor path below V; c->name holds the LEN bytes of V's
 * path. */
static int name_paths(collector *c, const pv *v, size_t len, int depth)
{
    if (++c->visits > PK_MAX_OBJECTS)
        return pk_fail(c->k, "object graph larger than the limit (shared sub-objects?)");
    if (v->k == PV_TENSOR) {
        if (c->n == c->cap)
            return pk_fail(c->k, "more tensor paths than counted"); /* cannot happen */
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
        return pk_fail(c->k, "object nested deeper than the limit of 1000");
    if (v->k == PV_DICT && opaque_beside_tensor(c, v, len) != 0)
        return -1;
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
            return pk_fail(c->k, msg);
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
            rc = pk_fail(c->k, msg);
        }
    pk_free(c->k, order, c->n * sizeof *order);
    return rc;
}

static int collect(collector *c, pv *root)
{
    size_t paths = 0;
    if (root->k == PV_OPAQUE) {
        char msg[700];
        snprintf(msg, sizeof msg, "the saved object is a %s, not a dict of tensors (save "
                 "model.state_dict(), not the model; nothing was called)",
                 c->k->ph[root->u.glob.ph]);
        return pk_fail(c->k, msg);
    }
    if (count_paths(c, root, 0, &paths) != 0)
        return -1;
    if (paths > PK_NAMES_PER_TENSOR * c->distinct + PK_NAMES_SLACK) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "the object names %zu tensors but holds only %zu distinct ones: shared "
                 "sub-objects repeat them (the limit is %u names per tensor + %u)",
                 paths, c->distinct, PK_NAMES_PER_TENSOR, PK_NAMES_SLACK);
        return pk_fail(c->k, msg);
    }
    if (paths && !(c->v = pk_grow(c->k, NULL, 0, paths, sizeof *c->v)))
        return -1;
    c->cap = paths;
    c->name[0] = '\0';
    if (name_paths(c, root, 0, 0) != 0)
        return -1;
    if (c->n == 0 && c->k->nph > 0) {
        char msg[700];
        snprintf(msg, sizeof msg, "no tensor, only objects of classes outside the allow-list "
                 "(%s%s; nothing was called)", c->k->ph[0], c->k->nph > 1 ? ", ..." : "");
        return pk_fail(c->k, msg);
    }
    return unique_names(c);
}

/* The top-level integer under "global_step" (Lightning), or -1. */
static int64_t root_global_step(const pv *root)
{
    if (root->k != PV_DICT)
        return -1;
    for (size_t i = 0; i < root->u.dict.n; i++) {
        const pv *key = root->u.dict.kv[2 * i], *val = root->u.dict.kv[2 * i + 1];
        if (key->k == PV_STR && key->u.str.n == 11 && memcmp(key->u.str.s, "global_step", 11) == 0)
            return val->k == PV_INT && val->u.i >= 0 ? val->u.i : -1;
    }
    return -1;
}

/* The placeholder names and the global step into X (copies, malloc'd). */
static int give_extras(pk *k, const pv *root, pk_extras *x)
{
    x->global_step = root ? root_global_step(root) : -1;
    x->nglobals = 0;
    if (!(x->globals = calloc(k->nph ? k->nph : 1, sizeof *x->globals)))
        return dora_errf(k->err, "pickle: out of memory");
    for (size_t i = 0; i < k->nph; i++, x->nglobals++)
        if (!(x->globals[i] = strdup(k->ph[i])))
            return dora_errf(k->err, "pickle: out of memory");
    return 0;
}

void pk_extras_free(pk_extras *x)
{
    for (size_t i = 0; x && x->globals && i < x->nglobals; i++)
        free(x->globals[i]);
    if (x)
        free(x->globals);
}

int pk_load_tensors(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                    dora_err *err)
{
    return pk_load_tensors_ex(data, len, out, n, NULL, err);
}

int pk_load_tensors_ex(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                       pk_extras *x, dora_err *err)
{
    if (x)
        memset(x, 0, sizeof *x);
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
    int rc = c ? pk_run(k, &root) : dora_errf(err, "pickle: out of memory");
    if (rc == 0) {
        /* only what the result reaches is needed now: the memo's and the stack's
         * references go first, and with them what only they held (argument
         * tuples, persistent ids), before the tensor list is allocated */
        for (size_t i = 0; i < k->nmemo; i++)
            pk_release(k, k->memo[i]);
        pk_free(k, k->memo, k->nmemo * sizeof *k->memo);
        k->memo = NULL;
        k->nmemo = 0;
        while (k->sp)
            pk_release(k, k->stack[--k->sp]);
        c->k = k;
        rc = collect(c, root);
        if (rc == 0 && x && give_extras(k, root, x) != 0) {
            pk_extras_free(x);
            memset(x, 0, sizeof *x);
            rc = -1;
        }
    }
    for (size_t i = 0; i < k->nph; i++)
        pk_free(k, k->ph[i], strlen(k->ph[i]) + 1);
    pk_free(k, k->stack, k->cap * sizeof *k->stack);
    pk_free(k, k->memo, k->nmemo * sizeof *k->memo);
    pk_free_all(k);
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
