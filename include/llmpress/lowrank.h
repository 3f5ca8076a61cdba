/* llmpress — low-rank decompositions of a linear weight W [N, K] (N outputs,
 * K inputs) into A [N, R] B [R, K], what the factorize passes are made of.
 *
 * Plain truncated SVD (Eckart–Young: the best rank-R approximation in the
 * Frobenius norm), computed exactly (LAPACK's divide and conquer, sgesdd) or
 * by the randomized range finder of Halko, Martinsson and Tropp (2011):
 * Y = W Ω for a Gaussian Ω [K, R + p], q power iterations Y = W (W^T Q),
 * each product re-orthonormalised by a QR, then the SVD of the small
 * Q^T W.  The products with W run as LP_COP_MATMUL / LP_COP_MATMUL_BACK_X
 * nodes of a compute graph on the given backend (W uploaded once, so on a
 * Vulkan device), the QRs and the small SVD on the CPU.
 *
 * Activation-aware (SVD-LLM, Wang et al. 2024): with H = X^T X [K, K] the
 * Hessian of the layer's input on calibration data (X [T, K]) and L its
 * lower Cholesky factor (H = L L^T, damped), the output error of any W' is
 *   ||X (W - W')^T||_F^2 = tr ((W - W') H (W - W')^T) = ||(W - W') L||_F^2,
 * so the SVD of the whitened W L = U Σ V^T truncated to R gives the W'
 * of least output error: W' = U_R Σ_R V_R^T L^-1, split as
 *   A = U_R Σ_R^1/2,  B = Σ_R^1/2 V_R^T L^-1,
 * and the error is exactly the tail Σ_{i >= R} σ_i^2 of the whitened
 * spectrum.  Plain SVD splits the same way (A = U_R Σ_R^1/2, B = Σ_R^1/2
 * V_R^T): both factors carry the same scale.
 *
 * The optional update refits A against the calibration data with B fixed,
 * A = argmin ||(W - A B) X^T|| = W H B^T (B H B^T)^-1: it recovers what the
 * damping of H or a randomized sketch cost.  (Refitting B with A fixed
 * cannot use the data: for any full-rank A the minimiser is A^+ W whatever
 * H is.) */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>

G_BEGIN_DECLS

typedef enum {
  LP_LOWRANK_EXACT,      /* sgesdd: every singular value */
  LP_LOWRANK_RANDOMIZED, /* range finder with power iterations: R + p of them */
} LpLowRankMethod;

typedef struct {
  LpLowRankMethod method;
  int oversample;   /* randomized: sketch columns beyond the rank (p; 10 in HMT) */
  int power_iters;  /* randomized: power iterations (q) */
  guint64 seed;     /* randomized: seeds the Gaussian test matrix */
} LpLowRankOptions;

#define LP_LOWRANK_OPTIONS_INIT { LP_LOWRANK_EXACT, 10, 2, 0 }

/* A (partial) singular value decomposition of M [N, K]: M ≈ U diag(s) Vt. */
typedef struct {
  int n, k;          /* M's shape */
  int m;             /* components held: min(N, K) exact, min(R + p, N, K) randomized */
  float *u;          /* [N, m] */
  float *s;          /* [m], descending */
  float *vt;         /* [m, K] */
  double total_sq;   /* ||M||_F^2 (the sum of every σ^2, also those not held) */
} LpSvd;

/* The SVD of M [N, K] (row-major) by o->method; `rank` is the rank wanted
 * (randomized sizes its sketch from it; exact ignores it).  FALSE-like NULL
 * with an error when LAPACK fails or the backend cannot run the products. */
LpSvd *lp_svd_new (LpBackend *be, int n, int k, const float *M, int rank, const LpLowRankOptions *o,
                   GError **error);
void lp_svd_free (LpSvd *svd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpSvd, lp_svd_free)
/* ||M - (rank-r truncation)||_F^2 = total_sq - sum_{i<r} s_i^2 (>= 0). */
double lp_svd_tail (const LpSvd *svd, int r);
/* The balanced split of the rank-r truncation: A [N, r] = U_r Σ_r^1/2,
 * B [r, K] = Σ_r^1/2 Vt_r.  Returns the squared error (lp_svd_tail). */
