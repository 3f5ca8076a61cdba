/* llmpress — the forward pass's weights in backend memory.
 *
 * Weights are uploaded once per LpForward into per-layer slots (one more
 * slot holds the embedding table, the final norm and the head) and kept
 * across calls, under a byte budget (lp_forward_set_device_memory): when
 * over it, the least recently used slots are dropped and uploaded again when
 * next needed.  Slots are the handles: a slot keeps a reference to the model
 * tensor it was uploaded from, so a tensor replaced in the model is uploaded
 * again.  On the CPU, weights the kernels read as stored are not copied:
 * the slot wraps the model tensor's memory. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

#include "forward-internal.h"

static const char *const layer_weight_names[LP_FW_COUNT] = {
  "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
  "attn_q.bias", "attn_k.bias", "attn_v.bias",
  "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
};

static void
weight_clear (LpForward *fw, LpForwardWeight *w)
{
  if (w->t != NULL && w->borrowed)
    {
      g_free (w->t->name);
      g_free (w->t);
    }
  else
    lp_ctensor_free (w->t);
  for (int i = 0; i < 4; i++)
    lp_ctensor_free (w->grid[i]);
  if (w->src != NULL)
    lp_tensor_unref (w->src);
  fw->resident -= w->bytes;
  memset (w, 0, sizeof *w);
}

static void
slot_clear (LpForward *fw, LpForwardSlot *s)
{
  for (int i = 0; i < LP_FW_COUNT; i++)
    weight_clear (fw, &s->w[i]);
}

/* The integer grid a backend multiplies natively instead of t's f32
 * values, or NULL: the CPU keeps the f32 path (the one place this file
 * looks at a tensor's grid). */
static const LpIntGrid *
weight_grid (const LpTensor *t, LpBackend *be)
{
  if (t->grid == NULL || lp_backend_is_cpu (be) || be->ops->supports_op == NULL
      || !be->ops->supports_op (be, LP_OP_GEMM_GRID))
    return NULL;
  return t->grid;
}

static gboolean
upload_grid (LpForward *fw, LpForwardWeight *w, const LpIntGrid *grid, GError **error)
{
  const gint64 N = grid->rows, K = grid->cols, G = grid->n_groups;
  const struct {
    LpDType dtype;
    int n_dims;
    gint64 shape[2];
    const void *data;
  } parts[4] = {
    { LP_DTYPE_I8, 2, { N, K }, grid->codes },
    { LP_DTYPE_I16, 2, { N, G }, grid->scales },
    { LP_DTYPE_I8, 2, { N, G }, grid->zeros },
    { LP_DTYPE_I32, 1, { K }, grid->g_idx },
  };
  for (int i = 0; i < 4; i++)
    {
      w->grid[i] = lp_ctensor_new (fw->be, parts[i].dtype, parts[i].n_dims, parts[i].shape, w->src->name, error);
      if (w->grid[i] == NULL)
        return FALSE;
      lp_ctensor_write (w->grid[i], 0, parts[i].data, w->grid[i]->n_bytes);
      w->bytes += w->grid[i]->n_bytes;
    }
  w->bits = grid->bits;
  w->group = grid->group_size;
  return TRUE;
}

/* t's values as stored (f32 or any type the kernels decode), or as f32. */
static gboolean
upload_tensor (LpForward *fw, LpForwardWeight *w, LpTensor *t, gboolean as_stored, GError **error)
{
  const LpDTypeInfo *info = lp_dtype_info (t->dtype);
  if (t->dtype != LP_DTYPE_F32 && (!as_stored || info == NULL || !info->supported))
    {
      g_autofree float *x = lp_tensor_dup_f32 (t, error);
      if (x == NULL || (w->t = lp_ctensor_new (fw->be, LP_DTYPE_F32, t->n_dims, t->shape, t->name, error)) == NULL)
        return FALSE;
      lp_ctensor_write (w->t, 0, x, w->t->n_bytes);
    }
  else if (lp_backend_is_cpu (fw->be))
    {
      w->t = g_new0 (LpCTensor, 1);
      *w->t = (LpCTensor) { .dtype = t->dtype, .n_dims = t->n_dims, .n_bytes = lp_tensor_n_bytes (t), .be = fw->be,
                            .buf = (gpointer) lp_tensor_data (t), .name = g_strdup (t->name) };
      memcpy (w->t->shape, t->shape, sizeof t->shape);
      w->borrowed = TRUE;
    }
  else if ((w->t = lp_ctensor_from_tensor (fw->be, t, error)) == NULL)
    return FALSE;
  w->bytes = w->t->n_bytes;
  return TRUE;
}

/* w holds the model's tensor `name`, uploaded as `kind` asks (again when
 * the model's tensor is not the one uploaded). */
