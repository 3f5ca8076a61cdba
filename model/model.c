/* llmpress — the model object: config + ordered named tensors + metadata. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

struct _LpModel {
  gint ref_count;
  LpModelConfig config;
  GPtrArray *tensors;  /* LpTensor*, in file order */
  GHashTable *by_name; /* name (borrowed from the tensor) -> index into tensors */
  LpMeta *meta;
  char *source;
  LpFormat source_format;
  char *tokenizer_source; /* a tokenizer file read beside the source, or NULL */
  LpSpill *spill;         /* where lp_model_set_tensor_spill moves data, or NULL */
};

LpModel *
lp_model_new (const LpModelConfig *config)
{
  LpModel *m = g_new0 (LpModel, 1);
  m->ref_count = 1;
  m->config = *config;
  m->tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  m->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  m->meta = lp_meta_new ();
  return m;
}

LpModel *
lp_model_ref (LpModel *model)
{
  g_return_val_if_fail (model != NULL, NULL);
  g_atomic_int_inc (&model->ref_count);
  return model;
}

void
lp_model_unref (LpModel *model)
{
  if (model == NULL || !g_atomic_int_dec_and_test (&model->ref_count))
    return;
  g_hash_table_destroy (model->by_name);
  g_ptr_array_unref (model->tensors);
  lp_meta_free (model->meta);
  g_free (model->source);
  g_free (model->tokenizer_source);
  lp_spill_unref (model->spill);
  g_free (model);
}

const LpModelConfig *
lp_model_config (const LpModel *model)
{
  return &model->config;
}

LpModelConfig *
lp_model_config_mut (LpModel *model)
{
  return &model->config;
}

LpMeta *
lp_model_meta (LpModel *model)
{
  return model->meta;
}

guint
lp_model_n_tensors (const LpModel *model)
{
  return model->tensors->len;
}

LpTensor *
lp_model_tensor_at (const LpModel *model, guint i)
{
  g_return_val_if_fail (i < model->tensors->len, NULL);
  return model->tensors->pdata[i];
}

LpTensor *
lp_model_tensor (const LpModel *model, const char *name)
{
  gpointer idx;
  if (!g_hash_table_lookup_extended (model->by_name, name, NULL, &idx))
    return NULL;
  return model->tensors->pdata[GPOINTER_TO_UINT (idx)];
}

static void
reindex (LpModel *model)
{
  g_hash_table_remove_all (model->by_name);
  for (guint i = 0; i < model->tensors->len; i++)
    {
      LpTensor *t = model->tensors->pdata[i];
      g_hash_table_insert (model->by_name, t->name, GUINT_TO_POINTER (i));
    }
}

void
lp_model_set_tensor (LpModel *model, LpTensor *tensor)
{
  gpointer idx;
  lp_tensor_ref (tensor);
  if (g_hash_table_lookup_extended (model->by_name, tensor->name, NULL, &idx))
    {
      guint i = GPOINTER_TO_UINT (idx);
      LpTensor *old = model->tensors->pdata[i];
      model->tensors->pdata[i] = tensor;
      /* replace, not insert: insert would keep the old tensor's name as the key. */
      g_hash_table_replace (model->by_name, tensor->name, idx);
      lp_tensor_unref (old);
      return;
    }
  g_ptr_array_add (model->tensors, tensor);
  g_hash_table_insert (model->by_name, tensor->name, GUINT_TO_POINTER (model->tensors->len - 1));
}

void
lp_model_put_tensor_at (LpModel *model, const char *at, LpTensor *tensor)
{
  gpointer idx;
  if (lp_model_tensor (model, tensor->name) != NULL || !g_hash_table_lookup_extended (model->by_name, at, NULL, &idx))
    {
      lp_model_set_tensor (model, tensor);
      return;
    }
  guint i = GPOINTER_TO_UINT (idx);
  lp_tensor_unref (model->tensors->pdata[i]);
  model->tensors->pdata[i] = lp_tensor_ref (tensor);
  reindex (model);
}

void
lp_model_set_tensor_spill (LpModel *model, LpTensor *tensor)
{
  g_autoptr (LpTensor) t = lp_tensor_spill (tensor, model->spill);
  lp_model_set_tensor (model, t);
}

