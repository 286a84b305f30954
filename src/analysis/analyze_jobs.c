/* analyze_jobs.c - the work of dora_analyze_run: row chunks of every module,
 * the dense and low-rank passes over them, and the threads that take them;
 * see include/dora/analyze.h. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "dora/adapter.h"
#include "dora/guard.h"
#include "dora/kernel.h"
#include "core/util.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK_BYTES (1u << 20) /* base bytes per work unit: enough to amortise, small for balance */

/* Per-thread buffers of the LoRA path, grown as needed. */
typedef struct workspace {
    double *w0;     /* [nb * cols] base rows in float64 (transposed bases) */
    double *rall;   /* the steps' R factors, stacked, float64, padded as
                       dora_lowrank wants: [lowrank_rows(rsum), lowrank_ld(cols)] */
    double *scratch; /* [dora_lowrank_scratch(rsum, cols)] */
    double *p;      /* [nb * rsum] W0 R^T */
    double *saa;    /* [nb] */
    double *l;      /* [nb * r] the chunk's rows of L, float64 */
    double *y;      /* [nb * r] L G */
    size_t cap_w0, cap_rall, cap_p, cap_saa, cap_l, cap_y, cap_scratch;
    size_t rall_module; /* module whose factors are in rall, or SIZE_MAX */
} workspace;

