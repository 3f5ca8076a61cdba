/* Parsers against hostile files: JSON nested a million deep in every JSON
 * file llmpress reads, tensor data at addresses misaligned for its type, and
 * control characters from a file in error messages. */
#include "config.h"

#include <string.h>
#include <glib/gstdio.h>

#include "testutil.h"

#define DEEP 1000000

/* A million '[' (arrays) or '{"a":' (objects), wrapped in an object so the
 * root is what the readers expect: {"x": [[[[... */
static GString *
deep_json (gboolean objects)
{
  GString *s = g_string_new ("{\"x\": ");
  for (int i = 0; i < DEEP; i++)
    g_string_append (s, objects ? "{\"a\":" : "[");
  return s;
}

static void
assert_too_deep (const GError *error, const char *file)
{
  lp_test_assert_error_contains (error, file, "expected JSON nested at most 256 deep, found deeper", NULL);
}

/* A safetensors file: the 8-byte header length, the header, then data. */
static char *
write_safetensors (const char *name, const char *header, gsize hlen, const void *data, gsize data_len)
{
  gsize total = 8 + hlen + data_len;
  g_autofree guint8 *buf = g_malloc0 (total);
  guint64 le = GUINT64_TO_LE ((guint64) hlen);
  memcpy (buf, &le, 8);
  memcpy (buf + 8, header, hlen);
  if (data_len > 0)
    memcpy (buf + 8 + hlen, data, data_len);
  return lp_test_write_file (name, buf, total);
}

static void
write_in (const char *dir, const char *file, const char *text, gssize len)
{
  g_autofree char *path = g_build_filename (dir, file, NULL);
  g_assert_true (g_file_set_contents (path, text, len, NULL));
}

static void
test_deep_safetensors_header (void)
{
  for (int objects = 0; objects < 2; objects++)
    {
      g_autoptr (GString) h = deep_json (objects);
      g_autofree char *path = write_safetensors (objects ? "deep-obj.safetensors" : "deep-arr.safetensors", h->str,
                                                 h->len, NULL, 0);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
      g_assert_null (st);
      assert_too_deep (error, path);
      /* Offset of the 257th opening bracket, counted from the file's start. */
      g_autofree char *at = g_strdup_printf ("offset %d:", 8 + 6 + 255 * (objects ? 5 : 1));
      lp_test_assert_error_contains (error, at, "header: ", NULL);
    }
}

/* A valid small HF directory (the tiny model), so that each test can replace
 * one file in it by a deep one. */
static char *
hf_dir (const char *name)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (7);
  char *dir = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_hf_save (m, dir, NULL, &error));
  g_assert_no_error (error);
  return dir;
}

/* `file` of a valid HF directory replaced by deep JSON (model.safetensors
 * removed when it is the index, so that the index is read). */
static void
check_deep_hf_file (const char *file)
{
  for (int objects = 0; objects < 2; objects++)
    {
      g_autofree char *name = g_strdup_printf ("deep-%s-%d", file, objects);
      g_autofree char *dir = hf_dir (name);
      if (g_str_has_prefix (file, "model.safetensors"))
        {
          g_autofree char *single = g_build_filename (dir, "model.safetensors", NULL);
          g_assert_cmpint (g_unlink (single), ==, 0);
        }
      g_autoptr (GString) s = deep_json (objects);
      write_in (dir, file, s->str, s->len);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_hf_load (dir, &error);
      g_assert_null (m);
      assert_too_deep (error, file);
    }
}

static void
test_deep_config (void)
{
  check_deep_hf_file ("config.json");
}

static void
test_deep_index (void)
{
  check_deep_hf_file ("model.safetensors.index.json");
}

static const char tokenizer_json[] =
  "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
  " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";

static void
test_deep_tokenizer (void)
{
  for (int objects = 0; objects < 2; objects++)
    {
      g_autoptr (GString) s = deep_json (objects);
      /* tokenizer.json itself */
      g_autofree char *dir = lp_test_mkdir (objects ? "deep-tok-obj" : "deep-tok-arr");
      write_in (dir, "tokenizer.json", s->str, s->len);
      g_autoptr (LpMeta) meta = lp_meta_new ();
      g_autoptr (GError) error = NULL;
      g_assert_false (lp_tokenizer_read_hf (dir, meta, &error));
      assert_too_deep (error, "tokenizer.json");
      /* tokenizer_config.json beside a valid tokenizer.json */
      g_autofree char *dir2 = lp_test_mkdir (objects ? "deep-tokcfg-obj" : "deep-tokcfg-arr");
      write_in (dir2, "tokenizer.json", tokenizer_json, -1);
      write_in (dir2, "tokenizer_config.json", s->str, s->len);
      g_autoptr (LpMeta) meta2 = lp_meta_new ();
      g_autoptr (GError) error2 = NULL;
      g_assert_false (lp_tokenizer_read_hf (dir2, meta2, &error2));
      assert_too_deep (error2, "tokenizer_config.json");
    }
}

