/* llmpress — Hugging Face model directories (what save_pretrained writes):
 *   config.json                        hyper-parameters (LlamaConfig & co.)
 *   model.safetensors                  the weights, or shards
 *   model-0000i-of-0000N.safetensors   listed by model.safetensors.index.json
 *                                      ({"metadata": {"total_size"}, "weight_map": {name: file}})
 *   generation_config.json             bos/eos ids
 *   tokenizer.model / tokenizer.json   the vocabulary
 * Tensor names map to GGUF's through the arch tables; for archs that use
 * Meta's interleaved RoPE, HF holds Q/K rows in rotate-half order, so those
 * two tensors are permuted on the way in and out (copies; everything else
 * stays a slice of the mapped files). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "gptq-pack.h"
#include "formats-internal.h"

/* ---- config.json ---- */

/* transformers' class defaults, which apply when config.json omits a key. */
typedef struct {
  double rope_theta;
  double rms_norm_eps;
  gint64 max_position_embeddings;
} HfDefaults;

static const HfDefaults hf_defaults[LP_ARCH_COUNT] = {
  [LP_ARCH_LLAMA] = { 10000.0, 1e-6, 2048 },
  [LP_ARCH_MISTRAL] = { 10000.0, 1e-6, 4096 * 32 },
  [LP_ARCH_QWEN2] = { 10000.0, 1e-6, 32768 },
};

/* A member, or NULL when absent or null (transformers treats both as unset). */
static JsonNode *
cfg_member (JsonObject *o, const char *key)
{
  JsonNode *n = json_object_get_member (o, key);
  return n == NULL || JSON_NODE_HOLDS_NULL (n) ? NULL : n;
}

static gboolean
cfg_missing (const char *path, const char *key, const char *expected, GError **error)
{
  lp_set_error (error, LP_ERROR_MISSING, "%s: key %s: expected %s, found none", path, key, expected);
  return FALSE;
}

static gboolean
cfg_mistyped (const char *path, const char *key, const char *expected, JsonNode *n, GError **error)
{
  g_autofree char *found = lp_json_describe (n);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected %s, found %s", path, key, expected, found);
  return FALSE;
}

/* A member of JSON type t1 or t2, for the typed getters below: NULL when
 * absent (an error if required) or of another type (an error).  `prefix`
 * names the enclosing object in messages ("rope_scaling."). */
static JsonNode *
cfg_typed (const char *path, JsonObject *o, const char *prefix, const char *key, gboolean required,
           const char *expected, GType t1, GType t2, gboolean *ok, GError **error)
{
  g_autofree char *full = g_strconcat (prefix, key, NULL);
  JsonNode *n = cfg_member (o, key);
  GType t = n != NULL && JSON_NODE_HOLDS_VALUE (n) ? json_node_get_value_type (n) : G_TYPE_INVALID;
  if (n == NULL)
    *ok = !required || cfg_missing (path, full, expected, error);
  else if (t != t1 && t != t2)
    *ok = cfg_mistyped (path, full, expected, n, error);
  else
    return n;
  return NULL;
}

/* The number after "key": in the file at `path`, as written there, or NULL. */
static char *
cfg_number_text (const char *path, const char *key)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  return g_file_get_contents (path, &text, &len, NULL) ? lp_json_number_text (text, len, key) : NULL;
}

static gboolean
cfg_int (const char *path, JsonObject *o, const char *prefix, const char *key, gboolean required,
         gint64 *out, GError **error)
{
  gboolean ok = TRUE;
  JsonNode *n = cfg_typed (path, o, prefix, key, required, "an integer", G_TYPE_INT64, G_TYPE_INT64, &ok, error);
  if (n == NULL)
    return ok;
  *out = json_node_get_int (n);
  /* json-glib wraps what does not fit 64 bits (2^64 reads as -1) and no
   * size is above 2^53: say what the file holds, as written there. */
  const gint64 max = G_GINT64_CONSTANT (1) << 53;
  if (*out < 0 || *out > max)
    {
      g_autofree char *raw = cfg_number_text (path, key);
      g_autofree char *printed = g_strdup_printf ("%" G_GINT64_FORMAT, *out);
      if (*out > max || raw == NULL || strcmp (raw, printed) != 0)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s%s: expected an integer of at most 2^53, found %s", path,
                        prefix, key, raw ? raw : printed);
          return FALSE;
        }
    }
  return ok;
}

static gboolean
cfg_float (const char *path, JsonObject *o, const char *prefix, const char *key, gboolean required,
           double *out, GError **error)
{
  gboolean ok = TRUE;
  JsonNode *n = cfg_typed (path, o, prefix, key, required, "a number", G_TYPE_INT64, G_TYPE_DOUBLE, &ok, error);
  if (n != NULL)
    *out = json_node_get_value_type (n) == G_TYPE_INT64 ? (double) json_node_get_int (n) : json_node_get_double (n);
  return ok;
}

static gboolean
cfg_bool (const char *path, JsonObject *o, const char *key, gboolean *out, GError **error)
{
  gboolean ok = TRUE;
  JsonNode *n = cfg_typed (path, o, "", key, FALSE, "true or false", G_TYPE_BOOLEAN, G_TYPE_BOOLEAN, &ok, error);
  if (n != NULL)
    *out = json_node_get_boolean (n);
  return ok;
}

static const char *
cfg_string (JsonObject *o, const char *key)
{
  JsonNode *n = cfg_member (o, key);
  return n != NULL && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING
         ? json_node_get_string (n) : NULL;
}

static gboolean
cfg_arch (const char *path, JsonObject *o, LpArch *arch, GError **error)
{
  JsonNode *type = cfg_member (o, "model_type");
  if (type != NULL)
    {
      const char *s = cfg_string (o, "model_type");
      const LpArchInfo *info = s ? lp_arch_lookup (s) : NULL;
      if (info == NULL)
        {
          g_autofree char *found = lp_json_describe (type);
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key model_type: expected one of %s, found %s",
                        path, lp_arch_known_names (), found);
          return FALSE;
        }
      *arch = info->arch;
      return TRUE;
    }
  /* Old configs carry only the class name. */
  JsonNode *classes = cfg_member (o, "architectures");
  if (classes != NULL && JSON_NODE_HOLDS_ARRAY (classes) && json_array_get_length (json_node_get_array (classes)) > 0)
    {
      JsonNode *first = json_array_get_element (json_node_get_array (classes), 0);
      const char *s = JSON_NODE_HOLDS_VALUE (first) && json_node_get_value_type (first) == G_TYPE_STRING
                      ? json_node_get_string (first) : NULL;
      const LpArchInfo *info = s ? lp_arch_lookup (s) : NULL;
      if (info == NULL)
        {
          g_autofree char *found = lp_json_describe (first);
          lp_set_error (error, LP_ERROR_UNSUPPORTED,
                        "%s: key architectures[0]: expected one of LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, found %s",
                        path, found);
          return FALSE;
        }
      *arch = info->arch;
      return TRUE;
    }
  lp_set_error (error, LP_ERROR_MISSING, "%s: key model_type: expected one of %s, found none",
                path, lp_arch_known_names ());
  return FALSE;
}

