/* config.c - a model's config.json, read once; see include/dora/config.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/config.h"
#include "core/util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (16u << 20)

struct dora_config {
    char *path;
    json_t *root; /* an object */
};

int dora_config_load(dora_config **out, const char *dir, dora_err *err)
{
    *out = NULL;
    char *path = util_join(dir, "config.json");
    if (!path)
        return dora_errf(err, "out of memory");
    if (!util_is_file(path)) {
        free(path);
        return 0;
    }
    char *text;
    size_t len;
    if (util_read_file(path, CONFIG_MAX_BYTES, &text, &len, err) != 0) {
        free(path);
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root || !json_is_object(root)) {
        dora_errf(err, "'%s': not a JSON object%s%s", path, root ? "" : ": ",
                  root ? "" : jerr.text);
        json_decref(root);
        free(path);
        return -1;
    }
    dora_config *c = malloc(sizeof *c);
    if (!c) {
        json_decref(root);
        free(path);
        return dora_errf(err, "out of memory");
    }
    c->path = path;
    c->root = root;
    *out = c;
    return 0;
}

int dora_config_open(dora_config **out, const dora_model *m, dora_err *err)
{
    char *dir = util_dirname(m->path);
    int rc = dir ? dora_config_load(out, dir, err) : dora_errf(err, "out of memory");
    free(dir);
    return rc;
}

json_t *dora_config_root(const dora_config *c) { return c->root; }

void dora_config_close(dora_config *c)
{
    if (!c)
        return;
    json_decref(c->root);
    free(c->path);
    free(c);
}

const char *dora_config_path(const dora_config *c)
{
    return c ? c->path : NULL;
}

/* The value under the dotted KEY, or NULL. */
static json_t *lookup(const dora_config *c, const char *key)
{
    if (!c)
        return NULL;
    json_t *v = c->root;
    char part[128];
    while (v && *key) {
        size_t n = strcspn(key, ".");
        if (n >= sizeof part)
            return NULL;
        memcpy(part, key, n);
        part[n] = '\0';
        v = json_is_object(v) ? json_object_get(v, part) : NULL;
        key += n + (key[n] == '.');
    }
    return v;
}

const char *dora_config_str(const dora_config *c, const char *key)
{
    return json_string_value(lookup(c, key));
}

const char *dora_config_model_type(const dora_config *c)
{
    return dora_config_str(c, "model_type");
}

int dora_config_int(const dora_config *c, const char *key, int64_t *v, dora_err *err)
{
    json_t *j = lookup(c, key);
    if (!j || json_is_null(j))
        return 0;
    if (json_is_boolean(j)) {
        *v = json_is_true(j);
        return 1;
    }
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return dora_errf(err, "'%s': '%s' is not a non-negative integer", c->path, key);
    *v = json_integer_value(j);
    return 1;
}

const char *dora_config_conv1d(const dora_config *c)
{
    static const char *const conv1d[] = {"gpt2", "openai-gpt", "imagegpt",
                                         "decision_transformer"};
    const char *mt = dora_config_model_type(c);
    for (size_t i = 0; mt && i < sizeof conv1d / sizeof conv1d[0]; i++)
        if (strcmp(mt, conv1d[i]) == 0)
            return conv1d[i];
    return NULL;
}

int dora_config_conv1d_name(const char *name)
{
    static const char *const mods[] = {".c_attn.weight", ".c_proj.weight", ".c_fc.weight",
                                       ".q_attn.weight"};
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++)
        if (util_has_suffix(name, mods[i]))
            return 1;
    return 0;
}
