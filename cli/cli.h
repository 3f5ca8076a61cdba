/* llmpress CLI — shared by the subcommands. */
#pragma once

#include <glib.h>
#include <llmpress/llmpress.h>

/* Exit codes of every command. */
enum { LP_EXIT_OK = 0, LP_EXIT_FAILURE = 1, LP_EXIT_USAGE = 2 };

/* A subcommand: argv[0] is the command name. */
typedef struct {
  const char *name;
  const char *summary;
  int (*run) (int argc, char **argv);
} LpCliCommand;

/* Parse options for a command with GOption; on a usage error print it with a
 * hint and return FALSE (the caller returns LP_EXIT_USAGE).  `params` is
 * the positional-argument synopsis ("MODEL"), `description` the --help text
 * after the options. */
gboolean lp_cli_parse (const char *command, const char *params, const char *summary,
                       const char *description, const GOptionEntry *entries, int *argc, char ***argv);
/* A copy of `entries` (g_free it) whose int, int64 and double options are
 * read strictly: non-negative integers in range, finite numbers >= 0; the
 * group's user data must be `entries` itself (numbers.c). */
GOptionEntry *lp_cli_number_entries (const GOptionEntry *entries);
/* Print "llmpress: <message>" on stderr and return LP_EXIT_FAILURE. */
int lp_cli_fail (GError *error);
/* Print a usage error for `command` and return LP_EXIT_USAGE. */
int lp_cli_usage_error (const char *command, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

/* The --tokenizer option of every command that reads a model. */
#define LP_CLI_TOKENIZER_ENTRY(var)                                                                \
  { "tokenizer", 0, 0, G_OPTION_ARG_FILENAME, &(var),                                              \
    "llama2.c model: its tokenizer.bin (default: <stem>.tokenizer.bin, tokenizer.bin or tok<V>.bin beside it)", "PATH" }

/* --type (f32, f16, bf16; NULL: keep), --format (gguf, hf or safetensors,
 * llama2c; NULL: from the path) and --f16-overflow (error, clamp; NULL:
 * error) into *out; on a bad value print a usage error for `command` and
 * return FALSE (the caller returns LP_EXIT_USAGE). */
gboolean lp_cli_save_options (const char *command, const char *type, const char *format, const char *overflow,
                              LpSaveOptions *out);
/* The --f16-overflow option of the commands that write a model. */
#define LP_CLI_OVERFLOW_ENTRY(var)                                                                 \
  { "f16-overflow", 0, 0, G_OPTION_ARG_STRING, &(var),                                             \
    "A value beyond f16's range (|x| > 65504): error (default) or clamp (to +-65504, counted)", "MODE" }
/* lp_model_save, then one summary line on stdout; on failure nothing new is
 * left at `path`. */
gboolean lp_cli_save_model (LpModel *model, const char *path, const LpSaveOptions *options,
                            GError **error);
/* "512M", "8G", "1.5GiB", "4096" in bytes; FALSE for anything else, a
 * negative or non-finite number, or 2^64 bytes and more (numbers.c). */
gboolean lp_cli_parse_size (const char *text, guint64 *out);
/* The option every command that runs the forward pass takes: the bytes of
 * weights it keeps on the backend (lp_forward_set_device_memory). */
#define LP_CLI_DEVICE_MEMORY_ENTRY(var)                                                               \
  { "device-memory", 0, 0, G_OPTION_ARG_STRING, &(var),                                             \
    "keep at most SIZE of weights on the backend (512M, 8G; default: no limit)", "SIZE" }
/* *out = --device-memory's value (0 when text is NULL); a usage error for
 * `command` and FALSE when text is no size. */
gboolean lp_cli_parse_device_memory (const char *command, const char *text, guint64 *out);
/* The pass registry, with refused plugins reported on stderr when asked. */
struct _LpRegistry *lp_cli_registry (gboolean report_rejects);

/* What a command's lp_cli_parse call declares, read without running the
 * command (lp_cli_synopsis): completion asks for it, so it lists the
 * options of the very tables --help prints. */
typedef struct {
  GPtrArray *options;  /* "--name" for a flag, "--name=" for an option taking a value; "-x" for short names */
  GHashTable *value_options;  /* each option taking a value, "-x" and "--name", to its long name */
  char *params;        /* the positional synopsis: "MODEL", "gc|verify|dir" */
} LpCliSynopsis;

/* Every command of `llmpress` (main.c), *n of them. */
const LpCliCommand *lp_cli_commands (gsize *n);
/* The command named `name`, or NULL. */
const LpCliCommand *lp_cli_find_command (const char *name);
/* Fill `out` with what `command` passes to lp_cli_parse; the command itself
 * stops there and does nothing.  Clear it with lp_cli_synopsis_clear. */
void lp_cli_synopsis (const LpCliCommand *command, LpCliSynopsis *out);
void lp_cli_synopsis_clear (LpCliSynopsis *synopsis);

int lp_cmd_complete (int argc, char **argv);
int lp_cmd_inspect (int argc, char **argv);
int lp_cmd_convert (int argc, char **argv);
int lp_cmd_tokenize (int argc, char **argv);
int lp_cmd_synth (int argc, char **argv);
int lp_cmd_eval (int argc, char **argv);
int lp_cmd_generate (int argc, char **argv);
int lp_cmd_run (int argc, char **argv);
int lp_cmd_validate (int argc, char **argv);
int lp_cmd_report (int argc, char **argv);
int lp_cmd_graph (int argc, char **argv);
int lp_cmd_plugins (int argc, char **argv);
int lp_cmd_describe (int argc, char **argv);
int lp_cmd_cache (int argc, char **argv);
int lp_cmd_devices (int argc, char **argv);
