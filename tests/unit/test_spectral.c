/* The spectral analyses (spectral.h) held to naive twins:
 *   - the low-rank path (QR of both factors + r x r SVD) against a dense SVD of
 *     the same update formed element by element in long double;
 *   - the dense methods against each other: gesdd, gesvdx (partial), the
 *     randomised subspace iteration (converging and falling back), float32;
 *   - r90, stable rank, phi and intruder counts on cases worked by hand;
 *   - dora_spectrum_run on small LoRA / DoRA / fan_in_fan_out / full-weight runs
 *     written here, every number against naive merges + dense SVDs.
 *
 *   build/tests/test_spectral            the tests
 *   build/tests/test_spectral --bench [N [R]]
 *                                        time the low-rank path against a dense SVD
 *                                        of an N x N update of rank R (default 4096, 16)
 */
#define _POSIX_C_SOURCE 200809L
#include "dora/adapter.h"
#include "dora/model.h"
#include "dora/run.h"
#include "dora/spectral.h"
#include "st_write.h"
#include "unit.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static uint64_t rng = 0x853c49e6748fea9bULL;
static double uniform(void) /* [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double *rand_matrix(int64_t m, int64_t n, double scale)
{
    double *a = malloc((size_t)(m * n) * sizeof *a);
    for (int64_t i = 0; i < m * n; i++)
        a[i] = scale * uniform();
    return a;
}

/* scale * L @ R, [m, n] row-major, in long double (the naive merge). */
static double *merge(int64_t m, int64_t n, int64_t r, const double *L, const double *R,
                     double scale)
{
    double *d = malloc((size_t)(m * n) * sizeof *d);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            long double s = 0;
            for (int64_t k = 0; k < r; k++)
                s += (long double)L[i * r + k] * R[k * n + j];
            d[i * n + j] = (double)((long double)scale * s);
        }
    return d;
}

/* max_i |a_i - b_i| / s1 over the first n values */
static double sv_err(const double *a, const double *b, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++)
        e = fmax(e, fabs(a[i] - b[i]));
    return n && b[0] > 0 ? e / b[0] : e;
}

/* phi(k, k) of two sets of vectors: 1 when they span the same top-k subspace. */
static double same_subspace(int64_t m, const double *u1, const double *u2, int64_t k)
{
    double *phi = malloc((size_t)(k * k) * sizeof *phi);
    dora_err err;
    double v = -1;
    if (dora_subspace_phi(m, u1, k, u2, k, phi, &err) == 0)
        v = phi[(k - 1) * k + (k - 1)];
    free(phi);
    return v;
}

/* ---------------------------------------------------------------- low-rank vs dense */

static void test_lowrank_vs_dense(int64_t m, int64_t n, int64_t r, double scale)
{
    dora_err err = {0};
    double *L = rand_matrix(m, r, 1.0), *R = rand_matrix(r, n, 0.3);
    double *d = merge(m, n, r, L, R, scale);
    dora_svd lo, de;
    int64_t nu = 6;
    CHECK_MSG(dora_svd_lowrank(&lo, m, n, r, L, R, scale, nu, &err) == 0, "%s", err.msg);
    dora_dense dd = {m, n, 0, d};
    CHECK_MSG(dora_svd_dense(&de, &dd, 0, nu, 0, &err) == 0, "%s", err.msg);
    int64_t k = r < m ? r : m;
    k = k < n ? k : n;
    CHECK(lo.ns == k && lo.method == DORA_SVD_LOWRANK && lo.complete);
    CHECK(de.ns == (m < n ? m : n) && de.method == DORA_SVD_FULL);
    double e = sv_err(lo.s, de.s, k);
    CHECK_MSG(e <= 1e-12, "[%lld, %lld] r %lld: low-rank vs dense singular values differ by %.3g s1",
              (long long)m, (long long)n, (long long)r, e);
    /* the dense values past the rank are zero to rounding */
    for (int64_t i = k; i < de.ns; i++)
        CHECK_MSG(de.s[i] <= 1e-12 * de.s[0], "sigma_%lld = %.3g beyond rank %lld", (long long)i,
                  de.s[i], (long long)k);
    CHECK(lo.rank == k && de.rank == k);
    int64_t kv = lo.nu < de.nu ? lo.nu : de.nu;
    CHECK(kv == (nu < k ? nu : k));
    for (int64_t i = 1; i <= kv; i++) {
        double p = same_subspace(m, lo.u, de.u, i);
        CHECK_MSG(unit_close(p, 1.0, 0, 1e-10), "top-%lld subspaces: phi %.17g", (long long)i, p);
    }
    printf("low-rank vs dense [%lld, %lld] r %lld: worst |ds| / s1 = %.3g\n", (long long)m,
           (long long)n, (long long)r, e);
    dora_svd_release(&lo);
    dora_svd_release(&de);
    free(L);
    free(R);
    free(d);
}

/* ---------------------------------------------------------------- dense methods */

/* A [m, n] matrix with singular values sv[0..k) (k = min(m, n)) and random
 * orthonormal singular vectors (QR of random matrices, in column-major). */
#include <lapacke.h>
static double *with_spectrum(int64_t m, int64_t n, const double *sv)
{
    int64_t k = m < n ? m : n;
    double *u = rand_matrix(m, k, 1), *v = rand_matrix(n, k, 1), *tau = malloc((size_t)k * 8);
    LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (int)m, (int)k, u, (int)m, tau);
    LAPACKE_dorgqr(LAPACK_COL_MAJOR, (int)m, (int)k, (int)k, u, (int)m, tau);
    LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (int)n, (int)k, v, (int)n, tau);
    LAPACKE_dorgqr(LAPACK_COL_MAJOR, (int)n, (int)k, (int)k, v, (int)n, tau);
    double *a = calloc((size_t)(m * n), sizeof *a);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t q = 0; q < k; q++)
                s += u[i + q * m] * sv[q] * v[j + q * n];
            a[i * n + j] = s;
        }
    free(u);
    free(v);
    free(tau);
    return a;
}

