/* meta_mp.h - Meta's model-parallel shards consolidated.00.pth, .01.pth, ...
 *
 * Meta's llama code saves a model-parallel model as one torch.save file per
 * rank, each with every tensor's slice along the dimension its layer splits
 * (meta-llama/llama model.py, and HF's convert_llama_weights_to_hf.py, which
 * joins them): column-parallel wq, wk, wv, w1, w3 and output on dim 0,
 * row-parallel wo and w2 on dim 1, tok_embeddings on dim 1 (Llama 1 and 2,
 * ParallelEmbedding) or dim 0 (Llama 3, VocabParallelEmbedding) -- told
 * apart by the model width, norm.weight's length -- and the norms (and
 * rope.freqs) replicated: identical in every shard. The model is the joined
 * tensors; a tensor of any other name, shards whose names, dtypes or other
 * dims differ, replicated tensors that differ, or a gap in the numbers is an
 * error naming the tensor and the shards.
 */
#ifndef DORA_META_MP_H
#define DORA_META_MP_H

#include "dora/error.h"
#include "dora/safetensors.h"

#include <stddef.h>

/* The paths of consolidated.00.pth ... consolidated.NN.pth in DIR, in order,
 * into *PATHS (N of them, each and the array to be freed); *N = 1 when only
 * 00 is there. A gap, or more than 1000, is an error. */
int dora_meta_mp_shards(const char *dir, char ***paths, size_t *n, dora_err *err);

/* Join the N opened shards F[0..N-1] into F[0]: its tensors then have the
 * whole shapes and point into buffers F[0] owns (freed by st_close). */
int dora_meta_mp_join(st_file *const *f, size_t n, dora_err *err);

#endif
