/* Low-rank decompositions (compress/lowrank.c) and the factorize passes. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "testutil.h"

/* Q [n, m] with orthonormal columns (m <= n), from a random matrix's QR. */
static float *
random_orthonormal (int n, int m, guint32 seed)
{
  float *q = g_new (float, (gsize) n * m);
  lp_test_fill (q, (gsize) n * m, seed, 1.0);
  g_autofree float *tau = g_new (float, m);
  g_assert_cmpint (LAPACKE_sgeqrf (LAPACK_ROW_MAJOR, n, m, q, m, tau), ==, 0);
  g_assert_cmpint (LAPACKE_sorgqr (LAPACK_ROW_MAJOR, n, m, m, q, m, tau), ==, 0);
  return q;
}

/* M [n, k] = U diag(s) V^T with the given singular values (descending). */
static float *
matrix_with_spectrum (int n, int k, const float *s, guint32 seed)
{
  int m = MIN (n, k);
  g_autofree float *u = random_orthonormal (n, m, seed);
  g_autofree float *v = random_orthonormal (k, m, seed + 1);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++)
      u[(gsize) i * m + j] *= s[j];
  float *M = g_new (float, (gsize) n * k);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, k, m, 1.0f, u, m, v, m, 0.0f, M, k);
  return M;
}

/* ||M - A B||_F^2 in double. */
static double
recon_error (int n, int k, int r, const float *M, const float *A, const float *B)
{
  double t = 0.0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < k; j++)
      {
        double v = M[(gsize) i * k + j];
        for (int c = 0; c < r; c++)
          v -= (double) A[(gsize) i * r + c] * B[(gsize) c * k + j];
        t += v * v;
      }
  return t;
}

/* Exact: the singular values LAPACK's sgesvd gives, and at every rank the
 * error of A B is the tail of the spectrum (Eckart–Young). */
static void
test_exact (void)
{
  const int n = 40, k = 30;
  g_autofree float *M = g_new (float, n * k);
  lp_test_fill (M, (gsize) n * k, 7, 1.0);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSvd) svd = lp_svd_new (NULL, n, k, M, 5, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (svd->m, ==, 30);
  /* The reference: sgesvd (a different LAPACK algorithm) on a copy. */
  g_autofree float *copy = g_memdup2 (M, sizeof (float) * n * k);
  g_autofree float *s_ref = g_new (float, k), *superb = g_new (float, k);
  g_assert_cmpint (LAPACKE_sgesvd (LAPACK_ROW_MAJOR, 'N', 'N', n, k, copy, k, s_ref, NULL, 1, NULL, 1, superb), ==, 0);
  for (int i = 0; i < k; i++)
    g_assert_cmpfloat (fabs (svd->s[i] - s_ref[i]), <, 1e-5 * s_ref[0]);
  for (int r = 1; r <= k; r += 7)
    {
      g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
      double tail = lp_svd_factors (svd, r, A, B);
      double expect = 0.0;
      for (int i = r; i < k; i++)
        expect += (double) s_ref[i] * s_ref[i];
      g_assert_cmpfloat (fabs (tail - expect), <, 1e-4 * svd->total_sq);
      g_assert_cmpfloat (fabs (recon_error (n, k, r, M, A, B) - expect), <, 1e-4 * svd->total_sq);
    }
}

/* A symmetric eigendecomposition rebuilds its matrix. */
static void
test_eigen (void)
{
  const int n = 33;
  g_autofree float *X = g_new (float, 50 * n), *H = g_new0 (float, n * n);
  lp_test_fill (X, 50 * n, 3, 1.0);
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, n, n, 50, 1.0f, X, n, X, n, 0.0f, H, n);
  g_autofree float *V = g_memdup2 (H, sizeof (float) * n * n), *w = g_new (float, n);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_symmetric_eigen (n, V, w, &error));
  g_assert_no_error (error);
  for (int i = 1; i < n; i++)
    g_assert_cmpfloat (w[i - 1], <=, w[i]);
  double err = 0.0, norm = 0.0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        double v = 0.0;
        for (int e = 0; e < n; e++)
          v += (double) V[e * n + i] * w[e] * V[e * n + j];
        err += (v - H[i * n + j]) * (v - H[i * n + j]);
        norm += (double) H[i * n + j] * H[i * n + j];
      }
  g_assert_cmpfloat (sqrt (err / norm), <, 1e-5);
}