static void job_fail(job *jb, const char *fmt, ...)
{
    pthread_mutex_lock(&jb->lock);
    if (!jb->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(jb->err.msg, sizeof jb->err.msg, fmt, ap);
        va_end(ap);
        __atomic_store_n(&jb->failed, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&jb->lock);
}

/* Record one row's statistics for step s. */
static void add_row(job *jb, chunk *c, size_t s, int64_t r, const dora_rowstat *st)
{
    c->dm_sum[s] += st->dm;
    c->dd_sum[s] += st->one_minus_cos;
    c->zero[s] += st->zero;
    c->pm_sum[s] += st->passive;
    c->am_sum[s] += fabs(st->active);
    if (c->head_sum) {
        size_t h = (size_t)(r / jb->head_rows[c->module] - c->head0), n = (size_t)c->nheads;
        c->head_sum[2 * s * n + h] += st->dm;
        c->head_sum[(2 * s + 1) * n + h] += st->one_minus_cos;
    }
    if (jb->per_row) {
        dora_result *res = jb->res;
        size_t k = (size_t)jb->mods[c->module].rows, l = c->module;
        if (s == 0)
            res->m0[l][r] = st->m0;
        res->m[l][s * k + (size_t)r] = st->mt;
        res->cos[l][s * k + (size_t)r] = 1.0 - st->one_minus_cos;
        res->one_minus_cos[l][s * k + (size_t)r] = st->one_minus_cos;
    }
}

static void nonfinite(job *jb, const dora_tensor *t, int64_t r)
{
    job_fail(jb, "'%s': tensor '%s': row %lld holds NaN or Inf (or values whose squares overflow "
                 "float64)",
             t->file, t->name, (long long)r);
}

static int grow(double **buf, size_t *cap, size_t n);
static void prefault(const void *p, size_t len);

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single(void)
{
    openblas_set_num_threads(1);
}

void an_blas_single_once(void)
{
    pthread_once(&blas_once, blas_single);
}

/* Dense steps: one fused pass per (base row, checkpoint row). With several
 * steps the base row is converted to float64 once (into a buffer that stays
 * in L1/L2) and each step's pass reads it from there. */
static int run_chunk_dense(job *jb, chunk *c, workspace *ws)
{
    const module *md = &jb->mods[c->module];
    const size_t cols = (size_t)md->cols;
    const size_t sa = dora_dtype_size(md->base->dtype);
    const int reuse = jb->S > 1 && md->base->dtype != DORA_DT_F64;
    if (reuse && grow(&ws->w0, &ws->cap_w0, cols ? cols : 1) != 0) {
        job_fail(jb, "out of memory for a row buffer of '%s'", md->base->name);
        return -1;
    }
    const size_t nrow = (size_t)(c->row1 - c->row0);
    if (md->base->data)
        prefault(md->base->data + (size_t)c->row0 * cols * sa, nrow * cols * sa);
    for (size_t s = 0; s < jb->S; s++) {
        const dora_tensor *t = md->src[s].dense;
        const size_t rb = cols * dora_dtype_size(t->dtype);
        if (t->data)
            prefault(t->data + (size_t)c->row0 * rb, nrow * rb);
    }
    for (int64_t r = c->row0; r < c->row1; r++) {
        const unsigned char *a = md->base->data ? md->base->data + (size_t)r * cols * sa : NULL;
        dora_dtype ta = md->base->dtype;
        if (reuse && a) {
            dora_row_to_f64(a, ta, cols, ws->w0);
            a = (const unsigned char *)ws->w0;
            ta = DORA_DT_F64;
        }
        for (size_t s = 0; s < jb->S; s++) {
            if (__atomic_load_n(&jb->step_bad[s], __ATOMIC_RELAXED))
                continue;
            const dora_tensor *t = md->src[s].dense;
            const unsigned char *b =
                t->data ? t->data + (size_t)r * cols * dora_dtype_size(t->dtype) : NULL;
            dora_rowsums sums;
            dora_rowstat st;
            int side;
            dora_row_sums(a, ta, b, t->dtype, cols, &sums);
            if (dora_row_finish(&sums, &st, &side) != 0) {
                nonfinite(jb, side ? t : md->base, r);
                return -1;
            }
            add_row(jb, c, s, r, &st);
        }
    }
    return 0;
}

/* As grow, 64-byte aligned for the vector loads of dora_lowrank, and without
 * keeping the contents (the callers rewrite them). */
static int grow_aligned(double **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    void *nb;
    if (posix_memalign(&nb, 64, n * sizeof **buf) != 0)
        return -1;
    free(*buf);
    *buf = nb;
    *cap = n;
    return 0;
}

static int grow(double **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    double *nb = realloc(*buf, n * sizeof *nb);
    if (!nb)
        return -1;
    *buf = nb;
    *cap = n;
    return 0;
}

/* Base rows [row0, row1) as float64 into ws->w0, their squared norms into ws->saa. */
static void load_base_rows(const module *md, int64_t row0, int64_t row1, workspace *ws)
{
    const size_t cols = (size_t)md->cols;
    const dora_tensor *b = md->base;
    const size_t sz = dora_dtype_size(b->dtype);
    if (!md->transposed) {
        for (int64_t r = row0; r < row1; r++)
            ws->saa[r - row0] =
                dora_row_to_f64(b->data + (size_t)r * cols * sz, b->dtype, cols, ws->w0 + (size_t)(r - row0) * cols);
        return;
    }
    /* stored [in, out]: output row r is column r. Read each stored row's
     * segment [row0, row1) once (contiguous), scatter into the rows. */
    const size_t nb = (size_t)(row1 - row0), out = (size_t)md->rows;
    double seg[256];
    for (size_t j = 0; j < cols; j++) {
        for (size_t i0 = 0; i0 < nb; i0 += 256) {
            size_t m = nb - i0 < 256 ? nb - i0 : 256;
            dora_row_to_f64(b->data + (j * out + (size_t)row0 + i0) * sz, b->dtype, m, seg);
            for (size_t i = 0; i < m; i++)
                ws->w0[(i0 + i) * cols + j] = seg[i];
        }
    }
    for (size_t i = 0; i < nb; i++) {
        double s = 0;
        for (size_t j = 0; j < cols; j++)
            s += ws->w0[i * cols + j] * ws->w0[i * cols + j];
        ws->saa[i] = s;
    }
}

/* The stacked R factors of every step of the module, as float64, in the
 * padded layout of dora_lowrank (zeros beyond rsum rows and cols columns). */
static void load_factors(const job *jb, size_t l, workspace *ws)
{
    const module *md = &jb->mods[l];
    const size_t cols = (size_t)md->cols, ld = dora_lowrank_ld(cols);
    memset(ws->rall, 0, dora_lowrank_rows((size_t)md->rsum) * ld * sizeof *ws->rall);
    for (size_t s = 0; s < jb->S; s++) {
        const dora_adapted *ad = md->src[s].ad;
        /* a step dropped (its file shrank) stays zero: reading it again would
         * fault again, and the chunk would be redone forever */
        if (__atomic_load_n(&jb->step_bad[s], __ATOMIC_RELAXED))
            continue;
        for (int64_t k = 0; k < ad->r; k++) {
            double *dst = ws->rall + (size_t)(md->src[s].off + k) * ld;
            if (!ad->R.transposed) {
                const dora_tensor *t = ad->R.t;
                dora_row_to_f64(t->data + (size_t)k * cols * dora_dtype_size(t->dtype), t->dtype,
                                cols, dst);
            } else {
                for (size_t j = 0; j < cols; j++)
                    dst[j] = dora_matrix_get(&ad->R, k, (int64_t)j);
            }
        }
    }
    ws->rall_module = l;
}

/* Map the pages of [p, p + len) now, in one call: fewer, larger mappings than
 * fault-around's 16 pages per fault, and the kernels' prefetches (a prefetch
 * into a page not yet mapped is dropped) find the pages there (measured: FT
 * 2-3%, LoRA 0.28-0.29 -> 0.272 s). Advice only: an error (an old kernel, a
 * shrunk file: MADV_POPULATE_READ returns an error instead of raising SIGBUS)
 * changes nothing, and the reads that follow are still guarded. */
static void prefault(const void *p, size_t len)
{
#ifdef MADV_POPULATE_READ
    const long ps = sysconf(_SC_PAGESIZE); /* read from the auxiliary vector: cheap */
    const uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
    uintptr_t a = (uintptr_t)p & ~(page - 1);
    if (len)
        madvise((void *)a, (uintptr_t)p + len - a, MADV_POPULATE_READ);
#else
    (void)p;
    (void)len;
#endif
}

/* Low-rank steps. For a row a of W0 and the update u = s * l R (l: the row of
 * L), the sums the kernel needs are
 *     sad = a.u = s * l . (R a)      sdd = |u|^2 = s^2 * l G l^T,  G = R R^T
 * so no merged row is formed: R a for all rows of the chunk and all steps at
 * once is the product W0[rows] R_all^T (dora_lowrank, reading each base row
 * once for every step), and G is r x r. Merging in blocks would cost the same
 * O(rows * cols * r) and need a [rows, cols] buffer per step. */
static int run_chunk_lora(job *jb, chunk *c, workspace *ws)
{
    const module *md = &jb->mods[c->module];
    const size_t cols = (size_t)md->cols, nb = (size_t)(c->row1 - c->row0);
    const size_t rsum = (size_t)md->rsum;
    int64_t rmax = 0;
    for (size_t s = 0; s < jb->S; s++)
        if (md->src[s].ad->r > rmax)
            rmax = md->src[s].ad->r;
    if ((md->transposed && grow(&ws->w0, &ws->cap_w0, nb * cols)) ||
        grow(&ws->saa, &ws->cap_saa, nb) || grow(&ws->p, &ws->cap_p, nb * rsum) ||
        grow(&ws->l, &ws->cap_l, nb * (size_t)rmax) || grow(&ws->y, &ws->cap_y, nb * (size_t)rmax) ||
        grow_aligned(&ws->scratch, &ws->cap_scratch, dora_lowrank_scratch(rsum, cols))) {
        job_fail(jb, "out of memory for the LoRA work buffers of '%s'", md->base->name);
        return -1;
    }
    if (ws->rall_module != c->module) {
        if (grow_aligned(&ws->rall, &ws->cap_rall, dora_lowrank_rows(rsum) * dora_lowrank_ld(cols))) {
            job_fail(jb, "out of memory for the LoRA factors of '%s'", md->base->name);
            return -1;
        }
        load_factors(jb, c->module, ws);
    }
    if (md->transposed) {
        load_base_rows(md, c->row0, c->row1, ws);
        dora_lowrank(ws->w0, DORA_DT_F64, nb, cols, ws->rall, rsum, ws->p, ws->saa, ws->scratch);
    } else {
        const size_t rb = cols * dora_dtype_size(md->base->dtype);
        prefault(md->base->data + (size_t)c->row0 * rb, nb * rb);
        dora_lowrank(md->base->data + (size_t)c->row0 * rb, md->base->dtype, nb, cols, ws->rall,
                     rsum, ws->p, ws->saa, ws->scratch);
    }
    for (size_t i = 0; i < nb; i++)
        if (!isfinite(ws->saa[i])) {
            nonfinite(jb, md->base, c->row0 + (int64_t)i);
            return -1;
        }
    for (size_t s = 0; s < jb->S; s++) {
        if (__atomic_load_n(&jb->step_bad[s], __ATOMIC_RELAXED))
            continue;
        const stepsrc *src = &md->src[s];
        const dora_adapted *ad = src->ad;
        const size_t r = (size_t)ad->r;
        /* the chunk's rows of L as float64 [nb, r], then Y = L G for all of
         * them in one dgemm: |u|^2 = s^2 l G l^T = s^2 l . y */
        for (size_t i = 0; i < nb; i++) {
            const int64_t row = c->row0 + (int64_t)i;
            if (!ad->L.transposed) {
                double ss = dora_row_to_f64(ad->L.t->data + (size_t)row *
                                                                (size_t)dora_tensor_cols(ad->L.t) *
                                                                dora_dtype_size(ad->L.t->dtype),
                                            ad->L.t->dtype, r, ws->l + i * r);
                if (!isfinite(ss)) {
                    nonfinite(jb, ad->L.t, row);
                    return -1;
                }
            } else {
                for (size_t k = 0; k < r; k++) {
                    double v = dora_matrix_get(&ad->L, row, (int64_t)k);
                    if (!isfinite(v)) { /* stored transposed: element (k, row) */
                        nonfinite(jb, ad->L.t, (int64_t)k);
                        return -1;
                    }
                    ws->l[i * r + k] = v;
                }
            }
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)r, (int)r, 1.0, ws->l,
                    (int)r, src->gram, (int)r, 0.0, ws->y, (int)r);
        for (size_t i = 0; i < nb; i++) {
            const int64_t row = c->row0 + (int64_t)i;
            const double *l = ws->l + i * r, *y = ws->y + i * r, *pr = ws->p + i * rsum + src->off;
            double sad = 0, sdd = 0;
            for (size_t k = 0; k < r; k++) {
                sad += l[k] * pr[k];
                sdd += l[k] * y[k];
            }
            dora_rowsums sums = {ws->saa[i], 0, ad->scale * sad, ad->scale * ad->scale * sdd};
            sums.sbb = sums.saa + 2 * sums.sad + sums.sdd;
            dora_rowstat st;
            int side;
            if (dora_row_finish(&sums, &st, &side) != 0) {
                nonfinite(jb, side ? ad->L.t : md->base, row);
                return -1;
            }
            if (ad->magnitude) {
                /* DoRA: the merged row is m * V / |V|: its norm is |m|, its
                 * direction that of V, reversed if m < 0 */
                double m = dora_matrix_get(&(dora_matrix){ad->magnitude, 0, ad->L.rows, 1}, row, 0);
                if (!isfinite(m)) {
                    nonfinite(jb, ad->magnitude, row);
                    return -1;
                }
                if (st.mt == 0.0 || m == 0.0) { /* no direction: as a zero row */
                    st.one_minus_cos = st.m0 == 0.0 && m == 0.0 ? 0.0 : 1.0;
                    st.zero = 1;
                } else if (m < 0) {
                    st.one_minus_cos = 2.0 - st.one_minus_cos;
                }
                st.mt = fabs(m);
                st.dm = fabs(st.mt - st.m0);
                dora_row_split_angle(&st);
            }
            add_row(jb, c, s, row, &st);
        }
    }
    return 0;
}

