/* llmpress — llama.cpp's K-quants: 256-value super-blocks (QK_K) of 16
 * sub-blocks of 16 or 8 of 32 values.  Layouts (ggml-common.h), little-endian:
 *   Q2_K (84)   scales[16] (low nibble scale, high nibble min), qs[64]
 *               (2-bit codes), f16 d, f16 dmin;  value = d*sc*q - dmin*m
 *   Q3_K (110)  hmask[32] (third bit), qs[64] (low 2 bits), scales[12]
 *               (16 6-bit scales biased by 32), f16 d;  value = d*(sc-32)*(q-4)
 *   Q4_K (144)  f16 d, f16 dmin, scales[12] (8 6-bit scales, 8 6-bit mins),
 *               qs[128] (nibbles);  value = d*sc*q - dmin*m
 *   Q5_K (176)  f16 d, f16 dmin, scales[12], qh[32] (fifth bit), qs[128]
 *   Q6_K (210)  ql[128] (low nibbles), qh[64] (high 2 bits), int8 scales[16],
 *               f16 d;  value = d*sc*(q-32)
 *   Q8_K (292)  f32 d, int8 qs[256], int16 bsums[16] (read only)
 * Within each 128 (Q2/Q3/Q6) or 64 (Q4/Q5) values, element l of the first
 * quarter / half shares byte l with the elements 32, 64, 96 further on.
 *
 * The fits follow quantize_row_<type>_ref (no importance) and
 * quantize_row_<type>_impl (importance) of ggml-quants.c: per sub-block
 * scale searches, the scales themselves quantized to 4/6/8 bits against an
 * f16 super-scale, then every value re-quantized against the stored scales. */
#include "config.h"

#include <math.h>

#include "quant-internal.h"

/* Q3_K's 16 6-bit values in 12 bytes. */
static void
encode_scales_q3 (const guint8 *v, guint8 *s)
{
  memset (s, 0, 12);
  for (int j = 0; j < 16; ++j)
    {
      int l = v[j];
      if (j < 8)
        s[j] = l & 0xF;
      else
        s[j - 8] |= (l & 0xF) << 4;
      l >>= 4;
      s[j % 4 + 8] |= l << (2 * (j / 4));
    }
}

/* Q4_K / Q5_K: 8 6-bit scales and 8 6-bit mins in 12 bytes. */
void
lp_qencode_scales_k4 (const guint8 *ls, const guint8 *lm, guint8 *s)
{
  for (int j = 0; j < 8; ++j)
    {
      if (j < 4)
        {
          s[j] = ls[j];
          s[j + 4] = lm[j];
        }
      else
        {
          s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
          s[j - 4] |= (ls[j] >> 4) << 6;
          s[j - 0] |= (lm[j] >> 4) << 6;
        }
    }
}

/* Shared tail of every K fit: steps from the stored scales, and ggml's
 * re-quantization of every value (sub-blocks with a zero step keep `first`). */
static void
requantize (LpBlockParams *p, const float *x, const int *first, int *codes)
{
  const float dv = lp_f16_to_f32 (p->d);
  const float mv = lp_f16_to_f32 (p->m);
  int n_subs = QK_K / p->sub_size;
  for (int j = 0; j < n_subs; ++j)
    {
      float d;
      if (p->type == LP_DTYPE_Q3_K)
        d = dv * (gint8) (p->sub_scale[j] - 32);
      else if (p->type == LP_DTYPE_Q6_K)
        d = dv * (gint8) p->sub_scale[j];
      else
        d = dv * p->sub_scale[j];
      p->step[j] = d;
      p->qa[j] = d;
      if (p->has_offset)
        {
          const float dm = mv * p->sub_min[j];
          p->offset[j] = -dm;
          p->qb[j] = dm;
        }
      const float *xs = x + j * p->sub_size;
      int *cs = codes + j * p->sub_size;
      if (!d)
        {
          p->frozen[j] = 1;
          for (int ii = 0; ii < p->sub_size; ++ii)
            cs[ii] = p->frozen_code[j * p->sub_size + ii] = first[j * p->sub_size + ii];
          continue;
        }
      for (int ii = 0; ii < p->sub_size; ++ii)
        {
          int l = p->has_offset ? lp_nearest_int ((xs[ii] + p->qb[j]) / d) : lp_nearest_int (xs[ii] / d);
          cs[ii] = MAX (p->code_min, MIN (p->code_max, l));
        }
    }
}

/* ggml's importance weights qw * sqrt (sigma2 + x^2) of n values, and their sum. */
static float
importance_weights (const float *qw, const float *x, float sigma2, int n, float *weight)
{
  float sumw = 0;
  for (int l = 0; l < n; ++l)
    weight[l] = qw[l] * sqrtf (sigma2 + x[l] * x[l]);
  for (int l = 0; l < n; ++l)
    sumw += weight[l];
  return sumw;
}

