/* Low-rank decompositions (compress/lowrank.c) and the factorize passes. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "testutil.h"

/* Q [n, m] with orthonormal columns (m <= n), from a random matrix's QR. */
static float *
random_orthonormal (int n, int m, guint32 seed)
{
  float *q = g_new (float, (gsize) n * m);
  lp_test_fill (q, (gsize) n * m, seed, 1.0);
  g_autofree float *tau = g_new (float, m);
  g_assert_cmpint (LAPACKE_sgeqrf (LAPACK_ROW_MAJOR, n, m, q, m, tau), ==, 0);
  g_assert_cmpint (LAPACKE_sorgqr (LAPACK_ROW_MAJOR, n, m, m, q, m, tau), ==, 0);
  return q;
}

/* M [n, k] = U diag(s) V^T with the given singular values (descending). */
static float *
matrix_with_spectrum (int n, int k, const float *s, guint32 seed)
{
  int m = MIN (n, k);
  g_autofree float *u = random_orthonormal (n, m, seed);
  g_autofree float *v = random_orthonormal (k, m, seed + 1);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++)
      u[(gsize) i * m + j] *= s[j];
  float *M = g_new (float, (gsize) n * k);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, k, m, 1.0f, u, m, v, m, 0.0f, M, k);
  return M;
}

/* ||M - A B||_F^2 in double. */
static double
recon_error (int n, int k, int r, const float *M, const float *A, const float *B)
{
  double t = 0.0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < k; j++)
      {
        double v = M[(gsize) i * k + j];
        for (int c = 0; c < r; c++)
          v -= (double) A[(gsize) i * r + c] * B[(gsize) c * k + j];
        t += v * v;
      }
  return t;
}

/* Exact: the singular values LAPACK's sgesvd gives, and at every rank the
 * error of A B is the tail of the spectrum (Eckart–Young). */
static void
test_exact (void)
{
  const int n = 40, k = 30;
  g_autofree float *M = g_new (float, n * k);
  lp_test_fill (M, (gsize) n * k, 7, 1.0);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSvd) svd = lp_svd_new (NULL, n, k, M, 5, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (svd->m, ==, 30);
  /* The reference: sgesvd (a different LAPACK algorithm) on a copy. */
  g_autofree float *copy = g_memdup2 (M, sizeof (float) * n * k);
  g_autofree float *s_ref = g_new (float, k), *superb = g_new (float, k);
  g_assert_cmpint (LAPACKE_sgesvd (LAPACK_ROW_MAJOR, 'N', 'N', n, k, copy, k, s_ref, NULL, 1, NULL, 1, superb), ==, 0);
  for (int i = 0; i < k; i++)
    g_assert_cmpfloat (fabs (svd->s[i] - s_ref[i]), <, 1e-5 * s_ref[0]);
  for (int r = 1; r <= k; r += 7)
    {
      g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
      double tail = lp_svd_factors (svd, r, A, B);
      double expect = 0.0;
      for (int i = r; i < k; i++)
        expect += (double) s_ref[i] * s_ref[i];
      g_assert_cmpfloat (fabs (tail - expect), <, 1e-4 * svd->total_sq);
      g_assert_cmpfloat (fabs (recon_error (n, k, r, M, A, B) - expect), <, 1e-4 * svd->total_sq);
    }
}

/* A symmetric eigendecomposition rebuilds its matrix. */
static void
test_eigen (void)
{
  const int n = 33;
  g_autofree float *X = g_new (float, 50 * n), *H = g_new0 (float, n * n);
  lp_test_fill (X, 50 * n, 3, 1.0);
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, n, n, 50, 1.0f, X, n, X, n, 0.0f, H, n);
  g_autofree float *V = g_memdup2 (H, sizeof (float) * n * n), *w = g_new (float, n);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_symmetric_eigen (n, V, w, &error));
  g_assert_no_error (error);
  for (int i = 1; i < n; i++)
    g_assert_cmpfloat (w[i - 1], <=, w[i]);
  double err = 0.0, norm = 0.0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        double v = 0.0;
        for (int e = 0; e < n; e++)
          v += (double) V[e * n + i] * w[e] * V[e * n + j];
        err += (v - H[i * n + j]) * (v - H[i * n + j]);
        norm += (double) H[i * n + j] * H[i * n + j];
      }
  g_assert_cmpfloat (sqrt (err / norm), <, 1e-5);
}

