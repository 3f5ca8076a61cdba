/* The llmpress command: help and usage errors, synth/inspect/convert/tokenize
 * end to end through the built binary, and bad input. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

#define RUN(out, err, ...) lp_test_run_cli (out, err, __VA_ARGS__, NULL)


/* A failure: exit 1 and exactly one line "llmpress: ..." on stderr. */
static void
assert_failure (int rc, const char *err, const char *fragment)
{
  if (rc != 1 || !g_str_has_prefix (err, "llmpress: ") || lp_test_count_lines (err) != 1 || !g_str_has_suffix (err, "\n"))
    g_error ("expected exit 1 and one line \"llmpress: ...\", found exit %d and stderr \"%s\"", rc, err);
  if (fragment != NULL && strstr (err, fragment) == NULL)
    g_error ("error \"%s\" lacks \"%s\"", err, fragment);
}

/* A usage error: exit 2, the message and a hint to --help, nothing on stdout. */
static void
assert_usage_error (int rc, const char *out, const char *err, const char *fragment)
{
  if (rc != 2 || strstr (err, "--help") == NULL || lp_test_count_lines (err) > 2 || *out != '\0')
    g_error ("expected exit 2 and a usage hint, found exit %d and stderr \"%s\"", rc, err);
  if (fragment != NULL && strstr (err, fragment) == NULL)
    g_error ("usage error \"%s\" lacks \"%s\"", err, fragment);
}

/* Run the command: exit 1, one line on stderr that holds `fragment` (unless
 * NULL), and nothing on stdout. */
#define EXPECT_FAILURE(fragment, ...)                                          \
  G_STMT_START                                                                 \
  {                                                                            \
    g_autofree char *out_ = NULL, *err_ = NULL;                                \
    int rc_ = lp_test_run_cli (&out_, &err_, __VA_ARGS__, NULL);              \
    assert_failure (rc_, err_, fragment);                                      \
    g_assert_cmpstr (out_, ==, "");                                            \
  }                                                                            \
  G_STMT_END

/* Nothing named `name`, and no temporary file, in directory `dir`. */
static void
assert_nothing_left (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *entry;
  while (d != NULL && (entry = g_dir_read_name (d)) != NULL)
    if (strstr (entry, ".tmp-") != NULL)
      g_error ("temporary file %s left in %s", entry, dir);
}

static char *
tmp_path (const char *name)
{
  return g_build_filename (lp_test_tmpdir (), name, NULL);
}

/* A path for a new model in a directory of its own: a llama2.c checkpoint
 * picks up any tokenizer.bin beside it. */
static char *
model_path (const char *name)
{
  g_autofree char *dir = g_strconcat (lp_test_tmpdir (), "/", name, ".d", NULL);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  return g_build_filename (dir, name, NULL);
}

/* A fresh empty directory under the test's temporary directory. */
static char *
tmp_subdir (const char *name)
{
  char *dir = tmp_path (name);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  return dir;
}

static GBytes *
read_bytes (const char *path)
{
  char *data = NULL;
  gsize len = 0;
  g_autoptr (GError) error = NULL;
  g_file_get_contents (path, &data, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (data, len);
}

static void
assert_same_bytes (const char *a, const char *b)
{
  g_autoptr (GBytes) ba = read_bytes (a);
  g_autoptr (GBytes) bb = read_bytes (b);
  if (!g_bytes_equal (ba, bb))
    g_error ("%s and %s differ (%" G_GSIZE_FORMAT " and %" G_GSIZE_FORMAT " bytes)", a, b,
             g_bytes_get_size (ba), g_bytes_get_size (bb));
}

/* A llama2.c checkpoint written by the library, without a vocabulary, so that
 * it needs no tokenizer reader or writer: D 32, F 48, 2 layers, 4 heads,
 * 2 KV heads, vocab 64, ctx 64, tied. */
static char *
write_fixture (const char *name, guint32 seed)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (seed);
  char *path = model_path (name);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_llama2c_save (m, path, NULL, &error));
  g_assert_no_error (error);
  return path;
}

static JsonObject *
parse_json_object (const char *text)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  json_parser_load_from_data (parser, text, -1, &error);
  g_assert_no_error (error);
  JsonNode *root = json_parser_get_root (parser);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (root));
  return json_object_ref (json_node_get_object (root));
}

/* inspect --json on `model` (with an optional tokenizer). */
static JsonObject *
inspect_json (const char *model, const char *tokenizer)
{
  g_autofree char *out = NULL, *err = NULL;
  int rc = tokenizer ? RUN (&out, &err, "inspect", "--json", "--tokenizer", tokenizer, model)
                     : RUN (&out, &err, "inspect", "--json", model);
  if (rc != 0)
    g_error ("inspect %s: exit %d: %s", model, rc, err);
  g_assert_cmpstr (err, ==, "");
  return parse_json_object (out);
}

static gint64
config_int (JsonObject *o, const char *name)
{
  return json_object_get_int_member (json_object_get_object_member (o, "config"), name);
}

