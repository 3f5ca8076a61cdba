/* Teacher logits (logits.h): a set computed from a model's forward pass
 * round-trips through GGUF bit for bit; a student with another vocabulary
 * and windows that are not the calibration's are refused; every kind of
 * malformed file fails with one line naming the file, the key or the byte
 * offset of the bad value (checked against the file's bytes there), what
 * was expected and what was found; and in a spec, one distill.teacher node
 * read by two nodes runs once, is reused from the cache on the next run
 * (report.json and --explain say so), and the readers get the same bits
 * from the cache as from the run that computed them; and two students
 * distilled from one teacher node compute its logits once (where
 * distill.recover takes teacher_logits=). */
#include "config.h"

#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "testutil.h"

enum { N = 3, L = 16, K = 8 };
#define TAU 1.5

/* N windows of L tokens of the model's vocabulary, BOS first, from a seed. */
static gint32 *
windows (LpModel *m, guint32 seed)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  gint32 *tokens = g_new (gint32, N * L);
  for (int i = 0; i < N * L; i++)
    tokens[i] = i % L == 0 ? 1 : g_rand_int_range (r, 0, (gint32) lp_model_config (m)->n_vocab);
  return tokens;
}

/* The teacher's top-K on those windows, through its forward pass. */
static LpLogits *
compute_logits (LpModel *m, const gint32 *tokens)
{
  g_autoptr (GError) error = NULL;
  gint64 V = lp_model_config (m)->n_vocab;
  g_autofree char *digest = lp_model_vocab_digest (m);
  g_assert_cmpuint (strlen (digest), ==, 64); /* the demo model carries a vocabulary */
  LpLogits *lg = lp_logits_new (N, L, K, V, TAU, digest, &error);
  g_assert_no_error (error);
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_assert_no_error (error);
  g_autofree float *logits = g_new (float, L * V);
  for (int i = 0; i < N; i++)
    {
      g_assert_true (lp_forward_logits (fw, tokens + i * L, L, NULL, logits, &error));
      g_assert_true (lp_logits_set_window (lg, i, tokens + i * L, logits, &error));
      g_assert_no_error (error);
    }
  return lg;
}

static LpModel *
demo_model (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = lp_test_demo_model ();
  LpModel *m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  return m;
}

static void
assert_same_logits (const LpLogits *a, const LpLogits *b)
{
  g_assert_cmpint (lp_logits_n_windows (a), ==, lp_logits_n_windows (b));
  g_assert_cmpint (lp_logits_seq_len (a), ==, lp_logits_seq_len (b));
  g_assert_cmpint (lp_logits_k (a), ==, lp_logits_k (b));
  g_assert_cmpint (lp_logits_n_vocab (a), ==, lp_logits_n_vocab (b));
  g_assert_cmpfloat (lp_logits_temperature (a), ==, lp_logits_temperature (b));
  g_assert_cmpstr (lp_logits_vocab_digest (a), ==, lp_logits_vocab_digest (b));
  int n = lp_logits_seq_len (a), k = lp_logits_k (a);
  for (int i = 0; i < lp_logits_n_windows (a); i++)
    {
      const gint32 *ia, *ib;
      const float *la, *lb, *ra, *rb;
      lp_logits_window (a, i, &ia, &la, &ra);
      lp_logits_window (b, i, &ib, &lb, &rb);
      g_assert_cmpmem (lp_logits_tokens (a, i), n * 4, lp_logits_tokens (b, i), n * 4);
      g_assert_cmpmem (ia, n * k * 4, ib, n * k * 4);
      g_assert_cmpmem (la, n * k * 4, lb, n * k * 4);
      g_assert_cmpmem (ra, n * 4, rb, n * 4);
    }
}

/* Save, load, compare every bit; the same file again from the loaded set;
 * what the set holds is the forward pass's top-K. */
