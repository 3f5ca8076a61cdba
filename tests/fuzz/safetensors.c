/* Fuzz target: one .safetensors file (header JSON, offsets, dtypes,
 * __metadata__), opened and every small tensor decoded. */
#include <llmpress/llmpress.h>

#include "fuzz.h"

LP_FUZZ_TARGET (safetensors)
{
  const char *path = lp_fuzz_write ("fuzz.safetensors", data, size);
  g_autoptr (LpSafetensors) st = lp_safetensors_open (path, NULL);
  if (st == NULL)
    return 0;
  (void) lp_safetensors_metadata (st);
  for (guint i = 0; i < lp_safetensors_n_tensors (st); i++)
    {
      LpTensor *t = lp_safetensors_tensor_at (st, i);
      (void) lp_safetensors_tensor (st, t->name);
      if (lp_tensor_n_elements (t) <= (1 << 16))
        g_free (lp_tensor_dup_f32 (t, NULL));
    }
  return 1;
}
