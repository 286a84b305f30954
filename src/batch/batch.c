/* batch.c - manifests, units, their journal, expectations, reports and
 * merging of shards; see include/dora/batch.h. */
#define _XOPEN_SOURCE 700 /* realpath, with POSIX 2008 */
#include "dora/batch.h"
#include "dora/adapter.h"
#include "dora/h5out.h"
#include "dora/version.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANIFEST_MAX_BYTES (16u << 20)
#define JOURNAL_MAX_BYTES ((size_t)8 << 30)
#define RECORD_MAX_BYTES ((uint64_t)1 << 31)
#define PACK_MAGIC 0x31555244u /* "DRU1": the unit wire format, version 1 */

static const char journal_magic[8] = {'D', 'O', 'R', 'A', 'J', 'N', 'L', '1'};
enum { REC_HEADER = 1, REC_UNIT = 2 };

/* ---- small helpers ------------------------------------------------------ */

static char *xprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* DIR/P (or P when absolute), with "." and "name/.." removed lexically, so
 * that a manifest in analysis/ naming "../data/x" gives "data/x". */
static char *resolve_path(const char *dir, const char *p)
{
    char *joined = p[0] == '/' ? strdup(p) : util_join(dir, p);
    if (!joined)
        return NULL;
    size_t n = strlen(joined);
    char *out = malloc(n + 2);
    size_t *starts = malloc((n + 1) * sizeof *starts);
    if (!out || !starts) {
        free(joined);
        free(out);
        free(starts);
        return NULL;
    }
    int abs = joined[0] == '/';
    size_t len = 0, depth = 0, up = 0; /* depth: kept components; up: leading ".." */
    if (abs)
        out[len++] = '/';
    const char *s = joined;
    while (*s) {
        while (*s == '/')
            s++;
        if (!*s)
            break;
        const char *e = strchr(s, '/');
        size_t m = e ? (size_t)(e - s) : strlen(s);
        if (m == 1 && s[0] == '.') {
            /* skip */
        } else if (m == 2 && s[0] == '.' && s[1] == '.' && depth > up) {
            len = starts[--depth];
            if (len > (size_t)abs)
                len--; /* the '/' before it */
        } else if (m == 2 && s[0] == '.' && s[1] == '.' && abs) {
            /* "/.." is "/" */
        } else {
            if (len > (size_t)abs)
                out[len++] = '/';
            starts[depth++] = len;
            if (m == 2 && s[0] == '.' && s[1] == '.')
                up++;
            memcpy(out + len, s, m);
            len += m;
        }
        s += m;
    }
    if (len == 0)
        out[len++] = '.';
    out[len] = '\0';
    free(joined);
    free(starts);
    return out;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0. */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    if (n == 0)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
        return 0;
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
        return 0;
    return n;
}

/* S with invalid UTF-8 bytes replaced by '?', newly allocated. */
static char *utf8_clean(const char *s)
{
    char *out = strdup(s ? s : "");
    if (!out)
        return NULL;
    unsigned char *p = (unsigned char *)out;
    while (*p) {
        size_t n = utf8_len(p);
        if (n == 0) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
    return out;
}

static json_t *jstr(const char *s)
{
    char *c = utf8_clean(s);
    json_t *j = c ? json_string(c) : NULL;
    free(c);
    return j ? j : json_null();
}

/* Write BUF to PATH through a private temporary (util_out), flushed and
 * renamed. */
static int write_atomic(const char *path, const char *buf, size_t len, dora_err *err)
{
    util_out o;
    if (util_out_begin(&o, path, err) != 0)
        return -1;
    if (util_out_write(&o, buf, len, err) != 0) {
        util_out_abort(&o);
        return -1;
    }
    return util_out_commit(&o, err);
}

/* ---- manifest ----------------------------------------------------------- */

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

static int compile_re(const mctx *c, const char *where, const char *key, const char *text,
                      regex_t *re)
{
    int r = regcomp(re, text, REG_EXTENDED | REG_NOSUB);
    if (r != 0) {
        char msg[256];
        regerror(r, re, msg, sizeof msg);
        return mbad(c, where, "%s '%s': %s", key, text, msg);
    }
    return 0;
}

static int valid_run_name(const char *s)
{
    return s[0] != '\0' && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && strchr(s, '/') == NULL;
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
        !(e->name = xprintf("%s %s %s %s %g", e->run, e->kind, stat, op, e->value))) {
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

static int parse_study(const mctx *c, size_t idx, json_t *o, dora_study *st)
{
    static const char *const keys[] = {"name", "base", "runs", "modules", "output", "figures",
                                       "expect", NULL};
    static const char *const run_keys[] = {"name", "path", "method", NULL};
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
            get_str(c, w, r, "method", 0, &method) != 0)
            return -1;
        if (method) {
            static const char *const m[] = {"ft", "lora", "dora"};
            for (int k = 0; k < 3; k++)
                if (strcmp(method, m[k]) == 0)
                    sr->method = m[k];
            if (!sr->method) {
                mbad(c, w, "method '%s' is not ft, lora or dora", method);
                free(method);
                return -1;
            }
            free(method);
        }
        if (!valid_run_name(sr->name))
            return mbad(c, w, "name '%s': a run name must be non-empty, not '.' or '..', and "
                              "without '/'",
                        sr->name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(st->runs[k].name, sr->name) == 0)
                return mbad(c, w, "two runs are named '%s'", sr->name);
    }
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
        if (st->include) {
            if (compile_re(c, w, "include", st->include, &st->include_re) != 0)
                return -1;
            st->has_include = 1;
        }
        if (st->exclude) {
            if (compile_re(c, w, "exclude", st->exclude, &st->exclude_re) != 0)
                return -1;
            st->has_exclude = 1;
        }
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
        }
        free(st->runs);
        free(st->include);
        free(st->exclude);
        if (st->has_include)
            regfree(&st->include_re);
        if (st->has_exclude)
            regfree(&st->exclude_re);
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
    }
    free(m->studies);
    free(m->path);
    memset(m, 0, sizeof *m);
}

/* ---- stamps, fingerprint, one unit -------------------------------------- */

char *dora_model_stamp(const dora_model *m, uint64_t *bytes)
{
    size_t cap = 48 * (m->nfiles + 1), used = 0;
    char *s = malloc(cap);
    uint64_t total = 0;
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < m->nfiles; i++) {
        used += (size_t)snprintf(s + used, cap - used, "%s%llu:%lld", i ? ";" : "",
                                 (unsigned long long)m->files[i]->size,
                                 (long long)m->files[i]->mtime_ns);
        total += m->files[i]->size;
    }
    if (bytes)
        *bytes = total;
    return s;
}

