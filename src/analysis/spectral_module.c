/* spectral_module.c - one module of spectrum: its updates formed from the
 * tensors (densely, or as factors), decomposed step by step, phi between the
 * steps; see include/dora/spectral.h. Column-major, as
 * src/analysis/spectral_int.h says. */
#define _POSIX_C_SOURCE 200809L
#include "analysis/spectral_int.h"
#include "dora/analyze.h"
#include "dora/guard.h"
#include "dora/kernel.h"
#include "dora/notes.h"
#include "core/util.h"
#include "analysis/analyze_int.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/* ---------------------------------------------------------------- forming matrices */

static int nonfinite(const dora_tensor *t, const char *what, int64_t row, dora_err *err)
{
    return dora_errf(err, "'%s': tensor '%s': %s %lld holds NaN or Inf (or values whose squares "
                          "overflow float64)",
                     t->file, t->name, what, (long long)row);
}

/* Rows [i0, i1) of the logical [rows, cols] matrix of T (transposed: T is
 * stored [cols, rows]) as float64 into blk [i1 - i0, cols]. */
static int tensor_block_raw(const dora_tensor *t, int transposed, int64_t rows, int64_t cols,
                        int64_t i0, int64_t i1, double *blk, double *seg, dora_err *err)
{
    const size_t sz = dora_dtype_size(t->dtype);
    if (!transposed) {
        for (int64_t i = i0; i < i1; i++) {
            double ss = dora_row_to_f64(t->data + (size_t)(i * cols) * sz, t->dtype, (size_t)cols,
                                        blk + (size_t)((i - i0) * cols));
            if (!isfinite(ss))
                return nonfinite(t, "row", i, err);
        }
        return 0;
    }
    /* stored row j holds column j of the logical matrix: read the segment
     * [i0, i1) of each (contiguous) and scatter it */
    const int64_t nb = i1 - i0;
    for (int64_t j = 0; j < cols; j++) {
        double ss = dora_row_to_f64(t->data + (size_t)(j * rows + i0) * sz, t->dtype, (size_t)nb,
                                    seg);
        if (!isfinite(ss))
            return nonfinite(t, "row", j, err);
        for (int64_t i = 0; i < nb; i++)
            blk[i * cols + j] = seg[i];
    }
    return 0;
}

/* A logical factor matrix as float64, row-major [rows, cols]. */
static int load_factor_raw(const dora_matrix *x, double *out, dora_err *err)
{
    const dora_tensor *t = x->t;
    if (!x->transposed) {
        const size_t sz = dora_dtype_size(t->dtype);
        for (int64_t i = 0; i < x->rows; i++) {
            double ss = dora_row_to_f64(t->data + (size_t)(i * x->cols) * sz, t->dtype,
                                        (size_t)x->cols, out + i * x->cols);
            if (!isfinite(ss))
                return nonfinite(t, "row", i, err);
        }
        return 0;
    }
    for (int64_t i = 0; i < x->rows; i++)
        for (int64_t j = 0; j < x->cols; j++) {
            double v = dora_matrix_get(x, i, j);
            if (!isfinite(v))
                return nonfinite(t, "column", i, err);
            out[i * x->cols + j] = v;
        }
    return 0;
}

/* Every read of a mapping goes through the three functions below, each a
 * guarded region (guard.h): a file truncated while it is read raises SIGBUS
 * there, which becomes an error naming the file and the tensor instead of a
 * crash. They only copy from the mapping into the caller's buffers. */
static int shrank(const dora_tensor *t, dora_err *err)
{
    return dora_errf(err, "'%s': tensor '%s': the file shrank while it was read (fault at %p)",
                     t->file, t->name, dora_guard_fault());
}

