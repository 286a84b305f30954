/* model.c - one model's tensors from a single or sharded safetensors checkpoint. */
#define _POSIX_C_SOURCE 200809L
#include "dora/model.h"
#include "dora/adapter.h"
#include "dora/guard.h"
#include "dora/hub.h"
#include "dora/meta_mp.h"
#include "dora/tune_shards.h"
#include "dora/torchzip.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define INDEX_NAME "model.safetensors.index.json"
#define TORCH_INDEX_NAME "pytorch_model.bin.index.json"
#define INDEX_MAX_BYTES (256u << 20) /* an index of a million tensors is ~100 MB */

static int by_name_cmp(const void *pa, const void *pb)
{
    const dora_tensor *a = *(const dora_tensor *const *)pa;
    const dora_tensor *b = *(const dora_tensor *const *)pb;
    return strcmp(a->name, b->name);
}

static int shard_name_ok(const char *s);

/* The model states file of DeepSpeed's tag folder DIR/TAG; see probe_deepspeed. */
static int deepspeed_states(const char *dir, const char *tag, dora_model_kind *kind,
                            char **model_path, dora_err *err)
{
    if (!tag || !shard_name_ok(tag))
        return dora_errf(err, "'%s': the DeepSpeed tag '%s' is not a folder name", dir,
                         tag ? tag : "");
    char *name = util_basename(dir);
    int64_t named = -1, tagged = -1;
    if (name && strncmp(name, "checkpoint-", 11) == 0)
        (void)util_parse_i64(name + 11, 0, INT64_MAX, &named);
    if (strncmp(tag, "global_step", 11) == 0)
        (void)util_parse_i64(tag + 11, 0, INT64_MAX, &tagged);
    free(name);
    if (named >= 0 && tagged >= 0 && named != tagged)
        return dora_errf(err, "'%s': the folder is step %lld but holds DeepSpeed's %s", dir,
                         (long long)named, tag);
    char *sub = util_join(dir, tag);
    char *states = sub ? util_join(sub, "mp_rank_00_model_states.pt") : NULL;
    char *rank1 = sub ? util_join(sub, "mp_rank_01_model_states.pt") : NULL;
    int rc = 1;
    if (!states || !rank1)
        rc = dora_errf(err, "out of memory");
    else if (util_is_file(rank1))
        rc = dora_errf(err, "'%s': model-parallel DeepSpeed states (mp_rank_01 and more) are not "
                            "joined; convert the checkpoint to one state dict first",
                       sub);
    else if (!util_is_file(states))
        rc = dora_errf(err, "'%s': no mp_rank_00_model_states.pt (ZeRO partitions only?): "
                            "rebuild the weights with the zero_to_fp32.py script DeepSpeed "
                            "saves beside the checkpoint",
                       sub);
    if (rc == 1) {
        *kind = DORA_MODEL_TORCH;
        if (model_path) {
            *model_path = states;
            states = NULL;
        }
    }
    free(states);
    free(rank1);
    free(sub);
    return rc;
}

/* DeepSpeed saves, in a checkpoint folder, global_stepSTEP/ (the one the file
 * `latest` names, else the only one) holding mp_rank_00_model_states.pt, whose
 * "module" is the state dict. 1 with *KIND and *MODEL_PATH set when DIR holds
 * that; 0 when DIR is no DeepSpeed checkpoint; -1 with ERR set for what cannot
 * be read here: ZeRO partitions only (zero_to_fp32.py), model-parallel ranks,
 * a sharded FSDP checkpoint (.distcp), or a step that disagrees with the
 * folder's name. */
