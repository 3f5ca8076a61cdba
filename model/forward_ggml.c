/* llmpress — ggml's CPU roundings, for eval --llama-cpp (lp_forward_set_llama_cpp).
 *
 * llama.cpp's CPU backend does not multiply f32 activations with a
 * quantized weight: ggml_mul_mat first converts the activation rows to the
 * weight type's "vec_dot type" and multiplies integers (or halves) with
 * integers.  Its KV cache holds f16, and each f16 matmul (K Q^T, then the
 * probabilities times V) converts its f32 operand to f16 too.  These
 * functions round f32 values in place the way those conversions do, so the
 * forward pass, fed the rounded values, computes what ggml computes up to
 * summation order.  They restate ggml-cpu's x86 (AVX2) quantize_row_q8_0,
 * quantize_row_q8_1 and quantize_row_q8_K: the scale d = amax / 127 is kept
 * in f32 for the division (as the multiplier 127 / amax) and stored in f16
 * (Q8_0, Q8_1) or f32 (Q8_K); quants round half to even. */
#include "config.h"

#include <math.h>
#include <cblas.h>

#include "compute-internal.h"
#include "dtype-blocks.h"
#include "forward-internal.h"

/* One block of 32 values as Q8_0 / Q8_1 (the same quants); returns what
 * Q8_1 stores beside them, s = f16 (d * sum (q)) with d in f32, less what
 * the rounded values sum to, f16 (d) * sum (q): a Q4_1 / Q5_1 dot product
 * multiplies s by the weight block's minimum. */
static float
round_block_q8 (float *x)
{
  LpQ8Block b;
  lp_q8_block_quantize (x, &b);
  for (int i = 0; i < 32; i++)
    x[i] = b.d * b.q[i];
  return b.s - b.d * (float) b.isum;
}

/* One super-block of 256 values as Q8_K (quantize_row_q8_K_ref): the scale
 * from the value of largest magnitude with its sign, d in f32. */
static void
round_block_q8_k (float *x)
{
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < QK_K; i++)
    if (fabsf (x[i]) > amax)
      {
        amax = fabsf (x[i]);
        max = x[i];
      }
  if (amax == 0.0f)
    return;
  float iscale = -127.0f / max;
  float d = 1.0f / iscale;
  for (int i = 0; i < QK_K; i++)
    x[i] = d * MIN (127.0f, nearbyintf (iscale * x[i]));
}

void
lp_ggml_round_f16 (float *x, gsize n)
{
  for (gsize i = 0; i < n; i++)
    x[i] = lp_f16_to_f32 (lp_f32_to_f16 (x[i]));
}

static void
round_bf16 (float *x, gsize n)
{
  for (gsize i = 0; i < n; i++)
    x[i] = lp_bf16_to_f32 (lp_f32_to_bf16 (x[i]));
}

gboolean
lp_ggml_round_rows (LpDType weight, float *x, gsize T, gsize K, float *s_err)
{
  int block;
  switch (weight)
    {
    case LP_DTYPE_F16:
      lp_ggml_round_f16 (x, T * K);
      return TRUE;
    case LP_DTYPE_BF16:
      round_bf16 (x, T * K);
      return TRUE;
    case LP_DTYPE_Q4_0: case LP_DTYPE_Q4_1: case LP_DTYPE_Q5_0: case LP_DTYPE_Q5_1: case LP_DTYPE_Q8_0:
      block = 32;
      break;
    case LP_DTYPE_Q2_K: case LP_DTYPE_Q3_K: case LP_DTYPE_Q4_K: case LP_DTYPE_Q5_K: case LP_DTYPE_Q6_K:
      block = QK_K;
      break;
    default:
      return FALSE; /* f32: multiplied as is */
    }
  if (K % block != 0)
    return FALSE;
  for (gsize b = 0; b < T * K / block; b++)
    if (block == QK_K)
      round_block_q8_k (x + b * block);
    else
      {
        float e = round_block_q8 (x + b * block);
        if (s_err != NULL)
          s_err[b] = e;
      }
  return TRUE;
}

gboolean
lp_ggml_min_correction (LpDType weight, const void *w, gsize N, gsize K, const float *s_err, gsize T, float *out)
{
  /* A block starts with its f16 scale and f16 minimum (block_q4_1, block_q5_1). */
  gsize block_bytes = weight == LP_DTYPE_Q4_1 ? 20 : weight == LP_DTYPE_Q5_1 ? 24 : 0;
  if (block_bytes == 0 || K % 32 != 0)
    return FALSE;
  gsize nb = K / 32;
  g_autofree float *m = g_new (float, N * nb);
  const guint8 *p = w;
  for (gsize i = 0; i < N * nb; i++)
    m[i] = lp_f16_to_f32 (lp_qread_u16 (p + i * block_bytes + 2));
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (int) T, (int) N, (int) nb, 1.0f, s_err, (int) nb, m,
               (int) nb, 0.0f, out, (int) N);
  return TRUE;
}

/* lp_cpu_softmax_causal_row with libm's expf, summed in order: this mode's
 * numerics as they were validated against llama.cpp. */
static void
softmax_causal_row (float *row, int last, int T_kv)
{
  float mx = -INFINITY;
  for (int j = 0; j <= last; j++)
    mx = MAX (mx, row[j]);
  float sum = 0.0f;
  for (int j = 0; j <= last; j++)
    sum += (row[j] = expf (row[j] - mx));
  float inv = 1.0f / sum;
  for (int j = 0; j <= last; j++)
    row[j] *= inv;
  for (int j = last + 1; j < T_kv; j++)
    row[j] = 0.0f;
}

/* llama.cpp's attention without flash attention: KQ = K Q^T (an f16 matmul:
 * q rounded to f16; k comes from the f16 cache), softmax (f32, scaled,
 * causal mask), then KQV = V KQ (f16 again: the probabilities rounded to
 * f16).  Each product sums in f32. */
void
lp_ggml_attention (const float *q, const float *k, const float *v, float *dst, int T, int T_kv, int H, int Hkv,
                   int hd)
{
  int group = H / Hkv, past = T_kv - T;
  float scale = 1.0f / sqrtf ((float) hd);
  g_autofree float *q16 = g_memdup2 (q, sizeof (float) * T * H * hd);
  lp_ggml_round_f16 (q16, (gsize) T * H * hd);
  g_autofree float *s = g_new (float, (gsize) T * T_kv);
  for (int h = 0; h < H; h++)
    {
      int kh = h / group;
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, T_kv, hd, scale, q16 + (gsize) h * hd, H * hd,
                   k + (gsize) kh * hd, Hkv * hd, 0.0f, s, T_kv);
      for (int t = 0; t < T; t++)
        softmax_causal_row (s + (gsize) t * T_kv, past + t, T_kv);
      lp_ggml_round_f16 (s, (gsize) T * T_kv);
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T_kv, 1.0f, s, T_kv, v + (gsize) kh * hd,
                   Hkv * hd, 0.0f, dst + (gsize) h * hd, H * hd);
    }
}
