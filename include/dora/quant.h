/* quant.h - the base an adapter was really trained on, when that base was
 * quantised by bitsandbytes (QLoRA and the like): W0 is the round trip
 * dequantize(quantize(W)) of the downloaded weight, not W itself.
 *
 *   nf4, fp4      quantize_4bit: the tensor flattened as bitsandbytes stores it
 *                 ([out, in], row-major), in blocks of 64 values (the last one
 *                 shorter); per block absmax = max |x| in float32; each value
 *                 x * (1 / max(absmax, 1e-38)) (the short last block: x / absmax),
 *                 clamped to [-1, 1], goes to the nearest code of the 16-entry
 *                 codebook (NF4, or FP4 = {0, 0.0625, 2, 3, 4, 6, 8, 12} / 12 with
 *                 its sign), a value on a midpoint to the lower code; dequantised
 *                 as float32(code * absmax), then rounded (to nearest even) to the
 *                 base's dtype
 *   nf4-dq, fp4-dq the same with double quantisation of the absmax values
 *                 (compress_statistics): offset = their mean, absmax - offset
 *                 quantised with the signed 8-bit dynamic map in blocks of 256
 *                 (same rules), dequantised and the offset added back, in float32
 *   int8          LLM.int8 weights (Int8Params): the weight rounded to float16
 *                 first; per row s = max |x|, q = round_half_even(x * (127 / s))
 *                 as int8, W0 = float32(q * s) * float32(1/127), kept in float32
 *                 (int8_vectorwise_dequant's type)
 *
 * Quantised are the base weights that bitsandbytes replaces: the 2-D weights
 * of the modules a LoRA, IA3, AdaLoRA or VeRA adapter adapts (PEFT's
 * bitsandbytes layers: nn.Linear; not LoHa / LoKr or MLX; GPT-2's Conv1D,
 * stored [in, out], is quantised as the [out, in] matrix transformers loads);
 * not embeddings, convolutions, modules_to_save, lm_head or the modules of the
 * base's llm_int8_skip_modules. F64 weights are refused (bitsandbytes takes
 * F16, BF16 and F32 only), as is NaN or Inf in a quantised weight.
 */
#ifndef DORA_QUANT_H
#define DORA_QUANT_H

#include "dora/adapter.h"
#include "dora/error.h"
#include "dora/model.h"

#include <stddef.h>
#include <stdint.h>

typedef enum dora_quant {
    DORA_QUANT_NONE = 0,
    DORA_QUANT_NF4,
    DORA_QUANT_FP4,
    DORA_QUANT_INT8,
    DORA_QUANT_NF4_DQ,
    DORA_QUANT_FP4_DQ
} dora_quant;

/* "nf4", "fp4", "int8", "nf4-dq", "fp4-dq" (or "none"): 0, else -1. */
int dora_quant_parse(const char *s, dora_quant *q);
const char *dora_quant_name(dora_quant q);

/* What the base's config.json (beside or in BASE_PATH) says: its
 * quantization_config, if any. *Q = NONE without one; a bitsandbytes config
 * sets *Q and *SKIP (owned JSON text of llm_int8_skip_modules, or NULL); any
 * other quant_method, or a bitsandbytes one this tool cannot reproduce, is an
 * error naming the file and the field. */
int dora_quant_from_config(const char *base_path, dora_quant *q, char **skip, dora_err *err);
/* The quantisation to use: *Q as asked (NONE: not asked), settled against the
 * base's config: followed when not asked, and an error when both are given
 * and differ. *SKIP as for dora_quant_from_config. */
int dora_quant_settle(const char *base_path, dora_quant *q, char **skip, dora_err *err);

/* In place: the round trip of N float32 values X (4-bit: flat blocks of 64;
 * int8: rows of COLS values). The values must be finite (checked by the
 * caller). 0, or -1 out of memory (double quantisation needs a buffer). */
int dora_quant_roundtrip(float *x, size_t n, size_t cols, dora_quant q, dora_err *err);

