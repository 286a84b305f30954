/* manifest.c - reading and checking a batch manifest; see include/dora/batch.h. */
#define _XOPEN_SOURCE 700 /* strdup, with POSIX 2008 */
#include "dora/batch.h"
#include "dora/run.h"
#include "dora/adapter.h"
#include "dora/align.h"
#include "batch/common.h"
#include "core/util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define MANIFEST_MAX_BYTES (16u << 20)

/* DIR/P (or P when absolute), cleaned lexically (util_path_clean), so that a
 * manifest in analysis/ naming "../data/x" gives "data/x". */
static char *resolve_path(const char *dir, const char *p)
{
    char *joined = p[0] == '/' ? strdup(p) : util_join(dir, p);
    char *out = joined ? util_path_clean(joined) : NULL;
    free(joined);
    return out;
}

typedef struct mctx {
    const char *file;
    const char *dir;
    dora_err *err;
} mctx;

static int mbad(const mctx *c, const char *where, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int mbad(const mctx *c, const char *where, const char *fmt, ...)
{
    char msg[DORA_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dora_errf(c->err, "'%s': %s: %s", c->file, where, msg);
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Every key of OBJ is in ALLOWED (NULL-terminated) or is "comment". */
static int check_keys(const mctx *c, const char *where, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "comment") == 0)
            continue;
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i]) {
            char list[512];
            size_t used = 0;
            list[0] = '\0';
            for (size_t k = 0; allowed[k] && used < sizeof list - 40; k++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s'%s'", k ? ", " : "",
                                         allowed[k]);
            return mbad(c, where, "unknown key '%s' (known: %s, and 'comment')", key, list);
        }
    }
    return 0;
}

/* A non-empty string under KEY, or NULL in *out when absent and not REQUIRED. */
static int get_str(const mctx *c, const char *where, json_t *obj, const char *key, int required,
                   char **out)
{
    *out = NULL;
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return mbad(c, where, "'%s' is required", key);
        return 0;
    }
    if (!json_is_string(v))
        return mbad(c, where, "'%s' must be a string, not %s", key, json_type_name(v));
    if (json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v))
        return mbad(c, where, "'%s' must be a non-empty string without NUL", key);
    if (!(*out = strdup(json_string_value(v))))
        return dora_errf(c->err, "out of memory");
    return 0;
}

/* A path under KEY, resolved against the manifest's folder. */
static int get_path(const mctx *c, const char *where, json_t *obj, const char *key, int required,
                    char **out)
{
    char *raw;
    if (get_str(c, where, obj, key, required, &raw) != 0)
        return -1;
    if (!raw)
        return 0;
    *out = resolve_path(c->dir, raw);
    free(raw);
    return *out ? 0 : dora_errf(c->err, "out of memory");
}

/* A list of strings (a JSON array, or one string) joined with commas; each
 * item non-empty, without ',', and in KNOWN when KNOWN is not NULL. */
static int get_list(const mctx *c, const char *where, json_t *obj, const char *key,
                    const char *const *known, char **out)
{
    *out = NULL;
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    json_t *one = NULL;
    if (json_is_string(v)) {
        one = json_array();
        json_array_append(one, v);
        v = one;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        json_decref(one);
        return mbad(c, where, "'%s' must be a non-empty list of strings", key);
    }
    size_t total = 1, i;
    json_t *it;
    json_array_foreach(v, i, it) {
        if (!json_is_string(it) || json_string_length(it) == 0 ||
            strchr(json_string_value(it), ',') ||
            strlen(json_string_value(it)) != json_string_length(it)) {
            json_decref(one);
            return mbad(c, where, "%s[%zu] must be a non-empty string without ','", key, i);
        }
        if (known) {
            size_t k = 0;
            while (known[k] && strcmp(known[k], json_string_value(it)) != 0)
                k++;
            if (!known[k]) {
                mbad(c, where, "%s[%zu]: '%s' is not one of", key, i, json_string_value(it));
                for (k = 0; known[k]; k++) {
                    size_t used = strlen(c->err->msg);
                    snprintf(c->err->msg + used, sizeof c->err->msg - used, " %s", known[k]);
                }
                json_decref(one);
                return -1;
            }
        }
        total += json_string_length(it) + 1;
    }
    char *s = malloc(total);
    if (!s) {
        json_decref(one);
        return dora_errf(c->err, "out of memory");
    }
    s[0] = '\0';
    json_array_foreach(v, i, it) {
        if (i)
            strcat(s, ",");
        strcat(s, json_string_value(it));
    }
    json_decref(one);
    *out = s;
    return 0;
}

const char *dora_stat_name(dora_stat s)
{
    static const char *const n[] = {"pearson_r", "within_step_r", "slope", "intercept"};
    return (unsigned)s < 4 ? n[s] : "?";
}

