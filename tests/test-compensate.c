/* llmpress tests — factorize.compensate (CALDERA: W ≈ Q + L R, compensate.h):
 * on synthetic layers, the output error of Q + L R against Q alone and over
 * the iterations; the factors' bits counted; the adapter with factors on an
 * integer grid through GGUF; base + adapter against the merged dense model
 * (logits, perplexity); bad input; the spec's table on stories260K. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

/* W [N, K]: a few strong directions plus noise, as trained weights are. */
static float *
synthetic_weight (int n, int k, guint32 seed)
{
  const int r = 4;
  g_autofree float *u = g_new (float, (gsize) n * r), *v = g_new (float, (gsize) r * k);
  lp_test_fill (u, (gsize) n * r, seed, 1.0);
  lp_test_fill (v, (gsize) r * k, seed + 1, 0.3);
  float *w = g_new (float, (gsize) n * k);
  lp_test_fill (w, (gsize) n * k, seed + 2, 0.1);
  lp_ref_gemm (FALSE, n, k, r, 1.0f, u, r, v, k, 1.0f, w, k);
  return w;
}

/* H = X^T X [K, K] of x [T, K]. */
static float *
hessian_of (const float *x, int T, int k)
{
  float *h = g_new0 (float, (gsize) k * k);
  for (int t = 0; t < T; t++)
    for (int a = 0; a < k; a++)
      for (int b = 0; b < k; b++)
        h[(gsize) a * k + b] += x[(gsize) t * k + a] * x[(gsize) t * k + b];
  return h;
}

/* H for T tokens whose channels have unequal scales (as activations do). */
static float *
synthetic_hessian (int k, int T, guint32 seed)
{
  g_autofree float *x = g_new (float, (gsize) T * k);
  lp_test_fill (x, (gsize) T * k, seed, 1.0);
  for (int t = 0; t < T; t++)
    for (int c = 0; c < k; c++)
      x[(gsize) t * k + c] *= 0.2f + (float) (c % 7);
  return hessian_of (x, T, k);
}

/* W on an integer grid of `bits` bits in groups of `group` (RTN). */
static LpTensor *
rtn_grid (const char *name, const float *w, int n, int k, int bits, int group)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpIntGrid) g = lp_int_grid_new (n, k, bits, group, FALSE, &error);
  g_assert_no_error (error);
  LpGroupQuant q = { bits, group, FALSE, TRUE };
  lp_ref_quantize_groups (n, k, w, k, NULL, &q, g->codes, g->scales, g->zeros);
  gint64 shape[2] = { n, k };
  LpTensor *t = lp_tensor_new_int_grid (name, 2, shape, g, NULL, &error);
  g_assert_no_error (error);
  return t;
}

/* The output error of t's values against W under H. */
static double
error_of (const LpTensor *t, const float *w, const float *h)
{
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  gint64 n = t->shape[0], k = t->shape[1];
  g_autofree float *d = g_new (float, n * k);
  const float *v = lp_tensor_data (t);
  for (gint64 i = 0; i < n * k; i++)
    d[i] = w[i] - v[i];
  return lp_output_error (be, n, k, d, h);
}

typedef struct {
  const char *what;
  int factor_bits;
  gboolean requantize;
} Case;

/* Q + L R's output error is below Q's, never rises over the iterations,
 * falls with re-quantization, and is the error of the tensor returned. */
static void
test_layer_error (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  const int N = 48, K = 64, T = 256;
  g_autofree float *w = synthetic_weight (N, K, 1);
  g_autofree float *h = synthetic_hessian (K, T, 7);
  g_autoptr (LpTensor) q = rtn_grid ("blk.0.ffn_up.weight", w, N, K, 2, 32);
  LpCompensateOptions o = LP_COMPENSATE_OPTIONS_INIT;
  o.rank = 6;
  o.iterations = 4;
  o.factor_bits = c->factor_bits;
  o.requantize = c->requantize;
  double errors[5];
  g_autoptr (LpTensor) t = lp_compensate_layer (be, q, w, h, &o, errors, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_form_name (lp_tensor_form (t)), ==, "adapter");
  g_test_message ("%s: output error Q %.5g, then %.5g %.5g %.5g %.5g", c->what, errors[0], errors[1], errors[2],
                  errors[3], errors[4]);
  g_assert_cmpfloat (errors[1], <, errors[0]);
  double best = errors[1];
  for (int i = 2; i <= 4; i++)
    best = MIN (best, errors[i]);
  /* The alternation pays: re-quantizing Q against the factors lowers it. */
  if (c->requantize)
    g_assert_cmpfloat (best, <, 0.9 * errors[1]);
  /* The tensor returned carries the best iterate's error (f32 sums). */
  double e = error_of (t, w, h);
  g_assert_cmpfloat (fabs (e - best), <=, 1e-3 * best);
  g_assert_cmpfloat (e, <, error_of (q, w, h));
}

