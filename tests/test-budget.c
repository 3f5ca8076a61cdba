/* The bit budget of the quantize passes (target_bpw=, target_size=,
 * candidates=; plugins/quantize/allocate.c), through the CLI.
 *
 * Bits per weight of a whole file: file bytes * 8 / parameters of the model
 * (every tensor, norms included); the budget counts the whole GGUF file.
 *  - stories260K: GPTQ and AWQ under target_size= and target_bpw= write a
 *    GGUF within 1% under the budget, the size the pass predicted;
 *  - slow: stories260K at the size of llama-quantize's Q4_K_M (304,096
 *    bytes), GPTQ and AWQ with no overrides reach perplexity <= 4.995 and a
 *    quarter of Q4_K_M's loss to f32 on the full TinyStories head in
 *    llama.cpp's convention.  Calibration is tokens 300000: of that head, so
 *    the full head overlaps it; the split :300000 does not and is reported
 *    too;
 *  - slow: SmolLM2-135M (its dense f32) on WikiText-2, 20 windows of 512 in
 *    llama.cpp's convention, calibration after them: GPTQ at the size of
 *    llama-quantize's Q4_K_M of the same file (llama-cpp-python; without it
 *    that comparison is skipped with the reason) beats it and our preset
 *    (which must take the same bytes), so does AWQ, and GPTQ's
 *    target_bpw=4.5 lands within 1%;
 *  - bad input: one clear error line and a non-zero exit. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#include "testutil.h"

/* Stories' Q4_K_M file as llama-quantize writes it (and our preset). */
#define STORIES_Q4KM_BYTES 304096

static guint64
file_size (const char *path)
{
  GStatBuf st;
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  return (guint64) st.st_size;
}

/* Run spec text into the directory NAME under the test's temporary
 * directory (returned, owned); the run must succeed; *err (may be NULL)
 * gets its log. */
static char *
run_spec (const char *name, const char *text, char **log)
{
  g_autofree char *file = g_strdup_printf ("%s.ini", name);
  g_autofree char *spec = lp_test_write_file (file, text, strlen (text));
  char *out = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_autofree char *err = NULL;
  const char *args[] = { "run", spec, "-o", out, "--no-cache", NULL };
  int status = lp_test_run_cliv (NULL, &err, args);
  if (status != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (status, ==, 0);
  if (log)
    *log = g_steal_pointer (&err);
  return out;
}

/* The bytes the pass said the file would take, from its log. */
static guint64
predicted_bytes (const char *log)
{
  const char *p = strstr (log, "the file will take ");
  g_assert_nonnull (p);
  return g_ascii_strtoull (p + strlen ("the file will take "), NULL, 10);
}

/* [pipeline] of the TinyStories split: calibration from token 300000 on. */
static char *
stories_head (const char *tokens, int samples, int len)
{
  return g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=%d\ncalibration_seq_len=%d\n"
                          "calibration_range=300000:\n",
                          tokens, samples, len);
}

/* GPTQ at target_size=, AWQ at target_bpw=: the saved file is what the pass
 * predicted, under the budget and within 1% of it. */
static void
test_stories_budget (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  g_autofree char *head = stories_head (tokens, 8, 128);
  struct {
    const char *pass, *param;
    double value;
  } runs[] = { { "quantize.gptq", "target_size", STORIES_Q4KM_BYTES }, { "quantize.awq", "target_bpw", 8.5 } };
  for (gsize i = 0; i < G_N_ELEMENTS (runs); i++)
    {
      g_autofree char *name = g_strdup_printf ("budget-%zu", i);
      g_autofree char *text = g_strdup_printf ("%s[load]\npath=%s\n[q]\npass=%s\n%s=%g\n[save]\npass=save\npath=q.gguf\n",
                                               head, model, runs[i].pass, runs[i].param, runs[i].value);
      g_autofree char *log = NULL;
      g_autofree char *out = run_spec (name, text, &log);
      g_autofree char *path = g_build_filename (out, "q.gguf", NULL);
      guint64 bytes = file_size (path);
      double params = lp_test_report_node_double (out, "q", "params");
      double budget = strcmp (runs[i].param, "target_size") == 0 ? runs[i].value : runs[i].value * params / 8;
      g_test_message ("%s %s=%g: %" G_GUINT64_FORMAT " bytes, %.4f bits per weight (budget %.0f bytes)", runs[i].pass,
                      runs[i].param, runs[i].value, bytes, 8.0 * (double) bytes / params, budget);
      g_assert_cmpuint (bytes, ==, predicted_bytes (log));
      g_assert_cmpfloat ((double) bytes, <=, budget);
      g_assert_cmpfloat ((double) bytes, >=, 0.99 * budget);
    }
}

