/* progress.h - how far a long pass has come, for a progress line.
 *
 * The library never prints: a long call (dora_analyze_runs, dora_spectrum_run,
 * dora_merge_shards, dora_batch_run) advances the counters of the
 * dora_progress its caller passes (NULL: none), and the caller reads them from
 * a ticker thread (dora_ticker) a few times a second to draw a line of its
 * own (dora_progress_line). The counters are atomic and advanced once per work
 * unit (a chunk of rows, a module, a step), never per row; the label (what is
 * being worked on) is taken under a lock, once per run, module or step.
 */
#ifndef DORA_PROGRESS_H
#define DORA_PROGRESS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dora_progress {
    uint64_t bytes_total; /* atomic: bytes the pass will read (grows as inputs open) */
    uint64_t bytes_done;  /* atomic: bytes read so far */
    size_t units_total;   /* atomic: units of UNIT_WORD to do; 0: no unit count shown */
    size_t units_done;    /* atomic */
    const char *unit_word; /* "units", "steps" (static) */
    int active;           /* atomic: the pass runs (dora_progress_begin .. _end): the
                             line is worth drawing */
    double t_start;       /* dora_now() when the pass began */
    pthread_mutex_t lock; /* the label */
    char label[192];      /* "run 'ft' step 400", or "" */
} dora_progress;

/* Zeroed counters, UNIT_WORD (static), the clock started. */
void dora_progress_init(dora_progress *p, const char *unit_word);
void dora_progress_release(dora_progress *p);
/* The counters; each does nothing when P is NULL. */
void dora_progress_add_total(dora_progress *p, uint64_t bytes, size_t units);
void dora_progress_add_done(dora_progress *p, uint64_t bytes, size_t units);
/* The pass begins (the clock of the rate starts) and ends; nothing when P is
 * NULL. Outside them a caller draws no line (planning, writing results). */
void dora_progress_begin(dora_progress *p);
void dora_progress_end(dora_progress *p);
/* 1 between dora_progress_begin and dora_progress_end. */
int dora_progress_active(dora_progress *p);
/* The label, printf-style, truncated to fit. */
void dora_progress_label(dora_progress *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* One line of at most COLS - 1 characters into BUF (of size N):
 * "[####....] 3/12 steps  1.2 GiB/4.0 GiB  310.5 MiB/s  0:09 left  run 'ft' step 400"
 * (the bar only when it fits, the unit count only with units_total > 0). */
void dora_progress_line(dora_progress *p, int cols, char *buf, size_t n);

/* Seconds on the monotonic clock. */
double dora_now(void);
/* "1.2 GiB", "512 B": V bytes in binary units, one decimal. */
void dora_human_bytes(double v, char *buf, size_t n);

/* A thread calling FN(CTX) every MS milliseconds (first at once) until
 * dora_ticker_stop, which wakes it, waits for it and returns after its last
 * call. */
typedef struct dora_ticker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int running, stop;
    long ms;
    void (*fn)(void *ctx);
    void *ctx;
} dora_ticker;

/* 0, or -1 when the thread cannot be started (nothing to stop then). */
int dora_ticker_start(dora_ticker *t, long ms, void (*fn)(void *ctx), void *ctx);
void dora_ticker_stop(dora_ticker *t);

#endif
