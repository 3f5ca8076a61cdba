/* make bench: GPTQ on one 4096x4096 layer.
 *  1. Peak sgemm of this machine's OpenBLAS (4096^3), measured in the same run.
 *  2. GPTQ (int4, groups of 128, min/max ranges, damp 0.01, lazy blocks of
 *     128) of a synthetic W[4096, 4096] against H = X^T X of 8192 correlated
 *     synthetic input rows: lp_obs_prepare (Cholesky + triangular inverse,
 *     2n^3/3 flops) and the sweep (R n^2 flops of error feedback), timed
 *     together, beside the time OpenBLAS's sgemm needs for the same flops at
 *     the peak just measured.
 * The plugin's GPTQ code is compiled in (plugins/quantize).  Medians of 3.
 * Prints figures; never fails on time. */
#include "config.h"

#include <stdio.h>
#include <cblas.h>

#include "../plugins/quantize/quantize.h"
#include "benchutil.h"

int
main (void)
{
  const int n = 4096, rows = 4096, T = 8192, reps = 3;
  double peak = bench_peak_sgemm (n, reps);
  printf ("OpenBLAS sgemm 4096^3 peak: %.1f GFLOP/s (median of %d)\n", peak, reps);

  /* Inputs with correlated channels (a shared component plus noise) and
   * channel scales spread over two decades, as real activations are. */
  GRand *r = g_rand_new_with_seed (3);
  float *X = g_new (float, (gsize) T * n);
  float *scale = g_new (float, n);
  for (int j = 0; j < n; j++)
    scale[j] = (float) g_rand_double_range (r, 0.1, 10);
  for (int t = 0; t < T; t++)
    {
      float common = (float) g_rand_double_range (r, -1, 1);
      for (int j = 0; j < n; j++)
        X[(gsize) t * n + j] = scale[j] * (0.5f * common + (float) g_rand_double_range (r, -1, 1));
    }
  float *H = g_new0 (float, (gsize) n * n);
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  lp_syrk (be, T, n, X, n, H);
  g_free (X);
  float *W0 = g_new (float, (gsize) rows * n);
  for (gsize i = 0; i < (gsize) rows * n; i++)
    W0[i] = (float) g_rand_double_range (r, -0.05, 0.05);
  g_rand_free (r);
  gint64 shape[2] = { rows, n };
  GError *error = NULL;
  g_autoptr (LpTensor) like = lp_tensor_new_f32 ("bench.weight", 2, shape, W0, &error);
  QGrid grid = { LP_DTYPE_F32, 4, 128, FALSE, FALSE, FALSE };
  QGptqSettings st = { 0.01, 128, FALSE, FALSE };
  float *W = g_new (float, (gsize) rows * n);
  double t[8], loss = 0, damp;
  gint64 lost;
  for (int k = 0; k < reps; k++)
    {
      memcpy (W, W0, sizeof (float) * rows * n);
      double t0 = now ();
      LpTensor *q = q_gptq_quantize (be, &grid, &st, like, W, H, &loss, &damp, &lost, &error);
      t[k] = now () - t0;
      if (q == NULL)
        {
          fprintf (stderr, "bench-gptq: %s\n", error->message);
          return 1;
        }
      lp_tensor_unref (q);
    }
  double s = median (t, reps);
  double gflop = ((double) rows * n * n + 2.0 / 3.0 * (double) n * n * n) / 1e9;
  printf ("GPTQ int4 g128, W 4096x4096, H from %d rows: %.2f s (median of %d); its %.1f GFLOP "
          "(R n^2 + 2n^3/3) take sgemm %.2f s at peak: %.0f%% of peak\n",
          T, s, reps, gflop, gflop / peak, 100 * gflop / peak / s);
  g_free (W);
  g_free (W0);
  g_free (H);
  g_free (scale);
  return 0;
}
