/* distill.recover: specs/recover.ini on stories260K (recovery after
 * magnitude 50%, SparseGPT 2:4, RTN int3 and GPTQ int3 reaches the issue's
 * figures, with pruned weights still zero, the 2:4 pattern intact and every
 * grid unchanged), the same recovery on the Vulkan backend against the CPU,
 * and each bad input: one line, exit 1, nothing written. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

/* The linear weights of the blocks (what the prune and quantize passes target). */
static const char *const linears[] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", NULL };

/* A spec file in the temporary directory: `body` with every @NAME@ from
 * pairs (NAME, value, ..., NULL) replaced.  Returns its path. */
static char *
write_spec (const char *name, const char *body, ...)
{
  g_autofree char *text = g_strdup (body);
  va_list ap;
  va_start (ap, body);
  const char *key;
  while ((key = va_arg (ap, const char *)) != NULL)
    {
      const char *value = va_arg (ap, const char *);
      g_autofree char *at = g_strdup_printf ("@%s@", key);
      g_auto (GStrv) parts = g_strsplit (text, at, -1);
      g_free (text);
      text = g_strjoinv (value, parts);
    }
  va_end (ap);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  lp_test_write_text (path, text);
  return g_steal_pointer (&path);
}

static LpModel *
load_model (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;
  LpModel *m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  return m;
}

/* Run `spec` (a path) with -o out and extra -D definitions (NULL-terminated); assert it succeeds. */
static char *
run_spec (const char *spec, const char *out, const char *backend, const char *const *defs)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  g_ptr_array_add (args, (gpointer) "run");
  g_ptr_array_add (args, (gpointer) spec);
  for (const char *const *d = defs; d && *d; d++)
    {
      g_ptr_array_add (args, (gpointer) "-D");
      g_ptr_array_add (args, (gpointer) *d);
    }
  const char *tail[] = { "-o", out, "--backend", backend, "--no-cache", NULL };
  for (const char *const *t = tail; *t; t++)
    g_ptr_array_add (args, (gpointer) *t);
  g_ptr_array_add (args, NULL);
  char *o = NULL;
  g_autofree char *e = NULL;
  int status = lp_test_run_cliv (&o, &e, (const char *const *) args->pdata);
  if (status != 0)
    g_test_message ("%s", e);
  g_assert_cmpint (status, ==, 0);
  return o;
}

/* stories260K and the TinyStories tokens as -D definitions (model=, data=);
 * FALSE after g_test_skip when they are absent. */
static gboolean
stories_defs (char **model_def, char **data_def)
{
  g_autofree char *model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *data = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  if (model == NULL || data == NULL)
    return FALSE;
  *model_def = g_strdup_printf ("model=%s", model);
  *data_def = g_strdup_printf ("data=%s", data);
  return TRUE;
}

/* --- specs/recover.ini on stories260K ------------------------------------- */

/* Every weight that is zero in `pruned` is zero in `recovered`, and some
 * kept weight moved. */
static void
assert_zeros_kept (LpModel *pruned, LpModel *recovered, int n_layers)
{
  gint64 zeros = 0, moved = 0;
  for (int l = 0; l < n_layers; l++)
    for (const char *const *w = linears; *w; w++)
      {
        g_autofree char *name = g_strdup_printf ("blk.%d.%s.weight", l, *w);
        LpTensor *a = lp_model_tensor (pruned, name), *b = lp_model_tensor (recovered, name);
        g_autofree float *va = lp_tensor_dup_f32 (a, NULL), *vb = lp_tensor_dup_f32 (b, NULL);
        for (gint64 i = 0; i < lp_tensor_n_elements (a); i++)
          {
            if (va[i] == 0.0f)
              {
                zeros++;
                if (vb[i] != 0.0f)
                  g_error ("%s[%" G_GINT64_FORMAT "]: pruned, but %g after recovery", name, i, vb[i]);
              }
            moved += va[i] != vb[i];
          }
      }
  g_assert_cmpint (zeros, >, 0);
  g_assert_cmpint (moved, >, 0);
}

