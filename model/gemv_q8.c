/* llmpress — matrix products with the activations rounded to 8 bits, as
 * llama.cpp's CPU backend computes them: C[M, N] = q8(A)[M, K] W[N, K]^T +
 * beta C, W a block type (Q8_0, Q4_0, Q4_1) read as stored.
 *
 * Decoding one token reads every weight once, and with f32 activations
 * each 4-bit code must be widened to a float and multiplied in floats (a
 * dozen instructions for 8 codes).  ggml instead rounds the activation row
 * to 8-bit blocks once (its "vec_dot type": Q8_0 for Q8_0 and Q4_0 weights,
 * Q8_1 for Q4_1) and multiplies bytes with bytes: per block of 32, one
 * integer dot product sumi, then d_w d_x sumi (+ m_w s_x for Q4_1, s_x the
 * block's stored sum).  This file computes that definition: the plain C
 * row kernel is the reference (and what runs without AVX2), the AVX2 one
 * (maddubs) is chosen at run time.  Both sum in ggml's order and give the
 * same bits.
 *
 * The rounding is forward_ggml.c's (lp_q8_block_quantize), so eval
 * --llama-cpp and these kernels agree on what ggml does. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/backend.h>

#include "compute-internal.h"
#include "dtype-blocks.h"

#include "gemv-x86.h"

enum { QK = 32, MAX_M = LP_GEMV_MAX_ROWS };

void
lp_q8_block_quantize (const float *x, LpQ8Block *out)
{
  float amax = 0.0f;
  for (int i = 0; i < QK; i++)
    amax = MAX (amax, fabsf (x[i]));
  /* d stays f32 for the division and the stored sum, f16 where stored. */
  float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
  int sum = 0;
  for (int i = 0; i < QK; i++)
    {
      out->q[i] = (gint8) nearbyintf (x[i] * id);
      sum += out->q[i];
    }
  out->d = lp_f16_to_f32 (lp_f32_to_f16 (d));
  out->s = lp_f16_to_f32 (lp_f32_to_f16 (d * (float) sum));
  out->isum = sum;
}

/* One call's operands: rows m0 .. m0 + M - 1 of the rounded activations. */
typedef struct {
  int M, N, nb;
  const LpQ8Block *X; /* [M, nb] */
  LpDType wtype;
  const guint8 *W;
  gsize row_bytes;
  float beta;
  float *C;
  int ldc;
  gboolean ref;
} GemvQ8;

/* out[m] = row . X[m] for m < M. */
typedef void (*RowDotQ8) (const GemvQ8 *g, const guint8 *row, float *out);

/* ---- plain C: the definition ----
 * In ggml's order: per block, the integer products summed in 8 lanes of 4
 * consecutive values (what maddubs and madd give), each lane converted to
 * float and fused-multiply-added by d_w d_x (an f32 product) into 8 float
 * lanes; Q4_1's m_w s_x fused into a scalar; at the end the lanes summed
 * as ggml's hsum_float_8, then the scalar added.  These are the bits of
 * ggml_vec_dot_q4_1_q8_1 and of tinyBLAS's Q8_0 kernel (ggml_matmul.c,
 * test-eval), and the AVX2 kernel below sums the same way. */

enum { LANES = 8 };

/* Value i of a block's codes (Q4_*: the low nibbles are values 0-15, the
 * high ones 16-31; Q4_0's less 8). */
static inline int
block_code (LpDType type, const guint8 *blk, int i)
{
  if (type == LP_DTYPE_Q8_0)
    return (gint8) blk[2 + i];
  const guint8 *q = blk + (type == LP_DTYPE_Q4_1 ? 4 : 2);
  int code = i < 16 ? q[i] & 15 : q[i - 16] >> 4;
  return type == LP_DTYPE_Q4_0 ? code - 8 : code;
}

/* The 8 lanes summed as ggml's hsum_float_8 (lp_x86_hsum): the high half
 * onto the low, then the high pair onto the low pair, then the two left. */
static float
hsum8 (const float *l)
{
  float a[4];
  for (int i = 0; i < 4; i++)
    a[i] = l[i] + l[i + 4];
  return (a[0] + a[2]) + (a[1] + a[3]);
}

