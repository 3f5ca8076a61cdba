/* llmpress eval plugin: the metrics pass.  For now it measures what needs
 * no forward pass (sizes, bits per weight, zeros, tensor types); the
 * perplexity and KL metrics join the same parameter table later. */
#include "config.h"

#include <string.h>

#include <llmpress/llmpress.h>

static const LpParamSpec eval_params[] = {
  { "targets", LP_PARAM_TENSORS, "*", 0, 0, NULL,
    "tensors the weight statistics (weights.*) cover: globs, comma-separated" },
  { "ignore", LP_PARAM_TENSORS, "", 0, 0, NULL,
    "tensors left out of the weight statistics" },
  { NULL }
};

static const LpInputSpec eval_inputs[] = {
  { "input", LP_ARTIFACT_MODEL, FALSE, "the model to measure" },
  { "reference", LP_ARTIFACT_MODEL, TRUE, "the uncompressed model: adds the size ratio" },
  { NULL }
};

static void
set_f64 (LpMeta *m, const char *key, double v)
{
  LpValue *val = g_new0 (LpValue, 1);
  val->type = LP_VALUE_F64;
  val->f = v;
  lp_meta_set (m, key, val);
}

/* Exact zeros in the effective (dequantized) values. */
static gboolean
count_zeros (const LpTensor *t, guint64 *zeros, GError **error)
{
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  if (v == NULL)
    return FALSE;
  gint64 n = lp_tensor_n_elements (t);
  for (gint64 j = 0; j < n; j++)
    *zeros += v[j] == 0.0f;
  return TRUE;
}

static gboolean
eval_run (LpPassContext *ctx, GError **error)
{
  LpModel *model = lp_pass_context_get_input_model (ctx, "input");
  LpModel *ref = lp_pass_context_get_input_model (ctx, "reference");
  const LpTensorPattern *targets = lp_pass_context_get_tensors (ctx, "targets");
  const LpTensorPattern *ignore = lp_pass_context_get_tensors (ctx, "ignore");
  g_autoptr (LpMeta) m = lp_meta_new ();
  lp_meta_set_u64 (m, "params", (guint64) lp_model_n_params (model));
  lp_meta_set_u64 (m, "bytes", lp_model_n_bytes (model));
  set_f64 (m, "bits_per_weight", lp_model_bits_per_weight (model));
  lp_meta_set_u64 (m, "tensors", lp_model_n_tensors (model));
  if (ref != NULL && lp_model_n_bytes (model) > 0)
    set_f64 (m, "compression_ratio", (double) lp_model_n_bytes (ref) / (double) lp_model_n_bytes (model));

  /* Tensor count per storage type, in type order so the keys are stable. */
  guint counts[LP_DTYPE_COUNT] = { 0 };
  guint64 sel_params = 0, sel_bytes = 0, sel_zeros = 0;
  guint n = lp_model_n_tensors (model);
  for (guint i = 0; i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if ((guint) t->dtype < LP_DTYPE_COUNT)
        counts[t->dtype]++;
      if (!lp_tensor_pattern_match (targets, t->name) || lp_tensor_pattern_match (ignore, t->name))
        continue;
      sel_params += (guint64) lp_tensor_n_elements (t);
      sel_bytes += lp_tensor_n_bytes (t);
      if (!count_zeros (t, &sel_zeros, error))
        return FALSE;
      lp_pass_context_progress (ctx, i + 1, n, "tensors");
      if (lp_pass_context_cancelled (ctx))
        {
          g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (ctx));
          return FALSE;
        }
    }
  for (int t = 0; t < LP_DTYPE_COUNT; t++)
    if (counts[t] > 0)
      {
        g_autofree char *key = g_strdup_printf ("tensors.%s", lp_dtype_name ((LpDType) t));
        lp_meta_set_u64 (m, key, counts[t]);
      }
  lp_meta_set_u64 (m, "weights.params", sel_params);
  lp_meta_set_u64 (m, "weights.bytes", sel_bytes);
  set_f64 (m, "weights.bits_per_weight", sel_params ? 8.0 * (double) sel_bytes / (double) sel_params : 0.0);
  set_f64 (m, "weights.zero_fraction", sel_params ? (double) sel_zeros / (double) sel_params : 0.0);
  lp_pass_context_set_output_metrics (ctx, g_steal_pointer (&m));
  return TRUE;
}

static const LpPassInfo eval_pass = {
  .name = "eval",
  .summary = "measure a model: parameters, bytes, bits per weight, zeros, tensor types",
  .params = eval_params,
  .inputs = eval_inputs,
  .output = LP_ARTIFACT_METRICS,
  .run = eval_run,
};

static const LpPassInfo *const passes[] = { &eval_pass, NULL };

LP_PLUGIN_DEFINE ("eval", PACKAGE_VERSION, "MIT", passes)
