/* spectral.c - spectra of weight updates, intruder dimensions, subspace
 * similarity; see include/dora/spectral.h.
 *
 * Matrix conventions inside this file: LAPACK's column-major order. A dense
 * matrix A [m, n] comes row-major (as the tensors store it), which is the
 * column-major A^T [n, m] with leading dimension n; so LAPACK is run on A^T and
 * the left singular vectors of A are read from the right singular vectors of
 * A^T. All vectors handed out are column-major [m, k].
 */
#define _POSIX_C_SOURCE 200809L
#include "dora/spectral.h"
#include "dora/adapter.h"
#include "dora/analyze.h"
#include "dora/guard.h"
#include "dora/kernel.h"
#include "core/util.h"

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

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* malloc of n elements of size bytes, NULL on overflow; never malloc(0). */
static void *alloc_n(size_t n, size_t size)
{
    if (n == 0)
        n = 1;
    if (size && n > SIZE_MAX / size)
        return NULL;
    return malloc(n * size);
}

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

/* Randomised subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4) for
 * the top kk singular triplets, block l = kk + max(10, kk). Each iteration:
 *     Z = A^T Q = V S Ub^T (SVD of the [n, l] Z), so B = Q^T A = Ub S V^T;
 *     W = A V; the Ritz triplets are (S, Q Ub, V) with residuals
 *     r_i = A v_i - s_i Q ub_i = W_i - s_i (Q Ub)_i;  then Q = orth(W).
 * Stops when every r_i (i < kk) is <= tol * s_1 (a singular value of A then
 * lies within |r_i| of s_i, and in practice the error is ~|r_i|^2 / gap), or
 * gives up (returns 0) when the iteration cap or the observed convergence rate
 * (s_l / s_kk)^2 says it will not get there. Returns 1 on success, 0 when not
 * converged, -1 out of memory / LAPACK failure. */
