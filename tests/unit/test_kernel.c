/* Unit tests for the row kernel: the fast path against its naive twin, the
 * conversions bit for bit, and the edge cases (tiny updates, zero rows,
 * scaling, NaN/Inf, unaligned data). */
#include "dora/kernel.h"
#include "unit.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The instruction set under test: every one this CPU has is run in turn. */
static dora_isa cur_isa;

static void fast_sums(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                      dora_rowsums *out)
{
    if (dora_row_sums_isa(cur_isa, a, ta, b, tb, n, out) != 0)
        abort(); /* main only selects available ones */
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double uniform(void) /* in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

static uint16_t f32_to_bf16(float f) /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static uint16_t f32_to_f16(float f) /* via _Float16-free rounding: good enough for test data */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int exp = (int)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (exp <= 0)
        return (uint16_t)sign; /* flush tiny test values to zero */
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    if ((man & 0x1fffu) > 0x1000u || ((man & 0x1fffu) == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)h;
}

/* Fill N elements of type T at P from the doubles V. */
static void store(void *p, dora_dtype t, const double *v, size_t n)
{
    unsigned char *q = p;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        float f = (float)v[i];
        switch (t) {
        case DORA_DT_BF16:
            h = f32_to_bf16(f);
            memcpy(q + 2 * i, &h, 2);
            break;
        case DORA_DT_F16:
            h = f32_to_f16(f);
            memcpy(q + 2 * i, &h, 2);
            break;
        case DORA_DT_F32:
            memcpy(q + 4 * i, &f, 4);
            break;
        default:
            memcpy(q + 8 * i, &v[i], 8);
            break;
        }
    }
}

static void test_conversions(void)
{
    int bad_bf = 0, bad_f16 = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        unsigned char b[2] = {(unsigned char)(h & 0xff), (unsigned char)(h >> 8)};
        dora_rowsums fast, naive;
        /* a row of one element against zero: saa = x^2 for both paths */
        unsigned char z[2] = {0, 0};
        fast_sums(b, DORA_DT_BF16, z, DORA_DT_BF16, 1, &fast);
        dora_row_sums_naive(b, DORA_DT_BF16, z, DORA_DT_BF16, 1, &naive);
        if (!(fast.saa == naive.saa || (isnan(fast.saa) && isnan(naive.saa))))
            bad_bf++;
        fast_sums(b, DORA_DT_F16, z, DORA_DT_F16, 1, &fast);
        dora_row_sums_naive(b, DORA_DT_F16, z, DORA_DT_F16, 1, &naive);
        if (!(fast.saa == naive.saa || (isnan(fast.saa) && isnan(naive.saa))))
            bad_f16++;
    }
    CHECK_MSG(bad_bf == 0, "%d bf16 patterns differ", bad_bf);
    CHECK_MSG(bad_f16 == 0, "%d f16 patterns differ", bad_f16);
    CHECK(dora_f16_to_f32(0x3c00) == 1.0f);
    CHECK(dora_f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
    CHECK(dora_f16_to_f32(0xc000) == -2.0f);
    CHECK(dora_bf16_to_f32(0x3f80) == 1.0f);
}