static int tensor_block(const dora_tensor *t, int transposed, int64_t rows, int64_t cols,
                        int64_t i0, int64_t i1, double *blk, double *seg, dora_err *err)
{
    sigjmp_buf env;
    if (sigsetjmp(env, 1) == 0) {
        dora_guard_enter(&env);
        int rc = tensor_block_raw(t, transposed, rows, cols, i0, i1, blk, seg, err);
        dora_guard_leave();
        return rc;
    }
    dora_guard_leave();
    return shrank(t, err);
}

static int load_factor(const dora_matrix *x, double *out, dora_err *err)
{
    sigjmp_buf env;
    if (sigsetjmp(env, 1) == 0) {
        dora_guard_enter(&env);
        int rc = load_factor_raw(x, out, err);
        dora_guard_leave();
        return rc;
    }
    dora_guard_leave();
    return shrank(x->t, err);
}

/* A whole 1-D tensor (a DoRA magnitude) as float64; its sum of squares. */
static int load_vector(const dora_tensor *t, size_t n, double *out, double *ss, dora_err *err)
{
    sigjmp_buf env;
    if (sigsetjmp(env, 1) == 0) {
        dora_guard_enter(&env);
        *ss = dora_row_to_f64(t->data, t->dtype, n, out);
        dora_guard_leave();
        return 0;
    }
    dora_guard_leave();
    return shrank(t, err);
}

static void store_row(const dora_dense *d, int64_t i, const double *v)
{
    if (d->f32) {
        float *p = (float *)d->a + i * d->n;
        for (int64_t j = 0; j < d->n; j++)
            p[j] = (float)v[j];
    } else {
        memcpy((double *)d->a + i * d->n, v, (size_t)d->n * sizeof *v);
    }
}

/* Where the rows of dW and W_t come from. */
typedef struct rowsrc {
    const dora_tensor *w0;   /* W0 (NULL: none) */
    int transposed;          /* W0 stored [in, out] */
    const dora_tensor *wt;   /* dense W_t (FT, modules_to_save), or NULL */
    const double *L, *R;     /* LoRA factors [m, r], [r, n], or NULL */
    int64_t r;
    double scale;
    const double *mag;       /* DoRA magnitude [m] (with W0), or NULL */
} rowsrc;

/* Form dW and/or W_t (either may be NULL) block by block in float64 and
 * store them in their precision; fro2 = ||dW||_F^2 in float64:
 *     dense:  dW = W_t - W0
 *     LoRA:   dW = s L R, W_t = W0 + dW
 *     DoRA:   V = W0 + s L R, W_t = m * V / ||V|| (rows), dW = W_t - W0
 * A DoRA row whose V is zero has no direction: its W_t row is taken as 0. */