static int probe_deepspeed(const char *dir, dora_model_kind *kind, char **model_path,
                           dora_err *err)
{
    char *fsdp = util_join(dir, "pytorch_model_fsdp_0");
    int sharded = fsdp && util_is_dir(fsdp);
    free(fsdp);
    if (sharded)
        return dora_errf(err, "'%s': pytorch_model_fsdp_0/ is a sharded FSDP checkpoint "
                              "(torch.distributed.checkpoint .distcp files), which is not read; "
                              "save a full state dict (accelerate merge-weights, or "
                              "fsdp_state_dict_type FULL_STATE_DICT)",
                         dir);
    DIR *d = opendir(dir);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder: %s", dir, strerror(errno));
    char *tag = NULL;
    int count = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *num = de->d_name + 11;
        if (strncmp(de->d_name, "global_step", 11) != 0 || !*num ||
            strspn(num, "0123456789") != strlen(num))
            continue;
        char *p = util_join(dir, de->d_name);
        if (p && util_is_dir(p) && ++count == 1)
            tag = strdup(de->d_name);
        free(p);
    }
    closedir(d);
    if (count == 0) {
        free(tag);
        return 0;
    }
    char *latest = util_join(dir, "latest"), *text = NULL;
    size_t len = 0;
    if (latest && util_is_file(latest) && util_read_file(latest, 4096, &text, &len, err) == 0) {
        while (len && (text[len - 1] == '\n' || text[len - 1] == ' ' || text[len - 1] == '\r'))
            text[--len] = '\0';
        free(tag);
        tag = text;
        count = 1;
    } else if (count > 1) {
        rc = dora_errf(err, "'%s': %d global_stepN folders and no 'latest' file naming one", dir,
                       count);
    }
    free(latest);
    if (rc == 0)
        rc = deepspeed_states(dir, tag, kind, model_path, err);
    free(tag);
    return rc;
}

int dora_model_probe(const char *path, dora_model_kind *kind, char **model_path, dora_err *err)
{
    struct stat sb;
    *kind = DORA_MODEL_NONE;
    if (model_path)
        *model_path = NULL;
    if (stat(path, &sb) != 0) {
        int e = errno;
        char *snap;
        int hub = e == ENOENT ? dora_hub_resolve(path, &snap, err) : 0;
        if (hub == 1) { /* a repository id of the Hugging Face cache */
            int r = dora_model_probe(snap, kind, model_path, err);
            free(snap);
            return r;
        }
        return hub < 0 ? -1 : dora_errf(err, "'%s': %s", path, strerror(e));
    }
    if (S_ISREG(sb.st_mode)) {
        if (util_has_suffix(path, ".safetensors"))
            *kind = dora_kohya_probe(path) ? DORA_MODEL_ADAPTER : DORA_MODEL_SAFETENSORS;
        else if (util_has_suffix(path, ".index.json"))
            *kind = DORA_MODEL_SHARDED;
        else if (util_has_suffix(path, ".bin") || util_has_suffix(path, ".pt") ||
                 util_has_suffix(path, ".pth") || util_has_suffix(path, ".ckpt"))
            *kind = DORA_MODEL_TORCH;
        else
            *kind = DORA_MODEL_SAFETENSORS; /* let the parser judge the content */
        if (model_path && !(*model_path = strdup(path)))
            return dora_errf(err, "out of memory");
        return 0;
    }
    if (!S_ISDIR(sb.st_mode))
        return 0;

    static const struct {
        const char *name;
        dora_model_kind kind;
    } known[] = {
        {INDEX_NAME, DORA_MODEL_SHARDED},
        {"model.safetensors", DORA_MODEL_SAFETENSORS},
        {"adapter_config.json", DORA_MODEL_ADAPTER},
        {TORCH_INDEX_NAME, DORA_MODEL_SHARDED},
        {"pytorch_model.bin", DORA_MODEL_TORCH},
        {"pytorch_model_fsdp.bin", DORA_MODEL_TORCH}, /* accelerate, FULL_STATE_DICT */
        {"consolidated.00.pth", DORA_MODEL_TORCH},    /* Meta's Llama (.01 ...: joined) */
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        char *p = util_join(path, known[i].name);
        if (!p)
            return dora_errf(err, "out of memory");
        if (util_is_file(p)) {
            *kind = known[i].kind;
            if (known[i].kind == DORA_MODEL_ADAPTER) {
                /* the adapter's weights file stands for it (byte comparisons) */
                static const char *const wnames[] = {"adapter_model.safetensors",
                                                     "adapters.safetensors", "adapter_model.bin"};
                char *found = NULL;
                for (size_t w = 0; w < 3 && !found; w++) {
                    char *wp = util_join(path, wnames[w]);
                    if (wp && util_is_file(wp))
                        found = wp;
                    else
                        free(wp);
                }
                free(p);
                p = found; /* NULL: a config without weights */
            }
            if (model_path)
                *model_path = p;
            else
                free(p);
            return 0;
        }
        free(p);
    }
    /* DeepSpeed's model states, or a layout refused by name */
    int ds = probe_deepspeed(path, kind, model_path, err);
    if (ds != 0)
        return ds < 0 ? -1 : 0;
    /* Otherwise: exactly one *.safetensors file in the folder. */
    DIR *d = opendir(path);
    if (!d)
        return dora_errf(err, "'%s': cannot list folder: %s", path, strerror(errno));
    char *found = NULL;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!util_has_suffix(de->d_name, ".safetensors"))
            continue;
        char *p = util_join(path, de->d_name);
        if (p && util_is_file(p) && ++count == 1) {
            found = p;
            continue;
        }
        free(p);
    }
    closedir(d);
    if (count == 1) {
        *kind = DORA_MODEL_SAFETENSORS;
        if (model_path)
            *model_path = found;
        else
            free(found);
    } else {
        free(found);
    }
    return 0;
}

