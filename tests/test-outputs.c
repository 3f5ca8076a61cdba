/* The output promise: a command changes exactly the output path it was
 * given.  Each test creates the situation through the built command (a
 * symlinked output, an output onto the input's directory, a save over the
 * calibration file, a FIFO input, a stale temporary, a failed write...) and
 * checks that nothing else changed. */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "testutil.h"

/* Every command here runs under a timeout: a FIFO that blocks it fails the
 * test (exit 124) instead of hanging it. */
#define TIMEOUT "exec timeout 60"

static int
run (char **out, char **err, const char *const *args)
{
  int rc = lp_test_run_cli_wrapped (out, err, TIMEOUT, args);
  if (rc == 124)
    g_error ("llmpress %s ... did not finish within 60 s", args[0]);
  return rc;
}

#define RUN(out, err, ...) run (out, err, (const char *const[]) { __VA_ARGS__, NULL })

/* Exit 1 and stderr holding every fragment (a spec's problems come one per
 * line, then a count). */
#define EXPECT_SPEC_FAILURE(fragment, ...)                                     \
  G_STMT_START                                                                 \
  {                                                                            \
    g_autofree char *err_ = NULL;                                              \
    g_assert_cmpint (RUN (NULL, &err_, __VA_ARGS__), ==, 1);                   \
    if (strstr (err_, fragment) == NULL)                                       \
      g_error ("error \"%s\" lacks \"%s\"", err_, fragment);                  \
  }                                                                            \
  G_STMT_END

/* Exit 1 and exactly one line "llmpress: ..." holding every fragment. */
#define EXPECT_FAILURE(fragments, ...)                                         \
  G_STMT_START                                                                 \
  {                                                                            \
    g_autofree char *out_ = NULL, *err_ = NULL;                                \
    int rc_ = RUN (&out_, &err_, __VA_ARGS__);                                 \
    expect_one_line (rc_, err_, (const char *const[]) fragments);              \
  }                                                                            \
  G_STMT_END
#define FRAGS(...) { __VA_ARGS__, NULL }

static void
expect_one_line (int rc, const char *err, const char *const *fragments)
{
  if (rc != 1 || !g_str_has_prefix (err, "llmpress: ") || lp_test_count_lines (err) != 1)
    g_error ("expected exit 1 and one line \"llmpress: ...\", found exit %d and stderr \"%s\"", rc, err);
  for (const char *const *f = fragments; *f; f++)
    if (strstr (err, *f) == NULL)
      g_error ("error \"%s\" lacks \"%s\"", err, *f);
}

static void
expect_ok (const char *const *args)
{
  g_autofree char *out = NULL, *err = NULL;
  int rc = run (&out, &err, args);
  if (rc != 0)
    g_error ("llmpress %s failed (exit %d): %s", args[0], rc, err);
}
#define EXPECT_OK(...) expect_ok ((const char *const[]) { __VA_ARGS__, NULL })

static void
assert_text (const char *path, const char *want)
{
  g_autofree char *have = lp_test_read_text (path);
  g_assert_cmpstr (have, ==, want);
}

/* No temporary (".NAME.tmp-XXXXXX") in dir. */
static void
assert_no_temporaries (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    if (strstr (name, ".tmp-") != NULL)
      g_error ("temporary %s left in %s", name, dir);
}

static guint
count_entries (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  guint n = 0;
  while (d != NULL && g_dir_read_name (d) != NULL)
    n++;
  return n;
}

static gboolean
is_symlink (const char *path)
{
  GStatBuf st;
  return g_lstat (path, &st) == 0 && S_ISLNK (st.st_mode);
}

