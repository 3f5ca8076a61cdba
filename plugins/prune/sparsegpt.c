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
  /* lp_obs_prepare's factor of the input below, shared by its weights
   * (they come one after another: lp_layerwise_run). */
  int factor_layer, factor_in;
  float *U;          /* [n, n] */
  gboolean *dead;    /* [n] */
} SparseGPTPass;

static void
factor_clear (SparseGPTPass *p)
{
  g_clear_pointer (&p->U, g_free);
  g_clear_pointer (&p->dead, g_free);
}

/* U and dead of the input `stats` describes, made when it is not the last one's. */
static gboolean
factor_of (SparseGPTPass *p, const LpActStats *stats, GError **error)
{
  if (p->U != NULL && p->factor_layer == stats->layer && p->factor_in == (int) stats->which)
    return TRUE;
  factor_clear (p);
  int n = stats->n;
  /* The Hessian is shared by the weights of one input (q/k/v): factor a copy. */
  p->U = g_memdup2 (stats->hessian, (gsize) n * n * sizeof (float));
  p->dead = g_new0 (gboolean, n);
  if (!lp_obs_prepare (p->be, n, p->U, p->damp, p->dead, NULL, error))
    {
      factor_clear (p);
      return FALSE;
    }
  p->factor_layer = stats->layer;
  p->factor_in = (int) stats->which;
  return TRUE;
}

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
  g_autofree guint8 *pruned = g_new (guint8, (gsize) rows * n);
  LpSparseGPTOptions o = { prune_job_sparsity_for (p->job, weight->name), p->job->pattern, p->block_size, p->damp };
  double loss = 0.0;
  if (!factor_of (p, stats, error) || !lp_sparsegpt_prune_factored (p->be, rows, n, v, p->U, p->dead, &o, pruned, &loss, error))
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
                      lp_pass_context_get_float (ctx, "damp"), -1, -1, NULL, NULL };
  gboolean ok = prune_job_init (&job, ctx, "sparsegpt", error) && prune_job_check_input (&job, error)
                && prune_owl_profile (&job, error)
                && lp_layerwise_run (ctx, job.work, LP_CALIB_HESSIAN, job.targets, job.ignore, sparsegpt_weight, &p,
                                     error)
                && prune_job_publish (&job, error);
  factor_clear (&p);
  prune_job_clear (&job);
  return ok;
}