int dora_step_stamp(const char *path, char **stamp, uint64_t *bytes, dora_err *err)
{
    dora_model_kind kind;
    *stamp = NULL;
    if (dora_model_probe(path, &kind, NULL, err) != 0)
        return -1;
    if (kind == DORA_MODEL_ADAPTER) {
        dora_adapter *a;
        if (dora_adapter_open(&a, path, err) != 0)
            return -1;
        *stamp = dora_model_stamp(a->weights, bytes);
        dora_adapter_close(a);
    } else {
        dora_model *m;
        if (dora_model_open(&m, path, err) != 0)
            return -1;
        *stamp = dora_model_stamp(m, bytes);
        dora_model_close(m);
    }
    return *stamp ? 0 : dora_errf(err, "out of memory");
}

static char *dump_canonical(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
}

static json_t *fingerprint_json(const dora_study *st, const char *base_stamp)
{
    json_t *f = json_object();
    json_object_set_new(f, "tool", jstr("dora-analyze " DORA_VERSION));
    json_object_set_new(f, "layout_version", json_integer(DORA_LAYOUT_VERSION));
    /* the base by its real path: the same study reached through another spelling of
     * the manifest's path (relative, absolute, a symbolic link) is the same study */
    char *real = realpath(st->base, NULL);
    json_object_set_new(f, "base", jstr(real ? real : st->base));
    free(real);
    json_object_set_new(f, "base_stamp", jstr(base_stamp));
    json_object_set_new(f, "include", st->include ? jstr(st->include) : json_null());
    json_object_set_new(f, "exclude", st->exclude ? jstr(st->exclude) : json_null());
    return f;
}

char *dora_study_fingerprint(const dora_study *st, const char *base_stamp)
{
    json_t *f = fingerprint_json(st, base_stamp);
    char *s = f ? dump_canonical(f) : NULL;
    json_decref(f);
    return s;
}

char *dora_journal_header(const char *study, const char *fingerprint, const dora_study *st,
                          const dora_run *runs)
{
    json_error_t jerr;
    json_t *fp = json_loads(fingerprint, 0, &jerr);
    json_t *h = json_object(), *ra = json_array();
    if (!fp || !h || !ra) {
        json_decref(fp);
        json_decref(h);
        json_decref(ra);
        return NULL;
    }
    json_object_set_new(h, "format", json_string("dora-analyze batch journal"));
    json_object_set_new(h, "version", json_integer(1));
    json_object_set_new(h, "study", jstr(study));
    json_object_set_new(h, "fingerprint", fp);
    for (size_t r = 0; r < st->nruns; r++) {
        json_t *o = json_object(), *steps = json_array();
        json_object_set_new(o, "name", jstr(st->runs[r].name));
        json_object_set_new(o, "path", jstr(st->runs[r].path));
        for (size_t s = 0; runs && s < runs[r].nsteps; s++)
            json_array_append_new(steps, json_integer(runs[r].steps[s].step));
        json_object_set_new(o, "steps", steps);
        json_array_append_new(ra, o);
    }
    json_object_set_new(h, "runs", ra);
    char *s = dump_canonical(h);
    json_decref(h);
    return s;
}

char *dora_header_fingerprint(const char *header)
{
    json_error_t jerr;
    json_t *h = json_loads(header, 0, &jerr);
    json_t *fp = h ? json_object_get(h, "fingerprint") : NULL;
    char *s = json_is_object(fp) ? dump_canonical(fp) : NULL;
    json_decref(h);
    return s;
}

int dora_analyze_unit(dora_result *res, const char *name, const dora_model *base,
                      const char *base_path, const dora_run *run, size_t step_index,
                      const dora_analysis_opts *opts, dora_err *err)
{
    if (step_index >= run->nsteps)
        return dora_errf(err, "'%s': no step number %zu (the run has %zu)", run->path, step_index,
                         run->nsteps);
    dora_run one = *run; /* plain data: a view of one step, not released */
    one.nsteps = 1;
    one.steps = &run->steps[step_index];
    one.nnotes = 0;
    return dora_analyze_run(res, name, base, base_path, &one, opts, err);
}

/* ---- copying and joining results ----------------------------------------- */

