/* Numbers that are not numbers: non-finite metrics fail the command and JSON
 * stays JSON; configs that make the forward pass undefined are refused on
 * load; f16 conversion never turns a finite value into inf; integer tensors,
 * special token ids out of range and bad CLI numbers get clear errors. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "testutil.h"
#include "lp-internal.h"

/* Exit status `want`, and the first line of stderr holds every fragment
 * (NULL-terminated); a failure (want 1) is exactly one line. */
static void
expect_exit (int want, const char *const *args, ...)
{
  g_autofree char *out = NULL, *err = NULL;
  int rc = lp_test_run_cliv (&out, &err, args);
  guint lines = 0;
  for (const char *s = err; *s; s++)
    lines += *s == '\n';
  if (rc != want || (want == 1 && lines != 1) || (want == 2 && strstr (err, "--help") == NULL))
    g_error ("llmpress %s: expected exit %d with one line, found exit %d and stderr \"%s\"", args[0], want, rc, err);
  va_list ap;
  va_start (ap, args);
  for (const char *f = va_arg (ap, const char *); f != NULL; f = va_arg (ap, const char *))
    if (strstr (err, f) == NULL)
      g_error ("llmpress %s: stderr \"%s\" lacks \"%s\"", args[0], err, f);
  va_end (ap);
}

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* Every number option: negative, NaN, infinite, junk or overflowing values
 * are usage errors naming the option and the text. */
