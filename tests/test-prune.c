/* Pruning: masks and patterns (exact counts, N:M in every group), SparseGPT
 * against a dense OBS reference written here, the prune passes through the
 * CLI on stories260K (saved sparsity, metadata, perplexity ordering), and
 * bad input. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "testutil.h"

/* --- patterns and selection ------------------------------------------------ */

static void
test_pattern_parse (void)
{
  LpSparsityPattern p;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_sparsity_pattern_parse ("unstructured", &p, &error));
  g_assert_cmpint (p.m, ==, 0);
  g_assert_true (lp_sparsity_pattern_parse ("2:4", &p, &error));
  g_assert_cmpint (p.n, ==, 2);
  g_assert_cmpint (p.m, ==, 4);
  g_assert_cmpfloat (lp_sparsity_pattern_fraction (&p, 0.1), ==, 0.5);
  g_autofree char *name = lp_sparsity_pattern_name (&p);
  g_assert_cmpstr (name, ==, "2:4");
  const char *bad[] = { "4:4", "5:4", "0:4", "2:", ":4", "2:4:8", "x:y", "", "sparse" };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_clear_error (&error);
      g_assert_false (lp_sparsity_pattern_parse (bad[i], &p, &error));
      lp_test_assert_error_contains (error, "pattern", "0 < N < M", bad[i], NULL);
    }
  g_clear_error (&error);
  g_assert_true (lp_sparsity_pattern_parse ("3:8", &p, &error));
  g_assert_false (lp_sparsity_pattern_check (&p, "blk.0.ffn_down.weight", 172, &error));
  lp_test_assert_error_contains (error, "blk.0.ffn_down.weight", "divisible by 8", "172", NULL);
  g_clear_error (&error);
  g_assert_false (lp_sparsity_check (1.0, "sparsity", &error));
  lp_test_assert_error_contains (error, "sparsity", "[0, 1)", "found 1", NULL);
  g_clear_error (&error);
  g_assert_false (lp_sparsity_check (NAN, "sparsity", &error));
  g_assert_true (lp_sparsity_check (0.0, "sparsity", NULL));
}

/* Every pruned score is <= every kept score of the same set. */
static void
assert_lowest (const float *s, const guint8 *pruned, gint64 n, gint64 stride)
{
  float max_pruned = -INFINITY, min_kept = INFINITY;
  for (gint64 i = 0; i < n; i++)
    {
      float v = s[i * stride];
      if (pruned[i * stride])
        max_pruned = MAX (max_pruned, v);
      else
        min_kept = MIN (min_kept, v);
    }
  g_assert_cmpfloat (max_pruned, <=, min_kept);
}

static void
test_select_unstructured (void)
{
  const gint64 rows = 7, cols = 40;
  float s[7 * 40];
  guint8 pruned[7 * 40];
  lp_test_fill (s, rows * cols, 11, 1.0);
  for (int i = 0; i < 20; i++) /* ties */
    s[i * 3] = 0.25f;
  const double fractions[] = { 0.0, 0.3, 0.5, 0.77, 0.99 };
  for (guint f = 0; f < G_N_ELEMENTS (fractions); f++)
    {
      LpSparsityPattern u = { 0, 0 };
      lp_prune_select (s, rows, cols, fractions[f], LP_MASK_PER_ROW, &u, pruned);
      for (gint64 r = 0; r < rows; r++)
        {
          gint64 k = 0;
          for (gint64 j = 0; j < cols; j++)
            k += pruned[r * cols + j];
          g_assert_cmpint (k, ==, llround (fractions[f] * cols));
          assert_lowest (s + r * cols, pruned + r * cols, cols, 1);
        }
      lp_prune_select (s, rows, cols, fractions[f], LP_MASK_PER_TENSOR, &u, pruned);
      gint64 k = 0;
      for (gint64 i = 0; i < rows * cols; i++)
        k += pruned[i];
      g_assert_cmpint (k, ==, llround (fractions[f] * rows * cols));
      assert_lowest (s, pruned, rows * cols, 1);
    }
}

static void
test_select_nm (void)
{
  const gint64 rows = 5, cols = 48;
  float s[5 * 48];
  guint8 pruned[5 * 48];
  lp_test_fill (s, rows * cols, 12, 1.0);
  const int nm[][2] = { { 2, 4 }, { 4, 8 }, { 1, 3 }, { 5, 6 }, { 1, 16 } };
  for (guint t = 0; t < G_N_ELEMENTS (nm); t++)
    {
      LpSparsityPattern p = { nm[t][0], nm[t][1] };
      lp_prune_select (s, rows, cols, 0.0, LP_MASK_PER_ROW, &p, pruned);
      for (gint64 g = 0; g < rows * cols; g += p.m)
        {
          int k = 0;
          for (int j = 0; j < p.m; j++)
            k += pruned[g + j];
          g_assert_cmpint (k, ==, p.m - p.n);
          assert_lowest (s + g, pruned + g, p.m, 1);
        }
    }
}

static void
test_tensor_pruned (void)
{
  const gint64 shape[2] = { 3, 8 };
  float v[24];
  guint8 pruned[24];
  lp_test_fill (v, 24, 13, 1.0);
  v[1] = 0.0f; /* kept, yet zero: the mask, not the value, says what was pruned */
  for (int i = 0; i < 24; i++)
    pruned[i] = i % 3 == 0;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) src = lp_tensor_new (("w"), LP_DTYPE_F16, 2, shape, &error);
  g_autoptr (LpTensor) t = lp_tensor_new_pruned (src, v, pruned, &error);
  g_assert_no_error (error);
  g_assert_cmpint (t->dtype, ==, LP_DTYPE_F16);
  g_assert_nonnull (lp_tensor_mask (t));
  g_autofree float *back = lp_tensor_dup_f32 (t, &error);
  for (int i = 0; i < 24; i++)
    {
      g_assert_cmpint (lp_tensor_mask_keeps (t, i), ==, !pruned[i]);
      if (pruned[i])
        g_assert_cmpfloat (back[i], ==, 0.0f);
      else
        g_assert_cmpfloat (fabsf (back[i] - v[i]), <=, 1e-3f);
    }
  g_assert_cmpfloat (fabs (lp_tensor_sparsity (t) - 8.0 / 24.0), <, 1e-12);
  v[5] = NAN;
  g_assert_false (lp_values_check_finite ("blk.0.attn_q.weight", v, 24, &error));
  lp_test_assert_error_contains (error, "blk.0.attn_q.weight", "element 5", "finite", NULL);
}

