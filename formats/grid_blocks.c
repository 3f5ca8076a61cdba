/* llmpress — an integer grid as the ggml block type holding the same
 * weights (grid-blocks.h), so that a GPTQ / AWQ / RTN grid goes into GGUF
 * compressed rather than as its f32 values.
 *
 * A grid weight is scale * (code - zero) with the group's f16 scale: exact
 * in f32 (an 11-bit significand times an integer below 2^9).  A ggml
 * 32-value block holds (q - bias) * d, or q * d + m, with f16 d and m.  A
 * block of 32 columns of a row whose columns share one group (g_idx
 * constant over it: groups of a multiple of 32 columns, a larger group's
 * scale repeated in each of its blocks; act-order only where static groups
 * keep every block whole) is therefore held by
 *   Q4_0 / Q5_0 / Q8_0   d = scale, q - bias = code - zero, when every
 *                        code - zero of the tensor lies in [-8, 7] /
 *                        [-16, 15] / [-128, 127]: exact, the very product;
 *   Q4_1 / Q5_1          d = scale, q = code, m = -scale * zero (codes
 *                        below 16 / 32): d * q and m are multiples of the
 *                        scale's last bit, so their sum is exact when m is;
 *                        but m needs up to 15 significant bits and f16 has
 *                        11.  Where a block's codes leave room, they all
 *                        move by the same count and m with them to an
 *                        offset f16 holds exactly (block_offset); else m is
 *                        rounded, and a weight moves by at most half an f16
 *                        step of m (counted).
 * The smallest that fits is taken: a symmetric 4-bit grid (zero 8) and
 * every grid of 3 bits or fewer are Q4_0; an asymmetric 4-bit one Q4_1; 8
 * bits Q8_0 while code - zero fits int8.  A pruned tensor (a keep-mask)
 * takes Q4_1 / Q5_1 only when every offset is exact, so that its zeros stay
 * 0; else the next exact type (Q5_0 for 4 bits).  None fits (rows not a
 * multiple of 32, a group boundary inside a block, 8-bit asymmetric codes
 * past int8, an offset beyond f16) and the caller keeps the f32 values. */
#include "config.h"

#include <math.h>

#include <llmpress/quant.h>

#include "dtype-blocks.h"
#include "grid-blocks.h"
#include "lp-internal.h"

/* The 32-value types in size order, with the range of code - zero they hold
 * exactly (bias types) or the codes they hold (offset types). */
typedef struct {
  LpDType type;
  int levels;        /* 16, 32 or 256 */
  gboolean has_min;  /* q * d + m; else (q - levels / 2) * d */
} Kind;

static const Kind kinds[] = {
  { LP_DTYPE_Q4_0, 16, FALSE }, { LP_DTYPE_Q4_1, 16, TRUE }, { LP_DTYPE_Q5_0, 32, FALSE },
  { LP_DTYPE_Q5_1, 32, TRUE },  { LP_DTYPE_Q8_0, 256, FALSE },
};

static const Kind *
kind_of (LpDType type)
{
  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++)
    if (kinds[i].type == type)
      return &kinds[i];
  g_return_val_if_reached (NULL);
}

/* Whether every block of 32 columns lies in one group. */
static gboolean
blocks_whole (const LpIntGrid *g)
{
  for (gint64 c = 0; c < g->cols; c++)
    if (g->g_idx[c] != g->g_idx[c - c % 32])
      return FALSE;
  return TRUE;
}

/* A block's offset for Q4_1 / Q5_1.  Its codes may all move by the same
 * count (q = code - zero + t, offset -scale * t: the same weights) while
 * they stay in [0, levels - 1]; the t whose offset f16 holds best is taken,
 * t = zero unless another is better (t = 8, or any t with few significant
 * bits, is exact, when the block's codes leave room).  Returns the offset's
 * f16 bits; *t the count, *err how far the f16 offset is from -scale * t. */
static guint16
block_offset (guint16 scale, int zero, const guint8 *code, int levels, int *t, double *err)
{
  int cmin = levels - 1, cmax = 0;
  for (int i = 0; i < 32; i++)
    cmin = MIN (cmin, code[i]), cmax = MAX (cmax, code[i]);
  double s = lp_f16_to_f32 (scale);
  /* zero first, then every other t that keeps the codes in range */
  guint16 best = lp_f32_to_f16 ((float) (-s * zero));
  *t = zero;
  *err = fabs ((double) lp_f16_to_f32 (best) + s * zero);
  for (int c = MAX (0, zero - cmin); c <= levels - 1 + zero - cmax && *err > 0; c++)
    {
      guint16 m = lp_f32_to_f16 ((float) (-s * c));
      double e = fabs ((double) lp_f16_to_f32 (m) + s * c);
      if (e < *err)
        best = m, *err = e, *t = c;
    }
  return best;
}

