/* mpi.c - built with MPI=1 and started by mpirun: rank 0 hands units to the
 * other ranks and gathers their results; see batch/engine.h. */
#define _GNU_SOURCE
#include "batch/engine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DORA_MPI
#include <mpi.h>

enum { TAG_WORK = 1, TAG_STOP = 2, TAG_RESULT = 3 };

/* Work message: study, run, step index as u64, then the step and the paths,
 * so that a worker needs no discovery of its own. Little-endian, like the
 * journal. */
static size_t put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return 8;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int send_work(batch *b, const unit *u, int dest)
{
    const study_state *s = &b->ss[u->study];
    const char *rp = s->runs[u->run].path, *sp = s->runs[u->run].steps[u->step].path;
    size_t lr = strlen(rp), ls = strlen(sp), n = 6 * 8 + lr + ls, k = 0;
    unsigned char *m = malloc(n);
    if (!m)
        return -1;
    k += put64(m + k, u->study);
    k += put64(m + k, u->run);
    k += put64(m + k, (uint64_t)s->runs[u->run].steps[u->step].step);
    k += put64(m + k, lr);
    memcpy(m + k, rp, lr);
    k += lr;
    k += put64(m + k, ls);
    memcpy(m + k, sp, ls);
    k += ls;
    k += put64(m + k, u->step);
    int rc = MPI_Send(m, (int)k, MPI_BYTE, dest, TAG_WORK, MPI_COMM_WORLD);
    free(m);
    return rc == MPI_SUCCESS ? 0 : -1;
}

