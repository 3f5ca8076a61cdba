/* llmpress — llama.cpp's 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * IQ4_NL (and Q8_1, read only).  Layouts (ggml-common.h), little-endian:
 *   Q4_0  f16 d, 16 bytes of nibbles          value = (q - 8) * d
 *   Q4_1  f16 d, f16 m, 16 bytes of nibbles   value = q * d + m
 *   Q5_0  f16 d, u32 qh, 16 bytes of nibbles  value = (q - 16) * d
 *   Q5_1  f16 d, f16 m, u32 qh, 16 bytes      value = q * d + m
 *   Q8_0  f16 d, 32 int8                      value = q * d
 *   Q8_1  f16 d, f16 s (= d * sum q), 32 int8 value = q * d
 *   IQ4_NL f16 d, 16 bytes of nibbles         value = d * lp_iq4nl_levels[q]
 * Element j < 16 sits in the low nibble of byte j, element j + 16 in its high
 * nibble; the fifth bit of element j is bit j of qh.
 *
 * The fits follow quantize_row_<type>_ref (no importance) and the
 * importance-weighted quantize_row_<type>_impl of ggml-quants.c (IQ4_NL:
 * quantize_iq4_nl, which searches the scale with or without importance): note that
 * the reference quantizers pick codes with the unrounded 1/d while the block
 * stores d rounded to f16 — files match llama.cpp's only this way. */
#include "config.h"

#include <float.h>
#include <math.h>

#include "quant-internal.h"

typedef struct {
  LpDType type;
  int bits;        /* 4, 5 or 8 */
  gboolean has_min;
} Block32Kind;

static const Block32Kind kinds[] = {
  { LP_DTYPE_Q4_0, 4, FALSE }, { LP_DTYPE_Q4_1, 4, TRUE }, { LP_DTYPE_Q5_0, 5, FALSE },
  { LP_DTYPE_Q5_1, 5, TRUE },  { LP_DTYPE_Q8_0, 8, FALSE }, { LP_DTYPE_IQ4_NL, 4, FALSE },
};

static const Block32Kind *
kind_of (LpDType type)
{
  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++)
    if (kinds[i].type == type)
      return &kinds[i];
  g_assert_not_reached ();
}

static void
set_common (LpBlockParams *p, const Block32Kind *k)
{
  /* frozen_code is only read where frozen[] is set: leave it (1 KiB a block) */
  memset (p, 0, G_STRUCT_OFFSET (LpBlockParams, frozen_code));
  p->type = k->type;
  p->n_values = 32;
  p->sub_size = 32;
  int levels = 1 << k->bits;
  p->code_min = k->has_min ? 0 : -levels / 2;
  p->code_max = k->has_min ? levels - 1 : levels / 2 - 1;
  p->has_offset = k->has_min;
  if (k->type == LP_DTYPE_IQ4_NL) /* codes index the level table */
    p->code_min = 0, p->code_max = 15;
}

/* quantize_row_q{4,5}_{0,1}_ref and quantize_row_q8_0_ref. */
static void
fit_ref (const Block32Kind *k, const float *x, LpBlockParams *p, int *codes)
{
  int nmax = (1 << k->bits) - 1;
  if (k->has_min)
    {
      float min = FLT_MAX, max = -FLT_MAX;
      for (int j = 0; j < 32; j++)
        {
          if (x[j] < min)
            min = x[j];
          if (x[j] > max)
            max = x[j];
        }
      const float d = (max - min) / nmax;
      const float id = d ? 1.0f / d : 0.0f;
      p->d = lp_f32_to_f16 (d);
      p->m = lp_f32_to_f16 (min);
      p->rule = LP_RULE_TRUNC_MIN;
      p->qa[0] = id;
      p->qb[0] = min;
      for (int j = 0; j < 32; j++)
        {
          const float v = (x[j] - min) * id;
          codes[j] = MIN (nmax, (gint8) (v + 0.5f));
        }
    }
  else if (k->bits == 8)
    {
      float amax = 0.0f;
      for (int j = 0; j < 32; j++)
        amax = MAX (amax, fabsf (x[j]));
      const float d = amax / ((1 << 7) - 1);
      const float id = d ? 1.0f / d : 0.0f;
      p->d = lp_f32_to_f16 (d);
      p->rule = LP_RULE_ROUND;
      p->qa[0] = id;
      for (int j = 0; j < 32; j++)
        codes[j] = (gint8) roundf (x[j] * id);
    }
  else
    {
      int half = 1 << (k->bits - 1);
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < 32; j++)
        if (amax < fabsf (x[j]))
          {
            amax = fabsf (x[j]);
            max = x[j];
          }
      const float d = max / -half;
      const float id = d ? 1.0f / d : 0.0f;
      p->d = lp_f32_to_f16 (d);
      p->rule = LP_RULE_TRUNC_BIAS;
      p->qa[0] = id;
      for (int j = 0; j < 32; j++)
        codes[j] = MIN (nmax, (gint8) (x[j] * id + (half + 0.5f))) - half;
    }
}

