/* llmpress — the fast row quantizers behind lp_quantize_row for the common
 * cases: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 without importance, and Q4_K, Q5_K
 * with or without it.  Every other case, and the definition of the bytes,
 * is the reference: the fits of quant_blocks.c / quant_kblocks.c /
 * quant_search.c packed block by block (lp_qref_row, quant.c).  The bytes
 * are the same: test-quant-blocks compares the two on random rows and on
 * the awkward blocks (zero, tiny, outliers, constant runs).
 *
 * The speed comes from loops the compiler vectorises without reassociating
 * a single float sum (llama.cpp's files are reproduced only when every sum
 * runs in ggml's order):
 *   - 32-value blocks: max |x|, min and max are exact whatever the order,
 *     so they are taken over 8 lanes and folded; the codes are elementwise;
 *     roundf is written with a truncation (no libm call).
 *   - K-quants: the scale search (make_qkx2/3_quants) of two super-blocks'
 *     16 sub-blocks runs as 16 lanes, the sub-blocks side by side
 *     ([value][lane] arrays): each lane accumulates its own sums in ggml's
 *     order, and every branch of the search becomes a per-lane select.
 *     lp_qx86_krow runs the same rows with the search of six super-blocks
 *     in AVX-512 intrinsics (quant_ksearch_x86.c), where the CPU has it. */
#include "config.h"

#include <float.h>
#include <math.h>

#include "compute-internal.h"
#include "quant-internal.h"

/* GCC's -O2 vectorises only loops its "very cheap" cost model accepts,
 * which leaves out the lane loops below (the lane loop is unrolled into the
 * value loop, which is then vectorised lane-wise: no sum changes order);
 * and with -ftrapping-math it keeps a float select as a branch (a compare
 * could raise a flag nobody reads here).  Neither option changes a value.
 * fp-contract=off keeps a multiply and an add apart in the copies whose
 * target has FMA (GNU C fuses them by default), as ggml's reference does. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize ("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math", "fp-contract=off")
#endif

#define LANES 8
/* K-quants: super-blocks searched at once, 8 sub-blocks (lanes) each: two
 * in the portable search (more lanes spill its sums to memory), six in the
 * AVX-512 one (lp_qx86_ksearch); the arrays of a search are [value][lane]
 * with kl = 8 * ksup lanes to a row. */
#define K_SUPER 2
#define KLANES (8 * K_SUPER)
#define K_SUPER_X86 6
#define K_SUPER_MAX 6

/* The kernels are inlined into lp_qfast_row, so that its AVX2 copy holds
 * them all, and the search into each caller with its constants (the rule,
 * the code range): a variable rule leaves a branch in the loop that stops
 * the vectoriser. */
#if defined(__GNUC__)
#define LP_ALWAYS_INLINE __attribute__ ((always_inline))
#else
#define LP_ALWAYS_INLINE
#endif

/* roundf (v) (half away from zero) for |v| < 2^31, without libm. */
static inline int
round_away (float v)
{
  int i = (int) v;
  float f = v - (float) i; /* exact: i is v truncated */
  return i + (f >= 0.5f) - (f <= -0.5f);
}

/* max |x| over 32 values: 8 lanes, then folded (max is exact in any order). */
static inline float
absmax32 (const float *x)
{
  float m[LANES];
  for (int k = 0; k < LANES; k++)
    m[k] = fabsf (x[k]);
  for (int j = LANES; j < 32; j += LANES)
    for (int k = 0; k < LANES; k++)
      {
        float a = fabsf (x[j + k]);
        m[k] = a > m[k] ? a : m[k];
      }
  float amax = 0;
  for (int k = 0; k < LANES; k++)
    amax = m[k] > amax ? m[k] : amax;
  return amax;
}

static inline void
minmax32 (const float *x, float *min, float *max)
{
  float lo[LANES], hi[LANES];
  for (int k = 0; k < LANES; k++)
    lo[k] = hi[k] = x[k];
  for (int j = LANES; j < 32; j += LANES)
    for (int k = 0; k < LANES; k++)
      {
        lo[k] = x[j + k] < lo[k] ? x[j + k] : lo[k];
        hi[k] = x[j + k] > hi[k] ? x[j + k] : hi[k];
      }
  *min = lo[0], *max = hi[0];
  for (int k = 1; k < LANES; k++)
    {
      *min = lo[k] < *min ? lo[k] : *min;
      *max = hi[k] > *max ? hi[k] : *max;
    }
}

