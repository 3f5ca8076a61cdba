/* Tests of the OBS column sweep shared by SparseGPT and GPTQ (obs.h) and of
 * the triangular inverse it relies on. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "testutil.h"

/* H[n,n] = X^T X for X[T,n] filled from a seed, neighbouring columns
 * correlated as real activations are (an isotropic H leaves OBS little to
 * gain); column `dead` (if >= 0) of X is 0. */
static float *
make_hessian (int T, int n, guint32 seed, int dead, float **X_out)
{
  float *X = g_new (float, (gsize) T * n);
  lp_test_fill (X, (gsize) T * n, seed, 1.0);
  for (int t = 0; t < T; t++)
    for (int k = 1; k < n; k++)
      X[(gsize) t * n + k] += 0.9f * X[(gsize) t * n + k - 1];
  if (dead >= 0)
    for (int t = 0; t < T; t++)
      X[(gsize) t * n + dead] = 0.0f;
  float *H = g_new0 (float, (gsize) n * n);
  lp_ref_syrk (T, n, X, n, H);
  if (X_out)
    *X_out = X;
  else
    g_free (X);
  return H;
}

static void
test_tri_inverse (void)
{
  int n = 37;
  g_autofree float *L = g_new0 (float, n * n);
  lp_test_fill (L, n * n, 3, 0.3);
  for (int i = 0; i < n; i++)
    {
      L[i * n + i] = 1.0f + fabsf (L[i * n + i]);
      for (int j = i + 1; j < n; j++)
        L[i * n + j] = 0.0f;
    }
  g_autofree float *a = g_memdup2 (L, n * n * sizeof (float));
  g_autofree float *b = g_memdup2 (L, n * n * sizeof (float));
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_assert_true (lp_tri_inverse (be, n, a, n));
  g_assert_true (lp_ref_tri_inverse (n, b, n));
  lp_test_assert_close (a, b, n * n, 1e-5);
  /* L * L^-1 = I, and the inverse is lower triangular. */
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        double s = 0;
        for (int k = 0; k < n; k++)
          s += (double) L[i * n + k] * a[k * n + j];
        g_assert_cmpfloat (fabs (s - (i == j)), <, 1e-5);
        if (j > i)
          g_assert_cmpfloat (a[i * n + j], ==, 0.0f);
      }
  L[5 * n + 5] = 0.0f;
  g_assert_false (lp_ref_tri_inverse (n, L, n));
}

