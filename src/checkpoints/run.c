/* run.c - checkpoint discovery; the rules are in include/dora/run.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/run.h"
#include "dora/adapter.h"
#include "dora/notes.h"
#include "dora/tune_shards.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_MAX_BYTES (64u << 20)
#define MAX_CHECKPOINTS 100000

const char *dora_run_layout_name(dora_run_layout l)
{
    switch (l) {
    case DORA_RUN_TRAINER:
        return "trainer output folder";
    case DORA_RUN_CHECKPOINT:
        return "checkpoint folder";
    default:
        return "model file";
    }
}

int dora_trainer_state(const char *path, int64_t *global_step, int64_t *max_steps, dora_err *err)
{
    *global_step = -1;
    *max_steps = -1;
    if (!util_is_file(path))
        return 0;
    char *text;
    size_t len;
    if (util_read_file(path, STATE_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root)
        return dora_errf(err, "'%s': not valid JSON: %s (line %d, column %d)", path, jerr.text,
                         jerr.line, jerr.column);
    json_t *gs = json_object_get(root, "global_step");
    json_t *ms = json_object_get(root, "max_steps");
    int rc = 1;
    if (!json_is_integer(gs) || json_integer_value(gs) < 0) {
        rc = dora_errf(err, "'%s': 'global_step' is missing or not a non-negative integer", path);
    } else {
        *global_step = json_integer_value(gs);
        if (json_is_integer(ms) && json_integer_value(ms) >= 0)
            *max_steps = json_integer_value(ms);
    }
    json_decref(root);
    return rc;
}

static int add_step(dora_run *run, int64_t step, const char *path, dora_err *err)
{
    dora_step *ns = realloc(run->steps, (run->nsteps + 1) * sizeof *ns);
    if (!ns)
        return dora_errf(err, "out of memory");
    run->steps = ns;
    ns[run->nsteps] = (dora_step){.step = step, .path = strdup(path)};
    if (!ns[run->nsteps].path)
        return dora_errf(err, "out of memory");
    run->nsteps++;
    return 0;
}

/* "checkpoint-123": 1 and *step = 123. 0 for a name that is not checkpoint-
 * followed by decimal digits only (not a checkpoint folder). -1 for
 * checkpoint-DIGITS whose number does not fit in int64: a checkpoint that
 * cannot be placed, not something to skip in silence. */
static int checkpoint_step(const char *name, int64_t *step)
{
    static const char prefix[] = "checkpoint-";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *num = name + sizeof prefix - 1;
    if (!*num || strspn(num, "0123456789") != strlen(num))
        return 0;
    return util_parse_i64(num, 0, INT64_MAX, step) == 0 ? 1 : -1;
}

static int step_cmp(const void *pa, const void *pb)
{
    const dora_step *a = pa, *b = pb;
    return (a->step > b->step) - (a->step < b->step);
}

/* Step of a lone checkpoint folder: trainer_state.json, else its name, else 0. */
static int folder_step(const char *dir, int64_t *step, dora_err *err)
{
    char *state = util_join(dir, "trainer_state.json");
    if (!state)
        return dora_errf(err, "out of memory");
    int64_t gs, ms;
    int r = dora_trainer_state(state, &gs, &ms, err);
    free(state);
    if (r < 0)
        return -1;
    char *base = util_basename(dir);
    if (!base)
        return dora_errf(err, "out of memory");
    int64_t named = -1;
    int kind = checkpoint_step(base, &named);
    free(base);
    if (kind < 0)
        return dora_errf(err, "'%s': the step in the folder name does not fit in a signed 64-bit "
                              "integer (at most %lld)",
                         dir, (long long)INT64_MAX);
    if (r == 1 && named >= 0 && named != gs)
        return dora_errf(err, "'%s': folder name says step %lld but trainer_state.json says "
                              "global_step %lld",
                         dir, (long long)named, (long long)gs);
    *step = r == 1 ? gs : named >= 0 ? named : 0;
    return 0;
}