static void
test_round_trip (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = demo_model ();
  g_autofree gint32 *tokens = windows (m, 7);
  g_autoptr (LpLogits) lg = compute_logits (m, tokens);
  g_autofree char *dir = lp_test_mkdir ("round-trip");
  g_autofree char *p1 = g_build_filename (dir, "a.gguf", NULL), *p2 = g_build_filename (dir, "b.gguf", NULL);
  g_assert_true (lp_logits_save (lg, p1, &error));
  g_assert_no_error (error);
  g_autoptr (LpLogits) back = lp_logits_load (p1, &error);
  g_assert_no_error (error);
  assert_same_logits (lg, back);
  g_assert_true (lp_logits_save (back, p2, &error));
  g_autofree char *b1 = NULL, *b2 = NULL;
  gsize n1 = 0, n2 = 0;
  g_assert_true (g_file_get_contents (p1, &b1, &n1, NULL) && g_file_get_contents (p2, &b2, &n2, NULL));
  g_assert_cmpmem (b1, n1, b2, n2);
  g_test_message ("%d windows of %d, top %d: %zu bytes", N, L, K, n1);

  /* Window 1's first position: the top K of a fresh forward pass, most likely first. */
  gint64 V = lp_model_config (m)->n_vocab;
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_autofree float *logits = g_new (float, L * V);
  g_assert_true (lp_forward_logits (fw, tokens + L, L, NULL, logits, &error));
  const gint32 *ids;
  const float *logp, *rest;
  lp_logits_window (back, 1, &ids, &logp, &rest);
  double lse = 0.0, mx = -INFINITY;
  for (gint64 v = 0; v < V; v++)
    mx = MAX (mx, logits[v] / TAU);
  for (gint64 v = 0; v < V; v++)
    lse += exp (logits[v] / TAU - mx);
  lse = mx + log (lse);
  double mass = exp (rest[0]);
  for (int i = 0; i < K; i++)
    {
      g_assert_cmpfloat (fabs (logp[i] - (logits[ids[i]] / TAU - lse)), <, 1e-5);
      mass += exp (logp[i]);
      for (gint64 v = 0; v < V; v++)
        if (logits[v] > logits[ids[i]])
          {
            gboolean earlier = FALSE;
            for (int j = 0; j < i; j++)
              earlier |= ids[j] == v;
            g_assert_true (earlier);
          }
    }
  g_assert_cmpfloat (fabs (mass - 1.0), <, 1e-5);
}

/* A student is checked against the teacher's vocabulary, and the windows
 * against the calibration samples. */
static void
test_checks (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = demo_model ();
  gint64 V = lp_model_config (m)->n_vocab;
  /* Windows cut by the calibration service from a token stream. */
  g_autofree gint32 *stream = g_new (gint32, 4000);
  g_autoptr (GRand) r = g_rand_new_with_seed (3);
  for (int i = 0; i < 4000; i++)
    stream[i] = g_rand_int_range (r, 2, (gint32) V);
  LpCalibOptions o = { .n_samples = N, .seq_len = L, .seed = 5, .mode = LP_CALIB_INDEPENDENT };
  g_autoptr (LpCalibration) cal = lp_calibration_new (stream, 4000, 1, &o, &error);
  g_assert_no_error (error);
  g_autofree gint32 *tokens = g_new (gint32, N * L);
  for (int i = 0; i < N; i++)
    memcpy (tokens + i * L, lp_calibration_sample (cal, i), L * sizeof (gint32));
  g_autoptr (LpLogits) lg = compute_logits (m, tokens);
  g_assert_true (lp_logits_check_calibration (lg, cal, &error));
  g_assert_no_error (error);
  o.seed = 6;
  g_autoptr (LpCalibration) other = lp_calibration_new (stream, 4000, 1, &o, &error);
  g_assert_false (lp_logits_check_calibration (lg, other, &error));
  lp_test_assert_error_contains (error, "teacher logits: window 0, token 1: expected the calibration sample's", NULL);
  g_clear_error (&error);
  o.seed = 5, o.seq_len = L + 1;
  g_autoptr (LpCalibration) longer = lp_calibration_new (stream, 4000, 1, &o, &error);
  g_assert_false (lp_logits_check_calibration (lg, longer, &error));
  lp_test_assert_error_contains (error, "expected the calibration's 3 of 17 tokens, found 3 of 16", NULL);
  g_clear_error (&error);

  /* The same vocabulary passes; two tokens swapped, or another size, do not. */
  g_assert_true (lp_logits_check_student (lg, m, &error));
  g_autoptr (LpModel) swapped = lp_model_derive (m);
  const LpValue *toks = lp_meta_get (lp_model_meta (m), "tokenizer.ggml.tokens");
  g_autofree char **strs = g_memdup2 (toks->array, toks->n_elems * sizeof (char *));
  char *t = strs[300];
  strs[300] = strs[301];
  strs[301] = t;
  lp_meta_set_array (lp_model_meta (swapped), "tokenizer.ggml.tokens", LP_VALUE_STRING, toks->n_elems, strs);
  g_assert_false (lp_logits_check_student (lg, swapped, &error));
  lp_test_assert_error_contains (error, "teacher logits: vocabulary: expected the student's (digest", "the same ids name other tokens", NULL);
  g_assert_null (strchr (error->message, '\n'));
  g_clear_error (&error);
  /* Another BOS id: the windows would start with another token. */
  g_autoptr (LpModel) other_bos = lp_model_derive (m);
  lp_meta_set_u32 (lp_model_meta (other_bos), "tokenizer.ggml.bos_token_id", 2);
  g_assert_false (lp_logits_check_student (lg, other_bos, &error));
  lp_test_assert_error_contains (error, "teacher logits: vocabulary: expected the student's (digest", NULL);
  g_clear_error (&error);
  g_autoptr (LpModel) tiny = lp_test_tiny_model (1);
  g_assert_false (lp_logits_check_student (lg, tiny, &error));
  lp_test_assert_error_contains (error, "vocabulary size: expected the student's 64, found the teacher's", NULL);
  g_clear_error (&error);

  /* Bad sets are refused at creation. */
  g_assert_null (lp_logits_new (N, L, (int) V + 1, V, 1.0, "none", &error));
  lp_test_assert_error_contains (error, "top-k: expected 1 to the vocabulary size", NULL);
  g_clear_error (&error);
  g_assert_null (lp_logits_new (N, L, K, V, 0.0, "none", &error));
  lp_test_assert_error_contains (error, "temperature: expected a finite value above 0, found 0", NULL);
  g_clear_error (&error);
  gint32 bad[L];
  memcpy (bad, tokens, sizeof bad);
  bad[4] = (gint32) V;
  g_autofree float *zeros = g_new0 (float, L * V);
  g_assert_false (lp_logits_set_window (lg, 0, bad, zeros, &error));
  lp_test_assert_error_contains (error, "window 0, token 4: expected an id below the vocabulary size", NULL);
}

