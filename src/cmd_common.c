/* cmd_common.c - pieces the subcommands share: the recorded command line,
 * NAME=RUN arguments, and removing a temporary output on SIGINT/SIGTERM. */
#define _GNU_SOURCE
#include "cli.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int cli_valid_run_name(const char *s)
{
    return s[0] != '\0' && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && strchr(s, '/') == NULL;
}

static volatile sig_atomic_t have_tmp;
static char tmp_path[4096];

static void on_signal(int sig)
{
    if (have_tmp)
        unlink(tmp_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

void cli_guard_tmp(const char *tmp)
{
    if (!tmp || strlen(tmp) >= sizeof tmp_path)
        return;
    have_tmp = 0;
    memcpy(tmp_path, tmp, strlen(tmp) + 1);
    have_tmp = 1;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
}

void cli_unguard_tmp(void)
{
    have_tmp = 0;
}
