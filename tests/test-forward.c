/* Forward pass and evaluation: backend kernels against their C references,
 * incremental decoding against full sequences, and the real stories260K
 * perplexity and greedy generation. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "testutil.h"

static void
test_cpu_kernels (void)
{
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  int M = 37, N = 29, K = 53;
  g_autofree float *A = g_new (float, M * K), *B = g_new (float, N * K), *C = g_new (float, M * N),
                   *R = g_new (float, M * N);
  lp_test_fill (A, M * K, 1, 1);
  lp_test_fill (B, N * K, 2, 1);
  for (int tb = 0; tb < 2; tb++)
    {
      lp_test_fill (C, M * N, 3, 1);
      memcpy (R, C, sizeof (float) * M * N);
      int ldb = tb ? K : N;
      lp_gemm (be, tb, M, N, K, 0.5f, A, K, B, ldb, 0.25f, C, N);
      lp_ref_gemm (tb, M, N, K, 0.5f, A, K, B, ldb, 0.25f, R, N);
      lp_test_assert_close (C, R, M * N, 1e-5);
    }
  /* Hessian accumulation. */
  int T = 41, n = 17;
  g_autofree float *X = g_new (float, T * n), *H = g_new0 (float, n * n), *Hr = g_new0 (float, n * n);
  lp_test_fill (X, T * n, 4, 1);
  lp_syrk (be, T, n, X, n, H);
  lp_ref_syrk (T, n, X, n, Hr);
  lp_test_assert_close (H, Hr, n * n, 1e-5);
  /* Cholesky of H + n I (SPD). */
  for (int i = 0; i < n; i++)
    H[i * n + i] += n, Hr[i * n + i] += n;
  g_assert_true (lp_cholesky (be, n, H, n));
  g_assert_true (lp_ref_cholesky (n, Hr, n));
  lp_test_assert_close (H, Hr, n * n, 1e-5);
  float notspd[4] = { 1, 2, 2, 1 };
  g_assert_false (lp_cholesky (be, 2, notspd, 2));
  /* Attention with a KV history (GQA 4 heads over 2). */
  int Tq = 5, Tkv = 9, Hh = 4, Hkv = 2, hd = 8;
  g_autofree float *q = g_new (float, Tq * Hh * hd), *k = g_new (float, Tkv * Hkv * hd),
                   *v = g_new (float, Tkv * Hkv * hd), *o = g_new (float, Tq * Hh * hd),
                   *orf = g_new (float, Tq * Hh * hd);
  lp_test_fill (q, Tq * Hh * hd, 5, 2);
  lp_test_fill (k, Tkv * Hkv * hd, 6, 2);
  lp_test_fill (v, Tkv * Hkv * hd, 7, 1);
  lp_attention (be, Tq, Tkv, Hh, Hkv, hd, q, k, v, o);
  lp_ref_attention (Tq, Tkv, Hh, Hkv, hd, q, k, v, orf);
  lp_test_assert_close (o, orf, Tq * Hh * hd, 1e-5);
}

/* int8 GEMM: exact integer sums on the CPU backend (sgemm over 1024-deep
 * slices) equal the reference's int32 loop bit for bit
 * (lp_test_check_gemm_i8 says which operands). */
static void
test_cpu_gemm_i8 (void)
{
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  lp_test_check_gemm_i8 (be);
}

/* The CPU backend's weight product over integer grids against the
 * reference (lp_test_check_gemm_grid says which grids). */
static void
test_cpu_gemm_grid (void)
{
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  lp_test_check_gemm_grid (be);
}

/* Group-wise RTN: the definition on hand-worked groups, then the CPU
 * backend (its fast kernel, intgrid_fit.c, on every thread) equal to
 * lp_ref_quantize_groups byte for byte. */
