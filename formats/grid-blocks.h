/* llmpress — an integer grid (tensor.h's LpIntGrid) as the ggml block type
 * that holds the same weights (grid_blocks.c; used by the GGUF writer). */
#pragma once

#include <glib.h>
#include <llmpress/tensor.h>

/* The smallest ggml 32-value type that holds g's weights: Q4_0, Q4_1, Q5_0,
 * Q5_1 or Q8_0; LP_DTYPE_F32 when none does.  Q4_1 / Q5_1 are exact but for
 * their f16 offset m (counted by lp_grid_blocks_encode); the others are
 * exact.  keep_zeros (a pruned tensor): Q4_1 / Q5_1 only where every offset
 * is exact.  *why (static) says why the type is not the smallest that
 * would otherwise hold it, or NULL. */
LpDType lp_grid_block_type (const LpIntGrid *g, gboolean keep_zeros, const char **why);

/* What encoding changed: weights whose block value differs from the grid's
 * (Q4_1 / Q5_1's offset rounded to f16) and the largest difference. */
typedef struct {
  guint64 n_weights, n_changed;
  double max_change;
} LpGridBlockChange;

/* g's rows [R, C] as `type` blocks into dst (R * C / 32 blocks); `change`
 * gets the weights that changed added to it. */
void lp_grid_blocks_encode (const LpIntGrid *g, LpDType type, guint8 *dst, LpGridBlockChange *change);
