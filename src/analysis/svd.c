/* svd.c - the SVDs of spectrum (low-rank from the factors, dense by LAPACK or
 * randomised) and the numbers derived from singular values and vectors; see
 * include/dora/spectral.h. Column-major, as src/analysis/spectral_int.h says. */
#define _POSIX_C_SOURCE 200809L
#include "analysis/spectral_int.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Randomised subspace iteration: at most this many iterations, and every Ritz
 * triplet (s, u, v) of the top k must satisfy ||A v - s u|| <= tol * s_1. */
#define RAND_MAX_ITER 30
#define RAND_TOL_F64 1e-10
#define RAND_TOL_F32 1e-4


void dora_svd_release(dora_svd *svd)
{
    if (!svd)
        return;
    free(svd->s);
    free(svd->u);
    memset(svd, 0, sizeof *svd);
}

/* Values above max(m, n) * eps * s[0] (numpy.linalg.matrix_rank's tolerance). */
static int64_t numerical_rank(const double *s, int64_t ns, int64_t m, int64_t n, int bits)
{
    if (ns == 0 || !(s[0] > 0))
        return 0;
    double eps = bits == 32 ? (double)FLT_EPSILON : DBL_EPSILON;
    double tol = (double)max64(m, n) * eps * s[0];
    int64_t k = 0;
    while (k < ns && s[k] > tol)
        k++;
    return k;
}

static int dims_ok(int64_t m, int64_t n) { return m >= 1 && n >= 1 && m <= INT_MAX && n <= INT_MAX; }

/* SVD of a small column-major [m, n] matrix a (destroyed): s [min], u [m, min],
 * vt [min, n] (u/vt may be NULL for values only). dgesdd, then dgesvd if the
 * divide and conquer fails to converge. */
static int small_svd(int64_t m, int64_t n, double *a, double *s, double *u, double *vt)
{
    int64_t k = min64(m, n);
    double *copy = alloc_n((size_t)(m * n), sizeof *copy);
    if (!copy)
        return -1;
    memcpy(copy, a, (size_t)(m * n) * sizeof *a);
    char job = u ? 'S' : 'N';
    lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, job, (lapack_int)m, (lapack_int)n, a,
                                     (lapack_int)m, s, u, (lapack_int)(u ? m : 1), vt,
                                     (lapack_int)(vt ? k : 1));
    if (info > 0) {
        double *superb = alloc_n((size_t)k, sizeof *superb);
        if (superb)
            info = LAPACKE_dgesvd(LAPACK_COL_MAJOR, job, job, (lapack_int)m, (lapack_int)n, copy,
                                  (lapack_int)m, s, u, (lapack_int)(u ? m : 1), vt,
                                  (lapack_int)(vt ? k : 1), superb);
        free(superb);
    }
    free(copy);
    return info == 0 ? 0 : -1;
}

/* Q of the thin QR of a column-major [m, k] matrix, in place (m >= k). */
static int orthonormalize(int64_t m, int64_t k, double *a, double *tau)
{
    if (LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)m, (lapack_int)k, a, (lapack_int)m, tau) != 0)
        return -1;
    return LAPACKE_dorgqr(LAPACK_COL_MAJOR, (lapack_int)m, (lapack_int)k, (lapack_int)k, a,
                          (lapack_int)m, tau) == 0
               ? 0
               : -1;
}

/* ---------------------------------------------------------------- low-rank path */

