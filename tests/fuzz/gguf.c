/* Fuzz target: a GGUF file, loaded as a model (header, metadata, tensor
 * table, tokenizer vocabulary) and then used. */
#include "model-use.h"

LP_FUZZ_TARGET (gguf)
{
  const char *path = lp_fuzz_write ("fuzz.gguf", data, size);
  g_autoptr (LpModel) model = lp_gguf_load (path, NULL);
  lp_fuzz_use_model (model);
  return model != NULL;
}