static void
test_owl (void)
{
  const double ratio[4] = { 0.01, 0.04, 0.02, 0.01 };
  double s[4];
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_sparsity_owl (ratio, 4, 0.6, 0.08, s, &error));
  double mean = (s[0] + s[1] + s[2] + s[3]) / 4;
  g_assert_cmpfloat (fabs (mean - 0.6), <, 1e-12);
  /* More outliers, fewer pruned; the spread is 2 lambda. */
  g_assert_cmpfloat (s[1], <, s[2]);
  g_assert_cmpfloat (s[2], <, s[0]);
  g_assert_cmpfloat (fabs ((s[0] - s[1]) - 0.16), <, 1e-12);
  g_assert_cmpfloat (s[0], ==, s[3]);
  const double same[3] = { 0.02, 0.02, 0.02 };
  g_assert_true (lp_sparsity_owl (same, 3, 0.5, 0.08, s, &error));
  g_assert_cmpfloat (s[0], ==, 0.5);
  g_assert_false (lp_sparsity_owl (ratio, 4, 0.95, 0.08, s, &error));
  lp_test_assert_error_contains (error, "owl", "layer 0", "[0, 1)", NULL);
  const float scores[8] = { 1, 1, 1, 1, 1, 1, 1, 30 };
  g_assert_cmpfloat (lp_sparsity_outlier_ratio (scores, 8, 5.0), ==, 1.0 / 8.0);
}

/* --- SparseGPT against a dense OBS reference ------------------------------- */

/* A test layer: W[rows, n] and inputs X[T, n] with correlated channels of
 * unequal scale, as real activations have. */
static void
make_layer (int rows, int n, int T, float *W, float *X)
{
  lp_test_fill (W, (gsize) rows * n, 21, 1.0);
  g_autofree float *Z = g_new (float, (gsize) T * n);
  g_autofree float *A = g_new (float, (gsize) n * n);
  lp_test_fill (Z, (gsize) T * n, 22, 1.0);
  lp_test_fill (A, (gsize) n * n, 23, 0.3);
  for (int j = 0; j < n; j++)
    A[(gsize) j * n + j] += 1.0f + (j % 7 == 0 ? 4.0f : 0.0f);
  lp_ref_gemm (FALSE, T, n, n, 1.0f, Z, n, A, n, 0.0f, X, n);
}

static int
compare_ranked_d (const void *a, const void *b)
{
  const double *x = a, *y = b;
  if (x[0] != y[0])
    return x[0] < y[0] ? -1 : 1;
  return (x[1] > y[1]) - (x[1] < y[1]);
}

/* Mark the k lowest of s[n] (ties to the lower index). */
static void
ref_lowest (const double *s, int n, int k, guint8 *pruned)
{
  double *r = g_new (double, 2 * (gsize) n);
  for (int i = 0; i < n; i++)
    r[2 * i] = s[i], r[2 * i + 1] = i;
  qsort (r, n, 2 * sizeof (double), compare_ranked_d);
  memset (pruned, 0, n);
  for (int i = 0; i < k; i++)
    pruned[(int) r[2 * i + 1]] = 1;
  g_free (r);
}

/* SparseGPT written the plain way, in double: H^-1 explicitly (Gauss-Jordan),
 * each column pruned with the OBS update
 *   w[c+1:] -= (w_c - q_c) / Hinv[c,c] * Hinv[c, c+1:]
 * applied at once, then column c eliminated from Hinv (so Hinv is always the
 * inverse of the Hessian of the columns not yet visited).  The mask is chosen
 * as in the paper: per block of `bs` columns from w^2 / d, d[c] the
 * Hinv[c,c] each column will see (= U[c,c]^2, so this is the reference
 * code's W^2 / diag(U)^2), or per N:M group as the sweep reaches it. */