static void
test_quantize_groups (void)
{
  /* Groups of 4 over 6 columns (the second one short), 2 bits: [-1, 2]
   * gives scale 1, zero 1; [0, 0.5] gives scale f16(0.5/3) = 0x3155 and a
   * zero of 0 clamped to 1, so 0.5 and 0.25 both land on the top code. */
  static const float w1[6] = { -1, 0, 1, 2, 0.5f, 0.25f };
  static const guint8 codes1[6] = { 0, 1, 2, 3, 3, 3 };
  guint8 codes[8], zeros[2];
  guint16 scales[2];
  LpGroupQuant q = { .bits = 2, .group = 4 };
  lp_ref_quantize_groups (1, 6, w1, 6, NULL, &q, codes, scales, zeros);
  g_assert_cmpmem (codes, 6, codes1, 6);
  g_assert_cmphex (scales[0], ==, 0x3c00);
  g_assert_cmpuint (zeros[0], ==, 1);
  g_assert_cmphex (scales[1], ==, 0x3155);
  g_assert_cmpuint (zeros[1], ==, 1);
  /* Symmetric, 4 bits: a = 0.75, scale f16(1.5/15) = 0x2e66, zero 8;
   * 0.75 / scale = 7.5018 rounds to 8 + 8, clamped to 15.  An all-zero
   * group takes the range [-1, 1]; with 2 bits and a zero point that is
   * scale f16(2/3) = 0x3955, zero round (1 / 0.6665) = 2, every code 2. */
  static const float w2[8] = { -0.5f, 0.25f, 0, 0.75f, 0, 0, 0, 0 };
  static const guint8 codes2[8] = { 3, 11, 8, 15, 8, 8, 8, 8 };
  q = (LpGroupQuant) { .bits = 4, .group = 4, .symmetric = TRUE };
  lp_ref_quantize_groups (1, 8, w2, 8, NULL, &q, codes, scales, zeros);
  g_assert_cmpmem (codes, 8, codes2, 8);
  g_assert_cmphex (scales[0], ==, 0x2e66);
  g_assert_cmpuint (zeros[0], ==, 8);
  g_assert_cmphex (scales[1], ==, 0x3044); /* [-1, 1] over 15 steps: f16(2/15) */
  g_assert_cmpuint (zeros[1], ==, 8);
  q.symmetric = FALSE;
  q.bits = 2;
  lp_ref_quantize_groups (1, 8, w2, 8, NULL, &q, codes, scales, zeros);
  g_assert_cmphex (scales[1], ==, 0x3955);
  g_assert_cmpuint (zeros[1], ==, 2);
  static const guint8 twos[4] = { 2, 2, 2, 2 };
  g_assert_cmpmem (codes + 4, 4, twos, 4);

  /* The CPU backend is the reference; clip search never does worse than
   * the full range (it is the first candidate). */
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  int R = 9, C = 150, ldw = C + 2;
  g_autofree float *W = g_new (float, (gsize) R * ldw), *imp = g_new (float, C);
  lp_test_fill (W, (gsize) R * ldw, 60, 1);
  for (gsize i = 0; i < (gsize) R * ldw; i += 17)
    W[i] *= 8; /* outliers: something for the clip search to cut */
  lp_test_fill (imp, C, 61, 1);
  for (int c = 0; c < C; c++)
    imp[c] = imp[c] * imp[c];
  for (int bits = 2; bits <= 8; bits += 3)
    for (int group = 32; group <= C; group += C - 32)
      for (int v = 0; v < 4; v++)
        {
          LpGroupQuant g = { bits, group, v & 1, TRUE };
          const float *im = v & 2 ? imp : NULL;
          int G = (C + group - 1) / group;
          g_autofree guint8 *c1 = g_new (guint8, R * C), *c2 = g_new (guint8, R * C), *c3 = g_new (guint8, R * C);
          g_autofree guint16 *s1 = g_new (guint16, R * G), *s2 = g_new (guint16, R * G), *s3 = g_new (guint16, R * G);
          g_autofree guint8 *z1 = g_new (guint8, R * G), *z2 = g_new (guint8, R * G), *z3 = g_new (guint8, R * G);
          lp_quantize_groups (be, R, C, W, ldw, im, &g, c1, s1, z1);
          lp_ref_quantize_groups (R, C, W, ldw, im, &g, c2, s2, z2);
          g_assert_cmpmem (c1, R * C, c2, R * C);
          g_assert_cmpmem (s1, R * G * 2, s2, R * G * 2);
          g_assert_cmpmem (z1, R * G, z2, R * G);
          g.clip_search = FALSE;
          lp_ref_quantize_groups (R, C, W, ldw, im, &g, c3, s3, z3);
          int shrunk = 0;
          for (int r = 0; r < R; r++)
            for (int k = 0; k < G; k++)
              {
                double e_clip = 0, e_full = 0;
                for (int c = k * group; c < MIN (C, (k + 1) * group); c++)
                  {
                    float x = W[r * ldw + c], wt = im ? im[c] : 1;
                    double dc = lp_f16_to_f32 (s2[r * G + k]) * (c2[r * C + c] - z2[r * G + k]) - x;
                    double df = lp_f16_to_f32 (s3[r * G + k]) * (c3[r * C + c] - z3[r * G + k]) - x;
                    e_clip += wt * dc * dc;
                    e_full += wt * df * df;
                  }
                g_assert_cmpfloat (e_clip, <=, e_full * (1 + 1e-6));
                shrunk += s2[r * G + k] < s3[r * G + k];
              }
          /* With outliers of 8x the clip search does cut some ranges at
           * 2 and 5 bits (at 8 the steps are too fine to gain from it). */
          if (bits < 8)
            g_assert_cmpint (shrunk, >, 0);
        }

  /* SmolLM2's shape class (rows of 576, groups of 128, a short last one of
   * 64 when group = 256): enough rows that lp_parallel_for splits them. */
  int R2 = 96, C2 = 576;
  g_autofree float *W2 = g_new (float, (gsize) R2 * C2), *imp2 = g_new (float, C2);
  lp_test_fill (W2, (gsize) R2 * C2, 62, 1);
  for (gsize i = 0; i < (gsize) R2 * C2; i += 29)
    W2[i] *= 6;
  lp_test_fill (imp2, C2, 63, 1);
  for (int c = 0; c < C2; c++)
    imp2[c] = imp2[c] * imp2[c];
  for (int v = 0; v < 8; v++)
    {
      LpGroupQuant g = { v & 4 ? 3 : 4, v & 1 ? 256 : 128, v & 2, TRUE };
      const float *im = v & 1 ? imp2 : NULL;
      int G = (C2 + g.group - 1) / g.group;
      g_autofree guint8 *c1 = g_new (guint8, R2 * C2), *c2 = g_new (guint8, R2 * C2);
      g_autofree guint16 *s1 = g_new (guint16, R2 * G), *s2 = g_new (guint16, R2 * G);
      g_autofree guint8 *z1 = g_new (guint8, R2 * G), *z2 = g_new (guint8, R2 * G);
      lp_quantize_groups (be, R2, C2, W2, C2, im, &g, c1, s1, z1);
      lp_ref_quantize_groups (R2, C2, W2, C2, im, &g, c2, s2, z2);
      g_assert_cmpmem (c1, R2 * C2, c2, R2 * C2);
      g_assert_cmpmem (s1, R2 * G * 2, s2, R2 * G * 2);
      g_assert_cmpmem (z1, R2 * G, z2, R2 * G);
    }
}

