/* The quantize passes through the CLI:
 *  - stories260K on TinyStories (calibration from token 300000 on, evaluation
 *    before it): GPTQ beats RTN and AWQ is no worse than RTN, at 4 and at 3
 *    bits with groups of 32 (specs/quantize.ini);
 *  - GPTQ into llama.cpp's Q4_K (with llama-quantize's fallbacks) beats RTN
 *    into the same types at the same file size;
 *  - GPTQ into every block type writes a GGUF that reads back to the very
 *    weights the model held in memory (same perplexity to the last bit), in
 *    the requested type;
 *  - bad input: one clear error line and a non-zero exit. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

static const char *
tmp_path (const char *name)
{
  static GPtrArray *keep;
  if (keep == NULL)
    keep = g_ptr_array_new_with_free_func (g_free);
  char *p = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_ptr_array_add (keep, p);
  return p;
}

/* The metrics object of node `name` in OUT/report.json (owned by parser). */
static JsonObject *
node_metrics (JsonParser *parser, const char *out_dir, const char *name)
{
  g_autofree char *path = g_build_filename (out_dir, "report.json", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (json_parser_load_from_file (parser, path, &error));
  JsonArray *nodes = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)), "nodes");
  for (guint i = 0; i < json_array_get_length (nodes); i++)
    {
      JsonObject *n = json_array_get_object_element (nodes, i);
      if (strcmp (json_object_get_string_member (n, "name"), name) == 0)
        return json_object_get_object_member (n, "metrics");
    }
  g_error ("report has no node %s", name);
}

static double
metric (const char *out_dir, const char *node, const char *key)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  return json_object_get_double_member (node_metrics (parser, out_dir, node), key);
}

/* llmpress run (spec file or -p inline) -o OUT -q --no-cache, extra args; the status. */
static int
run (char **err, const char *out, const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) "run");
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  const char *tail[] = { "-o", out, "--no-cache", NULL };
  for (const char *const *a = tail; *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  g_ptr_array_add (argv, NULL);
  g_autofree char *o = NULL;
  int status = lp_test_run_cliv (&o, err, (const char *const *) argv->pdata);
  return status;
}

/* Run spec text (quietly) into a new output directory NAME, which it returns;
 * the run must succeed. */
static const char *
run_text (const char *name, const char *text)
{
  g_autofree char *file = g_strdup_printf ("%s.ini", name);
  g_autofree char *path = lp_test_write_file (file, text, strlen (text));
  const char *out = tmp_path (name);
  g_autofree char *err = NULL;
  const char *args[] = { path, "-q", NULL };
  int status = run (&err, out, args);
  if (status != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (status, ==, 0);
  return out;
}

static void
test_stories_spec (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "quantize.ini", NULL);
  g_autofree char *dm = g_strdup_printf ("model=%s", model);
  g_autofree char *dd = g_strdup_printf ("data=%s", tokens);
  g_autofree char *dc = g_strdup_printf ("calib=%s", tokens);
  const char *out = tmp_path ("stories-spec");
  g_autofree char *err = NULL;
  const char *args[] = { spec, "-q", "-D", dm, "-D", dd, "-D", dc, NULL };
  int status = run (&err, out, args);
  if (status != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (status, ==, 0);
  for (int bits = 4; bits >= 3; bits--)
    {
      double p[3];
      const char *method[] = { "rtn", "gptq", "awq" };
      for (int k = 0; k < 3; k++)
        {
          g_autofree char *node = g_strdup_printf ("eval-%s%d", method[k], bits);
          p[k] = metric (out, node, "perplexity");
        }
      g_test_message ("%d bits, groups of 32: perplexity rtn %.4f, gptq %.4f, awq %.4f", bits, p[0], p[1], p[2]);
      g_assert_cmpfloat (p[1], <, p[0]);
      g_assert_cmpfloat (p[2], <=, p[0]);
    }
}

/* The [pipeline] group of the TinyStories split, 32 samples of 256 tokens. */
static char *
stories_pipeline (const char *tokens)
{
  return g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=32\ncalibration_seq_len=256\n"
                          "calibration_range=300000:\n",
                          tokens);
}

