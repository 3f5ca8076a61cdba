/* llmpress — the Llama-family forward pass (llama, mistral, qwen2):
 * RMSNorm, RoPE (theta, linear / llama3 scaling), GQA causal attention,
 * SwiGLU, tied or separate head, q/k/v biases — batched over a whole
 * sequence, every heavy op through the backend.
 *
 * Weights that are not f32 (f16, bf16, quantized) are materialized one layer
 * at a time; the model is never densified whole.  Shapes: T tokens, D model
 * dim, F ffn dim, V vocab. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef struct _LpForward LpForward;

/* Which activation a hook sees: the input of a group of linear layers. */
typedef enum {
  LP_LINEAR_IN_QKV,      /* attn_norm output: input of attn_q, attn_k, attn_v  [T, D] */
  LP_LINEAR_IN_ATTN_OUT, /* attention output: input of attn_output             [T, H*hd] */
  LP_LINEAR_IN_FFN,      /* ffn_norm output: input of ffn_gate, ffn_up          [T, D] */
  LP_LINEAR_IN_DOWN,     /* silu(gate)*up: input of ffn_down                   [T, F] */
  LP_LINEAR_IN_COUNT,
} LpLinearInput;

/* NULL-terminated list of the weight suffixes ("attn_q.weight", ...) fed by `which`. */
const char *const *lp_linear_input_consumers (LpLinearInput which);

typedef struct {
  /* Called with each linear group's input X[T, n] (row-major), in order. */
  void (*linear_input) (gpointer user_data, int layer, LpLinearInput which, const float *X, int T, int n);
  gpointer user_data;
} LpForwardHooks;

/* Keys and values of earlier positions, for incremental decoding. */
typedef struct _LpKVCache LpKVCache;
LpKVCache *lp_kv_cache_new (const LpModelConfig *config, int max_tokens);
int lp_kv_cache_length (const LpKVCache *cache);
void lp_kv_cache_free (LpKVCache *cache);

LpForward *lp_forward_new (LpModel *model, LpBackend *backend, GError **error);
void lp_forward_free (LpForward *fw);
LpModel *lp_forward_model (LpForward *fw);

/* logits[T, V] for tokens[T] at positions 0..T-1 (or after the cache's
 * positions, which then grows by T; cache may be NULL). */
gboolean lp_forward_logits (LpForward *fw, const gint32 *tokens, int T, LpKVCache *cache, float *logits,
                            GError **error);

/* The same, a stage at a time (for calibration, which runs block by block).
 * x is the residual stream [T, D]. */
gboolean lp_forward_embed (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error);
gboolean lp_forward_block (LpForward *fw, int layer, float *x, int T, LpKVCache *cache,
                           const LpForwardHooks *hooks, GError **error);
gboolean lp_forward_head (LpForward *fw, const float *x, int T, float *logits, GError **error);

/* Per-pair RoPE angular frequencies inv_freq[hd/2] for the config (theta,
 * linear or llama3 scaling, and a rope_freqs.weight tensor when the model
 * carries one). */
float *lp_rope_inv_freq (LpModel *model, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpForward, lp_forward_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpKVCache, lp_kv_cache_free)

G_END_DECLS
