/* llama_names.c - Meta / torchtune Llama names to HF's; see include/dora/llama_names.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/llama_names.h"

#include <stdio.h>
#include <string.h>

/* The part after "layers.N." in either naming, and HF's. */
static const struct {
    const char *from, *to;
    int rope;
} layer_parts[] = {
    {"attention.wq.weight", "self_attn.q_proj.weight", DORA_ROPE_Q},
    {"attention.wk.weight", "self_attn.k_proj.weight", DORA_ROPE_K},
    {"attention.wv.weight", "self_attn.v_proj.weight", DORA_ROPE_NONE},
    {"attention.wo.weight", "self_attn.o_proj.weight", DORA_ROPE_NONE},
    {"attn.q_proj.weight", "self_attn.q_proj.weight", DORA_ROPE_Q},
    {"attn.k_proj.weight", "self_attn.k_proj.weight", DORA_ROPE_K},
    {"attn.v_proj.weight", "self_attn.v_proj.weight", DORA_ROPE_NONE},
    {"attn.output_proj.weight", "self_attn.o_proj.weight", DORA_ROPE_NONE},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight", DORA_ROPE_NONE},
    {"feed_forward.w2.weight", "mlp.down_proj.weight", DORA_ROPE_NONE},
    {"feed_forward.w3.weight", "mlp.up_proj.weight", DORA_ROPE_NONE},
    {"mlp.w1.weight", "mlp.gate_proj.weight", DORA_ROPE_NONE},
    {"mlp.w2.weight", "mlp.down_proj.weight", DORA_ROPE_NONE},
    {"mlp.w3.weight", "mlp.up_proj.weight", DORA_ROPE_NONE},
    {"attention_norm.weight", "input_layernorm.weight", DORA_ROPE_NONE},
    {"ffn_norm.weight", "post_attention_layernorm.weight", DORA_ROPE_NONE},
    {"sa_norm.scale", "input_layernorm.weight", DORA_ROPE_NONE},
    {"mlp_norm.scale", "post_attention_layernorm.weight", DORA_ROPE_NONE},
};

static const struct {
    const char *from, *to;
} top_parts[] = {
    {"tok_embeddings.weight", "model.embed_tokens.weight"},
    {"norm.weight", "model.norm.weight"},
    {"norm.scale", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

/* NAME = PREFIX + REST with REST one of the known names: the HF name of REST. */
static int map_rest(const char *rest, char *hf, size_t size, int *rope)
{
    for (size_t i = 0; i < sizeof top_parts / sizeof top_parts[0]; i++)
        if (strcmp(rest, top_parts[i].from) == 0)
            return (size_t)snprintf(hf, size, "%s", top_parts[i].to) < size;
    if (strncmp(rest, "layers.", 7) != 0)
        return 0;
    const char *num = rest + 7;
    size_t nd = strspn(num, "0123456789");
    if (nd == 0 || nd > 9 || num[nd] != '.')
        return 0;
    for (size_t i = 0; i < sizeof layer_parts / sizeof layer_parts[0]; i++)
        if (strcmp(num + nd + 1, layer_parts[i].from) == 0) {
            *rope = layer_parts[i].rope;
            return (size_t)snprintf(hf, size, "model.layers.%.*s.%s", (int)nd, num,
                                    layer_parts[i].to) < size;
        }
    return 0;
}

int dora_llama_to_hf(const char *name, char *out, size_t size, int *rope)
{
    *rope = DORA_ROPE_NONE;
    /* the known name starts at a component boundary: after the prefix */
    for (const char *p = name; p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
        char hf[512];
        if (!map_rest(p, hf, sizeof hf, rope))
            continue;
        size_t lp = (size_t)(p - name);
        return (size_t)snprintf(out, size, "%.*s%s", (int)lp, name, hf) < size;
    }
    return 0;
}

int64_t dora_rope_row(int64_t r, int64_t hd)
{
    const int64_t h = r / hd, rem = r % hd, half = hd / 2;
    return h * hd + 2 * (rem % half) + rem / half;
}
