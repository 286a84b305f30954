/* kohya.c - kohya-ss sd-scripts, LyCORIS and OneTrainer adapter files: one
 * .safetensors, no adapter_config.json, keys PREFIX_MODULE.SUFFIX with the
 * module path's '.' written as '_'. The rules are in include/dora/adapter.h
 * ("kohya") and docs/adapters.md. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "checkpoints/kohya_int.h"
#include "core/le.h"
#include "core/util.h"
#include "dora/notes.h"
#include "dora/run.h"
#include "dora/tensor.h"

#include <dirent.h>
#include <fcntl.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KOHYA_HEADER_MAX (64u << 20) /* a kohya file's header is well below this */
/* The tools' prefixes, longest first: "lora_te" must not take "lora_te1_". */
static const struct {
    const char *prefix;
    const char *part; /* what the prefix says the module belongs to */
} prefixes[] = {
    {"lora_unet_", "unet"}, {"lora_te1_", "te1"}, {"lora_te2_", "te2"}, {"lora_te_", "te1"},
    {"lycoris_", NULL},     {"lora_", NULL},
};

/* The suffixes of a module's tensors (after the key's first '.'). */
/* beyond the factor roles: alpha, dora_scale, and LyCORIS's full and (IA)^3 keys */
enum {
    K_ALPHA = ROLE_COUNT, K_DORA, K_DIFF, K_DIFFB, K_IA3W, K_ONIN, K_GA1, K_GA2, K_GB1, K_GB2,
    K_OFT, K_RESCALE
};
#define K_OTHER(r) ((r) >= K_DIFF && (r) <= K_ONIN)
#define K_GLORA(r) ((r) >= K_GA1 && (r) <= K_GB2)
static const struct {
    const char *suffix;
    int r;
} suffixes[] = {
    {"lora_down.weight", ROLE_A}, {"lora_up.weight", ROLE_B}, {"hada_w1_a", ROLE_H1A},
    {"hada_w1_b", ROLE_H1B},      {"hada_w2_a", ROLE_H2A},    {"hada_w2_b", ROLE_H2B},
    {"hada_t1", ROLE_HT},         {"hada_t2", ROLE_HT2},      {"lokr_w1", ROLE_K1},
    {"lokr_w1_a", ROLE_K1A},      {"lokr_w1_b", ROLE_K1B},    {"lokr_w2", ROLE_K2},
    {"lokr_w2_a", ROLE_K2A},      {"lokr_w2_b", ROLE_K2B},    {"lokr_t2", ROLE_KT},
    {"alpha", K_ALPHA},           {"dora_scale", K_DORA},     {"lora_mid.weight", ROLE_MID},
    {"diff", K_DIFF},             {"diff_b", K_DIFFB},        {"weight", K_IA3W},
    {"on_input", K_ONIN},         {"a1.weight", K_GA1},       {"a2.weight", K_GA2},
    {"b1.weight", K_GB1},         {"b2.weight", K_GB2},       {"oft_blocks", K_OFT},
    {"rescale", K_RESCALE},
};

/* LyCORIS's other algorithms, by the keys they save (the weight_list of
 * lycoris/modules/NAME.py): refused by name, never read as something else. */
static const struct {
    const char *suffix, *algo;
} refused[] = {
    {"lokr_t1", "LoKr lokr_t1 (not used by LyCORIS's LoKr)"},
    {"bm.weight", "GLoRA with use_tucker (bm)"},
    {"w_norm", "norms (w_norm / b_norm)"},
    {"b_norm", "norms (w_norm / b_norm)"},
};

/* The LyCORIS algorithm the key NAME belongs to, when it is one refused, or NULL. */
static const char *refused_algo(const char *name)
{
    const char *dot = strchr(name, '.');
    for (size_t i = 0; dot && i < sizeof refused / sizeof refused[0]; i++)
        if (strcmp(dot + 1, refused[i].suffix) == 0)
            return refused[i].algo;
    return NULL;
}

/* The role of the key NAME (stem: the part before its first '.'), or -1. */
static int key_role(const char *name, size_t *stem)
{
    const char *dot = strchr(name, '.');
    if (!dot)
        return -1;
    *stem = (size_t)(dot - name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
        if (strcmp(dot + 1, suffixes[i].suffix) == 0)
            return suffixes[i].r;
    return -1;
}

/* The known prefix of KEY: its index, or -1. */
static int key_prefix(const char *key)
{
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(key, prefixes[i].prefix, strlen(prefixes[i].prefix)) == 0)
            return (int)i;
    return -1;
}

