/* make bench: GPTQ, SparseGPT and evaluation on SmolLM2-135M beside their
 * floors: the FLOPs each pass must compute, at the peak sgemm rate measured
 * in the same run.
 *
 *  1. Peak sgemm of this machine's OpenBLAS on a square product of the
 *     model's own size (F^3, F = 1536: its largest linear dimension),
 *     measured just before and just after each pass; its floor uses the
 *     mean of the two (on a shared machine the load changes during a
 *     pass of several minutes).
 *  2. GPTQ int4 g128 (damp 0.01, lazy blocks of 128) and SparseGPT 50%
 *     (block 128) of the dense model (the Q4_1 file dequantized) against
 *     N x L calibration tokens (default 32 x 512), sequential as the passes
 *     run it: per block, its forward over every sample with the Hessians
 *     X^T X of its four linear inputs, the OBS work of its seven weights,
 *     then the forward again through the compressed block (the next
 *     block's inputs).  Each twice: as `llmpress run` runs it
 *     (lp_calibration_run's choice: SmolLM2's samples per core, OpenBLAS
 *     switched to one thread), then with OpenBLAS's count chosen as it was
 *     at the start (every core, a sample at a time: OPENBLAS_NUM_THREADS
 *     set, or run -j N).  FLOPs counted:
 *       forward  2 x 2 T (linear parameters of a block) + 4 T^2 D per
 *                block and sample (attention's two T x T products counted
 *                in full, as the dense GEMMs compute them), twice per
 *                block; no head (the passes never score tokens);
 *       Hessian  T n (n + 1) per linear input (the lower triangle, ssyrk);
 *       OBS      per distinct input: Cholesky + triangular inverse 2 n^3 / 3;
 *                per weight [R, n]: the error feedback R n^2.
 *  3. Eval: perplexity over W windows of 512 tokens (default 8), forward
 *     with the head: 2 T (linear parameters + V D) + 4 T^2 D L per window;
 *     once with OpenBLAS on every core (a window at a time), once as
 *     `llmpress eval` runs it (SmolLM2: a window per core, OpenBLAS on one).
 * Token ids are deterministic (speed does not depend on them).  Set
 * LLMPRESS_BENCH_SAMPLES / LLMPRESS_BENCH_WINDOWS for shorter runs, and
 * LLMPRESS_BENCH_EVAL_ONLY=1 to run the eval alone (no GPTQ / SparseGPT).
 * Prints figures; never fails on time. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <cblas.h>

#include <llmpress/llmpress.h>

#include "../plugins/quantize/quantize.h"
#include "benchutil.h"

enum { PASS_GPTQ, PASS_SPARSEGPT };

typedef struct {
  int pass;
  LpModel *work;
  LpBackend *be;
  double obs_s;   /* wall time inside the OBS work (Cholesky + sweeps) */
  int blas_threads; /* OpenBLAS's count during the pass */
  GError *error;
} Job;

/* The dense f32 model of a quantized file: every tensor dequantized. */
static LpModel *
dense_of (LpModel *m, GError **error)
{
  LpModel *d = lp_model_derive (m);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      if (t->dtype == LP_DTYPE_F32)
        continue;
      LpTensor *f = lp_tensor_convert (t, LP_DTYPE_F32, error);
      if (f == NULL)
        {
          lp_model_unref (d);
          return NULL;
        }
      lp_model_set_tensor (d, f);
      lp_tensor_unref (f);
    }
  return d;
}

/* The factor of one input's Hessian, made once for all its weights, as
 * the passes do. */
typedef struct {
  QGptqFactor gptq;
  float *U;          /* SparseGPT's: lp_obs_prepare of H */
  gboolean *dead;
} Factor;

