/* adapter.c - reading LoRA/DoRA adapter checkpoints; see include/dora/adapter.h. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "dora/tensor.h"
#include "core/util.h"

#include <jansson.h>
#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (16u << 20)
#define PEFT_PREFIX "base_model.model."

double dora_matrix_get(const dora_matrix *m, int64_t i, int64_t j)
{
    const dora_tensor *t = m->t;
    int64_t tcols = dora_tensor_cols(t);
    int64_t idx = m->transposed ? j * tcols + i : i * tcols + j;
    return dora_elem_to_f64(t->data + (size_t)idx * dora_dtype_size(t->dtype), t->dtype);
}

dora_matrix adapter_matrix(const dora_tensor *t, int transposed)
{
    dora_matrix m = {t, transposed, 0, 0};
    int64_t r = dora_tensor_rows(t), c = dora_tensor_cols(t);
    m.rows = transposed ? c : r;
    m.cols = transposed ? r : c;
    return m;
}

static const struct {
    const char *suffix;
    role r;
} suffixes[] = {
    {".lora_A.weight", ROLE_A},
    {".lora_A.default.weight", ROLE_A},
    {".lora_B.weight", ROLE_B},
    {".lora_B.default.weight", ROLE_B},
    {".lora_B.bias", ROLE_LORA_BIAS},
    {".lora_B.default.bias", ROLE_LORA_BIAS},
    {".lora_embedding_A", ROLE_EMB_A},
    {".lora_embedding_A.default", ROLE_EMB_A},
    {".lora_embedding_B", ROLE_EMB_B},
    {".lora_embedding_B.default", ROLE_EMB_B},
    {".lora_magnitude_vector", ROLE_MAG},
    {".lora_magnitude_vector.weight", ROLE_MAG},
    {".lora_magnitude_vector.default", ROLE_MAG},
    {".lora_magnitude_vector.default.weight", ROLE_MAG},
    {".weight_m_wdecomp.weight", ROLE_MAG}, /* the DoRA paper's own code */
    {".lora_a", ROLE_MLX_A},
    {".lora_b", ROLE_MLX_B},
    /* PEFT's other families (adapter_families.c); AdaLoRA's factors are
     * parameters, not Linear layers: no ".weight" */
    {".lora_A", ROLE_A},
    {".lora_A.default", ROLE_A},
    {".lora_B", ROLE_B},
    {".lora_B.default", ROLE_B},
    {".lora_E", ROLE_E},
    {".lora_E.default", ROLE_E},
    {".ia3_l", ROLE_IA3},
    {".ia3_l.default", ROLE_IA3},
    {".vera_lambda_b", ROLE_VERA_B},
    {".vera_lambda_b.default", ROLE_VERA_B},
    {".vera_lambda_d", ROLE_VERA_D},
    {".vera_lambda_d.default", ROLE_VERA_D},
    {".hada_w1_a", ROLE_H1A},
    {".hada_w1_b", ROLE_H1B},
    {".hada_w2_a", ROLE_H2A},
    {".hada_w2_b", ROLE_H2B},
    {".hada_t1", ROLE_HT},
    {".hada_t2", ROLE_HT},
    {".lokr_w1", ROLE_K1},
    {".lokr_w1_a", ROLE_K1A},
    {".lokr_w1_b", ROLE_K1B},
    {".lokr_w2", ROLE_K2},
    {".lokr_w2_a", ROLE_K2A},
    {".lokr_w2_b", ROLE_K2B},
    {".lokr_t2", ROLE_KT},
};

/* The keys of a rank_pattern or alpha_pattern, each compiled on first use and
 * then kept for the adapter's other modules (one compile per key and adapter,
 * not per module). */
typedef struct matcher {
    const dora_pattern *pats;
    size_t n;
    pcre2_code **rx;        /* [n], NULL until needed */
    pcre2_match_data *md;   /* shared by the keys: only whether they match counts */
} matcher;

static int matcher_init(matcher *mt, const dora_pattern *pats, size_t n, dora_err *err)
{
    mt->pats = pats;
    mt->n = n;
    mt->rx = calloc(n ? n : 1, sizeof *mt->rx);
    mt->md = pcre2_match_data_create(1, NULL);
    if (!mt->rx || !mt->md)
        return dora_errf(err, "out of memory");
    return 0;
}