static gboolean
weight_ensure (LpForward *fw, LpForwardWeight *w, const char *name, LpForwardWeightKind kind, GError **error)
{
  LpTensor *t = lp_model_tensor (fw->model, name);
  if (t != NULL && w->src == t)
    return TRUE;
  weight_clear (fw, w);
  if (t == NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: expected a tensor %s, found none",
                    lp_model_source (fw->model) ? lp_model_source (fw->model) : "model", name);
      return FALSE;
    }
  w->src = lp_tensor_ref (t);
  const LpIntGrid *grid = kind == LP_FW_MATRIX ? weight_grid (t, fw->be) : NULL;
  gboolean ok = grid != NULL ? upload_grid (fw, w, grid, error) : upload_tensor (fw, w, t, kind != LP_FW_VECTOR, error);
  fw->resident += w->bytes;
  fw->uploads++;
  if (!ok)
    weight_clear (fw, w);
  return ok;
}

/* Drop the least recently used slots (never `keep`) while over the budget. */
static void
budget_enforce (LpForward *fw, int keep)
{
  while (fw->budget > 0 && fw->resident > fw->budget)
    {
      int lru = -1;
      for (int l = 0; l <= fw->c.n_layers; l++)
        {
          gboolean held = FALSE;
          for (int i = 0; i < LP_FW_COUNT; i++)
            held |= fw->slots[l].w[i].bytes > 0;
          if (l != keep && held && (lru < 0 || fw->slots[l].last_use < fw->slots[lru].last_use))
            lru = l;
        }
      if (lru < 0)
        return;
      slot_clear (fw, &fw->slots[lru]);
    }
}

static void
slot_touch (LpForward *fw, int slot)
{
  fw->slots[slot].last_use = ++fw->clock;
  budget_enforce (fw, slot);
}

/* Layer `layer`'s weights in backend memory (LP_FW_QB.. only with q/k/v biases). */
LpForwardWeight *
lp_forward_layer_weights (LpForward *fw, int layer, GError **error)
{
  gboolean bias = lp_arch_info (fw->c.arch)->qkv_bias;
  LpForwardWeight *w = fw->slots[layer].w;
  for (int i = 0; i < LP_FW_COUNT; i++)
    {
      if ((i == LP_FW_QB || i == LP_FW_KB || i == LP_FW_VB) && !bias)
        continue;
      g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, layer_weight_names[i]);
      gboolean vector = i == LP_FW_ATTN_NORM || i == LP_FW_FFN_NORM || i == LP_FW_QB || i == LP_FW_KB || i == LP_FW_VB;
      if (!weight_ensure (fw, &w[i], name, vector ? LP_FW_VECTOR : LP_FW_MATRIX, error))
        return NULL;
    }
  slot_touch (fw, layer);
  return w;
}

/* The weights outside the blocks: the embedding table, or the final norm
 * and the head (the embedding table itself when tied and read as stored). */
LpForwardWeight *
lp_forward_top_weights (LpForward *fw, gboolean head, GError **error)
{
  LpForwardWeight *w = fw->slots[fw->c.n_layers].w;
  if (!head && !weight_ensure (fw, &w[LP_FW_TOP_EMBED], "token_embd.weight", LP_FW_TABLE, error))
    return NULL;
  if (head)
    {
      LpTensor *emb = lp_model_tensor (fw->model, "token_embd.weight");
      gboolean share = fw->c.tied_embeddings && emb != NULL && weight_grid (emb, fw->be) == NULL;
      const char *head_name = fw->c.tied_embeddings ? "token_embd.weight" : "output.weight";
      if (!weight_ensure (fw, &w[LP_FW_TOP_NORM], "output_norm.weight", LP_FW_VECTOR, error)
          || (share && !weight_ensure (fw, &w[LP_FW_TOP_EMBED], "token_embd.weight", LP_FW_TABLE, error))
          || (!share && !weight_ensure (fw, &w[LP_FW_TOP_HEAD], head_name, LP_FW_MATRIX, error)))
        return NULL;
      if (share)
        weight_clear (fw, &w[LP_FW_TOP_HEAD]);
    }
  slot_touch (fw, fw->c.n_layers);
  return w;
}

const LpForwardWeight *
lp_forward_head_weight (const LpForwardWeight *top)
{
  return top[LP_FW_TOP_HEAD].src != NULL ? &top[LP_FW_TOP_HEAD] : &top[LP_FW_TOP_EMBED];
}

void
lp_forward_set_device_memory (LpForward *fw, guint64 bytes)
{
  fw->budget = bytes;
  budget_enforce (fw, -1);
}

void
lp_forward_weight_stats (LpForward *fw, guint64 *resident_bytes, guint64 *uploads)
{
  if (resident_bytes)
    *resident_bytes = fw->resident;
  if (uploads)
    *uploads = fw->uploads;
}

void
lp_forward_weights_clear (LpForward *fw)
{
  for (int l = 0; l <= fw->c.n_layers; l++)
    slot_clear (fw, &fw->slots[l]);
}

void
lp_forward_invalidate (LpForward *fw)
{
  lp_forward_weights_clear (fw);
}
