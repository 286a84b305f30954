/* kohya.c - kohya-ss sd-scripts, LyCORIS and OneTrainer adapter files: one
 * .safetensors, no adapter_config.json, keys PREFIX_MODULE.SUFFIX with the
 * module path's '.' written as '_'. The rules are in include/dora/adapter.h
 * ("kohya") and docs/adapters.md. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
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
#define KOHYA_DENSE_MAX ((int64_t)1 << 26) /* entries of a column-form DoRA weight (512 MiB) */
#define KOHYA_MAX_LISTED 8 /* candidates named in an ambiguity error */
#define KOHYA_OFT_MAX_BLOCK 1024 /* rows of a Diag-OFT block (a b^3 solve each) */

/* Element I of tensor T viewed flat, as a double. */
static double at_f64(const dora_tensor *t, int64_t i)
{
    return dora_elem_to_f64(t->data + (size_t)i * dora_dtype_size(t->dtype), t->dtype);
}

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

int dora_kohya_name(const char *name, int64_t *n)
{
    static const char ext[] = ".safetensors";
    size_t len = strlen(name), el = sizeof ext - 1;
    if (len <= el || strcmp(name + len - el, ext) != 0)
        return 0;
    len -= el;
    /* OneTrainer: PREFIX{timestamp}-save-{global_step}-{epoch}-{epoch_step} */
    for (const char *sv = strstr(name, "-save-"); sv; sv = strstr(sv + 1, "-save-")) {
        const char *p = sv + 6;
        size_t g = strspn(p, "0123456789"), e, es;
        if (g == 0 || g > 19 || p[g] != '-' || (e = strspn(p + g + 1, "0123456789")) == 0 ||
            p[g + 1 + e] != '-' || (es = strspn(p + g + 2 + e, "0123456789")) == 0 ||
            (size_t)(p + g + 2 + e + es - name) != len)
            continue;
        char buf[24];
        memcpy(buf, p, g);
        buf[g] = '\0';
        return util_parse_i64(buf, 0, INT64_MAX, n) == 0 ? 1 : -1;
    }
    size_t d = 0; /* the digits at the end of the stem */
    while (d < len && name[len - 1 - d] >= '0' && name[len - 1 - d] <= '9')
        d++;
    if (d == 0 || d == len)
        return 0;
    const char *num = name + len - d;
    int kind;
    if (d + 4 <= len && strncmp(num - 4, "-of-", 4) == 0)
        return 0; /* a shard, NAME-00001-of-00002 */
    if (d + 5 < len && strncmp(num - 5, "-step", 5) == 0)
        kind = 1; /* kohya's STEP_FILE_NAME "NAME-step%08d" */
    else if (num[-1] == '-')
        kind = 2; /* kohya's EPOCH_FILE_NAME "NAME-%06d" */
    else
        return 0;
    char buf[24];
    if (d > 19)
        return -1;
    memcpy(buf, num, d);
    buf[d] = '\0';
    return util_parse_i64(buf, 0, INT64_MAX, n) == 0 ? kind : -1;
}

/* ss_steps of the kohya file PATH: 1 and *STEP, 0 without it, -1 (ERR) when
 * the file cannot be read or the value is not a step. */
static int meta_steps(const char *path, int64_t *step, dora_err *err)
{
    dora_model *m;
    if (dora_model_open(&m, path, err) != 0)
        return -1;
    const st_file *f = m->files[0];
    int rc = 0;
    for (size_t i = 0; i < f->nmeta && rc == 0; i++)
        if (strcmp(f->meta_keys[i], "ss_steps") == 0)
            rc = util_parse_i64(f->meta_values[i], 0, INT64_MAX, step) == 0
                     ? 1
                     : dora_errf(err, "'%s': metadata ss_steps '%.40s' is not a step", path,
                                 f->meta_values[i]);
    dora_model_close(m);
    return rc;
}

static int step_order(const void *pa, const void *pb)
{
    const dora_step *a = pa, *b = pb;
    return (a->step > b->step) - (a->step < b->step);
}

