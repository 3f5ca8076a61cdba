/* llmpress — CALDERA's low-rank compensation of one compressed weight
 * (compensate.h): W ≈ Q + L R, alternating an activation-aware LR step
 * with a GPTQ re-quantization of Q. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <llmpress/compensate.h>
#include <llmpress/form.h>
#include <llmpress/lowrank.h>
#include <llmpress/obs.h>

#include "lp-internal.h"

/* LPLR rounds per LR step: each quantizes L, refits R, quantizes it,
 * refits L, quantizes it. */
#define LPLR_ROUNDS 2

static gboolean
factor_is_f16 (int bits)
{
  return bits == 0 || bits == 16;
}

guint64
lp_compensate_factor_bytes (gint64 n, gint64 k, int rank, int bits, int group)
{
  if (rank <= 0)
    return 0;
  if (factor_is_f16 (bits))
    return (guint64) (n * rank + rank * k) * 2;
  /* A grid's bytes depend only on its shape, bits and group size. */
  guint64 bytes = 0;
  gint64 shapes[2][2] = { { n, rank }, { rank, k } };
  for (int i = 0; i < 2; i++)
    {
      g_autoptr (LpIntGrid) g = lp_int_grid_new (shapes[i][0], shapes[i][1], bits,
                                                 (int) MIN (group, shapes[i][1]), FALSE, NULL);
      bytes += g ? lp_int_grid_n_bytes (g) : 0;
    }
  return bytes;
}

double
lp_output_error (LpBackend *be, gint64 n, gint64 k, const float *D, const float *H)
{
  g_autofree float *DH = g_new (float, n * k);
  lp_gemm (be, FALSE, (int) n, (int) k, (int) k, 1.0f, D, (int) k, H, (int) k, 0.0f, DH, (int) k);
  double e = 0;
  for (gint64 i = 0; i < n * k; i++)
    e += (double) DH[i] * D[i];
  return e;
}

/* v [rows, cols] held as a factor: on the grid of (bits, group) fitted
 * with per-column importance imp (NULL: none), or as f16.  values gets what
 * it holds in f32. */
static LpTensor *
factor_new (LpBackend *be, const char *name, int rows, int cols, const float *v, const float *imp,
            const LpCompensateOptions *o, float *values, GError **error)
{
  gint64 shape[2] = { rows, cols };
  if (factor_is_f16 (o->factor_bits))
    {
      g_autoptr (LpTensor) t = lp_tensor_new (name, LP_DTYPE_F16, 2, shape, error);
      if (t == NULL)
        return NULL;
      guint16 *h = lp_tensor_data_mut (t);
      for (gint64 i = 0; i < (gint64) rows * cols; i++)
        {
          h[i] = lp_f32_to_f16 (v[i]);
          values[i] = lp_f16_to_f32 (h[i]);
        }
      return g_steal_pointer (&t);
    }
  int group = MIN (o->factor_group, cols);
  g_autoptr (LpIntGrid) g = lp_int_grid_new (rows, cols, o->factor_bits, group, FALSE, error);
  if (g == NULL)
    return NULL;
  LpGroupQuant gq = { o->factor_bits, group, FALSE, TRUE };
  lp_quantize_groups (be, rows, cols, v, cols, imp, &gq, g->codes, g->scales, g->zeros);
  lp_int_grid_dequantize (g, values);
  return lp_tensor_new_int_grid (name, 2, shape, g, NULL, error);
}

/* Solve (M^T M + ridge) X = M^T E for X [r, K]: M [N, r], E [N, K] (in
 * double; the ridge keeps a column quantized to zero harmless). */
