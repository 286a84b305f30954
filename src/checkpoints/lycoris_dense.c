/* lycoris_dense.c - LyCORIS's algorithms that are not factor products, in kohya files:
 * full (diff), (IA)^3, GLoRA on linear modules and Diag-OFT. How each module is read
 * (lycoris_build_*, called by kohya.c's collect) and formed against the base tensor
 * (lycoris_form_*, called by kohya_resolve), following LyCORIS's own modules
 * (lycoris/modules/full.py, ia3.py, glora.py, diag_oft.py); docs/adapters.md. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "checkpoints/kohya_int.h"
#include "core/le.h"
#include "dora/tensor.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* LyCORIS's (IA)^3 on_input: one integer (or boolean, or floating) 0 or 1. */
static int read_flag(const dora_adapter *a, const dora_tensor *t, int *v, dora_err *err)
{
    double x = NAN;
    if (t->numel == 1 && t->nbytes >= dora_dtype_size(t->dtype)) {
        if (t->dtype == DORA_DT_I64 || t->dtype == DORA_DT_U64)
            x = (double)le_load64(t->data);
        else if (t->dtype == DORA_DT_I32 || t->dtype == DORA_DT_U32)
            x = (double)le_load32(t->data);
        else if (t->dtype == DORA_DT_BOOL || t->dtype == DORA_DT_U8 || t->dtype == DORA_DT_I8)
            x = t->data[0];
        else
            x = dora_elem_to_f64(t->data, t->dtype);
    }
    if (x != 0 && x != 1)
        return dora_errf(err, "'%s': tensor '%s' must be one number, 0 (output rows scaled) or 1 "
                              "(input columns: train_on_input), as LyCORIS's (IA)^3 saves it",
                         a->weights->path, t->name);
    *v = x == 1;
    return 0;
}

/* LyCORIS's full (diff [out, in...]: W_t = W0 + diff, formed densely against
 * the base by kohya_resolve; diff_b, the bias change, is not analysed, as no
 * bias is) and (IA)^3 (weight [n] or conv [1, n, 1, 1]: W_t = W0 * (1 +
 * weight) on the output rows, or on the input columns when on_input is 1:
 * ia3.py make_weight), with OTHER = diff, diff_b, weight, on_input. */
