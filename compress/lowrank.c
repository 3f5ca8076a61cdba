/* llmpress — low-rank decompositions (see lowrank.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "lp-internal.h"
#include <llmpress/compute.h>
#include <llmpress/lowrank.h>

/* ---- LAPACK with explicit workspaces ---- */

/* LAPACK answers a workspace query in a float, which rounds large sizes
 * (down, in older versions): take the query rounded up with some room, and
 * never less than the documented minimum. */
static lapack_int
workspace_size (float query, gint64 minimum)
{
  gint64 q = (gint64) ceil ((double) query);
  q += q / 100000 + 64;
  return (lapack_int) MAX (q, minimum);
}

/* Thin SVD of the row-major M [n, k] (destroyed): u [n, m], s [m], vt [m, k]
 * with m = min(n, k).  Row-major M is column-major M^T [k, n], whose SVD
 * V Σ U^T hands back vt and u in row-major order directly. */
static gboolean
gesdd_thin (int n, int k, float *M, float *s, float *u, float *vt, GError **error)
{
  int m = MIN (n, k), mx = MAX (n, k);
  g_autofree lapack_int *iwork = g_new (lapack_int, 8 * (gsize) m);
  float query = 0.0f;
  lapack_int info = LAPACKE_sgesdd_work (LAPACK_COL_MAJOR, 'S', k, n, M, k, s, vt, k, u, m, &query, -1, iwork);
  if (info == 0)
    {
      lapack_int lwork = workspace_size (query, 4 * (gint64) m * m + 7 * (gint64) m + mx);
      g_autofree float *work = g_try_new (float, lwork);
      if (work == NULL)
        {
          lp_set_error (error, LP_ERROR_FAILED, "sgesdd %dx%d: cannot allocate its workspace of %d floats", n, k,
                        (int) lwork);
          return FALSE;
        }
      info = LAPACKE_sgesdd_work (LAPACK_COL_MAJOR, 'S', k, n, M, k, s, vt, k, u, m, work, lwork, iwork);
    }
  if (info != 0)
    {
      lp_set_error (error, LP_ERROR_FAILED, "sgesdd %dx%d: %s (info %d)", n, k,
                    info > 0 ? "did not converge" : "bad argument", (int) info);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_symmetric_eigen (int n, float *A, float *w, GError **error)
{
  /* The documented sizes for JOBZ = 'V' (ssyevd): 1 + 6n + 2n^2 and 3 + 5n. */
  gint64 lwork = 1 + 6 * (gint64) n + 2 * (gint64) n * n, liwork = 3 + 5 * (gint64) n;
  if (lwork > G_MAXINT32)
    {
      lp_set_error (error, LP_ERROR_INVALID, "ssyevd: n = %d needs a workspace past 2^31 floats", n);
      return FALSE;
    }
  g_autofree float *work = g_try_new (float, lwork);
  g_autofree lapack_int *iwork = g_new (lapack_int, liwork);
  if (work == NULL)
    {
      lp_set_error (error, LP_ERROR_FAILED, "ssyevd %d: cannot allocate its workspace of %" G_GINT64_FORMAT " floats", n,
                    lwork);
      return FALSE;
    }
  /* Symmetric: row-major A is column-major A; column-major eigenvectors
   * (one a column) are row-major rows. */
  lapack_int info = LAPACKE_ssyevd_work (LAPACK_COL_MAJOR, 'V', 'L', n, A, n, w, work, (lapack_int) lwork, iwork,
                                         (lapack_int) liwork);
  if (info != 0)
    {
      lp_set_error (error, LP_ERROR_FAILED, "ssyevd %d: %s (info %d)", n, info > 0 ? "did not converge" : "bad argument",
                    (int) info);
      return FALSE;
    }
  return TRUE;
}

/* Orthonormalise the rows of Yt [l, n] (l <= n) in place: Yt holds Q^T
 * after, Q [n, l] the Q of Y's QR (row-major Yt is column-major Y). */
static gboolean
orthonormalize_rows (int l, int n, float *Yt, GError **error)
{
  g_autofree float *tau = g_new (float, l);
  lapack_int info = LAPACKE_sgeqrf (LAPACK_COL_MAJOR, n, l, Yt, n, tau);
  if (info == 0)
    info = LAPACKE_sorgqr (LAPACK_COL_MAJOR, n, l, l, Yt, n, tau);
  if (info != 0)
    {
      lp_set_error (error, LP_ERROR_FAILED, "QR of a %dx%d sketch: LAPACK info %d", n, l, (int) info);
      return FALSE;
    }
  return TRUE;
}

static double
sum_sq (const float *x, gsize n)
{
  double t = 0.0;
  for (gsize i = 0; i < n; i++)
    t += (double) x[i] * x[i];
  return t;
}

static LpSvd *
svd_alloc (int n, int k, int m)
{
  LpSvd *svd = g_new0 (LpSvd, 1);
  svd->n = n;
  svd->k = k;
  svd->m = m;
  svd->u = g_new (float, (gsize) n * m);
  svd->s = g_new (float, m);
  svd->vt = g_new (float, (gsize) m * k);
  return svd;
}

void
lp_svd_free (LpSvd *svd)
{
  if (svd == NULL)
    return;
  g_free (svd->u);
  g_free (svd->s);
  g_free (svd->vt);
  g_free (svd);
}

static LpSvd *
svd_exact (int n, int k, const float *M, GError **error)
{
  LpSvd *svd = svd_alloc (n, k, MIN (n, k));
  g_autofree float *copy = g_memdup2 (M, (gsize) n * k * sizeof (float));
  svd->total_sq = sum_sq (M, (gsize) n * k);
  if (!gesdd_thin (n, k, copy, svd->s, svd->u, svd->vt, error))
    g_clear_pointer (&svd, lp_svd_free);
  return svd;
}

/* ---- randomized: the range finder on the backend ---- */

/* A device is one queue: randomized SVDs of concurrent layers take turns on it. */
static GMutex device_lock;

/* y = x W^T (LP_COP_MATMUL: x [rows, K] -> y [rows, N]) or x W
 * (LP_COP_MATMUL_BACK_X: x [rows, N] -> y [rows, K]), W on the backend. */
static gboolean
product (LpBackend *be, LpCOp op, LpCTensor *W, int rows, const float *x, float *y, GError **error)
{
  gboolean fwd = op == LP_COP_MATMUL;
  gint64 n = W->shape[0], k = W->shape[1];
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  gint64 shape[2] = { rows, fwd ? k : n };
  LpCTensor *xt = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, shape, "sketch", error);
  if (xt == NULL)
    return FALSE;
  lp_ctensor_write (xt, 0, x, (gsize) rows * shape[1] * sizeof (float));
  LpCTensor *src[2] = { xt, W };
  LpCNode *node = lp_cgraph_add (g, op, src, 2, NULL, 0, error);
  if (node == NULL || !lp_cgraph_compute (g, error))
    return FALSE;
  lp_ctensor_read (node->dst[0], 0, y, (gsize) rows * (fwd ? n : k) * sizeof (float));
  return TRUE;
}

/* Halko, Martinsson & Tropp (2011), algorithms 4.4 and 5.1: with l = R + p
 * sketch columns, Q = orth (W Ω), q times Q = orth (W orth (W^T Q)), then
 * the SVD of the small Q^T W = Ub Σ Vt and U = Q Ub.  Everything is held
 * transposed ([l, N] and [l, K] rows) so that each product is one node. */
static gboolean
range_finder (LpBackend *be, LpCTensor *W, int n, int k, int l, const LpLowRankOptions *o, LpSvd *svd,
              GError **error)
{
  g_autofree float *qt = g_new (float, (gsize) l * n);  /* Q^T [l, N] */
  g_autofree float *zt = g_new (float, (gsize) l * k);  /* [l, K] */
  guint64 state = o->seed ^ 0x5eed5eedull;
  for (gsize i = 0; i < (gsize) l * k; i++)
    zt[i] = (float) lp_random_normal (&state);          /* Ω^T */
  if (!product (be, LP_COP_MATMUL, W, l, zt, qt, error) || !orthonormalize_rows (l, n, qt, error))
    return FALSE;
  for (int it = 0; it < o->power_iters; it++)
    if (!product (be, LP_COP_MATMUL_BACK_X, W, l, qt, zt, error) || !orthonormalize_rows (l, k, zt, error)
        || !product (be, LP_COP_MATMUL, W, l, zt, qt, error) || !orthonormalize_rows (l, n, qt, error))
      return FALSE;
  /* B = Q^T W [l, K]; its SVD; U = Q Ub. */
  if (!product (be, LP_COP_MATMUL_BACK_X, W, l, qt, zt, error))
    return FALSE;
  g_autofree float *ub = g_new (float, (gsize) l * l);
  if (!gesdd_thin (l, k, zt, svd->s, ub, svd->vt, error))
    return FALSE;
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, n, l, l, 1.0f, qt, n, ub, l, 0.0f, svd->u, l);
  return TRUE;
}

