/* llmpress — typed pass parameters: parsing, range checks, canonical text
 * (tensor-name patterns are model/tensor_pattern.c's). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "registry.h"

struct _LpParamValue {
  LpParamType type;
  gboolean b;
  gint64 i;
  double f;
  int e;
  char *s;
  LpTensorPattern *pattern;
  char *canonical;
};

static const char *const type_names[] = {
  [LP_PARAM_BOOL] = "bool",     [LP_PARAM_INT] = "int",   [LP_PARAM_FLOAT] = "float",
  [LP_PARAM_STRING] = "string", [LP_PARAM_ENUM] = "enum", [LP_PARAM_PATH] = "path",
  [LP_PARAM_TENSORS] = "tensors",
};

const char *
lp_param_type_name (LpParamType type)
{
  return (guint) type < G_N_ELEMENTS (type_names) ? type_names[type] : "?";
}

/* " in [0, 1]", " >= 0", "" */
static char *
range_text (const LpParamSpec *spec)
{
  char lo[G_ASCII_DTOSTR_BUF_SIZE], hi[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd (lo, sizeof lo, "%.15g", spec->min);
  g_ascii_formatd (hi, sizeof hi, "%.15g", spec->max);
  gboolean has_min = spec->flags & LP_PARAM_HAS_MIN, has_max = spec->flags & LP_PARAM_HAS_MAX;
  if (has_min && has_max)
    return g_strdup_printf (" in [%s, %s]", lo, hi);
  if (has_min)
    return g_strdup_printf (" >= %s", lo);
  if (has_max)
    return g_strdup_printf (" <= %s", hi);
  return g_strdup ("");
}

static gboolean
in_range (const LpParamSpec *spec, double v)
{
  return !((spec->flags & LP_PARAM_HAS_MIN) && v < spec->min)
         && !((spec->flags & LP_PARAM_HAS_MAX) && v > spec->max);
}

static gboolean
parse_bool (const char *t, gboolean *out)
{
  static const char *const yes[] = { "true", "yes", "on", "1" }, *const no[] = { "false", "no", "off", "0" };
  for (gsize i = 0; i < G_N_ELEMENTS (yes); i++)
    {
      if (g_ascii_strcasecmp (t, yes[i]) == 0)
        return (*out = TRUE), TRUE;
      if (g_ascii_strcasecmp (t, no[i]) == 0)
        return (*out = FALSE), TRUE;
    }
  return FALSE;
}

LpParamValue *
lp_param_value_parse (const LpParamSpec *spec, const char *text, GError **error)
{
  g_return_val_if_fail (spec != NULL && text != NULL, NULL);
  g_autoptr (LpParamValue) v = g_new0 (LpParamValue, 1);
  v->type = spec->type;
  g_autofree char *t = g_strstrip (g_strdup (text));
  g_autofree char *range = range_text (spec);
  switch (spec->type)
    {
    case LP_PARAM_BOOL:
      if (!parse_bool (t, &v->b))
        {
          lp_set_error (error, LP_ERROR_INVALID, "expected a bool (true/false, yes/no, on/off, 1/0), found '%s'", t);
          return NULL;
        }
      v->canonical = g_strdup (v->b ? "true" : "false");
      break;
    case LP_PARAM_INT:
      {
        GError *e = NULL;
        if (!g_ascii_string_to_signed (t, 10, G_MININT64, G_MAXINT64, &v->i, &e))
          {
            g_clear_error (&e);
            lp_set_error (error, LP_ERROR_INVALID, "expected an integer%s, found '%s'", range, t);
            return NULL;
          }
        if (!in_range (spec, (double) v->i))
          {
            lp_set_error (error, LP_ERROR_INVALID, "expected an integer%s, found %s", range, t);
            return NULL;
          }
        v->canonical = g_strdup_printf ("%" G_GINT64_FORMAT, v->i);
        break;
      }
    case LP_PARAM_FLOAT:
      {
        char *end = NULL;
        v->f = g_ascii_strtod (t, &end);
        if (*t == '\0' || end == NULL || *end != '\0' || !isfinite (v->f))
          {
            lp_set_error (error, LP_ERROR_INVALID, "expected a number%s, found '%s'", range, t);
            return NULL;
          }
        if (!in_range (spec, v->f))
          {
            lp_set_error (error, LP_ERROR_INVALID, "expected a number%s, found %s", range, t);
            return NULL;
          }
        char buf[G_ASCII_DTOSTR_BUF_SIZE];
        v->canonical = g_strdup (g_ascii_dtostr (buf, sizeof buf, v->f));
        break;
      }
    case LP_PARAM_ENUM:
      {
        guint n = spec->choices ? g_strv_length ((char **) spec->choices) : 0;
        v->e = -1;
        /* Case-insensitively: format=Q4_K is what llama.cpp users type.  The
         * value is held in the table's spelling, so the cache key does not
         * depend on the case. */
        for (guint i = 0; i < n && v->e < 0; i++)
          if (g_ascii_strcasecmp (spec->choices[i], t) == 0)
            v->e = (int) i;
        if (v->e < 0)
          {
            g_autofree char *list = g_strjoinv (", ", (char **) spec->choices);
            g_autofree char *hint = lp_did_you_mean (t, spec->choices, n);
            lp_set_error (error, LP_ERROR_INVALID, "expected one of %s, found '%s'%s", list, t, hint);
            return NULL;
          }
        v->s = g_strdup (spec->choices[v->e]);
        v->canonical = g_strdup (spec->choices[v->e]);
        break;
      }
    case LP_PARAM_PATH:
      if (*t == '\0')
        {
          lp_set_error (error, LP_ERROR_INVALID, "expected a path, found nothing");
          return NULL;
        }
      v->s = g_strdup (t);
      v->canonical = g_strdup (t);
      break;
    case LP_PARAM_TENSORS:
      v->pattern = lp_tensor_pattern_new (t);
      v->s = g_strdup (lp_tensor_pattern_text (v->pattern));
      v->canonical = g_strdup (v->s);
      break;
    case LP_PARAM_STRING:
    default:
      v->s = g_strdup (text); /* strings keep their spaces */
      v->canonical = g_strdup (text);
      break;
    }
  return g_steal_pointer (&v);
}

void
lp_param_value_free (LpParamValue *value)
{
  if (value == NULL)
    return;
  g_free (value->s);
  g_free (value->canonical);
  lp_tensor_pattern_free (value->pattern);
  g_free (value);
}

const char *
lp_param_value_canonical (const LpParamValue *value)
{
  return value->canonical;
}

LpParamType
lp_param_value_type (const LpParamValue *value)
{
  return value->type;
}

const char *
lp_param_value_get_string (const LpParamValue *value)
{
  return value ? value->s : NULL;
}

gboolean
lp_param_value_get_bool (const LpParamValue *value)
{
  return value ? value->b : FALSE;
}

gint64
lp_param_value_get_int (const LpParamValue *value)
{
  return value ? value->i : 0;
}

double
lp_param_value_get_float (const LpParamValue *value)
{
  return value ? value->f : 0.0;
}

int
lp_param_value_get_enum (const LpParamValue *value)
{
  return value ? value->e : -1;
}

const LpTensorPattern *
lp_param_value_get_tensors (const LpParamValue *value)
{
  return value ? value->pattern : NULL;
}
