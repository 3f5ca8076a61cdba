/* llmpress — the pass-plugin SDK: what a plugin exports.
 *
 * A plugin is a shared object exporting one function, LP_PLUGIN_ENTRY_POINT,
 * that returns a constant LpPluginInfo.  Build it with -fvisibility=hidden
 * and LP_PLUGIN_DEFINE, which exports only that function:
 *
 *   static const LpPassInfo my_pass = { .name = "prune.mine", ... };
 *   static const LpPassInfo *const passes[] = { &my_pass, NULL };
 *   LP_PLUGIN_DEFINE ("mine", "1.0", "MIT", passes)
 *
 * The loader checks abi_major (equal), abi_minor (not newer than the
 * library's) and info_size before it reads anything else, so a plugin built
 * against another SDK is refused, never run.  ABI 2 merged the calibration
 * and stats structs into LpActStats (other layout): 1.x plugins are refused. */
#pragma once

#include <glib.h>
#include <gmodule.h>
#include <llmpress/version.h>
#include <llmpress/artifact.h>
#include <llmpress/params.h>
#include <llmpress/context.h>

G_BEGIN_DECLS

/* The symbol the loader looks up. */
#define LP_PLUGIN_ENTRY_POINT "lp_plugin_get_info"

/* One input of a pass: "input" (the main one), "teacher", "reference", ...
 * A table ends with an entry whose name is NULL. */
typedef struct {
  const char *name;
  LpArtifactKind kind;  /* what it must be */
  gboolean optional;
  const char *help;
  gpointer reserved[2];
} LpInputSpec;

typedef enum {
  LP_PASS_FLAG_NONE = 0,
  LP_PASS_USES_DEVICE = 1 << 0,  /* holds an accelerator while it runs (one job per device) */
  /* Reads the calibration data (lp_pass_context_get_calibration, which
   * refuses a pass without it).  Only such passes carry the calibration
   * data in their cache keys (and so everything downstream of them): a new
   * calibration file reruns them, never a load or a save. */
  LP_PASS_USES_CALIBRATION = 1 << 1,
  /* Reads every branch of the sweeps above it in one run instead of fanning
   * out (select keeps the best of a sweep): "input" holds one artifact per
   * branch of the node it reads, each other input the branch that agrees
   * with it on the lists the two share, in the same order
   * (lp_pass_context_get_n_branches, _get_input_branch).  Nothing below it
   * fans out over those lists.  ABI 2.1. */
  LP_PASS_GATHERS = 1 << 2,
} LpPassFlags;

/* One pass.  `name` is "family.method" (prune.magnitude) or, for the io and
 * eval passes, a bare word (load, save, eval).  `run` reads its inputs and
 * parameters from ctx and publishes its result with
 * lp_pass_context_set_output*() (unless `output` is LP_ARTIFACT_NONE). */
typedef struct {
  const char *name;
  const char *summary;
  const LpParamSpec *params;   /* may be NULL: no parameters */
  const LpInputSpec *inputs;   /* may be NULL: a source (load) */
  LpArtifactKind output;
  guint flags;                 /* LpPassFlags */
  gboolean (*run) (LpPassContext *ctx, GError **error);
  gpointer reserved[4];
} LpPassInfo;

typedef struct {
  guint16 abi_major;        /* LP_PLUGIN_ABI_MAJOR */
  guint16 abi_minor;        /* LP_PLUGIN_ABI_MINOR */
  guint32 info_size;        /* sizeof (LpPluginInfo) */
  const char *name;
  const char *version;      /* goes into cache keys: bump it when results change */
  const char *license;
  const LpPassInfo *const *passes; /* NULL-terminated */
  gpointer reserved[4];
} LpPluginInfo;

typedef const LpPluginInfo *(*LpPluginEntryFunc) (void);

#define LP_PLUGIN_DEFINE(plugin_name, plugin_version, plugin_license, pass_list)        \
  G_MODULE_EXPORT const LpPluginInfo *lp_plugin_get_info (void);                        \
  G_MODULE_EXPORT const LpPluginInfo *lp_plugin_get_info (void)                         \
  {                                                                                     \
    static const LpPluginInfo info = { .abi_major = LP_PLUGIN_ABI_MAJOR,                \
                                       .abi_minor = LP_PLUGIN_ABI_MINOR,                \
                                       .info_size = sizeof (LpPluginInfo),              \
                                       .name = plugin_name,                             \
                                       .version = plugin_version,                       \
                                       .license = plugin_license,                       \
                                       .passes = pass_list };                           \
    return &info;                                                                       \
  }

G_END_DECLS