/* Nibbles of 32 codes (element j low, j + 16 high) and, for 5 bits, qh. */
static inline guint8 *
pack_low_bits (const int *L, int bits, guint8 *dst)
{
  if (bits == 5)
    {
      guint32 qh = 0;
      for (int j = 0; j < 32; j++)
        qh |= (guint32) ((L[j] >> 4) & 1) << j;
      for (int b = 0; b < 4; b++)
        dst[b] = (qh >> (8 * b)) & 0xff;
      dst += 4;
    }
  for (int j = 0; j < 16; j++)
    dst[j] = (guint8) ((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
  return dst + 16;
}

/* quantize_row_q8_0_ref, one block. */
static inline void
block_q8_0 (const float *x, guint8 *dst)
{
  const float d = absmax32 (x) / ((1 << 7) - 1);
  const float id = d ? 1.0f / d : 0.0f;
  lp_qwrite_u16 (dst, lp_f32_to_f16 (d));
  if (!(id <= FLT_MAX))
    {
      /* a scale so small that 1/d overflows: every x * id is infinite or
       * NaN, and (int8_t) roundf () of it is 0 on x86 (the low byte of
       * cvttss2si's INT_MIN); round_away would move that by one */
      memset (dst + 2, 0, 32);
      return;
    }
  for (int j = 0; j < 32; j++)
    dst[2 + j] = (guint8) (gint8) round_away (x[j] * id);
}

/* quantize_row_q{4,5}_0_ref, one block. */
static inline void
block_q_0 (const float *x, int bits, guint8 *dst)
{
  const int half = 1 << (bits - 1), nmax = (1 << bits) - 1;
  float min, max;
  minmax32 (x, &min, &max);
  max = lp_qsigned_absmax (x, 32, min, max);
  const float d = max / -half;
  const float id = d ? 1.0f / d : 0.0f;
  int L[32];
  for (int j = 0; j < 32; j++)
    {
      int l = (int) (x[j] * id + (half + 0.5f));
      L[j] = l < nmax ? l : nmax;
    }
  lp_qwrite_u16 (dst, lp_f32_to_f16 (d));
  pack_low_bits (L, bits, dst + 2);
}

/* quantize_row_q{4,5}_1_ref, one block. */
static inline void
block_q_1 (const float *x, int bits, guint8 *dst)
{
  const int nmax = (1 << bits) - 1;
  float min, max;
  minmax32 (x, &min, &max);
  lp_qfirst_zero_extremes (x, 32, &min, &max);
  const float d = (max - min) / nmax;
  const float id = d ? 1.0f / d : 0.0f;
  int L[32];
  for (int j = 0; j < 32; j++)
    {
      int l = (int) ((x[j] - min) * id + 0.5f);
      L[j] = l < nmax ? l : nmax;
    }
  lp_qwrite_u16 (dst, lp_f32_to_f16 (d));
  lp_qwrite_u16 (dst + 2, lp_f32_to_f16 (min));
  pack_low_bits (L, bits, dst + 4);
}

/* ---- K-quants: 8 sub-blocks as lanes ---- */

/* lp_nearest_int, written so that it vectorises (the same bits). */
static inline int
nearest (float f)
{
  union { float f; int i; } u = { f + 12582912.f };
  return (u.i & 0x007fffff) - 0x00400000;
}

static inline int
clamp_code (int l, int nmax)
{
  l = l < 0 ? 0 : l;
  return l > nmax ? nmax : l;
}

/* make_qkx2_quants (guarded FALSE) / make_qkx3_quants (TRUE) with use_mad
 * FALSE on KLANES groups of n values at once: x and w are [n][KLANES]
 * (group = lane).  Codes into L, and each group's scale and -min. */
static inline LP_ALWAYS_INLINE void
qkx_lanes (int n, int nmax, const float (*x)[KLANES], const float (*w)[KLANES], float rmin, float rdelta,
           int nstep, gboolean guarded, int (*L)[KLANES], float *scale, float *the_min)
{
  float mn[KLANES], mx[KLANES], sum_w[KLANES], sum_x[KLANES], iscale[KLANES], best[KLANES], flat_min[KLANES];
  int flat[KLANES];
  int Laux[32][KLANES];
  for (int j = 0; j < KLANES; j++)
    {
      mn[j] = mx[j] = x[0][j];
      sum_w[j] = w[0][j];
      sum_x[j] = sum_w[j] * x[0][j];
    }
  for (int i = 1; i < n; i++)
    for (int j = 0; j < KLANES; j++)
      {
        mn[j] = x[i][j] < mn[j] ? x[i][j] : mn[j];
        mx[j] = x[i][j] > mx[j] ? x[i][j] : mx[j];
        sum_w[j] += w[i][j];
        sum_x[j] += w[i][j] * x[i][j];
      }
  for (int j = 0; j < KLANES; j++)
    {
      mn[j] = mn[j] > 0 ? 0 : mn[j];
      /* a flat group: ggml returns at once; here its lane runs on, ignored */
      flat[j] = mx[j] <= mn[j];
      flat_min[j] = -mn[j];
      iscale[j] = nmax / (mx[j] - mn[j]);
      scale[j] = 1 / iscale[j];
      best[j] = 0;
    }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < KLANES; j++)
      {
        const int l = clamp_code (nearest (iscale[j] * (x[i][j] - mn[j])), nmax);
        L[i][j] = l;
        float diff = scale[j] * l + mn[j] - x[i][j];
        diff = diff * diff;
        best[j] += w[i][j] * diff;
      }
  const int rule = guarded ? -1 : 0; /* a mask: a select, not a branch */
  for (int is = 0; is <= nstep; ++is)
    {
      const float num = rmin + rdelta * is + nmax;
      float sum_l[KLANES], sum_l2[KLANES], sum_xl[KLANES];
      for (int j = 0; j < KLANES; j++)
        {
          iscale[j] = num / (mx[j] - mn[j]);
          sum_l[j] = sum_l2[j] = sum_xl[j] = 0;
        }
      for (int i = 0; i < n; i++)

        for (int j = 0; j < KLANES; j++)
          {
            const float v = iscale[j] * (x[i][j] - mn[j]);
            /* both rules computed, one chosen: no branch in the loop */
            const float vmax = v < nmax ? v : nmax;
            const int lg = nearest (v > 0 ? vmax : 0.f);
            const int ln = clamp_code (nearest (v), nmax);
            const int l = ln + ((lg - ln) & rule);
            Laux[i][j] = l;
            const float wl = w[i][j] * l;
            sum_l[j] += wl;
            sum_l2[j] += wl * l;
            sum_xl[j] += wl * x[i][j];
          }
      float this_scale[KLANES], this_min[KLANES], mad[KLANES];
      int ok[KLANES], take[KLANES], any = 0;
      for (int j = 0; j < KLANES; j++)
        {
          const float D = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
          float s = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / D;
          float m = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / D;
          const int clip = m > 0;
          this_scale[j] = clip ? sum_xl[j] / sum_l2[j] : s;
          this_min[j] = clip ? 0 : m;
          ok[j] = D > 0;
          any |= ok[j];
          mad[j] = 0;
        }
      if (!any)
        continue;
      for (int i = 0; i < n; i++)

        for (int j = 0; j < KLANES; j++)
          {
            float diff = this_scale[j] * Laux[i][j] + this_min[j] - x[i][j];
            diff = diff * diff;
            mad[j] += w[i][j] * diff;
          }
      any = 0;
      for (int j = 0; j < KLANES; j++)
        {
          take[j] = ok[j] && mad[j] < best[j];
          any |= take[j];
          best[j] = take[j] ? mad[j] : best[j];
          scale[j] = take[j] ? this_scale[j] : scale[j];
          mn[j] = take[j] ? this_min[j] : mn[j];
        }
      if (any)
        for (int i = 0; i < n; i++)
          for (int j = 0; j < KLANES; j++)
            L[i][j] = take[j] ? Laux[i][j] : L[i][j];
    }
  for (int j = 0; j < KLANES; j++)
    {
      the_min[j] = flat[j] ? flat_min[j] : -mn[j];
      scale[j] = flat[j] ? 0.f : scale[j];
    }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < KLANES; j++)
      L[i][j] = flat[j] ? 0 : L[i][j];
}