static void
test_q4k_same_size (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  g_autofree char *head = stories_pipeline (tokens);
  g_autofree char *text = g_strdup_printf (
    "%s[load]\npath=%s\n"
    "[gptq]\npass=quantize.gptq\ninput=load\nformat=q4_k\n[save-gptq]\npass=save\npath=gptq.gguf\n"
    "[rtn]\npass=quantize.rtn\ninput=load\nformat=q4_k\n[save-rtn]\npass=save\npath=rtn.gguf\n",
    head, model);
  g_autofree char *spec = lp_test_write_file ("q4k.ini", text, strlen (text));
  const char *out = tmp_path ("q4k");
  g_autofree char *err = NULL;
  const char *args[] = { spec, NULL };
  g_assert_cmpint (run (&err, out, args), ==, 0);
  /* The files hold what llama-quantize would store: Q4_K does not fit rows
   * of 64, so Q5_0; ffn_down's rows of 172 fit no block, so F16. */
  g_assert_nonnull (strstr (err, "blk.0.attn_q.weight: rows of 64 values do not fit the requested block: q5_0"));
  g_assert_nonnull (strstr (err, "blk.0.ffn_down.weight: rows of 172 values do not fit the requested block: f16"));
  double ppl[2];
  guint64 size[2];
  const char *names[] = { "gptq.gguf", "rtn.gguf" };
  for (int k = 0; k < 2; k++)
    {
      g_autofree char *path = g_build_filename (out, names[k], NULL);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
      g_assert_no_error (error);
      size[k] = lp_path_size (path);
      g_assert_cmpint (lp_model_tensor (m, "blk.1.attn_v.weight")->dtype, ==, LP_DTYPE_Q5_0);
      g_assert_cmpint (lp_model_tensor (m, "blk.1.ffn_down.weight")->dtype, ==, LP_DTYPE_F16);
      g_autofree char *eval_text = g_strdup_printf ("[load]\npath=%s\n[eval]\ndata=%s\ndata_range=:300000\nmax_windows=64\n",
                                                    path, tokens);
      g_autofree char *name = g_strdup_printf ("eval-%s", names[k]);
      ppl[k] = metric (run_text (name, eval_text), "eval", "perplexity");
    }
  g_test_message ("format=q4_k with fallbacks: gptq %.4f, rtn %.4f perplexity; %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT
                  " bytes",
                  ppl[0], ppl[1], size[0], size[1]);
  g_assert_cmpuint (size[0], ==, size[1]);
  g_assert_cmpfloat (ppl[0], <, ppl[1]);
}

/* GPTQ's act-order (g_idx on the integer grid), with static groups, on a
 * block type (static ggml blocks), and AWQ followed by GPTQ all beat RTN on
 * the same grid. */
static void
test_stories_variants (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  static const struct { const char *name, *params, *baseline; } v[] = {
    { "rtn", "pass=quantize.rtn\nbits=4\ngroup_size=32", NULL },
    { "act", "pass=quantize.gptq\nbits=4\ngroup_size=32\nact_order=true", "rtn" },
    { "act-static", "pass=quantize.gptq\nbits=4\ngroup_size=32\nact_order=true\nstatic_groups=true", "rtn" },
    { "awq-gptq", "pass=quantize.awq\nbits=4\ngroup_size=32\nquantizer=gptq", "rtn" },
    { "rtn-q4_0", "pass=quantize.rtn\nformat=q4_0", NULL },
    { "act-q4_0", "pass=quantize.gptq\nformat=q4_0\nact_order=true", "rtn-q4_0" },
  };
  g_autofree char *head = stories_pipeline (tokens);
  g_autoptr (GString) spec = g_string_new (head);
  g_string_append_printf (spec, "[load]\npath=%s\n", model);
  for (guint i = 0; i < G_N_ELEMENTS (v); i++)
    g_string_append_printf (spec, "[%s]\n%s\ninput=load\n[e-%s]\npass=eval\ninput=%s\ndata=%s\ndata_range=:300000\n"
                            "max_windows=32\n",
                            v[i].name, v[i].params, v[i].name, v[i].name, tokens);
  const char *out = run_text ("variants", spec->str);
  for (guint i = 0; i < G_N_ELEMENTS (v); i++)
    {
      if (v[i].baseline == NULL)
        continue;
      g_autofree char *a = g_strdup_printf ("e-%s", v[i].name);
      g_autofree char *b = g_strdup_printf ("e-%s", v[i].baseline);
      double p = metric (out, a, "perplexity"), base = metric (out, b, "perplexity");
      g_test_message ("%s: perplexity %.4f, %s %.4f", v[i].name, p, v[i].baseline, base);
      g_assert_cmpfloat (p, <, base);
    }
}

/* Mixed precision: target_size= at the size of the file Q4_K_M (our
 * preset, llama-quantize's choices) writes lands within it and measures a
 * lower perplexity (the allocator is tested further in test-budget). */
static void
test_stories_target_bpw (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *tokens = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || tokens == NULL)
    return;
  g_autofree char *head = stories_pipeline (tokens);
  const char *eval = "pass=eval\ndata_range=:300000\nmax_windows=64\n";
  g_autofree char *uniform = g_strdup_printf ("%s[load]\npath=%s\n[q]\npass=quantize.rtn\npreset=Q4_K_M\n"
                                              "[save]\npass=save\npath=q.gguf\n[e]\n%sdata=%s\n",
                                              head, model, eval, tokens);
  const char *out = run_text ("uniform", uniform);
  g_autofree char *path = g_build_filename (out, "q.gguf", NULL);
  GStatBuf st;
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  guint64 size = (guint64) st.st_size;
  double ppl = metric (out, "e", "perplexity");
  g_autofree char *mixed = g_strdup_printf ("%s[load]\npath=%s\n[q]\npass=quantize.rtn\ntarget_size=%" G_GUINT64_FORMAT
                                            "\n[save]\npass=save\npath=q.gguf\n[e]\n%sdata=%s\n",
                                            head, model, size, eval, tokens);
  const char *out2 = run_text ("mixed", mixed);
  g_autofree char *path2 = g_build_filename (out2, "q.gguf", NULL);
  g_assert_cmpint (g_stat (path2, &st), ==, 0);
  double ppl2 = metric (out2, "e", "perplexity");
  g_test_message ("Q4_K_M: %" G_GUINT64_FORMAT " bytes, perplexity %.4f; target_size=%" G_GUINT64_FORMAT
                  ": %" G_GUINT64_FORMAT " bytes, perplexity %.4f",
                  size, ppl, size, (guint64) st.st_size, ppl2);
  g_assert_cmpuint ((guint64) st.st_size, <=, size);
  g_assert_cmpfloat (ppl2, <, ppl);
}

