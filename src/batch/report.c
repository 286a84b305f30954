/* report.c - expectations evaluated, and the JSON and JUnit reports; see
 * include/dora/batch.h. */
#include "dora/batch.h"
#include "dora/version.h"
#include "batch/common.h"
#include "results/bytes.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


void dora_expect_eval(const dora_expect *e, const dora_regression *regs, size_t nregs,
                      dora_expect_result *out)
{
    memset(out, 0, sizeof *out);
    out->outcome = DORA_OUTCOME_FAILED;
    const dora_regression *g = NULL;
    int have_run = 0;
    for (size_t i = 0; i < nregs; i++) {
        if (strcmp(regs[i].run, e->run) != 0)
            continue;
        have_run = 1;
        if (strcmp(regs[i].kind, e->kind) == 0)
            g = &regs[i];
    }
    const char *stat = dora_stat_name(e->stat), *op = dora_op_name(e->op);
    if (!have_run) {
        snprintf(out->message, sizeof out->message, "no run '%s' in the results", e->run);
        return;
    }
    if (!g) {
        snprintf(out->message, sizeof out->message, "run '%s' has no module of kind '%s'",
                 e->run, e->kind);
        return;
    }
    int defined = e->stat == DORA_STAT_WITHIN_STEP_R ? g->within_defined : g->defined;
    if (!defined) {
        snprintf(out->message, sizeof out->message,
                 "%s of %s %s is undefined (n = %lld: fewer than 2 points, or no spread)", stat,
                 e->run, e->kind, g->n);
        return;
    }
    double v = e->stat == DORA_STAT_PEARSON_R       ? g->r
               : e->stat == DORA_STAT_WITHIN_STEP_R ? g->within_r
               : e->stat == DORA_STAT_SLOPE         ? g->slope
                                                    : g->intercept;
    out->defined = 1;
    out->actual = v;
    int held = e->op == DORA_OP_LT   ? v < e->value
               : e->op == DORA_OP_GT ? v > e->value
               : e->op == DORA_OP_LE ? v <= e->value
                                     : v >= e->value;
    out->outcome = held ? DORA_OUTCOME_HELD : DORA_OUTCOME_FAILED;
    snprintf(out->message, sizeof out->message, "%s of %s %s is %.6g (n = %lld), expected %s %g%s",
             stat, e->run, e->kind, v, g->n, op, e->value, held ? "" : ": does not hold");
}

/* ---- reports ------------------------------------------------------------- */

void dora_study_report_release(dora_study_report *r)
{
    if (!r)
        return;
    free(r->error);
    for (size_t i = 0; i < r->nfailures; i++) {
        free(r->failures[i].run);
        free(r->failures[i].path);
        free(r->failures[i].message);
    }
    free(r->failures);
    free(r->figures_message);
    free(r->results);
    memset(r, 0, sizeof *r);
}

static const char *study_status_name(dora_study_status s)
{
    return s == DORA_STUDY_COMPLETE ? "complete" : s == DORA_STUDY_INCOMPLETE ? "incomplete" : "error";
}

static const char *fig_status_name(dora_fig_status s)
{
    static const char *const n[] = {"none", "drawn", "failed", "skipped"};
    return (unsigned)s < 4 ? n[s] : "?";
}

static const char *outcome_name(dora_outcome o)
{
    static const char *const n[] = {"held", "failed", "not_evaluated"};
    return (unsigned)o < 3 ? n[o] : "?";
}

