/* GGUF: round trips, the real llama.cpp-converted stories260K, gguf-py as an
 * independent reader, and every kind of malformed file. */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <string.h>
#include <glib/gstdio.h>

#include "testutil.h"

/* The tiny model plus metadata of every GGUF value type. */
static LpModel *
model_with_all_types (void)
{
  LpModel *m = lp_test_tiny_model (3);
  LpMeta *meta = lp_model_meta (m);
  lp_meta_set_string (meta, "general.name", "tiny");
  LpValue *v;
  struct { const char *key; LpValueType type; guint64 u; gint64 i; double f; } scalars[] = {
    { "test.u8", LP_VALUE_U8, 200, 0, 0 },
    { "test.i8", LP_VALUE_I8, 0, -100, 0 },
    { "test.u16", LP_VALUE_U16, 60000, 0, 0 },
    { "test.i16", LP_VALUE_I16, 0, -30000, 0 },
    { "test.i32", LP_VALUE_I32, 0, -2000000000, 0 },
    { "test.u64", LP_VALUE_U64, G_MAXUINT64, 0, 0 },
    { "test.i64", LP_VALUE_I64, 0, G_MININT64, 0 },
    { "test.f64", LP_VALUE_F64, 0, 0, 0.1 },
  };
  for (gsize k = 0; k < G_N_ELEMENTS (scalars); k++)
    {
      v = g_new0 (LpValue, 1);
      v->type = scalars[k].type;
      if (v->type == LP_VALUE_F64)
        v->f = scalars[k].f;
      else if (scalars[k].i != 0)
        v->i = scalars[k].i;
      else
        v->u = scalars[k].u;
      lp_meta_set (meta, scalars[k].key, v);
    }
  lp_meta_set_u32 (meta, "test.u32", 4000000000u);
  lp_meta_set_f32 (meta, "test.f32", 0.25f);
  lp_meta_set_bool (meta, "test.flag", TRUE);
  lp_meta_set_string (meta, "test.aaaa", "ünïcödé ▁text");
  lp_meta_set_string (meta, "test.aaab", "");
  guint32 u32s[3] = { 1, 2, 3 };
  lp_meta_set_array (meta, "test.array", LP_VALUE_U32, 3, u32s);
  lp_meta_set_array (meta, "test.empty", LP_VALUE_F32, 0, NULL);
  guint8 bools[3] = { 1, 0, 1 };
  lp_meta_set_array (meta, "test.bools", LP_VALUE_BOOL, 3, bools);
  const char *strs[3] = { "<s>", "", "▁the" };
  lp_meta_set_array (meta, "test.strings", LP_VALUE_STRING, 3, strs);
  /* An array of arrays: [[1, 2, 3], ["<s>", "", "▁the"]]. */
  LpValue *inner[2] = { lp_value_copy (lp_meta_get (meta, "test.array")),
                        lp_value_copy (lp_meta_get (meta, "test.strings")) };
  lp_meta_set_array (meta, "test.nested", LP_VALUE_ARRAY, 2, inner);
  lp_value_free (inner[0]);
  lp_value_free (inner[1]);
  lp_meta_set_u32 (meta, "general.alignment", 32);
  return m;
}

static char *
tmp_path (const char *name)
{
  return g_build_filename (lp_test_tmpdir (), name, NULL);
}

static void
assert_no_temporaries (const char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  g_assert_nonnull (d);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    g_assert_null (strstr (name, ".tmp-"));
  g_dir_close (d);
}

/* Every key of `a` is in `b` with an equal value (type included). */
static void
assert_meta_included (const LpMeta *a, const LpMeta *b)
{
  for (guint i = 0; i < lp_meta_n_keys (a); i++)
    {
      const char *k = lp_meta_key (a, i);
      const LpValue *va = lp_meta_get (a, k), *vb = lp_meta_get (b, k);
      if (vb == NULL)
        g_error ("key %s missing after the round trip", k);
      if (!lp_value_equal (va, vb))
        {
          g_autofree char *sa = lp_value_to_string (va, 8), *sb = lp_value_to_string (vb, 8);
          g_error ("key %s: %s %s became %s %s", k, lp_value_type_name (va->type), sa,
                   lp_value_type_name (vb->type), sb);
        }
    }
}

