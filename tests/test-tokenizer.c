/* Tokenizers: SentencePiece BPE against the real stories260K vocabulary and
 * its reference tokenization, byte-level BPE on a hand-built vocabulary,
 * the tokenizer.bin / tokenizer.model / tokenizer.json readers and writers,
 * and bad input.
 *
 * The reference data/tinystories-valid-head.tok512.u16 is the whole text
 * encoded as ONE string, without BOS, by SentencePiece with tok512.model:
 * one dummy-prefix "▁" before the first character (its first token is "▁S"
 * for "Spot"), and tok512.model's NormalizerSpec has
 * remove_extra_whitespaces = true, so the 6 runs of two spaces in the text
 * are encoded as one space (e.g. "jump.  His" -> "jump." "▁His").  That flag
 * is tokenizer.ggml.remove_extra_whitespaces in GGUF terms; llama2.c's
 * tokenizer.bin and llama.cpp's converted GGUF do not record it (llama.cpp
 * does not collapse spaces for SPM), so the tests set it for those two.
 * Decoding gives the text back with those runs collapsed; without the flag
 * decoding gives the text back byte for byte. */
#include "config.h"

#include <string.h>
#include <glib/gstdio.h>

#include "testutil.h"

#define SPACE_MARK "\xe2\x96\x81"

static LpMeta *
read_tok512_bin (void)
{
  g_autofree char *path = lp_test_shared_path ("models/stories260K/tok512.bin");
  if (path == NULL)
    return NULL;
  LpMeta *meta = lp_meta_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_tokenizer_read_llama2c (path, 512, meta, &error));
  g_assert_no_error (error);
  return meta;
}

/* The text and its reference ids; FALSE (skipped) when absent. */
static gboolean
load_reference (char **text, gsize *text_len, GArray **ids)
{
  g_autofree char *tpath = lp_test_shared_path ("data/tinystories-valid-head.txt");
  g_autofree char *ipath = tpath ? lp_test_shared_path ("data/tinystories-valid-head.tok512.u16") : NULL;
  if (ipath == NULL)
    return FALSE;
  g_autofree char *raw = NULL;
  gsize n;
  g_assert_true (g_file_get_contents (tpath, text, text_len, NULL));
  g_assert_true (g_file_get_contents (ipath, &raw, &n, NULL));
  g_assert_cmpuint (n, ==, 2 * 393012);
  *ids = g_array_sized_new (FALSE, FALSE, sizeof (gint32), n / 2);
  for (gsize i = 0; i < n / 2; i++)
    {
      gint32 id = (guint8) raw[2 * i] | (guint8) raw[2 * i + 1] << 8;
      g_array_append_val (*ids, id);
    }
  return TRUE;
}

/* SentencePiece's remove_extra_whitespaces on the reference text. */
static char *
collapse_spaces (const char *text, gsize len, gsize *out_len)
{
  GString *s = g_string_sized_new (len);
  for (gsize i = 0; i < len; i++)
    if (text[i] != ' ' || (s->len > 0 && s->str[s->len - 1] != ' '))
      g_string_append_c (s, text[i]);
  while (s->len > 0 && s->str[s->len - 1] == ' ')
    g_string_truncate (s, s->len - 1);
  *out_len = s->len;
  return g_string_free (s, FALSE);
}

static void
assert_ids_equal (GArray *got, GArray *want)
{
  g_assert_cmpuint (got->len, ==, want->len);
  for (guint i = 0; i < want->len; i++)
    if (g_array_index (got, gint32, i) != g_array_index (want, gint32, i))
      g_error ("token %u: expected %d, found %d", i, g_array_index (want, gint32, i), g_array_index (got, gint32, i));
}

/* Encode the whole reference text as one string and compare. */
static void
check_reference (const LpMeta *meta)
{
  g_autofree char *text = NULL;
  gsize len;
  g_autoptr (GArray) want = NULL;
  if (!load_reference (&text, &len, &want))
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) got = lp_tokenizer_encode (tok, text, len, FALSE, &error);
  g_assert_no_error (error);
  assert_ids_equal (got, want);
  gsize dlen, clen;
  g_autofree char *decoded = lp_tokenizer_decode (tok, (gint32 *) got->data, got->len, &dlen);
  g_autofree char *collapsed = collapse_spaces (text, len, &clen);
  g_assert_cmpuint (clen, ==, len - 6);
  g_assert_cmpuint (dlen, ==, clen);
  g_assert_true (memcmp (decoded, collapsed, clen) == 0);
}