/* ---- malformed files ---- */

typedef enum {
  BAD_TYPE, BAD_NO_K, BAD_K_OVER_V, BAD_TEMPERATURE, BAD_NO_DIGEST, BAD_MISSING_TENSOR, BAD_EXTRA_TENSOR,
  BAD_TOKENS_SHAPE, BAD_IDS_SHAPE, BAD_LOGP_TYPE, BAD_TOKEN, BAD_ID, BAD_DUP_ID, BAD_LOGP, BAD_REST, BAD_TRUNCATED,
} Bad;

typedef struct {
  Bad bad;
  const char *expect; /* a fragment of the message */
  /* For a bad value: its element in its array, the value written, and
   * whether it is an i32 (else f32); the message's offset must hold it. */
  const char *array;
  int element;
  double value;
} BadCase;

static const BadCase bad_cases[] = {
  { BAD_TYPE, "key general.type: expected \"llmpress.logits\" (teacher logits), found \"imatrix\"" },
  { BAD_NO_K, "key llmpress.logits.k: expected an integer from 1 to 512, found none" },
  { BAD_K_OVER_V, "key llmpress.logits.k: expected an integer from 1 to 512, found 513" },
  { BAD_TEMPERATURE, "key llmpress.logits.temperature: expected a finite number above 0" },
  { BAD_NO_DIGEST, "key llmpress.logits.vocab_digest: expected the teacher's vocabulary digest, found none" },
  { BAD_MISSING_TENSOR, "tensors: expected 4 (tokens, topk_ids, topk_logp, rest_logp), found 3" },
  { BAD_EXTRA_TENSOR, "tensors: expected 4 (tokens, topk_ids, topk_logp, rest_logp), found 5" },
  { BAD_TOKENS_SHAPE, "tensor tokens: expected i32 windows x tokens (at least 1 x 1), found i32 of 1 dimensions" },
  { BAD_IDS_SHAPE, "tensor topk_ids: expected i32 3 x 16 x 8, found i32 3 x 16 x 7" },
  { BAD_LOGP_TYPE, "tensor topk_logp: expected f32 3 x 16 x 8, found f16 3 x 16 x 8" },
  { BAD_TOKEN, "tokens[21]: expected a token id below the vocabulary size, found 512", "tokens", 21, 512 },
  { BAD_ID, "topk_ids[100]: expected a token id below the vocabulary size, found -3", "topk_ids", 100, -3 },
  { BAD_DUP_ID, "topk_ids[101]: expected an id not already among this position's", "topk_ids", 101, -1 },
  { BAD_LOGP, "topk_logp[37]: expected a log-probability (<= 0), found 0.5", "topk_logp", 37, 0.5 },
  { BAD_REST, "rest_logp[5]: expected a log-probability (<= 0), found nan", "rest_logp", 5, NAN },
  { BAD_TRUNCATED, "expected" },
};