/* The bytes: Q's grid plus the two factors' grids (or f16), all counted;
 * lp_compensate_factor_bytes says the same. */
static void
test_bits (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  const int N = 48, K = 64;
  g_autofree float *w = synthetic_weight (N, K, 3);
  g_autofree float *h = synthetic_hessian (K, 128, 5);
  g_autoptr (LpTensor) q = rtn_grid ("w", w, N, K, 2, 32);
  /* Q: 2-bit codes, an f16 scale and a 2-bit zero per 32; g_idx plain, not stored. */
  g_assert_cmpuint (lp_tensor_storage_bytes (q), ==, N * K * 2 / 8 + N * 2 * 2 + (N * 2 * 2 + 7) / 8);
  /* L [48, 6] at 4 bits, one group a row (6 values); R [6, 64] in groups of 32. */
  guint64 l_bytes = 48 * 6 * 4 / 8 + 48 * 2 + (48 * 4 + 7) / 8;
  guint64 r_bytes = 6 * 64 * 4 / 8 + 12 * 2 + (12 * 4 + 7) / 8;
  g_assert_cmpuint (lp_compensate_factor_bytes (N, K, 6, 4, 32), ==, l_bytes + r_bytes);
  g_assert_cmpuint (lp_compensate_factor_bytes (N, K, 6, 16, 32), ==, 2 * (48 * 6 + 6 * 64));
  g_assert_cmpuint (lp_compensate_factor_bytes (N, K, 6, 0, 32), ==, 2 * (48 * 6 + 6 * 64));
  for (int bits = 4; bits <= 16; bits += 12)
    {
      LpCompensateOptions o = LP_COMPENSATE_OPTIONS_INIT;
      o.rank = 6;
      o.iterations = 2;
      o.factor_bits = bits;
      g_autoptr (LpTensor) t = lp_compensate_layer (be, q, w, h, &o, NULL, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (lp_tensor_storage_bytes (t), ==,
                        lp_tensor_storage_bytes (q) + lp_compensate_factor_bytes (N, K, 6, bits, 32));
      g_assert_cmpfloat (lp_tensor_bits_per_weight (t), ==,
                         8.0 * (double) lp_tensor_storage_bytes (t) / (double) (N * K));
    }
}

/* A tiny model with two weights compensated (2-bit grid base, 4-bit grid
 * factors), the same model with those weights merged into dense f32. */
static LpModel *
compensated_model (LpModel **merged)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  LpModel *m = lp_test_tiny_model (11);
  *merged = lp_test_tiny_model (11);
  const char *names[] = { "blk.0.ffn_up.weight", "blk.1.attn_q.weight" };
  for (int i = 0; i < 2; i++)
    {
      LpTensor *ref = lp_model_tensor (m, names[i]);
      int n = (int) ref->shape[0], k = (int) ref->shape[1];
      g_autofree float *w = lp_tensor_dup_f32 (ref, &error);
      g_autofree float *h = synthetic_hessian (k, 96, 20 + i);
      g_autoptr (LpTensor) q = rtn_grid (names[i], w, n, k, 2, 16);
      LpCompensateOptions o = LP_COMPENSATE_OPTIONS_INIT;
      o.rank = 4;
      o.factor_group = 16;
      g_autoptr (LpTensor) t = lp_compensate_layer (be, q, w, h, &o, NULL, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (m, t);
      g_autoptr (LpTensor) d = lp_tensor_new_f32 (names[i], 2, t->shape, lp_tensor_data (t), &error);
      g_assert_no_error (error);
      lp_model_set_tensor (*merged, d);
    }
  return m;
}

static double
perplexity_of (LpModel *m, const gint32 *tokens, gsize n)
{
  g_autoptr (GError) error = NULL;
  LpEvalOptions o = { .ctx = 32 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, tokens, n, &o, &r, &error));
  g_assert_no_error (error);
  return r.ppl;
}

/* Base + adapter (its product: Q's then (x A^T) B^T) gives the merged dense
 * model's logits within 1e-5 and its perplexity within 1e-4. */