static void matcher_release(matcher *mt)
{
    for (size_t i = 0; mt->rx && i < mt->n; i++)
        pcre2_code_free(mt->rx[i]);
    free(mt->rx);
    pcre2_match_data_free(mt->md);
    memset(mt, 0, sizeof *mt);
}

/* PEFT's rule (peft.utils.other.get_pattern_key): the first key K, in the
 * config's order, for which Python's re.match(r"(.*\.)?(K)$", module)
 * succeeds. The keys are Python regular expressions (\d, (?:...) and the
 * like), so they are matched with PCRE2, whose syntax is Python's for
 * everything such keys use, not with POSIX regex. Returns 1 and the key's
 * index in *hit, 0 if no key matches, -1 on error. A key is compiled when a
 * module first reaches it: as with Python's re, an invalid key that no module
 * reaches is not an error. */
static int pattern_lookup(matcher *mt, const char *module, size_t *hit, dora_err *err,
                          const char *config)
{
    for (size_t i = 0; i < mt->n; i++) {
        const char *key = mt->pats[i].pattern;
        if (!mt->rx[i]) {
            size_t len = strlen(key) + 16;
            char *re = malloc(len);
            if (!re)
                return dora_errf(err, "out of memory");
            snprintf(re, len, "^(.*\\.)?(%s)$", key);
            int code;
            PCRE2_SIZE off;
            mt->rx[i] = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code,
                                      &off, NULL);
            free(re);
            if (!mt->rx[i]) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(code, msg, sizeof msg);
                return dora_errf(err, "'%s': pattern '%s' is not a valid regular expression: %s",
                                 config, key, (const char *)msg);
            }
            /* every key is tried against every module it reaches: machine code
             * where PCRE2 has a JIT, else (the call fails) the interpreter */
            (void)pcre2_jit_compile(mt->rx[i], PCRE2_JIT_COMPLETE);
        }
        int rc = pcre2_match(mt->rx[i], (PCRE2_SPTR)module, PCRE2_ZERO_TERMINATED, 0, 0, mt->md,
                             NULL);
        if (rc >= 0) { /* 0: a match with more groups than md holds */
            *hit = i;
            return 1;
        }
        if (rc != PCRE2_ERROR_NOMATCH)
            return dora_errf(err, "'%s': pattern '%s' could not be matched against '%s' (PCRE2 "
                                  "error %d)",
                             config, key, module, rc);
    }
    return 0;
}

int adapter_read_patterns(json_t *obj, const char *field, int integer, dora_pattern **out,
                          size_t *n, const char *config, dora_err *err)
{
    *out = NULL;
    *n = 0;
    if (!obj || json_is_null(obj))
        return 0;
    if (!json_is_object(obj))
        return dora_errf(err, "'%s': '%s' is not an object", config, field);
    size_t cnt = json_object_size(obj);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    if (!*out)
        return dora_errf(err, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (integer ? !json_is_integer(v) || json_integer_value(v) < 1
                    : !json_is_number(v) || !isfinite(json_number_value(v)))
            return dora_errf(err, "'%s': '%s' entry '%s' is not a %s", config, field, key,
                             integer ? "positive integer" : "finite number");
        (*out)[*n].pattern = strdup(key);
        (*out)[*n].value = json_number_value(v);
        (*out)[*n].rank = integer ? (int64_t)json_integer_value(v) : 0;
        if (!(*out)[*n].pattern)
            return dora_errf(err, "out of memory");
        (*n)++;
    }
    return 0;
}

int adapter_get_bool(json_t *root, const char *field, int *out, const char *config,
                     dora_err *err)
{
    json_t *v = json_object_get(root, field);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return dora_errf(err, "'%s': '%s' is not true or false", config, field);
    *out = json_is_true(v);
    return 0;
}

