/* quant_base.c - the quantised base as an adapter saw it: the tensors to
 * quantise, the base's quantization_config, and the note for an adapter whose
 * base looks quantised; see include/dora/quant.h. */
#define _GNU_SOURCE /* strcasestr */
#include "dora/quant.h"
#include "dora/config.h"
#include "dora/guard.h"
#include "dora/tensor.h"
#include "core/util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int config_bool(json_t *qc, const char *field, int *out, const char *path, dora_err *err)
{
    json_t *v = json_object_get(qc, field);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return dora_errf(err, "'%s': 'quantization_config.%s' is not true or false", path, field);
    *out = json_is_true(v);
    return 0;
}

/* The bitsandbytes fields of QC: *Q and *SKIP. */
static int read_bnb(json_t *qc, dora_quant *q, char **skip, const char *path, dora_err *err)
{
    int b4, b8, dq;
    if (config_bool(qc, "load_in_4bit", &b4, path, err) != 0 ||
        config_bool(qc, "load_in_8bit", &b8, path, err) != 0 ||
        config_bool(qc, "bnb_4bit_use_double_quant", &dq, path, err) != 0)
        return -1;
    if (b4 == b8)
        return dora_errf(err, "'%s': quantization_config sets %s of load_in_4bit and load_in_8bit: "
                              "which quantisation the base had is not known (--base-quant says)",
                         path, b4 ? "both" : "neither");
    if (b8) {
        *q = DORA_QUANT_INT8;
    } else {
        json_t *t = json_object_get(qc, "bnb_4bit_quant_type");
        const char *type = json_is_string(t) ? json_string_value(t) : t ? NULL : "fp4";
        if (!type || (strcmp(type, "nf4") != 0 && strcmp(type, "fp4") != 0))
            return dora_errf(err, "'%s': 'quantization_config.bnb_4bit_quant_type' is not \"nf4\" "
                                  "or \"fp4\"",
                             path);
        *q = strcmp(type, "nf4") == 0 ? (dq ? DORA_QUANT_NF4_DQ : DORA_QUANT_NF4)
                                      : (dq ? DORA_QUANT_FP4_DQ : DORA_QUANT_FP4);
    }
    json_t *sk = json_object_get(qc, "llm_int8_skip_modules");
    if (sk && !json_is_null(sk)) {
        size_t i;
        json_t *v;
        if (!json_is_array(sk))
            return dora_errf(err, "'%s': 'quantization_config.llm_int8_skip_modules' is not a "
                                  "list",
                             path);
        json_array_foreach(sk, i, v) if (!json_is_string(v)) return dora_errf(
            err, "'%s': 'quantization_config.llm_int8_skip_modules' entry %zu is not a string",
            path, i);
        if (!(*skip = json_dumps(sk, JSON_COMPACT)))
            return dora_errf(err, "out of memory");
    }
    return 0;
}

int dora_quant_from_config(const char *base_path, dora_quant *q, char **skip, dora_err *err)
{
    *q = DORA_QUANT_NONE;
    *skip = NULL;
    char *dir = util_is_dir(base_path) ? strdup(base_path) : util_dirname(base_path);
    dora_config *cfg = NULL;
    int rc = dir ? dora_config_load(&cfg, dir, err) : dora_errf(err, "out of memory");
    free(dir);
    if (rc != 0 || !cfg)
        return rc;
    const char *path = dora_config_path(cfg);
    json_t *qc = json_object_get(dora_config_root(cfg), "quantization_config");
    if (qc && !json_is_null(qc)) {
        json_t *m = json_object_get(qc, "quant_method");
        const char *method = json_is_string(m) ? json_string_value(m) : NULL;
        if (!json_is_object(qc))
            rc = dora_errf(err, "'%s': 'quantization_config' is not an object", path);
        else if (method && strcmp(method, "bitsandbytes") != 0)
            rc = dora_errf(err, "'%s': quantization_config.quant_method '%s' is not supported: "
                                "only bitsandbytes (nf4, fp4, int8) round trips are reproduced, "
                                "and W0 would not be the base the adapter was trained on",
                           path, method);
        else
            rc = read_bnb(qc, q, skip, path, err);
    }
    dora_config_close(cfg);
    return rc;
}

