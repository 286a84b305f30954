/* config.c - the storage conventions config.json tells; see include/dora/config.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/config.h"
#include "core/util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (16u << 20)

int dora_config_conv1d(const dora_model *m, const char **model_type, dora_err *err)
{
    static const char *const conv1d[] = {"gpt2", "openai-gpt", "imagegpt",
                                         "decision_transformer"};
    *model_type = NULL;
    char *dir = util_dirname(m->path);
    char *path = dir ? util_join(dir, "config.json") : NULL;
    free(dir);
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
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    int rc = 0;
    if (!root) {
        rc = dora_errf(err, "'%s': not valid JSON: %s (line %d, column %d)", path, jerr.text,
                       jerr.line, jerr.column);
    } else {
        const char *mt = json_string_value(json_object_get(root, "model_type"));
        for (size_t i = 0; mt && i < sizeof conv1d / sizeof conv1d[0]; i++)
            if (strcmp(mt, conv1d[i]) == 0) {
                *model_type = conv1d[i];
                rc = 1;
            }
    }
    json_decref(root);
    free(path);
    return rc;
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
