/* pickle_run.c - the interpreter proper: the stack and its MARKs, the memo,
 * and the dispatch of one opcode at a time (pk_run). See
 * formats/pickle_int.h. */
#define _POSIX_C_SOURCE 200809L
#include "formats/pickle_int.h"
#include "core/le.h"

#include <stdio.h>
#include <string.h>

/* The stack holds one reference to each of its values: push takes a new one,
 * pop hands the stack's reference to the caller, top lends it. */
static int push(pk *k, pv *v)
{
    if (!v)
        return -1;
    if (k->sp == k->cap) {
        if (k->cap >= PK_MAX_STACK)
            return pk_fail(k, "stack deeper than the limit");
        size_t nc = k->cap ? 2 * k->cap : 64;
        pv **ns = pk_grow(k, k->stack, k->cap, nc, sizeof *ns);
        if (!ns)
            return -1;
        k->stack = ns;
        k->cap = nc;
    }
    pk_hold(v);
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
        pk_fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[--k->sp];
}

static pv *top(pk *k)
{
    if (k->sp <= floor_of(k)) {
        pk_fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[k->sp - 1];
}

/* Pop the last MARK into *m: the values above it are stack[*m .. sp). */
static int pop_mark(pk *k, size_t *m)
{
    if (k->nmarks == 0)
        return pk_fail(k, "no MARK to collect from");
    *m = k->marks[--k->nmarks];
    return 0;
}

/* The value just below a popped MARK at M (the list or dict of APPENDS and
 * SETITEMS), lent. */
static pv *below_mark(pk *k, size_t m)
{
    if (m <= floor_of(k)) {
        pk_fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[m - 1];
}

static int need(pk *k, size_t n)
{
    return (size_t)(k->end - k->p) >= n ? 0 : pk_fail(k, "truncated");
}

/* ---------------------------------------------------------------- memo */

/* memo[idx] = v: the memo holds its own reference. */
static int memo_put(pk *k, size_t idx, pv *v)
{
    if (!v)
        return -1;
    if (idx >= PK_MAX_MEMO)
        return pk_fail(k, "memo index over the limit");
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
    pk_hold(v);
    k->memo[idx] = v;
    pk_release(k, old);
    return 0;
}

static int memo_get(pk *k, size_t idx)
{
    if (idx >= k->nmemo || !k->memo[idx])
        return pk_fail(k, "memo read of an index never written");
    return push(k, k->memo[idx]);
}

/* ---------------------------------------------------------------- opcodes */

/* TUPLE, LIST: the values above the last MARK into a new tuple or list. */
static int collect_mark(pk *k, pv_kind kind)
{
    size_t m = 0;
    if (pop_mark(k, &m) != 0)
        return -1;
    pv *s = pk_mkseq(k, kind, k->sp > m ? k->stack + m : NULL, k->sp - m);
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
        return pk_fail(k, "malformed GLOBAL");
    const char *mod = (const char *)k->p, *name = (const char *)(nl1 + 1);
    size_t modlen = (size_t)(nl1 - k->p), namelen = (size_t)(nl2 - nl1 - 1);
    k->p = nl2 + 1;
    return push(k, pk_resolve_global(k, mod, modlen, name, namelen));
}

/* The W-byte little-endian integer at k->p, stepped over. */
static int take_le(pk *k, int w, uint64_t *n)
{
    if (need(k, (size_t)w) != 0)
        return -1;
    *n = le_load(k->p, w);
    k->p += w;
    return 0;
}

/* DICT: the key, value pairs above the last MARK into a new dict. */
static int op_dict(pk *k)
{
    size_t m = 0;
    if (pop_mark(k, &m) != 0)
        return -1;
    if ((k->sp - m) % 2)
        return pk_fail(k, "DICT with an odd number of items");
    pv *d = pk_mk(k, PV_DICT);
    if (!d)
        return -1;
    for (size_t i = m; i < k->sp; i += 2)
        if (pk_dict_set(k, d, k->stack[i], k->stack[i + 1]) != 0)
            return -1;
    k->sp = m;
    return push(k, d);
}

/* TUPLE1, TUPLE2, TUPLE3: the top CNT values into a new tuple. */
static int op_tuple_n(pk *k, size_t cnt)
{
    if (k->sp < floor_of(k) + cnt)
        return pk_fail(k, "stack underflow");
    pv *t = pk_mkseq(k, PV_TUPLE, k->stack + k->sp - cnt, cnt);
    if (!t)
        return -1;
    k->sp -= cnt;
    return push(k, t);
}

/* APPENDS: the values above the last MARK onto the list below it. */
static int op_appends(pk *k)
{
    size_t m = 0;
    pv *b;
    if (pop_mark(k, &m) != 0 || !(b = below_mark(k, m)))
        return -1;
    if (b->k != PV_LIST)
        return pk_fail(k, "APPENDS to something that is not a list");
    for (size_t i = m; i < k->sp; i++)
        if (pk_seq_add(k, b, k->stack[i]) != 0)
            return -1;
    k->sp = m;
    return 0;
}

/* SETITEMS: the key, value pairs above the last MARK into the dict below it. */
static int op_setitems(pk *k)
{
    size_t m = 0;
    pv *b;
    if (pop_mark(k, &m) != 0 || !(b = below_mark(k, m)))
        return -1;
    if ((k->sp - m) % 2)
        return pk_fail(k, "SETITEMS with an odd number of items");
    for (size_t i = m; i < k->sp; i += 2)
        if (pk_dict_set(k, b, k->stack[i], k->stack[i + 1]) != 0)
            return -1;
    k->sp = m;
    return 0;
}

/* STACK_GLOBAL: module and name are the two strings on top. */
static int op_stack_global(pk *k)
{
    pv *a, *b;
    if (!(b = pop(k)) || !(a = pop(k)))
        return -1;
    if (a->k != PV_STR || b->k != PV_STR)
        return pk_fail(k, "STACK_GLOBAL without two strings");
    if (push(k, pk_resolve_global(k, a->u.str.s, a->u.str.n, b->u.str.s, b->u.str.n)) != 0)
        return -1;
    pk_release(k, a);
    pk_release(k, b);
    return 0;
}

/* REDUCE, NEWOBJ: the callable and its argument tuple on top. */
static int op_reduce(pk *k)
{
    pv *a, *b;
    if (!(b = pop(k)) || !(a = pop(k)))
        return -1;
    /* pushed before the arguments are released: it may be one of them */
    if (push(k, pk_apply(k, a, b)) != 0)
        return -1;
    pk_release(k, a);
    pk_release(k, b);
    return 0;
}

/* LONG1: n bytes, little-endian two's complement */
static int op_long1(pk *k)
{
    if (need(k, 1) != 0)
        return -1;
    size_t len = *k->p++;
    if (len > 8)
        return pk_fail(k, "integer wider than 64 bits");
    if (need(k, len) != 0)
        return -1;
    uint64_t u = len ? le_load(k->p, (int)len) : 0;
    if (len && len < 8 && (k->p[len - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * len);
    k->p += len;
    return push(k, pk_mkint(k, (int64_t)u));
}

/* BINFLOAT, big-endian */
static int op_binfloat(pk *k)
{
    if (need(k, 8) != 0)
        return -1;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = (u << 8) | k->p[i];
    k->p += 8;
    pv *f = pk_mk(k, PV_FLOAT);
    if (!f)
        return -1;
    memcpy(&f->u.f, &u, 8);
    return push(k, f);
}

/* The string opcodes: a length of 1, 4 or 8 bytes, then the bytes; the
 * unicode ones must be valid UTF-8. */
static int op_string(pk *k, unsigned char op)
{
    int w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
    uint64_t n;
    if (take_le(k, w, &n) != 0)
        return -1;
    if (op == 'T' && n > INT32_MAX)
        return pk_fail(k, "negative string length");
    if (need(k, n) != 0)
        return -1;
    if ((op == 'X' || op == 0x8c || op == 0x8d) && !pk_utf8_ok(k->p, (size_t)n))
        return pk_fail(k, "a unicode string is not valid UTF-8");
    pv *v = pk_mkstr(k, k->p, (size_t)n);
    k->p += n;
    return push(k, v);
}

/* One case per opcode; each fails with k->err set. */
int pk_run(pk *k, pv **result)
{
    for (;;) {
        if (need(k, 1) != 0)
            return -1;
        unsigned char op = *k->p++;
        pv *a, *b, *c, *v;
        uint64_t n;
        size_t m = 0;
        int r = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (need(k, 1) != 0)
                return -1;
            if (*k->p > 5)
                return pk_fail(k, "pickle protocol above 5");
            k->p++;
            break;
        case 0x95: /* FRAME: a length hint only */
            r = take_le(k, 8, &n);
            break;
        case '.': /* STOP: the caller gets the stack's reference */
            if (!(*result = pop(k)))
                return -1;
            return 0;
        case '(': /* MARK */
            if (k->nmarks >= PK_MAX_MARKS)
                return pk_fail(k, "nesting deeper than the limit");
            k->marks[k->nmarks++] = k->sp;
            break;
        case '}': /* EMPTY_DICT */
            r = push(k, pk_mk(k, PV_DICT));
            break;
        case ']': /* EMPTY_LIST */
            r = push(k, pk_mk(k, PV_LIST));
            break;
        case ')': /* EMPTY_TUPLE */
            r = push(k, pk_mk(k, PV_TUPLE));
            break;
        case 't': /* TUPLE */
            r = collect_mark(k, PV_TUPLE);
            break;
        case 'l': /* LIST */
            r = collect_mark(k, PV_LIST);
            break;
        case 'd': /* DICT */
            r = op_dict(k);
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            r = op_tuple_n(k, (size_t)(op - 0x84));
            break;
        case 'a': /* APPEND */
            if (!(a = pop(k)) || !(b = top(k)))
                return -1;
            if (b->k != PV_LIST)
                return pk_fail(k, "APPEND to something that is not a list");
            r = pk_seq_add(k, b, a);
            break;
        case 'e': /* APPENDS */
            r = op_appends(k);
            break;
        case 's': /* SETITEM */
            if (!(c = pop(k)) || !(a = pop(k)) || !(b = top(k)))
                return -1;
            r = pk_dict_set(k, b, a, c);
            break;
        case 'u': /* SETITEMS */
            r = op_setitems(k);
            break;
        case 'q': /* BINPUT */
            if (need(k, 1) != 0 || !(v = top(k)) || memo_put(k, *k->p++, v) != 0)
                return -1;
            break;
        case 'r': /* LONG_BINPUT */
            if (need(k, 4) != 0 || !(v = top(k)))
                return -1;
            n = le_load(k->p, 4);
            k->p += 4;
            r = memo_put(k, (size_t)n, v);
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
            if (take_le(k, 4, &n) != 0 || memo_get(k, (size_t)n) != 0)
                return -1;
            break;
        case 'c': /* GLOBAL */
            r = op_global(k);
            break;
        case 0x93: /* STACK_GLOBAL */
            r = op_stack_global(k);
            break;
        case 'J': /* BININT */
            if (take_le(k, 4, &n) != 0 || push(k, pk_mkint(k, (int32_t)(uint32_t)n)) != 0)
                return -1;
            break;
        case 'K': /* BININT1 */
            if (need(k, 1) != 0 || push(k, pk_mkint(k, *k->p++)) != 0)
                return -1;
            break;
        case 'M': /* BININT2 */
            if (take_le(k, 2, &n) != 0 || push(k, pk_mkint(k, (int64_t)n)) != 0)
                return -1;
            break;
        case 0x8a: /* LONG1 */
            r = op_long1(k);
            break;
        case 'G': /* BINFLOAT */
            r = op_binfloat(k);
            break;
        case 'N':
            r = push(k, &k->none);
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            r = push(k, op == 0x88 ? &k->yes : &k->no);
            break;
        case 'X':  /* BINUNICODE */
        case 0x8c: /* SHORT_BINUNICODE */
        case 0x8d: /* BINUNICODE8 */
        case 'T':  /* BINSTRING */
        case 'U':  /* SHORT_BINSTRING */
        case 'B':  /* BINBYTES */
        case 'C':  /* SHORT_BINBYTES */
        case 0x8e: /* BINBYTES8 */
            r = op_string(k, op);
            break;
        case 'R':  /* REDUCE */
        case 0x81: /* NEWOBJ */
            r = op_reduce(k);
            break;
        case 'b': /* BUILD: state on an OrderedDict (_metadata), a tensor or an
                   * opaque object: ignored */
            if (!(b = pop(k)) || !(a = top(k)))
                return -1;
            if (a->k != PV_DICT && a->k != PV_TENSOR && a->k != PV_OPAQUE)
                return pk_fail(k, "BUILD on something other than a dict, a tensor or an object");
            pk_release(k, b);
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(k)) || push(k, pk_persistent(k, a)) != 0)
                return -1;
            pk_release(k, a);
            break;
        case '0': /* POP */
            if (!(v = pop(k)))
                return -1;
            pk_release(k, v);
            break;
        case '1': /* POP_MARK */
            if (k->nmarks == 0)
                return pk_fail(k, "POP_MARK without a MARK");
            m = k->marks[--k->nmarks];
            while (k->sp > m)
                pk_release(k, k->stack[--k->sp]);
            break;
        case '2': /* DUP */
            if (!(v = top(k)) || push(k, v) != 0)
                return -1;
            break;
        default: {
            char msg[96];
            snprintf(msg, sizeof msg, "unsupported opcode 0x%02x", op);
            k->p--;
            return pk_fail(k, msg);
        }
        }
        if (r != 0)
            return -1;
    }
}
