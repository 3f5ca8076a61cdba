/* llmpress — weight forms: the registration table and the dispatch every
 * caller goes through (form.h).  Nothing here knows any one form. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

/* ---- the registration table ----
 *
 * A new form is one file, model/form_<name>.c, defining its class, plus one
 * line below and one in pipeline/Makefile.inc.  The order is the order in
 * which forms are rebuilt after reading a file: a form that wraps another
 * (adapter over a masked base) comes after the ones it may wrap. */
extern const LpFormClass lp_form_dense_class;
extern const LpFormClass lp_form_blocks_class;
extern const LpFormClass lp_form_grid_class;
extern const LpFormClass lp_form_masked_class;
extern const LpFormClass lp_form_low_rank_class;
extern const LpFormClass lp_form_adapter_class;
extern const LpFormClass lp_form_codebook_class;

static const LpFormClass *const form_classes[] = {
  &lp_form_dense_class,
  &lp_form_blocks_class,
  &lp_form_grid_class,
  &lp_form_masked_class,
  &lp_form_low_rank_class,
  &lp_form_adapter_class,
  &lp_form_codebook_class,
  NULL,
};

/* The forms of tensors without one (t->form == NULL), by their dtype. */
extern LpForm lp_form_dense, lp_form_blocks;

const LpFormClass *const *
lp_form_classes (void)
{
  return form_classes;
}

/* ---- instances ---- */

gpointer
lp_form_alloc (const LpFormClass *klass, gsize size)
{
  g_return_val_if_fail (size >= sizeof (LpForm), NULL);
  LpForm *f = g_malloc0 (size);
  f->klass = klass;
  f->ref_count = 1;
  return f;
}

LpForm *
lp_form_ref (LpForm *form)
{
  g_return_val_if_fail (form != NULL, NULL);
  g_atomic_int_inc (&form->ref_count);
  return form;
}

void
lp_form_unref (LpForm *form)
{
  if (form == NULL || !g_atomic_int_dec_and_test (&form->ref_count))
    return;
  if (form->klass->finalize)
    form->klass->finalize (form);
  g_free (form);
}

const char *
lp_form_name (const LpForm *form)
{
  return form->klass->name;
}

const LpForm *
lp_tensor_form (const LpTensor *t)
{
  if (t->form != NULL)
    return t->form;
  const LpDTypeInfo *info = lp_dtype_info (t->dtype);
  return info != NULL && info->block_size > 1 ? &lp_form_blocks : &lp_form_dense;
}

/* ---- what callers ask ---- */

gboolean
lp_form_values_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  gint64 K = lp_tensor_row_length (t);
  guint64 row_bytes;
  if (!lp_dtype_row_bytes (t->dtype, (guint64) K, &row_bytes, error))
    return FALSE;
  const guint8 *base = lp_tensor_data (t);
  if (!lp_dtype_to_f32 (t->dtype, base + (gsize) r0 * row_bytes, out, n * K, error))
    {
      lp_error_prefix (error, t->name);
      return FALSE;
    }
  return TRUE;
}

guint64
lp_form_values_bytes (const LpForm *form, const LpTensor *t)
{
  return lp_tensor_n_bytes (t);
}

gboolean
lp_tensor_materialize_rows (const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  g_return_val_if_fail (r0 >= 0 && n >= 0 && r0 + n <= lp_tensor_n_rows (t), FALSE);
  const LpForm *f = lp_tensor_form (t);
  return f->klass->materialize_rows (f, t, r0, n, out, error);
}

guint64
lp_tensor_storage_bytes (const LpTensor *t)
{
  const LpForm *f = lp_tensor_form (t);
  return f->klass->storage_bytes (f, t);
}

double
lp_tensor_bits_per_weight (const LpTensor *t)
{
  gint64 n = lp_tensor_n_elements (t);
  return n > 0 ? (double) lp_tensor_storage_bytes (t) * 8.0 / (double) n : 0.0;
}

