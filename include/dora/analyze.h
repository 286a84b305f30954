/* analyze.h - dM and dD of every analysed tensor of a run, per step.
 *
 * Analysed: every tensor of the base whose type is F16, BF16, F32 or F64, of
 * rank >= 2 with at least one element, kept by the name filters, and present
 * in every step of the run (a tensor without elements, [2^40, 0] say, is left
 * out with a note, in O(1)). A tensor with a different shape in a checkpoint, or a
 * non-floating type there, is an error naming the tensor, the file and both
 * shapes. NaN or Inf in an analysed row is an error naming the file, the
 * tensor and the row: no NaN is ever written as a result.
 *
 * The work is split into fixed row chunks that depend only on the shapes, and
 * the chunk sums are added in a fixed order, so results do not depend on the
 * thread count. The base rows of a chunk are read once for all steps (LoRA and
 * DoRA: once per group of steps that fits opts->mem_bytes; the numbers are the
 * same for any budget).
 *
 * Files that change underneath: a checkpoint of a Trainer folder whose files
 * are not all there is left out (res->failures); a mapped file that is
 * truncated while it is read (SIGBUS, caught by guard.h: in the pass and
 * when the adapters' Gram matrices are formed) or found changed afterwards
 * (size, mtime, inode) drops that step only; a changed base fails the run.
 * NaN or Inf in a LoRA factor is named by its own tensor and row (lora_A
 * when its Gram matrix is formed, lora_B as its rows are read).
 */
#ifndef DORA_ANALYZE_H
#define DORA_ANALYZE_H

#include "dora/error.h"
#include "dora/filter.h"
#include "dora/model.h"
#include "dora/quant.h"
#include "dora/progress.h"
#include "dora/run.h"

#include <stdint.h>

typedef struct dora_analysis_opts {
    const regex_t *include; /* keep names matching this (NULL: all; filter.h) */
    const regex_t *exclude; /* then drop names matching this (NULL: none) */
    int threads;            /* >= 1 */
    int per_row;            /* also keep per-row magnitudes and cosines */
    const char *const *renames; /* --rename REGEX=REPLACEMENT rules for checkpoint names
                                   (align.h), NULL for none */
    size_t nrenames;
    const char *transpose;  /* --transpose RE (POSIX extended): FT weights stored [in, out]
                               read as [out, in], beside the Conv1D architectures of the
                               base's config.json (config.h); NULL for none */
    int no_split;           /* --no-split: fused projections analysed whole (fused.h) */
    /* called once every file of the run is open, before any is read (NULL:
     * none); tests use it to change files underneath */
    void (*after_open)(void *ctx);
    void *after_open_ctx;
    /* W0 of adapter runs: the bitsandbytes round trip of the base (quant.h);
     * NONE: the base as given, unless dora_analyze_runs finds a
     * quantization_config in the base's config.json */
    dora_quant base_quant;
    const char *quant_skip; /* llm_int8_skip_modules (JSON list), or NULL */
    /* --initial-adapter: the adapter as PEFT initialised it, for "pissa_niter_K"
     * runs (dora_run_set_initial); NULL: a checkpoint-0/ of the run, if any */
    const char *initial_adapter;
    /* bytes read and runs done, the run in the label (NULL: none; progress.h) */
    dora_progress *progress;
    /* --mem: bytes for the LoRA/DoRA path's factors and work buffers, all
     * threads together (0: DORA_ANALYZE_MEM_DEFAULT); steps are taken in
     * groups that fit, fewer threads when one step does not */
    uint64_t mem_bytes;
} dora_analysis_opts;

/* 56 MiB: with the 2-8 MiB the rest of the process holds (libraries, HDF5, the
 * results), a LoRA/DoRA analysis stays under 64 MiB of anonymous memory
 * (make bench's 100-step case: 66 MiB with a 64 MiB default) */
#define DORA_ANALYZE_MEM_DEFAULT ((uint64_t)56 << 20)

