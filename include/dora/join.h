/* join.h - results of single steps of one run joined into one result.
 *
 * Analysed alone (a dora_result with one step), a checkpoint gives the same
 * numbers as within the whole run, so a run can be analysed in pieces, in
 * any order, and joined back. */
#ifndef DORA_JOIN_H
#define DORA_JOIN_H

#include "dora/analyze.h"
#include "dora/error.h"

#include <stddef.h>

/* Join results of single steps (or several) of one run, given in any order,
 * into *out: steps ascending; the modules present in every part (tensors a
 * checkpoint lacks are left out with a note, as `analyze` does for a full
 * run); method "dora" if any part is, else "lora" if any is, else "ft" (full
 * and adapter checkpoints cannot be mixed). Parts must agree on name, paths,
 * and each module's layer, rows and cols. A step held twice must hold the same
 * numbers bit for bit (it is kept once). Per-row data are not joined. The
 * per-head values are, when every part has them (each module grouped alike). The
 * parts stay the caller's; *out is new (dora_result_release). */
int dora_result_join(dora_result *out, const dora_result *const *parts, size_t nparts,
                     dora_err *err);

/* Deep copy (without per-row data). */
int dora_result_copy(dora_result *out, const dora_result *in, dora_err *err);

#endif
