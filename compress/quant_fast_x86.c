/* llmpress — the 32-value block quantizers (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1,
 * without importance) in AVX2 intrinsics, one block to four registers.
 * They write the bytes of the reference fits (quant_blocks.c, packed by
 * lp_qref_row) and of the portable kernels (quant_fast.c): test-quant-blocks
 * compares all three on random rows and on the edge blocks (zeros, -0,
 * ties of +max and -max, huge, subnormal scales).
 *
 * Why each step gives the reference's value:
 *   - min, max and max |x| are exact in any order;
 *   - d and 1/d are the same scalar divisions as ggml's;
 *   - the products and sums are one multiply or one add each: the target
 *     has no FMA, so nothing is fused (the build's -ffp-contract=fast would
 *     fuse a mul+add under an FMA target);
 *   - f16 by F16C's round-to-nearest-even, which is lp_f32_to_f16 for every
 *     finite float;
 *   - truncation by cvttps2dq, which gives INT_MIN where ggml's (int8_t)
 *     cast of an infinity or NaN (a block whose 1/d overflows) gives the
 *     low byte of cvttss2si's INT_MIN: 0, and INT_MIN's low five bits are 0
 *     too, so the nibble and high bit agree. */
#include "config.h"

#include "quant-internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <float.h>
#include <math.h>
#include <immintrin.h>

#include "compute-internal.h"

#define QX86 __attribute__ ((target ("avx2,f16c")))
#define QX86_INLINE QX86 static inline __attribute__ ((always_inline))

QX86_INLINE float
hmax (__m256 v)
{
  __m128 s = _mm_max_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
  s = _mm_max_ps (s, _mm_movehl_ps (s, s));
  s = _mm_max_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

/* The least lane (a zero's sign aside: callers settle it). */
QX86_INLINE float
hmin (__m256 v)
{
  return -hmax (_mm256_xor_ps (v, _mm256_set1_ps (-0.0f)));
}

/* A block's 32 values into four registers. */
QX86_INLINE void
load4 (const float *x, __m256 v[4])
{
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++)
    v[k] = _mm256_loadu_ps (x + 8 * k);
}

QX86_INLINE void
put_f16 (guint8 *dst, float f)
{
  lp_qwrite_u16 (dst, _cvtss_sh (f, _MM_FROUND_TO_NEAREST_INT));
}

/* 32 codes (each in [0, 255] after masking) as 16 bytes of nibble pairs:
 * element j low, j + 16 high. */
QX86_INLINE void
pack_nibbles (const __m256i q[4], guint8 *dst)
{
  const __m256i lo4 = _mm256_set1_epi32 (0x0f);
  __m256i a = _mm256_or_si256 (_mm256_and_si256 (q[0], lo4), _mm256_slli_epi32 (_mm256_and_si256 (q[2], lo4), 4));
  __m256i b = _mm256_or_si256 (_mm256_and_si256 (q[1], lo4), _mm256_slli_epi32 (_mm256_and_si256 (q[3], lo4), 4));
  /* a0-3 b0-3 | a4-7 b4-7 as 16-bit, put back in order, then bytes */
  __m256i p = _mm256_permute4x64_epi64 (_mm256_packs_epi32 (a, b), 0xd8);
  __m128i bytes = _mm_packus_epi16 (_mm256_castsi256_si128 (p), _mm256_extracti128_si256 (p, 1));
  _mm_storeu_si128 ((__m128i *) dst, bytes);
}

/* qh of Q5_0 / Q5_1: bit j is bit 4 of code j. */
QX86_INLINE void
pack_high_bits (const __m256i q[4], guint8 *dst)
{
  guint32 qh = 0;
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++)
    qh |= (guint32) _mm256_movemask_ps (_mm256_castsi256_ps (_mm256_slli_epi32 (q[k], 27))) << (8 * k);
  for (int b = 0; b < 4; b++)
    dst[b] = (qh >> (8 * b)) & 0xff;
}

/* |v|'s bits, lane by lane the largest over four registers.  Bits of a
 * non-negative float order as the float does, so this is max |x| for
 * finite values, and an infinity or a NaN shows as bits above FLT_MAX's:
 * the row's finiteness check rides on the block's own loads. */
QX86_INLINE __m256i
abs_bits_max (const __m256 v[4])
{
  const __m256i mag = _mm256_set1_epi32 (0x7fffffff);
  __m256i m = _mm256_and_si256 (_mm256_castps_si256 (v[0]), mag);
#pragma GCC unroll 3
  for (int k = 1; k < 4; k++)
    m = _mm256_max_epi32 (m, _mm256_and_si256 (_mm256_castps_si256 (v[k]), mag));
  return m;
}

