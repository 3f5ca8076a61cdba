/* llmpress quantize plugin — the bits-per-weight allocator of quantize.rtn
 * (target_bpw=): per-tensor grids from a ladder so that the selected
 * tensors' storage reaches the target, spending the bits where the
 * calibration data says they buy the most.
 *
 * Sensitivity of tensor t on grid k: the output error its RTN weights cause
 * over the calibration tokens, err(t, k) = tr(dW H dW^T) with dW = W - Q_k(W)
 * and H = X^T X its input Hessian (so no activations are kept).  Every tensor
 * starts on the cheapest grid; then, greedily, the upgrade with the largest
 * error drop per extra stored bit that still fits the budget is taken, until
 * none fits.  The ladder: the integer grid at 3, 4, 5, 6, 8 bits (with the
 * pass's group size), or for a block-type format llama.cpp's q3_k, q4_k,
 * q5_k, q6_k, q8_0 (each with its fallback for odd rows).  Two bits are left
 * out: the per-layer error does not see how a 2-bit layer's damage compounds
 * through the layers after it, and on stories260K an allocation with 2-bit
 * tensors lost to uniform 3 bits at the same size.  Errors are compared
 * relative to each layer's output energy tr(W H W^T). */
#include "config.h"

#include "quantize.h"

#define N_RUNGS 5

typedef struct {
  LpTensor *t;
  double err[N_RUNGS];
  guint64 bytes[N_RUNGS];
  int rung;
} Cand;

/* The grid of rung k for options o (as an override of the format). */
static QOverride
rung_override (const QOptions *o, int k)
{
  static const int bits[N_RUNGS] = { 3, 4, 5, 6, 8 };
  static const LpDType types[N_RUNGS] = { LP_DTYPE_Q3_K, LP_DTYPE_Q4_K, LP_DTYPE_Q5_K, LP_DTYPE_Q6_K, LP_DTYPE_Q8_0 };
  QOverride v = { "*", LP_DTYPE_F32, bits[k] };
  if (o->format != LP_DTYPE_F32)
    v.format = types[k];
  return v;
}

/* err and bytes of every rung for one tensor. */
static gboolean
measure (LpPassContext *ctx, const QOptions *o, Cand *c, const LpActStats *e, GError **error)
{
  LpTensor *t = c->t;
  gint64 rows = lp_tensor_n_rows (t);
  int n = (int) lp_tensor_row_length (t);
  g_autofree float *w = lp_tensor_dup_f32 (t, error);
  if (w == NULL || !q_check_input (o, t, w, error))
    return FALSE;
  g_autofree float *dw = g_new (float, rows * n), *dwh = g_new (float, rows * n);
  /* The output energy tr(W H W^T): errors are compared relative to it. */
  LpBackend *be = lp_pass_context_get_backend (ctx);
  lp_gemm (be, FALSE, (int) rows, n, n, 1.f, w, n, e->hessian, n, 0.f, dwh, n);
  double energy = 0;
  for (gint64 i = 0; i < rows * n; i++)
    energy += (double) w[i] * dwh[i];
  energy = MAX (energy, 1e-30);
  for (int k = 0; k < N_RUNGS; k++)
    {
      QOptions ok = *o;
      ok.overrides[0] = rung_override (o, k);
      ok.n_overrides = 1;
      gboolean odd;
      QGrid g = q_grid_for (&ok, t->name, n, &odd);
      gint64 lost;
      g_autoptr (LpTensor) q = q_round (be, &g, t, w, NULL, &lost, error);
      if (q == NULL)
        return FALSE;
      g_autofree float *v = lp_tensor_dup_f32 (q, error);
      if (v == NULL)
        return FALSE;
      for (gint64 i = 0; i < rows * n; i++)
        dw[i] = w[i] - v[i];
      lp_gemm (be, FALSE, (int) rows, n, n, 1.f, dw, n, e->hessian, n, 0.f, dwh, n);
      double err = 0;
      for (gint64 i = 0; i < rows * n; i++)
        err += (double) dw[i] * dwh[i];
      c->err[k] = err / energy;
      c->bytes[k] = lp_tensor_storage_bytes (q);
    }
  return TRUE;
}

