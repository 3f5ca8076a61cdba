/* Running specs through the CLI: a diamond under parallel -j 2 overlaps its
 * branches and writes the same bytes as sequential; the cache reuses every
 * node of an unchanged spec and reruns exactly the nodes a changed
 * parameter affects; a SIGKILLed run resumes from its finished nodes. */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "testutil.h"
#include "scheduler.h"

static char *
tmp_path (const char *name)
{
  return g_build_filename (lp_test_tmpdir (), name, NULL);
}

static char *
write_spec (const char *name, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static char *
write_spec (const char *name, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *text = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  return lp_test_write_file (name, text, strlen (text));
}

/* llmpress run SPEC -o OUT --cache-dir CACHE -q [extra...] */
static int
run_spec (const char *spec, const char *out, const char *cache, char **stdout_text, ...)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  const char *fixed[] = { "run", spec, "-o", out, "--cache-dir", cache, "-q" };
  for (gsize i = 0; i < G_N_ELEMENTS (fixed); i++)
    g_ptr_array_add (args, (gpointer) fixed[i]);
  va_list ap;
  va_start (ap, stdout_text);
  for (const char *a = va_arg (ap, const char *); a; a = va_arg (ap, const char *))
    g_ptr_array_add (args, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (args, NULL);
  g_autofree char *err = NULL;
  int status = lp_test_run_cliv (stdout_text, &err, (const char *const *) args->pdata);
  if (status != 0)
    g_test_message ("llmpress run failed (%d): %s", status, err);
  return status;
}

static JsonObject *
read_report (const char *out_dir, JsonParser **keep)
{
  g_autofree char *path = g_build_filename (out_dir, "report.json", NULL);
  JsonParser *p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (json_parser_load_from_file (p, path, &error));
  g_assert_no_error (error);
  *keep = p;
  return json_node_get_object (json_parser_get_root (p));
}

static JsonObject *
report_node (JsonObject *report, const char *name)
{
  JsonArray *nodes = json_object_get_array_member (report, "nodes");
  for (guint i = 0; i < json_array_get_length (nodes); i++)
    {
      JsonObject *n = json_array_get_object_element (nodes, i);
      if (strcmp (json_object_get_string_member (n, "name"), name) == 0)
        return n;
    }
  g_error ("report has no node %s", name);
}

static void
assert_same_file (const char *a, const char *b)
{
  g_autofree char *da = NULL, *db = NULL;
  gsize la = 0, lb = 0;
  g_assert_true (g_file_get_contents (a, &da, &la, NULL));
  g_assert_true (g_file_get_contents (b, &db, &lb, NULL));
  g_assert_cmpuint (la, ==, lb);
  g_assert_true (memcmp (da, db, la) == 0);
}

static char *
diamond_spec (const char *name, double factor_a, int sleep_ms)
{
  g_autofree char *model = lp_test_demo_model ();
  return write_spec (name,
                     "[pipeline]\ndescription=diamond\n"
                     "[load]\npath=%s\n"
                     "[a]\npass=test.scale\ninput=load\nfactor=%g\nsleep_ms=%d\n"
                     "[b]\npass=test.scale\ninput=load\nfactor=2\nsleep_ms=%d\n"
                     "[save_a]\npass=save\ninput=a\npath=a.gguf\n"
                     "[eval_b]\npass=eval\ninput=b\nreference=load\n"
                     "[save_b]\npass=save\ninput=b\npath=b.gguf\n",
                     model, factor_a, sleep_ms, sleep_ms);
}

static void
test_diamond_parallel (void)
{
  g_autofree char *spec = diamond_spec ("diamond.ini", 0.5, 600);
  g_autofree char *out_p = tmp_path ("par"), *out_s = tmp_path ("seq");
  g_autofree char *cache_p = tmp_path ("cache-par"), *cache_s = tmp_path ("cache-seq");
  g_assert_cmpint (run_spec (spec, out_p, cache_p, NULL, "-j", "2", NULL), ==, 0);
  g_assert_cmpint (run_spec (spec, out_s, cache_s, NULL, "--scheduler", "sequential", NULL), ==, 0);

  g_autoptr (JsonParser) kp = NULL, ks = NULL;
  JsonObject *rp = read_report (out_p, &kp), *rs = read_report (out_s, &ks);
  g_assert_cmpstr (json_object_get_string_member (rp, "scheduler"), ==, "parallel");
  g_assert_cmpstr (json_object_get_string_member (rs, "scheduler"), ==, "sequential");
  JsonObject *a = report_node (rp, "a"), *b = report_node (rp, "b");
  double a0 = json_object_get_double_member (a, "started"), a1 = json_object_get_double_member (a, "finished");
  double b0 = json_object_get_double_member (b, "started"), b1 = json_object_get_double_member (b, "finished");
  g_test_message ("parallel: a %.3f-%.3f, b %.3f-%.3f", a0, a1, b0, b1);
  g_assert_true (a0 < b1 && b0 < a1); /* overlapping */
  g_assert_nonnull (json_object_get_string_member (a, "started_at"));
  JsonObject *sa = report_node (rs, "a"), *sb = report_node (rs, "b");
  g_assert_true (json_object_get_double_member (sa, "finished") <= json_object_get_double_member (sb, "started")
                 || json_object_get_double_member (sb, "finished") <= json_object_get_double_member (sa, "started"));

  const char *files[] = { "a.gguf", "b.gguf" };
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *p = g_build_filename (out_p, files[i], NULL), *s = g_build_filename (out_s, files[i], NULL);
      assert_same_file (p, s);
    }
  /* The branches really differ, and eval's metrics made it to the report. */
  g_autoptr (GError) error = NULL;
  g_autofree char *pa = g_build_filename (out_p, "a.gguf", NULL), *pb = g_build_filename (out_p, "b.gguf", NULL);
  g_autoptr (LpModel) ma = lp_model_load (pa, NULL, &error);
  g_autoptr (LpModel) mb = lp_model_load (pb, NULL, &error);
  g_assert_no_error (error);
  g_assert_false (g_bytes_equal (lp_model_tensor (ma, "blk.0.ffn_up.weight")->data,
                                 lp_model_tensor (mb, "blk.0.ffn_up.weight")->data));
  JsonObject *metrics = json_object_get_object_member (report_node (rp, "eval_b"), "metrics");
  g_assert_nonnull (metrics);
  g_assert_cmpfloat (json_object_get_double_member (metrics, "bits_per_weight"), ==, 32.0);
  g_assert_cmpfloat (json_object_get_double_member (metrics, "compression_ratio"), ==, 1.0);
}

