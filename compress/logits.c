/* llmpress — a teacher's top-k next-token distributions (see logits.h):
 * the reduction from full logits, the vocabulary checks, GGUF I/O. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "formats-internal.h"
#include <llmpress/logits.h>

#define GENERAL_TYPE "llmpress.logits"
#define KEY_TEMPERATURE "llmpress.logits.temperature"
#define KEY_K "llmpress.logits.k"
#define KEY_N_VOCAB "llmpress.logits.n_vocab"
#define KEY_DIGEST "llmpress.logits.vocab_digest"

/* The four arrays, as tensors so that a loaded set borrows the mapped file
 * and saving writes them as they are. */
enum { A_TOKENS, A_IDS, A_LOGP, A_REST, N_ARRAYS };
static const char *const array_names[N_ARRAYS] = { "tokens", "topk_ids", "topk_logp", "rest_logp" };
static const LpDType array_types[N_ARRAYS] = { LP_DTYPE_I32, LP_DTYPE_I32, LP_DTYPE_F32, LP_DTYPE_F32 };

struct _LpLogits {
  gint ref_count;
  int n_windows, seq_len, k; /* N, L, k */
  gint64 n_vocab;            /* V */
  double temperature;
  char *vocab_digest;
  LpTensor *a[N_ARRAYS];
};

/* The shape of array i: [N, L] or [N, L, k]. */
static int
array_shape (int i, gint64 N, gint64 L, gint64 k, gint64 *shape)
{
  shape[0] = N, shape[1] = L, shape[2] = k;
  return i == A_IDS || i == A_LOGP ? 3 : 2;
}

/* The scalars checked (one line each), the arrays not yet made. */
static LpLogits *
logits_alloc (gint64 n_windows, gint64 seq_len, gint64 k, gint64 n_vocab, double temperature, const char *digest,
              const char *where, GError **error)
{
  if (n_vocab < 1 || n_vocab > G_MAXINT32)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: vocabulary size: expected 1 to %d, found %" G_GINT64_FORMAT, where,
                    G_MAXINT32, n_vocab);
      return NULL;
    }
  if (k < 1 || k > n_vocab)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: top-k: expected 1 to the vocabulary size %" G_GINT64_FORMAT
                    ", found %" G_GINT64_FORMAT, where, n_vocab, k);
      return NULL;
    }
  if (!(isfinite (temperature) && temperature > 0.0))
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: temperature: expected a finite value above 0, found %g", where,
                    temperature);
      return NULL;
    }
  if (n_windows < 1 || n_windows > G_MAXINT || seq_len < 1 || seq_len > G_MAXINT)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: windows: expected at least one of at least one token, found %"
                    G_GINT64_FORMAT " of %" G_GINT64_FORMAT, where, n_windows, seq_len);
      return NULL;
    }
  LpLogits *lg = g_new0 (LpLogits, 1);
  lg->ref_count = 1;
  lg->n_windows = (int) n_windows;
  lg->seq_len = (int) seq_len;
  lg->k = (int) k;
  lg->n_vocab = n_vocab;
  lg->temperature = temperature;
  lg->vocab_digest = g_strdup (digest);
  return lg;
}

LpLogits *
lp_logits_new (int n_windows, int seq_len, int k, gint64 n_vocab, double temperature, const char *vocab_digest,
               GError **error)
{
  g_return_val_if_fail (vocab_digest != NULL, NULL);
  g_autoptr (LpLogits) lg = logits_alloc (n_windows, seq_len, k, n_vocab, temperature, vocab_digest, "teacher logits",
                                          error);
  if (lg == NULL)
    return NULL;
  for (int i = 0; i < N_ARRAYS; i++)
    {
      gint64 shape[3];
      int n_dims = array_shape (i, n_windows, seq_len, k, shape);
      if ((lg->a[i] = lp_tensor_new (array_names[i], array_types[i], n_dims, shape, error)) == NULL)
        return NULL;
    }
  return g_steal_pointer (&lg);
}