static int form_rows(const rowsrc *src, int64_t m, int64_t n, const dora_dense *dw,
                     const dora_dense *wt, double *fro2, dora_err *err)
{
    int64_t nb = (int64_t)((256u << 10) / (size_t)n);
    if (nb < 1)
        nb = 1;
    if (nb > m)
        nb = m;
    if (src->transposed && nb < 64)
        nb = min64(64, m);
    double *b0 = alloc_n((size_t)(nb * n), sizeof *b0), *bu = alloc_n((size_t)(nb * n), sizeof *bu);
    double *seg = alloc_n((size_t)nb, sizeof *seg), *row = alloc_n((size_t)n, sizeof *row);
    double *rw = alloc_n((size_t)n, sizeof *rw);
    int rc = -1;
    double f = 0;
    if (!b0 || !bu || !seg || !row || !rw) {
        dora_errf(err, "out of memory forming a [%lld, %lld] update", (long long)m, (long long)n);
        goto done;
    }
    for (int64_t i0 = 0; i0 < m; i0 += nb) {
        const int64_t i1 = min64(m, i0 + nb), cnt = i1 - i0;
        if (src->w0 && tensor_block(src->w0, src->transposed, m, n, i0, i1, b0, seg, err) != 0)
            goto done;
        if (src->wt) {
            if (tensor_block(src->wt, 0, m, n, i0, i1, bu, seg, err) != 0)
                goto done;
        } else {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)cnt, (int)n, (int)src->r,
                        src->scale, src->L + i0 * src->r, (int)src->r, src->R, (int)n, 0.0, bu,
                        (int)n);
        }
        for (int64_t i = 0; i < cnt; i++) {
            const double *a = b0 + i * n, *u = bu + i * n;
            if (src->wt) { /* dense */
                for (int64_t j = 0; j < n; j++)
                    row[j] = u[j] - a[j];
                if (wt)
                    store_row(wt, i0 + i, u);
            } else if (!src->mag) { /* LoRA */
                memcpy(row, u, (size_t)n * sizeof *row);
                if (wt) {
                    for (int64_t j = 0; j < n; j++)
                        rw[j] = a[j] + u[j];
                    store_row(wt, i0 + i, rw);
                }
            } else { /* DoRA */
                double vv = 0;
                for (int64_t j = 0; j < n; j++) {
                    rw[j] = a[j] + u[j];
                    vv += rw[j] * rw[j];
                }
                double k = vv > 0 ? src->mag[i0 + i] / sqrt(vv) : 0.0;
                for (int64_t j = 0; j < n; j++) {
                    rw[j] *= k;
                    row[j] = rw[j] - a[j];
                }
                if (wt)
                    store_row(wt, i0 + i, rw);
            }
            for (int64_t j = 0; j < n; j++)
                f += row[j] * row[j];
            if (dw)
                store_row(dw, i0 + i, row);
        }
    }
    if (!isfinite(f)) {
        dora_errf(err, "the update's squared norm overflows float64");
        goto done;
    }
    *fro2 = f;
    rc = 0;
done:
    free(b0);
    free(bu);
    free(seg);
    free(row);
    free(rw);
    return rc;
}

static int dense_alloc(dora_dense *d, int64_t m, int64_t n, int bits)
{
    d->m = m;
    d->n = n;
    d->f32 = bits == 32;
    d->a = alloc_n((size_t)(m * n), d->f32 ? sizeof(float) : sizeof(double));
    return d->a ? 0 : -1;
}

/* W0 of a module as a dense matrix in the module's precision. */
static int load_w0(const rmod *rm, dora_dense *w0, int bits, dora_err *err)
{
    const int64_t m = rm->rows, n = rm->cols;
    if (dense_alloc(w0, m, n, bits) != 0)
        return dora_errf(err, "out of memory for the base weight '%s' [%lld, %lld]", rm->name,
                         (long long)m, (long long)n);
    int64_t nb = min64(m, max64(64, (int64_t)((256u << 10) / (size_t)n)));
    double *blk = alloc_n((size_t)(nb * n), sizeof *blk), *seg = alloc_n((size_t)nb, sizeof *seg);
    int rc = -1;
    if (!blk || !seg) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (int64_t i0 = 0; i0 < m; i0 += nb) {
        int64_t i1 = min64(m, i0 + nb);
        if (tensor_block(rm->base, rm->transposed, m, n, i0, i1, blk, seg, err) != 0)
            goto done;
        for (int64_t i = i0; i < i1; i++)
            store_row(w0, i, blk + (i - i0) * n);
    }
    rc = 0;
done:
    free(blk);
    free(seg);
    return rc;
}

/* ---------------------------------------------------------------- one module */

/* The base's SVD in one orientation (a Conv1D weight is read [out, in] by a
 * fan_in_fan_out adapter but [in, out] by a full fine-tuning run). */
typedef struct basecache {
    int ready;
    dora_dense w0;
    dora_svd svd; /* every left singular vector */
} basecache;

static void basecache_release(basecache *b)
{
    free(b->w0.a);
    dora_svd_release(&b->svd);
    memset(b, 0, sizeof *b);
}

/* k for phi: the subspace dimension an update offers. */
static int64_t phi_dim(const dora_svd *v, int64_t K) { return min64(K, min64(v->nu, v->rank)); }