/* The checkpoint-STEP/ folders of DIR into RUN's steps, unsorted. */
static int list_checkpoints(dora_run *run, const char *dir, dora_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        int64_t step;
        int kind = checkpoint_step(de->d_name, &step);
        if (kind == 0)
            continue;
        char *p = util_join(dir, de->d_name);
        if (!p) {
            rc = dora_errf(err, "out of memory");
            break;
        }
        if (util_is_dir(p)) {
            if (kind < 0)
                rc = dora_errf(err, "'%s': the step in the folder name does not fit in a signed "
                                    "64-bit integer (at most %lld)",
                               p, (long long)INT64_MAX);
            else if (run->nsteps >= MAX_CHECKPOINTS)
                rc = dora_errf(err, "'%s': more than %d checkpoint folders", dir, MAX_CHECKPOINTS);
            else
                rc = add_step(run, step, p, err);
        }
        free(p);
        if (rc != 0)
            break;
    }
    closedir(d);
    return rc != 0 ? -1 : 0;
}

/* The sorted steps: no step twice, and each trainer_state.json (if any) agrees
 * with its folder. *LAST_MAX_STEPS: max_steps of the last checkpoint's state, or
 * -1 when it has none. */
static int check_steps(const dora_run *run, int64_t *last_max_steps, dora_err *err)
{
    *last_max_steps = -1;
    for (size_t i = 0; i < run->nsteps; i++) {
        if (i > 0 && run->steps[i].step == run->steps[i - 1].step)
            return dora_errf(err, "'%s' and '%s' are both step %lld", run->steps[i - 1].path,
                             run->steps[i].path, (long long)run->steps[i].step);
        char *state = util_join(run->steps[i].path, "trainer_state.json");
        if (!state)
            return dora_errf(err, "out of memory");
        int64_t gs, ms;
        int r = dora_trainer_state(state, &gs, &ms, err);
        if (r == 1 && gs != run->steps[i].step)
            r = dora_errf(err, "'%s': global_step is %lld but the folder is checkpoint-%lld",
                          state, (long long)gs, (long long)run->steps[i].step);
        free(state);
        if (r < 0)
            return -1;
        if (r == 1)
            *last_max_steps = ms;
        else if (i == run->nsteps - 1)
            *last_max_steps = -1;
    }
    return 0;
}

/* 1 (noted) if the final model at FINAL_PATH (of KIND; freed here) has the
 * bytes of one of the checkpoints, 0 if of none, -1 with ERR set. */
static int final_is_a_checkpoint(dora_run *run, const char *dir, dora_model_kind kind,
                                 char *final_path, dora_err *err)
{
    /* Compare the weight files themselves (adapter weights for an adapter). */
    dora_model_kind ck_kind;
    dora_model *final = NULL;
    int r0 = dora_model_open(&final, final_path, err);
    free(final_path);
    if (r0 != 0)
        return dora_errprefix(err, "final model of run '%s'", dir);
    for (size_t i = 0; i < run->nsteps; i++) {
        char *ck_path = NULL;
        dora_model *ck = NULL;
        if (dora_model_probe(run->steps[i].path, &ck_kind, &ck_path, err) != 0 ||
            (ck_kind != DORA_MODEL_NONE && dora_model_open(&ck, ck_path, err) != 0)) {
            free(ck_path);
            dora_model_close(final);
            return -1;
        }
        free(ck_path);
        /* a file truncated while it is compared is an error naming it, not a SIGBUS */
        int same = ck && ck_kind == kind ? dora_model_cmp_bytes(final, ck, err) : 0;
        dora_model_close(ck);
        if (same < 0) {
            dora_model_close(final);
            return dora_errprefix(err, "comparing the final model of run '%s' with its checkpoints",
                                  dir);
        }
        if (same) {
            dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                           "'%s': the final model is byte-identical to '%s' (step %lld); not "
                           "counted twice",
                           dir, run->steps[i].path, (long long)run->steps[i].step);
            dora_model_close(final);
            return 1;
        }
    }
    dora_model_close(final);
    return 0;
}

/* The final model's step (from trainer_state.json, max_steps, or the last
 * checkpoint's + 1) and its place among the steps: added, or noted when a
 * checkpoint is at that step already. */
