/* Plugin registry: discovery, the shipped plugins, and every refusal
 * (wrong ABI, no entry point, duplicate pass, missing field) naming the file
 * while the other plugins still load. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <gmodule.h>
#include <glib/gstdio.h>

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
  check_refused ("bad-abi." G_MODULE_SUFFIX, "plugin ABI 99.0, expected 2.x");
}

/* A plugin of the older ABI major (1.4, built before the statistics struct
 * changed layout) is refused with one line naming both versions, never
 * loaded; today's passes declare LP_PASS_USES_CALIBRATION themselves. */
static void
test_older_major (void)
{
  const char *dir = g_getenv ("LLMPRESS_BAD_PLUGIN_DIR");
  g_assert_nonnull (dir);
  g_autofree char *path = g_build_filename (dir, "..", "..", "old-plugins", ".libs", "old-abi." G_MODULE_SUFFIX, NULL);
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_registry_load_file (reg, path, &error));
  lp_test_assert_error_contains (error, path, "plugin ABI 1.4, expected 2.x", NULL);
  g_assert_null (strchr (error->message, '\n'));
  g_assert_cmpuint (lp_registry_rejects (reg)->len, ==, 1);
  g_assert_null (lp_registry_lookup (reg, "old.abi"));

  lp_registry_load_default (reg);
  g_assert_true (lp_pass_uses_calibration (lp_registry_lookup (reg, "calibrate")));
  g_assert_true (lp_pass_uses_calibration (lp_registry_lookup (reg, "prune.wanda")));
  g_assert_false (lp_pass_uses_calibration (lp_registry_lookup (reg, "load")));
  g_assert_false (lp_pass_uses_calibration (lp_registry_lookup (reg, "save")));
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

/* The shipped plugins' directory (the build tree's, in the tests). */
static const char *
shipped_dir (void)
{
  return g_getenv ("LLMPRESS_PLUGIN_PATH");
}

/* Set LLMPRESS_PLUGIN_PATH and LLMPRESS_PLUGIN_SYSTEM_PATH for a while;
 * restore_paths puts the test environment back. */
