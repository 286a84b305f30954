/* test_batch.c - manifests (fields, paths, every error naming its field), the
 * unit wire format (round trip bit for bit, every truncation refused), the
 * journal (torn tail ignored, damage refused), joining units, expectations,
 * shard names and the reports. */
#define _POSIX_C_SOURCE 200809L
#include "dora/batch.h"
#include "unit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *path_in(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* A hand-made result: S steps from STEP0 by 100, modules NAMES[0..L). */
static void make_result(dora_result *r, const char *name, const char *method, size_t S,
                        int64_t step0, const char *const *names, size_t L, double seed)
{
    memset(r, 0, sizeof *r);
    r->name = strdup(name);
    r->method = method;
    r->source_path = strdup("runs/x");
    r->base_path = strdup("base");
    if (dora_result_alloc(r, S, L) != 0)
        abort();
    for (size_t s = 0; s < S; s++) {
        char buf[64];
        r->steps[s] = step0 + 100 * (int64_t)s;
        snprintf(buf, sizeof buf, "runs/x/checkpoint-%lld", (long long)r->steps[s]);
        r->step_paths[s] = strdup(buf);
        snprintf(buf, sizeof buf, "%lld:%lld", 1000 + (long long)s, 17 * (long long)r->steps[s]);
        r->step_stamps[s] = strdup(buf);
    }
    for (size_t l = 0; l < L; l++) {
        r->modules[l] = strdup(names[l]);
        r->layer[l] = (int32_t)l;
        r->rows[l] = 8 + (int64_t)l;
        r->cols[l] = 16;
        r->rank[l] = strcmp(method, "ft") ? 4 : 0;
    }
    for (size_t i = 0; i < S * L; i++) {
        /* values with full mantissas, so that a lossy round trip shows */
        r->delta_m[i] = seed / 3.0 + (double)i / 7.0 + (double)r->steps[i / L] / 11.0;
        r->delta_d[i] = 1e-10 * (seed + (double)i) / 9.0 + (double)r->steps[i / L] * 1e-7;
        r->zero_rows[i] = (int64_t)(i % 3);
    }
    r->nnotes = 1;
    r->notes = calloc(1, sizeof *r->notes);
    r->notes[0] = strdup("a note");
}

static int same_result(const dora_result *a, const dora_result *b)
{
    if (strcmp(a->name, b->name) || strcmp(a->method, b->method) ||
        strcmp(a->source_path, b->source_path) || strcmp(a->base_path, b->base_path) ||
        a->nsteps != b->nsteps || a->nmodules != b->nmodules || a->nnotes != b->nnotes ||
        a->nfailures != b->nfailures)
        return 0;
    size_t S = a->nsteps, L = a->nmodules;
    for (size_t s = 0; s < S; s++)
        if (a->steps[s] != b->steps[s] || strcmp(a->step_paths[s], b->step_paths[s]) ||
            strcmp(a->step_stamps[s], b->step_stamps[s]))
            return 0;
    for (size_t l = 0; l < L; l++)
        if (strcmp(a->modules[l], b->modules[l]) || a->layer[l] != b->layer[l] ||
            a->rows[l] != b->rows[l] || a->cols[l] != b->cols[l] || a->rank[l] != b->rank[l])
            return 0;
    return memcmp(a->delta_m, b->delta_m, S * L * sizeof(double)) == 0 &&
           memcmp(a->delta_d, b->delta_d, S * L * sizeof(double)) == 0 &&
           memcmp(a->zero_rows, b->zero_rows, S * L * sizeof(int64_t)) == 0;
}

static const char *const three[] = {"model.layers.0.q_proj.weight", "model.layers.0.v_proj.weight",
                                     "model.layers.1.q_proj.weight"};

/* ---- manifest ----------------------------------------------------------- */

static const char good_manifest[] =
    "{\"version\": 1, \"comment\": \"top\", \"studies\": [\n"
    " {\"name\": \"s1\", \"base\": \"../data/./base\", \"comment\": [\"any\", 1],\n"
    "  \"runs\": [{\"name\": \"ft\", \"path\": \"../data/ft/\", \"method\": \"ft\"},\n"
    "           {\"name\": \"lora\", \"path\": \"/abs/lora\"}],\n"
    "  \"modules\": {\"include\": \"q_proj|v_proj\", \"exclude\": \"layers\\\\.0\\\\.\"},\n"
    "  \"output\": \"out/s1.h5\",\n"
    "  \"figures\": {\"dir\": \"figs\", \"formats\": [\"png\", \"pdf\"], \"kinds\": \"q_proj\"},\n"
    "  \"expect\": [{\"run\": \"ft\", \"module_kind\": \"q_proj\", \"stat\": \"pearson_r\",\n"
    "              \"op\": \"<\", \"value\": 0},\n"
    "             {\"name\": \"slope up\", \"run\": \"lora\", \"module_kind\": \"v_proj\",\n"
    "              \"stat\": \"slope\", \"op\": \">=\", \"value\": 1.5}]},\n"
    " {\"name\": \"s2\", \"base\": \"b\", \"runs\": [{\"name\": \"a\", \"path\": \"a\"}],\n"
    "  \"output\": \"out/s2.h5\"}]}\n";