static void
row_q8_ref (const GemvQ8 *g, const guint8 *row, float *out)
{
  gsize block_bytes = g->row_bytes / (gsize) g->nb;
  for (int m = 0; m < g->M; m++)
    {
      const LpQ8Block *x = g->X + (gsize) m * g->nb;
      float lane[LANES] = { 0 }, mins = 0.0f;
      for (int b = 0; b < g->nb; b++)
        {
          const guint8 *blk = row + (gsize) b * block_bytes;
          float d = lp_qread_f16 (blk) * x[b].d;
          for (int j = 0; j < LANES; j++)
            {
              int sumi = 0;
              for (int i = 4 * j; i < 4 * j + 4; i++)
                sumi += block_code (g->wtype, blk, i) * x[b].q[i];
              lane[j] = fmaf (d, (float) sumi, lane[j]);
            }
          if (g->wtype == LP_DTYPE_Q4_1)
            mins = fmaf (lp_qread_f16 (blk + 2), x[b].s, mins);
        }
      out[m] = hsum8 (lane) + mins;
    }
}

/* ---- AVX2 ---- */

#ifdef LP_GEMV_X86
/* A block's 32 weight codes as signed bytes in element order (Q4_*: the
 * low nibbles are elements 0-15, the high ones 16-31; Q4_0's less 8). */
X86_INLINE __m256i
codes (LpDType type, const guint8 *blk)
{
  if (type == LP_DTYPE_Q8_0)
    return _mm256_loadu_si256 ((const __m256i *) (blk + 2));
  __m128i raw = _mm_loadu_si128 ((const __m128i *) (blk + (type == LP_DTYPE_Q4_1 ? 4 : 2)));
  __m256i both = _mm256_inserti128_si256 (_mm256_castsi128_si256 (raw), _mm_srli_epi16 (raw, 4), 1);
  __m256i q = _mm256_and_si256 (both, _mm256_set1_epi8 (0x0f));
  return type == LP_DTYPE_Q4_0 ? _mm256_sub_epi8 (q, _mm256_set1_epi8 (8)) : q;
}

/* The 32 products w x of a block, summed into 8 int32 lanes as floats.
 * maddubs multiplies unsigned by signed bytes: Q4_1's codes are unsigned
 * already; signed codes move their sign onto x.  No pair overflows int16:
 * |w| <= 128, |x| <= 127. */
X86_INLINE __m256
block_dot (LpDType type, __m256i w, const gint8 *xq)
{
  __m256i x = _mm256_loadu_si256 ((const __m256i *) xq);
  __m256i p16 = type == LP_DTYPE_Q4_1 ? _mm256_maddubs_epi16 (w, x)
                                      : _mm256_maddubs_epi16 (_mm256_abs_epi8 (w), _mm256_sign_epi8 (x, w));
  return _mm256_cvtepi32_ps (_mm256_madd_epi16 (p16, _mm256_set1_epi16 (1)));
}

/* One row of W against the M rows of X: per row, the blocks' d_w d_x sumi
 * in 8 float lanes and the minima's m_w s_x in a scalar, each fused as
 * ggml's vec_dot_q4_1_q8_1 and tinyBLAS's Q8_0 kernel fuse them: the same
 * bits as llama.cpp (ggml_matmul.c, whose plain C restatement tests this). */