int dora_svd_lowrank(dora_svd *out, int64_t m, int64_t n, int64_t r, const double *L,
                     const double *R, double scale, int64_t nu, dora_err *err)
{
    memset(out, 0, sizeof *out);
    out->m = m;
    out->n = n;
    out->method = DORA_SVD_LOWRANK;
    out->bits = 64;
    out->complete = 1;
    if (!dims_ok(m, n) || r < 1 || r > INT_MAX)
        return dora_errf(err, "low-rank SVD: bad shape [%lld, %lld] with rank %lld", (long long)m,
                         (long long)n, (long long)r);
    const int64_t kl = min64(m, r), kr = min64(n, r), k = min64(kl, kr);
    nu = min64(max64(nu, 0), k);
    /* ql: L [m, r] column-major; qr: R^T [n, r] column-major, which is R row-major */
    double *ql = alloc_n((size_t)(m * r), sizeof *ql), *qr = alloc_n((size_t)(n * r), sizeof *qr);
    double *tl = alloc_n((size_t)kl, sizeof *tl), *tr = alloc_n((size_t)kr, sizeof *tr);
    double *rl = alloc_n((size_t)(kl * r), sizeof *rl), *rr = alloc_n((size_t)(kr * r), sizeof *rr);
    double *core = alloc_n((size_t)(kl * kr), sizeof *core);
    double *s = alloc_n((size_t)k, sizeof *s);
    double *uc = nu ? alloc_n((size_t)(kl * k), sizeof *uc) : NULL;
    double *vc = nu ? alloc_n((size_t)(k * kr), sizeof *vc) : NULL;
    double *u = nu ? alloc_n((size_t)(m * nu), sizeof *u) : NULL;
    int rc = -1;
    if (!ql || !qr || !tl || !tr || !rl || !rr || !core || !s || (nu && (!uc || !vc || !u))) {
        dora_errf(err, "out of memory for the low-rank SVD of a [%lld, %lld] update of rank %lld",
                  (long long)m, (long long)n, (long long)r);
        goto done;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < r; j++)
            ql[i + j * m] = L[i * r + j];
    memcpy(qr, R, (size_t)(n * r) * sizeof *qr);
    if (LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)m, (lapack_int)r, ql, (lapack_int)m, tl) != 0 ||
        LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)r, qr, (lapack_int)n, tr) != 0) {
        dora_errf(err, "low-rank SVD: QR of the factors failed");
        goto done;
    }
    /* the triangular (trapezoidal) factors R_L [kl, r], R_R [kr, r] */
    for (int64_t j = 0; j < r; j++) {
        for (int64_t i = 0; i < kl; i++)
            rl[i + j * kl] = i <= j ? ql[i + j * m] : 0.0;
        for (int64_t i = 0; i < kr; i++)
            rr[i + j * kr] = i <= j ? qr[i + j * n] : 0.0;
    }
    /* dW = s Q_L R_L R_R^T Q_R^T: the core is s R_L R_R^T [kl, kr] */
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)kl, (int)kr, (int)r, scale, rl,
                (int)kl, rr, (int)kr, 0.0, core, (int)kl);
    if (small_svd(kl, kr, core, s, uc, vc) != 0) {
        dora_errf(err, "low-rank SVD: the %lld x %lld core SVD did not converge", (long long)kl,
                  (long long)kr);
        goto done;
    }
    if (nu) {
        if (LAPACKE_dorgqr(LAPACK_COL_MAJOR, (lapack_int)m, (lapack_int)kl, (lapack_int)kl, ql,
                           (lapack_int)m, tl) != 0) {
            dora_errf(err, "low-rank SVD: forming Q of the left factor failed");
            goto done;
        }
        /* left vectors: Q_L U_core, the top nu */
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)nu, (int)kl, 1.0, ql,
                    (int)m, uc, (int)kl, 0.0, u, (int)m);
    }
    out->ns = k;
    out->s = s;
    out->nu = nu;
    out->u = u;
    out->rank = numerical_rank(s, k, m, n, 64);
    s = NULL;
    u = NULL;
    rc = 0;
done:
    free(ql);
    free(qr);
    free(tl);
    free(tr);
    free(rl);
    free(rr);
    free(core);
    free(s);
    free(uc);
    free(vc);
    free(u);
    return rc;
}

/* ---------------------------------------------------------------- dense path */

static size_t elem_size(const dora_dense *a) { return a->f32 ? sizeof(float) : sizeof(double); }

/* Every singular value (jobz 'N') or every value and vector ('S') of A, with
 * LAPACK ?gesdd on A^T; work holds a copy of A. The left vectors of A, the top
 * nu, go to u [m, nu] (column-major). */