static void test_dense_methods(void)
{
    dora_err err = {0};
    const int64_t m = 300, n = 220, k = 220;
    double *sv = malloc((size_t)k * sizeof *sv), *flat = malloc((size_t)k * sizeof *flat);
    for (int64_t i = 0; i < k; i++) {
        sv[i] = 3.0 * pow(0.8, (double)i) + 1e-9; /* decaying: the randomised method converges */
        flat[i] = 1.0 + 0.001 * (double)(k - i);  /* flat: it must give up and fall back */
    }
    double *a = with_spectrum(m, n, sv), *b = with_spectrum(m, n, flat);
    dora_dense da = {m, n, 0, a}, db = {m, n, 0, b};
    dora_svd full, part, rnd, fb, f32;

    CHECK_MSG(dora_svd_dense(&full, &da, 0, 8, 0, &err) == 0, "%s", err.msg);
    CHECK(full.method == DORA_SVD_FULL && full.ns == k && full.complete && full.nu == 8);
    CHECK_MSG(sv_err(full.s, sv, k) <= 1e-13, "gesdd vs the built spectrum: %.3g",
              sv_err(full.s, sv, k));

    CHECK_MSG(dora_svd_dense(&part, &da, 12, 8, 0, &err) == 0, "%s", err.msg);
    CHECK(part.method == DORA_SVD_PARTIAL && part.ns == 12 && !part.complete);
    CHECK_MSG(sv_err(part.s, sv, 12) <= 1e-13, "gesvdx: %.3g", sv_err(part.s, sv, 12));
    CHECK(unit_close(same_subspace(m, part.u, full.u, 8), 1.0, 0, 1e-10));

    CHECK_MSG(dora_svd_dense(&rnd, &da, 12, 8, 1, &err) == 0, "%s", err.msg);
    CHECK_MSG(rnd.method == DORA_SVD_RANDOMIZED, "method %d", (int)rnd.method);
    CHECK(rnd.ns == 12);
    double er = sv_err(rnd.s, sv, 12);
    CHECK_MSG(er <= 1e-10, "randomised: %.3g", er);
    for (int64_t i = 1; i <= 8; i++)
        CHECK_MSG(unit_close(same_subspace(m, rnd.u, full.u, i), 1.0, 0, 1e-9), "rand top-%lld",
                  (long long)i);
    printf("randomised subspace iteration: %d iterations, worst |ds| / s1 = %.3g\n",
           rnd.iterations, er);

    CHECK_MSG(dora_svd_dense(&fb, &db, 12, 8, 1, &err) == 0, "%s", err.msg);
    CHECK_MSG(fb.method == DORA_SVD_PARTIAL, "flat spectrum: method %d after %d iterations",
              (int)fb.method, fb.iterations);
    CHECK_MSG(sv_err(fb.s, flat, 12) <= 1e-13, "fallback: %.3g", sv_err(fb.s, flat, 12));
    printf("flat spectrum: randomised gave up after %d iteration(s), gesvdx used\n",
           fb.iterations);

    float *af = malloc((size_t)(m * n) * sizeof *af);
    for (int64_t i = 0; i < m * n; i++)
        af[i] = (float)a[i];
    dora_dense d32 = {m, n, 1, af};
    CHECK_MSG(dora_svd_dense(&f32, &d32, 0, 4, 0, &err) == 0, "%s", err.msg);
    CHECK(f32.bits == 32 && f32.ns == k);
    double e32 = sv_err(f32.s, sv, k);
    CHECK_MSG(e32 <= 2e-6, "float32 gesdd: %.3g", e32);
    CHECK(unit_close(same_subspace(m, f32.u, full.u, 4), 1.0, 0, 1e-5));
    dora_svd_release(&f32);
    CHECK_MSG(dora_svd_dense(&f32, &d32, 12, 4, 1, &err) == 0, "%s", err.msg);
    CHECK_MSG(f32.method == DORA_SVD_RANDOMIZED && sv_err(f32.s, sv, 12) <= 2e-6,
              "float32 randomised: method %d, %.3g", (int)f32.method, sv_err(f32.s, sv, 12));
    printf("float32 dense path: worst |ds| / s1 = %.3g\n", e32);

    /* a zero matrix: rank 0, no direction */
    double *z = calloc((size_t)(m * n), sizeof *z);
    dora_dense dz = {m, n, 0, z};
    dora_svd zs;
    CHECK(dora_svd_dense(&zs, &dz, 0, 4, 0, &err) == 0 && zs.rank == 0 && zs.s[0] == 0);
    dora_svd_release(&zs);
    CHECK(dora_svd_dense(&zs, &dz, 10, 4, 1, &err) == 0 && zs.rank == 0);
    dora_svd_release(&zs);
    free(z);

    dora_svd_release(&full);
    dora_svd_release(&part);
    dora_svd_release(&rnd);
    dora_svd_release(&fb);
    dora_svd_release(&f32);
    free(af);
    free(a);
    free(b);
    free(sv);
    free(flat);
}

/* Every value and a few vectors (one bidiagonal reduction, dense_values_topvec) against
 * gesdd with every vector: values to 1e-13 of s1, each of the top vectors the same up to
 * sign to 1e-10 (float32: 1e-6 and 1e-4), in both orientations (A^T upper or lower
 * bidiagonal). */