/* roundf (v) for |v| < 2^31 (half away from zero): the truncation, moved
 * one up or down where the remainder (exact) reaches a half. */
QX86_INLINE __m256i
round_away (__m256 v)
{
  __m256i i = _mm256_cvttps_epi32 (v);
  __m256 f = _mm256_sub_ps (v, _mm256_cvtepi32_ps (i));
  __m256i up = _mm256_castps_si256 (_mm256_cmp_ps (f, _mm256_set1_ps (0.5f), _CMP_GE_OQ));
  __m256i down = _mm256_castps_si256 (_mm256_cmp_ps (f, _mm256_set1_ps (-0.5f), _CMP_LE_OQ));
  return _mm256_add_epi32 (_mm256_sub_epi32 (i, up), down);
}

/* quantize_row_q8_0_ref, one block. */
QX86_INLINE void
block_q8_0 (const float *x, guint8 *dst, __m256i *seen)
{
  __m256 v[4];
  load4 (x, v);
  const __m256i m = abs_bits_max (v);
  *seen = _mm256_max_epi32 (*seen, m);
  const float d = hmax (_mm256_castsi256_ps (m)) / ((1 << 7) - 1);
  const float id = d ? 1.0f / d : 0.0f;
  put_f16 (dst, d);
  if (!(id <= FLT_MAX))
    {
      /* every x * id is infinite or NaN: (int8_t) roundf () of it is 0 */
      memset (dst + 2, 0, 32);
      return;
    }
  const __m256 vid = _mm256_set1_ps (id);
  __m256i q[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++)
    q[k] = round_away (_mm256_mul_ps (v[k], vid));
  /* codes are in [-127, 127]: the saturating packs are exact */
  __m256i p = _mm256_packs_epi16 (_mm256_packs_epi32 (q[0], q[1]), _mm256_packs_epi32 (q[2], q[3]));
  p = _mm256_permutevar8x32_epi32 (p, _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256 ((__m256i *) (dst + 2), p);
}

/* Eight blocks' scales d: their f16 bits and d ? 1 / d : 0, each lane the
 * scalar division's value; the inverses are returned too. */
QX86_INLINE __m256
scales8 (__m256 d, guint16 d16[8], float ids[8])
{
  const __m256 id = _mm256_and_ps (_mm256_div_ps (_mm256_set1_ps (1.0f), d),
                                   _mm256_cmp_ps (d, _mm256_setzero_ps (), _CMP_NEQ_UQ));
  _mm_storeu_si128 ((__m128i *) d16, _mm256_cvtps_ph (d, _MM_FROUND_TO_NEAREST_INT));
  _mm256_storeu_ps (ids, id);
  return id;
}

/* Eight registers' lanes folded by min or by max: lane b of the result is
 * the least or the largest lane of m[b] (a zero's sign aside).  A transpose
 * with a min or max at each step: 21 instructions for eight blocks where a
 * fold per block takes seven each. */
QX86_INLINE __m256
fold8_ps (const __m256 m[8], gboolean take_max)
{
#define FOLD(a, b) (take_max ? _mm256_max_ps (a, b) : _mm256_min_ps (a, b))
  __m256 b[2];
#pragma GCC unroll 2
  for (int h = 0; h < 2; h++)
    {
      const __m256 *q = m + 4 * h;
      __m256 a01 = FOLD (_mm256_unpacklo_ps (q[0], q[1]), _mm256_unpackhi_ps (q[0], q[1]));
      __m256 a23 = FOLD (_mm256_unpacklo_ps (q[2], q[3]), _mm256_unpackhi_ps (q[2], q[3]));
      b[h] = FOLD (_mm256_castpd_ps (_mm256_unpacklo_pd (_mm256_castps_pd (a01), _mm256_castps_pd (a23))),
                   _mm256_castpd_ps (_mm256_unpackhi_pd (_mm256_castps_pd (a01), _mm256_castps_pd (a23))));
    }
  return FOLD (_mm256_permute2f128_ps (b[0], b[1], 0x20), _mm256_permute2f128_ps (b[0], b[1], 0x31));
#undef FOLD
}

/* quantize_row_q8_0_ref, eight blocks: their scales d = max |x| / 127 and
 * 1/d as two vector divisions (each lane the scalar division's value)
 * instead of sixteen dependent scalar ones, then each block's codes from
 * its values reloaded (L1 hits). */
QX86_INLINE void
blocks8_q8_0 (const float *x, guint8 *dst, __m256i *seen)
{
  __m256 m[8];
#pragma GCC unroll 8
  for (int b = 0; b < 8; b++)
    {
      __m256 v[4];
      lp_qprefetch_block (x + 32 * b);
      load4 (x + 32 * b, v);
      const __m256i bits = abs_bits_max (v);
      *seen = _mm256_max_epi32 (*seen, bits);
      m[b] = _mm256_castsi256_ps (bits); /* max |x| of finite values as floats */
    }
  const __m256 d = _mm256_div_ps (fold8_ps (m, TRUE), _mm256_set1_ps ((1 << 7) - 1));
  guint16 d16[8];
  float ids[8];
  const __m256 id = scales8 (d, d16, ids);
  /* !(id <= FLT_MAX): every x * id is infinite or NaN, the codes 0 */
  const int huge = _mm256_movemask_ps (_mm256_cmp_ps (id, _mm256_set1_ps (FLT_MAX), _CMP_NLE_UQ));
  for (int b = 0; b < 8; b++)
    {
      guint8 *o = dst + 34 * b;
      lp_qwrite_u16 (o, d16[b]);
      if (huge & (1 << b))
        {
          memset (o + 2, 0, 32);
          continue;
        }
      const __m256 vid = _mm256_broadcast_ss (ids + b);
      __m256i q[4];
#pragma GCC unroll 4
      for (int k = 0; k < 4; k++)
        q[k] = round_away (_mm256_mul_ps (_mm256_loadu_ps (x + 32 * b + 8 * k), vid));
      __m256i p = _mm256_packs_epi16 (_mm256_packs_epi32 (q[0], q[1]), _mm256_packs_epi32 (q[2], q[3]));
      p = _mm256_permutevar8x32_epi32 (p, _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256 ((__m256i *) (o + 2), p);
    }
}

/* The codes (int) (x * a + b) capped at nmax: Q4_0 / Q5_0 with b = half +
 * 0.5, Q4_1 / Q5_1 with x - min for x and b = 0.5. */
QX86_INLINE void
trunc_codes (const __m256 v[4], float a, float b, int nmax, __m256i q[4])
{
  const __m256 va = _mm256_set1_ps (a), vb = _mm256_set1_ps (b);
  const __m256i vmax = _mm256_set1_epi32 (nmax);
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++)
    q[k] = _mm256_min_epi32 (_mm256_cvttps_epi32 (_mm256_add_ps (_mm256_mul_ps (v[k], va), vb)), vmax);
}

/* A block's 32 values into four registers, and their min and max. */
QX86_INLINE void
load_block (const float *x, __m256 v[4], float *min, float *max, __m256i *seen)
{
  load4 (x, v);
  *seen = _mm256_max_epi32 (*seen, abs_bits_max (v));
  *min = hmin (_mm256_min_ps (_mm256_min_ps (v[0], v[1]), _mm256_min_ps (v[2], v[3])));
  *max = hmax (_mm256_max_ps (_mm256_max_ps (v[0], v[1]), _mm256_max_ps (v[2], v[3])));
}

/* quantize_row_q{4,5}_0_ref, one block. */
QX86_INLINE void
block_q_0 (const float *x, int bits, guint8 *dst, __m256i *seen)
{
  const int half = 1 << (bits - 1);
  __m256 v[4];
  float min, max;
  load_block (x, v, &min, &max, seen);
  /* lp_qsigned_absmax as a select: which of max and -min wins is a coin
   * toss on real weights, and a branch mispredicted every other block
   * costs more than the block; only a tie (rare, or an all-zero block)
   * takes the scan */
  const float larger = -min > max ? min : max;
  max = max == -min ? lp_qsigned_absmax (x, 32, min, max) : larger;
  const float d = max / -half;
  const float id = d ? 1.0f / d : 0.0f;
  __m256i q[4];
  trunc_codes (v, id, half + 0.5f, (1 << bits) - 1, q);
  put_f16 (dst, d);
  if (bits == 5)
    pack_high_bits (q, dst + 2);
  pack_nibbles (q, dst + (bits == 5 ? 6 : 2));
}

/* Eight blocks' min and max, lane b block b's (a zero's sign aside). */
QX86_INLINE void
minmax8 (const float *x, __m256 *mn, __m256 *mx, __m256i *seen)
{
  __m256 lo[8], hi[8];
#pragma GCC unroll 8
  for (int b = 0; b < 8; b++)
    {
      __m256 v[4];
      lp_qprefetch_block (x + 32 * b);
      load4 (x + 32 * b, v);
      *seen = _mm256_max_epi32 (*seen, abs_bits_max (v));
      lo[b] = _mm256_min_ps (_mm256_min_ps (v[0], v[1]), _mm256_min_ps (v[2], v[3]));
      hi[b] = _mm256_max_ps (_mm256_max_ps (v[0], v[1]), _mm256_max_ps (v[2], v[3]));
    }
  *mn = fold8_ps (lo, FALSE);
  *mx = fold8_ps (hi, TRUE);
}

/* quantize_row_q{4,5}_0_ref, eight blocks: as block_q_0, with the signed
 * maxima, scales and inverses of all eight as vectors (blocks8_q8_0). */
QX86_INLINE void
blocks8_q_0 (const float *x, int bits, guint8 *dst, __m256i *seen)
{
  const int half = 1 << (bits - 1);
  const gsize ts = bits == 5 ? 22 : 18;
  __m256 mn, mx;
  minmax8 (x, &mn, &mx, seen);
  const __m256 neg_mn = _mm256_xor_ps (mn, _mm256_set1_ps (-0.0f));
  /* lp_qsigned_absmax: -min > max ? min : max, and a tie by the scan */
  __m256 smax = _mm256_blendv_ps (mx, mn, _mm256_cmp_ps (neg_mn, mx, _CMP_GT_OQ));
  const int ties = _mm256_movemask_ps (_mm256_cmp_ps (mx, neg_mn, _CMP_EQ_OQ));
  if (ties)
    {
      float mns[8], mxs[8], sm[8];
      _mm256_storeu_ps (mns, mn);
      _mm256_storeu_ps (mxs, mx);
      _mm256_storeu_ps (sm, smax);
      for (int b = 0; b < 8; b++)
        if (ties & (1 << b))
          sm[b] = lp_qsigned_absmax (x + 32 * b, 32, mns[b], mxs[b]);
      smax = _mm256_loadu_ps (sm);
    }
  const __m256 d = _mm256_div_ps (smax, _mm256_set1_ps ((float) -half));
  guint16 d16[8];
  float ids[8];
  scales8 (d, d16, ids);
  for (int b = 0; b < 8; b++)
    {
      guint8 *o = dst + ts * b;
      __m256 v[4];
      load4 (x + 32 * b, v);
      __m256i q[4];
      trunc_codes (v, ids[b], half + 0.5f, (1 << bits) - 1, q);
      lp_qwrite_u16 (o, d16[b]);
      if (bits == 5)
        pack_high_bits (q, o + 2);
      pack_nibbles (q, o + (bits == 5 ? 6 : 2));
    }
}

/* quantize_row_q{4,5}_1_ref, one block. */
QX86_INLINE void
block_q_1 (const float *x, int bits, guint8 *dst, __m256i *seen)
{
  const int nmax = (1 << bits) - 1;
  __m256 v[4];
  float min, max;
  load_block (x, v, &min, &max, seen);
  lp_qfirst_zero_extremes (x, 32, &min, &max);
  const float d = (max - min) / nmax;
  const float id = d ? 1.0f / d : 0.0f;
  const __m256 vmin = _mm256_set1_ps (min);
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++)
    v[k] = _mm256_sub_ps (v[k], vmin);
  __m256i q[4];
  trunc_codes (v, id, 0.5f, nmax, q);
  put_f16 (dst, d);
  put_f16 (dst + 2, min);
  if (bits == 5)
    pack_high_bits (q, dst + 4);
  pack_nibbles (q, dst + (bits == 5 ? 8 : 4));
}

