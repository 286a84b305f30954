/* spectral.h - singular value spectra of weight updates, intruder dimensions and
 * subspace similarity (REFERENCE.md section 3; `dora-analyze spectrum`).
 *
 * For a module with pre-trained weight W0 and weight W_t at step t, both viewed
 * as [out, in] (rows = output features; a Conv1D base stored [in, out] under
 * fan_in_fan_out is read transposed), the update is dW = W_t - W0, and:
 *
 *   sigma        its singular values, descending;
 *   r90          the smallest k with sigma_1^2 + ... + sigma_k^2 >= 0.9 ||dW||_F^2
 *                (0 for a zero update, -1 when only the top K values were computed
 *                and they hold less than 90%);
 *   stable rank  ||dW||_F^2 / sigma_1^2 (0 for a zero update);
 *   intruders    among the top 10 left (output-space) singular vectors of W_t, those
 *                whose largest |cos| with every left singular vector of W0 is below
 *                a threshold (needs the base);
 *   phi(i, j)    ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j) between the top left
 *                singular vectors U1, U2 of two updates (Hu et al., LoRA, Sec. 7).
 *
 * Which update and which algorithm:
 *   LoRA (and, without the base, the low-rank part s*B@A of DoRA): dW = s L R is
 *   never formed. Thin QR of L [out, r] and of R^T [in, r] (dgeqrf/dorgqr) and an
 *   SVD of the small s R_L R_R^T give the exact SVD in O((out + in) r^2), float64.
 *   Dense (FT, modules_to_save, and DoRA with the base, whose merged update
 *   m * V/||V|| - W0 is not low-rank): dW is formed and decomposed with LAPACK:
 *   dgesdd for every value (with every vector when vectors are wanted), dgesvdx
 *   (the top k values and vectors only) for a --top K of at most min(out, in)/4,
 *   or first, for a small --top K, a randomised subspace iteration whose every
 *   Ritz triplet is verified by its residual (falling back to dgesvdx when it
 *   does not converge). Precision: float64 up to DORA_SPEC_F64_MAX_ELEMS
 *   elements (out * in), float32 (sgesdd, ...) above; matrices above
 *   DORA_SPEC_DENSE_MAX_ELEMS are left out with a note.
 *
 * Library code: nothing is printed; failures return -1 and fill a dora_err that
 * names the file, the tensor and the limit.
 */
#ifndef DORA_SPECTRAL_H
#define DORA_SPECTRAL_H

#include "dora/error.h"
#include "dora/filter.h"
#include "dora/model.h"
#include "dora/progress.h"
#include "dora/run.h"

#include <stddef.h>
#include <stdint.h>

#define DORA_SPEC_F64_MAX_ELEMS (INT64_C(1) << 25)   /* 32 Mi elements: 4096 x 8192 */
#define DORA_SPEC_DENSE_MAX_ELEMS (INT64_C(1) << 28) /* 256 Mi elements (1 GiB in float32) */
#define DORA_SPEC_INTRUDER_TOP 10                    /* top singular vectors of W_t examined */
#define DORA_SPEC_SUBSPACE_DEFAULT 16                /* dimension of the subspaces phi compares */
#define DORA_SPEC_SUBSPACE_MAX 256
#define DORA_SPEC_THRESHOLD_DEFAULT 0.5
#define DORA_SPEC_LAYOUT_VERSION 1

/* ---------------------------------------------------------------- building blocks */

/* A dense matrix [m, n], row-major, float64 or float32 (f32 != 0); borrowed. */
typedef struct dora_dense {
    int64_t m, n;
    int f32;
    void *a;
} dora_dense;

typedef enum dora_svd_method {
    DORA_SVD_NONE = 0,
    DORA_SVD_LOWRANK = 1,    /* QR of both factors + small SVD (exact) */
    DORA_SVD_FULL = 2,       /* dgesdd: every singular value */
    DORA_SVD_PARTIAL = 3,    /* dgesvdx: the top k values (and vectors) */
    DORA_SVD_RANDOMIZED = 4, /* subspace iteration, residual-verified */
    DORA_SVD_GRAM = 5        /* dora_svd_top: Gram start + subspace iteration, verified */
} dora_svd_method;

/* The (partial) SVD of one matrix [m, n]. Owns s and u. */
typedef struct dora_svd {
    int64_t m, n;
    int64_t ns;             /* singular values in s, descending, all >= 0 */
    double *s;              /* [ns] */
    int64_t nu;             /* left singular vectors in u (the top nu) */
    double *u;              /* [m, nu] column-major: vector k is u + k * m */
    int64_t rank;           /* values in s above max(m, n) * eps * s[0] (eps of the arithmetic) */
    int complete;           /* 1 when s holds every nonzero singular value (the rest are 0) */
    dora_svd_method method;
    int bits;               /* 64 or 32: the arithmetic used */
    int iterations;         /* randomised: subspace iterations done */
} dora_svd;

