/* kernel.c - row sums for dM and dD; see include/dora/kernel.h. */
#include "dora/kernel.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the readers map little-endian files directly and need a little-endian host"
#endif

/* The helpers below take and return vectors but are always inlined: no call
 * ABI is involved, so GCC's note about it does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* Vector types (GNU C vector extensions): 8 lanes, which each target clone
 * maps onto its own registers (one zmm, two ymm or four xmm). */
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
#ifdef __FLT16_MAX__ /* the compiler has _Float16 (ISO TS 18661-3) */
__extension__ typedef _Float16 v8h __attribute__((vector_size(16)));
#endif

#ifndef PREFETCH
#define PREFETCH 1024
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Load 8 elements of type T at P (unaligned) as doubles. T is a constant at
 * every call site, so the switch folds away. */
ALWAYS_INLINE v8d load8(const unsigned char *p, dora_dtype t)
{
    switch (t) {
    case DORA_DT_BF16: {
        v8u16 h;
        memcpy(&h, p, sizeof h);
        v8u32 u = __builtin_convertvector(h, v8u32) << 16; /* bf16 = top half of an f32 */
        return __builtin_convertvector((v8f)u, v8d);
    }
    case DORA_DT_F16: {
#ifdef __FLT16_MAX__
        v8h h;
        memcpy(&h, p, sizeof h);
        return __builtin_convertvector(__builtin_convertvector(h, v8f), v8d);
#else /* element by element (clang on x86 without _Float16) */
        v8d d;
        for (int j = 0; j < 8; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            d[j] = dora_f16_to_f32(h);
        }
        return d;
#endif
    }
    case DORA_DT_F32: {
        v8f f;
        memcpy(&f, p, sizeof f);
        return __builtin_convertvector(f, v8d);
    }
    default: {
        v8d d;
        memcpy(&d, p, sizeof d);
        return d;
    }
    }
}

ALWAYS_INLINE double hsum(const v8d *p)
{
    v8d v = *p;
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* Elements [i, n) of a row pair, one by one, added to *s (the vector loops'
 * remainder). */
ALWAYS_INLINE void sums_tail(const unsigned char *pa, dora_dtype ta, const unsigned char *pb,
                             dora_dtype tb, size_t i, size_t n, dora_rowsums *s)
{
    const size_t sa = dora_dtype_size(ta), sb = dora_dtype_size(tb);
    for (; i < n; i++) {
        double x = dora_elem_to_f64(pa + i * sa, ta), y = dora_elem_to_f64(pb + i * sb, tb);
        double d = y - x;
        s->saa += x * x;
        s->sbb += y * y;
        s->sad += x * d;
        s->sdd += d * d;
    }
}

/* The fused loop for one pair of types: convert and accumulate in one pass,
 * two sets of accumulators to keep the FMA units busy. */
ALWAYS_INLINE void sums_tt(const unsigned char *pa, dora_dtype ta, const unsigned char *pb,
                           dora_dtype tb, size_t n, dora_rowsums *out)
{
    const size_t sa = dora_dtype_size(ta), sb = dora_dtype_size(tb);
    v8d aa0 = {0}, bb0 = {0}, ad0 = {0}, dd0 = {0};
    v8d aa1 = {0}, bb1 = {0}, ad1 = {0}, dd1 = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        /* Rows are contiguous in the mapping, but page-cache pages are not
         * physically, and hardware prefetchers stop at 4 KiB boundaries:
         * prefetch PREFETCH bytes ahead (into the next row too). Computed as
         * integers: a prefetch never faults, but C pointer arithmetic past the
         * object would be undefined. */
        __builtin_prefetch((const void *)((uintptr_t)(pa + i * sa) + PREFETCH));
        __builtin_prefetch((const void *)((uintptr_t)(pb + i * sb) + PREFETCH));
        v8d x0 = load8(pa + i * sa, ta), y0 = load8(pb + i * sb, tb);
        v8d x1 = load8(pa + (i + 8) * sa, ta), y1 = load8(pb + (i + 8) * sb, tb);
        v8d d0 = y0 - x0, d1 = y1 - x1;
        aa0 += x0 * x0;
        bb0 += y0 * y0;
        ad0 += x0 * d0;
        dd0 += d0 * d0;
        aa1 += x1 * x1;
        bb1 += y1 * y1;
        ad1 += x1 * d1;
        dd1 += d1 * d1;
    }
    for (; i + 8 <= n; i += 8) {
        v8d x0 = load8(pa + i * sa, ta), y0 = load8(pb + i * sb, tb);
        v8d d0 = y0 - x0;
        aa0 += x0 * x0;
        bb0 += y0 * y0;
        ad0 += x0 * d0;
        dd0 += d0 * d0;
    }
    aa0 += aa1;
    bb0 += bb1;
    ad0 += ad1;
    dd0 += dd1;
    dora_rowsums s = {hsum(&aa0), hsum(&bb0), hsum(&ad0), hsum(&dd0)};
    sums_tail(pa, ta, pb, tb, i, n, &s);
    *out = s;
}

