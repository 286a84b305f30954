/* init_factors.c - B0 A0 of PiSSA and OLoRA adapters, recomputed from W0 as
 * PEFT's pissa_init / olora_init compute them (in float64 here, float32 there),
 * for checkpoints/adapter_init.c (dora_adapter_set_init_factoriser). */
#include "analysis/analyze_int.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* PiSSA: W0 = U S V^T, s B0 A0 = U_r S_r V_r^T: P = U_r S_r / s, Q = V_r^T.
 * OLoRA: W0 = Q R (Householder, as torch.linalg.qr), B0 = Q[:, :r], A0 = R[:r]. */
int an_init_factors(const char *how, const double *w0, int64_t out, int64_t in, int64_t r,
                    double scale, double *p, double *q, dora_err *err)
{
    const int64_t k = out < in ? out : in;
    if (r > k)
        return dora_errf(err, "init_lora_weights '%s': r = %lld is more than min(out, in) = %lld",
                         how, (long long)r, (long long)k);
    double *a = malloc((size_t)(out * in) * sizeof *a);
    double *u = malloc((size_t)(out * k) * sizeof *u), *sv = malloc((size_t)k * sizeof *sv);
    double *vt = malloc((size_t)(k * in) * sizeof *vt);
    int rc = -1;
    if (!a || !u || !sv || !vt) {
        dora_errf(err, "out of memory for the SVD of a [%lld, %lld] weight", (long long)out,
                  (long long)in);
        goto done;
    }
    memcpy(a, w0, (size_t)(out * in) * sizeof *a);
    if (strcmp(how, "pissa") == 0) {
        lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)out, (lapack_int)in, a,
                                         (lapack_int)in, sv, u, (lapack_int)k, vt, (lapack_int)in);
        if (info != 0) {
            dora_errf(err, "the SVD of a [%lld, %lld] weight failed (LAPACK info %d)",
                      (long long)out, (long long)in, (int)info);
            goto done;
        }
        for (int64_t i = 0; i < out; i++)
            for (int64_t c = 0; c < r; c++)
                p[i * r + c] = u[i * k + c] * sv[c] / scale;
        memcpy(q, vt, (size_t)(r * in) * sizeof *q);
    } else {
        double *tau = sv; /* [k] */
        if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)out, (lapack_int)in, a, (lapack_int)in,
                           tau) != 0) {
            dora_errf(err, "the QR of a [%lld, %lld] weight failed", (long long)out, (long long)in);
            goto done;
        }
        for (int64_t i = 0; i < r; i++) /* R's first r rows: upper triangular */
            for (int64_t j = 0; j < in; j++)
                q[i * in + j] = j >= i ? a[i * in + j] : 0.0;
        if (LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)out, (lapack_int)k, (lapack_int)k, a,
                           (lapack_int)in, tau) != 0) {
            dora_errf(err, "forming Q of a [%lld, %lld] weight failed", (long long)out,
                      (long long)in);
            goto done;
        }
        for (int64_t i = 0; i < out; i++)
            for (int64_t c = 0; c < r; c++)
                p[i * r + c] = a[i * in + c];
    }
    for (int64_t i = 0; i < out * r; i++)
        if (!isfinite(p[i])) {
            dora_errf(err, "init_lora_weights '%s': the factors of W0 are not finite", how);
            goto done;
        }
    rc = 0;
done:
    free(a);
    free(u);
    free(sv);
    free(vt);
    return rc;
}