static int add_final(dora_run *run, const char *dir, int64_t last_max_steps, dora_err *err)
{
    int64_t last = run->steps[run->nsteps - 1].step;
    char *state = util_join(dir, "trainer_state.json");
    if (!state)
        return dora_errf(err, "out of memory");
    int64_t gs, ms, step;
    int r = dora_trainer_state(state, &gs, &ms, err);
    free(state);
    if (r < 0)
        return -1;
    const char *how;
    if (r == 1) {
        step = gs;
        how = "global_step of the run folder's trainer_state.json";
    } else if (last_max_steps >= last) {
        step = last_max_steps;
        how = "max_steps of the last checkpoint's trainer_state.json";
    } else if (last < INT64_MAX) {
        step = last + 1;
        how = "no trainer_state.json says it: last checkpoint's step + 1";
    } else {
        return dora_errf(err, "'%s': the final model would be step %lld + 1, which does not fit "
                              "in a signed 64-bit integer (no trainer_state.json gives its step)",
                         dir, (long long)last);
    }
    if (step < last)
        return dora_errf(err, "'%s': the final model's step %lld (%s) is before the last "
                              "checkpoint's step %lld",
                         dir, (long long)step, how, (long long)last);
    if (step == last) {
        dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                       "'%s': the final model is at step %lld like '%s' but differs from it; the "
                       "checkpoint is used for that step",
                       dir, (long long)step, run->steps[run->nsteps - 1].path);
        return 0;
    }
    dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                   "'%s': final model taken as step %lld (%s)", dir, (long long)step, how);
    return add_step(run, step, dir, err);
}

/* The Trainer layout: checkpoint-STEP/ folders, then maybe a final model. */
static int discover_trainer(dora_run *run, const char *dir, dora_err *err)
{
    if (list_checkpoints(run, dir, err) != 0)
        return -1;
    if (run->nsteps == 0)
        return 0; /* not a Trainer output folder */
    qsort(run->steps, run->nsteps, sizeof *run->steps, step_cmp);
    int64_t last_max_steps;
    if (check_steps(run, &last_max_steps, err) != 0)
        return -1;

    /* A final model in the run folder itself. */
    dora_model_kind kind;
    char *final_path = NULL;
    if (dora_model_probe(dir, &kind, &final_path, err) != 0)
        return -1;
    if (kind == DORA_MODEL_NONE) {
        free(final_path);
        return 0;
    }
    if (!final_path) { /* adapter_config.json alone, as PEFT leaves in a Trainer folder */
        dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                       "'%s': adapter_config.json without adapter weights: no final model",
                       dir);
        return 0;
    }
    int same = final_is_a_checkpoint(run, dir, kind, final_path, err);
    if (same != 0)
        return same < 0 ? -1 : 0;
    return add_final(run, dir, last_max_steps, err);
}

/* "epoch=E-step=S.ckpt" (Lightning's default checkpoint name): 1 and *STEP =
 * S; 0 for any other name; -1 when S does not fit in int64. */
static int lightning_step(const char *name, int64_t *step)
{
    const char *p = name;
    if (strncmp(p, "epoch=", 6) != 0)
        return 0;
    p += 6;
    size_t e = strspn(p, "0123456789");
    if (e == 0 || strncmp(p + e, "-step=", 6) != 0)
        return 0;
    p += e + 6;
    size_t s = strspn(p, "0123456789");
    if (s == 0 || strcmp(p + s, ".ckpt") != 0)
        return 0;
    return util_parse_digits(p, s, step) == 0 ? 1 : -1; /* -1: too many digits */
}

/* "meta_model_E.pt" (torchtune's checkpoint of epoch E in Meta's format): 1
 * and *STEP = E; 0 for any other name; -1 when E does not fit. */
static int torchtune_epoch(const char *name, int64_t *step)
{
    if (strncmp(name, "meta_model_", 11) != 0)
        return 0;
    const char *num = name + 11;
    size_t n = strspn(num, "0123456789");
    if (n == 0 || strcmp(num + n, ".pt") != 0)
        return 0;
    return util_parse_digits(num, n, step) == 0 ? 1 : -1;
}

