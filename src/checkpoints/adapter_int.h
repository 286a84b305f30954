/* adapter_int.h - what the files of the adapter reader share inside
 * checkpoints/: adapter.c (config, tensor roles, grouping, LoRA / DoRA) and
 * adapter_families.c (IA3, AdaLoRA, VeRA, LoHa, LoKr as PEFT merges them). */
#ifndef DORA_ADAPTER_INT_H
#define DORA_ADAPTER_INT_H

#include "dora/adapter.h"
#include "dora/tensor.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* largest r per unit of out + in of a module's update (adapter_check_rank_scale) */
#define RANK_PER_DIM 4

/* What one tensor of an adapter file is. */
typedef enum role {
    ROLE_A, ROLE_B, ROLE_EMB_A, ROLE_EMB_B, ROLE_MAG, ROLE_MLX_A, ROLE_MLX_B, ROLE_LORA_BIAS,
    ROLE_E,                                   /* AdaLoRA lora_E [r, 1] */
    ROLE_IA3,                                 /* IA3 ia3_l */
    ROLE_VERA_B, ROLE_VERA_D,                 /* VeRA vera_lambda_b [out], vera_lambda_d [r] */
    ROLE_H1A, ROLE_H1B, ROLE_H2A, ROLE_H2B,   /* LoHa hada_w{1,2}_{a,b} */
    ROLE_HT,                                  /* LoHa hada_t1 / hada_t2 (effective conv) */
    ROLE_K1, ROLE_K1A, ROLE_K1B, ROLE_K2, ROLE_K2A, ROLE_K2B, ROLE_KT, /* LoKr */
    ROLE_HT2, ROLE_MID,                       /* kohya files: hada_t2, LoCon's lora_mid */
    ROLE_SAVED, ROLE_COUNT
} role;

/* A module of the adapter file: its tensors by role. */
typedef struct pending {
    char *module;                     /* owned */
    size_t first;                     /* index in by_name of its first tensor */
    const dora_tensor *t[ROLE_COUNT];
} pending;

/* The logical matrix over T (or its transpose). */
dora_matrix adapter_matrix(const dora_tensor *t, int transposed);

/* A float64 [rows, cols] tensor owned by M (zeroed, named NAME and FILE as
 * the tensor it is derived from, so errors name the file's tensor), or NULL
 * when out of memory or when M already owns DORA_ADAPTED_MAX_OWNED. */
dora_tensor *adapter_own(dora_adapted *m, const dora_tensor *from, int64_t rows, int64_t cols);

/* Check M's rank (after the patterns) and scale as LoRA's are checked: r
 * within RANK_PER_DIM x (out + in), s^2 finite. R_FROM says where r came from. */
int adapter_check_rank_scale(const dora_adapter *a, const char *module, const dora_adapted *m,
                             const char *r_from, dora_err *err);

/* adapter.c's config readers, for the families' configs */
int adapter_read_patterns(json_t *obj, const char *field, int integer, dora_pattern **out,
                          size_t *n, const char *config, dora_err *err);
int adapter_get_bool(json_t *root, const char *field, int *out, const char *config,
                     dora_err *err);
/* base_model_name_or_path and target_modules */
int adapter_read_common(dora_adapter *a, json_t *root, dora_err *err);

/* ---- adapter_init.c (PiSSA / OLoRA) ---- */

/* init_lora_weights of ROOT: a->init_lora for "pissa" / "olora", an error
 * for the inits whose B0 A0 cannot be recomputed. */
int adapter_read_init(dora_adapter *a, json_t *root, dora_err *err);
/* W0 of base tensor B as row-major [out, in] float64 (B stored [in, out] when
 * FIFO), read in a guarded copy: a base truncated underneath is an error, not
 * a crash. Owned by the caller; NULL with ERR set. */
double *adapter_base_rows(const dora_tensor *b, int fifo, int64_t out, int64_t in, dora_err *err);
/* M's factors become [B, -B0], [A; A0], B0 A0 from base tensor B. */
int adapter_bind_init(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
                      int64_t in, dora_err *err);

