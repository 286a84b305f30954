/* kernel_x86.h - the x86-64-v3 (AVX2, FMA, F16C) and x86-64-v4 (AVX-512)
 * instances of the row-sum kernel and of the row conversion, written with
 * intrinsics. Included by kernel.c only, after its helpers.
 *
 * Why intrinsics and not the vector extensions of the baseline: GCC 12 lowers
 * the widening conversions of the generic code (u16 -> u32 -> f32 -> f64 over
 * 8 lanes) into 128-bit pieces with extracts and inserts, and the loop was
 * bound by those shuffles (measurements: docs/performance.md). Here each 16
 * elements are one
 * 256-bit load, one widening and two f32 -> f64 conversions per side, then
 * four FMAs per 8 lanes, and every cache line of both rows is prefetched
 * PREFETCH_AHEAD elements ahead: hardware prefetchers stop at 4 KiB pages, and the
 * page-cache pages of a mapping are not contiguous in physical memory. */
#ifndef DORA_KERNEL_X86_H
#define DORA_KERNEL_X86_H

#include <immintrin.h>

/* Elements ahead of the current one: 2 KiB of bf16, far enough to cover the
 * latency of a line from DRAM at the rate the loop consumes them (the choice
 * is measured in docs/performance.md). */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 1024
#endif

#define V3 __attribute__((target("arch=x86-64-v3")))
#define V4 __attribute__((target("arch=x86-64-v4")))

/* Issue one prefetch for every 64-byte line of BYTES bytes at P + AHEAD.
 * Computed as integers: a prefetch never faults, but C pointer arithmetic
 * past the object would be undefined. BYTES is a constant at every call. */
ALWAYS_INLINE void prefetch_lines(const unsigned char *p, size_t ahead, size_t bytes)
{
    for (size_t k = 0; k < bytes; k += 64)
        _mm_prefetch((const char *)((uintptr_t)p + ahead + k), _MM_HINT_T0);
}

/* ---------------------------------------------------------------- AVX-512 */

/* 16 elements of type T at P (unaligned) as float64, lanes 0-7 and 8-15. */
V4 ALWAYS_INLINE void v4_load16(const unsigned char *p, dora_dtype t, __m512d *lo, __m512d *hi)
{
    switch (t) {
    case DORA_DT_BF16: {
        /* bf16 is the top half of an f32: widen to 32 bits and shift */
        __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
        *lo = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_castsi512_si256(u)));
        *hi = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64(u, 1)));
        return;
    }
    case DORA_DT_F16: {
        __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); /* exact */
        *lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
        *hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
        return;
    }
    case DORA_DT_F32:
        *lo = _mm512_cvtps_pd(_mm256_loadu_ps((const float *)p));
        *hi = _mm512_cvtps_pd(_mm256_loadu_ps((const float *)(p + 32)));
        return;
    default: /* F64 */
        *lo = _mm512_loadu_pd(p);
        *hi = _mm512_loadu_pd(p + 64);
        return;
    }
}

V4 ALWAYS_INLINE void v4_step16(const unsigned char *pa, dora_dtype ta, const unsigned char *pb,
                                dora_dtype tb, __m512d acc[8])
{
    __m512d x0, x1, y0, y1;
    v4_load16(pa, ta, &x0, &x1);
    v4_load16(pb, tb, &y0, &y1);
    __m512d d0 = _mm512_sub_pd(y0, x0), d1 = _mm512_sub_pd(y1, x1);
    acc[0] = _mm512_fmadd_pd(x0, x0, acc[0]);
    acc[1] = _mm512_fmadd_pd(y0, y0, acc[1]);
    acc[2] = _mm512_fmadd_pd(x0, d0, acc[2]);
    acc[3] = _mm512_fmadd_pd(d0, d0, acc[3]);
    acc[4] = _mm512_fmadd_pd(x1, x1, acc[4]);
    acc[5] = _mm512_fmadd_pd(y1, y1, acc[5]);
    acc[6] = _mm512_fmadd_pd(x1, d1, acc[6]);
    acc[7] = _mm512_fmadd_pd(d1, d1, acc[7]);
}

V4 ALWAYS_INLINE void v4_sums_tt(const unsigned char *pa, dora_dtype ta, const unsigned char *pb,
                                 dora_dtype tb, size_t n, dora_rowsums *out)
{
    const size_t sa = dora_dtype_size(ta), sb = dora_dtype_size(tb);
    __m512d acc[8];
    for (int k = 0; k < 8; k++)
        acc[k] = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_lines(pa + i * sa, PREFETCH_AHEAD * sa, 32 * sa);
        prefetch_lines(pb + i * sb, PREFETCH_AHEAD * sb, 32 * sb);
        v4_step16(pa + i * sa, ta, pb + i * sb, tb, acc);
        v4_step16(pa + (i + 16) * sa, ta, pb + (i + 16) * sb, tb, acc);
    }
    if (i + 16 <= n) {
        v4_step16(pa + i * sa, ta, pb + i * sb, tb, acc);
        i += 16;
    }
    dora_rowsums s = {_mm512_reduce_add_pd(_mm512_add_pd(acc[0], acc[4])),
                      _mm512_reduce_add_pd(_mm512_add_pd(acc[1], acc[5])),
                      _mm512_reduce_add_pd(_mm512_add_pd(acc[2], acc[6])),
                      _mm512_reduce_add_pd(_mm512_add_pd(acc[3], acc[7]))};
    sums_tail(pa, ta, pb, tb, i, n, &s);
    *out = s;
}

