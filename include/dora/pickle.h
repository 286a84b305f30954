/* pickle.h - a restricted pickle interpreter for PyTorch state dicts.
 *
 * It interprets the opcodes torch.save emits (protocol 2, and the framing and
 * memo opcodes of protocols 3-5) without executing anything: the only callable
 * globals are the ones a state dict needs (collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2 / _rebuild_parameter /
 * _rebuild_parameter_with_state, torch._tensor._rebuild_from_type_v2 with
 * torch.Tensor or torch.nn.Parameter) and the typed storage classes
 * (torch.FloatStorage, ...; torch.UntypedStorage as raw bytes); a module or
 * name must match exactly (one holding a NUL byte is refused). Every other
 * global (an optimizer's or a trainer's classes, torch.Size, builtins.set)
 * becomes an inert placeholder that is never called: what calling it would
 * build is an opaque value whose state is ignored, and it is listed
 * (pk_extras). An opaque value as the whole object (torch.save(model)), under a
 * key of a dict that holds tensors (where a weight belongs), or a pickle with
 * placeholders and no tensor at all, is an error naming the global. Nothing
 * read from the file is trusted, and every resource is bounded:
 *
 * - memory: the interpreter's values, the memo, the stack and the tensor list
 *   it returns take at most PK_MEM_PER_BYTE bytes per byte of pickle plus
 *   PK_MEM_BASE, and never more than PK_MEM_MAX (counted as requested from
 *   malloc, plus PK_MEM_OVERHEAD per block). Values are reference counted and
 *   freed (their slots reused) as soon as nothing holds them, so a pickle that
 *   creates and drops values costs nothing; a cycle of values is freed at the
 *   end, and counts against the limit until then.
 * - time: each opcode does work in proportion to the bytes it reads or the
 *   items it moves (dict keys are hashed); at most PK_MAX_OBJECTS values are
 *   created in all.
 * - depth: nothing recurses more than PK_MAX_DEPTH levels (the nesting of the
 *   object, a chain of _rebuild_from_type_v2); deeper is an error.
 * - names: the result has at most PK_MAX_TENSORS tensor names, at most
 *   PK_NAMES_PER_TENSOR per distinct tensor plus PK_NAMES_SLACK (a tensor
 *   shared by two names, as tied weights are, is fine; a memo graph that
 *   multiplies the paths to a tensor is refused), each at most PK_MAX_NAME
 *   bytes, all different.
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
#define PK_MAX_DEPTH 1000        /* nesting of the object and of _rebuild_from_type_v2 */
#define PK_MAX_TENSORS 1000000u  /* tensor names in the result (as ST_MAX_TENSORS) */
#define PK_NAMES_PER_TENSOR 4u   /* names per distinct tensor object, on average ... */
#define PK_NAMES_SLACK 1024u     /* ... plus this many */
#define PK_MAX_NAME 4096         /* bytes in one dotted tensor name */
#define PK_MEM_PER_BYTE 64u      /* memory limit: bytes per byte of pickle (real ones: <= 17) */
#define PK_MEM_BASE (16u << 20)  /* ... plus 16 MiB ... */
#define PK_MEM_MAX (1ull << 30)  /* ... and never more than 1 GiB */
#define PK_MEM_OVERHEAD 16u      /* counted per allocated block (malloc's own header) */

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
 * "model.w", a list element its index, an integer key its decimal value.
 * Non-tensor leaves, and values under keys that are neither strings nor
 * integers, are ignored. On success *out (n entries) is owned by the caller:
 * release it with pk_tensors_free. On failure *out is NULL, *n is 0 and err
 * says what is wrong ("pickle: ... (at byte N)"); nothing is left allocated. */
int pk_load_tensors(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                    dora_err *err);
/* What a pickle holds beside its tensors. */
typedef struct pk_extras {
    char **globals;      /* [nglobals] "module.name" of each global outside the allow-list
                            (inert placeholders, never called), owned */
    size_t nglobals;
    int64_t global_step; /* the top-level dict's "global_step" integer (Lightning), or -1 */
} pk_extras;

/* pk_load_tensors, and when X is not NULL what else the pickle holds into *X
 * (release with pk_extras_free; zeroed on failure). */
int pk_load_tensors_ex(const unsigned char *data, size_t len, pk_tensor **out, size_t *n,
                       pk_extras *x, dora_err *err);
void pk_extras_free(pk_extras *x);
/* Free a list from pk_load_tensors (NULL is fine). */
void pk_tensors_free(pk_tensor *t, size_t n);

#endif