/* Reply: one byte 1 + a packed result, or 0 + the error message. */
static void reply(const dora_result *res, const char *why)
{
    unsigned char *buf = NULL, *msg;
    size_t len = 0;
    dora_err e = {{0}, 0};
    if (res && dora_result_pack(res, &buf, &len, &e) != 0) {
        res = NULL;
        why = e.msg;
    }
    if (!res) {
        len = strlen(why);
        buf = malloc(len);
        if (buf)
            memcpy(buf, why, len);
        else
            len = 0;
    }
    msg = malloc(len + 1);
    if (!msg) {
        unsigned char z = 0;
        MPI_Send(&z, 1, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
        free(buf);
        return;
    }
    msg[0] = res ? 1 : 0;
    if (len)
        memcpy(msg + 1, buf, len);
    MPI_Send(msg, (int)(len + 1), MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    free(msg);
    free(buf);
}

int batch_mpi_worker(batch *b)
{
    size_t ns = b->m.nstudies;
    dora_model **bases = calloc(ns + 1, sizeof *bases);
    int threads = b->jobs;
    for (;;) {
        MPI_Status st;
        int n;
        MPI_Probe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        MPI_Get_count(&st, MPI_BYTE, &n);
        unsigned char *m = malloc((size_t)n + 1);
        if (!m)
            MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Recv(m, n, MPI_BYTE, 0, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (st.MPI_TAG == TAG_STOP) {
            free(m);
            break;
        }
        /* the message comes from rank 0 of this job: lengths are checked all the same */
        size_t k = 0, len = (size_t)n;
        char why[DORA_ERR_MAX + 64] = "";
        uint64_t si = 0, ri = 0, lr = 0, ls = 0;
        int64_t step = 0;
        char *rp = NULL, *sp = NULL;
        if (len >= 32) {
            si = get64(m);
            ri = get64(m + 8);
            step = (int64_t)get64(m + 16);
            lr = get64(m + 24);
            k = 32;
        }
        if (len < 32 || lr > len - k - 8 || si >= ns || ri >= b->m.studies[si].nruns) {
            snprintf(why, sizeof why, "malformed work message (%d bytes)", n);
        } else {
            rp = strndup((const char *)m + k, (size_t)lr);
            k += (size_t)lr;
            ls = get64(m + k);
            k += 8;
            if (ls > len - k || len - k - (size_t)ls < 8)
                snprintf(why, sizeof why, "malformed work message (%d bytes)", n);
            else
                sp = strndup((const char *)m + k, (size_t)ls);
        }
        free(m);
        dora_study *sd = why[0] ? NULL : &b->m.studies[si];
        dora_err e = {{0}, 0};
        if (sd && !bases[si] && dora_model_open(&bases[si], sd->base, &e) != 0) {
            snprintf(why, sizeof why, "%s", e.msg);
            bases[si] = NULL;
        }
        if (!why[0] && (!rp || !sp))
            snprintf(why, sizeof why, "out of memory");
        if (why[0]) {
            reply(NULL, why);
        } else {
            dora_step one = {.step = step, .path = sp};
            dora_run run;
            memset(&run, 0, sizeof run);
            run.path = rp;
            run.method = "ft";
            run.nsteps = 1;
            run.steps = &one;
            dora_analysis_opts opts = {
                .include = sd->has_include ? &sd->include_re : NULL,
                .exclude = sd->has_exclude ? &sd->exclude_re : NULL,
                .threads = threads,
            };
            dora_result res;
            if (dora_analyze_unit(&res, sd->runs[ri].name, bases[si], sd->base, &run, 0, &opts,
                                  &e) == 0) {
                reply(&res, NULL);
                dora_result_release(&res);
            } else {
                reply(NULL, e.msg);
            }
        }
        free(rp);
        free(sp);
    }
    for (size_t i = 0; i < ns; i++)
        dora_model_close(bases[i]);
    free(bases);
    return 0;
}

void batch_mpi_dispatch(batch *b)
{
    int size = b->mpi_size;
    size_t next = 0, active = 0;
    size_t *assigned = calloc((size_t)size, sizeof *assigned);
    double *started = calloc((size_t)size, sizeof *started);
    if (!assigned || !started)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (int w = 1; w < size; w++) {
        if (next < b->nunits) {
            assigned[w] = next;
            started[w] = batch_now();
            if (send_work(b, &b->units[next++], w) != 0)
                MPI_Abort(MPI_COMM_WORLD, 1);
            active++;
        } else {
            MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
        }
    }
    while (active > 0) {
        MPI_Status st;
        int n;
        MPI_Probe(MPI_ANY_SOURCE, TAG_RESULT, MPI_COMM_WORLD, &st);
        MPI_Get_count(&st, MPI_BYTE, &n);
        int w = st.MPI_SOURCE;
        unsigned char *m = malloc((size_t)n + 1);
        if (!m)
            MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Recv(m, n, MPI_BYTE, w, TAG_RESULT, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        active--;
        const unit *u = &b->units[assigned[w]];
        dora_result res;
        dora_err e = {{0}, 0};
        char what[64];
        snprintf(what, sizeof what, "result from rank %d", w);
        if (n >= 1 && m[0] == 1 &&
            dora_result_unpack(&res, m + 1, (size_t)n - 1, what, &e) == 0) {
            batch_unit_finished(b, u, &res, NULL, batch_now() - started[w], w);
        } else {
            char why[DORA_ERR_MAX];
            if (n >= 1 && m[0] == 1)
                snprintf(why, sizeof why, "%s", e.msg);
            else
                snprintf(why, sizeof why, "%.*s", n > 1 ? n - 1 : 0, (const char *)m + 1);
            batch_unit_finished(b, u, NULL, why, batch_now() - started[w], w);
        }
        free(m);
        if (next < b->nunits) {
            assigned[w] = next;
            started[w] = batch_now();
            if (send_work(b, &b->units[next++], w) != 0)
                MPI_Abort(MPI_COMM_WORLD, 1);
            active++;
        } else {
            MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
        }
    }
    free(assigned);
    free(started);
}

/* Started by mpirun (or srun)? Otherwise MPI is not initialised at all. */
static int under_mpi(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int batch_mpi_begin(batch *b, int *rank)
{
    *rank = 0;
    if (!under_mpi())
        return 0;
    int provided;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b->mpi_size);
    return 1;
}

void batch_mpi_end(int on, int mpi_size, int stop_workers)
{
    if (!on)
        return;
    for (int w = 1; stop_workers && w < mpi_size; w++) /* the workers wait for work */
        MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
    MPI_Finalize();
}
#else
int batch_mpi_begin(batch *b, int *rank)
{
    (void)b;
    *rank = 0;
    return 0;
}

int batch_mpi_worker(batch *b)
{
    (void)b;
    return 0;
}

void batch_mpi_dispatch(batch *b)
{
    batch_run_local(b);
}

void batch_mpi_end(int on, int mpi_size, int stop_workers)
{
    (void)on;
    (void)mpi_size;
    (void)stop_workers;
}
#endif