static gboolean
cfg_rope_scaling (const char *path, JsonObject *o, LpModelConfig *c, GError **error)
{
  JsonNode *n = cfg_member (o, "rope_scaling");
  if (n == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_OBJECT (n))
    return cfg_mistyped (path, "rope_scaling", "an object or null", n, error);
  JsonObject *rs = json_node_get_object (n);
  /* transformers renamed "type" to "rope_type"; files have either. */
  const char *key = cfg_member (rs, "rope_type") ? "rope_type" : "type";
  const char *type = cfg_string (rs, key);
  if (type == NULL)
    {
      JsonNode *t = cfg_member (rs, key);
      return t ? cfg_mistyped (path, "rope_scaling.rope_type", "a string", t, error)
               : cfg_missing (path, "rope_scaling.rope_type", "a string", error);
    }
  if (strcmp (type, "default") == 0)
    return TRUE;
  if (strcmp (type, "linear") == 0)
    {
      c->rope_scaling = LP_ROPE_SCALING_LINEAR;
      return cfg_float (path, rs, "rope_scaling.", "factor", TRUE, &c->rope_factor, error);
    }
  if (strcmp (type, "llama3") == 0)
    {
      c->rope_scaling = LP_ROPE_SCALING_LLAMA3;
      return cfg_float (path, rs, "rope_scaling.", "factor", TRUE, &c->rope_factor, error)
             && cfg_float (path, rs, "rope_scaling.", "low_freq_factor", TRUE, &c->rope_low_freq_factor, error)
             && cfg_float (path, rs, "rope_scaling.", "high_freq_factor", TRUE, &c->rope_high_freq_factor, error)
             && cfg_int (path, rs, "rope_scaling.", "original_max_position_embeddings", TRUE, &c->rope_orig_ctx, error);
    }
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key rope_scaling.%s: expected \"linear\", \"llama3\" or \"default\", found \"%s\"",
                path, key, type);
  return FALSE;
}

static gboolean
cfg_read (const char *path, JsonObject *o, LpModelConfig *c, GError **error)
{
  LpArch arch;
  if (!cfg_arch (path, o, &arch, error))
    return FALSE;
  lp_model_config_init (c, arch);
  const HfDefaults *d = &hf_defaults[arch];
  c->rope_theta = d->rope_theta;
  c->norm_eps = d->rms_norm_eps;
  c->ctx_len = d->max_position_embeddings;
  c->tied_embeddings = FALSE;
  c->n_kv_heads = 0;
  if (!cfg_int (path, o, "", "hidden_size", TRUE, &c->dim, error)
      || !cfg_int (path, o, "", "intermediate_size", TRUE, &c->ffn_dim, error)
      || !cfg_int (path, o, "", "num_hidden_layers", TRUE, &c->n_layers, error)
      || !cfg_int (path, o, "", "num_attention_heads", TRUE, &c->n_heads, error)
      || !cfg_int (path, o, "", "vocab_size", TRUE, &c->n_vocab, error)
      || !cfg_int (path, o, "", "num_key_value_heads", FALSE, &c->n_kv_heads, error)
      || !cfg_int (path, o, "", "head_dim", FALSE, &c->head_dim, error)
      || !cfg_int (path, o, "", "max_position_embeddings", FALSE, &c->ctx_len, error)
      || !cfg_float (path, o, "", "rope_theta", FALSE, &c->rope_theta, error)
      || !cfg_float (path, o, "", "rms_norm_eps", FALSE, &c->norm_eps, error)
      || !cfg_bool (path, o, "tie_word_embeddings", &c->tied_embeddings, error)
      || !cfg_rope_scaling (path, o, c, error))
    return FALSE;
  if (c->n_kv_heads == 0)
    c->n_kv_heads = c->n_heads;
  const char *keys[LP_CONFIG_N_KEYS] = {
    [LP_CONFIG_VOCAB] = "vocab_size", [LP_CONFIG_DIM] = "hidden_size", [LP_CONFIG_FFN] = "intermediate_size",
    [LP_CONFIG_LAYERS] = "num_hidden_layers", [LP_CONFIG_HEADS] = "num_attention_heads",
    [LP_CONFIG_KV_HEADS] = "num_key_value_heads", [LP_CONFIG_CTX] = "max_position_embeddings",
    [LP_CONFIG_EPS] = "rms_norm_eps", [LP_CONFIG_THETA] = "rope_theta",
    [LP_CONFIG_ROPE_FACTOR] = "rope_scaling.factor", [LP_CONFIG_ROPE_LOW] = "rope_scaling.low_freq_factor",
    [LP_CONFIG_ROPE_HIGH] = "rope_scaling.high_freq_factor",
    [LP_CONFIG_ROPE_ORIG] = "rope_scaling.original_max_position_embeddings",
  };
  /* A head dimension the file does not give is named by what it is. */
  if (c->head_dim != 0)
    keys[LP_CONFIG_HEAD_DIM] = "head_dim";
  return lp_model_config_derive_head_dim (c, path, keys, error) && lp_model_config_check_keys (c, path, keys, error);
}

/* bos/eos from config.json when the tokenizer did not say (eos may be a list:
 * GGUF has one eos, the first).  An id past the vocabulary is ignored with a
 * warning, as lp_model_drop_bad_token_ids does for GGUF keys. */
static void
cfg_special_ids (const char *path, JsonObject *o, const LpModelConfig *c, LpMeta *meta)
{
  static const char *const keys[][2] = {
    { "bos_token_id", "tokenizer.ggml.bos_token_id" },
    { "eos_token_id", "tokenizer.ggml.eos_token_id" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (keys); i++)
    {
      JsonNode *n = cfg_member (o, keys[i][0]);
      if (n != NULL && JSON_NODE_HOLDS_ARRAY (n) && json_array_get_length (json_node_get_array (n)) > 0)
        n = json_array_get_element (json_node_get_array (n), 0);
      if (n == NULL || lp_meta_has (meta, keys[i][1]) || !JSON_NODE_HOLDS_VALUE (n)
          || json_node_get_value_type (n) != G_TYPE_INT64)
        continue;
      gint64 id = json_node_get_int (n);
      if (id >= 0 && id < c->n_vocab)
        lp_meta_set_u32 (meta, keys[i][1], (guint32) id);
      else
        {
          /* -1 means none; json-glib also reads 2^64 as -1. */
          g_autofree char *raw = cfg_number_text (path, keys[i][0]);
          if (id == -1 && g_strcmp0 (raw, "-1") == 0)
            continue;
          lp_warn ("%s: key %s: expected a token id below the vocabulary size %" G_GINT64_FORMAT ", found %s; ignored",
                   path, keys[i][0], c->n_vocab, raw ? raw : "a number out of range");
        }
    }
}

/* ---- weights ---- */

LpTensor *
lp_hf_permute_qk (const LpModelConfig *c, const LpTensor *t, const char *name, gboolean to_hf,
               const char *where, GError **error)
{
  gint64 heads = strstr (name, ".attn_q.") != NULL ? c->n_heads : c->n_kv_heads;
  if (t->shape[0] != heads * c->head_dim || (t->n_dims == 1 && lp_dtype_info (t->dtype)->block_size > 1))
    {
      g_autofree char *found = lp_tensor_shape_string (t);
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: tensor %s: expected %" G_GINT64_FORMAT " rows (%" G_GINT64_FORMAT " heads x %" G_GINT64_FORMAT "), found shape %s",
                    where, t->name, heads * c->head_dim, heads, c->head_dim, found);
      return NULL;
    }
  LpTensor *out = lp_tensor_new (name, t->dtype, t->n_dims, t->shape, error);
  if (out == NULL)
    return NULL;
  gsize n = lp_tensor_n_bytes (t);
  memcpy (lp_tensor_data_mut (out), lp_tensor_data (t), n);
  lp_arch_permute_qk (lp_tensor_data_mut (out), heads, c->head_dim, n / t->shape[0], to_hf);
  return out;
}

GHashTable *
lp_hf_permuted_names (const LpModelConfig *c)
{
  GHashTable *set = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr (GPtrArray) specs = lp_arch_tensor_specs (c);
  for (guint i = 0; i < specs->len; i++)
    {
      const LpTensorSpec *s = specs->pdata[i];
      if (s->hf_permute)
        g_hash_table_add (set, g_strdup (s->name));
    }
  return set;
}

/* The parts of a GPTQ and of a compressed-tensors checkpoint's linear layer. */
static const char *const gptq_parts[] = { ".qweight", ".qzeros", ".scales", ".g_idx" };
enum { CT_PACKED, CT_SCALE, CT_ZERO_POINT, CT_SHAPE, CT_G_IDX, CT_N_PARTS };
static const char *const ct_parts[CT_N_PARTS] = { ".weight_packed", ".weight_scale", ".weight_zero_point",
                                                  ".weight_shape", ".weight_g_idx" };

