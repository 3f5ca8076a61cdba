/* The cache promise and fault injection, through the CLI: a damaged entry
 * (flipped bytes, truncation) is discarded with a warning and recomputed;
 * a node's key covers the tokenizer a llama2.c load finds by itself; eight
 * concurrent runs (and a gc) share one cache; an unwritable cache degrades
 * to running uncached; ENOSPC and EIO (an LD_PRELOAD shim, fault-inject.c)
 * on outputs leave no partial file and the previous one intact; SIGKILL at
 * random points never leaves a partial output or a poisoned cache; a
 * crashing pass is named and leaves no entry.  A directory input's key
 * covers every file in it. */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

static const char *model_path;   /* stories260K.bin, shared, read-only */
static const char *data_path;    /* the start of the TinyStories text */

/* A fresh directory under the test's temporary directory. */
static char *
fresh_dir (const char *name)
{
  char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  return path;
}

/* load -> scale -> eval, and save of the scaled model: one entry of each
 * kind (model, metrics, none).  model NULL: the shared stories260K. */
static char *
write_spec (const char *name, const char *model, const char *scale_pass)
{
  g_autofree char *text = g_strdup_printf ("[load]\npath=%s\n"
                                           "[scale]\npass=%s\ninput=load\nfactor=0.5\n"
                                           "[eval]\ninput=scale\ndata=%s\nctx=32\nmax_windows=1\n"
                                           "[save]\ninput=scale\npath=out.gguf\n",
                                           model ? model : model_path, scale_pass, data_path);
  return lp_test_write_file (name, text, strlen (text));
}

/* The fault-injection shim's settings ("NAME=VALUE", NULL-terminated) for
 * the CLI runs of a test; NULL: none. */
static const char *const *faults;

/* The CLI with args, in the environment plus `faults`: its exit status
 * (128 + N for signal N). */
static int
run_cli (char **out_text, char **err_text, const char *const *args)
{
  if (faults == NULL)
    return lp_test_run_cliv (out_text, err_text, args);
  g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  for (const char *const *e = faults; *e; e++)
    {
      g_autofree char *name = g_strndup (*e, strcspn (*e, "="));
      g_subprocess_launcher_setenv (l, name, *e + strlen (name) + 1, TRUE);
    }
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) g_getenv ("LLMPRESS_BIN"));
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  g_ptr_array_add (argv, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GSubprocess) p = g_subprocess_launcher_spawnv (l, (const char *const *) argv->pdata, &error);
  g_assert_no_error (error);
  g_autofree char *o = NULL, *e = NULL;
  g_assert_true (g_subprocess_communicate_utf8 (p, NULL, NULL, &o, &e, &error));
  if (out_text)
    *out_text = g_steal_pointer (&o);
  if (err_text)
    *err_text = g_steal_pointer (&e);
  return g_subprocess_get_if_exited (p) ? g_subprocess_get_exit_status (p) : 128 + g_subprocess_get_term_sig (p);
}

/* llmpress run SPEC -o OUT --cache-dir CACHE [extra...] (not quiet: the
 * warnings are what some tests look for). */
static int
run_spec (const char *spec, const char *out, const char *cache, char **out_text, char **err_text, ...)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  const char *fixed[] = { "run", spec, "-o", out, "--cache-dir", cache };
  for (gsize i = 0; i < G_N_ELEMENTS (fixed); i++)
    g_ptr_array_add (args, (gpointer) fixed[i]);
  va_list ap;
  va_start (ap, err_text);
  for (const char *a = va_arg (ap, const char *); a; a = va_arg (ap, const char *))
    g_ptr_array_add (args, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (args, NULL);
  g_autofree char *err = NULL;
  int status = run_cli (out_text, &err, (const char *const *) args->pdata);
  g_test_message ("llmpress run: exit %d, stderr:\n%s", status, err);
  if (err_text)
    *err_text = g_steal_pointer (&err);
  return status;
}

static guint
count (const char *haystack, const char *needle)
{
  guint n = 0;
  for (const char *p = haystack; (p = strstr (p, needle)) != NULL; p += strlen (needle))
    n++;
  return n;
}

/* The eval node's perplexity in OUT/report.json. */
static double
perplexity (const char *out)
{
  return lp_test_report_metric (out, "eval", "perplexity");
}