/* Q2_K without importance: 16 non-negative scales (or mins) onto 4-bit
 * levels of max/15; returns that step as f16. */
static guint16
levels_4bit (const float *v, float max, guint8 *L)
{
  const float q4scale = 15.f;
  if (!(max > 0))
    {
      memset (L, 0, 16);
      return lp_f32_to_f16 (0.f);
    }
  float iscale = q4scale / max;
  for (int j = 0; j < 16; ++j)
    L[j] = lp_nearest_int (iscale * v[j]);
  return lp_f32_to_f16 (max / q4scale);
}

static void
fit_q2_k (const float *x, const float *qw, LpBlockParams *p, int *codes)
{
  guint8 L[QK_K], Laux[16], Ls[16], Lm[16];
  float mins[16], scales[16], weight[16], sw[16];
  int first[QK_K];
  if (qw == NULL)
    {
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 16; ++j)
        {
          for (int l = 0; l < 16; ++l)
            weight[l] = fabsf (x[16 * j + l]);
          scales[j] = lp_make_qkx2_quants (16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux,
                                           -0.5f, 0.1f, 15, TRUE);
          if (scales[j] > max_scale)
            max_scale = scales[j];
          if (mins[j] > max_min)
            max_min = mins[j];
        }
      p->d = levels_4bit (scales, max_scale, Ls);
      p->m = levels_4bit (mins, max_min, Lm);
    }
  else
    {
      memset (sw, 0, sizeof sw);
      float sumx2 = 0;
      for (int j = 0; j < QK_K; ++j)
        sumx2 += x[j] * x[j];
      float sigma2 = sumx2 / QK_K;
      for (int j = 0; j < 16; ++j)
        {
          sw[j] += importance_weights (qw + 16 * j, x + 16 * j, sigma2, 16, weight);
          float iscale_unused, qmin_unused;
          scales[j] = lp_make_qkx3_quants (16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux,
                                           -0.9f, 0.05f, 36, FALSE, &iscale_unused, &qmin_unused);
        }
      float dm = lp_make_qp_quants (16, 15, scales, Ls, sw);
      float mm = lp_make_qp_quants (16, 15, mins, Lm, sw);
      p->d = lp_f32_to_f16 (dm);
      p->m = lp_f32_to_f16 (mm);
    }
  for (int j = 0; j < 16; ++j)
    {
      /* ggml keeps both in one byte: a scale code above 15 would spill into the min */
      guint8 byte = (guint8) (Ls[j] | (Lm[j] << 4));
      p->sub_scale[j] = byte & 0xF;
      p->sub_min[j] = byte >> 4;
    }
  for (int i = 0; i < QK_K; ++i)
    first[i] = L[i];
  requantize (p, x, first, codes);
}

static void
fit_q3_k (const float *x, const float *qw, LpBlockParams *p, int *codes)
{
  gint8 L[QK_K];
  guint8 lv[16];
  float scales[16];
  int first[QK_K];
  memset (lv, 0, sizeof lv);
  if (qw == NULL)
    {
      float max_scale = 0, amax = 0;
      for (int j = 0; j < 16; ++j)
        {
          scales[j] = lp_make_q3_quants (16, 4, x + 16 * j, L + 16 * j, TRUE);
          float scale = fabsf (scales[j]);
          if (scale > amax)
            {
              amax = scale;
              max_scale = scales[j];
            }
        }
      if (max_scale)
        {
          float iscale = -32.f / max_scale;
          for (int j = 0; j < 16; ++j)
            {
              gint8 l = lp_nearest_int (iscale * scales[j]);
              lv[j] = MAX (-32, MIN (31, l)) + 32;
            }
          p->d = lp_f32_to_f16 (1 / iscale);
        }
      else
        p->d = lp_f32_to_f16 (0.f);
    }
  else
    {
      float weight[16], sw[16];
      gint8 Ls[16];
      float sumx2 = 0;
      for (int j = 0; j < QK_K; ++j)
        sumx2 += x[j] * x[j];
      float sigma2 = 2 * sumx2 / QK_K;
      for (int j = 0; j < 16; ++j)
        {
          sw[j] = importance_weights (qw + 16 * j, x + 16 * j, sigma2, 16, weight);
          float unused;
          scales[j] = lp_make_qx_quants (16, 4, x + 16 * j, L + 16 * j, 1, weight, &unused);
        }
      float unused;
      float d_block = lp_make_qx_quants (16, 32, scales, Ls, 1, sw, &unused);
      for (int j = 0; j < 16; ++j)
        lv[j] = Ls[j];
      p->d = lp_f32_to_f16 (d_block);
    }
  for (int j = 0; j < 16; ++j)
    p->sub_scale[j] = lv[j] & 63;
  for (int i = 0; i < QK_K; ++i)
    first[i] = L[i] - 4;
  requantize (p, x, first, codes);
}