gboolean
lp_tensor_is_quantized (const LpTensor *t)
{
  const LpForm *f = lp_tensor_form (t);
  return f->klass->is_quantized != NULL && f->klass->is_quantized (f, t);
}

const LpIntGrid *
lp_tensor_int_grid (const LpTensor *t)
{
  const LpForm *f = lp_tensor_form (t);
  return f->klass->int_grid ? f->klass->int_grid (f) : NULL;
}

GBytes *
lp_tensor_mask (const LpTensor *t)
{
  const LpForm *f = lp_tensor_form (t);
  return f->klass->mask ? f->klass->mask (f) : NULL;
}

gboolean
lp_tensor_mask_keeps (const LpTensor *t, gint64 i)
{
  GBytes *mask = lp_tensor_mask (t);
  if (mask == NULL)
    return TRUE;
  const guint8 *m = g_bytes_get_data (mask, NULL);
  return (m[i / 8] >> (i % 8)) & 1;
}

double
lp_tensor_sparsity (const LpTensor *t)
{
  GBytes *mask = lp_tensor_mask (t);
  if (mask == NULL)
    return 0.0;
  gint64 n = lp_tensor_n_elements (t), kept = 0;
  const guint8 *m = g_bytes_get_data (mask, NULL);
  for (gint64 i = 0; i < n / 8; i++)
    kept += __builtin_popcount (m[i]);
  for (gint64 i = n / 8 * 8; i < n; i++)
    kept += lp_tensor_mask_keeps (t, i);
  return n ? 1.0 - (double) kept / n : 0.0;
}

LpTensor *
lp_tensor_with_mask (LpTensor *t, GBytes *mask, GError **error)
{
  gint64 n = lp_tensor_n_elements (t);
  if (mask != NULL && g_bytes_get_size (mask) != (gsize) ((n + 7) / 8))
    {
      lp_set_error (error, LP_ERROR_INVALID, "tensor %s: mask: expected %" G_GINT64_FORMAT " bytes, found %" G_GSIZE_FORMAT,
                    t->name, (n + 7) / 8, g_bytes_get_size (mask));
      return NULL;
    }
  LpForm *f = (LpForm *) lp_tensor_form (t);
  g_autoptr (LpForm) nf = f->klass->with_mask ? f->klass->with_mask (f, mask)
                          : mask ? lp_form_masked_new (f, mask) : lp_form_ref (f);
  return lp_tensor_with_form (t, nf == &lp_form_dense || nf == &lp_form_blocks ? NULL : nf);
}

/* ---- writers and readers ---- */

GPtrArray *
lp_tensor_save_tensors (LpTensor *t, GError **error)
{
  const LpForm *f = lp_tensor_form (t);
  if (f->klass->save_tensors != NULL)
    return f->klass->save_tensors (f, t, error);
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_ptr_array_add (out, lp_tensor_ref (t));
  return out;
}

void
lp_model_forms_save_meta (const LpModel *model, LpMeta *meta)
{
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      const LpTensor *t = lp_model_tensor_at (model, i);
      const LpForm *f = lp_tensor_form (t);
      if (f->klass->save_meta != NULL)
        f->klass->save_meta (f, t, meta);
    }
}

gboolean
lp_model_forms_restore (LpModel *model, GError **error)
{
  for (const LpFormClass *const *k = form_classes; *k; k++)
    if ((*k)->restore != NULL && !(*k)->restore (model, error))
      return FALSE;
  return TRUE;
}

const LpFormPart *
lp_form_part_find (const char *name, gsize *weight_len)
{
  gsize len = strlen (name);
  for (const LpFormClass *const *k = form_classes; *k; k++)
    for (const LpFormPart *p = (*k)->parts; p != NULL && p->suffix != NULL; p++)
      {
        gsize sl = strlen (p->suffix);
        if (len > sl && strcmp (name + len - sl, p->suffix) == 0)
          {
            *weight_len = len - sl;
            return p;
          }
      }
  return NULL;
}

