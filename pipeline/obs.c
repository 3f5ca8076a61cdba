/* llmpress — Optimal Brain Surgeon column sweeps (see obs.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/obs.h>

/* A[i][j] = S[n-1-i][n-1-j]: the reversal J S J, from src into dst. */
static void
reverse_both (int n, const float *src, float *dst)
{
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      dst[(gsize) i * n + j] = src[(gsize) (n - 1 - i) * n + (n - 1 - j)];
}

/* U, the upper Cholesky factor of A^-1 (A^-1 = U^T U), into U.
 *
 * With J the reversal permutation and J A J = L L^T (lower Cholesky),
 * A^-1 = J L^-T L^-1 J = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper
 * triangular with a positive diagonal: it is U.  So one Cholesky and one
 * triangular inverse give U without forming A^-1 (GPTQ's reference code
 * takes three factorizations for the same). */
static gboolean
upper_factor_of_inverse (LpBackend *be, int n, const float *A, float *U, float *scratch)
{
  reverse_both (n, A, scratch);
  if (!lp_cholesky (be, n, scratch, n))
    return FALSE;
  if (!lp_tri_inverse (be, n, scratch, n))
    return FALSE;
  reverse_both (n, scratch, U);
  return TRUE;
}

gboolean
lp_obs_prepare (LpBackend *be, int n, float *H, double damp, gboolean *dead, double *damp_used, GError **error)
{
  g_return_val_if_fail (n > 0 && H != NULL && damp >= 0, FALSE);
  gsize nn = (gsize) n * n;
  for (gsize i = 0; i < nn; i++)
    if (!isfinite (H[i]))
      {
        lp_set_error (error, LP_ERROR_INVALID, "Hessian: expected finite values, found %g at row %" G_GSIZE_FORMAT
                      ", column %" G_GSIZE_FORMAT, H[i], i / n, i % n);
        return FALSE;
      }
  double mean_diag = 0;
  for (int j = 0; j < n; j++)
    {
      float *d = &H[(gsize) j * n + j];
      if (dead)
        dead[j] = *d == 0.0f;
      if (*d == 0.0f)
        *d = 1.0f; /* a channel that never fired: its weights are zeroed by the caller */
      mean_diag += *d;
    }
  mean_diag /= n;

  g_autofree float *A = g_new (float, nn);
  g_autofree float *scratch = g_new (float, nn);
  double lambda = damp;
  for (int attempt = 0; attempt < 4; attempt++, lambda = lambda > 0 ? lambda * 10 : 1e-6)
    {
      memcpy (A, H, nn * sizeof (float));
      for (int j = 0; j < n; j++)
        A[(gsize) j * n + j] += (float) (lambda * mean_diag);
      if (upper_factor_of_inverse (be, n, A, H, scratch))
        {
          if (damp_used)
            *damp_used = lambda;
          return TRUE;
        }
    }
  lp_set_error (error, LP_ERROR_INVALID,
                "Hessian [%d x %d]: expected positive definite after damping, found it is not even with damping %g of "
                "the mean diagonal",
                n, n, lambda / 10);
  return FALSE;
}

/* Column c of the sweep: ask for q, record the scaled errors, write q back
 * and return the loss contribution.  `err` gets (w - q) / U[c,c] per row. */
static gboolean
sweep_column (const LpObsSweep *sweep, int rows, int c, float *W, int ldw, const float *U, int n, float *q,
              float *err, int lde, double *loss, GError **error)
{
  if (!sweep->column (sweep->user_data, c, W, ldw, rows, q, error))
    return FALSE;
  float d = U[(gsize) c * n + c];
  double l = 0;
  for (int r = 0; r < rows; r++)
    {
      float *w = &W[(gsize) r * ldw + c];
      float e = (*w - q[r]) / d;
      l += (double) e * e;
      err[(gsize) r * lde] = e;
      *w = q[r];
    }
  *loss += l;
  return TRUE;
}

/* W[r, c+1 .. end) -= err_r * U[c, c+1 .. end): the OBS update of one row
 * span (rows independent, the innermost loop contiguous). */
static void
update_rows (int rows, int c, int end, float *W, int ldw, const float *U, int n, const float *err, int lde)
{
  const float *u = U + (gsize) c * n;
  for (int r = 0; r < rows; r++)
    {
      float e = err[(gsize) r * lde];
      if (e == 0.0f)
        continue;
      float *w = W + (gsize) r * ldw;
      for (int k = c + 1; k < end; k++)
        w[k] -= e * u[k];
    }
}

gboolean
lp_obs_sweep (LpBackend *be, int rows, int n, float *W, int ldw, const float *U, int block_size,
              const LpObsSweep *sweep, double *loss, GError **error)
{
  g_return_val_if_fail (rows > 0 && n > 0 && block_size > 0 && sweep && sweep->column, FALSE);
  g_autoptr (LpBackend) cpu = be ? NULL : lp_backend_cpu_new ();
  if (be == NULL)
    be = cpu;
  int B = MIN (block_size, n);
  g_autofree float *q = g_new (float, rows);
  g_autofree float *E = g_new (float, (gsize) rows * B); /* [rows, B] the block's scaled errors */
  double total = 0;
  for (int c0 = 0; c0 < n; c0 += B)
    {
      int c1 = MIN (c0 + B, n), nb = c1 - c0;
      if (sweep->block_begin && !sweep->block_begin (sweep->user_data, c0, c1, W, ldw, rows, U, n, error))
        return FALSE;
      for (int c = c0; c < c1; c++)
        {
          if (!sweep_column (sweep, rows, c, W, ldw, U, n, q, E + (c - c0), nb, &total, error))
            return FALSE;
          update_rows (rows, c, c1, W, ldw, U, n, E + (c - c0), nb);
        }
      /* The lazy part: every later column at once, W[:, c1:] -= E U[c0:c1, c1:]. */
      if (c1 < n)
        lp_gemm (be, FALSE, rows, n - c1, nb, -1.0f, E, nb, U + (gsize) c0 * n + c1, n, 1.0f, W + c1, ldw);
    }
  if (loss)
    *loss = total;
  return TRUE;
}

gboolean
lp_ref_obs_sweep (int rows, int n, float *W, int ldw, const float *U, int block_size, const LpObsSweep *sweep,
                  double *loss, GError **error)
{
  g_return_val_if_fail (rows > 0 && n > 0 && block_size > 0 && sweep && sweep->column, FALSE);
  g_autofree float *q = g_new (float, rows);
  g_autofree float *e = g_new (float, rows);
  double total = 0;
  for (int c = 0; c < n; c++)
    {
      if (c % block_size == 0 && sweep->block_begin
          && !sweep->block_begin (sweep->user_data, c, MIN (c + block_size, n), W, ldw, rows, U, n, error))
        return FALSE;
      if (!sweep_column (sweep, rows, c, W, ldw, U, n, q, e, 1, &total, error))
        return FALSE;
      update_rows (rows, c, n, W, ldw, U, n, e, 1);
    }
  if (loss)
    *loss = total;
  return TRUE;
}
