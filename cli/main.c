/* llmpress — command-line entry point: dispatches to the subcommands. */
#include "config.h"

#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lp-internal.h"

static const LpCliCommand commands[] = {
  { "inspect", "show a model's format, architecture, parameters and tensors", lp_cmd_inspect },
  { "convert", "convert a model between GGUF, Hugging Face and llama2.c", lp_cmd_convert },
  { "tokenize", "encode text with a model's tokenizer", lp_cmd_tokenize },
  { "synth", "write a small deterministic Llama-architecture model", lp_cmd_synth },
  { "eval", "measure perplexity, KL to a reference, size and speed", lp_cmd_eval },
  { "generate", "generate text from a model", lp_cmd_generate },
  { "run", "run a pipeline spec (cached, optionally in parallel)", lp_cmd_run },
  { "validate", "check a pipeline spec without running it", lp_cmd_validate },
  { "report", "draw a run's size-quality frontier and per-layer errors (SVG, HTML)", lp_cmd_report },
  { "graph", "print a pipeline spec as a Graphviz DOT graph", lp_cmd_graph },
  { "plugins", "list the pass plugins and their passes", lp_cmd_plugins },
  { "describe", "show a pass's inputs and parameters", lp_cmd_describe },
  { "cache", "manage the artifact cache (gc, dir)", lp_cmd_cache },
  { "devices", "list the compute devices (Vulkan, CPU) and the one 'auto' picks", lp_cmd_devices },
};

const LpCliCommand *
lp_cli_commands (gsize *n)
{
  *n = G_N_ELEMENTS (commands);
  return commands;
}

const LpCliCommand *
lp_cli_find_command (const char *name)
{
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (strcmp (name, commands[i].name) == 0)
      return &commands[i];
  return NULL;
}

/* Set while lp_cli_synopsis runs a command: lp_cli_parse records what it
 * was given here instead of parsing. */
static LpCliSynopsis *synopsis_capture;

static void
synopsis_record (const char *params, const GOptionEntry *entries)
{
  LpCliSynopsis *out = synopsis_capture;
  out->params = g_strdup (params ? params : "");
  g_ptr_array_add (out->options, g_strdup ("--help"));
  g_ptr_array_add (out->options, g_strdup ("-h"));
  for (const GOptionEntry *e = entries; e && e->long_name; e++)
    {
      if (e->flags & G_OPTION_FLAG_HIDDEN)
        continue;
      gboolean takes_value = e->arg != G_OPTION_ARG_NONE && !(e->flags & G_OPTION_FLAG_NO_ARG);
      g_ptr_array_add (out->options, g_strdup_printf ("--%s%s", e->long_name, takes_value ? "=" : ""));
      if (e->short_name)
        g_ptr_array_add (out->options, g_strdup_printf ("-%c", e->short_name));
      if (!takes_value)
        continue;
      g_hash_table_insert (out->value_options, g_strdup_printf ("--%s", e->long_name), g_strdup (e->long_name));
      if (e->short_name)
        g_hash_table_insert (out->value_options, g_strdup_printf ("-%c", e->short_name), g_strdup (e->long_name));
    }
}

void
lp_cli_synopsis (const LpCliCommand *command, LpCliSynopsis *out)
{
  out->options = g_ptr_array_new_with_free_func (g_free);
  out->value_options = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  out->params = NULL;
  char *argv[] = { (char *) command->name, NULL };
  synopsis_capture = out;
  command->run (1, argv);
  synopsis_capture = NULL;
  if (out->params == NULL)
    out->params = g_strdup ("");
}

void
lp_cli_synopsis_clear (LpCliSynopsis *synopsis)
{
  g_clear_pointer (&synopsis->options, g_ptr_array_unref);
  g_clear_pointer (&synopsis->value_options, g_hash_table_unref);
  g_clear_pointer (&synopsis->params, g_free);
}

static void
print_help (FILE *out)
{
  fprintf (out, "Usage: llmpress COMMAND [OPTION...] [ARG...]\n\n"
                "llmpress compresses large language models.\n\nCommands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf (out, "\n'llmpress COMMAND --help' describes a command.\n\n"
                "Options (before COMMAND):\n"
                "  -t, --threads N  use N threads in every parallel loop and in OpenBLAS (default:\n"
                "                   LLMPRESS_THREADS, else every core; also accepted after COMMAND)\n"
                "  -h, --help       show this help\n  --version        show the version\n");
}

