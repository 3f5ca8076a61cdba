/* make bench: SparseGPT on one 4096 x 4096 layer (synthetic weights, a
 * random SPD Hessian X^T X of 4096 random tokens), unstructured 50% and
 * 2:4, beside what this machine's OpenBLAS needs for the same
 * floating-point operations:
 *   - the same FLOP count at the measured peak sgemm rate (4096^3), and
 *   - LAPACK's own Cholesky + triangular inverse (spotrf + strtri) of the
 *     same Hessian, the factorization lp_obs_prepare performs.
 * FLOPs counted: n^3/3 (Cholesky) + n^3/3 (triangular inverse) + the
 * sweep's in-block updates (2 rows per later column of the block) + the
 * lazy GEMM after each block (2 rows bs (n - c1)).  Prints figures; never
 * fails on time.  Medians of several repetitions. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <lapacke.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

static double
sparsegpt_flops (double rows, int n, int bs)
{
  double f = 2.0 * n * (double) n * n / 3.0;
  for (int c0 = 0; c0 < n; c0 += bs)
    {
      int c1 = MIN (c0 + bs, n);
      for (int c = c0; c < c1; c++)
        f += 2.0 * rows * (c1 - c - 1);
      f += 2.0 * rows * (c1 - c0) * (double) (n - c1);
    }
  return f;
}

static double
time_sparsegpt (LpBackend *be, int n, const float *W, const float *H, const LpSparseGPTOptions *o, int reps)
{
  float *w = g_new (float, (gsize) n * n), *h = g_new (float, (gsize) n * n);
  guint8 *pruned = g_new (guint8, (gsize) n * n);
  double t[8];
  GError *error = NULL;
  for (int r = 0; r < reps; r++)
    {
      memcpy (w, W, sizeof (float) * n * n);
      memcpy (h, H, sizeof (float) * n * n);
      double t0 = now ();
      if (!lp_sparsegpt_prune (be, n, n, w, h, o, pruned, NULL, &error))
        {
          fprintf (stderr, "bench: %s\n", error->message);
          exit (1);
        }
      t[r] = now () - t0;
    }
  g_free (w);
  g_free (h);
  g_free (pruned);
  return median (t, reps);
}

/* spotrf + strtri of the damped Hessian: LAPACK doing the factorization. */
static double
time_lapack_factor (int n, const float *H, int reps)
{
  float *h = g_new (float, (gsize) n * n);
  double t[8], mean = 0;
  for (int j = 0; j < n; j++)
    mean += H[(gsize) j * n + j] / n;
  for (int r = 0; r < reps; r++)
    {
      memcpy (h, H, sizeof (float) * n * n);
      for (int j = 0; j < n; j++)
        h[(gsize) j * n + j] += 0.01f * (float) mean;
      double t0 = now ();
      if (LAPACKE_spotrf (LAPACK_ROW_MAJOR, 'L', n, h, n) != 0 || LAPACKE_strtri (LAPACK_ROW_MAJOR, 'L', 'N', n, h, n) != 0)
        {
          fprintf (stderr, "bench: LAPACK factorization failed\n");
          exit (1);
        }
      t[r] = now () - t0;
    }
  g_free (h);
  return median (t, reps);
}

int
main (int argc, char **argv)
{
  const int n = 4096, reps = 3, bs = 128;
  double peak = bench_peak_sgemm (n, reps);
  printf ("OpenBLAS %s, %d threads: sgemm %d^3 peak %.1f GFLOP/s (median of %d)\n", openblas_get_corename (),
          openblas_get_num_threads (), n, peak, reps);
  float *W = g_new (float, (gsize) n * n), *X = g_new (float, (gsize) n * n), *H = g_new0 (float, (gsize) n * n);
  GRand *rand = g_rand_new_with_seed (1);
  for (gsize i = 0; i < (gsize) n * n; i++)
    {
      W[i] = (float) g_rand_double_range (rand, -1, 1);
      X[i] = (float) g_rand_double_range (rand, -1, 1);
    }
  g_rand_free (rand);
  LpBackend *be = lp_backend_cpu_new ();
  lp_syrk (be, n, n, X, n, H);
  g_free (X);

  double t_lapack = time_lapack_factor (n, H, reps), f_factor = 2.0 * n * (double) n * n / 3.0;
  printf ("LAPACK spotrf + strtri %dx%d: %.3f s (%.1f GFLOP/s)\n", n, n, t_lapack, f_factor / t_lapack / 1e9);
  const char *const names[] = { "unstructured 50%", "2:4" };
  for (int p = 0; p < 2; p++)
    {
      LpSparseGPTOptions o = LP_SPARSEGPT_OPTIONS_INIT;
      o.block_size = bs;
      if (p == 1)
        o.pattern = (LpSparsityPattern) { 2, 4 };
      double t = time_sparsegpt (be, n, W, H, &o, reps), f = sparsegpt_flops (n, n, bs);
      printf ("SparseGPT %dx%d %s (block %d): %.3f s, %.1f GFLOP -> %.1f GFLOP/s; OpenBLAS at peak sgemm needs %.3f s "
              "for the same FLOPs (%.2fx), LAPACK factorization alone %.3f s\n",
              n, n, names[p], bs, t, f / 1e9, f / t / 1e9, f / peak / 1e9, t / (f / peak / 1e9), t_lapack);
    }
  lp_backend_unref (be);
  g_free (W);
  g_free (H);
  return 0;
}