#define PAIR(A, B) ((int)(A) * DORA_DT_COUNT + (int)(B))
#define CASE(F, A, B)                                                                              \
    case PAIR(A, B):                                                                               \
        F(pa, A, pb, B, n, out);                                                                   \
        return;
#define ROW(F, A)                                                                                  \
    CASE(F, A, DORA_DT_BF16) CASE(F, A, DORA_DT_F16) CASE(F, A, DORA_DT_F32) CASE(F, A, DORA_DT_F64)

/* One instance of the type dispatch per instruction set: the reduction is
 * bound by arithmetic unless it is vectorised wide. Each instance inlines
 * sums_tt for all 16 type pairs, compiled for its own target. */
#define DEFINE_SUMS(NAME, TARGET, BODY)                                                            \
    TARGET static void NAME(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,  \
                            dora_rowsums *out)                                                     \
    {                                                                                              \
        const unsigned char *pa = a, *pb = b;                                                      \
        switch (PAIR(ta, tb)) {                                                                    \
            ROW(BODY, DORA_DT_BF16)                                                                \
            ROW(BODY, DORA_DT_F16)                                                                 \
            ROW(BODY, DORA_DT_F32)                                                                 \
            ROW(BODY, DORA_DT_F64)                                                                 \
        default: /* callers pass analysable types only; make misuse loud */                        \
            out->saa = out->sbb = out->sad = out->sdd = NAN;                                       \
            return;                                                                                \
        }                                                                                          \
    }

/* Convert a row to float64 and return its sum of squares (for the LoRA path,
 * which multiplies the converted base rows with the factors). */
ALWAYS_INLINE double convert_t(const unsigned char *p, dora_dtype t, size_t n, double *out)
{
    const size_t sz = dora_dtype_size(t);
    v8d acc = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8d x = load8(p + i * sz, t);
        memcpy(out + i, &x, sizeof x);
        acc += x * x;
    }
    double s = hsum(&acc);
    for (; i < n; i++) {
        out[i] = dora_elem_to_f64(p + i * sz, t);
        s += out[i] * out[i];
    }
    return s;
}

#define DEFINE_CONVERT(NAME, TARGET, BODY)                                                         \
    TARGET static double NAME(const void *p, dora_dtype t, size_t n, double *out)                  \
    {                                                                                              \
        switch (t) {                                                                               \
        case DORA_DT_BF16:                                                                         \
            return BODY(p, DORA_DT_BF16, n, out);                                                  \
        case DORA_DT_F16:                                                                          \
            return BODY(p, DORA_DT_F16, n, out);                                                   \
        case DORA_DT_F32:                                                                          \
            return BODY(p, DORA_DT_F32, n, out);                                                   \
        case DORA_DT_F64:                                                                          \
            return BODY(p, DORA_DT_F64, n, out);                                                   \
        default:                                                                                   \
            for (size_t i = 0; i < n; i++)                                                         \
                out[i] = NAN;                                                                      \
            return NAN;                                                                            \
        }                                                                                          \
    }

DEFINE_SUMS(sums_baseline, , sums_tt)
DEFINE_CONVERT(convert_baseline, , convert_t)

