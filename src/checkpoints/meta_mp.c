/* meta_mp.c - Meta's model-parallel consolidated.NN.pth joined into one
 * model; see include/dora/meta_mp.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/meta_mp.h"
#include "dora/guard.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MP 1000

/* "consolidated.NN.pth" (two or more digits): NN, else -1. */
static long shard_number(const char *name)
{
    const char *p = name + 13;
    size_t nd = strspn(p, "0123456789");
    if (strncmp(name, "consolidated.", 13) != 0 || nd < 2 || nd > 4 || strcmp(p + nd, ".pth"))
        return -1;
    return strtol(p, NULL, 10);
}

int dora_meta_mp_shards(const char *dir, char ***paths, size_t *n, dora_err *err)
{
    *paths = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder: %s", dir, strerror(errno));
    char **v = calloc(MAX_MP, sizeof *v);
    long top = -1;
    int rc = v ? 0 : dora_errf(err, "out of memory");
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        long k = shard_number(de->d_name);
        if (k < 0)
            continue;
        if (k >= MAX_MP)
            rc = dora_errf(err, "'%s/%s': more than %d model-parallel shards", dir, de->d_name,
                           MAX_MP);
        else if (v[k])
            rc = dora_errf(err, "'%s': model-parallel shard %ld twice ('%s')", dir, k,
                           de->d_name);
        else if (!(v[k] = util_join(dir, de->d_name)))
            rc = dora_errf(err, "out of memory");
        top = k > top ? k : top;
    }
    closedir(d);
    for (long k = 0; rc == 0 && k <= top; k++)
        if (!v[k])
            rc = dora_err_missing(err, "'%s': model-parallel shard consolidated.%ld.pth exists "
                                       "but consolidated.%02ld.pth does not",
                                  dir, top, k);
    if (rc == 0 && top < 0)
        rc = dora_errf(err, "'%s': no consolidated.00.pth", dir);
    if (rc != 0) {
        for (long k = 0; v && k < MAX_MP; k++)
            free(v[k]);
        free(v);
        return -1;
    }
    *paths = v;
    *n = (size_t)top + 1;
    return 0;
}

/* How a tensor is split across the ranks: on dim 0 or 1, replicated, or by
 * the embedding's rule (dim 0 or 1 by the model width); -2 when not known. */
enum { REPLICATED = -1, UNKNOWN = -2, EMBEDDING = -3 };

static int split_dim(const char *name)
{
    static const struct {
        const char *suffix;
        int dim;
    } rules[] = {
        {".attention.wq.weight", 0},     {".attention.wk.weight", 0},
        {".attention.wv.weight", 0},     {".feed_forward.w1.weight", 0},
        {".feed_forward.w3.weight", 0},  {".attention.wo.weight", 1},
        {".feed_forward.w2.weight", 1},  {".attention_norm.weight", REPLICATED},
        {".ffn_norm.weight", REPLICATED},
    };
    if (strcmp(name, "output.weight") == 0)
        return 0;
    if (strcmp(name, "tok_embeddings.weight") == 0)
        return EMBEDDING;
    if (strcmp(name, "norm.weight") == 0 || strcmp(name, "rope.freqs") == 0)
        return REPLICATED;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (util_has_suffix(name, rules[i].suffix))
            return rules[i].dim;
    return UNKNOWN;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const dora_tensor *const *)a)->name, (*(const dora_tensor *const *)b)->name);
}

/* The tensors of F sorted by name; NULL when out of memory. */
static const dora_tensor **sorted(const st_file *f)
{
    const dora_tensor **v = malloc((f->ntensors ? f->ntensors : 1) * sizeof *v);
    for (size_t i = 0; v && i < f->ntensors; i++)
        v[i] = &f->tensors[i];
    if (v)
        qsort(v, f->ntensors, sizeof *v, by_name);
    return v;
}

typedef struct join_job {
    const dora_tensor *const *part; /* one per shard */
    size_t n;
    int dim;
    unsigned char *dst;
} join_job;

/* DST = the parts joined along DIM: for each of the leading (product of
 * dims before DIM) blocks, every shard's block in turn. */
static void join_fn(void *arg)
{
    const join_job *j = arg;
    const size_t es = dora_dtype_size(j->part[0]->dtype);
    size_t outer = 1;
    for (int d = 0; d < j->dim; d++)
        outer *= (size_t)j->part[0]->shape[d];
    unsigned char *p = j->dst;
    for (size_t o = 0; o < outer; o++)
        for (size_t k = 0; k < j->n; k++) {
            const size_t chunk = (size_t)j->part[k]->numel / outer * es;
            memcpy(p, j->part[k]->data + o * chunk, chunk);
            p += chunk;
        }
}

static int push_owned(st_file *f, unsigned char *buf)
{
    unsigned char **no = realloc(f->owned, (f->nowned + 1) * sizeof *no);
    if (!no)
        return -1;
    f->owned = no;
    f->owned[f->nowned++] = buf;
    return 0;
}