/* 1. Symlinks: the link is the output, replaced; its target is not touched. */
static void
test_symlink_to_directory (void)
{
  g_autofree char *dir = lp_test_mkdir ("symdir");
  g_autofree char *victim = g_build_filename (dir, "victim", NULL);
  g_assert_cmpint (g_mkdir (victim, 0755), ==, 0);
  g_autofree char *precious = g_build_filename (victim, "precious.txt", NULL);
  lp_test_write_text (precious, "keep me");
  g_autofree char *link = g_build_filename (dir, "out", NULL);
  g_assert_cmpint (symlink (victim, link), ==, 0);

  /* A directory output through the link: a new directory replaces the link. */
  EXPECT_OK ("synth", link, "--format", "hf");
  g_assert_false (is_symlink (link));
  g_autofree char *cfg = g_build_filename (link, "config.json", NULL);
  g_assert_true (g_file_test (cfg, G_FILE_TEST_IS_REGULAR));
  assert_text (precious, "keep me");
  g_assert_cmpuint (count_entries (victim), ==, 1);
  assert_no_temporaries (dir);

  /* Replaced again, whole (as the cache replaces its entries): the library's
   * removal never follows a link either. */
  g_autofree char *link2 = g_build_filename (dir, "out2", NULL);
  g_assert_cmpint (symlink (victim, link2), ==, 0);
  lp_remove_tree (link2);
  g_assert_false (g_file_test (link2, G_FILE_TEST_EXISTS) || is_symlink (link2));
  assert_text (precious, "keep me");
  g_autoptr (GError) error = NULL;
  g_autofree char *link3 = g_build_filename (dir, "out3", NULL);
  g_assert_cmpint (symlink (victim, link3), ==, 0);
  LpAtomicDir *ad = lp_atomic_dir_new (link3, &error);
  g_assert_no_error (error);
  g_assert_true (lp_atomic_dir_commit (ad, &error));
  g_assert_no_error (error);
  g_assert_false (is_symlink (link3));
  assert_text (precious, "keep me");
  g_assert_cmpuint (count_entries (victim), ==, 1);
}

static void
test_symlink_to_file (void)
{
  g_autofree char *dir = lp_test_mkdir ("symfile");
  g_autofree char *target = g_build_filename (dir, "target.gguf", NULL);
  lp_test_write_text (target, "not a model, keep me");
  g_autofree char *link = g_build_filename (dir, "out.gguf", NULL);
  g_assert_cmpint (symlink (target, link), ==, 0);
  EXPECT_OK ("synth", link);
  g_assert_false (is_symlink (link));
  g_assert_true (g_file_test (link, G_FILE_TEST_IS_REGULAR));
  assert_text (target, "not a model, keep me");
  assert_no_temporaries (dir);
}

/* 2. Directory outputs: refused over other people's files; a previous
 * output of ours is replaced file by file, and only its own files. */