static void
test_rope_styles (void)
{
  /* Position 0 is the identity; NORMAL and NEOX differ by a permutation. */
  float inv[2] = { 1.0f, 0.01f };
  float a[4] = { 1, 2, 3, 4 }, b[4] = { 1, 2, 3, 4 };
  lp_ref_rope (LP_ROPE_NORMAL, 1, 1, 4, 0, inv, a);
  g_assert_cmpfloat (a[1], ==, 2.0f);
  float n[4] = { 1, 2, 3, 4 }, x[4] = { 1, 3, 2, 4 }; /* x = n in NEOX order */
  lp_ref_rope (LP_ROPE_NORMAL, 1, 1, 4, 7, inv, n);
  lp_ref_rope (LP_ROPE_NEOX, 1, 1, 4, 7, inv, x);
  g_assert_cmpfloat_with_epsilon (n[0], x[0], 1e-6);
  g_assert_cmpfloat_with_epsilon (n[1], x[2], 1e-6);
  g_assert_cmpfloat_with_epsilon (n[2], x[1], 1e-6);
  g_assert_cmpfloat_with_epsilon (n[3], x[3], 1e-6);
  (void) b;
}

static void
test_incremental_matches_full (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (3);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_assert_no_error (error);
  const int T = 12, V = 64;
  gint32 toks[12];
  for (int i = 0; i < T; i++)
    toks[i] = (i * 7 + 1) % V;
  g_autofree float *full = g_new (float, T * V), *inc = g_new (float, T * V);
  g_assert_true (lp_forward_logits (fw, toks, T, NULL, full, &error));
  g_autoptr (LpKVCache) cache = lp_kv_cache_new (lp_model_config (m), T);
  /* A prefix of 5 at once, then one token at a time. */
  g_assert_true (lp_forward_logits (fw, toks, 5, cache, inc, &error));
  for (int t = 5; t < T; t++)
    g_assert_true (lp_forward_logits (fw, toks + t, 1, cache, inc + t * V, &error));
  g_assert_cmpint (lp_kv_cache_length (cache), ==, T);
  lp_test_assert_close (inc, full, T * V, 1e-5);
  /* Out-of-vocabulary ids are refused. */
  gint32 bad = 64;
  g_assert_false (lp_forward_logits (fw, &bad, 1, NULL, full, &error));
  lp_test_assert_error_contains (error, "token 64", "expected an id in 0..63", NULL);
}

static void
test_f16_weights_close (void)
{
  /* Materializing f16 weights layer by layer gives nearly the f32 logits. */
  g_autoptr (LpModel) m = lp_test_tiny_model (5);
  g_autoptr (LpModel) h = lp_model_new (lp_model_config (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      g_autoptr (LpTensor) t = lp_tensor_convert (lp_model_tensor_at (m, i), LP_DTYPE_F16, NULL);
      lp_model_set_tensor (h, t);
    }
  gint32 toks[8] = { 1, 5, 9, 13, 17, 21, 25, 29 };
  g_autofree float *a = g_new (float, 8 * 64), *b = g_new (float, 8 * 64);
  g_autoptr (LpForward) fa = lp_forward_new (m, NULL, NULL);
  g_autoptr (LpForward) fb = lp_forward_new (h, NULL, NULL);
  g_assert_true (lp_forward_logits (fa, toks, 8, NULL, a, NULL));
  g_assert_true (lp_forward_logits (fb, toks, 8, NULL, b, NULL));
  lp_test_assert_close (b, a, 8 * 64, 5e-3);
}

static void
test_kl_self_zero (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (9);
  g_autoptr (GArray) toks = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (int i = 0; i < 200; i++)
    {
      gint32 v = (i * 13 + 3) % 64;
      g_array_append_val (toks, v);
    }
  LpEvalOptions o = { .ctx = 32, .reference = m };
  LpEvalResult r;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, &r, &error));
  g_assert_no_error (error);
  g_assert_cmpint (r.n_windows, ==, 200 / 31);
  g_assert_cmpint (r.n_scored, ==, r.n_windows * 31);
  g_assert_cmpfloat (fabs (r.kl), <, 1e-9);
  g_assert_cmpfloat (r.top1, ==, 1.0);
  /* A different model is not identical. */
  g_autoptr (LpModel) other = lp_test_tiny_model (10);
  o.reference = other;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, &r, &error));
  g_assert_cmpfloat (r.kl, >, 1e-4);
  g_assert_cmpfloat (r.top1, <, 1.0);
}