static void
ref_sparsegpt (int rows, int n, const float *W, const float *X, int T, double sparsity, int nm_n, int nm_m, int bs,
               double damp, float *out, guint8 *pruned)
{
  g_autofree double *Hi = g_new0 (double, (gsize) n * 2 * n);
  double mean = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        double h = 0;
        for (int t = 0; t < T; t++)
          h += (double) X[(gsize) t * n + i] * X[(gsize) t * n + j];
        Hi[(gsize) i * 2 * n + j] = h;
        mean += i == j ? h / n : 0;
      }
  for (int i = 0; i < n; i++)
    {
      Hi[(gsize) i * 2 * n + i] += damp * mean;
      Hi[(gsize) i * 2 * n + n + i] = 1.0;
    }
  for (int c = 0; c < n; c++) /* Gauss-Jordan: [H | I] -> [I | H^-1] (SPD: no pivoting) */
    {
      double p = Hi[(gsize) c * 2 * n + c];
      for (int j = 0; j < 2 * n; j++)
        Hi[(gsize) c * 2 * n + j] /= p;
      for (int i = 0; i < n; i++)
        if (i != c)
          {
            double f = Hi[(gsize) i * 2 * n + c];
            for (int j = 0; j < 2 * n; j++)
              Hi[(gsize) i * 2 * n + j] -= f * Hi[(gsize) c * 2 * n + j];
          }
    }
  g_autofree double *inv = g_new (double, (gsize) n * n), *d = g_new (double, n);
  for (int i = 0; i < n; i++)
    memcpy (inv + (gsize) i * n, Hi + (gsize) i * 2 * n + n, n * sizeof (double));
  g_autofree double *tmp = g_memdup2 (inv, (gsize) n * n * sizeof (double));
  for (int c = 0; c < n; c++) /* d[c]: Hinv[c,c] once columns < c are eliminated */
    {
      d[c] = tmp[(gsize) c * n + c];
      for (int i = c + 1; i < n; i++)
        for (int j = c + 1; j < n; j++)
          tmp[(gsize) i * n + j] -= tmp[(gsize) i * n + c] * tmp[(gsize) c * n + j] / d[c];
    }
  g_autofree double *w = g_new (double, (gsize) rows * n);
  for (gsize i = 0; i < (gsize) rows * n; i++)
    w[i] = W[i];
  g_autofree double *sc = g_new (double, (gsize) rows * bs);
  g_autofree guint8 *sel = g_new (guint8, (gsize) rows * bs);
  for (int c0 = 0; c0 < n; c0 += bs)
    {
      int c1 = MIN (c0 + bs, n), wdt = c1 - c0;
      if (nm_m == 0)
        {
          for (int r = 0; r < rows; r++)
            for (int j = 0; j < wdt; j++)
              sc[r * wdt + j] = w[(gsize) r * n + c0 + j] * w[(gsize) r * n + c0 + j] / d[c0 + j];
          int k = (int) (llround (sparsity * rows * c1) - llround (sparsity * rows * c0));
          ref_lowest (sc, rows * wdt, k, sel);
          for (int r = 0; r < rows; r++)
            memcpy (pruned + (gsize) r * n + c0, sel + r * wdt, wdt);
        }
      for (int c = c0; c < c1; c++)
        {
          if (nm_m > 0 && c % nm_m == 0)
            for (int r = 0; r < rows; r++)
              {
                for (int j = 0; j < nm_m; j++)
                  sc[j] = w[(gsize) r * n + c + j] * w[(gsize) r * n + c + j] / d[c + j];
                ref_lowest (sc, nm_m, nm_m - nm_n, pruned + (gsize) r * n + c);
              }
          double hcc = inv[(gsize) c * n + c];
          for (int r = 0; r < rows; r++)
            {
              double wc = w[(gsize) r * n + c], q = pruned[(gsize) r * n + c] ? 0.0 : wc;
              double err = (wc - q) / hcc;
              for (int j = c + 1; j < n; j++)
                w[(gsize) r * n + j] -= err * inv[(gsize) c * n + j];
              w[(gsize) r * n + c] = q;
            }
          for (int i = c + 1; i < n; i++)
            for (int j = c + 1; j < n; j++)
              inv[(gsize) i * n + j] -= inv[(gsize) i * n + c] * inv[(gsize) c * n + j] / hcc;
        }
    }
  for (gsize i = 0; i < (gsize) rows * n; i++)
    out[i] = (float) w[i];
}

/* ||W X^T - W' X^T||^2 over the calibration inputs. */
static double
output_error (int rows, int n, const float *W, const float *Wp, const float *X, int T)
{
  double e = 0;
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < T; t++)
      {
        double a = 0;
        for (int j = 0; j < n; j++)
          a += ((double) W[(gsize) r * n + j] - Wp[(gsize) r * n + j]) * X[(gsize) t * n + j];
        e += a * a;
      }
  return e;
}

static void
check_sparsegpt_against_reference (int nm_n, int nm_m)
{
  const int rows = 48, n = 256, T = 768, bs = 128;
  const double sparsity = 0.5, damp = 0.01;
  g_autofree float *W = g_new (float, rows * n), *X = g_new (float, (gsize) T * n);
  make_layer (rows, n, T, W, X);
  g_autofree float *H = g_new0 (float, n * n);
  lp_ref_syrk (T, n, X, n, H);
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autofree float *Wp = g_memdup2 (W, rows * n * sizeof (float));
  g_autofree guint8 *pruned = g_new (guint8, rows * n);
  LpSparseGPTOptions o = { sparsity, { nm_n, nm_m }, bs, damp };
  g_autoptr (GError) error = NULL;
  double loss = 0;
  g_assert_true (lp_sparsegpt_prune (be, rows, n, Wp, H, &o, pruned, &loss, &error));
  g_assert_no_error (error);
  g_autofree float *Wr = g_new (float, rows * n);
  g_autofree guint8 *pr = g_new (guint8, rows * n);
  ref_sparsegpt (rows, n, W, X, T, sparsity, nm_n, nm_m, bs, damp, Wr, pr);
  /* Magnitude pruning on the same mask budget, for scale. */
  g_autofree float *Wm = g_memdup2 (W, rows * n * sizeof (float)), *mag = g_new (float, rows * n);
  g_autofree guint8 *pm = g_new (guint8, rows * n);
  for (int i = 0; i < rows * n; i++)
    mag[i] = fabsf (W[i]);
  LpSparsityPattern p = { nm_n, nm_m };
  lp_prune_select (mag, rows, n, sparsity, LP_MASK_PER_TENSOR, &p, pm);
  gint64 k = 0, differ = 0;
  for (int i = 0; i < rows * n; i++)
    {
      Wm[i] = pm[i] ? 0.0f : Wm[i];
      k += pruned[i];
      differ += pruned[i] != pr[i];
      if (pruned[i])
        g_assert_cmpfloat (Wp[i], ==, 0.0f);
    }
  g_assert_cmpint (k, ==, rows * n / 2);
  double e = output_error (rows, n, W, Wp, X, T), er = output_error (rows, n, W, Wr, X, T);
  double em = output_error (rows, n, W, Wm, X, T);
  g_test_message ("%d:%d: ||WX - W'X||^2 sparsegpt %.6g, dense OBS reference %.6g (%+.4f%%), magnitude %.6g; "
                  "OBS loss estimate %.6g; mask entries differing %" G_GINT64_FORMAT,
                  nm_n, nm_m, e, er, 100 * (e - er) / er, em, loss, differ);
  g_assert_cmpfloat (fabs (e - er), <=, 0.01 * er);
  g_assert_cmpfloat (e, <, 0.5 * em);
  if (nm_m > 0)
    for (int g = 0; g < rows * n; g += nm_m)
      {
        int z = 0;
        for (int j = 0; j < nm_m; j++)
          z += pruned[g + j];
        g_assert_cmpint (z, ==, nm_m - nm_n);
      }
}