static void
test_directory_outputs (void)
{
  g_autofree char *dir = lp_test_mkdir ("hfdirs");
  g_autofree char *busy = g_build_filename (dir, "busy", NULL);
  g_assert_cmpint (g_mkdir (busy, 0755), ==, 0);
  g_autofree char *notes = g_build_filename (busy, "notes.txt", NULL);
  lp_test_write_text (notes, "mine");
  EXPECT_FAILURE (FRAGS ("busy", "refusing to write into a directory that holds other files", "notes.txt"), "synth", busy,
                  "--format", "hf");
  g_assert_cmpuint (count_entries (busy), ==, 1);
  assert_no_temporaries (dir);

  /* An empty directory is fine. */
  g_autofree char *empty = g_build_filename (dir, "empty", NULL);
  g_assert_cmpint (g_mkdir (empty, 0755), ==, 0);
  EXPECT_OK ("synth", empty, "--format", "hf");
  g_autofree char *manifest = g_build_filename (empty, ".llmpress-output", NULL);
  g_assert_true (g_file_test (manifest, G_FILE_TEST_IS_REGULAR));

  /* Our own output again: its files replaced, the user's README kept, and a
   * file the old output listed but the new one lacks removed. */
  g_autofree char *readme = g_build_filename (empty, "README.md", NULL);
  lp_test_write_text (readme, "# my notes");
  g_autofree char *old_shard = g_build_filename (empty, "model-00002-of-00002.safetensors", NULL);
  lp_test_write_text (old_shard, "old shard");
  g_autofree char *m = lp_test_read_text (manifest);
  g_autofree char *m2 = g_strconcat (m, "model-00002-of-00002.safetensors\n", NULL);
  lp_test_write_text (manifest, m2);
  g_autofree char *weights = g_build_filename (empty, "model.safetensors", NULL);
  g_autofree char *before = lp_test_read_text (weights);
  EXPECT_OK ("synth", empty, "--format", "hf", "--seed", "5");
  g_autofree char *after = lp_test_read_text (weights);
  g_assert_true (g_file_test (weights, G_FILE_TEST_IS_REGULAR));
  assert_text (readme, "# my notes");
  g_assert_false (g_file_test (old_shard, G_FILE_TEST_EXISTS));
  assert_no_temporaries (dir);
  g_autofree char *m3 = lp_test_read_text (manifest);
  g_assert_null (strstr (m3, "README.md"));
  g_assert_null (strstr (m3, "00002"));

  /* A file by one of our names that our manifest does not list is the user's:
   * refused, kept. */
  g_autofree char *gen = g_build_filename (empty, "generation_config.json", NULL);
  lp_test_write_text (gen, "{\"mine\": true}");
  g_autofree char *m4 = lp_test_read_text (manifest);
  GString *m5 = g_string_new (m4);
  g_string_replace (m5, "generation_config.json\n", "", 0);
  lp_test_write_text (manifest, m5->str);
  g_string_free (m5, TRUE);
  EXPECT_FAILURE (FRAGS ("refusing to replace generation_config.json"), "synth", empty, "--format", "hf", "--seed", "7");
  assert_text (gen, "{\"mine\": true}");
  assert_no_temporaries (dir);
  g_assert_cmpint (g_unlink (gen), ==, 0);

  /* A manifest of another kind is not ours to replace. */
  g_autofree char *other = g_build_filename (dir, "other", NULL);
  g_assert_cmpint (g_mkdir (other, 0755), ==, 0);
  g_autofree char *other_manifest = g_build_filename (other, ".llmpress-output", NULL);
  lp_test_write_text (other_manifest, "llmpress-output something-else\nx\n");
  EXPECT_FAILURE (FRAGS ("previous llmpress output of kind something-else"), "synth", other, "--format", "hf");

  /* A manifest never sends removal outside its directory. */
  g_autofree char *outside = g_build_filename (dir, "outside.txt", NULL);
  lp_test_write_text (outside, "outside");
  g_autofree char *evil = g_strconcat (m3, "../outside.txt\n", NULL);
  lp_test_write_text (manifest, evil);
  EXPECT_OK ("synth", empty, "--format", "hf", "--seed", "6");
  assert_text (outside, "outside");
}