int dora_report_json(const char *path, const char *manifest, const char *shard, int ok,
                     const dora_study_report *r, size_t n, double seconds, dora_err *err)
{
    json_t *root = json_object(), *studies = json_array();
    size_t held = 0, failed = 0, notev = 0, units = 0, run = 0, skipped = 0, ufailed = 0;
    json_object_set_new(root, "tool", batch_jstr("dora-analyze " DORA_VERSION));
    json_object_set_new(root, "manifest", batch_jstr(manifest));
    json_object_set_new(root, "shard", shard ? batch_jstr(shard) : json_null());
    json_object_set_new(root, "ok", json_boolean(ok));
    for (size_t i = 0; i < n; i++) {
        const dora_study_report *s = &r[i];
        json_t *o = json_object(), *fl = json_array(), *ex = json_array();
        json_object_set_new(o, "name", batch_jstr(s->name));
        json_object_set_new(o, "output", s->output ? batch_jstr(s->output) : json_null());
        json_object_set_new(o, "status", json_string(study_status_name(s->status)));
        json_object_set_new(o, "error", s->error ? batch_jstr(s->error) : json_null());
        json_t *u = json_object();
        json_object_set_new(u, "total", json_integer((json_int_t)s->units_total));
        json_object_set_new(u, "run", json_integer((json_int_t)s->units_run));
        json_object_set_new(u, "up_to_date", json_integer((json_int_t)s->units_skipped));
        json_object_set_new(u, "failed", json_integer((json_int_t)s->units_failed));
        json_object_set_new(o, "units", u);
        units += s->units_total;
        run += s->units_run;
        skipped += s->units_skipped;
        ufailed += s->units_failed;
        for (size_t k = 0; k < s->nfailures; k++) {
            json_t *f = json_object();
            json_object_set_new(f, "run", batch_jstr(s->failures[k].run));
            json_object_set_new(f, "step", json_integer(s->failures[k].step));
            json_object_set_new(f, "checkpoint", batch_jstr(s->failures[k].path));
            json_object_set_new(f, "message", batch_jstr(s->failures[k].message));
            json_array_append_new(fl, f);
        }
        json_object_set_new(o, "unit_failures", fl);
        json_t *fig = json_object();
        json_object_set_new(fig, "status", json_string(fig_status_name(s->figures)));
        json_object_set_new(fig, "message",
                            s->figures_message ? batch_jstr(s->figures_message) : json_null());
        json_object_set_new(o, "figures", fig);
        for (size_t k = 0; k < s->nexpect; k++) {
            const dora_expect *e = &s->expect[k];
            const dora_expect_result *er = &s->results[k];
            json_t *x = json_object();
            json_object_set_new(x, "name", batch_jstr(e->name));
            json_object_set_new(x, "run", batch_jstr(e->run));
            json_object_set_new(x, "module_kind", batch_jstr(e->kind));
            json_object_set_new(x, "stat", json_string(dora_stat_name(e->stat)));
            json_object_set_new(x, "op", json_string(dora_op_name(e->op)));
            json_object_set_new(x, "value", json_real(e->value));
            json_object_set_new(x, "actual", er->defined ? json_real(er->actual) : json_null());
            json_object_set_new(x, "status", json_string(outcome_name(er->outcome)));
            json_object_set_new(x, "message", batch_jstr(er->message));
            json_array_append_new(ex, x);
            held += er->outcome == DORA_OUTCOME_HELD;
            failed += er->outcome == DORA_OUTCOME_FAILED;
            notev += er->outcome == DORA_OUTCOME_NOT_EVALUATED;
        }
        json_object_set_new(o, "expectations", ex);
        json_object_set_new(o, "seconds", json_real(s->seconds));
        json_array_append_new(studies, o);
    }
    json_object_set_new(root, "studies", studies);
    json_t *sum = json_object();
    json_object_set_new(sum, "studies", json_integer((json_int_t)n));
    json_object_set_new(sum, "units", json_integer((json_int_t)units));
    json_object_set_new(sum, "units_run", json_integer((json_int_t)run));
    json_object_set_new(sum, "units_up_to_date", json_integer((json_int_t)skipped));
    json_object_set_new(sum, "units_failed", json_integer((json_int_t)ufailed));
    json_object_set_new(sum, "expectations_held", json_integer((json_int_t)held));
    json_object_set_new(sum, "expectations_failed", json_integer((json_int_t)failed));
    json_object_set_new(sum, "expectations_not_evaluated", json_integer((json_int_t)notev));
    json_object_set_new(root, "summary", sum);
    json_object_set_new(root, "seconds", json_real(seconds));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text)
        return dora_errf(err, "'%s': out of memory formatting the report", path);
    size_t len = strlen(text);
    char *withnl = realloc(text, len + 2);
    if (!withnl) {
        free(text);
        return dora_errf(err, "out of memory");
    }
    withnl[len] = '\n';
    withnl[len + 1] = '\0';
    int rc = batch_write_atomic(path, withnl, len + 1, err);
    free(withnl);
    return rc;
}

/* S escaped for XML attribute or text: &<>"' as entities, control characters
 * other than tab and newline and invalid UTF-8 as '?'. */
static void xml_escaped(wbuf *b, const char *s)
{
    char *c = batch_utf8_clean(s ? s : "");
    if (!c) {
        b->oom = 1;
        return;
    }
    for (const char *p = c; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        case '\n': rep = "&#10;"; break;
        case '\t': rep = "&#9;"; break;
        default:
            if ((unsigned char)*p < 0x20)
                rep = "?";
        }
        if (rep)
            wire_put_bytes(b, rep, strlen(rep));
        else
            wire_put_bytes(b, p, 1);
    }
    free(c);
}

static void xml_put(wbuf *b, const char *s)
{
    wire_put_bytes(b, s, strlen(s));
}