static int run_chunk(job *jb, chunk *c, workspace *ws)
{
    for (size_t s = 0; s < jb->S; s++) {
        c->dm_sum[s] = c->dd_sum[s] = 0;
        c->pm_sum[s] = c->am_sum[s] = 0;
        c->zero[s] = 0;
    }
    if (c->head_sum) /* a chunk is redone after a fault: from zero */
        memset(c->head_sum, 0, 2 * jb->S * (size_t)c->nheads * sizeof *c->head_sum);
    return jb->mods[c->module].lora ? run_chunk_lora(jb, c, ws) : run_chunk_dense(jb, c, ws);
}

static int owns(const dora_tensor *t, const void *addr)
{
    const st_file *f = t ? t->owner : NULL;
    const unsigned char *a = addr;
    return f && f->map && a >= f->map && a < f->map + f->size;
}

/* A SIGBUS at ADDR while chunk C was read: a file shrank. If it is a step's
 * file, that step is dropped (the others go on) and 0 is returned so that the
 * chunk is redone without it; if it is the base's, or unknown, -1. */
static int mark_fault(job *jb, const chunk *c, const void *addr)
{
    const module *md = &jb->mods[c->module];
    if (owns(md->base, addr)) {
        job_fail(jb, "'%s' changed while it was read (truncated?): the base is needed for every "
                     "result",
                 md->base->file);
        return -1;
    }
    for (size_t s = 0; s < jb->S; s++) {
        const stepsrc *src = &md->src[s];
        const dora_tensor *ts[4] = {src->dense, src->ad ? src->ad->L.t : NULL,
                                    src->ad ? src->ad->R.t : NULL,
                                    src->ad ? src->ad->magnitude : NULL};
        for (int i = 0; i < 4; i++)
            if (owns(ts[i], addr)) {
                pthread_mutex_lock(&jb->lock);
                if (!jb->step_why[s]) {
                    char buf[1200];
                    snprintf(buf, sizeof buf, "'%s' changed while it was read (truncated?)",
                             ts[i]->file);
                    jb->step_why[s] = strdup(buf);
                }
                __atomic_store_n(&jb->step_bad[s], 1, __ATOMIC_RELEASE);
                pthread_mutex_unlock(&jb->lock);
                return 0;
            }
    }
    job_fail(jb, "a memory-mapped file changed while it was read (fault at %p)", addr);
    return -1;
}