void
lp_qk45_super_scales (const float *scales, const float *mins, const float *sw, guint8 *Ls, guint8 *Lm,
                      guint16 *d, guint16 *m)
{
  if (sw == NULL)
    {
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 8; ++j)
        {
          if (scales[j] > max_scale)
            max_scale = scales[j];
          if (mins[j] > max_min)
            max_min = mins[j];
        }
      float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
      float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
      for (int j = 0; j < 8; ++j)
        {
          guint8 ls = lp_nearest_int (inv_scale * scales[j]);
          guint8 lm = lp_nearest_int (inv_min * mins[j]);
          Ls[j] = MIN (63, ls);
          Lm[j] = MIN (63, lm);
        }
      *d = lp_f32_to_f16 (max_scale / 63.f);
      *m = lp_f32_to_f16 (max_min / 63.f);
      return;
    }
  float d_block = lp_make_qp_quants (8, 63, scales, Ls, sw);
  float m_block = lp_make_qp_quants (8, 63, mins, Lm, sw);
  for (int j = 0; j < 8; ++j)
    {
      Ls[j] = MIN (63, Ls[j]);
      Lm[j] = MIN (63, Lm[j]);
    }
  *d = lp_f32_to_f16 (d_block);
  *m = lp_f32_to_f16 (m_block);
}

static void
fit_q45_k (const float *x, const float *qw, int nmax, LpBlockParams *p, int *codes)
{
  guint8 L[QK_K], Laux[32], Ls[8], Lm[8];
  float weights[32], mins[8], scales[8], sw[8];
  int first[QK_K];
  if (qw == NULL)
    for (int j = 0; j < 8; ++j)
      {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
          sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf (sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
          weights[l] = av_x + fabsf (x[32 * j + l]);
        if (nmax == 15)
          scales[j] = lp_make_qkx2_quants (32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                           -1.f, 0.1f, 20, FALSE);
        else
          scales[j] = lp_make_qkx2_quants (32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                           -0.5f, 0.1f, 15, FALSE);
      }
  else
    {
      float sum_x2 = 0;
      for (int l = 0; l < QK_K; ++l)
        sum_x2 += x[l] * x[l];
      float sigma2 = 2 * sum_x2 / QK_K;
      for (int j = 0; j < 8; ++j)
        {
          sw[j] = importance_weights (qw + 32 * j, x + 32 * j, sigma2, 32, weights);
          float iscale_unused, qmin_unused;
          scales[j] = lp_make_qkx3_quants (32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                           -0.9f, 0.05f, 36, FALSE, &iscale_unused, &qmin_unused);
        }
    }
  lp_qk45_super_scales (scales, mins, qw ? sw : NULL, Ls, Lm, &p->d, &p->m);
  /* what get_scale_min_k4 reads back from the 12 packed bytes */
  guint8 packed[12];
  lp_qencode_scales_k4 (Ls, Lm, packed);
  for (int j = 0; j < 8; ++j)
    lp_get_scale_min_k4 (j, packed, &p->sub_scale[j], &p->sub_min[j]);
  for (int i = 0; i < QK_K; ++i)
    first[i] = L[i];
  requantize (p, x, first, codes);
}

static void
fit_q6_k (const float *x, const float *qw, LpBlockParams *p, int *codes)
{
  gint8 L[QK_K];
  float scales[16];
  int first[QK_K];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib)
    {
      float unused;
      const float scale = lp_make_qx_quants (16, 32, x + 16 * ib, L + 16 * ib, 1,
                                             qw ? qw + 16 * ib : NULL, &unused);
      scales[ib] = scale;
      const float abs_scale = fabsf (scale);
      if (abs_scale > max_abs_scale)
        {
          max_abs_scale = abs_scale;
          max_scale = scale;
        }
    }
  if (max_abs_scale < LP_GROUP_MAX_EPS)
    {
      /* ggml zeroes the whole block: every stored code 0, i.e. -32 */
      p->d = lp_f32_to_f16 (0.f);
      for (int i = 0; i < QK_K; ++i)
        first[i] = -32;
    }
  else
    {
      float iscale = -128.f / max_scale;
      p->d = lp_f32_to_f16 (1 / iscale);
      for (int ib = 0; ib < 16; ++ib)
        p->sub_scale[ib] = (guint8) (gint8) MIN (127, lp_nearest_int (iscale * scales[ib]));
      for (int i = 0; i < QK_K; ++i)
        first[i] = L[i] - 32;
    }
  requantize (p, x, first, codes);
}

