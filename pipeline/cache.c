/* llmpress — the artifact cache.  Entries are directories renamed into place
 * complete by their first writer (LpAtomicDir), so readers never see a
 * partial one and concurrent runs never replace one another's; models are
 * stored as GGUF, which keeps every metadata key, and so are statistics
 * (stats.gguf) and teacher logits (logits.gguf), each in a file of its own.
 *
 * Every file of an entry is listed in entry.ini's [files] with its CRC-32
 * and size, computed as it was written, and entry.ini ends with a seal, the
 * CRC-32 of everything before it.  Finding an entry (lp_cache_has) checks
 * the seal and the sizes; loading one checks every byte.  A damaged entry is
 * discarded with one warning and is a miss from then on. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <utime.h>
#include <glib/gstdio.h>

#include "lp-internal.h"
#include "cache.h"

/* v1 entries carried no checksums; v2 held integer grids as their values
 * and masks only as zeros, so a hit lost the forms a fresh run has (a
 * GPTQ model saved as f32, not as its block types).  v3 is a fresh start:
 * gc removes the older layouts. */
#define LAYOUT "v3"
#define SEAL_FMT "[seal]\ncrc32=%08x\n"
#define SEAL_LEN 22

struct _LpCache {
  char *dir;   /* DIR/v3 */
  char *root;  /* DIR */
};

typedef enum { ENTRY_ABSENT, ENTRY_DAMAGED, ENTRY_OK } EntryState;

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
  /* Nothing is created here: a store creates what it needs, and gc or
   * verify of a cache that does not exist has nothing to do. */
  GStatBuf st;
  if (g_stat (dir, &st) == 0 && !S_ISDIR (st.st_mode))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: expected a cache directory, found a file", dir);
      return NULL;
    }
  LpCache *c = g_new0 (LpCache, 1);
  c->dir = g_build_filename (dir, LAYOUT, NULL);
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

/* The file holding an entry's artifact, by kind; NULL for none. */
static const char *
artifact_file (const char *kind)
{
  if (g_strcmp0 (kind, "model") == 0)
    return "model.gguf";
  if (g_strcmp0 (kind, "metrics") == 0)
    return "metrics.ini";
  if (g_strcmp0 (kind, "stats") == 0)
    return "stats.gguf";
  if (g_strcmp0 (kind, "logits") == 0)
    return "logits.gguf";
  return NULL;
}

/* Move the entry out of sight first (readers then miss it whole), then
 * delete it.  Losing the rename to another remover is fine. */
static void
remove_entry (const char *dir)
{
  static gint counter;
  g_autofree char *parent = g_path_get_dirname (dir);
  g_autofree char *base = g_path_get_basename (dir);
  g_autofree char *aside = g_strdup_printf ("%s/.%s.gone-%d-%d", parent, base, (int) getpid (),
                                            g_atomic_int_add (&counter, 1));
  if (g_rename (dir, aside) == 0)
    lp_remove_tree (aside);
}

static void
discard (LpCache *cache, const char *key, const char *why)
{
  g_autofree char *dir = entry_dir (cache, key);
  lp_warn ("%s: damaged cache entry (%s): discarded, it will be recomputed", dir, why);
  remove_entry (dir);
}

/* entry.ini of an entry, its seal checked; NULL with *state ABSENT when
 * there is no entry, DAMAGED (and *why) when it cannot be trusted. */
static GKeyFile *
read_entry (LpCache *cache, const char *key, EntryState *state, char **why)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_autofree char *ini = g_build_filename (dir, "entry.ini", NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  GError *e = NULL;
  *state = ENTRY_DAMAGED;
  if (!g_file_get_contents (ini, &data, &len, &e))
    {
      if (!g_file_test (dir, G_FILE_TEST_EXISTS))
        *state = ENTRY_ABSENT;
      else if (why)
        *why = g_strdup_printf ("entry.ini: %s", e->message);
      g_error_free (e);
      return NULL;
    }
  char seal[SEAL_LEN + 1];
  if (len >= SEAL_LEN)
    g_snprintf (seal, sizeof seal, SEAL_FMT, (guint) lp_crc32 (0, data, len - SEAL_LEN));
  if (len < SEAL_LEN || memcmp (data + len - SEAL_LEN, seal, SEAL_LEN) != 0)
    {
      if (why)
        *why = g_strdup ("entry.ini: its checksum does not match its content");
      return NULL;
    }
  GKeyFile *kf = g_key_file_new ();
  if (!g_key_file_load_from_data (kf, data, len, G_KEY_FILE_NONE, &e))
    {
      if (why)
        *why = g_strdup_printf ("entry.ini: %s", e->message);
      g_error_free (e);
      g_key_file_unref (kf);
      return NULL;
    }
  *state = ENTRY_OK;
  return kf;
}

