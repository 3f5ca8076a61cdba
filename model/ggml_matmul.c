/* llmpress — ggml's CPU matrix products restated bit for bit, for eval
 * --llama-cpp.
 *
 * forward_ggml.c rounds the operands as ggml does; these functions also
 * sum as ggml does, so that, fed the same inputs, they give the same bits
 * as llama-cpp-python 0.3.36's libggml-cpu.so (x86-64, AVX-512 machine).
 * What that build runs (gdb breakpoints while it evaluates SmolLM2, and
 * its disassembly):
 *   - Q4_1 weights: ggml_vec_dot_q4_1_q8_1 per output (tinyBLAS has no
 *     Q4_1 kernel, the tiled path takes K-quants only, the repack buffer
 *     holds no Q4_1).  Per block of 32: an integer dot product in 8 lanes
 *     of 4 bytes (vpdpbusd on a ymm register), converted to float and
 *     fused-multiply-added, times f16(d_w) f16(d_x) (an f32 product), into
 *     8 f32 lanes; the block's f16(m_w) f16(s_x) fused-multiply-added into
 *     one scalar; at the end the 8 lanes summed as ggml's hsum_float_8,
 *     then the scalar added: gemv_q8.c's order (lp_cpu_gemm_q8, and its
 *     plain C reference lp_cpu_gemm_q8_ref).
 *   - Q8_0 weights (the tied head): llamafile_sgemm's tinyBLAS_Q0_AVX on
 *     Q8_0 activations: the same 8 lanes of 4 bytes, the same fused
 *     multiply-add by f16(d_w) f16(d_x), the same horizontal sum.
 *   - f16 (attention, f16 KV cache): llamafile_sgemm's tinyBLAS with
 *     16-float (zmm) vectors, both operands f16: lane l sums, fused, the
 *     products k = l mod 16 in order of k; the 16 lanes reduced as
 *     _mm512_reduce_add_ps does (lp_ggml_reduce16, ggml_ops.c).  K must be a multiple of
 *     16 (else ggml falls back to ggml_vec_dot_f16, not restated here).
 *     A product of two f16 values is exact in f32, so fused or not gives
 *     the same bits; and a zero product (a masked probability, a cache row
 *     never written) leaves a lane as it was, so summing K' < K values,
 *     K' a multiple of 16 covering the nonzero ones, gives them too.
 *     No flash attention (llama-cpp-python's flash_attn defaults to off):
 *     kq = K Q^T over the cache's rows, n_ctx rounded up to 256 (n_ctx 32:
 *     256 rows; 512: 512), K = head dim; kqv = V^T P with V cached
 *     transposed, K = those rows.
 * The results do not depend on ggml's threads: each output is one thread's
 * whole sum.
 * The f16 products: scalar C with arrays of partial sums and fmaf where
 * the build fuses, and an AVX2 kernel giving the same bits (test-gemv). */
#include "config.h"

#include <math.h>

#include <llmpress/threads.h>

#include "compute-internal.h"
#include "forward-internal.h"
#include "gemv-x86.h"

enum { QK = 32, LANES16 = 16 };

/* ggml multiplies Q4_1 and Q8_0 weights (the types restated here) as
 * gemv_q8.c does. */
static gboolean
restated (LpDType wtype, gsize K)
{
  return (wtype == LP_DTYPE_Q4_1 || wtype == LP_DTYPE_Q8_0) && K % QK == 0;
}

gboolean
lp_ggml_mul_mat_q_ref (LpDType wtype, const void *w, gsize N, gsize K, const float *x, gsize T, float *y)
{
  if (!restated (wtype, K))
    return FALSE;
  lp_cpu_gemm_q8_ref ((int) T, (int) N, (int) K, x, (int) K, wtype, w, 0.0f, y, (int) N);
  return TRUE;
}

gboolean
lp_ggml_mul_mat_q (LpDType wtype, const void *w, gsize N, gsize K, const float *x, gsize T, float *y)
{
  if (!restated (wtype, K))
    return FALSE;
  lp_cpu_gemm_q8 ((int) T, (int) N, (int) K, x, (int) K, wtype, w, 0.0f, y, (int) N);
  return TRUE;
}

/* a[K] . b[K] as tinyBLAS sums f16 operands in zmm registers. */
static float
dot_f16 (const float *a, const float *b, gsize K)
{
  float lane[LANES16] = { 0 };
  for (gsize k = 0; k < K; k += LANES16)
    for (int l = 0; l < LANES16; l++)
      lane[l] = fmaf (a[k + l], b[k + l], lane[l]);
  return lp_ggml_reduce16 (lane);
}

#ifdef LP_GEMV_X86
/* The same with the 16 lanes in two ymm registers (lanes 0-7, 8-15):
 * lp_ggml_reduce16 is then lp_x86_hsum of their sum. */
X86_TARGET static float
dot_f16_x86 (const float *a, const float *b, gsize K)
{
  __m256 lo = _mm256_setzero_ps (), hi = _mm256_setzero_ps ();
  for (gsize k = 0; k < K; k += LANES16)
    {
      lo = _mm256_fmadd_ps (_mm256_loadu_ps (a + k), _mm256_loadu_ps (b + k), lo);
      hi = _mm256_fmadd_ps (_mm256_loadu_ps (a + k + 8), _mm256_loadu_ps (b + k + 8), hi);
    }
  return lp_x86_hsum (_mm256_add_ps (hi, lo));
}
#endif

typedef float (*DotF16) (const float *a, const float *b, gsize K);

typedef struct {
  const float *a, *b;
  float *c;
  gsize lda, ldb, ldc, T, K;
  DotF16 dot;
} MulMatF16;

static void
mul_mat_f16_rows (gint64 n0, gint64 n1, gpointer data)
{
  const MulMatF16 *m = data;
  for (gint64 n = n0; n < n1; n++)
    for (gsize t = 0; t < m->T; t++)
      m->c[t * m->ldc + n] = m->dot (m->a + n * m->lda, m->b + t * m->ldb, m->K);
}

static gboolean
mul_mat_f16 (const float *a, gsize lda, gsize N, const float *b, gsize ldb, gsize T, gsize K, float *c, gsize ldc,
             gboolean ref)
{
  if (K % LANES16 != 0)
    return FALSE;
  MulMatF16 m = { a, b, c, lda, ldb, ldc, T, K, dot_f16 };
#ifdef LP_GEMV_X86
  if (!ref && lp_cpu_have_avx2 ())
    m.dot = dot_f16_x86;
#endif
  lp_parallel_for ((gint64) N, 16, mul_mat_f16_rows, &m);
  return TRUE;
}

gboolean
lp_ggml_mul_mat_f16 (const float *a, gsize lda, gsize N, const float *b, gsize ldb, gsize T, gsize K, float *c,
                     gsize ldc)
{
  return mul_mat_f16 (a, lda, N, b, ldb, T, K, c, ldc, FALSE);
}

gboolean
lp_ggml_mul_mat_f16_ref (const float *a, gsize lda, gsize N, const float *b, gsize ldb, gsize T, gsize K, float *c,
                         gsize ldc)
{
  return mul_mat_f16 (a, lda, N, b, ldb, T, K, c, ldc, TRUE);
}