static LpSvd *
svd_randomized (LpBackend *be, int n, int k, const float *M, int rank, const LpLowRankOptions *o, GError **error)
{
  int l = MIN (MAX (rank, 1) + MAX (o->oversample, 0), MIN (n, k));
  g_autoptr (LpSvd) svd = svd_alloc (n, k, l);
  svd->total_sq = sum_sq (M, (gsize) n * k);
  gboolean device = !lp_backend_is_cpu (be);
  if (device)
    g_mutex_lock (&device_lock);
  gint64 shape[2] = { n, k };
  LpCTensor *W = lp_ctensor_new (be, LP_DTYPE_F32, 2, shape, "W", error);
  gboolean ok = W != NULL;
  if (ok)
    {
      lp_ctensor_write (W, 0, M, (gsize) n * k * sizeof (float));
      ok = range_finder (be, W, n, k, l, o, svd, error);
      lp_ctensor_free (W);
    }
  if (device)
    g_mutex_unlock (&device_lock);
  return ok ? g_steal_pointer (&svd) : NULL;
}

LpSvd *
lp_svd_new (LpBackend *be, int n, int k, const float *M, int rank, const LpLowRankOptions *o, GError **error)
{
  g_return_val_if_fail (n > 0 && k > 0 && M != NULL, NULL);
  LpLowRankOptions def = LP_LOWRANK_OPTIONS_INIT;
  if (o == NULL)
    o = &def;
  if (o->method == LP_LOWRANK_RANDOMIZED)
    {
      g_autoptr (LpBackend) cpu = be ? NULL : lp_backend_cpu_new ();
      return svd_randomized (be ? be : cpu, n, k, M, rank, o, error);
    }
  return svd_exact (n, k, M, error);
}