/* stories260K: the reference perplexity 5.3203 over 769 windows of BOS + 511. */
static double
stories_ppl (const char *model_rel, const char *data_rel)
{
  g_autofree char *mp = lp_test_shared_path (model_rel);
  g_autofree char *dp = lp_test_shared_path (data_rel);
  if (mp == NULL || dp == NULL)
    return -1;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (mp, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) toks = lp_tokens_load (dp, m, &error);
  g_assert_no_error (error);
  LpEvalOptions o = { .ctx = 512 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, &r, &error));
  g_assert_no_error (error);
  g_assert_cmpint (r.n_windows, ==, 769);
  g_test_message ("%s on %s: nll %.5f ppl %.4f (%.0f tokens/s)", model_rel, data_rel, r.nll, r.ppl, r.tokens_per_s);
  return r.ppl;
}

static void
test_stories_ppl_bin (void)
{
  double ppl = stories_ppl ("models/stories260K/stories260K.bin", "data/tinystories-valid-head.tok512.u16");
  if (ppl > 0)
    g_assert_cmpfloat (fabs (ppl - 5.3203), <, 0.005);
}

static void
test_stories_ppl_gguf (void)
{
  double ppl = stories_ppl ("models/stories260K/stories260K-f32.gguf", "data/tinystories-valid-head.tok512.u16");
  if (ppl > 0)
    g_assert_cmpfloat (fabs (ppl - 5.3203), <, 0.005);
}

static void
test_stories_ppl_safetensors_and_text (void)
{
  g_autofree char *mp = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tp = lp_test_shared_path ("data/tinystories-valid-head.txt");
  if (mp == NULL || tp == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (mp, NULL, &error);
  g_assert_no_error (error);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "stories-hf", NULL);
  g_assert_true (lp_model_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) hf = lp_model_load (dir, NULL, &error);
  g_assert_no_error (error);
  /* The text file, tokenized with the HF copy's own vocabulary.  The
   * reference token file was made by SentencePiece with tok512.model, whose
   * normalizer collapses runs of spaces; tokenizer.bin does not record that,
   * so say it here as tokenizer.model would. */
  lp_meta_set_bool (lp_model_meta (hf), "tokenizer.ggml.remove_extra_whitespaces", TRUE);
  g_autoptr (GArray) toks = lp_tokens_load (tp, hf, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (toks->len, ==, 393012);
  LpEvalOptions o = { .ctx = 512 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (hf, (gint32 *) toks->data, toks->len, &o, &r, &error));
  g_assert_no_error (error);
  g_test_message ("safetensors copy on text: ppl %.4f", r.ppl);
  g_assert_cmpint (r.n_windows, ==, 769);
  g_assert_cmpfloat (fabs (r.ppl - 5.3203), <, 0.005);
}

static void
test_stories_greedy (void)
{
  g_autofree char *mp = lp_test_shared_path ("models/stories260K/stories260K.bin");
  if (mp == NULL)
    return;
  g_autofree char *out = NULL, *err = NULL;
  int st = lp_test_run_cli (&out, &err, "generate", mp, "-n", "40", "--temp", "0", NULL);
  g_assert_cmpint (st, ==, 0);
  g_test_message ("greedy: %s", out);
  g_assert_true (g_str_has_prefix (out, "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."));
}

typedef struct {
  double worst_rel;
  gint64 checked;
  gboolean zero_layer0;
  LpModel *work;
  double qkv_sum_sq_layer1;
} HessCheck;

/* The streamed Hessian equals X^T X of the captured inputs (float64 here). */
static gboolean
check_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  HessCheck *hc = user_data;
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      LpActStats *s = &stats[w];
      g_assert_nonnull (s->inputs);
      double num = 0, den = 0;
      for (int i = 0; i < s->n; i++)
        {
          double sq = 0;
          for (gint64 t = 0; t < s->n_tokens; t++)
            sq += (double) s->inputs[t * s->n + i] * s->inputs[t * s->n + i];
          g_assert_cmpfloat (fabs (sq - s->sum_sq[i]), <=, 1e-9 * MAX (sq, 1.0));
          for (int j = 0; j < s->n; j++)
            {
              double h = 0;
              for (gint64 t = 0; t < s->n_tokens; t++)
                h += (double) s->inputs[t * s->n + i] * s->inputs[t * s->n + j];
              double d = h - s->hessian[(gsize) i * s->n + j];
              num += d * d;
              den += h * h;
            }
        }
      hc->worst_rel = MAX (hc->worst_rel, sqrt (num / den));
      hc->checked++;
    }
  if (layer == 1)
    for (int j = 0; j < stats[LP_LINEAR_IN_QKV].n; j++)
      hc->qkv_sum_sq_layer1 += stats[LP_LINEAR_IN_QKV].sum_sq[j];
  if (layer == 0 && hc->zero_layer0)
    {
      /* Replace the block's output projection with zeros: the next block's
       * inputs change in sequential mode only. */
      LpTensor *o = lp_model_tensor (hc->work, "blk.0.attn_output.weight");
      g_autoptr (LpTensor) z = lp_tensor_new (o->name, LP_DTYPE_F32, o->n_dims, o->shape, error);
      lp_model_set_tensor (hc->work, z);
    }
  return TRUE;
}

