/* test_stats.c - the uncertainty of the regressions (stats.h): the generator
 * against published values, the uniform draw, the Fisher interval and
 * Spearman's rho on cases worked by hand, and the layer bootstrap's
 * reproducibility, seed dependence and NaN-free undefined cases. SciPy and a
 * NumPy bootstrap check the numbers of whole studies (tests/py/ref_stats.py). */
#include "unit.h"
#include "dora/stats.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The first values of splitmix64 from seed 1234567 (the test vector of the
 * Rosetta Code task "Pseudo-random numbers/Splitmix64") and from 0 (the first
 * output of Vigna's splitmix64.c with x = 0). */
static void test_splitmix64(void)
{
    static const uint64_t want[5] = {UINT64_C(6457827717110365317), UINT64_C(3203168211198807973),
                                     UINT64_C(9817491932198370423), UINT64_C(4593380528125082431),
                                     UINT64_C(16408922859458223821)};
    uint64_t s = 1234567;
    for (int i = 0; i < 5; i++)
        CHECK(dora_splitmix64(&s) == want[i]);
    s = 0;
    CHECK(dora_splitmix64(&s) == UINT64_C(0xe220a8397b1dcdaf));
}

/* Every index of [0, m) comes up about equally often (each count within 6
 * standard deviations of N / m), for a power of two and for other m. */
static void test_draw_below(void)
{
    static const uint64_t ms[] = {1, 2, 3, 6, 7, 64};
    for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++) {
        uint64_t m = ms[k], s = 99;
        long cnt[64] = {0};
        const long N = 120000;
        int in_range = 1;
        for (long i = 0; i < N; i++) {
            uint64_t v = dora_draw_below(&s, m);
            in_range &= v < m;
            if (v < m)
                cnt[v]++;
        }
        CHECK(in_range);
        double e = (double)N / (double)m, sd = sqrt(e * (1 - 1.0 / (double)m));
        int ok = 1;
        for (uint64_t i = 0; i < m; i++)
            ok &= fabs((double)cnt[i] - e) <= 6 * sd + 1e-9;
        CHECK_MSG(ok, "m = %llu", (unsigned long long)m);
    }
}

static void test_fisher(void)
{
    double ci[2];
    /* REFERENCE.md: the paper's r at n = 24, to the two decimals given there */
    CHECK(dora_fisher_ci(-0.62, 24, ci) == 0);
    CHECK(unit_close(ci[0], -0.82, 0, 0.005) && unit_close(ci[1], -0.29, 0, 0.005));
    CHECK(dora_fisher_ci(-0.31, 24, ci) == 0 && ci[0] < 0 && ci[1] > 0); /* DoRA's holds 0 */
    CHECK(dora_fisher_ci(0.83, 24, ci) == 0);
    CHECK(unit_close(ci[0], 0.64, 0, 0.005) && unit_close(ci[1], 0.92, 0, 0.005));
    /* r = 0 at n = 7: tanh(-+1.959964 / 2) */
    CHECK(dora_fisher_ci(0, 7, ci) == 0);
    CHECK(unit_close(ci[1], tanh(1.959963984540054 / 2), 1e-15, 0) && ci[0] == -ci[1]);
    CHECK(dora_fisher_ci(1, 10, ci) == 0 && ci[0] == 1 && ci[1] == 1);
    CHECK(dora_fisher_ci(0.5, 3, ci) == -1 && ci[0] == 0 && ci[1] == 0); /* n - 3 = 0 */
    CHECK(dora_fisher_ci(NAN, 30, ci) == -1);
}

static void test_spearman(void)
{
    double rho;
    /* a monotone transform: rho 1, whatever Pearson's r */
    double x[6] = {0.1, 0.5, 0.2, 0.9, 0.3, 0.7}, y[6];
    for (int i = 0; i < 6; i++)
        y[i] = exp(10 * x[i]);
    CHECK(dora_spearman(x, y, 6, &rho) == 0 && unit_close(rho, 1, 0, 1e-15));
    for (int i = 0; i < 6; i++)
        y[i] = -y[i];
    CHECK(dora_spearman(x, y, 6, &rho) == 0 && unit_close(rho, -1, 0, 1e-15));
    /* ties at their average rank: x ranks 1, 2.5, 2.5, 4; y ranks 1, 3, 2, 4 */
    double tx[4] = {1, 2, 2, 3}, ty[4] = {10, 30, 20, 40};
    double rx[4] = {1, 2.5, 2.5, 4}, ry[4] = {1, 3, 2, 4}, slope, icpt, r;
    CHECK(dora_linfit(rx, ry, 4, &slope, &icpt, &r) == 0);
    CHECK(dora_spearman(tx, ty, 4, &rho) == 0 && unit_close(rho, r, 0, 1e-15));
    CHECK(unit_close(rho, 4.5 / sqrt(4.5 * 5), 0, 1e-15)); /* sxy 4.5, sxx 4.5, syy 5 */
    double c[4] = {2, 2, 2, 2};
    CHECK(dora_spearman(tx, c, 4, &rho) == -1 && rho == 0); /* constant: undefined, not NaN */
    CHECK(dora_spearman(tx, ty, 1, &rho) == -1);
}

