/* llmpress — the artifact cache.  Entries are directories renamed into place
 * complete (LpAtomicDir), so readers never see a partial one; models are
 * stored as GGUF, which keeps every metadata key. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <utime.h>
#include <glib/gstdio.h>

#include "lp-internal.h"
#include "cache.h"

struct _LpCache {
  char *dir;   /* DIR/v1 */
  char *root;  /* DIR */
};

char *
lp_cache_default_dir (void)
{
  const char *env = g_getenv ("LLMPRESS_CACHE_DIR");
  if (env != NULL && *env)
    return g_strdup (env);
  return g_build_filename (g_get_user_cache_dir (), "llmpress", NULL);
}

LpCache *
lp_cache_open (const char *dir, GError **error)
{
  g_autofree char *v1 = g_build_filename (dir, "v1", NULL);
  if (g_mkdir_with_parents (v1, 0755) != 0)
    {
      int e = errno;
      lp_set_error (error, LP_ERROR_IO, "%s: cannot create the cache directory: %s", v1, g_strerror (e));
      return NULL;
    }
  LpCache *c = g_new0 (LpCache, 1);
  c->dir = g_steal_pointer (&v1);
  c->root = g_strdup (dir);
  return c;
}

void
lp_cache_free (LpCache *cache)
{
  if (cache == NULL)
    return;
  g_free (cache->dir);
  g_free (cache->root);
  g_free (cache);
}

const char *
lp_cache_dir (const LpCache *cache)
{
  return cache->root;
}

char *
lp_cache_key (const char *components)
{
  return g_compute_checksum_for_string (G_CHECKSUM_SHA256, components, -1);
}

static char *
entry_dir (LpCache *cache, const char *key)
{
  char shard[3] = { key[0], key[1], 0 };
  return g_build_filename (cache->dir, shard, key, NULL);
}

static GKeyFile *
read_entry (LpCache *cache, const char *key)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_autofree char *ini = g_build_filename (dir, "entry.ini", NULL);
  GKeyFile *kf = g_key_file_new ();
  if (!g_key_file_load_from_file (kf, ini, G_KEY_FILE_NONE, NULL))
    {
      g_key_file_unref (kf);
      return NULL;
    }
  return kf;
}

gboolean
lp_cache_has (LpCache *cache, const char *key)
{
  GKeyFile *kf = read_entry (cache, key);
  if (kf == NULL)
    return FALSE;
  g_key_file_unref (kf);
  return TRUE;
}

char *
lp_cache_entry_get (LpCache *cache, const char *key, const char *field)
{
  g_autoptr (GKeyFile) kf = read_entry (cache, key);
  return kf ? g_key_file_get_string (kf, "entry", field, NULL) : NULL;
}

LpArtifact *
lp_cache_load (LpCache *cache, const char *key, GError **error)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_autoptr (GKeyFile) kf = read_entry (cache, key);
  if (kf == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "%s: no cache entry", dir);
      return NULL;
    }
  g_autofree char *kind = g_key_file_get_string (kf, "entry", "kind", NULL);
  if (g_strcmp0 (kind, "model") == 0)
    {
      g_autofree char *path = g_build_filename (dir, "model.gguf", NULL);
      g_autoptr (LpModel) m = lp_model_load (path, NULL, error);
      if (m == NULL)
        return NULL;
      return lp_artifact_new_model (m);
    }
  if (g_strcmp0 (kind, "metrics") == 0)
    {
      g_autofree char *path = g_build_filename (dir, "metrics.ini", NULL);
      g_autofree char *data = NULL;
      GError *e = NULL;
      if (!g_file_get_contents (path, &data, NULL, &e))
        {
          lp_set_error (error, LP_ERROR_IO, "%s: %s", path, e->message);
          g_error_free (e);
          return NULL;
        }
      LpMeta *meta = lp_metrics_from_ini (data, path, error);
      return meta ? lp_artifact_new_metrics (meta) : NULL;
    }
  if (g_strcmp0 (kind, "stats") == 0)
    {
      g_autofree char *path = g_build_filename (dir, "stats.gguf", NULL);
      g_autoptr (LpStats) st = lp_stats_load (path, error);
      return st ? lp_artifact_new_stats (st) : NULL;
    }
  if (g_strcmp0 (kind, "none") == 0)
    return NULL;
  lp_set_error (error, LP_ERROR_FORMAT, "%s/entry.ini: kind: expected model, metrics, stats or none, found '%s'", dir,
                kind ? kind : "nothing");
  return NULL;
}