static gboolean
is_gptq_part (const char *name)
{
  for (guint i = 0; i < G_N_ELEMENTS (gptq_parts); i++)
    if (g_str_has_suffix (name, gptq_parts[i]))
      return TRUE;
  for (guint i = 0; i < G_N_ELEMENTS (ct_parts); i++)
    if (g_str_has_suffix (name, ct_parts[i]))
      return TRUE;
  return FALSE;
}

static gboolean
hf_take_tensor (LpModel *model, GHashTable *permute, GHashTable *pending, LpTensor *t, const char *file,
                GError **error)
{
  /* Older exports saved RoPE's cached frequencies; they follow from the config. */
  if (g_str_has_suffix (t->name, ".rotary_emb.inv_freq"))
    return TRUE;
  /* GPTQ layers are assembled once every file is read (their parts may lie
   * in different shards). */
  if (is_gptq_part (t->name))
    {
      g_hash_table_insert (pending, g_strdup (t->name), lp_tensor_ref (t));
      return TRUE;
    }
  const LpModelConfig *c = lp_model_config (model);
  /* A form's part <weight><suffix> is named after its weight. */
  gsize weight_len;
  const LpFormPart *part = lp_form_part_find (t->name, &weight_len);
  g_autofree char *hf_weight = g_strndup (t->name, part ? weight_len : strlen (t->name));
  g_autofree char *weight = lp_arch_name_from_hf (c, hf_weight);
  g_autofree char *name = weight ? g_strconcat (weight, part ? part->suffix : "", NULL) : NULL;
  if (name == NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: tensor %s: expected a %s tensor (model.embed_tokens.weight, model.layers.0..%" G_GINT64_FORMAT ".*, model.norm.weight, lm_head.weight), found an unknown name",
                    file, t->name, lp_arch_info (c->arch)->name, c->n_layers - 1);
      return FALSE;
    }
  /* transformers ties lm_head to the embedding and ignores a stored copy. */
  if (c->tied_embeddings && strcmp (name, "output.weight") == 0)
    return TRUE;
  if (lp_model_tensor (model, name) != NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected once in the directory, found twice", file, t->name);
      return FALSE;
    }
  g_autoptr (LpTensor) out = g_hash_table_contains (permute, weight) && (part == NULL || part->weight_rows)
                             ? lp_hf_permute_qk (c, t, name, FALSE, file, error)
                             : lp_tensor_rename (t, name);
  if (out == NULL)
    return FALSE;
  lp_model_set_tensor (model, out);
  return TRUE;
}

/* The shard list of model.safetensors.index.json: files in first-seen order,
 * and weight_map (tensor -> file). */
static gboolean
hf_read_index (const char *path, GPtrArray *files, GHashTable *weight_map, GError **error)
{
  g_autoptr (JsonNode) root = lp_json_load_object (path, error);
  if (root == NULL)
    return FALSE;
  JsonNode *wm = json_object_get_member (json_node_get_object (root), "weight_map");
  if (wm == NULL)
    return cfg_missing (path, "weight_map", "an object of tensor name -> file", error);
  if (!JSON_NODE_HOLDS_OBJECT (wm))
    return cfg_mistyped (path, "weight_map", "an object of tensor name -> file", wm, error);
  JsonObject *o = json_node_get_object (wm);
  g_autoptr (GList) names = json_object_get_members (o);
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  for (GList *l = names; l != NULL; l = l->next)
    {
      JsonNode *v = json_object_get_member (o, l->data);
      g_autofree char *key = g_strconcat ("weight_map.", (const char *) l->data, NULL);
      const char *file = JSON_NODE_HOLDS_VALUE (v) && json_node_get_value_type (v) == G_TYPE_STRING
                         ? json_node_get_string (v) : NULL;
      /* Shards live in the directory: no path may lead out of it. */
      if (file == NULL || *file == '\0' || strchr (file, '/') != NULL || strcmp (file, "..") == 0
          || strcmp (file, ".") == 0)
        return cfg_mistyped (path, key, "a file name in the directory", v, error);
      g_hash_table_insert (weight_map, g_strdup (l->data), g_strdup (file));
      if (g_hash_table_add (seen, (gpointer) file))
        g_ptr_array_add (files, g_strdup (file));
    }
  if (files->len == 0)
    return cfg_missing (path, "weight_map", "at least one tensor", error);
  return TRUE;
}

/* Our own metadata (llmpress.*: the sparsity records of a pruned model,
 * ...) travels in each shard's __metadata__ as text, since config.json has
 * no place for it; numbers come back as F64, the rest as strings. */
static GHashTable *
hf_llmpress_metadata (LpModel *model)
{
  GHashTable *h = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr (LpMeta) meta = lp_meta_copy (lp_model_meta (model));
  lp_model_forms_save_meta (model, meta);
  for (guint i = 0; i < lp_meta_n_keys (meta); i++)
    {
      const char *k = lp_meta_key (meta, i);
      const LpValue *v = lp_meta_get (meta, k);
      if (g_str_has_prefix (k, "llmpress."))
        g_hash_table_insert (h, g_strdup (k), v->type == LP_VALUE_STRING ? g_strdup (v->s) : lp_value_to_string (v, G_MAXUINT));
    }
  return h;
}

static void
hf_read_llmpress_metadata (GHashTable *st_meta, LpMeta *meta)
{
  g_autoptr (GPtrArray) keys = g_ptr_array_new ();
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, st_meta);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (g_str_has_prefix (k, "llmpress."))
      g_ptr_array_add (keys, k);
  g_ptr_array_sort (keys, lp_compare_str_ptr); /* a stable key order in the model */
  for (guint i = 0; i < keys->len; i++)
    {
      const char *text = g_hash_table_lookup (st_meta, keys->pdata[i]);
      char *end = NULL;
      double f = g_ascii_strtod (text, &end);
      if (*text != '\0' && end != NULL && *end == '\0')
        {
          LpValue *val = g_new0 (LpValue, 1);
          val->type = LP_VALUE_F64;
          val->f = f;
          lp_meta_set (meta, keys->pdata[i], val);
        }
      else
        lp_meta_set_string (meta, keys->pdata[i], text);
    }
}

/* GPTQ's quantization_config (config.json), as far as reading needs it. */
typedef struct {
  gboolean present;
  int bits, group_size;
  gboolean sym;
  int zero_bias;     /* the "gptq" checkpoint format stores zero - 1; "gptq_v2" the zero */
  gboolean ct;       /* compressed-tensors pack-quantized rather than GPTQ */
} HfGptq;

/* The grid of HF linear layer PREFIX (from its part `key`) as our tensor,
 * rows back in GGUF's rotary order for Q/K. */
static gboolean
hf_set_grid_layer (LpModel *model, GHashTable *permute, const char *prefix, const char *key, LpIntGrid *grid_in,
                   const char *dir, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  g_autoptr (LpIntGrid) grid = lp_int_grid_ref (grid_in);
  g_autofree char *hf_weight = g_strconcat (prefix, ".weight", NULL);
  g_autofree char *name = lp_arch_name_from_hf (c, hf_weight);
  if (name == NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected a linear layer of a %s block, found an unknown name",
                    dir, key, lp_arch_info (c->arch)->name);
      return FALSE;
    }
  if (g_hash_table_contains (permute, name))
    {
      gint64 heads = strstr (name, ".attn_q.") != NULL ? c->n_heads : c->n_kv_heads;
      if (grid->rows != heads * c->head_dim)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected %" G_GINT64_FORMAT " outputs, found %" G_GINT64_FORMAT,
                        dir, key, heads * c->head_dim, grid->rows);
          return FALSE;
        }
      LpIntGrid *p = lp_int_grid_permute_rows (grid, heads, c->head_dim, FALSE);
      lp_int_grid_unref (grid);
      grid = p;
    }
  gint64 shape[2] = { grid->rows, grid->cols };
  g_autoptr (LpTensor) t = lp_tensor_new_int_grid (name, 2, shape, grid, NULL, error);
  if (t == NULL)
    return FALSE;
  lp_model_set_tensor (model, t);
  return TRUE;
}