static void
test_sparsegpt_reference (void)
{
  check_sparsegpt_against_reference (0, 0);
}

static void
test_sparsegpt_reference_nm (void)
{
  check_sparsegpt_against_reference (2, 4);
}

/* A dead input channel (never fires: zero Hessian row) and a NaN Hessian. */
static void
test_sparsegpt_dead_and_nan (void)
{
  const int rows = 8, n = 32, T = 64;
  g_autofree float *W = g_new (float, rows * n), *X = g_new (float, T * n), *H = g_new0 (float, n * n);
  make_layer (rows, n, T, W, X);
  for (int t = 0; t < T; t++)
    X[t * n + 5] = 0.0f;
  lp_ref_syrk (T, n, X, n, H);
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autofree guint8 *pruned = g_new (guint8, rows * n);
  LpSparseGPTOptions o = LP_SPARSEGPT_OPTIONS_INIT;
  o.sparsity = 0.25;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_sparsegpt_prune (be, rows, n, W, H, &o, pruned, NULL, &error));
  gint64 k = 0;
  for (int i = 0; i < rows * n; i++)
    {
      g_assert_true (isfinite (W[i]));
      k += pruned[i];
    }
  g_assert_cmpint (k, ==, rows * n / 4);
  for (int r = 0; r < rows; r++)
    g_assert_cmpfloat (W[r * n + 5], ==, 0.0f);
  memset (H, 0, n * n * sizeof (float));
  lp_ref_syrk (T, n, X, n, H);
  H[3 * n + 7] = NAN;
  g_assert_false (lp_sparsegpt_prune (be, rows, n, W, H, &o, pruned, NULL, &error));
  g_assert_nonnull (error);
  g_test_message ("NaN Hessian: %s", error->message);
}

/* The weights of one input share its factorization (the pass factors each
 * input's Hessian once): W1 and W2 pruned with one U and dead[] from
 * lp_obs_prepare come out exactly as from lp_sparsegpt_prune on fresh copies
 * of H, dead channel included. */
static void
test_sparsegpt_shared_factor (void)
{
  const int rows = 12, n = 32, T = 64;
  g_autofree float *W1 = g_new (float, rows * n), *W2 = g_new (float, rows * n), *X = g_new (float, T * n);
  g_autofree float *H = g_new0 (float, n * n), *U = g_new (float, n * n), *Hc = g_new (float, n * n);
  make_layer (rows, n, T, W1, X);
  for (int i = 0; i < rows * n; i++)
    W2[i] = -0.5f * W1[(i * 7) % (rows * n)];
  for (int t = 0; t < T; t++)
    X[t * n + 9] = 0.0f;
  lp_ref_syrk (T, n, X, n, H);
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  LpSparseGPTOptions o = LP_SPARSEGPT_OPTIONS_INIT;
  g_autofree gboolean *dead = g_new0 (gboolean, n);
  memcpy (U, H, n * n * sizeof (float));
  g_assert_true (lp_obs_prepare (be, n, U, o.damp, dead, NULL, &error));
  g_assert_true (dead[9]);
  float *W[2] = { W1, W2 };
  for (int w = 0; w < 2; w++)
    {
      g_autofree float *fresh = g_memdup2 (W[w], rows * n * sizeof (float));
      g_autofree guint8 *p_shared = g_new (guint8, rows * n), *p_fresh = g_new (guint8, rows * n);
      double loss_shared = 0, loss_fresh = 0;
      memcpy (Hc, H, n * n * sizeof (float));
      g_assert_true (lp_sparsegpt_prune (be, rows, n, fresh, Hc, &o, p_fresh, &loss_fresh, &error));
      g_assert_true (lp_sparsegpt_prune_factored (be, rows, n, W[w], U, dead, &o, p_shared, &loss_shared, &error));
      g_assert_no_error (error);
      g_assert_cmpmem (W[w], rows * n * sizeof (float), fresh, rows * n * sizeof (float));
      g_assert_cmpmem (p_shared, rows * n, p_fresh, rows * n);
      g_assert_cmpfloat (loss_shared, ==, loss_fresh);
    }
}

/* --- the passes on stories260K, through the CLI ---------------------------- */

/* The calibration split documented in specs/README.md: calibration from
 * tokens 300000: of the TinyStories token file, evaluation on :300000. */
#define CALIB_SETTINGS "calibration_samples=16\ncalibration_seq_len=256\ncalibration_range=300000:\n"

typedef LpTestStories Shared;
#define shared_get lp_test_stories_get
#define shared_clear lp_test_stories_clear

/* Run `nodes` after the calibration data and `settings` and a [load] of stories260K (lp_test_run_nodes). */
static char *
run_nodes (const Shared *sh, const char *name, const char *settings, const char *nodes, int *status, char **err)
{
  return lp_test_run_nodes (sh->data, settings, sh->model, name, nodes, status, err);
}

