/* llmpress — reading pipeline specs: the INI form (a GKeyFile with a line
 * index so every message can say file:line) and the inline form
 * ("load path=m.gguf ! eval ! save path=out.gguf"), both into the same raw
 * list of groups, with ${variables} expanded.  graph.c builds the DAG. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include "spec-private.h"

static void
raw_entry_free (LpRawEntry *e)
{
  g_free (e->key);
  g_free (e->value);
  g_free (e->text);
  g_free (e->loc);
  g_free (e);
}

static void
raw_group_free (LpRawGroup *g)
{
  g_free (g->name);
  g_free (g->loc);
  g_ptr_array_unref (g->entries);
  g_free (g);
}

static LpRawGroup *
raw_group_new (const char *name, char *loc)
{
  LpRawGroup *g = g_new0 (LpRawGroup, 1);
  g->name = g_strdup (name);
  g->loc = loc;
  g->entries = g_ptr_array_new_with_free_func ((GDestroyNotify) raw_entry_free);
  return g;
}

void
lp_raw_spec_free (LpRawSpec *spec)
{
  if (spec == NULL)
    return;
  g_free (spec->source);
  g_ptr_array_unref (spec->groups);
  if (spec->settings)
    raw_group_free (spec->settings);
  g_free (spec);
}

static LpRawSpec *
raw_spec_new (const char *source)
{
  LpRawSpec *s = g_new0 (LpRawSpec, 1);
  s->source = g_strdup (source);
  s->groups = g_ptr_array_new_with_free_func ((GDestroyNotify) raw_group_free);
  return s;
}

void
lp_spec_add_error (GString *errors, const char *loc, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autofree char *line = g_strdup_printf ("%s: %s", loc, msg);
  g_autofree char *safe = lp_error_escape (line, FALSE); /* a -D value may hold a newline */
  if (errors->len)
    g_string_append_c (errors, '\n');
  g_string_append (errors, safe);
}

/* ${name} and ${name:-default}; "$${" stands for a literal "${". */
static char *
expand (const char *value, GHashTable *vars, const LpRawEntry *e, const char *group, GString *errors)
{
  GString *out = g_string_new (NULL);
  const char *p = value;
  while (*p)
    {
      if (p[0] == '$' && p[1] == '$' && p[2] == '{')
        {
          g_string_append (out, "${");
          p += 3;
          continue;
        }
      if (p[0] != '$' || p[1] != '{')
        {
          g_string_append_c (out, *p++);
          continue;
        }
      /* The matching brace: a default may hold ${...} itself
       * (calibration=${calib:-${data}}). */
      const char *end = p + 2;
      for (int depth = 1; *end && (depth > 1 || *end != '}'); end++)
        if (end[0] == '$' && end[1] == '{')
          depth++, end++;
        else if (*end == '}')
          depth--;
      if (*end != '}')
        end = NULL;
      if (end == NULL)
        {
          lp_spec_add_error (errors, e->loc, "[%s] %s: unterminated '${' (hint: write ${name}, or $${ for a literal)",
                             group, e->text);
          return g_string_free (out, TRUE), NULL;
        }
      g_autofree char *inner = g_strndup (p + 2, end - p - 2);
      char *dflt = strstr (inner, ":-");
      if (dflt)
        *dflt = '\0', dflt += 2;
      const char *v = vars ? g_hash_table_lookup (vars, inner) : NULL;
      g_autofree char *dflt_value = NULL;
      if (v == NULL && dflt != NULL)
        {
          if ((dflt_value = expand (dflt, vars, e, group, errors)) == NULL)
            return g_string_free (out, TRUE), NULL;
          v = dflt_value;
        }
      if (v == NULL)
        {
          lp_spec_add_error (errors, e->loc,
                             "[%s] %s: variable '%s' is never defined (hint: pass -D %s=VALUE, or write ${%s:-DEFAULT})",
                             group, e->text, inner, inner, inner);
          return g_string_free (out, TRUE), NULL;
        }
      g_string_append (out, v);
      p = end + 1;
    }
  return g_string_free (out, FALSE);
}

static void
add_entry (LpRawGroup *g, const char *key, const char *value, char *loc, GHashTable *vars, GString *errors)
{
  LpRawEntry *e = g_new0 (LpRawEntry, 1);
  e->key = g_strdup (key);
  e->text = g_strdup_printf ("%s=%s", key, value);
  e->loc = loc;
  e->value = expand (value, vars, e, g->name, errors);
  if (e->value == NULL)
    e->value = g_strdup (value);
  g_ptr_array_add (g->entries, e);
}

