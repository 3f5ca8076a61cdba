/* Training each weight form (form.h): uploaded trainable
 * (lp_form_weights_new_train), a graph y = x W^T with an MSE loss against
 * a target, lp_cgraph_backward; every trainable parameter's gradient
 * against float64 finite differences of the loss; an AdamW-like step
 * written to the parameters (times the keep-mask where the form has one);
 * lp_form_weights_trained then gives the same form on the same grid / mask,
 * computing what the trained graph computed, and it goes through GGUF. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

/* The weight's shape: the tiny model's blk.0.ffn_up.weight [F, D], so a
 * trained weight can take its place in a file. */
#define N 48
#define K 32
#define T 5
#define GROUP 8
#define RANK 3
#define NAME "blk.0.ffn_up.weight"

/* How a form's parameters make W [N, K] (float64, for the finite differences). */
typedef enum {
  W_IS_P0,      /* dense, block latent, masked: W = p0 */
  W_STE,        /* grid values: W = fake_quant (latent); differentiated w.r.t. W, times "inside the grid" */
  W_SCALES,     /* grid scales: W = (code - z) p0[n, g_idx[k]] */
  W_LOW_RANK,   /* W = p0 [N, R] p1 [R, K] */
  W_ADAPTER,    /* W = base + s p1 [N, R] p0 [R, K] */
} WKind;

typedef struct {
  const char *what;
  LpTensor *t;
  LpFormTrain how;
  WKind kind;
  int n_trainable;
  double tol;         /* the trained graph's product against the rebuilt tensor's */
  double adapter_scale;
  const float *base;  /* an adapter's base values [N, K] */
  gboolean factor_grids; /* an adapter's A and B on integer grids */
} Case;

static LpTensor *
random_f32 (const char *name, gint64 rows, gint64 cols, guint32 seed, double scale)
{
  g_autoptr (GError) error = NULL;
  g_autofree float *v = g_new (float, rows * cols);
  lp_test_fill (v, (gsize) (rows * cols), seed, scale);
  LpTensor *t = lp_tensor_new_f32 (name, 2, (gint64[]){ rows, cols }, v, &error);
  g_assert_no_error (error);
  return t;
}

/* Every third weight pruned (0 in the values, 0 in the mask). */
static LpTensor *
masked (LpTensor *t)
{
  g_autoptr (GError) error = NULL;
  g_autofree float *v = lp_tensor_dup_f32 (t, &error);
  for (int e = 0; e < N * K; e += 3)
    v[e] = 0.0f;
  g_autoptr (LpTensor) z = lp_tensor_new_f32 (t->name, 2, t->shape, v, &error);
  g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, N * K);
  LpTensor *m = lp_tensor_with_mask (z, mask, &error);
  g_assert_no_error (error);
  return m;
}

/* The same over a block type: the pruned zeros are exact in Q8_0. */
static LpTensor *
masked_blocks (LpTensor *t)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) m = masked (t);
  g_autoptr (LpTensor) q = lp_tensor_convert (m, LP_DTYPE_Q8_0, &error);
  g_assert_no_error (error);
  LpTensor *out = lp_tensor_with_mask (q, lp_tensor_mask (m), &error);
  g_assert_no_error (error);
  return out;
}

/* A 4-bit grid, groups of 8, its g_idx permuted (act-order), some scales
 * tiny (weights far outside their range: clamped codes), with its mask
 * when `with_mask` (the grid's own zeros: codes equal to the zero point). */
static LpTensor *
grid (gboolean with_mask)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpIntGrid) g = lp_test_int_grid (N, K, 4, GROUP, 71);
  g_autofree float *v = g_new (float, N * K);
  lp_int_grid_dequantize (g, v);
  g_autoptr (GBytes) mask = with_mask ? lp_mask_from_nonzero (v, N * K) : NULL;
  LpTensor *t = lp_tensor_new_int_grid (NAME, 2, (gint64[]){ N, K }, g, mask, &error);
  g_assert_no_error (error);
  return t;
}

/* ---- the loss, in float64 ---- */

/* mean over t of mean over n of (x W^T - target)^2: MSE rows averaged, as
 * the graph's loss with dy = 1 / T. */
static double
loss64 (const double *W, const double *x, const double *target)
{
  double L = 0;
  for (int t = 0; t < T; t++)
    for (int n = 0; n < N; n++)
      {
        double y = 0;
        for (int k = 0; k < K; k++)
          y += x[t * K + k] * W[n * K + k];
        L += (y - target[t * N + n]) * (y - target[t * N + n]);
      }
  return L / T / N;
}