/* "hf_model_0001_E.pt" (the first shard of torchtune's HF checkpoint of epoch
 * E, which stands for all of them: tune_shards.h): 1 and *STEP = E. */
static int torchtune_hf_epoch(const char *name, int64_t *step)
{
    int64_t shard;
    int r = dora_tune_shard_name(name, &shard, step);
    return r == 1 && shard != 1 ? 0 : r;
}

/* kohya's "NAME-stepS.safetensors" (1, *STEP = S) and "NAME-E.safetensors"
 * (epoch E) files: adapter.h's dora_kohya_name */
static int kohya_step(const char *name, int64_t *step)
{
    int r = dora_kohya_name(name, step);
    return r == 1 ? 1 : r == 2 ? 0 : r;
}

static int kohya_epoch(const char *name, int64_t *step)
{
    int r = dora_kohya_name(name, step);
    return r == 2 ? 1 : r == 1 ? 0 : r;
}

/* The global_step a Lightning checkpoint holds must be the step its name says. */
static int check_lightning_step(const char *path, int64_t step, dora_err *err)
{
    dora_model *m;
    if (dora_model_open(&m, path, err) != 0)
        return -1;
    int64_t gs = m->nfiles ? m->files[0]->global_step : -1;
    dora_model_close(m);
    if (gs >= 0 && gs != step)
        return dora_errf(err, "'%s': the name says step %lld but the checkpoint's global_step is "
                              "%lld",
                         path, (long long)step, (long long)gs);
    return 0;
}

static int discover_named(dora_run *run, const char *dir,
                          int (*step_of)(const char *name, int64_t *step), dora_err *err);

/* A folder of Lightning checkpoints, epoch=E-step=S.ckpt: one step each
 * (last.ckpt, a copy of one of them, is left out with a note); else of
 * torchtune's meta_model_E.pt, one per epoch E, taken as step E (noted). */
static int discover_lightning(dora_run *run, const char *dir, dora_err *err)
{
    int rc = discover_named(run, dir, lightning_step, err);
    const int lightning = run->nsteps > 0;
    if (rc == 0 && run->nsteps == 0 && (rc = discover_named(run, dir, torchtune_epoch, err)) == 0 &&
        run->nsteps == 0)
        rc = discover_named(run, dir, torchtune_hf_epoch, err);
    if (rc == 0 && run->nsteps > 0 && !lightning)
        dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                       "'%s': torchtune's checkpoints (meta_model_E.pt or hf_model_NNNN_E.pt), "
                       "epoch E taken as the step",
                       dir);
    /* kohya adapter files: steps, else epochs; then their metadata (adapter.h) */
    if (rc == 0 && run->nsteps == 0) {
        int epochs = 0;
        if ((rc = discover_named(run, dir, kohya_step, err)) == 0 && run->nsteps == 0) {
            rc = discover_named(run, dir, kohya_epoch, err);
            epochs = 1;
        }
        if (rc == 0 && run->nsteps > 0)
            rc = dora_kohya_steps(run, dir, epochs, err);
        if (rc == 0 && run->nsteps == 0) /* one unnumbered kohya file: a run of one step */
            rc = dora_kohya_single(run, dir, err);
    }
    return rc;
}

