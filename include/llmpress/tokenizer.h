/* llmpress — tokenizers.
 *
 * A tokenizer is built from the model's tokenizer.ggml.* metadata (GGUF's
 * schema is our canonical one; the llama2.c, SentencePiece and Hugging Face
 * readers translate into it):
 *   tokenizer.ggml.model = "llama": SentencePiece-style BPE with scores and
 *       byte fallback (<0xXX> tokens), "▁" for spaces, a leading space added;
 *   tokenizer.ggml.model = "gpt2": byte-level BPE with merges and a
 *       pre-tokenizer regex (tokenizer.ggml.pre names which: gpt-2/gpt2/default,
 *       llama-bpe/llama3/smaug-bpe, qwen2).
 * Also honoured: tokenizer.ggml.add_space_prefix (SPM's dummy prefix, default
 * true) and tokenizer.ggml.remove_extra_whitespaces (SentencePiece's
 * whitespace collapsing, default false as in llama.cpp).  User-defined tokens
 * (and, for "gpt2", control tokens) are matched verbatim in the text. */
#pragma once

#include <glib.h>
#include <llmpress/meta.h>

G_BEGIN_DECLS

typedef struct _LpTokenizer LpTokenizer;

LpTokenizer *lp_tokenizer_new_from_meta (const LpMeta *meta, GError **error);
void lp_tokenizer_free (LpTokenizer *tok);

gint32 lp_tokenizer_n_vocab (const LpTokenizer *tok);
gint32 lp_tokenizer_bos (const LpTokenizer *tok); /* -1 when none */
gint32 lp_tokenizer_eos (const LpTokenizer *tok); /* -1 when none */
/* The token's stored text (with "▁" / byte-level characters); borrowed. */
const char *lp_tokenizer_token_text (const LpTokenizer *tok, gint32 id);

/* Encode UTF-8 text (len < 0: NUL-terminated).  Returns a GArray of gint32.
 * Fails on invalid UTF-8 (naming the byte offset). */
GArray *lp_tokenizer_encode (const LpTokenizer *tok, const char *text, gssize len,
                             gboolean add_bos, GError **error);
/* Decode ids into text; *out_len gets its length (the text may hold NULs).
 * Control tokens (BOS/EOS) decode to nothing. */
char *lp_tokenizer_decode (const LpTokenizer *tok, const gint32 *ids, gsize n, gsize *out_len);
/* The text of one token as it appears in decoded output (for streaming
 * generation: `prev` is the token before it, for the leading-space rule). */
char *lp_tokenizer_decode_piece (const LpTokenizer *tok, gint32 prev, gint32 id, gsize *out_len);

/* Readers: fill tokenizer.ggml.* keys of `meta` from a tokenizer file. */
/* llama2.c tokenizer.bin (max_token_length, then per token: score f32, len i32, bytes).
 * n_vocab > 0: exactly that many tokens (the model's); <= 0: all in the file. */
gboolean lp_tokenizer_read_llama2c (const char *path, gint64 n_vocab, LpMeta *meta, GError **error);
/* SentencePiece tokenizer.model (protobuf ModelProto). */
gboolean lp_tokenizer_read_spm (const char *path, LpMeta *meta, GError **error);
/* Hugging Face tokenizer.json (+ tokenizer_config.json beside it when present);
 * `path` may also be the directory holding them. */
gboolean lp_tokenizer_read_hf (const char *path, LpMeta *meta, GError **error);

/* Writers, from tokenizer.ggml.* keys. */
gboolean lp_tokenizer_write_llama2c (const LpMeta *meta, const char *path, GError **error);
/* SentencePiece tokenizer.model ("llama" vocabularies). */
gboolean lp_tokenizer_write_spm (const LpMeta *meta, const char *path, GError **error);
/* tokenizer.json, tokenizer_config.json, special_tokens_map.json, and
 * tokenizer.model for "llama" vocabularies, into directory `dir` (created if
 * absent; each file is replaced atomically, other files are left alone). */
gboolean lp_tokenizer_write_hf (const LpMeta *meta, const char *dir, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpTokenizer, lp_tokenizer_free)

G_END_DECLS
