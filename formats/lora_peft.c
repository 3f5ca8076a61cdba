/* llmpress — PEFT LoRA adapter directories, as peft's save_pretrained
 * writes them and PeftModel.from_pretrained and vLLM read them:
 *   adapter_config.json        LoraConfig: peft_type "LORA", task_type
 *                              "CAUSAL_LM", r, lora_alpha, target_modules,
 *                              rank_pattern / alpha_pattern (module -> r,
 *                              alpha where a module differs), bias "none",
 *                              fan_in_fan_out false, use_rslora false, ...
 *   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [R, K]
 *                              base_model.model.<module>.lora_B.weight [N, R]
 * <module> is the transformers module of the base weight
 * ("model.layers.0.self_attn.q_proj", "lm_head"); PEFT scales B A by
 * lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), with alpha and r
 * per module from the patterns; vLLM (PEFTHelper) reads neither pattern
 * and scales every module by lora_alpha / r.  So one scale serves all: the
 * first weight's; a weight whose scale differs has the ratio folded into its
 * B (as in the GGUF LoRA), and a module of another rank gets the alpha that
 * gives the same alpha / r in alpha_pattern.  transformers
 * holds q_proj and k_proj rows in rotate-half order (hf.c): B's rows are the
 * weight's rows and are permuted with them; A's columns are the inputs and
 * are not.  The pattern keys we write are full module names; on reading, a
 * key matches a module equal to it or ending in "." + key (peft matches
 * them as regular expressions the same way for plain names). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "formats-internal.h"

#define PEFT_PREFIX "base_model.model."

/* "model.layers.0.self_attn.q_proj" for a GGUF weight name, or NULL. */
static char *
hf_module (const LpModelConfig *c, const char *name)
{
  g_autofree char *hf = lp_arch_name_to_hf (c, name);
  if (hf == NULL || !g_str_has_suffix (hf, ".weight"))
    return NULL;
  return g_strndup (hf, strlen (hf) - strlen (".weight"));
}

/* The last component: "q_proj". */
static const char *
module_leaf (const char *module)
{
  const char *dot = strrchr (module, '.');
  return dot ? dot + 1 : module;
}

static void
add_number (JsonBuilder *b, double v)
{
  if (v == floor (v) && fabs (v) < 1e15)
    json_builder_add_int_value (b, (gint64) v);
  else
    json_builder_add_double_value (b, v);
}

/* target_modules: the leaf names ("q_proj") when every module of that
 * leaf in the model has an adapter, else the full module names. */
static void
add_target_modules (JsonBuilder *b, LpModel *model, GPtrArray *modules)
{
  const LpModelConfig *c = lp_model_config (model);
  g_autoptr (GHashTable) adapted = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GHashTable) complete = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < modules->len; i++)
    {
      g_hash_table_add (adapted, modules->pdata[i]);
      g_hash_table_add (complete, (gpointer) module_leaf (modules->pdata[i]));
    }
  g_autoptr (GPtrArray) all = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      char *m = hf_module (c, lp_model_tensor_at (model, i)->name);
      if (m != NULL)
        g_ptr_array_add (all, m);
    }
  for (guint i = 0; i < all->len; i++)
    if (!g_hash_table_contains (adapted, all->pdata[i]))
      g_hash_table_remove (complete, module_leaf (all->pdata[i]));
  json_builder_set_member_name (b, "target_modules");
  json_builder_begin_array (b);
  g_autoptr (GHashTable) done = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < modules->len; i++)
    {
      const char *leaf = module_leaf (modules->pdata[i]);
      const char *item = g_hash_table_contains (complete, leaf) ? leaf : modules->pdata[i];
      if (g_hash_table_add (done, (gpointer) item))
        json_builder_add_string_value (b, item);
    }
  json_builder_end_array (b);
}

/* A pattern member: module -> value for every module whose value is not
 * the default (peft's rank_pattern, alpha_pattern). */
