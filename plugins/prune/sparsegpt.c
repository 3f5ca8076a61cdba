/* prune.sparsegpt: SparseGPT (Frantar & Alistarh 2023) for every targeted
 * linear weight, against the Hessian of its input on the calibration data
 * (lp_layerwise_run; the layer math is lp_sparsegpt_prune in the library). */
#include "config.h"

#include <string.h>

#include "prune-common.h"
#include "prune-passes.h"

typedef struct {
  PruneJob *job;
  LpBackend *be;
  int block_size;
  double damp;
} SparseGPTPass;

static gboolean
sparsegpt_weight (gpointer user_data, LpTensor *weight, const LpActStats *stats, LpTensor **replacement,
                  GError **error)
{
  SparseGPTPass *p = user_data;
  g_autofree float *v = prune_job_values (p->job, weight, FALSE, error);
  if (v == NULL)
    return FALSE;
  int rows = (int) lp_tensor_n_rows (weight), n = (int) lp_tensor_row_length (weight);
  g_return_val_if_fail (n == stats->n && stats->hessian != NULL, FALSE);
  /* The Hessian is shared by the weights of one input (q/k/v): work on a copy. */
  g_autofree float *H = g_memdup2 (stats->hessian, (gsize) n * n * sizeof (float));
  g_autofree float *orig = g_memdup2 (v, (gsize) rows * n * sizeof (float));
  g_autofree guint8 *pruned = g_new (guint8, (gsize) rows * n);
  LpSparseGPTOptions o = { prune_job_sparsity_for (p->job, weight->name), p->job->pattern, p->block_size, p->damp };
  double loss = 0.0;
  if (!lp_sparsegpt_prune (p->be, rows, n, v, H, &o, pruned, &loss, error))
    return FALSE; /* lp_layerwise_run names the tensor */
  lp_pass_context_log (p->job->ctx, LP_LOG_DEBUG, "%s: OBS loss %g", weight->name, loss);
  *replacement = prune_job_make_tensor (p->job, weight, v, pruned, error);
  return *replacement != NULL;
}

gboolean
prune_sparsegpt_run (LpPassContext *ctx, GError **error)
{
  PruneJob job;
  SparseGPTPass p = { &job, lp_pass_context_get_backend (ctx), (int) lp_pass_context_get_int (ctx, "block_size"),
                      lp_pass_context_get_float (ctx, "damp") };
  gboolean ok = prune_job_init (&job, ctx, "sparsegpt", error) && prune_job_check_input (&job, error)
                && prune_owl_profile (&job, error)
                && lp_layerwise_run (ctx, job.work, LP_CALIB_HESSIAN, job.targets, job.ignore, sparsegpt_weight, &p,
                                     error)
                && prune_job_publish (&job, error);
  prune_job_clear (&job);
  return ok;
}