/* node -> "run" / "reused" from --explain output. */
static GHashTable *
parse_explain (const char *out)
{
  GHashTable *h = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
  for (char **l = lines; *l; l++)
    {
      if (!g_str_has_prefix (*l, "explain: "))
        continue;
      g_auto (GStrv) f = g_strsplit (*l + 9, ": ", 3);
      g_assert_cmpuint (g_strv_length (f), ==, 3);
      g_hash_table_insert (h, g_strdup (f[0]), g_strdup (f[1]));
    }
  return h;
}

static void
assert_actions (GHashTable *h, const char *const *ran, const char *const *reused)
{
  for (const char *const *n = ran; *n; n++)
    g_assert_cmpstr (g_hash_table_lookup (h, *n), ==, "run");
  for (const char *const *n = reused; *n; n++)
    g_assert_cmpstr (g_hash_table_lookup (h, *n), ==, "reused");
  g_assert_cmpuint (g_hash_table_size (h), ==, g_strv_length ((char **) ran) + g_strv_length ((char **) reused));
}

static void
test_cache_reuse (void)
{
  g_autofree char *spec = diamond_spec ("cache.ini", 0.5, 200);
  g_autofree char *out = tmp_path ("cache-out"), *cache = tmp_path ("cache-reuse");
  g_autofree char *o1 = NULL, *o2 = NULL, *o3 = NULL, *o4 = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &o1, "--explain", NULL), ==, 0);
  g_autoptr (JsonParser) k1 = NULL;
  double first = json_object_get_double_member (read_report (out, &k1), "duration");

  g_assert_cmpint (run_spec (spec, out, cache, &o2, "--explain", NULL), ==, 0);
  g_autoptr (JsonParser) k2 = NULL;
  JsonObject *r2 = read_report (out, &k2);
  double second = json_object_get_double_member (r2, "duration");
  g_test_message ("first run %.3f s, second run %.3f s (%.1f%%)", first, second, 100 * second / first);
  JsonArray *nodes = json_object_get_array_member (r2, "nodes");
  for (guint i = 0; i < json_array_get_length (nodes); i++)
    g_assert_true (json_object_get_boolean_member (json_array_get_object_element (nodes, i), "cache_hit"));
  g_autoptr (GHashTable) h2 = parse_explain (o2);
  const char *all[] = { "load", "a", "b", "save_a", "eval_b", "save_b", NULL }, *none[] = { NULL };
  assert_actions (h2, none, all);
  /* Reused metrics are still reported. */
  g_assert_true (json_object_has_member (report_node (r2, "eval_b"), "metrics"));

  /* One parameter changed: that node and what depends on it. */
  g_autofree char *spec2 = diamond_spec ("cache.ini", 0.25, 200);
  g_assert_cmpint (run_spec (spec2, out, cache, &o3, "--explain", NULL), ==, 0);
  g_autoptr (GHashTable) h3 = parse_explain (o3);
  const char *ran[] = { "a", "save_a", NULL }, *kept[] = { "load", "b", "eval_b", "save_b", NULL };
  assert_actions (h3, ran, kept);
  g_assert_nonnull (strstr (o3, "explain: a: run: param factor changed: 0.5 -> 0.25"));
  g_assert_nonnull (strstr (o3, "explain: save_a: run: input 'input' changed (a has a new output)"));

  /* A removed output is noticed; a parameter outside the key is not a change. */
  g_autofree char *b_out = g_build_filename (out, "b.gguf", NULL);
  g_assert_cmpint (g_unlink (b_out), ==, 0);
  g_assert_cmpint (run_spec (spec2, out, cache, &o4, "--explain", NULL), ==, 0);
  g_autoptr (GHashTable) h4 = parse_explain (o4);
  const char *ran4[] = { "save_b", NULL }, *kept4[] = { "load", "a", "b", "save_a", "eval_b", NULL };
  assert_actions (h4, ran4, kept4);
  g_assert_true (g_file_test (b_out, G_FILE_TEST_IS_REGULAR));

  /* The calibration data is in the keys of the passes that read it only
   * (test_cache_calibration): no pass here does, so giving it, or a new
   * one, reruns nothing. */
  g_autofree char *calib = lp_test_write_file ("calib.txt", "once upon a time", 16);
  g_autofree char *o6 = NULL, *o7 = NULL;
  g_assert_cmpint (run_spec (spec2, out, cache, &o6, "--explain", "--calib", calib, NULL), ==, 0);
  g_autoptr (GHashTable) h6 = parse_explain (o6);
  assert_actions (h6, none, all);
  g_autofree char *calib2 = lp_test_write_file ("calib.txt", "there was a cat", 15);
  g_assert_cmpint (run_spec (spec2, out, cache, &o7, "--explain", "--calib", calib2, NULL), ==, 0);
  g_autoptr (GHashTable) h7 = parse_explain (o7);
  assert_actions (h7, none, all);

  /* --no-cache runs everything and stores nothing new. */
  g_autofree char *o5 = NULL;
  g_assert_cmpint (run_spec (spec2, out, cache, &o5, "--explain", "--no-cache", NULL), ==, 0);
  g_autoptr (GHashTable) h5 = parse_explain (o5);
  assert_actions (h5, all, none);
}

