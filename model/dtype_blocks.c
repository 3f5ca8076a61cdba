/* llmpress — llama.cpp's block types read back to f32: the decoding half of
 * the block formats, which lp_dtype_to_f32 and every kernel reading a
 * quantized weight need.  The quantizers that write these blocks
 * (compress/quant_blocks.c, compress/quant_kblocks.c) sit above and use the
 * shared pieces in dtype-blocks.h; nothing here calls up into them.
 * Layouts: see those files' heads (ggml-common.h), little-endian; a block
 * of Q8_0 is an f16 scale then 32 int8 codes; a block of Q4_0 is an f16
 * scale then 16 bytes holding 32 4-bit codes, element j in the low nibble of
 * byte j and element j+16 in its high nibble, value = (code - 8) * scale;
 * IQ4_NL is Q4_0's layout with the code an index into a fixed non-uniform
 * table, value = scale * lp_iq4nl_levels[code]. */
#include "config.h"

#include <string.h>

#include "dtype-blocks.h"

/* ---- 32-value blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 ---- */

static void
dequant_q8_0 (const guint8 *src, float *dst, gsize n_blocks)
{
  for (gsize b = 0; b < n_blocks; b++, src += 34, dst += 32)
    {
      float d = lp_f16_to_f32 (lp_qread_u16 (src));
      const gint8 *q = (const gint8 *) (src + 2);
      for (int j = 0; j < 32; j++)
        dst[j] = d * q[j];
    }
}

/* ggml-common.h's kvalues_iq4nl: denser near zero, where most weights lie. */
const gint8 lp_iq4nl_levels[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };

/* Q4_0's codes as levels: code - 8. */
static const gint8 q4_0_levels[16] = { -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7 };

/* Q4_0 and IQ4_NL (18 bytes): f16 d, 16 bytes of nibbles; d * levels[q]. */
static void
dequant_nibbles (const guint8 *src, float *dst, gsize n_blocks, const gint8 *levels)
{
  for (gsize b = 0; b < n_blocks; b++, src += 18, dst += 32)
    {
      float d = lp_f16_to_f32 (lp_qread_u16 (src));
      const guint8 *q = src + 2;
      for (int j = 0; j < 16; j++)
        {
          dst[j] = d * levels[q[j] & 0x0f];
          dst[j + 16] = d * levels[q[j] >> 4];
        }
    }
}

static inline guint32
read_u32 (const guint8 *p)
{
  return (guint32) p[0] | ((guint32) p[1] << 8) | ((guint32) p[2] << 16) | ((guint32) p[3] << 24);
}

gboolean
lp_dequant_block32 (LpDType type, const guint8 *src, float *dst, gsize n_blocks)
{
  switch (type)
    {
    case LP_DTYPE_Q8_0:
      dequant_q8_0 (src, dst, n_blocks);
      return TRUE;
    case LP_DTYPE_Q4_0:
      dequant_nibbles (src, dst, n_blocks, q4_0_levels);
      return TRUE;
    case LP_DTYPE_IQ4_NL:
      dequant_nibbles (src, dst, n_blocks, lp_iq4nl_levels);
      return TRUE;
    case LP_DTYPE_Q4_1:
      for (gsize b = 0; b < n_blocks; b++, src += 20, dst += 32)
        {
          const float d = lp_f16_to_f32 (lp_qread_u16 (src));
          const float m = lp_f16_to_f32 (lp_qread_u16 (src + 2));
          for (int j = 0; j < 16; j++)
            {
              dst[j] = (src[4 + j] & 0x0f) * d + m;
              dst[j + 16] = (src[4 + j] >> 4) * d + m;
            }
        }
      return TRUE;
    case LP_DTYPE_Q5_0:
    case LP_DTYPE_Q5_1:
      {
        gboolean with_min = type == LP_DTYPE_Q5_1;
        gsize size = with_min ? 24 : 22;
        for (gsize b = 0; b < n_blocks; b++, src += size, dst += 32)
          {
            const float d = lp_f16_to_f32 (lp_qread_u16 (src));
            const float m = with_min ? lp_f16_to_f32 (lp_qread_u16 (src + 2)) : 0.0f;
            const guint8 *h = src + (with_min ? 4 : 2);
            const guint32 qh = read_u32 (h);
            const guint8 *qs = h + 4;
            for (int j = 0; j < 16; j++)
              {
                int x0 = (qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10);
                int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
                if (with_min)
                  {
                    dst[j] = x0 * d + m;
                    dst[j + 16] = x1 * d + m;
                  }
                else
                  {
                    dst[j] = (x0 - 16) * d;
                    dst[j + 16] = (x1 - 16) * d;
                  }
              }
          }
        return TRUE;
      }
    case LP_DTYPE_Q8_1:
      for (gsize b = 0; b < n_blocks; b++, src += 36, dst += 32)
        {
          const float d = lp_f16_to_f32 (lp_qread_u16 (src));
          const gint8 *q = (const gint8 *) (src + 4);
          for (int j = 0; j < 32; j++)
            dst[j] = q[j] * d;
        }
      return TRUE;
    default:
      return FALSE;
    }
}

/* ---- K-quants: 256-value super-blocks ---- */