#define FORM_KEY_PREFIX "llmpress.form."

char *
lp_form_meta_key (const char *name)
{
  return g_strconcat (FORM_KEY_PREFIX, name, NULL);
}

GPtrArray *
lp_model_forms_marked (const LpModel *model, const char *class_name)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  LpMeta *meta = lp_model_meta ((LpModel *) model);
  for (guint i = 0; i < lp_meta_n_keys (meta); i++)
    {
      const char *key = lp_meta_key (meta, i);
      const char *v = lp_meta_get_string (meta, key);
      if (g_str_has_prefix (key, FORM_KEY_PREFIX) && v != NULL && strcmp (v, class_name) == 0)
        g_ptr_array_add (names, g_strdup (key + strlen (FORM_KEY_PREFIX)));
    }
  return names;
}

LpTensor *
lp_form_part_tensor (const LpFormClass *klass, int i, const char *name, LpTensor *part)
{
  g_autofree char *part_name = g_strconcat (name, klass->parts[i].suffix, NULL);
  return lp_tensor_rename (part, part_name);
}

gboolean
lp_model_form_parts (LpModel *model, const LpFormClass *klass, const char *name, LpTensor **parts, GError **error)
{
  for (int i = 0; klass->parts[i].suffix != NULL; i++)
    {
      g_autofree char *part_name = g_strconcat (name, klass->parts[i].suffix, NULL);
      parts[i] = lp_model_tensor (model, part_name);
      if (parts[i] == NULL)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected its %s parts (llmpress.form.%s = %s), found %s missing",
                        lp_model_source (model) ? lp_model_source (model) : "model", name, klass->name, name,
                        klass->name, part_name);
          return FALSE;
        }
    }
  return TRUE;
}

void
lp_model_form_rebuilt (LpModel *model, const LpFormClass *klass, LpTensor *t)
{
  g_autofree char *first = g_strconcat (t->name, klass->parts[0].suffix, NULL);
  lp_model_put_tensor_at (model, first, t);
  for (int i = 0; klass->parts[i].suffix != NULL; i++)
    {
      g_autofree char *part_name = g_strconcat (t->name, klass->parts[i].suffix, NULL);
      lp_model_remove_tensor (model, part_name);
    }
  g_autofree char *key = lp_form_meta_key (t->name);
  lp_meta_remove (lp_model_meta (model), key);
}

/* ---- graphs ---- */

/* t's form uploaded to be, trainable as `how` says when `train`. */
static LpFormWeights *
weights_new (LpTensor *t, LpBackend *be, gboolean train, LpFormTrain how, GError **error)
{
  const LpForm *f = lp_tensor_form (t);
  LpFormWeights *w = g_new0 (LpFormWeights, 1);
  w->src = lp_tensor_ref (t);
  w->be = be;
  w->how = how & ~LP_FORM_TRAIN_BASE;
  w->train_base = (how & LP_FORM_TRAIN_BASE) != 0;
  if (!f->klass->upload (f, t, w, train, error))
    {
      lp_form_weights_free (w);
      return NULL;
    }
  if (!train)
    w->n_trainable = 0;
  for (int i = 0; i < w->n_trainable; i++)
    lp_ctensor_set_trainable (w->params[i], TRUE);
  return w;
}

LpFormWeights *
lp_form_weights_new (LpTensor *t, LpBackend *be, gboolean train, GError **error)
{
  return weights_new (t, be, train, LP_FORM_TRAIN_VALUES, error);
}

LpFormWeights *
lp_form_weights_new_train (LpTensor *t, LpBackend *be, LpFormTrain how, GError **error)
{
  return weights_new (t, be, TRUE, how, error);
}

