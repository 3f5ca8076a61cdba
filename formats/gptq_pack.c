/* llmpress — GPTQ checkpoint tensors (AutoGPTQ's "gptq" checkpoint format,
 * as Hugging Face transformers, AutoGPTQ and vLLM read it) from and to the
 * integer grid (LpIntGrid, tensor.h).  For a linear layer of K inputs and N
 * outputs, b bits, G groups:
 *
 *   qweight  I32 [K*b/32, N]   column n: the codes of inputs 0..K-1 as one
 *                              little-endian bit stream, input k at bit k*b
 *                              (for b = 3 a code may straddle two words)
 *   qzeros   I32 [G, N*b/32]   row g: (zero - 1) of outputs 0..N-1, the same
 *                              way (the format stores zero points minus one)
 *   scales   F16 [G, N]
 *   g_idx    I32 [K]           the group of each input
 *
 * and w[n, k] = scales[g, n] * (code - (qzeros + 1)), g = g_idx[k].  The
 * "gptq_v2" format stores the zero points themselves. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include "gptq-pack.h"

/* The b-bit value at bit offset `bit` of a stream of 32-bit words read with
 * stride (words of one stream are `stride` apart). */
static guint32
stream_get (const guint32 *w, gsize stride, guint64 bit, int b)
{
  guint64 i = bit / 32, off = bit % 32;
  guint64 v = w[i * stride] >> off;
  if (off + b > 32)
    v |= (guint64) w[(i + 1) * stride] << (32 - off);
  return (guint32) v & ((1u << b) - 1);
}

static void
stream_put (guint32 *w, gsize stride, guint64 bit, int b, guint32 v)
{
  guint64 i = bit / 32, off = bit % 32;
  w[i * stride] |= v << off;
  if (off + b > 32)
    w[(i + 1) * stride] |= v >> (32 - off);
}

gboolean
lp_gptq_packable (const LpIntGrid *g, const char *name, GError **error)
{
  if ((g->cols * g->bits) % 32 != 0 || (g->rows * g->bits) % 32 != 0)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED,
                    "tensor %s: GPTQ packing needs inputs x bits and outputs x bits to be multiples of 32, found %" G_GINT64_FORMAT
                    " inputs and %" G_GINT64_FORMAT " outputs at %d bits",
                    name, g->cols, g->rows, g->bits);
      return FALSE;
    }
  for (gint64 i = 0; i < g->rows * g->n_groups; i++)
    if (g->zeros[i] == 0)
      {
        lp_set_error (error, LP_ERROR_UNSUPPORTED,
                      "tensor %s: row %" G_GINT64_FORMAT ": a zero point of 0, which the GPTQ format (zero - 1) cannot store",
                      name, i / g->n_groups);
        return FALSE;
      }
  return TRUE;
}

static LpTensor *
new_tensor (const char *prefix, const char *suffix, LpDType type, gint64 d0, gint64 d1, GError **error)
{
  g_autofree char *name = g_strconcat (prefix, suffix, NULL);
  gint64 shape[2] = { d0, d1 };
  return lp_tensor_new (name, type, d1 > 0 ? 2 : 1, shape, error);
}

gboolean
lp_gptq_pack (const LpIntGrid *g, const char *prefix, GPtrArray *out, GError **error)
{
  if (!lp_gptq_packable (g, prefix, error))
    return FALSE;
  gint64 N = g->rows, K = g->cols, G = g->n_groups;
  int b = g->bits;
  LpTensor *qweight = new_tensor (prefix, ".qweight", LP_DTYPE_I32, K * b / 32, N, error);
  LpTensor *qzeros = qweight ? new_tensor (prefix, ".qzeros", LP_DTYPE_I32, G, N * b / 32, error) : NULL;
  LpTensor *scales = qzeros ? new_tensor (prefix, ".scales", LP_DTYPE_F16, G, N, error) : NULL;
  LpTensor *g_idx = scales ? new_tensor (prefix, ".g_idx", LP_DTYPE_I32, K, 0, error) : NULL;
  if (g_idx == NULL)
    {
      lp_tensor_unref (qweight);
      lp_tensor_unref (qzeros);
      lp_tensor_unref (scales);
      return FALSE;
    }
  guint32 *qw = lp_tensor_data_mut (qweight), *qz = lp_tensor_data_mut (qzeros);
  guint16 *sc = lp_tensor_data_mut (scales);
  for (gint64 n = 0; n < N; n++)
    {
      for (gint64 k = 0; k < K; k++)
        stream_put (qw + n, N, (guint64) k * b, b, g->codes[n * K + k]);
      for (gint64 gi = 0; gi < G; gi++)
        {
          stream_put (qz + gi * (N * b / 32), 1, (guint64) n * b, b, g->zeros[n * G + gi] - 1u);
          sc[gi * N + n] = g->scales[n * G + gi];
        }
    }
  memcpy (lp_tensor_data_mut (g_idx), g->g_idx, sizeof (gint32) * K);
  g_ptr_array_add (out, qweight);
  g_ptr_array_add (out, qzeros);
  g_ptr_array_add (out, scales);
  g_ptr_array_add (out, g_idx);
  return TRUE;
}

