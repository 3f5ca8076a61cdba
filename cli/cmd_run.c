/* llmpress run / validate / graph: a spec (file or -p inline) into a graph,
 * then run it, check it, or draw it. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "registry.h"
#include "graph.h"
#include "run.h"
#include "crash.h"

typedef struct {
  char **defines;
  char *inline_spec;
} SpecArgs;

#define SPEC_ENTRIES(a)                                                                                          \
  { "define", 'D', 0, G_OPTION_ARG_STRING_ARRAY, &(a).defines, "set variable NAME (${NAME} in the spec)", "NAME=VALUE" }, \
  { "pipeline", 'p', 0, G_OPTION_ARG_STRING, &(a).inline_spec, "an inline pipeline: 'load path=m.gguf ! eval ! save path=o.gguf'", "PIPELINE" }

static void
spec_args_clear (SpecArgs *a)
{
  g_strfreev (a->defines);
  g_free (a->inline_spec);
}

LpRegistry *
lp_cli_registry (gboolean report_rejects)
{
  LpRegistry *reg = lp_registry_new ();
  lp_registry_load_default (reg);
  if (report_rejects)
    lp_registry_warn_rejects (reg, stderr);
  return reg;
}

/* The graph from SPEC or -p; usage errors return NULL with *status set. */
static LpGraph *
load_graph (const char *command, SpecArgs *a, int argc, char **argv, LpRegistry *reg, int *status)
{
  if ((argc < 2 && a->inline_spec == NULL) || (argc >= 2 && a->inline_spec != NULL) || argc > 2)
    {
      *status = lp_cli_usage_error (command, "expected one SPEC file or -p PIPELINE");
      return NULL;
    }
  g_autoptr (GHashTable) vars = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (char **d = a->defines; d && *d; d++)
    {
      const char *eq = strchr (*d, '=');
      if (eq == NULL || eq == *d)
        {
          *status = lp_cli_usage_error (command, "-D %s: expected NAME=VALUE", *d);
          return NULL;
        }
      g_hash_table_insert (vars, g_strndup (*d, eq - *d), g_strdup (eq + 1));
    }
  GError *error = NULL;
  LpGraph *g = a->inline_spec ? lp_graph_parse_inline (a->inline_spec, reg, vars, &error)
                              : lp_graph_load_file (argv[1], reg, vars, &error);
  if (g == NULL)
    {
      /* One problem per line, each already located. */
      g_auto (GStrv) lines = g_strsplit (error->message, "\n", -1);
      for (char **l = lines; *l; l++)
        fprintf (stderr, "%s\n", *l);
      guint n = g_strv_length (lines);
      fprintf (stderr, "llmpress %s: %u problem%s found\n", command, n, n == 1 ? "" : "s");
      g_error_free (error);
      *status = LP_EXIT_FAILURE;
    }
  return g;
}

static LpRun *running;

static void
on_sigint (int sig)
{
  if (running != NULL)
    lp_run_cancel (running);
  /* A second ^C kills at once. */
  signal (sig, SIG_DFL);
}

