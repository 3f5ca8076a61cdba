/* llmpress — matrix products for a few rows of activations (decoding one
 * token at a time, small batches): C[M, N] = A[M, K] W[N, K]^T + beta C with
 * W read as stored (f32, f16, Q8_0, Q4_0, Q4_1), never decoded to f32 in
 * memory.
 *
 * For M = 1 a GEMM's packing and its threads' hand-off cost more than the
 * product, and decoding a quantized W to f32 first moves 4-8 times the bytes
 * of W: a step is bound by reading W once, so each row of W is read once
 * and dotted with the M rows of A while its block is in registers.  The
 * rows of W are split over the threads (lp_parallel_for).
 *
 * Each block type has two row kernels: a plain C one (the reference, and
 * what runs where AVX2 is absent) and an AVX2/FMA one chosen at run time.
 * Both compute, per block of 32, d * sum (q x) (+ m * sum x for Q4_1):
 * the same value as the decoded dot product, summed in another order. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include <llmpress/backend.h>

#include "compute-internal.h"
#include "dtype-blocks.h"

#include "gemv-x86.h"

enum { QK = 32, MAX_M = LP_GEMV_MAX_ROWS };

/* One call's operands.  xsum[m * nb + b]: the sum of block b of A's row m
 * (Q4_1's minimum multiplies it). */
typedef struct {
  int M, N, K;
  const float *A;
  int lda;
  LpDType wtype;
  const guint8 *W;
  gsize row_bytes;
  float beta;
  float *C;
  int ldc;
  const float *xsum;
  gboolean ref;
} Gemv;

/* out[m] = row . A[m] for m < M: one row of W against the M rows of A. */
typedef void (*RowDot) (const Gemv *g, const guint8 *row, float *out);

/* ---- plain C ---- */

static void
row_f32_ref (const Gemv *g, const guint8 *row, float *out)
{
  const float *w = (const float *) row;
  for (int m = 0; m < g->M; m++)
    {
      const float *x = g->A + (gsize) m * g->lda;
      float acc = 0.0f;
      for (int k = 0; k < g->K; k++)
        acc += w[k] * x[k];
      out[m] = acc;
    }
}

static void
row_f16_ref (const Gemv *g, const guint8 *row, float *out)
{
  for (int m = 0; m < g->M; m++)
    {
      const float *x = g->A + (gsize) m * g->lda;
      float acc = 0.0f;
      for (int k = 0; k < g->K; k++)
        acc += lp_qread_f16 (row + 2 * k) * x[k];
      out[m] = acc;
    }
}

/* Blocks of 32 codes q with scale d (Q8_0: int8 q; Q4_0: nibbles - 8;
 * Q4_1: nibbles, plus m * sum x). */
static void
row_block_ref (const Gemv *g, const guint8 *row, float *out)
{
  int nb = g->K / QK;
  for (int m = 0; m < g->M; m++)
    {
      const float *x = g->A + (gsize) m * g->lda;
      float acc = 0.0f;
      for (int b = 0; b < nb; b++, x += QK)
        {
          float s = 0.0f;
          switch (g->wtype)
            {
            case LP_DTYPE_Q8_0:
              {
                const guint8 *blk = row + (gsize) b * 34;
                const gint8 *q = (const gint8 *) (blk + 2);
                for (int j = 0; j < QK; j++)
                  s += q[j] * x[j];
                acc += lp_qread_f16 (blk) * s;
                break;
              }
            case LP_DTYPE_Q4_0:
              {
                const guint8 *blk = row + (gsize) b * 18, *q = blk + 2;
                for (int j = 0; j < 16; j++)
                  s += ((int) (q[j] & 0x0f) - 8) * x[j] + ((int) (q[j] >> 4) - 8) * x[j + 16];
                acc += lp_qread_f16 (blk) * s;
                break;
              }
            case LP_DTYPE_Q4_1:
              {
                const guint8 *blk = row + (gsize) b * 20, *q = blk + 4;
                for (int j = 0; j < 16; j++)
                  s += (q[j] & 0x0f) * x[j] + (q[j] >> 4) * x[j + 16];
                acc += lp_qread_f16 (blk) * s + lp_qread_f16 (blk + 2) * g->xsum[m * nb + b];
                break;
              }
            default:
              g_assert_not_reached ();
            }
        }
      out[m] = acc;
    }
}

