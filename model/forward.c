/* llmpress — the Llama-family forward pass (see forward.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/forward.h>

/* A weight as f32: borrowed from an f32 tensor, or dequantized (owned);
 * or, for the matrices of linear layers, as stored: `raw` in `dtype` (the
 * backend's weight product reads f16/bf16/block types itself), or the
 * tensor's integer grid (GPTQ / compressed-tensors: gemm_grid decodes the
 * codes), so a device receives the compressed bytes and nothing holds the
 * layer in f32 on its way there. */
typedef struct {
  const float *data;
  float *owned;
  const void *raw;
  LpDType dtype;
  const LpIntGrid *grid; /* borrowed from the tensor */
} Weight;

struct _LpForward {
  LpModel *model;
  LpBackend *be;
  LpModelConfig c;
  float *inv_freq;     /* [hd/2] */
  Weight head;         /* [V, D]: output.weight, or token_embd when tied */
  Weight final_norm;   /* [D] */
  int cur_layer;       /* the layer whose weights `layer_w` holds, -1 none */
  Weight layer_w[16];  /* indexed by LayerWeight */
};

typedef enum {
  W_ATTN_NORM, W_Q, W_K, W_V, W_O, W_QB, W_KB, W_VB, W_FFN_NORM, W_GATE, W_UP, W_DOWN, W_COUNT
} LayerWeight;

static const char *const layer_weight_names[W_COUNT] = {
  "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
  "attn_q.bias", "attn_k.bias", "attn_v.bias",
  "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
};

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

static void
weight_clear (Weight *w)
{
  g_free (w->owned);
  w->owned = NULL;
  w->data = NULL;
  w->raw = NULL;
  w->grid = NULL;
}

static gboolean
weight_load (Weight *w, LpTensor *t, GError **error)
{
  weight_clear (w);
  w->dtype = LP_DTYPE_F32;
  if (t->dtype == LP_DTYPE_F32)
    {
      w->data = lp_tensor_data (t);
      return TRUE;
    }
  w->owned = lp_tensor_dup_f32 (t, error);
  w->data = w->owned;
  return w->owned != NULL;
}

/* A linear layer's matrix [N, K]: kept as stored when the weight product
 * can read that type (every type lp_dtype_to_f32 reads; the CPU backend
 * dequantizes a few rows at a time, a device on the device).  An integer
 * grid's weights are already in the tensor as f32: only a device, which
 * would otherwise receive those f32, is handed the grid's codes. */
static gboolean
weight_load_matrix (Weight *w, LpTensor *t, LpBackend *be, GError **error)
{
  if (t->grid != NULL && lp_backend_for_op (be, LP_OP_GEMM_GRID)->fallback != NULL)
    {
      weight_clear (w);
      w->grid = t->grid;
      return TRUE;
    }
  const LpDTypeInfo *info = lp_dtype_info (t->dtype);
  if (t->dtype == LP_DTYPE_F32 || info == NULL || !info->supported)
    return weight_load (w, t, error);
  weight_clear (w);
  w->dtype = t->dtype;
  w->raw = lp_tensor_data (t);
  return TRUE;
}

/* out[T, N] = in[T, K] W^T + beta * out. */
static void
linear (LpBackend *be, int T, int N, int K, const float *in, int ld_in, const Weight *w, float beta, float *out)
{
  if (w->grid != NULL)
    lp_gemm_grid (be, T, N, K, in, ld_in, w->grid, beta, out, N);
  else if (w->dtype == LP_DTYPE_F32)
    lp_gemm (be, TRUE, T, N, K, 1.0f, in, ld_in, w->data, K, beta, out, N);
  else
    lp_gemm_w (be, T, N, K, in, ld_in, w->dtype, w->raw, beta, out, N);
}

struct _LpKVCache {
  int max_tokens, n, n_layers, kv_dim;
  float *k; /* [L][max_tokens][kv_dim] */
  float *v;
};

