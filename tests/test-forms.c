/* Weight forms (form.h): the registration table, and the low-rank form
 * (used by no pass yet) through materialization, bytes, forward, backward,
 * and save/load through GGUF and Hugging Face safetensors; the adapter and
 * masked-over-grid compositions. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

/* Tiny model dims (lp_test_tiny_model): D 32, F 48, H 4 x hd 8, V 64. */
#define RANK 5

static LpTensor *
random_f32 (const char *name, gint64 rows, gint64 cols, guint32 seed, double scale)
{
  gint64 shape[2] = { rows, cols };
  g_autofree float *v = g_new (float, rows * cols);
  lp_test_fill (v, (gsize) (rows * cols), seed, scale);
  g_autoptr (GError) error = NULL;
  LpTensor *t = lp_tensor_new_f32 (name, 2, shape, v, &error);
  g_assert_no_error (error);
  return t;
}

/* W = A B in float64, row-major [N, K]. */
static double *
product64 (const LpTensor *a, const LpTensor *b)
{
  gint64 N = a->shape[0], R = a->shape[1], K = b->shape[1];
  const float *A = lp_tensor_data (a), *B = lp_tensor_data (b);
  double *w = g_new0 (double, N * K);
  for (gint64 n = 0; n < N; n++)
    for (gint64 r = 0; r < R; r++)
      for (gint64 k = 0; k < K; k++)
        w[n * K + k] += (double) A[n * R + r] * B[r * K + k];
  return w;
}

/* A copy of the tiny model whose `names` weights are low-rank (random
 * factors of rank RANK); *dense gets the same model with those weights as
 * the plain f32 product, materialized. */
static LpModel *
model_with_low_rank (const char *const *names, LpModel **dense)
{
  g_autoptr (GError) error = NULL;
  LpModel *lr = lp_test_tiny_model (7);
  *dense = lp_test_tiny_model (7);
  for (guint i = 0; names[i]; i++)
    {
      LpTensor *w = lp_model_tensor (lr, names[i]);
      g_autoptr (LpTensor) a = random_f32 ("a", w->shape[0], RANK, 11 + i, 0.3);
      g_autoptr (LpTensor) b = random_f32 ("b", RANK, w->shape[1], 23 + i, 0.3);
      g_autoptr (LpTensor) t = lp_tensor_new_low_rank (names[i], a, b, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (lr, t);
      g_autofree float *v = lp_tensor_dup_f32 (t, &error);
      g_autoptr (LpTensor) d = lp_tensor_new_f32 (names[i], 2, t->shape, v, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (*dense, d);
    }
  return lr;
}

/* y[T, N] = x[T, K] W^T (+ acc) through t's form, on a CPU graph. */
static float *
form_product (LpTensor *t, const float *x, int T, const float *acc)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autoptr (LpFormWeights) w = lp_form_weights_new (t, be, FALSE, &error);
  g_assert_no_error (error);
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  gint64 xs[2] = { T, lp_tensor_row_length (t) }, ys[2] = { T, lp_tensor_n_rows (t) };
  LpCTensor *xc = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, xs, "x", &error);
  LpCTensor *ac = acc ? lp_cgraph_tensor (g, LP_DTYPE_F32, 2, ys, "acc", &error) : NULL;
  g_assert_no_error (error);
  lp_ctensor_write (xc, 0, x, xc->n_bytes);
  if (ac)
    lp_ctensor_write (ac, 0, acc, ac->n_bytes);
  LpCTensor *y = lp_form_weights_matmul (w, g, xc, ac, &error);
  g_assert_no_error (error);
  g_assert_true (lp_cgraph_compute (g, &error));
  float *out = g_new (float, ys[0] * ys[1]);
  lp_ctensor_read (y, 0, out, y->n_bytes);
  return out;
}

static const gint32 tokens[] = { 1, 17, 40, 3, 63, 8, 22, 5, 31, 2, 12, 50 };
#define N_TOKENS ((int) G_N_ELEMENTS (tokens))

/* ---- the table ---- */

/* Every registered form has a name, the methods every caller relies on, and
 * part suffixes no other form claims (a reader tells parts by suffix). */
