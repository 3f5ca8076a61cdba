/* make bench: RTN throughput against this machine's memory bandwidth.
 *  1. Memory bandwidth measured in the same run with a STREAM triad
 *     a[i] = b[i] + s*c[i] over 3 x 64 MiB arrays (3 streams counted: 2
 *     read, 1 written), on one thread and on lp_threads () threads (the
 *     reference: RTN runs on all of them).
 *  2. RTN of a SmolLM2-135M-shaped model (30 layers of attn_q/k/v/output
 *     and ffn_gate/up/down at D = 576, F = 1536, 3 KV heads of 64: 106 M
 *     weights, random values, each layer its own: 425 MB streamed from
 *     memory) tensor by tensor, as quantize.rtn does: to
 *     Q8_0, Q4_0, Q4_K (lp_quantize_rows; rows of 576 take llama-quantize's
 *     fallback Q5_0, so only ffn_down is Q4_K) and to the 4-bit integer grid in
 *     groups of 128 with the clip search (the CPU backend's quantize_groups).
 *     In GB/s of f32 input read, and as a share of the threaded triad
 *     (target: at least 50%).
 * Medians of 3 (triad: 5).  Prints figures; never fails on time.
 *  3. The kernels alone on one thread, in MB/s of f32 input per CPU
 *     second, the figures the machine's other load moves least: Q8_0 and
 *     Q4_0 over every tensor, each one row end to end as
 *     lp_quantize_rows's ranges are (q8_0-1t, q4_0-1t), and Q4_K over the
 *     30 ffn_down tensors row by row (q4_k-1t).
 * Arguments, if any, name the lines to run by their first word (q8_0 q4_0
 * q4_k int4 q8_0-1t q4_0-1t q4_k-1t): a quick look at one kernel without
 * the slow clip search. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

/* SmolLM2-135M's linear weights of one layer: rows x columns. */
static const struct {
  int rows, cols;
} layer[] = {
  { 576, 576 }, { 192, 576 }, { 192, 576 }, { 576, 576 }, { 1536, 576 }, { 1536, 576 }, { 576, 1536 },
};
#define N_LAYERS 30

/* Whether the line `name` runs: no arguments, or one is its first word. */
static gboolean
chosen (const char *name, int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    if (g_str_has_prefix (name, argv[i]) && (name[strlen (argv[i])] == ' ' || name[strlen (argv[i])] == '\0'))
      return TRUE;
  return argc < 2;
}

