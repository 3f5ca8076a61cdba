/* llmpress factorize plugin — the pieces factorize.svd and factorize.asvd share. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "factorize.h"

const char *const factorize_methods[] = { "exact", "randomized", NULL };

gboolean
factorize_job_init (FactorizeJob *job, LpPassContext *ctx, const char *method, GError **error)
{
  memset (job, 0, sizeof *job);
  job->ctx = ctx;
  job->method = method;
  job->targets = lp_pass_context_get_tensors (ctx, "targets");
  job->ignore = lp_pass_context_get_tensors (ctx, "ignore");
  gboolean has_rank = lp_pass_context_param_is_set (ctx, "rank"), has_energy = lp_pass_context_param_is_set (ctx, "energy");
  if (has_rank + has_energy + lp_pass_context_param_is_set (ctx, "ratio") > 1)
    {
      lp_set_error (error, LP_ERROR_INVALID, "rank=, ratio= and energy=: expected one of them, found %s",
                    has_rank && has_energy ? "rank= and energy=" : has_rank ? "rank= and ratio=" : "ratio= and energy=");
      return FALSE;
    }
  job->choice.rule = has_rank ? LP_RANK_FIXED : has_energy ? LP_RANK_ENERGY : LP_RANK_RATIO;
  job->choice.rank = (int) lp_pass_context_get_int (ctx, "rank");
  job->choice.ratio = lp_pass_context_get_float (ctx, "ratio");
  job->choice.energy = lp_pass_context_get_float (ctx, "energy");
  if (job->choice.rule == LP_RANK_RATIO && !(job->choice.ratio > 0 && job->choice.ratio < 1))
    {
      lp_set_error (error, LP_ERROR_INVALID, "ratio=%g: expected a fraction of the parameters in (0, 1)", job->choice.ratio);
      return FALSE;
    }
  if (job->choice.rule == LP_RANK_ENERGY && !(job->choice.energy > 0))
    {
      lp_set_error (error, LP_ERROR_INVALID, "energy=%g: expected a fraction in (0, 1]", job->choice.energy);
      return FALSE;
    }
  job->opt = (LpLowRankOptions) LP_LOWRANK_OPTIONS_INIT;
  job->opt.method = lp_pass_context_get_enum (ctx, "method") == 1 ? LP_LOWRANK_RANDOMIZED : LP_LOWRANK_EXACT;
  job->opt.oversample = (int) lp_pass_context_get_int (ctx, "oversample");
  job->opt.power_iters = (int) lp_pass_context_get_int (ctx, "power_iters");
  job->opt.seed = lp_pass_context_get_seed (ctx);
  job->work = lp_model_derive (lp_pass_context_get_input_model (ctx, "input"));
  job->ranks = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  return TRUE;
}

void
factorize_job_clear (FactorizeJob *job)
{
  g_clear_pointer (&job->work, lp_model_unref);
  g_clear_pointer (&job->ranks, g_hash_table_unref);
}

/* Layer of "blk.<l>.<consumer>" when <consumer> reads a linear input, else -1. */
static int
linear_weight_layer (const char *name)
{
  int l, used = 0;
  if (sscanf (name, "blk.%d.%n", &l, &used) != 1 || used == 0 || l < 0)
    return -1;
  for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
    for (const char *const *c = lp_linear_input_consumers ((LpLinearInput) in); *c; c++)
      if (strcmp (name + used, *c) == 0)
        return l;
  return -1;
}

GPtrArray *
factorize_job_names (FactorizeJob *job, LpModel *model, int layer)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      int l = linear_weight_layer (t->name);
      if (l < 0 || (layer >= 0 && l != layer) || t->n_dims != 2 || !lp_tensor_pattern_match (job->targets, t->name)
          || lp_tensor_pattern_match (job->ignore, t->name))
        continue;
      g_ptr_array_add (names, g_strdup (t->name));
    }
  return names;
}

