/* Weight sharing through codebooks: llama.cpp's IQ4_NL (16 fixed
 * non-uniform levels under a per-block f16 scale) and quantize.codebook.
 * - a hand-made block decodes to d * level, the name reads in any case;
 * - our IQ4_NL bytes are ggml's own (quantize_iq4_nl through
 *   llama-cpp-python's libggml-base, with and without an imatrix);
 * - on stories260K (TinyStories split of specs/README: calibration
 *   300000:, eval :300000) quantize.codebook format=iq4_nl beats
 *   quantize.rtn format=q4_0 on the same tensors at the same 4.5 bits, the
 *   saved GGUF loads back with the same perplexity, and gguf-py decodes its
 *   IQ4_NL tensors to our values;
 * - (slow) llama.cpp loads and runs a quantize.codebook GGUF, agreeing
 *   with `llmpress eval` on a window. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

static void
test_layout (void)
{
  static const gint8 levels[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };
  const LpDTypeInfo *info = lp_dtype_info (LP_DTYPE_IQ4_NL);
  g_assert_nonnull (info);
  g_assert_cmpint (LP_DTYPE_IQ4_NL, ==, 20); /* ggml's GGML_TYPE_IQ4_NL */
  g_assert_cmpstr (info->name, ==, "iq4_nl");
  g_assert_cmpuint (info->block_size, ==, 32);
  g_assert_cmpuint (info->type_size, ==, 18);
  g_assert_cmpfloat (lp_dtype_bits_per_weight (LP_DTYPE_IQ4_NL), ==, 4.5);
  LpDType t;
  g_assert_true (lp_dtype_from_name ("IQ4_NL", &t) && t == LP_DTYPE_IQ4_NL);
  g_assert_true (lp_dtype_from_name ("iq4_nl", &t) && t == LP_DTYPE_IQ4_NL);
  /* d = 0.5 (f16 0x3800); byte j holds code j (element j) and 15 - j (element j + 16). */
  guint8 block[18] = { 0x00, 0x38 };
  for (int j = 0; j < 16; j++)
    block[2 + j] = (guint8) (j | ((15 - j) << 4));
  float v[32];
  g_assert_true (lp_dtype_to_f32 (LP_DTYPE_IQ4_NL, block, v, 32, NULL));
  for (int j = 0; j < 16; j++)
    {
      g_assert_cmpfloat (v[j], ==, 0.5f * levels[j]);
      g_assert_cmpfloat (v[j + 16], ==, 0.5f * levels[15 - j]);
    }
  /* Quantizing lands every value on d * level, and a block of levels times
   * a power of two comes back exactly. */
  float x[64], y[64];
  for (int j = 0; j < 64; j++)
    x[j] = 0.25f * levels[(j * 7) % 16];
  guint8 q[36];
  g_assert_true (lp_quantize_row (LP_DTYPE_IQ4_NL, x, q, 64, NULL, NULL));
  g_assert_true (lp_dtype_to_f32 (LP_DTYPE_IQ4_NL, q, y, 64, NULL));
  for (int j = 0; j < 64; j++)
    g_assert_cmpfloat (y[j], ==, x[j]);
}

/* ggml's quantize_iq4_nl (what llama-quantize calls, through
 * ggml_quantize_chunk) on the same rows, with and without an imatrix. */
static const char ggml_oracle[] =
  "import sys, os, ctypes, numpy as np, llama_cpp\n"
  "rows, n = int(sys.argv[1]), int(sys.argv[2])\n"
  "lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), 'lib', 'libggml-base.so'))\n"
  "f = lib.ggml_quantize_chunk\n"
  "f.restype = ctypes.c_size_t\n"
  "f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, "
  "ctypes.c_void_p]\n"
  "x = np.fromfile(sys.argv[3], dtype=np.float32)\n"
  "imp = np.fromfile(sys.argv[4], dtype=np.float32)\n"
  "bad = 0\n"
  "for k, w in enumerate([None, imp]):\n"
  "    ours = np.fromfile(sys.argv[5 + k], dtype=np.uint8)\n"
  "    dst = np.zeros(rows * n // 32 * 18, dtype=np.uint8)\n"
  "    f(20, x.ctypes.data, dst.ctypes.data, 0, rows, n, None if w is None else w.ctypes.data)\n"
  "    diff = int(np.count_nonzero(dst.reshape(-1, 18) != ours.reshape(-1, 18)))\n"
  "    print('imatrix' if k else 'plain', 'blocks', rows * n // 32, 'differing bytes', diff)\n"
  "    bad += diff\n"
  "sys.exit(1 if bad else 0)\n";

