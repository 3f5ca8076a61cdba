/* llmpress — byte-level BPE (tokenizer.ggml.model "gpt2"): the text is split
 * into words by the pre-tokenizer regex tokenizer.ggml.pre names, each
 * word's bytes are written in GPT-2's printable byte alphabet, and adjacent
 * symbols are merged by tokenizer.ggml.merges rank, lowest first. */
#include "config.h"

#include <string.h>

#include "tokenizer-internal.h"

#define GPT2_REGEX \
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_REGEX \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_REGEX \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* llama.cpp's names for them (tokenizer.ggml.pre); the first of each regex
 * is the one its converter writes. */
static const struct {
  const char *name;
  const char *regex;
} pre_tokenizers[] = {
  { "gpt-2", GPT2_REGEX },
  { "gpt2", GPT2_REGEX },
  { "default", GPT2_REGEX },
  { "llama-bpe", LLAMA3_REGEX },
  { "llama3", LLAMA3_REGEX },
  { "smaug-bpe", LLAMA3_REGEX },
  { "qwen2", QWEN2_REGEX },
};

const char *
lp_tok_bpe_pre_regex (const char *pre)
{
  for (gsize i = 0; i < G_N_ELEMENTS (pre_tokenizers); i++)
    if (strcmp (pre, pre_tokenizers[i].name) == 0)
      return pre_tokenizers[i].regex;
  return NULL;
}

/* The tokenizer.ggml.pre name of a regex (the first of its aliases), or NULL. */
const char *
lp_tok_bpe_pre_name (const char *regex)
{
  for (gsize i = 0; i < G_N_ELEMENTS (pre_tokenizers); i++)
    if (strcmp (regex, pre_tokenizers[i].regex) == 0)
      return pre_tokenizers[i].name;
  return NULL;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
 * the others for U+0100 onwards in byte order. */
gunichar
lp_tok_byte_to_unichar (guint8 b)
{
  if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae))
    return b;
  gunichar n = 0;
  for (int x = 0; x < b; x++)
    if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae)))
      n++;
  return 256 + n;
}

static gboolean
bpe_pair (const LpTokenizer *tok, const char *text, const LpTokSymbol *a, const LpTokSymbol *b,
          double *priority, gint32 *merged)
{
  (void) text;
  if (a->id < 0 || b->id < 0)
    return FALSE;
  guint64 key = (guint64) a->id << 32 | (guint32) b->id;
  const LpTokMerge *m = g_hash_table_lookup (tok->merges, &key);
  if (m == NULL)
    return FALSE;
  *priority = -(double) (m - tok->merge_list);
  *merged = m->result;
  return TRUE;
}

static guint
u64_hash (gconstpointer p)
{
  guint64 k = *(const guint64 *) p;
  return (guint) (k ^ (k >> 32)) * 2654435761u;
}

static gboolean
u64_equal (gconstpointer a, gconstpointer b)
{
  return *(const guint64 *) a == *(const guint64 *) b;
}

