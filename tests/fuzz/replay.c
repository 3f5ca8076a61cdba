/* llmpress tests — every fuzz target replayed on its seeds (made by the
 * library's writers, committed edge cases, the real files in ../shared)
 * and on every input that once crashed it (tests/fuzz/regressions/NAME/),
 * through the same function libFuzzer calls.  A crash, a sanitizer report
 * or a critical fails the test; `make fuzz` searches for new ones. */
#include <glib/gstdio.h>
#include <string.h>

#include "../testutil.h"
#include "lp-internal.h"
#include "targets.h"

typedef struct {
  const LpFuzzTarget *target;
  const char *source; /* made, seeds, regressions, shared */
} Case;

static guint accepted; /* inputs the library accepted, for the made seeds */

static guint
replay_file (const LpFuzzTarget *t, const char *path)
{
  g_autofree char *data = NULL;
  gsize len;
  GError *error = NULL;
  if (!g_file_get_contents (path, &data, &len, &error))
    g_error ("%s", error->message);
  g_test_message ("%s: %s (%" G_GSIZE_FORMAT " bytes)", t->name, path, len);
  accepted += t->func ((const uint8_t *) data, len) != 0;
  return 1;
}

static guint
replay_dir (const LpFuzzTarget *t, const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return 0;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    if (name[0] != '.')
      g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, lp_compare_str_ptr);
  guint n = 0;
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *p = g_build_filename (dir, g_ptr_array_index (names, i), NULL);
      n += replay_file (t, p);
    }
  return n;
}

/* tests/fuzz/shared-seeds: "TARGET PATH" lines, PATH under ../shared. */
static guint
replay_shared (const LpFuzzTarget *t)
{
  g_autofree char *list = NULL;
  GError *error = NULL;
  if (!g_file_get_contents (LP_FUZZ_SRCDIR "/shared-seeds", &list, NULL, &error))
    g_error ("%s", error->message);
  g_auto (GStrv) lines = g_strsplit (list, "\n", -1);
  guint n = 0;
  for (char **l = lines; *l; l++)
    {
      g_auto (GStrv) f = g_strsplit_set (*l, " \t", 3);
      if (f[0] == NULL || f[0][0] == '#' || f[1] == NULL || strcmp (f[0], t->name) != 0)
        continue;
      const char *shared = g_getenv ("LLMPRESS_SHARED_DIR");
      g_autofree char *p = g_build_filename (shared ? shared : "../shared", f[1], NULL);
      if (g_file_test (p, G_FILE_TEST_IS_REGULAR))
        n += replay_file (t, p);
      else
        g_test_message ("%s: absent, not replayed", p);
    }
  return n;
}

static gboolean
has_shared_seeds (const char *target)
{
  g_autofree char *list = NULL;
  if (!g_file_get_contents (LP_FUZZ_SRCDIR "/shared-seeds", &list, NULL, NULL))
    return FALSE;
  g_autofree char *needle = g_strconcat ("\n", target, " ", NULL);
  return strstr (list, needle) != NULL;
}

static void
test_replay (gconstpointer data)
{
  const Case *c = data;
  const LpFuzzTarget *t = c->target;
  guint n = 0;
  if (strcmp (c->source, "made") == 0)
    {
      g_autofree char *dir = g_build_filename (lp_test_tmpdir (), t->name, NULL);
      GError *error = NULL;
      if (!lp_fuzz_make_seeds (t->name, dir, &error))
        g_error ("%s", error->message);
      accepted = 0;
      n = replay_dir (t, dir);
      /* Well-formed files: a target that refuses them (plugins not found,
       * a fixed file beside it wrong) would fuzz nothing past the start. */
      g_assert_cmpuint (n, >, 0);
      g_assert_cmpuint (accepted, ==, n);
    }
  else if (strcmp (c->source, "shared") == 0)
    {
      n = replay_shared (t);
      if (n == 0)
        g_test_skip ("the files of ../shared listed in tests/fuzz/shared-seeds are absent");
    }
  else
    {
      g_autofree char *dir = g_build_filename (LP_FUZZ_SRCDIR, c->source, t->name, NULL);
      n = replay_dir (t, dir);
      /* Every target has committed edge cases; regressions only where a
       * crash was found. */
      if (strcmp (c->source, "seeds") == 0)
        g_assert_cmpuint (n, >, 0);
    }
  g_test_message ("%s: %u inputs from %s replayed", t->name, n, c->source);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  lp_fuzz_init ();
  static const char *const sources[] = { "made", "seeds", "regressions", "shared" };
  for (gsize i = 0; i < G_N_ELEMENTS (lp_fuzz_targets); i++)
    for (gsize s = 0; s < G_N_ELEMENTS (sources); s++)
      {
        if (strcmp (sources[s], "shared") == 0 && !has_shared_seeds (lp_fuzz_targets[i].name))
          continue;
        Case *c = g_new (Case, 1);
        c->target = &lp_fuzz_targets[i];
        c->source = sources[s];
        g_autofree char *name = g_strdup_printf ("/fuzz/%s/%s", c->target->name, c->source);
        g_test_add_data_func_full (name, c, test_replay, g_free);
      }
  return g_test_run ();
}
