/* llmpress quantize plugin — scale and zero point of one group of the plain
 * integer grid, as GPTQ's Quantizer.find_params computes them (min/max, or
 * its mse search over shrunk ranges), with importance weights. */
#include "config.h"

#include <math.h>

#include "quantize.h"

/* Scale (rounded to f16, as stored) and zero for the range [lo, hi]. */
static void
range_params (float lo, float hi, int maxq, gboolean symmetric, guint16 *scale, guint8 *zero)
{
  if (symmetric)
    {
      float a = MAX (fabsf (lo), fabsf (hi));
      lo = -a;
      hi = a;
    }
  if (lo == 0 && hi == 0)
    lo = -1, hi = 1;
  float s = (hi - lo) / (float) maxq;
  guint16 h = lp_f32_to_f16 (s);
  /* An f16 scale must not round to 0 (tiny groups): the smallest normal. */
  if (lp_f16_to_f32 (h) == 0.f)
    h = 0x0400;
  s = lp_f16_to_f32 (h);
  int z = symmetric ? (maxq + 1) / 2 : (int) nearbyintf (-lo / s);
  *scale = h;
  /* At least 1: GPTQ checkpoints store zero - 1 in b bits, so 0 cannot be
   * written (a group of non-negative weights loses its lowest step). */
  *zero = (guint8) CLAMP (z, 1, maxq);
}

static double
group_error (const float *x, gint64 ldx, gint64 rows, int n, const float *w, int maxq, guint16 scale, guint8 zero)
{
  float s = lp_f16_to_f32 (scale);
  double err = 0;
  guint8 code;
  for (gint64 r = 0; r < rows; r++)
    for (int j = 0; j < n; j++)
      {
        float d = q_int_quantize (s, zero, maxq, x[r * ldx + j], &code) - x[r * ldx + j];
        err += (w ? w[j] : 1.f) * d * d;
      }
  return err;
}

void
q_int_fit (const float *x, gint64 ldx, gint64 rows, int n, const float *w, int bits, gboolean symmetric,
           gboolean clip_search, guint16 *scale, guint8 *zero)
{
  int maxq = (1 << bits) - 1;
  /* The range always holds 0, so that 0 stays exact (pruned weights). */
  float lo = 0, hi = 0;
  for (gint64 r = 0; r < rows; r++)
    for (int j = 0; j < n; j++)
      {
        lo = MIN (lo, x[r * ldx + j]);
        hi = MAX (hi, x[r * ldx + j]);
      }
  range_params (lo, hi, maxq, symmetric, scale, zero);
  if (!clip_search)
    return;
  /* GPTQ's mse search: shrink the range by p = 1 - i/100 down to 0.2. */
  double best = group_error (x, ldx, rows, n, w, maxq, *scale, *zero);
  for (int i = 1; i <= 80; i++)
    {
      float p = 1.f - (float) i / 100.f;
      guint16 s;
      guint8 z;
      range_params (p * lo, p * hi, maxq, symmetric, &s, &z);
      double e = group_error (x, ldx, rows, n, w, maxq, s, z);
      if (e < best)
        best = e, *scale = s, *zero = z;
    }
}
