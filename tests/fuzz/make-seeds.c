/* llmpress fuzz targets — `make-seeds TARGET DIR`: write the seeds the
 * library's writers make for TARGET into DIR (for `make fuzz`). */
#include <stdio.h>

#include "fuzz.h"

int
main (int argc, char **argv)
{
  if (argc != 3)
    {
      fprintf (stderr, "usage: make-seeds TARGET DIR\n");
      return 2;
    }
  lp_fuzz_init ();
  GError *error = NULL;
  if (!lp_fuzz_make_seeds (argv[1], argv[2], &error))
    {
      fprintf (stderr, "make-seeds: %s\n", error->message);
      return 1;
    }
  return 0;
}