/* One weight, as quantize.gptq / prune.sparsegpt do it. */
static LpTensor *
compress_weight (Job *j, LpTensor *t, const LpActStats *s, Factor *f, GError **error)
{
  int rows = (int) lp_tensor_n_rows (t), n = (int) lp_tensor_row_length (t);
  g_autofree float *W = lp_tensor_dup_f32 (t, error);
  if (W == NULL)
    return NULL;
  if (j->pass == PASS_GPTQ)
    {
      QGrid grid = { LP_DTYPE_F32, 4, 128, FALSE, FALSE, FALSE };
      QGptqSettings st = { 0.01, 128, FALSE, FALSE };
      double loss;
      gint64 lost;
      return q_gptq_quantize_shared (j->be, &grid, &st, t, W, s->hessian, &f->gptq, &loss, &lost, error);
    }
  LpSparseGPTOptions o = LP_SPARSEGPT_OPTIONS_INIT;
  if (f->U == NULL)
    {
      f->U = g_memdup2 (s->hessian, (gsize) n * n * sizeof (float));
      f->dead = g_new0 (gboolean, n);
      if (!lp_obs_prepare (j->be, n, f->U, o.damp, f->dead, NULL, error))
        return NULL;
    }
  g_autofree guint8 *pruned = g_new (guint8, (gsize) rows * n);
  if (!lp_sparsegpt_prune_factored (j->be, rows, n, W, f->U, f->dead, &o, pruned, NULL, error))
    return NULL;
  return lp_tensor_new_pruned (t, W, pruned, error);
}

static void
factor_clear (Factor *f)
{
  q_gptq_factor_clear (&f->gptq);
  g_clear_pointer (&f->U, g_free);
  g_clear_pointer (&f->dead, g_free);
}

static gboolean
on_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  Job *j = user_data;
  double t0 = now ();
  j->blas_threads = openblas_get_num_threads ();
  for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
    {
      Factor f = { { 0 } };
      for (const char *const *c = lp_linear_input_consumers ((LpLinearInput) in); *c; c++)
        {
          g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, *c);
          LpTensor *rep = compress_weight (j, lp_model_tensor (j->work, name), &stats[in], &f, error);
          if (rep == NULL)
            {
              factor_clear (&f);
              return FALSE;
            }
          lp_model_set_tensor (j->work, rep);
          lp_tensor_unref (rep);
        }
      factor_clear (&f);
    }
  j->obs_s += now () - t0;
  return TRUE;
}

/* 2 x (multiply-adds) of a block's linear weights. */
static double
block_linear_flops (const LpModelConfig *c, double T)
{
  double D = c->dim, F = c->ffn_dim, A = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
  return 2.0 * T * (D * A + 2 * D * KV + A * D + 3 * D * F);
}

static double
attention_flops (const LpModelConfig *c, double T)
{
  return 4.0 * T * T * (double) (c->n_heads * c->head_dim);
}

/* FLOPs of the Hessians of one block over `tokens` (ssyrk: lower triangle). */
static double
hessian_flops (const LpModelConfig *c, double tokens)
{
  double D = c->dim, A = c->n_heads * c->head_dim, F = c->ffn_dim;
  return tokens * (D * (D + 1) + A * (A + 1) + D * (D + 1) + F * (F + 1));
}

/* FLOPs of one block's OBS work: a factorization per distinct input, the
 * error feedback R n^2 per weight. */
static double
obs_flops (const LpModelConfig *c)
{
  double D = c->dim, A = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, F = c->ffn_dim;
  double factor = 2.0 / 3.0 * (D * D * D + A * A * A + D * D * D + F * F * F);
  double feedback = (A + 2 * KV) * D * D + D * A * A + 2 * F * D * D + D * F * F;
  return factor + feedback;
}

/* The peak sgemm per second of CPU time (all threads), last measured by
 * peak_now: FLOPs over CPU seconds, which a loaded machine's waiting for
 * a core does not inflate as it does wall time. */
static double peak_cpu;

/* Peak sgemm GFLOP/s on F^3 now (median of 5); peak_cpu updated. */
static double
peak_now (const LpModelConfig *c)
{
  double n = (double) c->ffn_dim, c0 = bench_cpu_now ();
  double peak = bench_peak_sgemm ((int) c->ffn_dim, 5);
  peak_cpu = 6 * 2.0 * n * n * n / (bench_cpu_now () - c0) / 1e9; /* the warm-up and 5 products */
  return peak;
}

/* The mean of the peak before (*peak, updated to the one after) and after a pass. */
static double
peak_around (const LpModelConfig *c, double *peak)
{
  double before = *peak;
  *peak = peak_now (c);
  printf ("  peak sgemm before %.1f, after %.1f GFLOP/s: floor at their mean\n", before, *peak);
  return 0.5 * (before + *peak);
}

/* The pass as lp_calibration_run runs it, which is what `llmpress run`
 * does (as_run: a narrow model such as SmolLM2 switches OpenBLAS to one
 * thread for the call and spreads the samples over the cores, unless
 * OPENBLAS_NUM_THREADS chose the count); or with the count main chose
 * (lp_cpu_blas_threads_init: every core, one sample at a time, as under
 * OPENBLAS_NUM_THREADS=2 or run -j 2). */