static void test_manifest_good(void)
{
    char *p = path_in("sub/m.json");
    write_text(p, good_manifest);
    dora_manifest m;
    dora_err err = {{0}, 0};
    int rc = dora_manifest_load(&m, p, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc != 0)
        return;
    CHECK(m.nstudies == 2);
    const dora_study *s = &m.studies[0];
    char want[600];
    snprintf(want, sizeof want, "%s/data/base", dir);
    CHECK_MSG(strcmp(s->base, want) == 0, "base '%s', want '%s'", s->base, want);
    snprintf(want, sizeof want, "%s/data/ft", dir);
    CHECK_MSG(strcmp(s->runs[0].path, want) == 0, "ft '%s'", s->runs[0].path);
    CHECK(strcmp(s->runs[1].path, "/abs/lora") == 0);
    CHECK(strcmp(s->runs[0].method, "ft") == 0 && s->runs[1].method == NULL);
    snprintf(want, sizeof want, "%s/sub/out/s1.h5", dir);
    CHECK(strcmp(s->output, want) == 0);
    CHECK(s->filter.has_include && s->filter.has_exclude);
    CHECK(regexec(&s->filter.include, "model.layers.3.q_proj.weight", 0, NULL, 0) == 0);
    CHECK(regexec(&s->filter.exclude, "model.layers.0.q_proj.weight", 0, NULL, 0) == 0);
    CHECK(s->figures && strcmp(s->fig_formats, "png,pdf") == 0 &&
          strcmp(s->fig_kinds, "q_proj") == 0);
    CHECK(s->nexpect == 2);
    CHECK(strcmp(s->expect[0].name, "ft q_proj pearson_r < 0") == 0);
    CHECK(s->expect[0].stat == DORA_STAT_PEARSON_R && s->expect[0].op == DORA_OP_LT);
    CHECK(strcmp(s->expect[1].name, "slope up") == 0 && s->expect[1].value == 1.5 &&
          s->expect[1].op == DORA_OP_GE && s->expect[1].stat == DORA_STAT_SLOPE);
    CHECK(!m.studies[1].figures && m.studies[1].nexpect == 0 && !m.studies[1].filter.has_include);
    dora_manifest_release(&m);
}

/* Each bad manifest must fail with a message holding every string of WANT. */
static void bad_manifest(const char *text, const char *want1, const char *want2)
{
    char *p = path_in("bad.json");
    write_text(p, text);
    dora_manifest m;
    dora_err err = {{0}, 0};
    int rc = dora_manifest_load(&m, p, &err);
    CHECK_MSG(rc != 0, "accepted: %s", text);
    if (rc == 0) {
        dora_manifest_release(&m);
        return;
    }
    CHECK_MSG(strstr(err.msg, "bad.json") && strstr(err.msg, want1) &&
                  (!want2 || strstr(err.msg, want2)),
              "message '%s' lacks '%s' / '%s'", err.msg, want1, want2 ? want2 : "");
}

#define STUDY_HEAD "{\"studies\": [{\"name\": \"s\", \"base\": \"b\", \"output\": \"o.h5\", "
#define RUNS "\"runs\": [{\"name\": \"ft\", \"path\": \"p\"}]"

