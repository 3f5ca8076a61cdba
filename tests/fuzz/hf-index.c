/* Fuzz target: model.safetensors.index.json of a sharded Hugging Face
 * directory (the tiny model's real config and shards beside it). */
#include "model-use.h"

LP_FUZZ_TARGET (hf_index)
{
  return lp_fuzz_hf_with ("hf-sharded", "model.safetensors.index.json", data, size);
}
