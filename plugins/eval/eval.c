/* llmpress eval plugin: the metrics pass.  Sizes, bits per weight, zeros and
 * tensor types always; with data=, perplexity over windows of BOS + ctx-1
 * tokens (or llama.cpp's convention), and with a reference model connected,
 * KL divergence and top-1 agreement (lp_eval_run, eval.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "eval.h"

static const LpParamSpec eval_params[] = {
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "*",
    .help = "tensors the weight statistics (weights.*) cover: globs, comma-separated" },
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "tensors left out of the weight statistics" },
  { .name = "data", .type = LP_PARAM_PATH,
    .help = "evaluation data: text (tokenized with the model's vocabulary) or a .u16/.u32 token file; "
    "without it no perplexity is measured" },
  { .name = "data_range", .type = LP_PARAM_STRING, .default_value = ":",
    .help = "token range START:END of the data to evaluate on (either side may be empty), e.g. to keep it "
    "disjoint from the calibration range" },
  { .name = "ctx", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 1 << 20,
    .help = "window length including BOS; 0 = the model's context length, at most 512", .flags = LP_PARAM_RANGE },
  { .name = "max_windows", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = G_MAXINT32,
    .help = "evaluate at most this many windows; 0 = all", .flags = LP_PARAM_RANGE },
  { .name = "llama_cpp", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "llama-perplexity's convention: the data with BOS in front (when the model adds BOS) cut into chunks of ctx "
    "tokens, each chunk's first token replaced by BOS, only tokens from ctx/2 on scored; computed with llama.cpp's CPU "
    "roundings (8-bit or f16 activations into quantized or f16 weights, f16 KV cache and attention probabilities); "
    "a Llama model with Q4_1/Q8_0 weights on the CPU gets llama.cpp's logits bit for bit" },
  { .name = NULL }
};

static const LpInputSpec eval_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to measure" },
  { .name = "reference", .kind = LP_ARTIFACT_MODEL, .optional = TRUE,
    .help = "the uncompressed model: adds the size ratio, and with data= KL divergence and top-1 agreement" },
  { .name = NULL }
};

void
eval_set_f64 (LpMeta *m, const char *key, double v)
{
  LpValue *val = g_new0 (LpValue, 1);
  val->type = LP_VALUE_F64;
  val->f = v;
  lp_meta_set (m, key, val);
}

void
eval_result_to_meta (const LpEvalResult *r, LpMeta *m)
{
  eval_set_f64 (m, "perplexity", r->ppl);
  eval_set_f64 (m, "nll", r->nll);
  eval_set_f64 (m, "nll_stderr", r->nll_stderr);
  lp_meta_set_u64 (m, "windows", (guint64) r->n_windows);
  lp_meta_set_u64 (m, "ctx", (guint64) r->ctx);
  lp_meta_set_u64 (m, "tokens_scored", (guint64) r->n_scored);
  if (r->have_reference)
    {
      eval_set_f64 (m, "kl", r->kl);
      eval_set_f64 (m, "top1", r->top1);
    }
  eval_set_f64 (m, "tokens_per_s", r->tokens_per_s);
}

/* Exact zeros in the effective (dequantized) values, and where the
 * reference holds the same tensor, the relative weight error
 * ||W - W_ref|| / ||W_ref|| (Frobenius; -1 when there is nothing to compare). */
static gboolean
measure_tensor (const LpTensor *t, const LpTensor *rt, guint64 *zeros, double *rel_error, GError **error)
{
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  if (v == NULL)
    return FALSE;
  gint64 n = lp_tensor_n_elements (t);
  for (gint64 j = 0; j < n; j++)
    *zeros += v[j] == 0.0f;
  *rel_error = -1;
  if (rt == NULL || lp_tensor_n_elements (rt) != n)
    return TRUE;
  g_autofree float *r = lp_tensor_dup_f32 (rt, error);
  if (r == NULL)
    return FALSE;
  double d2 = 0, r2 = 0;
  for (gint64 j = 0; j < n; j++)
    {
      double d = (double) v[j] - (double) r[j];
      d2 += d * d;
      r2 += (double) r[j] * (double) r[j];
    }
  if (r2 > 0)
    *rel_error = sqrt (d2 / r2);
  return TRUE;
}

