/* term.c - what a long command shows on stderr while it runs: the progress
 * line (redrawn by a ticker thread from the library's counters), log lines
 * that clear it first, and the summary line at the end. See cli.h. */
#define _GNU_SOURCE
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int cli_parse_progress(const char *cmd, const char *when, int *mode)
{
    static const char *const names[] = {"auto", "always", "never"};
    for (int i = 0; i < 3; i++)
        if (strcmp(when, names[i]) == 0) {
            *mode = i;
            return -1;
        }
    return cli_usage_error(cmd, "--progress wants auto, always or never, not '%s'", when);
}

int cli_progress_shown(int mode, int quiet)
{
    return mode == CLI_PROGRESS_ALWAYS || (mode == CLI_PROGRESS_AUTO && !quiet && isatty(2));
}

/* The line, redrawn in place; called with T->lock held. */
static void draw(cli_term *t)
{
    int cols = 80;
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        cols = ws.ws_col;
    char line[512];
    dora_progress_line(&t->prog, cols, line, sizeof line);
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    t->drawn = t->ever = 1;
}

static void clear(cli_term *t)
{
    if (t->drawn) {
        fputs("\r\033[K", stderr);
        t->drawn = 0;
    }
}

static void tick(void *ctx)
{
    cli_term *t = ctx;
    pthread_mutex_lock(&t->lock);
    /* polled often, so that even a short pass gets its line, and redrawn
     * every 250 ms */
    if (t->stopped || !dora_progress_active(&t->prog)) {
        clear(t);
    } else {
        double now = dora_now();
        if (!t->drawn || now - t->last_draw >= 0.25) {
            draw(t);
            t->last_draw = now;
        }
    }
    pthread_mutex_unlock(&t->lock);
}

void cli_term_init(cli_term *t, int show, const char *unit_word)
{
    memset(t, 0, sizeof *t);
    t->show = show;
    t->t0 = dora_now();
    dora_progress_init(&t->prog, unit_word);
    pthread_mutex_init(&t->lock, NULL);
}

void cli_term_start(cli_term *t)
{
    if (t->show && !t->tick.running)
        dora_ticker_start(&t->tick, 50, tick, t); /* no line if no thread: still correct */
}

void cli_term_stop(cli_term *t)
{
    pthread_mutex_lock(&t->lock);
    if (t->show && !t->stopped && !t->ever &&
        (__atomic_load_n(&t->prog.units_total, __ATOMIC_RELAXED) ||
         __atomic_load_n(&t->prog.bytes_total, __ATOMIC_RELAXED)))
        draw(t); /* too short for a tick: its line once, as it ended */
    t->stopped = 1; /* a tick after this draws nothing */
    clear(t);
    pthread_mutex_unlock(&t->lock);
    dora_ticker_stop(&t->tick);
}

void cli_term_release(cli_term *t)
{
    cli_term_stop(t);
    dora_progress_release(&t->prog);
    pthread_mutex_destroy(&t->lock);
}

void cli_term_line(void *ctx, const char *line)
{
    cli_term *t = ctx;
    pthread_mutex_lock(&t->lock);
    clear(t);
    fprintf(stderr, "dora-analyze: %s\n", line);
    pthread_mutex_unlock(&t->lock);
}

void cli_term_summary(cli_term *t, const char *out, const char *fmt, ...)
{
    char what[512], bytes[48] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    uint64_t n = __atomic_load_n(&t->prog.bytes_done, __ATOMIC_RELAXED);
    if (n > 0) {
        char h[32];
        dora_human_bytes((double)n, h, sizeof h);
        snprintf(bytes, sizeof bytes, ", %s read", h);
    }
    pthread_mutex_lock(&t->lock);
    clear(t);
    fprintf(stderr, "dora-analyze: wrote %s: %s%s in %.1f s\n", out, what, bytes,
            dora_now() - t->t0);
    pthread_mutex_unlock(&t->lock);
}
