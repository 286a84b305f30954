/* Files that change underneath: a checkpoint truncated or rewritten while the
 * analysis reads it loses that step only (SIGBUS caught by the guard, or the
 * change noticed afterwards); a changed base fails the run; a checkpoint still
 * being written is left out. Deterministic: the files are changed from the
 * after_open hook, once they are mapped and before they are read, or between
 * dora_model_open and the call that reads them. Also: guarded reads outside
 * the pass (dora_guard_run/copy/differ, nested in a region), the byte
 * comparison of a final model with a checkpoint (dora_model_cmp_bytes), and
 * an adapter truncated before its Gram matrices are formed. An alarm turns a
 * hang (a fault redone forever) into a failure. */
#define _POSIX_C_SOURCE 200809L
#include "dora/analyze.h"
#include "dora/guard.h"
#include "dora/model.h"
#include "dora/run.h"
#include "st_write.h"
#include "unit.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ROWS = 512, COLS = 1024 }; /* 2 MiB per F32 tensor: many pages */
static char root[] = "/tmp/dora-unit-guard-XXXXXX";
static float *vals;

static void model(const char *path, float scale)
{
    for (int i = 0; i < ROWS * COLS; i++)
        vals[i] = (float)((i % 97) - 48) * 0.01f * (1.0f + scale * (float)(i % 7));
    st_write_f32(path, "w", ROWS, COLS, vals);
}

static void path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", root, rel);
}

typedef struct change {
    const char *file; /* relative to root */
    int rewrite;      /* 0: truncate to half; 1: same size, new bytes; 2: truncate to 20000 */
} change;

static void do_change(void *ctx)
{
    const change *c = ctx;
    char p[512];
    path(p, sizeof p, c->file);
    if (c->rewrite != 1) {
        if (truncate(p, c->rewrite == 2 ? 20000 : (off_t)ROWS * COLS * 2) != 0)
            perror("truncate");
        return;
    }
    /* rewrite in place (same inode), a different mtime */
    FILE *f = fopen(p, "r+b");
    if (f) {
        fseek(f, 200, SEEK_SET);
        fputc(0x41, f);
        fclose(f);
    }
    struct timespec ts[2] = {{0, UTIME_NOW}, {12345, 0}};
    utimensat(AT_FDCWD, p, ts, 0);
}

static int analyse(const char *run_rel, const change *c, dora_result *res, dora_err *err)
{
    char bp[512], rp[512];
    path(bp, sizeof bp, "base.safetensors");
    path(rp, sizeof rp, run_rel);
    dora_model *base = NULL;
    dora_run run;
    if (dora_model_open(&base, bp, err) != 0)
        return -1;
    if (dora_run_discover(&run, rp, err) != 0) {
        dora_model_close(base);
        return -1;
    }
    dora_analysis_opts opts = {
        .threads = 2, .after_open = c ? do_change : NULL, .after_open_ctx = (void *)c};
    int rc = dora_analyze_run(res, "r", base, bp, &run, &opts, err);
    dora_run_release(&run);
    dora_model_close(base);
    return rc;
}

static void make_run(const char *name)
{
    char p[1024], cmd[400];
    for (int s = 1; s <= 3; s++) {
        snprintf(cmd, sizeof cmd, "mkdir -p %s/%s/checkpoint-%d", root, name, s * 10);
        if (system(cmd) != 0)
            return;
        snprintf(cmd, sizeof cmd, "%s/checkpoint-%d/model.safetensors", name, s * 10);
        path(p, sizeof p, cmd);
        model(p, 0.01f * (float)s);
    }
}

