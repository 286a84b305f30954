/* align.c - a checkpoint's tensor names matched to the base's: --rename rules,
 * then one prefix read off the names; see include/dora/align.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/align.h"
#include "dora/config.h"
#include "dora/llama_names.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PREFIX_PARTS 3 /* components of a prefix read off the names */
#define MAX_CANDIDATES 16
#define SAMPLES 3          /* unmatched names shown from each side */

static int entry_cmp(const void *pa, const void *pb)
{
    const dora_align_entry *a = pa, *b = pb;
    return strcmp(a->name, b->name);
}

/* Split SPEC at its first '=' and compile the regex; *REPL points into SPEC. */
static pcre2_code *rename_compile(const char *spec, const char **repl, dora_err *err)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec) {
        dora_errf(err, "'%s' is not REGEX=REPLACEMENT (write a '=' in the regex as \\x3d)", spec);
        return NULL;
    }
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)spec, (PCRE2_SIZE)(eq - spec), PCRE2_UTF, &code,
                                   &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        dora_errf(err, "'%s': the regex is not valid: %s (at offset %zu)", spec,
                  (const char *)msg, (size_t)off);
        return NULL;
    }
    *repl = eq + 1;
    return re;
}

int dora_rename_check(const char *spec, dora_err *err)
{
    const char *repl;
    pcre2_code *re = rename_compile(spec, &repl, err);
    if (!re)
        return -1;
    pcre2_code_free(re);
    return 0;
}

/* NAME rewritten by RE -> REPL (every match), newly allocated into *OUT. */
static int substitute(pcre2_code *re, pcre2_match_data *md, const char *repl, const char *name,
                      const char *spec, char **out, dora_err *err)
{
    PCRE2_SIZE len = strlen(name) * 2 + strlen(repl) + 64;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *buf = malloc(len);
        if (!buf)
            return dora_errf(err, "out of memory");
        PCRE2_SIZE outlen = len;
        int rc = pcre2_substitute(re, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0,
                                  PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, md,
                                  NULL, (PCRE2_SPTR)repl, PCRE2_ZERO_TERMINATED,
                                  (PCRE2_UCHAR *)buf, &outlen);
        if (rc >= 0) {
            *out = buf;
            return 0;
        }
        free(buf);
        if (rc != PCRE2_ERROR_NOMEMORY) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return dora_errf(err, "--rename '%s' cannot be applied to '%s': %s", spec, name,
                             (const char *)msg);
        }
        len = outlen + 1;
    }
    return dora_errf(err, "--rename '%s': the result for '%s' keeps growing", spec, name);
}

/* A->e sorted by name; two alike (made so by WHAT) is an error naming both. */
static int sort_entries(dora_align *a, const char *what, dora_err *err)
{
    qsort(a->e, a->n, sizeof *a->e, entry_cmp);
    for (size_t i = 1; i < a->n; i++)
        if (strcmp(a->e[i - 1].name, a->e[i].name) == 0)
            return dora_errf(err, "'%s': %s gives two tensors the name '%s': '%s' and '%s'",
                             a->step->path, what, a->e[i].name, a->e[i - 1].t->name,
                             a->e[i].t->name);
    return 0;
}

/* The checkpoint's names read as HF's where they are Meta's or torchtune's
 * Llama names (llama_names.h), sorted; *CHANGED counts them. */
static int apply_llama(dora_align *a, size_t *changed, dora_err *err)
{
    const dora_model *m = a->step;
    *changed = 0;
    if (!(a->e = calloc(m->ntensors ? m->ntensors : 1, sizeof *a->e)))
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < m->ntensors; i++) {
        char hf[1024];
        int rope;
        int mapped = dora_llama_to_hf(m->by_name[i]->name, hf, sizeof hf, &rope);
        a->e[i].t = m->by_name[i];
        a->e[i].rope = mapped ? rope : DORA_ROPE_NONE;
        if (!(a->e[i].name = strdup(mapped ? hf : m->by_name[i]->name)))
            return dora_errf(err, "out of memory");
        a->n = i + 1;
        *changed += (size_t)mapped;
    }
    return sort_entries(a, "the Llama name mapping", err);
}

