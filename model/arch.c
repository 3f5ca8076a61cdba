/* llmpress — architecture tables: names, tensor maps, config <-> GGUF keys. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"

static const LpArchInfo arch_table[LP_ARCH_COUNT] = {
  { LP_ARCH_LLAMA, "llama", "llama", "LlamaForCausalLM", LP_ROPE_NORMAL, FALSE, TRUE },
  { LP_ARCH_MISTRAL, "mistral", "mistral", "MistralForCausalLM", LP_ROPE_NORMAL, FALSE, TRUE },
  { LP_ARCH_QWEN2, "qwen2", "qwen2", "Qwen2ForCausalLM", LP_ROPE_NEOX, TRUE, FALSE },
};

const LpArchInfo *
lp_arch_info (LpArch arch)
{
  g_return_val_if_fail (arch >= 0 && arch < LP_ARCH_COUNT, NULL);
  return &arch_table[arch];
}

const LpArchInfo *
lp_arch_lookup (const char *name)
{
  for (int i = 0; i < LP_ARCH_COUNT; i++)
    if (g_strcmp0 (arch_table[i].name, name) == 0 || g_strcmp0 (arch_table[i].hf_model_type, name) == 0
        || g_strcmp0 (arch_table[i].hf_class, name) == 0)
      return &arch_table[i];
  return NULL;
}

const char *
lp_arch_known_names (void)
{
  return "llama, mistral, qwen2";
}

/* Per-layer tensors: GGUF suffix, HF suffix, which shape, permuted in HF. */
typedef enum { SH_D, SH_Q, SH_KV, SH_O, SH_UP, SH_DOWN, SH_QB, SH_KVB } ShapeKind;

typedef struct {
  const char *gguf;
  const char *hf;
  ShapeKind shape;
  gboolean bias_only; /* only when the arch has q/k/v biases */
  gboolean permute;   /* Q/K: rotate-half order in HF (for archs that permute) */
} LayerTensor;

static const LayerTensor layer_tensors[] = {
  { "attn_norm.weight", "input_layernorm.weight", SH_D, FALSE, FALSE },
  { "attn_q.weight", "self_attn.q_proj.weight", SH_Q, FALSE, TRUE },
  { "attn_q.bias", "self_attn.q_proj.bias", SH_QB, TRUE, TRUE },
  { "attn_k.weight", "self_attn.k_proj.weight", SH_KV, FALSE, TRUE },
  { "attn_k.bias", "self_attn.k_proj.bias", SH_KVB, TRUE, TRUE },
  { "attn_v.weight", "self_attn.v_proj.weight", SH_KV, FALSE, FALSE },
  { "attn_v.bias", "self_attn.v_proj.bias", SH_KVB, TRUE, FALSE },
  { "attn_output.weight", "self_attn.o_proj.weight", SH_O, FALSE, FALSE },
  { "ffn_norm.weight", "post_attention_layernorm.weight", SH_D, FALSE, FALSE },
  { "ffn_gate.weight", "mlp.gate_proj.weight", SH_UP, FALSE, FALSE },
  { "ffn_up.weight", "mlp.up_proj.weight", SH_UP, FALSE, FALSE },
  { "ffn_down.weight", "mlp.down_proj.weight", SH_DOWN, FALSE, FALSE },
};

static void
spec_free (gpointer p)
{
  LpTensorSpec *s = p;
  g_free (s->name);
  g_free (s->hf_name);
  g_free (s);
}

static void
add_spec (GPtrArray *out, char *name, char *hf_name, int n_dims, gint64 d0, gint64 d1,
          gboolean permute, int layer)
{
  LpTensorSpec *s = g_new0 (LpTensorSpec, 1);
  s->name = name;
  s->hf_name = hf_name;
  s->n_dims = n_dims;
  s->shape[0] = d0;
  s->shape[1] = d1;
  s->hf_permute = permute;
  s->layer = layer;
  g_ptr_array_add (out, s);
}