static void
test_prepare (void)
{
  int T = 300, n = 40, dead_col = 7;
  g_autofree float *H = make_hessian (T, n, 11, dead_col, NULL);
  g_autofree float *Hd = g_memdup2 (H, n * n * sizeof (float));
  g_autofree gboolean *dead = g_new0 (gboolean, n);
  double used = -1;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_assert_true (lp_obs_prepare (be, n, H, 0.01, dead, &used, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (used, ==, 0.01);
  for (int j = 0; j < n; j++)
    g_assert_cmpint (dead[j], ==, j == dead_col);
  /* The damped Hessian as prepare saw it. */
  double mean = 0;
  Hd[dead_col * n + dead_col] = 1.0f;
  for (int j = 0; j < n; j++)
    mean += Hd[j * n + j];
  mean /= n;
  for (int j = 0; j < n; j++)
    Hd[j * n + j] += (float) (0.01 * mean);
  /* U upper triangular with U^T U Hd = I. */
  for (int i = 0; i < n; i++)
    {
      g_assert_cmpfloat (H[i * n + i], >, 0.0f);
      for (int j = 0; j < i; j++)
        g_assert_cmpfloat (H[i * n + j], ==, 0.0f);
    }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        double s = 0;
        for (int k = 0; k < n; k++)
          {
            double utu = 0;
            for (int m = 0; m <= MIN (i, k); m++)
              utu += (double) H[m * n + i] * H[m * n + k];
            s += utu * Hd[k * n + j];
          }
        g_assert_cmpfloat (fabs (s - (i == j)), <, 1e-3);
      }
}

static void
test_prepare_bad (void)
{
  int n = 4;
  float H[16] = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  H[5] = NAN;
  g_assert_false (lp_obs_prepare (be, n, H, 0.01, NULL, NULL, &error));
  lp_test_assert_error_contains (error, "Hessian", "finite", "row 1, column 1", NULL);
  g_clear_error (&error);
  /* Indefinite: no damping up to 10 times the mean diagonal rescues it. */
  float I[16] = { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, -100, 0, 0, 0, 0, 1 };
  g_assert_false (lp_obs_prepare (be, n, I, 0.01, NULL, NULL, &error));
  lp_test_assert_error_contains (error, "positive definite", "damping", NULL);
}

/* A test sweep: round to a grid of `step`, and in each block prune the
 * entries of a row whose w^2 / U_cc^2 is below the block's median of that row
 * (SparseGPT's lazy mask selection, to exercise block_begin). */
typedef struct {
  float step;
  gboolean prune;
  int rows, n;
  guint8 *pruned; /* [rows, n] */
} GridSweep;

static int
cmp_float (gconstpointer a, gconstpointer b)
{
  float x = *(const float *) a, y = *(const float *) b;
  return (x > y) - (x < y);
}

static gboolean
grid_block_begin (gpointer ud, int c0, int c1, const float *W, int ldw, int rows, const float *U, int n,
                  GError **error)
{
  GridSweep *g = ud;
  if (!g->prune)
    return TRUE;
  int nb = c1 - c0;
  g_autofree float *score = g_new (float, nb);
  g_autofree float *sorted = g_new (float, nb);
  for (int r = 0; r < rows; r++)
    {
      for (int c = c0; c < c1; c++)
        {
          float d = U[(gsize) c * n + c], w = W[(gsize) r * ldw + c];
          score[c - c0] = w * w / (d * d);
        }
      memcpy (sorted, score, nb * sizeof (float));
      qsort (sorted, nb, sizeof (float), cmp_float);
      float median = sorted[nb / 2];
      for (int c = c0; c < c1; c++)
        g->pruned[(gsize) r * g->n + c] = score[c - c0] < median;
    }
  return TRUE;
}

static gboolean
grid_column (gpointer ud, int c, int r0, int r1, const float *W, int ldw, float *q, GError **error)
{
  GridSweep *g = ud;
  for (int r = r0; r < r1; r++)
    {
      float w = W[(gsize) r * ldw + c];
      q[r - r0] = g->prune && g->pruned[(gsize) r * g->n + c] ? 0.0f : g->step * roundf (w / g->step);
    }
  return TRUE;
}

/* ||(A - B) X^T||^2 over rows of A, B [rows, n] and X [T, n]. */
static double
output_error (const float *A, const float *B, const float *X, int rows, int n, int T)
{
  double total = 0;
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < T; t++)
      {
        double s = 0;
        for (int k = 0; k < n; k++)
          s += ((double) A[(gsize) r * n + k] - B[(gsize) r * n + k]) * X[(gsize) t * n + k];
        total += s * s;
      }
  return total;
}

