/* llmpress — named tensors over GBytes (owned memory or a mapped file slice). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"

gboolean
lp_tensor_shape_bytes (const char *what, LpDType dtype, int n_dims, const gint64 *shape,
                       guint64 *out_bytes, GError **error)
{
  const LpDTypeInfo *info = lp_dtype_info (dtype);
  if (info == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "tensor %s: unknown type id %d", what, (int) dtype);
      return FALSE;
    }
  if (n_dims < 1 || n_dims > LP_MAX_DIMS)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "tensor %s: expected 1 to %d dimensions, found %d",
                    what, LP_MAX_DIMS, n_dims);
      return FALSE;
    }
  guint64 n_rows = 1;
  for (int i = 0; i < n_dims; i++)
    {
      if (shape[i] < 0)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "tensor %s: dimension %d is negative (%" G_GINT64_FORMAT ")",
                        what, i, shape[i]);
          return FALSE;
        }
      if (i < n_dims - 1 && !g_uint64_checked_mul (&n_rows, n_rows, (guint64) shape[i]))
        goto overflow;
    }
  guint64 row_bytes, bytes;
  GError *local = NULL;
  if (!lp_dtype_row_bytes (dtype, (guint64) shape[n_dims - 1], &row_bytes, &local))
    {
      lp_set_error (error, local->code, "tensor %s: %s", what, local->message);
      g_error_free (local);
      return FALSE;
    }
  if (!g_uint64_checked_mul (&bytes, n_rows, row_bytes) || bytes > G_MAXSIZE / 2)
    goto overflow;
  *out_bytes = bytes;
  return TRUE;

overflow:
  lp_set_error (error, LP_ERROR_FORMAT, "tensor %s: dimensions overflow (absurd shape)", what);
  return FALSE;
}

static LpTensor *
tensor_alloc (const char *name, LpDType dtype, int n_dims, const gint64 *shape, GBytes *data)
{
  LpTensor *t = g_new0 (LpTensor, 1);
  t->ref_count = 1;
  t->name = g_strdup (name);
  t->dtype = dtype;
  t->n_dims = n_dims;
  for (int i = 0; i < n_dims; i++)
    t->shape[i] = shape[i];
  t->data = data;
  return t;
}

LpTensor *
lp_tensor_new (const char *name, LpDType dtype, int n_dims, const gint64 *shape, GError **error)
{
  guint64 bytes;
  if (!lp_tensor_shape_bytes (name, dtype, n_dims, shape, &bytes, error))
    return NULL;
  return tensor_alloc (name, dtype, n_dims, shape, g_bytes_new_take (g_malloc0 (bytes), bytes));
}

/* The alignment a pointer to elements (or ggml blocks) of `info` needs: the
 * largest power of two dividing its size, at most 8 (a C struct's size is a
 * multiple of its alignment, so a block holding an f16 or f32 scale is
 * covered too). */
static gsize
dtype_alignment (const LpDTypeInfo *info)
{
  gsize a = 1;
  while (a < 8 && info->type_size % (a * 2) == 0)
    a *= 2;
  return a;
}

LpTensor *
lp_tensor_new_from_bytes (const char *name, LpDType dtype, int n_dims, const gint64 *shape,
                          GBytes *data, GError **error)
{
  guint64 bytes;
  if (!lp_tensor_shape_bytes (name, dtype, n_dims, shape, &bytes, error))
    return NULL;
  if (g_bytes_get_size (data) != bytes)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "tensor %s: shape and type need %" G_GUINT64_FORMAT " bytes, found %" G_GSIZE_FORMAT,
                    name, bytes, g_bytes_get_size (data));
      return NULL;
    }
  /* Every reader hands its mapped file slices through here: a safetensors
   * header of odd length or a GGUF with general.alignment = 1 puts data at
   * addresses where loading a float is undefined behaviour, so such data is
   * copied to (malloc-aligned) memory of its own. */
  gconstpointer p = g_bytes_get_data (data, NULL);
  if (p != NULL && (guintptr) p % dtype_alignment (lp_dtype_info (dtype)) != 0)
    return tensor_alloc (name, dtype, n_dims, shape, g_bytes_new (p, bytes));
  return tensor_alloc (name, dtype, n_dims, shape, g_bytes_ref (data));
}

LpTensor *
lp_tensor_new_f32 (const char *name, int n_dims, const gint64 *shape, const float *values,
                   GError **error)
{
  LpTensor *t = lp_tensor_new (name, LP_DTYPE_F32, n_dims, shape, error);
  if (t != NULL)
    memcpy (lp_tensor_data_mut (t), values, lp_tensor_n_bytes (t));
  return t;
}

LpTensor *
lp_tensor_ref (LpTensor *t)
{
  g_return_val_if_fail (t != NULL, NULL);
  g_atomic_int_inc (&t->ref_count);
  return t;
}

void
lp_tensor_unref (LpTensor *t)
{
  if (t == NULL || !g_atomic_int_dec_and_test (&t->ref_count))
    return;
  g_bytes_unref (t->data);
  if (t->form)
    lp_form_unref (t->form);
  g_free (t->name);
  g_free (t);
}

gint64
lp_tensor_n_elements (const LpTensor *t)
{
  gint64 n = 1;
  for (int i = 0; i < t->n_dims; i++)
    n *= t->shape[i];
  return n;
}

gsize
lp_tensor_n_bytes (const LpTensor *t)
{
  return g_bytes_get_size (t->data);
}

gint64
lp_tensor_row_length (const LpTensor *t)
{
  return t->shape[t->n_dims - 1];
}

