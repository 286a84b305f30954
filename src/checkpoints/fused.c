/* fused.c - the parts of fused projections; see include/dora/fused.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/fused.h"
#include "core/util.h"

#include <stdio.h>
#include <string.h>

/* The first of KEYS (NULL-terminated) config.json has: 1 and *V; 0 when none
 * is there and DEF >= 0 (then *V = DEF); else -1 naming the first key. */
static int need(const dora_config *c, const char *const *keys, int64_t def, const char *name,
                int64_t *v, dora_err *err)
{
    for (size_t i = 0; keys[i]; i++) {
        int r = dora_config_int(c, keys[i], v, err);
        if (r != 0)
            return r < 0 ? -1 : (*v > 0 ? 1 : dora_errf(err, "'%s': '%s' is 0",
                                                        dora_config_path(c), keys[i]));
    }
    if (def >= 0) {
        *v = def;
        return 0;
    }
    return dora_errf(err, "'%s' lacks '%s', which splitting the fused '%s' needs (--no-split "
                          "analyses fused weights whole)",
                     dora_config_path(c), keys[0], name);
}

/* A yes/no setting: *V = 0 or 1, DEF when absent. */
static int flag(const dora_config *c, const char *key, int64_t def, int64_t *v, dora_err *err)
{
    int r = dora_config_int(c, key, v, err);
    if (r == 0)
        *v = def;
    return r < 0 ? -1 : 0;
}

static void qkv(dora_fused *f, const char *layout, int64_t groups, int64_t q, int64_t k,
                int64_t v)
{
    *f = (dora_fused){3, {"q", "k", "v"}, groups, {q, k, v}, layout};
}

/* hd = H / nh, which must divide. */
static int head_dim(const dora_config *c, const char *name, int64_t h, int64_t nh, int64_t *hd,
                    dora_err *err)
{
    if (h % nh != 0)
        return dora_errf(err, "'%s': hidden size %lld is not a multiple of %lld heads, so '%s' "
                              "cannot be split (--no-split analyses it whole)",
                         dora_config_path(c), (long long)h, (long long)nh, name);
    *hd = h / nh;
    return 0;
}

static const char *const K_HEADS[] = {"num_attention_heads", "n_head", NULL};
static const char *const K_HIDDEN[] = {"hidden_size", "n_embd", "d_model", NULL};

static int falcon(const dora_config *c, const char *name, dora_fused *f, dora_err *err)
{
    static const char *const k_kv[] = {"num_kv_heads", "n_head_kv", NULL};
    int64_t nh, h, hd = 0, nkv, nw, mq;
    if (need(c, K_HEADS, -1, name, &nh, err) < 0 || need(c, K_HIDDEN, -1, name, &h, err) < 0 ||
        head_dim(c, name, h, nh, &hd, err) != 0 || need(c, k_kv, nh, name, &nkv, err) < 0 ||
        flag(c, "new_decoder_architecture", 0, &nw, err) != 0 ||
        flag(c, "multi_query", 1, &mq, err) != 0)
        return -1;
    if (nw) {
        if (nh % nkv != 0)
            return dora_errf(err, "'%s': %lld heads are not a multiple of %lld kv heads ('%s')",
                             dora_config_path(c), (long long)nh, (long long)nkv, name);
        qkv(f, "per kv group", nkv, nh / nkv * hd, hd, hd);
    } else if (mq) {
        qkv(f, "multi-query, contiguous", 1, nh * hd, hd, hd);
    } else {
        qkv(f, "per head", nh, hd, hd, hd);
    }
    return 1;
}

static int mpt(const dora_config *c, const char *name, dora_fused *f, dora_err *err)
{
    static const char *const k_heads[] = {"n_heads", NULL};
    static const char *const k_kv[] = {"attn_config.kv_n_heads", NULL};
    int64_t nh, h, hd = 0, kv = 0;
    if (need(c, k_heads, -1, name, &nh, err) < 0 || need(c, K_HIDDEN, -1, name, &h, err) < 0 ||
        head_dim(c, name, h, nh, &hd, err) != 0)
        return -1;
    const char *type = dora_config_str(c, "attn_config.attn_type");
    if (!type || strcmp(type, "multihead_attention") == 0)
        kv = nh;
    else if (strcmp(type, "multiquery_attention") == 0)
        kv = 1;
    else if (strcmp(type, "grouped_query_attention") == 0 &&
             need(c, k_kv, -1, name, &kv, err) < 0)
        return -1;
    if (kv == 0)
        return dora_errf(err, "'%s': attn_config.attn_type '%s' is not known, so '%s' cannot be "
                              "split (--no-split analyses it whole)",
                         dora_config_path(c), type, name);
    qkv(f, "contiguous", 1, h, kv * hd, kv * hd);
    return 1;
}

