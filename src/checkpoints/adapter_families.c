/* adapter_families.c - PEFT's IA3, AdaLoRA, VeRA, LoHa and LoKr adapters,
 * each put in the low-rank form W = W0 + s L R of the analysis, as PEFT
 * merges them; see include/dora/adapter.h ("Families") and docs/adapters.md. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "dora/tensor.h"

#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dora_tensor *adapter_own(dora_adapted *m, const dora_tensor *from, int64_t rows, int64_t cols)
{
    if (m->nowned >= DORA_ADAPTED_MAX_OWNED || rows < 0 || cols < 0 ||
        (cols && (uint64_t)rows > SIZE_MAX / 8 / (uint64_t)cols))
        return NULL;
    dora_tensor *t = calloc(1, sizeof *t);
    size_t n = (size_t)rows * (size_t)cols;
    double *d = calloc(n ? n : 1, sizeof *d);
    if (!t || !d) {
        free(t);
        free(d);
        return NULL;
    }
    t->name = from->name;
    t->file = from->file;
    t->dtype = DORA_DT_F64;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->numel = n;
    t->nbytes = n * sizeof *d;
    t->data = (const unsigned char *)d;
    m->owned[m->nowned++] = t;
    return t;
}

/* ---------------------------------------------------------------- config */

/* IA3's feedforward_modules: a list of names (matched as PEFT matches
 * target_modules: the whole name or its last components) or one regex. */
static int read_ff(dora_adapter *a, json_t *root, dora_err *err)
{
    json_t *ff = json_object_get(root, "feedforward_modules");
    if (!ff || json_is_null(ff))
        return 0;
    if (json_is_string(ff))
        return (a->ff_regex = strdup(json_string_value(ff))) ? 0 : dora_errf(err, "out of memory");
    if (!json_is_array(ff))
        return dora_errf(err, "'%s': 'feedforward_modules' is not a list or a string",
                         a->config_path);
    a->ff = calloc(json_array_size(ff) + 1, sizeof *a->ff);
    if (!a->ff)
        return dora_errf(err, "out of memory");
    size_t i;
    json_t *v;
    json_array_foreach(ff, i, v)
    {
        if (!json_is_string(v))
            return dora_errf(err, "'%s': 'feedforward_modules' entry %zu is not a string",
                             a->config_path, i);
        if (!(a->ff[a->nff++] = strdup(json_string_value(v))))
            return dora_errf(err, "out of memory");
    }
    return 0;
}

/* AdaLoRA's rank_pattern after pruning: module -> list of booleans (kept
 * ranks of init_r). */