double
lp_svd_tail (const LpSvd *svd, int r)
{
  double kept = 0.0;
  for (int i = 0; i < MIN (r, svd->m); i++)
    kept += (double) svd->s[i] * svd->s[i];
  return MAX (svd->total_sq - kept, 0.0);
}

double
lp_svd_factors (const LpSvd *svd, int r, float *a, float *b)
{
  g_return_val_if_fail (r >= 1 && r <= svd->m, -1.0);
  for (int j = 0; j < r; j++)
    {
      float h = sqrtf (svd->s[j]);
      for (int i = 0; i < svd->n; i++)
        a[(gsize) i * r + j] = svd->u[(gsize) i * svd->m + j] * h;
      for (int c = 0; c < svd->k; c++)
        b[(gsize) j * svd->k + c] = svd->vt[(gsize) j * svd->k + c] * h;
    }
  return lp_svd_tail (svd, r);
}

/* ---- choosing the rank ---- */

int
lp_lowrank_max_saving_rank (int n, int k)
{
  gint64 nk = (gint64) n * k;
  return (int) ((nk - 1) / (n + k));
}

static int
ratio_rank (double ratio, int n, int k)
{
  return (int) floor (ratio * (double) n * k / (double) (n + k) + 1e-9);
}

gboolean
lp_lowrank_check_choice (const LpRankChoice *c, int n, int k, const char *name, GError **error)
{
  if (c->rule == LP_RANK_FIXED && (c->rank < 1 || c->rank > MIN (n, k)))
    {
      lp_set_error (error, LP_ERROR_INVALID, "rank=%d: expected 1 <= rank <= %d, min(rows, cols) of %s [%d, %d]",
                    c->rank, MIN (n, k), name, n, k);
      return FALSE;
    }
  if (c->rule == LP_RANK_RATIO && ratio_rank (c->ratio, n, k) < 1)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "ratio=%g: the budget cannot be met: %s [%d, %d] holds %" G_GINT64_FORMAT " parameters and rank 1 "
                    "takes %d of them (ratio %.4g at least)", c->ratio, name, n, k, (gint64) n * k, n + k,
                    (double) (n + k) / ((double) n * k));
      return FALSE;
    }
  return TRUE;
}