static void
least_squares_right (int n, int k, int r, const float *M, const float *E, float *X)
{
  g_autofree double *G = g_new0 (double, (gsize) r * r);
  g_autofree double *B = g_new0 (double, (gsize) r * k);
  for (int i = 0; i < n; i++)
    for (int a = 0; a < r; a++)
      {
        double m = M[(gsize) i * r + a];
        for (int b = 0; b < r; b++)
          G[a * r + b] += m * M[(gsize) i * r + b];
        for (int c = 0; c < k; c++)
          B[(gsize) a * k + c] += m * E[(gsize) i * k + c];
      }
  double tr = 0;
  for (int a = 0; a < r; a++)
    tr += G[a * r + a];
  for (int a = 0; a < r; a++)
    G[a * r + a] += 1e-9 * (tr > 0 ? tr / r : 1.0) + 1e-30;
  /* Cholesky G = C C^T, then two triangular solves per column of B. */
  for (int j = 0; j < r; j++)
    {
      double d = G[j * r + j];
      for (int p = 0; p < j; p++)
        d -= G[j * r + p] * G[j * r + p];
      G[j * r + j] = d = sqrt (MAX (d, 1e-300));
      for (int i = j + 1; i < r; i++)
        {
          double s = G[i * r + j];
          for (int p = 0; p < j; p++)
            s -= G[i * r + p] * G[j * r + p];
          G[i * r + j] = s / d;
        }
    }
  g_autofree double *y = g_new (double, r);
  for (int c = 0; c < k; c++)
    {
      for (int i = 0; i < r; i++)
        {
          double s = B[(gsize) i * k + c];
          for (int p = 0; p < i; p++)
            s -= G[i * r + p] * y[p];
          y[i] = s / G[i * r + i];
        }
      for (int i = r - 1; i >= 0; i--)
        {
          double s = y[i];
          for (int p = i + 1; p < r; p++)
            s -= G[p * r + i] * y[p];
          y[i] = s / G[i * r + i];
        }
      for (int i = 0; i < r; i++)
        X[(gsize) i * k + c] = (float) y[i];
    }
}

/* One LR step's result: the factors as tensors and their values. */
typedef struct {
  LpTensor *l, *r; /* [N, R], [R, K] */
  float *lv, *rv;
  double err;
} Factors;

static void
factors_clear (Factors *f)
{
  g_clear_pointer (&f->l, lp_tensor_unref);
  g_clear_pointer (&f->r, lp_tensor_unref);
  g_clear_pointer (&f->lv, g_free);
  g_clear_pointer (&f->rv, g_free);
  f->err = INFINITY;
}

/* E [N, K] (the residual W - Q) less L R, into D. */
static void
residual (LpBackend *be, int n, int k, int r, const float *E, const float *L, const float *R, float *D)
{
  memcpy (D, E, sizeof (float) * n * k);
  lp_gemm (be, FALSE, n, k, r, -1.0f, L, r, R, k, 1.0f, D, k);
}

/* The LR step: the factors of least output error for E [N, K] = W - Q. */
static gboolean
fit_factors (LpBackend *be, int n, int k, const float *E, const float *H, const float *C, const float *imp,
             const char *name, const LpCompensateOptions *o, Factors *best, GError **error)
{
  const int r = o->rank;
  LpLowRankOptions lo = LP_LOWRANK_OPTIONS_INIT;
  g_autoptr (LpSvd) svd = lp_asvd_new (be, n, k, E, C, r, &lo, error);
  if (svd == NULL)
    return FALSE;
  g_autofree float *L = g_new (float, (gsize) n * r);
  g_autofree float *R = g_new (float, (gsize) r * k);
  g_autofree float *D = g_new (float, (gsize) n * k);
  lp_asvd_factors (svd, C, r, L, R);
  /* L = U_R: each column to unit norm, its scale moved into R's row. */
  for (int c = 0; c < r; c++)
    {
      double s = 0;
      for (int i = 0; i < n; i++)
        s += (double) L[(gsize) i * r + c] * L[(gsize) i * r + c];
      float norm = (float) sqrt (s);
      if (norm == 0.f)
        continue;
      for (int i = 0; i < n; i++)
        L[(gsize) i * r + c] /= norm;
      for (int j = 0; j < k; j++)
        R[(gsize) c * k + j] *= norm;
    }
  g_autofree char *l_name = g_strconcat (name, ".lora_b", NULL);
  g_autofree char *r_name = g_strconcat (name, ".lora_a", NULL);
  for (int round = 0; round < LPLR_ROUNDS; round++)
    {
      Factors f = { NULL, NULL, g_new (float, (gsize) n * r), g_new (float, (gsize) r * k), INFINITY };
      /* L quantized; R refitted against it and quantized; L refitted
       * against that R with the data and quantized. */
      f.l = factor_new (be, l_name, n, r, L, NULL, o, f.lv, error);
      if (f.l != NULL)
        {
          least_squares_right (n, k, r, f.lv, E, R);
          f.r = factor_new (be, r_name, r, k, R, imp, o, f.rv, error);
        }
      if (f.r != NULL && lp_lowrank_update_a (n, k, r, E, H, f.rv, L, NULL))
        {
          lp_tensor_unref (f.l);
          f.l = factor_new (be, l_name, n, r, L, NULL, o, f.lv, error);
        }
      if (f.l == NULL || f.r == NULL)
        {
          factors_clear (&f);
          return FALSE;
        }
      residual (be, n, k, r, E, f.lv, f.rv, D);
      f.err = lp_output_error (be, n, k, D, H);
      if (f.err < best->err)
        {
          factors_clear (best);
          *best = f;
        }
      else
        factors_clear (&f);
    }
  return TRUE;
}