static void
decaying (float *s, int m, double rate)
{
  for (int i = 0; i < m; i++)
    s[i] = (float) pow (rate, i);
}

/* Randomized on `be` against exact on a decaying spectrum: the top
 * singular values within 1e-3 relative, the truncation error within 1% of
 * the optimum (HMT's bound with q = 2 power iterations is far tighter). */
static void
check_randomized (LpBackend *be, float *s_out)
{
  const int n = 300, k = 200, r = 12;
  float s[200];
  decaying (s, 200, 0.85);
  g_autofree float *M = matrix_with_spectrum (n, k, s, 11);
  LpLowRankOptions o = { LP_LOWRANK_RANDOMIZED, 10, 2, 5 };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSvd) rnd = lp_svd_new (be, n, k, M, r, &o, &error);
  g_assert_no_error (error);
  g_autoptr (LpSvd) ex = lp_svd_new (NULL, n, k, M, r, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (rnd->m, ==, r + 10);
  for (int i = 0; i < r; i++)
    g_assert_cmpfloat (fabs (rnd->s[i] - ex->s[i]), <, 1e-3 * ex->s[i]);
  g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
  double tail = lp_svd_factors (rnd, r, A, B);
  double opt = lp_svd_tail (ex, r), got = recon_error (n, k, r, M, A, B);
  g_test_message ("randomized rank %d: error %.6g, exact %.6g", r, got, opt);
  g_assert_cmpfloat (got, <=, 1.01 * opt);
  g_assert_cmpfloat (fabs (tail - got), <, 1e-3 * rnd->total_sq);
  if (s_out)
    memcpy (s_out, rnd->s, sizeof (float) * r);
}

static void
test_randomized (void)
{
  check_randomized (NULL, NULL);
}

/* The same on the Vulkan device (lavapipe): its singular values equal the
 * CPU's within 1e-4 relative (the products sum in another order). */
static void
test_randomized_vulkan (void)
{
  if (!lp_test_have_vulkan ())
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) vk = lp_backend_new ("vulkan", &error);
  g_assert_no_error (error);
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  float s_vk[12], s_cpu[12];
  check_randomized (vk, s_vk);
  check_randomized (cpu, s_cpu);
  for (int i = 0; i < 12; i++)
    g_assert_cmpfloat (fabs (s_vk[i] - s_cpu[i]), <, 1e-4 * s_cpu[i]);
}

/* Synthetic calibration data with correlated inputs: X [T, K] = Z C, C
 * mixing the columns with decaying scales (some input directions carry far
 * more energy than others, as real activations do); H = X^T X. */
static float *
correlated_hessian (int T, int k, guint32 seed)
{
  g_autofree float *Z = g_new (float, (gsize) T * k), *C = g_new (float, (gsize) k * k);
  g_autofree float *X = g_new (float, (gsize) T * k);
  lp_test_fill (Z, (gsize) T * k, seed, 1.0);
  lp_test_fill (C, (gsize) k * k, seed + 1, 1.0);
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      C[i * k + j] *= (float) pow (0.8, i);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, k, k, 1.0f, Z, k, C, k, 0.0f, X, k);
  float *H = g_new (float, (gsize) k * k);
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, k, k, T, 1.0f, X, k, X, k, 0.0f, H, k);
  return H;
}

/* Activation-aware: its output error ||(W - A B) X^T||^2 is below plain
 * SVD's at every rank, and equals its whitened tail (no damping to speak of). */
