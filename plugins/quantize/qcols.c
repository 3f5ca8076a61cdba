/* llmpress quantize plugin — the column quantizer: a tensor's group
 * parameters and codes while a pass chooses its values column by column
 * (GPTQ's sweep, RTN's single pass), on the integer grid or inside exact
 * ggml blocks through the grid view (quant.h). */
#include "config.h"

#include <string.h>

#include "quantize.h"

struct _QCols {
  QGrid g;
  gint64 rows, cols;              /* R, C */
  const LpTensor *like;
  const int *perm;                /* [C] sweep position -> original column, or NULL */
  float *imp_sweep;               /* [C] importance in sweep order, or NULL */
  gboolean fitted;                /* every group fitted up front */
  int n_groups;                   /* per row */
  float *sigma2;                  /* [R] ggml's row statistic (32-value block types) */
  /* integer grid */
  LpIntGrid *grid;
  /* block types */
  LpBlockParams *params;          /* [R] the current group, or [R, n_groups] when fitted */
  gint8 *codes;                   /* [R, C] original order */
  guint8 *bytes;                  /* [R, row_bytes] */
  gsize row_bytes;
};

static gboolean
is_block (const QCols *q)
{
  return q->g.type != LP_DTYPE_F32;
}

/* Group of original column c; for an integer grid swept in a permuted order
 * without static groups, groups are runs of sweep positions (GPTQ's
 * act-order with g_idx). */
static int
group_of (const QCols *q, int s, int c)
{
  return !q->fitted && q->perm != NULL ? s / q->g.group : c / q->g.group;
}

static gboolean
pruned (const QCols *q, gint64 r, gint64 c)
{
  return lp_tensor_mask (q->like) != NULL && !lp_tensor_mask_keeps (q->like, r * q->cols + c);
}

/* One group of row r: n values from x (stride 1) into v, pruned ones as 0
 * (position j is sweep position s0 + j). */
static void
group_values (const QCols *q, gint64 r, const float *x, int n, int s0, float *v)
{
  for (int j = 0; j < n; j++)
    {
      int c = q->perm ? q->perm[s0 + j] : s0 + j;
      v[j] = pruned (q, r, c) ? 0.f : x[j];
    }
}

/* Fit group gi of row r from values x[n] that start at sweep position s0.
 * Touches row r's state only (the sweep runs row ranges in parallel). */
static gboolean
fit_group (QCols *q, gint64 r, int gi, const float *x, int n, int s0, const float *imp, GError **error)
{
  float stack[LP_BLOCK_MAX_VALUES];
  g_autofree float *heap = n > LP_BLOCK_MAX_VALUES ? g_new (float, n) : NULL;
  float *v = heap ? heap : stack;
  group_values (q, r, x, n, s0, v);
  if (!is_block (q))
    {
      gsize k = (gsize) r * q->n_groups + gi;
      lp_int_fit (v, n, 1, n, imp, q->g.bits, q->g.symmetric, q->g.clip_search, &q->grid->scales[k], &q->grid->zeros[k]);
      return TRUE;
    }
  LpBlockParams *p = q->fitted ? &q->params[r * q->n_groups + gi] : &q->params[r];
  if (!lp_block_grid_fit (q->g.type, v, imp, q->sigma2[r], p, error))
    {
      g_prefix_error (error, "%s: row %" G_GINT64_FORMAT ", block %d: ", q->like->name, r, gi);
      return FALSE;
    }
  return TRUE;
}

static gboolean
fit_all (QCols *q, const float *W0, const float *importance, GError **error)
{
  if (q->g.per_tensor)
    {
      /* One range for the whole tensor; pruned weights are already 0 in W0. */
      guint16 s;
      guint8 z;
      lp_int_fit (W0, q->cols, q->rows, (int) q->cols, importance, q->g.bits, q->g.symmetric, q->g.clip_search, &s, &z);
      for (gint64 r = 0; r < q->rows; r++)
        q->grid->scales[r] = s, q->grid->zeros[r] = z;
      return TRUE;
    }
  for (gint64 r = 0; r < q->rows; r++)
    for (int gi = 0; gi < q->n_groups; gi++)
      {
        int c0 = gi * q->g.group, n = (int) MIN (q->g.group, q->cols - c0);
        /* group_values maps through perm: fit in original order here. */
        const int *perm = q->perm;
        q->perm = NULL;
        gboolean ok = fit_group (q, r, gi, W0 + r * q->cols + c0, n, c0, importance ? importance + c0 : NULL, error);
        q->perm = perm;
        if (!ok)
          return FALSE;
      }
  return TRUE;
}