/* W from the parameters p[] as the case's form makes it. */
static void
build_w (const Case *c, double *const *p, double *W)
{
  const LpIntGrid *g = lp_tensor_int_grid (c->t);
  switch (c->kind)
    {
    case W_IS_P0:
    case W_STE:
      memcpy (W, p[0], sizeof (double) * N * K);
      break;
    case W_SCALES:
      for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
          {
            int j = n * g->n_groups + g->g_idx[k];
            W[n * K + k] = ((int) g->codes[n * K + k] - (int) g->zeros[j]) * p[0][j];
          }
      break;
    case W_LOW_RANK:
    case W_ADAPTER:
      {
        /* low-rank: p0 [N, R] p1 [R, K]; adapter: base + s p1 [N, R] p0 [R, K],
         * its base p2 when it trains */
        gboolean lr = c->kind == W_LOW_RANK;
        const double *a = lr ? p[0] : p[1], *b = lr ? p[1] : p[0];
        for (int n = 0; n < N; n++)
          for (int k = 0; k < K; k++)
            {
              double v = 0;
              for (int r = 0; r < RANK; r++)
                v += a[n * RANK + r] * b[r * K + k];
              W[n * K + k] = lr ? v : (c->n_trainable == 3 ? p[2][n * K + k] : c->base[n * K + k]) + c->adapter_scale * v;
            }
        break;
      }
    }
}

/* ---- the graph ---- */

typedef struct {
  LpCGraph *g;
  LpCTensor *y, *loss;
} Step;

/* y = x W^T through w's form, loss = mse (y, target), and, with `backward`,
 * the gradients (dy = 1 / T), computed. */
static Step
record_step (LpFormWeights *w, LpBackend *be, const float *x, const float *target, gboolean backward)
{
  g_autoptr (GError) error = NULL;
  Step s = { lp_cgraph_new (be), NULL, NULL };
  LpCTensor *xc = lp_cgraph_tensor (s.g, LP_DTYPE_F32, 2, (gint64[]){ T, K }, "x", &error);
  LpCTensor *tc = lp_cgraph_tensor (s.g, LP_DTYPE_F32, 2, (gint64[]){ T, N }, "target", &error);
  LpCTensor *dy = lp_cgraph_tensor (s.g, LP_DTYPE_F32, 1, (gint64[]){ T }, "dloss", &error);
  g_assert_no_error (error);
  lp_ctensor_write (xc, 0, x, xc->n_bytes);
  lp_ctensor_write (tc, 0, target, tc->n_bytes);
  float inv_t[T];
  for (int t = 0; t < T; t++)
    inv_t[t] = 1.0f / T;
  lp_ctensor_write (dy, 0, inv_t, dy->n_bytes);
  s.y = lp_form_weights_matmul (w, s.g, xc, NULL, &error);
  g_assert_no_error (error);
  LpCTensor *src[2] = { s.y, tc };
  LpCNode *mse = lp_cgraph_add (s.g, LP_COP_MSE, src, 2, NULL, 0, &error);
  g_assert_no_error (error);
  s.loss = mse->dst[0];
  if (backward)
    g_assert_true (lp_cgraph_backward (s.g, s.loss, dy, &error));
  g_assert_true (lp_cgraph_compute (s.g, &error));
  g_assert_no_error (error);
  return s;
}

static double *
read64 (const LpCTensor *t)
{
  gint64 n = lp_ctensor_n_elements (t);
  g_autofree float *f = g_new (float, n);
  lp_ctensor_read (t, 0, f, t->n_bytes);
  double *d = g_new (double, n);
  for (gint64 e = 0; e < n; e++)
    d[e] = f[e];
  return d;
}

/* Whether latent weight e lies inside the grid (its code not clamped). */
static gboolean
inside_grid (const LpIntGrid *g, int e, float latent)
{
  int j = (e / K) * g->n_groups + g->g_idx[e % K];
  int c = lp_int_round (lp_f16_to_f32 (g->scales[j]), g->zeros[j], latent);
  return c >= 0 && c <= (1 << g->bits) - 1;
}

/* Parameter i's gradient (as the form maps it) against central differences
 * of loss64; masked: 0 where pruned; STE: the gradient of W, 0 where the
 * latent weight was outside the grid. */