static void
test_matches_ggml (void)
{
  if (!lp_test_python_has ("llama_cpp, numpy", "no ggml to compare IQ4_NL bytes with"))
    return;
  const int rows = 48, n = 256;
  g_autofree float *x = g_new (float, rows * n);
  g_autofree float *imp = g_new (float, n);
  lp_test_fill (x, rows * n, 5, 0.05);
  lp_test_fill (imp, n, 6, 1.0);
  for (int j = 0; j < n; j++)
    imp[j] = imp[j] * imp[j] + 1e-3f;
  /* awkward blocks: all zero, tiny (f16 underflow), one outlier, constant */
  memset (x, 0, 32 * sizeof (float));
  for (int j = 32; j < 64; j++)
    x[j] = 1e-9f * (j - 40);
  x[100] = 0.9f;
  for (int j = 128; j < 160; j++)
    x[j] = -0.03f;
  guint8 *q[2];
  for (int k = 0; k < 2; k++)
    {
      q[k] = g_malloc ((gsize) rows * n / 32 * 18);
      g_assert_true (lp_quantize_rows (LP_DTYPE_IQ4_NL, x, rows, n, k ? imp : NULL, q[k], NULL));
    }
  g_autofree char *xs = lp_test_write_file ("iq4nl-x.f32", x, sizeof (float) * rows * n);
  g_autofree char *is = lp_test_write_file ("iq4nl-imp.f32", imp, sizeof (float) * n);
  g_autofree char *p0 = lp_test_write_file ("iq4nl-plain.bin", q[0], (gsize) rows * n / 32 * 18);
  g_autofree char *p1 = lp_test_write_file ("iq4nl-imatrix.bin", q[1], (gsize) rows * n / 32 * 18);
  g_free (q[0]);
  g_free (q[1]);
  g_autofree char *r = g_strdup_printf ("%d", rows), *c = g_strdup_printf ("%d", n);
  const char *args[] = { r, c, xs, is, p0, p1, NULL };
  g_autofree char *out = lp_test_python_run (ggml_oracle, args);
  g_assert_nonnull (strstr (out, "plain blocks 384 differing bytes 0"));
  g_assert_nonnull (strstr (out, "imatrix blocks 384 differing bytes 0"));
}

/* --- stories260K ------------------------------------------------------------- */

#define CALIB_SETTINGS "calibration_samples=16\ncalibration_seq_len=256\ncalibration_range=300000:\n"
#define EVAL_SETTINGS "data_range=:300000\nctx=512\nmax_windows=8\n"

static double
eval_ppl (const LpTestStories *sh, LpModel *m)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) toks = lp_tokens_load (sh->data, m, &error);
  g_assert_no_error (error);
  LpEvalOptions eo = { .ctx = 512, .max_windows = 8 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, 300000, &eo, &r, &error));
  g_assert_no_error (error);
  return r.ppl;
}

/* gguf-py's decoding of every IQ4_NL tensor of a GGUF against ours (one f32
 * file per tensor, named after it, in a directory). */
static const char gguf_oracle[] =
  "import sys, os, numpy as np\n"
  "from gguf import GGUFReader, GGMLQuantizationType, quants\n"
  "n = bad = 0\n"
  "for t in GGUFReader(sys.argv[1]).tensors:\n"
  "    if t.tensor_type != GGMLQuantizationType.IQ4_NL: continue\n"
  "    d = quants.dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)\n"
  "    ours = np.fromfile(os.path.join(sys.argv[2], t.name), dtype=np.float32)\n"
  "    n += 1\n"
  "    if not np.array_equal(d.view(np.uint32), ours.view(np.uint32)): print('differs:', t.name); bad += 1\n"
  "print('iq4_nl tensors', n, 'bad', bad)\n"
  "sys.exit(1 if bad or not n else 0)\n";

