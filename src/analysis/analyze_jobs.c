/* analyze_jobs.c - the work of dora_analyze_run: the dense and low-rank passes
 * over the row chunks analyze_plan.c made, and the threads that take them;
 * see include/dora/analyze.h. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "analysis/analyze_work.h"
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
        const size_t i = s - c->s0; /* the chunk's steps are s0 .. s1 - 1 */
        c->head_sum[2 * i * n + h] += st->dm;
        c->head_sum[(2 * i + 1) * n + h] += st->one_minus_cos;
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
 * in L1/L2) and each step's pass reads it from there. Rows [r0, r0 + n) of
 * chunk C, row r0 of the base at A0 and of step s at B0[s] (each NULL for a
 * tensor without data), rows contiguous. */
int an_dense_rows(job *jb, chunk *c, workspace *ws, int64_t r0, size_t n,
                  const unsigned char *a0, const unsigned char *const *b0)
{
    const module *md = &jb->mods[c->module];
    const size_t cols = (size_t)md->cols;
    const size_t sa = dora_dtype_size(md->base->dtype);
    const int reuse = jb->S > 1 && md->base->dtype != DORA_DT_F64;
    for (size_t i = 0; i < n; i++) {
        const int64_t r = r0 + (int64_t)i;
        const unsigned char *a = a0 ? a0 + i * cols * sa : NULL;
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
            const unsigned char *b = b0[s] ? b0[s] + i * cols * dora_dtype_size(t->dtype) : NULL;
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
    const int rd = ws->use_read ? an_read_dense(jb, c, ws) : 1;
    ws->used_read = rd <= 0;
    if (rd <= 0)
        return rd;
    const size_t nrow = (size_t)(c->row1 - c->row0);
    const unsigned char *a0 = md->base->data ? md->base->data + (size_t)c->row0 * cols * sa : NULL;
    if (a0)
        an_prefault(a0, nrow * cols * sa);
    for (size_t s = 0; s < jb->S; s++) {
        const dora_tensor *t = md->src[s].dense;
        const size_t rb = cols * dora_dtype_size(t->dtype);
        ws->bp[s] = t->data ? t->data + (size_t)c->row0 * rb : NULL;
        if (ws->bp[s])
            an_prefault(ws->bp[s], nrow * rb);
    }
    return an_dense_rows(jb, c, ws, c->row0, nrow, a0, ws->bp);
}

static int grow(double **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    double *nb = realloc(*buf, n * sizeof *nb);
    if (!nb)
        return -1;
    util_populate(nb, n * sizeof *nb);
    *buf = nb;
    *cap = n;
    return 0;
}

static void lora_release(workspace *ws)
{
    for (int i = 0; i < LB_N; i++) {
        if (ws->lb[i])
            munmap(ws->lb[i], ws->lcap[i] * sizeof(double));
        ws->lb[i] = NULL;
        ws->lcap[i] = 0;
    }
    ws->rall_module = SIZE_MAX;
}

/* The buffers NEED asks for, each at least that large (contents not kept).
 * When what is mapped and what is asked would together pass BUDGET bytes,
 * all are given back first, so a thread never holds more than the plan
 * allowed it for one chunk. */
static int lora_reserve(workspace *ws, const size_t need[LB_N], uint64_t budget)
{
    uint64_t total = 0;
    for (int i = 0; i < LB_N; i++) {
        size_t n = need[i] > ws->lcap[i] ? need[i] : ws->lcap[i];
        total += ((uint64_t)n * sizeof(double) + 4095) & ~(uint64_t)4095;
    }
    if (total > budget)
        lora_release(ws);
    for (int i = 0; i < LB_N; i++) {
        if (need[i] <= ws->lcap[i])
            continue;
        if (ws->lb[i])
            munmap(ws->lb[i], ws->lcap[i] * sizeof(double));
        if (i == LB_RALL || i == LB_GRAM)
            ws->rall_module = SIZE_MAX;
        /* whole pages: the mapping is 64-byte aligned for dora_lowrank */
        size_t n = (need[i] * sizeof(double) + 4095) / 4096 * 4096 / sizeof(double);
        void *p = mmap(NULL, n * sizeof(double), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        ws->lb[i] = p == MAP_FAILED ? NULL : p;
        ws->lcap[i] = p == MAP_FAILED ? 0 : n;
        if (!ws->lb[i])
            return -1;
        util_populate(p, n * sizeof(double)); /* all of it is written for each chunk */
    }
    return 0;
}

/* Base rows [row0, row1) of a base stored [in, out] as float64 into w0, their
 * squared norms into saa. */
static void load_base_rows(const module *md, int64_t row0, int64_t row1, double *w0, double *saa)
{
    const size_t cols = (size_t)md->cols;
    const dora_tensor *b = md->base;
    const size_t sz = dora_dtype_size(b->dtype);
    /* output row r is column r. Read each stored row's segment [row0, row1)
     * once (contiguous), scatter into the rows. */
    const size_t nb = (size_t)(row1 - row0), out = (size_t)md->rows;
    double seg[256];
    for (size_t j = 0; j < cols; j++) {
        for (size_t i0 = 0; i0 < nb; i0 += 256) {
            size_t m = nb - i0 < 256 ? nb - i0 : 256;
            dora_row_to_f64(b->data + (j * out + (size_t)row0 + i0) * sz, b->dtype, m, seg);
            for (size_t i = 0; i < m; i++)
                w0[(i0 + i) * cols + j] = seg[i];
        }
    }
    for (size_t i = 0; i < nb; i++) {
        double s = 0;
        for (size_t j = 0; j < cols; j++)
            s += w0[i * cols + j] * w0[i * cols + j];
        saa[i] = s;
    }
}

/* The R factors of steps [s0, s1) of module L as float64, stacked in the
 * padded layout of dora_lowrank (zeros beyond their rows and cols columns),
 * and each step's Gram matrix G = R R^T [r, r] after the last, for
 * |s L R|^2 = s^2 l G l^T per row. NaN or Inf in R, or a G whose diagonal
 * overflows, fails the job (named by R's tensor and row). 0 or -1. */
static int load_factors(job *jb, size_t l, size_t s0, size_t s1, workspace *ws)
{
    const module *md = &jb->mods[l];
    const size_t cols = (size_t)md->cols, ld = dora_lowrank_ld(cols);
    const int64_t off0 = md->src[s0].off;
    const size_t rg = (size_t)(md->src[s1 - 1].off + md->src[s1 - 1].ad->r - off0);
    double *rall = ws->lb[LB_RALL], *g = ws->lb[LB_GRAM];
    memset(rall, 0, dora_lowrank_rows(rg) * ld * sizeof *rall);
    for (size_t s = s0; s < s1; s++) {
        const dora_adapted *ad = md->src[s].ad;
        const size_t r = (size_t)ad->r;
        double *rs = rall + (size_t)(md->src[s].off - off0) * ld;
        /* a step dropped (its file shrank) stays zero: reading it again would
         * fault again, and the chunk would be redone forever */
        if (__atomic_load_n(&jb->step_bad[s], __ATOMIC_RELAXED)) {
            g += r * r;
            continue;
        }
        for (size_t k = 0; k < r; k++) {
            double *dst = rs + k * ld;
            if (!ad->R.transposed) {
                const dora_tensor *t = ad->R.t;
                dora_row_to_f64(t->data + k * cols * dora_dtype_size(t->dtype), t->dtype, cols, dst);
            } else {
                for (size_t j = 0; j < cols; j++)
                    dst[j] = dora_matrix_get(&ad->R, (int64_t)k, (int64_t)j);
            }
            for (size_t j = 0; j < cols; j++)
                if (!isfinite(dst[j])) {
                    job_fail(jb, "'%s': tensor '%s': row %lld holds NaN or Inf", ad->R.t->file,
                             ad->R.t->name, (long long)(ad->R.transposed ? j : k));
                    return -1;
                }
        }
        if (r)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)r, (int)cols, 1.0, rs,
                        (int)ld, rs, (int)ld, 0.0, g, (int)r);
        for (size_t k = 0; k < r; k++)
            if (!isfinite(g[k * r + k])) {
                job_fail(jb, "'%s': tensor '%s': %s %lld holds values whose squares overflow "
                             "float64",
                         ad->R.t->file, ad->R.t->name, ad->R.transposed ? "column" : "row",
                         (long long)k);
                return -1;
            }
        g += r * r;
    }
    ws->rall_module = l;
    ws->rall_s0 = s0;
    return 0;
}

