/* llmpress — the plain integer grid: the in-memory compressed form of a
 * tensor quantized for GPTQ / compressed-tensors checkpoints (tensor.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include <llmpress/backend.h>

#include "lp-internal.h"

LpIntGrid *
lp_int_grid_new (gint64 rows, gint64 cols, int bits, int group_size, gboolean symmetric, GError **error)
{
  if (bits < 2 || bits > 8)
    {
      lp_set_error (error, LP_ERROR_INVALID, "integer grid: bits: expected 2..8, found %d", bits);
      return NULL;
    }
  if (rows <= 0 || cols <= 0 || group_size <= 0 || cols > G_MAXINT32 || rows > G_MAXINT32)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "integer grid: expected rows, columns and group size > 0, found %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                    " with groups of %d",
                    rows, cols, group_size);
      return NULL;
    }
  LpIntGrid *g = g_new0 (LpIntGrid, 1);
  g->ref_count = 1;
  g->bits = bits;
  g->group_size = group_size;
  g->symmetric = symmetric;
  g->rows = rows;
  g->cols = cols;
  g->n_groups = (int) ((cols + group_size - 1) / group_size);
  g->codes = g_malloc0 ((gsize) (rows * cols));
  g->scales = g_new0 (guint16, (gsize) rows * g->n_groups);
  g->zeros = g_new0 (guint8, (gsize) rows * g->n_groups);
  g->g_idx = g_new (gint32, cols);
  for (gint64 c = 0; c < cols; c++)
    g->g_idx[c] = (gint32) (c / group_size);
  return g;
}

LpIntGrid *
lp_int_grid_ref (LpIntGrid *grid)
{
  g_return_val_if_fail (grid != NULL, NULL);
  g_atomic_int_inc (&grid->ref_count);
  return grid;
}

void
lp_int_grid_unref (LpIntGrid *grid)
{
  if (grid == NULL || !g_atomic_int_dec_and_test (&grid->ref_count))
    return;
  g_free (grid->codes);
  g_free (grid->scales);
  g_free (grid->zeros);
  g_free (grid->g_idx);
  g_free (grid);
}

void
lp_int_grid_dequantize_rows (const LpIntGrid *grid, gint64 r0, gint64 n, float *out)
{
  g_return_if_fail (r0 >= 0 && n >= 0 && r0 + n <= grid->rows);
  for (gint64 r = r0; r < r0 + n; r++)
    {
      const guint8 *code = grid->codes + r * grid->cols;
      const guint16 *scale = grid->scales + r * grid->n_groups;
      const guint8 *zero = grid->zeros + r * grid->n_groups;
      float *w = out + (r - r0) * grid->cols;
      for (gint64 c = 0; c < grid->cols; c++)
        {
          int g = grid->g_idx[c];
          w[c] = lp_f16_to_f32 (scale[g]) * (float) ((int) code[c] - (int) zero[g]);
        }
    }
}

void
lp_int_grid_dequantize (const LpIntGrid *grid, float *out)
{
  lp_int_grid_dequantize_rows (grid, 0, grid->rows, out);
}

gboolean
lp_int_grid_plain_g_idx (const LpIntGrid *grid)
{
  for (gint64 c = 0; c < grid->cols; c++)
    if (grid->g_idx[c] != c / grid->group_size)
      return FALSE;
  return TRUE;
}

guint64
lp_int_grid_n_bytes (const LpIntGrid *grid)
{
  guint64 n_codes = (guint64) grid->rows * (guint64) grid->cols;
  guint64 n_groups = (guint64) grid->rows * (guint64) grid->n_groups;
  return (n_codes * grid->bits + 7) / 8 + n_groups * 2 + (n_groups * grid->bits + 7) / 8
         + (lp_int_grid_plain_g_idx (grid) ? 0 : (guint64) grid->cols * 4);
}

/* ---- group-wise round-to-nearest: the definition of quantize_groups ---- */

/* Scale (rounded to f16, as stored) and zero for the range [lo, hi]. */
void
lp_int_range_params (float lo, float hi, int maxq, gboolean symmetric, guint16 *scale, guint8 *zero)
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
        float d = lp_int_quantize (s, zero, maxq, x[r * ldx + j], &code) - x[r * ldx + j];
        err += (w ? w[j] : 1.f) * d * d;
      }
  return err;
}

void
lp_ref_int_fit (const float *x, gint64 ldx, gint64 rows, int n, const float *imp, int bits, gboolean symmetric,
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
  lp_int_range_params (lo, hi, maxq, symmetric, scale, zero);
  if (!clip_search)
    return;
  /* GPTQ's mse search: shrink the range by p = 1 - i/100 down to 0.2. */
  double best = group_error (x, ldx, rows, n, imp, maxq, *scale, *zero);
  for (int i = 1; i <= 80; i++)
    {
      float p = 1.f - (float) i / 100.f;
      guint16 s;
      guint8 z;
      lp_int_range_params (p * lo, p * hi, maxq, symmetric, &s, &z);
      double e = group_error (x, ldx, rows, n, imp, maxq, s, z);
      if (e < best)
        best = e, *scale = s, *zero = z;
    }
}

void
lp_ref_quantize_groups (int rows, int cols, const float *W, int ldw, const float *imp, const LpGroupQuant *q,
                        guint8 *codes, guint16 *scales, guint8 *zeros)
{
  int G = (cols + q->group - 1) / q->group, maxq = (1 << q->bits) - 1;
  for (int r = 0; r < rows; r++)
    for (int g = 0; g < G; g++)
      {
        int c0 = g * q->group, n = MIN (q->group, cols - c0);
        const float *x = W + (gsize) r * ldw + c0;
        gsize k = (gsize) r * G + g;
        lp_ref_int_fit (x, n, 1, n, imp ? imp + c0 : NULL, q->bits, q->symmetric, q->clip_search, &scales[k],
                        &zeros[k]);
        float s = lp_f16_to_f32 (scales[k]);
        for (int j = 0; j < n; j++)
          lp_int_quantize (s, zeros[k], maxq, x[j], &codes[(gsize) r * cols + c0 + j]);
      }
}
