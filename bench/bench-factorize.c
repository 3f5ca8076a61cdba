/* make bench: the low-rank decompositions of compress/lowrank.c on one
 * N x N layer (N = 4096, or argv[1]), beside LAPACK measured in the same run:
 *   - LAPACK's sgesdd of the same N x N matrix (thin U, S, V^T), the
 *     decomposition an exact SVD of the layer is;
 *   - factorize.asvd's work on the layer: the Cholesky whitening of its
 *     Hessian, the exact SVD of W L, the factors at rank N/4, with the
 *     output error against plain SVD's at that rank;
 *   - randomized (R + 10 columns, 2 power iterations) against exact SVD at
 *     ranks N/16 and N/4: time and the truncation error relative to the
 *     optimum, on the CPU and on the Vulkan device when one is available;
 *   - the forward product of 512 tokens through the layer as the low-rank
 *     form runs it (two products, x B^T then A^T) beside the dense weight's
 *     one product, on the CPU.
 * The weight has a decaying spectrum (G1 diag(0.999^i) G2 of Gaussians);
 * the Hessian is X^T X of N tokens with correlated columns.  Prints
 * figures; never fails on time. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <lapacke.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

static void
die (GError *error)
{
  fprintf (stderr, "bench: %s\n", error->message);
  exit (1);
}

/* x[n] standard normal (Box-Muller over GRand, seeded). */
static void
gaussian (float *x, gsize n, guint32 seed)
{
  GRand *r = g_rand_new_with_seed (seed);
  for (gsize i = 0; i < n; i++)
    {
      double u1 = 1.0 - g_rand_double (r), u2 = g_rand_double (r);
      x[i] = (float) (sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2));
    }
  g_rand_free (r);
}

/* A [n, n] G1 diag(d) G2 with d_i = rate^i. */
static float *
decaying_matrix (int n, double rate, guint32 seed)
{
  float *g1 = g_new (float, (gsize) n * n), *g2 = g_new (float, (gsize) n * n), *w = g_new (float, (gsize) n * n);
  gaussian (g1, (gsize) n * n, seed);
  gaussian (g2, (gsize) n * n, seed + 1);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      g1[(gsize) i * n + j] *= (float) pow (rate, j);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f / n, g1, n, g2, n, 0.0f, w, n);
  g_free (g1);
  g_free (g2);
  return w;
}

/* LAPACK's sgesdd of M (copied), thin: the reference time. */
static double
time_sgesdd (int n, const float *M)
{
  float *a = g_memdup2 (M, sizeof (float) * n * n), *s = g_new (float, n);
  float *u = g_new (float, (gsize) n * n), *vt = g_new (float, (gsize) n * n);
  double t0 = now ();
  lapack_int info = LAPACKE_sgesdd (LAPACK_ROW_MAJOR, 'S', n, n, a, n, s, u, n, vt, n);
  double t = now () - t0;
  if (info != 0)
    {
      fprintf (stderr, "bench: LAPACKE_sgesdd: info %d\n", (int) info);
      exit (1);
    }
  g_free (a);
  g_free (s);
  g_free (u);
  g_free (vt);
  return t;
}

/* ||M - A B||_F^2 (A [n, r], B [r, n]). */
static double
recon_error (int n, int r, const float *M, const float *A, const float *B)
{
  float *E = g_memdup2 (M, sizeof (float) * n * n);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, r, -1.0f, A, r, B, n, 1.0f, E, n);
  double t = 0.0;
  for (gsize i = 0; i < (gsize) n * n; i++)
    t += (double) E[i] * E[i];
  g_free (E);
  return t;
}

static void
randomized_vs_exact (LpBackend *be, const char *where, int n, const float *W, const LpSvd *exact, double t_exact)
{
  for (int r = n / 16; r <= n / 4; r *= 4)
    {
      LpLowRankOptions o = { LP_LOWRANK_RANDOMIZED, 10, 2, 1 };
      GError *error = NULL;
      double t0 = now ();
      LpSvd *rnd = lp_svd_new (be, n, n, W, r, &o, &error);
      double t = now () - t0;
      if (rnd == NULL)
        die (error);
      float *A = g_new (float, (gsize) n * r), *B = g_new (float, (gsize) r * n);
      lp_svd_factors (rnd, r, A, B);
      double err = recon_error (n, r, W, A, B), opt = lp_svd_tail (exact, r);
      printf ("  randomized rank %4d (p 10, q 2) on %s: %.3f s (exact SVD %.3f s: %.2fx its speed); error %.6g vs "
              "the optimum %.6g (+%.3f%%), sigma_1 %.6g vs %.6g\n",
              r, where, t, t_exact, t_exact / t, err / exact->total_sq, opt / exact->total_sq,
              100.0 * (err - opt) / opt, rnd->s[0], exact->s[0]);
      lp_svd_free (rnd);
      g_free (A);
      g_free (B);
    }
}

/* Median seconds of y = x W^T for x [T, N] through t's form (dense: one
 * product; low-rank: two), on be. */
