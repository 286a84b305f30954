/* model.h - a model's tensors, from one safetensors file or a sharded set.
 *
 * dora_model_open takes a .safetensors file or a folder. In a folder it uses,
 * in this order: model.safetensors.index.json (every shard must exist, parse,
 * and hold exactly the tensors the index gives it), model.safetensors, or the
 * only *.safetensors file there. Tensor views stay valid until
 * dora_model_close.
 */
#ifndef DORA_MODEL_H
#define DORA_MODEL_H

#include "dora/error.h"
#include "dora/safetensors.h"

typedef enum dora_model_kind {
    DORA_MODEL_NONE = 0,     /* nothing this tool reads */
    DORA_MODEL_SAFETENSORS,  /* one .safetensors file */
    DORA_MODEL_SHARDED,      /* model.safetensors.index.json + shards */
    DORA_MODEL_ADAPTER,      /* PEFT adapter folder (adapter_config.json) */
    DORA_MODEL_TORCH         /* PyTorch .bin/.pt */
} dora_model_kind;

typedef struct dora_model {
    char *path;                   /* the file or index that was opened, owned */
    dora_model_kind kind;
    size_t nfiles;
    st_file **files;              /* the file(s) holding the tensors */
    size_t ntensors;
    const dora_tensor **by_name;  /* sorted by name (strcmp) */
} dora_model;

/* What a path holds, without opening tensors. For a folder, *model_path (if
 * not NULL) receives a newly allocated path of the file to open (the index or
 * the single .safetensors; for an adapter, its weights file, NULL if it has
 * none), or NULL. Returns -1 only on a system error. */
int dora_model_probe(const char *path, dora_model_kind *kind, char **model_path, dora_err *err);

int dora_model_open(dora_model **out, const char *path, dora_err *err);
const dora_tensor *dora_model_find(const dora_model *m, const char *name);
void dora_model_close(dora_model *m);

/* 1 if the two models' weight files are byte-identical (same count, sizes and
 * contents, in order), 0 if not, -1 if a file shrank while it was compared
 * (the SIGBUS is caught, guard.h): ERR names it. */
int dora_model_cmp_bytes(const dora_model *a, const dora_model *b, dora_err *err);

#endif
