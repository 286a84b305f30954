/* geom.h - where magnitude change comes from, summarised per run and module
 * kind (the per-row split is kernel.h's, the per-module means analyze.h's
 * delta_m_passive and delta_m_active).
 *
 * The ratio of a run and kind is
 *
 *     dM / dM_passive = sum_(layer, step) delta_m / sum_(layer, step) delta_m_passive
 *
 * over the same points as the kind's regression (stats.h): every module of
 * the kind at every step, i.e. the mean of delta_m over those points divided
 * by the mean of delta_m_passive. Near 1: the magnitude change is what the
 * rotation forces; well above 1: the update changes lengths of its own (weight
 * decay, a trained magnitude vector); below 1: the update shortens rows while
 * it turns them.
 */
#ifndef DORA_GEOM_H
#define DORA_GEOM_H

#include "dora/analyze.h"
#include "dora/stats.h"

/* The ratio above for the modules of RUN whose kind (dora_module_kind) is
 * KIND, into *RATIO. 0 when defined; -1 (and *RATIO = 0) when RUN has no
 * delta_m_passive (a file written before it), no module of KIND, or a passive
 * sum of 0 (no row turned); -2 when out of memory. */
int dora_passive_ratio(const dora_result *run, const char *kind, double *ratio);

/* The ratio of each of the N regression rows REGS (stats.h: their run and kind)
 * over the NRUNS runs, into RATIO[i], with DEFINED[i] 1 when it is defined (as
 * above; else 0 and RATIO[i] = 0). O(L log L) per run, whatever the number of
 * kinds. 0, or -1 when out of memory. */
int dora_passive_ratios(const dora_result *runs, size_t nruns, const dora_regression *regs,
                        size_t n, double *ratio, int *defined);

#endif
