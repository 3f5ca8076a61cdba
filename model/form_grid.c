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

/* A device with a grid product of its own gets the codes, scales, zeros
 * and g_idx; the CPU, and training (latent weights through a
 * straight-through estimator), the f32 values. */
static gboolean
grid_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error)
{
  const LpIntGrid *g = ((const GridForm *) form)->grid;
  if (train || lp_backend_is_cpu (w->be) || w->be->ops->supports_op == NULL
      || !w->be->ops->supports_op (w->be, LP_OP_GEMM_GRID))
    {
      w->values = lp_form_weights_add_values (w, t, TRUE, error);
      w->n_trainable = 1;
      return w->values != NULL;
    }
  const gint64 N = g->rows, K = g->cols, G = g->n_groups;
  w->i[0] = g->bits;
  w->i[1] = g->group_size;
  return lp_form_weights_add (w, LP_DTYPE_I8, 2, (gint64[]){ N, K }, g->codes, error)
         && lp_form_weights_add (w, LP_DTYPE_I16, 2, (gint64[]){ N, G }, g->scales, error)
         && lp_form_weights_add (w, LP_DTYPE_I8, 2, (gint64[]){ N, G }, g->zeros, error)
         && lp_form_weights_add (w, LP_DTYPE_I32, 1, (gint64[]){ K }, g->g_idx, error);
}

static LpCTensor *
grid_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc, GError **error)
{
  if (w->values != NULL)
    return lp_form_matmul_node (g, x, w->values, acc, error);
  LpCTensor *src[6] = { x, w->params[0], w->params[1], w->params[2], w->params[3], acc };
  LpCNode *n = lp_cgraph_add (g, LP_COP_MATMUL_GRID, src, acc ? 6 : 5, NULL, 0, error);
  if (n == NULL)
    return NULL;
  n->i[0] = w->i[0];
  n->i[1] = w->i[1];
  return n->dst[0];
}

const LpFormClass lp_form_grid_class = {
  .name = "grid",
  .finalize = grid_finalize,
  .materialize_rows = grid_materialize_rows,
  .storage_bytes = grid_storage_bytes,
  .is_quantized = grid_is_quantized,
  .int_grid = grid_int_grid,
  .upload = grid_upload,
  .matmul = grid_matmul,
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