static int read_config(dora_adapter *a, json_t **root_out, dora_err *err)
{
    char *text;
    size_t len;
    if (util_read_file(a->config_path, CONFIG_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return dora_errf(err, "'%s': not valid JSON: %s (line %d, column %d)", a->config_path,
                         jerr.text, jerr.line, jerr.column);
    *root_out = root;
    if (!json_is_object(root))
        return dora_errf(err, "'%s': not a JSON object", a->config_path);
    const char *cfg = a->config_path;

    json_t *mlx = json_object_get(root, "lora_parameters");
    if (mlx) {
        a->format = "mlx";
        json_t *rank = json_object_get(mlx, "rank"), *scale = json_object_get(mlx, "scale");
        if (!json_is_integer(rank) || json_integer_value(rank) < 1)
            return dora_errf(err, "'%s': 'lora_parameters.rank' is not a positive integer", cfg);
        if (!json_is_number(scale) || !isfinite(json_number_value(scale)))
            return dora_errf(err, "'%s': 'lora_parameters.scale' is not a finite number", cfg);
        a->r = json_integer_value(rank);
        a->lora_alpha = json_number_value(scale) * (double)a->r; /* so that alpha / r = scale */
        a->peft_type = strdup("MLX");
        a->targets = strdup("(all lora_a/lora_b pairs in the file)");
        return a->peft_type && a->targets ? 0 : dora_errf(err, "out of memory");
    }

    json_t *pt = json_object_get(root, "peft_type");
    if (!json_is_string(pt))
        return dora_errf(err, "'%s': 'peft_type' is missing or not a string", cfg);
    if (!(a->peft_type = strdup(json_string_value(pt))))
        return dora_errf(err, "out of memory");
    if (strcmp(a->peft_type, "LORA") == 0)
        a->format = "peft";
    else if (strcmp(a->peft_type, "DORA") == 0)
        a->format = "dora-paper";
    else
        return fam_read_config(a, root, err);
    json_t *r = json_object_get(root, "r"), *alpha = json_object_get(root, "lora_alpha");
    if (!json_is_integer(r) || json_integer_value(r) < 1)
        return dora_errf(err, "'%s': 'r' is missing or not a positive integer", cfg);
    if (!json_is_number(alpha) || !isfinite(json_number_value(alpha)))
        return dora_errf(err, "'%s': 'lora_alpha' is missing or not a finite number", cfg);
    a->r = json_integer_value(r);
    a->lora_alpha = json_number_value(alpha);
    if (adapter_get_bool(root, "use_rslora", &a->use_rslora, cfg, err) != 0 ||
        adapter_get_bool(root, "use_dora", &a->use_dora, cfg, err) != 0 ||
        adapter_get_bool(root, "fan_in_fan_out", &a->fan_in_fan_out, cfg, err) != 0)
        return -1;
    if (adapter_read_init(a, root, err) != 0)
        return -1;
    if (adapter_read_patterns(json_object_get(root, "rank_pattern"), "rank_pattern", 1, &a->rank_pattern,
                      &a->nrank_pattern, cfg, err) != 0 ||
        adapter_read_patterns(json_object_get(root, "alpha_pattern"), "alpha_pattern", 0,
                      &a->alpha_pattern, &a->nalpha_pattern, cfg, err) != 0)
        return -1;
    return adapter_read_common(a, root, err);
}

int adapter_read_common(dora_adapter *a, json_t *root, dora_err *err)
{
    json_t *bm = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(bm) && !(a->base_model = strdup(json_string_value(bm))))
        return dora_errf(err, "out of memory");
    json_t *tm = json_object_get(root, "target_modules");
    a->targets = tm ? json_dumps(tm, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
    return a->targets ? 0 : dora_errf(err, "out of memory");
}

static role classify(const char *name, size_t *stem_len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t m = strlen(suffixes[i].suffix);
        if (n > m && strcmp(name + n - m, suffixes[i].suffix) == 0) {
            *stem_len = n - m;
            return suffixes[i].r;
        }
    }
    *stem_len = n;
    return ROLE_SAVED;
}

/* Module name: without PEFT's prefix and without the modules_to_save wrapper. */
static char *module_name(const char *name, size_t len)
{
    if (len >= strlen(PEFT_PREFIX) && strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)) == 0) {
        name += strlen(PEFT_PREFIX);
        len -= strlen(PEFT_PREFIX);
    }
    char *s = strndup(name, len);
    if (!s)
        return NULL;
    static const char wrap[] = "modules_to_save.default.";
    char *w = strstr(s, wrap);
    if (w)
        memmove(w, w + sizeof wrap - 1, strlen(w + sizeof wrap - 1) + 1);
    return s;
}

