/* analyze_int.h - what the files of dora_analyze_run share inside analysis/:
 * analyze.c (steps, the run and its result), analyze_select.c (which tensors,
 * and their sources in each step) analyze_plan.c (work units of rows, LoRA
 * steps in groups under the memory budget) and analyze_jobs.c (the passes and the
 * threads that run them). */
#ifndef DORA_ANALYZE_INT_H
#define DORA_ANALYZE_INT_H

#include "dora/adapter.h"
#include "dora/analyze.h"
#include "dora/progress.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* What one step holds for a module: a dense weight (FT, modules_to_save), or
 * a low-rank update of the base (LoRA, DoRA). */
typedef struct stepsrc {
    const dora_tensor *dense;
    const dora_adapted *ad;
    int64_t off;  /* this step's first row in the stacked factors of all steps (LoRA) */
    int64_t rope_heads; /* > 0: DENSE's rows are in Meta's RoPE order for this many heads
                           (align.h), read through a copy in HF's order (analyze_reshape.c) */
} stepsrc;

typedef struct module {
    const dora_tensor *base;
    stepsrc *src;   /* [S] */
    int lora;       /* every step is a low-rank update */
    int transposed; /* base stored [in, out] (fan_in_fan_out), read as [out, in] */
    int64_t rows, cols;
    int64_t rsum;   /* sum of the steps' ranks (LoRA) */
    size_t nsrc;    /* S, for freeing */
    dora_tensor *copies; /* [1 + nsrc] when base and steps are read from copies (Conv1D
                            weights transposed, parts of fused ones; analyze_reshape.c):
                            data owned, else NULL */
    char *part_name;     /* "NAME[q]" for a part of a fused weight (the copies' name), owned */
    dora_adapted *part_ad; /* [nsrc] a LoRA part's factors: its rows of L (B), owned */
    dora_tensor *part_t;   /* [2 nsrc] those rows of L, then of the DoRA magnitude (float64
                              copies, data owned; a magnitude's data NULL when none) */
} module;

typedef struct chunk {
    size_t module;
    int64_t row0, row1;
    size_t s0, s1;  /* the steps it computes (a LoRA module's group; dense: all) */
    int64_t block;  /* LoRA: rows per pass of the low-rank kernel */
    double *dm_sum, *dd_sum; /* [s1 - s0], in its module's block of sums while the module
                                is being computed (an_sums_take), else NULL */
    double *pm_sum, *am_sum; /* [s1 - s0] sums of passive and |active| (kernel.h) */
    double *head_sum;        /* [S][2][nheads] sums of |dM| then of 1 - cos per head of the
                                heads head0 .. its rows touch (heads.c), or NULL */
    int64_t head0, nheads;
    int64_t *zero;           /* [s1 - s0] */
    size_t sum_off;          /* its sums' place in its module's block, in steps */
    uint64_t bytes;          /* of the base and the steps it reads, for the progress */
} chunk;

#define AN_COLD_FILES 256

typedef struct job {
    size_t S;
    module *mods;
    chunk *chunks;
    size_t nchunks;
    size_t *units;  /* [nunits + 1] work unit u: chunks [units[u], units[u + 1]) of one module */
    size_t nunits;
    size_t *mod_chunk; /* [L + 1] module l: chunks [mod_chunk[l], mod_chunk[l + 1]) */
    size_t *mod_left;  /* [L] atomic: its chunks not yet done */
    double **mod_sums; /* [L] the module's block of chunk sums while it is computed (under
                          lock), folded into the result and freed when its last chunk is
                          done: memory for the modules in flight, not for the model */
    size_t nmods;
    dora_result *res;
    int per_row;
    size_t next; /* atomic: next work unit to take */
    int failed;  /* atomic */
    int *step_bad; /* [S] atomic: a file of the step changed while read */
    char **step_why; /* [S] why (under lock) */
    pthread_mutex_t lock;
    dora_err err;
    dora_progress *prog; /* chunk bytes are added as each chunk is done; may be NULL */
    int threads;   /* threads to run (an_make_chunks may lower it to fit MEM) */
    uint64_t mem;  /* bytes for the buffers of the LoRA/DoRA path, all threads together */
    int64_t *head_rows; /* [L] rows per attention head of the modules that group by head
                           (heads.c), 0 for the others; NULL when none does */
    const struct st_file *cold[AN_COLD_FILES]; /* files found not all cached: from then on
                                                  read from the mapping (analyze_read.c) */
    size_t ncold; /* atomic: entries of cold (written under lock) */
} job;

/* What a step was read from: a full model or an adapter. */
typedef struct stepdata {
    dora_model *model;
    dora_adapter *adapter;
    int borrowed; /* the adapter is the run's (dora_step.adapter): not closed here */
} stepdata;

/* ---- analyze_select.c ---- */

/* Choose the tensors to analyse; fills *OUT (allocated, natural name order)
 * and their step sources; notes on RES for what is left out. Reads no tensor
 * data. 0, or -1 with ERR set. */
