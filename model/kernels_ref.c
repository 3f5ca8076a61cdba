/* llmpress — plain C reference kernels: the definition of every backend op.
 * Slow and obvious on purpose; optimised and device kernels are tested
 * against these. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/backend.h>

void
lp_ref_gemm (gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++)
      {
        double acc = 0.0;
        for (int k = 0; k < K; k++)
          acc += (double) A[(gsize) i * lda + k] * (trans_b ? B[(gsize) j * ldb + k] : B[(gsize) k * ldb + j]);
        float *c = &C[(gsize) i * ldc + j];
        *c = (float) (alpha * acc + (beta == 0.0f ? 0.0 : beta * (double) *c));
      }
}

void
lp_ref_syrk (int T, int n, const float *X, int ldx, float *H)
{
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        double acc = 0.0;
        for (int t = 0; t < T; t++)
          acc += (double) X[(gsize) t * ldx + i] * X[(gsize) t * ldx + j];
        H[(gsize) i * n + j] += (float) acc;
      }
}

void
lp_ref_rmsnorm (int T, int D, const float *x, const float *w, float eps, float *y)
{
  for (int t = 0; t < T; t++)
    {
      const float *xr = x + (gsize) t * D;
      float *yr = y + (gsize) t * D;
      double ss = 0.0;
      for (int d = 0; d < D; d++)
        ss += (double) xr[d] * xr[d];
      float scale = (float) (1.0 / sqrt (ss / D + eps));
      for (int d = 0; d < D; d++)
        yr[d] = xr[d] * scale * w[d];
    }
}

void
lp_ref_rope (LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, float *x)
{
  int half = hd / 2;
  /* a position's cosines and sines, the same for each of its heads */
  g_autofree float *cs = g_new (float, 2 * (gsize) half);
  for (int t = 0; t < T; t++)
    {
      for (int i = 0; i < half; i++)
        {
          double angle = (double) (pos0 + t) * inv_freq[i];
          cs[2 * i] = (float) cos (angle);
          cs[2 * i + 1] = (float) sin (angle);
        }
      for (int h = 0; h < n_heads; h++)
        {
          float *v = x + ((gsize) t * n_heads + h) * hd;
          for (int i = 0; i < half; i++)
            {
              float c = cs[2 * i], s = cs[2 * i + 1];
              /* NORMAL rotates neighbours (2i, 2i+1); NEOX rotates (i, i+hd/2). */
              int a = style == LP_ROPE_NORMAL ? 2 * i : i;
              int b = style == LP_ROPE_NORMAL ? 2 * i + 1 : i + half;
              float x0 = v[a], x1 = v[b];
              v[a] = x0 * c - x1 * s;
              v[b] = x0 * s + x1 * c;
            }
        }
    }
}

void
lp_ref_attention (int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k,
                  const float *v, float *out)
{
  int group = H / Hkv;
  int past = T_kv - T;
  double scale = 1.0 / sqrt ((double) hd);
  g_autofree double *p = g_new (double, T_kv);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      {
        const float *qr = q + ((gsize) t * H + h) * hd;
        int kh = h / group;
        int last = past + t; /* causal: keys 0..last */
        double mx = -INFINITY;
        for (int s = 0; s <= last; s++)
          {
            const float *kr = k + ((gsize) s * Hkv + kh) * hd;
            double dot = 0.0;
            for (int d = 0; d < hd; d++)
              dot += (double) qr[d] * kr[d];
            p[s] = dot * scale;
            mx = MAX (mx, p[s]);
          }
        double sum = 0.0;
        for (int s = 0; s <= last; s++)
          sum += (p[s] = exp (p[s] - mx));
        float *o = out + ((gsize) t * H + h) * hd;
        for (int d = 0; d < hd; d++)
          {
            double acc = 0.0;
            for (int s = 0; s <= last; s++)
              acc += p[s] * v[((gsize) s * Hkv + kh) * hd + d];
            o[d] = (float) (acc / sum);
          }
      }
}

