/* llmpress quantize plugin — quantize.awq: activation-aware weight
 * quantization (Lin et al. 2024, llm-awq's auto_scale).
 *
 * For each group of linear layers sharing an input x (attn_q/k/v after
 * attn_norm; ffn_gate/up after ffn_norm; ffn_down after silu(gate)*up; and
 * attn_output after attn_v when there is no GQA, as llm-awq does), channel
 * scales s = mean|x|^a / sqrt(max * min) are tried for a = 0, 1/grid, ...
 * (a = 0: plain RTN), each weight W replaced by Q(W diag(s)) diag(s)^-1, and
 * the a with the least output error over the calibration tokens kept:
 *
 *   err = sum over the group's weights of tr(dW H dW^T),  dW = W - Q(W s)/s,
 *
 * H = X^T X the input Hessian: the squared error of X W^T summed over the
 * calibration tokens, without keeping X.  The scales are folded into the
 * preceding layer (norm weight or the rows of attn_v / ffn_up divided by s,
 * the group's columns multiplied), which leaves the float model's function
 * unchanged, then the block's weights are quantized: by RTN, or by GPTQ
 * against the scaled input's Hessian diag(1/s) H diag(1/s). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "quantize.h"

static const char *const awq_quantizers[] = { "rtn", "gptq", NULL };

static const LpParamSpec awq_params[] = {
  Q_COMMON_PARAMS,
  { .name = "grid", .type = LP_PARAM_INT, .default_value = "20", .min = 1, .max = 1000,
    .help = "scale exponents tried: a = 0, 1/grid, ..., (grid-1)/grid", .flags = LP_PARAM_RANGE },
  { .name = "quantizer", .type = LP_PARAM_ENUM, .default_value = "rtn", .choices = awq_quantizers,
    .help = "how the scaled weights are quantized: rtn (as llm-awq) or gptq (with the GPTQ parameters below)" },
  Q_GPTQ_PARAMS,
  Q_BUDGET_PARAMS,
  { .name = NULL }
};

static const LpInputSpec awq_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to quantize" },
  { .name = NULL }
};

typedef struct {
  LpPassContext *ctx;
  LpModel *work;
  QOptions o;
  QGptqSettings gptq;
  gboolean use_gptq;
  int grid;
  double gain;      /* sum over groups of (RTN error - chosen error) */
} Awq;

/* A weight of the group being searched. */
typedef struct {
  LpTensor *t;      /* as in work (borrowed) */
  float *w;         /* [R, n] f32 */
  gint64 rows;
} Member;

/* Output error of quantizing m's weights scaled by s[n]: sum of tr(dW H dW^T). */
static gboolean
scaled_error (Awq *a, Member *m, int n_members, const float *s, int n, const float *H, double *out, GError **error)
{
  LpBackend *be = lp_pass_context_get_backend (a->ctx);
  double err = 0;
  for (int k = 0; k < n_members; k++)
    {
      gint64 rows = m[k].rows;
      g_autofree float *ws = g_new (float, rows * n);
      for (gint64 r = 0; r < rows; r++)
        for (int j = 0; j < n; j++)
          ws[r * n + j] = m[k].w[r * n + j] * s[j];
      gboolean odd;
      QGrid g = q_grid_for (&a->o, m[k].t->name, n, &odd);
      gint64 lost;
      g_autoptr (LpTensor) q = q_round (be, &g, m[k].t, ws, NULL, &lost, error);
      if (q == NULL)
        return FALSE;
      g_autofree float *dw = lp_tensor_dup_f32 (q, error);
      if (dw == NULL)
        return FALSE;
      for (gint64 r = 0; r < rows; r++)
        for (int j = 0; j < n; j++)
          dw[r * n + j] = m[k].w[r * n + j] - dw[r * n + j] / s[j];
      g_autofree float *dwh = g_new (float, rows * n);
      lp_gemm (be, FALSE, (int) rows, n, n, 1.f, dw, n, H, n, 0.f, dwh, n);
      for (gint64 i = 0; i < rows * n; i++)
        err += (double) dw[i] * dwh[i];
    }
  *out = err;
  return TRUE;
}

/* llm-awq's scales for exponent e: mean|x|^e clamped at 1e-4, over sqrt(max*min). */
static void
awq_scales (const double *mean_abs, int n, double e, float *s)
{
  double lo = G_MAXDOUBLE, hi = 0;
  for (int j = 0; j < n; j++)
    {
      double v = MAX (pow (mean_abs[j], e), 1e-4);
      s[j] = (float) v;
      lo = MIN (lo, v), hi = MAX (hi, v);
    }
  double norm = sqrt (hi * lo);
  for (int j = 0; j < n; j++)
    s[j] = (float) (s[j] / norm);
}

