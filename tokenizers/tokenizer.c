/* llmpress — the tokenizer object: vocabulary from tokenizer.ggml.* keys,
 * encoding (special tokens split off, then SPM or byte-level BPE), decoding. */
#include "config.h"

#include <string.h>

#include "tokenizer-internal.h"

static guint
span_hash (gconstpointer key)
{
  const LpSpan *k = key;
  guint32 h = 2166136261u; /* FNV-1a */
  for (gsize i = 0; i < k->n; i++)
    h = (h ^ (guint8) k->s[i]) * 16777619u;
  return h;
}

static gboolean
span_equal (gconstpointer a, gconstpointer b)
{
  const LpSpan *x = a, *y = b;
  return x->n == y->n && memcmp (x->s, y->s, x->n) == 0;
}

gint32
lp_tok_lookup (const LpTokenizer *tok, const char *s, gsize n)
{
  LpSpan key = { s, n };
  return GPOINTER_TO_INT (g_hash_table_lookup (tok->by_text, &key)) - 1;
}

int
lp_tok_parse_byte_token (const char *text)
{
  if (strlen (text) != 6 || strncmp (text, "<0x", 3) != 0 || text[5] != '>'
      || !g_ascii_isxdigit (text[3]) || !g_ascii_isxdigit (text[4]))
    return -1;
  return g_ascii_xdigit_value (text[3]) * 16 + g_ascii_xdigit_value (text[4]);
}

gint32
lp_tok_meta_id (const LpMeta *meta, const char *key, gint64 n_vocab)
{
  gint64 v;
  if (!lp_meta_get_int (meta, key, &v, NULL) || v < 0 || v >= n_vocab)
    return -1;
  return (gint32) v;
}

void
lp_tok_meta_set_id (LpMeta *meta, const char *key, gint64 id)
{
  /* llama.cpp's converters write u32, with 4294967295 for "none". */
  lp_meta_set_u32 (meta, key, id < 0 ? G_MAXUINT32 : (guint32) id);
}

gboolean
lp_tok_vocab_from_meta (const LpMeta *meta, const char *path, LpTokVocab *v, GError **error)
{
  memset (v, 0, sizeof *v);
  v->model = lp_meta_get_string (meta, "tokenizer.ggml.model");
  if (v->model == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "%s: key tokenizer.ggml.model: expected a tokenizer kind, found none (the model has no tokenizer)", path);
      return FALSE;
    }
  GError *e = NULL;
  const LpValue *tokens = lp_meta_get_array (meta, "tokenizer.ggml.tokens", LP_VALUE_STRING, &e);
  if (tokens == NULL)
    {
      if (e != NULL)
        {
          g_propagate_error (error, e);
          lp_error_prefix (error, path);
        }
      else
        lp_set_error (error, LP_ERROR_MISSING, "%s: key tokenizer.ggml.tokens: expected the vocabulary, found none", path);
      return FALSE;
    }
  if (tokens->n_elems == 0 || tokens->n_elems > G_MAXINT32)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key tokenizer.ggml.tokens: expected 1 to %d tokens, found %" G_GUINT64_FORMAT,
                    path, G_MAXINT32, tokens->n_elems);
      return FALSE;
    }
  v->n = tokens->n_elems;
  v->tokens = tokens->array;
  static const struct { const char *key; LpValueType type; } opt[2] = {
    { "tokenizer.ggml.scores", LP_VALUE_F32 }, { "tokenizer.ggml.token_type", LP_VALUE_I32 } };
  for (int k = 0; k < 2; k++)
    {
      if (!lp_meta_has (meta, opt[k].key))
        continue;
      const LpValue *a = lp_meta_get_array (meta, opt[k].key, opt[k].type, &e);
      if (a == NULL)
        {
          g_propagate_error (error, e);
          lp_error_prefix (error, path);
          return FALSE;
        }
      if (a->n_elems != v->n)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected %" G_GUINT64_FORMAT " elements (one per token), found %" G_GUINT64_FORMAT,
                        path, opt[k].key, v->n, a->n_elems);
          return FALSE;
        }
      if (k == 0)
        v->scores = a->array;
      else
        v->types = a->array;
    }
  return TRUE;
}

void
lp_tok_meta_set_vocab (LpMeta *meta, const char *model, guint n, char **tokens, const float *scores,
                       const gint32 *types)
{
  lp_meta_set_array (meta, "tokenizer.ggml.tokens", LP_VALUE_STRING, n, tokens);
  if (scores != NULL)
    lp_meta_set_array (meta, "tokenizer.ggml.scores", LP_VALUE_F32, n, scores);
  lp_meta_set_array (meta, "tokenizer.ggml.token_type", LP_VALUE_I32, n, types);
  lp_meta_set_string (meta, "tokenizer.ggml.model", model);
}

