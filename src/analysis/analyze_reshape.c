/* analyze_reshape.c - the selected modules as the paper's rows want them:
 * Conv1D weights ([in, out]) read transposed, fused projections split into
 * their parts; see an_reshape_modules in analysis/analyze_int.h. Both read
 * from copies made once, under the SIGBUS guard (the sources are mappings). */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "dora/config.h"
#include "dora/fused.h"
#include "dora/guard.h"
#include "dora/llama_names.h"
#include "dora/notes.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One copy: T ([in, out]) transposed into DST; or (F set) the rows of part P
 * of the fused T gathered into DST; or (HD > 0) T's rows put from Meta's RoPE
 * order into HF's, heads of HD rows. */
typedef struct copy_job {
    const dora_tensor *t;
    const dora_fused *f;
    int p;
    int64_t hd;
    unsigned char *dst;
} copy_job;

static void copy_fn(void *arg)
{
    const copy_job *j = arg;
    const size_t es = dora_dtype_size(j->t->dtype);
    const size_t r0 = (size_t)j->t->shape[0], c0 = (size_t)j->t->shape[1];
    const size_t rb = c0 * es;
    if (j->f || j->hd) {
        const size_t n = j->f ? (size_t)dora_fused_rows(j->f, j->p) : r0;
        for (size_t i = 0; i < n; i++) {
            int64_t src = j->f ? dora_fused_row(j->f, j->p, (int64_t)i)
                               : dora_rope_row((int64_t)i, j->hd);
            memcpy(j->dst + i * rb, j->t->data + (size_t)src * rb, rb);
        }
        return;
    }
    for (size_t i = 0; i < r0; i++)
        for (size_t o = 0; o < c0; o++)
            memcpy(j->dst + (o * r0 + i) * es, j->t->data + (i * c0 + o) * es, es);
}

/* *C = T transposed (F NULL, HD 0), part P of F, or in HF's RoPE order (HD
 * > 0); its bytes copied, named NAME. */
static int make_copy(const dora_tensor *t, const dora_fused *f, int p, int64_t hd,
                     const char *name, dora_tensor *c, dora_err *err)
{
    *c = *t;
    c->name = name;
    if (f) {
        c->shape[0] = dora_fused_rows(f, p);
    } else if (!hd) {
        c->shape[0] = t->shape[1];
        c->shape[1] = t->shape[0];
    }
    c->numel = (uint64_t)c->shape[0] * (uint64_t)c->shape[1];
    c->nbytes = c->numel * dora_dtype_size(t->dtype);
    c->data = NULL;
    if (!c->nbytes)
        return 0;
    unsigned char *buf = malloc((size_t)c->nbytes);
    if (!buf)
        return dora_errf(err, "out of memory for a copy of '%s' (%llu bytes)", t->name,
                         (unsigned long long)c->nbytes);
    copy_job j = {t, f, p, hd, buf};
    const void *fault;
    int g = dora_guard_run(copy_fn, &j, &fault);
    if (g != 0) {
        free(buf);
        return g == 1 ? dora_errf(err, "'%s' changed while it was read (truncated?)", t->file)
                      : dora_errf(err, "cannot install the SIGBUS guard");
    }
    c->data = buf;
    return 0;
}

/* DST = SRC read from copies: transposed (F NULL) or part P of F. DST is
 * zeroed first and owns what it holds, even on failure. */
static int copied_module(const module *src, const dora_fused *f, int p, module *dst,
                         dora_err *err)
{
    memset(dst, 0, sizeof *dst);
    dst->nsrc = src->nsrc;
    if (!(dst->src = calloc(src->nsrc ? src->nsrc : 1, sizeof *dst->src)) ||
        !(dst->copies = calloc(src->nsrc + 1, sizeof *dst->copies)))
        return dora_errf(err, "out of memory");
    const char *name = src->base->name;
    if (f) {
        size_t n = strlen(name) + strlen(f->part[p]) + 3;
        if (!(dst->part_name = malloc(n)))
            return dora_errf(err, "out of memory");
        snprintf(dst->part_name, n, "%s[%s]", name, f->part[p]);
        name = dst->part_name;
    }
    if (make_copy(src->base, f, p, 0, name, &dst->copies[0], err) != 0)
        return -1;
    for (size_t s = 0; s < src->nsrc; s++) {
        if (make_copy(src->src[s].dense, f, p, 0, name, &dst->copies[s + 1], err) != 0)
            return -1;
        dst->src[s].dense = &dst->copies[s + 1];
    }
    dst->base = &dst->copies[0];
    dst->rows = dst->base->shape[0];
    dst->cols = dst->base->shape[1];
    return 0;
}

/* Steps whose rows are in Meta's RoPE order (align.h) read from copies in
 * HF's order, so that row n is the base's row n. */