/* Each pending PREFIX.weight_packed with its scale, shape and (asymmetric)
 * zero point and (act-order) g_idx becomes the integer-grid tensor of
 * PREFIX.weight. */
static gboolean
hf_assemble_ct (LpModel *model, GHashTable *permute, GHashTable *pending, const HfGptq *q, const char *dir,
                GError **error)
{
  g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (pending), (GCompareFunc) strcmp);
  for (GList *k = keys; k; k = k->next)
    {
      const char *key = k->data;
      if (!g_str_has_suffix (key, ct_parts[CT_PACKED]))
        continue;
      g_autofree char *prefix = g_strndup (key, strlen (key) - strlen (ct_parts[CT_PACKED]));
      LpTensor *part[CT_N_PARTS];
      for (int i = 0; i < CT_N_PARTS; i++)
        {
          g_autofree char *name = g_strconcat (prefix, ct_parts[i], NULL);
          part[i] = g_hash_table_lookup (pending, name);
          gboolean needed = i == CT_SCALE || i == CT_SHAPE || (i == CT_ZERO_POINT && !q->sym);
          if (part[i] == NULL && needed)
            {
              lp_set_error (error, LP_ERROR_MISSING, "%s: tensor %s: expected beside %s, not found", dir, name, key);
              return FALSE;
            }
        }
      g_autoptr (LpIntGrid) grid = lp_ct_unpack (part[CT_PACKED], part[CT_SCALE], q->sym ? NULL : part[CT_ZERO_POINT],
                                                 part[CT_SHAPE], part[CT_G_IDX], q->bits, q->group_size, q->sym, dir, error);
      if (grid == NULL || !hf_set_grid_layer (model, permute, prefix, key, grid, dir, error))
        return FALSE;
    }
  return TRUE;
}

/* Each pending PREFIX.qweight with its qzeros, scales and g_idx becomes the
 * integer-grid tensor of PREFIX.weight. */
static gboolean
hf_assemble_gptq (LpModel *model, GHashTable *permute, GHashTable *pending, const HfGptq *q, const char *dir,
                  GError **error)
{
  if (g_hash_table_size (pending) == 0)
    return TRUE;
  if (!q->present)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: config.json: expected a quantization_config (quant_method gptq or "
                    "compressed-tensors) for the quantized tensors (*.qweight, *.weight_packed), found none", dir);
      return FALSE;
    }
  if (q->ct)
    return hf_assemble_ct (model, permute, pending, q, dir, error);
  g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (pending), (GCompareFunc) strcmp);
  for (GList *k = keys; k; k = k->next)
    {
      const char *key = k->data;
      if (!g_str_has_suffix (key, ".qweight"))
        continue;
      g_autofree char *prefix = g_strndup (key, strlen (key) - strlen (".qweight"));
      LpTensor *part[4];
      for (guint i = 0; i < 4; i++)
        {
          g_autofree char *name = g_strconcat (prefix, gptq_parts[i], NULL);
          part[i] = g_hash_table_lookup (pending, name);
          if (part[i] == NULL)
            {
              lp_set_error (error, LP_ERROR_MISSING, "%s: tensor %s: expected beside %s, not found", dir, name, key);
              return FALSE;
            }
        }
      g_autoptr (LpIntGrid) grid = lp_gptq_unpack (part[0], part[1], part[2], part[3], q->bits, q->group_size, q->sym,
                                                   q->zero_bias, dir, error);
      if (grid == NULL || !hf_set_grid_layer (model, permute, prefix, key, grid, dir, error))
        return FALSE;
    }
  return TRUE;
}

static gboolean
hf_load_weights (LpModel *model, const char *dir, const HfGptq *gptq, GError **error)
{
  g_autofree char *index = g_build_filename (dir, "model.safetensors.index.json", NULL);
  g_autofree char *single = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GHashTable) weight_map = NULL;
  if (g_file_test (index, G_FILE_TEST_EXISTS))
    {
      weight_map = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      if (!hf_read_index (index, files, weight_map, error))
        return FALSE;
    }
  else if (g_file_test (single, G_FILE_TEST_EXISTS))
    g_ptr_array_add (files, g_strdup ("model.safetensors"));
  else
    {
      g_autofree char *bin = g_build_filename (dir, "pytorch_model.bin", NULL);
      lp_set_error (error, LP_ERROR_MISSING, "%s: expected model.safetensors or model.safetensors.index.json, found neither%s",
                    dir, g_file_test (bin, G_FILE_TEST_EXISTS) ? " (pytorch_model.bin is not read: convert it to safetensors)" : "");
      return FALSE;
    }

  g_autoptr (GHashTable) permute = lp_hf_permuted_names (lp_model_config (model));
  g_autoptr (GHashTable) found = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr (GHashTable) pending = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) lp_tensor_unref);
  for (guint f = 0; f < files->len; f++)
    {
      g_autofree char *path = g_build_filename (dir, (const char *) files->pdata[f], NULL);
      if (weight_map != NULL && !g_file_test (path, G_FILE_TEST_EXISTS))
        {
          lp_set_error (error, LP_ERROR_MISSING, "%s: weight_map: expected shard %s, found no such file",
                        index, (const char *) files->pdata[f]);
          return FALSE;
        }
      g_autoptr (LpSafetensors) st = lp_safetensors_open (path, error);
      if (st == NULL)
        return FALSE;
      hf_read_llmpress_metadata (lp_safetensors_metadata (st), lp_model_meta (model));
      for (guint i = 0; i < lp_safetensors_n_tensors (st); i++)
        {
          LpTensor *t = lp_safetensors_tensor_at (st, i);
          if (weight_map != NULL)
            {
              const char *listed = g_hash_table_lookup (weight_map, t->name);
              if (listed == NULL || strcmp (listed, files->pdata[f]) != 0)
                {
                  lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected weight_map to list it in %s, found %s",
                                index, t->name, (const char *) files->pdata[f], listed ? listed : "no entry");
                  return FALSE;
                }
              g_hash_table_add (found, g_strdup (t->name));
            }
          if (!hf_take_tensor (model, permute, pending, t, path, error))
            return FALSE;
        }
    }
  if (weight_map != NULL)
    {
      GHashTableIter it;
      gpointer name, file;
      g_hash_table_iter_init (&it, weight_map);
      while (g_hash_table_iter_next (&it, &name, &file))
        if (!g_hash_table_contains (found, name))
          {
            lp_set_error (error, LP_ERROR_MISSING, "%s: weight_map.%s: expected the tensor in %s, not found",
                          index, (const char *) name, (const char *) file);
            return FALSE;
          }
    }
  return hf_assemble_gptq (model, permute, pending, gptq, dir, error);
}

/* quantization_config of a compressed-tensors checkpoint: one config group
 * of integer weights (the layers it leaves out are dense and need no rule). */
