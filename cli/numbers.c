/* llmpress CLI — reading numbers from the command line, in one place.
 *
 * GOption's own readers accept what no option of llmpress means: a negative
 * count ("--ctx -5"), "nan", "inf", "1e999" (read as inf).  lp_cli_parse
 * hands every int, int64 and double option to check_number instead, so each
 * number option of each command is an integer from 0 to its type's maximum
 * or a finite number >= 0; anything else is a usage error (exit 2) naming
 * the option and the text given.  Narrower ranges (--jobs >= 1) stay with
 * the command. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "cli.h"

/* The entry of `entries` that `name` ("--ctx" or "-c") spells. */
static const GOptionEntry *
find_entry (const GOptionEntry *entries, const char *name)
{
  for (const GOptionEntry *e = entries; e->long_name; e++)
    if ((name[1] == '-' && strcmp (name + 2, e->long_name) == 0)
        || (name[1] != '-' && e->short_name != 0 && name[1] == e->short_name && name[2] == '\0'))
      return e;
  return NULL;
}

static gboolean
check_number (const char *option_name, const char *value, gpointer data, GError **error)
{
  const GOptionEntry *e = find_entry (data, option_name);
  g_return_val_if_fail (e != NULL, FALSE);
  guint64 u = 0;
  switch (e->arg)
    {
    case G_OPTION_ARG_INT:
      if (g_ascii_string_to_unsigned (value, 10, 0, G_MAXINT, &u, NULL))
        {
          *(int *) e->arg_data = (int) u;
          return TRUE;
        }
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "%s: expected an integer from 0 to %d, found '%s'", option_name, G_MAXINT, value);
      return FALSE;
    case G_OPTION_ARG_INT64:
      if (g_ascii_string_to_unsigned (value, 10, 0, G_MAXINT64, &u, NULL))
        {
          *(gint64 *) e->arg_data = (gint64) u;
          return TRUE;
        }
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "%s: expected an integer from 0 to %" G_GINT64_FORMAT ", found '%s'", option_name, G_MAXINT64, value);
      return FALSE;
    default:
      {
        char *end = NULL;
        double v = *value && !g_ascii_isspace (*value) ? g_ascii_strtod (value, &end) : NAN;
        if (end != NULL && *end == '\0' && isfinite (v) && v >= 0)
          {
            *(double *) e->arg_data = v;
            return TRUE;
          }
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "%s: expected a finite number >= 0, found '%s'", option_name, value);
        return FALSE;
      }
    }
}

GOptionEntry *
lp_cli_number_entries (const GOptionEntry *entries)
{
  gsize n = 0;
  while (entries[n].long_name)
    n++;
  GOptionEntry *out = g_new0 (GOptionEntry, n + 1);
  memcpy (out, entries, n * sizeof *out);
  for (gsize i = 0; i < n; i++)
    if (out[i].arg == G_OPTION_ARG_INT || out[i].arg == G_OPTION_ARG_INT64 || out[i].arg == G_OPTION_ARG_DOUBLE)
      {
        out[i].arg = G_OPTION_ARG_CALLBACK;
        out[i].arg_data = (gpointer) check_number;
      }
  return out;
}

gboolean
lp_cli_parse_device_memory (const char *command, const char *text, guint64 *out)
{
  *out = 0;
  if (text == NULL || lp_cli_parse_size (text, out))
    return TRUE;
  lp_cli_usage_error (command, "--device-memory: expected a size below 16 EiB such as 512M or 8G, found '%s'", text);
  return FALSE;
}

gboolean
lp_cli_parse_size (const char *text, guint64 *out)
{
  char *end = NULL;
  double v = *text && !g_ascii_isspace (*text) ? g_ascii_strtod (text, &end) : NAN;
  if (end == NULL || end == text || !isfinite (v) || v < 0)
    return FALSE;
  guint64 mult = 1;
  switch (g_ascii_toupper (*end))
    {
    case '\0': break;
    case 'K': mult = 1ull << 10; end++; break;
    case 'M': mult = 1ull << 20; end++; break;
    case 'G': mult = 1ull << 30; end++; break;
    case 'T': mult = 1ull << 40; end++; break;
    case 'P': mult = 1ull << 50; end++; break;
    case 'E': mult = 1ull << 60; end++; break;
    default: return FALSE;
    }
  if (*end == 'i' || *end == 'I')
    end++;
  if (*end == 'B' || *end == 'b')
    end++;
  if (*end != '\0')
    return FALSE;
  /* 2^64 itself is the first double that does not fit. */
  double bytes = v * (double) mult;
  if (bytes >= 18446744073709551616.0)
    return FALSE;
  *out = (guint64) bytes;
  return TRUE;
}
