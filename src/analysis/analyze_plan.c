/* analyze_plan.c - the plan of a dM/dD pass (an_make_chunks): each module's rows in
 * work units, a LoRA/DoRA module's steps in groups that fit the memory budget, and
 * what one unit's LoRA buffers cost (an_lora_need), and the chunks' sums, kept per
 * module while it is computed and folded into the result when it is done
 * (an_sums_*); analyze_jobs.c runs the units. */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "dora/adapter.h"
#include "dora/kernel.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES (1u << 20) /* base bytes per work unit: enough to amortise, small for balance */

/* The LoRA buffers a chunk of module MD needs for steps [s0, s1) and NB rows
 * per kernel pass, in doubles, into need[LB_N]; their sum in bytes. */
uint64_t an_lora_need(const module *md, size_t s0, size_t s1, size_t nb, size_t need[LB_N])
{
    const size_t cols = (size_t)md->cols;
    size_t rg = 0, rmax = 0, g = 0;
    for (size_t s = s0; s < s1; s++) {
        const size_t r = (size_t)md->src[s].ad->r;
        rg += r;
        g += r * r;
        rmax = r > rmax ? r : rmax;
    }
    need[LB_RALL] = dora_lowrank_rows(rg) * dora_lowrank_ld(cols);
    need[LB_GRAM] = g ? g : 1;
    need[LB_SCRATCH] = dora_lowrank_scratch(rg, cols);
    need[LB_P] = nb * (rg ? rg : 1);
    need[LB_SAA] = nb;
    need[LB_L] = need[LB_Y] = nb * (rmax ? rmax : 1);
    need[LB_W0] = md->transposed ? nb * cols : 0;
    uint64_t bytes = 0;
    for (int i = 0; i < LB_N; i++)
        bytes += ((uint64_t)need[i] * sizeof(double) + 4095) & ~(uint64_t)4095; /* pages */
    return bytes;
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

/* The bytes a chunk of NROWS rows of MD reads for steps [s0, s1): its share
 * of the base tensor and of each step's (a LoRA step's: of its lora_B factor). */
static uint64_t chunk_bytes(const module *md, size_t s0, size_t s1, int64_t nrows)
{
    uint64_t b = md->base->nbytes;
    for (size_t s = s0; s < s1; s++) {
        const stepsrc *src = &md->src[s];
        b += src->dense ? src->dense->nbytes : src->ad && src->ad->L.t ? src->ad->L.t->nbytes : 0;
    }
    return md->rows > 0 ? (uint64_t)((double)b * (double)nrows / (double)md->rows) : 0;
}

/* The plan of one module: its steps in NG groups (group q: steps
 * [gs[q], gs[q + 1])), rows per kernel pass, and row chunks per work unit. */
typedef struct mplan {
    size_t ng, *gs;
    int64_t per, block, nrc; /* rows per chunk, per kernel pass; row chunks */
    size_t parts;            /* work units per group */
} mplan;

/* Rows per kernel pass for a LoRA module under BUDGET bytes a thread: the
 * chunk's rows, halved until every single step fits; 0 if one does not fit
 * even at one row. */
static int64_t lora_block(const job *jb, const module *md, int64_t per, uint64_t budget,
                          uint64_t *worst)
{
    size_t need[LB_N];
    for (int64_t nb = per;; nb = (nb + 1) / 2) {
        int fits = 1;
        for (size_t s = 0; s < jb->S && fits; s++) {
            uint64_t b = an_lora_need(md, s, s + 1, (size_t)nb, need);
            if (b > budget) {
                fits = 0;
                if (nb == 1 && b > *worst)
                    *worst = b;
            }
        }
        if (fits)
            return nb;
        if (nb == 1)
            return 0;
    }
}

/* Group the steps of every LoRA module: as many consecutive steps as fit
 * BUDGET with the module's block. 0, or -1 when out of memory. */
static int lora_groups(const job *jb, const module *md, mplan *pl, uint64_t budget)
{
    size_t need[LB_N];
    pl->ng = 0;
    if (!(pl->gs = malloc((jb->S + 1) * sizeof *pl->gs)))
        return -1;
    for (size_t s0 = 0; s0 < jb->S;) {
        size_t s1 = s0 + 1;
        while (s1 < jb->S && an_lora_need(md, s0, s1 + 1, (size_t)pl->block, need) <= budget)
            s1++;
        pl->gs[pl->ng++] = s0;
        s0 = s1;
    }
    pl->gs[pl->ng] = jb->S;
    return 0;
}

static void free_plans(mplan *pl, size_t L)
{
    for (size_t l = 0; pl && l < L; l++)
        free(pl[l].gs);
    free(pl);
}

/* Plan every LoRA module under JB->mem at JB->threads threads, lowering the
 * thread count while one step does not fit its share. */
static int plan_lora(job *jb, size_t L, mplan *pl, dora_err *err)
{
    if (jb->threads < 1)
        jb->threads = 1;
    for (;; jb->threads--) {
        const uint64_t budget = jb->mem / (uint64_t)jb->threads;
        uint64_t worst = 0;
        size_t l = 0;
        for (; l < L; l++)
            if (jb->mods[l].lora && jb->S &&
                !(pl[l].block = lora_block(jb, &jb->mods[l], pl[l].per, budget, &worst)))
                break;
        if (l == L)
            break;
        if (jb->threads == 1) {
            const module *md = &jb->mods[l];
            return dora_errf(err, "--mem %.1fM is too small: one checkpoint of '%s' (rank up to "
                                  "%lld, %lld columns) needs %.1f MiB for its float64 factors and "
                                  "work buffers; give --mem %lluM or more",
                             (double)jb->mem / 1048576.0, md->base->name, (long long)md->rsum,
                             (long long)md->cols, (double)worst / 1048576.0,
                             (unsigned long long)((worst + 1048575) >> 20));
        }
    }
    const uint64_t budget = jb->mem / (uint64_t)jb->threads;
    size_t units = 0;
    for (size_t l = 0; l < L; l++) {
        if (!jb->mods[l].lora)
            continue;
        if (lora_groups(jb, &jb->mods[l], &pl[l], budget) != 0)
            return dora_errf(err, "out of memory");
        units += pl[l].ng;
    }
    /* Enough units for the threads to share (each loads its group's factors
     * and Gram matrices itself), but units of at least 8 r rows, so that
     * loading (r x r x cols for G) stays a small part of the work. */
    for (size_t l = 0; l < L; l++) {
        const module *md = &jb->mods[l];
        if (!md->lora)
            continue;
        int64_t rmax = 1;
        for (size_t s = 0; s < jb->S; s++)
            rmax = md->src[s].ad->r > rmax ? md->src[s].ad->r : rmax;
        size_t want = jb->threads > 1 && units < 4 * (size_t)jb->threads
                          ? (4 * (size_t)jb->threads + units - 1) / units : 1;
        size_t cap = (size_t)(md->rows / (8 * rmax));
        cap = cap < 1 ? 1 : cap > (size_t)pl[l].nrc ? (size_t)pl[l].nrc : cap;
        pl[l].parts = want < cap ? want : cap;
    }
    return 0;
}

/* Split every module into row chunks and the chunks into work units;
 * boundaries depend only on the shapes, JB->threads and JB->mem. */
int an_make_chunks(job *jb, size_t L, dora_err *err)
{
    mplan *pl = calloc(L ? L : 1, sizeof *pl);
    if (!pl)
        return dora_errf(err, "out of memory");
    for (size_t l = 0; l < L; l++) {
        pl[l].per = pl[l].block = chunk_rows(&jb->mods[l]);
        pl[l].nrc = (jb->mods[l].rows + pl[l].per - 1) / pl[l].per;
        pl[l].ng = pl[l].parts = 1;
    }
    if (plan_lora(jb, L, pl, err) != 0) {
        free_plans(pl, L);
        return -1;
    }
    size_t n = 0, nu = 0;
    for (size_t l = 0; l < L; l++) {
        n += pl[l].ng * (size_t)pl[l].nrc;
        nu += jb->mods[l].lora ? pl[l].ng * pl[l].parts : (size_t)pl[l].nrc;
    }
    jb->nmods = L;
    jb->chunks = calloc(n ? n : 1, sizeof *jb->chunks);
    jb->units = calloc(nu + 1, sizeof *jb->units);
    jb->mod_chunk = calloc(L + 1, sizeof *jb->mod_chunk);
    jb->mod_left = calloc(L ? L : 1, sizeof *jb->mod_left);
    jb->mod_sums = calloc(L ? L : 1, sizeof *jb->mod_sums);
    if (!jb->chunks || !jb->units || !jb->mod_chunk || !jb->mod_left || !jb->mod_sums) {
        free_plans(pl, L);
        return dora_errf(err, "out of memory for %zu work units", n);
    }
    size_t c = 0, u = 0;
    for (size_t l = 0; l < L; l++) {
        const module *md = &jb->mods[l];
        const size_t ng = md->lora ? pl[l].ng : 1;
        size_t off = 0; /* each row chunk: every step once */
        jb->mod_chunk[l] = c;
        for (size_t q = 0; q < ng; q++) {
            const size_t s0 = md->lora ? pl[l].gs[q] : 0, s1 = md->lora ? pl[l].gs[q + 1] : jb->S;
            const size_t parts = md->lora ? pl[l].parts : (size_t)pl[l].nrc;
            for (int64_t k = 0; k < pl[l].nrc; k++, c++) {
                /* PARTS units of near-equal runs of row chunks: chunk k in unit
                 * k * parts / nrc */
                const size_t nrc = (size_t)pl[l].nrc, kk = (size_t)k;
                if (k == 0 || (kk - 1) * parts / nrc != kk * parts / nrc)
                    jb->units[u++] = c;
                chunk *ch = &jb->chunks[c];
                ch->module = l;
                ch->s0 = s0;
                ch->s1 = s1;
                ch->block = pl[l].block;
                ch->row0 = k * pl[l].per;
                ch->row1 = ch->row0 + pl[l].per < md->rows ? ch->row0 + pl[l].per : md->rows;
                ch->sum_off = off;
                off += s1 - s0;
                ch->bytes = chunk_bytes(md, s0, s1, ch->row1 - ch->row0);
            }
        }
        jb->mod_left[l] = c - jb->mod_chunk[l];
    }
    jb->mod_chunk[L] = c;
    jb->units[u] = c;
    jb->nunits = u;
    jb->nchunks = n;
    free_plans(pl, L);
    return 0;
}

void an_plan_free(job *jb)
{
    for (size_t l = 0; jb->mod_sums && l < jb->nmods; l++)
        free(jb->mod_sums[l]);
    free(jb->mod_sums);
    free(jb->mod_left);
    free(jb->mod_chunk);
    free(jb->units);
    free(jb->chunks);
    jb->mod_sums = NULL;
    jb->mod_left = jb->mod_chunk = jb->units = NULL;
    jb->chunks = NULL;
}

/* The sums of module L's chunks, in steps: the last chunk's place and steps. */
static size_t module_sums(const job *jb, size_t l)
{
    const chunk *last = &jb->chunks[jb->mod_chunk[l + 1] - 1];
    return last->sum_off + (last->s1 - last->s0);
}

int an_sums_take(job *jb, size_t l)
{
    int rc = 0;
    pthread_mutex_lock(&jb->lock);
    if (!jb->mod_sums[l]) {
        /* the block: dM, dD, passive, active sums [4][nsum] as doubles, then the zero-row
         * counts [nsum] as int64 (both 8 bytes) */
        const size_t nsum = module_sums(jb, l);
        double *blk = calloc(5 * nsum, sizeof *blk);
        if (!blk) {
            rc = -1;
        } else {
            int64_t *zero = (int64_t *)(void *)(blk + 4 * nsum);
            for (size_t c = jb->mod_chunk[l]; c < jb->mod_chunk[l + 1]; c++) {
                chunk *ch = &jb->chunks[c];
                ch->dm_sum = blk + ch->sum_off;
                ch->dd_sum = blk + nsum + ch->sum_off;
                ch->pm_sum = blk + 2 * nsum + ch->sum_off;
                ch->am_sum = blk + 3 * nsum + ch->sum_off;
                ch->zero = zero + ch->sum_off;
            }
            jb->mod_sums[l] = blk;
        }
    }
    pthread_mutex_unlock(&jb->lock);
    return rc;
}

void an_sums_done(job *jb, size_t l, size_t n)
{
    if (__atomic_sub_fetch(&jb->mod_left[l], n, __ATOMIC_ACQ_REL) != 0)
        return;
    /* every chunk of L is done, and this thread alone sees the count reach 0:
     * the other threads' writes to their chunks are visible (acquire) */
    dora_result *res = jb->res;
    const size_t L = res->nmodules;
    for (size_t c = jb->mod_chunk[l]; c < jb->mod_chunk[l + 1]; c++) {
        chunk *ch = &jb->chunks[c];
        for (size_t s = ch->s0; s < ch->s1; s++) {
            res->delta_m[s * L + l] += ch->dm_sum[s - ch->s0];
            res->delta_d[s * L + l] += ch->dd_sum[s - ch->s0];
            res->zero_rows[s * L + l] += ch->zero[s - ch->s0];
            res->delta_m_passive[s * L + l] += ch->pm_sum[s - ch->s0];
            res->delta_m_active[s * L + l] += ch->am_sum[s - ch->s0];
        }
        ch->dm_sum = ch->dd_sum = ch->pm_sum = ch->am_sum = NULL;
        ch->zero = NULL;
    }
    pthread_mutex_lock(&jb->lock);
    free(jb->mod_sums[l]);
    jb->mod_sums[l] = NULL;
    pthread_mutex_unlock(&jb->lock);
}

void an_sums_finish(job *jb)
{
    dora_result *res = jb->res;
    const size_t S = res->nsteps, L = res->nmodules;
    for (size_t s = 0; s < S; s++)
        for (size_t l = 0; l < L; l++) {
            const double rows = (double)jb->mods[l].rows;
            res->delta_m[s * L + l] /= rows;
            res->delta_d[s * L + l] /= rows;
            res->delta_m_passive[s * L + l] /= rows;
            res->delta_m_active[s * L + l] /= rows;
        }
}
