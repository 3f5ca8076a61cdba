/* Fuzz target: a Hugging Face config.json, beside the tiny model's real
 * safetensors and tokenizer, so a config that parses goes on to shape the
 * weights it describes. */
#include "model-use.h"

LP_FUZZ_TARGET (hf_config)
{
  return lp_fuzz_hf_with ("hf", "config.json", data, size);
}
