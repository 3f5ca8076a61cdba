/* llmpress — SparseGPT and Wanda on one layer (sparsity.h), on the shared
 * OBS column sweep (obs.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/obs.h>
#include <llmpress/sparsity.h>

void
lp_wanda_scores (const float *W, gint64 rows, gint64 cols, const double *sum_sq, float *scores)
{
  g_autofree float *norm = g_new (float, cols);
  for (gint64 j = 0; j < cols; j++)
    norm[j] = (float) sqrt (sum_sq[j]);
  for (gint64 r = 0; r < rows; r++)
    for (gint64 j = 0; j < cols; j++)
      scores[r * cols + j] = fabsf (W[r * cols + j]) * norm[j];
}

typedef struct {
  const LpSparseGPTOptions *o;
  int rows, n;
  guint8 *pruned;       /* [rows, n] */
  const float *U;       /* the factor, for N:M scores inside the sweep */
  float *scores;        /* block_begin's scratch: [rows, block] */
  guint8 *sel;          /* block_begin's scratch: [rows, block] */
} SparseGPT;

/* W^2 / U[c,c]^2: the OBS saliency of removing W[r,c] given the columns before c. */
static inline float
saliency (float w, float u)
{
  return w * w / (u * u);
}

static gboolean
sgpt_block_begin (gpointer user_data, int c0, int c1, const float *W, int ldw, int rows, const float *U, int n,
                  GError **error)
{
  SparseGPT *s = user_data;
  s->U = U;
  if (s->o->pattern.m > 0)
    return TRUE;
  int w = c1 - c0;
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < w; j++)
      s->scores[(gsize) r * w + j] = saliency (W[(gsize) r * ldw + c0 + j], U[(gsize) (c0 + j) * n + c0 + j]);
  /* The block's share of the tensor's quota, so the total is exact. */
  gint64 k = lp_sparsity_count (s->o->sparsity, (gint64) rows * c1) - lp_sparsity_count (s->o->sparsity, (gint64) rows * c0);
  lp_select_lowest (s->scores, (gint64) rows * w, k, s->sel);
  for (int r = 0; r < rows; r++)
    memcpy (s->pruned + (gsize) r * s->n + c0, s->sel + (gsize) r * w, (gsize) w);
  return TRUE;
}

/* N:M: choose the group starting at column c from the current (updated) values. */
static void
sgpt_select_group (SparseGPT *s, int c, int r0, int r1, const float *W, int ldw)
{
  int m = s->o->pattern.m;
  /* Scratch of this call: the sweep runs row ranges on several threads. */
  g_autofree float *sc = g_new (float, m);
  for (int r = r0; r < r1; r++)
    {
      for (int j = 0; j < m; j++)
        sc[j] = saliency (W[(gsize) r * ldw + c + j], s->U[(gsize) (c + j) * s->n + c + j]);
      lp_select_lowest (sc, m, m - s->o->pattern.n, s->pruned + (gsize) r * s->n + c);
    }
}

static gboolean
sgpt_column (gpointer user_data, int c, int r0, int r1, const float *W, int ldw, float *q, GError **error)
{
  SparseGPT *s = user_data;
  if (s->o->pattern.m > 0 && c % s->o->pattern.m == 0)
    sgpt_select_group (s, c, r0, r1, W, ldw);
  for (int r = r0; r < r1; r++)
    q[r - r0] = s->pruned[(gsize) r * s->n + c] ? 0.0f : W[(gsize) r * ldw + c];
  return TRUE;
}

static gboolean
pattern_fits (const LpSparseGPTOptions *o, int n, GError **error)
{
  int m = o->pattern.m;
  if (m > 0 && n % m != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "sparsegpt: pattern %d:%d needs columns divisible by %d, found %d",
                    o->pattern.n, m, m, n);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_sparsegpt_prune_factored (LpBackend *be, int rows, int n, float *W, const float *U, const gboolean *dead,
                             const LpSparseGPTOptions *o, guint8 *pruned, double *loss, GError **error)
{
  int m = o->pattern.m;
  if (!pattern_fits (o, n, error))
    return FALSE;
  for (int j = 0; j < n; j++)
    if (dead[j])
      for (int r = 0; r < rows; r++)
        W[(gsize) r * n + j] = 0.0f;
  /* N:M groups must not straddle blocks: the columns after a block are not
   * updated until the block ends. */
  int bs = MAX (o->block_size, 1);
  if (m > 0)
    bs = (bs + m - 1) / m * m;
  bs = MIN (bs, n);
  g_autofree float *scores = g_new (float, (gsize) rows * bs);
  g_autofree guint8 *sel = g_new (guint8, (gsize) rows * bs);
  memset (pruned, 0, (gsize) rows * n);
  SparseGPT s = { o, rows, n, pruned, NULL, scores, sel };
  LpObsSweep sweep = { sgpt_block_begin, sgpt_column, &s };
  return lp_obs_sweep (be, rows, n, W, n, U, bs, &sweep, loss, error);
}

gboolean
lp_sparsegpt_prune (LpBackend *be, int rows, int n, float *W, float *H, const LpSparseGPTOptions *o, guint8 *pruned,
                    double *loss, GError **error)
{
  if (!pattern_fits (o, n, error))
    return FALSE;
  g_autofree gboolean *dead = g_new0 (gboolean, n);
  return lp_obs_prepare (be, n, H, o->damp, dead, NULL, error)
         && lp_sparsegpt_prune_factored (be, rows, n, W, H, dead, o, pruned, loss, error);
}