/* Low-rank products (see kernel.h). Rows go in blocks of LR_ROWS, and R's
 * rows in groups of LR_QG; for each block of cb columns, the group's block of
 * R (sized to stay in L1) serves every row of the block, 4 rows at a time
 * (LR_MR) converted into an L1 tile. Each 4 x 4 block of products (LR_MR rows
 * x LR_NR rows of R) is held in 8-lane partial sums in acc,
 * [LR_ROWS][LR_QG][8], that the column blocks add to; the lanes are summed
 * at the end of the group. Why this order: each block of R is read from L1 by
 * all the rows of the block, where reading R's whole width for every 4 rows
 * would stream it from L2 each time. */
#define LR_MR 4
#define LR_NR 4
#define LR_CB 256    /* widest column block (the tile is LR_MR x LR_CB) */
#ifndef LR_ROWS
#define LR_ROWS 16 /* rows per block: acc is LR_ROWS x LR_QG x 8 doubles */
#endif
/* R's rows per pass over a block of rows: more would shrink the column blocks
 * (R's block must stay in L1) until the partial sums' loads and stores
 * dominate (measured: 10 GFLOP/s at 256 rows, 6 at 640, against 47 at 16);
 * fewer would convert the rows more often. */
#define LR_QG 16
#ifndef LR_L1
#define LR_L1 32768 /* bytes of R's block, of a 48 KiB L1 */
#endif

size_t dora_lowrank_rows(size_t k)
{
    return k ? (k + LR_NR - 1) / LR_NR * LR_NR : LR_NR;
}

/* Rows of R padded to whole 8-lane steps, plus one step: with a stride that
 * is a multiple of 4 KiB (cols 2048, 4096...) the rows of an R block map to
 * the same L1 sets and evict each other. */
size_t dora_lowrank_ld(size_t cols)
{
    return ((cols + 7) & ~(size_t)7) + 8;
}

size_t dora_lowrank_scratch(size_t k, size_t cols)
{
    size_t kp = dora_lowrank_rows(k), acc = LR_ROWS * (kp < LR_QG ? kp : LR_QG) * 8;
    size_t rows = LR_ROWS * (cols ? cols : 1); /* the baseline's float64 rows */
    return acc > rows ? acc : rows;
}

/* Column block width for kp rows of R: R's block fits LR_L1, a multiple of 8. */
static size_t lr_block(size_t kp)
{
    size_t cb = LR_L1 / (kp * sizeof(double)) & ~(size_t)7;
    return cb < 8 ? 8 : cb > LR_CB ? LR_CB : cb;
}

#ifndef LR_PREFETCH_LOCALITY
#define LR_PREFETCH_LOCALITY 3
#endif

/* Ask for LEN elements of row R at column J0 while the tile before it is
 * worked on: the rows are read in pieces 4 KiB or more apart, which the
 * hardware prefetchers do not follow. Addresses are integers: a prefetch
 * never faults, even past the rows. */
static inline void lr_prefetch(const unsigned char *w, size_t sz, size_t cols, size_t r, size_t j0,
                               size_t len)
{
    uintptr_t a = (uintptr_t)w + (r * cols + j0) * sz;
    for (size_t o = 0; o < len * sz; o += 64)
        __builtin_prefetch((const void *)(a + o), 0, LR_PREFETCH_LOCALITY);
}