static void test_values_topvec(int64_t m, int64_t n, int f32)
{
    dora_err err = {0};
    const int64_t k = m < n ? m : n, nu = 10;
    double *sv = malloc((size_t)k * sizeof *sv);
    for (int64_t i = 0; i < k; i++)
        sv[i] = 2.0 * pow(0.9, (double)i);
    double *a = with_spectrum(m, n, sv);
    float *af = malloc((size_t)(m * n) * sizeof *af);
    for (int64_t i = 0; i < m * n; i++)
        af[i] = (float)a[i];
    dora_dense d = {m, n, f32, f32 ? (void *)af : (void *)a};
    dora_dense d64 = {m, n, 0, a};
    dora_svd ref, got;
    CHECK_MSG(dora_svd_dense(&ref, &d64, 0, k, 0, &err) == 0, "%s", err.msg);
    CHECK_MSG(dora_svd_dense(&got, &d, 0, nu, 0, &err) == 0, "%s", err.msg);
    CHECK(got.method == DORA_SVD_FULL && got.ns == k && got.complete && got.nu == nu);
    double es = sv_err(got.s, ref.s, k), eu = 0;
    for (int64_t j = 0; j < nu; j++) {
        double dot = 0;
        for (int64_t i = 0; i < m; i++)
            dot += got.u[i + j * m] * ref.u[i + j * m];
        eu = fmax(eu, fabs(1.0 - fabs(dot)));
    }
    CHECK_MSG(es <= (f32 ? 1e-6 : 1e-13), "[%lld, %lld] f32 %d: values %.3g", (long long)m,
              (long long)n, f32, es);
    CHECK_MSG(eu <= (f32 ? 1e-4 : 1e-10), "[%lld, %lld] f32 %d: vectors %.3g", (long long)m,
              (long long)n, f32, eu);
    dora_svd_release(&ref);
    dora_svd_release(&got);
    free(a);
    free(af);
    free(sv);
}

/* dora_svd_top (the Gram matrix's top eigenvectors starting a verified subspace
 * iteration) against gesdd with every vector and against its twin, gesvdx: the top k
 * values to 1e-13 of s1 and each vector the same up to sign to 1e-10 (float32: 1e-6
 * and 1e-4), and the Gram method taken rather than the fallback. KIND 0: decaying
 * values; 1: a bulk edge (values within 0.1% of each other); 2: s_k = s_{k+1} (the
 * top-k subspace is not unique: values and the top k-1 vectors only); 3: zero. */
static void test_svd_top(int64_t m, int64_t n, int f32, int kind)
{
    dora_err err = {0};
    const int64_t p = m < n ? m : n, k = 10 < p ? 10 : p;
    double *sv = malloc((size_t)p * sizeof *sv);
    for (int64_t i = 0; i < p; i++)
        sv[i] = kind == 0   ? 2.0 * pow(0.9, (double)i)
                : kind == 1 ? 1.0 + 0.001 * (double)(p - i)
                : kind == 2 ? (i < k - 1 ? 3.0 - 0.1 * (double)i : 1.0 / (double)(i + 1 - k + 1))
                            : 0.0;
    if (kind == 2 && k < p)
        sv[k] = sv[k - 1];
    double *a = with_spectrum(m, n, sv);
    float *af = malloc((size_t)(m * n) * sizeof *af);
    for (int64_t i = 0; i < m * n; i++)
        af[i] = (float)a[i];
    dora_dense d = {m, n, f32, f32 ? (void *)af : (void *)a}, d64 = {m, n, 0, a};
    dora_svd ref, twin, got;
    CHECK_MSG(dora_svd_dense(&ref, &d64, 0, p, 0, &err) == 0, "%s", err.msg);
    CHECK_MSG(dora_svd_dense(&twin, &d, k, k, 0, &err) == 0, "%s", err.msg);
    CHECK_MSG(dora_svd_top(&got, &d, k, &err) == 0, "%s", err.msg);
    CHECK_MSG(got.method == DORA_SVD_GRAM && got.ns == k && got.nu == k && got.bits == (f32 ? 32 : 64),
              "[%lld, %lld] f32 %d kind %d: method %d, %lld values", (long long)m, (long long)n,
              f32, kind, (int)got.method, (long long)got.ns);
    const double tv = f32 ? 1e-6 : 1e-13, tu = f32 ? 1e-4 : 1e-10;
    double es = got.ns == k ? fmax(sv_err(got.s, ref.s, k), sv_err(got.s, twin.s, k)) : 1;
    double eu = 0;
    const int64_t kv = kind == 2 ? k - 1 : kind == 3 ? 0 : k;
    for (int64_t j = 0; got.nu == k && j < kv; j++) {
        double dot = 0;
        for (int64_t i = 0; i < m; i++)
            dot += got.u[i + j * m] * ref.u[i + j * m];
        eu = fmax(eu, fabs(1.0 - fabs(dot)));
    }
    if (kind == 3)
        CHECK(got.rank == 0 && got.s[0] == 0);
    CHECK_MSG(es <= tv, "[%lld, %lld] f32 %d kind %d: values %.3g", (long long)m, (long long)n,
              f32, kind, es);
    CHECK_MSG(eu <= tu, "[%lld, %lld] f32 %d kind %d: vectors %.3g", (long long)m, (long long)n,
              f32, kind, eu);
    printf("svd_top [%lld, %lld] f32 %d kind %d: %d iteration(s), values %.3g, vectors %.3g\n",
           (long long)m, (long long)n, f32, kind, got.iterations, es, eu);
    dora_svd_release(&ref);
    dora_svd_release(&twin);
    dora_svd_release(&got);
    free(a);
    free(af);
    free(sv);
}

/* ---------------------------------------------------------------- numbers by hand */