static void
test_llama2c_keys (void)
{
  g_autoptr (LpMeta) meta = read_tok512_bin ();
  if (meta == NULL)
    return;
  /* What llama.cpp's convert-llama2c-to-ggml wrote into stories260K-f32.gguf
   * (checked with gguf-py): these keys, these value types. */
  static const struct { const char *key; LpValueType type, elem; } keys[] = {
    { "tokenizer.ggml.tokens", LP_VALUE_ARRAY, LP_VALUE_STRING },
    { "tokenizer.ggml.scores", LP_VALUE_ARRAY, LP_VALUE_F32 },
    { "tokenizer.ggml.token_type", LP_VALUE_ARRAY, LP_VALUE_I32 },
    { "tokenizer.ggml.model", LP_VALUE_STRING, 0 },
    { "tokenizer.ggml.unknown_token_id", LP_VALUE_U32, 0 },
    { "tokenizer.ggml.bos_token_id", LP_VALUE_U32, 0 },
    { "tokenizer.ggml.eos_token_id", LP_VALUE_U32, 0 },
    { "tokenizer.ggml.seperator_token_id", LP_VALUE_U32, 0 },
    { "tokenizer.ggml.padding_token_id", LP_VALUE_U32, 0 },
  };
  g_assert_cmpuint (lp_meta_n_keys (meta), ==, G_N_ELEMENTS (keys));
  for (gsize k = 0; k < G_N_ELEMENTS (keys); k++)
    {
      const LpValue *v = lp_meta_get (meta, keys[k].key);
      g_assert_nonnull (v);
      g_assert_cmpint (v->type, ==, keys[k].type);
      if (v->type == LP_VALUE_ARRAY)
        {
          g_assert_cmpint (v->elem_type, ==, keys[k].elem);
          g_assert_cmpuint (v->n_elems, ==, 512);
        }
    }
  g_assert_cmpstr (lp_meta_get_string (meta, "tokenizer.ggml.model"), ==, "llama");
  g_assert_cmpuint (lp_meta_get (meta, "tokenizer.ggml.unknown_token_id")->u, ==, 0);
  g_assert_cmpuint (lp_meta_get (meta, "tokenizer.ggml.bos_token_id")->u, ==, 1);
  g_assert_cmpuint (lp_meta_get (meta, "tokenizer.ggml.eos_token_id")->u, ==, 2);
  g_assert_cmpuint (lp_meta_get (meta, "tokenizer.ggml.seperator_token_id")->u, ==, 4294967295u);
  g_assert_cmpuint (lp_meta_get (meta, "tokenizer.ggml.padding_token_id")->u, ==, 4294967295u);
  char **tokens = lp_meta_get (meta, "tokenizer.ggml.tokens")->array;
  float *scores = lp_meta_get (meta, "tokenizer.ggml.scores")->array;
  gint32 *types = lp_meta_get (meta, "tokenizer.ggml.token_type")->array;
  /* tokenizer.bin holds "\n<s>\n" and " t"; the GGUF "<s>" and "▁t". */
  g_assert_cmpstr (tokens[0], ==, "<unk>");
  g_assert_cmpint (types[0], ==, 2);
  g_assert_cmpstr (tokens[1], ==, "<s>");
  g_assert_cmpint (types[1], ==, 3);
  g_assert_cmpstr (tokens[2], ==, "</s>");
  g_assert_cmpint (types[2], ==, 3);
  g_assert_cmpstr (tokens[3], ==, "<0x00>");
  g_assert_cmpint (types[3], ==, 6);
  g_assert_cmpstr (tokens[258], ==, "<0xFF>");
  g_assert_cmpint (types[258], ==, 6);
  g_assert_cmpstr (tokens[259], ==, SPACE_MARK "t");
  g_assert_cmpint (types[259], ==, 1);
  g_assert_cmpstr (tokens[265], ==, SPACE_MARK "the");
  g_assert_cmpfloat (scores[265], ==, -6.0f);
  g_assert_cmpstr (tokens[511], ==, "\xe2\x80\x8a"); /* U+200A hair space */
  g_assert_cmpfloat (scores[511], ==, -252.0f);
  g_assert_cmpint (types[511], ==, 1);
}

static void
test_reference_bin (void)
{
  g_autoptr (LpMeta) meta = read_tok512_bin ();
  if (meta == NULL)
    return;
  lp_meta_set_bool (meta, "tokenizer.ggml.remove_extra_whitespaces", TRUE);
  check_reference (meta);
}

static void
test_reference_spm_model (void)
{
  g_autofree char *path = lp_test_shared_path ("models/stories260K/tok512.model");
  if (path == NULL)
    return;
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_tokenizer_read_spm (path, meta, &error));
  g_assert_no_error (error);
  /* The same keys as from tokenizer.bin (and the GGUF), plus the one
   * normalization flag that differs from llama.cpp's defaults. */
  gboolean b = FALSE;
  g_assert_true (lp_meta_get_bool (meta, "tokenizer.ggml.remove_extra_whitespaces", &b, NULL) && b);
  g_assert_false (lp_meta_has (meta, "tokenizer.ggml.add_space_prefix")); /* true, the default */
  g_autoptr (LpMeta) bin = read_tok512_bin ();
  if (bin == NULL)
    return;
  g_assert_cmpuint (lp_meta_n_keys (meta), ==, lp_meta_n_keys (bin) + 1);
  for (guint k = 0; k < lp_meta_n_keys (bin); k++)
    {
      g_assert_cmpstr (lp_meta_key (meta, k), ==, lp_meta_key (bin, k));
      g_assert_true (lp_value_equal (lp_meta_get (meta, lp_meta_key (bin, k)), lp_meta_get (bin, lp_meta_key (bin, k))));
    }
  check_reference (meta);
}

