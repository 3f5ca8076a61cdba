/* llmpress plugins / describe: what the registry holds, read from the same
 * tables the spec parser uses. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "registry.h"

int
lp_cmd_plugins (int argc, char **argv)
{
  if (!lp_cli_parse ("plugins", "", "List the pass plugins and their passes.",
                     "Plugins are found on LLMPRESS_PLUGIN_PATH, then on LLMPRESS_PLUGIN_SYSTEM_PATH\n(default: " LP_PLUGINSDIR ");\n"
                     "a pass name the system plugins have cannot be taken by another plugin.\n"
                     "World-writable plugin directories and files, and files that do not export the\n"
                     "entry point, are refused (listed below the passes).", NULL, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc > 1)
    return lp_cli_usage_error ("plugins", "unexpected argument '%s'", argv[1]);
  g_autoptr (LpRegistry) reg = lp_cli_registry (FALSE);
  g_autoptr (GPtrArray) passes = lp_registry_passes (reg);
  printf ("%-20s %-10s %-8s %s\n", "pass", "family", "plugin", "summary / file");
  for (guint i = 0; i < passes->len; i++)
    {
      const LpPassEntry *e = passes->pdata[i];
      g_autofree char *family = lp_pass_family (e);
      printf ("%-20s %-10s %-8s %s\n%40s%s\n", e->info->name, family, e->plugin->name, e->info->summary, "", e->file);
    }
  GPtrArray *rejects = lp_registry_rejects (reg);
  for (guint i = 0; i < rejects->len; i++)
    {
      g_autofree char *line = lp_plugin_reject_line (rejects->pdata[i]);
      printf ("refused: %s\n", line);
    }
  if (passes->len == 0)
    fprintf (stderr, "llmpress plugins: no pass found (set LLMPRESS_PLUGIN_PATH?)\n");
  return LP_EXIT_OK;
}

static char *
range_text (const LpParamSpec *s)
{
  char lo[G_ASCII_DTOSTR_BUF_SIZE], hi[G_ASCII_DTOSTR_BUF_SIZE];
  /* Integers in full; floats as short as they go. */
  const char *fmt = s->type == LP_PARAM_INT ? "%.0f" : "%g";
  g_ascii_formatd (lo, sizeof lo, fmt, s->min);
  g_ascii_formatd (hi, sizeof hi, fmt, s->max);
  if (s->type == LP_PARAM_ENUM)
    return g_strjoinv ("|", (char **) s->choices);
  if ((s->flags & LP_PARAM_HAS_MIN) && (s->flags & LP_PARAM_HAS_MAX))
    return g_strdup_printf ("[%s, %s]", lo, hi);
  if (s->flags & LP_PARAM_HAS_MIN)
    return g_strdup_printf (">= %s", lo);
  if (s->flags & LP_PARAM_HAS_MAX)
    return g_strdup_printf ("<= %s", hi);
  return g_strdup ("-");
}

int
lp_cmd_describe (int argc, char **argv)
{
  if (!lp_cli_parse ("describe", "PASS", "Show a pass's inputs, output and parameters.", NULL, NULL, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2)
    return lp_cli_usage_error ("describe", "expected one PASS name (see 'llmpress plugins')");
  g_autoptr (LpRegistry) reg = lp_cli_registry (FALSE);
  const LpPassEntry *e = lp_registry_lookup (reg, argv[1]);
  if (e == NULL)
    {
      g_autoptr (GPtrArray) passes = lp_registry_passes (reg);
      g_autofree const char **names = g_new0 (const char *, passes->len + 1);
      for (guint i = 0; i < passes->len; i++)
        names[i] = ((LpPassEntry *) passes->pdata[i])->info->name;
      g_autofree char *hint = lp_did_you_mean (argv[1], names, passes->len);
      return lp_cli_fail (g_error_new (LP_ERROR, LP_ERROR_INVALID, "unknown pass '%s'%s", argv[1], hint));
    }
  const LpPassInfo *p = e->info;
  printf ("%s — %s\n  plugin: %s %s (%s), %s\n  output: %s\n", p->name, p->summary, e->plugin->name,
          e->plugin->version, e->plugin->license, e->file, lp_artifact_kind_name (p->output));
  if (lp_pass_uses_calibration (e))
    printf ("  reads the calibration data ([pipeline] calibration= or --calib)\n");
  if (p->flags & LP_PASS_GATHERS)
    printf ("  gathers a sweep: reads every branch of its input at once (nothing below it fans out)\n");
  printf ("\ninputs:\n");
  if (p->inputs == NULL || p->inputs->name == NULL)
    printf ("  (none: a source)\n");
  for (const LpInputSpec *in = p->inputs; in && in->name; in++)
    printf ("  %-12s %-8s %s%s\n", in->name, lp_artifact_kind_name (in->kind), in->optional ? "(optional) " : "",
            in->help ? in->help : "");
  printf ("\nparameters:\n");
  printf ("  %-14s %-8s %-12s %-16s %s\n", "name", "type", "default", "range", "help");
  for (const LpParamSpec *s = p->params; s && s->name; s++)
    {
      g_autofree char *range = range_text (s);
      const char *dflt = s->default_value ? (*s->default_value ? s->default_value : "\"\"")
                                          : (s->flags & LP_PARAM_REQUIRED) ? "(required)" : "(unset)";
      printf ("  %-14s %-8s %-12s %-16s %s\n", s->name, lp_param_type_name (s->type), dflt, range, s->help);
    }
  if (p->params == NULL || p->params->name == NULL)
    printf ("  (none)\n");
  return LP_EXIT_OK;
}