/* Fast sums + finish against the naive definitions, for every type pair. */
static void test_random_rows(void)
{
    static const dora_dtype types[] = {DORA_DT_BF16, DORA_DT_F16, DORA_DT_F32, DORA_DT_F64};
    static const size_t lens[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65,
                                  511, 512, 513, 1000, 4099};
    double worst_dm = 0, worst_omc = 0;
    for (size_t ta = 0; ta < 4; ta++)
        for (size_t tb = 0; tb < 4; tb++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                size_t n = lens[li];
                double *va = malloc(n * sizeof *va), *vb = malloc(n * sizeof *vb);
                unsigned char *a = malloc(n * 8 + 1), *b = malloc(n * 8 + 1);
                for (size_t i = 0; i < n; i++) {
                    va[i] = 0.05 * uniform();
                    vb[i] = 1.1 * va[i] + 0.01 * uniform();
                }
                /* +1: unaligned views */
                store(a + 1, types[ta], va, n);
                store(b + 1, types[tb], vb, n);
                dora_rowsums s;
                dora_rowstat fast, ref;
                int side;
                fast_sums(a + 1, types[ta], b + 1, types[tb], n, &s);
                CHECK(dora_row_finish(&s, &fast, &side) == 0);
                dora_row_stat_naive(a + 1, types[ta], b + 1, types[tb], n, &ref);
                double edm = fabs(fast.dm - ref.dm) / (ref.dm + 1e-300);
                double eomc = fabs(fast.one_minus_cos - ref.one_minus_cos) / (ref.one_minus_cos + 1e-300);
                if (n > 1 && edm > worst_dm)
                    worst_dm = edm;
                if (n > 1 && eomc > worst_omc)
                    worst_omc = eomc;
                CHECK_MSG(unit_close(fast.dm, ref.dm, 1e-12, 0), "types %s/%s n=%zu dm %.17g vs %.17g",
                          dora_dtype_name(types[ta]), dora_dtype_name(types[tb]), n, fast.dm, ref.dm);
                /* atol: two parallel 1-element rows give 1 - cos = 0 exactly in the naive
                 * formula and a rounding residue of ~1e-17 in the Lagrange form */
                CHECK_MSG(unit_close(fast.one_minus_cos, ref.one_minus_cos, 1e-10, 1e-15),
                          "types %s/%s n=%zu 1-cos %.17g vs %.17g", dora_dtype_name(types[ta]),
                          dora_dtype_name(types[tb]), n, fast.one_minus_cos, ref.one_minus_cos);
                CHECK(unit_close(fast.m0, ref.m0, 1e-14, 0) && unit_close(fast.mt, ref.mt, 1e-14, 0));
                /* passive and active: n = 1 is a pure radial update, passive a rounding
                 * residue of the Lagrange form (atol) */
                CHECK_MSG(unit_close(fast.passive, ref.passive, 1e-10, 1e-15 * fast.m0) &&
                              unit_close(fast.active, ref.active, 1e-10, 1e-15 * fast.m0),
                          "types %s/%s n=%zu passive %.17g vs %.17g, active %.17g vs %.17g",
                          dora_dtype_name(types[ta]), dora_dtype_name(types[tb]), n,
                          fast.passive, ref.passive, fast.active, ref.active);
                CHECK_MSG(fast.passive >= 0 && unit_close(fast.passive + fast.active,
                                                          fast.mt - fast.m0, 1e-12, 1e-15 * fast.m0),
                          "n=%zu passive + active %.17g, |b| - |a| %.17g", n,
                          fast.passive + fast.active, fast.mt - fast.m0);
                dora_rowsums sn;
                dora_row_sums_naive(a + 1, types[ta], b + 1, types[tb], n, &sn);
                CHECK(unit_close(s.saa, sn.saa, 1e-13, 0) && unit_close(s.sdd, sn.sdd, 1e-13, 0));
                free(va);
                free(vb);
                free(a);
                free(b);
            }
    printf("kernel (%s) vs naive: worst relative error dm %.3g, 1-cos %.3g\n",
           dora_isa_name(cur_isa), worst_dm, worst_omc);
}

/* An F32 update of relative size 1e-5 gives 1 - cos near 1e-10; float32
 * `1 - dot/(|a||b|)` would return noise or 0. */