static int dense_gesdd(const dora_dense *a, int64_t nu, void *work, double *s, double *u)
{
    const int64_t m = a->m, n = a->n, k = min64(m, n);
    memcpy(work, a->a, (size_t)(m * n) * elem_size(a));
    const char job = nu ? 'S' : 'N';
    lapack_int info;
    void *uu = NULL, *vt = NULL; /* of A^T: uu [n, k], vt [k, m] */
    if (nu) {
        uu = alloc_n((size_t)(n * k), elem_size(a));
        vt = alloc_n((size_t)(k * m), elem_size(a));
        if (!uu || !vt) {
            free(uu);
            free(vt);
            return -2;
        }
    }
    if (a->f32) {
        float *sf = alloc_n((size_t)k, sizeof *sf);
        if (!sf) {
            free(uu);
            free(vt);
            return -2;
        }
        info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, job, (lapack_int)n, (lapack_int)m, work,
                              (lapack_int)n, sf, uu, (lapack_int)(nu ? n : 1), vt,
                              (lapack_int)(nu ? k : 1));
        for (int64_t i = 0; i < k; i++)
            s[i] = sf[i];
        free(sf);
        if (info == 0 && nu) {
            const float *v = vt;
            for (int64_t j = 0; j < nu; j++)
                for (int64_t i = 0; i < m; i++)
                    u[i + j * m] = v[j + i * k];
        }
    } else {
        info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, job, (lapack_int)n, (lapack_int)m, work,
                              (lapack_int)n, s, uu, (lapack_int)(nu ? n : 1), vt,
                              (lapack_int)(nu ? k : 1));
        if (info == 0 && nu) {
            const double *v = vt;
            for (int64_t j = 0; j < nu; j++)
                for (int64_t i = 0; i < m; i++)
                    u[i + j * m] = v[j + i * k];
        }
    }
    free(uu);
    free(vt);
    return info == 0 ? 0 : -1;
}

/* Every singular value of A and its top nu (>= 1) left vectors from one bidiagonal
 * reduction: ?gebrd of A^T (in work, a copy of A) = Q B P^T; ?bdsqr for every value
 * of B; ?bdsvdx for the top nu right vectors of B; ?ormbr carries them back by P.
 * The right vectors of A^T are the left vectors of A. Against ?gesdd with every
 * vector, this forms nu vectors instead of min(m, n) of each side. */
static int dense_values_topvec(const dora_dense *a, int64_t nu, void *work, double *s, double *u)
{
    const int64_t m = a->m, n = a->n, k = min64(m, n); /* A^T: n rows, m columns */
    const size_t es = elem_size(a);
    memcpy(work, a->a, (size_t)(m * n) * es);
    const char uplo = n >= m ? 'U' : 'L';
    void *d = alloc_n((size_t)k, es), *e = alloc_n((size_t)k, es);
    void *tq = alloc_n((size_t)k, es), *tp = alloc_n((size_t)k, es);
    void *dv = alloc_n((size_t)k, es), *ev = alloc_n((size_t)k, es);
    /* Z: ?bdsvdx may select more than nu values when some are equal at the boundary (a
     * zero or repeated singular value), up to k, and wants a column beyond them */
    void *sv = alloc_n((size_t)(2 * k + 1), es), *z = alloc_n((size_t)(2 * k * (k + 1)), es);
    void *c = calloc((size_t)(m * nu), es); /* P [V_B; 0]: [m, nu] */
    lapack_int *superb = alloc_n((size_t)(12 * k), sizeof *superb);
    lapack_int ns = 0, info = -1;
    if (!d || !e || !tq || !tp || !dv || !ev || !sv || !z || !c || !superb) {
        info = -2;
        goto done;
    }
    const lapack_int M = (lapack_int)n, N = (lapack_int)m, K = (lapack_int)k;
    const lapack_int NU = (lapack_int)nu;
    const int f32 = a->f32;
    info = f32 ? LAPACKE_sgebrd(LAPACK_COL_MAJOR, M, N, work, M, d, e, tq, tp)
               : LAPACKE_dgebrd(LAPACK_COL_MAJOR, M, N, work, M, d, e, tq, tp);
    if (info != 0)
        goto done;
    memcpy(dv, d, (size_t)k * es); /* ?bdsvdx overwrites its diagonals */
    memcpy(ev, e, (size_t)k * es);
    info = f32 ? LAPACKE_sbdsvdx(LAPACK_COL_MAJOR, uplo, 'V', 'I', K, dv, ev, 0, 0, 1, NU, &ns, sv,
                                 z, 2 * K, superb)
               : LAPACKE_dbdsvdx(LAPACK_COL_MAJOR, uplo, 'V', 'I', K, dv, ev, 0, 0, 1, NU, &ns, sv,
                                 z, 2 * K, superb);
    if (info == 0)
        info = f32 ? LAPACKE_sbdsqr(LAPACK_COL_MAJOR, uplo, K, 0, 0, 0, d, e, NULL, 1, NULL, 1,
                                    NULL, 1)
                   : LAPACKE_dbdsqr(LAPACK_COL_MAJOR, uplo, K, 0, 0, 0, d, e, NULL, 1, NULL, 1,
                                    NULL, 1);
    if (info != 0)
        goto done;
    /* the right vectors V_B of B are rows k..2k-1 of each column of Z */
    for (int64_t j = 0; j < nu; j++)
        memcpy((char *)c + (size_t)(j * m) * es, (char *)z + (size_t)(k + j * 2 * k) * es,
               (size_t)k * es);
    info = f32 ? LAPACKE_sormbr(LAPACK_COL_MAJOR, 'P', 'L', 'N', N, NU, M, work, M, tp, c, N)
               : LAPACKE_dormbr(LAPACK_COL_MAJOR, 'P', 'L', 'N', N, NU, M, work, M, tp, c, N);
    for (int64_t i = 0; i < k; i++)
        s[i] = f32 ? ((float *)d)[i] : ((double *)d)[i];
    for (int64_t i = 0; info == 0 && i < m * nu; i++)
        u[i] = f32 ? ((float *)c)[i] : ((double *)c)[i];
    if (info == 0 && ns < NU)
        info = -1;
done:
    free(d);
    free(e);
    free(tq);
    free(tp);
    free(dv);
    free(ev);
    free(sv);
    free(z);
    free(c);
    free(superb);
    return info == -2 ? -2 : info == 0 ? 0 : -1;
}