/* A good set's keys and tensors as lp_logits_save writes them, then broken. */
static void
write_bad (const LpLogits *lg, const BadCase *c, const char *path)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *good = g_strdup_printf ("%s.good", path);
  g_assert_true (lp_logits_save (lg, good, &error));
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) tensors = lp_gguf_read_tensors (good, meta, &error);
  g_assert_no_error (error);
  LpTensor *by_name[4];
  for (guint i = 0; i < tensors->len; i++)
    by_name[i] = tensors->pdata[i];
  switch (c->bad)
    {
    case BAD_TYPE:
      lp_meta_set_string (meta, "general.type", "imatrix");
      break;
    case BAD_NO_K:
      lp_meta_remove (meta, "llmpress.logits.k");
      break;
    case BAD_K_OVER_V:
      lp_meta_set_u32 (meta, "llmpress.logits.k", 513);
      break;
    case BAD_TEMPERATURE:
      lp_meta_set_f32 (meta, "llmpress.logits.temperature", -1.0f);
      break;
    case BAD_NO_DIGEST:
      lp_meta_remove (meta, "llmpress.logits.vocab_digest");
      break;
    case BAD_MISSING_TENSOR:
      g_ptr_array_remove_index (tensors, 3);
      break;
    case BAD_EXTRA_TENSOR:
      g_ptr_array_add (tensors, lp_tensor_rename (by_name[3], "extra"));
      break;
    case BAD_TOKENS_SHAPE:
    case BAD_IDS_SHAPE:
    case BAD_LOGP_TYPE:
      {
        int i = c->bad == BAD_TOKENS_SHAPE ? 0 : c->bad == BAD_IDS_SHAPE ? 1 : 2;
        LpTensor *t = by_name[i];
        gint64 shape[3] = { N * L, 0, 0 };
        LpTensor *u = c->bad == BAD_TOKENS_SHAPE ? lp_tensor_new (t->name, LP_DTYPE_I32, 1, shape, &error)
                      : c->bad == BAD_IDS_SHAPE ? lp_tensor_new (t->name, LP_DTYPE_I32, 3, (gint64[]){ N, L, K - 1 }, &error)
                                                : lp_tensor_convert (t, LP_DTYPE_F16, &error);
        g_assert_no_error (error);
        lp_tensor_unref (tensors->pdata[i]);
        tensors->pdata[i] = u;
        break;
      }
    case BAD_TRUNCATED:
      break;
    default:
      {
        int i = c->bad == BAD_TOKEN ? 0 : c->bad == BAD_REST ? 3 : c->bad == BAD_LOGP ? 2 : 1;
        LpTensor *t = by_name[i];
        LpTensor *u = lp_tensor_new (t->name, t->dtype, t->n_dims, t->shape, &error);
        memcpy (lp_tensor_data_mut (u), lp_tensor_data (t), lp_tensor_n_bytes (t));
        if (c->bad == BAD_DUP_ID)
          ((gint32 *) lp_tensor_data_mut (u))[c->element] = ((gint32 *) lp_tensor_data_mut (u))[c->element - 1];
        else if (t->dtype == LP_DTYPE_I32)
          ((gint32 *) lp_tensor_data_mut (u))[c->element] = (gint32) c->value;
        else
          ((float *) lp_tensor_data_mut (u))[c->element] = (float) c->value;
        lp_tensor_unref (tensors->pdata[i]);
        tensors->pdata[i] = u;
        break;
      }
    }
  g_assert_true (lp_gguf_write (path, meta, tensors, &error));
  g_assert_no_error (error);
  if (c->bad == BAD_TRUNCATED)
    {
      g_autofree char *data = NULL;
      gsize n = 0;
      g_assert_true (g_file_get_contents (path, &data, &n, NULL));
      g_assert_true (g_file_set_contents (path, data, (gssize) n - 100, NULL));
    }
}