static void test_tiny_update(void)
{
    enum { N = 4096 };
    static float a[N], b[N];
    for (int i = 0; i < N; i++) {
        a[i] = (float)(0.02 * uniform());
        b[i] = a[i] + (float)(2e-7 * uniform());
    }
    dora_rowsums s;
    dora_rowstat fast, ref;
    int side;
    fast_sums(a, DORA_DT_F32, b, DORA_DT_F32, N, &s);
    CHECK(dora_row_finish(&s, &fast, &side) == 0);
    dora_row_stat_naive(a, DORA_DT_F32, b, DORA_DT_F32, N, &ref);
    CHECK_MSG(ref.one_minus_cos > 1e-12 && ref.one_minus_cos < 1e-8, "1-cos %.3g",
              ref.one_minus_cos);
    CHECK_MSG(unit_close(fast.one_minus_cos, ref.one_minus_cos, 1e-6, 0), "%.17g vs %.17g",
              fast.one_minus_cos, ref.one_minus_cos);
    CHECK_MSG(unit_close(fast.dm, ref.dm, 1e-6, 0), "%.17g vs %.17g", fast.dm, ref.dm);
    /* float32 textbook formula, to show the test has teeth */
    float dot = 0, na = 0, nb = 0;
    for (int i = 0; i < N; i++) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    double naive32 = 1.0 - (double)(dot / (sqrtf(na) * sqrtf(nb)));
    CHECK_MSG(!unit_close(naive32, ref.one_minus_cos, 1e-3, 0),
              "float32 formula agreed (%.3g): the test would not catch cancellation", naive32);
}