gboolean
lp_tok_vocab_require_spm (const LpTokVocab *v, const char *path, const char *file, GError **error)
{
  if (strcmp (v->model, "llama") == 0)
    return TRUE;
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: %s holds SentencePiece (\"llama\") vocabularies, found tokenizer.ggml.model \"%s\"",
                path, file, v->model);
  return FALSE;
}

gboolean
lp_tok_write_file (const char *path, const void *a, gsize na, const void *b, gsize nb, GError **error)
{
  LpAtomicFile *af = lp_atomic_file_new (path, error);
  if (af == NULL)
    return FALSE;
  if (!lp_atomic_file_write (af, a, na, error) || !lp_atomic_file_write (af, b, nb, error))
    {
      lp_atomic_file_abort (af);
      return FALSE;
    }
  return lp_atomic_file_commit (af, error);
}

gint32
lp_tok_vocab_type (const LpTokVocab *v, guint64 id)
{
  return v->types != NULL ? v->types[id] : LP_TOKEN_NORMAL;
}

static gint
special_longer_first (gconstpointer a, gconstpointer b, gpointer user)
{
  const LpTokenizer *tok = user;
  gint32 x = *(const gint32 *) a, y = *(const gint32 *) b;
  if (tok->token_len[x] != tok->token_len[y])
    return tok->token_len[x] > tok->token_len[y] ? -1 : 1;
  return x < y ? -1 : x > y;
}

LpTokenizer *
lp_tokenizer_new_from_meta (const LpMeta *meta, GError **error)
{
  g_return_val_if_fail (meta != NULL, NULL);
  LpTokVocab v;
  if (!lp_tok_vocab_from_meta (meta, "tokenizer", &v, error))
    return NULL;
  g_autoptr (LpTokenizer) tok = g_new0 (LpTokenizer, 1);
  if (strcmp (v.model, "llama") == 0)
    tok->kind = LP_TOK_SPM;
  else if (strcmp (v.model, "gpt2") == 0)
    tok->kind = LP_TOK_BPE;
  else
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "tokenizer: key tokenizer.ggml.model: expected \"llama\" (SentencePiece BPE) or \"gpt2\" (byte-level BPE), found \"%s\"",
                    v.model);
      return NULL;
    }
  gint32 n = tok->n_vocab = (gint32) v.n;
  tok->tokens = g_new0 (char *, n + 1);
  tok->token_len = g_new (gsize, n);
  tok->scores = g_new0 (float, n);
  tok->types = g_new (gint32, n);
  tok->by_text = g_hash_table_new_full (span_hash, span_equal, g_free, NULL);
  for (gint32 i = 0; i < n; i++)
    {
      tok->tokens[i] = g_strdup (v.tokens[i]);
      tok->token_len[i] = strlen (v.tokens[i]);
      tok->scores[i] = v.scores ? v.scores[i] : 0.0f;
      tok->types[i] = lp_tok_vocab_type (&v, i);
      LpSpan *key = g_new (LpSpan, 1);
      key->s = tok->tokens[i];
      key->n = tok->token_len[i];
      g_hash_table_replace (tok->by_text, key, GINT_TO_POINTER (i + 1)); /* a duplicate: the last wins, as in llama.cpp */
    }
  tok->bos = lp_tok_meta_id (meta, "tokenizer.ggml.bos_token_id", n);
  tok->eos = lp_tok_meta_id (meta, "tokenizer.ggml.eos_token_id", n);
  tok->unk = lp_tok_meta_id (meta, "tokenizer.ggml.unknown_token_id", n);
  gboolean prefix = tok->kind == LP_TOK_SPM, remove_ws = FALSE;
  GError *e = NULL;
  if ((!lp_meta_get_bool (meta, "tokenizer.ggml.add_space_prefix", &prefix, &e) && e != NULL)
      || (!lp_meta_get_bool (meta, "tokenizer.ggml.remove_extra_whitespaces", &remove_ws, &e) && e != NULL))
    {
      g_propagate_prefixed_error (error, e, "tokenizer: ");
      return NULL;
    }
  tok->remove_extra_ws = remove_ws && tok->kind == LP_TOK_SPM;
  tok->add_space_prefix = prefix;

  /* User-defined tokens are never split (SentencePiece matches them before
   * BPE); byte-level vocabularies also match their control tokens. */
  GArray *sp = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (gint32 i = 0; i < n; i++)
    if (tok->token_len[i] > 0
        && (tok->types[i] == LP_TOKEN_USER_DEFINED || (tok->kind == LP_TOK_BPE && tok->types[i] == LP_TOKEN_CONTROL)))
      g_array_append_val (sp, i);
  g_array_sort_with_data (sp, special_longer_first, tok);
  tok->n_specials = sp->len;
  tok->specials = (gint32 *) g_array_free (sp, FALSE);

  if (tok->kind == LP_TOK_SPM)
    {
      for (int b = 0; b < 256; b++)
        {
          char text[7];
          g_snprintf (text, sizeof text, "<0x%02X>", b);
          tok->byte_token[b] = lp_tok_lookup (tok, text, 6);
        }
    }
  else if (!lp_tok_bpe_init (tok, meta, error))
    return NULL;

  /* BOS/EOS as the model says; unsaid, llama.cpp's default for the kind
   * (SentencePiece: BOS; byte-level: the pre-tokenizer's, set above). */
  if (tok->kind == LP_TOK_SPM)
    tok->add_bos = TRUE;
  if ((!lp_meta_get_bool (meta, "tokenizer.ggml.add_bos_token", &tok->add_bos, &e) && e != NULL)
      || (!lp_meta_get_bool (meta, "tokenizer.ggml.add_eos_token", &tok->add_eos, &e) && e != NULL))
    {
      g_propagate_prefixed_error (error, e, "tokenizer: ");
      return NULL;
    }
  tok->add_bos = tok->add_bos && tok->bos >= 0;
  tok->add_eos = tok->add_eos && tok->eos >= 0;
  return g_steal_pointer (&tok);
}

