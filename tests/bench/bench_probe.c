/* bench_probe.c - the practical limit for `make bench`: one fused pass that
 * reads the same bytes as `analyze` on an FT pair (two bf16 safetensors files
 * of the same layout) and reduces them, with 2 threads, and nothing else.
 * Prints the checksum so the work cannot be optimised away.
 * Usage: bench_probe A.safetensors B.safetensors [threads] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct part {
    const uint16_t *a, *b;
    size_t n;
    double sum;
} part;

static void *work(void *arg)
{
    part *p = arg;
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= p->n; i += 16)
        for (int j = 0; j < 16; j++) {
            uint32_t ua = (uint32_t)p->a[i + j] << 16, ub = (uint32_t)p->b[i + j] << 16;
            float fa, fb;
            memcpy(&fa, &ua, 4);
            memcpy(&fb, &ub, 4);
            acc[j] += fa * fb;
        }
    double s = 0;
    for (int j = 0; j < 16; j++)
        s += acc[j];
    p->sum = s;
    return NULL;
}

static const unsigned char *map(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        perror(path);
        exit(1);
    }
    *len = (size_t)sb.st_size;
    void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return m;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int nt = argc > 3 ? atoi(argv[3]) : 2;
    size_t la, lb;
    const unsigned char *a = map(argv[1], &la), *b = map(argv[2], &lb);
    uint64_t ha, hb;
    memcpy(&ha, a, 8);
    memcpy(&hb, b, 8);
    size_t n = ((la - 8 - ha) < (lb - 8 - hb) ? (la - 8 - ha) : (lb - 8 - hb)) / 2;
    const uint16_t *pa = (const uint16_t *)(a + 8 + ha), *pb = (const uint16_t *)(b + 8 + hb);
    pthread_t t[64];
    part p[64];
    if (nt < 1 || nt > 64)
        nt = 2;
    for (int i = 0; i < nt; i++) {
        size_t lo = n * (size_t)i / (size_t)nt, hi = n * (size_t)(i + 1) / (size_t)nt;
        p[i] = (part){pa + lo, pb + lo, hi - lo, 0};
        pthread_create(&t[i], NULL, work, &p[i]);
    }
    double s = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(t[i], NULL);
        s += p[i].sum;
    }
    printf("%g\n", s);
    return 0;
}
