/* llmpress — the compute graph's op table: one row an op (compute.h). */
#include "config.h"

#include "compute-internal.h"

static const LpCOpInfo op_table[LP_COP_COUNT] = {
  [LP_COP_EMBED] = { "embed", 2, 1, lp_cop_embed_cpu, lp_cop_embed_ref, lp_cop_embed_backward },
  [LP_COP_MATMUL] = { "matmul", 3, 1, lp_cop_matmul_cpu, lp_cop_matmul_ref, lp_cop_matmul_backward },
  [LP_COP_MATMUL_GRID] = { "matmul_grid", 6, 1, lp_cop_matmul_grid_cpu, lp_cop_matmul_grid_ref, lp_cop_matmul_grid_backward },
  [LP_COP_RMSNORM] = { "rmsnorm", 2, 1, lp_cop_rmsnorm_cpu, lp_cop_rmsnorm_ref, lp_cop_rmsnorm_backward },
  [LP_COP_ROPE] = { "rope", 2, 1, lp_cop_rope_cpu, lp_cop_rope_ref, lp_cop_rope_backward },
  [LP_COP_ATTENTION] = { "attention", 3, 1, lp_cop_attention_cpu, lp_cop_attention_ref, lp_cop_attention_backward },
  [LP_COP_SWIGLU] = { "swiglu", 2, 1, lp_cop_swiglu_cpu, lp_cop_swiglu_ref, lp_cop_swiglu_backward },
  [LP_COP_ADD] = { "add", 2, 1, lp_cop_add_cpu, lp_cop_add_ref, lp_cop_add_backward },
  [LP_COP_SCALE] = { "scale", 1, 1, lp_cop_scale_cpu, lp_cop_scale_ref, lp_cop_scale_backward },
  [LP_COP_SET_ROWS] = { "set_rows", 2, 1, lp_cop_set_rows_cpu, lp_cop_set_rows_ref, lp_cop_set_rows_backward },
  [LP_COP_CROSS_ENTROPY] = { "cross_entropy", 2, 1, lp_cop_cross_entropy_cpu, lp_cop_cross_entropy_ref, lp_cop_cross_entropy_backward },
  [LP_COP_KL] = { "kl", 2, 1, lp_cop_kl_cpu, lp_cop_kl_ref, lp_cop_kl_backward },
  [LP_COP_MSE] = { "mse", 2, 1, lp_cop_mse_cpu, lp_cop_mse_ref, lp_cop_mse_backward },
  [LP_COP_EMBED_BACK] = { "embed_back", 2, 1, lp_cop_embed_back_cpu, lp_cop_embed_back_ref, NULL },
  [LP_COP_MATMUL_BACK_X] = { "matmul_back_x", 5, 1, lp_cop_matmul_back_x_cpu, lp_cop_matmul_back_x_ref, NULL },
  [LP_COP_MATMUL_BACK_W] = { "matmul_back_w", 2, 1, lp_cop_matmul_back_w_cpu, lp_cop_matmul_back_w_ref, NULL },
  [LP_COP_RMSNORM_BACK] = { "rmsnorm_back", 3, 1, lp_cop_rmsnorm_back_cpu, lp_cop_rmsnorm_back_ref, NULL },
  [LP_COP_RMSNORM_BACK_W] = { "rmsnorm_back_w", 2, 1, lp_cop_rmsnorm_back_w_cpu, lp_cop_rmsnorm_back_w_ref, NULL },
  [LP_COP_ROPE_BACK] = { "rope_back", 2, 1, lp_cop_rope_back_cpu, lp_cop_rope_back_ref, NULL },
  [LP_COP_ATTENTION_BACK] = { "attention_back", 4, 3, lp_cop_attention_back_cpu, lp_cop_attention_back_ref, NULL },
  [LP_COP_SWIGLU_BACK] = { "swiglu_back", 3, 2, lp_cop_swiglu_back_cpu, lp_cop_swiglu_back_ref, NULL },
  [LP_COP_ROW_SUM] = { "row_sum", 1, 1, lp_cop_row_sum_cpu, lp_cop_row_sum_ref, NULL },
  [LP_COP_CROSS_ENTROPY_BACK] = { "cross_entropy_back", 3, 1, lp_cop_cross_entropy_back_cpu, lp_cop_cross_entropy_back_ref, NULL },
  [LP_COP_KL_BACK] = { "kl_back", 3, 1, lp_cop_kl_back_cpu, lp_cop_kl_back_ref, NULL },
  [LP_COP_MSE_BACK] = { "mse_back", 3, 1, lp_cop_mse_back_cpu, lp_cop_mse_back_ref, NULL },
  [LP_COP_ADAMW] = { "adamw", 5, 3, lp_cop_adamw_cpu, lp_cop_adamw_ref, NULL },
  [LP_COP_SUM_SQ] = { "sum_sq", 2, 1, lp_cop_sum_sq_cpu, lp_cop_sum_sq_ref, NULL },
  [LP_COP_FAKE_QUANT] = { "fake_quant", 4, 1, lp_cop_fake_quant_cpu, lp_cop_fake_quant_ref, lp_cop_fake_quant_backward },
  [LP_COP_FAKE_QUANT_BACK] = { "fake_quant_back", 5, 1, lp_cop_fake_quant_back_cpu, lp_cop_fake_quant_back_ref, NULL },
  [LP_COP_DEQUANT_GRID] = { "dequant_grid", 4, 1, lp_cop_dequant_grid_cpu, lp_cop_dequant_grid_ref, lp_cop_dequant_grid_backward },
  [LP_COP_DEQUANT_GRID_BACK] = { "dequant_grid_back", 5, 1, lp_cop_dequant_grid_back_cpu, lp_cop_dequant_grid_back_ref, NULL },
  [LP_COP_KL_TOPK] = { "kl_topk", 4, 1, lp_cop_kl_topk_cpu, lp_cop_kl_topk_ref, lp_cop_kl_topk_backward },
  [LP_COP_KL_TOPK_BACK] = { "kl_topk_back", 5, 1, lp_cop_kl_topk_back_cpu, lp_cop_kl_topk_back_ref, NULL },
};

const LpCOpInfo *
lp_cop_info (LpCOp op)
{
  g_return_val_if_fail (op < LP_COP_COUNT, NULL);
  return &op_table[op];
}
