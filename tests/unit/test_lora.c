/* The LoRA/DoRA path (GEMM with the stacked factors, Gram matrices, DoRA
 * magnitudes, transposed bases) held to its naive twin: the merged weight
 * formed element by element in long double and the row statistics taken
 * straight from the definitions. */
#define _POSIX_C_SOURCE 200809L
#include "dora/adapter.h"
#include "dora/analyze.h"
#include "dora/kernel.h"
#include "dora/model.h"
#include "dora/run.h"
#include "st_write.h"
#include "unit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static char root[] = "/tmp/dora-unit-lora-XXXXXX";
static uint64_t rng = 0x2545f4914f6cdd1dULL;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

/* A tensor to write: F32 values, shape up to 4 dims. */
typedef struct wt {
    const char *name;
    int ndim;
    int64_t shape[4];
    float *v;
} wt;

static int64_t numel(const wt *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static void fill(wt *t, double scale)
{
    t->v = malloc((size_t)numel(t) * sizeof *t->v);
    for (int64_t i = 0; i < numel(t); i++)
        t->v[i] = (float)(scale * uniform());
}

static void write_all(const char *path, wt *ts, int n)
{
    char header[8192];
    size_t used = 0, off = 0;
    used += (size_t)snprintf(header + used, sizeof header - used, "{");
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)numel(&ts[i]) * 4;
        used += (size_t)snprintf(header + used, sizeof header - used,
                                 "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", ts[i].name);
        for (int d = 0; d < ts[i].ndim; d++)
            used += (size_t)snprintf(header + used, sizeof header - used, "%s%lld", d ? "," : "",
                                     (long long)ts[i].shape[d]);
        used += (size_t)snprintf(header + used, sizeof header - used, "],\"data_offsets\":[%zu,%zu]}",
                                 off, off + bytes);
        off += bytes;
    }
    snprintf(header + used, sizeof header - used, "}");
    unsigned char *data = malloc(off ? off : 1);
    size_t p = 0;
    for (int i = 0; i < n; i++) {
        memcpy(data + p, ts[i].v, (size_t)numel(&ts[i]) * 4);
        p += (size_t)numel(&ts[i]) * 4;
    }
    st_write_raw(path, header, data, off);
    free(data);
}

static void text(const char *path, const char *body)
{
    FILE *f = fopen(path, "w");
    fputs(body, f);
    fclose(f);
}

/* Naive dM/dD of one module: W0 row n (out-major view), merged row from the
 * adapter's factors in long double, optional DoRA magnitude. */
static void naive_module(const dora_model *base, const dora_adapted *ad, double *dm, double *dd)
{
    const dora_tensor *b = dora_model_find(base, ad->base_name);
    int64_t out = ad->L.rows, in = ad->R.cols;
    double *a = malloc((size_t)in * sizeof *a), *m = malloc((size_t)in * sizeof *m);
    long double sdm = 0, sdd = 0;
    for (int64_t n = 0; n < out; n++) {
        long double vv = 0;
        long double *row = malloc((size_t)in * sizeof *row);
        for (int64_t j = 0; j < in; j++) {
            float w0;
            int64_t idx = ad->fan_in_fan_out ? j * out + n : n * in + j;
            memcpy(&w0, b->data + 4 * idx, 4);
            long double u = 0;
            for (int64_t k = 0; k < ad->r; k++)
                u += (long double)dora_matrix_get(&ad->L, n, k) * dora_matrix_get(&ad->R, k, j);
            a[j] = w0;
            row[j] = (long double)w0 + (long double)ad->scale * u;
            vv += row[j] * row[j];
        }
        long double f = 1;
        if (ad->magnitude) {
            float mg;
            memcpy(&mg, ad->magnitude->data + 4 * n, 4);
            f = (long double)mg / sqrtl(vv);
        }
        for (int64_t j = 0; j < in; j++)
            m[j] = (double)(row[j] * f);
        free(row);
        dora_rowstat st;
        dora_row_stat_naive(a, DORA_DT_F64, m, DORA_DT_F64, (size_t)in, &st);
        sdm += st.dm;
        sdd += st.one_minus_cos;
    }
    *dm = (double)(sdm / out);
    *dd = (double)(sdd / out);
    free(a);
    free(m);
}

