/* heads.c - dM and dD per attention head: which modules' rows group by head
 * (the base's config.json), the per-row values the pass keeps for them, and
 * their means per (step, head); see analyze.h (the head_* fields). */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "dora/config.h"
#include "dora/notes.h"
#include "dora/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The heads of a module of kind KIND: q_proj by num_attention_heads, k_proj and
 * v_proj by num_key_value_heads (num_attention_heads when absent); 0 for
 * another kind. */
static int64_t kind_heads(const char *kind, int64_t nh, int64_t nkv)
{
    if (strcmp(kind, "q_proj") == 0)
        return nh;
    if (strcmp(kind, "k_proj") == 0 || strcmp(kind, "v_proj") == 0)
        return nkv;
    return 0;
}

/* The config.json keys of a head count and of the hidden size, as the
 * transformers config classes name them: num_attention_heads, else n_head
 * (GPT-2, GPT-J, BLOOM, Falcon: their attribute_map) or n_heads (MPT, OLMo);
 * hidden_size, else n_embd (GPT-2) or d_model (MPT, OLMo). */
static const char *const K_HEADS[] = {"num_attention_heads", "n_head", "n_heads", NULL};
static const char *const K_HIDDEN[] = {"hidden_size", "n_embd", "d_model", NULL};
static const char *const K_KV[] = {"num_key_value_heads", NULL};
static const char *const K_FALCON_KV[] = {"num_kv_heads", "n_head_kv", NULL};

/* The value of the keys KEYS name, the first there checked against every
 * other there: 1 and *V; 0 when none is there; 0 with *WHY (in BUF, of size
 * N) when two disagree (never a guess); -1 with ERR set when malformed. */
static int config_one(const dora_config *c, const char *const *keys, int64_t *v, char *buf,
                      size_t n, const char **why, dora_err *err)
{
    const char *first = NULL;
    for (size_t i = 0; keys[i]; i++) {
        int64_t x;
        int r = dora_config_int(c, keys[i], &x, err);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        if (!first) {
            first = keys[i];
            *v = x;
        } else if (x != *v) {
            snprintf(buf, n, "its config.json says %s %lld but %s %lld", first, (long long)*v,
                     keys[i], (long long)x);
            *why = buf;
            return 0;
        }
    }
    return first != NULL;
}

/* The key/value heads, NH when the config names none: by num_key_value_heads;
 * Falcon's by num_kv_heads (n_head_kv) with new_decoder_architecture or
 * without multi_query (true by default), else 1 (FalconAttention); MPT's by
 * attn_config.attn_type (multi-query 1, grouped-query attn_config.kv_n_heads,
 * as the fused split reads them). 1, or 0 with *WHY, or -1 with ERR. */
static int config_kv(const dora_config *c, int64_t nh, int64_t *nkv, char *buf, size_t n,
                     const char **why, dora_err *err)
{
    const char *mt = dora_config_model_type(c);
    int64_t nw = 0, mq = 1;
    int r;
    *nkv = nh;
    if (mt && strcmp(mt, "falcon") == 0) {
        if (dora_config_int(c, "new_decoder_architecture", &nw, err) < 0 ||
            dora_config_int(c, "multi_query", &mq, err) < 0)
            return -1;
        if (!nw && mq) {
            *nkv = 1;
            return 1;
        }
        r = config_one(c, K_FALCON_KV, nkv, buf, n, why, err);
        return r < 0 ? -1 : !*why;
    }
    if (mt && strcmp(mt, "mpt") == 0) {
        static const char *const k_mpt_kv[] = {"attn_config.kv_n_heads", NULL};
        const char *type = dora_config_str(c, "attn_config.attn_type");
        if (!type || strcmp(type, "multihead_attention") == 0)
            return 1;
        if (strcmp(type, "multiquery_attention") == 0) {
            *nkv = 1;
            return 1;
        }
        if (strcmp(type, "grouped_query_attention") == 0 &&
            (r = config_one(c, k_mpt_kv, nkv, buf, n, why, err)) != 0)
            return r;
        if (!*why) {
            snprintf(buf, n, "its config.json's attn_config.attn_type '%s' gives no key/value "
                             "heads", type);
            *why = buf;
        }
        return 0;
    }
    r = config_one(c, K_KV, nkv, buf, n, why, err);
    return r < 0 ? -1 : !*why;
}

/* The config's head counts and head_dim: 1 when all are known, 0 (with *WHY,
 * perhaps in BUF of size N) when not, -1 with ERR set when a value is
 * malformed. */
static int config_heads(const dora_config *c, int64_t *nh, int64_t *nkv, int64_t *hd,
                        char *buf, size_t n, const char **why, dora_err *err)
{
    int64_t h = 0;
    int r;
    *why = NULL;
    if (!c) {
        *why = "the base has no config.json";
        return 0;
    }
    if ((r = config_one(c, K_HEADS, nh, buf, n, why, err)) <= 0 || *nh <= 0) {
        if (r == 0 && !*why)
            *why = "its config.json has no num_attention_heads (nor n_head, n_heads)";
        else if (r > 0)
            *why = "its config.json has a head count that is not positive";
        return r < 0 ? -1 : 0;
    }
    if ((r = config_kv(c, *nh, nkv, buf, n, why, err)) <= 0)
        return r;
    if (*nkv <= 0)
        *nkv = *nh;
    if ((r = dora_config_int(c, "head_dim", hd, err)) < 0)
        return -1;
    if (r == 1 && *hd > 0)
        return 1;
    if ((r = config_one(c, K_HIDDEN, &h, buf, n, why, err)) < 0)
        return -1;
    if (*why)
        return 0;
    if (r == 0 || h <= 0 || h % *nh != 0) {
        *why = "its config.json has no head_dim, and no hidden_size (n_embd, d_model) that is "
               "a multiple of the heads";
        return 0;
    }
    *hd = h / *nh;
    return 1;
}

