/* llmpress — the scale and min search of Q4_K / Q5_K (ggml's
 * make_qkx2_quants, and make_qkx3_quants with importance, use_mad false) in
 * AVX-512 intrinsics: up to 48 sub-blocks of 32 values (six super-blocks)
 * as the lanes of three registers, x and w given as [value][lane]
 * (lp_qx86_ktranspose makes them from a row).  The reference
 * is make_qkx_quants (quant_search.c); the portable lane search qkx_lanes
 * (quant_fast.c) has the same shape.  test-quant-blocks compares the bytes
 * of the rows built on this search with both, on random and edge rows.
 *
 * Why each lane gives the reference's value:
 *   - every product, sum and quotient is the scalar code's, one vector
 *     operation each, in its order; each sum is one lane's own chain, so no
 *     add is reordered; fp-contract=off: no multiply-add is fused;
 *   - min, max, compares and branches are minps / maxps with the scalar
 *     ternary's operand order (a < b ? a : b), and masked blends;
 *   - nearest_int is its own bit trick (add 1.5*2^23, keep the mantissa,
 *     subtract 2^22), so that a huge, infinite or NaN v (qkx2's running min
 *     near the max, or a subnormal max - min) gives the same code; a step
 *     whose every v is small (the usual case) rounds with vrndscaleps,
 *     which is the same there;
 *   - a step's codes are not copied when the step wins: its iscale and min
 *     are kept, and the winner's codes are computed again at the end (the
 *     same operations on the same inputs). */
#include "config.h"

#include "quant-internal.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#pragma GCC optimize ("fp-contract=off")

#define KX512 __attribute__ ((target ("avx512f")))
#define KX512_INLINE KX512 static inline __attribute__ ((always_inline))

/* -v: a sign flip, as the scalar code's unary minus (0 - v would give +0 for +0). */
KX512_INLINE __m512
negate (__m512 v)
{
  return _mm512_castsi512_ps (_mm512_xor_si512 (_mm512_castps_si512 (v), _mm512_set1_epi32 ((int) 0x80000000u)));
}

/* MAX (0, MIN (nmax, nearest_int (v))), as float. */
KX512_INLINE __m512
code_clamped (__m512 v, __m512i nmax)
{
  const __m512 magic = _mm512_set1_ps (12582912.f);
  __m512i i = _mm512_and_si512 (_mm512_castps_si512 (_mm512_add_ps (v, magic)), _mm512_set1_epi32 (0x007fffff));
  i = _mm512_sub_epi32 (i, _mm512_set1_epi32 (0x00400000));
  i = _mm512_min_epi32 (_mm512_max_epi32 (i, _mm512_setzero_si512 ()), nmax);
  return _mm512_cvtepi32_ps (i);
}

/* The same for |v| < 2^21 (no NaN): the bit trick is then round half to
 * even, one vrndscaleps; 0 and nmax are integers, so clamping after the
 * rounding or before it is the same.  The clamp is on the bits as signed
 * integers (the vector integer units are idler than the float ones): a
 * negative float (-0 too) is a negative integer, so it becomes +0, and
 * non-negative floats order as their bits. */