/* quantize_row_q{4,5}_1_ref, eight blocks: min, max, d = (max - min) /
 * nmax, 1/d and both f16s as vectors (blocks8_q_0); a block whose min or
 * max is 0 takes lp_qfirst_zero_extremes for the zero's sign. */
QX86_INLINE void
blocks8_q_1 (const float *x, int bits, guint8 *dst, __m256i *seen)
{
  const int nmax = (1 << bits) - 1;
  const gsize ts = bits == 5 ? 24 : 20;
  __m256 mn, mx;
  minmax8 (x, &mn, &mx, seen);
  const __m256 zero = _mm256_setzero_ps ();
  const int zeros = _mm256_movemask_ps (
      _mm256_or_ps (_mm256_cmp_ps (mn, zero, _CMP_EQ_OQ), _mm256_cmp_ps (mx, zero, _CMP_EQ_OQ)));
  float mins[8];
  _mm256_storeu_ps (mins, mn);
  if (zeros)
    {
      float maxs[8];
      _mm256_storeu_ps (maxs, mx);
      for (int b = 0; b < 8; b++)
        if (zeros & (1 << b))
          lp_qfirst_zero_extremes (x + 32 * b, 32, mins + b, maxs + b);
      mn = _mm256_loadu_ps (mins);
      mx = _mm256_loadu_ps (maxs);
    }
  const __m256 d = _mm256_div_ps (_mm256_sub_ps (mx, mn), _mm256_set1_ps ((float) nmax));
  guint16 d16[8], m16[8];
  float ids[8];
  scales8 (d, d16, ids);
  _mm_storeu_si128 ((__m128i *) m16, _mm256_cvtps_ph (mn, _MM_FROUND_TO_NEAREST_INT));
  for (int b = 0; b < 8; b++)
    {
      guint8 *o = dst + ts * b;
      const __m256 vmin = _mm256_broadcast_ss (mins + b);
      __m256 v[4];
      load4 (x + 32 * b, v);
#pragma GCC unroll 4
      for (int k = 0; k < 4; k++)
        v[k] = _mm256_sub_ps (v[k], vmin);
      __m256i q[4];
      trunc_codes (v, ids[b], 0.5f, nmax, q);
      lp_qwrite_u16 (o, d16[b]);
      lp_qwrite_u16 (o + 2, m16[b]);
      if (bits == 5)
        pack_high_bits (q, o + 4);
      pack_nibbles (q, o + (bits == 5 ? 8 : 4));
    }
}