static void
decaying (float *s, int m, double rate)
{
  for (int i = 0; i < m; i++)
    s[i] = (float) pow (rate, i);
}

/* Randomized on `be` against exact on a decaying spectrum: the top
 * singular values within 1e-3 relative, the truncation error within 1% of
 * the optimum (HMT's bound with q = 2 power iterations is far tighter). */
static void
check_randomized (LpBackend *be, float *s_out)
{
  const int n = 300, k = 200, r = 12;
  float s[200];
  decaying (s, 200, 0.85);
  g_autofree float *M = matrix_with_spectrum (n, k, s, 11);
  LpLowRankOptions o = { LP_LOWRANK_RANDOMIZED, 10, 2, 5 };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSvd) rnd = lp_svd_new (be, n, k, M, r, &o, &error);
  g_assert_no_error (error);
  g_autoptr (LpSvd) ex = lp_svd_new (NULL, n, k, M, r, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (rnd->m, ==, r + 10);
  for (int i = 0; i < r; i++)
    g_assert_cmpfloat (fabs (rnd->s[i] - ex->s[i]), <, 1e-3 * ex->s[i]);
  g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
  double tail = lp_svd_factors (rnd, r, A, B);
  double opt = lp_svd_tail (ex, r), got = recon_error (n, k, r, M, A, B);
  g_test_message ("randomized rank %d: error %.6g, exact %.6g", r, got, opt);
  g_assert_cmpfloat (got, <=, 1.01 * opt);
  g_assert_cmpfloat (fabs (tail - got), <, 1e-3 * rnd->total_sq);
  if (s_out)
    memcpy (s_out, rnd->s, sizeof (float) * r);
}

static void
test_randomized (void)
{
  check_randomized (NULL, NULL);
}

/* The same on the Vulkan device (lavapipe): its singular values equal the
 * CPU's within 1e-4 relative (the products sum in another order). */
static void
test_randomized_vulkan (void)
{
  if (!lp_test_have_vulkan ())
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) vk = lp_backend_new ("vulkan", &error);
  g_assert_no_error (error);
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  float s_vk[12], s_cpu[12];
  check_randomized (vk, s_vk);
  check_randomized (cpu, s_cpu);
  for (int i = 0; i < 12; i++)
    g_assert_cmpfloat (fabs (s_vk[i] - s_cpu[i]), <, 1e-4 * s_cpu[i]);
}

/* Synthetic calibration data with correlated inputs: X [T, K] = Z C, C
 * mixing the columns with decaying scales (some input directions carry far
 * more energy than others, as real activations do); H = X^T X. */
static float *
correlated_hessian (int T, int k, guint32 seed)
{
  g_autofree float *Z = g_new (float, (gsize) T * k), *C = g_new (float, (gsize) k * k);
  g_autofree float *X = g_new (float, (gsize) T * k);
  lp_test_fill (Z, (gsize) T * k, seed, 1.0);
  lp_test_fill (C, (gsize) k * k, seed + 1, 1.0);
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      C[i * k + j] *= (float) pow (0.8, i);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, k, k, 1.0f, Z, k, C, k, 0.0f, X, k);
  float *H = g_new (float, (gsize) k * k);
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, k, k, T, 1.0f, X, k, X, k, 0.0f, H, k);
  return H;
}

/* Activation-aware: its output error ||(W - A B) X^T||^2 is below plain
 * SVD's at every rank, and equals its whitened tail (no damping to speak of). */
static void
test_asvd (void)
{
  const int n = 32, k = 48, T = 400;
  g_autofree float *W = g_new (float, n * k);
  lp_test_fill (W, (gsize) n * k, 21, 1.0);
  g_autofree float *H = correlated_hessian (T, k, 22);
  g_autoptr (GError) error = NULL;
  g_autofree float *L = lp_whitening_new (NULL, k, H, 1e-6, &error);
  g_assert_no_error (error);
  g_autoptr (LpSvd) plain = lp_svd_new (NULL, n, k, W, 8, NULL, &error);
  g_autoptr (LpSvd) aware = lp_asvd_new (NULL, n, k, W, L, 8, NULL, &error);
  g_assert_no_error (error);
  for (int r = 2; r <= 26; r += 6)
    {
      g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
      lp_svd_factors (plain, r, A, B);
      double e_svd = lp_lowrank_output_error (n, k, r, W, A, B, H);
      double tail = lp_asvd_factors (aware, L, r, A, B);
      double e_asvd = lp_lowrank_output_error (n, k, r, W, A, B, H);
      g_test_message ("rank %d: output error svd %.6g, asvd %.6g (whitened tail %.6g)", r, e_svd, e_asvd, tail);
      g_assert_cmpfloat (e_asvd, <, e_svd);
      g_assert_cmpfloat (fabs (e_asvd - tail), <, 1e-3 * tail + 1e-6 * aware->total_sq);
    }
}