static void
test_malformed (void)
{
  g_autoptr (LpModel) m = demo_model ();
  g_autofree gint32 *tokens = windows (m, 9);
  g_autoptr (LpLogits) lg = compute_logits (m, tokens);
  g_autofree char *dir = lp_test_mkdir ("malformed");
  for (guint i = 0; i < G_N_ELEMENTS (bad_cases); i++)
    {
      const BadCase *c = &bad_cases[i];
      g_autofree char *name = g_strdup_printf ("bad-%u.gguf", i);
      g_autofree char *path = g_build_filename (dir, name, NULL);
      write_bad (lg, c, path);
      g_autoptr (GError) error = NULL;
      g_assert_null (lp_logits_load (path, &error));
      g_assert_nonnull (error);
      g_test_message ("%s", error->message);
      lp_test_assert_error_contains (error, path, c->expect, NULL);
      g_assert_null (strchr (error->message, '\n'));
      if (c->array == NULL)
        continue;
      /* The offset named holds the bad value. */
      const char *at = strstr (error->message, ": offset ");
      g_assert_nonnull (at);
      guint64 offset = g_ascii_strtoull (at + 9, NULL, 10);
      g_autofree char *data = NULL;
      gsize n = 0;
      g_assert_true (g_file_get_contents (path, &data, &n, NULL));
      g_assert_cmpuint (offset + 4, <=, n);
      if (strcmp (c->array, "tokens") == 0 || strcmp (c->array, "topk_ids") == 0)
        {
          gint32 v;
          memcpy (&v, data + offset, 4);
          const gint32 *ids = lp_logits_tokens (lg, 0);
          if (c->bad == BAD_DUP_ID)
            {
              const float *lp, *rest;
              lp_logits_window (lg, 0, &ids, &lp, &rest);
              g_assert_cmpint (v, ==, ids[c->element - 1]);
            }
          else
            g_assert_cmpint (v, ==, (gint32) c->value);
        }
      else
        {
          float v;
          memcpy (&v, data + offset, 4);
          if (isnan (c->value))
            g_assert_true (isnan (v));
          else
            g_assert_cmpfloat (v, ==, (float) c->value);
        }
    }
}

/* ---- in a spec ---- */

/* A node's entry in OUT/report.json (its parser in *p). */
static JsonObject *
node_of (const char *out, const char *name, JsonParser **p)
{
  g_autofree char *path = g_build_filename (out, "report.json", NULL);
  *p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (json_parser_load_from_file (*p, path, &error));
  JsonArray *nodes = json_object_get_array_member (json_node_get_object (json_parser_get_root (*p)), "nodes");
  for (guint i = 0; i < json_array_get_length (nodes); i++)
    {
      JsonObject *n = json_array_get_object_element (nodes, i);
      if (strcmp (json_object_get_string_member (n, "name"), name) == 0)
        return n;
    }
  g_error ("%s: no node %s", path, name);
}

static char *
executed (const char *out, const char *name)
{
  g_autoptr (JsonParser) p = NULL;
  return g_strdup (json_object_get_string_member (node_of (out, name, &p), "executed"));
}

static char *
digest_of (const char *out, const char *name)
{
  g_autoptr (JsonParser) p = NULL;
  JsonObject *m = json_object_get_object_member (node_of (out, name, &p), "metrics");
  return g_strdup (json_object_get_string_member (m, "digest"));
}

/* Run a spec on the demo model, the specs' README its calibration text,
 * with the definitions defs (NULL-terminated "NAME=VALUE"), the cache in
 * `cache` (NULL: none), --explain; its exit status (its output, errors
 * in *o, *e; on failure the errors go to the test's log). */
static int
run_spec (const char *spec, const char *cache, const char *out, const char *const *defs, char **o, char **e)
{
  g_autofree char *model = lp_test_demo_model ();
  g_autofree char *calib = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "README.md", NULL);
  g_autofree char *md = g_strdup_printf ("model=%s", model), *cd = g_strdup_printf ("calib=%s", calib);
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  const char *fixed[] = { "run", spec, "-D", md, "-D", cd, "-o", out, "--explain", "-q" };
  for (guint i = 0; i < G_N_ELEMENTS (fixed); i++)
    g_ptr_array_add (args, (gpointer) fixed[i]);
  for (const char *const *d = defs; *d; d++)
    {
      g_ptr_array_add (args, (gpointer) "-D");
      g_ptr_array_add (args, (gpointer) *d);
    }
  g_ptr_array_add (args, (gpointer) (cache ? "--cache-dir" : "--no-cache"));
  if (cache)
    g_ptr_array_add (args, (gpointer) cache);
  g_ptr_array_add (args, NULL);
  int status = lp_test_run_cliv (o, e, (const char *const *) args->pdata);
  if (status != 0 && e != NULL)
    g_test_message ("%s", *e);
  return status;
}

