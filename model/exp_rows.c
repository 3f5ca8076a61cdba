/* llmpress — exp over a row of floats, for softmax rows and log-sum-exp
 * (the forward's attention and eval's head): plain C, AVX2 and AVX-512,
 * chosen at run time.  libm's expf and exp were a tenth of eval's time.
 *
 * The method is Cephes' expf: x = n ln2 + r with n = round (x / ln2) and
 * |r| <= ln2 / 2 (ln2 in two parts, Cody and Waite, so r is near exact),
 * e^r = 1 + r + r^2 P(r) with P of degree 5, then times 2^n.  2^n is
 * applied as two powers 2^(n>>1) and 2^(n - (n>>1)), each a normal float,
 * so that results at the overflow edge and subnormal results round once,
 * as the true value would.  x is clamped to [-150, 89] first: below, the
 * result is 0 (e^-104 is under half the least subnormal); above, +inf;
 * -inf gives 0, +inf gives +inf, NaN stays NaN.
 *
 * Error: at most 2 ulp from e^x correctly rounded, subnormal results
 * included (test-compute checks every 61st float of [-104, 89] and the
 * edges; the largest seen is 1 ulp).
 *
 * The same exp gives swiglu's sigmoid (silu (g) u = g / (1 + e^-g) u).
 *
 * Every kernel computes each value with the same float operations in the
 * same order (one multiply or one add each: fp-contract=off below keeps a
 * multiply and an add apart where the target has FMA), and sums in 16
 * lanes (element i into lane i % 16) reduced in one fixed order, so the
 * three give the same bits and a decoded text does not depend on the CPU. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "compute-internal.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize ("fp-contract=off")
#endif

#define EXP_LO (-150.0f)
#define EXP_HI 89.0f
#define LOG2E 1.44269504088896341f
#define ROUND_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define LN2_HI 0.693359375f     /* 355/512: n * LN2_HI is exact */
#define LN2_LO (-2.12194440e-4f)
static const float exp_poly[6] = { 1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f,
                                   4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f };

#define LANES 16

static float
pow2i (gint32 e)
{
  guint32 bits = (guint32) (e + 127) << 23;
  float f;
  memcpy (&f, &bits, 4);
  return f;
}

/* lp_exp_ref, inlined into the plain kernels' loops. */
static inline __attribute__ ((always_inline)) float
exp_plain (float x)
{
  if (isnan (x))
    return x; /* the kernels' NaN goes through every step (their n is garbage, the product NaN) */
  x = x < EXP_LO ? EXP_LO : x;
  x = x > EXP_HI ? EXP_HI : x;
  float t = x * LOG2E + ROUND_MAGIC;
  float nf = t - ROUND_MAGIC;
  float r = x - nf * LN2_HI;
  r = r - nf * LN2_LO;
  float z = r * r, p = exp_poly[0];
  for (int i = 1; i < 6; i++)
    p = p * r + exp_poly[i];
  p = p * z + r;
  p = p + 1.0f;
  gint32 n = (gint32) nf, n1 = n >> 1;
  return p * pow2i (n1) * pow2i (n - n1);
}

float
lp_exp_ref (float x)
{
  return exp_plain (x);
}

/* The 16 lanes' sums (float or double) reduced in the kernels' order:
 * lane i + lane i + 8, then + 4, + 2, + 1. */
#define DEFINE_REDUCE_LANES(name, type)          \
  static type name (type *l)                     \
  {                                              \
    for (int w = LANES / 2; w >= 1; w /= 2)      \
      for (int i = 0; i < w; i++)                \
        l[i] = l[i] + l[i + w];                  \
    return l[0];                                 \
  }

DEFINE_REDUCE_LANES (reduce_lanes, float)
DEFINE_REDUCE_LANES (reduce_lanes_d, double)

static float
exp_store_sum_ref (float *x, int n, float shift)
{
  float l[LANES] = { 0 };
  for (int i = 0; i < n; i++)
    l[i % LANES] += (x[i] = exp_plain (x[i] - shift));
  return reduce_lanes (l);
}

static double
exp_sum_ref (const float *x, int n, float shift)
{
  double l[LANES] = { 0 };
  for (int i = 0; i < n; i++)
    l[i % LANES] += (double) exp_plain (x[i] - shift);
  return reduce_lanes_d (l);
}

static float
max_ref (const float *x, int n)
{
  float m = -INFINITY;
  for (int i = 0; i < n; i++)
    m = x[i] > m ? x[i] : m;
  return m;
}

static void
silu_mul_ref (int n, const float *gate, const float *up, float *out)
{
  for (int i = 0; i < n; i++)
    out[i] = gate[i] / (1.0f + exp_plain (0.0f - gate[i])) * up[i]; /* 0 - g: the kernels' subtraction */
}

