/* llama-quantize's mixes (lp_quant_mix_types, preset= of the quantize
 * passes): the per-tensor types chosen for SmolLM2-135M's tensors equal what
 * llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) chooses, each
 * expectation written out from the rule it comes from; names of types and
 * mixes in any case; an unknown mix is one error naming the known ones. */
#include "config.h"

#include <string.h>

#include "testutil.h"

/* SmolLM2-135M: 30 layers, dim 576 (rows of attn_*, ffn_gate/up and
 * token_embd: 576 = 2.25 x 256, so every k-quant falls back there; 576 = 18 x
 * 32), FFN 1536 (ffn_down's rows: 6 x 256), 9 heads / 3 KV heads (GQA 3),
 * tied embeddings (no output.weight: token_embd gets the output rules). */
#define N_LAYERS 30

/* use_more_bits(i, 30) = i < 30/8 || i >= 7*30/8 || (i - 30/8) % 3 == 2,
 * i.e. i < 3 || i >= 26 || (i - 3) % 3 == 2, written out. */
static const int more_bits_layers[] = { 0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29 };

static gboolean
more_bits (int layer)
{
  for (guint i = 0; i < G_N_ELEMENTS (more_bits_layers); i++)
    if (more_bits_layers[i] == layer)
      return TRUE;
  return FALSE;
}

/* The expected type of one tensor of SmolLM2 under a mix. */
typedef LpDType (*Expect) (const char *kind, int layer);

/* Q4_K_M.  output rule (tied: token_embd): 576 % 256 != 0 -> Q8_0.
 * attn_v: Q6_K where use_more_bits, fallback on rows of 576 -> Q8_0; else Q4_K -> Q5_0.
 * ffn_down: Q6_K where use_more_bits (1536 fits), else Q4_K.
 * the rest (attn_q/k/output, ffn_gate/up): Q4_K -> fallback Q5_0. */
static LpDType
expect_q4_k_m (const char *kind, int layer)
{
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  if (strcmp (kind, "attn_v") == 0)
    return more_bits (layer) ? LP_DTYPE_Q8_0 : LP_DTYPE_Q5_0;
  if (strcmp (kind, "ffn_down") == 0)
    return more_bits (layer) ? LP_DTYPE_Q6_K : LP_DTYPE_Q4_K;
  return LP_DTYPE_Q5_0;
}

/* Q4_K_S.  attn_v: Q5_K for the first four (i_attention_wv < 4) -> fallback
 * Q5_1, else Q4_K -> Q5_0.  ffn_down: Q5_K for i < 30/8 = 3, else Q4_K. */
static LpDType
expect_q4_k_s (const char *kind, int layer)
{
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  if (strcmp (kind, "attn_v") == 0)
    return layer < 4 ? LP_DTYPE_Q5_1 : LP_DTYPE_Q5_0;
  if (strcmp (kind, "ffn_down") == 0)
    return layer < 3 ? LP_DTYPE_Q5_K : LP_DTYPE_Q4_K;
  return LP_DTYPE_Q5_0;
}

/* Q5_K_M.  attn_v: Q6_K where use_more_bits -> Q8_0, else Q5_K -> Q5_1.
 * ffn_down: Q6_K where use_more_bits, else Q5_K.  The rest: Q5_K -> Q5_1. */
static LpDType
expect_q5_k_m (const char *kind, int layer)
{
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  if (strcmp (kind, "attn_v") == 0)
    return more_bits (layer) ? LP_DTYPE_Q8_0 : LP_DTYPE_Q5_1;
  if (strcmp (kind, "ffn_down") == 0)
    return more_bits (layer) ? LP_DTYPE_Q6_K : LP_DTYPE_Q5_K;
  return LP_DTYPE_Q5_1;
}

/* Q5_K_S: no per-tensor rule but the output's: Q5_K (-> Q5_1 on rows of 576). */
static LpDType
expect_q5_k_s (const char *kind, int layer)
{
  (void) layer;
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  return strcmp (kind, "ffn_down") == 0 ? LP_DTYPE_Q5_K : LP_DTYPE_Q5_1;
}