LpLogits *
lp_logits_ref (LpLogits *lg)
{
  g_return_val_if_fail (lg != NULL, NULL);
  g_atomic_int_inc (&lg->ref_count);
  return lg;
}

void
lp_logits_unref (LpLogits *lg)
{
  if (lg == NULL || !g_atomic_int_dec_and_test (&lg->ref_count))
    return;
  for (int i = 0; i < N_ARRAYS; i++)
    if (lg->a[i] != NULL)
      lp_tensor_unref (lg->a[i]);
  g_free (lg->vocab_digest);
  g_free (lg);
}

int
lp_logits_n_windows (const LpLogits *lg)
{
  return lg->n_windows;
}

int
lp_logits_seq_len (const LpLogits *lg)
{
  return lg->seq_len;
}

int
lp_logits_k (const LpLogits *lg)
{
  return lg->k;
}

gint64
lp_logits_n_vocab (const LpLogits *lg)
{
  return lg->n_vocab;
}

double
lp_logits_temperature (const LpLogits *lg)
{
  return lg->temperature;
}

const char *
lp_logits_vocab_digest (const LpLogits *lg)
{
  return lg->vocab_digest;
}

guint64
lp_logits_n_bytes (const LpLogits *lg)
{
  guint64 n = 0;
  for (int i = 0; i < N_ARRAYS; i++)
    n += lp_tensor_n_bytes (lg->a[i]);
  return n;
}

const gint32 *
lp_logits_tokens (const LpLogits *lg, int window)
{
  g_return_val_if_fail (window >= 0 && window < lg->n_windows, NULL);
  return (const gint32 *) lp_tensor_data (lg->a[A_TOKENS]) + (gsize) window * lg->seq_len;
}

void
lp_logits_window (const LpLogits *lg, int window, const gint32 **topk_ids, const float **topk_logp,
                  const float **rest_logp)
{
  g_return_if_fail (window >= 0 && window < lg->n_windows);
  gsize row = (gsize) window * lg->seq_len;
  *topk_ids = (const gint32 *) lp_tensor_data (lg->a[A_IDS]) + row * lg->k;
  *topk_logp = (const float *) lp_tensor_data (lg->a[A_LOGP]) + row * lg->k;
  *rest_logp = (const float *) lp_tensor_data (lg->a[A_REST]) + row;
}

/* ---- the reduction ---- */

/* Token a before token b: more likely, or as likely and a lower id. */
static inline gboolean
before (const double *s, gint32 a, gint32 b)
{
  return s[a] > s[b] || (s[a] == s[b] && a < b);
}

/* Restore the heap below position i (a min-heap under `before`: the root
 * is the least likely token kept). */
static void
sift_down (gint32 *heap, int n, int i, const double *s)
{
  for (;;)
    {
      int worst = i, l = 2 * i + 1, r = l + 1;
      if (l < n && before (s, heap[worst], heap[l]))
        worst = l;
      if (r < n && before (s, heap[worst], heap[r]))
        worst = r;
      if (worst == i)
        return;
      gint32 t = heap[i];
      heap[i] = heap[worst];
      heap[worst] = t;
      i = worst;
    }
}

/* The k most likely of s[V] into ids[k], most likely first: a heap of the
 * k best so far (its root the least likely of them), so a row costs
 * O(V log k) and most tokens one comparison; then heapsort, which takes
 * the least likely off the root to the end each time. */
static void
select_topk (const double *s, gint64 V, int k, gint32 *ids)
{
  int n = 0;
  for (gint64 v = 0; v < V; v++)
    {
      if (n < k)
        {
          int i = n++;
          ids[i] = (gint32) v;
          while (i > 0 && before (s, ids[(i - 1) / 2], ids[i]))
            {
              gint32 t = ids[i];
              ids[i] = ids[(i - 1) / 2];
              ids[(i - 1) / 2] = t;
              i = (i - 1) / 2;
            }
        }
      else if (before (s, (gint32) v, ids[0]))
        {
          ids[0] = (gint32) v;
          sift_down (ids, k, 0, s);
        }
    }
  for (int m = k; m > 1; m--)
    {
      gint32 t = ids[0];
      ids[0] = ids[m - 1];
      ids[m - 1] = t;
      sift_down (ids, m - 1, 0, s);
    }
}