double lp_svd_factors (const LpSvd *svd, int r, float *a, float *b);

/* The eigendecomposition of a symmetric A [n, n] (row-major, both
 * triangles): w [n] ascending, A replaced by the eigenvectors, one a row
 * (A_in = A^T diag(w) A).  ssyevd with an explicitly sized workspace: its
 * workspace query answers in a float, which fails at large n. */
gboolean lp_symmetric_eigen (int n, float *A, float *w, GError **error);

/* ---- choosing the rank ---- */
typedef enum {
  LP_RANK_FIXED,   /* rank */
  LP_RANK_RATIO,   /* the factors hold at most ratio N K parameters */
  LP_RANK_ENERGY,  /* the least rank keeping this fraction of sum σ^2 */
} LpRankRule;

typedef struct {
  LpRankRule rule;
  int rank;
  double ratio;
  double energy;
} LpRankChoice;

/* The largest R with R (N + K) < N K: above it the factors save nothing. */
int lp_lowrank_max_saving_rank (int n, int k);
/* Whether rank c->rank fits an N x K matrix (FIXED) or c->ratio leaves
 * rank 1 at least (RATIO): the error names `name` and the limit. */
gboolean lp_lowrank_check_choice (const LpRankChoice *c, int n, int k, const char *name, GError **error);
/* The rank c gives for svd's matrix (the spectrum decides for ENERGY);
 * 0 when it would save no parameters (the layer stays dense). */
int lp_lowrank_choose_rank (const LpSvd *svd, const LpRankChoice *c);

/* ---- activation-aware (SVD-LLM) ---- */
/* L [K, K], lower, the Cholesky factor of H + damp * mean(diag H) * I
 * (H [K, K] = X^T X, symmetric).  NULL with an error naming the damping
 * when it is not positive definite (or H not finite). */
float *lp_whitening_new (LpBackend *be, int k, const float *H, double damp, GError **error);
/* The SVD of the whitened W L (W [N, K], L from lp_whitening_new). */
LpSvd *lp_asvd_new (LpBackend *be, int n, int k, const float *W, const float *L, int rank,
                    const LpLowRankOptions *o, GError **error);
/* A [N, r] = U_r Σ_r^1/2, B [r, K] = Σ_r^1/2 Vt_r L^-1.  Returns the
 * squared output error under the damped Hessian, ||(W - A B) L||_F^2. */
double lp_asvd_factors (const LpSvd *svd, const float *L, int r, float *a, float *b);
/* The update: A [N, r] = W H B^T (B H B^T)^-1 with W [N, K], H [K, K],
 * B [r, K]; FALSE when B H B^T is not positive definite. */
gboolean lp_lowrank_update_a (int n, int k, int r, const float *W, const float *H, const float *B, float *A,
                              GError **error);
/* tr ((W - A B) H (W - A B)^T): the squared output error on the data H
 * summarises (in double). */
double lp_lowrank_output_error (int n, int k, int r, const float *W, const float *A, const float *B, const float *H);

/* ---- a global parameter budget ---- */
/* One layer's spectrum for lp_lowrank_allocate. */
typedef struct {
  int n, k;           /* the weight's shape */
  int m;              /* singular values known */
  const float *s;     /* [m], descending (whitened for activation-aware) */
  double total_sq;    /* sum of every σ^2 */
} LpRankLayer;

/* Ranks for every layer within `budget` parameters in all, greedily: each
 * layer starts at rank 1; then the step of largest σ^2 gained per
 * parameter spent is taken while it fits, a step being the layer's next
 * component (N + K parameters, σ^2 gained) or, where the next component
 * would reach the dense size, the whole rest of the layer kept dense (N K
 * less what it holds, its remaining σ^2 gained).  rank[i] = 0 means dense.
 * FALSE when rank 1 everywhere already exceeds the budget.  *used gets the
 * parameters allocated (may be NULL). */
gboolean lp_lowrank_allocate (const LpRankLayer *layers, int n_layers, double budget, int *rank, double *used,
                              GError **error);

G_END_DECLS
