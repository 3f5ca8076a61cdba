/* Write the demo model (lp_model_synth, default options) to a path: the
 * model the installcheck and example specs run on. */
#include "config.h"

#include <stdio.h>
#include <llmpress/llmpress.h>

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: write-synth OUT.gguf\n");
      return 2;
    }
  GError *error = NULL;
  LpSynthOptions opts = LP_SYNTH_OPTIONS_INIT;
  LpModel *m = lp_model_synth (&opts, &error);
  if (m == NULL || !lp_model_save (m, argv[1], NULL, &error))
    {
      fprintf (stderr, "write-synth: %s\n", error->message);
      return 1;
    }
  lp_model_unref (m);
  return 0;
}
