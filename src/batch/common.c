/* common.c - small helpers of the batch layer; see batch/common.h. */
#define _XOPEN_SOURCE 700 /* strdup, with POSIX 2008 */
#include "batch/common.h"
#include "dora/batch.h"
#include "core/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *batch_xprintf(const char *fmt, ...)
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
char *batch_utf8_clean(const char *s)
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

json_t *batch_jstr(const char *s)
{
    char *c = batch_utf8_clean(s);
    json_t *j = c ? json_string(c) : NULL;
    free(c);
    return j ? j : json_null();
}

/* Write BUF to PATH through a private temporary (util_out), flushed and
 * renamed. */
int batch_write_atomic(const char *path, const char *buf, size_t len, dora_err *err)
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

int batch_mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *q = '/';
    }
    int rc = mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

void batch_analysis_opts(const dora_study *st, int threads, dora_analysis_opts *o)
{
    *o = (dora_analysis_opts){
        .include = dora_filter_include(&st->filter),
        .exclude = dora_filter_exclude(&st->filter),
        .threads = threads,
        .renames = (const char *const *)st->renames,
        .nrenames = st->nrenames,
        .transpose = st->transpose,
        .no_split = st->no_split,
        .base_quant = st->base_quant,
        .quant_skip = st->quant_skip,
    };
}

int batch_study_settle(dora_study *st, dora_err *err)
{
    if (st->quant_settled)
        return 0;
    if (dora_quant_settle(st->base, &st->base_quant, &st->quant_skip, err) != 0)
        return -1;
    st->quant_settled = 1;
    return 0;
}
