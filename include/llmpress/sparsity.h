/* llmpress — sparsity patterns and keep-masks, shared by the pruning passes
 * (magnitude, Wanda, SparseGPT) and their tests.
 *
 * A pattern is unstructured (any element may go) or N:M: in every group of M
 * consecutive elements of a row at most N are kept (the NVIDIA definition:
 * 2:4 keeps 2 of every 4, sparsity 1 - N/M).  A score says how much an
 * element matters (|W| for magnitude, |W| * ||X_j|| for Wanda, W^2 / [H^-1]^2
 * for SparseGPT): the lowest scores are pruned.  Ties go to the lower index,
 * so a selection is deterministic.
 *
 * Masks are LpTensor keep-masks (tensor.h): one bit per element, row-major,
 * 1 = kept.  Model metadata of a pruned model (written by the passes, kept by
 * every format that stores metadata):
 *   llmpress.sparsity.method         string  "magnitude", "wanda", "sparsegpt"
 *   llmpress.sparsity.pattern        string  "unstructured" or "N:M"
 *   llmpress.sparsity.fraction       f32     pruned fraction over the pruned tensors
 *   llmpress.sparsity.tensor.<name>  f32     pruned fraction of one tensor */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/meta.h>
#include <llmpress/model.h>
#include <llmpress/tensor.h>

G_BEGIN_DECLS

typedef struct {
  int n;  /* kept per group (0 with unstructured) */
  int m;  /* group length; 0 = unstructured */
} LpSparsityPattern;

/* Where an unstructured selection counts its quota. */
typedef enum {
  LP_MASK_PER_ROW,    /* round(s * cols) pruned in every row (Wanda's choice) */
  LP_MASK_PER_TENSOR, /* round(s * rows * cols) pruned over the whole tensor */
} LpMaskScope;

/* "unstructured" or "N:M" with 0 < N < M. */
gboolean lp_sparsity_pattern_parse (const char *text, LpSparsityPattern *out, GError **error);
/* "unstructured", "2:4"; g_free() it. */
char *lp_sparsity_pattern_name (const LpSparsityPattern *p);
/* The pruned fraction an N:M pattern implies (1 - N/M), or `sparsity`. */
double lp_sparsity_pattern_fraction (const LpSparsityPattern *p, double sparsity);
/* An N:M pattern needs M to divide the row length; `tensor` names it in the
 * message (NULL: the caller does). */
gboolean lp_sparsity_pattern_check (const LpSparsityPattern *p, const char *tensor, gint64 row_len,
                                    GError **error);
/* A sparsity in [0, 1); `what` names the parameter in the message. */
gboolean lp_sparsity_check (double sparsity, const char *what, GError **error);

/* How many of n elements a fraction prunes: round(s * n), ties to even never
 * matter because the count of a row or tensor is computed once. */
gint64 lp_sparsity_count (double sparsity, gint64 n);

/* Mark in pruned[i] (0/1, n entries, all written) the k lowest of
 * scores[n], ties to the lower index. */
void lp_select_lowest (const float *scores, gint64 n, gint64 k, guint8 *pruned);

/* pruned[rows, cols] (0/1) from scores[rows, cols]: the N:M pattern in every
 * group of every row, else the unstructured quota of `scope`. */
void lp_prune_select (const float *scores, gint64 rows, gint64 cols, double sparsity, LpMaskScope scope,
                      const LpSparsityPattern *p, guint8 *pruned);

/* The keep-mask of pruned[n] (0/1). */
GBytes *lp_mask_from_pruned (const guint8 *pruned, gint64 n);

/* A tensor like t (same name and shape, t's float type, else f32) holding
 * values[n] with every pruned element set to 0, carrying the keep-mask.
 * Kept elements keep their value, even when it is 0. */
LpTensor *lp_tensor_new_pruned (const LpTensor *t, const float *values, const guint8 *pruned,
                                GError **error);

/* Fail on a NaN or infinite value, naming the element and the tensor (unless
 * NULL). */
gboolean lp_values_check_finite (const char *tensor, const float *values, gint64 n, GError **error);

/* OWL's outlier-weighted layer sparsities (Yin et al. 2024): with ratio[l]
 * the fraction of layer l's scores above `m` times their mean, the keep
 * ratios are spread linearly over [-lambda, +lambda] by outlier ratio
 * (more outliers, more kept) and shifted so their mean is 1 - target.
 * out[l] = that layer's sparsity; fails when one leaves [0, 1). */
gboolean lp_sparsity_owl (const double *ratio, int n_layers, double target, double lambda, double *out,
                          GError **error);
/* Fraction of scores[n] greater than m * mean(scores): OWL's outlier ratio. */
double lp_sparsity_outlier_ratio (const float *scores, gint64 n, double m);

/* Record what a pass did in the model metadata (keys above). */
void lp_sparsity_record (LpMeta *meta, const char *method, const LpSparsityPattern *p, double fraction);
void lp_sparsity_record_tensor (LpMeta *meta, const LpTensor *t);
/* (Reading gives the keep-masks back: the masked form's restore, form.h,
 * run by lp_model_load, so a pruned model read from a file or the artifact
 * cache stays pruned through later passes.) */

/* Wanda's score (Sun et al. 2023): scores[r, j] = |W[r, j]| * ||X_j||_2 for
 * W[rows, cols], with sum_sq[j] the sum over calibration tokens of x_j^2. */
void lp_wanda_scores (const float *W, gint64 rows, gint64 cols, const double *sum_sq, float *scores);

/* SparseGPT (Frantar & Alistarh 2023) on one layer. */
typedef struct {
  double sparsity;           /* unstructured: pruned fraction of the tensor */
  LpSparsityPattern pattern; /* N:M: every group of M columns of a row */
  int block_size;            /* lazy-update block, 128 in the paper (rounded up to a multiple of M) */
  double damp;               /* fraction of mean(diag H) added to the diagonal, 0.01 in the paper */
} LpSparseGPTOptions;

#define LP_SPARSEGPT_OPTIONS_INIT { 0.5, { 0, 0 }, 128, 0.01 }

/* Prune W[rows, n] (row-major, changed in place) against its input Hessian
 * H[n, n] (destroyed: it ends as the factor U of lp_obs_prepare).  The mask
 * is chosen as the reference code does: unstructured, at the start of each
 * block of columns from W^2 / diag(U)^2 over the block (rows x block
 * columns), with the quota split so the whole tensor prunes exactly
 * round(sparsity * rows * n); N:M, for each group of M columns of each row as
 * the sweep reaches it.  The kept weights absorb the error (OBS updates).
 * pruned[rows * n] (0/1) gets the mask; loss (may be NULL) the OBS estimate
 * of lp_obs_sweep.  Dead input channels (H[j,j] = 0) have their weights
 * zeroed, as in the reference code. */
gboolean lp_sparsegpt_prune (LpBackend *be, int rows, int n, float *W, float *H, const LpSparseGPTOptions *options,
                             guint8 *pruned, double *loss, GError **error);
/* The same with U and dead[n] already made by lp_obs_prepare (options->damp)
 * from H and left unchanged: the weights of one input (q, k and v; gate and
 * up) share one factorization. */
gboolean lp_sparsegpt_prune_factored (LpBackend *be, int rows, int n, float *W, const float *U, const gboolean *dead,
                                      const LpSparseGPTOptions *options, guint8 *pruned, double *loss,
                                      GError **error);

G_END_DECLS