int dora_quant_settle(const char *base_path, dora_quant *q, char **skip, dora_err *err)
{
    dora_quant cfg;
    if (dora_quant_from_config(base_path, &cfg, skip, err) != 0)
        return -1;
    if (*q != DORA_QUANT_NONE && cfg != DORA_QUANT_NONE && cfg != *q) {
        free(*skip);
        *skip = NULL;
        return dora_errf(err, "--base-quant %s, but the base's config.json beside '%s' says its "
                              "quantization_config is %s: which base the adapter saw is ambiguous",
                         dora_quant_name(*q), base_path, dora_quant_name(cfg));
    }
    if (*q == DORA_QUANT_NONE)
        *q = cfg;
    return 0;
}

/* MODULE (a base name without ".weight") is named by a key of SKIP (a JSON
 * list), or is lm_head, which transformers keeps unquantised. */
static int skipped(const char *module, json_t *skip)
{
    const char *last = strrchr(module, '.');
    if (strcmp(last ? last + 1 : module, "lm_head") == 0)
        return 1;
    size_t i;
    json_t *v;
    json_array_foreach(skip, i, v)
    {
        const char *k = json_string_value(v);
        size_t kl = strlen(k), ml = strlen(module);
        for (const char *p = strstr(module, k); p; p = strstr(p + 1, k)) {
            int starts = p == module || p[-1] == '.';
            int ends = (size_t)(p - module) + kl == ml || p[kl] == '.';
            if (starts && ends)
                return 1;
        }
    }
    return 0;
}

/* The adapter layouts whose PEFT layers wrap bitsandbytes' Linear4bit /
 * Linear8bitLt (LoRA, IA3, AdaLoRA, VeRA); not embeddings, MLX (its own
 * quantisation) or LoHa / LoKr (no bitsandbytes layer in PEFT). */
static int bnb_layout(const char *layout)
{
    static const char *const ok[] = {"linear", "ia3", "ia3-ff", "adalora", "vera"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(layout, ok[i]) == 0)
            return 1;
    return 0;
}

static int by_name_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, (*(const dora_tensor *const *)elem)->name);
}

/* The round trip of base tensor B (adapted as fan_in_fan_out when FIFO) into
 * OUT, which then owns its bytes. */
static int quantise_tensor(const dora_tensor *b, int fifo, dora_quant q, dora_tensor *out,
                           dora_err *err)
{
    if (b->dtype != DORA_DT_F16 && b->dtype != DORA_DT_BF16 && b->dtype != DORA_DT_F32)
        return dora_errf(err, "'%s': base tensor '%s' is %s: bitsandbytes quantises F16, BF16 and "
                              "F32 weights only (--base-quant %s)",
                         b->file, b->name, dora_dtype_name(b->dtype), dora_quant_name(q));
    const size_t n = (size_t)b->numel, esz = dora_dtype_size(b->dtype);
    const size_t rows = (size_t)b->shape[0], cols = (size_t)b->shape[1];
    const size_t qcols = fifo ? rows : cols; /* as [out, in] */
    unsigned char *raw = malloc(n * esz);
    float *x = malloc(n * sizeof *x);
    int rc = -1;
    if (!raw || !x) {
        dora_errf(err, "out of memory quantising '%s'", b->name);
        goto done;
    }
    const void *fault;
    if (dora_guard_copy(raw, b->data, n * esz, &fault) != 0) {
        dora_errf(err, "'%s' changed while it was read (truncated?): the base is needed for "
                       "every result",
                  b->file);
        goto done;
    }
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double v = dora_elem_to_f64(raw + (i * cols + j) * esz, b->dtype);
            if (!isfinite(v) || (q == DORA_QUANT_INT8 && fabs(v) >= 65520.0)) {
                dora_errf(err, "'%s': base tensor '%s': row %zu holds %s", b->file, b->name, i,
                          isfinite(v) ? "a value beyond float16, which LLM.int8 rounds to first"
                                      : "NaN or Inf, which cannot be quantised");
                goto done;
            }
            x[fifo ? j * qcols + i : i * qcols + j] = (float)v;
        }
    if (dora_quant_roundtrip(x, n, qcols, q, err) != 0)
        goto done;
    *out = *b;
    out->owner = NULL;
    out->dtype = q == DORA_QUANT_INT8 ? DORA_DT_F32 : b->dtype;
    out->nbytes = n * dora_dtype_size(out->dtype);
    unsigned char *data = malloc(out->nbytes ? out->nbytes : 1);
    if (!data) {
        dora_errf(err, "out of memory quantising '%s'", b->name);
        goto done;
    }
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            float v = x[fifo ? j * qcols + i : i * qcols + j];
            unsigned char *d = data + (i * cols + j) * dora_dtype_size(out->dtype);
            uint16_t h = out->dtype == DORA_DT_BF16 ? dora_f32_to_bf16(v) : dora_f32_to_f16(v);
            if (out->dtype == DORA_DT_F32)
                memcpy(d, &v, 4);
            else
                memcpy(d, &h, 2);
        }
    out->data = data;
    rc = 0;
