/* llmpress Vulkan backend — the SPIR-V of every shader, compiled from
 * the .comp files in shaders/ by glslc at build time (see Makefile.inc). */
#include "config.h"

#include "vk-internal.h"

static const guint32 gemm_spv[] =
#include "gemm.spv.inc"
    ;
static const guint32 rmsnorm_spv[] =
#include "rmsnorm.spv.inc"
    ;
static const guint32 rope_spv[] =
#include "rope.spv.inc"
    ;
static const guint32 attention_spv[] =
#include "attention.spv.inc"
    ;
static const guint32 swiglu_spv[] =
#include "swiglu.spv.inc"
    ;
static const guint32 dequant_spv[] =
#include "dequant.spv.inc"
    ;
static const guint32 dequant_grid_spv[] =
#include "dequant_grid.spv.inc"
    ;
static const guint32 quantize_groups_spv[] =
#include "quantize_groups.spv.inc"
    ;

static const guint32 gemm_f16_spv[] =
#include "gemm_f16.spv.inc"
    ;
static const guint32 gemm_i8_spv[] =
#include "gemm_i8.spv.inc"
    ;
static const guint32 gemm_i8_dot_spv[] =
#include "gemm_i8_dot.spv.inc"
    ;
static const guint32 dequant_grid_split_spv[] =
#include "dequant_grid_split.spv.inc"
    ;
static const guint32 embed_spv[] =
#include "embed.spv.inc"
    ;
static const guint32 eltwise_spv[] =
#include "eltwise.spv.inc"
    ;
static const guint32 loss_spv[] =
#include "loss.spv.inc"
    ;
static const guint32 rmsnorm_back_spv[] =
#include "rmsnorm_back.spv.inc"
    ;
static const guint32 colsum_spv[] =
#include "colsum.spv.inc"
    ;
static const guint32 embed_back_spv[] =
#include "embed_back.spv.inc"
    ;
static const guint32 attention_back_spv[] =
#include "attention_back.spv.inc"
    ;
static const guint32 attention_rows_spv[] =
#include "attention_rows.spv.inc"
    ;
static const guint32 gemm_direct_spv[] =
#include "gemm_direct.spv.inc"
    ;
static const guint32 gemm_direct4_spv[] =
#include "gemm_direct4.spv.inc"
    ;
static const guint32 attention_back_rows_spv[] =
#include "attention_back_rows.spv.inc"
    ;
static const guint32 gemm_direct4_brows_spv[] =
#include "gemm_direct4_brows.spv.inc"
    ;
static const guint32 adamw_spv[] =
#include "adamw.spv.inc"
    ;
static const guint32 sum_sq_spv[] =
#include "sum_sq.spv.inc"
    ;
static const guint32 grid_train_spv[] =
#include "grid_train.spv.inc"
    ;
static const guint32 kl_topk_spv[] =
#include "kl_topk.spv.inc"
    ;

static const VkShaderCode shaders[VK_SH_COUNT] = {
  [VK_SH_GEMM] = { gemm_spv, sizeof gemm_spv, "gemm" },
  [VK_SH_RMSNORM] = { rmsnorm_spv, sizeof rmsnorm_spv, "rmsnorm" },
  [VK_SH_ROPE] = { rope_spv, sizeof rope_spv, "rope" },
  [VK_SH_ATTENTION] = { attention_spv, sizeof attention_spv, "attention" },
  [VK_SH_SWIGLU] = { swiglu_spv, sizeof swiglu_spv, "swiglu" },
  [VK_SH_DEQUANT] = { dequant_spv, sizeof dequant_spv, "dequant" },
  [VK_SH_GEMM_F16] = { gemm_f16_spv, sizeof gemm_f16_spv, "gemm_f16", LP_VK_FAST_F16 },
  [VK_SH_GEMM_I8] = { gemm_i8_spv, sizeof gemm_i8_spv, "gemm_i8" },
  [VK_SH_GEMM_I8_DOT] = { gemm_i8_dot_spv, sizeof gemm_i8_dot_spv, "gemm_i8_dot", LP_VK_FAST_INT_DOT },
  [VK_SH_QUANTIZE_GROUPS] = { quantize_groups_spv, sizeof quantize_groups_spv, "quantize_groups" },
  [VK_SH_DEQUANT_GRID] = { dequant_grid_spv, sizeof dequant_grid_spv, "dequant_grid" },
  [VK_SH_DEQUANT_GRID_SPLIT] = { dequant_grid_split_spv, sizeof dequant_grid_split_spv, "dequant_grid_split" },
  [VK_SH_EMBED] = { embed_spv, sizeof embed_spv, "embed" },
  [VK_SH_ELTWISE] = { eltwise_spv, sizeof eltwise_spv, "eltwise" },
  [VK_SH_LOSS] = { loss_spv, sizeof loss_spv, "loss" },
  [VK_SH_RMSNORM_BACK] = { rmsnorm_back_spv, sizeof rmsnorm_back_spv, "rmsnorm_back" },
  [VK_SH_COLSUM] = { colsum_spv, sizeof colsum_spv, "colsum" },
  [VK_SH_EMBED_BACK] = { embed_back_spv, sizeof embed_back_spv, "embed_back" },
  [VK_SH_ATTENTION_BACK] = { attention_back_spv, sizeof attention_back_spv, "attention_back" },
  [VK_SH_ATTENTION_ROWS] = { attention_rows_spv, sizeof attention_rows_spv, "attention_rows" },
  [VK_SH_GEMM_DIRECT] = { gemm_direct_spv, sizeof gemm_direct_spv, "gemm_direct" },
  [VK_SH_GEMM_DIRECT4] = { gemm_direct4_spv, sizeof gemm_direct4_spv, "gemm_direct4" },
  [VK_SH_ATTENTION_BACK_ROWS] = { attention_back_rows_spv, sizeof attention_back_rows_spv, "attention_back_rows" },
  [VK_SH_GEMM_DIRECT4_BROWS] = { gemm_direct4_brows_spv, sizeof gemm_direct4_brows_spv, "gemm_direct4_brows" },
  [VK_SH_ADAMW] = { adamw_spv, sizeof adamw_spv, "adamw" },
  [VK_SH_SUM_SQ] = { sum_sq_spv, sizeof sum_sq_spv, "sum_sq" },
  [VK_SH_GRID_TRAIN] = { grid_train_spv, sizeof grid_train_spv, "grid_train" },
  [VK_SH_KL_TOPK] = { kl_topk_spv, sizeof kl_topk_spv, "kl_topk" },
};

const VkShaderCode *
lp_vk_shader (VkShaderId id)
{
  g_return_val_if_fail (id < VK_SH_COUNT, NULL);
  return &shaders[id];
}
