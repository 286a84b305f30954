/* pickle_globals.c - the globals a state dict needs (and nothing else), and
 * what calling them builds: tensors from _rebuild_tensor_v2, storages from
 * persistent ids. See formats/pickle_int.h. */
#define _POSIX_C_SOURCE 200809L
#include "formats/pickle_int.h"

#include <stdio.h>
#include <string.h>

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

/* A placeholder for the global MOD.NAME, outside the allow-list: its name is
 * kept once (k->ph) for the notes and errors; it is never called. */
static pv *placeholder(pk *k, const char *mod, size_t modlen, const char *name, size_t namelen)
{
    char m[512], nm[512], full[1100];
    snprintf(full, sizeof full, "%s.%s", shown(m, sizeof m, mod, modlen),
             shown(nm, sizeof nm, name, namelen));
    size_t i = 0;
    while (i < k->nph && strcmp(k->ph[i], full) != 0)
        i++;
    if (i == k->nph) {
        if (k->nph == PK_MAX_PLACEHOLDERS) {
            pk_fail(k, "more than 256 distinct globals outside the allow-list");
            return NULL;
        }
        size_t n = strlen(full) + 1;
        char *q = pk_alloc(k, n);
        if (!q)
            return NULL;
        memcpy(q, full, n);
        k->ph[k->nph++] = q;
    }
    pv *v = pk_mk(k, PV_GLOBAL);
    if (v) {
        v->u.glob.g = G_PLACEHOLDER;
        v->u.glob.ph = (uint32_t)i;
    }
    return v;
}

/* The globals a state dict needs; any other is a placeholder. MOD and NAME (MODLEN,
 * NAMELEN bytes) must match exactly. */
pv *pk_resolve_global(pk *k, const char *mod, size_t modlen, const char *name,
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
        pk_fail(k, msg);
        return NULL;
    }
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (strlen(allowed[i].mod) == modlen && memcmp(mod, allowed[i].mod, modlen) == 0 &&
            strlen(allowed[i].name) == namelen && memcmp(name, allowed[i].name, namelen) == 0) {
            pv *v = pk_mk(k, PV_GLOBAL);
            if (v) {
                v->u.glob.g = allowed[i].g;
                v->u.glob.dt = allowed[i].dt;
            }
            return v;
        }
    return placeholder(k, mod, modlen, name, namelen);
}

/* ---------------------------------------------------------------- tensors */

static int as_int(pk *k, const pv *v, int64_t *out, const char *what)
{
    if (!v || (v->k != PV_INT && v->k != PV_BOOL)) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s is not an integer", what);
        return pk_fail(k, msg);
    }
    *out = v->u.i;
    return 0;
}

static int int_tuple(pk *k, const pv *v, int64_t *out, int *n, const char *what)
{
    char msg[128];
    if (!v || v->k != PV_TUPLE) {
        snprintf(msg, sizeof msg, "%s is not a tuple", what);
        return pk_fail(k, msg);
    }
    if (v->u.seq.n > DORA_MAX_DIMS) {
        snprintf(msg, sizeof msg, "%s has %zu dims, over the limit of %d", what, v->u.seq.n,
                 DORA_MAX_DIMS);
        return pk_fail(k, msg);
    }
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (as_int(k, v->u.seq.v[i], &out[i], what) != 0)
            return -1;
        if (out[i] < 0) {
            snprintf(msg, sizeof msg, "%s holds a negative value", what);
            return pk_fail(k, msg);
        }
    }
    *n = (int)v->u.seq.n;
    return 0;
}

/* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) */
static pv *rebuild_tensor(pk *k, const pv *args)
{
    if (args->u.seq.n < 4) {
        pk_fail(k, "_rebuild_tensor_v2 with fewer than 4 arguments");
        return NULL;
    }
    pv *st = args->u.seq.v[0];
    if (st->k != PV_STORAGE) {
        pk_fail(k, "_rebuild_tensor_v2: first argument is not a storage");
        return NULL;
    }
    int64_t offset = 0, shape[DORA_MAX_DIMS], stride[DORA_MAX_DIMS];
    int ndim = 0, nst = 0;
    if (as_int(k, args->u.seq.v[1], &offset, "tensor storage offset") != 0 ||
        int_tuple(k, args->u.seq.v[2], shape, &ndim, "tensor size") != 0 ||
        int_tuple(k, args->u.seq.v[3], stride, &nst, "tensor stride") != 0)
        return NULL;
    if (nst != ndim) {
        pk_fail(k, "tensor size and stride differ in length");
        return NULL;
    }
    if (offset < 0) {
        pk_fail(k, "negative tensor storage offset");
        return NULL;
    }
    pv *t = pk_mk(k, PV_TENSOR);
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
    pk_hold(st);
    return t;
}

