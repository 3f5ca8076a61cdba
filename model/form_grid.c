/* llmpress — the integer-grid form: codes, scales, zeros and g_idx of a
 * GPTQ / compressed-tensors layer (form.h; the grid itself is LpIntGrid,
 * tensor.h).
 *
 * Materialize: scale * (code - zero) per group (lp_int_grid_dequantize_rows);
 * the tensor's data holds exactly that in f32.  Matmul: a backend with a
 * grid product of its own (a device) is handed the codes; the CPU multiplies
 * the f32 values, which keeps its results bit for bit those of the dense
 * weights.  Bytes: the grid packed (lp_int_grid_n_bytes).  Written: the Hugging
 * Face writer packs the grid as GPTQ or compressed-tensors (gptq_pack.c,
 * asking lp_tensor_int_grid); the GGUF writer as the ggml block type that
 * holds the same weights (formats/grid_blocks.c): Q4_0 for symmetric 4-bit
 * and any grid of 3 bits or fewer, Q4_1 for asymmetric 4-bit (d = scale,
 * m = -scale * zero: m rounded to f16 moves some weights by at most half an
 * f16 step of m, counted and reported; a pruned grid takes Q5_0 instead
 * unless every m is exact), Q5_0 / Q5_1 for 5 bits, Q8_0 for 8 bits while
 * code - zero fits int8; groups larger than 32 repeat their scale in each
 * 32-block, act-order only where every 32-block lies in one group.  Where
 * none fits (rows or groups not a multiple of 32, a group boundary inside a
 * block, 8-bit asymmetric codes past int8) the f32 values are written, and
 * one line names the tensors and why.  An output type (convert --type f32,
 * save dtype=f32) writes the values instead: a reader then sees a dense
 * weight.  A GGUF reader sees block types, not a grid.  Training: the latent f32
 * weights read through the grid (fake_quant: rounded onto the same
 * scales and zeros, the clipped straight-through estimator's gradient),
 * or the scales alone with the codes fixed (dequant_grid); rebuilt after
 * training on the same grid (bits, group size, zeros, g_idx): the latent
 * values rounded onto it, or the new scales stored as f16. */
#include "config.h"

#include <string.h>

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

/* Trained: the grid's fixed parts for a fake_quant or dequant_grid node,
 * after w's trainable parameter 0 (the latent values or the scales): the
 * scales as f32 [N, G] unless they train (exact: they are f16), the zeros
 * [N, G], g_idx [K]; i[0] bits, i[1] the group size when g_idx is the
 * plain c / group_size (a device then sums a group's columns alone). */
static gboolean
grid_upload_train (const LpIntGrid *g, const LpTensor *t, LpFormWeights *w, GError **error)
{
  const gint64 N = g->rows, K = g->cols, G = g->n_groups;
  g_autofree float *scales = g_new (float, N * G);
  for (gint64 j = 0; j < N * G; j++)
    scales[j] = lp_f16_to_f32 (g->scales[j]);
  gboolean plain = lp_int_grid_plain_g_idx (g);
  w->i[0] = g->bits;
  w->i[1] = plain ? g->group_size : 0;
  w->n_trainable = 1;
  gboolean ok = w->how == LP_FORM_TRAIN_SCALES
                ? lp_form_weights_add (w, LP_DTYPE_F32, 2, (gint64[]){ N, G }, scales, error)
                  && lp_form_weights_add (w, LP_DTYPE_I8, 2, (gint64[]){ N, K }, g->codes, error)
                : lp_form_weights_add_trainable (w, t, error)
                  && lp_form_weights_add (w, LP_DTYPE_F32, 2, (gint64[]){ N, G }, scales, error);
  return ok && lp_form_weights_add (w, LP_DTYPE_I8, 2, (gint64[]){ N, G }, g->zeros, error)
         && lp_form_weights_add (w, LP_DTYPE_I32, 1, (gint64[]){ K }, g->g_idx, error);
}

/* A device with a grid product of its own gets the codes, scales, zeros
 * and g_idx; the CPU the f32 values.  Trained, see grid_upload_train. */
static gboolean
grid_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error)
{
  const LpIntGrid *g = ((const GridForm *) form)->grid;
  if (train)
    return grid_upload_train (g, t, w, error);
  if (lp_backend_is_cpu (w->be) || w->be->ops->supports_op == NULL || !w->be->ops->supports_op (w->be, LP_OP_GEMM_GRID))
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

/* Trained: W [N, K] through the grid, then one product.  Values: the
 * latent weights rounded onto the grid (fake_quant; their gradient is the
 * straight-through estimator's); scales: (code - zero) scale
 * (dequant_grid; the scales' gradient). */
static LpCTensor *
grid_matmul_trained (const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc, GError **error)
{
  gboolean scales = w->how == LP_FORM_TRAIN_SCALES;
  LpCTensor *src[4] = { w->params[scales ? 1 : 0], w->params[scales ? 0 : 1], w->params[2], w->params[3] };
  LpCNode *n = lp_cgraph_add (g, scales ? LP_COP_DEQUANT_GRID : LP_COP_FAKE_QUANT, src, 4, NULL, 0, error);
  if (n == NULL)
    return NULL;
  n->i[0] = w->i[0];
  n->i[1] = w->i[1];
  return lp_form_matmul_node (g, x, n->dst[0], acc, error);
}

static LpCTensor *
grid_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc, GError **error)
{
  if (w->n_trainable > 0 && w->values == NULL)
    return grid_matmul_trained (w, g, x, acc, error);
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

/* The same grid (bits, group size, zeros, g_idx) with w's trained values
 * rounded onto it (lp_int_quantize, as fake_quant rounded them), or with
 * its trained scales stored as f16 and the same codes. */
static LpTensor *
grid_trained (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error)
{
  const LpIntGrid *g = ((const GridForm *) form)->grid;
  const gint64 N = g->rows, K = g->cols, G = g->n_groups;
  g_autoptr (LpIntGrid) ng = lp_int_grid_new (N, K, g->bits, g->group_size, g->symmetric, error);
  if (ng == NULL)
    return NULL;
  memcpy (ng->codes, g->codes, (gsize) (N * K));
  memcpy (ng->scales, g->scales, (gsize) (N * G) * sizeof (guint16));
  memcpy (ng->zeros, g->zeros, (gsize) (N * G));
  memcpy (ng->g_idx, g->g_idx, (gsize) K * sizeof (gint32));
  g_autofree float *p = g_new (float, lp_ctensor_n_elements (w->params[0]));
  lp_ctensor_read (w->params[0], 0, p, w->params[0]->n_bytes);
  if (w->how == LP_FORM_TRAIN_SCALES)
    for (gint64 j = 0; j < N * G; j++)
      ng->scales[j] = lp_f32_to_f16 (p[j]);
  else
    for (gint64 n = 0; n < N; n++)
      for (gint64 k = 0; k < K; k++)
        {
          gint64 j = n * G + g->g_idx[k];
          lp_int_quantize (lp_f16_to_f32 (g->scales[j]), g->zeros[j], (1 << g->bits) - 1, p[n * K + k],
                           &ng->codes[n * K + k]);
        }
  return lp_tensor_new_int_grid (t->name, t->n_dims, t->shape, ng, NULL, error);
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
  .trained = grid_trained,
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