GPtrArray *
lp_arch_tensor_specs (const LpModelConfig *c)
{
  const LpArchInfo *info = lp_arch_info (c->arch);
  GPtrArray *out = g_ptr_array_new_with_free_func (spec_free);
  gint64 q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;

  add_spec (out, g_strdup ("token_embd.weight"), g_strdup ("model.embed_tokens.weight"), 2,
            c->n_vocab, c->dim, FALSE, -1);
  for (gint64 l = 0; l < c->n_layers; l++)
    for (gsize i = 0; i < G_N_ELEMENTS (layer_tensors); i++)
      {
        const LayerTensor *lt = &layer_tensors[i];
        if (lt->bias_only && !info->qkv_bias)
          continue;
        gint64 d0 = 0, d1 = 0;
        int nd = 2;
        switch (lt->shape)
          {
          case SH_D: nd = 1; d0 = c->dim; break;
          case SH_Q: d0 = q; d1 = c->dim; break;
          case SH_KV: d0 = kv; d1 = c->dim; break;
          case SH_O: d0 = c->dim; d1 = q; break;
          case SH_UP: d0 = c->ffn_dim; d1 = c->dim; break;
          case SH_DOWN: d0 = c->dim; d1 = c->ffn_dim; break;
          case SH_QB: nd = 1; d0 = q; break;
          case SH_KVB: nd = 1; d0 = kv; break;
          }
        add_spec (out, g_strdup_printf ("blk.%" G_GINT64_FORMAT ".%s", l, lt->gguf),
                  g_strdup_printf ("model.layers.%" G_GINT64_FORMAT ".%s", l, lt->hf), nd, d0, d1,
                  lt->permute && info->hf_permute_qk, (int) l);
      }
  add_spec (out, g_strdup ("output_norm.weight"), g_strdup ("model.norm.weight"), 1, c->dim, 0,
            FALSE, -1);
  if (!c->tied_embeddings)
    add_spec (out, g_strdup ("output.weight"), g_strdup ("lm_head.weight"), 2, c->n_vocab, c->dim,
              FALSE, -1);
  return out;
}

/* Map between "prefix.<int>.suffix" names through the tables above. */
static char *
map_name (const LpModelConfig *c, const char *name, gboolean to_hf)
{
  static const char *const globals[][2] = {
    { "token_embd.weight", "model.embed_tokens.weight" },
    { "output_norm.weight", "model.norm.weight" },
    { "output.weight", "lm_head.weight" },
    { "rope_freqs.weight", "rope_freqs.weight" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (globals); i++)
    if (strcmp (name, globals[i][to_hf ? 0 : 1]) == 0)
      return g_strdup (globals[i][to_hf ? 1 : 0]);

  const char *prefix = to_hf ? "blk." : "model.layers.";
  gsize plen = strlen (prefix);
  if (strncmp (name, prefix, plen) != 0)
    return NULL;
  char *end;
  guint64 layer = g_ascii_strtoull (name + plen, &end, 10);
  if (end == name + plen || *end != '.' || layer >= (guint64) c->n_layers)
    return NULL;
  const char *suffix = end + 1;
  const LpArchInfo *info = lp_arch_info (c->arch);
  for (gsize i = 0; i < G_N_ELEMENTS (layer_tensors); i++)
    {
      const LayerTensor *lt = &layer_tensors[i];
      if (lt->bias_only && !info->qkv_bias)
        continue;
      if (strcmp (suffix, to_hf ? lt->gguf : lt->hf) == 0)
        return g_strdup_printf ("%s%" G_GUINT64_FORMAT ".%s", to_hf ? "model.layers." : "blk.", layer,
                                to_hf ? lt->hf : lt->gguf);
    }
  return NULL;
}

char *
lp_arch_name_from_hf (const LpModelConfig *config, const char *hf_name)
{
  return map_name (config, hf_name, FALSE);
}

char *
lp_arch_name_to_hf (const LpModelConfig *config, const char *name)
{
  return map_name (config, name, TRUE);
}

void
lp_model_config_init (LpModelConfig *c, LpArch arch)
{
  memset (c, 0, sizeof *c);
  c->arch = arch;
  c->rope_theta = arch == LP_ARCH_QWEN2 ? 1000000.0 : 10000.0;
  c->norm_eps = arch == LP_ARCH_QWEN2 ? 1e-6 : 1e-5;
  c->rope_scaling = LP_ROPE_SCALING_NONE;
  c->rope_factor = 1.0;
  c->ctx_len = 2048;
}

/* The largest rope theta accepted: real models use 1e4 .. 1e8; past this a
 * file is broken, not long-context. */
#define LP_MAX_ROPE_THETA 1e12

/* What a field is called when the caller has no key names. */
static const char *const config_what[LP_CONFIG_N_KEYS] = {
  [LP_CONFIG_VOCAB] = "vocabulary size", [LP_CONFIG_DIM] = "model dimension",
  [LP_CONFIG_FFN] = "feed-forward dimension", [LP_CONFIG_LAYERS] = "layer count",
  [LP_CONFIG_HEADS] = "head count", [LP_CONFIG_KV_HEADS] = "key/value head count",
  [LP_CONFIG_HEAD_DIM] = "head dimension", [LP_CONFIG_CTX] = "context length",
  [LP_CONFIG_EPS] = "rms epsilon", [LP_CONFIG_THETA] = "rope theta",
  [LP_CONFIG_ROPE_FACTOR] = "rope scaling factor", [LP_CONFIG_ROPE_LOW] = "rope low_freq_factor",
  [LP_CONFIG_ROPE_HIGH] = "rope high_freq_factor", [LP_CONFIG_ROPE_ORIG] = "rope original context length",
};

/* "key hidden_size" when the caller named it, else "model dimension". */
static char *
config_key (const char *const *keys, int field)
{
  return keys != NULL && keys[field] != NULL ? g_strdup_printf ("key %s", keys[field]) : g_strdup (config_what[field]);
}

static gboolean
config_refuse (const char *source, const char *const *keys, int field, const char *expected, double found,
               GError **error)
{
  g_autofree char *k = config_key (keys, field);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: %s: expected %s, found %.17g", source, k, expected, found);
  return FALSE;
}

/* field's value `found` is not a multiple of field `of`'s value. */
static gboolean
config_not_multiple (const char *source, const char *const *keys, int field, gint64 found, int of, gint64 divisor,
                     const char *when, GError **error)
{
  g_autofree char *k = config_key (keys, field);
  g_autofree char *k_of = config_key (keys, of);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: %s: expected a multiple of the %s (%" G_GINT64_FORMAT ")%s, found %" G_GINT64_FORMAT,
                source, k, k_of, divisor, when, found);
  return FALSE;
}