static void
test_roundtrip (void)
{
  g_autoptr (LpModel) m = model_with_all_types ();
  g_autofree char *path = tmp_path ("roundtrip.gguf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_gguf_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_model_source_format (back), ==, LP_FORMAT_GGUF);
  lp_test_assert_same_config (lp_model_config (m), lp_model_config (back));
  assert_meta_included (lp_model_meta (m), lp_model_meta (back));
  g_assert_cmpuint (lp_model_n_tensors (back), ==, lp_model_n_tensors (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *a = lp_model_tensor_at (m, i), *b = lp_model_tensor_at (back, i);
      g_assert_cmpstr (a->name, ==, b->name);
      g_assert_cmpint (a->dtype, ==, b->dtype);
      g_assert_cmpint (a->n_dims, ==, b->n_dims);
      for (int d = 0; d < a->n_dims; d++)
        g_assert_cmpint (a->shape[d], ==, b->shape[d]);
      g_assert_true (g_bytes_equal (a->data, b->data));
      /* The mapping is page-aligned: the address shows the file offset's alignment. */
      g_assert_cmpuint ((guintptr) lp_tensor_data (b) % 32, ==, 0);
    }
  /* The file's own keys, in the writer's order. */
  g_autoptr (LpMeta) fm = lp_gguf_read_meta (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_meta_key (fm, 0), ==, "general.architecture");
  g_assert_cmpstr (lp_meta_key (fm, 1), ==, "general.name");
  g_assert_true (g_str_has_prefix (lp_meta_key (fm, 4), "llama."));
  g_assert_true (g_str_has_prefix (lp_meta_key (fm, lp_meta_n_keys (fm) - 1), "test."));
  gint64 ft = -1;
  g_assert_true (lp_meta_get_int (fm, "general.file_type", &ft, NULL));
  g_assert_cmpint (ft, ==, 0);
  g_assert_false (lp_meta_has (fm, "general.quantization_version"));
  /* Version 2 files have the same layout and load too. */
  g_autofree char *buf = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (path, &buf, &len, NULL));
  buf[4] = 2;
  g_autofree char *v2 = lp_test_write_file ("v2.gguf", buf, len);
  g_autoptr (LpModel) m2 = lp_gguf_load (v2, &error);
  g_assert_no_error (error);
}

static void
check_float_output (LpDType dtype, int ftype)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (5);
  g_autofree char *name = g_strdup_printf ("out-%s.gguf", lp_dtype_name (dtype));
  g_autofree char *path = tmp_path (name);
  g_autoptr (GError) error = NULL;
  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  opts.dtype = dtype;
  g_assert_true (lp_model_save (m, path, &opts, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  lp_test_assert_same_config (lp_model_config (m), lp_model_config (back));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *a = lp_model_tensor_at (m, i);
      LpTensor *b = lp_model_tensor (back, a->name);
      g_assert_nonnull (b);
      if (a->n_dims == 1)
        {
          g_assert_cmpint (b->dtype, ==, LP_DTYPE_F32);
          g_assert_true (g_bytes_equal (a->data, b->data));
          continue;
        }
      g_assert_cmpint (b->dtype, ==, dtype);
      g_autoptr (LpTensor) expect = lp_tensor_convert (a, dtype, &error);
      g_assert_no_error (error);
      g_assert_true (g_bytes_equal (expect->data, b->data));
      g_assert_cmpuint ((guintptr) lp_tensor_data (b) % 32, ==, 0);
    }
  g_autoptr (LpMeta) fm = lp_gguf_read_meta (path, &error);
  g_assert_no_error (error);
  gint64 ft = -1;
  g_assert_true (lp_meta_get_int (fm, "general.file_type", &ft, NULL));
  g_assert_cmpint (ft, ==, ftype);
}

static void
test_f16_bf16 (void)
{
  check_float_output (LP_DTYPE_F16, 1);
  check_float_output (LP_DTYPE_BF16, 32);
  check_float_output (LP_DTYPE_F32, 0);
}

/* llama.cpp's conversion of stories260K, or NULL (test skipped) when absent. */
static LpModel *
load_stories (char **path_out)
{
  char *path = lp_test_shared_path ("models/stories260K/stories260K-f32.gguf");
  if (path == NULL)
    return NULL;
  g_autoptr (GError) error = NULL;
  LpModel *m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  *path_out = path;
  return m;
}

static void
test_stories (void)
{
  g_autofree char *path = NULL;
  g_autoptr (LpModel) m = load_stories (&path);
  if (m == NULL)
    return;
  const LpModelConfig *c = lp_model_config (m);
  g_assert_cmpint (c->arch, ==, LP_ARCH_LLAMA);
  g_assert_cmpint (c->n_layers, ==, 5);
  g_assert_cmpint (c->dim, ==, 64);
  g_assert_cmpint (c->ffn_dim, ==, 172);
  g_assert_cmpint (c->n_heads, ==, 8);
  g_assert_cmpint (c->n_kv_heads, ==, 4);
  g_assert_cmpint (c->n_vocab, ==, 512);
  g_assert_cmpint (c->ctx_len, ==, 128);
  g_assert_true (c->tied_embeddings); /* the converter's copy of the head was dropped */
  g_assert_null (lp_model_tensor (m, "output.weight"));
  g_assert_cmpint (lp_model_n_params (m), ==, 260032);
  const LpValue *tokens = lp_meta_get_array (lp_model_meta (m), "tokenizer.ggml.tokens", LP_VALUE_STRING, NULL);
  g_assert_nonnull (tokens);
  g_assert_cmpuint (tokens->n_elems, ==, 512);
  gint64 sep = 0;
  g_assert_true (lp_meta_get_int (lp_model_meta (m), "tokenizer.ggml.seperator_token_id", &sep, NULL));
  g_assert_cmpint (sep, ==, 4294967295);
}

static void
test_stories_metadata (void)
{
  g_autofree char *path = NULL;
  g_autoptr (LpModel) m = load_stories (&path);
  if (m == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autofree char *out = tmp_path ("stories-copy.gguf");
  g_assert_true (lp_model_save (m, out, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpMeta) orig = lp_gguf_read_meta (path, &error);
  g_assert_no_error (error);
  g_autoptr (LpMeta) ours = lp_gguf_read_meta (out, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_meta_n_keys (orig), ==, 19);
  assert_meta_included (orig, ours);
  /* And the copy loads to the same model. */
  g_autoptr (LpModel) back = lp_model_load (out, NULL, &error);
  g_assert_no_error (error);
  lp_test_assert_same_config (lp_model_config (m), lp_model_config (back));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *a = lp_model_tensor_at (m, i);
      g_assert_true (g_bytes_equal (a->data, lp_model_tensor (back, a->name)->data));
    }
}

/* gguf-py (llama.cpp's own Python reader) reads what we wrote. */
static void
test_python_oracle (void)
{
  g_autofree char *py_out = NULL, *py_err = NULL;
  int status = -1;
  const char *check[] = { "python3", "-c", "import gguf", NULL };
  if (!g_spawn_sync (NULL, (char **) check, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_test_skip ("python3 with the gguf module (gguf-py) is not available");
      return;
    }
  g_autoptr (LpModel) m = model_with_all_types ();
  /* One quantized tensor, written as it is: q8_0 {2, 64}, all codes 1, scale 1. */
  gint64 qshape[2] = { 2, 64 };
  g_autoptr (LpTensor) q = lp_tensor_new ("extra.q8.weight", LP_DTYPE_Q8_0, 2, qshape, NULL);
  guint8 *qd = lp_tensor_data_mut (q);
  for (int b = 0; b < 4; b++)
    {
      qd[b * 34] = 0x00;
      qd[b * 34 + 1] = 0x3c;
      memset (qd + b * 34 + 2, 1, 32);
    }
  lp_model_set_tensor (m, q);
  /* And one we cannot dequantize yet: still carried as bytes. */
  gint64 kshape[2] = { 1, 256 };
  g_autoptr (LpTensor) k = lp_tensor_new ("extra.q4k.weight", LP_DTYPE_Q4_K, 2, kshape, NULL);
  memset (lp_tensor_data_mut (k), 0x11, lp_tensor_n_bytes (k));
  lp_model_set_tensor (m, k);
  g_autofree char *path = tmp_path ("oracle.gguf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_gguf_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_gguf_load (path, &error);
  g_assert_no_error (error);
  LpTensor *kb = lp_model_tensor (back, "extra.q4k.weight");
  g_assert_cmpint (kb->dtype, ==, LP_DTYPE_Q4_K);
  g_assert_true (g_bytes_equal (kb->data, k->data));

  const char *script =
    "import sys, hashlib, gguf\n"
    "r = gguf.GGUFReader(sys.argv[1])\n"
    "for t in r.tensors:\n"
    "    print('T', t.name, int(t.tensor_type), ','.join(str(int(x)) for x in t.shape), t.data_offset % 32,\n"
    "          hashlib.sha256(t.data.tobytes()).hexdigest())\n"
    "for k in ('general.architecture', 'general.name', 'test.aaaa'):\n"
    "    f = r.fields[k]; print('S', k, bytes(f.parts[f.data[0]]).decode())\n"
    "for k in ('llama.block_count', 'llama.embedding_length', 'general.file_type', 'general.quantization_version', 'test.u64', 'test.i8'):\n"
    "    f = r.fields[k]; print('I', k, int(f.parts[f.data[0]][0]))\n"
    "f = r.fields['tokenizer.ggml.tokens'] if 'tokenizer.ggml.tokens' in r.fields else r.fields['test.strings']\n"
    "print('A', len(f.data), '|'.join(bytes(f.parts[i]).decode() for i in f.data))\n";
  const char *argv[] = { "python3", "-c", script, path, NULL };
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &py_out, &py_err, &status, &error));
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("gguf-py failed on our file: %s", py_err);

  GString *expect = g_string_new (NULL);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      g_autofree char *sha = g_compute_checksum_for_bytes (G_CHECKSUM_SHA256, t->data);
      g_string_append_printf (expect, "T %s %d ", t->name, (int) t->dtype);
      for (int d = t->n_dims - 1; d >= 0; d--)
        g_string_append_printf (expect, "%" G_GINT64_FORMAT "%s", t->shape[d], d ? "," : "");
      g_string_append_printf (expect, " 0 %s\n", sha);
    }
  g_string_append (expect, "S general.architecture llama\nS general.name tiny\nS test.aaaa ünïcödé ▁text\n");
  g_string_append (expect, "I llama.block_count 2\nI llama.embedding_length 32\nI general.file_type 0\n"
                           "I general.quantization_version 2\nI test.u64 18446744073709551615\nI test.i8 -100\n");
  g_string_append (expect, "A 3 <s>||▁the\n");
  g_assert_cmpstr (py_out, ==, expect->str);
  g_string_free (expect, TRUE);
}

/* The llama3 rope factors llama.cpp wants as a tensor. */
static void
test_llama3_rope_freqs (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (9);
  LpModelConfig *c = lp_model_config_mut (m);
  c->head_dim = 32;
  c->n_heads = 1;
  c->n_kv_heads = 1;
  /* Re-make the attention tensors for H=1, hd=32 (shapes stay 32x32). */
  c->rope_theta = 500000;
  c->rope_scaling = LP_ROPE_SCALING_LLAMA3;
  c->rope_factor = 8;
  c->rope_low_freq_factor = 1;
  c->rope_high_freq_factor = 4;
  c->rope_orig_ctx = 8192;
  for (int l = 0; l < 2; l++)
    for (int kv = 0; kv < 2; kv++)
      {
        g_autofree char *name = g_strdup_printf ("blk.%d.attn_%s.weight", l, kv ? "k" : "v");
        gint64 shape[2] = { 32, 32 };
        g_autoptr (LpTensor) t = lp_tensor_new (name, LP_DTYPE_F32, 2, shape, NULL);
        lp_model_set_tensor (m, t);
      }
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_validate (m, &error));
  g_autofree char *path = tmp_path ("llama3.gguf");
  g_assert_true (lp_gguf_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_model_config (back)->rope_scaling, ==, LP_ROPE_SCALING_LLAMA3);
  LpTensor *rf = lp_model_tensor (back, "rope_freqs.weight");
  g_assert_nonnull (rf);
  g_assert_cmpint (rf->dtype, ==, LP_DTYPE_F32);
  g_assert_cmpint (rf->n_dims, ==, 1);
  g_assert_cmpint (rf->shape[0], ==, 16);
  /* The converter's formula, in double here. */
  const float *f = lp_tensor_data (rf);
  for (int i = 0; i < 16; i++)
    {
      double freq = pow (500000.0, -(2.0 * i) / 32), wavelen = 2 * G_PI / freq;
      double expect = wavelen < 8192 / 4.0 ? 1 : wavelen > 8192 / 1.0 ? 8
                      : 1 / ((1 - (8192 / wavelen - 1) / 3) / 8 + (8192 / wavelen - 1) / 3);
      g_assert_cmpfloat_with_epsilon (f[i], expect, 1e-5 * expect);
    }
  g_assert_cmpfloat (f[0], ==, 1.0f);
  g_assert_cmpfloat (f[15], ==, 8.0f);
  /* Written once: a second save keeps the one that is there. */
  g_autofree char *path2 = tmp_path ("llama3-again.gguf");
  g_assert_true (lp_gguf_save (back, path2, NULL, &error));
  g_autoptr (LpModel) again = lp_gguf_load (path2, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_model_n_tensors (again), ==, lp_model_n_tensors (back));
}

