/* llmpress — numbers that are not numbers: naming non-finite values in one
 * line, writing them to JSON as null (json-glib would print "nan", which no
 * JSON reader accepts), and the text of a JSON number as the file spells it
 * (json-glib wraps integers past 2^63 silently: 2^64 reads as -1). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"

gboolean
lp_note_nonfinite (GString *bad, const char *name, double v)
{
  if (isfinite (v))
    return TRUE;
  g_string_append_printf (bad, "%s%s=%s", bad->len ? ", " : "", name, isnan (v) ? "nan" : v > 0 ? "inf" : "-inf");
  return FALSE;
}

void
lp_json_add_finite (JsonBuilder *b, const char *name, double v, GString *bad)
{
  json_builder_set_member_name (b, name);
  if (lp_note_nonfinite (bad, name, v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}

void
lp_json_add_nonfinite_error (JsonBuilder *b, const GString *bad)
{
  if (bad->len == 0)
    return;
  json_builder_set_member_name (b, "error");
  g_autofree char *msg = g_strdup_printf ("not finite: %s", bad->str);
  json_builder_add_string_value (b, msg);
}

gboolean
lp_meta_check_finite (const LpMeta *meta, GError **error)
{
  g_autoptr (GString) bad = g_string_new (NULL);
  for (guint i = 0; i < lp_meta_n_keys (meta); i++)
    {
      const LpValue *v = lp_meta_get (meta, lp_meta_key (meta, i));
      if (v->type == LP_VALUE_F32 || v->type == LP_VALUE_F64)
        lp_note_nonfinite (bad, lp_meta_key (meta, i), v->f);
    }
  if (bad->len == 0)
    return TRUE;
  lp_set_error (error, LP_ERROR_INVALID, "metrics not finite: %s", bad->str);
  return FALSE;
}

char *
lp_json_number_text (const char *text, gsize len, const char *key)
{
  g_autofree char *quoted = g_strdup_printf ("\"%s\"", key);
  gsize qlen = strlen (quoted);
  const char *end = text + len;
  for (const char *p = text; p + qlen <= end; p++)
    {
      if (memcmp (p, quoted, qlen) != 0)
        continue;
      const char *q = p + qlen;
      while (q < end && g_ascii_isspace (*q))
        q++;
      if (q >= end || *q != ':')
        continue;
      q++;
      while (q < end && g_ascii_isspace (*q))
        q++;
      const char *s = q;
      while (q < end && (g_ascii_isdigit (*q) || strchr ("+-.eE", *q) != NULL))
        q++;
      if (q > s)
        return g_strndup (s, q - s);
    }
  return NULL;
}

void
lp_warn_clamped (const char *path, LpDType dtype, guint64 n)
{
  if (n > 0)
    lp_warn ("%s: %" G_GUINT64_FORMAT " value%s beyond %s's range clamped to its largest finite value", path, n,
             n == 1 ? "" : "s", lp_dtype_name (dtype));
}

void
lp_model_drop_bad_token_ids (LpModel *model)
{
  LpMeta *meta = lp_model_meta (model);
  gint64 n_vocab = lp_model_config (model)->n_vocab;
  g_autoptr (GPtrArray) bad = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < lp_meta_n_keys (meta); i++)
    {
      const char *k = lp_meta_key (meta, i);
      if (!g_str_has_prefix (k, "tokenizer.ggml.") || !g_str_has_suffix (k, "_token_id"))
        continue;
      const LpValue *v = lp_meta_get (meta, k);
      g_autofree char *text = lp_value_to_string (v, 4);
      gboolean is_unsigned = v->type == LP_VALUE_U8 || v->type == LP_VALUE_U16 || v->type == LP_VALUE_U32 || v->type == LP_VALUE_U64;
      gboolean is_signed = v->type == LP_VALUE_I8 || v->type == LP_VALUE_I16 || v->type == LP_VALUE_I32 || v->type == LP_VALUE_I64;
      gboolean none = (is_unsigned && (v->u == G_MAXUINT32 || v->u == G_MAXUINT64)) || (is_signed && v->i == -1);
      gboolean ok = (is_unsigned && v->u < (guint64) n_vocab) || (is_signed && v->i >= 0 && v->i < n_vocab);
      if (none || ok)
        continue;
      lp_warn ("%s: key %s: expected a token id below the vocabulary size %" G_GINT64_FORMAT " or 4294967295 (none), found %s; ignored",
               lp_model_source (model) ? lp_model_source (model) : "model", k, n_vocab, text);
      g_ptr_array_add (bad, g_strdup (k));
    }
  for (guint i = 0; i < bad->len; i++)
    lp_meta_remove (meta, bad->pdata[i]);
}
