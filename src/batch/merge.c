/* merge.c - joining the journals of shard files into one output; see
 * include/dora/batch.h. */
#define _XOPEN_SOURCE 700 /* strdup, with POSIX 2008 */
#include "dora/batch.h"
#include "dora/h5out.h"
#include "batch/common.h"
#include "core/util.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The journal a shard argument names: SHARD.journal, or SHARD itself when it
 * ends in ".journal"; newly allocated. */
static char *journal_of(const char *shard)
{
    return util_has_suffix(shard, ".journal") ? strdup(shard) : dora_journal_path(shard);
}

/* The size of the file PATH (NULL, or not there: 0), for the progress. */
static uint64_t file_bytes(const char *path)
{
    struct stat sb;
    return path && stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* The bytes of the shards' journals. */
static uint64_t journal_bytes(const char *const *shards, size_t nshards)
{
    uint64_t total = 0;
    for (size_t i = 0; i < nshards; i++) {
        char *jp = journal_of(shards[i]);
        total += file_bytes(jp);
        free(jp);
    }
    return total;
}

/* The journals of the shards read into *HEADER (that of the first; every
 * other must be the same) and *ALL[0..*NALL) (every unit of every shard),
 * counted in PROGRESS. 0, or -1 with ERR set; the caller frees what was read
 * either way. */
static int read_shards(const char *const *shards, size_t nshards, char **header,
                       dora_result **all, size_t *nall, dora_progress *progress, dora_err *err)
{
    size_t capall = 0;
    for (size_t i = 0; i < nshards; i++) {
        char *jp = journal_of(shards[i]);
        char *hd = NULL;
        uint64_t jbytes = file_bytes(jp);
        dora_progress_label(progress, "'%s'", shards[i]);
        dora_result *u = NULL;
        size_t nu = 0;
        if (!jp)
            return dora_errf(err, "out of memory");
        int r = dora_journal_read(jp, &hd, &u, &nu, NULL, err);
        if (r == 0)
            dora_errf(err, "'%s': no journal beside the shard file '%s' (merge reads the journal "
                           "each shard writes as it goes)",
                      jp, shards[i]);
        free(jp);
        if (r != 1)
            return -1;
        if (!*header) {
            *header = hd;
        } else if (strcmp(*header, hd) != 0) {
            free(hd);
            dora_journal_results_free(u, nu);
            return dora_errf(err, "'%s' belongs to another study, or was planned from other "
                                  "inputs, than '%s' (their journal headers differ)",
                             shards[i], shards[0]);
        } else {
            free(hd);
        }
        if (*nall + nu > capall) {
            size_t nc = capall ? capall : 16;
            while (nc < *nall + nu)
                nc *= 2;
            dora_result *q = realloc(*all, nc * sizeof *q);
            if (!q) {
                dora_journal_results_free(u, nu);
                return dora_errf(err, "out of memory");
            }
            *all = q;
            capall = nc;
        }
        memcpy(*all + *nall, u, nu * sizeof *u);
        *nall += nu;
        free(u); /* the results moved into ALL */
        dora_progress_add_done(progress, jbytes, 1);
    }
    return 0;
}

int dora_merge_shards(const char *output, const char *const *shards, size_t nshards,
                      const char *command_line, size_t *missing, char *missing_msg,
                      size_t msg_size, dora_progress *progress, dora_err *err)
{
    return dora_merge_shards_stats(output, shards, nshards, command_line, NULL, missing,
                                   missing_msg, msg_size, progress, err);
}

int dora_merge_shards_stats(const char *output, const char *const *shards, size_t nshards,
                            const char *command_line, const dora_stats_opts *stats,
                            size_t *missing, char *missing_msg, size_t msg_size,
                            dora_progress *progress, dora_err *err)
{
    char *header = NULL;
    dora_result *all = NULL; /* every unit of every shard */
    size_t nall = 0;
    dora_result *joined = NULL;
    size_t njoined = 0;
    json_t *h = NULL;
    char *jout = NULL;
    dora_journal *jn = NULL;
    int rc = -1;
    if (missing)
        *missing = 0;
    if (missing_msg && msg_size)
        missing_msg[0] = '\0';
    if (nshards == 0)
        return dora_errf(err, "no shard file given");
    if (progress) {
        dora_progress_add_total(progress, journal_bytes(shards, nshards), nshards);
        dora_progress_begin(progress);
    }
    if (read_shards(shards, nshards, &header, &all, &nall, progress, err) != 0)
        goto done;
    json_error_t jerr;
    h = json_loads(header, 0, &jerr);
    json_t *runs = h ? json_object_get(h, "runs") : NULL;
    if (!json_is_array(runs)) {
        dora_errf(err, "'%s': the journal header does not list the study's runs", shards[0]);
        goto done;
    }
    joined = calloc(json_array_size(runs) + 1, sizeof *joined);
    const dora_result **parts = calloc(nall + 1, sizeof *parts);
    if (!joined || !parts) {
        free(parts);
        dora_errf(err, "out of memory");
        goto done;
    }
    size_t nmiss = 0, used = 0;
    size_t ri;
    json_t *ro;
    json_array_foreach(runs, ri, ro) {
        const char *name = json_string_value(json_object_get(ro, "name"));
        json_t *steps = json_object_get(ro, "steps");
        if (!name || !json_is_array(steps)) {
            dora_errf(err, "'%s': the journal header has a malformed run", shards[0]);
            free(parts);
            goto done;
        }
        size_t np = 0;
        for (size_t i = 0; i < nall; i++)
            if (strcmp(all[i].name, name) == 0) {
                parts[np++] = &all[i];
                used++;
            }
        size_t si;
        json_t *sv;
        json_array_foreach(steps, si, sv) {
            int64_t step = json_integer_value(sv);
            int have = 0;
            for (size_t p = 0; p < np && !have; p++)
                for (size_t s = 0; s < parts[p]->nsteps && !have; s++)
                    have = parts[p]->steps[s] == step;
            if (!have) {
                if (missing_msg && nmiss < 5) {
                    size_t l = strlen(missing_msg);
                    snprintf(missing_msg + l, msg_size - l, "%s%s@%lld", nmiss ? ", " : "", name,
                             (long long)step);
                }
                nmiss++;
            }
        }
        if (np == 0)
            continue;
        if (dora_result_join(&joined[njoined], parts, np, err) != 0) {
            free(parts);
            goto done;
        }
        njoined++;
    }
    free(parts);
    if (used != nall) {
        dora_errf(err, "'%s': a journal holds a run that its header does not list", shards[0]);
        goto done;
    }
    if (missing)
        *missing = nmiss;
    if (missing_msg && nmiss > 5) {
        size_t l = strlen(missing_msg);
        snprintf(missing_msg + l, msg_size - l, " and %zu more", nmiss - 5);
    }
    if (njoined == 0) {
        dora_errf(err, "the shard files hold no results");
        goto done;
    }
    if (h5o_write_stats(output, joined, njoined, command_line, stats, err) != 0)
        goto done;
    /* the joined output gets a journal of its own, so that batch resumes from it */
    if (!(jout = dora_journal_path(output))) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (dora_journal_create(&jn, jout, header, all, nall, err) != 0)
        goto done;
    rc = 0;
done:
    dora_progress_end(progress);
    dora_journal_close(jn);
    free(jout);
    json_decref(h);
    for (size_t i = 0; i < njoined; i++)
        dora_result_release(&joined[i]);
    free(joined);
    dora_journal_results_free(all, nall);
    free(header);
    return rc;
}