/* The files of DIR whose names STEP_OF reads a step from, one step each, sorted. */
static int discover_named(dora_run *run, const char *dir,
                          int (*step_of)(const char *name, int64_t *step), dora_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = 0, last = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        int64_t step;
        int kind = step_of(de->d_name, &step);
        last |= strcmp(de->d_name, "last.ckpt") == 0;
        if (kind == 0)
            continue;
        char *p = util_join(dir, de->d_name);
        if (!p)
            rc = dora_errf(err, "out of memory");
        else if (kind < 0)
            rc = dora_errf(err, "'%s': the step in the name does not fit in a signed 64-bit "
                                "integer",
                           p);
        else if (util_is_file(p) && run->nsteps >= MAX_CHECKPOINTS)
            rc = dora_errf(err, "'%s': more than %d checkpoints", dir, MAX_CHECKPOINTS);
        else if (util_is_file(p))
            rc = add_step(run, step, p, err);
        free(p);
    }
    closedir(d);
    if (rc != 0 || run->nsteps == 0)
        return rc;
    qsort(run->steps, run->nsteps, sizeof *run->steps, step_cmp);
    for (size_t i = 0; i < run->nsteps; i++) {
        if (i > 0 && run->steps[i].step == run->steps[i - 1].step)
            return dora_errf(err, "'%s' and '%s' are both step %lld", run->steps[i - 1].path,
                             run->steps[i].path, (long long)run->steps[i].step);
        if (step_of == lightning_step &&
            check_lightning_step(run->steps[i].path, run->steps[i].step, err) != 0)
            return -1;
    }
    if (last)
        dora_notes_add(&run->notes, &run->nnotes, DORA_RUN_MAX_NOTES,
                       "'%s': last.ckpt left out (Lightning's copy of a step)", dir);
    return 0;
}

/* "ft" for full weights; for adapters, "dora" if any checkpoint's adapter is
 * DoRA (use_dora, the paper's DORA type, or magnitude tensors), else "lora". */
static int detect_method(dora_run *run, dora_err *err)
{
    run->method = "ft";
    for (size_t s = 0; s < run->nsteps; s++) {
        dora_model_kind kind;
        if (dora_model_probe(run->steps[s].path, &kind, NULL, err) != 0)
            return -1;
        if (kind != DORA_MODEL_ADAPTER)
            continue;
        dora_adapter *a;
        if (dora_adapter_open(&a, run->steps[s].path, err) != 0)
            return -1;
        if (strcmp(run->method, "dora") != 0)
            run->method = a->method;
        run->steps[s].adapter = a; /* kept for the analysis (run.h) */
    }
    return dora_run_link_initial(run, err); /* pissa_niter_K: B0 A0 of a checkpoint-0/ */
}

int dora_run_discover(dora_run *run, const char *path, dora_err *err)
{
    memset(run, 0, sizeof *run);
    run->method = "ft";
    if (!(run->path = strdup(path)))
        return dora_errf(err, "out of memory");
    int rc;
    if (util_is_file(path)) {
        run->layout = DORA_RUN_FILE;
        rc = add_step(run, 0, path, err);
    } else if (util_is_dir(path)) {
        rc = discover_trainer(run, path, err);
        if (rc == 0 && run->nsteps == 0)
            rc = discover_lightning(run, path, err);
        if (rc == 0 && run->nsteps > 0) {
            run->layout = DORA_RUN_TRAINER;
        } else if (rc == 0) {
            dora_model_kind kind;
            int64_t step = 0;
            rc = dora_model_probe(path, &kind, NULL, err);
            if (rc == 0 && kind == DORA_MODEL_NONE)
                rc = dora_errf(err, "'%s': no checkpoint-STEP folders and no model (expected "
                                    "model.safetensors, model.safetensors.index.json or one "
                                    ".safetensors file)",
                               path);
            if (rc == 0)
                rc = folder_step(path, &step, err);
            if (rc == 0) {
                run->layout = DORA_RUN_CHECKPOINT;
                rc = add_step(run, step, path, err);
            }
        }
    } else {
        rc = dora_errf(err, "'%s': no such file or folder", path);
    }
    if (rc == 0)
        rc = detect_method(run, err);
    if (rc != 0) {
        dora_run_release(run);
        return -1;
    }
    return 0;
}

void dora_run_release(dora_run *run)
{
    if (!run)
        return;
    for (size_t i = 0; i < run->nsteps; i++) {
        free(run->steps[i].path);
        dora_adapter_close(run->steps[i].adapter);
    }
    free(run->steps);
    dora_notes_free(run->notes, run->nnotes);
    free(run->path);
    memset(run, 0, sizeof *run);
}

int dora_run_name_ok(const char *s)
{
    return s[0] != '\0' && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && strchr(s, '/') == NULL;
}
