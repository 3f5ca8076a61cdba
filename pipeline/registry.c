/* llmpress — the pass registry: finds plugin files, checks their descriptor
 * before trusting anything in it, and indexes their passes by name.
 *
 * Before anything in a file runs, the loader refuses: a world-writable
 * plugin directory (anyone could add a plugin to it; the sticky bit does not
 * stop that) or file, and a file whose ELF dynamic symbol table does not
 * export the entry point (dlopen would run its constructors).  The plugins
 * of the system directory register their passes first, so a user plugin on
 * LLMPRESS_PLUGIN_PATH that declares a pass name a shipped plugin has is
 * the one refused, whichever directory is scanned first. */
#include "config.h"

#include <string.h>
#include <sys/stat.h>
#include <gmodule.h>
#include <glib/gstdio.h>

#include "lp-internal.h"
#include "registry.h"

struct _LpRegistry {
  GPtrArray *modules;     /* GModule *, kept open for the registry's life */
  GPtrArray *files;       /* char *, parallel to modules */
  GHashTable *passes;     /* name -> LpPassEntry * */
  GHashTable *basenames;  /* plugin file names already loaded (shadowing) */
  GPtrArray *rejects;     /* LpPluginReject * */
  GHashTable *seen;       /* "dev:inode" of every file and directory examined */
};

/* A plugin file opened and checked, its passes not registered yet. */
typedef struct {
  char *path;
  GModule *module;
  const LpPluginInfo *info;
} Candidate;

static void
candidate_free (Candidate *c)
{
  if (c->module != NULL)
    g_module_close (c->module);
  g_free (c->path);
  g_free (c);
}

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
  reg->seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
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
  g_hash_table_unref (reg->seen);
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
  if ((guint) p->output > LP_ARTIFACT_LOGITS)
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
    if (in->kind < LP_ARTIFACT_MODEL || in->kind > LP_ARTIFACT_LOGITS)
      return g_strdup_printf ("pass %s: input %s: kind must be a model, metrics, stats or logits", p->name, in->name);
  return NULL;
}

/* TRUE the first time a file or directory (by device and inode, so "dir",
 * "dir/." and a symlink to it are one) is met; a missing one counts as new. */
static gboolean
first_visit (LpRegistry *reg, const GStatBuf *st)
{
  char *key = g_strdup_printf ("%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT, (guint64) st->st_dev, (guint64) st->st_ino);
  if (g_hash_table_contains (reg->seen, key))
    {
      g_free (key);
      return FALSE;
    }
  g_hash_table_add (reg->seen, key);
  return TRUE;
}

/* Open a plugin file and check everything about it but pass-name clashes.
 * Nothing in the file runs before its dynamic symbol table shows the entry
 * point; then dlopen runs its constructors and the entry point is called. */
static Candidate *
open_candidate (LpRegistry *reg, const char *path, GError **error)
{
  GStatBuf st;
  if (g_stat (path, &st) == 0 && !S_ISREG (st.st_mode))
    {
      /* Opening a FIFO to read its symbols would wait for a writer. */
      g_autofree char *found = lp_path_describe (path);
      refuse (reg, path, error, "expected a regular file (a shared object), found %s", found);
      return NULL;
    }
  if (g_stat (path, &st) == 0 && (st.st_mode & S_IWOTH))
    {
      refuse (reg, path, error, "world-writable file (mode %04o): anyone could change its code; skipped",
              (guint) (st.st_mode & 07777));
      return NULL;
    }
#if defined(__ELF__) && GLIB_SIZEOF_VOID_P == 8 && G_BYTE_ORDER == G_LITTLE_ENDIAN
  {
    GError *local = NULL;
    g_autoptr (GMappedFile) mf = lp_map_file (path, &local);
    gboolean exported = FALSE;
    if (mf == NULL
        || !lp_elf_exports (path, g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf),
                            LP_PLUGIN_ENTRY_POINT, &exported, &local))
      {
        /* The message already starts with the path. */
        const char *msg = g_str_has_prefix (local->message, path) ? local->message + strlen (path) + 2 : local->message;
        refuse (reg, path, error, "cannot be loaded: %s", msg);
        g_error_free (local);
        return NULL;
      }
    if (!exported)
      {
        refuse (reg, path, error, "not a llmpress plugin: missing entry point %s (not exported by its dynamic symbol table)",
                LP_PLUGIN_ENTRY_POINT);
        return NULL;
      }
  }
#endif
  GModule *module = g_module_open (path, G_MODULE_BIND_LOCAL | G_MODULE_BIND_LAZY);
  if (module == NULL)
    {
      refuse (reg, path, error, "cannot be loaded: %s", g_module_error ());
      return NULL;
    }
  gpointer sym = NULL;
  if (!g_module_symbol (module, LP_PLUGIN_ENTRY_POINT, &sym) || sym == NULL)
    {
      g_module_close (module);
      refuse (reg, path, error, "not a llmpress plugin: missing entry point %s", LP_PLUGIN_ENTRY_POINT);
      return NULL;
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
          if (reason == NULL && !g_hash_table_add (mine, (gpointer) (*pp)->name))
            reason = g_strdup_printf ("duplicate pass name '%s' (already provided by %s)", (*pp)->name, path);
        }
    }
  if (why != NULL || reason != NULL)
    {
      g_module_close (module);
      refuse (reg, path, error, "%s", why ? why : reason);
      return NULL;
    }
  Candidate *c = g_new0 (Candidate, 1);
  c->path = g_strdup (path);
  c->module = module;
  c->info = info;
  return c;
}