static int adapted_cmp(const void *pa, const void *pb)
{
    return strcmp(((const dora_adapted *)pa)->base_name, ((const dora_adapted *)pb)->base_name);
}

/* r and alpha of MODULE: the patterns, else the config's. r stays an integer
 * throughout: a double would round ranks beyond 2^53 and turn 2^63 - 1 into
 * an out-of-range conversion. R_FROM (LEN bytes) says where r comes from. */
static int module_r_alpha(const dora_adapter *a, const char *module, matcher *rank_mt,
                          matcher *alpha_mt, int64_t *r, double *alpha, char *r_from, size_t len,
                          dora_err *err)
{
    *r = a->r;
    *alpha = a->lora_alpha;
    snprintf(r_from, len, "%s", strcmp(a->format, "mlx") == 0 ? "'lora_parameters.rank'" : "'r'");
    size_t hit;
    int found = pattern_lookup(rank_mt, module, &hit, err, a->config_path);
    if (found < 0)
        return -1;
    if (found) {
        *r = rank_mt->pats[hit].rank;
        snprintf(r_from, len, "rank_pattern key '%.200s'", rank_mt->pats[hit].pattern);
    }
    if ((found = pattern_lookup(alpha_mt, module, &hit, err, a->config_path)) < 0)
        return -1;
    if (found)
        *alpha = alpha_mt->pats[hit].value;
    return 0;
}

int adapter_check_rank_scale(const dora_adapter *a, const char *module, const dora_adapted *m,
                             const char *r_from, dora_err *err)
{
    const char *cfg = a->config_path, *wf = a->weights->path;
    const int64_t r = m->r;
    /* The analysis forms the r x r Gram matrix R R^T for each module and
     * step; the factors hold r * (out + in) entries. A rank above
     * RANK_PER_DIM * (out + in) would make that matrix outgrow the factors by
     * more than RANK_PER_DIM (r = 8192 on a [2, 3] weight: 512 MiB from
     * 128 KiB). Ranks above both out and in are otherwise legal (PEFT's own
     * regression adapter lora_emb_conv1d has r = 8 on a [1, 5] conv). */
    const int64_t rank_max = m->L.rows > INT64_MAX / (4 * RANK_PER_DIM) ||
                                     m->R.cols > INT64_MAX / (4 * RANK_PER_DIM)
                                 ? INT64_MAX
                                 : RANK_PER_DIM * (m->L.rows + m->R.cols);
    if (r > rank_max)
        return dora_errf(err, "'%s': module '%s': r = %lld (%s) is absurd for an update of "
                              "[%lld, %lld] ('%s' in '%s'): at most %d x (out + in) = %lld",
                         cfg, module, (long long)r, r_from, (long long)m->L.rows,
                         (long long)m->R.cols, m->L.t->name, wf, RANK_PER_DIM,
                         (long long)rank_max);
    /* the analysis squares s (|s L R a|^2): a finite s whose square overflows
     * would surface as a non-finite row of lora_B, naming the wrong culprit */
    if (!isfinite(m->scale) || !isfinite(m->scale * m->scale)) {
        char how[160];
        if (strcmp(a->format, "mlx") == 0)
            snprintf(how, sizeof how, "lora_parameters.scale = %g", m->scale);
        else if (strcmp(a->method, "lora") != 0 && strcmp(a->method, "dora") != 0)
            snprintf(how, sizeof how, "of %s = %g", a->method, m->scale);
        else
            snprintf(how, sizeof how, "alpha / %s = %g / %s%lld%s = %g",
                     a->use_rslora ? "sqrt(r)" : "r", m->alpha, a->use_rslora ? "sqrt(" : "",
                     (long long)r, a->use_rslora ? ")" : "", m->scale);
        return dora_errf(err, "'%s': module '%s': the scale %s is too large: its square "
                              "overflows float64",
                         cfg, module, how);
    }
    return 0;
}

