/* An out-of-tree llmpress pass, built only against the installed SDK:
 *
 *   cc -shared -fPIC -fvisibility=hidden $(pkg-config --cflags llmpress) \
 *      example.c -o example.so $(pkg-config --libs llmpress)
 *   LLMPRESS_PLUGIN_PATH=$PWD llmpress run example.ini -D model=m.gguf
 *
 * example.round keeps only the top `bits` bits of each f32 weight's
 * mantissa (round to nearest): a crude way to see how much precision a
 * model needs.  It builds a new model and never touches its input. */
#include <string.h>
#include <llmpress/llmpress.h>

static const LpParamSpec round_params[] = {
  { .name = "bits", .type = LP_PARAM_INT, .default_value = "10", .min = 0, .max = 23,
    .help = "mantissa bits kept (f16 keeps 10, bf16 7)", .flags = LP_PARAM_RANGE },
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "blk.*",
    .help = "tensors to round (globs, comma-separated)" },
  { .name = NULL }
};

static const LpInputSpec round_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model" },
  { .name = NULL }
};

static float
round_mantissa (float v, int bits)
{
  guint32 u;
  memcpy (&u, &v, 4);
  if (((u >> 23) & 0xff) == 0xff || bits >= 23)
    return v; /* inf/nan, or nothing to drop */
  guint32 drop = 23 - (guint32) bits;
  guint32 half = 1u << (drop - 1);
  u = (u + half) & ~((1u << drop) - 1);
  memcpy (&v, &u, 4);
  return v;
}

static gboolean
round_run (LpPassContext *ctx, GError **error)
{
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  int bits = (int) lp_pass_context_get_int (ctx, "bits");
  const LpTensorPattern *targets = lp_pass_context_get_tensors (ctx, "targets");
  g_autoptr (LpModel) out = lp_model_derive (in);
  guint n = lp_model_n_tensors (in), changed = 0;
  for (guint i = 0; i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (in, i);
      if (t->dtype != LP_DTYPE_F32 || !lp_tensor_pattern_match (targets, t->name))
        continue; /* stays shared with the input */
      g_autoptr (LpTensor) r = lp_tensor_new (t->name, LP_DTYPE_F32, t->n_dims, t->shape, error);
      if (r == NULL)
        return FALSE;
      const float *src = lp_tensor_data (t);
      float *dst = lp_tensor_data_mut (r);
      for (gint64 j = 0; j < lp_tensor_n_elements (t); j++)
        dst[j] = round_mantissa (src[j], bits);
      lp_model_set_tensor (out, r);
      changed++;
      lp_pass_context_progress (ctx, i + 1, n, "tensors");
    }
  lp_pass_context_log (ctx, LP_LOG_INFO, "rounded %u tensors to %d mantissa bits", changed, bits);
  lp_pass_context_set_output_model (ctx, out);
  return TRUE;
}

static const LpPassInfo round_pass = {
  .name = "example.round",
  .summary = "round f32 weights to fewer mantissa bits (an out-of-tree example)",
  .params = round_params,
  .inputs = round_inputs,
  .output = LP_ARTIFACT_MODEL,
  .run = round_run,
};

static const LpPassInfo *const passes[] = { &round_pass, NULL };

LP_PLUGIN_DEFINE ("example", "1.0", "MIT", passes)