static void
test_reference_gguf (void)
{
  g_autofree char *path = lp_test_shared_path ("models/stories260K/stories260K-f32.gguf");
  if (path == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) model = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpMeta) meta = lp_meta_copy (lp_model_meta (model));
  /* The GGUF's tokenizer keys equal what our tokenizer.bin reader makes. */
  g_autoptr (LpMeta) bin = read_tok512_bin ();
  if (bin == NULL)
    return;
  for (guint k = 0; k < lp_meta_n_keys (bin); k++)
    {
      const char *key = lp_meta_key (bin, k);
      g_assert_true (lp_value_equal (lp_meta_get (meta, key), lp_meta_get (bin, key)));
    }
  for (guint k = 0; k < lp_meta_n_keys (meta); k++)
    if (g_str_has_prefix (lp_meta_key (meta, k), "tokenizer."))
      g_assert_true (lp_meta_has (bin, lp_meta_key (meta, k)));
  lp_meta_set_bool (meta, "tokenizer.ggml.remove_extra_whitespaces", TRUE);
  check_reference (meta);
}

static void
test_exact_without_normalization (void)
{
  g_autoptr (LpMeta) meta = read_tok512_bin ();
  g_autofree char *text = NULL;
  gsize len;
  g_autoptr (GArray) want = NULL;
  if (meta == NULL || !load_reference (&text, &len, &want))
    return;
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, NULL);
  g_autoptr (GArray) got = lp_tokenizer_encode (tok, text, len, TRUE, NULL);
  g_assert_cmpint (g_array_index (got, gint32, 0), ==, 1); /* BOS */
  g_assert_cmpuint (got->len, >, want->len + 1);           /* the 6 double spaces cost tokens */
  gsize dlen;
  g_autofree char *decoded = lp_tokenizer_decode (tok, (gint32 *) got->data, got->len, &dlen);
  g_assert_cmpuint (dlen, ==, len);
  g_assert_true (memcmp (decoded, text, len) == 0);
  /* Streaming pieces concatenate to the same text. */
  g_autoptr (GString) s = g_string_new (NULL);
  for (guint i = 0; i < got->len; i++)
    {
      gsize n;
      g_autofree char *p = lp_tokenizer_decode_piece (tok, i ? g_array_index (got, gint32, i - 1) : -1,
                                                      g_array_index (got, gint32, i), &n);
      g_string_append_len (s, p, n);
    }
  g_assert_cmpuint (s->len, ==, len);
  g_assert_true (memcmp (s->str, text, len) == 0);
}

/* A small SentencePiece vocabulary: merge order by score, ties leftmost, byte
 * fallback for what is not in it, the dummy prefix and its removal. */
