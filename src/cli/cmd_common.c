/* cmd_common.c - pieces the subcommands share: the recorded command line,
 * NAME=RUN arguments, removing temporary outputs on a signal, and the rule
 * that an output never replaces an input or a file this tool did not write. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "dora/align.h"
#include "dora/run.h"
#include "dora/filter.h"
#include "dora/h5out.h"
#include "dora/tidy.h"
#include "dora/stats.h"
#include "core/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *cli_command_line(int argc, char **argv)
{
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "-_=./,:+@%";
    size_t n = strlen("dora-analyze") + 1;
    for (int i = 0; i < argc; i++)
        n += 4 * strlen(argv[i]) + 3;
    char *s = malloc(n);
    if (!s)
        return NULL;
    char *q = s + sprintf(s, "dora-analyze");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        *q++ = ' ';
        if (a[0] && strspn(a, safe) == strlen(a)) {
            q += sprintf(q, "%s", a);
            continue;
        }
        *q++ = '\'';
        for (; *a; a++) {
            if (*a == '\'')
                q += sprintf(q, "'\\''");
            else
                *q++ = *a;
        }
        *q++ = '\'';
    }
    *q = '\0';
    return s;
}

int cli_split_run_arg(const char *arg, char **name, const char **path)
{
    const char *eq = strchr(arg, '=');
    if (eq && !memchr(arg, '/', (size_t)(eq - arg)) && !util_is_file(arg) && !util_is_dir(arg)) {
        *name = strndup(arg, (size_t)(eq - arg));
        *path = eq + 1;
    } else {
        *name = util_basename(arg);
        *path = arg;
        if (*name && util_is_file(arg) && util_has_suffix(*name, ".safetensors"))
            (*name)[strlen(*name) - strlen(".safetensors")] = '\0';
    }
    return *name ? 0 : -1;
}

static void on_signal(int sig)
{
    util_out_remove_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

void cli_guard_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++)
            sigaddset(&sa.sa_mask, sigs[k]); /* one handler at a time */
        struct sigaction old;
        /* a signal ignored by whoever started us (nohup) stays ignored */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ---- what analyze and spectrum share ------------------------------------ */

int cli_compile_filter(const char *cmd, dora_filter *f, const char *modules_re,
                       const char *exclude_re)
{
    dora_err err;
    int r = dora_filter_compile(f, modules_re, exclude_re, &err);
    if (r == 0)
        return EXIT_OK;
    return cli_usage_error(cmd, "%s %s", r == DORA_FILTER_BAD_INCLUDE ? "--modules" : "--exclude",
                           err.msg);
}

int cli_parse_runs(const char *cmd, size_t n, char *const *args, char **names, const char **paths)
{
    for (size_t i = 0; i < n; i++) {
        if (cli_split_run_arg(args[i], &names[i], &paths[i]) != 0) {
            dora_err err;
            dora_errf(&err, "out of memory");
            return cli_fail(&err);
        }
        if (!dora_run_name_ok(names[i]))
            return cli_usage_error(cmd, "'%s': a run name must be non-empty, not '.' or '..', "
                                        "and without '/'",
                                   args[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return cli_usage_error(cmd, "two runs are named '%s'; name them with NAME=RUN",
                                       names[i]);
    }
    return EXIT_OK;
}

int cli_check_output_dir(const char *out)
{
    char *dir = util_dirname(out);
    int ok = dir && util_is_dir(dir);
    dora_err err;
    if (!ok)
        dora_errf(&err, "'%s': the output folder '%s' does not exist", out, dir ? dir : "?");
    free(dir);
    return ok ? EXIT_OK : cli_fail(&err);
}

int cli_check_outputs(const char *cmd, const char *out, const char *csv, const char *base_path,
                      const char *const *paths, size_t n, int force)
{
    cli_inputs inputs = {0};
    if (base_path)
        cli_inputs_add(&inputs, base_path);
    for (size_t i = 0; i < n; i++)
        cli_inputs_add(&inputs, paths[i]);
    int status;
    if (inputs.oom) {
        dora_err err;
        dora_errf(&err, "out of memory");
        status = cli_fail(&err);
    } else if ((status = cli_check_output(cmd, out, CLI_OUT_H5, &inputs, force)) == EXIT_OK &&
               csv)
        status = cli_check_output(cmd, csv, CLI_OUT_CSV, &inputs, force);
    cli_inputs_release(&inputs);
    return status;
}

void cli_note(const char *run, const char *msg)
{
    if (run)
        fprintf(stderr, "dora-analyze: note: run '%s': %s\n", run, msg);
    else
        fprintf(stderr, "dora-analyze: note: %s\n", msg);
}

/* ---- inputs ------------------------------------------------------------- */

static void add_id(cli_inputs *in, const char *path, const struct stat *sb)
{
    for (size_t i = 0; i < in->n; i++)
        if (in->v[i].dev == (unsigned long long)sb->st_dev &&
            in->v[i].ino == (unsigned long long)sb->st_ino)
            return;
    if (in->n == in->cap) {
        size_t nc = in->cap ? 2 * in->cap : 32;
        cli_input *q = realloc(in->v, nc * sizeof *q);
        if (!q) {
            in->oom = 1;
            return;
        }
        in->v = q;
        in->cap = nc;
    }
    char *p = strdup(path);
    if (!p) {
        in->oom = 1;
        return;
    }
    in->v[in->n++] = (cli_input){(unsigned long long)sb->st_dev, (unsigned long long)sb->st_ino, p};
}

static int model_file_name(const char *name)
{
    static const char *const sfx[] = {".safetensors", ".json", ".bin", ".pt", ".pth", ".ckpt",
                                      ".h5"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++)
        if (util_has_suffix(name, sfx[i]))
            return 1;
    return 0;
}

/* The model files of folder DIR, and (DEPTH > 0) those of its subfolders. */
static void add_folder(cli_inputs *in, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = util_join(dir, e->d_name);
        struct stat sb;
        if (!p) {
            in->oom = 1;
            break;
        }
        if (stat(p, &sb) == 0) {
            if (S_ISREG(sb.st_mode) && model_file_name(e->d_name))
                add_id(in, p, &sb);
            else if (S_ISDIR(sb.st_mode) && depth > 0)
                add_folder(in, p, depth - 1);
        }
        free(p);
    }
    closedir(d);
}

void cli_inputs_add(cli_inputs *in, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode))
        add_folder(in, path, 2); /* checkpoint-STEP/global_stepSTEP/ (DeepSpeed) */
    else
        add_id(in, path, &sb);
}

