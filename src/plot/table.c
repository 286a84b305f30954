/* table.c - the regression table of a study (dora_plot_stats): TSV or JSON. */
#include "dora/plot.h"
#include "dora/geom.h"
#include "dora/tidy.h"
#include "plot/draw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* S as a JSON string: quotes and backslashes escaped, control bytes as \u00XX
 * (names come from tensor names and run arguments, which may hold any byte). */
static void json_str(FILE *out, const char *s)
{
    putc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(out, "\\u%04x", *c);
        else
            putc(*c, out);
    }
    putc('"', out);
}

/* The intervals and rho of a row, in the order of both tables. */
typedef struct row_ci {
    const char *name;
    int defined;
    const double *v; /* [2] */
} row_ci;

static void row_cis(const dora_regression *g, row_ci ci[3])
{
    ci[0] = (row_ci){"pearson_r_ci_fisher", g->fisher_defined, g->fisher_ci};
    ci[1] = (row_ci){"pearson_r_ci_bootstrap", g->boot_defined, g->boot_ci};
    ci[2] = (row_ci){"within_step_r_ci_bootstrap", g->within_boot_defined, g->within_boot_ci};
}

/* ", NAME: [lo, hi]" for each interval, then rho and B. */
static void json_uncertainty(FILE *out, const dora_regression *g)
{
    row_ci ci[3];
    row_cis(g, ci);
    for (int k = 0; k < 3; k++)
        if (ci[k].defined)
            fprintf(out, ", \"%s\": [%.17g, %.17g]", ci[k].name, ci[k].v[0], ci[k].v[1]);
        else
            fprintf(out, ", \"%s\": null", ci[k].name);
    if (g->spearman_defined)
        fprintf(out, ", \"spearman_rho\": %.17g", g->spearman_rho);
    else
        fprintf(out, ", \"spearman_rho\": null");
    fprintf(out, ", \"bootstrap\": %lld", g->bootstrap);
}

/* "\tLO\tHI" for each interval, then "\tRHO" (NA when undefined). */
static void tsv_uncertainty(FILE *out, const dora_regression *g)
{
    row_ci ci[3];
    row_cis(g, ci);
    for (int k = 0; k < 3; k++)
        if (ci[k].defined)
            fprintf(out, "\t%.17g\t%.17g", ci[k].v[0], ci[k].v[1]);
        else
            fprintf(out, "\tNA\tNA");
    if (g->spearman_defined)
        fprintf(out, "\t%.17g", g->spearman_rho);
    else
        fprintf(out, "\tNA");
}

/* dM / dM_passive of each row (geom.h) as text: "%.17g", or UNDEF. */
static void ratio_text(char *buf, size_t len, const double *ratio, size_t i, const char *undef)
{
    if (ratio[i] >= 0)
        snprintf(buf, len, "%.17g", ratio[i]);
    else
        snprintf(buf, len, "%s", undef);
}

/* Undefined values (the defined flags 0) are null: JSON has no NaN. */
static void write_json(FILE *out, const dora_regression *const *g, size_t n, const double *ratio)
{
    char rt[64];
    fprintf(out, "[");
    for (size_t i = 0; i < n; i++) {
        fprintf(out, "%s\n  {\"run\": ", i ? "," : "");
        json_str(out, g[i]->run);
        fprintf(out, ", \"method\": ");
        json_str(out, g[i]->method);
        fprintf(out, ", \"module_kind\": ");
        json_str(out, g[i]->kind);
        fprintf(out, ", \"n\": %lld, \"layers\": %lld, ", g[i]->n, g[i]->layers);
        if (g[i]->defined)
            fprintf(out, "\"slope\": %.17g, \"intercept\": %.17g, \"pearson_r\": %.17g, ",
                    g[i]->slope, g[i]->intercept, g[i]->r);
        else
            fprintf(out, "\"slope\": null, \"intercept\": null, \"pearson_r\": null, ");
        if (g[i]->within_defined)
            fprintf(out, "\"within_step_r\": %.17g", g[i]->within_r);
        else
            fprintf(out, "\"within_step_r\": null");
        json_uncertainty(out, g[i]);
        ratio_text(rt, sizeof rt, ratio, i, "null");
        fprintf(out, ", \"dm_over_passive\": %s}", rt);
    }
    fprintf(out, "\n]\n");
}

/* Undefined values (the defined flags 0) are NA. */
static void write_tsv(FILE *out, const dora_regression *const *g, size_t n, const double *ratio)
{
    char rt[64];
    fprintf(out, "run\tmethod\tmodule_kind\tn\tlayers\tslope\tintercept\tpearson_r\t"
                 "within_step_r\tpearson_r_ci_fisher_lo\tpearson_r_ci_fisher_hi\t"
                 "pearson_r_ci_bootstrap_lo\tpearson_r_ci_bootstrap_hi\t"
                 "within_step_r_ci_bootstrap_lo\twithin_step_r_ci_bootstrap_hi\tspearman_rho\t"
                 "dm_over_passive\n");
    for (size_t i = 0; i < n; i++) {
        dora_tidy_field(out, g[i]->run, 0);
        fprintf(out, "\t%s\t", g[i]->method);
        dora_tidy_field(out, g[i]->kind, 0);
        fprintf(out, "\t%lld\t%lld\t", g[i]->n, g[i]->layers);
        if (g[i]->defined)
            fprintf(out, "%.17g\t%.17g\t%.17g\t", g[i]->slope, g[i]->intercept, g[i]->r);
        else
            fprintf(out, "NA\tNA\tNA\t");
        if (g[i]->within_defined)
            fprintf(out, "%.17g", g[i]->within_r);
        else
            fprintf(out, "NA");
        tsv_uncertainty(out, g[i]);
        ratio_text(rt, sizeof rt, ratio, i, "NA");
        fprintf(out, "\t%s\n", rt);
    }
}

int dora_plot_stats(FILE *out, const dora_plot_study *s, const char *kinds, int json,
                    dora_err *err)
{
    size_t nk = 0, n = 0;
    char **want = kinds ? plot_list_split(kinds, &nk) : NULL;
    const dora_regression **rows = calloc(s->nregs + 1, sizeof *rows);
    double *ratio = calloc(s->nregs + 1, sizeof *ratio);
    if ((kinds && !want) || !rows || !ratio) {
        plot_list_free(want);
        free(rows);
        free(ratio);
        return dora_errf(err, "out of memory");
    }
    for (size_t i = 0; i < s->nregs; i++) {
        int hit = !kinds;
        for (size_t k = 0; k < nk; k++)
            hit |= strcmp(s->regs[i].kind, want[k]) == 0;
        if (hit)
            rows[n++] = &s->regs[i];
    }
    /* every row of the study's table, then those kept */
    double *all = calloc(s->nregs + 1, sizeof *all);
    int *ok = calloc(s->nregs + 1, sizeof *ok);
    if (!all || !ok || dora_passive_ratios(s->runs, s->nruns, s->regs, s->nregs, all, ok) != 0) {
        plot_list_free(want);
        free(rows);
        free(ratio);
        free(all);
        free(ok);
        return dora_errf(err, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        size_t at = (size_t)(rows[i] - s->regs);
        ratio[i] = ok[at] ? all[at] : -1; /* undefined: NA / null */
    }
    free(all);
    free(ok);
    if (json)
        write_json(out, rows, n, ratio);
    else
        write_tsv(out, rows, n, ratio);
    plot_list_free(want);
    free(rows);
    free(ratio);
    return 0;
}