/* S = 4 steps x M = 6 layers, step-major, with a layer effect and noise */
static void study(double *x, double *y, unsigned seed)
{
    uint64_t s = seed;
    for (int st = 0; st < 4; st++)
        for (int l = 0; l < 6; l++) {
            double u = (double)(dora_splitmix64(&s) >> 11) / 9007199254740992.0;
            x[st * 6 + l] = 0.01 * (st + 1) * (1 + l) + 0.002 * u;
            y[st * 6 + l] = 0.02 * (st + 1) - 0.001 * l + 0.004 * u;
        }
}

static void test_bootstrap(void)
{
    double x[24], y[24], ci[2], wci[2], ci2[2], wci2[2], ci3[2], wci3[2];
    int d, wd, d2, wd2, d3, wd3;
    study(x, y, 7);
    CHECK(dora_cluster_bootstrap(x, y, 4, 6, 2000, 42, ci, &d, wci, &wd) == 0 && d && wd);
    CHECK(dora_cluster_bootstrap(x, y, 4, 6, 2000, 42, ci2, &d2, wci2, &wd2) == 0 && d2 && wd2);
    CHECK(memcmp(ci, ci2, sizeof ci) == 0 && memcmp(wci, wci2, sizeof wci) == 0);
    CHECK(dora_cluster_bootstrap(x, y, 4, 6, 2000, 43, ci3, &d3, wci3, &wd3) == 0 && d3 && wd3);
    CHECK(memcmp(ci, ci3, sizeof ci) != 0 && memcmp(wci, wci3, sizeof wci) != 0);
    CHECK(ci[0] <= ci[1] && wci[0] <= wci[1] && ci[0] >= -1 && ci[1] <= 1);
    /* the point estimates lie in their intervals */
    double slope, icpt, r, cx[24], cy[24], wr;
    CHECK(dora_linfit(x, y, 24, &slope, &icpt, &r) == 0);
    CHECK(ci[0] <= r && r <= ci[1]);
    for (int st = 0; st < 4; st++) {
        double mx = 0, my = 0;
        for (int l = 0; l < 6; l++) {
            mx += x[st * 6 + l] / 6;
            my += y[st * 6 + l] / 6;
        }
        for (int l = 0; l < 6; l++) {
            cx[st * 6 + l] = x[st * 6 + l] - mx;
            cy[st * 6 + l] = y[st * 6 + l] - my;
        }
    }
    CHECK(dora_linfit(cx, cy, 24, &slope, &icpt, &wr) == 0);
    CHECK_MSG(wci[0] <= wr && wr <= wci[1], "within r %g, [%g, %g]", wr, wci[0], wci[1]);
    /* one layer: nothing to resample; undefined, zeros, never NaN */
    CHECK(dora_cluster_bootstrap(x, y, 4, 1, 2000, 42, ci, &d, wci, &wd) == 0 && !d && !wd);
    CHECK(ci[0] == 0 && ci[1] == 0 && wci[0] == 0 && wci[1] == 0);
    /* every layer the same: every replicate's r is undefined */
    double flat[24];
    for (int i = 0; i < 24; i++)
        flat[i] = 0.5;
    CHECK(dora_cluster_bootstrap(flat, y, 4, 6, 500, 42, ci, &d, wci, &wd) == 0 && !d && !wd);
    CHECK(!isnan(ci[0]) && !isnan(wci[1]));
}

/* The regressions of a run: the defaults B and seed are recorded, another B changes
 * the intervals, and a B out of range is refused. */
