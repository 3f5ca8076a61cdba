/* llmpress quantize plugin — quantize.gptq: GPTQ (Frantar et al. 2022).
 *
 * Per linear weight W[R, C] with its input Hessian H = X^T X [C, C] from the
 * calibration loop (lp_layerwise_run, sequential by default: GPTQ's
 * true-sequential at block granularity):
 *  - dead inputs (H[j,j] = 0) get W[:, j] = 0 (lp_obs_prepare marks them);
 *  - static groups: every group's scale/zero (or ggml block parameters) is
 *    fitted from the original W before any error feedback;
 *  - act-order: W's columns and H are permuted by decreasing diag(H);
 *  - lp_obs_prepare damps H (damp * mean diag, raised when that is not enough)
 *    and turns it into U, the Cholesky factor of its inverse;
 *  - lp_obs_sweep walks the columns; each is quantized on the current grid
 *    (a group fitted from the current values when the sweep reaches its first
 *    column, as the reference code does) and its error spread over the
 *    columns not yet quantized.
 * On a block type the sweep chooses the codes inside exact ggml blocks; the
 * importance that weighs ggml's block fits is diag(H) (llama.cpp's imatrix up
 * to a constant).  Act-order on a block type always uses static groups:
 * blocks are runs of original columns. */
#include "config.h"

#include <string.h>

#include "quantize.h"

static const LpParamSpec gptq_params[] = {
  Q_COMMON_PARAMS,
  Q_GPTQ_PARAMS,
  Q_BUDGET_PARAMS,
  { .name = NULL }
};

static const LpInputSpec gptq_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to quantize" },
  { .name = NULL }
};

typedef struct {
  LpPassContext *ctx;
  QOptions o;
  QGptqSettings s;
  double loss;      /* sum of the OBS loss estimates */
  QGptqFactor factor;          /* of the input below, shared by its weights */
  int factor_layer, factor_in;
} Gptq;

gboolean
q_gptq_settings_read (LpPassContext *ctx, QGptqSettings *s)
{
  s->damp = lp_pass_context_get_float (ctx, "damp");
  s->block_size = (int) lp_pass_context_get_int (ctx, "block_size");
  s->act_order = lp_pass_context_get_bool (ctx, "act_order");
  s->static_groups = lp_pass_context_get_bool (ctx, "static_groups");
  return TRUE;
}

static gboolean
sweep_column (gpointer user_data, int c, int r0, int r1, const float *W, int ldw, float *q, GError **error)
{
  return q_cols_column (user_data, c, r0, r1, W, ldw, q, error);
}

static int
cmp_diag_desc (const void *a, const void *b, void *user_data)
{
  const float *d = user_data;
  float x = d[*(const int *) a], y = d[*(const int *) b];
  /* Ties keep the original order (a stable result on every platform). */
  return x > y ? -1 : x < y ? 1 : *(const int *) a - *(const int *) b;
}

/* Columns by decreasing diag(H). */
static int *
act_order_perm (const float *H, int n)
{
  g_autofree float *d = g_new (float, n);
  int *perm = g_new (int, n);
  for (int j = 0; j < n; j++)
    d[j] = H[(gsize) j * n + j], perm[j] = j;
  g_qsort_with_data (perm, n, sizeof (int), cmp_diag_desc, d);
  return perm;
}

/* dst[R, n] = src[R, n] with columns permuted: dst[:, s] = src[:, perm[s]];
 * and for a square matrix rows too when square. */
static void
permute_columns (const float *src, float *dst, gint64 rows, int n, const int *perm)
{
  for (gint64 r = 0; r < rows; r++)
    for (int s = 0; s < n; s++)
      dst[r * n + s] = src[r * n + perm[s]];
}

static float *
permute_square (const float *H, int n, const int *perm)
{
  float *P = g_new (float, (gsize) n * n);
  for (int a = 0; a < n; a++)
    for (int b = 0; b < n; b++)
      P[(gsize) a * n + b] = H[(gsize) perm[a] * n + perm[b]];
  return P;
}