/* The top kk singular values of A (and the top nu <= kk left vectors) with
 * LAPACK ?gesvdx on A^T, range 'I'. */
static int dense_gesvdx(const dora_dense *a, int64_t kk, int64_t nu, void *work, double *s,
                        double *u)
{
    const int64_t m = a->m, n = a->n, k = min64(m, n);
    memcpy(work, a->a, (size_t)(m * n) * elem_size(a));
    const char jobvt = nu ? 'V' : 'N';
    lapack_int ns = 0, info;
    lapack_int *superb = alloc_n((size_t)(12 * k), sizeof *superb);
    void *vt = nu ? alloc_n((size_t)(kk * m), elem_size(a)) : NULL; /* of A^T: [kk, m] */
    /* LAPACK 3.11's ?gesvdx writes 2 min(m, n) values into S for a zero matrix
     * (its documented size is min(m, n)): give it the room */
    void *sv = alloc_n((size_t)(2 * k + 1), elem_size(a));
    if (!superb || (nu && !vt) || !sv) {
        free(superb);
        free(vt);
        free(sv);
        return -2;
    }
    if (a->f32)
        info = LAPACKE_sgesvdx(LAPACK_COL_MAJOR, 'N', jobvt, 'I', (lapack_int)n, (lapack_int)m,
                               work, (lapack_int)n, 0.0f, 0.0f, 1, (lapack_int)kk, &ns, sv, NULL, 1,
                               vt, (lapack_int)(nu ? kk : 1), superb);
    else
        info = LAPACKE_dgesvdx(LAPACK_COL_MAJOR, 'N', jobvt, 'I', (lapack_int)n, (lapack_int)m,
                               work, (lapack_int)n, 0.0, 0.0, 1, (lapack_int)kk, &ns, sv, NULL, 1,
                               vt, (lapack_int)(nu ? kk : 1), superb);
    if (info == 0 && ns != kk)
        info = -1;
    if (info == 0) {
        for (int64_t i = 0; i < kk; i++)
            s[i] = a->f32 ? ((float *)sv)[i] : ((double *)sv)[i];
        for (int64_t j = 0; j < nu; j++)
            for (int64_t i = 0; i < m; i++)
                u[i + j * m] = a->f32 ? ((float *)vt)[j + i * kk] : ((double *)vt)[j + i * kk];
    }
    free(superb);
    free(vt);
    free(sv);
    return info == 0 ? 0 : -1;
}

/* Y = A X (trans 0: X [n, l], Y [m, l]) or Y = A^T X (trans 1: X [m, l],
 * Y [n, l]), column-major float64; float32 matrices through sgemm. */