/* n deterministic token ids below the tiny model's vocabulary of 64. */
static GArray *
calib_tokens (int n)
{
  GArray *toks = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (int i = 0; i < n; i++)
    {
      gint32 v = (i * 17 + i / 7) % 64;
      g_array_append_val (toks, v);
    }
  return toks;
}

static void
test_calibration_hessian (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (11);
  g_autoptr (GArray) toks = calib_tokens (400);
  LpCalibOptions o = { 4, 33, 42, LP_CALIB_SEQUENTIAL };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCalibration) cal = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &o, &error);
  g_assert_no_error (error);
  /* Same seed, same samples; BOS first. */
  g_autoptr (LpCalibration) cal2 = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &o, &error);
  g_assert_cmpstr (lp_calibration_digest (cal), ==, lp_calibration_digest (cal2));
  g_assert_cmpint (lp_calibration_sample (cal, 0)[0], ==, 1);

  LpCalibWhat all = LP_CALIB_HESSIAN | LP_CALIB_CHANNEL_STATS | LP_CALIB_CAPTURE;
  HessCheck seq = { 0 };
  g_autoptr (LpModel) work = lp_model_new (lp_model_config (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    lp_model_set_tensor (work, lp_model_tensor_at (m, i));
  seq.work = work;
  seq.zero_layer0 = TRUE;
  g_assert_true (lp_calibration_run (cal, m, work, NULL, all, check_block, &seq, &error));
  g_assert_no_error (error);
  g_assert_cmpint (seq.checked, ==, 2 * LP_LINEAR_IN_COUNT);
  g_test_message ("worst relative Hessian error %.3g", seq.worst_rel);
  g_assert_cmpfloat (seq.worst_rel, <, 1e-5);

  /* Independent mode: block 1 sees the original model's activations. */
  LpCalibOptions oi = o;
  oi.mode = LP_CALIB_INDEPENDENT;
  g_autoptr (LpCalibration) cal_i = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &oi, &error);
  g_autoptr (LpModel) work2 = lp_model_new (lp_model_config (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    lp_model_set_tensor (work2, lp_model_tensor_at (m, i));
  HessCheck ind = { 0 };
  ind.work = work2;
  ind.zero_layer0 = TRUE;
  g_assert_true (lp_calibration_run (cal_i, m, work2, NULL, all, check_block, &ind, &error));
  HessCheck plain = { 0 };
  g_assert_true (lp_calibration_run (cal, m, m, NULL, all, check_block, &plain, &error));
  g_assert_cmpfloat (fabs (ind.qkv_sum_sq_layer1 - plain.qkv_sum_sq_layer1), <=, 1e-9 * plain.qkv_sum_sq_layer1);
  g_assert_cmpfloat (fabs (seq.qkv_sum_sq_layer1 - plain.qkv_sum_sq_layer1), >, 1e-6 * plain.qkv_sum_sq_layer1);

  /* Too little data for the samples asked. */
  LpCalibOptions big = { 100, 33, 0, LP_CALIB_SEQUENTIAL };
  g_assert_null (lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &big, &error));
  lp_test_assert_error_contains (error, "expected at least", "found 400", NULL);
}

/* The Hessian is gathered over several samples before each syrk
 * (calibration.c batches up to 2048 tokens): more samples than one batch
 * holds (flushed in the middle of a block) and one sample longer than a
 * batch (straight to the backend) still give X^T X of every input row. */
static void
test_calibration_hessian_batches (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (11);
  g_autoptr (GArray) toks = calib_tokens (2600);
  const LpCalibOptions cases[] = { { 70, 33, 5, LP_CALIB_SEQUENTIAL }, { 1, 2100, 5, LP_CALIB_SEQUENTIAL } };
  for (guint c = 0; c < G_N_ELEMENTS (cases); c++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (LpCalibration) cal = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &cases[c], &error);
      g_assert_no_error (error);
      HessCheck hc = { 0 };
      g_assert_true (lp_calibration_run (cal, m, m, NULL, LP_CALIB_HESSIAN | LP_CALIB_CHANNEL_STATS | LP_CALIB_CAPTURE,
                                         check_block, &hc, &error));
      g_assert_no_error (error);
      g_assert_cmpint (hc.checked, ==, 2 * LP_LINEAR_IN_COUNT);
      g_test_message ("%d x %d: worst relative Hessian error %.3g", cases[c].n_samples, cases[c].seq_len, hc.worst_rel);
      g_assert_cmpfloat (hc.worst_rel, <, 1e-5);
    }
}

/* Every block's Hessians and channel sums, copied out (one run's). */
typedef struct {
  GPtrArray *hessians; /* float [n, n] per block and input, in order */
  GArray *sum_sq;      /* double, every block's and input's in order */
} CalibCopy;

