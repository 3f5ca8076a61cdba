/* llmpress — element types: sizes, names, and conversions to f32 (every
 * type; the block types are decoded in dtype_blocks.c) and from f32 (the
 * plain types; writing a block type is quantizing: compress/quant.c). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "dtype-blocks.h"

static const LpDTypeInfo dtype_table[LP_DTYPE_COUNT] = {
  [LP_DTYPE_F32] = { "f32", 1, 4, TRUE },
  [LP_DTYPE_F16] = { "f16", 1, 2, TRUE },
  [LP_DTYPE_Q4_0] = { "q4_0", 32, 18, TRUE },
  [LP_DTYPE_Q4_1] = { "q4_1", 32, 20, TRUE },
  [LP_DTYPE_Q5_0] = { "q5_0", 32, 22, TRUE },
  [LP_DTYPE_Q5_1] = { "q5_1", 32, 24, TRUE },
  [LP_DTYPE_Q8_0] = { "q8_0", 32, 34, TRUE },
  [LP_DTYPE_Q8_1] = { "q8_1", 32, 36, TRUE },
  [LP_DTYPE_Q2_K] = { "q2_k", 256, 84, TRUE },
  [LP_DTYPE_Q3_K] = { "q3_k", 256, 110, TRUE },
  [LP_DTYPE_Q4_K] = { "q4_k", 256, 144, TRUE },
  [LP_DTYPE_Q5_K] = { "q5_k", 256, 176, TRUE },
  [LP_DTYPE_Q6_K] = { "q6_k", 256, 210, TRUE },
  [LP_DTYPE_Q8_K] = { "q8_k", 256, 292, TRUE },
  [LP_DTYPE_IQ4_NL] = { "iq4_nl", 32, 18, TRUE },
  [LP_DTYPE_I8] = { "i8", 1, 1, TRUE },
  [LP_DTYPE_I16] = { "i16", 1, 2, TRUE },
  [LP_DTYPE_I32] = { "i32", 1, 4, TRUE },
  [LP_DTYPE_I64] = { "i64", 1, 8, FALSE },
  [LP_DTYPE_F64] = { "f64", 1, 8, TRUE },
  [LP_DTYPE_BF16] = { "bf16", 1, 2, TRUE },
};

const LpDTypeInfo *
lp_dtype_info (int dtype)
{
  if (dtype < 0 || dtype >= LP_DTYPE_COUNT || dtype_table[dtype].name == NULL)
    return NULL;
  return &dtype_table[dtype];
}

const char *
lp_dtype_name (LpDType dtype)
{
  const LpDTypeInfo *info = lp_dtype_info (dtype);
  return info ? info->name : "unknown";
}

gboolean
lp_dtype_from_name (const char *name, LpDType *out)
{
  for (int i = 0; i < LP_DTYPE_COUNT; i++)
    if (dtype_table[i].name && g_ascii_strcasecmp (dtype_table[i].name, name) == 0)
      {
        *out = (LpDType) i;
        return TRUE;
      }
  return FALSE;
}

double
lp_dtype_bits_per_weight (LpDType dtype)
{
  const LpDTypeInfo *info = lp_dtype_info (dtype);
  g_return_val_if_fail (info != NULL, 0.0);
  return 8.0 * info->type_size / info->block_size;
}

gboolean
lp_dtype_row_bytes (LpDType dtype, guint64 n, guint64 *out_bytes, GError **error)
{
  const LpDTypeInfo *info = lp_dtype_info (dtype);
  if (info == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "unknown tensor type id %d", (int) dtype);
      return FALSE;
    }
  if (n % info->block_size != 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "row of %" G_GUINT64_FORMAT " elements is not a multiple of the %s block size %u",
                    n, info->name, info->block_size);
      return FALSE;
    }
  guint64 bytes;
  if (!g_uint64_checked_mul (&bytes, n / info->block_size, info->type_size))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "row of %" G_GUINT64_FORMAT " %s elements overflows",
                    n, info->name);
      return FALSE;
    }
  *out_bytes = bytes;
  return TRUE;
}

/* IEEE half <-> single, exact for every half value; rounding to nearest even. */
float
lp_f16_to_f32 (guint16 h)
{
  guint32 sign = (guint32) (h & 0x8000) << 16;
  guint32 exp = (h >> 10) & 0x1f;
  guint32 mant = h & 0x3ff;
  guint32 bits;
  if (exp == 0)
    {
      if (mant == 0)
        bits = sign;
      else
        {
          /* subnormal: value = mant * 2^-24 */
          float v = (float) mant * 0x1p-24f;
          memcpy (&bits, &v, 4);
          bits |= sign;
        }
    }
  else if (exp == 31)
    bits = sign | 0x7f800000u | (mant << 13);
  else
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  float f;
  memcpy (&f, &bits, 4);
  return f;
}

