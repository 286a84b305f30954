/* guard.c - SIGBUS on truncated mappings turned into an error; see guard.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/guard.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

static _Thread_local sigjmp_buf *volatile guard_env;
static _Thread_local const void *volatile guard_addr;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_rc = -1;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    sigjmp_buf *env = guard_env;
    if (env) {
        guard_addr = si->si_addr;
        guard_env = NULL;
        siglongjmp(*env, 1);
    }
    /* not ours: die of it as if no handler were set */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    guard_rc = sigaction(SIGBUS, &sa, NULL);
}

int dora_guard_install(void)
{
    pthread_once(&guard_once, install);
    return guard_rc;
}

void dora_guard_enter(sigjmp_buf *env)
{
    guard_env = env;
}

void dora_guard_leave(void)
{
    guard_env = NULL;
}

const void *dora_guard_fault(void)
{
    return guard_addr;
}

int dora_guard_run(void (*fn)(void *ctx), void *ctx, const void **fault)
{
    if (fault)
        *fault = NULL;
    if (dora_guard_install() != 0)
        return -1;
    sigjmp_buf env;
    sigjmp_buf *volatile outer = guard_env;
    /* no mask to save (one syscall less per call, and zsrc makes one call per
     * libzip read): with SA_NODEFER and an empty sa_mask the handler runs with
     * the thread's own mask, which the jump therefore leaves as it was */
    if (sigsetjmp(env, 0) == 0) {
        guard_env = &env;
        fn(ctx);
        guard_env = outer;
        return 0;
    }
    guard_env = outer;
    if (fault)
        *fault = guard_addr;
    return 1;
}

typedef struct differ_ctx {
    const void *a, *b;
    size_t n;
    int differ;
} differ_ctx;

static void differ_fn(void *arg)
{
    differ_ctx *c = arg;
    c->differ = memcmp(c->a, c->b, c->n) != 0;
}

int dora_guard_differ(const void *a, const void *b, size_t n, const void **fault)
{
    differ_ctx c = {a, b, n, 0};
    if (n == 0) {
        if (fault)
            *fault = NULL;
        return 0;
    }
    return dora_guard_run(differ_fn, &c, fault) == 0 ? c.differ : -1;
}

typedef struct copy_ctx {
    void *dst;
    const void *src;
    size_t n;
} copy_ctx;

static void copy_fn(void *arg)
{
    const copy_ctx *c = arg;
    memcpy(c->dst, c->src, c->n);
}

int dora_guard_copy(void *dst, const void *src, size_t n, const void **fault)
{
    copy_ctx c = {dst, src, n};
    if (n == 0) {
        if (fault)
            *fault = NULL;
        return 0;
    }
    return dora_guard_run(copy_fn, &c, fault);
}
