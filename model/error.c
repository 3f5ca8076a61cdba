/* llmpress — the error domain, and the one place messages are made safe to
 * print: text from a file (a tensor name, a key, a path) may hold bytes a
 * terminal acts on or a newline that would fake a second message. */
#include "config.h"

#include <stdarg.h>
#include <string.h>

#include "lp-internal.h"

G_DEFINE_QUARK (llmpress-error-quark, lp_error)

/* Characters that reorder or break lines even though they are printable
 * UTF-8: C1 controls, line/paragraph separators, bidi overrides. */
static gboolean
unsafe_unichar (gunichar c)
{
  return (c >= 0x80 && c <= 0x9f) || (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

char *
lp_error_escape (const char *text, gboolean keep_newlines)
{
  GString *out = g_string_sized_new (strlen (text));
  const char *p = text;
  while (*p)
    {
      guint8 b = (guint8) *p;
      if (b == '\n' && keep_newlines)
        g_string_append_c (out, '\n'), p++;
      else if (b == '\n')
        g_string_append (out, "\\n"), p++;
      else if (b == '\r')
        g_string_append (out, "\\r"), p++;
      else if (b == '\t')
        g_string_append (out, "\\t"), p++;
      else if (b < 0x20 || b == 0x7f)
        g_string_append_printf (out, "\\x%02x", b), p++;
      else if (b < 0x80)
        g_string_append_c (out, (char) b), p++;
      else
        {
          gunichar c = g_utf8_get_char_validated (p, -1);
          if (c == (gunichar) -1 || c == (gunichar) -2)
            g_string_append_printf (out, "\\x%02x", b), p++;
          else
            {
              const char *next = g_utf8_next_char (p);
              if (unsafe_unichar (c))
                g_string_append_printf (out, "\\u%04x", c);
              else
                g_string_append_len (out, p, next - p);
              p = next;
            }
        }
    }
  return g_string_free (out, FALSE);
}

void
lp_error_set (GError **error, int code, const char *fmt, ...)
{
  if (error == NULL)
    return;
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *raw = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autofree char *safe = lp_error_escape (raw, FALSE);
  g_set_error_literal (error, LP_ERROR, code, safe);
}

void
lp_error_set_lines (GError **error, int code, const char *lines)
{
  if (error == NULL)
    return;
  g_autofree char *safe = lp_error_escape (lines, TRUE);
  g_set_error_literal (error, LP_ERROR, code, safe);
}

void
lp_error_prefix (GError **error, const char *what)
{
  if (error == NULL || *error == NULL)
    return;
  /* The message may come from a plugin or GLib, not from lp_set_error:
   * escape it too (escaping is idempotent). */
  g_autofree char *safe = lp_error_escape (what, FALSE);
  char *message = g_strdup_printf ("%s: %s", safe, (*error)->message);
  g_free ((*error)->message);
  (*error)->message = lp_error_escape (message, FALSE);
  g_free (message);
}