/* phi grid [K, K] (-1 outside the defined block) of two updates; returns k = min(k1, k2)
 * and stores the summary phi(k, k) in *summary (-1 when undefined). */
static int phi_pair(const dora_svd *a, const dora_svd *b, int64_t K, double *grid, int32_t *ka,
                    int32_t *kb, double *summary, double *tmp, dora_err *err)
{
    int64_t k1 = phi_dim(a, K), k2 = phi_dim(b, K);
    *ka = (int32_t)k1;
    *kb = (int32_t)k2;
    *summary = -1;
    for (int64_t i = 0; i < K * K; i++)
        grid[i] = -1;
    if (k1 < 1 || k2 < 1)
        return 0;
    if (dora_subspace_phi(a->m, a->u, k1, b->u, k2, tmp, err) != 0)
        return -1;
    for (int64_t i = 0; i < k1; i++)
        for (int64_t j = 0; j < k2; j++)
            grid[i * K + j] = tmp[i * k2 + j];
    int64_t k = min64(k1, k2);
    *summary = grid[(k - 1) * K + (k - 1)];
    return 0;
}

/* The numbers of step S of a module from its SVD SV and ||dW||_F^2 FRO2: at
 * AT of the run's [S, L] arrays, and the stored singular values. */
static void store_numbers(dora_spec_run *res, dora_spec_module *mo, size_t s, size_t at,
                          const dora_svd *sv, double fro2)
{
    const double s1 = sv->ns ? sv->s[0] : 0.0;
    res->fro_norm[at] = sqrt(fro2);
    res->sigma1[at] = s1;
    res->stable_rank[at] = dora_stable_rank(fro2, s1);
    res->svd_method[at] = (int32_t)sv->method;
    /* all the values when the spectrum is complete, else against ||dW||_F^2 */
    double total = fro2;
    if (sv->complete) {
        total = 0;
        for (int64_t i = 0; i < sv->ns; i++)
            total += sv->s[i] * sv->s[i];
    }
    res->r90[at] = dora_energy_rank(sv->s, sv->ns, total, 0.9);
    for (int64_t i = 0; i < mo->nsigma && i < sv->ns; i++)
        mo->sigma[s * (size_t)mo->nsigma + (size_t)i] = sv->s[i];
}

/* One step of one module of one run: the update's SVD into *sv, its numbers
 * into the results, and the intruders when the base is there. */