void
q_gptq_factor_clear (QGptqFactor *f)
{
  g_clear_pointer (&f->perm, g_free);
  g_clear_pointer (&f->U, g_free);
  f->n = 0;
}

/* perm (act-order) and U of H_in[n, n] into f, once: the weights of one
 * input (q, k and v; gate and up) share them. */
static gboolean
gptq_factor (LpBackend *be, const QGptqSettings *st, const float *H_in, int n, QGptqFactor *f, GError **error)
{
  if (f->U != NULL)
    return TRUE;
  f->n = n;
  f->perm = st->act_order ? act_order_perm (H_in, n) : NULL;
  f->U = f->perm ? permute_square (H_in, n, f->perm) : g_memdup2 (H_in, sizeof (float) * n * n);
  f->damp_used = st->damp;
  if (lp_obs_prepare (be, n, f->U, st->damp, NULL, &f->damp_used, error))
    return TRUE;
  q_gptq_factor_clear (f);
  return FALSE;
}

gboolean
q_gptq_prepare (LpBackend *be, const QGptqSettings *st, gint64 rows, int n, float *W, const float *H_in,
                QGptqFactor *f, GError **error)
{
  g_return_val_if_fail (n > 0 && (f->U == NULL || f->n == n), FALSE);
  /* Dead inputs never fired: their weights cannot matter, GPTQ zeroes them. */
  for (int j = 0; j < n; j++)
    if (H_in[(gsize) j * n + j] == 0.f)
      for (gint64 r = 0; r < rows; r++)
        W[r * n + j] = 0.f;
  return gptq_factor (be, st, H_in, n, f, error);
}

LpTensor *
q_gptq_quantize_shared (LpBackend *be, const QGrid *grid, const QGptqSettings *st, const LpTensor *t, float *W,
                        const float *H_in, QGptqFactor *f, double *loss, gint64 *lost, GError **error)
{
  gint64 rows = lp_tensor_n_rows (t);
  int n = (int) lp_tensor_row_length (t);
  if (!q_gptq_prepare (be, st, rows, n, W, H_in, f, error))
    return NULL;
  g_autofree float *imp = g_new (float, n);
  for (int j = 0; j < n; j++)
    imp[j] = H_in[(gsize) j * n + j];
  QCols *q = q_cols_new (grid, W, imp, t, f->perm, st->static_groups, error);
  if (q == NULL)
    return NULL;
  g_autofree float *Ws = NULL;
  if (f->perm)
    {
      Ws = g_new (float, rows * n);
      permute_columns (W, Ws, rows, n, f->perm);
    }
  float *S = f->perm ? Ws : W;
  *loss = 0;
  LpTensor *out = NULL;
  LpObsSweep sweep = { NULL, sweep_column, q };
  if (lp_obs_sweep (be, (int) rows, n, S, n, f->U, q_cols_block_size (q, st->block_size), &sweep, loss, error))
    out = q_cols_finish (q, lost, error);
  q_cols_free (q);
  return out;
}

LpTensor *
q_gptq_quantize (LpBackend *be, const QGrid *grid, const QGptqSettings *st, const LpTensor *t, float *W,
                 const float *H_in, double *loss, double *damp_used, gint64 *lost, GError **error)
{
  QGptqFactor f = { 0 };
  LpTensor *out = q_gptq_quantize_shared (be, grid, st, t, W, H_in, &f, loss, lost, error);
  *damp_used = f.U ? f.damp_used : st->damp;
  q_gptq_factor_clear (&f);
  return out;
}

