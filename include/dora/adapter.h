/* adapter.h - LoRA / DoRA adapter checkpoints (HF PEFT, the DoRA paper's own
 * code, MLX), and PEFT's other families (IA3, AdaLoRA, VeRA, LoHa, LoKr: see
 * "Families" below and docs/adapters.md), read without merging anything.
 *
 * An adapter folder holds adapter_config.json and adapter_model.safetensors.
 * Each adapted module m of the base (tensor "m.weight") gets a low-rank update
 *
 *     W = W0 + s * L @ R        L: [out, r], R: [r, in]      (in = all dims but the first)
 *
 * where, by layout:
 *     PEFT Linear / Conv   L = lora_B [out, r(,1,1)]   R = lora_A [r, in(, kh, kw)]
 *     PEFT Embedding       L = lora_embedding_A^T      R = lora_embedding_B^T
 *     MLX                  L = lora_b^T ([r, out])     R = lora_a^T ([in, r])
 * and s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, r and alpha
 * overridden per module by rank_pattern / alpha_pattern (keys are Python
 * regular expressions; the first key K for which "(.*\.)?(K)" matches the
 * whole module name wins, as in PEFT); for MLX, s = lora_parameters.scale. With fan_in_fan_out (GPT-2
 * Conv1D) the base weight is stored [in, out] and is read transposed.
 * A module's r (an int64 from the JSON integer, never through a double) must
 * equal its factors' rank and be at most 4 * (out + in), so that the r x r
 * Gram matrix of the analysis stays within 4 times the factors' entries; s^2
 * must be a finite float64. Errors name the config, the module and where r
 * came from ('r', a rank_pattern key, 'lora_parameters.rank').
 *
 * DoRA: the magnitude tensor (m.lora_magnitude_vector[.weight|.default.weight]
 * [out], or the paper's m.weight_m_wdecomp.weight [out, 1]) is the merged
 * row norm; the merged direction is that of V = W0 + s * L @ R.
 *
 * modules_to_save: any other tensor of rank >= 2 replaces the base tensor of
 * the same name and is analysed like a fully fine-tuned weight.
 *
 * Families, each put in the same low-rank form W = W0 + s L R (derived
 * factors formed in float64 and owned by the module), as PEFT merges them:
 *     AdaLoRA  L = lora_B, R = lora_A * lora_E (rows scaled), s = scaling /
 *              (ranknum + 1e-5): scaling = lora_alpha (init_r when alpha <= 0),
 *              ranknum = init_r; rank_pattern masks give each module's rank
 *     VeRA     L = diag(vera_lambda_b) vera_B[:out], R = diag(vera_lambda_d)
 *              vera_A[:, :in] (the shared projections saved with
 *              save_projection, sliced), s = 1
 *     LoHa     (w1a w1b) * (w2a w2b) (elementwise) = L R with L's columns
 *              w1a[:, k] * w2a[:, l] and R's rows w1b[k] * w2b[l] (rank r1 r2),
 *              s = alpha / r
 *     LoKr     kron(w1, w2) = kron(P1, P2) kron(Q1, Q2) for w = P Q (the factors,
 *              or the full matrix with an identity on its shorter side), s =
 *              alpha / r
 *     IA3      rows scaled (ia3_l [out, 1]): W = l * W0 row-wise, as a DoRA
 *              magnitude l_n |W0[n]| over a zero update (formed by
 *              dora_adapter_check from the W0 it is given); feedforward modules
 *              (ia3_l [1, in]): W0 diag(l) = W0 + W0 diag(l - 1), L = W0, R =
 *              diag(l - 1) (in at most DORA_IA3_FF_MAX_IN)
 */
#ifndef DORA_ADAPTER_H
#define DORA_ADAPTER_H

#include "dora/error.h"
#include "dora/model.h"

#include <stdint.h>

/* A logical 2-D matrix over a stored tensor: the tensor viewed as
 * [shape[0], rest], or its transpose. */