static void *worker(void *arg)
{
    job *jb = arg;
    an_blas_single_thread(); /* its GEMMs on this thread alone (OpenMP build) */
    workspace ws;
    memset(&ws, 0, sizeof ws);
    ws.rall_module = SIZE_MAX;
    for (;;) {
        if (__atomic_load_n(&jb->failed, __ATOMIC_ACQUIRE))
            break;
        size_t i = __atomic_fetch_add(&jb->next, 1, __ATOMIC_RELAXED);
        if (i >= jb->nchunks)
            break;
        /* A truncated mapping faults inside run_chunk; the guard brings us back
         * here, the step whose file it was is dropped, and the chunk redone. */
        sigjmp_buf env;
        volatile int ok = 0;
        while (!ok) {
            if (sigsetjmp(env, 1) == 0) {
                dora_guard_enter(&env);
                int r = run_chunk(jb, &jb->chunks[i], &ws);
                dora_guard_leave();
                if (r != 0)
                    goto out;
                ok = 1;
                dora_progress_add_done(jb->prog, jb->chunks[i].bytes, 0);
            } else {
                dora_guard_leave();
                ws.rall_module = SIZE_MAX; /* the factors may be half converted */
                if (mark_fault(jb, &jb->chunks[i], dora_guard_fault()) != 0)
                    goto out;
            }
        }
    }
out:
    free(ws.w0);
    free(ws.rall);
    free(ws.scratch);
    free(ws.p);
    free(ws.saa);
    free(ws.l);
    free(ws.y);
    return NULL;
}