static int rope_order(module *mods, size_t L, dora_err *err)
{
    for (size_t l = 0; l < L; l++) {
        module *md = &mods[l];
        for (size_t s = 0; s < md->nsrc; s++) {
            int64_t heads = md->src[s].rope_heads;
            if (heads <= 0)
                continue;
            if (md->rows % heads != 0 || (md->rows / heads) % 2 != 0 || md->base->ndim != 2)
                return dora_errf(err, "'%s': %lld rows are not %lld heads of an even size, so "
                                      "its rows cannot be put in HF's RoPE order",
                                 md->src[s].dense->file, (long long)md->rows, (long long)heads);
            if (!md->copies && !(md->copies = calloc(md->nsrc + 1, sizeof *md->copies)))
                return dora_errf(err, "out of memory");
            const dora_tensor *t = md->src[s].dense;
            if (make_copy(t, NULL, 0, md->rows / heads, t->name, &md->copies[s + 1], err) != 0)
                return -1;
            md->src[s].dense = &md->copies[s + 1];
            md->src[s].rope_heads = 0;
        }
    }
    return 0;
}

/* FT modules stored [in, out] -- Conv1D weights of the architecture CFG
 * names, or names matching --transpose -- read as [out, in], the axis an
 * adapter's fan_in_fan_out is read along; noted. */
static int transpose_modules(dora_result *res, const dora_config *cfg, module *mods, size_t L,
                             const dora_analysis_opts *opts, dora_err *err)
{
    const char *arch = dora_config_conv1d(cfg);
    regex_t re;
    int have_re = 0, rc = 0;
    size_t n = 0;
    if (opts->transpose) {
        if (regcomp(&re, opts->transpose, REG_EXTENDED | REG_NOSUB) != 0)
            return dora_errf(err, "--transpose '%s' does not compile", opts->transpose);
        have_re = 1;
    }
    for (size_t l = 0; rc == 0 && l < L; l++) {
        const char *name = mods[l].base->name;
        int by_arch = arch && dora_config_conv1d_name(name);
        int by_re = have_re && regexec(&re, name, 0, NULL, 0) == 0;
        if ((!by_arch && !by_re) || mods[l].base->ndim != 2)
            continue;
        module t;
        rc = copied_module(&mods[l], NULL, 0, &t, err);
        an_module_release(rc == 0 ? &mods[l] : &t);
        if (rc == 0)
            mods[l] = t;
        n++;
    }
    if (have_re)
        regfree(&re);
    if (rc == 0 && n)
        dora_notes_add(&res->notes, &res->nnotes, 0,
                       "%zu weight(s) stored [in, out] read as [out, in] (%s%s%s)", n,
                       arch ? "Conv1D of config.json model_type " : "", arch ? arch : "",
                       have_re ? (arch ? " and --transpose" : "--transpose") : "");
    return rc;
}

/* Rows of part P of F of the logical matrix M ([rows, ncols]) as float64
 * into DST ([part rows, NCOLS]): in a guarded region (adapter files are
 * mappings). */
typedef struct rows_job {
    const dora_matrix *m;
    const dora_fused *f;
    int p;
    double *dst;
} rows_job;

static void rows_fn(void *arg)
{
    const rows_job *j = arg;
    const int64_t n = dora_fused_rows(j->f, j->p), c = j->m->cols;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < c; k++)
            j->dst[i * c + k] = dora_matrix_get(j->m, dora_fused_row(j->f, j->p, i), k);
}

/* *T = the rows of part P of M as a float64 tensor named after SRC. */
static int part_rows(const dora_matrix *m, const dora_fused *f, int p, const dora_tensor *src,
                     dora_tensor *t, dora_err *err)
{
    *t = *src;
    t->dtype = DORA_DT_F64;
    t->ndim = 2;
    t->shape[0] = dora_fused_rows(f, p);
    t->shape[1] = m->cols;
    t->numel = (uint64_t)t->shape[0] * (uint64_t)t->shape[1];
    t->nbytes = t->numel * sizeof(double);
    double *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
    t->data = (const unsigned char *)buf;
    if (!buf)
        return dora_errf(err, "out of memory for the rows of '%s'", src->name);
    rows_job j = {m, f, p, buf};
    const void *fault;
    int g = dora_guard_run(rows_fn, &j, &fault);
    if (g != 0)
        return g == 1 ? dora_errf(err, "'%s' changed while it was read (truncated?)", src->file)
                      : dora_errf(err, "cannot install the SIGBUS guard");
    return 0;
}

/* DST = part P of F of the LoRA module SRC: the base's rows (read as [out,
 * in]), and for every step the rows of L (B) and of the DoRA magnitude; R (A)
 * and its Gram matrix are the whole module's. DST owns what it holds. */