static GBytes *
read_bytes (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  char *data = NULL;
  gsize len = 0;
  if (!g_file_get_contents (path, &data, &len, NULL))
    return NULL;
  return g_bytes_new_take (data, len);
}

static void
assert_same_file (const char *dir_a, const char *dir_b, const char *name)
{
  g_autoptr (GBytes) a = read_bytes (dir_a, name), b = read_bytes (dir_b, name);
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_true (g_bytes_equal (a, b));
}

/* The entry directory of a node, from its key in OUT/report.json. */
static char *
entry_of (const char *cache, const char *out, const char *node)
{
  g_autofree char *key = lp_test_report_key (out, node);
  char shard[3] = { key[0], key[1], 0 };
  return g_build_filename (cache, "v3", shard, key, NULL);
}

/* Flip the bytes at the middle of a file. */
static void
flip_middle (const char *path)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (path, &data, &len, NULL));
  g_assert_cmpuint (len, >, 8);
  for (gsize i = len / 2; i < len / 2 + 4; i++)
    data[i] ^= 0x5a;
  g_assert_true (g_file_set_contents (path, data, len, NULL));
}

static void
truncate_half (const char *path)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (path, &data, &len, NULL));
  g_assert_true (g_file_set_contents (path, data, len / 2, NULL));
}

/* One damage, then a rerun: exit 0, exactly one warning naming the damaged
 * entry, and the same perplexity and output bytes as the first run. */
static void
damage_and_rerun (const char *spec, const char *cache, const char *ref_out, const char *node, const char *file,
                  void (*damage) (const char *path))
{
  g_autofree char *entry = entry_of (cache, ref_out, node);
  g_autofree char *path = g_build_filename (entry, file, NULL);
  g_assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));
  damage (path);
  g_autofree char *out = g_strdup_printf ("%s-%s-%s-%s", ref_out, node, file, damage == truncate_half ? "cut" : "flip");
  g_autofree char *stdout_text = NULL, *err = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &stdout_text, &err, "--explain", NULL), ==, 0);
  g_assert_cmpuint (count (err, "damaged cache entry"), ==, 1);
  g_assert_nonnull (strstr (err, entry));
  g_assert_cmpfloat (perplexity (out), ==, perplexity (ref_out));
  assert_same_file (out, ref_out, "out.gguf");
  /* The entry was recomputed, whole. */
  g_assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));
  g_autofree char *verify_out = NULL;
  const char *verify[] = { "cache", "verify", "--cache-dir", cache, NULL };
  g_assert_cmpint (lp_test_run_cliv (&verify_out, NULL, verify), ==, 0);
  g_assert_nonnull (strstr (verify_out, "removed 0 damaged"));
}

static void
test_damaged_entries (void)
{
  g_autofree char *spec = write_spec ("damage.ini", NULL, "test.scale");
  g_autofree char *cache = fresh_dir ("damage-cache"), *ref = fresh_dir ("damage-ref");
  g_assert_cmpint (run_spec (spec, ref, cache, NULL, NULL, "-q", NULL), ==, 0);
  /* Each rerun writes into a new output directory, so save (whose output
   * path is part of its key) runs and loads scale's model from the cache
   * (every byte checked); every run loads eval's metrics; every run finds
   * (entry.ini and sizes checked) each entry. */
  damage_and_rerun (spec, cache, ref, "scale", "model.gguf", flip_middle);
  damage_and_rerun (spec, cache, ref, "eval", "metrics.ini", flip_middle);
  damage_and_rerun (spec, cache, ref, "scale", "entry.ini", flip_middle);
  damage_and_rerun (spec, cache, ref, "eval", "entry.ini", truncate_half);
  damage_and_rerun (spec, cache, ref, "load", "model.gguf", truncate_half);

  /* cache verify finds what runs have not read yet, and removes it. */
  g_autofree char *entry = entry_of (cache, ref, "load");
  g_autofree char *model = g_build_filename (entry, "model.gguf", NULL);
  flip_middle (model);
  g_autofree char *verify_out = NULL, *verify_err = NULL;
  const char *verify[] = { "cache", "verify", "--cache-dir", cache, NULL };
  g_assert_cmpint (lp_test_run_cliv (&verify_out, &verify_err, verify), ==, 0);
  g_assert_nonnull (strstr (verify_out, "removed 1 damaged"));
  g_assert_cmpuint (count (verify_err, "damaged cache entry"), ==, 1);
  g_assert_false (g_file_test (entry, G_FILE_TEST_EXISTS));
}

