/* llmpress — the pass registry: plugins found on LLMPRESS_PLUGIN_PATH and
 * in the installed plugins directory.  Not part of the SDK. */
#pragma once

#include <stdio.h>
#include <glib.h>
#include <llmpress/plugin.h>

G_BEGIN_DECLS

typedef struct _LpRegistry LpRegistry;

/* A pass and where it came from (borrowed from the registry). */
typedef struct {
  const LpPassInfo *info;
  const LpPluginInfo *plugin;
  const char *file;
  /* SHA-256 of the plugin file: a rebuilt plugin invalidates cached results
   * even when its author forgot to bump the version. */
  const char *file_digest;
} LpPassEntry;

/* A plugin file that was refused, and why (one line). */
typedef struct {
  char *file;
  char *reason;
} LpPluginReject;

LpRegistry *lp_registry_new (void);
void lp_registry_free (LpRegistry *reg);

/* Every directory of LLMPRESS_PLUGIN_PATH (':'-separated), then
 * LLMPRESS_PLUGIN_SYSTEM_PATH if set (empty: none) or else the installed
 * plugins directory.  A plugin whose file name was already loaded from an
 * earlier directory is shadowed silently; every refusal is recorded. */
void lp_registry_load_default (LpRegistry *reg);
void lp_registry_load_dir (LpRegistry *reg, const char *dir);
/* Load one plugin file; on refusal the reason is recorded and also returned. */
gboolean lp_registry_load_file (LpRegistry *reg, const char *path, GError **error);

/* Whether the ELF shared object in data[size] (the file `path`) exports
 * `symbol` (defined, global or weak, default or protected visibility) in its
 * dynamic symbol table, read without loading it.  FALSE with an error when
 * it is no 64-bit little-endian ELF shared object or its tables lie outside
 * the file (elf_symbols.c). */
gboolean lp_elf_exports (const char *path, gconstpointer data, gsize size, const char *symbol, gboolean *found,
                         GError **error);

const LpPassEntry *lp_registry_lookup (const LpRegistry *reg, const char *pass);
/* Every pass, sorted by name (LpPassEntry *, borrowed). */
GPtrArray *lp_registry_passes (const LpRegistry *reg);
/* LpPluginReject *, in the order met. */
GPtrArray *lp_registry_rejects (const LpRegistry *reg);
/* "FILE: REASON", escaped for printing (g_free() it). */
char *lp_plugin_reject_line (const LpPluginReject *reject);
/* Print "llmpress: warning: plugin refused: FILE: REASON" for each refusal
 * not yet printed by this process. */
void lp_registry_warn_rejects (const LpRegistry *reg, FILE *out);
/* Whether the pass reads the calibration data: it declares
 * LP_PASS_USES_CALIBRATION, or its plugin predates that flag and might. */
gboolean lp_pass_uses_calibration (const LpPassEntry *entry);
/* The family of a pass: the part before '.', or the plugin's name. */
char *lp_pass_family (const LpPassEntry *entry);

const LpParamSpec *lp_pass_info_find_param (const LpPassInfo *info, const char *name);
const LpInputSpec *lp_pass_info_find_input (const LpPassInfo *info, const char *name);
guint lp_pass_info_n_params (const LpPassInfo *info);

/* The candidate closest to `word` by edit distance when it is close enough
 * to be a likely typo, else NULL (borrowed from candidates). */
const char *lp_suggest (const char *word, const char *const *candidates, guint n);
/* " (did you mean 'x'?)" or "" — g_free() it. */
char *lp_did_you_mean (const char *word, const char *const *candidates, guint n);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpRegistry, lp_registry_free)

G_END_DECLS
