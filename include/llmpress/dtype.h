/* llmpress — element types.  The numbering is ggml's (GGUF's tensor type ids), so
 * a GGUF type id and an LpDType are the same number. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  LP_DTYPE_F32 = 0,
  LP_DTYPE_F16 = 1,
  LP_DTYPE_Q4_0 = 2,
  LP_DTYPE_Q4_1 = 3,
  LP_DTYPE_Q5_0 = 6,
  LP_DTYPE_Q5_1 = 7,
  LP_DTYPE_Q8_0 = 8,
  LP_DTYPE_Q8_1 = 9,
  LP_DTYPE_Q2_K = 10,
  LP_DTYPE_Q3_K = 11,
  LP_DTYPE_Q4_K = 12,
  LP_DTYPE_Q5_K = 13,
  LP_DTYPE_Q6_K = 14,
  LP_DTYPE_Q8_K = 15,
  LP_DTYPE_IQ4_NL = 20,
  LP_DTYPE_I8 = 24,
  LP_DTYPE_I16 = 25,
  LP_DTYPE_I32 = 26,
  LP_DTYPE_I64 = 27,
  LP_DTYPE_F64 = 28,
  LP_DTYPE_BF16 = 30,
  LP_DTYPE_COUNT = 31,
} LpDType;

/* Static description of a type: a row of n elements takes
 * n / block_size * type_size bytes (n must be a multiple of block_size). */
typedef struct {
  const char *name;    /* "f32", "q8_0", ... (lower case, as llama.cpp prints) */
  guint block_size;    /* elements per block: 1 for plain types */
  guint type_size;     /* bytes per block */
  gboolean supported;  /* we can read (dequantize) it */
} LpDTypeInfo;

/* NULL for an id that is not a known type. */
const LpDTypeInfo *lp_dtype_info (int dtype);
const char *lp_dtype_name (LpDType dtype);
/* Case-insensitive ("F16", "bf16", "Q8_0"); FALSE when unknown. */
gboolean lp_dtype_from_name (const char *name, LpDType *out);
double lp_dtype_bits_per_weight (LpDType dtype);

/* Bytes of a row of n elements: FALSE (with error) if n is not a multiple of
 * the block size or the size overflows. */
gboolean lp_dtype_row_bytes (LpDType dtype, guint64 n, guint64 *out_bytes, GError **error);

/* Scalar conversions (round to nearest even; NaN kept NaN). */
float lp_f16_to_f32 (guint16 h);
guint16 lp_f32_to_f16 (float f);
float lp_bf16_to_f32 (guint16 h);
guint16 lp_f32_to_bf16 (float f);

/* Convert n elements of `src` (of type dtype, n a multiple of its block size)
 * to f32.  FALSE if dtype cannot be read. */
gboolean lp_dtype_to_f32 (LpDType dtype, const void *src, float *dst, gsize n, GError **error);
/* Convert n f32 values into dtype: f32, f16, bf16, or a block type of
 * lp_quant_type_supported (ggml's reference quantizer, see quant.h). */
gboolean lp_dtype_from_f32 (LpDType dtype, const float *src, void *dst, gsize n, GError **error);

G_END_DECLS