/* t must be `type` with exactly `d0` x `d1` elements (d1 0: 1-D). */
static gboolean
check_tensor (const LpTensor *t, LpDType type, gint64 d0, gint64 d1, const char *where, GError **error)
{
  gboolean ok = t->dtype == type && t->n_dims == (d1 > 0 ? 2 : 1) && t->shape[0] == d0 && (d1 == 0 || t->shape[1] == d1);
  if (!ok)
    {
      g_autofree char *found = lp_tensor_shape_string (t);
      g_autofree char *want = d1 > 0 ? g_strdup_printf ("%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT, d0, d1)
                                     : g_strdup_printf ("%" G_GINT64_FORMAT, d0);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected %s %s, found %s %s", where, t->name,
                    lp_dtype_name (type), want, lp_dtype_name (t->dtype), found);
    }
  return ok;
}

LpIntGrid *
lp_gptq_unpack (const LpTensor *qweight, const LpTensor *qzeros, const LpTensor *scales, const LpTensor *g_idx,
                int bits, int group_size, gboolean symmetric, int zero_bias, const char *where, GError **error)
{
  if (qweight->n_dims != 2 || scales->n_dims != 2)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected 2 dimensions", where, qweight->name);
      return NULL;
    }
  gint64 N = qweight->shape[1], K = qweight->shape[0] * 32 / bits, G = scales->shape[0];
  if (!check_tensor (qweight, LP_DTYPE_I32, K * bits / 32, N, where, error)
      || !check_tensor (scales, LP_DTYPE_F16, G, N, where, error)
      || !check_tensor (qzeros, LP_DTYPE_I32, G, N * bits / 32, where, error)
      || !check_tensor (g_idx, LP_DTYPE_I32, K, 0, where, error))
    return NULL;
  g_autoptr (LpIntGrid) g = lp_int_grid_new (N, K, bits, group_size > 0 ? group_size : (int) K, symmetric, error);
  if (g == NULL)
    return NULL;
  const gint32 *gi_src = lp_tensor_data (g_idx);
  for (gint64 k = 0; k < K; k++)
    if (gi_src[k] < 0 || gi_src[k] >= G)
      {
        lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: element %" G_GINT64_FORMAT ": expected a group below %" G_GINT64_FORMAT ", found %d",
                      where, g_idx->name, k, G, gi_src[k]);
        return NULL;
      }
  /* g_idx may name fewer groups than scales holds (act-order files keep
   * ceil(K / group_size) rows): the grid takes scales' count. */
  if (G != g->n_groups)
    {
      g_free (g->scales);
      g_free (g->zeros);
      g->n_groups = (int) G;
      g->scales = g_new0 (guint16, N * G);
      g->zeros = g_new0 (guint8, N * G);
    }
  memcpy (g->g_idx, gi_src, sizeof (gint32) * K);
  const guint32 *qw = lp_tensor_data (qweight), *qz = lp_tensor_data (qzeros);
  const guint16 *sc = lp_tensor_data (scales);
  for (gint64 n = 0; n < N; n++)
    {
      for (gint64 k = 0; k < K; k++)
        g->codes[n * K + k] = (guint8) stream_get (qw + n, N, (guint64) k * bits, bits);
      for (gint64 gi = 0; gi < G; gi++)
        {
          /* Stored minus one; a stored 2^b - 1 (a writer's zero of 0
           * wrapped) means 2^b, which 8 bits cannot hold. */
          guint32 z = stream_get (qz + gi * (N * bits / 32), 1, (guint64) n * bits, bits) + (guint32) zero_bias;
          if (z > 255)
            {
              lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: tensor %s: group %" G_GINT64_FORMAT ", output %" G_GINT64_FORMAT
                            ": a zero point of 256 (a wrapped 0), which is not supported", where, qzeros->name, gi, n);
              return NULL;
            }
          g->zeros[n * G + gi] = (guint8) z;
          g->scales[n * G + gi] = sc[gi * N + n];
        }
    }
  return g_steal_pointer (&g);
}