/* The tokenizer beside a llama2.c checkpoint is part of the load's key. */
static void
test_implicit_tokenizer (void)
{
  g_autofree char *dir = fresh_dir ("tok-model");
  g_assert_cmpint (g_mkdir (dir, 0755), ==, 0);
  g_autofree char *shared_tok = lp_test_shared_path ("models/stories260K/tok512.bin");
  g_autofree char *model = g_build_filename (dir, "stories260K.bin", NULL);
  g_autofree char *tok = g_build_filename (dir, "tok512.bin", NULL);
  g_autoptr (GFile) ms = g_file_new_for_path (model_path), md = g_file_new_for_path (model);
  g_autoptr (GFile) ts = g_file_new_for_path (shared_tok), td = g_file_new_for_path (tok);
  g_assert_true (g_file_copy (ms, md, G_FILE_COPY_NONE, NULL, NULL, NULL, NULL));
  g_assert_true (g_file_copy (ts, td, G_FILE_COPY_NONE, NULL, NULL, NULL, NULL));
  g_autofree char *spec = write_spec ("tok.ini", model, "test.scale");
  g_autofree char *cache = fresh_dir ("tok-cache"), *out = fresh_dir ("tok-out");
  g_assert_cmpint (run_spec (spec, out, cache, NULL, NULL, "-q", NULL), ==, 0);
  g_autofree char *again = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &again, NULL, "-q", "--explain", NULL), ==, 0);
  g_assert_nonnull (strstr (again, "explain: load: reused"));

  /* A different vocabulary score: same size, new content. */
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (tok, &data, &len, NULL));
  data[4] ^= 0x01; /* the first token's score (after max_token_length) */
  g_assert_true (g_file_set_contents (tok, data, len, NULL));
  g_autofree char *changed = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &changed, NULL, "-q", "--explain", NULL), ==, 0);
  g_autofree char *why = g_strdup_printf ("explain: load: run: input file of path changed: %s", tok);
  g_assert_nonnull (strstr (changed, why));
}

/* A load of DIR/model.safetensors reads the whole directory: config.json
 * is part of its key. */
static void
test_directory_input (void)
{
  g_autofree char *dir = fresh_dir ("hf-model");
  const char *convert[] = { "convert", model_path, dir, "--format", "hf", NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, NULL, convert), ==, 0);
  g_autofree char *weights = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *spec = write_spec ("hf.ini", weights, "test.scale");
  g_autofree char *cache = fresh_dir ("hf-cache"), *out = fresh_dir ("hf-out");
  g_assert_cmpint (run_spec (spec, out, cache, NULL, NULL, "-q", NULL), ==, 0);
  g_autofree char *config = g_build_filename (dir, "config.json", NULL);
  g_autofree char *text = NULL;
  g_assert_true (g_file_get_contents (config, &text, NULL, NULL));
  g_autofree char *more = g_strconcat (text, "\n", NULL);
  g_assert_true (g_file_set_contents (config, more, -1, NULL));
  g_autofree char *changed = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &changed, NULL, "-q", "--explain", NULL), ==, 0);
  g_autofree char *why = g_strdup_printf ("explain: load: run: input file of path changed: %s", config);
  g_assert_nonnull (strstr (changed, why));
}

/* The bytes of `name` in directory `dir` (g_free them). */
static GBytes *
file_bytes (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL), *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (path, &data, &len, NULL));
  return g_bytes_new_take (g_steal_pointer (&data), len);
}

/* A cache hit gives what the run that stored it gave: an integer grid
 * (GPTQ), a pruned one and a quantized low-rank compensation come back as
 * themselves, not as their values, so every output written after the hit
 * (GGUF block types, a GPTQ safetensors directory) and the report's sizes
 * are the same bytes as the first run's. */