static void
set_paths (const char *user, const char *system, char **old_user)
{
  *old_user = g_strdup (g_getenv ("LLMPRESS_PLUGIN_PATH"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", user, TRUE);
  g_setenv ("LLMPRESS_PLUGIN_SYSTEM_PATH", system, TRUE);
}

static void
restore_paths (char *old_user)
{
  g_setenv ("LLMPRESS_PLUGIN_PATH", old_user, TRUE);
  g_setenv ("LLMPRESS_PLUGIN_SYSTEM_PATH", "", TRUE);
  g_free (old_user);
}

/* `llmpress ARGS` under the given plugin paths. */
static int
run_with_paths (const char *user, const char *system, char **out, char **err, const char *const *args)
{
  char *old;
  set_paths (user, system, &old);
  int status = lp_test_run_cliv (out, err, args);
  restore_paths (old);
  return status;
}

static void
test_mixed_path (void)
{
  /* Bad plugins first on the path: each refused with its file named, the
   * good ones after them and the shipped ones still load. */
  g_autofree char *envpath = g_strdup_printf ("%s:%s", g_getenv ("LLMPRESS_BAD_PLUGIN_DIR"),
                                              g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "plugins", NULL };
  int status = run_with_paths (envpath, shipped_dir (), &out, &err, args);
  g_assert_cmpint (status, ==, 0);
  g_assert_nonnull (strstr (out, "test.scale"));
  g_assert_nonnull (strstr (out, "eval"));
  g_assert_nonnull (strstr (out, "io.so"));
  g_assert_nonnull (strstr (out, "refused: "));
  g_assert_nonnull (strstr (out, "bad-abi.so: plugin ABI"));
  g_assert_nonnull (strstr (out, "no-entry.so: not a llmpress plugin"));
  g_assert_nonnull (strstr (out, "no-license.so: missing required field 'license'"));
  /* The bad directory is scanned first, yet the shipped io plugin keeps
   * load and dup-pass is the one refused. */
  g_assert_nonnull (strstr (out, "dup-pass.so: duplicate pass name 'load' (already provided by "));
  g_assert_null (strstr (out, "io.so: duplicate"));
}

/* The one refusal naming `file`, or NULL when none does; fails if several. */
static const LpPluginReject *
reject_of (const LpRegistry *reg, const char *file)
{
  const LpPluginReject *found = NULL;
  GPtrArray *rejects = lp_registry_rejects (reg);
  for (guint i = 0; i < rejects->len; i++)
    {
      const LpPluginReject *r = rejects->pdata[i];
      if (g_str_has_suffix (r->file, file))
        {
          g_assert_null (found);
          found = r;
        }
    }
  return found;
}

static void
check_io_wins (const char *user, const char *system)
{
  char *old;
  set_paths (user, system, &old);
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  lp_registry_load_default (reg);
  restore_paths (old);
  g_assert_cmpstr (lp_registry_lookup (reg, "load")->plugin->name, ==, "io");
  g_assert_nonnull (lp_registry_lookup (reg, "save"));
  const LpPluginReject *r = reject_of (reg, "/dup-pass." G_MODULE_SUFFIX);
  g_assert_nonnull (r);
  g_assert_nonnull (strstr (r->reason, "duplicate pass name 'load' (already provided by "));
  g_assert_nonnull (strstr (r->reason, "io." G_MODULE_SUFFIX));
  g_assert_null (reject_of (reg, "/io." G_MODULE_SUFFIX));
}

static void
test_duplicate_pass_order (void)
{
  /* A user plugin reusing a shipped pass name is refused alone, whichever
   * directory is scanned first: the user's (the system directory comes
   * after it on the search path), the system directory listed on the
   * user's path too, before or after the user's. */
  const char *bad = g_getenv ("LLMPRESS_BAD_PLUGIN_DIR");
  g_autofree char *bad_first = g_strdup_printf ("%s:%s", bad, shipped_dir ());
  g_autofree char *bad_last = g_strdup_printf ("%s:%s", shipped_dir (), bad);
  check_io_wins (bad, shipped_dir ());
  check_io_wins (bad_first, shipped_dir ());
  check_io_wins (bad_last, shipped_dir ());
  /* Without a system directory, the user's path order decides: the shipped
   * plugins first, as the tests have them. */
  check_io_wins (bad_last, "");
}

static void
test_constructor_not_run (void)
{
  /* A file without the entry point is refused from its dynamic symbol
   * table: dlopen never runs, so its constructor writes no marker. */
  g_autofree char *marker = g_build_filename (lp_test_tmpdir (), "ctor-marker", NULL);
  g_setenv ("LLMPRESS_TEST_MARKER", marker, TRUE);
  g_autofree char *path = plugin_file ("LLMPRESS_BAD_PLUGIN_DIR", "ctor-no-entry." G_MODULE_SUFFIX);
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_registry_load_file (reg, path, &error));
  g_assert_false (g_file_test (marker, G_FILE_TEST_EXISTS));
  lp_test_assert_error_contains (error, path, "missing entry point lp_plugin_get_info", "dynamic symbol table", NULL);
  /* What remains, and proof the marker works: a file that exports the
   * entry point is loaded, so its constructor runs before its descriptor is
   * refused. */
  g_autofree char *with_entry = plugin_file ("LLMPRESS_BAD_PLUGIN_DIR", "ctor-entry." G_MODULE_SUFFIX);
  g_clear_error (&error);
  g_assert_false (lp_registry_load_file (reg, with_entry, &error));
  lp_test_assert_error_contains (error, "plugin ABI 99.0", NULL);
  g_assert_true (g_file_test (marker, G_FILE_TEST_EXISTS));
  g_unsetenv ("LLMPRESS_TEST_MARKER");
}

static void
test_elf_tables (void)
{
  /* The symbol check reads the real plugins right, and refuses files that
   * are not ELF shared objects or whose tables point outside the file. */
  g_autofree char *io = plugin_file ("LLMPRESS_PLUGIN_PATH", "io." G_MODULE_SUFFIX);
  g_autofree char *data = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (io, &data, &len, NULL));
  gboolean found = FALSE;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_elf_exports (io, data, len, LP_PLUGIN_ENTRY_POINT, &found, &error));
  g_assert_true (found);
  /* Hidden symbols are not exported. */
  g_assert_true (lp_elf_exports (io, data, len, "load_run", &found, &error));
  g_assert_false (found);
  /* Cut anywhere, the file is refused or read within bounds, never past. */
  for (gsize cut = 0; cut < len; cut += 1 + cut / 3)
    {
      g_autofree char *part = g_memdup2 (data, cut);
      found = FALSE;
      if (!lp_elf_exports (io, part, cut, LP_PLUGIN_ENTRY_POINT, &found, &error))
        {
          g_assert_nonnull (strstr (error->message, io));
          g_clear_error (&error);
        }
    }
  g_assert_false (lp_elf_exports (io, "\x7f" "ELF\x01\x01", 6, LP_PLUGIN_ENTRY_POINT, &found, &error));
  lp_test_assert_error_contains (error, "offset 0: expected a 64-bit little-endian ELF shared object", NULL);
}

