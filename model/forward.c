/* llmpress — the Llama-family forward pass on compute graphs (see forward.h).
 *
 * Each stage is recorded as nodes of a graph over backend tensors and
 * computed as a whole: the embedding lookup, each transformer block (one
 * graph a block: one submission on a device), the head.  The residual
 * stream stays in backend memory from block to block; host memory is
 * touched for token ids, logits, the activations a hook asks for and the
 * stage-wise API's inputs and outputs.
 *
 * Weights are uploaded once per LpForward and kept across calls under a
 * byte budget (forward_weights.c). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/forward.h>

#include "compute-internal.h"
#include "forward-internal.h"

const char *const *
lp_linear_input_consumers (LpLinearInput which)
{
  static const char *const qkv[] = { "attn_q.weight", "attn_k.weight", "attn_v.weight", NULL };
  static const char *const out[] = { "attn_output.weight", NULL };
  static const char *const ffn[] = { "ffn_gate.weight", "ffn_up.weight", NULL };
  static const char *const down[] = { "ffn_down.weight", NULL };
  static const char *const *const table[LP_LINEAR_IN_COUNT] = { qkv, out, ffn, down };
  g_return_val_if_fail (which < LP_LINEAR_IN_COUNT, NULL);
  return table[which];
}

/* ---- KV cache ---- */

struct _LpKVCache {
  int max_tokens, n, n_layers, kv_dim;
  LpBackend *be;       /* where k and v live: the backend of the first forward pass that used it */
  LpCTensor **k, **v;  /* [n_layers] each [max_tokens, kv_dim] */
  LpCTensor *k_used, *v_used; /* [n_layers]: views of their first n + T rows, for attention */
};

LpKVCache *
lp_kv_cache_new (const LpModelConfig *c, int max_tokens)
{
  LpKVCache *cache = g_new0 (LpKVCache, 1);
  cache->max_tokens = max_tokens;
  cache->n_layers = (int) c->n_layers;
  cache->kv_dim = (int) (c->n_kv_heads * c->head_dim);
  cache->k = g_new0 (LpCTensor *, cache->n_layers);
  cache->v = g_new0 (LpCTensor *, cache->n_layers);
  cache->k_used = g_new0 (LpCTensor, cache->n_layers);
  cache->v_used = g_new0 (LpCTensor, cache->n_layers);
  return cache;
}

int
lp_kv_cache_length (const LpKVCache *cache)
{
  return cache->n;
}

void
lp_kv_cache_free (LpKVCache *cache)
{
  if (cache == NULL)
    return;
  for (int l = 0; l < cache->n_layers; l++)
    {
      lp_ctensor_free (cache->k[l]);
      lp_ctensor_free (cache->v[l]);
    }
  g_free (cache->k);
  g_free (cache->v);
  g_free (cache->k_used);
  g_free (cache->v_used);
  if (cache->be)
    lp_backend_unref (cache->be);
  g_free (cache);
}

/* The cache's tensors of `layer` on be (allocated on first use). */
static gboolean
kv_cache_layer (LpKVCache *cache, LpBackend *be, int layer, GError **error)
{
  if (cache->be == NULL)
    cache->be = lp_backend_ref (be);
  if (cache->be != be)
    {
      lp_set_error (error, LP_ERROR_INVALID, "KV cache: expected the backend it was first used on (%s), found %s",
                    cache->be->device_name, be->device_name);
      return FALSE;
    }
  gint64 shape[2] = { cache->max_tokens, cache->kv_dim };
  if (cache->k[layer] == NULL
      && (cache->k[layer] = lp_ctensor_new (be, LP_DTYPE_F32, 2, shape, "kv_cache.k", error)) == NULL)
    return FALSE;
  if (cache->v[layer] == NULL
      && (cache->v[layer] = lp_ctensor_new (be, LP_DTYPE_F32, 2, shape, "kv_cache.v", error)) == NULL)
    return FALSE;
  return TRUE;
}

/* The first `n` rows of a cache tensor: the same buffer, a shorter shape
 * (attention reads the keys and values written so far). */
static void
kv_prefix (LpCTensor *view, const LpCTensor *t, int n)
{
  *view = *t;
  view->shape[0] = n;
  view->n_bytes = (gsize) n * t->shape[1] * sizeof (float);
}

