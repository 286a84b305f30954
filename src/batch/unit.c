/* unit.c - stamps of checkpoints, a study's fingerprint, one unit analysed;
 * see include/dora/batch.h. */
#define _XOPEN_SOURCE 700 /* realpath, with POSIX 2008 */
#include "dora/batch.h"
#include "dora/adapter.h"
#include "dora/h5out.h"
#include "dora/quant.h"
#include "dora/run.h"
#include "dora/version.h"
#include "batch/common.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>


char *dora_model_stamp(const dora_model *m, uint64_t *bytes)
{
    size_t cap = 48 * (m->nfiles + 1), used = 0;
    char *s = malloc(cap);
    uint64_t total = 0;
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < m->nfiles; i++) {
        used += (size_t)snprintf(s + used, cap - used, "%s%llu:%lld", i ? ";" : "",
                                 (unsigned long long)m->files[i]->size,
                                 (long long)m->files[i]->mtime_ns);
        total += m->files[i]->size;
    }
    if (bytes)
        *bytes = total;
    return s;
}

int dora_step_stamp(const char *path, char **stamp, uint64_t *bytes, dora_err *err)
{
    dora_model_kind kind;
    *stamp = NULL;
    if (dora_model_probe(path, &kind, NULL, err) != 0)
        return -1;
    if (kind == DORA_MODEL_ADAPTER) {
        dora_adapter *a;
        if (dora_adapter_open(&a, path, err) != 0)
            return -1;
        *stamp = dora_model_stamp(a->weights, bytes);
        dora_adapter_close(a);
    } else {
        dora_model *m;
        if (dora_model_open(&m, path, err) != 0)
            return -1;
        *stamp = dora_model_stamp(m, bytes);
        dora_model_close(m);
    }
    return *stamp ? 0 : dora_errf(err, "out of memory");
}

static char *dump_canonical(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
}

/* The runs' initial adapters (only when any is given: earlier journals stay
 * valid), each by its real path and the stamp of its files: the results
 * depend on them as on the base. */
static void initial_json(json_t *f, const dora_study *st)
{
    json_t *ia = NULL;
    for (size_t r = 0; r < st->nruns; r++) {
        const char *p = st->runs[r].initial_adapter;
        if (!p)
            continue;
        char *real = realpath(p, NULL), *stamp = NULL;
        dora_err e;
        if (dora_step_stamp(p, &stamp, NULL, &e) != 0)
            stamp = NULL;
        char *v = batch_xprintf("%s;%s", real ? real : p, stamp ? stamp : "unreadable");
        if (!ia)
            ia = json_object();
        json_object_set_new(ia, st->runs[r].name, batch_jstr(v));
        free(real);
        free(stamp);
        free(v);
    }
    if (ia)
        json_object_set_new(f, "initial_adapter", ia);
}

static json_t *fingerprint_json(const dora_study *st, const char *base_stamp)
{
    json_t *f = json_object();
    json_object_set_new(f, "tool", batch_jstr("dora-analyze " DORA_VERSION));
    json_object_set_new(f, "layout_version", json_integer(DORA_LAYOUT_VERSION));
    /* the base by its real path: the same study reached through another spelling of
     * the manifest's path (relative, absolute, a symbolic link) is the same study */
    char *real = realpath(st->base, NULL);
    json_object_set_new(f, "base", batch_jstr(real ? real : st->base));
    free(real);
    json_object_set_new(f, "base_stamp", batch_jstr(base_stamp));
    json_object_set_new(f, "include", st->include ? batch_jstr(st->include) : json_null());
    json_object_set_new(f, "exclude", st->exclude ? batch_jstr(st->exclude) : json_null());
    /* the layout options only when given: earlier journals stay valid without them */
    if (st->nrenames) {
        json_t *a = json_array();
        for (size_t i = 0; i < st->nrenames; i++)
            json_array_append_new(a, batch_jstr(st->renames[i]));
        json_object_set_new(f, "rename", a);
    }
    if (st->transpose)
        json_object_set_new(f, "transpose", batch_jstr(st->transpose));
    if (st->no_split)
        json_object_set_new(f, "no_split", json_true());
    if (st->base_quant != DORA_QUANT_NONE)
        json_object_set_new(f, "base_quant", batch_jstr(dora_quant_name(st->base_quant)));
    if (st->quant_skip)
        json_object_set_new(f, "quant_skip", batch_jstr(st->quant_skip));
    initial_json(f, st);
    return f;
}

