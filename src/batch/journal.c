/* journal.c - the append-only journal of finished units; see include/dora/batch.h. */
#define _XOPEN_SOURCE 700 /* fdatasync, strdup, with POSIX 2008 */
#include "dora/batch.h"
#include "batch/common.h"
#include "results/bytes.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOURNAL_MAX_BYTES ((size_t)8 << 30)
#define RECORD_MAX_BYTES ((uint64_t)1 << 31)

static const char journal_magic[8] = {'D', 'O', 'R', 'A', 'J', 'N', 'L', '1'};
enum { REC_HEADER = 1, REC_UNIT = 2 };

struct dora_journal {
    int fd;
    char *path;
};

/* A whole record (24-byte head + payload) appended to B. */
static void put_record(wbuf *b, uint32_t type, const unsigned char *payload, size_t n)
{
    wire_put_u32(b, type);
    wire_put_u32(b, 0);
    wire_put_u64(b, n);
    wire_put_u64(b, util_fnv1a64(payload, n));
    wire_put_bytes(b, payload, n);
}

char *dora_journal_path(const char *output)
{
    return batch_xprintf("%s.journal", output);
}

char *dora_shard_path(const char *output, unsigned k, unsigned n)
{
    size_t len = strlen(output);
    if (util_has_suffix(output, ".h5") && len > 3)
        return batch_xprintf("%.*s.shard-%u-of-%u.h5", (int)(len - 3), output, k, n);
    return batch_xprintf("%s.shard-%u-of-%u", output, k, n);
}

void dora_journal_results_free(dora_result *units, size_t n)
{
    for (size_t i = 0; units && i < n; i++)
        dora_result_release(&units[i]);
    free(units);
}

int dora_journal_read(const char *path, char **header, dora_result **units, size_t *nunits,
                      uint64_t *tail_bytes, dora_err *err)
{
    *header = NULL;
    *units = NULL;
    *nunits = 0;
    if (tail_bytes)
        *tail_bytes = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        return dora_errf(err, "'%s': %s", path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0;
    if (util_read_file(path, JOURNAL_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    const unsigned char *p = (const unsigned char *)text;
    if (len < sizeof journal_magic || memcmp(p, journal_magic, sizeof journal_magic) != 0) {
        free(text);
        return dora_errf(err, "'%s': not a dora-analyze journal", path);
    }
    size_t off = sizeof journal_magic, cap = 0;
    int rc = -1;
    while (off < len) {
        rbuf b = {p, len, off, 0};
        uint32_t type = wire_get_u32(&b);
        wire_get_u32(&b);
        uint64_t n = wire_get_u64(&b), sum = wire_get_u64(&b);
        if (b.bad || n > RECORD_MAX_BYTES || n > len - b.off ||
            util_fnv1a64(p + b.off, (size_t)n) != sum || (type != REC_HEADER && type != REC_UNIT)) {
            if (!*header) {
                dora_errf(err, "'%s': the journal's header is damaged", path);
                goto done;
            }
            if (tail_bytes) /* a record cut short: the journal ends here */
                *tail_bytes = len - off;
            break;
        }
        const unsigned char *payload = p + b.off;
        if (type == REC_HEADER) {
            if (*header || off != sizeof journal_magic || memchr(payload, '\0', (size_t)n)) {
                dora_errf(err, "'%s': a second or malformed header at byte %zu", path, off);
                goto done;
            }
            if (!(*header = malloc((size_t)n + 1))) {
                dora_errf(err, "out of memory");
                goto done;
            }
            memcpy(*header, payload, (size_t)n);
            (*header)[n] = '\0';
        } else {
            if (!*header) {
                dora_errf(err, "'%s': the journal has no header", path);
                goto done;
            }
            if (*nunits == cap) {
                size_t nc = cap ? 2 * cap : 16;
                dora_result *q = realloc(*units, nc * sizeof *q);
                if (!q) {
                    dora_errf(err, "out of memory");
                    goto done;
                }
                *units = q;
                cap = nc;
            }
            char what[1100];
            snprintf(what, sizeof what, "'%s': record at byte %zu", path, off);
            if (dora_result_unpack(&(*units)[*nunits], payload, (size_t)n, what, err) != 0)
                goto done;
            (*nunits)++;
        }
        off = b.off + (size_t)n;
    }
    if (!*header) {
        dora_errf(err, "'%s': the journal has no header", path);
        goto done;
    }
    rc = 1;
done:
    free(text);
    if (rc != 1) {
        free(*header);
        *header = NULL;
        dora_journal_results_free(*units, *nunits);
        *units = NULL;
        *nunits = 0;
    }
    return rc;
}

int dora_journal_create(dora_journal **j, const char *path, const char *header,
                        const dora_result *units, size_t nunits, dora_err *err)
{
    *j = NULL;
    wbuf b = {0};
    wire_put_bytes(&b, journal_magic, sizeof journal_magic);
    put_record(&b, REC_HEADER, (const unsigned char *)header, strlen(header));
    for (size_t i = 0; i < nunits; i++) {
        unsigned char *u;
        size_t n;
        if (dora_result_pack(&units[i], &u, &n, err) != 0) {
            free(b.p);
            return -1;
        }
        put_record(&b, REC_UNIT, u, n);
        free(u);
    }
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "out of memory");
    }
    /* written through a private temporary and renamed; the descriptor of the
       temporary is kept for the appends, so no name is opened again after the
       rename (another file could have been put there in between) */
    util_out o;
    if (util_out_begin(&o, path, err) != 0) {
        free(b.p);
        return -1;
    }
    int fd = util_out_open(&o, err);
    int e = fd >= 0 ? util_write_all(fd, b.p, b.n, NULL) : 0;
    if (fd >= 0 && !e && fsync(fd) != 0)
        e = errno;
    free(b.p);
    if (fd < 0 || e) {
        if (fd >= 0) {
            dora_errf(err, "'%s': cannot write: %s", path, strerror(e));
            close(fd);
        }
        util_out_abort(&o);
        return -1;
    }
    if (util_out_commit(&o, err) != 0) {
        close(fd);
        return -1;
    }
    dora_journal *jn = calloc(1, sizeof *jn);
    if (!jn || !(jn->path = strdup(path))) {
        free(jn);
        close(fd);
        return dora_errf(err, "out of memory");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_APPEND); /* each record at the end, as before */
    jn->fd = fd;
    *j = jn;
    return 0;
}

int dora_journal_append(dora_journal *j, const dora_result *unit, dora_err *err)
{
    unsigned char *u;
    size_t n;
    if (dora_result_pack(unit, &u, &n, err) != 0)
        return -1;
    wbuf b = {0};
    put_record(&b, REC_UNIT, u, n);
    free(u);
    if (b.oom) {
        free(b.p);
        return dora_errf(err, "out of memory");
    }
    /* one write() per record: a kill leaves at most one torn record at the end */
    int e = util_write_all(j->fd, b.p, b.n, NULL);
    free(b.p);
    if (e)
        return dora_errf(err, "'%s': cannot append: %s", j->path, strerror(e));
    if (fdatasync(j->fd) != 0)
        return dora_errf(err, "'%s': cannot flush to disk: %s", j->path, strerror(errno));
    return 0;
}

void dora_journal_close(dora_journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j);
}