/* The LoRA factors of P: PEFT Linear / Conv, PEFT Embedding or MLX. */
static int lora_factors(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    const char *wf = a->weights->path;
    const dora_tensor *const *t = p->t;
    int lin = t[ROLE_A] || t[ROLE_B], emb = t[ROLE_EMB_A] || t[ROLE_EMB_B];
    const dora_tensor *ta = lin ? t[ROLE_A] : emb ? t[ROLE_EMB_A] : t[ROLE_MLX_A];
    const dora_tensor *tb = lin ? t[ROLE_B] : emb ? t[ROLE_EMB_B] : t[ROLE_MLX_B];
    if (!ta || !tb)
        return dora_errf(err, "'%s': module '%s' has %s but not %s", wf, p->module,
                         ta ? ta->name : tb->name, ta ? "its B factor" : "its A factor");
    if (!dora_dtype_is_analysable(ta->dtype) || !dora_dtype_is_analysable(tb->dtype))
        return dora_errf(err, "'%s': module '%s': LoRA factors must be F16, BF16, F32 or F64, not "
                              "%s / %s",
                         wf, p->module, dora_dtype_name(ta->dtype), dora_dtype_name(tb->dtype));
    if (ta->ndim < 2 || tb->ndim < 2)
        return dora_errf(err, "'%s': module '%s': LoRA factors must have rank >= 2", wf, p->module);
    m->kind = DORA_ADAPTED_LORA;
    if (lin) { /* A [r, in...], B [out, r(, 1, 1)] */
        m->layout = "linear";
        m->R = adapter_matrix(ta, 0);
        m->L = adapter_matrix(tb, 0);
        for (int d = 2; d < tb->ndim; d++)
            if (tb->shape[d] != 1)
                return dora_errf(err, "'%s': '%s': a conv lora_B must be 1x1", wf, tb->name);
    } else if (emb) { /* A [r, num], B [dim, r] */
        m->layout = "embedding";
        m->L = adapter_matrix(ta, 1);
        m->R = adapter_matrix(tb, 1);
        m->fan_in_fan_out = 0;
    } else { /* MLX: a [in, r], b [r, out] */
        m->layout = "mlx";
        m->R = adapter_matrix(ta, 1);
        m->L = adapter_matrix(tb, 1);
        m->fan_in_fan_out = 0;
    }
    return 0;
}

static int build_module(dora_adapter *a, const pending *p, dora_adapted *m, matcher *rank_mt,
                        matcher *alpha_mt, dora_err *err)
{
    const char *cfg = a->config_path, *wf = a->weights->path;
    const dora_tensor *const *t = p->t;
    size_t blen = strlen(p->module) + sizeof ".weight";
    if (!(m->base_name = malloc(blen)))
        return dora_errf(err, "out of memory");
    snprintf(m->base_name, blen, "%s.weight", p->module);
    m->fan_in_fan_out = a->fan_in_fan_out;
    m->magnitude = t[ROLE_MAG];
    if (t[ROLE_LORA_BIAS])
        return dora_errf(err, "'%s': module '%s' has a LoRA bias ('%s'), which this tool does not "
                              "merge",
                         wf, p->module, t[ROLE_LORA_BIAS]->name);
    int lin = t[ROLE_A] || t[ROLE_B], emb = t[ROLE_EMB_A] || t[ROLE_EMB_B],
        mlx = t[ROLE_MLX_A] || t[ROLE_MLX_B];
    const dora_tensor *fam = NULL; /* the first tensor of another family */
    for (int k = ROLE_E; k < ROLE_SAVED && !fam; k++)
        fam = t[k];
    if (lin + emb + mlx > 1)
        return dora_errf(err, "'%s': module '%s' mixes LoRA tensor kinds", wf, p->module);
    if (!lin && !emb && !mlx && !fam) {
        if (t[ROLE_MAG])
            return dora_errf(err, "'%s': module '%s' has a DoRA magnitude ('%s') but no lora_A / "
                                  "lora_B",
                             wf, p->module, t[ROLE_MAG]->name);
        m->kind = DORA_ADAPTED_SAVED;
        m->layout = "saved";
        m->saved = t[ROLE_SAVED];
        return 0;
    }
    int64_t r;
    double alpha;
    char r_from[256]; /* where r comes from, for the messages */
    if (module_r_alpha(a, p->module, rank_mt, alpha_mt, &r, &alpha, r_from, sizeof r_from,
                       err) != 0)
        return -1;
    const int is_lora = strcmp(a->method, "lora") == 0 || strcmp(a->method, "dora") == 0;
    if (!is_lora)
        return fam_build(a, p, m, r, alpha, r_from, err);
    if (fam)
        return dora_errf(err, "'%s': module '%s' has '%s', which is not a tensor of a %s adapter",
                         wf, p->module, fam->name, a->peft_type);
    if (lora_factors(a, p, m, err) != 0)
        return -1;
    m->r = r;
    m->alpha = alpha;
    if (m->L.cols != r || m->R.rows != r)
        return dora_errf(err, "'%s': module '%s': r = %lld (%s), but its factors '%s' and '%s' "
                              "in '%s' have rank %lld and %lld",
                         cfg, p->module, (long long)r, r_from, m->R.t->name, m->L.t->name, wf,
                         (long long)m->R.rows, (long long)m->L.cols);
    if (strcmp(a->format, "mlx") == 0)
        m->scale = a->lora_alpha / (double)a->r;
    else
        m->scale = a->use_rslora ? alpha / sqrt((double)r) : alpha / (double)r;
    if (adapter_check_rank_scale(a, p->module, m, r_from, err) != 0)
        return -1;
    if (m->magnitude) {
        const dora_tensor *g = m->magnitude;
        if (!dora_dtype_is_analysable(g->dtype) ||
            !(g->ndim == 1 || (g->ndim == 2 && g->shape[1] == 1)))
            return dora_errf(err, "'%s': DoRA magnitude '%s' must be a floating [out] or [out, 1] "
                                  "tensor",
                             wf, g->name);
        if ((int64_t)g->numel != m->L.rows)
            return dora_errf(err, "'%s': DoRA magnitude '%s' has %llu entries but lora_B has %lld "
                                  "rows",
                             wf, g->name, (unsigned long long)g->numel, (long long)m->L.rows);
    }
    return 0;
}

