/* llmpress — the integer-grid form: codes, scales, zeros and g_idx of a
 * GPTQ / compressed-tensors layer (form.h; the grid itself is LpIntGrid,
 * tensor.h).
 *
 * Materialize: scale * (code - zero) per group (lp_int_grid_dequantize_rows);
 * the tensor's data holds exactly that in f32.  Matmul: a backend with a
 * grid product of its own (a device) is handed the codes; the CPU multiplies
 * the f32 values, which keeps its results bit for bit those of the dense
 * weights.  Bytes: the grid packed as GPTQ stores it.  Written: the Hugging
 * Face writer packs the grid as GPTQ or compressed-tensors (gptq_pack.c,
 * asking lp_tensor_int_grid); GGUF, which has no such type, gets the f32
 * values, and a reader sees a dense weight.  Training: the latent f32
 * weights through a straight-through estimator (the gradient of the values
 * is the gradient of the latent weights; requantizing is the quantizer's). */
#include "config.h"

#include "lp-internal.h"

typedef struct {
  LpForm parent;
  LpIntGrid *grid;
} GridForm;

static void
grid_finalize (LpForm *form)
{
  lp_int_grid_unref (((GridForm *) form)->grid);
}

static gboolean
grid_materialize_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  lp_int_grid_dequantize_rows (((const GridForm *) form)->grid, r0, n, out);
  return TRUE;
}

static guint64
grid_storage_bytes (const LpForm *form, const LpTensor *t)
{
  return lp_int_grid_n_bytes (((const GridForm *) form)->grid);
}

static gboolean
grid_is_quantized (const LpForm *form, const LpTensor *t)
{
  return TRUE;
}

static const LpIntGrid *
grid_int_grid (const LpForm *form)
{
  return ((const GridForm *) form)->grid;
}

/* y[T, N] = x[T, K] W^T + beta y. */
static void
grid_gemm (const LpForm *form, const LpTensor *t, LpBackend *be, int T, const float *x, int ldx, float beta, float *y)
{
  const LpIntGrid *g = ((const GridForm *) form)->grid;
  if (lp_backend_for_op (be, LP_OP_GEMM_GRID)->fallback != NULL)
    lp_gemm_grid (be, T, (int) g->rows, (int) g->cols, x, ldx, g, beta, y, (int) g->rows);
  else
    lp_gemm (be, TRUE, T, (int) g->rows, (int) g->cols, 1.0f, x, ldx, lp_tensor_data (t), (int) g->cols, beta, y,
             (int) g->rows);
}

const LpFormClass lp_form_grid_class = {
  .name = "grid",
  .finalize = grid_finalize,
  .materialize_rows = grid_materialize_rows,
  .storage_bytes = grid_storage_bytes,
  .is_quantized = grid_is_quantized,
  .int_grid = grid_int_grid,
  .gemm = grid_gemm,
};

LpTensor *
lp_tensor_new_int_grid (const char *name, int n_dims, const gint64 *shape, LpIntGrid *grid, GBytes *mask,
                        GError **error)
{
  g_autoptr (LpTensor) t = lp_tensor_new (name, LP_DTYPE_F32, n_dims, shape, error);
  if (t == NULL)
    return NULL;
  if (lp_tensor_row_length (t) != grid->cols || lp_tensor_n_rows (t) != grid->rows)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "tensor %s: integer grid of %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " does not fit the shape", name,
                    grid->rows, grid->cols);
      return NULL;
    }
  lp_int_grid_dequantize (grid, lp_tensor_data_mut (t));
  GridForm *f = lp_form_alloc (&lp_form_grid_class, sizeof (GridForm));
  f->grid = lp_int_grid_ref (grid);
  t->form = &f->parent;
  return mask != NULL ? lp_tensor_with_mask (t, mask, error) : g_steal_pointer (&t);
}
