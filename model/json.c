/* llmpress — JSON helpers shared by the readers (safetensors, HF configs). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "lp-internal.h"
#include "outputs.h"

char *
lp_json_describe (JsonNode *n)
{
  switch (JSON_NODE_TYPE (n))
    {
    case JSON_NODE_OBJECT: return g_strdup ("an object");
    case JSON_NODE_ARRAY: return g_strdup ("an array");
    case JSON_NODE_NULL: return g_strdup ("null");
    case JSON_NODE_VALUE: break;
    }
  GType t = json_node_get_value_type (n);
  if (t == G_TYPE_INT64)
    return g_strdup_printf ("%" G_GINT64_FORMAT, json_node_get_int (n));
  if (t == G_TYPE_DOUBLE)
    return g_strdup_printf ("%g", json_node_get_double (n));
  if (t == G_TYPE_BOOLEAN)
    return g_strdup (json_node_get_boolean (n) ? "true" : "false");
  if (t == G_TYPE_STRING)
    return g_strdup_printf ("\"%s\"", json_node_get_string (n));
  return g_strdup ("a value");
}

/* json-glib's parser recurses once per '[' or '{', so a file of a million
 * '[' would overflow the stack: count the depth first, outside strings (a
 * linear scan that needs no valid JSON; the parser judges the rest). */
static gboolean
check_depth (const char *path, const char *w, const char *text, gsize len, gsize base, GError **error)
{
  guint depth = 0;
  gboolean in_string = FALSE;
  for (gsize i = 0; i < len; i++)
    {
      char c = text[i];
      if (in_string)
        {
          if (c == '\\')
            i++;
          else if (c == '"')
            in_string = FALSE;
        }
      else if (c == '"')
        in_string = TRUE;
      else if (c == '[' || c == '{')
        {
          if (++depth > LP_JSON_MAX_DEPTH)
            {
              lp_set_error (error, LP_ERROR_FORMAT,
                            "%s: offset %" G_GSIZE_FORMAT ": %sexpected JSON nested at most %d deep, found deeper",
                            path, base + i, w, LP_JSON_MAX_DEPTH);
              return FALSE;
            }
        }
      else if ((c == ']' || c == '}') && depth > 0)
        depth--;
    }
  return TRUE;
}

JsonNode *
lp_json_parse_object (const char *path, const char *where, const char *text, gsize len, gsize base,
                      GError **error)
{
  g_autofree char *w = where != NULL ? g_strconcat (where, ": ", NULL) : g_strdup ("");
  const char *bad;
  if (!g_utf8_validate_len (text, len, &bad))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %sexpected UTF-8 JSON, found byte 0x%02x",
                    path, base + (gsize) (bad - text), w, (guint8) *bad);
      return NULL;
    }
  if (!check_depth (path, w, text, len, base, error))
    return NULL;
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  GError *local = NULL;
  if (!json_parser_load_from_data (parser, text, (gssize) len, &local))
    {
      /* json-glib says "<data>:LINE:COL: Parse error: WHAT". */
      int line = 0, col = 0, consumed = 0;
      const char *msg = local->message;
      const char *sp = where != NULL ? " " : "";
      if (sscanf (msg, "<data>:%d:%d: %n", &line, &col, &consumed) >= 2 && consumed > 0)
        {
          const char *what = msg + consumed;
          if (g_str_has_prefix (what, "Parse error: "))
            what += strlen ("Parse error: ");
          lp_set_error (error, LP_ERROR_FORMAT, "%s: %s%sline %d column %d: expected valid JSON, found %s",
                        path, where ? where : "", sp, line, col, what);
        }
      else
        lp_set_error (error, LP_ERROR_FORMAT, "%s: %sexpected valid JSON, found %s", path, w, msg);
      g_error_free (local);
      return NULL;
    }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_autofree char *found = root ? lp_json_describe (root) : g_strdup ("nothing");
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %sexpected a JSON object, found %s",
                    path, base, w, found);
      return NULL;
    }
  return json_node_ref (root);
}

JsonNode *
lp_json_load_object (const char *path, GError **error)
{
  g_autofree char *text = NULL;
  gsize len;
  GError *local = NULL;
  if (!lp_input_check (path, FALSE, error))
    return NULL;
  if (!g_file_get_contents (path, &text, &len, &local))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot read: %s", path, local->message);
      g_error_free (local);
      return NULL;
    }
  return lp_json_parse_object (path, NULL, text, len, 0, error);
}