/* One tensor of the adapter file with the module it belongs to. */
typedef struct named {
    char *module;  /* owned */
    size_t tensor; /* index in by_name */
    role r;
} named;

static int named_cmp(const void *pa, const void *pb)
{
    const named *a = pa, *b = pb;
    int c = strcmp(a->module, b->module);
    return c ? c : (a->tensor > b->tensor) - (a->tensor < b->tensor);
}

static int pending_cmp(const void *pa, const void *pb)
{
    const pending *a = pa, *b = pb;
    return (a->first > b->first) - (a->first < b->first);
}

/* The modules of the adapter file: its tensors grouped by module with one
 * sort (O(n log n) in the tensor count), each module built and checked in the
 * order of its first tensor, then sorted by base name for dora_adapter_find. */
static int collect(dora_adapter *a, dora_err *err)
{
    const dora_model *w = a->weights;
    named *nm = calloc(w->ntensors ? w->ntensors : 1, sizeof *nm);
    pending *p = calloc(w->ntensors ? w->ntensors : 1, sizeof *p);
    size_t nn = 0, np = 0;
    matcher rank_mt = {0}, alpha_mt = {0};
    int rc = -1;
    if (!nm || !p) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < w->ntensors; i++) {
        const dora_tensor *t = w->by_name[i];
        size_t stem;
        if (fam_shared(a, t))
            continue; /* VeRA's shared projections: no module of their own */
        role r = classify(t->name, &stem);
        if (r == ROLE_SAVED && t->ndim < 2)
            continue; /* biases and norms of modules_to_save: 1-D, not analysed */
        char *mod = module_name(t->name, stem);
        if (!mod) {
            dora_errf(err, "out of memory");
            goto done;
        }
        if (r == ROLE_SAVED) {
            /* the replacement's module is its tensor name minus ".weight" */
            size_t ml = strlen(mod);
            if (ml > 7 && strcmp(mod + ml - 7, ".weight") == 0)
                mod[ml - 7] = '\0';
            else {
                dora_errf(err, "'%s': tensor '%s' is neither a LoRA factor nor a module weight",
                          w->path, t->name);
                free(mod);
                goto done;
            }
        }
        nm[nn++] = (named){mod, i, r};
    }
    qsort(nm, nn, sizeof *nm, named_cmp);
    for (size_t i = 0; i < nn; i++) {
        if (np == 0 || strcmp(nm[i].module, p[np - 1].module) != 0) {
            p[np].module = nm[i].module; /* the group's first entry: its tensor comes first */
            p[np].first = nm[i].tensor;
            nm[i].module = NULL;
            np++;
        }
        pending *q = &p[np - 1];
        const dora_tensor *t = w->by_name[nm[i].tensor];
        if (q->t[nm[i].r]) {
            dora_errf(err, "'%s': module '%s' has two tensors of the same role: '%s' and '%s'",
                      w->path, q->module, q->t[nm[i].r]->name, t->name);
            goto done;
        }
        q->t[nm[i].r] = t;
    }
    qsort(p, np, sizeof *p, pending_cmp);
    a->modules = calloc(np ? np : 1, sizeof *a->modules);
    if (!a->modules) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (matcher_init(&rank_mt, a->rank_pattern, a->nrank_pattern, err) != 0 ||
        matcher_init(&alpha_mt, a->alpha_pattern, a->nalpha_pattern, err) != 0)
        goto done;
    for (size_t k = 0; k < np; k++) {
        int r = build_module(a, &p[k], &a->modules[a->nmodules], &rank_mt, &alpha_mt, err);
        a->nmodules++; /* so that close frees base_name even on failure */
        if (r != 0)
            goto done;
        if (a->modules[k].magnitude)
            a->method = "dora";
    }
    if (a->nmodules == 0) {
        dora_errf(err, "'%s': no LoRA factors and no saved module weights", w->path);
        goto done;
    }
    qsort(a->modules, a->nmodules, sizeof *a->modules, adapted_cmp);
    rc = 0;
