/* llmpress prune plugin — tensor surgery for the structural passes
 * (prune.layers, prune.channels): slicing rows or columns out of a tensor
 * and keeping the per-tensor metadata of the result coherent. */
#pragma once

#include <llmpress/llmpress.h>

/* t with only the rows (dim 0) or, for a matrix, the columns (dim 1) where
 * keep[i] is set; `n_keep` of them.  f16/bf16 stay so, anything else becomes
 * f32 (quantized blocks cannot be cut across a row); a keep-mask is cut the
 * same way.  Owned. */
LpTensor *prune_tensor_slice (const LpTensor *t, int dim, const guint8 *keep, gint64 n_keep, GError **error);

/* Refresh or drop llmpress.sparsity.tensor.<name> after t replaced a tensor. */
void prune_meta_tensor_changed (LpMeta *meta, const LpTensor *t);

/* Keep the `k` highest of scores[n] (ties to the lower index): keep[n] 0/1. */
void prune_keep_highest (const double *scores, int n, int k, guint8 *keep);
