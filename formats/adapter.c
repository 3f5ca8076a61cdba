/* llmpress — a model's adapters: written as a runtime's adapter file
 * (lora_gguf.c, lora_peft.c), read back onto a base, stripped to their
 * bases, merged into dense weights (adapter.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "formats-internal.h"

LpAdapterPair *
lp_adapter_pair_new (const char *name, const char *what, LpTensor *a, LpTensor *b, double scale)
{
  LpAdapterPair *p = g_new0 (LpAdapterPair, 1);
  p->name = g_strdup (name);
  p->what = g_strdup (what);
  p->a = lp_tensor_ref (a);
  p->b = lp_tensor_ref (b);
  p->scale = scale;
  return p;
}

void
lp_adapter_pair_free (gpointer ptr)
{
  LpAdapterPair *p = ptr;
  g_free (p->name);
  g_free (p->what);
  lp_tensor_unref (p->a);
  lp_tensor_unref (p->b);
  g_free (p);
}

LpTensor *
lp_adapter_pair_b_at (const LpAdapterPair *p, double scale, GError **error)
{
  double ratio = p->scale / scale;
  if (ratio == 1.0)
    return lp_tensor_ref (p->b);
  g_autofree float *v = lp_tensor_dup_f32 (p->b, error);
  if (v == NULL)
    return NULL;
  for (gint64 i = 0; i < lp_tensor_n_elements (p->b); i++)
    v[i] = (float) (v[i] * ratio);
  return lp_tensor_new_f32 (p->b->name, p->b->n_dims, p->b->shape, v, error);
}

LpTensor *
lp_adapter_factor_out (LpTensor *t, int dtype, const char *path, GError **error)
{
  if (dtype < 0)
    dtype = t->dtype;
  if (dtype != LP_DTYPE_F32 && dtype != LP_DTYPE_F16 && dtype != LP_DTYPE_BF16)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: adapter type: expected f32, f16 or bf16, found %s", path,
                    lp_dtype_name ((LpDType) dtype));
      return NULL;
    }
  LpTensor *out = lp_tensor_convert_range (t, (LpDType) dtype, LP_OVERFLOW_ERROR, NULL, error);
  if (out == NULL)
    lp_error_prefix (error, path);
  return out;
}

/* The model's adapters as pairs, in tensor order; NULL with an error when
 * there is none, or one no adapter file holds the way we apply it. */
static GPtrArray *
model_pairs (LpModel *model, const char *path, GError **error)
{
  g_autoptr (GPtrArray) pairs = g_ptr_array_new_with_free_func (lp_adapter_pair_free);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i), *base, *a, *b;
      double scale;
      if (!lp_tensor_adapter_parts (t, &base, &a, &b, &scale))
        continue;
      if (lp_tensor_adapter_parts (base, NULL, NULL, NULL, NULL))
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED,
                        "%s: tensor %s: expected one adapter over its base, found an adapter over an adapter (merge first)",
                        path, t->name);
          return NULL;
        }
      /* llama.cpp and PEFT both apply an embedding's adapter transposed
       * (a lookup, not a product): not written. */
      if (strcmp (t->name, "token_embd.weight") == 0)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED,
                        "%s: tensor %s: expected adapters on linear weights, found one on the token embedding (merge it instead)",
                        path, t->name);
          return NULL;
        }
      g_ptr_array_add (pairs, lp_adapter_pair_new (t->name, t->name, a, b, scale));
    }
  if (pairs->len == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: expected a model with adapters (LoRA) to write, found none", path);
      return NULL;
    }
  return g_steal_pointer (&pairs);
}

gboolean
lp_model_save_adapter (LpModel *model, const char *path, LpAdapterFormat format, int dtype, const char *base_path,
                       GError **error)
{
  if (format == LP_ADAPTER_FORMAT_AUTO)
    format = g_str_has_suffix (path, ".gguf") || g_file_test (path, G_FILE_TEST_IS_REGULAR) ? LP_ADAPTER_FORMAT_GGUF
                                                                                            : LP_ADAPTER_FORMAT_PEFT;
  if (!lp_model_check_output (model, path, error))
    return FALSE;
  g_autoptr (GPtrArray) pairs = model_pairs (model, path, error);
  if (pairs == NULL)
    return FALSE;
  if (format == LP_ADAPTER_FORMAT_GGUF)
    return lp_lora_gguf_write (model, pairs, path, dtype, error);
  return lp_lora_peft_write (model, pairs, path, dtype, base_path, error);
}

