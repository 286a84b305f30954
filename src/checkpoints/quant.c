/* quant.c - bitsandbytes' quantisation round trips (NF4, FP4, double
 * quantisation, LLM.int8), re-implemented in float32 as its reference
 * (PyTorch-native) backend computes them; see include/dora/quant.h. */
#include "dora/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_4BIT 64    /* Params4bit's default blocksize */
#define BLOCK_NESTED 256 /* the absmax values' blocks under double quantisation */

/* NF4: quantiles of N(0, 1), as bitsandbytes' get_4bit_type("nf4") lists them (sorted). */
static const float nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* FP4 (1 sign, 2 exponent, 1 mantissa bit, bias 2): the magnitudes
 * {0, 0.0625, 2, 3, 4, 6, 8, 12}, divided by 12 in float32; sorted here
 * (bitsandbytes keeps them in bit-pattern order, which only names the codes). */
static const float fp4_mag[8] = {0.0f, 0.0625f, 2.0f, 3.0f, 4.0f, 6.0f, 8.0f, 12.0f};

/* The signed 8-bit dynamic map (create_dynamic_map(signed=True, 7, 8)) as the
 * float32 bits of its 256 sorted values: the means of torch.linspace(0.1, 1,
 * 2^i + 1) in float32 times 10^(i - 6), i = 0..6, both signs, plus 0 and 1.
 * Stored as bits because the float32 linspace is not reproduced exactly by
 * any formula shorter than torch's own loop. */
static const uint32_t dynamic_bits[256] = {
    0xbf7e3333u, 0xbf7a9999u, 0xbf770000u, 0xbf736666u, 0xbf6fccccu, 0xbf6c3333u,
    0xbf68999au, 0xbf650000u, 0xbf616666u, 0xbf5dccccu, 0xbf5a3333u, 0xbf569999u,
    0xbf530000u, 0xbf4f6666u, 0xbf4bccccu, 0xbf483333u, 0xbf44999au, 0xbf410000u,
    0xbf3d6667u, 0xbf39cccdu, 0xbf363334u, 0xbf32999au, 0xbf2f0000u, 0xbf2b6667u,
    0xbf27cccdu, 0xbf243333u, 0xbf20999au, 0xbf1d0000u, 0xbf196666u, 0xbf15cccdu,
    0xbf123334u, 0xbf0e999au, 0xbf0b0000u, 0xbf076666u, 0xbf03cccdu, 0xbf003333u,
    0xbef93334u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au, 0xbedc6666u, 0xbed53332u,
    0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13332u, 0xbeaa0000u,
    0xbea2ccccu, 0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d999au,
    0xbe6f3334u, 0xbe60cccdu, 0xbe526666u, 0xbe440000u, 0xbe359999u, 0xbe273333u,
    0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u, 0xbddb3334u, 0xbdc9eb85u, 0xbdc428f5u,
    0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u, 0xbda75c28u, 0xbda1999au,
    0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu, 0xbd7e147au,
    0xbd728f5du, 0xbd670a3du, 0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u,
    0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae147u, 0xbcfeb852u, 0xbce7ae13u,
    0xbcd0a3d7u, 0xbcb9999au, 0xbca28f5cu, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u,
    0xbc1f3b64u, 0xbc160418u, 0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u,
    0xbbcfdf3bu, 0xbbbd70a4u, 0xbbab020du, 0xbb989374u, 0xbb8624ddu, 0xbb676c8au,
    0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du, 0xba7765ffu, 0xba59e83eu,
    0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u, 0xb923d70bu,
    0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u,
    0xb513a3b7u, 0x00000000u, 0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u,
    0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu, 0x398ce705u, 0x39c7e283u,
    0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du,
    0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u,
    0x3bab020du, 0x3bbd70a4u, 0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u,
    0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u, 0x3c68f5c3u, 0x3c8b851fu,
    0x3ca28f5cu, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae13u, 0x3cfeb852u, 0x3d0ae147u,
    0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u,
    0x3d5b851fu, 0x3d670a3du, 0x3d728f5du, 0x3d7e147au, 0x3d84cccdu, 0x3d8a8f5du,
    0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au, 0x3da75c28u, 0x3dad1eb8u,
    0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f5u, 0x3dc9eb85u, 0x3ddb3334u,
    0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e359999u, 0x3e440000u,
    0x3e526666u, 0x3e60cccdu, 0x3e6f3334u, 0x3e7d999au, 0x3e860000u, 0x3e8d3334u,
    0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u, 0x3eb13332u, 0x3eb86666u,
    0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53332u, 0x3edc6666u, 0x3ee3999au,
    0x3eeaccccu, 0x3ef20000u, 0x3ef93334u, 0x3f003333u, 0x3f03cccdu, 0x3f076666u,
    0x3f0b0000u, 0x3f0e999au, 0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u,
    0x3f20999au, 0x3f243333u, 0x3f27cccdu, 0x3f2b6667u, 0x3f2f0000u, 0x3f32999au,
    0x3f363334u, 0x3f39cccdu, 0x3f3d6667u, 0x3f410000u, 0x3f44999au, 0x3f483333u,
    0x3f4bccccu, 0x3f4f6666u, 0x3f530000u, 0x3f569999u, 0x3f5a3333u, 0x3f5dccccu,
    0x3f616666u, 0x3f650000u, 0x3f68999au, 0x3f6c3333u, 0x3f6fccccu, 0x3f736666u,
    0x3f770000u, 0x3f7a9999u, 0x3f7e3333u, 0x3f800000u,
};

