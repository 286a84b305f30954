/* gnuplot.c - finding the templates and running gnuplot on them. */
#define _GNU_SOURCE
#include "dora/plot.h"
#include "plot/draw.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void plot_gp_str(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        if (*s != '\n')
            fputc(*s, f);
    }
    fputc('\'', f);
}

void plot_gp_assign(FILE *f, const char *var, const char *val)
{
    fprintf(f, "%s = ", var);
    plot_gp_str(f, val);
    fputc('\n', f);
}

void plot_gp_files(FILE *f, const char *format, const char *outfile, const char *datafile,
                   const char *title)
{
    plot_gp_assign(f, "term_kind", format);
    plot_gp_assign(f, "outfile", outfile);
    plot_gp_assign(f, "datafile", datafile);
    plot_gp_assign(f, "main_title", title);
}

char *dora_plot_templates_dir(void)
{
    const char *env = getenv("DORA_PLOTS_DIR");
    if (env && *env)
        return strdup(env);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        static const char *const beside[] = {"share/dora-analyze/plots", "plots"};
        char *bin = util_dirname(exe);
        char *top = bin ? util_dirname(bin) : NULL;
        for (size_t i = 0; top && i < sizeof beside / sizeof *beside; i++) {
            char *p = util_join(top, beside[i]);
            char *probe = p ? util_join(p, "fig2.gp") : NULL;
            int found = probe && util_is_file(probe);
            free(probe);
            if (found) {
                free(bin);
                free(top);
                return p;
            }
            free(p);
        }
        free(bin);
        free(top);
    }
#ifdef DORA_DEFAULT_PLOTS_DIR
    return strdup(DORA_DEFAULT_PLOTS_DIR);
#else
    return strdup("plots");
#endif
}

int plot_run_gnuplot(const char *params, const char *tmpl, const char *errpath, dora_err *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char *argv[] = {"gnuplot", (char *)params, (char *)tmpl, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == ENOENT)
        return dora_errf(err, "gnuplot is not installed: install it with 'apt-get install "
                              "gnuplot-nox'");
    if (rc != 0)
        return dora_errf(err, "cannot run gnuplot: %s", strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return dora_errf(err, "waiting for gnuplot: %s", strerror(errno));
    char *text = NULL;
    size_t len = 0;
    dora_err ignore;
    util_read_file(errpath, 1 << 16, &text, &len, &ignore);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && len == 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        dora_errf(err, "gnuplot is not installed: install it with 'apt-get install gnuplot-nox'");
    else if (!ok)
        dora_errf(err, "gnuplot failed on '%s' (%s %d): %.600s", tmpl,
                  WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), text ? text : "");
    free(text);
    return ok ? 0 : -1;
}
