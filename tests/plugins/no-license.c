/* Test-only plugin missing a required descriptor field (license). */
#include "config.h"

#include <llmpress/llmpress.h>

static gboolean
nop_run (LpPassContext *ctx, GError **error)
{
  return TRUE;
}

static const LpPassInfo nop = { .name = "bad.license", .summary = "never loaded", .output = LP_ARTIFACT_NONE, .run = nop_run };
static const LpPassInfo *const passes[] = { &nop, NULL };

LP_PLUGIN_DEFINE ("nolicense", "1", NULL, passes)
