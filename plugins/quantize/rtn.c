/* llmpress quantize plugin — quantize.rtn: round to nearest on the grid,
 * group by group, with no error feedback.  Into a block type it writes the
 * bytes llama-quantize writes (with an importance matrix: those of
 * llama-quantize --imatrix); on the integer grid it fits each group's scale
 * and zero by min/max or the clipping search. */
#include "config.h"

#include "quantize.h"

static const LpParamSpec rtn_params[] = {
  Q_COMMON_PARAMS,
  { .name = "imatrix", .type = LP_PARAM_PATH,
    .help = "importance matrix: a llama.cpp imatrix (GGUF or .dat) or our statistics file (save_stats); "
    "the mean squared activation of each input channel weighs the fits" },
  Q_BUDGET_PARAMS,
  { .name = NULL }
};

static const LpInputSpec rtn_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to quantize" },
  { .name = "stats", .kind = LP_ARTIFACT_STATS, .optional = TRUE,
    .help = "activation statistics (calibrate): the importance matrix, as imatrix=" },
  { .name = NULL }
};

/* The importance statistics: the connected input, else imatrix=, else none. */
static LpStats *
rtn_stats (LpPassContext *ctx, GError **error)
{
  LpArtifact *a = lp_pass_context_get_input (ctx, "stats");
  if (a != NULL)
    return lp_stats_ref (lp_artifact_get_stats (a));
  const char *path = lp_pass_context_get_string (ctx, "imatrix");
  if (path == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "no statistics");
      return NULL;
    }
  return lp_stats_load (path, error);
}

/* Mean square per input channel of t's input, or NULL without an entry. */
static float *
rtn_importance (LpStats *stats, const LpTensor *t, GError **error)
{
  const LpActStats *e = stats ? lp_stats_lookup (stats, t->name) : NULL;
  if (e == NULL)
    return NULL;
  if (e->n != lp_tensor_row_length (t))
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: statistics have %d input channels, expected %" G_GINT64_FORMAT " (the row length)", t->name,
                    e->n, lp_tensor_row_length (t));
      return NULL;
    }
  float *imp = g_new (float, e->n);
  lp_stats_mean_sq (e, imp);
  return imp;
}

gboolean
q_rtn_tensor (LpPassContext *ctx, const QOptions *o, LpStats *stats, LpModel *work, LpTensor *t, GError **error)
{
  gboolean odd;
  QGrid g = q_grid_for (o, t->name, lp_tensor_row_length (t), &odd);
  /* A block type's kernels refuse a NaN or an infinity as they read the
   * rows, so the scan that names the element runs before only the other
   * grids, and after a block type's refusal. */
  gboolean kernel_checks = lp_quant_type_supported (g.type);
  g_autofree float *w = lp_tensor_dup_f32 (t, error);
  if (w == NULL || !q_check_requantize (o, t, error) || (!kernel_checks && !q_check_finite (t, w, error)))
    {
      g_prefix_error (error, "%s: ", t->name);
      return FALSE;
    }
  lp_tensor_release_pages (t); /* w is the copy this reads */
  q_log_grid (ctx, t, &g, odd);
  GError *local = NULL;
  g_autofree float *imp = rtn_importance (stats, t, &local);
  if (local != NULL)
    {
      g_propagate_error (error, local);
      return FALSE;
    }
  gint64 lost;
  g_autoptr (LpTensor) q = q_round (lp_pass_context_get_backend (ctx), &g, t, w, imp, &lost, error);
  if (q == NULL)
    {
      GError *scan = NULL;
      if (kernel_checks && !q_check_finite (t, w, &scan))
        {
          g_clear_error (error);
          g_propagate_prefixed_error (error, scan, "%s: ", t->name);
        }
      return FALSE;
    }
  q_log_mask_lost (ctx, t, &g, lost);
  lp_model_set_tensor_spill (work, q);
  return TRUE;
}

gboolean
q_rtn_rest (LpPassContext *ctx, const QOptions *o, LpModel *in, LpModel *work, GError **error)
{
  if (!o->has_preset && o->assigned == NULL)
    return TRUE;
  for (guint i = 0; i < lp_model_n_tensors (in); i++)
    {
      LpTensor *t = lp_model_tensor_at (in, i);
      if (!g_str_has_prefix (t->name, "blk.") && q_selected (o, t) && !q_rtn_tensor (ctx, o, NULL, work, t, error))
        return FALSE;
    }
  return TRUE;
}

static gboolean
rtn_run (LpPassContext *ctx, GError **error)
{
  QOptions o;
  QBudget budget;
  if (!q_options_read (ctx, &o, error) || !q_budget_read (ctx, &o, &budget, error))
    return FALSE;
  g_autoptr (LpStats) stats = NULL;
  if (lp_pass_context_get_input (ctx, "stats") != NULL || lp_pass_context_get_string (ctx, "imatrix") != NULL)
    if ((stats = rtn_stats (ctx, error)) == NULL)
      return FALSE;
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  if (!q_check_model (&o, in, error))
    return FALSE;
  g_autoptr (GHashTable) assigned = NULL;
  if (q_budget_active (&budget))
    {
      if ((assigned = q_budget_assign (ctx, &o, &budget, in, stats, error)) == NULL)
        return FALSE;
      o.assigned = assigned;
    }
  if (o.has_preset)
    o.assigned = assigned = q_preset_assign (ctx, &o, in, stats != NULL);
  g_autoptr (LpModel) work = lp_model_derive (in);
  guint n = lp_model_n_tensors (in), done = 0;
  for (guint i = 0; i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (in, i);
      if (!q_selected (&o, t))
        continue;
      if (!q_rtn_tensor (ctx, &o, stats, work, t, error))
        return FALSE;
      done++;
      lp_pass_context_progress (ctx, i + 1, n, "tensors");
      if (lp_pass_context_cancelled (ctx))
        {
          lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (ctx));
          return FALSE;
        }
    }
  lp_pass_context_log (ctx, LP_LOG_INFO, "quantized %u tensors, %.3f bits per weight", done,
                       lp_model_bits_per_weight (work));
  if (!q_budget_report (ctx, &budget, work, error))
    return FALSE;
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}

const LpPassInfo q_rtn_pass = {
  .name = "quantize.rtn",
  .summary = "round-to-nearest quantization into llama.cpp block types or an integer grid, optionally "
             "importance-weighted (imatrix)",
  .params = rtn_params,
  .inputs = rtn_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = rtn_run,
};
