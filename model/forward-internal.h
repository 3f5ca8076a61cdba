/* llmpress — the forward pass's state, shared by forward.c (recording the
 * graphs) and forward_weights.c (its weights in backend memory).  Not part
 * of the SDK. */
#pragma once

#include <llmpress/compute.h>
#include <llmpress/forward.h>
#include <llmpress/form.h>

/* A block's weights, in their slot's order. */
typedef enum {
  LP_FW_ATTN_NORM, LP_FW_Q, LP_FW_K, LP_FW_V, LP_FW_O, LP_FW_QB, LP_FW_KB, LP_FW_VB,
  LP_FW_FFN_NORM, LP_FW_GATE, LP_FW_UP, LP_FW_DOWN, LP_FW_COUNT
} LpForwardLayerWeight;

/* The weights outside the blocks, kept in one more slot after the layers'. */
typedef enum { LP_FW_TOP_EMBED, LP_FW_TOP_NORM, LP_FW_TOP_HEAD } LpForwardTopWeight;

/* How a weight is uploaded: f32 (norms, biases); as stored, for the
 * embedding lookup; by its form (form.h), for a matrix. */
typedef enum { LP_FW_VECTOR, LP_FW_TABLE, LP_FW_MATRIX } LpForwardWeightKind;

/* One weight in backend memory. */
typedef struct {
  LpTensor *src;            /* the model tensor it was uploaded from (ref) */
  LpFormWeights *form;      /* its tensors on the backend: a matrix's form, or its values alone */
  LpCTensor *t;             /* its values as stored or f32 (form->values), or NULL (a matrix held otherwise) */
  gsize bytes;
  gboolean train;           /* uploaded trainable (lp_forward_weight_train): never dropped */
} LpForwardWeight;

typedef struct {
  LpForwardWeight w[LP_FW_COUNT];
  guint64 last_use;         /* fw->clock when last used */
} LpForwardSlot;

struct _LpForward {
  LpModel *model;
  LpBackend *be;            /* the backend the graphs run on */
  LpModelConfig c;
  float *inv_freq;          /* [hd/2] */
  LpCTensor *inv_freq_t;    /* the same, in backend memory */
  LpForwardSlot *slots;     /* [n_layers + 1]: each layer's weights, then LpForwardTopWeight's */
  guint64 clock;
  guint64 budget;           /* bytes of weights to keep; 0: no limit */
  guint64 resident;         /* bytes of weights held */
  guint64 uploads;          /* weights uploaded so far */
  gboolean llama_cpp;       /* round as ggml's CPU backend does (forward_ggml.c) */
  gboolean int8;            /* matmuls in integers (lp_forward_set_int8_activations) */
};

/* ---- recording (forward.c) ----
 * The forward pass's stages recorded into a caller's graph: lp_forward_*
 * run them, and the trainer (compress/train.c) records the same stages and
 * then their backward into its graphs, so there is one forward. */

/* A graph being recorded: once an error is set, every step does nothing
 * and returns NULL. */
typedef struct {
  LpForward *fw;
  LpCGraph *g;
  GError *error;
} LpForwardRec;

/* A new graph on fw's backend. */
void lp_forward_rec_begin (LpForwardRec *r, LpForward *fw);
/* Compute what is recorded (the nodes not run yet); FALSE with the error
 * (moved to `error`) when recording or computing failed. */
gboolean lp_forward_rec_compute (LpForwardRec *r, GError **error);
/* Free the graph (and an error not taken). */
void lp_forward_rec_end (LpForwardRec *r);
/* A graph tensor holding host x[T, D]. */
LpCTensor *lp_forward_rec_input (LpForwardRec *r, const float *x, int T);
/* tokens[T] all ids of fw's vocabulary, or FALSE with an error naming the first
 * that is not. */
gboolean lp_forward_check_tokens (const LpForward *fw, const gint32 *tokens, int T, GError **error);
/* The embedding rows x[T, D] of tokens[T] (ids checked). */
LpCTensor *lp_forward_rec_embed (LpForwardRec *r, const gint32 *tokens, int T);
/* x[T, D] (a graph tensor or borrowed) through block `layer`: the new
 * residual stream [T, D].  cache and hooks may be NULL. */
LpCTensor *lp_forward_rec_block (LpForwardRec *r, int layer, LpCTensor *x, LpKVCache *cache,
                                 const LpForwardHooks *hooks);