static int apply(const dora_dense *a, int trans, const double *x, int64_t l, double *y)
{
    const int64_t m = a->m, n = a->n;
    const int64_t xr = trans ? m : n, yr = trans ? n : m;
    /* A row-major is the column-major A^T [n, m], leading dimension n */
    const enum CBLAS_TRANSPOSE op = trans ? CblasNoTrans : CblasTrans;
    if (!a->f32) {
        cblas_dgemm(CblasColMajor, op, CblasNoTrans, (int)yr, (int)l, (int)xr, 1.0, a->a, (int)n,
                    x, (int)xr, 0.0, y, (int)yr);
        return 0;
    }
    float *xf = alloc_n((size_t)(xr * l), sizeof *xf), *yf = alloc_n((size_t)(yr * l), sizeof *yf);
    if (!xf || !yf) {
        free(xf);
        free(yf);
        return -1;
    }
    for (int64_t i = 0; i < xr * l; i++)
        xf[i] = (float)x[i];
    cblas_sgemm(CblasColMajor, op, CblasNoTrans, (int)yr, (int)l, (int)xr, 1.0f, a->a, (int)n, xf,
                (int)xr, 0.0f, yf, (int)yr);
    for (int64_t i = 0; i < yr * l; i++)
        y[i] = yf[i];
    free(xf);
    free(yf);
    return 0;
}

/* The block of the subspace iteration for the top kk triplets. */
static int64_t rand_block(const dora_dense *a, int64_t kk)
{
    return min64(min64(a->m, a->n), kk + max64(10, kk));
}

/* q [m, l] = A Z for a fixed pseudo-random Z [n, l] (xorshift64*, in z), so
 * that results are reproducible. */
static int random_start(const dora_dense *a, int64_t l, double *z, double *q)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(a->m * 1000003 + a->n);
    for (int64_t i = 0; i < a->n * l; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        z[i] = (double)((x * 0x2545f4914f6cdd1dULL) >> 11) / 4503599627370496.0 - 1.0;
    }
    return apply(a, 0, z, l, q);
}

/* Randomised subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4) for
 * the top kk singular triplets, block l = kk + max(10, kk). Each iteration:
 *     Z = A^T Q = V S Ub^T (SVD of the [n, l] Z), so B = Q^T A = Ub S V^T;
 *     W = A V; the Ritz triplets are (S, Q Ub, V) with residuals
 *     r_i = A v_i - s_i Q ub_i = W_i - s_i (Q Ub)_i;  then Q = orth(W).
 * Stops when every r_i (i < kk) is <= tol * s_1 (a singular value of A then
 * lies within |r_i| of s_i, and in practice the error is ~|r_i|^2 / gap), or
 * gives up (returns 0) when the iteration cap or the observed convergence rate
 * (s_l / s_kk)^2 says it will not get there. Returns 1 on success, 0 when not
 * converged, -1 out of memory / LAPACK failure. START [m, l] (l = rand_block),
 * when not NULL, spans the first Q instead of A times a random block. */