/* ---- malformed files ---- */

typedef struct {
  char *buf;
  gsize len;
} Bytes;

static Bytes base_file;

static void
load_base (void)
{
  if (base_file.buf != NULL)
    return;
  g_autoptr (LpModel) m = model_with_all_types ();
  g_autofree char *path = tmp_path ("base.gguf");
  g_assert_true (lp_gguf_save (m, path, NULL, NULL));
  g_assert_true (g_file_get_contents (path, &base_file.buf, &base_file.len, NULL));
}

/* Offset of the GGUF string `s` (its u64 length) in the base file. */
static gsize
find_string (const char *s)
{
  gsize n = strlen (s);
  for (gsize off = 0; off + 8 + n <= base_file.len; off++)
    {
      guint64 len;
      memcpy (&len, base_file.buf + off, 8);
      if (len == n && memcmp (base_file.buf + off + 8, s, n) == 0)
        return off;
    }
  g_error ("string %s not in the base file", s);
}

/* Offsets inside the tensor info of `name`. */
typedef struct { gsize name, n_dims, ne, type, offset; } InfoAt;

static InfoAt
tensor_info_at (const char *name)
{
  InfoAt a;
  a.name = find_string (name);
  a.n_dims = a.name + 8 + strlen (name);
  guint32 nd;
  memcpy (&nd, base_file.buf + a.n_dims, 4);
  a.ne = a.n_dims + 4;
  a.type = a.ne + 8 * nd;
  a.offset = a.type + 4;
  return a;
}