/* The update refits A against the data: it lowers the output error of a
 * heavily damped whitening and of a randomized sketch without power
 * iterations, and never raises it. */
static void
test_update (void)
{
  const int n = 32, k = 48, r = 10;
  g_autofree float *W = g_new (float, n * k);
  lp_test_fill (W, (gsize) n * k, 31, 1.0);
  g_autofree float *H = correlated_hessian (300, k, 32);
  g_autoptr (GError) error = NULL;
  LpLowRankOptions sketchy = { LP_LOWRANK_RANDOMIZED, 2, 0, 1 };
  struct {
    double damp;
    const LpLowRankOptions *o;
  } cases[] = { { 0.3, NULL }, { 1e-4, &sketchy } };
  for (guint c = 0; c < G_N_ELEMENTS (cases); c++)
    {
      g_autofree float *L = lp_whitening_new (NULL, k, H, cases[c].damp, &error);
      g_assert_no_error (error);
      g_autoptr (LpSvd) svd = lp_asvd_new (NULL, n, k, W, L, r, cases[c].o, &error);
      g_assert_no_error (error);
      g_autofree float *A = g_new (float, n * r), *B = g_new (float, r * k);
      lp_asvd_factors (svd, L, r, A, B);
      double before = lp_lowrank_output_error (n, k, r, W, A, B, H);
      g_assert_true (lp_lowrank_update_a (n, k, r, W, H, B, A, &error));
      g_assert_no_error (error);
      double after = lp_lowrank_output_error (n, k, r, W, A, B, H);
      g_test_message ("update (damp %g, %s): output error %.6g -> %.6g", cases[c].damp,
                      cases[c].o ? "randomized q=0" : "exact", before, after);
      g_assert_cmpfloat (after, <, 0.99 * before);
    }
}

/* A Hessian with a negative direction larger than the damping: refused,
 * naming the damping. */
static void
test_not_pd (void)
{
  const int k = 6;
  float H[36] = { 0 };
  for (int i = 0; i < k; i++)
    H[i * k + i] = 1.0f;
  H[2 * k + 2] = -3.0f;
  g_autoptr (GError) error = NULL;
  g_autofree float *L = lp_whitening_new (NULL, k, H, 0.01, &error);
  g_assert_null (L);
  lp_test_assert_error_contains (error, "not positive definite after damping", "damp=0.01", NULL);
}

/* Rank rules: the bounds, the ratio's rank, energy, and layers that would
 * save nothing. */
static void
test_choose_rank (void)
{
  g_autoptr (GError) error = NULL;
  LpRankChoice zero = { LP_RANK_FIXED, 0, 0, 0 }, big = { LP_RANK_FIXED, 33, 0, 0 }, tiny = { LP_RANK_RATIO, 0, 0.01, 0 };
  g_assert_false (lp_lowrank_check_choice (&zero, 32, 64, "w", &error));
  lp_test_assert_error_contains (error, "rank=0", "1 <= rank <= 32", "w [32, 64]", NULL);
  g_clear_error (&error);
  g_assert_false (lp_lowrank_check_choice (&big, 32, 64, "w", &error));
  lp_test_assert_error_contains (error, "rank=33", "min(rows, cols)", NULL);
  g_clear_error (&error);
  g_assert_false (lp_lowrank_check_choice (&tiny, 32, 64, "w", &error));
  lp_test_assert_error_contains (error, "ratio=0.01", "cannot be met", "rank 1", NULL);
  g_clear_error (&error);
  g_assert_cmpint (lp_lowrank_max_saving_rank (64, 64), ==, 31);
  g_assert_cmpint (lp_lowrank_max_saving_rank (1, 64), ==, 0);
  float s[20];
  decaying (s, 20, 0.5);
  g_autofree float *M = matrix_with_spectrum (20, 40, s, 3);
  g_autoptr (LpSvd) svd = lp_svd_new (NULL, 20, 40, M, 1, NULL, &error);
  g_assert_no_error (error);
  LpRankChoice ratio = { LP_RANK_RATIO, 0, 0.5, 0 }, energy = { LP_RANK_ENERGY, 0, 0, 0.99 };
  LpRankChoice all = { LP_RANK_FIXED, 20, 0, 0 };
  g_assert_cmpint (lp_lowrank_choose_rank (svd, &ratio), ==, 6); /* 0.5 * 800 / 60 */
  /* 1 - 0.25^r of the energy (near enough) at rank r: 0.99 needs 4. */
  g_assert_cmpint (lp_lowrank_choose_rank (svd, &energy), ==, 4);
  g_assert_cmpint (lp_lowrank_choose_rank (svd, &all), ==, 0); /* 20 * 60 > 800: dense */
}