static LpModel *
run_and_load (const Shared *sh, const char *name, const char *nodes, const char *file)
{
  int st;
  g_autofree char *err = NULL;
  g_autofree char *out = run_nodes (sh, name, CALIB_SETTINGS, nodes, &st, &err);
  if (st != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (st, ==, 0);
  g_autofree char *path = g_build_filename (out, file, NULL);
  g_autoptr (GError) error = NULL;
  LpModel *m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  return m;
}

static gboolean
is_linear_weight (const char *name)
{
  static const char *const suffixes[] = { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                                          "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", NULL };
  for (const char *const *x = suffixes; *x; x++)
    if (g_str_has_prefix (name, "blk.") && g_str_has_suffix (name, *x))
      return TRUE;
  return FALSE;
}

/* Zeros of each row of a saved tensor (pruned weights are stored as 0;
 * trained weights are never exactly 0 otherwise). */
static gint64 *
row_zeros (const LpTensor *t)
{
  g_autofree float *v = lp_tensor_dup_f32 (t, NULL);
  gint64 rows = lp_tensor_n_rows (t), cols = lp_tensor_row_length (t);
  gint64 *z = g_new0 (gint64, rows);
  for (gint64 r = 0; r < rows; r++)
    for (gint64 j = 0; j < cols; j++)
      z[r] += v[r * cols + j] == 0.0f;
  return z;
}

static double
meta_f (LpModel *m, const char *key)
{
  double v = -1;
  g_assert_true (lp_meta_get_float (lp_model_meta (m), key, &v, NULL));
  return v;
}

/* Saved sparsity: exact per row (Wanda, magnitude scope=row) or per tensor
 * (magnitude, SparseGPT), the N:M pattern in every group, and metadata. */
static void
test_saved_sparsity (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autoptr (LpModel) w = run_and_load (&sh, "sparsity",
                                        "[wanda]\npass=prune.wanda\nsparsity=0.37\n[w-save]\npass=save\npath=wanda.gguf\n"
                                        "[nm]\npass=prune.sparsegpt\ninput=load\npattern=1:4\n[nm-save]\npass=save\npath=nm.gguf\n"
                                        "[mag]\npass=prune.magnitude\ninput=load\nsparsity=0.6\nignore=blk.1.*\n"
                                        "[mag-save]\npass=save\npath=mag.gguf\n"
                                        "[sg]\npass=prune.sparsegpt\ninput=load\nsparsity=0.45\n[sg-save]\npass=save\npath=sg.safetensors\n",
                                        "wanda.gguf");
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "sparsity", NULL);
  g_autofree char *nm_path = g_build_filename (dir, "nm.gguf", NULL), *mag_path = g_build_filename (dir, "mag.gguf", NULL);
  g_autofree char *sg_path = g_build_filename (dir, "sg.safetensors", NULL);
  g_autoptr (LpModel) nm = lp_model_load (nm_path, NULL, NULL);
  g_autoptr (LpModel) mag = lp_model_load (mag_path, NULL, NULL);
  g_autoptr (LpModel) sg = lp_model_load (sg_path, NULL, NULL);
  g_assert_nonnull (nm);
  g_assert_nonnull (mag);
  g_assert_nonnull (sg);
  guint checked = 0;
  for (guint i = 0; i < lp_model_n_tensors (w); i++)
    {
      LpTensor *t = lp_model_tensor_at (w, i);
      gint64 rows = lp_tensor_n_rows (t), cols = lp_tensor_row_length (t);
      g_autofree gint64 *wz = row_zeros (t);
      g_autofree gint64 *mz = row_zeros (lp_model_tensor (mag, t->name));
      g_autofree gint64 *sz = row_zeros (lp_model_tensor (sg, t->name));
      g_autofree float *nv = lp_tensor_dup_f32 (lp_model_tensor (nm, t->name), NULL);
      gint64 mag_total = 0, sg_total = 0;
      for (gint64 r = 0; r < rows; r++)
        mag_total += mz[r], sg_total += sz[r];
      if (!is_linear_weight (t->name))
        {
          for (gint64 r = 0; r < rows; r++)
            g_assert_cmpint (wz[r] + mz[r], ==, 0);
          continue;
        }
      for (gint64 r = 0; r < rows; r++)
        g_assert_cmpint (wz[r], ==, llround (0.37 * cols));
      g_assert_cmpint (mag_total, ==, g_str_has_prefix (t->name, "blk.1.") ? 0 : llround (0.6 * rows * cols));
      g_assert_cmpint (sg_total, ==, llround (0.45 * rows * cols));
      for (gint64 g = 0; g < rows * cols; g += 4)
        {
          int kept = 0;
          for (int j = 0; j < 4; j++)
            kept += nv[g + j] != 0.0f;
          g_assert_cmpint (kept, ==, 1);
        }
      g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
      g_assert_cmpfloat (fabs (meta_f (w, key) - (double) llround (0.37 * cols) / cols), <, 1e-6);
      checked++;
    }
  g_assert_cmpuint (checked, ==, 35);
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (w), "llmpress.sparsity.method"), ==, "wanda");
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (w), "llmpress.sparsity.pattern"), ==, "unstructured");
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (nm), "llmpress.sparsity.pattern"), ==, "1:4");
  g_assert_cmpfloat (fabs (meta_f (nm, "llmpress.sparsity.fraction") - 0.75), <, 1e-6);
  /* Reading gives the masks back (files hold dense zeros). */
  LpTensor *wq = lp_model_tensor (w, "blk.2.attn_q.weight");
  g_assert_nonnull (lp_tensor_mask (wq));
  g_assert_cmpfloat (fabs (lp_tensor_sparsity (wq) - (double) llround (0.37 * 64) / 64), <, 1e-12);
  g_assert_nonnull (lp_tensor_mask (lp_model_tensor (sg, "blk.0.ffn_down.weight")));
  g_assert_null (lp_tensor_mask (lp_model_tensor (w, "token_embd.weight")));
  /* safetensors keeps the record in __metadata__. */
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (sg), "llmpress.sparsity.method"), ==, "sparsegpt");
  g_assert_cmpfloat (fabs (meta_f (sg, "llmpress.sparsity.fraction") - 0.45), <, 1e-4);
  g_assert_cmpfloat (fabs (meta_f (sg, "llmpress.sparsity.tensor.blk.3.ffn_up.weight") - 0.45), <, 1e-4);
  shared_clear (&sh);
}

