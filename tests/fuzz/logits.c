/* Fuzz target: teacher logits as lp_logits_load reads them (a cache
 * entry's logits.gguf), then every window walked as a student would read
 * it and checked against the tiny model's vocabulary. */
#include <math.h>
#include <llmpress/llmpress.h>

#include "fuzz.h"

LP_FUZZ_TARGET (logits)
{
  const char *path = lp_fuzz_write ("logits.gguf", data, size);
  g_autoptr (LpLogits) lg = lp_logits_load (path, NULL);
  if (lg == NULL)
    return 0;
  int L = lp_logits_seq_len (lg), k = lp_logits_k (lg);
  gint64 V = lp_logits_n_vocab (lg);
  double sum = 0.0;
  for (int i = 0; i < lp_logits_n_windows (lg); i++)
    {
      const gint32 *ids, *tokens = lp_logits_tokens (lg, i);
      const float *logp, *rest;
      lp_logits_window (lg, i, &ids, &logp, &rest);
      for (gint64 e = 0; e < (gint64) L * k; e++)
        {
          g_assert (ids[e] >= 0 && ids[e] < V); /* the loader's promise */
          sum += logp[e];
        }
      for (int t = 0; t < L; t++)
        {
          g_assert (tokens[t] >= 0 && tokens[t] < V);
          sum += rest[t];
        }
    }
  g_assert (sum <= 0.0); /* log-probabilities, none NaN */
  g_autoptr (LpModel) tiny = lp_fuzz_tiny_model ();
  lp_logits_check_student (lg, tiny, NULL);
  return 1;
}
