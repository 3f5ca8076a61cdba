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

/* Column c for rows [r0, r1): ask for q, write it back, and keep the scaled
 * errors (w - q) / U[c,c] in err[(r - r0) * lde] and their squares in
 * loss[r - r0]. */
static gboolean
sweep_column (const LpObsSweep *sweep, int r0, int r1, int c, float *W, int ldw, const float *U, int n, float *q,
              float *err, int lde, double *loss, GError **error)
{
  if (!sweep->column (sweep->user_data, c, r0, r1, W, ldw, q, error))
    return FALSE;
  float d = U[(gsize) c * n + c];
  for (int r = r0; r < r1; r++)
    {
      float *w = &W[(gsize) r * ldw + c];
      float e = (*w - q[r - r0]) / d;
      loss[r - r0] += (double) e * e;
      err[(gsize) (r - r0) * lde] = e;
      *w = q[r - r0];
    }
  return TRUE;
}

/* w[k] -= e * u[k] for k in [k0, end): one row's OBS update, plain C (the
 * reference: lp_ref_obs_sweep). */
static void
row_update_ref (float *w, const float *u, float e, int k0, int end)
{
  for (int k = k0; k < end; k++)
    w[k] -= e * u[k];
}

/* The same eight columns at a time (GCC vector extension: the same
 * element-wise multiply and subtract, so the same values; GCC vectorizes
 * no such loop at -O2).  tests/test-obs compares the two sweeps. */
typedef float ObsV8 __attribute__ ((vector_size (32)));

static void
row_update_v8 (float *w, const float *u, float e, int k0, int end)
{
  ObsV8 ev = { e, e, e, e, e, e, e, e };
  int k = k0;
  for (; k + 8 <= end; k += 8)
    {
      ObsV8 wv, uv;
      memcpy (&wv, w + k, sizeof wv);
      memcpy (&uv, u + k, sizeof uv);
      wv -= ev * uv;
      memcpy (w + k, &wv, sizeof wv);
    }
  row_update_ref (w, u, e, k, end);
}

typedef void (*RowUpdate) (float *w, const float *u, float e, int k0, int end);

/* W[r, c+1 .. end) -= err_r * U[c, c+1 .. end) for rows [r0, r1): the OBS
 * update (rows independent, the innermost loop contiguous). */
static void
update_rows (int r0, int r1, int c, int end, float *W, int ldw, const float *U, int n, const float *err, int lde,
             RowUpdate row_update)
{
  const float *u = U + (gsize) c * n;
  for (int r = r0; r < r1; r++)
    {
      float e = err[(gsize) (r - r0) * lde];
      if (e != 0.0f)
        row_update (W + (gsize) r * ldw, u, e, c + 1, end);
    }
}

/* Rows a worker sweeps through a block at a time: their share of the block
 * (ROW_TILE x block_size floats) stays in the first cache levels. */
#define ROW_TILE 16

typedef struct {
  const LpObsSweep *sweep;
  float *W;
  const float *U;
  float *E;        /* [rows, nb] the block's scaled errors */
  double *loss;    /* [rows] */
  int ldw, n, c0, c1, r0, r1;
  GError *error;
} BlockJob;

/* One worker: block [c0, c1) for its rows, a tile of rows at a time. */
static gpointer
sweep_block_rows (gpointer data)
{
  BlockJob *j = data;
  int nb = j->c1 - j->c0;
  float q[ROW_TILE];
  for (int t0 = j->r0; t0 < j->r1 && j->error == NULL; t0 += ROW_TILE)
    {
      int t1 = MIN (t0 + ROW_TILE, j->r1);
      float *E = j->E + (gsize) t0 * nb;
      for (int c = j->c0; c < j->c1; c++)
        {
          if (!sweep_column (j->sweep, t0, t1, c, j->W, j->ldw, j->U, j->n, q, E + (c - j->c0), nb, j->loss + t0,
                             &j->error))
            break;
          update_rows (t0, t1, c, j->c1, j->W, j->ldw, j->U, j->n, E + (c - j->c0), nb, row_update_v8);
        }
    }
  return NULL;
}

