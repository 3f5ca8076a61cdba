/* llmpress — tokenizer internals shared by tokenizer*.c (not part of the SDK). */
#pragma once

#include "lp-internal.h"

/* GGUF's token types (tokenizer.ggml.token_type). */
enum {
  LP_TOKEN_UNDEFINED = 0,
  LP_TOKEN_NORMAL = 1,
  LP_TOKEN_UNKNOWN = 2,
  LP_TOKEN_CONTROL = 3,
  LP_TOKEN_USER_DEFINED = 4,
  LP_TOKEN_UNUSED = 5,
  LP_TOKEN_BYTE = 6,
};

typedef enum { LP_TOK_SPM, LP_TOK_BPE } LpTokKind;

/* A byte string that need not be NUL-terminated: hash keys that can be looked
 * up with a slice of the text being encoded, without copying it. */
typedef struct {
  const char *s;
  gsize n;
} LpSpan;

/* One merge of tokenizer.ggml.merges: its rank is its index. */
typedef struct {
  gint32 left, right, result;
} LpTokMerge;

struct _LpTokenizer {
  LpTokKind kind;
  gint32 n_vocab;
  char **tokens;        /* [V] owned */
  gsize *token_len;     /* [V] */
  float *scores;        /* [V] */
  gint32 *types;        /* [V] */
  GHashTable *by_text;  /* LpSpan* -> id + 1 */
  gint32 bos, eos, unk;
  gboolean add_space_prefix;
  gboolean remove_extra_ws;
  gint32 byte_token[256];       /* SPM: id of <0xXX>, -1 when absent */
  gint32 *specials;             /* ids matched verbatim before splitting, longest first */
  guint n_specials;
  /* Byte-level BPE. */
  GHashTable *merges;           /* (left << 32 | right) -> LpTokMerge* */
  LpTokMerge *merge_list;
  guint n_merges;
  GRegex **pre;                 /* [n_pre] split regexes, applied in sequence */
  guint n_pre;
  gboolean ignore_merges;       /* a word that is a token is that token */
  gboolean add_bos, add_eos;    /* what the model says encoding adds */
  char byte_char[256][4];       /* GPT-2's byte -> printable character (UTF-8, NUL-terminated) */
  GHashTable *char_byte;        /* gunichar -> byte + 1 */
};

/* The <0xXX> byte token text parsed (exactly 6 characters); -1 when not one. */
int lp_tok_parse_byte_token (const char *text);

gint32 lp_tok_lookup (const LpTokenizer *tok, const char *s, gsize n);

/* The shared merge engine: a linked list of symbols (spans of one text) and a
 * priority queue of candidate adjacent pairs, as llama.cpp's SPM tokenizer
 * does, so that encoding is O(n log n) in the text's length.  pair() says
 * whether a and b may merge, with what priority (higher first, ties: the
 * leftmost pair) and into which token id. */
typedef struct {
  gint32 prev, next;
  gsize start, len;
  gint32 id;  /* token id of the span, -1 when none */
} LpTokSymbol;

typedef gboolean (*LpTokPairFunc) (const LpTokenizer *tok, const char *text, const LpTokSymbol *a,
                                   const LpTokSymbol *b, double *priority, gint32 *merged);

void lp_tok_merge (const LpTokenizer *tok, const char *text, LpTokSymbol *syms, gsize n,
                   LpTokPairFunc pair);

/* Encoders of one piece of text (no special tokens inside), appending ids. */
void lp_tok_spm_encode (const LpTokenizer *tok, const char *text, gsize len, gboolean prefix,
                        GArray *out);
gboolean lp_tok_bpe_encode (const LpTokenizer *tok, const char *text, gsize len, GArray *out,
                            GError **error);
/* Byte-level BPE setup: byte alphabet, merges, pre-tokenizer. */
gboolean lp_tok_bpe_init (LpTokenizer *tok, const LpMeta *meta, GError **error);
/* A byte-level pre-tokenizer as llama.cpp has it: its split regexes
 * (NULL-terminated, applied in sequence) and flags. */
typedef struct {
  const char *name;
  const char *const *regexes;
  gboolean ignore_merges;
  gboolean add_bos;     /* llama.cpp's default for tokenizer.ggml.add_bos_token */
} LpTokPre;
/* tokenizer.ggml.pre name -> pre-tokenizer (NULL when unknown); a list of
 * n regexes -> the name of the pre-tokenizer that is that list (NULL when none). */
const LpTokPre *lp_tok_bpe_pre_find (const char *pre);
const char *lp_tok_bpe_pre_name (const char *const *regexes, guint n);
/* "a, b, ..." of every known name (free with g_free). */
char *lp_tok_bpe_pre_known (void);
/* GPT-2's byte -> unicode mapping. */
gunichar lp_tok_byte_to_unichar (guint8 b);

/* Special ids of tokenizer.ggml.*_token_id, -1 when absent or out of range. */
gint32 lp_tok_meta_id (const LpMeta *meta, const char *key, gint64 n_vocab);
/* Validate and borrow tokens/scores/types of a meta for the writers. */
typedef struct {
  const char *model;
  guint64 n;
  char **tokens;
  const float *scores;   /* NULL when absent */
  const gint32 *types;   /* NULL when absent */
} LpTokVocab;
gboolean lp_tok_vocab_from_meta (const LpMeta *meta, const char *path, LpTokVocab *v, GError **error);
gint32 lp_tok_vocab_type (const LpTokVocab *v, guint64 id);
/* tokenizer.ggml.tokens/scores (when given)/token_type, then .model. */
void lp_tok_meta_set_vocab (LpMeta *meta, const char *model, guint n, char **tokens, const float *scores,
                            const gint32 *types);
/* FALSE with an error naming `file` unless the vocabulary is "llama". */
gboolean lp_tok_vocab_require_spm (const LpTokVocab *v, const char *path, const char *file, GError **error);
/* The bytes of a llama2.c tokenizer.bin for the vocabulary in meta (path
 * names it in messages). */
GBytes *lp_tokenizer_llama2c_bytes (const LpMeta *meta, const char *path, GError **error);
/* Write a whole file atomically (LpAtomicFile): two buffers, one after the other. */
gboolean lp_tok_write_file (const char *path, const void *a, gsize na, const void *b, gsize nb, GError **error);
/* Set the token-id keys the way llama.cpp's converters write them (u32). */
void lp_tok_meta_set_id (LpMeta *meta, const char *key, gint64 id);