static gboolean
cfg_compressed_tensors (const char *path, JsonObject *o, HfGptq *q, GError **error)
{
  JsonNode *groups = json_object_get_member (o, "config_groups");
  if (groups == NULL || !JSON_NODE_HOLDS_OBJECT (groups) || json_object_get_size (json_node_get_object (groups)) != 1)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: quantization_config.config_groups: expected one group, found %u",
                    path, groups && JSON_NODE_HOLDS_OBJECT (groups) ? json_object_get_size (json_node_get_object (groups)) : 0);
      return FALSE;
    }
  g_autoptr (GList) names = json_object_get_members (json_node_get_object (groups));
  JsonNode *gn = json_object_get_member (json_node_get_object (groups), names->data);
  JsonObject *g = JSON_NODE_HOLDS_OBJECT (gn) ? json_node_get_object (gn) : NULL;
  JsonNode *wn = g ? json_object_get_member (g, "weights") : NULL;
  JsonObject *w = wn && JSON_NODE_HOLDS_OBJECT (wn) ? json_node_get_object (wn) : NULL;
  const char *format = cfg_string (o, "format");
  if (g && cfg_string (g, "format"))
    format = cfg_string (g, "format");
  const char *type = w ? cfg_string (w, "type") : NULL;
  const char *strategy = w ? cfg_string (w, "strategy") : NULL;
  if (w == NULL || format == NULL || strcmp (format, "pack-quantized") != 0 || type == NULL || strcmp (type, "int") != 0
      || strategy == NULL || (strcmp (strategy, "group") != 0 && strcmp (strategy, "channel") != 0))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED,
                    "%s: quantization_config: expected format pack-quantized with int weights by group or channel, found "
                    "format %s, weights type %s, strategy %s",
                    path, format ? format : "none", type ? type : "none", strategy ? strategy : "none");
      return FALSE;
    }
  g_autofree char *prefix = g_strdup_printf ("quantization_config.config_groups.%s.weights.", (const char *) names->data);
  gint64 bits = 0, group = 0;
  if (!cfg_int (path, w, prefix, "num_bits", TRUE, &bits, error)
      || (strcmp (strategy, "group") == 0 && !cfg_int (path, w, prefix, "group_size", TRUE, &group, error))
      || !cfg_bool (path, w, "symmetric", &q->sym, error))
    return FALSE;
  if (bits < 2 || bits > 8)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: %snum_bits: expected 2..8, found %" G_GINT64_FORMAT, path, prefix, bits);
      return FALSE;
    }
  q->present = TRUE;
  q->ct = TRUE;
  q->bits = (int) bits;
  q->group_size = (int) group; /* 0: one group per row (channel) */
  return TRUE;
}

static gboolean cfg_gptq_object (const char *path, JsonObject *o, gboolean implied, HfGptq *q, GError **error);

/* quantization_config of a GPTQ checkpoint, or AutoGPTQ's own
 * quantize_config.json beside config.json (checkpoints written before
 * transformers read GPTQ: no quant_method, GPTQ implied); neither: not
 * quantized. */
static gboolean
cfg_gptq (const char *path, JsonObject *cfg, HfGptq *q, GError **error)
{
  memset (q, 0, sizeof *q);
  JsonNode *n = json_object_get_member (cfg, "quantization_config");
  if (n != NULL && JSON_NODE_HOLDS_OBJECT (n))
    return cfg_gptq_object (path, json_node_get_object (n), FALSE, q, error);
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *qc_path = g_build_filename (dir, "quantize_config.json", NULL);
  if (!g_file_test (qc_path, G_FILE_TEST_EXISTS))
    return TRUE;
  g_autoptr (JsonNode) root = lp_json_load_object (qc_path, error);
  return root != NULL && cfg_gptq_object (qc_path, json_node_get_object (root), TRUE, q, error);
}

/* One quantization_config object (implied: quant_method may be absent, GPTQ). */
static gboolean
cfg_gptq_object (const char *path, JsonObject *o, gboolean implied, HfGptq *q, GError **error)
{
  const char *method = cfg_string (o, "quant_method");
  if (implied && method == NULL)
    method = "gptq";
  if (method != NULL && strcmp (method, "compressed-tensors") == 0)
    return cfg_compressed_tensors (path, o, q, error);
  const char *format = cfg_string (o, "checkpoint_format");
  if (method == NULL || strcmp (method, "gptq") != 0
      || (format != NULL && strcmp (format, "gptq") != 0 && strcmp (format, "gptq_v2") != 0))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED,
                    "%s: quantization_config: expected quant_method gptq (checkpoint_format gptq or gptq_v2), found %s%s%s",
                    path, method ? method : "no quant_method", format ? " / " : "", format ? format : "");
      return FALSE;
    }
  gint64 bits = 0, group = 0;
  if (!cfg_int (path, o, "quantization_config.", "bits", TRUE, &bits, error)
      || !cfg_int (path, o, "quantization_config.", "group_size", TRUE, &group, error)
      || !cfg_bool (path, o, "sym", &q->sym, error))
    return FALSE;
  if (bits < 2 || bits > 8)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: quantization_config.bits: expected 2..8, found %" G_GINT64_FORMAT, path, bits);
      return FALSE;
    }
  q->present = TRUE;
  q->bits = (int) bits;
  q->group_size = (int) group;
  q->zero_bias = format != NULL && strcmp (format, "gptq_v2") == 0 ? 0 : 1;
  return TRUE;
}

LpModel *
lp_hf_load (const char *dir, GError **error)
{
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  if (!g_file_test (cfg_path, G_FILE_TEST_EXISTS))
    {
      g_autofree char *found = g_file_test (dir, G_FILE_TEST_IS_DIR) ? g_strdup ("no config.json") : lp_path_describe (dir);
      lp_set_error (error, LP_ERROR_MISSING, "%s: expected a Hugging Face model directory with config.json, found %s",
                    dir, found);
      return NULL;
    }
  g_autoptr (JsonNode) root = lp_json_load_object (cfg_path, error);
  if (root == NULL)
    return NULL;
  JsonObject *cfg = json_node_get_object (root);
  LpModelConfig c;
  if (!cfg_read (cfg_path, cfg, &c, error))
    return NULL;
  HfGptq gptq;
  if (!cfg_gptq (cfg_path, cfg, &gptq, error))
    return NULL;
  g_autoptr (LpModel) model = lp_model_new (&c);
  lp_model_set_source (model, dir, LP_FORMAT_HF);
  if (!hf_load_weights (model, dir, &gptq, error))
    return NULL;

  LpMeta *meta = lp_model_meta (model);
  lp_meta_set_string (meta, "general.architecture", lp_arch_info (c.arch)->name);
  g_autofree char *clean = g_strdup (dir);
  for (gsize n = strlen (clean); n > 1 && clean[n - 1] == '/'; n--)
    clean[n - 1] = '\0';
  g_autofree char *base = g_path_get_basename (clean);
  /* The model's name: config.json's _name_or_path (its last component, as
   * llama.cpp's converter names models), else the directory's name. */
  JsonNode *name_node = json_object_get_member (cfg, "_name_or_path");
  const char *name = name_node && JSON_NODE_HOLDS_VALUE (name_node) ? json_node_get_string (name_node) : NULL;
  g_autofree char *name_base = name && *name ? g_path_get_basename (name) : NULL;
  lp_meta_set_string (meta, "general.name", name_base ? name_base : base);

  g_autofree char *spm = g_build_filename (dir, "tokenizer.model", NULL);
  g_autofree char *tok_json = g_build_filename (dir, "tokenizer.json", NULL);
  if (g_file_test (spm, G_FILE_TEST_EXISTS))
    {
      if (!lp_tokenizer_read_spm (spm, meta, error))
        return NULL;
    }
  else if (g_file_test (tok_json, G_FILE_TEST_EXISTS) && !lp_tokenizer_read_hf (tok_json, meta, error))
    return NULL;
  cfg_special_ids (cfg_path, cfg, &c, meta);
  return g_steal_pointer (&model);
}

/* The model's GPTQ layers: one bits / group size / zero-point rule for all
 * (quantization_config holds one), and the modules written that way. */
typedef struct {
  int n;               /* layers written as GPTQ */
  int bits, group_size;
  gboolean sym, desc_act;
  GPtrArray *modules;  /* "self_attn.q_proj", ... (owned strings) */
  gboolean some_dense; /* a grid tensor that could not be packed went out dense */
  gboolean ct;         /* compressed-tensors pack-quantized instead of GPTQ */
  GPtrArray *ignore;   /* ct: the dense linear modules, "model.layers.0.mlp.down_proj" (owned) */
} PlanGptq;

