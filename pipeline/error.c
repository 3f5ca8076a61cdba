/* llmpress — the error domain. */
#include "config.h"

#include "lp-internal.h"

G_DEFINE_QUARK (llmpress-error-quark, lp_error)

void
lp_error_prefix (GError **error, const char *what)
{
  if (error != NULL && *error != NULL)
    g_prefix_error (error, "%s: ", what);
}