/* START:END with either side empty, within n tokens. */
static gboolean
parse_range (const char *text, gsize n, gsize *start, gsize *end, GError **error)
{
  g_auto (GStrv) parts = g_strsplit (text, ":", -1);
  guint64 a = 0, b = n;
  gboolean ok = g_strv_length (parts) == 2 && (!*parts[0] || g_ascii_string_to_unsigned (parts[0], 10, 0, n, &a, NULL))
                && (!*parts[1] || g_ascii_string_to_unsigned (parts[1], 10, 0, n, &b, NULL)) && a < b;
  if (!ok)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "data_range: expected START:END with 0 <= START < END <= %" G_GSIZE_FORMAT " (the data's tokens), found '%s'", n, text);
      return FALSE;
    }
  *start = a;
  *end = b;
  return TRUE;
}

/* A factorized model's per-layer ranks (llmpress.lowrank.ranks, written by
 * the factorize passes), next to its perplexity in the run's table. */
static void
add_ranks (LpModel *model, LpMeta *m)
{
  const char *ranks = lp_meta_get_string (lp_model_meta (model), "llmpress.lowrank.ranks");
  if (ranks != NULL && lp_meta_get (m, "ranks") == NULL)
    lp_meta_set_string (m, "ranks", ranks);
}

static gboolean
measure_perplexity (LpPassContext *ctx, LpModel *model, LpModel *ref, LpMeta *m, GError **error)
{
  const char *data = lp_pass_context_get_string (ctx, "data");
  if (data == NULL)
    return TRUE;
  g_autoptr (GArray) tokens = lp_tokens_load (data, model, error);
  if (tokens == NULL)
    return FALSE;
  gsize start, end;
  if (!parse_range (lp_pass_context_get_string (ctx, "data_range"), tokens->len, &start, &end, error))
    return FALSE;
  LpEvalOptions o = { 0 };
  o.ctx = (int) lp_pass_context_get_int (ctx, "ctx");
  o.max_windows = (int) lp_pass_context_get_int (ctx, "max_windows");
  o.llama_cpp = lp_pass_context_get_bool (ctx, "llama_cpp");
  o.reference = ref;
  o.backend = lp_pass_context_get_backend (ctx);
  o.device_memory = lp_pass_context_get_device_memory (ctx);
  LpEvalResult r;
  if (!lp_eval_run (model, (const gint32 *) tokens->data + start, end - start, &o, &r, error))
    return FALSE;
  /* The ranks right after the perplexity in the run's table (a key set
   * again keeps its place). */
  eval_set_f64 (m, "perplexity", r.ppl);
  add_ranks (model, m);
  eval_result_to_meta (&r, m);
  lp_pass_context_log (ctx, LP_LOG_INFO, "perplexity %.4f over %d windows of %d tokens", r.ppl, r.n_windows, r.ctx);
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
  /* Quality first: the run's table shows the leading metrics. */
  if (!measure_perplexity (ctx, model, ref, m, error))
    return FALSE;
  add_ranks (model, m);
  lp_meta_set_u64 (m, "params", (guint64) lp_model_n_params (model));
  lp_meta_set_u64 (m, "bytes", lp_model_n_bytes (model));
  eval_set_f64 (m, "bits_per_weight", lp_model_bits_per_weight (model));
  lp_meta_set_u64 (m, "tensors", lp_model_n_tensors (model));
  if (ref != NULL && lp_model_n_bytes (model) > 0)
    eval_set_f64 (m, "compression_ratio", (double) lp_model_n_bytes (ref) / (double) lp_model_n_bytes (model));

  /* Tensor count per storage type, in type order so the keys are stable. */
  guint counts[LP_DTYPE_COUNT] = { 0 };
  guint64 sel_params = 0, sel_bytes = 0, sel_zeros = 0;
  g_autoptr (GPtrArray) zero_names = g_ptr_array_new ();
  g_autoptr (GArray) zero_counts = g_array_new (FALSE, FALSE, sizeof (guint64));
  g_autoptr (GArray) errors = g_array_new (FALSE, FALSE, sizeof (double));
  guint n = lp_model_n_tensors (model);
  for (guint i = 0; i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if ((guint) t->dtype < LP_DTYPE_COUNT)
        counts[t->dtype]++;
      if (!lp_tensor_pattern_match (targets, t->name) || lp_tensor_pattern_match (ignore, t->name))
        continue;
      sel_params += (guint64) lp_tensor_n_elements (t);
      sel_bytes += lp_tensor_storage_bytes (t);
      guint64 zeros = 0;
      double rel_error = -1;
      if (!measure_tensor (t, ref ? lp_model_tensor (ref, t->name) : NULL, &zeros, &rel_error, error))
        return FALSE;
      sel_zeros += zeros;
      g_ptr_array_add (zero_names, t->name);
      g_array_append_val (zero_counts, zeros);
      g_array_append_val (errors, rel_error);
      lp_pass_context_progress (ctx, i + 1, n, "tensors");
      if (lp_pass_context_cancelled (ctx))
        {
          lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (ctx));
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
  eval_set_f64 (m, "weights.bits_per_weight", sel_params ? 8.0 * (double) sel_bytes / (double) sel_params : 0.0);
  eval_set_f64 (m, "weights.zero_fraction", sel_params ? (double) sel_zeros / (double) sel_params : 0.0);
  /* Per-tensor sparsity of the tensors that have zeros (a pruned model's). */
  for (guint i = 0; i < zero_names->len; i++)
    {
      guint64 z = g_array_index (zero_counts, guint64, i);
      LpTensor *t = lp_model_tensor (model, zero_names->pdata[i]);
      if (z == 0)
        continue;
      g_autofree char *key = g_strdup_printf ("sparsity.%s", t->name);
      eval_set_f64 (m, key, (double) z / (double) lp_tensor_n_elements (t));
    }
  /* Per matrix: its storage bits per weight, and with a reference its
   * relative weight error (`llmpress report` draws them per layer). */
  for (guint i = 0; i < zero_names->len; i++)
    {
      LpTensor *t = lp_model_tensor (model, zero_names->pdata[i]);
      if (t->n_dims != 2)
        continue;
      g_autofree char *bkey = g_strdup_printf ("bpw.%s", t->name);
      eval_set_f64 (m, bkey, 8.0 * (double) lp_tensor_storage_bytes (t) / (double) lp_tensor_n_elements (t));
      double e = g_array_index (errors, double, i);
      g_autofree char *ekey = g_strdup_printf ("error.%s", t->name);
      if (e >= 0)
        eval_set_f64 (m, ekey, e);
    }
  lp_pass_context_set_output_metrics (ctx, g_steal_pointer (&m));
  return TRUE;
}

static const LpPassInfo eval_pass = {
  .name = "eval",
  .summary = "measure a model: perplexity, KL and top-1 to a reference, parameters, bytes, bits per weight, zeros (per tensor where any), per-matrix bits per weight and relative weight error to the reference",
  .params = eval_params,
  .inputs = eval_inputs,
  .output = LP_ARTIFACT_METRICS,
  .run = eval_run,
};

/* calibrate: activation statistics of the input model on the pipeline's
 * calibration data, as an artifact that several passes can share. */
static const LpParamSpec calibrate_params[] = {
  { .name = "hessians", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "also keep each linear input's Hessian X^T X (large: n^2 floats per input)" },
  { .name = NULL }
};

static const LpInputSpec calibrate_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to run the calibration samples through" },
  { .name = NULL }
};

static gboolean
calibrate_run (LpPassContext *ctx, GError **error)
{
  LpModel *model = lp_pass_context_get_input_model (ctx, "input");
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  g_autoptr (LpStats) stats = lp_stats_collect (model, cal, lp_pass_context_get_backend (ctx),
                                                lp_pass_context_get_bool (ctx, "hessians"), error);
  if (stats == NULL)
    return FALSE;
  g_autoptr (LpArtifact) a = lp_artifact_new_stats (stats);
  lp_pass_context_set_output (ctx, a);
  return TRUE;
}

static const LpPassInfo calibrate_pass = {
  .name = "calibrate",
  .summary = "collect activation statistics (importance matrix, optional Hessians) on the calibration data",
  .params = calibrate_params,
  .inputs = calibrate_inputs,
  .output = LP_ARTIFACT_STATS,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = calibrate_run,
};

static const LpPassInfo *const passes[] = { &eval_pass, &calibrate_pass, &eval_heldout_pass, &select_pass, NULL };

LP_PLUGIN_DEFINE ("eval", PACKAGE_VERSION, "MIT", passes)
