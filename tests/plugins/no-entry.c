/* Test-only shared object with no llmpress entry point: must be refused. */
#include "config.h"

#include <gmodule.h>

G_MODULE_EXPORT int not_a_plugin (void);

G_MODULE_EXPORT int
not_a_plugin (void)
{
  return 42;
}