static gboolean
valid_name (const char *s)
{
  if (*s == '\0')
    return FALSE;
  for (; *s; s++)
    if (!(g_ascii_isalnum (*s) || *s == '_' || *s == '-' || *s == '.'))
      return FALSE;
  return TRUE;
}

LpRawSpec *
lp_spec_read_ini (const char *data, gssize len, const char *filename, GHashTable *vars, GString *errors)
{
  if (len < 0)
    len = (gssize) strlen (data);
  g_autoptr (LpRawSpec) spec = raw_spec_new (filename);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  GError *e = NULL;
  if (!g_key_file_load_from_data (kf, data, (gsize) len, G_KEY_FILE_NONE, &e))
    {
      /* Name the line GKeyFile stumbled on when the scan finds it; keep its
       * words for the rest. */
      g_autofree char *loc = g_strdup (filename);
      g_autofree char *msg = g_strdup (e->message);
      g_clear_error (&e);
      g_autofree char *copy = g_strndup (data, (gsize) len);
      g_auto (GStrv) lines = g_strsplit (copy, "\n", -1);
      gboolean found = FALSE;
      gboolean in_group = FALSE;
      for (guint i = 0; lines[i]; i++)
        {
          char *l = g_strstrip (lines[i]);
          if (*l == '\0' || *l == '#')
            continue;
          if (*l == '[')
            {
              in_group = TRUE;
              if (l[strlen (l) - 1] == ']')
                continue;
            }
          else if (strchr (l, '=') && in_group)
            continue;
          g_autofree char *where = g_strdup_printf ("%s:%u", filename, i + 1);
          lp_spec_add_error (errors, where, "'%s': expected [node], key=value or a # comment (hint: %s)", l,
                             in_group ? "comment it out with #" : "a key=value must follow a [node] line");
          found = TRUE;
          break;
        }
      if (!found)
        lp_spec_add_error (errors, loc, "%s", msg);
      return NULL;
    }
  /* Line index: GKeyFile gives the values, this scan gives where they are. */
  g_autofree char *copy = g_strndup (data, (gsize) len);
  g_auto (GStrv) lines = g_strsplit (copy, "\n", -1);
  LpRawGroup *cur = NULL;
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GHashTable) keys = NULL;
  for (guint i = 0; lines[i]; i++)
    {
      char *l = g_strstrip (lines[i]);
      if (*l == '\0' || *l == '#')
        continue;
      char *loc = g_strdup_printf ("%s:%u", filename, i + 1);
      if (*l == '[')
        {
          g_autofree char *name = g_strndup (l + 1, strlen (l) - 2);
          LpRawGroup *old = g_hash_table_lookup (seen, name);
          if (old != NULL)
            {
              lp_spec_add_error (errors, loc, "[%s]: duplicate node name (first at %s; hint: give each node its own [name])",
                                 name, old->loc);
              g_free (loc);
              cur = NULL;
              continue;
            }
          if (!valid_name (name))
            lp_spec_add_error (errors, loc, "[%s]: a node name may hold letters, digits, '_', '-' and '.' only (hint: rename it)", name);
          cur = raw_group_new (name, loc);
          g_hash_table_insert (seen, cur->name, cur);
          if (strcmp (name, "pipeline") == 0)
            spec->settings = cur;
          else
            g_ptr_array_add (spec->groups, cur);
          g_clear_pointer (&keys, g_hash_table_unref);
          keys = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
          continue;
        }
      if (cur == NULL)
        {
          g_free (loc);
          continue; /* inside a refused duplicate group */
        }
      char *eq = strchr (l, '=');
      g_autofree char *key = g_strstrip (g_strndup (l, eq - l));
      if (strchr (key, '[') != NULL)
        {
          lp_spec_add_error (errors, loc, "[%s] %s: localized keys have no meaning in a spec (hint: drop the [..])", cur->name, l);
          g_free (loc);
          continue;
        }
      if (g_hash_table_contains (keys, key))
        {
          lp_spec_add_error (errors, loc, "[%s] %s: '%s' is given twice in this node (hint: keep one)", cur->name, l, key);
          g_free (loc);
          continue;
        }
      g_hash_table_add (keys, g_strdup (key));
      g_autofree char *value = g_key_file_get_string (kf, cur->name, key, &e);
      if (value == NULL)
        {
          lp_spec_add_error (errors, loc, "[%s] %s: %s", cur->name, l, e->message);
          g_clear_error (&e);
          g_free (loc);
          continue;
        }
      add_entry (cur, key, value, loc, vars, errors);
    }
  if (spec->groups->len == 0 && errors->len == 0)
    lp_spec_add_error (errors, filename, "no node: expected at least one [name] group with pass=");
  return g_steal_pointer (&spec);
}