static int
decode_scale_q3 (const guint8 *s, int j)
{
  int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

void
lp_get_scale_min_k4 (int j, const guint8 *q, guint8 *d, guint8 *m)
{
  if (j < 4)
    {
      *d = q[j] & 63;
      *m = q[j + 4] & 63;
    }
  else
    {
      *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
      *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

gboolean
lp_dequant_kblock (LpDType type, const guint8 *src, float *y, gsize n_blocks)
{
  switch (type)
    {
    case LP_DTYPE_Q2_K:
      for (gsize i = 0; i < n_blocks; i++, src += 84)
        {
          const guint8 *sc = src, *q = src + 16;
          const float d = lp_f16_to_f32 (lp_qread_u16 (src + 80));
          const float min = lp_f16_to_f32 (lp_qread_u16 (src + 82));
          int is = 0;
          for (int n = 0; n < QK_K; n += 128, q += 32)
            for (int shift = 0; shift < 8; shift += 2)
              for (int half = 0; half < 2; half++)
                {
                  guint8 s = sc[is++];
                  const float dl = d * (s & 0xF), ml = min * (s >> 4);
                  for (int l = 0; l < 16; ++l)
                    *y++ = dl * ((gint8) ((q[l + 16 * half] >> shift) & 3)) - ml;
                }
        }
      return TRUE;
    case LP_DTYPE_Q3_K:
      for (gsize i = 0; i < n_blocks; i++, src += 110)
        {
          const guint8 *hm = src, *q = src + 32, *sc = src + 96;
          const float d_all = lp_f16_to_f32 (lp_qread_u16 (src + 108));
          int is = 0;
          guint8 m = 1;
          for (int n = 0; n < QK_K; n += 128, q += 32)
            for (int shift = 0; shift < 8; shift += 2, m <<= 1)
              for (int half = 0; half < 2; half++)
                {
                  const float dl = d_all * decode_scale_q3 (sc, is++);
                  for (int l = 16 * half; l < 16 * half + 16; ++l)
                    *y++ = dl * ((gint8) ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                }
        }
      return TRUE;
    case LP_DTYPE_Q4_K:
    case LP_DTYPE_Q5_K:
      {
        gboolean five = type == LP_DTYPE_Q5_K;
        gsize size = five ? 176 : 144;
        for (gsize i = 0; i < n_blocks; i++, src += size)
          {
            const float d = lp_f16_to_f32 (lp_qread_u16 (src));
            const float min = lp_f16_to_f32 (lp_qread_u16 (src + 2));
            const guint8 *scales = src + 4, *qh = src + 16, *ql = src + (five ? 48 : 16);
            guint8 u1 = 1, u2 = 2;
            for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2)
              {
                guint8 sc, m;
                lp_get_scale_min_k4 (is + 0, scales, &sc, &m);
                const float d1 = d * sc, m1 = min * m;
                lp_get_scale_min_k4 (is + 1, scales, &sc, &m);
                const float d2 = d * sc, m2 = min * m;
                for (int l = 0; l < 32; ++l)
                  *y++ = d1 * ((ql[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
                for (int l = 0; l < 32; ++l)
                  *y++ = d2 * ((ql[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
              }
          }
        return TRUE;
      }
    case LP_DTYPE_Q6_K:
      for (gsize i = 0; i < n_blocks; i++, src += 210)
        {
          const float d = lp_f16_to_f32 (lp_qread_u16 (src + 208));
          const guint8 *ql = src, *qh = src + 128;
          const gint8 *sc = (const gint8 *) (src + 192);
          for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; ++l)
              {
                int is = l / 16;
                const gint8 q1 = (gint8) ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const gint8 q2 = (gint8) ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const gint8 q3 = (gint8) ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const gint8 q4 = (gint8) ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
              }
        }
      return TRUE;
    case LP_DTYPE_Q8_K:
      for (gsize i = 0; i < n_blocks; i++, src += 292)
        {
          float d;
          memcpy (&d, src, 4);
          const gint8 *q = (const gint8 *) (src + 4);
          for (int j = 0; j < QK_K; ++j)
            *y++ = d * q[j];
        }
      return TRUE;
    default:
      return FALSE;
    }
}

/* The inverse of lp_dequant_block32's layouts: codes in [code_min,
 * code_max] (offset-free types store them shifted by -code_min) written as
 * ggml lays the block out.  Here, beside the reader, so that the GGUF writer
 * (formats/) and the quantizers (compress/) share one packer. */
void
lp_qpack_block32 (const LpBlockParams *p, const int *codes, guint8 *dst)
{
  const int bits = p->type == LP_DTYPE_Q8_0 ? 8 : p->type == LP_DTYPE_Q5_0 || p->type == LP_DTYPE_Q5_1 ? 5 : 4;
  const gboolean has_min = p->type == LP_DTYPE_Q4_1 || p->type == LP_DTYPE_Q5_1;
  int L[32];
  int bias = has_min ? 0 : -p->code_min;
  for (int j = 0; j < 32; j++)
    L[j] = CLAMP (codes[j], p->code_min, p->code_max) + bias;
  lp_qwrite_u16 (dst, p->d);
  dst += 2;
  if (has_min)
    {
      lp_qwrite_u16 (dst, p->m);
      dst += 2;
    }
  if (bits == 8)
    {
      for (int j = 0; j < 32; j++)
        dst[j] = (guint8) (gint8) (L[j] - bias);
      return;
    }
  if (bits == 5)
    {
      guint32 qh = 0;
      for (int j = 0; j < 16; j++)
        {
          qh |= (guint32) ((L[j] & 0x10) >> 4) << j;
          qh |= (guint32) ((L[j + 16] & 0x10) >> 4) << (j + 16);
        }
      for (int b = 0; b < 4; b++)
        dst[b] = (qh >> (8 * b)) & 0xff;
      dst += 4;
    }
  for (int j = 0; j < 16; j++)
    dst[j] = (guint8) ((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
}
