/* factorize.svd: the truncated SVD of each targeted weight, W ≈ A B with
 * A = U_R Σ_R^1/2, B = Σ_R^1/2 V_R^T (lowrank.h); no data.  With ratio=
 * every weight keeps the same fraction of its parameters. */
#include "config.h"

#include "factorize.h"

static double
plain_split (const LpSvd *svd, gpointer user_data, int r, float *a, float *b)
{
  return lp_svd_factors (svd, r, a, b);
}

static gboolean
svd_task (gpointer user_data, FactorizeTask *task, GError **error)
{
  FactorizeJob *job = user_data;
  LpLowRankOptions o = job->opt;
  o.seed ^= g_str_hash (task->name);
  g_autoptr (LpSvd) svd = lp_svd_new (lp_pass_context_get_backend (job->ctx), task->n, task->k, task->values,
                                      factorize_task_sketch_rank (job, task), &o, error);
  return svd != NULL && factorize_task_finish (job, task, svd, plain_split, NULL, error);
}

gboolean
factorize_svd_run (LpPassContext *ctx, GError **error)
{
  FactorizeJob job;
  if (!factorize_job_init (&job, ctx, "svd", error))
    return FALSE;
  LpModel *input = lp_pass_context_get_input_model (ctx, "input");
  g_autoptr (GPtrArray) names = factorize_job_names (&job, input, -1);
  g_autoptr (GPtrArray) tasks = g_ptr_array_new_with_free_func ((GDestroyNotify) factorize_task_free);
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < names->len; i++)
    {
      FactorizeTask *t = factorize_task_new (&job, input, names->pdata[i], error);
      ok = t != NULL;
      if (ok)
        g_ptr_array_add (tasks, t);
    }
  ok = ok && factorize_run_tasks (&job, tasks, svd_task, &job, error);
  for (guint i = 0; ok && i < tasks->len; i++)
    factorize_job_apply (&job, tasks->pdata[i]);
  ok = ok && factorize_job_publish (&job, error);
  factorize_job_clear (&job);
  return ok;
}
