/* llmpress — reading llama.cpp's block types (dtype_blocks.c), shared with
 * the quantizers in compress/ that write them.  Not SDK. */
#pragma once

#include <glib.h>
#include <llmpress/dtype.h>
#include <llmpress/quant.h>

/* Values in a K-quant super-block (ggml's QK_K). */
#define QK_K 256

/* Dequantize n_blocks blocks to f32; FALSE for a type that is not a
 * 32-value block (Q4_0 .. Q8_1, IQ4_NL), respectively not a K-quant (Q2_K .. Q8_K). */
gboolean lp_dequant_block32 (LpDType type, const guint8 *src, float *dst, gsize n_blocks);
gboolean lp_dequant_kblock (LpDType type, const guint8 *src, float *dst, gsize n_blocks);

/* IQ4_NL's 16 levels (ggml's kvalues_iq4nl): a block is an f16 d and 32
 * 4-bit indexes into them, laid out as Q4_0's codes; value = d * level. */
extern const gint8 lp_iq4nl_levels[16];

/* Q4_K / Q5_K: sub-block j's 6-bit scale and min out of the 12 packed bytes q. */
void lp_get_scale_min_k4 (int j, const guint8 *q, guint8 *d, guint8 *m);

/* One 32-value block (Q4_0 .. Q8_0, IQ4_NL) from its parameters and codes. */
void lp_qpack_block32 (const LpBlockParams *p, const int *codes, guint8 *dst);

static inline void
lp_qwrite_u16 (guint8 *p, guint16 v)
{
  p[0] = v & 0xff;
  p[1] = v >> 8;
}

static inline guint16
lp_qread_u16 (const guint8 *p)
{
  return (guint16) (p[0] | (p[1] << 8));
}

/* The little-endian f16 at p as a float. */
static inline float
lp_qread_f16 (const guint8 *p)
{
  return lp_f16_to_f32 (lp_qread_u16 (p));
}
