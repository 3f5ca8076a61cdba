/* llmpress — llama-quantize's mixes: the per-tensor type choice of
 * llama.cpp's src/llama-quant.cpp (llama_tensor_get_type and its _impl,
 * tensor_type_fallback, llama_ftype_get_default_type), for the dense
 * architectures we hold (no experts, no Falcon), written from its rules:
 *
 * - The output head (and token_embd when the embeddings are tied, i.e. there
 *   is no output.weight): Q8_0 when the default type's block does not divide
 *   its rows, else Q6_K (Q8_0 stays Q8_0).
 * - attn_v, counted over the model's attn_v tensors in layer order (i of n):
 *   Q2_K: Q4_K with n_head/n_head_kv >= 4, else Q3_K;  Q2_K_S: Q4_K with
 *   GQA >= 4;  Q3_K_M: Q5_K for the first two, else Q4_K;  Q3_K_L: Q5_K;
 *   Q4_K_M, Q5_K_M: Q6_K where use_more_bits(i, n);  Q4_K_S: Q5_K for the
 *   first four;  a 70B model (80 layers with GQA) takes Q5_K for Q3_K/Q4_K.
 * - ffn_down, layer i of n_layers:  Q2_K: Q3_K;  Q2_K_S: Q4_K for i < n/8;
 *   Q3_K_M: Q5_K for i < n/16, else Q4_K;  Q3_K_L: Q5_K;  Q4_K_M: Q6_K where
 *   use_more_bits;  Q5_K_M: Q6_K where use_more_bits;  Q4_K_S: Q5_K for
 *   i < n/8;  Q4_0/Q5_0 with an imatrix: Q4_1/Q5_1 for i < n/8.
 * - attn_output:  Q2_K: Q3_K;  Q3_K_M: Q4_K;  Q3_K_L: Q5_K.
 * - a fused attn_qkv follows attn_v's rules (llama.cpp tests the attn_v-like
 *   categories first, so its own attn_qkv branch is never reached for these
 *   mixes).
 * - everything else: the mix's default type.
 * use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2: the first
 * and last eighth of the layers and every third in between.  Then a type
 * whose block does not divide the rows falls back (lp_quant_fallback_type).
 * llama-quantize visits tensors sorted by layer, then by name. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <llmpress/error.h>
#include <llmpress/quant.h>
#include <llmpress/quant_mix.h>

typedef struct {
  const char *name;
  LpDType type;
} MixInfo;

static const MixInfo mixes[LP_QUANT_MIX_COUNT] = {
  [LP_QUANT_MIX_Q4_0] = { "Q4_0", LP_DTYPE_Q4_0 },     [LP_QUANT_MIX_Q4_1] = { "Q4_1", LP_DTYPE_Q4_1 },
  [LP_QUANT_MIX_Q5_0] = { "Q5_0", LP_DTYPE_Q5_0 },     [LP_QUANT_MIX_Q5_1] = { "Q5_1", LP_DTYPE_Q5_1 },
  [LP_QUANT_MIX_Q8_0] = { "Q8_0", LP_DTYPE_Q8_0 },     [LP_QUANT_MIX_Q2_K] = { "Q2_K", LP_DTYPE_Q2_K },
  [LP_QUANT_MIX_Q2_K_S] = { "Q2_K_S", LP_DTYPE_Q2_K }, [LP_QUANT_MIX_Q3_K_S] = { "Q3_K_S", LP_DTYPE_Q3_K },
  [LP_QUANT_MIX_Q3_K_M] = { "Q3_K_M", LP_DTYPE_Q3_K }, [LP_QUANT_MIX_Q3_K_L] = { "Q3_K_L", LP_DTYPE_Q3_K },
  [LP_QUANT_MIX_Q4_K_S] = { "Q4_K_S", LP_DTYPE_Q4_K }, [LP_QUANT_MIX_Q4_K_M] = { "Q4_K_M", LP_DTYPE_Q4_K },
  [LP_QUANT_MIX_Q5_K_S] = { "Q5_K_S", LP_DTYPE_Q5_K }, [LP_QUANT_MIX_Q5_K_M] = { "Q5_K_M", LP_DTYPE_Q5_K },
  [LP_QUANT_MIX_Q6_K] = { "Q6_K", LP_DTYPE_Q6_K },
};

const char *
lp_quant_mix_name (LpQuantMix mix)
{
  g_return_val_if_fail (mix < LP_QUANT_MIX_COUNT, NULL);
  return mixes[mix].name;
}

gboolean
lp_quant_mix_from_name (const char *name, LpQuantMix *out, GError **error)
{
  for (int i = 0; i < LP_QUANT_MIX_COUNT; i++)
    if (g_ascii_strcasecmp (mixes[i].name, name) == 0)
      {
        *out = (LpQuantMix) i;
        return TRUE;
      }
  GString *known = g_string_new (NULL);
  for (int i = 0; i < LP_QUANT_MIX_COUNT; i++)
    g_string_append_printf (known, "%s%s", i ? ", " : "", mixes[i].name);
  lp_set_error (error, LP_ERROR_INVALID, "expected one of llama-quantize's mixes %s, found '%s'", known->str, name);
  g_string_free (known, TRUE);
  return FALSE;
}

LpDType
lp_quant_mix_default_type (LpQuantMix mix)
{
  g_return_val_if_fail (mix < LP_QUANT_MIX_COUNT, LP_DTYPE_F32);
  return mixes[mix].type;
}

/* llama.cpp's tensor categories, by the same substring tests in the same order. */
typedef enum { CAT_TOKEN_EMBD, CAT_OUTPUT, CAT_ATTN_V, CAT_ATTN_OUTPUT, CAT_FFN_DOWN, CAT_OTHER } Category;