int an_run_jobs(job *jb, int threads, dora_err *err)
{
    if (threads < 1)
        threads = 1;
    if ((size_t)threads > jb->nchunks)
        threads = jb->nchunks ? (int)jb->nchunks : 1;
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!tid)
        return dora_errf(err, "out of memory");
    int started = 0;
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&tid[i], NULL, worker, jb) != 0)
            break; /* fewer threads is still correct */
        started++;
    }
    worker(jb);
    for (int i = 1; i <= started; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    if (jb->failed) {
        *err = jb->err;
        return -1;
    }
    return 0;
}

/* Rows per work unit: about CHUNK_BYTES of base data; for a base read
 * transposed (LoRA with fan_in_fan_out), a float64 block of about
 * LORA_BLOCK_BYTES, kept in L2, and at least 256 rows, so that each stored
 * row is read in runs of 512+ bytes. */
#define LORA_BLOCK_BYTES (512u << 10)
static int64_t chunk_rows(const module *md)
{
    uint64_t row_bytes = md->transposed ? (uint64_t)md->cols * sizeof(double)
                                        : (uint64_t)md->cols * dora_dtype_size(md->base->dtype);
    uint64_t budget = md->transposed ? LORA_BLOCK_BYTES : CHUNK_BYTES;
    int64_t per = row_bytes ? (int64_t)(budget / row_bytes) : md->rows;
    if (md->transposed && per < 256)
        per = 256;
    return per < 1 ? 1 : per;
}