gboolean
lp_cache_store (LpCache *cache, const char *key, LpArtifact *artifact, GHashTable *fields, GError **error)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_autofree char *shard = g_path_get_dirname (dir);
  if (g_mkdir_with_parents (shard, 0755) != 0)
    {
      int e = errno;
      lp_set_error (error, LP_ERROR_IO, "%s: cannot create: %s", shard, g_strerror (e));
      return FALSE;
    }
  LpAtomicDir *ad = lp_atomic_dir_new (dir, error);
  if (ad == NULL)
    return FALSE;
  const char *tmp = lp_atomic_dir_path (ad);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_key_file_set_string (kf, "entry", "key", key);
  g_key_file_set_string (kf, "entry", "kind", lp_artifact_kind_name (lp_artifact_kind (artifact)));
  if (lp_artifact_kind (artifact) == LP_ARTIFACT_NONE)
    g_key_file_set_string (kf, "entry", "kind", "none");
  gboolean ok = TRUE;
  if (lp_artifact_kind (artifact) == LP_ARTIFACT_MODEL)
    {
      g_autofree char *path = g_build_filename (tmp, "model.gguf", NULL);
      LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
      opts.format = LP_FORMAT_GGUF;
      ok = lp_model_save (lp_artifact_get_model (artifact), path, &opts, error);
    }
  else if (lp_artifact_kind (artifact) == LP_ARTIFACT_STATS)
    {
      g_autofree char *path = g_build_filename (tmp, "stats.gguf", NULL);
      ok = lp_stats_save (lp_artifact_get_stats (artifact), path, error);
    }
  else if (lp_artifact_kind (artifact) == LP_ARTIFACT_METRICS)
    {
      g_autofree char *path = g_build_filename (tmp, "metrics.ini", NULL);
      g_autofree char *data = lp_metrics_to_ini (lp_artifact_get_metrics (artifact));
      GError *e = NULL;
      ok = g_file_set_contents (path, data, -1, &e);
      if (!ok)
        {
          lp_set_error (error, LP_ERROR_IO, "%s: %s", path, e->message);
          g_error_free (e);
        }
    }
  if (ok && fields != NULL)
    {
      g_autoptr (GList) names = g_hash_table_get_keys (fields);
      names = g_list_sort (names, (GCompareFunc) strcmp);
      for (GList *l = names; l; l = l->next)
        g_key_file_set_string (kf, "entry", l->data, g_hash_table_lookup (fields, l->data));
    }
  if (ok)
    {
      g_autofree char *ini = g_build_filename (tmp, "entry.ini", NULL);
      GError *e = NULL;
      ok = g_key_file_save_to_file (kf, ini, &e);
      if (!ok)
        {
          lp_set_error (error, LP_ERROR_IO, "%s: %s", ini, e->message);
          g_error_free (e);
        }
    }
  if (!ok)
    {
      lp_atomic_dir_abort (ad);
      return FALSE;
    }
  return lp_atomic_dir_commit (ad, error);
}

void
lp_cache_touch (LpCache *cache, const char *key)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_utime (dir, NULL);
}

static char *
history_path (LpCache *cache, const char *node_id)
{
  g_autofree char *h = g_compute_checksum_for_string (G_CHECKSUM_SHA256, node_id, -1);
  return g_build_filename (cache->dir, "history", h, NULL);
}

char *
lp_cache_get_history (LpCache *cache, const char *node_id)
{
  g_autofree char *path = history_path (cache, node_id);
  char *data = NULL;
  if (!g_file_get_contents (path, &data, NULL, NULL))
    return NULL;
  return data;
}

void
lp_cache_set_history (LpCache *cache, const char *node_id, const char *components)
{
  g_autofree char *path = history_path (cache, node_id);
  g_autofree char *dir = g_path_get_dirname (path);
  g_mkdir_with_parents (dir, 0755);
  /* Only --explain reads it: a failure costs a vaguer explanation. */
  g_file_set_contents (path, components, -1, NULL);
}

typedef struct {
  char *path;
  gint64 mtime;
  guint64 size;
} GcEntry;

static void
gc_entry_free (GcEntry *e)
{
  g_free (e->path);
  g_free (e);
}

