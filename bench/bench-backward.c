/* make bench: training-step speed of one transformer block, through the
 * trainer (train.h) and so the forward pass's own graph, on the CPU and any
 * backend named.
 *  1. Peak sgemm of this machine's OpenBLAS (2048^3), measured in the same run.
 *  2. A one-block synthetic Llama model with a 7B-like block (D 2048, F 5632,
 *     32 heads, 4 kv heads, T 512), every block weight trainable: the forward
 *     alone (lp_trainer_block), then forward + backward
 *     (lp_trainer_accumulate_block: the block, its MSE against a target, the
 *     backward, the gradients added into the accumulators): tokens/s,
 *     achieved GFLOP/s and the fraction of the measured peak.  Both include
 *     writing the block's input and reading its output or loss ([T, D]).
 * Medians of several repetitions.  Usage: bench-backward [BACKEND...]
 * (lp_backend_new's names, "cpu" when none: "cpu vulkan" prints both).
 * Prints figures; never fails on time. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <cblas.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

typedef struct {
  int T, D, F, H, Hkv, hd;
} BlockShape;

static void
die (const char *what, GError *error)
{
  fprintf (stderr, "bench-backward: %s: %s\n", what, error->message);
  exit (1);
}

/* Seconds of one forward (backward FALSE) or forward + backward of block 0. */
static double
block_time (LpTrainer *tr, const float *x, float *y, const BlockShape *s, gboolean backward)
{
  GError *error = NULL;
  double t0 = now ();
  gboolean ok = backward ? lp_trainer_accumulate_block (tr, 0, x, y, s->T, 1.0, NULL, &error)
                         : lp_trainer_block (tr, 0, x, y, s->T, &error);
  if (!ok)
    die (backward ? "forward + backward" : "forward", error);
  return now () - t0;
}

/* Median seconds of `reps` runs after a warm-up. */
static double
block_median (LpTrainer *tr, const float *x, float *y, const BlockShape *s, gboolean backward, int reps)
{
  double t[16];
  reps = MIN (reps, 16);
  block_time (tr, x, y, s, backward);
  for (int r = 0; r < reps; r++)
    t[r] = block_time (tr, x, y, s, backward);
  return median (t, reps);
}

int
main (int argc, char **argv)
{
  int reps = 3;
  double peak = bench_peak_sgemm (2048, 5);
  printf ("OpenBLAS %s, %d threads: sgemm 2048^3 peak %.1f GFLOP/s (median of 5)\n", openblas_get_corename (),
          openblas_get_num_threads (), peak);

  BlockShape s = { .T = 512, .D = 2048, .F = 5632, .H = 32, .Hkv = 4, .hd = 64 };
  /* FLOPs, 2 a multiply-add.  Forward: the seven weight products and
   * attention's two T x T_kv products a head (causal, counted in full as
   * the GEMMs compute them).  Backward: dx and dW for every weight (twice
   * the forward's), attention's five products a head (the scores
   * recomputed, dP, dq, dk, dv). */
  double T = s.T, D = s.D, F = s.F, nq = s.H * s.hd, nkv = s.Hkv * s.hd;
  double linear = 2.0 * T * (2 * D * nq + 2 * D * nkv + 3 * D * F);
  double attn = 2.0 * T * T * s.hd * s.H;
  double fwd_flops = linear + 2 * attn, bwd_flops = 2 * linear + 5 * attn;

  /* The backends named on the command line (lp_backend_new's names), the
   * CPU when none: one row pair each, the same block. */
  const char *const cpu_only[] = { "cpu" };
  const char *const *names = argc > 1 ? (const char *const *) argv + 1 : cpu_only;
  int n_names = argc > 1 ? argc - 1 : 1;
  for (int i = 0; i < n_names; i++)
    {
      GError *error = NULL;
      LpBackend *be = lp_backend_new (names[i], &error);
      if (be == NULL)
        {
          printf ("block on %s: skipped (%s)\n", names[i], error->message);
          g_clear_error (&error);
          continue;
        }
      LpSynthOptions so = LP_SYNTH_OPTIONS_INIT;
      so.dim = s.D, so.ffn_dim = s.F, so.n_layers = 1, so.n_heads = s.H, so.n_kv_heads = s.Hkv;
      LpModel *m = lp_model_synth (&so, &error);
      LpTrainOptions to = LP_TRAIN_OPTIONS_INIT;
      to.layer = 0;
      LpTrainer *tr = m ? lp_trainer_new (m, be, &to, &error) : NULL;
      if (tr == NULL)
        die ("one-block model", error);
      float *x = g_new (float, (gsize) s.T * s.D), *y = g_new (float, (gsize) s.T * s.D);
      GRand *r = g_rand_new_with_seed (1);
      for (gint64 e = 0; e < (gint64) s.T * s.D; e++)
        x[e] = (float) g_rand_double_range (r, -1, 1);
      g_rand_free (r);
      double fwd = block_median (tr, x, y, &s, FALSE, reps);
      double both = block_median (tr, x, y, &s, TRUE, reps);
      printf ("block (D %d, F %d, %d heads, %d kv heads, T %d) on %s, median of %d:\n", s.D, s.F, s.H, s.Hkv, s.T,
              be->device_name, reps);
      printf ("  forward:            %8.0f tokens/s  %.3f s  %6.1f GFLOP/s = %3.0f%% of peak sgemm\n", T / fwd, fwd,
              fwd_flops / fwd / 1e9, 100.0 * fwd_flops / fwd / 1e9 / peak);
      printf ("  forward + backward: %8.0f tokens/s  %.3f s  %6.1f GFLOP/s = %3.0f%% of peak sgemm\n", T / both, both,
              (fwd_flops + bwd_flops) / both / 1e9, 100.0 * (fwd_flops + bwd_flops) / both / 1e9 / peak);
      g_free (x);
      g_free (y);
      lp_trainer_free (tr);
      lp_model_unref (m);
      lp_backend_unref (be);
    }
  return 0;
}