/* ---- adapter_families.c ---- */

/* The family fields of the config ROOT (IA3 feedforward_modules, AdaLoRA
 * init_r / rank_pattern masks, VeRA, LoHa / LoKr alpha): for a peft_type
 * that adapter.c does not read itself. 0, or -1 with ERR. */
int fam_read_config(dora_adapter *a, json_t *root, dora_err *err);
/* Module P of a family adapter into M (base_name and fan_in_fan_out set),
 * with r and alpha as the patterns give them (R_FROM: where r came from). */
int fam_build(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r, double alpha,
              const char *r_from, dora_err *err);
/* A shared tensor of the file that belongs to no module (VeRA's vera_A /
 * vera_B): 1 and kept in A, else 0. */
int fam_shared(dora_adapter *a, const dora_tensor *t);
/* What dora_adapter_check does for the family modules: M against the base
 * tensor B (the W0 the analysis uses): shapes, and the factors formed from
 * W0 (IA3). */
int fam_check(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
              int64_t in, dora_err *err);
void fam_release(dora_adapter *a);
/* Element I of a tensor viewed flat, as a double; a family's own float64 tensor's data. */
static inline double fam_at(const dora_tensor *t, int64_t i)
{
    return dora_elem_to_f64(t->data + (size_t)i * dora_dtype_size(t->dtype), t->dtype);
}
static inline double *fam_own_data(dora_tensor *t)
{
    return (double *)(void *)t->data;
}
#define FAM_BIT(r) (1ul << (r))
/* P's tensors beyond those in WANT (a bit per role): -1 with ERR naming the first. */
int fam_unexpected(const dora_adapter *a, const pending *p, unsigned long want, dora_err *err);
/* REQUIRED tensors of P (a bit per role) are there and floating: 0, else -1 with ERR. */
int fam_need(const dora_adapter *a, const pending *p, unsigned long required, dora_err *err);
/* -1 with ERR: tensor T has its shape, WANT (what it should be). */
int fam_shape_err(const dora_adapter *a, const dora_tensor *t, const char *want, dora_err *err);

/* ---- adapter_kron.c ---- */

/* LoHa and LoKr modules of P into M (shapes checked, factors formed), for fam_build
 * and kohya.c; s and alpha are the caller's */
int fam_build_loha(dora_adapter *a, const pending *p, dora_adapted *m, int64_t r, dora_err *err);
int fam_build_lokr(dora_adapter *a, const pending *p, dora_adapted *m, dora_err *err);
/* the most entries of the factors a family module forms (2 GiB of float64) */
#define FAM_MAX_ENTRIES ((int64_t)1 << 28)
/* ROWS x COLS entries are at most FAM_MAX_ENTRIES: 0, else -1 with ERR naming MODULE */
int fam_fits(const dora_adapter *a, const char *module, int64_t rows, int64_t cols,
             dora_err *err);
/* LyCORIS's Tucker rebuild of a core T [r1, r2, k...] with B [r2, c(, 1...)]:
 * Q[i, x k + y] = sum_j T[i, j, y] B[j, x], into Q [r1, c prod(k)] */
void fam_tucker(const dora_tensor *t, const dora_tensor *b, double *q);
/* T is a floating Tucker core [r, r, k...] with the module's R: 0, else -1 with ERR */
int fam_tucker_core(const dora_adapter *a, const dora_tensor *t, int64_t r, dora_err *err);

/* ---- kohya.c ---- */

/* A kohya / LyCORIS file PATH into A (dir, config_path set): its modules, keyed
 * by the file's module keys until kohya_resolve. */
int kohya_open(dora_adapter *a, const char *path, dora_err *err);
/* Each module's key matched to a tensor of BASE (base_name set, modules sorted
 * again); a DoRA module made SAVED by an earlier check made low-rank again. */
int kohya_resolve(const dora_adapter *a, const dora_model *base, dora_err *err);
/* M's dora_scale against base tensor B ([out, in] rows): the magnitude, or
 * the dense merged weight (column form). */
int kohya_dora(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
               int64_t in, dora_err *err);

#endif