/* REDUCE / NEWOBJ: apply an allowed callable to an argument tuple. The result
 * is a new value or one of the arguments (lent, not held). A chain of
 * _rebuild_from_type_v2 is followed in a loop, at most PK_MAX_DEPTH long. */
pv *pk_apply(pk *k, const pv *fn, const pv *args)
{
    for (int depth = 0;; depth++) {
        if (depth > PK_MAX_DEPTH) {
            pk_fail(k, "_rebuild_from_type_v2 nested deeper than the limit of 1000");
            return NULL;
        }
        if (fn->k != PV_GLOBAL) {
            pk_fail(k, "REDUCE on something that is not an allowed global");
            return NULL;
        }
        if (args->k != PV_TUPLE) {
            pk_fail(k, "REDUCE arguments are not a tuple");
            return NULL;
        }
        const size_t n = args->u.seq.n;
        switch (fn->u.glob.g) {
        case G_ORDERED_DICT:
            if (n != 0) {
                pk_fail(k, "OrderedDict() with arguments");
                return NULL;
            }
            return pk_mk(k, PV_DICT);
        case G_REBUILD_TENSOR_V2:
            return rebuild_tensor(k, args);
        case G_REBUILD_PARAMETER:
        case G_REBUILD_PARAMETER_STATE:
            if (n < 1 || args->u.seq.v[0]->k != PV_TENSOR) {
                pk_fail(k, "_rebuild_parameter without a tensor");
                return NULL;
            }
            return args->u.seq.v[0];
        case G_REBUILD_FROM_TYPE_V2: /* (func, new_type, args, state): func(*args) */
            if (n < 3 || args->u.seq.v[1]->k != PV_GLOBAL ||
                args->u.seq.v[1]->u.glob.g != G_TENSOR_TYPE) {
                pk_fail(k, "_rebuild_from_type_v2 with a type other than torch.Tensor/Parameter");
                return NULL;
            }
            fn = args->u.seq.v[0];
            args = args->u.seq.v[2];
            continue;
        case G_PLACEHOLDER: { /* an object of a class outside the allow-list: not built */
            pv *o = pk_mk(k, PV_OPAQUE);
            if (o)
                o->u.glob.ph = fn->u.glob.ph;
            return o;
        }
        case G_TENSOR_TYPE: /* Parameter(data, requires_grad) */
            if (n >= 1 && args->u.seq.v[0]->k == PV_TENSOR)
                return args->u.seq.v[0];
            pk_fail(k, "torch.Tensor/Parameter called without a tensor");
            return NULL;
        default:
            pk_fail(k, "a storage class cannot be called");
            return NULL;
        }
    }
}

/* BINPERSID: ('storage', StorageType, key, location, numel) */
pv *pk_persistent(pk *k, const pv *pid)
{
    if (pid->k != PV_TUPLE || pid->u.seq.n < 5 || pid->u.seq.v[0]->k != PV_STR ||
        pid->u.seq.v[0]->u.str.n != 7 || memcmp(pid->u.seq.v[0]->u.str.s, "storage", 7) != 0) {
        pk_fail(k, "persistent id is not ('storage', type, key, location, numel)");
        return NULL;
    }
    const pv *type = pid->u.seq.v[1], *key = pid->u.seq.v[2];
    if (type->k == PV_GLOBAL && type->u.glob.g == G_PLACEHOLDER) {
        char msg[700];
        snprintf(msg, sizeof msg, "storage type '%s' is not one this tool reads",
                 k->ph[type->u.glob.ph]);
        pk_fail(k, msg);
        return NULL;
    }
    if (type->k != PV_GLOBAL || type->u.glob.g != G_STORAGE_TYPE) {
        pk_fail(k, "persistent id names no storage type");
        return NULL;
    }
    if (key->k != PV_STR || key->u.str.n == 0 || key->u.str.n > 64 ||
        strspn(key->u.str.s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
            key->u.str.n) {
        pk_fail(k, "storage key is not a short alphanumeric name");
        return NULL;
    }
    int64_t numel = 0;
    if (as_int(k, pid->u.seq.v[4], &numel, "storage size") != 0)
        return NULL;
    if (numel < 0) {
        pk_fail(k, "negative storage size");
        return NULL;
    }
    pv *s = pk_mk(k, PV_STORAGE);
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