static void
test_forward_merged (void)
{
  g_autoptr (LpModel) merged = NULL;
  g_autoptr (LpModel) m = compensated_model (&merged);
  const int T = 24, n_tokens = 200;
  gint32 tokens[200];
  guint32 s = 5;
  for (int i = 0; i < n_tokens; i++)
    tokens[i] = (gint32) ((s = s * 1664525u + 1013904223u) >> 8) % lp_model_config (m)->n_vocab;
  g_autofree float *x = lp_test_logits (m, tokens, T), *y = lp_test_logits (merged, tokens, T);
  for (gsize i = 0; i < (gsize) T * lp_model_config (m)->n_vocab; i++)
    g_assert_cmpfloat (fabs (x[i] - y[i]), <=, 1e-5);
  double p1 = perplexity_of (m, tokens, n_tokens), p2 = perplexity_of (merged, tokens, n_tokens);
  g_test_message ("base + adapter %.6f, merged %.6f", p1, p2);
  g_assert_cmpfloat (fabs (p1 - p2), <=, 1e-4);
}

/* Saved as GGUF and read back: the adapters come back with equal values
 * and logits; the file holds the grid factors' values (GGUF has no integer
 * grid type), so the bytes read back are what the file holds. */
static void
test_gguf_round_trip (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) merged = NULL;
  g_autoptr (LpModel) m = compensated_model (&merged);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "compensated.gguf", NULL);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  const char *names[] = { "blk.0.ffn_up.weight", "blk.1.attn_q.weight" };
  for (int i = 0; i < 2; i++)
    {
      LpTensor *t = lp_model_tensor (m, names[i]), *u = lp_model_tensor (back, names[i]);
      g_assert_nonnull (u);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (u)), ==, "adapter");
      g_assert_true (g_bytes_equal (u->data, t->data));
    }
  gint32 tokens[16];
  for (int i = 0; i < 16; i++)
    tokens[i] = (i * 7 + 3) % lp_model_config (m)->n_vocab;
  g_autofree float *x = lp_test_logits (m, tokens, 16), *y = lp_test_logits (back, tokens, 16);
  g_assert_cmpmem (x, 16 * lp_model_config (m)->n_vocab * sizeof (float), y,
                   16 * lp_model_config (m)->n_vocab * sizeof (float));
}

/* Rank 0 or above min(N, K), a Hessian not positive definite: errors. */
static void
test_layer_bad (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  const int N = 16, K = 32;
  g_autofree float *w = synthetic_weight (N, K, 9);
  g_autofree float *h = synthetic_hessian (K, 64, 9);
  g_autoptr (LpTensor) q = rtn_grid ("w", w, N, K, 2, 16);
  LpCompensateOptions o = LP_COMPENSATE_OPTIONS_INIT;
  int bad_ranks[] = { 0, 17 };
  for (int i = 0; i < 2; i++)
    {
      o.rank = bad_ranks[i];
      g_assert_null (lp_compensate_layer (be, q, w, h, &o, NULL, &error));
      lp_test_assert_error_contains (error, "rank=", "expected 1..16", NULL);
      g_clear_error (&error);
    }
  o.rank = 4;
  for (int i = 0; i < K * K; i++)
    h[i] = (i % (K + 1) == 0) ? -1.0f : 0.0f;
  g_assert_null (lp_compensate_layer (be, q, w, h, &o, NULL, &error));
  g_assert_nonnull (error);
  g_test_message ("%s", error->message);
  g_clear_error (&error);
}

/* ---- the pass, on stories260K ---- */

static char *
stories_head (const char *tokens)
{
  return g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=32\ncalibration_seq_len=256\n"
                          "calibration_range=300000:\n",
                          tokens);
}

/* Run a spec text; the status, stderr in *err. */
static int
run_spec (const char *name, const char *text, char **err)
{
  g_autofree char *file = g_strdup_printf ("%s.ini", name);
  g_autofree char *path = lp_test_write_file (file, text, strlen (text));
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_autofree char *o = NULL;
  return lp_test_run_cli (&o, err, "run", path, "-q", "-o", out, "--no-cache", NULL);
}