static void
test_forms_exact (void)
{
  g_autofree char *text = g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=4\ncalibration_seq_len=64\n"
                                           "[load]\npath=%s\n"
                                           "[gptq]\npass=quantize.gptq\ninput=load\nbits=4\ngroup_size=32\n"
                                           "[save-gguf]\npass=save\ninput=gptq\npath=gptq.gguf\n"
                                           "[save-hf]\npass=save\ninput=gptq\npath=gptq-hf\n"
                                           "[prune]\npass=prune.magnitude\ninput=load\nsparsity=0.5\n"
                                           "[rtn]\npass=quantize.rtn\ninput=prune\nbits=4\ngroup_size=32\n"
                                           "[save-pruned]\npass=save\ninput=rtn\npath=pruned.gguf\n"
                                           "[rtn2]\npass=quantize.rtn\ninput=load\nbits=2\ngroup_size=32\n"
                                           "[lr]\npass=factorize.compensate\ninput=rtn2\nreference=load\nrank=4\n"
                                           "factor_bits=4\nfactor_group=32\niterations=1\n"
                                           "[save-lr]\npass=save\ninput=lr\npath=lr.gguf\n",
                                           data_path, model_path);
  g_autofree char *spec = lp_test_write_file ("forms.ini", text, strlen (text));
  g_autofree char *cache = fresh_dir ("forms-cache"), *first = fresh_dir ("forms-1"), *second = fresh_dir ("forms-2");
  g_assert_cmpint (run_spec (spec, first, cache, NULL, NULL, "-q", NULL), ==, 0);
  g_autofree char *again = NULL;
  g_assert_cmpint (run_spec (spec, second, cache, &again, NULL, "-q", "--explain", NULL), ==, 0);
  const char *nodes[] = { "gptq", "rtn", "lr" };
  for (guint i = 0; i < G_N_ELEMENTS (nodes); i++)
    {
      g_autofree char *reused = g_strdup_printf ("explain: %s: reused", nodes[i]);
      g_assert_nonnull (strstr (again, reused));
      g_assert_cmpfloat (lp_test_report_node_double (second, nodes[i], "output_bytes"), ==,
                         lp_test_report_node_double (first, nodes[i], "output_bytes"));
    }
  const char *files[] = { "gptq.gguf", "gptq-hf/model.safetensors", "pruned.gguf", "lr.gguf" };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autoptr (GBytes) a = file_bytes (first, files[i]), b = file_bytes (second, files[i]);
      g_test_message ("%s: %" G_GSIZE_FORMAT " and %" G_GSIZE_FORMAT " bytes", files[i], g_bytes_get_size (a),
                      g_bytes_get_size (b));
      g_assert_true (g_bytes_equal (a, b));
    }
}

/* Eight runs of one spec at once into one fresh cache, while a gc removes
 * entries under them: all succeed with the same results. */
static void
test_concurrent_runs (void)
{
  g_autofree char *spec = write_spec ("concurrent.ini", NULL, "test.scale");
  g_autofree char *ref = fresh_dir ("concurrent-ref"), *ref_cache = fresh_dir ("concurrent-ref-cache");
  g_assert_cmpint (run_spec (spec, ref, ref_cache, NULL, NULL, "-q", NULL), ==, 0);
  const guint n_runs = 8, n_rounds = 14;
  for (guint round = 0; round < n_rounds; round++)
    {
      g_autofree char *name = g_strdup_printf ("concurrent-cache-%u", round);
      g_autofree char *cache = fresh_dir (name);
      g_autoptr (GPtrArray) procs = g_ptr_array_new_with_free_func (g_object_unref);
      g_autoptr (GPtrArray) outs = g_ptr_array_new_with_free_func (g_free);
      for (guint i = 0; i <= n_runs; i++)
        {
          char *out = g_strdup_printf ("%s-out-%u", cache, i);
          g_ptr_array_add (outs, out);
          g_autoptr (GError) error = NULL;
          /* The last one is a gc of everything, in the odd rounds. */
          GSubprocess *p;
          if (i == n_runs && round % 2 == 1)
            p = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                                  g_getenv ("LLMPRESS_BIN"), "cache", "gc", "--max-age", "0", "--cache-dir", cache, NULL);
          else if (i == n_runs)
            continue;
          else
            p = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                                  g_getenv ("LLMPRESS_BIN"), "run", spec, "-o", out, "--cache-dir", cache, "-q", NULL);
          g_assert_no_error (error);
          g_ptr_array_add (procs, p);
          if (i == n_runs / 2)
            g_usleep (20000 * (round + 1)); /* the rest find some entries being written or written */
        }
      for (guint i = 0; i < procs->len; i++)
        {
          GSubprocess *p = procs->pdata[i];
          g_autofree char *o = NULL, *e = NULL;
          g_autoptr (GError) error = NULL;
          g_assert_true (g_subprocess_communicate_utf8 (p, NULL, NULL, &o, &e, &error));
          if (g_subprocess_get_exit_status (p) != 0 || !g_subprocess_get_if_exited (p))
            g_error ("round %u, process %u failed: %s", round, i, e);
          if (i < n_runs)
            {
              g_assert_cmpfloat (perplexity (outs->pdata[i]), ==, perplexity (ref));
              assert_same_file (outs->pdata[i], ref, "out.gguf");
            }
        }
      guint entries, temporaries;
      lp_test_cache_count (cache, &entries, &temporaries);
      g_assert_cmpuint (temporaries, ==, 0);
      g_autofree char *verify_out = NULL;
      const char *verify[] = { "cache", "verify", "--cache-dir", cache, NULL };
      g_assert_cmpint (lp_test_run_cliv (&verify_out, NULL, verify), ==, 0);
      g_assert_nonnull (strstr (verify_out, "removed 0 damaged"));
    }
}