/* "crc32:XXXXXXXX size=N" of a whole file, as LpAtomicFile records it. */
static char *
file_digest (const char *path, GError **error)
{
  g_autoptr (GBytes) all = lp_map_file_bytes (path, error);
  if (all == NULL)
    return NULL;
  gsize n = 0;
  const guint8 *p = g_bytes_get_data (all, &n);
  guint32 crc = 0;
  /* In chunks whose pages are dropped once summed: a model's entry may be
   * larger than memory. */
  for (gsize at = 0, step = 64 << 20; at < n; at += step)
    {
      gsize len = MIN (step, n - at);
      crc = lp_crc32 (crc, p + at, len);
      lp_pages_release (p + at, len);
    }
  return g_strdup_printf ("crc32:%08x size=%" G_GSIZE_FORMAT, (guint) crc, n);
}

/* The files entry.ini lists are there with their recorded size, and with
 * full their recorded checksum; the artifact's file among them. */
static gboolean
verify_files (LpCache *cache, const char *key, GKeyFile *kf, gboolean full, char **why)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_autofree char *kind = g_key_file_get_string (kf, "entry", "kind", NULL);
  const char *needed = artifact_file (kind);
  if (needed == NULL && g_strcmp0 (kind, "none") != 0)
    {
      *why = g_strdup_printf ("entry.ini: kind: expected model, metrics, stats, logits or none, found '%s'",
                              kind ? kind : "nothing");
      return FALSE;
    }
  if (needed != NULL && !g_key_file_has_key (kf, "files", needed, NULL))
    {
      *why = g_strdup_printf ("entry.ini: [files] does not list %s", needed);
      return FALSE;
    }
  g_auto (GStrv) names = g_key_file_get_keys (kf, "files", NULL, NULL);
  for (char **name = names; name && *name; name++)
    {
      g_autofree char *want = g_key_file_get_string (kf, "files", *name, NULL);
      g_autofree char *path = g_build_filename (dir, *name, NULL);
      const char *size_text = want ? strstr (want, " size=") : NULL;
      guint64 size = 0;
      if (size_text == NULL || !g_ascii_string_to_unsigned (size_text + 6, 10, 0, G_MAXUINT64, &size, NULL))
        {
          *why = g_strdup_printf ("entry.ini: %s: expected 'crc32:XXXXXXXX size=N', found '%s'", *name,
                                  want ? want : "");
          return FALSE;
        }
      GStatBuf st;
      if (g_stat (path, &st) != 0)
        {
          *why = g_strdup_printf ("%s: %s", *name, g_strerror (errno));
          return FALSE;
        }
      if ((guint64) st.st_size != size)
        {
          *why = g_strdup_printf ("%s: expected %" G_GUINT64_FORMAT " bytes, found %" G_GINT64_FORMAT, *name, size,
                                  (gint64) st.st_size);
          return FALSE;
        }
      if (!full)
        continue;
      GError *e = NULL;
      g_autofree char *have = file_digest (path, &e);
      if (have == NULL)
        {
          *why = g_strdup (e->message);
          g_error_free (e);
          return FALSE;
        }
      if (strcmp (have, want) != 0)
        {
          *why = g_strdup_printf ("%s: expected %s, found %s", *name, want, have);
          return FALSE;
        }
    }
  return TRUE;
}

/* An entry to use: its entry.ini, checked (every byte of every file with
 * full).  A damaged one is discarded; NULL then, as for a missing one. */