static void test_numbers(void)
{
    double s[] = {3, 2, 1, 0};
    /* energies 9, 4, 1: total 14; 90% = 12.6 -> k = 3 (9 + 4 = 13 >= 12.6 -> k = 2) */
    CHECK(dora_energy_rank(s, 4, 14, 0.9) == 2);
    CHECK(dora_energy_rank(s, 4, 14, 0.95) == 3);
    CHECK(dora_energy_rank(s, 1, 14, 0.9) == -1); /* only the top value known */
    CHECK(dora_energy_rank(s, 4, 0, 0.9) == 0);
    CHECK(dora_energy_rank(s, 4, 9.0 / 0.9, 0.9) == 1); /* exactly 90% */
    CHECK(unit_close(dora_stable_rank(14, 3), 14.0 / 9.0, 1e-15, 0));
    CHECK(dora_stable_rank(0, 0) == 0);

    /* phi: U1 = [e1 e2], U2 = [cos t e1 + sin t e3, e2] in R^3 */
    const double t = 0.3, c = cos(t), sn = sin(t);
    double u1[] = {1, 0, 0, 0, 1, 0}, u2[] = {c, 0, sn, 0, 1, 0}, phi[4];
    dora_err err;
    CHECK(dora_subspace_phi(3, u1, 2, u2, 2, phi, &err) == 0);
    CHECK(unit_close(phi[0], c * c, 1e-15, 0));           /* (1, 1) */
    CHECK(unit_close(phi[1], c * c, 1e-15, 0));           /* (1, 2): (c^2 + 0) / 1 */
    CHECK(unit_close(phi[2], c * c, 1e-15, 0));           /* (2, 1): (c^2 + 0) / 1 */
    CHECK(unit_close(phi[3], (c * c + 1) / 2, 1e-15, 0)); /* (2, 2) */

    /* intruders: W0's vectors e1..e4; W_t's: e1, (e1 + e2)/sqrt 2, (1,1,1,1)/2 */
    double u0[16] = {0}, ut[12];
    for (int i = 0; i < 4; i++)
        u0[i * 4 + i] = 1;
    const double h = 1 / sqrt(2.0);
    double v[12] = {1, 0, 0, 0, h, h, 0, 0, 0.5, 0.5, 0.5, 0.5};
    memcpy(ut, v, sizeof v);
    double mc[3];
    CHECK(dora_intruders(4, u0, 4, ut, 3, 0.5, mc) == 0); /* 0.5 is not below 0.5 */
    CHECK(mc[0] == 1 && unit_close(mc[1], h, 1e-15, 0) && mc[2] == 0.5);
    CHECK(dora_intruders(4, u0, 4, ut, 3, 0.6, mc) == 1);
    CHECK(dora_intruders(4, u0, 4, ut, 3, 0.75, mc) == 2);
}

/* ---------------------------------------------------------------- runs on disk */

static char root[] = "/tmp/dora-unit-spectral-XXXXXX";

typedef struct wt {
    char name[128];
    int ndim;
    int64_t shape[2];
    double *v; /* written as F32; kept as the float values */
} wt;

static int64_t numel(const wt *t) { return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

static void set_tensor(wt *t, const char *name, int ndim, int64_t r, int64_t c, double scale)
{
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = r;
    t->shape[1] = c;
    t->v = malloc((size_t)numel(t) * sizeof *t->v);
    for (int64_t i = 0; i < numel(t); i++)
        t->v[i] = (double)(float)(scale * uniform());
}

static void write_st(const char *path, wt *ts, int n)
{
    char header[8192];
    size_t used = 0, off = 0;
    used += (size_t)snprintf(header + used, sizeof header - used, "{");
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)numel(&ts[i]) * 4;
        if (ts[i].ndim == 1)
            used += (size_t)snprintf(header + used, sizeof header - used,
                                     "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                                     "\"data_offsets\":[%zu,%zu]}",
                                     i ? "," : "", ts[i].name, (long long)ts[i].shape[0], off,
                                     off + bytes);
        else
            used += (size_t)snprintf(header + used, sizeof header - used,
                                     "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                                     "\"data_offsets\":[%zu,%zu]}",
                                     i ? "," : "", ts[i].name, (long long)ts[i].shape[0],
                                     (long long)ts[i].shape[1], off, off + bytes);
        off += bytes;
    }
    snprintf(header + used, sizeof header - used, "}");
    unsigned char *data = malloc(off ? off : 1);
    size_t p = 0;
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < numel(&ts[i]); k++, p += 4) {
            float f = (float)ts[i].v[k];
            memcpy(data + p, &f, 4);
        }
    st_write_raw(path, header, data, off);
    free(data);
}

static void write_text(const char *path, const char *body)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(body, f);
        fclose(f);
    }
}

/* the model of the tests: base tensors (float values) */
enum { B_Q0, B_Q1, B_CATTN, B_N };
static wt base[B_N];
#define Q_OUT 40
#define Q_IN 30
#define CA_IN 24
#define CA_OUT 36

/* W0 of a module as [out, in] (c_attn is stored [in, out]). */
static double w0_at(int b, int64_t i, int64_t j)
{
    if (b == B_CATTN)
        return base[b].v[j * CA_OUT + i];
    return base[b].v[i * base[b].shape[1] + j];
}

/* What one step of one module is, for the naive reference. */
typedef struct ref {
    int b;                    /* base tensor */
    int64_t m, n, r;
    double scale;
    const double *A, *B;      /* lora_A [r, n], lora_B [m, r] */
    const double *mag;        /* DoRA magnitude [m] or NULL */
    const double *wt;         /* full weight [m, n] (stored as the base) or NULL */
} ref;