/* Index a candidate's passes, or refuse it (alone) when one of its pass
 * names is already registered; frees c either way. */
static gboolean
register_candidate (LpRegistry *reg, Candidate *c, GError **error)
{
  for (const LpPassInfo *const *pp = c->info->passes; *pp; pp++)
    {
      const LpPassEntry *old = g_hash_table_lookup (reg->passes, (*pp)->name);
      if (old != NULL)
        {
          gboolean ok = refuse (reg, c->path, error, "duplicate pass name '%s' (already provided by %s)", (*pp)->name,
                                old->file);
          candidate_free (c);
          return ok;
        }
    }
  const char *path = c->path;
  char *file = g_strdup (path);
  g_ptr_array_add (reg->files, file);
  char *digest = NULL;
  g_autofree char *contents = NULL;
  gsize len = 0;
  if (g_file_get_contents (path, &contents, &len, NULL))
    digest = g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) contents, len);
  g_ptr_array_add (reg->files, digest ? digest : g_strdup ("unreadable"));
  g_ptr_array_add (reg->modules, g_steal_pointer (&c->module));
  for (const LpPassInfo *const *pp = c->info->passes; *pp; pp++)
    {
      LpPassEntry *e = g_new0 (LpPassEntry, 1);
      e->info = *pp;
      e->plugin = c->info;
      e->file = file;
      e->file_digest = reg->files->pdata[reg->files->len - 1];
      g_hash_table_insert (reg->passes, (gpointer) (*pp)->name, e);
    }
  candidate_free (c);
  return TRUE;
}

/* Open a file met for the first time (NULL, silently, when it was already
 * examined: a directory listed twice must not repeat a refusal). */
static Candidate *
open_once (LpRegistry *reg, const char *path, gboolean *again, GError **error)
{
  GStatBuf st;
  *again = g_stat (path, &st) == 0 && !first_visit (reg, &st);
  return *again ? NULL : open_candidate (reg, path, error);
}

gboolean
lp_registry_load_file (LpRegistry *reg, const char *path, GError **error)
{
  gboolean again;
  Candidate *c = open_once (reg, path, &again, error);
  if (again)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: already examined (listed twice?)", path);
      return FALSE;
    }
  return c != NULL && register_candidate (reg, c, error);
}

/* The plugin files of a directory, sorted (so which of two clashing plugins
 * wins does not depend on readdir); none when it was already scanned or is
 * world-writable (refused). */
static GPtrArray *
list_dir (LpRegistry *reg, const char *dir)
{
  GPtrArray *paths = g_ptr_array_new_with_free_func (g_free);
  GStatBuf st;
  if (g_stat (dir, &st) != 0 || !S_ISDIR (st.st_mode) || !first_visit (reg, &st))
    return paths;
  if (st.st_mode & S_IWOTH)
    {
      refuse (reg, dir, NULL,
              "world-writable directory (mode %04o): anyone could add a plugin to it (the sticky bit does not prevent that); its plugins are skipped",
              (guint) (st.st_mode & 07777));
      return paths;
    }
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return paths;
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, "." G_MODULE_SUFFIX))
      g_ptr_array_add (paths, g_build_filename (dir, name, NULL));
  g_ptr_array_sort (paths, lp_compare_str_ptr);
  return paths;
}