int an_select_modules(dora_result *res, const dora_model *base, const stepdata *sd, size_t S,
                      const dora_analysis_opts *opts, module **out, size_t *nout,
                      dora_err *err);
void an_free_modules(module *mods, size_t L);
/* What one module owns (its sources, copies), not the module. */
void an_module_release(module *m);
/* RES's arrays for L modules and S steps, and their names, layers and shapes
 * (and the per-row arrays when PER_ROW). 0, or -1 when out of memory. */
int an_alloc_result(dora_result *res, const module *mods, size_t S, size_t L, int per_row);

/* ---- analyze_reshape.c ---- */

/* After the selection: FT weights stored [in, out] (Conv1D by the base's
 * config.json, or --transpose) read from transposed copies, and fused weights
 * split into their parts (fused.h; not with --no-split), each a module of its
 * own read from a copy of its rows (a LoRA module: the base's rows and, per
 * step, those of L and of the DoRA magnitude; R is shared); *MODS may be
 * reallocated, *L grows. ADAPTER: an adapter run (no transposition: the
 * fan_in_fan_out path reads its bases).
 * Notes on RES say what was done. 0, or -1 with ERR set (the modules stay
 * valid for an_free_modules). */
int an_reshape_modules(dora_result *res, const dora_model *base, module **mods, size_t *L,
                       const dora_analysis_opts *opts, int adapter, dora_err *err);

/* ---- init_factors.c ---- */

/* B0 A0 of a PiSSA / OLoRA adapter from W0 (dora_init_factor_fn, adapter.h). */
int an_init_factors(const char *how, const double *w0, int64_t out, int64_t in, int64_t r,
                    double scale, double *p, double *q, dora_err *err);

/* ---- heads.c ---- */

/* Which modules of RES group by attention head (q_proj, k_proj, v_proj and the
 * parts [q], [k], [v] of fused weights, by the head counts of the base's
 * config.json): RES's head_* fields, JB->head_rows, and the per-head sums of
 * each chunk of those modules (JB's chunks made first): S x 2 x the heads the
 * chunk touches, so memory does not grow with the rows. A missing config, or a
 * module whose rows are not its heads x head_dim, gets a note and no heads. 0,
 * or -1 with ERR set (out of memory, a malformed config). */
int an_heads_plan(dora_result *res, const dora_model *base, const module *mods, size_t L,
                  size_t S, job *jb, dora_err *err);
/* After the pass: each head's sums over its chunks, in chunk order (so not
 * depending on the threads), divided by its rows, into RES; the steps marked
 * in BAD (may be NULL) left out as drop_steps does. */
void an_heads_reduce(dora_result *res, const job *jb, const int *bad, size_t S);
void an_heads_free(job *jb);

/* ---- analyze_jobs.c, analyze_plan.c ---- */

/* OpenBLAS single-threaded, once per process (see dora_analyze_run). */
void an_blas_single_once(void);
/* an_blas_single_once, and this thread's OpenMP thread count set to 1 (the OpenMP
 * build of OpenBLAS reads it per calling thread): first thing in a worker thread
 * that calls BLAS or LAPACK (blas_threads.c). */
void an_blas_single_thread(void);
/* Split every module into row chunks and the chunks into work units (JB->chunks,
 * ->units, ->mod_*; an_plan_free frees them); boundaries depend only on the
 * shapes, JB->threads and JB->mem. A LoRA module's steps are taken in groups
 * whose factors and buffers fit JB->mem / JB->threads; when one step does not
 * fit, fewer rows per pass, then fewer threads (JB->threads lowered); -1 with
 * ERR naming --mem when one step does not fit on one thread. */
int an_make_chunks(job *jb, size_t L, dora_err *err);
void an_plan_free(job *jb);
/* Before a unit of module L is run: the module's block of chunk sums, allocated
 * by the first unit of the module to start. 0, or -1 when out of memory. */
int an_sums_take(job *jb, size_t l);
/* After N chunks of module L are done: when they were its last, its chunk sums
 * are added into JB->res in chunk order (so the thread count does not change a
 * bit) and its block freed. an_sums_finish divides the sums by the rows once
 * every module is done. */
void an_sums_done(job *jb, size_t l, size_t n);
void an_sums_finish(job *jb);
/* The buffers of the LoRA path (per thread), in doubles; their sum for one
 * chunk is what the plan holds under the budget (analyze_plan.c). */
enum { LB_RALL, LB_GRAM, LB_SCRATCH, LB_P, LB_SAA, LB_L, LB_Y, LB_W0, LB_N };
/* The LoRA buffers a chunk of module MD needs for steps [s0, s1) and NB rows
 * per kernel pass, in doubles, into need[LB_N]; their sum in bytes (whole pages). */
uint64_t an_lora_need(const module *md, size_t s0, size_t s1, size_t nb, size_t need[LB_N]);
/* Run JB's work units on JB->threads threads (the caller's included). A step
 * whose file faults is marked in JB->step_bad; 0, or -1 with ERR set. */
int an_run_jobs(job *jb, dora_err *err);

#endif