/* ---- writing ---- */

/* Hyper-parameters that passed through GGUF's f32 fields (1e-5 became
 * 9.99999974e-06): write the shortest decimal naming the same f32, as the
 * original config.json had it. */
static double
clean_double (double v)
{
  float f = (float) v;
  if (!isfinite (v) || (double) f != v)
    return v;
  for (int p = 1; p <= 9; p++)
    {
      char fmt[8], buf[G_ASCII_DTOSTR_BUF_SIZE];
      g_snprintf (fmt, sizeof fmt, "%%.%dg", p);
      double d = g_ascii_strtod (g_ascii_formatd (buf, sizeof buf, fmt, v), NULL);
      if ((float) d == f)
        return d;
    }
  return v;
}

static const char *
torch_dtype_name (LpDType dtype)
{
  switch (dtype)
    {
    case LP_DTYPE_F16: return "float16";
    case LP_DTYPE_BF16: return "bfloat16";
    case LP_DTYPE_F64: return "float64";
    default: return "float32";
    }
}

static gboolean
is_float (LpDType dtype)
{
  return dtype == LP_DTYPE_F32 || dtype == LP_DTYPE_F16 || dtype == LP_DTYPE_BF16 || dtype == LP_DTYPE_F64;
}

/* A token id from tokenizer.ggml.*, if it names a token (GGUF files use
 * 4294967295 for "none"). */
static gboolean
meta_token_id (LpMeta *meta, const char *key, gint64 n_vocab, gint64 *id)
{
  return lp_meta_get_int (meta, key, id, NULL) && *id >= 0 && *id < n_vocab;
}

gboolean
lp_hf_write_json (const char *path, JsonBuilder *b, GError **error)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  json_generator_set_indent (gen, 2);
  gsize len;
  g_autofree char *text = json_generator_to_data (gen, &len);
  g_autofree char *with_nl = g_strconcat (text, "\n", NULL);
  GError *local = NULL;
  if (!g_file_set_contents (path, with_nl, len + 1, &local))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot write: %s", path, local->message);
      g_error_free (local);
      return FALSE;
    }
  return TRUE;
}

static void
add_int (JsonBuilder *b, const char *key, gint64 v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_int_value (b, v);
}

static void
add_double (JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_double_value (b, clean_double (v));
}

static void
add_bool (JsonBuilder *b, const char *key, gboolean v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_boolean_value (b, v);
}

static void
add_null (JsonBuilder *b, const char *key)
{
  json_builder_set_member_name (b, key);
  json_builder_add_null_value (b);
}

static void
add_special_ids (JsonBuilder *b, LpModel *model)
{
  LpMeta *meta = lp_model_meta (model);
  gint64 n_vocab = lp_model_config (model)->n_vocab, id;
  if (meta_token_id (meta, "tokenizer.ggml.bos_token_id", n_vocab, &id))
    add_int (b, "bos_token_id", id);
  if (meta_token_id (meta, "tokenizer.ggml.eos_token_id", n_vocab, &id))
    add_int (b, "eos_token_id", id);
}

/* config.json as save_pretrained writes it: keys sorted. */
/* GPTQ's quantization_config, as AutoGPTQ writes it (keys sorted). */
static void
add_gptq_config (JsonBuilder *b, const PlanGptq *q)
{
  json_builder_set_member_name (b, "quantization_config");
  json_builder_begin_object (b);
  add_int (b, "bits", q->bits);
  json_builder_set_member_name (b, "checkpoint_format");
  json_builder_add_string_value (b, "gptq");
  add_bool (b, "desc_act", q->desc_act);
  add_int (b, "group_size", q->group_size);
  if (q->some_dense)
    {
      /* Only these modules of each block are quantized (AutoGPTQ / optimum). */
      json_builder_set_member_name (b, "modules_in_block_to_quantize");
      json_builder_begin_array (b);
      json_builder_begin_array (b);
      for (guint i = 0; i < q->modules->len; i++)
        json_builder_add_string_value (b, q->modules->pdata[i]);
      json_builder_end_array (b);
      json_builder_end_array (b);
    }
  json_builder_set_member_name (b, "quant_method");
  json_builder_add_string_value (b, "gptq");
  add_bool (b, "sym", q->sym);
  json_builder_end_object (b);
}

/* compressed-tensors' quantization_config, as llm-compressor writes it for
 * weight-only integer schemes: one group over every Linear but the ignored. */
static void
add_ct_config (JsonBuilder *b, const PlanGptq *q)
{
  json_builder_set_member_name (b, "quantization_config");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "config_groups");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "group_0");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "input_activations");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "output_activations");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "targets");
  json_builder_begin_array (b);
  json_builder_add_string_value (b, "Linear");
  json_builder_end_array (b);
  json_builder_set_member_name (b, "weights");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "actorder");
  if (q->desc_act)
    json_builder_add_string_value (b, "group");
  else
    json_builder_add_null_value (b);
  add_bool (b, "dynamic", FALSE);
  add_int (b, "group_size", q->group_size);
  add_int (b, "num_bits", q->bits);
  json_builder_set_member_name (b, "observer");
  json_builder_add_string_value (b, "minmax");
  json_builder_set_member_name (b, "strategy");
  json_builder_add_string_value (b, "group"); /* a per-channel grid is one group of the whole row */
  add_bool (b, "symmetric", q->sym);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, "int");
  json_builder_end_object (b);
  json_builder_end_object (b);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "format");
  json_builder_add_string_value (b, "pack-quantized");
  json_builder_set_member_name (b, "ignore");
  json_builder_begin_array (b);
  json_builder_add_string_value (b, "lm_head");
  for (guint i = 0; i < q->ignore->len; i++)
    json_builder_add_string_value (b, q->ignore->pdata[i]);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "kv_cache_scheme");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "quant_method");
  json_builder_add_string_value (b, "compressed-tensors");
  json_builder_set_member_name (b, "quantization_status");
  json_builder_add_string_value (b, "compressed");
  json_builder_end_object (b);
}

static gboolean
write_config (LpModel *model, const char *path, LpDType torch_dtype, const PlanGptq *gptq, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  const LpArchInfo *info = lp_arch_info (c->arch);
  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();
  json_builder_begin_object (b);
  /* transformers' save_pretrained records the model's name here; we keep
   * general.name in it so GGUF -> HF -> GGUF is lossless. */
  const char *name = lp_meta_get_string (lp_model_meta (model), "general.name");
  if (name != NULL)
    {
      json_builder_set_member_name (b, "_name_or_path");
      json_builder_add_string_value (b, name);
    }
  json_builder_set_member_name (b, "architectures");
  json_builder_begin_array (b);
  json_builder_add_string_value (b, info->hf_class);
  json_builder_end_array (b);
  add_bool (b, "attention_bias", info->qkv_bias);
  add_double (b, "attention_dropout", 0.0);
  add_special_ids (b, model);
  add_int (b, "head_dim", c->head_dim);
  json_builder_set_member_name (b, "hidden_act");
  json_builder_add_string_value (b, "silu");
  add_int (b, "hidden_size", c->dim);
  add_int (b, "intermediate_size", c->ffn_dim);
  add_int (b, "max_position_embeddings", c->ctx_len);
  if (c->arch == LP_ARCH_LLAMA)
    add_bool (b, "mlp_bias", FALSE);
  json_builder_set_member_name (b, "model_type");
  json_builder_add_string_value (b, info->hf_model_type);
  add_int (b, "num_attention_heads", c->n_heads);
  add_int (b, "num_hidden_layers", c->n_layers);
  add_int (b, "num_key_value_heads", c->n_kv_heads);
  if (gptq->n > 0)
    (gptq->ct ? add_ct_config : add_gptq_config) (b, gptq);
  add_double (b, "rms_norm_eps", c->norm_eps);
  if (c->rope_scaling != LP_ROPE_SCALING_NONE)
    {
      gboolean llama3 = c->rope_scaling == LP_ROPE_SCALING_LLAMA3;
      json_builder_set_member_name (b, "rope_scaling");
      json_builder_begin_object (b);
      add_double (b, "factor", c->rope_factor);
      if (llama3)
        {
          add_double (b, "high_freq_factor", c->rope_high_freq_factor);
          add_double (b, "low_freq_factor", c->rope_low_freq_factor);
          add_int (b, "original_max_position_embeddings", c->rope_orig_ctx);
        }
      json_builder_set_member_name (b, "rope_type");
      json_builder_add_string_value (b, llama3 ? "llama3" : "linear");
      json_builder_end_object (b);
    }
  add_double (b, "rope_theta", c->rope_theta);
  /* Mistral's and Qwen2's classes default to a sliding window we do not
   * model: say "none" so transformers computes what we compute. */
  if (c->arch != LP_ARCH_LLAMA)
    add_null (b, "sliding_window");
  add_bool (b, "tie_word_embeddings", c->tied_embeddings);
  json_builder_set_member_name (b, "torch_dtype");
  json_builder_add_string_value (b, torch_dtype_name (torch_dtype));
  if (c->arch == LP_ARCH_QWEN2)
    add_bool (b, "use_sliding_window", FALSE);
  add_int (b, "vocab_size", c->n_vocab);
  json_builder_end_object (b);
  return lp_hf_write_json (path, b, error);
}