const char *dora_op_name(dora_op o)
{
    static const char *const n[] = {"<", ">", "<=", ">="};
    return (unsigned)o < 4 ? n[o] : "?";
}

static int parse_expect(const mctx *c, const char *where, json_t *o, const dora_study *st,
                        dora_expect *e)
{
    static const char *const keys[] = {"name", "run", "module_kind", "stat", "op", "value", NULL};
    if (!json_is_object(o))
        return mbad(c, where, "must be an object, not %s", json_type_name(o));
    if (check_keys(c, where, o, keys) != 0)
        return -1;
    char *stat = NULL, *op = NULL;
    int rc = -1;
    if (get_str(c, where, o, "name", 0, &e->name) != 0 ||
        get_str(c, where, o, "run", 1, &e->run) != 0 ||
        get_str(c, where, o, "module_kind", 1, &e->kind) != 0 ||
        get_str(c, where, o, "stat", 1, &stat) != 0 || get_str(c, where, o, "op", 1, &op) != 0)
        goto done;
    size_t r = 0;
    while (r < st->nruns && strcmp(st->runs[r].name, e->run) != 0)
        r++;
    if (r == st->nruns) {
        mbad(c, where, "run '%s' is not a run of the study", e->run);
        goto done;
    }
    int si = -1, oi = -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(stat, dora_stat_name((dora_stat)i)) == 0)
            si = i;
        if (strcmp(op, dora_op_name((dora_op)i)) == 0)
            oi = i;
    }
    if (si < 0) {
        mbad(c, where, "stat '%s' is not pearson_r, within_step_r, slope or intercept", stat);
        goto done;
    }
    if (oi < 0) {
        mbad(c, where, "op '%s' is not <, >, <= or >=", op);
        goto done;
    }
    e->stat = (dora_stat)si;
    e->op = (dora_op)oi;
    json_t *v = json_object_get(o, "value");
    if (!v || !json_is_number(v) || !isfinite(json_number_value(v))) {
        mbad(c, where, "'value' must be a finite number%s", v ? "" : " (it is required)");
        goto done;
    }
    e->value = json_number_value(v);
    if (!e->name &&
        !(e->name = batch_xprintf("%s %s %s %s %g", e->run, e->kind, stat, op, e->value))) {
        dora_errf(c->err, "out of memory");
        goto done;
    }
    rc = 0;
done:
    free(stat);
    free(op);
    return rc;
}

static int parse_figures(const mctx *c, const char *where, json_t *o, dora_study *st)
{
    static const char *const keys[] = {"dir", "formats", "kinds", NULL};
    static const char *const formats[] = {"png", "pdf", "svg", NULL};
    if (!json_is_object(o))
        return mbad(c, where, "must be an object, not %s", json_type_name(o));
    if (check_keys(c, where, o, keys) != 0 || get_path(c, where, o, "dir", 1, &st->fig_dir) != 0 ||
        get_list(c, where, o, "formats", formats, &st->fig_formats) != 0 ||
        get_list(c, where, o, "kinds", NULL, &st->fig_kinds) != 0)
        return -1;
    if (!st->fig_formats && !(st->fig_formats = strdup("png")))
        return dora_errf(c->err, "out of memory");
    st->figures = 1;
    return 0;
}

/* "rename" (a rule or a list of rules), "transpose", "no_split" and
 * "base_quant": analyze's --rename, --transpose, --no-split, --base-quant. */
static int parse_layout(const mctx *c, const char *where, json_t *o, dora_study *st)
{
    json_t *rn = json_object_get(o, "rename"), *it;
    size_t i;
    if (rn) {
        size_t n = json_is_array(rn) ? json_array_size(rn) : 1;
        if (!(json_is_string(rn) || (json_is_array(rn) && n > 0)))
            return mbad(c, where, "'rename' must be a rule 'REGEX=REPLACEMENT' or a non-empty "
                                  "list of them, not %s", json_type_name(rn));
        if (n > DORA_MAX_RENAMES)
            return mbad(c, where, "at most %d 'rename' rules", DORA_MAX_RENAMES);
        if (!(st->renames = calloc(n, sizeof *st->renames)))
            return dora_errf(c->err, "out of memory");
        for (i = 0; i < n; i++) {
            it = json_is_array(rn) ? json_array_get(rn, i) : rn;
            dora_err e;
            if (!json_is_string(it) || strlen(json_string_value(it)) != json_string_length(it))
                return mbad(c, where, "rename[%zu] must be a string without NUL", i);
            if (dora_rename_check(json_string_value(it), &e) != 0)
                return mbad(c, where, "rename[%zu]: %s", i, e.msg);
            if (!(st->renames[i] = strdup(json_string_value(it))))
                return dora_errf(c->err, "out of memory");
            st->nrenames = i + 1;
        }
    }
    char *q = NULL;
    if (get_str(c, where, o, "transpose", 0, &st->transpose) != 0 ||
        get_str(c, where, o, "base_quant", 0, &q) != 0)
        return -1;
    if (st->transpose) {
        dora_filter f;
        dora_err e;
        if (dora_filter_compile(&f, st->transpose, NULL, &e) != 0)
            return mbad(c, where, "transpose: %s", e.msg);
        dora_filter_free(&f);
    }
    int bad_q = q && dora_quant_parse(q, &st->base_quant) != 0;
    if (bad_q)
        mbad(c, where, "base_quant '%s' is not nf4, fp4, int8, nf4-dq, fp4-dq or none", q);
    free(q);
    if (bad_q)
        return -1;
    json_t *ns = json_object_get(o, "no_split");
    if (ns && !json_is_boolean(ns))
        return mbad(c, where, "'no_split' must be true or false, not %s", json_type_name(ns));
    st->no_split = ns && json_is_true(ns);
    return 0;
}

