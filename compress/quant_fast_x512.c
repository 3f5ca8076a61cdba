/* llmpress — the 32-value block quantizers (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1,
 * without importance) in AVX-512F intrinsics, sixteen blocks at a time: a
 * block is two registers, the sixteen blocks' maxima (or minima and maxima)
 * are folded into one register whose lane b is block b's, so that the
 * scales and their inverses are one vector division each.  A row's blocks
 * past a multiple of sixteen go to the AVX2 kernels (quant_fast_x86.c).
 * They write the bytes of the reference fits (quant_blocks.c, packed by
 * lp_qref_row): test-quant-blocks compares them on random and edge rows.
 *
 * Why each step gives the reference's value (see quant_fast_x86.c for the
 * scales, the f16s and the blocks whose 1/d overflows; the same holds):
 *   - roundf (v), half away from zero, is trunc (v + copysign (0.5 - 2^-25,
 *     v)) for |v| < 2^23: below a half the sum stays under the next
 *     integer, at a half it rounds (to even, in the add) up to it; the
 *     largest float under one half is what makes the ties come out, where
 *     v + 0.5 would round 0.49999997 up to 1.  Q8_0's v is at most about
 *     127;
 *   - the codes are written by vpmov's saturating or truncating narrowing,
 *     exact for codes in [-127, 127] (Q8_0) and for the low byte (nibbles);
 *   - products and sums are one multiply or one add each, fp-contract=off:
 *     nothing is fused. */
#include "config.h"

#include "quant-internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <float.h>
#include <immintrin.h>

#include "compute-internal.h"

#if !defined(__clang__)
#pragma GCC optimize ("fp-contract=off")
#endif

#define QX512 __attribute__ ((target ("avx512f")))
#define QX512_INLINE QX512 static inline __attribute__ ((always_inline))

/* Blocks taken at a time: one lane of a register each. */
#define NB 16

enum { FOLD_MAX_BITS, FOLD_MIN, FOLD_MAX };

/* vpternlogd's truth tables of its operands a, b, c: an immediate is the
 * expression of the function on these. */
#define TA 0xf0
#define TB 0xcc
#define TC 0xaa

QX512_INLINE __m512
fold_op (int op, __m512 a, __m512 b)
{
  switch (op)
    {
    case FOLD_MAX_BITS:
      return _mm512_castsi512_ps (_mm512_max_epi32 (_mm512_castps_si512 (a), _mm512_castps_si512 (b)));
    case FOLD_MIN:
      return _mm512_min_ps (a, b);
    default:
      return _mm512_max_ps (a, b);
    }
}

/* Sixteen registers' lanes folded: lane 4k + j of the result is the least or
 * largest lane of in[k + 4j] (callers put block b at in[slot (b)]).  A
 * transpose with the fold at each step: 45 instructions for sixteen blocks
 * where a fold per block takes eight each. */
QX512_INLINE __m512
fold16 (int op, const __m512 in[NB])
{
  __m512 r[8], s[4], u[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) /* halves: lanes 0-7 in[2i]'s, 8-15 in[2i+1]'s */
    r[i] = fold_op (op, _mm512_shuffle_f32x4 (in[2 * i], in[2 * i + 1], _MM_SHUFFLE (1, 0, 1, 0)),
                    _mm512_shuffle_f32x4 (in[2 * i], in[2 * i + 1], _MM_SHUFFLE (3, 2, 3, 2)));
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) /* quarters: quarter k in[4i + k]'s */
    s[i] = fold_op (op, _mm512_shuffle_f32x4 (r[2 * i], r[2 * i + 1], _MM_SHUFFLE (2, 0, 2, 0)),
                    _mm512_shuffle_f32x4 (r[2 * i], r[2 * i + 1], _MM_SHUFFLE (3, 1, 3, 1)));
#pragma GCC unroll 2
  for (int i = 0; i < 2; i++) /* pairs of lanes: quarter k in[8i + k]'s, in[8i + 4 + k]'s */
    u[i] = fold_op (op,
                    _mm512_castpd_ps (_mm512_unpacklo_pd (_mm512_castps_pd (s[2 * i]), _mm512_castps_pd (s[2 * i + 1]))),
                    _mm512_castpd_ps (_mm512_unpackhi_pd (_mm512_castps_pd (s[2 * i]), _mm512_castps_pd (s[2 * i + 1]))));
  return fold_op (op, _mm512_shuffle_ps (u[0], u[1], _MM_SHUFFLE (2, 0, 2, 0)),
                  _mm512_shuffle_ps (u[0], u[1], _MM_SHUFFLE (3, 1, 3, 1)));
}