/* ---- AVX2 + FMA ---- */

#ifdef LP_GEMV_X86
X86_TARGET static void
row_f32_x86 (const Gemv *g, const guint8 *row, float *out)
{
  const float *w = (const float *) row;
  for (int m = 0; m < g->M; m++)
    {
      const float *x = g->A + (gsize) m * g->lda;
      __m256 a0 = _mm256_setzero_ps (), a1 = _mm256_setzero_ps ();
      int k = 0;
      for (; k + 16 <= g->K; k += 16)
        {
          a0 = _mm256_fmadd_ps (_mm256_loadu_ps (w + k), _mm256_loadu_ps (x + k), a0);
          a1 = _mm256_fmadd_ps (_mm256_loadu_ps (w + k + 8), _mm256_loadu_ps (x + k + 8), a1);
        }
      float acc = lp_x86_hsum (_mm256_add_ps (a0, a1));
      for (; k < g->K; k++)
        acc += w[k] * x[k];
      out[m] = acc;
    }
}

X86_TARGET static void
row_f16_x86 (const Gemv *g, const guint8 *row, float *out)
{
  for (int m = 0; m < g->M; m++)
    {
      const float *x = g->A + (gsize) m * g->lda;
      __m256 a = _mm256_setzero_ps ();
      int k = 0;
      for (; k + 8 <= g->K; k += 8)
        a = _mm256_fmadd_ps (_mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (row + 2 * k))),
                             _mm256_loadu_ps (x + k), a);
      float acc = lp_x86_hsum (a);
      for (; k < g->K; k++)
        acc += lp_x86_f16 (row + 2 * k) * x[k];
      out[m] = acc;
    }
}

/* A block's 32 codes as 4 x 8 floats (elements 0-7, 8-15, 16-23, 24-31). */

X86_INLINE void
decode_block (LpDType type, const guint8 *blk, __m256 *w)
{
  if (type == LP_DTYPE_Q8_0)
    {
      const guint8 *q = blk + 2;
      for (int i = 0; i < 4; i++)
        w[i] = _mm256_cvtepi32_ps (_mm256_cvtepi8_epi32 (_mm_loadl_epi64 ((const __m128i *) (q + 8 * i))));
      return;
    }
  /* Q4_0's codes - 8 are signed, Q4_1's unsigned: both fit int8. */
  const __m128i low = _mm_set1_epi8 (0x0f);
  __m128i raw = _mm_loadu_si128 ((const __m128i *) (blk + (type == LP_DTYPE_Q4_1 ? 4 : 2)));
  __m128i lo = _mm_and_si128 (raw, low), hi = _mm_and_si128 (_mm_srli_epi16 (raw, 4), low);
  if (type == LP_DTYPE_Q4_0)
    {
      lo = _mm_sub_epi8 (lo, _mm_set1_epi8 (8));
      hi = _mm_sub_epi8 (hi, _mm_set1_epi8 (8));
    }
  w[0] = _mm256_cvtepi32_ps (_mm256_cvtepi8_epi32 (lo));
  w[1] = _mm256_cvtepi32_ps (_mm256_cvtepi8_epi32 (_mm_srli_si128 (lo, 8)));
  w[2] = _mm256_cvtepi32_ps (_mm256_cvtepi8_epi32 (hi));
  w[3] = _mm256_cvtepi32_ps (_mm256_cvtepi8_epi32 (_mm_srli_si128 (hi, 8)));
}

static inline gsize
block_size (LpDType type)
{
  return type == LP_DTYPE_Q8_0 ? 34 : type == LP_DTYPE_Q4_1 ? 20 : 18;
}