static gsize
value_at (const char *key)
{
  return find_string (key) + 8 + strlen (key) + 4;
}

/* Copy of the base file with `n` bytes at `off` replaced, loaded: it must fail
 * with a message holding its path and every fragment. */
static void
expect_bad (const char *label, gsize off, const void *patch, gsize n, ...)
{
  load_base ();
  g_autofree char *buf = g_memdup2 (base_file.buf, base_file.len);
  memcpy (buf + off, patch, n);
  g_autofree char *name = g_strdup_printf ("bad-%s.gguf", label);
  g_autofree char *path = lp_test_write_file (name, buf, base_file.len);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
  g_assert_null (m);
  g_assert_nonnull (error);
  if (g_test_verbose ())
    g_test_message ("%s: %s", label, error->message);
  g_assert_null (strchr (error->message, '\n'));
  lp_test_assert_error_contains (error, path, NULL);
  va_list ap;
  va_start (ap, n);
  for (const char *frag = va_arg (ap, const char *); frag != NULL; frag = va_arg (ap, const char *))
    if (strstr (error->message, frag) == NULL)
      g_error ("%s: error message \"%s\" lacks \"%s\"", label, error->message, frag);
  va_end (ap);
}

#define BAD_U32(label, off, v, ...) do { guint32 x_ = (v); expect_bad (label, off, &x_, 4, __VA_ARGS__); } while (0)
#define BAD_U64(label, off, v, ...) do { guint64 x_ = (v); expect_bad (label, off, &x_, 8, __VA_ARGS__); } while (0)