/* Tokens of the inline form: words separated by blanks, quotes group,
 * a lone '!' links two elements. */
typedef struct {
  char *text;
  guint col;  /* 1-based */
} Token;

static void
token_free (Token *t)
{
  g_free (t->text);
  g_free (t);
}

static GPtrArray *
tokenize (const char *s, GString *errors)
{
  GPtrArray *toks = g_ptr_array_new_with_free_func ((GDestroyNotify) token_free);
  const char *p = s;
  while (*p)
    {
      if (g_ascii_isspace (*p))
        {
          p++;
          continue;
        }
      Token *t = g_new0 (Token, 1);
      t->col = (guint) (p - s) + 1;
      GString *w = g_string_new (NULL);
      while (*p && !g_ascii_isspace (*p))
        {
          if (*p == '\'' || *p == '"')
            {
              char q = *p++;
              const char *end = strchr (p, q);
              if (end == NULL)
                {
                  g_autofree char *loc = g_strdup_printf ("<pipeline>:1:%u", t->col);
                  lp_spec_add_error (errors, loc, "%s: unterminated quote (hint: close it with %c)", p - 1, q);
                  g_string_free (w, TRUE);
                  g_free (t);
                  g_ptr_array_unref (toks);
                  return NULL;
                }
              g_string_append_len (w, p, end - p);
              p = end + 1;
            }
          else
            g_string_append_c (w, *p++);
        }
      t->text = g_string_free (w, FALSE);
      g_ptr_array_add (toks, t);
    }
  return toks;
}

LpRawSpec *
lp_spec_read_inline (const char *text, GHashTable *vars, GString *errors)
{
  g_autoptr (GPtrArray) toks = tokenize (text, errors);
  if (toks == NULL)
    return NULL;
  g_autoptr (LpRawSpec) spec = raw_spec_new ("<pipeline>");
  g_autoptr (GHashTable) used = g_hash_table_new (g_str_hash, g_str_equal);
  LpRawGroup *cur = NULL;
  gboolean expect_element = TRUE;
  for (guint i = 0; i < toks->len; i++)
    {
      Token *t = toks->pdata[i];
      char *loc = g_strdup_printf ("<pipeline>:1:%u", t->col);
      if (strcmp (t->text, "!") == 0)
        {
          if (expect_element)
            lp_spec_add_error (errors, loc, "'!' with no element before it (hint: write PASS [key=value...] ! PASS ...)");
          expect_element = TRUE;
          g_free (loc);
          continue;
        }
      if (expect_element)
        {
          /* [NAME:]PASS */
          const char *colon = strchr (t->text, ':');
          g_autofree char *pass = g_strdup (colon ? colon + 1 : t->text);
          g_autofree char *name = colon ? g_strndup (t->text, colon - t->text) : NULL;
          if (strchr (t->text, '=') != NULL)
            lp_spec_add_error (errors, loc, "'%s': expected a pass name to start an element (hint: a '!' may be missing)", t->text);
          if (name == NULL)
            {
              name = g_strdup (pass);
              for (int k = 2; g_hash_table_contains (used, name); k++)
                {
                  g_free (name);
                  name = g_strdup_printf ("%s-%d", pass, k);
                }
            }
          else if (g_hash_table_contains (used, name))
            lp_spec_add_error (errors, loc, "'%s': duplicate node name '%s'", t->text, name);
          cur = raw_group_new (name, loc);
          g_hash_table_add (used, cur->name);
          g_ptr_array_add (spec->groups, cur);
          add_entry (cur, "pass", pass, g_strdup (loc), vars, errors);
          expect_element = FALSE;
          continue;
        }
      const char *eq = strchr (t->text, '=');
      if (eq == NULL || eq == t->text)
        {
          lp_spec_add_error (errors, loc, "[%s] '%s': expected key=value or '!' (hint: quote values with spaces)",
                             cur->name, t->text);
          g_free (loc);
          continue;
        }
      g_autofree char *key = g_strndup (t->text, eq - t->text);
      if (strcmp (key, "pass") == 0)
        {
          lp_spec_add_error (errors, loc, "[%s] %s: the pass is the element's first word", cur->name, t->text);
          g_free (loc);
          continue;
        }
      add_entry (cur, key, eq + 1, loc, vars, errors);
    }
  if (spec->groups->len == 0)
    lp_spec_add_error (errors, "<pipeline>:1", "empty pipeline: expected PASS [key=value...] [! PASS ...]");
  else if (expect_element)
    lp_spec_add_error (errors, "<pipeline>:1", "the pipeline ends with '!': an element is missing after it");
  return g_steal_pointer (&spec);
}
