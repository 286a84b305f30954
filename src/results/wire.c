/* wire.c - results as bytes (journal records, MPI messages); see
 * include/dora/wire.h. */
#include "dora/wire.h"
#include "dora/adapter.h"
#include "results/bytes.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PACK_MAGIC1 0x31555244u /* "DRU1": version 1, ends after the failures */
#define PACK_MAGIC 0x32555244u  /* "DRU2": version 2, tagged sections and END after them */
/* Version 2: after the failures, optional sections, each a u32 tag and its
 * data, in any order, each at most once, then END, so that a record cut at a
 * section's boundary is still refused. "GEOM": delta_m_passive then
 * delta_m_active [S * L]; "LIGN": the name alignment applied, a string. A
 * version 1 record (journals of earlier versions) has none: it reads back with
 * both arrays NULL. "HEAD": the per-head values (analyze.h), u64 H, u64
 * head_dim, H x (u64 module index, u64 heads), then head_dm and head_dd
 * [S * NH]; a record without it reads back with no heads. */
#define GEOM_TAG 0x4d4f4547u
#define HEAD_TAG 0x44414548u
#define ALIGN_TAG 0x4e47494cu
#define END_TAG 0x2e444e45u /* "END." */

/* The HEAD section of R (which has heads). */
static void pack_heads(wbuf *b, const dora_result *r)
{
    const size_t H = r->nhead_mods, SN = r->nsteps * (size_t)r->head_offset[H];
    wire_put_u32(b, HEAD_TAG);
    wire_put_u64(b, H);
    wire_put_u64(b, (uint64_t)r->head_dim);
    for (size_t h = 0; h < H; h++) {
        wire_put_u64(b, r->head_module[h]);
        wire_put_u64(b, (uint64_t)r->head_count[h]);
    }
    for (size_t i = 0; i < SN; i++)
        wire_put_f64(b, r->head_dm[i]);
    for (size_t i = 0; i < SN; i++)
        wire_put_f64(b, r->head_dd[i]);
}

int dora_result_pack(const dora_result *r, unsigned char **buf, size_t *len, dora_err *err)
{
    wbuf b = {0};
    const size_t S = r->nsteps, L = r->nmodules;
    wire_put_u32(&b, PACK_MAGIC);
    wire_put_str(&b, r->name);
    wire_put_str(&b, r->method);
    wire_put_str(&b, r->source_path);
    wire_put_str(&b, r->base_path);
    wire_put_u64(&b, S);
    wire_put_u64(&b, L);
    for (size_t s = 0; s < S; s++) {
        wire_put_u64(&b, (uint64_t)r->steps[s]);
        wire_put_str(&b, r->step_paths[s]);
        wire_put_str(&b, r->step_stamps ? r->step_stamps[s] : "");
    }
    for (size_t l = 0; l < L; l++) {
        wire_put_str(&b, r->modules[l]);
        wire_put_u32(&b, (uint32_t)r->layer[l]);
        wire_put_u64(&b, (uint64_t)r->rows[l]);
        wire_put_u64(&b, (uint64_t)r->cols[l]);
        wire_put_u32(&b, (uint32_t)r->rank[l]);
    }
    for (size_t i = 0; i < S * L; i++)
        wire_put_f64(&b, r->delta_m[i]);
    for (size_t i = 0; i < S * L; i++)
        wire_put_f64(&b, r->delta_d[i]);
    for (size_t i = 0; i < S * L; i++)
        wire_put_u64(&b, (uint64_t)r->zero_rows[i]);
    wire_put_u64(&b, r->nnotes);
    for (size_t i = 0; i < r->nnotes; i++)
        wire_put_str(&b, r->notes[i]);
    wire_put_u64(&b, r->nfailures);
    for (size_t i = 0; i < r->nfailures; i++)
        wire_put_str(&b, r->failures[i]);
    /* the optional sections, then END (see above) */
    if (r->name_alignment) {
        wire_put_u32(&b, ALIGN_TAG);
        wire_put_str(&b, r->name_alignment);
    }
    if (r->delta_m_passive && r->delta_m_active) {
        wire_put_u32(&b, GEOM_TAG);
        for (size_t i = 0; i < S * L; i++)
            wire_put_f64(&b, r->delta_m_passive[i]);
        for (size_t i = 0; i < S * L; i++)
            wire_put_f64(&b, r->delta_m_active[i]);
    }
    if (r->nhead_mods)
        pack_heads(&b, r);
    wire_put_u32(&b, END_TAG);
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "out of memory packing the results of run '%s'", r->name);
    }
    *buf = b.p;
    *len = b.n;
    return 0;
}

