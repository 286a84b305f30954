/* Unit tests for checkpoint discovery, shard loading, and the helpers they use. */
#define _POSIX_C_SOURCE 200809L
#include "dora/analyze.h"
#include "dora/model.h"
#include "dora/run.h"
#include "st_write.h"
#include "unit.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char root[] = "/tmp/dora-unit-run-XXXXXX";

static void path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", root, rel);
}

static void mkdirs(const char *rel)
{
    char p[512], cmd[600];
    path(p, sizeof p, rel);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    if (system(cmd) != 0)
        fprintf(stderr, "mkdir failed: %s\n", p);
}

static void model(const char *rel, float scale)
{
    char p[512];
    float v[4] = {scale, 2 * scale, 3 * scale, 4 * scale};
    path(p, sizeof p, rel);
    st_write_f32(p, "w", 2, 2, v);
}

static void text(const char *rel, const char *body)
{
    char p[512];
    path(p, sizeof p, rel);
    FILE *f = fopen(p, "w");
    fputs(body, f);
    fclose(f);
}

static void test_trainer_layout(void)
{
    /* Steps sort numerically, not as text: 2 < 10 < 100. */
    mkdirs("run/checkpoint-10");
    mkdirs("run/checkpoint-2");
    mkdirs("run/checkpoint-100");
    mkdirs("run/not-a-checkpoint-5");
    model("run/checkpoint-10/model.safetensors", 1.1f);
    model("run/checkpoint-2/model.safetensors", 1.0f);
    model("run/checkpoint-100/model.safetensors", 1.2f);
    text("run/checkpoint-10/trainer_state.json", "{\"global_step\": 10, \"max_steps\": 150}");
    text("run/checkpoint-100/trainer_state.json", "{\"global_step\": 100, \"max_steps\": 150}");
    char p[512];
    dora_run run;
    dora_err err;
    path(p, sizeof p, "run");
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.layout == DORA_RUN_TRAINER && run.nsteps == 3);
    if (run.nsteps == 3)
        CHECK(run.steps[0].step == 2 && run.steps[1].step == 10 && run.steps[2].step == 100);
    CHECK(strcmp(run.method, "ft") == 0);
    dora_run_release(&run);

    /* A final model identical to the last checkpoint is not counted twice. */
    model("run/model.safetensors", 1.2f);
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.nsteps == 3 && run.nnotes == 1);
    if (run.nnotes)
        CHECK(strstr(run.notes[0], "byte-identical") != NULL);
    dora_run_release(&run);

    /* A different final model: step from max_steps of the last checkpoint... */
    model("run/model.safetensors", 1.3f);
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.nsteps == 4 && run.steps[3].step == 150);
    dora_run_release(&run);
    /* ...or from the run folder's own trainer_state.json. */
    text("run/trainer_state.json", "{\"global_step\": 140}");
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.nsteps == 4 && run.steps[3].step == 140);
    dora_run_release(&run);
    /* A final step before the last checkpoint is an error. */
    text("run/trainer_state.json", "{\"global_step\": 50}");
    CHECK(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "before the last"));
    text("run/trainer_state.json", "{\"global_step\": 100}");
    CHECK(dora_run_discover(&run, p, &err) == 0 && run.nsteps == 3 && run.nnotes == 1);
    dora_run_release(&run);
    text("run/trainer_state.json", "{\"global_step\": -3}");
    CHECK(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "global_step"));
    text("run/trainer_state.json", "{\"global_step\": 150");
    CHECK(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "not valid JSON"));

    /* trainer_state.json that disagrees with the folder name */
    text("run/checkpoint-10/trainer_state.json", "{\"global_step\": 11}");
    CHECK(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "global_step is 11"));
    text("run/checkpoint-10/trainer_state.json", "{\"global_step\": 10}");

    /* a checkpoint folder on its own */
    path(p, sizeof p, "run/checkpoint-10");
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.layout == DORA_RUN_CHECKPOINT && run.nsteps == 1 && run.steps[0].step == 10);
    dora_run_release(&run);
    /* a file on its own */
    path(p, sizeof p, "run/checkpoint-10/model.safetensors");
    CHECK(dora_run_discover(&run, p, &err) == 0 && run.layout == DORA_RUN_FILE);
    CHECK(run.nsteps == 1 && run.steps[0].step == 0);
    dora_run_release(&run);
    /* nothing there */
    mkdirs("empty");
    path(p, sizeof p, "empty");
    CHECK(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "no checkpoint-STEP"));
    path(p, sizeof p, "nope");
    CHECK(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "no such file"));
    /* a checkpoint folder without a model */
    mkdirs("broken/checkpoint-1");
    path(p, sizeof p, "broken");
    CHECK(dora_run_discover(&run, p, &err) == 0 && run.nsteps == 1);
    dora_model *m = NULL;
    CHECK(dora_model_open(&m, run.steps[0].path, &err) == -1 && strstr(err.msg, "no model here"));
    dora_run_release(&run);
}