static void check_run(const char *base_path, const char *run_path, const char *method, int threads)
{
    dora_err err;
    dora_model *base = NULL;
    dora_run run;
    dora_result res;
    CHECK_MSG(dora_model_open(&base, base_path, &err) == 0, "%s", err.msg);
    CHECK_MSG(dora_run_discover(&run, run_path, &err) == 0, "%s", err.msg);
    dora_analysis_opts opts = {.threads = threads};
    int rc = dora_analyze_run(&res, "r", base, base_path, &run, &opts, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK_MSG(strcmp(res.method, method) == 0, "method %s, expected %s", res.method, method);
        double worst = 0;
        for (size_t s = 0; s < res.nsteps; s++) {
            dora_adapter *a;
            CHECK(dora_adapter_open(&a, run.steps[s].path, &err) == 0);
            for (size_t l = 0; l < res.nmodules; l++) {
                const dora_adapted *ad = dora_adapter_find(a, res.modules[l]);
                if (!ad || ad->kind != DORA_ADAPTED_LORA)
                    continue;
                double dm, dd;
                naive_module(base, ad, &dm, &dd);
                double got_m = res.delta_m[s * res.nmodules + l], got_d = res.delta_d[s * res.nmodules + l];
                CHECK_MSG(unit_close(got_m, dm, 1e-9, 0), "%s step %zu dM %.17g vs naive %.17g",
                          res.modules[l], s, got_m, dm);
                CHECK_MSG(unit_close(got_d, dd, 1e-9, 0), "%s step %zu dD %.17g vs naive %.17g",
                          res.modules[l], s, got_d, dd);
                double e = fmax(fabs(got_m - dm) / dm, fabs(got_d - dd) / dd);
                if (e > worst)
                    worst = e;
            }
            dora_adapter_close(a);
        }
        printf("lora path vs naive merge (%s, -j %d): worst relative error %.3g\n", run_path, threads,
               worst);
        dora_result_release(&res);
    }
    dora_run_release(&run);
    dora_model_close(base);
}

/* Analyses running at once in one process, as `batch` runs its units, must give
 * the bits of one alone, from the very first BLAS calls of the process on: so
 * this runs first in main, and the references are computed afterwards. A guard
 * for shared state in our code and in the BLAS underneath; it did not catch the
 * rare wrong value `batch` wrote with an earlier BLAS set-up (README,
 * Performance), which showed once in ~50 runs. */
enum { CONC_ROUNDS = 12 };
typedef struct conc {
    const char *base, *run;
    double *dm, *dd; /* [CONC_ROUNDS][n] */
    size_t n;
    int failures;
} conc;

static int analyze_once(const char *base_path, const char *run_path, dora_result *res)
{
    dora_err err;
    dora_model *base = NULL;
    dora_run run;
    if (dora_model_open(&base, base_path, &err) != 0)
        return -1;
    if (dora_run_discover(&run, run_path, &err) != 0) {
        dora_model_close(base);
        return -1;
    }
    dora_analysis_opts opts = {.threads = 1};
    int rc = dora_analyze_run(res, "r", base, base_path, &run, &opts, &err);
    dora_run_release(&run);
    dora_model_close(base);
    return rc;
}

static void *conc_worker(void *arg)
{
    conc *c = arg;
    for (int i = 0; i < CONC_ROUNDS; i++) {
        dora_result res;
        if (analyze_once(c->base, c->run, &res) != 0) {
            c->failures++;
            continue;
        }
        if (res.nsteps * res.nmodules == c->n) {
            memcpy(c->dm + (size_t)i * c->n, res.delta_m, c->n * sizeof *c->dm);
            memcpy(c->dd + (size_t)i * c->n, res.delta_d, c->n * sizeof *c->dd);
        } else {
            c->failures++;
        }
        dora_result_release(&res);
    }
    return NULL;
}