static void
check_gradients (const Case *c, LpFormWeights *w, Step *s, const float *x, const float *target)
{
  g_autoptr (GError) error = NULL;
  double *p[3] = { NULL, NULL, NULL };
  double x64[T * K], t64[T * N];
  for (int e = 0; e < T * K; e++)
    x64[e] = x[e];
  for (int e = 0; e < T * N; e++)
    t64[e] = target[e];
  for (int i = 0; i < c->n_trainable; i++)
    p[i] = read64 (w->params[i]);
  g_autofree float *latent = NULL;
  if (c->kind == W_STE)
    {
      /* The finite differences are W's: W = fake_quant (latent), as materialized. */
      const LpIntGrid *g = lp_tensor_int_grid (c->t);
      latent = g_new (float, N * K);
      lp_ctensor_read (w->params[0], 0, latent, w->params[0]->n_bytes);
      for (int e = 0; e < N * K; e++)
        {
          int j = (e / K) * g->n_groups + g->g_idx[e % K];
          guint8 code;
          p[0][e] = lp_int_quantize (lp_f16_to_f32 (g->scales[j]), g->zeros[j], (1 << g->bits) - 1, latent[e], &code);
        }
    }
  g_autofree double *W = g_new (double, N * K);
  GBytes *mask = lp_tensor_mask (c->t);
  int n_zero = 0;
  for (int i = 0; i < c->n_trainable; i++)
    {
      gint64 n = lp_ctensor_n_elements (w->params[i]);
      g_autofree float *grad = g_new (float, n);
      g_assert_true (lp_form_weights_grad (w, s->g, i, grad, &error));
      g_assert_no_error (error);
      double scale = 0;
      for (gint64 e = 0; e < n; e++)
        scale = MAX (scale, fabs (grad[e]));
      g_assert_cmpfloat (scale, >, 0);
      for (gint64 e = 0; e < n; e++)
        {
          const double h = 1e-3, keep = p[i][e];
          p[i][e] = keep + h;
          build_w (c, p, W);
          double up = loss64 (W, x64, t64);
          p[i][e] = keep - h;
          build_w (c, p, W);
          double down = loss64 (W, x64, t64);
          p[i][e] = keep;
          double expect = (up - down) / (2 * h);
          gboolean weight = n == N * K && (c->kind == W_IS_P0 || c->kind == W_STE);
          if (weight && mask != NULL && !lp_tensor_mask_keeps (c->t, e))
            expect = 0;
          if (c->kind == W_STE && !inside_grid (lp_tensor_int_grid (c->t), (int) e, latent[e]))
            expect = 0;
          n_zero += weight && expect == 0;
          if (fabs (expect - grad[e]) > 1e-4 * scale)
            g_error ("%s: parameter %d element %" G_GINT64_FORMAT ": gradient %.9g, finite differences %.9g", c->what,
                     i, e, grad[e], expect);
        }
    }
  /* The cases meant to exercise pruned or clamped weights do. */
  if ((mask != NULL && c->kind == W_IS_P0) || c->kind == W_STE)
    g_assert_cmpint (n_zero, >, 0);
  for (int i = 0; i < 3; i++)
    g_free (p[i]);
}

/* What an AdamW step does on its first step (m / sqrt (v) = sign (g)): each
 * parameter moves by lr sign (g), lr a twentieth of its RMS, times the
 * keep-mask where the form gives one, as the trainer's optimizer does. */
static void
fake_adamw (LpFormWeights *w, LpCGraph *g)
{
  for (int i = 0; i < w->n_trainable; i++)
    {
      LpCTensor *pi = w->params[i];
      gint64 n = lp_ctensor_n_elements (pi);
      g_autofree float *p = g_new (float, n), *d = g_new (float, n), *keep = NULL;
      lp_ctensor_read (pi, 0, p, pi->n_bytes);
      LpCTensor *dc = lp_cgraph_grad (g, pi);
      g_assert_nonnull (dc);
      lp_ctensor_read (dc, 0, d, dc->n_bytes);
      if (w->keep[i] != NULL)
        {
          keep = g_new (float, n);
          lp_ctensor_read (w->keep[i], 0, keep, w->keep[i]->n_bytes);
        }
      double rms = 0;
      for (gint64 e = 0; e < n; e++)
        rms += (double) p[e] * p[e];
      float lr = (float) (sqrt (rms / n) / 20);
      for (gint64 e = 0; e < n; e++)
        p[e] -= lr * (d[e] > 0 ? 1.f : d[e] < 0 ? -1.f : 0.f) * (keep ? keep[e] : 1.f);
      lp_ctensor_write (pi, 0, p, pi->n_bytes);
    }
}

