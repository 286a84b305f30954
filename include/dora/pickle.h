/* pickle.h - a restricted pickle interpreter for PyTorch state dicts.
 *
 * It interprets the opcodes torch.save emits (protocol 2, and the framing and
 * memo opcodes of protocols 3-5) without executing anything: the only callable
 * globals are the ones a state dict needs (collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2 / _rebuild_parameter /
 * _rebuild_parameter_with_state, torch._tensor._rebuild_from_type_v2 with
 * torch.Tensor or torch.nn.Parameter) and the typed storage classes
 * (torch.FloatStorage, ...; torch.UntypedStorage as raw bytes). Every other
 * global is refused with an error that names it. Stack, memo, nesting and
 * object counts are bounded; nothing read from the file is trusted.
 */
#ifndef DORA_PICKLE_H
#define DORA_PICKLE_H

#include "dora/error.h"
#include "dora/tensor.h"

#include <stddef.h>
#include <stdint.h>

#define PK_MAX_STACK 1000000     /* values on the stack at once */
#define PK_MAX_MARKS 1000        /* nesting of MARK-delimited groups */
#define PK_MAX_MEMO (1u << 22)   /* highest memo index */
#define PK_MAX_OBJECTS 20000000u /* values created in all */

/* One tensor found in the unpickled object. The storage is named by its key
 * (the record "data/KEY" of the archive); offset, shape and strides are in
 * elements, as torch gives them. */
typedef struct pk_tensor {
    char *name;                    /* dotted path in the object, owned */
    char *storage_key;             /* owned */
    dora_dtype dtype;
    int64_t storage_numel;         /* elements the storage declares */
    int64_t offset;
    int ndim;
    int64_t shape[DORA_MAX_DIMS];
    int64_t stride[DORA_MAX_DIMS];
} pk_tensor;

/* Interpret DATA (LEN bytes) and list the tensors of the result. Tensors in
 * nested dicts (and lists) get dotted names: {"model": {"w": T}} gives
 * "model.w", a list element its index. Non-tensor leaves are ignored. */
int pk_load_tensors(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                    dora_err *err);
void pk_tensors_free(pk_tensor *t, size_t n);

#endif
