/* llmpress — the pass registry: finds plugin files, checks their descriptor
 * before trusting anything in it, and indexes their passes by name. */
#include "config.h"

#include <string.h>
#include <gmodule.h>

#include "lp-internal.h"
#include "registry.h"

struct _LpRegistry {
  GPtrArray *modules;     /* GModule *, kept open for the registry's life */
  GPtrArray *files;       /* char *, parallel to modules */
  GHashTable *passes;     /* name -> LpPassEntry * */
  GHashTable *basenames;  /* plugin file names already loaded (shadowing) */
  GPtrArray *rejects;     /* LpPluginReject * */
};

static void
reject_free (LpPluginReject *r)
{
  g_free (r->file);
  g_free (r->reason);
  g_free (r);
}

LpRegistry *
lp_registry_new (void)
{
  LpRegistry *reg = g_new0 (LpRegistry, 1);
  reg->modules = g_ptr_array_new ();
  reg->files = g_ptr_array_new_with_free_func (g_free);
  reg->passes = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  reg->basenames = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  reg->rejects = g_ptr_array_new_with_free_func ((GDestroyNotify) reject_free);
  return reg;
}

void
lp_registry_free (LpRegistry *reg)
{
  if (reg == NULL)
    return;
  g_hash_table_unref (reg->passes);
  g_hash_table_unref (reg->basenames);
  g_ptr_array_unref (reg->rejects);
  /* Modules stay loaded: artifacts made by their passes may still point
   * at their code (free functions) or static data. */
  g_ptr_array_unref (reg->modules);
  g_ptr_array_unref (reg->files);
  g_free (reg);
}

static gboolean
refuse (LpRegistry *reg, const char *path, GError **error, const char *fmt, ...) G_GNUC_PRINTF (4, 5);

static gboolean
refuse (LpRegistry *reg, const char *path, GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  LpPluginReject *r = g_new0 (LpPluginReject, 1);
  r->file = g_strdup (path);
  r->reason = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  lp_set_error (error, LP_ERROR_INVALID, "%s: %s", r->file, r->reason);
  g_ptr_array_add (reg->rejects, r);
  return FALSE;
}

static gboolean
valid_pass_name (const char *name)
{
  if (name == NULL || !g_ascii_islower (name[0]))
    return FALSE;
  gboolean dot = FALSE;
  for (const char *p = name; *p; p++)
    {
      if (*p == '.')
        {
          if (dot || p[1] == '\0' || p[-1] == '.')
            return FALSE;
          dot = TRUE;
        }
      else if (!(g_ascii_islower (*p) || g_ascii_isdigit (*p) || *p == '_' || *p == '-'))
        return FALSE;
    }
  return TRUE;
}

/* The first thing wrong with a pass descriptor, or NULL. */
static char *
check_pass (const LpPassInfo *p)
{
  if (!valid_pass_name (p->name))
    return g_strdup_printf ("pass name '%s' is not 'family.method' in lower case", p->name ? p->name : "(null)");
  if (p->summary == NULL || *p->summary == '\0')
    return g_strdup_printf ("pass %s: missing required field 'summary'", p->name);
  if (p->run == NULL)
    return g_strdup_printf ("pass %s: missing required field 'run'", p->name);
  if ((guint) p->output > LP_ARTIFACT_STATS)
    return g_strdup_printf ("pass %s: output kind %d is not a known artifact kind", p->name, p->output);
  for (const LpParamSpec *s = p->params; s && s->name; s++)
    {
      if ((guint) s->type > LP_PARAM_TENSORS)
        return g_strdup_printf ("pass %s: parameter %s: unknown type %d", p->name, s->name, s->type);
      if (s->help == NULL)
        return g_strdup_printf ("pass %s: parameter %s: missing required field 'help'", p->name, s->name);
      if (s->type == LP_PARAM_ENUM && (s->choices == NULL || s->choices[0] == NULL))
        return g_strdup_printf ("pass %s: parameter %s: an enum needs 'choices'", p->name, s->name);
      if (strcmp (s->name, "pass") == 0 || strcmp (s->name, "input") == 0
          || lp_pass_info_find_input (p, s->name) != NULL)
        return g_strdup_printf ("pass %s: parameter %s: the name is reserved for an input", p->name, s->name);
      if (s->default_value == NULL && !(s->flags & LP_PARAM_REQUIRED) && s->type != LP_PARAM_STRING
          && s->type != LP_PARAM_PATH)
        return g_strdup_printf ("pass %s: parameter %s: missing required field 'default_value'", p->name, s->name);
      if (s->default_value != NULL)
        {
          g_autoptr (GError) e = NULL;
          g_autoptr (LpParamValue) v = lp_param_value_parse (s, s->default_value, &e);
          if (v == NULL)
            return g_strdup_printf ("pass %s: parameter %s: default: %s", p->name, s->name, e->message);
        }
    }
  for (const LpInputSpec *in = p->inputs; in && in->name; in++)
    if (in->kind != LP_ARTIFACT_MODEL && in->kind != LP_ARTIFACT_METRICS && in->kind != LP_ARTIFACT_STATS)
      return g_strdup_printf ("pass %s: input %s: kind must be a model or metrics", p->name, in->name);
  return NULL;
}