/* logits[T, V] of the residual stream x: final norm, head. */
LpCTensor *lp_forward_rec_head (LpForwardRec *r, LpCTensor *x);

/* ---- the forward pass in two parts (forward.c), for evaluation ----
 * The logits of a window over a large vocabulary are many times the rest
 * (SmolLM2: [512, 49152], 100 MB): lp_forward_residual stops before the
 * head, and lp_forward_head_rows hands the logits over a block of rows at
 * a time, so the whole [T, V] never exists and a block is scored while in
 * cache.  Together they compute what lp_forward_logits computes. */

/* The residual stream x[T, D] after the last block, for tokens[T] at
 * positions 0..T-1. */
gboolean lp_forward_residual (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error);
/* Rows r0 .. r0 + n - 1 of the logits (logits[n, V], borrowed for the
 * call); FALSE with the error stops the forward pass. */
typedef gboolean (*LpForwardRowsFunc) (gpointer user_data, int r0, int n, const float *logits, GError **error);
/* The final norm and head over the residual stream x[T, D] in blocks of
 * about `rows` rows, each handed to func in row order. */
gboolean lp_forward_head_rows (LpForward *fw, const float *x, int T, int rows, LpForwardRowsFunc func,
                               gpointer user_data, GError **error);

/* ---- weights (forward_weights.c) ---- */

/* Layer `layer`'s weights, uploaded where needed (LP_FW_QB.. only with
 * q/k/v biases), and marked as just used. */
LpForwardWeight *lp_forward_layer_weights (LpForward *fw, int layer, GError **error);
/* The weights outside the blocks: the embedding table (head FALSE), or the
 * final norm and the head (head TRUE). */
LpForwardWeight *lp_forward_top_weights (LpForward *fw, gboolean head, GError **error);
/* The embedding table among those: the head's values themselves when tied
 * and its form holds them as stored. */
LpCTensor *lp_forward_embed_table (const LpForwardWeight *top);
/* Model tensor `name` uploaded trainable (lp_form_weights_new_train with
 * `how`) where the forward pass reads it from, and kept there (a budget
 * never drops it): its weights (borrowed), or NULL with an error naming
 * the tensor when the forward pass reads no such tensor. */
LpFormWeights *lp_forward_weight_train (LpForward *fw, const char *name, LpFormTrain how, GError **error);
/* Drop every weight held. */
void lp_forward_weights_clear (LpForward *fw);

/* ---- ggml's CPU roundings (forward_ggml.c) ---- */

/* x[n] rounded to f16 and back. */
void lp_ggml_round_f16 (float *x, gsize n);
/* The rows x[T, K] rounded in place as ggml converts a matmul's f32
 * activations for a weight of type `weight` (its vec_dot type); FALSE, x
 * untouched, when ggml multiplies them as they are (f32 weights).  s_err
 * (NULL, or [T, K/32] for 32-value blocks) receives each block's Q8_1 sum
 * error (for lp_ggml_min_correction). */
gboolean lp_ggml_round_rows (LpDType weight, float *x, gsize T, gsize K, float *s_err);
/* out[T, N] = what ggml's Q4_1 / Q5_1 dot products add to the product of
 * the rounded rows with the weight w[N, K] (stored bytes): each block's
 * minimum times its Q8_1 sum error s_err[T, K/32].  FALSE for another type
 * (nothing to add). */
gboolean lp_ggml_min_correction (LpDType weight, const void *w, gsize N, gsize K, const float *s_err, gsize T,
                                 float *out);
/* Attention as ggml's CPU backend computes it without flash attention:
 * dst[T, H*hd] from q [T, H*hd], k, v [T_kv, Hkv*hd] (causal, the last T of
 * the T_kv positions being q's), probabilities rounded to f16. */
void lp_ggml_attention (const float *q, const float *k, const float *v, float *dst, int T, int T_kv, int H,
                        int Hkv, int hd);

/* ---- ggml's CPU ops restated bit for bit (ggml_ops.c) ----
 * What llama-cpp-python 0.3.36's libggml-cpu.so (AVX-512) computes, to the
 * bit, given the same inputs.  Shapes in ggml's order reversed: x[T, D] is
 * T rows of D. */

/* ggml_v_expf (AVX-512): exp(x) as ggml's vector exp computes each lane. */
float lp_ggml_v_expf (float x);
/* The sum of v[16] in _mm512_reduce_add_ps's order. */
float lp_ggml_reduce16 (const float *v);
/* dst[T, D] = rms_norm (x[T, D]) * w[D] (ggml_compute_forward_rms_norm_mul_fused). */
void lp_ggml_rms_norm_mul (const float *x, const float *w, float *dst, int T, int D, float eps);
/* cache[n_dims]: cos, sin pairs for position p (ggml_rope_cache_init,
 * ext_factor 0, no frequency factors). */
