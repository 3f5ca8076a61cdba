/* distill.teacher: the teacher's next-token distributions on the
 * calibration samples, kept as their top-k (logits.h), computed once and
 * cached as an artifact of their own, so any number of students in a spec
 * distill from them (distill.recover's teacher_logits=) without running
 * the teacher again.
 *
 * The samples are the pipeline's calibration samples, the same windows a
 * student's recover trains on (lp_logits_check_calibration says so there);
 * the temperature is stored with them, and a student must train at it.
 * Below the pass, what a student's pass calls to take them as an input. */
#include "config.h"

#include <math.h>

#include "teacher-pass.h"

static const LpParamSpec teacher_params[] = {
  { .name = "topk", .type = LP_PARAM_INT, .default_value = "64", .min = 1, .max = G_MAXINT32,
    .help = "next tokens kept a position (the rest of the mass is one bucket); at most the vocabulary size",
    .flags = LP_PARAM_RANGE },
  { .name = "temperature", .type = LP_PARAM_FLOAT, .default_value = "1", .min = 0.01, .max = 100,
    .help = "temperature T of the stored log-probabilities (log softmax (z / T)): the students distill at it",
    .flags = LP_PARAM_RANGE },
  { .name = NULL }
};

static const LpInputSpec teacher_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the teacher (e.g. the uncompressed model)" },
  { .name = NULL }
};

static gboolean
teacher_run (LpPassContext *ctx, GError **error)
{
  LpModel *teacher = lp_pass_context_get_input_model (ctx, "input");
  const char *node = lp_pass_context_node_name (ctx);
  gint64 k = lp_pass_context_get_int (ctx, "topk"), V = lp_model_config (teacher)->n_vocab;
  double tau = lp_pass_context_get_float (ctx, "temperature");
  if (k > V)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: topk: expected at most the teacher's vocabulary size %" G_GINT64_FORMAT
                    ", found %" G_GINT64_FORMAT, node, V, k);
      return FALSE;
    }
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  int N = lp_calibration_n_samples (cal), L = lp_calibration_seq_len (cal);
  g_autofree char *digest = lp_model_vocab_digest (teacher);
  g_autoptr (LpLogits) lg = lp_logits_new (N, L, (int) k, V, tau, digest, error);
  g_autoptr (LpForward) fw = lg ? lp_forward_new (teacher, lp_pass_context_get_backend (ctx), error) : NULL;
  if (fw == NULL)
    return FALSE;
  lp_forward_set_device_memory (fw, lp_pass_context_get_device_memory (ctx));
  g_autofree float *logits = g_new (float, (gsize) L * V); /* one window's [L, V] */
  for (int i = 0; i < N; i++)
    {
      if (lp_pass_context_cancelled (ctx))
        {
          lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", node);
          return FALSE;
        }
      const gint32 *tokens = lp_calibration_sample (cal, i);
      if (!lp_forward_logits (fw, tokens, L, NULL, logits, error) || !lp_logits_set_window (lg, i, tokens, logits, error))
        return FALSE;
      lp_pass_context_progress (ctx, (guint64) i + 1, (guint64) N, "teacher logits");
    }
  lp_pass_context_log (ctx, LP_LOG_INFO, "teacher logits: %d windows of %d tokens, top %" G_GINT64_FORMAT
                       " at temperature %g: %.1f MiB", N, L, k, tau, (double) lp_logits_n_bytes (lg) / (1 << 20));
  g_autoptr (LpArtifact) a = lp_artifact_new_logits (lg);
  lp_pass_context_set_output (ctx, a);
  return TRUE;
}

gboolean
distill_teacher_logits_input (LpPassContext *ctx, LpModel *student, LpCalibration *cal, gboolean e2e,
                              gboolean temperature_set, double *temperature, LpLogits **out, GError **error)
{
  LpLogits *lg = lp_artifact_get_logits (lp_pass_context_get_input (ctx, "teacher_logits"));
  *out = NULL;
  if (lg == NULL)
    return TRUE;
  double tau = lp_logits_temperature (lg);
  if (!e2e)
    {
      lp_set_error (error, LP_ERROR_INVALID, "teacher_logits: expected objective=e2e (block-wise reads the teacher's "
                    "blocks), found objective=blockwise");
      return FALSE;
    }
  if (temperature_set && fabs (*temperature - tau) > 1e-6 * tau)
    {
      lp_set_error (error, LP_ERROR_INVALID, "temperature=%g: expected the teacher logits' %g (distill.teacher's "
                    "temperature=), found another", *temperature, tau);
      return FALSE;
    }
  if (!lp_logits_check_student (lg, student, error) || !lp_logits_check_calibration (lg, cal, error))
    return FALSE;
  *temperature = tau;
  *out = lg;
  return TRUE;
}

void
distill_teacher_logits_sample (LpLogits *lg, int sample, LpTeacherLogits *out)
{
  *out = (LpTeacherLogits) { .k = lp_logits_k (lg) };
  lp_logits_window (lg, sample, &out->topk_ids, &out->topk_logp, &out->rest_logp);
}

const LpPassInfo lp_distill_teacher_pass = {
  .name = "distill.teacher",
  .summary = "run the teacher once over the calibration samples and keep its top-k next-token log-probabilities "
  "(and the rest's) for any number of students",
  .params = teacher_params,
  .inputs = teacher_inputs,
  .output = LP_ARTIFACT_LOGITS,
  .flags = LP_PASS_USES_CALIBRATION | LP_PASS_USES_DEVICE,
  .run = teacher_run,
};