static void
test_registration (void)
{
  g_autoptr (GHashTable) names = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GHashTable) suffixes = g_hash_table_new (g_str_hash, g_str_equal);
  guint n = 0;
  for (const LpFormClass *const *k = lp_form_classes (); *k; k++, n++)
    {
      g_assert_nonnull ((*k)->name);
      g_assert_true (g_hash_table_add (names, (gpointer) (*k)->name));
      g_assert_nonnull ((*k)->materialize_rows);
      g_assert_nonnull ((*k)->storage_bytes);
      g_assert_nonnull ((*k)->upload);
      g_assert_nonnull ((*k)->matmul);
      for (const LpFormPart *p = (*k)->parts; p && p->suffix; p++)
        {
          g_assert_true (p->suffix[0] == '.');
          g_assert_true (g_hash_table_add (suffixes, (gpointer) p->suffix));
        }
    }
  g_assert_cmpuint (n, ==, 7);
  g_assert_true (g_hash_table_contains (names, "low-rank"));
  g_assert_true (g_hash_table_contains (names, "codebook"));
  gsize len;
  const LpFormPart *p = lp_form_part_find ("blk.0.ffn_up.weight.lr_a", &len);
  g_assert_nonnull (p);
  g_assert_cmpstr (p->suffix, ==, ".lr_a");
  g_assert_true (p->weight_rows);
  g_assert_cmpuint (len, ==, strlen ("blk.0.ffn_up.weight"));
  g_assert_null (lp_form_part_find ("blk.0.ffn_up.weight", &len));
  /* Plain tensors have the form their dtype says. */
  gint64 shape[2] = { 2, 32 };
  g_autoptr (LpTensor) q = lp_tensor_new ("q", LP_DTYPE_Q4_0, 2, shape, NULL);
  g_autoptr (LpTensor) f = lp_tensor_new ("f", LP_DTYPE_F16, 2, shape, NULL);
  g_assert_cmpstr (lp_form_name (lp_tensor_form (q)), ==, "blocks");
  g_assert_cmpstr (lp_form_name (lp_tensor_form (f)), ==, "dense");
  g_assert_true (lp_tensor_is_quantized (q));
  g_assert_false (lp_tensor_is_quantized (f));
  g_assert_cmpfloat (lp_tensor_bits_per_weight (q), ==, 18.0 * 8 / 32);
  g_assert_cmpfloat (lp_tensor_bits_per_weight (f), ==, 16.0);
}

/* ---- low-rank ---- */

/* The values are A B; rows materialize alone; bytes and bits are the
 * factors'; bad factors are refused by name. */
static void
test_low_rank_basics (void)
{
  g_autoptr (GError) error = NULL;
  const gint64 N = 48, K = 32;
  g_autoptr (LpTensor) a = random_f32 ("a", N, RANK, 1, 0.5);
  g_autoptr (LpTensor) b = random_f32 ("b", RANK, K, 2, 0.5);
  g_autoptr (LpTensor) t = lp_tensor_new_low_rank ("w", a, b, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_form_name (lp_tensor_form (t)), ==, "low-rank");
  g_assert_cmpint (t->shape[0], ==, N);
  g_assert_cmpint (t->shape[1], ==, K);
  g_autofree double *w = product64 (a, b);
  const float *v = lp_tensor_data (t);
  for (gint64 i = 0; i < N * K; i++)
    g_assert_cmpfloat (fabs (v[i] - w[i]), <, 1e-6);
  float rows[3 * 32];
  g_assert_true (lp_tensor_materialize_rows (t, 7, 3, rows, &error));
  g_assert_cmpmem (rows, sizeof rows, v + 7 * K, sizeof rows);
  g_assert_cmpuint (lp_tensor_storage_bytes (t), ==, (N * RANK + RANK * K) * 4);
  g_assert_cmpfloat (fabs (lp_tensor_bits_per_weight (t) - 32.0 * (N + K) * RANK / (N * K)), <, 1e-12);
  g_assert_false (lp_tensor_is_quantized (t));
  g_assert_null (lp_tensor_mask (t));
  g_assert_null (lp_tensor_int_grid (t));
  LpTensor *fa, *fb;
  g_assert_true (lp_tensor_low_rank_factors (t, &fa, &fb));
  g_assert_true (g_bytes_equal (fa->data, a->data) && g_bytes_equal (fb->data, b->data));
  g_assert_false (lp_tensor_low_rank_factors (a, &fa, &fb));
  /* A renamed copy keeps the form. */
  g_autoptr (LpTensor) r = lp_tensor_rename (t, "w2");
  g_assert_cmpstr (lp_form_name (lp_tensor_form (r)), ==, "low-rank");
  /* f16 factors are read as f32. */
  g_autoptr (LpTensor) a16 = lp_tensor_convert (a, LP_DTYPE_F16, &error);
  g_autoptr (LpTensor) t16 = lp_tensor_new_low_rank ("w", a16, b, &error);
  g_assert_no_error (error);
  g_assert_cmpint (t16->dtype, ==, LP_DTYPE_F32);
  /* Inner dimensions that disagree, a block type. */
  g_autoptr (LpTensor) b2 = random_f32 ("b", RANK + 1, K, 2, 0.5);
  g_assert_null (lp_tensor_new_low_rank ("w", a, b2, &error));
  lp_test_assert_error_contains (error, "tensor w", "expected A [N, R] and B [R, K]", "5 and B 6x32", NULL);
  g_clear_error (&error);
  gint64 qs[2] = { RANK, 32 };
  g_autoptr (LpTensor) q = lp_tensor_new ("bq", LP_DTYPE_Q8_0, 2, qs, NULL);
  g_assert_null (lp_tensor_new_low_rank ("w", a, q, &error));
  lp_test_assert_error_contains (error, "low-rank factor B bq", "expected a 2-D f32, f16 or bf16 matrix", "q8_0", NULL);
}

/* The forward pass asks the form for its product: a model with low-rank
 * layers gives the logits of the same model with A B materialized, within
 * f32 rounding (two products against one). */