/* The guard's own primitives on a mapping of a file truncated underneath. */
static void test_primitives(void)
{
    char p[512];
    path(p, sizeof p, "prim.bin");
    model(p, 0.5f);
    int fd = open(p, O_RDONLY);
    struct stat sb;
    CHECK(fd >= 0 && fstat(fd, &sb) == 0);
    size_t len = (size_t)sb.st_size;
    unsigned char *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    CHECK(map != MAP_FAILED);
    unsigned char *copy = malloc(len);
    const void *fault = NULL;
    CHECK(dora_guard_copy(copy, map, len, &fault) == 0 && fault == NULL);
    CHECK(dora_guard_differ(copy, map, len, &fault) == 0);
    CHECK(truncate(p, 4096) == 0);
    CHECK(dora_guard_copy(copy, map, len, &fault) == 1);
    CHECK(fault != NULL && (const unsigned char *)fault >= map + 4096 &&
          (const unsigned char *)fault < map + len);
    CHECK(dora_guard_differ(copy, map, len, &fault) == -1 && fault != NULL);
    CHECK(dora_guard_copy(copy, map, 4096, &fault) == 0); /* what is left reads fine */
    /* nested in a region: the inner fault is the inner call's, and the outer
     * region is guarded again afterwards */
    sigjmp_buf env;
    volatile int outer_caught = 0, inner = -2;
    if (sigsetjmp(env, 1) == 0) {
        dora_guard_enter(&env);
        inner = dora_guard_copy(copy, map + len - 8, 8, NULL);
        volatile unsigned char x = map[len - 1]; /* faults: caught by the outer region */
        (void)x;
        dora_guard_leave();
    } else {
        dora_guard_leave();
        outer_caught = 1;
    }
    CHECK(inner == 1 && outer_caught == 1);
    munmap(map, len);
    free(copy);
}

/* A final model compared byte for byte with a checkpoint that shrinks. */
static void test_cmp_bytes(void)
{
    char a[512], b[512];
    path(a, sizeof a, "cmp_a.safetensors");
    path(b, sizeof b, "cmp_b.safetensors");
    model(a, 0.25f);
    model(b, 0.25f);
    dora_model *ma = NULL, *mb = NULL;
    dora_err err;
    CHECK_MSG(dora_model_open(&ma, a, &err) == 0 && dora_model_open(&mb, b, &err) == 0, "%s",
              err.msg);
    if (!ma || !mb)
        return;
    CHECK(dora_model_cmp_bytes(ma, mb, &err) == 1);
    CHECK(truncate(b, 8192) == 0); /* the sizes recorded at open still agree */
    err.msg[0] = '\0';
    CHECK(dora_model_cmp_bytes(ma, mb, &err) == -1);
    CHECK_MSG(strstr(err.msg, "cmp_b.safetensors") && strstr(err.msg, "changed"), "%s", err.msg);
    dora_model_close(ma);
    dora_model_close(mb);
}

enum { LR = 8 };

/* A PEFT LoRA checkpoint of module q (base q.weight [ROWS, COLS]): lora_B
 * [ROWS, LR] first in the data, then lora_A [LR, COLS]. */
static void adapter(const char *dir, float scale)
{
    char p[1024], header[1024];
    size_t nb = (size_t)ROWS * LR * 4, na = (size_t)LR * COLS * 4;
    float *v = malloc(nb + na);
    for (size_t i = 0; i < (nb + na) / 4; i++)
        v[i] = (float)((int)(i % 13) - 6) * 0.01f * scale;
    snprintf(header, sizeof header,
             "{\"base_model.model.q.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[%d,%d],"
             "\"data_offsets\":[0,%zu]},\"base_model.model.q.lora_A.weight\":{\"dtype\":\"F32\","
             "\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}}",
             ROWS, LR, nb, LR, COLS, nb, nb + na);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    st_write_raw(p, header, v, nb + na);
    free(v);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"target_modules\":[\"q\"]}", f);
    fclose(f);
}

/* An adapter checkpoint truncated before its Gram matrix is formed: the step
 * is dropped and named, the others analysed. */
