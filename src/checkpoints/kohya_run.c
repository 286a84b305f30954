/* kohya_run.c - a folder of kohya-ss / LyCORIS / OneTrainer adapter files as a run:
 * each file's step from its name (kohya's NAME-step%08d and NAME-%06d) or, for a
 * folder's one unnumbered file, from its ss_steps metadata; the format of one file
 * (dora_kohya_probe) and its reading are kohya.c's. Rules: include/dora/adapter.h
 * ("kohya"), docs/adapters.md. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "checkpoints/kohya_int.h"
#include "core/util.h"
#include "dora/model.h"
#include "dora/notes.h"
#include "dora/run.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dora_kohya_name(const char *name, int64_t *n)
{
    static const char ext[] = ".safetensors";
    size_t len = strlen(name), el = sizeof ext - 1;
    if (len <= el || strcmp(name + len - el, ext) != 0)
        return 0;
    len -= el;
    /* OneTrainer: PREFIX{timestamp}-save-{global_step}-{epoch}-{epoch_step} */
    for (const char *sv = strstr(name, "-save-"); sv; sv = strstr(sv + 1, "-save-")) {
        const char *p = sv + 6;
        size_t g = strspn(p, "0123456789"), e, es;
        if (g == 0 || g > 19 || p[g] != '-' || (e = strspn(p + g + 1, "0123456789")) == 0 ||
            p[g + 1 + e] != '-' || (es = strspn(p + g + 2 + e, "0123456789")) == 0 ||
            (size_t)(p + g + 2 + e + es - name) != len)
            continue;
        return util_parse_digits(p, g, n) == 0 ? 1 : -1;
    }
    size_t d = 0; /* the digits at the end of the stem */
    while (d < len && name[len - 1 - d] >= '0' && name[len - 1 - d] <= '9')
        d++;
    if (d == 0 || d == len)
        return 0;
    const char *num = name + len - d;
    int kind;
    if (d + 4 <= len && strncmp(num - 4, "-of-", 4) == 0)
        return 0; /* a shard, NAME-00001-of-00002 */
    if (d + 5 < len && strncmp(num - 5, "-step", 5) == 0)
        kind = 1; /* kohya's STEP_FILE_NAME "NAME-step%08d" */
    else if (num[-1] == '-')
        kind = 2; /* kohya's EPOCH_FILE_NAME "NAME-%06d" */
    else
        return 0;
    return util_parse_digits(num, d, n) == 0 ? kind : -1;
}

/* ss_steps of the kohya file PATH: 1 and *STEP, 0 without it, -1 (ERR) when
 * the file cannot be read or the value is not a step. */
static int meta_steps(const char *path, int64_t *step, dora_err *err)
{
    dora_model *m;
    if (dora_model_open(&m, path, err) != 0)
        return -1;
    const st_file *f = m->files[0];
    int rc = 0;
    for (size_t i = 0; i < f->nmeta && rc == 0; i++)
        if (strcmp(f->meta_keys[i], "ss_steps") == 0)
            rc = util_parse_i64(f->meta_values[i], 0, INT64_MAX, step) == 0
                     ? 1
                     : dora_errf(err, "'%s': metadata ss_steps '%.40s' is not a step", path,
                                 f->meta_values[i]);
    dora_model_close(m);
    return rc;
}

static int step_order(const void *pa, const void *pb)
{
    const dora_step *a = pa, *b = pb;
    return (a->step > b->step) - (a->step < b->step);
}

/* DIR's unnumbered kohya files: added to RUN at their ss_steps (when TAKE),
 * else noted. */
static int add_unnumbered(dora_run *run, const char *dir, int take, dora_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder", dir);
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        int64_t step;
        char *p = util_has_suffix(de->d_name, ".safetensors") &&
                          dora_kohya_name(de->d_name, &step) == 0
                      ? util_join(dir, de->d_name)
                      : NULL;
        if (!p || !util_is_file(p) || !dora_kohya_probe(p)) {
            free(p);
            continue;
        }
        int ms = meta_steps(p, &step, err);
        const dora_step *same = NULL;
        for (size_t i = 0; ms == 1 && i < run->nsteps; i++)
            if (run->steps[i].step == step)
                same = &run->steps[i];
        dora_step *ns = NULL;
        if (ms < 0) {
            rc = -1;
        } else if (ms == 0 || !take) {
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': left out: %s", p,
                           ms == 0 ? "no step in its name or its metadata (ss_steps)"
                                   : "the run's other files give epochs, not steps");
        } else if (same) {
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': left out: at step %lld (ss_steps) like '%s'", p,
                           (long long)step, same->path);
        } else if (!(ns = realloc(run->steps, (run->nsteps + 1) * sizeof *ns))) {
            rc = dora_errf(err, "out of memory");
        } else {
            run->steps = ns;
            ns[run->nsteps] = (dora_step){.step = step, .path = strdup(p)};
            rc = ns[run->nsteps].path ? 0 : dora_errf(err, "out of memory");
            run->nsteps += rc == 0;
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': no step in its name: step %lld from its metadata (ss_steps)", p,
                           (long long)step);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