static void
test_bad_header (void)
{
  expect_bad ("magic", 0, "GGML", 4, "offset 0", "expected magic \"GGUF\"", "found \"GGML\"", NULL);
  BAD_U32 ("v1", 4, 1, "offset 4", "version", "expected 2 or 3", "found 1", NULL);
  BAD_U32 ("v9", 4, 9, "offset 4", "expected 2 or 3", "found 9", NULL);
  BAD_U32 ("big-endian", 4, GUINT32_SWAP_LE_BE (3), "offset 4", "big-endian", NULL);
  BAD_U64 ("tensor-count", 8, G_GUINT64_CONSTANT (1) << 40, "offset 8", "tensor count", "expected at most",
           "found 1099511627776", NULL);
  BAD_U64 ("kv-count", 16, G_MAXUINT64, "offset 16", "key/value count", "expected at most",
           "found 18446744073709551615", NULL);
  BAD_U64 ("key-length", 24, G_GUINT64_CONSTANT (1) << 50, "offset 24", "key #0 name",
           "expected a string length of at most", "found 1125899906842624", NULL);
}

static void
test_bad_values (void)
{
  load_base ();
  gsize arch_type = value_at ("general.architecture") - 4;
  g_autofree char *at_type = g_strdup_printf ("offset %" G_GSIZE_FORMAT, arch_type);
  BAD_U32 ("value-type", arch_type, 13, at_type, "key general.architecture", "expected a value type 0..12",
           "found 13", NULL);
  /* "llama" -> "l\xffama": the value starts 4 bytes after the type. */
  gsize str = arch_type + 4;
  g_autofree char *at_str = g_strdup_printf ("offset %" G_GSIZE_FORMAT, str);
  g_autofree char *at_byte = g_strdup_printf ("at offset %" G_GSIZE_FORMAT, str + 9);
  expect_bad ("utf8", str + 9, "\xff", 1, at_str, "key general.architecture", "expected a UTF-8 string",
              "0xff", at_byte, NULL);
  expect_bad ("nul", str + 9, "\0", 1, "key general.architecture", "a NUL byte", NULL);
  expect_bad ("arch", str + 12, "b", 1, "key general.architecture", "expected one of llama, mistral, qwen2",
              "found \"llamb\"", NULL);
  BAD_U64 ("string-length", str, G_MAXUINT64 / 2, at_str, "key general.architecture",
           "expected a string length of at most", NULL);
  expect_bad ("bool", value_at ("test.flag"), "\x07", 1, "key test.flag", "expected a bool (0 or 1)", "found 7", NULL);
  BAD_U64 ("array-count", value_at ("test.array") + 4, G_GUINT64_CONSTANT (1) << 61, "key test.array",
           "array of u32", "expected at most", "found 2305843009213693952", NULL);
  BAD_U32 ("array-type", value_at ("test.array"), 99, "key test.array", "expected a value type", "found 99", NULL);
  /* Inside the nested array: the element type of its second element. */
  gsize nested = value_at ("test.nested") + 4 + 8 + (4 + 8 + 3 * 4);
  BAD_U32 ("nested-type", nested, 42, "key test.nested[1]", "found 42", NULL);
  gsize aaab = find_string ("test.aaab");
  expect_bad ("dup-key", aaab + 8 + 8, "a", 1, "key test.aaaa", "expected each key once", NULL);
  BAD_U32 ("alignment", value_at ("general.alignment"), 48, "key general.alignment", "power of two", "48", NULL);
}