LpIntGrid *
lp_int_grid_permute_rows (const LpIntGrid *g, gint64 n_heads, gint64 head_dim, gboolean to_hf)
{
  LpIntGrid *r = lp_int_grid_new (g->rows, g->cols, g->bits, g->group_size, g->symmetric, NULL);
  g_free (r->scales);
  g_free (r->zeros);
  r->n_groups = g->n_groups;
  r->scales = g_memdup2 (g->scales, sizeof (guint16) * g->rows * g->n_groups);
  r->zeros = g_memdup2 (g->zeros, (gsize) g->rows * g->n_groups);
  memcpy (r->codes, g->codes, (gsize) (g->rows * g->cols));
  memcpy (r->g_idx, g->g_idx, sizeof (gint32) * g->cols);
  lp_arch_permute_qk (r->codes, n_heads, head_dim, (gsize) g->cols, to_hf);
  lp_arch_permute_qk (r->scales, n_heads, head_dim, sizeof (guint16) * g->n_groups, to_hf);
  lp_arch_permute_qk (r->zeros, n_heads, head_dim, (gsize) g->n_groups, to_hf);
  return r;
}

/* ---- compressed-tensors "pack-quantized" (llm-compressor, vLLM) ----
 *
 * For a linear layer of K inputs and N outputs at b bits (4 or 8), with
 * p = 32 / b values per word and G groups:
 *
 *   weight_packed      I32 [N, ceil(K/p)]  row n: value k at bit (k % p) * b
 *                                          of word k / p (rows zero-padded)
 *   weight_scale       F16 [N, G]
 *   weight_zero_point  I32 [ceil(N/p), G]  column g: output n at bit
 *                                          (n % p) * b of word n / p
 *                                          (asymmetric grids only)
 *   weight_shape       I64 [2]             { N, K }
 *   weight_g_idx       I32 [K]             when the groups are not k / group
 *
 * The stored values are the signed codes plus 2^(b-1), so with our unsigned
 * codes c and zero points z (w = s * (c - z)) the words hold c and z as they
 * are; a symmetric grid's zero point is 2^(b-1), a signed zero point of 0. */

gboolean
lp_ct_packable (const LpIntGrid *g, const char *name, GError **error)
{
  if (g->bits != 4 && g->bits != 8)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "tensor %s: compressed-tensors pack-quantized holds 4 or 8 bits, found %d",
                    name, g->bits);
      return FALSE;
    }
  int half = 1 << (g->bits - 1);
  for (gint64 i = 0; g->symmetric && i < g->rows * g->n_groups; i++)
    if (g->zeros[i] != half)
      {
        lp_set_error (error, LP_ERROR_UNSUPPORTED, "tensor %s: row %" G_GINT64_FORMAT ": a symmetric grid with zero point %d, "
                      "expected %d", name, i / g->n_groups, g->zeros[i], half);
        return FALSE;
      }
  return TRUE;
}

gboolean
lp_ct_pack (const LpIntGrid *g, const char *prefix, GPtrArray *out, GError **error)
{
  if (!lp_ct_packable (g, prefix, error))
    return FALSE;
  gint64 N = g->rows, K = g->cols, G = g->n_groups;
  int b = g->bits, p = 32 / b;
  g_autoptr (GPtrArray) parts = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  LpTensor *packed = new_tensor (prefix, ".weight_packed", LP_DTYPE_I32, N, (K + p - 1) / p, error);
  if (packed == NULL)
    return FALSE;
  g_ptr_array_add (parts, packed);
  guint32 *pw = lp_tensor_data_mut (packed);
  gint64 words = (K + p - 1) / p;
  for (gint64 n = 0; n < N; n++)
    for (gint64 k = 0; k < K; k++)
      stream_put (pw + n * words, 1, (guint64) (k / p) * 32 + (guint64) (k % p) * b, b, g->codes[n * K + k]);

  LpTensor *scale = new_tensor (prefix, ".weight_scale", LP_DTYPE_F16, N, G, error);
  if (scale == NULL)
    return FALSE;
  g_ptr_array_add (parts, scale);
  memcpy (lp_tensor_data_mut (scale), g->scales, sizeof (guint16) * N * G);

  if (!g->symmetric)
    {
      LpTensor *zp = new_tensor (prefix, ".weight_zero_point", LP_DTYPE_I32, (N + p - 1) / p, G, error);
      if (zp == NULL)
        return FALSE;
      g_ptr_array_add (parts, zp);
      guint32 *zw = lp_tensor_data_mut (zp);
      for (gint64 gi = 0; gi < G; gi++)
        for (gint64 n = 0; n < N; n++)
          stream_put (zw + gi, G, (guint64) (n / p) * 32 + (guint64) (n % p) * b, b, g->zeros[n * G + gi]);
    }

  LpTensor *shape = new_tensor (prefix, ".weight_shape", LP_DTYPE_I64, 2, 0, error);
  if (shape == NULL)
    return FALSE;
  g_ptr_array_add (parts, shape);
  gint64 *sh = lp_tensor_data_mut (shape);
  sh[0] = N;
  sh[1] = K;

  if (!lp_int_grid_plain_g_idx (g))
    {
      LpTensor *gidx = new_tensor (prefix, ".weight_g_idx", LP_DTYPE_I32, K, 0, error);
      if (gidx == NULL)
        return FALSE;
      g_ptr_array_add (parts, gidx);
      memcpy (lp_tensor_data_mut (gidx), g->g_idx, sizeof (gint32) * K);
    }
  for (guint i = 0; i < parts->len; i++)
    g_ptr_array_add (out, lp_tensor_ref (parts->pdata[i]));
  return TRUE;
}

