/* figures.c - a study's figures, drawn through the plot library (plot.h); see
 * batch/engine.h. */
#define _POSIX_C_SOURCE 200809L
#include "batch/engine.h"
#include "batch/common.h"
#include "dora/plot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The figures of study S from its results file, as `dora-analyze plot OUT -o
 * DIR --format F [--modules K]` draws them. A failure is kept in the report
 * with the text plot would have printed: its notes, then its error. */
void batch_draw_figures(batch *b, study_state *s)
{
    (void)b;
    dora_study *st = s->st;
    char m[8192];
    if (batch_mkdir_p(st->fig_dir) != 0) {
        s->rep.figures = DORA_FIG_FAILED;
        snprintf(m, sizeof m, "'%s': cannot create: %s", st->fig_dir, strerror(errno));
        s->rep.figures_message = strdup(m);
        return;
    }
    dora_plot_opts o = {.kinds = st->fig_kinds, .formats = st->fig_formats,
                        .outdir = st->fig_dir, .templates = NULL, .stats = &b->stats,
                        .regs = s->written ? s->regs : NULL, .nregs = s->nregs};
    dora_plot_report rep = {0};
    dora_err err = {{0}, 0};
    if (dora_plot_figures(s->out, &o, &rep, &err) == 0) {
        s->rep.figures = DORA_FIG_DRAWN;
        snprintf(m, sizeof m, "%s (%s)", st->fig_dir, st->fig_formats);
    } else {
        s->rep.figures = DORA_FIG_FAILED;
        size_t u = (size_t)snprintf(m, sizeof m, "plot failed: ");
        for (size_t i = 0; i < rep.nnotes && u < sizeof m; i++)
            u += (size_t)snprintf(m + u, sizeof m - u, "dora-analyze: note: %s\n", rep.notes[i]);
        if (u < sizeof m)
            snprintf(m + u, sizeof m - u, "dora-analyze: error: %s", err.msg);
    }
    s->rep.figures_message = strdup(m);
    dora_plot_report_release(&rep);
}