gboolean
lp_tok_bpe_init (LpTokenizer *tok, const LpMeta *meta, GError **error)
{
  for (int b = 0; b < 256; b++)
    g_unichar_to_utf8 (lp_tok_byte_to_unichar (b), tok->byte_char[b]);
  tok->char_byte = g_hash_table_new (g_direct_hash, g_direct_equal);
  for (int b = 0; b < 256; b++)
    g_hash_table_insert (tok->char_byte, GUINT_TO_POINTER (lp_tok_byte_to_unichar (b)), GUINT_TO_POINTER (b + 1));

  const char *pre = lp_meta_get_string (meta, "tokenizer.ggml.pre");
  if (pre == NULL)
    pre = "default";
  const char *regex = lp_tok_bpe_pre_regex (pre);
  if (regex == NULL)
    {
      g_autoptr (GString) known = g_string_new (NULL);
      for (gsize i = 0; i < G_N_ELEMENTS (pre_tokenizers); i++)
        g_string_append_printf (known, "%s%s", i ? ", " : "", pre_tokenizers[i].name);
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "tokenizer: key tokenizer.ggml.pre: expected one of %s, found \"%s\"",
                    known->str, pre);
      return FALSE;
    }
  tok->pre = g_regex_new (regex, G_REGEX_OPTIMIZE, 0, error);
  if (tok->pre == NULL)
    return FALSE;

  GError *e = NULL;
  const LpValue *merges = lp_meta_get_array (meta, "tokenizer.ggml.merges", LP_VALUE_STRING, &e);
  if (merges == NULL)
    {
      if (e != NULL)
        g_propagate_prefixed_error (error, e, "tokenizer: ");
      else
        lp_set_error (error, LP_ERROR_MISSING, "tokenizer: key tokenizer.ggml.merges: expected the merges of a \"gpt2\" vocabulary, found none");
      return FALSE;
    }
  char **m = merges->array;
  tok->merges = g_hash_table_new_full (u64_hash, u64_equal, g_free, NULL);
  tok->merge_list = g_new (LpTokMerge, merges->n_elems);
  tok->n_merges = merges->n_elems;
  for (guint64 i = 0; i < merges->n_elems; i++)
    {
      /* From the second byte: a part may itself be a space. */
      const char *sp = m[i][0] ? strchr (m[i] + 1, ' ') : NULL;
      LpTokMerge *mg = &tok->merge_list[i];
      if (sp != NULL)
        {
          gsize la = sp - m[i];
          g_autofree char *both = g_strdup_printf ("%.*s%s", (int) la, m[i], sp + 1);
          mg->left = lp_tok_lookup (tok, m[i], la);
          mg->right = lp_tok_lookup (tok, sp + 1, strlen (sp + 1));
          mg->result = lp_tok_lookup (tok, both, strlen (both));
        }
      if (sp == NULL || mg->left < 0 || mg->right < 0 || mg->result < 0)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "tokenizer: key tokenizer.ggml.merges: element %" G_GUINT64_FORMAT ": expected \"a b\" with a, b and ab in the vocabulary, found \"%s\"",
                        i, m[i]);
          return FALSE;
        }
      guint64 *key = g_new (guint64, 1);
      *key = (guint64) mg->left << 32 | (guint32) mg->right;
      if (!g_hash_table_contains (tok->merges, key))
        g_hash_table_insert (tok->merges, key, mg);
      else
        g_free (key);
    }
  return TRUE;
}

static gboolean
encode_word (const LpTokenizer *tok, const char *text, gsize len, GString *mapped, GArray *syms,
             GArray *out, GError **error)
{
  g_string_truncate (mapped, 0);
  g_array_set_size (syms, len);
  LpTokSymbol *s = (LpTokSymbol *) syms->data;
  for (gsize i = 0; i < len; i++)
    {
      const char *c = tok->byte_char[(guint8) text[i]];
      gsize n = strlen (c);
      s[i] = (LpTokSymbol) { (gint32) i - 1, (gint32) i + 1, mapped->len, n, -1 };
      g_string_append_len (mapped, c, n);
    }
  s[len - 1].next = -1;
  for (gsize i = 0; i < len; i++)
    s[i].id = lp_tok_lookup (tok, mapped->str + s[i].start, s[i].len);
  lp_tok_merge (tok, mapped->str, s, len, bpe_pair);
  for (gint32 i = 0; i >= 0; i = s[i].next)
    {
      if (s[i].id >= 0)
        {
          g_array_append_val (out, s[i].id);
          continue;
        }
      /* Only an unmerged byte can lack a token. */
      if (tok->unk < 0)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "text to encode: byte 0x%02x (\"%.*s\" in the byte alphabet) is not in the vocabulary, which has no unknown token",
                        (guint8) text[i], (int) s[i].len, mapped->str + s[i].start);
          return FALSE;
        }
      g_array_append_val (out, tok->unk);
    }
  return TRUE;
}

gboolean
lp_tok_bpe_encode (const LpTokenizer *tok, const char *text, gsize len, GArray *out, GError **error)
{
  g_autoptr (GMatchInfo) info = NULL;
  g_autoptr (GString) mapped = g_string_new (NULL);
  g_autoptr (GArray) syms = g_array_new (FALSE, FALSE, sizeof (LpTokSymbol));
  gsize done = 0;
  g_regex_match_full (tok->pre, text, len, 0, 0, &info, NULL);
  while (g_match_info_matches (info))
    {
      gint start, end;
      g_match_info_fetch_pos (info, 0, &start, &end);
      /* Text no alternative matched is a word of its own. */
      if ((gsize) start > done && !encode_word (tok, text + done, start - done, mapped, syms, out, error))
        return FALSE;
      if (end > start && !encode_word (tok, text + start, end - start, mapped, syms, out, error))
        return FALSE;
      done = end;
      g_match_info_next (info, NULL);
    }
  if (done < len && !encode_word (tok, text + done, len - done, mapped, syms, out, error))
    return FALSE;
  return TRUE;
}