/* The four searches of Q4_K / Q5_K (ggml's arguments), each with its
 * constants inlined. */
static inline LP_ALWAYS_INLINE void
qkx2_q4 (const float (*x)[KLANES], const float (*w)[KLANES], int (*L)[KLANES], float *scale, float *the_min)
{
  qkx_lanes (32, 15, x, w, -1.f, 0.1f, 20, FALSE, L, scale, the_min);
}

static inline LP_ALWAYS_INLINE void
qkx2_q5 (const float (*x)[KLANES], const float (*w)[KLANES], int (*L)[KLANES], float *scale, float *the_min)
{
  qkx_lanes (32, 31, x, w, -0.5f, 0.1f, 15, FALSE, L, scale, the_min);
}

static inline LP_ALWAYS_INLINE void
qkx3_q4 (const float (*x)[KLANES], const float (*w)[KLANES], int (*L)[KLANES], float *scale, float *the_min)
{
  qkx_lanes (32, 15, x, w, -0.9f, 0.05f, 36, TRUE, L, scale, the_min);
}

static inline LP_ALWAYS_INLINE void
qkx3_q5 (const float (*x)[KLANES], const float (*w)[KLANES], int (*L)[KLANES], float *scale, float *the_min)
{
  qkx_lanes (32, 31, x, w, -0.9f, 0.05f, 36, TRUE, L, scale, the_min);
}

