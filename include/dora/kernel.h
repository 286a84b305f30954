/* kernel.h - per-row magnitude and direction change between two weights.
 *
 * For a row a of W0 and the matching row b of Wt (n elements each, any of the
 * types F16, BF16, F32, F64, not necessarily the same), one pass accumulates in
 * float64, with d = b - a computed exactly in float64:
 *
 *     saa = sum a*a    sbb = sum b*b    sad = sum a*d    sdd = sum d*d
 *
 * and dora_row_finish turns them into the row's magnitude change and 1 - cos
 * without the cancellation of `1 - dot / (|a| |b|)`:
 *
 *     |b| - |a| = (2 sad + sdd) / (|a| + |b|)
 *     1 - cos   = (saa sdd - sad^2) / (|a||b| (|a||b| + a.b))     when a.b > 0
 *               (Lagrange: |a|^2|b|^2 - (a.b)^2 = |a|^2|d|^2 - (a.d)^2)
 *     1 - cos   = 1 - a.b / (|a||b|)                               otherwise
 *
 * Zero rows: a row zero in both weights is unchanged (contributes 0 to dM and
 * dD); a row zero in exactly one of them has no angle to the other, and counts
 * as orthogonal (1 - cos = 1). Both cases are flagged so callers count them.
 *
 * Where the magnitude change comes from (docs/numerics.md): with u = b - a,
 * its radial part r = u.a/|a| and tangential part t = |u - r a/|a||,
 * |b|^2 = (|a| + r)^2 + t^2, and h = sqrt(|a|^2 + t^2) splits
 *
 *     |b| - |a| = passive + active,   passive = h - |a| >= 0,   active = |b| - h
 *
 * passive: the lengthening that the rotation alone forces; active: the rest.
 * Without cancellation, t^2 = (saa sdd - sad^2) / saa, r = sad / |a|:
 *
 *     passive = t^2 / (h + |a|)      active = r (r + 2 |a|) / (|b| + h)
 *
 * Zero rows: a base row of zero has no radial direction, the update counts as
 * tangential (t = |b|: passive = |b|, active = 0); a checkpoint row of zero is
 * the base row taken away (t = 0: passive = 0, active = -|a|).
 */
#ifndef DORA_KERNEL_H
#define DORA_KERNEL_H

#include "dora/tensor.h"

#include <stddef.h>

typedef struct dora_rowsums {
    double saa, sbb, sad, sdd;
} dora_rowsums;

typedef struct dora_rowstat {
    double m0;            /* |a| */
    double mt;            /* |b| */
    double dm;            /* | |b| - |a| | */
    double one_minus_cos; /* in [0, 2] */
    int zero;             /* 1 when a or b is a zero row (see above) */
    double passive;       /* sqrt(|a|^2 + t^2) - |a| >= 0 (see above) */
    double active;        /* |b| - sqrt(|a|^2 + t^2), signed: |b| - |a| = passive + active */
} dora_rowstat;

/* Instruction sets the fast kernel is compiled for; the best one the CPU has
 * is chosen at the first call. */
typedef enum dora_isa {
    DORA_ISA_BASELINE = 0, /* any x86-64 (SSE2), or any other architecture */
    DORA_ISA_X86_64_V3,    /* AVX2, FMA, F16C */
    DORA_ISA_X86_64_V4,    /* AVX-512 */
    DORA_ISA_COUNT
} dora_isa;

/* Fast kernel: conversion fused with an 8-lane float64 reduction (GNU vector
 * extensions), two accumulator sets, software prefetch. a and b may be
 * unaligned; n may be 0. */
void dora_row_sums(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                   dora_rowsums *out);

/* Convert n elements of type t at p (possibly unaligned) to float64 into out
 * and return their sum of squares. */
double dora_row_to_f64(const void *p, dora_dtype t, size_t n, double *out);

