/* llmpress — tokenizers.
 *
 * A tokenizer is built from the model's tokenizer.ggml.* metadata (GGUF's
 * schema is our canonical one; the llama2.c, SentencePiece and Hugging Face
 * readers translate into it):
 *   tokenizer.ggml.model = "llama": SentencePiece-style BPE with scores and
 *       byte fallback (<0xXX> tokens), "▁" for spaces, a leading space added;
 *   tokenizer.ggml.model = "gpt2": byte-level BPE with merges and
 *       llama.cpp's pre-tokenizer regexes (tokenizer.ggml.pre names which:
 *       default, gpt-2/gpt2, llama-bpe/llama3, qwen2, smollm, starcoder,
 *       refact, command-r, falcon, deepseek-llm, deepseek-coder, olmo, dbrx,
 *       tekken, ... and llama.cpp's other aliases of these).
 * Also honoured: tokenizer.ggml.add_space_prefix (SPM's dummy prefix, default
 * true) and tokenizer.ggml.remove_extra_whitespaces (SentencePiece's
 * whitespace collapsing, default false as in llama.cpp), and
 * tokenizer.ggml.add_bos_token / add_eos_token (what encoding adds "as the
 * model says"; unsaid: BOS for "llama", for "gpt2" llama.cpp's default of
 * the pre-tokenizer, e.g. yes for llama3, no for smollm; EOS never).  User-defined tokens
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

/* Whether encoding "as the model says" adds BOS in front / EOS at the end
 * (FALSE when the vocabulary has no such token). */
gboolean lp_tokenizer_adds_bos (const LpTokenizer *tok);
gboolean lp_tokenizer_adds_eos (const LpTokenizer *tok);

typedef enum {
  LP_TOKENIZE_BOS = 1 << 0,   /* BOS in front (when the vocabulary has one) */
  LP_TOKENIZE_EOS = 1 << 1,   /* EOS at the end (likewise) */
  LP_TOKENIZE_MODEL = 1 << 2, /* and whatever the model adds (adds_bos/adds_eos) */
} LpTokenizeFlags;

/* Encode UTF-8 text (len < 0: NUL-terminated).  Returns a GArray of gint32.
 * Fails on invalid UTF-8 (naming the byte offset). */
GArray *lp_tokenizer_encode_full (const LpTokenizer *tok, const char *text, gssize len,
                                  LpTokenizeFlags flags, GError **error);
/* The same with add_bos: LP_TOKENIZE_BOS, else nothing. */
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