typedef struct {
  float (*store_sum) (float *x, int n, float shift);
  double (*sum) (const float *x, int n, float shift);
  float (*max) (const float *x, int n);
  void (*silu_mul) (int n, const float *gate, const float *up, float *out);
} ExpOps;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define EXP_AVX2 __attribute__ ((target ("avx2")))
#define EXP_AVX2_INLINE EXP_AVX2 static inline __attribute__ ((always_inline))
#define EXP_AVX512 __attribute__ ((target ("avx512f")))
#define EXP_AVX512_INLINE EXP_AVX512 static inline __attribute__ ((always_inline))

/* A tail of m < 16 values as a whole block: the rest -inf, whose exp (0)
 * leaves a lane's sum as it was. */
static void
tail_block (const float *x, int m, float *block)
{
  for (int i = 0; i < LANES; i++)
    block[i] = i < m ? x[i] : -INFINITY;
}

/* lp_exp_ref on W / 32 lanes, operation for operation: one body for the
 * AVX2 (W = 256) and the AVX-512 (W = 512) intrinsics, which have the same
 * names but for the width. */
#define DEFINE_EXP_LANES(name, W, INLINE)                                                                     \
  INLINE __m##W name (__m##W x)                                                                               \
  {                                                                                                           \
    x = _mm##W##_max_ps (_mm##W##_set1_ps (EXP_LO), x); /* maxps gives its second operand for a NaN */      \
    x = _mm##W##_min_ps (_mm##W##_set1_ps (EXP_HI), x);                                                       \
    __m##W t = _mm##W##_add_ps (_mm##W##_mul_ps (x, _mm##W##_set1_ps (LOG2E)), _mm##W##_set1_ps (ROUND_MAGIC)); \
    __m##W nf = _mm##W##_sub_ps (t, _mm##W##_set1_ps (ROUND_MAGIC));                                          \
    __m##W r = _mm##W##_sub_ps (x, _mm##W##_mul_ps (nf, _mm##W##_set1_ps (LN2_HI)));                         \
    r = _mm##W##_sub_ps (r, _mm##W##_mul_ps (nf, _mm##W##_set1_ps (LN2_LO)));                                 \
    __m##W z = _mm##W##_mul_ps (r, r), p = _mm##W##_set1_ps (exp_poly[0]);                                    \
    for (int i = 1; i < 6; i++)                                                                               \
      p = _mm##W##_add_ps (_mm##W##_mul_ps (p, r), _mm##W##_set1_ps (exp_poly[i]));                           \
    p = _mm##W##_add_ps (_mm##W##_mul_ps (p, z), r);                                                          \
    p = _mm##W##_add_ps (p, _mm##W##_set1_ps (1.0f));                                                         \
    __m##W##i n = _mm##W##_cvtps_epi32 (nf), n1 = _mm##W##_srai_epi32 (n, 1), bias = _mm##W##_set1_epi32 (127); \
    __m##W s1 = _mm##W##_castsi##W##_ps (_mm##W##_slli_epi32 (_mm##W##_add_epi32 (n1, bias), 23));           \
    __m##W s2 = _mm##W##_castsi##W##_ps (                                                                     \
        _mm##W##_slli_epi32 (_mm##W##_add_epi32 (_mm##W##_sub_epi32 (n, n1), bias), 23));                     \
    return _mm##W##_mul_ps (_mm##W##_mul_ps (p, s1), s2);                                                     \
  }

DEFINE_EXP_LANES (exp8, 256, EXP_AVX2_INLINE)
DEFINE_EXP_LANES (exp16, 512, EXP_AVX512_INLINE)

/* Lanes 0-7 in a, 8-15 in b, reduced as reduce_lanes does. */
EXP_AVX2_INLINE float
reduce16_avx2 (__m256 a, __m256 b)
{
  __m256 s8 = _mm256_add_ps (a, b);
  __m128 s4 = _mm_add_ps (_mm256_castps256_ps128 (s8), _mm256_extractf128_ps (s8, 1));
  __m128 s2 = _mm_add_ps (s4, _mm_movehl_ps (s4, s4));
  return _mm_cvtss_f32 (_mm_add_ss (s2, _mm_movehdup_ps (s2)));
}

/* Lanes 0-3, 4-7, 8-11, 12-15, reduced as reduce_lanes_d does. */
EXP_AVX2_INLINE double
reduce16d_avx2 (__m256d a, __m256d b, __m256d c, __m256d d)
{
  __m256d lo = _mm256_add_pd (a, c), hi = _mm256_add_pd (b, d);
  __m256d s4 = _mm256_add_pd (lo, hi);
  __m128d s2 = _mm_add_pd (_mm256_castpd256_pd128 (s4), _mm256_extractf128_pd (s4, 1));
  return _mm_cvtsd_f64 (_mm_add_sd (s2, _mm_unpackhi_pd (s2, s2)));
}