float *
lp_rope_inv_freq (LpModel *model, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  int half = (int) (c->head_dim / 2);
  float *f = g_new (float, half);
  for (int i = 0; i < half; i++)
    {
      double freq = pow (c->rope_theta, -2.0 * i / (double) c->head_dim);
      if (c->rope_scaling == LP_ROPE_SCALING_LINEAR)
        freq /= c->rope_factor;
      else if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3)
        {
          /* Meta's llama3 rule: long wavelengths scaled down by `factor`,
           * short ones kept, a smooth blend in between. */
          double lo_wave = c->rope_orig_ctx / c->rope_low_freq_factor;
          double hi_wave = c->rope_orig_ctx / c->rope_high_freq_factor;
          double wave = 2.0 * G_PI / freq;
          if (wave > lo_wave)
            freq /= c->rope_factor;
          else if (wave >= hi_wave)
            {
              double smooth = (c->rope_orig_ctx / wave - c->rope_low_freq_factor)
                              / (c->rope_high_freq_factor - c->rope_low_freq_factor);
              freq = (1.0 - smooth) * freq / c->rope_factor + smooth * freq;
            }
        }
      f[i] = (float) freq;
    }
  /* llama.cpp carries llama3 scaling as per-pair divisors in rope_freqs.weight. */
  LpTensor *rf = lp_model_tensor (model, "rope_freqs.weight");
  if (rf != NULL && c->rope_scaling != LP_ROPE_SCALING_LLAMA3)
    {
      if (lp_tensor_n_elements (rf) != half)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor rope_freqs.weight: expected %d elements, found %" G_GINT64_FORMAT,
                        lp_model_source (model) ? lp_model_source (model) : "model", half, lp_tensor_n_elements (rf));
          g_free (f);
          return NULL;
        }
      g_autofree float *div = lp_tensor_dup_f32 (rf, error);
      if (div == NULL)
        {
          g_free (f);
          return NULL;
        }
      for (int i = 0; i < half; i++)
        f[i] /= div[i];
    }
  return f;
}

/* ---- recording ---- */

/* Every recording step below takes the graph being recorded
 * (forward-internal.h's LpForwardRec): once an error is set, each does
 * nothing and returns NULL, so a block reads as the sequence of its ops. */

static LpCNode *
rec_op (LpForwardRec *r, LpCOp op, LpCTensor *a, LpCTensor *b, LpCTensor *c)
{
  if (r->error != NULL || a == NULL)
    return NULL;
  LpCTensor *src[3] = { a, b, c };
  return lp_cgraph_add (r->g, op, src, c ? 3 : b ? 2 : 1, NULL, 0, &r->error);
}

static LpCTensor *
rec_rmsnorm (LpForwardRec *r, LpCTensor *x, const LpForwardWeight *w)
{
  LpCNode *n = rec_op (r, LP_COP_RMSNORM, x, w->t, NULL);
  if (n == NULL)
    return NULL;
  n->f[0] = (float) r->fw->c.norm_eps;
  return n->dst[0];
}

/* ---- llama.cpp's numerics (lp_forward_set_llama_cpp) ----
 * ggml rounds some f32 values on the way into an op (forward_ggml.c).  To
 * do the same, the graph so far is computed, the value read back, rounded
 * on the host and put in the graph again: a sync per rounding, for eval
 * --llama-cpp only. */

/* x[T, n] computed and copied to the host; NULL once an error is set. */
static float *
rec_read (LpForwardRec *r, LpCTensor *x)
{
  if (r->error != NULL || x == NULL || !lp_cgraph_compute (r->g, &r->error))
    return NULL;
  float *host = g_new (float, lp_ctensor_n_elements (x));
  lp_ctensor_read (x, 0, host, x->n_bytes);
  return host;
}

/* A new graph tensor holding host[T, n] (x's shape). */
static LpCTensor *
rec_write (LpForwardRec *r, const LpCTensor *x, const float *host, const char *name)
{
  LpCTensor *t = lp_cgraph_tensor (r->g, LP_DTYPE_F32, 2, (gint64[]){ lp_ctensor_rows (x), lp_ctensor_cols (x) },
                                   name, &r->error);
  if (t != NULL)
    lp_ctensor_write (t, 0, host, t->n_bytes);
  return t;
}

