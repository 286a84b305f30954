/* kohya_int.h - what kohya.c, kohya_run.c and lycoris_dense.c share: their limits,
 * alpha's reading, and the algorithms that are not factor products
 * (full, (IA)^3, GLoRA, Diag-OFT: lycoris_dense.c). */
#ifndef DORA_KOHYA_INT_H
#define DORA_KOHYA_INT_H

#include "checkpoints/adapter_int.h"

#include <stdint.h>

#define KOHYA_DENSE_MAX ((int64_t)1 << 26) /* entries of a weight formed densely (512 MiB) */
#define KOHYA_OFT_MAX_BLOCK 1024           /* rows of a Diag-OFT block (a b^3 solve each) */
#define KOHYA_MAX_LISTED 8                 /* candidates named in an ambiguity error */

/* The scale's alpha, tensor T of adapter A: a finite positive scalar. 0, or -1 with ERR
 * naming the file and the tensor. */
int kohya_read_alpha(const dora_adapter *a, const dora_tensor *t, double *alpha, dora_err *err);

/* Module P of a kohya file read as LyCORIS's full or (IA)^3 (OTHER = diff, diff_b, weight,
 * on_input, each NULL when absent), GLoRA (G = a1, a2, b1, b2) or Diag-OFT (OFT =
 * oft_blocks, rescale) into M; *FAM is the file's family so far, set or checked. 0, or -1
 * with ERR naming the file, the module and what is wrong. */
int lycoris_build_other(dora_adapter *a, const pending *p, const dora_tensor *const other[4],
                        dora_adapted *m, const char **fam, dora_err *err);
int lycoris_build_glora(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                        const dora_tensor *const g[4], dora_adapted *m, const char **fam,
                        dora_err *err);
int lycoris_build_oft(dora_adapter *a, const pending *p, const dora_tensor *alpha_t,
                      const dora_tensor *const oft[2], dora_adapted *m, const char **fam,
                      dora_err *err);

/* Against the base tensor B (NULL: only undone): a full or OFT module's W_t formed in
 * float64 (owned by M, its saved tensor), a GLoRA module's W0 a1 columns of L. 0, or -1
 * with ERR (a shape that is not the base's, a dense form over KOHYA_DENSE_MAX entries, a
 * singular OFT block, NaN or Inf in what was formed). */
int lycoris_form_full(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, dora_err *err);
int lycoris_form_oft(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, dora_err *err);
int lycoris_form_glora(const dora_adapter *a, dora_adapted *m, const dora_tensor *b,
                       dora_err *err);

#endif
