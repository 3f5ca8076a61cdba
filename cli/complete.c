/* llmpress __complete WORD... — what the bash completion offers for the
 * last WORD (the one under the cursor, "" for a new one) after the words
 * before it (the command line without "llmpress"): one candidate a line,
 * each a whole replacement for that word.  cli/bash-completion/llmpress calls it.
 * The candidates come from the tables the commands themselves read: the
 * command table, each command's option table (lp_cli_synopsis) and the
 * pass registry (passes, their parameters and enum choices), so passes of
 * plugins found on LLMPRESS_PLUGIN_PATH complete too.  Nothing printed
 * means "a file name", which the script leaves to bash. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "registry.h"

/* Print `head` + `word` + `tail` when it extends what was typed, `typed`. */
static void
offer (const char *typed, const char *head, const char *word, const char *tail)
{
  g_autofree char *full = g_strconcat (head, word, tail, NULL);
  if (g_str_has_prefix (full, typed))
    printf ("%s\n", full);
}

static void
offer_passes (const LpRegistry *reg, const char *typed, const char *head)
{
  g_autoptr (GPtrArray) passes = lp_registry_passes (reg);
  for (guint i = 0; i < passes->len; i++)
    offer (typed, head, ((const LpPassEntry *) passes->pdata[i])->info->name, "");
}

/* key=value of `pass` in a pipeline: the value's choices after '=', else
 * the keys the pass takes (parameters, then named inputs). */
static void
offer_pass_keys (const LpRegistry *reg, const char *pass, const char *typed, const char *head, const char *token)
{
  const LpPassEntry *e = lp_registry_lookup (reg, pass);
  if (e == NULL)
    return;
  const char *eq = strchr (token, '=');
  if (eq != NULL)
    {
      g_autofree char *key = g_strndup (token, eq - token);
      g_autofree char *key_head = g_strconcat (head, key, "=", NULL);
      const LpParamSpec *s = lp_pass_info_find_param (e->info, key);
      if (s != NULL && s->type == LP_PARAM_ENUM)
        for (const char *const *c = s->choices; c && *c; c++)
          offer (typed, key_head, *c, "");
      if (s != NULL && s->type == LP_PARAM_BOOL)
        {
          offer (typed, key_head, "true", "");
          offer (typed, key_head, "false", "");
        }
      return;
    }
  for (const LpParamSpec *s = e->info->params; s && s->name; s++)
    offer (typed, head, s->name, "=");
  for (const LpInputSpec *in = e->info->inputs; in && in->name; in++)
    if (lp_pass_info_find_param (e->info, in->name) == NULL)
      offer (typed, head, in->name, "=");
}

/* The end of the blank-separated token starting at p, quotes grouping as
 * the inline pipeline reader (pipeline/spec.c) groups them. */
static const char *
token_end (const char *p)
{
  while (*p && !g_ascii_isspace (*p))
    {
      if (*p == '\'' || *p == '"')
        {
          const char *close = strchr (p + 1, *p);
          p = close ? close + 1 : p + strlen (p);
        }
      else
        p++;
    }
  return p;
}

/* An inline pipeline, 'PASS k=v ! [NAME:]PASS ...', of which `text` is typed
 * so far; `lead` precedes it in the word ("--pipeline=" or ""). */
static void
complete_pipeline (const char *lead, const char *text)
{
  g_autoptr (LpRegistry) reg = lp_cli_registry (FALSE);
  g_autofree char *typed = g_strconcat (lead, text, NULL);
  /* Walk the finished tokens: the last one is what the cursor is on. */
  g_autofree char *pass = NULL;
  gboolean element_start = TRUE;
  const char *p = text;
  for (;;)
    {
      while (g_ascii_isspace (*p))
        p++;
      const char *end = token_end (p);
      if (*end == '\0')
        break;
      g_autofree char *tok = g_strndup (p, end - p);
      if (strcmp (tok, "!") == 0)
        element_start = TRUE;
      else if (element_start)
        {
          const char *colon = strchr (tok, ':');
          g_free (pass);
          pass = g_strdup (colon ? colon + 1 : tok);
          element_start = FALSE;
        }
      p = end;
    }
  g_autofree char *done = g_strndup (text, p - text);
  g_autofree char *head = g_strconcat (lead, done, NULL);
  if (element_start)
    {
      /* [NAME:]PASS: keep a node name typed before ':'. */
      const char *colon = strchr (p, ':');
      g_autofree char *name = colon ? g_strndup (p, colon + 1 - p) : g_strdup ("");
      g_autofree char *named = g_strconcat (head, name, NULL);
      offer_passes (reg, typed, named);
    }
  else if (pass != NULL)
    offer_pass_keys (reg, pass, typed, head, p);
}

/* words[0] is the command, words[n - 1] the word under the cursor. */
static void
complete_command (const LpCliCommand *command, char **words, int n)
{
  LpCliSynopsis syn;
  lp_cli_synopsis (command, &syn);
  const char *typed = words[n - 1];
  /* Count the positional arguments before the cursor; note the option
   * (its long name) whose value is being typed. */
  int positional = 0;
  gboolean options_done = FALSE;
  const char *value_of = NULL;
  for (int i = 1; i < n - 1; i++)
    {
      const char *w = words[i];
      if (options_done || w[0] != '-' || w[1] == '\0')
        positional++;
      else if (strcmp (w, "--") == 0)
        options_done = TRUE;
      else if (strchr (w, '=') == NULL && g_hash_table_contains (syn.value_options, w))
        {
          if (i == n - 2)
            value_of = g_hash_table_lookup (syn.value_options, w);
          i++;
        }
    }
  if (value_of != NULL)
    {
      if (strcmp (value_of, "pipeline") == 0)
        complete_pipeline ("", typed);
    }
  else if (!options_done && g_str_has_prefix (typed, "--pipeline=") && g_hash_table_contains (syn.value_options, "--pipeline"))
    complete_pipeline ("--pipeline=", typed + strlen ("--pipeline="));
  else if (!options_done && typed[0] == '-')
    {
      for (guint i = 0; i < syn.options->len; i++)
        offer (typed, "", syn.options->pdata[i], "");
    }
  else if (positional == 0 && strcmp (syn.params, "PASS") == 0)
    {
      /* describe PASS */
      g_autoptr (LpRegistry) reg = lp_cli_registry (FALSE);
      offer_passes (reg, typed, "");
    }
  else if (positional == 0 && strchr (syn.params, '|') != NULL)
    {
      /* A synopsis such as "gc|verify|dir": the words the command takes. */
      g_auto (GStrv) choices = g_strsplit (syn.params, "|", -1);
      for (char **c = choices; *c; c++)
        offer (typed, "", *c, "");
    }
  lp_cli_synopsis_clear (&syn);
}

int
lp_cmd_complete (int argc, char **argv)
{
  if (argc < 2)
    return LP_EXIT_USAGE;
  char **words = argv + 1;
  int n = argc - 1;
  if (n == 1)
    {
      gsize n_commands;
      const LpCliCommand *commands = lp_cli_commands (&n_commands);
      for (gsize i = 0; i < n_commands; i++)
        offer (words[0], "", commands[i].name, "");
      if (words[0][0] == '-')
        {
          offer (words[0], "", "--help", "");
          offer (words[0], "", "--version", "");
        }
      return LP_EXIT_OK;
    }
  const LpCliCommand *command = lp_cli_find_command (words[0]);
  if (command != NULL)
    complete_command (command, words, n);
  return LP_EXIT_OK;
}