/* Greedy: the best error drop per extra byte that fits, until none fits. */
static void
allocate (Cand *c, guint n, guint64 budget)
{
  guint64 used = 0;
  for (guint i = 0; i < n; i++)
    used += c[i].bytes[0];
  for (;;)
    {
      int best = -1;
      double best_gain = 0;
      for (guint i = 0; i < n; i++)
        {
          int k = c[i].rung;
          if (k + 1 >= N_RUNGS)
            continue;
          guint64 extra = c[i].bytes[k + 1] > c[i].bytes[k] ? c[i].bytes[k + 1] - c[i].bytes[k] : 0;
          double gain = (c[i].err[k] - c[i].err[k + 1]) / (double) MAX (extra, 1);
          if (used + extra <= budget && (best < 0 || gain > best_gain))
            best = (int) i, best_gain = gain;
        }
      if (best < 0)
        return;
      int k = c[best].rung;
      used = used - c[best].bytes[k] + c[best].bytes[k + 1];
      c[best].rung = k + 1;
    }
}

GHashTable *
q_allocate (LpPassContext *ctx, const QOptions *o, LpModel *model, LpStats *stats, double target_bpw, GError **error)
{
  g_autoptr (GArray) cands = g_array_new (FALSE, TRUE, sizeof (Cand));
  guint64 params = 0;
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if (!q_selected (o, t))
        continue;
      const LpActStats *e = lp_stats_lookup (stats, t->name);
      if (e == NULL || e->hessian == NULL || e->n != lp_tensor_row_length (t))
        {
          lp_set_error (error, LP_ERROR_MISSING,
                        "%s: target_bpw: expected the input Hessian of every selected tensor, found none for it "
                        "(only linear weights of blocks have one: narrow targets=)",
                        t->name);
          return NULL;
        }
      Cand c = { t };
      if (!measure (ctx, o, &c, e, error))
        {
          g_prefix_error (error, "%s: ", t->name);
          return NULL;
        }
      params += (guint64) lp_tensor_n_elements (t);
      g_array_append_val (cands, c);
      lp_pass_context_progress (ctx, i + 1, lp_model_n_tensors (model), "sensitivity");
    }
  Cand *c = (Cand *) cands->data;
  guint64 floor_bytes = 0;
  for (guint i = 0; i < cands->len; i++)
    floor_bytes += c[i].bytes[0];
  guint64 budget = (guint64) (target_bpw * (double) params / 8.0);
  if (budget < floor_bytes)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "target_bpw: expected at least %.3f bits per weight (every selected tensor on the cheapest grid), "
                    "found %g",
                    8.0 * (double) floor_bytes / (double) MAX (params, 1), target_bpw);
      return NULL;
    }
  allocate (c, cands->len, budget);
  GHashTable *choice = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  guint64 used = 0;
  for (guint i = 0; i < cands->len; i++)
    {
      QOverride *v = g_new (QOverride, 1);
      *v = rung_override (o, c[i].rung);
      used += c[i].bytes[c[i].rung];
      g_hash_table_insert (choice, g_strdup (c[i].t->name), v);
      g_autofree char *grid = v->format == LP_DTYPE_F32 ? g_strdup_printf ("int%d", v->bits)
                                                        : g_strdup (lp_dtype_name (v->format));
      lp_pass_context_log (ctx, LP_LOG_INFO, "%s: %s (output error %.4g)", c[i].t->name, grid, c[i].err[c[i].rung]);
    }
  lp_pass_context_log (ctx, LP_LOG_INFO, "target_bpw %.3f: the selected tensors take %.3f bits per weight", target_bpw,
                       8.0 * (double) used / (double) MAX (params, 1));
  return choice;
}
