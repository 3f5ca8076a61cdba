/* llmpress fuzz targets — the list, for the replay test.  Names are the
 * folders under tests/fuzz/seeds/ and tests/fuzz/regressions/ and the
 * programs tests/fuzz/fuzz-NAME. */
#pragma once

#include "fuzz.h"

#define LP_FUZZ_DECLARE(id) int lp_fuzz_##id (const uint8_t *data, size_t size);
LP_FUZZ_DECLARE (gguf)
LP_FUZZ_DECLARE (safetensors)
LP_FUZZ_DECLARE (hf_config)
LP_FUZZ_DECLARE (hf_index)
LP_FUZZ_DECLARE (tokenizer_json)
LP_FUZZ_DECLARE (tokenizer_model)
LP_FUZZ_DECLARE (tokenizer_bin)
LP_FUZZ_DECLARE (llama2c)
LP_FUZZ_DECLARE (imatrix)
LP_FUZZ_DECLARE (logits)
LP_FUZZ_DECLARE (spec_ini)
LP_FUZZ_DECLARE (spec_inline)

typedef struct {
  const char *name;
  LpFuzzFunc func;
} LpFuzzTarget;

static const LpFuzzTarget lp_fuzz_targets[] = {
  { "gguf", lp_fuzz_gguf },
  { "safetensors", lp_fuzz_safetensors },
  { "hf-config", lp_fuzz_hf_config },
  { "hf-index", lp_fuzz_hf_index },
  { "tokenizer-json", lp_fuzz_tokenizer_json },
  { "tokenizer-model", lp_fuzz_tokenizer_model },
  { "tokenizer-bin", lp_fuzz_tokenizer_bin },
  { "llama2c", lp_fuzz_llama2c },
  { "imatrix", lp_fuzz_imatrix },
  { "logits", lp_fuzz_logits },
  { "spec-ini", lp_fuzz_spec_ini },
  { "spec-inline", lp_fuzz_spec_inline },
};
