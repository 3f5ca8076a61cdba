/* llmpress — the masked form: another form plus a fixed keep-mask (form.h).
 *
 * The mask holds one bit an element, row-major, bit (i % 8) of byte i / 8;
 * a 0 bit marks a pruned element, which is 0 in the values and stays 0
 * through later passes (a quantizer keeps it exactly; training gets the
 * mask as the keep-mask of the base's W-shaped parameter, which the
 * optimizer multiplies the gradient by, and the trained tensor must come
 * back with every pruned weight exactly 0, on the same mask).  Everything else is the base's: its
 * materialization (already zero where pruned), its matmul, its bytes.
 * Written as the base writes itself (files hold the zeros densely) plus
 * llmpress.sparsity.tensor.<name> = the pruned fraction; a reader rebuilds
 * the mask from the zeros when at least that fraction is zero (a runtime
 * that knows no masks reads an ordinary dense weight).  The artifact cache
 * (LpSaveOptions.exact_forms) also writes the mask itself, as
 * <name>.keep_mask (i8, the bits as held): weights a later quantizer
 * rounded to 0 are zeros the mask keeps, which the zeros cannot tell. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

typedef struct {
  LpForm parent;
  LpForm *base; /* the form of the values (the shared dense or block one for plain values) */
  GBytes *mask;
} MaskedForm;

extern const LpFormClass lp_form_masked_class;

#define BASE(form) (((const MaskedForm *) (form))->base)

LpForm *
lp_form_masked_new (LpForm *base, GBytes *mask)
{
  MaskedForm *f = lp_form_alloc (&lp_form_masked_class, sizeof (MaskedForm));
  f->base = lp_form_ref (base);
  f->mask = g_bytes_ref (mask);
  return &f->parent;
}

static void
masked_finalize (LpForm *form)
{
  MaskedForm *f = (MaskedForm *) form;
  lp_form_unref (f->base);
  g_bytes_unref (f->mask);
}

static gboolean
masked_materialize_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  return BASE (form)->klass->materialize_rows (BASE (form), t, r0, n, out, error);
}

static guint64
masked_storage_bytes (const LpForm *form, const LpTensor *t)
{
  return BASE (form)->klass->storage_bytes (BASE (form), t);
}

static gboolean
masked_is_quantized (const LpForm *form, const LpTensor *t)
{
  const LpFormClass *k = BASE (form)->klass;
  return k->is_quantized != NULL && k->is_quantized (BASE (form), t);
}

static GBytes *
masked_mask (const LpForm *form)
{
  return ((const MaskedForm *) form)->mask;
}

static const LpIntGrid *
masked_int_grid (const LpForm *form)
{
  const LpFormClass *k = BASE (form)->klass;
  return k->int_grid ? k->int_grid (BASE (form)) : NULL;
}

/* A new mask replaces this one over the same base. */
static LpForm *
masked_with_mask (LpForm *form, GBytes *mask)
{
  return mask ? lp_form_masked_new (BASE (form), mask) : lp_form_ref (BASE (form));
}

static gboolean
mask_keeps (const MaskedForm *f, gint64 e)
{
  const guint8 *m = g_bytes_get_data (f->mask, NULL);
  return (m[e / 8] >> (e % 8)) & 1;
}

/* Whether trainable parameter i of w holds W's values (W-shaped): the
 * dense, block or grid latent weights.  A quantized base training its
 * scales has none (the fixed codes keep a pruned weight at 0). */
static gboolean
param_is_weight (const LpFormWeights *w, int i)
{
  return (w->how == LP_FORM_TRAIN_VALUES || !lp_tensor_is_quantized (w->src))
         && lp_ctensor_n_elements (w->params[i]) == lp_tensor_n_elements (w->src);
}

/* The base's parameters; trained, the weight-shaped one gets the mask as
 * its keep-mask (f32 0/1), which the optimizer multiplies the gradient by. */
static gboolean
masked_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error)
{
  if (!BASE (form)->klass->upload (BASE (form), t, w, train, error))
    return FALSE;
  if (!train)
    return TRUE;
  gint64 n = lp_tensor_n_elements (t);
  g_autofree float *keep = g_new (float, n);
  for (gint64 e = 0; e < n; e++)
    keep[e] = mask_keeps ((const MaskedForm *) form, e) ? 1.0f : 0.0f;
  for (int i = 0; i < w->n_trainable; i++)
    if (param_is_weight (w, i))
      {
        w->keep[i] = lp_ctensor_new (w->be, LP_DTYPE_F32, t->n_dims, t->shape, t->name, error);
        if (w->keep[i] == NULL)
          return FALSE;
        lp_ctensor_write (w->keep[i], 0, keep, w->keep[i]->n_bytes);
        w->bytes += w->keep[i]->n_bytes;
      }
  return TRUE;
}

/* The base's trained tensor on the same mask.  Every pruned weight must
 * have come back exactly 0 (the optimizer multiplied by the keep-mask): a
 * weight that moved is an error, never silently re-pruned. */
static LpTensor *
masked_trained (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error)
{
  const LpForm *base = BASE (form);
  g_autoptr (LpTensor) trained = base->klass->trained ? base->klass->trained (base, t, w, error)
                                                      : lp_form_values_trained (base, t, w, error);
  g_autofree float *v = trained ? lp_tensor_dup_f32 (trained, error) : NULL;
  if (v == NULL)
    return NULL;
  gint64 n = lp_tensor_n_elements (t);
  for (gint64 e = 0; e < n; e++)
    if (v[e] != 0.0f && !mask_keeps ((const MaskedForm *) form, e))
      {
        lp_set_error (error, LP_ERROR_INVALID,
                      "tensor %s: trained: pruned element %" G_GINT64_FORMAT " is %g, expected exactly 0 (the keep-mask not applied?)",
                      t->name, e, (double) v[e]);
        return NULL;
      }
  return lp_tensor_with_mask (trained, ((const MaskedForm *) form)->mask, error);
}