QX86 int
lp_qx86_row_checked (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  if (!lp_cpu_have_avx2 ())
    return -1;
  const gint64 nb = n / 32;
  const gsize ts = lp_dtype_info (type)->type_size;
  __m256i seen = _mm256_setzero_si256 ();
  if (importance != NULL && type != LP_DTYPE_Q8_0) /* quantize_q8_0 ignores importance */
    return -1;
  gint64 b0 = 0; /* the blocks done eight at a time */
  /* One loop per type, so that each block's bit width is a constant. */
#define EACH_BLOCK(call)                                                           \
  for (gint64 b = b0; b < nb; b++)                                                 \
    {                                                                              \
      call;                                                                        \
    }
  switch (type)
    {
    case LP_DTYPE_Q8_0:
      for (; nb - b0 >= 8; b0 += 8)
        blocks8_q8_0 (x + 32 * b0, dst + ts * b0, &seen);
      EACH_BLOCK (block_q8_0 (x + 32 * b, dst + ts * b, &seen));
      break;
    case LP_DTYPE_Q4_0:
      for (; nb - b0 >= 8; b0 += 8)
        blocks8_q_0 (x + 32 * b0, 4, dst + ts * b0, &seen);
      EACH_BLOCK (block_q_0 (x + 32 * b, 4, dst + ts * b, &seen));
      break;
    case LP_DTYPE_Q5_0:
      for (; nb - b0 >= 8; b0 += 8)
        blocks8_q_0 (x + 32 * b0, 5, dst + ts * b0, &seen);
      EACH_BLOCK (block_q_0 (x + 32 * b, 5, dst + ts * b, &seen));
      break;
    case LP_DTYPE_Q4_1:
      for (; nb - b0 >= 8; b0 += 8)
        blocks8_q_1 (x + 32 * b0, 4, dst + ts * b0, &seen);
      EACH_BLOCK (block_q_1 (x + 32 * b, 4, dst + ts * b, &seen));
      break;
    case LP_DTYPE_Q5_1:
      for (; nb - b0 >= 8; b0 += 8)
        blocks8_q_1 (x + 32 * b0, 5, dst + ts * b0, &seen);
      EACH_BLOCK (block_q_1 (x + 32 * b, 5, dst + ts * b, &seen));
      break;
    default:
      return -1;
    }
#undef EACH_BLOCK
  /* FLT_MAX's bits are 0x7f7fffff: a lane above them held an inf or NaN */
  const __m256i over = _mm256_cmpgt_epi32 (seen, _mm256_set1_epi32 (0x7f7fffff));
  return _mm256_testz_si256 (over, over);
}

gboolean
lp_qx86_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return lp_qx86_row_checked (type, x, n, importance, dst) >= 0;
}

#else

int
lp_qx86_row_checked (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return -1;
}

gboolean
lp_qx86_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return FALSE;
}

#endif
