/* Byte-level BPE against llama.cpp, on the real SmolLM2-135M vocabulary
 * (../shared/models/smollm2-135m): WikiText-2's test text id for id (count
 * and digest), hard strings under every pre-tokenizer llama.cpp has (the
 * SmolLM2 vocabulary with tokenizer.ggml.pre replaced), and the BOS/EOS the
 * model asks for.  The expected ids in tokenizer-bpe-expected.h are
 * llama.cpp's, measured with contrib/tokenizer-oracle.py (llama-cpp-python);
 * the test needs no Python.  Under make check-slow, with llama_cpp
 * importable, a last case runs the oracle live on a few strings besides. */
#include "config.h"

#include <string.h>

#include "testutil.h"

typedef struct {
  const char *pre;
  int text;             /* index in hard[] */
  guint n;
  const gint32 *ids;
} Expected;

#include "tokenizer-bpe-expected.h"

#define SMOLLM2 "models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"

/* SmolLM2's metadata (owned), or NULL after a skip. */
static LpMeta *
smollm2_meta (void)
{
  g_autofree char *path = lp_test_shared_path (SMOLLM2);
  if (path == NULL)
    return NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) model = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  return lp_meta_copy (lp_model_meta (model));
}

/* FNV-1a 64 of the ids as little-endian int32, as the oracle computes it. */
static guint64
ids_digest (const GArray *ids)
{
  guint64 h = G_GUINT64_CONSTANT (0xcbf29ce484222325);
  for (guint i = 0; i < ids->len; i++)
    {
      guint32 v = (guint32) g_array_index (ids, gint32, i);
      for (int b = 0; b < 4; b++)
        h = (h ^ ((v >> (8 * b)) & 0xff)) * G_GUINT64_CONSTANT (0x100000001b3);
    }
  return h;
}

static void
test_wikitext (void)
{
  g_autoptr (LpMeta) meta = smollm2_meta ();
  g_autofree char *path = meta ? lp_test_shared_path ("data/wikitext-2-raw-test.txt") : NULL;
  if (path == NULL)
    return;
  g_autofree char *text = lp_test_read_text (path);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) ids = lp_tokenizer_encode_full (tok, text, -1, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ids->len, ==, WIKITEXT_N_TOKENS);
  g_assert_cmphex (ids_digest (ids), ==, WIKITEXT_FNV1A64);
}

static char *
ids_string (const gint32 *ids, guint n)
{
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < n; i++)
    g_string_append_printf (s, "%s%d", i ? " " : "", ids[i]);
  return g_string_free (s, FALSE);
}

static void
test_hard_strings (void)
{
  g_autoptr (LpMeta) meta = smollm2_meta ();
  if (meta == NULL)
    return;
  g_autoptr (LpTokenizer) tok = NULL;
  const char *pre = NULL;
  guint wrong = 0;
  for (gsize k = 0; k < G_N_ELEMENTS (expected); k++)
    {
      const Expected *e = &expected[k];
      if (pre == NULL || strcmp (pre, e->pre) != 0)
        {
          g_autoptr (GError) error = NULL;
          pre = e->pre;
          lp_meta_set_string (meta, "tokenizer.ggml.pre", pre);
          g_clear_pointer (&tok, lp_tokenizer_free);
          tok = lp_tokenizer_new_from_meta (meta, &error);
          g_assert_no_error (error);
        }
      g_autoptr (GError) error = NULL;
      g_autoptr (GArray) ids = lp_tokenizer_encode_full (tok, hard[e->text], -1, 0, &error);
      g_assert_no_error (error);
      if (ids->len == e->n && memcmp (ids->data, e->ids, e->n * sizeof (gint32)) == 0)
        continue;
      g_autofree char *got = ids_string ((const gint32 *) ids->data, ids->len);
      g_autofree char *want = ids_string (e->ids, e->n);
      g_test_message ("%s, string %d: llama.cpp %s, ours %s", pre, e->text, want, got);
      wrong++;
    }
  g_assert_cmpuint (wrong, ==, 0);
}

static void
assert_ends (const LpTokenizer *tok, gint32 first, gint32 last)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ids = lp_tokenizer_encode_full (tok, "Hello", -1, LP_TOKENIZE_MODEL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (g_array_index (ids, gint32, 0), ==, first);
  g_assert_cmpint (g_array_index (ids, gint32, ids->len - 1), ==, last);
}