/* The rebuilt tensor keeps the form, its grid and its mask. */
static void
check_same_form (const Case *c, LpTensor *u)
{
  g_autoptr (GError) error = NULL;
  g_assert_cmpstr (u->name, ==, c->t->name);
  g_assert_cmpmem (u->shape, sizeof u->shape, c->t->shape, sizeof c->t->shape);
  const LpDTypeInfo *info = lp_dtype_info (c->t->dtype);
  if (info->block_size > 1)
    {
      /* A block type comes back as f32 latent values (the trainer quantizes). */
      g_assert_cmpint (u->dtype, ==, LP_DTYPE_F32);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (u)), ==, lp_tensor_mask (c->t) ? "masked" : "dense");
    }
  else
    {
      g_assert_cmpint (u->dtype, ==, c->t->dtype);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (u)), ==, lp_form_name (lp_tensor_form (c->t)));
    }
  g_autofree float *v = lp_tensor_dup_f32 (u, &error);
  GBytes *mask = lp_tensor_mask (c->t);
  if (mask != NULL)
    {
      g_assert_true (g_bytes_equal (lp_tensor_mask (u), mask));
      for (int e = 0; e < N * K; e++)
        if (!lp_tensor_mask_keeps (u, e))
          g_assert_cmpfloat (v[e], ==, 0.0f);
    }
  const LpIntGrid *g0 = lp_tensor_int_grid (c->t), *g1 = lp_tensor_int_grid (u);
  if (g0 != NULL)
    {
      g_assert_nonnull (g1);
      g_assert_true (g1 != g0);
      g_assert_cmpint (g1->bits, ==, g0->bits);
      g_assert_cmpint (g1->group_size, ==, g0->group_size);
      g_assert_cmpint (g1->symmetric, ==, g0->symmetric);
      g_assert_cmpmem (g1->zeros, N * g0->n_groups, g0->zeros, N * g0->n_groups);
      g_assert_cmpmem (g1->g_idx, K * 4, g0->g_idx, K * 4);
      if (c->how == LP_FORM_TRAIN_SCALES)
        g_assert_cmpmem (g1->codes, N * K, g0->codes, N * K);
      else
        g_assert_cmpmem (g1->scales, N * g0->n_groups * 2, g0->scales, N * g0->n_groups * 2);
      /* Every weight (code - z) s of the grid's own scales. */
      for (int e = 0; e < N * K; e++)
        {
          int j = (e / K) * g1->n_groups + g1->g_idx[e % K];
          g_assert_cmpfloat (v[e], ==, lp_f16_to_f32 (g1->scales[j]) * ((int) g1->codes[e] - (int) g1->zeros[j]));
        }
      /* Training moved something. */
      g_assert_true (memcmp (g1->codes, g0->codes, N * K) != 0 || memcmp (g1->scales, g0->scales, N * g0->n_groups * 2) != 0);
    }
}

/* Written to GGUF in place of the tiny model's weight and read back: the
 * same values (and form, mask) as GGUF keeps them (a grid comes back as its
 * f32 values: GGUF has no such type). */
static void
check_gguf (const Case *c, LpTensor *u)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) stored = NULL;
  const LpDTypeInfo *info = lp_dtype_info (c->t->dtype);
  /* A block type's latent values quantized back to it, as the trainer does. */
  stored = info->block_size > 1 ? lp_tensor_convert (u, c->t->dtype, &error) : lp_tensor_ref (u);
  g_assert_no_error (error);
  g_autoptr (LpModel) m = lp_test_tiny_model (5);
  lp_model_set_tensor (m, stored);
  g_autofree char *file = g_strdup_printf ("trained-%s.gguf", c->what);
  g_strdelimit (file, " /:", '-');
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), file, NULL);
  g_assert_true (lp_model_save (m, path, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) back = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  LpTensor *b = lp_model_tensor (back, NAME);
  g_assert_nonnull (b);
  g_assert_cmpint (b->dtype, ==, stored->dtype);
  g_assert_true (g_bytes_equal (b->data, stored->data));
  /* The file holds the mask as zeros: every pruned weight is pruned again
   * (a kept weight that trained onto a grid's 0 reads back pruned too). */
  if (lp_tensor_mask (stored) != NULL)
    for (int e = 0; e < N * K; e++)
      g_assert_true (lp_tensor_mask_keeps (stored, e) || !lp_tensor_mask_keeps (b, e));
  if (lp_tensor_int_grid (stored) == NULL)
    g_assert_cmpstr (lp_form_name (lp_tensor_form (b)), ==, lp_form_name (lp_tensor_form (stored)));
}