/* A sweep's branches run and are cached one by one: each branch has the
 * key the same node written without a list has, and lengthening the list
 * runs the new branch only. */
static void
test_sweep_cache (void)
{
  g_autofree char *model = lp_test_demo_model ();
#define SWEEP_SPEC "[load]\npath=%s\n[s]\npass=test.scale\nfactor=%s\n[eval]\nreference=load\n[save]\ninput=s\npath=s.gguf\n"
  g_autofree char *spec = write_spec ("sweep.ini", SWEEP_SPEC, model, "0.5,2");
  g_autofree char *out = tmp_path ("sweep-out"), *cache = tmp_path ("sweep-cache");
  g_autofree char *o1 = NULL, *o2 = NULL, *o3 = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &o1, "--explain", "-j", "2", NULL), ==, 0);
  g_autoptr (GHashTable) h1 = parse_explain (o1);
  const char *all[] = { "load", "s[factor=0.5]", "s[factor=2]", "eval[factor=0.5]", "eval[factor=2]",
                        "save[factor=0.5]", "save[factor=2]", NULL }, *none[] = { NULL };
  assert_actions (h1, all, none);
  g_autoptr (JsonParser) k1 = NULL;
  JsonObject *r1 = read_report (out, &k1);
  JsonObject *m = json_object_get_object_member (report_node (r1, "eval[factor=2]"), "metrics");
  g_assert_cmpfloat (json_object_get_double_member (m, "compression_ratio"), ==, 1.0);
  g_autofree char *f05 = g_build_filename (out, "s.factor=0.5.gguf", NULL), *f2 = g_build_filename (out, "s.factor=2.gguf", NULL);
  g_assert_true (g_file_test (f05, G_FILE_TEST_IS_REGULAR) && g_file_test (f2, G_FILE_TEST_IS_REGULAR));

  /* The same node without a list is the branch's cache entry. */
  g_autofree char *plain = write_spec ("plain.ini", "[load]\npath=%s\n[s]\npass=test.scale\nfactor=2\n", model);
  g_assert_cmpint (run_spec (plain, out, cache, &o2, "--explain", NULL), ==, 0);
  g_autoptr (GHashTable) h2 = parse_explain (o2);
  const char *plain_nodes[] = { "load", "s", NULL };
  assert_actions (h2, none, plain_nodes);

  g_autofree char *spec3 = write_spec ("sweep.ini", SWEEP_SPEC, model, "0.5,2,4");
  g_assert_cmpint (run_spec (spec3, out, cache, &o3, "--explain", NULL), ==, 0);
  g_autoptr (GHashTable) h3 = parse_explain (o3);
  const char *ran[] = { "s[factor=4]", "eval[factor=4]", "save[factor=4]", NULL };
  assert_actions (h3, ran, all);
}