/* dW and W_t of a step, naively, [m, n] row-major. */
static void naive_update(const ref *rf, int with_base, double *dw, double *wtm)
{
    for (int64_t i = 0; i < rf->m; i++) {
        long double vv = 0;
        long double *row = malloc((size_t)rf->n * sizeof *row);
        for (int64_t j = 0; j < rf->n; j++) {
            long double w0 = with_base ? w0_at(rf->b, i, j) : 0;
            if (rf->wt) {
                row[j] = rf->wt[i * rf->n + j];
            } else {
                long double u = 0;
                for (int64_t k = 0; k < rf->r; k++)
                    u += (long double)rf->B[i * rf->r + k] * rf->A[k * rf->n + j];
                row[j] = w0 + (long double)rf->scale * u;
            }
            vv += row[j] * row[j];
        }
        long double f = rf->mag && with_base ? (long double)rf->mag[i] / sqrtl(vv) : 1;
        for (int64_t j = 0; j < rf->n; j++) {
            long double w0 = with_base ? w0_at(rf->b, i, j) : 0;
            wtm[i * rf->n + j] = (double)(row[j] * f);
            dw[i * rf->n + j] = (double)(row[j] * f - w0);
        }
        free(row);
    }
}

static int find_module(const dora_spec_run *r, const char *name)
{
    for (size_t l = 0; l < r->nmodules; l++)
        if (strcmp(r->mods[l].name, name) == 0)
            return (int)l;
    return -1;
}

/* Every number of one module of a run against naive merges + dense SVDs. */
static void check_module(const dora_spectrum *sp, const dora_spec_run *r, const char *name,
                         const ref *steps, int with_base, double *worst)
{
    int l = find_module(r, name);
    CHECK_MSG(l >= 0, "module %s missing from run %s", name, r->name);
    if (l < 0)
        return;
    const dora_spec_module *mo = &r->mods[l];
    const int64_t m = steps[0].m, n = steps[0].n, K = sp->opts.subspace;
    const size_t L = r->nmodules, S = r->nsteps;
    dora_svd *sv = calloc(S, sizeof *sv);
    dora_err err = {0};
    dora_svd b0;
    memset(&b0, 0, sizeof b0);
    double *w0 = malloc((size_t)(m * n) * sizeof *w0);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            w0[i * n + j] = w0_at(steps[0].b, i, j);
    if (with_base) {
        dora_dense d0 = {m, n, 0, w0};
        CHECK(dora_svd_dense(&b0, &d0, 0, m < n ? m : n, 0, &err) == 0);
    }
    for (size_t s = 0; s < S; s++) {
        double *dw = malloc((size_t)(m * n) * sizeof *dw), *wtm = malloc((size_t)(m * n) * 8);
        naive_update(&steps[s], with_base, dw, wtm);
        dora_dense dd = {m, n, 0, dw};
        CHECK_MSG(dora_svd_dense(&sv[s], &dd, 0, K, 0, &err) == 0, "%s", err.msg);
        long double f2 = 0;
        for (int64_t i = 0; i < m * n; i++)
            f2 += (long double)dw[i] * dw[i];
        const size_t at = s * L + (size_t)l;
        CHECK_MSG(unit_close(r->fro_norm[at], sqrt((double)f2), 1e-10, 0), "%s step %zu fro %.17g vs %.17g",
                  name, s, r->fro_norm[at], sqrt((double)f2));
        double e = sv_err(mo->sigma + s * (size_t)mo->nsigma, sv[s].s, mo->nsigma);
        CHECK_MSG(e <= 1e-11, "%s step %zu: sigma differs from the naive dense SVD by %.3g s1", name,
                  s, e);
        *worst = fmax(*worst, e);
        int64_t r90 = dora_energy_rank(sv[s].s, sv[s].ns, (double)f2, 0.9);
        CHECK_MSG(r->r90[at] == r90, "%s step %zu r90 %lld vs %lld", name, s,
                  (long long)r->r90[at], (long long)r90);
        double sr = sv[s].s[0] > 0 ? (double)f2 / (sv[s].s[0] * sv[s].s[0]) : 0.0;
        CHECK_MSG(unit_close(r->stable_rank[at], sr, 1e-10, 0), "%s step %zu stable rank %.17g vs %.17g",
                  name, s, r->stable_rank[at], sr);
        if (with_base) {
            dora_svd ws;
            dora_dense dt = {m, n, 0, wtm};
            CHECK(dora_svd_dense(&ws, &dt, 0, 10, 0, &err) == 0);
            double mc[10];
            int64_t kt = m < n ? m : n;
            kt = kt < 10 ? kt : 10;
            int64_t cnt = dora_intruders(m, b0.u, b0.nu, ws.u, kt, sp->opts.threshold, mc);
            CHECK_MSG(r->intruders[at] == cnt, "%s step %zu intruders %d vs %lld", name, s,
                      (int)r->intruders[at], (long long)cnt);
            for (int64_t k = 0; k < kt; k++)
                CHECK_MSG(unit_close(mo->intruder_cos[s * 10 + (size_t)k], mc[k], 0, 1e-9),
                          "%s step %zu intruder cos %lld: %.17g vs %.17g", name, s, (long long)k,
                          mo->intruder_cos[s * 10 + (size_t)k], mc[k]);
            dora_svd_release(&ws);
        }
        free(dw);
        free(wtm);
    }
    /* phi grids of the run's pairs */
    for (size_t p = 0; p < r->npairs; p++) {
        const dora_svd *a = &sv[r->pairs[2 * p]], *b = &sv[r->pairs[2 * p + 1]];
        int64_t k1 = a->rank < K ? a->rank : K, k2 = b->rank < K ? b->rank : K;
        CHECK_MSG(mo->phi_k[2 * p] == k1 && mo->phi_k[2 * p + 1] == k2, "%s pair %zu k %d %d vs %lld %lld",
                  name, p, mo->phi_k[2 * p], mo->phi_k[2 * p + 1], (long long)k1, (long long)k2);
        if (k1 < 1 || k2 < 1)
            continue;
        double *phi = malloc((size_t)(k1 * k2) * sizeof *phi);
        CHECK(dora_subspace_phi(m, a->u, k1, b->u, k2, phi, &err) == 0);
        double e = 0;
        for (int64_t i = 0; i < k1; i++)
            for (int64_t j = 0; j < k2; j++)
                e = fmax(e, fabs(mo->phi[p * (size_t)(K * K) + (size_t)(i * K + j)] - phi[i * k2 + j]));
        CHECK_MSG(e <= 1e-9, "%s pair %zu: phi differs by %.3g", name, p, e);
        free(phi);
    }
    for (size_t s = 0; s < S; s++)
        dora_svd_release(&sv[s]);
    dora_svd_release(&b0);
    free(sv);
    free(w0);
}