/* Fault injection for the next CLI runs (see fault-inject.c). */
static GStrv fault_env;

static gboolean
faults_on (const char *on, const char *err, const char *match, const char *after)
{
  const char *lib = g_getenv ("LLMPRESS_FAULT_INJECT_LIB");
  if (lib == NULL || !g_file_test (lib, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("no fault-inject.so (LLMPRESS_FAULT_INJECT_LIB)");
      return FALSE;
    }
  /* Under AddressSanitizer the shim comes before its runtime in the link
   * order, which ASan refuses unless told this is fine. */
  const char *asan = g_getenv ("ASAN_OPTIONS");
  g_strfreev (fault_env);
  fault_env = g_new0 (char *, 7);
  fault_env[0] = g_strdup_printf ("LD_PRELOAD=%s", lib);
  fault_env[1] = g_strdup_printf ("ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "", asan && *asan ? ":" : "");
  fault_env[2] = g_strdup_printf ("LLMPRESS_FAULT_ON=%s", on);
  fault_env[3] = g_strdup_printf ("LLMPRESS_FAULT_ERRNO=%s", err);
  fault_env[4] = g_strdup_printf ("LLMPRESS_FAULT_MATCH=%s", match);
  fault_env[5] = g_strdup_printf ("LLMPRESS_FAULT_AFTER=%s", after);
  faults = (const char *const *) fault_env;
  return TRUE;
}

static void
faults_off (void)
{
  faults = NULL;
}

/* No ".NAME.tmp-*" left in dir. */
static void
assert_no_temporaries (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name (d)) != NULL)
    if (strstr (name, ".tmp-") != NULL)
      g_error ("%s: a temporary was left: %s", dir, name);
}

/* stderr is one line, holding both fragments. */
static void
assert_one_error_line (const char *err, const char *fragment, const char *fragment2)
{
  g_auto (GStrv) lines = g_strsplit (err, "\n", -1);
  guint n = 0;
  for (char **l = lines; *l; l++)
    if (**l)
      {
        n++;
        g_assert_nonnull (strstr (*l, fragment));
        g_assert_nonnull (strstr (*l, fragment2));
      }
  g_assert_cmpuint (n, ==, 1);
}

static const char *const previous = "a previous output, to be kept\n";

static void
check_failed_output (const char *dir, const char *name, int status, const char *err, const char *message)
{
  g_assert_cmpint (status, ==, 1);
  assert_one_error_line (err, name, message);
  g_autoptr (GBytes) kept = read_bytes (dir, name);
  g_assert_nonnull (kept);
  g_assert_cmpmem (g_bytes_get_data (kept, NULL), g_bytes_get_size (kept), previous, strlen (previous));
  assert_no_temporaries (dir);
}

