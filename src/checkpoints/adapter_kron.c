/* adapter_kron.c - LoHa (Hadamard products) and LoKr (Kronecker products), from PEFT
 * and from LyCORIS / kohya files, with LyCORIS's Tucker cores (hada_t1 / hada_t2,
 * lokr_t2, lora_mid): each module's factors formed in float64 and put in the low-rank
 * form W = W0 + s L R of the analysis, as PEFT and LyCORIS merge them; see
 * include/dora/adapter.h ("Families") and docs/adapters.md. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "dora/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fam_tucker(const dora_tensor *t, const dora_tensor *b, double *q)
{
    const int64_t r1 = t->shape[0], r2 = t->shape[1], kk = (int64_t)t->numel / (r1 * r2),
                  c = (int64_t)b->numel / r2;
    for (int64_t i = 0; i < r1; i++)
        for (int64_t x = 0; x < c; x++)
            for (int64_t y = 0; y < kk; y++) {
                double sum = 0;
                for (int64_t j = 0; j < r2; j++)
                    sum += fam_at(t, (i * r2 + j) * kk + y) * fam_at(b, j * c + x);
                q[(i * c + x) * kk + y] = sum;
            }
}

int fam_tucker_core(const dora_adapter *a, const dora_tensor *t, int64_t r, dora_err *err)
{
    int ok = t->ndim >= 3 && t->shape[0] == r && t->shape[1] == r &&
             dora_dtype_is_analysable(t->dtype);
    for (int d = 2; ok && d < t->ndim; d++)
        ok = t->shape[d] >= 1;
    if (ok)
        return 0;
    char want[96];
    snprintf(want, sizeof want, "but a Tucker core is floating [r, r, kh(, kw)] with r = %lld",
             (long long)r);
    return fam_shape_err(a, t, want, err);
}

/* Both Hadamard factors of a LoHa module, each as [out, r] x [r, in] in
 * float64 (a1, b1, a2, b2 in one buffer): hada_w_a @ hada_w_b, or LyCORIS's
 * Tucker rebuild (hada_w_a [r, out], hada_w_b [r, in_ch], hada_t [r, r, k...]):
 * einsum("i j k, j c, i o -> o c k", t, w_b, w_a) = w_a^T (t x w_b). */
static double *loha_factors(const dora_adapter *a, const pending *p, int64_t r, int64_t *out,
                            int64_t *in, dora_err *err)
{
    const dora_tensor *w1a = p->t[ROLE_H1A], *w1b = p->t[ROLE_H1B], *w2a = p->t[ROLE_H2A],
                      *w2b = p->t[ROLE_H2B], *t1 = p->t[ROLE_HT], *t2 = p->t[ROLE_HT2];
    const dora_tensor *ts[4] = {w1a, w1b, w2a, w2b};
    const int tucker = t1 || t2;
    if (tucker && !(t1 && t2))
        return dora_errf(err, "'%s': module '%s' has %s but no %s", a->weights->path, p->module,
                         t1 ? t1->name : t2->name, t1 ? "hada_t2" : "hada_t1"),
               NULL;
    if (tucker && (fam_tucker_core(a, t1, r, err) || fam_tucker_core(a, t2, r, err)))
        return NULL;
    if (tucker && t1->numel != t2->numel)
        return fam_shape_err(a, t2, "but hada_t1's kernel differs", err), NULL;
    for (int i = 0; i < 4; i++)
        if (ts[i]->ndim != 2 || ((i % 2 || tucker) ? ts[i]->shape[0] : ts[i]->shape[1]) != r)
            return fam_shape_err(a, ts[i],
                             tucker ? "but LyCORIS's Tucker LoHa factors are [r, out] and [r, in] "
                                      "with hada_t's r"
                                    : "but LoHa's factors are [out, r] and [r, in] with the "
                                      "module's r",
                             err),
                   NULL;
    const int64_t kk = tucker ? (int64_t)t1->numel / (r * r) : 1;
    *out = tucker ? w1a->shape[1] : w1a->shape[0];
    *in = w1b->shape[1] * kk;
    if ((tucker ? w2a->shape[1] : w2a->shape[0]) != *out || w2b->shape[1] != w1b->shape[1])
        return fam_shape_err(a, (tucker ? w2a->shape[1] : w2a->shape[0]) != *out ? w2a : w2b,
                         "but hada_w1's product differs", err),
               NULL;
    if (fam_fits(a, p->module, 2 * r, *out + *in, err) != 0)
        return NULL;
    double *f = malloc((size_t)(2 * r * (*out + *in)) * sizeof *f);
    if (!f)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module), NULL;
    for (int side = 0; side < 2; side++) {
        const dora_tensor *wa = side ? w2a : w1a, *wb = side ? w2b : w1b;
        double *fa = f + side * r * (*out + *in), *fb = fa + r * *out;
        for (int64_t i = 0; i < *out; i++)
            for (int64_t k = 0; k < r; k++)
                fa[i * r + k] = fam_at(wa, tucker ? k * *out + i : i * r + k);
        if (tucker)
            fam_tucker(side ? t2 : t1, wb, fb);
        else
            for (int64_t k = 0; k < r * *in; k++)
                fb[k] = fam_at(wb, k);
    }
    return f;
}