void dora_svd_release(dora_svd *svd);

/* Exact SVD of scale * L @ R, L [m, r] and R [r, n] row-major float64, through
 * thin QR of L and R^T and the SVD of the small core: min(m, n, r) values (all
 * the nonzero ones) and the top min(nu, that) left vectors. O((m + n) r^2). */
int dora_svd_lowrank(dora_svd *out, int64_t m, int64_t n, int64_t r, const double *L,
                     const double *R, double scale, int64_t nu, dora_err *err);

/* SVD of a dense matrix (not modified). top = 0: every singular value; top > 0:
 * at least the top min(top, min(m, n)). nu: left vectors wanted (0 for none).
 * randomized != 0 allows the randomised method when top is small against
 * min(m, n). The arithmetic is float32 when a->f32, else float64. */
int dora_svd_dense(dora_svd *out, const dora_dense *a, int64_t top, int64_t nu, int randomized,
                   dora_err *err);

/* The top k (>= 1, at most min(m, n)) singular values and left vectors of a dense
 * matrix, exactly as far as a residual check can tell: the top eigenvectors of its
 * Gram matrix start a subspace iteration on the matrix itself, accepted when every
 * ||A v_i - s_i u_i|| <= 1e-10 s_1 (1e-4 in float32), method DORA_SVD_GRAM; else
 * dora_svd_dense(a, k, k, 0) (LAPACK ?gesvdx), which is also this function's naive
 * twin. About a third of ?gesvdx's time on a 2048 x 2048 matrix. */
int dora_svd_top(dora_svd *out, const dora_dense *a, int64_t k, dora_err *err);

/* r90 in general form: the smallest k with s_1^2 + ... + s_k^2 >= frac * total
 * (total = ||dW||_F^2). 0 when total is 0, -1 when the ns values do not reach it. */
int64_t dora_energy_rank(const double *s, int64_t ns, double total, double frac);

/* ||dW||_F^2 / s1^2, 0 when s1 is 0. */
double dora_stable_rank(double fro2, double s1);

/* phi[(i-1) * k2 + (j-1)] = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j) for
 * 1 <= i <= k1, 1 <= j <= k2; u1 [m, k1] and u2 [m, k2] column-major with
 * orthonormal columns. */
int dora_subspace_phi(int64_t m, const double *u1, int64_t k1, const double *u2, int64_t k2,
                      double *phi, dora_err *err);

/* For each of the kt columns of ut ([m, kt], unit vectors) the largest |cos|
 * with the k0 columns of u0 ([m, k0], orthonormal) into maxcos[kt]; returns how
 * many are below threshold (the intruders), or -1 (out of memory). */
int64_t dora_intruders(int64_t m, const double *u0, int64_t k0, const double *ut, int64_t kt,
                       double threshold, double *maxcos);

/* ---------------------------------------------------------------- runs */

typedef struct dora_spectrum_opts {
    const regex_t *include;  /* keep module names matching this (NULL: all; filter.h) */
    const regex_t *exclude;  /* then drop names matching this (NULL: none) */
    int64_t top;             /* 0: every singular value; else store the top K */
    int64_t subspace;        /* K of phi: top singular vectors compared (1..DORA_SPEC_SUBSPACE_MAX) */
    double threshold;        /* intruder threshold on |cos|, in (0, 1] */
    int compare;             /* phi between every pair of runs */
    int randomized;          /* allow the randomised method for a small --top */
    int64_t f64_max_elems;   /* dense SVDs in float64 up to this many elements */
    int64_t dense_max_elems; /* dense matrices above this are left out (note) */
    int threads;             /* modules decomposed at once, each by single-threaded LAPACK
                              * (0: one per online CPU) */
    int64_t mem_bytes;       /* budget for the modules in flight (0: half the physical
                              * memory); a module that does not fit waits for others to
                              * finish, and one alone always runs */
    const char *cache_dir;   /* keep W0's SVDs here between commands (NULL: none) */
    dora_progress *progress; /* modules done, the module in the label (NULL: none) */
    /* with a base, modules are chosen as dora_analyze_run chooses them (analyze.h):
     * names aligned, Conv1D weights transposed, fused projections split */
    const char *const *renames; /* --rename rules (align.h), NULL for none */
    size_t nrenames;
    const char *transpose;   /* --transpose RE, NULL for none */
    int no_split;            /* --no-split: fused projections whole */
} dora_spectrum_opts;

/* Defaults: no filters, top 0, subspace 16, threshold 0.5, randomised allowed,
 * the two size limits above, threads and memory from the machine. */
void dora_spectrum_opts_init(dora_spectrum_opts *o);