static void
test_spm_small (void)
{
  GPtrArray *t = g_ptr_array_new_with_free_func (g_free);
  GArray *types = g_array_new (FALSE, FALSE, sizeof (gint32));
  GArray *scores = g_array_new (FALSE, FALSE, sizeof (float));
  const struct { const char *text; gint32 type; float score; } base[] = {
    { "<unk>", 2, 0 }, { "<s>", 3, 0 }, { "</s>", 3, 0 },
    { SPACE_MARK "a", 1, -1 },    /* 3 */
    { "aa", 1, -0.5f },           /* 4: beats ▁a */
    { SPACE_MARK, 1, -9 },        /* 5 */
    { "a", 1, -9 },               /* 6 */
    { "b", 1, -9 },               /* 7 */
    { "<0x41>", 1, 0 },           /* 8: a normal token that looks like a byte token */
    { "<", 1, -9 }, { "0", 1, -9 }, { "x", 1, -9 }, { "4", 1, -9 }, { "1", 1, -9 }, { ">", 1, -9 }, /* 9..14 */
  };
  for (gsize i = 0; i < G_N_ELEMENTS (base); i++)
    {
      g_ptr_array_add (t, g_strdup (base[i].text));
      g_array_append_val (types, base[i].type);
      g_array_append_val (scores, base[i].score);
    }
  for (int b = 0; b < 256; b++) /* 15 + b */
    {
      g_ptr_array_add (t, g_strdup_printf ("<0x%02X>", b));
      gint32 ty = 6;
      float sc = 0;
      g_array_append_val (types, ty);
      g_array_append_val (scores, sc);
    }
  g_autoptr (LpMeta) meta = lp_meta_new ();
  lp_meta_set_array (meta, "tokenizer.ggml.tokens", LP_VALUE_STRING, t->len, t->pdata);
  lp_meta_set_array (meta, "tokenizer.ggml.scores", LP_VALUE_F32, scores->len, scores->data);
  lp_meta_set_array (meta, "tokenizer.ggml.token_type", LP_VALUE_I32, types->len, types->data);
  lp_meta_set_string (meta, "tokenizer.ggml.model", "llama");
  lp_meta_set_u32 (meta, "tokenizer.ggml.bos_token_id", 1);
  lp_meta_set_u32 (meta, "tokenizer.ggml.eos_token_id", 2);
  lp_meta_set_u32 (meta, "tokenizer.ggml.unknown_token_id", 0);
  g_ptr_array_unref (t);
  g_array_unref (types);
  g_array_unref (scores);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_tokenizer_n_vocab (tok), ==, 15 + 256);
  g_assert_cmpint (lp_tokenizer_bos (tok), ==, 1);
  g_assert_cmpstr (lp_tokenizer_token_text (tok, 3), ==, SPACE_MARK "a");

  /* "aaa b" -> ▁ a a a ▁ b: "aa" (-0.5) merges before "▁a" (-1), leftmost
   * first: ▁ [aa] a ▁ b; then nothing else pairs into a token. "é" is not
   * in the vocabulary: bytes C3 A9. */
  const char *text = "aaa b\xc3\xa9";
  g_autoptr (GArray) ids = lp_tokenizer_encode (tok, text, -1, TRUE, &error);
  g_assert_no_error (error);
  const gint32 want[] = { 1, 5, 4, 6, 5, 7, 15 + 0xc3, 15 + 0xa9 };
  g_assert_cmpuint (ids->len, ==, G_N_ELEMENTS (want));
  for (gsize i = 0; i < G_N_ELEMENTS (want); i++)
    g_assert_cmpint (g_array_index (ids, gint32, i), ==, want[i]);
  gsize n;
  g_autofree char *back = lp_tokenizer_decode (tok, (gint32 *) ids->data, ids->len, &n);
  g_assert_cmpstr (back, ==, text);
  /* "ab": ▁a wins over nothing else -> ▁a b. */
  g_autoptr (GArray) ab = lp_tokenizer_encode (tok, "ab", -1, FALSE, &error);
  g_assert_cmpuint (ab->len, ==, 2);
  g_assert_cmpint (g_array_index (ab, gint32, 0), ==, 3);
  /* Text spelling a byte token stays characters. */
  g_autoptr (GArray) lit = lp_tokenizer_encode (tok, "<0x41>", -1, FALSE, &error);
  g_assert_cmpint (g_array_index (lit, gint32, 1), ==, 9);
  g_autofree char *lit_back = lp_tokenizer_decode (tok, (gint32 *) lit->data, lit->len, NULL);
  g_assert_cmpstr (lit_back, ==, "<0x41>");
  /* Empty text: nothing, not even the dummy prefix. */
  g_autoptr (GArray) empty = lp_tokenizer_encode (tok, "", 0, FALSE, &error);
  g_assert_cmpuint (empty->len, ==, 0);
}

/* GPT-2's byte alphabet, by its definition: printable Latin-1 stands for
 * itself, the other bytes are U+0100.. in order. */
static void
byte_char (guint8 b, char out[8])
{
  gunichar u = b;
  gboolean printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  if (!printable)
    {
      u = 256;
      for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae))
          u++;
    }
  out[g_unichar_to_utf8 (u, out)] = '\0';
}

/* Tokens 0..255: the bytes; then the merges' results; then <|end|>. */
static LpMeta *
small_bpe_meta (const char *pre)
{
  GPtrArray *t = g_ptr_array_new_with_free_func (g_free);
  for (int b = 0; b < 256; b++)
    {
      char c[8];
      byte_char (b, c);
      g_ptr_array_add (t, g_strdup (c));
    }
  static const char *const merges[] = {
    "H e", "l l", "He ll", "Hell o",                          /* 256..259 */
    "\xc4\xa0 w", "o r", "\xc4\xa0w or", "l d", "\xc4\xa0wor ld", /* 260..264 */
    "\xc3\x83 \xc2\xa9",                                       /* 265: é = C3 A9 */
    "3 4",                                                     /* 266 */
    "h \xc3\x83\xc2\xa9",  /* 267: only if "é" is a letter to the pre-tokenizer */
  };
  for (gsize i = 0; i < G_N_ELEMENTS (merges); i++)
    {
      g_autofree char *joined = g_strdup (merges[i]);
      char *sp = strchr (joined + 1, ' ');
      memmove (sp, sp + 1, strlen (sp));
      g_ptr_array_add (t, g_steal_pointer (&joined));
    }
  g_ptr_array_add (t, g_strdup ("<|end|>")); /* 268 */
  g_autofree gint32 *types = g_new (gint32, t->len);
  for (guint i = 0; i < t->len; i++)
    types[i] = i == 268 ? 3 : 1;
  LpMeta *meta = lp_meta_new ();
  lp_meta_set_string (meta, "tokenizer.ggml.model", "gpt2");
  lp_meta_set_string (meta, "tokenizer.ggml.pre", pre);
  lp_meta_set_array (meta, "tokenizer.ggml.tokens", LP_VALUE_STRING, t->len, t->pdata);
  lp_meta_set_array (meta, "tokenizer.ggml.token_type", LP_VALUE_I32, t->len, types);
  lp_meta_set_array (meta, "tokenizer.ggml.merges", LP_VALUE_STRING, G_N_ELEMENTS (merges), merges);
  lp_meta_set_u32 (meta, "tokenizer.ggml.eos_token_id", 268);
  g_ptr_array_unref (t);
  return meta;
}