static void
test_asvd (void)
{
  const int n = 32, k = 48, T = 400;
  g_autofree float *W = g_new (float, n * k);
  lp_test_fill (W, (gsize) n * k, 21, 1.0);
  g_autofree float *H = correlated_hessian (T, k, 22);
  g_autoptr (GError) error = NULL;
  g_autofree float *L = lp_whitening_new (NULL, k, H, 1e-6, &error);
  g_assert_no_error (error);
  g_autoptr (LpSvd) plain = lp_svd_new (NULL, n, k, W, 8, NULL, &error);
  g_autoptr (LpSvd) aware = lp_asvd_new (NULL, n, k, W, L, 8, NULL, &error);
  g_assert_no_error (error);
  for (int r = 2; r <= 26; r += 6)
    {
      g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
      lp_svd_factors (plain, r, A, B);
      double e_svd = lp_lowrank_output_error (n, k, r, W, A, B, H);
      double tail = lp_asvd_factors (aware, L, r, A, B);
      double e_asvd = lp_lowrank_output_error (n, k, r, W, A, B, H);
      g_test_message ("rank %d: output error svd %.6g, asvd %.6g (whitened tail %.6g)", r, e_svd, e_asvd, tail);
      g_assert_cmpfloat (e_asvd, <, e_svd);
      g_assert_cmpfloat (fabs (e_asvd - tail), <, 1e-3 * tail + 1e-6 * aware->total_sq);
    }
}

/* The update refits A against the data: it lowers the output error of a
 * heavily damped whitening and of a randomized sketch without power
 * iterations, and never raises it. */
static void
test_update (void)
{
  const int n = 32, k = 48, r = 10;
  g_autofree float *W = g_new (float, n * k);
  lp_test_fill (W, (gsize) n * k, 31, 1.0);
  g_autofree float *H = correlated_hessian (300, k, 32);
  g_autoptr (GError) error = NULL;
  LpLowRankOptions sketchy = { LP_LOWRANK_RANDOMIZED, 2, 0, 1 };
  struct {
    double damp;
    const LpLowRankOptions *o;
  } cases[] = { { 0.3, NULL }, { 1e-4, &sketchy } };
  for (guint c = 0; c < G_N_ELEMENTS (cases); c++)
    {
      g_autofree float *L = lp_whitening_new (NULL, k, H, cases[c].damp, &error);
      g_assert_no_error (error);
      g_autoptr (LpSvd) svd = lp_asvd_new (NULL, n, k, W, L, r, cases[c].o, &error);
      g_assert_no_error (error);
      g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
      lp_asvd_factors (svd, L, r, A, B);
      double before = lp_lowrank_output_error (n, k, r, W, A, B, H);
      g_assert_true (lp_lowrank_update_a (n, k, r, W, H, B, A, &error));
      g_assert_no_error (error);
      double after = lp_lowrank_output_error (n, k, r, W, A, B, H);
      g_test_message ("update (damp %g, %s): output error %.6g -> %.6g", cases[c].damp,
                      cases[c].o ? "randomized q=0" : "exact", before, after);
      g_assert_cmpfloat (after, <, 0.99 * before);
    }
}

/* A Hessian with a negative direction larger than the damping: refused,
 * naming the damping. */
static void
test_not_pd (void)
{
  const int k = 6;
  float H[36] = { 0 };
  for (int i = 0; i < k; i++)
    H[i * k + i] = 1.0f;
  H[2 * k + 2] = -3.0f;
  g_autoptr (GError) error = NULL;
  g_autofree float *L = lp_whitening_new (NULL, k, H, 0.01, &error);
  g_assert_null (L);
  lp_test_assert_error_contains (error, "not positive definite after damping", "damp=0.01", NULL);
}

/* Rank rules: the bounds, the ratio's rank, energy, and layers that would
 * save nothing. */
