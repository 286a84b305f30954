/* mpi.c - built with MPI=1 and started by mpirun: rank 0 hands units to the
 * other ranks and gathers their results; see batch/engine.h. */
#define _GNU_SOURCE
#include "batch/engine.h"
#include "dora/notes.h"
#include "batch/common.h"
#include "results/bytes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DORA_MPI
#include <mpi.h>

enum { TAG_WORK = 1, TAG_STOP = 2, TAG_RESULT = 3 };

/* Work message: study, run, step index as u64, then the step and the paths,
 * so that a worker needs no discovery of its own: u64 study, u64 run, u64
 * step, the run's path and the step's path as wire strings, u64 index of
 * the step in the run (results/bytes.h, little-endian like the journal). */
static int send_work(batch *b, const unit *u, int dest)
{
    const study_state *s = &b->ss[u->study];
    wbuf m = {0};
    wire_put_u64(&m, u->study);
    wire_put_u64(&m, u->run);
    wire_put_u64(&m, (uint64_t)s->runs[u->run].steps[u->step].step);
    wire_put_str(&m, s->runs[u->run].path);
    wire_put_str(&m, s->runs[u->run].steps[u->step].path);
    wire_put_u64(&m, u->step);
    int rc = m.oom ? MPI_ERR_NO_MEM
                   : MPI_Send(m.p, (int)m.n, MPI_BYTE, dest, TAG_WORK, MPI_COMM_WORLD);
    free(m.p);
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

/* Read a work message of N bytes: the study *SI, run *RI, *STEP and the paths
 * (newly allocated, NULL when out of memory). The message comes from rank 0
 * of this job: it is checked all the same, and WHY says when it is malformed. */
static void read_work(const batch *b, const unsigned char *m, int n, uint64_t *si, uint64_t *ri,
                      int64_t *step, char **rp, char **sp, char *why, size_t why_size)
{
    rbuf r = {m, (size_t)n, 0, 0};
    *si = wire_get_u64(&r);
    *ri = wire_get_u64(&r);
    *step = (int64_t)wire_get_u64(&r);
    *rp = wire_get_str(&r);
    *sp = wire_get_str(&r);
    (void)wire_get_u64(&r); /* the step's index in the run; the worker's run has one step */
    if (r.bad == 1 || *si >= b->m.nstudies || *ri >= b->m.studies[*si].nruns)
        snprintf(why, why_size, "malformed work message (%d bytes)", n);
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
        char why[DORA_ERR_MAX + 64] = "";
        uint64_t si = 0, ri = 0;
        int64_t step = 0;
        char *rp = NULL, *sp = NULL;
        read_work(b, m, n, &si, &ri, &step, &rp, &sp, why, sizeof why);
        free(m);
        dora_study *sd = why[0] ? NULL : &b->m.studies[si];
        dora_err e = {{0}, 0};
        char note[DORA_NOTE_MAX];
        if (sd && !bases[si] && dora_study_open_base(sd, &bases[si], note, sizeof note, &e) != 0) {
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
            dora_analysis_opts opts;
            batch_analysis_opts(sd, threads, &opts);
            opts.mem_bytes = b->mem;
            dora_result res;
            const dora_model *w0 = dora_study_w0(sd, bases[si]); /* a bnb-saved base */
            if (dora_analyze_unit(&res, sd->runs[ri].name, w0, sd->base, &run, 0, &opts,
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

/* Rank W's next unit, or its stop when none is left; the unit's start time is
 * kept for its report. Returns 1 if a unit was sent. */
static int hand_out(batch *b, int w, size_t *next, size_t *assigned, double *started)
{
    if (*next >= b->nunits) {
        MPI_Send(NULL, 0, MPI_BYTE, w, TAG_STOP, MPI_COMM_WORLD);
        return 0;
    }
    assigned[w] = *next;
    started[w] = batch_now();
    if (send_work(b, &b->units[(*next)++], w) != 0)
        MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

void batch_mpi_dispatch(batch *b)
{
    int size = b->mpi_size;
    size_t next = 0, active = 0;
    size_t *assigned = calloc((size_t)size, sizeof *assigned);
    double *started = calloc((size_t)size, sizeof *started);
    if (!assigned || !started)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (int w = 1; w < size; w++)
        active += (size_t)hand_out(b, w, &next, assigned, started);
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
        active += (size_t)hand_out(b, w, &next, assigned, started);
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