static void
test_low_rank_forward (void)
{
  static const char *const names[] = { "blk.0.ffn_up.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight", NULL };
  g_autoptr (LpModel) dense = NULL;
  g_autoptr (LpModel) lr = model_with_low_rank (names, &dense);
  g_autofree float *x = lp_test_logits (lr, tokens, N_TOKENS);
  g_autofree float *y = lp_test_logits (dense, tokens, N_TOKENS);
  gsize n = (gsize) N_TOKENS * lp_model_config (lr)->n_vocab;
  lp_test_assert_close (x, y, n, 1e-5);
  /* And the product itself, against float64. */
  LpTensor *w = lp_model_tensor (lr, names[0]);
  LpTensor *a, *b;
  g_assert_true (lp_tensor_low_rank_factors (w, &a, &b));
  g_autofree double *w64 = product64 (a, b);
  const int T = 3, N = (int) w->shape[0], K = (int) w->shape[1];
  g_autofree float *in = g_new (float, T * K), *acc = g_new (float, T * N);
  lp_test_fill (in, T * K, 5, 1.0);
  for (int i = 0; i < T * N; i++)
    acc[i] = 0.5f;
  g_autofree float *out = form_product (w, in, T, acc);
  for (int t = 0; t < T; t++)
    for (int j = 0; j < N; j++)
      {
        double e = 0.5;
        for (int k = 0; k < K; k++)
          e += (double) in[t * K + k] * w64[(gsize) j * K + k];
        g_assert_cmpfloat (fabs (out[t * N + j] - e), <, 1e-5 * (1 + fabs (e)));
      }
}

/* Same tensors by name: dtype, shape, bytes, and form. */
static void
assert_same_tensors (LpModel *x, LpModel *y)
{
  g_assert_cmpuint (lp_model_n_tensors (x), ==, lp_model_n_tensors (y));
  for (guint i = 0; i < lp_model_n_tensors (x); i++)
    {
      LpTensor *t = lp_model_tensor_at (x, i), *u = lp_model_tensor (y, t->name);
      g_assert_nonnull (u);
      g_assert_cmpint (t->dtype, ==, u->dtype);
      g_assert_cmpmem (t->shape, sizeof t->shape, u->shape, sizeof u->shape);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (t)), ==, lp_form_name (lp_tensor_form (u)));
      if (!g_bytes_equal (t->data, u->data))
        g_error ("tensor %s: values differ after the round trip", t->name);
      LpTensor *a, *b, *c, *d;
      if (lp_tensor_low_rank_factors (t, &a, &b))
        {
          g_assert_true (lp_tensor_low_rank_factors (u, &c, &d));
          g_assert_true (g_bytes_equal (a->data, c->data) && g_bytes_equal (b->data, d->data));
        }
    }
}

/* GGUF: <name>.lr_a and <name>.lr_b in the file with llmpress.form.<name>,
 * no <name>; reading rebuilds the form (keys and parts gone), logits to
 * the bit.  A file missing a factor is refused by name. */
static void
test_low_rank_gguf (void)
{
  static const char *const names[] = { "blk.0.ffn_up.weight", "blk.1.attn_k.weight", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) dense = NULL;
  g_autoptr (LpModel) lr = model_with_low_rank (names, &dense);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "lr.gguf", NULL);
  g_assert_true (lp_model_save (lr, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_null (lp_meta_get (lp_model_meta (lr), "llmpress.form.blk.0.ffn_up.weight"));

  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) raw = lp_gguf_read_tensors (path, meta, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_meta_get_string (meta, "llmpress.form.blk.0.ffn_up.weight"), ==, "low-rank");
  g_assert_cmpstr (lp_meta_get_string (meta, "llmpress.form.blk.1.attn_k.weight"), ==, "low-rank");
  gboolean seen_a = FALSE, seen_b = FALSE;
  for (guint i = 0; i < raw->len; i++)
    {
      LpTensor *t = raw->pdata[i];
      g_assert_cmpstr (t->name, !=, "blk.0.ffn_up.weight");
      if (strcmp (t->name, "blk.0.ffn_up.weight.lr_a") == 0)
        seen_a = t->shape[0] == 48 && t->shape[1] == RANK;
      if (strcmp (t->name, "blk.0.ffn_up.weight.lr_b") == 0)
        seen_b = t->shape[0] == RANK && t->shape[1] == 32;
    }
  g_assert_true (seen_a && seen_b);

  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  assert_same_tensors (lr, back);
  g_assert_null (lp_meta_get (lp_model_meta (back), "llmpress.form.blk.0.ffn_up.weight"));
  g_autofree float *x = lp_test_logits (lr, tokens, N_TOKENS);
  g_autofree float *y = lp_test_logits (back, tokens, N_TOKENS);
  g_assert_cmpmem (x, N_TOKENS * 64 * sizeof (float), y, N_TOKENS * 64 * sizeof (float));

  /* Written as f16: the factors are converted as any float matrix is. */
  g_autofree char *p16 = g_build_filename (lp_test_tmpdir (), "lr16.gguf", NULL);
  LpSaveOptions o = LP_SAVE_OPTIONS_INIT;
  o.dtype = LP_DTYPE_F16;
  g_assert_true (lp_model_save (lr, p16, &o, &error));
  g_autoptr (LpModel) b16 = lp_model_load (p16, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_form_name (lp_tensor_form (lp_model_tensor (b16, names[0]))), ==, "low-rank");

  /* A factor missing. */
  for (guint i = 0; i < raw->len; i++)
    if (strcmp (((LpTensor *) raw->pdata[i])->name, "blk.1.attn_k.weight.lr_b") == 0)
      g_ptr_array_remove_index (raw, i);
  g_autofree char *bad = g_build_filename (lp_test_tmpdir (), "lr-bad.gguf", NULL);
  g_assert_true (lp_gguf_write (bad, meta, raw, &error));
  g_assert_null (lp_model_load (bad, NULL, &error));
  lp_test_assert_error_contains (error, "lr-bad.gguf", "tensor blk.1.attn_k.weight",
                                 "expected its low-rank parts", "found blk.1.attn_k.weight.lr_b missing", NULL);
}