gint64
lp_tensor_n_rows (const LpTensor *t)
{
  gint64 n = 1;
  for (int i = 0; i < t->n_dims - 1; i++)
    n *= t->shape[i];
  return n;
}

const void *
lp_tensor_data (const LpTensor *t)
{
  return g_bytes_get_data (t->data, NULL);
}

void *
lp_tensor_data_mut (LpTensor *t)
{
  /* Tensors from lp_tensor_new own their GBytes; writing through is the
   * owner's business (documented in the header). */
  return (void *) g_bytes_get_data (t->data, NULL);
}

float *
lp_tensor_dup_f32 (const LpTensor *t, GError **error)
{
  gint64 n = lp_tensor_n_elements (t);
  float *out = g_try_new (float, MAX (n, 1));
  if (out == NULL)
    {
      lp_set_error (error, LP_ERROR_FAILED, "tensor %s: out of memory for %" G_GINT64_FORMAT " floats",
                    t->name, n);
      return NULL;
    }
  if (!lp_dtype_to_f32 (t->dtype, lp_tensor_data (t), out, n, error))
    {
      lp_error_prefix (error, t->name);
      g_free (out);
      return NULL;
    }
  return out;
}

/* f32 into f16 or bf16 (little-endian) without ever making inf of a finite
 * value: refused (naming the tensor, the element and its value) or clamped
 * to the largest finite value.  Non-finite inputs are refused. */
static gboolean
to_half (const LpTensor *t, LpDType dtype, const float *f, guint8 *d, gint64 n, LpOverflow overflow,
         guint64 *n_clamped, GError **error)
{
  const gboolean bf = dtype == LP_DTYPE_BF16;
  const guint16 inf = bf ? 0x7f80 : 0x7c00, largest = inf - 1;
  for (gint64 i = 0; i < n; i++)
    {
      guint16 h = bf ? lp_f32_to_bf16 (f[i]) : lp_f32_to_f16 (f[i]);
      if ((h & 0x7fff) >= inf)
        {
          if (!isfinite (f[i]))
            {
              lp_set_error (error, LP_ERROR_INVALID,
                            "tensor %s: element %" G_GINT64_FORMAT ": expected a finite number, found %s (the model is broken; f32 keeps it as it is)",
                            t->name, i, isnan (f[i]) ? "nan" : f[i] > 0 ? "inf" : "-inf");
              return FALSE;
            }
          if (overflow != LP_OVERFLOW_CLAMP)
            {
              lp_set_error (error, LP_ERROR_INVALID,
                            "tensor %s: element %" G_GINT64_FORMAT ": expected a value within %s's range (|x| <= %g), found %.9g "
                            "(clamp it with --f16-overflow=clamp or f16_overflow=clamp)",
                            t->name, i, lp_dtype_name (dtype), bf ? 3.3895313892515355e38 : 65504.0, f[i]);
              return FALSE;
            }
          h = largest | (f[i] < 0 ? 0x8000 : 0);
          if (n_clamped != NULL)
            (*n_clamped)++;
        }
      d[2 * i] = h & 0xff;
      d[2 * i + 1] = h >> 8;
    }
  return TRUE;
}

LpTensor *
lp_tensor_convert_range (LpTensor *t, LpDType dtype, LpOverflow overflow, guint64 *n_clamped, GError **error)
{
  return lp_tensor_convert_with (t, dtype, lp_dtype_from_f32_plain, overflow, n_clamped, error);
}

LpTensor *
lp_tensor_convert_with (LpTensor *t, LpDType dtype, LpDTypeEncode encode, LpOverflow overflow, guint64 *n_clamped,
                        GError **error)
{
  if (t->dtype == dtype)
    return lp_tensor_ref (t);
  g_autofree float *f = lp_tensor_dup_f32 (t, error);
  if (f == NULL)
    return NULL;
  LpTensor *out = lp_tensor_new (t->name, dtype, t->n_dims, t->shape, error);
  if (out == NULL)
    return NULL;
  gboolean ok = dtype == LP_DTYPE_F16 || dtype == LP_DTYPE_BF16
                ? to_half (t, dtype, f, lp_tensor_data_mut (out), lp_tensor_n_elements (t), overflow, n_clamped, error)
                : encode (dtype, f, lp_tensor_data_mut (out), lp_tensor_n_elements (t), error);
  if (!ok)
    {
      lp_tensor_unref (out);
      return NULL;
    }
  return out;
}

LpTensor *
lp_tensor_rename (LpTensor *t, const char *name)
{
  LpTensor *r = tensor_alloc (name, t->dtype, t->n_dims, t->shape, g_bytes_ref (t->data));
  r->form = t->form ? lp_form_ref (t->form) : NULL;
  return r;
}

LpTensor *
lp_tensor_with_data (LpTensor *t, GBytes *data)
{
  g_return_val_if_fail (g_bytes_get_size (data) == g_bytes_get_size (t->data), NULL);
  LpTensor *r = tensor_alloc (t->name, t->dtype, t->n_dims, t->shape, g_bytes_ref (data));
  r->form = t->form ? lp_form_ref (t->form) : NULL;
  return r;
}

LpTensor *
lp_tensor_with_form (LpTensor *t, LpForm *form)
{
  LpTensor *r = tensor_alloc (t->name, t->dtype, t->n_dims, t->shape, g_bytes_ref (t->data));
  r->form = form ? lp_form_ref (form) : NULL;
  return r;
}

char *
lp_tensor_shape_string (const LpTensor *t)
{
  GString *s = g_string_new (NULL);
  for (int i = 0; i < t->n_dims; i++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? "x" : "", t->shape[i]);
  return g_string_free (s, FALSE);
}