/* load -> calibrate -> save_stats, and load -> save, on `samples`
 * calibration samples of 8 tokens. */
static char *
calib_spec (int samples)
{
  g_autofree char *model = lp_test_demo_model ();
  return write_spec ("calib.ini",
                     "[pipeline]\ncalibration_samples=%d\ncalibration_seq_len=8\n"
                     "[load]\npath=%s\n"
                     "[stats]\npass=calibrate\ninput=load\n"
                     "[save_stats]\npass=save_stats\ninput=stats\npath=stats.gguf\n"
                     "[save]\npass=save\ninput=load\npath=m.gguf\n",
                     samples, model);
}

/* A new calibration file reruns the passes that declare
 * LP_PASS_USES_CALIBRATION and what depends on them, never load or save. */
static void
test_cache_calibration (void)
{
  const char *text1 = "once upon a time there was a little cat who liked to play in the sun every day";
  const char *text2 = "there was a big dog that ran to the park and found a red ball under a tree";
  g_autofree char *calib1 = lp_test_write_file ("calib1.txt", text1, strlen (text1));
  g_autofree char *calib2 = lp_test_write_file ("calib2.txt", text2, strlen (text2));
  g_autofree char *spec = calib_spec (2);
  g_autofree char *out = tmp_path ("calib-out"), *cache = tmp_path ("calib-cache");
  g_autofree char *o1 = NULL, *o2 = NULL, *o3 = NULL;
  const char *all[] = { "load", "stats", "save_stats", "save", NULL }, *none[] = { NULL };
  g_assert_cmpint (run_spec (spec, out, cache, &o1, "--explain", "--calib", calib1, NULL), ==, 0);
  g_autoptr (GHashTable) h1 = parse_explain (o1);
  assert_actions (h1, all, none);

  g_assert_cmpint (run_spec (spec, out, cache, &o2, "--explain", "--calib", calib2, NULL), ==, 0);
  g_autoptr (GHashTable) h2 = parse_explain (o2);
  const char *ran[] = { "stats", "save_stats", NULL }, *kept[] = { "load", "save", NULL };
  assert_actions (h2, ran, kept);
  g_assert_nonnull (strstr (o2, "explain: stats: run: calibration data changed"));

  /* The calibration settings belong to the same keys. */
  g_autofree char *spec3 = calib_spec (3);
  g_assert_cmpint (run_spec (spec3, out, cache, &o3, "--explain", "--calib", calib2, NULL), ==, 0);
  g_autoptr (GHashTable) h3 = parse_explain (o3);
  assert_actions (h3, ran, kept);
}

static gboolean
has_entry (const char *cache)
{
  guint entries, temporaries;
  lp_test_cache_count (cache, &entries, &temporaries);
  return entries > 0;
}