/* 3. Never a file the command reads. */
static void
test_convert_never_over_inputs (void)
{
  g_autofree char *dir = lp_test_mkdir ("reads");
  g_autofree char *hf = g_build_filename (dir, "hf", NULL);
  EXPECT_OK ("synth", hf, "--format", "hf");
  g_autofree char *cfg = g_build_filename (hf, "config.json", NULL);
  g_autofree char *cfg_before = lp_test_read_text (cfg);
  /* Onto the model's own directory, into it, a file in it. */
  EXPECT_FAILURE (FRAGS ("would overwrite the model's own input"), "convert", hf, hf);
  g_autofree char *inner = g_build_filename (hf, "sub", NULL);
  EXPECT_FAILURE (FRAGS ("would write inside the model's own input"), "convert", hf, inner);
  g_autofree char *weights = g_build_filename (hf, "model.safetensors", NULL);
  EXPECT_FAILURE (FRAGS ("would write inside the model's own input"), "convert", hf, weights, "--format", "hf");
  assert_text (cfg, cfg_before);
  g_assert_false (g_file_test (inner, G_FILE_TEST_EXISTS));

  /* A directory output around the input file. */
  g_autofree char *around = g_build_filename (dir, "around", NULL);
  g_autofree char *gguf = g_build_filename (around, "m.gguf", NULL);
  g_assert_cmpint (g_mkdir (around, 0755), ==, 0);
  EXPECT_OK ("synth", gguf);
  EXPECT_FAILURE (FRAGS ("would replace a directory holding the model's own input"), "convert", gguf, around,
                  "--format", "hf");

  /* Another name for the same file (a hard link): same device and inode. */
  g_autofree char *hard = g_build_filename (dir, "hard.gguf", NULL);
  g_assert_cmpint (link (gguf, hard), ==, 0);
  EXPECT_FAILURE (FRAGS ("would overwrite the model's own input"), "convert", gguf, hard);

  /* The tokenizer beside a llama2.c checkpoint, and one given with --tokenizer. */
  g_autofree char *l2c_dir = lp_test_mkdir ("reads/l2c");
  g_autofree char *l2c = g_build_filename (l2c_dir, "m.bin", NULL);
  EXPECT_OK ("synth", l2c, "--format", "llama2c");
  g_autofree char *tok = g_build_filename (l2c_dir, "tokenizer.bin", NULL);
  g_assert_true (g_file_test (tok, G_FILE_TEST_IS_REGULAR));
  EXPECT_FAILURE (FRAGS ("would overwrite the tokenizer of the model's own input"), "convert", l2c, tok, "--format",
                  "gguf");
  g_autofree char *tok2 = g_build_filename (dir, "tok2.bin", NULL);
  g_autofree char *tok_bytes = NULL;
  gsize tok_len = 0;
  g_assert_true (g_file_get_contents (tok, &tok_bytes, &tok_len, NULL));
  g_assert_true (g_file_set_contents (tok2, tok_bytes, (gssize) tok_len, NULL));
  EXPECT_FAILURE (FRAGS ("would overwrite the tokenizer of the model's own input"), "convert", l2c, tok2, "--format",
                  "gguf", "--tokenizer", tok2);
  assert_no_temporaries (dir);
  assert_no_temporaries (l2c_dir);
}

/* A spec file in the temporary directory; takes the text. */
static char *
write_spec (const char *name, char *text)
{
  char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  lp_test_write_text (path, text);
  g_free (text);
  return path;
}

