/* Hugging Face directories and safetensors: round trips, the Q/K rotate-half
 * layout, shards, and every malformed input the readers must name. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "testutil.h"

/* ---- helpers ---- */

static char *
test_dir (const char *name)
{
  return g_build_filename (lp_test_tmpdir (), name, NULL);
}

/* Same config, same tensor names, dtypes, shapes and bytes. */
static void
assert_models_equal (LpModel *a, LpModel *b)
{
  lp_test_assert_same_config (lp_model_config (a), lp_model_config (b));
  g_assert_cmpuint (lp_model_n_tensors (a), ==, lp_model_n_tensors (b));
  for (guint i = 0; i < lp_model_n_tensors (a); i++)
    {
      LpTensor *x = lp_model_tensor_at (a, i);
      LpTensor *y = lp_model_tensor (b, x->name);
      if (y == NULL)
        g_error ("tensor %s missing after the round trip", x->name);
      g_assert_cmpint (x->dtype, ==, y->dtype);
      g_assert_cmpint (x->n_dims, ==, y->n_dims);
      for (int d = 0; d < x->n_dims; d++)
        g_assert_cmpint (x->shape[d], ==, y->shape[d]);
      if (!g_bytes_equal (x->data, y->data))
        g_error ("tensor %s differs after the round trip", x->name);
    }
}


static void
copy_file (const char *from, const char *to)
{
  g_autofree char *data = NULL;
  gsize len;
  g_autoptr (GError) error = NULL;
  g_file_get_contents (from, &data, &len, &error);
  g_assert_no_error (error);
  g_file_set_contents (to, data, len, &error);
  g_assert_no_error (error);
}

/* Replace the first occurrence of `from` in a text file. */
static void
edit_file (const char *path, const char *from, const char *to)
{
  g_autofree char *text = lp_test_read_text (path);
  char *at = strstr (text, from);
  if (at == NULL)
    g_error ("%s lacks \"%s\"", path, from);
  *at = '\0';
  g_autofree char *edited = g_strconcat (text, to, at + strlen (from), NULL);
  lp_test_write_text (path, edited);
}

/* The tiny llama saved as an f32 HF directory (made once). */
static const char *
tiny_hf_dir (void)
{
  static char *dir;
  if (dir == NULL)
    {
      g_autoptr (LpModel) m = lp_test_tiny_model (7);
      dir = test_dir ("tiny-hf");
      g_autoptr (GError) error = NULL;
      g_assert_true (lp_hf_save (m, dir, NULL, &error));
      g_assert_no_error (error);
    }
  return dir;
}

/* A copy of the tiny directory whose config.json and/or model.safetensors
 * the caller then corrupts. */
static char *
tiny_hf_copy (const char *name)
{
  char *dir = test_dir (name);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  const char *files[] = { "config.json", "model.safetensors" };
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *from = g_build_filename (tiny_hf_dir (), files[i], NULL);
      g_autofree char *to = g_build_filename (dir, files[i], NULL);
      copy_file (from, to);
    }
  return dir;
}

/* The message names the corrupted file and holds every fragment of a
 * NULL-padded table row. */
static void
assert_error_frags (const GError *error, const char *name, const char *const *frags, gsize n)
{
  g_assert_nonnull (error);
  if (g_test_verbose ())
    g_test_message ("%s", error->message);
  lp_test_assert_error_contains (error, name, NULL);
  for (gsize f = 0; f < n && frags[f] != NULL; f++)
    lp_test_assert_error_contains (error, frags[f], NULL);
}

/* ---- safetensors ---- */

/* Where the first tensor's data lies in the mapping. */
static const void *
raw_base (const LpSafetensors *st)
{
  return lp_tensor_data (lp_safetensors_tensor_at (st, 0));
}

static void
test_safetensors_roundtrip (void)
{
  gint64 s_a[2] = { 2, 3 }, s_b[1] = { 5 }, s_c[1] = { 3 }, s_d[2] = { 1, 2 };
  float va[6] = { 1, -2, 3.5f, 0, 1e-3f, -7 };
  g_autoptr (LpTensor) a = lp_tensor_new_f32 ("a.weight", 2, s_a, va, NULL);
  g_autoptr (LpTensor) b = lp_tensor_new ("b", LP_DTYPE_BF16, 1, s_b, NULL);
  g_autoptr (LpTensor) c = lp_tensor_new ("c", LP_DTYPE_I8, 1, s_c, NULL);
  g_autoptr (LpTensor) d = lp_tensor_new ("d", LP_DTYPE_I64, 2, s_d, NULL);
  for (int i = 0; i < 5; i++)
    ((guint16 *) lp_tensor_data_mut (b))[i] = lp_f32_to_bf16 ((float) i - 2.5f);
  ((gint8 *) lp_tensor_data_mut (c))[1] = -5;
  ((gint64 *) lp_tensor_data_mut (d))[1] = G_GINT64_CONSTANT (1) << 40;
  LpTensor *list[] = { a, b, c, d };
  g_autoptr (GHashTable) md = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (md, "note", "written by test-hf");
  g_autofree char *path = test_dir ("rt.safetensors");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_safetensors_write (path, list, G_N_ELEMENTS (list), md, &error));
  g_assert_no_error (error);

  /* The header is padded with spaces to a multiple of 8. */
  g_autofree char *raw = NULL;
  gsize raw_len;
  g_assert_true (g_file_get_contents (path, &raw, &raw_len, NULL));
  guint64 hlen;
  memcpy (&hlen, raw, 8);
  hlen = GUINT64_FROM_LE (hlen);
  g_assert_cmpuint (hlen % 8, ==, 0);
  g_assert_cmpuint (raw_len, ==, 8 + hlen + 24 + 10 + 3 + 16);
  g_assert_true (raw[8] == '{');
  g_assert_true (g_str_has_prefix (raw + 8, "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"written by test-hf\"}"));

  g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_safetensors_n_tensors (st), ==, 4);
  const gsize offsets[4] = { 0, 24, 34, 37 };
  for (guint i = 0; i < 4; i++)
    {
      LpTensor *t = lp_safetensors_tensor_at (st, i);
      g_assert_cmpstr (t->name, ==, list[i]->name);
      g_assert_cmpint (t->dtype, ==, list[i]->dtype);
      g_assert_cmpint (t->n_dims, ==, list[i]->n_dims);
      g_assert_true (g_bytes_equal (t->data, list[i]->data));
      /* Slices of one mapping, in file order: no copies, except d, whose
       * i64 values at data offset 37 are misaligned and so copied. */
      const guint8 *slice = (const guint8 *) raw_base (st) + offsets[i];
      if (i < 3)
        g_assert_true ((const guint8 *) lp_tensor_data (t) == slice);
      else
        g_assert_true ((guintptr) slice % 8 != 0 && (guintptr) lp_tensor_data (t) % 8 == 0);
    }
  g_assert_true (lp_safetensors_tensor (st, "c") == lp_safetensors_tensor_at (st, 2));
  g_assert_null (lp_safetensors_tensor (st, "nope"));
  GHashTable *meta = lp_safetensors_metadata (st);
  g_assert_cmpstr (g_hash_table_lookup (meta, "format"), ==, "pt");
  g_assert_cmpstr (g_hash_table_lookup (meta, "note"), ==, "written by test-hf");

  /* A quantized tensor has no safetensors type. */
  gint64 s_q[2] = { 1, 32 };
  g_autoptr (LpTensor) q = lp_tensor_new ("q", LP_DTYPE_Q8_0, 2, s_q, NULL);
  g_autofree char *qpath = test_dir ("q.safetensors");
  g_assert_false (lp_safetensors_write (qpath, &q, 1, NULL, &error));
  lp_test_assert_error_contains (error, "q.safetensors", "tensor q", "found type q8_0", NULL);
  g_assert_false (g_file_test (qpath, G_FILE_TEST_EXISTS));
}