done:
    matcher_release(&rank_mt);
    matcher_release(&alpha_mt);
    for (size_t i = 0; nm && i < nn; i++)
        free(nm[i].module);
    free(nm);
    for (size_t k = 0; p && k < np; k++)
        free(p[k].module);
    free(p);
    return rc;
}

int dora_adapter_open(dora_adapter **out, const char *dir, dora_err *err)
{
    *out = NULL;
    dora_adapter *a = calloc(1, sizeof *a);
    json_t *root = NULL;
    char *wpath = NULL;
    if (!a || !(a->dir = strdup(dir)) || !(a->config_path = util_join(dir, "adapter_config.json"))) {
        dora_adapter_close(a);
        return dora_errf(err, "out of memory");
    }
    a->method = "lora";
    if (util_is_file(dir)) { /* a kohya / LyCORIS / OneTrainer file: no config */
        free(a->config_path);
        if (!(a->config_path = strdup(dir)) || kohya_open(a, dir, err) != 0) {
            if (!a->config_path)
                dora_errf(err, "out of memory");
            dora_adapter_close(a);
            return -1;
        }
        *out = a;
        return 0;
    }
    int rc = read_config(a, &root, err);
    if (rc == 0) {
        const char *wname = strcmp(a->format, "mlx") == 0 ? "adapters.safetensors"
                                                           : "adapter_model.safetensors";
        wpath = util_join(dir, wname);
        if (!wpath) {
            rc = dora_errf(err, "out of memory");
        } else if (!util_is_file(wpath)) {
            char *bin = util_join(dir, "adapter_model.bin"); /* torch.save, as PEFT < 0.7 */
            if (bin && util_is_file(bin))
                rc = dora_model_open(&a->weights, bin, err);
            else
                rc = dora_err_missing(err, "'%s': missing (the adapter's weights, beside '%s')",
                                      wpath, a->config_path);
            free(bin);
        } else {
            rc = dora_model_open(&a->weights, wpath, err);
        }
    }
    if (rc == 0 && a->use_dora)
        a->method = "dora";
    if (rc == 0 && strcmp(a->format, "dora-paper") == 0)
        a->method = "dora";
    if (rc == 0)
        rc = collect(a, err);
    free(wpath);
    json_decref(root);
    if (rc != 0) {
        dora_adapter_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

void dora_adapter_close(dora_adapter *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nmodules; i++) {
        free(a->modules[i].base_name);
        free(a->modules[i].key);
        for (size_t k = 0; k < a->modules[i].nowned; k++) {
            free((void *)a->modules[i].owned[k]->data);
            free(a->modules[i].owned[k]);
        }
    }
    free(a->modules);
    fam_release(a);
    for (size_t i = 0; i < a->nrank_pattern; i++)
        free(a->rank_pattern[i].pattern);
    for (size_t i = 0; i < a->nalpha_pattern; i++)
        free(a->alpha_pattern[i].pattern);
    free(a->rank_pattern);
    free(a->alpha_pattern);
    dora_model_close(a->weights);
    dora_adapter_close(a->initial_owned);
    free(a->peft_type);
    free(a->init_lora);
    free(a->base_model);
    free(a->targets);
    free(a->config_path);
    free(a->dir);
    free(a);
}

const char *dora_method_static(const char *m)
{
    static const char *const known[] = {"ft", "lora", "dora", "ia3", "adalora", "vera", "loha",
                                        "lokr", "glora", "oft"};
    for (size_t i = 0; m && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return NULL;
}

const dora_adapted *dora_adapter_find(const dora_adapter *a, const char *base_name)
{
    size_t lo = 0, hi = a->nmodules;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(base_name, a->modules[mid].base_name);
        if (c == 0)
            return &a->modules[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int dora_adapter_check(const dora_adapter *a, const dora_model *base, dora_err *err)
{
    if (a->kohya && kohya_resolve(a, base, err) != 0)
        return -1;
    for (size_t i = 0; i < a->nmodules; i++) {
        dora_adapted *m = &a->modules[i]; /* IA3 / VeRA factors are formed here */
        const dora_tensor *b = dora_model_find(base, m->base_name);
        const char *src = m->kind == DORA_ADAPTED_SAVED ? m->saved->name
                          : m->L.t                       ? m->L.t->name
                                                         : m->ia3 ? m->ia3->name : m->base_name;
        if (!b)
            return dora_errf(err, "'%s': '%s' adapts '%s', which the base model '%s' does not have",
                             a->weights->path, src, m->base_name, base->path);
        if (!dora_dtype_is_analysable(b->dtype) || b->ndim < 2)
            return dora_errf(err, "'%s': base tensor '%s' is %s of rank %d, not a floating weight "
                                  "of rank >= 2",
                             b->file, b->name, dora_dtype_name(b->dtype), b->ndim);
        char sb[256];
        dora_shape_str(b, sb, sizeof sb);
        if (m->kind == DORA_ADAPTED_SAVED) {
            int same = b->ndim == m->saved->ndim;
            for (int d = 0; same && d < b->ndim; d++)
                same = b->shape[d] == m->saved->shape[d];
            if (!same) {
                char ss[256];
                dora_shape_str(m->saved, ss, sizeof ss);
                return dora_errf(err, "'%s': tensor '%s' has shape %s, but %s in the base '%s'",
                                 a->weights->path, m->saved->name, ss, sb, b->file);
            }
            if (!dora_dtype_is_analysable(m->saved->dtype))
                return dora_errf(err, "'%s': tensor '%s' is %s, not a floating type",
                                 a->weights->path, m->saved->name,
                                 dora_dtype_name(m->saved->dtype));
            continue;
        }
        int64_t out, in;
        if (m->fan_in_fan_out) {
            if (b->ndim != 2)
                return dora_errf(err, "'%s': fan_in_fan_out needs a 2-D base weight, '%s' is %s",
                                 a->config_path, b->name, sb);
            out = b->shape[1];
            in = b->shape[0];
        } else {
            out = dora_tensor_rows(b);
            in = dora_tensor_cols(b);
        }
        if (fam_check(a, m, b, out, in, err) != 0 ||
            (a->init_lora && adapter_bind_init(a, m, b, out, in, err) != 0))
            return -1;
        if (m->L.rows != out || m->R.cols != in)
            return dora_errf(err, "'%s': module '%s': the update B @ A is [%lld, %lld] but the base "
                                  "weight is %s%s",
                             a->weights->path, m->base_name, (long long)m->L.rows,
                             (long long)m->R.cols, sb,
                             m->fan_in_fan_out ? " (stored [in, out]: fan_in_fan_out)" : "");
        if (m->dora_scale && kohya_dora(a, m, b, out, in, err) != 0)
            return -1;
    }
    return 0;
}
