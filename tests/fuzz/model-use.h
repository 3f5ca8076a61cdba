/* llmpress fuzz targets — what the model-reading targets do with a model
 * that loaded: validate it, decode its small tensors, use its tokenizer. */
#pragma once

#include <llmpress/llmpress.h>

#include "fuzz.h"

static inline void
lp_fuzz_use_model (LpModel *model)
{
  if (model == NULL)
    return;
  (void) lp_model_validate (model, NULL);
  (void) lp_model_n_params (model);
  (void) lp_model_n_bytes (model);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      /* Small tensors only: a fuzzed shape may claim gigabytes of f32. */
      if (lp_tensor_n_elements (t) <= (1 << 16))
        g_free (lp_tensor_dup_f32 (t, NULL));
    }
  lp_fuzz_use_tokenizer (lp_model_meta (model));
}

/* Load the tiny model's directory saved as `format` ("hf", "hf-sharded")
 * with its file `name` replaced by the input. */
static inline int
lp_fuzz_hf_with (const char *format, const char *name, const uint8_t *data, size_t size)
{
  const char *dir = lp_fuzz_model_dir (format);
  g_autofree char *base = g_path_get_basename (dir);
  g_autofree char *rel = g_build_filename (base, name, NULL);
  lp_fuzz_write (rel, data, size);
  g_autoptr (LpModel) model = lp_hf_load (dir, NULL);
  lp_fuzz_use_model (model);
  return model != NULL;
}