void
lp_logits_topk (const float *logits, int T, gint64 V, int k, double temperature, gint32 *ids, float *logp,
                float *rest_logp)
{
  g_return_if_fail (k >= 1 && k <= V && temperature > 0.0);
  g_autofree double *s = g_new (double, V);
  g_autofree guint8 *top = g_new0 (guint8, V);
  for (int t = 0; t < T; t++)
    {
      const float *z = logits + (gsize) t * V;
      gint32 *row_ids = ids + (gsize) t * k;
      double mx = -INFINITY, sum = 0.0, rest = 0.0;
      for (gint64 v = 0; v < V; v++)
        mx = MAX (mx, s[v] = (double) z[v] / temperature);
      for (gint64 v = 0; v < V; v++)
        sum += exp (s[v] - mx);
      double lse = mx + log (sum);
      select_topk (s, V, k, row_ids);
      for (int i = 0; i < k; i++)
        {
          top[row_ids[i]] = 1;
          logp[(gsize) t * k + i] = (float) (s[row_ids[i]] - lse);
        }
      /* The rest summed directly: 1 - the top's mass cancels when they hold nearly all of it. */
      for (gint64 v = 0; v < V; v++)
        if (!top[v])
          rest += exp (s[v] - mx);
      rest_logp[t] = rest > 0.0 ? (float) (mx + log (rest) - lse) : -INFINITY;
      for (int i = 0; i < k; i++)
        top[row_ids[i]] = 0;
    }
}

gboolean
lp_logits_set_window (LpLogits *lg, int window, const gint32 *tokens, const float *logits, GError **error)
{
  g_return_val_if_fail (window >= 0 && window < lg->n_windows, FALSE);
  for (int t = 0; t < lg->seq_len; t++)
    if (tokens[t] < 0 || tokens[t] >= lg->n_vocab)
      {
        lp_set_error (error, LP_ERROR_INVALID, "teacher logits: window %d, token %d: expected an id below the vocabulary "
                      "size %" G_GINT64_FORMAT ", found %d", window, t, lg->n_vocab, tokens[t]);
        return FALSE;
      }
  gsize row = (gsize) window * lg->seq_len;
  memcpy ((gint32 *) lp_tensor_data_mut (lg->a[A_TOKENS]) + row, tokens, (gsize) lg->seq_len * sizeof (gint32));
  lp_logits_topk (logits, lg->seq_len, lg->n_vocab, lg->k, lg->temperature,
                  (gint32 *) lp_tensor_data_mut (lg->a[A_IDS]) + row * lg->k,
                  (float *) lp_tensor_data_mut (lg->a[A_LOGP]) + row * lg->k,
                  (float *) lp_tensor_data_mut (lg->a[A_REST]) + row);
  return TRUE;
}

/* ---- vocabularies and windows ---- */

/* The keys that define what a token id means (the distill plugin's
 * teacher check compares the same ones). */