static int do_step(sctx *c, size_t ri, size_t l, size_t s, basecache *bc, dora_svd *sv,
                   int64_t kvec, dora_err *err)
{
    const rctx *rc = &c->rc[ri];
    const rmod *rm = &rc->mods[l];
    dora_spec_run *res = &c->sp->runs[ri];
    dora_spec_module *mo = &res->mods[l];
    const size_t L = res->nmodules, at = s * L + l;
    const int64_t m = rm->rows, n = rm->cols;
    const int dense_bits = m * n <= c->opts->f64_max_elems ? 64 : 32;
    const dora_adapted *ad = rm->ad[s];
    double *Lf = NULL, *Rf = NULL, *mag = NULL, fro2 = 0;
    dora_dense dw = {0, 0, 0, NULL}, wt = {0, 0, 0, NULL};
    dora_svd wsv;
    memset(&wsv, 0, sizeof wsv);
    int rc_ = -1;
    const int with_base = c->base != NULL;

    rowsrc src;
    memset(&src, 0, sizeof src);
    src.w0 = rm->base;
    src.transposed = rm->transposed;
    if (ad) {
        const int64_t r = ad->r;
        Lf = alloc_n((size_t)(m * r), sizeof *Lf);
        Rf = alloc_n((size_t)(r * n), sizeof *Rf);
        if (!Lf || !Rf) {
            dora_errf(err, "out of memory for the factors");
            goto done;
        }
        if (load_factor(&ad->L, Lf, err) != 0 || load_factor(&ad->R, Rf, err) != 0)
            goto done;
        src.L = Lf;
        src.R = Rf;
        src.r = r;
        src.scale = ad->scale;
        if (ad->magnitude && with_base) {
            mag = alloc_n((size_t)m, sizeof *mag);
            if (!mag) {
                dora_errf(err, "out of memory");
                goto done;
            }
            double ss;
            if (load_vector(ad->magnitude, (size_t)m, mag, &ss, err) != 0)
                goto done;
            if (!isfinite(ss)) {
                nonfinite(ad->magnitude, "row", 0, err);
                goto done;
            }
            src.mag = mag;
        }
    } else {
        src.wt = rm->wt[s];
    }
    if (with_base && dense_alloc(&wt, m, n, dense_bits) != 0) {
        dora_errf(err, "out of memory for W_t [%lld, %lld]", (long long)m, (long long)n);
        goto done;
    }
    if (ad && !src.mag) {
        /* low-rank: exact SVD from the factors; W_t only for the intruders */
        if (dora_svd_lowrank(sv, m, n, ad->r, Lf, Rf, ad->scale, kvec, err) != 0)
            goto done;
        for (int64_t i = 0; i < sv->ns; i++)
            fro2 += sv->s[i] * sv->s[i];
        double unused;
        if (with_base && form_rows(&src, m, n, NULL, &wt, &unused, err) != 0)
            goto done;
    } else {
        if (dense_alloc(&dw, m, n, dense_bits) != 0) {
            dora_errf(err, "out of memory for the update [%lld, %lld]", (long long)m, (long long)n);
            goto done;
        }
        if (form_rows(&src, m, n, &dw, with_base ? &wt : NULL, &fro2, err) != 0)
            goto done;
        if (dora_svd_dense(sv, &dw, c->opts->top, kvec, c->opts->randomized, err) != 0)
            goto done;
        free(dw.a);
        dw.a = NULL;
    }
    store_numbers(res, mo, s, at, sv, fro2);

    if (with_base) {
        const int64_t kt = min64(DORA_SPEC_INTRUDER_TOP, min64(m, n));
        /* W_t's top vectors: from its Gram matrix, verified on W_t (--exact: ?gesvdx) */
        if ((c->opts->randomized ? dora_svd_top(&wsv, &wt, kt, err)
                                 : dora_svd_dense(&wsv, &wt, kt, kt, 0, err)) != 0)
            goto done;
        int64_t cnt = dora_intruders(m, bc->svd.u, bc->svd.nu, wsv.u, kt, c->opts->threshold,
                                     mo->intruder_cos + s * DORA_SPEC_INTRUDER_TOP);
        if (cnt < 0) {
            dora_errf(err, "out of memory");
            goto done;
        }
        res->intruders[at] = (int32_t)cnt;
    }
    rc_ = 0;
done:
    if (rc_ != 0) {
        const char *path = rc->run->steps[s].path;
        if (strstr(err->msg, path))
            dora_errprefix(err, "run '%s', step %lld, module '%s'", rc->name,
                           (long long)rc->run->steps[s].step, rm->name);
        else
            dora_errprefix(err, "run '%s', step %lld ('%s'), module '%s'", rc->name,
                           (long long)rc->run->steps[s].step, path, rm->name);
    }
    free(Lf);
    free(Rf);
    free(mag);
    free(dw.a);
    free(wt.a);
    dora_svd_release(&wsv);
    return rc_;
}

/* A note from a module's thread. */
static void locked_note(sctx *c, const char *msg)
{
    pthread_mutex_lock(c->lock);
    dora_notes_add(&c->sp->notes, &c->sp->nnotes, 0, "%s", msg);
    pthread_mutex_unlock(c->lock);
}

/* W0's SVD with every left vector, from the cache when it holds it, else computed
 * (and stored there). A cache that cannot be written is a note, not a failure. */
