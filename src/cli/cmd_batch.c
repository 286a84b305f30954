/* cmd_batch.c - `dora-analyze batch`: every study of a manifest, as
 * (run, checkpoint) units run in parallel, resumable, gated by expectations.
 *
 * Flow: plan (open each study's base once, discover its runs, stamp each
 * checkpoint, take the units the journal already holds for unchanged inputs),
 * run the rest (-j threads; or, built with MPI=1 under mpirun, rank 0 hands
 * units to the other ranks and gathers their results), write each study's
 * HDF5 when its last unit is in, then draw figures, check expectations, and
 * report. Each finished unit is appended to the study's journal before it
 * counts as done, so a killed batch loses only the units in flight.
 */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/batch.h"
#include "dora/h5out.h"
#include "dora/model.h"
#include "dora/run.h"
#include "dora/stats.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef DORA_MPI
#include <mpi.h>
#endif

extern char **environ;

static const char batch_help[] =
    "usage: dora-analyze batch MANIFEST [options]\n"
    "\n"
    "Run every study a manifest (JSON, see analysis/README.md) lists: each checkpoint\n"
    "of each run is a unit, analysed in parallel; each study's results go to its\n"
    "output HDF5, its figures are drawn, and its expectations on the regression of\n"
    "dM on dD are checked. Finished units are kept in OUT.journal beside each output:\n"
    "a re-run skips those whose checkpoint files are unchanged.\n"
    "\n"
    "options:\n"
    "  -j, --jobs N          threads (default: all cores); units run side by side\n"
    "  --progress=WHEN       progress bar on stderr: auto (if stderr is a terminal),\n"
    "                        always, never\n"
    "  -q, --quiet           only failures on stderr\n"
    "  -v, --verbose         one line per unit (analysed, up to date, failed)\n"
    "  --report-json FILE    write a JSON report (studies, units, expectations)\n"
    "  --junit FILE          write a JUnit XML report (a testcase per expectation, per\n"
    "                        failed unit, per study and for figures)\n"
    "  --shard K/N           run only units K, K+N, K+2N... (1 <= K <= N) into shard\n"
    "                        files NAME.shard-K-of-N.h5; no figures or expectations.\n"
    "                        Join them with `dora-analyze merge`, or let a later run\n"
    "                        without --shard pick them up\n"
    "  --dry-run             check the manifest and the inputs, print the units each\n"
    "                        study has and which are up to date; write nothing\n"
    "  --force               replace existing outputs, journals and reports that this\n"
    "                        tool did not write (an input is never replaced)\n"
    "  -h, --help            this help\n"
    "\n"
    "Built with `make MPI=1` and started by mpirun, rank 0 hands units to the other\n"
    "ranks and writes the results (the same numbers as one process).\n"
    "\n"
    "exit status: 0 every study ran and every expectation held, 1 otherwise,\n"
    "2 usage error or invalid manifest\n";

/* ---- state ---------------------------------------------------------------- */

typedef struct unit {
    size_t study, run, step; /* study, run in the study, step in the discovered run */
    char *stamp;             /* of the checkpoint's files now, NULL if it cannot be opened */
    uint64_t bytes;          /* checkpoint + base bytes, for the progress bar */
} unit;

typedef struct study_state {
    dora_study *st;
    dora_run *runs;      /* [nruns] discovered */
    size_t ndiscovered;
    dora_model *base;
    uint64_t base_bytes;
    char *fingerprint, *header;
    char *out;           /* the output, or this shard's file */
    int written;         /* out was written */
    dora_journal *journal;
    dora_result *done;   /* unit results: resumed, then new */
    size_t ndone, capdone;
    size_t pending;      /* units to do that have not finished */
    dora_result *joined; /* per run, after finalize */
    size_t njoined;
    dora_study_report rep;
    double t0;
    pthread_mutex_t lock;
} study_state;

