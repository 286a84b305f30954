/* llama_names.h - Meta's and torchtune's Llama tensor names as HF transformers names.
 *
 * Meta's consolidated.NN.pth (and torchtune's meta_model_N.pt) and torchtune's
 * own state dicts name Llama's tensors otherwise than HF does, and keep the
 * rows of wq and wk in the order of Meta's rotary embedding: HF's
 * convert_llama_weights_to_hf.py permutes them, per head of hd rows, so that
 * HF row t * hd/2 + j of a head is Meta row 2 j + t (t in {0, 1}). The
 * mapping (Meta | torchtune -> HF, under model.):
 *
 *   tok_embeddings.weight                      -> embed_tokens.weight
 *   norm.weight | norm.scale                   -> norm.weight
 *   output.weight                              -> lm_head.weight (not under model.)
 *   layers.N.attention.wq | attn.q_proj        -> layers.N.self_attn.q_proj  (RoPE, heads)
 *   layers.N.attention.wk | attn.k_proj        -> layers.N.self_attn.k_proj  (RoPE, kv heads)
 *   layers.N.attention.wv | attn.v_proj        -> layers.N.self_attn.v_proj
 *   layers.N.attention.wo | attn.output_proj   -> layers.N.self_attn.o_proj
 *   layers.N.feed_forward.w1 | mlp.w1          -> layers.N.mlp.gate_proj
 *   layers.N.feed_forward.w2 | mlp.w2          -> layers.N.mlp.down_proj
 *   layers.N.feed_forward.w3 | mlp.w3          -> layers.N.mlp.up_proj
 *   layers.N.attention_norm | sa_norm          -> layers.N.input_layernorm
 *   layers.N.ffn_norm | mlp_norm               -> layers.N.post_attention_layernorm
 *
 * Whatever stands before the first such name (a wrapper's "model.") is kept.
 */
#ifndef DORA_LLAMA_NAMES_H
#define DORA_LLAMA_NAMES_H

#include <stddef.h>
#include <stdint.h>

enum { DORA_ROPE_NONE = 0, DORA_ROPE_Q, DORA_ROPE_K };

/* NAME in HF's naming into OUT (SIZE bytes): 1 and *ROPE (DORA_ROPE_Q for wq,
 * DORA_ROPE_K for wk, else NONE) when NAME is a Meta or torchtune Llama name;
 * 0 when it is not (or OUT is too small). */
int dora_llama_to_hf(const char *name, char *out, size_t size, int *rope);

/* The Meta row that HF row R of a RoPE-permuted weight with rows of HEADS
 * heads of HD rows each comes from (HD even). */
int64_t dora_rope_row(int64_t r, int64_t hd);

#endif