static float *
product (LpTensor *t, LpBackend *be, const float *x)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpFormWeights) w = lp_form_weights_new (t, be, FALSE, &error);
  g_assert_no_error (error);
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  LpCTensor *xc = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ T, K }, "x", &error);
  lp_ctensor_write (xc, 0, x, xc->n_bytes);
  LpCTensor *y = lp_form_weights_matmul (w, g, xc, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (lp_cgraph_compute (g, &error));
  float *out = g_new (float, T * N);
  lp_ctensor_read (y, 0, out, y->n_bytes);
  return out;
}

/* Rebuilt before any step, the weight is what it was: its values bit for
 * bit (a block type's as its f32 latent values). */
static void
check_untrained (const Case *c, LpFormWeights *w)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) u = lp_form_weights_trained (w, &error);
  g_assert_no_error (error);
  g_autofree float *a = lp_tensor_dup_f32 (c->t, &error), *b = lp_tensor_dup_f32 (u, &error);
  g_assert_cmpmem (a, N * K * sizeof (float), b, N * K * sizeof (float));
  if (lp_dtype_info (c->t->dtype)->block_size == 1)
    g_assert_true (g_bytes_equal (u->data, c->t->data));
}

/* An adapter's base is frozen: the rebuilt W less s B A (its trained
 * factors) is the base's values. */
static void
check_adapter_base (const Case *c, LpFormWeights *w, LpTensor *u)
{
  g_autoptr (GError) error = NULL;
  double *p[2] = { read64 (w->params[0]), read64 (w->params[1]) };
  g_autofree double *ba = g_new (double, N * K);
  Case no_base = *c;
  g_autofree float *zeros = g_new0 (float, N * K), *v = lp_tensor_dup_f32 (u, &error);
  no_base.base = zeros;
  build_w (&no_base, p, ba);
  for (int e = 0; e < N * K; e++)
    g_assert_cmpfloat (fabs (v[e] - ba[e] - c->base[e]), <, 1e-6);
  g_free (p[0]);
  g_free (p[1]);
}

/* An adapter whose factors lie on integer grids keeps them: the rebuilt
 * parts (as the adapter writes them: its base, A, B) are grids of the same
 * bits, group, scales, zeros and g_idx, the factors' codes moved (the
 * straight-through step rounded onto the grid), the base's too when it
 * trains, else the same; the same bytes in all, and W = base + s B A of
 * those rounded parts. */
static void
check_adapter_grids (const Case *c, LpTensor *u)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) before = lp_tensor_save_tensors (c->t, &error);
  g_autoptr (GPtrArray) after = lp_tensor_save_tensors (u, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (before->len, ==, 3);
  g_assert_cmpuint (after->len, ==, 3);
  g_assert_cmpuint (lp_tensor_storage_bytes (u), ==, lp_tensor_storage_bytes (c->t));
  double *f[3];
  for (int i = 0; i < 3; i++)
    {
      /* Saved as base, A, B; build_w takes A, B, base. */
      LpTensor *t0 = before->pdata[i], *t1 = after->pdata[i];
      const LpIntGrid *g0 = lp_tensor_int_grid (t0), *g1 = lp_tensor_int_grid (t1);
      g_assert_nonnull (g0);
      g_assert_nonnull (g1);
      gint64 rows = g0->rows, cols = g0->cols, G = g0->n_groups;
      g_assert_cmpint (g1->bits, ==, g0->bits);
      g_assert_cmpint (g1->group_size, ==, g0->group_size);
      g_assert_cmpmem (g1->scales, rows * G * 2, g0->scales, rows * G * 2);
      g_assert_cmpmem (g1->zeros, rows * G, g0->zeros, rows * G);
      g_assert_cmpmem (g1->g_idx, cols * 4, g0->g_idx, cols * 4);
      gboolean moved = memcmp (g1->codes, g0->codes, rows * cols) != 0;
      g_assert_true (moved == (i > 0 || c->n_trainable == 3));
      g_autofree float *v = lp_tensor_dup_f32 (t1, &error);
      double *d = f[(i + 2) % 3] = g_new (double, rows * cols);
      for (gint64 e = 0; e < rows * cols; e++)
        d[e] = v[e];
    }
  Case trained = *c;
  trained.n_trainable = 3;
  g_autofree double *W = g_new (double, N * K);
  build_w (&trained, f, W);
  g_autofree float *v = lp_tensor_dup_f32 (u, &error);
  for (int e = 0; e < N * K; e++)
    g_assert_cmpfloat (fabs (v[e] - W[e]), <, 1e-6);
  for (int i = 0; i < 3; i++)
    g_free (f[i]);
}