static void
test_run_never_over_inputs (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *out = lp_test_mkdir ("run-out");
  g_autofree char *cache = g_build_filename (lp_test_tmpdir (), "run-cache", NULL);
  g_autofree char *calib = g_build_filename (lp_test_tmpdir (), "calib.txt", NULL);
  lp_test_write_text (calib, "Once upon a time there was a little cat. It liked to play in the sun.\n");

  /* Over the calibration data (checked before anything runs). */
  g_autofree char *s1 = write_spec ("calib-over.ini", g_strdup_printf ("[load]\npath=%s\n[save]\npath=%s\n", model, calib));
  EXPECT_FAILURE (FRAGS ("calib-over.ini:3: [save] path=", "would overwrite the calibration data"), "run", s1, "-o", out,
                  "--cache-dir", cache, "--calib", calib, "-q");
  g_autofree char *calib_now = lp_test_read_text (calib);
  g_assert_true (g_str_has_prefix (calib_now, "Once upon a time"));
  /* save_stats over the [pipeline] calibration= file. */
  g_autofree char *s0 = write_spec ("stats-over.ini",
                                    g_strdup_printf ("[pipeline]\ncalibration=%s\n[load]\npath=%s\n[calibrate]\n"
                                                     "[save_stats]\npath=%s\n",
                                                     calib, model, calib));
  EXPECT_FAILURE (FRAGS ("stats-over.ini:6: [save_stats] path=", "would overwrite the calibration data"), "run", s0, "-o",
                  out, "--cache-dir", cache, "-q");
  /* Over the spec file itself. */
  g_autofree char *s2 = g_build_filename (lp_test_tmpdir (), "self.ini", NULL);
  g_autofree char *s2_text = g_strdup_printf ("[load]\npath=%s\n[save]\npath=%s\n", model, s2);
  lp_test_write_text (s2, s2_text);
  EXPECT_FAILURE (FRAGS ("would overwrite the spec file"), "run", s2, "-o", out, "--cache-dir", cache, "-q");
  assert_text (s2, s2_text);
  /* Over the run's report, or a directory holding it. */
  g_autofree char *s3 = write_spec ("report.ini", g_strdup_printf ("[load]\npath=%s\n[save]\npath=report.json\nformat=gguf\n", model));
  EXPECT_FAILURE (FRAGS ("would overwrite the run's report"), "run", s3, "-o", out, "--cache-dir", cache, "-q");
  g_autofree char *s4 = write_spec ("dot.ini", g_strdup_printf ("[load]\npath=%s\n[save]\npath=.\nformat=safetensors\n", model));
  EXPECT_FAILURE (FRAGS ("would replace a directory holding the run's report"), "run", s4, "-o", out, "--cache-dir",
                  cache, "-q");
  /* Over the evaluation data. */
  g_autofree char *s5 = write_spec ("eval-over.ini", g_strdup_printf ("[load]\npath=%s\n[eval]\ndata=%s\n[save]\ninput=load\npath=%s\n",
                                    model, calib, calib));
  EXPECT_FAILURE (FRAGS ("would overwrite a file the pipeline reads: [eval]"), "run", s5, "-o", out, "--cache-dir",
                  cache, "-q");
  /* Nothing ran: no report, no cache. */
  g_assert_cmpuint (count_entries (out), ==, 0);
  g_assert_false (g_file_test (cache, G_FILE_TEST_EXISTS));
}

