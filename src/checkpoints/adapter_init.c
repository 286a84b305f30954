/* adapter_init.c - PiSSA / OLoRA adapters: the update against the true W0,
 * s (B A - B0 A0), with B0 A0 recomputed from W0; see include/dora/adapter.h. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoints/adapter_int.h"
#include "dora/guard.h"
#include "dora/tensor.h"

#include "dora/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static dora_init_factor_fn factoriser; /* set once, before any analysis runs */

void dora_adapter_set_init_factoriser(dora_init_factor_fn fn)
{
    __atomic_store_n(&factoriser, fn, __ATOMIC_RELEASE);
}

int adapter_read_init(dora_adapter *a, json_t *root, dora_err *err)
{
    json_t *v = json_object_get(root, "init_lora_weights");
    if (!v || json_is_null(v) || json_is_boolean(v))
        return 0;
    if (!json_is_string(v))
        return dora_errf(err, "'%s': 'init_lora_weights' is not true, false or a string",
                         a->config_path);
    const char *s = json_string_value(v);
    if (strcmp(s, "gaussian") == 0 || strcmp(s, "eva") == 0) /* A's init only; B0 = 0 */
        return 0;
    static const char niter[] = "pissa_niter_";
    const size_t nl = sizeof niter - 1;
    a->init_initial = strncmp(s, niter, nl) == 0 && s[nl] &&
                      strspn(s + nl, "0123456789") == strlen(s + nl);
    if (strcmp(s, "pissa") != 0 && strcmp(s, "olora") != 0 && !a->init_initial)
        return dora_errf(err, "'%s': init_lora_weights '%s' changed the base the adapter was "
                              "trained on by an initial B0 A0 this tool cannot recompute (it "
                              "does for 'pissa' and 'olora', and takes it from the initial "
                              "adapter for 'pissa_niter_K'): its dM and dD would be measured "
                              "against the wrong W0",
                         a->config_path, s);
    if (a->use_dora)
        return dora_errf(err, "'%s': init_lora_weights '%s' with use_dora is not supported",
                         a->config_path, s);
    return (a->init_lora = strdup(s)) ? 0 : dora_errf(err, "out of memory");
}

double *adapter_base_rows(const dora_tensor *b, int fifo, int64_t out, int64_t in, dora_err *err)
{
    unsigned char *raw = malloc(b->nbytes ? b->nbytes : 1);
    double *w = malloc((size_t)(out * in > 0 ? out * in : 1) * sizeof *w);
    const void *fault;
    if (!raw || !w) {
        free(raw);
        free(w);
        dora_errf(err, "out of memory reading '%s'", b->name);
        return NULL;
    }
    if (dora_guard_copy(raw, b->data, b->nbytes, &fault) != 0) {
        free(raw);
        free(w);
        dora_errf(err, "'%s' changed while it was read (truncated?)", b->file);
        return NULL;
    }
    const size_t esz = dora_dtype_size(b->dtype);
    for (int64_t i = 0; i < out; i++)
        for (int64_t j = 0; j < in; j++)
            w[i * in + j] = dora_elem_to_f64(raw + (size_t)(fifo ? j * out + i : i * in + j) * esz,
                                             b->dtype);
    free(raw);
    return w;
}

/* M's factors become [B, -P], [A; Q] (P [out, r], Q [r, in] row-major:
 * B0, A0), rank 2r. */
static int bind_factors(const dora_adapter *a, dora_adapted *m, const dora_matrix *p,
                        const dora_matrix *q, const double *pd, const double *qd, dora_err *err)
{
    const int64_t out = m->L.rows, in = m->R.cols, r = m->r, r2 = 2 * r;
    dora_tensor *L = adapter_own(m, m->L.t, out, r2), *R = adapter_own(m, m->R.t, r2, in);
    if (!L || !R)
        return dora_errf(err, "out of memory for the factors of '%s'", m->base_name);
    double *ld = (double *)(void *)L->data, *rd = (double *)(void *)R->data;
    for (int64_t i = 0; i < out; i++) /* L = [B, -B0] */
        for (int64_t k = 0; k < r; k++) {
            ld[i * r2 + k] = dora_matrix_get(&m->L, i, k);
            ld[i * r2 + r + k] = -(p ? dora_matrix_get(p, i, k) : pd[i * r + k]);
        }
    for (int64_t k = 0; k < r; k++) /* R = [A; A0] */
        for (int64_t j = 0; j < in; j++) {
            rd[k * in + j] = dora_matrix_get(&m->R, k, j);
            rd[(r + k) * in + j] = q ? dora_matrix_get(q, k, j) : qd[k * in + j];
        }
    m->L = adapter_matrix(L, 0);
    m->R = adapter_matrix(R, 0);
    m->r = r2;
    return adapter_check_rank_scale(a, m->base_name, m, "twice 'r' (PiSSA / OLoRA)", err);
}