/* Hugging Face: the factors under the weight's HF name plus the suffix,
 * A's rows in HF's rotate-half order for Q/K (so A_hf B is the dense HF
 * q_proj), the form key in __metadata__; reading rebuilds it. */
static void
test_low_rank_hf (void)
{
  static const char *const names[] = { "blk.0.attn_q.weight", "blk.1.ffn_gate.weight", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) dense = NULL;
  g_autoptr (LpModel) lr = model_with_low_rank (names, &dense);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "lr-hf", NULL);
  g_autofree char *ddir = g_build_filename (lp_test_tmpdir (), "dense-hf", NULL);
  g_assert_true (lp_model_save (lr, dir, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (lp_model_save (dense, ddir, NULL, &error));
  g_assert_no_error (error);

  g_autofree char *st_path = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *dst_path = g_build_filename (ddir, "model.safetensors", NULL);
  g_autoptr (LpSafetensors) st = lp_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  g_autoptr (LpSafetensors) dst = lp_safetensors_open (dst_path, &error);
  g_assert_no_error (error);
  g_assert_null (lp_safetensors_tensor (st, "model.layers.0.self_attn.q_proj.weight"));
  LpTensor *a = lp_safetensors_tensor (st, "model.layers.0.self_attn.q_proj.weight.lr_a");
  LpTensor *b = lp_safetensors_tensor (st, "model.layers.0.self_attn.q_proj.weight.lr_b");
  LpTensor *q = lp_safetensors_tensor (dst, "model.layers.0.self_attn.q_proj.weight");
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_nonnull (lp_safetensors_tensor (st, "model.layers.1.mlp.gate_proj.weight.lr_b"));
  g_assert_cmpstr (g_hash_table_lookup (lp_safetensors_metadata (st), "llmpress.form.blk.0.attn_q.weight"), ==,
                   "low-rank");
  /* HF's q_proj is the HF-ordered A times B. */
  g_autofree double *w = product64 (a, b);
  const float *qv = lp_tensor_data (q);
  for (gint64 i = 0; i < lp_tensor_n_elements (q); i++)
    g_assert_cmpfloat (fabs (qv[i] - w[i]), <, 1e-6);

  g_autoptr (LpModel) back = lp_model_load (dir, NULL, &error);
  g_assert_no_error (error);
  for (guint i = 0; names[i]; i++)
    {
      LpTensor *t = lp_model_tensor (lr, names[i]), *u = lp_model_tensor (back, names[i]);
      LpTensor *ta, *tb, *ua, *ub;
      g_assert_true (lp_tensor_low_rank_factors (t, &ta, &tb));
      g_assert_true (lp_tensor_low_rank_factors (u, &ua, &ub));
      g_assert_true (g_bytes_equal (ta->data, ua->data) && g_bytes_equal (tb->data, ub->data));
      g_assert_true (g_bytes_equal (t->data, u->data));
    }
  g_assert_null (lp_model_tensor (back, "blk.0.attn_q.weight.lr_a"));
  g_autofree float *x = lp_test_logits (lr, tokens, N_TOKENS);
  g_autofree float *y = lp_test_logits (back, tokens, N_TOKENS);
  g_assert_cmpmem (x, N_TOKENS * 64 * sizeof (float), y, N_TOKENS * 64 * sizeof (float));
}

/* ---- backward ---- */

/* L = sum dy * (x W^T) in float64, W made of parameter values p[0], p[1]
 * (see each loss) and a scale. */
typedef double (*LossFn) (const double *const *p, double s, const double *x, const double *dy, int T, int N, int K,
                          int R);

/* Gradients of trainable parameters 0 .. n-1 of t's form, recorded by
 * lp_cgraph_backward over y = x W^T, read through lp_form_weights_grad
 * (out[i] has parameter i's elements). */
static void
form_grads (LpTensor *t, const float *x, const float *dy, int T, float **out, int n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autoptr (LpFormWeights) w = lp_form_weights_new (t, be, TRUE, &error);
  g_assert_no_error (error);
  g_assert_cmpint (w->n_trainable, ==, n);
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  gint64 xs[2] = { T, lp_tensor_row_length (t) }, ys[2] = { T, lp_tensor_n_rows (t) };
  LpCTensor *xc = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, xs, "x", &error);
  LpCTensor *dyc = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, ys, "dy", &error);
  g_assert_no_error (error);
  lp_ctensor_write (xc, 0, x, xc->n_bytes);
  lp_ctensor_write (dyc, 0, dy, dyc->n_bytes);
  LpCTensor *y = lp_form_weights_matmul (w, g, xc, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (lp_cgraph_backward (g, y, dyc, &error));
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  for (int i = 0; i < n; i++)
    {
      out[i] = g_new (float, lp_ctensor_n_elements (w->params[i]));
      g_assert_true (lp_form_weights_grad (w, g, i, out[i], &error));
      g_assert_no_error (error);
    }
}

