/* analyze.c - per-run, per-step, per-tensor dM and dD; see include/dora/analyze.h. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "dora/analyze.h"
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

int32_t dora_layer_index(const char *name)
{
    const char *p = name;
    while (*p) {
        const char *end = strchr(p, '.');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && n <= 10 && strspn(p, "0123456789") == n) {
            long long v = strtoll(p, NULL, 10);
            if (v <= INT32_MAX)
                return (int32_t)v;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return -1;
}

/* What one step holds for a module: a dense weight (FT, modules_to_save), or
 * a low-rank update of the base (LoRA, DoRA). */
typedef struct stepsrc {
    const dora_tensor *dense;
    const dora_adapted *ad;
    double *gram; /* [r * r] R R^T in float64, for |s L R|^2 per row (LoRA) */
    int64_t off;  /* this step's first column in the stacked factors (LoRA) */
} stepsrc;

typedef struct module {
    const dora_tensor *base;
    stepsrc *src;   /* [S] */
    int lora;       /* every step is a low-rank update */
    int transposed; /* base stored [in, out] (fan_in_fan_out), read as [out, in] */
    int64_t rows, cols;
    int64_t rsum;   /* sum of the steps' ranks (LoRA) */
    size_t nsrc;    /* S, for freeing */
} module;

typedef struct chunk {
    size_t module;
    int64_t row0, row1;
    double *dm_sum, *dd_sum; /* [S] */
    int64_t *zero;           /* [S] */
} chunk;

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

typedef struct job {
    size_t S;
    module *mods;
    chunk *chunks;
    size_t nchunks;
    dora_result *res;
    int per_row;
    size_t next; /* atomic: next chunk to take */
    int failed;  /* atomic */
    int *step_bad; /* [S] atomic: a file of the step changed while read */
    char **step_why; /* [S] why (under lock) */
    pthread_mutex_t lock;
    dora_err err;
} job;

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
        c->zero[s] = 0;
    }
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

static int run_jobs(job *jb, int threads, dora_err *err)
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

static int result_note(dora_result *res, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nn = realloc(res->notes, (res->nnotes + 1) * sizeof *nn);
    if (!nn)
        return -1;
    res->notes = nn;
    if (!(nn[res->nnotes] = strdup(buf)))
        return -1;
    res->nnotes++;
    return 0;
}

static int module_cmp(const void *pa, const void *pb)
{
    const module *a = pa, *b = pb;
    return util_natural_cmp(a->base->name, b->base->name);
}

