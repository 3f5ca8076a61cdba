/* llmpress — deterministic synthetic models (see synth.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/synth.h>

static void
synth_vocab (LpMeta *meta, gint64 n_vocab)
{
  GPtrArray *tokens = g_ptr_array_new_with_free_func (g_free);
  GArray *scores = g_array_new (FALSE, FALSE, sizeof (float));
  GArray *types = g_array_new (FALSE, FALSE, sizeof (gint32));
#define ADD(str, score, type)                                                                 \
  do {                                                                                        \
    float s_ = (score);                                                                       \
    gint32 t_ = (type);                                                                       \
    g_ptr_array_add (tokens, (str));                                                          \
    g_array_append_val (scores, s_);                                                          \
    g_array_append_val (types, t_);                                                           \
  } while (0)
  ADD (g_strdup ("<unk>"), 0.0f, 2);
  ADD (g_strdup ("<s>"), 0.0f, 3);
  ADD (g_strdup ("</s>"), 0.0f, 3);
  for (int b = 0; b < 256; b++)
    ADD (g_strdup_printf ("<0x%02X>", b), 0.0f, 6);
  /* Pieces: "▁", printable ASCII, "▁" + lowercase letter, then lowercase
   * bigrams — scores falling so earlier pieces merge first. */
  GPtrArray *pieces = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (pieces, g_strdup ("\xe2\x96\x81"));
  for (int ch = 0x21; ch < 0x7f; ch++)
    g_ptr_array_add (pieces, g_strdup_printf ("%c", ch));
  for (int ch = 'a'; ch <= 'z'; ch++)
    g_ptr_array_add (pieces, g_strdup_printf ("\xe2\x96\x81%c", ch));
  for (int a = 'a'; a <= 'z'; a++)
    for (int b = 'a'; b <= 'z'; b++)
      g_ptr_array_add (pieces, g_strdup_printf ("%c%c", a, b));
  for (guint i = 0; tokens->len < (guint) n_vocab; i++)
    {
      char *p = i < pieces->len ? g_strdup (pieces->pdata[i]) : g_strdup_printf ("<unused%u>", i);
      ADD (p, i < pieces->len ? -(float) i : -1e9f, i < pieces->len ? 1 : 5);
    }
#undef ADD
  g_ptr_array_unref (pieces);
  lp_meta_set_string (meta, "tokenizer.ggml.model", "llama");
  lp_meta_set_array (meta, "tokenizer.ggml.tokens", LP_VALUE_STRING, tokens->len, tokens->pdata);
  lp_meta_set_array (meta, "tokenizer.ggml.scores", LP_VALUE_F32, scores->len, scores->data);
  lp_meta_set_array (meta, "tokenizer.ggml.token_type", LP_VALUE_I32, types->len, types->data);
  lp_meta_set_u32 (meta, "tokenizer.ggml.unknown_token_id", 0);
  lp_meta_set_u32 (meta, "tokenizer.ggml.bos_token_id", 1);
  lp_meta_set_u32 (meta, "tokenizer.ggml.eos_token_id", 2);
  g_ptr_array_unref (tokens);
  g_array_unref (scores);
  g_array_unref (types);
}

/* Each normal draw takes two splitmix64 steps, and a splitmix64 step adds
 * a constant to the state: the draw for element j starts at state + j *
 * SYNTH_DRAW_STEP, so the elements are filled in parallel with the same
 * values as one sequential stream. */
#define SYNTH_DRAW_STEP (2 * 0x9e3779b97f4a7c15ull)

typedef struct {
  float *v;
  guint64 state; /* before element 0 */
  double sd;
} SynthFill;

static void
synth_fill (gint64 begin, gint64 end, gpointer data)
{
  const SynthFill *f = data;
  guint64 state = f->state + (guint64) begin * SYNTH_DRAW_STEP;
  for (gint64 j = begin; j < end; j++)
    f->v[j] = (float) (f->sd * lp_random_normal (&state));
}

LpModel *
lp_model_synth (const LpSynthOptions *options, GError **error)
{
  return lp_model_synth_spilled (options, LP_DTYPE_F32, NULL, error);
}

LpModel *
lp_model_synth_spilled (const LpSynthOptions *options, LpDType dtype, LpSpill *spill, GError **error)
{
  LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
  if (options != NULL)
    o = *options;
  if (o.n_vocab < 259)
    {
      lp_set_error (error, LP_ERROR_INVALID, "synth: vocabulary size: expected >= 259 (3 specials + 256 bytes), found %" G_GINT64_FORMAT,
                    o.n_vocab);
      return NULL;
    }
  if (o.n_heads <= 0 || o.dim % o.n_heads != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "synth: dim %" G_GINT64_FORMAT " is not a multiple of the head count %" G_GINT64_FORMAT,
                    o.dim, o.n_heads);
      return NULL;
    }
  LpModelConfig c;
  lp_model_config_init (&c, o.arch);
  c.n_vocab = o.n_vocab;
  c.dim = o.dim;
  c.ffn_dim = o.ffn_dim;
  c.n_layers = o.n_layers;
  c.n_heads = o.n_heads;
  c.n_kv_heads = o.n_kv_heads;
  c.head_dim = o.dim / o.n_heads;
  c.ctx_len = o.ctx_len;
  c.tied_embeddings = !o.untied;
  if (!lp_model_config_check (&c, "synth", error))
    return NULL;

  g_autoptr (LpModel) model = lp_model_new (&c);
  lp_model_set_spill (model, spill);
  LpMeta *meta = lp_model_meta (model);
  lp_meta_set_string (meta, "general.architecture", lp_arch_info (o.arch)->name);
  lp_meta_set_string (meta, "general.name", "llmpress-synth");
  synth_vocab (meta, o.n_vocab);

  guint64 state = o.seed ^ 0x6c6d7072657373ull; /* "lmpress" */
  double out_scale = 1.0 / sqrt (2.0 * c.n_layers);
  g_autoptr (GPtrArray) specs = lp_arch_tensor_specs (&c);
  for (guint i = 0; i < specs->len; i++)
    {
      const LpTensorSpec *s = specs->pdata[i];
      g_autoptr (LpTensor) t = lp_tensor_new (s->name, LP_DTYPE_F32, s->n_dims, s->shape, error);
      if (t == NULL)
        return NULL;
      float *v = lp_tensor_data_mut (t);
      gint64 n = lp_tensor_n_elements (t);
      gboolean is_norm = s->n_dims == 1 && g_str_has_suffix (s->name, "norm.weight");
      gboolean is_out = strstr (s->name, "attn_output") || strstr (s->name, "ffn_down");
      if (s->n_dims == 1)
        for (gint64 j = 0; j < n; j++)
          v[j] = is_norm ? 1.0f : 0.0f;
      else
        {
          SynthFill f = { v, state, 0.02 * (is_out ? out_scale : 1.0) };
          lp_parallel_for (n, 1 << 16, synth_fill, &f);
          state += (guint64) n * SYNTH_DRAW_STEP;
        }
      /* Each tensor in its final type and out of memory as it is made: how
       * a model larger than memory is made (|values| << 65504: no overflow;
       * only the plain types, so no call up into compress/'s quantizers). */
      g_autoptr (LpTensor) typed = lp_tensor_convert_with (t, dtype, lp_dtype_from_f32_plain, LP_OVERFLOW_ERROR, NULL, error);
      if (typed == NULL)
        return NULL;
      lp_model_set_tensor_spill (model, typed);
    }
  return g_steal_pointer (&model);
}
