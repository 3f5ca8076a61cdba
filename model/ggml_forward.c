/* llmpress — llama.cpp's CPU forward pass for a Llama model, op for op
 * (eval --llama-cpp).
 *
 * llama.cpp's graph (llm_build_llama, no flash attention, f16 KV cache)
 * restated on the host with ggml's own arithmetic: ggml_ops.c's RMS norm,
 * RoPE, softmax and SwiGLU and ggml_matmul.c's products give the bits
 * llama-cpp-python 0.3.36's libggml-cpu.so gives on an AVX-512 machine, so
 * chained here over every layer they give its logits to the bit
 * (tests/test-eval.c), where the roundings alone (forward_ggml.c) flip
 * 8-bit steps and land within noise of its perplexity.  Another llama.cpp
 * build (AVX2 only, another libm) sums in other lanes and differs from
 * this one by that noise.  Each window starts a fresh sequence at
 * position 0, as llama-perplexity's chunks do. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/forward.h>

#include "compute-internal.h"
#include "forward-internal.h"

/* One block's tensors, as stored. */
typedef struct {
  LpTensor *attn_norm, *q, *k, *v, *o, *ffn_norm, *gate, *up, *down;
} Block;

static LpTensor *
block_tensor (LpModel *m, int layer, const char *what)
{
  g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, what);
  return lp_model_tensor (m, name);
}

static gboolean
block_of (LpModel *m, int layer, Block *b)
{
  *b = (Block) { block_tensor (m, layer, "attn_norm.weight"), block_tensor (m, layer, "attn_q.weight"),
                 block_tensor (m, layer, "attn_k.weight"), block_tensor (m, layer, "attn_v.weight"),
                 block_tensor (m, layer, "attn_output.weight"), block_tensor (m, layer, "ffn_norm.weight"),
                 block_tensor (m, layer, "ffn_gate.weight"), block_tensor (m, layer, "ffn_up.weight"),
                 block_tensor (m, layer, "ffn_down.weight") };
  return b->attn_norm && b->q && b->k && b->v && b->o && b->ffn_norm && b->gate && b->up && b->down;
}

/* The products this file can restate: Q4_1 and Q8_0 matrices (ggml_matmul.c). */
static gboolean
matrix_ok (const LpTensor *t, gint64 rows, gint64 cols)
{
  return t != NULL && (t->dtype == LP_DTYPE_Q4_1 || t->dtype == LP_DTYPE_Q8_0) && t->n_dims == 2
         && t->shape[0] == rows && t->shape[1] == cols && cols % 32 == 0;
}

static gboolean
vector_ok (const LpTensor *t, gint64 n)
{
  return t != NULL && t->dtype == LP_DTYPE_F32 && t->n_dims == 1 && t->shape[0] == n;
}

static LpTensor *
head_of (LpForward *fw)
{
  return lp_model_tensor (fw->model, fw->c.tied_embeddings ? "token_embd.weight" : "output.weight");
}

gboolean
lp_ggml_forward_usable (LpForward *fw)
{
  const LpModelConfig *c = &fw->c;
  const LpArchInfo *a = lp_arch_info (c->arch);
  LpModel *m = fw->model;
  /* llama's graph: no q/k/v biases, RoPE's normal mode without scaling
   * (ggml_ops.c restates neither the rest nor head sizes off 16). */
  if (!lp_backend_is_cpu (fw->be) || a->qkv_bias || a->rope_style != LP_ROPE_NORMAL
      || c->rope_scaling != LP_ROPE_SCALING_NONE || lp_model_tensor (m, "rope_freqs.weight") != NULL
      || c->head_dim % 16 != 0 || c->n_heads % c->n_kv_heads != 0)
    return FALSE;
  gint64 D = c->dim, F = c->ffn_dim, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
  for (int l = 0; l < c->n_layers; l++)
    {
      Block b;
      if (!block_of (m, l, &b) || !vector_ok (b.attn_norm, D) || !vector_ok (b.ffn_norm, D)
          || !matrix_ok (b.q, qd, D) || !matrix_ok (b.k, kvd, D) || !matrix_ok (b.v, kvd, D)
          || !matrix_ok (b.o, D, qd) || !matrix_ok (b.gate, F, D) || !matrix_ok (b.up, F, D)
          || !matrix_ok (b.down, D, F))
        return FALSE;
    }
  LpTensor *embd = lp_model_tensor (m, "token_embd.weight");
  return embd != NULL && embd->n_dims == 2 && embd->shape[1] == D && embd->shape[0] == c->n_vocab
         && vector_ok (lp_model_tensor (m, "output_norm.weight"), D) && matrix_ok (head_of (fw), c->n_vocab, D);
}