typedef struct dora_matrix {
    const dora_tensor *t;
    int transposed;
    int64_t rows, cols; /* of the logical matrix */
} dora_matrix;

/* Element (i, j) of a logical matrix, as a double. */
double dora_matrix_get(const dora_matrix *m, int64_t i, int64_t j);

typedef enum dora_adapted_kind {
    DORA_ADAPTED_LORA = 0, /* low-rank update (maybe with a DoRA magnitude) */
    DORA_ADAPTED_SAVED     /* modules_to_save: a whole replacement tensor */
} dora_adapted_kind;

#define DORA_ADAPTED_MAX_OWNED 3
#define DORA_IA3_FF_MAX_IN 4096 /* an IA3 feedforward module's R is [in, in] */

typedef struct dora_adapted {
    char *base_name;            /* base tensor name ("model.layers.0.self_attn.q_proj.weight"), owned */
    dora_adapted_kind kind;
    const char *layout;         /* "linear", "embedding", "mlx" or "saved" (static) */
    dora_matrix L, R;           /* the factors (LORA) */
    int64_t r;
    double alpha, scale;
    int fan_in_fan_out;         /* base weight stored [in, out] */
    const dora_tensor *magnitude; /* DoRA magnitude, or NULL */
    const dora_tensor *saved;   /* SAVED: the replacement */
    /* families: factors derived from the file's tensors (float64), owned */
    dora_tensor *owned[DORA_ADAPTED_MAX_OWNED];
    size_t nowned;
    const dora_tensor *ia3;     /* IA3: ia3_l, or NULL */
    int ia3_ff;                 /* IA3 on a feedforward module: columns scaled */
    double ia3_add;             /* added to ia3's values: 1 for LyCORIS's (IA)^3 (saves l - 1) */
    const dora_tensor *aux;     /* VeRA: vera_lambda_d (R is formed against the base's in) */
    /* kohya / LyCORIS files (see "kohya" below) */
    char *key;                  /* the file's module key ("lora_unet_..."), owned, else NULL */
    const dora_tensor *dora_scale; /* LyCORIS / kohya dora_scale, or NULL */
    const dora_tensor *rescale;    /* LyCORIS OFT's rescale [out, 1], or NULL */
    int dora_cols;              /* dora_scale [1, in]: 1 (column norms); [out, 1]: 0; [1, 1]: -1 */
} dora_adapted;

/* One key of rank_pattern or alpha_pattern, in the config's order. */
typedef struct dora_pattern {
    char *pattern;              /* the key (a Python regular expression), owned */
    double value;               /* the value (for rank_pattern, rank as a double: inexact
                                   beyond 2^53) */
    int64_t rank;               /* rank_pattern: the value exactly, >= 1; 0 for alpha_pattern */
} dora_pattern;

typedef struct dora_adapter {
    char *dir;                  /* the checkpoint folder, owned */
    char *config_path;          /* owned */
    dora_model *weights;        /* adapter_model.safetensors (or MLX adapters.safetensors) */
    const char *format;         /* "peft", "dora-paper" or "mlx" */
    const char *method;         /* "lora", "dora", "ia3", "adalora", "vera", "loha", "lokr" */
    char *peft_type;            /* as written, owned */
    int64_t r;
    double lora_alpha;
    int use_rslora, use_dora, fan_in_fan_out;
    char *base_model;           /* base_model_name_or_path, or NULL */
    char *targets;              /* target_modules as written (JSON text), owned */
    size_t nrank_pattern, nalpha_pattern;
    dora_pattern *rank_pattern, *alpha_pattern;
    size_t nmodules;
    dora_adapted *modules;      /* sorted by base_name */
    /* families */
    int64_t init_r;             /* AdaLoRA: init_r (ranknum), else 0 */
    size_t nmask;
    dora_pattern *masks;        /* AdaLoRA rank_pattern: module, rank = sum of the mask */
    size_t nff;
    char **ff;                  /* IA3 feedforward_modules (names), owned */
    char *ff_regex;             /* IA3 feedforward_modules given as a regex, owned, or NULL */
    const dora_tensor *vera_A, *vera_B; /* VeRA's shared projections, or NULL */
    char *init_lora;            /* init_lora_weights "pissa" or "olora" (the base was changed
                                   at initialisation, see below), owned, else NULL */
    int kohya;                  /* a kohya / LyCORIS / OneTrainer file (format "kohya") */
    /* init_lora_weights "pissa_niter_K" (a randomised SVD): B0 A0 come from the
     * adapter as PEFT initialised it (dora_run_set_initial, or a checkpoint-0/
     * of the run: dora_run_link_initial), never recomputed */
    int init_initial;
    const struct dora_adapter *initial; /* that adapter (not owned), or NULL */
    struct dora_adapter *initial_owned; /* checkpoint-0's copy, owned by step 0's adapter */
} dora_adapter;

