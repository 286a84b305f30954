/* plan.c - planning a study: its base, runs, units and what its journals
 * already hold; see batch/engine.h. */
#define _GNU_SOURCE
#include "batch/engine.h"
#include "batch/common.h"
#include "dora/notes.h"
#include "core/util.h"

#include <errno.h>
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void batch_study_error(batch *b, study_state *s, const char *msg)
{
    s->rep.status = DORA_STUDY_ERROR;
    free(s->rep.error);
    s->rep.error = strdup(msg);
    (void)b;
}

int batch_add_done(study_state *s, const dora_result *r)
{
    if (s->ndone == s->capdone) {
        size_t nc = s->capdone ? 2 * s->capdone : 16;
        dora_result *q = realloc(s->done, nc * sizeof *q);
        if (!q)
            return -1;
        s->done = q;
        s->capdone = nc;
    }
    s->done[s->ndone++] = *r; /* moved: the caller no longer owns it */
    return 0;
}

static int push_unit(batch *b, const unit *u)
{
    if (b->nunits == b->capunits) {
        size_t nc = b->capunits ? 2 * b->capunits : 64;
        unit *q = realloc(b->units, nc * sizeof *q);
        if (!q)
            return -1;
        b->units = q;
        b->capunits = nc;
    }
    b->units[b->nunits++] = *u;
    return 0;
}

/* Journals whose units may be taken: the study's own, and (without --shard)
 * those of its shard files, written by earlier --shard runs. */
static char **journal_sources(const batch *b, const study_state *s, size_t *n)
{
    char **v = calloc(1, sizeof *v);
    *n = 0;
    if (!v || !(v[0] = dora_journal_path(s->out))) {
        free(v);
        return NULL;
    }
    *n = 1;
    if (b->shard_n)
        return v;
    /* the glob of dora_shard_path(output, *, *), with glob's specials escaped */
    const char *o = s->st->output;
    size_t len = strlen(o);
    int h5 = util_has_suffix(o, ".h5") && len > 3;
    size_t stem = h5 ? len - 3 : len;
    char *pat = malloc(2 * len + 64);
    if (!pat)
        return v;
    size_t k = 0;
    for (size_t i = 0; i < stem; i++) {
        if (strchr("*?[\\", o[i]))
            pat[k++] = '\\';
        pat[k++] = o[i];
    }
    snprintf(pat + k, 64, ".shard-*-of-*%s.journal", h5 ? ".h5" : "");
    glob_t g;
    if (glob(pat, 0, NULL, &g) == 0) {
        char **q = realloc(v, (1 + g.gl_pathc) * sizeof *q);
        if (q) {
            v = q;
            for (size_t i = 0; i < g.gl_pathc; i++)
                if ((v[*n] = strdup(g.gl_pathv[i])))
                    (*n)++;
        }
        globfree(&g);
    }
    free(pat);
    return v;
}

/* Units of a study this run owns, with their stamps; those whose results a
 * journal holds for the same fingerprint and stamps are taken as done. */
static int plan_units(batch *b, study_state *s, size_t *global_index, unit **mine, size_t *nmine)
{
    dora_study *st = s->st;
    size_t total = 0;
    for (size_t r = 0; r < st->nruns; r++)
        total += s->runs[r].nsteps;
    *mine = calloc(total + 1, sizeof **mine);
    *nmine = 0;
    if (!*mine)
        return -1;
    for (size_t r = 0; r < st->nruns; r++)
        for (size_t k = 0; k < s->runs[r].nsteps; k++) {
            size_t idx = (*global_index)++;
            if (b->shard_n && idx % b->shard_n != b->shard_k - 1)
                continue;
            unit *u = &(*mine)[(*nmine)++];
            u->study = (size_t)(s - b->ss);
            u->run = r;
            u->step = k;
            dora_err e = {{0}, 0};
            uint64_t bytes = 0;
            if (dora_step_stamp(s->runs[r].steps[k].path, &u->stamp, &bytes, &e) != 0)
                u->stamp = NULL; /* the unit will fail and say why */
            u->bytes = bytes + s->base_bytes;
        }
    return 0;
}