/* The codes and bytes of one Q4_K / Q5_K super-block x from its search:
 * codes L[l][lane0 + j] and 8 scales and mins (sw: the sub-blocks' weight
 * sums, with importance).  ggml's steps after the search (fit_q45_k +
 * requantize + the packing of lp_qpack_kblock). */
static inline LP_ALWAYS_INLINE void
finish_q45_k (const float *x, int kl, const int (*L)[kl], int lane0, const float *scales, const float *mins,
              const float *sw, int nmax, guint8 *dst)
{
  guint8 Ls[8], Lm[8];
  guint16 d16, m16;
  lp_qk45_super_scales (scales, mins, sw, Ls, Lm, &d16, &m16);
  /* the stored scales, as get_scale_min_k4 reads them back */
  guint8 packed[12], sc[8], mi[8];
  lp_qencode_scales_k4 (Ls, Lm, packed);
  for (int j = 0; j < 8; ++j)
    lp_get_scale_min_k4 (j, packed, &sc[j], &mi[j]);
  /* ggml's re-quantization against the stored scales (a zero step keeps
   * the search's codes) */
  const float dv = lp_f16_to_f32 (d16), mv = lp_f16_to_f32 (m16);
  int q[QK_K];
  for (int j = 0; j < 8; ++j)
    {
      const float d = dv * sc[j], dm = mv * mi[j];
      const float *xs = x + 32 * j;
      int *qs = q + 32 * j;
      if (!d)
        {
          for (int l = 0; l < 32; ++l)
            qs[l] = L[l][lane0 + j];
          continue;
        }
      for (int l = 0; l < 32; ++l)
        {
          int v = nearest ((xs[l] + dm) / d);
          qs[l] = v < 0 ? 0 : v > nmax ? nmax : v;
        }
    }
  lp_qwrite_u16 (dst, d16);
  lp_qwrite_u16 (dst + 2, m16);
  memcpy (dst + 4, packed, 12);
  guint8 *ql = dst + 16;
  if (nmax == 31)
    {
      guint8 *qh = dst + 16;
      ql = dst + 48;
      memset (qh, 0, 32);
      for (int n = 0; n < QK_K; n += 64)
        for (int j = 0; j < 32; ++j)
          {
            qh[j] |= (guint8) (((q[n + j] >> 4) & 1) << (n / 32));
            qh[j] |= (guint8) (((q[n + j + 32] >> 4) & 1) << (n / 32 + 1));
          }
    }
  for (int j = 0; j < QK_K; j += 64)
    for (int l = 0; l < 32; ++l)
      ql[j / 2 + l] = (guint8) ((q[j + l] & 0x0f) | ((q[j + l + 32] & 0x0f) << 4));
}