int dora_kohya_steps(dora_run *run, const char *dir, int epochs, dora_err *err)
{
    /* names alone do not make a kohya run: every file must hold kohya keys */
    for (size_t i = 0; i < run->nsteps; i++)
        if (!dora_kohya_probe(run->steps[i].path)) {
            for (size_t k = 0; k < run->nsteps; k++)
                free(run->steps[k].path);
            free(run->steps);
            run->steps = NULL;
            run->nsteps = 0;
            return 0;
        }
    size_t with = 0;
    for (size_t i = 0; i < run->nsteps; i++) {
        int64_t ms;
        int r = meta_steps(run->steps[i].path, &ms, err);
        if (r < 0)
            return -1;
        with += r == 1;
        if (r == 1 && !epochs && ms != run->steps[i].step)
            return dora_errf(err, "'%s': the name says step %lld but its metadata ss_steps says "
                                  "%lld",
                             run->steps[i].path, (long long)run->steps[i].step, (long long)ms);
        if (r == 1)
            run->steps[i].step = ms;
    }
    if (epochs && with != 0 && with != run->nsteps)
        return dora_errf(err, "'%s': %zu of its %zu per-epoch files (NAME-E.safetensors) give "
                              "their step (metadata ss_steps) and the others do not: epochs and "
                              "steps would be mixed",
                         dir, with, run->nsteps);
    if (epochs && with == 0)
        dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                       "'%s': kohya's per-epoch files (NAME-E.safetensors) without ss_steps "
                       "metadata: epoch E taken as the step",
                       dir);
    if (add_unnumbered(run, dir, with == run->nsteps, err) != 0)
        return -1;
    qsort(run->steps, run->nsteps, sizeof *run->steps, step_order);
    for (size_t i = 1; i < run->nsteps; i++)
        if (run->steps[i].step == run->steps[i - 1].step)
            return dora_errf(err, "'%s' and '%s' are both step %lld", run->steps[i - 1].path,
                             run->steps[i].path, (long long)run->steps[i].step);
    return 0;
}

int dora_kohya_single(dora_run *run, const char *dir, dora_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder", dir);
    char *found[KOHYA_MAX_LISTED + 1] = {0};
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step;
        char *p = util_has_suffix(de->d_name, ".safetensors") &&
                          dora_kohya_name(de->d_name, &step) == 0
                      ? util_join(dir, de->d_name)
                      : NULL;
        if (p && util_is_file(p) && dora_kohya_probe(p) && n <= KOHYA_MAX_LISTED)
            found[n++] = p;
        else
            free(p);
    }
    closedir(d);
    int rc = 0;
    if (n > 1) {
        char list[1024] = "";
        size_t off = 0;
        for (size_t k = 0; k < n && k < KOHYA_MAX_LISTED && off < sizeof list; k++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s'%s'", k ? ", " : "",
                                    found[k]);
        rc = dora_errf(err, "'%s': %s%zu kohya files without a step in their names (%s%s): "
                            "which is which step is ambiguous; give one file as the run, or "
                            "name them NAME-stepS.safetensors",
                       dir, n > KOHYA_MAX_LISTED ? "more than " : "",
                       n > KOHYA_MAX_LISTED ? (size_t)KOHYA_MAX_LISTED : n, list,
                       n > KOHYA_MAX_LISTED ? ", ..." : "");
    } else if (n == 1) {
        int64_t step = 0;
        int ms = meta_steps(found[0], &step, err);
        dora_step *ns = ms < 0 ? NULL : malloc(sizeof *ns);
        if (ms < 0) {
            rc = -1;
        } else if (!ns) {
            rc = dora_errf(err, "out of memory");
        } else {
            *ns = (dora_step){.step = ms == 1 ? step : 0, .path = found[0]};
            found[0] = NULL;
            run->steps = ns;
            run->nsteps = 1;
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           ms == 1 ? "'%s': the folder's one kohya file, no step in its name: a "
                                     "run of one step, step %lld from its metadata (ss_steps)"
                                   : "'%s': the folder's one kohya file, no step in its name "
                                     "or its metadata (ss_steps): a run of one step, taken as "
                                     "step %lld",
                           ns->path, (long long)ns->step);
        }
    }
    for (size_t k = 0; k < n; k++)
        free(found[k]);
    return rc;
}