/* A synthetic model whose rows fit every block (D 256, F 512). */
static const char *
wide_model (void)
{
  const char *path = tmp_path ("wide.gguf");
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
      o.dim = 256;
      o.ffn_dim = 512;
      o.n_layers = 1;
      o.n_vocab = 300;
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_model_synth (&o, &error);
      g_assert_no_error (error);
      g_assert_true (lp_model_save (m, path, NULL, &error));
    }
  return path;
}

static void
test_block_types_roundtrip (void)
{
  static const char *const types[] = { "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k" };
  const char *model = wide_model ();
  g_autofree char *text_path = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autoptr (GString) spec = g_string_new (NULL);
  g_string_append_printf (spec, "[pipeline]\ncalibration=%s\ncalibration_samples=4\ncalibration_seq_len=128\n[load]\npath=%s\n",
                          text_path, model);
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    g_string_append_printf (spec,
                            "[g-%s]\npass=quantize.gptq\ninput=load\nformat=%s\n"
                            "[e-%s]\npass=eval\ninput=g-%s\ndata=%s\nctx=128\nmax_windows=4\n"
                            "[s-%s]\npass=save\ninput=g-%s\npath=%s.gguf\n",
                            types[i], types[i], types[i], types[i], text_path, types[i], types[i], types[i]);
  const char *out = run_text ("types", spec->str);
  g_autoptr (GString) reload = g_string_new (NULL);
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    g_string_append_printf (reload, "[l-%s]\npass=load\npath=%s/%s.gguf\n[e-%s]\npass=eval\ninput=l-%s\ndata=%s\nctx=128\nmax_windows=4\n",
                            types[i], out, types[i], types[i], types[i], text_path);
  const char *out2 = run_text ("types-reload", reload->str);
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      g_autofree char *node = g_strdup_printf ("e-%s", types[i]);
      double mem = metric (out, node, "perplexity"), file = metric (out2, node, "perplexity");
      g_test_message ("%s: perplexity in memory %.17g, read back %.17g", types[i], mem, file);
      g_assert_true (isfinite (mem));
      g_assert_cmpfloat (mem, ==, file);
      g_autofree char *gguf = g_strdup_printf ("%s/%s.gguf", out, types[i]);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_model_load (gguf, NULL, &error);
      g_assert_no_error (error);
      LpDType want;
      g_assert_true (lp_dtype_from_name (types[i], &want));
      g_assert_cmpint (lp_model_tensor (m, "blk.0.attn_q.weight")->dtype, ==, want);
      g_assert_cmpint (lp_model_tensor (m, "blk.0.ffn_down.weight")->dtype, ==, want);
    }
}

/* Run nodes (each "PASS key=value ...", each reading the one before) after
 * loading the demo model, with a little calibration text; return the status
 * and stderr. */
static int
run_nodes (char **err, const char *const *nodes)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autoptr (GString) spec = g_string_new (NULL);
  g_string_append_printf (spec, "[pipeline]\ncalibration=%s\ncalibration_samples=4\ncalibration_seq_len=128\n"
                          "[load]\npath=%s\n", text, model);
  for (int i = 0; nodes[i]; i++)
    {
      g_auto (GStrv) words = g_strsplit (nodes[i], " ", -1);
      g_string_append_printf (spec, "[n%d]\npass=%s\n", i, words[0]);
      for (int k = 1; words[k]; k++)
        g_string_append_printf (spec, "%s\n", words[k]);
    }
  g_autofree char *path = lp_test_write_file ("nodes.ini", spec->str, spec->len);
  const char *args[] = { path, NULL };
  return run (err, tmp_path ("nodes"), args);
}

/* The nodes must fail with an error holding `fragment`. */
static void
assert_fails (const char *fragment, ...)
{
  g_autoptr (GPtrArray) nodes = g_ptr_array_new ();
  va_list ap;
  va_start (ap, fragment);
  for (const char *n = va_arg (ap, const char *); n; n = va_arg (ap, const char *))
    g_ptr_array_add (nodes, (gpointer) n);
  va_end (ap);
  g_ptr_array_add (nodes, NULL);
  g_autofree char *err = NULL;
  int status = run_nodes (&err, (const char *const *) nodes->pdata);
  g_test_message ("-> %d: %s", status, err);
  g_assert_cmpint (status, !=, 0);
  g_assert_nonnull (strstr (err, fragment));
}

static void
test_bad_input (void)
{
  assert_fails ("bits=9: bits: expected an integer in [2, 8], found 9", "quantize.rtn bits=9", NULL);
  assert_fails ("bits=1: bits: expected an integer in [2, 8], found 1", "quantize.awq bits=1", NULL);
  assert_fails ("bits: only applies to format=int", "quantize.gptq format=q4_k bits=3", NULL);
  assert_fails ("group_size=-2", "quantize.rtn group_size=-2", NULL);
  assert_fails ("blk.0.attn_q.weight: already quantized (f32, integer grid)", "quantize.rtn", "quantize.rtn", NULL);
  assert_fails ("blk.0.attn_q.weight: already quantized (q8_0)", "quantize.rtn format=q8_0", "quantize.gptq", NULL);
  assert_fails ("damp=2", "quantize.gptq damp=2", NULL);
  assert_fails ("format=q4_9", "quantize.rtn format=q4_9", NULL);
  assert_fails ("overrides: expected GLOB=BITS (2..8) or GLOB=TYPE (q8_0 ... q6_k), at most 32, found 'attn_v=9'",
                "quantize.rtn overrides=attn_v=9", NULL);
  assert_fails ("budget: expected at least", "quantize.rtn target_bpw=2", NULL);
  assert_fails ("target_bpw: expected no overrides= with it", "quantize.rtn target_bpw=5 overrides=attn_v=8", NULL);
}