LpIntGrid *
lp_ct_unpack (const LpTensor *packed, const LpTensor *scale, const LpTensor *zero_point, const LpTensor *shape,
              const LpTensor *g_idx, int bits, int group_size, gboolean symmetric, const char *where, GError **error)
{
  if (bits < 2 || bits > 8 || shape->n_dims != 1 || shape->shape[0] != 2
      || (shape->dtype != LP_DTYPE_I64 && shape->dtype != LP_DTYPE_I32) || scale->n_dims != 2)
    {
      g_autofree char *found = lp_tensor_shape_string (shape);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected an I64 or I32 shape of 2 values and %d bits in 2..8, "
                    "found %s %s", where, shape->name, bits, lp_dtype_name (shape->dtype), found);
      return NULL;
    }
  const void *sd = lp_tensor_data (shape);
  gint64 N = shape->dtype == LP_DTYPE_I64 ? ((const gint64 *) sd)[0] : ((const gint32 *) sd)[0];
  gint64 K = shape->dtype == LP_DTYPE_I64 ? ((const gint64 *) sd)[1] : ((const gint32 *) sd)[1];
  int p = 32 / bits;
  gint64 G = scale->shape[1];
  if (N <= 0 || K <= 0 || G <= 0 || !check_tensor (packed, LP_DTYPE_I32, N, (K + p - 1) / p, where, error)
      || (zero_point && !check_tensor (zero_point, LP_DTYPE_I32, (N + p - 1) / p, G, where, error))
      || (g_idx && !check_tensor (g_idx, LP_DTYPE_I32, K, 0, where, error)))
    {
      if (error && *error == NULL)
        lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected a positive shape, found %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT,
                      where, shape->name, N, K);
      return NULL;
    }
  g_autofree float *sf = lp_tensor_dup_f32 (scale, error);
  if (sf == NULL || !check_tensor (scale, scale->dtype, N, G, where, error))
    return NULL;
  if (group_size <= 0)
    group_size = (int) K;
  g_autoptr (LpIntGrid) g = lp_int_grid_new (N, K, bits, group_size, symmetric, error);
  if (g == NULL)
    return NULL;
  if (G != g->n_groups && g_idx == NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected %d groups of %d for %" G_GINT64_FORMAT " inputs, found %" G_GINT64_FORMAT,
                    where, scale->name, g->n_groups, group_size, K, G);
      return NULL;
    }
  if (g_idx)
    {
      const gint32 *src = lp_tensor_data (g_idx);
      for (gint64 k = 0; k < K; k++)
        if (src[k] < 0 || src[k] >= G)
          {
            lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: element %" G_GINT64_FORMAT ": expected a group below %" G_GINT64_FORMAT
                          ", found %d", where, g_idx->name, k, G, src[k]);
            return NULL;
          }
      memcpy (g->g_idx, src, sizeof (gint32) * K);
      g_free (g->scales);
      g_free (g->zeros);
      g->n_groups = (int) G;
      g->scales = g_new0 (guint16, N * G);
      g->zeros = g_new0 (guint8, N * G);
    }
  const guint32 *pw = lp_tensor_data (packed);
  gint64 words = (K + p - 1) / p;
  for (gint64 n = 0; n < N; n++)
    for (gint64 k = 0; k < K; k++)
      g->codes[n * K + k] = (guint8) stream_get (pw + n * words, 1, (guint64) (k / p) * 32 + (guint64) (k % p) * bits, bits);
  const guint32 *zw = zero_point ? lp_tensor_data (zero_point) : NULL;
  for (gint64 n = 0; n < N; n++)
    for (gint64 gi = 0; gi < G; gi++)
      {
        g->scales[n * G + gi] = lp_f32_to_f16 (sf[n * G + gi]);
        g->zeros[n * G + gi] = zw ? (guint8) stream_get (zw + gi, G, (guint64) (n / p) * 32 + (guint64) (n % p) * bits, bits)
                                  : (guint8) (1 << (bits - 1));
      }
  return g_steal_pointer (&g);
}
