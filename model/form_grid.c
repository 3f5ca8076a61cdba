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

/* Written only where a reader must get the grid back exactly (the
 * artifact cache: LpSaveOptions.grid_parts); other files hold its values
 * or a ggml block type. */
static const LpFormPart grid_parts[] = {
  { ".grid_codes", TRUE },  /* i8 [R, C] */
  { ".grid_scales", TRUE }, /* f16 [R, G] */
  { ".grid_zeros", TRUE },  /* i8 [R, G] */
  { ".grid_gidx", FALSE },  /* i32 [C] */
  { NULL, FALSE },
};

static gboolean grid_restore (LpModel *model, GError **error);

const LpFormClass lp_form_grid_class = {
  .name = "grid",
  .parts = grid_parts,
  .finalize = grid_finalize,
  .materialize_rows = grid_materialize_rows,
  .storage_bytes = grid_storage_bytes,
  .is_quantized = grid_is_quantized,
  .int_grid = grid_int_grid,
  .upload = grid_upload,
  .matmul = grid_matmul,
  .trained = grid_trained,
  .restore = grid_restore,
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

/* ---- the grid as its parts (the cache's exact copy) ---- */

/* llmpress.grid.<name>.<what>: its own keys, apart from llmpress.form.*
 * (a grid may be the base of a form that marks the same name, an adapter). */
static char *
grid_key (const char *name, const char *what)
{
  return g_strconcat ("llmpress.grid.", name, ".", what, NULL);
}

/* Whether t's values are exactly its grid's (a mask over the grid may
 * have zeroed codes the grid itself does not: the parts would lose that). */
static gboolean
grid_holds_values (const LpTensor *t, const LpIntGrid *g)
{
  if (t->dtype != LP_DTYPE_F32 || lp_tensor_n_elements (t) != g->rows * g->cols)
    return FALSE;
  const float *v = lp_tensor_data (t);
  g_autofree float *row = g_new (float, g->cols);
  for (gint64 r = 0; r < g->rows; r++)
    {
      lp_int_grid_dequantize_rows (g, r, 1, row);
      if (memcmp (row, v + r * g->cols, (gsize) g->cols * sizeof (float)) != 0)
        return FALSE;
    }
  return TRUE;
}

/* A part of the grid: a tensor of its own holding a copy of `data`. */
static LpTensor *
grid_part (const char *name, int i, LpDType dtype, int n_dims, const gint64 *shape, const void *data, gsize n)
{
  g_autofree char *part = g_strconcat (name, grid_parts[i].suffix, NULL);
  g_autoptr (GBytes) bytes = g_bytes_new (data, n);
  return lp_tensor_new_from_bytes (part, dtype, n_dims, shape, bytes, NULL);
}

GPtrArray *
lp_tensor_grid_parts (const LpTensor *t, LpMeta *meta)
{
  const LpIntGrid *g = lp_tensor_int_grid (t);
  if (g == NULL || t->n_dims != 2 || !grid_holds_values (t, g))
    return NULL;
  const gint64 R = g->rows, C = g->cols, G = g->n_groups;
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_ptr_array_add (out, grid_part (t->name, 0, LP_DTYPE_I8, 2, (gint64[]){ R, C }, g->codes, (gsize) (R * C)));
  g_ptr_array_add (out, grid_part (t->name, 1, LP_DTYPE_F16, 2, (gint64[]){ R, G }, g->scales,
                                   (gsize) (R * G) * sizeof (guint16)));
  g_ptr_array_add (out, grid_part (t->name, 2, LP_DTYPE_I8, 2, (gint64[]){ R, G }, g->zeros, (gsize) (R * G)));
  g_ptr_array_add (out, grid_part (t->name, 3, LP_DTYPE_I32, 1, &C, g->g_idx, (gsize) C * sizeof (gint32)));
  g_autofree char *bits = grid_key (t->name, "bits");
  g_autofree char *group = grid_key (t->name, "group"), *sym = grid_key (t->name, "symmetric");
  lp_meta_set_u32 (meta, bits, (guint32) g->bits);
  lp_meta_set_u32 (meta, group, (guint32) g->group_size);
  lp_meta_set_bool (meta, sym, g->symmetric);
  return out;
}

/* The grid of `name` from its parts and keys, every field checked: codes
 * and zeros on the grid, g_idx naming groups that exist. */
static LpIntGrid *
grid_from_parts (const char *src, const char *name, LpTensor **parts, gint64 bits, gint64 group, gboolean sym,
                 GError **error)
{
  LpTensor *codes = parts[0], *scales = parts[1], *zeros = parts[2], *gidx = parts[3];
  gboolean shapes = codes->dtype == LP_DTYPE_I8 && codes->n_dims == 2 && scales->dtype == LP_DTYPE_F16
                    && scales->n_dims == 2 && zeros->dtype == LP_DTYPE_I8 && zeros->n_dims == 2
                    && gidx->dtype == LP_DTYPE_I32 && gidx->n_dims == 1 && bits >= 2 && bits <= 8 && group >= 1
                    && group <= codes->shape[1] && scales->shape[0] == codes->shape[0]
                    && zeros->shape[0] == codes->shape[0] && gidx->shape[0] == codes->shape[1]
                    && scales->shape[1] == (codes->shape[1] + group - 1) / group && zeros->shape[1] == scales->shape[1];
  if (!shapes)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: tensor %s: grid: expected i8 codes [R, C], f16 scales and i8 zeros [R, ceil (C / group)], "
                    "i32 g_idx [C], 2 <= bits <= 8, found bits %" G_GINT64_FORMAT ", group %" G_GINT64_FORMAT
                    ", codes %s [%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT "], scales %s, zeros %s, g_idx %s",
                    src, name, bits, group, lp_dtype_name (codes->dtype), codes->shape[0],
                    codes->n_dims > 1 ? codes->shape[1] : 0, lp_dtype_name (scales->dtype),
                    lp_dtype_name (zeros->dtype), lp_dtype_name (gidx->dtype));
      return NULL;
    }
  g_autoptr (LpIntGrid) g = lp_int_grid_new (codes->shape[0], codes->shape[1], (int) bits, (int) group, sym, error);
  if (g == NULL)
    return NULL;
  const gint64 R = g->rows, C = g->cols, G = g->n_groups;
  memcpy (g->codes, lp_tensor_data (codes), (gsize) (R * C));
  memcpy (g->scales, lp_tensor_data (scales), (gsize) (R * G) * sizeof (guint16));
  memcpy (g->zeros, lp_tensor_data (zeros), (gsize) (R * G));
  memcpy (g->g_idx, lp_tensor_data (gidx), (gsize) C * sizeof (gint32));
  const int maxq = (1 << bits) - 1;
  for (gint64 i = 0; i < R * C; i++)
    if (g->codes[i] > maxq)
      {
        lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: grid: expected codes 0..%d, found %d at %" G_GINT64_FORMAT,
                      src, name, maxq, g->codes[i], i);
        return NULL;
      }
  for (gint64 i = 0; i < R * G; i++)
    if (g->zeros[i] > maxq)
      {
        lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: grid: expected zeros 0..%d, found %d at %" G_GINT64_FORMAT,
                      src, name, maxq, g->zeros[i], i);
        return NULL;
      }
  for (gint64 c = 0; c < C; c++)
    if (g->g_idx[c] < 0 || g->g_idx[c] >= G)
      {
        lp_set_error (error, LP_ERROR_FORMAT,
                      "%s: tensor %s: grid: expected g_idx 0..%" G_GINT64_FORMAT ", found %d at %" G_GINT64_FORMAT, src,
                      name, G - 1, g->g_idx[c], c);
        return NULL;
      }
  return g_steal_pointer (&g);
}

