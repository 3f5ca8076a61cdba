/* factorize.asvd: activation-aware SVD as SVD-LLM does it (lowrank.h):
 * each weight is whitened by the Cholesky factor of its input's Hessian on
 * the calibration data, so that truncation minimises the layer's output
 * error, then split as A = U_R Σ_R^1/2, B = Σ_R^1/2 V_R^T L^-1; with
 * update=true A is refitted to the undamped Hessian afterwards.
 *
 * ratio= is a global parameter budget (allocation=relative, the default): a
 * first calibration pass measures every weight's whitened spectrum, and
 * lp_lowrank_allocate hands out components greedily across all layers,
 * the largest σ^2 per parameter first, until the budget is spent.  A
 * whitened σ^2 is exactly the squared output error (summed over the
 * calibration tokens) that dropping the component adds; `relative` divides
 * it by the layer's whole output energy (the sum of its whitened σ^2), so
 * that layers whose outputs have different scales (q and k feed a softmax,
 * gate a SiLU, o and down the residual stream) compare by the fraction of
 * their output they lose; `output` compares the absolute errors.  On
 * stories260K at ratio=0.8 (specs/factorize.ini) relative gave perplexity
 * 26.7, uniform (every weight the same fraction, SVD-LLM's own setting)
 * 29.9, output 84.8: raw output errors overweight the layers of large
 * outputs (q, k, v kept dense, the FFN starved).  The second pass
 * factorizes each block with the ranks so chosen, the blocks seeing the
 * outputs of the blocks already factorized in sequential calibration mode.
 * rank= and energy= are per weight and need the second pass only. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "factorize.h"

const char *const asvd_allocations[] = { "relative", "output", "uniform", NULL };
enum { ALLOCATION_RELATIVE, ALLOCATION_OUTPUT, ALLOCATION_UNIFORM };

typedef struct {
  FactorizeJob *job;
  LpModel *model;          /* the model the block's weights are read from */
  double damp;
  gboolean update;
  GHashTable *names;       /* the targeted weights */
  GHashTable *alloc;       /* name -> allocated rank + 1 (ratio=), or NULL */
  GPtrArray *spectra;      /* the first pass's tasks (their spectra) */
  gboolean measuring;      /* the first pass */
  int allocation;          /* ALLOCATION_* */
  guint64 done, total;
} AsvdPass;

/* What the split needs beyond the SVD. */
typedef struct {
  const AsvdPass *p;
  const FactorizeTask *task;
  const float *L;
} AsvdSplit;

/* A, B by SVD-LLM; with update, A refitted to the undamped Hessian (kept
 * as it was where that system is singular). */
static double
asvd_split (const LpSvd *svd, gpointer user_data, int r, float *a, float *b)
{
  AsvdSplit *s = user_data;
  double err = lp_asvd_factors (svd, s->L, r, a, b);
  if (!s->p->update)
    return err;
  const FactorizeTask *t = s->task;
  g_autofree float *refit = g_new (float, (gsize) t->n * r);
  g_autoptr (GError) error = NULL;
  if (!lp_lowrank_update_a (t->n, t->k, r, t->values, t->hessian, b, refit, &error))
    {
      lp_pass_context_log (s->p->job->ctx, LP_LOG_WARNING, "%s: %s; A kept as SVD-LLM gives it", t->name,
                           error->message);
      return err;
    }
  double before = lp_lowrank_output_error (t->n, t->k, r, t->values, a, b, t->hessian);
  double after = lp_lowrank_output_error (t->n, t->k, r, t->values, refit, b, t->hessian);
  lp_pass_context_log (s->p->job->ctx, LP_LOG_DEBUG, "%s: update: output error %.6g -> %.6g", t->name, before, after);
  if (after < before)
    memcpy (a, refit, sizeof (float) * t->n * r);
  return err;
}

/* One weight: whiten, decompose; in the first pass keep the spectrum, in
 * the second the factors. */