/* Append F to m->files (capacity doubled as needed: indexes name 10^5 shards). */
static int add_file(dora_model *m, st_file *f, size_t *cap, dora_err *err)
{
    if (m->nfiles == *cap) {
        size_t nc = *cap ? 2 * *cap : 4;
        st_file **nf = realloc(m->files, nc * sizeof *nf);
        if (!nf)
            return dora_errf(err, "out of memory");
        m->files = nf;
        *cap = nc;
    }
    m->files[m->nfiles++] = f;
    return 0;
}

/* Build the sorted name table of the first NF files and refuse a name held
 * by two files. */
static int index_files(dora_model *m, size_t nf, dora_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < nf; i++)
        n += m->files[i]->ntensors;
    m->by_name = calloc(n ? n : 1, sizeof *m->by_name);
    if (!m->by_name)
        return dora_errf(err, "out of memory");
    for (size_t i = 0; i < nf; i++)
        for (size_t j = 0; j < m->files[i]->ntensors; j++)
            m->by_name[m->ntensors++] = &m->files[i]->tensors[j];
    qsort(m->by_name, m->ntensors, sizeof *m->by_name, by_name_cmp);
    for (size_t i = 1; i < m->ntensors; i++)
        if (strcmp(m->by_name[i - 1]->name, m->by_name[i]->name) == 0)
            return dora_errf(err, "tensor '%s' is stored twice, in '%s' and in '%s'",
                             m->by_name[i]->name, m->by_name[i - 1]->file, m->by_name[i]->file);
    return 0;
}

static int index_names(dora_model *m, dora_err *err)
{
    return index_files(m, m->nfiles, err);
}

/* A shard name from an index must be a plain file name in the index's folder. */
static int shard_name_ok(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strchr(s, '\\') == NULL &&
           strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

typedef struct named_pos {
    const char *s;
    size_t pos;
} named_pos;

static int named_pos_cmp(const void *pa, const void *pb)
{
    const named_pos *a = pa, *b = pb;
    int c = strcmp(a->s, b->s);
    return c ? c : (a->pos > b->pos) - (a->pos < b->pos);
}

/* Keep the first occurrence of each string of V[0..n), in their order; returns
 * the count kept, (size_t)-1 when out of memory. O(n log n): an index may name
 * 10^5 shards. */
static size_t distinct_in_order(const char **v, size_t n)
{
    named_pos *np = malloc((n ? n : 1) * sizeof *np);
    unsigned char *keep = calloc(n ? n : 1, 1);
    if (!np || !keep) {
        free(np);
        free(keep);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++)
        np[i] = (named_pos){v[i], i};
    qsort(np, n, sizeof *np, named_pos_cmp);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(np[i - 1].s, np[i].s) != 0)
            keep[np[i].pos] = 1; /* the lowest position of its run */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (keep[i])
            v[k++] = v[i];
    free(np);
    free(keep);
    return k;
}