static int same_shape(const dora_tensor *a, const dora_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

/* What a step was read from: a full model or an adapter. */
typedef struct stepdata {
    dora_model *model;
    dora_adapter *adapter;
    int borrowed; /* the adapter is the run's (dora_step.adapter): not closed here */
} stepdata;

static int kept(const dora_analysis_opts *opts, const char *name)
{
    return dora_filter_match(opts->include, opts->exclude, name);
}

static void free_modules(module *mods, size_t L)
{
    for (size_t i = 0; i < L; i++) {
        for (size_t s = 0; mods[i].src && s < mods[i].nsrc; s++)
            free(mods[i].src[s].gram);
        free(mods[i].src);
    }
    free(mods);
}

/* The note for EMPTY tensors without elements left out (FIRST among them). */
static void note_empty(dora_result *res, size_t empty, const char *first, const dora_model *base)
{
    if (!empty)
        return;
    char shp[256];
    dora_shape_str(dora_model_find(base, first), shp, sizeof shp);
    result_note(res, "%zu tensor(s) without elements were left out (first: '%s', shape %s)",
                empty, first, shp);
}

/* FT runs: every floating tensor of rank >= 2 of the base with elements, in
 * every checkpoint. */
static int select_dense(dora_result *res, const dora_model *base, const stepdata *sd, size_t S,
                        const dora_analysis_opts *opts, module *mods, size_t *nout,
                        dora_err *err)
{
    size_t L = 0, missing = 0, skipped_type = 0, empty = 0;
    const char *first_missing = NULL, *first_empty = NULL;
    for (size_t i = 0; i < base->ntensors; i++) {
        const dora_tensor *t = base->by_name[i];
        if (t->ndim < 2 || !dora_dtype_is_analysable(t->dtype)) {
            if (t->ndim >= 2)
                skipped_type++;
            continue;
        }
        if (!kept(opts, t->name))
            continue;
        if (t->numel == 0) { /* [2^40, 0] holds nothing: no loop over its rows */
            if (!empty++)
                first_empty = t->name;
            continue;
        }
        module *md = &mods[L];
        md->base = t;
        md->rows = dora_tensor_rows(t);
        md->cols = dora_tensor_cols(t);
        md->nsrc = S;
        if (!(md->src = calloc(S, sizeof *md->src)))
            return dora_errf(err, "out of memory");
        L++; /* owned from here: the caller frees on failure */
        *nout = L;
        int present = 1;
        for (size_t s = 0; s < S; s++) {
            const dora_tensor *c = dora_model_find(sd[s].model, t->name);
            if (!c) {
                present = 0;
                if (!first_missing)
                    first_missing = t->name;
                break;
            }
            if (!same_shape(t, c)) {
                char s0[256], s1[256];
                dora_shape_str(t, s0, sizeof s0);
                dora_shape_str(c, s1, sizeof s1);
                return dora_errf(err, "'%s': tensor '%s' has shape %s, but %s in the base '%s'",
                                 c->file, t->name, s1, s0, t->file);
            }
            if (!dora_dtype_is_analysable(c->dtype))
                return dora_errf(err, "'%s': tensor '%s' is %s, not a floating type (the base has "
                                      "%s)",
                                 c->file, t->name, dora_dtype_name(c->dtype),
                                 dora_dtype_name(t->dtype));
            md->src[s].dense = c;
        }
        if (!present) {
            free(md->src);
            md->src = NULL;
            L--;
            *nout = L;
            missing++;
        }
    }
    if (missing)
        result_note(res, "%zu tensor(s) of the base are missing from a checkpoint and were left "
                         "out (first: '%s')",
                    missing, first_missing);
    if (skipped_type)
        result_note(res, "%zu non-floating tensor(s) of rank >= 2 were left out", skipped_type);
    note_empty(res, empty, first_empty, base);
    return 0;
}

/* R's rows as float64 [r, cols] into rm: run in a guarded region (guard.h). */
typedef struct factor_rows {
    const dora_adapted *ad;
    double *rm;
} factor_rows;

static void factor_rows_fn(void *arg)
{
    const factor_rows *fr = arg;
    const dora_adapted *ad = fr->ad;
    const size_t r = (size_t)ad->r, cols = (size_t)ad->R.cols;
    const dora_tensor *t = ad->R.t;
    for (size_t k = 0; k < r; k++)
        if (!ad->R.transposed)
            dora_row_to_f64(t->data + k * cols * dora_dtype_size(t->dtype), t->dtype, cols,
                            fr->rm + k * cols);
        else
            for (size_t j = 0; j < cols; j++)
                fr->rm[k * cols + j] = dora_matrix_get(&ad->R, (int64_t)k, (int64_t)j);
}

/* G = R R^T in float64, [r, r], into *out. 0; 1 if reading R faulted (its
 * file shrank underneath: *fault names the place, the step is dropped); -1
 * with ERR set: out of memory, or NaN/Inf in R (named by its tensor and the
 * row of that tensor, so a NaN in lora_A is not blamed on lora_B later). */
static int gram(const dora_adapted *ad, double **out, const void **fault, dora_err *err)
{
    const size_t r = (size_t)ad->r, cols = (size_t)ad->R.cols;
    double *rm = malloc((r * cols > 0 ? r * cols : 1) * sizeof *rm), *g = malloc(r * r * sizeof *g);
    *out = NULL;
    if (!rm || !g) {
        free(rm);
        free(g);
        return dora_errf(err, "out of memory for the Gram matrix of '%s'", ad->base_name);
    }
    factor_rows fr = {ad, rm};
    int gr = dora_guard_run(factor_rows_fn, &fr, fault);
    if (gr != 0) {
        free(rm);
        free(g);
        return gr == 1 ? 1 : dora_errf(err, "cannot install the SIGBUS guard");
    }
    for (size_t k = 0; k < r; k++)
        for (size_t j = 0; j < cols; j++)
            if (!isfinite(rm[k * cols + j])) {
                free(rm);
                free(g);
                return dora_errf(err, "'%s': tensor '%s': row %lld holds NaN or Inf",
                                 ad->R.t->file, ad->R.t->name,
                                 (long long)(ad->R.transposed ? j : k));
            }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)r, (int)cols, 1.0, rm,
                (int)cols, rm, (int)cols, 0.0, g, (int)r);
    free(rm);
    for (size_t k = 0; k < r; k++)
        if (!isfinite(g[k * r + k])) {
            free(g);
            return dora_errf(err, "'%s': tensor '%s': %s %lld holds values whose squares "
                                  "overflow float64",
                             ad->R.t->file, ad->R.t->name, ad->R.transposed ? "column" : "row",
                             (long long)k);
        }
    *out = g;
    return 0;
}

