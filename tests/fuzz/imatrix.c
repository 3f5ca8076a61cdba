/* Fuzz target: activation statistics as lp_stats_load reads them: our
 * stats GGUF, llama.cpp's imatrix GGUF, or a legacy imatrix.dat (the first
 * four bytes choose). */
#include <llmpress/llmpress.h>

#include "fuzz.h"

LP_FUZZ_TARGET (imatrix)
{
  const char *path = lp_fuzz_write ("imatrix.dat", data, size);
  g_autoptr (LpStats) stats = lp_stats_load (path, NULL);
  if (stats == NULL)
    return 0;
  g_autoptr (GPtrArray) names = lp_stats_names (stats);
  for (guint i = 0; i < names->len; i++)
    {
      const LpActStats *e = lp_stats_lookup (stats, g_ptr_array_index (names, i));
      if (e == NULL || e->n <= 0 || e->n > (1 << 20))
        continue;
      g_autofree float *m = g_new (float, e->n);
      lp_stats_mean_sq (e, m);
    }
  return 1;
}