KX512_INLINE __m512
code_tame (__m512 v, __m512i nmax_bits)
{
  const __m512 l = _mm512_roundscale_ps (v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512i b = _mm512_max_epi32 (_mm512_castps_si512 (l), _mm512_setzero_si512 ());
  return _mm512_castsi512_ps (_mm512_min_epi32 (b, nmax_bits));
}

/* qkx3's v > 0 ? nearest_int (MIN (v, nmax)) : 0, as float: what is
 * rounded lies in [0, nmax], where nearest_int is round half to even.  The
 * MIN on the bits, as code_tame's: it only counts where v > 0. */
KX512_INLINE __m512
code_guarded (__m512 v, __m512 nmaxf)
{
  const __m512i vmax = _mm512_min_epi32 (_mm512_castps_si512 (v), _mm512_castps_si512 (nmaxf));
  const __m512 g = _mm512_maskz_mov_ps (_mm512_cmp_ps_mask (v, _mm512_setzero_ps (), _CMP_GT_OQ),
                                        _mm512_castsi512_ps (vmax));
  return _mm512_roundscale_ps (g, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Lanes per search: up to six super-blocks (48 sub-blocks, three
 * registers), so that three independent chains of adds run side by side
 * (one lane's sum is a chain of 32 dependent adds; a single register's
 * chains leave the adders idle). */
#define KLANES_MAX 48
#define EACH(k) _Pragma ("GCC unroll 3") for (int k = 0; k < NV; k++)

/* One search of NV registers of lanes (x, w: [value][KLANES_MAX]);
 * guarded selects qkx3's code rule in the steps. */
KX512_INLINE void
ksearch (const int NV, int nmax, const float (*x)[KLANES_MAX], const float (*w)[KLANES_MAX], float rmin,
         float rdelta, int nstep, gboolean guarded, int (*L)[KLANES_MAX], float *scale_out, float *the_min_out)
{
  const __m512i nmaxi = _mm512_set1_epi32 (nmax);
  const __m512 nmaxf = _mm512_set1_ps ((float) nmax), zero = _mm512_setzero_ps ();
  /* xlo: the least x, mn: the running min (ggml's min) */
  __m512 xlo[3], mn[3], mx[3], sum_w[3], sum_x[3], iscale[3], scale[3], best[3], flat_min[3], code_iscale[3],
    code_min[3];
  __mmask16 flat[3], from_step[3];
  EACH (k)
  {
    mn[k] = mx[k] = _mm512_loadu_ps (x[0] + 16 * k);
    sum_w[k] = _mm512_loadu_ps (w[0] + 16 * k);
    sum_x[k] = _mm512_mul_ps (sum_w[k], mn[k]);
  }
  for (int i = 1; i < 32; i++)
    EACH (k)
    {
      const __m512 xi = _mm512_loadu_ps (x[i] + 16 * k), wi = _mm512_loadu_ps (w[i] + 16 * k);
      mn[k] = _mm512_min_ps (xi, mn[k]); /* x < min ? x : min */
      mx[k] = _mm512_max_ps (xi, mx[k]);
      sum_w[k] = _mm512_add_ps (sum_w[k], wi);
      sum_x[k] = _mm512_add_ps (sum_x[k], _mm512_mul_ps (wi, xi));
    }
  EACH (k)
  {
    xlo[k] = mn[k];
    mn[k] = _mm512_min_ps (zero, mn[k]); /* min > 0 ? 0 : min */
    /* a flat sub-block: ggml returns codes 0, scale 0 and -min at once;
     * its lane runs on here, and is overwritten at the end */
    flat[k] = _mm512_cmp_ps_mask (mx[k], mn[k], _CMP_LE_OQ);
    flat_min[k] = negate (mn[k]);
    iscale[k] = _mm512_div_ps (nmaxf, _mm512_sub_ps (mx[k], mn[k]));
    scale[k] = _mm512_div_ps (_mm512_set1_ps (1.f), iscale[k]);
    best[k] = zero;
  }
  for (int i = 0; i < 32; i++)
    EACH (k)
    {
      const __m512 xi = _mm512_loadu_ps (x[i] + 16 * k);
      const __m512 l = code_clamped (_mm512_mul_ps (iscale[k], _mm512_sub_ps (xi, mn[k])), nmaxi);
      __m512 diff = _mm512_sub_ps (_mm512_add_ps (_mm512_mul_ps (scale[k], l), mn[k]), xi);
      diff = _mm512_mul_ps (diff, diff);
      best[k] = _mm512_add_ps (best[k], _mm512_mul_ps (_mm512_loadu_ps (w[i] + 16 * k), diff));
    }
  /* the v = code_iscale * (x - code_min) of the codes kept; from_step:
   * the lanes whose codes came from a step (qkx3's rule) */
  EACH (k)
  {
    code_iscale[k] = iscale[k];
    code_min[k] = mn[k];
    from_step[k] = 0;
  }
  __m512 laux[32][3];
  for (int is = 0; is <= nstep; ++is)
    {
      const __m512 num = _mm512_set1_ps (rmin + rdelta * is + nmax);
      __m512 sum_l[3], sum_l2[3], sum_xl[3];
      EACH (k)
      {
        iscale[k] = _mm512_div_ps (num, _mm512_sub_ps (mx[k], mn[k]));
        sum_l[k] = sum_l2[k] = sum_xl[k] = zero;
      }
      /* qkx2's rule takes the short form when every v of every lane that
       * counts is tame: x - min and iscale * d (iscale > 0) never decrease
       * as x grows, so the v of the least and of the largest x bound them */
      __mmask16 wild = 0;
      if (!guarded)
        EACH (k)
        {
          const __m512 hi = _mm512_mul_ps (iscale[k], _mm512_sub_ps (mx[k], mn[k]));
          const __m512 lo = _mm512_mul_ps (iscale[k], _mm512_sub_ps (xlo[k], mn[k]));
          const __mmask16 tame = _mm512_cmp_ps_mask (iscale[k], zero, _CMP_GT_OQ)
                                 & _mm512_cmp_ps_mask (hi, _mm512_set1_ps (0x1p21f), _CMP_LT_OQ)
                                 & _mm512_cmp_ps_mask (lo, _mm512_set1_ps (-0x1p21f), _CMP_GT_OQ);
          wild |= ~tame & ~flat[k];
        }
#define STEP_CODES(code)                                                                \
  for (int i = 0; i < 32; i++)                                                          \
    {                                                                                   \
      __m512 ls[3];                                                                     \
      EACH (k)                                                                          \
      {                                                                                 \
        const __m512 v = _mm512_mul_ps (iscale[k], _mm512_sub_ps (_mm512_loadu_ps (x[i] + 16 * k), mn[k])); \
        ls[k] = laux[i][k] = code;                                                      \
      }                                                                                 \
      EACH (k)                                                                          \
      {                                                                                 \
        const __m512 l = ls[k];                                                         \
        const __m512 wl = _mm512_mul_ps (_mm512_loadu_ps (w[i] + 16 * k), l);          \
        sum_l[k] = _mm512_add_ps (sum_l[k], wl);                                        \
        sum_l2[k] = _mm512_add_ps (sum_l2[k], _mm512_mul_ps (wl, l));                   \
        sum_xl[k] = _mm512_add_ps (sum_xl[k], _mm512_mul_ps (wl, _mm512_loadu_ps (x[i] + 16 * k))); \
      }                                                                                 \
    }
      if (guarded)
        STEP_CODES (code_guarded (v, nmaxf))
      else if (!wild)
        STEP_CODES (code_tame (v, _mm512_castps_si512 (nmaxf)))
      else
        STEP_CODES (code_clamped (v, nmaxi))
#undef STEP_CODES
      __m512 this_scale[3], this_min[3], mad[3];
      __mmask16 ok[3];
      int any = 0;
      EACH (k)
      {
        const __m512 D = _mm512_sub_ps (_mm512_mul_ps (sum_w[k], sum_l2[k]), _mm512_mul_ps (sum_l[k], sum_l[k]));
        ok[k] = _mm512_cmp_ps_mask (D, zero, _CMP_GT_OQ);
        any |= ok[k];
        const __m512 s = _mm512_div_ps (
          _mm512_sub_ps (_mm512_mul_ps (sum_w[k], sum_xl[k]), _mm512_mul_ps (sum_x[k], sum_l[k])), D);
        const __m512 m = _mm512_div_ps (
          _mm512_sub_ps (_mm512_mul_ps (sum_l2[k], sum_x[k]), _mm512_mul_ps (sum_l[k], sum_xl[k])), D);
        const __mmask16 clip = _mm512_cmp_ps_mask (m, zero, _CMP_GT_OQ);
        this_scale[k] = _mm512_mask_blend_ps (clip, s, _mm512_div_ps (sum_xl[k], sum_l2[k]));
        this_min[k] = _mm512_mask_blend_ps (clip, m, zero);
        mad[k] = zero;
      }
      if (!any)
        continue;
      for (int i = 0; i < 32; i++)
        EACH (k)
        {
          const __m512 xi = _mm512_loadu_ps (x[i] + 16 * k);
          __m512 diff = _mm512_sub_ps (_mm512_add_ps (_mm512_mul_ps (this_scale[k], laux[i][k]), this_min[k]), xi);
          diff = _mm512_mul_ps (diff, diff);
          mad[k] = _mm512_add_ps (mad[k], _mm512_mul_ps (_mm512_loadu_ps (w[i] + 16 * k), diff));
        }
      EACH (k)
      {
        const __mmask16 take = ok[k] & _mm512_cmp_ps_mask (mad[k], best[k], _CMP_LT_OQ);
        best[k] = _mm512_mask_blend_ps (take, best[k], mad[k]);
        code_iscale[k] = _mm512_mask_blend_ps (take, code_iscale[k], iscale[k]);
        code_min[k] = _mm512_mask_blend_ps (take, code_min[k], mn[k]);
        from_step[k] |= take;
        scale[k] = _mm512_mask_blend_ps (take, scale[k], this_scale[k]);
        mn[k] = _mm512_mask_blend_ps (take, mn[k], this_min[k]);
      }
    }
  /* the kept codes, again; a flat lane's are 0 */
  for (int i = 0; i < 32; i++)
    EACH (k)
    {
      const __m512 v = _mm512_mul_ps (code_iscale[k], _mm512_sub_ps (_mm512_loadu_ps (x[i] + 16 * k), code_min[k]));
      __m512 l = code_clamped (v, nmaxi);
      if (guarded)
        l = _mm512_mask_blend_ps (from_step[k], l, code_guarded (v, nmaxf));
      _mm512_storeu_si512 (L[i] + 16 * k, _mm512_maskz_cvttps_epi32 ((__mmask16) ~flat[k], l));
    }
  EACH (k)
  {
    _mm512_storeu_ps (the_min_out + 16 * k, _mm512_mask_blend_ps (flat[k], negate (mn[k]), flat_min[k]));
    _mm512_storeu_ps (scale_out + 16 * k, _mm512_mask_blend_ps (flat[k], scale[k], zero));
  }
}

/* Rows r[0..15] of 16 floats into their columns, in place: pairs of
 * values, then of pairs, then 128-bit quarters. */
KX512_INLINE void
transpose16 (__m512 r[16])
{
  __m512 t[16];
  for (int i = 0; i < 8; i++)
    {
      t[2 * i] = _mm512_unpacklo_ps (r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps (r[2 * i], r[2 * i + 1]);
    }
  /* r[4 i + c], quarter q: column 4 q + c of rows 4 i .. 4 i + 3 */
  for (int i = 0; i < 4; i++)
    for (int h = 0; h < 2; h++)
      {
        const __m512d a = _mm512_castps_pd (t[4 * i + h]), b = _mm512_castps_pd (t[4 * i + 2 + h]);
        r[4 * i + 2 * h] = _mm512_castpd_ps (_mm512_unpacklo_pd (a, b));
        r[4 * i + 2 * h + 1] = _mm512_castpd_ps (_mm512_unpackhi_pd (a, b));
      }
  for (int c = 0; c < 4; c++)
    {
      const __m512 a = _mm512_shuffle_f32x4 (r[c], r[4 + c], 0x44), b = _mm512_shuffle_f32x4 (r[c], r[4 + c], 0xee);
      const __m512 e = _mm512_shuffle_f32x4 (r[8 + c], r[12 + c], 0x44),
                   f = _mm512_shuffle_f32x4 (r[8 + c], r[12 + c], 0xee);
      t[c] = _mm512_shuffle_f32x4 (a, e, 0x88);
      t[4 + c] = _mm512_shuffle_f32x4 (a, e, 0xdd);
      t[8 + c] = _mm512_shuffle_f32x4 (b, f, 0x88);
      t[12 + c] = _mm512_shuffle_f32x4 (b, f, 0xdd);
    }
  for (int i = 0; i < 16; i++)
    r[i] = t[i];
}

KX512 void
lp_qx86_ktranspose (const float *src, int nsb, float (*dst)[KLANES_MAX])
{
  g_return_if_fail (nsb > 0 && nsb <= KLANES_MAX / 8);
  for (int k = 0; k < KLANES_MAX / 16; k++)
    for (int half = 0; half < 2; half++)
      {
        __m512 r[16];
        for (int j = 0; j < 16; j++)
          {
            /* sub-block 16 k + j, or past 8 nsb its place in the last
             * super-block */
            const int sub = MIN (16 * k + j, 8 * (nsb - 1) + j % 8);
            r[j] = _mm512_loadu_ps (src + 32 * sub + 16 * half);
          }
        transpose16 (r);
        for (int i = 0; i < 16; i++)
          _mm512_storeu_ps (dst[16 * half + i] + 16 * k, r[i]);
      }
}

/* ggml's arguments (quantize_row_q{4,5}_K_ref and _impl), for NV registers. */
KX512_INLINE void
ksearch_args (const int NV, int nmax, gboolean importance, const float (*x)[KLANES_MAX],
              const float (*w)[KLANES_MAX], int (*L)[KLANES_MAX], float *scale, float *the_min)
{
  if (importance)
    ksearch (NV, nmax, x, w, -0.9f, 0.05f, 36, TRUE, L, scale, the_min);
  else if (nmax == 15)
    ksearch (NV, 15, x, w, -1.f, 0.1f, 20, FALSE, L, scale, the_min);
  else
    ksearch (NV, 31, x, w, -0.5f, 0.1f, 15, FALSE, L, scale, the_min);
}

KX512 void
lp_qx86_ksearch (int n_lanes, int nmax, gboolean importance, const float (*x)[KLANES_MAX],
                 const float (*w)[KLANES_MAX], int (*L)[KLANES_MAX], float *scale, float *the_min)
{
  g_return_if_fail (n_lanes > 0 && n_lanes <= KLANES_MAX);
  if (n_lanes > 32)
    ksearch_args (3, nmax, importance, x, w, L, scale, the_min);
  else if (n_lanes > 16)
    ksearch_args (2, nmax, importance, x, w, L, scale, the_min);
  else
    ksearch_args (1, nmax, importance, x, w, L, scale, the_min);
}

#else

void
lp_qx86_ktranspose (const float *src, int nsb, float (*dst)[48])
{
  g_assert_not_reached ();
}

void
lp_qx86_ksearch (int n_lanes, int nmax, gboolean importance, const float (*x)[48], const float (*w)[48],
                 int (*L)[48], float *scale, float *the_min)
{
  g_assert_not_reached ();
}

#endif