static GKeyFile *
open_entry (LpCache *cache, const char *key, gboolean full)
{
  EntryState state;
  g_autofree char *why = NULL;
  GKeyFile *kf = read_entry (cache, key, &state, &why);
  if (kf != NULL && !verify_files (cache, key, kf, full, &why))
    g_clear_pointer (&kf, g_key_file_unref);
  if (kf == NULL && state != ENTRY_ABSENT)
    discard (cache, key, why);
  return kf;
}

gboolean
lp_cache_has (LpCache *cache, const char *key)
{
  GKeyFile *kf = open_entry (cache, key, FALSE);
  if (kf == NULL)
    return FALSE;
  g_key_file_unref (kf);
  return TRUE;
}

char *
lp_cache_entry_get (LpCache *cache, const char *key, const char *field)
{
  EntryState state;
  g_autoptr (GKeyFile) kf = read_entry (cache, key, &state, NULL);
  return kf ? g_key_file_get_string (kf, "entry", field, NULL) : NULL;
}

static LpArtifact *
load_artifact (const char *dir, const char *kind, GError **error)
{
  g_autofree char *path = g_build_filename (dir, artifact_file (kind), NULL);
  if (strcmp (kind, "model") == 0)
    {
      g_autoptr (LpModel) m = lp_model_load (path, NULL, error);
      return m ? lp_artifact_new_model (m) : NULL;
    }
  if (strcmp (kind, "stats") == 0)
    {
      g_autoptr (LpStats) st = lp_stats_load (path, error);
      return st ? lp_artifact_new_stats (st) : NULL;
    }
  if (strcmp (kind, "logits") == 0)
    {
      g_autoptr (LpLogits) lg = lp_logits_load (path, error);
      return lg ? lp_artifact_new_logits (lg) : NULL;
    }
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

LpArtifact *
lp_cache_load (LpCache *cache, const char *key, GError **error)
{
  g_autofree char *dir = entry_dir (cache, key);
  g_autoptr (GKeyFile) kf = open_entry (cache, key, TRUE);
  if (kf == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "%s: no cache entry", dir);
      return NULL;
    }
  g_autofree char *kind = g_key_file_get_string (kf, "entry", "kind", NULL);
  if (strcmp (kind, "none") == 0)
    return NULL;
  GError *e = NULL;
  LpArtifact *a = load_artifact (dir, kind, &e);
  if (a == NULL)
    {
      /* Its bytes are the ones written, so this is a reader that changed
       * (or a writer bug): recomputing is still the way out. */
      discard (cache, key, e->message);
      lp_set_error (error, LP_ERROR_MISSING, "%s: unreadable cache entry: %s", dir, e->message);
      g_error_free (e);
    }
  return a;
}

/* A small file written through LpAtomicFile, its digest in *digest. */
static gboolean
write_small_file (const char *path, const char *data, gsize len, char **digest, GError **error)
{
  LpAtomicFile *af = lp_atomic_file_new (path, error);
  if (af == NULL)
    return FALSE;
  if (!lp_atomic_file_write (af, data, len, error))
    {
      lp_atomic_file_abort (af);
      return FALSE;
    }
  if (digest)
    *digest = lp_atomic_file_digest (af);
  return lp_atomic_file_commit (af, error);
}

/* Write the artifact's file into the entry being built; its name and
 * digest in *name, *digest (none for a NONE artifact). */