int an_heads_plan(dora_result *res, const dora_model *base, const module *mods, size_t L,
                  size_t S, job *jb, dora_err *err)
{
    dora_config *cfg = NULL;
    if (dora_config_open(&cfg, base, err) != 0)
        return -1;
    int64_t nh = 0, nkv = 0, hd = 0;
    const char *why = NULL;
    char whybuf[300];
    int known = config_heads(cfg, &nh, &nkv, &hd, whybuf, sizeof whybuf, &why, err);
    int rc = -1;
    size_t H = 0;
    if (known < 0)
        goto done;
    if (!(jb->head_rows = calloc(L + 1, sizeof *jb->head_rows)) ||
        !(res->head_module = calloc(L + 1, sizeof *res->head_module)) ||
        !(res->head_count = calloc(L + 1, sizeof *res->head_count)) ||
        !(res->head_offset = calloc(L + 2, sizeof *res->head_offset)))
        goto oom;
    size_t noted = 0;
    for (size_t l = 0; l < L; l++) {
        char *kind = dora_module_kind(res->modules[l]);
        if (!kind)
            goto oom;
        int64_t n = known == 1 ? kind_heads(kind, nh, nkv) : 0;
        int attn = kind_heads(kind, 1, 1) != 0;
        free(kind);
        if (!attn)
            continue;
        if (n == 0 || mods[l].rows != n * hd) {
            /* never a guess: one note per run for a config that says nothing, one per
             * module whose rows are not the heads it should have */
            if (n == 0 && noted++ == 0 &&
                dora_notes_add(&res->notes, &res->nnotes, 0,
                               "no per-head values: %s (num_attention_heads, "
                               "num_key_value_heads, head_dim settle it)",
                               why) != 0)
                goto oom;
            if (n > 0 &&
                dora_notes_add(&res->notes, &res->nnotes, 0,
                               "no per-head values for '%s': its %lld rows are not %lld heads "
                               "x head_dim %lld (config.json)",
                               res->modules[l], (long long)mods[l].rows, (long long)n,
                               (long long)hd) != 0)
                goto oom;
            continue;
        }
        jb->head_rows[l] = hd;
        res->head_module[H] = l;
        res->head_count[H] = n;
        res->head_offset[H + 1] = res->head_offset[H] + n;
        H++;
    }
    res->nhead_mods = H;
    res->head_dim = hd;
    for (size_t c = 0; c < jb->nchunks; c++) {
        chunk *ch = &jb->chunks[c];
        int64_t per = jb->head_rows[ch->module];
        if (!per)
            continue;
        ch->head0 = ch->row0 / per;
        ch->nheads = (ch->row1 - 1) / per - ch->head0 + 1;
        if (!(ch->head_sum = calloc(2 * (ch->s1 - ch->s0) * (size_t)ch->nheads,
                                    sizeof *ch->head_sum)))
            goto oom;
    }
    size_t NH = (size_t)res->head_offset[H];
    if (!(res->head_dm = calloc(S * NH + 1, sizeof *res->head_dm)) ||
        !(res->head_dd = calloc(S * NH + 1, sizeof *res->head_dd)))
        goto oom;
    rc = 0;
    goto done;
oom:
    rc = dora_errf(err, "out of memory for the per-head values of run '%s'", res->name);
done:
    dora_config_close(cfg);
    return rc;
}

void an_heads_reduce(dora_result *res, const job *jb, const int *bad, size_t S)
{
    const size_t H = res->nhead_mods, NH = H ? (size_t)res->head_offset[H] : 0;
    size_t K = 0, *kept = calloc(S + 1, sizeof *kept); /* step s's row among the kept */
    for (size_t s = 0; kept && s < S; s++)
        kept[s] = (bad && bad[s]) ? SIZE_MAX : K++;
    for (size_t c = 0; kept && c < jb->nchunks; c++) {
        const chunk *ch = &jb->chunks[c];
        if (!ch->head_sum)
            continue;
        size_t first = 0; /* the module's first column */
        for (size_t h = 0; h < H; h++)
            if (res->head_module[h] == ch->module)
                first = (size_t)res->head_offset[h];
        const size_t n = (size_t)ch->nheads;
        for (size_t s = ch->s0; s < ch->s1; s++) {
            if (kept[s] == SIZE_MAX)
                continue;
            const size_t i = s - ch->s0;
            for (size_t j = 0; j < n; j++) {
                size_t at = kept[s] * NH + first + (size_t)ch->head0 + j;
                res->head_dm[at] += ch->head_sum[2 * i * n + j];
                res->head_dd[at] += ch->head_sum[(2 * i + 1) * n + j];
            }
        }
    }
    free(kept);
    for (size_t h = 0; h < H; h++) {
        const double per = (double)jb->head_rows[res->head_module[h]];
        for (size_t k = 0; k < K; k++)
            for (int64_t j = res->head_offset[h]; j < res->head_offset[h + 1]; j++) {
                res->head_dm[k * NH + (size_t)j] /= per;
                res->head_dd[k * NH + (size_t)j] /= per;
            }
    }
}

void an_heads_free(job *jb)
{
    for (size_t c = 0; jb->chunks && c < jb->nchunks; c++) {
        free(jb->chunks[c].head_sum);
        jb->chunks[c].head_sum = NULL;
    }
    free(jb->head_rows);
    jb->head_rows = NULL;
}
