/* llmpress — library version. */
#include "config.h"

#include "lp-internal.h"

const char *
lp_version (void)
{
  return LP_VERSION;
}
