/* llmpress — GPTQ and compressed-tensors checkpoint tensors from and to the
 * integer grid (gptq_pack.c; used by the Hugging Face reader and writer). */
#pragma once

#include <glib.h>
#include <llmpress/tensor.h>

/* Whether g can be written as GPTQ tensors (inputs x bits and outputs x bits
 * multiples of 32, no zero point of 0); the error says why not. */
gboolean lp_gptq_packable (const LpIntGrid *g, const char *name, GError **error);
/* Append PREFIX.qweight, .qzeros, .scales, .g_idx to out (owned tensors). */
gboolean lp_gptq_pack (const LpIntGrid *g, const char *prefix, GPtrArray *out, GError **error);
/* The grid of a layer's GPTQ tensors; zero_bias is what the file's zero
 * points lack (1 for "gptq", 0 for "gptq_v2"); `where` names the file. */
LpIntGrid *lp_gptq_unpack (const LpTensor *qweight, const LpTensor *qzeros, const LpTensor *scales,
                           const LpTensor *g_idx, int bits, int group_size, gboolean symmetric, int zero_bias,
                           const char *where, GError **error);
/* compressed-tensors pack-quantized: whether g can be written (4 or 8 bits;
 * a symmetric grid's zero points all 2^(b-1)); the error says why not. */
gboolean lp_ct_packable (const LpIntGrid *g, const char *name, GError **error);
/* Append PREFIX.weight_packed, .weight_scale, (.weight_zero_point when
 * asymmetric), .weight_shape and (.weight_g_idx when the groups are permuted). */
gboolean lp_ct_pack (const LpIntGrid *g, const char *prefix, GPtrArray *out, GError **error);
/* The grid of a layer's compressed-tensors parts (zero_point and g_idx may be
 * NULL); scale may be F16, BF16 or F32 (stored as f16). */
LpIntGrid *lp_ct_unpack (const LpTensor *packed, const LpTensor *scale, const LpTensor *zero_point, const LpTensor *shape,
                         const LpTensor *g_idx, int bits, int group_size, gboolean symmetric, const char *where,
                         GError **error);
/* A copy with the rows of a Q/K weight permuted between GGUF's and HF's
 * rotary orders (codes and each row's group parameters move together). */
LpIntGrid *lp_int_grid_permute_rows (const LpIntGrid *g, gint64 n_heads, gint64 head_dim, gboolean to_hf);
