/* notes.h - remarks for the user, kept by library code in a growing list.
 *
 * Library code never prints (error.h); what the user should know but is not an
 * error (a tensor left out, a final model skipped) goes into a list of notes
 * that the command layer prints. Every result that carries notes holds them
 * as a `char **notes` with a `size_t nnotes`; these functions keep that list.
 */
#ifndef DORA_NOTES_H
#define DORA_NOTES_H

#include <stddef.h>

/* Longest note kept, in bytes with its NUL: a longer one is cut there. */
#define DORA_NOTE_MAX 1024

/* Append the printf-style note FMT to the list *NOTES of *N strings, growing
 * it. MAX bounds the list: when *N is already MAX the note is dropped and 0
 * returned (0 means no bound). The list and each string are malloc'd and
 * owned by the list: free them with dora_notes_free. Returns 0, or -1 out of
 * memory (then the list is as it was). */
int dora_notes_add(char ***notes, size_t *n, size_t max, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Free the N strings of NOTES and NOTES itself. NOTES may be NULL. */
void dora_notes_free(char **notes, size_t n);

#endif