static void test_manifest_bad(void)
{
    bad_manifest("{\"studies\": [", "line 1", NULL);
    bad_manifest("[1]", "top level", NULL);
    bad_manifest("{\"studies\": []}", "studies", "non-empty");
    bad_manifest("{\"studie\": []}", "unknown key 'studie'", NULL);
    bad_manifest("{\"version\": 2, \"studies\": [1]}", "version", NULL);
    bad_manifest(STUDY_HEAD RUNS ", \"outptu\": 1}]}", "studies[0]", "unknown key 'outptu'");
    bad_manifest("{\"studies\": [{\"name\": \"s\", \"output\": \"o\", " RUNS "}]}", "'base' is required",
                 NULL);
    bad_manifest(STUDY_HEAD "\"runs\": []}]}", "'runs' must be a non-empty list", NULL);
    bad_manifest(STUDY_HEAD "\"runs\": [{\"name\": \"ft\", \"path\": \"p\", \"method\": \"qlora\"}]}]}",
                 "runs[0]", "'qlora' is not ft, lora, dora, ia3, adalora, vera, loha or lokr");
    bad_manifest(STUDY_HEAD "\"runs\": [{\"name\": \"ft\", \"path\": \"p\"}, {\"name\": \"ft\", "
                            "\"path\": \"q\"}]}]}",
                 "runs[1]", "two runs are named 'ft'");
    bad_manifest(STUDY_HEAD "\"runs\": [{\"name\": \"a/b\", \"path\": \"p\"}]}]}", "runs[0]", "'/'");
    bad_manifest(STUDY_HEAD "\"runs\": [{\"name\": \"ft\", \"path\": 3}]}]}", "'path' must be a string",
                 NULL);
    bad_manifest(STUDY_HEAD RUNS ", \"modules\": {\"include\": \"(q\"}}]}", "modules", "include '(q'");
    bad_manifest(STUDY_HEAD RUNS ", \"modules\": \"q_proj\"}]}", "modules", "must be an object");
    bad_manifest(STUDY_HEAD RUNS ", \"figures\": {\"formats\": [\"png\"]}}]}", "figures",
                 "'dir' is required");
    bad_manifest(STUDY_HEAD RUNS ", \"figures\": {\"dir\": \"f\", \"formats\": [\"gif\"]}}]}",
                 "formats[0]", "'gif'");
    bad_manifest(STUDY_HEAD RUNS ", \"expect\": [{\"run\": \"lora\", \"module_kind\": \"q_proj\", "
                                 "\"stat\": \"pearson_r\", \"op\": \"<\", \"value\": 0}]}]}",
                 "expect[0]", "run 'lora' is not a run");
    bad_manifest(STUDY_HEAD RUNS ", \"expect\": [{\"run\": \"ft\", \"module_kind\": \"q_proj\", "
                                 "\"stat\": \"r\", \"op\": \"<\", \"value\": 0}]}]}",
                 "expect[0]", "stat 'r'");
    bad_manifest(STUDY_HEAD RUNS ", \"expect\": [{\"run\": \"ft\", \"module_kind\": \"q_proj\", "
                                 "\"stat\": \"slope\", \"op\": \"=\", \"value\": 0}]}]}",
                 "expect[0]", "op '='");
    bad_manifest(STUDY_HEAD RUNS ", \"expect\": [{\"run\": \"ft\", \"module_kind\": \"q_proj\", "
                                 "\"stat\": \"slope\", \"op\": \"<\", \"value\": \"0\"}]}]}",
                 "expect[0]", "'value' must be a finite number");
    bad_manifest(STUDY_HEAD RUNS ", \"expect\": [{\"run\": \"ft\", \"module_kind\": \"q_proj\", "
                                 "\"stat\": \"slope\", \"op\": \"<\"}]}]}",
                 "expect[0]", "required");
    bad_manifest("{\"studies\": [{\"name\": \"s\", \"base\": \"b\", \"output\": \"o.h5\", " RUNS
                 "}, {\"name\": \"t\", \"base\": \"b\", \"output\": \"./o.h5\", " RUNS "}]}",
                 "write the same output", NULL);
    bad_manifest("{\"studies\": [{\"name\": \"s\", \"base\": \"b\", \"output\": \"o.h5\", " RUNS
                 "}, {\"name\": \"s\", \"base\": \"b\", \"output\": \"p.h5\", " RUNS "}]}",
                 "two studies are named 's'", NULL);
    bad_manifest("{\"studies\": [1], \"studies\": [2]}", "duplicate", NULL);
    dora_manifest m;
    dora_err err = {{0}, 0};
    CHECK(dora_manifest_load(&m, path_in("nope.json"), &err) != 0 && strstr(err.msg, "nope.json"));
}

/* ---- wire format ----------------------------------------------------------- */