/* The global allocation: within the budget, the layer of larger spectrum
 * (more output error per parameter) gets more rank, a budget below rank 1
 * everywhere is refused, and a generous one leaves layers dense. */
static void
test_allocate (void)
{
  float s1[32], s2[32];
  decaying (s1, 32, 0.9);
  decaying (s2, 32, 0.6);
  for (int i = 0; i < 32; i++)
    s1[i] *= 3.0f;
  LpRankLayer layers[2] = { { 32, 64, 32, s1, 0 }, { 32, 64, 32, s2, 0 } };
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < 32; i++)
      layers[l].total_sq += (double) layers[l].s[i] * layers[l].s[i];
  int rank[2];
  double used;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_lowrank_allocate (layers, 2, 0.5 * 2 * 2048, rank, &used, &error));
  g_assert_no_error (error);
  g_test_message ("allocated ranks %d, %d (%.0f of %d parameters)", rank[0], rank[1], used, 2048);
  g_assert_cmpfloat (used, <=, 2048);
  g_assert_cmpfloat (used, >, 2048 - 96);
  g_assert_cmpint (rank[0], >, rank[1]);
  g_assert_cmpint (rank[1], >=, 1);
  g_assert_false (lp_lowrank_allocate (layers, 2, 150, rank, NULL, &error));
  lp_test_assert_error_contains (error, "cannot be met", "192", NULL);
  g_clear_error (&error);
  g_assert_true (lp_lowrank_allocate (layers, 2, 2 * 2048, rank, &used, &error));
  g_assert_cmpint (rank[0], ==, 0);
  g_assert_cmpint (rank[1], ==, 0);
  g_assert_cmpfloat (used, ==, 2 * 2048);
}

/* --- the passes on stories260K, through the CLI ---------------------------- */

/* The TinyStories split of specs/README.md, fewer and shorter samples. */
#define CALIB_SETTINGS "calibration_samples=16\ncalibration_seq_len=256\ncalibration_range=300000:\n"

typedef LpTestStories Shared;
#define shared_get lp_test_stories_get
#define shared_clear lp_test_stories_clear

/* Run [load] of `model` (NULL: stories260K) then `nodes`, calibrated on the split. */
static char *
run_nodes (const Shared *sh, const char *name, const char *model, const char *nodes, int *status, char **err)
{
  return lp_test_run_nodes (sh->data, CALIB_SETTINGS, model ? model : sh->model, name, nodes, status, err);
}

static double
eval_ppl (const Shared *sh, LpModel *m)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) toks = lp_tokens_load (sh->data, m, &error);
  g_assert_no_error (error);
  LpEvalOptions eo = { .ctx = 512, .max_windows = 8 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, 300000, &eo, &r, &error));
  g_assert_no_error (error);
  return r.ppl;
}

/* Both passes save low-rank models (GGUF and safetensors) that load back
 * as low-rank tensors of the ranks chosen, with the same perplexity as the
 * pass's own eval; asvd with update=true too. */
