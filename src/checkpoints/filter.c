/* filter.c - tensor names kept by an include / exclude pair; see include/dora/filter.h. */
#include "dora/filter.h"

#include <string.h>

static int compile_one(regex_t *re, const char *text, dora_err *err)
{
    int r = regcomp(re, text, REG_EXTENDED | REG_NOSUB);
    if (r != 0) {
        char msg[256];
        regerror(r, re, msg, sizeof msg);
        dora_errf(err, "'%s': %s", text, msg);
        return -1;
    }
    return 0;
}

int dora_filter_compile(dora_filter *f, const char *include, const char *exclude, dora_err *err)
{
    memset(f, 0, sizeof *f);
    if (include) {
        if (compile_one(&f->include, include, err) != 0)
            return DORA_FILTER_BAD_INCLUDE;
        f->has_include = 1;
    }
    if (exclude) {
        if (compile_one(&f->exclude, exclude, err) != 0) {
            dora_filter_free(f);
            return DORA_FILTER_BAD_EXCLUDE;
        }
        f->has_exclude = 1;
    }
    return 0;
}

int dora_filter_match(const regex_t *include, const regex_t *exclude, const char *name)
{
    if (include && regexec(include, name, 0, NULL, 0) != 0)
        return 0;
    if (exclude && regexec(exclude, name, 0, NULL, 0) == 0)
        return 0;
    return 1;
}

const regex_t *dora_filter_include(const dora_filter *f)
{
    return f && f->has_include ? &f->include : NULL;
}

const regex_t *dora_filter_exclude(const dora_filter *f)
{
    return f && f->has_exclude ? &f->exclude : NULL;
}

int dora_filter_keeps(const dora_filter *f, const char *name)
{
    return dora_filter_match(dora_filter_include(f), dora_filter_exclude(f), name);
}

void dora_filter_free(dora_filter *f)
{
    if (f->has_include)
        regfree(&f->include);
    if (f->has_exclude)
        regfree(&f->exclude);
    memset(f, 0, sizeof *f);
}
