/* Spec language: every validation error with file:line, the offending text
 * and a hint; the inline form builds the same graph as the INI form;
 * -D variables. */
#include "config.h"

#include <string.h>

#include "testutil.h"
#include "graph.h"

static LpRegistry *reg;

static LpGraph *
parse (const char *text, GHashTable *vars, GError **error)
{
  return lp_graph_parse_ini (text, -1, "t.ini", reg, vars, error);
}

/* Parse text; it must fail with every fragment in the message. */
#define assert_invalid(text, ...)                                 \
  G_STMT_START                                                    \
  {                                                               \
    g_autoptr (GError) e_ = NULL;                                 \
    g_autoptr (LpGraph) g_ = parse (text, NULL, &e_);             \
    g_assert_null (g_);                                           \
    g_test_message ("%s", e_ ? e_->message : "(none)");           \
    lp_test_assert_error_contains (e_, __VA_ARGS__, NULL);        \
  }                                                               \
  G_STMT_END

static void
test_valid (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpGraph) g = parse ("# comment\n[pipeline]\ndescription=d\nseed=7\n\n[load]\npath=m.gguf\n"
                                 "[eval]\ntargets=blk.*.ffn_*, output.weight\n[save]\npath=o.gguf\n",
                                 NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_graph_n_nodes (g), ==, 3);
  g_assert_cmpuint (lp_graph_settings (g)->seed, ==, 7);
  /* save's default input skips eval (metrics) to the model above it. */
  LpNode *save = lp_graph_find (g, "save");
  g_assert_cmpuint (save->inputs->len, ==, 1);
  g_assert_cmpstr (((LpNodeInput *) save->inputs->pdata[0])->source->name, ==, "load");
  const LpTensorPattern *p = lp_param_value_get_tensors (lp_node_param (lp_graph_find (g, "eval"), "targets"));
  g_assert_true (lp_tensor_pattern_match (p, "blk.3.ffn_up.weight"));
  g_assert_true (lp_tensor_pattern_match (p, "output.weight"));
  g_assert_false (lp_tensor_pattern_match (p, "blk.3.attn_q.weight"));
  g_assert_cmpstr (lp_tensor_pattern_text (p), ==, "blk.*.ffn_*,output.weight");
}

static void
test_unknown_pass (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[x]\npass=evl\n", "t.ini:4:", "pass=evl", "unknown pass 'evl'",
                  "did you mean 'eval'?");
  assert_invalid ("[lod]\npath=m\n", "t.ini:1:", "[lod]", "not a pass name", "did you mean 'load'?", "hint");
}

static void
test_unknown_param (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[eval]\ntarget=blk.*\n", "t.ini:4:", "target=blk.*",
                  "has no parameter 'target'", "did you mean 'targets'?");
}

static void
test_wrong_type (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[s]\npass=test.scale\nfactor=big\n", "t.ini:5:", "factor=big",
                  "expected a number in [-1000, 1000], found 'big'", "hint");
  assert_invalid ("[load]\npath=m.gguf\n[save]\npath=o.gguf\nformat=ggml\n", "t.ini:5:", "format=ggml",
                  "expected one of auto, gguf, safetensors, llama2c", "did you mean 'gguf'?");
}

static void
test_out_of_range (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[s]\npass=test.scale\n\nsleep_ms=-5\n", "t.ini:6:", "sleep_ms=-5",
                  "expected an integer in [0, 60000], found -5", "hint");
}

static void
test_missing_input (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[save]\ninput=lode\npath=o.gguf\n", "t.ini:4:", "input=lode",
                  "missing input: no node named 'lode'", "did you mean 'load'?");
  assert_invalid ("[eval]\n[load]\npath=m\n", "t.ini:1:", "[eval]", "missing input", "hint: add input=NODE");
  assert_invalid ("[load]\npath=m.gguf\n[m]\npass=eval\n[save]\ninput=m\npath=o.gguf\n", "t.ini:6:", "input=m",
                  "node m produces metrics, input 'input' takes a model", "hint");
  assert_invalid ("[load]\n", "t.ini:1:", "missing required parameter 'path'", "hint: add path=PATH");
}

static void
test_cycle (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[a]\npass=test.scale\ninput=b\n[b]\npass=test.scale\ninput=a\n",
                  "t.ini:", "cycle: ", "a -> b", "hint");
  assert_invalid ("[load]\npath=m\n[a]\npass=test.scale\ninput=a\n", "t.ini:5:", "input=a", "cycle", "hint");
}

