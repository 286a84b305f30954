/* fused.h - fused projections and the rows of each part.
 *
 * Several architectures store q, k and v (or gate and up) as one weight.
 * Analysed whole, the query's rows -- the paper's subject -- are diluted by
 * the others', so such a weight is split into parts named "NAME[q]",
 * "NAME[k]", "NAME[v]" (or "[gate]", "[up]"), whose module kinds are q_proj,
 * k_proj, v_proj, gate_proj and up_proj. The layouts, from config.json
 * (model_type; the head counts), of a weight read as [out, in]:
 *
 *   phi3        *.qkv_proj.weight       q | k | v, contiguous: nh*hd, nkv*hd, nkv*hd
 *               *.gate_up_proj.weight   gate | up: I, I
 *   gpt_neox    *.query_key_value       per head: [q_h k_h v_h] x nh, hd rows each
 *   falcon      *.query_key_value       new_decoder_architecture: per kv group
 *                                       [q x nh/nkv, k, v] x nkv; else multi_query:
 *                                       q (nh*hd) | k (hd) | v (hd); else per head
 *   gpt2        *.attn.c_attn.weight    q | k | v, n_embd each (after the Conv1D transpose)
 *   qwen        *.attn.c_attn.weight    q | k | v, kv_channels*num_attention_heads each
 *   mpt         *.attn.Wqkv.weight      q (d_model) | k | v (kv heads * hd each; MHA,
 *                                       multiquery_attention: 1 kv head, or kv_n_heads)
 *   baichuan    *.self_attn.W_pack      q | k | v, hidden_size each
 *   (Megatron)  *.self_attention.linear_qkv  per query group [q x nh/ng, k, v] x ng,
 *                                       kv_channels rows each (any model_type)
 *               *.mlp.linear_fc1        gated: gate | up, ffn_hidden_size each
 *
 * A row belongs to exactly one part. Sizes that do not add up to the weight's
 * rows, or a head count the split needs that config.json lacks, are errors
 * naming the tensor and the numbers (--no-split analyses fused weights whole).
 */
#ifndef DORA_FUSED_H
#define DORA_FUSED_H

#include "dora/config.h"
#include "dora/error.h"

#include <stdint.h>

#define DORA_FUSED_MAX_PARTS 3

typedef struct dora_fused {
    int nparts;
    const char *part[DORA_FUSED_MAX_PARTS]; /* "q", "k", "v" or "gate", "up" (static) */
    int64_t groups;                         /* the rows: GROUPS repeats of the segments */
    int64_t seg[DORA_FUSED_MAX_PARTS];      /* rows of each part in one group */
    const char *layout;                     /* "contiguous", "per head", ... (static) */
} dora_fused;

/* Whether the tensor NAME, read as [ROWS, *], is a fused weight of the
 * architecture C describes: 1 with *F filled, 0 if not (or C is NULL), -1
 * with ERR set when it is but config.json lacks a count or the sizes do not
 * add up to ROWS. */
int dora_fused_layout(const dora_config *c, const char *name, int64_t rows, dora_fused *f,
                      dora_err *err);

/* The row of the fused weight that row I of part P is. */
int64_t dora_fused_row(const dora_fused *f, int p, int64_t i);
/* Rows of part P in all. */
int64_t dora_fused_rows(const dora_fused *f, int p);

/* The module kind of a part's name ("...qkv_proj.weight[q]" -> "q_proj"), or
 * NULL for a name that is not a part (for dora_module_kind, stats.h). */
const char *dora_fused_part_kind(const char *module);

#endif