static int dense_randomized(const dora_dense *a, int64_t kk, int64_t nu, double *s_out,
                            double *u_out, int *iters, const double *start)
{
    const int64_t m = a->m, n = a->n, l = rand_block(a, kk);
    const double tol = a->f32 ? RAND_TOL_F32 : RAND_TOL_F64;
    double *q = alloc_n((size_t)(m * l), sizeof *q), *w = alloc_n((size_t)(m * l), sizeof *w);
    double *z = alloc_n((size_t)(n * l), sizeof *z), *v = alloc_n((size_t)(n * l), sizeof *v);
    double *ub = alloc_n((size_t)(l * l), sizeof *ub), *ur = alloc_n((size_t)(m * l), sizeof *ur);
    double *s = alloc_n((size_t)l, sizeof *s), *tau = alloc_n((size_t)l, sizeof *tau);
    int rc = -1;
    if (!q || !w || !z || !v || !ub || !ur || !s || !tau)
        goto done;
    if (start)
        memcpy(q, start, (size_t)(m * l) * sizeof *q);
    else if (random_start(a, l, z, q) != 0)
        goto done;
    if (orthonormalize(m, l, q, tau) != 0)
        goto done;
    double prev_res = -1;
    for (int it = 1; it <= RAND_MAX_ITER; it++) {
        *iters = it;
        if (apply(a, 1, q, l, z) != 0 || small_svd(n, l, z, s, v, ub) != 0 ||
            apply(a, 0, v, l, w) != 0)
            goto done;
        /* ur = Q Ub, Ub = ub^T ([l, l]) */
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)m, (int)l, (int)l, 1.0, q,
                    (int)m, ub, (int)l, 0.0, ur, (int)m);
        double res = 0;
        for (int64_t i = 0; i < kk; i++) {
            double r2 = 0;
            for (int64_t j = 0; j < m; j++) {
                double d = w[j + i * m] - s[i] * ur[j + i * m];
                r2 += d * d;
            }
            if (sqrt(r2) > res)
                res = sqrt(r2);
        }
        const double target = tol * s[0];
        if (s[0] == 0 || res <= target) {
            memcpy(s_out, s, (size_t)kk * sizeof *s);
            if (nu)
                memcpy(u_out, ur, (size_t)(m * nu) * sizeof *ur);
            rc = 1;
            goto done;
        }
        /* give up early when the rate this spectrum allows cannot reach the target */
        double rate = s[kk - 1] > 0 ? (s[l - 1] / s[kk - 1]) * (s[l - 1] / s[kk - 1]) : 1.0;
        if (it >= 3) {
            if (rate >= 0.98 || (prev_res > 0 && res > 0.9 * prev_res))
                break;
            double need = log(target / res) / log(rate);
            if (it + need > RAND_MAX_ITER)
                break;
        }
        prev_res = res;
        memcpy(q, w, (size_t)(m * l) * sizeof *q);
        if (orthonormalize(m, l, q, tau) != 0)
            goto done;
    }
    rc = 0;
done:
    free(q);
    free(w);
    free(z);
    free(v);
    free(ub);
    free(ur);
    free(s);
    free(tau);
    return rc;
}

/* A start for the subspace iteration on A's top l triplets: the top l eigenvectors
 * of A's Gram matrix, G = A A^T [m, m] (m <= n: they are A's left vectors) or
 * G = A^T A [n, n] (m > n: q = A V), by ?syrk and ?syevr (range 'I': a tridiagonal
 * reduction of G, then l vectors), in A's precision. Squaring A makes these vectors
 * less accurate than A's own SVD (an angle of about eps s_1^2 / (s_i^2 - s_{l+1}^2)),
 * so they only start an iteration on A that checks every residual. q [m, l]
 * column-major. 0 done, 1 LAPACK failed, -1 out of memory. */
static int gram_start(const dora_dense *a, int64_t l, double *q)
{
    const int64_t m = a->m, n = a->n, p = min64(m, n);
    const size_t es = elem_size(a);
    void *g = alloc_n((size_t)(p * p), es), *w = alloc_n((size_t)p, es);
    void *z = alloc_n((size_t)(p * l), es);
    lapack_int *isuppz = alloc_n((size_t)(2 * l), sizeof *isuppz);
    double *v = m > n ? alloc_n((size_t)(n * l), sizeof *v) : NULL;
    int rc = -1;
    if (!g || !w || !z || !isuppz || (m > n && !v))
        goto done;
    /* A row-major is the column-major X = A^T [n, m]: G = X^T X or X X^T */
    const enum CBLAS_TRANSPOSE t = m <= n ? CblasTrans : CblasNoTrans;
    const int kdim = (int)(m <= n ? n : m);
    const lapack_int P = (lapack_int)p, il = (lapack_int)(p - l + 1);
    lapack_int ns = 0, info;
    if (a->f32) {
        cblas_ssyrk(CblasColMajor, CblasUpper, t, (int)p, kdim, 1.0f, a->a, (int)n, 0.0f, g,
                    (int)p);
        info = LAPACKE_ssyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', P, g, P, 0, 0, il, P, 0, &ns, w, z,
                              P, isuppz);
    } else {
        cblas_dsyrk(CblasColMajor, CblasUpper, t, (int)p, kdim, 1.0, a->a, (int)n, 0.0, g,
                    (int)p);
        info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', P, g, P, 0, 0, il, P, 0, &ns, w, z,
                              P, isuppz);
    }
    rc = 1;
    if (info != 0 || ns != (lapack_int)l)
        goto done;
    /* ascending eigenvalues: the largest first */
    double *dst = m > n ? v : q;
    for (int64_t j = 0; j < l; j++)
        for (int64_t i = 0; i < p; i++) {
            const size_t at = (size_t)(i + (l - 1 - j) * p);
            dst[i + j * p] = a->f32 ? ((float *)z)[at] : ((double *)z)[at];
        }
    rc = m > n && apply(a, 0, v, l, q) != 0 ? -1 : 0;
