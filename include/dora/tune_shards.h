/* tune_shards.h - torchtune's HF checkpoints: hf_model_NNNN_E.pt.
 *
 * torchtune's FullModelHFCheckpointer saves epoch E of a model first read
 * from N HF shards as hf_model_0001_E.pt ... hf_model_000N_E.pt (torch.save,
 * HF names), with no index. The model of epoch E is all of them: the shard
 * numbers must run 1..N without a gap; a tensor in two shards is an error.
 */
#ifndef DORA_TUNE_SHARDS_H
#define DORA_TUNE_SHARDS_H

#include "dora/error.h"

#include <stddef.h>
#include <stdint.h>

/* "hf_model_NNNN_E.pt": 1 with *SHARD = NNNN and *EPOCH = E; 0 for another
 * name; -1 when a number does not fit. */
int dora_tune_shard_name(const char *name, int64_t *shard, int64_t *epoch);

/* The shards of the epoch of PATH (a file named as above) in shard order,
 * into *PATHS (N allocated paths; free each and the array). -1 with ERR set
 * when the numbers have a gap. */
int dora_tune_shards(const char *path, char ***paths, size_t *n, dora_err *err);

#endif