/* specs/prune-compare.ini on stories260K: at 50% unstructured,
 * perplexity(sparsegpt) < perplexity(wanda) < perplexity(magnitude); at 2:4,
 * sparsegpt < magnitude. */
static void
test_compare_spec (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "prune-compare.ini", NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "compare", NULL);
  g_autofree char *dm = g_strdup_printf ("model=%s", sh.model), *dd = g_strdup_printf ("data=%s", sh.data);
  g_autofree char *dc = g_strdup_printf ("calib=%s", sh.data);
  g_autofree char *o = NULL, *e = NULL;
  int st = lp_test_run_cli (&o, &e, "run", spec, "-D", dm, "-D", dd, "-D", dc, "-D", "calib_range=300000:", "-D",
                            "data_range=:300000", "-D", "samples=64", "-D", "seq_len=512", "-D", "ctx=512", "-D",
                            "windows=64", "-o", out, "--no-cache", "-q", NULL);
  if (st != 0)
    g_test_message ("%s", e);
  g_assert_cmpint (st, ==, 0);
  double dense = lp_test_report_metric (out, "dense", "perplexity");
  double mag = lp_test_report_metric (out, "magnitude-eval", "perplexity");
  double wanda = lp_test_report_metric (out, "wanda-eval", "perplexity");
  double sgpt = lp_test_report_metric (out, "sparsegpt-eval", "perplexity");
  double mag24 = lp_test_report_metric (out, "magnitude-2-4-eval", "perplexity");
  double sgpt24 = lp_test_report_metric (out, "sparsegpt-2-4-eval", "perplexity");
  g_test_message ("stories260K perplexity (64 windows of 512 tokens from :300000; calibration 64 x 512 from 300000:): "
                  "dense %.4f; 50%% unstructured: magnitude %.4f, wanda %.4f, sparsegpt %.4f; 2:4: magnitude %.4f, "
                  "sparsegpt %.4f", dense, mag, wanda, sgpt, mag24, sgpt24);
  g_assert_cmpfloat (dense, <, sgpt);
  g_assert_cmpfloat (sgpt, <, wanda);
  g_assert_cmpfloat (wanda, <, mag);
  g_assert_cmpfloat (sgpt24, <, mag24);
  /* The report gives per-tensor sparsity. */
  g_assert_cmpfloat (lp_test_report_metric (out, "sparsegpt-eval", "sparsity.blk.3.ffn_down.weight"), ==, 0.5);
  g_assert_cmpfloat (lp_test_report_metric (out, "magnitude-2-4-eval", "sparsity.blk.0.attn_q.weight"), ==, 0.5);
  shared_clear (&sh);
}

/* Perplexity of a model on the first windows of the evaluation range. */
static double
quick_ppl (const Shared *sh, LpModel *m)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) toks = lp_tokens_load (sh->data, m, &error);
  g_assert_no_error (error);
  LpEvalOptions eo = { .ctx = 512, .max_windows = 16 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, MIN (toks->len, 300000), &eo, &r, &error));
  g_assert_no_error (error);
  return r.ppl;
}

/* prune.layers n=1: a 4-block model that saves (GGUF, safetensors), reloads
 * and evaluates; the kept blocks are the input's, renumbered. */