int
lp_lowrank_choose_rank (const LpSvd *svd, const LpRankChoice *c)
{
  int r = 0;
  switch (c->rule)
    {
    case LP_RANK_FIXED:
      r = c->rank;
      break;
    case LP_RANK_RATIO:
      r = ratio_rank (c->ratio, svd->n, svd->k);
      break;
    case LP_RANK_ENERGY:
      {
        double kept = 0.0;
        while (r < svd->m && kept < c->energy * svd->total_sq)
          {
            kept += (double) svd->s[r] * svd->s[r];
            r++;
          }
        r = MAX (r, 1);
        break;
      }
    }
  r = MIN (r, svd->m);
  return r > lp_lowrank_max_saving_rank (svd->n, svd->k) ? 0 : r;
}

/* ---- activation-aware ---- */

float *
lp_whitening_new (LpBackend *be, int k, const float *H, double damp, GError **error)
{
  double mean = 0.0;
  for (int i = 0; i < k; i++)
    mean += H[(gsize) i * k + i];
  mean /= k;
  if (!isfinite (mean))
    {
      lp_set_error (error, LP_ERROR_INVALID, "Hessian [%d, %d]: expected finite values, found a non-finite diagonal", k, k);
      return NULL;
    }
  g_autofree float *L = g_memdup2 (H, (gsize) k * k * sizeof (float));
  for (int i = 0; i < k; i++)
    L[(gsize) i * k + i] += (float) (damp * mean);
  g_autoptr (LpBackend) cpu = be ? NULL : lp_backend_cpu_new ();
  if (!lp_cholesky (be ? be : cpu, k, L, k))
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "Hessian [%d, %d]: not positive definite after damping (damp=%g, %g added to its diagonal): "
                    "raise damp=", k, k, damp, damp * mean);
      return NULL;
    }
  for (int i = 0; i < k; i++)
    memset (L + (gsize) i * k + i + 1, 0, (gsize) (k - i - 1) * sizeof (float));
  return g_steal_pointer (&L);
}

LpSvd *
lp_asvd_new (LpBackend *be, int n, int k, const float *W, const float *L, int rank, const LpLowRankOptions *o,
             GError **error)
{
  g_autofree float *M = g_memdup2 (W, (gsize) n * k * sizeof (float));
  cblas_strmm (CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, n, k, 1.0f, L, k, M, k);
  return lp_svd_new (be, n, k, M, rank, o, error);
}

double
lp_asvd_factors (const LpSvd *svd, const float *L, int r, float *a, float *b)
{
  double err = lp_svd_factors (svd, r, a, b);
  /* B L = Σ^1/2 Vt: B = Σ^1/2 Vt L^-1. */
  cblas_strsm (CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, r, svd->k, 1.0f, L, svd->k, b,
               svd->k);
  return err;
}

gboolean
lp_lowrank_update_a (int n, int k, int r, const float *W, const float *H, const float *B, float *A, GError **error)
{
  g_autofree float *G = g_new (float, (gsize) r * k); /* B H [r, K] */
  g_autofree float *C = g_new (float, (gsize) r * r); /* B H B^T [r, r] */
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, r, k, k, 1.0f, B, k, H, k, 0.0f, G, k);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, r, r, k, 1.0f, G, k, B, k, 0.0f, C, r);
  /* A C = W G^T; C symmetric, so C A^T = G W^T: A^T is column-major A. */
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, r, k, 1.0f, W, k, G, k, 0.0f, A, r);
  lapack_int info = LAPACKE_spotrf (LAPACK_COL_MAJOR, 'L', r, C, r);
  if (info == 0)
    info = LAPACKE_spotrs (LAPACK_COL_MAJOR, 'L', r, n, C, r, A, r);
  if (info != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "update: B H B^T [%d, %d] is not positive definite (LAPACK info %d)", r, r,
                    (int) info);
      return FALSE;
    }
  return TRUE;
}