static void
test_sigkill_resume (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *spec = write_spec ("kill.ini", "[load]\npath=%s\n[slow]\npass=test.scale\nfactor=3\nsleep_ms=1500\n"
                                                  "[save]\npath=final.gguf\n", model);
  g_autofree char *out = tmp_path ("kill-out"), *cache = tmp_path ("kill-cache");
  const char *argv[] = { g_getenv ("LLMPRESS_BIN"), "run", spec, "-o", out, "--cache-dir", cache, "-q", NULL };
  GPid pid;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_spawn_async (NULL, (char **) argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                                NULL, NULL, &pid, &error));
  g_assert_no_error (error);
  /* Kill it as soon as the first node's output is in the cache. */
  for (int i = 0; i < 3000 && !has_entry (cache); i++)
    g_usleep (2000);
  g_assert_true (has_entry (cache));
  kill (pid, SIGKILL);
  int status;
  waitpid (pid, &status, 0);
  g_spawn_close_pid (pid);
  g_assert_true (WIFSIGNALED (status));
  g_autofree char *final = g_build_filename (out, "final.gguf", NULL);
  if (g_file_test (final, G_FILE_TEST_EXISTS))
    {
      g_autoptr (LpModel) m = lp_model_load (final, NULL, &error);
      g_assert_no_error (error); /* complete, never truncated */
    }

  g_autofree char *o = NULL;
  g_assert_cmpint (run_spec (spec, out, cache, &o, "--explain", NULL), ==, 0);
  g_autoptr (GHashTable) h = parse_explain (o);
  const char *ran[] = { "slow", "save", NULL }, *kept[] = { "load", NULL };
  assert_actions (h, ran, kept);
  g_autoptr (LpModel) m = lp_model_load (final, NULL, &error);
  g_assert_no_error (error);
  g_autofree char *cache_gc_out = NULL;
  const char *gc[] = { "cache", "gc", "--cache-dir", cache, NULL };
  g_assert_cmpint (lp_test_run_cliv (&cache_gc_out, NULL, gc), ==, 0);
  g_assert_nonnull (strstr (cache_gc_out, "removed"));
}

static void
test_dry_run_and_errors (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *out = tmp_path ("dry-out"), *cache = tmp_path ("dry-cache");
  g_autofree char *inline_spec = g_strdup_printf ("load path=%s ! eval ! save path=o.gguf", model);
  const char *args[] = { "run", "-p", inline_spec, "-o", out, "--cache-dir", cache, "--dry-run", NULL };
  g_autofree char *o = NULL;
  g_assert_cmpint (lp_test_run_cliv (&o, NULL, args), ==, 0);
  g_assert_nonnull (strstr (o, "explain: save: would run: no cache entry"));
  g_autofree char *o_path = g_build_filename (out, "o.gguf", NULL);
  g_assert_false (g_file_test (o_path, G_FILE_TEST_EXISTS));

  /* A failing pass names the node and its spec line; nothing is written. */
  g_autofree char *spec = write_spec ("fail.ini", "[load]\npath=%s/absent.gguf\n[save]\npath=x.gguf\n", lp_test_tmpdir ());
  g_autofree char *err = NULL;
  const char *fail[] = { "run", spec, "-o", out, "--cache-dir", cache, "-q", NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, &err, fail), ==, 1);
  g_assert_nonnull (strstr (err, "fail.ini:1: load:"));
  g_assert_nonnull (strstr (err, "absent.gguf"));

  /* Writing over the input is refused before anything runs. */
  g_autofree char *over = write_spec ("over.ini", "[load]\npath=%s\n[save]\npath=%s\n", model, model);
  g_autofree char *err2 = NULL;
  const char *o_args[] = { "run", over, "-o", out, "--cache-dir", cache, "-q", NULL };
  g_assert_cmpint (lp_test_run_cliv (NULL, &err2, o_args), ==, 1);
  g_assert_nonnull (strstr (err2, "over.ini:3: [save] path="));
  g_assert_nonnull (strstr (err2, "would overwrite a file the pipeline reads: [load]"));
}

/* Scheduler unit tests: a fake job records how many jobs (and device jobs)
 * run at once and the order they start in. */
typedef struct {
  LpSchedJob *jobs;
  gint running, device_running, max_running, max_device;
  GMutex lock;
  GArray *started;
  int fail_job;
} Fake;

static gboolean
fake_exec (gpointer data, guint job, GError **error)
{
  Fake *f = data;
  g_mutex_lock (&f->lock);
  g_array_append_val (f->started, job);
  f->running++;
  f->device_running += f->jobs[job].device;
  f->max_running = MAX (f->max_running, f->running);
  f->max_device = MAX (f->max_device, f->device_running);
  g_mutex_unlock (&f->lock);
  g_usleep (60000);
  g_mutex_lock (&f->lock);
  f->running--;
  f->device_running -= f->jobs[job].device;
  g_mutex_unlock (&f->lock);
  if ((int) job == f->fail_job)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "job %u failed", job);
      return FALSE;
    }
  return TRUE;
}