/* A row as float64 and its sum of squares. Four accumulators: with two, the
 * FMA latency bound the loop (the low-rank kernel's tiles spent a fifth of
 * their time here). PF (a constant at each call): prefetch the row ahead, for
 * whole rows; the low-rank kernel's tiles are a column block of a row, whose
 * next block lr_prefetch has asked for already (both changes: 32.5 -> 34.2 G
 * FMA/s for 2048 x 2048 at k = 16 on one core, docs/performance.md). */
V4 ALWAYS_INLINE double v4_convert_pf(const unsigned char *p, dora_dtype t, size_t n, double *out,
                                      int pf)
{
    const size_t sz = dora_dtype_size(t);
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512d x0, x1, x2, x3;
        if (pf)
            prefetch_lines(p + i * sz, PREFETCH_AHEAD * sz, 32 * sz);
        v4_load16(p + i * sz, t, &x0, &x1);
        v4_load16(p + (i + 16) * sz, t, &x2, &x3);
        _mm512_storeu_pd(out + i, x0);
        _mm512_storeu_pd(out + i + 8, x1);
        _mm512_storeu_pd(out + i + 16, x2);
        _mm512_storeu_pd(out + i + 24, x3);
        a0 = _mm512_fmadd_pd(x0, x0, a0);
        a1 = _mm512_fmadd_pd(x1, x1, a1);
        a2 = _mm512_fmadd_pd(x2, x2, a2);
        a3 = _mm512_fmadd_pd(x3, x3, a3);
    }
    if (i + 16 <= n) {
        __m512d x0, x1;
        v4_load16(p + i * sz, t, &x0, &x1);
        _mm512_storeu_pd(out + i, x0);
        _mm512_storeu_pd(out + i + 8, x1);
        a0 = _mm512_fmadd_pd(x0, x0, a0);
        a1 = _mm512_fmadd_pd(x1, x1, a1);
        i += 16;
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a2), _mm512_add_pd(a1, a3)));
    for (; i < n; i++) {
        out[i] = dora_elem_to_f64(p + i * sz, t);
        s += out[i] * out[i];
    }
    return s;
}

V4 ALWAYS_INLINE double v4_convert_t(const unsigned char *p, dora_dtype t, size_t n, double *out)
{
    return v4_convert_pf(p, t, n, out, 1);
}

V4 ALWAYS_INLINE double v4_tile_t(const unsigned char *p, dora_dtype t, size_t n, double *out)
{
    return v4_convert_pf(p, t, n, out, 0);
}

/* The 4 x 4 block of low-rank products over cb columns (see DEFINE_LOWRANK in
 * kernel.c): 16 accumulators, then per 8 columns 4 tile loads (L1), 4 loads
 * of R and 16 FMAs. */
V4 static inline void v4_micro(const double *tile, const double *R, size_t ld, size_t cb,
                               double *acc, size_t as)
{
    __m512d c[4][4];
    #pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        #pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
            c[r][q] = _mm512_loadu_pd(acc + r * as + q * 8);
    for (size_t j = 0; j < cb; j += 8) {
        __m512d a[4];
        #pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_load_pd(tile + r * LR_CB + j);
        #pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            __m512d b = _mm512_loadu_pd(R + q * ld + j);
            #pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                c[r][q] = _mm512_fmadd_pd(a[r], b, c[r][q]);
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        #pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
            _mm512_storeu_pd(acc + r * as + q * 8, c[r][q]);
}

/* ------------------------------------------------------------------- AVX2 */

/* 8 elements of type T at P (unaligned) as float64, lanes 0-3 and 4-7. */
V3 ALWAYS_INLINE void v3_load8(const unsigned char *p, dora_dtype t, __m256d *lo, __m256d *hi)
{
    __m256 f;
    switch (t) {
    case DORA_DT_BF16:
        f = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
        break;
    case DORA_DT_F16:
        f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); /* exact */
        break;
    case DORA_DT_F32:
        *lo = _mm256_cvtps_pd(_mm_loadu_ps((const float *)p));
        *hi = _mm256_cvtps_pd(_mm_loadu_ps((const float *)(p + 16)));
        return;
    default: /* F64 */
        *lo = _mm256_loadu_pd((const double *)p);
        *hi = _mm256_loadu_pd((const double *)(p + 32));
        return;
    }
    *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
}

