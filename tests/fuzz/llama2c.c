/* Fuzz target: a llama2.c checkpoint (seven int32 header fields, then the
 * f32 arrays they size), beside the tiny model's real tokenizer.bin, which
 * the loader reads with the vocabulary size the header claims. */
#include "model-use.h"

LP_FUZZ_TARGET (llama2c)
{
  const char *dir = lp_fuzz_model_dir ("llama2c");
  g_autofree char *base = g_path_get_basename (dir);
  g_autofree char *name = g_build_filename (base, "fuzz.bin", NULL);
  const char *path = lp_fuzz_write (name, data, size);
  g_autoptr (LpModel) model = lp_llama2c_load (path, NULL, NULL);
  lp_fuzz_use_model (model);
  return model != NULL;
}