gboolean
lp_model_config_check_keys (const LpModelConfig *c, const char *source, const char *const *keys, GError **error)
{
  struct { int field; gint64 v; gint64 max; } dims[] = {
    { LP_CONFIG_VOCAB, c->n_vocab, 1 << 24 },
    { LP_CONFIG_DIM, c->dim, 1 << 20 },
    { LP_CONFIG_FFN, c->ffn_dim, 1 << 22 },
    { LP_CONFIG_LAYERS, c->n_layers, 1 << 12 },
    { LP_CONFIG_HEADS, c->n_heads, 1 << 12 },
    { LP_CONFIG_KV_HEADS, c->n_kv_heads, 1 << 12 },
    { LP_CONFIG_HEAD_DIM, c->head_dim, 1 << 14 },
    { LP_CONFIG_CTX, c->ctx_len, 1 << 26 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (dims); i++)
    if (dims[i].v <= 0 || dims[i].v > dims[i].max)
      {
        g_autofree char *k = config_key (keys, dims[i].field);
        lp_set_error (error, LP_ERROR_FORMAT, "%s: %s: expected 1..%" G_GINT64_FORMAT ", found %" G_GINT64_FORMAT,
                      source, k, dims[i].max, dims[i].v);
        return FALSE;
      }
  if (c->n_heads % c->n_kv_heads != 0)
    return config_not_multiple (source, keys, LP_CONFIG_HEADS, c->n_heads, LP_CONFIG_KV_HEADS, c->n_kv_heads, "", error);
  if (c->head_dim % 2 != 0)
    {
      g_autofree char *k = config_key (keys, LP_CONFIG_HEAD_DIM);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: %s: expected an even head dimension (RoPE rotates pairs), found %" G_GINT64_FORMAT,
                    source, k, c->head_dim);
      return FALSE;
    }
  /* NaN fails every comparison, so each test is written to pass only for
   * the good values. */
  if (!(c->norm_eps > 0 && c->norm_eps < 1))
    return config_refuse (source, keys, LP_CONFIG_EPS, "a number in (0, 1)", c->norm_eps, error);
  if (!(c->rope_theta > 0 && c->rope_theta <= LP_MAX_ROPE_THETA))
    return config_refuse (source, keys, LP_CONFIG_THETA, "a number in (0, 1e12]", c->rope_theta, error);
  if (c->rope_scaling != LP_ROPE_SCALING_NONE && !(c->rope_factor > 0 && isfinite (c->rope_factor)))
    return config_refuse (source, keys, LP_CONFIG_ROPE_FACTOR, "a finite number > 0", c->rope_factor, error);
  if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3)
    {
      if (!(c->rope_low_freq_factor > 0 && isfinite (c->rope_low_freq_factor)))
        return config_refuse (source, keys, LP_CONFIG_ROPE_LOW, "a finite number > 0", c->rope_low_freq_factor, error);
      if (!(c->rope_high_freq_factor > c->rope_low_freq_factor && isfinite (c->rope_high_freq_factor)))
        {
          g_autofree char *low = config_key (keys, LP_CONFIG_ROPE_LOW);
          g_autofree char *expected = g_strdup_printf ("a finite number above the %s (%g)", low, c->rope_low_freq_factor);
          return config_refuse (source, keys, LP_CONFIG_ROPE_HIGH, expected, c->rope_high_freq_factor, error);
        }
      if (c->rope_orig_ctx <= 0 || c->rope_orig_ctx > (1 << 26))
        return config_refuse (source, keys, LP_CONFIG_ROPE_ORIG, "1..67108864", (double) c->rope_orig_ctx, error);
    }
  return TRUE;
}