static int add_str(char ***v, size_t *n, const char *s)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i], s) == 0)
            return 0;
    char **p = realloc(*v, (*n + 1) * sizeof *p);
    if (!p)
        return -1;
    *v = p;
    if (!(p[*n] = strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

int dora_result_copy(dora_result *out, const dora_result *in, dora_err *err)
{
    const dora_result *parts[1] = {in};
    return dora_result_join(out, parts, 1, err);
}

typedef struct stepref {
    size_t part, s;
    int64_t step;
} stepref;

static int stepref_cmp(const void *pa, const void *pb)
{
    const stepref *a = pa, *b = pb;
    if (a->step != b->step)
        return a->step < b->step ? -1 : 1;
    return a->part < b->part ? -1 : a->part > b->part;
}

typedef struct namedidx {
    const char *name;
    size_t i;
} namedidx;

static int namedidx_cmp(const void *pa, const void *pb)
{
    return strcmp(((const namedidx *)pa)->name, ((const namedidx *)pb)->name);
}

/* Position of NAME in a part's modules (through its sorted index), or -1. */
static long find_module(const namedidx *ix, size_t n, const char *name)
{
    namedidx key = {name, 0};
    const namedidx *hit = bsearch(&key, ix, n, sizeof *ix, namedidx_cmp);
    return hit ? (long)hit->i : -1;
}

static int same_step_numbers(const dora_result *a, size_t sa, const dora_result *b, size_t sb)
{
    if (a->nmodules != b->nmodules || strcmp(a->step_paths[sa], b->step_paths[sb]) != 0)
        return 0;
    const size_t L = a->nmodules;
    for (size_t l = 0; l < L; l++)
        if (strcmp(a->modules[l], b->modules[l]) != 0 ||
            memcmp(&a->delta_m[sa * L + l], &b->delta_m[sb * L + l], sizeof(double)) != 0 ||
            memcmp(&a->delta_d[sa * L + l], &b->delta_d[sb * L + l], sizeof(double)) != 0 ||
            a->zero_rows[sa * L + l] != b->zero_rows[sb * L + l])
            return 0;
    return 1;
}

int dora_result_join(dora_result *out, const dora_result *const *parts, size_t n, dora_err *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return dora_errf(err, "nothing to join");
    const dora_result *p0 = parts[0];
    int any_ft = 0, any_lora = 0, any_dora = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const dora_result *p = parts[i];
        if (strcmp(p->name, p0->name) != 0 || strcmp(p->source_path, p0->source_path) != 0 ||
            strcmp(p->base_path, p0->base_path) != 0)
            return dora_errf(err, "cannot join results of run '%s' ('%s', base '%s') with run "
                                  "'%s' ('%s', base '%s')",
                             p0->name, p0->source_path, p0->base_path, p->name, p->source_path,
                             p->base_path);
        any_ft |= strcmp(p->method, "ft") == 0;
        any_lora |= strcmp(p->method, "lora") == 0;
        any_dora |= strcmp(p->method, "dora") == 0;
        total += p->nsteps;
    }
    if (any_ft && (any_lora || any_dora))
        return dora_errf(err, "run '%s' ('%s'): some checkpoints are full weights and some "
                              "adapters: a run is either full weights or adapters",
                         p0->name, p0->source_path);
    int adapters = any_lora || any_dora;

    stepref *refs = calloc(total + 1, sizeof *refs);
    namedidx **ix = calloc(n, sizeof *ix);
    int rc = -1;
    if (!refs || !ix) {
        dora_errf(err, "out of memory");
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t s = 0; s < parts[i]->nsteps; s++)
            refs[k++] = (stepref){i, s, parts[i]->steps[s]};
        if (!(ix[i] = calloc(parts[i]->nmodules + 1, sizeof **ix))) {
            dora_errf(err, "out of memory");
            goto done;
        }
        for (size_t l = 0; l < parts[i]->nmodules; l++)
            ix[i][l] = (namedidx){parts[i]->modules[l], l};
        qsort(ix[i], parts[i]->nmodules, sizeof **ix, namedidx_cmp);
    }
    qsort(refs, total, sizeof *refs, stepref_cmp);
    /* a step held twice must be the same result; keep the first */
    size_t S = 0;
    for (size_t i = 0; i < total; i++) {
        if (S > 0 && refs[S - 1].step == refs[i].step) {
            const stepref *a = &refs[S - 1], *b = &refs[i];
            if (!same_step_numbers(parts[a->part], a->s, parts[b->part], b->s)) {
                dora_errf(err, "run '%s': step %lld is held twice with different results ('%s' "
                               "and '%s')",
                          p0->name, (long long)a->step, parts[a->part]->step_paths[a->s],
                          parts[b->part]->step_paths[b->s]);
                goto done;
            }
            continue;
        }
        refs[S++] = refs[i];
    }

    /* the modules every part has, in the order of the first part's (natural order) */
    size_t L = 0, dropped = 0;
    const char *first_dropped = NULL;
    char *keep = calloc(p0->nmodules + 1, 1);
    if (!keep) {
        dora_errf(err, "out of memory");
        goto done;
    }
    for (size_t l = 0; l < p0->nmodules; l++) {
        int all = 1;
        for (size_t i = 1; i < n && all; i++)
            all = find_module(ix[i], parts[i]->nmodules, p0->modules[l]) >= 0;
        keep[l] = (char)all;
        L += (size_t)all;
        if (!all && !first_dropped)
            first_dropped = p0->modules[l];
        dropped += (size_t)!all;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t l = 0; l < parts[i]->nmodules; l++)
            if (find_module(ix[0], p0->nmodules, parts[i]->modules[l]) < 0) {
                dropped++;
                if (!first_dropped)
                    first_dropped = parts[i]->modules[l];
            }
    if (dropped && adapters) {
        dora_errf(err, "run '%s': its checkpoints do not adapt the same modules (first "
                       "difference: '%s'): the checkpoints of a run must adapt the same modules",
                  p0->name, first_dropped);
        free(keep);
        goto done;
    }
    if (L == 0) {
        dora_errf(err, "run '%s': no tensor is in every checkpoint", p0->name);
        free(keep);
        goto done;
    }

    out->method = any_dora ? "dora" : any_lora ? "lora" : "ft";
    out->name = strdup(p0->name);
    out->source_path = strdup(p0->source_path);
    out->base_path = strdup(p0->base_path);
    if (!out->name || !out->source_path || !out->base_path || dora_result_alloc(out, S, L) != 0) {
        dora_errf(err, "out of memory");
        free(keep);
        goto done;
    }
    /* module metadata from the part holding the first step, checked against all */
    const dora_result *pf = parts[refs[0].part];
    size_t j = 0;
    for (size_t l = 0; l < p0->nmodules; l++) {
        if (!keep[l])
            continue;
        const char *name = p0->modules[l];
        long lf = find_module(ix[refs[0].part], pf->nmodules, name);
        out->modules[j] = strdup(name);
        out->layer[j] = pf->layer[lf];
        out->rows[j] = pf->rows[lf];
        out->cols[j] = pf->cols[lf];
        out->rank[j] = pf->rank[lf];
        if (!out->modules[j]) {
            dora_errf(err, "out of memory");
            free(keep);
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            long li = find_module(ix[i], parts[i]->nmodules, name);
            if (parts[i]->rows[li] != out->rows[j] || parts[i]->cols[li] != out->cols[j] ||
                parts[i]->layer[li] != out->layer[j]) {
                dora_errf(err, "run '%s': module '%s' has %lld x %lld in '%s' but %lld x %lld in "
                               "'%s'",
                          p0->name, name, (long long)parts[i]->rows[li],
                          (long long)parts[i]->cols[li], parts[i]->step_paths[0],
                          (long long)out->rows[j], (long long)out->cols[j], pf->step_paths[0]);
                free(keep);
                goto done;
            }
        }
        j++;
    }
    free(keep);
    for (size_t s = 0; s < S; s++) {
        const dora_result *p = parts[refs[s].part];
        const size_t ps = refs[s].s, PL = p->nmodules;
        out->steps[s] = refs[s].step;
        out->step_paths[s] = strdup(p->step_paths[ps]);
        out->step_stamps[s] = strdup(p->step_stamps[ps] ? p->step_stamps[ps] : "");
        if (!out->step_paths[s] || !out->step_stamps[s]) {
            dora_errf(err, "out of memory");
            goto done;
        }
        for (size_t l = 0; l < L; l++) {
            long pl = find_module(ix[refs[s].part], PL, out->modules[l]);
            out->delta_m[s * L + l] = p->delta_m[ps * PL + (size_t)pl];
            out->delta_d[s * L + l] = p->delta_d[ps * PL + (size_t)pl];
            out->zero_rows[s * L + l] = p->zero_rows[ps * PL + (size_t)pl];
        }
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t q = 0; q < parts[i]->nnotes; q++)
            if (add_str(&out->notes, &out->nnotes, parts[i]->notes[q]) != 0)
                goto oom;
        for (size_t q = 0; q < parts[i]->nfailures; q++)
            if (add_str(&out->failures, &out->nfailures, parts[i]->failures[q]) != 0)
                goto oom;
    }
    if (dropped && n > 1) {
        char buf[1200];
        snprintf(buf, sizeof buf, "%zu tensor(s) are not in every checkpoint and were left out "
                                  "(first: '%s')",
                 dropped, first_dropped);
        if (add_str(&out->notes, &out->nnotes, buf) != 0)
            goto oom;
    }
    rc = 0;
    goto done;
