/* llmpress — byte-level BPE (tokenizer.ggml.model "gpt2"): the text is split
 * into words by the pre-tokenizer regex tokenizer.ggml.pre names, each
 * word's bytes are written in GPT-2's printable byte alphabet, and adjacent
 * symbols are merged by tokenizer.ggml.merges rank, lowest first. */
#include "config.h"

#include <string.h>

#include "tokenizer-internal.h"

/* The split regexes of llama.cpp (src/llama-vocab.cpp, regex_exprs per
 * LLAMA_VOCAB_PRE_TYPE_*), written as it writes them.  A list is applied in
 * sequence: each regex splits every piece the previous one produced, on its
 * own (lookarounds and $ see the piece's ends), and text between matches
 * stays a piece of its own (unicode_regex_split). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3 \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *const re_default[] = {
  "[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL };
static const char *const re_gpt2[] = { RE_GPT2, NULL };
static const char *const re_llama3[] = { RE_LLAMA3, NULL };
static const char *const re_qwen2[] = { RE_QWEN2, NULL };
/* starcoder, refact, command-r, smollm, ...: digits one by one, then GPT-2's. */
static const char *const re_starcoder[] = { "\\p{N}", RE_GPT2, NULL };
static const char *const re_falcon[] = {
  "[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL };
static const char *const re_deepseek_llm[] = {
  "[\r\n]",
  "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
  "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
  "\\s+$",
  "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
  "\\p{N}+",
  NULL };
static const char *const re_deepseek_coder[] = {
  "[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}", NULL };
static const char *const re_tekken[] = {
  "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
  "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", NULL };
static const char *const re_bloom[] = { " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+", NULL };
static const char *const re_viking[] = { " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+", "\\p{N}", NULL };

/* tokenizer.ggml.pre names as llama.cpp reads them (llama_vocab::load), the
 * list each names, and its flags: ignore_merges (a word that is a token is
 * that token, unmerged) and add_bos (BOS by default, when the file does not
 * say tokenizer.ggml.add_bos_token).  "gpt2" is ours: the name our Hugging
 * Face reader gives ByteLevel's own regex. */
static const LpTokPre pre_tokenizers[] = {
  { "default", re_default, FALSE, FALSE },
  { "gpt-2", re_gpt2, FALSE, FALSE },
  { "gpt2", re_gpt2, FALSE, FALSE },
  { "phi-2", re_gpt2, FALSE, FALSE },
  { "mpt", re_gpt2, FALSE, FALSE },
  { "olmo", re_gpt2, FALSE, FALSE },
  { "jais", re_gpt2, FALSE, FALSE },
  { "jina-es", re_gpt2, FALSE, FALSE },
  { "jina-de", re_gpt2, FALSE, FALSE },
  { "jina-v2-es", re_gpt2, FALSE, FALSE },
  { "jina-v2-de", re_gpt2, FALSE, FALSE },
  { "gigachat", re_gpt2, FALSE, FALSE },
  { "exaone4", re_gpt2, FALSE, FALSE },
  { "trillion", re_gpt2, FALSE, FALSE },
  { "granite-docling", re_gpt2, FALSE, FALSE },
  { "llama-bpe", re_llama3, TRUE, TRUE },
  { "llama3", re_llama3, TRUE, TRUE },
  { "llama-v3", re_llama3, TRUE, TRUE },
  { "falcon3", re_llama3, TRUE, TRUE },
  { "falcon-h1", re_llama3, TRUE, TRUE },
  { "pixtral", re_llama3, TRUE, TRUE },
  { "dbrx", re_llama3, FALSE, FALSE },
  { "smaug-bpe", re_llama3, FALSE, FALSE },
  { "qwen2", re_qwen2, FALSE, FALSE },
  { "deepseek-r1-qwen", re_qwen2, FALSE, FALSE },
  { "megrez", re_qwen2, FALSE, FALSE },
  { "stablelm2", re_qwen2, FALSE, FALSE },
  { "hunyuan", re_qwen2, FALSE, FALSE },
  { "smollm", re_starcoder, FALSE, FALSE },
  { "starcoder", re_starcoder, FALSE, FALSE },
  { "refact", re_starcoder, FALSE, FALSE },
  { "command-r", re_starcoder, FALSE, FALSE },
  { "codeshell", re_starcoder, FALSE, FALSE },
  { "exaone", re_starcoder, FALSE, FALSE },
  { "minerva-7b", re_starcoder, FALSE, FALSE },
  { "falcon", re_falcon, FALSE, FALSE },
  { "deepseek-llm", re_deepseek_llm, FALSE, FALSE },
  { "deepseek-coder", re_deepseek_coder, FALSE, FALSE },
  { "tekken", re_tekken, TRUE, TRUE },
  { "bloom", re_bloom, FALSE, FALSE },
  { "poro-chat", re_bloom, FALSE, FALSE },
  { "gpt3-finnish", re_bloom, FALSE, FALSE },
  { "viking", re_viking, FALSE, FALSE },
};

const LpTokPre *
lp_tok_bpe_pre_find (const char *pre)
{
  for (gsize i = 0; i < G_N_ELEMENTS (pre_tokenizers); i++)
    if (strcmp (pre, pre_tokenizers[i].name) == 0)
      return &pre_tokenizers[i];
  return NULL;
}

/* The tokenizer.ggml.pre name of a list of split regexes (the first of its
 * aliases), or NULL. */
const char *
lp_tok_bpe_pre_name (const char *const *regexes, guint n)
{
  for (gsize i = 0; i < G_N_ELEMENTS (pre_tokenizers); i++)
    {
      const char *const *r = pre_tokenizers[i].regexes;
      guint k = 0;
      while (k < n && r[k] != NULL && strcmp (r[k], regexes[k]) == 0)
        k++;
      if (k == n && r[k] == NULL)
        return pre_tokenizers[i].name;
    }
  return NULL;
}

char *
lp_tok_bpe_pre_known (void)
{
  GString *known = g_string_new (NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (pre_tokenizers); i++)
    g_string_append_printf (known, "%s%s", i ? ", " : "", pre_tokenizers[i].name);
  return g_string_free (known, FALSE);
}

/* Unicode's White_Space, llama.cpp's \s (unicode_set_whitespace); PCRE2's
 * \s also takes U+180E. */
#define WHITE_SPACE "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

/* A llama.cpp regex as PCRE2 runs it the same way: \s and \S spelt out. */
static char *
pcre_pattern (const char *regex)
{
  GString *s = g_string_new (NULL);
  gboolean in_class = FALSE;
  for (const char *p = regex; *p; p++)
    {
      if (p[0] == '\\' && (p[1] == 's' || p[1] == 'S'))
        {
          if (in_class)
            g_string_append (s, WHITE_SPACE); /* [^\s...] only: no \S in a class */
          else
            g_string_append_printf (s, "[%s%s]", p[1] == 'S' ? "^" : "", WHITE_SPACE);
          p++;
          continue;
        }
      if (p[0] == '\\' && p[1])
        {
          g_string_append_len (s, p, 2);
          p++;
          continue;
        }
      if (*p == '[')
        in_class = TRUE;
      else if (*p == ']')
        in_class = FALSE;
      g_string_append_c (s, *p);
    }
  return g_string_free (s, FALSE);
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

  const char *name = lp_meta_get_string (meta, "tokenizer.ggml.pre");
  const LpTokPre *pre = lp_tok_bpe_pre_find (name ? name : "default");
  if (pre == NULL)
    {
      g_autofree char *known = lp_tok_bpe_pre_known ();
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "tokenizer: key tokenizer.ggml.pre: expected one of %s, found \"%s\"",
                    known, name);
      return FALSE;
    }
  while (pre->regexes[tok->n_pre] != NULL)
    tok->n_pre++;
  tok->pre = g_new0 (GRegex *, tok->n_pre);
  for (guint i = 0; i < tok->n_pre; i++)
    {
      g_autofree char *pattern = pcre_pattern (pre->regexes[i]);
      /* $ as ECMAScript has it: the piece's end only. */
      tok->pre[i] = g_regex_new (pattern, G_REGEX_OPTIMIZE | G_REGEX_DOLLAR_ENDONLY, 0, error);
      if (tok->pre[i] == NULL)
        return FALSE;
    }
  tok->ignore_merges = pre->ignore_merges;
  tok->add_bos = pre->add_bos;

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
  if (tok->ignore_merges)
    {
      gint32 whole = lp_tok_lookup (tok, mapped->str, mapped->len);
      if (whole >= 0)
        {
          g_array_append_val (out, whole);
          return TRUE;
        }
    }
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

/* One regex over each piece [start, end) of `in` (byte offsets into text),
 * appending the pieces it makes to `out`: its matches, and the text between
 * them. */
static void
split_pieces (const GRegex *re, const char *text, const GArray *in, GArray *out)
{
  for (guint k = 0; k < in->len; k += 2)
    {
      gsize base = g_array_index (in, gsize, k), len = g_array_index (in, gsize, k + 1) - base;
      g_autoptr (GMatchInfo) info = NULL;
      gsize done = 0;
      /* The piece alone is the subject: lookarounds stop at its ends. */
      g_regex_match_full (re, text + base, len, 0, 0, &info, NULL);
      while (g_match_info_matches (info))
        {
          gint start, end;
          g_match_info_fetch_pos (info, 0, &start, &end);
          gsize cut[4] = { base + done, base + start, base + start, base + end };
          if ((gsize) start > done)
            g_array_append_vals (out, cut, 2);
          if (end > start)
            g_array_append_vals (out, cut + 2, 2);
          done = end;
          g_match_info_next (info, NULL);
        }
      if (done < len)
        {
          gsize cut[2] = { base + done, base + len };
          g_array_append_vals (out, cut, 2);
        }
    }
}

gboolean
lp_tok_bpe_encode (const LpTokenizer *tok, const char *text, gsize len, GArray *out, GError **error)
{
  /* Pieces as (start, end) pairs: the whole text, then each regex's split. */
  g_autoptr (GArray) pieces = g_array_new (FALSE, FALSE, sizeof (gsize));
  g_autoptr (GArray) next = g_array_new (FALSE, FALSE, sizeof (gsize));
  gsize all[2] = { 0, len };
  g_array_append_vals (pieces, all, 2);
  for (guint i = 0; i < tok->n_pre; i++)
    {
      g_array_set_size (next, 0);
      split_pieces (tok->pre[i], text, pieces, next);
      GArray *t = pieces;
      pieces = next;
      next = t;
    }
  g_autoptr (GString) mapped = g_string_new (NULL);
  g_autoptr (GArray) syms = g_array_new (FALSE, FALSE, sizeof (LpTokSymbol));
  for (guint k = 0; k < pieces->len; k += 2)
    {
      gsize a = g_array_index (pieces, gsize, k), b = g_array_index (pieces, gsize, k + 1);
      if (!encode_word (tok, text + a, b - a, mapped, syms, out, error))
        return FALSE;
    }
  return TRUE;
}
