/* Test-only plugin that declares plugin ABI 1.4, the last of major 1 (before
 * LpActStats replaced LpLinearStats and LpStatsEntry): the loader must
 * refuse it with one line rather than let it misread the new layout. */
#include "config.h"

#include <llmpress/llmpress.h>

static gboolean
nop_run (LpPassContext *ctx, GError **error)
{
  return TRUE;
}

static const LpPassInfo nop = {
  .name = "old.abi",
  .summary = "a pass of an ABI 1.4 plugin",
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
    .abi_minor = 4,
    .info_size = sizeof (LpPluginInfo),
    .name = "oldabi",
    .version = "1",
    .license = "MIT",
    .passes = passes,
  };
  return &info;
}
