/* figures.c - a study's figures, drawn by running this program as
 * `dora-analyze plot`; see batch/engine.h. */
#define _GNU_SOURCE
#include "batch/engine.h"
#include "batch/common.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* `dora-analyze plot OUT -o DIR --format F [--modules K]` as a child process;
 * its stderr is kept for the report. */
void batch_draw_figures(batch *b, study_state *s)
{
    dora_study *st = s->st;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        s->rep.figures = DORA_FIG_FAILED;
        s->rep.figures_message = strdup("cannot find this program (/proc/self/exe) to run plot");
        return;
    }
    exe[n] = '\0';
    if (batch_mkdir_p(st->fig_dir) != 0) {
        s->rep.figures = DORA_FIG_FAILED;
        char m[4200];
        snprintf(m, sizeof m, "'%s': cannot create: %s", st->fig_dir, strerror(errno));
        s->rep.figures_message = strdup(m);
        return;
    }
    char *argv[10];
    int k = 0;
    argv[k++] = exe;
    argv[k++] = "plot";
    argv[k++] = s->out;
    argv[k++] = "-o";
    argv[k++] = st->fig_dir;
    argv[k++] = "--format";
    argv[k++] = st->fig_formats;
    if (st->fig_kinds) {
        argv[k++] = "--modules";
        argv[k++] = st->fig_kinds;
    }
    argv[k] = NULL;
    int pfd[2];
    if (pipe(pfd) != 0) {
        s->rep.figures = DORA_FIG_FAILED;
        s->rep.figures_message = strdup("cannot create a pipe for plot");
        return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    posix_spawn_file_actions_addclose(&fa, pfd[1]);
    pid_t pid;
    int src = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    char out[4096];
    size_t used = 0;
    for (;;) {
        ssize_t r = read(pfd[0], out + used, sizeof out - 1 - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        used += (size_t)r;
        if (used == sizeof out - 1) { /* keep reading so the child never blocks */
            char sink[1024];
            while (read(pfd[0], sink, sizeof sink) > 0)
                ;
            break;
        }
    }
    out[used] = '\0';
    close(pfd[0]);
    int status = 0;
    if (src == 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    while (used > 0 && (out[used - 1] == '\n' || out[used - 1] == '\r'))
        out[--used] = '\0';
    if (src == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        s->rep.figures = DORA_FIG_DRAWN;
        char m[4200];
        snprintf(m, sizeof m, "%s (%s)", st->fig_dir, st->fig_formats);
        s->rep.figures_message = strdup(m);
    } else {
        s->rep.figures = DORA_FIG_FAILED;
        char m[4200];
        snprintf(m, sizeof m, "plot %s: %s", src != 0 ? "could not start" : "failed",
                 used ? out : "no message");
        s->rep.figures_message = strdup(m);
    }
    (void)b;
}
