/* progress.c - the log lines of a batch on stderr and its progress bar; see
 * batch/engine.h. */
#define _GNU_SOURCE
#include "batch/engine.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

double batch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void batch_log(batch *b, const char *fmt, ...)
{
    pthread_mutex_lock(&b->log_lock);
    if (b->bar_drawn) {
        fputs("\r\033[K", stderr);
        b->bar_drawn = 0;
    }
    va_list ap;
    fputs("dora-analyze: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&b->log_lock);
}

static void human_bytes(double v, char *buf, size_t n)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void draw_bar(batch *b)
{
    size_t done = __atomic_load_n(&b->units_finished, __ATOMIC_RELAXED);
    uint64_t bytes = __atomic_load_n(&b->bytes_done, __ATOMIC_RELAXED);
    double el = batch_now() - b->t_work, rate = el > 0 ? (double)bytes / el : 0;
    char bd[32], bt[32], rt[32], left[32];
    human_bytes((double)bytes, bd, sizeof bd);
    human_bytes((double)b->bytes_total, bt, sizeof bt);
    human_bytes(rate, rt, sizeof rt);
    if (bytes > 0 && rate > 0) {
        double s = (double)(b->bytes_total - bytes) / rate;
        snprintf(left, sizeof left, "%d:%02d left", (int)(s / 60), (int)s % 60);
    } else {
        snprintf(left, sizeof left, "--:-- left");
    }
    char tail[200], total[32];
    int tw = snprintf(total, sizeof total, "%zu", b->nunits);
    snprintf(tail, sizeof tail, " %*zu/%s units  %9s/%s  %9s/s  %s", tw, done, total, bd, bt, rt,
             left);
    int cols = 80;
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        cols = ws.ws_col;
    int width = cols - (int)strlen(tail) - 3;
    if (width > 30)
        width = 30;
    char bar[64];
    int k = 0;
    if (width >= 5) {
        int fill = b->bytes_total ? (int)((double)width * (double)bytes / (double)b->bytes_total)
                                  : (b->nunits ? (int)(width * done / b->nunits) : width);
        if (fill > width)
            fill = width;
        bar[k++] = '[';
        for (int i = 0; i < width; i++)
            bar[k++] = i < fill ? '#' : '.';
        bar[k++] = ']';
    }
    bar[k] = '\0';
    fprintf(stderr, "\r\033[K%s%s", bar, tail);
    fflush(stderr);
    b->bar_drawn = 1;
}

void *batch_bar_thread(void *arg)
{
    batch *b = arg;
    pthread_mutex_lock(&b->log_lock);
    while (!b->stop_bar) {
        draw_bar(b);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->bar_cond, &b->log_lock, &ts);
    }
    if (b->bar_drawn) {
        fputs("\r\033[K", stderr);
        b->bar_drawn = 0;
    }
    pthread_mutex_unlock(&b->log_lock);
    return NULL;
}