static void
test_cli_numbers (void)
{
  static const char *const bad[][3] = {
    { "eval", "--ctx", "-5" },           { "eval", "--ctx", "abc" },
    { "eval", "-c", "99999999999" },     { "eval", "--max-windows", "-1" },
    { "generate", "-n", "-1" },          { "generate", "--temp", "nan" },
    { "generate", "--temp", "-0.5" },    { "generate", "--temp", "inf" },
    { "generate", "--top-p", "1e999" },  { "generate", "--seed", "-7" },
    { "generate", "--seed", "99999999999999999999" }, { "generate", "--threads", "-1" },
    { "run", "-j", "-2" },               { "run", "--memory-limit", "99999999999T" },
    { "run", "--memory-limit", "16E" },  { "run", "--memory-limit", "nanG" },
    { "run", "--memory-limit", "-1M" },  { "synth", "--dim", "-64" },
    { "synth", "--layers", " 2" },       { "cache", "--max-age", "-inf" },
    { "eval", "--device-memory", "16E" },  { "generate", "--device-memory", "-1M" },
    { "run", "--device-memory", "lots" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autofree char *quoted = g_strdup_printf ("'%s'", bad[i][2]);
      expect_exit (2, ARGS (bad[i][0], bad[i][1], bad[i][2], "x"), bad[i][1], quoted, NULL);
    }
  /* The largest sizes that fit still parse. */
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *pipeline = g_strdup_printf ("load path=%s ! eval", model);
  expect_exit (0, ARGS ("run", "--memory-limit", "15.9E", "--dry-run", "--no-cache", "-p", pipeline), NULL);
}

/* The demo model with element `index` of `tensor` set to `value`, written
 * as `name` (GGUF, f32) in the temporary directory. */
static char *
poisoned_model (const char *name, const char *tensor, gint64 index, float value)
{
  g_autofree char *demo = lp_test_demo_model ();
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (demo, NULL, &error);
  g_assert_no_error (error);
  LpTensor *t = lp_model_tensor (m, tensor);
  g_assert_nonnull (t);
  g_autofree float *v = lp_tensor_dup_f32 (t, &error);
  g_assert_no_error (error);
  v[index] = value;
  g_autoptr (LpTensor) nt = lp_tensor_new_f32 (t->name, t->n_dims, t->shape, v, &error);
  g_assert_no_error (error);
  lp_model_set_tensor (m, nt);
  char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  return path;
}

/* 200 tokens of the demo vocabulary as a .u16 file. */
static char *
token_file (void)
{
  guint16 ids[200];
  for (guint i = 0; i < G_N_ELEMENTS (ids); i++)
    ids[i] = GUINT16_TO_LE (3 + (i * 37) % 500);
  return lp_test_write_file ("tokens.u16", ids, sizeof ids);
}

/* A model with a NaN (or infinite) weight: eval exits 1 with one line naming
 * the file and the metrics; --json still prints valid JSON, with null and an
 * error; a run's eval node fails naming the node and the metric. */
static void
test_eval_nonfinite (void)
{
  g_autofree char *data = token_file ();
  g_autofree char *demo = lp_test_demo_model ();
  const char *poison[][2] = { { "nan.gguf", "blk.0.attn_norm.weight" }, { "inf.gguf", "blk.1.ffn_up.weight" } };
  for (gsize i = 0; i < G_N_ELEMENTS (poison); i++)
    {
      g_autofree char *model = poisoned_model (poison[i][0], poison[i][1], 5, i == 0 ? NAN : INFINITY);
      expect_exit (1, ARGS ("eval", model, "--data", data, "--ctx", "32", "-q"), model, "not finite",
                   "perplexity=nan", NULL);
      g_autofree char *out = NULL, *err = NULL;
      g_assert_cmpint (lp_test_run_cli (&out, &err, "eval", model, "--data", data, "--ctx", "32", "-q", "--json", NULL), ==, 1);
      g_assert_nonnull (strstr (err, "perplexity=nan"));
      g_autoptr (JsonParser) p = json_parser_new ();
      JsonObject *o = lp_test_parse_object (p, out);
      g_assert_true (JSON_NODE_HOLDS_NULL (json_object_get_member (o, "perplexity")));
      g_assert_true (JSON_NODE_HOLDS_NULL (json_object_get_member (o, "nll")));
      g_assert_nonnull (strstr (json_object_get_string_member (o, "error"), "perplexity=nan"));
      g_assert_cmpint (json_object_get_int_member (o, "windows"), >, 0);

      g_autofree char *pipeline = g_strdup_printf ("load path=%s ! eval data=%s ctx=32", model, data);
      g_autofree char *dir = g_build_filename (lp_test_tmpdir (), poison[i][0], NULL);
      g_autofree char *dir_out = g_strconcat (dir, ".run", NULL);
      expect_exit (1, ARGS ("run", "-q", "--no-cache", "-o", dir_out, "-p", pipeline), "eval", "metrics not finite",
                   "perplexity=nan", NULL);
      /* No report holds a number that is not one: a failed run writes none. */
      g_autofree char *report = g_build_filename (dir_out, "report.json", NULL);
      g_assert_false (g_file_test (report, G_FILE_TEST_EXISTS));
    }
  /* The same command on the healthy model: exit 0, numbers in the JSON. */
  g_autofree char *out = NULL;
  g_assert_cmpint (lp_test_run_cli (&out, NULL, "eval", demo, "--data", data, "--ctx", "32", "-q", "--json", NULL), ==, 0);
  g_autoptr (JsonParser) p = json_parser_new ();
  JsonObject *o = lp_test_parse_object (p, out);
  g_assert_true (isfinite (json_object_get_double_member (o, "perplexity")));
  g_assert_false (json_object_has_member (o, "error"));
  /* ... and a run's report.json with its metrics. */
  g_autofree char *pipeline = g_strdup_printf ("load path=%s ! eval data=%s ctx=32", demo, data);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "healthy.run", NULL);
  expect_exit (0, ARGS ("run", "-q", "--no-cache", "-o", dir, "-p", pipeline), NULL);
  g_autofree char *report_path = g_build_filename (dir, "report.json", NULL);
  g_autofree char *report = NULL;
  g_assert_true (g_file_get_contents (report_path, &report, NULL, NULL));
  g_autoptr (JsonParser) rp = json_parser_new ();
  JsonObject *r = lp_test_parse_object (rp, report);
  JsonArray *nodes = json_object_get_array_member (r, "nodes");
  JsonObject *metrics = json_object_get_object_member (json_array_get_object_element (nodes, 1), "metrics");
  g_assert_true (isfinite (json_object_get_double_member (metrics, "perplexity")));
}

