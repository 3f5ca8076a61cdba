/* Test-only plugin built for a future ABI: must be refused. */
#include "config.h"

#include <llmpress/llmpress.h>

static gboolean
nop_run (LpPassContext *ctx, GError **error)
{
  return TRUE;
}

static const LpPassInfo nop = { .name = "bad.abi", .summary = "never loaded", .output = LP_ARTIFACT_NONE, .run = nop_run };
static const LpPassInfo *const passes[] = { &nop, NULL };

G_MODULE_EXPORT const LpPluginInfo *lp_plugin_get_info (void);

G_MODULE_EXPORT const LpPluginInfo *
lp_plugin_get_info (void)
{
  static const LpPluginInfo info = { 99, 0, sizeof (LpPluginInfo), "badabi", "1", "MIT", passes };
  return &info;
}