oom:
    dora_errf(err, "out of memory");
done:
    for (size_t i = 0; ix && i < n; i++)
        free(ix[i]);
    free(ix);
    free(refs);
    if (rc != 0)
        dora_result_release(out);
    return rc;
}

/* ---- wire format --------------------------------------------------------- */

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} wbuf;

static void put_bytes(wbuf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n)
            nc *= 2;
        unsigned char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_u64(wbuf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    put_bytes(b, x, 8);
}

static void put_u32(wbuf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    put_bytes(b, x, 4);
}

static void put_f64(wbuf *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(b, v);
}

static void put_str(wbuf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    put_u64(b, n);
    put_bytes(b, s ? s : "", n);
}

typedef struct rbuf {
    const unsigned char *p;
    size_t n, off;
    int bad;
} rbuf;

static const unsigned char *get_bytes(rbuf *b, size_t n)
{
    if (b->bad || n > b->n - b->off) {
        b->bad = 1;
        return NULL;
    }
    const unsigned char *q = b->p + b->off;
    b->off += n;
    return q;
}

static uint64_t get_u64(rbuf *b)
{
    const unsigned char *x = get_bytes(b, 8);
    uint64_t v = 0;
    for (int i = 0; x && i < 8; i++)
        v |= (uint64_t)x[i] << (8 * i);
    return v;
}

static uint32_t get_u32(rbuf *b)
{
    const unsigned char *x = get_bytes(b, 4);
    uint32_t v = 0;
    for (int i = 0; x && i < 4; i++)
        v |= (uint32_t)x[i] << (8 * i);
    return v;
}

static double get_f64(rbuf *b)
{
    uint64_t v = get_u64(b);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* A string of at most the bytes left, without NUL; NULL (and b->bad) if not. */
static char *get_str_r(rbuf *b)
{
    uint64_t n = get_u64(b);
    if (b->bad || n > b->n - b->off) {
        b->bad = 1;
        return NULL;
    }
    const unsigned char *q = get_bytes(b, (size_t)n);
    if (!q || memchr(q, '\0', (size_t)n)) {
        b->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        b->bad = 2;
        return NULL;
    }
    memcpy(s, q, (size_t)n);
    s[n] = '\0';
    return s;
}

int dora_result_pack(const dora_result *r, unsigned char **buf, size_t *len, dora_err *err)
{
    wbuf b = {0};
    const size_t S = r->nsteps, L = r->nmodules;
    put_u32(&b, PACK_MAGIC);
    put_str(&b, r->name);
    put_str(&b, r->method);
    put_str(&b, r->source_path);
    put_str(&b, r->base_path);
    put_u64(&b, S);
    put_u64(&b, L);
    for (size_t s = 0; s < S; s++) {
        put_u64(&b, (uint64_t)r->steps[s]);
        put_str(&b, r->step_paths[s]);
        put_str(&b, r->step_stamps ? r->step_stamps[s] : "");
    }
    for (size_t l = 0; l < L; l++) {
        put_str(&b, r->modules[l]);
        put_u32(&b, (uint32_t)r->layer[l]);
        put_u64(&b, (uint64_t)r->rows[l]);
        put_u64(&b, (uint64_t)r->cols[l]);
        put_u32(&b, (uint32_t)r->rank[l]);
    }
    for (size_t i = 0; i < S * L; i++)
        put_f64(&b, r->delta_m[i]);
    for (size_t i = 0; i < S * L; i++)
        put_f64(&b, r->delta_d[i]);
    for (size_t i = 0; i < S * L; i++)
        put_u64(&b, (uint64_t)r->zero_rows[i]);
    put_u64(&b, r->nnotes);
    for (size_t i = 0; i < r->nnotes; i++)
        put_str(&b, r->notes[i]);
    put_u64(&b, r->nfailures);
    for (size_t i = 0; i < r->nfailures; i++)
        put_str(&b, r->failures[i]);
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "out of memory packing the results of run '%s'", r->name);
    }
    *buf = b.p;
    *len = b.n;
    return 0;
}

static int unpack_strs(rbuf *b, char ***v, size_t *n)
{
    uint64_t k = get_u64(b);
    if (b->bad || k > (b->n - b->off) / 8) {
        b->bad = 1;
        return -1;
    }
    *v = calloc((size_t)k + 1, sizeof **v);
    if (!*v) {
        b->bad = 2;
        return -1;
    }
    for (size_t i = 0; i < k; i++) {
        if (!((*v)[i] = get_str_r(b)))
            return -1;
        *n = i + 1;
    }
    return 0;
}

int dora_result_unpack(dora_result *r, const unsigned char *buf, size_t len, const char *what,
                       dora_err *err)
{
    memset(r, 0, sizeof *r);
    rbuf b = {buf, len, 0, 0};
    const char *why = "truncated or malformed";
    if (get_u32(&b) != PACK_MAGIC) {
        dora_errf(err, "%s: not a unit result of this version", what);
        return -1;
    }
    char *method = NULL;
    r->name = get_str_r(&b);
    method = get_str_r(&b);
    r->source_path = get_str_r(&b);
    r->base_path = get_str_r(&b);
    uint64_t S = get_u64(&b), L = get_u64(&b);
    if (b.bad)
        goto bad;
    static const char *const known[] = {"ft", "lora", "dora"};
    for (int i = 0; i < 3; i++)
        if (strcmp(method, known[i]) == 0)
            r->method = known[i];
    free(method);
    method = NULL;
    if (!r->method) {
        why = "unknown method";
        goto bad;
    }
    /* each step takes >= 24 bytes, each module >= 32, each (step, module) 24 */
    size_t left = len - b.off;
    if (S > left / 24 || L > left / 32 || (S && L > left / 24 / S)) {
        why = "counts larger than the data";
        goto bad;
    }
    if (dora_result_alloc(r, (size_t)S, (size_t)L) != 0) {
        dora_errf(err, "%s: out of memory", what);
        dora_result_release(r);
        return -1;
    }
    for (size_t s = 0; s < S; s++) {
        r->steps[s] = (int64_t)get_u64(&b);
        r->step_paths[s] = get_str_r(&b);
        r->step_stamps[s] = get_str_r(&b);
        if (b.bad)
            goto bad;
        if (s > 0 && r->steps[s] <= r->steps[s - 1]) {
            why = "steps not ascending";
            goto bad;
        }
    }
    for (size_t l = 0; l < L; l++) {
        r->modules[l] = get_str_r(&b);
        r->layer[l] = (int32_t)get_u32(&b);
        r->rows[l] = (int64_t)get_u64(&b);
        r->cols[l] = (int64_t)get_u64(&b);
        r->rank[l] = (int32_t)get_u32(&b);
        if (b.bad)
            goto bad;
        if (r->rows[l] < 1 || r->cols[l] < 0 || r->rank[l] < 0) {
            why = "a module with a bad shape or rank";
            goto bad;
        }
    }
    const size_t SL = (size_t)(S * L);
    for (size_t i = 0; i < SL; i++)
        r->delta_m[i] = get_f64(&b);
    for (size_t i = 0; i < SL; i++)
        r->delta_d[i] = get_f64(&b);
    for (size_t i = 0; i < SL; i++)
        r->zero_rows[i] = (int64_t)get_u64(&b);
    if (b.bad)
        goto bad;
    for (size_t i = 0; i < SL; i++)
        if (!isfinite(r->delta_m[i]) || !isfinite(r->delta_d[i]) || r->zero_rows[i] < 0) {
            why = "a non-finite or negative value";
            goto bad;
        }
    if (unpack_strs(&b, &r->notes, &r->nnotes) != 0 ||
        unpack_strs(&b, &r->failures, &r->nfailures) != 0)
        goto bad;
    if (b.off != len) {
        why = "trailing bytes";
        goto bad;
    }
    return 0;
bad:
    free(method);
    if (b.bad == 2)
        dora_errf(err, "%s: out of memory", what);
    else
        dora_errf(err, "%s: %s", what, why);
    dora_result_release(r);
    return -1;
}