/* The JSON writers' helper: null and an error member, never "nan". */
static void
test_json_nonfinite (void)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (GString) bad = g_string_new (NULL);
  json_builder_begin_object (b);
  lp_json_add_finite (b, "a", 1.5, bad);
  lp_json_add_finite (b, "b", NAN, bad);
  lp_json_add_finite (b, "c", -INFINITY, bad);
  lp_json_add_nonfinite_error (b, bad);
  json_builder_end_object (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  g_autofree char *text = json_generator_to_data (gen, NULL);
  g_autoptr (JsonParser) p = json_parser_new ();
  JsonObject *o = lp_test_parse_object (p, text);
  g_assert_cmpfloat (json_object_get_double_member (o, "a"), ==, 1.5);
  g_assert_true (JSON_NODE_HOLDS_NULL (json_object_get_member (o, "b")));
  g_assert_cmpstr (json_object_get_string_member (o, "error"), ==, "not finite: b=nan, c=-inf");
}

/* One metadata key set to a float, an integer or a string. */
typedef struct {
  const char *key;
  char type;         /* 'f' f32, 'u' u64, 's' string */
  double f;
  guint64 u;
  const char *s;
} MetaEdit;

/* The demo GGUF with edits[n] applied to its metadata, written as `name`. */
static char *
edited_gguf (const char *name, const MetaEdit *edits, gsize n)
{
  g_autofree char *demo = lp_test_demo_model ();
  g_autoptr (GError) error = NULL;
  LpMeta *meta = lp_meta_new ();
  g_autoptr (GPtrArray) tensors = lp_gguf_read_tensors (demo, meta, &error);
  g_assert_no_error (error);
  for (gsize i = 0; i < n; i++)
    if (edits[i].type == 'f')
      lp_meta_set_f32 (meta, edits[i].key, (float) edits[i].f);
    else if (edits[i].type == 'u')
      lp_meta_set_u64 (meta, edits[i].key, edits[i].u);
    else
      lp_meta_set_string (meta, edits[i].key, edits[i].s);
  char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_assert_true (lp_gguf_write (path, meta, tensors, &error));
  lp_meta_free (meta);
  return path;
}

/* GGUF metadata that makes the forward pass undefined is refused on load,
 * naming the file, the key, what was expected and what was found. */
static void
test_gguf_config (void)
{
  static const struct {
    MetaEdit edits[4];
    const char *message;
  } cases[] = {
    { { { "llama.rope.freq_base", 'f', NAN } }, "key llama.rope.freq_base: expected a number in (0, 1e12], found nan" },
    { { { "llama.rope.freq_base", 'f', 0 } }, "key llama.rope.freq_base: expected a number in (0, 1e12], found 0" },
    { { { "llama.rope.freq_base", 'f', INFINITY } }, "key llama.rope.freq_base: expected a number in (0, 1e12], found inf" },
    { { { "llama.rope.freq_base", 'f', 1e15 } }, "key llama.rope.freq_base: expected a number in (0, 1e12], found 999999986991104" },
    { { { "llama.rope.scaling.type", 's', .s = "linear" }, { "llama.rope.scaling.factor", 'f', 0 } },
      "key llama.rope.scaling.factor: expected a finite number > 0, found 0" },
    { { { "llama.rope.scaling.type", 's', .s = "linear" }, { "llama.rope.scaling.factor", 'f', -NAN } },
      "key llama.rope.scaling.factor: expected a finite number > 0, found" },
    { { { "llmpress.rope.llama3.factor", 'f', 8 }, { "llmpress.rope.llama3.low_freq_factor", 'f', 4 },
        { "llmpress.rope.llama3.high_freq_factor", 'f', 1 }, { "llmpress.rope.llama3.original_context_length", 'u', .u = 8192 } },
      "key llmpress.rope.llama3.high_freq_factor: expected a finite number above the key llmpress.rope.llama3.low_freq_factor (4), found 1" },
    { { { "llmpress.rope.llama3.factor", 'f', 8 }, { "llmpress.rope.llama3.low_freq_factor", 'f', 1 },
        { "llmpress.rope.llama3.high_freq_factor", 'f', 4 }, { "llmpress.rope.llama3.original_context_length", 'u', .u = 0 } },
      "key llmpress.rope.llama3.original_context_length: expected 1..67108864, found 0" },
    { { { "llama.attention.head_count", 'u', .u = 6 } },
      "key llama.embedding_length: expected a multiple of the key llama.attention.head_count (6) when no head dimension is given, found 64" },
    { { { "llama.attention.head_count_kv", 'u', .u = 3 } },
      "key llama.attention.head_count: expected a multiple of the key llama.attention.head_count_kv (3), found 8" },
    { { { "llama.block_count", 'u', .u = G_GUINT64_CONSTANT (9223372036854775809) } },
      "key llama.block_count: expected an integer below 2^63, found 9223372036854775809" },
    { { { "llama.context_length", 'u', .u = G_GUINT64_CONSTANT (1) << 40 } },
      "key llama.context_length: expected 1..67108864, found 1099511627776" },
    { { { "llama.attention.layer_norm_rms_epsilon", 'f', NAN } },
      "key llama.attention.layer_norm_rms_epsilon: expected a number in (0, 1), found nan" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      gsize n = 0;
      while (n < G_N_ELEMENTS (cases[i].edits) && cases[i].edits[n].key != NULL)
        n++;
      g_autofree char *name = g_strdup_printf ("config-%02zu.gguf", i);
      g_autofree char *path = edited_gguf (name, cases[i].edits, n);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
      g_assert_null (m);
      lp_test_assert_error_contains (error, name, cases[i].message, NULL);
      /* The same, as the user sees it: one line, exit 1. */
      if (i == 0)
        expect_exit (1, ARGS ("inspect", path), cases[i].message, NULL);
    }
}

/* Element `index` of `tensor` in the model at `path`, as f32. */
static float
element (const char *path, const char *tensor, gint64 index)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  LpTensor *t = lp_model_tensor (m, tensor);
  g_assert_nonnull (t);
  g_assert_cmpint (t->dtype, ==, LP_DTYPE_F16);
  g_autofree float *v = lp_tensor_dup_f32 (t, &error);
  g_assert_no_error (error);
  return v[index];
}