static gboolean
asvd_task (gpointer user_data, FactorizeTask *task, GError **error)
{
  AsvdPass *p = user_data;
  FactorizeJob *job = p->job;
  if (task->rank == 0)
    return TRUE; /* allocated dense */
  g_autofree float *L = lp_whitening_new (NULL, task->k, task->hessian, p->damp, error);
  if (L == NULL)
    return FALSE;
  LpLowRankOptions o = job->opt;
  o.seed ^= g_str_hash (task->name);
  int hint = p->measuring ? MAX (lp_lowrank_max_saving_rank (task->n, task->k), 1) : factorize_task_sketch_rank (job, task);
  g_autoptr (LpSvd) svd = lp_asvd_new (lp_pass_context_get_backend (job->ctx), task->n, task->k, task->values, L, hint,
                                       &o, error);
  if (svd == NULL)
    return FALSE;
  if (p->measuring)
    {
      task->spectrum_s = g_memdup2 (svd->s, sizeof (float) * svd->m);
      task->spectrum = (LpRankLayer) { task->n, task->k, svd->m, task->spectrum_s, svd->total_sq };
      return TRUE;
    }
  AsvdSplit split = { p, task, L };
  return factorize_task_finish (job, task, svd, asvd_split, &split, error);
}

/* The block's targeted weights, in forward order, each with its input's Hessian. */
static gboolean
block_tasks (AsvdPass *p, int layer, LpActStats *stats, GPtrArray *tasks, GError **error)
{
  for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
    for (const char *const *c = lp_linear_input_consumers ((LpLinearInput) in); *c; c++)
      {
        g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, *c);
        if (!g_hash_table_contains (p->names, name))
          continue;
        FactorizeTask *t = factorize_task_new (p->job, p->model, name, error);
        if (t == NULL)
          return FALSE;
        g_ptr_array_add (tasks, t);
        g_return_val_if_fail (stats[in].hessian != NULL && stats[in].n == t->k, FALSE);
        t->hessian = stats[in].hessian;
        if (p->alloc)
          t->rank = GPOINTER_TO_INT (g_hash_table_lookup (p->alloc, name)) - 1;
      }
  return TRUE;
}

static gboolean
on_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  AsvdPass *p = user_data;
  g_autoptr (GPtrArray) tasks = g_ptr_array_new_with_free_func ((GDestroyNotify) factorize_task_free);
  if (!block_tasks (p, layer, stats, tasks, error) || !factorize_run_tasks (p->job, tasks, asvd_task, p, error))
    return FALSE;
  for (guint i = 0; i < tasks->len; i++)
    {
      FactorizeTask *t = tasks->pdata[i];
      if (p->measuring)
        {
          t->hessian = NULL; /* the block's statistics go away */
          g_clear_pointer (&t->values, g_free);
          g_ptr_array_add (p->spectra, t);
          tasks->pdata[i] = NULL;
        }
      else
        factorize_job_apply (p->job, t);
      lp_pass_context_progress (p->job->ctx, ++p->done, p->total, t->name);
    }
  return TRUE;
}

/* ratio=: the first pass (spectra of the unfactorized model) and the
 * allocation of the budget over every weight. */
static gboolean
allocate (AsvdPass *p, LpCalibration *cal, LpModel *input, double budget, GError **error)
{
  g_autoptr (LpModel) probe = lp_model_derive (input);
  p->model = probe;
  p->measuring = TRUE;
  p->spectra = g_ptr_array_new_with_free_func ((GDestroyNotify) factorize_task_free);
  if (!lp_calibration_run (cal, input, probe, lp_pass_context_get_backend (p->job->ctx), LP_CALIB_HESSIAN, on_block, p,
                           error))
    return FALSE;
  guint n = p->spectra->len;
  g_autofree LpRankLayer *layers = g_new (LpRankLayer, n);
  g_autofree int *rank = g_new (int, n);
  for (guint i = 0; i < n; i++)
    {
      FactorizeTask *t = p->spectra->pdata[i];
      /* relative: σ^2 as a fraction of the layer's output energy (a zero weight has none to lose) */
      if (p->allocation == ALLOCATION_RELATIVE && t->spectrum.total_sq > 0)
        {
          double f = 1.0 / sqrt (t->spectrum.total_sq);
          for (int j = 0; j < t->spectrum.m; j++)
            t->spectrum_s[j] *= (float) f;
          t->spectrum.total_sq = 1.0;
        }
      layers[i] = t->spectrum;
    }
  double used = 0.0;
  if (!lp_lowrank_allocate (layers, (int) n, budget, rank, &used, error))
    return FALSE;
  p->alloc = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < n; i++)
    g_hash_table_insert (p->alloc, g_strdup (((FactorizeTask *) p->spectra->pdata[i])->name),
                         GINT_TO_POINTER (rank[i] + 1));
  lp_pass_context_log (p->job->ctx, LP_LOG_INFO, "asvd: %.0f of a budget of %.0f parameters allocated over %u weights",
                       used, budget, n);
  p->measuring = FALSE;
  p->done = 0;
  return TRUE;
}

