/* blas_threads.c - one BLAS thread for each thread of ours.
 *
 * OpenBLAS's OpenMP build takes its thread count from omp_get_max_threads() of
 * the calling thread, and a thread made by pthread_create starts with the
 * process's default (every CPU), whatever openblas_set_num_threads(1) said on
 * another thread. So each of our worker threads, before its first BLAS or LAPACK
 * call, sets its own OpenMP thread count to 1, when the OpenMP runtime is there
 * (found at run time: the pthreads build of OpenBLAS has none, and needs nothing
 * more than an_blas_single_once). */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"

#include <dlfcn.h>
#include <pthread.h>

typedef void (*set_threads_fn)(int);
static set_threads_fn omp_set;
static pthread_once_t omp_once = PTHREAD_ONCE_INIT;

static void find_omp(void)
{
    void *f = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (f) /* POSIX: a function pointer converts through void * */
        *(void **)&omp_set = f;
}

void an_blas_single_thread(void)
{
    an_blas_single_once();
    pthread_once(&omp_once, find_omp);
    if (omp_set)
        omp_set(1);
}