/* Perplexity of node `name` in the run's report. */
static double
ppl (const char *out, const char *name)
{
  return lp_test_report_metric (out, name, "perplexity");
}

/* Eval nodes of model node `input` in llama.cpp's convention: the full head
 * (NAME-full) and the split before the calibration (NAME-split). */
static char *
eval_nodes (const char *name, const char *input, const char *tokens)
{
  return g_strdup_printf ("[%s-full]\npass=eval\ninput=%s\ndata=%s\nllama_cpp=true\n"
                          "[%s-split]\npass=eval\ninput=%s\ndata=%s\ndata_range=:300000\nllama_cpp=true\n",
                          name, input, tokens, name, input, tokens);
}

static void
test_stories_q4km_size (void)
{
  if (!lp_test_slow ())
    return;
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  g_autofree char *head = stories_head (tokens, 32, 256);
  g_autofree char *e_f32 = eval_nodes ("f32", "load", tokens), *e_q4km = eval_nodes ("q4km", "q4km", tokens);
  g_autofree char *e_gptq = eval_nodes ("gptq", "gptq", tokens), *e_awq = eval_nodes ("awq", "awq", tokens);
  g_autofree char *text = g_strdup_printf (
    "%s[load]\npath=%s\n"
    "[q4km]\npass=quantize.rtn\ninput=load\npreset=Q4_K_M\n[save-q4km]\npass=save\ninput=q4km\npath=q4km.gguf\n"
    "[gptq]\npass=quantize.gptq\ninput=load\ntarget_size=%d\n[save-gptq]\npass=save\ninput=gptq\npath=gptq.gguf\n"
    "[awq]\npass=quantize.awq\ninput=load\ntarget_size=%d\n[save-awq]\npass=save\ninput=awq\npath=awq.gguf\n"
    "%s%s%s%s",
    head, model, STORIES_Q4KM_BYTES, STORIES_Q4KM_BYTES, e_f32, e_q4km, e_gptq, e_awq);
  g_autofree char *out = run_spec ("q4km-size", text, NULL);
  const char *names[] = { "q4km", "gptq", "awq" };
  double f32 = ppl (out, "f32-full");
  g_test_message ("f32: perplexity %.4f on the full head (overlaps the calibration), %.4f on :300000", f32,
                  ppl (out, "f32-split"));
  double q4km = 0;
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *file = g_strdup_printf ("%s/%s.gguf", out, names[i]);
      g_autofree char *full = g_strdup_printf ("%s-full", names[i]), *split = g_strdup_printf ("%s-split", names[i]);
      guint64 bytes = file_size (file);
      double p = ppl (out, full);
      g_test_message ("%s: %" G_GUINT64_FORMAT " bytes, perplexity %.4f on the full head, %.4f on :300000", names[i],
                      bytes, p, ppl (out, split));
      if (i == 0)
        {
          /* llama-quantize's 304,096 bytes are of the shared GGUF, which
           * holds output.weight beside an identical token_embd (q8_0 and
           * q5_0); the llama2.c checkpoint ties them, and so does our
           * reader of that GGUF: llama-quantize's choices for the tied
           * model take 281,600 bytes (measured with llama-cpp-python). */
          q4km = p;
          g_assert_cmpuint (bytes, <=, STORIES_Q4KM_BYTES);
          continue;
        }
      g_assert_cmpuint (bytes, <=, STORIES_Q4KM_BYTES);
      g_assert_cmpfloat (p, <=, 4.995);
      g_assert_cmpfloat (p, <=, f32 + (q4km - f32) / 4);
    }
}

/* SmolLM2-135M's dense f32 (converted once into the test's directory). */
static char *
smollm2_dense (void)
{
  g_autofree char *q41 = lp_test_shared_path ("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (q41 == NULL)
    return NULL;
  char *dense = g_build_filename (lp_test_tmpdir (), "smollm2-f32.gguf", NULL);
  const char *args[] = { "convert", "--type", "f32", q41, dense, NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, NULL, args), ==, 0);
  return dense;
}

