/* llmpress — a small deterministic Llama-architecture model, for demos and
 * tests on a machine with no model at hand.  Same options, same bytes, on
 * every machine (own PRNG, no libm-dependent rounding beyond IEEE). */
#pragma once

#include <glib.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef struct {
  LpArch arch;        /* llama (default), mistral or qwen2 */
  gint64 dim;         /* D, default 64 */
  gint64 ffn_dim;     /* F, default 172 */
  gint64 n_layers;    /* L, default 2 */
  gint64 n_heads;     /* H, default 8 */
  gint64 n_kv_heads;  /* Hkv, default 4 */
  gint64 n_vocab;     /* V, default 512 (>= 259: 3 specials + 256 byte tokens) */
  gint64 ctx_len;     /* default 512 */
  guint64 seed;       /* default 0 */
  gboolean untied;    /* separate output head */
} LpSynthOptions;

#define LP_SYNTH_OPTIONS_INIT { LP_ARCH_LLAMA, 64, 172, 2, 8, 4, 512, 512, 0, FALSE }

/* Weights ~ N(0, 0.02^2) (outputs scaled by 1/sqrt(2L) as GPT-2 does), norms 1,
 * and a SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens,
 * then printable pieces. */
LpModel *lp_model_synth (const LpSynthOptions *options, GError **error);

G_END_DECLS
