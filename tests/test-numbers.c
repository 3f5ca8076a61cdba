/* Numbers that are not numbers: non-finite metrics fail the command and JSON
 * stays JSON; configs that make the forward pass undefined are refused on
 * load; f16 conversion never turns a finite value into inf; integer tensors,
 * special token ids out of range and bad CLI numbers get clear errors. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

/* Exit status `want`, and the first line of stderr holds every fragment
 * (NULL-terminated); a failure (want 1) is exactly one line. */
static void
expect_exit (int want, const char *const *args, ...)
{
  g_autofree char *out = NULL, *err = NULL;
  int rc = lp_test_run_cliv (&out, &err, args);
  guint lines = 0;
  for (const char *s = err; *s; s++)
    lines += *s == '\n';
  if (rc != want || (want == 1 && lines != 1) || (want == 2 && strstr (err, "--help") == NULL))
    g_error ("llmpress %s: expected exit %d with one line, found exit %d and stderr \"%s\"", args[0], want, rc, err);
  va_list ap;
  va_start (ap, args);
  for (const char *f = va_arg (ap, const char *); f != NULL; f = va_arg (ap, const char *))
    if (strstr (err, f) == NULL)
      g_error ("llmpress %s: stderr \"%s\" lacks \"%s\"", args[0], err, f);
  va_end (ap);
}

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* Every number option: negative, NaN, infinite, junk or overflowing values
 * are usage errors naming the option and the text. */
static void
test_cli_numbers (void)
{
  static const char *const bad[][3] = {
    { "eval", "--ctx", "-5" },           { "eval", "--ctx", "abc" },
    { "eval", "-c", "99999999999" },     { "eval", "--max-windows", "-1" },
    { "generate", "-n", "-1" },          { "generate", "--temp", "nan" },
    { "generate", "--temp", "-0.5" },    { "generate", "--temp", "inf" },
    { "generate", "--top-p", "1e999" },  { "generate", "--seed", "-7" },
    { "generate", "--seed", "99999999999999999999" },
    { "run", "-j", "-2" },               { "run", "--memory-limit", "99999999999T" },
    { "run", "--memory-limit", "16E" },  { "run", "--memory-limit", "nanG" },
    { "run", "--memory-limit", "-1M" },  { "synth", "--dim", "-64" },
    { "synth", "--layers", " 2" },       { "cache", "--max-age", "-inf" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autofree char *quoted = g_strdup_printf ("'%s'", bad[i][2]);
      expect_exit (2, ARGS (bad[i][0], bad[i][1], bad[i][2], "x"), bad[i][1], quoted, NULL);
    }
  /* The largest sizes that fit still parse. */
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *pipeline = g_strdup_printf ("load path=%s ! eval", model);
  expect_exit (0, ARGS ("run", "--memory-limit", "15.9E", "--dry-run", "--no-cache", "-p", pipeline), NULL);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/numbers/cli", test_cli_numbers);
  return g_test_run ();
}