static gboolean
write_artifact (const char *tmp, LpArtifact *artifact, const char **name, char **digest, GError **error)
{
  *name = artifact_file (lp_artifact_kind_name (lp_artifact_kind (artifact)));
  if (*name == NULL)
    return TRUE;
  g_autofree char *path = g_build_filename (tmp, *name, NULL);
  if (lp_artifact_kind (artifact) == LP_ARTIFACT_METRICS)
    {
      g_autofree char *data = lp_metrics_to_ini (lp_artifact_get_metrics (artifact));
      return write_small_file (path, data, strlen (data), digest, error);
    }
  /* The format writers commit through LpAtomicFile: the digest is the one
   * computed while the bytes went out. */
  g_autoptr (GHashTable) written = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  lp_atomic_file_log_commits (written);
  gboolean ok;
  if (lp_artifact_kind (artifact) == LP_ARTIFACT_MODEL)
    {
      LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
      opts.format = LP_FORMAT_GGUF;
      opts.exact_forms = TRUE;
      ok = lp_model_save (lp_artifact_get_model (artifact), path, &opts, error);
    }
  else if (lp_artifact_kind (artifact) == LP_ARTIFACT_STATS)
    ok = lp_stats_save (lp_artifact_get_stats (artifact), path, error);
  else
    ok = lp_logits_save (lp_artifact_get_logits (artifact), path, error);
  lp_atomic_file_log_commits (NULL);
  if (!ok)
    return FALSE;
  *digest = g_strdup (g_hash_table_lookup (written, path));
  if (*digest == NULL)
    *digest = file_digest (path, error);
  return *digest != NULL;
}