/* Q3_K_M.  attn_v: Q5_K for the first two -> Q5_1, else Q4_K -> Q5_0.
 * ffn_down: Q5_K for i < 30/16 = 1, else Q4_K (not Falcon).  attn_output:
 * Q4_K -> Q5_0.  The rest: Q3_K -> fallback Q4_0. */
static LpDType
expect_q3_k_m (const char *kind, int layer)
{
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  if (strcmp (kind, "attn_v") == 0)
    return layer < 2 ? LP_DTYPE_Q5_1 : LP_DTYPE_Q5_0;
  if (strcmp (kind, "ffn_down") == 0)
    return layer < 1 ? LP_DTYPE_Q5_K : LP_DTYPE_Q4_K;
  if (strcmp (kind, "attn_output") == 0)
    return LP_DTYPE_Q5_0;
  return LP_DTYPE_Q4_0;
}

/* Q3_K_L.  attn_v, attn_output: Q5_K -> Q5_1; ffn_down: Q5_K; rest Q3_K -> Q4_0. */
static LpDType
expect_q3_k_l (const char *kind, int layer)
{
  (void) layer;
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  if (strcmp (kind, "attn_v") == 0 || strcmp (kind, "attn_output") == 0)
    return LP_DTYPE_Q5_1;
  if (strcmp (kind, "ffn_down") == 0)
    return LP_DTYPE_Q5_K;
  return LP_DTYPE_Q4_0;
}

/* Q3_K_S: Q3_K everywhere (-> Q4_0 on rows of 576), output rule Q8_0. */
static LpDType
expect_q3_k_s (const char *kind, int layer)
{
  (void) layer;
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  return strcmp (kind, "ffn_down") == 0 ? LP_DTYPE_Q3_K : LP_DTYPE_Q4_0;
}

/* Q2_K.  attn_v: GQA 3 < 4 -> Q3_K -> Q4_0.  ffn_down: Q3_K.  attn_output:
 * Q3_K -> Q4_0.  The rest: Q2_K -> Q4_0. */
static LpDType
expect_q2_k (const char *kind, int layer)
{
  (void) layer;
  if (strcmp (kind, "token_embd") == 0)
    return LP_DTYPE_Q8_0;
  return strcmp (kind, "ffn_down") == 0 ? LP_DTYPE_Q3_K : LP_DTYPE_Q4_0;
}

/* Q6_K: Q6_K everywhere, -> Q8_0 on rows of 576; output rule Q8_0. */
static LpDType
expect_q6_k (const char *kind, int layer)
{
  (void) layer;
  return strcmp (kind, "ffn_down") == 0 ? LP_DTYPE_Q6_K : LP_DTYPE_Q8_0;
}

/* Q8_0: everything Q8_0 (the output rule keeps Q8_0 as it is). */
static LpDType
expect_q8_0 (const char *kind, int layer)
{
  (void) kind, (void) layer;
  return LP_DTYPE_Q8_0;
}

/* Q4_0 without an imatrix: Q4_0 everywhere; the output rule: 576 % 32 == 0,
 * so Q6_K, which falls back to Q8_0 on rows of 576. */
static LpDType
expect_q4_0 (const char *kind, int layer)
{
  (void) layer;
  return strcmp (kind, "token_embd") == 0 ? LP_DTYPE_Q8_0 : LP_DTYPE_Q4_0;
}

/* Q4_0 with an imatrix: ffn_down of the first 30/8 = 3 layers -> Q4_1. */
static LpDType
expect_q4_0_imatrix (const char *kind, int layer)
{
  if (strcmp (kind, "ffn_down") == 0 && layer < 3)
    return LP_DTYPE_Q4_1;
  return expect_q4_0 (kind, layer);
}

static LpModel *smollm2;