int lycoris_build_other(dora_adapter *a, const pending *p, const dora_tensor *const other[4],
                       dora_adapted *m, const char **fam, dora_err *err)
{
    const char *wf = a->weights->path, *meth;
    const dora_tensor *diff = other[0], *w = other[2], *onin = other[3];
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    m->r = 1;
    m->alpha = 1;
    m->scale = 1;
    if (diff || other[1]) {
        if (!diff || w || onin)
            return dora_errf(err, "'%s': module '%s': %s", wf, p->module,
                             diff ? "full's diff with (IA)^3's weight / on_input"
                                  : "diff_b (LyCORIS full's bias change) without diff");
        if (!dora_dtype_is_analysable(diff->dtype) || diff->ndim < 2)
            return dora_errf(err, "'%s': tensor '%s' is %s of rank %d, not a floating weight "
                                  "change of rank >= 2",
                             wf, diff->name, dora_dtype_name(diff->dtype), diff->ndim);
        meth = "ft"; /* the change of the whole weight, as a full fine-tune's */
        m->kind = DORA_ADAPTED_SAVED;
        m->saved = diff;
        m->aux = diff; /* W0 + diff is formed by kohya_resolve */
        m->layout = "full";
    } else {
        if (!w || !onin)
            return dora_errf(err, "'%s': module '%s' has %s but no %s: LyCORIS's (IA)^3 saves "
                                  "both (on_input says whether rows or input columns are scaled)",
                             wf, p->module, w ? w->name : onin->name, w ? "on_input" : "weight");
        int ff = 0;
        if (read_flag(a, onin, &ff, err) != 0)
            return -1;
        int ok = dora_dtype_is_analysable(w->dtype) &&
                 (w->ndim == 1 || (w->ndim >= 3 && w->shape[0] == 1));
        for (int d = 2; ok && d < w->ndim; d++)
            ok = w->shape[d] == 1;
        if (!ok) {
            char s[256];
            dora_shape_str(w, s, sizeof s);
            return dora_errf(err, "'%s': tensor '%s' is %s %s: LyCORIS's (IA)^3 weight is "
                                  "floating [n] (linear) or [1, n, 1, 1] (conv)",
                             wf, w->name, dora_dtype_name(w->dtype), s);
        }
        meth = "ia3";
        m->kind = DORA_ADAPTED_LORA;
        m->ia3 = w;
        m->ia3_ff = ff;
        m->ia3_add = 1; /* LyCORIS scales by 1 + weight */
        m->layout = ff ? "ia3-ff" : "ia3";
    }
    if (*fam && strcmp(*fam, meth) != 0)
        return dora_errf(err, "'%s': module '%s' is %s but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, meth, *fam);
    *fam = meth;
    return 0;
}

/* LyCORIS's GLoRA on a linear module, G = (a1, a2, b1, b2).weight: glora.py
 * make_weight (which get_merged_weight uses) is s (b1 b2 + W0 a1 a2), s =
 * alpha / r, with a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in]. As L R:
 * L = [b1, W0 a1] (formed by kohya_resolve against the base), R = [b2; a2]. */
int lycoris_build_glora(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                       const dora_tensor *const g[4], dora_adapted *m, const char **fam,
                       dora_err *err)
{
    const char *wf = a->weights->path;
    static const char *const names[4] = {"a1.weight", "a2.weight", "b1.weight", "b2.weight"};
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    for (int i = 0; i < 4; i++) {
        if (!g[i])
            return dora_errf(err, "'%s': module '%s' has GLoRA tensors but no %s", wf, p->module,
                             names[i]);
        if (g[i]->ndim != 2 || !dora_dtype_is_analysable(g[i]->dtype)) {
            char s[256];
            dora_shape_str(g[i], s, sizeof s);
            return dora_errf(err, "'%s': tensor '%s' is %s %s: this tool reads GLoRA on linear "
                                  "modules (floating 2-D factors), not on convs",
                             wf, g[i]->name, dora_dtype_name(g[i]->dtype), s);
        }
    }
    const dora_tensor *a1 = g[0], *a2 = g[1], *b1 = g[2], *b2 = g[3];
    const int64_t r = a2->shape[0], in = a2->shape[1], out = b1->shape[0];
    const dora_tensor *bad = a1->shape[0] != in || a1->shape[1] != r ? a1
                             : b1->shape[1] != r                      ? b1
                             : b2->shape[0] != r || b2->shape[1] != in ? b2
                                                                       : NULL;
    if (bad || r < 1) {
        char s[256];
        dora_shape_str(bad ? bad : a2, s, sizeof s);
        return dora_errf(err, "'%s': tensor '%s' is %s, but GLoRA's factors are a1 [in, r], a2 "
                              "[r, in], b1 [out, r], b2 [r, in] with a2's r = %lld and in = %lld",
                         wf, (bad ? bad : a2)->name, s, (long long)r, (long long)in);
    }
    double alpha = 0;
    if ((alpha_t && kohya_read_alpha(a, alpha_t, &alpha, err) != 0) ||
        fam_fits(a, p->module, 2 * r, out + in, err) != 0)
        return -1;
    dora_tensor *R = adapter_own(m, a2, 2 * r, in), *L = adapter_own(m, b1, out, 2 * r);
    if (!R || !L)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    double *rd = (double *)(void *)R->data, *ld = (double *)(void *)L->data;
    for (int64_t k = 0; k < r; k++)
        for (int64_t j = 0; j < in; j++) {
            rd[k * in + j] = fam_at(b2, k * in + j);
            rd[(r + k) * in + j] = fam_at(a2, k * in + j);
        }
    for (int64_t i = 0; i < out; i++) /* W0 a1, the other r columns: kohya_resolve */
        for (int64_t k = 0; k < r; k++)
            ld[i * 2 * r + k] = fam_at(b1, i * r + k);
    m->kind = DORA_ADAPTED_LORA;
    m->layout = "glora";
    m->aux = a1;
    m->R = adapter_matrix(R, 0);
    m->L = adapter_matrix(L, 0);
    m->r = 2 * r;
    m->alpha = alpha_t ? alpha : (double)r;
    m->scale = alpha_t ? alpha / (double)r : 1.0;
    if (adapter_check_rank_scale(a, p->module, m, "GLoRA's 2 r", err) != 0)
        return -1;
    if (*fam && strcmp(*fam, "glora") != 0)
        return dora_errf(err, "'%s': module '%s' is glora but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, *fam);
    *fam = "glora";
    return 0;
}

/* LyCORIS's Diag-OFT, OFT = (oft_blocks [n, b, b], rescale [n b, 1...] or
 * NULL): formed against the base by kohya_resolve (form_oft). alpha is its
 * constraint (0: none). BOFT's 4-D oft_blocks (butterfly factors) are refused. */
int lycoris_build_oft(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                     const dora_tensor *const oft[2], dora_adapted *m, const char **fam,
                     dora_err *err)
{
    const char *wf = a->weights->path;
    const dora_tensor *blk = oft[0], *rs = oft[1];
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    if (!blk)
        return dora_errf(err, "'%s': module '%s' has '%s' but no oft_blocks", wf, p->module,
                         rs->name);
    char s[256];
    dora_shape_str(blk, s, sizeof s);
    if (blk->ndim == 4)
        return dora_errf(err, "'%s': tensor '%s' is %s: LyCORIS's BOFT (butterfly OFT, 4-D "
                              "oft_blocks), which this tool does not read (it reads Diag-OFT's "
                              "[blocks, b, b])",
                         wf, blk->name, s);
    if (blk->ndim != 3 || blk->shape[1] != blk->shape[2] || blk->shape[1] < 1 ||
        !dora_dtype_is_analysable(blk->dtype))
        return dora_errf(err, "'%s': tensor '%s' is %s %s: Diag-OFT's oft_blocks are floating "
                              "[blocks, b, b]",
                         wf, blk->name, dora_dtype_name(blk->dtype), s);
    const int64_t out = blk->shape[0] * blk->shape[1];
    if (blk->shape[1] > KOHYA_OFT_MAX_BLOCK)
        return dora_errf(err, "'%s': tensor '%s' is %s: Diag-OFT blocks of %lld rows; this tool "
                              "solves blocks of up to %d (LyCORIS's are the factor, a few tens)",
                         wf, blk->name, s, (long long)blk->shape[1], KOHYA_OFT_MAX_BLOCK);
    if (rs) {
        int ok = dora_dtype_is_analysable(rs->dtype) && rs->ndim >= 2 && rs->shape[0] == out;
        for (int d = 1; ok && d < rs->ndim; d++)
            ok = rs->shape[d] == 1;
        if (!ok) {
            dora_shape_str(rs, s, sizeof s);
            return dora_errf(err, "'%s': tensor '%s' is %s %s: OFT's rescale is floating [out, "
                                  "1(, 1, 1)] with out = %lld (blocks x b)",
                             wf, rs->name, dora_dtype_name(rs->dtype), s, (long long)out);
        }
    }
    double c = 0; /* the constraint: alpha as saved, 0 for none */
    if (alpha_t) {
        c = alpha_t->numel == 1 ? dora_elem_to_f64(alpha_t->data, alpha_t->dtype) : NAN;
        if (!isfinite(c) || c < 0)
            return dora_errf(err, "'%s': tensor '%s' must be one finite number >= 0 (OFT's "
                                  "constraint)",
                             wf, alpha_t->name);
    }
    m->kind = DORA_ADAPTED_SAVED;
    m->saved = blk;
    m->aux = blk;
    m->rescale = rs;
    m->layout = "oft";
    m->r = blk->shape[1];
    m->alpha = c;
    m->scale = 1;
    if (*fam && strcmp(*fam, "oft") != 0)
        return dora_errf(err, "'%s': module '%s' is oft but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, *fam);
    *fam = "oft";
    return 0;
}

/* W0 + diff, in place on V = W0's [out, in] rows. */
static int merge_full(const dora_adapter *a, const dora_adapted *m, double *v, int64_t out,
                      int64_t in, dora_err *err)
{
    (void)a;
    (void)err;
    for (int64_t i = 0; i < out * in; i++)
        v[i] += fam_at(m->aux, i);
    return 0;
}

/* X = A^-1 B for the N x N float64 A (destroyed) and B (X in place), by
 * Gaussian elimination with partial pivoting; -1 when A is singular. */
static int solve(double *A, double *B, int64_t n)
{
    for (int64_t c = 0; c < n; c++) {
        int64_t piv = c;
        for (int64_t i = c + 1; i < n; i++)
            if (fabs(A[i * n + c]) > fabs(A[piv * n + c]))
                piv = i;
        if (A[piv * n + c] == 0)
            return -1;
        for (int64_t j = 0; piv != c && j < n; j++) {
            double t = A[c * n + j];
            A[c * n + j] = A[piv * n + j];
            A[piv * n + j] = t;
            t = B[c * n + j];
            B[c * n + j] = B[piv * n + j];
            B[piv * n + j] = t;
        }
        for (int64_t i = c + 1; i < n; i++) {
            double f = A[i * n + c] / A[c * n + c];
            for (int64_t j = 0; j < n; j++) {
                A[i * n + j] -= f * A[c * n + j];
                B[i * n + j] -= f * B[c * n + j];
            }
        }
    }
    for (int64_t c = n - 1; c >= 0; c--)
        for (int64_t j = 0; j < n; j++) {
            double x = B[c * n + j];
            for (int64_t k = c + 1; k < n; k++)
                x -= A[c * n + k] * B[k * n + j];
            B[c * n + j] = x / A[c * n + c];
        }
    return 0;
}

/* Diag-OFT (diag_oft.py get_r, make_weight): Q = blocks - blocks^T, scaled to
 * norm alpha out when alpha > 0 and |Q| + 1e-8 exceeds it; R_k = (I + Q_k)
 * (I - Q_k)^-1; block k of W_t is R_k^T W0_k (einsum "k n m, k n ... -> k m
 * ..."), R_k^T = (I + Q_k)^-1 (I - Q_k) as Q_k is skew; rows times rescale. */
static int merge_oft(const dora_adapter *a, const dora_adapted *m, double *v, int64_t out,
                     int64_t in, dora_err *err)
{
    const dora_tensor *blk = m->aux;
    const int64_t nb = blk->shape[0], b = blk->shape[1];
    double *q = malloc((size_t)(nb * b * b + 2 * b * b + b * in) * sizeof *q);
    if (!q)
        return dora_errf(err, "out of memory for the merged weight of '%s'", m->key);
    double *ap = q + nb * b * b, *rt = ap + b * b, *tmp = rt + b * b, n2 = 0;
    for (int64_t k = 0; k < nb; k++)
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < b; j++) {
                double x = fam_at(blk, (k * b + i) * b + j) - fam_at(blk, (k * b + j) * b + i);
                q[(k * b + i) * b + j] = x;
                n2 += x * x;
            }
    const double limit = m->alpha * (double)out, qn = sqrt(n2) + 1e-8;
    const double f = m->alpha > 0 && qn > limit ? limit / qn : 1.0;
    int rc = 0;
    for (int64_t k = 0; k < nb && rc == 0; k++) {
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < b; j++) {
                double x = f * q[(k * b + i) * b + j];
                ap[i * b + j] = (double)(i == j) + x;
                rt[i * b + j] = (double)(i == j) - x;
            }
        if (solve(ap, rt, b) != 0) {
            rc = dora_errf(err, "'%s': tensor '%s': block %lld gives a singular I + Q",
                           a->weights->path, blk->name, (long long)k);
            break;
        }
        double *w = v + k * b * in;
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < in; j++) {
                double x = 0;
                for (int64_t n = 0; n < b; n++)
                    x += rt[i * b + n] * w[n * in + j];
                tmp[i * in + j] = x;
            }
        memcpy(w, tmp, (size_t)(b * in) * sizeof *w);
    }
    for (int64_t i = 0; rc == 0 && m->rescale && i < out; i++)
        for (int64_t j = 0; j < in; j++)
            v[i * in + j] *= fam_at(m->rescale, i);
    free(q);
    return rc;
}