/* ---- journal -------------------------------------------------------------- */

struct dora_journal {
    int fd;
    char *path;
};

static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* A whole record (24-byte head + payload) appended to B. */
static void put_record(wbuf *b, uint32_t type, const unsigned char *payload, size_t n)
{
    put_u32(b, type);
    put_u32(b, 0);
    put_u64(b, n);
    put_u64(b, fnv1a64(payload, n));
    put_bytes(b, payload, n);
}

char *dora_journal_path(const char *output)
{
    return xprintf("%s.journal", output);
}

char *dora_shard_path(const char *output, unsigned k, unsigned n)
{
    size_t len = strlen(output);
    if (util_has_suffix(output, ".h5") && len > 3)
        return xprintf("%.*s.shard-%u-of-%u.h5", (int)(len - 3), output, k, n);
    return xprintf("%s.shard-%u-of-%u", output, k, n);
}

void dora_journal_results_free(dora_result *units, size_t n)
{
    for (size_t i = 0; units && i < n; i++)
        dora_result_release(&units[i]);
    free(units);
}

int dora_journal_read(const char *path, char **header, dora_result **units, size_t *nunits,
                      uint64_t *tail_bytes, dora_err *err)
{
    *header = NULL;
    *units = NULL;
    *nunits = 0;
    if (tail_bytes)
        *tail_bytes = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        return dora_errf(err, "'%s': %s", path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0;
    if (util_read_file(path, JOURNAL_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    const unsigned char *p = (const unsigned char *)text;
    if (len < sizeof journal_magic || memcmp(p, journal_magic, sizeof journal_magic) != 0) {
        free(text);
        return dora_errf(err, "'%s': not a dora-analyze journal", path);
    }
    size_t off = sizeof journal_magic, cap = 0;
    int rc = -1;
    while (off < len) {
        rbuf b = {p, len, off, 0};
        uint32_t type = get_u32(&b);
        get_u32(&b);
        uint64_t n = get_u64(&b), sum = get_u64(&b);
        if (b.bad || n > RECORD_MAX_BYTES || n > len - b.off ||
            fnv1a64(p + b.off, (size_t)n) != sum || (type != REC_HEADER && type != REC_UNIT)) {
            if (!*header) {
                dora_errf(err, "'%s': the journal's header is damaged", path);
                goto done;
            }
            if (tail_bytes) /* a record cut short: the journal ends here */
                *tail_bytes = len - off;
            break;
        }
        const unsigned char *payload = p + b.off;
        if (type == REC_HEADER) {
            if (*header || off != sizeof journal_magic || memchr(payload, '\0', (size_t)n)) {
                dora_errf(err, "'%s': a second or malformed header at byte %zu", path, off);
                goto done;
            }
            if (!(*header = malloc((size_t)n + 1))) {
                dora_errf(err, "out of memory");
                goto done;
            }
            memcpy(*header, payload, (size_t)n);
            (*header)[n] = '\0';
        } else {
            if (!*header) {
                dora_errf(err, "'%s': the journal has no header", path);
                goto done;
            }
            if (*nunits == cap) {
                size_t nc = cap ? 2 * cap : 16;
                dora_result *q = realloc(*units, nc * sizeof *q);
                if (!q) {
                    dora_errf(err, "out of memory");
                    goto done;
                }
                *units = q;
                cap = nc;
            }
            char what[1100];
            snprintf(what, sizeof what, "'%s': record at byte %zu", path, off);
            if (dora_result_unpack(&(*units)[*nunits], payload, (size_t)n, what, err) != 0)
                goto done;
            (*nunits)++;
        }
        off = b.off + (size_t)n;
    }
    if (!*header) {
        dora_errf(err, "'%s': the journal has no header", path);
        goto done;
    }
    rc = 1;
done:
    free(text);
    if (rc != 1) {
        free(*header);
        *header = NULL;
        dora_journal_results_free(*units, *nunits);
        *units = NULL;
        *nunits = 0;
    }
    return rc;
}

int dora_journal_create(dora_journal **j, const char *path, const char *header,
                        const dora_result *units, size_t nunits, dora_err *err)
{
    *j = NULL;
    wbuf b = {0};
    put_bytes(&b, journal_magic, sizeof journal_magic);
    put_record(&b, REC_HEADER, (const unsigned char *)header, strlen(header));
    for (size_t i = 0; i < nunits; i++) {
        unsigned char *u;
        size_t n;
        if (dora_result_pack(&units[i], &u, &n, err) != 0) {
            free(b.p);
            return -1;
        }
        put_record(&b, REC_UNIT, u, n);
        free(u);
    }
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "out of memory");
    }
    /* written through a private temporary and renamed; the descriptor of the
       temporary is kept for the appends, so no name is opened again after the
       rename (another file could have been put there in between) */
    util_out o;
    if (util_out_begin(&o, path, err) != 0) {
        free(b.p);
        return -1;
    }
    int fd = util_out_open(&o, err);
    size_t off = 0;
    int e = 0;
    while (fd >= 0 && off < b.n) {
        ssize_t w = write(fd, b.p + off, b.n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            e = w < 0 ? errno : ENOSPC;
            break;
        }
        off += (size_t)w;
    }
    if (fd >= 0 && !e && fsync(fd) != 0)
        e = errno;
    free(b.p);
    if (fd < 0 || e) {
        if (fd >= 0) {
            dora_errf(err, "'%s': cannot write: %s", path, strerror(e));
            close(fd);
        }
        util_out_abort(&o);
        return -1;
    }
    if (util_out_commit(&o, err) != 0) {
        close(fd);
        return -1;
    }
    dora_journal *jn = calloc(1, sizeof *jn);
    if (!jn || !(jn->path = strdup(path))) {
        free(jn);
        close(fd);
        return dora_errf(err, "out of memory");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_APPEND); /* each record at the end, as before */
    jn->fd = fd;
    *j = jn;
    return 0;
}

int dora_journal_append(dora_journal *j, const dora_result *unit, dora_err *err)
{
    unsigned char *u;
    size_t n;
    if (dora_result_pack(unit, &u, &n, err) != 0)
        return -1;
    wbuf b = {0};
    put_record(&b, REC_UNIT, u, n);
    free(u);
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "out of memory");
    }
    /* one write() per record: a kill leaves at most one torn record at the end */
    size_t off = 0;
    while (off < b.n) {
        ssize_t w = write(j->fd, b.p + off, b.n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            free(b.p);
            return dora_errf(err, "'%s': cannot append: %s", j->path,
                             w < 0 ? strerror(errno) : "short write");
        }
        off += (size_t)w;
    }
    free(b.p);
    if (fdatasync(j->fd) != 0)
        return dora_errf(err, "'%s': cannot flush to disk: %s", j->path, strerror(errno));
    return 0;
}