static int
gc_cmp_age (gconstpointer a, gconstpointer b)
{
  const GcEntry *x = *(const GcEntry *const *) a, *y = *(const GcEntry *const *) b;
  return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

gboolean
lp_cache_gc (LpCache *cache, gint64 max_age_s, guint64 max_bytes, guint *n_removed, guint64 *bytes_freed,
             guint64 *bytes_kept, GError **error)
{
  guint removed = 0;
  guint64 freed = 0, kept = 0;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  g_autoptr (GPtrArray) entries = g_ptr_array_new_with_free_func ((GDestroyNotify) gc_entry_free);
  GError *e = NULL;
  g_autoptr (GDir) top = g_dir_open (cache->dir, 0, &e);
  if (top == NULL)
    {
      lp_set_error (error, LP_ERROR_IO, "%s: %s", cache->dir, e->message);
      g_error_free (e);
      return FALSE;
    }
  const char *shard;
  while ((shard = g_dir_read_name (top)) != NULL)
    {
      if (strlen (shard) != 2)
        continue; /* history/ */
      g_autofree char *sdir = g_build_filename (cache->dir, shard, NULL);
      g_autoptr (GDir) d = g_dir_open (sdir, 0, NULL);
      const char *name;
      while (d && (name = g_dir_read_name (d)) != NULL)
        {
          g_autofree char *path = g_build_filename (sdir, name, NULL);
          GStatBuf st;
          if (g_stat (path, &st) != 0)
            continue;
          guint64 size = lp_path_size (path);
          /* A temporary left by a killed run (".KEY.tmp-XXXXXX"); one younger
           * than an hour may belong to a run still writing it. */
          if (name[0] == '.')
            {
              if (now - st.st_mtime > 3600 || max_age_s == 0)
                {
                  lp_remove_tree (path);
                  removed++;
                  freed += size;
                }
              continue;
            }
          GcEntry *ge = g_new0 (GcEntry, 1);
          ge->path = g_steal_pointer (&path);
          ge->mtime = st.st_mtime;
          ge->size = size;
          g_ptr_array_add (entries, ge);
          kept += size;
        }
    }
  g_ptr_array_sort (entries, gc_cmp_age);
  for (guint i = 0; i < entries->len; i++)
    {
      GcEntry *ge = entries->pdata[i];
      gboolean too_old = max_age_s >= 0 && now - ge->mtime >= max_age_s;
      gboolean too_big = max_bytes > 0 && kept > max_bytes;
      if (!too_old && !too_big)
        continue;
      lp_remove_tree (ge->path);
      removed++;
      freed += ge->size;
      kept -= ge->size;
    }
  if (n_removed)
    *n_removed = removed;
  if (bytes_freed)
    *bytes_freed = freed;
  if (bytes_kept)
    *bytes_kept = kept;
  return TRUE;
}

char *
lp_metrics_to_ini (const LpMeta *metrics)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  for (guint i = 0; i < lp_meta_n_keys (metrics); i++)
    {
      const char *k = lp_meta_key (metrics, i);
      const LpValue *v = lp_meta_get (metrics, k);
      g_autofree char *text = NULL;
      char buf[G_ASCII_DTOSTR_BUF_SIZE];
      switch (v->type)
        {
        case LP_VALUE_U8: case LP_VALUE_U16: case LP_VALUE_U32: case LP_VALUE_U64:
          text = g_strdup_printf ("u64:%" G_GUINT64_FORMAT, v->u);
          break;
        case LP_VALUE_I8: case LP_VALUE_I16: case LP_VALUE_I32: case LP_VALUE_I64:
          text = g_strdup_printf ("i64:%" G_GINT64_FORMAT, v->i);
          break;
        case LP_VALUE_F32: case LP_VALUE_F64:
          text = g_strdup_printf ("f64:%s", g_ascii_dtostr (buf, sizeof buf, v->f));
          break;
        case LP_VALUE_BOOL:
          text = g_strdup (v->u ? "bool:true" : "bool:false");
          break;
        case LP_VALUE_STRING:
          text = g_strdup_printf ("str:%s", v->s);
          break;
        default:
          continue; /* metrics are scalars */
        }
      g_key_file_set_string (kf, "metrics", k, text);
    }
  return g_key_file_to_data (kf, NULL, NULL);
}

LpMeta *
lp_metrics_from_ini (const char *data, const char *path, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  GError *e = NULL;
  if (!g_key_file_load_from_data (kf, data, (gsize) -1, G_KEY_FILE_NONE, &e))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: %s", path, e->message);
      g_error_free (e);
      return NULL;
    }
  g_autoptr (LpMeta) m = lp_meta_new ();
  g_auto (GStrv) keys = g_key_file_get_keys (kf, "metrics", NULL, NULL);
  for (char **k = keys; k && *k; k++)
    {
      g_autofree char *text = g_key_file_get_string (kf, "metrics", *k, NULL);
      LpValue *v = g_new0 (LpValue, 1);
      gboolean ok = text != NULL && strlen (text) >= 4 && text[3] == ':';
      const char *val = ok ? text + 4 : "";
      if (ok && g_str_has_prefix (text, "u64:"))
        v->type = LP_VALUE_U64, ok = g_ascii_string_to_unsigned (val, 10, 0, G_MAXUINT64, &v->u, NULL);
      else if (ok && g_str_has_prefix (text, "i64:"))
        v->type = LP_VALUE_I64, ok = g_ascii_string_to_signed (val, 10, G_MININT64, G_MAXINT64, &v->i, NULL);
      else if (ok && g_str_has_prefix (text, "f64:"))
        v->type = LP_VALUE_F64, v->f = g_ascii_strtod (val, NULL), ok = isfinite (v->f);
      else if (ok && g_str_has_prefix (text, "bool"))
        v->type = LP_VALUE_BOOL, v->u = strcmp (val, "true") == 0;
      else if (ok && g_str_has_prefix (text, "str:"))
        v->type = LP_VALUE_STRING, v->s = g_strdup (val);
      else
        ok = FALSE;
      if (!ok)
        {
          g_free (v);
          lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected TYPE:VALUE (u64, i64, f64, bool, str), found '%s'",
                        path, *k, text ? text : "");
          return NULL;
        }
      lp_meta_set (m, *k, v);
    }
  return g_steal_pointer (&m);
}