static void
test_help (void)
{
  static const char *const commands[][6] = {
    { "inspect", "--json", "--tokenizer", NULL },
    { "convert", "--type", "--format", "--tokenizer", NULL },
    { "tokenize", "--ids", "--no-bos", "--file", NULL },
    { "synth", "--arch", "--dim", "--kv-heads", "--seed", "--untied" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      g_autofree char *out = NULL, *err = NULL;
      g_assert_cmpint (RUN (&out, &err, commands[i][0], "--help"), ==, 0);
      g_autofree char *usage = g_strdup_printf ("llmpress %s", commands[i][0]);
      g_assert_nonnull (strstr (out, usage));
      g_assert_nonnull (strstr (out, "Example:"));
      for (int j = 1; j < 6 && commands[i][j] != NULL; j++)
        if (strstr (out, commands[i][j]) == NULL)
          g_error ("llmpress %s --help does not mention %s", commands[i][0], commands[i][j]);
    }
  g_autofree char *out = NULL, *out2 = NULL;
  g_assert_cmpint (RUN (&out, NULL, "--version"), ==, 0);
  g_assert_cmpstr (out, ==, "llmpress " PACKAGE_VERSION "\n");
  g_assert_cmpstr (out, ==, "llmpress 0.1.0\n");
  g_assert_cmpint (RUN (&out2, NULL, "--help"), ==, 0);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    g_assert_nonnull (strstr (out2, commands[i][0]));
}

static void
test_usage_errors (void)
{
  g_autofree char *model = write_fixture ("usage.bin", 1);
  g_autofree char *text = lp_test_write_file ("usage.txt", "hi", 2);
  g_autofree char *out_path = tmp_path ("usage-out.bin");
  struct {
    const char *fragment;
    const char *argv[6];
  } cases[] = {
    { "unknown command", { "frobnicate" } },
    { "Unknown option", { "inspect", "--bogus", model } },
    { "MODEL", { "inspect" } },
    { "MODEL", { "inspect", model, model } },
    { "IN and OUT", { "convert", model } },
    { "--type", { "convert", "--type", "q4_0", model, out_path } },
    { "--format", { "convert", "--format", "onnx", model, out_path } },
    { "MODEL", { "tokenize" } },
    { "neither", { "tokenize", model } },
    { "both", { "tokenize", "--file", text, model, "hi" } },
    { "OUT", { "synth" } },
    { "--arch", { "synth", "--arch", "gpt5", out_path } },
    { "--seed", { "synth", "--seed", "-1", out_path } },
    { "--dim", { "synth", "--dim", "wide", out_path } },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *out = NULL, *err = NULL;
      const char *const *a = cases[i].argv;
      int rc = RUN (&out, &err, a[0], a[1], a[2], a[3], a[4], a[5]);
      assert_usage_error (rc, out, err, cases[i].fragment);
    }
  g_assert_false (g_file_test (out_path, G_FILE_TEST_EXISTS));
  /* No command at all: the overview, as a usage error. */
  g_autofree char *err = NULL;
  g_assert_cmpint (lp_test_run_cli (NULL, &err, (const char *) NULL, NULL), ==, 2);
  g_assert_nonnull (strstr (err, "Usage:"));
}

/* synth into the first format this branch can write; NULL after a skip. */
static char *
synth_model (const char *name, const char *seed)
{
  g_autofree char *path = model_path (name);
  g_autofree char *out = NULL, *err = NULL;
  int rc = RUN (&out, &err, "synth", path, "--dim", "96", "--ffn", "200", "--layers", "3", "--heads", "6",
                "--kv-heads", "2", "--vocab", "300", "--ctx", "256", "--seed", seed, "--untied");
  if (rc != 0)
    g_error ("synth %s: exit %d: %s", name, rc, err);
  g_assert_true (g_str_has_prefix (out, "wrote "));
  g_assert_cmpuint (lp_test_count_lines (out), ==, 1);
  return g_steal_pointer (&path);
}

static void
test_synth_inspect (void)
{
  g_autofree char *path = synth_model ("synth-a.bin", "7");
  if (path == NULL)
    return;
  g_autoptr (JsonObject) o = inspect_json (path, NULL);
  if (o == NULL)
    return;
  g_assert_cmpstr (json_object_get_string_member (o, "format"), ==, "llama2c");
  g_assert_cmpstr (json_object_get_string_member (o, "architecture"), ==, "llama");
  g_assert_cmpint (config_int (o, "dim"), ==, 96);
  g_assert_cmpint (config_int (o, "ffn_dim"), ==, 200);
  g_assert_cmpint (config_int (o, "n_layers"), ==, 3);
  g_assert_cmpint (config_int (o, "n_heads"), ==, 6);
  g_assert_cmpint (config_int (o, "n_kv_heads"), ==, 2);
  g_assert_cmpint (config_int (o, "head_dim"), ==, 16);
  g_assert_cmpint (config_int (o, "n_vocab"), ==, 300);
  g_assert_cmpint (config_int (o, "context_length"), ==, 256);
  g_assert_false (json_object_get_boolean_member (json_object_get_object_member (o, "config"), "tied_embeddings"));
  /* V*D twice (untied) + per layer 2 norms, q, k, v, o, gate, up, down + final norm. */
  gint64 per_layer = 2 * 96 + 96 * 96 + 2 * 32 * 96 + 96 * 96 + 3 * 200 * 96;
  g_assert_cmpint (json_object_get_int_member (o, "n_params"), ==, 2 * 300 * 96 + 3 * per_layer + 96);
  JsonObject *tok = json_object_get_object_member (o, "tokenizer");
  g_assert_nonnull (tok);
  g_assert_cmpint (json_object_get_int_member (tok, "n_vocab"), ==, 300);
  g_assert_cmpint (json_object_get_int_member (tok, "bos_id"), ==, 1);
  g_assert_cmpint (json_object_get_int_member (tok, "eos_id"), ==, 2);
}

static void
test_synth_deterministic (void)
{
  g_autofree char *a = synth_model ("synth-det-a.bin", "7");
  if (a == NULL)
    return;
  g_autofree char *b = synth_model ("synth-det-b.bin", "7");
  g_autofree char *c = synth_model ("synth-det-c.bin", "8");
  assert_same_bytes (a, b);
  g_autoptr (GBytes) ba = read_bytes (a);
  g_autoptr (GBytes) bc = read_bytes (c);
  g_assert_cmpuint (g_bytes_get_size (ba), ==, g_bytes_get_size (bc));
  g_assert_false (g_bytes_equal (ba, bc));
}

/* inspect on a checkpoint this branch reads fully: every fact, text and JSON. */
static void
test_inspect_fixture (void)
{
  g_autofree char *path = write_fixture ("fixture.bin", 3);
  g_autoptr (JsonObject) o = inspect_json (path, NULL);
  g_assert_nonnull (o);
  g_assert_cmpstr (json_object_get_string_member (o, "format"), ==, "llama2c");
  g_assert_cmpint (config_int (o, "dim"), ==, 32);
  g_assert_cmpint (config_int (o, "ffn_dim"), ==, 48);
  g_assert_cmpint (config_int (o, "n_layers"), ==, 2);
  g_assert_cmpint (config_int (o, "n_heads"), ==, 4);
  g_assert_cmpint (config_int (o, "n_kv_heads"), ==, 2);
  g_assert_cmpint (config_int (o, "n_vocab"), ==, 64);
  g_assert_cmpint (config_int (o, "context_length"), ==, 64);
  JsonObject *cfg = json_object_get_object_member (o, "config");
  g_assert_true (json_object_get_boolean_member (cfg, "tied_embeddings"));
  g_assert_cmpfloat (json_object_get_double_member (cfg, "rope_theta"), ==, 10000.0);
  g_assert_cmpfloat (json_object_get_double_member (cfg, "rms_eps"), ==, 1e-5);
  g_assert_cmpstr (json_object_get_string_member (json_object_get_object_member (cfg, "rope_scaling"), "type"), ==, "none");
  /* 64*32 + 2 * (2*32 + 32*32 + 2*16*32 + 32*32 + 3*48*32) + 32 */
  gint64 n_params = 64 * 32 + 2 * (2 * 32 + 32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 48 * 32) + 32;
  g_assert_cmpint (json_object_get_int_member (o, "n_params"), ==, n_params);
  g_assert_cmpint (json_object_get_int_member (o, "n_bytes"), ==, 4 * n_params);
  g_assert_cmpfloat (json_object_get_double_member (o, "bits_per_weight"), ==, 32.0);
  g_assert_true (json_object_get_null_member (o, "tokenizer"));
  JsonArray *tensors = json_object_get_array_member (o, "tensors");
  g_assert_cmpuint (json_array_get_length (tensors), ==, 1 + 2 * 9 + 1);
  JsonObject *q = NULL;
  for (guint i = 0; i < json_array_get_length (tensors); i++)
    {
      JsonObject *t = json_array_get_object_element (tensors, i);
      g_assert_cmpstr (json_object_get_string_member (t, "name"), !=, "output.weight"); /* tied */
      if (g_strcmp0 (json_object_get_string_member (t, "name"), "blk.1.attn_k.weight") == 0)
        q = t;
    }
  g_assert_nonnull (q);
  JsonArray *shape = json_object_get_array_member (q, "shape");
  g_assert_cmpuint (json_array_get_length (shape), ==, 2);
  g_assert_cmpint (json_array_get_int_element (shape, 0), ==, 16); /* Hkv * hd outputs */
  g_assert_cmpint (json_array_get_int_element (shape, 1), ==, 32); /* D inputs */
  g_assert_cmpstr (json_object_get_string_member (q, "type"), ==, "f32");
  g_assert_cmpint (json_object_get_int_member (q, "bytes"), ==, 16 * 32 * 4);

  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint (RUN (&out, &err, "inspect", path), ==, 0);
  g_assert_cmpstr (err, ==, "");
  g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
  gboolean found_row = FALSE;
  for (char **l = lines; *l; l++)
    if (strstr (*l, "blk.1.attn_k.weight") != NULL)
      {
        g_auto (GStrv) cols = g_strsplit_set (g_strstrip (*l), " ", -1);
        g_autoptr (GPtrArray) words = g_ptr_array_new ();
        for (char **c = cols; *c; c++)
          if (**c)
            g_ptr_array_add (words, *c);
        g_assert_cmpuint (words->len, ==, 6);
        g_assert_cmpstr (words->pdata[1], ==, "blk.1.attn_k.weight");
        g_assert_cmpstr (words->pdata[2], ==, "16x32");
        g_assert_cmpstr (words->pdata[3], ==, "f32");
        g_assert_cmpstr (words->pdata[4], ==, "2048");
        g_assert_cmpstr (words->pdata[5], ==, "32.00");
        found_row = TRUE;
      }
  g_assert_true (found_row);
  g_autofree char *total = g_strdup_printf ("total: %" G_GINT64_FORMAT " bytes", 4 * n_params);
  g_assert_nonnull (strstr (out, total));
  g_assert_nonnull (strstr (out, "tied_embeddings     yes"));
  g_assert_nonnull (strstr (out, "format:        llama2c"));
  g_assert_null (strstr (out, "tokenizer:"));
}

/* The same real model as llama2.c and as llama.cpp's GGUF: same facts. */
static void
test_inspect_stories (void)
{
  g_autofree char *bin = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tok = bin ? lp_test_shared_path ("models/stories260K/tok512.bin") : NULL;
  g_autofree char *gguf = tok ? lp_test_shared_path ("models/stories260K/stories260K-f32.gguf") : NULL;
  if (gguf == NULL)
    return;
  g_autoptr (JsonObject) a = inspect_json (bin, tok);
  if (a == NULL)
    return;
  g_autoptr (JsonObject) b = inspect_json (gguf, NULL);
  if (b == NULL)
    return;
  JsonObject *both[2] = { a, b };
  for (int i = 0; i < 2; i++)
    {
      JsonObject *o = both[i];
      g_assert_cmpint (config_int (o, "n_layers"), ==, 5);
      g_assert_cmpint (config_int (o, "dim"), ==, 64);
      g_assert_cmpint (config_int (o, "ffn_dim"), ==, 172);
      g_assert_cmpint (config_int (o, "n_heads"), ==, 8);
      g_assert_cmpint (config_int (o, "n_kv_heads"), ==, 4);
      g_assert_cmpint (config_int (o, "n_vocab"), ==, 512);
      g_assert_true (json_object_get_boolean_member (json_object_get_object_member (o, "config"), "tied_embeddings"));
      g_assert_cmpint (json_object_get_int_member (o, "n_params"), ==, 260032);
      JsonObject *t = json_object_get_object_member (o, "tokenizer");
      g_assert_nonnull (t);
      g_assert_cmpstr (json_object_get_string_member (t, "model"), ==, "llama");
      g_assert_cmpint (json_object_get_int_member (t, "n_vocab"), ==, 512);
      g_assert_cmpint (json_object_get_int_member (t, "bos_id"), ==, 1);
      g_assert_cmpint (json_object_get_int_member (t, "eos_id"), ==, 2);
    }
  g_assert_cmpstr (json_object_get_string_member (a, "format"), ==, "llama2c");
  g_assert_cmpstr (json_object_get_string_member (b, "format"), ==, "gguf");
  /* The GGUF declares the converter's default context, not the trained one. */
  g_assert_cmpint (config_int (a, "context_length"), ==, 512);
  g_assert_cmpint (config_int (b, "context_length"), ==, 128);
}

static void
test_convert_llama2c (void)
{
  g_autofree char *in = write_fixture ("conv-in.bin", 5);
  g_autofree char *dir = tmp_subdir ("conv");
  g_autofree char *copy = g_build_filename (dir, "copy.bin", NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint (RUN (&out, &err, "convert", in, copy), ==, 0);
  g_assert_cmpstr (err, ==, "");
  g_assert_true (g_str_has_prefix (out, "wrote "));
  g_assert_nonnull (strstr (out, "llama2c"));
  g_assert_cmpuint (lp_test_count_lines (out), ==, 1);
  assert_same_bytes (in, copy);

  /* Never over the input, by the same name or another path to it. */
  g_autoptr (GBytes) before = read_bytes (in);
  EXPECT_FAILURE ("would overwrite", "convert", in, in);
  g_autofree char *in_dir = g_path_get_dirname (in);
  g_autofree char *in_dir_base = g_path_get_basename (in_dir);
  g_autofree char *other = g_build_filename (dir, "..", in_dir_base, "conv-in.bin", NULL);
  EXPECT_FAILURE ("would overwrite", "convert", in, other, "--format", "llama2c");
  g_autoptr (GBytes) after = read_bytes (in);
  g_assert_true (g_bytes_equal (before, after));

  /* llama2.c is fp32 only: refused, nothing written. */
  g_autofree char *half = g_build_filename (dir, "half.bin", NULL);
  EXPECT_FAILURE ("fp32", "convert", in, half, "--type", "f16");
  assert_nothing_left (dir, "half.bin");
}

/* Same config and the same tensors, byte for byte. */
static void
assert_same_model (LpModel *a, LpModel *b)
{
  g_assert_cmpmem (lp_model_config (a), sizeof (LpModelConfig), lp_model_config (b), sizeof (LpModelConfig));
  g_assert_cmpuint (lp_model_n_tensors (a), ==, lp_model_n_tensors (b));
  for (guint i = 0; i < lp_model_n_tensors (a); i++)
    {
      LpTensor *ta = lp_model_tensor_at (a, i);
      LpTensor *tb = lp_model_tensor (b, ta->name);
      g_assert_nonnull (tb);
      g_assert_cmpint (ta->dtype, ==, tb->dtype);
      if (!g_bytes_equal (ta->data, tb->data))
        g_error ("tensor %s differs", ta->name);
    }
}

/* llama2.c -> GGUF -> HF -> GGUF: both GGUFs byte-identical; and back to
 * llama2.c: the same model (and the same bytes when `same_bin`: the
 * unused RoPE tables of a foreign exporter may round differently). */
static void
convert_roundtrip (const char *src, const char *tokenizer, const char *tag, gboolean same_bin)
{
  g_autofree char *dir = tmp_subdir (tag);
  g_autofree char *g1 = g_build_filename (dir, "a.gguf", NULL);
  g_autofree char *hf = g_build_filename (dir, "hf", NULL);
  g_autofree char *g2 = g_build_filename (dir, "b.gguf", NULL);
  g_autofree char *sdir = g_build_filename (dir, "st", NULL);
  g_autofree char *st = g_build_filename (dir, "st", "model.bin", NULL);
  g_autofree char *err = NULL;
  int rc = tokenizer ? RUN (NULL, &err, "convert", "--tokenizer", tokenizer, src, g1) : RUN (NULL, &err, "convert", src, g1);
  g_assert_cmpint (rc, ==, 0);
  g_clear_pointer (&err, g_free);
  rc = RUN (NULL, &err, "convert", g1, hf, "--format", "safetensors");
  g_assert_cmpint (rc, ==, 0);
  g_assert_true (g_file_test (hf, G_FILE_TEST_IS_DIR));
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (RUN (NULL, &err, "convert", hf, g2), ==, 0);
  assert_same_bytes (g1, g2);
  g_assert_cmpint (g_mkdir (sdir, 0755), ==, 0);
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (RUN (NULL, &err, "convert", g2, st), ==, 0);
  if (same_bin)
    assert_same_bytes (src, st);
  LpLoadOptions opts = { tokenizer };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) a = lp_model_load (src, &opts, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) b = lp_model_load (st, NULL, &error);
  g_assert_no_error (error);
  assert_same_model (a, b);
}

static void
test_convert_roundtrip_fixture (void)
{
  g_autofree char *in = write_fixture ("rt-in.bin", 9);
  convert_roundtrip (in, NULL, "rt-fixture", TRUE);
}

static void
test_convert_roundtrip_stories (void)
{
  g_autofree char *bin = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tok = bin ? lp_test_shared_path ("models/stories260K/tok512.bin") : NULL;
  if (tok != NULL)
    convert_roundtrip (bin, tok, "rt-stories", FALSE);
}

/* A model whose weights are each on a different ggml block type (D 256 so
 * the K-quants' 256-element blocks fit), saved as GGUF in `path`. */
static LpModel *
write_quantized_model (const char *path)
{
  LpSynthOptions so = LP_SYNTH_OPTIONS_INIT;
  so.dim = 256;
  so.ffn_dim = 512;
  so.n_layers = 1;
  so.n_heads = 4;
  so.n_kv_heads = 2;
  g_autoptr (GError) error = NULL;
  LpModel *m = lp_model_synth (&so, &error);
  g_assert_no_error (error);
  static const struct {
    const char *name;
    LpDType type;
  } q[] = { { "token_embd.weight", LP_DTYPE_Q3_K }, { "blk.0.attn_q.weight", LP_DTYPE_Q4_1 },
            { "blk.0.attn_k.weight", LP_DTYPE_Q8_0 }, { "blk.0.attn_v.weight", LP_DTYPE_Q5_1 },
            { "blk.0.attn_output.weight", LP_DTYPE_Q4_0 }, { "blk.0.ffn_gate.weight", LP_DTYPE_Q4_K },
            { "blk.0.ffn_up.weight", LP_DTYPE_Q5_K }, { "blk.0.ffn_down.weight", LP_DTYPE_Q6_K } };
  for (gsize i = 0; i < G_N_ELEMENTS (q); i++)
    lp_test_quantize_tensor (m, q[i].name, q[i].type);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  g_assert_no_error (error);
  return m;
}

static double
perplexity_of (LpModel *m, const gint32 *tokens, gsize n)
{
  g_autoptr (GError) error = NULL;
  LpEvalOptions o = { .ctx = 64 };
  LpEvalResult r;
  g_assert_true (lp_eval_run (m, tokens, n, &o, &r, &error));
  g_assert_no_error (error);
  return r.ppl;
}

/* convert --type f32 of a quantized GGUF dequantizes every tensor (that is
 * how a user gets the dense model): every tensor f32, each the values the
 * quantized model computes with, bit for bit, so the perplexity is the same;
 * --type f16 rounds them to f16 (norms stay f32, as llama.cpp keeps them);
 * a Hugging Face directory gets them dequantized too (safetensors holds no
 * block type). */
static void
test_convert_dequantizes (void)
{
  g_autofree char *qpath = g_build_filename (lp_test_tmpdir (), "mixed-q.gguf", NULL);
  g_autoptr (LpModel) qm = write_quantized_model (qpath);
  gint32 tokens[4 * 63];
  for (gsize i = 0; i < G_N_ELEMENTS (tokens); i++)
    tokens[i] = (gint32) ((i * 2654435761u) % 509 + 3);
  double ppl_q = perplexity_of (qm, tokens, G_N_ELEMENTS (tokens));
  const char *types[] = { "f32", "f16" };
  for (gsize k = 0; k < G_N_ELEMENTS (types); k++)
    {
      g_autofree char *name = g_strdup_printf ("mixed-%s.gguf", types[k]);
      g_autofree char *out = g_build_filename (lp_test_tmpdir (), name, NULL);
      g_autofree char *err = NULL;
      int rc = RUN (NULL, &err, "convert", qpath, out, "--type", types[k]);
      if (rc != 0)
        g_error ("convert --type %s: exit %d: %s", types[k], rc, err);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) dm = lp_model_load (out, NULL, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (lp_model_n_tensors (dm), ==, lp_model_n_tensors (qm));
      for (guint i = 0; i < lp_model_n_tensors (dm); i++)
        {
          LpTensor *d = lp_model_tensor_at (dm, i);
          LpDType want = k == 0 || d->n_dims == 1 ? LP_DTYPE_F32 : LP_DTYPE_F16;
          if (d->dtype != want)
            g_error ("convert --type %s: tensor %s: expected %s, found %s", types[k], d->name, lp_dtype_name (want),
                     lp_dtype_name (d->dtype));
          g_autofree float *fq = lp_tensor_dup_f32 (lp_model_tensor (qm, d->name), &error);
          g_autofree float *fd = lp_tensor_dup_f32 (d, &error);
          g_assert_no_error (error);
          for (gint64 j = 0; j < lp_tensor_n_elements (d); j++)
            if (k == 0 ? fd[j] != fq[j] : lp_f32_to_f16 (fq[j]) != lp_f32_to_f16 (fd[j]))
              g_error ("convert --type %s: tensor %s: element %" G_GINT64_FORMAT ": expected %.9g, found %.9g", types[k],
                       d->name, j, fq[j], fd[j]);
        }
      double ppl = perplexity_of (dm, tokens, G_N_ELEMENTS (tokens));
      if (k == 0)
        g_assert_cmpfloat (fabs (ppl - ppl_q), <=, 1e-6 * ppl_q);
      else
        g_assert_cmpfloat (fabs (ppl - ppl_q), <=, 1e-3 * ppl_q);
    }
  g_autofree char *hf = g_build_filename (lp_test_tmpdir (), "mixed-hf", NULL);
  g_autofree char *err = NULL;
  int rc = RUN (NULL, &err, "convert", qpath, hf);
  if (rc != 0)
    g_error ("convert to hf: exit %d: %s", rc, err);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) hm = lp_model_load (hf, NULL, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < lp_model_n_tensors (hm); i++)
    g_assert_cmpint (lp_model_tensor_at (hm, i)->dtype, ==, LP_DTYPE_F32);
  g_assert_cmpfloat (fabs (perplexity_of (hm, tokens, G_N_ELEMENTS (tokens)) - ppl_q), <=, 1e-6 * ppl_q);
}