static void
test_depth_limit_exact (void)
{
  /* config.json ignores keys it does not know: the root object and 255
   * arrays (256 levels) load; brackets inside strings, escaped quotes
   * included, do not count.  One array more is refused. */
  g_autofree char *dir = hf_dir ("depth-limit");
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  g_autofree char *text = NULL;
  g_assert_true (g_file_get_contents (cfg, &text, NULL, NULL));
  g_assert_true (text[0] == '{');
  for (int levels = 255; levels <= 256; levels++)
    {
      GString *s = g_string_new ("{\"note\": \"[[[[{{{{\\\"[[[[\", \"deep\": ");
      for (int i = 0; i < levels; i++)
        g_string_append_c (s, '[');
      for (int i = 0; i < levels; i++)
        g_string_append_c (s, ']');
      g_string_append_c (s, ',');
      g_string_append (s, text + 1);
      write_in (dir, "config.json", s->str, s->len);
      g_string_free (s, TRUE);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_hf_load (dir, &error);
      if (levels == 255)
        {
          g_assert_no_error (error);
          g_assert_nonnull (m);
        }
      else
        {
          g_assert_null (m);
          assert_too_deep (error, "config.json");
        }
    }
}

/* Little-endian GGUF building blocks. */
static void
put_u32 (GByteArray *b, guint32 v)
{
  v = GUINT32_TO_LE (v);
  g_byte_array_append (b, (const guint8 *) &v, 4);
}

static void
put_u64 (GByteArray *b, guint64 v)
{
  v = GUINT64_TO_LE (v);
  g_byte_array_append (b, (const guint8 *) &v, 8);
}

static void
put_str (GByteArray *b, const char *s)
{
  put_u64 (b, strlen (s));
  g_byte_array_append (b, (const guint8 *) s, strlen (s));
}

/* The fixed GGUF header: magic, version 3, tensor and key/value counts. */
static GByteArray *
gguf_start (guint64 n_tensors, guint64 n_kv)
{
  GByteArray *b = g_byte_array_new ();
  g_byte_array_append (b, (const guint8 *) "GGUF", 4);
  put_u32 (b, 3);
  put_u64 (b, n_tensors);
  put_u64 (b, n_kv);
  return b;
}

#define GGUF_TYPE_U32 4
#define GGUF_TYPE_STRING 8

static void
put_tensor_info (GByteArray *b, const char *name, guint64 n, LpDType type, guint64 offset)
{
  put_str (b, name);
  put_u32 (b, 1);
  put_u64 (b, n);
  put_u32 (b, type);
  put_u64 (b, offset);
}

