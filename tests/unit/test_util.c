/* test_util.c - core/util.c: the lexical path clean-up that manifests and
 * output resolution share. */
#include "unit.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

static void clean_is(const char *in, const char *want)
{
    char *got = util_path_clean(in);
    CHECK_MSG(got && strcmp(got, want) == 0, "'%s' -> '%s', want '%s'", in, got ? got : "(null)",
              want);
    free(got);
}

int main(void)
{
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
