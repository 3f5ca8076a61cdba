/* llmpress — helpers shared inside libllmpress, not part of the SDK. */
#pragma once

#include <glib.h>
#include <llmpress/llmpress.h>

/* Symbols the SDK exports; everything else in the library stays hidden. */
#define LP_API __attribute__ ((visibility ("default")))

/* lp_set_error (error.h) is the SDK's; the rest is the library's own. */

/* Held while writing a line to stderr (progress.c): warnings, progress and
 * a run's node lines, from any thread, one line at a time. */
void lp_stderr_lock (void);
void lp_stderr_unlock (void);
/* For a list of problems, one a line: each line escaped, the newlines kept. */
void lp_error_set_lines (GError **error, int code, const char *lines);
/* `text` with newlines, other control characters, bytes that are not UTF-8
 * and line-breaking or bidi-reordering characters written as \n, \r, \t,
 * \xNN or \uNNNN (keep_newlines: '\n' kept).  Escaping twice changes
 * nothing more. */
char *lp_error_escape (const char *text, gboolean keep_newlines);

/* What is at `path`, for "found ..." in messages: "a character device",
 * "a FIFO", "a directory", "a regular file of N bytes", "nothing", ... */
char *lp_path_describe (const char *path);

/* The tokenizer file a model was read with, when it is a file of its own
 * (llama2.c): an output must never replace it either. */
void lp_model_set_tokenizer_source (LpModel *model, const char *path);
const char *lp_model_tokenizer_source (const LpModel *model);

/* Group-wise RTN onto the integer grid (intgrid.c, the definition; and
 * intgrid_fit.c, the CPU backend's kernel): the scale and zero of a range,
 * the reference lp_int_fit, and quantize_groups on every thread. */
void lp_int_range_params (float lo, float hi, int maxq, gboolean symmetric, guint16 *scale, guint8 *zero);
void lp_ref_int_fit (const float *x, gint64 ldx, gint64 rows, int n, const float *imp, int bits, gboolean symmetric,
                     gboolean clip_search, guint16 *scale, guint8 *zero);
void lp_cpu_quantize_groups (int rows, int cols, const float *W, int ldw, const float *imp, const LpGroupQuant *q,
                             guint8 *codes, guint16 *scales, guint8 *zeros);

/* OpenBLAS's threads follow lp_threads_set (threads.c) unless
 * lp_cpu_blas_threads_init chose them (cpu_backend.c). */
void lp_cpu_blas_threads_follow (int n);
/* Whether a model `dim` wide runs faster as jobs of a sample (or window)
 * each, one per core with OpenBLAS on one thread, than as one job with
 * every GEMM on OpenBLAS's threads. */
gboolean lp_cpu_blas_per_core_width (gint64 dim);
/* OpenBLAS on n threads for a while (calibration of a narrow model, with
 * its samples one per core): returns the count to restore with
 * lp_cpu_blas_threads_pop, or 0 where nothing changed: n is not fewer than
 * the count in force, someone chose the count (lp_cpu_blas_threads_init,
 * OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS, OMP_NUM_THREADS), or other
 * threads may be inside BLAS meanwhile (lp_cpu_blas_threads_set_shared):
 * changing the count under them would make their results depend on
 * timing, since OpenBLAS's last bits depend on its count. */
int lp_cpu_blas_threads_push (int n);
void lp_cpu_blas_threads_pop (int was);
/* Whether other threads may call BLAS while one works: the pipeline runner
 * sets it while its scheduler runs several nodes at once (run -j N). */
void lp_cpu_blas_threads_set_shared (gboolean shared);

/* lp_model_set_tensor, but a tensor new to the model takes the place of
 * tensor `at` (which goes): a form rebuilt from its parts stands where
 * its first part stood, so a file read and written again keeps its order. */
void lp_model_put_tensor_at (LpModel *model, const char *at, LpTensor *tensor);

/* Prefix an existing error with "<what>: ". */
void lp_error_prefix (GError **error, const char *what);

/* JSON helpers (json.c) for the readers of JSON-bearing formats. */
#include <json-glib/json-glib.h>