static const char spec_text[] =
  "[pipeline]\n"
  "calibration=${calib}\n"
  "calibration_samples=4\n"
  "calibration_seq_len=32\n"
  "[load]\n"
  "path=${model}\n"
  "[teacher]\n"
  "pass=distill.teacher\n"
  "input=load\n"
  "topk=${topk:-8}\n"
  "temperature=2\n"
  "[a]\n"
  "pass=test.logits\n"
  "input=teacher\n"
  "salt=${salt_a}\n"
  "[b]\n"
  "pass=test.logits\n"
  "input=teacher\n"
  "salt=${salt_b}\n";

/* One teacher node, two readers: the teacher runs once; on the next run
 * (the readers changed) it is fetched from the cache, and the readers see
 * the same bytes; a damaged logits.gguf in the cache is found, discarded
 * and recomputed, to the same bytes. */
static void
test_spec_once (void)
{
  g_autofree char *spec = lp_test_write_file ("teacher.ini", spec_text, strlen (spec_text));
  g_autofree char *cache = lp_test_mkdir ("teacher-cache");
  g_autofree char *out1 = g_build_filename (lp_test_tmpdir (), "teacher-out1", NULL);
  g_autofree char *o1 = NULL, *e1 = NULL;
  g_assert_cmpint (run_spec (spec, cache, out1, (const char *[]){ "salt_a=1", "salt_b=2", NULL }, &o1, &e1), ==, 0);
  g_autofree char *x1 = executed (out1, "teacher"), *xa = executed (out1, "a"), *xb = executed (out1, "b");
  g_assert_cmpstr (x1, ==, "ran");
  g_assert_cmpstr (xa, ==, "ran");
  g_assert_cmpstr (xb, ==, "ran");
  g_assert_nonnull (strstr (o1, "explain: teacher: run: "));
  g_autofree char *da = digest_of (out1, "a"), *db = digest_of (out1, "b");
  g_assert_cmpstr (da, ==, db);
  g_assert_cmpfloat (lp_test_report_metric (out1, "a", "k"), ==, 8);
  g_assert_cmpfloat (lp_test_report_metric (out1, "a", "windows"), ==, 4);
  g_assert_cmpfloat (lp_test_report_metric (out1, "a", "seq_len"), ==, 32);
  g_assert_cmpfloat (lp_test_report_metric (out1, "a", "temperature"), ==, 2);
  /* The table's size: 4 windows x 32 positions x (8 ids + 8 log p + a token + the rest) x 4 bytes. */
  g_autoptr (JsonParser) p = NULL;
  g_assert_cmpint (json_object_get_int_member (node_of (out1, "teacher", &p), "output_bytes"), ==, 4 * 32 * 18 * 4);

  /* New readers: the teacher's logits come from the cache (logits.gguf,
   * every byte checked), and read the same. */
  g_autofree char *out2 = g_build_filename (lp_test_tmpdir (), "teacher-out2", NULL);
  g_autofree char *o2 = NULL, *e2 = NULL;
  g_assert_cmpint (run_spec (spec, cache, out2, (const char *[]){ "salt_a=10", "salt_b=11", NULL }, &o2, &e2), ==, 0);
  g_autofree char *y1 = executed (out2, "teacher"), *ya = executed (out2, "a");
  g_assert_cmpstr (y1, ==, "fetched from cache");
  g_assert_cmpstr (ya, ==, "ran");
  g_assert_nonnull (strstr (o2, "explain: teacher: reused: cache entry"));
  g_autofree char *da2 = digest_of (out2, "a"), *db2 = digest_of (out2, "b");
  g_assert_cmpstr (da2, ==, da);
  g_assert_cmpstr (db2, ==, da);

  /* The entry's file on its own: loads, and is what the readers digested. */
  g_autofree char *key = lp_test_report_key (out1, "teacher");
  char shard[3] = { key[0], key[1], 0 };
  g_autofree char *file = g_build_filename (cache, "v3", shard, key, "logits.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpLogits) lg = lp_logits_load (file, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_logits_k (lg), ==, 8);

  /* One byte of the cached file flipped: discarded with a warning, the
   * teacher runs again, the readers get the same bytes. */
  g_autofree char *data = NULL;
  gsize n = 0;
  g_assert_true (g_file_get_contents (file, &data, &n, NULL));
  data[n - 7] ^= 0x10;
  g_assert_true (g_file_set_contents (file, data, (gssize) n, NULL));
  g_autofree char *out3 = g_build_filename (lp_test_tmpdir (), "teacher-out3", NULL);
  g_autofree char *o3 = NULL, *e3 = NULL;
  g_assert_cmpint (run_spec (spec, cache, out3, (const char *[]){ "salt_a=20", "salt_b=21", NULL }, &o3, &e3), ==, 0);
  g_assert_nonnull (strstr (e3, "damaged cache entry"));
  g_autofree char *z1 = executed (out3, "teacher");
  g_assert_cmpstr (z1, ==, "ran");
  g_autofree char *da3 = digest_of (out3, "a");
  g_assert_cmpstr (da3, ==, da);
}

/* topk above the vocabulary: one line, exit 1. */
static void
test_spec_bad_topk (void)
{
  g_autofree char *spec = lp_test_write_file ("teacher-bad.ini", spec_text, strlen (spec_text));
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "teacher-bad-out", NULL);
  g_autofree char *e = NULL;
  const char *defs[] = { "salt_a=1", "salt_b=2", "topk=513", NULL };
  g_assert_cmpint (run_spec (spec, NULL, out, defs, NULL, &e), ==, 1);
  g_assert_nonnull (strstr (e, "teacher: topk: expected at most the teacher's vocabulary size 512, found 513"));
  g_assert_cmpuint (lp_test_count_lines (e), ==, 1);
}

