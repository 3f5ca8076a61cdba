/* prune.wanda: Wanda (Sun et al. 2023), pruning by |W[r,j]| * ||X_j||_2 with
 * the input norms measured on the calibration data, block by block
 * (lp_layerwise_run: in sequential mode each block sees the pruned blocks
 * before it, as the reference code does), per output row or in N:M groups. */
#include "config.h"

#include "prune-common.h"
#include "prune-passes.h"

typedef struct {
  PruneJob *job;
  LpMaskScope scope;
} Wanda;

static gboolean
wanda_weight (gpointer user_data, LpTensor *weight, const LpActStats *stats, LpTensor **replacement,
              GError **error)
{
  Wanda *w = user_data;
  g_autofree float *v = prune_job_values (w->job, weight, FALSE, error);
  if (v == NULL)
    return FALSE;
  gint64 rows = lp_tensor_n_rows (weight), cols = lp_tensor_row_length (weight);
  g_return_val_if_fail (cols == stats->n, FALSE);
  g_autofree float *scores = g_new (float, rows * cols);
  g_autofree guint8 *pruned = g_new (guint8, rows * cols);
  lp_wanda_scores (v, rows, cols, stats->sum_sq, scores);
  lp_prune_select (scores, rows, cols, prune_job_sparsity_for (w->job, weight->name), w->scope, &w->job->pattern,
                   pruned);
  *replacement = prune_job_make_tensor (w->job, weight, v, pruned, error);
  return *replacement != NULL;
}

gboolean
prune_wanda_run (LpPassContext *ctx, GError **error)
{
  PruneJob job;
  Wanda w = { &job, lp_pass_context_get_enum (ctx, "scope") == 0 ? LP_MASK_PER_TENSOR : LP_MASK_PER_ROW };
  gboolean ok = prune_job_init (&job, ctx, "wanda", error) && prune_job_check_input (&job, error)
                && prune_owl_profile (&job, error)
                && lp_layerwise_run (ctx, job.work, LP_CALIB_CHANNEL_STATS, job.targets, job.ignore, wanda_weight, &w,
                                     error)
                && prune_job_publish (&job, error);
  prune_job_clear (&job);
  return ok;
}
