/* llmpress — the calibration service: activations of a model on sample
 * text, streamed block by block, as data-aware passes (Wanda, SparseGPT,
 * GPTQ, AWQ, activation-aware SVD) need them.
 *
 * Samples: N windows of BOS + (L-1) tokens cut from the token stream at
 * seeded pseudo-random, non-overlapping offsets (the stream is cut into
 * n / (L-1) slots; N distinct slots are drawn by a Fisher-Yates shuffle with
 * a splitmix64 generator seeded by `seed`), so the same data and seed give
 * the same samples on every machine.
 *
 * Statistics per group of linear layers sharing an input (q/k/v; o; gate/up;
 * down), for one transformer block at a time:
 *   hessian  H = sum over tokens of x x^T      [n, n] (not normalised)
 *   sum_sq   sum over tokens of x_j^2          [n]   (llama.cpp's imatrix)
 *   sum_abs  sum over tokens of |x_j|          [n]
 *   inputs   the captured rows X               [n_tokens, n] (when asked)
 *
 * Modes: LP_CALIB_SEQUENTIAL feeds block i the outputs of blocks 0..i-1 as
 * compressed so far (GPTQ's true-sequential, at block granularity);
 * LP_CALIB_INDEPENDENT feeds every block the original model's activations. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/forward.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef enum {
  LP_CALIB_SEQUENTIAL,
  LP_CALIB_INDEPENDENT,
} LpCalibMode;

typedef enum {
  LP_CALIB_HESSIAN = 1 << 0,
  LP_CALIB_CHANNEL_STATS = 1 << 1,
  LP_CALIB_CAPTURE = 1 << 2,
} LpCalibWhat;

typedef struct {
  int n_samples;     /* N (default 128) */
  int seq_len;       /* L, including BOS (default 512) */
  guint64 seed;      /* default 0 */
  LpCalibMode mode;  /* default sequential */
} LpCalibOptions;

#define LP_CALIB_OPTIONS_INIT { 128, 512, 0, LP_CALIB_SEQUENTIAL }

typedef struct _LpCalibration LpCalibration;

/* Activation statistics of one linear input: the calibration service hands
 * one per linear-input group of a block to its callback, and LpStats keeps
 * one per weight (there layer/which/inputs are unused and the arrays hold
 * float-rounded values, as in its files).  n_tokens is a double because
 * llama.cpp's imatrix files carry mean (fractional) counts. */
typedef struct {
  int n;              /* input dimension */
  double n_tokens;    /* tokens accumulated */
  double *sum_sq;     /* [n] or NULL */
  double *sum_abs;    /* [n] or NULL */
  float *hessian;     /* [n, n] or NULL */
  /* Per block, from the calibration service only: */
  int layer;
  LpLinearInput which;
  float *inputs;      /* [n_tokens, n] or NULL */
} LpActStats;

/* Called once per block after its statistics are complete.  The callback may
 * replace the block's tensors in `work` (lp_model_set_tensor); in sequential
 * mode the next block then sees the replaced weights' outputs. */
typedef gboolean (*LpCalibBlockFunc) (gpointer user_data, int layer, LpActStats *stats /* [LP_LINEAR_IN_COUNT] */,
                                      GError **error);

/* Samples from a token stream (no BOS in it), each led by bos (none when bos < 0). */
LpCalibration *lp_calibration_new (const gint32 *tokens, gsize n, gint32 bos, const LpCalibOptions *options,
                                   GError **error);
void lp_calibration_free (LpCalibration *cal);
int lp_calibration_n_samples (const LpCalibration *cal);
int lp_calibration_seq_len (const LpCalibration *cal);
const gint32 *lp_calibration_sample (const LpCalibration *cal, int i);
/* The held-out windows: the M slots of the same cut that no sample took, in
 * the order they stand in the data, each like a sample (bos, then L-1 or L
 * tokens).  Scoring on them measures what the samples fit without reading a
 * token they hold or one outside the calibration range. */
int lp_calibration_n_heldout (const LpCalibration *cal);
const gint32 *lp_calibration_heldout (const LpCalibration *cal, int i);
/* A digest of the samples and options (for cache keys). */
const char *lp_calibration_digest (const LpCalibration *cal);

/* Stream the samples through `work` block by block (see above).  `original`
 * is the uncompressed model for LP_CALIB_INDEPENDENT (may equal work). */
gboolean lp_calibration_run (LpCalibration *cal, LpModel *original, LpModel *work, LpBackend *backend,
                             LpCalibWhat what, LpCalibBlockFunc func, gpointer user_data, GError **error);

/* Forget cached weights after the model's tensors changed. */
void lp_forward_invalidate (LpForward *fw);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpCalibration, lp_calibration_free)

G_END_DECLS
