/* Every spec in specs/ validates and runs on the demo model. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "testutil.h"

static void
test_spec (gconstpointer data)
{
  const char *spec = data;
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *def = g_strdup_printf ("model=%s", model);
  /* Evaluation and calibration text for the demo model: the specs' own README. */
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *data_def = g_strdup_printf ("data=%s", text);
  g_autofree char *calib = g_strdup_printf ("calib=%s", text);
  g_autofree char *base = g_path_get_basename (spec);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), base, NULL);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "cache", NULL);
  g_autofree char *o = NULL, *e = NULL;
  /* The specs' TinyStories token ranges and sample counts do not fit a small text: all of it, fewer samples
   * (and fewer held out and training steps for distill.recover, adapters too); frontier.ini sweeps 4 bits
   * only (card.ini's default too), groups of 32 and one bit budget; rotate-select.ini two Hadamard draws. */
  const char *validate[] = { "validate", spec, "-D", def, "-D", data_def, "-D", calib, "-D", "calib_range=:", "-D", "calib_samples=8",
                             "-D", "eval_range=:", "-D", "holdout=2", "-D", "steps=3", "-D", "adapter_steps=3",
                             "-D", "bits=4", "-D", "groups=32", "-D", "budgets=304096", "-D", "kinds=hadamard", "-D", "seeds=0,1", NULL };
  g_assert_cmpint (lp_test_run_cliv (&o, &e, validate), ==, 0);
  g_assert_nonnull (strstr (o, "valid"));
  g_autofree char *o2 = NULL, *e2 = NULL;
  const char *run[] = { "run", spec, "-D", def, "-D", data_def, "-D", calib, "-D", "calib_range=:", "-D", "calib_samples=8", "-D", "eval_range=:",
                        "-D", "holdout=2", "-D", "steps=3", "-D", "adapter_steps=3",
                             "-D", "bits=4", "-D", "groups=32", "-D", "budgets=304096", "-D", "kinds=hadamard", "-D", "seeds=0,1", "-o", out, "--cache-dir", cache, "-q", NULL };
  int status = lp_test_run_cliv (&o2, &e2, run);
  if (status != 0)
    g_test_message ("%s", e2);
  g_assert_cmpint (status, ==, 0);
  g_autofree char *report = g_build_filename (out, "report.json", NULL);
  g_assert_true (g_file_test (report, G_FILE_TEST_IS_REGULAR));
  /* Every spec evaluates something: llmpress report draws it. */
  g_autofree char *o4 = NULL, *e4 = NULL;
  const char *draw[] = { "report", out, NULL };
  if (g_str_has_suffix (spec, "f16.ini"))
    {
      /* Its eval has no data=: sizes only, so nothing to draw, said in one line. */
      g_assert_cmpint (lp_test_run_cliv (&o4, &e4, draw), ==, 1);
      g_assert_nonnull (strstr (e4, "no node measured a perplexity"));
    }
  else
    {
      g_assert_cmpint (lp_test_run_cliv (&o4, &e4, draw), ==, 0);
      g_assert_nonnull (strstr (o4, "best at <= 3.2 bits/weight"));
      g_autofree char *frontier = g_build_filename (out, "frontier.svg", NULL);
      g_assert_true (g_file_test (frontier, G_FILE_TEST_IS_REGULAR));
    }
  g_autofree char *o3 = NULL;
  const char *graph[] = { "graph", spec, "-D", def, "-D", data_def, "-D", calib, "-D", "calib_range=:", "-D", "calib_samples=8",
                          "-D", "eval_range=:", "-D", "holdout=2", "-D", "steps=3", "-D", "adapter_steps=3",
                             "-D", "bits=4", "-D", "groups=32", "-D", "budgets=304096", "-D", "kinds=hadamard", "-D", "seeds=0,1", NULL };
  g_assert_cmpint (lp_test_run_cliv (&o3, NULL, graph), ==, 0);
  g_assert_true (g_str_has_prefix (o3, "digraph"));
}

/* The quick-start spec, unchanged, on the Vulkan device (lavapipe in CI,
 * under the validation layer: any error it reports aborts the run) and on
 * the CPU: the same perplexity on stories260K within 1e-3.  Few windows:
 * lavapipe runs the forward pass a hundred times slower than OpenBLAS. */
