/* llmpress prune plugin — slicing tensors for the structural passes. */
#include "config.h"

#include <string.h>

#include "structure.h"

/* The kept entries of a [rows, cols] array of `size`-byte elements. */
static void
slice_elements (const guint8 *src, guint8 *dst, gint64 rows, gint64 cols, int dim, const guint8 *keep, gsize size)
{
  gsize o = 0;
  for (gint64 r = 0; r < rows; r++)
    for (gint64 c = 0; c < cols; c++)
      if (keep[dim == 0 ? r : c])
        {
          memcpy (dst + o, src + (gsize) (r * cols + c) * size, size);
          o += size;
        }
}

static GBytes *
slice_mask (const LpTensor *t, gint64 rows, gint64 cols, int dim, const guint8 *keep, gint64 n_out)
{
  g_autofree guint8 *bits = g_new (guint8, rows * cols), *kept = g_new (guint8, n_out);
  for (gint64 i = 0; i < rows * cols; i++)
    bits[i] = !lp_tensor_mask_keeps (t, i);
  slice_elements (bits, kept, rows, cols, dim, keep, 1);
  return lp_mask_from_pruned (kept, n_out);
}

LpTensor *
prune_tensor_slice (const LpTensor *t, int dim, const guint8 *keep, gint64 n_keep, GError **error)
{
  gint64 rows = t->shape[0], cols = t->n_dims == 2 ? t->shape[1] : 1;
  g_return_val_if_fail (t->n_dims <= 2 && (dim == 0 || t->n_dims == 2), NULL);
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  if (v == NULL)
    return NULL;
  gint64 shape[2] = { t->shape[0], cols };
  shape[dim] = n_keep;
  gint64 n_out = shape[0] * (t->n_dims == 2 ? shape[1] : 1);
  g_autofree float *out = g_new (float, MAX (n_out, 1));
  slice_elements ((const guint8 *) v, (guint8 *) out, rows, cols, dim, keep, sizeof (float));
  LpDType dtype = t->dtype == LP_DTYPE_F16 || t->dtype == LP_DTYPE_BF16 ? t->dtype : LP_DTYPE_F32;
  g_autoptr (LpTensor) s = lp_tensor_new (t->name, dtype, t->n_dims, shape, error);
  if (s == NULL || !lp_dtype_from_f32 (dtype, out, lp_tensor_data_mut (s), n_out, error))
    return NULL;
  if (lp_tensor_mask (t) == NULL)
    return g_steal_pointer (&s);
  g_autoptr (GBytes) mask = slice_mask (t, rows, cols, dim, keep, n_out);
  return lp_tensor_with_mask (s, mask, error);
}

void
prune_meta_tensor_changed (LpMeta *meta, const LpTensor *t)
{
  g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
  if (lp_tensor_mask (t) != NULL)
    lp_sparsity_record_tensor (meta, t);
  else
    lp_meta_remove (meta, key);
}

void
prune_keep_highest (const double *scores, int n, int k, guint8 *keep)
{
  /* The n - k lowest go: the same selection (and tie rule) as the weight masks. */
  g_autofree float *s = g_new (float, n);
  for (int i = 0; i < n; i++)
    s[i] = (float) scores[i];
  lp_select_lowest (s, n, n - k, keep);
  for (int i = 0; i < n; i++)
    keep[i] = !keep[i];
}
