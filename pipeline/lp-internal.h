/* llmpress — helpers shared inside libllmpress, not part of the SDK. */
#pragma once

#include <glib.h>
#include <llmpress/llmpress.h>

/* Symbols the SDK exports; everything else in the library stays hidden. */
#define LP_API __attribute__ ((visibility ("default")))

/* g_set_error in LP_ERROR. */
#define lp_set_error(err, code, ...) g_set_error ((err), LP_ERROR, (code), __VA_ARGS__)

/* Prefix an existing error with "<what>: ". */
void lp_error_prefix (GError **error, const char *what);

/* JSON helpers (json.c) for the readers of JSON-bearing formats. */
#include <json-glib/json-glib.h>

/* What a node holds, for "found ..." in messages: 42, "text", an object, ... */
char *lp_json_describe (JsonNode *node);
/* Parse `len` bytes of JSON whose root must be an object (ref'd root node).
 * Messages name `path`, the byte offset (`base` + position, for invalid UTF-8
 * or a non-object root) or json-glib's line and column, prefixed by `where`
 * ("header") when not NULL. */
JsonNode *lp_json_parse_object (const char *path, const char *where, const char *text, gsize len,
                                gsize base, GError **error);
/* Read a whole JSON file whose root must be an object. */
JsonNode *lp_json_load_object (const char *path, GError **error);
/* strcmp for g_ptr_array_sort over an array of strings (it passes char **). */
int lp_compare_str_ptr (gconstpointer a, gconstpointer b);


/* "crc32:XXXXXXXX size=N" of the bytes written to af so far (computed as
 * they are written).  g_free() it. */
char *lp_atomic_file_digest (const LpAtomicFile *af);
/* While log is set (NULL: stop), each lp_atomic_file_commit on this thread
 * inserts its target path -> lp_atomic_file_digest into it: how the cache
 * learns the checksum of a file a format writer wrote. */
void lp_atomic_file_log_commits (GHashTable *log);
/* Commit, unless the target already exists: then ours is discarded,
 * *existed is set, and that counts as success (first complete writer wins). */
gboolean lp_atomic_dir_commit_new (LpAtomicDir *ad, gboolean *existed, GError **error);
/* CRC-32 (zlib's) of n bytes continuing crc (0 to start). */
guint32 lp_crc32 (guint32 crc, const void *data, gsize n);

/* Every file or directory lp_model_load (path, options) reads: the path
 * itself (the directory of a model.safetensors), and for a llama2.c
 * checkpoint the tokenizer it uses (options' or the one found beside it).
 * Paths that are no model give just themselves. */
GPtrArray *lp_model_load_files (const char *path, const LpLoadOptions *options);
/* The tokenizer lp_llama2c_load picks up beside a checkpoint when none is
 * given (NULL: none, or not a checkpoint). */
char *lp_llama2c_implicit_tokenizer (const char *path);