X86_INLINE void
row_q8_x86 (const GemvQ8 *g, const guint8 *row, float *out, const LpDType type)
{
  gsize size = type == LP_DTYPE_Q8_0 ? 34 : type == LP_DTYPE_Q4_1 ? 20 : 18;
  if (g->M == 1)
    {
      /* Decoding: the sums in registers, one chain in block order: the
       * order of ggml's AVX2 vec_dot kernels, so the same sums as llama.cpp
       * (greedy decoding then follows its text through near-ties). */
      __m256 acc = _mm256_setzero_ps ();
      float mins = 0.0f;
      const LpQ8Block *x = g->X;
      for (int b = 0; b < g->nb; b++)
        {
          const guint8 *blk = row + (gsize) b * size;
          acc = _mm256_fmadd_ps (_mm256_set1_ps (lp_x86_f16 (blk) * x[b].d), block_dot (type, codes (type, blk), x[b].q),
                                 acc);
          if (type == LP_DTYPE_Q4_1)
            mins = fmaf (lp_x86_f16 (blk + 2), x[b].s, mins);
        }
      out[0] = lp_x86_hsum (acc) + mins;
      return;
    }
  __m256 acc[MAX_M];
  float mins[MAX_M] = { 0 };
  for (int m = 0; m < g->M; m++)
    acc[m] = _mm256_setzero_ps ();
  for (int b = 0; b < g->nb; b++)
    {
      const guint8 *blk = row + (gsize) b * size;
      __m256i w = codes (type, blk);
      float d = lp_x86_f16 (blk), mn = type == LP_DTYPE_Q4_1 ? lp_x86_f16 (blk + 2) : 0.0f;
      for (int m = 0; m < g->M; m++)
        {
          const LpQ8Block *x = g->X + (gsize) m * g->nb + b;
          acc[m] = _mm256_fmadd_ps (_mm256_set1_ps (d * x->d), block_dot (type, w, x->q), acc[m]);
          if (type == LP_DTYPE_Q4_1)
            mins[m] = fmaf (mn, x->s, mins[m]);
        }
    }
  for (int m = 0; m < g->M; m++)
    out[m] = lp_x86_hsum (acc[m]) + mins[m];
}

/* The kernel of W's type (a switch a row: always the same branch). */
X86_TARGET static void
row_x86 (const GemvQ8 *g, const guint8 *row, float *out)
{
  switch (g->wtype)
    {
    case LP_DTYPE_Q8_0:
      row_q8_x86 (g, row, out, LP_DTYPE_Q8_0);
      break;
    case LP_DTYPE_Q4_0:
      row_q8_x86 (g, row, out, LP_DTYPE_Q4_0);
      break;
    default:
      row_q8_x86 (g, row, out, LP_DTYPE_Q4_1);
    }
}
#endif

static RowDotQ8
row_dot (gboolean ref)
{
#ifdef LP_GEMV_X86
  if (!ref && lp_cpu_have_avx2 ())
    return row_x86;
#endif
  return row_q8_ref;
}

/* Rows j0 .. j1 - 1 of W. */
static void
q8_rows (void *data, int j0, int j1)
{
  const GemvQ8 *g = data;
  RowDotQ8 dot = row_dot (g->ref);
  float out[MAX_M];
  for (int j = j0; j < j1; j++)
    {
      dot (g, g->W + (gsize) j * g->row_bytes, out);
      lp_cpu_gemv_store (g->C, g->ldc, j, g->M, out, g->beta);
    }
}

gboolean
lp_cpu_gemm_q8_supports (int K, LpDType wtype)
{
  return (wtype == LP_DTYPE_Q8_0 || wtype == LP_DTYPE_Q4_0 || wtype == LP_DTYPE_Q4_1) && K > 0 && K % QK == 0;
}

/* The product: A rounded once, then W's rows against LP_GEMV_MAX_ROWS rows
 * of it at a time (each row of W read once per group), over the worker
 * threads or (ref) in the caller's thread. */
static void
gemm_q8_run (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
             int ldc, gboolean ref)
{
  g_assert (lp_cpu_gemm_q8_supports (K, wtype));
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (wtype, (guint64) K, &row_bytes, NULL));
  int nb = K / QK;
  g_autofree LpQ8Block *X = g_new (LpQ8Block, (gsize) M * nb);
  for (int m = 0; m < M; m++)
    for (int b = 0; b < nb; b++)
      lp_q8_block_quantize (A + (gsize) m * lda + (gsize) b * QK, &X[(gsize) m * nb + b]);
  for (int m0 = 0; m0 < M; m0 += MAX_M)
    {
      GemvQ8 g = { MIN (MAX_M, M - m0), N, nb, X + (gsize) m0 * nb, wtype, W, (gsize) row_bytes, beta,
                   C + (gsize) m0 * ldc, ldc, ref };
      lp_cpu_gemv_split (N, K, q8_rows, &g, ref);
    }
}

void
lp_cpu_gemm_q8 (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
                int ldc)
{
  gemm_q8_run (M, N, K, A, lda, wtype, W, beta, C, ldc, FALSE);
}

void
lp_cpu_gemm_q8_ref (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
                    int ldc)
{
  gemm_q8_run (M, N, K, A, lda, wtype, W, beta, C, ldc, TRUE);
}