/* The Q step: sweep callback state (one grid being filled). */
typedef struct {
  LpIntGrid *g;
  int maxq;
} Requant;

static gboolean
requant_column (gpointer user_data, int c, int r0, int r1, const float *W, int ldw, float *q, GError **error)
{
  Requant *rq = user_data;
  LpIntGrid *g = rq->g;
  for (int r = r0; r < r1; r++)
    {
      gsize j = (gsize) r * g->n_groups + g->g_idx[c];
      q[r - r0] = lp_int_quantize (lp_f16_to_f32 (g->scales[j]), g->zeros[j], rq->maxq, W[(gsize) r * ldw + c],
                                   &g->codes[(gsize) r * g->cols + c]);
    }
  return TRUE;
}

/* T [N, K] (W - L R, destroyed) re-quantized onto old's grid parameters by
 * the GPTQ sweep with U (lp_obs_prepare's factor; dead[] its dead inputs),
 * every group fitted from T first (imp: diag H). */
static LpTensor *
requantize (LpBackend *be, const LpTensor *q, const LpIntGrid *old, float *T, const float *U, const gboolean *dead,
            const float *imp, GError **error)
{
  const int n = (int) old->rows, k = (int) old->cols;
  g_autoptr (LpIntGrid) g = lp_int_grid_new (n, k, old->bits, old->group_size, old->symmetric, error);
  if (g == NULL)
    return NULL;
  memcpy (g->g_idx, old->g_idx, sizeof (gint32) * k);
  for (int c = 0; c < k; c++)
    if (dead[c])
      for (int r = 0; r < n; r++)
        T[(gsize) r * k + c] = 0.f;
  /* Static groups: each group's columns (any g_idx) gathered, then fitted. */
  g_autofree float *x = g_new (float, k);
  g_autofree float *w = g_new (float, k);
  for (int gi = 0; gi < g->n_groups; gi++)
    {
      g_autofree int *cols = g_new (int, k);
      int m = 0;
      for (int c = 0; c < k; c++)
        if (g->g_idx[c] == gi)
          cols[m++] = c, w[m - 1] = imp[c];
      for (int r = 0; r < n && m > 0; r++)
        {
          for (int j = 0; j < m; j++)
            x[j] = T[(gsize) r * k + cols[j]];
          gsize idx = (gsize) r * g->n_groups + gi;
          lp_int_fit (x, m, 1, m, w, g->bits, g->symmetric, TRUE, &g->scales[idx], &g->zeros[idx]);
        }
    }
  Requant rq = { g, (1 << g->bits) - 1 };
  LpObsSweep sweep = { NULL, requant_column, &rq };
  if (!lp_obs_sweep (be, n, k, T, k, U, 128, &sweep, NULL, error))
    return NULL;
  return lp_tensor_new_int_grid (q->name, 2, q->shape, g, NULL, error);
}