/* Bad input to the pass: one line, exit 1, nothing written. */
static void
test_pass_bad (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  g_autofree char *head = stories_head (tokens);
  g_autofree char *demo = lp_test_demo_model ();
  struct {
    const char *name, *params, *expect;
    gboolean other_reference;
  } cases[] = {
    { "rank-big", "rank=40", "rank=40: expected 1..32 for tensor blk.0.attn_k.weight", FALSE },
    { "rank-zero", "rank=0", "rank=0 needs bpw=", FALSE },
    { "budget", "bpw=2.7", "bpw=2.7 cannot be met: the 35 selected weights take 2.5784 bits per weight compressed", FALSE },
    { "reference", "rank=4", "as in the input, found", TRUE },
    { "factor-bits", "factor_bits=9", "factor_bits=9: expected 2..8", FALSE },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *text = g_strdup_printf ("%s[load]\npath=%s\n[ref]\npass=load\npath=%s\n"
                                               "[q]\npass=quantize.rtn\ninput=load\nbits=2\ngroup_size=32\n"
                                               "[c]\npass=factorize.compensate\ninput=q\nreference=%s\n%s\n"
                                               "[save]\ninput=c\npath=out.gguf\n",
                                               head, model, cases[i].other_reference ? demo : model,
                                               cases[i].other_reference ? "ref" : "load", cases[i].params);
      g_autofree char *err = NULL;
      int status = run_spec (cases[i].name, text, &err);
      g_test_message ("%s: %s", cases[i].name, err);
      g_assert_cmpint (status, ==, 1);
      g_assert_nonnull (strstr (err, cases[i].expect));
      g_assert_cmpuint (lp_test_count_lines (err), ==, 1);
      g_autofree char *file = g_build_filename (lp_test_tmpdir (), cases[i].name, "out.gguf", NULL);
      g_assert_false (g_file_test (file, G_FILE_TEST_EXISTS));
    }
}

/* specs/compensate.ini's eval nodes, in the order of its table. */
enum { RTN3, RTN3_REC, RTN2, RTN2_LR, RTN2_LR_REC, GPTQ3, GPTQ3_REC, GPTQ2, GPTQ2_LR, GPTQ2_LR_REC, N_NODES };
static const char *const spec_nodes[N_NODES] = { "eval-rtn3", "eval-rtn3-rec", "eval-rtn2", "eval-rtn2-lr",
                                                 "eval-rtn2-lr-rec", "eval-gptq3", "eval-gptq3-rec", "eval-gptq2",
                                                 "eval-gptq2-lr", "eval-gptq2-lr-rec" };

/* Runs specs/compensate.ini on stories260K (the TinyStories split), `jobs`
 * nodes at once, with the -D definitions `defines` (NULL-terminated) into the test directory's
 * `name`, and reads each eval node's bits per weight and perplexity.
 * FALSE: the shared model or data are missing (the test is skipped). */
static gboolean
run_stories_spec (const char *name, const char *jobs, const char *const *defines, double *bpw, double *ppl)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return FALSE;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "compensate.ini", NULL);
  g_autofree char *dm = g_strdup_printf ("model=%s", model);
  g_autofree char *dd = g_strdup_printf ("data=%s", tokens);
  g_autofree char *dc = g_strdup_printf ("calib=%s", tokens);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  const char *fixed[] = { "run", spec, "-q", "-j", jobs, "-o", out, "--no-cache", "-D", dm, "-D", dd, "-D", dc };
  for (guint i = 0; i < G_N_ELEMENTS (fixed); i++)
    g_ptr_array_add (args, (gpointer) fixed[i]);
  for (int i = 0; defines[i] != NULL; i++)
    {
      g_ptr_array_add (args, (gpointer) "-D");
      g_ptr_array_add (args, (gpointer) defines[i]);
    }
  g_ptr_array_add (args, NULL);
  g_autofree char *o = NULL, *err = NULL;
  int status = lp_test_run_cliv (&o, &err, (const char *const *) args->pdata);
  if (status != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (status, ==, 0);
  for (int i = 0; i < N_NODES; i++)
    {
      bpw[i] = lp_test_report_metric (out, spec_nodes[i], "weights.bits_per_weight");
      ppl[i] = lp_test_report_metric (out, spec_nodes[i], "perplexity");
      g_test_message ("%-18s %.4f bits per weight, perplexity %.4f", spec_nodes[i], bpw[i], ppl[i]);
    }
  return TRUE;
}

/* The spec's table, kept short here (32 calibration samples, 30 steps, 16
 * windows; the spec's header gives the full run's figures): each
 * compensation beats its base within its budget, and recovery improves
 * each model at exactly its bits. */