/* rec_linear's operands as ggml's matmul with w sees them: *x replaced by
 * the activations rounded to w's dot-product type (a new tensor), and
 * *acc by acc plus what a Q4_1 / Q5_1 dot product adds with their Q8_1
 * sums (lp_ggml_min_correction).  Nothing changes where ggml multiplies
 * the activations as they are. */
static void
rec_ggml_activations (LpForwardRec *r, LpCTensor **x, const LpForwardWeight *w, LpCTensor **acc)
{
  if (!r->fw->llama_cpp || w->src == NULL)
    return;
  gsize T = lp_ctensor_rows (*x), K = lp_ctensor_cols (*x), N = (gsize) w->src->shape[0];
  g_autofree float *host = rec_read (r, *x);
  g_autofree float *s_err = g_new (float, T * (K / 32 + 1));
  if (host == NULL || !lp_ggml_round_rows (w->src->dtype, host, T, K, s_err))
    return;
  *x = rec_write (r, *x, host, "ggml.activations");
  g_autofree float *corr = g_new (float, T * N);
  if (!lp_ggml_min_correction (w->src->dtype, lp_tensor_data (w->src), N, K, s_err, T, corr))
    return;
  LpCTensor *c = lp_cgraph_tensor (r->g, LP_DTYPE_F32, 2, (gint64[]){ T, N }, "ggml.min_correction", &r->error);
  if (c == NULL)
    return;
  lp_ctensor_write (c, 0, corr, c->n_bytes);
  LpCNode *sum = *acc ? rec_op (r, LP_COP_ADD, *acc, c, NULL) : NULL;
  *acc = *acc ? (sum ? sum->dst[0] : NULL) : c;
}

/* k or v [T, n] rounded to f16 as ggml's KV cache stores them (in place:
 * nothing else reads them unrounded). */
static void
rec_ggml_f16 (LpForwardRec *r, LpCTensor *x)
{
  if (!r->fw->llama_cpp)
    return;
  g_autofree float *host = rec_read (r, x);
  if (host == NULL)
    return;
  lp_ggml_round_f16 (host, lp_ctensor_n_elements (x));
  lp_ctensor_write (x, 0, host, x->n_bytes);
}

/* Attention computed on the host as ggml computes it (lp_ggml_attention). */
static LpCTensor *
rec_ggml_attention (LpForwardRec *r, LpCTensor *q, LpCTensor *k, LpCTensor *v)
{
  const LpModelConfig *c = &r->fw->c;
  g_autofree float *hq = rec_read (r, q);
  g_autofree float *hk = hq ? rec_read (r, k) : NULL;
  g_autofree float *hv = hk ? rec_read (r, v) : NULL;
  if (hv == NULL)
    return NULL;
  int T = (int) lp_ctensor_rows (q), T_kv = (int) lp_ctensor_rows (k);
  g_autofree float *out = g_new (float, lp_ctensor_n_elements (q));
  lp_ggml_attention (hq, hk, hv, out, T, T_kv, (int) c->n_heads, (int) c->n_kv_heads, (int) c->head_dim);
  return rec_write (r, q, out, "ggml.attention");
}

void
lp_forward_set_llama_cpp (LpForward *fw, gboolean on)
{
  fw->llama_cpp = on;
}

void
lp_forward_set_int8_activations (LpForward *fw, gboolean on)
{
  fw->int8 = on;
}

/* x[T, K] W^T (+ acc[T, N]): the nodes of W's form (form.h), whatever it is. */
static LpCTensor *
rec_linear (LpForwardRec *r, LpCTensor *x, const LpForwardWeight *w, LpCTensor *acc)
{
  if (r->error != NULL || x == NULL)
    return NULL;
  rec_ggml_activations (r, &x, w, &acc);
  if (r->error != NULL)
    return NULL;
  return lp_form_weights_matmul (w->form, r->g, x, acc, &r->error);
}

static LpCTensor *
rec_bias (LpForwardRec *r, LpCTensor *x, const LpForwardWeight *b)
{
  if (b->src == NULL)
    return x;
  LpCNode *n = rec_op (r, LP_COP_ADD, x, b->t, NULL);
  return n ? n->dst[0] : NULL;
}

