/* bench-vulkan, part 4: a whole model's tokens/s on the CPU and on the
 * device, stories260K when ../shared has it (LLMPRESS_SHARED_DIR), else a
 * synthetic model of the same shape:
 *   forward            lp_forward_logits on one window (the forward pass
 *                      evaluation runs: a graph a block, weights resident);
 *   forward+backward   the trainer's gradients (train.h) for every block
 *                      weight: lp_trainer_accumulate_e2e (cross-entropy and
 *                      KL against the model's own logits, alpha 0.5: a graph
 *                      a block forward, then a graph a block recomputed and
 *                      differentiated), gradients accumulated on the backend;
 *   train step         the same and lp_trainer_step (AdamW).
 * Median of 3 runs after a warm-up (pipelines compiled, weights uploaded). */
#include "config.h"

#include <stdio.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

#define REPS 3

/* Median tokens/s of the forward pass (logits of T tokens). */
static double
forward_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpForward) fw = lp_forward_new (m, be, &error);
  g_autofree float *logits = g_new (float, (gsize) T * lp_model_config (m)->n_vocab);
  double t[REPS];
  for (int r = -1; r < REPS; r++)
    {
      double t0 = now ();
      if (fw == NULL || !lp_forward_logits (fw, toks, T, NULL, logits, &error))
        g_error ("forward: %s", error->message);
      if (r >= 0)
        t[r] = now () - t0;
    }
  return T / median (t, REPS);
}

/* Median tokens/s of the trainer over T tokens: its gradients alone
 * (accumulate_e2e: forward, then each block recomputed and differentiated)
 * or a whole step (and AdamW). */
static double
trainer_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T, gboolean step)
{
  g_autoptr (GError) error = NULL;
  gint64 V = lp_model_config (m)->n_vocab;
  g_autofree float *teacher = g_new (float, (gsize) T * V);
  g_autoptr (LpForward) fw = lp_forward_new (m, be, &error);
  if (fw == NULL || !lp_forward_logits (fw, toks, T, NULL, teacher, &error))
    g_error ("teacher: %s", error->message);
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, be, &o, &error);
  if (tr == NULL)
    g_error ("trainer: %s", error->message);
  LpTeacherLogits tl = { .logits = teacher };
  double t[REPS];
  for (int r = -1; r < REPS; r++)
    {
      double t0 = now ();
      if (!lp_trainer_accumulate_e2e (tr, toks, toks + 1, T, &tl, 1.0, 0.5, 1.0, NULL, &error)
          || (step && !lp_trainer_step (tr, 1e-4, 1.0, NULL, &error)))
        g_error ("train step: %s", error->message);
      if (r >= 0)
        t[r] = now () - t0;
    }
  return T / median (t, REPS);
}

static double
gradients_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T)
{
  return trainer_tps (be, m, toks, T, FALSE);
}

static double
step_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T)
{
  return trainer_tps (be, m, toks, T, TRUE);
}

typedef double (*TokensPerS) (LpBackend *be, LpModel *m, const gint32 *toks, int T);

/* One line: the pass's tokens/s on the CPU and on the device. */
static void
print_row (const char *label, TokensPerS tps, LpBackend *cpu, LpBackend *vk, LpModel *m, const gint32 *toks, int T)
{
  printf ("%-24s %12.0f", label, tps (cpu, m, toks, T));
  fflush (stdout);
  if (vk != NULL)
    printf (" %12.0f\n", tps (vk, m, toks, T));
  else
    printf (" %12s\n", "-");
  fflush (stdout);
}

void
bench_model (LpBackend *cpu, LpBackend *vk)
{
  g_autoptr (GError) error = NULL;
  const char *dir = g_getenv ("LLMPRESS_SHARED_DIR");
  g_autofree char *path = g_build_filename (dir && *dir ? dir : "../shared", "models", "stories260K",
                                            "stories260K-f32.gguf", NULL);
  g_autoptr (LpModel) m = NULL;
  const char *what = "stories260K";
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    m = lp_model_load (path, NULL, &error);
  if (m == NULL)
    {
      LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
      o.n_layers = 5;
      m = lp_model_synth (&o, &error);
      what = "synthetic (stories260K's shape; no ../shared)";
    }
  if (m == NULL)
    g_error ("%s", error->message);
  const int T = 512;
  const LpModelConfig *c = lp_model_config (m);
  g_autofree gint32 *toks = g_new (gint32, T + 1);
  for (int i = 0; i <= T; i++)
    toks[i] = (gint32) ((i * 37 + 11) % c->n_vocab);
  printf ("\nmodel: %s, D %" G_GINT64_FORMAT ", L %" G_GINT64_FORMAT ", %d tokens a window\n", what, c->dim,
          c->n_layers, T);
  printf ("%-24s %12s %12s   (tokens/s)\n", "pass", "CPU", "Vulkan");
  print_row ("forward", forward_tps, cpu, vk, m, toks, T);
  print_row ("forward+backward", gradients_tps, cpu, vk, m, toks, T);
  print_row ("train step", step_tps, cpu, vk, m, toks, T);
}