static void
test_requantize_allowed (void)
{
  g_autofree char *err = NULL;
  const char *nodes[] = { "quantize.rtn format=q8_0", "quantize.gptq allow_requantize=true bits=3", NULL };
  int status = run_nodes (&err, nodes);
  g_test_message ("%s", err);
  g_assert_cmpint (status, ==, 0);
}

/* A model with a NaN or an infinite weight is refused with the tensor and
 * element named, in one line, exit 1, nothing written: on the integer grid
 * (the values scanned first) and on block types (the kernels' own refusal,
 * the element found after it), the latter's bad value in a later row too. */
static void
test_nan_weight (void)
{
  static const struct {
    const char *format;
    int row, col;
    float value;
    const char *found;
  } cases[] = {
    { "int", 3, 5, NAN, "nan" },
    { "q8_0", 3, 5, NAN, "nan" },
    { "q4_0", 40, 31, -INFINITY, "-inf" },
    { "q4_k", 0, 0, INFINITY, "inf" },
  };
  for (guint k = 0; k < G_N_ELEMENTS (cases); k++)
    {
      g_autoptr (LpModel) m = lp_test_tiny_model (7);
      LpTensor *t = lp_model_tensor (m, "blk.1.ffn_up.weight");
      g_autofree float *w = lp_tensor_dup_f32 (t, NULL);
      w[cases[k].row * lp_tensor_row_length (t) + cases[k].col] = cases[k].value;
      g_autoptr (GError) error = NULL;
      g_autoptr (LpTensor) bad = lp_tensor_new_f32 (t->name, t->n_dims, t->shape, w, &error);
      lp_model_set_tensor (m, bad);
      g_autofree char *file = g_strdup_printf ("nan-%s.gguf", cases[k].format);
      const char *path = tmp_path (file);
      g_assert_true (lp_model_save (m, path, NULL, &error));
      g_autofree char *p = g_strdup_printf ("load path=%s ! quantize.rtn format=%s", path, cases[k].format);
      g_autofree char *err = NULL, *name = g_strdup_printf ("nan-%s", cases[k].format);
      g_autofree char *want = g_strdup_printf ("blk.1.ffn_up.weight: element [%d, %d]: expected a finite weight, found %s\n",
                                               cases[k].row, cases[k].col, cases[k].found);
      const char *args[] = { "-p", p, "-q", NULL };
      const char *out = tmp_path (name);
      g_assert_cmpint (run (&err, out, args), ==, 1);
      const char *at = strstr (err, want);
      if (at == NULL)
        g_error ("%s: expected \"%s\" in \"%s\"", cases[k].format, want, err);
      g_assert_null (strchr (at + strlen (want), '\n'));
      g_autoptr (GDir) dir = g_dir_open (out, 0, NULL); /* the CLI makes it before running */
      g_assert_null (dir ? g_dir_read_name (dir) : NULL);
    }
}

/* Groups that do not divide a row: a shorter last group, reported. */
static void
test_odd_groups_reported (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *p = g_strdup_printf ("load path=%s ! quantize.rtn group_size=32", model);
  g_autofree char *err = NULL;
  const char *args[] = { "-p", p, NULL };
  g_assert_cmpint (run (&err, tmp_path ("odd"), args), ==, 0);
  g_assert_nonnull (strstr (err, "blk.0.ffn_down.weight: rows of 172 values: int4 g32, last group of 12"));
}

/* Pruned weights (a keep-mask) stay exactly 0 through GPTQ's error feedback
 * on the integer grid and on a symmetric block type; a block type with a
 * min (Q4_1) cannot hold 0 exactly, which is reported. */
static void
test_mask_kept (void)
{
  struct { const char *quant; gboolean exact; } cases[] = {
    { "quantize.gptq bits=3 group_size=32", TRUE },
    { "quantize.gptq format=q4_0", TRUE },
    { "quantize.awq bits=4 group_size=32 quantizer=gptq", TRUE },
    { "quantize.rtn bits=4 symmetric=true", TRUE },
    { "quantize.gptq format=q4_1", FALSE },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const char *nodes[] = { "test.mask", cases[i].quant,
                              "eval targets=blk.*.weight ignore=blk.*_norm.weight", NULL };
      g_autofree char *err = NULL;
      int status = run_nodes (&err, nodes);
      if (status != 0)
        g_test_message ("%s", err);
      g_assert_cmpint (status, ==, 0);
      double zeros = metric (tmp_path ("nodes"), "n2", "weights.zero_fraction");
      g_test_message ("test.mask ! %s: zero fraction %.4f", cases[i].quant, zeros);
      gboolean warned = strstr (err, "pruned weights are not exactly 0 on q4_1") != NULL;
      if (cases[i].exact)
        {
          g_assert_cmpfloat (zeros, >=, 0.5);
          g_assert_false (warned);
        }
      else
        {
          g_assert_cmpfloat (zeros, <, 0.5);
          g_assert_true (warned);
        }
    }
}

