/* progress.c - progress counters, the progress line and a ticker thread; see
 * include/dora/progress.h. */
#define _GNU_SOURCE
#include "dora/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

double dora_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dora_progress_init(dora_progress *p, const char *unit_word)
{
    memset(p, 0, sizeof *p);
    p->unit_word = unit_word;
    p->t_start = dora_now();
    pthread_mutex_init(&p->lock, NULL);
}

void dora_progress_release(dora_progress *p)
{
    pthread_mutex_destroy(&p->lock);
}

void dora_progress_add_total(dora_progress *p, uint64_t bytes, size_t units)
{
    if (!p)
        return;
    __atomic_add_fetch(&p->bytes_total, bytes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->units_total, units, __ATOMIC_RELAXED);
}

void dora_progress_add_done(dora_progress *p, uint64_t bytes, size_t units)
{
    if (!p)
        return;
    __atomic_add_fetch(&p->bytes_done, bytes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->units_done, units, __ATOMIC_RELAXED);
}

void dora_progress_begin(dora_progress *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->t_start = dora_now();
    pthread_mutex_unlock(&p->lock);
    __atomic_store_n(&p->active, 1, __ATOMIC_RELEASE);
}

void dora_progress_end(dora_progress *p)
{
    if (p)
        __atomic_store_n(&p->active, 0, __ATOMIC_RELEASE);
}

int dora_progress_active(dora_progress *p)
{
    return p && __atomic_load_n(&p->active, __ATOMIC_ACQUIRE);
}

void dora_progress_label(dora_progress *p, const char *fmt, ...)
{
    if (!p)
        return;
    va_list ap;
    pthread_mutex_lock(&p->lock);
    va_start(ap, fmt);
    vsnprintf(p->label, sizeof p->label, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&p->lock);
}

void dora_human_bytes(double v, char *buf, size_t n)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* "[####......]" of WIDTH inner characters for FRACTION (0..1) into BAR. */
static void draw_bar(char *bar, int width, double fraction)
{
    int fill = (int)((double)width * fraction), k = 0;
    if (fill > width)
        fill = width;
    bar[k++] = '[';
    for (int i = 0; i < width; i++)
        bar[k++] = i < fill ? '#' : '.';
    bar[k++] = ']';
    bar[k] = '\0';
}

void dora_progress_line(dora_progress *p, int cols, char *buf, size_t n)
{
    size_t done = __atomic_load_n(&p->units_done, __ATOMIC_RELAXED);
    size_t units = __atomic_load_n(&p->units_total, __ATOMIC_RELAXED);
    uint64_t bytes = __atomic_load_n(&p->bytes_done, __ATOMIC_RELAXED);
    uint64_t total = __atomic_load_n(&p->bytes_total, __ATOMIC_RELAXED);
    char label[sizeof p->label];
    pthread_mutex_lock(&p->lock);
    double el = dora_now() - p->t_start;
    memcpy(label, p->label, sizeof label);
    pthread_mutex_unlock(&p->lock);
    double rate = el > 0 ? (double)bytes / el : 0, s = -1;
    char amount[128] = "", left[32], count[80] = "";
    if (total || bytes) { /* counted in bytes */
        char bd[32], bt[32], rt[32];
        dora_human_bytes((double)bytes, bd, sizeof bd);
        dora_human_bytes((double)total, bt, sizeof bt);
        dora_human_bytes(rate, rt, sizeof rt);
        snprintf(amount, sizeof amount, " %9s/%s  %9s/s ", bd, bt, rt);
        if (bytes > 0 && rate > 0 && total >= bytes)
            s = (double)(total - bytes) / rate;
    } else if (done > 0 && units >= done) { /* in units only */
        s = (double)(units - done) * el / (double)done;
    }
    if (s >= 0)
        snprintf(left, sizeof left, "%d:%02d left", (int)(s / 60), (int)s % 60);
    else
        snprintf(left, sizeof left, "--:-- left");
    if (units) {
        char tot[32];
        int tw = snprintf(tot, sizeof tot, "%zu", units);
        snprintf(count, sizeof count, " %*zu/%s %s ", tw, done, tot, p->unit_word);
    }
    char tail[448]; /* count + amount + left + label, each bounded */
    snprintf(tail, sizeof tail, "%s%s %s%s%s", count, amount, left, label[0] ? "  " : "", label);
    int width = cols - (int)strlen(tail) - 3;
    if (width > 30)
        width = 30;
    char bar[40] = "";
    if (width >= 5)
        draw_bar(bar, width, total ? (double)bytes / (double)total
                                   : (units ? (double)done / (double)units : 1));
    snprintf(buf, n, "%s%s", bar, tail);
    if (cols > 1 && strlen(buf) >= (size_t)cols)
        buf[cols - 1] = '\0';
}

static void *ticker_main(void *arg)
{
    dora_ticker *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        pthread_mutex_unlock(&t->lock);
        t->fn(t->ctx);
        pthread_mutex_lock(&t->lock);
        if (t->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += t->ms % 1000 * 1000000L;
        ts.tv_sec += t->ms / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&t->cond, &t->lock, &ts);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int dora_ticker_start(dora_ticker *t, long ms, void (*fn)(void *ctx), void *ctx)
{
    memset(t, 0, sizeof *t);
    t->ms = ms;
    t->fn = fn;
    t->ctx = ctx;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->cond);
        return -1;
    }
    t->running = 1;
    return 0;
}

void dora_ticker_stop(dora_ticker *t)
{
    if (!t->running)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    t->running = 0;
}