/* Steps at and beyond the int64 range (issue #14): never a wrap, never a
 * checkpoint skipped in silence. */
static void test_step_limits(void)
{
    char p[512];
    dora_run run;
    dora_err err;
    /* the last step is INT64_MAX: the largest step works... */
    mkdirs("big/checkpoint-9223372036854775807");
    model("big/checkpoint-9223372036854775807/model.safetensors", 1.0f);
    path(p, sizeof p, "big");
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.nsteps == 1 && run.steps[0].step == INT64_MAX);
    dora_run_release(&run);
    /* ...but a final model at last + 1 does not fit: an error, not step -2^63 */
    model("big/model.safetensors", 2.0f);
    CHECK_MSG(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "does not fit") &&
                  strstr(err.msg, "9223372036854775807 + 1") && strstr(err.msg, p),
              "%s", err.msg);
    /* a run-level trainer_state.json that gives the step is fine */
    text("big/trainer_state.json", "{\"global_step\": 9223372036854775807}");
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.nsteps == 1 && run.nnotes == 1); /* same step as the checkpoint: noted */
    dora_run_release(&run);

    /* checkpoint-DIGITS whose number does not fit: an error naming the folder */
    mkdirs("long/checkpoint-1");
    mkdirs("long/checkpoint-99999999999999999999");
    model("long/checkpoint-1/model.safetensors", 1.0f);
    model("long/checkpoint-99999999999999999999/model.safetensors", 1.5f);
    path(p, sizeof p, "long");
    CHECK_MSG(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "does not fit") &&
                  strstr(err.msg, "long/checkpoint-99999999999999999999"),
              "%s", err.msg);
    /* the same folder on its own */
    path(p, sizeof p, "long/checkpoint-99999999999999999999");
    CHECK_MSG(dora_run_discover(&run, p, &err) == -1 && strstr(err.msg, "does not fit"), "%s",
              err.msg);
    /* names that are not checkpoint-DIGITS are still no checkpoints */
    mkdirs("names/checkpoint-1");
    mkdirs("names/checkpoint-1x");
    mkdirs("names/checkpoint--2");
    mkdirs("names/checkpoint-");
    model("names/checkpoint-1/model.safetensors", 1.0f);
    path(p, sizeof p, "names");
    CHECK_MSG(dora_run_discover(&run, p, &err) == 0, "%s", err.msg);
    CHECK(run.nsteps == 1 && run.steps[0].step == 1);
    dora_run_release(&run);
}