/* The column quantizer with nothing fitted or chosen yet (q_cols_new). */
static QCols *
cols_alloc (const QGrid *g, const float *W0, const float *importance, const LpTensor *like, const int *perm,
            gboolean fit_now, GError **error)
{
  g_return_val_if_fail (g->type != LP_DTYPE_F16, NULL);
  QCols *q = g_new0 (QCols, 1);
  q->g = *g;
  q->like = like;
  q->rows = lp_tensor_n_rows (like);
  q->cols = lp_tensor_row_length (like);
  q->perm = perm;
  q->n_groups = (int) ((q->cols + g->group - 1) / g->group);
  q->fitted = fit_now || g->per_tensor || g->group >= q->cols || (perm != NULL && g->type != LP_DTYPE_F32);
  if (importance != NULL)
    {
      q->imp_sweep = g_new (float, q->cols);
      for (gint64 s = 0; s < q->cols; s++)
        q->imp_sweep[s] = importance[perm ? perm[s] : s];
    }
  if (g->type == LP_DTYPE_F32)
    {
      q->grid = lp_int_grid_new (q->rows, q->cols, g->bits, g->per_tensor ? (int) q->cols : g->group, g->symmetric, error);
      if (q->grid == NULL)
        {
          q_cols_free (q);
          return NULL;
        }
    }
  else
    {
      const LpDTypeInfo *info = lp_dtype_info (g->type);
      q->row_bytes = (gsize) (q->cols / info->block_size) * info->type_size;
      q->bytes = g_malloc0 (q->row_bytes * q->rows);
      q->codes = g_new0 (gint8, q->rows * q->cols);
      q->params = g_new (LpBlockParams, q->fitted ? q->rows * q->n_groups : q->rows);
      /* ggml's importance-weighted 32-value quantizers weigh by the row's mean square. */
      q->sigma2 = g_new0 (float, q->rows);
      if (importance != NULL && info->block_size == 32)
        for (gint64 r = 0; r < q->rows; r++)
          q->sigma2[r] = lp_block_grid_row_sigma2 (W0 + r * q->cols, q->cols);
    }
  return q;
}

QCols *
q_cols_new (const QGrid *g, const float *W0, const float *importance, const LpTensor *like, const int *perm,
            gboolean fit_now, GError **error)
{
  QCols *q = cols_alloc (g, W0, importance, like, perm, fit_now, error);
  if (q != NULL && q->fitted && !fit_all (q, W0, importance, error))
    g_clear_pointer (&q, q_cols_free);
  return q;
}

void
q_cols_free (QCols *q)
{
  if (q == NULL)
    return;
  lp_int_grid_unref (q->grid);
  g_free (q->imp_sweep);
  g_free (q->sigma2);
  g_free (q->params);
  g_free (q->codes);
  g_free (q->bytes);
  g_free (q);
}

int
q_cols_block_size (const QCols *q, int wanted)
{
  if (q->fitted)
    return wanted;
  return (wanted + q->g.group - 1) / q->g.group * q->g.group;
}

static void
pack_block (QCols *q, gint64 r, int b, const LpBlockParams *p)
{
  int codes[LP_BLOCK_MAX_VALUES];
  int bs = q->g.group;
  for (int j = 0; j < bs; j++)
    codes[j] = q->codes[r * q->cols + (gint64) b * bs + j];
  lp_block_grid_pack (p, codes, q->bytes + r * q->row_bytes + (gsize) b * lp_dtype_info (q->g.type)->type_size);
}

gboolean
q_cols_column (QCols *q, int s, int r0, int r1, const float *W, int ldw, float *out, GError **error)
{
  int c = q->perm ? q->perm[s] : s;
  int gi = group_of (q, s, c);
  if (!q->fitted && s % q->g.group == 0)
    {
      int n = (int) MIN (q->g.group, q->cols - s);
      for (gint64 r = r0; r < r1; r++)
        if (!fit_group (q, r, gi, W + r * ldw + s, n, s, q->imp_sweep ? q->imp_sweep + s : NULL, error))
          return FALSE;
    }
  int maxq = (1 << q->g.bits) - 1;
  out -= r0;
  for (gint64 r = r0; r < r1; r++)
    {
      float x = pruned (q, r, c) ? 0.f : W[r * ldw + s];
      if (!is_block (q))
        {
          gsize k = (gsize) r * q->n_groups + gi;
          out[r] = lp_int_quantize (lp_f16_to_f32 (q->grid->scales[k]), q->grid->zeros[k], maxq, x,
                                   &q->grid->codes[r * q->cols + c]);
          continue;
        }
      const LpBlockParams *p = q->fitted ? &q->params[r * q->n_groups + gi] : &q->params[r];
      int code;
      out[r] = lp_block_grid_quantize_value (p, c % q->g.group, x, &code);
      q->codes[r * q->cols + c] = (gint8) code;
      /* Lazily fitted blocks are packed as soon as their last value is chosen. */
      if (!q->fitted && (c + 1) % q->g.group == 0)
        pack_block (q, r, gi, p);
    }
  /* Shared state: written by the range holding row 0 only. */
  if (!is_block (q) && !q->fitted && q->perm != NULL && r0 == 0)
    q->grid->g_idx[c] = gi;
  return TRUE;
}

/* Pruned weights of `like` whose effective value in t is not exactly 0. */
static gint64
count_lost (const LpTensor *like, const LpTensor *t, GError **error)
{
  if (lp_tensor_mask (like) == NULL)
    return 0;
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  if (v == NULL)
    return -1;
  gint64 lost = 0, n = lp_tensor_n_elements (like);
  for (gint64 i = 0; i < n; i++)
    lost += !lp_tensor_mask_keeps (like, i) && v[i] != 0.f;
  return lost;
}