/* Each grid written as parts comes back from them and its bits, group and
 * symmetry, where its codes stood. */
static gboolean
grid_restore (LpModel *model, GError **error)
{
  const char *src = lp_model_source (model) ? lp_model_source (model) : "model";
  LpMeta *meta = lp_model_meta (model);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      const char *part = lp_model_tensor_at (model, i)->name;
      if (g_str_has_suffix (part, grid_parts[0].suffix))
        g_ptr_array_add (names, g_strndup (part, strlen (part) - strlen (grid_parts[0].suffix)));
    }
  for (guint i = 0; i < names->len; i++)
    {
      const char *name = names->pdata[i];
      g_autofree char *bk = grid_key (name, "bits"), *gk = grid_key (name, "group"), *sk = grid_key (name, "symmetric");
      gint64 bits, group;
      gboolean sym;
      LpTensor *parts[4];
      if (!lp_meta_get_int (meta, bk, &bits, error) || !lp_meta_get_int (meta, gk, &group, error)
          || !lp_meta_get_bool (meta, sk, &sym, error))
        {
          lp_error_prefix (error, src);
          return FALSE;
        }
      for (int p = 0; grid_parts[p].suffix != NULL; p++)
        {
          g_autofree char *part = g_strconcat (name, grid_parts[p].suffix, NULL);
          if ((parts[p] = lp_model_tensor (model, part)) == NULL)
            {
              lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected every grid part beside %s%s, found %s missing",
                            src, name, name, grid_parts[0].suffix, part);
              return FALSE;
            }
        }
      g_autoptr (LpIntGrid) g = grid_from_parts (src, name, parts, bits, group, sym, error);
      if (g == NULL)
        return FALSE;
      g_autoptr (LpTensor) t = lp_tensor_new_int_grid (name, 2, (gint64[]){ g->rows, g->cols }, g, NULL, error);
      if (t == NULL)
        return FALSE;
      g_autofree char *first = g_strconcat (name, grid_parts[0].suffix, NULL);
      lp_model_put_tensor_at (model, first, t);
      for (int p = 1; grid_parts[p].suffix != NULL; p++)
        {
          g_autofree char *part = g_strconcat (name, grid_parts[p].suffix, NULL);
          lp_model_remove_tensor (model, part);
        }
      lp_meta_remove (meta, bk);
      lp_meta_remove (meta, gk);
      lp_meta_remove (meta, sk);
    }
  return TRUE;
}