/* At least two of every four consecutive weights of each row are zero. */
static void
assert_2_4 (LpModel *m, int n_layers)
{
  for (int l = 0; l < n_layers; l++)
    for (const char *const *w = linears; *w; w++)
      {
        g_autofree char *name = g_strdup_printf ("blk.%d.%s.weight", l, *w);
        LpTensor *t = lp_model_tensor (m, name);
        g_autofree float *v = lp_tensor_dup_f32 (t, NULL);
        for (gint64 g = 0; g < lp_tensor_n_elements (t) / 4; g++)
          {
            int z = (v[4 * g] == 0.0f) + (v[4 * g + 1] == 0.0f) + (v[4 * g + 2] == 0.0f) + (v[4 * g + 3] == 0.0f);
            if (z < 2)
              g_error ("%s: group %" G_GINT64_FORMAT " keeps %d of 4 weights", name, g, 4 - z);
          }
      }
}

/* Distinct values among v[0 .. n-1] and w[0 .. n-1] (w may be NULL). */
static guint
distinct_values (const float *v, const float *w, int n)
{
  g_autoptr (GHashTable) seen = g_hash_table_new (g_int_hash, g_int_equal);
  g_autofree gint32 *bits = g_new (gint32, 2 * n);
  memcpy (bits, v, n * sizeof (float));
  if (w)
    memcpy (bits + n, w, n * sizeof (float));
  for (int i = 0; i < (w ? 2 * n : n); i++)
    g_hash_table_add (seen, &bits[i]);
  return g_hash_table_size (seen);
}

/* Every linear weight of `m` (a GGUF file: the grid's values) is on a 3-bit
 * grid in groups of 32 columns: at most 8 values a row's group.  With
 * `same`, on the very grid of `same`'s weight: the two together still take
 * at most 8 values a group, and some weights moved. */
static void
assert_grid (LpModel *m, LpModel *same, int n_layers)
{
  gint64 moved = 0;
  for (int l = 0; l < n_layers; l++)
    for (const char *const *w = linears; *w; w++)
      {
        g_autofree char *name = g_strdup_printf ("blk.%d.%s.weight", l, *w);
        LpTensor *t = lp_model_tensor (m, name);
        gint64 rows = lp_tensor_n_rows (t), cols = lp_tensor_row_length (t);
        g_autofree float *v = lp_tensor_dup_f32 (t, NULL);
        g_autofree float *u = same ? lp_tensor_dup_f32 (lp_model_tensor (same, name), NULL) : NULL;
        for (gint64 r = 0; r < rows; r++)
          for (gint64 c = 0; c < cols; c += 32)
            {
              int n = (int) MIN (32, cols - c);
              const float *vg = v + r * cols + c, *ug = u ? u + r * cols + c : NULL;
              if (distinct_values (vg, ug, n) > 8)
                g_error ("%s: row %" G_GINT64_FORMAT ", columns %" G_GINT64_FORMAT "+: %u values, off a 3-bit grid%s",
                         name, r, c, distinct_values (vg, ug, n), u ? " shared with the input" : "");
              for (int k = 0; ug && k < n; k++)
                moved += vg[k] != ug[k];
            }
      }
  if (same != NULL)
    g_assert_cmpint (moved, >, 0);
}