static int unpack_strs(rbuf *b, char ***v, size_t *n)
{
    uint64_t k = wire_get_u64(b);
    if (b->bad || k > (b->n - b->off) / 8) {
        b->bad = 1;
        return -1;
    }
    *v = calloc((size_t)k + 1, sizeof **v);
    if (!*v) {
        b->bad = 2;
        return -1;
    }
    for (size_t i = 0; i < k; i++) {
        if (!((*v)[i] = wire_get_str(b)))
            return -1;
        *n = i + 1;
    }
    return 0;
}

/* The HEAD section into R (its modules read): 0, or -1 with what is wrong in
 * WHY (of size N; B's bad set to 2 when out of memory). Every count is checked
 * against R's modules and the bytes left before anything is allocated by it. */
static int unpack_heads(rbuf *b, dora_result *r, char *why, size_t n)
{
    const uint64_t H = wire_get_u64(b), hd = wire_get_u64(b);
    const size_t S = r->nsteps, L = r->nmodules;
    if (b->bad || H == 0 || H > L || H > (b->n - b->off) / 16 || hd == 0 || hd > INT64_MAX) {
        snprintf(why, n, "a malformed per-head section (%llu modules of %llu, head_dim %llu)",
                 (unsigned long long)H, (unsigned long long)L, (unsigned long long)hd);
        return -1;
    }
    if (!(r->head_module = calloc((size_t)H + 1, sizeof *r->head_module)) ||
        !(r->head_count = calloc((size_t)H + 1, sizeof *r->head_count)) ||
        !(r->head_offset = calloc((size_t)H + 2, sizeof *r->head_offset)))
        goto oom;
    r->nhead_mods = (size_t)H;
    r->head_dim = (int64_t)hd;
    for (size_t h = 0; h < H; h++) {
        const uint64_t l = wire_get_u64(b), k = wire_get_u64(b);
        if (b->bad) {
            snprintf(why, n, "a per-head section cut short");
            return -1;
        }
        /* modules in their order, each a whole number of heads of head_dim rows */
        if (l >= L || (h > 0 && l <= r->head_module[h - 1])) {
            snprintf(why, n, "a per-head section that does not match the modules (module index "
                             "%llu of %zu, out of order or range)",
                     (unsigned long long)l, L);
            return -1;
        }
        if (k == 0 || (uint64_t)r->rows[l] % hd != 0 || (uint64_t)r->rows[l] / hd != k ||
            k > (uint64_t)(INT64_MAX - r->head_offset[h])) {
            snprintf(why, n, "a per-head section that does not match the modules ('%s': %lld "
                             "rows are not %llu heads of head_dim %llu)",
                     r->modules[l], (long long)r->rows[l], (unsigned long long)k,
                     (unsigned long long)hd);
            return -1;
        }
        r->head_module[h] = (size_t)l;
        r->head_count[h] = (int64_t)k;
        r->head_offset[h + 1] = r->head_offset[h] + (int64_t)k;
    }
    const size_t NH = (size_t)r->head_offset[H];
    if (S && NH > (b->n - b->off) / 16 / S) {
        snprintf(why, n, "a per-head section cut short (%zu steps x %zu heads)", S, NH);
        return -1;
    }
    if (!(r->head_dm = calloc(S * NH + 1, sizeof *r->head_dm)) ||
        !(r->head_dd = calloc(S * NH + 1, sizeof *r->head_dd)))
        goto oom;
    for (size_t i = 0; i < S * NH; i++)
        r->head_dm[i] = wire_get_f64(b);
    for (size_t i = 0; i < S * NH; i++)
        r->head_dd[i] = wire_get_f64(b);
    for (size_t i = 0; i < S * NH; i++)
        if (!isfinite(r->head_dm[i]) || !isfinite(r->head_dd[i])) {
            snprintf(why, n, "a non-finite per-head value (step %lld)",
                     (long long)r->steps[i / NH]);
            return -1;
        }
    return 0;
oom:
    b->bad = 2;
    return -1;
}

