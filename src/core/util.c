/* util.c - paths, whole-file reads, strict numbers, and outputs written
 * through private temporaries; see util.h. */
#define _DEFAULT_SOURCE /* mkdtemp, realpath, gethostname with POSIX 2008 */
#define _POSIX_C_SOURCE 200809L
#include "core/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

int util_has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int util_append_item(char **s, const char *add)
{
    size_t had = *s ? strlen(*s) : 0, n = strlen(add);
    char *p = realloc(*s, had + n + 3);
    if (!p)
        return -1;
    snprintf(p + had, n + 3, "%s%s", had ? "; " : "", add);
    *s = p;
    return 0;
}

char *util_join(const char *dir, const char *name)
{
    size_t n = strlen(dir), m = strlen(name);
    char *p = malloc(n + m + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, n);
    size_t k = n;
    if (n == 0 || dir[n - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, m + 1);
    return p;
}

char *util_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    size_t n = (size_t)(slash - path);
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, path, n);
        p[n] = '\0';
    }
    return p;
}

char *util_basename(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    char *p = malloc(n - b + 1);
    if (p) {
        memcpy(p, path + b, n - b);
        p[n - b] = '\0';
    }
    return p;
}

int util_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int util_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int util_open_regular(const char *path, dora_err *err)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return dora_errf(err, "'%s': cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int dir = S_ISDIR(sb.st_mode);
        close(fd);
        return dora_errf(err, "'%s': not a regular file (%s)", path,
                         dir ? "a folder" : "a FIFO, socket or device");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int util_read_file(const char *path, size_t max, char **buf, size_t *len, dora_err *err)
{
    *buf = NULL;
    *len = 0;
    int fd = util_open_regular(path, err);
    if (fd < 0)
        return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return dora_errf(err, "'%s': not a readable regular file", path);
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return dora_errf(err, "'%s': %lld bytes, over the limit of %zu for this kind of file", path,
                         (long long)sb.st_size, max);
    }
    size_t n = (size_t)sb.st_size;
    char *p = malloc(n + 1);
    if (!p) {
        close(fd);
        return dora_errf(err, "'%s': out of memory", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            free(p);
            close(fd);
            return dora_errf(err, "'%s': read failed: %s", path, r == 0 ? "file shrank" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    p[n] = '\0';
    *buf = p;
    *len = n;
    return 0;
}

int util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int util_parse_digits(const char *s, size_t n, int64_t *out)
{
    char buf[24];
    if (n == 0 || n > 19)
        return -1; /* 19 digits hold every int64; more do not fit */
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return util_parse_i64(buf, 0, INT64_MAX, out);
}

void util_populate(void *p, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    const uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)p + n) & ~(uintptr_t)4095;
    if (p && e > a)
        madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)n;
#endif
}

void util_map_hint(void *map, size_t n)
{
#ifdef MADV_HUGEPAGE
    if (map && n)
        madvise(map, n, MADV_HUGEPAGE);
#else
    (void)map;
    (void)n;
#endif
}

uint64_t util_fnv1a64(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int util_parse_size(const char *s, int64_t *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    int shift = 0;
    switch (*end) {
    case '\0': break;
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    default: return -1;
    }
    if (*end && end[1] && strcmp(end + 1, "iB") != 0 && strcmp(end + 1, "B") != 0)
        return -1;
    if (errno != 0 || v < 1 || v > (INT64_MAX >> shift))
        return -1;
    *out = (int64_t)v << shift;
    return 0;
}

int util_natural_cmp(const char *a0, const char *b0)
{
    const char *a = a0, *b = b0;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            const char *sa = a, *sb = b;
            while (*sa == '0' && isdigit((unsigned char)sa[1]))
                sa++;
            while (*sb == '0' && isdigit((unsigned char)sb[1]))
                sb++;
            const char *ea = sa, *eb = sb;
            while (isdigit((unsigned char)*ea))
                ea++;
            while (isdigit((unsigned char)*eb))
                eb++;
            if (ea - sa != eb - sb)
                return (ea - sa) < (eb - sb) ? -1 : 1;
            int c = strncmp(sa, sb, (size_t)(ea - sa));
            if (c != 0)
                return c;
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b)
            return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    if (*a || *b)
        return *a ? 1 : -1;
    return strcmp(a0, b0); /* equal numbers written differently ("01" and "1") */
}

/* ---- outputs ------------------------------------------------------------- */

#define OUT_SLOTS 32
#define OUT_BASE_MAX 100 /* bytes of the output's name kept in the folder's name */
#define OUT_FILE "out"

/* The signal table: a slot is read by the handler only while used is 1, and
 * its strings are written before used is set. */
static volatile sig_atomic_t out_used[OUT_SLOTS];
static char out_tmp[OUT_SLOTS][PATH_MAX];
static char out_dir[OUT_SLOTS][PATH_MAX];
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

void util_out_remove_all(void)
{
    for (int i = 0; i < OUT_SLOTS; i++)
        if (out_used[i]) {
            unlink(out_tmp[i]);
            rmdir(out_dir[i]);
        }
}