double
lp_lowrank_output_error (int n, int k, int r, const float *W, const float *A, const float *B, const float *H)
{
  g_autofree float *E = g_memdup2 (W, (gsize) n * k * sizeof (float));
  g_autofree float *F = g_new (float, (gsize) n * k);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, r, -1.0f, A, r, B, k, 1.0f, E, k);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, k, 1.0f, E, k, H, k, 0.0f, F, k);
  double t = 0.0;
  for (gsize i = 0; i < (gsize) n * k; i++)
    t += (double) E[i] * F[i];
  return t;
}

/* ---- a global budget ---- */

typedef struct {
  double priority; /* σ^2 gained per parameter */
  double cost, gain;
  int layer;
  gboolean dense;
} Step;

/* Steps are kept in a GSequence, best first: the higher priority, then
 * the lower layer (so the result depends on nothing but the input). */
static gint
step_compare (gconstpointer a, gconstpointer b, gpointer user_data)
{
  const Step *x = a, *y = b;
  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  return (x->layer > y->layer) - (x->layer < y->layer);
}

static void
queue_step (GSequence *q, Step s)
{
  g_sequence_insert_sorted (q, g_memdup2 (&s, sizeof s), step_compare, NULL);
}

/* Layer i's next step at rank r with `kept` of its σ^2 held. */
static Step
next_step (const LpRankLayer *ly, int i, int r, double kept)
{
  Step s = { 0 };
  s.layer = i;
  if (r + 1 <= lp_lowrank_max_saving_rank (ly->n, ly->k) && r < ly->m)
    {
      s.cost = ly->n + ly->k;
      s.gain = (double) ly->s[r] * ly->s[r];
    }
  else
    {
      s.dense = TRUE;
      s.cost = (double) ly->n * ly->k - (double) r * (ly->n + ly->k);
      s.gain = MAX (ly->total_sq - kept, 0.0);
    }
  s.priority = s.gain / MAX (s.cost, 1.0);
  return s;
}

gboolean
lp_lowrank_allocate (const LpRankLayer *layers, int n_layers, double budget, int *rank, double *used_out,
                     GError **error)
{
  double used = 0.0;
  g_autofree double *kept = g_new0 (double, n_layers);
  for (int i = 0; i < n_layers; i++)
    {
      const LpRankLayer *ly = &layers[i];
      gboolean saves = lp_lowrank_max_saving_rank (ly->n, ly->k) >= 1 && ly->m >= 1;
      rank[i] = saves ? 1 : 0;
      used += saves ? ly->n + ly->k : (double) ly->n * ly->k;
      kept[i] = saves ? (double) ly->s[0] * ly->s[0] : ly->total_sq;
    }
  if (used > budget)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "a budget of %.0f parameters cannot be met: rank 1 in each of the %d layers takes %.0f", budget,
                    n_layers, used);
      return FALSE;
    }
  g_autoptr (GSequence) queue = g_sequence_new (g_free);
  for (int i = 0; i < n_layers; i++)
    if (rank[i] > 0)
      queue_step (queue, next_step (&layers[i], i, rank[i], kept[i]));
  while (!g_sequence_is_empty (queue))
    {
      GSequenceIter *first = g_sequence_get_begin_iter (queue);
      Step s = *(Step *) g_sequence_get (first);
      g_sequence_remove (first);
      if (used + s.cost > budget)
        continue; /* this layer grows no further: its next steps cost at least as much */
      used += s.cost;
      kept[s.layer] += s.gain;
      if (s.dense)
        {
          rank[s.layer] = 0;
          continue;
        }
      rank[s.layer]++;
      queue_step (queue, next_step (&layers[s.layer], s.layer, rank[s.layer], kept[s.layer]));
    }
  if (used_out)
    *used_out = used;
  return TRUE;
}