void cli_inputs_release(cli_inputs *in)
{
    for (size_t i = 0; i < in->n; i++)
        free(in->v[i].path);
    free(in->v);
    memset(in, 0, sizeof *in);
}

const char *cli_inputs_find(const cli_inputs *in, const char *path)
{
    struct stat sb;
    if (!in || stat(path, &sb) != 0)
        return NULL;
    for (size_t i = 0; i < in->n; i++)
        if (in->v[i].dev == (unsigned long long)sb.st_dev &&
            in->v[i].ino == (unsigned long long)sb.st_ino)
            return in->v[i].path;
    return NULL;
}

/* ---- outputs ------------------------------------------------------------ */

/* The first bytes of regular file PATH (up to N - 1, NUL-terminated); -1 if
 * it cannot be read. */
static ssize_t head_of(const char *path, char *buf, size_t n)
{
    int fd = util_open_regular(path, NULL);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < n - 1) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

int cli_output_is_ours(const char *path, cli_out_kind kind)
{
    char head[4096];
    if (kind == CLI_OUT_H5)
        return h5o_is_results_file(path);
    ssize_t n = head_of(path, head, sizeof head);
    if (n < 0)
        return 0;
    switch (kind) {
    case CLI_OUT_CSV: {
        return strncmp(head, DORA_TIDY_CSV_HEADER, strlen(DORA_TIDY_CSV_HEADER)) == 0;
    }
    case CLI_OUT_JOURNAL:
        return n >= 8 && memcmp(head, "DORAJNL1", 8) == 0;
    case CLI_OUT_JSON:
        return head[0] == '{' && strstr(head, "\"tool\": \"dora-analyze ") != NULL;
    case CLI_OUT_JUNIT:
        return strncmp(head, "<?xml", 5) == 0 &&
               strstr(head, "<testsuites name=\"dora-analyze batch ") != NULL;
    default:
        return 0;
    }
}

static const char *kind_name(cli_out_kind kind)
{
    switch (kind) {
    case CLI_OUT_H5: return "an HDF5 results file of dora-analyze";
    case CLI_OUT_CSV: return "a CSV table of dora-analyze";
    case CLI_OUT_JOURNAL: return "a dora-analyze journal";
    case CLI_OUT_JSON: return "a JSON report of dora-analyze";
    default: return "a JUnit report of dora-analyze";
    }
}

int cli_check_output(const char *cmd, const char *path, cli_out_kind kind, const cli_inputs *in,
                     int force)
{
    const char *same = cli_inputs_find(in, path);
    if (same)
        return cli_usage_error(cmd, "refusing to write '%s': it is the input '%s' (the same file)",
                               path, same);
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return EXIT_OK; /* a new file */
    struct stat tb;
    if (stat(path, &tb) != 0) /* a dangling symlink: the rename replaces the link */
        return EXIT_OK;
    if (!S_ISREG(tb.st_mode))
        return cli_usage_error(cmd, "refusing to write '%s': it exists and is not a regular file",
                               path);
    if (!force && !cli_output_is_ours(path, kind))
        return cli_usage_error(cmd, "refusing to replace '%s': it exists and is not %s (--force "
                                    "replaces it)",
                               path, kind_name(kind));
    return EXIT_OK;
}

int cli_parse_lora_mem(const char *cmd, const char *arg, uint64_t *bytes)
{
    int64_t v;
    if (util_parse_size(arg, &v) != 0 || v < CLI_LORA_MEM_MIN)
        return cli_usage_error(cmd, "--mem wants a size of at least 1M, such as 64M or 2G, not '%s'",
                               arg);
    *bytes = (uint64_t)v;
    return -1;
}

int cli_add_rename(const char *cmd, const char *arg, const char **renames, size_t *n)
{
    dora_err e;
    if (*n == DORA_MAX_RENAMES)
        return cli_usage_error(cmd, "at most %d --rename options", DORA_MAX_RENAMES);
    if (dora_rename_check(arg, &e) != 0)
        return cli_usage_error(cmd, "--rename %s", e.msg);
    renames[(*n)++] = arg;
    return -1;
}

int cli_check_transpose(const char *cmd, const char *arg)
{
    dora_filter f;
    dora_err e;
    if (dora_filter_compile(&f, arg, NULL, &e) != 0)
        return cli_usage_error(cmd, "--transpose %s", e.msg);
    dora_filter_free(&f);
    return -1;
}

int cli_parse_bootstrap(const char *cmd, const char *arg, long long *b)
{
    int64_t v;
    if (util_parse_i64(arg, DORA_BOOTSTRAP_MIN, DORA_BOOTSTRAP_MAX, &v) != 0)
        return cli_usage_error(cmd, "--bootstrap wants a whole number of replicates from %d to %d, "
                                    "not '%s'",
                               DORA_BOOTSTRAP_MIN, DORA_BOOTSTRAP_MAX, arg);
    *b = (long long)v;
    return -1;
}