static void
test_add_bos_eos (void)
{
  g_autoptr (LpMeta) meta = smollm2_meta ();
  if (meta == NULL)
    return;
  const gint32 hello = 19556;
  g_autoptr (GError) error = NULL;
  /* The file says add_bos_token = false (BOS is <|im_start|>, 1). */
  g_autoptr (LpTokenizer) t = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);
  gint32 bos = lp_tokenizer_bos (t), eos = lp_tokenizer_eos (t);
  g_assert_cmpint (bos, >=, 0);
  g_assert_false (lp_tokenizer_adds_bos (t));
  g_assert_false (lp_tokenizer_adds_eos (t));
  assert_ends (t, hello, hello);

  lp_meta_set_bool (meta, "tokenizer.ggml.add_bos_token", TRUE);
  lp_meta_set_bool (meta, "tokenizer.ggml.add_eos_token", TRUE);
  g_autoptr (LpTokenizer) both = lp_tokenizer_new_from_meta (meta, &error);
  g_assert_no_error (error);
  g_assert_true (lp_tokenizer_adds_bos (both) && lp_tokenizer_adds_eos (both));
  assert_ends (both, bos, eos);

  /* Unsaid: llama.cpp's default of the pre-tokenizer. */
  lp_meta_remove (meta, "tokenizer.ggml.add_bos_token");
  lp_meta_remove (meta, "tokenizer.ggml.add_eos_token");
  static const struct { const char *pre; gboolean bos; } dflt[] = {
    { "smollm", FALSE }, { "gpt-2", FALSE }, { "qwen2", FALSE }, { "llama-bpe", TRUE }, { "tekken", TRUE } };
  for (gsize k = 0; k < G_N_ELEMENTS (dflt); k++)
    {
      lp_meta_set_string (meta, "tokenizer.ggml.pre", dflt[k].pre);
      g_autoptr (LpTokenizer) d = lp_tokenizer_new_from_meta (meta, &error);
      g_assert_no_error (error);
      g_assert_cmpint (lp_tokenizer_adds_bos (d), ==, dflt[k].bos);
      g_assert_false (lp_tokenizer_adds_eos (d));
    }

  /* The CLI follows the file: no BOS in front for SmolLM2. */
  g_autofree char *path = lp_test_shared_path (SMOLLM2);
  g_autofree char *out = NULL;
  g_assert_cmpint (lp_test_run_cli (&out, NULL, "tokenize", path, "--ids", "Hello", NULL), ==, 0);
  g_assert_cmpstr (out, ==, "19556\n");
}

/* The oracle itself, under make check-slow (it takes half a minute or
 * more) when llama-cpp-python is there: a few strings under three
 * pre-tokenizers, ours against llama.cpp's now. */
static void
test_live (void)
{
  if (!lp_test_slow ())
    return;
  g_autofree char *model = lp_test_shared_path (SMOLLM2);
  if (model == NULL)
    return;
  const char *probe[] = { "python3", "-c", "import llama_cpp.llama_cpp, gguf", NULL };
  int status = -1;
  if (!g_spawn_sync (NULL, (char **) probe, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_test_skip ("python3 with llama_cpp and gguf is not available");
      return;
    }
  g_autofree char *oracle = g_build_filename (LP_TEST_SRCDIR, "contrib", "tokenizer-oracle.py", NULL);
  static const char *const pres[] = { "smollm", "llama-bpe", "tekken" };
  static const char *const texts[] = {
    "x = 12345678; // \xc2\xbd \xe2\x91\xa0\n\n\t  tabs", "I'M y'all 'LL \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
  };
  /* One process: per pre-tokenizer a vocab-only copy, then a line of ids per text. */
  const char *script = "import sys, types\n"
                       "m = types.ModuleType('o'); exec(open(sys.argv[1]).read(), m.__dict__)\n"
                       "for pre in sys.argv[4].split(','):\n"
                       "    m.vocab_copy(sys.argv[2], sys.argv[3], pre)\n"
                       "    v = m.load(sys.argv[3])\n"
                       "    for t in sys.argv[5:]:\n"
                       "        print(' '.join(map(str, v.tokenize(t.encode()))))\n";
  g_autofree char *copy = g_build_filename (lp_test_tmpdir (), "vocab.gguf", NULL);
  g_autofree char *pre_list = g_strjoinv (",", (char **) pres);
  const char *argv[] = { "python3", "-c", script, oracle, model, copy, pre_list, texts[0], texts[1], NULL };
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error));
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("the oracle failed: %s", err);
  g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), ==, G_N_ELEMENTS (pres) * G_N_ELEMENTS (texts) + 1);
  g_autoptr (LpMeta) meta = smollm2_meta ();
  for (gsize p = 0; p < G_N_ELEMENTS (pres); p++)
    {
      lp_meta_set_string (meta, "tokenizer.ggml.pre", pres[p]);
      g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, &error);
      g_assert_no_error (error);
      for (gsize k = 0; k < G_N_ELEMENTS (texts); k++)
        {
          g_autoptr (GArray) ids = lp_tokenizer_encode_full (tok, texts[k], -1, 0, &error);
          g_assert_no_error (error);
          g_autofree char *ours = ids_string ((const gint32 *) ids->data, ids->len);
          g_assert_cmpstr (ours, ==, lines[p * G_N_ELEMENTS (texts) + k]);
        }
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/tokenizer-bpe/wikitext", test_wikitext);
  g_test_add_func ("/tokenizer-bpe/hard-strings", test_hard_strings);
  g_test_add_func ("/tokenizer-bpe/add-bos-eos", test_add_bos_eos);
  g_test_add_func ("/tokenizer-bpe/live", test_live);
  return g_test_run ();
}
