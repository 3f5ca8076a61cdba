/* llmpress — the CPU backend: OpenBLAS for matrix products, LAPACKE for
 * factorizations, plain loops for the memory-bound element-wise ops.
 * Always present; supports every op; the reference other backends are
 * tested against (after lp_ref_* which defines each op). */
#include "config.h"

#include <math.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>

#include "lp-internal.h"
#include <llmpress/backend.h>

static gboolean
cpu_supports_op (LpBackend *be, LpOp op)
{
  return TRUE;
}

static void
cpu_gemm (LpBackend *be, gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc)
{
  cblas_sgemm (CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
               lda, B, ldb, beta, C, ldc);
}

static void
cpu_syrk (LpBackend *be, int T, int n, const float *X, int ldx, float *H)
{
  /* ssyrk fills one triangle at half the flops of a gemm; mirror it after. */
  cblas_ssyrk (CblasRowMajor, CblasLower, CblasTrans, n, T, 1.0f, X, ldx, 1.0f, H, n);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      H[(gsize) i * n + j] = H[(gsize) j * n + i];
}

static void
cpu_rmsnorm (LpBackend *be, int T, int D, const float *x, const float *w, float eps, float *y)
{
  lp_ref_rmsnorm (T, D, x, w, eps, y);
}

static void
cpu_rope (LpBackend *be, LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, float *x)
{
  lp_ref_rope (style, T, n_heads, hd, pos0, inv_freq, x);
}

/* Attention as two GEMMs per head (scores, then weighted values), so the
 * quadratic part runs at BLAS speed. */
static void
cpu_attention (LpBackend *be, int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k,
               const float *v, float *out)
{
  int group = H / Hkv, past = T_kv - T;
  float scale = 1.0f / sqrtf ((float) hd);
  g_autofree float *s = g_new (float, (gsize) T * T_kv);
  for (int h = 0; h < H; h++)
    {
      int kh = h / group;
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, T_kv, hd, scale, q + (gsize) h * hd, H * hd,
                   k + (gsize) kh * hd, Hkv * hd, 0.0f, s, T_kv);
      for (int t = 0; t < T; t++)
        {
          float *row = s + (gsize) t * T_kv;
          int last = past + t;
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
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T_kv, 1.0f, s, T_kv,
                   v + (gsize) kh * hd, Hkv * hd, 0.0f, out + (gsize) h * hd, H * hd);
    }
}

static void
cpu_swiglu (LpBackend *be, int n, const float *gate, const float *up, float *out)
{
  lp_ref_swiglu (n, gate, up, out);
}

static gboolean
cpu_cholesky (LpBackend *be, int n, float *A, int lda)
{
  if (LAPACKE_spotrf (LAPACK_ROW_MAJOR, 'L', n, A, lda) != 0)
    return FALSE;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      A[(gsize) i * lda + j] = 0.0f;
  return TRUE;
}

static gboolean
cpu_tri_inverse (LpBackend *be, int n, float *L, int lda)
{
  return LAPACKE_strtri (LAPACK_ROW_MAJOR, 'L', 'N', n, L, lda) == 0;
}

/* Rows j0 .. j0 + n - 1 of a weight W[N, K] into out[n, K] as f32. */
typedef void (*DecodeRows) (const void *W, int K, int j0, int n, float *out);

/* C = A W^T + beta C with W decoded a block of rows at a time (about 4 MiB
 * of f32), so a large weight is never whole in f32. */
static void
gemm_decoded (int M, int N, int K, const float *A, int lda, DecodeRows decode, const void *W, float beta, float *C,
              int ldc)
{
  int rows = MAX (1, MIN (N, (int) ((4u << 20) / (sizeof (float) * (gsize) MAX (K, 1)))));
  g_autofree float *w = g_new (float, (gsize) rows * K);
  for (int j0 = 0; j0 < N; j0 += rows)
    {
      int nb = MIN (rows, N - j0);
      decode (W, K, j0, nb, w);
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, nb, K, 1.0f, A, lda, w, K, beta, C + j0, ldc);
    }
}

typedef struct {
  LpDType type;
  const void *data;
} TypedRows;

static void
decode_typed_rows (const void *W, int K, int j0, int n, float *out)
{
  const TypedRows *t = W;
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (t->type, (guint64) K, &row_bytes, NULL));
  g_assert (lp_dtype_to_f32 (t->type, (const guint8 *) t->data + (gsize) j0 * row_bytes, out, (gsize) n * K, NULL));
}