static void
run_sweep_vs_reference (gboolean prune)
{
  int T = 400, n = 70, rows = 40, B = 16; /* 70 = 4 blocks of 16 and one of 6 */
  g_autofree float *X = NULL;
  g_autofree float *U = make_hessian (T, n, 5, -1, &X);
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_obs_prepare (be, n, U, 0.0, NULL, NULL, &error));
  g_autofree float *W0 = g_new (float, rows * n);
  lp_test_fill (W0, rows * n, 9, 1.0);
  g_autofree float *Wl = g_memdup2 (W0, rows * n * sizeof (float));
  g_autofree float *Wr = g_memdup2 (W0, rows * n * sizeof (float));
  g_autofree guint8 *pl = g_new0 (guint8, rows * n), *pr = g_new0 (guint8, rows * n);
  GridSweep gl = { 0.25f, prune, rows, n, pl }, gr = { 0.25f, prune, rows, n, pr };
  LpObsSweep sl = { grid_block_begin, grid_column, &gl }, sr = { grid_block_begin, grid_column, &gr };
  double loss_l = 0, loss_r = 0;
  g_assert_true (lp_obs_sweep (be, rows, n, Wl, n, U, B, &sl, &loss_l, &error));
  g_assert_true (lp_ref_obs_sweep (rows, n, Wr, n, U, B, &sr, &loss_r, &error));
  g_assert_no_error (error);
  lp_test_assert_close (Wl, Wr, rows * n, 1e-5);
  g_assert_cmpfloat (fabs (loss_l - loss_r), <=, 1e-4 * loss_r);
  if (prune)
    g_assert_cmpmem (pl, rows * n, pr, rows * n);

  /* Without damping the OBS loss is the exact added output error
   * ||(W0 - Q) X^T||^2, and it beats plain rounding / pruning in place. */
  double err = output_error (W0, Wl, X, rows, n, T);
  g_assert_cmpfloat (fabs (loss_l - err), <=, 1e-3 * err);
  g_autofree float *Wp = g_memdup2 (W0, rows * n * sizeof (float));
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < n; c++)
      {
        float *w = &Wp[r * n + c];
        *w = prune && pl[r * n + c] ? 0.0f : 0.25f * roundf (*w / 0.25f);
      }
  double plain = output_error (W0, Wp, X, rows, n, T);
  g_test_message ("%s: OBS output error %.4g, in place %.4g", prune ? "prune+round" : "round", err, plain);
  g_assert_cmpfloat (err, <, 0.8 * plain);
  /* Every chosen value is on the grid (or pruned). */
  for (int i = 0; i < rows * n; i++)
    g_assert_cmpfloat (fabsf (Wl[i] / 0.25f - roundf (Wl[i] / 0.25f)), <, 1e-4);
}

static void
test_sweep_round (void)
{
  run_sweep_vs_reference (FALSE);
}

static void
test_sweep_prune (void)
{
  run_sweep_vs_reference (TRUE);
}

static gboolean
failing_column (gpointer ud, int c, int r0, int r1, const float *W, int ldw, float *q, GError **error)
{
  if (c == 3 && r0 > 0)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_INVALID, "column %d of rows %d.. refused", c, r0);
      return FALSE;
    }
  memset (q, 0, (r1 - r0) * sizeof (float));
  return TRUE;
}

static void
test_sweep_error (void)
{
  int n = 8, rows = 64; /* more rows than one worker takes: the error comes from another thread */
  g_autofree float *U = make_hessian (50, n, 1, -1, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_assert_true (lp_obs_prepare (be, n, U, 0.01, NULL, NULL, &error));
  g_autofree float *W = g_new0 (float, rows * n);
  LpObsSweep s = { NULL, failing_column, NULL };
  g_assert_false (lp_obs_sweep (be, rows, n, W, n, U, 4, &s, NULL, &error));
  lp_test_assert_error_contains (error, "column 3 of rows", "refused", NULL);
}

/* ---- OpenBLAS's count during calibration ---- */

typedef struct {
  int blas_threads; /* the count seen by the last block */
  GPtrArray *hessians; /* GBytes: the Hessians, block by block */
} BlasSeen;

static gboolean
see_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  BlasSeen *seen = user_data;
  seen->blas_threads = lp_cpu_blas_threads ();
  if (seen->hessians != NULL)
    for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
      g_ptr_array_add (seen->hessians, g_bytes_new (stats[w].hessian, (gsize) stats[w].n * stats[w].n * sizeof (float)));
  return TRUE;
}