/* entry.ini in dir: kf's text sealed with its CRC-32. */
static gboolean
write_entry_ini (const char *dir, GKeyFile *kf, GError **error)
{
  gsize len = 0;
  g_autofree char *text = g_key_file_to_data (kf, &len, NULL);
  g_autofree char *sealed = g_strdup_printf ("%s" SEAL_FMT, text, (guint) lp_crc32 (0, text, len));
  g_autofree char *ini = g_build_filename (dir, "entry.ini", NULL);
  return write_small_file (ini, sealed, strlen (sealed), NULL, error);
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
  const char *name = NULL;
  g_autofree char *digest = NULL;
  gboolean ok = write_artifact (tmp, artifact, &name, &digest, error);
  g_key_file_set_string (kf, "entry", "kind", name ? lp_artifact_kind_name (lp_artifact_kind (artifact)) : "none");
  if (ok && fields != NULL)
    {
      g_autoptr (GList) names = g_hash_table_get_keys (fields);
      names = g_list_sort (names, (GCompareFunc) strcmp);
      for (GList *l = names; l; l = l->next)
        g_key_file_set_string (kf, "entry", l->data, g_hash_table_lookup (fields, l->data));
    }
  if (ok && name != NULL)
    g_key_file_set_string (kf, "files", name, digest);
  if (ok)
    ok = write_entry_ini (tmp, kf, error);
  if (!ok)
    {
      lp_atomic_dir_abort (ad);
      return FALSE;
    }
  gboolean existed;
  if (!lp_atomic_dir_commit_new (ad, &existed, error))
    return FALSE;
  /* The entry was there (the node ran again because a file it writes was
   * removed or changed): it keeps its artifact, but takes the fingerprint
   * of the files just written, or the node would run on every run. */
  const char *outputs = fields ? g_hash_table_lookup (fields, "outputs") : NULL;
  if (existed && outputs != NULL)
    {
      EntryState state;
      g_autoptr (GKeyFile) old = read_entry (cache, key, &state, NULL);
      if (old != NULL)
        {
          g_key_file_set_string (old, "entry", "outputs", outputs);
          return write_entry_ini (dir, old, error);
        }
    }
  return TRUE;
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

/* Calls fn on each entry directory (and each temporary a killed run left:
 * a name starting with '.'). */
static void
for_each_entry (LpCache *cache, void (*fn) (const char *shard_dir, const char *name, gpointer data), gpointer data)
{
  g_autoptr (GDir) top = g_dir_open (cache->dir, 0, NULL);
  const char *shard;
  while (top && (shard = g_dir_read_name (top)) != NULL)
    {
      if (strlen (shard) != 2)
        continue; /* history/ */
      g_autofree char *sdir = g_build_filename (cache->dir, shard, NULL);
      g_autoptr (GDir) d = g_dir_open (sdir, 0, NULL);
      const char *name;
      while (d && (name = g_dir_read_name (d)) != NULL)
        fn (sdir, name, data);
    }
}

typedef struct {
  gint64 now;
  gboolean all;
  GPtrArray *entries;
  guint removed;
  guint64 freed, kept;
} GcState;

static void
gc_visit (const char *sdir, const char *name, gpointer data)
{
  GcState *gs = data;
  g_autofree char *path = g_build_filename (sdir, name, NULL);
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    return;
  guint64 size = lp_path_size (path);
  /* A temporary left by a killed run (".KEY.tmp-XXXXXX"); one younger
   * than an hour may belong to a run still writing it.  Moved aside first,
   * as an entry is: deleted in place, a run could rename it into place
   * half deleted (a damaged entry); moved, the run's rename fails and it
   * goes on without storing. */
  if (name[0] == '.')
    {
      if (gs->now - st.st_mtime > 3600 || gs->all)
        {
          remove_entry (path);
          gs->removed++;
          gs->freed += size;
        }
      return;
    }
  GcEntry *ge = g_new0 (GcEntry, 1);
  ge->path = g_steal_pointer (&path);
  ge->mtime = st.st_mtime;
  ge->size = size;
  g_ptr_array_add (gs->entries, ge);
  gs->kept += size;
}

gboolean
lp_cache_gc (LpCache *cache, gint64 max_age_s, guint64 max_bytes, guint *n_removed, guint64 *bytes_freed,
             guint64 *bytes_kept, GError **error)
{
  g_autoptr (GPtrArray) entries = g_ptr_array_new_with_free_func ((GDestroyNotify) gc_entry_free);
  GcState gs = { g_get_real_time () / G_USEC_PER_SEC, max_age_s == 0, entries, 0, 0, 0 };
  /* The older layouts are never read. */
  for (const char *const *old = (const char *const[]){ "v1", "v2", NULL }; *old; old++)
    {
      g_autofree char *dir = g_build_filename (cache->root, *old, NULL);
      if (g_file_test (dir, G_FILE_TEST_IS_DIR))
        {
          gs.freed += lp_path_size (dir);
          gs.removed++;
          lp_remove_tree (dir);
        }
    }
  if (g_file_test (cache->dir, G_FILE_TEST_EXISTS) && access (cache->dir, R_OK | X_OK) != 0)
    {
      int e = errno;
      lp_set_error (error, LP_ERROR_IO, "%s: cannot read the cache: %s", cache->dir, g_strerror (e));
      return FALSE;
    }
  for_each_entry (cache, gc_visit, &gs);
  g_ptr_array_sort (entries, gc_cmp_age);
  for (guint i = 0; i < entries->len; i++)
    {
      GcEntry *ge = entries->pdata[i];
      gboolean too_old = max_age_s >= 0 && gs.now - ge->mtime >= max_age_s;
      gboolean too_big = max_bytes > 0 && gs.kept > max_bytes;
      if (!too_old && !too_big)
        continue;
      remove_entry (ge->path);
      gs.removed++;
      gs.freed += ge->size;
      gs.kept -= ge->size;
    }
  if (n_removed)
    *n_removed = gs.removed;
  if (bytes_freed)
    *bytes_freed = gs.freed;
  if (bytes_kept)
    *bytes_kept = gs.kept;
  return TRUE;
}

typedef struct {
  LpCache *cache;
  guint checked, bad;
} VerifyState;

static void
verify_visit (const char *sdir, const char *name, gpointer data)
{
  VerifyState *vs = data;
  if (name[0] == '.' || strlen (name) < 2)
    return; /* temporaries are gc's */
  vs->checked++;
  GKeyFile *kf = open_entry (vs->cache, name, TRUE);
  if (kf == NULL)
    vs->bad++;
  else
    g_key_file_unref (kf);
}

gboolean
lp_cache_verify (LpCache *cache, guint *n_checked, guint *n_removed, GError **error)
{
  if (g_file_test (cache->dir, G_FILE_TEST_EXISTS) && access (cache->dir, R_OK | X_OK) != 0)
    {
      int e = errno;
      lp_set_error (error, LP_ERROR_IO, "%s: cannot read the cache: %s", cache->dir, g_strerror (e));
      return FALSE;
    }
  VerifyState vs = { cache, 0, 0 };
  for_each_entry (cache, verify_visit, &vs);
  *n_checked = vs.checked;
  *n_removed = vs.bad;
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