static const char *cfg_lora =
    "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q\"], "
    "\"rank_pattern\": {\"l1.q\": 3}, \"fan_in_fan_out\": false, \"use_dora\": %s}";
static const char *cfg_fifo = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 5, "
                              "\"target_modules\": [\"c_attn\"], \"fan_in_fan_out\": true}";

static void test_runs(void)
{
    if (!mkdtemp(root)) {
        CHECK(0);
        return;
    }
    char p[600], cmd[2048];
    set_tensor(&base[B_Q0], "m.l0.q.weight", 2, Q_OUT, Q_IN, 0.5);
    set_tensor(&base[B_Q1], "m.l1.q.weight", 2, Q_OUT, Q_IN, 0.5);
    set_tensor(&base[B_CATTN], "m.c_attn.weight", 2, CA_IN, CA_OUT, 0.5);
    snprintf(p, sizeof p, "%s/base.safetensors", root);
    write_st(p, base, B_N);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/lora/checkpoint-10 %s/lora/checkpoint-20 %s/lora/checkpoint-30 "
             "%s/dora/checkpoint-10 %s/dora/checkpoint-20 %s/fifo/checkpoint-1 "
             "%s/fifo/checkpoint-2 %s/ft/checkpoint-5 %s/ft/checkpoint-6",
             root, root, root, root, root, root, root, root, root);
    if (system(cmd) != 0) {
        CHECK(0);
        return;
    }
    /* lora: 3 steps, l0.q r 4, l1.q r 3 (rank_pattern); the third step's l1.q B is 0
     * dora: 2 steps, magnitudes on both */
    enum { NSTEP = 3 };
    wt ad[2][NSTEP][5];
    ref refs[4][NSTEP];
    const char *runs[2] = {"lora", "dora"};
    const int steps[NSTEP] = {10, 20, 30};
    for (int ri = 0; ri < 2; ri++)
        for (int s = 0; s < (ri ? 2 : 3); s++) {
            wt *t = ad[ri][s];
            set_tensor(&t[0], "base_model.model.m.l0.q.lora_A.weight", 2, 4, Q_IN, 0.4);
            set_tensor(&t[1], "base_model.model.m.l0.q.lora_B.weight", 2, Q_OUT, 4, 0.1 * (s + 1));
            set_tensor(&t[2], "base_model.model.m.l1.q.lora_A.weight", 2, 3, Q_IN, 0.4);
            set_tensor(&t[3], "base_model.model.m.l1.q.lora_B.weight", 2, Q_OUT, 3,
                       ri == 0 && s == 2 ? 0.0 : 0.05);
            int nt = 4;
            if (ri == 1) {
                set_tensor(&t[4], "base_model.model.m.l0.q.lora_magnitude_vector", 1, Q_OUT, 0,
                           0.5);
                for (int i = 0; i < Q_OUT; i++) /* |W0 row| (1 +- 10%) */
                    t[4].v[i] = (double)(float)(1.6 * (1 + 0.1 * t[4].v[i]));
                nt = 5;
            }
            snprintf(p, sizeof p, "%s/%s/checkpoint-%d/adapter_model.safetensors", root, runs[ri],
                     steps[s]);
            write_st(p, t, nt);
            char cfg[512];
            snprintf(cfg, sizeof cfg, cfg_lora, ri ? "true" : "false");
            snprintf(p, sizeof p, "%s/%s/checkpoint-%d/adapter_config.json", root, runs[ri],
                     steps[s]);
            write_text(p, cfg);
            refs[2 * ri][s] = (ref){B_Q0, Q_OUT, Q_IN, 4, 2.0, t[0].v, t[1].v,
                                    ri ? t[4].v : NULL, NULL};
            refs[2 * ri + 1][s] = (ref){B_Q1, Q_OUT, Q_IN, 3, 8.0 / 3.0, t[2].v, t[3].v, NULL, NULL};
        }
    /* fifo: c_attn stored [24, 36] -> update [36, 24] */
    wt fa[2][2];
    ref fref[2];
    for (int s = 0; s < 2; s++) {
        set_tensor(&fa[s][0], "base_model.model.m.c_attn.lora_A.weight", 2, 2, CA_IN, 0.5);
        set_tensor(&fa[s][1], "base_model.model.m.c_attn.lora_B.weight", 2, CA_OUT, 2, 0.2);
        snprintf(p, sizeof p, "%s/fifo/checkpoint-%d/adapter_model.safetensors", root, s + 1);
        write_st(p, fa[s], 2);
        snprintf(p, sizeof p, "%s/fifo/checkpoint-%d/adapter_config.json", root, s + 1);
        write_text(p, cfg_fifo);
        fref[s] = (ref){B_CATTN, CA_OUT, CA_IN, 2, 2.5, fa[s][0].v, fa[s][1].v, NULL, NULL};
    }
    /* ft: every base tensor perturbed (c_attn as stored: [24, 36]) */
    wt ft[2][B_N];
    ref ftref[2][B_N];
    for (int s = 0; s < 2; s++) {
        for (int b = 0; b < B_N; b++) {
            ft[s][b] = base[b];
            ft[s][b].v = malloc((size_t)numel(&base[b]) * sizeof(double));
            for (int64_t i = 0; i < numel(&base[b]); i++)
                ft[s][b].v[i] = (double)(float)(base[b].v[i] + 0.01 * (s + 1) * uniform());
            ftref[s][b] = (ref){b, base[b].shape[0], base[b].shape[1], 0, 0, NULL, NULL, NULL,
                                ft[s][b].v};
        }
        snprintf(p, sizeof p, "%s/ft/checkpoint-%d/model.safetensors", root, s + 5);
        write_st(p, ft[s], B_N);
    }

    dora_err err = {0};
    dora_model *bm = NULL;
    snprintf(p, sizeof p, "%s/base.safetensors", root);
    CHECK_MSG(dora_model_open(&bm, p, &err) == 0, "%s", err.msg);
    const char *names[] = {"lora", "dora", "fifo", "ft"};
    dora_run rr[4];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        CHECK_MSG(dora_run_discover(&rr[i], p, &err) == 0, "%s", err.msg);
    }
    double worst = 0;
    for (int with_base = 0; with_base < 2; with_base++) {
        dora_spectrum_opts o;
        dora_spectrum_opts_init(&o);
        o.subspace = 5;
        o.compare = 1;
        dora_spectrum sp;
        int nr = with_base ? 4 : 3; /* ft needs the base */
        int rc = dora_spectrum_run(&sp, with_base ? bm : NULL, with_base ? "base" : NULL,
                                   (char *const *)names, rr, (size_t)nr, &o, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (rc != 0)
            continue;
        CHECK(sp.nruns == (size_t)nr && sp.ncompare == (size_t)(nr * (nr - 1) / 2));
        const dora_spec_run *lr = &sp.runs[0], *dr = &sp.runs[1], *fr = &sp.runs[2];
        CHECK(lr->nsteps == 3 && lr->nmodules == 2 && lr->npairs == 3);
        CHECK(strcmp(dr->method, "dora") == 0);
        int l0 = find_module(dr, "m.l0.q.weight");
        CHECK(l0 >= 0 && strcmp(dr->mods[l0].update, with_base ? "dora" : "lora-part") == 0);
        ref lq0[3] = {refs[0][0], refs[0][1], refs[0][2]}, lq1[3] = {refs[1][0], refs[1][1], refs[1][2]};
        check_module(&sp, lr, "m.l0.q.weight", lq0, with_base, &worst);
        check_module(&sp, lr, "m.l1.q.weight", lq1, with_base, &worst);
        /* the zero update: rank 0, r90 0, no phi */
        int l1 = find_module(lr, "m.l1.q.weight");
        CHECK(lr->r90[2 * 2 + (size_t)l1] == 0 && lr->stable_rank[2 * 2 + (size_t)l1] == 0);
        CHECK(lr->phi_prev[2 * 2 + (size_t)l1] == -1 && lr->phi_final[2 * 2 + (size_t)l1] == -1);
        ref dq0[2] = {refs[2][0], refs[2][1]}, dq1[2] = {refs[3][0], refs[3][1]};
        if (!with_base) /* DoRA without the base: the low-rank part s*B@A */
            dq0[0].mag = dq0[1].mag = NULL;
        check_module(&sp, dr, "m.l0.q.weight", dq0, with_base, &worst);
        check_module(&sp, dr, "m.l1.q.weight", dq1, with_base, &worst);
        check_module(&sp, fr, "m.c_attn.weight", fref, with_base, &worst);
        CHECK(fr->mods[0].rows == CA_OUT && fr->mods[0].cols == CA_IN);
        if (with_base) {
            const dora_spec_run *tr = &sp.runs[3];
            CHECK(tr->nmodules == 3);
            ref f0[2] = {ftref[0][B_Q0], ftref[1][B_Q0]}, f1[2] = {ftref[0][B_Q1], ftref[1][B_Q1]};
            check_module(&sp, tr, "m.l0.q.weight", f0, 1, &worst);
            check_module(&sp, tr, "m.l1.q.weight", f1, 1, &worst);
            int c = find_module(tr, "m.c_attn.weight"); /* a dense run reads it as stored */
            CHECK(c >= 0 && tr->mods[c].rows == CA_IN && tr->mods[c].cols == CA_OUT);
        }
        /* lora vs dora: shared steps 10, 20, plus finals (30, 20) */
        const dora_spec_compare *cp = &sp.cmp[0];
        CHECK(cp->run_a == 0 && cp->run_b == 1 && cp->nmodules == 2 && cp->npairs == 3);
        CHECK(cp->steps_a[0] == 10 && cp->steps_b[0] == 10 && cp->steps_a[2] == 30 &&
              cp->steps_b[2] == 20);
        /* lora vs fifo: no module in common */
        CHECK(sp.cmp[1].nmodules == 0);
        /* the run's steps 10 vs 20 of l0.q, and lora vs dora at step 10 (same factors
         * shape, different values): summaries are grid entries */
        int a0 = find_module(lr, "m.l0.q.weight");
        CHECK(lr->phi_prev[1 * 2 + (size_t)a0] ==
              lr->mods[a0].phi[0 * 25 + (size_t)(3 * 5 + 3)]); /* k = 4 */
        CHECK(lr->phi_final[2 * 2 + (size_t)a0] == 1.0);
        dora_spectrum_release(&sp);
    }
    printf("runs (LoRA, DoRA, fan_in_fan_out, full weights) vs naive merges + dense SVD: worst "
           "|ds| / s1 = %.3g\n",
           worst);

    /* errors: a full-weight run without the base; NaN in a factor names file and tensor */
    dora_spectrum sp;
    dora_spectrum_opts o;
    dora_spectrum_opts_init(&o);
    CHECK(dora_spectrum_run(&sp, NULL, NULL, (char *const *)&names[3], &rr[3], 1, &o, &err) != 0);
    CHECK_MSG(strstr(err.msg, "--base") && strstr(err.msg, "ft"), "%s", err.msg);
    ad[0][1][1].v[5] = NAN;
    snprintf(p, sizeof p, "%s/lora/checkpoint-20/adapter_model.safetensors", root);
    write_st(p, ad[0][1], 4);
    CHECK(dora_spectrum_run(&sp, NULL, NULL, (char *const *)names, rr, 1, &o, &err) != 0);
    CHECK_MSG(strstr(err.msg, p) && strstr(err.msg, "lora_B") && strstr(err.msg, "NaN"), "%s",
              err.msg);

    /* the base truncated while mapped: its pages are gone, the first read
     * faults (SIGBUS), and the guard turns that into an error naming it */
    snprintf(p, sizeof p, "%s/base.safetensors", root);
    CHECK(truncate(p, 0) == 0);
    CHECK(dora_spectrum_run(&sp, bm, "base", (char *const *)&names[3], &rr[3], 1, &o, &err) != 0);
    CHECK_MSG(strstr(err.msg, p) && strstr(err.msg, "shrank"), "%s", err.msg);

    for (int i = 0; i < 4; i++)
        dora_run_release(&rr[i]);
    dora_model_close(bm);
    for (int ri = 0; ri < 2; ri++)
        for (int s = 0; s < (ri ? 2 : 3); s++)
            for (int k = 0; k < (ri ? 5 : 4); k++)
                free(ad[ri][s][k].v);
    for (int s = 0; s < 2; s++) {
        free(fa[s][0].v);
        free(fa[s][1].v);
        for (int b = 0; b < B_N; b++)
            free(ft[s][b].v);
    }
    for (int b = 0; b < B_N; b++)
        free(base[b].v);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
}