/* A factor key (not alpha or dora_scale alone) with one of the tools' prefixes,
 * LyCORIS's full diff or (IA)^3 on_input (not a bare NAME.weight), or a key of
 * a refused LyCORIS algorithm, so that such a file is refused by name rather
 * than read as a model. */
static int is_kohya_key(const char *name)
{
    size_t stem = 0;
    int r = key_role(name, &stem);
    if (key_prefix(name) < 0)
        return 0;
    return (r >= 0 && r < ROLE_COUNT) || r == K_DIFF || r == K_ONIN || K_GLORA(r) || r == K_OFT ||
           (r < 0 && refused_algo(name));
}

int dora_kohya_probe(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char len8[8];
    char *h = NULL;
    int found = 0;
    if (pread(fd, len8, 8, 0) != 8)
        goto done;
    uint64_t n = le_load64(len8);
    if (n < 2 || n > KOHYA_HEADER_MAX || !(h = malloc(n)))
        goto done;
    for (uint64_t got = 0; got < n;) {
        ssize_t k = pread(fd, h + got, n - got, (off_t)(8 + got));
        if (k <= 0)
            goto done;
        got += (uint64_t)k;
    }
    json_error_t jerr;
    json_t *root = json_loadb(h, n, 0, &jerr);
    const char *key;
    json_t *v;
    if (json_is_object(root))
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "__metadata__") != 0 && is_kohya_key(key)) {
                found = 1;
                break;
            }
        }
    json_decref(root);
done:
    free(h);
    close(fd);
    return found;
}

/* ---------------------------------------------------------------- reading */

typedef struct kentry {
    size_t stem;   /* length of the module key */
    size_t tensor; /* index in by_name */
    int role;
} kentry;

static const dora_tensor *const *g_by_name; /* for kentry_cmp only */

static int kentry_cmp(const void *pa, const void *pb)
{
    const kentry *a = pa, *b = pb;
    const char *na = g_by_name[a->tensor]->name, *nb = g_by_name[b->tensor]->name;
    size_t l = a->stem < b->stem ? a->stem : b->stem;
    int c = strncmp(na, nb, l);
    if (c == 0)
        c = (a->stem > b->stem) - (a->stem < b->stem);
    return c ? c : (a->tensor > b->tensor) - (a->tensor < b->tensor);
}

int kohya_read_alpha(const dora_adapter *a, const dora_tensor *t, double *alpha, dora_err *err)
{
    if (t->numel != 1 || !dora_dtype_is_analysable(t->dtype))
        return dora_errf(err, "'%s': tensor '%s' must be one floating number (the module's "
                              "alpha), not %llu entries of %s",
                         a->weights->path, t->name, (unsigned long long)t->numel,
                         dora_dtype_name(t->dtype));
    *alpha = dora_elem_to_f64(t->data, t->dtype);
    if (!isfinite(*alpha) || *alpha <= 0)
        return dora_errf(err, "'%s': tensor '%s' is %g: alpha must be a finite number above 0 "
                              "(kohya and LyCORIS save alpha = r for an alpha of 0)",
                         a->weights->path, t->name, *alpha);
    return 0;
}

/* LyCORIS's LoCon with use_tucker: lora_mid [r, r, kh, kw] between lora_down
 * [r, in, 1, 1] and lora_up [out, r, 1, 1]; rebuild_tucker(mid, up^T, down) is
 * up (mid x down): L = up [out, r], R = mid x down [r, in kh kw]. */