/* DIR's unnumbered kohya files: added to RUN at their ss_steps (when TAKE),
 * else noted. */
static int add_unnumbered(dora_run *run, const char *dir, int take, dora_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder", dir);
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        int64_t step;
        char *p = util_has_suffix(de->d_name, ".safetensors") &&
                          dora_kohya_name(de->d_name, &step) == 0
                      ? util_join(dir, de->d_name)
                      : NULL;
        if (!p || !util_is_file(p) || !dora_kohya_probe(p)) {
            free(p);
            continue;
        }
        int ms = meta_steps(p, &step, err);
        const dora_step *same = NULL;
        for (size_t i = 0; ms == 1 && i < run->nsteps; i++)
            if (run->steps[i].step == step)
                same = &run->steps[i];
        dora_step *ns = NULL;
        if (ms < 0) {
            rc = -1;
        } else if (ms == 0 || !take) {
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': left out: %s", p,
                           ms == 0 ? "no step in its name or its metadata (ss_steps)"
                                   : "the run's other files give epochs, not steps");
        } else if (same) {
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': left out: at step %lld (ss_steps) like '%s'", p,
                           (long long)step, same->path);
        } else if (!(ns = realloc(run->steps, (run->nsteps + 1) * sizeof *ns))) {
            rc = dora_errf(err, "out of memory");
        } else {
            run->steps = ns;
            ns[run->nsteps] = (dora_step){.step = step, .path = strdup(p)};
            rc = ns[run->nsteps].path ? 0 : dora_errf(err, "out of memory");
            run->nsteps += rc == 0;
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': no step in its name: step %lld from its metadata (ss_steps)", p,
                           (long long)step);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

int dora_kohya_steps(dora_run *run, const char *dir, int epochs, dora_err *err)
{
    /* names alone do not make a kohya run: every file must hold kohya keys */
    for (size_t i = 0; i < run->nsteps; i++)
        if (!dora_kohya_probe(run->steps[i].path)) {
            for (size_t k = 0; k < run->nsteps; k++)
                free(run->steps[k].path);
            free(run->steps);
            run->steps = NULL;
            run->nsteps = 0;
            return 0;
        }
    size_t with = 0;
    for (size_t i = 0; i < run->nsteps; i++) {
        int64_t ms;
        int r = meta_steps(run->steps[i].path, &ms, err);
        if (r < 0)
            return -1;
        with += r == 1;
        if (r == 1 && !epochs && ms != run->steps[i].step)
            return dora_errf(err, "'%s': the name says step %lld but its metadata ss_steps says "
                                  "%lld",
                             run->steps[i].path, (long long)run->steps[i].step, (long long)ms);
        if (r == 1)
            run->steps[i].step = ms;
    }
    if (epochs && with != 0 && with != run->nsteps)
        return dora_errf(err, "'%s': %zu of its %zu per-epoch files (NAME-E.safetensors) give "
                              "their step (metadata ss_steps) and the others do not: epochs and "
                              "steps would be mixed",
                         dir, with, run->nsteps);
    if (epochs && with == 0)
        dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                       "'%s': kohya's per-epoch files (NAME-E.safetensors) without ss_steps "
                       "metadata: epoch E taken as the step",
                       dir);
    if (add_unnumbered(run, dir, with == run->nsteps, err) != 0)
        return -1;
    qsort(run->steps, run->nsteps, sizeof *run->steps, step_order);
    for (size_t i = 1; i < run->nsteps; i++)
        if (run->steps[i].step == run->steps[i - 1].step)
            return dora_errf(err, "'%s' and '%s' are both step %lld", run->steps[i - 1].path,
                             run->steps[i].path, (long long)run->steps[i].step);
    return 0;
}