static int phi3(const dora_config *c, const char *name, dora_fused *f, dora_err *err)
{
    static const char *const k_kv[] = {"num_key_value_heads", NULL};
    static const char *const k_hd[] = {"head_dim", NULL};
    static const char *const k_inter[] = {"intermediate_size", NULL};
    int64_t nh, h, hd = 0, nkv, inter;
    if (util_has_suffix(name, ".gate_up_proj.weight")) {
        if (need(c, k_inter, -1, name, &inter, err) < 0)
            return -1;
        *f = (dora_fused){2, {"gate", "up", NULL}, 1, {inter, inter, 0}, "contiguous"};
        return 1;
    }
    if (need(c, K_HEADS, -1, name, &nh, err) < 0 || need(c, K_HIDDEN, -1, name, &h, err) < 0 ||
        need(c, k_kv, nh, name, &nkv, err) < 0)
        return -1;
    int r = need(c, k_hd, 0, name, &hd, err);
    if (r < 0 || (r == 0 && head_dim(c, name, h, nh, &hd, err) != 0))
        return -1;
    qkv(f, "contiguous", 1, nh * hd, nkv * hd, nkv * hd);
    return 1;
}

/* Megatron-Core / NeMo (any model_type; its config names): linear_qkv per
 * query group [q x heads/groups, k, v], kv_channels rows each (hidden /
 * heads by default); linear_fc1 of a gated MLP (swiglu) gate | up of
 * ffn_hidden_size each, told from an ungated one by gated_linear_unit or else
 * by its rows (a config with neither key is no Megatron config: not split). */
static int megatron(const dora_config *c, const char *name, int64_t rows, dora_fused *f,
                    dora_err *err)
{
    static const char *const k_heads[] = {"num_attention_heads", NULL};
    static const char *const k_groups[] = {"num_query_groups", NULL};
    static const char *const k_kvc[] = {"kv_channels", NULL};
    static const char *const k_ffn[] = {"ffn_hidden_size", NULL};
    int64_t nh, ng, h, hd = 0, gqa, ffn, glu;
    if (util_has_suffix(name, ".linear_fc1.weight")) {
        if (flag(c, "gated_linear_unit", -1, &glu, err) != 0)
            return -1;
        int64_t any;
        if (glu == 0 || (glu < 0 && dora_config_int(c, "ffn_hidden_size", &any, err) == 0))
            return 0; /* not gated, or not Megatron's config: one projection */
        if (need(c, k_ffn, -1, name, &ffn, err) < 0)
            return -1;
        if (rows == ffn && glu < 0)
            return 0; /* not gated: one projection */
        *f = (dora_fused){2, {"gate", "up", NULL}, 1, {ffn, ffn, 0}, "gate | up"};
        return 1;
    }
    if (need(c, k_heads, -1, name, &nh, err) < 0 ||
        flag(c, "group_query_attention", 1, &gqa, err) != 0 ||
        need(c, k_groups, nh, name, &ng, err) < 0)
        return -1;
    int r = need(c, k_kvc, 0, name, &hd, err);
    if (r < 0 || (r == 0 && (need(c, K_HIDDEN, -1, name, &h, err) < 0 ||
                             head_dim(c, name, h, nh, &hd, err) != 0)))
        return -1;
    if (!gqa)
        ng = nh;
    if (nh % ng != 0)
        return dora_errf(err, "'%s': %lld heads are not a multiple of %lld query groups ('%s')",
                         dora_config_path(c), (long long)nh, (long long)ng, name);
    qkv(f, "per query group", ng, nh / ng * hd, hd, hd);
    return 1;
}

