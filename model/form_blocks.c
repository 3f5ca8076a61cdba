/* llmpress — the block form: a ggml block type (Q4_0, Q4_K, ...) as stored
 * (form.h).
 *
 * A tensor of a block type without a form of its own has this one.
 * Materialize: dequantized blocks; matmul: one LP_COP_MATMUL node over the
 * blocks, which the kernels decode themselves (a device receives the
 * compressed bytes); bytes: the blocks'; quantized; training: the decoded
 * values as f32 latent weights, multiplied as they are (the block
 * quantizers live in compress/, above model/, so no graph op rounds onto
 * a block type), rebuilt as f32 values without a form that the trainer
 * quantizes back to the type; written as its blocks (GGUF keeps them
 * unless an output type is asked for; the Hugging Face writer, whose
 * safetensors cannot hold them, dequantizes them). */
#include "config.h"

#include "lp-internal.h"

static gboolean
blocks_is_quantized (const LpForm *form, const LpTensor *t)
{
  return TRUE;
}

const LpFormClass lp_form_blocks_class = {
  .name = "blocks",
  .materialize_rows = lp_form_values_rows,
  .storage_bytes = lp_form_values_bytes,
  .is_quantized = blocks_is_quantized,
  .upload = lp_form_values_upload,
  .matmul = lp_form_values_matmul,
};

LpForm lp_form_blocks = { &lp_form_blocks_class, 1 };