static double *
to64 (const float *v, gsize n)
{
  double *d = g_new (double, n);
  for (gsize i = 0; i < n; i++)
    d[i] = v[i];
  return d;
}

/* Central differences of loss in float64 w.r.t. p[which] (n elements)
 * against grad, to rel_tol of the gradient's scale. */
static void
assert_fd (const char *what, LossFn loss, double **p, double s, int which, gsize n, const double *x, const double *dy,
           int T, int N, int K, int R, const float *grad, double rel_tol)
{
  double scale = 0;
  for (gsize e = 0; e < n; e++)
    scale = MAX (scale, fabs (grad[e]));
  for (gsize e = 0; e < n; e++)
    {
      const double h = 1e-3, keep = p[which][e];
      p[which][e] = keep + h;
      double up = loss ((const double *const *) p, s, x, dy, T, N, K, R);
      p[which][e] = keep - h;
      double down = loss ((const double *const *) p, s, x, dy, T, N, K, R);
      p[which][e] = keep;
      double fd = (up - down) / (2 * h);
      if (fabs (fd - grad[e]) > rel_tol * MAX (scale, 1e-3))
        g_error ("%s: element %" G_GSIZE_FORMAT ": gradient %.9g, finite differences %.9g", what, e, grad[e], fd);
    }
}

/* W = s P [N, R] Q [R, K]: p[0] = P, p[1] = Q. */
static double
factor_loss (const double *const *p, double s, const double *x, const double *dy, int T, int N, int K, int R)
{
  double L = 0;
  for (int t = 0; t < T; t++)
    for (int n = 0; n < N; n++)
      {
        double y = 0;
        for (int r = 0; r < R; r++)
          {
            double xq = 0;
            for (int k = 0; k < K; k++)
              xq += x[t * K + k] * p[1][r * K + k];
            y += s * xq * p[0][n * R + r];
          }
        L += dy[t * N + n] * y;
      }
  return L;
}

/* t = s P Q through its form, whose trainable parameters are P and Q
 * (p_first: P is parameter 0, else Q is): their gradients against float64
 * finite differences of sum dy * (x Q^T P^T) s. */
static void
check_factor_grads (const char *what, LpTensor *t, LpTensor *P, LpTensor *Q, gboolean p_first, double s, int T,
                    guint32 seed)
{
  const int N = (int) P->shape[0], R = (int) P->shape[1], K = (int) Q->shape[1];
  g_autofree float *x = g_new (float, T * K), *dy = g_new (float, T * N);
  lp_test_fill (x, T * K, seed, 1.0);
  lp_test_fill (dy, T * N, seed + 1, 1.0);
  float *grad[2];
  form_grads (t, x, dy, T, grad, 2);
  g_autofree double *pp = to64 (lp_tensor_data (P), N * R), *pq = to64 (lp_tensor_data (Q), R * K);
  g_autofree double *x64 = to64 (x, T * K), *dy64 = to64 (dy, T * N);
  double *p[2] = { pp, pq };
  g_autofree char *dp = g_strdup_printf ("%s: d%s", what, p_first ? "A" : "B");
  g_autofree char *dq = g_strdup_printf ("%s: d%s", what, p_first ? "B" : "A");
  assert_fd (dp, factor_loss, p, s, 0, N * R, x64, dy64, T, N, K, R, grad[p_first ? 0 : 1], 1e-5);
  assert_fd (dq, factor_loss, p, s, 1, R * K, x64, dy64, T, N, K, R, grad[p_first ? 1 : 0], 1e-5);
  g_free (grad[0]);
  g_free (grad[1]);
}

/* Both factors of a low-rank weight W = A B train. */
static void
test_low_rank_backward (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) a = random_f32 ("a", 9, 3, 31, 0.5);
  g_autoptr (LpTensor) b = random_f32 ("b", 3, 7, 32, 0.5);
  g_autoptr (LpTensor) t = lp_tensor_new_low_rank ("w", a, b, &error);
  g_assert_no_error (error);
  check_factor_grads ("low-rank", t, a, b, TRUE, 1.0, 6, 33);
}

/* p[0] = W [N, K]. */
static double
dense_loss (const double *const *p, double s, const double *x, const double *dy, int T, int N, int K, int R)
{
  double L = 0;
  for (int t = 0; t < T; t++)
    for (int n = 0; n < N; n++)
      {
        double y = 0;
        for (int k = 0; k < K; k++)
          y += x[t * K + k] * p[0][n * K + k];
        L += dy[t * N + n] * y;
      }
  return L;
}

/* A masked weight's gradient is the dense one times the mask: exactly 0
 * where pruned, the finite differences elsewhere. */
