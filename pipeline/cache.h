/* llmpress — the artifact cache: node outputs stored under a key hashed from
 * everything that determines them.  Not part of the SDK.
 *
 * Layout: DIR/v3/XX/KEY/ holding entry.ini (what the key was made of, kind,
 * size, and [files]: each file's CRC-32 and size; sealed by its own CRC-32)
 * and the artifact: model.gguf, stats.gguf or metrics.ini.  An entry is
 * built in a temporary directory beside it and renamed into place complete
 * by the first run that finishes it, so a killed run leaves either a whole
 * entry or none (plus a temporary that gc removes), and concurrent runs
 * never replace an entry another may be reading.  A damaged entry is
 * discarded, with a warning, when found: a miss, never an error. */
#pragma once

#include <glib.h>
#include <llmpress/artifact.h>

G_BEGIN_DECLS

typedef struct _LpCache LpCache;

/* $LLMPRESS_CACHE_DIR, else $XDG_CACHE_HOME/llmpress (g_get_user_cache_dir). */
char *lp_cache_default_dir (void);

/* Creates nothing (a store creates what it needs); fails only when dir is
 * something other than a directory. */
LpCache *lp_cache_open (const char *dir, GError **error);
void lp_cache_free (LpCache *cache);
const char *lp_cache_dir (const LpCache *cache);

/* The key of a canonical description (hex SHA-256). */
char *lp_cache_key (const char *components);

/* An entry whose entry.ini is intact and whose files have their sizes. */
gboolean lp_cache_has (LpCache *cache, const char *key);
/* The artifact stored under key, every byte checked against its checksum
 * (NULL and an LP_ERROR_MISSING error when absent, or damaged and so just
 * discarded; a NONE entry gives NULL without error). */
LpArtifact *lp_cache_load (LpCache *cache, const char *key, GError **error);
/* A value recorded with the entry (NULL when absent). g_free() it. */
char *lp_cache_entry_get (LpCache *cache, const char *key, const char *field);
/* Store artifact (may be NULL for a pass that produces none) with fields
 * (name -> value, may be NULL) recorded in entry.ini.  An entry another run
 * stored first is kept (success). */
gboolean lp_cache_store (LpCache *cache, const char *key, LpArtifact *artifact,
                         GHashTable *fields, GError **error);
/* Mark an entry as used now (gc removes the least recently used first). */
void lp_cache_touch (LpCache *cache, const char *key);

/* The components a node was last run with, for --explain (by an id made of
 * the spec and node names); NULL when never run. */
char *lp_cache_get_history (LpCache *cache, const char *node_id);
void lp_cache_set_history (LpCache *cache, const char *node_id, const char *components);

/* Remove unfinished temporaries, entries unused for max_age_s seconds
 * (<0: no limit), then least recently used entries until the total is at
 * most max_bytes (0: no limit). */
gboolean lp_cache_gc (LpCache *cache, gint64 max_age_s, guint64 max_bytes, guint *n_removed,
                      guint64 *bytes_freed, guint64 *bytes_kept, GError **error);

/* Check every byte of every entry; discard (with a warning each) those
 * that fail. */
gboolean lp_cache_verify (LpCache *cache, guint *n_checked, guint *n_removed, GError **error);

/* Metrics as "key=type:value" lines in a [metrics] group, and back. */
char *lp_metrics_to_ini (const LpMeta *metrics);
LpMeta *lp_metrics_from_ini (const char *data, const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpCache, lp_cache_free)

G_END_DECLS