gboolean
lp_registry_load_file (LpRegistry *reg, const char *path, GError **error)
{
  GModule *module = g_module_open (path, G_MODULE_BIND_LOCAL | G_MODULE_BIND_LAZY);
  if (module == NULL)
    return refuse (reg, path, error, "cannot be loaded: %s", g_module_error ());
  gpointer sym = NULL;
  if (!g_module_symbol (module, LP_PLUGIN_ENTRY_POINT, &sym) || sym == NULL)
    {
      g_module_close (module);
      return refuse (reg, path, error, "not a llmpress plugin: missing entry point %s", LP_PLUGIN_ENTRY_POINT);
    }
  const LpPluginInfo *info = ((LpPluginEntryFunc) sym) ();
  const char *why = NULL;
  g_autofree char *reason = NULL;
  if (info == NULL)
    why = "the entry point returned no descriptor";
  else if (info->abi_major != LP_PLUGIN_ABI_MAJOR || info->abi_minor > LP_PLUGIN_ABI_MINOR)
    reason = g_strdup_printf ("plugin ABI %u.%u, expected %d.x with x <= %d (rebuild it against this llmpress)",
                              info->abi_major, info->abi_minor, LP_PLUGIN_ABI_MAJOR, LP_PLUGIN_ABI_MINOR);
  else if (info->info_size < sizeof (LpPluginInfo))
    reason = g_strdup_printf ("descriptor size %u, expected at least %zu", info->info_size, sizeof (LpPluginInfo));
  else if (info->name == NULL || *info->name == '\0')
    why = "missing required field 'name'";
  else if (info->version == NULL || *info->version == '\0')
    why = "missing required field 'version'";
  else if (info->license == NULL || *info->license == '\0')
    why = "missing required field 'license'";
  else if (info->passes == NULL || info->passes[0] == NULL)
    why = "missing required field 'passes' (no pass declared)";
  if (why == NULL && reason == NULL)
    {
      g_autoptr (GHashTable) mine = g_hash_table_new (g_str_hash, g_str_equal);
      for (const LpPassInfo *const *pp = info->passes; *pp && reason == NULL; pp++)
        {
          reason = check_pass (*pp);
          if (reason != NULL)
            break;
          const LpPassEntry *old = g_hash_table_lookup (reg->passes, (*pp)->name);
          if (old != NULL || g_hash_table_contains (mine, (*pp)->name))
            reason = g_strdup_printf ("duplicate pass name '%s' (already provided by %s)", (*pp)->name,
                                      old ? old->file : path);
          g_hash_table_add (mine, (gpointer) (*pp)->name);
        }
    }
  if (why != NULL || reason != NULL)
    {
      g_module_close (module);
      return refuse (reg, path, error, "%s", why ? why : reason);
    }
  char *file = g_strdup (path);
  g_ptr_array_add (reg->files, file);
  char *digest = NULL;
  g_autofree char *contents = NULL;
  gsize len = 0;
  if (g_file_get_contents (path, &contents, &len, NULL))
    digest = g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) contents, len);
  g_ptr_array_add (reg->files, digest ? digest : g_strdup ("unreadable"));
  g_ptr_array_add (reg->modules, module);
  for (const LpPassInfo *const *pp = info->passes; *pp; pp++)
    {
      LpPassEntry *e = g_new0 (LpPassEntry, 1);
      e->info = *pp;
      e->plugin = info;
      e->file = file;
      e->file_digest = reg->files->pdata[reg->files->len - 1];
      g_hash_table_insert (reg->passes, (gpointer) (*pp)->name, e);
    }
  return TRUE;
}