/* Adapter runs: the modules the adapters adapt (the same in every step). */
static int select_adapted(dora_result *res, const dora_model *base, const stepdata *sd,
                          size_t S, const dora_analysis_opts *opts, module *mods, size_t *nout,
                          int *bad, char **why, dora_err *err)
{
    const dora_adapter *first = sd[0].adapter;
    for (size_t s = 1; s < S; s++)
        for (size_t i = 0; i < sd[s].adapter->nmodules; i++)
            if (!dora_adapter_find(first, sd[s].adapter->modules[i].base_name))
                return dora_errf(err, "'%s' adapts '%s', which '%s' does not: the checkpoints of a "
                                      "run must adapt the same modules",
                                 sd[s].adapter->weights->path, sd[s].adapter->modules[i].base_name,
                                 first->weights->path);
    size_t L = 0, empty = 0;
    const char *first_empty = NULL;
    for (size_t i = 0; i < first->nmodules; i++) {
        const char *name = first->modules[i].base_name;
        if (!kept(opts, name))
            continue;
        const dora_tensor *t = dora_model_find(base, name); /* exists: dora_adapter_check */
        if (t->numel == 0) {
            if (!empty++)
                first_empty = name;
            continue;
        }
        module *md = &mods[L];
        md->base = t;
        md->nsrc = S;
        if (!(md->src = calloc(S, sizeof *md->src)))
            return dora_errf(err, "out of memory");
        *nout = ++L;
        md->lora = first->modules[i].kind == DORA_ADAPTED_LORA;
        md->transposed = md->lora && first->modules[i].fan_in_fan_out;
        md->rows = md->transposed ? t->shape[1] : dora_tensor_rows(t);
        md->cols = md->transposed ? t->shape[0] : dora_tensor_cols(t);
        for (size_t s = 0; s < S; s++) {
            const dora_adapted *ad = dora_adapter_find(sd[s].adapter, name);
            if (!ad)
                return dora_errf(err, "'%s' does not adapt '%s', which '%s' does: the checkpoints "
                                      "of a run must adapt the same modules",
                                 sd[s].adapter->weights->path, name, first->weights->path);
            if ((ad->kind == DORA_ADAPTED_LORA) != md->lora ||
                (md->lora && ad->fan_in_fan_out != first->modules[i].fan_in_fan_out))
                return dora_errf(err, "'%s': module '%s' is adapted differently than in '%s'",
                                 sd[s].adapter->weights->path, name, first->weights->path);
            if (!md->lora) {
                md->src[s].dense = ad->saved;
                continue;
            }
            md->src[s].ad = ad;
            md->src[s].off = md->rsum;
            md->rsum += ad->r;
            if (bad[s])
                continue; /* a file of the step already faulted */
            const void *fault;
            int gr = gram(ad, &md->src[s].gram, &fault, err);
            if (gr < 0)
                return -1;
            if (gr == 1) { /* the adapter file shrank: the step is left out */
                char buf[1200];
                snprintf(buf, sizeof buf, "'%s' changed while it was read (truncated?)",
                         ad->R.t->file);
                bad[s] = 1;
                if (!(why[s] = strdup(buf)))
                    return dora_errf(err, "out of memory");
            }
        }
    }
    note_empty(res, empty, first_empty, base);
    return 0;
}