static void
test_masked_backward (void)
{
  g_autoptr (GError) error = NULL;
  const int T = 5, N = 6, K = 8;
  g_autoptr (LpTensor) d = random_f32 ("w", N, K, 41, 0.5);
  float *v = lp_tensor_data_mut (d);
  for (int i = 0; i < N * K; i += 3)
    v[i] = 0.0f;
  g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, N * K);
  g_autoptr (LpTensor) t = lp_tensor_with_mask (d, mask, &error);
  g_autofree float *x = g_new (float, T * K), *dy = g_new (float, T * N);
  lp_test_fill (x, T * K, 42, 1.0);
  lp_test_fill (dy, T * N, 43, 1.0);
  float *grad[1];
  form_grads (t, x, dy, T, grad, 1);
  g_autofree double *pw = to64 (v, N * K), *x64 = to64 (x, T * K), *dy64 = to64 (dy, T * N);
  g_autofree float *expect = g_memdup2 (grad[0], sizeof (float) * N * K);
  for (int i = 0; i < N * K; i++)
    if (i % 3 == 0)
      {
        g_assert_cmpfloat (grad[0][i], ==, 0.0f);
        /* The dense gradient there, for the finite-difference check below. */
        double e = 0;
        for (int s = 0; s < T; s++)
          e += dy[s * N + i / K] * x[s * K + i % K];
        expect[i] = (float) e;
      }
  double *p[1] = { pw };
  assert_fd ("masked dW", dense_loss, p, 1.0, 0, N * K, x64, dy64, T, N, K, 0, expect, 1e-5);
  g_free (grad[0]);
}

/* An adapter W = base + 0.5 B A trains A and B, its base frozen (a
 * constant in the loss). */
static void
test_adapter_backward (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) base = random_f32 ("w", 7, 6, 51, 0.5);
  g_autoptr (LpTensor) a = random_f32 ("a", 2, 6, 52, 0.5);
  g_autoptr (LpTensor) b = random_f32 ("b", 7, 2, 53, 0.5);
  g_autoptr (LpTensor) t = lp_tensor_new_adapter (base, a, b, 0.5, &error);
  g_assert_no_error (error);
  check_factor_grads ("adapter", t, b, a, FALSE, 0.5, 4, 54);
}

/* ---- compositions ---- */

/* An adapter over a masked base: values base + s B A; its product; its
 * bytes; a GGUF round trip keeps both the adapter and the base's mask. */
static void
test_adapter (void)
{
  g_autoptr (GError) error = NULL;
  const gint64 N = 48, K = 32;
  g_autoptr (LpTensor) w = random_f32 ("blk.0.ffn_up.weight", N, K, 3, 0.2);
  float *wv = lp_tensor_data_mut (w);
  for (gint64 i = 0; i < N * K; i += 3)
    wv[i] = 0.0f;
  g_autoptr (GBytes) mask = lp_mask_from_nonzero (wv, N * K);
  g_autoptr (LpTensor) base = lp_tensor_with_mask (w, mask, &error);
  g_autoptr (LpTensor) a = random_f32 ("a", RANK, K, 4, 0.1);
  g_autoptr (LpTensor) b = random_f32 ("b", N, RANK, 6, 0.1);
  g_autoptr (LpTensor) t = lp_tensor_new_adapter (base, a, b, 2.0, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (lp_form_name (lp_tensor_form (t)), ==, "adapter");
  g_assert_cmpuint (lp_tensor_storage_bytes (t), ==, (N * K + RANK * K + N * RANK) * 4);
  g_autofree double *ba = product64 (b, a);
  const float *v = lp_tensor_data (t);
  for (gint64 i = 0; i < N * K; i++)
    g_assert_cmpfloat (fabs (v[i] - (wv[i] + 2.0 * ba[i])), <, 1e-6);
  /* Its product against the materialized one. */
  g_autoptr (LpTensor) flat = lp_tensor_new_f32 ("flat", 2, t->shape, v, &error);
  const int T = 4;
  g_autofree float *in = g_new (float, T * K);
  lp_test_fill (in, T * K, 8, 1.0);
  g_autofree float *y1 = form_product (t, in, T, NULL), *y2 = form_product (flat, in, T, NULL);
  lp_test_assert_close (y1, y2, T * N, 1e-5);

  g_autoptr (LpModel) m = lp_test_tiny_model (9);
  lp_model_set_tensor (m, t);
  lp_sparsity_record_tensor (lp_model_meta (m), base);
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "adapter.gguf", NULL);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  LpTensor *u = lp_model_tensor (back, "blk.0.ffn_up.weight");
  g_assert_cmpstr (lp_form_name (lp_tensor_form (u)), ==, "adapter");
  g_assert_true (g_bytes_equal (u->data, t->data));
  g_assert_null (lp_model_tensor (back, "blk.0.ffn_up.weight.lora_a"));
  g_assert_cmpuint (lp_tensor_storage_bytes (u), ==, lp_tensor_storage_bytes (t));
}

/* A grid with a mask: both answer; a new mask replaces the old over the
 * grid; no mask gives the grid back alone. */