static void
check_with_gguf_py (const char *path, LpModel *m)
{
  if (!lp_test_python_has ("gguf, numpy", "no gguf-py to decode IQ4_NL with"))
    return;
  g_autofree char *dir = lp_test_mkdir ("codebook-ours");
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      if (t->dtype != LP_DTYPE_IQ4_NL)
        continue;
      g_autoptr (GError) error = NULL;
      g_autofree float *v = lp_tensor_dup_f32 (t, &error);
      g_assert_no_error (error);
      g_autofree char *file = g_build_filename (dir, t->name, NULL);
      g_assert_true (g_file_set_contents (file, (const char *) v, sizeof (float) * lp_tensor_n_elements (t), NULL));
    }
  const char *args[] = { path, dir, NULL };
  g_autofree char *out = lp_test_python_run (gguf_oracle, args);
  g_assert_nonnull (strstr (out, " bad 0"));
}

/* `nodes` after [load] of stories260K, calibrated on the split: its output directory. */
static char *
run_split (const LpTestStories *sh, const char *name, const char *nodes)
{
  int st;
  g_autofree char *err = NULL;
  char *dir = lp_test_run_nodes (sh->data, CALIB_SETTINGS, sh->model, name, nodes, &st, &err);
  if (st != 0)
    g_error ("%s", err);
  return dir;
}

static void
test_stories (void)
{
  LpTestStories sh;
  if (!lp_test_stories_get (&sh))
    return;
  g_autofree char *nodes = g_strdup_printf (
    "[cb]\npass=quantize.codebook\nformat=iq4_nl\n[e-cb]\npass=eval\ninput=cb\ndata=%s\n" EVAL_SETTINGS
    "[save]\ninput=cb\npath=codebook.gguf\n"
    "[rtn]\npass=quantize.rtn\ninput=load\nformat=q4_0\n[e-rtn]\npass=eval\ninput=rtn\ndata=%s\n" EVAL_SETTINGS
    "[save-rtn]\npass=save\ninput=rtn\npath=rtn.gguf\n"
    "[gptq]\npass=quantize.gptq\ninput=load\nformat=q4_0\n[e-gptq]\npass=eval\ninput=gptq\ndata=%s\n" EVAL_SETTINGS,
    sh.data, sh.data, sh.data);
  g_autofree char *dir = run_split (&sh, "codebook", nodes);
  double cb = lp_test_report_metric (dir, "e-cb", "perplexity");
  double rtn = lp_test_report_metric (dir, "e-rtn", "perplexity");
  double gptq = lp_test_report_metric (dir, "e-gptq", "perplexity");
  double bpw_cb = lp_test_report_node_double (dir, "cb", "bits_per_weight");
  double bpw_rtn = lp_test_report_node_double (dir, "rtn", "bits_per_weight");
  g_test_message ("stories260K: quantize.codebook iq4_nl %.4f, quantize.rtn q4_0 %.4f, quantize.gptq q4_0 %.4f "
                  "(bits per weight %.3f, %.3f)", cb, rtn, gptq, bpw_cb, bpw_rtn);
  g_assert_cmpfloat (bpw_cb, ==, bpw_rtn);
  g_assert_cmpfloat (cb, <, rtn);

  /* The same tensors quantized: iq4_nl exactly where q4_0 is. */
  g_autofree char *path = g_build_filename (dir, "codebook.gguf", NULL);
  g_autofree char *rtn_path = g_build_filename (dir, "rtn.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) r = lp_model_load (rtn_path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_model_n_tensors (m), ==, lp_model_n_tensors (r));
  guint n_iq4 = 0;
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *a = lp_model_tensor_at (m, i);
      LpTensor *b = lp_model_tensor (r, a->name);
      g_assert_nonnull (b);
      if (b->dtype == LP_DTYPE_Q4_0)
        {
          g_assert_cmpint (a->dtype, ==, LP_DTYPE_IQ4_NL);
          n_iq4++;
        }
      else
        g_assert_cmpint (a->dtype, ==, b->dtype);
    }
  g_assert_cmpuint (n_iq4, >, 0);

  /* Loaded back from GGUF: the perplexity of the run. */
  double loaded = eval_ppl (&sh, m);
  g_test_message ("quantize.codebook GGUF loaded back: perplexity %.6f (run %.6f)", loaded, cb);
  g_assert_cmpfloat (fabs (loaded - cb), <, 1e-5 * cb);
  check_with_gguf_py (path, m);
  lp_test_stories_clear (&sh);
}