static int lora_part(const module *src, const dora_fused *f, int p, module *dst, dora_err *err)
{
    const size_t S = src->nsrc;
    memset(dst, 0, sizeof *dst);
    dst->nsrc = S;
    dst->lora = 1;
    dst->rsum = src->rsum;
    if (!(dst->src = calloc(S ? S : 1, sizeof *dst->src)) ||
        !(dst->copies = calloc(S + 1, sizeof *dst->copies)) ||
        !(dst->part_ad = calloc(S ? S : 1, sizeof *dst->part_ad)) ||
        !(dst->part_t = calloc(2 * S + 1, sizeof *dst->part_t)))
        return dora_errf(err, "out of memory");
    size_t n = strlen(src->base->name) + strlen(f->part[p]) + 3;
    if (!(dst->part_name = malloc(n)))
        return dora_errf(err, "out of memory");
    snprintf(dst->part_name, n, "%s[%s]", src->base->name, f->part[p]);
    dora_tensor whole = *src->base; /* the base as [out, in] */
    if (src->transposed && make_copy(src->base, NULL, 0, 0, src->base->name, &whole, err) != 0)
        return -1;
    int rc = make_copy(&whole, f, p, 0, dst->part_name, &dst->copies[0], err);
    if (src->transposed)
        free((void *)whole.data);
    for (size_t s = 0; rc == 0 && s < S; s++) {
        const dora_adapted *ad = src->src[s].ad;
        dora_adapted *pa = &dst->part_ad[s];
        *pa = *ad;
        pa->fan_in_fan_out = 0;
        if ((rc = part_rows(&ad->L, f, p, ad->L.t, &dst->part_t[s], err)) != 0)
            break;
        pa->L = (dora_matrix){&dst->part_t[s], 0, dst->part_t[s].shape[0], ad->r};
        if (ad->magnitude) {
            const dora_matrix mm = {ad->magnitude, 0, ad->L.rows, 1};
            if ((rc = part_rows(&mm, f, p, ad->magnitude, &dst->part_t[S + s], err)) != 0)
                break;
            pa->magnitude = &dst->part_t[S + s];
        }
        dst->src[s] = src->src[s];
        dst->src[s].ad = pa;
    }
    dst->base = &dst->copies[0];
    dst->rows = dst->base->shape[0];
    dst->cols = dst->base->shape[1];
    return rc;
}

/* Each fused weight of *MODS replaced by its parts (fused.h); noted. */
static int split_modules(dora_result *res, const dora_config *cfg, module **mods, size_t *L,
                         dora_err *err)
{
    size_t extra = 0, nfused = 0;
    dora_fused f;
    const char *layout = NULL;
    for (size_t l = 0; l < *L; l++) {
        int r = (*mods)[l].base->ndim == 2
                    ? dora_fused_layout(cfg, (*mods)[l].base->name, (*mods)[l].rows, &f, err)
                    : 0;
        if (r < 0)
            return -1;
        extra += r ? (size_t)f.nparts - 1 : 0;
        nfused += (size_t)r;
        layout = r ? f.layout : layout;
    }
    if (!nfused)
        return 0;
    module *out = calloc(*L + extra, sizeof *out);
    if (!out)
        return dora_errf(err, "out of memory");
    size_t k = 0, l = 0;
    int rc = 0;
    for (; rc == 0 && l < *L; l++) {
        module *md = &(*mods)[l];
        int r = md->base->ndim == 2 ? dora_fused_layout(cfg, md->base->name, md->rows, &f, err)
                                    : 0;
        if (r == 0) {
            out[k++] = *md;
            continue;
        }
        for (int p = 0; rc == 0 && p < f.nparts; p++) /* a LoRA run: every step LoRA */
            rc = md->lora ? lora_part(md, &f, p, &out[k++], err)
                          : copied_module(md, &f, p, &out[k++], err);
        an_module_release(md);
    }
    for (; rc != 0 && l < *L; l++)
        an_module_release(&(*mods)[l]); /* the rest, not moved yet */
    free(*mods);
    *mods = out;
    *L = k;
    if (rc == 0)
        dora_notes_add(&res->notes, &res->nnotes, 0,
                       "%zu fused weight(s) split into their parts by '%s' (model_type %s, %s; "
                       "--no-split analyses them whole)",
                       nfused, dora_config_path(cfg),
                       dora_config_model_type(cfg) ? dora_config_model_type(cfg) : "not set",
                       layout);
    return rc;
}

int an_reshape_modules(dora_result *res, const dora_model *base, module **mods, size_t *L,
                       const dora_analysis_opts *opts, int adapter, dora_err *err)
{
    dora_config *cfg;
    if (dora_config_open(&cfg, base, err) != 0)
        return -1;
    int rc = 0;
    if (!adapter && (rc = rope_order(*mods, *L, err)) == 0)
        rc = transpose_modules(res, cfg, *mods, *L, opts, err);
    if (rc == 0 && !opts->no_split)
        rc = split_modules(res, cfg, mods, L, err);
    dora_config_close(cfg);
    return rc;
}
