/* llmpress tests — helpers shared by the TAP test programs. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <llmpress/llmpress.h>

/* TRUE when the Vulkan module is built and sees a usable device; else
 * g_test_skip with the reason and FALSE. */
gboolean lp_test_have_vulkan (void);
/* TRUE under `make check-slow` (LLMPRESS_SLOW=1); else g_test_skip with the
 * reason and FALSE.  Slow cases are the real-scale runs (SmolLM2-135M) that
 * would push CI, which runs the suite twice, past its time budget. */
gboolean lp_test_slow (void);
/* Path of a file in ../shared (LLMPRESS_SHARED_DIR), or NULL after calling
 * g_test_skip() with a reason when it is absent.  g_free() it. */
char *lp_test_shared_path (const char *relative);
/* A fresh temporary directory, removed with its contents at exit. */
const char *lp_test_tmpdir (void);
/* A new directory `name` in the temporary directory (parents made); returns its path. */
char *lp_test_mkdir (const char *name);
/* Write `len` bytes to a new file in the temporary directory; returns its path. */
char *lp_test_write_file (const char *name, const void *data, gsize len);
/* Run the built llmpress binary with argv (NULL-terminated, without the
 * program name); collect stdout/stderr (may be NULL) and return its exit status. */
int lp_test_run_cli (char **out, char **err, const char *first_arg, ...) G_GNUC_NULL_TERMINATED;
/* Assert that an error exists and its message contains every given
 * fragment (NULL-terminated). */
void lp_test_assert_error_contains (const GError *error, ...) G_GNUC_NULL_TERMINATED;
/* Two configs describe the same architecture (floats compared as the f32
 * that GGUF stores). */
void lp_test_assert_same_config (const LpModelConfig *a, const LpModelConfig *b);
/* A small deterministic llama model in memory (seeded): D 32, F 48, 2 layers,
 * 4 heads, 2 kv heads, vocab 64, ctx 64, tied embeddings, no tokenizer. */
LpModel *lp_test_tiny_model (guint32 seed);
/* The demo model (lp_model_synth, default options) written once as GGUF in
 * the temporary directory; returns its path (g_free() it). */
char *lp_test_demo_model (void);
/* stories260K and the TinyStories token file from ../shared (both owned),
 * or FALSE after g_test_skip() when either is absent. */
typedef struct {
  char *model, *data;
} LpTestStories;
gboolean lp_test_stories_get (LpTestStories *s);
void lp_test_stories_clear (LpTestStories *s);
/* Run a spec of `nodes` after a [pipeline] group with calibration=`calib`
 * and `settings`, and a [load] of `model`; outputs in a directory `name` of
 * the temporary directory (returned).  *err gets stderr (may be NULL); the
 * exit status goes to *status. */
char *lp_test_run_nodes (const char *calib, const char *settings, const char *model, const char *name,
                         const char *nodes, int *status, char **err);
/* Run the CLI with an argv vector (NULL-terminated, without the program). */
int lp_test_run_cliv (char **out, char **err, const char *const *args);

/* The same, run as `sh -c '<wrapper> "$0" "$@"' llmpress args...` (wrapper:
 * "exec timeout 60", "ulimit -f 64; exec"); a death by signal S returns 128 + S. */
int lp_test_run_cli_wrapped (char **out, char **err, const char *wrapper, const char *const *args);
/* A whole text file (asserting it reads), and writing one. */
char *lp_test_read_text (const char *path);
void lp_test_write_text (const char *path, const char *text);
/* The JSON object `text` holds, parsed with p (fails the test with the text
 * when it is not JSON); borrowed from p. */
JsonObject *lp_test_parse_object (JsonParser *p, const char *text);
/* Newlines in s. */
guint lp_test_count_lines (const char *s);

/* x[n] uniform in [-scale, scale), deterministic for a seed. */
void lp_test_fill (float *x, gsize n, guint32 seed, double scale);
/* lp_gemm_i8 on `be` against lp_ref_gemm_i8, bit for bit: several shapes
 * (K not a multiple of 4, K past 1024 and past an 8 KiB binding, M or N =
 * 1), strided rows, beta 0 over a C of NaN (not read) and beta non-zero,
 * random operands and the extreme -128 * -128 over every k. */
void lp_test_check_gemm_i8 (LpBackend *be);
/* A random integer grid of rows x cols at `bits` bits in groups of `group`
 * columns with GPTQ's act-order: g_idx[perm[i]] = i / group for a random
 * permutation perm of the columns (so each group's columns are scattered,
 * and the last group is short when group does not divide cols).  Every code
 * and zero in range; scales f16 of magnitude 1e-3 .. 3e-2, with every fifth
 * group's a subnormal f16 instead. */
LpIntGrid *lp_test_int_grid (int rows, int cols, int bits, int group, guint32 seed);
/* lp_gemm_grid on `be` against lp_ref_gemm_grid over lp_test_int_grid
 * grids of several shapes, beta 0 (over a C of NaN, not read) and 1:
 * within 1e-5 relative Frobenius error a row, and with A the identity the
 * decoded weights bit for bit. */
void lp_test_check_gemm_grid (LpBackend *be);
/* Fail unless every a[i] is finite and ||a - b|| / ||b|| <= rel_tol. */
void lp_test_assert_close (const float *a, const float *b, gsize n, double rel_tol);

/* Replace m's tensor `name` by its values rounded onto the block type `dtype`
 * (lp_dtype_from_f32, ggml's reference quantizer). */
void lp_test_quantize_tensor (LpModel *m, const char *name, LpDType dtype);

/* The logits [T, V] of m's forward pass over tokens[T] on the CPU (g_free() them). */
float *lp_test_logits (LpModel *m, const gint32 *tokens, int T);

/* From OUT_DIR/report.json of a run: a node's metric, a node's cache key
 * (g_free() it).  Fails the test when the node or the value is absent. */
double lp_test_report_metric (const char *out_dir, const char *node, const char *metric);
char *lp_test_report_key (const char *out_dir, const char *node);
/* A number the report gives a node itself (bits_per_weight, output_bytes, duration). */
double lp_test_report_node_double (const char *out_dir, const char *node, const char *member);
/* Entries, and temporaries a writer left (names starting with '.'), in a
 * cache directory. */
void lp_test_cache_count (const char *cache_dir, guint *entries, guint *temporaries);

/* Optional Python oracles: TRUE when python3 imports `modules` (e.g.
 * "gguf, numpy"), else the test is skipped with `why` and FALSE returned. */
gboolean lp_test_python_has (const char *modules, const char *why);
/* python3 -c script args...: its stdout (g_free() it); fails the test on a
 * non-zero exit, with the script's output. */
char *lp_test_python_run (const char *script, const char *const *args);