/* 4. A llama2.c output never replaces a tokenizer.bin of other models. */
static void
test_llama2c_shared_tokenizer (void)
{
  g_autofree char *dir = lp_test_mkdir ("l2c-tok");
  g_autofree char *tok = g_build_filename (dir, "tokenizer.bin", NULL);
  g_autofree char *a = g_build_filename (dir, "a.bin", NULL);
  g_autofree char *b = g_build_filename (dir, "b.bin", NULL);
  /* Same vocabulary: tokenizer.bin is written once and then left alone. */
  EXPECT_OK ("synth", a, "--format", "llama2c");
  GStatBuf st1, st2;
  g_assert_cmpint (g_stat (tok, &st1), ==, 0);
  EXPECT_OK ("synth", b, "--format", "llama2c", "--seed", "3");
  g_assert_cmpint (g_stat (tok, &st2), ==, 0);
  g_assert_cmpuint (st1.st_ino, ==, st2.st_ino);
  g_autofree char *b_tok = g_build_filename (dir, "b.tokenizer.bin", NULL);
  g_assert_false (g_file_test (b_tok, G_FILE_TEST_EXISTS));

  /* Another vocabulary there: kept; ours goes to <stem>.tokenizer.bin, which
   * loading looks for first. */
  g_autofree char *dir2 = lp_test_mkdir ("l2c-tok2");
  g_autofree char *other_tok = g_build_filename (dir2, "tokenizer.bin", NULL);
  lp_test_write_text (other_tok, "another model's vocabulary");
  g_autofree char *c = g_build_filename (dir2, "c.bin", NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint (RUN (&out, &err, "synth", c, "--format", "llama2c"), ==, 0);
  g_assert_nonnull (strstr (err, "c.tokenizer.bin"));
  assert_text (other_tok, "another model's vocabulary");
  g_autofree char *c_tok = g_build_filename (dir2, "c.tokenizer.bin", NULL);
  g_assert_true (g_file_test (c_tok, G_FILE_TEST_IS_REGULAR));
  /* It reads back with its own vocabulary (tokenizer.bin would not parse). */
  g_autofree char *o2 = NULL, *e2 = NULL;
  g_assert_cmpint (RUN (&o2, &e2, "tokenize", c, "Once upon a time"), ==, 0);
  g_assert_cmpstr (e2, ==, "");
}

/* 5. Devices, FIFOs: refused as outputs; as inputs refused without opening. */
static void
test_non_regular_files (void)
{
  g_autofree char *dir = lp_test_mkdir ("fifo");
  g_autofree char *fifo = g_build_filename (dir, "pipe.gguf", NULL);
  g_assert_cmpint (mkfifo (fifo, 0644), ==, 0);
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *dst = g_build_filename (dir, "x.gguf", NULL);

  EXPECT_FAILURE (FRAGS ("pipe.gguf", "refusing to write over a FIFO"), "synth", fifo);
  EXPECT_FAILURE (FRAGS ("/dev/null", "a character device"), "convert", model, "/dev/null");
  EXPECT_FAILURE (FRAGS ("/dev/null", "refusing to write over a character device"), "convert", model, "/dev/null",
                  "--format", "gguf");

  /* Inputs: the model, a tokenizer, evaluation data, calibration data, the
   * spec; none has a writer, so opening any would block. */
  EXPECT_FAILURE (FRAGS ("pipe.gguf: expected a regular file or a directory, found a FIFO"), "convert", fifo, dst);
  EXPECT_FAILURE (FRAGS ("/dev/null: expected a regular file or a directory, found a character device"), "convert",
                  "/dev/null", dst);
  g_autofree char *l2c = g_build_filename (dir, "m.bin", NULL);
  EXPECT_OK ("convert", model, l2c);
  EXPECT_FAILURE (FRAGS ("pipe.gguf: expected a regular file, found a FIFO"), "convert", l2c, dst, "--tokenizer", fifo);
  EXPECT_FAILURE (FRAGS ("expected a regular file, found a FIFO"), "eval", model, "--data", fifo);
  EXPECT_SPEC_FAILURE ("pipe.gguf: expected a regular file, found a FIFO", "run", fifo, "-o", dir, "--no-cache");
  g_autofree char *spec = write_spec ("fifo-calib.ini", g_strdup_printf ("[load]\npath=%s\n[save]\npath=y.gguf\n", model));
  EXPECT_FAILURE (FRAGS ("calibration data", "expected a regular file, found a FIFO"), "run", spec, "-o", dir,
                  "--no-cache", "--calib", fifo);
  g_assert_false (g_file_test (dst, G_FILE_TEST_EXISTS));
}

/* 6. Two sinks writing into each other's outputs: refused at validation. */
static void
test_sinks_into_each_other (void)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *spec = write_spec ("nested.ini", g_strdup_printf ("[load]\npath=%s\n[s1]\npass=save\ninput=load\npath=d\nformat=safetensors\n"
                                      "[s2]\npass=save\ninput=load\npath=d/x.gguf\n",
                                      model));
  EXPECT_SPEC_FAILURE ("nested.ini:8: [s2] path=d/x.gguf: writes inside the output of [s1]", "validate",
                       spec);
  g_autofree char *spec2 = write_spec ("nested2.ini", g_strdup_printf ("[load]\npath=%s\n[s1]\npass=save\ninput=load\npath=./d/x.gguf\n"
                                       "[s2]\npass=save\ninput=load\npath=d\nformat=safetensors\n",
                                       model));
  EXPECT_SPEC_FAILURE ("[s2] path=d: would hold the output of [s1]", "validate", spec2);
}