/* Where fold16 wants block b, so that lane b of its result is block b's. */
static inline int
slot (int b)
{
  return (b % 4) * 4 + b / 4;
}

/* The sixteen scales d as f16 bits, and d ? 1 / d : 0 (each lane the
 * scalar division's value) into ids. */
QX512_INLINE __m512
scales16 (__m512 d, guint16 d16[NB], float ids[NB])
{
  const __mmask16 nonzero = _mm512_cmp_ps_mask (d, _mm512_setzero_ps (), _CMP_NEQ_UQ);
  const __m512 id = _mm512_maskz_div_ps (nonzero, _mm512_set1_ps (1.0f), d);
  _mm256_storeu_si256 ((__m256i *) d16, _mm512_cvtps_ph (d, _MM_FROUND_TO_NEAREST_INT));
  _mm512_storeu_ps (ids, id);
  return id;
}

/* roundf (v) for |v| < 2^23 (see the top): v's sign onto 0.5 - 2^-25 by
 * one bitwise select, an add, a truncation. */
QX512_INLINE __m512i
round_away (__m512 v)
{
  const __m512i bias = _mm512_ternarylogic_epi32 (_mm512_castps_si512 (v), _mm512_set1_epi32 ((int) 0x80000000u),
                                                  _mm512_set1_epi32 (0x3effffff), (TB & TA) | (~TB & TC));
  return _mm512_cvttps_epi32 (_mm512_add_ps (v, _mm512_castsi512_ps (bias)));
}

/* quantize_row_q8_0_ref, sixteen blocks; FALSE when a value was not finite. */
QX512_INLINE gboolean
blocks16_q8_0 (const float *x, guint8 *dst)
{
  const __m512i mag = _mm512_set1_epi32 (0x7fffffff);
  __m512 m[NB];
#pragma GCC unroll 16
  for (int b = 0; b < NB; b++)
    {
      /* |x|'s bits: they order as |x| does, an inf or NaN above FLT_MAX */
      lp_qprefetch_block (x + 32 * b);
      const __m512i a = _mm512_and_si512 (_mm512_loadu_si512 (x + 32 * b), mag);
      const __m512i c = _mm512_and_si512 (_mm512_loadu_si512 (x + 32 * b + 16), mag);
      m[slot (b)] = _mm512_castsi512_ps (_mm512_max_epi32 (a, c));
    }
  const __m512 amax = fold16 (FOLD_MAX_BITS, m);
  const gboolean finite = !_mm512_cmpgt_epi32_mask (_mm512_castps_si512 (amax), _mm512_set1_epi32 (0x7f7fffff));
  const __m512 d = _mm512_div_ps (amax, _mm512_set1_ps ((1 << 7) - 1));
  guint16 d16[NB];
  float ids[NB];
  const __m512 id = scales16 (d, d16, ids);
  /* !(id <= FLT_MAX): every x * id is infinite or NaN, the codes 0 */
  const __mmask16 huge = _mm512_cmp_ps_mask (id, _mm512_set1_ps (FLT_MAX), _CMP_NLE_UQ);
#pragma GCC unroll 2
  for (int b = 0; b < NB; b++)
    {
      guint8 *o = dst + 34 * b;
      lp_qwrite_u16 (o, d16[b]);
      if (huge & (1u << b))
        {
          memset (o + 2, 0, 32);
          continue;
        }
      const __m512 vid = _mm512_set1_ps (ids[b]);
#pragma GCC unroll 2
      for (int k = 0; k < 2; k++)
        _mm_storeu_si128 ((__m128i *) (o + 2 + 16 * k),
                          _mm512_cvtsepi32_epi8 (round_away (_mm512_mul_ps (_mm512_loadu_ps (x + 32 * b + 16 * k), vid))));
    }
  return finite;
}

/* Sixteen blocks' min and max, lane b block b's (a zero's sign aside);
 * FALSE when a value was not finite. */