static double
time_form_matmul (LpBackend *be, LpTensor *t, int T, const float *x)
{
  GError *error = NULL;
  LpFormWeights *w = lp_form_weights_new (t, be, FALSE, &error);
  if (w == NULL)
    die (error);
  gint64 shape[2] = { T, t->shape[1] };
  double times[5];
  for (int rep = 0; rep < 5; rep++)
    {
      LpCGraph *g = lp_cgraph_new (be);
      LpCTensor *xt = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, shape, "x", &error);
      if (xt == NULL)
        die (error);
      lp_ctensor_write (xt, 0, x, sizeof (float) * T * t->shape[1]);
      double t0 = now ();
      if (lp_form_weights_matmul (w, g, xt, NULL, &error) == NULL || !lp_cgraph_compute (g, &error))
        die (error);
      times[rep] = now () - t0;
      lp_cgraph_free (g);
    }
  lp_form_weights_free (w);
  return median (times, 5);
}

static void
forward_speed (LpBackend *be, int n, const float *W, const LpSvd *svd, int r)
{
  const int T = 512;
  GError *error = NULL;
  gint64 sw[2] = { n, n }, sa[2] = { n, r }, sb[2] = { r, n };
  LpTensor *dense = lp_tensor_new_f32 ("w", 2, sw, W, &error);
  LpTensor *a = lp_tensor_new ("w", LP_DTYPE_F32, 2, sa, &error), *b = lp_tensor_new ("w", LP_DTYPE_F32, 2, sb, &error);
  if (dense == NULL || a == NULL || b == NULL)
    die (error);
  lp_svd_factors (svd, r, lp_tensor_data_mut (a), lp_tensor_data_mut (b));
  LpTensor *lr = lp_tensor_new_low_rank ("w", a, b, &error);
  if (lr == NULL)
    die (error);
  float *x = g_new (float, (gsize) T * n);
  gaussian (x, (gsize) T * n, 9);
  double t_dense = time_form_matmul (be, dense, T, x), t_lr = time_form_matmul (be, lr, T, x);
  printf ("forward %d tokens through the %dx%d layer: dense %.4f s, low-rank rank %d (two products, %.0f%% of the "
          "FLOPs) %.4f s: %.2fx faster\n", T, n, n, t_dense, r, 100.0 * 2.0 * r / n, t_lr, t_dense / t_lr);
  g_free (x);
  lp_tensor_unref (dense);
  lp_tensor_unref (a);
  lp_tensor_unref (b);
  lp_tensor_unref (lr);
}

int
main (int argc, char **argv)
{
  int n = argc > 1 ? atoi (argv[1]) : 4096;
  if (n < 64)
    n = 64;
  printf ("OpenBLAS %s, %d threads: sgemm %d^3 peak %.1f GFLOP/s\n", openblas_get_corename (),
          openblas_get_num_threads (), MIN (n, 2048), bench_peak_sgemm (MIN (n, 2048), 3));
  float *W = decaying_matrix (n, 0.999, 1);
  float *X = decaying_matrix (n, 0.998, 3), *H = g_new0 (float, (gsize) n * n);
  LpBackend *cpu = lp_backend_cpu_new ();
  lp_syrk (cpu, n, n, X, n, H);
  g_free (X);

  double t_lapack = time_sgesdd (n, W);
  printf ("LAPACK sgesdd %dx%d (thin U, S, V^T): %.3f s\n", n, n, t_lapack);

  GError *error = NULL;
  double t0 = now ();
  LpSvd *exact = lp_svd_new (cpu, n, n, W, n / 4, NULL, &error);
  double t_exact = now () - t0;
  if (exact == NULL)
    die (error);
  printf ("factorize.svd exact %dx%d: %.3f s (%.2fx LAPACK's sgesdd)\n", n, n, t_exact, t_exact / t_lapack);

  /* factorize.asvd on the layer: whitening, the SVD of W L, the factors. */
  int r = n / 4;
  t0 = now ();
  float *L = lp_whitening_new (cpu, n, H, 0.01, &error);
  if (L == NULL)
    die (error);
  double t_white = now () - t0;
  LpSvd *aware = lp_asvd_new (cpu, n, n, W, L, r, NULL, &error);
  if (aware == NULL)
    die (error);
  float *A = g_new (float, (gsize) n * r), *B = g_new (float, (gsize) r * n);
  lp_asvd_factors (aware, L, r, A, B);
  double t_asvd = now () - t0;
  double e_asvd = lp_lowrank_output_error (n, n, r, W, A, B, H);
  lp_svd_factors (exact, r, A, B);
  double e_svd = lp_lowrank_output_error (n, n, r, W, A, B, H);
  printf ("factorize.asvd exact %dx%d at rank %d: %.3f s (whitening %.3f s; %.2fx LAPACK's sgesdd); output error "
          "%.6g of plain SVD's at the same rank\n", n, n, r, t_asvd, t_white, t_asvd / t_lapack, e_asvd / e_svd);

  forward_speed (cpu, n, W, exact, r);
  randomized_vs_exact (cpu, "the CPU", n, W, exact, t_exact);
  LpBackend *vk = lp_backend_new ("vulkan", &error);
  if (vk == NULL)
    {
      printf ("  randomized on the Vulkan device: skipped (%s)\n", error->message);
      g_clear_error (&error);
    }
  else
    {
      randomized_vs_exact (vk, vk->device_name, n, W, exact, t_exact);
      lp_backend_unref (vk);
    }
  lp_svd_free (exact);
  lp_svd_free (aware);
  lp_backend_unref (cpu);
  g_free (L);
  g_free (A);
  g_free (B);
  g_free (W);
  g_free (H);
  return 0;
}