static int out_register(const char *tmp, const char *dir)
{
    if (strlen(tmp) >= PATH_MAX || strlen(dir) >= PATH_MAX)
        return -1;
    int slot = -1;
    pthread_mutex_lock(&out_lock);
    for (int i = 0; i < OUT_SLOTS && slot < 0; i++)
        if (!out_used[i]) {
            memcpy(out_tmp[i], tmp, strlen(tmp) + 1);
            memcpy(out_dir[i], dir, strlen(dir) + 1);
            out_used[i] = 1;
            slot = i;
        }
    pthread_mutex_unlock(&out_lock);
    return slot;
}

static void out_unregister(int slot)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&out_lock);
    out_used[slot] = 0;
    pthread_mutex_unlock(&out_lock);
}

/* This host's name as it goes into a folder name: [A-Za-z0-9.] only. */
static void host_tag(char *h, size_t n)
{
    if (gethostname(h, n) != 0)
        h[0] = '\0';
    h[n - 1] = '\0';
    if (strlen(h) > 64)
        h[64] = '\0';
    for (char *p = h; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.')
            *p = '_';
    if (!h[0])
        snprintf(h, n, "host");
}

/* ".BASE.dora-tmp-HOST-" for PATH, newly allocated; *dir gets PATH's folder. */
static char *stale_prefix(const char *path, char **dir)
{
    char host[256];
    host_tag(host, sizeof host);
    char *base = util_basename(path);
    *dir = util_dirname(path);
    char *pre = NULL;
    if (base && *dir) {
        size_t n = strlen(base) + strlen(host) + 32;
        if ((pre = malloc(n)))
            snprintf(pre, n, ".%.*s.dora-tmp-%s-", OUT_BASE_MAX, base, host);
    }
    free(base);
    if (!pre) {
        free(*dir);
        *dir = NULL;
    }
    return pre;
}

void util_out_clean_stale(const char *path)
{
    char *dir = NULL, *pre = stale_prefix(path, &dir);
    if (!pre)
        return;
    size_t np = strlen(pre);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d && dfd >= 0)
        close(dfd);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const char *name = e->d_name;
        if (strncmp(name, pre, np) != 0)
            continue;
        /* the rest must be PID-XXXXXX exactly */
        const char *r = name + np, *q = r;
        while (isdigit((unsigned char)*q))
            q++;
        if (q == r || q - r > 10 || *q != '-' || strlen(q + 1) != 6)
            continue;
        int ok6 = 1;
        for (const char *c = q + 1; *c; c++)
            ok6 &= isalnum((unsigned char)*c) != 0;
        long pid = strtol(r, NULL, 10);
        if (!ok6 || pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or not ours to ask about: leave it */
        struct stat sb, sb2;
        if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode) ||
            sb.st_uid != geteuid())
            continue;
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (fstat(fd, &sb2) != 0 || sb2.st_dev != sb.st_dev || sb2.st_ino != sb.st_ino) {
            close(fd);
            continue;
        }
        /* only "out" (a file or a symlink, never followed) may be in it */
        int other = 0, have_out = 0;
        int fd2 = dup(fd);
        DIR *in = fd2 >= 0 ? fdopendir(fd2) : NULL;
        if (!in) {
            if (fd2 >= 0)
                close(fd2);
            other = 1;
        }
        struct dirent *f;
        while (in && (f = readdir(in))) {
            if (strcmp(f->d_name, ".") == 0 || strcmp(f->d_name, "..") == 0)
                continue;
            struct stat fb;
            if (strcmp(f->d_name, OUT_FILE) == 0 &&
                fstatat(fd, OUT_FILE, &fb, AT_SYMLINK_NOFOLLOW) == 0 &&
                (S_ISREG(fb.st_mode) || S_ISLNK(fb.st_mode)))
                have_out = 1;
            else
                other = 1;
        }
        if (in)
            closedir(in);
        if (!other) {
            if (have_out)
                unlinkat(fd, OUT_FILE, 0);
            unlinkat(dfd, name, AT_REMOVEDIR);
        }
        close(fd);
    }
    if (d)
        closedir(d);
    free(pre);
    free(dir);
}

int util_out_begin(util_out *o, const char *path, dora_err *err)
{
    memset(o, 0, sizeof *o);
    o->slot = -1;
    util_out_clean_stale(path);
    char *dir = NULL, *pre = stale_prefix(path, &dir);
    if (!pre)
        return dora_errf(err, "out of memory");
    size_t n = strlen(dir) + strlen(pre) + 40;
    o->dir = malloc(n);
    o->path = strdup(path);
    if (o->dir)
        snprintf(o->dir, n, "%s/%s%ld-XXXXXX", dir, pre, (long)getpid());
    free(pre);
    free(dir);
    if (!o->dir || !o->path) {
        util_out_abort(o);
        return dora_errf(err, "out of memory");
    }
    if (!mkdtemp(o->dir)) {
        int e = errno;
        free(o->dir);
        o->dir = NULL;
        util_out_abort(o);
        return dora_errf(err, "'%s': cannot create a temporary folder beside it: %s", path,
                         strerror(e));
    }
    if (!(o->tmp = util_join(o->dir, OUT_FILE))) {
        util_out_abort(o);
        return dora_errf(err, "out of memory");
    }
    o->slot = out_register(o->tmp, o->dir);
    if (o->slot < 0) {
        util_out_abort(o);
        return dora_errf(err, "'%s': too many outputs at once, or path too long", path);
    }
    return 0;
}