static Category
category_of (const char *name)
{
  if (strcmp (name, "output.weight") == 0)
    return CAT_OUTPUT;
  if (strcmp (name, "token_embd.weight") == 0)
    return CAT_TOKEN_EMBD;
  if (strstr (name, "attn_qkv.weight") || strstr (name, "attn_kv_b.weight") || strstr (name, "attn_v.weight"))
    return CAT_ATTN_V;
  if (strstr (name, "attn_output.weight"))
    return CAT_ATTN_OUTPUT;
  if (strstr (name, "ffn_down"))
    return CAT_FFN_DOWN;
  return CAT_OTHER;
}

static gboolean
use_more_bits (int i, int n)
{
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* llama-quantize's order: by layer ("blk.N."; other tensors first), then by name. */
static int
layer_of (const char *name)
{
  int layer = -1;
  if (sscanf (name, "blk.%d.", &layer) != 1)
    layer = -1;
  return layer;
}

static gint
by_layer_then_name (gconstpointer a, gconstpointer b)
{
  const LpTensor *x = *(LpTensor *const *) a, *y = *(LpTensor *const *) b;
  int lx = layer_of (x->name), ly = layer_of (y->name);
  if (lx != ly)
    return lx < ly ? -1 : 1;
  return strcmp (x->name, y->name);
}

typedef struct {
  LpQuantMix mix;
  LpDType def;
  gboolean has_imatrix;
  gboolean tied;      /* no output.weight: token_embd is the output head */
  gboolean model_70b; /* llama.cpp's LLM_TYPE_70B: 80 layers with GQA */
  int gqa;            /* n_head / n_head_kv */
  int n_layers;
  int n_attn_v, i_attn_v, i_ffn_down;
} MixState;

static LpDType
output_type (const MixState *s, gint64 row_length)
{
  if (row_length % lp_dtype_info (s->def)->block_size != 0)
    return LP_DTYPE_Q8_0;
  return s->def == LP_DTYPE_Q8_0 ? LP_DTYPE_Q8_0 : LP_DTYPE_Q6_K;
}

static LpDType
attn_v_type (MixState *s)
{
  LpDType t = s->def;
  int i = s->i_attn_v++, n = s->n_attn_v;
  switch (s->mix)
    {
    case LP_QUANT_MIX_Q2_K:
      t = s->gqa >= 4 ? LP_DTYPE_Q4_K : LP_DTYPE_Q3_K;
      break;
    case LP_QUANT_MIX_Q2_K_S:
      if (s->gqa >= 4)
        t = LP_DTYPE_Q4_K;
      break;
    case LP_QUANT_MIX_Q3_K_M:
      t = i < 2 ? LP_DTYPE_Q5_K : LP_DTYPE_Q4_K;
      break;
    case LP_QUANT_MIX_Q3_K_L:
      t = LP_DTYPE_Q5_K;
      break;
    case LP_QUANT_MIX_Q4_K_M:
    case LP_QUANT_MIX_Q5_K_M:
      if (use_more_bits (i, n))
        t = LP_DTYPE_Q6_K;
      break;
    case LP_QUANT_MIX_Q4_K_S:
      if (i < 4)
        t = LP_DTYPE_Q5_K;
      break;
    default:
      break;
    }
  /* 70B: eight query heads share each V head, so attn_v is small and
   * cheap to keep at more bits. */
  if (s->model_70b && (t == LP_DTYPE_Q3_K || t == LP_DTYPE_Q4_K))
    t = LP_DTYPE_Q5_K;
  return t;
}

static LpDType
ffn_down_type (MixState *s)
{
  int i = s->i_ffn_down++, n = s->n_layers;
  switch (s->mix)
    {
    case LP_QUANT_MIX_Q2_K:
      return LP_DTYPE_Q3_K;
    case LP_QUANT_MIX_Q2_K_S:
      return i < n / 8 ? LP_DTYPE_Q4_K : s->def;
    case LP_QUANT_MIX_Q3_K_M:
      return i < n / 16 ? LP_DTYPE_Q5_K : LP_DTYPE_Q4_K;
    case LP_QUANT_MIX_Q3_K_L:
      return LP_DTYPE_Q5_K;
    case LP_QUANT_MIX_Q4_K_M:
    case LP_QUANT_MIX_Q5_K_M:
      return use_more_bits (i, n) ? LP_DTYPE_Q6_K : s->def;
    case LP_QUANT_MIX_Q4_K_S:
      return i < n / 8 ? LP_DTYPE_Q5_K : s->def;
    case LP_QUANT_MIX_Q4_0:
      return s->has_imatrix && i < n / 8 ? LP_DTYPE_Q4_1 : s->def;
    case LP_QUANT_MIX_Q5_0:
      return s->has_imatrix && i < n / 8 ? LP_DTYPE_Q5_1 : s->def;
    default:
      return s->def;
    }
}

static LpDType
attn_output_type (const MixState *s)
{
  switch (s->mix)
    {
    case LP_QUANT_MIX_Q2_K:
      return LP_DTYPE_Q3_K;
    case LP_QUANT_MIX_Q3_K_M:
      return LP_DTYPE_Q4_K;
    case LP_QUANT_MIX_Q3_K_L:
      return LP_DTYPE_Q5_K;
    default:
      return s->def;
    }
}

/* The type before the row fallback (llama_tensor_get_type_impl). */
static LpDType
mix_type (MixState *s, const LpTensor *t)
{
  switch (category_of (t->name))
    {
    case CAT_OUTPUT:
      return output_type (s, lp_tensor_row_length (t));
    case CAT_TOKEN_EMBD:
      return s->tied ? output_type (s, lp_tensor_row_length (t)) : s->def;
    case CAT_ATTN_V:
      return attn_v_type (s);
    case CAT_FFN_DOWN:
      return ffn_down_type (s);
    case CAT_ATTN_OUTPUT:
      return attn_output_type (s);
    default:
      return s->def;
    }
}

static gboolean
quantizable (const LpTensor *t)
{
  return t->n_dims == 2 && g_str_has_suffix (t->name, "weight") && strstr (t->name, "_norm.weight") == NULL;
}

GHashTable *
lp_quant_mix_types (LpModel *model, LpQuantMix mix, gboolean has_imatrix, LpQuantMixFilter filter,
                    gpointer user_data)
{
  g_return_val_if_fail (mix < LP_QUANT_MIX_COUNT, NULL);
  const LpModelConfig *c = lp_model_config (model);
  MixState s = { mix, mixes[mix].type, has_imatrix, TRUE };
  s.n_layers = (int) c->n_layers;
  s.gqa = c->n_kv_heads > 0 ? (int) (c->n_heads / c->n_kv_heads) : 1;
  s.model_70b = c->n_layers == 80 && c->n_kv_heads < c->n_heads;
  g_autoptr (GPtrArray) order = g_ptr_array_new ();
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      Category cat = category_of (t->name);
      /* Counted over every tensor of the file, as llama.cpp does. */
      if (cat == CAT_ATTN_V)
        s.n_attn_v++;
      if (cat == CAT_OUTPUT)
        s.tied = FALSE;
      if (quantizable (t) && (filter == NULL || filter (t, user_data)))
        g_ptr_array_add (order, t);
    }
  g_ptr_array_sort (order, by_layer_then_name);
  GHashTable *types = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < order->len; i++)
    {
      const LpTensor *t = g_ptr_array_index (order, i);
      LpDType type = lp_quant_fallback_type (mix_type (&s, t), lp_tensor_row_length (t));
      g_hash_table_insert (types, g_strdup (t->name), GINT_TO_POINTER (type));
    }
  return types;
}