static void test_sharded(void)
{
    mkdirs("shard");
    float v[4] = {1, 2, 3, 4};
    char p[512];
    path(p, sizeof p, "shard/a.safetensors");
    st_write_f32(p, "x", 2, 2, v);
    path(p, sizeof p, "shard/b.safetensors");
    st_write_f32(p, "y", 1, 4, v);
    text("shard/model.safetensors.index.json",
         "{\"metadata\":{},\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\"}}");
    dora_model *m = NULL;
    dora_err err;
    path(p, sizeof p, "shard");
    CHECK_MSG(dora_model_open(&m, p, &err) == 0, "%s", err.msg);
    if (m) {
        CHECK(m->kind == DORA_MODEL_SHARDED && m->nfiles == 2 && m->ntensors == 2);
        CHECK(dora_model_find(m, "y") && dora_model_find(m, "y")->shape[1] == 4);
        CHECK(dora_model_find(m, "z") == NULL);
        dora_model_close(m);
    }
    text("shard/model.safetensors.index.json",
         "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\"}}");
    CHECK(dora_model_open(&m, p, &err) == -1 && strstr(err.msg, "does not hold it"));
    /* a stray file the index does not name is not part of the model */
    text("shard/model.safetensors.index.json", "{\"weight_map\":{\"x\":\"a.safetensors\"}}");
    CHECK(dora_model_open(&m, p, &err) == 0 && m->ntensors == 1);
    dora_model_close(m);
    /* but a shard must not hold a tensor the index does not give it */
    char two[512];
    path(two, sizeof two, "shard/two.safetensors");
    st_write_raw(two,
                 "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 v, 8);
    text("shard/model.safetensors.index.json", "{\"weight_map\":{\"x\":\"two.safetensors\"}}");
    CHECK(dora_model_open(&m, p, &err) == -1 && strstr(err.msg, "'u'") &&
          strstr(err.msg, "does not list it"));
    text("shard/model.safetensors.index.json",
         "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"c.safetensors\"}}");
    CHECK(dora_model_open(&m, p, &err) == -1 && strstr(err.msg, "missing"));
    text("shard/model.safetensors.index.json",
         "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"../b.safetensors\"}}");
    CHECK(dora_model_open(&m, p, &err) == -1 && strstr(err.msg, "file name in the same folder"));
    text("shard/model.safetensors.index.json", "{\"weight_map\":{}}");
    CHECK(dora_model_open(&m, p, &err) == -1 && strstr(err.msg, "empty"));
}

static void test_util(void)
{
    CHECK(util_natural_cmp("layers.2.q", "layers.10.q") < 0);
    CHECK(util_natural_cmp("layers.10.q", "layers.2.q") > 0);
    CHECK(util_natural_cmp("a.q_proj", "a.v_proj") < 0);
    CHECK(util_natural_cmp("x1", "x01") != 0 && util_natural_cmp("abc", "abc") == 0);
    CHECK(util_natural_cmp("h.9", "h.9.x") < 0);
    CHECK(dora_layer_index("model.layers.12.mlp.up_proj.weight") == 12);
    CHECK(dora_layer_index("transformer.h.0.attn.c_attn.weight") == 0);
    CHECK(dora_layer_index("model.embed_tokens.weight") == -1);
    CHECK(dora_layer_index("blocks.3a.weight") == -1);
    CHECK(dora_layer_index("7.weight") == 7);
    int64_t v;
    CHECK(util_parse_i64("42", 1, 100, &v) == 0 && v == 42);
    CHECK(util_parse_i64("0", 1, 100, &v) == -1);
    CHECK(util_parse_i64("4x", 1, 100, &v) == -1);
    CHECK(util_parse_i64("", 1, 100, &v) == -1);
    CHECK(util_parse_i64(" 4", 1, 100, &v) == -1);
    CHECK(util_parse_i64("99999999999999999999", 1, INT64_MAX, &v) == -1);
    char *s = util_basename("/a/b/run/");
    CHECK(s && strcmp(s, "run") == 0);
    free(s);
    s = util_dirname("out.h5");
    CHECK(s && strcmp(s, ".") == 0);
    free(s);
    s = util_dirname("/x/out.h5");
    CHECK(s && strcmp(s, "/x") == 0);
    free(s);
}

int main(void)
{
    if (!mkdtemp(root))
        return 2;
    test_trainer_layout();
    test_step_limits();
    test_sharded();
    test_util();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return unit_summary("test_run");
}