/* A copy of the test plugin in a fresh directory of the given modes. */
static char *
plugin_copy (const char *dirname, int dir_mode, int file_mode, char **file_out)
{
  g_autofree char *src = plugin_file ("LLMPRESS_TEST_PLUGIN_DIR", "testpass." G_MODULE_SUFFIX);
  g_autofree char *data = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (src, &data, &len, NULL));
  char *dir = g_build_filename (lp_test_tmpdir (), dirname, NULL);
  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  *file_out = g_build_filename (dir, "testpass." G_MODULE_SUFFIX, NULL);
  g_assert_true (g_file_set_contents (*file_out, data, len, NULL));
  g_assert_cmpint (g_chmod (*file_out, file_mode), ==, 0);
  g_assert_cmpint (g_chmod (dir, dir_mode), ==, 0);
  return dir;
}

static void
test_world_writable (void)
{
  static const struct { int dir_mode, file_mode; const char *what; } cases[] = {
    { 0777, 0644, "world-writable directory (mode 0777)" },
    { 01777, 0644, "world-writable directory (mode 1777)" }, /* sticky: others may still add files */
    { 0755, 0666, "world-writable file (mode 0666)" },
    { 0755, 0644, NULL },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *name = g_strdup_printf ("ww-%zu", i);
      g_autofree char *file = NULL;
      g_autofree char *dir = plugin_copy (name, cases[i].dir_mode, cases[i].file_mode, &file);
      g_autoptr (LpRegistry) reg = lp_registry_new ();
      lp_registry_load_dir (reg, dir);
      GPtrArray *rejects = lp_registry_rejects (reg);
      if (cases[i].what == NULL)
        {
          g_assert_cmpuint (rejects->len, ==, 0);
          g_assert_nonnull (lp_registry_lookup (reg, "test.scale"));
          continue;
        }
      g_assert_null (lp_registry_lookup (reg, "test.scale"));
      g_assert_cmpuint (rejects->len, ==, 1);
      const LpPluginReject *r = rejects->pdata[0];
      g_assert_cmpstr (r->file, ==, cases[i].file_mode & 2 ? file : dir);
      g_assert_nonnull (strstr (r->reason, cases[i].what));
      g_assert_cmpint (g_chmod (dir, 0700), ==, 0);
    }
}