/* The count seen by func of lp_calibration_run on `threads` threads; the
 * Hessians into `hessians` (may be NULL).  The count is back after. */
static int
calib_blas_threads (LpCalibration *cal, LpModel *m, int threads, GPtrArray *hessians)
{
  lp_threads_set (threads);
  int before = lp_cpu_blas_threads ();
  BlasSeen seen = { 0, hessians };
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_calibration_run (cal, m, m, NULL, LP_CALIB_HESSIAN, see_block, &seen, &error));
  g_assert_no_error (error);
  g_assert_cmpint (lp_cpu_blas_threads (), ==, before);
  lp_threads_set (0);
  return seen.blas_threads;
}

/* A narrow model's calibration (and the OBS work of its callback) runs
 * with OpenBLAS on one thread and its samples per core, as `llmpress run`
 * does by default: the Hessians are then the same bits on 2 and 3
 * threads.  The count stays as it is where the user chose it
 * (OPENBLAS_NUM_THREADS) or where other nodes may run BLAS at once (the
 * runner's parallel scheduler: lp_cpu_blas_threads_set_shared). */
static void
test_calibration_blas_switch (void)
{
  const char *vars[] = { "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS" };
  char *saved[G_N_ELEMENTS (vars)];
  for (guint i = 0; i < G_N_ELEMENTS (vars); i++)
    {
      saved[i] = g_strdup (g_getenv (vars[i]));
      g_unsetenv (vars[i]);
    }
  g_autoptr (LpModel) m = lp_test_tiny_model (5);
  g_assert_true (lp_model_config (m)->dim <= 1024);
  g_autoptr (GArray) toks = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (gint32 i = 0; i < 3000; i++)
    {
      gint32 v = (i * 17 + i / 7) % 64;
      g_array_append_val (toks, v);
    }
  LpCalibOptions o = { 9, 256, 3, LP_CALIB_SEQUENTIAL }; /* parts of 8 and 1 samples */
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCalibration) cal = lp_calibration_new ((gint32 *) toks->data, toks->len, 1, &o, &error);
  g_assert_no_error (error);

  g_autoptr (GPtrArray) two = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  g_autoptr (GPtrArray) three = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  g_assert_cmpint (calib_blas_threads (cal, m, 2, two), ==, 1);
  g_assert_cmpint (calib_blas_threads (cal, m, 3, three), ==, 1);
  g_assert_cmpuint (two->len, ==, three->len);
  for (guint h = 0; h < two->len; h++)
    g_assert_true (g_bytes_equal (two->pdata[h], three->pdata[h]));
  lp_cpu_blas_threads_set_shared (TRUE);
  g_assert_cmpint (calib_blas_threads (cal, m, 2, NULL), ==, 2);
  lp_cpu_blas_threads_set_shared (FALSE);
  g_setenv ("OPENBLAS_NUM_THREADS", "2", TRUE);
  g_assert_cmpint (calib_blas_threads (cal, m, 2, NULL), ==, 2);
  g_unsetenv ("OPENBLAS_NUM_THREADS");
  /* One thread in all: one sample at a time, nothing to switch. */
  g_assert_cmpint (calib_blas_threads (cal, m, 1, NULL), ==, 1);
  for (guint i = 0; i < G_N_ELEMENTS (vars); i++)
    {
      if (saved[i] != NULL)
        g_setenv (vars[i], saved[i], TRUE);
      g_free (saved[i]);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/backend/tri-inverse", test_tri_inverse);
  g_test_add_func ("/obs/prepare", test_prepare);
  g_test_add_func ("/obs/prepare-bad", test_prepare_bad);
  g_test_add_func ("/obs/sweep-round", test_sweep_round);
  g_test_add_func ("/obs/sweep-prune", test_sweep_prune);
  g_test_add_func ("/obs/sweep-error", test_sweep_error);
  g_test_add_func ("/calibration/blas-switch", test_calibration_blas_switch);
  return g_test_run ();
}