/* Choose the tensors to analyse; fills mods (allocated) and their step sources. */
static int select_modules(dora_result *res, const dora_model *base, const stepdata *sd, size_t S,
                          const dora_analysis_opts *opts, module **out, size_t *nout, int *bad,
                          char **why, dora_err *err)
{
    size_t cap = sd[0].adapter ? sd[0].adapter->nmodules : base->ntensors;
    module *mods = calloc(cap ? cap : 1, sizeof *mods);
    size_t L = 0;
    if (!mods)
        return dora_errf(err, "out of memory");
    int rc = sd[0].adapter ? select_adapted(res, base, sd, S, opts, mods, &L, bad, why, err)
                           : select_dense(res, base, sd, S, opts, mods, &L, err);
    if (rc != 0) {
        free_modules(mods, L);
        return -1;
    }
    qsort(mods, L, sizeof *mods, module_cmp);
    *out = mods;
    *nout = L;
    return 0;
}

static int alloc_result(dora_result *res, const module *mods, size_t S, size_t L, int per_row)
{
    if (dora_result_alloc(res, S, L) != 0)
        return -1;
    for (size_t l = 0; l < L; l++) {
        if (!(res->modules[l] = strdup(mods[l].base->name)))
            return -1;
        res->layer[l] = dora_layer_index(mods[l].base->name);
        res->rows[l] = mods[l].rows;
        res->cols[l] = mods[l].cols;
        res->rank[l] = mods[l].lora ? (int32_t)mods[l].src[0].ad->r : 0;
    }
    if (per_row) {
        res->m0 = calloc(L ? L : 1, sizeof *res->m0);
        res->m = calloc(L ? L : 1, sizeof *res->m);
        res->cos = calloc(L ? L : 1, sizeof *res->cos);
        res->one_minus_cos = calloc(L ? L : 1, sizeof *res->one_minus_cos);
        if (!res->m0 || !res->m || !res->cos || !res->one_minus_cos)
            return -1;
        for (size_t l = 0; l < L; l++) {
            size_t k = (size_t)mods[l].rows;
            res->m0[l] = calloc(k, sizeof **res->m0);
            res->m[l] = calloc(S * k, sizeof **res->m);
            res->cos[l] = calloc(S * k, sizeof **res->cos);
            res->one_minus_cos[l] = calloc(S * k, sizeof **res->one_minus_cos);
            if (!res->m0[l] || !res->m[l] || !res->cos[l] || !res->one_minus_cos[l])
                return -1;
        }
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

/* Split every module into row chunks; boundaries depend only on the shapes. */
static int make_chunks(job *jb, size_t L, double **pool_d, int64_t **pool_z, dora_err *err)
{
    size_t n = 0;
    for (size_t l = 0; l < L; l++) {
        int64_t per = chunk_rows(&jb->mods[l]);
        n += (size_t)((jb->mods[l].rows + per - 1) / per);
    }
    jb->chunks = calloc(n ? n : 1, sizeof *jb->chunks);
    *pool_d = calloc(2 * n * jb->S + 1, sizeof **pool_d);
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
            ch->dm_sum = *pool_d + 2 * c * jb->S;
            ch->dd_sum = ch->dm_sum + jb->S;
            ch->zero = *pool_z + c * jb->S;
        }
    }
    jb->nchunks = n;
    return 0;
}

static int add_failure(dora_result *res, const char *msg)
{
    char **nf = realloc(res->failures, (res->nfailures + 1) * sizeof *nf);
    if (!nf)
        return -1;
    res->failures = nf;
    if (!(nf[res->nfailures] = strdup(msg)))
        return -1;
    res->nfailures++;
    return 0;
}

/* Open every step: a full model, or an adapter checked against the base. In a
 * Trainer folder, a checkpoint whose files are not all there yet (still being
 * written) is left out and recorded as a failure; the others go on. Fills
 * sd[0..*kept) and idx (the kept steps' positions in run->steps). */