static const char students_text[] =
  "[pipeline]\n"
  "calibration=${calib}\n"
  "calibration_samples=6\n"
  "calibration_seq_len=32\n"
  "[load]\n"
  "path=${model}\n"
  "[pruned]\n"
  "pass=prune.magnitude\n"
  "input=load\n"
  "sparsity=0.5\n"
  "[teacher]\n"
  "pass=distill.teacher\n"
  "input=load\n"
  "topk=16\n"
  "[a]\n"
  "pass=distill.recover\n"
  "input=pruned\n"
  "teacher=load\n"
  "teacher_logits=teacher\n"
  "steps=${steps_a}\n"
  "warmup=0\n"
  "micro_batch=2\n"
  "holdout=2\n"
  "[b]\n"
  "pass=distill.recover\n"
  "input=pruned\n"
  "teacher=load\n"
  "teacher_logits=teacher\n"
  "steps=3\n"
  "warmup=0\n"
  "lr=0.003\n"
  "temperature=${temp_b:-1}\n"
  "micro_batch=2\n"
  "holdout=2\n"
  "[save_a]\n"
  "pass=save\n"
  "input=a\n"
  "path=a.gguf\n"
  "[save_b]\n"
  "pass=save\n"
  "input=b\n"
  "path=b.gguf\n";

/* The story: two students distilled from one teacher in the same
 * spec compute the teacher's logits once.  Run 1: the teacher node runs
 * once and both students train from its top-k; run 2, one student's
 * steps changed: the teacher's logits are fetched from the cache, that
 * student trains again, the other is reused.  Each student trained its
 * own steps, the pruned weights stay zero, and a student at another
 * temperature than the logits' is refused. */