/* The integer grid's compressed form: w = scale * (code - zero) through
 * g_idx, its packed size, the tensor it materializes, bad shapes refused. */
static void
test_int_grid (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpIntGrid) g = lp_int_grid_new (2, 5, 3, 2, FALSE, &error);
  g_assert_no_error (error);
  g_assert_cmpint (g->n_groups, ==, 3);
  /* Columns 0,1 -> group 0, 2,3 -> 1, 4 -> 2 (a shorter last group). */
  g_assert_cmpint (g->g_idx[4], ==, 2);
  static const guint8 codes[10] = { 0, 7, 3, 4, 5, 1, 2, 6, 0, 7 };
  memcpy (g->codes, codes, sizeof codes);
  for (int k = 0; k < 6; k++)
    {
      g->scales[k] = lp_f32_to_f16 (0.5f * (float) (k + 1));
      g->zeros[k] = (guint8) (k % 4);
    }
  /* act-order: column 1 moved into group 2. */
  g->g_idx[1] = 2;
  float w[10];
  lp_int_grid_dequantize (g, w);
  /* Row 0: groups (0.5, z0), (1.0, z1), (1.5, z2); row 1: (2.0, z3), (2.5, z0), (3.0, z1). */
  const float expect[10] = { 0.5f * (0 - 0), 1.5f * (7 - 2), 1.0f * (3 - 1), 1.0f * (4 - 1), 1.5f * (5 - 2),
                             2.0f * (1 - 3), 3.0f * (2 - 1), 2.5f * (6 - 0), 2.5f * (0 - 0), 3.0f * (7 - 1) };
  for (int i = 0; i < 10; i++)
    g_assert_cmpfloat (w[i], ==, expect[i]);
  /* Codes and zeros at 3 bits, f16 scales, int32 g_idx. */
  g_assert_cmpuint (lp_int_grid_n_bytes (g), ==, (10 * 3 + 7) / 8 + 6 * 2 + (6 * 3 + 7) / 8 + 5 * 4);
  gint64 shape[2] = { 2, 5 };
  g_autoptr (LpTensor) t = lp_tensor_new_int_grid ("w", 2, shape, g, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (lp_tensor_is_quantized (t));
  g_assert_cmpuint (lp_tensor_storage_bytes (t), ==, lp_int_grid_n_bytes (g));
  g_assert_cmpmem (lp_tensor_data (t), sizeof w, w, sizeof w);
  /* A renamed copy keeps the grid. */
  g_autoptr (LpTensor) r = lp_tensor_rename (t, "w2");
  g_assert_true (lp_tensor_int_grid (r) == g);
  gint64 wrong[2] = { 5, 2 };
  g_assert_null (lp_tensor_new_int_grid ("w", 2, wrong, g, NULL, &error));
  lp_test_assert_error_contains (error, "tensor w", "does not fit the shape", NULL);
  g_clear_error (&error);
  g_assert_null (lp_int_grid_new (2, 5, 9, 2, FALSE, &error));
  lp_test_assert_error_contains (error, "bits: expected 2..8, found 9", NULL);
  g_clear_error (&error);
  g_assert_null (lp_int_grid_new (2, 5, 4, 0, FALSE, &error));
  lp_test_assert_error_contains (error, "group size > 0", NULL);
}

/* GPTQ checkpoints: quantize.gptq (act-order, so g_idx is a permutation)
 * saved as a safetensors directory reads back to the same model (same
 * perplexity to the last bit); its tensors follow AutoGPTQ's layout, checked
 * here against the formula; config.json says how. */