static void xml_printf(wbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void xml_printf(wbuf *b, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    xml_put(b, buf);
}

/* <testcase classname=".." name=".."> with KIND ("failure", "error",
 * "skipped") and MESSAGE, or passing when KIND is NULL. */
static void testcase(wbuf *b, const char *study, const char *name, const char *kind,
                     const char *message)
{
    xml_put(b, "    <testcase classname=\"dora-analyze.batch.");
    xml_escaped(b, study);
    xml_put(b, "\" name=\"");
    xml_escaped(b, name);
    if (!kind) {
        xml_put(b, "\"/>\n");
        return;
    }
    xml_put(b, "\">\n      <");
    xml_put(b, kind);
    xml_put(b, " message=\"");
    xml_escaped(b, message);
    xml_put(b, "\"/>\n    </testcase>\n");
}

int dora_report_junit(const char *path, const char *manifest, const dora_study_report *r,
                      size_t n, double seconds, dora_err *err)
{
    wbuf b = {0};
    size_t tests = 0, failures = 0, errors = 0, skipped = 0;
    /* counts first: one pass to count, one to write */
    for (size_t i = 0; i < n; i++) {
        const dora_study_report *s = &r[i];
        tests += 1 + s->nfailures + s->nexpect + (s->figures != DORA_FIG_NONE);
        errors += s->status == DORA_STUDY_ERROR;
        failures += (s->status == DORA_STUDY_INCOMPLETE) + s->nfailures +
                    (s->figures == DORA_FIG_FAILED);
        skipped += s->figures == DORA_FIG_SKIPPED;
        for (size_t k = 0; k < s->nexpect; k++) {
            failures += s->results[k].outcome == DORA_OUTCOME_FAILED;
            skipped += s->results[k].outcome == DORA_OUTCOME_NOT_EVALUATED;
        }
    }
    xml_put(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"dora-analyze batch ");
    xml_escaped(&b, manifest);
    xml_printf(&b, "\" tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" skipped=\"%zu\" time=\"%.3f\">\n",
               tests, failures, errors, skipped, seconds);
    for (size_t i = 0; i < n; i++) {
        const dora_study_report *s = &r[i];
        size_t t = 1 + s->nfailures + s->nexpect + (s->figures != DORA_FIG_NONE), f = 0, sk = 0;
        f += (s->status == DORA_STUDY_INCOMPLETE) + s->nfailures + (s->figures == DORA_FIG_FAILED);
        sk += s->figures == DORA_FIG_SKIPPED;
        for (size_t k = 0; k < s->nexpect; k++) {
            f += s->results[k].outcome == DORA_OUTCOME_FAILED;
            sk += s->results[k].outcome == DORA_OUTCOME_NOT_EVALUATED;
        }
        xml_put(&b, "  <testsuite name=\"");
        xml_escaped(&b, s->name);
        xml_printf(&b, "\" tests=\"%zu\" failures=\"%zu\" errors=\"%d\" skipped=\"%zu\" time=\"%.3f\">\n",
                   t, f, s->status == DORA_STUDY_ERROR, sk, s->seconds);
        char msg[600];
        if (s->status == DORA_STUDY_ERROR)
            testcase(&b, s->name, "study", "error", s->error ? s->error : "the study did not run");
        else if (s->status == DORA_STUDY_INCOMPLETE) {
            snprintf(msg, sizeof msg, "%zu of %zu unit(s) failed", s->units_failed, s->units_total);
            testcase(&b, s->name, "study", "failure", msg);
        } else
            testcase(&b, s->name, "study", NULL, NULL);
        for (size_t k = 0; k < s->nfailures; k++) {
            char name[1200];
            snprintf(name, sizeof name, "unit %s@%lld", s->failures[k].run,
                     (long long)s->failures[k].step);
            testcase(&b, s->name, name, "failure", s->failures[k].message);
        }
        for (size_t k = 0; k < s->nexpect; k++) {
            char name[1200];
            snprintf(name, sizeof name, "expect %s", s->expect[k].name);
            const dora_expect_result *er = &s->results[k];
            testcase(&b, s->name, name,
                     er->outcome == DORA_OUTCOME_HELD     ? NULL
                     : er->outcome == DORA_OUTCOME_FAILED ? "failure"
                                                          : "skipped",
                     er->message);
        }
        if (s->figures != DORA_FIG_NONE)
            testcase(&b, s->name, "figures",
                     s->figures == DORA_FIG_DRAWN    ? NULL
                     : s->figures == DORA_FIG_FAILED ? "failure"
                                                     : "skipped",
                     s->figures_message ? s->figures_message : "");
        xml_put(&b, "  </testsuite>\n");
    }
    xml_put(&b, "</testsuites>\n");
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "'%s': out of memory formatting the report", path);
    }
    int rc = batch_write_atomic(path, (const char *)b.p, b.n, err);
    free(b.p);
    return rc;
}