static void
assert_encodes (const LpTokenizer *tok, const char *text, const gint32 *want, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ids = lp_tokenizer_encode (tok, text, -1, FALSE, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ids->len, ==, n);
  for (gsize i = 0; i < n; i++)
    g_assert_cmpint (g_array_index (ids, gint32, i), ==, want[i]);
  gsize len;
  g_autofree char *back = lp_tokenizer_decode (tok, (gint32 *) ids->data, ids->len, &len);
  /* The control token decodes to nothing. */
  g_autoptr (GString) expect = g_string_new (text);
  g_string_replace (expect, "<|end|>", "", 0);
  g_assert_cmpstr (back, ==, expect->str);
}

static void
test_bpe_small (void)
{
  char c[8];
  byte_char (' ', c);
  g_assert_cmpstr (c, ==, "\xc4\xa0"); /* Ġ */
  byte_char ('\n', c);
  g_assert_cmpstr (c, ==, "\xc4\x8a"); /* Ċ */

  g_autoptr (LpMeta) meta = small_bpe_meta ("gpt2");
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);
  /* "Hello" -> He, ll, Hell, Hello; " world" -> Ġw, or, Ġwor, ld, Ġworld;
   * <|end|> verbatim; " héllo" (one word: é is a letter) -> Ġ h Ã © l l o
   * -> ll (rank 1), Ã© (rank 9), hÃ© (rank 11). */
  const gint32 hello[] = { 259, 264, 268, ' ', 267, 257, 'o' };
  assert_encodes (tok, "Hello world<|end|> h\xc3\xa9llo", hello, G_N_ELEMENTS (hello));
  /* Equal ranks: the leftmost pair merges. */
  const gint32 lll[] = { 257, 'l' };
  assert_encodes (tok, "lll", lll, G_N_ELEMENTS (lll));
  /* GPT-2's regex keeps digits together: "3 4" merges inside "12345". */
  const gint32 digits_gpt2[] = { '1', '2', 266, '5' };
  assert_encodes (tok, "12345", digits_gpt2, G_N_ELEMENTS (digits_gpt2));
  /* Newlines and a tab: bytes without merges. */
  const gint32 ws[] = { 'a', '\n', '\t', 'b' };
  assert_encodes (tok, "a\n\tb", ws, G_N_ELEMENTS (ws));

  /* llama3's splits digits in threes: "123" "45", so 3 and 4 never meet. */
  g_autoptr (LpMeta) m3 = small_bpe_meta ("llama-bpe");
  g_autoptr (LpTokenizer) t3 = lp_tokenizer_new_from_meta (m3, &error);
  g_assert_no_error (error);
  const gint32 digits_llama3[] = { '1', '2', '3', '4', '5' };
  assert_encodes (t3, "12345", digits_llama3, G_N_ELEMENTS (digits_llama3));
  g_autoptr (LpMeta) mq = small_bpe_meta ("qwen2");
  g_autoptr (LpTokenizer) tq = lp_tokenizer_new_from_meta (mq, &error);
  g_assert_no_error (error);
  assert_encodes (tq, "12345", digits_llama3, G_N_ELEMENTS (digits_llama3));

  /* Unknown pre-tokenizer: say which are known. */
  g_autoptr (LpMeta) bad = small_bpe_meta ("no-such-pre");
  g_assert_null (lp_tokenizer_new_from_meta (bad, &error));
  lp_test_assert_error_contains (error, "tokenizer.ggml.pre", "\"no-such-pre\"", "gpt2", "llama-bpe", "qwen2", "smollm",
                                 "falcon", "deepseek-coder", "tekken", NULL);
  g_clear_error (&error);
  /* A merge whose parts are not tokens. */
  g_autoptr (LpMeta) badm = small_bpe_meta ("gpt2");
  const char *merges[] = { "H e", "Q Z Z" };
  lp_meta_set_array (badm, "tokenizer.ggml.merges", LP_VALUE_STRING, 2, merges);
  g_assert_null (lp_tokenizer_new_from_meta (badm, &error));
  lp_test_assert_error_contains (error, "tokenizer.ggml.merges", "element 1", "Q Z Z", NULL);
}

static void
assert_same_encoding (const LpMeta *a, const LpMeta *b, const char *text, gsize len)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTokenizer) ta = lp_tokenizer_new_from_meta (a, &error);
  g_assert_no_error (error);
  g_autoptr (LpTokenizer) tb = lp_tokenizer_new_from_meta (b, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) ia = lp_tokenizer_encode (ta, text, len, TRUE, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) ib = lp_tokenizer_encode (tb, text, len, TRUE, &error);
  g_assert_no_error (error);
  assert_ids_equal (ib, ia);
}