void
lp_qfit_kblock (LpDType type, const float *x, const float *w, LpBlockParams *p, int *codes)
{
  /* frozen_code is only read where frozen[] is set: leave it (1 KiB a block) */
  memset (p, 0, G_STRUCT_OFFSET (LpBlockParams, frozen_code));
  p->type = type;
  p->n_values = QK_K;
  switch (type)
    {
    case LP_DTYPE_Q2_K:
      p->sub_size = 16, p->code_min = 0, p->code_max = 3, p->has_offset = TRUE;
      p->rule = LP_RULE_DIV_MIN;
      fit_q2_k (x, w, p, codes);
      break;
    case LP_DTYPE_Q3_K:
      p->sub_size = 16, p->code_min = -4, p->code_max = 3;
      p->rule = LP_RULE_DIV;
      fit_q3_k (x, w, p, codes);
      break;
    case LP_DTYPE_Q4_K:
    case LP_DTYPE_Q5_K:
      p->sub_size = 32, p->code_min = 0, p->code_max = type == LP_DTYPE_Q4_K ? 15 : 31;
      p->has_offset = TRUE;
      p->rule = LP_RULE_DIV_MIN;
      fit_q45_k (x, w, p->code_max, p, codes);
      break;
    case LP_DTYPE_Q6_K:
      p->sub_size = 16, p->code_min = -32, p->code_max = 31;
      p->rule = LP_RULE_DIV;
      fit_q6_k (x, w, p, codes);
      break;
    default:
      g_assert_not_reached ();
    }
}

/* 2-bit fields of 128 values: element l + 32*k in bits 2k of byte l. */
static void
pack_2bit (const int *L, guint8 *qs)
{
  for (int j = 0; j < QK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = (guint8) ((L[j + l] & 3) | ((L[j + l + 32] & 3) << 2) | ((L[j + l + 64] & 3) << 4)
                                | ((L[j + l + 96] & 3) << 6));
}

void
lp_qpack_kblock (const LpBlockParams *p, const int *codes, guint8 *dst)
{
  int L[QK_K];
  for (int i = 0; i < QK_K; ++i)
    L[i] = CLAMP (codes[i], p->code_min, p->code_max) - p->code_min;
  switch (p->type)
    {
    case LP_DTYPE_Q2_K:
      for (int j = 0; j < 16; ++j)
        dst[j] = (guint8) (p->sub_scale[j] | (p->sub_min[j] << 4));
      pack_2bit (L, dst + 16);
      lp_qwrite_u16 (dst + 80, p->d);
      lp_qwrite_u16 (dst + 82, p->m);
      break;
    case LP_DTYPE_Q3_K:
      {
        guint8 *hmask = dst;
        memset (hmask, 0, 32);
        for (int j = 0; j < QK_K; ++j)
          if (L[j] > 3)
            {
              hmask[j % 32] |= (guint8) (1 << (j / 32));
              L[j] -= 4;
            }
        pack_2bit (L, dst + 32);
        encode_scales_q3 (p->sub_scale, dst + 96);
        lp_qwrite_u16 (dst + 108, p->d);
        break;
      }
    case LP_DTYPE_Q4_K:
    case LP_DTYPE_Q5_K:
      {
        lp_qwrite_u16 (dst, p->d);
        lp_qwrite_u16 (dst + 2, p->m);
        lp_qencode_scales_k4 (p->sub_scale, p->sub_min, dst + 4);
        guint8 *ql = dst + 16;
        if (p->type == LP_DTYPE_Q5_K)
          {
            guint8 *qh = dst + 16;
            ql = dst + 48;
            memset (qh, 0, 32);
            for (int n = 0; n < QK_K; n += 64)
              for (int j = 0; j < 32; ++j)
                {
                  guint8 m1 = (guint8) (1 << (n / 32)), m2 = (guint8) (2 << (n / 32));
                  if (L[n + j] > 15)
                    L[n + j] -= 16, qh[j] |= m1;
                  if (L[n + j + 32] > 15)
                    L[n + j + 32] -= 16, qh[j] |= m2;
                }
          }
        for (int j = 0; j < QK_K; j += 64)
          for (int l = 0; l < 32; ++l)
            ql[j / 2 + l] = (guint8) (L[j + l] | (L[j + l + 32] << 4));
        break;
      }
    case LP_DTYPE_Q6_K:
      {
        guint8 *ql = dst, *qh = dst + 128;
        for (int j = 0; j < QK_K; j += 128)
          {
            for (int l = 0; l < 32; ++l)
              {
                ql[l] = (guint8) ((L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4));
                ql[l + 32] = (guint8) ((L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4));
                qh[l] = (guint8) ((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4)
                                  | ((L[j + l + 96] >> 4) << 6));
              }
            ql += 64;
            qh += 32;
          }
        memcpy (dst + 192, p->sub_scale, 16);
        lp_qwrite_u16 (dst + 208, p->d);
        break;
      }
    default:
      g_assert_not_reached ();
    }
}