/* The quantized tensor t of `like`, with like's mask when every pruned
 * weight stayed exactly 0 (else without; mask_lost says how many did not). */
static LpTensor *
keep_mask (const LpTensor *like, LpTensor *t, gint64 *mask_lost, GError **error)
{
  g_autoptr (LpTensor) owned = t;
  gint64 lost = count_lost (like, t, error);
  if (lost < 0)
    return NULL;
  *mask_lost = lost;
  if (lp_tensor_mask (like) == NULL || lost > 0)
    return g_steal_pointer (&owned);
  return lp_tensor_with_mask (t, lp_tensor_mask (like), error);
}

LpTensor *
q_cols_finish (QCols *q, gint64 *mask_lost, GError **error)
{
  const LpTensor *like = q->like;
  *mask_lost = 0;
  LpTensor *t = NULL;
  if (!is_block (q))
    t = lp_tensor_new_int_grid (like->name, like->n_dims, like->shape, q->grid, NULL, error);
  else
    {
      if (q->fitted)
        for (gint64 r = 0; r < q->rows; r++)
          for (int b = 0; b < q->n_groups; b++)
            pack_block (q, r, b, &q->params[r * q->n_groups + b]);
      g_autoptr (GBytes) bytes = g_bytes_new_take (g_steal_pointer (&q->bytes), q->row_bytes * q->rows);
      t = lp_tensor_new_from_bytes (like->name, q->g.type, like->n_dims, like->shape, bytes, error);
    }
  if (t == NULL)
    return NULL;
  return keep_mask (like, t, mask_lost, error);
}

/* RTN into a block type: llama-quantize's bytes, which fitting every block
 * and rounding each value through the grid view would also give, row by row
 * on every thread (lp_quantize_rows), with no per-block state kept.  Pruned
 * weights are 0 in W already (a mask's invariant). */
static LpTensor *
round_blocks (const QGrid *g, const LpTensor *like, const float *W, const float *importance, gint64 *mask_lost,
              GError **error)
{
  gint64 rows = lp_tensor_n_rows (like), cols = lp_tensor_row_length (like);
  guint64 row_bytes;
  if (!lp_dtype_row_bytes (g->type, (guint64) cols, &row_bytes, error))
    return NULL;
  guint8 *bytes = g_malloc (row_bytes * rows);
  if (!lp_quantize_rows (g->type, W, rows, cols, importance, bytes, error))
    {
      g_free (bytes);
      g_prefix_error (error, "%s: ", like->name);
      return NULL;
    }
  g_autoptr (GBytes) b = g_bytes_new_take (bytes, row_bytes * rows);
  LpTensor *t = lp_tensor_new_from_bytes (like->name, g->type, like->n_dims, like->shape, b, error);
  return t ? keep_mask (like, t, mask_lost, error) : NULL;
}

LpTensor *
q_round (LpBackend *be, const QGrid *g, const LpTensor *like, const float *W, const float *importance,
         gint64 *mask_lost, GError **error)
{
  *mask_lost = 0;
  if (g->type == LP_DTYPE_F16)
    {
      g_autoptr (LpTensor) f = lp_tensor_new_f32 (like->name, like->n_dims, like->shape, W, error);
      if (f == NULL)
        return NULL;
      LpTensor *h = lp_tensor_convert (f, LP_DTYPE_F16, error);
      if (h == NULL || lp_tensor_mask (like) == NULL)
        return h;
      /* f16 keeps 0 exact. */
      LpTensor *m = lp_tensor_with_mask (h, lp_tensor_mask (like), error);
      lp_tensor_unref (h);
      return m;
    }
  QCols *q;
  if (g->type == LP_DTYPE_F32 && !g->per_tensor)
    {
      /* Group-wise RTN on the integer grid is a backend op (the device's
       * when it has one).  Pruned weights are 0 in W already (a mask's
       * invariant), and every range holds 0, so they stay exactly 0. */
      q = cols_alloc (g, W, importance, like, NULL, TRUE, error);
      if (q == NULL)
        return NULL;
      LpGroupQuant gq = { g->bits, g->group, g->symmetric, g->clip_search };
      lp_quantize_groups (be, (int) q->rows, (int) q->cols, W, (int) q->cols, importance, &gq, q->grid->codes,
                          q->grid->scales, q->grid->zeros);
    }
  else if (g->type != LP_DTYPE_F32)
    return round_blocks (g, like, W, importance, mask_lost, error);
  else
    {
      /* One range for the whole tensor, then each value rounded. */
      q = q_cols_new (g, W, importance, like, NULL, TRUE, error);
      if (q == NULL)
        return NULL;
      g_autofree float *col = g_new (float, q->rows);
      for (gint64 c = 0; c < q->cols; c++)
        if (!q_cols_column (q, (int) c, 0, (int) q->rows, W, (int) q->cols, col, error))
          {
            q_cols_free (q);
            return NULL;
          }
    }
  LpTensor *t = q_cols_finish (q, mask_lost, error);
  q_cols_free (q);
  return t;
}