static gboolean
copy_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  CalibCopy *cc = user_data;
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      g_ptr_array_add (cc->hessians, g_memdup2 (stats[w].hessian, (gsize) stats[w].n * stats[w].n * sizeof (float)));
      g_array_append_vals (cc->sum_sq, stats[w].sum_sq, stats[w].n);
    }
  return TRUE;
}

static CalibCopy
calib_copy_run (LpCalibration *cal, LpModel *m, int threads)
{
  CalibCopy cc = { g_ptr_array_new_with_free_func (g_free), g_array_new (FALSE, FALSE, sizeof (double)) };
  g_autoptr (GError) error = NULL;
  lp_threads_set (threads);
  g_assert_true (lp_calibration_run (cal, m, m, NULL, LP_CALIB_HESSIAN | LP_CALIB_CHANNEL_STATS, copy_block, &cc,
                                     &error));
  g_assert_no_error (error);
  lp_threads_set (0);
  return cc;
}

/* With OpenBLAS on one thread (main), samples run one per core in parts of
 * one Hessian batch, each part summed alone and added in part order: the
 * statistics are the same bits with 2 and 3 threads, and the one-thread
 * order's (a single sum) up to rounding. */
static void
test_calibration_per_core (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (11);
  g_autoptr (GArray) toks = calib_tokens (6000);
  LpCalibOptions o = { 11, 512, 3, LP_CALIB_SEQUENTIAL }; /* parts of 4, 4 and 3 samples */
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCalibration) cal = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &o, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_cpu_blas_threads (), ==, 1);
  CalibCopy one = calib_copy_run (cal, m, 1), two = calib_copy_run (cal, m, 2), three = calib_copy_run (cal, m, 3);
  g_assert_cmpuint (two.hessians->len, ==, 2 * LP_LINEAR_IN_COUNT);
  double worst = 0;
  const LpModelConfig *c = lp_model_config (m);
  int dims[LP_LINEAR_IN_COUNT] = { (int) c->dim, (int) (c->n_heads * c->head_dim), (int) c->dim, (int) c->ffn_dim };
  for (guint h = 0; h < two.hessians->len; h++)
    {
      gsize nn = (gsize) dims[h % LP_LINEAR_IN_COUNT] * dims[h % LP_LINEAR_IN_COUNT];
      const float *a = one.hessians->pdata[h], *b = two.hessians->pdata[h], *d = three.hessians->pdata[h];
      g_assert_cmpmem (b, nn * sizeof (float), d, nn * sizeof (float));
      double scale = 0;
      for (gsize i = 0; i < nn; i++)
        scale = MAX (scale, fabs (a[i]));
      for (gsize i = 0; i < nn; i++)
        worst = MAX (worst, fabs (a[i] - b[i]) / scale);
    }
  g_assert_cmpmem (two.sum_sq->data, two.sum_sq->len * sizeof (double), three.sum_sq->data,
                   three.sum_sq->len * sizeof (double));
  g_test_message ("per core vs one sum: worst Hessian difference %.3g of the largest entry", worst);
  g_assert_cmpfloat (worst, <, 1e-5);
  CalibCopy *all[] = { &one, &two, &three };
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    {
      g_ptr_array_unref (all[i]->hessians);
      g_array_unref (all[i]->sum_sq);
    }
}

/* The held-out windows are the slots of the cut that no sample took:
 * token i is its own position, so each window says where it came from.
 * Samples and held-out windows together tile the slots exactly once, in
 * stream order for the held-out ones, and none reads past the range. */
static void
test_calibration_heldout (void)
{
  enum { N = 1000, L = 33, SAMPLES = 5 };
  g_autoptr (GArray) toks = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (gint32 i = 0; i < N; i++)
    g_array_append_val (toks, i);
  for (gint32 bos = -1; bos <= 7; bos += 8)
    {
      LpCalibOptions o = { SAMPLES, L, 9, LP_CALIB_SEQUENTIAL };
      g_autoptr (GError) error = NULL;
      g_autoptr (LpCalibration) cal = lp_calibration_new ((gint32 *) toks->data, N, bos, &o, &error);
      g_assert_no_error (error);
      int lead = bos >= 0, stride = L - lead, slots = N / stride;
      g_assert_cmpint (lp_calibration_n_heldout (cal), ==, slots - SAMPLES);
      g_autofree int *seen = g_new0 (int, slots);
      for (int k = 0; k < SAMPLES + lp_calibration_n_heldout (cal); k++)
        {
          const gint32 *w = k < SAMPLES ? lp_calibration_sample (cal, k) : lp_calibration_heldout (cal, k - SAMPLES);
          if (lead)
            g_assert_cmpint (w[0], ==, bos);
          int first = w[lead];
          g_assert_cmpint (first % stride, ==, 0);
          for (int j = lead; j < L; j++)
            g_assert_cmpint (w[j], ==, first + j - lead);
          g_assert_cmpint (w[L - 1], <, N);
          seen[first / stride]++;
          if (k > SAMPLES)
            g_assert_cmpint (first, >, lp_calibration_heldout (cal, k - SAMPLES - 1)[lead]);
        }
      for (int s = 0; s < slots; s++)
        g_assert_cmpint (seen[s], ==, 1);
    }
}