int fam_build_loha(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r,
                      dora_err *err)
{
    if (!a->kohya && p->t[ROLE_HT])
        return dora_errf(err, "'%s': '%s': LoHa with use_effective_conv2d (hada_t1 / hada_t2) is "
                              "not supported",
                         a->weights->path, p->t[ROLE_HT]->name);
    const unsigned long want = FAM_BIT(ROLE_H1A) | FAM_BIT(ROLE_H1B) | FAM_BIT(ROLE_H2A) | FAM_BIT(ROLE_H2B) |
                               FAM_BIT(ROLE_HT) | FAM_BIT(ROLE_HT2);
    if (fam_unexpected(a, p, want, err) ||
        fam_need(a, p, FAM_BIT(ROLE_H1A) | FAM_BIT(ROLE_H1B) | FAM_BIT(ROLE_H2A) | FAM_BIT(ROLE_H2B), err))
        return -1;
    int64_t out, in;
    double *f = loha_factors(a, p, r, &out, &in, err);
    if (!f)
        return -1;
    /* r^2 columns: checked against the bound of adapter_check_rank_scale
     * before anything that size is allocated */
    if (r > 65536 || r * r > RANK_PER_DIM * (out + in)) {
        free(f);
        return dora_errf(err, "'%s': module '%s': LoHa r = %lld gives rank r^2 = %lld, absurd for "
                              "an update of [%lld, %lld]: at most %d x (out + in)",
                         a->config_path, p->module, (long long)r, (long long)(r * r),
                         (long long)out, (long long)in, RANK_PER_DIM);
    }
    const int64_t rr = r * r;
    if (fam_fits(a, p->module, out + in, rr, err) != 0) {
        free(f);
        return -1;
    }
    const double *a1 = f, *b1 = a1 + r * out, *a2 = b1 + r * in, *b2 = a2 + r * out;
    dora_tensor *L = adapter_own(m, p->t[ROLE_H1A], out, rr),
                *R = adapter_own(m, p->t[ROLE_H1B], rr, in);
    if (!L || !R) {
        free(f);
        return dora_errf(err, "out of memory for the factors of '%s' (rank %lld)", p->module,
                         (long long)rr);
    }
    double *ld = fam_own_data(L), *rd = fam_own_data(R);
    /* (a1 b1) * (a2 b2) = sum_{k,l} (a1[:,k] * a2[:,l]) (b1[k] * b2[l]) */
    for (int64_t i = 0; i < out; i++)
        for (int64_t k = 0; k < r; k++)
            for (int64_t l = 0; l < r; l++)
                ld[i * rr + k * r + l] = a1[i * r + k] * a2[i * r + l];
    for (int64_t k = 0; k < r; k++)
        for (int64_t l = 0; l < r; l++)
            for (int64_t j = 0; j < in; j++)
                rd[(k * r + l) * in + j] = b1[k * in + j] * b2[l * in + j];
    free(f);
    m->layout = p->t[ROLE_HT] ? "loha-tucker" : "loha";
    m->aux = p->t[ROLE_HT]; /* its kernel, checked against the base's (kohya_resolve) */
    m->L = adapter_matrix(L, 0);
    m->R = adapter_matrix(R, 0);
    m->r = rr;
    return 0;
}