static int open_sharded(dora_model *m, const char *index_path, dora_err *err)
{
    char *text = NULL;
    size_t len = 0;
    if (util_read_file(index_path, INDEX_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return dora_errf(err, "'%s': not valid JSON: %s (line %d, column %d)", index_path, jerr.text,
                         jerr.line, jerr.column);
    int rc = -1;
    char *dir = util_dirname(index_path);
    const char **shard_names = NULL;
    size_t nshards = 0, fcap = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!dir) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (!json_is_object(root) || !json_is_object(wm)) {
        dora_errf(err, "'%s': no 'weight_map' object", index_path);
        goto done;
    }
    size_t nmap = json_object_size(wm);
    shard_names = calloc(nmap ? nmap : 1, sizeof *shard_names);
    if (!shard_names) {
        dora_errf(err, "out of memory");
        goto done;
    }
    const char *tname;
    json_t *val;
    size_t nnames = 0;
    json_object_foreach(wm, tname, val)
    {
        if (!json_is_string(val) || !shard_name_ok(json_string_value(val))) {
            dora_errf(err, "'%s': tensor '%s': shard must be a file name in the same folder",
                      index_path, tname);
            goto done;
        }
        shard_names[nnames++] = json_string_value(val);
    }
    nshards = distinct_in_order(shard_names, nnames);
    if (nshards == (size_t)-1) {
        dora_errf(err, "out of memory");
        goto done;
    }
    if (nshards == 0) {
        dora_errf(err, "'%s': 'weight_map' is empty", index_path);
        goto done;
    }
    for (size_t k = 0; k < nshards; k++) {
        char *sp = util_join(dir, shard_names[k]);
        if (!sp) {
            dora_errf(err, "out of memory");
            goto done;
        }
        if (!util_is_file(sp)) {
            dora_err_missing(err, "'%s': shard '%s' listed in the index is missing", index_path,
                             sp);
            free(sp);
            goto done;
        }
        st_file *f;
        int r = util_has_suffix(sp, ".safetensors") ? st_open(&f, sp, err) : pt_open(&f, sp, err);
        free(sp);
        if (r != 0)
            goto done;
        if (add_file(m, f, &fcap, err) != 0) {
            st_close(f);
            goto done;
        }
        /* Every tensor of the shard must be mapped to this shard. */
        for (size_t j = 0; j < f->ntensors; j++) {
            json_t *where = json_object_get(wm, f->tensors[j].name);
            if (!where || strcmp(json_string_value(where), shard_names[k]) != 0) {
                dora_errf(err, "'%s': tensor '%s' is in shard '%s' but the index %s", index_path,
                          f->tensors[j].name, f->path,
                          where ? "maps it to another shard" : "does not list it");
                goto done;
            }
        }
    }
    if (index_names(m, err) != 0)
        goto done;
    /* ...and every tensor of the index must be in its shard. */
    json_object_foreach(wm, tname, val)
    {
        if (!dora_model_find(m, tname)) {
            dora_errf(err, "'%s': tensor '%s' is listed for shard '%s', which does not hold it",
                      index_path, tname, json_string_value(val));
            goto done;
        }
    }
    rc = 0;
done:
    free(shard_names);
    free(dir);
    json_decref(root);
    return rc;
}

/* The torch files PATHS[0..N-1] opened into M's files, in order; PATHS freed. */
static int open_torch_files(dora_model *m, char **paths, size_t n, dora_err *err)
{
    size_t fcap = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        st_file *f;
        if (rc == 0 && (rc = pt_open(&f, paths[i], err)) == 0 &&
            (rc = add_file(m, f, &fcap, err)) != 0)
            st_close(f);
        free(paths[i]);
    }
    free(paths);
    return rc;
}

/* torchtune's hf_model_NNNN_E.pt: every shard of the epoch, as one model. */
static int open_tune_shards(dora_model *m, const char *path, dora_err *err)
{
    char **paths;
    size_t n;
    if (dora_tune_shards(path, &paths, &n, err) != 0)
        return -1;
    int rc = open_torch_files(m, paths, n, err);
    if (rc == 0 && n > 1)
        m->kind = DORA_MODEL_SHARDED;
    return rc == 0 ? index_names(m, err) : -1;
}

/* Meta's consolidated.00.pth with .01 ... beside it: every shard opened (and
 * kept, so that a change to any is noticed), joined into shard 0's tensors,
 * which alone are the model's names. */
static int open_meta_mp(dora_model *m, const char *path, dora_err *err)
{
    char *dir = util_dirname(path), **paths = NULL;
    size_t n = 0;
    if (!dir || dora_meta_mp_shards(dir, &paths, &n, err) != 0) {
        int oom = !dir;
        free(dir);
        return oom ? dora_errf(err, "out of memory") : -1;
    }
    free(dir);
    int rc = open_torch_files(m, paths, n, err);
    if (rc == 0 && n > 1) {
        m->kind = DORA_MODEL_SHARDED;
        rc = dora_meta_mp_join(m->files, m->nfiles, err);
    }
    return rc == 0 ? index_files(m, 1, err) : -1;
}

/* DeepSpeed's model states under ZeRO stage 3 hold the parameters as empty
 * placeholders (the weights are partitioned in the optimizer files): an error
 * that names the script which rebuilds them. */
