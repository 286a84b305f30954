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