/* One side of a LoKr product, w = P Q: the factors (w_a, w_b), the full w
 * (a conv's [out_k, in_n, kh, kw] flattened to [out_k, in_n kh kw]) with an
 * identity on its shorter side, or, for LyCORIS's Tucker w2, P = w2_a^T and
 * Q = lokr_t2 x w2_b formed in float64 (pd, qd: owned by the caller). */
typedef struct kside {
    const dora_tensor *p, *q; /* NULL: the identity (or pd / qd) */
    double *pd, *qd;
    int64_t rows, inner, cols;
} kside;

static int lokr_side(const dora_adapter *a, const pending *p, role full, role fa, role fb,
                     kside *k, dora_err *err)
{
    const dora_tensor *w = p->t[full], *wa = p->t[fa], *wb = p->t[fb];
    const dora_tensor *t = full == ROLE_K2 ? p->t[ROLE_KT] : NULL;
    *k = (kside){0};
    if (w ? (wa || wb || t) : !(wa && wb))
        return dora_errf(err, "'%s': module '%s' must have either %s or both of its factors",
                         a->weights->path, p->module, full == ROLE_K1 ? "lokr_w1" : "lokr_w2");
    const dora_tensor *ts[3] = {w, wa, wb};
    /* a 4-D lokr_w2 (LyCORIS's full conv side) in kohya files only */
    const int conv = a->kohya && w && full == ROLE_K2 && w->ndim >= 3;
    for (int i = 0; i < 3; i++)
        if (ts[i] && ((ts[i]->ndim != 2 && !(conv && i == 0)) ||
                      !dora_dtype_is_analysable(ts[i]->dtype)))
            return fam_shape_err(a, ts[i],
                             a->kohya ? "but LoKr factors are floating 2-D (lokr_w2 also [out_k, "
                                        "in_n, kh, kw])"
                                      : "but this tool merges floating 2-D LoKr factors only "
                                        "(a 4-D conv lokr_w2 is not supported)",
                             err);
    if (w) {
        k->rows = w->shape[0];
        k->cols = (int64_t)w->numel / (k->rows ? k->rows : 1);
        k->inner = k->rows <= k->cols ? k->rows : k->cols;
        k->p = k->rows <= k->cols ? NULL : w;
        k->q = k->rows <= k->cols ? w : NULL;
        return 0;
    }
    if (t) { /* rebuild_tucker(t2, w2_a, w2_b): [out_k, in_n, kh, kw] */
        const int64_t r = wb->shape[0];
        if (wa->shape[0] != r)
            return fam_shape_err(a, wa, "but LyCORIS's Tucker LoKr has lokr_w2_a [r, out_k] and "
                                    "lokr_w2_b [r, in_n] with one r",
                             err);
        if (fam_tucker_core(a, t, r, err) != 0)
            return -1;
        const int64_t kk = (int64_t)t->numel / (r * r);
        *k = (kside){NULL, NULL, NULL, NULL, wa->shape[1], r, wb->shape[1] * kk};
        if (fam_fits(a, p->module, r, k->rows + k->cols, err) != 0)
            return -1;
        k->pd = malloc((size_t)(k->rows * r) * sizeof *k->pd);
        k->qd = malloc((size_t)(r * k->cols) * sizeof *k->qd);
        if (!k->pd || !k->qd)
            return dora_errf(err, "out of memory for the factors of '%s'", p->module);
        for (int64_t i = 0; i < k->rows; i++)
            for (int64_t j = 0; j < r; j++)
                k->pd[i * r + j] = fam_at(wa, j * k->rows + i);
        fam_tucker(t, wb, k->qd);
        return 0;
    }
    if (wa->shape[1] != wb->shape[0])
        return fam_shape_err(a, wb, "but its rank differs from its _a factor's", err);
    *k = (kside){wa, wb, NULL, NULL, wa->shape[0], wa->shape[1], wb->shape[1]};
    return 0;
}