QX512_INLINE gboolean
minmax16 (const float *x, __m512 *mn, __m512 *mx)
{
  __m512 lo[NB], hi[NB];
  __mmask16 nan = 0;
#pragma GCC unroll 16
  for (int b = 0; b < NB; b++)
    {
      lp_qprefetch_block (x + 32 * b);
      const __m512 a = _mm512_loadu_ps (x + 32 * b), c = _mm512_loadu_ps (x + 32 * b + 16);
      nan |= _mm512_cmp_ps_mask (a, c, _CMP_UNORD_Q);
      lo[slot (b)] = _mm512_min_ps (a, c);
      hi[slot (b)] = _mm512_max_ps (a, c);
    }
  *mn = fold16 (FOLD_MIN, lo);
  *mx = fold16 (FOLD_MAX, hi);
  /* no NaN: an infinity is a block's min or max */
  return !nan && !_mm512_cmp_ps_mask (*mn, _mm512_set1_ps (-FLT_MAX), _CMP_LT_OQ)
         && !_mm512_cmp_ps_mask (*mx, _mm512_set1_ps (FLT_MAX), _CMP_GT_OQ);
}

/* One block's codes (int) (v * id + bias) capped at nmax, v = x (Q4_0,
 * Q5_0) or x - min (Q4_1, Q5_1: has_min), packed: qh (bit j the code j's bit 4) when qh is not NULL, and the
 * nibbles (element j low, j + 16 high). */
QX512_INLINE void
pack_block (const float *x, gboolean has_min, float min, float id, float bias, int nmax, guint8 *qh, guint8 *qs)
{
  __m512i q[2];
#pragma GCC unroll 2
  for (int k = 0; k < 2; k++)
    {
      __m512 v = _mm512_loadu_ps (x + 16 * k);
      if (has_min)
        v = _mm512_sub_ps (v, _mm512_set1_ps (min));
      v = _mm512_add_ps (_mm512_mul_ps (v, _mm512_set1_ps (id)), _mm512_set1_ps (bias));
      q[k] = _mm512_min_epi32 (_mm512_cvttps_epi32 (v), _mm512_set1_epi32 (nmax));
    }
  if (qh != NULL)
    {
      const __m512i bit4 = _mm512_set1_epi32 (16);
      const guint32 h = (guint32) _mm512_test_epi32_mask (q[0], bit4)
                        | (guint32) _mm512_test_epi32_mask (q[1], bit4) << 16;
      for (int i = 0; i < 4; i++)
        qh[i] = (h >> (8 * i)) & 0xff;
    }
  /* low nibble from q[0], the next four bits from q[1]; vpmovdb keeps the
   * low byte */
  const __m512i nib = _mm512_ternarylogic_epi32 (_mm512_set1_epi32 (0x0f), q[0], _mm512_slli_epi32 (q[1], 4),
                                                 (TA & TB) | (~TA & TC));
  _mm_storeu_si128 ((__m128i *) qs, _mm512_cvtepi32_epi8 (nib));
}

/* quantize_row_q{4,5}_0_ref, sixteen blocks; FALSE when a value was not
 * finite. */
QX512_INLINE gboolean
blocks16_q_0 (const float *x, int bits, guint8 *dst)
{
  const int half = 1 << (bits - 1);
  const gsize ts = bits == 5 ? 22 : 18;
  __m512 mn, mx;
  if (!minmax16 (x, &mn, &mx))
    return FALSE;
  const __m512 neg_mn = _mm512_castsi512_ps (
      _mm512_xor_si512 (_mm512_castps_si512 (mn), _mm512_set1_epi32 ((int) 0x80000000u)));
  /* lp_qsigned_absmax: -min > max ? min : max, and a tie by the scan */
  __m512 smax = _mm512_mask_blend_ps (_mm512_cmp_ps_mask (neg_mn, mx, _CMP_GT_OQ), mx, mn);
  const __mmask16 ties = _mm512_cmp_ps_mask (mx, neg_mn, _CMP_EQ_OQ);
  if (ties)
    {
      float mns[NB], mxs[NB], sm[NB];
      _mm512_storeu_ps (mns, mn);
      _mm512_storeu_ps (mxs, mx);
      _mm512_storeu_ps (sm, smax);
      for (int b = 0; b < NB; b++)
        if (ties & (1u << b))
          sm[b] = lp_qsigned_absmax (x + 32 * b, 32, mns[b], mxs[b]);
      smax = _mm512_loadu_ps (sm);
    }
  const __m512 d = _mm512_div_ps (smax, _mm512_set1_ps ((float) -half));
  guint16 d16[NB];
  float ids[NB];
  scales16 (d, d16, ids);
  for (int b = 0; b < NB; b++)
    {
      guint8 *o = dst + ts * b;
      lp_qwrite_u16 (o, d16[b]);
      pack_block (x + 32 * b, FALSE, 0.0f, ids[b], half + 0.5f, (1 << bits) - 1, bits == 5 ? o + 2 : NULL,
                  o + (bits == 5 ? 6 : 2));
    }
  return TRUE;
}