static void
cpu_gemm_w (LpBackend *be, int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W,
            float beta, float *C, int ldc)
{
  if (wtype == LP_DTYPE_F32)
    {
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, W, K, beta, C, ldc);
      return;
    }
  TypedRows t = { wtype, W };
  gemm_decoded (M, N, K, A, lda, decode_typed_rows, &t, beta, C, ldc);
}

static void
decode_grid_rows (const void *W, int K, int j0, int n, float *out)
{
  lp_int_grid_dequantize_rows (W, j0, n, out);
}

static void
cpu_gemm_grid (LpBackend *be, int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C,
               int ldc)
{
  gemm_decoded (M, N, K, A, lda, decode_grid_rows, W, beta, C, ldc);
}

/* int8 values and their partial sums are exact in f32 up to 2^24, which a
 * run of 1024 products of magnitude at most 128^2 reaches: sgemm over
 * 1024-deep slices of K, each slice's (integral) result added in int32. */
#define I8_EXACT_K 1024

static void
cpu_gemm_i8 (LpBackend *be, int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B, int ldb,
             const float *sb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  int kc = MIN (MAX (K, 1), I8_EXACT_K);
  g_autofree float *a = g_new (float, (gsize) M * kc), *b = g_new (float, (gsize) N * kc);
  g_autofree float *part = g_new (float, (gsize) M * N);
  g_autofree gint32 *acc = g_new0 (gint32, (gsize) M * N);
  for (int k0 = 0; k0 < K; k0 += kc)
    {
      int kn = MIN (kc, K - k0);
      for (int i = 0; i < M; i++)
        for (int k = 0; k < kn; k++)
          a[(gsize) i * kc + k] = A[(gsize) i * lda + k0 + k];
      for (int j = 0; j < N; j++)
        for (int k = 0; k < kn; k++)
          b[(gsize) j * kc + k] = B[(gsize) j * ldb + k0 + k];
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, kn, 1.0f, a, kc, b, kc, 0.0f, part, N);
      for (gsize e = 0; e < (gsize) M * N; e++)
        acc[e] += (gint32) part[e];
    }
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++)
      {
        float v = (float) acc[(gsize) i * N + j] * (sa[i] * sb[j]);
        float *c = &C[(gsize) i * ldc + j];
        *c = beta != 0.0f ? v + beta * *c : v;
      }
}

static gboolean
cpu_dequantize (LpBackend *be, LpDType type, const void *src, gsize n, float *dst)
{
  return lp_dtype_to_f32 (type, src, dst, n, NULL);
}

static void
cpu_quantize_groups (LpBackend *be, int rows, int cols, const float *W, int ldw, const float *imp,
                     const LpGroupQuant *q, guint8 *codes, guint16 *scales, guint8 *zeros)
{
  lp_ref_quantize_groups (rows, cols, W, ldw, imp, q, codes, scales, zeros);
}

static void
cpu_destroy (LpBackend *be)
{
  g_free (be);
}

static const LpBackendOps cpu_ops = {
  .api_version = LP_BACKEND_API_VERSION,
  .name = "cpu",
  .supports_op = cpu_supports_op,
  .gemm = cpu_gemm,
  .syrk = cpu_syrk,
  .rmsnorm = cpu_rmsnorm,
  .rope = cpu_rope,
  .attention = cpu_attention,
  .swiglu = cpu_swiglu,
  .cholesky = cpu_cholesky,
  .gemm_w = cpu_gemm_w,
  .dequantize = cpu_dequantize,
  .tri_inverse = cpu_tri_inverse,
  .quantize_groups = cpu_quantize_groups,
  .gemm_i8 = cpu_gemm_i8,
  .gemm_grid = cpu_gemm_grid,
  .destroy = cpu_destroy,
};

LpBackend *
lp_backend_cpu_new (void)
{
  LpBackend *be = g_new0 (LpBackend, 1);
  be->ops = &cpu_ops;
  be->ref_count = 1;
  be->device_name = g_strdup_printf ("cpu (OpenBLAS %s, %d threads)", openblas_get_corename (),
                                     openblas_get_num_threads ());
  be->numeric_class = g_strdup ("cpu-f32");
  return be;
}

gboolean
lp_cpu_blas_threads_init (int n)
{
  static gint chosen;
  g_return_val_if_fail (n > 0, FALSE);
  if (!g_atomic_int_compare_and_exchange (&chosen, 0, 1))
    return FALSE;
  openblas_set_num_threads (n);
  return TRUE;
}

int
lp_cpu_blas_threads (void)
{
  return openblas_get_num_threads ();
}
