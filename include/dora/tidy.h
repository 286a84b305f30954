/* tidy.h - analyze's tidy table of dM and dD (one line per run, step and
 * module: run, method, step, module, layer, delta_m, delta_d), as TSV or CSV,
 * and writing it together with the HDF5 results file.
 *
 * TSV escapes a tab, newline or backslash in a name as \t, \n, \\; CSV quotes
 * a field holding a comma, quote, CR or LF (RFC 4180). Numbers are printed
 * with 17 significant digits, so they read back exactly.
 */
#ifndef DORA_TIDY_H
#define DORA_TIDY_H

#include "dora/analyze.h"
#include "dora/error.h"
#include "dora/stats.h"

#include <stdio.h>

/* The header line of the CSV table: what an existing CSV output must begin
 * with to be replaced without --force. */
#define DORA_TIDY_CSV_HEADER "run,method,step,module,layer,delta_m,delta_d\n"

/* One field S to F as the table writes it: TSV-escaped, or CSV-quoted when CSV is 1. */
void dora_tidy_field(FILE *f, const char *s, int csv);

/* The table of RES[0..NRES) to F, CSV when CSV is 1, else TSV. Write errors
 * are left in F's error flag for the caller. */
void dora_tidy_print(FILE *f, const dora_result *res, size_t nres, int csv);

/* OUT (h5o_write) and, when CSV_PATH is not NULL, the CSV table at CSV_PATH:
 * both files or neither. The CSV is written to a temporary file and flushed
 * first, then OUT is written, then the CSV renamed into place (if that fails,
 * OUT is removed again). 0, or -1 with ERR set. */
int dora_tidy_write(const char *out, const char *csv_path, const dora_result *res, size_t nres,
                    const char *command_line, dora_err *err);
/* The same with the bootstrap settings STATS for OUT's /regression (h5o_write_stats). */
int dora_tidy_write_stats(const char *out, const char *csv_path, const dora_result *res,
                          size_t nres, const char *command_line, const dora_stats_opts *stats,
                          dora_err *err);

#endif