done:
    free(raw);
    free(x);
    return rc;
}

int dora_quant_base_open(dora_quant_base **out, const dora_model *base, const dora_adapter *ad,
                         dora_quant q, const char *skip_json, dora_err *err)
{
    *out = NULL;
    if (ad->init_lora)
        return dora_errf(err, "'%s': init_lora_weights '%s' with --base-quant is not supported "
                              "(QPiSSA quantises the residual, not the base)",
                         ad->config_path, ad->init_lora);
    json_t *skip = skip_json ? json_loads(skip_json, 0, NULL) : json_array();
    dora_quant_base *qb = skip ? dora_quant_view(base, ad->nmodules) : NULL;
    if (!qb) {
        json_decref(skip);
        return dora_errf(err, "out of memory");
    }
    qb->view.ntensors = base->ntensors;
    memcpy(qb->view.by_name, base->by_name, base->ntensors * sizeof *base->by_name);
    int rc = 0;
    for (size_t i = 0; i < ad->nmodules && rc == 0; i++) {
        const dora_adapted *m = &ad->modules[i];
        const dora_tensor **slot = bsearch(m->base_name, qb->view.by_name, base->ntensors,
                                           sizeof *qb->view.by_name, by_name_cmp);
        size_t ml = strlen(m->base_name) - strlen(".weight");
        char *module = strndup(m->base_name, ml);
        if (!module) {
            rc = dora_errf(err, "out of memory");
            break;
        }
        int linear = m->kind == DORA_ADAPTED_LORA && bnb_layout(m->layout) && slot &&
                     (*slot)->ndim == 2 && !skipped(module, skip);
        free(module);
        if (!linear) {
            qb->nkept++;
            continue;
        }
        rc = quantise_tensor(*slot, m->fan_in_fan_out, q, &qb->tensors[qb->nquant], err);
        if (rc == 0)
            *slot = &qb->tensors[qb->nquant++];
    }
    json_decref(skip);
    if (rc != 0) {
        dora_quant_base_close(qb);
        return -1;
    }
    *out = qb;
    return 0;
}

dora_quant_base *dora_quant_view(const dora_model *base, size_t ntensors)
{
    dora_quant_base *qb = calloc(1, sizeof *qb);
    if (!qb || !(qb->tensors = calloc(ntensors + 1, sizeof *qb->tensors)) ||
        !(qb->view.by_name = malloc((base->ntensors + 1) * sizeof *qb->view.by_name))) {
        dora_quant_base_close(qb);
        return NULL;
    }
    qb->view.path = base->path; /* borrowed, as the files are: never dora_model_close it */
    qb->view.kind = base->kind;
    qb->view.nfiles = base->nfiles;
    qb->view.files = base->files;
    return qb;
}

void dora_quant_base_close(dora_quant_base *qb)
{
    if (!qb)
        return;
    for (size_t i = 0; qb->tensors && i < qb->nquant; i++)
        free((void *)qb->tensors[i].data);
    free(qb->tensors);
    free(qb->view.by_name);
    free(qb);
}

int dora_quant_hint(const dora_adapter *ad, char *buf, size_t len)
{
    static const char *const marks[] = {"bnb", "4bit", "8bit", "int4", "int8", "nf4", "gptq",
                                        "awq"};
    if (!ad->base_model)
        return 0;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        if (strcasestr(ad->base_model, marks[i])) {
            snprintf(buf, len, "the adapter '%s' was trained on '%s', which looks quantised "
                               "('%s'), but W0 is the base as given: if that base was "
                               "quantised in training, --base-quant nf4|fp4|int8|nf4-dq|fp4-dq "
                               "measures against it",
                     ad->config_path, ad->base_model, marks[i]);
            return 1;
        }
    return 0;
}