void dora_journal_close(dora_journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j);
}

/* ---- expectations ---------------------------------------------------------- */

void dora_expect_eval(const dora_expect *e, const dora_regression *regs, size_t nregs,
                      dora_expect_result *out)
{
    memset(out, 0, sizeof *out);
    out->outcome = DORA_OUTCOME_FAILED;
    const dora_regression *g = NULL;
    int have_run = 0;
    for (size_t i = 0; i < nregs; i++) {
        if (strcmp(regs[i].run, e->run) != 0)
            continue;
        have_run = 1;
        if (strcmp(regs[i].kind, e->kind) == 0)
            g = &regs[i];
    }
    const char *stat = dora_stat_name(e->stat), *op = dora_op_name(e->op);
    if (!have_run) {
        snprintf(out->message, sizeof out->message, "no run '%s' in the results", e->run);
        return;
    }
    if (!g) {
        snprintf(out->message, sizeof out->message, "run '%s' has no module of kind '%s'",
                 e->run, e->kind);
        return;
    }
    int defined = e->stat == DORA_STAT_WITHIN_STEP_R ? g->within_defined : g->defined;
    if (!defined) {
        snprintf(out->message, sizeof out->message,
                 "%s of %s %s is undefined (n = %lld: fewer than 2 points, or no spread)", stat,
                 e->run, e->kind, g->n);
        return;
    }
    double v = e->stat == DORA_STAT_PEARSON_R       ? g->r
               : e->stat == DORA_STAT_WITHIN_STEP_R ? g->within_r
               : e->stat == DORA_STAT_SLOPE         ? g->slope
                                                    : g->intercept;
    out->defined = 1;
    out->actual = v;
    int held = e->op == DORA_OP_LT   ? v < e->value
               : e->op == DORA_OP_GT ? v > e->value
               : e->op == DORA_OP_LE ? v <= e->value
                                     : v >= e->value;
    out->outcome = held ? DORA_OUTCOME_HELD : DORA_OUTCOME_FAILED;
    snprintf(out->message, sizeof out->message, "%s of %s %s is %.6g (n = %lld), expected %s %g%s",
             stat, e->run, e->kind, v, g->n, op, e->value, held ? "" : ": does not hold");
}

/* ---- reports ------------------------------------------------------------- */

void dora_study_report_release(dora_study_report *r)
{
    if (!r)
        return;
    free(r->error);
    for (size_t i = 0; i < r->nfailures; i++) {
        free(r->failures[i].run);
        free(r->failures[i].path);
        free(r->failures[i].message);
    }
    free(r->failures);
    free(r->figures_message);
    free(r->results);
    memset(r, 0, sizeof *r);
}

static const char *study_status_name(dora_study_status s)
{
    return s == DORA_STUDY_COMPLETE ? "complete" : s == DORA_STUDY_INCOMPLETE ? "incomplete" : "error";
}

static const char *fig_status_name(dora_fig_status s)
{
    static const char *const n[] = {"none", "drawn", "failed", "skipped"};
    return (unsigned)s < 4 ? n[s] : "?";
}

static const char *outcome_name(dora_outcome o)
{
    static const char *const n[] = {"held", "failed", "not_evaluated"};
    return (unsigned)o < 3 ? n[o] : "?";
}