static int dense_randomized(const dora_dense *a, int64_t kk, int64_t nu, double *s_out,
                            double *u_out, int *iters)
{
    const int64_t m = a->m, n = a->n, l = min64(min64(m, n), kk + max64(10, kk));
    const double tol = a->f32 ? RAND_TOL_F32 : RAND_TOL_F64;
    double *q = alloc_n((size_t)(m * l), sizeof *q), *w = alloc_n((size_t)(m * l), sizeof *w);
    double *z = alloc_n((size_t)(n * l), sizeof *z), *v = alloc_n((size_t)(n * l), sizeof *v);
    double *ub = alloc_n((size_t)(l * l), sizeof *ub), *ur = alloc_n((size_t)(m * l), sizeof *ur);
    double *s = alloc_n((size_t)l, sizeof *s), *tau = alloc_n((size_t)l, sizeof *tau);
    int rc = -1;
    if (!q || !w || !z || !v || !ub || !ur || !s || !tau)
        goto done;
    /* a fixed pseudo-random start (xorshift64*), so results are reproducible */
    uint64_t x = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(m * 1000003 + n);
    for (int64_t i = 0; i < n * l; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        z[i] = (double)((x * 0x2545f4914f6cdd1dULL) >> 11) / 4503599627370496.0 - 1.0;
    }
    if (apply(a, 0, z, l, q) != 0 || orthonormalize(m, l, q, tau) != 0)
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
        int r = dense_randomized(a, kk, nu, s, u, &out->iterations);
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
    /* every value: gesdd, with all the vectors when some are wanted (measured
     * faster than values by gesdd + the top vectors by gesvdx: 7.4 s against
     * 13.6 s for 2048 x 2048 on 2 cores) */
    if (kk == k || 4 * kk > k) { /* (most of) the spectrum: all of it */
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
                  out->method == DORA_SVD_PARTIAL ? "gesvdx" : "gesdd", (long long)m, (long long)n);
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

/* ================================================================ runs */

void dora_spectrum_opts_init(dora_spectrum_opts *o)
{
    memset(o, 0, sizeof *o);
    o->top = 0;
    o->subspace = DORA_SPEC_SUBSPACE_DEFAULT;
    o->threshold = DORA_SPEC_THRESHOLD_DEFAULT;
    o->randomized = 1;
    o->f64_max_elems = DORA_SPEC_F64_MAX_ELEMS;
    o->dense_max_elems = DORA_SPEC_DENSE_MAX_ELEMS;
}

/* A module of one run, as read: where each step's update comes from. */
typedef struct rmod {
    const char *name;          /* base tensor name; borrowed from the base or an adapter */
    const dora_tensor *base;   /* W0, NULL without the base */
    int transposed;            /* W0 stored [in, out] (fan_in_fan_out) */
    int64_t rows, cols;
    int64_t rank, maxr;        /* the first step's r, the largest r of any step (LoRA) */
    const char *update;        /* "lora", "lora-part", "dora", "dense" */
    int dense;                 /* some step's update is formed densely */
    const dora_tensor **wt;    /* [S] FT / modules_to_save: W_t */
    const dora_adapted **ad;   /* [S] LoRA / DoRA */
} rmod;

/* One run while it is analysed. */
typedef struct rctx {
    const char *name;
    const dora_run *run;
    dora_model **model;        /* [S] full-weight steps */
    dora_adapter **adapter;    /* [S] adapter steps */
    rmod *mods;
    size_t nmods, capmods;
    int need_vectors;          /* phi needs this run's top singular vectors */
} rctx;

/* A module name over all runs, with its index in each run (SIZE_MAX: absent). */
typedef struct gmod {
    const char *name;
    size_t *idx;
} gmod;

typedef struct sctx {
    dora_spectrum *sp;
    const dora_spectrum_opts *opts;
    const dora_model *base;
    size_t nruns;
    rctx *rc;
    gmod *g;
    size_t ng;
    size_t *cmp_cursor;        /* [ncompare] next compare module to fill */
} sctx;

static int sp_note(dora_spectrum *sp, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int sp_note(dora_spectrum *sp, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nn = realloc(sp->notes, (sp->nnotes + 1) * sizeof *nn);
    if (!nn)
        return -1;
    sp->notes = nn;
    if (!(nn[sp->nnotes] = strdup(buf)))
        return -1;
    sp->nnotes++;
    return 0;
}

static int kept(const dora_spectrum_opts *o, const char *name)
{
    return dora_filter_match(o->include, o->exclude, name);
}

static rmod *add_rmod(rctx *rc, size_t S)
{
    if (rc->nmods == rc->capmods) {
        size_t cap = rc->capmods ? 2 * rc->capmods : 16;
        rmod *nm = realloc(rc->mods, cap * sizeof *nm);
        if (!nm)
            return NULL;
        rc->mods = nm;
        rc->capmods = cap;
    }
    rmod *m = &rc->mods[rc->nmods];
    memset(m, 0, sizeof *m);
    m->wt = calloc(S ? S : 1, sizeof *m->wt);
    m->ad = calloc(S ? S : 1, sizeof *m->ad);
    if (!m->wt || !m->ad) {
        free(m->wt);
        free(m->ad);
        return NULL;
    }
    rc->nmods++;
    return m;
}

static void free_rctx(rctx *rc)
{
    for (size_t i = 0; i < rc->nmods; i++) {
        free(rc->mods[i].wt);
        free(rc->mods[i].ad);
    }
    free(rc->mods);
    for (size_t s = 0; rc->run && s < rc->run->nsteps; s++) {
        if (rc->model)
            dora_model_close(rc->model[s]);
        if (rc->adapter)
            dora_adapter_close(rc->adapter[s]);
    }
    free(rc->model);
    free(rc->adapter);
}

/* Open every step: a full model, or an adapter (checked against the base when
 * there is one). A run is all full models or all adapters. */
static int open_steps(rctx *rc, const dora_model *base, dora_err *err)
{
    const dora_run *run = rc->run;
    const size_t S = run->nsteps;
    rc->model = calloc(S ? S : 1, sizeof *rc->model);
    rc->adapter = calloc(S ? S : 1, sizeof *rc->adapter);
    if (!rc->model || !rc->adapter)
        return dora_errf(err, "out of memory");
    if (S == 0)
        return dora_errf(err, "'%s': the run has no checkpoints", run->path);
    for (size_t s = 0; s < S; s++) {
        dora_model_kind kind;
        if (dora_model_probe(run->steps[s].path, &kind, NULL, err) != 0)
            return -1;
        if (kind == DORA_MODEL_ADAPTER) {
            if (dora_adapter_open(&rc->adapter[s], run->steps[s].path, err) != 0)
                return -1;
            if (base && dora_adapter_check(rc->adapter[s], base, err) != 0)
                return -1;
        } else {
            if (!base)
                return dora_errf(err, "run '%s': '%s' holds full weights: the update W_t - W0 "
                                      "needs the pre-trained model (--base PATH)",
                                 rc->name, run->steps[s].path);
            if (dora_model_open(&rc->model[s], run->steps[s].path, err) != 0)
                return -1;
        }
        if ((rc->adapter[s] != NULL) != (rc->adapter[0] != NULL))
            return dora_errf(err, "'%s' is %s but '%s' is %s: a run is either full weights or "
                                  "adapters",
                             run->steps[s].path, rc->adapter[s] ? "an adapter" : "a full model",
                             run->steps[0].path, rc->adapter[0] ? "an adapter" : "a full model");
    }
    return 0;
}

/* Full-weight runs: every floating tensor of rank >= 2 of the base that every
 * step holds (with the same shape). */
static int select_ft(sctx *c, rctx *rc, dora_err *err)
{
    const dora_model *base = c->base;
    const size_t S = rc->run->nsteps;
    size_t missing = 0, nonfloat = 0, big = 0;
    const char *first_missing = NULL, *first_big = NULL;
    for (size_t i = 0; i < base->ntensors; i++) {
        const dora_tensor *t = base->by_name[i];
        if (t->ndim < 2)
            continue;
        if (!dora_dtype_is_analysable(t->dtype)) {
            nonfloat++;
            continue;
        }
        int64_t rows = dora_tensor_rows(t), cols = dora_tensor_cols(t);
        if (rows < 1 || cols < 1 || !kept(c->opts, t->name))
            continue;
        int present = 1;
        for (size_t s = 0; s < S && present; s++) {
            const dora_tensor *x = dora_model_find(rc->model[s], t->name);
            if (!x) {
                present = 0;
                break;
            }
            int same = x->ndim == t->ndim;
            for (int d = 0; same && d < t->ndim; d++)
                same = x->shape[d] == t->shape[d];
            if (!same) {
                char s0[256], s1[256];
                dora_shape_str(t, s0, sizeof s0);
                dora_shape_str(x, s1, sizeof s1);
                return dora_errf(err, "'%s': tensor '%s' has shape %s, but %s in the base '%s'",
                                 x->file, t->name, s1, s0, t->file);
            }
            if (!dora_dtype_is_analysable(x->dtype))
                return dora_errf(err, "'%s': tensor '%s' is %s, not a floating type (the base has "
                                      "%s)",
                                 x->file, t->name, dora_dtype_name(x->dtype),
                                 dora_dtype_name(t->dtype));
        }
        if (!present) {
            if (!missing++)
                first_missing = t->name;
            continue;
        }
        if (rows * cols > c->opts->dense_max_elems) {
            if (!big++)
                first_big = t->name;
            continue;
        }
        rmod *m = add_rmod(rc, S);
        if (!m)
            return dora_errf(err, "out of memory");
        m->name = t->name;
        m->base = t;
        m->rows = rows;
        m->cols = cols;
        m->update = "dense";
        m->dense = 1;
        for (size_t s = 0; s < S; s++)
            m->wt[s] = dora_model_find(rc->model[s], t->name);
    }
    if (missing)
        sp_note(c->sp, "run '%s': %zu tensor(s) of the base are missing from a checkpoint and were "
                       "left out (first: '%s')",
                rc->name, missing, first_missing);
    if (nonfloat)
        sp_note(c->sp, "run '%s': %zu non-floating tensor(s) of rank >= 2 were left out", rc->name,
                nonfloat);
    if (big)
        sp_note(c->sp, "run '%s': %zu tensor(s) above %lld elements were left out: too large for a "
                       "dense SVD (first: '%s')",
                rc->name, big, (long long)c->opts->dense_max_elems, first_big);
    return 0;
}

/* Adapter runs: the modules the adapters adapt, the same in every step. */
static int select_adapter(sctx *c, rctx *rc, dora_err *err)
{
    const size_t S = rc->run->nsteps;
    const dora_adapter *first = rc->adapter[0];
    size_t saved_skipped = 0, big = 0;
    const char *first_saved = NULL, *first_big = NULL;
    for (size_t s = 1; s < S; s++)
        for (size_t i = 0; i < rc->adapter[s]->nmodules; i++)
            if (!dora_adapter_find(first, rc->adapter[s]->modules[i].base_name))
                return dora_errf(err, "'%s' adapts '%s', which '%s' does not: the checkpoints of a "
                                      "run must adapt the same modules",
                                 rc->adapter[s]->weights->path,
                                 rc->adapter[s]->modules[i].base_name, first->weights->path);
    for (size_t i = 0; i < first->nmodules; i++) {
        const dora_adapted *a0 = &first->modules[i];
        const char *name = a0->base_name;
        for (size_t s = 1; s < S; s++) {
            const dora_adapted *as = dora_adapter_find(rc->adapter[s], name);
            if (!as)
                return dora_errf(err, "'%s' does not adapt '%s', which '%s' does: the checkpoints "
                                      "of a run must adapt the same modules",
                                 rc->adapter[s]->weights->path, name, first->weights->path);
            if (as->kind != a0->kind ||
                (as->kind == DORA_ADAPTED_LORA && as->fan_in_fan_out != a0->fan_in_fan_out))
                return dora_errf(err, "'%s': module '%s' is adapted differently than in '%s'",
                                 rc->adapter[s]->weights->path, name, first->weights->path);
            if (as->kind == DORA_ADAPTED_LORA &&
                (as->L.rows != a0->L.rows || as->R.cols != a0->R.cols))
                return dora_errf(err, "'%s': module '%s': the update is [%lld, %lld] but "
                                      "[%lld, %lld] in '%s'",
                                 rc->adapter[s]->weights->path, name, (long long)as->L.rows,
                                 (long long)as->R.cols, (long long)a0->L.rows,
                                 (long long)a0->R.cols, first->weights->path);
            if (as->kind == DORA_ADAPTED_SAVED &&
                (dora_tensor_rows(as->saved) != dora_tensor_rows(a0->saved) ||
                 dora_tensor_cols(as->saved) != dora_tensor_cols(a0->saved)))
                return dora_errf(err, "'%s': tensor '%s' differs in shape from '%s'",
                                 rc->adapter[s]->weights->path, as->saved->name,
                                 first->weights->path);
        }
        if (!kept(c->opts, name))
            continue;
        const dora_tensor *bt = c->base ? dora_model_find(c->base, name) : NULL;
        int64_t rows, cols, maxr = 0;
        int dora = 0;
        if (a0->kind == DORA_ADAPTED_SAVED) {
            if (!c->base) {
                if (!saved_skipped++)
                    first_saved = name;
                continue;
            }
            rows = dora_tensor_rows(a0->saved);
            cols = dora_tensor_cols(a0->saved);
        } else {
            rows = a0->L.rows;
            cols = a0->R.cols;
            for (size_t s = 0; s < S; s++) {
                const dora_adapted *as = dora_adapter_find(rc->adapter[s], name);
                if (as->magnitude)
                    dora = 1;
                if (as->r > maxr)
                    maxr = as->r;
            }
        }
        if (rows < 1 || cols < 1)
            continue;
        int dense = a0->kind == DORA_ADAPTED_SAVED || (dora && c->base);
        if ((dense || c->base) && rows * cols > c->opts->dense_max_elems) {
            if (!big++)
                first_big = name;
            continue;
        }
        rmod *m = add_rmod(rc, S);
        if (!m)
            return dora_errf(err, "out of memory");
        m->name = name;
        m->base = bt;
        m->rows = rows;
        m->cols = cols;
        m->dense = dense;
        if (a0->kind == DORA_ADAPTED_SAVED) {
            m->update = "dense";
            for (size_t s = 0; s < S; s++)
                m->wt[s] = dora_adapter_find(rc->adapter[s], name)->saved;
        } else {
            m->transposed = a0->fan_in_fan_out;
            m->rank = a0->r;
            m->maxr = maxr;
            m->update = dora ? (c->base ? "dora" : "lora-part") : "lora";
            for (size_t s = 0; s < S; s++)
                m->ad[s] = dora_adapter_find(rc->adapter[s], name);
        }
    }
    if (saved_skipped)
        sp_note(c->sp, "run '%s': %zu modules_to_save weight(s) left out: their update needs the "
                       "base (first: '%s')",
                rc->name, saved_skipped, first_saved);
    if (big)
        sp_note(c->sp, "run '%s': %zu module(s) above %lld elements were left out: too large for a "
                       "dense SVD (first: '%s')",
                rc->name, big, (long long)c->opts->dense_max_elems, first_big);
    return 0;
}

/* natural order, then byte order so that distinct names never compare equal */
static int name_cmp(const char *a, const char *b)
{
    int r = util_natural_cmp(a, b);
    return r ? r : strcmp(a, b);
}

static int rmod_cmp(const void *pa, const void *pb)
{
    return name_cmp(((const rmod *)pa)->name, ((const rmod *)pb)->name);
}

static int gname_cmp(const void *pa, const void *pb)
{
    return name_cmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* The union of the runs' module names, and each run's index of each. */
static int global_modules(sctx *c, dora_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < c->nruns; i++)
        total += c->rc[i].nmods;
    const char **names = calloc(total ? total : 1, sizeof *names);
    if (!names)
        return dora_errf(err, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < c->nruns; i++)
        for (size_t j = 0; j < c->rc[i].nmods; j++)
            names[k++] = c->rc[i].mods[j].name;
    qsort(names, total, sizeof *names, gname_cmp);
    c->g = calloc(total ? total : 1, sizeof *c->g);
    if (!c->g) {
        free(names);
        return dora_errf(err, "out of memory");
    }
    for (size_t j = 0; j < total; j++) {
        if (c->ng && strcmp(c->g[c->ng - 1].name, names[j]) == 0)
            continue;
        gmod *g = &c->g[c->ng++];
        g->name = names[j];
        if (!(g->idx = malloc(c->nruns * sizeof *g->idx))) {
            free(names);
            return dora_errf(err, "out of memory");
        }
        for (size_t i = 0; i < c->nruns; i++)
            g->idx[i] = SIZE_MAX;
    }
    free(names);
    /* every run's modules are sorted the same way: one merge pass each */
    for (size_t i = 0; i < c->nruns; i++) {
        size_t gi = 0;
        for (size_t j = 0; j < c->rc[i].nmods; j++) {
            while (strcmp(c->g[gi].name, c->rc[i].mods[j].name) != 0)
                gi++;
            c->g[gi].idx[i] = j;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- results */

static void release_run(dora_spec_run *r)
{
    for (size_t l = 0; r->mods && l < r->nmodules; l++) {
        dora_spec_module *m = &r->mods[l];
        free(m->name);
        free(m->sigma);
        free(m->intruder_cos);
        free(m->phi);
        free(m->phi_k);
    }
    for (size_t s = 0; r->step_paths && s < r->nsteps; s++)
        free(r->step_paths[s]);
    free(r->mods);
    free(r->step_paths);
    free(r->steps);
    free(r->name);
    free(r->source_path);
    free(r->fro_norm);
    free(r->sigma1);
    free(r->r90);
    free(r->stable_rank);
    free(r->intruders);
    free(r->svd_method);
    free(r->phi_prev);
    free(r->phi_final);
    free(r->pairs);
}

static void release_compare(dora_spec_compare *c)
{
    for (size_t i = 0; c->modules && i < c->nmodules; i++)
        free(c->modules[i]);
    for (size_t i = 0; c->grid && i < c->nmodules; i++)
        free(c->grid[i]);
    free(c->modules);
    free(c->grid);
    free(c->steps_a);
    free(c->steps_b);
    free(c->phi);
    free(c->k);
    free(c->mod_a);
    free(c->mod_b);
    free(c->idx_a);
    free(c->idx_b);
}

void dora_spectrum_release(dora_spectrum *sp)
{
    if (!sp)
        return;
    for (size_t i = 0; sp->runs && i < sp->nruns; i++)
        release_run(&sp->runs[i]);
    for (size_t i = 0; sp->cmp && i < sp->ncompare; i++)
        release_compare(&sp->cmp[i]);
    for (size_t i = 0; i < sp->nnotes; i++)
        free(sp->notes[i]);
    free(sp->notes);
    free(sp->runs);
    free(sp->cmp);
    free(sp->base_path);
    memset(sp, 0, sizeof *sp);
}

static double *filled(size_t n, double v)
{
    double *p = alloc_n(n, sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = v;
    return p;
}

static int alloc_run(sctx *c, size_t i, const char *name)
{
    const rctx *rc = &c->rc[i];
    dora_spec_run *r = &c->sp->runs[i];
    const size_t S = rc->run->nsteps, L = rc->nmods, SL = S * L;
    const int64_t K = c->opts->subspace;
    r->nsteps = S;
    r->nmodules = L;
    r->npairs = S >= 2 ? (S - 1) + (S - 2) : 0;
    r->method = rc->run->method;
    if (rc->adapter[0]) {
        r->method = "lora";
        for (size_t s = 0; s < S; s++)
            if (strcmp(rc->adapter[s]->method, "dora") == 0)
                r->method = "dora";
    }
    if (!(r->name = strdup(name)) || !(r->source_path = strdup(rc->run->path)))
        return -1;
    r->steps = alloc_n(S, sizeof *r->steps);
    r->step_paths = calloc(S ? S : 1, sizeof *r->step_paths);
    r->mods = calloc(L ? L : 1, sizeof *r->mods);
    r->fro_norm = filled(SL, 0);
    r->sigma1 = filled(SL, 0);
    r->stable_rank = filled(SL, 0);
    r->phi_prev = filled(SL, -1);
    r->phi_final = filled(SL, -1);
    r->r90 = alloc_n(SL, sizeof *r->r90);
    r->svd_method = calloc(SL ? SL : 1, sizeof *r->svd_method);
    r->intruders = c->base ? alloc_n(SL, sizeof *r->intruders) : NULL;
    r->pairs = alloc_n(2 * r->npairs, sizeof *r->pairs);
    if (!r->steps || !r->step_paths || !r->mods || !r->fro_norm || !r->sigma1 ||
        !r->stable_rank || !r->phi_prev || !r->phi_final || !r->r90 || !r->svd_method ||
        (c->base && !r->intruders) || !r->pairs)
        return -1;
    for (size_t k = 0; k < SL; k++) {
        r->r90[k] = 0;
        if (r->intruders)
            r->intruders[k] = -1;
    }
    for (size_t s = 0; s < S; s++) {
        r->steps[s] = rc->run->steps[s].step;
        if (!(r->step_paths[s] = strdup(rc->run->steps[s].path)))
            return -1;
    }
    size_t p = 0;
    for (size_t t = 1; t < S; t++, p++) {
        r->pairs[2 * p] = (int64_t)(t - 1);
        r->pairs[2 * p + 1] = (int64_t)t;
    }
    for (size_t t = 0; t + 2 < S; t++, p++) {
        r->pairs[2 * p] = (int64_t)t;
        r->pairs[2 * p + 1] = (int64_t)(S - 1);
    }
    for (size_t l = 0; l < L; l++) {
        const rmod *rm = &rc->mods[l];
        dora_spec_module *m = &r->mods[l];
        if (!(m->name = strdup(rm->name)))
            return -1;
        m->layer = dora_layer_index(rm->name);
        m->rows = rm->rows;
        m->cols = rm->cols;
        m->rank = (int32_t)rm->rank;
        m->update = rm->update;
        const int64_t mn = min64(rm->rows, rm->cols);
        const int dense_bits = rm->rows * rm->cols <= c->opts->f64_max_elems ? 64 : 32;
        m->bits = rm->dense ? dense_bits : 64;
        m->nsigma = rm->dense ? mn : min64(rm->maxr, mn);
        if (c->opts->top > 0)
            m->nsigma = min64(m->nsigma, c->opts->top);
        m->sigma = filled(S * (size_t)m->nsigma, 0);
        m->phi = filled(r->npairs * (size_t)(K * K), -1);
        m->phi_k = calloc(2 * r->npairs + 1, sizeof *m->phi_k);
        if (!m->sigma || !m->phi || !m->phi_k)
            return -1;
        if (c->base && !(m->intruder_cos = filled(S * DORA_SPEC_INTRUDER_TOP, -1)))
            return -1;
    }
    return 0;
}

/* The comparisons of every pair of runs: modules both have with the same
 * shape; the step numbers both have, and the two final steps. */
static int plan_compares(sctx *c, dora_err *err)
{
    dora_spectrum *sp = c->sp;
    const size_t R = c->nruns;
    sp->ncompare = R * (R - 1) / 2;
    sp->cmp = calloc(sp->ncompare ? sp->ncompare : 1, sizeof *sp->cmp);
    c->cmp_cursor = calloc(sp->ncompare ? sp->ncompare : 1, sizeof *c->cmp_cursor);
    if (!sp->cmp || !c->cmp_cursor)
        return dora_errf(err, "out of memory");
    const int64_t K = c->opts->subspace;
    size_t ci = 0, nothing = 0;
    const char *first_a = NULL, *first_b = NULL;
    for (size_t a = 0; a < R; a++)
        for (size_t b = a + 1; b < R; b++, ci++) {
            dora_spec_compare *cp = &sp->cmp[ci];
            const dora_spec_run *ra = &sp->runs[a], *rb = &sp->runs[b];
            cp->run_a = a;
            cp->run_b = b;
            size_t M = 0;
            for (size_t g = 0; g < c->ng; g++) {
                size_t ia = c->g[g].idx[a], ib = c->g[g].idx[b];
                if (ia != SIZE_MAX && ib != SIZE_MAX && ra->mods[ia].rows == rb->mods[ib].rows &&
                    ra->mods[ia].cols == rb->mods[ib].cols)
                    M++;
            }
            size_t P = 0, cap = ra->nsteps + 1;
            cp->modules = calloc(M + 1, sizeof *cp->modules);
            cp->grid = calloc(M + 1, sizeof *cp->grid);
            cp->mod_a = alloc_n(M, sizeof *cp->mod_a);
            cp->mod_b = alloc_n(M, sizeof *cp->mod_b);
            cp->idx_a = alloc_n(cap, sizeof *cp->idx_a);
            cp->idx_b = alloc_n(cap, sizeof *cp->idx_b);
            cp->steps_a = alloc_n(cap, sizeof *cp->steps_a);
            cp->steps_b = alloc_n(cap, sizeof *cp->steps_b);
            if (!cp->modules || !cp->grid || !cp->mod_a || !cp->mod_b || !cp->idx_a ||
                !cp->idx_b || !cp->steps_a || !cp->steps_b)
                return dora_errf(err, "out of memory");
            for (size_t sa = 0; sa < ra->nsteps; sa++)
                for (size_t sb = 0; sb < rb->nsteps; sb++)
                    if (ra->steps[sa] == rb->steps[sb]) {
                        cp->idx_a[P] = sa;
                        cp->idx_b[P++] = sb;
                    }
            if (P == 0 || cp->idx_a[P - 1] != ra->nsteps - 1 || cp->idx_b[P - 1] != rb->nsteps - 1) {
                cp->idx_a[P] = ra->nsteps - 1;
                cp->idx_b[P++] = rb->nsteps - 1;
            }
            cp->npairs = P;
            for (size_t p = 0; p < P; p++) {
                cp->steps_a[p] = ra->steps[cp->idx_a[p]];
                cp->steps_b[p] = rb->steps[cp->idx_b[p]];
            }
            cp->phi = filled(P * M, -1);
            cp->k = calloc(P * M + 1, sizeof *cp->k);
            if (!cp->phi || !cp->k)
                return dora_errf(err, "out of memory");
            for (size_t g = 0; g < c->ng; g++) {
                size_t ia = c->g[g].idx[a], ib = c->g[g].idx[b];
                if (ia == SIZE_MAX || ib == SIZE_MAX || ra->mods[ia].rows != rb->mods[ib].rows ||
                    ra->mods[ia].cols != rb->mods[ib].cols)
                    continue;
                size_t mi = cp->nmodules;
                cp->mod_a[mi] = ia;
                cp->mod_b[mi] = ib;
                if (!(cp->modules[mi] = strdup(c->g[g].name)) ||
                    !(cp->grid[mi] = filled(P * (size_t)(K * K), -1)))
                    return dora_errf(err, "out of memory");
                cp->nmodules++;
            }
            if (M == 0 && !nothing++) {
                first_a = ra->name;
                first_b = rb->name;
            }
        }
    if (nothing)
        sp_note(sp, "%zu pair(s) of runs have no module of the same shape in common: nothing to "
                    "compare (first: '%s' and '%s')",
                nothing, first_a, first_b);
    return 0;
}

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
    /* the numbers of this step */
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

    if (with_base) {
        const int64_t kt = min64(DORA_SPEC_INTRUDER_TOP, min64(m, n));
        if (dora_svd_dense(&wsv, &wt, kt, kt, 0, err) != 0)
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

/* Everything about global module g: every run's steps, the phi pairs within
 * each run, the comparisons between runs. */
static int do_module(sctx *c, size_t g, dora_err *err)
{
    const size_t R = c->nruns;
    const int64_t K = c->opts->subspace;
    basecache bc[2];
    memset(bc, 0, sizeof bc);
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
        dora_spec_module *mo = &res->mods[l];
        if (!(svs[ri] = calloc(S, sizeof **svs))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        basecache *b = &bc[rm->transposed ? 1 : 0];
        if (c->base && !b->ready) {
            const int bits = rm->rows * rm->cols <= c->opts->f64_max_elems ? 64 : 32;
            if (load_w0(rm, &b->w0, bits, err) != 0)
                goto done;
            if (dora_svd_dense(&b->svd, &b->w0, 0, min64(rm->rows, rm->cols), 0, err) != 0) {
                dora_errprefix(err, "base '%s', tensor '%s'", rm->base->file, rm->name);
                goto done;
            }
            b->ready = 1;
        }
        const int64_t kvec = rx->need_vectors ? K : 0;
        for (size_t s = 0; s < S; s++)
            if (do_step(c, ri, l, s, b, &svs[ri][s], kvec, err) != 0)
                goto done;
        /* phi between the run's own steps */
        for (size_t p = 0; p < res->npairs; p++) {
            const dora_svd *a = &svs[ri][res->pairs[2 * p]], *bb = &svs[ri][res->pairs[2 * p + 1]];
            double summary;
            if (phi_pair(a, bb, K, mo->phi + p * (size_t)(K * K), &mo->phi_k[2 * p],
                         &mo->phi_k[2 * p + 1], &summary, tmp, err) != 0)
                goto done;
            size_t ta = (size_t)res->pairs[2 * p], tb = (size_t)res->pairs[2 * p + 1];
            if (tb == ta + 1)
                res->phi_prev[tb * res->nmodules + l] = summary;
            if (tb == S - 1)
                res->phi_final[ta * res->nmodules + l] = summary;
        }
        /* an update with a direction is identical to itself */
        res->phi_final[(S - 1) * res->nmodules + l] = svs[ri][S - 1].rank > 0 ? 1.0 : -1.0;
    }
    /* between runs */
    for (size_t ci = 0; ci < c->sp->ncompare; ci++) {
        dora_spec_compare *cp = &c->sp->cmp[ci];
        size_t mi = c->cmp_cursor[ci];
        if (mi >= cp->nmodules || cp->mod_a[mi] != c->g[g].idx[cp->run_a] ||
            c->g[g].idx[cp->run_b] != cp->mod_b[mi] || strcmp(cp->modules[mi], c->g[g].name) != 0)
            continue;
        c->cmp_cursor[ci]++;
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
    basecache_release(&bc[0]);
    basecache_release(&bc[1]);
    return rc;
}

int dora_spectrum_run(dora_spectrum *sp, const dora_model *base, const char *base_path,
                      char *const *names, const dora_run *runs, size_t nruns,
                      const dora_spectrum_opts *opts, dora_err *err)
{
    memset(sp, 0, sizeof *sp);
    if (dora_guard_install() != 0)
        return dora_errf(err, "cannot install the SIGBUS guard");
    sctx c;
    memset(&c, 0, sizeof c);
    c.sp = sp;
    c.opts = opts;
    c.base = base;
    c.nruns = nruns;
    int rc = -1;
    sp->opts = *opts;
    sp->opts.include = sp->opts.exclude = NULL;
    if (opts->subspace < 1 || opts->subspace > DORA_SPEC_SUBSPACE_MAX || opts->top < 0 ||
        !(opts->threshold > 0 && opts->threshold <= 1)) {
        dora_errf(err, "spectrum: bad options (subspace %lld, top %lld, threshold %g)",
                  (long long)opts->subspace, (long long)opts->top, opts->threshold);
        goto done;
    }
    if (nruns == 0) {
        dora_errf(err, "spectrum: no run");
        goto done;
    }
    if (base_path && base && !(sp->base_path = strdup(base_path))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    c.rc = calloc(nruns, sizeof *c.rc);
    sp->runs = calloc(nruns, sizeof *sp->runs);
    if (!c.rc || !sp->runs) {
        dora_errf(err, "out of memory");
        goto done;
    }
    sp->nruns = nruns;
    for (size_t i = 0; i < nruns; i++) {
        rctx *rx = &c.rc[i];
        rx->name = names[i];
        rx->run = &runs[i];
        if (open_steps(rx, base, err) != 0)
            goto done;
        if ((rx->adapter[0] ? select_adapter(&c, rx, err) : select_ft(&c, rx, err)) != 0)
            goto done;
        if (rx->nmods == 0) {
            dora_errf(err, "run '%s': no module to analyse (none of rank >= 2 and floating type%s%s)",
                      names[i], base ? " in both the base and every checkpoint" : "",
                      opts->include || opts->exclude ? " kept by the filters" : "");
            goto done;
        }
        qsort(rx->mods, rx->nmods, sizeof *rx->mods, rmod_cmp);
        rx->need_vectors = runs[i].nsteps >= 2 || (opts->compare && nruns >= 2);
        if (alloc_run(&c, i, names[i]) != 0) {
            dora_errf(err, "out of memory for the results of run '%s'", names[i]);
            goto done;
        }
    }
    if (!base) {
        int dora = 0;
        for (size_t i = 0; i < nruns; i++)
            for (size_t l = 0; l < c.rc[i].nmods; l++)
                dora |= strcmp(c.rc[i].mods[l].update, "lora-part") == 0;
        sp_note(sp, "no --base: intruder dimensions are not computed%s",
                dora ? "; DoRA modules are analysed through their low-rank part s*B@A (the merged "
                       "DoRA update m*V/||V|| - W0 needs the base)"
                     : "");
    }
    if (global_modules(&c, err) != 0)
        goto done;
    if (opts->compare && plan_compares(&c, err) != 0)
        goto done;
    for (size_t g = 0; g < c.ng; g++)
        if (do_module(&c, g, err) != 0)
            goto done;
    rc = 0;
done:
    for (size_t i = 0; c.rc && i < nruns; i++)
        free_rctx(&c.rc[i]);
    free(c.rc);
    for (size_t g = 0; g < c.ng; g++)
        free(c.g[g].idx);
    free(c.g);
    free(c.cmp_cursor);
    if (rc != 0)
        dora_spectrum_release(sp);
    return rc;
}