done:
    free(g);
    free(w);
    free(z);
    free(isuppz);
    free(v);
    return rc;
}

int dora_svd_top(dora_svd *out, const dora_dense *a, int64_t k, dora_err *err)
{
    const int64_t p = min64(a->m, a->n);
    if (!dims_ok(a->m, a->n) || (uint64_t)a->m * (uint64_t)a->n > (uint64_t)INT_MAX)
        return dora_svd_dense(out, a, k, k, 0, err); /* which reports the shape */
    k = min64(max64(k, 1), p);
    const int64_t l = rand_block(a, k);
    double *start = alloc_n((size_t)(a->m * l), sizeof *start);
    double *s = alloc_n((size_t)p, sizeof *s), *u = alloc_n((size_t)(a->m * k), sizeof *u);
    int iters = 0, r = -1;
    if (start && s && u) {
        r = gram_start(a, l, start);
        if (r == 0)
            r = dense_randomized(a, k, k, s, u, &iters, start) == 1 ? 0 : 1;
    }
    free(start);
    if (r == 0) {
        memset(out, 0, sizeof *out);
        out->m = a->m;
        out->n = a->n;
        out->bits = a->f32 ? 32 : 64;
        out->method = DORA_SVD_GRAM;
        out->iterations = iters;
        out->ns = out->nu = k;
        out->s = s;
        out->u = u;
        out->complete = k == p;
        out->rank = numerical_rank(s, k, a->m, a->n, out->bits);
        return 0;
    }
    free(s);
    free(u);
    if (r < 0) {
        memset(out, 0, sizeof *out);
        return dora_errf(err, "out of memory for the top %lld singular vectors of a [%lld, %lld] "
                              "matrix",
                         (long long)k, (long long)a->m, (long long)a->n);
    }
    return dora_svd_dense(out, a, k, k, 0, err); /* not verified: LAPACK's partial SVD */
}

int dora_svd_dense(dora_svd *out, const dora_dense *a, int64_t top, int64_t nu, int randomized,
                   dora_err *err)
{
    memset(out, 0, sizeof *out);
    out->m = a->m;
    out->n = a->n;
    out->bits = a->f32 ? 32 : 64;
    /* LAPACK indexes with 32-bit integers: m * n must fit */
    if (!dims_ok(a->m, a->n) || (uint64_t)a->m * (uint64_t)a->n > (uint64_t)INT_MAX)
        return dora_errf(err, "dense SVD: shape [%lld, %lld] is outside the supported range "
                              "(at most %d elements)",
                         (long long)a->m, (long long)a->n, INT_MAX);
    const int64_t m = a->m, n = a->n, k = min64(m, n);
    nu = min64(max64(nu, 0), k);
    int64_t kk = top > 0 ? min64(top, k) : k; /* values to compute */
    if (kk < nu)
        kk = nu;
    double *s = alloc_n((size_t)k, sizeof *s);
    double *u = nu ? alloc_n((size_t)(m * nu), sizeof *u) : NULL;
    void *work = NULL;
    int rc = -1;
    if (!s || (nu && !u))
        goto oom;
    if (randomized && kk < k && 4 * (kk + max64(10, kk)) <= k) {
        int r = dense_randomized(a, kk, nu, s, u, &out->iterations, NULL);
        if (r < 0)
            goto oom;
        if (r == 1) {
            out->method = DORA_SVD_RANDOMIZED;
            out->ns = kk;
            goto ok;
        }
    }
    work = alloc_n((size_t)(m * n), elem_size(a));
    if (!work)
        goto oom;
    int r;
    /* every value: gesdd (values only, or every vector when most are wanted), or
     * for a few vectors one bidiagonal reduction that forms only those */
    if ((kk == k || 4 * kk > k) && nu > 0 && 4 * nu <= k) {
        /* every value and a few vectors: one bidiagonal reduction, nu vectors */
        out->method = DORA_SVD_FULL;
        out->ns = k;
        r = dense_values_topvec(a, nu, work, s, u);
    } else if (kk == k || 4 * kk > k) { /* (most of) the spectrum: all of it */
        out->method = DORA_SVD_FULL;
        out->ns = k;
        r = dense_gesdd(a, nu, work, s, u);
    } else {
        out->method = DORA_SVD_PARTIAL;
        out->ns = kk;
        r = dense_gesvdx(a, kk, nu, work, s, u);
    }
    if (r == -2)
        goto oom;
    if (r != 0) {
        dora_errf(err, "LAPACK %s of a [%lld, %lld] matrix did not converge",
                  out->method == DORA_SVD_PARTIAL ? "gesvdx"
                  : nu > 0 && 4 * nu <= k         ? "gebrd/bdsqr/bdsvdx"
                                                  : "gesdd",
                  (long long)m, (long long)n);
        goto fail;
    }
ok:
    out->complete = out->ns == k;
    out->s = s;
    out->u = u;
    out->nu = nu;
    out->rank = numerical_rank(s, out->ns, m, n, out->bits);
    free(work);
    return 0;
oom:
    dora_errf(err, "out of memory for the SVD of a [%lld, %lld] matrix", (long long)m,
              (long long)n);
fail:
    free(s);
    free(u);
    free(work);
    out->method = DORA_SVD_NONE;
    return rc;
}