static void
test_misaligned_gguf (void)
{
  /* general.alignment = 1 and tensors at odd data offsets: i8 "i" (1 byte)
   * at 0, f32 "f" (4 values) at 1, f16 "h" (2 values) at 17.  general.name
   * pads the header so the data section starts at a multiple of 4: "f" then
   * sits at an address that is 1 mod 4 in the (page-aligned) mapping. */
  for (gsize pad = 0;; pad++)
    {
      g_autoptr (GByteArray) b = gguf_start (3, 2);
      put_str (b, "general.alignment");
      put_u32 (b, GGUF_TYPE_U32);
      put_u32 (b, 1);
      g_autofree char *name = g_strnfill (pad + 1, 'n');
      put_str (b, "general.name");
      put_u32 (b, GGUF_TYPE_STRING);
      put_str (b, name);
      put_tensor_info (b, "i", 1, LP_DTYPE_I8, 0);
      put_tensor_info (b, "f", 4, LP_DTYPE_F32, 1);
      put_tensor_info (b, "h", 2, LP_DTYPE_F16, 17);
      if (b->len % 4 != 0)
        continue;
      const float f[4] = { 1.5f, -2.25f, 3e-3f, 1e6f };
      const guint16 h[2] = { GUINT16_TO_LE (lp_f32_to_f16 (0.5f)), GUINT16_TO_LE (lp_f32_to_f16 (-7.0f)) };
      const gint8 i = -5;
      g_byte_array_append (b, (const guint8 *) &i, 1);
      g_byte_array_append (b, (const guint8 *) f, sizeof f);
      g_byte_array_append (b, (const guint8 *) h, sizeof h);
      g_autofree char *path = lp_test_write_file ("align1.gguf", b->data, b->len);
      g_autoptr (LpMeta) meta = lp_meta_new ();
      g_autoptr (GError) error = NULL;
      g_autoptr (GPtrArray) ts = lp_gguf_read_tensors (path, meta, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (ts->len, ==, 3);
      for (guint k = 0; k < ts->len; k++)
        {
          LpTensor *t = ts->pdata[k];
          const void *p = lp_tensor_data (t);
          if (strcmp (t->name, "i") == 0)
            g_assert_cmpint (*(const gint8 *) p, ==, -5);
          else if (strcmp (t->name, "f") == 0)
            {
              g_assert_cmpuint ((guintptr) p % 4, ==, 0);
              const float *v = p;
              for (int j = 0; j < 4; j++)
                g_assert_cmpfloat (v[j], ==, f[j]);
            }
          else
            {
              g_assert_cmpstr (t->name, ==, "h");
              g_assert_cmpuint ((guintptr) p % 2, ==, 0);
              const guint16 *v = p;
              g_assert_cmpfloat (lp_f16_to_f32 (GUINT16_FROM_LE (v[0])), ==, 0.5f);
              g_assert_cmpfloat (lp_f16_to_f32 (GUINT16_FROM_LE (v[1])), ==, -7.0f);
            }
        }
      break;
    }
}

static void
test_misaligned_safetensors (void)
{
  /* A header of odd length: the data section starts at an odd offset. */
  GString *h = g_string_new ("{\"f\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]},"
                             " \"b\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [16, 20]}}");
  if (h->len % 2 == 0)
    g_string_append_c (h, ' ');
  const float f[4] = { 0.25f, -1.0f, 65504.0f, 1e-8f };
  guint8 data[20];
  memcpy (data, f, 16);
  const guint16 bf[2] = { GUINT16_TO_LE (lp_f32_to_bf16 (3.0f)), GUINT16_TO_LE (lp_f32_to_bf16 (-0.5f)) };
  memcpy (data + 16, bf, 4);
  g_autofree char *path = write_safetensors ("odd-header.safetensors", h->str, h->len, data, sizeof data);
  g_string_free (h, TRUE);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
  g_assert_no_error (error);
  LpTensor *tf = lp_safetensors_tensor (st, "f");
  const float *v = lp_tensor_data (tf);
  g_assert_cmpuint ((guintptr) v % 4, ==, 0);
  for (int j = 0; j < 4; j++)
    g_assert_cmpfloat (v[j], ==, f[j]);
  LpTensor *tb = lp_safetensors_tensor (st, "b");
  const guint16 *w = lp_tensor_data (tb);
  g_assert_cmpuint ((guintptr) w % 2, ==, 0);
  g_assert_cmpfloat (lp_bf16_to_f32 (GUINT16_FROM_LE (w[0])), ==, 3.0f);
  g_assert_cmpfloat (lp_bf16_to_f32 (GUINT16_FROM_LE (w[1])), ==, -0.5f);
  g_autofree float *row = lp_tensor_dup_f32 (tb, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (row[0], ==, 3.0f);
}

#define EVIL "\n\x1b[31m"
#define EVIL_SHOWN "\\n\\x1b[31m"

/* One line, no byte a terminal acts on, and the escaped text shown. */
static void
assert_clean_message (const char *message, const char *shown)
{
  for (const char *p = message; *p; p++)
    g_assert_true ((guint8) *p >= 0x20 && (guint8) *p != 0x7f);
  g_assert_nonnull (strstr (message, shown));
}

static void
test_escape_gguf (void)
{
  /* A key named "evil\n\x1b[31m" whose u32 value is cut off by the end of
   * the file: the message names the key. */
  g_autoptr (GByteArray) b = gguf_start (0, 1);
  put_str (b, "evil" EVIL);
  put_u32 (b, GGUF_TYPE_U32);
  g_autofree char *path = lp_test_write_file ("evil-key.gguf", b->data, b->len);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpMeta) meta = lp_gguf_read_meta (path, &error);
  g_assert_null (meta);
  assert_clean_message (error->message, "evil" EVIL_SHOWN);

  /* A string value: general.architecture = "\n\x1b[31mllama". */
  g_autoptr (GByteArray) c = gguf_start (0, 1);
  put_str (c, "general.architecture");
  put_u32 (c, GGUF_TYPE_STRING);
  put_str (c, EVIL "llama");
  g_autofree char *path2 = lp_test_write_file ("evil-value.gguf", c->data, c->len);
  g_autoptr (GError) error2 = NULL;
  g_autoptr (LpModel) m = lp_gguf_load (path2, &error2);
  g_assert_null (m);
  assert_clean_message (error2->message, "found \"" EVIL_SHOWN "llama\"");

  /* Through the command: stderr is exactly one line. */
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "inspect", path, NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 1);
  g_assert_true (g_str_has_suffix (err, "\n"));
  err[strlen (err) - 1] = '\0';
  assert_clean_message (err, "evil" EVIL_SHOWN);
}

