/* llmpress — layer-wise compression driven by calibration: the loop every
 * data-aware pass (Wanda, SparseGPT, GPTQ, AWQ, activation-aware SVD) shares.
 *
 * The calibration samples run through the model block by block; after block
 * l's statistics are complete, `func` is called for each linear weight of that
 * block ("blk.<l>.attn_q.weight", ...) selected by targets and not by ignore,
 * with the statistics of that weight's input, and may hand back a replacement
 * tensor, which is set into `work`.  In sequential calibration mode the next
 * block then sees the replaced block's outputs (GPTQ's true-sequential at block
 * granularity); in independent mode every block sees the original model's
 * activations.  Only one block's statistics are alive at a time. */
#pragma once

#include <glib.h>
#include <llmpress/calibration.h>
#include <llmpress/context.h>
#include <llmpress/params.h>

G_BEGIN_DECLS

/* `weight` is the tensor as it stands in work (borrowed); `stats` describes
 * its input (the Hessian, channel sums or captured rows asked for with
 * `what`).  Set *replacement (owned) to change the tensor, or leave it NULL. */
typedef gboolean (*LpLayerwiseFunc) (gpointer user_data, LpTensor *weight, const LpActStats *stats,
                                     LpTensor **replacement, GError **error);

/* Run the pass context's calibration over `work` (a model the pass derived
 * from its input with lp_model_derive, changed in place), the input model
 * serving as the original for independent mode.  Progress is reported per
 * weight. */
gboolean lp_layerwise_run (LpPassContext *ctx, LpModel *work, LpCalibWhat what, const LpTensorPattern *targets,
                           const LpTensorPattern *ignore, LpLayerwiseFunc func, gpointer user_data,
                           GError **error);

G_END_DECLS