static void
add_pattern (JsonBuilder *b, const char *key, GPtrArray *modules, const double *values, double dflt)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_object (b);
  for (guint i = 0; i < modules->len; i++)
    if (values[i] != dflt)
      {
        json_builder_set_member_name (b, modules->pdata[i]);
        add_number (b, values[i]);
      }
  json_builder_end_object (b);
}

/* The scale every module's B A is written for (PEFT: lora_alpha / r): the
 * first weight's, with alpha through f32 as our form holds its scale. */
static double
file_scale (GPtrArray *pairs, double *alpha0, double *r0)
{
  const LpAdapterPair *first = pairs->pdata[0];
  *r0 = (double) first->a->shape[0];
  *alpha0 = (double) (float) (first->scale * *r0);
  if (*alpha0 == 0 || !isfinite (*alpha0))
    *alpha0 = *r0;
  return *alpha0 / *r0;
}

static gboolean
write_config (LpModel *model, GPtrArray *pairs, GPtrArray *modules, const char *base_path, const char *file,
              GError **error)
{
  /* The first module's rank and alpha are the defaults; a module of another
   * rank has the alpha that keeps alpha / r (rank_pattern, alpha_pattern). */
  double alpha0, r0, scale = file_scale (pairs, &alpha0, &r0);
  g_autofree double *ranks = g_new (double, pairs->len);
  g_autofree double *alphas = g_new (double, pairs->len);
  for (guint i = 0; i < pairs->len; i++)
    {
      ranks[i] = (double) ((const LpAdapterPair *) pairs->pdata[i])->a->shape[0];
      alphas[i] = ranks[i] == r0 ? alpha0 : scale * ranks[i];
    }
  const char *base = base_path ? base_path : lp_model_source (model);
  if (base == NULL)
    base = lp_meta_get_string (lp_model_meta (model), "general.name");
  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();
  json_builder_begin_object (b);
  add_pattern (b, "alpha_pattern", modules, alphas, alphas[0]);
  json_builder_set_member_name (b, "auto_mapping");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "base_model_name_or_path");
  if (base)
    json_builder_add_string_value (b, base);
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "bias");
  json_builder_add_string_value (b, "none");
  json_builder_set_member_name (b, "fan_in_fan_out");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_set_member_name (b, "inference_mode");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_set_member_name (b, "init_lora_weights");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_set_member_name (b, "layers_pattern");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "layers_to_transform");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "lora_alpha");
  add_number (b, alphas[0]);
  json_builder_set_member_name (b, "lora_dropout");
  json_builder_add_double_value (b, 0.0);
  json_builder_set_member_name (b, "modules_to_save");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "peft_type");
  json_builder_add_string_value (b, "LORA");
  json_builder_set_member_name (b, "r");
  add_number (b, ranks[0]);
  add_pattern (b, "rank_pattern", modules, ranks, ranks[0]);
  json_builder_set_member_name (b, "revision");
  json_builder_add_null_value (b);
  add_target_modules (b, model, modules);
  json_builder_set_member_name (b, "task_type");
  json_builder_add_string_value (b, "CAUSAL_LM");
  json_builder_set_member_name (b, "use_dora");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_set_member_name (b, "use_rslora");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_end_object (b);
  return lp_hf_write_json (file, b, error);
}

