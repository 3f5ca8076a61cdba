/* llmpress — activation statistics as an artifact of their own, so several
 * passes (and llama.cpp's quantizer) reuse one calibration run.
 *
 * One entry per weight tensor that consumes a linear input ("blk.0.attn_q.weight"):
 * the sum over calibration tokens of each input channel's square (llama.cpp's
 * importance matrix), of its absolute value, the token count, and optionally
 * the Hessian X^T X.  Weights that share an input (q/k/v; gate/up) share one
 * entry's arrays.
 *
 * On disk: GGUF with llama.cpp's imatrix tensors "<weight>.in_sum2" [n] and
 * "<weight>.counts" [1] for every weight (so llama-quantize --imatrix reads
 * our file), plus our "<weight>.in_sum_abs" [n] and "<weight>.hessian" [n, n]
 * once per shared input.  Reading also accepts llama.cpp's imatrix files,
 * GGUF or the legacy binary .dat. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/calibration.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef struct _LpStats LpStats;

LpStats *lp_stats_new (void);
LpStats *lp_stats_ref (LpStats *stats);
void lp_stats_unref (LpStats *stats);

/* Entry of a weight, or NULL. */
const LpActStats *lp_stats_lookup (const LpStats *stats, const char *weight_name);
/* Weight names with an entry, sorted. g_ptr_array_unref() it. */
GPtrArray *lp_stats_names (const LpStats *stats);
/* Mean of x^2 per channel into out[n] (what importance-weighted quantizers use). */
void lp_stats_mean_sq (const LpActStats *e, float *out);

/* Add one block's statistics (from the calibration service). */
void lp_stats_add_block (LpStats *stats, const LpActStats *block /* [LP_LINEAR_IN_COUNT] */);

/* Run the calibration over `model` in independent mode and collect every
 * block's statistics (with Hessians when `hessians`). */
LpStats *lp_stats_collect (LpModel *model, LpCalibration *cal, LpBackend *backend, gboolean hessians,
                           GError **error);

gboolean lp_stats_save (const LpStats *stats, const char *path, GError **error);
/* Our GGUF, a llama.cpp imatrix GGUF, or a legacy llama.cpp imatrix .dat. */
LpStats *lp_stats_load (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpStats, lp_stats_unref)

G_END_DECLS