static void
test_bad_tensors (void)
{
  load_base ();
  InfoAt emb = tensor_info_at ("token_embd.weight");
  g_autofree char *at_type = g_strdup_printf ("offset %" G_GSIZE_FORMAT, emb.type);
  BAD_U32 ("tensor-type", emb.type, 5, at_type, "tensor token_embd.weight", "expected a known tensor type id",
           "found 5", NULL);
  BAD_U32 ("n-dims", emb.n_dims, 5, "tensor token_embd.weight", "expected 1 to 4 dimensions", "found 5", NULL);
  BAD_U32 ("n-dims-0", emb.n_dims, 0, "tensor token_embd.weight", "expected 1 to 4 dimensions", "found 0", NULL);
  guint64 huge[2] = { G_GUINT64_CONSTANT (1) << 40, G_GUINT64_CONSTANT (1) << 40 };
  expect_bad ("overflow", emb.ne, huge, 16, "tensor token_embd.weight", "overflow", NULL);
  BAD_U64 ("ne-sign", emb.ne, G_GUINT64_CONSTANT (1) << 63, "tensor token_embd.weight", "overflow", NULL);
  BAD_U64 ("unaligned", emb.offset, 4, "tensor token_embd.weight", "expected a multiple of the alignment 32",
           "found 4", NULL);
  BAD_U64 ("beyond", emb.offset, G_GUINT64_CONSTANT (1) << 30, "tensor token_embd.weight", "within the file",
           "found end of file", NULL);
  /* blk.0.attn_norm.weight placed on token_embd.weight's bytes (at 0). */
  InfoAt norm = tensor_info_at ("blk.0.attn_norm.weight");
  BAD_U64 ("overlap", norm.offset, 0, "token_embd.weight", "blk.0.attn_norm.weight", "overlap", NULL);
  /* blk.0.attn_k.weight renamed blk.0.attn_q.weight. */
  InfoAt k = tensor_info_at ("blk.0.attn_k.weight");
  expect_bad ("dup-tensor", k.name + 8 + strlen ("blk.0.attn_"), "q", 1, "tensor blk.0.attn_q.weight",
              "expected each tensor name once", NULL);
  /* A tensor the architecture expects, renamed away: found missing after load. */
  expect_bad ("missing", k.name + 8, "X", 1, "blk.0.attn_k.weight", "not found", NULL);
}