/* What a node holds, for "found ..." in messages: 42, "text", an object, ... */
char *lp_json_describe (JsonNode *node);
/* Deepest nesting of arrays and objects the JSON readers accept: every JSON
 * file is parsed by lp_json_parse_object, which refuses deeper input before
 * json-glib's recursive parser sees it. */
#define LP_JSON_MAX_DEPTH 256
/* Parse `len` bytes of JSON whose root must be an object (ref'd root node).
 * Messages name `path`, the byte offset (`base` + position, for invalid UTF-8
 * or a non-object root) or json-glib's line and column, prefixed by `where`
 * ("header") when not NULL. */
JsonNode *lp_json_parse_object (const char *path, const char *where, const char *text, gsize len,
                                gsize base, GError **error);
/* Read a whole JSON file whose root must be an object. */
JsonNode *lp_json_load_object (const char *path, GError **error);
/* Non-finite numbers (numbers.c).  lp_note_nonfinite: TRUE when v is
 * finite, else appends "name=nan" (or inf, -inf) to `bad`, comma-separated. */
gboolean lp_note_nonfinite (GString *bad, const char *name, double v);
/* Member `name`: v, or null (noted in `bad`) when v is not finite. */
void lp_json_add_finite (JsonBuilder *b, const char *name, double v, GString *bad);
/* Member "error": "not finite: <bad>", when `bad` is not empty. */
void lp_json_add_nonfinite_error (JsonBuilder *b, const GString *bad);
/* FALSE and "metrics not finite: perplexity=nan, ..." when any float of
 * `meta` is NaN or infinite. */
gboolean lp_meta_check_finite (const LpMeta *meta, GError **error);
/* The number after the first "key": in text[len] as written there (for
 * messages about integers that JSON readers do not keep exactly), or NULL. */
char *lp_json_number_text (const char *text, gsize len, const char *key);
/* The fields of an LpModelConfig that lp_model_config_check_keys names. */
enum {
  LP_CONFIG_VOCAB, LP_CONFIG_DIM, LP_CONFIG_FFN, LP_CONFIG_LAYERS, LP_CONFIG_HEADS, LP_CONFIG_KV_HEADS,
  LP_CONFIG_HEAD_DIM, LP_CONFIG_CTX, LP_CONFIG_EPS, LP_CONFIG_THETA, LP_CONFIG_ROPE_FACTOR, LP_CONFIG_ROPE_LOW,
  LP_CONFIG_ROPE_HIGH, LP_CONFIG_ROPE_ORIG, LP_CONFIG_N_KEYS
};
/* lp_model_config_check with messages that name the file's key for each
 * field (keys[LP_CONFIG_*], as the format spells it; NULL or a NULL entry:
 * what the field is).  Refuses everything that leaves the forward pass
 * undefined: sizes out of range, heads not a multiple of kv heads, an odd
 * head dimension, rms epsilon outside (0, 1), rope theta outside (0, 1e12]
 * or NaN, a rope scaling factor <= 0 or not finite, llama3 low/high
 * frequency factors not 0 < low < high, an original context <= 0. */
gboolean lp_model_config_check_keys (const LpModelConfig *c, const char *source, const char *const *keys,
                                     GError **error);
/* The same with the GGUF keys of c's architecture that `meta` holds. */
gboolean lp_model_config_check_gguf (const LpModelConfig *c, const LpMeta *meta, const char *source, GError **error);
/* head_dim = dim / n_heads when the file gave none; an error naming the
 * keys when the heads do not divide the model dimension. */
gboolean lp_model_config_derive_head_dim (LpModelConfig *c, const char *source, const char *const *keys,
                                          GError **error);
/* lp_tensor_convert choosing what a finite value beyond f16's (bf16's)
 * range becomes: an error, or the largest finite value, counted in
 * *n_clamped (may be NULL).  lp_tensor_convert refuses. */
LpTensor *lp_tensor_convert_range (LpTensor *t, LpDType dtype, LpOverflow overflow, guint64 *n_clamped,
                                   GError **error);