#define DEFINE_LOWRANK(NAME, TARGET, CONVERT, MICRO)                                               \
    TARGET static void NAME(const void *w, dora_dtype t, size_t n, size_t cols, const double *R,   \
                            size_t k, double *p, double *saa, double *acc)                         \
    {                                                                                              \
        const unsigned char *wb = w;                                                               \
        const size_t sz = dora_dtype_size(t), ld = dora_lowrank_ld(cols);                          \
        const size_t cp = (cols + 7) & ~(size_t)7, kp = dora_lowrank_rows(k);                      \
        _Alignas(64) double tile[LR_MR * LR_CB];                                                   \
        double ss[LR_ROWS];                                                                        \
        for (size_t b0 = 0; b0 < n; b0 += LR_ROWS) {                                               \
            const size_t nr = n - b0 < LR_ROWS ? n - b0 : LR_ROWS;                                 \
            memset(ss, 0, sizeof ss);                                                              \
            for (size_t g0 = 0; g0 < kp; g0 += LR_QG) { /* a group of R's rows */                  \
                const size_t kg = kp - g0 < LR_QG ? kp - g0 : LR_QG, as = kg * 8;                  \
                const size_t cbw = lr_block(kg);                                                   \
                const int last = g0 + kg == kp;                                                    \
                memset(acc, 0, (nr + LR_MR - 1) / LR_MR * LR_MR * as * sizeof *acc);               \
                /* in the last group, the next block of rows (contiguous) into L2, spread          \
                 * over the tiles */                                                               \
                const size_t nn = n - b0 - nr < LR_ROWS ? n - b0 - nr : LR_ROWS;                   \
                const uintptr_t next = (uintptr_t)(wb + (b0 + nr) * cols * sz);                    \
                const size_t nbytes = last ? nn * cols * sz : 0;                                   \
                const size_t tiles = (nr + LR_MR - 1) / LR_MR * ((cp + cbw - 1) / cbw);            \
                const size_t share = tiles ? (nbytes / tiles + 63) & ~(size_t)63 : 0;              \
                size_t ahead = 0;                                                                  \
                for (size_t j0 = 0; j0 < cp; j0 += cbw) {                                          \
                    const size_t cb = cp - j0 < cbw ? cp - j0 : cbw; /* a multiple of 8 */         \
                    const size_t len = j0 >= cols ? 0 : cols - j0 < cb ? cols - j0 : cb;           \
                    for (size_t i0 = 0; i0 < nr; i0 += LR_MR) {                                    \
                        for (size_t r = 0; r < LR_MR; r++) {                                       \
                            double *dst = tile + r * LR_CB;                                        \
                            const size_t m = i0 + r < nr ? len : 0;                                \
                            double s2 = 0;                                                         \
                            if (m)                                                                 \
                                s2 = CONVERT(wb + ((b0 + i0 + r) * cols + j0) * sz, t, m, dst);    \
                            if (g0 == 0)                                                           \
                                ss[i0 + r] += s2;                                                  \
                            if (m < cb)                                                            \
                                memset(dst + m, 0, (cb - m) * sizeof *dst);                        \
                        }                                                                          \
                        /* the next tile: 4 rows on, or the next block of the first rows */        \
                        for (size_t r = 0; r < LR_MR; r++) {                                       \
                            if (i0 + LR_MR + r < nr)                                               \
                                lr_prefetch(wb, sz, cols, b0 + i0 + LR_MR + r, j0, len);           \
                            else if (j0 + cb < cols && r < nr)                                     \
                                lr_prefetch(wb, sz, cols, b0 + r, j0 + cb,                         \
                                            cols - j0 - cb < cb ? cols - j0 - cb : cb);            \
                        }                                                                          \
                        for (size_t e = ahead + share; ahead < e && ahead < nbytes; ahead += 64)   \
                            __builtin_prefetch((const void *)(next + ahead), 0, 2);                \
                        for (size_t q0 = 0; q0 < kg; q0 += LR_NR)                                  \
                            MICRO(tile, R + (g0 + q0) * ld + j0, ld, cb, acc + i0 * as + q0 * 8,   \
                                  as);                                                             \
                    }                                                                              \
                }                                                                                  \
                for (size_t r = 0; r < nr; r++)                                                    \
                    for (size_t q = 0; q < kg && g0 + q < k; q++) {                                \
                        const double *c = acc + r * as + q * 8;                                    \
                        p[(b0 + r) * k + g0 + q] = ((c[0] + c[4]) + (c[1] + c[5])) +               \
                                                   ((c[2] + c[6]) + (c[3] + c[7]));                \
                    }                                                                              \
            }                                                                                      \
            for (size_t r = 0; r < nr; r++)                                                        \
                saa[b0 + r] = ss[r];                                                               \
        }                                                                                          \
    }

