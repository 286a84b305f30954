/* filter.h - which tensors (or modules) a command analyses, by name: the
 * --modules RE / --exclude RE pair of analyze and spectrum and the "modules"
 * object of a batch manifest.
 *
 * Both are POSIX extended regular expressions matched anywhere in the name
 * (regexec, no anchors added). A name is kept when it matches the include
 * expression (or there is none) and does not match the exclude expression
 * (or there is none): exclude applies after include.
 */
#ifndef DORA_FILTER_H
#define DORA_FILTER_H

#include "dora/error.h"

#include <regex.h>

/* Compiled expressions; has_* say which are set. Zero-initialised, it keeps
 * every name. Owns the compiled regex_t: dora_filter_free releases them. */
typedef struct dora_filter {
    regex_t include, exclude;
    int has_include, has_exclude;
} dora_filter;

enum { DORA_FILTER_BAD_INCLUDE = -1, DORA_FILTER_BAD_EXCLUDE = -2 };

/* Compile INCLUDE and EXCLUDE (each NULL for none) into *F. 0 on success;
 * DORA_FILTER_BAD_INCLUDE or DORA_FILTER_BAD_EXCLUDE when that expression does
 * not compile, with ERR = "'RE': what regerror says" (the caller names the
 * option), and *F left empty (nothing to free). */
int dora_filter_compile(dora_filter *f, const char *include, const char *exclude, dora_err *err);

/* 1 if NAME is kept by F (NULL keeps everything), else 0. */
int dora_filter_keeps(const dora_filter *f, const char *name);

/* The same rule for expressions held apart (either NULL for none): the one
 * place the rule is written. */
int dora_filter_match(const regex_t *include, const regex_t *exclude, const char *name);

/* F's include and exclude expressions as the analysis options take them:
 * NULL where F has none (or F is NULL). Borrowed from F. */
const regex_t *dora_filter_include(const dora_filter *f);
const regex_t *dora_filter_exclude(const dora_filter *f);

/* Release what dora_filter_compile compiled; F keeps every name afterwards. */
void dora_filter_free(dora_filter *f);

#endif