static int base_svd(sctx *c, const rmod *rm, basecache *b, dora_err *err)
{
    const int bits = rm->rows * rm->cols <= c->opts->f64_max_elems ? 64 : 32;
    const char *dir = c->opts->cache_dir;
    char why[DORA_ERR_MAX + 64];
    int hit = dir ? spec_cache_load(dir, rm, bits, &b->svd, why, sizeof why) : 0;
    if (hit < 0)
        return dora_errf(err, "out of memory");
    if (dir && why[0])
        locked_note(c, why);
    if (!hit) {
        if (load_w0(rm, &b->w0, bits, err) != 0)
            return -1;
        if (dora_svd_dense(&b->svd, &b->w0, 0, min64(rm->rows, rm->cols), 0, err) != 0) {
            dora_errprefix(err, "base '%s', tensor '%s'", rm->base->file, rm->name);
            return -1;
        }
        dora_err e = {0};
        if (dir && spec_cache_store(dir, rm, &b->svd, &e) != 0) {
            snprintf(why, sizeof why, "the base's SVD of '%s' is not kept in the cache: %s",
                     rm->name, e.msg);
            locked_note(c, why);
        }
    }
    pthread_mutex_lock(c->lock);
    c->cache_hits += hit == 1;
    c->cache_stores += dir && !hit;
    pthread_mutex_unlock(c->lock);
    b->ready = 1;
    return 0;
}

/* The steps of run RI whose subspaces a comparison of module G with another run
 * uses: marked in KEEP [S] (when not NULL); their count. */
static size_t kept_steps(const sctx *c, size_t g, size_t ri, unsigned char *keep)
{
    size_t cnt = 0;
    const size_t S = c->rc[ri].run->nsteps;
    unsigned char *mark = keep ? keep : calloc(S, 1);
    if (!mark)
        return S; /* counting only: assume all */
    for (size_t ci = 0; ci < c->sp->ncompare; ci++) {
        const dora_spec_compare *cp = &c->sp->cmp[ci];
        if (c->cmp_mi[ci * c->ng + g] == SIZE_MAX || (cp->run_a != ri && cp->run_b != ri))
            continue;
        const size_t *idx = cp->run_a == ri ? cp->idx_a : cp->idx_b;
        for (size_t p = 0; p < cp->npairs; p++) {
            cnt += !mark[idx[p]];
            mark[idx[p]] = 1;
        }
    }
    if (!keep)
        free(mark);
    return cnt;
}

/* phi pair P of run RI's module L between two of its steps' subspaces SV. */
static int run_pair(sctx *c, size_t ri, size_t l, size_t p, const dora_svd *sv, double *tmp,
                    dora_err *err)
{
    dora_spec_run *res = &c->sp->runs[ri];
    dora_spec_module *mo = &res->mods[l];
    const int64_t K = c->opts->subspace;
    const size_t ta = (size_t)res->pairs[2 * p], tb = (size_t)res->pairs[2 * p + 1];
    double summary;
    if (phi_pair(&sv[ta], &sv[tb], K, mo->phi + p * (size_t)(K * K), &mo->phi_k[2 * p],
                 &mo->phi_k[2 * p + 1], &summary, tmp, err) != 0)
        return -1;
    if (tb == ta + 1)
        res->phi_prev[tb * res->nmodules + l] = summary;
    if (tb == res->nsteps - 1)
        res->phi_final[ta * res->nmodules + l] = summary;
    return 0;
}

/* Everything about global module g: every run's steps, the phi pairs within
 * each run, the comparisons between runs. */
