/* llmpress — llama2.c's tokenizer.bin: int32 max_token_length, then per
 * token: float32 score, int32 byte length, the bytes (no NUL).
 *
 * llama2.c's exporter writes spaces as spaces (not "▁") and BOS/EOS as
 * "\n<s>\n" / "\n</s>\n".  We translate exactly as llama.cpp's
 * convert-llama2c-to-ggml does, so a model read from llama2.c files carries
 * the same tokenizer.ggml.* keys as the GGUF that converter writes: ids 0/1/2
 * are <unk> (unknown) / <s> / </s> (control), an empty text is a control
 * token, "<0xXX>" a byte token, anything else normal; spaces become "▁". */
#include "config.h"

#include <string.h>

#include "tokenizer-internal.h"

#define SPACE_MARK "\xe2\x96\x81"

gboolean
lp_tokenizer_read_llama2c (const char *path, gint64 n_vocab, LpMeta *meta, GError **error)
{
  g_autoptr (GMappedFile) mf = lp_map_file (path, error);
  if (mf == NULL)
    return FALSE;
  LpByteReader r;
  lp_byte_reader_init (&r, path, g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf));
  gint32 max_len;
  if (!lp_byte_reader_i32 (&r, &max_len, "int32 max_token_length", error))
    return FALSE;
  if (max_len < 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset 0: max_token_length: expected a length >= 0, found %d", path, max_len);
      return FALSE;
    }
  g_autoptr (GPtrArray) tokens = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GArray) scores = g_array_new (FALSE, FALSE, sizeof (float));
  g_autoptr (GArray) types = g_array_new (FALSE, FALSE, sizeof (gint32));
  /* n_vocab <= 0: as many tokens as the file holds. */
  for (gint64 id = 0; n_vocab > 0 ? id < n_vocab : r.off < r.size; id++)
    {
      g_autofree char *what_score = g_strdup_printf ("float32 score of token %" G_GINT64_FORMAT, id);
      g_autofree char *what_len = g_strdup_printf ("int32 length of token %" G_GINT64_FORMAT, id);
      float score;
      gint32 len;
      if (!lp_byte_reader_f32 (&r, &score, what_score, error))
        return FALSE;
      gsize len_off = r.off;
      if (!lp_byte_reader_i32 (&r, &len, what_len, error))
        return FALSE;
      if (len < 0)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": length of token %" G_GINT64_FORMAT ": expected >= 0, found %d",
                        path, len_off, id, len);
          return FALSE;
        }
      g_autofree char *what = g_strdup_printf ("%d bytes of token %" G_GINT64_FORMAT, len, id);
      const guint8 *bytes;
      gsize text_off = r.off;
      if (!lp_byte_reader_bytes (&r, len, &bytes, what, error))
        return FALSE;
      const char *bad;
      if (!g_utf8_validate_len ((const char *) bytes, len, &bad))
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": text of token %" G_GINT64_FORMAT ": expected UTF-8, found byte 0x%02x",
                        path, text_off + (gsize) (bad - (const char *) bytes), id, (guint8) *bad);
          return FALSE;
        }
      g_autofree char *text = g_strndup ((const char *) bytes, len);
      gint32 type = LP_TOKEN_NORMAL;
      if (id == 0 || id == 1 || id == 2)
        {
          static const char *const names[3] = { "<unk>", "<s>", "</s>" };
          g_free (text);
          text = g_strdup (names[id]);
          type = id == 0 ? LP_TOKEN_UNKNOWN : LP_TOKEN_CONTROL;
        }
      else if (len == 0)
        type = LP_TOKEN_CONTROL;
      else if (lp_tok_parse_byte_token (text) >= 0)
        type = LP_TOKEN_BYTE;
      g_autoptr (GString) escaped = g_string_new (text);
      g_string_replace (escaped, " ", SPACE_MARK, 0);
      g_ptr_array_add (tokens, g_string_free (g_steal_pointer (&escaped), FALSE));
      g_array_append_val (scores, score);
      g_array_append_val (types, type);
    }
  if (n_vocab > 0 && r.off != r.size)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": expected end of file after %" G_GINT64_FORMAT " tokens (the model's vocabulary size), found %" G_GSIZE_FORMAT " more bytes",
                    path, r.off, n_vocab, r.size - r.off);
      return FALSE;
    }
  if (tokens->len < 3)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: expected at least 3 tokens (<unk>, <s>, </s>), found %u", path, tokens->len);
      return FALSE;
    }
  /* Keys and value types as llama.cpp's converter writes them. */
  lp_tok_meta_set_vocab (meta, "llama", tokens->len, (char **) tokens->pdata, (float *) scores->data,
                         (gint32 *) types->data);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.unknown_token_id", 0);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.bos_token_id", 1);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.eos_token_id", 2);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.seperator_token_id", -1);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.padding_token_id", -1);
  return TRUE;
}

GBytes *
lp_tokenizer_llama2c_bytes (const LpMeta *meta, const char *path, GError **error)
{
  LpTokVocab v;
  if (!lp_tok_vocab_from_meta (meta, path, &v, error))
    return NULL;
  if (!lp_tok_vocab_require_spm (&v, path, "tokenizer.bin", error))
    return NULL;
  /* The format has no ids for its special tokens: readers assume 0/1/2. */
  static const char *const keys[3] = { "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
                                       "tokenizer.ggml.eos_token_id" };
  for (gint32 k = 0; k < 3; k++)
    {
      gint32 id = lp_tok_meta_id (meta, keys[k], v.n);
      if (id >= 0 && id != k)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key %s: tokenizer.bin has no place for it: expected %d, found %d",
                        path, keys[k], k, id);
          return NULL;
        }
    }
  g_autoptr (GByteArray) body = g_byte_array_new ();
  gint32 max_len = 0;
  for (guint64 i = 0; i < v.n; i++)
    {
      g_autoptr (GString) t = g_string_new (v.tokens[i]);
      if (i == 1 || i == 2)
        g_string_printf (t, "\n%s\n", i == 1 ? "<s>" : "</s>");
      else
        g_string_replace (t, SPACE_MARK, " ", 0);
      union { float f; guint32 u; } score = { v.scores ? v.scores[i] : 0.0f };
      guint32 le[2] = { GUINT32_TO_LE (score.u), GUINT32_TO_LE ((guint32) t->len) };
      max_len = MAX (max_len, (gint32) t->len);
      g_byte_array_append (body, (const guint8 *) le, 8);
      g_byte_array_append (body, (const guint8 *) t->str, t->len);
    }
  guint32 max_le = GUINT32_TO_LE ((guint32) max_len);
  g_byte_array_prepend (body, (const guint8 *) &max_le, 4);
  return g_byte_array_free_to_bytes (g_steal_pointer (&body));
}

gboolean
lp_tokenizer_write_llama2c (const LpMeta *meta, const char *path, GError **error)
{
  g_autoptr (GBytes) bytes = lp_tokenizer_llama2c_bytes (meta, path, error);
  if (bytes == NULL)
    return FALSE;
  gsize n;
  const void *data = g_bytes_get_data (bytes, &n);
  return lp_tok_write_file (path, data, n, NULL, 0, error);
}
