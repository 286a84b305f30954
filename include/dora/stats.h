/* stats.h - the regression of dM on dD behind the paper's Fig. 2.
 *
 * For one run and one module kind (the last component of the tensor name
 * before ".weight": "q_proj", "query", "c_attn"), the points are (dD, dM) for
 * every (layer, step). Least squares y = intercept + slope * x with x = dD,
 * y = dM; Pearson r over the same points; and the within-step Pearson r: the
 * same after centring the points of each step on that step's mean, which
 * removes the shared drift of dD and dM over training.
 *
 * Two-pass sums in float64. A regression needs n >= 2 and dD not constant;
 * r also needs dM not constant: otherwise it is undefined and marked so
 * (defined = 0, within_defined = 0), never reported as a number: its fields
 * hold 0 here (they are printed into gnuplot scripts), NaN in the results
 * file (h5out.c: the one place a NaN is written), NA in TSV and null in JSON.
 *
 * Uncertainty (issue #20), each with its own defined flag:
 * - the Fisher-z 95% interval of r: tanh(atanh r -+ z / sqrt(n - 3)), z the
 *   normal 97.5% quantile; needs r defined and n >= 4;
 * - Spearman's rho: Pearson r of the ranks, ties given their average rank;
 * - a layer-cluster bootstrap of r and of the within-step r: B replicates,
 *   each drawing `layers` modules with replacement and keeping all steps of
 *   each, then recomputing r (and the within-step r, centred on the drawn
 *   modules' step means; a replicate that draws one module m times has no
 *   within-step r); the interval is the 2.5% and 97.5% percentiles
 *   (linear interpolation between order statistics, NumPy's default) of the
 *   replicates whose r is defined. Undefined when the point estimate is, with
 *   fewer than 2 layers, or when fewer than half the replicates are defined.
 *   The draws come from splitmix64 (Steele, Lea and Flood, OOPSLA 2014),
 *   restarted from the seed for every regression (so an interval does not
 *   depend on the other runs or kinds of the file); a module index is
 *   z mod m, redrawing z < 2^64 mod m so every index is equally likely.
 */
#ifndef DORA_STATS_H
#define DORA_STATS_H

#include "dora/analyze.h"

#include <stddef.h>
#include <stdint.h>

#define DORA_BOOTSTRAP_DEFAULT 10000    /* replicates (--bootstrap) */
#define DORA_BOOTSTRAP_MIN 100          /* fewer leave the 2.5% tail a handful of values */
#define DORA_BOOTSTRAP_MAX 1000000
#define DORA_BOOTSTRAP_SEED UINT64_C(20240521) /* the default seed of splitmix64 */

/* How the intervals are computed; a zeroed struct (or NULL) means the defaults. */
typedef struct dora_stats_opts {
    long long bootstrap; /* replicates B, DORA_BOOTSTRAP_MIN..MAX; 0: the default */
    uint64_t seed;       /* 0: DORA_BOOTSTRAP_SEED */
} dora_stats_opts;

typedef struct dora_regression {
    char *run;         /* owned */
    char *kind;        /* owned */
    const char *method;
    long long n;       /* points */
    long long layers;  /* modules of this kind */
    int defined;       /* slope, intercept and r are numbers */
    double slope, intercept, r;
    int within_defined;
    double within_r;
    int fisher_defined;
    double fisher_ci[2];        /* Fisher-z 95% interval of r */
    int boot_defined;
    double boot_ci[2];          /* layer-cluster bootstrap 95% interval of r */
    int within_boot_defined;
    double within_boot_ci[2];   /* the same of within_r */
    int spearman_defined;
    double spearman_rho;
    long long bootstrap;        /* replicates B drawn */
    uint64_t seed;              /* splitmix64 seed of the draws */
} dora_regression;

/* Module kind of a tensor name, newly allocated: "model.layers.3.self_attn.q_proj.weight"
 * -> "q_proj". */
char *dora_module_kind(const char *name);

/* Least squares and Pearson over n points; returns 0 if defined, -1 if not. */
int dora_linfit(const double *x, const double *y, size_t n, double *slope, double *intercept,
                double *r);

/* The Fisher-z 95% interval of a Pearson R over N points into CI; 0, or -1
 * (CI zeroed) when N < 4 or R is not in [-1, 1]. */
int dora_fisher_ci(double r, long long n, double ci[2]);

/* Spearman's rho of N points (average ranks for ties); 0, or -1 when N < 2 or
 * either variable is constant. */
int dora_spearman(const double *x, const double *y, size_t n, double *rho);

/* splitmix64: the next value of the generator whose state is *STATE. */
uint64_t dora_splitmix64(uint64_t *state);

/* A uniform draw from [0, M) (M >= 1), by rejection (see above). */
uint64_t dora_draw_below(uint64_t *state, uint64_t m);

/* The P-quantile (0 <= P <= 1) of V[0..n) into *OUT, interpolated linearly between
 * order statistics (NumPy's default), found by selection in O(n) (V is reordered); the
 * same number as sorting V and interpolating. 0, or -1 (*OUT 0) when N is 0 or P is
 * outside [0, 1]. */
int dora_percentile(double *v, size_t n, double p, double *out);

/* The layer-cluster bootstrap of S steps x M layers of points (X[s * M + i],
 * Y[s * M + i]: layer i at step s) with B replicates from SEED: the percentile
 * 95% intervals of the pooled r into CI (*DEF 1 when defined) and of the
 * within-step r into WCI (*WDEF). -1 only when out of memory. */
int dora_cluster_bootstrap(const double *x, const double *y, size_t S, size_t m, long long b,
                           uint64_t seed, double ci[2], int *def, double wci[2], int *wdef);

/* One regression per (run, module kind), kinds in order of first appearance.
 * O(L log L + S * L) per run of L modules and S steps, whatever the number of
 * kinds. *out is allocated; free with dora_regressions_free. */
int dora_regressions(const dora_result *runs, size_t nruns, dora_regression **out, size_t *nout);
/* The same with the bootstrap of O (NULL: the defaults); -1 also when O's B is
 * outside DORA_BOOTSTRAP_MIN..MAX. */
int dora_regressions_opts(const dora_result *runs, size_t nruns, const dora_stats_opts *o,
                          dora_regression **out, size_t *nout);
void dora_regressions_free(dora_regression *r, size_t n);

#endif