/* The checkpoint's names after the renames, sorted; two alike is an error. */
static int apply_renames(dora_align *a, const char *const *renames, size_t nrenames,
                         size_t *changed, dora_err *err)
{
    const dora_model *m = a->step;
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    pcre2_code **re = calloc(nrenames, sizeof *re);
    const char **repl = calloc(nrenames, sizeof *repl);
    int rc = -1;
    *changed = 0;
    if (!md || !re || !repl || !(a->e = calloc(m->ntensors ? m->ntensors : 1, sizeof *a->e))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t r = 0; r < nrenames; r++)
        if (!(re[r] = rename_compile(renames[r], &repl[r], err)))
            goto done;
    for (size_t i = 0; i < m->ntensors; i++) {
        a->e[i].t = m->by_name[i];
        if (!(a->e[i].name = strdup(m->by_name[i]->name))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        a->n = i + 1;
        for (size_t r = 0; r < nrenames; r++) {
            char *nn;
            if (substitute(re[r], md, repl[r], a->e[i].name, renames[r], &nn, err) != 0)
                goto done;
            free(a->e[i].name);
            a->e[i].name = nn;
        }
        *changed += strcmp(a->e[i].name, m->by_name[i]->name) != 0;
    }
    rc = sort_entries(a, "--rename", err);
done:
    for (size_t r = 0; re && r < nrenames; r++)
        pcre2_code_free(re[r]);
    free(re);
    free(repl);
    pcre2_match_data_free(md);
    return rc;
}

/* The checkpoint's tensor named exactly NAME (after the renames); *ROPE (if
 * not NULL) its RoPE row order (llama_names.h). */
static const dora_tensor *lookup(const dora_align *a, const char *name, int *rope)
{
    if (rope)
        *rope = DORA_ROPE_NONE;
    if (!a->e)
        return dora_model_find(a->step, name);
    dora_align_entry key = {(char *)name, NULL, 0};
    const dora_align_entry *hit = bsearch(&key, a->e, a->n, sizeof *a->e, entry_cmp);
    if (hit && rope)
        *rope = hit->rope;
    return hit ? hit->t : NULL;
}

static const char *name_at(const dora_align *a, size_t i)
{
    return a->e ? a->e[i].name : a->step->by_name[i]->name;
}

int dora_align_same_shape(const dora_tensor *x, const dora_tensor *y)
{
    if (x->ndim != y->ndim)
        return 0;
    for (int i = 0; i < x->ndim; i++)
        if (x->shape[i] != y->shape[i])
            return 0;
    return 1;
}

/* Base name P + X looked up as Q + X; NULL when the name does not start with P. */
static const dora_tensor *find_with(const dora_align *a, const char *p, const char *q,
                                    const char *base_name, int *rope)
{
    size_t lp = strlen(p), lq = strlen(q);
    if (rope)
        *rope = DORA_ROPE_NONE;
    if (strncmp(base_name, p, lp) != 0)
        return NULL;
    if (lq == 0)
        return lookup(a, base_name + lp, rope);
    size_t lx = strlen(base_name + lp);
    char small[512], *key = lq + lx < sizeof small ? small : malloc(lq + lx + 1);
    if (!key)
        return NULL;
    memcpy(key, q, lq);
    memcpy(key + lq, base_name + lp, lx + 1);
    const dora_tensor *t = lookup(a, key, rope);
    if (key != small)
        free(key);
    return t;
}

/* How many of WANT are found under (P, Q) with their shape. */
static size_t fit(const dora_align *a, const char *p, const char *q,
                  const dora_tensor *const *want, size_t nwant)
{
    size_t k = 0;
    for (size_t i = 0; i < nwant; i++) {
        const dora_tensor *t = find_with(a, p, q, want[i]->name, NULL);
        k += t && dora_align_same_shape(t, want[i]);
    }
    return k;
}

typedef struct cand {
    char *p, *q;
} cand;

static size_t parts(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '.';
    return k;
}

/* Length of the last dotted component of S[0..n) with its dot (S ends in '.'). */
static size_t last_part(const char *s, size_t n)
{
    size_t k = n - 1;
    while (k > 0 && s[k - 1] != '.')
        k--;
    return n - k;
}

/* Add (P[0..lp), Q[0..lq)) unless it is there already or the list is full.
 * Components both end with are dropped first: ("model.", "model.model.") is
 * the mapping ("", "model."), not a second one. */
static int add_cand(cand *c, size_t *nc, const char *p, size_t lp, const char *q, size_t lq)
{
    while (lp > 0 && lq > 0) {
        size_t k = last_part(p, lp);
        if (k != last_part(q, lq) || strncmp(p + lp - k, q + lq - k, k) != 0)
            break;
        lp -= k;
        lq -= k;
    }
    if ((lp == 0 && lq == 0) || *nc == MAX_CANDIDATES)
        return 0;
    for (size_t i = 0; i < *nc; i++)
        if (strlen(c[i].p) == lp && strncmp(c[i].p, p, lp) == 0 && strlen(c[i].q) == lq &&
            strncmp(c[i].q, q, lq) == 0)
            return 0;
    if (!(c[*nc].p = strndup(p, lp)) || !(c[*nc].q = strndup(q, lq))) {
        free(c[*nc].p);
        return -1;
    }
    ++*nc;
    return 0;
}

/* The prefix pairs that the names of W0 and the checkpoint suggest: W0 =
 * P + X with P of at most MAX_PREFIX_PARTS components, a checkpoint name
 * Q + X with Q of at most as many. */
static int candidates(const dora_align *a, const char *w0, cand *c, size_t *nc)
{
    const size_t lw = strlen(w0);
    size_t lp = 0;
    for (int k = 0; k <= MAX_PREFIX_PARTS; k++) {
        const char *x = w0 + lp;
        const size_t lx = lw - lp;
        for (size_t i = 0; i < a->n; i++) {
            const char *s = name_at(a, i);
            size_t ls = strlen(s);
            if (ls < lx || strcmp(s + ls - lx, x) != 0)
                continue;
            size_t lq = ls - lx;
            if ((lq > 0 && s[lq - 1] != '.') || parts(s, lq) > MAX_PREFIX_PARTS)
                continue;
            if (add_cand(c, nc, w0, lp, s, lq) != 0)
                return -1;
        }
        const char *dot = strchr(x, '.');
        if (!dot)
            break;
        lp = (size_t)(dot - w0) + 1;
    }
    return 0;
}

/* "'a', 'b', 'c'" of up to SAMPLES names into BUF. */
static void samples(char *buf, size_t size, const char *const *names, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && i < SAMPLES && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s'%.120s'", i ? ", " : "", names[i]);
    if (n > SAMPLES && used < size)
        snprintf(buf + used, size - used, ", ... (%zu in all)", n);
}

static int nothing_matches(const dora_align *a, const dora_model *base,
                           const dora_tensor *const *want, size_t nwant, dora_err *err)
{
    const char *bn[SAMPLES] = {0}, *sn[SAMPLES] = {0};
    size_t nb = 0, ns = 0;
    for (size_t i = 0; i < nwant; i++)
        if (nb < SAMPLES)
            bn[nb++] = want[i]->name;
    size_t nstep = 0;
    for (size_t i = 0; i < a->n; i++) {
        const dora_tensor *t = a->e ? a->e[i].t : a->step->by_name[i];
        if (t->ndim < 2)
            continue;
        if (ns < SAMPLES)
            sn[ns++] = name_at(a, i);
        nstep++;
    }
    char b1[600], b2[600];
    samples(b1, sizeof b1, bn, nwant);
    samples(b2, sizeof b2, sn, nstep);
    return dora_errf(err, "'%s': none of the %zu analysed tensors of the base '%s' is in this "
                          "checkpoint, as named or under one prefix (base: %s; checkpoint: %s); "
                          "map the names with --rename 'REGEX=REPLACEMENT'",
                     a->step->path, nwant, base->path, b1, nstep ? b2 : "no tensor of rank >= 2");
}

/* A regex matching S literally ('.' escaped), for the hint of an error. */
static void regex_quote(char *out, size_t size, const char *s)
{
    size_t k = 0;
    for (; *s && k + 3 < size; s++) {
        if (strchr(".^$*+?()[]{}|\\", *s))
            out[k++] = '\\';
        out[k++] = *s;
    }
    out[k] = '\0';
}

static int ambiguous(const dora_align *a, const cand *x, const cand *y, dora_err *err)
{
    char qx[200];
    regex_quote(qx, sizeof qx, x->q);
    return dora_errf(err, "'%s': the names fit the base in two ways: base '%s'+X as '%s'+X, and "
                          "base '%s'+X as '%s'+X; choose one with --rename (e.g. --rename "
                          "'^%s=' for the first)",
                     a->step->path, x->p, x->q, y->p, y->q, qx);
}

static int describe(dora_align *a, const char *const *renames, size_t nrenames, size_t changed,
                    size_t nwant, dora_err *err)
{
    char buf[1024];
    size_t used = 0;
    buf[0] = '\0';
    if (nrenames && changed)
        used += (size_t)snprintf(buf, sizeof buf, "--rename '%s'%s renamed %zu tensor(s)",
                                 renames[0], nrenames > 1 ? " (and others)" : "", changed);
    const char *p = a->base_prefix, *q = a->step_prefix;
    char what[600];
    if (q[0] && p[0])
        snprintf(what, sizeof what, "the checkpoint's prefix '%s' read for the base's '%s'", q, p);
    else if (q[0])
        snprintf(what, sizeof what, "the checkpoint's prefix '%s' removed", q);
    else
        snprintf(what, sizeof what, "the base's prefix '%s' removed", p);
    if ((p[0] || q[0]) && used < sizeof buf)
        snprintf(buf + used, sizeof buf - used, "%s%s (all %zu analysed tensors match)",
                 used ? "; " : "", what, nwant);
    if (!buf[0])
        return 0;
    if (!(a->desc = strdup(buf)))
        return dora_errf(err, "out of memory");
    return 0;
}

static int choose_prefix(dora_align *a, const dora_model *base, const dora_tensor *const *want,
                         size_t nwant, dora_err *err)
{
    size_t id = fit(a, "", "", want, nwant);
    if (id == nwant || nwant == 0)
        return 0;
    cand c[MAX_CANDIDATES];
    size_t nc = 0, nfit = 0, first = 0;
    int rc = candidates(a, want[0]->name, c, &nc);
    if (rc != 0)
        dora_errf(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < nc; i++) {
        if (fit(a, c[i].p, c[i].q, want, nwant) != nwant)
            continue;
        if (nfit++ == 0)
            first = i;
        else
            rc = ambiguous(a, &c[first], &c[i], err);
    }
    if (rc == 0 && nfit == 1) {
        free(a->base_prefix);
        free(a->step_prefix);
        a->base_prefix = c[first].p;
        a->step_prefix = c[first].q;
        c[first].p = c[first].q = NULL;
    } else if (rc == 0 && id == 0) {
        rc = nothing_matches(a, base, want, nwant, err);
    }
    for (size_t i = 0; i < nc; i++) {
        free(c[i].p);
        free(c[i].q);
    }
    return rc;
}

/* One alignment with the given renames; *FATAL is set when the renames
 * themselves failed (two names made one, a substitution error). */
static int align_once(dora_align *a, const dora_model *base, const dora_model *step,
                      const dora_tensor *const *want, size_t nwant,
                      const char *const *renames, size_t nrenames, int llama, int *fatal,
                      dora_err *err)
{
    memset(a, 0, sizeof *a);
    a->step = step;
    a->n = 0;
    size_t changed = 0;
    int rc = 0;
    if (!(a->base_prefix = strdup("")) || !(a->step_prefix = strdup("")))
        rc = dora_errf(err, "out of memory");
    if (rc == 0 && llama)
        rc = apply_llama(a, &changed, err);
    else if (rc == 0 && nrenames &&
             (rc = apply_renames(a, renames, nrenames, &changed, err)) != 0)
        *fatal = 1;
    else if (rc == 0)
        a->n = step->ntensors;
    a->llama = llama ? changed : 0;
    if (rc == 0)
        rc = choose_prefix(a, base, want, nwant, err);
    if (rc == 0)
        rc = describe(a, renames, nrenames, changed, nwant, err);
    if (rc != 0)
        dora_align_release(a);
    return rc;
}

/* The head counts for un-permuting wq/wk, from the base's config.json, when
 * the Llama mapping found such tensors; the note says so. */
static int rope_heads(dora_align *a, const dora_model *base, dora_err *err)
{
    int need = 0;
    for (size_t i = 0; i < a->n; i++)
        need |= a->e[i].rope != DORA_ROPE_NONE;
    dora_config *cfg = NULL;
    int rc = need ? dora_config_open(&cfg, base, err) : 0;
    if (rc == 0 && need && !cfg)
        rc = dora_errf(err, "'%s' has Meta/torchtune Llama names: putting wq/wk in HF's row "
                            "order needs num_attention_heads from a config.json beside the "
                            "base '%s'",
                       a->step->path, base->path);
    int r = rc == 0 && need ? dora_config_int(cfg, "num_attention_heads", &a->heads, err) : 1;
    if (rc == 0 && r == 0)
        rc = dora_errf(err, "'%s' lacks num_attention_heads, which putting wq/wk of '%s' in HF's "
                            "row order needs",
                       dora_config_path(cfg), a->step->path);
    if (rc == 0 && r < 0)
        rc = -1;
    if (rc == 0 && need &&
        (r = dora_config_int(cfg, "num_key_value_heads", &a->kv_heads, err)) <= 0)
        a->kv_heads = a->heads;
    if (rc == 0 && r < 0)
        rc = -1;
    dora_config_close(cfg);
    char *d = NULL;
    if (rc == 0) {
        char buf[400];
        snprintf(buf, sizeof buf, "%s%sMeta/torchtune Llama names read as HF's (%d renamed%s)",
                 a->desc ? a->desc : "", a->desc ? "; " : "", a->llama,
                 need ? ", wq/wk rows put in HF's RoPE order" : "");
        if (!(d = strdup(buf)))
            rc = dora_errf(err, "out of memory");
    }
    free(a->desc);
    a->desc = d;
    if (rc != 0)
        dora_align_release(a);
    return rc;
}

/* With renames: they are applied when they make the names fit every analysed
 * tensor, or when the names do not fit as they are either; a checkpoint whose
 * names fit without them (another run of the same command) is read as named.
 * Names that fit neither way are read as Meta's or torchtune's Llama names
 * (llama_names.h) when that makes every analysed tensor fit. */
int dora_align_choose(dora_align *a, const dora_model *base, const dora_model *step,
                      const dora_tensor *const *want, size_t nwant,
                      const char *const *renames, size_t nrenames, dora_err *err)
{
    dora_err e1;
    int fatal = 0;
    int r1 = align_once(a, base, step, want, nwant, renames, nrenames, 0, &fatal, &e1);
    if (fatal || (r1 == 0 && fit(a, a->base_prefix, a->step_prefix, want, nwant) == nwant))
        goto first;
    dora_align plain;
    dora_err e2;
    for (int llama = nrenames ? 0 : 1; llama < 2; llama++) {
        int r2 = align_once(&plain, base, step, want, nwant, NULL, 0, llama, &fatal, &e2);
        if (r2 == 0 && fit(&plain, plain.base_prefix, plain.step_prefix, want, nwant) == nwant) {
            if (r1 == 0)
                dora_align_release(a);
            *a = plain;
            return llama ? rope_heads(a, base, err) : 0;
        }
        if (r2 == 0)
            dora_align_release(&plain);
    }
first:
    if (r1 != 0 && err)
        *err = e1;
    return r1;
}

const dora_tensor *dora_align_find(const dora_align *a, const char *base_name)
{
    return find_with(a, a->base_prefix, a->step_prefix, base_name, NULL);
}

const dora_tensor *dora_align_find_rope(const dora_align *a, const char *base_name,
                                        int64_t *heads)
{
    int rope;
    const dora_tensor *t = find_with(a, a->base_prefix, a->step_prefix, base_name, &rope);
    *heads = rope == DORA_ROPE_Q ? a->heads : rope == DORA_ROPE_K ? a->kv_heads : 0;
    return t;
}

void dora_align_release(dora_align *a)
{
    for (size_t i = 0; a->e && i < a->n; i++)
        free(a->e[i].name);
    free(a->e);
    free(a->base_prefix);
    free(a->step_prefix);
    free(a->desc);
    memset(a, 0, sizeof *a);
}
