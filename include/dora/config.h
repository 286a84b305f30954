/* config.h - what a model's config.json says about how its weights are stored.
 *
 * The config.json beside a model (in its folder) names the architecture
 * (model_type) and its sizes; the analysis reads two things from it:
 *  - GPT-2 and the other models built on transformers' Conv1D store their
 *    linear layers [in, out], the transpose of nn.Linear's [out, in]; their
 *    rows are input features, and the paper's rows (one magnitude per output
 *    feature, the axis PEFT's fan_in_fan_out path reads) are the columns;
 *  - fused projections (fused.h) are split by its head counts.
 */
#ifndef DORA_CONFIG_H
#define DORA_CONFIG_H

#include "dora/error.h"
#include "dora/model.h"

#include <jansson.h>

#include <stdint.h>

typedef struct dora_config dora_config;

/* The config.json beside model M's file into *OUT (NULL when there is none).
 * -1 with ERR set when it is there but unreadable or not a JSON object. */
/* The config.json in folder DIR, the same way: 0 with *OUT NULL when there is none. */
int dora_config_load(dora_config **out, const char *dir, dora_err *err);
int dora_config_open(dora_config **out, const dora_model *m, dora_err *err);
/* The whole document (an object), owned by C. */
json_t *dora_config_root(const dora_config *c);
void dora_config_close(dora_config *c);
/* The file's path and its model_type (NULL if it has none). C may be NULL. */
const char *dora_config_path(const dora_config *c);
const char *dora_config_model_type(const dora_config *c);
/* The integer (or boolean, as 0/1) under KEY, a dotted path of object keys
 * ("attn_config.kv_n_heads"): 1 and *V, 0 when absent or null, -1 with ERR
 * set when it is there but of another type or negative. C may be NULL. */
int dora_config_int(const dora_config *c, const char *key, int64_t *v, dora_err *err);
/* The string under KEY, or NULL. */
const char *dora_config_str(const dora_config *c, const char *key);

/* If C's model_type is a Conv1D architecture (gpt2, openai-gpt, imagegpt,
 * decision_transformer): that name (static). Else NULL. */
const char *dora_config_conv1d(const dora_config *c);
/* 1 if the tensor NAME is a Conv1D weight of such an architecture: its module
 * is c_attn, c_proj, c_fc or q_attn ("h.0.attn.c_attn.weight"). */
int dora_config_conv1d_name(const char *name);

#endif
