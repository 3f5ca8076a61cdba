/* prune.channels: structured pruning into a smaller dense model.  In every
 * block the same number of FFN intermediate channels and of key/value groups
 * (a KV head with the query heads that read it) go, so the config stays one
 * scalar per hyper-parameter (ffn_dim, n_heads, n_kv_heads).
 *
 * Importance, from the calibration statistics of the unpruned model (no
 * gradients): removing input channel j of a linear layer W changes its
 * output by W[:, j] x_j, of squared size ||W[:, j]||^2 * sum_t x_j^2 over
 * the calibration tokens.  An FFN channel j is column j of ffn_down (input
 * silu(gate) * up); a KV group is the attn_output columns of its query
 * heads, summed. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "prune-common.h"
#include "prune-passes.h"
#include "structure.h"

/* score[j] = ||W[:, j]||^2 * sum_sq[j] for W[rows, cols] ("<name>" of block l). */
static gboolean
column_importance (LpModel *model, LpStats *stats, int l, const char *suffix, double *score, GError **error)
{
  g_autofree char *name = g_strdup_printf ("blk.%d.%s", l, suffix);
  LpTensor *t = lp_model_tensor (model, name);
  const LpActStats *e = lp_stats_lookup (stats, name);
  if (t == NULL || e == NULL || t->n_dims != 2 || e->n != t->shape[1])
    {
      lp_set_error (error, LP_ERROR_MISSING, "%s: expected a matrix with calibration "
                    "statistics, found %s", name, t == NULL ? "no tensor" : "no statistics");
      return FALSE;
    }
  g_autofree float *w = lp_tensor_dup_f32 (t, error);
  if (w == NULL || !lp_values_check_finite (name, w, lp_tensor_n_elements (t), error))
    return FALSE;
  gint64 rows = t->shape[0], cols = t->shape[1];
  for (gint64 j = 0; j < cols; j++)
    score[j] = 0;
  for (gint64 r = 0; r < rows; r++)
    for (gint64 j = 0; j < cols; j++)
      score[j] += (double) w[r * cols + j] * w[r * cols + j];
  for (gint64 j = 0; j < cols; j++)
    score[j] *= e->sum_sq[j];
  return TRUE;
}

/* Replace blk.<l>.<suffix> (when present) by its slice along dim. */
static gboolean
slice_into (LpModel *work, int l, const char *suffix, int dim, const guint8 *keep, gint64 n_keep, GError **error)
{
  g_autofree char *name = g_strdup_printf ("blk.%d.%s", l, suffix);
  LpTensor *t = lp_model_tensor (work, name);
  if (t == NULL)
    return TRUE;
  g_autoptr (LpTensor) s = prune_tensor_slice (t, dim, keep, n_keep, error);
  if (s == NULL)
    return FALSE;
  lp_model_set_tensor (work, s);
  prune_meta_tensor_changed (lp_model_meta (work), s);
  return TRUE;
}

static gboolean
prune_ffn (LpModel *input, LpModel *work, LpStats *stats, int l, int keep_n, GError **error)
{
  int F = (int) lp_model_config (input)->ffn_dim;
  g_autofree double *score = g_new (double, F);
  g_autofree guint8 *keep = g_new (guint8, F);
  if (!column_importance (input, stats, l, "ffn_down.weight", score, error))
    return FALSE;
  prune_keep_highest (score, F, keep_n, keep);
  return slice_into (work, l, "ffn_gate.weight", 0, keep, keep_n, error)
         && slice_into (work, l, "ffn_up.weight", 0, keep, keep_n, error)
         && slice_into (work, l, "ffn_down.weight", 1, keep, keep_n, error);
}

/* Expand a per-head choice to the rows (or columns) of hd each. */
static guint8 *
expand_heads (const guint8 *keep_head, int heads, int hd)
{
  guint8 *k = g_new (guint8, (gsize) heads * hd);
  for (int h = 0; h < heads; h++)
    memset (k + (gsize) h * hd, keep_head[h], hd);
  return k;
}

