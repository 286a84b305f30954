/* spectral_int.h - what the files of `spectrum` share inside analysis/:
 * svd.c (the SVDs and derived numbers), spectral.c (runs, module selection,
 * results) and spectral_module.c (forming the updates, one module at a time).
 *
 * Matrix conventions: LAPACK's column-major order. A dense matrix A [m, n]
 * comes row-major (as the tensors store it), which is the column-major A^T
 * [n, m] with leading dimension n; so LAPACK is run on A^T and the left
 * singular vectors of A are read from the right singular vectors of A^T. All
 * vectors handed out are column-major [m, k].
 */
#ifndef DORA_SPECTRAL_INT_H
#define DORA_SPECTRAL_INT_H

#include "dora/adapter.h"
#include "dora/spectral.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* malloc of n elements of size bytes, NULL on overflow; never malloc(0). */
static inline void *alloc_n(size_t n, size_t size)
{
    if (n == 0)
        n = 1;
    if (size && n > SIZE_MAX / size)
        return NULL;
    return malloc(n * size);
}

/* A module of one run, as read: where each step's update comes from. */
typedef struct rmod {
    const char *name;          /* base tensor name; borrowed from the base or an adapter */
    const dora_tensor *base;   /* W0, NULL without the base */
    int transposed;            /* W0 stored [in, out] (fan_in_fan_out) */
    int64_t rows, cols;
    int64_t rank, maxr;        /* the first step's r, the largest r of any step (LoRA) */
    const char *update;        /* "lora", "lora-part", "dora", "dense" */
    int dense;                 /* some step's update is formed densely */
    const dora_tensor **wt;    /* [S] FT / modules_to_save: W_t */
    const dora_adapted **ad;   /* [S] LoRA / DoRA */
} rmod;

struct module; /* analyze_int.h */

/* One run while it is analysed. */
typedef struct rctx {
    const char *name;
    const dora_run *run;
    dora_model **model;        /* [S] full-weight steps */
    dora_adapter **adapter;    /* [S] adapter steps */
    rmod *mods;
    size_t nmods, capmods;
    struct module *amods;      /* with a base: analyze's selection, which MODS point into */
    size_t namods;
    int need_vectors;          /* phi needs this run's top singular vectors */
} rctx;

/* A module name over all runs, with its index in each run (SIZE_MAX: absent). */
typedef struct gmod {
    const char *name;
    size_t *idx;
} gmod;

typedef struct sctx {
    dora_spectrum *sp;
    const dora_spectrum_opts *opts;
    const dora_model *base;
    size_t nruns;
    rctx *rc;
    gmod *g;
    size_t ng;
    size_t *cmp_mi;            /* [ncompare, ng] index of global module g in compare ci,
                                * SIZE_MAX when the pair does not compare it */
    pthread_mutex_t *lock;     /* while modules run: for the notes and the counts below */
    size_t cache_hits, cache_stores;
} sctx;

/* The cache of W0's SVDs in folder DIR (spectral_cache.c). Load: 1 and *OUT filled
 * when a valid file for RM's base tensor in BITS is there, 0 when not (WHY then says
 * what was wrong with a file that was there, else is empty), -1 out of memory.
 * Store: SV written through a private temporary renamed into place; -1 with ERR. */
int spec_cache_load(const char *dir, const rmod *rm, int bits, dora_svd *out, char *why,
                    size_t whylen);
int spec_cache_store(const char *dir, const rmod *rm, const dora_svd *sv, dora_err *err);

/* Analyse every global module (spectral_module.c), on c->opts->threads threads within
 * c->opts->mem_bytes: fill each module's rows of the runs' [S, L] arrays and its phi
 * grids. Each module writes only its own places, so the result does not depend on the
 * threads; on failure, the error of the first failing module in name order. */
int spec_do_modules(sctx *c, dora_err *err);

#endif