static void
test_default_on_vulkan (void)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *data = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || data == NULL || !lp_test_have_vulkan ())
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "default.ini", NULL);
  g_autofree char *mdef = g_strdup_printf ("model=%s", model), *ddef = g_strdup_printf ("data=%s", data);
  double ppl[2];
  const char *backends[2] = { "cpu", "vulkan" };
  g_setenv ("LLMPRESS_VULKAN_VALIDATION", "1", TRUE);
  for (int b = 0; b < 2; b++)
    {
      g_autofree char *out = g_build_filename (lp_test_tmpdir (), backends[b], NULL);
      g_autofree char *err = NULL;
      /* Few calibration windows too: GPTQ's calibration runs on the device. */
      const char *run[] = { "run", spec, "-D", mdef, "-D", ddef, "-D", "ctx=512", "-D", "windows=3", "-D", "calib_samples=2",
                            "-D", "calib_seq_len=128", "-o", out, "--backend", backends[b], "--no-cache", "-q", NULL };
      int status = lp_test_run_cliv (NULL, &err, run);
      if (status != 0)
        g_test_message ("%s", err);
      g_assert_cmpint (status, ==, 0);
      ppl[b] = lp_test_report_metric (out, "eval-original", "perplexity");
    }
  g_unsetenv ("LLMPRESS_VULKAN_VALIDATION");
  g_test_message ("specs/default.ini on stories260K, 3 windows of 512: perplexity %.6f on the CPU, %.6f on Vulkan",
                  ppl[0], ppl[1]);
  g_assert_cmpfloat (fabs (ppl[0] - ppl[1]), <, 1e-3);
}

/* The design's whole chain (specs/card.ini: SparseGPT 50% -> GPTQ int4 ->
 * distill.recover -> save) on the real-scale model, SmolLM2-135M, with
 * WikiText-2 as evaluation and calibration text: every stage runs, every
 * eval is finite, recovery does not end worse than where it started, and the
 * saved GGUF evaluates to the perplexity the pipeline measured.  Small
 * settings (8 samples of 128 tokens, 4 training steps, 4 windows of 256):
 * this proves the passes work at that scale, not how well. */
static void
test_card_on_smollm2 (void)
{
  if (!lp_test_slow ())
    return;
  g_autofree char *model = lp_test_shared_path ("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
  g_autofree char *data = model ? lp_test_shared_path ("data/wikitext-2-raw-test.txt") : NULL;
  if (data == NULL)
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "card.ini", NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "card-smollm2", NULL);
  g_autofree char *saved = g_build_filename (out, "card.gguf", NULL);
  g_autofree char *mdef = g_strdup_printf ("model=%s", model), *ddef = g_strdup_printf ("data=%s", data);
  g_autofree char *cdef = g_strdup_printf ("calib=%s", data);
  g_autofree char *err = NULL;
  const char *run[] = { "run", spec, "-D", mdef, "-D", ddef, "-D", cdef, "-D", "calib_samples=8", "-D", "seq_len=128",
                        "-D", "ctx=256", "-D", "windows=4", "-D", "steps=4", "-D", "holdout=2", "-D", "eval_every=2",
                        "-D", "train_len=64", "-D", "micro_batch=1", "-D", "out=card.gguf", "-o", out, "--no-cache", "-q", NULL };
  int status = lp_test_run_cliv (NULL, &err, run);
  if (status != 0)
    g_test_message ("%s", err);
  g_assert_cmpint (status, ==, 0);
  const char *evals[] = { "dense", "prune-eval", "quantize-eval", "recover-eval" };
  double ppl[G_N_ELEMENTS (evals)];
  for (gsize i = 0; i < G_N_ELEMENTS (evals); i++)
    {
      ppl[i] = lp_test_report_metric (out, evals[i], "perplexity");
      g_test_message ("%s: perplexity %.4f", evals[i], ppl[i]);
      g_assert_true (isfinite (ppl[i]) && ppl[i] > 1.0);
    }
  g_assert_cmpfloat (ppl[3], <=, ppl[2] * 1.001);
  /* The saved file, read back by the eval command on the same windows. */
  g_autofree char *json = NULL;
  const char *eval[] = { "eval", saved, "--data", data, "--ctx", "256", "--max-windows", "4", "--json", "-q", NULL };
  g_assert_cmpint (lp_test_run_cliv (&json, NULL, eval), ==, 0);
  g_autoptr (JsonNode) root = json_from_string (json, NULL);
  g_assert_nonnull (root);
  double again = json_object_get_double_member (json_node_get_object (root), "perplexity");
  g_test_message ("saved card.gguf: perplexity %.4f", again);
  g_assert_cmpfloat (fabs (again - ppl[3]), <, 1e-3 * ppl[3]);
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  const char *dir = g_getenv ("LLMPRESS_SPECS_DIR");
  g_assert_nonnull (dir);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "default-cache", NULL);
  g_setenv ("LLMPRESS_CACHE_DIR", cache, TRUE);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  g_assert_nonnull (d);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, ".ini"))
      g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_names);
  g_assert_cmpuint (names->len, >, 0);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *test = g_strdup_printf ("/specs/%s", (char *) names->pdata[i]);
      g_test_add_data_func_full (test, g_build_filename (dir, names->pdata[i], NULL), test_spec, g_free);
    }
  g_test_add_func ("/specs/default.ini/vulkan-vs-cpu", test_default_on_vulkan);
  g_test_add_func ("/specs/card.ini/smollm2", test_card_on_smollm2);
  return g_test_run ();
}