/* nsb (1 .. K_SUPER) Q4_K / Q5_K super-blocks side by side
 * (quantize_row_q{4,5}_K_ref, or _impl with importance qw): their 8
 * sub-blocks each are the lanes of one search, so that each sum's chain of
 * adds (one lane's, in ggml's order) runs beside K_SUPER - 1 others instead
 * of waiting on itself.  Lanes past nsb repeat the last super-block and are
 * dropped. */
static inline LP_ALWAYS_INLINE void
blocks_q45_k (const float *x, const float *qw, int nsb, int nmax, gsize ts, const int ksup, gboolean x86_search,
              guint8 *dst)
{
  const int kl = 8 * ksup;
  /* x, the importance and the weights as [value][sub-block] */
  float xbuf[32 * 8 * K_SUPER_MAX], qbuf[32 * 8 * K_SUPER_MAX], wbuf[32 * 8 * K_SUPER_MAX];
  float scales[8 * K_SUPER_MAX], mins[8 * K_SUPER_MAX], sw[8 * K_SUPER_MAX] = { 0 };
  int Lbuf[32 * 8 * K_SUPER_MAX];
  float (*xt)[kl] = (float (*)[kl]) xbuf, (*qt)[kl] = (float (*)[kl]) qbuf, (*wt)[kl] = (float (*)[kl]) wbuf;
  int (*L)[kl] = (int (*)[kl]) Lbuf;
  if (x86_search)
    {
      lp_qx86_ktranspose (x, nsb, (float (*)[8 * K_SUPER_X86]) xbuf);
      if (qw != NULL)
        lp_qx86_ktranspose (qw, nsb, (float (*)[8 * K_SUPER_X86]) qbuf);
    }
  else
    {
      gsize first[8 * K_SUPER_MAX];
      for (int j = 0; j < kl; j++)
        first[j] = QK_K * MIN (j / 8, nsb - 1) + 32 * (j % 8);
      for (int l = 0; l < 32; l++)
        for (int j = 0; j < kl; j++)
          xt[l][j] = x[first[j] + l];
      if (qw != NULL)
        for (int l = 0; l < 32; l++)
          for (int j = 0; j < kl; j++)
            qt[l][j] = qw[first[j] + l];
    }
  if (qw == NULL)
    {
      float sum_x2[8 * K_SUPER_MAX] = { 0 }, av_x[8 * K_SUPER_MAX];
      for (int l = 0; l < 32; l++)
        for (int j = 0; j < kl; j++)
          sum_x2[j] += xt[l][j] * xt[l][j];
      for (int j = 0; j < kl; j++)
        av_x[j] = sqrtf (sum_x2[j] / 32);
      for (int l = 0; l < 32; l++)
        for (int j = 0; j < kl; j++)
          wt[l][j] = av_x[j] + fabsf (xt[l][j]);
      if (x86_search)
        lp_qx86_ksearch (8 * nsb, nmax, FALSE, (const float (*)[8 * K_SUPER_X86]) xbuf,
                         (const float (*)[8 * K_SUPER_X86]) wbuf, (int (*)[8 * K_SUPER_X86]) Lbuf, scales, mins);
      else if (nmax == 15)
        qkx2_q4 ((const float (*)[KLANES]) xbuf, (const float (*)[KLANES]) wbuf, (int (*)[KLANES]) Lbuf, scales, mins);
      else
        qkx2_q5 ((const float (*)[KLANES]) xbuf, (const float (*)[KLANES]) wbuf, (int (*)[KLANES]) Lbuf, scales, mins);
    }
  else
    {
      float sigma2[8 * K_SUPER_MAX];
      for (int s = 0; s < ksup; s++)
        {
          const float *xs = x + QK_K * MIN (s, nsb - 1);
          float sum_x2 = 0;
          for (int l = 0; l < QK_K; ++l)
            sum_x2 += xs[l] * xs[l];
          for (int j = 0; j < 8; j++)
            sigma2[8 * s + j] = 2 * sum_x2 / QK_K;
        }
      for (int l = 0; l < 32; l++)
        for (int j = 0; j < kl; j++)
          wt[l][j] = qt[l][j] * sqrtf (sigma2[j] + xt[l][j] * xt[l][j]);
      for (int l = 0; l < 32; l++)
        for (int j = 0; j < kl; j++)
          sw[j] += wt[l][j];
      if (x86_search)
        lp_qx86_ksearch (8 * nsb, nmax, TRUE, (const float (*)[8 * K_SUPER_X86]) xbuf,
                         (const float (*)[8 * K_SUPER_X86]) wbuf, (int (*)[8 * K_SUPER_X86]) Lbuf, scales, mins);
      else if (nmax == 15)
        qkx3_q4 ((const float (*)[KLANES]) xbuf, (const float (*)[KLANES]) wbuf, (int (*)[KLANES]) Lbuf, scales, mins);
      else
        qkx3_q5 ((const float (*)[KLANES]) xbuf, (const float (*)[KLANES]) wbuf, (int (*)[KLANES]) Lbuf, scales, mins);
    }
  for (int s = 0; s < nsb; s++)
    finish_q45_k (x + QK_K * s, kl, (const int (*)[kl]) L, 8 * s, scales + 8 * s, mins + 8 * s,
                  qw != NULL ? sw + 8 * s : NULL, nmax, dst + ts * s);
}