static gboolean
prune_kv (LpModel *input, LpModel *work, LpStats *stats, int l, int keep_groups, GError **error)
{
  const LpModelConfig *c = lp_model_config (input);
  int H = (int) c->n_heads, Hkv = (int) c->n_kv_heads, hd = (int) c->head_dim, qpg = H / Hkv;
  g_autofree double *col = g_new (double, (gsize) H * hd), *group = g_new0 (double, Hkv);
  if (!column_importance (input, stats, l, "attn_output.weight", col, error))
    return FALSE;
  /* Query head h reads KV head h / qpg (as the attention kernel does). */
  for (int j = 0; j < H * hd; j++)
    group[j / hd / qpg] += col[j];
  g_autofree guint8 *keep_g = g_new (guint8, Hkv), *keep_q = g_new (guint8, H);
  prune_keep_highest (group, Hkv, keep_groups, keep_g);
  for (int h = 0; h < H; h++)
    keep_q[h] = keep_g[h / qpg];
  g_autofree guint8 *q_rows = expand_heads (keep_q, H, hd), *kv_rows = expand_heads (keep_g, Hkv, hd);
  gint64 nq = (gint64) keep_groups * qpg * hd, nkv = (gint64) keep_groups * hd;
  return slice_into (work, l, "attn_q.weight", 0, q_rows, nq, error)
         && slice_into (work, l, "attn_q.bias", 0, q_rows, nq, error)
         && slice_into (work, l, "attn_k.weight", 0, kv_rows, nkv, error)
         && slice_into (work, l, "attn_k.bias", 0, kv_rows, nkv, error)
         && slice_into (work, l, "attn_v.weight", 0, kv_rows, nkv, error)
         && slice_into (work, l, "attn_v.bias", 0, kv_rows, nkv, error)
         && slice_into (work, l, "attn_output.weight", 1, q_rows, nq, error);
}

/* round(ratio * total) removed, at least one kept. */
static gboolean
count_removed (const char *what, double ratio, gint64 total, gint64 *removed, GError **error)
{
  if (!lp_sparsity_check (ratio, what, error))
    return FALSE;
  *removed = lp_sparsity_count (ratio, total);
  if (*removed >= total)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s=%g removes all %" G_GINT64_FORMAT ": expected at least one kept",
                    what, ratio, total);
      return FALSE;
    }
  return TRUE;
}

gboolean
prune_channels_run (LpPassContext *ctx, GError **error)
{
  LpModel *input = lp_pass_context_get_input_model (ctx, "input");
  const LpModelConfig *c = lp_model_config (input);
  gint64 ffn_out, kv_out;
  if (!count_removed ("ffn_ratio", lp_pass_context_get_float (ctx, "ffn_ratio"), c->ffn_dim, &ffn_out, error)
      || !count_removed ("kv_ratio", lp_pass_context_get_float (ctx, "kv_ratio"), c->n_kv_heads, &kv_out, error))
    return FALSE;
  if (ffn_out == 0 && kv_out == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "ffn_ratio and kv_ratio remove nothing (ffn_dim %"
                    G_GINT64_FORMAT ", %" G_GINT64_FORMAT " KV groups): expected at least one channel or group removed",
                    c->ffn_dim, c->n_kv_heads);
      return FALSE;
    }
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  g_autoptr (LpStats) stats = lp_stats_collect (input, cal, lp_pass_context_get_backend (ctx), FALSE, error);
  if (stats == NULL)
    return FALSE;
  g_autoptr (LpModel) work = lp_model_derive (input);
  for (int l = 0; l < c->n_layers; l++)
    {
      if ((ffn_out > 0 && !prune_ffn (input, work, stats, l, (int) (c->ffn_dim - ffn_out), error))
          || (kv_out > 0 && !prune_kv (input, work, stats, l, (int) (c->n_kv_heads - kv_out), error)))
        return FALSE;
      lp_pass_context_progress (ctx, l + 1, c->n_layers, "blocks");
    }
  LpModelConfig *wc = lp_model_config_mut (work);
  wc->n_heads -= kv_out * (c->n_heads / c->n_kv_heads);
  wc->n_kv_heads -= kv_out;
  wc->ffn_dim -= ffn_out;
  lp_meta_set_u32 (lp_model_meta (work), "llmpress.prune.ffn_channels_removed", (guint32) ffn_out);
  lp_meta_set_u32 (lp_model_meta (work), "llmpress.prune.kv_groups_removed", (guint32) kv_out);
  if (!lp_model_validate (work, error))
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "ffn_dim %" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT ", heads %" G_GINT64_FORMAT
                       "/%" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT " -> %"
                       G_GINT64_FORMAT " parameters", c->ffn_dim, wc->ffn_dim, c->n_heads, c->n_kv_heads, wc->n_heads,
                       wc->n_kv_heads, lp_model_n_params (input), lp_model_n_params (work));
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}
