/* llmpress — the compute graph's op table and kernels, inside libllmpress.
 *
 * Each op X has lp_cop_X_cpu (the CPU backend's kernel), lp_cop_X_ref (the
 * plain C definition) and, when differentiable, lp_cop_X_backward (records
 * the gradient nodes).  Forward kernels live in compute_forward.c, backward
 * ones in compute_backward.c; the table in compute_ops.c names them. */
#pragma once

#include <llmpress/compute.h>

void lp_cop_embed_cpu (const LpCNode *node);
void lp_cop_embed_ref (const LpCNode *node);
gboolean lp_cop_embed_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_matmul_cpu (const LpCNode *node);
void lp_cop_matmul_ref (const LpCNode *node);
gboolean lp_cop_matmul_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_matmul_grid_cpu (const LpCNode *node);
void lp_cop_matmul_grid_ref (const LpCNode *node);
gboolean lp_cop_matmul_grid_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_rmsnorm_cpu (const LpCNode *node);
void lp_cop_rmsnorm_ref (const LpCNode *node);
gboolean lp_cop_rmsnorm_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_rope_cpu (const LpCNode *node);
void lp_cop_rope_ref (const LpCNode *node);
gboolean lp_cop_rope_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_attention_cpu (const LpCNode *node);
void lp_cop_attention_ref (const LpCNode *node);
gboolean lp_cop_attention_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_swiglu_cpu (const LpCNode *node);
void lp_cop_swiglu_ref (const LpCNode *node);
gboolean lp_cop_swiglu_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_add_cpu (const LpCNode *node);
void lp_cop_add_ref (const LpCNode *node);
gboolean lp_cop_add_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_scale_cpu (const LpCNode *node);
void lp_cop_scale_ref (const LpCNode *node);
gboolean lp_cop_scale_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_set_rows_cpu (const LpCNode *node);
void lp_cop_set_rows_ref (const LpCNode *node);
gboolean lp_cop_set_rows_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_cross_entropy_cpu (const LpCNode *node);
void lp_cop_cross_entropy_ref (const LpCNode *node);
gboolean lp_cop_cross_entropy_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_kl_cpu (const LpCNode *node);
void lp_cop_kl_ref (const LpCNode *node);
gboolean lp_cop_kl_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_mse_cpu (const LpCNode *node);
void lp_cop_mse_ref (const LpCNode *node);
gboolean lp_cop_mse_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_embed_back_cpu (const LpCNode *node);
void lp_cop_embed_back_ref (const LpCNode *node);
void lp_cop_matmul_back_x_cpu (const LpCNode *node);
void lp_cop_matmul_back_x_ref (const LpCNode *node);
void lp_cop_matmul_back_w_cpu (const LpCNode *node);
void lp_cop_matmul_back_w_ref (const LpCNode *node);
void lp_cop_rmsnorm_back_cpu (const LpCNode *node);
void lp_cop_rmsnorm_back_ref (const LpCNode *node);
void lp_cop_rmsnorm_back_w_cpu (const LpCNode *node);
void lp_cop_rmsnorm_back_w_ref (const LpCNode *node);
void lp_cop_rope_back_cpu (const LpCNode *node);
void lp_cop_rope_back_ref (const LpCNode *node);
void lp_cop_attention_back_cpu (const LpCNode *node);
void lp_cop_attention_back_ref (const LpCNode *node);
void lp_cop_swiglu_back_cpu (const LpCNode *node);
void lp_cop_swiglu_back_ref (const LpCNode *node);
void lp_cop_row_sum_cpu (const LpCNode *node);
void lp_cop_row_sum_ref (const LpCNode *node);
void lp_cop_cross_entropy_back_cpu (const LpCNode *node);
void lp_cop_cross_entropy_back_ref (const LpCNode *node);
void lp_cop_kl_back_cpu (const LpCNode *node);
void lp_cop_kl_back_ref (const LpCNode *node);
void lp_cop_mse_back_cpu (const LpCNode *node);
void lp_cop_mse_back_ref (const LpCNode *node);