/* 7. Stale temporaries of a killed run go; a live writer's stay. */
static void
test_stale_temporaries (void)
{
  g_autofree char *dir = lp_test_mkdir ("stale");
  g_autofree char *stale_file = g_build_filename (dir, ".out.gguf.tmp-AbC123", NULL);
  lp_test_write_text (stale_file, "half a model");
  g_autofree char *stale_dir = g_build_filename (dir, ".hf.tmp-XyZ789", NULL);
  g_assert_cmpint (g_mkdir (stale_dir, 0755), ==, 0);
  g_autofree char *stale_inner = g_build_filename (stale_dir, "model.safetensors", NULL);
  lp_test_write_text (stale_inner, "half");
  /* A live one: this process holds its lock, as a concurrent writer would. */
  g_autofree char *live = g_build_filename (dir, ".other.gguf.tmp-Live00", NULL);
  lp_test_write_text (live, "being written");
  int fd = open (live, O_RDONLY);
  g_assert_cmpint (flock (fd, LOCK_EX), ==, 0);
  /* A file of the user's that merely looks similar. */
  g_autofree char *user = g_build_filename (dir, ".notes.tmp-file", NULL);
  lp_test_write_text (user, "mine");

  g_autofree char *out = g_build_filename (dir, "out.gguf", NULL);
  EXPECT_OK ("synth", out);
  g_assert_false (g_file_test (stale_file, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (stale_dir, G_FILE_TEST_EXISTS));
  assert_text (live, "being written");
  assert_text (user, "mine");
  close (fd);

  /* Its writer gone (the lock released), the next run removes it. */
  EXPECT_OK ("synth", out, "--seed", "2");
  g_assert_false (g_file_test (live, G_FILE_TEST_EXISTS));
}

/* Writers at once into one directory: each one's cleanup of stale
 * temporaries never takes another's live one (a writer whose temporary
 * vanished would fail to rename it). */
static void
test_concurrent_writers (void)
{
  g_autofree char *dir = lp_test_mkdir ("concurrent");
  const char *bin = g_getenv ("LLMPRESS_BIN");
  enum { WRITERS = 8, ROUNDS = 3 };
  for (int round = 0; round < ROUNDS; round++)
    {
      GPid pids[WRITERS];
      for (int w = 0; w < WRITERS; w++)
        {
          g_autofree char *name = g_strdup_printf (w % 2 ? "m%d.gguf" : "hf%d", w);
          g_autofree char *out = g_build_filename (dir, name, NULL);
          g_autofree char *seed = g_strdup_printf ("%d", round);
          const char *argv[] = { bin, "synth", out, "--seed", seed, "--format", w % 2 ? "gguf" : "hf", NULL };
          g_autoptr (GError) error = NULL;
          g_spawn_async (NULL, (char **) argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                         &pids[w], &error);
          g_assert_no_error (error);
        }
      for (int w = 0; w < WRITERS; w++)
        {
          int status = 0;
          g_assert_cmpint (waitpid (pids[w], &status, 0), ==, pids[w]);
          g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
          g_spawn_close_pid (pids[w]);
        }
    }
  assert_no_temporaries (dir);
  g_assert_cmpuint (count_entries (dir), ==, WRITERS);
}

/* A real kill mid-write: a file size limit makes the kernel kill the
 * process with SIGXFSZ while its temporary is half written, as SIGKILL
 * would; then a rerun. */
static void
test_killed_writer (void)
{
  g_autofree char *dir = lp_test_mkdir ("killed");
  g_autofree char *out = g_build_filename (dir, "m.gguf", NULL);
  const char *args[] = { "synth", out, NULL };
  g_autofree char *err = NULL;
  /* Spilling off: synth's spill file would hit the limit before the output's temporary exists. */
  int rc = lp_test_run_cli_wrapped (NULL, &err, "ulimit -f 64; LLMPRESS_SPILL=0 exec", args);
  g_assert_cmpint (rc, ==, 128 + SIGXFSZ);
  guint temps = 0;
  {
    g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name (d)) != NULL)
      temps += strstr (name, ".tmp-") != NULL;
  }
  g_assert_cmpuint (temps, ==, 1); /* the killed run's, as a real kill leaves it */
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  EXPECT_OK ("synth", out);
  assert_no_temporaries (dir);
  g_assert_true (g_file_test (out, G_FILE_TEST_IS_REGULAR));
}

/* 8. Missing parents are made; a parent that is a file is one clear line;
 * a failed write leaves the previous output and no temporary or parent. */