/* A and B name the same file or folder (equal, or the same real path). */
static int same_path(const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return 1;
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    int same = ra && rb && strcmp(ra, rb) == 0;
    free(ra);
    free(rb);
    return same;
}

/* Take the journals' results for units that are up to date; mark them. */
static int resume(batch *b, study_state *s, unit *mine, size_t nmine, char *taken)
{
    size_t nsrc = 0;
    char **src = journal_sources(b, s, &nsrc);
    if (!src)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < nsrc && rc == 0; i++) {
        char *header = NULL;
        dora_result *units = NULL;
        size_t nu = 0;
        uint64_t tail = 0;
        dora_err e = {{0}, 0};
        int r = dora_journal_read(src[i], &header, &units, &nu, &tail, &e);
        if (r < 0) {
            if (i == 0 && b->force) { /* --force: what is there is replaced */
                if (!b->quiet)
                    batch_log(b, "note: study '%s': %s: replaced (--force)", s->st->name, e.msg);
            } else if (i == 0) { /* the study's own journal: refuse to overwrite what we cannot read */
                char msg[DORA_ERR_MAX + 128];
                snprintf(msg, sizeof msg, "%s (remove it to start the study over)", e.msg);
                batch_study_error(b, s, msg);
                rc = -1;
            } else if (!b->quiet) {
                batch_log(b, "note: study '%s': '%s' not used: %s", s->st->name, src[i], e.msg);
            }
            continue;
        }
        if (r == 0)
            continue;
        if (tail && !b->quiet)
            batch_log(b, "note: study '%s': '%s': %llu byte(s) at the end ignored (a write cut "
                    "short)",
                 s->st->name, src[i], (unsigned long long)tail);
        char *fp = dora_header_fingerprint(header);
        if (!fp || strcmp(fp, s->fingerprint) != 0) {
            if (!b->quiet)
                batch_log(b, "note: study '%s': '%s' is from other inputs (base, module filters or "
                        "program version changed): its units are redone",
                     s->st->name, src[i]);
        } else {
            for (size_t k = 0; k < nu; k++) {
                dora_result *res = &units[k];
                if (res->nsteps != 1)
                    continue;
                for (size_t q = 0; q < nmine; q++) {
                    const unit *u = &mine[q];
                    const dora_study_run *sr = &s->st->runs[u->run];
                    const dora_step *sp = &s->runs[u->run].steps[u->step];
                    if (taken[q] || !u->stamp || strcmp(res->name, sr->name) != 0 ||
                        res->steps[0] != sp->step || strcmp(res->step_stamps[0], u->stamp) != 0 ||
                        !same_path(res->source_path, sr->path) ||
                        !same_path(res->step_paths[0], sp->path))
                        continue;
                    /* the paths as this manifest spells them, as a fresh analysis would */
                    char *np = strdup(sr->path), *nb = strdup(s->st->base), *ns = strdup(sp->path);
                    if (!np || !nb || !ns) {
                        free(np);
                        free(nb);
                        free(ns);
                        rc = -1;
                        break;
                    }
                    free(res->source_path);
                    free(res->base_path);
                    free(res->step_paths[0]);
                    res->source_path = np;
                    res->base_path = nb;
                    res->step_paths[0] = ns;
                    if (batch_add_done(s, res) != 0) {
                        rc = -1;
                        break;
                    }
                    memset(res, 0, sizeof *res);
                    taken[q] = 1;
                    if (b->verbose)
                        batch_log(b, "batch: study '%s': unit %s@%lld up to date (from '%s')",
                             s->st->name, sr->name, (long long)sp->step, src[i]);
                    break;
                }
            }
        }
        free(fp);
        free(header);
        dora_journal_results_free(units, nu);
    }
    for (size_t i = 0; i < nsrc; i++)
        free(src[i]);
    free(src);
    return rc;
}