static int open_steps(const dora_run *run, const dora_model *base, stepdata *sd, size_t *idx,
                      size_t *kept, dora_result *res, dora_err *err)
{
    size_t k = 0;
    for (size_t s = 0; s < run->nsteps; s++) {
        dora_model_kind kind;
        stepdata *d = &sd[k];
        if (dora_model_probe(run->steps[s].path, &kind, NULL, err) != 0)
            return -1;
        /* an adapter that discovery opened is borrowed, not parsed again */
        d->borrowed = kind == DORA_MODEL_ADAPTER && run->steps[s].adapter != NULL;
        if (d->borrowed)
            d->adapter = run->steps[s].adapter;
        int r = kind == DORA_MODEL_ADAPTER
                    ? ((!d->borrowed &&
                        dora_adapter_open(&d->adapter, run->steps[s].path, err) != 0) ||
                       dora_adapter_check(d->adapter, base, err) != 0)
                    : dora_model_open(&d->model, run->steps[s].path, err) != 0;
        if (r) {
            dora_model_close(d->model);
            if (!d->borrowed)
                dora_adapter_close(d->adapter);
            d->model = NULL;
            d->adapter = NULL;
            d->borrowed = 0;
            if (!(err->missing && run->layout == DORA_RUN_TRAINER && run->nsteps > 1))
                return -1;
            char buf[DORA_ERR_MAX + 64];
            snprintf(buf, sizeof buf, "step %lld left out, incomplete: %s",
                     (long long)run->steps[s].step, err->msg);
            if (add_failure(res, buf) != 0)
                return dora_errf(err, "out of memory");
            continue;
        }
        if (k > 0 && (d->adapter != NULL) != (sd[0].adapter != NULL))
            return dora_errf(err, "'%s' is %s but '%s' is %s: a run is either full weights or "
                                  "adapters",
                             run->steps[s].path, d->adapter ? "an adapter" : "a full model",
                             run->steps[idx[0]].path,
                             sd[0].adapter ? "an adapter" : "a full model");
        idx[k++] = s;
    }
    *kept = k;
    if (k == 0)
        return dora_err_missing(err, "'%s': no checkpoint is complete (%s)", run->path,
                                res->nfailures ? res->failures[0] : "none found");
    return 0;
}

/* 1 if a file of the step changed since it was opened. */
static const char *step_changed(const stepdata *d)
{
    const dora_model *m = d->model ? d->model : d->adapter->weights;
    for (size_t i = 0; i < m->nfiles; i++)
        if (st_file_changed(m->files[i]))
            return m->files[i]->path;
    return NULL;
}

/* "size:mtime_ns;size:mtime_ns..." of the step's weight files. */
static char *step_stamp(const stepdata *d)
{
    const dora_model *m = d->model ? d->model : d->adapter->weights;
    size_t cap = 48 * (m->nfiles + 1), used = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < m->nfiles; i++)
        used += (size_t)snprintf(s + used, cap - used, "%s%llu:%lld", i ? ";" : "",
                                 (unsigned long long)m->files[i]->size,
                                 (long long)m->files[i]->mtime_ns);
    return s;
}

/* Drop the steps marked in BAD from the result, keeping the order. */
static void drop_steps(dora_result *res, const int *bad)
{
    const size_t S = res->nsteps, L = res->nmodules;
    size_t k = 0;
    for (size_t s = 0; s < S; s++) {
        if (bad[s]) {
            free(res->step_paths[s]);
            free(res->step_stamps[s]);
            continue;
        }
        res->steps[k] = res->steps[s];
        res->step_paths[k] = res->step_paths[s];
        res->step_stamps[k] = res->step_stamps[s];
        memmove(res->delta_m + k * L, res->delta_m + s * L, L * sizeof *res->delta_m);
        memmove(res->delta_d + k * L, res->delta_d + s * L, L * sizeof *res->delta_d);
        memmove(res->zero_rows + k * L, res->zero_rows + s * L, L * sizeof *res->zero_rows);
        for (size_t l = 0; res->m && l < L; l++) {
            size_t rows = (size_t)res->rows[l];
            memmove(res->m[l] + k * rows, res->m[l] + s * rows, rows * sizeof **res->m);
            memmove(res->cos[l] + k * rows, res->cos[l] + s * rows, rows * sizeof **res->cos);
            memmove(res->one_minus_cos[l] + k * rows, res->one_minus_cos[l] + s * rows,
                    rows * sizeof **res->one_minus_cos);
        }
        k++;
    }
    res->nsteps = k;
}

