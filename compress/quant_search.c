/* llmpress — ggml's scale searches for the block quantizers.
 * These follow ggml-quants.c (make_qx_quants, make_q3_quants,
 * make_qkx2_quants, make_qkx3_quants, make_qp_quants) operation by operation:
 * llama.cpp's files are reproduced byte for byte only when every float sum is
 * accumulated in the same order, so nothing here is reassociated.  The extra
 * outputs (out_iscale, out_qmin) tell the grid view which scale produced the
 * winning codes. */
#include "config.h"

#include <math.h>

#include "quant-internal.h"

/* The value of largest magnitude (the first of them), and its magnitude. */
static float
signed_absmax (const float *x, int n, float *amax_out)
{
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    {
      float ax = fabsf (x[i]);
      if (ax > amax)
        {
          amax = ax;
          max = x[i];
        }
    }
  *amax_out = amax;
  return max;
}

/* Codes L[i] = l + nmax with l in [-nmax, nmax-1]; returns the scale.  rmse_type 1
 * weights by qw, or by x^2 without qw (the only modes llama.cpp's K and imatrix
 * quantizers use). */
float
lp_make_qx_quants (int n, int nmax, const float *x, gint8 *L, int rmse_type, const float *qw,
                   float *out_iscale)
{
  float amax;
  float max = signed_absmax (x, n, &amax);
  if (amax < LP_GROUP_MAX_EPS)
    {
      for (int i = 0; i < n; ++i)
        L[i] = 0;
      *out_iscale = 0.f;
      return 0.f;
    }
  g_assert (rmse_type == 1);
  float iscale = -nmax / max;
  float best_iscale = iscale;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i)
    {
      int l = lp_nearest_int (iscale * x[i]);
      l = MAX (-nmax, MIN (nmax - 1, l));
      L[i] = l + nmax;
      float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is)
    {
      if (is == 0)
        continue;
      iscale = -(nmax + 0.1f * is) / max;
      sumlx = suml2 = 0;
      for (int i = 0; i < n; ++i)
        {
          int l = lp_nearest_int (iscale * x[i]);
          l = MAX (-nmax, MIN (nmax - 1, l));
          float w = qw ? qw[i] : x[i] * x[i];
          sumlx += w * x[i] * l;
          suml2 += w * l * l;
        }
      if (suml2 > 0 && sumlx * sumlx > best * suml2)
        {
          for (int i = 0; i < n; ++i)
            {
              int l = lp_nearest_int (iscale * x[i]);
              L[i] = nmax + MAX (-nmax, MIN (nmax - 1, l));
            }
          scale = sumlx / suml2;
          best = scale * sumlx;
          best_iscale = iscale;
        }
    }
  *out_iscale = best_iscale;
  return scale;
}