EXP_AVX2 static float
exp_store_sum_avx2 (float *x, int n, float shift)
{
  __m256 sh = _mm256_set1_ps (shift), a = _mm256_setzero_ps (), b = _mm256_setzero_ps ();
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    {
      __m256 e0 = exp8 (_mm256_sub_ps (_mm256_loadu_ps (x + i), sh));
      __m256 e1 = exp8 (_mm256_sub_ps (_mm256_loadu_ps (x + i + 8), sh));
      _mm256_storeu_ps (x + i, e0);
      _mm256_storeu_ps (x + i + 8, e1);
      a = _mm256_add_ps (a, e0);
      b = _mm256_add_ps (b, e1);
    }
  if (i < n)
    {
      float block[LANES];
      tail_block (x + i, n - i, block);
      __m256 e0 = exp8 (_mm256_sub_ps (_mm256_loadu_ps (block), sh));
      __m256 e1 = exp8 (_mm256_sub_ps (_mm256_loadu_ps (block + 8), sh));
      _mm256_storeu_ps (block, e0);
      _mm256_storeu_ps (block + 8, e1);
      memcpy (x + i, block, sizeof (float) * (n - i));
      a = _mm256_add_ps (a, e0);
      b = _mm256_add_ps (b, e1);
    }
  return reduce16_avx2 (a, b);
}

EXP_AVX2 static double
exp_sum_avx2 (const float *x, int n, float shift)
{
  __m256 sh = _mm256_set1_ps (shift);
  __m256d acc[4] = { _mm256_setzero_pd (), _mm256_setzero_pd (), _mm256_setzero_pd (), _mm256_setzero_pd () };
  float block[LANES];
  for (int i = 0; i < n; i += LANES)
    {
      const float *src = x + i;
      if (i + LANES > n)
        {
          tail_block (x + i, n - i, block);
          src = block;
        }
      for (int h = 0; h < 2; h++)
        {
          __m256 e = exp8 (_mm256_sub_ps (_mm256_loadu_ps (src + 8 * h), sh));
          acc[2 * h] = _mm256_add_pd (acc[2 * h], _mm256_cvtps_pd (_mm256_castps256_ps128 (e)));
          acc[2 * h + 1] = _mm256_add_pd (acc[2 * h + 1], _mm256_cvtps_pd (_mm256_extractf128_ps (e, 1)));
        }
    }
  return reduce16d_avx2 (acc[0], acc[1], acc[2], acc[3]);
}

EXP_AVX2 static void
silu_mul_avx2 (int n, const float *gate, const float *up, float *out)
{
  int i = 0;
  for (; i + 8 <= n; i += 8)
    {
      __m256 g = _mm256_loadu_ps (gate + i);
      __m256 e = exp8 (_mm256_sub_ps (_mm256_setzero_ps (), g));
      __m256 d = _mm256_add_ps (_mm256_set1_ps (1.0f), e);
      _mm256_storeu_ps (out + i, _mm256_mul_ps (_mm256_div_ps (g, d), _mm256_loadu_ps (up + i)));
    }
  silu_mul_ref (n - i, gate + i, up + i, out + i);
}

EXP_AVX2 static float
max_avx2 (const float *x, int n)
{
  __m256 m = _mm256_set1_ps (-INFINITY);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_ps (_mm256_loadu_ps (x + i), m);
  float l[8], r = max_ref (x + i, n - i);
  _mm256_storeu_ps (l, m);
  for (int k = 0; k < 8; k++)
    r = l[k] > r ? l[k] : r;
  return r;
}

EXP_AVX512 static float
exp_store_sum_avx512 (float *x, int n, float shift)
{
  __m512 sh = _mm512_set1_ps (shift), acc = _mm512_setzero_ps ();
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    {
      __m512 e = exp16 (_mm512_sub_ps (_mm512_loadu_ps (x + i), sh));
      _mm512_storeu_ps (x + i, e);
      acc = _mm512_add_ps (acc, e);
    }
  if (i < n)
    {
      __mmask16 k = (__mmask16) ((1u << (n - i)) - 1);
      __m512 v = _mm512_mask_loadu_ps (_mm512_set1_ps (-INFINITY), k, x + i);
      __m512 e = exp16 (_mm512_sub_ps (v, sh));
      _mm512_mask_storeu_ps (x + i, k, e);
      acc = _mm512_add_ps (acc, e);
    }
  float l[LANES];
  _mm512_storeu_ps (l, acc);
  return reduce_lanes (l);
}