static void
test_save_load (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  int st;
  g_autofree char *err = NULL;
  g_autofree char *nodes = g_strdup_printf ("[factorize.svd]\nrank=12\nignore=blk.4.*\n[save]\npath=svd.gguf\n"
                                            "[e-svd]\npass=eval\ninput=factorize.svd\ndata=%s\ndata_range=:300000\nctx=512\nmax_windows=8\n"
                                            "[factorize.asvd]\ninput=load\nratio=0.9\nupdate=true\n[st]\npass=save\npath=asvd.safetensors\n",
                                            sh.data);
  g_autofree char *dir = run_nodes (&sh, "saved", NULL, nodes, &st, &err);
  if (st != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (st, ==, 0);
  g_autofree char *svd_path = g_build_filename (dir, "svd.gguf", NULL);
  g_autofree char *asvd_path = g_build_filename (dir, "asvd.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) svd = lp_model_load (svd_path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) asvd = lp_model_load (asvd_path, NULL, &error);
  g_assert_no_error (error);
  guint low_rank = 0;
  for (guint i = 0; i < lp_model_n_tensors (svd); i++)
    {
      LpTensor *t = lp_model_tensor_at (svd, i), *a, *b;
      if (!lp_tensor_low_rank_factors (t, &a, &b))
        continue;
      g_assert_true (g_str_has_prefix (t->name, "blk.") && !g_str_has_prefix (t->name, "blk.4."));
      g_assert_cmpint (a->shape[1], ==, 12);
      g_assert_cmpint (b->shape[0], ==, 12);
      g_autofree char *key = g_strdup_printf ("llmpress.lowrank.rank.%s", t->name);
      const LpValue *v = lp_meta_get (lp_model_meta (svd), key);
      g_assert_nonnull (v);
      low_rank++;
    }
  /* q, o, gate, up, down of 4 blocks (k and v [32, 64] at rank 12 save too). */
  g_assert_cmpuint (low_rank, ==, 28);
  g_assert_nonnull (lp_meta_get_string (lp_model_meta (svd), "llmpress.lowrank.ranks"));
  double reported = lp_test_report_metric (dir, "e-svd", "perplexity");
  double loaded = eval_ppl (&sh, svd);
  g_test_message ("svd rank 12: perplexity %.4f in the run, %.4f loaded from GGUF", reported, loaded);
  g_assert_cmpfloat (fabs (reported - loaded), <, 1e-4 * reported);
  guint asvd_low_rank = 0;
  for (guint i = 0; i < lp_model_n_tensors (asvd); i++)
    {
      LpTensor *a, *b;
      asvd_low_rank += lp_tensor_low_rank_factors (lp_model_tensor_at (asvd, i), &a, &b);
    }
  g_assert_cmpuint (asvd_low_rank, >, 0);
  double p = eval_ppl (&sh, asvd);
  g_test_message ("asvd ratio 0.9 update=true, from safetensors: perplexity %.4f", p);
  g_assert_true (isfinite (p));
  shared_clear (&sh);
}

/* stories260K with input channel 5 of block 0's attention dead (its norm
 * weight 0): the q/k/v Hessian is singular without damping. */
static char *
dead_channel_model (const Shared *sh)
{
  char *path = g_build_filename (lp_test_tmpdir (), "dead.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (sh->model, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) d = lp_model_derive (m);
  LpTensor *t = lp_model_tensor (m, "blk.0.attn_norm.weight");
  g_autofree float *v = lp_tensor_dup_f32 (t, &error);
  v[5] = 0.0f;
  g_autoptr (LpTensor) dead = lp_tensor_new_f32 (t->name, t->n_dims, t->shape, v, &error);
  lp_model_set_tensor (d, dead);
  g_assert_true (lp_model_save (d, path, NULL, &error));
  return path;
}

/* Bad requests: a non-zero exit, one line naming the problem, no model. */
static void
test_bad_input (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autofree char *dead = dead_channel_model (&sh);
  struct {
    const char *nodes;
    gboolean dead;
    const char *fragments[4];
  } cases[] = {
    { "[factorize.svd]\nrank=0\n", FALSE, { "rank=0", "1 <= rank <= 64", "blk.0.attn_q.weight [64, 64]" } },
    { "[factorize.svd]\nrank=40\n", FALSE, { "rank=40", "1 <= rank <= 32", "min(rows, cols)", "blk.0.attn_k.weight" } },
    { "[factorize.asvd]\nrank=65\n", FALSE, { "rank=65", "1 <= rank <= 64" } },
    { "[factorize.svd]\nratio=0.02\n", FALSE, { "ratio=0.02", "cannot be met", "rank 1" } },
    { "[factorize.asvd]\nratio=0.02\n", FALSE, { "ratio=0.02", "cannot be met", "35 weights" } },
    { "[factorize.svd]\nrank=8\nratio=0.5\n", FALSE, { "one of them", "rank= and ratio=" } },
    { "[factorize.svd]\ntargets=output.weight\n", FALSE, { "targets=output.weight", "found none" } },
    { "[factorize.asvd]\ndamp=0\n", TRUE, { "blk.0.attn_q.weight", "not positive definite after damping", "damp=0" } },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      int st;
      g_autofree char *err = NULL;
      g_autofree char *nodes = g_strdup_printf ("%s[save]\npath=never.gguf\n", cases[i].nodes);
      g_autofree char *name = g_strdup_printf ("bad-%u", i);
      g_autofree char *out = run_nodes (&sh, name, cases[i].dead ? dead : NULL, nodes, &st, &err);
      g_test_message ("%s -> %s", cases[i].nodes, err);
      g_assert_cmpint (st, ==, 1);
      for (int f = 0; f < 4 && cases[i].fragments[f]; f++)
        g_assert_nonnull (strstr (err, cases[i].fragments[f]));
      g_autofree char *never = g_build_filename (out, "never.gguf", NULL);
      g_assert_false (g_file_test (never, G_FILE_TEST_EXISTS));
    }
  shared_clear (&sh);
}

/* specs/factorize.ini on stories260K: at the same budget (80% of the linear
 * weights' parameters) asvd's perplexity is below svd's, and each eval row
 * carries the ranks.  Fewer calibration samples and windows than the spec's
 * defaults keep it quick. */
static void
test_spec (void)
{
  Shared sh;
  if (!shared_get (&sh))
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "factorize.ini", NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "spec", NULL);
  g_autofree char *dm = g_strdup_printf ("model=%s", sh.model), *dd = g_strdup_printf ("data=%s", sh.data);
  g_autofree char *dc = g_strdup_printf ("calib=%s", sh.data);
  g_autofree char *o = NULL, *e = NULL;
  int st = lp_test_run_cli (&o, &e, "run", spec, "-D", dm, "-D", dd, "-D", dc, "-D", "calib_samples=16", "-D",
                            "windows=16", "-o", out, "--no-cache", "-q", NULL);
  if (st != 0)
    g_test_message ("%s", e);
  g_assert_cmpint (st, ==, 0);
  double dense = lp_test_report_metric (out, "dense", "perplexity");
  double svd = lp_test_report_metric (out, "eval-svd", "perplexity");
  double asvd = lp_test_report_metric (out, "eval-asvd", "perplexity");
  g_test_message ("stories260K, 16 windows of 512 from :300000, calibration 16 x 512 from 300000:, 80%% of the "
                  "parameters: dense %.4f, svd %.4f, asvd %.4f", dense, svd, asvd);
  g_assert_cmpfloat (dense, <, asvd);
  g_assert_cmpfloat (asvd, <, svd);
  /* The table shows the ranks: every layer of both. */
  g_assert_nonnull (strstr (o, "ranks=\"0:q25,k17,v17,o25,g37,u37,d37 1:"));
  g_autofree char *path = g_build_filename (out, "report.json", NULL);
  g_autofree char *report = lp_test_read_text (path);
  g_assert_nonnull (strstr (report, "\"ranks\""));
  shared_clear (&sh);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/factorize/svd/exact", test_exact);
  g_test_add_func ("/factorize/eigen", test_eigen);
  g_test_add_func ("/factorize/svd/randomized", test_randomized);
  g_test_add_func ("/factorize/svd/randomized-vulkan", test_randomized_vulkan);
  g_test_add_func ("/factorize/asvd/output-error", test_asvd);
  g_test_add_func ("/factorize/asvd/update", test_update);
  g_test_add_func ("/factorize/asvd/not-pd", test_not_pd);
  g_test_add_func ("/factorize/rank/choose", test_choose_rank);
  g_test_add_func ("/factorize/rank/allocate", test_allocate);
  g_test_add_func ("/factorize/save-load", test_save_load);
  g_test_add_func ("/factorize/bad-input", test_bad_input);
  g_test_add_func ("/factorize/spec", test_spec);
  return g_test_run ();
}
