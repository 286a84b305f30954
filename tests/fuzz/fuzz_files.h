/* fuzz_files.h - shared by the file-based fuzz targets: write the input to a
 * fresh file in a private temporary folder (made once per process), so that
 * the parsers are fuzzed through the same entry points the tool uses. */
#ifndef FUZZ_FILES_H
#define FUZZ_FILES_H

#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[] = "/tmp/dora-fuzz-XXXXXX";

/* Path of NAME inside the temporary folder (static buffer). */
static const char *fuzz_path(const char *name)
{
    static char buf[256];
    static int made;
    if (!made) {
        if (!mkdtemp(fuzz_dir))
            abort();
        made = 1;
    }
    snprintf(buf, sizeof buf, "%s/%s", fuzz_dir, name);
    return buf;
}

/* Write SIZE bytes of DATA to NAME in the folder; returns its path. */
static const char *fuzz_write(const char *name, const unsigned char *data, size_t size)
{
    const char *p = fuzz_path(name);
    FILE *f = fopen(p, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f) != 0)
        abort();
    return p;
}

#endif