/* --- llama.cpp ------------------------------------------------------------ */

static const char llama_oracle[] =
  "import sys, numpy as np, llama_cpp\n"
  "model, text, n, toks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]\n"
  "llm = llama_cpp.Llama(model_path=model, n_ctx=n, logits_all=True, verbose=False)\n"
  "ids = llm.tokenize(open(text, 'rb').read(), add_bos=True)[:n]\n"
  "np.array(ids[1:], dtype='<u4').tofile(toks)\n"
  "llm.eval(ids)\n"
  "logits = np.asarray(llm.scores[:n], dtype=np.float64)\n"
  "logits -= logits.max(axis=1, keepdims=True)\n"
  "logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))\n"
  "print('ppl %.6f' % np.exp(-np.mean([logp[i, ids[i + 1]] for i in range(n - 1)])))\n";

static char *
demo_path (const char *name)
{
  return g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "..", "contrib", "demo", name, NULL);
}

/* The demo model through quantize.codebook into GGUF: llama.cpp loads it, and
 * its perplexity over one window of 128 tokens agrees with `llmpress eval`
 * (llama.cpp multiplies IQ4_NL rows by 8-bit activations where we
 * dequantize to f32: 0.5%). */
static void
test_llama_cpp (void)
{
  if (!lp_test_slow () || !lp_test_python_has ("llama_cpp, numpy", "no llama.cpp to run the file"))
    return;
  g_autofree char *model = demo_path ("stories260K.gguf");
  g_autofree char *text = demo_path ("tinystories-eval.txt");
  g_autofree char *calib = demo_path ("tinystories-calib.txt");
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "codebook-llama", NULL);
  g_autofree char *err = NULL;
  g_autofree char *ini = g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=8\ncalibration_seq_len=128\n"
                                          "[load]\npath=%s\n[cb]\npass=quantize.codebook\nformat=iq4_nl\n"
                                          "[save]\npath=model.gguf\n", calib, model);
  g_autofree char *spec = lp_test_write_file ("codebook-llama.ini", ini, strlen (ini));
  const char *argv[] = { "run", spec, "-o", dir, "--no-cache", "-q", NULL };
  if (lp_test_run_cliv (NULL, &err, argv) != 0)
    g_error ("%s", err);
  g_autofree char *saved = g_build_filename (dir, "model.gguf", NULL);
  g_autofree char *toks = g_build_filename (dir, "window.u32", NULL);
  const char *args[] = { saved, text, "128", toks, NULL };
  g_autofree char *out = lp_test_python_run (llama_oracle, args);
  double theirs = 0;
  g_assert_cmpint (sscanf (out, "ppl %lf", &theirs), ==, 1);
  g_autofree char *json = NULL;
  g_clear_pointer (&err, g_free);
  const char *eval[] = { "eval", saved, "--data", toks, "--ctx", "128", NULL };
  if (lp_test_run_cliv (&json, &err, eval) != 0)
    g_error ("%s", err);
  const char *at = strstr (json, "perplexity");
  g_assert_nonnull (at);
  double ours = 0;
  g_assert_cmpint (sscanf (at + strcspn (at, "0123456789"), "%lf", &ours), ==, 1);
  g_test_message ("quantize.codebook iq4_nl GGUF, one window of 128 tokens: perplexity %.5f in llama.cpp, %.5f in "
                  "llmpress eval", theirs, ours);
  g_assert_cmpfloat (fabs (theirs - ours) / ours, <, 5e-3);
}

/* --- learned codebooks ---------------------------------------------------- */

