/* common.h - small helpers the files of the batch layer share. Each returns
 * newly allocated memory (or 0/-1 with a dora_err); none prints. */
#ifndef DORA_BATCH_COMMON_H
#define DORA_BATCH_COMMON_H

#include "dora/error.h"

#include <jansson.h>
#include <stddef.h>

/* printf into a new string, or NULL when out of memory. */
char *batch_xprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* S (NULL: "") with invalid UTF-8 bytes replaced by '?', newly allocated. */
char *batch_utf8_clean(const char *s);
/* A JSON string of batch_utf8_clean(S); json null when out of memory. */
json_t *batch_jstr(const char *s);
/* Write BUF to PATH through a private temporary (util_out), flushed and
 * renamed. */
int batch_write_atomic(const char *path, const char *buf, size_t len, dora_err *err);
/* mkdir -p PATH (mode 0777 less umask): 0, or -1 with errno set. */
int batch_mkdir_p(const char *path);

struct dora_study;
struct dora_analysis_opts;
/* The analysis options of a unit of study ST on THREADS threads: its filter,
 * renames, transpose, no_split and settled base_quant. */
void batch_analysis_opts(const struct dora_study *st, int threads,
                         struct dora_analysis_opts *o);
/* ST's base_quant settled against its base's config.json (quant.h,
 * dora_quant_settle), once: 0, or -1 with ERR set. */
int batch_study_settle(struct dora_study *st, dora_err *err);

#endif