/* The row loop of every case; x86_search: the K-quants' search in AVX-512
 * intrinsics (lp_qx86_ksearch) instead of qkx_lanes. */
static inline LP_ALWAYS_INLINE gboolean
fast_row (LpDType type, const float *x, gint64 n, const float *importance, gboolean x86_search, guint8 *dst)
{
  const LpDTypeInfo *info = lp_dtype_info (type);
  gint64 nb = n / info->block_size;
  gsize ts = info->type_size;
  switch (type)
    {
    case LP_DTYPE_Q8_0:
      /* quantize_q8_0 ignores importance */
      for (gint64 b = 0; b < nb; b++)
        block_q8_0 (x + 32 * b, dst + ts * b);
      return TRUE;
    case LP_DTYPE_Q4_0:
    case LP_DTYPE_Q5_0:
      if (importance != NULL)
        return FALSE;
      for (gint64 b = 0; b < nb; b++)
        block_q_0 (x + 32 * b, type == LP_DTYPE_Q4_0 ? 4 : 5, dst + ts * b);
      return TRUE;
    case LP_DTYPE_Q4_1:
    case LP_DTYPE_Q5_1:
      if (importance != NULL)
        return FALSE;
      for (gint64 b = 0; b < nb; b++)
        block_q_1 (x + 32 * b, type == LP_DTYPE_Q4_1 ? 4 : 5, dst + ts * b);
      return TRUE;
    case LP_DTYPE_Q4_K:
    case LP_DTYPE_Q5_K:
      {
        const int ksup = x86_search ? K_SUPER_X86 : K_SUPER;
        for (gint64 b = 0; b < nb; b += ksup)
          blocks_q45_k (x + QK_K * b, importance ? importance + QK_K * b : NULL, (int) MIN (ksup, nb - b),
                        type == LP_DTYPE_Q4_K ? 15 : 31, ts, ksup, x86_search, dst + ts * b);
        return TRUE;
      }
    default:
      return FALSE;
    }
}

/* On x86-64 copies for AVX-512 (x86-64-v4: 32 vector registers hold the
 * search's 16-lane sums, twice the speed of the AVX2 copy on Zen 5) and for
 * AVX2 (8 lanes to a register), chosen at load time; no copy fuses a
 * multiply-add (fp-contract=off above). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__ ((target_clones ("arch=x86-64-v4", "avx2", "default")))
#endif
gboolean
lp_qfast_row_portable (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return fast_row (type, x, n, importance, FALSE, dst);
}

/* Q4_K / Q5_K with the search in AVX-512 intrinsics, the rest as the
 * portable kernel's AVX-512 copy. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__ ((target ("arch=x86-64-v4")))
#endif
gboolean
lp_qx86_krow (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  if ((type != LP_DTYPE_Q4_K && type != LP_DTYPE_Q5_K) || !lp_cpu_have_avx512 ())
    return FALSE;
  return fast_row (type, x, n, importance, TRUE, dst);
}

gboolean
lp_qfast_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  return lp_qx512_row (type, x, n, importance, dst) || lp_qx86_row (type, x, n, importance, dst)
         || lp_qx86_krow (type, x, n, importance, dst)
         || lp_qfast_row_portable (type, x, n, importance, dst);
}