static void
test_fault_outputs (void)
{
  const char *errs[][2] = { { "ENOSPC", "No space left on device" }, { "EIO", "Input/output error" } };
  for (gsize k = 0; k < G_N_ELEMENTS (errs); k++)
    {
      /* convert, failing 100 KB into the output */
      g_autofree char *dname = g_strdup_printf ("fault-convert-%s", errs[k][0]);
      g_autofree char *dir = fresh_dir (dname);
      g_assert_cmpint (g_mkdir (dir, 0755), ==, 0);
      g_autofree char *out = g_build_filename (dir, "converted.gguf", NULL);
      g_assert_true (g_file_set_contents (out, previous, -1, NULL));
      if (!faults_on ("write", errs[k][0], "converted.gguf", "100000"))
        return;
      g_autofree char *err = NULL;
      const char *convert[] = { "convert", model_path, out, NULL };
      int status = run_cli (NULL, &err, convert);
      faults_off ();
      check_failed_output (dir, "converted.gguf", status, err, errs[k][1]);

      /* a run's save, failing at the first byte; the cache is not hit */
      g_autofree char *spec = write_spec ("fault-save.ini", NULL, "test.scale");
      g_autofree char *rname = g_strdup_printf ("fault-run-%s", errs[k][0]);
      g_autofree char *rdir = fresh_dir (rname);
      g_autofree char *cache = g_strdup_printf ("%s-cache", rdir);
      g_assert_cmpint (g_mkdir (rdir, 0755), ==, 0);
      g_autofree char *saved = g_build_filename (rdir, "out.gguf", NULL);
      g_assert_true (g_file_set_contents (saved, previous, -1, NULL));
      faults_on ("write", errs[k][0], "out.gguf", "0");
      g_autofree char *run_err = NULL;
      status = run_spec (spec, rdir, cache, NULL, &run_err, "-q", NULL);
      faults_off ();
      check_failed_output (rdir, "out.gguf", status, run_err, errs[k][1]);
    }
  /* fsync and rename failing as well */
  const char *ops[] = { "fsync", "rename" };
  for (gsize k = 0; k < G_N_ELEMENTS (ops); k++)
    {
      g_autofree char *dname = g_strdup_printf ("fault-%s", ops[k]);
      g_autofree char *dir = fresh_dir (dname);
      g_assert_cmpint (g_mkdir (dir, 0755), ==, 0);
      g_autofree char *out = g_build_filename (dir, "converted.gguf", NULL);
      g_assert_true (g_file_set_contents (out, previous, -1, NULL));
      faults_on (ops[k], "EIO", "converted.gguf", "0");
      g_autofree char *err = NULL;
      const char *convert[] = { "convert", model_path, out, NULL };
      int status = run_cli (NULL, &err, convert);
      faults_off ();
      check_failed_output (dir, "converted.gguf", status, err, "Input/output error");
    }
}

/* A cache that cannot be written: the run succeeds uncached, one warning,
 * and nothing partial is left in it. */