static void
test_escape_safetensors (void)
{
  /* A tensor named "w\n\x1b[31m" (written with JSON escapes, which the
   * parser decodes) with an unknown dtype. */
  const char *h = "{\"w\\n\\u001b[31m\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
  g_autofree char *path = write_safetensors ("evil-name.safetensors", h, strlen (h), "\0\0\0\0", 4);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpSafetensors) st = lp_safetensors_open (path, &error);
  g_assert_null (st);
  assert_clean_message (error->message, "\"w" EVIL_SHOWN "\"");
  lp_test_assert_error_contains (error, "found \"F33\"", NULL);
}

static void
test_escape_rules (void)
{
  /* What is escaped, and that a second pass changes nothing: C0 and DEL,
   * bytes that are not UTF-8, C1 controls, line separators and bidi
   * overrides; ordinary UTF-8 ("▁", "é") is kept. */
  g_autoptr (GError) error = NULL;
  const char *raw = "a\tb\rc\x7f" "d\xff" "e\xc2\x9b" "f\xe2\x80\xa8" "g\xe2\x80\xae" "h\xe2\x96\x81\xc3\xa9";
  const char *want = "a\\tb\\rc\\x7fd\\xffe\\u009bf\\u2028g\\u202eh\xe2\x96\x81\xc3\xa9";
  /* A model path may hold any byte: the message names it escaped. */
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), raw, NULL);
  g_autoptr (LpModel) m = lp_model_load (dir, NULL, &error);
  g_assert_null (m);
  assert_clean_message (error->message, want);
  /* Escaping what is already escaped changes nothing: the CLI escapes
   * again and shows the same text. */
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "inspect", dir, NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 1);
  g_assert_nonnull (strstr (err, want));
}

static void
test_dev_null (void)
{
  /* /dev/null is a character device: neither a directory to look for
   * config.json in, nor a model file. */
  if (!g_file_test ("/dev/null", G_FILE_TEST_EXISTS))
    {
      g_test_skip ("no /dev/null");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load ("/dev/null", NULL, &error);
  g_assert_null (m);
  lp_test_assert_error_contains (error, "/dev/null: ", "found a character device", NULL);
  g_assert_null (strstr (error->message, "config.json"));
  g_clear_error (&error);
  g_autoptr (LpModel) m2 = lp_hf_load ("/dev/null", &error);
  g_assert_null (m2);
  lp_test_assert_error_contains (error, "/dev/null: expected a Hugging Face model directory", "found a character device",
                                 NULL);
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "inspect", "/dev/null", NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 1);
  g_assert_nonnull (strstr (err, "found a character device"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/parsers/json-depth/safetensors-header", test_deep_safetensors_header);
  g_test_add_func ("/parsers/json-depth/config", test_deep_config);
  g_test_add_func ("/parsers/json-depth/index", test_deep_index);
  g_test_add_func ("/parsers/json-depth/tokenizer", test_deep_tokenizer);
  g_test_add_func ("/parsers/json-depth/limit", test_depth_limit_exact);
  g_test_add_func ("/parsers/misaligned/gguf", test_misaligned_gguf);
  g_test_add_func ("/parsers/misaligned/safetensors", test_misaligned_safetensors);
  g_test_add_func ("/parsers/escape/gguf", test_escape_gguf);
  g_test_add_func ("/parsers/escape/safetensors", test_escape_safetensors);
  g_test_add_func ("/parsers/escape/rules", test_escape_rules);
  g_test_add_func ("/parsers/dev-null", test_dev_null);
  return g_test_run ();
}