/* quantize_row_q{4,5}_1_ref, sixteen blocks; FALSE when a value was not
 * finite.  A block whose min or max is 0 takes lp_qfirst_zero_extremes for
 * the zero's sign. */
QX512_INLINE gboolean
blocks16_q_1 (const float *x, int bits, guint8 *dst)
{
  const int nmax = (1 << bits) - 1;
  const gsize ts = bits == 5 ? 24 : 20;
  __m512 mn, mx;
  if (!minmax16 (x, &mn, &mx))
    return FALSE;
  const __m512 zero = _mm512_setzero_ps ();
  const __mmask16 zeros = _mm512_cmp_ps_mask (mn, zero, _CMP_EQ_OQ) | _mm512_cmp_ps_mask (mx, zero, _CMP_EQ_OQ);
  float mins[NB];
  _mm512_storeu_ps (mins, mn);
  if (zeros)
    {
      float maxs[NB];
      _mm512_storeu_ps (maxs, mx);
      for (int b = 0; b < NB; b++)
        if (zeros & (1u << b))
          lp_qfirst_zero_extremes (x + 32 * b, 32, mins + b, maxs + b);
      mn = _mm512_loadu_ps (mins);
      mx = _mm512_loadu_ps (maxs);
    }
  const __m512 d = _mm512_div_ps (_mm512_sub_ps (mx, mn), _mm512_set1_ps ((float) nmax));
  guint16 d16[NB], m16[NB];
  float ids[NB];
  scales16 (d, d16, ids);
  _mm256_storeu_si256 ((__m256i *) m16, _mm512_cvtps_ph (mn, _MM_FROUND_TO_NEAREST_INT));
  for (int b = 0; b < NB; b++)
    {
      guint8 *o = dst + ts * b;
      lp_qwrite_u16 (o, d16[b]);
      lp_qwrite_u16 (o + 2, m16[b]);
      pack_block (x + 32 * b, TRUE, mins[b], ids[b], 0.5f, nmax, bits == 5 ? o + 4 : NULL, o + (bits == 5 ? 8 : 4));
    }
  return TRUE;
}

QX512 int
lp_qx512_row_checked (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  if (!lp_cpu_have_avx512 () || !lp_cpu_have_avx2 ())
    return -1;
  if (importance != NULL && type != LP_DTYPE_Q8_0) /* quantize_q8_0 ignores importance */
    return -1;
  const gint64 nb = n / 32, head = nb - nb % NB;
  const gsize ts = lp_dtype_info (type)->type_size;
  /* One loop per type, so that each block's bit width is a constant. */
#define EACH_16(call)                                                                                  \
  for (gint64 b = 0; b < head; b += NB)                                                                \
    if (!(call))                                                                                       \
      return 0;
  switch (type)
    {
    case LP_DTYPE_Q8_0:
      EACH_16 (blocks16_q8_0 (x + 32 * b, dst + ts * b));
      break;
    case LP_DTYPE_Q4_0:
      EACH_16 (blocks16_q_0 (x + 32 * b, 4, dst + ts * b));
      break;
    case LP_DTYPE_Q5_0:
      EACH_16 (blocks16_q_0 (x + 32 * b, 5, dst + ts * b));
      break;
    case LP_DTYPE_Q4_1:
      EACH_16 (blocks16_q_1 (x + 32 * b, 4, dst + ts * b));
      break;
    case LP_DTYPE_Q5_1:
      EACH_16 (blocks16_q_1 (x + 32 * b, 5, dst + ts * b));
      break;
    default:
      return -1;
    }
#undef EACH_16
  if (head == nb)
    return 1;
  return lp_qx86_row_checked (type, x + 32 * head, 32 * (nb - head), NULL, dst + ts * head) == 1;
}

#else

int
lp_qx512_row_checked (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return -1;
}

#endif

gboolean
lp_qx512_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return lp_qx512_row_checked (type, x, n, importance, dst) >= 0;
}
