/* Every spec in specs/ validates and runs on the demo model. */
#include "config.h"

#include <string.h>

#include "testutil.h"

static void
test_spec (gconstpointer data)
{
  const char *spec = data;
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *def = g_strdup_printf ("model=%s", model);
  /* Evaluation and calibration text for the demo model: the specs' own README. */
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *data_def = g_strdup_printf ("data=%s", text);
  g_autofree char *calib = g_strdup_printf ("calib=%s", text);
  g_autofree char *base = g_path_get_basename (spec);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), base, NULL);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "cache", NULL);
  g_autofree char *o = NULL, *e = NULL;
  /* The specs' TinyStories token ranges and sample counts do not fit a small text: all of it, fewer samples. */
  const char *validate[] = { "validate", spec, "-D", def, "-D", data_def, "-D", calib, "-D", "calib_range=:", "-D", "calib_samples=8",
                             "-D", "eval_range=:", NULL };
  g_assert_cmpint (lp_test_run_cliv (&o, &e, validate), ==, 0);
  g_assert_nonnull (strstr (o, "valid"));
  g_autofree char *o2 = NULL, *e2 = NULL;
  const char *run[] = { "run", spec, "-D", def, "-D", data_def, "-D", calib, "-D", "calib_range=:", "-D", "calib_samples=8", "-D", "eval_range=:",
                        "-o", out, "--cache-dir", cache, "-q", NULL };
  int status = lp_test_run_cliv (&o2, &e2, run);
  if (status != 0)
    g_test_message ("%s", e2);
  g_assert_cmpint (status, ==, 0);
  g_autofree char *report = g_build_filename (out, "report.json", NULL);
  g_assert_true (g_file_test (report, G_FILE_TEST_IS_REGULAR));
  g_autofree char *o3 = NULL;
  const char *graph[] = { "graph", spec, "-D", def, "-D", data_def, "-D", calib, "-D", "calib_range=:", "-D", "calib_samples=8",
                          "-D", "eval_range=:", NULL };
  g_assert_cmpint (lp_test_run_cliv (&o3, NULL, graph), ==, 0);
  g_assert_true (g_str_has_prefix (o3, "digraph"));
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  const char *dir = g_getenv ("LLMPRESS_SPECS_DIR");
  g_assert_nonnull (dir);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "default-cache", NULL);
  g_setenv ("LLMPRESS_CACHE_DIR", cache, TRUE);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  g_assert_nonnull (d);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, ".ini"))
      g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_names);
  g_assert_cmpuint (names->len, >, 0);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *test = g_strdup_printf ("/specs/%s", (char *) names->pdata[i]);
      g_test_add_data_func_full (test, g_build_filename (dir, names->pdata[i], NULL), test_spec, g_free);
    }
  return g_test_run ();
}
