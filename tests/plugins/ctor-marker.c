/* Test-only shared object whose constructor writes the file named by
 * LLMPRESS_TEST_MARKER.  Built twice: ctor-no-entry has no entry point and
 * must be refused before dlopen, so the marker never appears; ctor-entry
 * exports one (for an ABI from the future) and shows what remains: a file
 * that exports the entry point runs its constructors when loaded, even if
 * its descriptor is then refused. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <llmpress/llmpress.h>

__attribute__ ((constructor)) static void
write_marker (void)
{
  const char *path = getenv ("LLMPRESS_TEST_MARKER");
  FILE *f = path != NULL ? fopen (path, "w") : NULL;
  if (f != NULL)
    {
      fputs ("constructor ran\n", f);
      fclose (f);
    }
}

#ifdef CTOR_WITH_ENTRY
static gboolean
nop_run (LpPassContext *ctx, GError **error)
{
  return TRUE;
}

static const LpPassInfo nop = { .name = "ctor.entry", .summary = "never registered", .output = LP_ARTIFACT_NONE, .run = nop_run };
static const LpPassInfo *const passes[] = { &nop, NULL };

G_MODULE_EXPORT const LpPluginInfo *lp_plugin_get_info (void);

G_MODULE_EXPORT const LpPluginInfo *
lp_plugin_get_info (void)
{
  static const LpPluginInfo info = { 99, 0, sizeof (LpPluginInfo), "ctorentry", "1", "MIT", passes };
  return &info;
}
#endif