gboolean
lp_model_config_check (const LpModelConfig *c, const char *source, GError **error)
{
  return lp_model_config_check_keys (c, source, NULL, error);
}

gboolean
lp_model_config_derive_head_dim (LpModelConfig *c, const char *source, const char *const *keys, GError **error)
{
  if (c->head_dim != 0 || c->n_heads <= 0)
    return TRUE;
  if (c->dim % c->n_heads != 0)
    return config_not_multiple (source, keys, LP_CONFIG_DIM, c->dim, LP_CONFIG_HEADS, c->n_heads,
                                " when no head dimension is given", error);
  c->head_dim = c->dim / c->n_heads;
  return TRUE;
}

gint64
lp_model_config_n_params (const LpModelConfig *c)
{
  g_autoptr (GPtrArray) specs = lp_arch_tensor_specs (c);
  gint64 n = 0;
  for (guint i = 0; i < specs->len; i++)
    {
      const LpTensorSpec *s = specs->pdata[i];
      n += s->shape[0] * (s->n_dims == 2 ? s->shape[1] : 1);
    }
  return n;
}

static char *
arch_key (const LpModelConfig *c, const char *suffix)
{
  return g_strdup_printf ("%s.%s", lp_arch_info (c->arch)->name, suffix);
}

void
lp_model_config_to_meta (const LpModelConfig *c, LpMeta *meta)
{
  struct { const char *k; gint64 v; } ints[] = {
    { "context_length", c->ctx_len },
    { "embedding_length", c->dim },
    { "feed_forward_length", c->ffn_dim },
    { "attention.head_count", c->n_heads },
    { "attention.head_count_kv", c->n_kv_heads },
    { "block_count", c->n_layers },
    { "rope.dimension_count", c->head_dim },
    { "vocab_size", c->n_vocab },
  };
  lp_meta_set_string (meta, "general.architecture", lp_arch_info (c->arch)->name);
  for (gsize i = 0; i < G_N_ELEMENTS (ints); i++)
    {
      g_autofree char *k = arch_key (c, ints[i].k);
      lp_meta_set_u32 (meta, k, (guint32) ints[i].v);
    }
  g_autofree char *k_eps = arch_key (c, "attention.layer_norm_rms_epsilon");
  lp_meta_set_f32 (meta, k_eps, (float) c->norm_eps);
  g_autofree char *k_theta = arch_key (c, "rope.freq_base");
  lp_meta_set_f32 (meta, k_theta, (float) c->rope_theta);
  if (c->head_dim * c->n_heads != c->dim)
    {
      g_autofree char *kk = arch_key (c, "attention.key_length");
      g_autofree char *kv = arch_key (c, "attention.value_length");
      lp_meta_set_u32 (meta, kk, (guint32) c->head_dim);
      lp_meta_set_u32 (meta, kv, (guint32) c->head_dim);
    }
  g_autofree char *k_st = arch_key (c, "rope.scaling.type");
  g_autofree char *k_sf = arch_key (c, "rope.scaling.factor");
  if (c->rope_scaling == LP_ROPE_SCALING_LINEAR)
    {
      lp_meta_set_string (meta, k_st, "linear");
      lp_meta_set_f32 (meta, k_sf, (float) c->rope_factor);
    }
  else
    {
      lp_meta_remove (meta, k_st);
      lp_meta_remove (meta, k_sf);
    }
  /* llama3 scaling: llama.cpp carries it as a rope_freqs.weight tensor, which
   * the GGUF writer adds; we also keep the parameters so HF export keeps them. */
  if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3)
    {
      lp_meta_set_f32 (meta, "llmpress.rope.llama3.factor", (float) c->rope_factor);
      lp_meta_set_f32 (meta, "llmpress.rope.llama3.low_freq_factor", (float) c->rope_low_freq_factor);
      lp_meta_set_f32 (meta, "llmpress.rope.llama3.high_freq_factor", (float) c->rope_high_freq_factor);
      lp_meta_set_u32 (meta, "llmpress.rope.llama3.original_context_length", (guint32) c->rope_orig_ctx);
    }
}