static void
test_same_sink (void)
{
  assert_invalid ("[load]\npath=m.gguf\n[s1]\npass=save\npath=out.gguf\n[s2]\npass=save\ninput=load\npath=./out.gguf\n",
                  "t.ini:6:", "[s2] path=./out.gguf", "two sinks write the same path", "[s1] (t.ini:3)",
                  "hint");
}

static void
test_variables (void)
{
  assert_invalid ("[load]\npath=${model}\n", "t.ini:2:", "path=${model}", "variable 'model' is never defined",
                  "-D model=VALUE");
  g_autoptr (GHashTable) vars = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (vars, "model", "/x/m.gguf");
  g_autoptr (GError) error = NULL;
  g_autoptr (LpGraph) g = parse ("[load]\npath=${model}\n[save]\npath=${out:-dflt.gguf}\nformat=$${x}\n", vars, &error);
  g_assert_null (g); /* "${x}" literal is not a format */
  lp_test_assert_error_contains (error, "t.ini:5:", "found '${x}'", NULL);
  g_clear_error (&error);
  g_autoptr (LpGraph) g2 = parse ("[load]\npath=${model}\n[save]\npath=${out:-dflt.gguf}\n", vars, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (g2, "load"), "path")), ==, "/x/m.gguf");
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (g2, "save"), "path")), ==, "dflt.gguf");
  /* A default may name another variable (default.ini: calibration=${calib:-${data}}),
   * and an enum's value is taken in any case, held in the table's spelling. */
  g_autoptr (LpGraph) g3 = parse ("[load]\npath=${m:-${model}}\n[save]\npath=${out:-${o:-x}.gguf}\nformat=GGUF\n", vars,
                                  &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (g3, "load"), "path")), ==, "/x/m.gguf");
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (g3, "save"), "path")), ==, "x.gguf");
  g_assert_cmpstr (lp_param_value_canonical (lp_node_param (lp_graph_find (g3, "save"), "format")), ==, "gguf");
  assert_invalid ("[load]\npath=${m:-${model\n", "t.ini:2:", "unterminated '${'", NULL);
}

static void
test_syntax (void)
{
  assert_invalid ("[load]\npath=m\nthis is not ini\n", "t.ini:3:", "'this is not ini'", "expected [node], key=value", "hint");
  assert_invalid ("[load]\npath=m\n[load]\npath=n\n", "t.ini:3:", "duplicate node name", "first at t.ini:1");
  assert_invalid ("[pipeline]\nsed=1\n[load]\npath=m\n", "t.ini:2:", "unknown setting 'sed'", "did you mean 'seed'?");
  assert_invalid ("[load]\npath=m\npath=n\n", "t.ini:3:", "'path' is given twice", "hint");
  assert_invalid ("[load]\ninput=x\npath=m\n", "t.ini:2:", "takes no input", "hint");
}

