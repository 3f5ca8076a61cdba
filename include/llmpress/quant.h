/* llmpress — llama.cpp's block quantization formats (Q4_0 ... Q8_0, Q2_K ... Q6_K, IQ4_NL).
 *
 * Quantizers produce exactly the bytes ggml produces: without importance the
 * blocks of quantize_row_<type>_ref (what llama-quantize writes without an
 * imatrix), with importance those of quantize_<type>(..., quant_weights) (what
 * it writes with one).  Dequantization is lp_dtype_to_f32.
 *
 * The "grid view" exposes a block's scale/min parameters and the value grid
 * they span, so a data-aware quantizer (GPTQ, AWQ) can choose each code itself,
 * with error feedback between values, and still emit exact ggml blocks:
 *
 *   LpBlockParams p;
 *   lp_block_grid_fit (LP_DTYPE_Q4_K, x, importance, sigma2, &p, &error);
 *   for (i = 0; i < 256; i++)
 *     y[i] = lp_block_grid_quantize_value (&p, i, x[i] + feedback, &codes[i]);
 *   lp_block_grid_pack (&p, codes, dst);
 *
 * With the block's own values and no feedback that sequence writes the same
 * bytes as lp_quantize_row. */
#pragma once

#include <glib.h>
#include <llmpress/dtype.h>
#include <llmpress/tensor.h>

G_BEGIN_DECLS

/* Whether lp_quantize_row can produce `type` (f32/f16/bf16 are converted). */
gboolean lp_quant_type_supported (LpDType type);

/* Quantize one row of n values (n a multiple of the block size) into dst
 * (lp_dtype_row_bytes bytes).  `importance` is one non-negative weight per
 * value (an imatrix row: the mean squared activation of each input column) or
 * NULL.  Fails on a non-finite value, naming its index (dst's bytes are
 * then unspecified). */
gboolean lp_quantize_row (LpDType type, const float *src, void *dst, gint64 n,
                          const float *importance, GError **error);

/* n_rows rows of row_length values (src [R, C]) into dst (R rows of
 * lp_dtype_row_bytes each), the rows spread over lp_threads () threads
 * (threads.h; the bytes do not depend on the count).  `importance` as in
 * lp_quantize_row.  Fails naming the first bad row. */
gboolean lp_quantize_rows (LpDType type, const float *src, gint64 n_rows, gint64 row_length,
                           const float *importance, void *dst, GError **error);

/* A new tensor holding `src` in `type`, row by row (lp_quantize_rows: rows
 * in parallel; the result does not depend on the thread count).  `importance_per_column` has
 * one weight per element of a row, or is NULL.  The row length must be a
 * multiple of the block size: choose the type with lp_quant_fallback_type. */
gboolean lp_quantize_tensor (LpTensor *src, LpDType type, const float *importance_per_column,
                             LpTensor **out, GError **error);

/* The type llama.cpp's llama-quantize would store a tensor with rows of
 * row_length values in when `wanted` was asked for (see quant.c for the
 * table); `wanted` itself when its block size divides row_length. */
LpDType lp_quant_fallback_type (LpDType wanted, gint64 row_length);

/* ---- grid view ---- */

#define LP_BLOCK_MAX_VALUES 256
#define LP_BLOCK_MAX_SUBS 16

/* One block's parameters.  Value i of the block lies in sub-block
 * s = i / sub_size and dequantizes to step[s] * code (+ offset[s] when
 * has_offset), code in [code_min, code_max], bit-identical to
 * lp_dtype_to_f32 on the packed block; IQ4_NL's codes 0..15 index its
 * non-uniform levels instead: value = step[s] * level[code]. */
typedef struct {
  LpDType type;
  int n_values;    /* 32 or 256 */
  int sub_size;    /* values sharing one step: 32, or 16 / 32 in the K types */
  int code_min, code_max;
  gboolean has_offset;
  float step[LP_BLOCK_MAX_SUBS];
  float offset[LP_BLOCK_MAX_SUBS];
  /* The stored fields: f16 bits of d and of m / dmin; per-sub-block scale and
   * min codes of the K types (Q3_K: 6-bit, biased by 32; Q6_K: int8). */
  guint16 d, m;
  guint8 sub_scale[LP_BLOCK_MAX_SUBS];
  guint8 sub_min[LP_BLOCK_MAX_SUBS];
  /*< private >*/
  int rule;
  float qa[LP_BLOCK_MAX_SUBS], qb[LP_BLOCK_MAX_SUBS];
  /* Sub-blocks whose step is zero keep the codes ggml's first pass left there
   * (they dequantize the same whatever the code, but the bytes differ). */
  guint8 frozen[LP_BLOCK_MAX_SUBS];
  gint16 frozen_code[LP_BLOCK_MAX_VALUES];
} LpBlockParams;

/* The per-row statistic ggml's importance-weighted Q4_0/Q4_1/Q5_0/Q5_1
 * quantizers use: the mean of the squares of the row (summed in order). */
float lp_block_grid_row_sigma2 (const float *row, gint64 n);

/* Fit one block (n_values of x) as ggml does: importance (n_values weights)
 * or NULL; row_sigma2 from lp_block_grid_row_sigma2 over the whole row (only
 * used by the 32-value types with importance). */
gboolean lp_block_grid_fit (LpDType type, const float *x, const float *importance, float row_sigma2,
                            LpBlockParams *out, GError **error);
/* The code ggml picks for value x at index idx of the block, and its value. */
float lp_block_grid_quantize_value (const LpBlockParams *p, int idx, float x, int *code);
/* The value code stands for at index idx. */
float lp_block_grid_dequantize_code (const LpBlockParams *p, int idx, int code);
/* Write the block (type_size bytes); codes are clamped to the range. */
void lp_block_grid_pack (const LpBlockParams *p, const int *codes, void *dst);

/* ---- learned codebooks (quant_codebook.c) ---- */

/* k levels (ascending, each an f16 value) for the n values x by weighted
 * k-means (Lloyd, at most iters rounds, from the weighted quantiles): they
 * minimise sum w[i] (x[i] - nearest level)^2 locally.  w: one non-negative
 * weight per value (the Hessian diagonal: SqueezeLLM), or NULL for equal
 * weights (also used when every weight is 0). */
void lp_kmeans_1d (const float *x, const float *w, int n, int k, int iters, float *levels);
/* The index of the level nearest x among ascending levels[k] (ties: the lower). */
int lp_levels_nearest (const float *levels, int k, float x);

G_END_DECLS