/* llama-quantize's Q4_K_M of argv[1] into argv[2] (llama-cpp-python). */
static const char llama_q4km[] =
  "import sys, llama_cpp\n"
  "p = llama_cpp.llama_model_quantize_default_params()\n"
  "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M\n"
  "if llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p) != 0: sys.exit('failed')\n";

static void
test_smollm2_q4km_size (void)
{
  if (!lp_test_slow ())
    return;
  g_autofree char *dense = smollm2_dense ();
  g_autofree char *data = dense ? lp_test_shared_path ("data/wikitext-2-raw-test.txt") : NULL;
  if (data == NULL)
    return;
  /* Evaluated: the first 20 windows of 512 tokens; calibration: 64 samples
   * of 64 after them (4096 tokens for the Hessians).  Short samples because
   * the allocator measures each of the 211 tensors' KL on the first 4
   * samples: once a forward pass of the model and of the reference each
   * (with 8 samples of 512 ~37 s a tensor on the loaded 2-core machine,
   * with 64 of 64 ~4 s: 18 min an arm); now the reference's logits and
   * block inputs are kept and each tensor's pass starts at its block (64 of
   * 64: 211 tensors in 209-314 s an arm, ~1.2 s a tensor, at load 7; the
   * whole test 36 min of wall, 1358 CPU s). */
  g_autofree char *eval = g_strdup_printf ("pass=eval\ndata=%s\nllama_cpp=true\nctx=512\nmax_windows=20\n", data);
  g_autofree char *head = g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=64\n"
                                           "calibration_seq_len=64\ncalibration_range=10240:\n[load]\npath=%s\n",
                                           data, dense);
  /* The reference: llama-quantize's own file when python3 has llama.cpp. */
  gboolean llama = lp_test_python_has ("llama_cpp", "GPTQ is compared with our Q4_K_M preset only");
  g_autofree char *theirs = g_build_filename (lp_test_tmpdir (), "smollm2-q4km-llama.gguf", NULL);
  g_autofree char *e_llama = NULL;
  if (llama)
    {
      const char *args[] = { dense, theirs, NULL };
      g_free (lp_test_python_run (llama_q4km, args));
      e_llama = g_strdup_printf ("[llama]\npass=load\npath=%s\n[e-llama]\ninput=llama\n%s", theirs, eval);
    }
  g_autofree char *t1 = g_strdup_printf ("%s[q]\npass=quantize.rtn\npreset=Q4_K_M\n[save]\npass=save\npath=q.gguf\n"
                                         "[e]\n%s[f32]\ninput=load\n%s%s",
                                         head, eval, eval, llama ? e_llama : "");
  g_autofree char *o1 = run_spec ("smollm2-q4km", t1, NULL);
  g_autofree char *q4km_path = g_build_filename (o1, "q.gguf", NULL);
  guint64 q4km_bytes = file_size (q4km_path), ref_bytes = q4km_bytes;
  double q4km = ppl (o1, "e"), f32 = ppl (o1, "f32"), ref = q4km;
  g_test_message ("SmolLM2-135M f32: %" G_GUINT64_FORMAT " bytes, perplexity %.4f; Q4_K_M (our preset): %"
                  G_GUINT64_FORMAT " bytes, %.4f", file_size (dense), f32, q4km_bytes, q4km);
  if (llama)
    {
      ref_bytes = file_size (theirs);
      ref = ppl (o1, "e-llama");
      g_test_message ("Q4_K_M (llama-quantize): %" G_GUINT64_FORMAT " bytes, perplexity %.4f", ref_bytes, ref);
      g_assert_cmpuint (q4km_bytes, ==, ref_bytes);
    }
  g_autofree char *t2 = g_strdup_printf ("%s[q]\npass=quantize.gptq\ntarget_size=%" G_GUINT64_FORMAT "\n"
                                         "[save]\npass=save\npath=q.gguf\n[e]\n%s"
                                         "[awq]\npass=quantize.awq\ninput=load\ntarget_size=%" G_GUINT64_FORMAT "\n"
                                         "[save-awq]\npass=save\ninput=awq\npath=awq.gguf\n[e-awq]\ninput=awq\n%s"
                                         "[q45]\npass=quantize.gptq\ninput=load\ntarget_bpw=4.5\n"
                                         "[save45]\npass=save\ninput=q45\npath=q45.gguf\n",
                                         head, ref_bytes, eval, ref_bytes, eval);
  g_autofree char *o2 = run_spec ("smollm2-gptq", t2, NULL);
  g_autofree char *path = g_build_filename (o2, "q.gguf", NULL), *path45 = g_build_filename (o2, "q45.gguf", NULL);
  g_autofree char *path_awq = g_build_filename (o2, "awq.gguf", NULL);
  guint64 bytes = file_size (path), bytes45 = file_size (path45), bytes_awq = file_size (path_awq);
  double p = ppl (o2, "e"), p_awq = ppl (o2, "e-awq"), params = lp_test_report_node_double (o2, "q45", "params");
  g_test_message ("GPTQ target_size=%" G_GUINT64_FORMAT ": %" G_GUINT64_FORMAT " bytes, perplexity %.4f; "
                  "AWQ target_size=%" G_GUINT64_FORMAT ": %" G_GUINT64_FORMAT " bytes, perplexity %.4f; "
                  "GPTQ target_bpw=4.5: %" G_GUINT64_FORMAT " bytes, %.4f bits per weight",
                  ref_bytes, bytes, p, ref_bytes, bytes_awq, p_awq, bytes45, 8.0 * (double) bytes45 / params);
  /* Both at Q4_K_M's size beat it: llama-quantize's file and our preset. */
  const guint64 arm_bytes[] = { bytes, bytes_awq };
  const double arm_ppl[] = { p, p_awq };
  for (gsize i = 0; i < G_N_ELEMENTS (arm_ppl); i++)
    {
      g_assert_cmpuint (arm_bytes[i], <=, ref_bytes);
      g_assert_cmpfloat (arm_ppl[i], <, ref);
      g_assert_cmpfloat (arm_ppl[i], <, q4km);
    }
  g_assert_cmpfloat (8.0 * (double) bytes45 / params, <=, 4.5);
  g_assert_cmpfloat (8.0 * (double) bytes45 / params, >=, 0.99 * 4.5);
}