/* Every prefix of the header and some of the data: a clean error, no crash. */
static void
test_truncated (void)
{
  load_base ();
  InfoAt last = tensor_info_at ("output_norm.weight");
  gsize header_end = last.offset + 8;
  g_autofree char *path = tmp_path ("truncated.gguf");
  for (gsize len = 0; len < base_file.len; len += len < header_end + 64 ? 1 : 257)
    {
      g_assert_true (g_file_set_contents (path, base_file.buf, len, NULL));
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_gguf_load (path, &error);
      g_assert_null (m);
      lp_test_assert_error_contains (error, path, NULL);
      if (len < header_end)
        lp_test_assert_error_contains (error, "offset ", NULL);
    }
  /* Metadata alone does not need the tensor infos... */
  g_autoptr (GError) error = NULL;
  g_assert_true (g_file_set_contents (path, base_file.buf, header_end - 3, NULL));
  g_autoptr (LpMeta) meta = lp_gguf_read_meta (path, &error);
  g_assert_no_error (error);
  g_assert_true (lp_meta_has (meta, "test.nested"));
  /* ...but does need every value. */
  gsize u64 = value_at ("test.u64");
  g_assert_true (g_file_set_contents (path, base_file.buf, u64 + 4, NULL));
  g_assert_null (lp_gguf_read_meta (path, &error));
  g_autofree char *at = g_strdup_printf ("offset %" G_GSIZE_FORMAT, u64);
  lp_test_assert_error_contains (error, path, at, "key test.u64", "end of file", NULL);
}

/* Random byte damage in the header: loads or fails cleanly, never crashes. */
static void
test_fuzz (void)
{
  load_base ();
  InfoAt last = tensor_info_at ("output_norm.weight");
  gsize header_end = last.offset + 8;
  g_autoptr (GRand) rng = g_rand_new_with_seed (42);
  g_autofree char *path = tmp_path ("fuzz.gguf");
  g_autofree char *buf = g_malloc (base_file.len);
  for (int iter = 0; iter < 2000; iter++)
    {
      memcpy (buf, base_file.buf, base_file.len);
      int flips = g_rand_int_range (rng, 1, 4);
      for (int f = 0; f < flips; f++)
        buf[g_rand_int_range (rng, 0, (gint32) header_end)] = (char) g_rand_int_range (rng, 0, 256);
      g_assert_true (g_file_set_contents (path, buf, base_file.len, NULL));
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
      if (m == NULL)
        g_assert_nonnull (strstr (error->message, path));
    }
}