static void
test_recover_spec (void)
{
  g_autofree char *dm = NULL, *dd = NULL;
  if (!stories_defs (&dm, &dd))
    return;
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "recover.ini", NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "recover", NULL);
  g_autofree char *dc = g_strdup_printf ("calib=%s", dd + strlen ("data="));
  const char *defs[] = { dm, dd, dc, NULL };
  g_autofree char *table = run_spec (spec, out, "cpu", defs);
  g_test_message ("specs/recover.ini on stories260K:\n%s", table);
  double dense = lp_test_report_metric (out, "dense", "perplexity");
  double mag = lp_test_report_metric (out, "mag50-eval", "perplexity");
  double mag_rec = lp_test_report_metric (out, "mag50-rec-eval", "perplexity");
  double sgpt50 = lp_test_report_metric (out, "sgpt50-eval", "perplexity");
  double sgpt24 = lp_test_report_metric (out, "sgpt24-eval", "perplexity");
  double sgpt24_rec = lp_test_report_metric (out, "sgpt24-rec-eval", "perplexity");
  double rtn3 = lp_test_report_metric (out, "rtn3-eval", "perplexity");
  double rtn3_rec = lp_test_report_metric (out, "rtn3-rec-eval", "perplexity");
  double gptq3 = lp_test_report_metric (out, "gptq3-eval", "perplexity");
  double gptq3_rec = lp_test_report_metric (out, "gptq3-rec-eval", "perplexity");
  g_test_message ("perplexity: dense %.4f; magnitude 50%% %.4f -> %.4f (SparseGPT 50%% %.4f); SparseGPT 2:4 %.4f -> "
                  "%.4f; RTN int3 %.4f -> %.4f (GPTQ int3 %.4f); GPTQ int3 %.4f -> %.4f",
                  dense, mag, mag_rec, sgpt50, sgpt24, sgpt24_rec, rtn3, rtn3_rec, gptq3, gptq3, gptq3_rec);
  /* The issue's figures (specs/prune-compare.ini and specs/quantize.ini on
   * the same split), and the one-shot methods of this very run. */
  g_assert_cmpfloat (mag_rec, <=, 18.72);
  g_assert_cmpfloat (mag_rec, <=, sgpt50);
  g_assert_cmpfloat (sgpt24_rec, <=, sgpt24 - 0.5 * (sgpt24 - dense));
  g_assert_cmpfloat (rtn3_rec, <=, 5.8526);
  g_assert_cmpfloat (rtn3_rec, <=, gptq3);
  g_assert_cmpfloat (gptq3_rec, <, gptq3);

  /* What trained respects what came before: the inputs rebuilt here (no calibration needed). */
  g_autofree char *ref_out = g_build_filename (lp_test_tmpdir (), "recover-inputs", NULL);
  g_autofree char *ref_spec = write_spec ("recover-inputs.ini",
                                          "[load]\npath=${model}\n[mag50]\npass=prune.magnitude\nsparsity=0.5\n"
                                          "[mag50-save]\npass=save\npath=mag50.gguf\n"
                                          "[rtn3]\npass=quantize.rtn\ninput=load\nbits=3\ngroup_size=32\n"
                                          "[rtn3-save]\npass=save\npath=rtn3.gguf\n", NULL);
  const char *ref_defs[] = { dm, NULL };
  g_free (run_spec (ref_spec, ref_out, "cpu", ref_defs));
  g_autoptr (LpModel) mag_in = load_model (ref_out, "mag50.gguf");
  g_autoptr (LpModel) rtn_in = load_model (ref_out, "rtn3.gguf");
  g_autoptr (LpModel) mag_m = load_model (out, "mag50-rec.gguf");
  g_autoptr (LpModel) sgpt24_m = load_model (out, "sgpt24-rec.gguf");
  g_autoptr (LpModel) rtn_m = load_model (out, "rtn3-rec.gguf");
  g_autoptr (LpModel) gptq_m = load_model (out, "gptq3-rec.gguf");
  int L = (int) lp_model_config (mag_m)->n_layers;
  assert_zeros_kept (mag_in, mag_m, L);
  assert_2_4 (sgpt24_m, L);
  assert_grid (rtn_in, NULL, L);
  assert_grid (rtn_m, rtn_in, L);
  assert_grid (gptq_m, NULL, L);
  /* In the pipeline the recovered weights keep their integer-grid form: the same bits per weight. */
  g_assert_cmpfloat (lp_test_report_node_double (out, "rtn3-rec", "bits_per_weight"), ==,
                     lp_test_report_node_double (out, "rtn3", "bits_per_weight"));
  g_assert_cmpfloat (lp_test_report_node_double (out, "gptq3-rec", "bits_per_weight"), ==,
                     lp_test_report_node_double (out, "gptq3", "bits_per_weight"));
}