static const char sample[] =
  "Once upon a time, there was a little girl named Lily.  She loved to play outside\n"
  "in the sunshine. \xe2\x80\x9cLook!\xe2\x80\x9d she said. Caf\xc3\xa9 \xe2\x82\xac 42 \xf0\x9f\x98\x80 end\n";

static void
test_roundtrip_llama2c (void)
{
  g_autoptr (LpMeta) meta = read_tok512_bin ();
  if (meta == NULL)
    return;
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "rt-tokenizer.bin", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_tokenizer_write_llama2c (meta, path, &error));
  g_assert_no_error (error);
  /* Byte for byte the file llama2.c's exporter wrote. */
  g_autofree char *orig_path = lp_test_shared_path ("models/stories260K/tok512.bin");
  g_autofree char *a = NULL, *b = NULL;
  gsize na, nb;
  g_assert_true (g_file_get_contents (orig_path, &a, &na, NULL));
  g_assert_true (g_file_get_contents (path, &b, &nb, NULL));
  g_assert_cmpuint (na, ==, nb);
  g_assert_true (memcmp (a, b, na) == 0);
  g_autoptr (LpMeta) back = lp_meta_new ();
  g_assert_true (lp_tokenizer_read_llama2c (path, 0, back, &error)); /* 0: all tokens in the file */
  g_assert_no_error (error);
  g_assert_cmpuint (lp_meta_n_keys (back), ==, lp_meta_n_keys (meta));
  for (guint k = 0; k < lp_meta_n_keys (meta); k++)
    g_assert_true (lp_value_equal (lp_meta_get (meta, lp_meta_key (meta, k)), lp_meta_get (back, lp_meta_key (meta, k))));
  assert_same_encoding (meta, back, sample, -1);

  /* A gpt2 vocabulary, or special ids tokenizer.bin cannot express, are refused. */
  g_autoptr (LpMeta) moved = lp_meta_copy (meta);
  lp_meta_set_u32 (moved, "tokenizer.ggml.bos_token_id", 5);
  g_assert_false (lp_tokenizer_write_llama2c (moved, path, &error));
  lp_test_assert_error_contains (error, "tokenizer.ggml.bos_token_id", "found", NULL);
  g_clear_error (&error);
  g_autoptr (LpMeta) gpt2 = small_bpe_meta ("gpt2");
  g_assert_false (lp_tokenizer_write_llama2c (gpt2, path, &error));
  lp_test_assert_error_contains (error, "\"gpt2\"", NULL);
}