void
lp_ref_swiglu (int n, const float *gate, const float *up, float *out)
{
  for (int i = 0; i < n; i++)
    {
      float g = gate[i];
      out[i] = g / (1.0f + expf (-g)) * up[i];
    }
}

gboolean
lp_ref_cholesky (int n, float *A, int lda)
{
  for (int j = 0; j < n; j++)
    {
      double d = A[(gsize) j * lda + j];
      for (int k = 0; k < j; k++)
        d -= (double) A[(gsize) j * lda + k] * A[(gsize) j * lda + k];
      if (!(d > 0.0))
        return FALSE;
      double l = sqrt (d);
      A[(gsize) j * lda + j] = (float) l;
      for (int i = j + 1; i < n; i++)
        {
          double s = A[(gsize) i * lda + j];
          for (int k = 0; k < j; k++)
            s -= (double) A[(gsize) i * lda + k] * A[(gsize) j * lda + k];
          A[(gsize) i * lda + j] = (float) (s / l);
        }
      for (int i = 0; i < j; i++)
        A[(gsize) i * lda + j] = 0.0f; /* upper triangle cleared: a proper L */
    }
  return TRUE;
}

/* Column by column: L X = I, so column j of X solves a lower system by
 * forward substitution, starting at row j (X is lower triangular too). */
gboolean
lp_ref_tri_inverse (int n, float *L, int lda)
{
  g_autofree double *X = g_new0 (double, (gsize) n * n);
  for (int i = 0; i < n; i++)
    if (L[(gsize) i * lda + i] == 0.0f)
      return FALSE;
  for (int j = 0; j < n; j++)
    for (int i = j; i < n; i++)
      {
        double s = i == j ? 1.0 : 0.0;
        for (int k = j; k < i; k++)
          s -= (double) L[(gsize) i * lda + k] * X[(gsize) k * n + j];
        X[(gsize) i * n + j] = s / L[(gsize) i * lda + i];
      }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      L[(gsize) i * lda + j] = (float) X[(gsize) i * n + j];
  return TRUE;
}

void
lp_ref_gemm_w (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
               int ldc)
{
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (wtype, (guint64) K, &row_bytes, NULL));
  g_autofree float *w = g_new (float, K);
  for (int j = 0; j < N; j++)
    {
      g_assert (lp_dtype_to_f32 (wtype, (const guint8 *) W + (gsize) j * row_bytes, w, K, NULL));
      for (int i = 0; i < M; i++)
        {
          double acc = 0.0;
          for (int k = 0; k < K; k++)
            acc += (double) A[(gsize) i * lda + k] * w[k];
          float *c = &C[(gsize) i * ldc + j];
          *c = (float) (acc + (beta == 0.0f ? 0.0 : beta * (double) *c));
        }
    }
}

/* The weights whole in f32: the definition, not a way to run it (the
 * backends decode a few rows at a time). */
void
lp_ref_gemm_grid (int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C, int ldc)
{
  g_assert (W->rows == N && W->cols == K);
  g_autofree float *w = g_new (float, (gsize) N * K);
  lp_int_grid_dequantize (W, w);
  lp_ref_gemm (TRUE, M, N, K, 1.0f, A, lda, w, K, beta, C, ldc);
}

void
lp_ref_gemm_i8 (int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B, int ldb,
                const float *sb, float beta, float *C, int ldc)
{
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++)
      {
        gint32 acc = 0;
        for (int k = 0; k < K; k++)
          acc += (gint32) A[(gsize) i * lda + k] * B[(gsize) j * ldb + k];
        /* beta = 0 ignores C (it may hold anything, NaN included). */
        float v = (float) acc * (sa[i] * sb[j]);
        float *c = &C[(gsize) i * ldc + j];
        *c = beta != 0.0f ? v + beta * *c : v;
      }
}