static void test_pack(void)
{
    dora_result r, back;
    make_result(&r, "lora", "lora", 3, 100, three, 3, 1.0);
    r.nfailures = 1;
    r.failures = calloc(1, sizeof *r.failures);
    r.failures[0] = strdup("step 9 left out");
    unsigned char *buf = NULL;
    size_t len = 0;
    dora_err err = {{0}, 0};
    CHECK(dora_result_pack(&r, &buf, &len, &err) == 0);
    CHECK_MSG(dora_result_unpack(&back, buf, len, "test", &err) == 0, "%s", err.msg);
    CHECK(same_result(&r, &back));
    dora_result_release(&back);
    /* every truncation is refused, never read past */
    int refused = 1;
    for (size_t n = 0; n < len; n++) {
        unsigned char *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        if (dora_result_unpack(&back, cut, n, "cut", &err) == 0) {
            refused = 0;
            dora_result_release(&back);
        }
        free(cut);
    }
    CHECK(refused);
    /* a trailing byte, a huge count, a NaN */
    unsigned char *more = malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = 0;
    CHECK(dora_result_unpack(&back, more, len + 1, "more", &err) != 0 &&
          strstr(err.msg, "trailing"));
    free(more);
    /* a version 1 record (the journals of earlier versions): no sections, no
     * END; it reads back without the passive and active arrays */
    {
        dora_result old = r;
        old.delta_m_passive = old.delta_m_active = NULL;
        unsigned char *b1 = NULL;
        size_t n1 = 0;
        CHECK(dora_result_pack(&old, &b1, &n1, &err) == 0 && n1 > 8);
        const unsigned char v1[4] = {'D', 'R', 'U', '1'};
        memcpy(b1, v1, 4);
        CHECK_MSG(dora_result_unpack(&back, b1, n1 - 4, "v1", &err) == 0, "%s", err.msg);
        CHECK(!back.delta_m_passive && !back.delta_m_active && back.nsteps == r.nsteps);
        dora_result_release(&back);
        /* the same bytes as version 2 lack their END */
        const unsigned char v2[4] = {'D', 'R', 'U', '2'};
        memcpy(b1, v2, 4);
        CHECK(dora_result_unpack(&back, b1, n1 - 4, "v2", &err) != 0);
        free(b1);
    }
    /* name_alignment, last and optional: round-trips when set */
    r.name_alignment = strdup("prefix 'module.' removed");
    free(buf);
    CHECK(dora_result_pack(&r, &buf, &len, &err) == 0);
    CHECK_MSG(dora_result_unpack(&back, buf, len, "aligned", &err) == 0, "%s", err.msg);
    CHECK(same_result(&r, &back) && back.name_alignment &&
          strcmp(back.name_alignment, r.name_alignment) == 0);
    dora_result_release(&back);
    dora_result_release(&r);
    free(buf);

    make_result(&r, "ft", "ft", 1, 5, three, 1, 2.0);
    r.delta_m[0] = NAN;
    CHECK(dora_result_pack(&r, &buf, &len, &err) == 0);
    CHECK(dora_result_unpack(&back, buf, len, "nan", &err) != 0 && strstr(err.msg, "non-finite"));
    free(buf);
    dora_result_release(&r);
    /* bytes flipped one at a time: refused or read, never a crash (ASan watches) */
    make_result(&r, "ft", "ft", 2, 5, three, 2, 2.0);
    CHECK(dora_result_pack(&r, &buf, &len, &err) == 0);
    for (size_t i = 0; i < len; i++) {
        unsigned char *x = malloc(len);
        memcpy(x, buf, len);
        x[i] ^= 0xA5;
        if (dora_result_unpack(&back, x, len, "flip", &err) == 0)
            dora_result_release(&back);
        free(x);
    }
    free(buf);
    dora_result_release(&r);
}

/* Per-head values on a result of make_result: modules 0 and 2 (8 and 10 rows)
 * in heads of 2 rows, values with full mantissas from SEED. */
static void add_heads(dora_result *r, double seed)
{
    const size_t S = r->nsteps, NH = 4 + 5;
    r->nhead_mods = 2;
    r->head_dim = 2;
    r->head_module = calloc(2, sizeof *r->head_module);
    r->head_count = calloc(2, sizeof *r->head_count);
    r->head_offset = calloc(3, sizeof *r->head_offset);
    r->head_dm = calloc(S * NH + 1, sizeof *r->head_dm);
    r->head_dd = calloc(S * NH + 1, sizeof *r->head_dd);
    if (!r->head_module || !r->head_count || !r->head_offset || !r->head_dm || !r->head_dd)
        abort();
    r->head_module[1] = 2;
    r->head_count[0] = 4;
    r->head_count[1] = 5;
    r->head_offset[1] = 4;
    r->head_offset[2] = 9;
    for (size_t i = 0; i < S * NH; i++) {
        r->head_dm[i] = seed / 7.0 + (double)i / 3.0 + (double)r->steps[i / NH] / 13.0;
        r->head_dd[i] = 1e-9 * (seed + (double)i) / 11.0 + (double)r->steps[i / NH] * 1e-8;
    }
}

