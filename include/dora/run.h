/* run.h - finding the checkpoints of a training run on disk.
 *
 * A run path is one of:
 *  - an HF Trainer output folder: checkpoint-STEP/ subfolders, sorted by STEP
 *    numerically. When a checkpoint holds trainer_state.json its global_step
 *    must equal STEP. A model saved in the run folder itself is the final
 *    step, unless its weight files are byte-identical to one of the
 *    checkpoints' (then it is that checkpoint and is not repeated). Its step
 *    is the global_step of the run folder's trainer_state.json; without one,
 *    the max_steps of the last checkpoint's trainer_state.json; without that,
 *    the last checkpoint's STEP + 1 (an error if that is beyond INT64_MAX). A
 *    final model whose step equals the last checkpoint's is dropped with a
 *    note (the checkpoint stands for the step). A folder named
 *    checkpoint-DIGITS whose number does not fit in int64 is an error naming
 *    it; other names (checkpoint-1x, checkpoint--2) are not checkpoints.
 *  - a single checkpoint folder (a model folder): one step, from its
 *    trainer_state.json global_step, else its name checkpoint-STEP, else 0
 *    (a name checkpoint-DIGITS beyond INT64_MAX is an error);
 *  - a single model file: one step, 0.
 */
#ifndef DORA_RUN_H
#define DORA_RUN_H

#include "dora/error.h"
#include "dora/model.h"

#include <stdint.h>

struct dora_adapter;

typedef struct dora_step {
    int64_t step;
    char *path; /* the model location for this step: a folder or a file, owned */
    /* the adapter at PATH as discovery opened it (to learn the run's method),
     * kept so that the analysis need not parse it again; NULL for full weights
     * or a step made by hand. Owned by the run, closed by dora_run_release. */
    struct dora_adapter *adapter;
} dora_step;

/* A run keeps at most this many notes; later ones are dropped. */
#define DORA_RUN_MAX_NOTES 8

typedef enum dora_run_layout {
    DORA_RUN_TRAINER = 0, /* folder with checkpoint-STEP/ subfolders */
    DORA_RUN_CHECKPOINT,  /* one model folder */
    DORA_RUN_FILE         /* one model file */
} dora_run_layout;

typedef struct dora_run {
    char *path;                   /* as given, owned */
    dora_run_layout layout;
    const char *method;           /* "ft", "lora" or "dora" (static string) */
    size_t nsteps;
    dora_step *steps;             /* ascending, distinct */
    size_t nnotes;
    char **notes;                 /* [nnotes] remarks for the user (final model skipped, ...),
                                     owned (dora/notes.h) */
} dora_run;

/* Discover the steps of the run at PATH. On failure the run is released. */
int dora_run_discover(dora_run *run, const char *path, dora_err *err);

/* For `analyze` without --base: the base the adapter runs at PATHS[0..N) name in
 * their adapter_config.json (base_model_name_or_path of each run's first step): a
 * path, relative to the adapter's folder when it exists there, else the value
 * itself (a hub id, hub.h). 0 with *BASE allocated when every run names one and
 * the same; -1 with ERR set when a run cannot be discovered, holds full weights,
 * names none, or the runs name different bases (ERR names both). */
int dora_runs_adapter_base(const char *const *paths, size_t n, char **base, dora_err *err);
/* 1 if S can name a run (the HDF5 group /runs/S, on the command line and in a
 * manifest): non-empty, not "." or "..", no '/'. Else 0. */
int dora_run_name_ok(const char *s);
void dora_run_release(dora_run *run);

/* Read global_step (and max_steps, -1 if absent) from a trainer_state.json.
 * Returns 1 if the file exists and was read, 0 if it does not exist, -1 if it
 * is malformed. */
int dora_trainer_state(const char *path, int64_t *global_step, int64_t *max_steps, dora_err *err);

const char *dora_run_layout_name(dora_run_layout l);

#endif
