/* adapter_base.c - the base an adapter run names, for `analyze` without --base:
 * see dora_runs_adapter_base in run.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/adapter.h"
#include "dora/hub.h"
#include "dora/run.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The base that config value V names, seen from the adapter folder DIR: a path
 * (absolute, or relative to DIR when it exists there), else V itself, which
 * dora_model_open reads as a hub id. Allocated; NULL when out of memory. */
static char *named_base(const char *dir, const char *v)
{
    if (v[0] == '/')
        return util_path_clean(v);
    char *joined = util_join(dir, v), *out = NULL;
    struct stat st;
    if (joined && stat(joined, &st) == 0)
        out = util_path_clean(joined);
    else if (joined)
        out = strdup(v);
    free(joined);
    return out;
}

/* The adapter folder of a run's first step, and what its config names. */
static const char *first_base(const dora_run *run, const char **dir)
{
    for (size_t s = 0; s < run->nsteps; s++)
        if (run->steps[s].adapter) {
            *dir = run->steps[s].path;
            return run->steps[s].adapter->base_model;
        }
    return NULL;
}

int dora_runs_adapter_base(const char *const *paths, size_t n, char **base, dora_err *err)
{
    *base = NULL;
    char *from = NULL; /* the run that named *base */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        dora_run run;
        if (dora_run_discover(&run, paths[i], err) != 0) {
            rc = -1;
            break;
        }
        const char *dir = NULL, *v = first_base(&run, &dir);
        char *b = v && *v ? named_base(dir, v) : NULL;
        if (!v || !*v) {
            rc = dora_errf(err, "'%s' %s", paths[i],
                           strcmp(run.method, "ft") == 0
                               ? "holds full weights"
                               : "names no base_model_name_or_path in its adapter_config.json");
        } else if (!b) {
            rc = dora_errf(err, "out of memory");
        } else if (*base && strcmp(*base, b) != 0) {
            rc = dora_errf(err, "the runs name different bases: '%s' ('%s') and '%s' ('%s')",
                           *base, from, b, paths[i]);
        } else if (!*base) {
            *base = b;
            b = NULL;
            if (!(from = strdup(paths[i])))
                rc = dora_errf(err, "out of memory");
        }
        free(b);
        dora_run_release(&run);
    }
    free(from);
    if (rc != 0) {
        free(*base);
        *base = NULL;
    }
    return rc;
}
