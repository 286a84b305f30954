/* kernel.c - row sums for dM and dD; see include/dora/kernel.h. */
#include "dora/kernel.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the readers map little-endian files directly and need a little-endian host"
#endif

float dora_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16; /* bf16 is the top half of an IEEE single */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float dora_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* Inf, NaN (payload kept) */
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13); /* rebias 15 -> 127 */
    } else if (man == 0) {
        u = sign; /* signed zero */
    } else {
        /* subnormal: normalise the mantissa */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void)
{
    for (uint32_t h = 0; h < 65536; h++)
        f16_table[h] = dora_f16_to_f32((uint16_t)h);
}

#define BLOCK 512 /* elements per conversion block: 2 x 4 KiB of doubles, in L1 */
#define LANES 8   /* independent accumulators: breaks the add chain, vectorises */

/* Convert n elements of type t at p (possibly unaligned) into doubles. */
static void load_block(const unsigned char *p, dora_dtype t, size_t n, double *out)
{
    switch (t) {
    case DORA_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            float f;
            memcpy(&f, &u, 4);
            out[i] = f;
        }
        break;
    case DORA_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = f16_table[h];
        }
        break;
    case DORA_DT_F32:
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            out[i] = f;
        }
        break;
    case DORA_DT_F64:
        memcpy(out, p, n * sizeof *out);
        break;
    default:
        for (size_t i = 0; i < n; i++)
            out[i] = NAN; /* callers only pass analysable types; make misuse loud */
        break;
    }
}

void dora_row_sums(const void *a, dora_dtype ta, const void *b, dora_dtype tb, size_t n,
                   dora_rowsums *out)
{
    if (ta == DORA_DT_F16 || tb == DORA_DT_F16)
        pthread_once(&f16_once, f16_table_init);
    const unsigned char *pa = a, *pb = b;
    const size_t sa = dora_dtype_size(ta), sb = dora_dtype_size(tb);
    double A[BLOCK], B[BLOCK];
    double aa[LANES] = {0}, bb[LANES] = {0}, ad[LANES] = {0}, dd[LANES] = {0};
    for (size_t off = 0; off < n; off += BLOCK) {
        size_t m = n - off < BLOCK ? n - off : BLOCK;
        load_block(pa + off * sa, ta, m, A);
        load_block(pb + off * sb, tb, m, B);
        size_t i = 0;
        for (; i + LANES <= m; i += LANES) {
            for (int j = 0; j < LANES; j++) {
                double x = A[i + j], y = B[i + j], d = y - x;
                aa[j] += x * x;
                bb[j] += y * y;
                ad[j] += x * d;
                dd[j] += d * d;
            }
        }
        for (; i < m; i++) {
            double x = A[i], y = B[i], d = y - x;
            aa[0] += x * x;
            bb[0] += y * y;
            ad[0] += x * d;
            dd[0] += d * d;
        }
    }
    dora_rowsums s = {0, 0, 0, 0};
    for (int j = 0; j < LANES; j++) {
        s.saa += aa[j];
        s.sbb += bb[j];
        s.sad += ad[j];
        s.sdd += dd[j];
    }
    *out = s;
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
        return 0;
    }
    st->zero = 0;
    st->dm = fabs(2.0 * s->sad + s->sdd) / (m0 + mt);
    double dot = s->saa + s->sad, mm = m0 * mt;
    double omc;
    if (dot > 0.0) {
        double cross = s->saa * s->sdd - s->sad * s->sad;
        omc = (cross > 0.0 ? cross : 0.0) / (mm * (mm + dot));
    } else {
        omc = 1.0 - dot / mm;
    }
    st->one_minus_cos = omc > 2.0 ? 2.0 : omc;
    return 0;
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
    if (m0 == 0 || mt == 0) {
        st->zero = 1;
        st->one_minus_cos = (m0 == 0 && mt == 0) ? 0.0 : 1.0;
    } else {
        st->zero = 0;
        st->one_minus_cos = (double)(1.0L - ab / (m0 * mt));
    }
}