/* Some latent weights (not pruned ones) moved beyond the grid's range,
 * above and below, as training may move them: their codes clamp. */
static void
latent_beyond_grid (LpFormWeights *w, const LpIntGrid *g)
{
  g_autofree float *latent = g_new (float, N * K);
  lp_ctensor_read (w->params[0], 0, latent, w->params[0]->n_bytes);
  int maxq = (1 << g->bits) - 1;
  for (int e = 1; e < N * K; e += 7)
    if (latent[e] != 0.0f)
      {
        int j = (e / K) * g->n_groups + g->g_idx[e % K];
        int c = e % 2 ? maxq + 2 + e % 3 : -2 - e % 3;
        latent[e] = lp_f16_to_f32 (g->scales[j]) * (float) (c - g->zeros[j]);
      }
  lp_ctensor_write (w->params[0], 0, latent, w->params[0]->n_bytes);
}

static void
run_case (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autofree float *before = lp_tensor_dup_f32 (c->t, &error);
  float x[T * K], target[T * N];
  lp_test_fill (x, T * K, 81, 1.0);
  lp_test_fill (target, T * N, 82, 0.3);

  g_autoptr (LpFormWeights) w = lp_form_weights_new_train (c->t, be, c->how, &error);
  g_assert_no_error (error);
  g_assert_cmpint (w->n_trainable, ==, c->n_trainable);
  for (int i = 0; i < w->n_trainable; i++)
    g_assert_cmpint (w->params[i]->dtype, ==, LP_DTYPE_F32);
  g_assert_true ((w->keep[0] != NULL) == (lp_tensor_mask (c->t) != NULL && c->kind != W_SCALES));
  /* At the start the trained graph computes the weight's own product. */
  Step s0 = record_step (w, be, x, target, FALSE);
  g_autofree float *y0 = g_new (float, T * N), *ref0 = product (c->t, be, x);
  lp_ctensor_read (s0.y, 0, y0, s0.y->n_bytes);
  lp_cgraph_free (s0.g);
  lp_test_assert_close (y0, ref0, T * N, 1e-6);
  check_untrained (c, w);
  if (c->kind == W_STE)
    latent_beyond_grid (w, lp_tensor_int_grid (c->t));
  Step s = record_step (w, be, x, target, TRUE);
  check_gradients (c, w, &s, x, target);

  fake_adamw (w, s.g);
  lp_cgraph_free (s.g);
  g_autoptr (LpTensor) u = lp_form_weights_trained (w, &error);
  g_assert_no_error (error);
  check_same_form (c, u);
  if (c->kind == W_ADAPTER && c->factor_grids)
    check_adapter_grids (c, u);
  else if (c->kind == W_ADAPTER)
    check_adapter_base (c, w, u);
  /* The model's tensor is untouched: the parameters were copies. */
  g_autofree float *after = lp_tensor_dup_f32 (c->t, &error);
  g_assert_cmpmem (before, N * K * 4, after, N * K * 4);
  /* The rebuilt weight computes what the trained graph computes now. */
  Step s2 = record_step (w, be, x, target, FALSE);
  g_autofree float *y1 = g_new (float, T * N), *ref1 = product (u, be, x);
  lp_ctensor_read (s2.y, 0, y1, s2.y->n_bytes);
  lp_cgraph_free (s2.g);
  lp_test_assert_close (y1, ref1, T * N, c->tol);
  g_assert_true (memcmp (y0, y1, sizeof y0[0] * T * N) != 0);
  check_gguf (c, u);
}

/* Every case's trainable upload on the Vulkan device (lavapipe under the
 * validation layer): the loss, the product and each parameter's gradient
 * against the CPU's (1e-5: f32 sums in another order), the keep-masks
 * the same. */