/* kohya / LyCORIS / OneTrainer: one .safetensors file, no config. Keys
 * PREFIX_MODULE.SUFFIX, MODULE the base's module path with '.' read as '_',
 * PREFIX lora_unet / lora_te / lora_te1 / lora_te2 / lycoris / lora; each
 * module one family by its keys:
 *     LoRA / LoCon  lora_down.weight [r, in(, kh, kw)], lora_up.weight
 *                   [out, r(, 1, 1)]: L = up, R = down (flattened), s = alpha / r
 *     LoHa          hada_w1_a ... as PEFT's LoHa, s = alpha / r (r: hada_w1_b's rows)
 *     LoKr          lokr_w1 ... as PEFT's LoKr, s = alpha / r with r the rows of a
 *                   factored side's _b, or 1 when both sides are full matrices
 *     Tucker        lora_mid / hada_t1, hada_t2 / lokr_t2 [r, r, kh, kw], and a 4-D
 *                   lokr_w2: LyCORIS's rebuild_tucker, in the same low-rank form
 *     full, OFT     diff / Diag-OFT's oft_blocks, rescale: W_t formed densely (SAVED)
 *     (IA)^3, GLoRA weight, on_input (IA3 with 1 added) / a1, a2, b1, b2 (linear):
 *                   L = [b1, W0 a1], R = [b2; a2], s = alpha / r
 * alpha a scalar tensor; absent, s = 1 (as kohya and LyCORIS load such files).
 * dora_scale [1, in(, 1, 1)]: the merged weight is V diag(dora_scale / (|V[:, j]|
 * + eps)) (column norms; a conv's per input channel), formed densely by
 * dora_adapter_check (the module becomes SAVED); [out, 1(, 1, 1)]: rows
 * dora_scale_n V[n] / (|V[n]| + eps), as a magnitude; V = W0 + s L R, eps the
 * machine epsilon of dora_scale's dtype (LyCORIS's torch.finfo). Module keys are
 * matched to base tensors by dora_adapter_check (docs/adapters.md). */

/* 1 if the regular file PATH is a safetensors file with kohya / LyCORIS keys
 * (its header is read, no tensor data), else 0 (never an error). */
int dora_kohya_probe(const char *path);
/* A kohya / OneTrainer checkpoint file name: "NAME-stepS.safetensors" (kohya)
 * and "NAME-save-S-E-ES.safetensors" (OneTrainer's workspace/save: global step
 * S, epoch E, step in the epoch ES) give 1 and *N = S (a step),
 * "NAME-E.safetensors" 2 and *N = E (an epoch: kohya's per-epoch saves), 0
 * another name, -1 a number beyond INT64_MAX. */
int dora_kohya_name(const char *name, int64_t *n);
struct dora_run;
/* The steps of RUN, a folder DIR of kohya files found by their names (EPOCHS:
 * NAME-E files, else NAME-stepS), made the training steps kohya writes in each
 * file's metadata ss_steps: a -stepS name must agree with it; -E files take it
 * (all of them, or none: then epoch E is the step, noted); an unnumbered file
 * (kohya's last save NAME.safetensors) is added at its ss_steps, or left out
 * with a note without one or when a numbered file has that step. Steps end
 * sorted, distinct. A file without kohya keys among them: not a kohya run
 * (RUN emptied, 0). 0, or -1 with ERR naming the file. */