/* y[T, N] = W x (W as stored). */
static void
mul_mat (const LpTensor *w, const float *x, int T, float *y)
{
  gboolean ok = lp_ggml_mul_mat_q (w->dtype, lp_tensor_data ((LpTensor *) w), (gsize) w->shape[0],
                                   (gsize) w->shape[1], x, (gsize) T, y);
  g_assert (ok); /* lp_ggml_forward_usable checked the types */
}

/* One head's attention, as llm_graph_context::build_attn_mha without flash
 * attention: kq = K q (f16 products), softmax (scaled, causal mask over
 * n_kv cells), kqv = V^T p (f16 products: p rounded to f16). */
typedef struct {
  const float *q16;   /* [T, H, hd] rounded to f16 */
  const float *k16;   /* [T, Hkv, hd] rounded to f16 (the cache) */
  const float *vt16;  /* [Hkv, hd, n_kv]: V transposed, rounded to f16, zero past T */
  const float *mask;  /* [T, n_kv]: 0 where t may see j, -inf elsewhere */
  float *out;         /* [T, H, hd] */
  int T, n_kv, H, Hkv, hd;
  float scale;
} Attention;

static void
attention_heads (gint64 begin, gint64 end, gpointer data)
{
  const Attention *a = data;
  int T = a->T, n_kv = a->n_kv, hd = a->hd, group = a->H / a->Hkv;
  g_autofree float *kq = g_new0 (float, (gsize) T * n_kv);
  g_autofree float *p = g_new (float, (gsize) T * n_kv);
  for (int h = (int) begin; h < end; h++)
    {
      int kh = h / group;
      lp_ggml_mul_mat_f16 (a->k16 + (gsize) kh * hd, (gsize) a->Hkv * hd, (gsize) T, a->q16 + (gsize) h * hd,
                           (gsize) a->H * hd, (gsize) T, (gsize) hd, kq, (gsize) n_kv);
      lp_ggml_soft_max (kq, a->mask, T, p, T, n_kv, a->scale);
      lp_ggml_round_f16 (p, (gsize) T * n_kv);
      lp_ggml_mul_mat_f16 (a->vt16 + (gsize) kh * hd * n_kv, (gsize) n_kv, (gsize) hd, p, (gsize) n_kv, (gsize) T,
                           (gsize) n_kv, a->out + (gsize) h * hd, (gsize) a->H * hd);
    }
}

