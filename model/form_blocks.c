/* llmpress — the block form: a ggml block type (Q4_0, Q4_K, ...) as stored
 * (form.h).
 *
 * A tensor of a block type without a form of its own has this one.
 * Materialize: dequantized blocks; matmul: the backend's weight product,
 * which reads the blocks itself (a device receives the compressed bytes);
 * bytes: the blocks'; quantized; written as its blocks (GGUF keeps them,
 * the Hugging Face writer refuses them by name). */
#include "config.h"

#include "lp-internal.h"

static gboolean
blocks_is_quantized (const LpForm *form, const LpTensor *t)
{
  return TRUE;
}

/* y[T, N] = x[T, K] W^T + beta y, the blocks decoded by the backend. */
static void
blocks_gemm (const LpForm *form, const LpTensor *t, LpBackend *be, int T, const float *x, int ldx, float beta,
             float *y)
{
  int N = (int) lp_tensor_n_rows (t), K = (int) lp_tensor_row_length (t);
  lp_gemm_w (be, T, N, K, x, ldx, t->dtype, lp_tensor_data (t), beta, y, N);
}

const LpFormClass lp_form_blocks_class = {
  .name = "blocks",
  .materialize_rows = lp_form_values_rows,
  .storage_bytes = lp_form_values_bytes,
  .is_quantized = blocks_is_quantized,
  .gemm = blocks_gemm,
};

LpForm lp_form_blocks = { &lp_form_blocks_class, 1 };