static int spec_do_module(sctx *c, size_t g, dora_err *err)
{
    const size_t R = c->nruns;
    const int64_t K = c->opts->subspace;
    basecache bc[2];
    memset(bc, 0, sizeof bc);
    unsigned char *keep = NULL;
    dora_svd **svs = calloc(R, sizeof *svs);
    double *tmp = alloc_n((size_t)(K * K), sizeof *tmp);
    int rc = -1;
    if (!svs || !tmp) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t ri = 0; ri < R; ri++) {
        size_t l = c->g[g].idx[ri];
        if (l == SIZE_MAX)
            continue;
        const rctx *rx = &c->rc[ri];
        const rmod *rm = &rx->mods[l];
        const size_t S = rx->run->nsteps;
        dora_spec_run *res = &c->sp->runs[ri];
        if (!(svs[ri] = calloc(S, sizeof **svs))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        basecache *b = &bc[rm->transposed ? 1 : 0];
        if (c->base && !b->ready && base_svd(c, rm, b, err) != 0)
            goto done;
        const int64_t kvec = rx->need_vectors ? K : 0;
        /* the final step first, then the others in order; a step's subspace is kept while
         * a pair still needs it (the next step's, a comparison's): a module holds the
         * vectors of three steps and of the compared ones, not of all S */
        if (!(keep = calloc(S, 1))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        kept_steps(c, g, ri, keep);
        for (size_t o = 0; o < S; o++) {
            const size_t s = o == 0 ? S - 1 : o - 1;
            if (do_step(c, ri, l, s, b, &svs[ri][s], kvec, err) != 0)
                goto done;
            if (s == S - 1)
                continue;
            /* pairs (s - 1, s), (s, S - 1); pair p = t - 1 is (t - 1, t), p = S - 1 + t is
             * (t, S - 1) for t + 2 < S */
            if ((s >= 1 && run_pair(c, ri, l, s - 1, svs[ri], tmp, err) != 0) ||
                (s + 2 < S && run_pair(c, ri, l, S - 1 + s, svs[ri], tmp, err) != 0) ||
                (s + 2 == S && run_pair(c, ri, l, S - 2, svs[ri], tmp, err) != 0))
                goto done;
            if (s >= 1 && !keep[s - 1])
                dora_svd_release(&svs[ri][s - 1]);
        }
        if (S >= 2 && !keep[S - 2])
            dora_svd_release(&svs[ri][S - 2]);
        free(keep);
        keep = NULL;
        /* an update with a direction is identical to itself */
        res->phi_final[(S - 1) * res->nmodules + l] = svs[ri][S - 1].rank > 0 ? 1.0 : -1.0;
    }
    /* between runs */
    for (size_t ci = 0; ci < c->sp->ncompare; ci++) {
        dora_spec_compare *cp = &c->sp->cmp[ci];
        size_t mi = c->cmp_mi[ci * c->ng + g];
        if (mi == SIZE_MAX)
            continue;
        for (size_t p = 0; p < cp->npairs; p++) {
            const dora_svd *a = &svs[cp->run_a][cp->idx_a[p]], *b = &svs[cp->run_b][cp->idx_b[p]];
            int32_t ka, kb;
            if (phi_pair(a, b, K, cp->grid[mi] + p * (size_t)(K * K), &ka, &kb,
                         &cp->phi[p * cp->nmodules + mi], tmp, err) != 0)
                goto done;
            cp->k[p * cp->nmodules + mi] = ka < kb ? ka : kb;
        }
    }
    rc = 0;
done:
    for (size_t ri = 0; svs && ri < R; ri++) {
        if (!svs[ri])
            continue;
        for (size_t s = 0; s < c->rc[ri].run->nsteps; s++)
            dora_svd_release(&svs[ri][s]);
        free(svs[ri]);
    }
    free(svs);
    free(tmp);
    free(keep);
    basecache_release(&bc[0]);
    basecache_release(&bc[1]);
    return rc;
}

/* ---------------------------------------------------------------- modules in parallel */

/* About the most that module G holds at once: W0, its vectors and its SVD's
 * workspace; per step W_t, dW and a copy for LAPACK with its vectors (a LoRA update
 * without the base: its factors, their QR and the r x r core); the values and
 * subspaces of the steps a phi pair still needs (three, and the compared ones). */
static uint64_t module_bytes(const sctx *c, size_t g)
{
    uint64_t most = 0, kept = 0;
    for (size_t ri = 0; ri < c->nruns; ri++) {
        size_t l = c->g[g].idx[ri];
        if (l == SIZE_MAX)
            continue;
        const rmod *rm = &c->rc[ri].mods[l];
        const uint64_t m = (uint64_t)rm->rows, n = (uint64_t)rm->cols, k = m < n ? m : n;
        const uint64_t es = rm->rows * rm->cols <= c->opts->f64_max_elems ? 8 : 4;
        const uint64_t r = (uint64_t)rm->maxr, K = (uint64_t)c->opts->subspace;
        const uint64_t b = !rm->dense && !c->base ? 8 * (2 * (m + n) * r + 8 * r * r + m * K)
                                                  : es * (6 * m * n + 6 * k * k) + 8 * m * k;
        most = b > most ? b : most;
        const uint64_t S = c->rc[ri].run->nsteps, held = S < 3 ? S : 3;
        kept += (held + kept_steps(c, g, ri, NULL)) * 8 * (k + m * K);
    }
    return most + kept;
}

typedef struct mpool {
    sctx *c;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    size_t next;          /* next module to take */
    uint64_t budget, used;
    int running;
    size_t failed;        /* the first failing module, SIZE_MAX while none */
    dora_err err;
} mpool;

static void *module_worker(void *arg)
{
    mpool *p = arg;
    an_blas_single_thread();
    pthread_mutex_lock(&p->lock);
    while (p->next < p->c->ng && p->failed == SIZE_MAX) {
        const size_t g = p->next;
        const uint64_t need = module_bytes(p->c, g);
        if (p->running > 0 && p->used + need > p->budget) { /* wait for memory */
            pthread_cond_wait(&p->freed, &p->lock);
            continue;
        }
        p->next++;
        p->used += need;
        p->running++;
        pthread_mutex_unlock(&p->lock);
        dora_err e = {0};
        dora_progress_label(p->c->opts->progress, "module '%s'", p->c->g[g].name);
        int rc = spec_do_module(p->c, g, &e);
        dora_progress_add_done(p->c->opts->progress, 0, 1);
        pthread_mutex_lock(&p->lock);
        p->used -= need;
        p->running--;
        if (rc != 0 && (p->failed == SIZE_MAX || g < p->failed)) {
            p->failed = g;
            p->err = e;
        }
        pthread_cond_broadcast(&p->freed);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int spec_do_modules(sctx *c, dora_err *err)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN), pages = sysconf(_SC_PHYS_PAGES);
    long psize = sysconf(_SC_PAGESIZE);
    size_t T = c->opts->threads > 0 ? (size_t)c->opts->threads : ncpu > 0 ? (size_t)ncpu : 1;
    if (T > c->ng)
        T = c->ng ? c->ng : 1;
    mpool p;
    memset(&p, 0, sizeof p);
    p.c = c;
    p.failed = SIZE_MAX;
    p.budget = c->opts->mem_bytes > 0                 ? (uint64_t)c->opts->mem_bytes
               : pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize / 2
                                        : UINT64_C(4) << 30;
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.freed, NULL);
    c->lock = &p.lock; /* not held while a module runs: its notes and counts take it */
    pthread_t *tid = calloc(T, sizeof *tid);
    size_t started = 0;
    if (tid)
        for (; started + 1 < T; started++)
            if (pthread_create(&tid[started], NULL, module_worker, &p) != 0)
                break;
    module_worker(&p); /* this thread works too */
    for (size_t i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    pthread_mutex_destroy(&p.lock);
    pthread_cond_destroy(&p.freed);
    c->lock = NULL;
    if (c->opts->cache_dir && p.failed == SIZE_MAX)
        dora_notes_add(&c->sp->notes, &c->sp->nnotes, 0,
                       "the base's SVDs: %zu from the cache '%s', %zu computed and kept there",
                       c->cache_hits, c->opts->cache_dir, c->cache_stores);
    if (p.failed != SIZE_MAX) {
        *err = p.err;
        return -1;
    }
    return 0;
}
