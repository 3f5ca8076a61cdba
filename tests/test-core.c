/* Core library: dtypes, tensors, metadata, architecture tables, llama2.c,
 * atomic writes. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#include "testutil.h"

static void
test_f16_roundtrip (void)
{
  /* Every finite half converts to f32 and back unchanged. */
  for (guint32 h = 0; h < 0x10000; h++)
    {
      if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
        continue; /* NaN payloads need not survive */
      float f = lp_f16_to_f32 ((guint16) h);
      g_assert_cmpuint (lp_f32_to_f16 (f), ==, h);
    }
  g_assert_cmpfloat (lp_f16_to_f32 (0x3c00), ==, 1.0f);
  g_assert_cmpfloat (lp_f16_to_f32 (0xc000), ==, -2.0f);
  g_assert_cmpfloat (lp_f16_to_f32 (0x0001), ==, 0x1p-24f);
  /* Round half to even: 1 + 2^-11 is halfway between 1 and 1+2^-10. */
  g_assert_cmpuint (lp_f32_to_f16 (1.0f + 0x1p-11f), ==, 0x3c00);
  g_assert_cmpuint (lp_f32_to_f16 (1.0f + 3 * 0x1p-11f), ==, 0x3c02);
  g_assert_cmpuint (lp_f32_to_f16 (70000.0f), ==, 0x7c00);
  g_assert_true (isnan (lp_f16_to_f32 (lp_f32_to_f16 (NAN))));
}

static void
test_bf16 (void)
{
  g_assert_cmpuint (lp_f32_to_bf16 (1.0f), ==, 0x3f80);
  g_assert_cmpfloat (lp_bf16_to_f32 (0x3f80), ==, 1.0f);
  /* 1 + 2^-8 is halfway: ties to even (stays 1.0); 1 + 3*2^-8 rounds up. */
  g_assert_cmpuint (lp_f32_to_bf16 (1.0f + 0x1p-8f), ==, 0x3f80);
  g_assert_cmpuint (lp_f32_to_bf16 (1.0f + 3 * 0x1p-8f), ==, 0x3f82);
  g_assert_true (isnan (lp_bf16_to_f32 (lp_f32_to_bf16 (NAN))));
}

static void
test_q8_0_q4_0_blocks (void)
{
  /* Q8_0: f16 scale 0.5 (0x3800), codes -128..127 pattern. */
  guint8 q8[34];
  q8[0] = 0x00;
  q8[1] = 0x38;
  for (int j = 0; j < 32; j++)
    q8[2 + j] = (guint8) (gint8) (j * 7 - 100);
  float out[32];
  g_assert_true (lp_dtype_to_f32 (LP_DTYPE_Q8_0, q8, out, 32, NULL));
  for (int j = 0; j < 32; j++)
    g_assert_cmpfloat (out[j], ==, 0.5f * (gint8) (j * 7 - 100));

  /* Q4_0: scale 2.0 (0x4000); byte j holds element j (low) and j+16 (high). */
  guint8 q4[18];
  q4[0] = 0x00;
  q4[1] = 0x40;
  for (int j = 0; j < 16; j++)
    q4[2 + j] = (guint8) ((j & 0xf) | ((15 - j) << 4));
  g_assert_true (lp_dtype_to_f32 (LP_DTYPE_Q4_0, q4, out, 32, NULL));
  for (int j = 0; j < 16; j++)
    {
      g_assert_cmpfloat (out[j], ==, 2.0f * (j - 8));
      g_assert_cmpfloat (out[j + 16], ==, 2.0f * (15 - j - 8));
    }
  g_assert_cmpfloat (lp_dtype_bits_per_weight (LP_DTYPE_Q4_0), ==, 4.5);
  g_assert_cmpfloat (lp_dtype_bits_per_weight (LP_DTYPE_Q8_0), ==, 8.5);
}

static void
test_tensor_shapes (void)
{
  g_autoptr (GError) error = NULL;
  gint64 ok[2] = { 3, 64 };
  g_autoptr (LpTensor) t = lp_tensor_new ("w", LP_DTYPE_Q8_0, 2, ok, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_tensor_n_bytes (t), ==, 3 * 2 * 34);
  gint64 odd[2] = { 3, 33 };
  g_assert_null (lp_tensor_new ("w", LP_DTYPE_Q4_0, 2, odd, &error));
  lp_test_assert_error_contains (error, "tensor w", "block size 32", NULL);
  g_clear_error (&error);
  gint64 huge[3] = { G_MAXINT64 / 2, G_MAXINT64 / 2, 4 };
  g_assert_null (lp_tensor_new ("big", LP_DTYPE_F32, 3, huge, &error));
  lp_test_assert_error_contains (error, "tensor big", "overflow", NULL);
  g_clear_error (&error);
  g_autoptr (GBytes) b = g_bytes_new_static ("abc", 3);
  gint64 one[1] = { 1 };
  g_assert_null (lp_tensor_new_from_bytes ("x", LP_DTYPE_F32, 1, one, b, &error));
  lp_test_assert_error_contains (error, "need 4 bytes", "found 3", NULL);
  g_clear_error (&error);

  float vals[6] = { 1, -2, 3.5f, 0.25f, 1e-3f, 65504 };
  gint64 s23[2] = { 2, 3 };
  g_autoptr (LpTensor) f = lp_tensor_new_f32 ("f", 2, s23, vals, NULL);
  g_autoptr (LpTensor) h = lp_tensor_convert (f, LP_DTYPE_F16, &error);
  g_assert_no_error (error);
  g_autofree float *back = lp_tensor_dup_f32 (h, &error);
  for (int i = 0; i < 6; i++)
    g_assert_cmpfloat_with_epsilon (back[i], vals[i], fabsf (vals[i]) * 1e-3f);
  g_autofree char *shape = lp_tensor_shape_string (f);
  g_assert_cmpstr (shape, ==, "2x3");
}

