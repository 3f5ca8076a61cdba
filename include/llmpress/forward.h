/* llmpress — the Llama-family forward pass (llama, mistral, qwen2):
 * RMSNorm, RoPE (theta, linear / llama3 scaling), GQA causal attention,
 * SwiGLU, tied or separate head, q/k/v biases — batched over a whole
 * sequence, recorded as compute graphs (compute.h) and run by the backend:
 * one graph for the embedding, one a block, one for the head, activations
 * kept in backend memory between them.
 *
 * Weights are uploaded to the backend once per LpForward, as stored (f16,
 * bf16 and block types are decoded by the kernels a few rows at a time;
 * integer grids go as codes where the backend multiplies them natively), and
 * kept across calls under an optional byte budget.  Shapes: T tokens, D
 * model dim, F ffn dim, V vocab. */
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

/* Keep at most `bytes` of weights in backend memory (0: no limit, the
 * default): past it, the least recently used layers' weights are dropped
 * and uploaded again when next needed.  The layer in use is always kept,
 * so the budget can be exceeded by one layer's weights. */
void lp_forward_set_device_memory (LpForward *fw, guint64 bytes);
/* Compute as llama.cpp's CPU backend does (eval --llama-cpp), for
 * perplexities that agree with llama-perplexity's: activations rounded to
 * the weight type's ggml dot-product type before each matmul (Q8_0 blocks
 * for Q4_0 .. Q8_0 weights, Q8_1 for Q4_1 / Q5_1, Q8_K for K-quants, f16 for
 * f16), queries, keys and values rounded to f16 (its f16 KV cache and the
 * f16 product K Q^T), and the attention probabilities rounded to f16 before
 * they weight V.  Off by default: then every value is computed in f32. */
void lp_forward_set_llama_cpp (LpForward *fw, gboolean on);
/* On the CPU, multiply Q8_0, Q4_0 and Q4_1 weights with the activations
 * rounded to 8 bits a block, in integers, as llama.cpp's CPU backend does
 * (the same rounding as lp_forward_set_llama_cpp's): about 3 times fewer
 * instructions a weight than f32 activations, for decoding (generate);
 * the logits move by that rounding (a few percent on SmolLM2).  Off by
 * default; no effect with lp_forward_set_llama_cpp on or on a device. */
void lp_forward_set_int8_activations (LpForward *fw, gboolean on);
/* Bytes of weights held now, and weights uploaded so far (either may be NULL). */
void lp_forward_weight_stats (LpForward *fw, guint64 *resident_bytes, guint64 *uploads);
/* One line for --explain: the device, and the forward pass's ops it
 * declines, which run on the CPU ("... ; on the CPU: attention"). */
char *lp_forward_describe (LpForward *fw, GError **error);

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