static int parse_study(const mctx *c, size_t idx, json_t *o, dora_study *st)
{
    static const char *const keys[] = {"name", "base", "runs", "modules", "output", "figures",
                                       "expect", "rename", "transpose", "no_split",
                                       "base_quant", NULL};
    static const char *const run_keys[] = {"name", "path", "method", "initial_adapter", NULL};
    static const char *const mod_keys[] = {"include", "exclude", NULL};
    char where[256];
    snprintf(where, sizeof where, "studies[%zu]", idx);
    if (!json_is_object(o))
        return mbad(c, where, "must be an object, not %s", json_type_name(o));
    if (check_keys(c, where, o, keys) != 0 || get_str(c, where, o, "name", 1, &st->name) != 0 ||
        get_path(c, where, o, "base", 1, &st->base) != 0 ||
        get_path(c, where, o, "output", 1, &st->output) != 0)
        return -1;
    snprintf(where, sizeof where, "studies[%zu] ('%.200s')", idx, st->name);
    json_t *runs = json_object_get(o, "runs");
    if (!json_is_array(runs) || json_array_size(runs) == 0)
        return mbad(c, where, "'runs' must be a non-empty list of runs");
    st->runs = calloc(json_array_size(runs), sizeof *st->runs);
    if (!st->runs)
        return dora_errf(c->err, "out of memory");
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) {
        char w[320];
        snprintf(w, sizeof w, "%s.runs[%zu]", where, i);
        dora_study_run *sr = &st->runs[i];
        st->nruns = i + 1;
        if (!json_is_object(r))
            return mbad(c, w, "must be an object, not %s", json_type_name(r));
        char *method = NULL;
        if (check_keys(c, w, r, run_keys) != 0 || get_str(c, w, r, "name", 1, &sr->name) != 0 ||
            get_path(c, w, r, "path", 1, &sr->path) != 0 ||
            get_path(c, w, r, "initial_adapter", 0, &sr->initial_adapter) != 0 ||
            get_str(c, w, r, "method", 0, &method) != 0)
            return -1;
        if (method) {
            sr->method = dora_method_static(method);
            if (!sr->method) {
                mbad(c, w, "method '%s' is not ft, lora, dora, ia3, adalora, vera, loha or lokr",
                     method);
                free(method);
                return -1;
            }
            free(method);
        }
        if (!dora_run_name_ok(sr->name))
            return mbad(c, w, "name '%s': a run name must be non-empty, not '.' or '..', and "
                              "without '/'",
                        sr->name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(st->runs[k].name, sr->name) == 0)
                return mbad(c, w, "two runs are named '%s'", sr->name);
    }
    if (parse_layout(c, where, o, st) != 0)
        return -1;
    json_t *mods = json_object_get(o, "modules");
    if (mods) {
        char w[320];
        snprintf(w, sizeof w, "%s.modules", where);
        if (!json_is_object(mods))
            return mbad(c, w, "must be an object {\"include\": RE, \"exclude\": RE}, not %s",
                        json_type_name(mods));
        if (check_keys(c, w, mods, mod_keys) != 0 ||
            get_str(c, w, mods, "include", 0, &st->include) != 0 ||
            get_str(c, w, mods, "exclude", 0, &st->exclude) != 0)
            return -1;
        dora_err fe = {{0}, 0};
        int r = dora_filter_compile(&st->filter, st->include, st->exclude, &fe);
        if (r != 0)
            return mbad(c, w, "%s %s", r == DORA_FILTER_BAD_INCLUDE ? "include" : "exclude",
                        fe.msg);
    }
    json_t *fig = json_object_get(o, "figures");
    if (fig) {
        char w[320];
        snprintf(w, sizeof w, "%s.figures", where);
        if (parse_figures(c, w, fig, st) != 0)
            return -1;
    }
    json_t *ex = json_object_get(o, "expect");
    if (ex) {
        if (!json_is_array(ex))
            return mbad(c, where, "'expect' must be a list of expectations");
        st->expect = calloc(json_array_size(ex) + 1, sizeof *st->expect);
        if (!st->expect)
            return dora_errf(c->err, "out of memory");
        json_array_foreach(ex, i, r) {
            char w[320];
            snprintf(w, sizeof w, "%s.expect[%zu]", where, i);
            st->nexpect = i + 1;
            if (parse_expect(c, w, r, st, &st->expect[i]) != 0)
                return -1;
        }
    }
    return 0;
}