static void
test_masked_grid (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpIntGrid) g = lp_test_int_grid (6, 16, 4, 8, 3);
  g_autofree float *v = g_new (float, 6 * 16);
  lp_int_grid_dequantize (g, v);
  g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, 6 * 16);
  gint64 shape[2] = { 6, 16 };
  g_autoptr (LpTensor) t = lp_tensor_new_int_grid ("w", 2, shape, g, mask, &error);
  g_assert_no_error (error);
  g_assert_true (lp_tensor_int_grid (t) == g);
  g_assert_true (lp_tensor_mask (t) == mask);
  g_assert_true (lp_tensor_is_quantized (t));
  g_assert_cmpuint (lp_tensor_storage_bytes (t), ==, lp_int_grid_n_bytes (g));
  g_autoptr (LpTensor) bare = lp_tensor_with_mask (t, NULL, &error);
  g_assert_true (lp_tensor_int_grid (bare) == g);
  g_assert_null (lp_tensor_mask (bare));
  g_assert_cmpstr (lp_form_name (lp_tensor_form (bare)), ==, "grid");
  float rows[2 * 16];
  g_assert_true (lp_tensor_materialize_rows (t, 4, 2, rows, &error));
  g_assert_cmpmem (rows, sizeof rows, v + 4 * 16, sizeof rows);
  g_autoptr (GBytes) short_mask = g_bytes_new ("\xff", 1);
  g_assert_null (lp_tensor_with_mask (t, short_mask, &error));
  lp_test_assert_error_contains (error, "tensor w: mask: expected 12 bytes, found 1", NULL);
}

/* tensor `name` of `raw` replaced by a copy of itself whose byte 0 is `byte`. */
static void
poke_first_byte (GPtrArray *raw, const char *name, guint8 byte)
{
  for (guint i = 0; i < raw->len; i++)
    {
      LpTensor *t = raw->pdata[i];
      if (strcmp (t->name, name) != 0)
        continue;
      guint8 *d = g_memdup2 (lp_tensor_data (t), lp_tensor_n_bytes (t));
      d[0] = byte;
      g_autoptr (GBytes) b = g_bytes_new_take (d, lp_tensor_n_bytes (t));
      raw->pdata[i] = lp_tensor_new_from_bytes (t->name, t->dtype, t->n_dims, t->shape, b, NULL);
      lp_tensor_unref (t);
      return;
    }
  g_assert_not_reached ();
}

/* `raw` (with `meta`) written to `file` and loaded: refused with a message
 * holding each of the NULL-terminated strings. */
static void
assert_load_fails (GPtrArray *raw, LpMeta *meta, const char *file, ...)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), file, NULL);
  g_assert_true (lp_gguf_write (path, meta, raw, &error));
  g_assert_null (lp_model_load (path, NULL, &error));
  g_assert_nonnull (error);
  g_test_message ("%s", error->message);
  va_list ap;
  va_start (ap, file);
  for (const char *want = va_arg (ap, const char *); want; want = va_arg (ap, const char *))
    g_assert_nonnull (strstr (error->message, want));
  va_end (ap);
}

/* What the cache writes (exact_forms): a grid as its codes, scales, zeros
 * and g_idx, a mask as written (here one keeping every weight, zeros
 * included, which the zeros alone would not say); read back as the same
 * grid and mask, each tensor where it stood.  Damaged parts are refused by
 * name. */