typedef struct dora_spec_module {
    char *name;              /* base tensor name */
    int32_t layer;           /* dora_layer_index of the name */
    int64_t rows, cols;      /* out, in of dW */
    int32_t rank;            /* LoRA r, 0 for a dense update */
    const char *update;      /* "lora", "lora-part" (DoRA without base: s*B@A), "dora", "dense" */
    int32_t bits;            /* 64 or 32: arithmetic of the SVDs */
    int64_t nsigma;          /* singular values stored per step */
    double *sigma;           /* [S, nsigma]; for LoRA the values beyond r are 0 and not stored */
    double *intruder_cos;    /* [S, 10] largest |cos| of W_t's top vectors with W0's; -1 past
                              * min(10, rows, cols); NULL without the base */
    double *phi;             /* [P, K, K] phi grids of the run's step pairs, -1 where undefined */
    int32_t *phi_k;          /* [P, 2] subspace dimensions used for each side of a pair */
} dora_spec_module;

typedef struct dora_spec_run {
    char *name;
    const char *method;      /* "ft", "lora", "dora" (static) */
    char *source_path;
    size_t nsteps, nmodules, npairs;
    int64_t *steps;          /* [S] */
    char **step_paths;       /* [S] */
    dora_spec_module *mods;  /* [L], natural name order */
    double *fro_norm;        /* [S, L] ||dW||_F */
    double *sigma1;          /* [S, L] */
    int64_t *r90;            /* [S, L] */
    double *stable_rank;     /* [S, L] */
    int32_t *intruders;      /* [S, L], NULL without the base */
    int32_t *svd_method;     /* [S, L] dora_svd_method */
    double *phi_prev;        /* [S, L] phi(k, k) with the previous step; -1 undefined */
    double *phi_final;       /* [S, L] phi(k, k) with the final step; -1 undefined */
    int64_t *pairs;          /* [P, 2] step indexes: (t-1, t) for t = 1..S-1, then (t, S-1)
                              * for t = 0..S-3 */
} dora_spec_run;

/* phi between two runs, over the modules both have with the same shape, at the
 * step numbers both have and at their final steps. */
typedef struct dora_spec_compare {
    size_t run_a, run_b;     /* indexes into dora_spectrum.runs, a < b */
    size_t nmodules, npairs;
    char **modules;          /* [M] */
    int64_t *steps_a, *steps_b; /* [P] step numbers */
    double *phi;             /* [P, M] phi(k, k), k = min of both sides; -1 undefined */
    int32_t *k;              /* [P, M] that k (0 when undefined) */
    double **grid;           /* [M] -> [P, K, K] */
    /* internal: indexes of modules and steps in each run */
    size_t *mod_a, *mod_b;   /* [M] */
    size_t *idx_a, *idx_b;   /* [P] */
} dora_spec_compare;

typedef struct dora_spectrum {
    size_t nruns, ncompare;
    dora_spec_run *runs;
    dora_spec_compare *cmp;
    char *base_path;         /* NULL without the base */
    dora_spectrum_opts opts; /* as used (filters cleared) */
    size_t nnotes;
    char **notes;            /* remarks for the user (modules left out and why) */
} dora_spectrum;

/* Analyse the runs: NAMES[i] names RUNS[i]. BASE may be NULL (adapter-only:
 * LoRA updates only; intruders are not computed). Full-weight runs need the
 * base. On failure *sp is released. */
int dora_spectrum_run(dora_spectrum *sp, const dora_model *base, const char *base_path,
                      char *const *names, const dora_run *runs, size_t nruns,
                      const dora_spectrum_opts *opts, dora_err *err);
void dora_spectrum_release(dora_spectrum *sp);

/* Write the results file (layout: docs/hdf5.md, "spectrum") through a private
 * temporary (util_out) renamed over PATH when complete; removed on failure. */
int dora_spectrum_write(const char *path, const dora_spectrum *sp, const char *command_line,
                        dora_err *err);

/* Read back the summary of a results file of `spectrum` (results/spectrum_in.c):
 * the root's base_path, threshold, top and subspace (into sp->opts), every run
 * with its modules' names, layers, shapes, ranks, update kinds and precisions
 * and its [S, L] tables (fro_norm, sigma1, r90, stable_rank, svd_method,
 * intruders when the file has them, phi_prev, phi_final, phi_pairs), and every
 * /compare pair's modules, steps, phi and k. The per-module spectra and phi grids
 * are not read (their pointers stay NULL). The file is input: shapes, ranges
 * (phi in [-1, 1], r90 and intruders in [-1, min(rows, cols)], finite
 * non-negative norms) and ascending steps are checked, and an error names the
 * file and the dataset. Release with dora_spectrum_release. */
int dora_spectrum_read(const char *path, dora_spectrum *sp, dora_err *err);

#endif