int dora_analyze_run(dora_result *res, const char *name, const dora_model *base,
                     const char *base_path, const dora_run *run, const dora_analysis_opts *opts,
                     dora_err *err)
{
    /* Before any BLAS call (the Gram matrices come first): our threads split the
     * work, and each GEMM is small and runs on its caller. Once per process:
     * analyses may run at once (batch), and OpenBLAS's setter reallocates its
     * buffers unlocked; and a first multi-threaded call from two threads at
     * once (OpenMP build) gave a wrong Gram matrix, rarely (1 run in ~50). */
    pthread_once(&blas_once, blas_single);
    memset(res, 0, sizeof *res);
    size_t S = 0;
    const size_t S0 = run->nsteps;
    stepdata *sd = calloc(S0 ? S0 : 1, sizeof *sd);
    size_t *idx = calloc(S0 ? S0 : 1, sizeof *idx);
    int *bad = calloc(S0 ? S0 : 1, sizeof *bad);
    char **why = calloc(S0 ? S0 : 1, sizeof *why);
    module *mods = NULL;
    size_t L = 0;
    double *pool_d = NULL;
    int64_t *pool_z = NULL;
    job jb;
    memset(&jb, 0, sizeof jb);
    pthread_mutex_init(&jb.lock, NULL);
    int rc = -1;

    res->method = "ft";
    res->name = strdup(name);
    res->source_path = strdup(run->path);
    res->base_path = strdup(base_path);
    if (!sd || !idx || !bad || !why || !res->name || !res->source_path || !res->base_path) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (S0 == 0) {
        dora_errf(err, "'%s': the run has no checkpoints", run->path);
        goto done;
    }
    if (open_steps(run, base, sd, idx, &S, res, err) != 0)
        goto done;
    if (sd[0].adapter) {
        res->method = "lora";
        for (size_t s = 0; s < S; s++)
            if (strcmp(sd[s].adapter->method, "dora") == 0)
                res->method = "dora";
    }
    /* the hook runs before any byte of data is read (the Gram matrices of
     * select_modules read the adapters' factors) */
    if (opts->after_open)
        opts->after_open(opts->after_open_ctx);
    if (select_modules(res, base, sd, S, opts, &mods, &L, bad, why, err) != 0)
        goto done;
    if (L == 0) {
        dora_errf(err, "run '%s': no tensor to analyse (none of rank >= 2 and floating type is in "
                       "both the base '%s' and every checkpoint%s)",
                  name, base_path, opts->include || opts->exclude ? " and kept by the filters" : "");
        goto done;
    }
    if (alloc_result(res, mods, S, L, opts->per_row) != 0) {
        dora_errf(err, "out of memory for the results of run '%s'", name);
        goto done;
    }
    for (size_t s = 0; s < S; s++) {
        res->steps[s] = run->steps[idx[s]].step;
        if (!(res->step_paths[s] = strdup(run->steps[idx[s]].path)) ||
            !(res->step_stamps[s] = step_stamp(&sd[s]))) {
            dora_errf(err, "out of memory");
            goto done;
        }
    }

    jb.S = S;
    jb.mods = mods;
    jb.res = res;
    jb.per_row = opts->per_row;
    jb.step_bad = bad;
    jb.step_why = why;
    if (make_chunks(&jb, L, &pool_d, &pool_z, err) != 0)
        goto done;
    if (dora_guard_install() != 0) {
        dora_errf(err, "cannot install the SIGBUS guard");
        goto done;
    }
    if (run_jobs(&jb, opts->threads, err) != 0)
        goto done;

    /* A file that changed without faulting (rewritten in place, or shrunk
     * within its last page) is caught here; the base is needed by all. */
    for (size_t i = 0; i < base->nfiles; i++)
        if (st_file_changed(base->files[i])) {
            dora_errf(err, "'%s' changed while it was read: the base is needed for every result",
                      base->files[i]->path);
            goto done;
        }
    size_t nbad = 0;
    for (size_t s = 0; s < S; s++) {
        const char *changed = bad[s] ? NULL : step_changed(&sd[s]);
        if (changed) {
            char buf[1200];
            snprintf(buf, sizeof buf, "'%s' changed while it was read", changed);
            why[s] = strdup(buf);
            bad[s] = 1;
        }
        if (bad[s]) {
            char buf[1400];
            snprintf(buf, sizeof buf, "step %lld left out: %s", (long long)res->steps[s],
                     why[s] ? why[s] : "a file changed while it was read");
            if (add_failure(res, buf) != 0) {
                dora_errf(err, "out of memory");
                goto done;
            }
            nbad++;
        }
    }
    if (nbad == S) {
        dora_errf(err, "run '%s': %s", name, res->failures[res->nfailures - 1]);
        goto done;
    }

    /* Fixed-order reduction: chunk order is module order, then row order. */
    for (size_t c = 0; c < jb.nchunks; c++) {
        const chunk *ch = &jb.chunks[c];
        for (size_t s = 0; s < S; s++) {
            res->delta_m[s * L + ch->module] += ch->dm_sum[s];
            res->delta_d[s * L + ch->module] += ch->dd_sum[s];
            res->zero_rows[s * L + ch->module] += ch->zero[s];
        }
    }
    for (size_t s = 0; s < S; s++)
        for (size_t l = 0; l < L; l++) {
            res->delta_m[s * L + l] /= (double)mods[l].rows;
            res->delta_d[s * L + l] /= (double)mods[l].rows;
        }
    if (nbad)
        drop_steps(res, bad);
    rc = 0;
done:
    pthread_mutex_destroy(&jb.lock);
    free(jb.chunks);
    free(pool_d);
    free(pool_z);
    free_modules(mods, L);
    for (size_t s = 0; sd && s < S0; s++) {
        dora_model_close(sd[s].model);
        if (!sd[s].borrowed)
            dora_adapter_close(sd[s].adapter);
    }
    for (size_t s = 0; why && s < S0; s++)
        free(why[s]);
    free(why);
    free(bad);
    free(idx);
    free(sd);
    if (rc != 0)
        dora_result_release(res);
    return rc;
}