static void
test_all_errors_reported (void)
{
  g_autoptr (GError) e = NULL;
  g_autoptr (LpGraph) g = parse ("[load]\npath=m\n[eval]\ntarget=x\n[s]\npass=test.scale\nfactor=x\n", NULL, &e);
  g_assert_null (g);
  g_auto (GStrv) lines = g_strsplit (e->message, "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), ==, 2);
  g_assert_true (g_str_has_prefix (lines[0], "t.ini:4:"));
  g_assert_true (g_str_has_prefix (lines[1], "t.ini:7:"));
}

static void
test_inline_equals_ini (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpGraph) a = lp_graph_parse_inline (
    "load path=m.gguf ! test.scale factor=0.5 ! eval reference=load ! save path='out dir/o.gguf'", reg, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpGraph) b = parse ("[load]\npath=m.gguf\n[test.scale]\nfactor=0.5\n[eval]\nreference=load\n"
                                 "[save]\npath=out dir/o.gguf\n",
                                 NULL, &error);
  g_assert_no_error (error);
  g_autofree char *da = lp_graph_to_dot (a);
  g_autofree char *db = lp_graph_to_dot (b);
  g_assert_cmpstr (da, ==, db);
  g_assert_nonnull (strstr (da, "\"load\" -> \"eval\" [label=\"reference\"]"));
  g_assert_nonnull (strstr (da, "\"test.scale\" -> \"save\""));
  /* Errors in the inline form point at the column. */
  g_autoptr (LpGraph) c = lp_graph_parse_inline ("load path=m ! evl", reg, NULL, &error);
  g_assert_null (c);
  lp_test_assert_error_contains (error, "<pipeline>:1:15:", "unknown pass 'evl'", "did you mean 'eval'?", NULL);
  g_clear_error (&error);
  /* Repeated passes get numbered names; NAME:PASS names one. */
  g_autoptr (LpGraph) d = lp_graph_parse_inline ("load path=m ! save path=a ! big:save input=load path=b", reg, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (lp_graph_find (d, "big"));
}

static void
test_cli_validate (void)
{
  g_autofree char *spec = lp_test_write_file ("bad.ini", "[load]\npath=${model}\n[eval]\nsparsity=0.5\n", 40);
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "validate", spec, NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 1);
  g_autofree char *l2 = g_strdup_printf ("%s:2:", spec);
  g_autofree char *l4 = g_strdup_printf ("%s:4:", spec);
  g_assert_nonnull (strstr (err, l2));
  g_assert_nonnull (strstr (err, l4));
  g_assert_nonnull (strstr (err, "2 problems found"));
  const char *ok[] = { "validate", spec, "-D", "model=m.gguf", NULL };
  g_autofree char *out2 = NULL, *err2 = NULL;
  g_assert_cmpint (lp_test_run_cliv (&out2, &err2, ok), ==, 1); /* sparsity is still wrong */
  g_assert_nonnull (strstr (err2, "1 problem found"));
}

/* Names of the graph's nodes, in order, joined by spaces. */
static char *
node_names (LpGraph *g)
{
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < lp_graph_n_nodes (g); i++)
    g_string_append_printf (s, "%s%s", i ? " " : "", lp_graph_node (g, i)->name);
  return g_string_free (s, FALSE);
}

static const char *
input_name (LpGraph *g, const char *node, guint i)
{
  LpNode *n = lp_graph_find (g, node);
  g_assert_nonnull (n);
  return ((LpNodeInput *) n->inputs->pdata[i])->source->name;
}

/* factor=0.5,2 fans the node out, and every node below it; a string or
 * tensor list keeps its commas. */
static void
test_sweep_fanout (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpGraph) g = parse ("[load]\npath=m.gguf\n[s]\npass=test.scale\nfactor=0.5, 2\ntargets=blk.*,output.weight\n"
                                 "note=a,b\n[eval]\nreference=load\n[save]\npath=out/s.gguf\n",
                                 NULL, &error);
  g_assert_no_error (error);
  g_autofree char *names = node_names (g);
  g_assert_cmpstr (names, ==, "load s[factor=0.5] s[factor=2] eval[factor=0.5] eval[factor=2] save[factor=0.5] save[factor=2]");
  g_assert_cmpfloat (lp_param_value_get_float (lp_node_param (lp_graph_find (g, "s[factor=2]"), "factor")), ==, 2.0);
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (g, "s[factor=2]"), "note")), ==, "a,b");
  g_assert_cmpstr (lp_tensor_pattern_text (lp_param_value_get_tensors (lp_node_param (lp_graph_find (g, "s[factor=2]"), "targets"))),
                   ==, "blk.*,output.weight");
  g_assert_cmpstr (input_name (g, "eval[factor=2]", 0), ==, "s[factor=2]");
  g_assert_cmpstr (input_name (g, "eval[factor=2]", 1), ==, "load");
  g_assert_cmpstr (input_name (g, "save[factor=0.5]", 0), ==, "s[factor=0.5]");
  /* Each branch of a sink writes its own file. */
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (g, "save[factor=0.5]"), "path")), ==,
                   "out/s.factor=0.5.gguf");
  g_assert_cmpuint (lp_graph_find (g, "load")->consumers->len, ==, 4);
  /* The inline form sweeps the same way. */
  g_autoptr (LpGraph) i = lp_graph_parse_inline ("load path=m.gguf ! s:test.scale factor=0.5,2 targets=blk.*,output.weight note=a,b "
                                                 "! eval reference=load ! save path=out/s.gguf", reg, NULL, &error);
  g_assert_no_error (error);
  g_autofree char *da = lp_graph_to_dot (g), *db = lp_graph_to_dot (i);
  g_assert_cmpstr (da, ==, db);
}