static int build_tucker(const dora_adapter *a, const pending *p, dora_adapted *m,
                        dora_err *err)
{
    const dora_tensor *down = p->t[ROLE_A], *up = p->t[ROLE_B], *mid = p->t[ROLE_MID];
    const char *wf = a->weights->path;
    const int nd = mid->ndim;
    int ok = dora_dtype_is_analysable(down->dtype) && dora_dtype_is_analysable(up->dtype) &&
             down->ndim == nd && up->ndim == nd && down->shape[0] >= 1 &&
             up->shape[1] == down->shape[0];
    for (int d = 2; ok && d < nd; d++)
        ok = down->shape[d] == 1 && up->shape[d] == 1;
    if (!ok) {
        char sd[256], su[256], sm[256];
        dora_shape_str(down, sd, sizeof sd);
        dora_shape_str(up, su, sizeof su);
        dora_shape_str(mid, sm, sizeof sm);
        return dora_errf(err, "'%s': module '%s': lora_down.weight %s, lora_up.weight %s and "
                              "lora_mid.weight %s do not fit LyCORIS's Tucker LoCon: floating "
                              "down [r, in, 1, 1], up [out, r, 1, 1], mid [r, r, kh, kw]",
                         wf, p->module, sd, su, sm);
    }
    const int64_t r = down->shape[0], in = down->shape[1] * ((int64_t)mid->numel / (r * r));
    if (fam_tucker_core(a, mid, r, err) != 0 || fam_fits(a, p->module, r, in, err) != 0)
        return -1;
    dora_tensor *R = adapter_own(m, mid, r, in);
    if (!R)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    fam_tucker(mid, down, (double *)(void *)R->data);
    m->layout = "kohya-tucker";
    m->aux = mid; /* its kernel, checked against the base's (kohya_resolve) */
    m->R = adapter_matrix(R, 0);
    m->L = adapter_matrix(up, 0);
    m->r = r;
    return 0;
}

/* kohya's LoRA / LyCORIS's LoCon: up [out, r(, 1, 1)], down [r, in(, kh, kw)]. */
static int build_lora(const dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err)
{
    const dora_tensor *down = p->t[ROLE_A], *up = p->t[ROLE_B];
    const char *wf = a->weights->path;
    if (!down || !up)
        return dora_errf(err, "'%s': module '%s' has %s but no %s", wf, p->module,
                         down ? "lora_down.weight" : "lora_up.weight",
                         down ? "lora_up.weight" : "lora_down.weight");
    for (int k = 0; k < ROLE_COUNT; k++)
        if (p->t[k] && k != ROLE_A && k != ROLE_B && k != ROLE_MID)
            return dora_errf(err, "'%s': module '%s' mixes LoRA and another family ('%s')", wf,
                             p->module, p->t[k]->name);
    if (p->t[ROLE_MID])
        return build_tucker(a, p, m, err);
    if (!dora_dtype_is_analysable(down->dtype) || !dora_dtype_is_analysable(up->dtype))
        return dora_errf(err, "'%s': module '%s': lora_down / lora_up must be F16, BF16, F32 or "
                              "F64, not %s / %s",
                         wf, p->module, dora_dtype_name(down->dtype), dora_dtype_name(up->dtype));
    char sd[256], su[256];
    dora_shape_str(down, sd, sizeof sd);
    dora_shape_str(up, su, sizeof su);
    int up_ok = (up->ndim == 2 || up->ndim == 4) && up->shape[1] == down->shape[0];
    for (int d = 2; up_ok && d < up->ndim; d++)
        up_ok = up->shape[d] == 1;
    if ((down->ndim != 2 && down->ndim != 4) || down->shape[0] < 1 || !up_ok ||
        up->ndim != down->ndim)
        return dora_errf(err, "'%s': module '%s': lora_down.weight %s and lora_up.weight %s do "
                              "not fit: down is [r, in] or [r, in, kh, kw], up [out, r] or "
                              "[out, r, 1, 1]",
                         wf, p->module, sd, su);
    m->layout = down->ndim == 4 ? "kohya-conv" : "kohya";
    m->aux = down->ndim == 4 ? down : NULL; /* its kernel: kohya_resolve */
    m->R = adapter_matrix(down, 0);
    m->L = adapter_matrix(up, 0);
    m->r = down->shape[0];
    return 0;
}

