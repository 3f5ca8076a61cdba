/* llmpress — llama-quantize's mixes (Q4_K_M, Q5_K_S, ...): the per-tensor
 * types llama.cpp chooses for a file type (src/llama-quant.cpp,
 * llama_tensor_get_type), so that a spec saying preset=Q4_K_M stores each
 * tensor in the type llama-quantize would store it in. */
#pragma once

#include <glib.h>
#include <llmpress/dtype.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

/* The mixes of llama-quantize that use the block types we write
 * (LLAMA_FTYPE_MOSTLY_*; the IQ and ternary mixes are not here). */
typedef enum {
  LP_QUANT_MIX_Q4_0,
  LP_QUANT_MIX_Q4_1,
  LP_QUANT_MIX_Q5_0,
  LP_QUANT_MIX_Q5_1,
  LP_QUANT_MIX_Q8_0,
  LP_QUANT_MIX_Q2_K,
  LP_QUANT_MIX_Q2_K_S,
  LP_QUANT_MIX_Q3_K_S,
  LP_QUANT_MIX_Q3_K_M,
  LP_QUANT_MIX_Q3_K_L,
  LP_QUANT_MIX_Q4_K_S,
  LP_QUANT_MIX_Q4_K_M,
  LP_QUANT_MIX_Q5_K_S,
  LP_QUANT_MIX_Q5_K_M,
  LP_QUANT_MIX_Q6_K,
  LP_QUANT_MIX_COUNT
} LpQuantMix;

/* "Q4_K_M" ...: llama-quantize's spelling. */
const char *lp_quant_mix_name (LpQuantMix mix);
/* Case-insensitively (q4_k_m too); an unknown name is an error that lists
 * the known ones. */
gboolean lp_quant_mix_from_name (const char *name, LpQuantMix *out, GError **error);
/* The type most tensors get (llama_ftype_get_default_type). */
LpDType lp_quant_mix_default_type (LpQuantMix mix);

/* Which tensors a mix visits; NULL: every 2-D tensor whose name ends in
 * "weight" (llama-quantize's tensor_allows_quantization for these
 * architectures).  A tensor the filter leaves out is skipped as
 * llama-quantize skips a --tensor-type override: it does not advance the
 * attn_v / ffn_down layer counters. */
typedef gboolean (*LpQuantMixFilter) (const LpTensor *t, gpointer user_data);

/* The type of every tensor the mix visits (name -> LpDType, as
 * GINT_TO_POINTER), after llama-quantize's fallback for rows the block does
 * not divide (lp_quant_fallback_type).  has_imatrix: importance data is
 * given (it changes Q4_0/Q5_0's first ffn_down layers). */
GHashTable *lp_quant_mix_types (LpModel *model, LpQuantMix mix, gboolean has_imatrix, LpQuantMixFilter filter,
                                gpointer user_data);

G_END_DECLS
