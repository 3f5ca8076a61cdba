/* Plugin registry: discovery, the shipped plugins, and every refusal
 * (wrong ABI, no entry point, duplicate pass, missing field) naming the file
 * while the other plugins still load. */
#include "config.h"

#include <string.h>
#include <gmodule.h>

#include "testutil.h"
#include "registry.h"

static char *
plugin_file (const char *envdir, const char *name)
{
  const char *dir = g_getenv (envdir);
  g_assert_nonnull (dir);
  return g_build_filename (dir, name, NULL);
}

static void
test_shipped (void)
{
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  lp_registry_load_default (reg);
  g_assert_cmpuint (lp_registry_rejects (reg)->len, ==, 0);
  const char *names[] = { "load", "save", "eval" };
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    {
      const LpPassEntry *e = lp_registry_lookup (reg, names[i]);
      g_assert_nonnull (e);
      g_assert_cmpuint (e->plugin->abi_major, ==, LP_PLUGIN_ABI_MAJOR);
      g_assert_nonnull (strstr (e->file, "plugins"));
    }
  const LpPassEntry *save = lp_registry_lookup (reg, "save");
  g_autofree char *family = lp_pass_family (save);
  g_assert_cmpstr (family, ==, "io");
  const LpParamSpec *path = lp_pass_info_find_param (save->info, "path");
  g_assert_nonnull (path);
  g_assert_true (path->flags & LP_PARAM_OUTPUT);
  g_assert_nonnull (lp_pass_info_find_input (save->info, "input"));
  /* The eval pass takes an optional reference model. */
  const LpInputSpec *ref = lp_pass_info_find_input (lp_registry_lookup (reg, "eval")->info, "reference");
  g_assert_nonnull (ref);
  g_assert_true (ref->optional);
}

static void
test_visibility (void)
{
  /* Built with -fvisibility=hidden: only the entry point is exported. */
  g_autofree char *path = plugin_file ("LLMPRESS_PLUGIN_PATH", "io." G_MODULE_SUFFIX);
  GModule *m = g_module_open (path, G_MODULE_BIND_LOCAL);
  g_assert_nonnull (m);
  gpointer sym = NULL;
  g_assert_true (g_module_symbol (m, LP_PLUGIN_ENTRY_POINT, &sym));
  g_assert_false (g_module_symbol (m, "load_run", &sym));
  g_assert_false (g_module_symbol (m, "save_params", &sym));
  g_module_close (m);
}

static void
check_refused (const char *file, const char *fragment)
{
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  lp_registry_load_default (reg); /* io, so the duplicate has something to clash with */
  g_autofree char *path = plugin_file ("LLMPRESS_BAD_PLUGIN_DIR", file);
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_registry_load_file (reg, path, &error));
  lp_test_assert_error_contains (error, path, fragment, NULL);
  GPtrArray *rejects = lp_registry_rejects (reg);
  g_assert_cmpuint (rejects->len, ==, 1);
  g_assert_cmpstr (((LpPluginReject *) rejects->pdata[0])->file, ==, path);
  /* The io plugin's passes are untouched. */
  g_assert_cmpstr (lp_registry_lookup (reg, "load")->plugin->name, ==, "io");
}

static void
test_wrong_abi (void)
{
  check_refused ("bad-abi." G_MODULE_SUFFIX, "plugin ABI 99.0, expected 1.x");
}

static void
test_missing_entry (void)
{
  check_refused ("no-entry." G_MODULE_SUFFIX, "missing entry point lp_plugin_get_info");
}

static void
test_duplicate_pass (void)
{
  check_refused ("dup-pass." G_MODULE_SUFFIX, "duplicate pass name 'load'");
}

static void
test_missing_field (void)
{
  check_refused ("no-license." G_MODULE_SUFFIX, "missing required field 'license'");
}

static void
test_not_a_library (void)
{
  g_autofree char *path = lp_test_write_file ("junk." G_MODULE_SUFFIX, "not an ELF file", 15);
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_registry_load_file (reg, path, &error));
  lp_test_assert_error_contains (error, path, "cannot be loaded", NULL);
}

static void
test_mixed_path (void)
{
  /* Bad plugins first on the path: each refused with its file named, the
   * good ones after them still load. */
  g_autofree char *envpath = g_strdup_printf ("%s:%s:%s", g_getenv ("LLMPRESS_BAD_PLUGIN_DIR"),
                                              g_getenv ("LLMPRESS_PLUGIN_PATH"), g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "plugins", NULL };
  g_autofree char *old = g_strdup (g_getenv ("LLMPRESS_PLUGIN_PATH"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", envpath, TRUE);
  int status = lp_test_run_cliv (&out, &err, args);
  g_setenv ("LLMPRESS_PLUGIN_PATH", old, TRUE);
  g_assert_cmpint (status, ==, 0);
  g_assert_nonnull (strstr (out, "test.scale"));
  g_assert_nonnull (strstr (out, "eval"));
  g_assert_nonnull (strstr (out, "io.so"));
  g_assert_nonnull (strstr (out, "refused: "));
  g_assert_nonnull (strstr (out, "bad-abi.so: plugin ABI"));
  g_assert_nonnull (strstr (out, "no-entry.so: not a llmpress plugin"));
  g_assert_nonnull (strstr (out, "no-license.so: missing required field 'license'"));
  /* dup-pass sorts before io is loaded (bad dir first): then it is io that
   * clashes — either way exactly one of them provides load. */
  g_assert_nonnull (strstr (out, "duplicate pass name 'load'"));
}

static void
test_describe (void)
{
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "describe", "eval", NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 0);
  g_assert_nonnull (strstr (out, "targets"));
  g_assert_nonnull (strstr (out, "tensors"));
  g_assert_nonnull (strstr (out, "reference"));
  const char *bad[] = { "describe", "evl", NULL };
  g_autofree char *out2 = NULL, *err2 = NULL;
  g_assert_cmpint (lp_test_run_cliv (&out2, &err2, bad), ==, 1);
  g_assert_nonnull (strstr (err2, "did you mean 'eval'"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/plugins/shipped", test_shipped);
  g_test_add_func ("/plugins/visibility", test_visibility);
  g_test_add_func ("/plugins/refuse/wrong-abi", test_wrong_abi);
  g_test_add_func ("/plugins/refuse/missing-entry-point", test_missing_entry);
  g_test_add_func ("/plugins/refuse/duplicate-pass", test_duplicate_pass);
  g_test_add_func ("/plugins/refuse/missing-field", test_missing_field);
  g_test_add_func ("/plugins/refuse/not-a-library", test_not_a_library);
  g_test_add_func ("/plugins/mixed-path", test_mixed_path);
  g_test_add_func ("/plugins/describe", test_describe);
  return g_test_run ();
}