static int same_heads(const dora_result *a, const dora_result *b)
{
    const size_t H = a->nhead_mods;
    if (H != b->nhead_mods || a->head_dim != b->head_dim || a->nsteps != b->nsteps)
        return 0;
    for (size_t h = 0; h < H; h++)
        if (a->head_module[h] != b->head_module[h] || a->head_count[h] != b->head_count[h] ||
            a->head_offset[h + 1] != b->head_offset[h + 1])
            return 0;
    const size_t n = H ? a->nsteps * (size_t)a->head_offset[H] * sizeof(double) : 0;
    return !H || (memcmp(a->head_dm, b->head_dm, n) == 0 && memcmp(a->head_dd, b->head_dd, n) == 0);
}

/* The record of R with the 8 bytes at AT into its HEAD section set to V (a
 * count, or the bits of a double): refused with a message naming it and WANT. */
static void bad_heads(const dora_result *r, size_t at, uint64_t v, const char *want)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    dora_err err = {{0}, 0};
    CHECK(dora_result_pack(r, &buf, &len, &err) == 0);
    size_t p = 0;
    while (p + 4 <= len && memcmp(buf + p, "HEAD", 4) != 0)
        p++;
    CHECK(p + 4 <= len);
    if (p + at + 8 <= len) {
        for (int i = 0; i < 8; i++)
            buf[p + at + (size_t)i] = (unsigned char)(v >> (8 * i));
        dora_result back;
        int rc = dora_result_unpack(&back, buf, len, "hostile", &err);
        CHECK_MSG(rc != 0 && strstr(err.msg, "hostile") && strstr(err.msg, want),
                  "at %zu: rc %d, '%s', wanted '%s'", at, rc, rc ? err.msg : "", want);
        if (rc == 0)
            dora_result_release(&back);
    }
    free(buf);
}

static void test_pack_heads(void)
{
    dora_result r, back;
    dora_err err = {{0}, 0};
    make_result(&r, "dora", "dora", 3, 100, three, 3, 1.0);
    add_heads(&r, 2.0);
    unsigned char *buf = NULL;
    size_t len = 0;
    CHECK(dora_result_pack(&r, &buf, &len, &err) == 0);
    CHECK_MSG(dora_result_unpack(&back, buf, len, "heads", &err) == 0, "%s", err.msg);
    CHECK(same_result(&r, &back) && same_heads(&r, &back));
    dora_result_release(&back);
    /* every truncation refused, every flipped byte refused or read (ASan watches) */
    int refused = 1;
    for (size_t n = 0; n < len; n++) {
        unsigned char *x = malloc(len);
        memcpy(x, buf, len);
        if (dora_result_unpack(&back, x, n, "cut", &err) == 0) {
            refused = 0;
            dora_result_release(&back);
        }
        x[n] ^= 0xA5;
        if (dora_result_unpack(&back, x, len, "flip", &err) == 0)
            dora_result_release(&back);
        free(x);
    }
    CHECK(refused);
    /* the section twice */
    {
        size_t p = 0;
        while (memcmp(buf + p, "HEAD", 4) != 0)
            p++;
        const size_t sec = len - 4 - p; /* HEAD .. before END */
        unsigned char *x = malloc(len + sec);
        memcpy(x, buf, len - 4);
        memcpy(x + len - 4, buf + p, sec);
        memcpy(x + len - 4 + sec, buf + len - 4, 4);
        CHECK(dora_result_unpack(&back, x, len + sec, "twice", &err) != 0 &&
              strstr(err.msg, "repeated"));
        free(x);
    }
    free(buf);
    /* hostile counts and values: H, head_dim, a module, a count, a value */
    bad_heads(&r, 4, (uint64_t)1 << 40, "malformed per-head section");
    bad_heads(&r, 4, 0, "malformed per-head section");
    bad_heads(&r, 4, 4, "malformed per-head section");
    bad_heads(&r, 12, 0, "malformed per-head section");
    bad_heads(&r, 12, 3, "does not match the modules");
    bad_heads(&r, 20, 7, "does not match the modules");
    bad_heads(&r, 36, 0, "does not match the modules"); /* not after module 0 */
    bad_heads(&r, 28, 5, "does not match the modules");
    bad_heads(&r, 28, (uint64_t)1 << 62, "does not match the modules");
    bad_heads(&r, 52, 0x7ff8000000000000u, "non-finite per-head value");
    bad_heads(&r, 52 + 8 * 27 + 8, 0x7ff0000000000000u, "non-finite per-head value");
    /* a record without the section (no heads, or an earlier version's) has none */
    dora_result plain;
    make_result(&plain, "dora", "dora", 3, 100, three, 3, 1.0);
    CHECK(dora_result_pack(&plain, &buf, &len, &err) == 0);
    CHECK(dora_result_unpack(&back, buf, len, "plain", &err) == 0 && back.nhead_mods == 0 &&
          !back.head_dm);
    dora_result_release(&back);
    free(buf);

    /* joined: each step's heads from its part; a part without heads: none, noted;
     * a module grouped differently: refused */
    dora_result a, out;
    make_result(&a, "dora", "dora", 1, 400, three, 3, 1.0);
    add_heads(&a, 5.0);
    const dora_result *parts[2] = {&r, &a};
    CHECK_MSG(dora_result_join(&out, parts, 2, &err) == 0, "%s", err.msg);
    CHECK(out.nsteps == 4 && out.nhead_mods == 2 && out.head_dim == 2 &&
          out.head_offset[2] == 9 && out.head_module[1] == 2 &&
          memcmp(out.head_dm, r.head_dm, 27 * sizeof(double)) == 0 &&
          memcmp(out.head_dd + 27, a.head_dd, 9 * sizeof(double)) == 0);
    dora_result_release(&out);
    parts[1] = &plain;
    dora_result_release(&plain);
    make_result(&plain, "dora", "dora", 1, 400, three, 3, 1.0);
    int noted = 0;
    CHECK(dora_result_join(&out, parts, 2, &err) == 0 && out.nhead_mods == 0 && !out.head_dm);
    for (size_t i = 0; i < out.nnotes; i++)
        noted |= strstr(out.notes[i], "no per-head values") != NULL;
    CHECK(noted);
    dora_result_release(&out);
    a.head_count[1] = 4; /* as if head_dim differed */
    a.head_dim = 3;
    parts[1] = &a;
    CHECK(dora_result_join(&out, parts, 2, &err) != 0 && strstr(err.msg, "grouped by attention head"));
    /* the same step twice with other per-head values: refused */
    dora_result c;
    make_result(&c, "dora", "dora", 1, 200, three, 3, 1.0);
    add_heads(&c, 2.0);
    memcpy(c.delta_m, r.delta_m + 3, 3 * sizeof(double));
    memcpy(c.delta_d, r.delta_d + 3, 3 * sizeof(double));
    memcpy(c.head_dm, r.head_dm + 9, 9 * sizeof(double));
    memcpy(c.head_dd, r.head_dd + 9, 9 * sizeof(double));
    parts[1] = &c;
    CHECK_MSG(dora_result_join(&out, parts, 2, &err) == 0 && out.nsteps == 3, "%s", err.msg);
    dora_result_release(&out);
    c.head_dd[8] = nextafter(c.head_dd[8], 1.0);
    CHECK(dora_result_join(&out, parts, 2, &err) != 0 && strstr(err.msg, "held twice"));
    dora_result_release(&c);
    dora_result_release(&a);
    dora_result_release(&plain);
    dora_result_release(&r);
}