/* A sweep below a sweep multiplies; two sweeps read by one node cross;
 * the same sweep reached by two paths stays one. */
static void
test_sweep_chained (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpGraph) g = parse ("[load]\npath=m.gguf\n[a]\npass=test.scale\nfactor=1,2\n"
                                 "[b]\npass=test.scale\ninput=a\nsleep_ms=0,1,2\n[eval]\ninput=b\nreference=a\n",
                                 NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_graph_n_nodes (g), ==, 1 + 2 + 6 + 6);
  g_assert_nonnull (lp_graph_find (g, "b[factor=2,sleep_ms=1]"));
  /* eval reads b and a: the branches agree on factor. */
  g_assert_cmpstr (input_name (g, "eval[factor=2,sleep_ms=1]", 0), ==, "b[factor=2,sleep_ms=1]");
  g_assert_cmpstr (input_name (g, "eval[factor=2,sleep_ms=1]", 1), ==, "a[factor=2]");
  g_autoptr (GPtrArray) order = lp_graph_topo_order (g);
  g_assert_cmpuint (order->len, ==, lp_graph_n_nodes (g));

  /* Two independent sweeps read by one node: the cross product, and a
   * parameter name both share is qualified by its node. */
  g_autoptr (LpGraph) x = parse ("[load]\npath=m.gguf\n[a]\npass=test.scale\nfactor=1,2\n"
                                 "[b]\npass=test.scale\ninput=load\nfactor=3,4\n[eval]\ninput=a\nreference=b\n",
                                 NULL, &error);
  g_assert_no_error (error);
  g_autofree char *names = node_names (x);
  g_assert_cmpstr (names, ==, "load a[factor=1] a[factor=2] b[factor=3] b[factor=4] "
                              "eval[a.factor=1,b.factor=3] eval[a.factor=1,b.factor=4] "
                              "eval[a.factor=2,b.factor=3] eval[a.factor=2,b.factor=4]");
  g_assert_cmpstr (input_name (x, "eval[a.factor=2,b.factor=3]", 0), ==, "a[factor=2]");
  g_assert_cmpstr (input_name (x, "eval[a.factor=2,b.factor=3]", 1), ==, "b[factor=3]");

  /* input=NODE[...] reads one branch: no fan-out from it. */
  g_autoptr (LpGraph) s = parse ("[load]\npath=m.gguf\n[a]\npass=test.scale\nfactor=1,2\n"
                                 "[eval]\ninput=a\nreference=a[factor=1]\n[save]\ninput=a[factor=2.0]\npath=x.gguf\n",
                                 NULL, &error);
  g_assert_no_error (error);
  g_autofree char *snames = node_names (s);
  g_assert_cmpstr (snames, ==, "load a[factor=1] a[factor=2] eval[factor=1] eval[factor=2] save");
  g_assert_cmpstr (input_name (s, "eval[factor=2]", 1), ==, "a[factor=1]");
  g_assert_cmpstr (input_name (s, "save", 0), ==, "a[factor=2]");
  g_assert_cmpstr (lp_param_value_get_string (lp_node_param (lp_graph_find (s, "save"), "path")), ==, "x.gguf");

  /* A float names its branch by its shortest text, and the branch holds
   * the same double a plain factor=2.8 gives. */
  g_autoptr (LpGraph) f = parse ("[load]\npath=m.gguf\n[a]\npass=test.scale\nfactor=0.1,2.8\n", NULL, &error);
  g_assert_no_error (error);
  g_autofree char *fnames = node_names (f);
  g_assert_cmpstr (fnames, ==, "load a[factor=0.1] a[factor=2.8]");
  g_assert_cmpfloat (lp_param_value_get_float (lp_node_param (lp_graph_find (f, "a[factor=2.8]"), "factor")), ==, 2.8);
}

/* select gathers: one node reading every branch of its input, and by= the
 * branch that agrees with each, in the same order; nothing below fans
 * out.  Inputs that sweep other lists cannot be paired: an error. */