int dora_kohya_single(dora_run *run, const char *dir, dora_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder", dir);
    char *found[KOHYA_MAX_LISTED + 1] = {0};
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step;
        char *p = util_has_suffix(de->d_name, ".safetensors") &&
                          dora_kohya_name(de->d_name, &step) == 0
                      ? util_join(dir, de->d_name)
                      : NULL;
        if (p && util_is_file(p) && dora_kohya_probe(p) && n <= KOHYA_MAX_LISTED)
            found[n++] = p;
        else
            free(p);
    }
    closedir(d);
    int rc = 0;
    if (n > 1) {
        char list[1024] = "";
        size_t off = 0;
        for (size_t k = 0; k < n && k < KOHYA_MAX_LISTED && off < sizeof list; k++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s'%s'", k ? ", " : "",
                                    found[k]);
        rc = dora_errf(err, "'%s': %s%zu kohya files without a step in their names (%s%s): "
                            "which is which step is ambiguous; give one file as the run, or "
                            "name them NAME-stepS.safetensors",
                       dir, n > KOHYA_MAX_LISTED ? "more than " : "",
                       n > KOHYA_MAX_LISTED ? (size_t)KOHYA_MAX_LISTED : n, list,
                       n > KOHYA_MAX_LISTED ? ", ..." : "");
    } else if (n == 1) {
        int64_t step = 0;
        int ms = meta_steps(found[0], &step, err);
        dora_step *ns = ms < 0 ? NULL : malloc(sizeof *ns);
        if (ms < 0) {
            rc = -1;
        } else if (!ns) {
            rc = dora_errf(err, "out of memory");
        } else {
            *ns = (dora_step){.step = ms == 1 ? step : 0, .path = found[0]};
            found[0] = NULL;
            run->steps = ns;
            run->nsteps = 1;
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           ms == 1 ? "'%s': the folder's one kohya file, no step in its name: a "
                                     "run of one step, step %lld from its metadata (ss_steps)"
                                   : "'%s': the folder's one kohya file, no step in its name "
                                     "or its metadata (ss_steps): a run of one step, taken as "
                                     "step %lld",
                           ns->path, (long long)ns->step);
        }
    }
    for (size_t k = 0; k < n; k++)
        free(found[k]);
    return rc;
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

/* The scale's alpha: a finite positive scalar. */
static int read_alpha(const dora_adapter *a, const dora_tensor *t, double *alpha, dora_err *err)
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
    if (alpha_t && read_alpha(a, alpha_t, &alpha, err) != 0)
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

/* LyCORIS's (IA)^3 on_input: one integer (or boolean, or floating) 0 or 1. */
static int read_flag(const dora_adapter *a, const dora_tensor *t, int *v, dora_err *err)
{
    double x = NAN;
    if (t->numel == 1 && t->nbytes >= dora_dtype_size(t->dtype)) {
        if (t->dtype == DORA_DT_I64 || t->dtype == DORA_DT_U64)
            x = (double)le_load64(t->data);
        else if (t->dtype == DORA_DT_I32 || t->dtype == DORA_DT_U32)
            x = (double)le_load32(t->data);
        else if (t->dtype == DORA_DT_BOOL || t->dtype == DORA_DT_U8 || t->dtype == DORA_DT_I8)
            x = t->data[0];
        else
            x = dora_elem_to_f64(t->data, t->dtype);
    }
    if (x != 0 && x != 1)
        return dora_errf(err, "'%s': tensor '%s' must be one number, 0 (output rows scaled) or 1 "
                              "(input columns: train_on_input), as LyCORIS's (IA)^3 saves it",
                         a->weights->path, t->name);
    *v = x == 1;
    return 0;
}

/* LyCORIS's full (diff [out, in...]: W_t = W0 + diff, formed densely against
 * the base by kohya_resolve; diff_b, the bias change, is not analysed, as no
 * bias is) and (IA)^3 (weight [n] or conv [1, n, 1, 1]: W_t = W0 * (1 +
 * weight) on the output rows, or on the input columns when on_input is 1:
 * ia3.py make_weight), with OTHER = diff, diff_b, weight, on_input. */