/* f16 never turns a finite value into inf: convert --type f16 and the save
 * pass refuse it by default, naming tensor, element and value, and clamp it
 * when asked, saying how many; NaN and inf are refused for f16 and bf16. */
static void
test_f16_overflow (void)
{
  const char *w = "blk.0.ffn_up.weight";
  g_autofree char *big = poisoned_model ("big.gguf", w, 7, 70000.0f);
  g_autofree char *huge = poisoned_model ("huge.gguf", w, 3, -3.4e38f);
  g_autofree char *nan = poisoned_model ("nan-weight.gguf", w, 2, NAN);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "out-f16.gguf", NULL);
  g_autofree char *hf = g_build_filename (lp_test_tmpdir (), "out-f16-hf", NULL);
  expect_exit (1, ARGS ("convert", big, out, "--type", "f16"), "tensor blk.0.ffn_up.weight: element 7",
               "within f16's range (|x| <= 65504), found 70000", "--f16-overflow=clamp", NULL);
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  expect_exit (1, ARGS ("convert", big, hf, "--type", "f16", "--format", "hf"), "element 7", "found 70000", NULL);
  g_assert_false (g_file_test (hf, G_FILE_TEST_EXISTS));
  expect_exit (2, ARGS ("convert", big, out, "--type", "f16", "--f16-overflow", "wrap"), "--f16-overflow", "'wrap'", NULL);

  /* Clamped on request: the largest f16, and a count on stderr. */
  g_autofree char *err = NULL;
  g_assert_cmpint (lp_test_run_cli (NULL, &err, "convert", big, out, "--type", "f16", "--f16-overflow=clamp", NULL), ==, 0);
  g_assert_nonnull (strstr (err, "1 value beyond f16's range clamped"));
  g_assert_cmpfloat (element (out, w, 7), ==, 65504.0f);
  g_assert_cmpfloat (element (out, w, 6), !=, 65504.0f);
  g_autofree char *err_hf = NULL;
  g_assert_cmpint (lp_test_run_cli (NULL, &err_hf, "convert", big, hf, "--type", "f16", "--format", "hf", "--f16-overflow", "clamp", NULL), ==, 0);
  g_assert_nonnull (strstr (err_hf, "1 value beyond f16's range clamped"));

  /* bf16 overflows only past 3.39e38; f32 keeps everything. */
  g_autofree char *out_bf = g_build_filename (lp_test_tmpdir (), "out-bf16.gguf", NULL);
  g_assert_cmpint (lp_test_run_cli (NULL, NULL, "convert", big, out_bf, "--type", "bf16", NULL), ==, 0);
  expect_exit (1, ARGS ("convert", huge, out_bf, "--type", "bf16"), "element 3", "within bf16's range", "found -3.3999", NULL);
  for (gsize i = 0; i < 2; i++)
    expect_exit (1, ARGS ("convert", nan, out, "--type", i ? "bf16" : "f16", "--f16-overflow=clamp"), "element 2",
                 "expected a finite number, found nan", NULL);
  g_autofree char *out_f32 = g_build_filename (lp_test_tmpdir (), "out-f32.gguf", NULL);
  g_assert_cmpint (lp_test_run_cli (NULL, NULL, "convert", nan, out_f32, "--type", "f32", NULL), ==, 0);

  /* The save pass: refused by default, clamped with f16_overflow=clamp. */
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "save-f16", NULL);
  g_autofree char *refuse = g_strdup_printf ("load path=%s ! save path=o.gguf dtype=f16", big);
  expect_exit (1, ARGS ("run", "-q", "--no-cache", "-o", dir, "-p", refuse), "save", "element 7", "found 70000", NULL);
  g_autofree char *clamp = g_strdup_printf ("load path=%s ! save path=o.gguf dtype=f16 f16_overflow=clamp", big);
  g_autofree char *err_run = NULL;
  g_assert_cmpint (lp_test_run_cli (NULL, &err_run, "run", "--no-cache", "-o", dir, "-p", clamp, NULL), ==, 0);
  g_assert_nonnull (strstr (err_run, "1 value beyond f16's range clamped"));
  g_autofree char *saved = g_build_filename (dir, "o.gguf", NULL);
  g_assert_cmpfloat (element (saved, w, 7), ==, 65504.0f);
}