/* bitsandbytes' 4-bit codebook in code order (the quant_map it saves): NF4
 * sorted, FP4 by bit pattern (bit 3 the sign), each value in float32. */
void dora_quant_code4(int fp4, float code[16]);

/* A base saved by bitsandbytes through transformers (save_pretrained of a
 * model loaded in 4 or 8 bits), read dequantised as bitsandbytes dequantises
 * it, W0 being what the adapter was trained against:
 *
 *   4-bit  NAME (U8, two codes a byte, the first in the high nibble), NAME.absmax
 *          (F32 [blocks]; U8 with double quantisation), NAME.quant_map (F32 [16],
 *          which must be bitsandbytes' own table: its CUDA kernels use that),
 *          NAME.nested_absmax / NAME.nested_quant_map (double quantisation) and
 *          NAME.quant_state.bitsandbytes__nf4|fp4 (U8: JSON with quant_type,
 *          blocksize, dtype, shape, nested_blocksize, nested_offset). absmax of
 *          block b = float32(nested_quant_map[absmax[b]] * nested_absmax[b /
 *          nested_blocksize]) + float32(nested_offset) when nested; value i =
 *          float32(quant_map[code i] * absmax[i / blocksize]), rounded (to
 *          nearest even) to dtype; the tensor of that shape and dtype
 *   8-bit  NAME.weight (I8 [out, in]) and NAME.SCB (F32 [out]): float32(float32(q *
 *          SCB[row]) * float32(1/127)), F32 (int8_vectorwise_dequant)
 *
 * 1 if BASE holds such tensors (a quant_state.bitsandbytes__* or a .SCB), else 0. */
int dora_bnb_saved(const dora_model *base);

/* Round to nearest even, as torch's .to(dtype). */
uint16_t dora_f32_to_bf16(float f);
uint16_t dora_f32_to_f16(float f);

/* The base as the adapter saw it: BASE with the tensors that AD's modules
 * adapt (see above) replaced by their round trip, held in memory in the
 * base's dtype. view shares BASE's files (so a change of the base is still
 * seen) and is valid while BASE is open; never dora_model_close it. */
typedef struct dora_quant_base {
    dora_model view;
    size_t nquant;           /* tensors quantised */
    size_t nkept;            /* adapted tensors left as they are (not nn.Linear, skipped) */
    dora_tensor *tensors;    /* [nquant] owned, with their bytes */
} dora_quant_base;

int dora_quant_base_open(dora_quant_base **out, const dora_model *base, const dora_adapter *ad,
                         dora_quant q, const char *skip_json, dora_err *err);
void dora_quant_base_close(dora_quant_base *qb);
/* An empty view of BASE (its files, no tensors yet) with room for NTENSORS
 * owned tensors, for the two openers; NULL when out of memory. */
dora_quant_base *dora_quant_view(const dora_model *base, size_t ntensors);
/* The view of BASE with every bitsandbytes-saved weight (above) dequantised,
 * held in memory, and the auxiliary tensors left out; as dora_quant_base_open's
 * (nkept 0). Every value from the file is checked: shapes, sizes, the JSON. */
int dora_bnb_saved_open(dora_quant_base **out, const dora_model *base, dora_err *err);
/* W0 of every run against BASE, for analyze, spectrum and batch alike: when
 * bitsandbytes saved BASE quantised (dora_bnb_saved), *SAVED is its
 * dequantised view (dora_bnb_saved_open) and NOTE (LEN bytes) says how many
 * weights were read so; else *SAVED is NULL and NOTE "". ASKED, a --base-quant
 * (or base_quant) other than none, is then refused: it would quantise twice.
 * 0, or -1 with ERR. */
int dora_bnb_saved_w0(const dora_model *base, dora_quant asked, dora_quant_base **saved,
                      char *note, size_t len, dora_err *err);

/* A note for an adapter whose config names a base that looks quantised
 * (bnb-4bit, 4bit, int8, nf4, gptq, awq in base_model_name_or_path) while the
 * analysis uses the base as given: 1 with the note in BUF, else 0. */
int dora_quant_hint(const dora_adapter *ad, char *buf, size_t len);

#endif
