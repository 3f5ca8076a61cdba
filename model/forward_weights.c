/* llmpress — the forward pass's weights in backend memory.
 *
 * Weights are uploaded once per LpForward into per-layer slots (one more
 * slot holds the embedding table, the final norm and the head) and kept
 * across calls, under a byte budget (lp_forward_set_device_memory): when
 * over it, the least recently used slots are dropped and uploaded again when
 * next needed.  Slots are the handles: a slot keeps a reference to the model
 * tensor it was uploaded from, so a tensor replaced in the model is uploaded
 * again.  On the CPU, weights the kernels read as stored are not copied:
 * the slot wraps the model tensor's memory.  A matrix is uploaded by its
 * form (form.h: as stored, an integer grid on a device, low-rank factors,
 * ...); this file never asks which. */
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
  lp_form_weights_free (w->form);
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
  w->form = kind == LP_FW_MATRIX ? lp_form_weights_new (t, fw->be, FALSE, error)
                                 : lp_form_weights_new_values (t, fw->be, kind == LP_FW_TABLE, error);
  if (w->form == NULL)
    {
      weight_clear (fw, w);
      return FALSE;
    }
  w->t = w->form->values;
  w->bytes = w->form->bytes;
  fw->resident += w->bytes;
  fw->uploads++;
  return TRUE;
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
          gboolean held = FALSE, train = FALSE;
          for (int i = 0; i < LP_FW_COUNT; i++)
            {
              held |= fw->slots[l].w[i].bytes > 0;
              train |= fw->slots[l].w[i].train;
            }
          /* Trained weights are the trainer's state: never dropped. */
          if (l != keep && held && !train && (lru < 0 || fw->slots[l].last_use < fw->slots[lru].last_use))
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
 * and the head.  Tied, the head is the embedding's matrix, and when its
 * form holds the values as stored the lookup reads those: one upload. */
LpForwardWeight *
lp_forward_top_weights (LpForward *fw, gboolean head, GError **error)
{
  LpForwardWeight *w = fw->slots[fw->c.n_layers].w;
  gboolean tied = fw->c.tied_embeddings;
  if ((head || tied)
      && !weight_ensure (fw, &w[LP_FW_TOP_HEAD], tied ? "token_embd.weight" : "output.weight", LP_FW_MATRIX, error))
    return NULL;
  if (head && !weight_ensure (fw, &w[LP_FW_TOP_NORM], "output_norm.weight", LP_FW_VECTOR, error))
    return NULL;
  if (!head && tied && w[LP_FW_TOP_HEAD].t != NULL)
    weight_clear (fw, &w[LP_FW_TOP_EMBED]);
  else if (!head && !weight_ensure (fw, &w[LP_FW_TOP_EMBED], "token_embd.weight", LP_FW_TABLE, error))
    return NULL;
  slot_touch (fw, fw->c.n_layers);
  return w;
}

/* Where the forward pass reads model tensor `name` from (its slot's
 * weight), or NULL. */
static LpForwardWeight *
weight_of (LpForward *fw, const char *name)
{
  LpForwardWeight *top = fw->slots[fw->c.n_layers].w;
  int layer, end = 0;
  if (strcmp (name, "output_norm.weight") == 0)
    return &top[LP_FW_TOP_NORM];
  if (strcmp (name, "output.weight") == 0 && !fw->c.tied_embeddings)
    return &top[LP_FW_TOP_HEAD];
  /* Tied, the embedding table is the head's matrix, which the lookup reads too. */
  if (strcmp (name, "token_embd.weight") == 0)
    return &top[fw->c.tied_embeddings ? LP_FW_TOP_HEAD : LP_FW_TOP_EMBED];
  if (sscanf (name, "blk.%d.%n", &layer, &end) != 1 || end == 0 || layer < 0 || layer >= fw->c.n_layers)
    return NULL;
  gboolean bias = lp_arch_info (fw->c.arch)->qkv_bias;
  for (int i = 0; i < LP_FW_COUNT; i++)
    if (strcmp (name + end, layer_weight_names[i]) == 0
        && (bias || (i != LP_FW_QB && i != LP_FW_KB && i != LP_FW_VB)))
      return &fw->slots[layer].w[i];
  return NULL;
}

LpFormWeights *
lp_forward_weight_train (LpForward *fw, const char *name, LpFormTrain how, GError **error)
{
  LpForwardWeight *w = weight_of (fw, name);
  LpTensor *t = lp_model_tensor (fw->model, name);
  if (w == NULL || t == NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID, "tensor %s: expected a weight the forward pass reads, found %s", name,
                    t == NULL ? "no such tensor" : "one it does not read");
      return NULL;
    }
  if (w->train && w->src == t)
    return w->form;
  weight_clear (fw, w);
  w->form = lp_form_weights_new_train (t, fw->be, how, error);
  if (w->form == NULL)
    return NULL;
  w->src = lp_tensor_ref (t);
  w->t = w->form->values;
  w->bytes = w->form->bytes;
  w->train = TRUE;
  fw->resident += w->bytes;
  fw->uploads++;
  return w->form;
}

LpCTensor *
lp_forward_embed_table (const LpForwardWeight *top)
{
  return top[LP_FW_TOP_EMBED].t != NULL ? top[LP_FW_TOP_EMBED].t : top[LP_FW_TOP_HEAD].t;
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