int
lp_cmd_run (int argc, char **argv)
{
  SpecArgs a = { 0 };
  g_autofree char *out_dir = NULL, *backend = NULL, *scheduler = NULL, *mem = NULL, *cache_dir = NULL, *calib = NULL,
                   *device_mem = NULL;
  int jobs = 1;
  gboolean explain = FALSE, dry_run = FALSE, no_cache = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    SPEC_ENTRIES (a),
    { "output-dir", 'o', 0, G_OPTION_ARG_FILENAME, &out_dir, "write report.json and relative outputs here (default: .)", "DIR" },
    { "backend", 0, 0, G_OPTION_ARG_STRING, &backend, "compute backend (default: [pipeline] backend, else cpu)", "NAME" },
    { "calib", 0, 0, G_OPTION_ARG_FILENAME, &calib, "calibration data (overrides [pipeline] calibration)", "PATH" },
    { "jobs", 'j', 0, G_OPTION_ARG_INT, &jobs, "run up to N independent nodes at once (default 1)", "N" },
    { "scheduler", 0, 0, G_OPTION_ARG_STRING, &scheduler, "sequential or parallel (default: parallel when -j > 1)", "NAME" },
    { "memory-limit", 0, 0, G_OPTION_ARG_STRING, &mem, "start no node that would take the running estimate above SIZE", "SIZE" },
    { "cache-dir", 0, 0, G_OPTION_ARG_FILENAME, &cache_dir, "artifact cache (default: $XDG_CACHE_HOME/llmpress)", "DIR" },
    { "no-cache", 0, 0, G_OPTION_ARG_NONE, &no_cache, "run every node, store nothing", NULL },
    { "explain", 0, 0, G_OPTION_ARG_NONE, &explain, "say why each node runs or is reused", NULL },
    { "dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run, "plan and explain, run nothing", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress or log lines on stderr", NULL },
    LP_CLI_DEVICE_MEMORY_ENTRY (device_mem),
    { NULL }
  };
  if (!lp_cli_parse ("run", "SPEC", "Run a pipeline spec.",
                     "SPEC is an INI file (see specs/README.md), or give -p 'PASS k=v ! PASS ...'.\n"
                     "Outputs are cached: rerunning an unchanged spec does no work.",
                     entries, &argc, &argv))
    return (spec_args_clear (&a), LP_EXIT_USAGE);
  guint64 memory_limit = 0;
  if (mem != NULL && !lp_cli_parse_size (mem, &memory_limit))
    return (spec_args_clear (&a), lp_cli_usage_error ("run", "--memory-limit: expected a size below 16 EiB such as 512M or 8G, found '%s'", mem));
  guint64 device_memory = 0;
  if (!lp_cli_parse_device_memory ("run", device_mem, &device_memory))
    return (spec_args_clear (&a), LP_EXIT_USAGE);
  if (jobs < 1)
    return (spec_args_clear (&a), lp_cli_usage_error ("run", "--jobs %d: expected at least 1", jobs));
  g_autoptr (LpRegistry) reg = lp_cli_registry (!quiet);
  int status = LP_EXIT_OK;
  g_autoptr (LpGraph) g = load_graph ("run", &a, argc, argv, reg, &status);
  spec_args_clear (&a);
  if (g == NULL)
    return status;
  LpRunOptions opts = { 0 };
  opts.scheduler = scheduler;
  opts.jobs = (guint) jobs;
  opts.memory_limit = memory_limit;
  opts.device_memory = device_memory;
  opts.cache_dir = cache_dir;
  opts.no_cache = no_cache;
  opts.explain = explain;
  opts.dry_run = dry_run;
  opts.quiet = quiet;
  opts.output_dir = out_dir;
  opts.backend = backend;
  opts.calibration = calib;
  GError *error = NULL;
  g_autoptr (LpRun) run = lp_run_new (g, &opts, &error);
  if (run == NULL)
    return lp_cli_fail (error);
  running = run;
  signal (SIGINT, on_sigint);
  lp_crash_handler_install ();
  gboolean ok = lp_run_execute (run, &error);
  signal (SIGINT, SIG_DFL);
  running = NULL;
  if (!ok)
    return lp_cli_fail (error);
  if (!dry_run)
    lp_run_print_table (run, stdout);
  return LP_EXIT_OK;
}

int
lp_cmd_validate (int argc, char **argv)
{
  SpecArgs a = { 0 };
  GOptionEntry entries[] = { SPEC_ENTRIES (a), { NULL } };
  if (!lp_cli_parse ("validate", "SPEC", "Check a pipeline spec without running it.",
                     "Reports every problem with file:line, the offending text and a hint.", entries, &argc, &argv))
    return (spec_args_clear (&a), LP_EXIT_USAGE);
  g_autoptr (LpRegistry) reg = lp_cli_registry (TRUE);
  int status = LP_EXIT_OK;
  g_autoptr (LpGraph) g = load_graph ("validate", &a, argc, argv, reg, &status);
  spec_args_clear (&a);
  if (g == NULL)
    return status;
  printf ("%s: valid, %u nodes\n", lp_graph_source (g), lp_graph_n_nodes (g));
  /* A sweep's branches, by the names the run and its report will use. */
  for (guint i = 0; i < lp_graph_n_nodes (g); i++)
    if (strchr (lp_graph_node (g, i)->name, '[') != NULL)
      printf ("  %s\n", lp_graph_node (g, i)->name);
  return LP_EXIT_OK;
}

int
lp_cmd_graph (int argc, char **argv)
{
  SpecArgs a = { 0 };
  GOptionEntry entries[] = { SPEC_ENTRIES (a), { NULL } };
  if (!lp_cli_parse ("graph", "SPEC", "Print a pipeline spec as a Graphviz DOT graph.",
                     "Example: llmpress graph specs/default.ini -D model=m.gguf -D data=t.txt | dot -Tsvg > g.svg", entries, &argc, &argv))
    return (spec_args_clear (&a), LP_EXIT_USAGE);
  g_autoptr (LpRegistry) reg = lp_cli_registry (TRUE);
  int status = LP_EXIT_OK;
  g_autoptr (LpGraph) g = load_graph ("graph", &a, argc, argv, reg, &status);
  spec_args_clear (&a);
  if (g == NULL)
    return status;
  g_autofree char *dot = lp_graph_to_dot (g);
  fputs (dot, stdout);
  return LP_EXIT_OK;
}