static int build_other(dora_adapter *a, const pending *p, const dora_tensor *const other[4],
                       dora_adapted *m, const char **fam, dora_err *err)
{
    const char *wf = a->weights->path, *meth;
    const dora_tensor *diff = other[0], *w = other[2], *onin = other[3];
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    m->r = 1;
    m->alpha = 1;
    m->scale = 1;
    if (diff || other[1]) {
        if (!diff || w || onin)
            return dora_errf(err, "'%s': module '%s': %s", wf, p->module,
                             diff ? "full's diff with (IA)^3's weight / on_input"
                                  : "diff_b (LyCORIS full's bias change) without diff");
        if (!dora_dtype_is_analysable(diff->dtype) || diff->ndim < 2)
            return dora_errf(err, "'%s': tensor '%s' is %s of rank %d, not a floating weight "
                                  "change of rank >= 2",
                             wf, diff->name, dora_dtype_name(diff->dtype), diff->ndim);
        meth = "ft"; /* the change of the whole weight, as a full fine-tune's */
        m->kind = DORA_ADAPTED_SAVED;
        m->saved = diff;
        m->aux = diff; /* W0 + diff is formed by kohya_resolve */
        m->layout = "full";
    } else {
        if (!w || !onin)
            return dora_errf(err, "'%s': module '%s' has %s but no %s: LyCORIS's (IA)^3 saves "
                                  "both (on_input says whether rows or input columns are scaled)",
                             wf, p->module, w ? w->name : onin->name, w ? "on_input" : "weight");
        int ff = 0;
        if (read_flag(a, onin, &ff, err) != 0)
            return -1;
        int ok = dora_dtype_is_analysable(w->dtype) &&
                 (w->ndim == 1 || (w->ndim >= 3 && w->shape[0] == 1));
        for (int d = 2; ok && d < w->ndim; d++)
            ok = w->shape[d] == 1;
        if (!ok) {
            char s[256];
            dora_shape_str(w, s, sizeof s);
            return dora_errf(err, "'%s': tensor '%s' is %s %s: LyCORIS's (IA)^3 weight is "
                                  "floating [n] (linear) or [1, n, 1, 1] (conv)",
                             wf, w->name, dora_dtype_name(w->dtype), s);
        }
        meth = "ia3";
        m->kind = DORA_ADAPTED_LORA;
        m->ia3 = w;
        m->ia3_ff = ff;
        m->ia3_add = 1; /* LyCORIS scales by 1 + weight */
        m->layout = ff ? "ia3-ff" : "ia3";
    }
    if (*fam && strcmp(*fam, meth) != 0)
        return dora_errf(err, "'%s': module '%s' is %s but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, meth, *fam);
    *fam = meth;
    return 0;
}

/* LyCORIS's GLoRA on a linear module, G = (a1, a2, b1, b2).weight: glora.py
 * make_weight (which get_merged_weight uses) is s (b1 b2 + W0 a1 a2), s =
 * alpha / r, with a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in]. As L R:
 * L = [b1, W0 a1] (formed by kohya_resolve against the base), R = [b2; a2]. */
static int build_glora(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                       const dora_tensor *const g[4], dora_adapted *m, const char **fam,
                       dora_err *err)
{
    const char *wf = a->weights->path;
    static const char *const names[4] = {"a1.weight", "a2.weight", "b1.weight", "b2.weight"};
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    for (int i = 0; i < 4; i++) {
        if (!g[i])
            return dora_errf(err, "'%s': module '%s' has GLoRA tensors but no %s", wf, p->module,
                             names[i]);
        if (g[i]->ndim != 2 || !dora_dtype_is_analysable(g[i]->dtype)) {
            char s[256];
            dora_shape_str(g[i], s, sizeof s);
            return dora_errf(err, "'%s': tensor '%s' is %s %s: this tool reads GLoRA on linear "
                                  "modules (floating 2-D factors), not on convs",
                             wf, g[i]->name, dora_dtype_name(g[i]->dtype), s);
        }
    }
    const dora_tensor *a1 = g[0], *a2 = g[1], *b1 = g[2], *b2 = g[3];
    const int64_t r = a2->shape[0], in = a2->shape[1], out = b1->shape[0];
    const dora_tensor *bad = a1->shape[0] != in || a1->shape[1] != r ? a1
                             : b1->shape[1] != r                      ? b1
                             : b2->shape[0] != r || b2->shape[1] != in ? b2
                                                                       : NULL;
    if (bad || r < 1) {
        char s[256];
        dora_shape_str(bad ? bad : a2, s, sizeof s);
        return dora_errf(err, "'%s': tensor '%s' is %s, but GLoRA's factors are a1 [in, r], a2 "
                              "[r, in], b1 [out, r], b2 [r, in] with a2's r = %lld and in = %lld",
                         wf, (bad ? bad : a2)->name, s, (long long)r, (long long)in);
    }
    double alpha = 0;
    if ((alpha_t && read_alpha(a, alpha_t, &alpha, err) != 0) ||
        fam_fits(a, p->module, 2 * r, out + in, err) != 0)
        return -1;
    dora_tensor *R = adapter_own(m, a2, 2 * r, in), *L = adapter_own(m, b1, out, 2 * r);
    if (!R || !L)
        return dora_errf(err, "out of memory for the factors of '%s'", p->module);
    double *rd = (double *)(void *)R->data, *ld = (double *)(void *)L->data;
    for (int64_t k = 0; k < r; k++)
        for (int64_t j = 0; j < in; j++) {
            rd[k * in + j] = at_f64(b2, k * in + j);
            rd[(r + k) * in + j] = at_f64(a2, k * in + j);
        }
    for (int64_t i = 0; i < out; i++) /* W0 a1, the other r columns: kohya_resolve */
        for (int64_t k = 0; k < r; k++)
            ld[i * 2 * r + k] = at_f64(b1, i * r + k);
    m->kind = DORA_ADAPTED_LORA;
    m->layout = "glora";
    m->aux = a1;
    m->R = adapter_matrix(R, 0);
    m->L = adapter_matrix(L, 0);
    m->r = 2 * r;
    m->alpha = alpha_t ? alpha : (double)r;
    m->scale = alpha_t ? alpha / (double)r : 1.0;
    if (adapter_check_rank_scale(a, p->module, m, "GLoRA's 2 r", err) != 0)
        return -1;
    if (*fam && strcmp(*fam, "glora") != 0)
        return dora_errf(err, "'%s': module '%s' is glora but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, *fam);
    *fam = "glora";
    return 0;
}

/* LyCORIS's Diag-OFT, OFT = (oft_blocks [n, b, b], rescale [n b, 1...] or
 * NULL): formed against the base by kohya_resolve (form_oft). alpha is its
 * constraint (0: none). BOFT's 4-D oft_blocks (butterfly factors) are refused. */
static int build_oft(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                     const dora_tensor *const oft[2], dora_adapted *m, const char **fam,
                     dora_err *err)
{
    const char *wf = a->weights->path;
    const dora_tensor *blk = oft[0], *rs = oft[1];
    if (!(m->key = strdup(p->module)) || !(m->base_name = strdup(p->module)))
        return dora_errf(err, "out of memory");
    if (!blk)
        return dora_errf(err, "'%s': module '%s' has '%s' but no oft_blocks", wf, p->module,
                         rs->name);
    char s[256];
    dora_shape_str(blk, s, sizeof s);
    if (blk->ndim == 4)
        return dora_errf(err, "'%s': tensor '%s' is %s: LyCORIS's BOFT (butterfly OFT, 4-D "
                              "oft_blocks), which this tool does not read (it reads Diag-OFT's "
                              "[blocks, b, b])",
                         wf, blk->name, s);
    if (blk->ndim != 3 || blk->shape[1] != blk->shape[2] || blk->shape[1] < 1 ||
        !dora_dtype_is_analysable(blk->dtype))
        return dora_errf(err, "'%s': tensor '%s' is %s %s: Diag-OFT's oft_blocks are floating "
                              "[blocks, b, b]",
                         wf, blk->name, dora_dtype_name(blk->dtype), s);
    const int64_t out = blk->shape[0] * blk->shape[1];
    if (blk->shape[1] > KOHYA_OFT_MAX_BLOCK)
        return dora_errf(err, "'%s': tensor '%s' is %s: Diag-OFT blocks of %lld rows; this tool "
                              "solves blocks of up to %d (LyCORIS's are the factor, a few tens)",
                         wf, blk->name, s, (long long)blk->shape[1], KOHYA_OFT_MAX_BLOCK);
    if (rs) {
        int ok = dora_dtype_is_analysable(rs->dtype) && rs->ndim >= 2 && rs->shape[0] == out;
        for (int d = 1; ok && d < rs->ndim; d++)
            ok = rs->shape[d] == 1;
        if (!ok) {
            dora_shape_str(rs, s, sizeof s);
            return dora_errf(err, "'%s': tensor '%s' is %s %s: OFT's rescale is floating [out, "
                                  "1(, 1, 1)] with out = %lld (blocks x b)",
                             wf, rs->name, dora_dtype_name(rs->dtype), s, (long long)out);
        }
    }
    double c = 0; /* the constraint: alpha as saved, 0 for none */
    if (alpha_t) {
        c = alpha_t->numel == 1 ? dora_elem_to_f64(alpha_t->data, alpha_t->dtype) : NAN;
        if (!isfinite(c) || c < 0)
            return dora_errf(err, "'%s': tensor '%s' must be one finite number >= 0 (OFT's "
                                  "constraint)",
                             wf, alpha_t->name);
    }
    m->kind = DORA_ADAPTED_SAVED;
    m->saved = blk;
    m->aux = blk;
    m->rescale = rs;
    m->layout = "oft";
    m->r = blk->shape[1];
    m->alpha = c;
    m->scale = 1;
    if (*fam && strcmp(*fam, "oft") != 0)
        return dora_errf(err, "'%s': module '%s' is oft but earlier modules are %s: one family "
                              "per file",
                         wf, p->module, *fam);
    *fam = "oft";
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
            rc = build_oft(a, &p, alpha, oft, &a->modules[a->nmodules++], &fam, err);
        else if (any_glora && (factors || any_other || dscale))
            rc = dora_errf(err, "'%s': module '%s' mixes GLoRA ('%s') with another family or "
                                "dora_scale",
                           w->path, p.module, any_glora->name);
        else if (any_glora)
            rc = build_glora(a, &p, alpha, glora, &a->modules[a->nmodules++], &fam, err);
        else if (any_other && (factors || alpha || dscale))
            rc = dora_errf(err, "'%s': module '%s' mixes LyCORIS's full or (IA)^3 ('%s') with "
                                "%s",
                           w->path, p.module, any_other->name,
                           factors ? "another family's factors" : "alpha or dora_scale");
        else if (any_other)
            rc = build_other(a, &p, other, &a->modules[a->nmodules++], &fam, err);
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

/* W0 + diff, in place on V = W0's [out, in] rows. */
static int merge_full(const dora_adapter *a, const dora_adapted *m, double *v, int64_t out,
                      int64_t in, dora_err *err)
{
    (void)a;
    (void)err;
    for (int64_t i = 0; i < out * in; i++)
        v[i] += at_f64(m->aux, i);
    return 0;
}

/* X = A^-1 B for the N x N float64 A (destroyed) and B (X in place), by
 * Gaussian elimination with partial pivoting; -1 when A is singular. */
static int solve(double *A, double *B, int64_t n)
{
    for (int64_t c = 0; c < n; c++) {
        int64_t piv = c;
        for (int64_t i = c + 1; i < n; i++)
            if (fabs(A[i * n + c]) > fabs(A[piv * n + c]))
                piv = i;
        if (A[piv * n + c] == 0)
            return -1;
        for (int64_t j = 0; piv != c && j < n; j++) {
            double t = A[c * n + j];
            A[c * n + j] = A[piv * n + j];
            A[piv * n + j] = t;
            t = B[c * n + j];
            B[c * n + j] = B[piv * n + j];
            B[piv * n + j] = t;
        }
        for (int64_t i = c + 1; i < n; i++) {
            double f = A[i * n + c] / A[c * n + c];
            for (int64_t j = 0; j < n; j++) {
                A[i * n + j] -= f * A[c * n + j];
                B[i * n + j] -= f * B[c * n + j];
            }
        }
    }
    for (int64_t c = n - 1; c >= 0; c--)
        for (int64_t j = 0; j < n; j++) {
            double x = B[c * n + j];
            for (int64_t k = c + 1; k < n; k++)
                x -= A[c * n + k] * B[k * n + j];
            B[c * n + j] = x / A[c * n + c];
        }
    return 0;
}

/* Diag-OFT (diag_oft.py get_r, make_weight): Q = blocks - blocks^T, scaled to
 * norm alpha out when alpha > 0 and |Q| + 1e-8 exceeds it; R_k = (I + Q_k)
 * (I - Q_k)^-1; block k of W_t is R_k^T W0_k (einsum "k n m, k n ... -> k m
 * ..."), R_k^T = (I + Q_k)^-1 (I - Q_k) as Q_k is skew; rows times rescale. */
static int merge_oft(const dora_adapter *a, const dora_adapted *m, double *v, int64_t out,
                     int64_t in, dora_err *err)
{
    const dora_tensor *blk = m->aux;
    const int64_t nb = blk->shape[0], b = blk->shape[1];
    double *q = malloc((size_t)(nb * b * b + 2 * b * b + b * in) * sizeof *q);
    if (!q)
        return dora_errf(err, "out of memory for the merged weight of '%s'", m->key);
    double *ap = q + nb * b * b, *rt = ap + b * b, *tmp = rt + b * b, n2 = 0;
    for (int64_t k = 0; k < nb; k++)
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < b; j++) {
                double x = at_f64(blk, (k * b + i) * b + j) - at_f64(blk, (k * b + j) * b + i);
                q[(k * b + i) * b + j] = x;
                n2 += x * x;
            }
    const double limit = m->alpha * (double)out, qn = sqrt(n2) + 1e-8;
    const double f = m->alpha > 0 && qn > limit ? limit / qn : 1.0;
    int rc = 0;
    for (int64_t k = 0; k < nb && rc == 0; k++) {
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < b; j++) {
                double x = f * q[(k * b + i) * b + j];
                ap[i * b + j] = (double)(i == j) + x;
                rt[i * b + j] = (double)(i == j) - x;
            }
        if (solve(ap, rt, b) != 0) {
            rc = dora_errf(err, "'%s': tensor '%s': block %lld gives a singular I + Q",
                           a->weights->path, blk->name, (long long)k);
            break;
        }
        double *w = v + k * b * in;
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < in; j++) {
                double x = 0;
                for (int64_t n = 0; n < b; n++)
                    x += rt[i * b + n] * w[n * in + j];
                tmp[i * in + j] = x;
            }
        memcpy(w, tmp, (size_t)(b * in) * sizeof *w);
    }
    for (int64_t i = 0; rc == 0 && m->rescale && i < out; i++)
        for (int64_t j = 0; j < in; j++)
            v[i * in + j] *= at_f64(m->rescale, i);
    free(q);
    return rc;
}