static const struct {
    const char *name;
    dora_quant q;
} names[] = {
    {"none", DORA_QUANT_NONE}, {"nf4", DORA_QUANT_NF4},       {"fp4", DORA_QUANT_FP4},
    {"int8", DORA_QUANT_INT8}, {"nf4-dq", DORA_QUANT_NF4_DQ}, {"fp4-dq", DORA_QUANT_FP4_DQ},
};

int dora_quant_parse(const char *s, dora_quant *q)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *q = names[i].q;
            return 0;
        }
    return -1;
}

const char *dora_quant_name(dora_quant q)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].q == q)
            return names[i].name;
    return "?";
}

uint16_t dora_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint16_t dora_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* 65520 and above round to Inf */
        return sign | 0x7c00u;
    if (a < 0x38800000u) /* below 2^-14: a subnormal of f16, in units of 2^-24 */
        return sign | (uint16_t)rintf(fabsf(f) * 16777216.0f);
    a += 0xc8000fffu + ((a >> 13) & 1u); /* rebias 127 -> 15, round to nearest even */
    return sign | (uint16_t)(a >> 13);
}

/* Midpoints of the sorted codebook CODE[N], in float32. */
static void midpoints(const float *code, size_t n, float *bounds)
{
    for (size_t i = 0; i + 1 < n; i++)
        bounds[i] = (code[i] + code[i + 1]) / 2.0f;
}

/* torch.bucketize(v, bounds): the number of bounds below V (a value on a
 * bound goes to the lower code). */
static size_t bucket(const float *bounds, size_t nb, float v)
{
    size_t lo = 0, hi = nb;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Blockwise quantisation of X[N] with the sorted codebook CODE[NCODE]: each
 * value replaced by its code (not yet scaled), ABSMAX[ceil(N / BS)] set. */
static void quantize_blocks(float *x, size_t n, size_t bs, const float *code, size_t ncode,
                            float *absmax)
{
    float bounds[256];
    midpoints(code, ncode, bounds);
    for (size_t b0 = 0, k = 0; b0 < n; b0 += bs, k++) {
        size_t len = n - b0 < bs ? n - b0 : bs;
        float am = 0.0f;
        for (size_t i = 0; i < len; i++)
            am = fmaxf(am, fabsf(x[b0 + i]));
        absmax[k] = am;
        const float den = fmaxf(am, 1e-38f), inv = 1.0f / den;
        for (size_t i = 0; i < len; i++) {
            /* full blocks multiply by the reciprocal, the short last one divides */
            float s = len == bs ? x[b0 + i] * inv : x[b0 + i] / den;
            s = s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;
            x[b0 + i] = code[bucket(bounds, ncode - 1, s)];
        }
    }
}

static void dequantize_blocks(float *x, size_t n, size_t bs, const float *absmax)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * absmax[i / bs];
}