static void
test_vulkan (gconstpointer data)
{
  const GPtrArray *cases = data;
  if (!lp_test_have_vulkan ())
    return;
  g_autoptr (GError) error = NULL;
  /* Under the Khronos validation layer, its synchronization checks on. */
  g_setenv ("LLMPRESS_VULKAN_VALIDATION", "1", TRUE);
  g_setenv ("VK_LAYER_ENABLES", "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT", FALSE);
  g_autoptr (LpBackend) vk = lp_backend_new ("vulkan", &error);
  g_unsetenv ("LLMPRESS_VULKAN_VALIDATION");
  if (vk == NULL && g_error_matches (error, LP_ERROR, LP_ERROR_MISSING))
    {
      g_test_skip (error->message);
      return;
    }
  g_assert_no_error (error);
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  float x[T * K], target[T * N];
  lp_test_fill (x, T * K, 83, 1.0);
  lp_test_fill (target, T * N, 84, 0.3);
  for (guint i = 0; i < cases->len; i++)
    {
      const Case *c = cases->pdata[i];
      LpBackend *be[2] = { vk, cpu };
      LpFormWeights *w[2];
      Step s[2];
      float *y[2], *loss[2];
      for (int b = 0; b < 2; b++)
        {
          w[b] = lp_form_weights_new_train (c->t, be[b], c->how, &error);
          g_assert_no_error (error);
          if (c->kind == W_STE)
            latent_beyond_grid (w[b], lp_tensor_int_grid (c->t));
          s[b] = record_step (w[b], be[b], x, target, TRUE);
          y[b] = g_new (float, T * N);
          loss[b] = g_new (float, T);
          lp_ctensor_read (s[b].y, 0, y[b], s[b].y->n_bytes);
          lp_ctensor_read (s[b].loss, 0, loss[b], s[b].loss->n_bytes);
          /* The device ran the grid's training ops itself. */
          g_autofree char *described = lp_cgraph_describe (s[b].g);
          if (b == 0)
            g_assert_true (strstr (described, "fake_quant") == NULL && strstr (described, "dequant_grid") == NULL);
        }
      lp_test_assert_close (y[0], y[1], T * N, 1e-5);
      lp_test_assert_close (loss[0], loss[1], T, 1e-5);
      for (int p = 0; p < w[1]->n_trainable; p++)
        {
          gint64 n = lp_ctensor_n_elements (w[1]->params[p]);
          g_autofree float *gv = g_new (float, n), *gc = g_new (float, n);
          g_assert_true (lp_form_weights_grad (w[0], s[0].g, p, gv, &error));
          g_assert_true (lp_form_weights_grad (w[1], s[1].g, p, gc, &error));
          g_assert_no_error (error);
          lp_test_assert_close (gv, gc, n, 1e-5);
          g_assert_true ((w[0]->keep[p] == NULL) == (w[1]->keep[p] == NULL));
          if (w[0]->keep[p] != NULL)
            {
              lp_ctensor_read (w[0]->keep[p], 0, gv, w[0]->keep[p]->n_bytes);
              lp_ctensor_read (w[1]->keep[p], 0, gc, w[1]->keep[p]->n_bytes);
              g_assert_cmpmem (gv, n * 4, gc, n * 4);
            }
        }
      for (int b = 0; b < 2; b++)
        {
          lp_cgraph_free (s[b].g);
          lp_form_weights_free (w[b]);
          g_free (y[b]);
          g_free (loss[b]);
        }
    }
}

/* A masked weight whose pruned entry moved (an optimizer that ignored the
 * keep-mask) is refused by name; a weight not uploaded for training too. */
static void
test_refusals (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autoptr (LpTensor) d = random_f32 (NAME, N, K, 91, 0.2);
  g_autoptr (LpTensor) t = masked (d);
  g_autoptr (LpFormWeights) w = lp_form_weights_new_train (t, be, LP_FORM_TRAIN_VALUES, &error);
  g_assert_no_error (error);
  float one = 0.5f;
  lp_ctensor_write (w->params[0], 3 * sizeof (float), &one, sizeof one);
  g_assert_null (lp_form_weights_trained (w, &error));
  lp_test_assert_error_contains (error, "tensor " NAME, "pruned element 3 is 0.5, expected exactly 0", NULL);
  g_clear_error (&error);
  g_autoptr (LpFormWeights) frozen = lp_form_weights_new (t, be, FALSE, &error);
  g_assert_null (lp_form_weights_trained (frozen, &error));
  lp_test_assert_error_contains (error, "tensor " NAME, "expected weights uploaded for training", NULL);
}