/* Without AVX2 (other architectures, old x86): the rows as float64, LR_ROWS
 * at a time, and OpenBLAS's dgemm, which has kernels for far more CPUs than
 * this file (a plain C version of the blocked loop ran at 3.9 GFLOP/s here,
 * dgemm at ~30). */
static void lowrank_baseline(const void *w, dora_dtype t, size_t n, size_t cols, const double *R,
                             size_t k, double *p, double *saa, double *buf)
{
    const unsigned char *wb = w;
    const size_t sz = dora_dtype_size(t), ld = dora_lowrank_ld(cols);
    for (size_t b0 = 0; b0 < n; b0 += LR_ROWS) {
        const size_t nr = n - b0 < LR_ROWS ? n - b0 : LR_ROWS;
        for (size_t r = 0; r < nr; r++)
            saa[b0 + r] = convert_baseline(wb + (b0 + r) * cols * sz, t, cols, buf + r * cols);
        if (cols == 0) {
            memset(p + b0 * k, 0, nr * k * sizeof *p);
            continue;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)k, (int)cols, 1.0, buf,
                    (int)cols, R, (int)ld, 0.0, p + b0 * k, (int)k);
    }
}
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_ISA_CLONES 1
#include "analysis/kernel_x86.h"
DEFINE_SUMS(sums_x86_64_v3, V3, v3_sums_tt)
DEFINE_SUMS(sums_x86_64_v4, V4, v4_sums_tt)
DEFINE_CONVERT(convert_x86_64_v3, V3, v3_convert_t)
DEFINE_CONVERT(convert_x86_64_v4, V4, v4_convert_t)
DEFINE_CONVERT(tile_x86_64_v4, V4, v4_tile_t)
DEFINE_LOWRANK(lowrank_x86_64_v3, V3, convert_x86_64_v3, v3_micro)
DEFINE_LOWRANK(lowrank_x86_64_v4, V4, tile_x86_64_v4, v4_micro)
#endif

typedef void (*sums_fn)(const void *, dora_dtype, const void *, dora_dtype, size_t, dora_rowsums *);
typedef double (*convert_fn)(const void *, dora_dtype, size_t, double *);
typedef void (*lowrank_fn)(const void *, dora_dtype, size_t, size_t, const double *, size_t,
                           double *, double *, double *);

/* The kernels compiled for one instruction set. */
typedef struct isa_impl {
    sums_fn sums;
    convert_fn convert;
    lowrank_fn lowrank;
} isa_impl;

static const isa_impl impls[DORA_ISA_COUNT] = {
    [DORA_ISA_BASELINE] = {sums_baseline, convert_baseline, lowrank_baseline},
#ifdef HAVE_ISA_CLONES
    [DORA_ISA_X86_64_V3] = {sums_x86_64_v3, convert_x86_64_v3, lowrank_x86_64_v3},
    [DORA_ISA_X86_64_V4] = {sums_x86_64_v4, convert_x86_64_v4, lowrank_x86_64_v4},
#endif
};

/* The kernels of ISA, or NULL if this build or CPU lacks it. */
static const isa_impl *isa_get(dora_isa isa)
{
    if ((int)isa < 0 || isa >= DORA_ISA_COUNT || !impls[isa].sums)
        return NULL;
#ifdef HAVE_ISA_CLONES
    __builtin_cpu_init();
    if ((isa == DORA_ISA_X86_64_V4 && !__builtin_cpu_supports("x86-64-v4")) ||
        (isa == DORA_ISA_X86_64_V3 && !__builtin_cpu_supports("x86-64-v3")))
        return NULL;
#endif
    return &impls[isa];
}

static const isa_impl *best;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void choose_best(void)
{
    int isa = DORA_ISA_COUNT - 1;
    while (isa > 0 && !isa_get((dora_isa)isa))
        isa--;
    best = isa_get((dora_isa)isa);
}

double dora_row_to_f64(const void *p, dora_dtype t, size_t n, double *out)
{
    pthread_once(&best_once, choose_best);
    return best->convert(p, t, n, out);
}