/* --- block-wise reconstruction ------------------------------------------- */

/* objective=blockwise after magnitude 50%: every block trained in turn
 * toward the teacher block's output lowers the perplexity, and the pruned
 * weights stay zero. */
static void
test_recover_blockwise (void)
{
  g_autofree char *dm = NULL, *dd = NULL;
  if (!stories_defs (&dm, &dd))
    return;
  g_autofree char *spec = write_spec ("recover-blockwise.ini",
                                      "[pipeline]\ncalibration=${data}\ncalibration_samples=24\ncalibration_seq_len=128\n"
                                      "calibration_range=300000:\n[load]\npath=${model}\n[mag50]\npass=prune.magnitude\n"
                                      "sparsity=0.5\n[mag50-save]\npass=save\npath=mag50.gguf\n[before]\npass=eval\n"
                                      "input=mag50\ndata=${data}\ndata_range=:300000\nctx=128\nmax_windows=16\n"
                                      "[rec]\npass=distill.recover\ninput=mag50\nteacher=load\nobjective=blockwise\n"
                                      "steps=10\nwarmup=2\nmicro_batch=2\nholdout=4\neval_every=5\n"
                                      "[rec-save]\npass=save\npath=rec.gguf\n[after]\npass=eval\ninput=rec\ndata=${data}\n"
                                      "data_range=:300000\nctx=128\nmax_windows=16\n", NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "rec-blockwise", NULL);
  const char *defs[] = { dm, dd, NULL };
  g_free (run_spec (spec, out, "cpu", defs));
  double before = lp_test_report_metric (out, "before", "perplexity");
  double after = lp_test_report_metric (out, "after", "perplexity");
  g_test_message ("magnitude 50%% then 10 block-wise steps a block, 16 windows of 128: perplexity %.4f -> %.4f", before,
                  after);
  g_assert_cmpfloat (after, <, before);
  g_autoptr (LpModel) pruned = load_model (out, "mag50.gguf");
  g_autoptr (LpModel) rec = load_model (out, "rec.gguf");
  assert_zeros_kept (pruned, rec, (int) lp_model_config (rec)->n_layers);
  g_assert_cmpstr (lp_meta_get_string (lp_model_meta (rec), "llmpress.distill.objective"), ==, "blockwise");
}

/* --- the same recovery on the Vulkan backend ------------------------------- */

/* A short recovery after magnitude 50% on lavapipe (under the validation
 * layer) and on the CPU: both improve on the pruned model, to the same
 * perplexity within 1e-3 relative (f32 sums in another order over a few
 * steps; measured 33.1972 and 33.1973).  seed= is given: a node's default
 * seed comes from its cache key, which names the backend. */