/* ---- journal ---------------------------------------------------------------- */

static void test_journal(void)
{
    char *jp = path_in("j.journal");
    dora_result u[3];
    for (int i = 0; i < 3; i++) {
        make_result(&u[i], "ft", "ft", 1, 100 * (i + 1), three, 3, (double)i);
    }
    dora_journal *j = NULL;
    dora_err err = {{0}, 0};
    CHECK(dora_journal_create(&j, jp, "{\"h\":1}", u, 2, &err) == 0);
    CHECK(j && dora_journal_append(j, &u[2], &err) == 0);
    dora_journal_close(j);
    char *header = NULL;
    dora_result *units = NULL;
    size_t n = 0;
    uint64_t tail = 99;
    CHECK(dora_journal_read(jp, &header, &units, &n, &tail, &err) == 1);
    CHECK(header && strcmp(header, "{\"h\":1}") == 0 && n == 3 && tail == 0);
    for (size_t i = 0; i < n && i < 3; i++)
        CHECK(same_result(&units[i], &u[i]));
    free(header);
    dora_journal_results_free(units, n);

    /* a record cut short (kill -9 during a write): ignored, the rest kept */
    struct stat sb;
    stat(jp, &sb);
    FILE *f = fopen(jp, "ab");
    unsigned char head[24] = {2, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0};
    fwrite(head, 1, sizeof head, f);
    fwrite("partial", 1, 7, f);
    fclose(f);
    CHECK(dora_journal_read(jp, &header, &units, &n, &tail, &err) == 1);
    CHECK_MSG(n == 3 && tail == 31, "n %zu tail %llu", n, (unsigned long long)tail);
    free(header);
    dora_journal_results_free(units, n);

    /* a damaged middle record ends the journal there */
    f = fopen(jp, "r+b");
    fseek(f, (long)sb.st_size - 20, SEEK_SET);
    fputc('X', f);
    fclose(f);
    CHECK(dora_journal_read(jp, &header, &units, &n, &tail, &err) == 1 && n == 2 && tail > 31);
    free(header);
    dora_journal_results_free(units, n);

    /* not there: 0; not a journal, or a damaged header: -1 naming the file */
    CHECK(dora_journal_read(path_in("none.journal"), &header, &units, &n, NULL, &err) == 0);
    char *np = path_in("not.journal");
    write_text(np, "hello, world");
    CHECK(dora_journal_read(np, &header, &units, &n, NULL, &err) == -1 &&
          strstr(err.msg, "not.journal") && strstr(err.msg, "not a dora-analyze journal"));
    f = fopen(jp, "r+b");
    fseek(f, 30, SEEK_SET);
    fputc('Y', f);
    fclose(f);
    CHECK(dora_journal_read(jp, &header, &units, &n, NULL, &err) == -1 &&
          strstr(err.msg, "header is damaged"));
    for (int i = 0; i < 3; i++)
        dora_result_release(&u[i]);
}