/* Double quantisation of the NB absmax values in place: offset = their mean
 * (float64, rounded to float32), the rest through the dynamic map. */
static int nested(float *absmax, size_t nb, dora_err *err)
{
    float dyn[256];
    for (size_t i = 0; i < 256; i++)
        memcpy(&dyn[i], &dynamic_bits[i], sizeof dyn[i]);
    double sum = 0;
    for (size_t i = 0; i < nb; i++)
        sum += absmax[i];
    const float offset = (float)(sum / (double)nb);
    float *am2 = malloc(((nb + BLOCK_NESTED - 1) / BLOCK_NESTED) * sizeof *am2);
    if (!am2)
        return dora_errf(err, "out of memory for the double quantisation of %zu blocks", nb);
    for (size_t i = 0; i < nb; i++)
        absmax[i] -= offset;
    quantize_blocks(absmax, nb, BLOCK_NESTED, dyn, 256, am2);
    dequantize_blocks(absmax, nb, BLOCK_NESTED, am2);
    for (size_t i = 0; i < nb; i++)
        absmax[i] += offset;
    free(am2);
    return 0;
}

static int roundtrip_4bit(float *x, size_t n, int fp4, int dq, dora_err *err)
{
    float fp4_code[16];
    for (int i = 0; i < 8; i++) {
        fp4_code[8 + i] = fp4_mag[i] / 12.0f;
        fp4_code[7 - i] = -fp4_mag[i] / 12.0f;
    }
    const size_t nb = (n + BLOCK_4BIT - 1) / BLOCK_4BIT;
    float *absmax = malloc((nb ? nb : 1) * sizeof *absmax);
    if (!absmax)
        return dora_errf(err, "out of memory for %zu quantisation blocks", nb);
    quantize_blocks(x, n, BLOCK_4BIT, fp4 ? fp4_code : nf4_code, 16, absmax);
    if (dq && nb && nested(absmax, nb, err) != 0) {
        free(absmax);
        return -1;
    }
    dequantize_blocks(x, n, BLOCK_4BIT, absmax);
    free(absmax);
    return 0;
}

/* LLM.int8: the values are float16 already (the caller rounds them). */
static void roundtrip_int8(float *x, size_t n, size_t cols)
{
    for (size_t r0 = 0; cols && r0 < n; r0 += cols) {
        float s = 0.0f;
        for (size_t j = 0; j < cols; j++)
            s = fmaxf(s, fabsf(x[r0 + j]));
        if (s == 0.0f) { /* q * 0 = 0 whatever q is */
            memset(x + r0, 0, cols * sizeof *x);
            continue;
        }
        const float f = 127.0f / s;
        for (size_t j = 0; j < cols; j++) {
            float q = rintf(x[r0 + j] * f);
            x[r0 + j] = (q * s) * 7.874015718698502e-3f;
        }
    }
}

int dora_quant_roundtrip(float *x, size_t n, size_t cols, dora_quant q, dora_err *err)
{
    switch (q) {
    case DORA_QUANT_NF4:
    case DORA_QUANT_FP4:
    case DORA_QUANT_NF4_DQ:
    case DORA_QUANT_FP4_DQ:
        return roundtrip_4bit(x, n, q == DORA_QUANT_FP4 || q == DORA_QUANT_FP4_DQ,
                              q == DORA_QUANT_NF4_DQ || q == DORA_QUANT_FP4_DQ, err);
    case DORA_QUANT_INT8:
        for (size_t i = 0; i < n; i++)
            x[i] = dora_f16_to_f32(dora_f32_to_f16(x[i]));
        roundtrip_int8(x, n, cols);
        return 0;
    default:
        return 0;
    }
}

void dora_quant_code4(int fp4, float code[16])
{
    /* FP4 by bit pattern: bit 3 the sign, bits 0-2 the magnitude's pattern */
    static const int fp4_pattern[8] = {0, 1, 6, 7, 4, 5, 2, 3}; /* into fp4_mag */
    for (int i = 0; i < 16; i++)
        code[i] = fp4 ? (i & 8 ? -1.0f : 1.0f) * (fp4_mag[fp4_pattern[i & 7]] / 12.0f)
                      : nf4_code[i];
}