/* Map the pages of [p, p + len) now, in one call: fewer, larger mappings than
 * fault-around's 16 pages per fault, and the kernels' prefetches (a prefetch
 * into a page not yet mapped is dropped) find the pages there (measured: FT
 * 2-3%, LoRA 0.28-0.29 -> 0.272 s). Advice only: an error (an old kernel, a
 * shrunk file: MADV_POPULATE_READ returns an error instead of raising SIGBUS)
 * changes nothing, and the reads that follow are still guarded. */
void an_prefault(const void *p, size_t len)
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

/* Rows [row0, row0 + nb) of a LoRA chunk C for its steps: the statistics of
 * each row into C (through add_row). P, SAA: the kernel's products and norms
 * of these rows. */
static int lora_rows(job *jb, chunk *c, workspace *ws, int64_t row0, size_t nb)
{
    const module *md = &jb->mods[c->module];
    const int64_t off0 = md->src[c->s0].off;
    const size_t rg = (size_t)(md->src[c->s1 - 1].off + md->src[c->s1 - 1].ad->r - off0);
    const double *p = ws->lb[LB_P], *saa = ws->lb[LB_SAA], *g = ws->lb[LB_GRAM];
    double *lf = ws->lb[LB_L], *y = ws->lb[LB_Y];
    for (size_t i = 0; i < nb; i++)
        if (!isfinite(saa[i])) {
            nonfinite(jb, md->base, row0 + (int64_t)i);
            return -1;
        }
    for (size_t s = c->s0; s < c->s1; g += (size_t)md->src[s].ad->r * (size_t)md->src[s].ad->r, s++) {
        if (__atomic_load_n(&jb->step_bad[s], __ATOMIC_RELAXED))
            continue;
        const stepsrc *src = &md->src[s];
        const dora_adapted *ad = src->ad;
        const size_t r = (size_t)ad->r;
        /* the rows of L as float64 [nb, r], then Y = L G for all of them in
         * one dgemm: |u|^2 = s^2 l G l^T = s^2 l . y */
        for (size_t i = 0; i < nb; i++) {
            const int64_t row = row0 + (int64_t)i;
            if (!ad->L.transposed) {
                double ss = dora_row_to_f64(ad->L.t->data + (size_t)row *
                                                                (size_t)dora_tensor_cols(ad->L.t) *
                                                                dora_dtype_size(ad->L.t->dtype),
                                            ad->L.t->dtype, r, lf + i * r);
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
                    lf[i * r + k] = v;
                }
            }
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)r, (int)r, 1.0, lf,
                    (int)r, g, (int)r, 0.0, y, (int)r);
        for (size_t i = 0; i < nb; i++) {
            const int64_t row = row0 + (int64_t)i;
            const double *li = lf + i * r, *yi = y + i * r, *pr = p + i * rg + (src->off - off0);
            double sad = 0, sdd = 0;
            for (size_t k = 0; k < r; k++) {
                sad += li[k] * pr[k];
                sdd += li[k] * yi[k];
            }
            dora_rowsums sums = {saa[i], 0, ad->scale * sad, ad->scale * ad->scale * sdd};
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

/* Low-rank steps. For a row a of W0 and the update u = s * l R (l: the row of
 * L), the sums the kernel needs are
 *     sad = a.u = s * l . (R a)      sdd = |u|^2 = s^2 * l G l^T,  G = R R^T
 * so no merged row is formed: R a for the rows of a block and all steps of
 * the chunk's group at once is the product W0[rows] R_group^T (dora_lowrank,
 * reading each base row once for the group), and G is r x r. Merging in blocks
 * would cost the same O(rows * cols * r) and need a [rows, cols] buffer per
 * step. The group's factors stay loaded for the next chunk of the group. */
static int run_chunk_lora(job *jb, chunk *c, workspace *ws)
{
    const module *md = &jb->mods[c->module];
    const size_t cols = (size_t)md->cols, nb = (size_t)c->block;
    const int64_t off0 = md->src[c->s0].off;
    const size_t rg = (size_t)(md->src[c->s1 - 1].off + md->src[c->s1 - 1].ad->r - off0);
    size_t need[LB_N];
    an_lora_need(md, c->s0, c->s1, nb, need);
    if (lora_reserve(ws, need, jb->mem / (uint64_t)jb->threads) != 0) {
        job_fail(jb, "out of memory for the LoRA work buffers of '%s'", md->base->name);
        return -1;
    }
    if ((ws->rall_module != c->module || ws->rall_s0 != c->s0) &&
        load_factors(jb, c->module, c->s0, c->s1, ws) != 0)
        return -1;
    ws->t_start = an_now_ns(); /* the rows' cost, not the factors', chooses how they are read */
    ws->used_read = md->transposed ? -1 : ws->use_read;
    /* add_row's sums go to the thread's [S] arrays, then to the chunk's [s1 - s0] */
    chunk lc = *c;
    lc.dm_sum = ws->dm;
    lc.dd_sum = ws->dd;
    lc.pm_sum = ws->pm;
    lc.am_sum = ws->am;
    lc.zero = ws->zero;
    for (size_t s = c->s0; s < c->s1; s++) {
        ws->dm[s] = ws->dd[s] = ws->pm[s] = ws->am[s] = 0;
        ws->zero[s] = 0;
    }
    for (int64_t b0 = c->row0; b0 < c->row1; b0 += c->block) {
        const size_t n = (size_t)(c->row1 - b0) < nb ? (size_t)(c->row1 - b0) : nb;
        if (md->transposed) {
            load_base_rows(md, b0, b0 + (int64_t)n, ws->lb[LB_W0], ws->lb[LB_SAA]);
            dora_lowrank(ws->lb[LB_W0], DORA_DT_F64, n, cols, ws->lb[LB_RALL], rg, ws->lb[LB_P],
                         ws->lb[LB_SAA], ws->lb[LB_SCRATCH]);
        } else {
            const size_t rb = cols * dora_dtype_size(md->base->dtype);
            const int rd = ws->use_read ? an_read_lora_rows(jb, c, ws, b0, n, rg) : 1;
            if (rd < 0)
                return -1;
            if (rd > 0) {
                ws->used_read = 0;
                an_prefault(md->base->data + (size_t)b0 * rb, n * rb);
                dora_lowrank(md->base->data + (size_t)b0 * rb, md->base->dtype, n, cols,
                             ws->lb[LB_RALL], rg, ws->lb[LB_P], ws->lb[LB_SAA], ws->lb[LB_SCRATCH]);
            }
        }
        if (lora_rows(jb, &lc, ws, b0, n) != 0)
            return -1;
    }
    for (size_t s = c->s0; s < c->s1; s++) {
        c->dm_sum[s - c->s0] = ws->dm[s];
        c->dd_sum[s - c->s0] = ws->dd[s];
        c->pm_sum[s - c->s0] = ws->pm[s];
        c->am_sum[s - c->s0] = ws->am[s];
        c->zero[s - c->s0] = ws->zero[s];
    }
    return 0;
}

static int run_chunk(job *jb, chunk *c, workspace *ws)
{
    for (size_t s = c->s0; s < c->s1; s++) {
        c->dm_sum[s - c->s0] = c->dd_sum[s - c->s0] = 0;
        c->pm_sum[s - c->s0] = c->am_sum[s - c->s0] = 0;
        c->zero[s - c->s0] = 0;
    }
    if (c->head_sum) /* a chunk is redone after a fault: from zero */
        memset(c->head_sum, 0, 2 * (c->s1 - c->s0) * (size_t)c->nheads * sizeof *c->head_sum);
    const int lora = jb->mods[c->module].lora;
    struct readpick *pk = &ws->pick[lora];
    ws->use_read = an_pick_read(pk);
    ws->used_read = -1;
    ws->cold = 0;
    ws->t_start = an_now_ns();
    const int rc = lora ? run_chunk_lora(jb, c, ws) : run_chunk_dense(jb, c, ws);
    if (rc == 0 && ws->used_read >= 0 && !ws->cold) /* a cold chunk's time is the disk's */
        an_pick_record(pk, ws->used_read, an_now_ns() - ws->t_start, (double)c->bytes);
    return rc;
}

int an_owns(const dora_tensor *t, const void *addr)
{
    const st_file *f = t ? t->owner : NULL;
    const unsigned char *a = addr;
    return f && f->map && a >= f->map && a < f->map + f->size;
}

/* A SIGBUS at ADDR while chunk C was read: a file shrank. If it is a step's
 * file, that step is dropped (the others go on) and 0 is returned so that the
 * chunk is redone without it; if it is the base's, or unknown, -1. */
int an_mark_fault(job *jb, const chunk *c, const void *addr)
{
    const module *md = &jb->mods[c->module];
    if (an_owns(md->base, addr)) {
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
            if (an_owns(ts[i], addr)) {
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

/* Chunk C under the SIGBUS guard: a truncated mapping faults inside run_chunk,
 * the guard brings us back here, the step whose file it was is dropped, and the
 * chunk redone. In a function of its own, so that no local of the caller's
 * loop lives across the sigsetjmp. 0, or -1 when the job failed. */
static int run_guarded(job *jb, chunk *c, workspace *ws)
{
    sigjmp_buf env;
    volatile int ok = 0;
    while (!ok) {
        if (sigsetjmp(env, 1) == 0) {
            dora_guard_enter(&env);
            int r = run_chunk(jb, c, ws);
            dora_guard_leave();
            if (r != 0)
                return -1;
            ok = 1;
            dora_progress_add_done(jb->prog, c->bytes, 0);
        } else {
            dora_guard_leave();
            ws->rall_module = SIZE_MAX; /* the factors may be half converted */
            if (an_mark_fault(jb, c, dora_guard_fault()) != 0)
                return -1;
        }
    }
    return 0;
}

static void *worker(void *arg)
{
    job *jb = arg;
    an_blas_single_thread(); /* its GEMMs on this thread alone (OpenMP build) */
    workspace ws;
    memset(&ws, 0, sizeof ws);
    ws.pick[0].way = ws.pick[1].way = 1; /* pread until the mapping measures faster */
    ws.rall_module = SIZE_MAX;
    const size_t S = jb->S ? jb->S : 1;
    ws.dm = calloc(S, sizeof *ws.dm);
    ws.dd = calloc(S, sizeof *ws.dd);
    ws.pm = calloc(S, sizeof *ws.pm);
    ws.am = calloc(S, sizeof *ws.am);
    ws.zero = calloc(S, sizeof *ws.zero);
    ws.bp = calloc(S, sizeof *ws.bp);
    if (!ws.dm || !ws.dd || !ws.pm || !ws.am || !ws.zero || !ws.bp) {
        job_fail(jb, "out of memory");
        goto out;
    }
    for (;;) {
        if (__atomic_load_n(&jb->failed, __ATOMIC_ACQUIRE))
            break;
        size_t u = __atomic_fetch_add(&jb->next, 1, __ATOMIC_RELAXED);
        if (u >= jb->nunits)
            break;
        const size_t l = jb->chunks[jb->units[u]].module;
        if (an_sums_take(jb, l) != 0) {
            job_fail(jb, "out of memory for the sums of '%s'", jb->mods[l].base->name);
            goto out;
        }
        for (size_t i = jb->units[u]; i < jb->units[u + 1]; i++)
            if (run_guarded(jb, &jb->chunks[i], &ws) != 0)
                goto out;
        an_sums_done(jb, l, jb->units[u + 1] - jb->units[u]);
    }
out:
    free(ws.w0);
    free(ws.rbuf);
    free(ws.bp);
    an_close_fds(&ws);
    lora_release(&ws);
    free(ws.dm);
    free(ws.dd);
    free(ws.pm);
    free(ws.am);
    free(ws.zero);
    return NULL;
}

int an_run_jobs(job *jb, dora_err *err)
{
    int threads = jb->threads < 1 ? 1 : jb->threads;
    if ((size_t)threads > jb->nunits)
        threads = jb->nunits ? (int)jb->nunits : 1;
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