static void
test_choose_rank (void)
{
  g_autoptr (GError) error = NULL;
  LpRankChoice zero = { LP_RANK_FIXED, 0, 0, 0 }, big = { LP_RANK_FIXED, 33, 0, 0 }, tiny = { LP_RANK_RATIO, 0, 0.01, 0 };
  g_assert_false (lp_lowrank_check_choice (&zero, 32, 64, "w", &error));
  lp_test_assert_error_contains (error, "rank=0", "1 <= rank <= 32", "w [32, 64]", NULL);
  g_clear_error (&error);
  g_assert_false (lp_lowrank_check_choice (&big, 32, 64, "w", &error));
  lp_test_assert_error_contains (error, "rank=33", "min(rows, cols)", NULL);
  g_clear_error (&error);
  g_assert_false (lp_lowrank_check_choice (&tiny, 32, 64, "w", &error));
  lp_test_assert_error_contains (error, "ratio=0.01", "cannot be met", "rank 1", NULL);
  g_clear_error (&error);
  g_assert_cmpint (lp_lowrank_max_saving_rank (64, 64), ==, 31);
  g_assert_cmpint (lp_lowrank_max_saving_rank (1, 64), ==, 0);
  float s[20];
  decaying (s, 20, 0.5);
  g_autofree float *M = matrix_with_spectrum (20, 40, s, 3);
  g_autoptr (LpSvd) svd = lp_svd_new (NULL, 20, 40, M, 1, NULL, &error);
  g_assert_no_error (error);
  LpRankChoice ratio = { LP_RANK_RATIO, 0, 0.5, 0 }, energy = { LP_RANK_ENERGY, 0, 0, 0.99 };
  LpRankChoice all = { LP_RANK_FIXED, 20, 0, 0 };
  g_assert_cmpint (lp_lowrank_choose_rank (svd, &ratio), ==, 6); /* 0.5 * 800 / 60 */
  /* 1 - 0.25^r of the energy (near enough) at rank r: 0.99 needs 4. */
  g_assert_cmpint (lp_lowrank_choose_rank (svd, &energy), ==, 4);
  g_assert_cmpint (lp_lowrank_choose_rank (svd, &all), ==, 0); /* 20 * 60 > 800: dense */
}

/* The global allocation: within the budget, the layer of larger spectrum
 * (more output error per parameter) gets more rank, a budget below rank 1
 * everywhere is refused, and a generous one leaves layers dense. */
static void
test_allocate (void)
{
  float s1[32], s2[32];
  decaying (s1, 32, 0.9);
  decaying (s2, 32, 0.6);
  for (int i = 0; i < 32; i++)
    s1[i] *= 3.0f;
  LpRankLayer layers[2] = { { 32, 64, 32, s1, 0 }, { 32, 64, 32, s2, 0 } };
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < 32; i++)
      layers[l].total_sq += (double) layers[l].s[i] * layers[l].s[i];
  int rank[2];
  double used;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_lowrank_allocate (layers, 2, 0.5 * 2 * 2048, rank, &used, &error));
  g_assert_no_error (error);
  g_test_message ("allocated ranks %d, %d (%.0f of %d parameters)", rank[0], rank[1], used, 2048);
  g_assert_cmpfloat (used, <=, 2048);
  g_assert_cmpfloat (used, >, 2048 - 96);
  g_assert_cmpint (rank[0], >, rank[1]);
  g_assert_cmpint (rank[1], >=, 1);
  g_assert_false (lp_lowrank_allocate (layers, 2, 150, rank, NULL, &error));
  lp_test_assert_error_contains (error, "cannot be met", "192", NULL);
  g_clear_error (&error);
  g_assert_true (lp_lowrank_allocate (layers, 2, 2 * 2048, rank, &used, &error));
  g_assert_cmpint (rank[0], ==, 0);
  g_assert_cmpint (rank[1], ==, 0);
  g_assert_cmpfloat (used, ==, 2 * 2048);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/factorize/svd/exact", test_exact);
  g_test_add_func ("/factorize/eigen", test_eigen);
  g_test_add_func ("/factorize/svd/randomized", test_randomized);
  g_test_add_func ("/factorize/svd/randomized-vulkan", test_randomized_vulkan);
  g_test_add_func ("/factorize/asvd/output-error", test_asvd);
  g_test_add_func ("/factorize/asvd/update", test_update);
  g_test_add_func ("/factorize/asvd/not-pd", test_not_pd);
  g_test_add_func ("/factorize/rank/choose", test_choose_rank);
  g_test_add_func ("/factorize/rank/allocate", test_allocate);
  return g_test_run ();
}