static const char *const vocab_keys[] = { "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                          "tokenizer.ggml.bos_token_id", NULL };

char *
lp_model_vocab_digest (LpModel *model)
{
  const LpMeta *meta = lp_model_meta (model);
  const LpValue *tokens = lp_meta_get (meta, "tokenizer.ggml.tokens");
  if (tokens == NULL || tokens->type != LP_VALUE_ARRAY || tokens->elem_type != LP_VALUE_STRING)
    return g_strdup ("none");
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  /* Each key, then its value: strings each with their NUL (no two lists
   * hash alike by moving a boundary), anything else as printed whole. */
  for (const char *const *k = vocab_keys; *k; k++)
    {
      const LpValue *v = lp_meta_get (meta, *k);
      g_checksum_update (sum, (const guchar *) *k, (gssize) strlen (*k) + 1);
      if (v == NULL)
        continue;
      if (v->type == LP_VALUE_ARRAY && v->elem_type == LP_VALUE_STRING)
        for (guint64 i = 0; i < v->n_elems; i++)
          g_checksum_update (sum, (const guchar *) ((char *const *) v->array)[i],
                             (gssize) strlen (((char *const *) v->array)[i]) + 1);
      else
        {
          g_autofree char *text = lp_value_to_string (v, G_MAXUINT);
          g_checksum_update (sum, (const guchar *) text, (gssize) strlen (text) + 1);
        }
    }
  return g_strdup (g_checksum_get_string (sum));
}

gboolean
lp_logits_check_student (const LpLogits *lg, LpModel *student, GError **error)
{
  gint64 V = lp_model_config (student)->n_vocab;
  if (V != lg->n_vocab)
    {
      lp_set_error (error, LP_ERROR_INVALID, "teacher logits: vocabulary size: expected the student's %" G_GINT64_FORMAT
                    ", found the teacher's %" G_GINT64_FORMAT, V, lg->n_vocab);
      return FALSE;
    }
  g_autofree char *digest = lp_model_vocab_digest (student);
  if (strcmp (digest, lg->vocab_digest) != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "teacher logits: vocabulary: expected the student's (digest %.16s), found "
                    "another of the same size (digest %.16s): the same ids name other tokens", digest,
                    lg->vocab_digest);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_logits_check_calibration (const LpLogits *lg, LpCalibration *cal, GError **error)
{
  int N = lp_calibration_n_samples (cal), L = lp_calibration_seq_len (cal);
  if (N != lg->n_windows || L != lg->seq_len)
    {
      lp_set_error (error, LP_ERROR_INVALID, "teacher logits: windows: expected the calibration's %d of %d tokens, "
                    "found %d of %d", N, L, lg->n_windows, lg->seq_len);
      return FALSE;
    }
  for (int i = 0; i < N; i++)
    {
      const gint32 *a = lp_calibration_sample (cal, i), *b = lp_logits_tokens (lg, i);
      for (int t = 0; t < L; t++)
        if (a[t] != b[t])
          {
            lp_set_error (error, LP_ERROR_INVALID, "teacher logits: window %d, token %d: expected the calibration "
                          "sample's %d, found %d (computed on other samples)", i, t, a[t], b[t]);
            return FALSE;
          }
    }
  return TRUE;
}

/* ---- GGUF ---- */

gboolean
lp_logits_save (const LpLogits *lg, const char *path, GError **error)
{
  g_autoptr (LpMeta) meta = lp_meta_new ();
  lp_meta_set_string (meta, "general.type", GENERAL_TYPE);
  lp_meta_set_f32 (meta, KEY_TEMPERATURE, (float) lg->temperature);
  lp_meta_set_u32 (meta, KEY_K, (guint32) lg->k);
  lp_meta_set_u64 (meta, KEY_N_VOCAB, (guint64) lg->n_vocab);
  lp_meta_set_string (meta, KEY_DIGEST, lg->vocab_digest);
  g_autoptr (GPtrArray) tensors = g_ptr_array_new ();
  for (int i = 0; i < N_ARRAYS; i++)
    g_ptr_array_add (tensors, lg->a[i]);
  return lp_gguf_write (path, meta, tensors, error);
}

/* An integer key in lo..hi. */
static gboolean
int_key (const LpMeta *meta, const char *path, const char *key, gint64 lo, gint64 hi, gint64 *out, GError **error)
{
  GError *e = NULL;
  if (!lp_meta_get_int (meta, key, out, &e) || *out < lo || *out > hi)
    {
      g_autofree char *found = e ? g_strdup (e->message) : g_strdup_printf ("%" G_GINT64_FORMAT, *out);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected an integer from %" G_GINT64_FORMAT " to %"
                    G_GINT64_FORMAT ", found %s", path, key, lo, hi, lp_meta_has (meta, key) ? found : "none");
      g_clear_error (&e);
      return FALSE;
    }
  return TRUE;
}

/* The file's scalars into a new set (its arrays not yet attached). */
static LpLogits *
read_keys (const LpMeta *meta, const char *path, GError **error)
{
  const char *type = lp_meta_get_string (meta, "general.type");
  if (g_strcmp0 (type, GENERAL_TYPE) != 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key general.type: expected \"%s\" (teacher logits), found %s%s%s",
                    path, GENERAL_TYPE, type ? "\"" : "none", type ? type : "", type ? "\"" : "");
      return NULL;
    }
  gint64 k, V;
  double tau = 0.0;
  GError *e = NULL;
  if (!int_key (meta, path, KEY_N_VOCAB, 1, G_MAXINT32, &V, error) || !int_key (meta, path, KEY_K, 1, V, &k, error))
    return NULL;
  if (!lp_meta_get_float (meta, KEY_TEMPERATURE, &tau, &e) || !(isfinite (tau) && tau > 0.0))
    {
      g_autofree char *found = e ? g_strdup (e->message) : g_strdup_printf ("%g", tau);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected a finite number above 0, found %s", path,
                    KEY_TEMPERATURE, lp_meta_has (meta, KEY_TEMPERATURE) ? found : "none");
      g_clear_error (&e);
      return NULL;
    }
  const char *digest = lp_meta_get_string (meta, KEY_DIGEST);
  if (digest == NULL || *digest == '\0')
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected the teacher's vocabulary digest, found none", path,
                    KEY_DIGEST);
      return NULL;
    }
  /* Windows are checked with the arrays: 1 x 1 for now. */
  return logits_alloc (1, 1, k, V, tau, digest, path, error);
}

