/* html.c - escaped text, number cells and inlined SVG for the report. */
#define _GNU_SOURCE
#include "plot/html.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at S (1-4), or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF refused). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || (n == 2 && c < 0xC2))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)))
        return 0;
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || c > 0xF4 || (c == 0xF4 && s[1] >= 0x90)))
        return 0;
    return n;
}

void html_text(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = utf8_len(p);
        if (n == 0 || (n == 1 && ((*p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7F))) {
            fputs("&#xFFFD;", f);
            p++;
            continue;
        }
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fwrite(p, 1, n, f);
        }
        p += n;
    }
}

void html_elem(FILE *f, const char *tag, const char *s)
{
    fprintf(f, "<%s>", tag);
    html_text(f, s);
    fprintf(f, "</%s>", tag);
}

void html_num(FILE *f, const char *fmt, double v, int defined)
{
    fputs("<td class=\"num\">", f);
    if (defined)
        fprintf(f, fmt, v);
    else
        fputs("NA", f);
    fputs("</td>", f);
}

int html_inline_svg(FILE *f, const char *path, const char *prefix, dora_err *err)
{
    size_t len;
    char *buf = NULL;
    if (util_read_file(path, (size_t)1 << 28, &buf, &len, err) != 0)
        return -1;
    char *p = strstr(buf, "<svg");
    if (!p || memchr(buf, '\0', len)) {
        free(buf);
        return dora_errf(err, "'%s': not an SVG figure (no <svg> element)", path);
    }
    /* an id or a reference to one: each gets PREFIX after its opening quote */
    static const char *const marks[] = {" id='", " id=\"", "href='#", "href=\"#", "url(#"};
    while (*p) {
        size_t k = 0, ml = 0;
        for (; k < sizeof marks / sizeof *marks; k++)
            if (strncmp(p, marks[k], ml = strlen(marks[k])) == 0)
                break;
        if (k < sizeof marks / sizeof *marks) {
            fwrite(p, 1, ml, f);
            fputs(prefix, f);
            p += ml;
        } else {
            fputc(*p++, f);
        }
    }
    free(buf);
    return 0;
}