gboolean
lp_model_config_check_gguf (const LpModelConfig *c, const LpMeta *meta, const char *source, GError **error)
{
  static const char *const suffix[LP_CONFIG_N_KEYS] = {
    [LP_CONFIG_VOCAB] = "vocab_size", [LP_CONFIG_DIM] = "embedding_length",
    [LP_CONFIG_FFN] = "feed_forward_length", [LP_CONFIG_LAYERS] = "block_count",
    [LP_CONFIG_HEADS] = "attention.head_count", [LP_CONFIG_KV_HEADS] = "attention.head_count_kv",
    [LP_CONFIG_HEAD_DIM] = "attention.key_length", [LP_CONFIG_CTX] = "context_length",
    [LP_CONFIG_EPS] = "attention.layer_norm_rms_epsilon", [LP_CONFIG_THETA] = "rope.freq_base",
    [LP_CONFIG_ROPE_FACTOR] = "rope.scaling.factor",
  };
  char *keys[LP_CONFIG_N_KEYS] = { NULL };
  for (int i = 0; i < LP_CONFIG_N_KEYS; i++)
    {
      /* Only keys the file has: a derived value is named by what it is. */
      if (suffix[i] != NULL)
        keys[i] = arch_key (c, suffix[i]);
      if (keys[i] != NULL && !lp_meta_has (meta, keys[i]))
        g_clear_pointer (&keys[i], g_free);
    }
  if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3)
    {
      g_free (keys[LP_CONFIG_ROPE_FACTOR]);
      keys[LP_CONFIG_ROPE_FACTOR] = g_strdup ("llmpress.rope.llama3.factor");
      keys[LP_CONFIG_ROPE_LOW] = g_strdup ("llmpress.rope.llama3.low_freq_factor");
      keys[LP_CONFIG_ROPE_HIGH] = g_strdup ("llmpress.rope.llama3.high_freq_factor");
      keys[LP_CONFIG_ROPE_ORIG] = g_strdup ("llmpress.rope.llama3.original_context_length");
    }
  gboolean ok = lp_model_config_check_keys (c, source, (const char *const *) keys, error);
  for (int i = 0; i < LP_CONFIG_N_KEYS; i++)
    g_free (keys[i]);
  return ok;
}