/* The fast kernel for one instruction set, so that tests can hold each to the
 * naive twin. Returns -1 (and does nothing) if this CPU or build lacks it. */
int dora_row_sums_isa(dora_isa isa, const void *a, dora_dtype ta, const void *b, dora_dtype tb,
                      size_t n, dora_rowsums *out);
const char *dora_isa_name(dora_isa isa);

/* dora_row_to_f64 for one instruction set (sum of squares into *sumsq), for
 * the tests. Returns -1 (and does nothing) if this CPU or build lacks it. */
int dora_row_to_f64_isa(dora_isa isa, const void *p, dora_dtype t, size_t n, double *out,
                        double *sumsq);

/* Naive twin, for the tests: element by element, scalar conversions written
 * independently of the fast path, long double accumulation. */
void dora_row_sums_naive(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                         dora_rowsums *out);

/* Row statistics from the sums. Returns 0, or -1 if a sum is not finite (NaN or
 * Inf in a weight, or squares beyond float64 range); then *bad_side is 0 when
 * the base row is at fault and 1 when the checkpoint row is. */
int dora_row_finish(const dora_rowsums *s, dora_rowstat *st, int *bad_side);

/* passive and active of ST from its m0, mt and one_minus_cos alone, for a row
 * whose norm is set apart from its direction (DoRA: |b| = |m|): t = |b| sin,
 * r = (|b| - |a|) - |b| (1 - cos), t^2 = |b|^2 (1 - cos)(1 + cos). Gives the
 * zero-row values above for m0 or mt = 0 with one_minus_cos as dora_row_finish
 * sets it. */
void dora_row_split_angle(dora_rowstat *st);

/* Naive 1 - cos, magnitude change, passive and active, straight from the
 * definitions with long double sums (t from the projection of u, passive =
 * h - |a|, active = |b| - h); used by the tests as an independent check. */
void dora_row_stat_naive(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                         dora_rowstat *st);

/* Low-rank products, for LoRA and DoRA without a merged matrix. For the n
 * rows a_i of a weight (type t, cols elements each, row i at
 * w + i * cols * size, unaligned allowed) and the k rows R_q of a float64
 * matrix R:
 *
 *     p[i * k + q] = a_i . R_q        saa[i] = a_i . a_i
 *
 * accumulated in float64 (a_i converted exactly). R is laid out padded: its
 * dora_lowrank_rows(k) rows hold dora_lowrank_ld(cols) doubles each, and the
 * padding (columns >= cols, rows >= k) is zero. scratch holds
 * dora_lowrank_scratch(k, cols) doubles. R and scratch may have any alignment;
 * at 64 bytes the loads do not split cache lines.
 * Why a kernel and not dgemm: the products are a tall, 16-wide GEMM, for which
 * dgemm needs the rows converted to float64 and packed first; the AVX2/AVX-512
 * instances convert 4 rows at a time into an L1 tile and hold 4 x 4 products in
 * registers. Without AVX2 the rows are converted and handed to dgemm
 * (measurements: docs/performance.md). */
size_t dora_lowrank_ld(size_t cols);
size_t dora_lowrank_rows(size_t k);
size_t dora_lowrank_scratch(size_t k, size_t cols);
void dora_lowrank(const void *w, dora_dtype t, size_t n, size_t cols, const double *R, size_t k,
                  double *p, double *saa, double *scratch);
/* The same for one instruction set (tests); -1 if this CPU or build lacks it. */
int dora_lowrank_isa(dora_isa isa, const void *w, dora_dtype t, size_t n, size_t cols,
                     const double *R, size_t k, double *p, double *saa, double *scratch);
/* Naive twin: element by element, long double sums; R as above. */
void dora_lowrank_naive(const void *w, dora_dtype t, size_t n, size_t cols, const double *R,
                        size_t k, double *p, double *saa);

/* dora_elem_to_f64, dora_bf16_to_f32 and dora_f16_to_f32: tensor.h. */

#endif