EXP_AVX512 static double
exp_sum_avx512 (const float *x, int n, float shift)
{
  __m512 sh = _mm512_set1_ps (shift);
  __m512d lo = _mm512_setzero_pd (), hi = _mm512_setzero_pd ();
  for (int i = 0; i < n; i += LANES)
    {
      __mmask16 k = i + LANES <= n ? (__mmask16) 0xffff : (__mmask16) ((1u << (n - i)) - 1);
      __m512 e = exp16 (_mm512_sub_ps (_mm512_mask_loadu_ps (_mm512_set1_ps (-INFINITY), k, x + i), sh));
      lo = _mm512_add_pd (lo, _mm512_cvtps_pd (_mm512_castps512_ps256 (e)));
      hi = _mm512_add_pd (hi, _mm512_cvtps_pd (_mm256_castpd_ps (_mm512_extractf64x4_pd (_mm512_castps_pd (e), 1))));
    }
  double l[LANES];
  _mm512_storeu_pd (l, lo);
  _mm512_storeu_pd (l + 8, hi);
  return reduce_lanes_d (l);
}

EXP_AVX512 static void
silu_mul_avx512 (int n, const float *gate, const float *up, float *out)
{
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    {
      __m512 g = _mm512_loadu_ps (gate + i);
      __m512 e = exp16 (_mm512_sub_ps (_mm512_setzero_ps (), g));
      __m512 d = _mm512_add_ps (_mm512_set1_ps (1.0f), e);
      _mm512_storeu_ps (out + i, _mm512_mul_ps (_mm512_div_ps (g, d), _mm512_loadu_ps (up + i)));
    }
  silu_mul_ref (n - i, gate + i, up + i, out + i);
}

EXP_AVX512 static float
max_avx512 (const float *x, int n)
{
  __m512 m = _mm512_set1_ps (-INFINITY);
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    m = _mm512_max_ps (_mm512_loadu_ps (x + i), m);
  float l[LANES], r = max_ref (x + i, n - i);
  _mm512_storeu_ps (l, m);
  for (int k = 0; k < LANES; k++)
    r = l[k] > r ? l[k] : r;
  return r;
}

#endif

gboolean
lp_exp_kernel_available (LpExpKernel k)
{
  switch (k)
    {
    case LP_EXP_PLAIN:
      return TRUE;
#if defined(__x86_64__) && defined(__GNUC__)
    case LP_EXP_AVX2:
      return lp_cpu_have_avx2 ();
    case LP_EXP_AVX512:
      return lp_cpu_have_avx512 ();
#endif
    default:
      return FALSE;
    }
}

static ExpOps
exp_ops (LpExpKernel k)
{
  g_return_val_if_fail (lp_exp_kernel_available (k), ((ExpOps) { exp_store_sum_ref, exp_sum_ref, max_ref, silu_mul_ref }));
  switch (k)
    {
#if defined(__x86_64__) && defined(__GNUC__)
    case LP_EXP_AVX2:
      return (ExpOps) { exp_store_sum_avx2, exp_sum_avx2, max_avx2, silu_mul_avx2 };
    case LP_EXP_AVX512:
      return (ExpOps) { exp_store_sum_avx512, exp_sum_avx512, max_avx512, silu_mul_avx512 };
#endif
    default:
      return (ExpOps) { exp_store_sum_ref, exp_sum_ref, max_ref, silu_mul_ref };
    }
}

LpExpKernel
lp_exp_kernel_best (void)
{
  static gint best = -1;
  if (g_atomic_int_get (&best) < 0)
    g_atomic_int_set (&best, lp_exp_kernel_available (LP_EXP_AVX512) ? LP_EXP_AVX512
                             : lp_exp_kernel_available (LP_EXP_AVX2) ? LP_EXP_AVX2
                                                                     : LP_EXP_PLAIN);
  return (LpExpKernel) g_atomic_int_get (&best);
}

float
lp_exp_store_sum (LpExpKernel k, float *x, int n, float shift)
{
  return exp_ops (k).store_sum (x, n, shift);
}

double
lp_exp_sum (LpExpKernel k, const float *x, int n, float shift)
{
  return exp_ops (k).sum (x, n, shift);
}

float
lp_exp_row_max (LpExpKernel k, const float *x, int n)
{
  return exp_ops (k).max (x, n);
}

void
lp_exp_silu_mul (LpExpKernel k, int n, const float *gate, const float *up, float *out)
{
  exp_ops (k).silu_mul (n, gate, up, out);
}

double
lp_cpu_log_sum_exp (const float *logits, int V)
{
  LpExpKernel k = lp_exp_kernel_best ();
  float mx = lp_exp_row_max (k, logits, V);
  return (double) mx + log (lp_exp_sum (k, logits, V, mx));
}