static void
test_gptq_safetensors (void)
{
  const char *model = wide_model ();
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *spec = g_strdup_printf (
    "[pipeline]\ncalibration=%s\ncalibration_samples=4\ncalibration_seq_len=128\n[load]\npath=%s\n"
    "[q]\npass=quantize.gptq\nbits=4\ngroup_size=64\nact_order=true\n"
    "[e]\npass=eval\ninput=q\ndata=%s\nctx=128\nmax_windows=4\n[s]\npass=save\ninput=q\nformat=safetensors\npath=hf\n",
    text, model, text);
  const char *out = run_text ("gptq-st", spec);
  g_autofree char *dir = g_build_filename (out, "hf", NULL);
  g_autofree char *reload = g_strdup_printf ("[load]\npath=%s\n[e]\npass=eval\ndata=%s\nctx=128\nmax_windows=4\n", dir, text);
  const char *out2 = run_text ("gptq-st-reload", reload);
  g_assert_cmpfloat (metric (out, "e", "perplexity"), ==, metric (out2, "e", "perplexity"));

  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_assert_true (json_parser_load_from_file (parser, cfg_path, NULL));
  JsonObject *qc = json_object_get_object_member (json_node_get_object (json_parser_get_root (parser)), "quantization_config");
  g_assert_cmpstr (json_object_get_string_member (qc, "quant_method"), ==, "gptq");
  g_assert_cmpstr (json_object_get_string_member (qc, "checkpoint_format"), ==, "gptq");
  g_assert_cmpint (json_object_get_int_member (qc, "bits"), ==, 4);
  g_assert_cmpint (json_object_get_int_member (qc, "group_size"), ==, 64);
  g_assert_true (json_object_get_boolean_member (qc, "desc_act"));
  g_assert_false (json_object_get_boolean_member (qc, "sym"));

  /* v_proj (not row-permuted): qweight[k / 8, n] holds code (n, k) at bits
   * 4 (k % 8); qzeros[g, n / 8] holds zero - 1 at bits 4 (n % 8). */
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (dir, NULL, &error);
  g_assert_no_error (error);
  LpTensor *v = lp_model_tensor (m, "blk.0.attn_v.weight");
  g_assert_nonnull (lp_tensor_int_grid (v));
  const LpIntGrid *g = lp_tensor_int_grid (v);
  g_autofree char *st_path = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  LpTensor *qw = lp_safetensors_tensor (st, "model.layers.0.self_attn.v_proj.qweight");
  LpTensor *qz = lp_safetensors_tensor (st, "model.layers.0.self_attn.v_proj.qzeros");
  LpTensor *sc = lp_safetensors_tensor (st, "model.layers.0.self_attn.v_proj.scales");
  LpTensor *gi = lp_safetensors_tensor (st, "model.layers.0.self_attn.v_proj.g_idx");
  g_assert_nonnull (qw);
  g_assert_nonnull (qz);
  g_assert_nonnull (sc);
  g_assert_nonnull (gi);
  gint64 N = g->rows, K = g->cols, G = g->n_groups;
  g_assert_cmpint (qw->dtype, ==, LP_DTYPE_I32);
  g_assert_cmpint (qw->shape[0], ==, K / 8);
  g_assert_cmpint (qw->shape[1], ==, N);
  g_assert_cmpint (qz->shape[0], ==, G);
  g_assert_cmpint (qz->shape[1], ==, N / 8);
  g_assert_cmpint (sc->dtype, ==, LP_DTYPE_F16);
  const guint32 *w = lp_tensor_data (qw), *z = lp_tensor_data (qz);
  const guint16 *s = lp_tensor_data (sc);
  const gint32 *idx = lp_tensor_data (gi);
  gboolean permuted = FALSE;
  for (gint64 n = 0; n < N; n++)
    for (gint64 k = 0; k < K; k++)
      {
        g_assert_cmpuint ((w[(k / 8) * N + n] >> (4 * (k % 8))) & 15, ==, g->codes[n * K + k]);
        permuted |= idx[k] != k / 64;
      }
  g_assert_true (permuted);
  for (gint64 q = 0; q < G; q++)
    for (gint64 n = 0; n < N; n++)
      {
        g_assert_cmpuint (((z[q * (N / 8) + n / 8] >> (4 * (n % 8))) & 15) + 1, ==, g->zeros[n * G + q]);
        g_assert_cmpuint (s[q * N + n], ==, g->scales[n * G + q]);
      }
}

/* Layers whose sizes GPTQ's packing cannot hold (the demo model's FFN, 172
 * wide) go out dense, and quantization_config lists the modules that are
 * quantized; the directory still reads back to the same model. */
static void
test_gptq_safetensors_partial (void)
{
  g_autofree char *err = NULL;
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *eval = g_strdup_printf ("eval data=%s ctx=128 max_windows=4", text);
  const char *nodes[] = { "quantize.gptq bits=3 group_size=32", eval, "save format=safetensors path=hf", NULL };
  g_assert_cmpint (run_nodes (&err, nodes), ==, 0);
  const char *out = tmp_path ("nodes");
  g_autofree char *dir = g_build_filename (out, "hf", NULL);
  g_autofree char *reload = g_strdup_printf ("[load]\npath=%s\n[e]\npass=eval\ndata=%s\nctx=128\nmax_windows=4\n", dir, text);
  g_assert_cmpfloat (metric (out, "n1", "perplexity"), ==, metric (run_text ("partial-reload", reload), "e", "perplexity"));
  g_autofree char *cfg = NULL;
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_assert_true (g_file_get_contents (cfg_path, &cfg, NULL, NULL));
  g_assert_nonnull (strstr (cfg, "\"modules_in_block_to_quantize\""));
  g_assert_nonnull (strstr (cfg, "\"self_attn.o_proj\""));
  g_assert_null (strstr (cfg, "\"mlp.down_proj\""));
  /* convert reads the directory (dense FFN, GPTQ attention) and writes it
   * again the same way. */
  g_autofree char *dir2 = g_build_filename (out, "hf-converted", NULL);
  g_autofree char *o = NULL, *e = NULL;
  g_assert_cmpint (lp_test_run_cli (&o, &e, "convert", dir, dir2, "--format", "hf", NULL), ==, 0);
  g_autofree char *cfg2 = NULL;
  g_autofree char *cfg2_path = g_build_filename (dir2, "config.json", NULL);
  g_assert_true (g_file_get_contents (cfg2_path, &cfg2, NULL, NULL));
  g_assert_nonnull (strstr (cfg2, "\"modules_in_block_to_quantize\""));
  g_autofree char *reload2 = g_strdup_printf ("[load]\npath=%s\n[e]\npass=eval\ndata=%s\nctx=128\nmax_windows=4\n", dir2, text);
  g_assert_cmpfloat (metric (out, "n1", "perplexity"), ==, metric (run_text ("converted-reload", reload2), "e", "perplexity"));
}

/* compressed-tensors pack-quantized (llm-compressor, vLLM): the same GPTQ
 * layers written as weight_packed / weight_scale / weight_zero_point /
 * weight_shape / weight_g_idx, checked against the layout formula, read back
 * to the same model; a symmetric 8-bit grid has no zero points; a format
 * other than pack-quantized is refused. */
