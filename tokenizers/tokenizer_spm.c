/* llmpress — SentencePiece-style BPE encoding (tokenizer.ggml.model "llama"),
 * as SentencePiece, llama2.c and llama.cpp do it: spaces become "▁", one "▁"
 * is prepended, the text is split into characters, and the adjacent pair
 * whose concatenation is the vocabulary token with the highest score is
 * merged (ties: the leftmost) until no pair is a token; characters that are
 * not tokens fall back to their bytes' <0xXX> tokens.
 * tokenizer.ggml.remove_extra_whitespaces (default false, as in llama.cpp)
 * applies SentencePiece's whitespace normalization first. */
#include "config.h"

#include <string.h>

#include "tokenizer-internal.h"

#define SPACE_MARK "\xe2\x96\x81" /* U+2581 "▁" */

/* Merges only ever produce ordinary pieces: a text that happens to spell
 * "<s>" or "<0x41>" must not become the control or byte token. */
static gboolean
spm_mergeable (const LpTokenizer *tok, gint32 id)
{
  if (id < 0)
    return FALSE;
  gint32 t = tok->types[id];
  return t == LP_TOKEN_NORMAL || t == LP_TOKEN_USER_DEFINED || t == LP_TOKEN_UNDEFINED;
}

static gboolean
spm_pair (const LpTokenizer *tok, const char *text, const LpTokSymbol *a, const LpTokSymbol *b,
          double *priority, gint32 *merged)
{
  gint32 id = lp_tok_lookup (tok, text + a->start, a->len + b->len);
  if (!spm_mergeable (tok, id))
    return FALSE;
  *priority = tok->scores[id];
  *merged = id;
  return TRUE;
}

void
lp_tok_spm_encode (const LpTokenizer *tok, const char *text, gsize len, gboolean prefix, GArray *out)
{
  GString *norm = g_string_sized_new (len + len / 4 + 4);
  if (tok->remove_extra_ws)
    {
      /* SentencePiece's NormalizerSpec.remove_extra_whitespaces: no leading
       * or trailing spaces, runs of spaces become one. */
      while (len > 0 && text[len - 1] == ' ')
        len--;
      while (len > 0 && text[0] == ' ')
        text++, len--;
    }
  if (prefix && len > 0)
    g_string_append (norm, SPACE_MARK);
  for (gsize i = 0; i < len; i++)
    {
      if (text[i] != ' ')
        g_string_append_c (norm, text[i]);
      else if (!tok->remove_extra_ws || text[i - 1] != ' ')
        g_string_append (norm, SPACE_MARK);
    }
  gsize n = 0;
  LpTokSymbol *syms = g_new (LpTokSymbol, norm->len);
  for (gsize off = 0; off < norm->len; n++)
    {
      gsize clen = g_utf8_next_char (norm->str + off) - (norm->str + off);
      clen = MIN (clen, norm->len - off);
      gint32 id = lp_tok_lookup (tok, norm->str + off, clen);
      syms[n] = (LpTokSymbol) { (gint32) n - 1, (gint32) n + 1, off, clen, spm_mergeable (tok, id) ? id : -1 };
      off += clen;
    }
  if (n > 0)
    syms[n - 1].next = -1;
  lp_tok_merge (tok, norm->str, syms, n, spm_pair);
  for (gint32 i = n > 0 ? 0 : -1; i >= 0; i = syms[i].next)
    {
      if (syms[i].id >= 0)
        {
          g_array_append_val (out, syms[i].id);
          continue;
        }
      /* Byte fallback; without byte tokens the character is one <unk>. */
      gboolean bytes = TRUE;
      for (gsize k = 0; k < syms[i].len; k++)
        bytes = bytes && tok->byte_token[(guint8) norm->str[syms[i].start + k]] >= 0;
      for (gsize k = 0; bytes && k < syms[i].len; k++)
        g_array_append_val (out, tok->byte_token[(guint8) norm->str[syms[i].start + k]]);
      if (!bytes && tok->unk >= 0)
        g_array_append_val (out, tok->unk);
    }
  g_free (syms);
  g_string_free (norm, TRUE);
}