int dora_report_json(const char *path, const char *manifest, const char *shard, int ok,
                     const dora_study_report *r, size_t n, double seconds, dora_err *err)
{
    json_t *root = json_object(), *studies = json_array();
    size_t held = 0, failed = 0, notev = 0, units = 0, run = 0, skipped = 0, ufailed = 0;
    json_object_set_new(root, "tool", jstr("dora-analyze " DORA_VERSION));
    json_object_set_new(root, "manifest", jstr(manifest));
    json_object_set_new(root, "shard", shard ? jstr(shard) : json_null());
    json_object_set_new(root, "ok", json_boolean(ok));
    for (size_t i = 0; i < n; i++) {
        const dora_study_report *s = &r[i];
        json_t *o = json_object(), *fl = json_array(), *ex = json_array();
        json_object_set_new(o, "name", jstr(s->name));
        json_object_set_new(o, "output", s->output ? jstr(s->output) : json_null());
        json_object_set_new(o, "status", json_string(study_status_name(s->status)));
        json_object_set_new(o, "error", s->error ? jstr(s->error) : json_null());
        json_t *u = json_object();
        json_object_set_new(u, "total", json_integer((json_int_t)s->units_total));
        json_object_set_new(u, "run", json_integer((json_int_t)s->units_run));
        json_object_set_new(u, "up_to_date", json_integer((json_int_t)s->units_skipped));
        json_object_set_new(u, "failed", json_integer((json_int_t)s->units_failed));
        json_object_set_new(o, "units", u);
        units += s->units_total;
        run += s->units_run;
        skipped += s->units_skipped;
        ufailed += s->units_failed;
        for (size_t k = 0; k < s->nfailures; k++) {
            json_t *f = json_object();
            json_object_set_new(f, "run", jstr(s->failures[k].run));
            json_object_set_new(f, "step", json_integer(s->failures[k].step));
            json_object_set_new(f, "checkpoint", jstr(s->failures[k].path));
            json_object_set_new(f, "message", jstr(s->failures[k].message));
            json_array_append_new(fl, f);
        }
        json_object_set_new(o, "unit_failures", fl);
        json_t *fig = json_object();
        json_object_set_new(fig, "status", json_string(fig_status_name(s->figures)));
        json_object_set_new(fig, "message",
                            s->figures_message ? jstr(s->figures_message) : json_null());
        json_object_set_new(o, "figures", fig);
        for (size_t k = 0; k < s->nexpect; k++) {
            const dora_expect *e = &s->expect[k];
            const dora_expect_result *er = &s->results[k];
            json_t *x = json_object();
            json_object_set_new(x, "name", jstr(e->name));
            json_object_set_new(x, "run", jstr(e->run));
            json_object_set_new(x, "module_kind", jstr(e->kind));
            json_object_set_new(x, "stat", json_string(dora_stat_name(e->stat)));
            json_object_set_new(x, "op", json_string(dora_op_name(e->op)));
            json_object_set_new(x, "value", json_real(e->value));
            json_object_set_new(x, "actual", er->defined ? json_real(er->actual) : json_null());
            json_object_set_new(x, "status", json_string(outcome_name(er->outcome)));
            json_object_set_new(x, "message", jstr(er->message));
            json_array_append_new(ex, x);
            held += er->outcome == DORA_OUTCOME_HELD;
            failed += er->outcome == DORA_OUTCOME_FAILED;
            notev += er->outcome == DORA_OUTCOME_NOT_EVALUATED;
        }
        json_object_set_new(o, "expectations", ex);
        json_object_set_new(o, "seconds", json_real(s->seconds));
        json_array_append_new(studies, o);
    }
    json_object_set_new(root, "studies", studies);
    json_t *sum = json_object();
    json_object_set_new(sum, "studies", json_integer((json_int_t)n));
    json_object_set_new(sum, "units", json_integer((json_int_t)units));
    json_object_set_new(sum, "units_run", json_integer((json_int_t)run));
    json_object_set_new(sum, "units_up_to_date", json_integer((json_int_t)skipped));
    json_object_set_new(sum, "units_failed", json_integer((json_int_t)ufailed));
    json_object_set_new(sum, "expectations_held", json_integer((json_int_t)held));
    json_object_set_new(sum, "expectations_failed", json_integer((json_int_t)failed));
    json_object_set_new(sum, "expectations_not_evaluated", json_integer((json_int_t)notev));
    json_object_set_new(root, "summary", sum);
    json_object_set_new(root, "seconds", json_real(seconds));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text)
        return dora_errf(err, "'%s': out of memory formatting the report", path);
    size_t len = strlen(text);
    char *withnl = realloc(text, len + 2);
    if (!withnl) {
        free(text);
        return dora_errf(err, "out of memory");
    }
    withnl[len] = '\n';
    withnl[len + 1] = '\0';
    int rc = write_atomic(path, withnl, len + 1, err);
    free(withnl);
    return rc;
}

/* S escaped for XML attribute or text: &<>"' as entities, control characters
 * other than tab and newline and invalid UTF-8 as '?'. */
static void xml_escaped(wbuf *b, const char *s)
{
    char *c = utf8_clean(s ? s : "");
    if (!c) {
        b->oom = 1;
        return;
    }
    for (const char *p = c; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        case '\n': rep = "&#10;"; break;
        case '\t': rep = "&#9;"; break;
        default:
            if ((unsigned char)*p < 0x20)
                rep = "?";
        }
        if (rep)
            put_bytes(b, rep, strlen(rep));
        else
            put_bytes(b, p, 1);
    }
    free(c);
}

static void xml_put(wbuf *b, const char *s)
{
    put_bytes(b, s, strlen(s));
}

static void xml_printf(wbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void xml_printf(wbuf *b, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    xml_put(b, buf);
}

/* <testcase classname=".." name=".."> with KIND ("failure", "error",
 * "skipped") and MESSAGE, or passing when KIND is NULL. */
static void testcase(wbuf *b, const char *study, const char *name, const char *kind,
                     const char *message)
{
    xml_put(b, "    <testcase classname=\"dora-analyze.batch.");
    xml_escaped(b, study);
    xml_put(b, "\" name=\"");
    xml_escaped(b, name);
    if (!kind) {
        xml_put(b, "\"/>\n");
        return;
    }
    xml_put(b, "\">\n      <");
    xml_put(b, kind);
    xml_put(b, " message=\"");
    xml_escaped(b, message);
    xml_put(b, "\"/>\n    </testcase>\n");
}

int dora_report_junit(const char *path, const char *manifest, const dora_study_report *r,
                      size_t n, double seconds, dora_err *err)
{
    wbuf b = {0};
    size_t tests = 0, failures = 0, errors = 0, skipped = 0;
    /* counts first: one pass to count, one to write */
    for (size_t i = 0; i < n; i++) {
        const dora_study_report *s = &r[i];
        tests += 1 + s->nfailures + s->nexpect + (s->figures != DORA_FIG_NONE);
        errors += s->status == DORA_STUDY_ERROR;
        failures += (s->status == DORA_STUDY_INCOMPLETE) + s->nfailures +
                    (s->figures == DORA_FIG_FAILED);
        skipped += s->figures == DORA_FIG_SKIPPED;
        for (size_t k = 0; k < s->nexpect; k++) {
            failures += s->results[k].outcome == DORA_OUTCOME_FAILED;
            skipped += s->results[k].outcome == DORA_OUTCOME_NOT_EVALUATED;
        }
    }
    xml_put(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"dora-analyze batch ");
    xml_escaped(&b, manifest);
    xml_printf(&b, "\" tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" skipped=\"%zu\" time=\"%.3f\">\n",
               tests, failures, errors, skipped, seconds);
    for (size_t i = 0; i < n; i++) {
        const dora_study_report *s = &r[i];
        size_t t = 1 + s->nfailures + s->nexpect + (s->figures != DORA_FIG_NONE), f = 0, sk = 0;
        f += (s->status == DORA_STUDY_INCOMPLETE) + s->nfailures + (s->figures == DORA_FIG_FAILED);
        sk += s->figures == DORA_FIG_SKIPPED;
        for (size_t k = 0; k < s->nexpect; k++) {
            f += s->results[k].outcome == DORA_OUTCOME_FAILED;
            sk += s->results[k].outcome == DORA_OUTCOME_NOT_EVALUATED;
        }
        xml_put(&b, "  <testsuite name=\"");
        xml_escaped(&b, s->name);
        xml_printf(&b, "\" tests=\"%zu\" failures=\"%zu\" errors=\"%d\" skipped=\"%zu\" time=\"%.3f\">\n",
                   t, f, s->status == DORA_STUDY_ERROR, sk, s->seconds);
        char msg[600];
        if (s->status == DORA_STUDY_ERROR)
            testcase(&b, s->name, "study", "error", s->error ? s->error : "the study did not run");
        else if (s->status == DORA_STUDY_INCOMPLETE) {
            snprintf(msg, sizeof msg, "%zu of %zu unit(s) failed", s->units_failed, s->units_total);
            testcase(&b, s->name, "study", "failure", msg);
        } else
            testcase(&b, s->name, "study", NULL, NULL);
        for (size_t k = 0; k < s->nfailures; k++) {
            char name[1200];
            snprintf(name, sizeof name, "unit %s@%lld", s->failures[k].run,
                     (long long)s->failures[k].step);
            testcase(&b, s->name, name, "failure", s->failures[k].message);
        }
        for (size_t k = 0; k < s->nexpect; k++) {
            char name[1200];
            snprintf(name, sizeof name, "expect %s", s->expect[k].name);
            const dora_expect_result *er = &s->results[k];
            testcase(&b, s->name, name,
                     er->outcome == DORA_OUTCOME_HELD     ? NULL
                     : er->outcome == DORA_OUTCOME_FAILED ? "failure"
                                                          : "skipped",
                     er->message);
        }
        if (s->figures != DORA_FIG_NONE)
            testcase(&b, s->name, "figures",
                     s->figures == DORA_FIG_DRAWN    ? NULL
                     : s->figures == DORA_FIG_FAILED ? "failure"
                                                     : "skipped",
                     s->figures_message ? s->figures_message : "");
        xml_put(&b, "  </testsuite>\n");
    }
    xml_put(&b, "</testsuites>\n");
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "'%s': out of memory formatting the report", path);
    }
    int rc = write_atomic(path, (const char *)b.p, b.n, err);
    free(b.p);
    return rc;
}