/* A LyCORIS full or OFT module against base tensor B: W_t formed by MERGE on
 * W0's rows in float64, in B's shape, owned by M (formed again at each check:
 * the last owned tensor); B's rows must be OUT (0: any) and its shape SHAPE's
 * when SHAPE is given. */
static int form_dense(const dora_adapter *a, dora_adapted *m, const dora_tensor *b,
                      const dora_tensor *shape, int64_t rows,
                      int (*merge)(const dora_adapter *, const dora_adapted *, double *, int64_t,
                                   int64_t, dora_err *),
                      dora_err *err)
{
    if (m->nowned > 0) {
        dora_tensor *d = m->owned[--m->nowned];
        free((void *)d->data);
        free(d);
    }
    m->saved = m->aux;
    if (!b)
        return 0;
    int same = dora_dtype_is_analysable(b->dtype) && b->ndim >= 2 &&
               (!shape || b->ndim == shape->ndim) && (!rows || b->shape[0] == rows);
    for (int d = 0; shape && same && d < b->ndim; d++)
        same = b->shape[d] == shape->shape[d];
    if (!same) {
        char sd[256], sb[256];
        dora_shape_str(m->aux, sd, sizeof sd);
        dora_shape_str(b, sb, sizeof sb);
        return dora_errf(err, "'%s': tensor '%s' is %s, but the base tensor '%s' is %s %s",
                         a->weights->path, m->aux->name, sd, b->name, dora_dtype_name(b->dtype),
                         sb);
    }
    const int64_t out = dora_tensor_rows(b), in = dora_tensor_cols(b);
    if (out * in > KOHYA_DENSE_MAX)
        return dora_errf(err, "'%s': module '%s': LyCORIS's %s update is dense; this tool forms "
                              "it for up to %lld entries, not %lld",
                         a->weights->path, m->key, m->layout, (long long)KOHYA_DENSE_MAX,
                         (long long)(out * in));
    double *v = adapter_base_rows(b, 0, out, in, err);
    if (!v)
        return -1;
    dora_tensor *wt = adapter_own(m, m->aux, out, in);
    int rc = wt ? merge(a, m, v, out, in, err)
                : dora_errf(err, "out of memory for the merged weight of '%s'", m->key);
    for (int64_t i = 0; rc == 0 && i < out * in; i++)
        if (!isfinite(v[i]))
            rc = dora_errf(err, "'%s': module '%s': the merged weight holds NaN or Inf (row %lld)",
                           a->weights->path, m->key, (long long)(i / in));
    if (rc == 0) {
        memcpy((void *)wt->data, v, (size_t)(out * in) * sizeof *v);
        wt->ndim = b->ndim;
        for (int d = 0; d < b->ndim; d++)
            wt->shape[d] = b->shape[d];
        m->saved = wt;
    }
    free(v);
    return rc;
}