static void
test_stories_spec (void)
{
  const char *const defines[] = { "steps=30", "adapter_steps=30", "windows=16", "calib_samples=32", NULL };
  double bpw[N_NODES], ppl[N_NODES];
  if (!run_stories_spec ("compensate-spec", "2", defines, bpw, ppl))
    return;
  /* The compensation beats its base, within the budget set. */
  g_assert_cmpfloat (ppl[RTN2_LR], <, ppl[RTN2]);
  g_assert_cmpfloat (bpw[RTN2_LR], <=, bpw[RTN3]);
  g_assert_cmpfloat (ppl[GPTQ2_LR], <, ppl[GPTQ2]);
  g_assert_cmpfloat (bpw[GPTQ2_LR], <=, 3.0);
  /* Recovery improves each model at exactly its bits: the factors and the
   * grids train on their own grids.  GPTQ int3 is the exception this short
   * run cannot show: its loss to recover is small, and 30 steps land on
   * either side of it (26 to 36 steps gave 5.50 to 5.77 against 5.7235,
   * the held-out split of 1,024 tokens improving every time; a sanitizer
   * build, summing in another order, gave 5.7387).  There recovery must
   * only not lose more than that noise: the held-out check keeps step 0
   * when training goes wrong.  The spec's full 150 steps give 5.2663
   * against 5.6946 (its header; 5.2221 against 5.7486 on the earlier 128 samples). */
  const int rec[][2] = { { RTN3, RTN3_REC }, { RTN2_LR, RTN2_LR_REC }, { GPTQ3, GPTQ3_REC }, { GPTQ2_LR, GPTQ2_LR_REC } };
  for (guint i = 0; i < G_N_ELEMENTS (rec); i++)
    {
      double slack = rec[i][0] == GPTQ3 ? 1.02 : 1.0;
      g_assert_cmpfloat (ppl[rec[i][1]], <, ppl[rec[i][0]] * slack);
      g_assert_cmpfloat (bpw[rec[i][1]], ==, bpw[rec[i][0]]);
    }
}

/* Issue 15's two targets on the spec's full run (slow: its recoveries take
 * minutes; one node at a time, as two recoveries at once on two cores
 * oversubscribe the threads and crawl), each against the baseline measured
 * in the same run, bits per
 * weight as eval counts them (Q, L, R, every scale and zero):
 *  - int2 g32 RTN + L R, recovered, below int2 alone and below int3 g32 RTN
 *    alone, at no more bits than int3: asserted;
 *  - GPTQ int2 + quantized L R, recovered, at most 3.0 bits per weight,
 *    below GPTQ int3 g32 alone (and below the 5.8526): asserted,
 *    with the gains over int2 alone and over the compensation before
 *    recovery. */
static void
test_stories_targets (void)
{
  if (!lp_test_slow ())
    return;
  const char *const defines[] = { NULL };
  double bpw[N_NODES], ppl[N_NODES];
  if (!run_stories_spec ("compensate-targets", "1", defines, bpw, ppl))
    return;
  g_assert_cmpfloat (bpw[RTN2_LR_REC], <=, bpw[RTN3]);
  g_assert_cmpfloat (ppl[RTN2_LR_REC], <, ppl[RTN2]);
  g_assert_cmpfloat (ppl[RTN2_LR_REC], <, ppl[RTN3]);
  g_assert_cmpfloat (bpw[GPTQ2_LR_REC], <=, 3.0);
  g_assert_cmpfloat (ppl[GPTQ2_LR_REC], <, ppl[GPTQ2_LR]);
  g_assert_cmpfloat (ppl[GPTQ2_LR_REC], <, ppl[GPTQ2]);
  g_assert_cmpfloat (ppl[GPTQ2_LR_REC], <, ppl[GPTQ3]);
  g_assert_cmpfloat (ppl[GPTQ2_LR_REC], <, 5.8526);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  static const Case cases[] = {
    { "int4 factors, requantize", 4, TRUE },
    { "int4 factors, Q kept", 4, FALSE },
    { "f16 factors, requantize", 16, TRUE },
  };
  g_test_add_data_func ("/compensate/layer/int4-requantize", &cases[0], test_layer_error);
  g_test_add_data_func ("/compensate/layer/int4-fixed-q", &cases[1], test_layer_error);
  g_test_add_data_func ("/compensate/layer/f16-requantize", &cases[2], test_layer_error);
  g_test_add_func ("/compensate/bits", test_bits);
  g_test_add_func ("/compensate/layer-bad", test_layer_bad);
  g_test_add_func ("/compensate/forward-merged", test_forward_merged);
  g_test_add_func ("/compensate/gguf", test_gguf_round_trip);
  g_test_add_func ("/compensate/pass-bad", test_pass_bad);
  g_test_add_func ("/compensate/stories", test_stories_spec);
  g_test_add_func ("/compensate/stories-targets", test_stories_targets);
  return g_test_run ();
}