LpModel *
lp_model_adapter_bases (LpModel *model, guint *n_adapters)
{
  LpModel *out = lp_model_derive (model);
  guint n = 0;
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *base;
      if (lp_tensor_adapter_parts (lp_model_tensor_at (model, i), &base, NULL, NULL, NULL))
        {
          lp_model_set_tensor (out, base);
          n++;
        }
    }
  if (n_adapters)
    *n_adapters = n;
  return out;
}

/* One pair onto its base weight: the checks llama.cpp makes (the weight
 * exists, A is [R, K] and B [N, R] for a base [N, K]), then the form. */
static gboolean
apply_pair (LpModel *model, const LpAdapterPair *p, const char *path, GError **error)
{
  const char *src = lp_model_source (model) ? lp_model_source (model) : "the model";
  LpTensor *base = lp_model_tensor (model, p->name);
  if (base == NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: tensor %s: expected a weight %s in the base model (%s), found none (hint: wrong base model?)",
                    path, p->what, p->name, src);
      return FALSE;
    }
  if (base->n_dims != 2 || p->a->n_dims != 2 || p->b->n_dims != 2 || p->a->shape[1] != base->shape[1]
      || p->b->shape[0] != base->shape[0] || p->a->shape[0] != p->b->shape[1])
    {
      g_autofree char *bs = lp_tensor_shape_string (base);
      g_autofree char *as = lp_tensor_shape_string (p->a);
      g_autofree char *bbs = lp_tensor_shape_string (p->b);
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: tensor %s: expected A [R, %" G_GINT64_FORMAT "] and B [%" G_GINT64_FORMAT ", R] for the base weight %s %s of %s, found A %s and B %s (hint: wrong base model?)",
                    path, p->what, base->shape[base->n_dims - 1], base->shape[0], p->name, bs, src, as, bbs);
      return FALSE;
    }
  if (lp_tensor_adapter_parts (base, NULL, NULL, NULL, NULL))
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: tensor %s: expected a weight without an adapter, found %s has one already (merge it first)",
                    path, p->what, p->name);
      return FALSE;
    }
  g_autoptr (LpTensor) t = lp_tensor_new_adapter (base, p->a, p->b, p->scale, error);
  if (t == NULL)
    {
      lp_error_prefix (error, path);
      return FALSE;
    }
  lp_model_set_tensor (model, t);
  return TRUE;
}

LpModel *
lp_model_apply_adapter (LpModel *base, const char *path, guint *n_applied, GError **error)
{
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: no such file or directory", path);
      return NULL;
    }
  if (!lp_input_check (path, TRUE, error))
    return NULL;
  g_autoptr (GPtrArray) pairs = g_file_test (path, G_FILE_TEST_IS_DIR) ? lp_lora_peft_read (path, base, error)
                                                                       : lp_lora_gguf_read (path, base, error);
  if (pairs == NULL)
    return NULL;
  if (pairs->len == 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: expected LoRA tensors, found none", path);
      return NULL;
    }
  g_autoptr (LpModel) out = lp_model_derive (base);
  for (guint i = 0; i < pairs->len; i++)
    if (!apply_pair (out, pairs->pdata[i], path, error))
      return NULL;
  if (n_applied)
    *n_applied = pairs->len;
  return g_steal_pointer (&out);
}

LpModel *
lp_model_merge_adapters (LpModel *model, guint *n_merged, guint *n_dequantized, GError **error)
{
  g_autoptr (LpModel) out = lp_model_derive (model);
  guint merged = 0, dequantized = 0;
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if (!lp_tensor_adapter_parts (t, NULL, NULL, NULL, NULL))
        continue;
      gboolean deq = FALSE;
      g_autoptr (LpTensor) m = lp_tensor_adapter_merged (t, &deq, error);
      if (m == NULL)
        return NULL;
      lp_model_set_tensor (out, m);
      merged++;
      dequantized += deq;
    }
  if (n_merged)
    *n_merged = merged;
  if (n_dequantized)
    *n_dequantized = dequantized;
  return g_steal_pointer (&out);
}