static LpCTensor *
rec_rope (LpForwardRec *r, LpCTensor *x, int heads, int pos0)
{
  LpCNode *n = rec_op (r, LP_COP_ROPE, x, r->fw->inv_freq_t, NULL);
  if (n == NULL)
    return NULL;
  n->i[0] = lp_arch_info (r->fw->c.arch)->rope_style;
  n->i[1] = heads;
  n->i[2] = r->fw->c.head_dim;
  n->i[3] = pos0;
  return n->dst[0];
}

/* x written into rows pos0.. of a cache tensor. */
static void
rec_set_rows (LpForwardRec *r, LpCTensor *x, LpCTensor *cache, int pos0)
{
  LpCNode *n = rec_op (r, LP_COP_SET_ROWS, x, cache, NULL);
  if (n != NULL)
    n->i[0] = pos0;
}

static LpCTensor *
rec_attention (LpForwardRec *r, LpCTensor *q, LpCTensor *k, LpCTensor *v)
{
  if (r->fw->llama_cpp)
    return rec_ggml_attention (r, q, k, v);
  LpCNode *n = rec_op (r, LP_COP_ATTENTION, q, k, v);
  if (n == NULL)
    return NULL;
  n->i[0] = r->fw->c.n_heads;
  n->i[1] = r->fw->c.n_kv_heads;
  n->i[2] = r->fw->c.head_dim;
  return n->dst[0];
}

static LpCTensor *
rec_swiglu (LpForwardRec *r, LpCTensor *gate, LpCTensor *up)
{
  LpCNode *n = rec_op (r, LP_COP_SWIGLU, gate, up, NULL);
  if (n)
    n->i[0] = r->fw->llama_cpp; /* libm's expf, as validated against llama.cpp */
  return n ? n->dst[0] : NULL;
}

/* The hook sees X[T, n]: the graph so far is computed and X read back
 * (borrowed where it is host memory already). */
static void
rec_hook (LpForwardRec *r, const LpForwardHooks *hooks, int layer, LpLinearInput which, LpCTensor *X)
{
  if (hooks == NULL || hooks->linear_input == NULL || r->error != NULL || X == NULL
      || !lp_cgraph_compute (r->g, &r->error))
    return;
  const float *host = lp_ctensor_host (X);
  g_autofree float *copy = NULL;
  if (host == NULL)
    {
      copy = g_new (float, lp_ctensor_n_elements (X));
      lp_ctensor_read (X, 0, copy, X->n_bytes);
      host = copy;
    }
  hooks->linear_input (hooks->user_data, layer, which, host, (int) lp_ctensor_rows (X), (int) lp_ctensor_cols (X));
}

/* x[T, D] (a graph tensor or borrowed) through block `layer`; returns the
 * new residual stream, a tensor of r's graph.  With a cache, the block's
 * keys and values go into it at positions cache->n .. cache->n + T - 1. */
