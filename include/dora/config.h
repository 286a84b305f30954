/* config.h - what a model's config.json says about how its weights are stored.
 *
 * GPT-2 and the other models built on transformers' Conv1D store their linear
 * layers [in, out], the transpose of nn.Linear's [out, in]. Their rows are
 * input features; the paper's rows (one magnitude per output feature, the axis
 * PEFT's fan_in_fan_out path reads) are the columns. The analysis reads such
 * weights transposed: by the architecture config.json names, or by the
 * --transpose expression.
 */
#ifndef DORA_CONFIG_H
#define DORA_CONFIG_H

#include "dora/error.h"
#include "dora/model.h"

/* The config.json beside model M's file (its folder), when there is one: if
 * its model_type is a Conv1D architecture (gpt2, openai-gpt, imagegpt,
 * decision_transformer), *MODEL_TYPE gets that name (static) and 1 is
 * returned; 0 when there is no config or another architecture; -1 with ERR
 * set when the file is there but not valid JSON. */
int dora_config_conv1d(const dora_model *m, const char **model_type, dora_err *err);

/* 1 if the tensor NAME is a Conv1D weight of such an architecture: its module
 * is c_attn, c_proj, c_fc or q_attn ("h.0.attn.c_attn.weight"). */
int dora_config_conv1d_name(const char *name);

#endif
