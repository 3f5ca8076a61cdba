/* llmpress — GGUF LoRA adapters as llama.cpp reads them
 * (src/llama-adapter.cpp, llama_adapter_lora_init_impl) and
 * convert_lora_to_gguf.py writes them:
 *   general.architecture  the base's ("llama"): llama.cpp refuses another
 *   general.type          "adapter"
 *   adapter.type          "lora"
 *   adapter.lora.alpha    f32; llama.cpp scales each B A by alpha / R (R:
 *                         lora_a's ne[1]), or by 1 when alpha is 0
 *   <weight>.lora_a       ne {K, R}: our [R, K] (PEFT's lora_A)
 *   <weight>.lora_b       ne {R, N}: our [N, R] (PEFT's lora_B)
 * for a base weight <weight> of ne {K, N}: llama.cpp checks base ne[0] ==
 * a ne[0], base ne[1] == b ne[1] and a ne[1] == b ne[0].  One alpha serves
 * every weight; a weight whose scale is not alpha / R has the ratio folded
 * into its B (one f32 rounding).  The factors are written f32 (or f16/bf16
 * when asked): ggml multiplies by them as they are. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "formats-internal.h"

gboolean
lp_lora_gguf_write (LpModel *model, GPtrArray *pairs, const char *path, int dtype, GError **error)
{
  const LpAdapterPair *first = pairs->pdata[0];
  /* alpha = scale R of the first weight; alpha 0 would mean scale 1 to llama.cpp. */
  float alpha = (float) (first->scale * (double) first->a->shape[0]);
  if (alpha == 0.f || !isfinite (alpha))
    alpha = (float) first->a->shape[0];
  g_autoptr (LpMeta) meta = lp_meta_new ();
  lp_meta_set_string (meta, "general.architecture", lp_arch_info (lp_model_config (model)->arch)->name);
  lp_meta_set_string (meta, "general.type", "adapter");
  const char *name = lp_meta_get_string (lp_model_meta (model), "general.name");
  if (name != NULL)
    lp_meta_set_string (meta, "general.name", name);
  lp_meta_set_string (meta, "adapter.type", "lora");
  lp_meta_set_f32 (meta, "adapter.lora.alpha", alpha);

  g_autoptr (GPtrArray) tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  for (guint i = 0; i < pairs->len; i++)
    {
      const LpAdapterPair *p = pairs->pdata[i];
      double rank = (double) p->a->shape[0];
      /* What llama.cpp will scale by, in its float arithmetic. */
      double applied = (double) (alpha / (float) rank);
      g_autoptr (LpTensor) b = lp_adapter_pair_b_at (p, applied, error);
      g_autoptr (LpTensor) a_out = b ? lp_adapter_factor_out (p->a, dtype, path, error) : NULL;
      g_autoptr (LpTensor) b_out = a_out ? lp_adapter_factor_out (b, dtype, path, error) : NULL;
      if (b_out == NULL)
        return FALSE;
      g_autofree char *an = g_strconcat (p->name, ".lora_a", NULL);
      g_autofree char *bn = g_strconcat (p->name, ".lora_b", NULL);
      g_ptr_array_add (tensors, lp_tensor_rename (a_out, an));
      g_ptr_array_add (tensors, lp_tensor_rename (b_out, bn));
    }
  return lp_gguf_write (path, meta, tensors, error);
}

/* A factor as f32 when it is a block type (convert_lora_to_gguf.py writes
 * q8_0 on request); float types stay (the form converts them). */
static LpTensor *
factor_in (LpTensor *t, const char *path, GError **error)
{
  if (t->n_dims != 2)
    {
      g_autofree char *s = lp_tensor_shape_string (t);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected a 2-D LoRA factor, found shape %s", path, t->name, s);
      return NULL;
    }
  if (lp_dtype_info (t->dtype)->block_size == 1)
    return lp_tensor_ref (t);
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  LpTensor *out = v ? lp_tensor_new_f32 (t->name, 2, t->shape, v, error) : NULL;
  if (out == NULL)
    lp_error_prefix (error, path);
  return out;
}

