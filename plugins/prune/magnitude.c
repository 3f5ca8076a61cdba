/* prune.magnitude: drop the weights of smallest |W|, per tensor (the
 * classic layer-wise baseline of the Wanda and SparseGPT papers), per row,
 * or in N:M groups.  Needs no calibration data. */
#include "config.h"

#include <math.h>

#include "prune-common.h"
#include "prune-passes.h"

static gboolean
magnitude_score (gpointer user_data, const LpTensor *t, const float *values, float *scores, GError **error)
{
  gint64 n = lp_tensor_n_elements (t);
  for (gint64 i = 0; i < n; i++)
    scores[i] = fabsf (values[i]);
  return TRUE;
}

static gboolean
prune_one (PruneJob *job, LpMaskScope scope, LpTensor *t, GError **error)
{
  g_autofree float *v = prune_job_values (job, t, TRUE, error);
  if (v == NULL)
    return FALSE;
  gint64 n = lp_tensor_n_elements (t), rows = lp_tensor_n_rows (t);
  g_autofree float *scores = g_new (float, n);
  g_autofree guint8 *pruned = g_new (guint8, n);
  magnitude_score (NULL, t, v, scores, NULL);
  lp_prune_select (scores, rows, n / MAX (rows, 1), prune_job_sparsity_for (job, t->name), scope, &job->pattern,
                   pruned);
  g_autoptr (LpTensor) out = prune_job_make_tensor (job, t, v, pruned, error);
  if (out == NULL)
    return FALSE;
  lp_model_set_tensor (job->work, out);
  return TRUE;
}

gboolean
prune_magnitude_run (LpPassContext *ctx, GError **error)
{
  PruneJob job;
  gboolean ok = prune_job_init (&job, ctx, "magnitude", error);
  LpModel *input = lp_pass_context_get_input_model (ctx, "input");
  LpMaskScope scope = lp_pass_context_get_enum (ctx, "scope") == 0 ? LP_MASK_PER_TENSOR : LP_MASK_PER_ROW;
  ok = ok && prune_job_profile (&job, input, magnitude_score, NULL, error);
  guint n = lp_model_n_tensors (input);
  for (guint i = 0; ok && i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (input, i);
      if (prune_job_wants (&job, t->name))
        ok = prune_one (&job, scope, t, error) && !prune_check_cancelled (ctx, error);
      lp_pass_context_progress (ctx, i + 1, n, "tensors");
    }
  ok = ok && prune_job_publish (&job, error);
  prune_job_clear (&job);
  return ok;
}