/* A GLoRA module against base tensor B [out, in]: L's columns r..2r-1 = W0 a1. */
static int form_glora(const dora_adapter *a, dora_adapted *m, const dora_tensor *b,
                      dora_err *err)
{
    const dora_tensor *a1 = m->aux;
    const int64_t r = m->r / 2, out = m->L.rows, in = m->R.cols;
    if (!b)
        return 0;
    if (b->ndim != 2 || b->shape[0] != out || b->shape[1] != in || !dora_dtype_is_analysable(b->dtype)) {
        char sb[256];
        dora_shape_str(b, sb, sizeof sb);
        return dora_errf(err, "'%s': module '%s': GLoRA's update is [%lld, %lld] but the base "
                              "tensor '%s' is %s %s",
                         a->weights->path, m->key, (long long)out, (long long)in, b->name,
                         dora_dtype_name(b->dtype), sb);
    }
    double *w0 = adapter_base_rows(b, 0, out, in, err);
    if (!w0)
        return -1;
    double *ld = (double *)(void *)m->L.t->data;
    for (int64_t i = 0; i < out; i++)
        for (int64_t k = 0; k < r; k++) {
            double sum = 0;
            for (int64_t j = 0; j < in; j++)
                sum += w0[i * in + j] * at_f64(a1, j * r + k);
            ld[i * 2 * r + r + k] = sum;
        }
    free(w0);
    for (int64_t i = 0; i < out * 2 * r; i++)
        if (!isfinite(ld[i]))
            return dora_errf(err, "'%s': module '%s': W0 a1 holds NaN or Inf", a->weights->path,
                             m->key);
    return 0;
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
        if ((rc = full    ? form_dense(a, m, bt, m->aux, 0, merge_full, err)
                  : oft   ? form_dense(a, m, bt, NULL, m->aux->shape[0] * m->aux->shape[1],
                                       merge_oft, err)
                  : glora ? form_glora(a, m, bt, err)
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
