/* llmpress — a masked tensor's record in the model metadata
 * (llmpress.sparsity.tensor.<name>, sparsity.h): written when a pass prunes
 * a tensor and by the masked form when a file is written (form_masked.c,
 * whose restore reads it back when a model is loaded).  Here, below
 * formats/, because the writers need it; the pruning itself is in
 * compress/sparsity.c. */
#include "config.h"

#include "lp-internal.h"
#include <llmpress/sparsity.h>

void
lp_sparsity_record_tensor (LpMeta *meta, const LpTensor *t)
{
  g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
  lp_meta_set_f32 (meta, key, (float) lp_tensor_sparsity (t));
}