/* n f32 values into dtype (lp_dtype_from_f32's signature). */
typedef gboolean (*LpDTypeEncode) (LpDType dtype, const float *src, void *dst, gsize n, GError **error);
/* lp_dtype_from_f32 for the plain types (f32, f16, bf16): the block types
 * are written by the quantizer above (compress/quant.c's lp_dtype_from_f32),
 * which formats and kernels never call. */
gboolean lp_dtype_from_f32_plain (LpDType dtype, const float *src, void *dst, gsize n, GError **error);
/* lp_tensor_convert_range writing the values with `encode`:
 * lp_dtype_from_f32_plain there, lp_dtype_from_f32 in lp_tensor_convert. */
LpTensor *lp_tensor_convert_with (LpTensor *t, LpDType dtype, LpDTypeEncode encode, LpOverflow overflow,
                                  guint64 *n_clamped, GError **error);
/* lp_warn that n values (n > 0) were clamped to dtype's range in `path`. */
void lp_warn_clamped (const char *path, LpDType dtype, guint64 n);
/* Special token ids (tokenizer.ggml.*_token_id) that are not a token of the
 * vocabulary are removed with a warning naming the key, the value and the
 * vocabulary size, as llama.cpp ignores them; -1 and 4294967295 mean
 * "none" and stay, silently. */
void lp_model_drop_bad_token_ids (LpModel *model);
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
/* All n bytes to fd, at offset `at` (pwrite), or at its position when at
 * < 0; on failure the errno in *err. */
gboolean lp_write_all (int fd, const void *data, gsize n, gint64 at, int *err);
/* CRC-32 (zlib's) of n bytes continuing crc (0 to start). */
guint32 lp_crc32 (guint32 crc, const void *data, gsize n);

/* Resident pages that can be given back (pages.c: the memory design).
 * Register a read-only file mapping [start, start + n) (unregister before
 * unmapping); lp_pages_release drops the pages around [p, p + n) when they
 * lie in one, and does nothing otherwise. */
void lp_pages_register (const void *start, gsize n);
void lp_pages_unregister (const void *start, gsize n);
gboolean lp_pages_releasable (const void *p, gsize n);
void lp_pages_release (const void *p, gsize n);
/* The whole file mapped read-only and registered; the GBytes keeps the
 * mapping alive and its slices are releasable. */
GBytes *lp_map_file_bytes (const char *path, GError **error);

/* The spill file new tensor data moves to (spill.c).  lp_spill_new creates
 * it, unlinked, in dir. */
typedef struct _LpSpill LpSpill;
LpSpill *lp_spill_new (const char *dir, GError **error);
LpSpill *lp_spill_ref (LpSpill *s);
void lp_spill_unref (LpSpill *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpSpill, lp_spill_unref)
/* Whether spilling is on: LLMPRESS_SPILL=0 turns it off (the results are
 * the same bytes either way). */
gboolean lp_spill_enabled (void);
/* t with its data moved to s (a new tensor, same name, type, shape and
 * form), or a ref of t when s is NULL, t is small or already file-backed,
 * or the write failed (warned once). */
LpTensor *lp_tensor_spill (LpTensor *t, LpSpill *s);
/* Copy of t (name, type, shape, form) over other bytes of the same size. */
LpTensor *lp_tensor_with_data (LpTensor *t, GBytes *data);
/* lp_model_synth with the tensors in dtype (f32, f16, bf16), each moved
 * to `spill` (may be NULL) as soon as it is made: a synthetic model larger
 * than memory. */
LpModel *lp_model_synth_spilled (const LpSynthOptions *options, LpDType dtype, LpSpill *spill, GError **error);
/* The spill file of the model and of the models derived from it (NULL: none). */
void lp_model_set_spill (LpModel *model, LpSpill *spill);
LpSpill *lp_model_get_spill (LpModel *model);

/* Whether `be` is the CPU backend (its buffers are host memory). */
gboolean lp_backend_is_cpu (const LpBackend *be);

/* splitmix64 (model/random.c): the next 64 bits of `state`; a uniform draw
 * in (0, 1]; a standard normal (Box-Muller, one of the pair). */
guint64 lp_random_next (guint64 *state);
double lp_random_uniform (guint64 *state);
double lp_random_normal (guint64 *state);