void
lp_model_set_spill (LpModel *model, LpSpill *spill)
{
  if (spill != NULL)
    lp_spill_ref (spill);
  lp_spill_unref (model->spill);
  model->spill = spill;
}

LpSpill *
lp_model_get_spill (LpModel *model)
{
  return model->spill;
}

void
lp_model_remove_tensor (LpModel *model, const char *name)
{
  gpointer idx;
  if (!g_hash_table_lookup_extended (model->by_name, name, NULL, &idx))
    return;
  g_ptr_array_remove_index (model->tensors, GPOINTER_TO_UINT (idx));
  reindex (model);
}

const char *
lp_model_source (const LpModel *model)
{
  return model->source;
}

LpFormat
lp_model_source_format (const LpModel *model)
{
  return model->source_format;
}

void
lp_model_set_source (LpModel *model, const char *path, LpFormat format)
{
  g_free (model->source);
  model->source = g_strdup (path);
  model->source_format = format;
}

void
lp_model_set_tokenizer_source (LpModel *model, const char *path)
{
  g_free (model->tokenizer_source);
  model->tokenizer_source = g_strdup (path);
}

const char *
lp_model_tokenizer_source (const LpModel *model)
{
  return model->tokenizer_source;
}

gboolean
lp_model_validate (const LpModel *model, GError **error)
{
  const char *src = model->source ? model->source : "model";
  if (!lp_model_config_check (&model->config, src, error))
    return FALSE;
  g_autoptr (GPtrArray) specs = lp_arch_tensor_specs (&model->config);
  for (guint i = 0; i < specs->len; i++)
    {
      const LpTensorSpec *s = specs->pdata[i];
      LpTensor *t = lp_model_tensor (model, s->name);
      if (t == NULL)
        {
          lp_set_error (error, LP_ERROR_MISSING, "%s: tensor %s: expected by the %s architecture, not found",
                        src, s->name, lp_arch_info (model->config.arch)->name);
          return FALSE;
        }
      gboolean ok = t->n_dims == s->n_dims && t->shape[0] == s->shape[0]
                    && (s->n_dims == 1 || t->shape[1] == s->shape[1]);
      if (!ok)
        {
          g_autofree char *found = lp_tensor_shape_string (t);
          if (s->n_dims == 1)
            lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected shape %" G_GINT64_FORMAT ", found %s",
                          src, s->name, s->shape[0], found);
          else
            lp_set_error (error, LP_ERROR_FORMAT,
                          "%s: tensor %s: expected shape %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ", found %s",
                          src, s->name, s->shape[0], s->shape[1], found);
          return FALSE;
        }
      /* Integers are a packing (GPTQ's qweight), never weights themselves:
       * read as numbers they would give a silently wrong model. */
      if (t->dtype == LP_DTYPE_I8 || t->dtype == LP_DTYPE_I16 || t->dtype == LP_DTYPE_I32 || t->dtype == LP_DTYPE_I64)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected float or quantized weights, found integer type %s",
                        src, s->name, lp_dtype_name (t->dtype));
          return FALSE;
        }
    }
  return TRUE;
}

gint64
lp_model_n_params (const LpModel *model)
{
  gint64 n = 0;
  for (guint i = 0; i < model->tensors->len; i++)
    n += lp_tensor_n_elements (model->tensors->pdata[i]);
  return n;
}

guint64
lp_model_n_bytes (const LpModel *model)
{
  guint64 n = 0;
  for (guint i = 0; i < model->tensors->len; i++)
    n += lp_tensor_storage_bytes (model->tensors->pdata[i]);
  return n;
}

LpModel *
lp_model_derive (LpModel *src)
{
  g_return_val_if_fail (src != NULL, NULL);
  LpModel *m = lp_model_new (lp_model_config (src));
  const LpMeta *meta = lp_model_meta (src);
  for (guint i = 0; i < lp_meta_n_keys (meta); i++)
    lp_meta_set (lp_model_meta (m), lp_meta_key (meta, i), lp_value_copy (lp_meta_get (meta, lp_meta_key (meta, i))));
  for (guint i = 0; i < lp_model_n_tensors (src); i++)
    lp_model_set_tensor (m, lp_model_tensor_at (src, i));
  /* Keeps the input's origin: saving over the file a model came from is refused. */
  lp_model_set_source (m, lp_model_source (src), lp_model_source_format (src));
  lp_model_set_spill (m, src->spill);
  return m;
}