static void
test_bad_input (void)
{
  g_autofree char *good = write_fixture ("bad-good.bin", 11);
  g_autoptr (GBytes) bytes = read_bytes (good);
  gsize size = g_bytes_get_size (bytes);
  g_autofree char *outdir = tmp_subdir ("bad-out");
  g_autofree char *out = g_build_filename (outdir, "out.bin", NULL);

  g_autofree char *truncated = lp_test_write_file ("truncated.bin", g_bytes_get_data (bytes, NULL), size - 100);
  guint8 garbage[4096];
  for (gsize i = 0; i < sizeof garbage; i++)
    garbage[i] = (guint8) (i * 2654435761u >> 13);
  g_autofree char *junk = lp_test_write_file ("garbage.bin", garbage, sizeof garbage);
  g_autofree char *missing = tmp_path ("no-such-model.bin");
  struct { const char *path, *fragment; } inputs[] = {
    { truncated, "end of file" },
    { junk, "garbage.bin" },
    { missing, "no such file" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (inputs); i++)
    {
      EXPECT_FAILURE (inputs[i].fragment, "inspect", inputs[i].path);
      EXPECT_FAILURE (inputs[i].fragment, "convert", inputs[i].path, out);
      assert_nothing_left (outdir, "out.bin");
      EXPECT_FAILURE (inputs[i].fragment, "tokenize", inputs[i].path, "hi");
    }

  /* An output directory that cannot be written: a path under a regular file,
   * and (where permissions apply: not as root) a read-only directory. */
  g_autofree char *under_file = g_build_filename (good, "out.bin", NULL);
  EXPECT_FAILURE (NULL, "convert", good, under_file);
  EXPECT_FAILURE (NULL, "synth", "--format", "llama2c", under_file);
  if (geteuid () != 0)
    {
      g_autofree char *ro = tmp_subdir ("bad-ro");
      g_assert_cmpint (g_chmod (ro, 0555), ==, 0);
      g_autofree char *ro_out = g_build_filename (ro, "out.bin", NULL);
      EXPECT_FAILURE (ro, "convert", good, ro_out);
      assert_nothing_left (ro, "out.bin");
      g_chmod (ro, 0755);
    }
  assert_nothing_left (outdir, "out.bin");
  assert_nothing_left (lp_test_tmpdir (), "out.bin");
}

/* A GGUF magic followed by nonsense: a one-line error, through every command. */
static void
test_bad_gguf (void)
{
  g_autofree char *bad = lp_test_write_file ("bad.gguf", "GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 16);
  g_autofree char *outdir = tmp_subdir ("bad-gguf-out");
  g_autofree char *out = g_build_filename (outdir, "out.gguf", NULL);
  g_autofree char *err = NULL;
  int rc = RUN (NULL, &err, "inspect", bad);
  assert_failure (rc, err, "bad.gguf");
  EXPECT_FAILURE ("bad.gguf", "convert", bad, out);
  EXPECT_FAILURE ("bad.gguf", "tokenize", bad, "hi");
  assert_nothing_left (outdir, "out.gguf");
}

/* Lines of "id<TAB>piece": one tab, no other control byte (escaped). */
static void
assert_token_lines (const char *out, guint n_expected)
{
  g_assert_true (g_str_has_suffix (out, "\n"));
  g_autofree char *copy = g_strdup (out);
  g_auto (GStrv) rows = g_strsplit (g_strchomp (copy), "\n", -1);
  g_assert_cmpuint (g_strv_length (rows), ==, n_expected);
  for (char **r = rows; *r; r++)
    {
      guint tabs = 0;
      for (const char *c = *r; *c; c++)
        {
          tabs += *c == '\t';
          if (*c != '\t' && ((guchar) *c < 0x20 || *c == 0x7f))
            g_error ("unescaped control byte 0x%02x in \"%s\"", (guchar) *c, *r);
        }
      g_assert_cmpuint (tabs, ==, 1);
      g_assert_true (g_ascii_isdigit (**r));
    }
}

/* Tokens of "Once upon a time" with tok512: pieces that spell the text. */
static void
test_tokenize_stories (void)
{
  g_autofree char *bin = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tok = bin ? lp_test_shared_path ("models/stories260K/tok512.bin") : NULL;
  if (tok == NULL)
    return;
  g_autofree char *out = NULL, *err = NULL;
  int rc = RUN (&out, &err, "tokenize", "--tokenizer", tok, "--ids", bin, "Once upon a time");
  g_assert_cmpint (rc, ==, 0);
  g_assert_true (g_str_has_suffix (out, "\n"));
  g_auto (GStrv) ids = g_strsplit (g_strchomp (out), " ", -1);
  g_assert_cmpuint (g_strv_length (ids), >=, 2);
  g_assert_cmpstr (ids[0], ==, "1"); /* BOS */
  for (char **p = ids; *p; p++)
    {
      guint64 v;
      g_assert_true (g_ascii_string_to_unsigned (*p, 10, 0, 511, &v, NULL));
    }

  /* Without BOS: the same ids after the first. */
  g_autofree char *nobos = NULL;
  g_assert_cmpint (RUN (&nobos, NULL, "tokenize", "--tokenizer", tok, "--ids", "--no-bos", bin, "Once upon a time"), ==, 0);
  g_autofree char *rest = g_strjoinv (" ", ids + 1);
  g_assert_cmpstr (g_strchomp (nobos), ==, rest);

  /* One "id<TAB>piece" line per token; the pieces spell the text. */
  g_autofree char *text = lp_test_write_file ("once.txt", "Once upon a time", 16);
  g_autofree char *lines = NULL, *with_bos = NULL;
  g_assert_cmpint (RUN (&lines, NULL, "tokenize", "--tokenizer", tok, "--no-bos", "--file", text, bin), ==, 0);
  assert_token_lines (lines, g_strv_length (ids) - 1);
  /* tok512 spells its BOS "\n<s>\n" in tokenizer.bin: escaped either way. */
  g_assert_cmpint (RUN (&with_bos, NULL, "tokenize", "--tokenizer", tok, bin, "Once upon a time"), ==, 0);
  assert_token_lines (with_bos, g_strv_length (ids));
  g_auto (GStrv) rows = g_strsplit (g_strchomp (lines), "\n", -1);
  g_assert_cmpuint (g_strv_length (rows), ==, g_strv_length (ids) - 1);
  GString *spelled = g_string_new (NULL);
  for (guint i = 0; rows[i]; i++)
    {
      g_auto (GStrv) cols = g_strsplit (rows[i], "\t", 2);
      g_assert_cmpstr (cols[0], ==, ids[i + 1]);
      g_string_append (spelled, cols[1]);
    }
  g_autofree char *s = g_string_free (spelled, FALSE);
  g_assert_cmpstr (s, ==, "\xe2\x96\x81Once\xe2\x96\x81upon\xe2\x96\x81" "a\xe2\x96\x81time");
}

/* Control bytes in text come out escaped, one line per token. */
static void
test_tokenize_escapes (void)
{
  g_autofree char *model = synth_model ("tok-synth.bin", "1");
  if (model == NULL)
    return;
  g_autofree char *out = NULL, *err = NULL;
  int rc = RUN (&out, &err, "tokenize", "--no-bos", model, "a\tb\nc\x01");
  g_assert_cmpint (rc, ==, 0);
  /* The synth vocabulary has no tab, newline or \x01 pieces: byte tokens. */
  g_assert_nonnull (strstr (out, "\t<0x09>\n"));
  g_assert_nonnull (strstr (out, "\t<0x0A>\n"));
  g_assert_nonnull (strstr (out, "\t<0x01>\n"));
  g_autofree char *ids = NULL;
  g_assert_cmpint (RUN (&ids, NULL, "tokenize", "--no-bos", "--ids", model, "a\tb\nc\x01"), ==, 0);
  g_auto (GStrv) id_list = g_strsplit (g_strchomp (ids), " ", -1);
  assert_token_lines (out, g_strv_length (id_list));
  /* After "--", text may start with '-'. */
  g_autofree char *dash = NULL;
  g_assert_cmpint (RUN (&dash, NULL, "tokenize", "--ids", model, "--", "-x"), ==, 0);
  g_assert_true (g_str_has_prefix (dash, "1 "));
}

/* The thread count (-t N before the command, --threads N after it,
 * LLMPRESS_THREADS): bad counts are usage errors, and quantize.rtn writes
 * the same bytes with 1, 2 and 3 threads, into K blocks (the lane kernels),
 * 32-value blocks and the integer grid with its clip search. */
static void
test_threads (void)
{
  g_autofree char *out = NULL, *err = NULL;
  const char *bad[][4] = {
    { "-t", "0", "inspect", "x" }, { "-t", "two", "inspect", "x" }, { "--threads=", "inspect", "x", NULL },
    { "inspect", "--threads", "5000", "x" }, { "-t", NULL },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_clear_pointer (&out, g_free);
      g_clear_pointer (&err, g_free);
      int rc = RUN (&out, &err, bad[i][0], bad[i][1], bad[i][2], bad[i][3]);
      assert_usage_error (rc, out, err, i == 4 ? "thread count" : "expected a thread count in [1, 4096]");
    }
  g_setenv ("LLMPRESS_THREADS", "many", TRUE);
  g_clear_pointer (&err, g_free);
  g_clear_pointer (&out, g_free);
  int rc = RUN (&out, &err, "inspect", "x");
  assert_usage_error (rc, out, err, "LLMPRESS_THREADS: expected a thread count");
  g_unsetenv ("LLMPRESS_THREADS");
  g_clear_pointer (&err, g_free);

  g_autofree char *model = model_path ("threads.gguf");
  g_assert_cmpint (RUN (NULL, NULL, "synth", model, "--dim", "256", "--ffn", "512", "--layers", "2", "--heads", "4",
                        "--kv-heads", "2", "--seed", "5"), ==, 0);
  const char *formats[] = { "q4_k", "q8_0", "int" };
  for (gsize f = 0; f < G_N_ELEMENTS (formats); f++)
    {
      char *paths[3];
      for (int t = 0; t < 3; t++)
        {
          g_autofree char *name = g_strdup_printf ("threads-%s-%d.gguf", formats[f], t + 1);
          paths[t] = tmp_path (name);
          g_autofree char *pipe = g_strdup_printf ("load path=%s ! quantize.rtn format=%s ! save path=%s", model,
                                                   formats[f], paths[t]);
          g_autofree char *dir = tmp_subdir ("threads-out"), *count = g_strdup_printf ("%d", t + 1);
          int status;
          if (t == 0)
            status = RUN (NULL, &err, "-t", count, "run", "--no-cache", "-q", "-o", dir, "-p", pipe);
          else if (t == 1)
            {
              g_setenv ("LLMPRESS_THREADS", count, TRUE);
              status = RUN (NULL, &err, "run", "--no-cache", "-q", "-o", dir, "-p", pipe);
              g_unsetenv ("LLMPRESS_THREADS");
            }
          else
            status = RUN (NULL, &err, "run", "--threads", count, "--no-cache", "-q", "-o", dir, "-p", pipe);
          if (status != 0)
            g_error ("%s with %d threads: exit %d: %s", formats[f], t + 1, status, err);
          g_clear_pointer (&err, g_free);
        }
      assert_same_bytes (paths[0], paths[1]);
      assert_same_bytes (paths[0], paths[2]);
      for (int t = 0; t < 3; t++)
        g_free (paths[t]);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cli/help", test_help);
  g_test_add_func ("/cli/usage-errors", test_usage_errors);
  g_test_add_func ("/cli/synth-inspect", test_synth_inspect);
  g_test_add_func ("/cli/synth-deterministic", test_synth_deterministic);
  g_test_add_func ("/cli/inspect-fixture", test_inspect_fixture);
  g_test_add_func ("/cli/inspect-stories", test_inspect_stories);
  g_test_add_func ("/cli/convert-llama2c", test_convert_llama2c);
  g_test_add_func ("/cli/convert-roundtrip-fixture", test_convert_roundtrip_fixture);
  g_test_add_func ("/cli/convert-roundtrip-stories", test_convert_roundtrip_stories);
  g_test_add_func ("/cli/convert-dequantizes", test_convert_dequantizes);
  g_test_add_func ("/cli/bad-input", test_bad_input);
  g_test_add_func ("/cli/bad-gguf", test_bad_gguf);
  g_test_add_func ("/cli/tokenize-stories", test_tokenize_stories);
  g_test_add_func ("/cli/tokenize-escapes", test_tokenize_escapes);
  g_test_add_func ("/cli/threads", test_threads);
  return g_test_run ();
}