static void
test_recover_vulkan (void)
{
  g_autofree char *dm = NULL, *dd = NULL;
  if (!stories_defs (&dm, &dd) || !lp_test_have_vulkan ())
    return;
  g_autofree char *spec = write_spec ("recover-vulkan.ini",
                                      "[pipeline]\ncalibration=${data}\ncalibration_samples=6\ncalibration_seq_len=64\n"
                                      "calibration_range=300000:\n[load]\npath=${model}\n[mag50]\npass=prune.magnitude\n"
                                      "sparsity=0.5\n[before]\npass=eval\ndata=${data}\ndata_range=:300000\nctx=64\n"
                                      "max_windows=4\n[rec]\npass=distill.recover\ninput=mag50\nteacher=load\nsteps=4\n"
                                      "warmup=0\nlr=0.002\nmicro_batch=2\nholdout=2\neval_every=2\nseed=1\n"
                                      "[after]\npass=eval\ninput=rec\ndata=${data}\ndata_range=:300000\nctx=64\nmax_windows=4\n",
                                      NULL);
  const char *defs[] = { dm, dd, NULL };
  const char *backends[2] = { "cpu", "vulkan" };
  double before[2], after[2];
  g_setenv ("LLMPRESS_VULKAN_VALIDATION", "1", TRUE);
  for (int b = 0; b < 2; b++)
    {
      g_autofree char *out = g_build_filename (lp_test_tmpdir (), "rec-vulkan", backends[b], NULL);
      g_free (run_spec (spec, out, backends[b], defs));
      before[b] = lp_test_report_metric (out, "before", "perplexity");
      after[b] = lp_test_report_metric (out, "after", "perplexity");
    }
  g_unsetenv ("LLMPRESS_VULKAN_VALIDATION");
  g_test_message ("magnitude 50%% then 4 recovery steps, 4 windows of 64: perplexity %.4f -> %.4f on the CPU, "
                  "%.4f -> %.4f on Vulkan", before[0], after[0], before[1], after[1]);
  g_assert_cmpfloat (after[0], <, before[0]);
  g_assert_cmpfloat (after[1], <, before[1]);
  g_assert_cmpfloat (fabs (after[0] - after[1]), <, 1e-3 * after[0]);
}

/* --- bad input --------------------------------------------------------------- */

/* A student (the demo model pruned) and teacher spec on small calibration
 * data, with the recover node's parameters `params` and the teacher model
 * `teacher`. */
static const char *const bad_spec =
  "[pipeline]\ncalibration=@calib@\ncalibration_samples=4\ncalibration_seq_len=32\n"
  "[teacher]\npass=load\npath=@teacher@\n[student]\npass=load\npath=@student@\n"
  "[pruned]\npass=prune.magnitude\ninput=student\nsparsity=0.5\n"
  "[recover]\npass=distill.recover\ninput=pruned\nteacher=teacher\nholdout=1\n@params@\n"
  "[save]\ninput=recover\npath=out.gguf\n";

/* The run fails with exit status 1 and one line naming every fragment, and
 * writes no model.  Returns its stderr. */
static char *
assert_bad (const char *name, const char *teacher, const char *calib, const char *params, ...)
{
  g_autofree char *student = lp_test_demo_model ();
  g_autofree char *text = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *file = g_strdup_printf ("bad-%s.ini", name);
  g_autofree char *spec = write_spec (file, bad_spec, "calib", calib ? calib : text, "teacher",
                                      teacher ? teacher : student, "student", student, "params", params, NULL);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_autofree char *err = NULL;
  const char *args[] = { "run", spec, "-o", out, "--no-cache", "-q", NULL };
  int status = lp_test_run_cliv (NULL, &err, args);
  g_test_message ("%s: exit %d: %s", name, status, err);
  g_assert_cmpint (status, ==, 1);
  /* One line, besides warnings (a spec the validator refuses gets the count
   * of problems after it). */
  g_auto (GStrv) all = g_strsplit (err, "\n", -1);
  g_autoptr (GPtrArray) lines = g_ptr_array_new ();
  for (char **l = all; *l; l++)
    if (**l && strstr (*l, ": warning: ") == NULL)
      g_ptr_array_add (lines, *l);
  g_assert_true (lines->len == 1 || (lines->len == 2 && strstr (lines->pdata[1], "1 problem found")));
  va_list ap;
  va_start (ap, params);
  const char *frag;
  while ((frag = va_arg (ap, const char *)) != NULL)
    g_assert_nonnull (strstr (lines->pdata[0], frag));
  va_end (ap);
  g_autofree char *written = g_build_filename (out, "out.gguf", NULL);
  g_assert_false (g_file_test (written, G_FILE_TEST_EXISTS));
  return g_steal_pointer (&err);
}

