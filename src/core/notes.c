/* notes.c - the list of remarks for the user; see include/dora/notes.h. */
#define _POSIX_C_SOURCE 200809L
#include "dora/notes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dora_notes_add(char ***notes, size_t *n, size_t max, const char *fmt, ...)
{
    if (max && *n >= max)
        return 0;
    char buf[DORA_NOTE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nn = realloc(*notes, (*n + 1) * sizeof *nn);
    if (!nn)
        return -1;
    *notes = nn;
    if (!(nn[*n] = strdup(buf)))
        return -1;
    (*n)++;
    return 0;
}

void dora_notes_free(char **notes, size_t n)
{
    for (size_t i = 0; notes && i < n; i++)
        free(notes[i]);
    free(notes);
}
