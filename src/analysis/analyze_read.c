/* analyze_read.c - how the passes of analyze_jobs.c read the rows of a chunk: with pread
 * into a per-thread buffer, through a descriptor of each file opened once per thread, or
 * from the mapping, whichever each thread measures faster (an_pick_read). */
#define _DEFAULT_SOURCE /* mincore */
#define _POSIX_C_SOURCE 200809L
#include "analysis/analyze_int.h"
#include "analysis/analyze_work.h"
#include "core/util.h"
#include "dora/kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the dense pass from read(2) instead of the mapping ----
 *
 * On the project's AMD machine (a VM with paravirtualised page tables) the
 * first load from each 4 KiB page of a mapping costs ~1.5 us of CPU even after
 * MADV_POPULATE_READ (the hypervisor fills its own page table entry), more
 * than reading the page: pread of the same bytes into a reused buffer costs
 * ~0.65 us a page, copy included (docs/performance.md); in the 2 MiB folios of a
 * freshly written file the mapping is the cheaper. So a dense chunk may read
 * its rows with pread (an_pick_read, below, decides per thread), in sub-blocks
 * of about READ_BLOCK bytes for the base and each step together (the buffer
 * stays in L2 for the kernel), through a descriptor of each file opened once
 * per thread. The mapping stays for the rest (headers, LoRA factors) and for
 * any file this cannot reopen as the same file. The sums are those of the
 * mapped pass: same kernel, same rows, same order. */
#ifndef READ_BLOCK
#define READ_BLOCK (512u << 10)
#endif

/* Descriptors a thread keeps open at most: a chunk needs its base's file and
 * each step's, so runs of more steps read the mapping; when the list is full
 * it is closed and started again (files come module by module). */
#define READ_FDS 64

/* A descriptor for F on this thread, opened on first use; -1 when F has no
 * mapping or cannot be reopened as the same file (device and inode). A file
 * truncated since it was opened reads short: as a SIGBUS of its mapping. */
static int thread_fd(workspace *ws, const st_file *f)
{
    for (size_t i = 0; i < ws->nfds; i++)
        if (ws->fds[i].f == f)
            return ws->fds[i].fd;
    if (ws->nfds >= READ_FDS)
        an_close_fds(ws);
    struct rfd *n = realloc(ws->fds, (ws->nfds + 1) * sizeof *n);
    if (!n)
        return -1;
    ws->fds = n;
    int fd = f->map && f->path ? open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
    struct stat sb;
    if (fd >= 0 && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_dev != f->dev ||
                    (uint64_t)sb.st_ino != f->ino)) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0) /* it reads cached bytes only (from_mapping): no readahead */
        posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    ws->fds[ws->nfds++] = (struct rfd){f, fd};
    return fd;
}

void an_close_fds(workspace *ws)
{
    for (size_t i = 0; i < ws->nfds; i++)
        if (ws->fds[i].fd >= 0)
            close(ws->fds[i].fd);
    free(ws->fds);
    ws->fds = NULL;
    ws->nfds = 0;
}

/* Read LEN bytes of T's data at byte OFF into DST. 0, or -1 on a short read
 * or an error (the file shrank, or failed: as a SIGBUS of the mapping). */
static int read_rows(int fd, const dora_tensor *t, size_t off, size_t len, unsigned char *dst)
{
    uint64_t pos = (uint64_t)(t->data - t->owner->map) + off;
    while (len) {
        ssize_t k = pread(fd, dst, len, (off_t)pos);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        dst += k;
        pos += (uint64_t)k;
        len -= (size_t)k;
    }
    return 0;
}

/* The thread's read buffer at BYTES or more: 0, or -1 (no memory, or more
 * than READ_MAX: one row of every step of a long run; the mapping is read). */
#define READ_MAX (8u << 20)
static int read_buffer(workspace *ws, size_t bytes)
{
    if (bytes <= ws->cap_rbuf)
        return 0;
    unsigned char *nb = bytes <= READ_MAX ? realloc(ws->rbuf, bytes) : NULL;
    if (!nb)
        return -1;
    util_populate(nb, bytes); /* filled by the first read anyway, at ~1/17 of the faults' cost */
    ws->rbuf = nb;
    ws->cap_rbuf = bytes;
    return 0;
}

/* T's bytes lie in its file's mapping, and the file is open on this thread. */
static int readable(workspace *ws, const dora_tensor *t)
{
    return t->data && t->nbytes && an_owns(t, t->data) && an_owns(t, t->data + t->nbytes - 1) &&
           thread_fd(ws, t->owner) >= 0;
}

/* ---- bytes not in the page cache are read from the mapping ----
 *
 * The files are mapped with MADV_HUGEPAGE (util_map_hint), so the mapping's page faults
 * read what is not cached in 2 MiB folios, which every later run maps with one entry per
 * 2 MiB. pread's readahead fills the cache in small folios instead, and each later mapping
 * of them pays per 4 KiB page (docs/performance.md). So rows not all cached are read from
 * the mapping, and so is the rest of their file: a pread of cached pages that the
 * mapping's readahead marked starts readahead of its own, in small folios. The descriptors
 * pread uses have readahead off, as they read cached bytes only. */

