/* error.h - error reporting for library code.
 *
 * Library functions never print and never exit. A function that can fail
 * returns 0 on success and -1 on failure, and on failure fills a dora_err with
 * one line that names what failed: the file, the tensor, the value and the
 * limit. Only the command layer turns that into a message and an exit status.
 */
#ifndef DORA_ERROR_H
#define DORA_ERROR_H

#include <stddef.h>

#define DORA_ERR_MAX 1024

typedef struct dora_err {
    char msg[DORA_ERR_MAX]; /* NUL-terminated, empty when no error was set */
    int missing;            /* 1 when the cause is a file that is not there (yet): a
                               checkpoint still being written, as opposed to a bad one */
} dora_err;

/* Set the message (printf-style). err may be NULL. Always returns -1 so that
 * callers can write `return dora_errf(err, ...);`. */
int dora_errf(dora_err *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* dora_errf, and mark the cause as a missing file (see dora_err.missing). */
int dora_err_missing(dora_err *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefix the current message with "PREFIX: " (printf-style), for adding
 * context such as a file name on the way up. Returns -1. */
int dora_errprefix(dora_err *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