/* ---------------------------------------------------------------- derived numbers */

int64_t dora_energy_rank(const double *s, int64_t ns, double total, double frac)
{
    if (!(total > 0))
        return 0;
    const double goal = frac * total;
    double cum = 0;
    for (int64_t k = 0; k < ns; k++) {
        cum += s[k] * s[k];
        if (cum >= goal)
            return k + 1;
    }
    return -1;
}

double dora_stable_rank(double fro2, double s1) { return s1 > 0 ? fro2 / (s1 * s1) : 0.0; }

int dora_subspace_phi(int64_t m, const double *u1, int64_t k1, const double *u2, int64_t k2,
                      double *phi, dora_err *err)
{
    if (k1 < 1 || k2 < 1)
        return 0;
    double *g = alloc_n((size_t)(k1 * k2), sizeof *g);
    double *c = alloc_n((size_t)((k1 + 1) * (k2 + 1)), sizeof *c);
    if (!g || !c) {
        free(g);
        free(c);
        return dora_errf(err, "out of memory for a %lld x %lld subspace similarity",
                         (long long)k1, (long long)k2);
    }
    /* G = U1^T U2 [k1, k2] column-major; c = 2-D prefix sums of G^2 */
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, (int)k1, (int)k2, (int)m, 1.0, u1, (int)m,
                u2, (int)m, 0.0, g, (int)k1);
    const int64_t w = k2 + 1;
    for (int64_t j = 0; j <= k2; j++)
        c[j] = 0;
    for (int64_t i = 1; i <= k1; i++) {
        c[i * w] = 0;
        double row = 0;
        for (int64_t j = 1; j <= k2; j++) {
            double x = g[(i - 1) + (j - 1) * k1];
            row += x * x;
            c[i * w + j] = c[(i - 1) * w + j] + row;
        }
    }
    for (int64_t i = 1; i <= k1; i++)
        for (int64_t j = 1; j <= k2; j++)
            phi[(i - 1) * k2 + (j - 1)] = c[i * w + j] / (double)min64(i, j);
    free(g);
    free(c);
    return 0;
}

int64_t dora_intruders(int64_t m, const double *u0, int64_t k0, const double *ut, int64_t kt,
                       double threshold, double *maxcos)
{
    if (kt < 1)
        return 0;
    double *c = alloc_n((size_t)(k0 * kt), sizeof *c);
    if (!c)
        return -1;
    /* C = U0^T Ut [k0, kt] */
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, (int)k0, (int)kt, (int)m, 1.0, u0, (int)m,
                ut, (int)m, 0.0, c, (int)k0);
    int64_t count = 0;
    for (int64_t j = 0; j < kt; j++) {
        double best = 0;
        for (int64_t i = 0; i < k0; i++)
            if (fabs(c[i + j * k0]) > best)
                best = fabs(c[i + j * k0]);
        maxcos[j] = best;
        if (best < threshold)
            count++;
    }
    free(c);
    return count;
}