static void
test_layers (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autoptr (LpModel) m = run_and_load (&sh, "layers",
                                        "[prune.layers]\nn=1\n[save]\npath=l.gguf\n[hf]\npass=save\npath=l-hf\n", "l.gguf");
  g_autofree char *hf_path = g_build_filename (lp_test_tmpdir (), "layers", "l-hf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) hf = lp_model_load (hf_path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) orig = lp_model_load (sh.model, NULL, &error);
  g_assert_cmpint (lp_model_config (m)->n_layers, ==, 4);
  g_assert_cmpint (lp_model_config (hf)->n_layers, ==, 4);
  const LpValue *removed = lp_meta_get_array (lp_model_meta (m), "llmpress.prune.removed_layers", LP_VALUE_I32, &error);
  g_assert_nonnull (removed);
  g_assert_cmpuint (removed->n_elems, ==, 1);
  int gone = ((const gint32 *) removed->array)[0];
  g_assert_cmpint (gone, >=, 0);
  g_assert_cmpint (gone, <, 5);
  for (int l = 0; l < 4; l++)
    {
      g_autofree char *a = g_strdup_printf ("blk.%d.ffn_down.weight", l);
      g_autofree char *b = g_strdup_printf ("blk.%d.ffn_down.weight", l < gone ? l : l + 1);
      g_autofree float *va = lp_tensor_dup_f32 (lp_model_tensor (m, a), NULL);
      g_autofree float *vb = lp_tensor_dup_f32 (lp_model_tensor (orig, b), NULL);
      g_assert_cmpmem (va, 64 * 172 * sizeof (float), vb, 64 * 172 * sizeof (float));
    }
  g_assert_null (lp_model_tensor (m, "blk.4.attn_q.weight"));
  double p0 = quick_ppl (&sh, orig), p1 = quick_ppl (&sh, m), p2 = quick_ppl (&sh, hf);
  g_test_message ("prune.layers n=1 removed block %d: perplexity %.4f -> %.4f (GGUF), %.4f (safetensors)", gone, p0, p1,
                  p2);
  g_assert_true (isfinite (p1) && p1 > p0);
  g_assert_cmpfloat (fabs (p1 - p2), <, 1e-6 * p1);
  shared_clear (&sh);
}

/* prune.channels ffn_ratio=0.25 kv_ratio=0.25: ffn 172 -> 129, heads 8/4 ->
 * 6/3, the tensors and config agree, it saves, reloads and evaluates. */
static void
test_channels (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autoptr (LpModel) m = run_and_load (&sh, "channels",
                                        "[prune.channels]\nffn_ratio=0.25\nkv_ratio=0.25\n[save]\npath=c.gguf\n"
                                        "[hf]\npass=save\npath=c-hf\n[ffn]\npass=prune.channels\ninput=load\n"
                                        "[ffn-save]\npass=save\npath=ffn.gguf\n", "c.gguf");
  g_autofree char *hf_path = g_build_filename (lp_test_tmpdir (), "channels", "c-hf", NULL);
  g_autofree char *ffn_path = g_build_filename (lp_test_tmpdir (), "channels", "ffn.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) hf = lp_model_load (hf_path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) ffn = lp_model_load (ffn_path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) orig = lp_model_load (sh.model, NULL, &error);
  const LpModelConfig *c = lp_model_config (m);
  g_assert_cmpint (c->ffn_dim, ==, 129);
  g_assert_cmpint (c->n_heads, ==, 6);
  g_assert_cmpint (c->n_kv_heads, ==, 3);
  g_assert_cmpint (c->head_dim, ==, 8);
  g_assert_cmpint (c->dim, ==, 64);
  lp_test_assert_same_config (c, lp_model_config (hf));
  g_assert_cmpint (lp_model_config (ffn)->ffn_dim, ==, 129);
  g_assert_cmpint (lp_model_config (ffn)->n_heads, ==, 8);
  const LpTensor *q = lp_model_tensor (m, "blk.2.attn_q.weight"), *k = lp_model_tensor (m, "blk.2.attn_k.weight");
  const LpTensor *o = lp_model_tensor (m, "blk.2.attn_output.weight"), *d = lp_model_tensor (m, "blk.2.ffn_down.weight");
  const LpTensor *g = lp_model_tensor (m, "blk.2.ffn_gate.weight");
  g_assert_cmpint (q->shape[0], ==, 48);
  g_assert_cmpint (k->shape[0], ==, 24);
  g_assert_cmpint (o->shape[1], ==, 48);
  g_assert_cmpint (d->shape[1], ==, 129);
  g_assert_cmpint (g->shape[0], ==, 129);
  g_assert_true (lp_model_validate (m, &error));
  g_assert_cmpint (lp_model_n_params (m), <, lp_model_n_params (orig));
  /* Every kept gate row is a row of the original, in order. */
  g_autofree float *gv = lp_tensor_dup_f32 (g, NULL);
  g_autofree float *ov = lp_tensor_dup_f32 (lp_model_tensor (orig, "blk.2.ffn_gate.weight"), NULL);
  int at = 0;
  for (int r = 0; r < 129; r++)
    {
      while (at < 172 && memcmp (gv + r * 64, ov + at * 64, 64 * sizeof (float)) != 0)
        at++;
      g_assert_cmpint (at, <, 172);
      at++;
    }
  double p0 = quick_ppl (&sh, orig), p1 = quick_ppl (&sh, m), p2 = quick_ppl (&sh, hf), p3 = quick_ppl (&sh, ffn);
  g_test_message ("prune.channels: %" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT " parameters; perplexity %.4f -> %.4f "
                  "(ffn+kv, GGUF), %.4f (safetensors); ffn only %.4f", lp_model_n_params (orig), lp_model_n_params (m),
                  p0, p1, p2, p3);
  g_assert_true (isfinite (p1) && p1 > p0);
  g_assert_cmpfloat (fabs (p1 - p2), <, 1e-4 * p1);
  g_assert_true (p3 > p0 && p3 < p1);
  shared_clear (&sh);
}

/* stories260K with one NaN weight, written once. */
static char *
nan_model (const Shared *sh)
{
  char *path = g_build_filename (lp_test_tmpdir (), "nan.gguf", NULL);
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    return path;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (sh->model, NULL, &error);
  g_autoptr (LpModel) d = lp_model_derive (m);
  LpTensor *t = lp_model_tensor (m, "blk.1.attn_k.weight");
  g_autofree float *v = lp_tensor_dup_f32 (t, &error);
  v[70] = NAN;
  g_autoptr (LpTensor) bad = lp_tensor_new_f32 (t->name, t->n_dims, t->shape, v, &error);
  lp_model_set_tensor (d, bad);
  g_assert_true (lp_model_save (d, path, NULL, &error));
  return path;
}

/* Bad parameters and impossible requests: a non-zero exit and one line
 * naming the problem, never a model. */
static void
test_bad_input (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autofree char *nan = nan_model (&sh);
  struct {
    const char *nodes;
    const char *fragments[4];
  } cases[] = {
    { "[prune.magnitude]\nsparsity=1\n", { "sparsity", "[0, 1)", "found 1" } },
    { "[prune.sparsegpt]\nsparsity=1.5\n", { "sparsity", "found 1.5" } },
    { "[prune.wanda]\npattern=4:4\n", { "pattern", "0 < N < M", "4:4" } },
    { "[prune.magnitude]\npattern=2:0\n", { "pattern", "0 < N < M", "2:0" } },
    { "[prune.magnitude]\npattern=3:8\n", { "blk.0.ffn_down.weight", "divisible by 8", "172", "ignore=" } },
    { "[prune.sparsegpt]\npattern=3:8\n", { "blk.0.ffn_down.weight", "divisible by 8", "172" } },
    { "[prune.magnitude]\npattern=2:4\nsparsity=0.3\n", { "sparsity=0.3", "2:4", "0.5" } },
    { "[prune.magnitude]\npattern=2:4\nprofile=owl\n", { "profile=owl", "2:4", "uniform" } },
    { "[prune.magnitude]\ntargets=nothing.*\n", { "targets=nothing.*", "at least one tensor" } },
    { "[prune.wanda]\ntargets=output.weight\n", { "targets", "at least one linear weight" } },
    { "[prune.layers]\nn=5\n", { "prune.layers", "5 of 5", "at most 4" } },
    { "[prune.layers]\nratio=0.9\n", { "ratio", "5 of 5" } },
    { "[prune.layers]\nn=1\nratio=0.2\n", { "n= or ratio=", "both" } },
    { "[prune.channels]\nffn_ratio=0.999\n", { "ffn_ratio=0.999", "all 172", "at least one kept" } },
    { "[prune.channels]\nffn_ratio=0\n", { "remove nothing" } },
    { "[prune.channels]\nkv_ratio=0.9\n", { "kv_ratio=0.9", "all 4" } },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      int st;
      g_autofree char *err = NULL;
      g_autofree char *nodes = g_strdup_printf ("%s[save]\npath=never.gguf\n", cases[i].nodes);
      g_autofree char *name = g_strdup_printf ("bad-%u", i);
      g_autofree char *out = run_nodes (&sh, name, CALIB_SETTINGS, nodes, &st, &err);
      g_test_message ("%s -> %s", cases[i].nodes, err);
      g_assert_cmpint (st, !=, 0);
      for (int f = 0; f < 4 && cases[i].fragments[f]; f++)
        g_assert_nonnull (strstr (err, cases[i].fragments[f]));
      g_autofree char *never = g_build_filename (out, "never.gguf", NULL);
      g_assert_false (g_file_test (never, G_FILE_TEST_EXISTS));
    }
  /* NaN weights, and calibrated passes without calibration data. */
  const char *passes[] = { "prune.magnitude", "prune.wanda", "prune.sparsegpt" };
  for (guint i = 0; i < G_N_ELEMENTS (passes); i++)
    {
      g_autofree char *pipe = g_strdup_printf ("load path=%s ! %s ! save path=never.gguf", nan, passes[i]);
      g_autofree char *err = NULL;
      g_autofree char *calib = g_strdup_printf ("--calib=%s", sh.data);
      g_assert_cmpint (lp_test_run_cli (NULL, &err, "run", "-q", "--no-cache", calib, "-o", lp_test_tmpdir (), "-p", pipe,
                                        NULL), !=, 0);
      g_test_message ("NaN weight, %s -> %s", passes[i], err);
      g_assert_nonnull (strstr (err, "blk.1.attn_k.weight"));
      g_assert_nonnull (strstr (err, "element 70"));
      g_assert_nonnull (strstr (err, "finite"));
    }
  g_autofree char *pipe = g_strdup_printf ("load path=%s ! prune.sparsegpt ! save path=never.gguf", sh.model);
  g_autofree char *err = NULL;
  g_assert_cmpint (lp_test_run_cli (NULL, &err, "run", "-q", "--no-cache", "-o", lp_test_tmpdir (), "-p", pipe, NULL), !=, 0);
  g_assert_nonnull (strstr (err, "calibration"));
  shared_clear (&sh);
}

/* profile=owl: layer sparsities spread around the target, their mean the
 * target, outlier-rich layers pruned less; magnitude and Wanda. */
static void
test_owl_profile (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  const char *passes[] = { "prune.magnitude", "prune.wanda" };
  for (guint p = 0; p < G_N_ELEMENTS (passes); p++)
    {
      g_autofree char *nodes = g_strdup_printf ("[prune]\npass=%s\nsparsity=0.5\nprofile=owl\nowl_lambda=0.1\n"
                                                "[save]\npath=owl.gguf\n", passes[p]);
      g_autofree char *name = g_strdup_printf ("owl-%u", p);
      g_autoptr (LpModel) m = run_and_load (&sh, name, nodes, "owl.gguf");
      double mean = 0, lo = 1, hi = 0;
      for (int l = 0; l < 5; l++)
        {
          g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.blk.%d.ffn_up.weight", l);
          double s = meta_f (m, key);
          mean += s / 5;
          lo = MIN (lo, s);
          hi = MAX (hi, s);
        }
      g_test_message ("%s profile=owl: layer sparsities %.4f .. %.4f, mean %.4f", passes[p], lo, hi, mean);
      /* Wanda rounds each row's quota: 1/64 per layer of ffn_up. */
      g_assert_cmpfloat (fabs (mean - 0.5), <, 1.0 / 64);
      g_assert_cmpfloat (hi - lo, >, 0.2 - 1.0 / 32);
      g_assert_cmpfloat (hi - lo, <, 0.2 + 1.0 / 32);
    }
  shared_clear (&sh);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* Evaluations of small models, as llmpress eval runs them: BLAS on one
   * thread, one window per core (chosen once, before any work). */
  lp_cpu_blas_threads_init (1);
  g_test_add_func ("/prune/pattern", test_pattern_parse);
  g_test_add_func ("/prune/select/unstructured", test_select_unstructured);
  g_test_add_func ("/prune/select/nm", test_select_nm);
  g_test_add_func ("/prune/tensor", test_tensor_pruned);
  g_test_add_func ("/prune/owl", test_owl);
  g_test_add_func ("/prune/sparsegpt/reference", test_sparsegpt_reference);
  g_test_add_func ("/prune/sparsegpt/reference-2:4", test_sparsegpt_reference_nm);
  g_test_add_func ("/prune/sparsegpt/dead-nan", test_sparsegpt_dead_and_nan);
  g_test_add_func ("/prune/sparsegpt/shared-factor", test_sparsegpt_shared_factor);
  g_test_add_func ("/prune/saved-sparsity", test_saved_sparsity);
  g_test_add_func ("/prune/compare-spec", test_compare_spec);
  g_test_add_func ("/prune/layers", test_layers);
  g_test_add_func ("/prune/channels", test_channels);
  g_test_add_func ("/prune/bad-input", test_bad_input);
  g_test_add_func ("/prune/owl-profile", test_owl_profile);
  return g_test_run ();
}
