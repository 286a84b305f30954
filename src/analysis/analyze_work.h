/* analyze_work.h - what analyze_jobs.c (the passes and their threads) and analyze_read.c
 * (how a chunk's rows are read) share: each thread's buffers, and the functions each
 * calls of the other. */
#ifndef DORA_ANALYZE_WORK_H
#define DORA_ANALYZE_WORK_H

#include "analysis/analyze_int.h"
#include "dora/safetensors.h"

#include <stddef.h>
#include <stdint.h>

/* Per-thread buffers: the dense path's row buffer, grown as needed, and the
 * LoRA path's, mapped anonymously so that a buffer given back (to fit the
 * budget for another module) leaves the process. */
typedef struct workspace {
    double *w0;      /* dense: one base row in float64 */
    size_t cap_w0;
    double *lb[LB_N]; /* LoRA: the group's R factors in float64, stacked and padded
                         as dora_lowrank wants [lowrank_rows(rg), lowrank_ld(cols)];
                         their Gram matrices; scratch; W0 R^T [nb * rg]; |a|^2 [nb];
                         rows of L [nb * r]; L G [nb * r]; base rows (transposed) */
    size_t lcap[LB_N]; /* doubles mapped for each */
    size_t rall_module, rall_s0; /* group whose factors and Gram matrices are loaded */
    double *dm, *dd;  /* [S] one chunk's sums for add_row, then kept per group */
    double *pm, *am;  /* [S] the same for delta_m_passive and delta_m_active */
    int64_t *zero;    /* [S] */
    const unsigned char **bp; /* [S] dense: where each step's rows of a pass start */
    unsigned char *rbuf; /* dense, read path: the rows of a sub-block of the base and steps */
    size_t cap_rbuf;
    struct rfd {
        const st_file *f;
        int fd; /* -1: not opened (or not the same file): the mapping is read */
    } *fds;
    size_t nfds;
    struct readpick {
        double ns[2], bytes[2]; /* decayed sums of chunk time and bytes: [0] mapping, [1] pread */
        unsigned n[2];          /* chunks timed each way */
        unsigned chunks;        /* chunks run */
        int way;                /* the faster so far: 0 mapping, 1 pread */
        unsigned since;         /* chunks run that way since the other was last tried */
    } pick[2];        /* [0] dense chunks, [1] LoRA chunks (see pick_read) */
    int use_read;     /* this chunk may read with pread (else the mapping) */
    int used_read;    /* what it did: 1 pread, 0 the mapping, -1 neither (copies, transposed) */
    double t_start;   /* when its reading began (after the LoRA factors were loaded), ns */
    int cold;         /* some of its bytes were not cached: read from the mapping (analyze_read.c) */
} workspace;

/* ---- analyze_jobs.c ---- */

/* T's data lies in its file's mapping and ADDR in it. */
int an_owns(const dora_tensor *t, const void *addr);
/* A SIGBUS at ADDR (or a short read there) while chunk C was read: a step's file drops
 * the step (0: the chunk is redone without it); the base's, or an unknown address, fails
 * the job (-1). */
int an_mark_fault(job *jb, const chunk *c, const void *addr);
/* Map the pages of [P, P + LEN) now, in one call (advice: an error changes nothing). */
void an_prefault(const void *p, size_t len);
/* Rows [r0, r0 + n) of dense chunk C, row r0 of the base at A0 and of step s at B0[s]
 * (each NULL for a tensor without data), rows contiguous: their statistics into C. 0, or
 * -1 when the job failed. */
int an_dense_rows(job *jb, chunk *c, workspace *ws, int64_t r0, size_t n,
                  const unsigned char *a0, const unsigned char *const *b0);

/* ---- analyze_read.c ---- */

/* Dense chunk C from pread, and its tensors whose bytes are not all cached from the mapping
 * (WS->cold then set): 0 done, -1 failed, 1 not possible (a tensor without a file
 * descriptor, no memory) or all from the mapping: the caller reads the mapping. */
int an_read_dense(job *jb, chunk *c, workspace *ws);
/* The low-rank products of base rows [b0, b0 + n) of LoRA chunk C (its group's RG rows of
 * R) from pread: 0, -1 failed, 1 not possible or not all cached (the caller reads the
 * mapping). */
int an_read_lora_rows(job *jb, chunk *c, workspace *ws, int64_t b0, size_t n, size_t rg);
/* The thread's descriptors closed. */
void an_close_fds(workspace *ws);
/* CLOCK_MONOTONIC in ns. */
double an_now_ns(void);
/* 1: read the next chunk of P's kind with pread, 0: from the mapping. */
int an_pick_read(const struct readpick *p);
/* A chunk of BYTES read WAY (1 pread, 0 the mapping) took NS: into P. */
void an_pick_record(struct readpick *p, int way, double ns, double bytes);

#endif