int util_out_open(const util_out *o, dora_err *err)
{
    int fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return dora_errf(err, "'%s': cannot create the temporary '%s': %s", o->path, o->tmp,
                         strerror(errno));
    return fd;
}

int util_write_all(int fd, const void *buf, size_t len, size_t *done)
{
    const char *p = buf;
    size_t off = 0;
    int e = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            e = w < 0 ? errno : ENOSPC;
            break;
        }
        off += (size_t)w;
    }
    if (done)
        *done = off;
    return e;
}

int util_out_write(const util_out *o, const void *buf, size_t len, dora_err *err)
{
    int fd = util_out_open(o, err);
    if (fd < 0)
        return -1;
    size_t off;
    int e = util_write_all(fd, buf, len, &off);
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (e)
        return dora_errf(err, "'%s': cannot write %zu bytes (at byte %zu): %s", o->path, len, off,
                         strerror(e));
    return 0;
}

static void out_release(util_out *o)
{
    out_unregister(o->slot);
    free(o->path);
    free(o->dir);
    free(o->tmp);
    memset(o, 0, sizeof *o);
    o->slot = -1;
}

void util_out_abort(util_out *o)
{
    if (o->tmp)
        unlink(o->tmp);
    if (o->dir)
        rmdir(o->dir);
    out_release(o);
}

int util_out_commit(util_out *o, dora_err *err)
{
    if (rename(o->tmp, o->path) != 0) {
        int e = errno;
        dora_errf(err, "cannot rename '%s' to '%s': %s", o->tmp, o->path, strerror(e));
        util_out_abort(o);
        return -1;
    }
    rmdir(o->dir);
    char *dir = util_dirname(o->path);
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) { /* the rename itself on disk */
        fsync(fd);
        close(fd);
    }
    free(dir);
    out_release(o);
    return 0;
}

/* ---- resolving paths and outputs -------------------------------------------- */

char *util_path_clean(const char *path)
{
    size_t n = strlen(path);
    char *out = malloc(n + 2);
    size_t *starts = malloc((n + 1) * sizeof *starts);
    if (!out || !starts) {
        free(out);
        free(starts);
        return NULL;
    }
    int abs = path[0] == '/';
    size_t len = 0, depth = 0, up = 0; /* depth: kept components; up: the leading ".." */
    if (abs)
        out[len++] = '/';
    for (const char *s = path; *s;) {
        while (*s == '/')
            s++;
        if (!*s)
            break;
        const char *e = strchr(s, '/');
        size_t m = e ? (size_t)(e - s) : strlen(s);
        int dot = m == 1 && s[0] == '.', dotdot = m == 2 && s[0] == '.' && s[1] == '.';
        if (dotdot && depth > up) { /* "name/.." */
            len = starts[--depth];
            if (len > (size_t)abs)
                len--; /* the '/' before it */
        } else if (!dot && !(dotdot && abs)) { /* "/.." is "/" */
            if (len > (size_t)abs)
                out[len++] = '/';
            starts[depth++] = len;
            up += dotdot;
            memcpy(out + len, s, m);
            len += m;
        }
        s += m;
    }
    if (len == 0)
        out[len++] = '.';
    out[len] = '\0';
    free(starts);
    return out;
}

char *util_resolve_output(const char *path)
{
    char *dir = util_dirname(path), *base = util_basename(path);
    if (!dir || !base) {
        free(dir);
        free(base);
        return NULL;
    }
    /* the longest prefix of DIR that exists, resolved; the rest kept as written */
    char *head = strdup(dir), *real = NULL;
    size_t cut = head ? strlen(head) : 0;
    while (head) {
        head[cut] = '\0';
        if ((real = realpath(cut ? head : dir[0] == '/' ? "/" : ".", NULL)) || cut == 0)
            break;
        while (cut > 0 && head[cut - 1] != '/')
            cut--;
        while (cut > 0 && head[cut - 1] == '/')
            cut--;
    }
    const char *rest = dir + (head ? cut : 0);
    char *out = NULL;
    if (real) {
        size_t n = strlen(real) + strlen(rest) + strlen(base) + 3;
        char *joined = malloc(n);
        if (joined) {
            snprintf(joined, n, "%s/%s/%s", real, rest, base);
            out = util_path_clean(joined); /* "//", "." and "name/.." of the appended part */
            free(joined);
        }
    }
    free(real);
    free(head);
    free(dir);
    free(base);
    return out;
}

int util_same_output(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
        return 1;
    char *ra = util_resolve_output(a), *rb = util_resolve_output(b);
    int same = ra && rb ? strcmp(ra, rb) == 0 : strcmp(a, b) == 0;
    free(ra);
    free(rb);
    return same;
}