FactorizeTask *
factorize_task_new (FactorizeJob *job, LpModel *model, const char *name, GError **error)
{
  LpTensor *t = lp_model_tensor (model, name);
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  gint64 n = lp_tensor_n_rows (t), k = lp_tensor_row_length (t);
  /* A global ratio= is one budget over all weights (checked as a whole). */
  gboolean per_weight = job->choice.rule != LP_RANK_RATIO || !job->global;
  if (v == NULL || !lp_values_check_finite (name, v, n * k, error)
      || (per_weight && !lp_lowrank_check_choice (&job->choice, (int) n, (int) k, name, error)))
    return NULL;
  FactorizeTask *task = g_new0 (FactorizeTask, 1);
  task->name = g_strdup (name);
  task->n = (int) n;
  task->k = (int) k;
  task->values = g_steal_pointer (&v);
  task->rank = -1;
  return task;
}

void
factorize_task_free (FactorizeTask *task)
{
  if (task == NULL)
    return;
  g_free (task->name);
  g_free (task->values);
  g_free (task->spectrum_s);
  g_clear_pointer (&task->replacement, lp_tensor_unref);
  g_clear_error (&task->error);
  g_free (task);
}

typedef struct {
  FactorizeTaskFunc func;
  gpointer user_data;
} PoolData;

static void
pool_task (gpointer data, gpointer user_data)
{
  FactorizeTask *task = data;
  PoolData *p = user_data;
  if (!p->func (p->user_data, task, &task->error))
    g_prefix_error (&task->error, "%s: ", task->name);
}

gboolean
factorize_run_tasks (FactorizeJob *job, GPtrArray *tasks, FactorizeTaskFunc func, gpointer user_data,
                     GError **error)
{
  PoolData p = { func, user_data };
  int workers = MIN ((int) tasks->len, lp_threads ());
  if (workers > 1)
    {
      GThreadPool *pool = g_thread_pool_new (pool_task, &p, workers, TRUE, error);
      if (pool == NULL)
        return FALSE;
      for (guint i = 0; i < tasks->len; i++)
        g_thread_pool_push (pool, tasks->pdata[i], NULL);
      g_thread_pool_free (pool, FALSE, TRUE);
    }
  else
    for (guint i = 0; i < tasks->len; i++)
      pool_task (tasks->pdata[i], &p);
  for (guint i = 0; i < tasks->len; i++)
    {
      FactorizeTask *t = tasks->pdata[i];
      if (t->error)
        {
          g_propagate_error (error, g_steal_pointer (&t->error));
          return FALSE;
        }
    }
  if (lp_pass_context_cancelled (job->ctx))
    {
      lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (job->ctx));
      return FALSE;
    }
  return TRUE;
}

int
factorize_task_sketch_rank (const FactorizeJob *job, const FactorizeTask *task)
{
  if (task->rank > 0)
    return task->rank;
  if (job->choice.rule == LP_RANK_FIXED)
    return job->choice.rank;
  /* ratio (per layer) and energy: no rank above the largest that saves
   * parameters is ever kept. */
  int max = MAX (lp_lowrank_max_saving_rank (task->n, task->k), 1);
  if (job->choice.rule == LP_RANK_RATIO)
    return MIN (max, (int) floor (job->choice.ratio * task->n * task->k / (task->n + task->k) + 1e-9));
  return max;
}

gboolean
factorize_task_finish (FactorizeJob *job, FactorizeTask *task, const LpSvd *svd, FactorizeSplitFunc split,
                       gpointer user_data, GError **error)
{
  int r = task->rank >= 0 ? task->rank : lp_lowrank_choose_rank (svd, &job->choice);
  task->rank_used = r;
  task->total_sq = svd->total_sq;
  if (r == 0)
    {
      task->error_sq = 0.0;
      return TRUE; /* dense: the factors would hold as many parameters as the weight */
    }
  gint64 sa[2] = { task->n, r }, sb[2] = { r, task->k };
  g_autoptr (LpTensor) a = lp_tensor_new (task->name, LP_DTYPE_F32, 2, sa, error);
  g_autoptr (LpTensor) b = a ? lp_tensor_new (task->name, LP_DTYPE_F32, 2, sb, error) : NULL;
  if (b == NULL)
    return FALSE;
  task->error_sq = split (svd, user_data, r, lp_tensor_data_mut (a), lp_tensor_data_mut (b));
  task->replacement = lp_tensor_new_low_rank (task->name, a, b, error);
  return task->replacement != NULL;
}