static void
run_pass (const char *label, int pass, LpModel *dense, LpCalibration *cal, LpBackend *be, gboolean as_run,
          double *peak_io)
{
  const LpModelConfig *c = lp_model_config (dense);
  double L = c->n_layers, N = lp_calibration_n_samples (cal), T = lp_calibration_seq_len (cal);
  Job j = { pass, lp_model_derive (dense), be, 0, 0, NULL };
  bench_peak_rss_reset ();
  double t0 = now (), c0 = bench_cpu_now ();
  gboolean ok = lp_calibration_run (cal, dense, j.work, be, LP_CALIB_HESSIAN, on_block, &j, &j.error);
  double wall = now () - t0, cpu = bench_cpu_now () - c0;
  int pass_blas_threads = j.blas_threads;
  gboolean per_core = pass_blas_threads == 1 && lp_threads () > 1;
  double cpu_peak_before = peak_cpu, peak = peak_around (c, peak_io), cpu_peak = 0.5 * (cpu_peak_before + peak_cpu);
  if (!ok)
    {
      printf ("%s: %s\n", label, j.error->message);
      g_clear_error (&j.error);
      lp_model_unref (j.work);
      return;
    }
  double f_fwd = 2 * L * N * (block_linear_flops (c, T) + attention_flops (c, T));
  double f_hess = L * hessian_flops (c, N * T);
  double f_obs = L * obs_flops (c);
  double f = f_fwd + f_hess + f_obs, floor_s = f / (peak * 1e9);
  printf ("%s, %.0f x %.0f calibration tokens, OpenBLAS %d thread%s%s%s: %.1f s wall (OBS %.1f s, forward + Hessians "
          "%.1f s), %.1f CPU s, peak RSS %.0f MiB\n", label, N, T, pass_blas_threads,
          pass_blas_threads == 1 ? "" : "s", per_core ? " (samples per core)" : " (a sample at a time)",
          as_run ? " as llmpress run runs it" : "", wall, j.obs_s,
          wall - j.obs_s, cpu, bench_peak_rss_mib ());
  printf ("  FLOPs: forward %.0f G (twice per block) + Hessians %.0f G + OBS %.0f G = %.0f G\n", f_fwd / 1e9,
          f_hess / 1e9, f_obs / 1e9, f / 1e9);
  printf ("  floor at peak sgemm: %.1f s (forward %.1f + Hessians %.1f + OBS %.1f); measured / floor = %.2fx\n",
          floor_s, f_fwd / peak / 1e9, f_hess / peak / 1e9, f_obs / peak / 1e9, wall / floor_s);
  /* The same in CPU time: independent of how much of the machine others take. */
  printf ("  peak sgemm %.1f GFLOP per CPU second (mean of before and after): floor %.1f CPU s; CPU measured / floor "
          "= %.2fx\n", cpu_peak, f / (cpu_peak * 1e9), cpu / (f / (cpu_peak * 1e9)));
  fflush (stdout);
  lp_model_unref (j.work);
}

/* The eval, with OpenBLAS on every core and one window at a time, or
 * (per_core) as `llmpress eval` runs it: OpenBLAS's threads as
 * lp_eval_blas_threads says (1 for SmolLM2: a window per core). */