static LpCTensor *
masked_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc,
               GError **error)
{
  return BASE (form)->klass->matmul (BASE (form), w, g, x, acc, error);
}

/* The base's gradient of W times the mask: pruned weights stay 0. */
static void
masked_map_grad (const LpForm *form, const LpFormWeights *w, int i, float *grad)
{
  const LpFormClass *k = BASE (form)->klass;
  if (k->map_grad)
    k->map_grad (BASE (form), w, i, grad);
  if (!param_is_weight (w, i))
    return;
  gint64 n = lp_tensor_n_elements (w->src);
  for (gint64 e = 0; e < n; e++)
    if (!mask_keeps ((const MaskedForm *) form, e))
      grad[e] = 0.0f;
}

static GPtrArray *
masked_save_tensors (const LpForm *form, LpTensor *t, GError **error)
{
  const LpFormClass *k = BASE (form)->klass;
  if (k->save_tensors)
    return k->save_tensors (BASE (form), t, error);
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_ptr_array_add (out, lp_tensor_ref (t));
  return out;
}

static void
masked_save_meta (const LpForm *form, const LpTensor *t, LpMeta *meta)
{
  lp_sparsity_record_tensor (meta, t);
  const LpFormClass *k = BASE (form)->klass;
  if (k->save_meta)
    k->save_meta (BASE (form), t, meta);
}

GBytes *
lp_mask_from_nonzero (const float *values, gint64 n)
{
  guint8 *m = g_malloc0 ((n + 7) / 8);
  for (gint64 i = 0; i < n; i++)
    if (values[i] != 0.0f)
      m[i / 8] |= (guint8) (1u << (i % 8));
  return g_bytes_new_take (m, (n + 7) / 8);
}

#define KEEP_MASK_SUFFIX ".keep_mask"

LpTensor *
lp_tensor_mask_part (const LpTensor *t)
{
  GBytes *mask = lp_tensor_mask (t);
  if (mask == NULL)
    return NULL;
  g_autofree char *name = g_strconcat (t->name, KEEP_MASK_SUFFIX, NULL);
  gint64 n = (gint64) g_bytes_get_size (mask);
  return lp_tensor_new_from_bytes (name, LP_DTYPE_I8, 1, &n, mask, NULL);
}

/* Each <name>.keep_mask becomes <name>'s mask (and goes). */
static gboolean
restore_mask_parts (LpModel *model, GError **error)
{
  const char *src = lp_model_source (model) ? lp_model_source (model) : "model";
  g_autoptr (GPtrArray) parts = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    if (g_str_has_suffix (lp_model_tensor_at (model, i)->name, KEEP_MASK_SUFFIX))
      g_ptr_array_add (parts, g_strdup (lp_model_tensor_at (model, i)->name));
  for (guint i = 0; i < parts->len; i++)
    {
      const char *part = parts->pdata[i];
      g_autofree char *name = g_strndup (part, strlen (part) - strlen (KEEP_MASK_SUFFIX));
      LpTensor *t = lp_model_tensor (model, name), *m = lp_model_tensor (model, part);
      if (t == NULL || m->dtype != LP_DTYPE_I8)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected an i8 keep-mask of tensor %s, found %s",
                        src, part, name, t == NULL ? "no such tensor" : lp_dtype_name (m->dtype));
          return FALSE;
        }
      g_autoptr (GBytes) mask = g_bytes_new (lp_tensor_data (m), lp_tensor_n_bytes (m));
      g_autoptr (LpTensor) masked = lp_tensor_with_mask (t, mask, error);
      if (masked == NULL)
        {
          lp_error_prefix (error, src);
          return FALSE;
        }
      lp_model_set_tensor (model, masked);
      lp_model_remove_tensor (model, part);
    }
  return TRUE;
}

/* Each tensor with a recorded sparsity gets its mask back: the one
 * written, or from its zeros. */
static gboolean
masked_restore (LpModel *model, GError **error)
{
  if (!restore_mask_parts (model, error))
    return FALSE;
  LpMeta *meta = lp_model_meta (model);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
      double recorded;
      if (lp_tensor_mask (t) != NULL || !lp_meta_get_float (meta, key, &recorded, NULL))
        continue;
      g_autofree float *v = lp_tensor_dup_f32 (t, error);
      if (v == NULL)
        return FALSE;
      g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, lp_tensor_n_elements (t));
      g_autoptr (LpTensor) masked = lp_tensor_with_mask (t, mask, error);
      if (masked == NULL)
        return FALSE;
      /* A later step that did not keep the zeros exact (a quantizer with an
       * offset) leaves fewer zeros than recorded: the mask is unknown then. */
      if (lp_tensor_sparsity (masked) + 1e-6 < recorded)
        continue;
      lp_model_set_tensor (model, masked);
    }
  return TRUE;
}

const LpFormClass lp_form_masked_class = {
  .name = "masked",
  .finalize = masked_finalize,
  .materialize_rows = masked_materialize_rows,
  .storage_bytes = masked_storage_bytes,
  .is_quantized = masked_is_quantized,
  .mask = masked_mask,
  .int_grid = masked_int_grid,
  .with_mask = masked_with_mask,
  .save_tensors = masked_save_tensors,
  .save_meta = masked_save_meta,
  .restore = masked_restore,
  .upload = masked_upload,
  .matmul = masked_matmul,
  .map_grad = masked_map_grad,
  .trained = masked_trained,
};