/* Over every block: whether the offsets are finite in f16, and exact. */
static void
check_offsets (const LpIntGrid *g, int levels, gboolean *finite, gboolean *exact)
{
  *finite = *exact = TRUE;
  for (gint64 r = 0; r < g->rows; r++)
    for (gint64 b = 0; b < g->cols / 32; b++)
      {
        gint64 j = r * g->n_groups + g->g_idx[b * 32];
        int t;
        double err;
        block_offset (g->scales[j], g->zeros[j], g->codes + r * g->cols + b * 32, levels, &t, &err);
        *finite &= isfinite (err);
        *exact &= err == 0;
      }
}

LpDType
lp_grid_block_type (const LpIntGrid *g, gboolean keep_zeros, const char **why)
{
  *why = NULL;
  if (g->cols % 32 != 0)
    {
      *why = "rows not a multiple of 32 columns";
      return LP_DTYPE_F32;
    }
  if (!blocks_whole (g))
    {
      *why = g->group_size % 32 != 0 ? "groups not a multiple of 32 columns" : "act-order groups split 32-column blocks";
      return LP_DTYPE_F32;
    }
  /* The range of code - zero over the tensor, and the largest code. */
  int lo = 0, hi = 0, top = 0;
  for (gint64 r = 0; r < g->rows; r++)
    for (gint64 c = 0; c < g->cols; c++)
      {
        int code = g->codes[r * g->cols + c], d = code - (int) g->zeros[r * g->n_groups + g->g_idx[c]];
        lo = MIN (lo, d);
        hi = MAX (hi, d);
        top = MAX (top, code);
      }
  gboolean finite, exact;
  check_offsets (g, top < 16 ? 16 : 32, &finite, &exact);
  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++)
    {
      const Kind *k = &kinds[i];
      if (k->has_min && top < k->levels && finite && keep_zeros && !exact)
        *why = "pruned: zeros kept exact, which the f16 offset of q4_1 / q5_1 would move";
      else if (k->has_min ? top < k->levels && finite : lo >= -k->levels / 2 && hi < k->levels / 2)
        return k->type;
    }
  if (*why == NULL)
    *why = finite ? "codes minus zero points beyond int8" : "offsets beyond f16";
  return LP_DTYPE_F32;
}

void
lp_grid_blocks_encode (const LpIntGrid *g, LpDType type, guint8 *dst, LpGridBlockChange *change)
{
  const Kind *k = kind_of (type);
  const gsize type_size = lp_dtype_info (type)->type_size;
  LpBlockParams p = { 0 };
  p.type = type;
  p.n_values = 32;
  p.sub_size = 32;
  p.has_offset = k->has_min;
  p.code_min = k->has_min ? 0 : -k->levels / 2;
  p.code_max = k->has_min ? k->levels - 1 : k->levels / 2 - 1;
  g_autofree float *want = g_new (float, g->cols);
  g_autofree float *got = g_new (float, g->cols);
  int q[32];
  for (gint64 r = 0; r < g->rows; r++)
    {
      guint8 *row = dst + (gsize) r * (gsize) (g->cols / 32) * type_size;
      for (gint64 b = 0; b < g->cols / 32; b++)
        {
          gint64 j = r * g->n_groups + g->g_idx[b * 32];
          const guint8 *code = g->codes + r * g->cols + b * 32;
          int zero = g->zeros[j], t = zero;
          double err;
          p.d = g->scales[j];
          p.m = k->has_min ? block_offset (p.d, zero, code, k->levels, &t, &err) : 0;
          for (int i = 0; i < 32; i++)
            q[i] = k->has_min ? code[i] - zero + t : code[i] - zero;
          lp_qpack_block32 (&p, q, row + b * type_size);
        }
      /* Read back as every reader decodes it, against the grid's values. */
      lp_int_grid_dequantize_rows (g, r, 1, want);
      gboolean ok = lp_dtype_to_f32 (type, row, got, (gsize) g->cols, NULL);
      g_assert (ok);
      for (gint64 c = 0; c < g->cols; c++)
        if (got[c] != want[c])
          {
            change->n_changed++;
            change->max_change = MAX (change->max_change, fabs ((double) got[c] - want[c]));
          }
      change->n_weights += (guint64) g->cols;
    }
}
