/* The progress counters and their line (core/progress.c): the batch's line
 * as it was drawn before the counters moved to core, a line counted in units
 * only, the label, truncation to the terminal's width, and the ticker: it
 * calls back at once and stops when told. */
#define _POSIX_C_SOURCE 200809L
#include "dora/progress.h"
#include "unit.h"

#include <string.h>
#include <time.h>

static void bytes_line(void)
{
    dora_progress p;
    dora_progress_init(&p, "units");
    dora_progress_add_total(&p, 4u << 20, 10);
    dora_progress_add_done(&p, 1u << 20, 3);
    p.t_start = dora_now() - 2.0; /* 1 MiB in 2 s: 3 MiB left at 512 KiB/s, 0:06 */
    char line[256];
    dora_progress_line(&p, 200, line, sizeof line);
    CHECK_MSG(strcmp(line, "[#######.......................]  3/10 units    1.0 MiB/4.0 MiB  "
                           "512.0 KiB/s  0:06 left") == 0,
              "'%s'", line);
    dora_progress_label(&p, "run '%s': %d step(s)", "ft", 4);
    dora_progress_line(&p, 200, line, sizeof line);
    CHECK_MSG(strstr(line, "0:06 left  run 'ft': 4 step(s)") != NULL, "'%s'", line);
    dora_progress_line(&p, 40, line, sizeof line); /* no bar, cut to the width */
    CHECK_MSG(strlen(line) == 39 && line[0] == ' ', "'%s'", line);
    dora_progress_release(&p);
}

static void units_line(void)
{
    dora_progress p;
    dora_progress_init(&p, "modules");
    dora_progress_add_total(&p, 0, 8);
    dora_progress_add_done(&p, 0, 2);
    p.t_start = dora_now() - 3.0; /* 2 in 3 s: 6 left, 0:09 */
    char line[256];
    dora_progress_line(&p, 200, line, sizeof line);
    CHECK_MSG(strstr(line, "] 2/8 modules  0:09 left") != NULL && !strstr(line, " B"), "'%s'",
              line);
    CHECK(!dora_progress_active(&p));
    dora_progress_begin(&p);
    CHECK(dora_progress_active(&p));
    dora_progress_end(&p);
    CHECK(!dora_progress_active(&p));
    /* NULL counters: every call does nothing */
    dora_progress_add_total(NULL, 1, 1);
    dora_progress_add_done(NULL, 1, 1);
    dora_progress_begin(NULL);
    dora_progress_label(NULL, "x");
    CHECK(!dora_progress_active(NULL));
    dora_progress_release(&p);
}

static void count(void *ctx)
{
    __atomic_add_fetch((int *)ctx, 1, __ATOMIC_RELAXED);
}

static void ticker(void)
{
    int calls = 0;
    dora_ticker t;
    CHECK(dora_ticker_start(&t, 20, count, &calls) == 0);
    struct timespec ts = {0, 110 * 1000000L};
    nanosleep(&ts, NULL);
    dora_ticker_stop(&t);
    int n = __atomic_load_n(&calls, __ATOMIC_RELAXED);
    CHECK_MSG(n >= 1 && n <= 8, "%d calls in 110 ms at 20 ms", n); /* loaded machines: >= 1 */
    nanosleep(&ts, NULL);
    CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == n); /* stopped */
    dora_ticker_stop(&t);                                   /* twice: nothing */
    char h[32];
    dora_human_bytes(1536, h, sizeof h);
    CHECK(strcmp(h, "1.5 KiB") == 0);
    dora_human_bytes(512, h, sizeof h);
    CHECK(strcmp(h, "512 B") == 0);
}

int main(void)
{
    bytes_line();
    units_line();
    ticker();
    return unit_summary("test_progress");
}