/* A safetensors file from a header and `data_len` bytes of data. */
static char *
write_st (const char *name, const char *header, gsize data_len)
{
  gsize hlen = strlen (header);
  gsize total = 8 + hlen + data_len;
  g_autofree guint8 *buf = g_malloc0 (total);
  guint64 le = GUINT64_TO_LE ((guint64) hlen);
  memcpy (buf, &le, 8);
  memcpy (buf + 8, header, hlen);
  return lp_test_write_file (name, buf, total);
}

typedef struct {
  const char *header;
  gsize data_len;
  const char *frags[4];
} BadSt;

static const BadSt bad_st[] = {
  /* invalid JSON: json-glib's line and column */
  { "{\"w\": {\"dtype\": \"F32\",\n \"shape\" [1], \"data_offsets\": [0, 4]}}", 4,
    { "header line 2 column", "expected valid JSON", "found unexpected" } },
  { "[1, 2]", 0, { "offset 8", "expected a JSON object, found an array" } },
  { "{\"w\": 3}", 0, { "header key \"w\"", "expected an object with dtype, shape and data_offsets, found 3" } },
  { "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, { "header key \"w\"", "expected member dtype, found none" } },
  { "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, { "header key \"w\"", "expected member shape, found none" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, { "header key \"w\"", "expected member data_offsets, found none" } },
  { "{\"w\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
    { "header key \"w\"", "dtype: expected one of F64, F32", "found \"F33\"" } },
  { "{\"w\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4,
    { "header key \"w\"", "found \"U8\"", "does not handle" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2, 2], \"data_offsets\": [0, 4]}}", 4,
    { "header key \"w\"", "shape[0]: expected a non-negative integer, found -2" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 4]}}", 4,
    { "shape[0]: expected a non-negative integer, found 2.5" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 2], \"data_offsets\": [0, 4]}}", 4,
    { "header key \"w\"", "shape [4294967296, 4294967296, 2]", "found an overflow" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 1], \"data_offsets\": [0, 4]}}", 4,
    { "header key \"w\"", "expected 1 to 4 dimensions, found 5" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [250], \"data_offsets\": [0, 1000]}}", 16,
    { "header key \"w\"", "expected begin <= end <= 16 (the data size), found [0, 1000]" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 16,
    { "expected begin <= end <= 16", "found [8, 4]" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 16,
    { "data_offsets: expected [begin, end], found an array of 1" } },
  { "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 12]}}", 16,
    { "header key \"w\"", "data_offsets [0, 12]: expected 16 bytes", "found 12" } },
  { "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
    " \"b\": {\"dtype\": \"F16\", \"shape\": [8], \"data_offsets\": [8, 24]}}", 24,
    { "header key \"b\"", "overlap \"a\" [0, 16]", "expected begin >= 16, found 8" } },
  { "{\"__metadata__\": {\"format\": \"pt\", \"x\": 1}}", 0, { "header key __metadata__.x: expected a string, found 1" } },
};

static void
test_safetensors_bad (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (bad_st); i++)
    {
      g_autofree char *name = g_strdup_printf ("bad-%02zu.safetensors", i);
      g_autofree char *path = write_st (name, bad_st[i].header, bad_st[i].data_len);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
      g_assert_null (st);
      assert_error_frags (error, name, bad_st[i].frags, G_N_ELEMENTS (bad_st[i].frags));
    }

  g_autoptr (GError) error = NULL;
  /* shorter than the 8-byte length */
  g_autofree char *shortf = lp_test_write_file ("short.safetensors", "abc", 3);
  g_assert_null (lp_safetensors_open (shortf, &error));
  lp_test_assert_error_contains (error, "short.safetensors", "offset 0", "header length", "found end of file (size 3)", NULL);
  g_clear_error (&error);

  /* a header length beyond the file */
  guint8 beyond[18] = { 0xe8, 0x03 }; /* 1000 */
  g_autofree char *bf = lp_test_write_file ("beyond.safetensors", beyond, sizeof beyond);
  g_assert_null (lp_safetensors_open (bf, &error));
  lp_test_assert_error_contains (error, "beyond.safetensors", "offset 0: header length: expected at most 10", "found 1000", NULL);
  g_clear_error (&error);

  /* invalid UTF-8 at header byte 7 = file offset 15 */
  g_autofree char *utf = write_st ("utf8.safetensors", "{\"w\": \"\xff\"}", 0);
  g_assert_null (lp_safetensors_open (utf, &error));
  lp_test_assert_error_contains (error, "utf8.safetensors", "offset 15", "expected UTF-8 JSON", "found byte 0xff", NULL);
  g_clear_error (&error);

  /* absent file */
  g_assert_null (lp_safetensors_open ("/nonexistent/x.safetensors", &error));
  lp_test_assert_error_contains (error, "/nonexistent/x.safetensors", "cannot open", NULL);
}