char *dora_study_fingerprint(const dora_study *st, const char *base_stamp)
{
    json_t *f = fingerprint_json(st, base_stamp);
    char *s = f ? dump_canonical(f) : NULL;
    json_decref(f);
    return s;
}

char *dora_journal_header(const char *study, const char *fingerprint, const dora_study *st,
                          const dora_run *runs)
{
    json_error_t jerr;
    json_t *fp = json_loads(fingerprint, 0, &jerr);
    json_t *h = json_object(), *ra = json_array();
    if (!fp || !h || !ra) {
        json_decref(fp);
        json_decref(h);
        json_decref(ra);
        return NULL;
    }
    json_object_set_new(h, "format", json_string("dora-analyze batch journal"));
    json_object_set_new(h, "version", json_integer(1));
    json_object_set_new(h, "study", batch_jstr(study));
    json_object_set_new(h, "fingerprint", fp);
    for (size_t r = 0; r < st->nruns; r++) {
        json_t *o = json_object(), *steps = json_array();
        json_object_set_new(o, "name", batch_jstr(st->runs[r].name));
        json_object_set_new(o, "path", batch_jstr(st->runs[r].path));
        for (size_t s = 0; runs && s < runs[r].nsteps; s++)
            json_array_append_new(steps, json_integer(runs[r].steps[s].step));
        json_object_set_new(o, "steps", steps);
        json_array_append_new(ra, o);
    }
    json_object_set_new(h, "runs", ra);
    char *s = dump_canonical(h);
    json_decref(h);
    return s;
}

char *dora_header_fingerprint(const char *header)
{
    json_error_t jerr;
    json_t *h = json_loads(header, 0, &jerr);
    json_t *fp = h ? json_object_get(h, "fingerprint") : NULL;
    char *s = json_is_object(fp) ? dump_canonical(fp) : NULL;
    json_decref(h);
    return s;
}

int dora_analyze_unit(dora_result *res, const char *name, const dora_model *base,
                      const char *base_path, const dora_run *run, size_t step_index,
                      const dora_analysis_opts *opts, dora_err *err)
{
    if (step_index >= run->nsteps)
        return dora_errf(err, "'%s': no step number %zu (the run has %zu)", run->path, step_index,
                         run->nsteps);
    dora_run one = *run; /* plain data: a view of one step, not released */
    one.nsteps = 1;
    one.steps = &run->steps[step_index];
    one.nnotes = 0;
    return dora_analyze_run(res, name, base, base_path, &one, opts, err);
}

int dora_study_open_base(dora_study *st, dora_model **base, char *note, size_t len,
                         dora_err *err)
{
    *base = NULL;
    if (!st->quant_settled)
        st->quant_asked = st->base_quant;
    if (batch_study_settle(st, err) != 0 || dora_model_open(base, st->base, err) != 0)
        return -1;
    dora_study_close_saved(st); /* a view of an earlier opening of the base */
    if (dora_bnb_saved_w0(*base, st->quant_asked, &st->saved, note, len, err) != 0) {
        dora_model_close(*base);
        *base = NULL;
        return -1;
    }
    if (st->saved) { /* its quantization_config describes the saved form: not applied again */
        st->base_quant = DORA_QUANT_NONE;
        free(st->quant_skip);
        st->quant_skip = NULL;
    }
    return 0;
}

const dora_model *dora_study_w0(const dora_study *st, const dora_model *base)
{
    return st->saved ? &st->saved->view : base;
}

void dora_study_close_saved(dora_study *st)
{
    dora_quant_base_close(st->saved);
    st->saved = NULL;
}

int dora_study_run_initial(dora_study_run *sr, dora_run *run, dora_err *err)
{
    if (!sr->initial_adapter)
        return 0;
    if (!sr->initial && dora_adapter_open(&sr->initial, sr->initial_adapter, err) != 0)
        return dora_errprefix(err, "the initial_adapter of run '%s'", sr->name);
    dora_run_set_initial(run, sr->initial);
    return 0;
}