static void test_edges(void)
{
    double a[5] = {1, -2, 3, 0.5, 0}, b[5], z[5] = {0};
    dora_rowsums s;
    dora_rowstat st;
    int side;
    /* pure scaling: no direction change, magnitude doubles */
    for (int i = 0; i < 5; i++)
        b[i] = 2 * a[i];
    fast_sums(a, DORA_DT_F64, b, DORA_DT_F64, 5, &s);
    CHECK(dora_row_finish(&s, &st, &side) == 0);
    CHECK(st.one_minus_cos >= 0 && st.one_minus_cos < 1e-15);
    CHECK(unit_close(st.dm, st.m0, 1e-15, 0));
    /* opposite direction */
    for (int i = 0; i < 5; i++)
        b[i] = -a[i];
    fast_sums(a, DORA_DT_F64, b, DORA_DT_F64, 5, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(unit_close(st.one_minus_cos, 2.0, 1e-15, 0) && st.dm < 1e-15);
    /* orthogonal */
    double o1[2] = {1, 0}, o2[2] = {0, 3};
    fast_sums(o1, DORA_DT_F64, o2, DORA_DT_F64, 2, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(unit_close(st.one_minus_cos, 1.0, 1e-15, 0) && unit_close(st.dm, 2.0, 1e-15, 0));
    /* zero rows */
    fast_sums(z, DORA_DT_F64, z, DORA_DT_F64, 5, &s);
    CHECK(dora_row_finish(&s, &st, &side) == 0);
    CHECK(st.zero == 1 && st.dm == 0 && st.one_minus_cos == 0);
    fast_sums(z, DORA_DT_F64, a, DORA_DT_F64, 5, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(st.zero == 1 && st.one_minus_cos == 1.0 && unit_close(st.dm, st.mt, 1e-15, 0));
    fast_sums(a, DORA_DT_F64, z, DORA_DT_F64, 5, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(st.zero == 1 && st.one_minus_cos == 1.0 && unit_close(st.dm, st.m0, 1e-15, 0));
    /* zero-length rows are zero rows */
    fast_sums(NULL, DORA_DT_F32, NULL, DORA_DT_F32, 0, &s);
    CHECK(dora_row_finish(&s, &st, &side) == 0 && st.zero == 1 && st.dm == 0);
    /* NaN and Inf: refused, and the side is named */
    double nan_row[5] = {1, NAN, 0, 0, 0}, inf_row[5] = {INFINITY, 0, 0, 0, 0};
    fast_sums(nan_row, DORA_DT_F64, a, DORA_DT_F64, 5, &s);
    CHECK(dora_row_finish(&s, &st, &side) == -1 && side == 0);
    fast_sums(a, DORA_DT_F64, inf_row, DORA_DT_F64, 5, &s);
    CHECK(dora_row_finish(&s, &st, &side) == -1 && side == 1);
    uint16_t bf_nan = 0x7fc0;
    uint16_t one[1] = {0x3f80};
    fast_sums(one, DORA_DT_BF16, &bf_nan, DORA_DT_BF16, 1, &s);
    CHECK(dora_row_finish(&s, &st, &side) == -1 && side == 1);
}

/* Where dM comes from (kernel.h): the split's known cases, and the angle form
 * (DoRA's path) against the sums form on the same rows. */
static void test_split(void)
{
    double a[3] = {3, 0, 0}, b[3];
    dora_rowsums s;
    dora_rowstat st;
    int side;
    /* pure rotation by u orthogonal to a: passive = sqrt(9 + 16) - 3 = 2, active 0 */
    b[0] = 3, b[1] = 4, b[2] = 0;
    fast_sums(a, DORA_DT_F64, b, DORA_DT_F64, 3, &s);
    CHECK(dora_row_finish(&s, &st, &side) == 0);
    CHECK_MSG(unit_close(st.passive, 2.0, 1e-15, 0) && fabs(st.active) < 1e-15,
              "rotation: passive %.17g active %.17g", st.passive, st.active);
    /* pure scaling: passive 0, active = |b| - |a| */
    b[0] = 1.5, b[1] = 0;
    fast_sums(a, DORA_DT_F64, b, DORA_DT_F64, 3, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(st.passive == 0 && unit_close(st.active, -1.5, 1e-15, 0));
    /* rotation and shortening: b = (0, 4, 0), |b| - |a| = 1 = passive 2 + active -1 */
    b[0] = 0, b[1] = 4;
    fast_sums(a, DORA_DT_F64, b, DORA_DT_F64, 3, &s);
    dora_row_finish(&s, &st, &side);
    CHECK_MSG(unit_close(st.passive, 2.0, 1e-15, 0) && unit_close(st.active, -1.0, 1e-15, 0),
              "passive %.17g active %.17g", st.passive, st.active);
    /* zero rows: a base row of zero is all tangential, a zero checkpoint row all radial */
    double z[3] = {0, 0, 0};
    fast_sums(z, DORA_DT_F64, b, DORA_DT_F64, 3, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(st.passive == 4.0 && st.active == 0.0);
    fast_sums(a, DORA_DT_F64, z, DORA_DT_F64, 3, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(st.passive == 0.0 && st.active == -3.0);
    fast_sums(z, DORA_DT_F64, z, DORA_DT_F64, 3, &s);
    dora_row_finish(&s, &st, &side);
    CHECK(st.passive == 0.0 && st.active == 0.0);
    /* the angle form gives the sums form's values, for rows turned up to past 90 degrees */
    for (int k = 0; k < 200; k++) {
        double x[16], y[16];
        for (int i = 0; i < 16; i++) {
            x[i] = uniform();
            y[i] = (1.0 - k / 100.0) * x[i] + 0.3 * uniform();
        }
        dora_rowstat ref, ang;
        fast_sums(x, DORA_DT_F64, y, DORA_DT_F64, 16, &s);
        CHECK(dora_row_finish(&s, &ref, &side) == 0);
        ang = ref;
        dora_row_split_angle(&ang);
        CHECK_MSG(unit_close(ang.passive, ref.passive, 1e-12, 1e-15 * ref.m0) &&
                      unit_close(ang.active, ref.active, 1e-10, 1e-14 * ref.m0),
                  "k=%d angle form passive %.17g active %.17g, sums form %.17g %.17g", k,
                  ang.passive, ang.active, ref.passive, ref.active);
    }
}

/* The dispatching entry point gives the same sums as the best clone. */
/* Element decoders for the conversion test, by arithmetic (not bit moves). */
static double ref_half(uint16_t h, int ebits, int mbits)
{
    int bias = (1 << (ebits - 1)) - 1, sign = h >> 15;
    int exp = (h >> mbits) & ((1 << ebits) - 1), man = h & ((1 << mbits) - 1);
    double v = exp ? ldexp((double)((1 << mbits) + man), exp - bias - mbits)
                   : ldexp((double)man, 1 - bias - mbits);
    return sign ? -v : v;
}

/* dora_row_to_f64 of this instruction set: every element bit for bit, the
 * sum of squares against a long double one, over random finite bit patterns
 * (subnormals included) and lengths around the vector steps; unaligned. */
static void test_convert(void)
{
    static const dora_dtype types[] = {DORA_DT_BF16, DORA_DT_F16, DORA_DT_F32, DORA_DT_F64};
    static const size_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 4099};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const dora_dtype t = types[ti];
            const size_t n = lens[li], sz = dora_dtype_size(t);
            unsigned char *p = malloc(n * sz + 1);
            double *ref = malloc((n + 1) * sizeof *ref), *out = malloc((n + 1) * sizeof *out);
            long double ss = 0;
            for (size_t i = 0; i < n; i++) {
                uint64_t bits = rng;
                uniform();
                if (t == DORA_DT_BF16 || t == DORA_DT_F16) {
                    uint16_t h = (uint16_t)bits;
                    int ebits = t == DORA_DT_BF16 ? 8 : 5, mbits = t == DORA_DT_BF16 ? 7 : 10;
                    if (((h >> mbits) & ((1 << ebits) - 1)) == (1 << ebits) - 1)
                        h &= (uint16_t)~(1u << mbits); /* not Inf/NaN */
                    memcpy(p + 1 + 2 * i, &h, 2);
                    ref[i] = ref_half(h, ebits, mbits);
                } else if (t == DORA_DT_F32) {
                    float f = (float)(uniform() * ldexp(1.0, (int)(bits % 60) - 30));
                    memcpy(p + 1 + 4 * i, &f, 4);
                    ref[i] = f;
                } else {
                    ref[i] = uniform() * ldexp(1.0, (int)(bits % 200) - 100);
                    memcpy(p + 1 + 8 * i, &ref[i], 8);
                }
                ss += (long double)ref[i] * ref[i];
            }
            double sumsq;
            if (dora_row_to_f64_isa(cur_isa, p + 1, t, n, out, &sumsq) != 0)
                abort();
            CHECK_MSG(n == 0 || memcmp(out, ref, n * sizeof *ref) == 0, "%s: %s n=%zu converts wrongly",
                      dora_isa_name(cur_isa), dora_dtype_name(t), n);
            CHECK_MSG(unit_close(sumsq, (double)ss, 1e-13, 0), "%s: %s n=%zu sum of squares %.17g vs %.17g",
                      dora_isa_name(cur_isa), dora_dtype_name(t), n, sumsq, (double)ss);
            free(p);
            free(ref);
            free(out);
        }
}

/* dora_lowrank of this instruction set against its naive twin: every type,
 * row counts around the 4-row groups, widths around the 8-lane steps and the
 * 256-column blocks, ranks around the 4-row blocks and 16-row groups of R;
 * unaligned rows. */
static void test_lowrank(void)
{
    static const dora_dtype types[] = {DORA_DT_BF16, DORA_DT_F16, DORA_DT_F32, DORA_DT_F64};
    static const size_t ns[] = {1, 3, 4, 5, 9};
    static const size_t colss[] = {0, 1, 7, 8, 9, 255, 256, 257, 600, 2051};
    static const size_t ks[] = {1, 3, 4, 5, 16, 17, 40};
    double worst = 0;
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t ci = 0; ci < sizeof colss / sizeof colss[0]; ci++)
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                    const dora_dtype t = types[ti];
                    const size_t n = ns[ni], cols = colss[ci], k = ks[ki];
                    const size_t ld = dora_lowrank_ld(cols), kp = dora_lowrank_rows(k);
                    double *v = malloc(n * cols * sizeof *v);
                    unsigned char *w = malloc(n * cols * 8 + 1);
                    double *R = calloc(kp * ld, sizeof *R);
                    double *p = malloc(n * k * sizeof *p), *pn = malloc(n * k * sizeof *pn);
                    double *saa = malloc(n * sizeof *saa), *saan = malloc(n * sizeof *saan);
                    double *scratch = malloc(dora_lowrank_scratch(k, cols) * sizeof *scratch);
                    for (size_t i = 0; i < n * cols; i++)
                        v[i] = 0.05 * uniform();
                    for (size_t q = 0; q < k; q++)
                        for (size_t j = 0; j < cols; j++)
                            R[q * ld + j] = 0.01 * uniform();
                    store(w + 1, t, v, n * cols);
                    if (dora_lowrank_isa(cur_isa, w + 1, t, n, cols, R, k, p, saa, scratch) != 0)
                        abort();
                    dora_lowrank_naive(w + 1, t, n, cols, R, k, pn, saan);
                    int ok = 1;
                    for (size_t i = 0; i < n; i++) {
                        ok &= unit_close(saa[i], saan[i], 1e-13, 0);
                        for (size_t q = 0; q < k; q++) {
                            /* scale: the sum of |products|, bounding the rounding */
                            double mag = 0;
                            for (size_t j = 0; j < cols; j++) {
                                double x = dora_elem_to_f64(w + 1 + (i * cols + j) * dora_dtype_size(t), t);
                                mag += fabs(x * R[q * ld + j]);
                            }
                            double e = fabs(p[i * k + q] - pn[i * k + q]) / (mag + 1e-300);
                            if (e > worst)
                                worst = e;
                            ok &= e <= 1e-14;
                        }
                    }
                    CHECK_MSG(ok, "%s: lowrank %s n=%zu cols=%zu k=%zu differs from the naive twin",
                              dora_isa_name(cur_isa), dora_dtype_name(t), n, cols, k);
                    free(v);
                    free(w);
                    free(R);
                    free(p);
                    free(pn);
                    free(saa);
                    free(saan);
                    free(scratch);
                }
    printf("lowrank (%s) vs naive: worst error %.3g of the sum of |products|\n", dora_isa_name(cur_isa),
           worst);
}

static void test_dispatch(void)
{
    double a[37], b[37];
    for (int i = 0; i < 37; i++) {
        a[i] = uniform();
        b[i] = uniform();
    }
    dora_rowsums s1, s2;
    dora_row_sums(a, DORA_DT_F64, b, DORA_DT_F64, 37, &s1);
    int isa = DORA_ISA_COUNT - 1;
    while (dora_row_sums_isa((dora_isa)isa, a, DORA_DT_F64, b, DORA_DT_F64, 37, &s2) != 0)
        isa--;
    CHECK(memcmp(&s1, &s2, sizeof s1) == 0);
}

int main(void)
{
    int tested = 0;
    for (int isa = 0; isa < DORA_ISA_COUNT; isa++) {
        dora_rowsums probe;
        if (dora_row_sums_isa((dora_isa)isa, NULL, DORA_DT_F32, NULL, DORA_DT_F32, 0, &probe) != 0) {
            printf("kernel: %s not available on this CPU, not tested\n", dora_isa_name((dora_isa)isa));
            continue;
        }
        cur_isa = (dora_isa)isa;
        tested++;
        test_conversions();
        test_random_rows();
        test_tiny_update();
        test_edges();
        test_split();
        test_convert();
        test_lowrank();
    }
    CHECK(tested >= 1);
    test_dispatch();
    return unit_summary("test_kernel");
}
