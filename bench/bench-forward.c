/* make bench: forward-pass speed.
 *  1. Peak sgemm of this machine's OpenBLAS (4096^3), measured in the same run.
 *  2. The forward pass over T=512 tokens of a synthetic model with 7B-shaped
 *     layers (D 4096, F 11008, 32 heads, 2 layers, vocab 32000): achieved
 *     GFLOP/s and its fraction of the measured peak.
 *  3. Evaluation throughput on stories260K (when ../shared is present).
 * Prints figures; never fails on time.  Medians of several repetitions. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <cblas.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

int
main (int argc, char **argv)
{
  int reps = 5;
  double peak = bench_peak_sgemm (4096, reps);
  printf ("OpenBLAS %s, %d threads: sgemm 4096^3 peak %.1f GFLOP/s (median of %d)\n", openblas_get_corename (),
          openblas_get_num_threads (), peak, reps);

  LpSynthOptions so = LP_SYNTH_OPTIONS_INIT;
  so.dim = 4096;
  so.ffn_dim = 11008;
  so.n_layers = 2;
  so.n_heads = 32;
  so.n_kv_heads = 32;
  so.n_vocab = 32000;
  so.ctx_len = 4096;
  GError *error = NULL;
  LpModel *m = lp_model_synth (&so, &error);
  if (m == NULL)
    {
      fprintf (stderr, "bench: %s\n", error->message);
      return 1;
    }
  LpForward *fw = lp_forward_new (m, NULL, &error);
  const int T = 512;
  gint32 *toks = g_new (gint32, T);
  for (int i = 0; i < T; i++)
    toks[i] = (i * 7919) % 32000;
  float *logits = g_new (float, (gsize) T * 32000);
  /* FLOPs: 2 per multiply-add of every linear layer and the head, plus
   * attention's two T x T products per head (causal: counted in full, as
   * the dense GEMMs compute them). */
  double D = 4096, F = 11008, L = 2, V = 32000;
  double flops = 2.0 * T * (L * (4 * D * D + 3 * D * F) + V * D) + L * 2.0 * 2.0 * T * T * D;
  double t[8];
  lp_forward_logits (fw, toks, T, NULL, logits, NULL); /* warm-up */
  for (int r = 0; r < reps; r++)
    {
      double t0 = now ();
      lp_forward_logits (fw, toks, T, NULL, logits, NULL);
      t[r] = now () - t0;
    }
  double secs = median (t, reps);
  double gflops = flops / secs / 1e9;
  printf ("forward, 7B-shaped layers (D 4096, F 11008, 32 heads, 2 layers, V 32000), T=%d: %.3f s, %.1f GFLOP/s = %.0f%% of peak sgemm\n",
          T, secs, gflops, 100.0 * gflops / peak);
  lp_forward_free (fw);
  lp_model_unref (m);
  g_free (logits);

  const char *shared = g_getenv ("LLMPRESS_SHARED_DIR");
  char *path = g_build_filename (shared ? shared : "../shared", "models/stories260K/stories260K-f32.gguf", NULL);
  char *data = g_build_filename (shared ? shared : "../shared", "data/tinystories-valid-head.tok512.u16", NULL);
  LpModel *s = g_file_test (path, G_FILE_TEST_EXISTS) ? lp_model_load (path, NULL, &error) : NULL;
  if (s != NULL)
    {
      GArray *ids = lp_tokens_load (data, s, &error);
      LpEvalOptions eo = { .ctx = 512, .max_windows = 100 };
      LpEvalResult r;
      lp_progress_set_quiet (TRUE);
      if (ids && lp_eval_run (s, (gint32 *) ids->data, ids->len, &eo, &r, &error))
        printf ("eval stories260K (ctx 512, %d windows): %.0f tokens/s, perplexity %.4f\n", r.n_windows,
                r.tokens_per_s, r.ppl);
      else
        printf ("eval stories260K: %s\n", error ? error->message : "failed");
    }
  else
    printf ("eval stories260K: skipped (%s)\n", error ? error->message : "../shared absent");
  return 0;
}