static void
test_stats_roundtrip (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (12);
  g_autoptr (GArray) toks = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (int i = 0; i < 300; i++)
    {
      gint32 v = (i * 29 + 5) % 64;
      g_array_append_val (toks, v);
    }
  LpCalibOptions o = { 3, 17, 1, LP_CALIB_INDEPENDENT };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCalibration) cal = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &o, &error);
  g_autoptr (LpStats) st = lp_stats_collect (m, cal, NULL, TRUE, &error);
  g_assert_no_error (error);
  const LpActStats *q = lp_stats_lookup (st, "blk.1.attn_q.weight");
  const LpActStats *k = lp_stats_lookup (st, "blk.1.attn_k.weight");
  g_assert_nonnull (q);
  g_assert_true (q == k); /* q/k/v share one input */
  g_assert_cmpfloat (q->n_tokens, ==, 3 * 17);
  /* The Hessian's diagonal is the per-channel sum of squares. */
  for (int j = 0; j < q->n; j++)
    g_assert_cmpfloat_with_epsilon (q->hessian[j * q->n + j], q->sum_sq[j], 1e-4 * q->sum_sq[j]);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "stats.gguf", NULL);
  g_assert_true (lp_stats_save (st, path, &error));
  g_assert_no_error (error);
  g_autoptr (LpStats) back = lp_stats_load (path, &error);
  g_assert_no_error (error);
  g_autoptr (GPtrArray) a = lp_stats_names (st), b = lp_stats_names (back);
  g_assert_cmpuint (a->len, ==, b->len);
  g_assert_cmpuint (a->len, ==, 2 * 7);
  for (guint i = 0; i < a->len; i++)
    {
      const LpActStats *x = lp_stats_lookup (st, a->pdata[i]), *y = lp_stats_lookup (back, a->pdata[i]);
      g_assert_nonnull (y);
      g_assert_cmpint (x->n, ==, y->n);
      g_assert_cmpfloat (x->n_tokens, ==, y->n_tokens);
      g_assert_cmpmem (x->sum_sq, x->n * sizeof (double), y->sum_sq, y->n * sizeof (double));
      g_assert_nonnull (y->hessian);
      g_assert_cmpmem (x->hessian, x->n * x->n * 4, y->hessian, y->n * y->n * 4);
    }
  /* Our file is a llama.cpp imatrix too: in_sum2 and counts per weight. */
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) raw = lp_gguf_read_tensors (path, meta, &error);
  g_assert_cmpstr (lp_meta_get_string (meta, "general.type"), ==, "imatrix");
  gboolean have_v = FALSE;
  for (guint i = 0; i < raw->len; i++)
    have_v |= strcmp (((LpTensor *) raw->pdata[i])->name, "blk.0.attn_v.weight.in_sum2") == 0;
  g_assert_true (have_v);

  /* llama.cpp's legacy imatrix.dat: values are mean(x^2) * ncall. */
  GByteArray *dat = g_byte_array_new ();
  gint32 n_entries = 1, len = 19, ncall = 10, nval = 2;
  float vals[2] = { 20.0f, 5.0f };
  g_byte_array_append (dat, (guint8 *) &n_entries, 4);
  g_byte_array_append (dat, (guint8 *) &len, 4);
  g_byte_array_append (dat, (guint8 *) "blk.0.ffn_up.weight", 19);
  g_byte_array_append (dat, (guint8 *) &ncall, 4);
  g_byte_array_append (dat, (guint8 *) &nval, 4);
  g_byte_array_append (dat, (guint8 *) vals, 8);
  g_autofree char *dpath = lp_test_write_file ("legacy.dat", dat->data, dat->len);
  g_autoptr (LpStats) legacy = lp_stats_load (dpath, &error);
  g_assert_no_error (error);
  const LpActStats *u = lp_stats_lookup (legacy, "blk.0.ffn_up.weight");
  float mean[2];
  lp_stats_mean_sq (u, mean);
  g_assert_cmpfloat (mean[0], ==, 2.0f);
  g_assert_cmpfloat (mean[1], ==, 0.5f);
  /* Truncated: the last value missing. */
  g_autofree char *tpath = lp_test_write_file ("trunc.dat", dat->data, dat->len - 4);
  g_assert_null (lp_stats_load (tpath, &error));
  lp_test_assert_error_contains (error, "trunc.dat", "offset 31", "expected a value count that fits", NULL);
  g_byte_array_unref (dat);
}

