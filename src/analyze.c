/* analyze.c - per-run, per-step, per-tensor dM and dD; see include/dora/analyze.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/analyze.h"
#include "dora/kernel.h"
#include "util.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES (1u << 20) /* base bytes per work unit: enough to amortise, small for balance */

int32_t dora_layer_index(const char *name)
{
    const char *p = name;
    while (*p) {
        const char *end = strchr(p, '.');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && n <= 9 && strspn(p, "0123456789") == n)
            return (int32_t)strtol(p, NULL, 10);
        if (!end)
            break;
        p = end + 1;
    }
    return -1;
}

typedef struct module {
    const dora_tensor *base;
    const dora_tensor **ck; /* [S] */
    int64_t rows, cols;
} module;

typedef struct chunk {
    size_t module;
    int64_t row0, row1;
    double *dm_sum, *dd_sum; /* [S] */
    int64_t *zero;           /* [S] */
} chunk;

typedef struct job {
    size_t S;
    module *mods;
    chunk *chunks;
    size_t nchunks;
    dora_result *res;
    int per_row;
    size_t next; /* atomic: next chunk to take */
    int failed;  /* atomic */
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

static int run_chunk(job *jb, chunk *c)
{
    const module *md = &jb->mods[c->module];
    const size_t S = jb->S, cols = (size_t)md->cols;
    const size_t sa = dora_dtype_size(md->base->dtype);
    for (size_t s = 0; s < S; s++) {
        c->dm_sum[s] = c->dd_sum[s] = 0;
        c->zero[s] = 0;
    }
    for (int64_t r = c->row0; r < c->row1; r++) {
        const unsigned char *a = md->base->data ? md->base->data + (size_t)r * cols * sa : NULL;
        for (size_t s = 0; s < S; s++) {
            const dora_tensor *t = md->ck[s];
            const unsigned char *b = t->data ? t->data + (size_t)r * cols * dora_dtype_size(t->dtype) : NULL;
            dora_rowsums sums;
            dora_rowstat st;
            int side;
            dora_row_sums(a, md->base->dtype, b, t->dtype, cols, &sums);
            if (dora_row_finish(&sums, &st, &side) != 0) {
                const dora_tensor *bad = side ? t : md->base;
                job_fail(jb, "'%s': tensor '%s': row %lld holds NaN or Inf (or values whose squares "
                             "overflow float64)",
                         bad->file, bad->name, (long long)r);
                return -1;
            }
            c->dm_sum[s] += st.dm;
            c->dd_sum[s] += st.one_minus_cos;
            c->zero[s] += st.zero;
            if (jb->per_row) {
                dora_result *res = jb->res;
                size_t k = (size_t)md->rows, l = c->module;
                if (s == 0)
                    res->m0[l][r] = st.m0;
                res->m[l][s * k + (size_t)r] = st.mt;
                res->cos[l][s * k + (size_t)r] = 1.0 - st.one_minus_cos;
                res->one_minus_cos[l][s * k + (size_t)r] = st.one_minus_cos;
            }
        }
    }
    return 0;
}

static void *worker(void *arg)
{
    job *jb = arg;
    for (;;) {
        if (__atomic_load_n(&jb->failed, __ATOMIC_ACQUIRE))
            break;
        size_t i = __atomic_fetch_add(&jb->next, 1, __ATOMIC_RELAXED);
        if (i >= jb->nchunks)
            break;
        if (run_chunk(jb, &jb->chunks[i]) != 0)
            break;
    }
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

/* Choose the tensors to analyse; fills mods (allocated) and their checkpoint views. */
static int select_modules(dora_result *res, const dora_model *base, dora_model **ck, size_t S,
                          const dora_analysis_opts *opts, module **out, size_t *nout,
                          dora_err *err)
{
    module *mods = calloc(base->ntensors ? base->ntensors : 1, sizeof *mods);
    if (!mods)
        return dora_errf(err, "out of memory");
    size_t L = 0, missing = 0, skipped_type = 0;
    const char *first_missing = NULL;
    for (size_t i = 0; i < base->ntensors; i++) {
        const dora_tensor *t = base->by_name[i];
        if (t->ndim < 2 || !dora_dtype_is_analysable(t->dtype) || t->shape[0] == 0) {
            if (t->ndim >= 2 && !dora_dtype_is_analysable(t->dtype))
                skipped_type++;
            continue;
        }
        if (opts->include && regexec(opts->include, t->name, 0, NULL, 0) != 0)
            continue;
        if (opts->exclude && regexec(opts->exclude, t->name, 0, NULL, 0) == 0)
            continue;
        module *md = &mods[L];
        md->base = t;
        md->rows = dora_tensor_rows(t);
        md->cols = dora_tensor_cols(t);
        md->ck = calloc(S, sizeof *md->ck);
        if (!md->ck) {
            dora_errf(err, "out of memory");
            goto fail;
        }
        int present = 1;
        for (size_t s = 0; s < S; s++) {
            const dora_tensor *c = dora_model_find(ck[s], t->name);
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
                dora_errf(err, "'%s': tensor '%s' has shape %s, but %s in the base '%s'", c->file,
                          t->name, s1, s0, t->file);
                free(md->ck);
                goto fail;
            }
            if (!dora_dtype_is_analysable(c->dtype)) {
                dora_errf(err, "'%s': tensor '%s' is %s, not a floating type (the base has %s)",
                          c->file, t->name, dora_dtype_name(c->dtype), dora_dtype_name(t->dtype));
                free(md->ck);
                goto fail;
            }
            md->ck[s] = c;
        }
        if (!present) {
            free(md->ck);
            missing++;
            continue;
        }
        L++;
    }
    if (missing)
        result_note(res, "%zu tensor(s) of the base are missing from a checkpoint and were left "
                         "out (first: '%s')",
                    missing, first_missing);
    if (skipped_type)
        result_note(res, "%zu non-floating tensor(s) of rank >= 2 were left out", skipped_type);
    qsort(mods, L, sizeof *mods, module_cmp);
    *out = mods;
    *nout = L;
    return 0;
fail:
    for (size_t i = 0; i < L; i++)
        free(mods[i].ck);
    free(mods);
    return -1;
}

static int alloc_result(dora_result *res, const module *mods, size_t S, size_t L, int per_row)
{
    res->nsteps = S;
    res->nmodules = L;
    res->steps = calloc(S, sizeof *res->steps);
    res->step_paths = calloc(S, sizeof *res->step_paths);
    res->modules = calloc(L ? L : 1, sizeof *res->modules);
    res->layer = calloc(L ? L : 1, sizeof *res->layer);
    res->rows = calloc(L ? L : 1, sizeof *res->rows);
    res->cols = calloc(L ? L : 1, sizeof *res->cols);
    res->delta_m = calloc(S * L + 1, sizeof *res->delta_m);
    res->delta_d = calloc(S * L + 1, sizeof *res->delta_d);
    res->zero_rows = calloc(S * L + 1, sizeof *res->zero_rows);
    if (!res->steps || !res->step_paths || !res->modules || !res->layer || !res->rows ||
        !res->cols || !res->delta_m || !res->delta_d || !res->zero_rows)
        return -1;
    for (size_t l = 0; l < L; l++) {
        if (!(res->modules[l] = strdup(mods[l].base->name)))
            return -1;
        res->layer[l] = dora_layer_index(mods[l].base->name);
        res->rows[l] = mods[l].rows;
        res->cols[l] = mods[l].cols;
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

/* Split every module into row chunks of about CHUNK_BYTES of base data. */
static int make_chunks(job *jb, size_t L, double **pool_d, int64_t **pool_z, dora_err *err)
{
    size_t n = 0;
    for (size_t l = 0; l < L; l++) {
        const module *md = &jb->mods[l];
        uint64_t row_bytes = (uint64_t)md->cols * dora_dtype_size(md->base->dtype);
        int64_t per = row_bytes ? (int64_t)(CHUNK_BYTES / row_bytes) : md->rows;
        if (per < 1)
            per = 1;
        n += (size_t)((md->rows + per - 1) / per);
    }
    jb->chunks = calloc(n ? n : 1, sizeof *jb->chunks);
    *pool_d = calloc(2 * n * jb->S + 1, sizeof **pool_d);
    *pool_z = calloc(n * jb->S + 1, sizeof **pool_z);
    if (!jb->chunks || !*pool_d || !*pool_z)
        return dora_errf(err, "out of memory for %zu work units", n);
    size_t c = 0;
    for (size_t l = 0; l < L; l++) {
        const module *md = &jb->mods[l];
        uint64_t row_bytes = (uint64_t)md->cols * dora_dtype_size(md->base->dtype);
        int64_t per = row_bytes ? (int64_t)(CHUNK_BYTES / row_bytes) : md->rows;
        if (per < 1)
            per = 1;
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

int dora_analyze_run(dora_result *res, const char *name, const dora_model *base,
                     const char *base_path, const dora_run *run, const dora_analysis_opts *opts,
                     dora_err *err)
{
    memset(res, 0, sizeof *res);
    const size_t S = run->nsteps;
    dora_model **ck = calloc(S ? S : 1, sizeof *ck);
    module *mods = NULL;
    size_t L = 0;
    double *pool_d = NULL;
    int64_t *pool_z = NULL;
    job jb;
    memset(&jb, 0, sizeof jb);
    pthread_mutex_init(&jb.lock, NULL);
    int rc = -1;

    res->method = run->method;
    res->name = strdup(name);
    res->source_path = strdup(run->path);
    res->base_path = strdup(base_path);
    if (!ck || !res->name || !res->source_path || !res->base_path) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (S == 0) {
        dora_errf(err, "'%s': the run has no checkpoints", run->path);
        goto done;
    }
    for (size_t s = 0; s < S; s++)
        if (dora_model_open(&ck[s], run->steps[s].path, err) != 0)
            goto done;
    if (select_modules(res, base, ck, S, opts, &mods, &L, err) != 0)
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
        res->steps[s] = run->steps[s].step;
        if (!(res->step_paths[s] = strdup(run->steps[s].path))) {
            dora_errf(err, "out of memory");
            goto done;
        }
    }

    jb.S = S;
    jb.mods = mods;
    jb.res = res;
    jb.per_row = opts->per_row;
    if (make_chunks(&jb, L, &pool_d, &pool_z, err) != 0)
        goto done;
    if (run_jobs(&jb, opts->threads, err) != 0)
        goto done;

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
    rc = 0;
done:
    pthread_mutex_destroy(&jb.lock);
    free(jb.chunks);
    free(pool_d);
    free(pool_z);
    for (size_t l = 0; l < L; l++)
        free(mods[l].ck);
    free(mods);
    for (size_t s = 0; s < S; s++)
        dora_model_close(ck ? ck[s] : NULL);
    free(ck);
    if (rc != 0)
        dora_result_release(res);
    return rc;
}

void dora_result_release(dora_result *res)
{
    if (!res)
        return;
    for (size_t s = 0; s < res->nsteps && res->step_paths; s++)
        free(res->step_paths[s]);
    for (size_t l = 0; l < res->nmodules && res->modules; l++) {
        free(res->modules[l]);
        if (res->m0) {
            free(res->m0[l]);
            free(res->m[l]);
            free(res->cos[l]);
            free(res->one_minus_cos[l]);
        }
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
    free(res->delta_m);
    free(res->delta_d);
    free(res->zero_rows);
    for (size_t i = 0; i < res->nnotes; i++)
        free(res->notes[i]);
    free(res->notes);
    free(res->name);
    free(res->source_path);
    free(res->base_path);
    memset(res, 0, sizeof *res);
}