static gboolean
write_generation_config (LpModel *model, const char *path, GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();
  json_builder_begin_object (b);
  add_bool (b, "_from_model_config", TRUE);
  add_special_ids (b, model);
  json_builder_end_object (b);
  return lp_hf_write_json (path, b, error);
}

/* One tensor to write: where it comes from and what it becomes. */
typedef struct {
  LpTensor *src;   /* what is written: the model's tensor or its form's part (a ref) */
  gboolean permute; /* rows reordered into HF's rotate-half order (Q/K and the parts holding their rows) */
  char *hf_name;
  LpDType dtype;
  guint64 bytes;
  guint shard;
  LpTensor *ready; /* owned, written as it is (a GPTQ part), or NULL */
  LpOverflow overflow; /* converting to f16/bf16 */
  guint64 *n_clamped;  /* counts values clamped */
} PlanItem;


static void
plan_item_free (gpointer p)
{
  PlanItem *it = p;
  g_free (it->hf_name);
  lp_tensor_unref (it->src);
  lp_tensor_unref (it->ready);
  g_free (it);
}

/* t's integer grid as GPTQ parts (PlanItems), when it packs: TRUE with
 * *planned.  A grid that does not pack goes out dense (*planned FALSE). */
static gboolean
plan_gptq (const LpModelConfig *c, LpTensor *t, const char *hf_name, const char *dir, GPtrArray *plan, PlanGptq *q,
           gboolean *planned, GError **error)
{
  const LpIntGrid *g = lp_tensor_int_grid (t);
  *planned = FALSE;
  gboolean packable = q->ct ? lp_ct_packable (g, t->name, NULL) : lp_gptq_packable (g, t->name, NULL);
  if (!g_str_has_suffix (hf_name, ".weight") || !packable)
    {
      q->some_dense = TRUE;
      return TRUE;
    }
  if (q->n > 0 && (q->bits != g->bits || q->group_size != g->group_size || q->sym != g->symmetric))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED,
                    "%s: tensor %s: expected the %d-bit grid with groups of %d of the other quantized layers "
                    "(quantization_config holds one), found %d bits with groups of %d",
                    dir, t->name, q->bits, q->group_size, g->bits, g->group_size);
      return FALSE;
    }
  q->n++;
  q->bits = g->bits, q->group_size = g->group_size, q->sym = g->symmetric;
  for (gint64 k = 0; k < g->cols; k++)
    q->desc_act |= g->g_idx[k] != k / g->group_size;
  g_autoptr (LpIntGrid) hf_grid = NULL;
  if (strstr (t->name, ".attn_q.") || strstr (t->name, ".attn_k."))
    hf_grid = lp_int_grid_permute_rows (g, strstr (t->name, ".attn_q.") ? c->n_heads : c->n_kv_heads, c->head_dim, TRUE);
  g_autofree char *prefix = g_strndup (hf_name, strlen (hf_name) - strlen (".weight"));
  g_autoptr (GPtrArray) parts = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  if (!(q->ct ? lp_ct_pack : lp_gptq_pack) (hf_grid ? hf_grid : g, prefix, parts, error))
    return FALSE;
  for (guint i = 0; i < parts->len; i++)
    {
      PlanItem *it = g_new0 (PlanItem, 1);
      it->src = lp_tensor_ref (t);
      it->ready = lp_tensor_ref (parts->pdata[i]);
      it->hf_name = g_strdup (it->ready->name);
      it->dtype = it->ready->dtype;
      it->bytes = lp_tensor_n_bytes (it->ready);
      g_ptr_array_add (plan, it);
    }
  /* model.layers.N.self_attn.q_proj -> self_attn.q_proj */
  const char *module = prefix;
  if (g_str_has_prefix (module, "model.layers."))
    {
      const char *dot = strchr (module + strlen ("model.layers."), '.');
      module = dot ? dot + 1 : module;
    }
  gboolean seen = FALSE;
  for (guint i = 0; i < q->modules->len && !seen; i++)
    seen = strcmp (q->modules->pdata[i], module) == 0;
  if (!seen)
    g_ptr_array_add (q->modules, g_strdup (module));
  *planned = TRUE;
  return TRUE;
}

/* The type a tensor of `dtype` is written in: `want` (>= 0) for float
 * tensors; a ggml block type, which safetensors cannot hold, dequantized to
 * `want`, else to f32 (the values the model computes with, exactly); other
 * types as they are. */
static LpDType
hf_dtype (LpDType dtype, int want)
{
  if (lp_dtype_info (dtype)->block_size > 1)
    return want >= 0 ? (LpDType) want : LP_DTYPE_F32;
  return want >= 0 && is_float (dtype) ? (LpDType) want : dtype;
}

/* What t's form writes (t itself, or its parts <name><suffix>, named
 * <hf_name><suffix>) as PlanItems; hf_name is taken. */
static gboolean
plan_form_tensors (const LpModelConfig *c, LpTensor *t, char *hf_name, const char *dir, int want, GHashTable *permute,
                   GPtrArray *plan, GError **error)
{
  g_autofree char *weight_hf = hf_name;
  g_autoptr (GPtrArray) parts = lp_tensor_save_tensors (t, error);
  if (parts == NULL)
    return FALSE;
  for (guint i = 0; i < parts->len; i++)
    {
      LpTensor *p = parts->pdata[i];
      gsize weight_len;
      const LpFormPart *fp = p == t ? NULL : lp_form_part_find (p->name, &weight_len);
      PlanItem *it = g_new0 (PlanItem, 1);
      it->src = lp_tensor_ref (p);
      it->hf_name = g_strconcat (weight_hf, fp ? fp->suffix : "", NULL);
      it->permute = g_hash_table_contains (permute, t->name) && (fp == NULL || fp->weight_rows);
      it->dtype = hf_dtype (p->dtype, want);
      g_ptr_array_add (plan, it);
      if (!lp_tensor_shape_bytes (p->name, it->dtype, p->n_dims, p->shape, &it->bytes, error))
        {
          lp_error_prefix (error, dir);
          return FALSE;
        }
    }
  return TRUE;
}

