/* Test-only plugin declaring a pass name the io plugin already has. */
#include "config.h"

#include <llmpress/llmpress.h>

static gboolean
nop_run (LpPassContext *ctx, GError **error)
{
  return TRUE;
}

static const LpPassInfo load2 = { .name = "load", .summary = "a second load", .output = LP_ARTIFACT_NONE, .run = nop_run };
static const LpPassInfo *const passes[] = { &load2, NULL };

LP_PLUGIN_DEFINE ("duppass", "1", "MIT", passes)