/* Codes L[i] = l + nmax, l in [-nmax, nmax-1]. */
float
lp_make_q3_quants (int n, int nmax, const float *x, gint8 *L, gboolean do_rmse)
{
  float amax;
  float max = signed_absmax (x, n, &amax);
  if (amax < LP_GROUP_MAX_EPS)
    {
      for (int i = 0; i < n; ++i)
        L[i] = 0;
      return 0.f;
    }
  float iscale = -nmax / max;
  if (do_rmse)
    {
      float sumlx = 0, suml2 = 0;
      for (int i = 0; i < n; ++i)
        {
          int l = lp_nearest_int (iscale * x[i]);
          l = MAX (-nmax, MIN (nmax - 1, l));
          L[i] = l;
          float w = x[i] * x[i];
          sumlx += w * x[i] * l;
          suml2 += w * l * l;
        }
      for (int itry = 0; itry < 5; ++itry)
        {
          int n_changed = 0;
          for (int i = 0; i < n; ++i)
            {
              float w = x[i] * x[i];
              float slx = sumlx - w * x[i] * L[i];
              if (slx > 0)
                {
                  float sl2 = suml2 - w * L[i] * L[i];
                  int new_l = lp_nearest_int (x[i] * sl2 / slx);
                  new_l = MAX (-nmax, MIN (nmax - 1, new_l));
                  if (new_l != L[i])
                    {
                      slx += w * x[i] * new_l;
                      sl2 += w * new_l * new_l;
                      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                        {
                          L[i] = new_l;
                          sumlx = slx;
                          suml2 = sl2;
                          ++n_changed;
                        }
                    }
                }
            }
          if (!n_changed)
            break;
        }
      for (int i = 0; i < n; ++i)
        L[i] += nmax;
      return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
  for (int i = 0; i < n; ++i)
    {
      int l = lp_nearest_int (iscale * x[i]);
      l = MAX (-nmax, MIN (nmax - 1, l));
      L[i] = l + nmax;
    }
  return 1 / iscale;
}

/* make_qkx2_quants and make_qkx3_quants differ only in the code rule of the
 * search steps: qkx2 clamps nearest_int (v), which overflows when the running
 * min nears max; qkx3 guards v first.  The files ggml writes depend on which
 * one runs (Q4_K/Q5_K without importance use qkx2), so both are kept.
 * Codes L[i] in [0, nmax]; value = scale*L - the_min; out_iscale / out_qmin:
 * the v = iscale*(x - qmin) that produced L. */
static float
make_qkx_quants (int n, int nmax, const float *x, const float *weights, guint8 *L, float *the_min,
                 guint8 *Laux, float rmin, float rdelta, int nstep, gboolean use_mad, gboolean guarded,
                 float *out_iscale, float *out_qmin)
{
  float min = x[0], max = x[0];
  float sum_w = weights ? weights[0] : x[0] * x[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i)
    {
      if (x[i] < min)
        min = x[i];
      if (x[i] > max)
        max = x[i];
      float w = weights ? weights[i] : x[i] * x[i];
      sum_w += w;
      sum_x += w * x[i];
    }
  if (min > 0)
    min = 0;
  if (max <= min)
    {
      memset (L, 0, n);
      *the_min = -min;
      *out_iscale = 0.f;
      *out_qmin = min;
      return 0.f;
    }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_mad = 0;
  *out_iscale = iscale;
  *out_qmin = min;
  for (int i = 0; i < n; ++i)
    {
      int l = lp_nearest_int (iscale * (x[i] - min));
      L[i] = MAX (0, MIN (nmax, l));
      float diff = scale * L[i] + min - x[i];
      diff = use_mad ? fabsf (diff) : diff * diff;
      float w = weights ? weights[i] : x[i] * x[i];
      best_mad += w * diff;
    }
  for (int is = 0; is <= nstep; ++is)
    {
      iscale = (rmin + rdelta * is + nmax) / (max - min);
      float sum_l = 0, sum_l2 = 0, sum_xl = 0;
      for (int i = 0; i < n; ++i)
        {
          const float v = iscale * (x[i] - min);
          const int l = guarded ? (v > 0 ? lp_nearest_int (MIN (v, nmax)) : 0)
                                : MAX (0, MIN (nmax, lp_nearest_int (v)));
          Laux[i] = l;
          float w = weights ? weights[i] : x[i] * x[i];
          sum_l += w * l;
          sum_l2 += w * l * l;
          sum_xl += w * l * x[i];
        }
      float D = sum_w * sum_l2 - sum_l * sum_l;
      if (D > 0)
        {
          float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
          float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
          if (this_min > 0)
            {
              this_min = 0;
              this_scale = sum_xl / sum_l2;
            }
          float mad = 0;
          for (int i = 0; i < n; ++i)
            {
              float diff = this_scale * Laux[i] + this_min - x[i];
              diff = use_mad ? fabsf (diff) : diff * diff;
              float w = weights ? weights[i] : x[i] * x[i];
              mad += w * diff;
            }
          if (mad < best_mad)
            {
              for (int i = 0; i < n; ++i)
                L[i] = Laux[i];
              best_mad = mad;
              *out_iscale = iscale;
              *out_qmin = min;
              scale = this_scale;
              min = this_min;
            }
        }
    }
  *the_min = -min;
  return scale;
}

float
lp_make_qkx2_quants (int n, int nmax, const float *x, const float *weights, guint8 *L,
                     float *the_min, guint8 *Laux, float rmin, float rdelta, int nstep,
                     gboolean use_mad)
{
  float unused_iscale, unused_qmin;
  return make_qkx_quants (n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad, FALSE,
                          &unused_iscale, &unused_qmin);
}

float
lp_make_qkx3_quants (int n, int nmax, const float *x, const float *weights, guint8 *L,
                     float *the_min, guint8 *Laux, float rmin, float rdelta, int nstep,
                     gboolean use_mad, float *out_iscale, float *out_qmin)
{
  return make_qkx_quants (n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad, TRUE,
                          out_iscale, out_qmin);
}

/* Non-negative x (sub-block scales or mins) onto codes L in [0, nmax]. */
float
lp_make_qp_quants (int n, int nmax, const float *x, guint8 *L, const float *quant_weights)
{
  float max = 0;
  for (int i = 0; i < n; ++i)
    max = MAX (max, x[i]);
  if (max < LP_GROUP_MAX_EPS)
    {
      for (int i = 0; i < n; ++i)
        L[i] = 0;
      return 0.f;
    }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i)
    L[i] = lp_nearest_int (iscale * x[i]);
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i)
    {
      float diff = x[i] - scale * L[i];
      best_mse += quant_weights[i] * diff * diff;
    }
  for (int is = -4; is <= 4; ++is)
    {
      if (is == 0)
        continue;
      float iscale_is = (0.1f * is + nmax) / max;
      float scale_is = 1 / iscale_is;
      float mse = 0;
      for (int i = 0; i < n; ++i)
        {
          int l = lp_nearest_int (iscale_is * x[i]);
          l = MIN (nmax, l);
          float diff = x[i] - scale_is * l;
          mse += quant_weights[i] * diff * diff;
        }
      if (mse < best_mse)
        {
          best_mse = mse;
          iscale = iscale_is;
        }
    }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i)
    {
      int l = lp_nearest_int (iscale * x[i]);
      l = MIN (nmax, l);
      L[i] = l;
      float w = quant_weights[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
  for (int itry = 0; itry < 5; ++itry)
    {
      int n_changed = 0;
      for (int i = 0; i < n; ++i)
        {
          float w = quant_weights[i];
          float slx = sumlx - w * x[i] * L[i];
          float sl2 = suml2 - w * L[i] * L[i];
          if (slx > 0 && sl2 > 0)
            {
              int new_l = lp_nearest_int (x[i] * sl2 / slx);
              new_l = MIN (nmax, new_l);
              if (new_l != L[i])
                {
                  slx += w * x[i] * new_l;
                  sl2 += w * new_l * new_l;
                  if (slx * slx * suml2 > sumlx * sumlx * sl2)
                    {
                      L[i] = new_l;
                      sumlx = slx;
                      suml2 = sl2;
                      ++n_changed;
                    }
                }
            }
        }
      if (!n_changed)
        break;
    }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}