/* A synthetic model, changed by `options`, saved in the temporary directory. */
static char *
synth_model (const char *name, const LpSynthOptions *o)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_synth (o, &error);
  g_assert_no_error (error);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  g_assert_no_error (error);
  return g_steal_pointer (&path);
}

static void
test_bad_teacher (void)
{
  LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
  o.n_vocab = 300;
  g_autofree char *vocab = synth_model ("teacher-vocab.gguf", &o);
  g_free (assert_bad ("vocab", vocab, NULL, "steps=3", "teacher", "vocabulary of 300", "512", NULL));
  o = (LpSynthOptions) LP_SYNTH_OPTIONS_INIT;
  o.arch = LP_ARCH_QWEN2;
  g_autofree char *arch = synth_model ("teacher-arch.gguf", &o);
  g_free (assert_bad ("arch", arch, NULL, "steps=3", "teacher", "architecture qwen2", "llama", NULL));
  o = (LpSynthOptions) LP_SYNTH_OPTIONS_INIT;
  o.n_layers = 3;
  g_autofree char *deeper = synth_model ("teacher-deeper.gguf", &o);
  g_free (assert_bad ("blocks", deeper, NULL, "objective=blockwise\nsteps=3", "teacher", "blocks 3", "2", NULL));
  /* Same architecture and vocabulary size, another vocabulary. */
  g_autofree char *stories = lp_test_shared_path ("models/stories260K/stories260K.bin");
  if (stories != NULL)
    g_free (assert_bad ("tokenizer", stories, NULL, "steps=3", "teacher", "tokenizer", NULL));
}

static void
test_bad_steps (void)
{
  g_free (assert_bad ("steps", NULL, NULL, "steps=0", "steps", "0", NULL));
  g_free (assert_bad ("steps-tokens", NULL, NULL, "steps=3\ntokens=1000", "steps= and tokens=", "found both", NULL));
}

/* A learning rate that diverges even halved: the loss explodes, the
 * weights are restored and the rate halved once, then it explodes again. */
static void
test_bad_lr (void)
{
  g_autofree char *err = assert_bad ("lr", NULL, NULL, "lr=1e6\nwarmup=0\nsteps=5", "lr=1e+06", "diverged", NULL);
  g_assert_nonnull (strstr (err, "halved the learning rate to 500000"));
}

static void
test_bad_short_data (void)
{
  guint16 tokens[20];
  for (guint i = 0; i < G_N_ELEMENTS (tokens); i++)
    tokens[i] = (guint16) (300 + i);
  g_autofree char *calib = lp_test_write_file ("short.u16", tokens, sizeof tokens);
  g_free (assert_bad ("short", NULL, calib, "steps=3", "calibration data", "found 20", NULL));
}

static void
test_bad_trainable (void)
{
  g_free (assert_bad ("trainable", NULL, NULL, "trainable=nothing.*\nsteps=3", "trainable=nothing.*", "found none", NULL));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "cache", NULL);
  g_setenv ("LLMPRESS_CACHE_DIR", cache, TRUE);
  g_test_add_func ("/distill/bad/teacher", test_bad_teacher);
  g_test_add_func ("/distill/bad/steps", test_bad_steps);
  g_test_add_func ("/distill/bad/lr", test_bad_lr);
  g_test_add_func ("/distill/bad/short-data", test_bad_short_data);
  g_test_add_func ("/distill/bad/trainable", test_bad_trainable);
  g_test_add_func ("/distill/recover-spec", test_recover_spec);
  g_test_add_func ("/distill/recover-blockwise", test_recover_blockwise);
  g_test_add_func ("/distill/recover-vulkan", test_recover_vulkan);
  return g_test_run ();
}