/* The budget of ratio=, checked before any calibration runs: rank 1 in
 * every weight must fit. */
static gboolean
check_budget (FactorizeJob *job, LpModel *input, GPtrArray *names, double *budget, GError **error)
{
  double dense = 0.0, least = 0.0;
  for (guint i = 0; i < names->len; i++)
    {
      LpTensor *t = lp_model_tensor (input, names->pdata[i]);
      int n = (int) lp_tensor_n_rows (t), k = (int) lp_tensor_row_length (t);
      dense += (double) n * k;
      least += lp_lowrank_max_saving_rank (n, k) >= 1 ? n + k : (double) n * k;
    }
  *budget = job->choice.ratio * dense;
  if (least > *budget)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "ratio=%g: the budget cannot be met: %.0f of the %.0f parameters of %u weights, and rank 1 in each "
                    "takes %.0f (ratio %.4g at least)", job->choice.ratio, *budget, dense, names->len, least, least / dense);
      return FALSE;
    }
  return TRUE;
}

gboolean
factorize_asvd_run (LpPassContext *ctx, GError **error)
{
  FactorizeJob job;
  if (!factorize_job_init (&job, ctx, "asvd", error))
    return FALSE;
  AsvdPass p = { &job, NULL, lp_pass_context_get_float (ctx, "damp"), lp_pass_context_get_bool (ctx, "update") };
  p.allocation = lp_pass_context_get_enum (ctx, "allocation");
  job.global = job.choice.rule == LP_RANK_RATIO && p.allocation != ALLOCATION_UNIFORM;
  p.names = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  LpModel *input = lp_pass_context_get_input_model (ctx, "input");
  g_autoptr (GPtrArray) names = factorize_job_names (&job, input, -1);
  gboolean ok = TRUE;
  /* Every weight checked (finite, its rank rule) before calibration runs. */
  for (guint i = 0; ok && i < names->len; i++)
    {
      FactorizeTask *t = factorize_task_new (&job, input, names->pdata[i], error);
      ok = t != NULL;
      factorize_task_free (t);
      g_hash_table_add (p.names, g_strdup (names->pdata[i]));
    }
  p.total = names->len;
  double budget = 0.0;
  LpCalibration *cal = NULL;
  if (ok && names->len == 0)
    ok = factorize_job_publish (&job, error); /* fails, naming the patterns */
  else if (ok)
    {
      ok = (!job.global || check_budget (&job, input, names, &budget, error))
           && (cal = lp_pass_context_get_calibration (ctx, error)) != NULL
           && (job.choice.rule != LP_RANK_RATIO || !job.global || allocate (&p, cal, input, budget, error));
      p.model = job.work;
      ok = ok
           && lp_calibration_run (cal, input, job.work, lp_pass_context_get_backend (ctx), LP_CALIB_HESSIAN, on_block, &p,
                                  error)
           && factorize_job_publish (&job, error);
    }
  g_clear_pointer (&p.names, g_hash_table_unref);
  g_clear_pointer (&p.alloc, g_hash_table_unref);
  g_clear_pointer (&p.spectra, g_ptr_array_unref);
  factorize_job_clear (&job);
  return ok;
}