static GPtrArray *
plan_tensors (LpModel *model, const char *dir, int want, PlanGptq *gptq, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  g_autoptr (GHashTable) permute = lp_hf_permuted_names (c);
  g_autoptr (GPtrArray) plan = g_ptr_array_new_with_free_func (plan_item_free);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      /* HF ties the head in the config; llama3 frequencies follow from rope_scaling. */
      if ((c->tied_embeddings && strcmp (t->name, "output.weight") == 0) || strcmp (t->name, "rope_freqs.weight") == 0)
        continue;
      char *hf_name = lp_arch_name_to_hf (c, t->name);
      if (hf_name == NULL)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: tensor %s: expected a tensor of the %s architecture, found a name with no Hugging Face equivalent",
                        dir, t->name, lp_arch_info (c->arch)->name);
          return NULL;
        }
      gboolean planned = FALSE;
      if (lp_tensor_int_grid (t) != NULL && !plan_gptq (c, t, hf_name, dir, plan, gptq, &planned, error))
        {
          g_free (hf_name);
          return NULL;
        }
      if (planned)
        {
          g_free (hf_name);
          continue;
        }
      if (!plan_form_tensors (c, t, hf_name, dir, want, permute, plan, error))
        return NULL;
    }
  /* A block's linear weight written dense beside GPTQ layers (one that could
   * not pack, or came in dense) must be named out of the quantized ones. */
  for (guint i = 0; gptq->n > 0 && i < plan->len; i++)
    {
      PlanItem *it = plan->pdata[i];
      for (int in = 0; it->ready == NULL && in < LP_LINEAR_IN_COUNT; in++)
        for (const char *const *w = lp_linear_input_consumers ((LpLinearInput) in); *w; w++)
          if (g_str_has_prefix (it->src->name, "blk.") && g_str_has_suffix (it->src->name, *w))
            {
              gptq->some_dense = TRUE;
              if (gptq->ct && g_str_has_suffix (it->hf_name, ".weight"))
                g_ptr_array_add (gptq->ignore, g_strndup (it->hf_name, strlen (it->hf_name) - strlen (".weight")));
            }
    }
  return g_steal_pointer (&plan);
}

/* Greedy: a new shard when the next tensor would push this one past the limit. */
static guint
plan_shards (GPtrArray *plan, guint64 max_bytes)
{
  guint shard = 0;
  guint64 used = 0;
  for (guint i = 0; i < plan->len; i++)
    {
      PlanItem *it = plan->pdata[i];
      if (used > 0 && (it->bytes > max_bytes || used > max_bytes - it->bytes))
        {
          shard++;
          used = 0;
        }
      it->shard = shard;
      used += it->bytes;
    }
  return plan->len > 0 ? shard + 1 : 1;
}

static char *
shard_name (guint i, guint n)
{
  return n == 1 ? g_strdup ("model.safetensors")
                : g_strdup_printf ("model-%05u-of-%05u.safetensors", i + 1, n);
}

static gboolean
write_shard (LpModel *model, GPtrArray *plan, guint shard, const char *dir, const char *path, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  for (guint i = 0; i < plan->len; i++)
    {
      PlanItem *it = plan->pdata[i];
      if (it->shard != shard)
        continue;
      if (it->ready != NULL)
        {
          g_ptr_array_add (out, lp_tensor_ref (it->ready));
          continue;
        }
      g_autoptr (LpTensor) conv = lp_tensor_convert_range (it->src, it->dtype, it->overflow, it->n_clamped, error);
      if (conv == NULL)
        {
          lp_error_prefix (error, dir);
          return FALSE;
        }
      g_autoptr (LpTensor) perm = it->permute
                                  ? lp_hf_permute_qk (c, conv, it->src->name, TRUE, dir, error)
                                  : lp_tensor_ref (conv);
      if (perm == NULL)
        return FALSE;
      g_ptr_array_add (out, lp_tensor_rename (perm, it->hf_name));
    }
  g_autoptr (GHashTable) metadata = hf_llmpress_metadata (model);
  return lp_safetensors_write (path, (LpTensor *const *) out->pdata, out->len, metadata, error);
}

static gboolean
write_index (GPtrArray *plan, guint n_shards, const char *path, GError **error)
{
  guint64 total = 0;
  for (guint i = 0; i < plan->len; i++)
    total += ((PlanItem *) plan->pdata[i])->bytes;
  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "metadata");
  json_builder_begin_object (b);
  add_int (b, "total_size", (gint64) total);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "weight_map");
  json_builder_begin_object (b);
  for (guint i = 0; i < plan->len; i++)
    {
      PlanItem *it = plan->pdata[i];
      g_autofree char *file = shard_name (it->shard, n_shards);
      json_builder_set_member_name (b, it->hf_name);
      json_builder_add_string_value (b, file);
    }
  json_builder_end_object (b);
  json_builder_end_object (b);
  return lp_hf_write_json (path, b, error);
}

gboolean
lp_hf_save_sharded (LpModel *model, const char *dir, const LpSaveOptions *options, guint64 max_shard_bytes,
                    GError **error)
{
  g_return_val_if_fail (max_shard_bytes > 0, FALSE);
  int want = options != NULL ? options->dtype : -1;
  if (want >= 0 && want != LP_DTYPE_F32 && want != LP_DTYPE_F16 && want != LP_DTYPE_BF16)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: expected f32, f16 or bf16 for Hugging Face weights, found %s",
                    dir, lp_dtype_info (want) ? lp_dtype_name (want) : "an unknown type");
      return FALSE;
    }
  g_autoptr (GPtrArray) modules = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) ignore = g_ptr_array_new_with_free_func (g_free);
  PlanGptq gptq = { 0, 0, 0, FALSE, FALSE, modules, FALSE, options != NULL && options->compressed_tensors, ignore };
  g_autoptr (GPtrArray) plan = plan_tensors (model, dir, want, &gptq, error);
  if (plan == NULL)
    return FALSE;
  guint n_shards = plan_shards (plan, max_shard_bytes);
  guint64 clamped = 0;
  for (guint i = 0; i < plan->len; i++)
    {
      ((PlanItem *) plan->pdata[i])->overflow = options != NULL ? options->overflow : LP_OVERFLOW_ERROR;
      ((PlanItem *) plan->pdata[i])->n_clamped = &clamped;
    }
  LpDType torch_dtype = LP_DTYPE_F32;
  for (guint i = 0; i < plan->len; i++)
    if (is_float (((PlanItem *) plan->pdata[i])->dtype))
      {
        torch_dtype = ((PlanItem *) plan->pdata[i])->dtype;
        break;
      }

  LpAtomicDir *ad = lp_atomic_dir_new_output (dir, "hf", error);
  if (ad == NULL)
    return FALSE;
  const char *tmp = lp_atomic_dir_path (ad);
  g_autofree char *index = g_build_filename (tmp, "model.safetensors.index.json", NULL);
  g_autofree char *cfg = g_build_filename (tmp, "config.json", NULL);
  g_autofree char *gen = g_build_filename (tmp, "generation_config.json", NULL);
  LpMeta *meta = lp_model_meta (model);
  for (guint s = 0; s < n_shards; s++)
    {
      g_autofree char *name = shard_name (s, n_shards);
      g_autofree char *path = g_build_filename (tmp, name, NULL);
      if (!write_shard (model, plan, s, dir, path, error))
        goto fail;
    }
  if ((n_shards > 1 && !write_index (plan, n_shards, index, error))
      || !write_config (model, cfg, torch_dtype, &gptq, error) || !write_generation_config (model, gen, error))
    goto fail;
  if (lp_meta_has (meta, "tokenizer.ggml.tokens") && !lp_tokenizer_write_hf (meta, tmp, error))
    goto fail;
  if (!lp_atomic_dir_commit (ad, error))
    return FALSE;
  lp_warn_clamped (dir, (LpDType) want, clamped);
  return TRUE;

fail:
  lp_atomic_dir_abort (ad);
  return FALSE;
}

gboolean
lp_hf_save (LpModel *model, const char *dir, const LpSaveOptions *options, GError **error)
{
  return lp_hf_save_sharded (model, dir, options, LP_HF_MAX_SHARD_BYTES, error);
}