int dora_result_unpack(dora_result *r, const unsigned char *buf, size_t len, const char *what,
                       dora_err *err)
{
    memset(r, 0, sizeof *r);
    rbuf b = {buf, len, 0, 0};
    const char *why = "truncated or malformed";
    char heads_why[1300]; /* unpack_heads's message: a module name (cut to fit), counts */
    const uint32_t magic = wire_get_u32(&b);
    if (magic != PACK_MAGIC && magic != PACK_MAGIC1) {
        dora_errf(err, "%s: not a unit result of this version", what);
        return -1;
    }
    char *method = NULL;
    r->name = wire_get_str(&b);
    method = wire_get_str(&b);
    r->source_path = wire_get_str(&b);
    r->base_path = wire_get_str(&b);
    uint64_t S = wire_get_u64(&b), L = wire_get_u64(&b);
    if (b.bad)
        goto bad;
    r->method = dora_method_static(method);
    free(method);
    method = NULL;
    if (!r->method) {
        why = "unknown method";
        goto bad;
    }
    /* each step takes >= 24 bytes, each module >= 32, each (step, module) 24 */
    size_t left = len - b.off;
    if (S > left / 24 || L > left / 32 || (S && L > left / 24 / S)) {
        why = "counts larger than the data";
        goto bad;
    }
    if (dora_result_alloc(r, (size_t)S, (size_t)L) != 0) {
        dora_errf(err, "%s: out of memory", what);
        dora_result_release(r);
        return -1;
    }
    for (size_t s = 0; s < S; s++) {
        r->steps[s] = (int64_t)wire_get_u64(&b);
        r->step_paths[s] = wire_get_str(&b);
        r->step_stamps[s] = wire_get_str(&b);
        if (b.bad)
            goto bad;
        if (s > 0 && r->steps[s] <= r->steps[s - 1]) {
            why = "steps not ascending";
            goto bad;
        }
    }
    for (size_t l = 0; l < L; l++) {
        r->modules[l] = wire_get_str(&b);
        r->layer[l] = (int32_t)wire_get_u32(&b);
        r->rows[l] = (int64_t)wire_get_u64(&b);
        r->cols[l] = (int64_t)wire_get_u64(&b);
        r->rank[l] = (int32_t)wire_get_u32(&b);
        if (b.bad)
            goto bad;
        if (r->rows[l] < 1 || r->cols[l] < 0 || r->rank[l] < 0) {
            why = "a module with a bad shape or rank";
            goto bad;
        }
    }
    const size_t SL = (size_t)(S * L);
    for (size_t i = 0; i < SL; i++)
        r->delta_m[i] = wire_get_f64(&b);
    for (size_t i = 0; i < SL; i++)
        r->delta_d[i] = wire_get_f64(&b);
    for (size_t i = 0; i < SL; i++)
        r->zero_rows[i] = (int64_t)wire_get_u64(&b);
    if (b.bad)
        goto bad;
    for (size_t i = 0; i < SL; i++)
        if (!isfinite(r->delta_m[i]) || !isfinite(r->delta_d[i]) || r->zero_rows[i] < 0) {
            why = "a non-finite or negative value";
            goto bad;
        }
    if (unpack_strs(&b, &r->notes, &r->nnotes) != 0 ||
        unpack_strs(&b, &r->failures, &r->nfailures) != 0)
        goto bad;
    int geom = 0;
    for (int end = magic == PACK_MAGIC1; !end;) {
        const uint32_t tag = wire_get_u32(&b);
        if (b.bad)
            goto bad;
        if (tag == END_TAG) {
            end = 1;
        } else if (tag == ALIGN_TAG && !r->name_alignment) {
            if (!(r->name_alignment = wire_get_str(&b)))
                goto bad;
        } else if (tag == GEOM_TAG && !geom) {
            if (len - b.off < 16 * SL)
                goto bad; /* truncated */
            geom = 1;
            for (size_t i = 0; i < SL; i++)
                r->delta_m_passive[i] = wire_get_f64(&b);
            for (size_t i = 0; i < SL; i++)
                r->delta_m_active[i] = wire_get_f64(&b);
            for (size_t i = 0; i < SL; i++)
                if (!isfinite(r->delta_m_passive[i]) || !isfinite(r->delta_m_active[i]) ||
                    r->delta_m_passive[i] < 0 || r->delta_m_active[i] < 0) {
                    why = "a non-finite or negative delta_m_passive or delta_m_active";
                    goto bad;
                }
        } else if (tag == HEAD_TAG && !r->head_module) {
            if (unpack_heads(&b, r, heads_why, sizeof heads_why) != 0) {
                why = heads_why;
                goto bad;
            }
        } else {
            why = "an unknown or repeated section";
            goto bad;
        }
    }
    if (b.bad)
        goto bad;
    if (!geom) { /* a record of a version before them: the file leaves them out */
        free(r->delta_m_passive);
        free(r->delta_m_active);
        r->delta_m_passive = r->delta_m_active = NULL;
    }
    if (b.off != len) {
        why = "trailing bytes";
        goto bad;
    }
    return 0;
bad:
    free(method);
    if (b.bad == 2)
        dora_errf(err, "%s: out of memory", what);
    else if (r->name && why == heads_why)
        dora_errf(err, "%s: run '%s': %s", what, r->name, why);
    else
        dora_errf(err, "%s: %s", what, why);
    dora_result_release(r);
    return -1;
}
