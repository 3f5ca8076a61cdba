/* llmpress — evaluation and calibration data: token files and text read
 * into token ids, and the windows both cut from them (BOS-led when the
 * model's tokenizer adds BOS). */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include "outputs.h"
#include <llmpress/data.h>

GArray *
lp_tokens_load (const char *path, LpModel *model, GError **error)
{
  gsize width = g_str_has_suffix (path, ".u16") ? 2 : g_str_has_suffix (path, ".u32") ? 4 : 0;
  gint64 n_vocab = lp_model_config (model)->n_vocab;
  g_autofree char *contents = NULL;
  gsize len = 0;
  GError *local = NULL;
  if (!lp_input_check (path, FALSE, error))
    return NULL;
  if (!g_file_get_contents (path, &contents, &len, &local))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot read: %s", path, local->message);
      g_error_free (local);
      return NULL;
    }
  if (width == 0)
    {
      g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (lp_model_meta (model), error);
      if (tok == NULL)
        {
          lp_error_prefix (error, path);
          return NULL;
        }
      GArray *ids = lp_tokenizer_encode (tok, contents, len, FALSE, error);
      if (ids == NULL)
        lp_error_prefix (error, path);
      return ids;
    }
  if (len % width != 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: size %" G_GSIZE_FORMAT ": expected a multiple of %" G_GSIZE_FORMAT " bytes (uint%" G_GSIZE_FORMAT " tokens)",
                    path, len, width, width * 8);
      return NULL;
    }
  GArray *ids = g_array_sized_new (FALSE, FALSE, sizeof (gint32), len / width);
  for (gsize i = 0; i < len / width; i++)
    {
      const guint8 *p = (const guint8 *) contents + i * width;
      guint32 id = width == 2 ? (guint32) (p[0] | p[1] << 8) : (guint32) (p[0] | p[1] << 8 | p[2] << 16 | (guint32) p[3] << 24);
      if (id >= (guint64) n_vocab)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": expected a token id below the vocabulary size %" G_GINT64_FORMAT ", found %u",
                        path, i * width, n_vocab, id);
          g_array_unref (ids);
          return NULL;
        }
      gint32 v = (gint32) id;
      g_array_append_val (ids, v);
    }
  return ids;
}

void
lp_tokens_window (const gint32 *tokens, gsize start, int len, gint32 bos, gint32 *out)
{
  if (bos < 0)
    {
      memcpy (out, tokens + start, (gsize) len * sizeof (gint32));
      return;
    }
  out[0] = bos;
  memcpy (out + 1, tokens + start, (gsize) (len - 1) * sizeof (gint32));
}

gint32
lp_tokens_bos (LpModel *model)
{
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (lp_model_meta (model), NULL);
  if (tok == NULL)
    return 1; /* no vocabulary to ask: llama2.c's BOS */
  return lp_tokenizer_adds_bos (tok) ? lp_tokenizer_bos (tok) : -1;
}
