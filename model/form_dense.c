/* llmpress — the dense form: f32, f16 or bf16 values as stored (form.h).
 *
 * A tensor without a form of its own (t->form == NULL) of a float type has
 * this one.  Materialize: the stored values; matmul: the backend's f32
 * product, or its weight product reading f16/bf16 itself; bytes: the
 * stored ones; written as its values (a writer may convert the type). */
#include "config.h"

#include "lp-internal.h"

/* y[T, N] = x[T, K] W^T + beta y. */
static void
dense_gemm (const LpForm *form, const LpTensor *t, LpBackend *be, int T, const float *x, int ldx, float beta, float *y)
{
  int N = (int) lp_tensor_n_rows (t), K = (int) lp_tensor_row_length (t);
  if (t->dtype == LP_DTYPE_F32)
    lp_gemm (be, TRUE, T, N, K, 1.0f, x, ldx, lp_tensor_data (t), K, beta, y, N);
  else
    lp_gemm_w (be, T, N, K, x, ldx, t->dtype, lp_tensor_data (t), beta, y, N);
}

const LpFormClass lp_form_dense_class = {
  .name = "dense",
  .materialize_rows = lp_form_values_rows,
  .storage_bytes = lp_form_values_bytes,
  .gemm = dense_gemm,
};

/* The instance every dense tensor shares (never freed: one ref is its own). */
LpForm lp_form_dense = { &lp_form_dense_class, 1 };