/* Integer tensors where float weights belong are refused on load, naming
 * the tensor and its type (GGUF and safetensors). */
static void
test_integer_weights (void)
{
  g_autofree char *demo = lp_test_demo_model ();
  g_autoptr (GError) error = NULL;
  const LpDType types[] = { LP_DTYPE_I8, LP_DTYPE_I32 };
  for (gsize k = 0; k < G_N_ELEMENTS (types); k++)
    {
      LpMeta *meta = lp_meta_new ();
      g_autoptr (GPtrArray) tensors = lp_gguf_read_tensors (demo, meta, &error);
      g_assert_no_error (error);
      for (guint i = 0; i < tensors->len; i++)
        {
          LpTensor *t = tensors->pdata[i];
          if (strcmp (t->name, "blk.1.ffn_down.weight") == 0)
            {
              tensors->pdata[i] = lp_tensor_new (t->name, types[k], t->n_dims, t->shape, &error);
              g_assert_no_error (error);
              lp_tensor_unref (t);
            }
        }
      g_autofree char *name = g_strdup_printf ("int-%s.gguf", lp_dtype_name (types[k]));
      g_autofree char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
      g_assert_true (lp_gguf_write (path, meta, tensors, &error));
      lp_meta_free (meta);
      g_autofree char *message = g_strdup_printf ("tensor blk.1.ffn_down.weight: expected float or quantized weights, "
                                                  "found integer type %s", lp_dtype_name (types[k]));
      expect_exit (1, ARGS ("inspect", path), name, message, NULL);
    }

  /* A Hugging Face directory whose mlp.up_proj weight is I32. */
  g_autoptr (LpModel) m = lp_model_load (demo, NULL, &error);
  g_assert_no_error (error);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "int-hf", NULL);
  g_assert_true (lp_hf_save (m, dir, NULL, &error));
  g_autofree char *st_path = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  {
    g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, &error);
    g_assert_no_error (error);
    for (guint i = 0; i < lp_safetensors_n_tensors (st); i++)
      {
        LpTensor *t = lp_safetensors_tensor_at (st, i);
        if (strcmp (t->name, "model.layers.0.mlp.up_proj.weight") == 0)
          g_ptr_array_add (list, lp_tensor_new (t->name, LP_DTYPE_I32, t->n_dims, t->shape, &error));
        else
          g_ptr_array_add (list, lp_tensor_ref (t));
      }
  }
  g_assert_true (lp_safetensors_write (st_path, (LpTensor *const *) list->pdata, list->len, NULL, &error));
  g_assert_null (lp_model_load (dir, NULL, &error));
  lp_test_assert_error_contains (error, "tensor blk.0.ffn_up.weight: expected float or quantized weights, found integer type i32", NULL);
}

