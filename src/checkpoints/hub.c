/* hub.c - a repository id to its snapshot in the Hugging Face cache; see
 * include/dora/hub.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/hub.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX 96   /* characters of ORG or NAME, as the hub allows */
#define REV_MAX 255

static const char ID_CHARS[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

/* N bytes of S, each one of ID_CHARS (or '/' when SLASH). */
static int chars_ok(const char *s, size_t n, int slash)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr(ID_CHARS, s[i]) && !(slash && s[i] == '/'))
            return 0;
    return 1;
}

static int id_part_ok(const char *s, size_t n)
{
    return n > 0 && n <= ID_MAX && s[0] != '.' && chars_ok(s, n, 0);
}

static int rev_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= REV_MAX && s[0] != '/' && !strstr(s, "..") && chars_ok(s, n, 1);
}

static int is_hash(const char *s)
{
    return strlen(s) == 40 && strspn(s, "0123456789abcdef") == 40;
}

/* Whether SPEC has the form ORG/NAME[@REVISION]. */
static int id_form(const char *spec)
{
    const char *slash = strchr(spec, '/'), *at = strchr(spec, '@');
    const char *end = at ? at : spec + strlen(spec);
    return slash && slash < end && id_part_ok(spec, (size_t)(slash - spec)) &&
           id_part_ok(slash + 1, (size_t)(end - slash - 1)) && (!at || rev_ok(at + 1));
}

/* The cache folder (allocated), from the environment as huggingface_hub reads it. */
static char *cache_dir(void)
{
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v)
        return strdup(v);
    if ((v = getenv("HF_HOME")) && *v)
        return util_join(v, "hub");
    if ((v = getenv("XDG_CACHE_HOME")) && *v)
        return util_join(v, "huggingface/hub");
    if ((v = getenv("HOME")) && *v)
        return util_join(v, ".cache/huggingface/hub");
    return NULL;
}

/* The commit hash refs/REV of REPO holds, into HASH (41 bytes). */
static int read_ref(const char *repo, const char *rev, char *hash, const char *spec,
                    dora_err *err)
{
    char *refs = util_join(repo, "refs"), *ref = refs ? util_join(refs, rev) : NULL;
    free(refs);
    if (!ref)
        return dora_errf(err, "out of memory");
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    if (!util_is_file(ref))
        rc = dora_errf(err, "'%s': the Hugging Face cache has no revision '%s' ('%s' is missing; "
                            "nothing is downloaded)",
                       spec, rev, ref);
    else if (util_read_file(ref, 256, &text, &len, err) != 0)
        rc = -1;
    while (rc == 0 && len && strchr(" \t\r\n", text[len - 1]))
        text[--len] = '\0';
    if (rc == 0 && !is_hash(text))
        rc = dora_errf(err, "'%s': '%s' does not hold a commit hash", spec, ref);
    if (rc == 0)
        memcpy(hash, text, 41);
    free(text);
    free(ref);
    return rc;
}

int dora_hub_resolve(const char *spec, char **snapshot, dora_err *err)
{
    *snapshot = NULL;
    const char *slash = strchr(spec, '/'), *at = strchr(spec, '@');
    const char *end = at ? at : spec + strlen(spec);
    if (!id_form(spec))
        return 0;
    const char *rev = at ? at + 1 : "main";
    char *cache = cache_dir();
    if (!cache)
        return dora_errf(err, "'%s': no Hugging Face cache folder (set HF_HUB_CACHE or HF_HOME)",
                         spec);
    char folder[2 * ID_MAX + 16];
    snprintf(folder, sizeof folder, "models--%.*s--%.*s", (int)(slash - spec), spec,
             (int)(end - slash - 1), slash + 1);
    char *repo = util_join(cache, folder);
    char hash[41];
    int rc = 0;
    if (!repo)
        rc = dora_errf(err, "out of memory");
    else if (!util_is_dir(repo))
        rc = dora_errf(err, "'%s' is no local path, and the Hugging Face cache '%s' holds no "
                            "'%s' (nothing is downloaded: fetch it with `huggingface-cli "
                            "download %.*s`, or give a path)",
                       spec, cache, folder, (int)(end - spec), spec);
    else if (is_hash(rev))
        memcpy(hash, rev, 41);
    else
        rc = read_ref(repo, rev, hash, spec, err);
    char *snaps = rc == 0 ? util_join(repo, "snapshots") : NULL;
    char *snap = snaps ? util_join(snaps, hash) : NULL;
    if (rc == 0 && !snap)
        rc = dora_errf(err, "out of memory");
    else if (rc == 0 && !util_is_dir(snap))
        rc = dora_errf(err, "'%s': the Hugging Face cache has no snapshot '%s' (revision '%s')",
                       spec, snap, rev);
    free(snaps);
    free(repo);
    free(cache);
    if (rc != 0) {
        free(snap);
        return -1;
    }
    *snapshot = snap;
    return 1;
}


char *dora_hub_repo_id(const char *path)
{
    if (id_form(path) && !util_is_dir(path) && !util_is_file(path))
        return strdup(path);
    for (const char *p = path; (p = strstr(p, "models--")) != NULL; p += 8) {
        if (p != path && p[-1] != '/')
            continue;
        const char *org = p + 8, *sep = strstr(org, "--");
        size_t comp = strcspn(org, "/");
        if (!sep || sep >= org + comp)
            continue;
        const char *name = sep + 2;
        size_t no = (size_t)(sep - org), nn = comp - no - 2;
        if (!id_part_ok(org, no) || !id_part_ok(name, nn))
            continue;
        char *id = malloc(no + nn + 2);
        if (id)
            snprintf(id, no + nn + 2, "%.*s/%.*s", (int)no, org, (int)nn, name);
        return id;
    }
    return NULL;
}
