/* test_util.c - core/util.c: the lexical path clean-up that manifests and
 * output resolution share; the digits of a step inside a file name. */
#include "unit.h"

#include "core/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void clean_is(const char *in, const char *want)
{
    char *got = util_path_clean(in);
    CHECK_MSG(got && strcmp(got, want) == 0, "'%s' -> '%s', want '%s'", in, got ? got : "(null)",
              want);
    free(got);
}

/* util_parse_digits reads exactly N characters: the rest of the name is not looked at */
static void test_digits(void)
{
    int64_t v = -1;
    CHECK(util_parse_digits("00012-step", 5, &v) == 0 && v == 12);
    CHECK(util_parse_digits("9223372036854775807x", 19, &v) == 0 && v == INT64_MAX);
    CHECK(util_parse_digits("9223372036854775808", 19, &v) == -1);  /* INT64_MAX + 1 */
    CHECK(util_parse_digits("10000000000000000000", 20, &v) == -1); /* 20 digits */
    CHECK(util_parse_digits("12a4", 4, &v) == -1 && util_parse_digits("-12", 3, &v) == -1);
    CHECK(util_parse_digits("7", 0, &v) == -1);
}

int main(void)
{
    test_digits();
    clean_is("a/b/c", "a/b/c");
    clean_is("a//b/./c/", "a/b/c");
    clean_is("analysis/../data/x", "data/x");
    clean_is("analysis/./../data/./x", "data/x");
    clean_is("../data/x", "../data/x");
    clean_is("../../x/..", "../..");
    clean_is("a/../../b", "../b");
    clean_is("a/..", ".");
    clean_is("", ".");
    clean_is(".", ".");
    clean_is("/", "/");
    clean_is("//", "/");
    clean_is("/..", "/");
    clean_is("/../a/./b/../c", "/a/c");
    clean_is("/a/b/../../..", "/");
    clean_is("/tmp/x//y/./z.h5", "/tmp/x/y/z.h5");
    return unit_summary("util");
}
