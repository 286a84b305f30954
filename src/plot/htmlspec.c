/* htmlspec.c - the report's spectral summary: what a `spectrum` results file
 * says about each run's updates at the final step, by module kind, and how
 * alike the runs' update subspaces are (html.h, html_spectrum). */
#define _POSIX_C_SOURCE 200809L
#include "dora/spectral.h"
#include "dora/stats.h"
#include "plot/html.h"

#include <stdlib.h>
#include <string.h>

/* The module kinds of run R, in first-seen order, as a NULL-terminated array
 * of owned strings, and KIND[l] the index of module l's kind. NULL when out of
 * memory. */
static char **kinds_of(const char *const *names, size_t L, size_t *kind, size_t *nk)
{
    char **v = calloc(L + 1, sizeof *v);
    *nk = 0;
    for (size_t l = 0; v && l < L; l++) {
        char *k = dora_module_kind(names[l]);
        if (!k) {
            for (size_t i = 0; i < *nk; i++)
                free(v[i]);
            free(v);
            return NULL;
        }
        size_t j = 0;
        while (j < *nk && strcmp(v[j], k) != 0)
            j++;
        if (j == *nk)
            v[(*nk)++] = k;
        else
            free(k);
        kind[l] = j;
    }
    return v;
}

static void free_kinds(char **v, size_t nk)
{
    for (size_t i = 0; v && i < nk; i++)
        free(v[i]);
    free(v);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The mean of the values of V (stride 1) over the modules of kind K whose value
 * is at least LO; *n gets how many there were. */
static double mean_of(const double *v, const size_t *kind, size_t L, size_t k, double lo,
                      size_t *n)
{
    double sum = 0;
    *n = 0;
    for (size_t l = 0; l < L; l++)
        if (kind[l] == k && v[l] >= lo) {
            sum += v[l];
            (*n)++;
        }
    return *n ? sum / (double)*n : 0;
}

/* A number cell of the mean of V over the modules of kind K (values >= 0; the
 * undefined ones are -1), NA when there is none or DEFINED is 0. */
static void mean_cell(FILE *f, const char *fmt, const double *v, const size_t *kind, size_t L,
                      size_t k, int defined)
{
    size_t n = 0;
    double m = mean_of(v, kind, L, k, 0, &n);
    html_num(f, fmt, m, defined && n > 0);
}

/* "median [min, max]" of r90 over the modules of kind K at one step (R90[L]),
 * with the number of modules whose r90 lies beyond the --top computed. */
static void r90_cell(FILE *f, const int64_t *r90, const size_t *kind, size_t L, size_t k,
                     int64_t *scratch, int64_t top)
{
    size_t n = 0, beyond = 0;
    for (size_t l = 0; l < L; l++)
        if (kind[l] == k) {
            if (r90[l] < 0)
                beyond++;
            else
                scratch[n++] = r90[l];
        }
    fputs("<td class=\"num\">", f);
    if (n) {
        qsort(scratch, n, sizeof *scratch, cmp_i64);
        /* the median of an even count is the mean of the middle two */
        double med = n % 2 ? (double)scratch[n / 2]
                           : 0.5 * (double)(scratch[n / 2 - 1] + scratch[n / 2]);
        fprintf(f, "%g [%lld, %lld]", med, (long long)scratch[0], (long long)scratch[n - 1]);
    } else {
        fputs("NA", f);
    }
    if (beyond)
        fprintf(f, " (%zu beyond the top %lld)", beyond, (long long)top);
    fputs("</td>", f);
}

/* One row per module kind of run R at its final step. */
static int run_rows(FILE *f, const dora_spectrum *sp, const dora_spec_run *r)
{
    const size_t L = r->nmodules, last = r->nsteps - 1;
    size_t *kind = calloc(L + 1, sizeof *kind), nk = 0;
    int64_t *scratch = calloc(L + 1, sizeof *scratch);
    char **names = calloc(L + 1, sizeof *names);
    for (size_t l = 0; names && l < L; l++)
        names[l] = r->mods[l].name;
    char **kv = kind && scratch && names ? kinds_of((const char *const *)names, L, kind, &nk)
                                         : NULL;
    if (!kv) {
        free(kind);
        free(scratch);
        free(names);
        return -1;
    }
    const double *fro = r->fro_norm + last * L, *s1 = r->sigma1 + last * L,
                 *sr = r->stable_rank + last * L, *prev = r->phi_prev + last * L,
                 *first = r->phi_final; /* step 0 against the final step */
    for (size_t k = 0; k < nk; k++) {
        size_t nmods = 0;
        long long intruders = 0;
        for (size_t l = 0; l < L; l++)
            if (kind[l] == k) {
                nmods++;
                intruders += r->intruders ? r->intruders[last * L + l] : 0;
            }
        fputs("<tr>", f);
        html_elem(f, "td", r->name);
        html_elem(f, "td", r->method);
        html_elem(f, "td", kv[k]);
        fprintf(f, "<td class=\"num\">%zu</td><td class=\"num\">%lld</td>", nmods,
                (long long)r->steps[last]);
        r90_cell(f, r->r90 + last * L, kind, L, k, scratch, sp->opts.top);
        mean_cell(f, "%.4g", sr, kind, L, k, 1);
        mean_cell(f, "%.4g", s1, kind, L, k, 1);
        mean_cell(f, "%.4g", fro, kind, L, k, 1);
        if (r->intruders)
            fprintf(f, "<td class=\"num\">%lld</td>", intruders);
        else
            fputs("<td>–</td>", f);
        mean_cell(f, "%.3f", prev, kind, L, k, last > 0);
        mean_cell(f, "%.3f", first, kind, L, k, last > 0);
        fputs("</tr>\n", f);
    }
    free_kinds(kv, nk);
    free(kind);
    free(scratch);
    free(names);
    return 0;
}

/* One row per module kind of compared pair CP at both runs' final steps. */
static int compare_rows(FILE *f, const dora_spectrum *sp, const dora_spec_compare *cp)
{
    if (cp->npairs == 0 || cp->nmodules == 0)
        return 0;
    const size_t M = cp->nmodules, p = cp->npairs - 1;
    size_t *kind = calloc(M + 1, sizeof *kind), nk = 0;
    char **kv = kind ? kinds_of((const char *const *)cp->modules, M, kind, &nk) : NULL;
    if (!kv) {
        free(kind);
        return -1;
    }
    for (size_t k = 0; k < nk; k++) {
        size_t n = 0, nmods = 0;
        for (size_t m = 0; m < M; m++)
            nmods += kind[m] == k;
        fputs("<tr>", f);
        html_elem(f, "td", sp->runs[cp->run_a].name);
        html_elem(f, "td", sp->runs[cp->run_b].name);
        html_elem(f, "td", kv[k]);
        fprintf(f, "<td class=\"num\">%zu</td><td class=\"num\">%lld / %lld</td>", nmods,
                (long long)cp->steps_a[p], (long long)cp->steps_b[p]);
        double phi = mean_of(cp->phi + p * M, kind, M, k, 0, &n);
        html_num(f, "%.3f", phi, n > 0);
        fprintf(f, "<td class=\"num\">%zu</td></tr>\n", n);
    }
    free_kinds(kv, nk);
    free(kind);
    return 0;
}

int html_spectrum(FILE *f, const char *path, const dora_spectrum *sp)
{
    fputs("<h2 id=\"spectrum\">Spectrum of the updates</h2>\n<p class=\"note\">From ", f);
    fputs("<code>", f);
    html_text(f, path);
    fputs("</code> (<code>dora-analyze spectrum</code>", f);
    if (sp->base_path) {
        fputs(", base <code>", f);
        html_text(f, sp->base_path);
        fputs("</code>", f);
    }
    fprintf(f, "), at each run's final step, by module kind: r90 (singular values that hold 90%% "
               "of ‖ΔW‖²<sub>F</sub>), median and range over the modules; the means of the "
               "stable rank ‖ΔW‖²<sub>F</sub>/σ₁², σ₁ and ‖ΔW‖<sub>F</sub>; the intruder "
               "dimensions summed over the modules (top 10 singular vectors of W<sub>t</sub> "
               "whose largest |cos| with W<sub>0</sub>'s is below %g; with the base only); "
               "φ, the similarity of the top-%lld subspaces of the update (1 the same, 0 "
               "orthogonal), with the previous checkpoint and between the first checkpoint "
               "and the final one, averaged where defined.</p>\n",
            sp->opts.threshold, (long long)sp->opts.subspace);
    fputs("<table class=\"spectrum\">\n<tr><th>run</th><th>method</th><th>module kind</th>"
          "<th>modules</th><th>step</th><th>r90</th><th>stable rank</th><th>σ₁</th>"
          "<th>‖ΔW‖<sub>F</sub></th><th>intruders</th><th>φ previous</th>"
          "<th>φ first–final</th></tr>\n",
          f);
    for (size_t i = 0; i < sp->nruns; i++)
        if (run_rows(f, sp, &sp->runs[i]) != 0)
            return -1;
    fputs("</table>\n", f);
    if (sp->ncompare == 0)
        return 0;
    fputs("<p class=\"note\">Between runs, at both runs' final steps: φ of the top subspaces "
          "of the two updates, averaged over the modules both runs have with the same shape "
          "(n: modules where it is defined).</p>\n<table class=\"spectrum-compare\">\n<tr>"
          "<th>run A</th><th>run B</th><th>module kind</th><th>modules</th><th>steps</th>"
          "<th>φ</th><th>n</th></tr>\n",
          f);
    for (size_t i = 0; i < sp->ncompare; i++)
        if (compare_rows(f, sp, &sp->cmp[i]) != 0)
            return -1;
    fputs("</table>\n", f);
    return 0;
}