/* Sixteen ymm registers: 8 accumulators, 2 + 2 inputs, 2 differences. */
V3 ALWAYS_INLINE void v3_step8(const unsigned char *pa, dora_dtype ta, const unsigned char *pb,
                               dora_dtype tb, __m256d acc[8])
{
    __m256d x0, x1, y0, y1;
    v3_load8(pa, ta, &x0, &x1);
    v3_load8(pb, tb, &y0, &y1);
    __m256d d0 = _mm256_sub_pd(y0, x0), d1 = _mm256_sub_pd(y1, x1);
    acc[0] = _mm256_fmadd_pd(x0, x0, acc[0]);
    acc[1] = _mm256_fmadd_pd(y0, y0, acc[1]);
    acc[2] = _mm256_fmadd_pd(x0, d0, acc[2]);
    acc[3] = _mm256_fmadd_pd(d0, d0, acc[3]);
    acc[4] = _mm256_fmadd_pd(x1, x1, acc[4]);
    acc[5] = _mm256_fmadd_pd(y1, y1, acc[5]);
    acc[6] = _mm256_fmadd_pd(x1, d1, acc[6]);
    acc[7] = _mm256_fmadd_pd(d1, d1, acc[7]);
}

V3 ALWAYS_INLINE double v3_hsum(__m256d a, __m256d b)
{
    __m256d v = _mm256_add_pd(a, b);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

V3 ALWAYS_INLINE void v3_sums_tt(const unsigned char *pa, dora_dtype ta, const unsigned char *pb,
                                 dora_dtype tb, size_t n, dora_rowsums *out)
{
    const size_t sa = dora_dtype_size(ta), sb = dora_dtype_size(tb);
    __m256d acc[8];
    for (int k = 0; k < 8; k++)
        acc[k] = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_lines(pa + i * sa, PREFETCH_AHEAD * sa, 32 * sa);
        prefetch_lines(pb + i * sb, PREFETCH_AHEAD * sb, 32 * sb);
        for (size_t k = 0; k < 32; k += 8)
            v3_step8(pa + (i + k) * sa, ta, pb + (i + k) * sb, tb, acc);
    }
    for (; i + 8 <= n; i += 8)
        v3_step8(pa + i * sa, ta, pb + i * sb, tb, acc);
    dora_rowsums s = {v3_hsum(acc[0], acc[4]), v3_hsum(acc[1], acc[5]), v3_hsum(acc[2], acc[6]),
                      v3_hsum(acc[3], acc[7])};
    sums_tail(pa, ta, pb, tb, i, n, &s);
    *out = s;
}

V3 ALWAYS_INLINE double v3_convert_t(const unsigned char *p, dora_dtype t, size_t n, double *out)
{
    const size_t sz = dora_dtype_size(t);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d x0, x1;
        if ((i & 31) == 0)
            prefetch_lines(p + i * sz, PREFETCH_AHEAD * sz, 32 * sz);
        v3_load8(p + i * sz, t, &x0, &x1);
        _mm256_storeu_pd(out + i, x0);
        _mm256_storeu_pd(out + i + 4, x1);
        a0 = _mm256_fmadd_pd(x0, x0, a0);
        a1 = _mm256_fmadd_pd(x1, x1, a1);
    }
    double s = v3_hsum(a0, a1);
    for (; i < n; i++) {
        out[i] = dora_elem_to_f64(p + i * sz, t);
        s += out[i] * out[i];
    }
    return s;
}

/* The 4 x 4 block in two halves of 4 x 2 (16 ymm registers: 8 accumulators,
 * 2 of R, the tile from memory operands); lanes 4-7 of acc stay 0. */
V3 static inline void v3_micro(const double *tile, const double *R, size_t ld, size_t cb,
                               double *acc, size_t as)
{
    for (int q0 = 0; q0 < 4; q0 += 2) {
        __m256d c[4][2];
        #pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            #pragma GCC unroll 4
            for (int q = 0; q < 2; q++)
                c[r][q] = _mm256_loadu_pd(acc + r * as + (q0 + q) * 8);
        for (size_t j = 0; j < cb; j += 4) {
            __m256d b0 = _mm256_loadu_pd(R + q0 * ld + j), b1 = _mm256_loadu_pd(R + (q0 + 1) * ld + j);
            #pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m256d a = _mm256_load_pd(tile + r * LR_CB + j);
                c[r][0] = _mm256_fmadd_pd(a, b0, c[r][0]);
                c[r][1] = _mm256_fmadd_pd(a, b1, c[r][1]);
            }
        }
        #pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            #pragma GCC unroll 4
            for (int q = 0; q < 2; q++)
                _mm256_storeu_pd(acc + r * as + (q0 + q) * 8, c[r][q]);
    }
}

#endif