static void
case_free (gpointer data)
{
  Case *c = data;
  lp_tensor_unref (c->t);
  g_free (c);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) cases = g_ptr_array_new_with_free_func (case_free);
  g_autoptr (LpTensor) f32 = random_f32 (NAME, N, K, 61, 0.2);
  g_autoptr (LpTensor) base = grid (TRUE);
  g_autoptr (LpTensor) lr_a = random_f32 ("a", N, RANK, 62, 0.5), lr_b = random_f32 ("b", RANK, K, 63, 0.5);
  g_autoptr (LpTensor) ad_a = random_f32 ("a", RANK, K, 64, 0.3), ad_b = random_f32 ("b", N, RANK, 65, 0.3);
  g_autoptr (LpIntGrid) ga_grid = lp_test_int_grid (RANK, K, 3, GROUP, 66), gb_grid = lp_test_int_grid (N, RANK, 3, RANK, 67);
  g_autoptr (LpTensor) ga = lp_tensor_new_int_grid ("a", 2, (gint64[]){ RANK, K }, ga_grid, NULL, &error);
  g_autoptr (LpTensor) gb = lp_tensor_new_int_grid ("b", 2, (gint64[]){ N, RANK }, gb_grid, NULL, &error);
  struct {
    const char *what;
    LpTensor *t;
    LpFormTrain how;
    WKind kind;
    int n_trainable;
    double tol;
    gboolean factor_grids;
  } table[] = {
    { "dense f32", lp_tensor_ref (f32), LP_FORM_TRAIN_VALUES, W_IS_P0, 1, 1e-6 },
    { "dense f16", lp_tensor_convert (f32, LP_DTYPE_F16, &error), LP_FORM_TRAIN_VALUES, W_IS_P0, 1, 2e-3 },
    { "dense bf16", lp_tensor_convert (f32, LP_DTYPE_BF16, &error), LP_FORM_TRAIN_VALUES, W_IS_P0, 1, 1e-2 },
    { "blocks q8_0", lp_tensor_convert (f32, LP_DTYPE_Q8_0, &error), LP_FORM_TRAIN_VALUES, W_IS_P0, 1, 1e-6 },
    { "grid values", grid (FALSE), LP_FORM_TRAIN_VALUES, W_STE, 1, 1e-6 },
    { "grid scales", grid (FALSE), LP_FORM_TRAIN_SCALES, W_SCALES, 1, 2e-3 },
    { "masked", masked (f32), LP_FORM_TRAIN_VALUES, W_IS_P0, 1, 1e-6 },
    { "masked q8_0", masked_blocks (f32), LP_FORM_TRAIN_VALUES, W_IS_P0, 1, 1e-6 },
    { "masked grid values", grid (TRUE), LP_FORM_TRAIN_VALUES, W_STE, 1, 1e-6 },
    { "masked grid scales", grid (TRUE), LP_FORM_TRAIN_SCALES, W_SCALES, 1, 2e-3 },
    { "low-rank", lp_tensor_new_low_rank (NAME, lr_a, lr_b, &error), LP_FORM_TRAIN_VALUES, W_LOW_RANK, 2, 1e-6 },
    { "adapter", lp_tensor_new_adapter (base, ad_a, ad_b, 0.5, &error), LP_FORM_TRAIN_VALUES, W_ADAPTER, 2, 1e-6 },
    /* CALDERA's Q + L R: the factors on 3-bit grids train through them. */
    { "adapter grid factors", lp_tensor_new_adapter (base, ga, gb, 0.5, &error), LP_FORM_TRAIN_VALUES, W_ADAPTER, 2, 1e-6,
      TRUE },
    /* ... and Q trains too, straight-through on its own grid. */
    { "adapter grid factors and base", lp_tensor_new_adapter (base, ga, gb, 0.5, &error),
      LP_FORM_TRAIN_VALUES | LP_FORM_TRAIN_BASE, W_ADAPTER, 3, 1e-6, TRUE },
  };
  g_assert_no_error (error);
  g_autofree float *base_values = lp_tensor_dup_f32 (base, &error);
  for (guint i = 0; i < G_N_ELEMENTS (table); i++)
    {
      Case *c = g_new0 (Case, 1);
      *c = (Case) { table[i].what, table[i].t, table[i].how, table[i].kind, table[i].n_trainable, table[i].tol, 0.5,
                    base_values, table[i].factor_grids };
      g_ptr_array_add (cases, c);
      g_autofree char *path = g_strconcat ("/forms-train/", c->what, NULL);
      g_strdelimit (path + 13, " ", '-');
      g_test_add_data_func (path, c, run_case);
    }
  g_test_add_func ("/forms-train/refusals", test_refusals);
  g_test_add_data_func ("/forms-train/vulkan", cases, test_vulkan);
  return g_test_run ();
}
