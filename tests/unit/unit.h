/* unit.h - a minimal test harness: CHECK records a failure with its place and
 * goes on; each test binary ends with unit_summary(), which prints
 * "N passed, N failed" and returns the exit status. */
#ifndef UNIT_H
#define UNIT_H

#include <math.h>
#include <stdio.h>

static int unit_pass, unit_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            unit_pass++;                                                                           \
        } else {                                                                                   \
            unit_fail++;                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            unit_pass++;                                                                           \
        } else {                                                                                   \
            unit_fail++;                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* |got - want| <= atol + rtol * |want|, and neither is NaN. */
static inline int unit_close(double got, double want, double rtol, double atol)
{
    if (isnan(got) || isnan(want))
        return 0;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

static inline int unit_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, unit_pass, unit_fail);
    return unit_fail ? 1 : 0;
}

#endif