static void
test_unwritable_cache (void)
{
  g_autofree char *spec = write_spec ("unwritable.ini", NULL, "test.scale");
  g_autofree char *ref = fresh_dir ("unwritable-ref"), *ref_cache = fresh_dir ("unwritable-ref-cache");
  g_assert_cmpint (run_spec (spec, ref, ref_cache, NULL, NULL, "-q", NULL), ==, 0);

  /* Disk full while storing (the second entry, half way) and read-only. */
  const char *how[][4] = { { "write", "ENOSPC", "1100000", "No space left on device" },
                           { "mkdir", "EROFS", "0", "Read-only file system" } };
  for (gsize k = 0; k < G_N_ELEMENTS (how); k++)
    {
      g_autofree char *cname = g_strdup_printf ("unwritable-cache-%s", how[k][1]);
      g_autofree char *cache = fresh_dir (cname);
      g_autofree char *oname = g_strdup_printf ("unwritable-out-%s", how[k][1]);
      g_autofree char *out = fresh_dir (oname);
      if (!faults_on (how[k][0], how[k][1], cache, how[k][2]))
        return;
      g_autofree char *err = NULL;
      int status = run_spec (spec, out, cache, NULL, &err, NULL);
      faults_off ();
      g_assert_cmpint (status, ==, 0);
      g_assert_cmpuint (count (err, "warning"), ==, 1);
      g_assert_nonnull (strstr (err, "cannot store its output in the cache"));
      g_assert_nonnull (strstr (err, how[k][3]));
      g_assert_cmpfloat (perplexity (out), ==, perplexity (ref));
      assert_same_file (out, ref, "out.gguf");
      guint entries, temporaries;
      lp_test_cache_count (cache, &entries, &temporaries);
      g_assert_cmpuint (temporaries, ==, 0);
      g_assert_cmpuint (entries, <=, 1); /* the first one, whole, with ENOSPC */
      g_autofree char *verify_out = NULL;
      const char *verify[] = { "cache", "verify", "--cache-dir", cache, NULL };
      g_assert_cmpint (lp_test_run_cliv (&verify_out, NULL, verify), ==, 0);
      g_assert_nonnull (strstr (verify_out, "removed 0 damaged"));
    }

  /* The cache directory is a file. */
  g_autofree char *file = g_build_filename (lp_test_tmpdir (), "cache-is-a-file", NULL);
  g_assert_true (g_file_set_contents (file, "not a directory\n", -1, NULL));
  g_autofree char *out = fresh_dir ("file-cache-out");
  g_autofree char *err = NULL;
  g_assert_cmpint (run_spec (spec, out, file, NULL, &err, NULL), ==, 0);
  g_assert_cmpuint (count (err, "warning"), ==, 1);
  g_assert_nonnull (strstr (err, "expected a cache directory, found a file"));
  assert_same_file (out, ref, "out.gguf");

  /* gc removes the older layouts: v1's entries carry no checksums, v2's
   * lost integer grids and masks. */
  g_autofree char *old_cache = fresh_dir ("old-layout-cache");
  for (const char *const *old = (const char *const[]){ "v1", "v2", NULL }; *old; old++)
    {
      g_autofree char *old_entry = g_build_filename (old_cache, *old, "ab", "abcdef", NULL);
      g_assert_cmpint (g_mkdir_with_parents (old_entry, 0755), ==, 0);
      g_autofree char *old_file = g_build_filename (old_entry, "metrics.ini", NULL);
      g_assert_true (g_file_set_contents (old_file, "[metrics]\n", -1, NULL));
    }
  const char *gc_old[] = { "cache", "gc", "--cache-dir", old_cache, NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, NULL, gc_old), ==, 0);
  for (const char *const *old = (const char *const[]){ "v1", "v2", NULL }; *old; old++)
    {
      g_autofree char *dir = g_build_filename (old_cache, *old, NULL);
      g_assert_false (g_file_test (dir, G_FILE_TEST_EXISTS));
    }

  /* gc and verify of a cache that does not exist create nothing. */
  g_autofree char *none = fresh_dir ("no-cache-here");
  const char *gc[] = { "cache", "gc", "--cache-dir", none, NULL };
  const char *verify[] = { "cache", "verify", "--cache-dir", none, NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, NULL, gc), ==, 0);
  g_assert_cmpint (lp_test_run_cliv (NULL, NULL, verify), ==, 0);
  g_assert_false (g_file_test (none, G_FILE_TEST_EXISTS));
}

/* SIGKILL at random points (seeded), then a rerun: outputs absent or whole
 * after each kill, whole and right after each rerun; the cache sound. */
static void
test_sigkill_random (void)
{
  g_autofree char *spec = write_spec ("kill.ini", NULL, "test.scale");
  g_autofree char *ref = fresh_dir ("kill-ref"), *ref_cache = fresh_dir ("kill-ref-cache");
  gint64 t0 = g_get_monotonic_time ();
  g_assert_cmpint (run_spec (spec, ref, ref_cache, NULL, NULL, "-q", NULL), ==, 0);
  gint64 full_us = g_get_monotonic_time () - t0;
  g_autoptr (GBytes) want = read_bytes (ref, "out.gguf");
  g_autofree char *cache = fresh_dir ("kill-cache");
  g_autoptr (GRand) rng = g_rand_new_with_seed (13);
  for (guint round = 0; round < 16; round++)
    {
      /* A new output directory every other round, so save runs again. */
      g_autofree char *out = g_strdup_printf ("%s-out-%u", cache, round / 2);
      g_autoptr (GError) error = NULL;
      g_autoptr (GSubprocess) p = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                                                    &error, g_getenv ("LLMPRESS_BIN"), "run", spec, "-o", out,
                                                    "--cache-dir", cache, "-q", NULL);
      g_assert_no_error (error);
      g_usleep ((gulong) g_rand_double_range (rng, 0, (double) full_us * 1.2));
      g_subprocess_force_exit (p);
      g_assert_true (g_subprocess_wait (p, NULL, NULL));
      g_autoptr (GBytes) after_kill = read_bytes (out, "out.gguf");
      if (after_kill != NULL)
        g_assert_true (g_bytes_equal (after_kill, want));
      g_autofree char *err = NULL;
      g_assert_cmpint (run_spec (spec, out, cache, NULL, &err, NULL), ==, 0);
      g_assert_null (strstr (err, "damaged"));
      g_assert_cmpfloat (perplexity (out), ==, perplexity (ref));
      g_autoptr (GBytes) after_rerun = read_bytes (out, "out.gguf");
      g_assert_nonnull (after_rerun);
      g_assert_true (g_bytes_equal (after_rerun, want));
    }
  g_autofree char *verify_out = NULL;
  const char *verify[] = { "cache", "verify", "--cache-dir", cache, NULL };
  g_assert_cmpint (lp_test_run_cliv (&verify_out, NULL, verify), ==, 0);
  g_assert_nonnull (strstr (verify_out, "removed 0 damaged"));
}