/* The block for every row, split over n_workers threads (this one included). */
static gboolean
sweep_block (BlockJob *proto, int rows, int n_workers, GError **error)
{
  BlockJob jobs[64];
  GThread *threads[64];
  n_workers = CLAMP (MIN (n_workers, rows / ROW_TILE), 1, 64);
  for (int t = 0; t < n_workers; t++)
    {
      jobs[t] = *proto;
      jobs[t].r0 = (int) ((gint64) rows * t / n_workers);
      jobs[t].r1 = (int) ((gint64) rows * (t + 1) / n_workers);
      threads[t] = t == 0 ? NULL : g_thread_new ("obs-sweep", sweep_block_rows, &jobs[t]);
    }
  sweep_block_rows (&jobs[0]);
  gboolean ok = TRUE;
  for (int t = 0; t < n_workers; t++)
    {
      if (threads[t])
        g_thread_join (threads[t]);
      if (jobs[t].error && ok)
        {
          g_propagate_error (error, jobs[t].error);
          ok = FALSE;
        }
      else
        g_clear_error (&jobs[t].error);
    }
  return ok;
}

/* The lazy part of a column block: every later column at once,
 * W[:, c1:] -= E U[c0:c1, c1:], W [rows, ldw], E [rows, nb]. */
typedef struct {
  LpBackend *be;
  float *W;
  const float *E, *U;
  int ldw, n, c0, c1;
} LazyJob;

static void
lazy_rows (gint64 r0, gint64 r1, gpointer data)
{
  const LazyJob *j = data;
  int nb = j->c1 - j->c0;
  lp_gemm (j->be, FALSE, (int) (r1 - r0), j->n - j->c1, nb, -1.0f, j->E + (gsize) r0 * nb, nb,
           j->U + (gsize) j->c0 * j->n + j->c1, j->n, 1.0f, j->W + (gsize) r0 * j->ldw + j->c1, j->ldw);
}

/* One product on BLAS's threads; or, where BLAS runs on one thread (chosen
 * so, or calibration of a narrow model switched it: calibration.c), row ranges of
 * it on every core: each row of the product is computed alone either way. */
static void
lazy_update (LazyJob *job, int rows)
{
  if (lp_backend_is_cpu (job->be) && lp_cpu_blas_threads () == 1)
    lp_parallel_for (rows, ROW_TILE * 4, lazy_rows, job);
  else
    lazy_rows (0, rows, job);
}

static double
sum_rows (const double *loss, int rows)
{
  double total = 0;
  for (int r = 0; r < rows; r++)
    total += loss[r];
  return total;
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
  int n_workers = lp_threads ();
  g_autofree float *E = g_new (float, (gsize) rows * B);
  g_autofree double *row_loss = g_new0 (double, rows);
  for (int c0 = 0; c0 < n; c0 += B)
    {
      int c1 = MIN (c0 + B, n);
      if (sweep->block_begin && !sweep->block_begin (sweep->user_data, c0, c1, W, ldw, rows, U, n, error))
        return FALSE;
      BlockJob job = { sweep, W, U, E, row_loss, ldw, n, c0, c1, 0, rows, NULL };
      if (!sweep_block (&job, rows, n_workers, error))
        return FALSE;
      LazyJob lazy = { be, W, E, U, ldw, n, c0, c1 };
      if (c1 < n)
        lazy_update (&lazy, rows);
    }
  if (loss)
    *loss = sum_rows (row_loss, rows);
  return TRUE;
}

gboolean
lp_ref_obs_sweep (int rows, int n, float *W, int ldw, const float *U, int block_size, const LpObsSweep *sweep,
                  double *loss, GError **error)
{
  g_return_val_if_fail (rows > 0 && n > 0 && block_size > 0 && sweep && sweep->column, FALSE);
  g_autofree float *q = g_new (float, rows);
  g_autofree float *e = g_new (float, rows);
  g_autofree double *row_loss = g_new0 (double, rows);
  for (int c = 0; c < n; c++)
    {
      if (c % block_size == 0 && sweep->block_begin
          && !sweep->block_begin (sweep->user_data, c, MIN (c + block_size, n), W, ldw, rows, U, n, error))
        return FALSE;
      if (!sweep_column (sweep, 0, rows, c, W, ldw, U, n, q, e, 1, row_loss, error))
        return FALSE;
      update_rows (0, rows, c, n, W, ldw, U, n, e, 1, row_update_ref);
    }
  if (loss)
    *loss = sum_rows (row_loss, rows);
  return TRUE;
}