typedef struct dora_result {
    char *name;           /* run name (HDF5 group), owned */
    const char *method;   /* "ft", "lora", "dora" (static) */
    char *source_path;    /* run path, owned */
    char *base_path;      /* base path, owned */
    size_t nsteps, nmodules;
    int64_t *steps;       /* [S] */
    char **step_paths;    /* [S] model location read for each step */
    char **step_stamps;   /* [S] "size:mtime_ns" of each weight file read for the step,
                             ';'-separated: tells a later run whether the inputs changed */
    char **modules;       /* [L] base tensor names, natural order */
    int32_t *layer;       /* [L] */
    int64_t *rows, *cols; /* [L] */
    int32_t *rank;        /* [L] LoRA rank, 0 for a dense (FT or saved) weight */
    double *delta_m;      /* [S * L], row-major by step */
    double *delta_d;      /* [S * L] */
    int64_t *zero_rows;   /* [S * L] rows zero in W0 or Wt (see kernel.h) */
    /* where dM comes from (kernel.h, docs/numerics.md): the means over rows of
     * passive and of |active|, [S * L]; NULL in a run read from a file written
     * before they were (h5in.h) */
    double *delta_m_passive;
    double *delta_m_active;
    /* per attention head (analysis/heads.c, docs/hdf5.md "heads"): the H modules
     * whose rows group by head (q, k, v projections and fused parts, by the
     * base's config.json), NH = head_offset[H] heads in all; H = 0 and the
     * pointers NULL when none (no config, rows that do not divide) */
    size_t nhead_mods;    /* H */
    size_t *head_module;  /* [H] index into modules */
    int64_t *head_count;  /* [H] heads of the module */
    int64_t *head_offset; /* [H + 1] first column of the module's heads */
    int64_t head_dim;     /* rows per head (config.json) */
    double *head_dm;      /* [S * NH] mean |dM| of the head's rows, row-major by step */
    double *head_dd;      /* [S * NH] mean 1 - cos of the head's rows */
    /* per-row data, only when opts->per_row; each [L] array of pointers */
    double **m0;          /* [L][rows] */
    double **m;           /* [L][S * rows] */
    double **cos;         /* [L][S * rows] */
    double **one_minus_cos; /* [L][S * rows] */
    char *name_alignment; /* how checkpoint names were matched to the base's (align.h),
                             "; "-joined per distinct rule, owned; NULL for as named */
    size_t nnotes;
    char **notes;         /* remarks for the user (tensors left out and why) */
    size_t nfailures;
    char **failures;      /* steps left out: a checkpoint still being written (files
                             missing) or a file that changed while it was read; the
                             result holds the other steps and the command exits 1 */
} dora_result;

int dora_analyze_run(dora_result *res, const char *name, const dora_model *base,
                     const char *base_path, const dora_run *run, const dora_analysis_opts *opts,
                     dora_err *err);
void dora_result_release(dora_result *res);

/* A remark for the user as it arises: RUN names the run (NULL for a note of
 * run discovery, which names its folder itself); FAILED is 1 for a step left
 * out (res->failures: an error even for a quiet command), 0 for a note. */
typedef void (*dora_note_fn)(void *ctx, const char *run, const char *msg, int failed);

/* `analyze` over NRUNS runs: open the base at BASE_PATH, then for each run
 * discover PATHS[i] (run.h) and analyse it as NAMES[i] into RES[i], handing
 * each note of discovery and of the result and each step left out to NOTE
 * (may be NULL) as it comes. *DONE counts the results filled, which the caller
 * releases (dora_result_release) whether or not the call succeeds. 0, or -1
 * with ERR set at the first run that fails (the ones before it are kept). */
int dora_analyze_runs(dora_result *res, size_t *done, const char *base_path,
                      char *const *names, const char *const *paths, size_t nruns,
                      const dora_analysis_opts *opts, dora_note_fn note, void *ctx,
                      dora_err *err);
/* Set RES's nsteps and nmodules to S and L and allocate its per-step arrays
 * (steps, step_paths, step_stamps) and per-module ones (modules, layer, rows,
 * cols, rank; delta_m, delta_d, zero_rows, delta_m_passive, delta_m_active [S * L]), zeroed; the rest is left
 * as it is. 0, or -1 when out of memory (dora_result_release frees what was
 * allocated). */
int dora_result_alloc(dora_result *res, size_t S, size_t L);

/* First dot-separated component of NAME made of digits only, else -1
 * ("model.layers.12.mlp.up_proj.weight" -> 12). */
int32_t dora_layer_index(const char *name);

#endif