LpCTensor *
lp_forward_rec_block (LpForwardRec *r, int layer, LpCTensor *x, LpKVCache *cache, const LpForwardHooks *hooks)
{
  LpForward *fw = r->fw;
  int T = (int) lp_ctensor_rows (x), past = cache ? cache->n : 0;
  if (cache && past + T > cache->max_tokens)
    {
      lp_set_error (&r->error, LP_ERROR_INVALID, "KV cache: expected at most %d tokens, found %d", cache->max_tokens,
                    past + T);
      return NULL;
    }
  const LpForwardWeight *w = lp_forward_layer_weights (fw, layer, &r->error);
  if (w == NULL || (cache && !kv_cache_layer (cache, fw->be, layer, &r->error)))
    return NULL;

  /* Attention. */
  LpCTensor *h = rec_rmsnorm (r, x, &w[LP_FW_ATTN_NORM]);
  rec_hook (r, hooks, layer, LP_LINEAR_IN_QKV, h);
  LpCTensor *q = rec_bias (r, rec_linear (r, h, &w[LP_FW_Q], NULL), &w[LP_FW_QB]);
  LpCTensor *k = rec_bias (r, rec_linear (r, h, &w[LP_FW_K], NULL), &w[LP_FW_KB]);
  LpCTensor *v = rec_bias (r, rec_linear (r, h, &w[LP_FW_V], NULL), &w[LP_FW_VB]);
  q = rec_rope (r, q, (int) fw->c.n_heads, past);
  k = rec_rope (r, k, (int) fw->c.n_kv_heads, past);
  rec_ggml_f16 (r, k); /* llama.cpp's KV cache holds f16 */
  rec_ggml_f16 (r, v);
  if (cache)
    {
      rec_set_rows (r, k, cache->k[layer], past);
      rec_set_rows (r, v, cache->v[layer], past);
      kv_prefix (&cache->k_used[layer], cache->k[layer], past + T);
      kv_prefix (&cache->v_used[layer], cache->v[layer], past + T);
      k = &cache->k_used[layer];
      v = &cache->v_used[layer];
    }
  LpCTensor *attn = rec_attention (r, q, k, v);
  rec_hook (r, hooks, layer, LP_LINEAR_IN_ATTN_OUT, attn);
  x = rec_linear (r, attn, &w[LP_FW_O], x); /* x + attn Wo^T */

  /* Feed-forward. */
  h = rec_rmsnorm (r, x, &w[LP_FW_FFN_NORM]);
  rec_hook (r, hooks, layer, LP_LINEAR_IN_FFN, h);
  LpCTensor *s = rec_swiglu (r, rec_linear (r, h, &w[LP_FW_GATE], NULL), rec_linear (r, h, &w[LP_FW_UP], NULL));
  rec_hook (r, hooks, layer, LP_LINEAR_IN_DOWN, s);
  return rec_linear (r, s, &w[LP_FW_DOWN], x); /* x + ffn Wd^T */
}

gboolean
lp_forward_check_tokens (const LpForward *fw, const gint32 *tokens, int T, GError **error)
{
  for (int t = 0; t < T; t++)
    if (tokens[t] < 0 || tokens[t] >= fw->c.n_vocab)
      {
        lp_set_error (error, LP_ERROR_INVALID, "token %d at position %d: expected an id in 0..%" G_GINT64_FORMAT,
                      tokens[t], t, fw->c.n_vocab - 1);
        return FALSE;
      }
  return TRUE;
}

/* Token ids checked and put in a graph tensor; the embedding rows of them. */
LpCTensor *
lp_forward_rec_embed (LpForwardRec *r, const gint32 *tokens, int T)
{
  if (!lp_forward_check_tokens (r->fw, tokens, T, &r->error))
    return NULL;
  const LpForwardWeight *top = lp_forward_top_weights (r->fw, FALSE, &r->error);
  LpCTensor *ids = top ? lp_cgraph_tensor (r->g, LP_DTYPE_I32, 1, (gint64[]){ T }, "tokens", &r->error) : NULL;
  if (ids == NULL)
    return NULL;
  lp_ctensor_write (ids, 0, tokens, (gsize) T * sizeof (gint32));
  LpCNode *n = rec_op (r, LP_COP_EMBED, lp_forward_embed_table (top), ids, NULL);
  return n ? n->dst[0] : NULL;
}

/* logits[T, V] of the residual stream x. */
LpCTensor *
lp_forward_rec_head (LpForwardRec *r, LpCTensor *x)
{
  const LpForwardWeight *top = lp_forward_top_weights (r->fw, TRUE, &r->error);
  if (top == NULL)
    return NULL;
  return rec_linear (r, rec_rmsnorm (r, x, &top[LP_FW_TOP_NORM]), &top[LP_FW_TOP_HEAD], NULL);
}

void
lp_forward_rec_begin (LpForwardRec *r, LpForward *fw)
{
  r->fw = fw;
  r->g = lp_cgraph_new (fw->be);
  r->error = NULL;
  /* llama_cpp rounds the activations itself, on the host (rec_ggml_activations). */
  if (fw->int8 && !fw->llama_cpp && lp_backend_is_cpu (fw->be))
    lp_cgraph_set_int8_matmul (r->g, TRUE);
}

/* Compute what is recorded; FALSE with the error (moved to `error`) when
 * recording or computing failed. */
gboolean
lp_forward_rec_compute (LpForwardRec *r, GError **error)
{
  if (r->error == NULL)
    lp_cgraph_compute (r->g, &r->error);
  if (r->error != NULL)
    {
      g_propagate_error (error, r->error);
      r->error = NULL;
      return FALSE;
    }
  return TRUE;
}