void lp_ggml_rope_cache (float p, int n_dims, float freq_base, float freq_scale, float attn_factor, float *cache);
/* dst[T, H, hd] = x[T, H, hd] with the first n_dims (a multiple of 16) of
 * each head rotated for position pos[t], RoPE's normal (not NeoX) mode
 * (ggml_compute_forward_rope_f32). */
void lp_ggml_rope (const float *x, float *dst, const gint32 *pos, int T, int H, int hd, int n_dims, float freq_base,
                   float freq_scale, float attn_factor);
/* y[n] = exp (x[n] - max); returns their sum in f64 (ggml_vec_soft_max_f32). */
double lp_ggml_vec_soft_max (int n, float *y, const float *x, float max);
/* dst[rows, n] = softmax (x[rows, n] * scale + mask[r % mask_rows, n])
 * (ggml_compute_forward_soft_max_f32, no ALiBi, no sinks); mask may be
 * NULL.  For KQ, llama.cpp's rows are n_kv long, the KV cache's cells in
 * view (masked past the tokens): any n that is a multiple of 16 and covers
 * the unmasked columns gives its bits (the masked lanes add zeros); a row
 * with a tail of n % 16 sums it otherwise. */
void lp_ggml_soft_max (const float *x, const float *mask, int mask_rows, float *dst, int rows, int n, float scale);
/* dst[rows, n] = silu (gate) * up (ggml_vec_swiglu_f32 on each row). */
void lp_ggml_swiglu (const float *gate, const float *up, float *dst, int rows, int n);

/* ---- ggml's CPU matrix products, bit for bit (ggml_matmul.c) ---- */

/* y[T, N] = ggml_mul_mat (W, x) as llama-cpp-python 0.3.36's CPU backend
 * computes it: x[T, K] rounded to Q8_1 / Q8_0, each output summed in ggml's
 * order (gemv_q8.c's lp_cpu_gemm_q8).  W[N, K] as stored, Q4_1 or Q8_0;
 * FALSE (y untouched) for another type or K not a multiple of 32. */
gboolean lp_ggml_mul_mat_q (LpDType wtype, const void *w, gsize N, gsize K, const float *x, gsize T, float *y);
/* The same by gemv_q8.c's plain C reference (lp_cpu_gemm_q8_ref, on this
 * thread), which the AVX2 kernel lp_ggml_mul_mat_q runs is tested against. */
gboolean lp_ggml_mul_mat_q_ref (LpDType wtype, const void *w, gsize N, gsize K, const float *x, gsize T, float *y);
/* c[t * ldc + n] = a[n] . b[t] (rows of K at strides lda, ldb; n < N,
 * t < T) as its f16 products (K Q^T, V^T P) sum: both operands f16 values
 * already (lp_ggml_round_f16).  FALSE (c untouched) when K is not a
 * multiple of 16. */
gboolean lp_ggml_mul_mat_f16 (const float *a, gsize lda, gsize N, const float *b, gsize ldb, gsize T, gsize K,
                              float *c, gsize ldc);
/* The same in plain C (lp_ggml_mul_mat_f16 runs AVX2 where it can). */
gboolean lp_ggml_mul_mat_f16_ref (const float *a, gsize lda, gsize N, const float *b, gsize ldb, gsize T, gsize K,
                                  float *c, gsize ldc);

/* ---- llama.cpp's forward pass, op for op (ggml_forward.c) ----
 * eval --llama-cpp on the CPU with a model llama.cpp's CPU backend would
 * run through the products and ops above (a Llama block without biases,
 * RoPE's normal mode unscaled, Q4_1 / Q8_0 matrices): its logits, bit for
 * bit, each window a fresh sequence at position 0.  Other models keep
 * forward_ggml.c's roundings on the compute graph. */

/* Whether fw's model and backend are such a case. */
gboolean lp_ggml_forward_usable (LpForward *fw);
/* lp_forward_residual's x[T, D] as llama.cpp computes it. */
gboolean lp_ggml_forward_residual (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error);
/* logits[T, V] of x[T, D]: the final norm and the head. */
void lp_ggml_forward_head (LpForward *fw, const float *x, int T, float *logits);