/* Multiply the columns of t (f32 w) by s and store it in work. */
static gboolean
set_scaled (Awq *a, const LpTensor *like, const float *w, gint64 rows, gint64 cols, const float *s, gboolean by_rows,
            gboolean divide, GError **error)
{
  g_autofree float *v = g_memdup2 (w, sizeof (float) * rows * cols);
  for (gint64 r = 0; r < rows; r++)
    for (gint64 j = 0; j < cols; j++)
      {
        float f = by_rows ? s[r] : s[j];
        v[r * cols + j] = divide ? v[r * cols + j] / f : v[r * cols + j] * f;
      }
  g_autoptr (LpTensor) t = lp_tensor_new_f32 (like->name, like->n_dims, like->shape, v, error);
  if (t == NULL)
    return FALSE;
  /* Scaling keeps pruned weights at 0: the mask still holds. */
  if (lp_tensor_mask (like) != NULL)
    {
      LpTensor *m = lp_tensor_with_mask (t, lp_tensor_mask (like), error);
      if (m == NULL)
        return FALSE;
      lp_tensor_unref (t);
      t = m;
    }
  lp_model_set_tensor (a->work, t);
  return TRUE;
}

/* Search the scales of one group (members m, input statistics st), fold
 * them into the members and into prev (a norm weight [n] or a linear whose
 * rows are the n channels), and rescale st's Hessian to the scaled input. */
static gboolean
awq_search_fold (Awq *a, Member *m, int n_members, const LpActStats *st, LpTensor *prev, GError **error)
{
  int n = st->n;
  g_autofree double *mean_abs = g_new (double, n);
  for (int j = 0; j < n; j++)
    mean_abs[j] = st->n_tokens > 0 ? st->sum_abs[j] / (double) st->n_tokens : 0;
  g_autofree float *s = g_new (float, n);
  g_autofree float *best = g_new (float, n);
  double best_err = G_MAXDOUBLE, rtn_err = 0;
  for (int i = 0; i < a->grid; i++)
    {
      double err;
      awq_scales (mean_abs, n, (double) i / a->grid, s);
      if (!scaled_error (a, m, n_members, s, n, st->hessian, &err, error))
        return FALSE;
      if (i == 0)
        rtn_err = err;
      if (err < best_err)
        {
          best_err = err;
          memcpy (best, s, sizeof (float) * n);
        }
    }
  a->gain += rtn_err - best_err;
  /* Fold: the group's columns times s, the preceding layer's outputs over s. */
  for (int k = 0; k < n_members; k++)
    if (!set_scaled (a, m[k].t, m[k].w, m[k].rows, n, best, FALSE, FALSE, error))
      return FALSE;
  g_autofree float *pw = lp_tensor_dup_f32 (prev, error);
  if (pw == NULL
      || !set_scaled (a, prev, pw, prev->n_dims == 1 ? 1 : lp_tensor_n_rows (prev), lp_tensor_row_length (prev), best,
                      prev->n_dims == 2, TRUE, error))
    return FALSE;
  /* The Hessian of the scaled input x / s, for GPTQ (the block's buffer). */
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      st->hessian[(gsize) i * n + j] /= best[i] * best[j];
  return TRUE;
}

/* One group: its selected weights, and the layer before it (prev_name). */
static gboolean
awq_group (Awq *a, int layer, const LpActStats *st, const char *prev_name, GError **error)
{
  Member m[3];
  int n_members = 0;
  gboolean ok = TRUE;
  for (const char *const *c = lp_linear_input_consumers (st->which); ok && *c; c++)
    {
      g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, *c);
      LpTensor *t = lp_model_tensor (a->work, name);
      if (t == NULL || !q_selected (&a->o, t))
        continue;
      float *w = lp_tensor_dup_f32 (t, error);
      ok = w != NULL && q_check_input (&a->o, t, w, error);
      if (ok)
        m[n_members++] = (Member) { t, w, lp_tensor_n_rows (t) };
      else
        {
          g_prefix_error (error, "%s: ", name);
          g_free (w);
        }
    }
  LpTensor *prev = lp_model_tensor (a->work, prev_name);
  /* The preceding layer must produce exactly the group's n input channels. */
  gint64 prev_out = prev == NULL ? -1 : prev->n_dims == 1 ? lp_tensor_row_length (prev) : lp_tensor_n_rows (prev);
  if (ok && n_members > 0 && prev_out == st->n && !lp_tensor_is_quantized (prev))
    ok = awq_search_fold (a, m, n_members, st, prev, error);
  for (int k = 0; k < n_members; k++)
    g_free (m[k].w);
  return ok;
}