/* "q" for blk.<l>.attn_q.weight, ... (the name after the layer otherwise). */
static const char *
short_name (const char *name)
{
  static const char *const map[][2] = { { "attn_q.", "q" },     { "attn_k.", "k" },   { "attn_v.", "v" },
                                        { "attn_output.", "o" }, { "ffn_gate.", "g" }, { "ffn_up.", "u" },
                                        { "ffn_down.", "d" } };
  const char *rest = strchr (name + 4, '.');
  rest = rest ? rest + 1 : name;
  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_str_has_prefix (rest, map[i][0]))
      return map[i][1];
  return rest;
}

void
factorize_job_apply (FactorizeJob *job, FactorizeTask *task)
{
  gint64 dense = (gint64) task->n * task->k;
  job->params_before += (guint64) dense;
  g_hash_table_insert (job->ranks, g_strdup (task->name), GINT_TO_POINTER (task->rank_used + 1));
  if (task->replacement == NULL)
    {
      job->params_after += (guint64) dense;
      lp_pass_context_log (job->ctx, LP_LOG_INFO, "%s [%d, %d]: left dense (a factorization would not save parameters)",
                           task->name, task->n, task->k);
      return;
    }
  job->params_after += (guint64) task->rank_used * (task->n + task->k);
  lp_model_set_tensor (job->work, task->replacement);
  g_autofree char *key = g_strdup_printf ("llmpress.lowrank.rank.%s", task->name);
  lp_meta_set_u64 (lp_model_meta (job->work), key, (guint64) task->rank_used);
  lp_pass_context_log (job->ctx, LP_LOG_INFO, "%s [%d, %d]: rank %d, %s error %.4g%% of its energy", task->name,
                       task->n, task->k, task->rank_used, strcmp (job->method, "asvd") == 0 ? "output" : "weight",
                       task->total_sq > 0 ? 100.0 * task->error_sq / task->total_sq : 0.0);
}

/* "0:q25,k17,...,d37 1:..." by layer, each in forward order; "-" for a dense weight. */
static char *
ranks_summary (FactorizeJob *job)
{
  GString *s = g_string_new (NULL);
  for (int l = 0; l < (int) lp_model_config (job->work)->n_layers; l++)
    {
      int shown = 0;
      for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
        for (const char *const *c = lp_linear_input_consumers ((LpLinearInput) in); *c; c++)
          {
            g_autofree char *name = g_strdup_printf ("blk.%d.%s", l, *c);
            gpointer v = g_hash_table_lookup (job->ranks, name);
            if (v == NULL)
              continue;
            int r = GPOINTER_TO_INT (v) - 1;
            if (shown++ == 0)
              g_string_append_printf (s, "%s%d:", s->len ? " " : "", l);
            else
              g_string_append_c (s, ',');
            if (r > 0)
              g_string_append_printf (s, "%s%d", short_name (name), r);
            else
              g_string_append_printf (s, "%s-", short_name (name));
          }
    }
  return g_string_free (s, FALSE);
}

gboolean
factorize_job_publish (FactorizeJob *job, GError **error)
{
  if (job->params_before == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "targets=%s ignore=%s: expected at least one linear weight of a block to factorize, found none",
                    lp_tensor_pattern_text (job->targets), lp_tensor_pattern_text (job->ignore));
      return FALSE;
    }
  LpMeta *meta = lp_model_meta (job->work);
  g_autofree char *summary = ranks_summary (job);
  double kept = (double) job->params_after / (double) job->params_before;
  lp_meta_set_string (meta, "llmpress.lowrank.method", job->method);
  lp_meta_set_string (meta, "llmpress.lowrank.ranks", summary);
  lp_meta_set_f32 (meta, "llmpress.lowrank.params_kept", (float) kept);
  lp_pass_context_log (job->ctx, LP_LOG_INFO, "%s: ranks %s", job->method, summary);
  lp_pass_context_log (job->ctx, LP_LOG_INFO, "%s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " parameters kept (%.4f)",
                       job->method, job->params_after, job->params_before, kept);
  lp_pass_context_set_output_model (job->ctx, job->work);
  return TRUE;
}