/* The safetensors tensors of the pairs (into `out`) and their modules. */
static gboolean
plan_tensors (LpModel *model, GPtrArray *pairs, const char *path, int dtype, GPtrArray *out, GPtrArray *modules,
              GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  g_autoptr (GHashTable) permuted = lp_hf_permuted_names (c);
  double alpha0, r0, scale = file_scale (pairs, &alpha0, &r0);
  for (guint i = 0; i < pairs->len; i++)
    {
      const LpAdapterPair *p = pairs->pdata[i];
      char *module = hf_module (c, p->name);
      if (module == NULL)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED,
                        "%s: tensor %s: expected a linear weight with a transformers module, found none for it", path,
                        p->name);
          return FALSE;
        }
      g_ptr_array_add (modules, module);
      g_autoptr (LpTensor) b_at = lp_adapter_pair_b_at (p, scale, error);
      g_autoptr (LpTensor) a = b_at ? lp_adapter_factor_out (p->a, dtype, path, error) : NULL;
      g_autoptr (LpTensor) b = a ? lp_adapter_factor_out (b_at, dtype, path, error) : NULL;
      g_autoptr (LpTensor) b_hf = b == NULL                                   ? NULL
                                  : g_hash_table_contains (permuted, p->name) ? lp_hf_permute_qk (c, b, p->name, TRUE, path, error)
                                                                              : lp_tensor_ref (b);
      if (b_hf == NULL)
        return FALSE;
      g_autofree char *an = g_strconcat (PEFT_PREFIX, module, ".lora_A.weight", NULL);
      g_autofree char *bn = g_strconcat (PEFT_PREFIX, module, ".lora_B.weight", NULL);
      g_ptr_array_add (out, lp_tensor_rename (a, an));
      g_ptr_array_add (out, lp_tensor_rename (b_hf, bn));
    }
  return TRUE;
}

gboolean
lp_lora_peft_write (LpModel *model, GPtrArray *pairs, const char *path, int dtype, const char *base_path,
                    GError **error)
{
  g_autoptr (GPtrArray) tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_autoptr (GPtrArray) modules = g_ptr_array_new_with_free_func (g_free);
  if (!plan_tensors (model, pairs, path, dtype, tensors, modules, error))
    return FALSE;
  LpAtomicDir *ad = lp_atomic_dir_new_output (path, "peft", error);
  if (ad == NULL)
    return FALSE;
  g_autofree char *st = g_build_filename (lp_atomic_dir_path (ad), "adapter_model.safetensors", NULL);
  g_autofree char *cfg = g_build_filename (lp_atomic_dir_path (ad), "adapter_config.json", NULL);
  if (!lp_safetensors_write (st, (LpTensor *const *) tensors->pdata, tensors->len, NULL, error)
      || !write_config (model, pairs, modules, base_path, cfg, error))
    {
      lp_atomic_dir_abort (ad);
      return FALSE;
    }
  return lp_atomic_dir_commit (ad, error);
}

/* ---- reading ---- */

/* What adapter_config.json says, as far as applying the adapter goes. */
typedef struct {
  double r, alpha;
  gboolean rslora;
  JsonObject *rank_pattern, *alpha_pattern; /* may be NULL */
} PeftConfig;

static gboolean
cfg_number (JsonObject *o, const char *key, double dflt, double *out, const char *file, GError **error)
{
  JsonNode *n = json_object_get_member (o, key);
  *out = dflt;
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  GType t = JSON_NODE_HOLDS_VALUE (n) ? json_node_get_value_type (n) : G_TYPE_INVALID;
  if (t != G_TYPE_INT64 && t != G_TYPE_DOUBLE)
    {
      g_autofree char *found = lp_json_describe (n);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected a number, found %s", file, key, found);
      return FALSE;
    }
  *out = t == G_TYPE_INT64 ? (double) json_node_get_int (n) : json_node_get_double (n);
  return TRUE;
}

static gboolean
cfg_flag (JsonObject *o, const char *key, const char *file, gboolean *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, key);
  *out = FALSE;
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    {
      g_autofree char *found = lp_json_describe (n);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected true or false, found %s", file, key, found);
      return FALSE;
    }
  *out = json_node_get_boolean (n);
  return TRUE;
}

static JsonObject *
cfg_object (JsonObject *o, const char *key)
{
  JsonNode *n = json_object_get_member (o, key);
  return n != NULL && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
}