/* Shard 0's tensor T made whole from PART[0..N-1] joined along DIM. */
static int join_one(st_file *f0, dora_tensor *t, const dora_tensor *const *part, size_t n,
                    int dim, dora_err *err)
{
    if (t->ndim <= dim)
        return dora_errf(err, "'%s': tensor '%s' has %d dims, but its model-parallel shards "
                              "are split on dim %d",
                         f0->path, t->name, t->ndim, dim);
    int64_t whole = 0;
    for (size_t k = 0; k < n; k++) {
        for (int d = 0; d < t->ndim; d++)
            if (d != dim && part[k]->shape[d] != t->shape[d])
                return dora_errf(err, "'%s' and '%s': tensor '%s' differs in dim %d (%lld vs "
                                      "%lld), not only in the split dim %d",
                                 f0->path, part[k]->file, t->name, d, (long long)t->shape[d],
                                 (long long)part[k]->shape[d], dim);
        if (part[k]->shape[dim] > INT64_MAX - whole)
            return dora_errf(err, "'%s': tensor '%s' joined is too large", f0->path, t->name);
        whole += part[k]->shape[dim];
    }
    uint64_t nbytes = 0;
    for (size_t k = 0; k < n; k++)
        nbytes += part[k]->nbytes; /* each checked by its reader; their sum fits the files */
    unsigned char *buf = malloc(nbytes ? (size_t)nbytes : 1);
    if (!buf)
        return dora_errf(err, "out of memory joining '%s' (%llu bytes)", t->name,
                         (unsigned long long)nbytes);
    join_job j = {part, n, dim, buf};
    const void *fault;
    int g = nbytes ? dora_guard_run(join_fn, &j, &fault) : 0;
    if (g != 0 || push_owned(f0, buf) != 0) {
        free(buf);
        return g == 1 ? dora_errf(err, "a shard of '%s' changed while it was read (truncated?)",
                                  f0->path)
                      : dora_errf(err, g ? "cannot install the SIGBUS guard" : "out of memory");
    }
    t->shape[dim] = whole;
    t->numel = nbytes / dora_dtype_size(t->dtype);
    t->nbytes = nbytes;
    t->data = nbytes ? buf : NULL;
    return 0;
}

/* Replicated T: every shard's bytes equal shard 0's. */
static int same_everywhere(const st_file *f0, const dora_tensor *t, const dora_tensor *const *part,
                           size_t n, dora_err *err)
{
    for (size_t k = 1; k < n; k++) {
        int same = part[k]->ndim == t->ndim && part[k]->nbytes == t->nbytes;
        for (int d = 0; same && d < t->ndim; d++)
            same = part[k]->shape[d] == t->shape[d];
        const void *fault;
        int diff = same && t->nbytes ? dora_guard_differ(t->data, part[k]->data,
                                                         (size_t)t->nbytes, &fault)
                                     : !same;
        if (diff < 0)
            return dora_errf(err, "'%s' or '%s' changed while it was read (truncated?)",
                             f0->path, part[k]->file);
        if (diff)
            return dora_errf(err, "'%s' and '%s': tensor '%s' should be the same in every "
                                  "model-parallel shard (it is replicated), but differs",
                             f0->path, part[k]->file, t->name);
    }
    return 0;
}

int dora_meta_mp_join(st_file *const *f, size_t n, dora_err *err)
{
    const dora_tensor ***idx = calloc(n, sizeof *idx);
    const dora_tensor **part = calloc(n, sizeof *part);
    int rc = idx && part ? 0 : dora_errf(err, "out of memory");
    for (size_t k = 0; rc == 0 && k < n; k++) {
        if (f[k]->ntensors != f[0]->ntensors)
            rc = dora_errf(err, "'%s' holds %zu tensors, '%s' %zu: model-parallel shards hold "
                                "the same names",
                           f[0]->path, f[0]->ntensors, f[k]->path, f[k]->ntensors);
        else if (!(idx[k] = sorted(f[k])))
            rc = dora_errf(err, "out of memory");
    }
    /* the model width: norm.weight's length (for the embedding's split) */
    int64_t width = -1;
    for (size_t i = 0; rc == 0 && i < f[0]->ntensors; i++)
        if (strcmp(f[0]->tensors[i].name, "norm.weight") == 0 && f[0]->tensors[i].ndim == 1)
            width = f[0]->tensors[i].shape[0];
    for (size_t i = 0; rc == 0 && i < f[0]->ntensors; i++) {
        dora_tensor *t = &f[0]->tensors[i];
        const dora_tensor key = {.name = t->name}, *kp = &key;
        for (size_t k = 0; rc == 0 && k < n; k++) {
            const dora_tensor **hit = bsearch(&kp, idx[k], f[k]->ntensors, sizeof *idx[k], by_name);
            if (!hit)
                rc = dora_errf(err, "'%s' has tensor '%s' and '%s' does not: model-parallel "
                                    "shards hold the same names",
                               f[0]->path, t->name, f[k]->path);
            else if ((*hit)->dtype != t->dtype || (*hit)->ndim != t->ndim)
                rc = dora_errf(err, "'%s' and '%s': tensor '%s' differs in dtype or dims",
                               f[0]->path, f[k]->path, t->name);
            else
                part[k] = *hit;
        }
        if (rc != 0)
            break;
        int dim = split_dim(t->name);
        if (dim == EMBEDDING && t->ndim == 2 && width > 0)
            dim = t->shape[1] == width ? 0 : (int64_t)n * t->shape[1] == width ? 1 : UNKNOWN;
        if (dim == EMBEDDING || dim == UNKNOWN)
            rc = dora_errf(err, "'%s': the model-parallel split of tensor '%s' is not known "
                                "(Meta's Llama names are: wq wk wv wo w1 w2 w3 output "
                                "tok_embeddings and the norms%s); join the shards into one "
                                "state dict first (HF's convert_llama_weights_to_hf.py)",
                           f[0]->path, t->name,
                           dim == EMBEDDING ? ", and norm.weight's length tells the "
                                              "embedding's split" : "");
        else if (dim == REPLICATED)
            rc = same_everywhere(f[0], t, part, n, err);
        else
            rc = join_one(f[0], t, part, n, dim, err);
    }
    for (size_t k = 0; idx && k < n; k++)
        free(idx[k]);
    free(idx);
    free(part);
    return rc;
}
