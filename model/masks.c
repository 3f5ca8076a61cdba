/* llmpress — a masked tensor's record in the model metadata
 * (llmpress.sparsity.tensor.<name>, sparsity.h): written when a pass prunes
 * a tensor, read when a model is loaded to give back the keep-masks its file
 * lost.  Here, below formats/, because lp_model_load needs it; the pruning
 * itself is in compress/sparsity.c. */
#include "config.h"

#include "lp-internal.h"
#include <llmpress/sparsity.h>

void
lp_sparsity_record_tensor (LpMeta *meta, const LpTensor *t)
{
  g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
  lp_meta_set_f32 (meta, key, (float) lp_tensor_sparsity (t));
}

gboolean
lp_sparsity_restore_masks (LpModel *model, GError **error)
{
  LpMeta *meta = lp_model_meta (model);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
      double recorded;
      if (t->mask != NULL || !lp_meta_get_float (meta, key, &recorded, NULL))
        continue;
      g_autofree float *v = lp_tensor_dup_f32 (t, error);
      if (v == NULL)
        return FALSE;
      g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, lp_tensor_n_elements (t));
      g_autoptr (LpTensor) masked = lp_tensor_with_mask (t, mask, error);
      if (masked == NULL)
        return FALSE;
      /* A later step that did not keep the zeros exact (a quantizer with an
       * offset) leaves fewer zeros than recorded: the mask is unknown then. */
      if (lp_tensor_sparsity (masked) + 1e-6 < recorded)
        continue;
      lp_model_set_tensor (model, masked);
    }
  return TRUE;
}