LpKVCache *
lp_kv_cache_new (const LpModelConfig *c, int max_tokens)
{
  LpKVCache *cache = g_new0 (LpKVCache, 1);
  cache->max_tokens = max_tokens;
  cache->n_layers = (int) c->n_layers;
  cache->kv_dim = (int) (c->n_kv_heads * c->head_dim);
  gsize n = (gsize) c->n_layers * max_tokens * cache->kv_dim;
  cache->k = g_new0 (float, n);
  cache->v = g_new0 (float, n);
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
  g_free (cache->k);
  g_free (cache->v);
  g_free (cache);
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

LpForward *
lp_forward_new (LpModel *model, LpBackend *backend, GError **error)
{
  if (!lp_model_validate (model, error))
    return NULL;
  g_autoptr (LpForward) fw = g_new0 (LpForward, 1);
  fw->model = lp_model_ref (model);
  fw->be = backend ? lp_backend_ref (backend) : lp_backend_cpu_new ();
  fw->c = *lp_model_config (model);
  fw->cur_layer = -1;
  fw->inv_freq = lp_rope_inv_freq (model, error);
  if (fw->inv_freq == NULL)
    return NULL;
  LpTensor *head = lp_model_tensor (model, fw->c.tied_embeddings ? "token_embd.weight" : "output.weight");
  if (!weight_load_matrix (&fw->head, head, fw->be, error)
      || !weight_load (&fw->final_norm, lp_model_tensor (model, "output_norm.weight"), error))
    return NULL;
  return g_steal_pointer (&fw);
}

void
lp_forward_free (LpForward *fw)
{
  if (fw == NULL)
    return;
  for (int i = 0; i < W_COUNT; i++)
    weight_clear (&fw->layer_w[i]);
  weight_clear (&fw->head);
  weight_clear (&fw->final_norm);
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

/* Materialize one layer's weights (dropping the previous layer's). */
static gboolean
load_layer (LpForward *fw, int layer, GError **error)
{
  if (fw->cur_layer == layer)
    return TRUE;
  gboolean bias = lp_arch_info (fw->c.arch)->qkv_bias;
  for (int i = 0; i < W_COUNT; i++)
    {
      weight_clear (&fw->layer_w[i]);
      if ((i == W_QB || i == W_KB || i == W_VB) && !bias)
        continue;
      g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, layer_weight_names[i]);
      gboolean matrix = i == W_Q || i == W_K || i == W_V || i == W_O || i == W_GATE || i == W_UP || i == W_DOWN;
      LpTensor *t = lp_model_tensor (fw->model, name);
      if (!(matrix ? weight_load_matrix (&fw->layer_w[i], t, fw->be, error) : weight_load (&fw->layer_w[i], t, error)))
        {
          fw->cur_layer = -1;
          return FALSE;
        }
    }
  fw->cur_layer = layer;
  return TRUE;
}

gboolean
lp_forward_embed (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error)
{
  LpTensor *emb = lp_model_tensor (fw->model, "token_embd.weight");
  gint64 D = fw->c.dim;
  guint64 row_bytes;
  if (!lp_dtype_row_bytes (emb->dtype, D, &row_bytes, error))
    return FALSE;
  const guint8 *base = lp_tensor_data (emb);
  for (int t = 0; t < T; t++)
    {
      if (tokens[t] < 0 || tokens[t] >= fw->c.n_vocab)
        {
          lp_set_error (error, LP_ERROR_INVALID, "token %d at position %d: expected an id in 0..%" G_GINT64_FORMAT,
                        tokens[t], t, fw->c.n_vocab - 1);
          return FALSE;
        }
      if (!lp_dtype_to_f32 (emb->dtype, base + (gsize) tokens[t] * row_bytes, x + (gsize) t * D, D, error))
        return FALSE;
    }
  return TRUE;
}

static void
add_bias (float *y, const float *b, int T, int n)
{
  for (int t = 0; t < T; t++)
    for (int i = 0; i < n; i++)
      y[(gsize) t * n + i] += b[i];
}

gboolean
lp_forward_block (LpForward *fw, int layer, float *x, int T, LpKVCache *cache, const LpForwardHooks *hooks,
                  GError **error)
{
  if (!load_layer (fw, layer, error))
    return FALSE;
  const LpModelConfig *c = &fw->c;
  LpBackend *be = fw->be;
  int D = (int) c->dim, F = (int) c->ffn_dim, H = (int) c->n_heads, Hkv = (int) c->n_kv_heads;
  int hd = (int) c->head_dim, qd = H * hd, kvd = Hkv * hd;
  const Weight *w = fw->layer_w;
  int past = cache ? cache->n : 0;
  if (cache && past + T > cache->max_tokens)
    {
      lp_set_error (error, LP_ERROR_INVALID, "KV cache: expected at most %d tokens, found %d", cache->max_tokens,
                    past + T);
      return FALSE;
    }

  g_autofree float *h = g_new (float, (gsize) T * MAX (D, qd));
  g_autofree float *q = g_new (float, (gsize) T * qd);
  g_autofree float *kbuf = cache ? NULL : g_new (float, (gsize) T * kvd);
  g_autofree float *vbuf = cache ? NULL : g_new (float, (gsize) T * kvd);
  float *k = cache ? cache->k + ((gsize) layer * cache->max_tokens + past) * kvd : kbuf;
  float *v = cache ? cache->v + ((gsize) layer * cache->max_tokens + past) * kvd : vbuf;

  /* Attention. */
  lp_rmsnorm (be, T, D, x, w[W_ATTN_NORM].data, (float) c->norm_eps, h);
  if (hooks && hooks->linear_input)
    hooks->linear_input (hooks->user_data, layer, LP_LINEAR_IN_QKV, h, T, D);
  linear (be, T, qd, D, h, D, &w[W_Q], 0.0f, q);
  linear (be, T, kvd, D, h, D, &w[W_K], 0.0f, k);
  linear (be, T, kvd, D, h, D, &w[W_V], 0.0f, v);
  if (w[W_QB].data)
    {
      add_bias (q, w[W_QB].data, T, qd);
      add_bias (k, w[W_KB].data, T, kvd);
      add_bias (v, w[W_VB].data, T, kvd);
    }
  LpRopeStyle style = lp_arch_info (c->arch)->rope_style;
  lp_rope (be, style, T, H, hd, past, fw->inv_freq, q);
  lp_rope (be, style, T, Hkv, hd, past, fw->inv_freq, k);
  const float *k_all = cache ? cache->k + (gsize) layer * cache->max_tokens * kvd : k;
  const float *v_all = cache ? cache->v + (gsize) layer * cache->max_tokens * kvd : v;
  lp_attention (be, T, past + T, H, Hkv, hd, q, k_all, v_all, h);
  if (hooks && hooks->linear_input)
    hooks->linear_input (hooks->user_data, layer, LP_LINEAR_IN_ATTN_OUT, h, T, qd);
  linear (be, T, D, qd, h, qd, &w[W_O], 1.0f, x); /* x += attn Wo^T */

  /* Feed-forward. */
  g_autofree float *g = g_new (float, (gsize) T * F);
  g_autofree float *u = g_new (float, (gsize) T * F);
  lp_rmsnorm (be, T, D, x, w[W_FFN_NORM].data, (float) c->norm_eps, h);
  if (hooks && hooks->linear_input)
    hooks->linear_input (hooks->user_data, layer, LP_LINEAR_IN_FFN, h, T, D);
  linear (be, T, F, D, h, D, &w[W_GATE], 0.0f, g);
  linear (be, T, F, D, h, D, &w[W_UP], 0.0f, u);
  lp_swiglu (be, T * F, g, u, g);
  if (hooks && hooks->linear_input)
    hooks->linear_input (hooks->user_data, layer, LP_LINEAR_IN_DOWN, g, T, F);
  linear (be, T, D, F, g, F, &w[W_DOWN], 1.0f, x); /* x += ffn Wd^T */
  return TRUE;
}

gboolean
lp_forward_head (LpForward *fw, const float *x, int T, float *logits, GError **error)
{
  int D = (int) fw->c.dim, V = (int) fw->c.n_vocab;
  g_autofree float *h = g_new (float, (gsize) T * D);
  lp_rmsnorm (fw->be, T, D, x, fw->final_norm.data, (float) fw->c.norm_eps, h);
  linear (fw->be, T, V, D, h, D, &fw->head, 0.0f, logits);
  return TRUE;
}

gboolean
lp_forward_logits (LpForward *fw, const gint32 *tokens, int T, LpKVCache *cache, float *logits, GError **error)
{
  g_autofree float *x = g_new (float, (gsize) T * fw->c.dim);
  if (!lp_forward_embed (fw, tokens, T, x, error))
    return FALSE;
  for (int l = 0; l < fw->c.n_layers; l++)
    if (!lp_forward_block (fw, l, x, T, cache, NULL, error))
      return FALSE;
  if (cache)
    cache->n += T;
  return lp_forward_head (fw, x, T, logits, error);
}

void
lp_forward_invalidate (LpForward *fw)
{
  for (int i = 0; i < W_COUNT; i++)
    weight_clear (&fw->layer_w[i]);
  fw->cur_layer = -1;
}