LpTensor *
q_gptq_weight (LpPassContext *ctx, const QOptions *o, const QGptqSettings *st, const LpTensor *t, const float *H,
               int n, QGptqFactor *shared, double *loss_out, GError **error)
{
  gint64 cols = lp_tensor_row_length (t);
  if (n != cols)
    {
      lp_set_error (error, LP_ERROR_INVALID, "Hessian of %d inputs, expected %" G_GINT64_FORMAT, n, cols);
      return NULL;
    }
  g_autofree float *W = lp_tensor_dup_f32 (t, error);
  if (W == NULL || !q_check_input (o, t, W, error))
    return NULL;
  gboolean odd;
  QGrid grid = q_grid_for (o, t->name, cols, &odd);
  q_log_grid (ctx, t, &grid, odd);
  gint64 lost = 0;
  if (grid.type == LP_DTYPE_F16)
    return q_round (lp_pass_context_get_backend (ctx), &grid, t, W, NULL, &lost, error);
  double loss;
  QGptqFactor own = { 0 };
  QGptqFactor *f = shared ? shared : &own;
  LpTensor *out = q_gptq_quantize_shared (lp_pass_context_get_backend (ctx), &grid, st, t, W, H, f, &loss, &lost,
                                          error);
  double damp_used = f->U ? f->damp_used : st->damp;
  q_gptq_factor_clear (&own);
  if (out == NULL)
    return NULL;
  if (damp_used != st->damp)
    lp_pass_context_log (ctx, LP_LOG_WARNING, "%s: Hessian not positive definite with damp=%g; used %g", t->name,
                         st->damp, damp_used);
  q_log_mask_lost (ctx, t, &grid, lost);
  if (loss_out)
    *loss_out += loss;
  lp_pass_context_log (ctx, LP_LOG_DEBUG, "%s: OBS loss %.6g", t->name, loss);
  return out;
}

gboolean
q_gptq_factor_follow (QGptqFactor *f, int *layer, int *in, const LpActStats *stats, GError **error)
{
  if (stats->hessian == NULL)
    {
      lp_set_error (error, LP_ERROR_FAILED, "no Hessian from the calibration");
      return FALSE;
    }
  /* Weights of one input come one after another (lp_layerwise_run): the
   * factor of their Hessian is made for the first and kept until the next input. */
  if (*layer != stats->layer || *in != (int) stats->which)
    {
      q_gptq_factor_clear (f);
      *layer = stats->layer;
      *in = (int) stats->which;
    }
  return TRUE;
}

static gboolean
on_weight (gpointer user_data, LpTensor *weight, const LpActStats *stats, LpTensor **replacement, GError **error)
{
  Gptq *g = user_data;
  if (!q_gptq_factor_follow (&g->factor, &g->factor_layer, &g->factor_in, stats, error))
    return FALSE;
  *replacement = q_gptq_weight (g->ctx, &g->o, &g->s, weight, stats->hessian, stats->n, &g->factor, &g->loss, error);
  return *replacement != NULL;
}

static gboolean
gptq_run (LpPassContext *ctx, GError **error)
{
  Gptq g = { ctx, .factor_layer = -1 };
  QBudget budget;
  if (!q_options_read (ctx, &g.o, error) || !q_budget_read (ctx, &g.o, &budget, error))
    return FALSE;
  q_gptq_settings_read (ctx, &g.s);
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  if (!q_check_model (&g.o, in, error))
    return FALSE;
  g_autoptr (LpModel) work = lp_model_derive (in);
  g_autoptr (GHashTable) assigned = NULL;
  if (g.o.has_preset)
    g.o.assigned = assigned = q_preset_assign (ctx, &g.o, in, FALSE);
  if (q_budget_active (&budget) && (g.o.assigned = assigned = q_budget_assign (ctx, &g.o, &budget, in, NULL, error)) == NULL)
    return FALSE;
  gboolean ok = lp_layerwise_run (ctx, work, LP_CALIB_HESSIAN, g.o.targets, g.o.ignore, on_weight, &g, error);
  q_gptq_factor_clear (&g.factor);
  if (!ok || !q_rtn_rest (ctx, &g.o, in, work, error))
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "OBS loss %.6g over all weights, %.3f bits per weight", g.loss,
                       lp_model_bits_per_weight (work));
  if (!q_budget_report (ctx, &budget, work, error))
    return FALSE;
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}

const LpPassInfo q_gptq_pass = {
  .name = "quantize.gptq",
  .summary = "GPTQ: Hessian-based quantization with error feedback into llama.cpp block types or an integer grid",
  .params = gptq_params,
  .inputs = gptq_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = gptq_run,
};