static void
test_grid_exact_gguf (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_test_tiny_model (7);
  const char *names[] = { "blk.0.ffn_up.weight", "blk.1.attn_k.weight" };
  for (int i = 0; i < 2; i++)
    {
      LpTensor *w = lp_model_tensor (m, names[i]);
      g_autoptr (LpIntGrid) g = lp_test_int_grid (w->shape[0], w->shape[1], 3 + i, 16, 5 + i);
      gint64 n = w->shape[0] * w->shape[1];
      g_autofree guint8 *ones = g_malloc ((n + 7) / 8);
      memset (ones, 0xff, (n + 7) / 8);
      g_autoptr (GBytes) keep = g_bytes_new (ones, (n + 7) / 8);
      g_autoptr (LpTensor) t = lp_tensor_new_int_grid (names[i], 2, w->shape, g, i == 1 ? keep : NULL, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (m, t);
    }
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "grid-exact.gguf", NULL);
  LpSaveOptions o = LP_SAVE_OPTIONS_INIT;
  o.exact_forms = TRUE;
  g_assert_true (lp_model_save (m, path, &o, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (lp_model_n_tensors (back), ==, lp_model_n_tensors (m));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *a = lp_model_tensor_at (m, i), *b = lp_model_tensor_at (back, i);
      g_assert_cmpstr (a->name, ==, b->name);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (a)), ==, lp_form_name (lp_tensor_form (b)));
      g_assert_true (g_bytes_equal (a->data, b->data));
      g_assert_true ((lp_tensor_mask (a) == NULL) == (lp_tensor_mask (b) == NULL));
      if (lp_tensor_mask (a) != NULL)
        g_assert_true (g_bytes_equal (lp_tensor_mask (a), lp_tensor_mask (b)));
      const LpIntGrid *ga = lp_tensor_int_grid (a), *gb = lp_tensor_int_grid (b);
      g_assert_true ((ga == NULL) == (gb == NULL));
      if (ga == NULL)
        continue;
      g_assert_cmpint (ga->bits, ==, gb->bits);
      g_assert_cmpint (ga->group_size, ==, gb->group_size);
      g_assert_cmpint (ga->symmetric, ==, gb->symmetric);
      g_assert_cmpmem (ga->codes, ga->rows * ga->cols, gb->codes, gb->rows * gb->cols);
      g_assert_cmpmem (ga->scales, ga->rows * ga->n_groups * 2, gb->scales, gb->rows * gb->n_groups * 2);
      g_assert_cmpmem (ga->zeros, ga->rows * ga->n_groups, gb->zeros, gb->rows * gb->n_groups);
      g_assert_cmpmem (ga->g_idx, ga->cols * 4, gb->g_idx, gb->cols * 4);
    }
  g_assert_cmpfloat (lp_tensor_sparsity (lp_model_tensor (back, names[1])), ==, 0.0);

  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) raw = lp_gguf_read_tensors (path, meta, &error);
  g_assert_no_error (error);
  poke_first_byte (raw, "blk.0.ffn_up.weight.grid_codes", 200);
  assert_load_fails (raw, meta, "grid-code.gguf", "grid-code.gguf", "tensor blk.0.ffn_up.weight",
                     "grid: expected codes 0..7, found 200 at 0", NULL);
  poke_first_byte (raw, "blk.0.ffn_up.weight.grid_codes", 0);
  poke_first_byte (raw, "blk.0.ffn_up.weight.grid_gidx", 9);
  assert_load_fails (raw, meta, "grid-gidx.gguf", "tensor blk.0.ffn_up.weight", "grid: expected g_idx 0..1, found 9 at 0",
                     NULL);
  for (guint i = 0; i < raw->len; i++)
    if (strcmp (((LpTensor *) raw->pdata[i])->name, "blk.0.ffn_up.weight.grid_gidx") == 0)
      g_ptr_array_remove_index (raw, i);
  assert_load_fails (raw, meta, "grid-part.gguf", "tensor blk.0.ffn_up.weight",
                     "expected every grid part beside blk.0.ffn_up.weight.grid_codes",
                     "found blk.0.ffn_up.weight.grid_gidx missing", NULL);

  /* The keep-mask part: one of a tensor that is not there, one a byte
   * short, one of the wrong type. */
  g_autoptr (LpMeta) meta2 = lp_meta_new ();
  g_autoptr (GPtrArray) raw2 = lp_gguf_read_tensors (path, meta2, &error);
  g_assert_no_error (error);
  const char *part = "blk.1.attn_k.weight.keep_mask";
  guint at = 0;
  while (strcmp (((LpTensor *) raw2->pdata[at])->name, part) != 0)
    at++;
  LpTensor *orig = raw2->pdata[at];
  gint64 len = lp_tensor_n_bytes (orig);
  raw2->pdata[at] = lp_tensor_new_from_bytes ("blk.9.attn_k.weight.keep_mask", orig->dtype, orig->n_dims, orig->shape,
                                              orig->data, NULL);
  assert_load_fails (raw2, meta2, "mask-orphan.gguf", "tensor blk.9.attn_k.weight.keep_mask",
                     "expected an i8 keep-mask of tensor blk.9.attn_k.weight, found no such tensor", NULL);
  lp_tensor_unref (raw2->pdata[at]);
  gint64 short_len = len - 1;
  g_autoptr (GBytes) shorter = g_bytes_new_from_bytes (orig->data, 0, short_len);
  raw2->pdata[at] = lp_tensor_new_from_bytes (part, LP_DTYPE_I8, 1, &short_len, shorter, NULL);
  g_autofree char *sizes = g_strdup_printf ("expected %" G_GINT64_FORMAT " bytes, found %" G_GINT64_FORMAT, len, short_len);
  assert_load_fails (raw2, meta2, "mask-short.gguf", "tensor blk.1.attn_k.weight: mask: ", sizes, NULL);
  lp_tensor_unref (raw2->pdata[at]);
  gint64 n_u8 = len / 2;
  g_autoptr (GBytes) as_u16 = g_bytes_new_from_bytes (orig->data, 0, n_u8 * 2);
  raw2->pdata[at] = lp_tensor_new_from_bytes (part, LP_DTYPE_F16, 1, &n_u8, as_u16, NULL);
  assert_load_fails (raw2, meta2, "mask-type.gguf", "tensor blk.1.attn_k.weight.keep_mask",
                     "expected an i8 keep-mask of tensor blk.1.attn_k.weight, found f16", NULL);
  lp_tensor_unref (raw2->pdata[at]);
  raw2->pdata[at] = orig;
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/forms/registration", test_registration);
  g_test_add_func ("/forms/low-rank/basics", test_low_rank_basics);
  g_test_add_func ("/forms/low-rank/forward", test_low_rank_forward);
  g_test_add_func ("/forms/low-rank/backward", test_low_rank_backward);
  g_test_add_func ("/forms/masked/backward", test_masked_backward);
  g_test_add_func ("/forms/adapter/backward", test_adapter_backward);
  g_test_add_func ("/forms/low-rank/gguf", test_low_rank_gguf);
  g_test_add_func ("/forms/low-rank/hf", test_low_rank_hf);
  g_test_add_func ("/forms/adapter", test_adapter);
  g_test_add_func ("/forms/masked-grid", test_masked_grid);
  g_test_add_func ("/forms/grid/exact-gguf", test_grid_exact_gguf);
  return g_test_run ();
}
