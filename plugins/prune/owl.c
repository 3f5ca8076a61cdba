/* The OWL layer profile for the calibrated passes (Wanda, SparseGPT):
 * outlier ratios from Wanda's metric on the unpruned model (Yin et al. 2024
 * use that metric for both). */
#include "config.h"

#include "prune-common.h"

/* OWL's layer scores: Wanda's metric on the unpruned model's statistics. */
static gboolean
owl_score (gpointer user_data, const LpTensor *t, const float *values, float *scores, GError **error)
{
  const LpActStats *e = lp_stats_lookup (user_data, t->name);
  if (e == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "owl: tensor %s: expected a linear weight with calibration "
                    "statistics, found none (hint: targets= linear weights only)", t->name);
      return FALSE;
    }
  lp_wanda_scores (values, lp_tensor_n_rows (t), lp_tensor_row_length (t), e->sum_sq, scores);
  return TRUE;
}

gboolean
prune_owl_profile (PruneJob *job, GError **error)
{
  if (lp_pass_context_get_enum (job->ctx, "profile") == 0)
    return TRUE;
  LpCalibration *cal = lp_pass_context_get_calibration (job->ctx, error);
  if (cal == NULL)
    return FALSE;
  LpModel *input = lp_pass_context_get_input_model (job->ctx, "input");
  g_autoptr (LpStats) stats = lp_stats_collect (input, cal, lp_pass_context_get_backend (job->ctx), FALSE, error);
  return stats != NULL && prune_job_profile (job, input, owl_score, stats, error);
}