/* A LyCORIS full or OFT module against base tensor B: W_t formed by MERGE on
 * W0's rows in float64, in B's shape, owned by M (formed again at each check:
 * the last owned tensor); B's rows must be OUT (0: any) and its shape SHAPE's
 * when SHAPE is given. */
static int form_dense(const dora_adapter *a, dora_adapted *m, const dora_tensor *b,
                      const dora_tensor *shape, int64_t rows,
                      int (*merge)(const dora_adapter *, const dora_adapted *, double *, int64_t,
                                   int64_t, dora_err *),
                      dora_err *err)
{
    if (m->nowned > 0) {
        dora_tensor *d = m->owned[--m->nowned];
        free((void *)d->data);
        free(d);
    }
    m->saved = m->aux;
    if (!b)
        return 0;
    int same = dora_dtype_is_analysable(b->dtype) && b->ndim >= 2 &&
               (!shape || b->ndim == shape->ndim) && (!rows || b->shape[0] == rows);
    for (int d = 0; shape && same && d < b->ndim; d++)
        same = b->shape[d] == shape->shape[d];
    if (!same) {
        char sd[256], sb[256];
        dora_shape_str(m->aux, sd, sizeof sd);
        dora_shape_str(b, sb, sizeof sb);
        return dora_errf(err, "'%s': tensor '%s' is %s, but the base tensor '%s' is %s %s",
                         a->weights->path, m->aux->name, sd, b->name, dora_dtype_name(b->dtype),
                         sb);
    }
    const int64_t out = dora_tensor_rows(b), in = dora_tensor_cols(b);
    if (out * in > KOHYA_DENSE_MAX)
        return dora_errf(err, "'%s': module '%s': LyCORIS's %s update is dense; this tool forms "
                              "it for up to %lld entries, not %lld",
                         a->weights->path, m->key, m->layout, (long long)KOHYA_DENSE_MAX,
                         (long long)(out * in));
    double *v = adapter_base_rows(b, 0, out, in, err);
    if (!v)
        return -1;
    dora_tensor *wt = adapter_own(m, m->aux, out, in);
    int rc = wt ? merge(a, m, v, out, in, err)
                : dora_errf(err, "out of memory for the merged weight of '%s'", m->key);
    for (int64_t i = 0; rc == 0 && i < out * in; i++)
        if (!isfinite(v[i]))
            rc = dora_errf(err, "'%s': module '%s': the merged weight holds NaN or Inf (row %lld)",
                           a->weights->path, m->key, (long long)(i / in));
    if (rc == 0) {
        memcpy((void *)wt->data, v, (size_t)(out * in) * sizeof *v);
        wt->ndim = b->ndim;
        for (int d = 0; d < b->ndim; d++)
            wt->shape[d] = b->shape[d];
        m->saved = wt;
    }
    free(v);
    return rc;
}