static void test_concurrent(void)
{
    char base_path[512], q[1200], run_path[2][512];
    /* many modules of rank 128: most of an analysis is their Gram matrices (dgemm) */
    enum { OUT = 16, IN = 1024, R = 128, NMOD = 24 };
    wt base[NMOD], ad[2 * NMOD];
    char names[3 * NMOD][96];
    for (int i = 0; i < NMOD; i++) {
        snprintf(names[i], sizeof names[i], "m.layers.%d.q.weight", i);
        base[i] = (wt){names[i], 2, {OUT, IN}, NULL};
        fill(&base[i], 0.5);
        snprintf(names[NMOD + i], sizeof names[0], "base_model.model.m.layers.%d.q.lora_A.weight", i);
        snprintf(names[2 * NMOD + i], sizeof names[0], "base_model.model.m.layers.%d.q.lora_B.weight", i);
    }
    snprintf(base_path, sizeof base_path, "%s/conc-base.safetensors", root);
    write_all(base_path, base, NMOD);
    for (int i = 0; i < NMOD; i++)
        free(base[i].v);
    /* two runs with different factors: threads that shared a BLAS buffer while
     * computing the same numbers would not show it */
    for (int k = 0; k < 2; k++) {
        snprintf(run_path[k], sizeof run_path[k], "%s/conc%d", root, k);
        snprintf(q, sizeof q, "mkdir -p %s/checkpoint-1", run_path[k]);
        if (system(q) != 0) {
            CHECK(0);
            return;
        }
        for (int i = 0; i < NMOD; i++) {
            ad[2 * i] = (wt){names[NMOD + i], 2, {R, IN}, NULL};
            ad[2 * i + 1] = (wt){names[2 * NMOD + i], 2, {OUT, R}, NULL};
            fill(&ad[2 * i], 0.1);
            fill(&ad[2 * i + 1], 0.1);
        }
        snprintf(q, sizeof q, "%s/checkpoint-1/adapter_model.safetensors", run_path[k]);
        write_all(q, ad, 2 * NMOD);
        snprintf(q, sizeof q, "%s/checkpoint-1/adapter_config.json", run_path[k]);
        text(q, "{\"peft_type\":\"LORA\",\"r\":128,\"lora_alpha\":256,\"target_modules\":[\"q\"]}");
        for (int i = 0; i < 2 * NMOD; i++)
            free(ad[i].v);
    }

    conc c[2];
    for (int k = 0; k < 2; k++) {
        c[k] = (conc){base_path, run_path[k], calloc(CONC_ROUNDS * NMOD, sizeof(double)),
                      calloc(CONC_ROUNDS * NMOD, sizeof(double)), NMOD, 0};
        if (!c[k].dm || !c[k].dd) {
            CHECK(0);
            return;
        }
    }
    pthread_t t;
    int started = pthread_create(&t, NULL, conc_worker, &c[1]) == 0;
    conc_worker(&c[0]);
    if (started)
        pthread_join(t, NULL);
    CHECK(started);
    CHECK_MSG(c[0].failures + c[1].failures == 0, "%d analyses failed",
              c[0].failures + c[1].failures);
    int mismatches = 0;
    for (int k = 0; k < 2; k++) {
        dora_result ref;
        if (analyze_once(base_path, run_path[k], &ref) != 0) {
            CHECK(0);
            continue;
        }
        for (int i = 0; i < CONC_ROUNDS; i++)
            mismatches += memcmp(c[k].dm + (size_t)i * NMOD, ref.delta_m, NMOD * sizeof(double)) != 0 ||
                          memcmp(c[k].dd + (size_t)i * NMOD, ref.delta_d, NMOD * sizeof(double)) != 0;
        dora_result_release(&ref);
        free(c[k].dm);
        free(c[k].dd);
    }
    CHECK_MSG(mismatches == 0, "%d of %d analyses run two at a time differ from one alone",
              mismatches, 2 * CONC_ROUNDS);
}