/* One clear line and a non-zero exit: `node` (PASS PARAM=VALUE ...) on the
 * demo model. */
static void
assert_fails (const char *expect, const char *node)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *calib = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_auto (GStrv) words = g_strsplit (node, " ", -1);
  g_autoptr (GString) spec = g_string_new (NULL);
  g_string_append_printf (spec, "[pipeline]\ncalibration=%s\ncalibration_samples=4\ncalibration_seq_len=128\n"
                          "[load]\npath=%s\n[q]\npass=%s\n", calib, model, words[0]);
  for (int k = 1; words[k]; k++)
    g_string_append_printf (spec, "%s\n", words[k]);
  g_autofree char *path = lp_test_write_file ("bad.ini", spec->str, spec->len);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "bad", NULL);
  g_autofree char *err = NULL;
  const char *args[] = { "run", path, "-o", out, "--no-cache", "-q", NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, &err, args), !=, 0);
  g_test_message ("%s", err);
  g_assert_nonnull (strstr (err, expect));
}

static void
test_bad_input (void)
{
  assert_fails ("target_bpw: expected no target_size= with it", "quantize.gptq target_bpw=5 target_size=300000");
  assert_fails ("candidates: expected target_bpw= or target_size= beside it", "quantize.awq candidates=q4_k");
  assert_fails ("candidates: expected at most 12 of BITS (2..8) or TYPE", "quantize.gptq target_bpw=9 candidates=q4_k,q9");
  assert_fails ("target_size: expected no preset= with it", "quantize.gptq target_size=300000 preset=Q4_K_M");
  assert_fails ("budget: expected at least", "quantize.gptq target_size=1000");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/budget/stories/size", test_stories_budget);
  g_test_add_func ("/budget/stories/q4km-size", test_stories_q4km_size);
  g_test_add_func ("/budget/smollm2/q4km-size", test_smollm2_q4km_size);
  g_test_add_func ("/budget/bad-input", test_bad_input);
  return g_test_run ();
}