/* ---- HF directories ---- */

/* HF row j*hd/2 + i of each head is GGUF row 2i + j. */
static void
assert_rotate_half (const LpTensor *gguf, const LpTensor *hf, gint64 n_heads, gint64 hd)
{
  g_assert_cmpint (gguf->shape[0], ==, n_heads * hd);
  g_assert_cmpint (hf->shape[0], ==, gguf->shape[0]);
  gint64 cols = lp_tensor_row_length (gguf);
  const float *g = lp_tensor_data (gguf), *h = lp_tensor_data (hf);
  gboolean differs = FALSE;
  for (gint64 head = 0; head < n_heads; head++)
    for (gint64 i = 0; i < hd / 2; i++)
      for (gint64 j = 0; j < 2; j++)
        {
          gint64 hr = head * hd + j * (hd / 2) + i, gr = head * hd + 2 * i + j;
          g_assert_cmpmem (h + hr * cols, cols * sizeof (float), g + gr * cols, cols * sizeof (float));
          differs |= hr != gr;
        }
  g_assert_true (differs);
}

static void
test_hf_roundtrip_f32 (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (7);
  const LpModelConfig *c = lp_model_config (m);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) back = lp_hf_load (tiny_hf_dir (), &error);
  g_assert_no_error (error);
  assert_models_equal (m, back);
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (back), "general.architecture"), ==, "llama");
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (back), "general.name"), ==, "tiny-hf");
  g_assert_cmpint (lp_model_source_format (back), ==, LP_FORMAT_HF);

  /* The file holds Q/K in HF's rotate-half order and no lm_head (tied). */
  g_autofree char *st_path = g_build_filename (tiny_hf_dir (), "model.safetensors", NULL);
  g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  for (int l = 0; l < 2; l++)
    {
      g_autofree char *q = g_strdup_printf ("model.layers.%d.self_attn.q_proj.weight", l);
      g_autofree char *k = g_strdup_printf ("model.layers.%d.self_attn.k_proj.weight", l);
      g_autofree char *v = g_strdup_printf ("model.layers.%d.self_attn.v_proj.weight", l);
      g_autofree char *gq = g_strdup_printf ("blk.%d.attn_q.weight", l);
      g_autofree char *gk = g_strdup_printf ("blk.%d.attn_k.weight", l);
      g_autofree char *gv = g_strdup_printf ("blk.%d.attn_v.weight", l);
      assert_rotate_half (lp_model_tensor (m, gq), lp_safetensors_tensor (st, q), c->n_heads, c->head_dim);
      assert_rotate_half (lp_model_tensor (m, gk), lp_safetensors_tensor (st, k), c->n_kv_heads, c->head_dim);
      g_assert_true (g_bytes_equal (lp_model_tensor (m, gv)->data, lp_safetensors_tensor (st, v)->data));
    }
  g_assert_null (lp_safetensors_tensor (st, "lm_head.weight"));
  g_assert_nonnull (lp_safetensors_tensor (st, "model.embed_tokens.weight"));
  g_assert_cmpstr (g_hash_table_lookup (lp_safetensors_metadata (st), "format"), ==, "pt");

  g_autofree char *cfg_path = g_build_filename (tiny_hf_dir (), "config.json", NULL);
  g_autofree char *cfg = lp_test_read_text (cfg_path);
  g_assert_nonnull (strstr (cfg, "\"architectures\" : [\n    \"LlamaForCausalLM\"\n  ]"));
  g_assert_nonnull (strstr (cfg, "\"model_type\" : \"llama\""));
  g_assert_nonnull (strstr (cfg, "\"tie_word_embeddings\" : true"));
  g_assert_nonnull (strstr (cfg, "\"torch_dtype\" : \"float32\""));
  g_assert_nonnull (strstr (cfg, "\"hidden_act\" : \"silu\""));
  g_assert_null (strstr (cfg, "rope_scaling"));
  g_autofree char *gen = g_build_filename (tiny_hf_dir (), "generation_config.json", NULL);
  g_assert_true (g_file_test (gen, G_FILE_TEST_IS_REGULAR));

  /* Through the generic entry point too (validation included). */
  g_autoptr (LpModel) viaload = lp_model_load (tiny_hf_dir (), NULL, &error);
  g_assert_no_error (error);
  assert_models_equal (m, viaload);
}