/* The codes' dot product with x[32]: two independent chains. */
X86_INLINE __m256
block_dot (const __m256 *w, const float *x)
{
  __m256 s0 = _mm256_mul_ps (w[0], _mm256_loadu_ps (x));
  __m256 s1 = _mm256_mul_ps (w[1], _mm256_loadu_ps (x + 8));
  s0 = _mm256_fmadd_ps (w[2], _mm256_loadu_ps (x + 16), s0);
  s1 = _mm256_fmadd_ps (w[3], _mm256_loadu_ps (x + 24), s1);
  return _mm256_add_ps (s0, s1);
}

/* One row of blocks against the M rows of A.  M = 1 (decoding) keeps its
 * sums in registers; more rows keep one sum per row of A. */
X86_INLINE void
row_blocks_x86 (const Gemv *g, const guint8 *row, float *out, const LpDType type)
{
  int nb = g->K / QK;
  gsize size = block_size (type);
  gboolean with_min = type == LP_DTYPE_Q4_1;
  __m256 w[4];
  if (g->M == 1)
    {
      __m256 acc = _mm256_setzero_ps ();
      float mins = 0.0f;
      const float *x = g->A;
      for (int b = 0; b < nb; b++, x += QK)
        {
          const guint8 *blk = row + (gsize) b * size;
          decode_block (type, blk, w);
          acc = _mm256_fmadd_ps (_mm256_set1_ps (lp_x86_f16 (blk)), block_dot (w, x), acc);
          if (with_min)
            mins += lp_x86_f16 (blk + 2) * g->xsum[b];
        }
      out[0] = lp_x86_hsum (acc) + mins;
      return;
    }
  __m256 acc[MAX_M];
  float mins[MAX_M] = { 0 };
  for (int m = 0; m < g->M; m++)
    acc[m] = _mm256_setzero_ps ();
  for (int b = 0; b < nb; b++)
    {
      const guint8 *blk = row + (gsize) b * size;
      decode_block (type, blk, w);
      __m256 d = _mm256_set1_ps (lp_x86_f16 (blk));
      float mn = with_min ? lp_x86_f16 (blk + 2) : 0.0f;
      for (int m = 0; m < g->M; m++)
        {
          acc[m] = _mm256_fmadd_ps (d, block_dot (w, g->A + (gsize) m * g->lda + (gsize) b * QK), acc[m]);
          if (with_min)
            mins[m] += mn * g->xsum[m * nb + b];
        }
    }
  for (int m = 0; m < g->M; m++)
    out[m] = lp_x86_hsum (acc[m]) + mins[m];
}

X86_TARGET static void
row_q8_0_x86 (const Gemv *g, const guint8 *row, float *out)
{
  row_blocks_x86 (g, row, out, LP_DTYPE_Q8_0);
}

X86_TARGET static void
row_q4_0_x86 (const Gemv *g, const guint8 *row, float *out)
{
  row_blocks_x86 (g, row, out, LP_DTYPE_Q4_0);
}

X86_TARGET static void
row_q4_1_x86 (const Gemv *g, const guint8 *row, float *out)
{
  row_blocks_x86 (g, row, out, LP_DTYPE_Q4_1);
}