LpTensor *
lp_form_weights_trained (const LpFormWeights *w, GError **error)
{
  if (w->n_trainable == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "tensor %s: expected weights uploaded for training, found none trainable",
                    w->src->name);
      return NULL;
    }
  const LpForm *f = lp_tensor_form (w->src);
  return f->klass->trained ? f->klass->trained (f, w->src, w, error) : lp_form_values_trained (f, w->src, w, error);
}

LpFormWeights *
lp_form_weights_new_values (LpTensor *t, LpBackend *be, gboolean as_stored, GError **error)
{
  LpFormWeights *w = g_new0 (LpFormWeights, 1);
  w->src = lp_tensor_ref (t);
  w->be = be;
  w->values = lp_form_weights_add_values (w, t, as_stored, error);
  if (w->values == NULL)
    {
      lp_form_weights_free (w);
      return NULL;
    }
  return w;
}

void
lp_form_weights_free (LpFormWeights *w)
{
  if (w == NULL)
    return;
  for (int i = 0; i < w->n_params; i++)
    if (!w->shared[i])
      lp_ctensor_free (w->keep[i]);
  for (int i = 0; i < w->n_params; i++)
    if (w->shared[i])
      continue;
    else if (w->borrowed[i])
      {
        g_free (w->params[i]->name);
        g_free (w->params[i]);
      }
    else
      lp_ctensor_free (w->params[i]);
  lp_form_weights_free (w->base);
  for (guint i = 0; i < G_N_ELEMENTS (w->parts); i++)
    lp_form_weights_free (w->parts[i]);
  lp_tensor_unref (w->src);
  g_free (w);
}

LpCTensor *
lp_form_weights_matmul (const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc, GError **error)
{
  const LpForm *f = lp_tensor_form (w->src);
  return f->klass->matmul (f, w, g, x, acc, error);
}

gboolean
lp_form_weights_grad (const LpFormWeights *w, LpCGraph *g, int i, float *out, GError **error)
{
  g_return_val_if_fail (i >= 0 && i < w->n_trainable, FALSE);
  LpCTensor *d = lp_cgraph_grad (g, w->params[i]);
  if (d == NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID, "tensor %s: parameter %d: expected a gradient, found none (is it on the path to the loss?)",
                    w->src->name, i);
      return FALSE;
    }
  lp_ctensor_read (d, 0, out, d->n_bytes);
  const LpForm *f = lp_tensor_form (w->src);
  if (f->klass->map_grad != NULL)
    f->klass->map_grad (f, w, i, out);
  return TRUE;
}

static LpCTensor *
weights_push (LpFormWeights *w, LpCTensor *c, gboolean borrowed)
{
  g_return_val_if_fail (w->n_params < LP_FORM_MAX_PARAMS, NULL);
  w->borrowed[w->n_params] = borrowed;
  w->params[w->n_params++] = c;
  w->bytes += c->n_bytes;
  return c;
}

LpCTensor *
lp_form_weights_add (LpFormWeights *w, LpDType dtype, int n_dims, const gint64 *shape, const void *data,
                     GError **error)
{
  LpCTensor *c = lp_ctensor_new (w->be, dtype, n_dims, shape, w->src->name, error);
  if (c == NULL)
    return NULL;
  lp_ctensor_write (c, 0, data, c->n_bytes);
  return weights_push (w, c, FALSE);
}

LpCTensor *
lp_form_weights_add_values (LpFormWeights *w, const LpTensor *t, gboolean as_stored, GError **error)
{
  const LpDTypeInfo *info = lp_dtype_info (t->dtype);
  if (t->dtype != LP_DTYPE_F32 && (!as_stored || info == NULL || !info->supported))
    {
      g_autofree float *x = lp_tensor_dup_f32 (t, error);
      return x ? lp_form_weights_add (w, LP_DTYPE_F32, t->n_dims, t->shape, x, error) : NULL;
    }
  if (!lp_backend_is_cpu (w->be))
    return lp_form_weights_add (w, t->dtype, t->n_dims, t->shape, lp_tensor_data (t), error);
  /* The CPU reads the model's memory where it lies. */
  LpCTensor *c = g_new0 (LpCTensor, 1);
  *c = (LpCTensor) { .dtype = t->dtype, .n_dims = t->n_dims, .n_bytes = lp_tensor_n_bytes (t), .be = w->be,
                     .buf = (gpointer) lp_tensor_data (t), .name = g_strdup (t->name) };
  memcpy (c->shape, t->shape, sizeof t->shape);
  return weights_push (w, c, TRUE);
}