int
lp_compare_str_ptr (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

void
lp_registry_load_dir (LpRegistry *reg, const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, "." G_MODULE_SUFFIX))
      g_ptr_array_add (names, g_strdup (name));
  /* Sorted, so which of two clashing plugins wins does not depend on readdir. */
  g_ptr_array_sort (names, lp_compare_str_ptr);
  for (guint i = 0; i < names->len; i++)
    {
      if (g_hash_table_contains (reg->basenames, names->pdata[i]))
        continue;
      g_autofree char *path = g_build_filename (dir, names->pdata[i], NULL);
      if (lp_registry_load_file (reg, path, NULL))
        g_hash_table_add (reg->basenames, g_strdup (names->pdata[i]));
    }
}

void
lp_registry_load_default (LpRegistry *reg)
{
  const char *env = g_getenv ("LLMPRESS_PLUGIN_PATH");
  if (env != NULL)
    {
      g_auto (GStrv) dirs = g_strsplit (env, G_SEARCHPATH_SEPARATOR_S, -1);
      for (char **d = dirs; *d; d++)
        if (**d)
          lp_registry_load_dir (reg, *d);
    }
  const char *sys = g_getenv ("LLMPRESS_PLUGIN_SYSTEM_PATH");
  if (sys == NULL)
    lp_registry_load_dir (reg, LP_PLUGINSDIR);
  else
    {
      g_auto (GStrv) dirs = g_strsplit (sys, G_SEARCHPATH_SEPARATOR_S, -1);
      for (char **d = dirs; *d; d++)
        if (**d)
          lp_registry_load_dir (reg, *d);
    }
}

const LpPassEntry *
lp_registry_lookup (const LpRegistry *reg, const char *pass)
{
  return g_hash_table_lookup (reg->passes, pass);
}

static int
cmp_entry (gconstpointer a, gconstpointer b)
{
  const LpPassEntry *x = *(const LpPassEntry *const *) a, *y = *(const LpPassEntry *const *) b;
  return strcmp (x->info->name, y->info->name);
}

GPtrArray *
lp_registry_passes (const LpRegistry *reg)
{
  GPtrArray *all = g_ptr_array_new ();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init (&it, reg->passes);
  while (g_hash_table_iter_next (&it, NULL, &v))
    g_ptr_array_add (all, v);
  g_ptr_array_sort (all, cmp_entry);
  return all;
}

GPtrArray *
lp_registry_rejects (const LpRegistry *reg)
{
  return reg->rejects;
}

char *
lp_pass_family (const LpPassEntry *entry)
{
  const char *dot = strchr (entry->info->name, '.');
  return dot ? g_strndup (entry->info->name, dot - entry->info->name) : g_strdup (entry->plugin->name);
}

const LpParamSpec *
lp_pass_info_find_param (const LpPassInfo *info, const char *name)
{
  for (const LpParamSpec *s = info->params; s && s->name; s++)
    if (strcmp (s->name, name) == 0)
      return s;
  return NULL;
}

const LpInputSpec *
lp_pass_info_find_input (const LpPassInfo *info, const char *name)
{
  for (const LpInputSpec *s = info->inputs; s && s->name; s++)
    if (strcmp (s->name, name) == 0)
      return s;
  return NULL;
}

guint
lp_pass_info_n_params (const LpPassInfo *info)
{
  guint n = 0;
  for (const LpParamSpec *s = info->params; s && s->name; s++)
    n++;
  return n;
}

static guint
edit_distance (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  g_autofree guint *row = g_new (guint, lb + 1);
  for (gsize j = 0; j <= lb; j++)
    row[j] = (guint) j;
  for (gsize i = 1; i <= la; i++)
    {
      guint diag = row[0];
      row[0] = (guint) i;
      for (gsize j = 1; j <= lb; j++)
        {
          guint up = row[j];
          guint sub = diag + (a[i - 1] != b[j - 1]);
          row[j] = MIN (sub, MIN (up + 1, row[j - 1] + 1));
          diag = up;
        }
    }
  return row[lb];
}

const char *
lp_suggest (const char *word, const char *const *candidates, guint n)
{
  const char *best = NULL;
  guint best_d = G_MAXUINT;
  guint limit = MAX (2, (guint) strlen (word) / 3);
  for (guint i = 0; i < n; i++)
    {
      const char *c = candidates[i];
      const char *dot = strchr (c, '.');
      /* "magnitude" for "prune.magnitude": the method alone. */
      guint d = edit_distance (word, c);
      if (dot && strcmp (dot + 1, word) == 0)
        d = 1;
      if (d < best_d)
        best_d = d, best = c;
    }
  return best_d <= limit ? best : NULL;
}

char *
lp_did_you_mean (const char *word, const char *const *candidates, guint n)
{
  const char *s = lp_suggest (word, candidates, n);
  return s ? g_strdup_printf (" (did you mean '%s'?)", s) : g_strdup ("");
}