static void
test_parents_and_failed_writes (void)
{
  g_autofree char *dir = lp_test_mkdir ("parents");
  g_autofree char *deep = g_build_filename (dir, "a", "b", "c", "m.gguf", NULL);
  EXPECT_OK ("synth", deep);
  g_assert_true (g_file_test (deep, G_FILE_TEST_IS_REGULAR));

  g_autofree char *file = g_build_filename (dir, "plain.txt", NULL);
  lp_test_write_text (file, "a file");
  g_autofree char *under = g_build_filename (file, "sub", "m.gguf", NULL);
  EXPECT_FAILURE (FRAGS ("plain.txt is a regular file, not a directory"), "synth", under);
  assert_text (file, "a file");

  /* A write that fails part way (a file size limit; works as root, where
   * permissions would not): no temporary, the old output as it was, and no
   * parent directory left that the failed run created. */
  g_autofree char *prev = g_build_filename (dir, "prev.gguf", NULL);
  EXPECT_OK ("synth", prev);
  g_autofree char *prev_bytes = NULL;
  gsize prev_len = 0;
  g_assert_true (g_file_get_contents (prev, &prev_bytes, &prev_len, NULL));
  const char *args[] = { "synth", prev, "--seed", "9", NULL };
  g_autofree char *err = NULL;
  g_assert_cmpint (lp_test_run_cli_wrapped (NULL, &err, "trap '' XFSZ; ulimit -f 64; exec", args), ==, 1);
  g_assert_nonnull (strstr (err, "prev.gguf"));
  g_autofree char *now_bytes = NULL;
  gsize now_len = 0;
  g_assert_true (g_file_get_contents (prev, &now_bytes, &now_len, NULL));
  g_assert_true (now_len == prev_len && memcmp (now_bytes, prev_bytes, now_len) == 0);
  assert_no_temporaries (dir);

  g_autofree char *fresh_parent = g_build_filename (dir, "new1", NULL);
  g_autofree char *fresh_out = g_build_filename (fresh_parent, "new2", "m.gguf", NULL);
  const char *args2[] = { "synth", fresh_out, NULL };
  g_assert_cmpint (lp_test_run_cli_wrapped (NULL, NULL, "trap '' XFSZ; ulimit -f 64; exec", args2), ==, 1);
  g_assert_false (g_file_test (fresh_parent, G_FILE_TEST_EXISTS));
  /* The same for a directory output. */
  g_autofree char *hf = g_build_filename (dir, "new3", "hf", NULL);
  const char *args3[] = { "synth", hf, "--format", "hf", NULL };
  g_assert_cmpint (lp_test_run_cli_wrapped (NULL, NULL, "trap '' XFSZ; ulimit -f 64; exec", args3), ==, 1);
  g_autofree char *new3 = g_build_filename (dir, "new3", NULL);
  g_assert_false (g_file_test (new3, G_FILE_TEST_EXISTS));
  assert_no_temporaries (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/outputs/symlink-to-directory", test_symlink_to_directory);
  g_test_add_func ("/outputs/symlink-to-file", test_symlink_to_file);
  g_test_add_func ("/outputs/directory-outputs", test_directory_outputs);
  g_test_add_func ("/outputs/convert-never-over-inputs", test_convert_never_over_inputs);
  g_test_add_func ("/outputs/run-never-over-inputs", test_run_never_over_inputs);
  g_test_add_func ("/outputs/llama2c-shared-tokenizer", test_llama2c_shared_tokenizer);
  g_test_add_func ("/outputs/non-regular-files", test_non_regular_files);
  g_test_add_func ("/outputs/sinks-into-each-other", test_sinks_into_each_other);
  g_test_add_func ("/outputs/stale-temporaries", test_stale_temporaries);
  g_test_add_func ("/outputs/concurrent-writers", test_concurrent_writers);
  g_test_add_func ("/outputs/killed-writer", test_killed_writer);
  g_test_add_func ("/outputs/parents-and-failed-writes", test_parents_and_failed_writes);
  return g_test_run ();
}