/* Element (i, j) of P (or the identity) of side K, [rows, inner]. */
static double kp(const kside *k, int64_t i, int64_t j)
{
    return k->pd ? k->pd[i * k->inner + j] : k->p ? fam_at(k->p, i * k->inner + j) : (double)(i == j);
}

static double kq(const kside *k, int64_t i, int64_t j)
{
    return k->qd ? k->qd[i * k->cols + j] : k->q ? fam_at(k->q, i * k->cols + j) : (double)(i == j);
}

int fam_build_lokr(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    if (!a->kohya && p->t[ROLE_KT])
        return dora_errf(err, "'%s': '%s': LoKr with a CP-decomposed conv (lokr_t2) is not "
                              "supported",
                         a->weights->path, p->t[ROLE_KT]->name);
    const unsigned long want = FAM_BIT(ROLE_K1) | FAM_BIT(ROLE_K1A) | FAM_BIT(ROLE_K1B) | FAM_BIT(ROLE_K2) |
                               FAM_BIT(ROLE_K2A) | FAM_BIT(ROLE_K2B) | FAM_BIT(ROLE_KT);
    kside s1 = {0}, s2 = {0};
    int rc = fam_unexpected(a, p, want, err) || lokr_side(a, p, ROLE_K1, ROLE_K1A, ROLE_K1B, &s1, err) ||
             lokr_side(a, p, ROLE_K2, ROLE_K2A, ROLE_K2B, &s2, err);
    /* kron(P1 Q1, P2 Q2) = kron(P1, P2) kron(Q1, Q2); a conv's w1 [a, c] is
     * LyCORIS's w1[:, :, None, None], so the kron of the flattened sides is
     * the flattened [a b, c d, kh, kw] kron */
    const int64_t out = s1.rows * s2.rows, in = s1.cols * s2.cols, r = s1.inner * s2.inner;
    const dora_tensor *from = p->t[ROLE_K1] ? p->t[ROLE_K1] : p->t[ROLE_K1A];
    if (rc == 0)
        rc = fam_fits(a, p->module, r, out + in, err) != 0;
    dora_tensor *L = rc ? NULL : adapter_own(m, from, out, r),
                *R = rc ? NULL : adapter_own(m, from, r, in);
    if (rc == 0 && (!L || !R))
        rc = dora_errf(err, "out of memory for the factors of '%s' (rank %lld)", p->module,
                       (long long)r);
    if (rc == 0) {
        double *ld = fam_own_data(L), *rd = fam_own_data(R);
        for (int64_t i1 = 0; i1 < s1.rows; i1++)
            for (int64_t i2 = 0; i2 < s2.rows; i2++)
                for (int64_t k1 = 0; k1 < s1.inner; k1++)
                    for (int64_t k2 = 0; k2 < s2.inner; k2++)
                        ld[(i1 * s2.rows + i2) * r + k1 * s2.inner + k2] = kp(&s1, i1, k1) * kp(&s2, i2, k2);
        for (int64_t k1 = 0; k1 < s1.inner; k1++)
            for (int64_t k2 = 0; k2 < s2.inner; k2++)
                for (int64_t j1 = 0; j1 < s1.cols; j1++)
                    for (int64_t j2 = 0; j2 < s2.cols; j2++)
                        rd[(k1 * s2.inner + k2) * in + j1 * s2.cols + j2] = kq(&s1, k1, j1) * kq(&s2, k2, j2);
        const dora_tensor *w2 = p->t[ROLE_K2];
        m->layout = p->t[ROLE_KT] ? "lokr-tucker" : w2 && w2->ndim >= 3 ? "lokr-conv" : "lokr";
        m->aux = p->t[ROLE_KT] ? p->t[ROLE_KT] : w2 && w2->ndim >= 3 ? w2 : NULL;
        m->L = adapter_matrix(L, 0);
        m->R = adapter_matrix(R, 0);
        m->r = r;
    }
    free(s1.pd);
    free(s1.qd);
    free(s2.pd);
    free(s2.qd);
    return rc ? -1 : 0;
}
