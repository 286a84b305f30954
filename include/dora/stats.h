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
 */
#ifndef DORA_STATS_H
#define DORA_STATS_H

#include "dora/analyze.h"

#include <stddef.h>

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
} dora_regression;

/* Module kind of a tensor name, newly allocated: "model.layers.3.self_attn.q_proj.weight"
 * -> "q_proj". */
char *dora_module_kind(const char *name);

/* Least squares and Pearson over n points; returns 0 if defined, -1 if not. */
int dora_linfit(const double *x, const double *y, size_t n, double *slope, double *intercept,
                double *r);

/* One regression per (run, module kind), kinds in order of first appearance.
 * O(L log L + S * L) per run of L modules and S steps, whatever the number of
 * kinds. *out is allocated; free with dora_regressions_free. */
int dora_regressions(const dora_result *runs, size_t nruns, dora_regression **out, size_t *nout);
void dora_regressions_free(dora_regression *r, size_t n);

#endif
