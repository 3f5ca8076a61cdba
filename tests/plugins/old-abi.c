/* Test-only plugin built for plugin ABI 1.3, before passes declared
 * LP_PASS_USES_CALIBRATION: it loads, and its pass is taken to read the
 * calibration data (so the data stays in its cache key). */
#include "config.h"

#include <llmpress/llmpress.h>

static gboolean
nop_run (LpPassContext *ctx, GError **error)
{
  return TRUE;
}

static const LpPassInfo nop = {
  .name = "old.abi",
  .summary = "a pass of an ABI 1.3 plugin",
  .output = LP_ARTIFACT_NONE,
  .run = nop_run,
};
static const LpPassInfo *const passes[] = { &nop, NULL };

G_MODULE_EXPORT const LpPluginInfo *lp_plugin_get_info (void);

G_MODULE_EXPORT const LpPluginInfo *
lp_plugin_get_info (void)
{
  static const LpPluginInfo info = {
    .abi_major = 1,
    .abi_minor = LP_PLUGIN_ABI_MINOR_CALIBRATION_FLAG - 1,
    .info_size = sizeof (LpPluginInfo),
    .name = "oldabi",
    .version = "1",
    .license = "MIT",
    .passes = passes,
  };
  return &info;
}
