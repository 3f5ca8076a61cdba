/* Fuzz target: a SentencePiece tokenizer.model (protobuf ModelProto), read
 * and then used to encode and decode. */
#include <llmpress/llmpress.h>

#include "fuzz.h"

LP_FUZZ_TARGET (tokenizer_model)
{
  const char *path = lp_fuzz_write ("tokenizer.model", data, size);
  g_autoptr (LpMeta) meta = lp_meta_new ();
  if (!lp_tokenizer_read_spm (path, meta, NULL))
    return 0;
  lp_fuzz_use_tokenizer (meta);
  return 1;
}