/* The keys llama.cpp checks before any tensor. */
static gboolean
check_meta (const LpMeta *meta, LpModel *base, const char *path, GError **error)
{
  const char *arch = lp_arch_info (lp_model_config (base)->arch)->name;
  const char *type = lp_meta_get_string (meta, "general.type");
  const char *file_arch = lp_meta_get_string (meta, "general.architecture");
  const char *adapter_type = lp_meta_get_string (meta, "adapter.type");
  if (type == NULL || strcmp (type, "adapter") != 0)
    lp_set_error (error, LP_ERROR_FORMAT, "%s: key general.type: expected \"adapter\" (a LoRA adapter file), found %s%s%s",
                  path, type ? "\"" : "", type ? type : "none", type ? "\"" : "");
  else if (file_arch == NULL || strcmp (file_arch, arch) != 0)
    lp_set_error (error, LP_ERROR_INVALID, "%s: key general.architecture: expected \"%s\" (the base model's), found %s",
                  path, arch, file_arch ? file_arch : "none");
  else if (adapter_type == NULL || strcmp (adapter_type, "lora") != 0)
    lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key adapter.type: expected \"lora\", found %s", path,
                  adapter_type ? adapter_type : "none");
  else
    return TRUE;
  return FALSE;
}

GPtrArray *
lp_lora_gguf_read (const char *path, LpModel *base, GError **error)
{
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) tensors = lp_gguf_read_tensors (path, meta, error);
  if (tensors == NULL || !check_meta (meta, base, path, error))
    return NULL;
  double alpha = 0;
  if (lp_meta_has (meta, "adapter.lora.alpha") && !lp_meta_get_float (meta, "adapter.lora.alpha", &alpha, error))
    {
      lp_error_prefix (error, path);
      return NULL;
    }
  /* weight name -> its two factors [a, b], in the order first seen. */
  g_autoptr (GHashTable) ab = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr (GPtrArray) order = g_ptr_array_new ();
  for (guint i = 0; i < tensors->len; i++)
    {
      LpTensor *t = tensors->pdata[i];
      gboolean is_a = g_str_has_suffix (t->name, ".lora_a"), is_b = g_str_has_suffix (t->name, ".lora_b");
      if (!is_a && !is_b)
        {
          /* llama.cpp skips norm vectors too (it does not apply them). */
          if (g_str_has_suffix (t->name, "_norm.weight"))
            {
              lp_warn ("%s: tensor %s: a norm vector in a LoRA adapter is not applied (as in llama.cpp)", path, t->name);
              continue;
            }
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected a name ending .lora_a or .lora_b, found another suffix",
                        path, t->name);
          return NULL;
        }
      g_autofree char *weight = g_strndup (t->name, strlen (t->name) - strlen (".lora_a"));
      LpTensor **slot = g_hash_table_lookup (ab, weight);
      if (slot == NULL)
        {
          slot = g_new0 (LpTensor *, 2);
          g_ptr_array_add (order, weight);
          g_hash_table_insert (ab, g_steal_pointer (&weight), slot);
        }
      if (slot[is_a ? 0 : 1] != NULL)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected once, found twice", path, t->name);
          return NULL;
        }
      slot[is_a ? 0 : 1] = t;
    }
  g_autoptr (GPtrArray) pairs = g_ptr_array_new_with_free_func (lp_adapter_pair_free);
  for (guint i = 0; i < order->len; i++)
    {
      const char *weight = order->pdata[i];
      LpTensor **slot = g_hash_table_lookup (ab, weight);
      if (slot[0] == NULL || slot[1] == NULL)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s%s: expected with its %s, found it missing", path, weight,
                        slot[0] ? ".lora_a" : ".lora_b", slot[0] ? ".lora_b" : ".lora_a");
          return NULL;
        }
      g_autoptr (LpTensor) a = factor_in (slot[0], path, error);
      g_autoptr (LpTensor) b = a ? factor_in (slot[1], path, error) : NULL;
      if (b == NULL)
        return NULL;
      /* llama.cpp's rule: alpha / R, or 1 when the file has no alpha. */
      double scale = alpha != 0 ? (double) ((float) alpha / (float) a->shape[0]) : 1.0;
      g_ptr_array_add (pairs, lp_adapter_pair_new (weight, slot[0]->name, a, b, scale));
    }
  return g_steal_pointer (&pairs);
}