/* Every page of [P, P + LEN) of a mapping is in the page cache (or mincore failed: then
 * the bytes are read as before). */
static int resident(const unsigned char *p, size_t len)
{
    const long ps = sysconf(_SC_PAGESIZE);
    const uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
    unsigned char v[256];
    uintptr_t a = (uintptr_t)p & ~(page - 1);
    const uintptr_t e = (uintptr_t)p + len;
    while (a < e) {
        size_t n = (size_t)((e - a + page - 1) / page);
        n = n < sizeof v ? n : sizeof v;
        if (mincore((void *)a, n * page, v) != 0)
            return 1;
        for (size_t i = 0; i < n; i++)
            if (!(v[i] & 1))
                return 0;
        a += n * page;
    }
    return 1;
}

/* F is among the first N files of JB's cold list. */
static int listed_cold(const job *jb, const st_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (jb->cold[i] == f)
            return 1;
    return 0;
}

/* Read T's rows [R0, R1) (of COLS elements) from the mapping: its file was found not all
 * cached before, or these rows are not (then the file is noted, and WS->cold set). */
static int from_mapping(job *jb, workspace *ws, const dora_tensor *t, int64_t r0, int64_t r1,
                        size_t cols)
{
    const st_file *f = t->owner;
    if (listed_cold(jb, f, __atomic_load_n(&jb->ncold, __ATOMIC_ACQUIRE)))
        return ws->cold = 1;
    const size_t rb = cols * dora_dtype_size(t->dtype), len = (size_t)(r1 - r0) * rb;
    const unsigned char *p = t->data ? t->data + (size_t)r0 * rb : NULL;
    if (!p || !len || !an_owns(t, p) || !an_owns(t, p + len - 1) || resident(p, len))
        return 0;
    pthread_mutex_lock(&jb->lock);
    const size_t n = jb->ncold;
    if (!listed_cold(jb, f, n) && n < AN_COLD_FILES) { /* beyond that, each chunk alone */
        jb->cold[n] = f;
        __atomic_store_n(&jb->ncold, n + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&jb->lock);
    return ws->cold = 1;
}

/* Dense chunk C from pread, each tensor whose bytes are not cached from the mapping
 * (from_mapping): 0 done, -1 failed, 1 not possible (a tensor without a file descriptor,
 * or no memory), or every tensor from the mapping: the caller reads the mapping. */
int an_read_dense(job *jb, chunk *c, workspace *ws)
{
    const module *md = &jb->mods[c->module];
    const size_t cols = (size_t)md->cols, S = jb->S;
    const dora_tensor *base = md->base;
    if (S + 1 > READ_FDS)
        return 1;
    unsigned char mapped[READ_FDS]; /* [0] the base, [1 + s] step s: from the mapping */
    size_t rowb = 0, nmapped = 0;   /* bytes of a row of the tensors read with pread */
    for (size_t i = 0; i <= S; i++) {
        const dora_tensor *t = i ? md->src[i - 1].dense : base;
        mapped[i] = (unsigned char)from_mapping(jb, ws, t, c->row0, c->row1, cols);
        if (!mapped[i] && !readable(ws, t))
            return 1;
        nmapped += mapped[i];
        rowb += mapped[i] ? 0 : cols * dora_dtype_size(t->dtype);
    }
    if (nmapped == S + 1)
        return 1;
    const size_t nrow = (size_t)(c->row1 - c->row0);
    size_t sub = rowb ? READ_BLOCK / rowb : nrow;
    sub = sub < 1 ? 1 : sub > nrow ? nrow : sub;
    if (read_buffer(ws, sub * rowb) != 0)
        return 1;
    for (size_t i = 0; i <= S; i++) {
        const dora_tensor *t = i ? md->src[i - 1].dense : base;
        if (mapped[i])
            an_prefault(t->data + (size_t)c->row0 * cols * dora_dtype_size(t->dtype),
                        nrow * cols * dora_dtype_size(t->dtype));
    }
    const size_t sa = dora_dtype_size(base->dtype);
    for (int64_t r0 = c->row0; r0 < c->row1; r0 += (int64_t)sub) {
        const size_t n = (size_t)(c->row1 - r0) < sub ? (size_t)(c->row1 - r0) : sub;
        unsigned char *pb = ws->rbuf;
        const unsigned char *a0 = mapped[0] ? base->data + (size_t)r0 * cols * sa : pb;
        if (!mapped[0]) {
            if (read_rows(thread_fd(ws, base->owner), base, (size_t)r0 * cols * sa, n * cols * sa,
                          pb) != 0) {
                an_mark_fault(jb, c, base->data); /* the base: the job fails */
                return -1;
            }
            pb += sub * cols * sa;
        }
        for (size_t s = 0; s < S; s++) {
            const dora_tensor *t = md->src[s].dense;
            const size_t sb = dora_dtype_size(t->dtype);
            if (mapped[1 + s]) {
                ws->bp[s] = t->data + (size_t)r0 * cols * sb;
                continue;
            }
            if (!__atomic_load_n(&jb->step_bad[s], __ATOMIC_RELAXED) &&
                read_rows(thread_fd(ws, t->owner), t, (size_t)r0 * cols * sb, n * cols * sb, pb) != 0 &&
                an_mark_fault(jb, c, t->data) != 0) /* a step: dropped, the others go on */
                return -1;
            ws->bp[s] = pb;
            pb += sub * cols * sb;
        }
        if (an_dense_rows(jb, c, ws, r0, n, a0, ws->bp) != 0)
            return -1;
    }
    return 0;
}

/* The low-rank products of base rows [b0, b0 + n) of LoRA chunk C (its group's
 * RG rows of R) from pread, in sub-blocks of READ_BLOCK bytes: each row's
 * products and norm do not depend on the rows beside it in a call, so they are
 * those of one call on the mapping. 0, -1 failed, 1 not possible (the caller
 * reads the mapping). */
int an_read_lora_rows(job *jb, chunk *c, workspace *ws, int64_t b0, size_t n, size_t rg)
{
    const module *md = &jb->mods[c->module];
    const dora_tensor *base = md->base;
    const size_t cols = (size_t)md->cols, rb = cols * dora_dtype_size(base->dtype);
    if (from_mapping(jb, ws, base, b0, b0 + (int64_t)n, cols) || !readable(ws, base))
        return 1;
    size_t sub = rb ? READ_BLOCK / rb : n;
    sub = sub < 1 ? 1 : sub > n ? n : sub;
    if (read_buffer(ws, sub * rb) != 0)
        return 1;
    for (size_t i = 0; i < n; i += sub) {
        const size_t m = n - i < sub ? n - i : sub;
        if (read_rows(thread_fd(ws, base->owner), base, ((size_t)b0 + i) * rb, m * rb, ws->rbuf) != 0) {
            an_mark_fault(jb, c, base->data); /* the base: the job fails */
            return -1;
        }
        dora_lowrank(ws->rbuf, base->dtype, m, cols, ws->lb[LB_RALL], rg, ws->lb[LB_P] + i * rg,
                     ws->lb[LB_SAA] + i, ws->lb[LB_SCRATCH]);
    }
    return 0;
}

/* ---- the mapping or pread: chosen at run time, by each thread, by measurement ----
 *
 * Which reads faster depends on the machine, and on this project's VMs it changed between
 * runs of one day (docs/performance.md): where the first load of a mapped page is cheap,
 * reading the mapping saves pread's copy; where it costs ~1.5 us (a hypervisor's shadow page
 * tables), pread was 2.6x (LoRA) to 5.6x (FT) faster per byte. Both give the same sums (same
 * kernel, rows and order), so the choice changes only the time. Each thread times its chunks
 * (wall time per byte of the chunk, decayed so that a change of state is followed): after its
 * first chunk of a kind (which pays for opening the files and its buffers), PICK_WARM chunks
 * each way in turn, then the faster way; it changes way only for one PICK_MARGIN faster, and
 * tries the slower one chunk in PICK_EVERY x (slower / faster)^2, so that a way that costs
 * several times more is seldom paid for. */
#define PICK_WARM 2
#define PICK_EVERY 64
#define PICK_DECAY 0.9
#define PICK_MARGIN 0.9

double an_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ns per byte of way W */
static double pick_rate(const struct readpick *p, int w)
{
    return p->bytes[w] > 0 ? p->ns[w] / p->bytes[w] : 0;
}

/* 1: read the next chunk with pread, 0: the mapping. */
int an_pick_read(const struct readpick *p)
{
    if (p->chunks == 0)
        return 1;
    if (p->n[0] < PICK_WARM || p->n[1] < PICK_WARM)
        return p->n[1] <= p->n[0]; /* in turn, pread first */
    const int cur = p->way, other = !cur;
    const double r = pick_rate(p, cur) > 0 ? pick_rate(p, other) / pick_rate(p, cur) : 1;
    const double every = r > 1 ? PICK_EVERY * (r * r < 1e6 ? r * r : 1e6) : PICK_EVERY;
    return p->since + 1 >= every ? other : cur;
}

void an_pick_record(struct readpick *p, int way, double ns, double bytes)
{
    if (p->chunks++ == 0)
        return; /* the thread's first chunk of the kind: files opened, buffers faulted in */
    p->ns[way] = PICK_DECAY * p->ns[way] + ns;
    p->bytes[way] = PICK_DECAY * p->bytes[way] + bytes;
    p->n[way]++;
    p->since = way == p->way ? p->since + 1 : 0;
    if (p->n[0] >= PICK_WARM && p->n[1] >= PICK_WARM &&
        pick_rate(p, !p->way) < PICK_MARGIN * pick_rate(p, p->way))
        p->way = !p->way;
}