/* ---- join -------------------------------------------------------------------- */

static void test_join(void)
{
    dora_result a, b, c, out;
    dora_err err = {{0}, 0};
    make_result(&a, "ft", "ft", 1, 300, three, 3, 1.0);
    make_result(&b, "ft", "ft", 2, 100, three, 3, 2.0);
    const dora_result *parts[3] = {&a, &b, NULL};
    CHECK_MSG(dora_result_join(&out, parts, 2, &err) == 0, "%s", err.msg);
    CHECK(out.nsteps == 3 && out.steps[0] == 100 && out.steps[1] == 200 && out.steps[2] == 300);
    CHECK(out.nmodules == 3 && memcmp(&out.delta_m[2 * 3], &a.delta_m[0], 3 * sizeof(double)) == 0 &&
          memcmp(&out.delta_d[0], &b.delta_d[0], 6 * sizeof(double)) == 0);
    CHECK(strcmp(out.step_stamps[2], a.step_stamps[0]) == 0);
    dora_result_release(&out);

    /* the same step twice, same numbers: kept once; different numbers: refused */
    make_result(&c, "ft", "ft", 1, 300, three, 3, 1.0);
    parts[2] = &c;
    CHECK(dora_result_join(&out, parts, 3, &err) == 0 && out.nsteps == 3);
    dora_result_release(&out);
    c.delta_d[1] = nextafter(c.delta_d[1], 1.0);
    CHECK(dora_result_join(&out, parts, 3, &err) != 0 && strstr(err.msg, "step 300 is held twice"));
    dora_result_release(&c);

    /* a tensor one checkpoint lacks is left out (FT), with a note */
    make_result(&c, "ft", "ft", 1, 400, three, 2, 3.0);
    parts[2] = &c;
    CHECK(dora_result_join(&out, parts, 3, &err) == 0 && out.nmodules == 2 && out.nsteps == 4);
    int noted = 0;
    for (size_t i = 0; i < out.nnotes; i++)
        noted |= strstr(out.notes[i], "not in every checkpoint") != NULL;
    CHECK(noted);
    dora_result_release(&out);
    dora_result_release(&c);

    /* adapters must adapt the same modules; full and adapter cannot mix; names must agree */
    dora_result la, lb;
    make_result(&la, "lora", "lora", 1, 100, three, 3, 1.0);
    make_result(&lb, "lora", "dora", 1, 200, three, 2, 1.0);
    const dora_result *lp[2] = {&la, &lb};
    CHECK(dora_result_join(&out, lp, 2, &err) != 0 && strstr(err.msg, "adapt the same modules"));
    dora_result_release(&lb);
    make_result(&lb, "lora", "dora", 1, 200, three, 3, 1.0);
    CHECK(dora_result_join(&out, lp, 2, &err) == 0 && strcmp(out.method, "dora") == 0);
    dora_result_release(&out);
    lp[1] = &a;
    CHECK(dora_result_join(&out, lp, 2, &err) != 0 && strstr(err.msg, "cannot join"));
    free(a.name);
    a.name = strdup("lora");
    CHECK(dora_result_join(&out, lp, 2, &err) != 0 && strstr(err.msg, "full weights or adapters"));
    dora_result_release(&la);
    dora_result_release(&lb);
    dora_result_release(&a);
    dora_result_release(&b);
}

/* ---- expectations, shard names, reports ----------------------------------------- */