/* Tensor i of the file is array `which`, of the right type and shape. */
static gboolean
check_array (const LpTensor *t, int which, const gint64 *want, int want_dims, const char *path, guint64 offset,
             GError **error)
{
  gboolean ok = t->dtype == array_types[which] && t->n_dims == want_dims;
  for (int d = 0; ok && d < want_dims; d++)
    ok = t->shape[d] == want[d];
  if (ok)
    return TRUE;
  g_autoptr (GString) w = g_string_new (lp_dtype_name (array_types[which]));
  g_autoptr (GString) f = g_string_new (lp_dtype_name (t->dtype));
  for (int d = 0; d < want_dims; d++)
    g_string_append_printf (w, "%s%" G_GINT64_FORMAT, d ? " x " : " ", want[d]);
  for (int d = 0; d < t->n_dims; d++)
    g_string_append_printf (f, "%s%" G_GINT64_FORMAT, d ? " x " : " ", t->shape[d]);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GUINT64_FORMAT ": tensor %s: expected %s, found %s", path,
                offset, array_names[which], w->str, f->str);
  return FALSE;
}

/* One bad value: the array, its element, where it is in the file. */
static void
bad_value (GError **error, const char *path, guint64 offset, int which, gint64 e, const char *expected, double found)
{
  lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GUINT64_FORMAT ": %s[%" G_GINT64_FORMAT "]: expected %s, found %g",
                path, offset + (guint64) e * 4, array_names[which], e, expected, found);
}

/* Every value in range: tokens and ids are tokens (ids distinct within a
 * position), log-probabilities are <= 0 (-inf allowed: a bucket with no
 * mass).  The first bad one is named with its byte offset in the file. */