int
main (int argc, char **argv)
{
  const int reps = 3;
  setvbuf (stdout, NULL, _IOLBF, 0);
  double bw1 = bench_triad_gbs ((gsize) 8 << 20, 5, FALSE);
  double bw = bench_triad_gbs ((gsize) 8 << 20, 5, TRUE);
  printf ("memory bandwidth (triad, 3 x 64 MiB): %.2f GB/s on 1 thread, %.2f GB/s on %d threads (median of 5)\n", bw1,
          bw, lp_threads ());

  /* Every layer its own weights (425 MB): one buffer per shape would stay
   * in the last-level cache and measure the cache, not the streaming pass.
   * The values come from a cheap generator (xorshift32) so that filling
   * them takes well under a second. */
  float *w[N_LAYERS][G_N_ELEMENTS (layer)];
  gint64 per_layer = 0, max_out = 0;
  guint32 x = 1;
  for (int l = 0; l < N_LAYERS; l++)
    for (guint k = 0; k < G_N_ELEMENTS (layer); k++)
      {
        gint64 n = (gint64) layer[k].rows * layer[k].cols;
        w[l][k] = g_new (float, n);
        for (gint64 i = 0; i < n; i++)
          {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            w[l][k][i] = (float) (x * (0.1 / 4294967296.0) - 0.05);
          }
        if (l == 0)
          per_layer += n;
        max_out = MAX (max_out, n);
      }
  guint8 *out = g_malloc (max_out * 2);
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  guint16 *scales = g_new (guint16, max_out / 64); /* groups: at most 5 per 576 values */
  guint8 *zeros = g_new (guint8, max_out / 64);
  gint64 total = per_layer * N_LAYERS;
  printf ("SmolLM2-135M-shaped model: %d layers, %.1f M weights, %.0f MB of f32, %d threads\n", N_LAYERS, total / 1e6,
          total * 4 / 1e6, lp_threads ());

  const char *names[] = { "q8_0", "q4_0", "q4_k (rows of 576: q5_0)", "int4 g128 (clip search)" };
  LpDType types[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q4_0, LP_DTYPE_Q4_K, LP_DTYPE_F32 };
  for (guint t = 0; t < G_N_ELEMENTS (types); t++)
    {
      if (!chosen (names[t], argc, argv))
        continue;
      double wall[16], cpu_s[16];
      for (int rep = 0; rep < reps; rep++)
        {
          double t0 = now (), c0 = bench_cpu_now ();
          for (int l = 0; l < N_LAYERS; l++)
            for (guint k = 0; k < G_N_ELEMENTS (layer); k++)
              {
                GError *error = NULL;
                if (types[t] == LP_DTYPE_F32)
                  {
                    LpGroupQuant q = { 4, 128, FALSE, TRUE };
                    lp_quantize_groups (cpu, layer[k].rows, layer[k].cols, w[l][k], layer[k].cols, NULL, &q, out, scales,
                                        zeros);
                  }
                else if (!lp_quantize_rows (lp_quant_fallback_type (types[t], layer[k].cols), w[l][k], layer[k].rows,
                                            layer[k].cols, NULL, out, &error))
                  {
                    fprintf (stderr, "bench-quant: %s\n", error->message);
                    return 1;
                  }
              }
          wall[rep] = now () - t0;
          cpu_s[rep] = bench_cpu_now () - c0;
        }
      double s = median (wall, reps), c = median (cpu_s, reps);
      double gbs = total * 4.0 / s / 1e9;
      printf ("%-24s %7.2f s wall, %7.2f s CPU: %6.2f GB/s of f32 input, %5.1f%% of the threaded triad\n", names[t], s,
              c, gbs, 100 * gbs / bw);
    }
  /* The 32-value kernels alone: each tensor as one row on this thread. */
  const char *row_names[] = { "q8_0-1t (all tensors, 1 thread)", "q4_0-1t (all tensors, 1 thread)" };
  const LpDType row_types[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q4_0 };
  for (guint t = 0; t < G_N_ELEMENTS (row_types); t++)
    {
      if (!chosen (row_names[t], argc, argv))
        continue;
      double cpu_s[16];
      for (int rep = 0; rep < reps; rep++)
        {
          double c0 = bench_cpu_now ();
          for (int l = 0; l < N_LAYERS; l++)
            for (guint k = 0; k < G_N_ELEMENTS (layer); k++)
              if (!lp_quantize_row (row_types[t], w[l][k], out, (gint64) layer[k].rows * layer[k].cols, NULL, NULL))
                return 1;
          cpu_s[rep] = bench_cpu_now () - c0;
        }
      double c = median (cpu_s, reps);
      printf ("%-24s %7.2f s CPU: %6.0f MB/s of f32 input\n", row_names[t], c, total * 4 / c / 1e6);
    }
  /* The Q4_K kernel alone: the ffn_down rows (K = 1536) row by row on this
   * thread, the one figure the machine's other load barely moves. */
  const char *kernel_name = "q4_k-1t (ffn_down rows, 1 thread)";
  if (chosen (kernel_name, argc, argv))
    {
      const guint down = G_N_ELEMENTS (layer) - 1;
      guint64 row_bytes = 0;
      g_assert_true (lp_dtype_row_bytes (LP_DTYPE_Q4_K, layer[down].cols, &row_bytes, NULL));
      double cpu_s[16];
      for (int rep = 0; rep < reps; rep++)
        {
          double c0 = bench_cpu_now ();
          for (int l = 0; l < N_LAYERS; l++)
            for (int r = 0; r < layer[down].rows; r++)
              if (!lp_quantize_row (LP_DTYPE_Q4_K, w[l][down] + (gint64) r * layer[down].cols, out + r * row_bytes,
                                    layer[down].cols, NULL, NULL))
                return 1;
          cpu_s[rep] = bench_cpu_now () - c0;
        }
      double c = median (cpu_s, reps), n = (double) N_LAYERS * layer[down].rows * layer[down].cols;
      printf ("%-24s %7.2f s CPU: %6.0f MB/s of f32 input\n", kernel_name, c, n * 4 / c / 1e6);
    }
  for (int l = 0; l < N_LAYERS; l++)
    for (guint k = 0; k < G_N_ELEMENTS (layer); k++)
      g_free (w[l][k]);
  g_free (out);
  g_free (scales);
  g_free (zeros);
  return 0;
}