/* A GLoRA module against base tensor B [out, in]: L's columns r..2r-1 = W0 a1. */
int lycoris_form_glora(const dora_adapter *a, dora_adapted *m, const dora_tensor *b,
                      dora_err *err)
{
    const dora_tensor *a1 = m->aux;
    const int64_t r = m->r / 2, out = m->L.rows, in = m->R.cols;
    if (!b)
        return 0;
    if (b->ndim != 2 || b->shape[0] != out || b->shape[1] != in || !dora_dtype_is_analysable(b->dtype)) {
        char sb[256];
        dora_shape_str(b, sb, sizeof sb);
        return dora_errf(err, "'%s': module '%s': GLoRA's update is [%lld, %lld] but the base "
                              "tensor '%s' is %s %s",
                         a->weights->path, m->key, (long long)out, (long long)in, b->name,
                         dora_dtype_name(b->dtype), sb);
    }
    double *w0 = adapter_base_rows(b, 0, out, in, err);
    if (!w0)
        return -1;
    double *ld = (double *)(void *)m->L.t->data;
    for (int64_t i = 0; i < out; i++)
        for (int64_t k = 0; k < r; k++) {
            double sum = 0;
            for (int64_t j = 0; j < in; j++)
                sum += w0[i * in + j] * fam_at(a1, j * r + k);
            ld[i * 2 * r + r + k] = sum;
        }
    free(w0);
    for (int64_t i = 0; i < out * 2 * r; i++)
        if (!isfinite(ld[i]))
            return dora_errf(err, "'%s': module '%s': W0 a1 holds NaN or Inf", a->weights->path,
                             m->key);
    return 0;
}

int lycoris_form_full(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, dora_err *err)
{
    return form_dense(a, m, b, m->aux, 0, merge_full, err);
}

int lycoris_form_oft(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, dora_err *err)
{
    return form_dense(a, m, b, NULL, m->aux->shape[0] * m->aux->shape[1], merge_oft, err);
}