/* Quantize the block's selected weights as scaled (RTN or GPTQ). */
static gboolean
awq_quantize_block (Awq *a, int layer, const LpActStats *stats, GError **error)
{
  for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
    for (const char *const *c = lp_linear_input_consumers ((LpLinearInput) in); *c; c++)
      {
        g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, *c);
        LpTensor *t = lp_model_tensor (a->work, name);
        if (t == NULL || !q_selected (&a->o, t))
          continue;
        g_autoptr (LpTensor) q = NULL;
        if (a->use_gptq)
          q = q_gptq_weight (a->ctx, &a->o, &a->gptq, t, stats[in].hessian, stats[in].n, NULL, NULL, error);
        else
          {
            g_autofree float *w = lp_tensor_dup_f32 (t, error);
            if (w != NULL && !q_check_input (&a->o, t, w, error))
              g_clear_pointer (&w, g_free);
            /* (the error is prefixed with the name below) */
            gboolean odd;
            QGrid g = q_grid_for (&a->o, t->name, lp_tensor_row_length (t), &odd);
            q_log_grid (a->ctx, t, &g, odd);
            gint64 lost = 0;
            if (w != NULL)
              q = q_round (lp_pass_context_get_backend (a->ctx), &g, t, w, NULL, &lost, error);
            q_log_mask_lost (a->ctx, t, &g, lost);
          }
        if (q == NULL)
          {
            g_prefix_error (error, "%s: ", name);
            return FALSE;
          }
        lp_model_set_tensor (a->work, q);
      }
  return TRUE;
}

static gboolean
on_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  Awq *a = user_data;
  const LpModelConfig *cfg = lp_model_config (a->work);
  g_autofree char *attn_norm = g_strdup_printf ("blk.%d.attn_norm.weight", layer);
  g_autofree char *attn_v = g_strdup_printf ("blk.%d.attn_v.weight", layer);
  g_autofree char *ffn_norm = g_strdup_printf ("blk.%d.ffn_norm.weight", layer);
  g_autofree char *ffn_up = g_strdup_printf ("blk.%d.ffn_up.weight", layer);
  /* attn_output's input channels are attn_v's outputs only without GQA
   * (each v channel then feeds one query head), as llm-awq requires. */
  const char *prev[LP_LINEAR_IN_COUNT] = { attn_norm, cfg->n_kv_heads == cfg->n_heads ? attn_v : NULL, ffn_norm, ffn_up };
  for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
    if (prev[in] != NULL && !awq_group (a, layer, &stats[in], prev[in], error))
      {
        g_prefix_error (error, "block %d: ", layer);
        return FALSE;
      }
  return awq_quantize_block (a, layer, stats, error);
}

static gboolean
awq_run (LpPassContext *ctx, GError **error)
{
  Awq a = { ctx };
  QBudget budget;
  if (!q_options_read (ctx, &a.o, error) || !q_budget_read (ctx, &a.o, &budget, error))
    return FALSE;
  q_gptq_settings_read (ctx, &a.gptq);
  a.use_gptq = lp_pass_context_get_enum (ctx, "quantizer") == 1;
  a.grid = (int) lp_pass_context_get_int (ctx, "grid");
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  if (!q_check_model (&a.o, in, error))
    return FALSE;
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  g_autoptr (LpModel) work = lp_model_derive (in);
  a.work = work;
  g_autoptr (GHashTable) assigned = NULL;
  if (a.o.has_preset)
    a.o.assigned = assigned = q_preset_assign (ctx, &a.o, in, FALSE);
  if (q_budget_active (&budget) && (a.o.assigned = assigned = q_budget_assign (ctx, &a.o, &budget, in, NULL, error)) == NULL)
    return FALSE;
  if (!lp_calibration_run (cal, in, work, lp_pass_context_get_backend (ctx), LP_CALIB_HESSIAN | LP_CALIB_CHANNEL_STATS,
                           on_block, &a, error)
      || !q_rtn_rest (ctx, &a.o, in, work, error))
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "scales cut the summed output error of RTN by %.6g; %.3f bits per weight",
                       a.gain, lp_model_bits_per_weight (work));
  if (!q_budget_report (ctx, &budget, work, error))
    return FALSE;
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}

const LpPassInfo q_awq_pass = {
  .name = "quantize.awq",
  .summary = "AWQ: activation-aware channel scales searched on calibration data and folded into the preceding "
             "norm or linear, then RTN or GPTQ into llama.cpp block types or an integer grid",
  .params = awq_params,
  .inputs = awq_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = awq_run,
};
