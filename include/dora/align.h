/* align.h - matching a checkpoint's tensor names to the base's.
 *
 * Checkpoints are saved through wrappers that change the names: DDP and
 * DeepSpeed's `module.`, torch.compile's `_orig_mod.`, a Lightning module's
 * attribute (`model.`), a torch-saved dict around the state dict
 * ({"state_dict": ...}, {"model": ...}, {"module": ...}, {"ema": ...}: the
 * pickle reader joins the keys, so these too are name prefixes). An alignment
 * is, for one checkpoint:
 *
 *  1. the --rename rules, REGEX=REPLACEMENT (PCRE2, replacement with $1 or
 *     ${name}; every match of the name is replaced, as Python's re.sub does),
 *     applied in their order to every tensor name of the checkpoint; two
 *     tensors renamed to one name is an error naming both;
 *  2. then a prefix: base name P + X is looked up as Q + X in the checkpoint,
 *     with P or Q empty. The identity (P = Q = "") is taken when every analysed
 *     tensor of the base is found with its shape (or when at least one is and
 *     no prefix fits all: tensors a checkpoint lacks are left out as before).
 *     Otherwise the prefixes are read off the names (the checkpoint names that
 *     end in ".X" for the base's X, and the other way round), and one is
 *     accepted only if every analysed tensor is then found with its shape. Two
 *     that fit is an error naming both; none, when not one tensor matches as
 *     named either, is an error that shows a few unmatched names of each side
 *     and the option that would help (--rename).
 *  3. names that fit neither way are read as Meta's or torchtune's Llama
 *     names (llama_names.h) when that makes every analysed tensor fit; wq and
 *     wk are then in Meta's RoPE row order, and the head counts come from the
 *     base's config.json (an error naming it when it lacks them).
 *
 * --rename rules are for the runs whose names they make fit: a checkpoint whose
 * names fit every analysed tensor without them, and not with them, is read
 * without them (a command holds other runs too). Two names made one is always
 * an error.
 *
 * Nothing here reads tensor data. Lookups cost O(log n).
 */
#ifndef DORA_ALIGN_H
#define DORA_ALIGN_H

#include "dora/error.h"
#include "dora/model.h"

#include <stddef.h>

#define DORA_MAX_RENAMES 32 /* --rename options per command */

typedef struct dora_align_entry {
    char *name;            /* the tensor's name after the renames, owned */
    const dora_tensor *t;  /* in the checkpoint */
    int rope;              /* DORA_ROPE_Q / _K: rows in Meta's RoPE order (llama_names.h) */
} dora_align_entry;

typedef struct dora_align {
    const dora_model *step;
    size_t n;
    dora_align_entry *e;   /* [n] sorted by name; NULL when no rename applies */
    char *base_prefix;     /* P, owned ("" for none) */
    char *step_prefix;     /* Q, owned ("" for none) */
    char *desc;            /* what was applied, one line, owned; NULL for nothing */
    int llama;             /* tensors renamed from Meta/torchtune Llama names (0: none) */
    int64_t heads, kv_heads; /* for wq / wk in Meta's RoPE order (base config.json) */
} dora_align;

/* 0 if SPEC is REGEX=REPLACEMENT with a regex PCRE2 compiles; else -1 with
 * ERR saying what is wrong (the caller names the option: a usage error). */
int dora_rename_check(const char *spec, dora_err *err);

/* Align the checkpoint STEP to BASE for the NWANT analysed base tensors WANT
 * (the renames RENAMES[0..NRENAMES) first). On success *A is filled (release
 * it with dora_align_release) and a->desc says what was applied, if anything.
 * On failure -1 with ERR set, *A released. */
int dora_align_choose(dora_align *a, const dora_model *base, const dora_model *step,
                      const dora_tensor *const *want, size_t nwant,
                      const char *const *renames, size_t nrenames, dora_err *err);

/* The checkpoint's tensor for the base tensor named BASE_NAME, or NULL. */
const dora_tensor *dora_align_find(const dora_align *a, const char *base_name);
/* The same, and *HEADS > 0 when its rows are in Meta's RoPE order for that
 * many heads (wq, wk read through the Llama names): read them through
 * dora_rope_row (llama_names.h). */
const dora_tensor *dora_align_find_rope(const dora_align *a, const char *base_name,
                                        int64_t *heads);

void dora_align_release(dora_align *a);

/* 1 if X and Y have the same rank and dims. */
int dora_align_same_shape(const dora_tensor *x, const dora_tensor *y);

#endif