void
lp_forward_rec_end (LpForwardRec *r)
{
  g_clear_pointer (&r->g, lp_cgraph_free);
  g_clear_error (&r->error);
}

/* Compute, read y back into out (host memory), free the graph. */
static gboolean
rec_finish (LpForwardRec *r, LpCTensor *y, void *out, GError **error)
{
  gboolean ok = lp_forward_rec_compute (r, error);
  if (ok)
    lp_ctensor_read (y, 0, out, y->n_bytes);
  lp_forward_rec_end (r);
  return ok;
}

/* A graph tensor holding host x[T, D]. */
LpCTensor *
lp_forward_rec_input (LpForwardRec *r, const float *x, int T)
{
  if (r->error != NULL)
    return NULL;
  LpCTensor *t = lp_cgraph_tensor (r->g, LP_DTYPE_F32, 2, (gint64[]){ T, r->fw->c.dim }, "x", &r->error);
  if (t != NULL)
    lp_ctensor_write (t, 0, x, t->n_bytes);
  return t;
}

/* ---- the forward pass ---- */

LpForward *
lp_forward_new (LpModel *model, LpBackend *backend, GError **error)
{
  if (!lp_model_validate (model, error))
    return NULL;
  g_autoptr (LpForward) fw = g_new0 (LpForward, 1);
  fw->model = lp_model_ref (model);
  fw->c = *lp_model_config (model);
  fw->slots = g_new0 (LpForwardSlot, fw->c.n_layers + 1);
  /* Weights go where the graphs run (a backend without graphs hands them
   * to its fallback, the CPU). */
  g_autoptr (LpBackend) be = backend ? lp_backend_ref (backend) : lp_backend_cpu_new ();
  g_autoptr (LpCGraph) probe = lp_cgraph_new (be);
  fw->be = lp_backend_ref (lp_cgraph_backend (probe));
  fw->inv_freq = lp_rope_inv_freq (model, error);
  if (fw->inv_freq == NULL)
    return NULL;
  gint64 half = fw->c.head_dim / 2;
  fw->inv_freq_t = lp_ctensor_new (fw->be, LP_DTYPE_F32, 1, &half, "rope.inv_freq", error);
  if (fw->inv_freq_t == NULL)
    return NULL;
  lp_ctensor_write (fw->inv_freq_t, 0, fw->inv_freq, fw->inv_freq_t->n_bytes);
  return g_steal_pointer (&fw);
}

void
lp_forward_free (LpForward *fw)
{
  if (fw == NULL)
    return;
  if (fw->slots)
    lp_forward_weights_clear (fw);
  g_free (fw->slots);
  lp_ctensor_free (fw->inv_freq_t);
  g_free (fw->inv_freq);
  if (fw->be)
    lp_backend_unref (fw->be);
  lp_model_unref (fw->model);
  g_free (fw);
}

LpModel *
lp_forward_model (LpForward *fw)
{
  return fw->model;
}

char *
lp_forward_describe (LpForward *fw, GError **error)
{
  /* The ops of one token through the embedding, a block and the head,
   * recorded, not run: lp_cgraph_describe names those the backend declines. */
  LpForwardRec r;
  lp_forward_rec_begin (&r, fw);
  gint32 token = 0;
  lp_forward_rec_head (&r, lp_forward_rec_block (&r, 0, lp_forward_rec_embed (&r, &token, 1), NULL, NULL));
  char *s = r.error == NULL ? lp_cgraph_describe (r.g) : NULL;
  if (r.error != NULL)
    g_propagate_error (error, g_steal_pointer (&r.error));
  lp_forward_rec_end (&r);
  return s;
}

gboolean
lp_forward_embed (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error)
{
  LpForwardRec r;
  lp_forward_rec_begin (&r, fw);
  return rec_finish (&r, lp_forward_rec_embed (&r, tokens, T), x, error);
}

gboolean
lp_forward_block (LpForward *fw, int layer, float *x, int T, LpKVCache *cache, const LpForwardHooks *hooks,
                  GError **error)
{
  LpForwardRec r;
  lp_forward_rec_begin (&r, fw);
  return rec_finish (&r, lp_forward_rec_block (&r, layer, lp_forward_rec_input (&r, x, T), cache, hooks), x, error);
}