/* The layout by architecture, for a NAME that has the architecture's suffix. */
static int layout_of(const dora_config *c, const char *mt, const char *name, dora_fused *f,
                     dora_err *err)
{
    int64_t nh, h, hd = 0, kvc;
    if (strcmp(mt, "phi3") == 0)
        return phi3(c, name, f, err);
    if (strcmp(mt, "falcon") == 0)
        return falcon(c, name, f, err);
    if (strcmp(mt, "mpt") == 0)
        return mpt(c, name, f, err);
    if (strcmp(mt, "gpt_neox") == 0) {
        if (need(c, K_HEADS, -1, name, &nh, err) < 0 ||
            need(c, K_HIDDEN, -1, name, &h, err) < 0 || head_dim(c, name, h, nh, &hd, err) != 0)
            return -1;
        qkv(f, "per head", nh, hd, hd, hd);
        return 1;
    }
    if (strcmp(mt, "qwen") == 0) {
        static const char *const k_kvc[] = {"kv_channels", NULL};
        if (need(c, K_HEADS, -1, name, &nh, err) < 0 || need(c, k_kvc, -1, name, &kvc, err) < 0)
            return -1;
        qkv(f, "contiguous", 1, nh * kvc, nh * kvc, nh * kvc);
        return 1;
    }
    /* gpt2, baichuan: three equal contiguous blocks of the hidden size */
    if (need(c, K_HIDDEN, -1, name, &h, err) < 0)
        return -1;
    qkv(f, "contiguous", 1, h, h, h);
    return 1;
}

int dora_fused_layout(const dora_config *c, const char *name, int64_t rows, dora_fused *f,
                      dora_err *err)
{
    static const struct {
        const char *mt, *suffix;
    } fused[] = {
        {"phi3", ".qkv_proj.weight"},         {"phi3", ".gate_up_proj.weight"},
        {"gpt_neox", ".query_key_value.weight"}, {"falcon", ".query_key_value.weight"},
        {"gpt2", ".attn.c_attn.weight"},      {"qwen", ".attn.c_attn.weight"},
        {"mpt", ".attn.Wqkv.weight"},         {"baichuan", ".self_attn.W_pack.weight"},
    };
    const char *mt = dora_config_model_type(c);
    int mg = util_has_suffix(name, ".self_attention.linear_qkv.weight") ||
             util_has_suffix(name, ".mlp.linear_fc1.weight");
    if (mg && !c && util_has_suffix(name, ".linear_qkv.weight"))
        return dora_errf(err, "tensor '%s' is Megatron's fused q, k, v; splitting it needs "
                              "num_attention_heads (and num_query_groups, kv_channels) from "
                              "a config.json beside the base (--no-split analyses it whole)",
                         name);
    size_t i = 0, n = sizeof fused / sizeof fused[0];
    while (!mg && mt && i < n &&
           !(strcmp(mt, fused[i].mt) == 0 && util_has_suffix(name, fused[i].suffix)))
        i++;
    if (!c || (!mg && (!mt || i == n)))
        return 0;
    int r = mg ? megatron(c, name, rows, f, err) : layout_of(c, mt, name, f, err);
    if (r <= 0)
        return r;
    int64_t per = 0;
    for (int p = 0; p < f->nparts; p++)
        per += f->seg[p];
    if (per <= 0 || f->groups <= 0 || per > INT64_MAX / f->groups || per * f->groups != rows)
        return dora_errf(err, "tensor '%s' has %lld rows, but '%s' (model_type %s) makes "
                              "%lld groups of %lld + %lld + %lld rows; --no-split analyses it "
                              "whole",
                         name, (long long)rows, dora_config_path(c), mt ? mt : "none",
                         (long long)f->groups, (long long)f->seg[0], (long long)f->seg[1],
                         (long long)f->seg[2]);
    return 1;
}

int64_t dora_fused_rows(const dora_fused *f, int p)
{
    return f->groups * f->seg[p];
}

int64_t dora_fused_row(const dora_fused *f, int p, int64_t i)
{
    int64_t per = 0, off = 0;
    for (int q = 0; q < f->nparts; q++) {
        if (q == p)
            off = per;
        per += f->seg[q];
    }
    return (i / f->seg[p]) * per + off + i % f->seg[p];
}

const char *dora_fused_part_kind(const char *module)
{
    static const struct {
        const char *suffix, *kind;
    } kinds[] = {{".weight[q]", "q_proj"},       {".weight[k]", "k_proj"},
                 {".weight[v]", "v_proj"},       {".weight[gate]", "gate_proj"},
                 {".weight[up]", "up_proj"}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (util_has_suffix(module, kinds[i].suffix))
            return kinds[i].kind;
    return NULL;
}
