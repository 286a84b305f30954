/* geom.c - dM / dM_passive per run and module kind; see include/dora/geom.h. */
#include "dora/geom.h"
#include "dora/stats.h"

#include <stdlib.h>
#include <string.h>

int dora_passive_ratio(const dora_result *run, const char *kind, double *ratio)
{
    *ratio = 0.0;
    if (!run->delta_m_passive)
        return -1;
    const size_t S = run->nsteps, L = run->nmodules;
    double dm = 0.0, pm = 0.0;
    size_t hits = 0;
    for (size_t l = 0; l < L; l++) {
        char *k = dora_module_kind(run->modules[l]);
        if (!k)
            return -2;
        int hit = strcmp(k, kind) == 0;
        free(k);
        if (!hit)
            continue;
        hits++;
        for (size_t s = 0; s < S; s++) {
            dm += run->delta_m[s * L + l];
            pm += run->delta_m_passive[s * L + l];
        }
    }
    if (!hits || !(pm > 0.0))
        return -1;
    *ratio = dm / pm;
    return 0;
}