static void
test_failed_save (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_test_tiny_model (1);
  /* Into a "directory" that is a file (a missing one would be created). */
  g_autofree char *plain = lp_test_write_file ("plain-file", "x", 1);
  g_autofree char *nodir = g_build_filename (plain, "sub", "x.gguf", NULL);
  g_assert_false (lp_gguf_save (m, nodir, NULL, &error));
  lp_test_assert_error_contains (error, nodir, "is a regular file, not a directory", NULL);
  g_clear_error (&error);
  g_assert_true (g_file_test (plain, G_FILE_TEST_IS_REGULAR));

  /* A tensor of a type GGUF has no id for, over an existing file: it stays. */
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "failsave", NULL);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  g_autofree char *path = g_build_filename (dir, "m.gguf", NULL);
  g_assert_true (g_file_set_contents (path, "old", 3, NULL));
  gint64 shape[1] = { 4 };
  g_autoptr (LpTensor) odd = lp_tensor_new ("odd.weight", LP_DTYPE_F32, 1, shape, NULL);
  odd->dtype = (LpDType) 5; /* a removed ggml type (Q4_2) */
  lp_model_set_tensor (m, odd);
  g_assert_false (lp_gguf_save (m, path, NULL, &error));
  lp_test_assert_error_contains (error, path, "odd.weight", "unknown type id 5", NULL);
  g_clear_error (&error);
  g_autofree char *contents = NULL;
  g_assert_true (g_file_get_contents (path, &contents, NULL, NULL));
  g_assert_cmpstr (contents, ==, "old");
  lp_model_remove_tensor (m, "odd.weight");

  /* An output type the writer cannot make. */
  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  opts.dtype = LP_DTYPE_Q8_0;
  g_autofree char *p2 = g_build_filename (dir, "q.gguf", NULL);
  g_assert_false (lp_gguf_save (m, p2, &opts, &error));
  lp_test_assert_error_contains (error, p2, "expected f32, f16 or bf16", "found q8_0", NULL);
  g_clear_error (&error);
  g_assert_false (g_file_test (p2, G_FILE_TEST_EXISTS));

  /* A string that is not UTF-8. */
  lp_meta_set_string (lp_model_meta (m), "test.bad", "ok \xc3(");
  g_assert_false (lp_gguf_save (m, p2, NULL, &error));
  lp_test_assert_error_contains (error, p2, "key test.bad", "expected a UTF-8 string", "0xc3", NULL);
  g_clear_error (&error);
  lp_meta_remove (lp_model_meta (m), "test.bad");

  /* Writing itself failing half-way (file size limit: EFBIG, like a full disk). */
  struct rlimit saved, small;
  g_assert_cmpint (getrlimit (RLIMIT_FSIZE, &saved), ==, 0);
  small = saved;
  small.rlim_cur = 4096;
  void (*old_handler) (int) = signal (SIGXFSZ, SIG_IGN);
  g_assert_cmpint (setrlimit (RLIMIT_FSIZE, &small), ==, 0);
  gboolean ok = lp_gguf_save (m, p2, NULL, &error);
  g_assert_cmpint (setrlimit (RLIMIT_FSIZE, &saved), ==, 0);
  signal (SIGXFSZ, old_handler);
  g_assert_false (ok);
  if (g_test_verbose ())
    g_test_message ("%s", error->message);
  lp_test_assert_error_contains (error, p2, NULL);
  g_clear_error (&error);
  g_assert_false (g_file_test (p2, G_FILE_TEST_EXISTS));
  assert_no_temporaries (dir);

  /* A name llama.cpp would refuse. */
  g_autoptr (LpTensor) longname = lp_tensor_new ("a.very.long.tensor.name.that.goes.past.the.sixty.four.byte.limit", LP_DTYPE_F32, 1, shape, NULL);
  lp_model_set_tensor (m, longname);
  g_assert_false (lp_gguf_save (m, p2, NULL, &error));
  lp_test_assert_error_contains (error, p2, "shorter than 64 bytes", NULL);
  g_assert_false (g_file_test (p2, G_FILE_TEST_EXISTS));
  assert_no_temporaries (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gguf/roundtrip", test_roundtrip);
  g_test_add_func ("/gguf/f16-bf16", test_f16_bf16);
  g_test_add_func ("/gguf/stories260K", test_stories);
  g_test_add_func ("/gguf/stories260K-metadata", test_stories_metadata);
  g_test_add_func ("/gguf/gguf-py-oracle", test_python_oracle);
  g_test_add_func ("/gguf/llama3-rope-freqs", test_llama3_rope_freqs);
  g_test_add_func ("/gguf/bad-header", test_bad_header);
  g_test_add_func ("/gguf/bad-values", test_bad_values);
  g_test_add_func ("/gguf/bad-tensors", test_bad_tensors);
  g_test_add_func ("/gguf/truncated", test_truncated);
  g_test_add_func ("/gguf/fuzz", test_fuzz);
  g_test_add_func ("/gguf/failed-save", test_failed_save);
  int rc = g_test_run ();
  g_free (base_file.buf);
  return rc;
}