int batch_plan_study(batch *b, study_state *s, size_t *global_index)
{
    dora_study *st = s->st;
    dora_err e = {{0}, 0};
    char msg[DORA_ERR_MAX + 256];
    s->rep.name = st->name;
    s->rep.nexpect = st->nexpect;
    s->rep.expect = st->expect;
    s->rep.results = calloc(st->nexpect + 1, sizeof *s->rep.results);
    s->runs = calloc(st->nruns, sizeof *s->runs);
    s->out = b->shard_n ? dora_shard_path(st->output, b->shard_k, b->shard_n) : strdup(st->output);
    if (!s->rep.results || !s->runs || !s->out)
        return -1;
    s->rep.output = s->out;
    s->t0 = batch_now();
    if (!b->dry_run) { /* manifests name output trees: make them */
        char *dir = util_dirname(s->out);
        int ok = dir && (util_is_dir(dir) || batch_mkdir_p(dir) == 0);
        if (!ok) {
            snprintf(msg, sizeof msg, "'%s': cannot create the output folder '%s': %s", s->out,
                     dir ? dir : "?", strerror(errno));
            batch_study_error(b, s, msg);
        }
        free(dir);
        if (!ok)
            return 0;
    }
    char note[DORA_NOTE_MAX]; /* a base saved by bitsandbytes: read dequantised, as analyze */
    if (dora_study_open_base(st, &s->base, note, sizeof note, &e) != 0) {
        batch_study_error(b, s, e.msg);
        return 0;
    }
    if (note[0] && !b->quiet)
        batch_log(b, "note: study '%s': %s", st->name, note);
    char *base_stamp = dora_model_stamp(s->base, &s->base_bytes);
    if (!base_stamp)
        return -1;
    s->fingerprint = dora_study_fingerprint(st, base_stamp);
    free(base_stamp);
    if (!s->fingerprint)
        return -1;
    for (size_t r = 0; r < st->nruns; r++) {
        if (dora_run_discover(&s->runs[r], st->runs[r].path, &e) != 0) {
            snprintf(msg, sizeof msg, "run '%s': %s", st->runs[r].name, e.msg);
            batch_study_error(b, s, msg);
            return 0;
        }
        s->ndiscovered = r + 1;
        if (dora_study_run_initial(&st->runs[r], &s->runs[r], &e) != 0) { /* pissa_niter_K */
            batch_study_error(b, s, e.msg);
            return 0;
        }
        if (!b->quiet)
            for (size_t k = 0; k < s->runs[r].nnotes; k++)
                batch_log(b, "note: study '%s', run '%s': %s", st->name, st->runs[r].name,
                     s->runs[r].notes[k]);
        if (st->runs[r].method && strcmp(st->runs[r].method, s->runs[r].method) != 0) {
            snprintf(msg, sizeof msg, "run '%s' ('%s'): the manifest says method '%s' but its "
                                      "checkpoints are %s",
                     st->runs[r].name, st->runs[r].path, st->runs[r].method, s->runs[r].method);
            batch_study_error(b, s, msg);
            return 0;
        }
    }
    if (!(s->header = dora_journal_header(st->name, s->fingerprint, st, s->runs)))
        return -1;

    unit *mine = NULL;
    size_t nmine = 0;
    if (plan_units(b, s, global_index, &mine, &nmine) != 0)
        return -1;
    char *taken = calloc(nmine + 1, 1);
    int rc = taken ? 0 : -1;
    if (rc == 0 && nmine > 0 && resume(b, s, mine, nmine, taken) != 0)
        rc = s->rep.status == DORA_STUDY_ERROR ? 0 : -1;
    /* a fresh journal first: the header and the units kept; each new one is appended */
    if (rc == 0 && s->rep.status != DORA_STUDY_ERROR && nmine > 0 && !b->dry_run) {
        char *jp = dora_journal_path(s->out);
        if (!jp)
            rc = -1;
        else if (dora_journal_create(&s->journal, jp, s->header, s->done, s->ndone, &e) != 0)
            batch_study_error(b, s, e.msg);
        free(jp);
    }
    if (rc == 0 && s->rep.status != DORA_STUDY_ERROR) {
        s->rep.units_total = nmine;
        for (size_t q = 0; q < nmine; q++) {
            if (taken[q]) {
                s->rep.units_skipped++;
                continue;
            }
            if (push_unit(b, &mine[q]) != 0) {
                rc = -1;
                break;
            }
            mine[q].stamp = NULL; /* moved */
            b->bytes_total += mine[q].bytes;
            s->pending++;
        }
    }
    for (size_t q = 0; q < nmine; q++)
        free(mine[q].stamp);
    free(mine);
    free(taken);
    return rc;
}