void
lp_tokenizer_free (LpTokenizer *tok)
{
  if (tok == NULL)
    return;
  g_strfreev (tok->tokens);
  g_free (tok->token_len);
  g_free (tok->scores);
  g_free (tok->types);
  if (tok->by_text)
    g_hash_table_unref (tok->by_text);
  g_free (tok->specials);
  if (tok->merges)
    g_hash_table_unref (tok->merges);
  g_free (tok->merge_list);
  for (guint i = 0; i < tok->n_pre; i++)
    if (tok->pre[i])
      g_regex_unref (tok->pre[i]);
  g_free (tok->pre);
  if (tok->char_byte)
    g_hash_table_unref (tok->char_byte);
  g_free (tok);
}

gint32 lp_tokenizer_n_vocab (const LpTokenizer *tok) { return tok->n_vocab; }
gint32 lp_tokenizer_bos (const LpTokenizer *tok) { return tok->bos; }
gint32 lp_tokenizer_eos (const LpTokenizer *tok) { return tok->eos; }
gboolean lp_tokenizer_adds_bos (const LpTokenizer *tok) { return tok->add_bos; }
gboolean lp_tokenizer_adds_eos (const LpTokenizer *tok) { return tok->add_eos; }

const char *
lp_tokenizer_token_text (const LpTokenizer *tok, gint32 id)
{
  g_return_val_if_fail (id >= 0 && id < tok->n_vocab, NULL);
  return tok->tokens[id];
}

/* The special token that starts at text[i], or -1. */
static gint32
special_at (const LpTokenizer *tok, const guint8 *first, const char *text, gsize len, gsize i)
{
  if (!first[(guint8) text[i]])
    return -1;
  for (guint k = 0; k < tok->n_specials; k++)
    {
      gint32 id = tok->specials[k];
      gsize n = tok->token_len[id];
      if (n <= len - i && memcmp (text + i, tok->tokens[id], n) == 0)
        return id;
    }
  return -1;
}

static gboolean
encode_fragment (const LpTokenizer *tok, const char *text, gsize len, gboolean at_start, GArray *out,
                 GError **error)
{
  if (len == 0)
    return TRUE;
  if (tok->kind == LP_TOK_SPM)
    {
      lp_tok_spm_encode (tok, text, len, at_start && tok->add_space_prefix, out);
      return TRUE;
    }
  return lp_tok_bpe_encode (tok, text, len, out, error);
}

GArray *
lp_tokenizer_encode (const LpTokenizer *tok, const char *text, gssize len, gboolean add_bos,
                     GError **error)
{
  return lp_tokenizer_encode_full (tok, text, len, add_bos ? LP_TOKENIZE_BOS : 0, error);
}