LpTensor *
lp_compensate_layer (LpBackend *be, const LpTensor *q_in, const float *W, const float *H,
                     const LpCompensateOptions *o, double *errors, GError **error)
{
  if (q_in->n_dims != 2)
    {
      lp_set_error (error, LP_ERROR_INVALID, "tensor %s: compensation: expected a 2-D weight, found %d dimensions",
                    q_in->name, q_in->n_dims);
      return NULL;
    }
  const int n = (int) q_in->shape[0], k = (int) q_in->shape[1], r = o->rank;
  if (r < 1 || r > MIN (n, k))
    {
      lp_set_error (error, LP_ERROR_INVALID, "tensor %s: rank=%d: expected 1..%d (min of its %dx%d shape)", q_in->name,
                    r, MIN (n, k), n, k);
      return NULL;
    }
  if (o->iterations < 1)
    {
      lp_set_error (error, LP_ERROR_INVALID, "iterations=%d: expected at least 1", o->iterations);
      return NULL;
    }
  g_autofree float *C = lp_whitening_new (be, k, H, o->damp, error);
  if (C == NULL)
    {
      lp_error_prefix (error, q_in->name);
      return NULL;
    }
  g_autoptr (LpTensor) q = lp_tensor_ref ((LpTensor *) q_in);
  g_autofree float *Qv = lp_tensor_dup_f32 (q, error);
  if (Qv == NULL)
    return NULL;
  const gsize nk = (gsize) n * k;
  g_autofree float *E = g_new (float, nk);
  g_autofree float *imp = g_new (float, k);
  for (int c = 0; c < k; c++)
    imp[c] = MAX (H[(gsize) c * k + c], 0.f);
  for (gsize i = 0; i < nk; i++)
    E[i] = W[i] - Qv[i];
  if (errors)
    errors[0] = lp_output_error (be, n, k, E, H);

  /* The Q step needs a plain integer grid (a mask or a block type stays). */
  const LpIntGrid *grid = lp_tensor_int_grid (q);
  gboolean requant = o->requantize && o->iterations > 1 && grid != NULL && lp_tensor_mask (q) == NULL;
  g_autofree float *U = requant ? g_memdup2 (H, sizeof (float) * k * k) : NULL;
  g_autofree gboolean *dead = requant ? g_new0 (gboolean, k) : NULL;
  if (requant && !lp_obs_prepare (be, k, U, o->damp, dead, NULL, error))
    {
      lp_error_prefix (error, q_in->name);
      return NULL;
    }

  Factors best = { NULL, NULL, NULL, NULL, INFINITY };
  g_autoptr (LpTensor) best_q = NULL;
  g_autofree float *T = g_new (float, nk);
  for (int it = 1; it <= o->iterations; it++)
    {
      if (it > 1 && requant)
        {
          /* Q = quant (W - L R) with the factors of the last step. */
          memcpy (T, W, sizeof (float) * nk);
          lp_gemm (be, FALSE, n, k, r, -1.0f, best.lv, r, best.rv, k, 1.0f, T, k);
          g_autoptr (LpTensor) nq = requantize (be, q, grid, T, U, dead, imp, error);
          if (nq == NULL)
            {
              factors_clear (&best);
              return NULL;
            }
          g_clear_pointer (&q, lp_tensor_unref);
          q = g_steal_pointer (&nq);
          memcpy (Qv, lp_tensor_data (q), sizeof (float) * nk);
          for (gsize i = 0; i < nk; i++)
            E[i] = W[i] - Qv[i];
        }
      Factors f = { NULL, NULL, NULL, NULL, INFINITY };
      if (!fit_factors (be, n, k, E, H, C, imp, q->name, o, &f, error))
        {
          factors_clear (&best);
          return NULL;
        }
      if (errors)
        errors[it] = f.err;
      if (f.err < best.err)
        {
          factors_clear (&best);
          best = f;
          g_clear_pointer (&best_q, lp_tensor_unref);
          best_q = lp_tensor_ref (q);
        }
      else
        {
          /* No better: the next Q step would start from the same factors
           * and find the same Q again. */
          factors_clear (&f);
          for (int j = it + 1; errors && j <= o->iterations; j++)
            errors[j] = errors[it];
          break;
        }
    }
  LpTensor *out = lp_tensor_new_adapter (best_q, best.r, best.l, 1.0, error);
  factors_clear (&best);
  return out;
}