static void
test_roundtrip_hf_llama (void)
{
  g_autoptr (LpMeta) meta = read_tok512_bin ();
  if (meta == NULL)
    return;
  lp_meta_set_string (meta, "general.architecture", "llama");
  lp_meta_set_u32 (meta, "llama.context_length", 512);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "hf-llama", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_tokenizer_write_hf (meta, dir, &error));
  g_assert_no_error (error);
  static const char *const files[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model" };
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *p = g_build_filename (dir, files[i], NULL);
      g_assert_true (g_file_test (p, G_FILE_TEST_IS_REGULAR));
    }
  g_autofree char *cfg_path = g_build_filename (dir, "tokenizer_config.json", NULL);
  g_autofree char *cfg = NULL;
  g_assert_true (g_file_get_contents (cfg_path, &cfg, NULL, NULL));
  g_assert_nonnull (strstr (cfg, "\"bos_token\" : \"<s>\""));
  g_assert_nonnull (strstr (cfg, "\"model_max_length\" : 512"));
  g_assert_nonnull (strstr (cfg, "\"tokenizer_class\" : \"LlamaTokenizer\""));

  /* tokenizer.json: same tokens, types and special ids; scores from merge
   * ranks; the same encodings. */
  g_autoptr (LpMeta) back = lp_meta_new ();
  g_autofree char *json = g_build_filename (dir, "tokenizer.json", NULL);
  g_assert_true (lp_tokenizer_read_hf (json, back, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (lp_meta_get_string (back, "tokenizer.ggml.model"), ==, "llama");
  static const char *const same[] = { "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.unknown_token_id",
                                      "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id" };
  for (gsize k = 0; k < G_N_ELEMENTS (same); k++)
    g_assert_true (lp_value_equal (lp_meta_get (meta, same[k]), lp_meta_get (back, same[k])));
  assert_same_encoding (meta, back, sample, -1);
  g_autofree char *text = NULL;
  gsize len;
  g_autoptr (GArray) ids = NULL;
  if (load_reference (&text, &len, &ids))
    assert_same_encoding (meta, back, text, MIN (len, 200000));

  /* tokenizer.model keeps the scores exactly. */
  g_autoptr (LpMeta) spm = lp_meta_new ();
  g_autofree char *model = g_build_filename (dir, "tokenizer.model", NULL);
  g_assert_true (lp_tokenizer_read_spm (model, spm, &error));
  g_assert_no_error (error);
  static const char *const exact[] = { "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                                       "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
                                       "tokenizer.ggml.eos_token_id" };
  for (gsize k = 0; k < G_N_ELEMENTS (exact); k++)
    g_assert_true (lp_value_equal (lp_meta_get (meta, exact[k]), lp_meta_get (spm, exact[k])));
  /* Key for key what tokenizer.bin gave: a GGUF -> HF -> GGUF trip is lossless. */
  for (guint k = 0; k < lp_meta_n_keys (spm); k++)
    {
      const char *key = lp_meta_key (spm, k);
      g_assert_true (lp_value_equal (lp_meta_get (meta, key), lp_meta_get (spm, key)));
    }
  assert_same_encoding (meta, spm, sample, -1);
}

static void
test_roundtrip_hf_bpe (void)
{
  g_autoptr (GError) error = NULL;
  static const char *const pres[] = { "gpt-2", "llama-bpe", "qwen2" }; /* the names llama.cpp writes */
  for (gsize p = 0; p < G_N_ELEMENTS (pres); p++)
    {
      g_autoptr (LpMeta) meta = small_bpe_meta (pres[p]);
      g_autofree char *dir = g_strdup_printf ("%s/hf-bpe-%s", lp_test_tmpdir (), pres[p]);
      g_assert_true (lp_tokenizer_write_hf (meta, dir, &error));
      g_assert_no_error (error);
      g_autofree char *model = g_build_filename (dir, "tokenizer.model", NULL);
      g_assert_false (g_file_test (model, G_FILE_TEST_EXISTS));
      g_autoptr (LpMeta) back = lp_meta_new ();
      g_assert_true (lp_tokenizer_read_hf (dir, back, &error));
      g_assert_no_error (error);
      static const char *const same[] = { "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                                          "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id" };
      for (gsize k = 0; k < G_N_ELEMENTS (same); k++)
        g_assert_true (lp_value_equal (lp_meta_get (meta, same[k]), lp_meta_get (back, same[k])));
      assert_same_encoding (meta, back, "Hello world<|end|> h\xc3\xa9llo 12345\n", -1);
    }
}

static void
test_bad_input (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpMeta) meta = small_bpe_meta ("gpt2");
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);

  /* Invalid UTF-8 in the text. */
  g_assert_null (lp_tokenizer_encode (tok, "ab\xff" "cd", -1, FALSE, &error));
  lp_test_assert_error_contains (error, "byte offset 2", "UTF-8", "0xff", NULL);
  g_clear_error (&error);

  /* Truncated tokenizer.bin: token 0 says 5 bytes, 2 follow. */
  guint8 trunc[4 + 4 + 4 + 2] = { 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 'a', 'b' };
  g_autofree char *p1 = lp_test_write_file ("trunc.bin", trunc, sizeof trunc);
  g_autoptr (LpMeta) m = lp_meta_new ();
  g_assert_false (lp_tokenizer_read_llama2c (p1, 3, m, &error));
  lp_test_assert_error_contains (error, p1, "offset 12", "5 bytes of token 0", "found end of file", "size 14", NULL);
  g_clear_error (&error);
  g_assert_cmpuint (lp_meta_n_keys (m), ==, 0); /* nothing half-filled */

  /* n_vocab mismatch, both ways. */
  g_autofree char *tok512 = lp_test_shared_path ("models/stories260K/tok512.bin");
  if (tok512 != NULL)
    {
      g_assert_false (lp_tokenizer_read_llama2c (tok512, 500, m, &error));
      lp_test_assert_error_contains (error, "tok512.bin", "expected end of file after 500 tokens", "more bytes", NULL);
      g_clear_error (&error);
      g_assert_false (lp_tokenizer_read_llama2c (tok512, 513, m, &error));
      lp_test_assert_error_contains (error, "offset 6227", "token 512", "end of file", NULL);
      g_clear_error (&error);
    }

  /* tokenizer.json that is not JSON: line and column. */
  const char *badjson = "{\n  \"model\": {\n    \"type\": \"BPE\",\n    \"vocab\": {\"a\": 0 \"b\": 1}\n  }\n}\n";
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "badjson", NULL);
  g_mkdir (dir, 0755);
  g_autofree char *jpath = g_build_filename (dir, "tokenizer.json", NULL);
  g_assert_true (g_file_set_contents (jpath, badjson, -1, NULL));
  g_assert_false (lp_tokenizer_read_hf (jpath, m, &error));
  lp_test_assert_error_contains (error, "tokenizer.json: line 4 column", "expected valid JSON", NULL);
  g_clear_error (&error);
  /* Valid JSON, wrong shape. */
  g_assert_true (g_file_set_contents (jpath, "{\"model\": {\"type\": \"Unigram\"}}", -1, NULL));
  g_assert_false (lp_tokenizer_read_hf (jpath, m, &error));
  lp_test_assert_error_contains (error, "model.type", "\"BPE\"", "\"Unigram\"", NULL);
  g_clear_error (&error);
  g_assert_true (g_file_set_contents (jpath, "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}", -1, NULL));
  g_assert_false (lp_tokenizer_read_hf (jpath, m, &error));
  lp_test_assert_error_contains (error, "no token with id 1", NULL);
  g_clear_error (&error);

  /* Malformed protobuf: a piece whose length runs past the end; a group
   * wire type; a truncated varint. */
  const guint8 pb1[] = { 0x0a, 0x20, 0x0a, 0x01, 'a' };
  g_autofree char *q1 = lp_test_write_file ("bad1.model", pb1, sizeof pb1);
  g_assert_false (lp_tokenizer_read_spm (q1, m, &error));
  lp_test_assert_error_contains (error, q1, "offset 2", "expected 32 bytes", "found 3", NULL);
  g_clear_error (&error);
  const guint8 pb2[] = { 0x0a, 0x03, 0x0b, 0x01, 0x02 };
  g_autofree char *q2 = lp_test_write_file ("bad2.model", pb2, sizeof pb2);
  g_assert_false (lp_tokenizer_read_spm (q2, m, &error));
  lp_test_assert_error_contains (error, "offset 2", "pieces[0]", "wire type", "found 3", NULL);
  g_clear_error (&error);
  const guint8 pb3[] = { 0x0a, 0x03, 0x0a, 0x01, 'a', 0x10, 0x80 };
  g_autofree char *q3 = lp_test_write_file ("bad3.model", pb3, sizeof pb3);
  g_assert_false (lp_tokenizer_read_spm (q3, m, &error));
  lp_test_assert_error_contains (error, "offset 6", "varint", NULL);
  g_clear_error (&error);
  /* Well-formed, but a unigram model. */
  const guint8 pb4[] = { 0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x18, 0x01 };
  g_autofree char *q4 = lp_test_write_file ("unigram.model", pb4, sizeof pb4);
  g_assert_false (lp_tokenizer_read_spm (q4, m, &error));
  g_assert_true (g_error_matches (error, LP_ERROR, LP_ERROR_UNSUPPORTED));
  lp_test_assert_error_contains (error, "model_type", "expected 2 (BPE)", "found 1 (UNIGRAM)", NULL);
  g_clear_error (&error);
  g_assert_cmpuint (lp_meta_n_keys (m), ==, 0);

  /* Meta without a vocabulary, or of an unknown kind. */
  g_autoptr (LpMeta) empty = lp_meta_new ();
  lp_meta_set_string (empty, "tokenizer.ggml.model", "llama");
  g_assert_null (lp_tokenizer_new_from_meta (empty, &error));
  g_assert_true (g_error_matches (error, LP_ERROR, LP_ERROR_MISSING));
  lp_test_assert_error_contains (error, "tokenizer.ggml.tokens", NULL);
  g_clear_error (&error);
  g_autoptr (LpMeta) bert = lp_meta_copy (meta);
  lp_meta_set_string (bert, "tokenizer.ggml.model", "bert");
  g_assert_null (lp_tokenizer_new_from_meta (bert, &error));
  lp_test_assert_error_contains (error, "tokenizer.ggml.model", "\"llama\"", "\"gpt2\"", "found \"bert\"", NULL);
  g_clear_error (&error);
  /* Scores that do not match the tokens. */
  g_autoptr (LpMeta) short_scores = lp_meta_copy (meta);
  float two[2] = { 0, 0 };
  lp_meta_set_array (short_scores, "tokenizer.ggml.scores", LP_VALUE_F32, 2, two);
  g_assert_null (lp_tokenizer_new_from_meta (short_scores, &error));
  lp_test_assert_error_contains (error, "tokenizer.ggml.scores", "expected 269 elements", "found 2", NULL);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/tokenizer/llama2c/gguf-keys", test_llama2c_keys);
  g_test_add_func ("/tokenizer/spm/reference-tokenizer.bin", test_reference_bin);
  g_test_add_func ("/tokenizer/spm/reference-tokenizer.model", test_reference_spm_model);
  g_test_add_func ("/tokenizer/spm/reference-gguf", test_reference_gguf);
  g_test_add_func ("/tokenizer/spm/exact-without-normalization", test_exact_without_normalization);
  g_test_add_func ("/tokenizer/spm/small", test_spm_small);
  g_test_add_func ("/tokenizer/bpe/small", test_bpe_small);
  g_test_add_func ("/tokenizer/roundtrip/llama2c", test_roundtrip_llama2c);
  g_test_add_func ("/tokenizer/roundtrip/hf-llama", test_roundtrip_hf_llama);
  g_test_add_func ("/tokenizer/roundtrip/hf-bpe", test_roundtrip_hf_bpe);
  g_test_add_func ("/tokenizer/bad-input", test_bad_input);
  return g_test_run ();
}
