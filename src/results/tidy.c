/* tidy.c - analyze's tidy table, and the table written with the HDF5 file;
 * see include/dora/tidy.h. */
#define _GNU_SOURCE
#include "dora/tidy.h"
#include "dora/h5out.h"
#include "core/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void dora_tidy_field(FILE *f, const char *s, int csv)
{
    if (!csv) {
        for (const char *p = s; *p; p++) {
            if (*p == '\t')
                fputs("\\t", f);
            else if (*p == '\n')
                fputs("\\n", f);
            else if (*p == '\\')
                fputs("\\\\", f);
            else
                fputc(*p, f);
        }
        return;
    }
    if (strpbrk(s, ",\"\n\r") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

void dora_tidy_print(FILE *f, const dora_result *res, size_t nres, int csv)
{
    const char sep = csv ? ',' : '\t';
    fprintf(f, "run%cmethod%cstep%cmodule%clayer%cdelta_m%cdelta_d\n", sep, sep, sep, sep, sep, sep);
    for (size_t i = 0; i < nres; i++) {
        const dora_result *r = &res[i];
        for (size_t s = 0; s < r->nsteps; s++)
            for (size_t l = 0; l < r->nmodules; l++) {
                dora_tidy_field(f, r->name, csv);
                fprintf(f, "%c%s%c%lld%c", sep, r->method, sep, (long long)r->steps[s], sep);
                dora_tidy_field(f, r->modules[l], csv);
                fprintf(f, "%c%d%c%.17g%c%.17g\n", sep, (int)r->layer[l], sep,
                        r->delta_m[s * r->nmodules + l], sep, r->delta_d[s * r->nmodules + l]);
            }
    }
}

/* The CSV table into O's temporary file (flushed to disk), not yet renamed:
 * it is committed with the HDF5 file, after it. */
static int stage_csv(util_out *o, const char *path, const dora_result *res, size_t nres,
                     dora_err *err)
{
    if (util_out_begin(o, path, err) != 0)
        return -1;
    int fd = util_out_open(o, err);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0) {
            dora_errf(err, "'%s': cannot write: %s", path, strerror(errno));
            close(fd);
        }
        util_out_abort(o);
        return -1;
    }
    dora_tidy_print(f, res, nres, 1);
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        dora_errf(err, "'%s': cannot write: %s", path, strerror(e));
        util_out_abort(o);
        return -1;
    }
    return 0;
}

int dora_tidy_write(const char *out, const char *csv_path, const dora_result *res, size_t nres,
                    const char *command_line, dora_err *err)
{
    return dora_tidy_write_stats(out, csv_path, res, nres, command_line, NULL, err);
}

int dora_tidy_write_stats(const char *out, const char *csv_path, const dora_result *res,
                          size_t nres, const char *command_line, const dora_stats_opts *stats,
                          dora_err *err)
{
    util_out csv_out = {0};
    csv_out.slot = -1;
    if (csv_path && stage_csv(&csv_out, csv_path, res, nres, err) != 0)
        return -1;
    int rc = h5o_write_stats(out, res, nres, command_line, stats, err);
    if (rc == 0 && csv_path && util_out_commit(&csv_out, err) != 0) {
        unlink(out); /* not one without the other */
        dora_errprefix(err, "'%s' not written either", out);
        rc = -1;
    }
    util_out_abort(&csv_out);
    return rc;
}