void dora_row_sums(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                   dora_rowsums *out)
{
    pthread_once(&best_once, choose_best);
    best->sums(a, ta, b, tb, n, out);
}

void dora_lowrank(const void *w, dora_dtype t, size_t n, size_t cols, const double *R, size_t k,
                  double *p, double *saa, double *scratch)
{
    pthread_once(&best_once, choose_best);
    best->lowrank(w, t, n, cols, R, k, p, saa, scratch);
}

int dora_row_sums_isa(dora_isa isa, const void *a, dora_dtype ta, const void *b, dora_dtype tb,
                      size_t n, dora_rowsums *out)
{
    const isa_impl *im = isa_get(isa);
    if (!im)
        return -1;
    im->sums(a, ta, b, tb, n, out);
    return 0;
}

int dora_lowrank_isa(dora_isa isa, const void *w, dora_dtype t, size_t n, size_t cols,
                     const double *R, size_t k, double *p, double *saa, double *scratch)
{
    const isa_impl *im = isa_get(isa);
    if (!im)
        return -1;
    im->lowrank(w, t, n, cols, R, k, p, saa, scratch);
    return 0;
}

int dora_row_to_f64_isa(dora_isa isa, const void *p, dora_dtype t, size_t n, double *out,
                        double *sumsq)
{
    const isa_impl *im = isa_get(isa);
    if (!im)
        return -1;
    *sumsq = im->convert(p, t, n, out);
    return 0;
}

const char *dora_isa_name(dora_isa isa)
{
    static const char *const names[DORA_ISA_COUNT] = {"baseline", "x86-64-v3", "x86-64-v4"};
    return isa >= 0 && isa < DORA_ISA_COUNT ? names[isa] : "?";
}

/* Independent scalar decoders for the naive path: arithmetic, not bit moves. */
static long double naive_bf16(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 7) & 0xff, man = h & 0x7f;
    long double v;
    if (exp == 0xff)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexpl((long double)man, -126 - 7);
    else
        v = ldexpl((long double)(128 + man), exp - 127 - 7);
    return sign ? -v : v;
}

static long double naive_f16(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    long double v;
    if (exp == 0x1f)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexpl((long double)man, -14 - 10);
    else
        v = ldexpl((long double)(1024 + man), exp - 15 - 10);
    return sign ? -v : v;
}

static long double naive_load(const unsigned char *p, dora_dtype t, size_t i)
{
    uint16_t h;
    float f;
    double d;
    switch (t) {
    case DORA_DT_BF16:
        h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        return naive_bf16(h);
    case DORA_DT_F16:
        h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        return naive_f16(h);
    case DORA_DT_F32:
        memcpy(&f, p + 4 * i, 4);
        return f;
    case DORA_DT_F64:
        memcpy(&d, p + 8 * i, 8);
        return d;
    default:
        return NAN;
    }
}

void dora_row_sums_naive(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                         dora_rowsums *out)
{
    long double aa = 0, bb = 0, ad = 0, dd = 0;
    for (size_t i = 0; i < n; i++) {
        long double x = naive_load(a, ta, i), y = naive_load(b, tb, i), d = y - x;
        aa += x * x;
        bb += y * y;
        ad += x * d;
        dd += d * d;
    }
    out->saa = (double)aa;
    out->sbb = (double)bb;
    out->sad = (double)ad;
    out->sdd = (double)dd;
}

void dora_lowrank_naive(const void *w, dora_dtype t, size_t n, size_t cols, const double *R,
                        size_t k, double *p, double *saa)
{
    const size_t ld = dora_lowrank_ld(cols);
    for (size_t i = 0; i < n; i++) {
        long double ss = 0;
        for (size_t j = 0; j < cols; j++) {
            long double x = naive_load(w, t, i * cols + j);
            ss += x * x;
        }
        saa[i] = (double)ss;
        for (size_t q = 0; q < k; q++) {
            long double d = 0;
            for (size_t j = 0; j < cols; j++)
                d += naive_load(w, t, i * cols + j) * R[q * ld + j];
            p[i * k + q] = (double)d;
        }
    }
}

