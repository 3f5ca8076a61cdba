/* Fuzz target: a llama2.c tokenizer.bin, read whole (as `tokenize` does
 * without a model) and then used to encode and decode. */
#include <llmpress/llmpress.h>

#include "fuzz.h"

LP_FUZZ_TARGET (tokenizer_bin)
{
  const char *path = lp_fuzz_write ("tokenizer.bin", data, size);
  g_autoptr (LpMeta) meta = lp_meta_new ();
  if (!lp_tokenizer_read_llama2c (path, 0, meta, NULL))
    return 0;
  lp_fuzz_use_tokenizer (meta);
  return 1;
}