/* quantize_row_{q4_0,q4_1,q5_0,q5_1}_impl with quant_weights. */
static void
fit_weighted (const Block32Kind *k, const float *x, const float *qw, float sigma2, LpBlockParams *p,
              int *codes)
{
  float weight[32];
  for (int j = 0; j < 32; ++j)
    weight[j] = qw[j] * sqrtf (sigma2 + x[j] * x[j]);
  int nmax = (1 << k->bits) - 1;
  if (k->has_min)
    {
      guint8 L[32], Laux[32];
      float min, iscale, qmin;
      float d = lp_make_qkx3_quants (32, nmax, x, weight, L, &min, Laux, -0.9f, 0.05f, 36, FALSE,
                                     &iscale, &qmin);
      p->d = lp_f32_to_f16 (d);
      p->m = lp_f32_to_f16 (-min);
      p->rule = LP_RULE_QKX3;
      p->qa[0] = iscale;
      p->qb[0] = qmin;
      for (int j = 0; j < 32; j++)
        codes[j] = L[j];
    }
  else
    {
      gint8 L[32];
      int half = 1 << (k->bits - 1);
      float iscale;
      float d = lp_make_qx_quants (32, half, x, L, 1, weight, &iscale);
      p->d = lp_f32_to_f16 (d);
      p->rule = LP_RULE_NEAREST_MUL;
      p->qa[0] = iscale;
      for (int j = 0; j < 32; j++)
        codes[j] = L[j] - half;
      if (iscale == 0.f)
        {
          p->frozen[0] = 1;
          for (int j = 0; j < 32; j++)
            p->frozen_code[j] = codes[j];
        }
    }
}

/* ggml's best_index_int8: the index of the level nearest x (ties to the lower). */
int
lp_iq4nl_nearest (float x)
{
  const gint8 *val = lp_iq4nl_levels;
  if (x <= val[0])
    return 0;
  if (x >= val[15])
    return 15;
  int ml = 0, mu = 15;
  while (mu - ml > 1)
    {
      int mav = (ml + mu) / 2;
      if (x < val[mav])
        mu = mav;
      else
        ml = mav;
    }
  return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

/* The weighted least-squares scale of x on the levels id*x rounds to:
 * sum w q x / sum w q^2, and sum w q x (the error it leaves is
 * sum w x^2 - d * sumqx, so a larger d * sumqx is a smaller error). */
static void
iq4nl_project (const float *x, const float *w, float id, float *sumqx, float *sumq2)
{
  *sumqx = *sumq2 = 0;
  for (int j = 0; j < 32; j++)
    {
      float q = lp_iq4nl_levels[lp_iq4nl_nearest (id * x[j])];
      *sumqx += w[j] * q * x[j];
      *sumq2 += w[j] * q * q;
    }
}

/* quantize_row_iq4_nl_impl for one 32-value block (ntry = 7, as
 * quantize_iq4_nl calls it): start from the scale mapping the largest
 * magnitude onto the outermost level, then try 15 scales around it, each
 * refitted by least squares on the codes it gives, keeping the one with the
 * least weighted error.  Without importance the weights are x^2; with it
 * qw * sqrt (sigma2 + x^2), sigma2 = twice the block's mean square. */
static void
fit_iq4_nl (const float *x, const float *qw, LpBlockParams *p, int *codes)
{
  float weight[32];
  float sigma2 = 0;
  for (int j = 0; j < 32; ++j)
    sigma2 += x[j] * x[j];
  sigma2 *= 2.f / 32;
  for (int j = 0; j < 32; ++j)
    weight[j] = qw ? qw[j] * sqrtf (sigma2 + x[j] * x[j]) : x[j] * x[j];
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (fabsf (x[j]) > amax)
      amax = fabsf (x[j]), max = x[j];
  p->rule = LP_RULE_LEVELS;
  if (amax < LP_GROUP_MAX_EPS)
    {
      /* every code decodes to 0 under d = 0 */
      p->d = lp_f32_to_f16 (0.f);
      p->qa[0] = 0;
      for (int j = 0; j < 32; j++)
        codes[j] = lp_iq4nl_nearest (0.f);
      return;
    }
  const int ntry = 7;
  const float v0 = lp_iq4nl_levels[0];
  float sumqx, sumq2;
  iq4nl_project (x, weight, 1 / (-max / v0), &sumqx, &sumq2);
  float d = sumqx / sumq2;
  float best = d * sumqx;
  for (int itry = -ntry; itry <= ntry; ++itry)
    {
      iq4nl_project (x, weight, (itry + v0) / max, &sumqx, &sumq2);
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
        {
          d = sumqx / sumq2;
          best = d * sumqx;
        }
    }
  p->d = lp_f32_to_f16 (d);
  /* codes from the unrounded scale, as ggml picks them */
  p->qa[0] = d ? 1 / d : 0;
  for (int j = 0; j < 32; j++)
    codes[j] = lp_iq4nl_nearest (p->qa[0] * x[j]);
}

void
lp_qfit_block32 (LpDType type, const float *x, const float *w, float sigma2, LpBlockParams *p,
                 int *codes)
{
  const Block32Kind *k = kind_of (type);
  set_common (p, k);
  if (type == LP_DTYPE_IQ4_NL)
    fit_iq4_nl (x, w, p, codes);
  else if (w != NULL && k->bits != 8) /* quantize_q8_0 ignores quant_weights */
    fit_weighted (k, x, w, sigma2, p, codes);
  else
    fit_ref (k, x, p, codes);
  p->step[0] = lp_f16_to_f32 (p->d);
  p->offset[0] = lp_f16_to_f32 (p->m);
}