int dora_row_finish(const dora_rowsums *s, dora_rowstat *st, int *bad_side)
{
    if (!isfinite(s->saa)) {
        *bad_side = 0;
        return -1;
    }
    if (!isfinite(s->sbb) || !isfinite(s->sad) || !isfinite(s->sdd)) {
        *bad_side = 1;
        return -1;
    }
    double m0 = sqrt(s->saa), mt = sqrt(s->sbb);
    st->m0 = m0;
    st->mt = mt;
    if (m0 == 0.0 || mt == 0.0) {
        st->zero = 1;
        st->dm = m0 > mt ? m0 : mt;
        st->one_minus_cos = (m0 == 0.0 && mt == 0.0) ? 0.0 : 1.0;
        dora_row_split_angle(st);
        return 0;
    }
    st->zero = 0;
    st->dm = fabs(2.0 * s->sad + s->sdd) / (m0 + mt);
    double dot = s->saa + s->sad, mm = m0 * mt;
    double cross = s->saa * s->sdd - s->sad * s->sad;
    if (cross < 0.0)
        cross = 0.0;
    double omc = dot > 0.0 ? cross / (mm * (mm + dot)) : 1.0 - dot / mm;
    st->one_minus_cos = omc > 2.0 ? 2.0 : omc;
    /* the split of kernel.h: t^2 = cross / saa (Lagrange, as for 1 - cos) and
     * r = sad / |a| = sad |a| / saa, then passive and active over one common
     * denominator: two divisions per row, not four (measured: the split costs
     * a few ns per row, docs/performance.md) */
    double inv_saa = 1.0 / s->saa;
    double t2 = cross * inv_saa, r = s->sad * m0 * inv_saa;
    double h = sqrt(s->saa + t2), hp = h + m0, ha = mt + h;
    double inv = 1.0 / (hp * ha);
    st->passive = t2 * ha * inv;
    st->active = r * (r + 2.0 * m0) * hp * inv;
    return 0;
}

void dora_row_split_angle(dora_rowstat *st)
{
    const double m0 = st->m0, mt = st->mt, omc = st->one_minus_cos;
    double t2 = mt * mt * (omc * (2.0 - omc)), r = (mt - m0) - mt * omc;
    if (t2 < 0.0)
        t2 = 0.0;
    double h = sqrt(m0 * m0 + t2);
    /* both rows zero: h = m0 = mt = 0, nothing changed */
    st->passive = h + m0 > 0.0 ? t2 / (h + m0) : 0.0;
    st->active = mt + h > 0.0 ? r * (r + 2.0 * m0) / (mt + h) : 0.0;
}

void dora_row_stat_naive(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                         dora_rowstat *st)
{
    long double aa = 0, bb = 0, ab = 0;
    for (size_t i = 0; i < n; i++) {
        long double x = naive_load(a, ta, i), y = naive_load(b, tb, i);
        aa += x * x;
        bb += y * y;
        ab += x * y;
    }
    long double m0 = sqrtl(aa), mt = sqrtl(bb);
    st->m0 = (double)m0;
    st->mt = (double)mt;
    st->dm = (double)fabsl(mt - m0);
    /* u = b - a, r = u.a/|a|, t = |u - r a/|a||, from the definitions */
    long double r = 0, t2 = 0;
    if (m0 > 0) {
        for (size_t i = 0; i < n; i++) {
            long double x = naive_load(a, ta, i);
            r += (naive_load(b, tb, i) - x) * x;
        }
        r /= m0;
        for (size_t i = 0; i < n; i++) {
            long double x = naive_load(a, ta, i);
            long double q = (naive_load(b, tb, i) - x) - r * x / m0;
            t2 += q * q;
        }
    } else {
        t2 = bb;
    }
    long double h = sqrtl(aa + t2);
    st->passive = (double)(h - m0);
    st->active = (double)(mt - h);
    if (m0 == 0 || mt == 0) {
        st->zero = 1;
        st->one_minus_cos = (m0 == 0 && mt == 0) ? 0.0 : 1.0;
    } else {
        st->zero = 0;
        st->one_minus_cos = (double)(1.0L - ab / (m0 * mt));
    }
}