gboolean
lp_model_config_from_meta (LpModelConfig *c, const LpMeta *meta, const char *source, GError **error)
{
  const char *arch_name = lp_meta_get_string (meta, "general.architecture");
  if (arch_name == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "%s: key general.architecture: expected a string, found none", source);
      return FALSE;
    }
  const LpArchInfo *info = lp_arch_lookup (arch_name);
  if (info == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key general.architecture: expected one of %s, found \"%s\"",
                    source, lp_arch_known_names (), arch_name);
      return FALSE;
    }
  lp_model_config_init (c, info->arch);

  struct { const char *k; gint64 *dst; gboolean required; } ints[] = {
    { "embedding_length", &c->dim, TRUE },
    { "feed_forward_length", &c->ffn_dim, TRUE },
    { "block_count", &c->n_layers, TRUE },
    { "attention.head_count", &c->n_heads, TRUE },
    { "attention.head_count_kv", &c->n_kv_heads, FALSE },
    { "context_length", &c->ctx_len, FALSE },
    { "vocab_size", &c->n_vocab, FALSE },
    { "attention.key_length", &c->head_dim, FALSE },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (ints); i++)
    {
      g_autofree char *k = arch_key (c, ints[i].k);
      GError *local = NULL;
      if (!lp_meta_get_int (meta, k, ints[i].dst, &local))
        {
          if (local != NULL)
            {
              lp_set_error (error, LP_ERROR_FORMAT, "%s: %s", source, local->message);
              g_error_free (local);
              return FALSE;
            }
          if (ints[i].required)
            {
              lp_set_error (error, LP_ERROR_MISSING, "%s: key %s: expected an integer, found none", source, k);
              return FALSE;
            }
        }
    }
  if (c->n_kv_heads == 0)
    c->n_kv_heads = c->n_heads;
  g_autofree char *k_dim = arch_key (c, "embedding_length");
  g_autofree char *k_heads = arch_key (c, "attention.head_count");
  const char *keys[LP_CONFIG_N_KEYS] = { [LP_CONFIG_DIM] = k_dim, [LP_CONFIG_HEADS] = k_heads };
  if (!lp_model_config_derive_head_dim (c, source, keys, error))
    return FALSE;

  g_autofree char *k_eps = arch_key (c, "attention.layer_norm_rms_epsilon");
  g_autofree char *k_theta = arch_key (c, "rope.freq_base");
  g_autofree char *k_st = arch_key (c, "rope.scaling.type");
  g_autofree char *k_sf = arch_key (c, "rope.scaling.factor");
  GError *local = NULL;
  lp_meta_get_float (meta, k_eps, &c->norm_eps, &local);
  if (local == NULL)
    lp_meta_get_float (meta, k_theta, &c->rope_theta, &local);
  const char *st = lp_meta_get_string (meta, k_st);
  if (local == NULL && st != NULL && g_strcmp0 (st, "none") != 0)
    {
      if (g_strcmp0 (st, "linear") != 0)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key %s: expected \"linear\" or \"none\", found \"%s\"",
                        source, k_st, st);
          return FALSE;
        }
      c->rope_scaling = LP_ROPE_SCALING_LINEAR;
      lp_meta_get_float (meta, k_sf, &c->rope_factor, &local);
    }
  if (local == NULL && lp_meta_has (meta, "llmpress.rope.llama3.factor"))
    {
      c->rope_scaling = LP_ROPE_SCALING_LLAMA3;
      lp_meta_get_float (meta, "llmpress.rope.llama3.factor", &c->rope_factor, &local);
      lp_meta_get_float (meta, "llmpress.rope.llama3.low_freq_factor", &c->rope_low_freq_factor, &local);
      lp_meta_get_float (meta, "llmpress.rope.llama3.high_freq_factor", &c->rope_high_freq_factor, &local);
      lp_meta_get_int (meta, "llmpress.rope.llama3.original_context_length", &c->rope_orig_ctx, &local);
    }
  if (local != NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: %s", source, local->message);
      g_error_free (local);
      return FALSE;
    }
  /* n_vocab may be absent: callers fill it from the embedding's shape. */
  return TRUE;
}

void
lp_arch_permute_qk (void *data, gint64 n_heads, gint64 head_dim, gsize row_bytes, gboolean to_hf)
{
  /* Within each head of hd rows, GGUF row 2i+j <-> HF row j*hd/2 + i. */
  gint64 half = head_dim / 2;
  g_autofree guint8 *tmp = g_malloc (head_dim * row_bytes);
  guint8 *base = data;
  for (gint64 h = 0; h < n_heads; h++)
    {
      guint8 *head = base + h * head_dim * row_bytes;
      memcpy (tmp, head, head_dim * row_bytes);
      for (gint64 i = 0; i < half; i++)
        for (gint64 j = 0; j < 2; j++)
          {
            gint64 gg = 2 * i + j, hf = j * half + i;
            gint64 dst = to_hf ? hf : gg, src = to_hf ? gg : hf;
            memcpy (head + dst * row_bytes, tmp + src * row_bytes, row_bytes);
          }
    }
}
