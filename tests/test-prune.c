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
  g_assert_nonnull (t->mask);
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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/prune/pattern", test_pattern_parse);
  g_test_add_func ("/prune/select/unstructured", test_select_unstructured);
  g_test_add_func ("/prune/select/nm", test_select_nm);
  g_test_add_func ("/prune/tensor", test_tensor_pruned);
  g_test_add_func ("/prune/owl", test_owl);
  g_test_add_func ("/prune/sparsegpt/reference", test_sparsegpt_reference);
  g_test_add_func ("/prune/sparsegpt/reference-2:4", test_sparsegpt_reference_nm);
  g_test_add_func ("/prune/sparsegpt/dead-nan", test_sparsegpt_dead_and_nan);
  return g_test_run ();
}