static void
test_not_regular (void)
{
  /* A FIFO named like a plugin is refused as what it is, without waiting
   * for a writer. */
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "fifo-dir", NULL);
  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_autofree char *fifo = g_build_filename (dir, "pipe." G_MODULE_SUFFIX, NULL);
  g_assert_cmpint (mkfifo (fifo, 0600), ==, 0);
  g_autoptr (LpRegistry) reg = lp_registry_new ();
  lp_registry_load_dir (reg, dir);
  const LpPluginReject *r = reject_of (reg, "/pipe." G_MODULE_SUFFIX);
  g_assert_nonnull (r);
  g_assert_cmpstr (r->reason, ==, "expected a regular file (a shared object), found a FIFO");
}

/* How many times `needle` occurs in `hay`. */
static guint
count (const char *hay, const char *needle)
{
  guint n = 0;
  for (const char *p = hay; (p = strstr (p, needle)) != NULL; p++)
    n++;
  return n;
}

static void
test_warn_once (void)
{
  /* The bad directory listed three times (once as "dir/."): every refusal
   * is reported once, by `plugins` (its listing) and by `validate` (its
   * warnings on stderr). */
  const char *bad = g_getenv ("LLMPRESS_BAD_PLUGIN_DIR");
  g_autofree char *path = g_strdup_printf ("%s:%s/.:%s", bad, bad, bad);
  static const char *const files[] = { "/bad-abi.", "/no-entry.", "/no-license.", "/dup-pass.", "/ctor-no-entry.", "/ctor-entry." };
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "plugins", NULL };
  g_assert_cmpint (run_with_paths (path, shipped_dir (), &out, &err, args), ==, 0);
  g_autofree char *all = g_strconcat (out, err, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    g_assert_cmpuint (count (all, files[i]), ==, 1);
  g_autofree char *out2 = NULL, *err2 = NULL;
  const char *validate[] = { "validate", "-p", "load path=m.gguf ! eval", NULL };
  run_with_paths (path, shipped_dir (), &out2, &err2, validate);
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    g_assert_cmpuint (count (err2, files[i]), ==, 1);
  g_assert_cmpuint (count (err2, "llmpress: warning: plugin refused: "), ==, G_N_ELEMENTS (files));

  /* Two registries in one process: the second one's warnings, the same
   * refusals again, are not printed again. */
  FILE *f = tmpfile ();
  g_assert_nonnull (f);
  for (int k = 0; k < 2; k++)
    {
      char *old;
      set_paths (bad, shipped_dir (), &old);
      g_autoptr (LpRegistry) reg = lp_registry_new ();
      lp_registry_load_default (reg);
      restore_paths (old);
      g_assert_cmpuint (lp_registry_rejects (reg)->len, ==, G_N_ELEMENTS (files));
      lp_registry_warn_rejects (reg, f);
    }
  rewind (f);
  char buf[4096];
  gsize n = fread (buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose (f);
  g_assert_cmpuint (count (buf, "\n"), ==, G_N_ELEMENTS (files));
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
  g_test_add_func ("/plugins/older-abi-major", test_older_major);
  g_test_add_func ("/plugins/refuse/missing-entry-point", test_missing_entry);
  g_test_add_func ("/plugins/refuse/duplicate-pass", test_duplicate_pass);
  g_test_add_func ("/plugins/refuse/missing-field", test_missing_field);
  g_test_add_func ("/plugins/refuse/not-a-library", test_not_a_library);
  g_test_add_func ("/plugins/mixed-path", test_mixed_path);
  g_test_add_func ("/plugins/refuse/duplicate-pass-any-order", test_duplicate_pass_order);
  g_test_add_func ("/plugins/refuse/constructor-not-run", test_constructor_not_run);
  g_test_add_func ("/plugins/refuse/world-writable", test_world_writable);
  g_test_add_func ("/plugins/refuse/not-regular", test_not_regular);
  g_test_add_func ("/plugins/elf-tables", test_elf_tables);
  g_test_add_func ("/plugins/warn-once", test_warn_once);
  g_test_add_func ("/plugins/describe", test_describe);
  return g_test_run ();
}