static void
test_sweep_gather (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpGraph) g = parse ("[load]\npath=m.gguf\n[a]\npass=test.scale\nfactor=1,2\n"
                                 "[b]\npass=test.scale\ninput=a\nsleep_ms=0,1\n[e]\npass=eval\ninput=b\n"
                                 "[best]\npass=select\ninput=b\nby=e\n[save]\npath=x.gguf\n", NULL, &error);
  g_assert_no_error (error);
  g_autofree char *names = node_names (g);
  g_assert_cmpstr (names, ==, "load a[factor=1] a[factor=2] b[factor=1,sleep_ms=0] b[factor=1,sleep_ms=1] "
                              "b[factor=2,sleep_ms=0] b[factor=2,sleep_ms=1] e[factor=1,sleep_ms=0] "
                              "e[factor=1,sleep_ms=1] e[factor=2,sleep_ms=0] e[factor=2,sleep_ms=1] best save");
  LpNode *best = lp_graph_find (g, "best");
  g_assert_cmpuint (best->inputs->len, ==, 8);
  for (guint i = 0; i < 4; i++)
    {
      const char *in = input_name (g, "best", i), *by = input_name (g, "best", 4 + i);
      g_assert_true (g_str_has_prefix (in, "b[") && g_str_has_prefix (by, "e["));
      g_assert_cmpstr (in + 1, ==, by + 1);
      g_assert_cmpstr (((LpNodeInput *) best->inputs->pdata[4 + i])->spec->name, ==, "by");
    }
  g_assert_cmpstr (input_name (g, "save", 0), ==, "best");
  /* by= sweeps a list input= does not: two branches agree with each. */
  assert_invalid ("[load]\npath=m\n[a]\npass=test.scale\nfactor=1,2\n[e]\npass=eval\ninput=a\nmax_windows=1,2\n"
                  "[best]\npass=select\ninput=a\nby=e\n", "t.ini:13:", "[best] by=e", "expected one branch of e for "
                  "a[factor=1], found 2");
}

static void
test_sweep_errors (void)
{
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nfactor=1,,2\n", "t.ini:5:", "[s] factor=1,,2",
                  "item 2 of the list is empty");
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nfactor=1,x,2\n", "t.ini:5:", "item 2 'x'", "expected a number");
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nfactor=1,2000\n", "t.ini:5:", "item 2 '2000'",
                  "in [-1000, 1000]");
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nfactor=1,1.0\n", "t.ini:5:", "item 2 '1.0' repeats item 1");
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nfactor=1,2\n[eval]\ninput=s[factor=3]\n", "t.ini:7:",
                  "input=s[factor=3]", "node s has no branch [factor=3]", "s[factor=1], s[factor=2]");
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nfactor=1,2\n[eval]\ninput=load[factor=1]\n", "t.ini:7:",
                  "node load has no branch");
  /* A list where a list is not a value: a path keeps its comma, an int
   * with a bad item says which. */
  assert_invalid ("[load]\npath=m\n[s]\npass=test.scale\nsleep_ms=1,2.5\n", "t.ini:5:", "item 2 '2.5'", "expected an integer");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autofree char *path = g_strdup_printf ("%s:%s", g_getenv ("LLMPRESS_PLUGIN_PATH"), g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", path, TRUE);
  reg = lp_registry_new ();
  lp_registry_load_default (reg);
  g_test_add_func ("/spec/valid", test_valid);
  g_test_add_func ("/spec/error/unknown-pass", test_unknown_pass);
  g_test_add_func ("/spec/error/unknown-param", test_unknown_param);
  g_test_add_func ("/spec/error/wrong-type", test_wrong_type);
  g_test_add_func ("/spec/error/out-of-range", test_out_of_range);
  g_test_add_func ("/spec/error/missing-input", test_missing_input);
  g_test_add_func ("/spec/error/cycle", test_cycle);
  g_test_add_func ("/spec/error/same-sink", test_same_sink);
  g_test_add_func ("/spec/error/variables", test_variables);
  g_test_add_func ("/spec/error/syntax", test_syntax);
  g_test_add_func ("/spec/error/all-reported", test_all_errors_reported);
  g_test_add_func ("/spec/inline", test_inline_equals_ini);
  g_test_add_func ("/spec/cli-validate", test_cli_validate);
  g_test_add_func ("/spec/sweep/fan-out", test_sweep_fanout);
  g_test_add_func ("/spec/sweep/chained", test_sweep_chained);
  g_test_add_func ("/spec/sweep/errors", test_sweep_errors);
  g_test_add_func ("/spec/sweep/gather", test_sweep_gather);
  int status = g_test_run ();
  lp_registry_free (reg);
  return status;
}