static gboolean
read_config (JsonObject *o, const char *file, PeftConfig *pc, GError **error)
{
  JsonNode *type = json_object_get_member (o, "peft_type");
  const char *ts = type && JSON_NODE_HOLDS_VALUE (type) && json_node_get_value_type (type) == G_TYPE_STRING
                   ? json_node_get_string (type) : NULL;
  gboolean fifo = FALSE, dora = FALSE;
  if (ts == NULL || strcmp (ts, "LORA") != 0)
    {
      g_autofree char *found = type ? lp_json_describe (type) : g_strdup ("none");
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key peft_type: expected \"LORA\", found %s", file, found);
      return FALSE;
    }
  /* peft's LoraConfig defaults: r 8, lora_alpha 8. */
  if (!cfg_number (o, "r", 8, &pc->r, file, error) || !cfg_number (o, "lora_alpha", 8, &pc->alpha, file, error)
      || !cfg_flag (o, "use_rslora", file, &pc->rslora, error) || !cfg_flag (o, "fan_in_fan_out", file, &fifo, error)
      || !cfg_flag (o, "use_dora", file, &dora, error))
    return FALSE;
  if (fifo || dora)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key %s: expected false (plain LoRA on Linear weights), found true", file,
                    fifo ? "fan_in_fan_out" : "use_dora");
      return FALSE;
    }
  pc->rank_pattern = cfg_object (o, "rank_pattern");
  pc->alpha_pattern = cfg_object (o, "alpha_pattern");
  return TRUE;
}

/* pattern[key] for the first key naming `module` (equal, or a suffix after a dot). */
static gboolean
pattern_lookup (JsonObject *pattern, const char *module, double *out)
{
  if (pattern == NULL)
    return FALSE;
  g_autoptr (GList) keys = json_object_get_members (pattern);
  for (GList *k = keys; k; k = k->next)
    {
      const char *key = k->data;
      gsize mn = strlen (module), kn = strlen (key);
      gboolean match = strcmp (module, key) == 0 || (mn > kn && module[mn - kn - 1] == '.' && strcmp (module + mn - kn, key) == 0);
      JsonNode *n = json_object_get_member (pattern, key);
      if (match && JSON_NODE_HOLDS_VALUE (n)
          && (json_node_get_value_type (n) == G_TYPE_INT64 || json_node_get_value_type (n) == G_TYPE_DOUBLE))
        {
          *out = json_node_get_value_type (n) == G_TYPE_INT64 ? (double) json_node_get_int (n) : json_node_get_double (n);
          return TRUE;
        }
    }
  return FALSE;
}

/* The module of a PEFT tensor name and which factor it is (0 A, 1 B); NULL
 * with an error for anything but a Linear's LoRA factor. */
static char *
tensor_module (const char *name, const char *file, int *which, GError **error)
{
  const char *suffixes[2] = { ".lora_A.weight", ".lora_B.weight" };
  for (int w = 0; w < 2; w++)
    if (g_str_has_prefix (name, PEFT_PREFIX) && g_str_has_suffix (name, suffixes[w]))
      {
        *which = w;
        const char *m = name + strlen (PEFT_PREFIX);
        return g_strndup (m, strlen (m) - strlen (suffixes[w]));
      }
  lp_set_error (error, LP_ERROR_UNSUPPORTED,
                "%s: tensor %s: expected " PEFT_PREFIX "<module>.lora_A.weight or .lora_B.weight (LoRA on Linear layers), found another name",
                file, name);
  return NULL;
}