int dora_kohya_steps(struct dora_run *run, const char *dir, int epochs, dora_err *err);
/* A folder DIR with no step- or epoch-named kohya file: its one unnumbered
 * kohya file (NAME.safetensors) is a run of one step, at its ss_steps, else
 * step 0 (noted either way); several such files are refused, naming them (which
 * is which step is ambiguous); none leaves RUN empty. 0, or -1 with ERR. */
int dora_kohya_single(struct dora_run *run, const char *dir, dora_err *err);

/* PiSSA / OLoRA: PEFT initialised B0 A0 from W0 (the top-r SVD, s B0 A0 =
 * U_r S_r V_r^T; or the QR, B0 = Q[:, :r], A0 = R[:r]) and trained against
 * W0 - s B0 A0, so W_t - W0 = s (B A - B0 A0), of rank 2r: dora_adapter_check
 * forms L = [B, -B0], R = [A; A0] from the W0 it is given, through the
 * factoriser the analysis registers (LAPACK lives there): FN computes, for W0
 * row-major [out, in] in float64, P [out, r] and Q [r, in] with P Q = B0 A0.
 * Without one registered, such adapters are refused. init_lora_weights
 * "pissa_niter_K" (a randomised SVD) takes B0 A0 from the initial adapter
 * (below), never from the factoriser; "corda", "loftq", "mica", "lora_ga" and
 * "orthogonal" are refused: their B0 A0 cannot be recomputed here. */
typedef int (*dora_init_factor_fn)(const char *how, const double *w0, int64_t out, int64_t in,
                                   int64_t r, double scale, double *p, double *q, dora_err *err);
void dora_adapter_set_init_factoriser(dora_init_factor_fn fn);

struct dora_run;
/* "pissa_niter_K" adapters of RUN take B0 A0 from INITIAL (--initial-adapter;
 * not owned, must outlive the run's checks): for each module, L = [B, -B0],
 * R = [A; A0] with B0, A0 INITIAL's lora_B, lora_A of that module. */
void dora_run_set_initial(struct dora_run *run, const dora_adapter *initial);
/* A Trainer run whose step 0 is a "pissa_niter_K" adapter (a checkpoint-0/
 * saved before training): its steps take B0 A0 from it (a copy opened here).
 * 0, or -1 with ERR. */
int dora_run_link_initial(struct dora_run *run, dora_err *err);
/* A's update analysed without a base (spectrum without --base): for
 * "pissa_niter_K", every LoRA module's factors become [B, -B0], [A; A0] from
 * A's initial adapter (as dora_adapter_check binds them), which must be set;
 * "pissa" and "olora" are refused (B0 A0 is recomputed from W0). Other
 * adapters are left as they are. 0, or -1 with ERR naming the file. */
int dora_adapter_bind_alone(dora_adapter *a, dora_err *err);

/* Open and validate the adapter checkpoint in folder DIR: the config, the
 * tensor names and the shapes of each module's factors among themselves.
 * Shapes against the base are checked by dora_adapter_check. */
int dora_adapter_open(dora_adapter **out, const char *dir, dora_err *err);
void dora_adapter_close(dora_adapter *a);

/* Check every adapted module against the base: the base tensor exists, is
 * floating, and its shape fits the factors (or the replacement). */
int dora_adapter_check(const dora_adapter *a, const dora_model *base, dora_err *err);

const dora_adapted *dora_adapter_find(const dora_adapter *a, const char *base_name);

/* The static string of a result's method M ("ft", "lora", "dora", "ia3",
 * "adalora", "vera", "loha", "lokr"), or NULL when M is none of them: for
 * readers of results files that keep the method as a static string. */
const char *dora_method_static(const char *m);

#endif