static int read_masks(dora_adapter *a, json_t *rp, dora_err *err)
{
    if (!rp || json_is_null(rp))
        return 0;
    if (!json_is_object(rp))
        return dora_errf(err, "'%s': 'rank_pattern' is not an object", a->config_path);
    a->masks = calloc(json_object_size(rp) + 1, sizeof *a->masks);
    if (!a->masks)
        return dora_errf(err, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(rp, key, v)
    {
        if (!json_is_array(v) || json_array_size(v) != (size_t)a->init_r)
            return dora_errf(err, "'%s': rank_pattern '%s' is not a list of init_r = %lld "
                                  "booleans (AdaLoRA's mask of kept ranks)",
                             a->config_path, key, (long long)a->init_r);
        int64_t kept = 0;
        size_t i;
        json_t *b;
        json_array_foreach(v, i, b)
        {
            if (!json_is_boolean(b))
                return dora_errf(err, "'%s': rank_pattern '%s' entry %zu is not true or false",
                                 a->config_path, key, i);
            kept += json_is_true(b);
        }
        dora_pattern *pt = &a->masks[a->nmask];
        if (!(pt->pattern = strdup(key)))
            return dora_errf(err, "out of memory");
        pt->rank = kept;
        pt->value = (double)kept;
        a->nmask++;
    }
    return 0;
}

static int positive_int(json_t *root, const char *field, int64_t *out, const char *cfg,
                        dora_err *err)
{
    json_t *v = json_object_get(root, field);
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return dora_errf(err, "'%s': '%s' is missing or not a positive integer", cfg, field);
    *out = json_integer_value(v);
    return 0;
}

static int finite_number(json_t *root, const char *field, double *out, const char *cfg,
                         dora_err *err)
{
    json_t *v = json_object_get(root, field);
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return dora_errf(err, "'%s': '%s' is missing or not a finite number", cfg, field);
    *out = json_number_value(v);
    return 0;
}

int fam_read_config(dora_adapter *a, json_t *root, dora_err *err)
{
    const char *cfg = a->config_path, *pt = a->peft_type;
    a->format = "peft";
    if (adapter_get_bool(root, "fan_in_fan_out", &a->fan_in_fan_out, cfg, err) != 0)
        return -1;
    if (strcmp(pt, "IA3") == 0) {
        a->method = "ia3";
        a->r = 1;
        if (read_ff(a, root, err) != 0)
            return -1;
    } else if (strcmp(pt, "ADALORA") == 0) {
        a->method = "adalora";
        if (positive_int(root, "init_r", &a->init_r, cfg, err) != 0 ||
            finite_number(root, "lora_alpha", &a->lora_alpha, cfg, err) != 0 ||
            read_masks(a, json_object_get(root, "rank_pattern"), err) != 0)
            return -1;
        a->r = a->init_r;
    } else if (strcmp(pt, "VERA") == 0) {
        a->method = "vera";
        if (positive_int(root, "r", &a->r, cfg, err) != 0)
            return -1;
    } else if (strcmp(pt, "LOHA") == 0 || strcmp(pt, "LOKR") == 0) {
        a->method = strcmp(pt, "LOHA") == 0 ? "loha" : "lokr";
        a->fan_in_fan_out = 0;
        if (positive_int(root, "r", &a->r, cfg, err) != 0 ||
            finite_number(root, "alpha", &a->lora_alpha, cfg, err) != 0 ||
            adapter_read_patterns(json_object_get(root, "rank_pattern"), "rank_pattern", 1,
                                  &a->rank_pattern, &a->nrank_pattern, cfg, err) != 0 ||
            adapter_read_patterns(json_object_get(root, "alpha_pattern"), "alpha_pattern", 0,
                                  &a->alpha_pattern, &a->nalpha_pattern, cfg, err) != 0)
            return -1;
    } else {
        return dora_errf(err, "'%s': peft_type '%s' is not supported (LORA, DORA, IA3, ADALORA, "
                              "VERA, LOHA and LOKR are)",
                         cfg, pt);
    }
    return adapter_read_common(a, root, err);
}

int fam_shared(dora_adapter *a, const dora_tensor *t)
{
    static const char *const names[] = {"base_model.vera_A", "base_model.vera_A.default",
                                        "base_model.vera_B", "base_model.vera_B.default"};
    for (int i = 0; i < 4; i++)
        if (strcmp(t->name, names[i]) == 0) {
            if (i < 2)
                a->vera_A = t;
            else
                a->vera_B = t;
            return 1;
        }
    return 0;
}

void fam_release(dora_adapter *a)
{
    for (size_t i = 0; i < a->nff; i++)
        free(a->ff[i]);
    free(a->ff);
    free(a->ff_regex);
    for (size_t i = 0; i < a->nmask; i++)
        free(a->masks[i].pattern);
    free(a->masks);
}

/* ---------------------------------------------------------------- modules */

/* MODULE is a feedforward module of the IA3 config: 1, 0, or -1 (bad regex). */
static int is_ff(const dora_adapter *a, const char *module, dora_err *err)
{
    size_t ml = strlen(module);
    for (size_t i = 0; i < a->nff; i++) {
        size_t kl = strlen(a->ff[i]);
        if (strcmp(module, a->ff[i]) == 0 ||
            (ml > kl && module[ml - kl - 1] == '.' && strcmp(module + ml - kl, a->ff[i]) == 0))
            return 1;
    }
    if (!a->ff_regex)
        return 0;
    int code;
    PCRE2_SIZE off;
    pcre2_code *rx = pcre2_compile((PCRE2_SPTR)a->ff_regex, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &code, &off, NULL);
    if (!rx)
        return dora_errf(err, "'%s': feedforward_modules '%s' is not a valid regular expression",
                         a->config_path, a->ff_regex);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? pcre2_match(rx, (PCRE2_SPTR)module, ml, 0, 0, md, NULL) : PCRE2_ERROR_NOMEMORY;
    pcre2_match_data_free(md);
    pcre2_code_free(rx);
    if (rc >= 0)
        return 1;
    if (rc != PCRE2_ERROR_NOMATCH)
        return dora_errf(err, "'%s': feedforward_modules could not be matched against '%s'",
                         a->config_path, module);
    return 0;
}

int fam_unexpected(const dora_adapter *a, const pending *p, unsigned long want, dora_err *err)
{
    for (int k = 0; k < ROLE_SAVED; k++)
        if (p->t[k] && !(want & (1ul << k)))
            return dora_errf(err, "'%s': module '%s': tensor '%s' is not part of a %s adapter",
                             a->weights->path, p->module, p->t[k]->name, a->peft_type);
    return 0;
}

int fam_need(const dora_adapter *a, const pending *p, unsigned long required, dora_err *err)
{
    for (int k = 0; k < ROLE_SAVED; k++) {
        if (!(required & (1ul << k)))
            continue;
        const dora_tensor *t = p->t[k];
        if (!t)
            return dora_errf(err, "'%s': module '%s' of the %s adapter lacks one of its tensors "
                                  "(role %d of the module's set)",
                             a->weights->path, p->module, a->peft_type, k);
        if (!dora_dtype_is_analysable(t->dtype))
            return dora_errf(err, "'%s': tensor '%s' is %s, not F16, BF16, F32 or F64",
                             a->weights->path, t->name, dora_dtype_name(t->dtype));
    }
    return 0;
}

int fam_shape_err(const dora_adapter *a, const dora_tensor *t, const char *want,
                     dora_err *err)
{
    char s[256];
    dora_shape_str(t, s, sizeof s);
    return dora_errf(err, "'%s': tensor '%s' has shape %s, %s", a->weights->path, t->name, s,
                     want);
}

static int build_ia3(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    if (fam_unexpected(a, p, FAM_BIT(ROLE_IA3), err) || fam_need(a, p, FAM_BIT(ROLE_IA3), err))
        return -1;
    const dora_tensor *l = p->t[ROLE_IA3];
    int ff = is_ff(a, p->module, err);
    if (ff < 0)
        return -1;
    /* Linear: [out, 1], or [1, in] for a feedforward module; Conv: (1, C, 1, 1) */
    int vec2 = l->ndim == 2 && (ff ? l->shape[0] == 1 : l->shape[1] == 1);
    int vec4 = l->ndim == 4 && l->shape[0] == 1 && l->shape[2] == 1 && l->shape[3] == 1;
    if (!vec2 && !vec4)
        return fam_shape_err(a, l,
                         ff ? "but feedforward_modules names its module: a feedforward ia3_l "
                              "is [1, in] (or (1, in, 1, 1) for a conv)"
                            : "but its module is not in feedforward_modules: ia3_l is [out, 1] "
                              "(or (1, out, 1, 1) for a conv)",
                         err);
    m->ia3 = l;
    m->ia3_ff = ff;
    m->layout = ff ? "ia3-ff" : "ia3";
    m->r = 1;
    m->alpha = 1;
    m->scale = 1;
    return 0;
}

/* AdaLoRA: rank from the mask of rank_pattern (keys name the module's
 * lora_E), else init_r. */
static int64_t adalora_rank(const dora_adapter *a, const char *module, int *masked)
{
    size_t ml = strlen(module);
    *masked = 0;
    for (size_t i = 0; i < a->nmask; i++) {
        const char *k = a->masks[i].pattern;
        const char *pre = "base_model.model.";
        if (strncmp(k, pre, strlen(pre)) == 0)
            k += strlen(pre);
        size_t kl = strlen(k);
        if (kl > ml && strncmp(k, module, ml) == 0 &&
            (strcmp(k + ml, ".lora_E") == 0 || strcmp(k + ml, ".lora_E.default") == 0)) {
            *masked = 1;
            return a->masks[i].rank;
        }
    }
    return a->init_r;
}

static int build_adalora(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    const unsigned long want = FAM_BIT(ROLE_A) | FAM_BIT(ROLE_B) | FAM_BIT(ROLE_E);
    if (fam_unexpected(a, p, want, err) || fam_need(a, p, want, err))
        return -1;
    const dora_tensor *A = p->t[ROLE_A], *B = p->t[ROLE_B], *E = p->t[ROLE_E];
    int masked;
    const int64_t r = adalora_rank(a, p->module, &masked);
    if (A->ndim != 2 || A->shape[0] != r) {
        char why[128];
        snprintf(why, sizeof why, "but %s %lld rank(s) of the module",
                 masked ? "rank_pattern keeps" : "init_r gives", (long long)r);
        return fam_shape_err(a, A, why, err);
    }
    if (B->ndim != 2 || B->shape[1] != r)
        return fam_shape_err(a, B, "but lora_A's rank differs", err);
    if ((int64_t)E->numel != r || E->ndim != 2 || E->shape[1] != 1)
        return fam_shape_err(a, E, "but lora_E must be [r, 1] with lora_A's r", err);
    const int64_t in = A->shape[1], out = B->shape[0], rk = r ? r : 1;
    dora_tensor *R = adapter_own(m, A, rk, in), *L = r ? NULL : adapter_own(m, B, out, 1);
    if (!R || (!r && !L))
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    double *rd = fam_own_data(R);
    for (int64_t k = 0; k < r; k++) /* R = lora_A * lora_E: row k scaled by E[k] */
        for (int64_t j = 0; j < in; j++)
            rd[k * in + j] = fam_at(A, k * in + j) * fam_at(E, k);
    m->layout = "adalora";
    m->R = adapter_matrix(R, 0);
    m->L = adapter_matrix(r ? B : L, 0); /* rank 0: a zero update of rank 1 */
    m->r = rk;
    /* PEFT: scaling = lora_alpha (or the rank when alpha <= 0), ranknum = init_r
     * kept through the pruning, a float32 parameter to which 1e-5 is added */
    double scaling = a->lora_alpha > 0 ? a->lora_alpha : (double)(masked ? r : a->init_r);
    float ranknum = (float)a->init_r + 1e-5f;
    m->alpha = scaling;
    m->scale = scaling / (double)ranknum;
    return 0;
}

static int build_vera(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r,
                      dora_err *err)
{
    const unsigned long want = FAM_BIT(ROLE_VERA_B) | FAM_BIT(ROLE_VERA_D);
    if (fam_unexpected(a, p, want, err) || fam_need(a, p, want, err))
        return -1;
    const dora_tensor *lb = p->t[ROLE_VERA_B], *ld = p->t[ROLE_VERA_D];
    if (!a->vera_A || !a->vera_B)
        return dora_errf(err, "'%s': the VeRA adapter has no shared projections "
                              "base_model.vera_A / base_model.vera_B (saved with "
                              "save_projection=True): PEFT regenerates them from "
                              "projection_prng_key with torch's generator, which this tool does "
                              "not reproduce",
                         a->weights->path);
    const dora_tensor *VA = a->vera_A, *VB = a->vera_B;
    if (!dora_dtype_is_analysable(VA->dtype) || !dora_dtype_is_analysable(VB->dtype) ||
        VA->ndim != 2 || VB->ndim != 2 || VA->shape[0] != r || VB->shape[1] != r)
        return fam_shape_err(a, VA->shape[0] != r || VA->ndim != 2 ? VA : VB,
                         "but VeRA's shared projections are floating [r, in_max] and "
                         "[out_max, r] with the config's r",
                         err);
    if (ld->ndim != 1 || ld->shape[0] != r)
        return fam_shape_err(a, ld, "but vera_lambda_d must be [r]", err);
    if (lb->ndim != 1 || lb->shape[0] > VB->shape[0])
        return fam_shape_err(a, lb, "but vera_lambda_b must be [out], out at most vera_B's rows", err);
    const int64_t out = lb->shape[0];
    dora_tensor *L = adapter_own(m, lb, out, r);
    if (!L)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    double *ldat = fam_own_data(L);
    for (int64_t i = 0; i < out; i++) /* L = diag(lambda_b) vera_B[:out] */
        for (int64_t k = 0; k < r; k++)
            ldat[i * r + k] = fam_at(lb, i) * fam_at(VB, i * r + k);
    m->layout = "vera";
    m->aux = ld;
    m->L = adapter_matrix(L, 0);
    m->r = r;
    m->alpha = 1;
    m->scale = 1;
    return 0; /* R = diag(lambda_d) vera_A[:, :in] needs in: fam_check */
}

int fam_fits(const dora_adapter *a, const char *module, int64_t rows, int64_t cols,
             dora_err *err)
{
    if (rows >= 0 && cols >= 0 && (cols == 0 || rows <= FAM_MAX_ENTRIES / cols))
        return 0;
    return dora_errf(err, "'%s': module '%s': its factors would be [%lld, %lld], more than %lld "
                          "entries: not an adapter this tool forms",
                     a->weights->path, module, (long long)rows, (long long)cols,
                     (long long)FAM_MAX_ENTRIES);
}

int fam_build(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r, double alpha,
              const char *r_from, dora_err *err)
{
    m->kind = DORA_ADAPTED_LORA;
    if (p->t[ROLE_MAG])
        return dora_errf(err, "'%s': module '%s': a DoRA magnitude ('%s') in a %s adapter is not "
                              "supported",
                         a->weights->path, p->module, p->t[ROLE_MAG]->name, a->peft_type);
    int rc;
    const char *meth = a->method;
    if (strcmp(meth, "ia3") == 0)
        return build_ia3(a, p, m, err); /* factors: fam_check */
    if (strcmp(meth, "vera") == 0)
        return build_vera(a, p, m, r, err);
    if (strcmp(meth, "adalora") == 0) {
        rc = build_adalora(a, p, m, err);
    } else {
        m->alpha = alpha;
        m->scale = alpha / (double)r;
        rc = strcmp(meth, "loha") == 0 ? fam_build_loha(a, p, m, r, err)
                                        : fam_build_lokr(a, p, m, err);
    }
    return rc != 0 ? -1 : adapter_check_rank_scale(a, p->module, m, r_from, err);
}

/* The squared norms of the [out, in] rows of base tensor B into N2[out]. */
static int base_row_norms(const dora_tensor *b, int fifo, int64_t out, int64_t in, double *n2,
                          dora_err *err)
{
    double *w = adapter_base_rows(b, fifo, out, in, err);
    if (!w)
        return -1;
    for (int64_t i = 0; i < out; i++) {
        n2[i] = 0;
        for (int64_t j = 0; j < in; j++)
            n2[i] += w[i * in + j] * w[i * in + j];
    }
    free(w);
    for (int64_t i = 0; i < out; i++)
        if (!isfinite(n2[i]))
            return dora_errf(err, "'%s': tensor '%s': row %lld holds NaN or Inf", b->file,
                             b->name, (long long)i);
    return 0;
}

static void drop_owned(dora_adapted *m)
{
    for (size_t k = 0; k < m->nowned; k++) {
        free((void *)m->owned[k]->data);
        free(m->owned[k]);
    }
    m->nowned = 0;
}

/* IA3 against base tensor B: rows scaled as a magnitude over a zero update,
 * or (feedforward) L = W0, R = diag(l - 1). */
static int check_ia3(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
                     int64_t in, dora_err *err)
{
    const dora_tensor *l = m->ia3;
    const int64_t n = (int64_t)l->numel, want = m->ia3_ff ? (b->ndim == 4 ? b->shape[1] : in) : out;
    if (n != want)
        return fam_shape_err(a, l, m->ia3_ff ? "but the base's input channels differ in number"
                                         : "but the base's output rows differ in number",
                         err);
    drop_owned(m); /* formed again against this W0 (a quantised base, say) */
    if (!m->ia3_ff) {
        dora_tensor *L = adapter_own(m, l, out, 1), *R = adapter_own(m, l, 1, in),
                    *g = adapter_own(m, l, out, 1);
        if (!L || !R || !g)
            return dora_errf(err, "out of memory for the factors of '%s'", m->base_name);
        double *gd = fam_own_data(g);
        if (base_row_norms(b, m->fan_in_fan_out, out, in, gd, err) != 0)
            return -1;
        for (int64_t i = 0; i < out; i++) /* the merged row l_i W0[i]: its signed norm */
            gd[i] = (fam_at(l, i) + m->ia3_add) * sqrt(gd[i]);
        m->L = adapter_matrix(L, 0);
        m->R = adapter_matrix(R, 0);
        m->magnitude = g;
        m->r = 1;
        return 0;
    }
    if (in > DORA_IA3_FF_MAX_IN)
        return dora_errf(err, "'%s': module '%s': a feedforward IA3 update W0 diag(l - 1) has no "
                              "low-rank form; this tool forms it with an [in, in] factor, for in "
                              "up to %d, not %lld",
                         a->weights->path, m->base_name, DORA_IA3_FF_MAX_IN, (long long)in);
    dora_tensor *R = adapter_own(m, l, in, in);
    if (!R)
        return dora_errf(err, "out of memory for the factors of '%s'", m->base_name);
    const int64_t per = in / n; /* a conv's kernel positions share their channel's l */
    for (int64_t j = 0; j < in; j++)
        fam_own_data(R)[j * in + j] = fam_at(l, j / per) + m->ia3_add - 1.0;
    m->L = adapter_matrix(b, m->fan_in_fan_out);
    m->R = adapter_matrix(R, 0);
    m->r = in;
    return adapter_check_rank_scale(a, m->base_name, m, "the module's in", err);
}

int fam_check(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
              int64_t in, dora_err *err)
{
    if (m->ia3)
        return check_ia3(a, m, b, out, in, err);
    if (strcmp(m->layout, "vera") != 0 || m->nowned > 1)
        return 0;
    const dora_tensor *VA = a->vera_A, *lam = m->aux;
    if (in > VA->shape[1])
        return dora_errf(err, "'%s': module '%s' has %lld inputs, more than the shared "
                              "vera_A's %lld columns",
                         a->weights->path, m->base_name, (long long)in, (long long)VA->shape[1]);
    const int64_t r = m->r, acols = VA->shape[1];
    dora_tensor *R = adapter_own(m, VA, r, in);
    if (!R)
        return dora_errf(err, "out of memory for the factors of '%s'", m->base_name);
    for (int64_t k = 0; k < r; k++) /* R = diag(lambda_d) vera_A[:, :in] */
        for (int64_t j = 0; j < in; j++)
            fam_own_data(R)[k * in + j] = fam_at(lam, k) * fam_at(VA, k * acols + j);
    m->R = adapter_matrix(R, 0);
    return adapter_check_rank_scale(a, m->base_name, m, "'r'", err);
}