int dora_result_alloc(dora_result *r, size_t S, size_t L)
{
    r->nsteps = S;
    r->nmodules = L;
    r->steps = calloc(S + 1, sizeof *r->steps);
    r->step_paths = calloc(S + 1, sizeof *r->step_paths);
    r->step_stamps = calloc(S + 1, sizeof *r->step_stamps);
    r->modules = calloc(L + 1, sizeof *r->modules);
    r->layer = calloc(L + 1, sizeof *r->layer);
    r->rows = calloc(L + 1, sizeof *r->rows);
    r->cols = calloc(L + 1, sizeof *r->cols);
    r->rank = calloc(L + 1, sizeof *r->rank);
    r->delta_m = calloc(S * L + 1, sizeof *r->delta_m);
    r->delta_d = calloc(S * L + 1, sizeof *r->delta_d);
    r->zero_rows = calloc(S * L + 1, sizeof *r->zero_rows);
    return r->steps && r->step_paths && r->step_stamps && r->modules && r->layer && r->rows &&
                   r->cols && r->rank && r->delta_m && r->delta_d && r->zero_rows
               ? 0
               : -1;
}

void dora_result_release(dora_result *res)
{
    if (!res)
        return;
    for (size_t s = 0; s < res->nsteps && res->step_paths; s++)
        free(res->step_paths[s]);
    for (size_t s = 0; s < res->nsteps && res->step_stamps; s++)
        free(res->step_stamps[s]);
    free(res->step_stamps);
    for (size_t l = 0; l < res->nmodules && res->modules; l++) {
        free(res->modules[l]);
        if (res->m0)
            free(res->m0[l]);
        if (res->m)
            free(res->m[l]);
        if (res->cos)
            free(res->cos[l]);
        if (res->one_minus_cos)
            free(res->one_minus_cos[l]);
    }
    free(res->m0);
    free(res->m);
    free(res->cos);
    free(res->one_minus_cos);
    free(res->steps);
    free(res->step_paths);
    free(res->modules);
    free(res->layer);
    free(res->rows);
    free(res->cols);
    free(res->rank);
    free(res->delta_m);
    free(res->delta_d);
    free(res->zero_rows);
    for (size_t i = 0; i < res->nnotes; i++)
        free(res->notes[i]);
    free(res->notes);
    for (size_t i = 0; i < res->nfailures; i++)
        free(res->failures[i]);
    free(res->failures);
    free(res->name);
    free(res->source_path);
    free(res->base_path);
    memset(res, 0, sizeof *res);
}