gboolean
lp_cli_parse (const char *command, const char *params, const char *summary, const char *description,
              const GOptionEntry *entries, int *argc, char ***argv)
{
  if (synopsis_capture != NULL)
    {
      synopsis_record (params, entries);
      return FALSE;
    }
  g_autofree char *ctx_params = g_strdup_printf ("%s", params ? params : "");
  g_autoptr (GOptionContext) ctx = g_option_context_new (ctx_params);
  g_autofree char *prog = g_strdup_printf ("llmpress %s", command);
  g_set_prgname (prog);
  g_option_context_set_summary (ctx, summary);
  if (description)
    g_option_context_set_description (ctx, description);
  /* Every number option is read by lp_cli_number_entries (numbers.c). */
  g_autofree GOptionEntry *checked = entries ? lp_cli_number_entries (entries) : NULL;
  if (checked)
    {
      GOptionGroup *main_group = g_option_group_new (NULL, NULL, NULL, (gpointer) entries, NULL);
      g_option_group_add_entries (main_group, checked);
      g_option_context_set_main_group (ctx, main_group);
    }
  /* --threads N, which every command accepts (as the global -t N). */
  g_autofree char *threads = NULL;
  GOptionEntry common[] = {
    { "threads", 0, 0, G_OPTION_ARG_STRING, &threads, "use N threads (see 'llmpress --help')", "N" },
    { NULL },
  };
  g_option_context_add_main_entries (ctx, common, NULL);
  GError *error = NULL;
  if (!g_option_context_parse (ctx, argc, argv, &error))
    {
      lp_cli_usage_error (command, "%s", error->message);
      g_error_free (error);
      return FALSE;
    }
  int n;
  if (threads != NULL)
    {
      if (!lp_threads_parse ("--threads", threads, &n, &error))
        {
          lp_cli_usage_error (command, "%s", error->message);
          g_error_free (error);
          return FALSE;
        }
      lp_threads_set (n);
    }
  /* GOption keeps the "--" that ends the options: drop it, so that an
   * argument starting with '-' can follow it. */
  for (int i = 1; i < *argc; i++)
    if (strcmp ((*argv)[i], "--") == 0)
      {
        memmove (&(*argv)[i], &(*argv)[i + 1], (*argc - i) * sizeof (char *));
        (*argc)--;
        break;
      }
  return TRUE;
}

int
lp_cli_fail (GError *error)
{
  /* Escaped again here for messages that did not come through lp_set_error
   * (GLib's, a plugin's g_set_error); escaping is idempotent. */
  g_autofree char *msg = lp_error_escape (error ? error->message : "failed", FALSE);
  fprintf (stderr, "llmpress: %s\n", msg);
  if (error)
    g_error_free (error);
  return LP_EXIT_FAILURE;
}

int
lp_cli_usage_error (const char *command, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *raw = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autofree char *msg = lp_error_escape (raw, FALSE);
  fprintf (stderr, "llmpress %s: %s\nTry 'llmpress %s --help'.\n", command, msg, command);
  return LP_EXIT_USAGE;
}

/* The thread count: LLMPRESS_THREADS, then a leading -t N / --threads N
 * (removed from argv).  A bad count is a usage error. */
static gboolean
global_threads (int *argc, char ***argv)
{
  GError *error = NULL;
  int n;
  const char *env = g_getenv ("LLMPRESS_THREADS");
  if (env != NULL)
    {
      if (!lp_threads_parse ("LLMPRESS_THREADS", env, &n, &error))
        goto bad;
      lp_threads_set (n);
    }
  char **v = *argv;
  const char *text = NULL;
  int used = 0;
  if (*argc >= 2 && (strcmp (v[1], "-t") == 0 || strcmp (v[1], "--threads") == 0))
    {
      if (*argc < 3)
        {
          fprintf (stderr, "llmpress: %s: expected a thread count\nTry 'llmpress --help'.\n", v[1]);
          return FALSE;
        }
      text = v[2];
      used = 2;
    }
  else if (*argc >= 2 && g_str_has_prefix (v[1], "--threads="))
    text = v[1] + strlen ("--threads="), used = 1;
  if (text != NULL)
    {
      if (!lp_threads_parse (v[1][1] == 't' ? "-t" : "--threads", text, &n, &error))
        goto bad;
      lp_threads_set (n);
      memmove (&v[1], &v[1 + used], (*argc - used) * sizeof (char *));
      *argc -= used;
    }
  return TRUE;
bad:
  {
    g_autofree char *msg = lp_error_escape (error->message, FALSE);
    fprintf (stderr, "llmpress: %s\nTry 'llmpress --help'.\n", msg);
    g_error_free (error);
    return FALSE;
  }
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  if (argc < 2)
    {
      print_help (stderr);
      return LP_EXIT_USAGE;
    }
  if (!global_threads (&argc, &argv))
    return LP_EXIT_USAGE;
  if (argc < 2)
    {
      print_help (stderr);
      return LP_EXIT_USAGE;
    }
  const char *cmd = argv[1];
  if (strcmp (cmd, "-h") == 0 || strcmp (cmd, "--help") == 0 || strcmp (cmd, "help") == 0)
    {
      print_help (stdout);
      return LP_EXIT_OK;
    }
  if (strcmp (cmd, "--version") == 0 || strcmp (cmd, "-V") == 0)
    {
      printf ("llmpress %s\n", lp_version ());
      return LP_EXIT_OK;
    }
  /* Hidden: the candidates the bash completion (cli/bash-completion/llmpress) offers. */
  if (strcmp (cmd, "__complete") == 0)
    return lp_cmd_complete (argc - 1, argv + 1);
  const LpCliCommand *command = lp_cli_find_command (cmd);
  if (command != NULL)
    return command->run (argc - 1, argv + 1);
  fprintf (stderr, "llmpress: unknown command '%s'\nTry 'llmpress --help'.\n", cmd);
  return LP_EXIT_USAGE;
}