int main(void)
{
    if (!mkdtemp(root))
        return 2;
    test_concurrent();
    char p[512], q[512];
    /* base: GQA-like non-square k, a conv, an embedding, a Conv1D stored [in, out] */
    wt base[] = {
        {"m.layers.0.q.weight", 2, {48, 40}, NULL},   {"m.layers.0.k.weight", 2, {16, 40}, NULL},
        {"m.layers.1.q.weight", 2, {48, 40}, NULL},   {"m.conv.weight", 4, {12, 5, 3, 3}, NULL},
        {"m.emb.weight", 2, {30, 24}, NULL},          {"m.c_attn.weight", 2, {40, 72}, NULL},
        {"m.head.weight", 2, {6, 40}, NULL},
    };
    for (int i = 0; i < 7; i++)
        fill(&base[i], 0.5);
    snprintf(p, sizeof p, "%s/base.safetensors", root);
    write_all(p, base, 7);

    /* run 1: LoRA + DoRA magnitudes, rsLoRA, patterns, conv, embedding, a saved module */
    snprintf(q, sizeof q, "mkdir -p %s/run1/checkpoint-5 %s/run1/checkpoint-9 %s/run2/checkpoint-3",
             root, root, root);
    if (system(q) != 0)
        return 2;
    for (int step = 0; step < 2; step++) {
        wt ad[] = {
            {"base_model.model.m.layers.0.q.lora_A.weight", 2, {4, 40}, NULL},
            {"base_model.model.m.layers.0.q.lora_B.weight", 2, {48, 4}, NULL},
            {"base_model.model.m.layers.0.k.lora_A.weight", 2, {4, 40}, NULL},
            {"base_model.model.m.layers.0.k.lora_B.weight", 2, {16, 4}, NULL},
            {"base_model.model.m.layers.0.k.lora_magnitude_vector", 1, {16}, NULL},
            {"base_model.model.m.layers.1.q.lora_A.weight", 2, {2, 40}, NULL},
            {"base_model.model.m.layers.1.q.lora_B.weight", 2, {48, 2}, NULL},
            {"base_model.model.m.conv.lora_A.weight", 4, {4, 5, 3, 3}, NULL},
            {"base_model.model.m.conv.lora_B.weight", 4, {12, 4, 1, 1}, NULL},
            {"base_model.model.m.emb.lora_embedding_A", 2, {4, 30}, NULL},
            {"base_model.model.m.emb.lora_embedding_B", 2, {24, 4}, NULL},
            {"base_model.model.m.head.weight", 2, {6, 40}, NULL},
        };
        for (int i = 0; i < 12; i++)
            fill(&ad[i], 0.3 * (step + 1));
        for (int i = 0; i < 16; i++) /* magnitudes near the base norms, one negative */
            ad[4].v[i] = (float)((i == 3 ? -1.0 : 1.0) * (1.5 + 0.2 * uniform()));
        snprintf(p, sizeof p, "%s/run1/checkpoint-%d/adapter_model.safetensors", root, step ? 9 : 5);
        write_all(p, ad, 12);
        snprintf(p, sizeof p, "%s/run1/checkpoint-%d/adapter_config.json", root, step ? 9 : 5);
        text(p, "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"use_rslora\":true,"
                "\"rank_pattern\":{\"layers\\\\.1\\\\.q\":2},\"alpha_pattern\":{\"k\":3.5},"
                "\"target_modules\":[\"q\",\"k\",\"conv\",\"emb\"],\"modules_to_save\":[\"head\"]}");
        for (int i = 0; i < 12; i++)
            free(ad[i].v);
    }
    /* run 2: fan_in_fan_out on the Conv1D weight */
    wt ad2[] = {
        {"base_model.model.m.c_attn.lora_A.weight", 2, {3, 40}, NULL},
        {"base_model.model.m.c_attn.lora_B.weight", 2, {72, 3}, NULL},
    };
    fill(&ad2[0], 0.4);
    fill(&ad2[1], 0.4);
    snprintf(p, sizeof p, "%s/run2/checkpoint-3/adapter_model.safetensors", root);
    write_all(p, ad2, 2);
    snprintf(p, sizeof p, "%s/run2/checkpoint-3/adapter_config.json", root);
    text(p, "{\"peft_type\":\"LORA\",\"r\":3,\"lora_alpha\":6,\"fan_in_fan_out\":true}");
    free(ad2[0].v);
    free(ad2[1].v);

    snprintf(p, sizeof p, "%s/base.safetensors", root);
    snprintf(q, sizeof q, "%s/run1", root);
    check_run(p, q, "dora", 1);
    check_run(p, q, "dora", 2);
    snprintf(q, sizeof q, "%s/run2", root);
    check_run(p, q, "lora", 2);

    /* the pattern lookups took effect */
    dora_adapter *a;
    dora_err err;
    snprintf(q, sizeof q, "%s/run1/checkpoint-5", root);
    if (dora_adapter_open(&a, q, &err) == 0) {
        const dora_adapted *m1 = dora_adapter_find(a, "m.layers.1.q.weight");
        const dora_adapted *mk = dora_adapter_find(a, "m.layers.0.k.weight");
        const dora_adapted *mh = dora_adapter_find(a, "m.head.weight");
        CHECK(m1 && m1->r == 2 && unit_close(m1->scale, 8 / sqrt(2.0), 1e-15, 0));
        CHECK(mk && unit_close(mk->scale, 3.5 / 2.0, 1e-15, 0) && mk->magnitude);
        CHECK(mh && mh->kind == DORA_ADAPTED_SAVED);
        CHECK(strcmp(a->method, "dora") == 0);
        dora_adapter_close(a);
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }
    for (int i = 0; i < 7; i++)
        free(base[i].v);
    snprintf(q, sizeof q, "rm -rf '%s'", root);
    if (system(q) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return unit_summary("test_lora");
}
