/* make bench: block quantization throughput.
 *  1. Memory bandwidth of this machine, measured in the same run with a
 *     STREAM-like triad a[i] = b[i] + s*c[i] over 3 x 64 MiB arrays (counting
 *     the 3 streams: 2 read, 1 written).
 *  2. RTN conversion of a 4096x4096 f32 tensor (64 MiB) to Q8_0, Q4_0, Q4_K
 *     (and Q4_K with an importance vector) by lp_quantize_tensor, in GB/s of
 *     f32 input, next to the bandwidth.
 * Medians of 5.  Prints figures; never fails on time. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"


int
main (int argc, char **argv)
{
  const int reps = 5;
  double bw = bench_triad_gbs ((gsize) 8 << 20, reps);
  printf ("memory bandwidth (triad, 3 x 64 MiB, 1 thread): %.2f GB/s (median of %d)\n", bw, reps);

  const gint64 n = 4096;
  gint64 shape[2] = { n, n };
  float *x = g_new (float, n * n);
  float *imp = g_new (float, n);
  GRand *r = g_rand_new_with_seed (1);
  for (gint64 i = 0; i < n * n; i++)
    x[i] = (float) g_rand_double_range (r, -0.05, 0.05);
  for (gint64 i = 0; i < n; i++)
    imp[i] = (float) g_rand_double_range (r, 0.1, 2);
  g_rand_free (r);
  GError *error = NULL;
  LpTensor *src = lp_tensor_new_f32 ("bench.weight", 2, shape, x, &error);
  g_free (x);
  if (src == NULL)
    {
      fprintf (stderr, "bench-quant: %s\n", error->message);
      return 1;
    }
  struct { LpDType type; gboolean imatrix; } runs[] = {
    { LP_DTYPE_Q8_0, FALSE }, { LP_DTYPE_Q4_0, FALSE }, { LP_DTYPE_Q4_K, FALSE }, { LP_DTYPE_Q4_K, TRUE },
  };
  printf ("threads: %u\n", MIN (g_get_num_processors (), 8));
  for (guint k = 0; k < G_N_ELEMENTS (runs); k++)
    {
      double t[16];
      for (int rep = 0; rep < reps; rep++)
        {
          LpTensor *q = NULL;
          double t0 = now ();
          if (!lp_quantize_tensor (src, runs[k].type, runs[k].imatrix ? imp : NULL, &q, &error))
            {
              fprintf (stderr, "bench-quant: %s\n", error->message);
              return 1;
            }
          t[rep] = now () - t0;
          lp_tensor_unref (q);
        }
      double s = median (t, reps);
      double gbs = (double) n * n * sizeof (float) / s / 1e9;
      printf ("%-5s%s 4096x4096 f32 -> blocks: %7.1f ms, %.2f GB/s of f32 input (%.0f%% of triad bandwidth)\n",
              lp_dtype_name (runs[k].type), runs[k].imatrix ? " + imatrix" : "          ", s * 1e3, gbs,
              100 * gbs / bw);
    }
  lp_tensor_unref (src);
  g_free (imp);
  return 0;
}