/* The bytes a chunk of NROWS rows of MD reads: its share of the base tensor
 * and of each step's (a LoRA step's: of its lora_B factor). */
static uint64_t chunk_bytes(const job *jb, const module *md, int64_t nrows)
{
    uint64_t b = md->base->nbytes;
    for (size_t s = 0; s < jb->S; s++) {
        const stepsrc *src = &md->src[s];
        b += src->dense ? src->dense->nbytes : src->ad && src->ad->L.t ? src->ad->L.t->nbytes : 0;
    }
    return md->rows > 0 ? (uint64_t)((double)b * (double)nrows / (double)md->rows) : 0;
}

/* Split every module into row chunks; boundaries depend only on the shapes. */
int an_make_chunks(job *jb, size_t L, double **pool_d, int64_t **pool_z, dora_err *err)
{
    size_t n = 0;
    for (size_t l = 0; l < L; l++) {
        int64_t per = chunk_rows(&jb->mods[l]);
        n += (size_t)((jb->mods[l].rows + per - 1) / per);
    }
    jb->chunks = calloc(n ? n : 1, sizeof *jb->chunks);
    *pool_d = calloc(4 * n * jb->S + 1, sizeof **pool_d);
    *pool_z = calloc(n * jb->S + 1, sizeof **pool_z);
    if (!jb->chunks || !*pool_d || !*pool_z)
        return dora_errf(err, "out of memory for %zu work units", n);
    size_t c = 0;
    for (size_t l = 0; l < L; l++) {
        const module *md = &jb->mods[l];
        int64_t per = chunk_rows(md);
        for (int64_t r = 0; r < md->rows; r += per, c++) {
            chunk *ch = &jb->chunks[c];
            ch->module = l;
            ch->row0 = r;
            ch->row1 = r + per < md->rows ? r + per : md->rows;
            ch->dm_sum = *pool_d + 4 * c * jb->S;
            ch->dd_sum = ch->dm_sum + jb->S;
            ch->pm_sum = ch->dm_sum + 2 * jb->S;
            ch->am_sum = ch->dm_sum + 3 * jb->S;
            ch->zero = *pool_z + c * jb->S;
            ch->bytes = chunk_bytes(jb, md, ch->row1 - ch->row0);
        }
    }
    jb->nchunks = n;
    return 0;
}