/* One module of the file into M. */
static int build(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                 const dora_tensor *dscale, dora_adapted *m, const char **fam, dora_err *err)
{
    const char *wf = a->weights->path;
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    m->kind = DORA_ADAPTED_LORA;
    double alpha = 0;
    if (alpha_t && kohya_read_alpha(a, alpha_t, &alpha, err) != 0)
        return -1;
    int lora = p->t[ROLE_A] || p->t[ROLE_B];
    int loha = p->t[ROLE_H1A] || p->t[ROLE_H1B] || p->t[ROLE_H2A] || p->t[ROLE_H2B] ||
               p->t[ROLE_HT] || p->t[ROLE_HT2];
    int rc;
    int64_t r; /* the rank alpha is divided by; 0: scale 1 */
    const char *meth;
    if (lora) {
        meth = "lora";
        rc = build_lora(a, p, m, err);
        r = m->r;
    } else if (loha) {
        meth = "loha";
        const dora_tensor *w1b = p->t[ROLE_H1B];
        r = w1b && w1b->ndim == 2 ? w1b->shape[0] : 0;
        rc = r < 1 ? dora_errf(err, "'%s': module '%s': hada_w1_b is missing or not [r, in]", wf,
                               p->module)
                   : fam_build_loha(a, p, m, r, err);
    } else {
        meth = "lokr";
        const dora_tensor *b1 = p->t[ROLE_K1B], *b2 = p->t[ROLE_K2B];
        r = b1 ? b1->shape[0] : b2 ? b2->shape[0] : 0;
        rc = b1 && b2 && b1->shape[0] != b2->shape[0]
                 ? dora_errf(err, "'%s': module '%s': lokr_w1_b and lokr_w2_b have different "
                                  "ranks (%lld, %lld)",
                             wf, p->module, (long long)b1->shape[0], (long long)b2->shape[0])
                 : fam_build_lokr(a, p, m, err);
    }
    if (rc != 0)
        return -1;
    if (*fam && strcmp(*fam, meth) != 0)
        return dora_errf(err, "'%s': module '%s' is %s but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, meth, *fam);
    *fam = meth;
    /* kohya and LyCORIS: scale alpha / r; no alpha (or a full LoKr), 1 */
    m->alpha = alpha_t ? alpha : (double)(r > 0 ? r : 1); /* as the file says */
    m->scale = alpha_t && r > 0 ? alpha / (double)r : 1.0;
    if (adapter_check_rank_scale(a, p->module, m, "the factors' rank", err) != 0)
        return -1;
    if (dscale) {
        char s[256];
        dora_shape_str(dscale, s, sizeof s);
        int rest1 = 1;
        for (int d = 2; d < dscale->ndim; d++)
            rest1 = rest1 && dscale->shape[d] == 1;
        if (!dora_dtype_is_analysable(dscale->dtype) || dscale->ndim < 2 || !rest1 ||
            (dscale->shape[0] != 1 && dscale->shape[1] != 1))
            return dora_errf(err, "'%s': tensor '%s' is %s %s: dora_scale is floating [1, in] "
                                  "(column norms) or [out, 1] (rows, LyCORIS wd_on_output), a "
                                  "conv's with 1, 1 after",
                             wf, dscale->name, dora_dtype_name(dscale->dtype), s);
        m->dora_scale = dscale;
        m->dora_cols = dscale->shape[0] == 1 && dscale->shape[1] == 1 ? -1 : dscale->shape[0] == 1;
    }
    return 0;
}

/* The modules of the file: its keys grouped by module (one sort), each built. */
static int collect(dora_adapter *a, dora_err *err)
{
    const dora_model *w = a->weights;
    kentry *e = calloc(w->ntensors ? w->ntensors : 1, sizeof *e);
    a->modules = calloc(w->ntensors ? w->ntensors : 1, sizeof *a->modules);
    if (!e || !a->modules) {
        free(e);
        return dora_errf(err, "out of memory");
    }
    for (size_t i = 0; i < w->ntensors; i++) {
        const char *name = w->by_name[i]->name;
        size_t stem = 0;
        int role = key_role(name, &stem);
        if (role < 0 || key_prefix(name) < 0) {
            free(e);
            const char *algo = key_prefix(name) >= 0 ? refused_algo(name) : NULL;
            if (algo)
                return dora_errf(err, "'%s': tensor '%s' is of LyCORIS's %s, which this tool "
                                      "does not read (it reads LoRA / LoCon, LoHa, LoKr and "
                                      "dora_scale)",
                                 w->path, name, algo);
            return dora_errf(err, "'%s': tensor '%s' is not a kohya / LyCORIS LoRA, LoHa or LoKr "
                                  "tensor (PREFIX_MODULE.lora_down.weight, .lora_up.weight, "
                                  ".alpha, .dora_scale, .hada_*, .lokr_*)",
                             w->path, name);
        }
        e[i] = (kentry){stem, i, role};
    }
    g_by_name = w->by_name;
    qsort(e, w->ntensors, sizeof *e, kentry_cmp);
    int rc = 0, dora = 0;
    const char *fam = NULL; /* the file's family */
    for (size_t i = 0; i < w->ntensors && rc == 0;) {
        pending p = {0};
        const dora_tensor *alpha = NULL, *dscale = NULL, *other[4] = {0}, *glora[4] = {0},
                          *oft[2] = {0};
        const char *name = w->by_name[e[i].tensor]->name;
        size_t j = i;
        for (; j < w->ntensors && e[j].stem == e[i].stem &&
               strncmp(name, w->by_name[e[j].tensor]->name, e[i].stem) == 0;
             j++) {
            const dora_tensor *t = w->by_name[e[j].tensor];
            const dora_tensor **slot = e[j].role == K_ALPHA       ? &alpha
                                       : e[j].role == K_DORA      ? &dscale
                                       : K_OTHER(e[j].role) ? &other[e[j].role - K_DIFF]
                                       : K_GLORA(e[j].role) ? &glora[e[j].role - K_GA1]
                                       : e[j].role == K_OFT       ? &oft[0]
                                       : e[j].role == K_RESCALE   ? &oft[1]
                                                                  : &p.t[e[j].role];
            if (*slot) {
                rc = dora_errf(err, "'%s': '%s' and '%s' are the same tensor of one module",
                               w->path, (*slot)->name, t->name);
                break;
            }
            *slot = t;
        }
        if (rc != 0)
            break;
        if (!(p.module = strndup(name, e[i].stem))) {
            rc = dora_errf(err, "out of memory");
            break;
        }
        int factors = 0;
        for (int k = 0; k < ROLE_COUNT; k++)
            factors |= p.t[k] != NULL;
        const dora_tensor *any_other = other[0]   ? other[0]
                                       : other[1] ? other[1]
                                       : other[2] ? other[2]
                                                  : other[3];
        const dora_tensor *any_glora = glora[0]   ? glora[0]
                                       : glora[1] ? glora[1]
                                       : glora[2] ? glora[2]
                                                  : glora[3];
        const dora_tensor *any_oft = oft[0] ? oft[0] : oft[1];
        if (any_oft && (factors || any_other || any_glora || dscale))
            rc = dora_errf(err, "'%s': module '%s' mixes OFT ('%s') with another family or "
                                "dora_scale",
                           w->path, p.module, any_oft->name);
        else if (any_oft)
            rc = lycoris_build_oft(a, &p, alpha, oft, &a->modules[a->nmodules++], &fam, err);
        else if (any_glora && (factors || any_other || dscale))
            rc = dora_errf(err, "'%s': module '%s' mixes GLoRA ('%s') with another family or "
                                "dora_scale",
                           w->path, p.module, any_glora->name);
        else if (any_glora)
            rc = lycoris_build_glora(a, &p, alpha, glora, &a->modules[a->nmodules++], &fam, err);
        else if (any_other && (factors || alpha || dscale))
            rc = dora_errf(err, "'%s': module '%s' mixes LyCORIS's full or (IA)^3 ('%s') with "
                                "%s",
                           w->path, p.module, any_other->name,
                           factors ? "another family's factors" : "alpha or dora_scale");
        else if (any_other)
            rc = lycoris_build_other(a, &p, other, &a->modules[a->nmodules++], &fam, err);
        else if (!factors)
            rc = dora_errf(err, "'%s': module '%s' has %s but no factors", w->path, p.module,
                           alpha ? alpha->name : dscale->name);
        else
            rc = build(a, &p, alpha, dscale, &a->modules[a->nmodules++], &fam, err);
        dora |= dscale != NULL;
        free(p.module);
        i = j;
    }
    free(e);
    if (rc == 0 && a->nmodules == 0)
        rc = dora_errf(err, "'%s': no kohya / LyCORIS modules", w->path);
    if (rc == 0) /* by its keys: dora_scale makes it DoRA, whatever the factors */
        a->method = dora ? "dora" : fam;
    return rc;
}

int kohya_open(dora_adapter *a, const char *path, dora_err *err)
{
    a->kohya = 1;
    a->format = "kohya";
    if (!(a->peft_type = strdup("kohya")) ||
        !(a->targets = strdup("(every module of the file)")))
        return dora_errf(err, "out of memory");
    if (dora_model_open(&a->weights, path, err) != 0)
        return -1;
    if (collect(a, err) != 0)
        return -1;
    a->r = a->modules[0].r;
    a->lora_alpha = a->modules[0].alpha;
    return 0;
}

/* ---------------------------------------------------------------- the base */

/* One base tensor name "a.b.weight" as "a_b" (LEN bytes), for matching. */
typedef struct cand {
    const char *name;
    char *us;
    size_t len;
} cand;

/* The base tensor whose name, '.' read as '_', ends in KEY's module path at a
 * component boundary; ties broken by what KEY's prefix says it belongs to. */
static int match(const dora_adapter *a, const dora_model *base, const cand *c, size_t nc,
                 const char *key, const char **hit, dora_err *err)
{
    int pi = key_prefix(key);
    const char *mod = key + strlen(prefixes[pi].prefix), *part = prefixes[pi].part;
    size_t ml = strlen(mod);
    size_t found[KOHYA_MAX_LISTED + 1], nf = 0, nall = 0, kept = 0;
    const char *keep = NULL;
    for (size_t i = 0; i < nc; i++) {
        if (c[i].len < ml || strcmp(c[i].us + c[i].len - ml, mod) != 0)
            continue;
        size_t at = c[i].len - ml; /* the match starts a component of the name */
        if (at > 0 && c[i].name[at - 1] != '.')
            continue;
        if (nf <= KOHYA_MAX_LISTED)
            found[nf++] = i;
        nall++;
        /* the part of the model: text_encoder_2 / embedders.1 for te2, ... */
        const char *outer = c[i].name;
        int te2 = strstr(outer, "text_encoder_2.") && (size_t)(strstr(outer, "text_encoder_2.") - outer) < at;
        int te = strstr(outer, "text_encoder") && (size_t)(strstr(outer, "text_encoder") - outer) < at;
        int unet = (strstr(outer, "unet.") && (size_t)(strstr(outer, "unet.") - outer) < at) ||
                   (strstr(outer, "diffusion_model.") &&
                    (size_t)(strstr(outer, "diffusion_model.") - outer) < at);
        int fits = !part || (strcmp(part, "te2") == 0 ? te2
                             : strcmp(part, "te1") == 0 ? te && !te2
                                                         : unet);
        if (fits) {
            kept++;
            keep = c[i].name;
        }
    }
    if (nall == 1) {
        *hit = c[found[0]].name;
        return 0;
    }
    if (nall > 1 && kept == 1) {
        *hit = keep;
        return 0;
    }
    if (nall == 0)
        return dora_errf(err, "'%s': module '%s' matches no tensor of the base '%s' (its path "
                              "'%s' with '.' read as '_', ending in '.weight'): the base must be "
                              "the model the adapter was trained on, in the layout of its names "
                              "(diffusers or the original checkpoint's)",
                         a->weights->path, key, base->path, mod);
    char list[1024] = "";
    size_t off = 0;
    for (size_t k = 0; k < nf && k < KOHYA_MAX_LISTED && off < sizeof list; k++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s'%s'", k ? ", " : "",
                                c[found[k]].name);
    return dora_errf(err, "'%s': module '%s' matches %zu tensors of the base '%s' ('.' read as "
                          "'_'): %s%s; give a base that holds only the model it was trained on",
                     a->weights->path, key, nall, base->path, list,
                     nall > KOHYA_MAX_LISTED ? ", ..." : "");
}

/* A conv module's kernel (lora_down's, lora_mid's, hada_t1's, lokr_t2's or
 * the 4-D lokr_w2's kh, kw) is the base tensor B's: the flattened shapes
 * alone would take a [r, in, 1, 3] for a 3 x 1 kernel. */
static int kernel_fits(const dora_adapter *a, const dora_adapted *m, const dora_tensor *b,
                       dora_err *err)
{
    const dora_tensor *k = m->aux;
    if (!k || !b)
        return 0;
    int ok = b->ndim == k->ndim;
    for (int d = 2; ok && d < k->ndim; d++)
        ok = b->shape[d] == k->shape[d];
    if (ok)
        return 0;
    char sk[256], sb[256];
    dora_shape_str(k, sk, sizeof sk);
    dora_shape_str(b, sb, sizeof sb);
    return dora_errf(err, "'%s': tensor '%s' is %s, whose kernel (the dimensions after the "
                          "first two) is not that of the base tensor '%s' %s",
                     a->weights->path, k->name, sk, b->name, sb);
}

static int by_base_name(const void *pa, const void *pb)
{
    return strcmp(((const dora_adapted *)pa)->base_name, ((const dora_adapted *)pb)->base_name);
}

int kohya_resolve(const dora_adapter *a, const dora_model *base, dora_err *err)
{
    cand *c = calloc(base->ntensors ? base->ntensors : 1, sizeof *c);
    size_t nc = 0;
    int rc = 0;
    if (!c)
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < base->ntensors && rc == 0; i++) {
        const char *n = base->by_name[i]->name;
        size_t l = strlen(n);
        if (l <= 7 || strcmp(n + l - 7, ".weight") != 0)
            continue;
        if (!(c[nc].us = strndup(n, l - 7))) {
            rc = dora_errf(err, "out of memory");
            break;
        }
        for (char *s = c[nc].us; *s; s++)
            if (*s == '.')
                *s = '_';
        c[nc].name = n;
        c[nc++].len = l - 7;
    }
    for (size_t i = 0; i < a->nmodules && rc == 0; i++) {
        dora_adapted *m = &a->modules[i];
        if (m->dora_scale && (m->kind == DORA_ADAPTED_SAVED || m->magnitude)) {
            /* formed by an earlier check (its last owned tensor): formed again */
            dora_tensor *d = m->owned[--m->nowned];
            free((void *)d->data);
            free(d);
            m->kind = DORA_ADAPTED_LORA;
            m->saved = NULL;
            m->magnitude = NULL;
        }
        const char *hit;
        const int full = strcmp(m->layout, "full") == 0, glora = strcmp(m->layout, "glora") == 0,
                  oft = strcmp(m->layout, "oft") == 0;
        const dora_tensor *bt;
        if ((rc = match(a, base, c, nc, m->key, &hit, err)) != 0)
            break;
        bt = dora_model_find(base, hit);
        if ((rc = full    ? lycoris_form_full(a, m, bt, err)
                  : oft   ? lycoris_form_oft(a, m, bt, err)
                  : glora ? lycoris_form_glora(a, m, bt, err)
                          : kernel_fits(a, m, bt, err)) != 0)
            break;
        char *bn = strdup(hit);
        if (!bn) {
            rc = dora_errf(err, "out of memory");
            break;
        }
        free(m->base_name);
        m->base_name = bn;
    }
    for (size_t i = 0; i < nc; i++)
        free(c[i].us);
    free(c);
    if (rc != 0)
        return -1;
    qsort(a->modules, a->nmodules, sizeof *a->modules, by_base_name);
    for (size_t i = 1; i < a->nmodules; i++)
        if (strcmp(a->modules[i].base_name, a->modules[i - 1].base_name) == 0)
            return dora_errf(err, "'%s': modules '%s' and '%s' both adapt '%s' of the base '%s'",
                             a->weights->path, a->modules[i - 1].key, a->modules[i].key,
                             a->modules[i].base_name, base->path);
    return 0;
}