static void
test_compressed_tensors (void)
{
  const char *model = wide_model ();
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *spec = g_strdup_printf (
    "[pipeline]\ncalibration=%s\ncalibration_samples=4\ncalibration_seq_len=128\n[load]\npath=%s\n"
    "[q]\npass=quantize.gptq\nbits=4\ngroup_size=64\nact_order=true\n"
    "[e]\npass=eval\ninput=q\ndata=%s\nctx=128\nmax_windows=4\n"
    "[s]\npass=save\ninput=q\nformat=safetensors\nquant_format=compressed-tensors\npath=ct\n",
    text, model, text);
  const char *out = run_text ("ct", spec);
  g_autofree char *dir = g_build_filename (out, "ct", NULL);
  g_autofree char *reload = g_strdup_printf ("[load]\npath=%s\n[e]\npass=eval\ndata=%s\nctx=128\nmax_windows=4\n", dir, text);
  g_assert_cmpfloat (metric (out, "e", "perplexity"), ==, metric (run_text ("ct-reload", reload), "e", "perplexity"));

  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_assert_true (json_parser_load_from_file (parser, cfg_path, NULL));
  JsonObject *qc = json_object_get_object_member (json_node_get_object (json_parser_get_root (parser)), "quantization_config");
  g_assert_cmpstr (json_object_get_string_member (qc, "quant_method"), ==, "compressed-tensors");
  g_assert_cmpstr (json_object_get_string_member (qc, "format"), ==, "pack-quantized");
  JsonObject *w = json_object_get_object_member (
    json_object_get_object_member (json_object_get_object_member (qc, "config_groups"), "group_0"), "weights");
  g_assert_cmpint (json_object_get_int_member (w, "num_bits"), ==, 4);
  g_assert_cmpint (json_object_get_int_member (w, "group_size"), ==, 64);
  g_assert_cmpstr (json_object_get_string_member (w, "strategy"), ==, "group");
  g_assert_cmpstr (json_object_get_string_member (w, "actorder"), ==, "group");
  g_assert_false (json_object_get_boolean_member (w, "symmetric"));

  /* v_proj: weight_packed[n, k / 8] holds code (n, k) at bits 4 (k % 8);
   * weight_zero_point[n / 8, g] the zero point at bits 4 (n % 8). */
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (dir, NULL, &error);
  g_assert_no_error (error);
  const LpIntGrid *g = lp_tensor_int_grid (lp_model_tensor (m, "blk.0.attn_v.weight"));
  g_assert_nonnull (g);
  g_autofree char *st_path = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  const char *pre = "model.layers.0.self_attn.v_proj.";
  LpTensor *part[5];
  const char *suffix[5] = { "weight_packed", "weight_zero_point", "weight_scale", "weight_shape", "weight_g_idx" };
  for (int i = 0; i < 5; i++)
    {
      g_autofree char *name = g_strconcat (pre, suffix[i], NULL);
      part[i] = lp_safetensors_tensor (st, name);
      g_assert_nonnull (part[i]);
    }
  gint64 N = g->rows, K = g->cols, G = g->n_groups;
  g_assert_cmpint (part[0]->dtype, ==, LP_DTYPE_I32);
  g_assert_cmpint (part[0]->shape[0], ==, N);
  g_assert_cmpint (part[0]->shape[1], ==, (K + 7) / 8);
  g_assert_cmpint (part[1]->shape[0], ==, (N + 7) / 8);
  g_assert_cmpint (part[1]->shape[1], ==, G);
  g_assert_cmpint (part[2]->dtype, ==, LP_DTYPE_F16);
  const gint64 *shape = lp_tensor_data (part[3]);
  g_assert_cmpint (shape[0], ==, N);
  g_assert_cmpint (shape[1], ==, K);
  const guint32 *pw = lp_tensor_data (part[0]), *zw = lp_tensor_data (part[1]);
  const guint16 *sc = lp_tensor_data (part[2]);
  const gint32 *idx = lp_tensor_data (part[4]);
  for (gint64 n = 0; n < N; n++)
    {
      for (gint64 k = 0; k < K; k++)
        {
          g_assert_cmpuint ((pw[n * ((K + 7) / 8) + k / 8] >> (4 * (k % 8))) & 15, ==, g->codes[n * K + k]);
          g_assert_cmpint (idx[k], ==, g->g_idx[k]);
        }
      for (gint64 q = 0; q < G; q++)
        {
          g_assert_cmpuint ((zw[(n / 8) * G + q] >> (4 * (n % 8))) & 15, ==, g->zeros[n * G + q]);
          g_assert_cmpuint (sc[n * G + q], ==, g->scales[n * G + q]);
        }
    }

  /* Symmetric 8 bits with a short last group (the demo model's 172-wide
   * FFN packs too, rows padded): no zero points, and GPTQ -> compressed-
   * tensors by convert keeps the model. */
  g_autofree char *err = NULL;
  g_autofree char *eval = g_strdup_printf ("eval data=%s ctx=128 max_windows=4", text);
  const char *nodes[] = { "quantize.rtn bits=8 group_size=32 symmetric=true", eval,
                          "save format=safetensors quant_format=compressed-tensors path=ct8", NULL };
  g_assert_cmpint (run_nodes (&err, nodes), ==, 0);
  const char *out8 = tmp_path ("nodes");
  g_autofree char *dir8 = g_build_filename (out8, "ct8", NULL);
  g_autofree char *reload8 = g_strdup_printf ("[load]\npath=%s\n[e]\npass=eval\ndata=%s\nctx=128\nmax_windows=4\n", dir8, text);
  g_assert_cmpfloat (metric (out8, "n1", "perplexity"), ==, metric (run_text ("ct8-reload", reload8), "e", "perplexity"));
  g_autoptr (LpModel) m8 = lp_model_load (dir8, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (lp_tensor_int_grid (lp_model_tensor (m8, "blk.0.ffn_down.weight")));
  g_autofree char *st8_path = g_build_filename (dir8, "model.safetensors", NULL);
  g_autoptr (LpSafetensors) st8 = lp_safetensors_open (st8_path, &error);
  g_assert_no_error (error);
  g_assert_null (lp_safetensors_tensor (st8, "model.layers.0.mlp.down_proj.weight_zero_point"));
  g_assert_nonnull (lp_safetensors_tensor (st8, "model.layers.0.mlp.down_proj.weight_packed"));

  g_autofree char *gptq_dir = g_build_filename (out, "ct-as-gptq", NULL);
  g_autofree char *back = g_build_filename (out, "gptq-as-ct", NULL);
  g_autofree char *o = NULL, *e = NULL;
  g_assert_cmpint (lp_test_run_cli (&o, &e, "convert", dir, gptq_dir, "--format", "hf", NULL), ==, 0);
  g_clear_pointer (&o, g_free);
  g_clear_pointer (&e, g_free);
  g_assert_cmpint (lp_test_run_cli (&o, &e, "convert", gptq_dir, back, "--format", "hf", "--quant-format",
                                    "compressed-tensors", NULL), ==, 0);
  g_autofree char *reload_back = g_strdup_printf ("[load]\npath=%s\n[e]\npass=eval\ndata=%s\nctx=128\nmax_windows=4\n", back, text);
  g_assert_cmpfloat (metric (out, "e", "perplexity"), ==, metric (run_text ("ct-back", reload_back), "e", "perplexity"));

  /* Another compressed-tensors format is refused with the key and the value. */
  g_autofree char *cfg = NULL;
  g_assert_true (g_file_get_contents (cfg_path, &cfg, NULL, NULL));
  GString *bad = g_string_new (cfg);
  g_assert_cmpuint (g_string_replace (bad, "pack-quantized", "float-quantized", 0), ==, 1);
  g_assert_true (g_file_set_contents (cfg_path, bad->str, -1, NULL));
  g_string_free (bad, TRUE);
  g_autoptr (LpModel) none = lp_model_load (dir, NULL, &error);
  g_assert_null (none);
  lp_test_assert_error_contains (error, "config.json", "quantization_config", "pack-quantized", "float-quantized", NULL);
  g_clear_pointer (&o, g_free);
  g_clear_pointer (&e, g_free);
  g_assert_cmpint (lp_test_run_cli (&o, &e, "convert", dir, back, "--quant-format", "int4", NULL), ==, 2);
}

/* overrides= gives tensors by pattern their own grid. */
static void
test_overrides (void)
{
  g_autofree char *err = NULL;
  const char *nodes[] = { "quantize.rtn overrides=attn_v=q8_0,blk.1.ffn_gate.weight=q4_0,ffn_up=q5_1", "eval", NULL };
  g_assert_cmpint (run_nodes (&err, nodes), ==, 0);
  const char *out = tmp_path ("nodes");
  g_assert_cmpfloat (metric (out, "n1", "tensors.q8_0"), ==, 2);
  g_assert_cmpfloat (metric (out, "n1", "tensors.q4_0"), ==, 1);
  g_assert_cmpfloat (metric (out, "n1", "tensors.q5_1"), ==, 2);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* test.mask lives in the test plugins. */
  g_autofree char *plugins = g_strdup_printf ("%s:%s", g_getenv ("LLMPRESS_PLUGIN_PATH"), g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", plugins, TRUE);
  g_test_add_func ("/quantize/stories/rtn-gptq-awq", test_stories_spec);
  g_test_add_func ("/quantize/stories/q4_k-same-size", test_q4k_same_size);
  g_test_add_func ("/quantize/stories/variants", test_stories_variants);
  g_test_add_func ("/quantize/stories/target-bpw", test_stories_target_bpw);
  g_test_add_func ("/quantize/overrides", test_overrides);
  g_test_add_func ("/quantize/int-grid", test_int_grid);
  g_test_add_func ("/quantize/gptq-safetensors", test_gptq_safetensors);
  g_test_add_func ("/quantize/gptq-safetensors-partial", test_gptq_safetensors_partial);
  g_test_add_func ("/quantize/compressed-tensors", test_compressed_tensors);
  g_test_add_func ("/quantize/block-types-roundtrip", test_block_types_roundtrip);
  g_test_add_func ("/quantize/bad-input", test_bad_input);
  g_test_add_func ("/quantize/requantize-allowed", test_requantize_allowed);
  g_test_add_func ("/quantize/nan-weight", test_nan_weight);
  g_test_add_func ("/quantize/odd-groups-reported", test_odd_groups_reported);
  g_test_add_func ("/quantize/mask-kept", test_mask_kept);
  return g_test_run ();
}
