/* llmpress tokenize: encode text with the model's own tokenizer. */
#include "config.h"

#include <stdio.h>

#include "cli.h"

/* The piece with control bytes, backslash and invalid UTF-8 made visible;
 * valid UTF-8 (such as SentencePiece's "▁") is kept as it is. */
static char *
escape_piece (const char *piece)
{
  GString *s = g_string_new (NULL);
  for (const char *p = piece; *p != '\0';)
    {
      guchar ch = (guchar) *p;
      if (ch == '\\')
        g_string_append (s, "\\\\");
      else if (ch == '\n')
        g_string_append (s, "\\n");
      else if (ch == '\t')
        g_string_append (s, "\\t");
      else if (ch == '\r')
        g_string_append (s, "\\r");
      else if (ch < 0x20 || ch == 0x7f)
        g_string_append_printf (s, "\\x%02x", ch);
      else if (ch >= 0x80)
        {
          gunichar u = g_utf8_get_char_validated (p, -1);
          if (u == (gunichar) -1 || u == (gunichar) -2)
            g_string_append_printf (s, "\\x%02x", ch);
          else
            {
              const char *next = g_utf8_next_char (p);
              g_string_append_len (s, p, next - p);
              p = next;
              continue;
            }
        }
      else
        g_string_append_c (s, (char) ch);
      p++;
    }
  return g_string_free (s, FALSE);
}

int
lp_cmd_tokenize (int argc, char **argv)
{
  gboolean ids = FALSE, no_bos = FALSE;
  g_autofree char *file = NULL, *tokenizer = NULL;
  const GOptionEntry entries[] = {
    { "ids", 'i', 0, G_OPTION_ARG_NONE, &ids, "Print only the ids, space-separated on one line", NULL },
    { "no-bos", 0, 0, G_OPTION_ARG_NONE, &no_bos, "Do not start with the beginning-of-sequence token, even where the model adds it", NULL },
    { "file", 'f', 0, G_OPTION_ARG_FILENAME, &file, "Encode the contents of FILE instead of TEXT", "FILE" },
    LP_CLI_TOKENIZER_ENTRY (tokenizer),
    { NULL },
  };
  if (!lp_cli_parse ("tokenize", "MODEL [TEXT]", "Encode text with a model's tokenizer.",
                     "Give the text as TEXT or with --file, not both.  Each token is printed as\n"
                     "\"id<TAB>piece\", the piece as the vocabulary stores it (\"▁\" for a space)\n"
                     "with control bytes escaped (\\n, \\t, \\xNN).\n\n"
                     "Example:\n  llmpress tokenize stories260K.gguf --ids \"Once upon a time\"",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc < 2)
    return lp_cli_usage_error ("tokenize", "expected MODEL and TEXT (or --file), found no MODEL");
  if (argc > 3)
    return lp_cli_usage_error ("tokenize", "expected MODEL and one TEXT, found %d arguments (quote the text)", argc - 1);
  if ((argc == 3) == (file != NULL))
    return lp_cli_usage_error ("tokenize", "expected the text either as TEXT or with --file, found %s",
                               file != NULL ? "both" : "neither");

  GError *error = NULL;
  g_autofree char *contents = NULL;
  gsize len = 0;
  if (file != NULL && !g_file_get_contents (file, &contents, &len, &error))
    return lp_cli_fail (error);
  const char *text = file != NULL ? contents : argv[2];
  gssize text_len = file != NULL ? (gssize) len : -1;

  LpLoadOptions load = { tokenizer };
  g_autoptr (LpModel) model = lp_model_load (argv[1], &load, &error);
  if (model == NULL)
    return lp_cli_fail (error);
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (lp_model_meta (model), &error);
  if (tok == NULL)
    return lp_cli_fail (error);
  /* BOS and EOS as the model says (tokenizer.ggml.add_bos_token, ...). */
  LpTokenizeFlags flags = (lp_tokenizer_adds_bos (tok) && !no_bos ? LP_TOKENIZE_BOS : 0)
                          | (lp_tokenizer_adds_eos (tok) ? LP_TOKENIZE_EOS : 0);
  g_autoptr (GArray) tokens = lp_tokenizer_encode_full (tok, text, text_len, flags, &error);
  if (tokens == NULL)
    return lp_cli_fail (error);

  for (guint i = 0; i < tokens->len; i++)
    {
      gint32 id = g_array_index (tokens, gint32, i);
      if (ids)
        printf ("%s%d", i ? " " : "", id);
      else
        {
          g_autofree char *piece = escape_piece (lp_tokenizer_token_text (tok, id));
          printf ("%d\t%s\n", id, piece);
        }
    }
  if (ids)
    printf ("\n");
  return LP_EXIT_OK;
}