/* ---- merging shards --------------------------------------------------------- */

int dora_merge_shards(const char *output, const char *const *shards, size_t nshards,
                      const char *command_line, size_t *missing, char *missing_msg,
                      size_t msg_size, dora_err *err)
{
    char *header = NULL;
    dora_result *all = NULL; /* every unit of every shard */
    size_t nall = 0, capall = 0;
    dora_result *joined = NULL;
    size_t njoined = 0;
    json_t *h = NULL;
    char *jout = NULL;
    dora_journal *jn = NULL;
    int rc = -1;
    if (missing)
        *missing = 0;
    if (missing_msg && msg_size)
        missing_msg[0] = '\0';
    if (nshards == 0)
        return dora_errf(err, "no shard file given");
    for (size_t i = 0; i < nshards; i++) {
        char *jp = util_has_suffix(shards[i], ".journal") ? strdup(shards[i])
                                                           : dora_journal_path(shards[i]);
        char *hd = NULL;
        dora_result *u = NULL;
        size_t nu = 0;
        if (!jp) {
            dora_errf(err, "out of memory");
            goto done;
        }
        int r = dora_journal_read(jp, &hd, &u, &nu, NULL, err);
        if (r == 0)
            dora_errf(err, "'%s': no journal beside the shard file '%s' (merge reads the journal "
                           "each shard writes as it goes)",
                      jp, shards[i]);
        free(jp);
        if (r != 1)
            goto done;
        if (!header) {
            header = hd;
        } else if (strcmp(header, hd) != 0) {
            dora_errf(err, "'%s' belongs to another study, or was planned from other inputs, "
                           "than '%s' (their journal headers differ)",
                      shards[i], shards[0]);
            free(hd);
            dora_journal_results_free(u, nu);
            goto done;
        } else {
            free(hd);
        }
        if (nall + nu > capall) {
            size_t nc = capall ? capall : 16;
            while (nc < nall + nu)
                nc *= 2;
            dora_result *q = realloc(all, nc * sizeof *q);
            if (!q) {
                dora_journal_results_free(u, nu);
                dora_errf(err, "out of memory");
                goto done;
            }
            all = q;
            capall = nc;
        }
        memcpy(all + nall, u, nu * sizeof *u);
        nall += nu;
        free(u); /* the results moved into ALL */
    }
    json_error_t jerr;
    h = json_loads(header, 0, &jerr);
    json_t *runs = h ? json_object_get(h, "runs") : NULL;
    if (!json_is_array(runs)) {
        dora_errf(err, "'%s': the journal header does not list the study's runs", shards[0]);
        goto done;
    }
    joined = calloc(json_array_size(runs) + 1, sizeof *joined);
    const dora_result **parts = calloc(nall + 1, sizeof *parts);
    if (!joined || !parts) {
        free(parts);
        dora_errf(err, "out of memory");
        goto done;
    }
    size_t nmiss = 0, used = 0;
    size_t ri;
    json_t *ro;
    json_array_foreach(runs, ri, ro) {
        const char *name = json_string_value(json_object_get(ro, "name"));
        json_t *steps = json_object_get(ro, "steps");
        if (!name || !json_is_array(steps)) {
            dora_errf(err, "'%s': the journal header has a malformed run", shards[0]);
            free(parts);
            goto done;
        }
        size_t np = 0;
        for (size_t i = 0; i < nall; i++)
            if (strcmp(all[i].name, name) == 0) {
                parts[np++] = &all[i];
                used++;
            }
        size_t si;
        json_t *sv;
        json_array_foreach(steps, si, sv) {
            int64_t step = json_integer_value(sv);
            int have = 0;
            for (size_t p = 0; p < np && !have; p++)
                for (size_t s = 0; s < parts[p]->nsteps && !have; s++)
                    have = parts[p]->steps[s] == step;
            if (!have) {
                if (missing_msg && nmiss < 5) {
                    size_t l = strlen(missing_msg);
                    snprintf(missing_msg + l, msg_size - l, "%s%s@%lld", nmiss ? ", " : "", name,
                             (long long)step);
                }
                nmiss++;
            }
        }
        if (np == 0)
            continue;
        if (dora_result_join(&joined[njoined], parts, np, err) != 0) {
            free(parts);
            goto done;
        }
        njoined++;
    }
    free(parts);
    if (used != nall) {
        dora_errf(err, "'%s': a journal holds a run that its header does not list", shards[0]);
        goto done;
    }
    if (missing)
        *missing = nmiss;
    if (missing_msg && nmiss > 5) {
        size_t l = strlen(missing_msg);
        snprintf(missing_msg + l, msg_size - l, " and %zu more", nmiss - 5);
    }
    if (njoined == 0) {
        dora_errf(err, "the shard files hold no results");
        goto done;
    }
    if (h5o_write(output, joined, njoined, command_line, err) != 0)
        goto done;
    /* the joined output gets a journal of its own, so that batch resumes from it */
    if (!(jout = dora_journal_path(output))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (dora_journal_create(&jn, jout, header, all, nall, err) != 0)
        goto done;
    rc = 0;
done:
    dora_journal_close(jn);
    free(jout);
    json_decref(h);
    for (size_t i = 0; i < njoined; i++)
        dora_result_release(&joined[i]);
    free(joined);
    dora_journal_results_free(all, nall);
    free(header);
    return rc;
}