static void
test_meta (void)
{
  g_autoptr (LpMeta) m = lp_meta_new ();
  lp_meta_set_u32 (m, "a.count", 5);
  lp_meta_set_string (m, "a.name", "x");
  const char *strs[] = { "one", "two" };
  lp_meta_set_array (m, "a.strs", LP_VALUE_STRING, 2, strs);
  float fl[3] = { 1, 2, 3 };
  lp_meta_set_array (m, "a.floats", LP_VALUE_F32, 3, fl);
  lp_meta_set_u32 (m, "a.count", 7); /* replace keeps order */
  g_assert_cmpuint (lp_meta_n_keys (m), ==, 4);
  g_assert_cmpstr (lp_meta_key (m, 0), ==, "a.count");
  gint64 v;
  g_assert_true (lp_meta_get_int (m, "a.count", &v, NULL));
  g_assert_cmpint (v, ==, 7);
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_meta_get_int (m, "a.name", &v, &error));
  lp_test_assert_error_contains (error, "a.name", "expected an integer", "found string", NULL);
  g_clear_error (&error);
  g_assert_null (lp_meta_get_array (m, "a.floats", LP_VALUE_I32, &error));
  lp_test_assert_error_contains (error, "a.floats", "expected array of i32", "found array of f32", NULL);
  g_autoptr (LpMeta) c = lp_meta_copy (m);
  for (guint i = 0; i < lp_meta_n_keys (m); i++)
    g_assert_true (lp_value_equal (lp_meta_get (m, lp_meta_key (m, i)), lp_meta_get (c, lp_meta_key (m, i))));
  lp_meta_remove (c, "a.name");
  g_assert_cmpuint (lp_meta_n_keys (c), ==, 3);
  g_assert_cmpstr (lp_meta_key (c, 1), ==, "a.strs");
  g_autofree char *s = lp_value_to_string (lp_meta_get (m, "a.strs"), 8);
  g_assert_cmpstr (s, ==, "[\"one\", \"two\"]");
}