static void
run_eval (LpModel *dense, const gint32 *ids, gsize n_ids, int windows, gboolean per_core, double *peak_io)
{
  const LpModelConfig *c = lp_model_config (dense);
  LpEvalOptions eo = { .ctx = 512, .max_windows = windows };
  LpEvalResult r;
  GError *error = NULL;
  int blas_threads = openblas_get_num_threads ();
  if (per_core && lp_eval_blas_threads (dense) > 0)
    openblas_set_num_threads (lp_eval_blas_threads (dense));
  double t0 = now (), cpu_peak_before = peak_cpu, c0 = bench_cpu_now ();
  gboolean ok = lp_eval_run (dense, ids, n_ids, &eo, &r, &error);
  double wall = now () - t0, cpu = bench_cpu_now () - c0, T = r.ctx;
  int eval_blas_threads = openblas_get_num_threads ();
  openblas_set_num_threads (blas_threads);
  if (!ok)
    {
      printf ("eval: %s\n", error->message);
      g_clear_error (&error);
      return;
    }
  double peak = peak_around (c, peak_io), cpu_peak = 0.5 * (cpu_peak_before + peak_cpu);
  double per_window = c->n_layers * (block_linear_flops (c, T) + attention_flops (c, T))
                      + 2.0 * T * (double) c->n_vocab * (double) c->dim;
  double f = per_window * r.n_windows, floor_s = f / (peak * 1e9);
  printf ("eval, %d windows of %d, OpenBLAS %d thread%s%s: %.1f s wall (forward %.1f s), %.0f tokens/s\n", r.n_windows,
          r.ctx, eval_blas_threads, eval_blas_threads == 1 ? "" : "s", per_core ? " (as llmpress eval runs it)" : "",
          wall, r.seconds, r.tokens_per_s);
  printf ("  FLOPs: forward with head %.0f G; floor at peak sgemm %.1f s; measured / floor = %.2fx\n", f / 1e9,
          floor_s, wall / floor_s);
  /* The same in CPU time: independent of how much of the machine others take. */
  printf ("  CPU time %.1f s; peak sgemm %.1f GFLOP per CPU second (mean of before and after): floor %.1f CPU s; "
          "CPU measured / floor = %.2fx\n", cpu, cpu_peak, f / (cpu_peak * 1e9), cpu / (f / (cpu_peak * 1e9)));
  fflush (stdout);
}

static int
env_int (const char *name, int fallback)
{
  const char *v = g_getenv (name);
  return v && atoi (v) > 0 ? atoi (v) : fallback;
}

int
main (int argc, char **argv)
{
  const char *shared = g_getenv ("LLMPRESS_SHARED_DIR");
  g_autofree char *path = g_build_filename (shared ? shared : "../shared", "models/smollm2-135m",
                                            "SmolLM2-135M-Instruct.Q4_1.gguf", NULL);
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      printf ("bench-passes: skipped (%s absent)\n", path);
      return 0;
    }
  int N = env_int ("LLMPRESS_BENCH_SAMPLES", 32), L = 512, windows = env_int ("LLMPRESS_BENCH_WINDOWS", 8);
  lp_progress_set_quiet (TRUE);
  GError *error = NULL;
  g_autoptr (LpModel) q = lp_model_load (path, NULL, &error);
  g_autoptr (LpModel) dense = q ? dense_of (q, &error) : NULL;
  if (dense == NULL)
    {
      fprintf (stderr, "bench-passes: %s\n", error->message);
      return 1;
    }
  const LpModelConfig *c = lp_model_config (dense);
  /* Deterministic ids below the vocabulary, enough for every window. */
  gsize n_ids = (gsize) MAX (N, windows) * L + 1;
  g_autofree gint32 *ids = g_new (gint32, n_ids);
  for (gsize i = 0; i < n_ids; i++)
    ids[i] = (gint32) ((i * 7919 + 13) % (gsize) c->n_vocab);
  LpCalibOptions co = LP_CALIB_OPTIONS_INIT;
  co.n_samples = N;
  co.seq_len = L;
  g_autoptr (LpCalibration) cal = lp_calibration_new (ids, n_ids, 1, &co, &error);
  if (cal == NULL)
    {
      fprintf (stderr, "bench-passes: %s\n", error->message);
      return 1;
    }
  int blas_threads = openblas_get_num_threads ();
  double peak = peak_now (c);
  printf ("OpenBLAS %s, %d threads: sgemm %" G_GINT64_FORMAT "^3 peak %.1f GFLOP/s (median of 5)\n",
          openblas_get_corename (), openblas_get_num_threads (), c->ffn_dim, peak);
  fflush (stdout);
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  run_eval (dense, ids, n_ids, windows, FALSE, &peak);
  run_eval (dense, ids, n_ids, windows, TRUE, &peak);
  if (env_int ("LLMPRESS_BENCH_EVAL_ONLY", 0))
    return 0;
  /* As `llmpress run` runs them first; then with OpenBLAS's count chosen
   * (so calibration leaves it alone) as it was when this program started. */
  for (int as_run = 1; as_run >= 0; as_run--)
    {
      if (!as_run)
        lp_cpu_blas_threads_init (blas_threads);
      run_pass ("GPTQ int4 g128", PASS_GPTQ, dense, cal, be, as_run, &peak);
      run_pass ("SparseGPT 50%", PASS_SPARSEGPT, dense, cal, be, as_run, &peak);
    }
  return 0;
}