/* x[T, D] through block `layer` in place. */
static void
block_forward (LpForward *fw, const Block *b, float *x, int T, const gint32 *pos)
{
  const LpModelConfig *c = &fw->c;
  int D = (int) c->dim, F = (int) c->ffn_dim, H = (int) c->n_heads, Hkv = (int) c->n_kv_heads,
      hd = (int) c->head_dim;
  /* llama.cpp's KV cache view is at least 256 cells; any length that is a
   * multiple of 16 and covers T gives its bits (masked cells add zeros to
   * the 16-lane sums), and T rounded up to 16 is the cheapest. */
  int n_kv = (T + 15) / 16 * 16;
  float eps = (float) c->norm_eps;
  g_autofree float *cur = g_new (float, (gsize) T * MAX (D, F));
  g_autofree float *q = g_new (float, (gsize) T * H * hd), *q16 = g_new (float, (gsize) T * H * hd);
  g_autofree float *k = g_new (float, (gsize) T * Hkv * hd), *k16 = g_new (float, (gsize) T * Hkv * hd);
  g_autofree float *v = g_new (float, (gsize) T * Hkv * hd);
  g_autofree float *vt16 = g_new0 (float, (gsize) Hkv * hd * n_kv);
  g_autofree float *mask = g_new (float, (gsize) T * n_kv);
  g_autofree float *att = g_new (float, (gsize) T * H * hd);

  lp_ggml_rms_norm_mul (x, lp_tensor_data (b->attn_norm), cur, T, D, eps);
  mul_mat (b->q, cur, T, q);
  mul_mat (b->k, cur, T, k);
  mul_mat (b->v, cur, T, v);
  lp_ggml_rope (q, q16, pos, T, H, hd, hd, (float) c->rope_theta, 1.0f, 1.0f);
  lp_ggml_rope (k, k16, pos, T, Hkv, hd, hd, (float) c->rope_theta, 1.0f, 1.0f);
  lp_ggml_round_f16 (q16, (gsize) T * H * hd); /* the f16 product's operand */
  lp_ggml_round_f16 (k16, (gsize) T * Hkv * hd); /* the f16 cache */
  lp_ggml_round_f16 (v, (gsize) T * Hkv * hd);
  for (int t = 0; t < T; t++)
    for (int i = 0; i < Hkv * hd; i++)
      vt16[(gsize) i * n_kv + t] = v[(gsize) t * Hkv * hd + i]; /* the cache holds V transposed */
  for (int t = 0; t < T; t++)
    for (int j = 0; j < n_kv; j++)
      mask[(gsize) t * n_kv + j] = j <= t ? 0.0f : -INFINITY;
  Attention a = { q16, k16, vt16, mask, att, T, n_kv, H, Hkv, hd, 1.0f / sqrtf ((float) hd) };
  lp_parallel_for (H, 1, attention_heads, &a);
  mul_mat (b->o, att, T, cur);
  for (gsize i = 0; i < (gsize) T * D; i++)
    x[i] = cur[i] + x[i]; /* ffn_inp = attn_out + inpSA */

  g_autofree float *gate = g_new (float, (gsize) T * F), *up = g_new (float, (gsize) T * F);
  lp_ggml_rms_norm_mul (x, lp_tensor_data (b->ffn_norm), cur, T, D, eps);
  mul_mat (b->up, cur, T, up);
  mul_mat (b->gate, cur, T, gate);
  lp_ggml_swiglu (gate, up, cur, T, F);
  g_autofree float *down = g_new (float, (gsize) T * D);
  mul_mat (b->down, cur, T, down);
  for (gsize i = 0; i < (gsize) T * D; i++)
    x[i] = down[i] + x[i]; /* l_out = ffn_out + ffn_inp */
}

gboolean
lp_ggml_forward_residual (LpForward *fw, const gint32 *tokens, int T, float *x, GError **error)
{
  g_return_val_if_fail (T > 0, FALSE);
  const LpModelConfig *c = &fw->c;
  LpTensor *embd = lp_model_tensor (fw->model, "token_embd.weight");
  guint64 row_bytes;
  if (!lp_dtype_row_bytes (embd->dtype, (guint64) c->dim, &row_bytes, error))
    return FALSE;
  if (!lp_forward_check_tokens (fw, tokens, T, error))
    return FALSE;
  /* get_rows: each row dequantized (ggml's dequantize_row_*) */
  for (int t = 0; t < T; t++)
    if (!lp_dtype_to_f32 (embd->dtype, (const guint8 *) lp_tensor_data (embd) + (gsize) tokens[t] * row_bytes,
                          x + (gsize) t * c->dim, (gsize) c->dim, error))
      return FALSE;
  g_autofree gint32 *pos = g_new (gint32, T);
  for (int t = 0; t < T; t++)
    pos[t] = t;
  for (int l = 0; l < c->n_layers; l++)
    {
      Block b;
      block_of (fw->model, l, &b);
      block_forward (fw, &b, x, T, pos);
    }
  return TRUE;
}

void
lp_ggml_forward_head (LpForward *fw, const float *x, int T, float *logits)
{
  const LpModelConfig *c = &fw->c;
  g_autofree float *norm = g_new (float, (gsize) T * c->dim);
  lp_ggml_rms_norm_mul (x, lp_tensor_data (lp_model_tensor (fw->model, "output_norm.weight")), norm, T,
                        (int) c->dim, (float) c->norm_eps);
  mul_mat (head_of (fw), norm, T, logits);
}