/* The eval pass of a pipeline run measures what lp_eval_run measures. */
static void
test_pipeline_eval (void)
{
  g_autofree char *mp = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *dp = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (mp == NULL || dp == NULL)
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "default.ini", NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "pipe-eval", NULL);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "pipe-cache", NULL);
  g_autofree char *dm = g_strdup_printf ("model=%s", mp), *dd = g_strdup_printf ("data=%s", dp);
  g_autofree char *o = NULL, *e = NULL;
  /* (few calibration windows: the spec's GPTQ is not what this measures) */
  int st = lp_test_run_cli (&o, &e, "run", spec, "-D", dm, "-D", dd, "-D", "ctx=512", "-D", "windows=30", "-D",
                            "calib_samples=2", "-D", "calib_seq_len=64", "-o", out, "--cache-dir", cache, "-q", NULL);
  if (st != 0)
    g_test_message ("%s", e);
  g_assert_cmpint (st, ==, 0);
  g_autofree char *report = g_build_filename (out, "report.json", NULL);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_assert_true (json_parser_load_from_file (parser, report, NULL));
  JsonArray *nodes = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)), "nodes");
  double ppl = -1;
  for (guint i = 0; i < json_array_get_length (nodes); i++)
    {
      JsonObject *n = json_array_get_object_element (nodes, i);
      if (g_strcmp0 (json_object_get_string_member (n, "name"), "eval-original") == 0)
        ppl = json_object_get_double_member (json_object_get_object_member (n, "metrics"), "perplexity");
    }
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (mp, NULL, &error);
  g_autoptr (GArray) toks = lp_tokens_load (dp, m, &error);
  LpEvalOptions eo = { .ctx = 512, .max_windows = 30 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &eo, &r, &error));
  g_test_message ("pipeline eval: ppl %.6f, library: %.6f", ppl, r.ppl);
  g_assert_cmpfloat (fabs (ppl - r.ppl), <, 1e-9 * r.ppl);
}

/* calibrate -> save_stats in a pipeline with the [pipeline] calibration
 * settings, and the file reads back with every block's weights. */
static void
test_pipeline_calibrate (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *ini = g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=3\ncalibration_seq_len=40\n"
                                          "calibration_range=10:\ncalibration_mode=independent\n\n"
                                          "[load]\npath=%s\n\n[calibrate]\nhessians=true\n\n"
                                          "[save_stats]\npath=stats.gguf\n", text, model);
  g_autofree char *spec = lp_test_write_file ("calib.ini", ini, strlen (ini));
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "pipe-calib", NULL);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "pipe-cache", NULL);
  g_autofree char *o = NULL, *e = NULL;
  int st = lp_test_run_cli (&o, &e, "run", spec, "-o", out, "--cache-dir", cache, "-q", NULL);
  if (st != 0)
    g_test_message ("%s", e);
  g_assert_cmpint (st, ==, 0);
  g_autofree char *path = g_build_filename (out, "stats.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpStats) stats = lp_stats_load (path, &error);
  g_assert_no_error (error);
  const LpActStats *d = lp_stats_lookup (stats, "blk.1.ffn_down.weight");
  g_assert_nonnull (d);
  g_assert_cmpfloat (d->n_tokens, ==, 3 * 40);
  g_assert_nonnull (d->hessian);
  /* Without calibration data the pass says what to give. */
  g_autofree char *ini2 = g_strdup_printf ("[load]\npath=%s\n\n[calibrate]\n", model);
  g_autofree char *spec2 = lp_test_write_file ("nocalib.ini", ini2, strlen (ini2));
  g_autofree char *o2 = NULL, *e2 = NULL;
  g_assert_cmpint (lp_test_run_cli (&o2, &e2, "run", spec2, "-o", out, "--cache-dir", cache, "-q", NULL), ==, 1);
  g_assert_nonnull (strstr (e2, "calibration=FILE"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* Evaluations of small models, as llmpress eval runs them: BLAS on one
   * thread, one window per core (chosen once, before any work), here and in
   * the llmpress runs the tests start: OpenBLAS's results depend on its
   * thread count, and /pipeline/eval compares the two to 1e-9. */
  lp_cpu_blas_threads_init (1);
  g_setenv ("OPENBLAS_NUM_THREADS", "1", TRUE);
  g_test_add_func ("/backend/cpu-vs-reference", test_cpu_kernels);
  g_test_add_func ("/backend/rope-styles", test_rope_styles);
  g_test_add_func ("/backend/gemm-i8", test_cpu_gemm_i8);
  g_test_add_func ("/backend/quantize-groups", test_quantize_groups);
  g_test_add_func ("/backend/gemm-grid", test_cpu_gemm_grid);
  g_test_add_func ("/forward/incremental-matches-full", test_incremental_matches_full);
  g_test_add_func ("/forward/f16-weights", test_f16_weights_close);
  g_test_add_func ("/eval/kl-self-zero", test_kl_self_zero);
  g_test_add_func ("/calibration/hessian-modes", test_calibration_hessian);
  g_test_add_func ("/calibration/hessian-batches", test_calibration_hessian_batches);
  g_test_add_func ("/calibration/per-core", test_calibration_per_core);
  g_test_add_func ("/calibration/heldout", test_calibration_heldout);
  g_test_add_func ("/calibration/stats-gguf-imatrix", test_stats_roundtrip);
  g_test_add_func ("/pipeline/eval-pass", test_pipeline_eval);
  g_test_add_func ("/pipeline/calibrate-stats", test_pipeline_calibrate);
  g_test_add_func ("/eval/stories260K-bin", test_stories_ppl_bin);
  g_test_add_func ("/eval/stories260K-gguf", test_stories_ppl_gguf);
  g_test_add_func ("/eval/stories260K-safetensors-text", test_stories_ppl_safetensors_and_text);
  g_test_add_func ("/generate/stories260K-greedy", test_stories_greedy);
  return g_test_run ();
}
