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

static double *own_data(dora_tensor *t)
{
    return (double *)(void *)t->data;
}

/* Element I of a tensor viewed flat, as a double. */
static double at(const dora_tensor *t, int64_t i)
{
    return dora_elem_to_f64(t->data + (size_t)i * dora_dtype_size(t->dtype), t->dtype);
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

/* The tensors of roles [lo, hi] that P has beyond those in WANT (a bit per role). */
static int unexpected(const dora_adapter *a, const pending *p, unsigned long want, dora_err *err)
{
    for (int k = 0; k < ROLE_SAVED; k++)
        if (p->t[k] && !(want & (1ul << k)))
            return dora_errf(err, "'%s': module '%s': tensor '%s' is not part of a %s adapter",
                             a->weights->path, p->module, p->t[k]->name, a->peft_type);
    return 0;
}

/* REQUIRED tensors of P (a bit per role), floating, of rank 2 unless noted. */
static int need(const dora_adapter *a, const pending *p, unsigned long required, dora_err *err)
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

#define BIT(r) (1ul << (r))

static int shape_err(const dora_adapter *a, const dora_tensor *t, const char *want,
                     dora_err *err)
{
    char s[256];
    dora_shape_str(t, s, sizeof s);
    return dora_errf(err, "'%s': tensor '%s' has shape %s, %s", a->weights->path, t->name, s,
                     want);
}

static int build_ia3(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    if (unexpected(a, p, BIT(ROLE_IA3), err) || need(a, p, BIT(ROLE_IA3), err))
        return -1;
    const dora_tensor *l = p->t[ROLE_IA3];
    int ff = is_ff(a, p->module, err);
    if (ff < 0)
        return -1;
    /* Linear: [out, 1], or [1, in] for a feedforward module; Conv: (1, C, 1, 1) */
    int vec2 = l->ndim == 2 && (ff ? l->shape[0] == 1 : l->shape[1] == 1);
    int vec4 = l->ndim == 4 && l->shape[0] == 1 && l->shape[2] == 1 && l->shape[3] == 1;
    if (!vec2 && !vec4)
        return shape_err(a, l,
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
    const unsigned long want = BIT(ROLE_A) | BIT(ROLE_B) | BIT(ROLE_E);
    if (unexpected(a, p, want, err) || need(a, p, want, err))
        return -1;
    const dora_tensor *A = p->t[ROLE_A], *B = p->t[ROLE_B], *E = p->t[ROLE_E];
    int masked;
    const int64_t r = adalora_rank(a, p->module, &masked);
    if (A->ndim != 2 || A->shape[0] != r) {
        char why[128];
        snprintf(why, sizeof why, "but %s %lld rank(s) of the module",
                 masked ? "rank_pattern keeps" : "init_r gives", (long long)r);
        return shape_err(a, A, why, err);
    }
    if (B->ndim != 2 || B->shape[1] != r)
        return shape_err(a, B, "but lora_A's rank differs", err);
    if ((int64_t)E->numel != r || E->ndim != 2 || E->shape[1] != 1)
        return shape_err(a, E, "but lora_E must be [r, 1] with lora_A's r", err);
    const int64_t in = A->shape[1], out = B->shape[0], rk = r ? r : 1;
    dora_tensor *R = adapter_own(m, A, rk, in), *L = r ? NULL : adapter_own(m, B, out, 1);
    if (!R || (!r && !L))
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    double *rd = own_data(R);
    for (int64_t k = 0; k < r; k++) /* R = lora_A * lora_E: row k scaled by E[k] */
        for (int64_t j = 0; j < in; j++)
            rd[k * in + j] = at(A, k * in + j) * at(E, k);
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
    const unsigned long want = BIT(ROLE_VERA_B) | BIT(ROLE_VERA_D);
    if (unexpected(a, p, want, err) || need(a, p, want, err))
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
        return shape_err(a, VA->shape[0] != r || VA->ndim != 2 ? VA : VB,
                         "but VeRA's shared projections are floating [r, in_max] and "
                         "[out_max, r] with the config's r",
                         err);
    if (ld->ndim != 1 || ld->shape[0] != r)
        return shape_err(a, ld, "but vera_lambda_d must be [r]", err);
    if (lb->ndim != 1 || lb->shape[0] > VB->shape[0])
        return shape_err(a, lb, "but vera_lambda_b must be [out], out at most vera_B's rows", err);
    const int64_t out = lb->shape[0];
    dora_tensor *L = adapter_own(m, lb, out, r);
    if (!L)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    double *ldat = own_data(L);
    for (int64_t i = 0; i < out; i++) /* L = diag(lambda_b) vera_B[:out] */
        for (int64_t k = 0; k < r; k++)
            ldat[i * r + k] = at(lb, i) * at(VB, i * r + k);
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

void fam_tucker(const dora_tensor *t, const dora_tensor *b, double *q)
{
    const int64_t r1 = t->shape[0], r2 = t->shape[1], kk = (int64_t)t->numel / (r1 * r2),
                  c = (int64_t)b->numel / r2;
    for (int64_t i = 0; i < r1; i++)
        for (int64_t x = 0; x < c; x++)
            for (int64_t y = 0; y < kk; y++) {
                double sum = 0;
                for (int64_t j = 0; j < r2; j++)
                    sum += at(t, (i * r2 + j) * kk + y) * at(b, j * c + x);
                q[(i * c + x) * kk + y] = sum;
            }
}

int fam_tucker_core(const dora_adapter *a, const dora_tensor *t, int64_t r, dora_err *err)
{
    int ok = t->ndim >= 3 && t->shape[0] == r && t->shape[1] == r &&
             dora_dtype_is_analysable(t->dtype);
    for (int d = 2; ok && d < t->ndim; d++)
        ok = t->shape[d] >= 1;
    if (ok)
        return 0;
    char want[96];
    snprintf(want, sizeof want, "but a Tucker core is floating [r, r, kh(, kw)] with r = %lld",
             (long long)r);
    return shape_err(a, t, want, err);
}

/* Both Hadamard factors of a LoHa module, each as [out, r] x [r, in] in
 * float64 (a1, b1, a2, b2 in one buffer): hada_w_a @ hada_w_b, or LyCORIS's
 * Tucker rebuild (hada_w_a [r, out], hada_w_b [r, in_ch], hada_t [r, r, k...]):
 * einsum("i j k, j c, i o -> o c k", t, w_b, w_a) = w_a^T (t x w_b). */
static double *loha_factors(const dora_adapter *a, const pending *p, int64_t r, int64_t *out,
                            int64_t *in, dora_err *err)
{
    const dora_tensor *w1a = p->t[ROLE_H1A], *w1b = p->t[ROLE_H1B], *w2a = p->t[ROLE_H2A],
                      *w2b = p->t[ROLE_H2B], *t1 = p->t[ROLE_HT], *t2 = p->t[ROLE_HT2];
    const dora_tensor *ts[4] = {w1a, w1b, w2a, w2b};
    const int tucker = t1 || t2;
    if (tucker && !(t1 && t2))
        return dora_errf(err, "'%s': module '%s' has %s but no %s", a->weights->path, p->module,
                         t1 ? t1->name : t2->name, t1 ? "hada_t2" : "hada_t1"),
               NULL;
    if (tucker && (fam_tucker_core(a, t1, r, err) || fam_tucker_core(a, t2, r, err)))
        return NULL;
    if (tucker && t1->numel != t2->numel)
        return shape_err(a, t2, "but hada_t1's kernel differs", err), NULL;
    for (int i = 0; i < 4; i++)
        if (ts[i]->ndim != 2 || ((i % 2 || tucker) ? ts[i]->shape[0] : ts[i]->shape[1]) != r)
            return shape_err(a, ts[i],
                             tucker ? "but LyCORIS's Tucker LoHa factors are [r, out] and [r, in] "
                                      "with hada_t's r"
                                    : "but LoHa's factors are [out, r] and [r, in] with the "
                                      "module's r",
                             err),
                   NULL;
    const int64_t kk = tucker ? (int64_t)t1->numel / (r * r) : 1;
    *out = tucker ? w1a->shape[1] : w1a->shape[0];
    *in = w1b->shape[1] * kk;
    if ((tucker ? w2a->shape[1] : w2a->shape[0]) != *out || w2b->shape[1] != w1b->shape[1])
        return shape_err(a, (tucker ? w2a->shape[1] : w2a->shape[0]) != *out ? w2a : w2b,
                         "but hada_w1's product differs", err),
               NULL;
    if (fam_fits(a, p->module, 2 * r, *out + *in, err) != 0)
        return NULL;
    double *f = malloc((size_t)(2 * r * (*out + *in)) * sizeof *f);
    if (!f)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module), NULL;
    for (int side = 0; side < 2; side++) {
        const dora_tensor *wa = side ? w2a : w1a, *wb = side ? w2b : w1b;
        double *fa = f + side * r * (*out + *in), *fb = fa + r * *out;
        for (int64_t i = 0; i < *out; i++)
            for (int64_t k = 0; k < r; k++)
                fa[i * r + k] = at(wa, tucker ? k * *out + i : i * r + k);
        if (tucker)
            fam_tucker(side ? t2 : t1, wb, fb);
        else
            for (int64_t k = 0; k < r * *in; k++)
                fb[k] = at(wb, k);
    }
    return f;
}

static int build_loha(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r,
                      dora_err *err)
{
    if (!a->kohya && p->t[ROLE_HT])
        return dora_errf(err, "'%s': '%s': LoHa with use_effective_conv2d (hada_t1 / hada_t2) is "
                              "not supported",
                         a->weights->path, p->t[ROLE_HT]->name);
    const unsigned long want = BIT(ROLE_H1A) | BIT(ROLE_H1B) | BIT(ROLE_H2A) | BIT(ROLE_H2B) |
                               BIT(ROLE_HT) | BIT(ROLE_HT2);
    if (unexpected(a, p, want, err) ||
        need(a, p, BIT(ROLE_H1A) | BIT(ROLE_H1B) | BIT(ROLE_H2A) | BIT(ROLE_H2B), err))
        return -1;
    int64_t out, in;
    double *f = loha_factors(a, p, r, &out, &in, err);
    if (!f)
        return -1;
    /* r^2 columns: checked against the bound of adapter_check_rank_scale
     * before anything that size is allocated */
    if (r > 65536 || r * r > RANK_PER_DIM * (out + in)) {
        free(f);
        return dora_errf(err, "'%s': module '%s': LoHa r = %lld gives rank r^2 = %lld, absurd for "
                              "an update of [%lld, %lld]: at most %d x (out + in)",
                         a->config_path, p->module, (long long)r, (long long)(r * r),
                         (long long)out, (long long)in, RANK_PER_DIM);
    }
    const int64_t rr = r * r;
    if (fam_fits(a, p->module, out + in, rr, err) != 0) {
        free(f);
        return -1;
    }
    const double *a1 = f, *b1 = a1 + r * out, *a2 = b1 + r * in, *b2 = a2 + r * out;
    dora_tensor *L = adapter_own(m, p->t[ROLE_H1A], out, rr),
                *R = adapter_own(m, p->t[ROLE_H1B], rr, in);
    if (!L || !R) {
        free(f);
        return dora_errf(err, "out of memory for the factors of '%s' (rank %lld)", p->module,
                         (long long)rr);
    }
    double *ld = own_data(L), *rd = own_data(R);
    /* (a1 b1) * (a2 b2) = sum_{k,l} (a1[:,k] * a2[:,l]) (b1[k] * b2[l]) */
    for (int64_t i = 0; i < out; i++)
        for (int64_t k = 0; k < r; k++)
            for (int64_t l = 0; l < r; l++)
                ld[i * rr + k * r + l] = a1[i * r + k] * a2[i * r + l];
    for (int64_t k = 0; k < r; k++)
        for (int64_t l = 0; l < r; l++)
            for (int64_t j = 0; j < in; j++)
                rd[(k * r + l) * in + j] = b1[k * in + j] * b2[l * in + j];
    free(f);
    m->layout = p->t[ROLE_HT] ? "loha-tucker" : "loha";
    m->aux = p->t[ROLE_HT]; /* its kernel, checked against the base's (kohya_resolve) */
    m->L = adapter_matrix(L, 0);
    m->R = adapter_matrix(R, 0);
    m->r = rr;
    return 0;
}

/* One side of a LoKr product, w = P Q: the factors (w_a, w_b), the full w
 * (a conv's [out_k, in_n, kh, kw] flattened to [out_k, in_n kh kw]) with an
 * identity on its shorter side, or, for LyCORIS's Tucker w2, P = w2_a^T and
 * Q = lokr_t2 x w2_b formed in float64 (pd, qd: owned by the caller). */
typedef struct kside {
    const dora_tensor *p, *q; /* NULL: the identity (or pd / qd) */
    double *pd, *qd;
    int64_t rows, inner, cols;
} kside;

static int lokr_side(const dora_adapter *a, const pending *p, role full, role fa, role fb,
                     kside *k, dora_err *err)
{
    const dora_tensor *w = p->t[full], *wa = p->t[fa], *wb = p->t[fb];
    const dora_tensor *t = full == ROLE_K2 ? p->t[ROLE_KT] : NULL;
    *k = (kside){0};
    if (w ? (wa || wb || t) : !(wa && wb))
        return dora_errf(err, "'%s': module '%s' must have either %s or both of its factors",
                         a->weights->path, p->module, full == ROLE_K1 ? "lokr_w1" : "lokr_w2");
    const dora_tensor *ts[3] = {w, wa, wb};
    /* a 4-D lokr_w2 (LyCORIS's full conv side) in kohya files only */
    const int conv = a->kohya && w && full == ROLE_K2 && w->ndim >= 3;
    for (int i = 0; i < 3; i++)
        if (ts[i] && ((ts[i]->ndim != 2 && !(conv && i == 0)) ||
                      !dora_dtype_is_analysable(ts[i]->dtype)))
            return shape_err(a, ts[i],
                             a->kohya ? "but LoKr factors are floating 2-D (lokr_w2 also [out_k, "
                                        "in_n, kh, kw])"
                                      : "but this tool merges floating 2-D LoKr factors only "
                                        "(a 4-D conv lokr_w2 is not supported)",
                             err);
    if (w) {
        k->rows = w->shape[0];
        k->cols = (int64_t)w->numel / (k->rows ? k->rows : 1);
        k->inner = k->rows <= k->cols ? k->rows : k->cols;
        k->p = k->rows <= k->cols ? NULL : w;
        k->q = k->rows <= k->cols ? w : NULL;
        return 0;
    }
    if (t) { /* rebuild_tucker(t2, w2_a, w2_b): [out_k, in_n, kh, kw] */
        const int64_t r = wb->shape[0];
        if (wa->shape[0] != r)
            return shape_err(a, wa, "but LyCORIS's Tucker LoKr has lokr_w2_a [r, out_k] and "
                                    "lokr_w2_b [r, in_n] with one r",
                             err);
        if (fam_tucker_core(a, t, r, err) != 0)
            return -1;
        const int64_t kk = (int64_t)t->numel / (r * r);
        *k = (kside){NULL, NULL, NULL, NULL, wa->shape[1], r, wb->shape[1] * kk};
        if (fam_fits(a, p->module, r, k->rows + k->cols, err) != 0)
            return -1;
        k->pd = malloc((size_t)(k->rows * r) * sizeof *k->pd);
        k->qd = malloc((size_t)(r * k->cols) * sizeof *k->qd);
        if (!k->pd || !k->qd)
            return dora_errf(err, "out of memory for the factors of '%s'", p->module);
        for (int64_t i = 0; i < k->rows; i++)
            for (int64_t j = 0; j < r; j++)
                k->pd[i * r + j] = at(wa, j * k->rows + i);
        fam_tucker(t, wb, k->qd);
        return 0;
    }
    if (wa->shape[1] != wb->shape[0])
        return shape_err(a, wb, "but its rank differs from its _a factor's", err);
    *k = (kside){wa, wb, NULL, NULL, wa->shape[0], wa->shape[1], wb->shape[1]};
    return 0;
}

/* Element (i, j) of P (or the identity) of side K, [rows, inner]. */
static double kp(const kside *k, int64_t i, int64_t j)
{
    return k->pd ? k->pd[i * k->inner + j] : k->p ? at(k->p, i * k->inner + j) : (double)(i == j);
}

static double kq(const kside *k, int64_t i, int64_t j)
{
    return k->qd ? k->qd[i * k->cols + j] : k->q ? at(k->q, i * k->cols + j) : (double)(i == j);
}

static int build_lokr(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    if (!a->kohya && p->t[ROLE_KT])
        return dora_errf(err, "'%s': '%s': LoKr with a CP-decomposed conv (lokr_t2) is not "
                              "supported",
                         a->weights->path, p->t[ROLE_KT]->name);
    const unsigned long want = BIT(ROLE_K1) | BIT(ROLE_K1A) | BIT(ROLE_K1B) | BIT(ROLE_K2) |
                               BIT(ROLE_K2A) | BIT(ROLE_K2B) | BIT(ROLE_KT);
    kside s1 = {0}, s2 = {0};
    int rc = unexpected(a, p, want, err) || lokr_side(a, p, ROLE_K1, ROLE_K1A, ROLE_K1B, &s1, err) ||
             lokr_side(a, p, ROLE_K2, ROLE_K2A, ROLE_K2B, &s2, err);
    /* kron(P1 Q1, P2 Q2) = kron(P1, P2) kron(Q1, Q2); a conv's w1 [a, c] is
     * LyCORIS's w1[:, :, None, None], so the kron of the flattened sides is
     * the flattened [a b, c d, kh, kw] kron */
    const int64_t out = s1.rows * s2.rows, in = s1.cols * s2.cols, r = s1.inner * s2.inner;
    const dora_tensor *from = p->t[ROLE_K1] ? p->t[ROLE_K1] : p->t[ROLE_K1A];
    if (rc == 0)
        rc = fam_fits(a, p->module, r, out + in, err) != 0;
    dora_tensor *L = rc ? NULL : adapter_own(m, from, out, r),
                *R = rc ? NULL : adapter_own(m, from, r, in);
    if (rc == 0 && (!L || !R))
        rc = dora_errf(err, "out of memory for the factors of '%s' (rank %lld)", p->module,
                       (long long)r);
    if (rc == 0) {
        double *ld = own_data(L), *rd = own_data(R);
        for (int64_t i1 = 0; i1 < s1.rows; i1++)
            for (int64_t i2 = 0; i2 < s2.rows; i2++)
                for (int64_t k1 = 0; k1 < s1.inner; k1++)
                    for (int64_t k2 = 0; k2 < s2.inner; k2++)
                        ld[(i1 * s2.rows + i2) * r + k1 * s2.inner + k2] = kp(&s1, i1, k1) * kp(&s2, i2, k2);
        for (int64_t k1 = 0; k1 < s1.inner; k1++)
            for (int64_t k2 = 0; k2 < s2.inner; k2++)
                for (int64_t j1 = 0; j1 < s1.cols; j1++)
                    for (int64_t j2 = 0; j2 < s2.cols; j2++)
                        rd[(k1 * s2.inner + k2) * in + j1 * s2.cols + j2] = kq(&s1, k1, j1) * kq(&s2, k2, j2);
        const dora_tensor *w2 = p->t[ROLE_K2];
        m->layout = p->t[ROLE_KT] ? "lokr-tucker" : w2 && w2->ndim >= 3 ? "lokr-conv" : "lokr";
        m->aux = p->t[ROLE_KT] ? p->t[ROLE_KT] : w2 && w2->ndim >= 3 ? w2 : NULL;
        m->L = adapter_matrix(L, 0);
        m->R = adapter_matrix(R, 0);
        m->r = r;
    }
    free(s1.pd);
    free(s1.qd);
    free(s2.pd);
    free(s2.qd);
    return rc ? -1 : 0;
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
        rc = strcmp(meth, "loha") == 0 ? build_loha(a, p, m, r, err) : build_lokr(a, p, m, err);
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
        return shape_err(a, l, m->ia3_ff ? "but the base's input channels differ in number"
                                         : "but the base's output rows differ in number",
                         err);
    drop_owned(m); /* formed again against this W0 (a quantised base, say) */
    if (!m->ia3_ff) {
        dora_tensor *L = adapter_own(m, l, out, 1), *R = adapter_own(m, l, 1, in),
                    *g = adapter_own(m, l, out, 1);
        if (!L || !R || !g)
            return dora_errf(err, "out of memory for the factors of '%s'", m->base_name);
        double *gd = own_data(g);
        if (base_row_norms(b, m->fan_in_fan_out, out, in, gd, err) != 0)
            return -1;
        for (int64_t i = 0; i < out; i++) /* the merged row l_i W0[i]: its signed norm */
            gd[i] = (at(l, i) + m->ia3_add) * sqrt(gd[i]);
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
        own_data(R)[j * in + j] = at(l, j / per) + m->ia3_add - 1.0;
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
            own_data(R)[k * in + j] = at(lam, k) * at(VA, k * acols + j);
    m->R = adapter_matrix(R, 0);
    return adapter_check_rank_scale(a, m->base_name, m, "'r'", err);
}

int fam_build_loha(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r, dora_err *err)
{
    return build_loha(a, p, m, r, err);
}

int fam_build_lokr(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    return build_lokr(a, p, m, err);
}