/* pissa_niter_K: B0, A0 from the initial adapter's module of the same name. */
static int bind_initial(const dora_adapter *a, dora_adapted *m, int64_t out, int64_t in,
                        dora_err *err)
{
    const dora_adapter *ia = a->initial;
    if (!ia)
        return dora_errf(err, "'%s': init_lora_weights '%s' is a randomised SVD: its B0 A0 "
                              "cannot be recomputed from W0, and without them dM and dD would "
                              "be measured against the wrong W0; give the adapter as PEFT "
                              "initialised it (--initial-adapter DIR, a batch manifest run's "
                              "initial_adapter, or a checkpoint-0/ in the run)",
                         a->config_path, a->init_lora);
    if (m->nowned) /* bound already */
        return 0;
    const dora_adapted *m0 = dora_adapter_find(ia, m->base_name);
    if (!m0 || m0->kind != DORA_ADAPTED_LORA || m0->nowned || m0->magnitude ||
        m0->L.rows != out || m0->R.cols != in || m0->r != m->r)
        return dora_errf(err, "'%s': the initial adapter '%s' has %s for module '%s' (wanted "
                              "lora_A [%lld, %lld] and lora_B [%lld, %lld] as in '%s')",
                         ia->weights->path, ia->dir, m0 ? "other factors" : "no factors",
                         m->base_name, (long long)m->r, (long long)in, (long long)out,
                         (long long)m->r, a->weights->path);
    if (m->L.transposed || m->R.transposed || m->L.rows != out || m->R.cols != in)
        return dora_errf(err, "'%s': module '%s': init_lora_weights '%s' needs a linear LoRA "
                              "module of [%lld, %lld]",
                         a->config_path, m->base_name, a->init_lora, (long long)out, (long long)in);
    if (fabs(m0->scale - m->scale) > 1e-12 * fabs(m->scale))
        return dora_errf(err, "'%s': the initial adapter's scale %.17g differs from '%s''s %.17g",
                         ia->config_path, m0->scale, a->config_path, m->scale);
    return bind_factors(a, m, &m0->L, &m0->R, NULL, NULL, err);
}

int adapter_bind_init(const dora_adapter *a, dora_adapted *m, const dora_tensor *b, int64_t out,
                      int64_t in, dora_err *err)
{
    if (a->init_initial)
        return bind_initial(a, m, out, in, err);
    dora_init_factor_fn fn = __atomic_load_n(&factoriser, __ATOMIC_ACQUIRE);
    if (!fn)
        return dora_errf(err, "'%s': init_lora_weights '%s': B0 A0 is recomputed from W0 by the "
                              "analysis (analyze), which this command does not run",
                         a->config_path, a->init_lora);
    if (m->nowned) /* bound already (against this base: the steps share it) */
        return 0;
    if (strcmp(a->init_lora, "olora") == 0 && m->fan_in_fan_out)
        return dora_errf(err, "'%s': OLoRA with fan_in_fan_out is not supported", a->config_path);
    const int64_t r = m->r;
    if (m->L.transposed || m->R.transposed || m->L.rows != out || m->R.cols != in)
        return dora_errf(err, "'%s': module '%s': init_lora_weights '%s' needs a linear LoRA "
                              "module of [%lld, %lld]",
                         a->config_path, m->base_name, a->init_lora, (long long)out, (long long)in);
    double *w0 = adapter_base_rows(b, m->fan_in_fan_out, out, in, err);
    double *p = malloc((size_t)(out * r) * sizeof *p), *q = malloc((size_t)(r * in) * sizeof *q);
    int rc = -1;
    if (!w0 || !p || !q) {
        if (w0)
            dora_errf(err, "out of memory for the initial factors of '%s'", m->base_name);
        goto done;
    }
    if (fn(a->init_lora, w0, out, in, r, m->scale, p, q, err) != 0)
        goto done;
    rc = bind_factors(a, m, NULL, NULL, p, q, err);
done:
    free(w0);
    free(p);
    free(q);
    return rc;
}

void dora_run_set_initial(dora_run *run, const dora_adapter *initial)
{
    for (size_t s = 0; s < run->nsteps; s++)
        if (run->steps[s].adapter && run->steps[s].adapter->init_initial)
            run->steps[s].adapter->initial = initial;
}

int dora_run_link_initial(dora_run *run, dora_err *err)
{
    dora_adapter *a0 = run->nsteps ? run->steps[0].adapter : NULL;
    /* a checkpoint-0/ folder of a Trainer run, not a lone folder taken as step 0 */
    if (!a0 || run->layout != DORA_RUN_TRAINER || run->steps[0].step != 0 || !a0->init_initial)
        return 0;
    /* a copy: step 0's own modules are bound (and changed) by its check */
    if (dora_adapter_open(&a0->initial_owned, run->steps[0].path, err) != 0)
        return dora_errprefix(err, "the initial adapter (step 0) of run '%s'", run->path);
    dora_run_set_initial(run, a0->initial_owned);
    return 0;
}

int dora_adapter_bind_alone(dora_adapter *a, dora_err *err)
{
    if (!a || !a->init_lora)
        return 0;
    if (!a->init_initial)
        return dora_errf(err, "'%s': init_lora_weights '%s': the adapter was trained against "
                              "W0 - s B0 A0, with B0 A0 recomputed from W0: its update needs the "
                              "pre-trained model (--base PATH)",
                         a->config_path, a->init_lora);
    for (size_t i = 0; i < a->nmodules; i++) {
        dora_adapted *m = &a->modules[i];
        if (m->kind != DORA_ADAPTED_LORA)
            continue;
        if (bind_initial(a, m, m->L.rows, m->R.cols, err) != 0)
            return -1;
    }
    return 0;
}