static void
test_kmeans (void)
{
  /* Four exact clusters (f16 values) come back as the four levels. */
  static const float centres[4] = { -1.0f, -0.25f, 0.5f, 2.0f };
  float x[40], w[40], lv[4];
  for (int i = 0; i < 40; i++)
    x[i] = centres[(i * 3) % 4], w[i] = 1.0f + (float) (i % 5);
  lp_kmeans_1d (x, w, 40, 4, 50, lv);
  for (int i = 0; i < 4; i++)
    g_assert_cmpfloat (lv[i], ==, centres[i]);
  for (int i = 0; i < 40; i++)
    g_assert_cmpfloat (lv[lp_levels_nearest (lv, 4, x[i])], ==, x[i]);
  /* Weights pull a level onto the heavy value: with two levels for
   * {0, 0.5, 1, 3}, a heavy 1 gets a level to itself. */
  float y[4] = { 0.0f, 0.5f, 1.0f, 3.0f }, wy[4] = { 1, 1, 1000, 1 };
  lp_kmeans_1d (y, wy, 4, 2, 50, lv);
  g_assert_true (lv[0] < lv[1]);
  g_assert_cmpfloat (fabsf (lv[lp_levels_nearest (lv, 2, 1.0f)] - 1.0f), <, 2e-3);
  /* Nearest: ends clamp, ties go to the lower level. */
  float l3[3] = { -1.0f, 0.0f, 1.0f };
  g_assert_cmpint (lp_levels_nearest (l3, 3, -5.0f), ==, 0);
  g_assert_cmpint (lp_levels_nearest (l3, 3, 5.0f), ==, 2);
  g_assert_cmpint (lp_levels_nearest (l3, 3, 0.5f), ==, 1);
  g_assert_cmpint (lp_levels_nearest (l3, 3, 0.51f), ==, 2);
}

/* 3-bit codes (straddling bytes), groups of 8: values, bytes, and a GGUF
 * round trip in a model that keeps the form. */
static void
test_form (void)
{
  const int rows = 5, cols = 24, bits = 3, group = 8, G = cols / group, L = 1 << bits;
  guint8 codes[5 * 24];
  guint16 levels[5 * 3 * 8];
  for (int i = 0; i < rows * cols; i++)
    codes[i] = (guint8) ((i * 5 + i / 7) % L);
  for (int i = 0; i < rows * G * L; i++)
    levels[i] = lp_f32_to_f16 (0.125f * (i % 37) - 2.0f);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) t = lp_tensor_new_codebook ("blk.0.ffn_up.weight", rows, cols, bits, group, codes, levels,
                                                   &error);
  g_assert_no_error (error);
  const float *v = lp_tensor_data (t);
  for (int r = 0; r < rows; r++)
    for (int k = 0; k < cols; k++)
      g_assert_cmpfloat (v[r * cols + k], ==, lp_f16_to_f32 (levels[(r * G + k / group) * L + codes[r * cols + k]]));
  g_assert_true (lp_tensor_is_quantized (t));
  /* 9 bytes of codes and 3 x 8 f16 levels a row */
  g_assert_cmpuint (lp_tensor_storage_bytes (t), ==, rows * (9 + 2 * G * L));
  int b, g;
  g_assert_true (lp_tensor_codebook_info (t, &b, &g) && b == bits && g == group);
  g_assert_null (lp_tensor_new_codebook ("w", rows, cols, bits, 7, codes, levels, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
  g_clear_error (&error);

  /* In a model of that shape: saved as GGUF, read back in the form. */
  g_autoptr (LpModel) m = lp_test_tiny_model (3);
  LpTensor *like = NULL;
  for (guint i = 0; i < lp_model_n_tensors (m) && like == NULL; i++)
    if (lp_model_tensor_at (m, i)->n_dims == 2 && g_str_has_prefix (lp_model_tensor_at (m, i)->name, "blk.0."))
      like = lp_model_tensor_at (m, i);
  g_assert_nonnull (like);
  gint64 R = like->shape[0], C = like->shape[1];
  int grp = C % 8 == 0 ? 8 : (int) C;
  g_autofree guint8 *mc = g_new (guint8, R * C);
  g_autofree guint16 *ml = g_new (guint16, R * (C / grp) * L);
  for (gint64 i = 0; i < R * C; i++)
    mc[i] = (guint8) (i * 3 % L);
  for (gint64 i = 0; i < R * (C / grp) * L; i++)
    ml[i] = lp_f32_to_f16 (0.01f * (float) (i % 101) - 0.5f);
  g_autoptr (LpTensor) q = lp_tensor_new_codebook (like->name, R, C, bits, grp, mc, ml, &error);
  g_assert_no_error (error);
  lp_model_set_tensor (m, q);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "codebook-form.gguf", NULL);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  LpTensor *r = lp_model_tensor (back, q->name);
  g_assert_nonnull (r);
  g_assert_true (lp_tensor_codebook_info (r, &b, &g) && b == bits && g == grp);
  g_assert_cmpint (memcmp (lp_tensor_data (r), lp_tensor_data (q), sizeof (float) * R * C), ==, 0);
  g_assert_cmpuint (lp_tensor_storage_bytes (r), ==, lp_tensor_storage_bytes (q));
  g_autofree char *part = g_strconcat (q->name, ".cb_codes", NULL);
  g_assert_null (lp_model_tensor (back, part));
}

