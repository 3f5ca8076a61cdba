/* llmpress prune plugin — the pieces magnitude, Wanda and SparseGPT share. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "prune-common.h"

const char *const prune_profiles[] = { "uniform", "owl", NULL };

int
prune_tensor_layer (const char *name)
{
  int l, used = 0;
  if (sscanf (name, "blk.%d.%n", &l, &used) == 1 && used > 0 && l >= 0)
    return l;
  return -1;
}

gboolean
prune_check_cancelled (LpPassContext *ctx, GError **error)
{
  if (!lp_pass_context_cancelled (ctx))
    return FALSE;
  lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (ctx));
  return TRUE;
}

gboolean
prune_job_init (PruneJob *job, LpPassContext *ctx, const char *method, GError **error)
{
  memset (job, 0, sizeof *job);
  job->ctx = ctx;
  job->method = method;
  job->sparsity = lp_pass_context_get_float (ctx, "sparsity");
  job->targets = lp_pass_context_get_tensors (ctx, "targets");
  job->ignore = lp_pass_context_get_tensors (ctx, "ignore");
  if (!lp_sparsity_pattern_parse (lp_pass_context_get_string (ctx, "pattern"), &job->pattern, error)
      || !lp_sparsity_check (job->sparsity, "sparsity", error))
    return FALSE;
  if (job->pattern.m > 0)
    {
      /* N:M fixes the fraction; a different explicit one would be ignored silently. */
      double implied = lp_sparsity_pattern_fraction (&job->pattern, job->sparsity);
      if (lp_pass_context_param_is_set (ctx, "sparsity") && fabs (job->sparsity - implied) > 1e-9)
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "sparsity=%g with pattern=%d:%d: expected no sparsity= or %g (the pattern's own)",
                        job->sparsity, job->pattern.n, job->pattern.m, implied);
          return FALSE;
        }
      job->sparsity = implied;
      if (lp_pass_context_get_enum (ctx, "profile") != 0)
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "profile=owl with pattern=%d:%d: expected profile=uniform (an N:M pattern fixes every "
                        "layer's sparsity)", job->pattern.n, job->pattern.m);
          return FALSE;
        }
    }
  LpModel *input = lp_pass_context_get_input_model (ctx, "input");
  job->work = lp_model_derive (input);
  job->n_layers = (int) lp_model_config (input)->n_layers;
  job->layer_sparsity = g_new (double, MAX (job->n_layers, 1));
  for (int l = 0; l < job->n_layers; l++)
    job->layer_sparsity[l] = job->sparsity;
  return TRUE;
}

void
prune_job_clear (PruneJob *job)
{
  g_clear_pointer (&job->work, lp_model_unref);
  g_clear_pointer (&job->layer_sparsity, g_free);
}

gboolean
prune_job_wants (const PruneJob *job, const char *name)
{
  return lp_tensor_pattern_match (job->targets, name) && !lp_tensor_pattern_match (job->ignore, name);
}

double
prune_job_sparsity_for (const PruneJob *job, const char *name)
{
  int l = prune_tensor_layer (name);
  return l >= 0 && l < job->n_layers ? job->layer_sparsity[l] : job->sparsity;
}

float *
prune_job_values (const PruneJob *job, const LpTensor *t, gboolean named, GError **error)
{
  const char *name = named ? t->name : NULL;
  if (!lp_sparsity_pattern_check (&job->pattern, name, lp_tensor_row_length (t), error))
    return NULL;
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  if (v == NULL || !lp_values_check_finite (name, v, lp_tensor_n_elements (t), error))
    return NULL;
  return g_steal_pointer (&v);
}

gboolean
prune_job_check_input (const PruneJob *job, GError **error)
{
  LpModel *input = lp_pass_context_get_input_model (job->ctx, "input");
  for (guint i = 0; i < lp_model_n_tensors (input); i++)
    {
      LpTensor *t = lp_model_tensor_at (input, i);
      if (!prune_job_wants (job, t->name))
        continue;
      g_autofree float *v = prune_job_values (job, t, TRUE, error);
      if (v == NULL)
        return FALSE;
    }
  return TRUE;
}

/* OWL's outlier ratio of one layer: over the scores of all its targeted tensors. */
static gboolean
layer_outlier_ratio (PruneJob *job, LpModel *model, int layer, PruneScoreFunc score, gpointer user_data,
                     double *ratio, GError **error)
{
  g_autoptr (GArray) all = g_array_new (FALSE, FALSE, sizeof (float));
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if (!prune_job_wants (job, t->name) || prune_tensor_layer (t->name) != layer)
        continue;
      g_autofree float *v = prune_job_values (job, t, TRUE, error);
      if (v == NULL)
        return FALSE;
      gint64 n = lp_tensor_n_elements (t);
      guint at = all->len;
      g_array_set_size (all, at + (guint) n);
      if (!score (user_data, t, v, &g_array_index (all, float, at), error))
        return FALSE;
    }
  *ratio = lp_sparsity_outlier_ratio ((const float *) all->data, all->len, lp_pass_context_get_float (job->ctx, "owl_m"));
  return TRUE;
}

gboolean
prune_job_profile (PruneJob *job, LpModel *model, PruneScoreFunc score, gpointer user_data, GError **error)
{
  if (lp_pass_context_get_enum (job->ctx, "profile") == 0 || job->n_layers == 0)
    return TRUE;
  g_autofree double *ratio = g_new (double, job->n_layers);
  for (int l = 0; l < job->n_layers; l++)
    if (!layer_outlier_ratio (job, model, l, score, user_data, &ratio[l], error))
      return FALSE;
  double lambda = lp_pass_context_get_float (job->ctx, "owl_lambda");
  if (!lp_sparsity_owl (ratio, job->n_layers, job->sparsity, lambda, job->layer_sparsity, error))
    return FALSE;
  for (int l = 0; l < job->n_layers; l++)
    lp_pass_context_log (job->ctx, LP_LOG_INFO, "owl: layer %d outlier ratio %.4f%%, sparsity %.4f", l,
                         100.0 * ratio[l], job->layer_sparsity[l]);
  return TRUE;
}

LpTensor *
prune_job_make_tensor (PruneJob *job, const LpTensor *t, const float *values, const guint8 *pruned, GError **error)
{
  LpTensor *out = lp_tensor_new_pruned (t, values, pruned, error);
  if (out == NULL)
    return NULL;
  gint64 n = lp_tensor_n_elements (t);
  job->n_total += (guint64) n;
  for (gint64 i = 0; i < n; i++)
    job->n_pruned += pruned[i] != 0;
  lp_sparsity_record_tensor (lp_model_meta (job->work), out);
  lp_pass_context_log (job->ctx, LP_LOG_DEBUG, "%s: sparsity %.4f", t->name, lp_tensor_sparsity (out));
  return out;
}

gboolean
prune_job_publish (PruneJob *job, GError **error)
{
  if (job->n_total == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "targets=%s ignore=%s: expected at least one tensor to prune, found none",
                    lp_tensor_pattern_text (job->targets), lp_tensor_pattern_text (job->ignore));
      return FALSE;
    }
  double fraction = job->n_total ? (double) job->n_pruned / (double) job->n_total : 0.0;
  lp_sparsity_record (lp_model_meta (job->work), job->method, &job->pattern, fraction);
  g_autofree char *name = lp_sparsity_pattern_name (&job->pattern);
  lp_pass_context_log (job->ctx, LP_LOG_INFO, "%s %s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " weights pruned (%.4f)",
                       job->method, name, job->n_pruned, job->n_total, fraction);
  lp_pass_context_set_output_model (job->ctx, job->work);
  return TRUE;
}