static LpModel *
get_smollm2 (void)
{
  if (smollm2 != NULL)
    return smollm2;
  g_autofree char *path = lp_test_shared_path ("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (path == NULL)
    return NULL;
  g_autoptr (GError) error = NULL;
  smollm2 = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  return smollm2;
}

static void
check_mix (const char *name, gboolean imatrix, Expect expect)
{
  LpModel *m = get_smollm2 ();
  if (m == NULL)
    return;
  const LpModelConfig *c = lp_model_config (m);
  g_assert_cmpint (c->n_layers, ==, N_LAYERS);
  g_assert_cmpint (c->n_heads / c->n_kv_heads, ==, 3);
  g_assert_null (lp_model_tensor (m, "output.weight"));
  LpQuantMix mix;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_quant_mix_from_name (name, &mix, &error));
  g_autoptr (GHashTable) types = lp_quant_mix_types (m, mix, imatrix, NULL, NULL);
  guint checked = 0;
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const LpTensor *t = lp_model_tensor_at (m, i);
      gpointer v;
      gboolean has = g_hash_table_lookup_extended (types, t->name, NULL, &v);
      /* Norms (1-D) are never quantized; every 2-D weight is. */
      g_assert_cmpint (has, ==, t->n_dims == 2);
      if (!has)
        continue;
      int layer = -1;
      char kind[64] = "token_embd";
      if (sscanf (t->name, "blk.%d.%63[a-z_].weight", &layer, kind) != 2)
        g_assert_cmpstr (t->name, ==, "token_embd.weight");
      LpDType want = expect (kind, layer), got = (LpDType) GPOINTER_TO_INT (v);
      if (want != got)
        g_error ("%s %s: expected %s, found %s", name, t->name, lp_dtype_name (want), lp_dtype_name (got));
      checked++;
    }
  g_assert_cmpuint (checked, ==, 1 + 7 * N_LAYERS);
}

static void test_q4_k_m (void) { check_mix ("Q4_K_M", FALSE, expect_q4_k_m); }
static void test_q4_k_s (void) { check_mix ("Q4_K_S", FALSE, expect_q4_k_s); }
static void test_q5_k_m (void) { check_mix ("Q5_K_M", FALSE, expect_q5_k_m); }
static void test_q5_k_s (void) { check_mix ("Q5_K_S", FALSE, expect_q5_k_s); }
static void test_q3_k_m (void) { check_mix ("Q3_K_M", FALSE, expect_q3_k_m); }
static void test_q3_k_l (void) { check_mix ("Q3_K_L", FALSE, expect_q3_k_l); }
static void test_q3_k_s (void) { check_mix ("Q3_K_S", FALSE, expect_q3_k_s); }
static void test_q2_k (void) { check_mix ("Q2_K", FALSE, expect_q2_k); }
static void test_q6_k (void) { check_mix ("Q6_K", FALSE, expect_q6_k); }
static void test_q8_0 (void) { check_mix ("Q8_0", FALSE, expect_q8_0); }
static void test_q4_0 (void) { check_mix ("q4_0", FALSE, expect_q4_0); }
static void test_q4_0_imatrix (void) { check_mix ("Q4_0", TRUE, expect_q4_0_imatrix); }

/* Names in any case; an unknown one lists every known mix. */
static void
test_names (void)
{
  LpQuantMix mix;
  g_assert_true (lp_quant_mix_from_name ("q4_k_m", &mix, NULL));
  g_assert_cmpint (mix, ==, LP_QUANT_MIX_Q4_K_M);
  g_assert_cmpstr (lp_quant_mix_name (mix), ==, "Q4_K_M");
  g_assert_cmpint (lp_quant_mix_default_type (mix), ==, LP_DTYPE_Q4_K);
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_quant_mix_from_name ("Q4_K_X", &mix, &error));
  for (int i = 0; i < LP_QUANT_MIX_COUNT; i++)
    lp_test_assert_error_contains (error, lp_quant_mix_name ((LpQuantMix) i), NULL);
  lp_test_assert_error_contains (error, "found 'Q4_K_X'", NULL);
  LpDType t;
  g_assert_true (lp_dtype_from_name ("Q8_0", &t));
  g_assert_cmpint (t, ==, LP_DTYPE_Q8_0);
}

/* The passes: `describe` lists every mix; preset= and format= in any case;
 * the unknown preset is one line listing the known ones; a preset with
 * format= is refused. */