static gboolean
check_values (LpLogits *lg, const guint64 *offset, const char *path, GError **error)
{
  gint64 V = lg->n_vocab, rows = (gint64) lg->n_windows * lg->seq_len, k = lg->k;
  const gint32 *tokens = lp_tensor_data (lg->a[A_TOKENS]), *ids = lp_tensor_data (lg->a[A_IDS]);
  const float *logp = lp_tensor_data (lg->a[A_LOGP]), *rest = lp_tensor_data (lg->a[A_REST]);
  g_autofree guint8 *seen = g_new0 (guint8, V);
  for (gint64 r = 0; r < rows; r++)
    {
      if (tokens[r] < 0 || tokens[r] >= V)
        {
          bad_value (error, path, offset[A_TOKENS], A_TOKENS, r, "a token id below the vocabulary size", tokens[r]);
          return FALSE;
        }
      if (!(rest[r] <= 0.0f))
        {
          bad_value (error, path, offset[A_REST], A_REST, r, "a log-probability (<= 0)", rest[r]);
          return FALSE;
        }
      gint64 e = r * k, bad = -1;
      for (; e < (r + 1) * k && bad < 0; e++)
        {
          if (ids[e] < 0 || ids[e] >= V || seen[ids[e]])
            {
              bad_value (error, path, offset[A_IDS], A_IDS, e,
                         ids[e] < 0 || ids[e] >= V ? "a token id below the vocabulary size"
                                                   : "an id not already among this position's", ids[e]);
              bad = e;
            }
          else if (!(logp[e] <= 0.0f))
            {
              bad_value (error, path, offset[A_LOGP], A_LOGP, e, "a log-probability (<= 0)", logp[e]);
              bad = e;
            }
          else
            seen[ids[e]] = 1;
        }
      /* Clear what this position marked (up to the bad one, which is not). */
      for (gint64 j = r * k; j < e; j++)
        if (j != bad)
          seen[ids[j]] = 0;
      if (bad >= 0)
        return FALSE;
    }
  return TRUE;
}

LpLogits *
lp_logits_load (const char *path, GError **error)
{
  if (!lp_input_check (path, FALSE, error))
    return NULL;
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GArray) offsets = NULL;
  g_autoptr (GPtrArray) tensors = lp_gguf_read_tensors_at (path, meta, &offsets, error);
  if (tensors == NULL)
    return NULL;
  g_autoptr (LpLogits) lg = read_keys (meta, path, error);
  if (lg == NULL)
    return NULL;
  if (tensors->len != N_ARRAYS)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: tensors: expected %d (tokens, topk_ids, topk_logp, rest_logp), found %u",
                    path, N_ARRAYS, tensors->len);
      return NULL;
    }
  guint64 at[N_ARRAYS];
  for (int i = 0; i < N_ARRAYS; i++)
    {
      guint j = 0;
      while (j < tensors->len && strcmp (((LpTensor *) tensors->pdata[j])->name, array_names[i]) != 0)
        j++;
      if (j == tensors->len)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected it, found none", path, array_names[i]);
          return NULL;
        }
      LpTensor *t = tensors->pdata[j];
      at[i] = g_array_index (offsets, guint64, j);
      /* tokens sets N and L, which every other array must then have. */
      if (i == A_TOKENS)
        {
          if (t->dtype != LP_DTYPE_I32 || t->n_dims != 2 || t->shape[0] < 1 || t->shape[0] > G_MAXINT
              || t->shape[1] < 1 || t->shape[1] > G_MAXINT)
            {
              lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GUINT64_FORMAT ": tensor tokens: expected i32 "
                            "windows x tokens (at least 1 x 1), found %s of %d dimensions", path, at[i],
                            lp_dtype_name (t->dtype), t->n_dims);
              return NULL;
            }
          lg->n_windows = (int) t->shape[0], lg->seq_len = (int) t->shape[1];
        }
      gint64 want[3];
      int n_dims = array_shape (i, lg->n_windows, lg->seq_len, lg->k, want);
      if (!check_array (t, i, want, n_dims, path, at[i], error))
        return NULL;
      lg->a[i] = lp_tensor_ref (t);
    }
  if (!check_values (lg, at, path, error))
    return NULL;
  return g_steal_pointer (&lg);
}