gboolean
lp_cpu_have_avx2 (void)
{
  static gint have = -1;
  if (g_atomic_int_get (&have) < 0)
    {
      __builtin_cpu_init ();
      /* F16C is not asked: every AVX2 processor has it (it came a generation
       * earlier), and clang's __builtin_cpu_supports does not know its name. */
      g_atomic_int_set (&have, __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma"));
    }
  return g_atomic_int_get (&have) > 0;
}
#endif

gboolean
lp_cpu_have_avx512 (void)
{
#if defined(__x86_64__) && defined(__GNUC__)
  static gint have = -1;
  if (g_atomic_int_get (&have) < 0)
    {
      __builtin_cpu_init ();
      g_atomic_int_set (&have, __builtin_cpu_supports ("avx512f"));
    }
  return g_atomic_int_get (&have) > 0;
#else
  return FALSE;
#endif
}

static RowDot
row_dot (LpDType wtype, gboolean ref)
{
#ifdef LP_GEMV_X86
  if (!ref && lp_cpu_have_avx2 ())
    switch (wtype)
      {
      case LP_DTYPE_F32:
        return row_f32_x86;
      case LP_DTYPE_F16:
        return row_f16_x86;
      case LP_DTYPE_Q8_0:
        return row_q8_0_x86;
      case LP_DTYPE_Q4_0:
        return row_q4_0_x86;
      default:
        return row_q4_1_x86;
      }
#endif
  return wtype == LP_DTYPE_F32 ? row_f32_ref : wtype == LP_DTYPE_F16 ? row_f16_ref : row_block_ref;
}

/* Rows j0 .. j1 - 1 of W. */
static void
gemv_rows (void *data, int j0, int j1)
{
  const Gemv *g = data;
  RowDot dot = row_dot (g->wtype, g->ref);
  float out[MAX_M];
  for (int j = j0; j < j1; j++)
    {
      dot (g, g->W + (gsize) j * g->row_bytes, out);
      lp_cpu_gemv_store (g->C, g->ldc, j, g->M, out, g->beta);
    }
}

gboolean
lp_cpu_gemv_supports (int M, int K, LpDType wtype)
{
  if (M < 1 || M > LP_GEMV_MAX_ROWS)
    return FALSE;
  switch (wtype)
    {
    case LP_DTYPE_F32:
    case LP_DTYPE_F16:
      return TRUE;
    case LP_DTYPE_Q8_0:
    case LP_DTYPE_Q4_0:
    case LP_DTYPE_Q4_1:
      return K % QK == 0;
    default:
      return FALSE;
    }
}

typedef struct {
  LpRangeFn rows;
  void *data;
} Split;

static void
split_range (gint64 j0, gint64 j1, gpointer data)
{
  const Split *s = data;
  s->rows (s->data, (int) j0, (int) j1);
}

void
lp_cpu_gemv_split (int N, int K, LpRangeFn rows, void *data, gboolean serial)
{
  /* A share of at least about 64 Ki weights: below this a hand-off costs
   * more than the rows. */
  if (serial)
    rows (data, 0, N);
  else
    lp_parallel_for (N, MAX (1, (64 << 10) / MAX (K, 1)), split_range, &(Split){ rows, data });
}

/* The product, by the AVX2 row kernels over the worker threads, or (ref)
 * by the plain C ones in the caller's thread. */
static void
gemv_run (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C, int ldc,
          gboolean ref)
{
  g_assert (lp_cpu_gemv_supports (M, K, wtype));
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (wtype, (guint64) K, &row_bytes, NULL));
  int nb = K / QK;
  float xsum_stack[MAX_M * 64];
  g_autofree float *xsum_heap = NULL;
  float *xsum = xsum_stack;
  if (wtype == LP_DTYPE_Q4_1)
    {
      if (M * nb > (int) G_N_ELEMENTS (xsum_stack))
        xsum = xsum_heap = g_new (float, (gsize) M * nb);
      for (int m = 0; m < M; m++)
        for (int b = 0; b < nb; b++)
          {
            const float *x = A + (gsize) m * lda + (gsize) b * QK;
            float s = 0.0f;
            for (int j = 0; j < QK; j++)
              s += x[j];
            xsum[m * nb + b] = s;
          }
    }
  Gemv g = { M, N, K, A, lda, wtype, W, (gsize) row_bytes, beta, C, ldc, xsum, ref };
  lp_cpu_gemv_split (N, K, gemv_rows, &g, ref);
}

void
lp_cpu_gemv_w (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
               int ldc)
{
  gemv_run (M, N, K, A, lda, wtype, W, beta, C, ldc, FALSE);
}

void
lp_cpu_gemv_w_ref (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
                   int ldc)
{
  gemv_run (M, N, K, A, lda, wtype, W, beta, C, ldc, TRUE);
}