GArray *
lp_tokenizer_encode_full (const LpTokenizer *tok, const char *text, gssize len, LpTokenizeFlags flags,
                          GError **error)
{
  g_return_val_if_fail (tok != NULL && text != NULL, NULL);
  gsize n = len < 0 ? strlen (text) : (gsize) len;
  const char *bad;
  if (!g_utf8_validate_len (text, n, &bad))
    {
      lp_set_error (error, LP_ERROR_INVALID, "text to encode: byte offset %" G_GSIZE_FORMAT ": expected UTF-8, found byte 0x%02x",
                    (gsize) (bad - text), (guint8) *bad);
      return NULL;
    }
  g_autoptr (GArray) out = g_array_sized_new (FALSE, FALSE, sizeof (gint32), n / 2 + 2);
  if (flags & LP_TOKENIZE_MODEL)
    flags |= (tok->add_bos ? LP_TOKENIZE_BOS : 0) | (tok->add_eos ? LP_TOKENIZE_EOS : 0);
  if ((flags & LP_TOKENIZE_BOS) && tok->bos >= 0)
    g_array_append_val (out, tok->bos);
  guint8 first[256] = { 0 };
  for (guint k = 0; k < tok->n_specials; k++)
    first[(guint8) tok->tokens[tok->specials[k]][0]] = 1;
  /* The dummy prefix goes once, before the text's first character, as
   * SentencePiece adds it to the whole input. */
  gsize start = 0;
  for (gsize i = 0; i < n; i++)
    {
      gint32 id = special_at (tok, first, text, n, i);
      if (id < 0)
        continue;
      if (!encode_fragment (tok, text + start, i - start, start == 0, out, error))
        return NULL;
      g_array_append_val (out, id);
      start = i + tok->token_len[id];
      i = start - 1;
    }
  if (!encode_fragment (tok, text + start, n - start, start == 0, out, error))
    return NULL;
  if ((flags & LP_TOKENIZE_EOS) && tok->eos >= 0)
    g_array_append_val (out, tok->eos);
  return g_steal_pointer (&out);
}

static void
append_unescaped (GString *s, const char *text)
{
  /* "▁" (U+2581) stands for a space. */
  for (const char *p = text; *p;)
    {
      if (strncmp (p, "\xe2\x96\x81", 3) == 0)
        {
          g_string_append_c (s, ' ');
          p += 3;
        }
      else
        g_string_append_c (s, *p++);
    }
}

static void
append_byte_level (const LpTokenizer *tok, GString *s, const char *text)
{
  for (const char *p = text; *p; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);
      gpointer b = g_hash_table_lookup (tok->char_byte, GUINT_TO_POINTER (c));
      if (b != NULL)
        g_string_append_c (s, (char) (GPOINTER_TO_UINT (b) - 1));
      else
        g_string_append_len (s, p, g_utf8_next_char (p) - p);
    }
}

static void
append_piece (const LpTokenizer *tok, GString *s, gint32 prev, gint32 id)
{
  if (id < 0 || id >= tok->n_vocab)
    return;
  const char *text = tok->tokens[id];
  gsize before = s->len;
  switch (tok->types[id])
    {
    case LP_TOKEN_CONTROL:
      return;
    case LP_TOKEN_USER_DEFINED:
      g_string_append (s, text);
      return;
    case LP_TOKEN_BYTE:
      if (tok->kind == LP_TOK_SPM && lp_tok_parse_byte_token (text) >= 0)
        {
          g_string_append_c (s, (char) lp_tok_parse_byte_token (text));
          return;
        }
      break;
    case LP_TOKEN_UNKNOWN:
      if (tok->kind == LP_TOK_SPM)
        {
          g_string_append (s, " \xe2\x81\x87 "); /* SentencePiece's " ⁇ " */
          return;
        }
      break;
    default:
      break;
    }
  if (tok->kind == LP_TOK_BPE)
    {
      append_byte_level (tok, s, text);
      return;
    }
  append_unescaped (s, text);
  /* SentencePiece drops the dummy prefix's space from the text's first piece. */
  gboolean at_start = prev < 0 || prev >= tok->n_vocab || tok->types[prev] == LP_TOKEN_CONTROL;
  if (tok->add_space_prefix && at_start && s->len > before && s->str[before] == ' ')
    g_string_erase (s, before, 1);
}

char *
lp_tokenizer_decode (const LpTokenizer *tok, const gint32 *ids, gsize n, gsize *out_len)
{
  GString *s = g_string_new (NULL);
  for (gsize i = 0; i < n; i++)
    append_piece (tok, s, i > 0 ? ids[i - 1] : -1, ids[i]);
  if (out_len)
    *out_len = s->len;
  return g_string_free (s, FALSE);
}

char *
lp_tokenizer_decode_piece (const LpTokenizer *tok, gint32 prev, gint32 id, gsize *out_len)
{
  GString *s = g_string_new (NULL);
  append_piece (tok, s, prev, id);
  if (out_len)
    *out_len = s->len;
  return g_string_free (s, FALSE);
}
