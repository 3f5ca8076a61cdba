/* Fuzz target: a Hugging Face tokenizer.json (BPE vocabulary, merges,
 * pre-tokenizer, added tokens), read and then used to encode and decode. */
#include <llmpress/llmpress.h>

#include "fuzz.h"

LP_FUZZ_TARGET (tokenizer_json)
{
  const char *path = lp_fuzz_write ("tokenizer.json", data, size);
  g_autoptr (LpMeta) meta = lp_meta_new ();
  if (!lp_tokenizer_read_hf (path, meta, NULL))
    return 0;
  lp_fuzz_use_tokenizer (meta);
  return 1;
}