static void
test_two_students (void)
{
  g_autofree char *describe = NULL;
  const char *dargs[] = { "describe", "distill.recover", NULL };
  if (lp_test_run_cliv (&describe, NULL, dargs) != 0 || strstr (describe, "teacher_logits") == NULL)
    {
      g_test_skip ("distill.recover takes no teacher_logits= input in this build");
      return;
    }
  g_autofree char *spec = lp_test_write_file ("students.ini", students_text, strlen (students_text));
  g_autofree char *cache = lp_test_mkdir ("students-cache");
  g_autofree char *out1 = g_build_filename (lp_test_tmpdir (), "students-out1", NULL);
  g_autofree char *o1 = NULL, *e1 = NULL;
  g_assert_cmpint (run_spec (spec, cache, out1, (const char *[]){ "steps_a=2", NULL }, &o1, &e1), ==, 0);
  const char *ran1[] = { "teacher", "a", "b" };
  for (guint i = 0; i < G_N_ELEMENTS (ran1); i++)
    {
      g_autofree char *x = executed (out1, ran1[i]);
      g_assert_cmpstr (x, ==, "ran");
    }
  /* One explain line for the teacher node, and it ran. */
  g_assert_nonnull (strstr (o1, "explain: teacher: run: "));
  g_assert_null (strstr (strstr (o1, "explain: teacher: ") + 1, "explain: teacher: "));

  g_autofree char *out2 = g_build_filename (lp_test_tmpdir (), "students-out2", NULL);
  g_autofree char *o2 = NULL, *e2 = NULL;
  g_assert_cmpint (run_spec (spec, cache, out2, (const char *[]){ "steps_a=3", NULL }, &o2, &e2), ==, 0);
  g_autofree char *t2 = executed (out2, "teacher"), *a2 = executed (out2, "a"), *b2 = executed (out2, "b");
  g_assert_cmpstr (t2, ==, "fetched from cache");
  g_assert_cmpstr (a2, ==, "ran");
  g_assert_cmpstr (b2, !=, "ran");
  g_assert_nonnull (strstr (o2, "explain: teacher: reused: cache entry"));

  /* Two trainings (their own steps), two models; every weight magnitude
   * pruned is still 0 in both. */
  g_autoptr (GError) error = NULL;
  g_autofree char *pa = g_build_filename (out1, "a.gguf", NULL), *pb = g_build_filename (out1, "b.gguf", NULL);
  g_autoptr (LpModel) ma = lp_model_load (pa, NULL, &error);
  g_autoptr (LpModel) mb = ma ? lp_model_load (pb, NULL, &error) : NULL;
  g_assert_no_error (error);
  gint64 sa = 0, sb = 0;
  g_assert_true (lp_meta_get_int (lp_model_meta (ma), "llmpress.distill.steps", &sa, NULL));
  g_assert_true (lp_meta_get_int (lp_model_meta (mb), "llmpress.distill.steps", &sb, NULL));
  g_assert_cmpint (sa, ==, 2);
  g_assert_cmpint (sb, ==, 3);
  LpTensor *qa = lp_model_tensor (ma, "blk.0.attn_q.weight"), *qb = lp_model_tensor (mb, "blk.0.attn_q.weight");
  g_autofree float *fa = lp_tensor_dup_f32 (qa, &error), *fb = lp_tensor_dup_f32 (qb, &error);
  gint64 n = lp_tensor_n_elements (qa), zeros = 0;
  for (gint64 e = 0; e < n; e++)
    {
      zeros += fa[e] == 0.0f;
      g_assert_true ((fa[e] == 0.0f) == (fb[e] == 0.0f));
    }
  g_test_message ("blk.0.attn_q.weight: %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " zero in both students", zeros, n);
  g_assert_cmpint (zeros, >=, n / 2);

  /* A student at another temperature than the logits': one line, exit 1. */
  g_autofree char *out3 = g_build_filename (lp_test_tmpdir (), "students-out3", NULL);
  g_autofree char *e3 = NULL;
  g_assert_cmpint (run_spec (spec, cache, out3, (const char *[]){ "steps_a=3", "temp_b=3", NULL }, NULL, &e3), ==, 1);
  g_assert_nonnull (strstr (e3, "b: temperature=3: expected the teacher logits' 1 (distill.teacher's temperature=)"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autofree char *path = g_strdup_printf ("%s:%s", g_getenv ("LLMPRESS_PLUGIN_PATH"), g_getenv ("LLMPRESS_TEST_PLUGIN_DIR"));
  g_setenv ("LLMPRESS_PLUGIN_PATH", path, TRUE);
  g_test_add_func ("/logits/round-trip", test_round_trip);
  g_test_add_func ("/logits/checks", test_checks);
  g_test_add_func ("/logits/malformed", test_malformed);
  g_test_add_func ("/logits/spec-once", test_spec_once);
  g_test_add_func ("/logits/spec-bad-topk", test_spec_bad_topk);
  g_test_add_func ("/logits/two-students", test_two_students);
  return g_test_run ();
}
