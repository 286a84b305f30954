/* suggest.c - "did you mean ...?" for a mistyped command or option, and
 * options that may be given only once. See cli.h. */
#define _GNU_SOURCE
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t cli_edit_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 64 || nb > 64) /* nothing to suggest for a word this long */
        return na > nb ? na : nb;
    size_t row[65];
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0]; /* row[i-1][j-1] */
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

const char *cli_closest(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bd = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        size_t d = cli_edit_distance(word, names[i]);
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    /* close enough to be a typo: 2 edits, or a third of the word */
    size_t len = strlen(word);
    return best && bd > 0 && (bd <= 2 || 3 * bd <= len) ? best : NULL;
}

int cli_unknown_option(const char *cmd, const char *arg, const struct option *longopts)
{
    if (strncmp(arg, "--", 2) != 0 || !arg[2])
        return cli_usage_error(cmd, "unknown option '%s'", arg);
    char word[80];
    snprintf(word, sizeof word, "%.*s", (int)strcspn(arg + 2, "="), arg + 2);
    const char *names[64];
    size_t n = 0;
    for (; n < 64 && longopts[n].name; n++)
        names[n] = longopts[n].name;
    const char *near = cli_closest(word, names, n);
    if (near)
        return cli_usage_error(cmd, "unknown option '%s'; did you mean '--%s'?", arg, near);
    return cli_usage_error(cmd, "unknown option '%s'", arg);
}

int cli_option_once(cli_seen *seen, const char *cmd, int c, const struct option *longopts)
{
    if (c < 0 || c >= (int)(8 * sizeof seen->bit))
        return -1;
    const struct option *o = longopts;
    while (o->name && o->val != c)
        o++;
    if (!o->name || o->has_arg != required_argument)
        return -1; /* a flag: saying it twice says the same */
    unsigned char bit = (unsigned char)(1u << (c % 8));
    if (seen->bit[c / 8] & bit)
        return cli_usage_error(cmd, "--%s given twice: it takes one value", o->name);
    seen->bit[c / 8] |= bit;
    return -1;
}