/* ---------------------------------------------------------------- benchmark */

static int bench(int64_t N, int64_t r)
{
    dora_err err = {0};
    double *L = rand_matrix(N, r, 1.0), *R = rand_matrix(r, N, 1.0);
    double *d = malloc((size_t)(N * N) * sizeof *d);
    double t0 = now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)N, (int)r, 1.0, L, (int)r,
                R, (int)N, 0.0, d, (int)N);
    double t_form = now() - t0;
    dora_svd lo, de, dv;
    /* best of 5 for the fast path */
    double t_lo = 1e30;
    for (int i = 0; i < 5; i++) {
        t0 = now();
        if (dora_svd_lowrank(&lo, N, N, r, L, R, 1.0, 16, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t = now() - t0;
        t_lo = t < t_lo ? t : t_lo;
        if (i < 4)
            dora_svd_release(&lo);
    }
    dora_dense dd = {N, N, 0, d};
    t0 = now();
    if (dora_svd_dense(&de, &dd, 0, 0, 0, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t_dense = now() - t0;
    t0 = now();
    if (dora_svd_dense(&dv, &dd, 0, 16, 0, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t_dense_v = now() - t0;
    dora_svd rv;
    t0 = now();
    if (dora_svd_dense(&rv, &dd, 16, 16, 1, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t_rand = now() - t0;
    printf("bench: %lld x %lld update of rank %lld (float64)\n", (long long)N, (long long)N,
           (long long)r);
    printf("  low-rank path (QR of B and A^T + %lld x %lld SVD, 16 vectors): %.6f s (best of 5)\n",
           (long long)r, (long long)r, t_lo);
    printf("  dense gesdd, values only:                       %.3f s  (%.0fx)\n", t_dense,
           t_dense / t_lo);
    printf("  dense gesdd, values and vectors:                %.3f s  (%.0fx)\n", t_dense_v,
           t_dense_v / t_lo);
    printf("  dense --top 16 (method %d, %d iteration(s)):      %.3f s  (%.0fx)\n", (int)rv.method,
           rv.iterations, t_rand, t_rand / t_lo);
    printf("  (forming the dense update: %.3f s, not counted)\n", t_form);
    printf("  max |s_lowrank - s_dense| / s1 over the top %lld: %.3g\n", (long long)r,
           sv_err(lo.s, de.s, r));
    dora_svd_release(&lo);
    dora_svd_release(&de);
    dora_svd_release(&dv);
    dora_svd_release(&rv);
    free(L);
    free(R);
    free(d);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0) {
        int64_t N = argc >= 3 ? atoll(argv[2]) : 4096, r = argc >= 4 ? atoll(argv[3]) : 16;
        if (N < 1 || r < 1 || r > N)
            return 2;
        return bench(N, r);
    }
    test_lowrank_vs_dense(120, 80, 8, 2.0);
    test_lowrank_vs_dense(50, 200, 16, 0.5);
    test_lowrank_vs_dense(12, 40, 16, 1.0);  /* r > out: the core is out x r */
    test_lowrank_vs_dense(64, 10, 16, 1.0);  /* r > in */
    test_lowrank_vs_dense(1, 30, 4, 1.0);
    test_dense_methods();
    test_values_topvec(240, 90, 0);
    test_values_topvec(90, 240, 0);
    test_values_topvec(240, 90, 1);
    test_values_topvec(90, 240, 1);
    for (int kind = 0; kind < 4; kind++) {
        test_svd_top(260, 120, 0, kind);
        test_svd_top(120, 260, 0, kind);
    }
    test_svd_top(260, 120, 1, 0);
    test_svd_top(120, 260, 1, 1);
    test_svd_top(15, 12, 0, 0); /* the block is the whole matrix */
    test_svd_top(7, 30, 0, 0);  /* fewer than 10 values */
    test_numbers();
    test_runs();
    return unit_summary("test_spectral");
}