guint16
lp_f32_to_f16 (float f)
{
  guint32 x;
  memcpy (&x, &f, 4);
  guint32 sign = (x >> 16) & 0x8000;
  guint32 absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) /* Inf or NaN */
    return (guint16) (sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 | ((absx >> 13) & 0x3ff) : 0));
  if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
    return (guint16) (sign | 0x7c00);
  if (absx < 0x38800000u)
    {
      /* result is subnormal (or zero): scale so the integer part is the mantissa */
      float a;
      memcpy (&a, &absx, 4);
      float scaled = a * 0x1p24f; /* exact */
      guint32 m = (guint32) lrintf (scaled); /* round half to even under default mode */
      return (guint16) (sign | m);
    }
  guint32 exp = (absx >> 23) - 112;
  guint32 mant = absx & 0x7fffff;
  guint32 h = (exp << 10) | (mant >> 13);
  guint32 rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
    h++; /* may carry into the exponent: still correct */
  return (guint16) (sign | h);
}

float
lp_bf16_to_f32 (guint16 h)
{
  guint32 bits = (guint32) h << 16;
  float f;
  memcpy (&f, &bits, 4);
  return f;
}

guint16
lp_f32_to_bf16 (float f)
{
  guint32 x;
  memcpy (&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet and NaN */
    return (guint16) ((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (guint16) (x >> 16);
}

gboolean
lp_dtype_to_f32 (LpDType dtype, const void *src, float *dst, gsize n, GError **error)
{
  const LpDTypeInfo *info = lp_dtype_info (dtype);
  if (info == NULL || !info->supported)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "cannot read tensors of type %s yet",
                    info ? info->name : "unknown");
      return FALSE;
    }
  g_return_val_if_fail (n % info->block_size == 0, FALSE);
  /* An empty tensor may have no data pointer at all (memcpy from NULL is undefined). */
  if (n == 0)
    return TRUE;
  const guint8 *s = src;
  switch (dtype)
    {
    case LP_DTYPE_F32:
      memcpy (dst, src, n * 4);
      break;
    case LP_DTYPE_F16:
      for (gsize i = 0; i < n; i++)
        dst[i] = lp_f16_to_f32 (lp_qread_u16 (s + 2 * i));
      break;
    case LP_DTYPE_BF16:
      for (gsize i = 0; i < n; i++)
        dst[i] = lp_bf16_to_f32 (lp_qread_u16 (s + 2 * i));
      break;
    case LP_DTYPE_F64:
      for (gsize i = 0; i < n; i++)
        {
          double v;
          memcpy (&v, s + 8 * i, 8);
          dst[i] = (float) v;
        }
      break;
    case LP_DTYPE_I8:
      for (gsize i = 0; i < n; i++)
        dst[i] = ((const gint8 *) src)[i];
      break;
    case LP_DTYPE_I16:
      for (gsize i = 0; i < n; i++)
        dst[i] = (gint16) lp_qread_u16 (s + 2 * i);
      break;
    case LP_DTYPE_I32:
      for (gsize i = 0; i < n; i++)
        {
          gint32 v;
          memcpy (&v, s + 4 * i, 4);
          dst[i] = (float) v;
        }
      break;
    default:
      /* the block types: dtype_blocks.c */
      if (!lp_dequant_block32 (dtype, s, dst, n / info->block_size)
          && !lp_dequant_kblock (dtype, s, dst, n / info->block_size))
        g_assert_not_reached ();
    }
  return TRUE;
}

/* The plain types only: writing a block type is quantizing, which
 * compress/quant.c's lp_dtype_from_f32 adds on top of this. */
gboolean
lp_dtype_from_f32_plain (LpDType dtype, const float *src, void *dst, gsize n, GError **error)
{
  guint8 *d = dst;
  if (n == 0)
    return TRUE;
  switch (dtype)
    {
    case LP_DTYPE_F32:
      memcpy (dst, src, n * 4);
      return TRUE;
    case LP_DTYPE_F16:
      for (gsize i = 0; i < n; i++)
        {
          guint16 h = lp_f32_to_f16 (src[i]);
          d[2 * i] = h & 0xff;
          d[2 * i + 1] = h >> 8;
        }
      return TRUE;
    case LP_DTYPE_BF16:
      for (gsize i = 0; i < n; i++)
        {
          guint16 h = lp_f32_to_bf16 (src[i]);
          d[2 * i] = h & 0xff;
          d[2 * i + 1] = h >> 8;
        }
      return TRUE;
    default:
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "cannot convert to %s", lp_dtype_name (dtype));
      return FALSE;
    }
}