gboolean
lp_forward_head (LpForward *fw, const float *x, int T, float *logits, GError **error)
{
  LpForwardRec r;
  lp_forward_rec_begin (&r, fw);
  return rec_finish (&r, lp_forward_rec_head (&r, lp_forward_rec_input (&r, x, T)), logits, error);
}

/* tokens[T] through the embedding and the blocks, and the head when
 * `head`: one graph a stage, the residual stream passing from each graph
 * to the next in backend memory, the previous graph freed once the next
 * ran.  The last stage's result read into out: logits[T, V], or the
 * residual stream x[T, D]. */
static gboolean
forward_stages (LpForward *fw, const gint32 *tokens, int T, LpKVCache *cache, gboolean head, float *out,
                GError **error)
{
  LpForwardRec prev, cur;
  lp_forward_rec_begin (&prev, fw);
  LpCTensor *x = lp_forward_rec_embed (&prev, tokens, T);
  gboolean ok = lp_forward_rec_compute (&prev, error);
  int last = head ? fw->c.n_layers : fw->c.n_layers - 1;
  for (int l = 0; ok && l <= last; l++)
    {
      lp_forward_rec_begin (&cur, fw);
      x = l < fw->c.n_layers ? lp_forward_rec_block (&cur, l, x, cache, NULL) : lp_forward_rec_head (&cur, x);
      ok = lp_forward_rec_compute (&cur, error);
      lp_forward_rec_end (&prev);
      prev = cur;
    }
  if (ok)
    {
      lp_ctensor_read (x, 0, out, x->n_bytes);
      if (cache)
        cache->n += T;
    }
  lp_forward_rec_end (&prev);
  return ok;
}

gboolean
lp_forward_logits (LpForward *fw, const gint32 *tokens, int T, LpKVCache *cache, float *logits, GError **error)
{
  return forward_stages (fw, tokens, T, cache, TRUE, logits, error);
}

gboolean
lp_forward_residual (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error)
{
  if (fw->llama_cpp && lp_ggml_forward_usable (fw))
    return lp_ggml_forward_residual (fw, tokens, T, x, error);
  return forward_stages (fw, tokens, T, NULL, FALSE, x, error);
}

gboolean
lp_forward_head_rows (LpForward *fw, const float *x, int T, int rows, LpForwardRowsFunc func, gpointer user_data,
                      GError **error)
{
  g_return_val_if_fail (rows > 0, FALSE);
  int n_blocks = (T + rows - 1) / rows;
  g_autofree float *copy = NULL; /* a block read back from a device */
  if (fw->llama_cpp && lp_ggml_forward_usable (fw))
    {
      for (int r0 = 0; r0 < T; r0 += rows)
        {
          int n = MIN (rows, T - r0);
          copy = g_renew (float, copy, (gsize) n * fw->c.n_vocab);
          lp_ggml_forward_head (fw, x + (gsize) r0 * fw->c.dim, n, copy);
          if (!func (user_data, r0, n, copy, error))
            return FALSE;
        }
      return TRUE;
    }
  for (int b = 0; b < n_blocks; b++)
    {
      /* Blocks of equal size (to a row), so that none is so thin that its
       * product takes another kernel (the few-row GEMV). */
      int r0 = (int) ((gint64) T * b / n_blocks), n = (int) ((gint64) T * (b + 1) / n_blocks) - r0;
      LpForwardRec r;
      lp_forward_rec_begin (&r, fw);
      LpCTensor *y = lp_forward_rec_head (&r, lp_forward_rec_input (&r, x + (gsize) r0 * fw->c.dim, n));
      gboolean ok = lp_forward_rec_compute (&r, error);
      if (ok)
        {
          const float *host = lp_ctensor_host (y);
          if (host == NULL)
            {
              copy = g_renew (float, copy, (gsize) n * fw->c.n_vocab);
              lp_ctensor_read (y, 0, copy, y->n_bytes);
              host = copy;
            }
          ok = func (user_data, r0, n, host, error);
        }
      lp_forward_rec_end (&r);
      if (!ok)
        return FALSE;
    }
  return TRUE;
}