static void test_expect(void)
{
    dora_regression g[2] = {
        {.run = "ft", .kind = "q_proj", .method = "ft", .n = 24, .layers = 6, .defined = 1,
         .slope = -2, .intercept = 0.5, .r = -0.25, .within_defined = 0, .within_r = 0},
        {.run = "ft", .kind = "v_proj", .method = "ft", .n = 1, .layers = 1, .defined = 0},
    };
    dora_expect e = {.name = "x", .run = "ft", .kind = "q_proj", .stat = DORA_STAT_PEARSON_R,
                     .op = DORA_OP_LT, .value = 0};
    dora_expect_result r;
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_HELD && r.defined && r.actual == -0.25);
    e.op = DORA_OP_GE;
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_FAILED && strstr(r.message, "does not hold"));
    e.op = DORA_OP_LE;
    e.value = -0.25;
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_HELD);
    e.stat = DORA_STAT_SLOPE;
    e.op = DORA_OP_GT;
    e.value = -3;
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_HELD && r.actual == -2);
    e.stat = DORA_STAT_INTERCEPT;
    e.op = DORA_OP_LT;
    e.value = 0.5;
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_FAILED);
    e.stat = DORA_STAT_WITHIN_STEP_R;
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_FAILED && !r.defined && strstr(r.message, "undefined"));
    e.stat = DORA_STAT_PEARSON_R;
    e.kind = "v_proj";
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_FAILED && strstr(r.message, "undefined"));
    e.kind = "k_proj";
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_FAILED && strstr(r.message, "no module of kind 'k_proj'"));
    e.run = "lora";
    dora_expect_eval(&e, g, 2, &r);
    CHECK(r.outcome == DORA_OUTCOME_FAILED && strstr(r.message, "no run 'lora'"));
}

static void test_names(void)
{
    char *s = dora_shard_path("out/a.h5", 2, 5);
    CHECK(s && strcmp(s, "out/a.shard-2-of-5.h5") == 0);
    free(s);
    s = dora_shard_path("out/a.hdf5", 1, 1);
    CHECK(s && strcmp(s, "out/a.hdf5.shard-1-of-1") == 0);
    free(s);
    s = dora_journal_path("x.h5");
    CHECK(s && strcmp(s, "x.h5.journal") == 0);
    free(s);
}

static int file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_reports(void)
{
    dora_expect ex[1] = {{.name = "ft q<0 & \"quoted\"", .run = "ft", .kind = "q_proj"}};
    dora_expect_result er[1] = {{.outcome = DORA_OUTCOME_FAILED, .defined = 1, .actual = 0.5}};
    snprintf(er[0].message, sizeof er[0].message, "r is 0.5 < bad \xff byte");
    dora_unit_failure uf[1] = {{.run = "ft", .step = 200, .path = "p", .message = "gone <x>"}};
    dora_study_report r = {.name = "s&1", .output = "o.h5", .status = DORA_STUDY_INCOMPLETE,
                           .units_total = 4, .units_run = 3, .units_failed = 1, .nfailures = 1,
                           .failures = uf, .figures = DORA_FIG_SKIPPED, .nexpect = 1,
                           .expect = ex, .results = er};
    dora_err err = {{0}, 0};
    char *jp = path_in("r.json"), *xp = path_in("r.xml");
    CHECK(dora_report_json(jp, "m.json", NULL, 0, &r, 1, 1.5, &err) == 0);
    CHECK(file_has(jp, "\"ok\": false") && file_has(jp, "\"incomplete\"") &&
          file_has(jp, "\"actual\": 0.5") && file_has(jp, "ft q<0 & \\\"quoted\\\""));
    CHECK(dora_report_junit(xp, "m.json", &r, 1, 1.5, &err) == 0);
    CHECK(file_has(xp, "name=\"s&amp;1\"") && file_has(xp, "name=\"unit ft@200\"") &&
          file_has(xp, "message=\"gone &lt;x&gt;\"") && file_has(xp, "tests=\"4\"") &&
          file_has(xp, "failures=\"3\"") && file_has(xp, "bad ? byte") &&
          file_has(xp, "<skipped message=\"\"/>"));
    /* an unwritable place is an error naming it */
    CHECK(dora_report_json("/nonexistent/r.json", "m", NULL, 1, &r, 1, 0, &err) != 0 &&
          strstr(err.msg, "/nonexistent/r.json"));
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/dora-test-batch-%ld", (long)getpid());
    mkdir(dir, 0777);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    mkdir(sub, 0777);
    test_manifest_good();
    test_manifest_bad();
    test_pack();
    test_pack_heads();
    test_journal();
    test_join();
    test_expect();
    test_names();
    test_reports();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_summary("test_batch");
}