/* One module's pair: the GGUF weight, B's rows back in GGUF order, the scale. */
static LpAdapterPair *
module_pair (LpModel *base, const PeftConfig *pc, GHashTable *permuted, const char *module, LpTensor *a, LpTensor *b,
             const char *file, GError **error)
{
  const LpModelConfig *c = lp_model_config (base);
  g_autofree char *hf = g_strconcat (module, ".weight", NULL);
  g_autofree char *name = lp_arch_name_from_hf (c, hf);
  if (name == NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: tensor " PEFT_PREFIX "%s.lora_A.weight: expected a module of the base model (%s), found none (hint: wrong base model?)",
                    file, module, lp_arch_info (c->arch)->name);
      return NULL;
    }
  double r = pc->r, alpha = pc->alpha;
  pattern_lookup (pc->rank_pattern, module, &r);
  pattern_lookup (pc->alpha_pattern, module, &alpha);
  if (a->n_dims != 2 || (double) a->shape[0] != r)
    {
      g_autofree char *s = lp_tensor_shape_string (a);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor " PEFT_PREFIX "%s.lora_A.weight: expected rank %g (r or rank_pattern), found shape %s",
                    file, module, r, s);
      return NULL;
    }
  /* B of another shape than the weight's is refused by lp_model_apply_adapter, with the shapes. */
  LpTensor *w = lp_model_tensor (base, name);
  gboolean permute = g_hash_table_contains (permuted, name) && w != NULL && b->n_dims == 2 && b->shape[0] == w->shape[0];
  g_autoptr (LpTensor) b_gguf = permute ? lp_hf_permute_qk (c, b, name, FALSE, file, error) : lp_tensor_ref (b);
  if (b_gguf == NULL)
    return NULL;
  double scale = pc->rslora ? alpha / sqrt (r) : alpha / r;
  g_autofree char *what = g_strconcat (PEFT_PREFIX, module, ".lora_A.weight", NULL);
  return lp_adapter_pair_new (name, what, a, b_gguf, scale);
}

GPtrArray *
lp_lora_peft_read (const char *path, LpModel *base, GError **error)
{
  g_autofree char *cfg_path = g_build_filename (path, "adapter_config.json", NULL);
  g_autofree char *st_path = g_build_filename (path, "adapter_model.safetensors", NULL);
  if (!g_file_test (cfg_path, G_FILE_TEST_EXISTS))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: expected a PEFT adapter directory (adapter_config.json), found none", path);
      return NULL;
    }
  if (!g_file_test (st_path, G_FILE_TEST_EXISTS))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: expected adapter_model.safetensors, found none (adapter_model.bin, a pickle, is not read)", path);
      return NULL;
    }
  g_autoptr (JsonNode) root = lp_json_load_object (cfg_path, error);
  PeftConfig pc = { 0 };
  if (root == NULL || !read_config (json_node_get_object (root), cfg_path, &pc, error))
    return NULL;
  g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, error);
  if (st == NULL)
    return NULL;
  /* module -> [A, B] (borrowed from st), in the order first seen. */
  g_autoptr (GHashTable) ab = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr (GPtrArray) order = g_ptr_array_new ();
  for (guint i = 0; i < lp_safetensors_n_tensors (st); i++)
    {
      LpTensor *t = lp_safetensors_tensor_at (st, i);
      int which;
      char *module = tensor_module (t->name, st_path, &which, error);
      if (module == NULL)
        return NULL;
      LpTensor **slot = g_hash_table_lookup (ab, module);
      if (slot == NULL)
        {
          slot = g_new0 (LpTensor *, 2);
          g_ptr_array_add (order, module);
          g_hash_table_insert (ab, module, slot);
        }
      else
        g_free (module);
      slot[which] = t;
    }
  g_autoptr (GHashTable) permuted = lp_hf_permuted_names (lp_model_config (base));
  g_autoptr (GPtrArray) pairs = g_ptr_array_new_with_free_func (lp_adapter_pair_free);
  for (guint i = 0; i < order->len; i++)
    {
      LpTensor **slot = g_hash_table_lookup (ab, order->pdata[i]);
      if (slot[0] == NULL || slot[1] == NULL)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: module %s: expected lora_A and lora_B, found only %s", st_path,
                        (char *) order->pdata[i], slot[0] ? "lora_A" : "lora_B");
          return NULL;
        }
      LpAdapterPair *p = module_pair (base, &pc, permuted, order->pdata[i], slot[0], slot[1], st_path, error);
      if (p == NULL)
        return NULL;
      g_ptr_array_add (pairs, p);
    }
  return g_steal_pointer (&pairs);
}