/* format=kmeans on stories260K: GPTQ's feedback beats nearest levels, and
 * the saved GGUF comes back in the codebook form with the same perplexity. */
static void
test_stories_kmeans (void)
{
  LpTestStories sh;
  if (!lp_test_stories_get (&sh))
    return;
  g_autofree char *nodes = g_strdup_printf (
    "[km]\npass=quantize.codebook\nformat=kmeans\nbits=4\n[e-km]\npass=eval\ninput=km\ndata=%s\n" EVAL_SETTINGS
    "[save]\ninput=km\npath=kmeans.gguf\n"
    "[kmr]\npass=quantize.codebook\ninput=load\ngptq=false\n[e-kmr]\npass=eval\ninput=kmr\ndata=%s\n" EVAL_SETTINGS,
    sh.data, sh.data);
  g_autofree char *dir = run_split (&sh, "kmeans", nodes);
  double km = lp_test_report_metric (dir, "e-km", "perplexity");
  double kmr = lp_test_report_metric (dir, "e-kmr", "perplexity");
  g_test_message ("stories260K, k-means 4-bit codebooks per row (%.3f bits per weight over the model): GPTQ %.4f, "
                  "nearest level %.4f", lp_test_report_node_double (dir, "km", "bits_per_weight"), km, kmr);
  g_assert_cmpfloat (km, <, kmr);
  g_autofree char *path = g_build_filename (dir, "kmeans.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  guint n_cb = 0;
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      int b, g;
      LpTensor *t = lp_model_tensor_at (m, i);
      if (lp_tensor_codebook_info (t, &b, &g))
        {
          g_assert_cmpint (b, ==, 4);
          g_assert_cmpint (g, ==, t->shape[1]);
          n_cb++;
        }
    }
  g_assert_cmpuint (n_cb, ==, 35); /* 7 weights in each of 5 blocks */
  double loaded = eval_ppl (&sh, m);
  g_test_message ("k-means codebook GGUF loaded back: perplexity %.6f (run %.6f)", loaded, km);
  g_assert_cmpfloat (fabs (loaded - km), <, 1e-5 * km);
  /* bits= belongs to format=kmeans */
  int st;
  g_autofree char *err = NULL;
  g_autofree char *bad = lp_test_run_nodes (sh.data, CALIB_SETTINGS, sh.model, "kmeans-bad",
                                            "[cb]\npass=quantize.codebook\nformat=iq4_nl\nbits=3\n", &st, &err);
  g_assert_cmpint (st, !=, 0);
  g_assert_nonnull (strstr (err, "bits: only applies to format=kmeans"));
  lp_test_stories_clear (&sh);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/codebook/iq4nl-layout", test_layout);
  g_test_add_func ("/codebook/iq4nl-matches-ggml", test_matches_ggml);
  g_test_add_func ("/codebook/stories", test_stories);
  g_test_add_func ("/codebook/llama-cpp", test_llama_cpp);
  g_test_add_func ("/codebook/kmeans", test_kmeans);
  g_test_add_func ("/codebook/form", test_form);
  g_test_add_func ("/codebook/stories-kmeans", test_stories_kmeans);
  return g_test_run ();
}
