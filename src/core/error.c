#include "dora/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int dora_errf(dora_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->missing = 0;
    }
    return -1;
}

int dora_err_missing(dora_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->missing = 1;
    }
    return -1;
}

int dora_errprefix(dora_err *err, const char *fmt, ...)
{
    if (err) {
        char prefix[DORA_ERR_MAX], old[DORA_ERR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        /* prefix + ": " + old, truncated to fit; written by hand because
         * snprintf("%s: %s") trips -Wformat-truncation. */
        size_t n = strlen(prefix), m = strlen(old), cap = sizeof err->msg - 1;
        if (n > cap)
            n = cap;
        memcpy(err->msg, prefix, n);
        size_t k = n;
        for (const char *sep = ": "; *sep && k < cap; sep++)
            err->msg[k++] = *sep;
        if (m > cap - k)
            m = cap - k;
        memcpy(err->msg + k, old, m);
        err->msg[k + m] = '\0';
    }
    return -1;
}