typedef struct batch {
    dora_manifest m;
    study_state *ss;
    unit *units;         /* to do, in plan order */
    size_t nunits, capunits;
    size_t next;         /* atomic: next unit to take */
    int jobs, unit_threads;
    int quiet, verbose, progress, dry_run, force;
    unsigned shard_k, shard_n;
    char shard_text[32];
    char *cmdline;
    int mpi_size;
    /* progress */
    size_t units_finished;      /* atomic */
    uint64_t bytes_done;        /* atomic */
    uint64_t bytes_total;
    double t_work;
    int bar_drawn, stop_bar;
    pthread_mutex_t log_lock;   /* stderr and the progress line */
    pthread_cond_t bar_cond;
    pthread_mutex_t h5_lock;    /* HDF5 is not built thread-safe: one call at a time */
} batch;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A line on stderr, clearing the progress bar first (it is redrawn on its next tick). */
static void blog(batch *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void blog(batch *b, const char *fmt, ...)
{
    pthread_mutex_lock(&b->log_lock);
    if (b->bar_drawn) {
        fputs("\r\033[K", stderr);
        b->bar_drawn = 0;
    }
    va_list ap;
    fputs("dora-analyze: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&b->log_lock);
}

/* ---- writing a study's HDF5 file -------------------------------------------- */

/* (cli_guard_signals is installed by cmd_batch; h5o_write registers its temporary) */
static int write_h5(batch *b, const char *out, const dora_result *res, size_t n, dora_err *err)
{
    pthread_mutex_lock(&b->h5_lock);
    int rc = h5o_write(out, res, n, b->cmdline, err);
    pthread_mutex_unlock(&b->h5_lock);
    return rc;
}

/* ---- progress bar --------------------------------------------------------- */

static void human_bytes(double v, char *buf, size_t n)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void draw_bar(batch *b)
{
    size_t done = __atomic_load_n(&b->units_finished, __ATOMIC_RELAXED);
    uint64_t bytes = __atomic_load_n(&b->bytes_done, __ATOMIC_RELAXED);
    double el = now() - b->t_work, rate = el > 0 ? (double)bytes / el : 0;
    char bd[32], bt[32], rt[32], left[32];
    human_bytes((double)bytes, bd, sizeof bd);
    human_bytes((double)b->bytes_total, bt, sizeof bt);
    human_bytes(rate, rt, sizeof rt);
    if (bytes > 0 && rate > 0) {
        double s = (double)(b->bytes_total - bytes) / rate;
        snprintf(left, sizeof left, "%d:%02d left", (int)(s / 60), (int)s % 60);
    } else {
        snprintf(left, sizeof left, "--:-- left");
    }
    char tail[200], total[32];
    int tw = snprintf(total, sizeof total, "%zu", b->nunits);
    snprintf(tail, sizeof tail, " %*zu/%s units  %9s/%s  %9s/s  %s", tw, done, total, bd, bt, rt,
             left);
    int cols = 80;
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        cols = ws.ws_col;
    int width = cols - (int)strlen(tail) - 3;
    if (width > 30)
        width = 30;
    char bar[64];
    int k = 0;
    if (width >= 5) {
        int fill = b->bytes_total ? (int)((double)width * (double)bytes / (double)b->bytes_total)
                                  : (b->nunits ? (int)(width * done / b->nunits) : width);
        if (fill > width)
            fill = width;
        bar[k++] = '[';
        for (int i = 0; i < width; i++)
            bar[k++] = i < fill ? '#' : '.';
        bar[k++] = ']';
    }
    bar[k] = '\0';
    fprintf(stderr, "\r\033[K%s%s", bar, tail);
    fflush(stderr);
    b->bar_drawn = 1;
}

static void *bar_thread(void *arg)
{
    batch *b = arg;
    pthread_mutex_lock(&b->log_lock);
    while (!b->stop_bar) {
        draw_bar(b);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->bar_cond, &b->log_lock, &ts);
    }
    if (b->bar_drawn) {
        fputs("\r\033[K", stderr);
        b->bar_drawn = 0;
    }
    pthread_mutex_unlock(&b->log_lock);
    return NULL;
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *q = '/';
    }
    int rc = mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* ---- planning ------------------------------------------------------------- */

static int add_failure(dora_study_report *rep, const char *run, int64_t step, const char *path,
                       const char *msg)
{
    dora_unit_failure *f = realloc(rep->failures, (rep->nfailures + 1) * sizeof *f);
    if (!f)
        return -1;
    rep->failures = f;
    f += rep->nfailures;
    f->run = strdup(run);
    f->step = step;
    f->path = strdup(path ? path : "");
    f->message = strdup(msg);
    rep->nfailures++;
    return f->run && f->path && f->message ? 0 : -1;
}

static void study_error(batch *b, study_state *s, const char *msg)
{
    s->rep.status = DORA_STUDY_ERROR;
    free(s->rep.error);
    s->rep.error = strdup(msg);
    (void)b;
}

static int add_done(study_state *s, const dora_result *r)
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
                    blog(b, "note: study '%s': %s: replaced (--force)", s->st->name, e.msg);
            } else if (i == 0) { /* the study's own journal: refuse to overwrite what we cannot read */
                char msg[DORA_ERR_MAX + 128];
                snprintf(msg, sizeof msg, "%s (remove it to start the study over)", e.msg);
                study_error(b, s, msg);
                rc = -1;
            } else if (!b->quiet) {
                blog(b, "note: study '%s': '%s' not used: %s", s->st->name, src[i], e.msg);
            }
            continue;
        }
        if (r == 0)
            continue;
        if (tail && !b->quiet)
            blog(b, "note: study '%s': '%s': %llu byte(s) at the end ignored (a write cut "
                    "short)",
                 s->st->name, src[i], (unsigned long long)tail);
        char *fp = dora_header_fingerprint(header);
        if (!fp || strcmp(fp, s->fingerprint) != 0) {
            if (!b->quiet)
                blog(b, "note: study '%s': '%s' is from other inputs (base, module filters or "
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
                    if (add_done(s, res) != 0) {
                        rc = -1;
                        break;
                    }
                    memset(res, 0, sizeof *res);
                    taken[q] = 1;
                    if (b->verbose)
                        blog(b, "batch: study '%s': unit %s@%lld up to date (from '%s')",
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

static int plan_study(batch *b, study_state *s, size_t *global_index)
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
    s->t0 = now();
    if (!b->dry_run) { /* manifests name output trees: make them */
        char *dir = util_dirname(s->out);
        int ok = dir && (util_is_dir(dir) || mkdir_p(dir) == 0);
        if (!ok) {
            snprintf(msg, sizeof msg, "'%s': cannot create the output folder '%s': %s", s->out,
                     dir ? dir : "?", strerror(errno));
            study_error(b, s, msg);
        }
        free(dir);
        if (!ok)
            return 0;
    }
    if (dora_model_open(&s->base, st->base, &e) != 0) {
        study_error(b, s, e.msg);
        return 0;
    }
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
            study_error(b, s, msg);
            return 0;
        }
        s->ndiscovered = r + 1;
        if (!b->quiet)
            for (size_t k = 0; k < s->runs[r].nnotes; k++)
                blog(b, "note: study '%s', run '%s': %s", st->name, st->runs[r].name,
                     s->runs[r].notes[k]);
        if (st->runs[r].method && strcmp(st->runs[r].method, s->runs[r].method) != 0) {
            snprintf(msg, sizeof msg, "run '%s' ('%s'): the manifest says method '%s' but its "
                                      "checkpoints are %s",
                     st->runs[r].name, st->runs[r].path, st->runs[r].method, s->runs[r].method);
            study_error(b, s, msg);
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
            study_error(b, s, e.msg);
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

/* ---- finishing a study ----------------------------------------------------- */

/* Join the units per run (manifest order) and write the study's HDF5. Called
 * with the study's lock held (or before any thread starts). */
static void finalize_study(batch *b, study_state *s)
{
    dora_study *st = s->st;
    dora_err e = {{0}, 0};
    const dora_result **parts = calloc(s->ndone + 1, sizeof *parts);
    s->joined = calloc(st->nruns + 1, sizeof *s->joined);
    if (!parts || !s->joined) {
        study_error(b, s, "out of memory");
        free(parts);
        return;
    }
    for (size_t r = 0; r < st->nruns; r++) {
        size_t np = 0;
        for (size_t i = 0; i < s->ndone; i++)
            if (strcmp(s->done[i].name, st->runs[r].name) == 0)
                parts[np++] = &s->done[i];
        if (np == 0)
            continue;
        if (dora_result_join(&s->joined[s->njoined], parts, np, &e) != 0) {
            study_error(b, s, e.msg);
            free(parts);
            return;
        }
        const dora_result *j = &s->joined[s->njoined++];
        if (!b->quiet)
            for (size_t k = 0; k < j->nnotes; k++)
                blog(b, "note: study '%s', run '%s': %s", st->name, j->name, j->notes[k]);
    }
    free(parts);
    if (s->njoined > 0) {
        if (write_h5(b, s->out, s->joined, s->njoined, &e) != 0) {
            study_error(b, s, e.msg);
            return;
        }
        s->written = 1;
    }
    s->rep.status = s->rep.units_failed ? DORA_STUDY_INCOMPLETE : DORA_STUDY_COMPLETE;
    dora_journal_close(s->journal);
    s->journal = NULL;
    dora_model_close(s->base); /* no unit of this study is left to read it */
    s->base = NULL;
    s->rep.seconds = now() - s->t0;
}

/* A unit is over: RES is its result (moved in), or NULL with WHY. */
static void unit_finished(batch *b, const unit *u, dora_result *res, const char *why,
                          double seconds, int rank)
{
    study_state *s = &b->ss[u->study];
    const dora_study_run *sr = &s->st->runs[u->run];
    const dora_step *sp = &s->runs[u->run].steps[u->step];
    char where[64] = "";
    if (rank > 0)
        snprintf(where, sizeof where, " on rank %d", rank);
    char msg[DORA_ERR_MAX + 64];
    pthread_mutex_lock(&s->lock);
    if (res && res->nfailures > 0) {
        snprintf(msg, sizeof msg, "%s", res->failures[0]);
        dora_result_release(res);
        res = NULL;
        why = msg;
    }
    if (res) {
        dora_err e = {{0}, 0};
        if (s->journal && dora_journal_append(s->journal, res, &e) != 0) {
            snprintf(msg, sizeof msg, "analysed, but not kept: %s", e.msg);
            dora_result_release(res);
            res = NULL;
            why = msg;
        } else if (add_done(s, res) != 0) {
            dora_result_release(res);
            res = NULL;
            why = "out of memory";
        }
    }
    if (res) {
        s->rep.units_run++;
        if (b->verbose)
            blog(b, "batch: study '%s': unit %s@%lld analysed in %.2f s%s", s->st->name,
                 sr->name, (long long)sp->step, seconds, where);
    } else {
        s->rep.units_failed++;
        if (add_failure(&s->rep, sr->name, sp->step, sp->path, why) != 0)
            why = "out of memory";
        blog(b, "error: study '%s': unit %s@%lld failed%s: %s", s->st->name, sr->name,
             (long long)sp->step, where, why);
    }
    if (--s->pending == 0)
        finalize_study(b, s);
    pthread_mutex_unlock(&s->lock);
    __atomic_add_fetch(&b->units_finished, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&b->bytes_done, u->bytes, __ATOMIC_RELAXED);
}

static void run_unit(batch *b, const unit *u)
{
    study_state *s = &b->ss[u->study];
    const dora_study *st = s->st;
    dora_analysis_opts opts = {
        .include = st->has_include ? &st->include_re : NULL,
        .exclude = st->has_exclude ? &st->exclude_re : NULL,
        .threads = b->unit_threads,
    };
    dora_result res;
    dora_err e = {{0}, 0};
    double t0 = now();
    int rc = dora_analyze_unit(&res, st->runs[u->run].name, s->base, st->base, &s->runs[u->run],
                               u->step, &opts, &e);
    unit_finished(b, u, rc == 0 ? &res : NULL, e.msg, now() - t0, 0);
}

static void *worker(void *arg)
{
    batch *b = arg;
    for (;;) {
        size_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->nunits)
            break;
        run_unit(b, &b->units[i]);
    }
    return NULL;
}

static void run_local(batch *b)
{
    int w = b->jobs;
    if ((size_t)w > b->nunits)
        w = (int)b->nunits;
    if (w < 1)
        return;
    b->unit_threads = b->jobs / w > 1 ? b->jobs / w : 1;
    pthread_t *tid = calloc((size_t)w, sizeof *tid);
    int started = 0;
    for (int i = 1; tid && i < w; i++) {
        if (pthread_create(&tid[i], NULL, worker, b) != 0)
            break; /* fewer threads is still correct */
        started++;
    }
    worker(b);
    for (int i = 1; i <= started; i++)
        pthread_join(tid[i], NULL);
    free(tid);
}

/* ---- MPI: rank 0 hands out units, the other ranks analyse them ------------- */

#ifdef DORA_MPI
enum { TAG_WORK = 1, TAG_STOP = 2, TAG_RESULT = 3 };

/* Work message: study, run, step index as u64, then the step and the paths,
 * so that a worker needs no discovery of its own. Little-endian, like the
 * journal. */
static size_t put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return 8;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int send_work(batch *b, const unit *u, int dest)
{
    const study_state *s = &b->ss[u->study];
    const char *rp = s->runs[u->run].path, *sp = s->runs[u->run].steps[u->step].path;
    size_t lr = strlen(rp), ls = strlen(sp), n = 6 * 8 + lr + ls, k = 0;
    unsigned char *m = malloc(n);
    if (!m)
        return -1;
    k += put64(m + k, u->study);
    k += put64(m + k, u->run);
    k += put64(m + k, (uint64_t)s->runs[u->run].steps[u->step].step);
    k += put64(m + k, lr);
    memcpy(m + k, rp, lr);
    k += lr;
    k += put64(m + k, ls);
    memcpy(m + k, sp, ls);
    k += ls;
    k += put64(m + k, u->step);
    int rc = MPI_Send(m, (int)k, MPI_BYTE, dest, TAG_WORK, MPI_COMM_WORLD);
    free(m);
    return rc == MPI_SUCCESS ? 0 : -1;
}

/* Reply: one byte 1 + a packed result, or 0 + the error message. */
static void reply(const dora_result *res, const char *why)
{
    unsigned char *buf = NULL, *msg;
    size_t len = 0;
    dora_err e = {{0}, 0};
    if (res && dora_result_pack(res, &buf, &len, &e) != 0) {
        res = NULL;
        why = e.msg;
    }
    if (!res) {
        len = strlen(why);
        buf = malloc(len);
        if (buf)
            memcpy(buf, why, len);
        else
            len = 0;
    }
    msg = malloc(len + 1);
    if (!msg) {
        unsigned char z = 0;
        MPI_Send(&z, 1, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
        free(buf);
        return;
    }
    msg[0] = res ? 1 : 0;
    if (len)
        memcpy(msg + 1, buf, len);
    MPI_Send(msg, (int)(len + 1), MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    free(msg);
    free(buf);
}

static int mpi_worker(batch *b)
{
    size_t ns = b->m.nstudies;
    dora_model **bases = calloc(ns + 1, sizeof *bases);
    int threads = b->jobs;
    for (;;) {
        MPI_Status st;
        int n;
        MPI_Probe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        MPI_Get_count(&st, MPI_BYTE, &n);
        unsigned char *m = malloc((size_t)n + 1);
        if (!m)
            MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Recv(m, n, MPI_BYTE, 0, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (st.MPI_TAG == TAG_STOP) {
            free(m);
            break;
        }
        /* the message comes from rank 0 of this job: lengths are checked all the same */
        size_t k = 0, len = (size_t)n;
        char why[DORA_ERR_MAX + 64] = "";
        uint64_t si = 0, ri = 0, lr = 0, ls = 0;
        int64_t step = 0;
        char *rp = NULL, *sp = NULL;
        if (len >= 32) {
            si = get64(m);
            ri = get64(m + 8);
            step = (int64_t)get64(m + 16);
            lr = get64(m + 24);
            k = 32;
        }
        if (len < 32 || lr > len - k - 8 || si >= ns || ri >= b->m.studies[si].nruns) {
            snprintf(why, sizeof why, "malformed work message (%d bytes)", n);
        } else {
            rp = strndup((const char *)m + k, (size_t)lr);
            k += (size_t)lr;
            ls = get64(m + k);
            k += 8;
            if (ls > len - k || len - k - (size_t)ls < 8)
                snprintf(why, sizeof why, "malformed work message (%d bytes)", n);
            else
                sp = strndup((const char *)m + k, (size_t)ls);
        }
        free(m);
        dora_study *sd = why[0] ? NULL : &b->m.studies[si];
        dora_err e = {{0}, 0};
        if (sd && !bases[si] && dora_model_open(&bases[si], sd->base, &e) != 0) {
            snprintf(why, sizeof why, "%s", e.msg);
            bases[si] = NULL;
        }
        if (!why[0] && (!rp || !sp))
            snprintf(why, sizeof why, "out of memory");
        if (why[0]) {
            reply(NULL, why);
        } else {
            dora_step one = {.step = step, .path = sp};
            dora_run run;
            memset(&run, 0, sizeof run);
            run.path = rp;
            run.method = "ft";
            run.nsteps = 1;
            run.steps = &one;
            dora_analysis_opts opts = {
                .include = sd->has_include ? &sd->include_re : NULL,
                .exclude = sd->has_exclude ? &sd->exclude_re : NULL,
                .threads = threads,
            };
            dora_result res;
            if (dora_analyze_unit(&res, sd->runs[ri].name, bases[si], sd->base, &run, 0, &opts,
                                  &e) == 0) {
                reply(&res, NULL);
                dora_result_release(&res);
            } else {
                reply(NULL, e.msg);
            }
        }
        free(rp);
        free(sp);
    }
    for (size_t i = 0; i < ns; i++)
        dora_model_close(bases[i]);
    free(bases);
    return EXIT_OK;
}

static void mpi_dispatch(batch *b)
{
    int size = b->mpi_size;
    size_t next = 0, active = 0;
    size_t *assigned = calloc((size_t)size, sizeof *assigned);
    double *started = calloc((size_t)size, sizeof *started);
    if (!assigned || !started)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (int w = 1; w < size; w++) {
        if (next < b->nunits) {
            assigned[w] = next;
            started[w] = now();
            if (send_work(b, &b->units[next++], w) != 0)
                MPI_Abort(MPI_COMM_WORLD, 1);
            active++;
        } else {
            MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
        }
    }
    while (active > 0) {
        MPI_Status st;
        int n;
        MPI_Probe(MPI_ANY_SOURCE, TAG_RESULT, MPI_COMM_WORLD, &st);
        MPI_Get_count(&st, MPI_BYTE, &n);
        int w = st.MPI_SOURCE;
        unsigned char *m = malloc((size_t)n + 1);
        if (!m)
            MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Recv(m, n, MPI_BYTE, w, TAG_RESULT, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        active--;
        const unit *u = &b->units[assigned[w]];
        dora_result res;
        dora_err e = {{0}, 0};
        char what[64];
        snprintf(what, sizeof what, "result from rank %d", w);
        if (n >= 1 && m[0] == 1 &&
            dora_result_unpack(&res, m + 1, (size_t)n - 1, what, &e) == 0) {
            unit_finished(b, u, &res, NULL, now() - started[w], w);
        } else {
            char why[DORA_ERR_MAX];
            if (n >= 1 && m[0] == 1)
                snprintf(why, sizeof why, "%s", e.msg);
            else
                snprintf(why, sizeof why, "%.*s", n > 1 ? n - 1 : 0, (const char *)m + 1);
            unit_finished(b, u, NULL, why, now() - started[w], w);
        }
        free(m);
        if (next < b->nunits) {
            assigned[w] = next;
            started[w] = now();
            if (send_work(b, &b->units[next++], w) != 0)
                MPI_Abort(MPI_COMM_WORLD, 1);
            active++;
        } else {
            MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
        }
    }
    free(assigned);
    free(started);
}

/* Started by mpirun (or srun)? Otherwise MPI is not initialised at all. */
static int under_mpi(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}
#endif

/* ---- figures ------------------------------------------------------------ */

/* `dora-analyze plot OUT -o DIR --format F [--modules K]` as a child process;
 * its stderr is kept for the report. */
static void draw_figures(batch *b, study_state *s)
{
    dora_study *st = s->st;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        s->rep.figures = DORA_FIG_FAILED;
        s->rep.figures_message = strdup("cannot find this program (/proc/self/exe) to run plot");
        return;
    }
    exe[n] = '\0';
    if (mkdir_p(st->fig_dir) != 0) {
        s->rep.figures = DORA_FIG_FAILED;
        char m[4200];
        snprintf(m, sizeof m, "'%s': cannot create: %s", st->fig_dir, strerror(errno));
        s->rep.figures_message = strdup(m);
        return;
    }
    char *argv[10];
    int k = 0;
    argv[k++] = exe;
    argv[k++] = "plot";
    argv[k++] = s->out;
    argv[k++] = "-o";
    argv[k++] = st->fig_dir;
    argv[k++] = "--format";
    argv[k++] = st->fig_formats;
    if (st->fig_kinds) {
        argv[k++] = "--modules";
        argv[k++] = st->fig_kinds;
    }
    argv[k] = NULL;
    int pfd[2];
    if (pipe(pfd) != 0) {
        s->rep.figures = DORA_FIG_FAILED;
        s->rep.figures_message = strdup("cannot create a pipe for plot");
        return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    posix_spawn_file_actions_addclose(&fa, pfd[1]);
    pid_t pid;
    int src = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    char out[4096];
    size_t used = 0;
    for (;;) {
        ssize_t r = read(pfd[0], out + used, sizeof out - 1 - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        used += (size_t)r;
        if (used == sizeof out - 1) { /* keep reading so the child never blocks */
            char sink[1024];
            while (read(pfd[0], sink, sizeof sink) > 0)
                ;
            break;
        }
    }
    out[used] = '\0';
    close(pfd[0]);
    int status = 0;
    if (src == 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    while (used > 0 && (out[used - 1] == '\n' || out[used - 1] == '\r'))
        out[--used] = '\0';
    if (src == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        s->rep.figures = DORA_FIG_DRAWN;
        char m[4200];
        snprintf(m, sizeof m, "%s (%s)", st->fig_dir, st->fig_formats);
        s->rep.figures_message = strdup(m);
    } else {
        s->rep.figures = DORA_FIG_FAILED;
        char m[4200];
        snprintf(m, sizeof m, "plot %s: %s", src != 0 ? "could not start" : "failed",
                 used ? out : "no message");
        s->rep.figures_message = strdup(m);
    }
    (void)b;
}

/* Expectations and figures of a study whose units are all in. */
static void check_study(batch *b, study_state *s)
{
    dora_study *st = s->st;
    const char *why = NULL;
    if (s->rep.status != DORA_STUDY_COMPLETE)
        why = "not evaluated: the study is incomplete";
    else if (b->shard_n)
        why = "not evaluated: this run computes one shard of the study";
    else if (s->njoined == 0)
        why = "not evaluated: the study has no results";
    if (why) {
        for (size_t e = 0; e < st->nexpect; e++) {
            s->rep.results[e].outcome = DORA_OUTCOME_NOT_EVALUATED;
            snprintf(s->rep.results[e].message, sizeof s->rep.results[e].message, "%s", why);
        }
        if (st->figures) {
            s->rep.figures = DORA_FIG_SKIPPED;
            s->rep.figures_message = strdup(why + strlen("not evaluated: "));
        }
        return;
    }
    dora_regression *regs = NULL;
    size_t nregs = 0;
    if (st->nexpect && dora_regressions(s->joined, s->njoined, &regs, &nregs) != 0) {
        for (size_t e = 0; e < st->nexpect; e++)
            snprintf(s->rep.results[e].message, sizeof s->rep.results[e].message,
                     "out of memory computing the regressions");
    } else {
        for (size_t e = 0; e < st->nexpect; e++)
            dora_expect_eval(&st->expect[e], regs, nregs, &s->rep.results[e]);
    }
    dora_regressions_free(regs, nregs);
    if (st->figures)
        draw_figures(b, s);
}

/* ---- summary and the command ------------------------------------------- */

static int summarise(batch *b, double seconds)
{
    int ok = 1;
    size_t units = 0, run = 0, up = 0, failed = 0, held = 0, efail = 0;
    for (size_t i = 0; i < b->m.nstudies; i++) {
        const study_state *s = &b->ss[i];
        const dora_study_report *r = &s->rep;
        if (r->status != DORA_STUDY_COMPLETE)
            ok = 0;
        units += r->units_total;
        run += r->units_run;
        up += r->units_skipped;
        failed += r->units_failed;
        if (r->status == DORA_STUDY_ERROR) {
            blog(b, "error: study '%s': %s", r->name, r->error ? r->error : "failed");
            continue;
        }
        if (!b->quiet)
            blog(b, "batch: study '%s': %s: %zu unit(s), %zu analysed, %zu up to date, %zu "
                    "failed%s%s",
                 r->name, r->status == DORA_STUDY_COMPLETE ? "complete" : "incomplete",
                 r->units_total, r->units_run, r->units_skipped, r->units_failed,
                 s->written ? " -> " : "", s->written ? s->out : "");
        for (size_t e = 0; e < r->nexpect; e++) {
            const dora_expect_result *x = &r->results[e];
            if (x->outcome == DORA_OUTCOME_HELD) {
                held++;
                if (!b->quiet)
                    blog(b, "batch: study '%s': held: %s", r->name, x->message);
            } else if (x->outcome == DORA_OUTCOME_FAILED) {
                efail++;
                ok = 0;
                blog(b, "error: study '%s': expectation '%s' failed: %s", r->name,
                     r->expect[e].name, x->message);
            }
        }
        if (r->figures == DORA_FIG_FAILED) {
            ok = 0;
            blog(b, "error: study '%s': figures: %s", r->name, r->figures_message);
        } else if (r->figures == DORA_FIG_DRAWN && !b->quiet) {
            blog(b, "batch: study '%s': figures in %s", r->name, r->figures_message);
        }
    }
    if (!ok || !b->quiet)
        blog(b, "batch: %zu stud%s, %zu unit(s): %zu analysed, %zu up to date, %zu failed; "
                "expectations: %zu held, %zu failed; %.1f s: %s",
             b->m.nstudies, b->m.nstudies == 1 ? "y" : "ies", units, run, up, failed, held, efail,
             seconds, ok ? "ok" : "FAILED");
    return ok;
}

/* --dry-run: what each study would do, on stdout. */
static int print_plan(batch *b)
{
    int ok = 1;
    for (size_t i = 0; i < b->m.nstudies; i++) {
        const study_state *s = &b->ss[i];
        const dora_study *st = s->st;
        if (s->rep.status == DORA_STUDY_ERROR) {
            printf("study '%s': error: %s\n", st->name, s->rep.error);
            ok = 0;
            continue;
        }
        printf("study '%s': base '%s', %zu unit(s), %zu up to date, %zu to do -> %s\n", st->name,
               st->base, s->rep.units_total, s->rep.units_skipped, s->pending, s->out);
        for (size_t r = 0; r < st->nruns; r++) {
            printf("  run '%s' (%s, '%s'): steps", st->runs[r].name, s->runs[r].method,
                   st->runs[r].path);
            for (size_t k = 0; k < s->runs[r].nsteps; k++)
                printf(" %lld", (long long)s->runs[r].steps[k].step);
            printf("\n");
        }
        for (size_t e = 0; e < st->nexpect; e++)
            printf("  expect: %s\n", st->expect[e].name);
        if (st->figures)
            printf("  figures: %s (%s%s%s)\n", st->fig_dir, st->fig_formats,
                   st->fig_kinds ? "; " : "", st->fig_kinds ? st->fig_kinds : "");
    }
    int rc = cli_finish_stdout();
    return rc != EXIT_OK ? rc : ok ? EXIT_OK : EXIT_BAD_INPUT;
}

static int parse_shard(const char *s, unsigned *k, unsigned *n)
{
    const char *slash = strchr(s, '/');
    int64_t a, b;
    if (!slash)
        return -1;
    char *left = strndup(s, (size_t)(slash - s));
    int rc = left && util_parse_i64(left, 1, 1000000, &a) == 0 &&
                     util_parse_i64(slash + 1, 1, 1000000, &b) == 0 && a <= b
                 ? 0
                 : -1;
    free(left);
    if (rc == 0) {
        *k = (unsigned)a;
        *n = (unsigned)b;
    }
    return rc;
}

static void release(batch *b)
{
    for (size_t i = 0; b->ss && i < b->m.nstudies; i++) {
        study_state *s = &b->ss[i];
        for (size_t r = 0; r < s->ndiscovered; r++)
            dora_run_release(&s->runs[r]);
        free(s->runs);
        dora_model_close(s->base);
        free(s->fingerprint);
        free(s->header);
        dora_journal_close(s->journal);
        for (size_t k = 0; k < s->ndone; k++)
            dora_result_release(&s->done[k]);
        free(s->done);
        for (size_t k = 0; k < s->njoined; k++)
            dora_result_release(&s->joined[k]);
        free(s->joined);
        dora_study_report_release(&s->rep);
        free(s->out);
        pthread_mutex_destroy(&s->lock);
    }
    free(b->ss);
    for (size_t i = 0; i < b->nunits; i++)
        free(b->units[i].stamp);
    free(b->units);
    free(b->cmdline);
    dora_manifest_release(&b->m);
    pthread_mutex_destroy(&b->log_lock);
    pthread_mutex_destroy(&b->h5_lock);
    pthread_cond_destroy(&b->bar_cond);
}

/* ---- outputs against inputs, before any work ----------------------------- */

typedef struct out_item {
    char *path; /* owned */
    cli_out_kind kind;
    const char *what; /* "study 'x' output", ... for messages */
    char who[300];
} out_item;

/* Every file the batch writes (each study's output or shard file and its
 * journal, the reports) against every file it reads (the manifest, each
 * study's base and runs): none may be an input, none may be an existing file
 * this tool did not write (unless --force), no two may be one file, and no
 * input may sit in a figures folder under a figure's name. Returns EXIT_OK or
 * EXIT_USAGE (message printed). */
static int check_outputs(batch *b, const char *report_json, const char *junit)
{
    cli_inputs in = {0};
    cli_inputs_add(&in, b->m.path);
    for (size_t i = 0; i < b->m.nstudies; i++) {
        const dora_study *st = &b->m.studies[i];
        cli_inputs_add(&in, st->base);
        for (size_t r = 0; r < st->nruns; r++)
            cli_inputs_add(&in, st->runs[r].path);
    }
    size_t cap = 2 * b->m.nstudies + 2, n = 0;
    out_item *o = calloc(cap, sizeof *o);
    int status = EXIT_OK;
    if (!o || in.oom) {
        fprintf(stderr, "dora-analyze: error: out of memory\n");
        status = EXIT_BAD_INPUT;
        goto done;
    }
    for (size_t i = 0; i < b->m.nstudies; i++) {
        const dora_study *st = &b->m.studies[i];
        char *out = b->shard_n ? dora_shard_path(st->output, b->shard_k, b->shard_n)
                               : strdup(st->output);
        char *jp = out ? dora_journal_path(out) : NULL;
        o[n] = (out_item){out, CLI_OUT_H5, "the output of study", ""};
        snprintf(o[n++].who, sizeof o[0].who, "'%.250s'", st->name);
        o[n] = (out_item){jp, CLI_OUT_JOURNAL, "the journal of study", ""};
        snprintf(o[n++].who, sizeof o[0].who, "'%.250s'", st->name);
        if (!out || !jp) {
            fprintf(stderr, "dora-analyze: error: out of memory\n");
            status = EXIT_BAD_INPUT;
            goto done;
        }
    }
    if (report_json)
        o[n++] = (out_item){strdup(report_json), CLI_OUT_JSON, "--report-json", ""};
    if (junit)
        o[n++] = (out_item){strdup(junit), CLI_OUT_JUNIT, "--junit", ""};
    for (size_t i = 0; i < n; i++)
        if (!o[i].path) {
            fprintf(stderr, "dora-analyze: error: out of memory\n");
            status = EXIT_BAD_INPUT;
            goto done;
        }
    for (size_t i = 0; i < n && status == EXIT_OK; i++) {
        status = cli_check_output("batch", o[i].path, o[i].kind, &in, b->force);
        for (size_t k = 0; k < i && status == EXIT_OK; k++)
            if (util_same_output(o[i].path, o[k].path))
                status = cli_usage_error("batch", "%s %s ('%s') and %s %s ('%s') are one file",
                                         o[k].what, o[k].who, o[k].path, o[i].what, o[i].who,
                                         o[i].path);
    }
    /* a figure is written as fig2_KIND.FMT / fig8_KIND.FMT in the figures folder */
    for (size_t i = 0; i < b->m.nstudies && status == EXIT_OK; i++) {
        const dora_study *st = &b->m.studies[i];
        struct stat fd;
        if (!st->figures || stat(st->fig_dir, &fd) != 0)
            continue;
        for (size_t k = 0; k < in.n && status == EXIT_OK; k++) {
            char *dir = util_dirname(in.v[k].path), *base = util_basename(in.v[k].path);
            struct stat dd;
            if (dir && base && stat(dir, &dd) == 0 && dd.st_dev == fd.st_dev &&
                dd.st_ino == fd.st_ino && (strncmp(base, "fig2_", 5) == 0 ||
                                           strncmp(base, "fig8_", 5) == 0))
                status = cli_usage_error("batch", "study '%s': the figures folder '%s' holds the "
                                                  "input '%s' under a figure's name",
                                         st->name, st->fig_dir, in.v[k].path);
            free(dir);
            free(base);
        }
    }
done:
    for (size_t i = 0; o && i < n; i++)
        free(o[i].path);
    free(o);
    cli_inputs_release(&in);
    return status;
}

int cmd_batch(int argc, char **argv)
{
    enum { OPT_PROGRESS = 256, OPT_REPORT_JSON, OPT_JUNIT, OPT_SHARD, OPT_DRY_RUN, OPT_FORCE };
    static const struct option longopts[] = {
        {"jobs", required_argument, NULL, 'j'},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"report-json", required_argument, NULL, OPT_REPORT_JSON},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"shard", required_argument, NULL, OPT_SHARD},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"force", no_argument, NULL, OPT_FORCE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    batch b;
    memset(&b, 0, sizeof b);
    const char *report_json = NULL, *junit = NULL, *progress = "auto";
    int64_t jobs = 0;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:qvh", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            if (util_parse_i64(optarg, 1, 4096, &jobs) != 0)
                return cli_usage_error("batch", "-j wants a whole number from 1 to 4096, not '%s'",
                                       optarg);
            break;
        case OPT_PROGRESS:
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "always") != 0 &&
                strcmp(optarg, "never") != 0)
                return cli_usage_error("batch", "--progress wants auto, always or never, not '%s'",
                                       optarg);
            progress = optarg;
            break;
        case 'q':
            b.quiet = 1;
            break;
        case 'v':
            b.verbose = 1;
            break;
        case OPT_REPORT_JSON:
            report_json = optarg;
            break;
        case OPT_JUNIT:
            junit = optarg;
            break;
        case OPT_SHARD:
            if (parse_shard(optarg, &b.shard_k, &b.shard_n) != 0)
                return cli_usage_error("batch", "--shard wants K/N with 1 <= K <= N, not '%s'",
                                       optarg);
            snprintf(b.shard_text, sizeof b.shard_text, "%u/%u", b.shard_k, b.shard_n);
            break;
        case OPT_DRY_RUN:
            b.dry_run = 1;
            break;
        case OPT_FORCE:
            b.force = 1;
            break;
        case 'h':
            fputs(batch_help, stdout);
            return cli_finish_stdout();
        case ':':
            return cli_usage_error("batch", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("batch", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage_error("batch", "no manifest given");
    if (optind + 1 < argc)
        return cli_usage_error("batch", "one manifest, not %d arguments", argc - optind);
    b.jobs = jobs > 0 ? (int)jobs : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (b.jobs < 1)
        b.jobs = 1;
    b.progress = strcmp(progress, "always") == 0 ||
                 (strcmp(progress, "auto") == 0 && !b.quiet && isatty(2));
    pthread_mutex_init(&b.log_lock, NULL);
    pthread_mutex_init(&b.h5_lock, NULL);
    pthread_cond_init(&b.bar_cond, NULL);

    dora_err err = {{0}, 0};
    if (dora_manifest_load(&b.m, argv[optind], &err) != 0) {
        fprintf(stderr, "dora-analyze batch: invalid manifest: %s\n", err.msg);
        release(&b);
        return EXIT_USAGE;
    }
    b.mpi_size = 1;
#ifdef DORA_MPI
    int mpi_on = 0, rank = 0;
    if (under_mpi()) {
        int provided;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &b.mpi_size);
        mpi_on = 1;
    }
    if (b.mpi_size > 1 && rank > 0) {
        int st = mpi_worker(&b);
        release(&b);
        MPI_Finalize();
        return st;
    }
#endif
    double t_start = now();
    int status = EXIT_BAD_INPUT, dispatched = 0;
    if ((status = check_outputs(&b, report_json, junit)) != EXIT_OK)
        goto done; /* before any work; MPI workers are sent their stop below */
    status = EXIT_BAD_INPUT;
    cli_guard_signals();
    b.cmdline = cli_command_line(argc, argv);
    b.ss = calloc(b.m.nstudies, sizeof *b.ss);
    if (!b.cmdline || !b.ss) {
        dora_errf(&err, "out of memory");
        goto fatal;
    }
    for (size_t i = 0; i < b.m.nstudies; i++) {
        b.ss[i].st = &b.m.studies[i];
        pthread_mutex_init(&b.ss[i].lock, NULL);
    }
    size_t global_index = 0;
    for (size_t i = 0; i < b.m.nstudies; i++) {
        study_state *s = &b.ss[i];
        if (plan_study(&b, s, &global_index) != 0) {
            dora_errf(&err, "out of memory planning study '%s'", s->st->name);
            goto fatal;
        }
        if (s->rep.status == DORA_STUDY_ERROR) {
            dora_model_close(s->base);
            s->base = NULL;
            continue;
        }
        if (s->pending == 0 && !b.dry_run)
            finalize_study(&b, s);
    }
    if (b.dry_run) {
        status = print_plan(&b);
        goto done;
    }

    pthread_t bar;
    int have_bar = 0;
    b.t_work = now();
    if (b.progress && b.nunits > 0)
        have_bar = pthread_create(&bar, NULL, bar_thread, &b) == 0;
#ifdef DORA_MPI
    if (b.mpi_size > 1) {
        mpi_dispatch(&b);
        dispatched = 1;
    }
    else
        run_local(&b);
#else
    run_local(&b);
#endif
    if (have_bar) {
        pthread_mutex_lock(&b.log_lock);
        b.stop_bar = 1;
        pthread_cond_signal(&b.bar_cond);
        pthread_mutex_unlock(&b.log_lock);
        pthread_join(bar, NULL);
    }
    for (size_t i = 0; i < b.m.nstudies; i++)
        check_study(&b, &b.ss[i]);

    double seconds = now() - t_start;
    int ok = summarise(&b, seconds);
    dora_study_report *reps = calloc(b.m.nstudies, sizeof *reps);
    if (!reps) {
        dora_errf(&err, "out of memory");
        goto fatal;
    }
    for (size_t i = 0; i < b.m.nstudies; i++) {
        reps[i] = b.ss[i].rep; /* shallow: the study states keep ownership */
        if (!b.ss[i].written)
            reps[i].output = NULL;
    }
    status = ok ? EXIT_OK : EXIT_BAD_INPUT;
    if (report_json && dora_report_json(report_json, b.m.path, b.shard_n ? b.shard_text : NULL,
                                        ok, reps, b.m.nstudies, seconds, &err) != 0)
        status = cli_fail(&err);
    if (junit && dora_report_junit(junit, b.m.path, reps, b.m.nstudies, seconds, &err) != 0)
        status = cli_fail(&err);
    free(reps);
    goto done;
fatal:
    status = cli_fail(&err);
done:
    (void)dispatched;
#ifdef DORA_MPI
    if (mpi_on) {
        for (int w = 1; !dispatched && w < b.mpi_size; w++) /* the workers wait for work */
            MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
        release(&b);
        MPI_Finalize();
        return status;
    }
#endif
    release(&b);
    return status;
}