static Fake *
fake_run (LpSchedJob *jobs, guint n, guint threads, guint64 mem, guint devices, int fail_job, GError **error)
{
  Fake *f = g_new0 (Fake, 1);
  f->jobs = jobs;
  f->fail_job = fail_job;
  g_mutex_init (&f->lock);
  f->started = g_array_new (FALSE, FALSE, sizeof (guint));
  LpSchedule s = { jobs, n, fake_exec, f, threads, mem, devices };
  gboolean ok = lp_schedule_parallel (&s, error);
  g_assert_true (ok == (error == NULL || *error == NULL));
  return f;
}

static void
fake_free (Fake *f)
{
  g_array_unref (f->started);
  g_mutex_clear (&f->lock);
  g_free (f);
}

static void
test_sched_memory (void)
{
  LpSchedJob jobs[3] = { { .priority = 1, .memory = 600 }, { .priority = 1, .memory = 600 }, { .priority = 1, .memory = 600 } };
  Fake *f = fake_run (jobs, 3, 3, 1000, 0, -1, NULL);
  g_assert_cmpint (f->max_running, ==, 1);
  fake_free (f);
  f = fake_run (jobs, 3, 3, 0, 0, -1, NULL);
  g_assert_cmpint (f->max_running, ==, 3);
  fake_free (f);
  /* Bigger than the whole budget: runs alone instead of never. */
  LpSchedJob big[2] = { { .priority = 1, .memory = 5000 }, { .priority = 1, .memory = 10 } };
  f = fake_run (big, 2, 2, 1000, 0, -1, NULL);
  g_assert_cmpuint (f->started->len, ==, 2);
  g_assert_cmpint (f->max_running, ==, 1);
  fake_free (f);
}

static void
test_sched_devices (void)
{
  LpSchedJob jobs[3] = { { .priority = 1, .device = TRUE }, { .priority = 1, .device = TRUE }, { .priority = 1 } };
  Fake *f = fake_run (jobs, 3, 3, 0, 1, -1, NULL);
  g_assert_cmpint (f->max_device, ==, 1);
  g_assert_cmpint (f->max_running, ==, 2); /* the CPU job runs beside a device job */
  fake_free (f);
}

static void
test_sched_priority_and_failure (void)
{
  /* 0 -> 1 -> 2 is the long chain, 3 stands alone: one thread starts 0 first. */
  guint s0[] = { 1 }, s1[] = { 2 };
  LpSchedJob jobs[4] = { { 0, s0, 1, 3.0 }, { 1, s1, 1, 2.0 }, { 1, NULL, 0, 1.0 }, { 0, NULL, 0, 1.5 } };
  Fake *f = fake_run (jobs, 4, 1, 0, 0, -1, NULL);
  g_assert_cmpuint (g_array_index (f->started, guint, 0), ==, 0);
  g_assert_cmpuint (g_array_index (f->started, guint, 1), ==, 1); /* 1 (2.0) before 3 (1.5) */
  g_assert_cmpuint (g_array_index (f->started, guint, 2), ==, 3);
  fake_free (f);
  /* A failure: its successors never start, the error comes back. */
  g_autoptr (GError) error = NULL;
  f = fake_run (jobs, 4, 1, 0, 0, 0, &error);
  g_assert_error (error, LP_ERROR, LP_ERROR_FAILED);
  g_assert_cmpuint (f->started->len, ==, 1);
  fake_free (f);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autofree char *path = g_strdup_printf ("%s:%s", g_getenv ("LLMPRESS_PLUGIN_PATH"), g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", path, TRUE);
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "default-cache", NULL);
  g_setenv ("LLMPRESS_CACHE_DIR", cache, TRUE);
  g_test_add_func ("/sched/memory-limit", test_sched_memory);
  g_test_add_func ("/sched/device-pool", test_sched_devices);
  g_test_add_func ("/sched/priority-and-failure", test_sched_priority_and_failure);
  g_test_add_func ("/run/diamond-parallel", test_diamond_parallel);
  g_test_add_func ("/run/cache-reuse", test_cache_reuse);
  g_test_add_func ("/run/sweep-cache", test_sweep_cache);
  g_test_add_func ("/run/cache-calibration", test_cache_calibration);
  g_test_add_func ("/run/sigkill-resume", test_sigkill_resume);
  g_test_add_func ("/run/dry-run-and-errors", test_dry_run_and_errors);
  return g_test_run ();
}
