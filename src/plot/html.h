/* html.h - writing HTML for the report: escaped text, numbers, and gnuplot's SVG
 * figures inlined. */
#ifndef DORA_PLOT_HTML_H
#define DORA_PLOT_HTML_H

#include "dora/error.h"

#include <stdio.h>

/* S as HTML text or attribute value on F: & < > " ' escaped; bytes that are not
 * valid UTF-8, and control characters other than tab and newline, written as
 * U+FFFD. */
void html_text(FILE *f, const char *s);
/* "<TAG>S</TAG>" with S escaped. */
void html_elem(FILE *f, const char *tag, const char *s);
/* A number cell: "<td>V</td>" with V printed as FMT (printf, one double), or
 * "<td>NA</td>" when DEFINED is 0. */
void html_num(FILE *f, const char *fmt, double v, int defined);

/* The SVG file PATH (as gnuplot writes it) on F, from its <svg> element on (the
 * XML declaration left out), its ids and their references (id=, href="#...",
 * url(#...)) prefixed with PREFIX so that several figures can share a page.
 * Errors name PATH: cannot be read, no <svg> element. */
int html_inline_svg(FILE *f, const char *path, const char *prefix, dora_err *err);

struct dora_spectrum;
/* The report's section on the spectrum file PATH, read into SP (spectral.h,
 * dora_spectrum_read): a table per run and module kind at the final step, and
 * one per compared pair. -1 only when out of memory. */
int html_spectrum(FILE *f, const char *path, const struct dora_spectrum *sp);

#endif