static char *
dir_key (const char *dir)
{
  GStatBuf st;
  return g_stat (dir, &st) == 0 ? g_strdup_printf ("%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT, (guint64) st.st_dev,
                                                   (guint64) st.st_ino)
                                : NULL;
}

/* Open the plugins of each directory but those in `skip` (a file name met
 * in an earlier directory shadows the later ones) and append them to `out`. */
static void
open_dirs (LpRegistry *reg, char **dirs, GHashTable *skip, GPtrArray *out)
{
  for (char **d = dirs; d && *d; d++)
    {
      g_autofree char *key = **d ? dir_key (*d) : NULL;
      if (key == NULL || (skip != NULL && g_hash_table_contains (skip, key)))
        continue;
      g_autoptr (GPtrArray) paths = list_dir (reg, *d);
      for (guint i = 0; i < paths->len; i++)
        {
          g_autofree char *base = g_path_get_basename (paths->pdata[i]);
          if (g_hash_table_contains (reg->basenames, base))
            continue;
          gboolean again;
          Candidate *c = open_once (reg, paths->pdata[i], &again, NULL);
          if (c != NULL)
            {
              g_hash_table_add (reg->basenames, g_steal_pointer (&base));
              g_ptr_array_add (out, c);
            }
        }
    }
}

static void
register_all (LpRegistry *reg, GPtrArray *candidates)
{
  for (guint i = 0; i < candidates->len; i++)
    register_candidate (reg, g_steal_pointer (&candidates->pdata[i]), NULL);
}

void
lp_registry_load_dir (LpRegistry *reg, const char *dir)
{
  g_autoptr (GPtrArray) c = g_ptr_array_new ();
  char *dirs[] = { (char *) dir, NULL };
  open_dirs (reg, dirs, NULL, c);
  register_all (reg, c);
}

void
lp_registry_load_default (LpRegistry *reg)
{
  const char *env = g_getenv ("LLMPRESS_PLUGIN_PATH");
  const char *sys = g_getenv ("LLMPRESS_PLUGIN_SYSTEM_PATH");
  g_auto (GStrv) user_dirs = env ? g_strsplit (env, G_SEARCHPATH_SEPARATOR_S, -1) : NULL;
  g_auto (GStrv) sys_dirs = sys ? g_strsplit (sys, G_SEARCHPATH_SEPARATOR_S, -1) : g_strdupv ((char *[]) { LP_PLUGINSDIR, NULL });
  /* Files are opened in path order (the user's directories shadow the
   * system ones by file name), but the system plugins register first: a
   * user plugin that reuses a shipped pass name is refused, not the
   * shipped plugin.  A system directory also listed on the user's path
   * stays a system one. */
  g_autoptr (GHashTable) sys_keys = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (char **d = sys_dirs; *d; d++)
    {
      char *key = **d ? dir_key (*d) : NULL;
      if (key != NULL)
        g_hash_table_add (sys_keys, key);
    }
  g_autoptr (GPtrArray) user = g_ptr_array_new ();
  g_autoptr (GPtrArray) system = g_ptr_array_new ();
  open_dirs (reg, user_dirs, sys_keys, user);
  open_dirs (reg, sys_dirs, NULL, system);
  register_all (reg, system);
  register_all (reg, user);
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
lp_plugin_reject_line (const LpPluginReject *r)
{
  g_autofree char *line = g_strdup_printf ("%s: %s", r->file, r->reason);
  return lp_error_escape (line, FALSE);
}

G_LOCK_DEFINE_STATIC (warned);

void
lp_registry_warn_rejects (const LpRegistry *reg, FILE *out)
{
  /* Refusals already printed by this process (a second registry finds the
   * same bad files again). */
  static GHashTable *warned = NULL;
  G_LOCK (warned);
  if (warned == NULL)
    warned = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < reg->rejects->len; i++)
    {
      char *line = lp_plugin_reject_line (reg->rejects->pdata[i]);
      if (g_hash_table_add (warned, line))
        fprintf (out, "llmpress: warning: plugin refused: %s\n", line);
    }
  G_UNLOCK (warned);
}

char *
lp_pass_family (const LpPassEntry *entry)
{
  const char *dot = strchr (entry->info->name, '.');
  return dot ? g_strndup (entry->info->name, dot - entry->info->name) : g_strdup (entry->plugin->name);
}

gboolean
lp_pass_uses_calibration (const LpPassEntry *entry)
{
  return (entry->info->flags & LP_PASS_USES_CALIBRATION) != 0;
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