static void
test_permute_roundtrip (void)
{
  /* 2 heads of head_dim 4, rows of 1 float: GGUF [0..7] -> HF order and back. */
  float rows[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
  lp_arch_permute_qk (rows, 2, 4, sizeof (float), TRUE);
  float expect_hf[8] = { 0, 2, 1, 3, 4, 6, 5, 7 };
  for (int i = 0; i < 8; i++)
    g_assert_cmpfloat (rows[i], ==, expect_hf[i]);
  lp_arch_permute_qk (rows, 2, 4, sizeof (float), FALSE);
  for (int i = 0; i < 8; i++)
    g_assert_cmpfloat (rows[i], ==, (float) i);
}

static void
test_arch_names (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (1);
  const LpModelConfig *c = lp_model_config (m);
  g_autofree char *hf = lp_arch_name_to_hf (c, "blk.1.ffn_down.weight");
  g_assert_cmpstr (hf, ==, "model.layers.1.mlp.down_proj.weight");
  g_autofree char *back = lp_arch_name_from_hf (c, hf);
  g_assert_cmpstr (back, ==, "blk.1.ffn_down.weight");
  g_assert_null (lp_arch_name_to_hf (c, "blk.2.ffn_down.weight")); /* only 2 layers */
  g_assert_null (lp_arch_name_from_hf (c, "model.layers.0.self_attn.q_proj.bias")); /* llama: no bias */
  g_assert_true (lp_model_validate (m, NULL));
  g_assert_cmpint (lp_model_n_params (m), ==, lp_model_config_n_params (c));
  lp_model_remove_tensor (m, "blk.0.ffn_up.weight");
  g_autoptr (GError) error = NULL;
  g_assert_false (lp_model_validate (m, &error));
  lp_test_assert_error_contains (error, "blk.0.ffn_up.weight", "not found", NULL);
}

static void
test_llama2c_stories (void)
{
  g_autofree char *path = lp_test_shared_path ("models/stories260K/stories260K.bin");
  if (path == NULL)
    return;
  g_autoptr (GError) error = NULL;
  LpLoadOptions opts = { NULL };
  g_autofree char *tok = lp_test_shared_path ("models/stories260K/tok512.bin");
  opts.tokenizer_path = tok;
  g_autoptr (LpModel) m = lp_model_load (path, &opts, &error);
  g_assert_no_error (error);
  const LpModelConfig *c = lp_model_config (m);
  g_assert_cmpint (c->dim, ==, 64);
  g_assert_cmpint (c->ffn_dim, ==, 172);
  g_assert_cmpint (c->n_layers, ==, 5);
  g_assert_cmpint (c->n_heads, ==, 8);
  g_assert_cmpint (c->n_kv_heads, ==, 4);
  g_assert_cmpint (c->n_vocab, ==, 512);
  g_assert_cmpint (c->ctx_len, ==, 512);
  g_assert_true (c->tied_embeddings);
  g_assert_cmpint (lp_model_n_params (m), ==, 260032);
}

static void
test_llama2c_bad (void)
{
  g_autoptr (GError) error = NULL;
  /* Truncated header. */
  gint32 hdr[3] = { 64, 172, 5 };
  g_autofree char *p1 = lp_test_write_file ("short.bin", hdr, sizeof hdr);
  g_assert_null (lp_llama2c_load (p1, NULL, &error));
  lp_test_assert_error_contains (error, p1, "offset 12", "n_heads", "end of file", NULL);
  g_clear_error (&error);
  /* Header claiming weights that are not there. */
  gint32 full[7] = { 32, 48, 2, 4, 2, 64, 64 };
  g_autofree char *p2 = lp_test_write_file ("noweights.bin", full, sizeof full);
  g_assert_null (lp_llama2c_load (p2, NULL, &error));
  lp_test_assert_error_contains (error, p2, "offset 28", "token_embd.weight", NULL);
  g_clear_error (&error);
  /* Absurd dimensions. */
  gint32 absurd[7] = { 64, 172, 5, 8, 3, 512, 512 };
  g_autofree char *p3 = lp_test_write_file ("absurd.bin", absurd, sizeof absurd);
  g_assert_null (lp_llama2c_load (p3, NULL, &error));
  lp_test_assert_error_contains (error, p3, "key header n_heads: expected a multiple of the key header n_kv_heads (3), found 8", NULL);
  g_clear_error (&error);
  /* Heads that do not divide the dimension: said so, not an odd RoPE dimension. */
  gint32 uneven[7] = { 60, 172, 5, 8, 4, 512, 512 };
  g_autofree char *p4 = lp_test_write_file ("uneven.bin", uneven, sizeof uneven);
  g_assert_null (lp_llama2c_load (p4, NULL, &error));
  lp_test_assert_error_contains (error, p4, "key header dim: expected a multiple of the key header n_heads (8)", "found 60", NULL);
}

static void
test_llama2c_roundtrip (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (7);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "tiny.bin", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_llama2c_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_llama2c_load (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_model_n_tensors (back), ==, lp_model_n_tensors (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *a = lp_model_tensor_at (m, i);
      LpTensor *b = lp_model_tensor (back, a->name);
      g_assert_nonnull (b);
      g_assert_true (g_bytes_equal (a->data, b->data));
    }
}

static void
test_atomic_file (void)
{
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "atomic.txt", NULL);
  g_autoptr (GError) error = NULL;
  LpAtomicFile *af = lp_atomic_file_new (path, &error);
  g_assert_no_error (error);
  g_assert_true (lp_atomic_file_write (af, "hello", 5, NULL));
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS)); /* not there until commit */
  g_assert_true (lp_atomic_file_commit (af, &error));
  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  af = lp_atomic_file_new (path, &error);
  g_assert_true (lp_atomic_file_write (af, "bye", 3, NULL));
  lp_atomic_file_abort (af);
  g_autofree char *contents = NULL;
  g_file_get_contents (path, &contents, NULL, NULL);
  g_assert_cmpstr (contents, ==, "hello"); /* aborted write left the old file alone */
  /* No temporary files left behind. */
  GDir *d = g_dir_open (lp_test_tmpdir (), 0, NULL);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    g_assert_null (strstr (name, ".tmp-"));
  g_dir_close (d);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/dtype/f16-roundtrip", test_f16_roundtrip);
  g_test_add_func ("/dtype/bf16", test_bf16);
  g_test_add_func ("/dtype/q8_0-q4_0-blocks", test_q8_0_q4_0_blocks);
  g_test_add_func ("/tensor/shapes", test_tensor_shapes);
  g_test_add_func ("/meta/basics", test_meta);
  g_test_add_func ("/arch/permute-roundtrip", test_permute_roundtrip);
  g_test_add_func ("/arch/names-validate", test_arch_names);
  g_test_add_func ("/llama2c/stories260K", test_llama2c_stories);
  g_test_add_func ("/llama2c/bad-input", test_llama2c_bad);
  g_test_add_func ("/llama2c/roundtrip", test_llama2c_roundtrip);
  g_test_add_func ("/fileutil/atomic-file", test_atomic_file);
  return g_test_run ();
}