static void test_regressions(void)
{
    double dm[24], dd[24];
    study(dd, dm, 11);
    char *mods[6];
    char names[6][64];
    int32_t layer[6];
    for (int l = 0; l < 6; l++) {
        snprintf(names[l], sizeof names[l], "model.layers.%d.self_attn.q_proj.weight", l);
        mods[l] = names[l];
        layer[l] = l;
    }
    dora_result run;
    memset(&run, 0, sizeof run);
    run.name = "ft";
    run.method = "ft";
    run.nsteps = 4;
    run.nmodules = 6;
    run.modules = mods;
    run.layer = layer;
    run.delta_m = dm;
    run.delta_d = dd;
    dora_regression *g = NULL, *h = NULL;
    size_t n = 0, nh = 0;
    CHECK(dora_regressions(&run, 1, &g, &n) == 0 && n == 1);
    if (n == 1) {
        CHECK(g[0].bootstrap == DORA_BOOTSTRAP_DEFAULT && g[0].seed == DORA_BOOTSTRAP_SEED);
        CHECK(g[0].fisher_defined && g[0].boot_defined && g[0].within_boot_defined &&
              g[0].spearman_defined);
        CHECK(g[0].fisher_ci[0] <= g[0].r && g[0].r <= g[0].fisher_ci[1]);
    }
    dora_stats_opts o = {500, 0};
    CHECK(dora_regressions_opts(&run, 1, &o, &h, &nh) == 0 && nh == 1);
    if (n == 1 && nh == 1)
        CHECK(h[0].bootstrap == 500 && h[0].r == g[0].r &&
              memcmp(h[0].boot_ci, g[0].boot_ci, sizeof h[0].boot_ci) != 0);
    dora_regressions_free(g, n);
    dora_regressions_free(h, nh);
    o.bootstrap = 99;
    CHECK(dora_regressions_opts(&run, 1, &o, &g, &n) == -1 && g == NULL);
    o.bootstrap = DORA_BOOTSTRAP_MAX + 1;
    CHECK(dora_regressions_opts(&run, 1, &o, &g, &n) == -1);
}

static int cmp_d(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* The percentile by selection against its naive twin, sorting: bit-equal on random values,
 * on values with many ties (as replicates of few layers have), on sorted and reversed
 * input, at the ends (p 0 and 1) and for n = 1; refused for n = 0 and p outside [0, 1]. */
static void test_percentile(void)
{
    static const double ps[] = {0, 0.025, 0.1, 0.5, 0.975, 0.999, 1};
    static const size_t ns[] = {1, 2, 3, 5, 40, 1000, 10001};
    uint64_t st = 7;
    int ok = 1;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int kind = 0; kind < 4; kind++) {
            const size_t n = ns[a];
            double *v = malloc(n * sizeof *v), *w = malloc(n * sizeof *w), *u = malloc(n * sizeof *u);
            for (size_t i = 0; i < n; i++) {
                double x = (double)(dora_splitmix64(&st) >> 11) / 9007199254740992.0 * 2 - 1;
                v[i] = kind == 1 ? (double)(dora_splitmix64(&st) % 4) / 4   /* ties */
                       : kind == 2 ? (double)i / (double)n                     /* sorted */
                       : kind == 3 ? -(double)i                                /* reversed */
                                   : x;
            }
            memcpy(w, v, n * sizeof *w);
            qsort(w, n, sizeof *w, cmp_d);
            for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
                const double h = (double)(n - 1) * ps[k];
                const size_t lo = (size_t)floor(h);
                const double want = lo + 1 < n ? w[lo] + (h - (double)lo) * (w[lo + 1] - w[lo])
                                               : w[n - 1];
                double got;
                memcpy(u, v, n * sizeof *u);
                ok &= dora_percentile(u, n, ps[k], &got) == 0 && got == want;
                if (got != want)
                    fprintf(stderr, "n %zu kind %d p %g: %.17g, sorted %.17g\n", n, kind, ps[k],
                            got, want);
            }
            free(v);
            free(w);
            free(u);
        }
    CHECK(ok);
    double one = 3, out = 1;
    CHECK(dora_percentile(&one, 0, 0.5, &out) == -1 && out == 0);
    CHECK(dora_percentile(&one, 1, 1.5, &out) == -1 && dora_percentile(&one, 1, -0.1, &out) == -1);
    CHECK(dora_percentile(&one, 1, 0.3, &out) == 0 && out == 3);
}

int main(void)
{
    test_percentile();
    test_splitmix64();
    test_draw_below();
    test_fisher();
    test_spearman();
    test_bootstrap();
    test_regressions();
    return unit_summary("stats");
}
