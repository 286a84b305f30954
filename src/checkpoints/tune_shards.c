/* tune_shards.c - the shards of one epoch of torchtune's HF checkpoints; see
 * include/dora/tune_shards.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/tune_shards.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHARDS 100000

int dora_tune_shard_name(const char *name, int64_t *shard, int64_t *epoch)
{
    if (strncmp(name, "hf_model_", 9) != 0)
        return 0;
    const char *p = name + 9;
    size_t ns = strspn(p, "0123456789");
    if (ns == 0 || p[ns] != '_')
        return 0;
    const char *e = p + ns + 1;
    size_t ne = strspn(e, "0123456789");
    if (ne == 0 || strcmp(e + ne, ".pt") != 0)
        return 0;
    char a[24], b[24];
    if (ns > 19 || ne > 19)
        return -1;
    memcpy(a, p, ns);
    a[ns] = '\0';
    memcpy(b, e, ne);
    b[ne] = '\0';
    return util_parse_i64(a, 0, INT64_MAX, shard) == 0 &&
                   util_parse_i64(b, 0, INT64_MAX, epoch) == 0
               ? 1
               : -1;
}

int dora_tune_shards(const char *path, char ***paths, size_t *n, dora_err *err)
{
    *paths = NULL;
    *n = 0;
    char *dir = util_dirname(path), *base = util_basename(path);
    int64_t s0, epoch;
    if (!dir || !base) {
        free(dir);
        free(base);
        return dora_errf(err, "out of memory");
    }
    int rc = dora_tune_shard_name(base, &s0, &epoch) == 1 ? 0 : -1;
    free(base);
    DIR *d = rc == 0 ? opendir(dir) : NULL;
    if (rc != 0 || !d) {
        free(dir);
        return rc != 0 ? dora_errf(err, "'%s' is not named hf_model_NNNN_E.pt", path)
                       : dora_errf(err, "'%s': cannot list folder: %s", path, strerror(errno));
    }
    char **v = calloc(MAX_SHARDS, sizeof *v);
    int64_t top = 0;
    struct dirent *de;
    while (v && rc == 0 && (de = readdir(d)) != NULL) {
        int64_t s, e;
        if (dora_tune_shard_name(de->d_name, &s, &e) != 1 || e != epoch)
            continue;
        if (s < 1 || s > MAX_SHARDS)
            rc = dora_errf(err, "'%s/%s': shard number out of 1..%d", dir, de->d_name,
                           MAX_SHARDS);
        else if (v[s - 1])
            rc = dora_errf(err, "'%s/%s': shard %lld of epoch %lld twice", dir, de->d_name,
                           (long long)s, (long long)epoch);
        else if (!(v[s - 1] = util_join(dir, de->d_name)))
            rc = dora_errf(err, "out of memory");
        top = s > top ? s : top;
    }
    closedir(d);
    if (!v)
        rc = dora_errf(err, "out of memory");
    for (int64_t s = 0; rc == 0 && s < top; s++)
        if (!v[s])
            rc = dora_err_missing(err, "'%s': epoch %lld has shard %lld but not hf_model_%04lld_%lld.pt",
                                  dir, (long long)epoch, (long long)top, (long long)(s + 1),
                                  (long long)epoch);
    free(dir);
    if (rc != 0) {
        for (int64_t s = 0; v && s < top; s++)
            free(v[s]);
        free(v);
        return -1;
    }
    *paths = v;
    *n = (size_t)top;
    return 0;
}