static int check_zero_states(const dora_model *m, dora_err *err)
{
    size_t held = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        held += strncmp(m->by_name[i]->name, "module.", 7) == 0 && m->by_name[i]->numel > 0;
    if (held)
        return 0;
    return dora_errf(err, "'%s': the DeepSpeed model states hold no weights under 'module' "
                          "(ZeRO stage 3 partitions them): rebuild them with the "
                          "zero_to_fp32.py script DeepSpeed saves beside the checkpoint",
                     m->path);
}

int dora_model_open(dora_model **out, const char *path, dora_err *err)
{
    *out = NULL;
    dora_model_kind kind;
    char *mpath = NULL;
    if (dora_model_probe(path, &kind, &mpath, err) != 0)
        return -1;
    switch (kind) {
    case DORA_MODEL_NONE:
        free(mpath);
        return dora_err_missing(err, "'%s': no model here (expected a .safetensors, .bin or .pt file, or a "
                              "folder with model.safetensors, " INDEX_NAME ", pytorch_model.bin "
                              "or " TORCH_INDEX_NAME ")",
                         path);
    case DORA_MODEL_ADAPTER:
        if (util_is_file(path)) /* a kohya / LyCORIS file: its own tensors (adapter.h) */
            break;
        dora_errf(err, "'%s' belongs to an adapter checkpoint (LoRA/DoRA), not a full model: a "
                       "base model, and each checkpoint of a full fine-tuning run, must hold full "
                       "weights",
                  mpath ? mpath : path);
        free(mpath);
        return -1;
    default:
        break;
    }
    dora_model *m = calloc(1, sizeof *m);
    if (!m) {
        free(mpath);
        return dora_errf(err, "out of memory");
    }
    m->path = mpath;
    m->kind = kind;
    int rc;
    char *bn = util_basename(mpath);
    int64_t shard, epoch;
    int tune = bn && dora_tune_shard_name(bn, &shard, &epoch) == 1;
    free(bn);
    if (util_has_suffix(mpath, ".index.json")) { /* safetensors or PyTorch shards */
        m->kind = DORA_MODEL_SHARDED;
        rc = open_sharded(m, mpath, err);
    } else if (tune) {
        rc = open_tune_shards(m, mpath, err);
    } else if (util_has_suffix(mpath, "/consolidated.00.pth")) {
        rc = open_meta_mp(m, mpath, err);
    } else {
        st_file *f;
        size_t fcap = 0;
        rc = kind == DORA_MODEL_TORCH ? pt_open(&f, mpath, err) : st_open(&f, mpath, err);
        if (rc == 0 && (rc = add_file(m, f, &fcap, err)) != 0)
            st_close(f);
        if (rc == 0)
            rc = index_names(m, err);
        if (rc == 0 && util_has_suffix(mpath, "/mp_rank_00_model_states.pt"))
            rc = check_zero_states(m, err);
    }
    if (rc != 0) {
        dora_model_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

const dora_tensor *dora_model_find(const dora_model *m, const char *name)
{
    size_t lo = 0, hi = m->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, m->by_name[mid]->name);
        if (c == 0)
            return m->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

void dora_model_close(dora_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfiles; i++)
        st_close(m->files[i]);
    free(m->files);
    free(m->by_name);
    free(m->path);
    free(m);
}

int dora_model_cmp_bytes(const dora_model *a, const dora_model *b, dora_err *err)
{
    if (a->kind != b->kind || a->nfiles != b->nfiles)
        return 0;
    for (size_t i = 0; i < a->nfiles; i++)
        if (a->files[i]->size != b->files[i]->size)
            return 0;
    for (size_t i = 0; i < a->nfiles; i++) {
        const st_file *fa = a->files[i], *fb = b->files[i];
        const void *fault;
        int d = dora_guard_differ(fa->map, fb->map, (size_t)fa->size, &fault);
        if (d < 0) {
            /* the fault address names the file that shrank underneath */
            const unsigned char *p = fault;
            const st_file *f = p && fb->map && p >= fb->map && p < fb->map + fb->size ? fb : fa;
            if (!fault)
                return dora_errf(err, "cannot install the SIGBUS guard to compare '%s' with "
                                      "'%s'",
                                 fa->path, fb->path);
            return dora_errf(err, "'%s' changed while it was compared with '%s' (truncated?)",
                             f->path, f == fa ? fb->path : fa->path);
        }
        if (d)
            return 0;
    }
    return 1;
}