/* A pass that crashes: the run names the node and dies of the signal; no
 * entry for it, and the fixed spec runs. */
static void
test_crashing_pass (void)
{
  const char *sigs[][2] = { { "segv", "SIGSEGV" }, { "abrt", "SIGABRT" }, { "fpe", "SIGFPE" } };
  g_autofree char *cache = fresh_dir ("crash-cache"), *out = fresh_dir ("crash-out");
  for (gsize k = 0; k < G_N_ELEMENTS (sigs); k++)
    {
      g_autofree char *text = g_strdup_printf ("[load]\npath=%s\n[scale]\npass=test.crash\ninput=load\nsignal=%s\n"
                                               "[save]\ninput=scale\npath=out.gguf\n", model_path, sigs[k][0]);
      g_autofree char *spec = lp_test_write_file ("crash.ini", text, strlen (text));
      g_autofree char *err = NULL;
      int status = run_spec (spec, out, cache, NULL, &err, "-q", NULL);
      g_assert_cmpint (status, !=, 0);
      g_autofree char *line = g_strdup_printf ("crash.ini:3: [scale] (pass test.crash) crashed: %s", sigs[k][1]);
      g_assert_nonnull (strstr (err, line));
      /* Nothing stored for it: it would run again, as never run before. */
      g_autofree char *plan = NULL;
      g_assert_cmpint (run_spec (spec, out, cache, &plan, NULL, "-q", "--dry-run", NULL), ==, 0);
      g_assert_nonnull (strstr (plan, "explain: load: reused"));
      g_assert_nonnull (strstr (plan, "explain: scale: would run: no cache entry"));
    }
  g_autofree char *fixed = write_spec ("fixed.ini", NULL, "test.scale");
  g_assert_cmpint (run_spec (fixed, out, cache, NULL, NULL, "-q", NULL), ==, 0);
  g_autoptr (GBytes) saved = read_bytes (out, "out.gguf");
  g_assert_nonnull (saved);
  g_autofree char *verify_out = NULL;
  const char *verify[] = { "cache", "verify", "--cache-dir", cache, NULL };
  g_assert_cmpint (lp_test_run_cliv (&verify_out, NULL, verify), ==, 0);
  g_assert_nonnull (strstr (verify_out, "removed 0 damaged"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autofree char *path = g_strdup_printf ("%s:%s", g_getenv ("LLMPRESS_PLUGIN_PATH"), g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", path, TRUE);
  model_path = lp_test_shared_path ("models/stories260K/stories260K.bin");
  g_autofree char *text_path = lp_test_shared_path ("data/tinystories-valid-head.txt");
  if (model_path == NULL || text_path == NULL)
    return g_test_run ();
  /* A few stories are plenty to score one window, and quick to tokenize. */
  g_autofree char *text = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (text_path, &text, &len, NULL));
  data_path = lp_test_write_file ("stories.txt", text, MIN (len, 4000));
  g_test_add_func ("/cache/damaged-entries", test_damaged_entries);
  g_test_add_func ("/cache/implicit-tokenizer", test_implicit_tokenizer);
  g_test_add_func ("/cache/directory-input", test_directory_input);
  g_test_add_func ("/cache/concurrent-runs", test_concurrent_runs);
  g_test_add_func ("/cache/forms-exact", test_forms_exact);
  g_test_add_func ("/cache/unwritable", test_unwritable_cache);
  g_test_add_func ("/fault/outputs", test_fault_outputs);
  g_test_add_func ("/fault/sigkill-random", test_sigkill_random);
  g_test_add_func ("/fault/crashing-pass", test_crashing_pass);
  return g_test_run ();
}