int dora_manifest_load(dora_manifest *m, const char *path, dora_err *err)
{
    memset(m, 0, sizeof *m);
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    char *dir = util_dirname(path);
    mctx c = {path, dir, err};
    int rc = -1;
    if (!(m->path = strdup(path)) || !dir) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (util_read_file(path, MANIFEST_MAX_BYTES, &text, &len, err) != 0)
        goto done;
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        dora_errf(err, "'%s': line %d, column %d: %s", path, jerr.line, jerr.column, jerr.text);
        goto done;
    }
    static const char *const keys[] = {"version", "studies", NULL};
    if (!json_is_object(root)) {
        mbad(&c, "top level", "must be an object {\"version\": 1, \"studies\": [...]}");
        goto done;
    }
    if (check_keys(&c, "top level", root, keys) != 0)
        goto done;
    json_t *ver = json_object_get(root, "version");
    if (ver && (!json_is_integer(ver) || json_integer_value(ver) != 1)) {
        mbad(&c, "version", "this program reads manifests of version 1");
        goto done;
    }
    json_t *studies = json_object_get(root, "studies");
    if (!json_is_array(studies) || json_array_size(studies) == 0) {
        mbad(&c, "studies", "must be a non-empty list of studies");
        goto done;
    }
    m->studies = calloc(json_array_size(studies), sizeof *m->studies);
    if (!m->studies) {
        dora_errf(err, "out of memory");
        goto done;
    }
    size_t i;
    json_t *o;
    json_array_foreach(studies, i, o) {
        m->nstudies = i + 1;
        if (parse_study(&c, i, o, &m->studies[i]) != 0)
            goto done;
        for (size_t k = 0; k < i; k++) {
            if (strcmp(m->studies[k].name, m->studies[i].name) == 0) {
                mbad(&c, "studies", "two studies are named '%s'", m->studies[i].name);
                goto done;
            }
            /* one file under two names (a symlinked folder) is still one file */
            const dora_study *sk = &m->studies[k], *si = &m->studies[i];
            if (util_same_output(sk->output, si->output)) {
                mbad(&c, "studies", "studies '%s' and '%s' write the same output ('%s' and '%s')",
                     sk->name, si->name, sk->output, si->output);
                goto done;
            }
            char *jk = dora_journal_path(sk->output), *ji = dora_journal_path(si->output);
            const char *clash = !jk || !ji                          ? NULL
                                : util_same_output(si->output, jk) ? jk
                                : util_same_output(sk->output, ji) ? ji
                                                                   : NULL;
            if (!jk || !ji)
                dora_errf(err, "out of memory");
            else if (clash)
                mbad(&c, "studies", "the output of one of studies '%s' and '%s' is the other's "
                                    "journal '%s'",
                     sk->name, si->name, clash);
            free(jk);
            free(ji);
            if (!jk || !ji || clash)
                goto done;
        }
    }
    rc = 0;
done:
    json_decref(root);
    free(text);
    free(dir);
    if (rc != 0)
        dora_manifest_release(m);
    return rc;
}

void dora_manifest_release(dora_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; m->studies && i < m->nstudies; i++) {
        dora_study *st = &m->studies[i];
        free(st->name);
        free(st->base);
        for (size_t r = 0; st->runs && r < st->nruns; r++) {
            free(st->runs[r].name);
            free(st->runs[r].path);
            free(st->runs[r].initial_adapter);
            dora_adapter_close(st->runs[r].initial);
        }
        free(st->runs);
        free(st->include);
        free(st->exclude);
        dora_filter_free(&st->filter);
        free(st->output);
        free(st->fig_kinds);
        free(st->fig_formats);
        free(st->fig_dir);
        for (size_t e = 0; st->expect && e < st->nexpect; e++) {
            free(st->expect[e].name);
            free(st->expect[e].run);
            free(st->expect[e].kind);
        }
        free(st->expect);
        for (size_t r = 0; st->renames && r < st->nrenames; r++)
            free(st->renames[r]);
        free(st->renames);
        free(st->transpose);
        free(st->quant_skip);
        dora_study_close_saved(st);
    }
    free(m->studies);
    free(m->path);
    memset(m, 0, sizeof *m);
}