static void test_gram_truncated(void)
{
    char bp[512], cmd[700];
    path(bp, sizeof bp, "lbase.safetensors");
    for (int i = 0; i < ROWS * COLS; i++)
        vals[i] = (float)((i % 89) - 44) * 0.01f;
    st_write_f32(bp, "q.weight", ROWS, COLS, vals);
    for (int s = 1; s <= 3; s++) {
        snprintf(cmd, sizeof cmd, "mkdir -p %s/lrun/checkpoint-%d", root, s * 10);
        if (system(cmd) != 0)
            return;
        snprintf(cmd, sizeof cmd, "%s/lrun/checkpoint-%d", root, s * 10);
        adapter(cmd, (float)s);
    }
    char rp[512];
    path(rp, sizeof rp, "lrun");
    dora_model *base = NULL;
    dora_run run;
    dora_err err;
    dora_result res;
    if (dora_model_open(&base, bp, &err) != 0 || dora_run_discover(&run, rp, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        dora_model_close(base);
        return;
    }
    /* 20000 bytes keep the header and lora_B, cut lora_A */
    change c = {"lrun/checkpoint-20/adapter_model.safetensors", 2};
    dora_analysis_opts opts = {.threads = 2, .after_open = do_change, .after_open_ctx = &c};
    int rc = dora_analyze_run(&res, "l", base, bp, &run, &opts, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(res.nsteps == 2 && res.steps[0] == 10 && res.steps[1] == 30);
        CHECK(res.nfailures == 1 &&
              strstr(res.failures[0], "checkpoint-20/adapter_model.safetensors") &&
              strstr(res.failures[0], "changed while it was read"));
        dora_result_release(&res);
    }
    dora_run_release(&run);
    dora_model_close(base);
}

int main(void)
{
    alarm(120);
    if (!mkdtemp(root))
        return 2;
    vals = malloc(sizeof *vals * ROWS * COLS);
    char p[512];
    path(p, sizeof p, "base.safetensors");
    model(p, 0.0f);

    /* the clean reference */
    make_run("clean");
    dora_result ref, res;
    dora_err err;
    CHECK_MSG(analyse("clean", NULL, &ref, &err) == 0, "%s", err.msg);
    CHECK(ref.nsteps == 3 && ref.nfailures == 0);

    /* step 20 truncated while mapped: SIGBUS caught, the step dropped */
    make_run("trunc");
    change c1 = {"trunc/checkpoint-20/model.safetensors", 0};
    int rc = analyse("trunc", &c1, &res, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(res.nsteps == 2 && res.steps[0] == 10 && res.steps[1] == 30);
        CHECK(res.nfailures == 1 && strstr(res.failures[0], "checkpoint-20/model.safetensors") &&
              strstr(res.failures[0], "changed while it was read"));
        CHECK(res.delta_m[0] == ref.delta_m[0] && res.delta_d[0] == ref.delta_d[0]);
        CHECK(res.delta_m[1] == ref.delta_m[2] && res.delta_d[1] == ref.delta_d[2]);
        dora_result_release(&res);
    }

    /* step 30 rewritten in place (no fault): noticed afterwards, dropped */
    make_run("rewrite");
    change c2 = {"rewrite/checkpoint-30/model.safetensors", 1};
    rc = analyse("rewrite", &c2, &res, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(res.nsteps == 2 && res.steps[1] == 20 && res.nfailures == 1);
        CHECK(res.delta_m[1] == ref.delta_m[1]);
        dora_result_release(&res);
    }

    /* the base truncated: no result at all, the base named */
    make_run("basecut");
    change c3 = {"base.safetensors", 0};
    rc = analyse("basecut", &c3, &res, &err);
    CHECK(rc == -1 && strstr(err.msg, "base.safetensors") && strstr(err.msg, "changed"));
    path(p, sizeof p, "base.safetensors");
    model(p, 0.0f);

    /* a checkpoint still being written: no model yet, then an index without its shard */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/clean/checkpoint-40 %s/clean/checkpoint-50", root, root);
    if (system(cmd) != 0)
        return 2;
    path(p, sizeof p, "clean/checkpoint-50/model.safetensors.index.json");
    FILE *f = fopen(p, "w");
    fputs("{\"weight_map\": {\"w\": \"model-00001-of-00001.safetensors\"}}", f);
    fclose(f);
    rc = analyse("clean", NULL, &res, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(res.nsteps == 3 && res.nfailures == 2);
        CHECK(res.nfailures == 2 && strstr(res.failures[0], "step 40") &&
              strstr(res.failures[1], "step 50") && strstr(res.failures[1], "missing"));
        CHECK(res.delta_d[2] == ref.delta_d[2]);
        dora_result_release(&res);
    }
    /* a corrupt (not missing) checkpoint is still an error for the run */
    path(p, sizeof p, "clean/checkpoint-40/model.safetensors");
    f = fopen(p, "w");
    fputs("garbage!garbage!", f);
    fclose(f);
    rc = analyse("clean", NULL, &res, &err);
    CHECK(rc == -1 && strstr(err.msg, "checkpoint-40/model.safetensors"));

    test_primitives();
    test_cmp_bytes();
    test_gram_truncated();

    dora_result_release(&ref);
    free(vals);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return unit_summary("test_guard");
}