LpCTensor *
lp_form_matmul_node (LpCGraph *g, LpCTensor *x, LpCTensor *W, LpCTensor *acc, GError **error)
{
  LpCTensor *src[3] = { x, W, acc };
  LpCNode *n = lp_cgraph_add (g, LP_COP_MATMUL, src, acc ? 3 : 2, NULL, 0, error);
  return n ? n->dst[0] : NULL;
}

LpCTensor *
lp_form_weights_add_trainable (LpFormWeights *w, const LpTensor *t, GError **error)
{
  g_autofree float *x = lp_tensor_dup_f32 (t, error);
  return x ? lp_form_weights_add (w, LP_DTYPE_F32, t->n_dims, t->shape, x, error) : NULL;
}

LpFormWeights *
lp_form_weights_add_part (LpFormWeights *w, LpTensor *part, GError **error)
{
  int slot = 0;
  while (slot < (int) G_N_ELEMENTS (w->parts) && w->parts[slot] != NULL)
    slot++;
  g_return_val_if_fail (slot < (int) G_N_ELEMENTS (w->parts), NULL);
  LpFormWeights *p = weights_new (part, w->be, TRUE, w->how, error);
  if (p == NULL)
    return NULL;
  w->parts[slot] = p;
  w->bytes += p->bytes;
  for (int i = 0; i < p->n_trainable; i++)
    {
      g_return_val_if_fail (w->n_params < LP_FORM_MAX_PARAMS, NULL);
      w->shared[w->n_params] = TRUE;
      w->keep[w->n_params] = p->keep[i];
      w->params[w->n_params++] = p->params[i];
    }
  return p;
}

gboolean
lp_form_values_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error)
{
  /* Trained: f32 (a block type's decoded values are its latent weights,
   * a straight-through estimator; the requantization is the trainer's). */
  w->values = train ? lp_form_weights_add_trainable (w, t, error) : lp_form_weights_add_values (w, t, TRUE, error);
  w->n_trainable = 1;
  return w->values != NULL;
}

LpTensor *
lp_form_weights_read_param (const LpFormWeights *w, int i, const LpTensor *like, GError **error)
{
  const LpCTensor *p = w->params[i];
  g_return_val_if_fail (p->dtype == LP_DTYPE_F32 && lp_ctensor_n_elements (p) == lp_tensor_n_elements (like), NULL);
  LpTensor *t = lp_tensor_new (like->name, LP_DTYPE_F32, like->n_dims, like->shape, error);
  if (t != NULL)
    lp_ctensor_read (p, 0, lp_tensor_data_mut (t), p->n_bytes);
  return t;
}

LpTensor *
lp_form_values_trained (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error)
{
  g_autoptr (LpTensor) latent = lp_form_weights_read_param (w, 0, t, error);
  if (latent == NULL)
    return NULL;
  const LpDTypeInfo *info = lp_dtype_info (t->dtype);
  if (info != NULL && info->block_size > 1)
    return g_steal_pointer (&latent); /* the trainer quantizes to t->dtype (quantizers sit above model/) */
  /* f16 / bf16 rounded; a value beyond their range is refused by name. */
  return lp_tensor_convert_range (latent, t->dtype, LP_OVERFLOW_ERROR, NULL, error);
}

LpCTensor *
lp_form_values_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc,
                       GError **error)
{
  return lp_form_matmul_node (g, x, w->values, acc, error);
}