/* The machine epsilon of dtype T (torch.finfo(T).eps, which LyCORIS adds to
 * the norms). */
static double dtype_eps(dora_dtype t)
{
    switch (t) {
    case DORA_DT_F16:
        return 0x1p-10;
    case DORA_DT_BF16:
        return 0x1p-7;
    case DORA_DT_F64:
        return DBL_EPSILON;
    default:
        return FLT_EPSILON;
    }
}

int kohya_dora(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
               int64_t in, dora_err *err)
{
    const dora_tensor *ds = m->dora_scale;
    /* a conv's column norms are per input channel, over its kernel positions */
    const int64_t ch = b->ndim == 4 ? b->shape[1] : in, per = in / (ch ? ch : 1);
    const int cols = m->dora_cols >= 0 ? m->dora_cols : out != 1;
    char s[256];
    dora_shape_str(ds, s, sizeof s);
    if ((int64_t)ds->numel != (cols ? ch : out))
        return dora_errf(err, "'%s': tensor '%s' is %s, but its module's base '%s' has %lld %s",
                         a->weights->path, ds->name, s, b->name, (long long)(cols ? ch : out),
                         cols ? "input channels ([1, in]: column norms)"
                              : "output rows ([out, 1]: row norms)");
    if (cols && out * in > KOHYA_DENSE_MAX)
        return dora_errf(err, "'%s': module '%s': a column-norm dora_scale makes a dense update; "
                              "this tool forms it for up to %lld entries, not %lld",
                         a->weights->path, m->key, (long long)KOHYA_DENSE_MAX,
                         (long long)(out * in));
    const int64_t r = m->r;
    double *v = adapter_base_rows(b, 0, out, in, err);
    double *rd = malloc((size_t)(r * in + out * r + (cols ? ch : 0) + 1) * sizeof *rd);
    if (!v || !rd) {
        free(v);
        free(rd);
        return v ? dora_errf(err, "out of memory for '%s'", m->key) : -1;
    }
    double *ld = rd + r * in, *cn = ld + out * r;
    for (int64_t k = 0; k < r; k++)
        for (int64_t j = 0; j < in; j++)
            rd[k * in + j] = dora_matrix_get(&m->R, k, j);
    for (int64_t i = 0; i < out; i++)
        for (int64_t k = 0; k < r; k++)
            ld[i * r + k] = m->scale * dora_matrix_get(&m->L, i, k);
    for (int64_t i = 0; i < out; i++) /* V = W0 + s L R */
        for (int64_t k = 0; k < r; k++)
            for (int64_t j = 0; j < in; j++)
                v[i * in + j] += ld[i * r + k] * rd[k * in + j];
    const double eps = dtype_eps(ds->dtype);
    int rc = 0;
    if (!cols) { /* rows: the magnitude dora_scale_n |V[n]| / (|V[n]| + eps) */
        dora_tensor *g = adapter_own(m, ds, out, 1);
        if (!g) {
            rc = dora_errf(err, "out of memory for '%s'", m->key);
        } else {
            double *gd = (double *)(void *)g->data;
            for (int64_t i = 0; i < out; i++) {
                double n2 = 0;
                for (int64_t j = 0; j < in; j++)
                    n2 += v[i * in + j] * v[i * in + j];
                double n = sqrt(n2);
                gd[i] = dora_elem_to_f64(ds->data + (size_t)i * dora_dtype_size(ds->dtype),
                                         ds->dtype) * n / (n + eps);
            }
            m->magnitude = g;
        }
    } else { /* columns: W_t = V diag(dora_scale_j / (|V[:, j]| + eps)), dense */
        for (int64_t c = 0; c < ch; c++)
            cn[c] = 0;
        for (int64_t i = 0; i < out; i++)
            for (int64_t j = 0; j < in; j++)
                cn[j / per] += v[i * in + j] * v[i * in + j];
        for (int64_t c = 0; c < ch; c++)
            cn[c] = dora_elem_to_f64(ds->data + (size_t)c * dora_dtype_size(ds->dtype),
                                     ds->dtype) / (sqrt(cn[c]) + eps);
        dora_tensor *wt = adapter_own(m, ds, out, in);
        if (!wt) {
            rc = dora_errf(err, "out of memory for the merged weight of '%s'", m->key);
        } else {
            double *wd = (double *)(void *)wt->data;
            for (int64_t i = 0; i < out; i++)
                for (int64_t j = 0; j < in; j++)
                    wd[i * in + j] = v[i * in + j] * cn[j / per];
            wt->ndim = b->ndim; /* the base's shape, as a replacement has */
            for (int d = 0; d < b->ndim; d++)
                wt->shape[d] = b->shape[d];
            m->kind = DORA_ADAPTED_SAVED;
            m->saved = wt;
        }
    }
    for (int64_t i = 0; rc == 0 && i < out * in; i++)
        if (!isfinite(v[i]))
            rc = dora_errf(err, "'%s': module '%s': the merged weight holds NaN or Inf (row "
                                "%lld)",
                           a->weights->path, m->key, (long long)(i / in));
    free(v);
    free(rd);
    return rc;
}
