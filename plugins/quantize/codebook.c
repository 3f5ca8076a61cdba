/* llmpress quantize plugin — quantize.codebook: weight sharing through a
 * codebook of non-uniform levels.
 *
 * format=iq4_nl: llama.cpp's IQ4_NL, a fixed 16-level codebook
 * (lp_iq4nl_levels, denser near zero) under one f16 scale per block of 32
 * inputs, 4.5 bits per weight like Q4_0, which llama.cpp runs as it is.
 * Each block's scale is searched as ggml's quantize_iq4_nl searches it, the
 * error weighted by the calibration Hessian's diagonal (H = X^T X: the
 * output error a weight's change causes, up to the cross terms) in place of
 * llama.cpp's imatrix.  With gptq=true the codes are then chosen column by
 * column with GPTQ's error feedback (gptq.c's sweep through the grid view,
 * quant.h); with gptq=false each value is rounded to its nearest level.
 *
 * Per weight W[R, C] with its input Hessian H[C, C] (lp_layerwise_run,
 * sequential: each layer calibrated on the layers already quantized).  Rows
 * whose length the block does not divide fall back to f16 as llama-quantize
 * does (reported), the same tensors as quantize.rtn format=q4_0 keeps. */
#include "config.h"

#include "quantize.h"

static const char *const codebook_formats[] = { "iq4_nl", NULL };

static const LpParamSpec codebook_params[] = {
  { .name = "format", .type = LP_PARAM_ENUM, .default_value = "iq4_nl", .choices = codebook_formats,
    .help = "the codebook: iq4_nl (llama.cpp's IQ4_NL: 16 fixed non-uniform levels times a per-block scale, "
    "blocks of 32, 4.5 bits per weight)" },
  { .name = "gptq", .type = LP_PARAM_BOOL, .default_value = "true",
    .help = "choose the codes with GPTQ's error feedback across columns (else each value rounds to its nearest "
    "level); the block scales are searched against the Hessian diagonal either way" },
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "blk.*",
    .help = "tensors to quantize (2-D weights only: norms and other vectors stay as they are)" },
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "tensors left as they are" },
  { .name = "allow_requantize", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "quantize tensors that are already quantized (from their dequantized values; quality suffers)" },
  Q_GPTQ_PARAMS,
  { .name = NULL }
};

static const LpInputSpec codebook_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to quantize" },
  { .name = NULL }
};

typedef struct {
  LpPassContext *ctx;
  QOptions o;
  QGptqSettings s;
  gboolean gptq;
  double loss;                 /* GPTQ's OBS loss estimates, summed */
  QGptqFactor factor;          /* of the input below, shared by its weights */
  int factor_layer, factor_in;
} Codebook;

/* Nearest level in every block, the scales searched against diag(H). */
static LpTensor *
round_weight (Codebook *cb, const LpTensor *t, const float *H, int n, GError **error)
{
  g_autofree float *W = lp_tensor_dup_f32 (t, error);
  if (W == NULL || !q_check_input (&cb->o, t, W, error))
    return NULL;
  gboolean odd;
  QGrid grid = q_grid_for (&cb->o, t->name, n, &odd);
  q_log_grid (cb->ctx, t, &grid, odd);
  g_autofree float *imp = g_new (float, n);
  for (int j = 0; j < n; j++)
    imp[j] = H[(gsize) j * n + j];
  gint64 lost = 0;
  LpTensor *out = q_round (lp_pass_context_get_backend (cb->ctx), &grid, t, W, imp, &lost, error);
  if (out != NULL)
    q_log_mask_lost (cb->ctx, t, &grid, lost);
  return out;
}

static gboolean
on_weight (gpointer user_data, LpTensor *weight, const LpActStats *stats, LpTensor **replacement, GError **error)
{
  Codebook *cb = user_data;
  if (!q_gptq_factor_follow (&cb->factor, &cb->factor_layer, &cb->factor_in, stats, error))
    return FALSE;
  if (stats->n != lp_tensor_row_length (weight))
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: Hessian of %d inputs, expected %" G_GINT64_FORMAT, weight->name,
                    stats->n, lp_tensor_row_length (weight));
      return FALSE;
    }
  if (!cb->gptq)
    {
      *replacement = round_weight (cb, weight, stats->hessian, stats->n, error);
      return *replacement != NULL;
    }
  *replacement = q_gptq_weight (cb->ctx, &cb->o, &cb->s, weight, stats->hessian, stats->n, &cb->factor, &cb->loss,
                                error);
  return *replacement != NULL;
}

static gboolean
codebook_run (LpPassContext *ctx, GError **error)
{
  Codebook cb = { ctx, .factor_layer = -1 };
  cb.o.format = LP_DTYPE_IQ4_NL;
  cb.o.allow_requantize = lp_pass_context_get_bool (ctx, "allow_requantize");
  cb.o.targets = lp_pass_context_get_tensors (ctx, "targets");
  cb.o.ignore = lp_pass_context_get_tensors (ctx, "ignore");
  cb.gptq = lp_pass_context_get_bool (ctx, "gptq");
  q_gptq_settings_read (ctx, &cb.s);
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  if (!q_check_model (&cb.o, in, error))
    return FALSE;
  g_autoptr (LpModel) work = lp_model_derive (in);
  gboolean ok = lp_layerwise_run (ctx, work, LP_CALIB_HESSIAN, cb.o.targets, cb.o.ignore, on_weight, &cb, error);
  q_gptq_factor_clear (&cb.factor);
  if (!ok)
    return FALSE;
  if (cb.gptq)
    lp_pass_context_log (ctx, LP_LOG_INFO, "OBS loss %.6g over all weights", cb.loss);
  lp_pass_context_log (ctx, LP_LOG_INFO, "%s codebook, %.3f bits per weight", lp_dtype_name (cb.o.format),
                       lp_model_bits_per_weight (work));
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}

const LpPassInfo q_codebook_pass = {
  .name = "quantize.codebook",
  .summary = "weight sharing: a non-uniform codebook per block (llama.cpp's IQ4_NL), scales searched against the "
             "Hessian diagonal, codes with GPTQ's error feedback",
  .params = codebook_params,
  .inputs = codebook_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = codebook_run,
};