/* Special token ids: 4294967295 means none (stories260K carries it) and
 * loads without a word; an id past the vocabulary is dropped with one
 * warning naming the key, the value and the vocabulary size. */
static void
test_token_ids (void)
{
  g_autofree char *stories = lp_test_shared_path ("models/stories260K/stories260K-f32.gguf");
  if (stories != NULL)
    {
      g_autofree char *err = NULL;
      g_assert_cmpint (lp_test_run_cli (NULL, &err, "inspect", stories, NULL), ==, 0);
      g_assert_cmpstr (err, ==, "");
    }
  const MetaEdit edits[] = {
    { "tokenizer.ggml.bos_token_id", 'u', .u = 600 },
    { "tokenizer.ggml.padding_token_id", 'u', .u = G_MAXUINT32 },
  };
  g_autofree char *path = edited_gguf ("bad-bos.gguf", edits, G_N_ELEMENTS (edits));
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint (lp_test_run_cli (&out, &err, "inspect", path, "--json", NULL), ==, 0);
  g_autofree char *warning = g_strdup_printf ("llmpress: warning: %s: key tokenizer.ggml.bos_token_id: expected a token id "
                                              "below the vocabulary size 512 or 4294967295 (none), found 600; ignored\n", path);
  g_assert_cmpstr (err, ==, warning);
  g_autoptr (JsonParser) p = json_parser_new ();
  JsonObject *o = lp_test_parse_object (p, out);
  g_assert_true (JSON_NODE_HOLDS_NULL (json_object_get_member (json_object_get_object_member (o, "tokenizer"), "bos_id")));

  /* config.json's ids alike, quoted as written (json-glib reads 2^64 as -1). */
  static const char *const ids[][2] = { { "64", "64" }, { "18446744073709551616", "18446744073709551616" }, { "-1", NULL } };
  for (gsize i = 0; i < G_N_ELEMENTS (ids); i++)
    {
      g_autoptr (LpModel) tiny = lp_test_tiny_model (3);
      g_autoptr (GError) error = NULL;
      g_autofree char *name = g_strdup_printf ("hf-bos-%zu", i);
      g_autofree char *dir = g_build_filename (lp_test_tmpdir (), name, NULL);
      g_assert_true (lp_hf_save (tiny, dir, NULL, &error));
      g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
      g_autofree char *text = NULL;
      g_assert_true (g_file_get_contents (cfg, &text, NULL, NULL));
      g_autofree char *with = g_strdup_printf ("{\"bos_token_id\" : %s, %s", ids[i][0], text + 1);
      g_assert_true (g_file_set_contents (cfg, with, -1, NULL));
      g_autofree char *err_hf = NULL;
      g_assert_cmpint (lp_test_run_cli (NULL, &err_hf, "inspect", dir, NULL), ==, 0);
      if (ids[i][1] == NULL)
        g_assert_cmpstr (err_hf, ==, "");
      else
        {
          g_autofree char *w = g_strdup_printf ("config.json: key bos_token_id: expected a token id below the vocabulary "
                                                "size 64, found %s; ignored\n", ids[i][1]);
          g_assert_true (g_str_has_suffix (err_hf, w));
        }
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/numbers/cli", test_cli_numbers);
  g_test_add_func ("/numbers/eval-nonfinite", test_eval_nonfinite);
  g_test_add_func ("/numbers/json-nonfinite", test_json_nonfinite);
  g_test_add_func ("/numbers/gguf-config", test_gguf_config);
  g_test_add_func ("/numbers/f16-overflow", test_f16_overflow);
  g_test_add_func ("/numbers/integer-weights", test_integer_weights);
  g_test_add_func ("/numbers/token-ids", test_token_ids);
  return g_test_run ();
}