static void
test_hf_bf16 (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (11);
  g_autofree char *dir = test_dir ("tiny-bf16");
  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  opts.dtype = LP_DTYPE_BF16;
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_hf_save (m, dir, &opts, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  lp_test_assert_same_config (lp_model_config (m), lp_model_config (back));
  g_assert_cmpuint (lp_model_n_tensors (back), ==, lp_model_n_tensors (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *x = lp_model_tensor_at (m, i);
      LpTensor *y = lp_model_tensor (back, x->name);
      g_assert_nonnull (y);
      g_assert_cmpint (y->dtype, ==, LP_DTYPE_BF16);
      g_autofree float *fy = lp_tensor_dup_f32 (y, &error);
      g_assert_no_error (error);
      const float *fx = lp_tensor_data (x);
      /* Element for element (so Q/K came back in GGUF order), within bf16's half ulp. */
      for (gint64 j = 0; j < lp_tensor_n_elements (x); j++)
        g_assert_cmpfloat (fabsf (fx[j] - fy[j]), <=, fabsf (fx[j]) * 0x1p-8f);
    }
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_autofree char *cfg = lp_test_read_text (cfg_path);
  g_assert_nonnull (strstr (cfg, "\"torch_dtype\" : \"bfloat16\""));

  /* A non-float target is refused before anything is written. */
  opts.dtype = LP_DTYPE_Q8_0;
  g_autofree char *dir2 = test_dir ("tiny-q8");
  g_assert_false (lp_hf_save (m, dir2, &opts, &error));
  lp_test_assert_error_contains (error, "tiny-q8", "expected f32, f16 or bf16", "found q8_0", NULL);
  g_assert_false (g_file_test (dir2, G_FILE_TEST_EXISTS));
}

static void
test_hf_qwen2_untied (void)
{
  LpSynthOptions so = LP_SYNTH_OPTIONS_INIT;
  so.arch = LP_ARCH_QWEN2;
  so.untied = TRUE;
  so.n_layers = 1;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_synth (&so, &error);
  g_assert_no_error (error);
  /* The vocabulary writer is another module's: keep only the special ids. */
  lp_meta_remove (lp_model_meta (m), "tokenizer.ggml.tokens");
  LpModelConfig *c = lp_model_config_mut (m);
  c->rope_scaling = LP_ROPE_SCALING_LINEAR;
  c->rope_factor = 2.0;
  c->norm_eps = (float) 1e-6; /* as a GGUF f32 field would have it */
  g_autofree char *dir = test_dir ("qwen2-hf");
  g_assert_true (lp_hf_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  c->norm_eps = 1e-6; /* written as the decimal the f32 stands for */
  assert_models_equal (m, back);
  g_assert_nonnull (lp_model_tensor (back, "blk.0.attn_q.bias"));
  g_assert_nonnull (lp_model_tensor (back, "output.weight"));
  gint64 id;
  g_assert_true (lp_meta_get_int (lp_model_meta (back), "tokenizer.ggml.eos_token_id", &id, NULL));
  g_assert_cmpint (id, ==, 2);

  /* qwen2 is rotate-half already: the file holds Q as the model does. */
  g_autofree char *st_path = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (lp_safetensors_tensor (st, "model.layers.0.self_attn.q_proj.weight")->data,
                                lp_model_tensor (m, "blk.0.attn_q.weight")->data));
  g_assert_true (g_bytes_equal (lp_safetensors_tensor (st, "model.layers.0.self_attn.k_proj.bias")->data,
                                lp_model_tensor (m, "blk.0.attn_k.bias")->data));
  g_assert_nonnull (lp_safetensors_tensor (st, "lm_head.weight"));
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_autofree char *cfg = lp_test_read_text (cfg_path);
  g_assert_nonnull (strstr (cfg, "\"rms_norm_eps\" : 9.9999999999999995e-07"));
  g_assert_nonnull (strstr (cfg, "\"rope_type\" : \"linear\""));
  g_assert_nonnull (strstr (cfg, "\"eos_token_id\" : 2"));
  g_assert_nonnull (strstr (cfg, "\"attention_bias\" : true"));
  g_assert_nonnull (strstr (cfg, "\"sliding_window\" : null"));
}

static void
test_hf_llama3_rope (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (3);
  LpModelConfig *c = lp_model_config_mut (m);
  c->rope_scaling = LP_ROPE_SCALING_LLAMA3;
  c->rope_factor = 8;
  c->rope_low_freq_factor = 1;
  c->rope_high_freq_factor = 4;
  c->rope_orig_ctx = 8192;
  c->rope_theta = 500000;
  g_autofree char *dir = test_dir ("llama3-hf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_hf_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  assert_models_equal (m, back);

  /* Older files say "type" instead of "rope_type". */
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  edit_file (cfg, "\"rope_type\" : \"llama3\"", "\"type\" : \"llama3\"");
  g_autoptr (LpModel) back2 = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  lp_test_assert_same_config (lp_model_config (m), lp_model_config (back2));
}

typedef struct {
  const char *from, *to; /* edit of a JSON file */
  const char *frags[3];
} BadConfig;

/* Split the tiny model's file into two shards + an index, as transformers does. */
static char *
make_sharded_dir (const char *name)
{
  char *dir = test_dir (name);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  g_autofree char *src_cfg = g_build_filename (tiny_hf_dir (), "config.json", NULL);
  g_autofree char *dst_cfg = g_build_filename (dir, "config.json", NULL);
  copy_file (src_cfg, dst_cfg);
  g_autofree char *single = g_build_filename (tiny_hf_dir (), "model.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSafetensors) st = lp_safetensors_open (single, &error);
  g_assert_no_error (error);
  guint n = lp_safetensors_n_tensors (st), half = n / 2;
  GString *index = g_string_new ("{\n  \"metadata\": {\"total_size\": 0},\n  \"weight_map\": {\n");
  const char *files[2] = { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" };
  for (int s = 0; s < 2; s++)
    {
      guint from = s == 0 ? 0 : half, to = s == 0 ? half : n;
      g_autoptr (GPtrArray) list = g_ptr_array_new ();
      /* Reverse order inside the shard: position in the file must not matter. */
      for (guint i = to; i > from; i--)
        {
          LpTensor *t = lp_safetensors_tensor_at (st, i - 1);
          g_ptr_array_add (list, t);
          g_string_append_printf (index, "%s    \"%s\": \"%s\"", index->str[index->len - 2] == '{' ? "" : ",\n",
                                  t->name, files[s]);
        }
      g_autofree char *path = g_build_filename (dir, files[s], NULL);
      g_assert_true (lp_safetensors_write (path, (LpTensor *const *) list->pdata, list->len, NULL, &error));
      g_assert_no_error (error);
    }
  g_string_append (index, "\n  }\n}\n");
  g_autofree char *index_path = g_build_filename (dir, "model.safetensors.index.json", NULL);
  lp_test_write_text (index_path, index->str);
  g_string_free (index, TRUE);
  return dir;
}

static void
test_hf_sharded (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) single = lp_hf_load (tiny_hf_dir (), &error);
  g_assert_no_error (error);
  g_autofree char *dir = make_sharded_dir ("sharded");
  g_autoptr (LpModel) sharded = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  assert_models_equal (single, sharded);

  /* Edits of the index, each from the original. */
  static const BadConfig bad_index[] = {
    /* an entry whose shard lacks it */
    { "\"weight_map\": {\n", "\"weight_map\": {\n    \"model.layers.9.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\",\n",
      { "weight_map.model.layers.9.mlp.up_proj.weight", "expected the tensor in model-00001-of-00002.safetensors, not found" } },
    /* a tensor the index puts in the other shard */
    { "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"", "\"model.norm.weight\": \"model-00001-of-00002.safetensors\"",
      { "tensor model.norm.weight", "expected weight_map to list it in model-00002-of-00002.safetensors",
        "found model-00001-of-00002.safetensors" } },
    /* a shard name leading out of the directory */
    { "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"", "\"model.norm.weight\": \"../model-00002-of-00002.safetensors\"",
      { "key weight_map.model.norm.weight: expected a file name in the directory", "found \"../model-00002-of-00002.safetensors\"" } },
  };
  g_autofree char *index_path = g_build_filename (dir, "model.safetensors.index.json", NULL);
  g_autofree char *orig_index = lp_test_read_text (index_path);
  for (gsize i = 0; i < G_N_ELEMENTS (bad_index); i++)
    {
      lp_test_write_text (index_path, orig_index);
      edit_file (index_path, bad_index[i].from, bad_index[i].to);
      g_assert_null (lp_hf_load (dir, &error));
      assert_error_frags (error, "model.safetensors.index.json", bad_index[i].frags, G_N_ELEMENTS (bad_index[i].frags));
      g_clear_error (&error);
    }

  /* A missing shard. */
  lp_test_write_text (index_path, orig_index);
  g_autofree char *shard2 = g_build_filename (dir, "model-00002-of-00002.safetensors", NULL);
  g_assert_cmpint (g_unlink (shard2), ==, 0);
  g_assert_null (lp_hf_load (dir, &error));
  lp_test_assert_error_contains (error, "model.safetensors.index.json", "expected shard model-00002-of-00002.safetensors",
                                 "found no such file", NULL);
}

static void
test_hf_save_sharded (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (5);
  g_autofree char *dir = test_dir ("saved-shards");
  g_autoptr (GError) error = NULL;
  /* 8 KiB shards: the 8 KiB embedding alone, then the blocks in several. */
  g_assert_true (lp_hf_save_sharded (m, dir, NULL, 8192, &error));
  g_assert_no_error (error);
  g_autofree char *single = g_build_filename (dir, "model.safetensors", NULL);
  g_assert_false (g_file_test (single, G_FILE_TEST_EXISTS));
  guint n_files = 0;
  {
    g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name (d)) != NULL)
      n_files += g_str_has_suffix (name, ".safetensors");
  }
  g_assert_cmpuint (n_files, >, 2);
  for (guint i = 0; i < n_files; i++)
    {
      g_autofree char *name = g_strdup_printf ("model-%05u-of-%05u.safetensors", i + 1, n_files);
      g_autofree char *path = g_build_filename (dir, name, NULL);
      g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
      g_assert_no_error (error);
      guint64 bytes = 0;
      for (guint j = 0; j < lp_safetensors_n_tensors (st); j++)
        bytes += lp_tensor_n_bytes (lp_safetensors_tensor_at (st, j));
      g_assert_cmpuint (bytes, <=, 8192);
    }
  g_autofree char *index_path = g_build_filename (dir, "model.safetensors.index.json", NULL);
  g_autofree char *index = lp_test_read_text (index_path);
  g_autofree char *total = g_strdup_printf ("\"total_size\" : %" G_GUINT64_FORMAT, lp_model_n_bytes (m));
  g_assert_nonnull (strstr (index, total));
  g_autofree char *emb = g_strdup_printf ("\"model.embed_tokens.weight\" : \"model-00001-of-%05u.safetensors\"", n_files);
  g_assert_nonnull (strstr (index, emb));
  g_autoptr (LpModel) back = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  assert_models_equal (m, back);

  /* Saving again over it replaces the directory whole. */
  g_assert_true (lp_hf_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_test (single, G_FILE_TEST_IS_REGULAR));
  g_assert_false (g_file_test (index_path, G_FILE_TEST_EXISTS));
}

static const BadConfig bad_configs[] = {
  { "\"model_type\" : \"llama\"", "\"model_type\" : \"gpt2\"",
    { "config.json: key model_type: expected one of llama, mistral, qwen2, found \"gpt2\"" } },
  { "\"hidden_size\" : 32,", "", { "config.json: key hidden_size: expected an integer, found none" } },
  { "\"vocab_size\" : 64", "\"vocab_size\" : \"64\"", { "config.json: key vocab_size: expected an integer, found \"64\"" } },
  { "\"rms_norm_eps\"", "\"rms_norm_eps\" : [1], \"x\"", { "config.json: key rms_norm_eps: expected a number, found an array" } },
  { "\"tie_word_embeddings\" : true", "\"tie_word_embeddings\" : 1", { "config.json: key tie_word_embeddings: expected true or false, found 1" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"rope_type\" : \"yarn\", \"factor\" : 4}, \"rope_theta\"",
    { "config.json: key rope_scaling.rope_type", "found \"yarn\"" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"type\" : \"linear\"}, \"rope_theta\"",
    { "config.json: key rope_scaling.factor: expected a number, found none" } },
  { "\"num_key_value_heads\" : 2", "\"num_key_value_heads\" : 3",
    { "config.json: key num_attention_heads: expected a multiple of the key num_key_value_heads (3), found 4" } },
  /* Values that leave the forward pass undefined (tests/test-numbers has the GGUF side). */
  { "\"head_dim\" : 8,\n  \"hidden_act\" : \"silu\",\n  \"hidden_size\" : 32", "\"hidden_act\" : \"silu\",\n  \"hidden_size\" : 34",
    { "config.json: key hidden_size: expected a multiple of the key num_attention_heads (4) when no head dimension is given, found 34" } },
  { "\"rope_theta\" : 10000.0", "\"rope_theta\" : 0", { "config.json: key rope_theta: expected a number in (0, 1e12], found 0" } },
  { "\"rope_theta\" : 10000.0", "\"rope_theta\" : -10000", { "config.json: key rope_theta: expected", "found -10000" } },
  { "\"rope_theta\" : 10000.0", "\"rope_theta\" : 1e400", { "config.json: key rope_theta: expected", "found inf" } },
  { "\"rope_theta\" : 10000.0", "\"rope_theta\" : 1e13", { "config.json: key rope_theta: expected", "found 10000000000000" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"type\" : \"linear\", \"factor\" : 0}, \"rope_theta\"",
    { "config.json: key rope_scaling.factor: expected a finite number > 0, found 0" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"type\" : \"linear\", \"factor\" : -2.5}, \"rope_theta\"",
    { "config.json: key rope_scaling.factor: expected a finite number > 0, found -2.5" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"rope_type\" : \"llama3\", \"factor\" : 8, \"low_freq_factor\" : 4, "
    "\"high_freq_factor\" : 4, \"original_max_position_embeddings\" : 8192}, \"rope_theta\"",
    { "config.json: key rope_scaling.high_freq_factor: expected a finite number above the key rope_scaling.low_freq_factor (4), found 4" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"rope_type\" : \"llama3\", \"factor\" : 8, \"low_freq_factor\" : 0, "
    "\"high_freq_factor\" : 4, \"original_max_position_embeddings\" : 8192}, \"rope_theta\"",
    { "config.json: key rope_scaling.low_freq_factor: expected a finite number > 0, found 0" } },
  { "\"rope_theta\"", "\"rope_scaling\" : {\"rope_type\" : \"llama3\", \"factor\" : 8, \"low_freq_factor\" : 1, "
    "\"high_freq_factor\" : 4, \"original_max_position_embeddings\" : 0}, \"rope_theta\"",
    { "config.json: key rope_scaling.original_max_position_embeddings: expected 1..67108864, found 0" } },
  { "\"hidden_size\" : 32", "\"hidden_size\" : 18446744073709551616",
    { "config.json: key hidden_size: expected an integer of at most 2^53, found 18446744073709551616" } },
  { "\"vocab_size\" : 64", "\"vocab_size\" : 9007199254740993",
    { "config.json: key vocab_size: expected an integer of at most 2^53, found 9007199254740993" } },
  { "\"max_position_embeddings\" : 64", "\"max_position_embeddings\" : -9223372036854775809",
    { "config.json: key max_position_embeddings: expected an integer of at most 2^53, found -9223372036854775809" } },
  { "\"num_hidden_layers\" : 2", "\"num_hidden_layers\" : -3", { "config.json: key num_hidden_layers: expected 1..4096, found -3" } },
  { "\"num_hidden_layers\" : 2,", "\"num_hidden_layers\" : 2\n  \"oops\" : 1,", { "config.json: line 15 column", "expected valid JSON", "found unexpected" } },
};

static void
test_hf_bad_config (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (bad_configs); i++)
    {
      g_autofree char *name = g_strdup_printf ("badcfg-%02zu", i);
      g_autofree char *dir = tiny_hf_copy (name);
      g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
      edit_file (cfg, bad_configs[i].from, bad_configs[i].to);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_hf_load (dir, &error);
      g_assert_null (m);
      assert_error_frags (error, name, bad_configs[i].frags, G_N_ELEMENTS (bad_configs[i].frags));
    }

  g_autoptr (GError) error = NULL;
  /* Only the class name: still understood; an unknown class is named. */
  g_autofree char *dir = tiny_hf_copy ("classonly");
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  edit_file (cfg, "\"model_type\" : \"llama\",", "");
  g_autoptr (LpModel) m = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_model_config (m)->arch, ==, LP_ARCH_LLAMA);
  edit_file (cfg, "LlamaForCausalLM", "GPT2LMHeadModel");
  g_assert_null (lp_hf_load (dir, &error));
  lp_test_assert_error_contains (error, "config.json: key architectures[0]", "found \"GPT2LMHeadModel\"", NULL);
  g_clear_error (&error);

  /* No config.json, no weights. */
  g_autofree char *empty = test_dir ("empty-hf");
  g_assert_cmpint (g_mkdir_with_parents (empty, 0755), ==, 0);
  g_assert_null (lp_hf_load (empty, &error));
  lp_test_assert_error_contains (error, "empty-hf", "found no config.json", NULL);
  g_clear_error (&error);
  g_autofree char *noweights = tiny_hf_copy ("noweights");
  g_autofree char *st = g_build_filename (noweights, "model.safetensors", NULL);
  g_assert_cmpint (g_unlink (st), ==, 0);
  g_assert_null (lp_hf_load (noweights, &error));
  lp_test_assert_error_contains (error, "noweights", "expected model.safetensors or model.safetensors.index.json, found neither", NULL);
}

/* Rewrite a directory's model.safetensors: drop `drop` (may be NULL), add
 * `extra` (may be NULL). */
static void
rewrite_weights (const char *dir, const char *drop, LpTensor *extra)
{
  g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  {
    g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
    g_assert_no_error (error);
    for (guint i = 0; i < lp_safetensors_n_tensors (st); i++)
      {
        LpTensor *t = lp_safetensors_tensor_at (st, i);
        if (g_strcmp0 (t->name, drop) != 0)
          g_ptr_array_add (list, lp_tensor_ref (t));
      }
  }
  if (extra != NULL)
    g_ptr_array_add (list, lp_tensor_ref (extra));
  g_assert_true (lp_safetensors_write (path, (LpTensor *const *) list->pdata, list->len, NULL, &error));
  g_assert_no_error (error);
}

static void
test_hf_bad_tensors (void)
{
  g_autoptr (GError) error = NULL;
  gint64 shape[1] = { 4 };

  /* Cached RoPE frequencies of old exports are skipped. */
  g_autofree char *inv = tiny_hf_copy ("invfreq");
  g_autoptr (LpTensor) freq = lp_tensor_new ("model.layers.0.self_attn.rotary_emb.inv_freq", LP_DTYPE_F32, 1, shape, NULL);
  rewrite_weights (inv, NULL, freq);
  g_autoptr (LpModel) ok = lp_hf_load (inv, &error);
  g_assert_no_error (error);
  g_assert_null (lp_model_tensor (ok, "model.layers.0.self_attn.rotary_emb.inv_freq"));

  /* Any other unknown name is an error naming it. */
  g_autofree char *unk = tiny_hf_copy ("unknown");
  g_autoptr (LpTensor) foo = lp_tensor_new ("model.layers.0.self_attn.foo.weight", LP_DTYPE_F32, 1, shape, NULL);
  rewrite_weights (unk, NULL, foo);
  g_assert_null (lp_hf_load (unk, &error));
  lp_test_assert_error_contains (error, "unknown/model.safetensors", "tensor model.layers.0.self_attn.foo.weight",
                                 "found an unknown name", NULL);
  g_clear_error (&error);

  /* A missing tensor: lp_model_load validates. */
  g_autofree char *miss = tiny_hf_copy ("missing");
  rewrite_weights (miss, "model.layers.0.mlp.up_proj.weight", NULL);
  g_assert_null (lp_model_load (miss, NULL, &error));
  lp_test_assert_error_contains (error, "missing", "tensor blk.0.ffn_up.weight", "not found", NULL);
  g_clear_error (&error);

  /* A Q projection of the wrong height cannot be permuted. */
  g_autofree char *badq = tiny_hf_copy ("badq");
  gint64 qshape[2] = { 30, 32 };
  g_autoptr (LpTensor) q = lp_tensor_new ("model.layers.1.self_attn.q_proj.weight", LP_DTYPE_F32, 2, qshape, NULL);
  rewrite_weights (badq, "model.layers.1.self_attn.q_proj.weight", q);
  g_assert_null (lp_hf_load (badq, &error));
  lp_test_assert_error_contains (error, "tensor model.layers.1.self_attn.q_proj.weight", "expected 32 rows (4 heads x 8)",
                                 "found shape 30x32", NULL);
  g_clear_error (&error);

  /* A corrupt model.safetensors surfaces the reader's message. */
  g_autofree char *corrupt = tiny_hf_copy ("corrupt");
  g_autofree char *st = g_build_filename (corrupt, "model.safetensors", NULL);
  lp_test_write_text (st, "xx");
  g_assert_null (lp_hf_load (corrupt, &error));
  lp_test_assert_error_contains (error, "corrupt/model.safetensors", "offset 0", "found end of file", NULL);
}

/* A quantized model goes out dequantized (safetensors holds no ggml block
 * type): without a type to f32, the values the model computes with, bit for
 * bit (Q and K too, through the head permutation), so the reloaded model's
 * logits are the quantized model's; with f16 to f16, where a block value past
 * f16's range is refused like any other (and nothing is left behind). */
static void
test_hf_dequantizes (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (9);
  const char *names[] = { "blk.1.ffn_gate.weight", "blk.0.attn_q.weight", "blk.1.attn_k.weight" };
  const LpDType types[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q4_1, LP_DTYPE_Q5_0 };
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    lp_test_quantize_tensor (m, names[i], types[i]);
  g_autofree char *dir = test_dir ("quantized-hf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_hf_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_hf_load (dir, &error);
  g_assert_no_error (error);
  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    {
      LpTensor *y = lp_model_tensor (back, names[i]);
      g_assert_cmpint (y->dtype, ==, LP_DTYPE_F32);
      g_autofree float *want = lp_tensor_dup_f32 (lp_model_tensor (m, names[i]), &error);
      g_assert_no_error (error);
      g_assert_cmpmem (lp_tensor_data (y), lp_tensor_n_bytes (y), want, lp_tensor_n_elements (y) * sizeof (float));
    }
  gint32 tokens[12] = { 1, 5, 9, 2, 33, 17, 8, 60, 41, 3, 3, 12 };
  g_autofree float *lq = lp_test_logits (m, tokens, 12);
  g_autofree float *lb = lp_test_logits (back, tokens, 12);
  lp_test_assert_close (lb, lq, 12 * 64, 1e-6);

  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  opts.dtype = LP_DTYPE_F16;
  g_autofree char *dir16 = test_dir ("quantized-hf-f16");
  g_assert_true (lp_hf_save (m, dir16, &opts, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back16 = lp_hf_load (dir16, &error);
  g_assert_no_error (error);
  LpTensor *y = lp_model_tensor (back16, names[0]);
  g_assert_cmpint (y->dtype, ==, LP_DTYPE_F16);
  g_autofree float *want = lp_tensor_dup_f32 (lp_model_tensor (m, names[0]), &error);
  const guint16 *h = lp_tensor_data (y);
  for (gint64 j = 0; j < lp_tensor_n_elements (y); j++)
    g_assert_cmpuint (h[j], ==, lp_f32_to_f16 (want[j]));

  /* Q8_0 blocks of scale 60000 hold values up to 127 x 60000: past f16. */
  LpTensor *g = lp_model_tensor (m, names[0]);
  g_autoptr (LpTensor) big = lp_tensor_new (names[0], LP_DTYPE_Q8_0, g->n_dims, g->shape, NULL);
  guint8 *b = lp_tensor_data_mut (big);
  for (gsize k = 0; k < lp_tensor_n_bytes (big); k += 34)
    {
      guint16 d = lp_f32_to_f16 (60000.0f);
      b[k] = d & 0xff;
      b[k + 1] = d >> 8;
      memset (b + k + 2, 127, 32);
    }
  lp_model_set_tensor (m, big);
  g_autofree char *dir_big = test_dir ("quantized-hf-big");
  g_assert_false (lp_hf_save (m, dir_big, &opts, &error));
  lp_test_assert_error_contains (error, "quantized-hf-big", "tensor blk.1.ffn_gate.weight",
                                 "expected a value within f16's range", NULL);
  g_assert_false (g_file_test (dir_big, G_FILE_TEST_EXISTS));
  /* ... and leaves no temporary directory behind. */
  g_autoptr (GDir) d = g_dir_open (lp_test_tmpdir (), 0, NULL);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    g_assert_false (g_str_has_prefix (name, ".quantized-hf-big"));
}

static void
test_hf_stories260k (void)
{
  g_autofree char *bin = lp_test_shared_path ("models/stories260K/stories260K.bin");
  if (bin == NULL)
    return;
  /* Beside a link in an empty directory, so no tok512.bin is found: the
   * tokenizer is not what this test is about. */
  g_autofree char *ldir = test_dir ("stories-link");
  g_assert_cmpint (g_mkdir_with_parents (ldir, 0755), ==, 0);
  g_autofree char *link = g_build_filename (ldir, "stories260K.bin", NULL);
  g_autofree char *abs = g_canonicalize_filename (bin, NULL);
  g_assert_cmpint (symlink (abs, link), ==, 0);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_llama2c_load (link, NULL, &error);
  g_assert_no_error (error);
  g_autofree char *dir = test_dir ("stories260K-hf");
  g_assert_true (lp_model_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (dir, NULL, &error);
  g_assert_no_error (error);
  assert_models_equal (m, back);
  g_assert_cmpint (lp_model_config (back)->n_vocab, ==, 512);
}

/* The reference implementation, when installed, reads our file and writes one for us. */
static void
test_hf_python_oracle (void)
{
  const char *probe[] = { "python3", "-c", "import safetensors.numpy", NULL };
  int status = -1;
  if (!g_spawn_sync (NULL, (char **) probe, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_test_skip ("python3 with the safetensors package is not installed");
      return;
    }
  g_autofree char *ours = g_build_filename (tiny_hf_dir (), "model.safetensors", NULL);
  g_autofree char *theirs = test_dir ("python.safetensors");
  const char *script =
    "import sys, numpy as np\n"
    "from safetensors.numpy import load_file, save_file\n"
    "d = load_file(sys.argv[1])\n"
    "for k in sorted(d): print(k, d[k].dtype, 'x'.join(map(str, d[k].shape)), repr(float(d[k].astype(np.float64).sum())))\n"
    "save_file({'b': np.arange(6, dtype=np.int64).reshape(2, 3), 'a': np.array([1.5, -2], dtype=np.float16),\n"
    "           'c': np.linspace(0, 1, 5, dtype=np.float32)}, sys.argv[2], metadata={'who': 'python'})\n";
  const char *argv[] = { "python3", "-c", script, ours, theirs, NULL };
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error));
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("python failed: %s", err);

  /* Every name, dtype and shape as we wrote them, and the sums of the values. */
  g_autoptr (LpSafetensors) st = lp_safetensors_open (ours, &error);
  g_assert_no_error (error);
  g_auto (GStrv) lines = g_strsplit (g_strstrip (out), "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), ==, lp_safetensors_n_tensors (st));
  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_auto (GStrv) f = g_strsplit (lines[i], " ", 4);
      LpTensor *t = lp_safetensors_tensor (st, f[0]);
      g_assert_nonnull (t);
      g_assert_cmpstr (f[1], ==, "float32");
      g_autofree char *shape = lp_tensor_shape_string (t);
      g_assert_cmpstr (f[2], ==, shape);
      double sum = 0;
      for (gint64 j = 0; j < lp_tensor_n_elements (t); j++)
        sum += ((const float *) lp_tensor_data (t))[j];
      g_assert_cmpfloat_with_epsilon (g_ascii_strtod (f[3], NULL), sum, 1e-9);
    }

  /* The reference writer's file (sorted by dtype size, then name) reads back. */
  g_autoptr (LpSafetensors) py = lp_safetensors_open (theirs, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_safetensors_n_tensors (py), ==, 3);
  LpTensor *b = lp_safetensors_tensor (py, "b"), *a = lp_safetensors_tensor (py, "a"), *c = lp_safetensors_tensor (py, "c");
  g_assert_cmpint (b->dtype, ==, LP_DTYPE_I64);
  g_assert_cmpint (b->shape[1], ==, 3);
  g_assert_cmpint (((const gint64 *) lp_tensor_data (b))[5], ==, 5);
  g_assert_cmpint (a->dtype, ==, LP_DTYPE_F16);
  g_assert_cmpfloat (lp_f16_to_f32 (((const guint16 *) lp_tensor_data (a))[0]), ==, 1.5f);
  g_assert_cmpint (c->dtype, ==, LP_DTYPE_F32);
  g_assert_cmpfloat (((const float *) lp_tensor_data (c))[4], ==, 1.0f);
  g_assert_cmpstr (g_hash_table_lookup (lp_safetensors_metadata (py), "who"), ==, "python");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/safetensors/roundtrip", test_safetensors_roundtrip);
  g_test_add_func ("/safetensors/bad-input", test_safetensors_bad);
  g_test_add_func ("/hf/roundtrip-f32", test_hf_roundtrip_f32);
  g_test_add_func ("/hf/bf16", test_hf_bf16);
  g_test_add_func ("/hf/qwen2-untied", test_hf_qwen2_untied);
  g_test_add_func ("/hf/llama3-rope", test_hf_llama3_rope);
  g_test_add_func ("/hf/sharded-load", test_hf_sharded);
  g_test_add_func ("/hf/sharded-save", test_hf_save_sharded);
  g_test_add_func ("/hf/bad-config", test_hf_bad_config);
  g_test_add_func ("/hf/bad-tensors", test_hf_bad_tensors);
  g_test_add_func ("/hf/dequantizes", test_hf_dequantizes);
  g_test_add_func ("/hf/stories260K", test_hf_stories260k);
  g_test_add_func ("/hf/python-oracle", test_hf_python_oracle);
  return g_test_run ();
}