static void
test_pass_parameters (void)
{
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint (lp_test_run_cli (&out, &err, "describe", "quantize.gptq", NULL), ==, 0);
  for (int i = 0; i < LP_QUANT_MIX_COUNT; i++)
    g_assert_nonnull (strstr (out, lp_quant_mix_name ((LpQuantMix) i)));
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *load = g_strdup_printf ("load path=%s ! quantize.rtn preset=Q4_K_X", model);
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (lp_test_run_cli (NULL, &err, "validate", "-p", load, NULL), !=, 0);
  g_assert_nonnull (strstr (err, "preset: expected one of none, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S, "
                                 "Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, found 'Q4_K_X'"));
  const char *good[] = { "quantize.rtn preset=q4_k_m", "quantize.rtn format=Q4_K", "quantize.gptq format=Q8_0",
                         "quantize.rtn format=Q4_K overrides=attn_v=Q6_K" };
  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autofree char *p = g_strdup_printf ("load path=%s ! %s", model, good[i]);
      g_clear_pointer (&err, g_free);
      int status = lp_test_run_cli (NULL, &err, "validate", "-p", p, NULL);
      if (status != 0)
        g_error ("%s: %s", good[i], err);
    }
  g_autofree char *both = g_strdup_printf ("load path=%s ! quantize.rtn preset=Q4_K_M format=q4_k", model);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "both", NULL);
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (lp_test_run_cli (NULL, &err, "run", "--no-cache", "-q", "-o", dir, "-p", both, NULL), ==, 1);
  g_assert_nonnull (strstr (err, "preset=Q4_K_M chooses every tensor's type: expected no format= beside it"));
}

/* quantize.rtn preset=Q4_K_M on the demo model: the saved tensors carry
 * exactly the types lp_quant_mix_types chose, token_embd included. */
static void
test_rtn_preset_saves_the_mix (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "rtn-preset", NULL);
  g_autofree char *p = g_strdup_printf ("load path=%s ! quantize.rtn preset=Q4_K_M ! save path=m.gguf", model);
  g_autofree char *err = NULL;
  int status = lp_test_run_cli (NULL, &err, "run", "--no-cache", "-q", "-o", dir, "-p", p, NULL);
  if (status != 0)
    g_error ("%s", err);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) in = lp_model_load (model, NULL, &error);
  g_assert_no_error (error);
  g_autofree char *saved = g_build_filename (dir, "m.gguf", NULL);
  g_autoptr (LpModel) q = lp_model_load (saved, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GHashTable) types = lp_quant_mix_types (in, LP_QUANT_MIX_Q4_K_M, FALSE, NULL, NULL);
  g_assert_true (g_hash_table_contains (types, "token_embd.weight"));
  for (guint i = 0; i < lp_model_n_tensors (q); i++)
    {
      const LpTensor *t = lp_model_tensor_at (q, i);
      gpointer v;
      if (g_hash_table_lookup_extended (types, t->name, NULL, &v))
        g_assert_cmpstr (lp_dtype_name (t->dtype), ==, lp_dtype_name ((LpDType) GPOINTER_TO_INT (v)));
      else
        g_assert_cmpint (t->dtype, ==, LP_DTYPE_F32);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/quant-mix/names", test_names);
  g_test_add_func ("/quant-mix/smollm2/Q4_K_M", test_q4_k_m);
  g_test_add_func ("/quant-mix/smollm2/Q4_K_S", test_q4_k_s);
  g_test_add_func ("/quant-mix/smollm2/Q5_K_M", test_q5_k_m);
  g_test_add_func ("/quant-mix/smollm2/Q5_K_S", test_q5_k_s);
  g_test_add_func ("/quant-mix/smollm2/Q3_K_M", test_q3_k_m);
  g_test_add_func ("/quant-mix/smollm2/Q3_K_L", test_q3_k_l);
  g_test_add_func ("/quant-mix/smollm2/Q3_K_S", test_q3_k_s);
  g_test_add_func ("/quant-mix/smollm2/Q2_K", test_q2_k);
  g_test_add_func ("/quant-mix/smollm2/Q6_K", test_q6_k);
  g_test_add_func ("/quant-mix/smollm2/Q8_0", test_q8_0);
  g_test_add_func ("/quant-mix/smollm2/Q4_0", test_q4_0);
  g_test_add_func ("/quant-mix/smollm2/Q4_0-imatrix", test_q4_0_imatrix);
  g_test_add_func ("/quant-mix/pass-parameters", test_pass_parameters);
  g_test_add_func ("/quant-mix/rtn-preset-saves-the-mix", test_rtn_preset_saves_the_mix);
  int status = g_test_run ();
  g_clear_pointer (&smollm2, lp_model_unref);
  return status;
}
