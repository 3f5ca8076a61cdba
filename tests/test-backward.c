/* The compute graph's backward ops (model/compute_backward.c): for every
 * op, the reference backward against central finite differences of the
 * forward computed in float64 (small double versions of each forward's
 * definition below), and the CPU kernel against the reference; then two
 * graphs differentiated by lp_cgraph_backward (a transformer block with a
 * KV cache and a cross-entropy head; the distillation losses) against
 * finite differences of the whole graph's loss (GRAPH_TOL, below).
 *
 * Tolerances (each check says which it uses):
 * - FD_TOL, reference backward vs float64 finite differences: the
 *   reference sums in double and rounds once to f32 (relative 6e-8 of the
 *   largest term), and central differences with h = 1e-4 err by h^2 f'''
 *   ~ 1e-8 (h fixed, not scaled with |x|: a softmax is shift-invariant, so
 *   logits near 300 curve no less than logits near 0), their rounding by
 *   1e-16 |loss| / h ~ 1e-12; 1e-5 relative to the largest gradient leaves
 *   a factor of 100.
 * - CPU_TOL, CPU kernel vs reference: the CPU sums in f32 (sgemm, float
 *   loops): about sqrt (n) 6e-8 relative for n terms, 2e-6 for the 1200
 *   terms of the largest case (5e-7 seen); 1e-5 leaves room for
 *   cancellation, and a wrong term shows far above it. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "testutil.h"
#include <llmpress/compute.h>

#define FD_TOL 1e-5
#define CPU_TOL 1e-5

/* ---- tensors ---- */

static LpBackend *cpu;

static LpCTensor *
tensor (LpDType dtype, int n_dims, const gint64 *shape)
{
  g_autoptr (GError) error = NULL;
  LpCTensor *t = lp_ctensor_new (cpu, dtype, n_dims, shape, NULL, &error);
  g_assert_no_error (error);
  return t;
}

static LpCTensor *
tensor2 (LpDType dtype, gint64 rows, gint64 cols)
{
  gint64 shape[2] = { rows, cols };
  return tensor (dtype, 2, shape);
}

/* A tensor holding a copy of data (n_bytes: the whole tensor). */
static LpCTensor *
tensor2_from (LpDType dtype, gint64 rows, gint64 cols, const void *data)
{
  LpCTensor *t = tensor2 (dtype, rows, cols);
  lp_ctensor_write (t, 0, data, t->n_bytes);
  return t;
}

static float *
fdata (const LpCTensor *t)
{
  return lp_ctensor_host (t);
}

static void
fill_nan (LpCTensor *t)
{
  for (gint64 e = 0; e < lp_ctensor_n_elements (t); e++)
    fdata (t)[e] = NAN;
}

/* ---- comparisons ---- */

/* max |a - b| <= tol max |b|, and b not all zero (so the check can fail). */
static void
assert_close (const char *what, const float *a, const double *b, gsize n, double tol)
{
  double err = 0.0, scale = 0.0;
  gsize worst = 0;
  for (gsize i = 0; i < n; i++)
    {
      double e = fabs (a[i] - b[i]);
      if (!(e <= err)) /* NaN counts as the worst */
        err = e, worst = i;
      scale = MAX (scale, fabs (b[i]));
    }
  if (!(scale > 0.0) || !(err <= tol * scale))
    g_error ("%s: element %zu: %.9g against %.9g (largest %.3g; error %.3g > %.1g of it)", what, worst, a[worst],
             b[worst], scale, err, tol);
}

static void
assert_close_f (const char *what, const float *a, const float *b, gsize n, double tol)
{
  g_autofree double *bd = g_new (double, n);
  for (gsize i = 0; i < n; i++)
    bd[i] = b[i];
  assert_close (what, a, bd, n, tol);
}

/* Run a backward node's reference (into node->dst, first filled with NaN so
 * an element left unwritten shows) and its CPU kernel (into fresh tensors
 * of the same shapes), and check they agree within CPU_TOL. */
static void
run_ref_and_cpu (LpCNode *node)
{
  const LpCOpInfo *info = lp_cop_info (node->op);
  node->n_dst = info->n_dst;
  node->n_src = info->n_src;
  LpCNode c = *node;
  for (int j = 0; j < info->n_dst; j++)
    {
      fill_nan (node->dst[j]);
      c.dst[j] = tensor (LP_DTYPE_F32, node->dst[j]->n_dims, node->dst[j]->shape);
      fill_nan (c.dst[j]);
    }
  info->ref (node);
  info->cpu (&c);
  for (int j = 0; j < info->n_dst; j++)
    {
      g_autofree char *what = g_strdup_printf ("%s cpu vs ref, result %d", info->name, j);
      assert_close_f (what, fdata (c.dst[j]), fdata (node->dst[j]), lp_ctensor_n_elements (node->dst[j]), CPU_TOL);
      lp_ctensor_free (c.dst[j]);
    }
}

static LpCNode
node_new (LpCOp op)
{
  LpCNode n = { .op = op };
  return n;
}

/* ---- central differences in float64 ---- */

typedef double (*LossFn) (gconstpointer ctx);

/* d loss / d x[i] for every i (x perturbed in place and restored) against
 * grad[n] within tol of the largest difference quotient. */
static void
assert_fd_tol (const char *what, LossFn loss, gconstpointer ctx, double *x, gsize n, const float *grad, double tol)
{
  g_autofree double *fd = g_new (double, n);
  for (gsize i = 0; i < n; i++)
    {
      double x0 = x[i], h = 1e-4;
      x[i] = x0 + h;
      double up = loss (ctx);
      x[i] = x0 - h;
      double down = loss (ctx);
      x[i] = x0;
      fd[i] = (up - down) / (2 * h);
    }
  g_autofree char *msg = g_strdup_printf ("%s vs finite differences", what);
  assert_close (msg, grad, fd, n, tol);
}

static void
assert_fd (const char *what, LossFn loss, gconstpointer ctx, double *x, gsize n, const float *grad)
{
  assert_fd_tol (what, loss, ctx, x, n, grad, FD_TOL);
}

static double *
to_double (const float *x, gsize n)
{
  double *d = g_new (double, n);
  for (gsize i = 0; i < n; i++)
    d[i] = x[i];
  return d;
}

/* sum r y: the scalar whose gradient with respect to y is r. */
static double
dot (const double *r, const double *y, gsize n)
{
  double s = 0.0;
  for (gsize i = 0; i < n; i++)
    s += r[i] * y[i];
  return s;
}

/* Random values in [-scale, scale) as f32, in a tensor and as doubles. */
static LpCTensor *
random_tensor2 (gint64 rows, gint64 cols, guint32 seed, double scale, double **as_double)
{
  LpCTensor *t = tensor2 (LP_DTYPE_F32, rows, cols);
  lp_test_fill (fdata (t), (gsize) (rows * cols), seed, scale);
  if (as_double)
    *as_double = to_double (fdata (t), (gsize) (rows * cols));
  return t;
}

static LpCTensor *
ids_tensor (const gint32 *ids, gint64 n)
{
  LpCTensor *t = tensor (LP_DTYPE_I32, 1, &n);
  lp_ctensor_write (t, 0, ids, (gsize) n * sizeof (gint32));
  return t;
}

/* ---- the forwards, in double: each op's definition (compute.h) ---- */

/* y[T,N] = x[T,K] w[N,K]^T */
static void
d_matmul (int T, int N, int K, const double *x, const double *w, double *y)
{
  for (int t = 0; t < T; t++)
    for (int j = 0; j < N; j++)
      {
        double acc = 0.0;
        for (int k = 0; k < K; k++)
          acc += x[t * K + k] * w[j * K + k];
        y[t * N + j] = acc;
      }
}

static void
d_rmsnorm (int T, int D, const double *x, const double *w, double eps, double *y)
{
  for (int t = 0; t < T; t++)
    {
      double ss = 0.0;
      for (int d = 0; d < D; d++)
        ss += x[t * D + d] * x[t * D + d];
      double r = 1.0 / sqrt (ss / D + eps);
      for (int d = 0; d < D; d++)
        y[t * D + d] = x[t * D + d] * r * w[d];
    }
}

static void
d_rope (LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, const double *x, double *y)
{
  int half = hd / 2;
  memcpy (y, x, sizeof (double) * T * n_heads * hd);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < n_heads; h++)
      for (int i = 0; i < half; i++)
        {
          double a = (double) (pos0 + t) * inv_freq[i], c = cos (a), s = sin (a);
          int p = style == LP_ROPE_NORMAL ? 2 * i : i, q = style == LP_ROPE_NORMAL ? 2 * i + 1 : i + half;
          double *v = y + ((gsize) t * n_heads + h) * hd;
          double x0 = v[p], x1 = v[q];
          v[p] = x0 * c - x1 * s;
          v[q] = x0 * s + x1 * c;
        }
}

static void
d_attention (int T, int T_kv, int H, int Hkv, int hd, const double *q, const double *k, const double *v, double *out)
{
  int group = H / Hkv, past = T_kv - T;
  g_autofree double *p = g_new (double, T_kv);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      {
        int kh = h / group, last = past + t;
        double mx = -INFINITY, sum = 0.0;
        for (int s = 0; s <= last; s++)
          {
            double acc = 0.0;
            for (int d = 0; d < hd; d++)
              acc += q[(t * H + h) * hd + d] * k[(s * Hkv + kh) * hd + d];
            p[s] = acc / sqrt ((double) hd);
            mx = MAX (mx, p[s]);
          }
        for (int s = 0; s <= last; s++)
          sum += (p[s] = exp (p[s] - mx));
        for (int d = 0; d < hd; d++)
          {
            double acc = 0.0;
            for (int s = 0; s <= last; s++)
              acc += p[s] / sum * v[(s * Hkv + kh) * hd + d];
            out[(t * H + h) * hd + d] = acc;
          }
      }
}

/* log softmax (z[n] / tau) */
static void
d_log_softmax (const double *z, int n, double tau, double *out)
{
  double mx = -INFINITY, sum = 0.0;
  for (int j = 0; j < n; j++)
    mx = MAX (mx, z[j] / tau);
  for (int j = 0; j < n; j++)
    sum += exp (z[j] / tau - mx);
  for (int j = 0; j < n; j++)
    out[j] = z[j] / tau - mx - log (sum);
}

static void
d_cross_entropy (int T, int V, const double *logits, const gint32 *target, double *loss)
{
  g_autofree double *ls = g_new (double, V);
  for (int t = 0; t < T; t++)
    {
      d_log_softmax (logits + (gsize) t * V, V, 1.0, ls);
      loss[t] = target[t] < 0 ? 0.0 : -ls[target[t]];
    }
}

static void
d_kl (int T, int V, const double *student, const double *teacher, double tau, double *loss)
{
  g_autofree double *ls = g_new (double, V), *lt = g_new (double, V);
  for (int t = 0; t < T; t++)
    {
      d_log_softmax (student + (gsize) t * V, V, tau, ls);
      d_log_softmax (teacher + (gsize) t * V, V, tau, lt);
      double kl = 0.0;
      for (int j = 0; j < V; j++)
        kl += exp (lt[j]) * (lt[j] - ls[j]);
      loss[t] = tau * tau * kl;
    }
}

/* ---- embed: repeated ids sum their rows' gradients ---- */

typedef struct {
  int T, V, D;
  const gint32 *ids;
  double *table, *r;
} EmbedCase;

static double
embed_loss (gconstpointer p)
{
  const EmbedCase *c = p;
  double s = 0.0;
  for (int t = 0; t < c->T; t++)
    for (int d = 0; d < c->D; d++)
      s += c->r[t * c->D + d] * c->table[c->ids[t] * c->D + d];
  return s;
}

static void
test_embed_back (void)
{
  static const gint32 ids[] = { 3, 1, 3, 0, 6, 3 };
  EmbedCase c = { .T = 6, .V = 7, .D = 5, .ids = ids };
  g_autofree double *table = g_new0 (double, c.V * c.D);
  c.table = table;
  LpCTensor *dy = random_tensor2 (c.T, c.D, 1, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_EMBED_BACK);
  n.src[0] = dy;
  n.src[1] = ids_tensor (ids, c.T);
  n.dst[0] = tensor2 (LP_DTYPE_F32, c.V, c.D);
  n.i[0] = c.V;
  run_ref_and_cpu (&n);
  assert_fd ("embed_back", embed_loss, &c, table, (gsize) c.V * c.D, fdata (n.dst[0]));
  /* Row 2 and 5 of the table are used by no token: zero, not garbage. */
  for (int d = 0; d < c.D; d++)
    g_assert_cmpfloat (fdata (n.dst[0])[2 * c.D + d], ==, 0.0f);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.src[1]);
  lp_ctensor_free (n.dst[0]);
  g_free (c.r);
}

/* ---- matmul: dx through every weight form a matmul reads, dW dense ---- */

typedef struct {
  int T, N, K;
  double *x, *w, *r;
} MatmulCase;

static double
matmul_loss (gconstpointer p)
{
  const MatmulCase *c = p;
  g_autofree double *y = g_new (double, c->T * c->N);
  d_matmul (c->T, c->N, c->K, c->x, c->w, y);
  return dot (c->r, y, (gsize) c->T * c->N);
}

/* dx for W[N,K] stored as `w` (its operands of matmul_back_x: src1 .. src4,
 * params i[0], i[1]) whose effective weights are wf[N,K]. */
static void
check_matmul_back_x (const char *what, int T, int N, int K, LpCTensor *const *w, int n_w, const gint64 *params,
                     const float *wf, gboolean with_fd)
{
  MatmulCase c = { .T = T, .N = N, .K = K };
  LpCTensor *x = random_tensor2 (T, K, 10, 1.0, &c.x);
  LpCTensor *dy = random_tensor2 (T, N, 11, 1.0, &c.r);
  c.w = to_double (wf, (gsize) N * K);
  LpCNode n = node_new (LP_COP_MATMUL_BACK_X);
  n.src[0] = dy;
  for (int s = 0; s < n_w; s++)
    n.src[1 + s] = w[s];
  n.i[0] = params[0];
  n.i[1] = params[1];
  n.dst[0] = tensor2 (LP_DTYPE_F32, T, K);
  run_ref_and_cpu (&n);
  if (with_fd)
    assert_fd (what, matmul_loss, &c, c.x, (gsize) T * K, fdata (n.dst[0]));
  lp_ctensor_free (x);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.dst[0]);
  g_free (c.x);
  g_free (c.w);
  g_free (c.r);
}

/* Dense weights in each type matmul reads: f32, f16, bf16 and block types
 * (K a multiple of their block); one large enough (N K f32 > 4 MiB) that
 * the CPU decodes it in several blocks of rows. */
static void
test_matmul_back_x_dense (void)
{
  static const struct {
    LpDType type;
    int T, N, K;
    gboolean fd;
  } cases[] = {
    { LP_DTYPE_F32, 5, 6, 7, TRUE },     { LP_DTYPE_F16, 5, 6, 9, TRUE },   { LP_DTYPE_BF16, 4, 3, 8, TRUE },
    { LP_DTYPE_Q8_0, 3, 5, 64, TRUE },   { LP_DTYPE_Q4_0, 3, 4, 32, TRUE }, { LP_DTYPE_Q4_K, 2, 3, 256, TRUE },
    { LP_DTYPE_Q6_K, 2, 3, 256, TRUE },  { LP_DTYPE_F16, 3, 1100, 1024, FALSE },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      int N = cases[i].N, K = cases[i].K;
      g_autoptr (GError) error = NULL;
      g_autofree float *w = g_new (float, (gsize) N * K), *wf = g_new (float, (gsize) N * K);
      lp_test_fill (w, (gsize) N * K, 20 + i, 1.0);
      guint64 row_bytes = 0;
      g_assert_true (lp_dtype_row_bytes (cases[i].type, K, &row_bytes, &error));
      g_autofree guint8 *stored = g_malloc (row_bytes * N);
      g_assert_true (lp_dtype_from_f32 (cases[i].type, w, stored, (gsize) N * K, &error));
      g_assert_true (lp_dtype_to_f32 (cases[i].type, stored, wf, (gsize) N * K, &error));
      g_assert_no_error (error);
      gint64 shape[2] = { N, K }, params[2] = { 0, 0 };
      LpCTensor *W = tensor (cases[i].type, 2, shape);
      lp_ctensor_write (W, 0, stored, W->n_bytes);
      g_autofree char *what = g_strdup_printf ("matmul_back_x %s", lp_dtype_name (cases[i].type));
      check_matmul_back_x (what, cases[i].T, N, K, &W, 1, params, wf, cases[i].fd);
      lp_ctensor_free (W);
    }
}

/* The integer grid's operands (codes, scales, zeros, act-order g_idx; a
 * short last group), its weights as lp_int_grid_dequantize defines them. */
static void
test_matmul_back_x_grid (void)
{
  static const int shapes[][5] = { /* T, N, K, bits, group */ { 4, 6, 40, 4, 16 }, { 3, 9, 64, 8, 32 },
                                   { 2, 1200, 1000, 3, 128 } };
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
      g_autoptr (LpIntGrid) grid = lp_test_int_grid (N, K, shapes[s][3], shapes[s][4], 30 + s);
      g_autofree float *wf = g_new (float, (gsize) N * K);
      lp_int_grid_dequantize (grid, wf);
      LpCTensor *w[4] = {
        tensor2_from (LP_DTYPE_I8, N, K, grid->codes),
        tensor2_from (LP_DTYPE_I16, N, grid->n_groups, grid->scales),
        tensor2_from (LP_DTYPE_I8, N, grid->n_groups, grid->zeros),
        ids_tensor (grid->g_idx, K),
      };
      gint64 params[2] = { grid->bits, grid->group_size };
      g_autofree char *what = g_strdup_printf ("matmul_back_x grid %d bits, groups of %d", grid->bits, grid->group_size);
      check_matmul_back_x (what, T, N, K, w, 4, params, wf, N * K < 10000);
      for (int j = 0; j < 4; j++)
        lp_ctensor_free (w[j]);
    }
}

static void
test_matmul_back_w (void)
{
  MatmulCase c = { .T = 7, .N = 5, .K = 6 };
  LpCTensor *x = random_tensor2 (c.T, c.K, 40, 1.0, &c.x);
  LpCTensor *dy = random_tensor2 (c.T, c.N, 41, 1.0, &c.r);
  g_autofree double *w = g_new0 (double, c.N * c.K);
  c.w = w;
  LpCNode n = node_new (LP_COP_MATMUL_BACK_W);
  n.src[0] = dy;
  n.src[1] = x;
  n.dst[0] = tensor2 (LP_DTYPE_F32, c.N, c.K);
  run_ref_and_cpu (&n);
  assert_fd ("matmul_back_w", matmul_loss, &c, w, (gsize) c.N * c.K, fdata (n.dst[0]));
  lp_ctensor_free (x);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.dst[0]);
  g_free (c.x);
  g_free (c.r);
}

/* ---- rmsnorm: dx and dw ---- */

typedef struct {
  int T, D;
  double eps;
  double *x, *w, *r;
} RmsCase;

static double
rmsnorm_loss (gconstpointer p)
{
  const RmsCase *c = p;
  g_autofree double *y = g_new (double, c->T * c->D);
  d_rmsnorm (c->T, c->D, c->x, c->w, c->eps, y);
  return dot (c->r, y, (gsize) c->T * c->D);
}

static void
test_rmsnorm_back (void)
{
  RmsCase c = { .T = 4, .D = 9, .eps = 1e-5 };
  LpCTensor *x = random_tensor2 (c.T, c.D, 50, 2.0, &c.x);
  LpCTensor *w = random_tensor2 (1, c.D, 51, 1.5, &c.w);
  LpCTensor *dy = random_tensor2 (c.T, c.D, 52, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_RMSNORM_BACK);
  n.src[0] = dy;
  n.src[1] = x;
  n.src[2] = w;
  n.f[0] = (float) c.eps;
  n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, c.D);
  run_ref_and_cpu (&n);
  assert_fd ("rmsnorm_back", rmsnorm_loss, &c, c.x, (gsize) c.T * c.D, fdata (n.dst[0]));
  LpCNode nw = node_new (LP_COP_RMSNORM_BACK_W);
  nw.src[0] = dy;
  nw.src[1] = x;
  nw.f[0] = (float) c.eps;
  nw.dst[0] = tensor2 (LP_DTYPE_F32, 1, c.D);
  run_ref_and_cpu (&nw);
  assert_fd ("rmsnorm_back_w", rmsnorm_loss, &c, c.w, c.D, fdata (nw.dst[0]));
  lp_ctensor_free (x);
  lp_ctensor_free (w);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.dst[0]);
  lp_ctensor_free (nw.dst[0]);
  g_free (c.x);
  g_free (c.w);
  g_free (c.r);
}

/* ---- rope: both styles, a position offset ---- */

typedef struct {
  LpRopeStyle style;
  int T, n_heads, hd, pos0;
  const float *inv_freq;
  double *x, *r;
} RopeCase;

static double
rope_loss (gconstpointer p)
{
  const RopeCase *c = p;
  gsize n = (gsize) c->T * c->n_heads * c->hd;
  g_autofree double *y = g_new (double, n);
  d_rope (c->style, c->T, c->n_heads, c->hd, c->pos0, c->inv_freq, c->x, y);
  return dot (c->r, y, n);
}

static void
test_rope_back (void)
{
  for (int style = 0; style < 2; style++)
    {
      RopeCase c = { .style = style == 0 ? LP_ROPE_NORMAL : LP_ROPE_NEOX, .T = 5, .n_heads = 3, .hd = 8, .pos0 = 7 };
      float inv_freq[4];
      for (int i = 0; i < c.hd / 2; i++)
        inv_freq[i] = (float) pow (10000.0, -2.0 * i / c.hd);
      c.inv_freq = inv_freq;
      int n_cols = c.n_heads * c.hd;
      LpCTensor *x = random_tensor2 (c.T, n_cols, 60, 1.0, &c.x);
      LpCTensor *dy = random_tensor2 (c.T, n_cols, 61, 1.0, &c.r);
      LpCNode n = node_new (LP_COP_ROPE_BACK);
      n.src[0] = dy;
      n.src[1] = tensor2_from (LP_DTYPE_F32, 1, c.hd / 2, inv_freq);
      n.i[0] = c.style;
      n.i[1] = c.n_heads;
      n.i[2] = c.hd;
      n.i[3] = c.pos0;
      n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, n_cols);
      run_ref_and_cpu (&n);
      assert_fd (style == 0 ? "rope_back normal" : "rope_back neox", rope_loss, &c, c.x, (gsize) c.T * n_cols,
                 fdata (n.dst[0]));
      lp_ctensor_free (x);
      lp_ctensor_free (dy);
      lp_ctensor_free (n.src[1]);
      lp_ctensor_free (n.dst[0]);
      g_free (c.x);
      g_free (c.r);
    }
}

/* ---- attention: GQA (2 query heads a key/value head) after a KV cache ---- */

typedef struct {
  int T, T_kv, H, Hkv, hd;
  double *q, *k, *v, *r;
} AttnCase;

static double
attention_loss (gconstpointer p)
{
  const AttnCase *c = p;
  gsize n = (gsize) c->T * c->H * c->hd;
  g_autofree double *y = g_new (double, n);
  d_attention (c->T, c->T_kv, c->H, c->Hkv, c->hd, c->q, c->k, c->v, y);
  return dot (c->r, y, n);
}

/* Shapes {T, T_kv, H, Hkv, hd, fd}: the small one against finite
 * differences too; a larger one (T_kv - T = 13 cached positions, 3 query
 * heads a key/value head) only CPU vs reference. */
static void
test_attention_back (void)
{
  static const int shapes[][6] = { { 4, 7, 4, 2, 8, TRUE }, { 37, 50, 6, 2, 16, FALSE } };
  for (gsize i = 0; i < G_N_ELEMENTS (shapes); i++)
    {
      AttnCase c = { .T = shapes[i][0], .T_kv = shapes[i][1], .H = shapes[i][2], .Hkv = shapes[i][3], .hd = shapes[i][4] };
      gsize nq = (gsize) c.T * c.H * c.hd, nkv = (gsize) c.T_kv * c.Hkv * c.hd;
      LpCNode n = node_new (LP_COP_ATTENTION_BACK);
      n.src[0] = random_tensor2 (c.T, c.H * c.hd, 73, 1.0, &c.r);
      n.src[1] = random_tensor2 (c.T, c.H * c.hd, 70, 1.0, &c.q);
      n.src[2] = random_tensor2 (c.T_kv, c.Hkv * c.hd, 71, 1.0, &c.k);
      n.src[3] = random_tensor2 (c.T_kv, c.Hkv * c.hd, 72, 1.0, &c.v);
      n.i[0] = c.H;
      n.i[1] = c.Hkv;
      n.i[2] = c.hd;
      n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, c.H * c.hd);
      n.dst[1] = tensor2 (LP_DTYPE_F32, c.T_kv, c.Hkv * c.hd);
      n.dst[2] = tensor2 (LP_DTYPE_F32, c.T_kv, c.Hkv * c.hd);
      run_ref_and_cpu (&n);
      if (shapes[i][5])
        {
          assert_fd ("attention_back dq", attention_loss, &c, c.q, nq, fdata (n.dst[0]));
          assert_fd ("attention_back dk", attention_loss, &c, c.k, nkv, fdata (n.dst[1]));
          assert_fd ("attention_back dv", attention_loss, &c, c.v, nkv, fdata (n.dst[2]));
        }
      for (int j = 0; j < 4; j++)
        lp_ctensor_free (n.src[j]);
      for (int j = 0; j < 3; j++)
        lp_ctensor_free (n.dst[j]);
      g_free (c.q);
      g_free (c.k);
      g_free (c.v);
      g_free (c.r);
    }
}

/* ---- swiglu ---- */

typedef struct {
  int n;
  double *gate, *up, *r;
} SwigluCase;

static double
swiglu_loss (gconstpointer p)
{
  const SwigluCase *c = p;
  double s = 0.0;
  for (int e = 0; e < c->n; e++)
    s += c->r[e] * c->gate[e] / (1.0 + exp (-c->gate[e])) * c->up[e];
  return s;
}

static void
test_swiglu_back (void)
{
  SwigluCase c = { .n = 24 };
  LpCTensor *gate = random_tensor2 (4, 6, 80, 4.0, &c.gate);
  LpCTensor *up = random_tensor2 (4, 6, 81, 1.0, &c.up);
  LpCTensor *dy = random_tensor2 (4, 6, 82, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_SWIGLU_BACK);
  n.src[0] = dy;
  n.src[1] = gate;
  n.src[2] = up;
  n.dst[0] = tensor2 (LP_DTYPE_F32, 4, 6);
  n.dst[1] = tensor2 (LP_DTYPE_F32, 4, 6);
  run_ref_and_cpu (&n);
  assert_fd ("swiglu_back d(gate)", swiglu_loss, &c, c.gate, c.n, fdata (n.dst[0]));
  assert_fd ("swiglu_back d(up)", swiglu_loss, &c, c.up, c.n, fdata (n.dst[1]));
  lp_ctensor_free (gate);
  lp_ctensor_free (up);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.dst[0]);
  lp_ctensor_free (n.dst[1]);
  g_free (c.gate);
  g_free (c.up);
  g_free (c.r);
}

/* ---- row_sum: a bias added to every row (add's broadcast) ---- */

typedef struct {
  int T, n;
  double *x, *b, *r;
} BiasCase;

static double
bias_loss (gconstpointer p)
{
  const BiasCase *c = p;
  double s = 0.0;
  for (int t = 0; t < c->T; t++)
    for (int j = 0; j < c->n; j++)
      s += c->r[t * c->n + j] * (c->x[t * c->n + j] + c->b[j]);
  return s;
}

static void
test_row_sum (void)
{
  BiasCase c = { .T = 9, .n = 5 };
  LpCTensor *x = random_tensor2 (c.T, c.n, 90, 1.0, &c.x);
  LpCTensor *b = random_tensor2 (1, c.n, 91, 1.0, &c.b);
  LpCTensor *dy = random_tensor2 (c.T, c.n, 92, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_ROW_SUM);
  n.src[0] = dy;
  n.dst[0] = tensor2 (LP_DTYPE_F32, 1, c.n);
  run_ref_and_cpu (&n);
  assert_fd ("row_sum (bias gradient)", bias_loss, &c, c.b, c.n, fdata (n.dst[0]));
  lp_ctensor_free (x);
  lp_ctensor_free (b);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.dst[0]);
  g_free (c.x);
  g_free (c.b);
  g_free (c.r);
}

/* ---- training an integer grid: dequant_grid (the scales' gradient) and
 * fake_quant (the latent weights' straight-through gradient) ---- */

/* Act-order g_idx with a short last group; 3 and 4 bits. */
static const int grid_train_shapes[][4] = { /* N, K, bits, group */ { 6, 40, 4, 16 }, { 9, 64, 3, 32 } };

typedef struct {
  const LpIntGrid *grid;
  double *s; /* scales [N,G] */
  double *r; /* dy [N,K] */
} GridCase;

/* sum r W with W = (code - z) s: linear in the scales. */
static double
dequant_grid_loss (gconstpointer p)
{
  const GridCase *c = p;
  const LpIntGrid *g = c->grid;
  double L = 0.0;
  for (gint64 n = 0; n < g->rows; n++)
    for (gint64 k = 0; k < g->cols; k++)
      {
        gint64 j = n * g->n_groups + g->g_idx[k];
        L += c->r[n * g->cols + k] * ((int) g->codes[n * g->cols + k] - (int) g->zeros[j]) * c->s[j];
      }
  return L;
}

/* The training ops' operands: src[0] the latent weights or codes (left to
 * the caller), src[1] the scales as f32, src[2] the zeros, src[3] g_idx. */
static void
grid_train_node (LpCNode *n, const LpIntGrid *g, int first)
{
  gint64 N = g->rows, G = g->n_groups;
  LpCTensor *scales = tensor2 (LP_DTYPE_F32, N, G);
  for (gint64 j = 0; j < N * G; j++)
    fdata (scales)[j] = lp_f16_to_f32 (g->scales[j]);
  n->src[first + 1] = scales;
  n->src[first + 2] = tensor2_from (LP_DTYPE_I8, N, G, g->zeros);
  n->src[first + 3] = ids_tensor (g->g_idx, g->cols);
  n->i[0] = g->bits;
}

static void
grid_train_node_free (LpCNode *n)
{
  for (int i = 0; i < n->n_src; i++)
    lp_ctensor_free (n->src[i]);
  lp_ctensor_free (n->dst[0]);
}

/* dequant_grid is lp_int_grid_dequantize bit for bit; dequant_grid_back
 * (the scales' gradient) against finite differences. */
static void
test_dequant_grid (void)
{
  for (gsize s = 0; s < G_N_ELEMENTS (grid_train_shapes); s++)
    {
      const int N = grid_train_shapes[s][0], K = grid_train_shapes[s][1];
      g_autoptr (LpIntGrid) g = lp_test_int_grid (N, K, grid_train_shapes[s][2], grid_train_shapes[s][3], 130 + s);
      LpCNode fwd = node_new (LP_COP_DEQUANT_GRID);
      grid_train_node (&fwd, g, 0);
      fwd.src[0] = tensor2_from (LP_DTYPE_I8, N, K, g->codes);
      fwd.dst[0] = tensor2 (LP_DTYPE_F32, N, K);
      run_ref_and_cpu (&fwd);
      g_autofree float *w = g_new (float, N * K);
      lp_int_grid_dequantize (g, w);
      g_assert_cmpmem (fdata (fwd.dst[0]), N * K * sizeof (float), w, N * K * sizeof (float));

      LpCNode back = node_new (LP_COP_DEQUANT_GRID_BACK);
      GridCase c = { g };
      back.src[0] = random_tensor2 (N, K, 131 + s, 1.0, &c.r);
      grid_train_node (&back, g, 1);
      back.src[1] = tensor2_from (LP_DTYPE_I8, N, K, g->codes);
      back.dst[0] = tensor2 (LP_DTYPE_F32, N, g->n_groups);
      run_ref_and_cpu (&back);
      c.s = to_double (fdata (back.src[2]), (gsize) N * g->n_groups);
      assert_fd ("dequant_grid_back", dequant_grid_loss, &c, c.s, (gsize) N * g->n_groups, fdata (back.dst[0]));
      grid_train_node_free (&fwd);
      grid_train_node_free (&back);
      g_free (c.s);
      g_free (c.r);
    }
}

/* fake_quant: the latent weights rounded onto the grid as written out here
 * (x / s rounded half to even, plus z, clamped to [0, 2^bits - 1], times
 * s after subtracting z), which gives the grid's own weights back from
 * them; fake_quant_back: the clipped straight-through estimator, dy where
 * the code was not clamped and 0 where it was.  The forward is flat
 * between rounding steps, so finite differences would give 0: the
 * estimator is a definition (Bengio et al. 2013), checked as one; the
 * forms' tests check it against finite differences of the loss in W. */
static void
test_fake_quant (void)
{
  for (gsize s = 0; s < G_N_ELEMENTS (grid_train_shapes); s++)
    {
      const int N = grid_train_shapes[s][0], K = grid_train_shapes[s][1], maxq = (1 << grid_train_shapes[s][2]) - 1;
      g_autoptr (LpIntGrid) g = lp_test_int_grid (N, K, grid_train_shapes[s][2], grid_train_shapes[s][3], 140 + s);
      /* The grid's weights moved by up to 3 steps: some codes clamp. */
      g_autofree float *x = g_new (float, N * K), *u = g_new (float, N * K);
      lp_int_grid_dequantize (g, x);
      lp_test_fill (u, N * K, 141 + s, 3.0);
      LpCNode fwd = node_new (LP_COP_FAKE_QUANT);
      grid_train_node (&fwd, g, 0);
      fwd.src[0] = tensor2_from (LP_DTYPE_F32, N, K, x);
      fwd.dst[0] = tensor2 (LP_DTYPE_F32, N, K);
      run_ref_and_cpu (&fwd);
      g_assert_cmpmem (fdata (fwd.dst[0]), N * K * sizeof (float), x, N * K * sizeof (float));
      const float *sc = fdata (fwd.src[1]);
      for (int e = 0; e < N * K; e++)
        x[e] += u[e] * sc[(e / K) * g->n_groups + g->g_idx[e % K]];
      lp_ctensor_write (fwd.src[0], 0, x, sizeof (float) * N * K);
      run_ref_and_cpu (&fwd);

      LpCNode back = node_new (LP_COP_FAKE_QUANT_BACK);
      grid_train_node (&back, g, 1);
      back.src[0] = random_tensor2 (N, K, 142 + s, 1.0, NULL);
      back.src[1] = tensor2_from (LP_DTYPE_F32, N, K, x);
      back.dst[0] = tensor2 (LP_DTYPE_F32, N, K);
      run_ref_and_cpu (&back);
      int inside = 0, clamped = 0;
      for (int e = 0; e < N * K; e++)
        {
          int j = (e / K) * g->n_groups + g->g_idx[e % K], z = g->zeros[j];
          float v = sc[j] > 0 ? x[e] / sc[j] : 0.0f;
          int c = (int) nearbyintf (v) + z, cc = CLAMP (c, 0, maxq);
          g_assert_cmpfloat (fdata (fwd.dst[0])[e], ==, sc[j] * (float) (cc - z));
          g_assert_cmpfloat (fdata (back.dst[0])[e], ==, c == cc ? fdata (back.src[0])[e] : 0.0f);
          inside += c == cc;
          clamped += c != cc;
        }
      g_assert_cmpint (inside, >, 0);
      g_assert_cmpint (clamped, >, 0);
      grid_train_node_free (&fwd);
      grid_train_node_free (&back);
    }
}

/* A grid trains its latent values or its scales, not both: asking
 * fake_quant for the scales' gradient is refused by name. */
static void
test_fake_quant_scales_refused (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpIntGrid) g = lp_test_int_grid (4, 16, 4, 8, 150);
  g_autoptr (LpCGraph) graph = lp_cgraph_new (cpu);
  LpCNode n = node_new (LP_COP_FAKE_QUANT);
  grid_train_node (&n, g, 0);
  n.src[0] = random_tensor2 (4, 16, 151, 0.1, NULL);
  lp_ctensor_set_trainable (n.src[0], TRUE);
  lp_ctensor_set_trainable (n.src[1], TRUE);
  LpCNode *f = lp_cgraph_add (graph, LP_COP_FAKE_QUANT, n.src, 4, NULL, 0, &error);
  g_assert_no_error (error);
  f->i[0] = 4;
  LpCTensor *dy = lp_cgraph_tensor (graph, LP_DTYPE_F32, 2, f->dst[0]->shape, "dy", &error);
  g_assert_false (lp_cgraph_backward (graph, f->dst[0], dy, &error));
  lp_test_assert_error_contains (error, "op fake_quant: no gradient for the scales", NULL);
  n.n_src = 4;
  grid_train_node_free (&n);
}

/* ---- losses: per-row values [T], their upstream gradient dy [T] ---- */

typedef struct {
  int T, V;
  double tau;
  const gint32 *target;
  double *a, *b, *r; /* logits / student / a, teacher / b, dy */
} LossCase;

static double
cross_entropy_loss (gconstpointer p)
{
  const LossCase *c = p;
  g_autofree double *l = g_new (double, c->T);
  d_cross_entropy (c->T, c->V, c->a, c->target, l);
  return dot (c->r, l, c->T);
}

/* Ignored targets (< 0) get zero rows; one row of logits near 300 checks
 * that the softmax subtracts its maximum (exp (300) overflows f32). */
static void
test_cross_entropy_back (void)
{
  static const gint32 target[] = { 3, -1, 10, 0, -1 };
  LossCase c = { .T = 5, .V = 11, .target = target };
  LpCTensor *logits = random_tensor2 (c.T, c.V, 100, 3.0, NULL);
  for (int j = 0; j < c.V; j++)
    fdata (logits)[2 * c.V + j] += 300.0f;
  c.a = to_double (fdata (logits), (gsize) c.T * c.V);
  LpCTensor *dy = random_tensor2 (c.T, 1, 101, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_CROSS_ENTROPY_BACK);
  n.src[0] = dy;
  n.src[1] = logits;
  n.src[2] = ids_tensor (target, c.T);
  n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, c.V);
  run_ref_and_cpu (&n);
  assert_fd ("cross_entropy_back", cross_entropy_loss, &c, c.a, (gsize) c.T * c.V, fdata (n.dst[0]));
  for (int j = 0; j < c.V; j++)
    g_assert_cmpfloat (fdata (n.dst[0])[1 * c.V + j], ==, 0.0f);
  lp_ctensor_free (logits);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.src[2]);
  lp_ctensor_free (n.dst[0]);
  g_free (c.a);
  g_free (c.r);
}

static double
kl_loss (gconstpointer p)
{
  const LossCase *c = p;
  g_autofree double *l = g_new (double, c->T);
  d_kl (c->T, c->V, c->a, c->b, c->tau, l);
  return dot (c->r, l, c->T);
}

/* At temperature 2.5 (the tau^2 scaling and the 1/tau inside both show). */
static void
test_kl_back (void)
{
  LossCase c = { .T = 4, .V = 9, .tau = 2.5 };
  LpCTensor *student = random_tensor2 (c.T, c.V, 110, 4.0, &c.a);
  LpCTensor *teacher = random_tensor2 (c.T, c.V, 111, 4.0, &c.b);
  LpCTensor *dy = random_tensor2 (c.T, 1, 112, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_KL_BACK);
  n.src[0] = dy;
  n.src[1] = student;
  n.src[2] = teacher;
  n.f[0] = (float) c.tau;
  n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, c.V);
  run_ref_and_cpu (&n);
  assert_fd ("kl_back", kl_loss, &c, c.a, (gsize) c.T * c.V, fdata (n.dst[0]));
  lp_ctensor_free (student);
  lp_ctensor_free (teacher);
  lp_ctensor_free (dy);
  lp_ctensor_free (n.dst[0]);
  g_free (c.a);
  g_free (c.b);
  g_free (c.r);
}

/* ---- kl_topk: the teacher as top-k ids, their log p and the rest's ---- */

typedef struct {
  int T, V, k;
  double tau;
  const gint32 *ids;          /* [T, k] */
  const float *logp, *rest;   /* [T, k], [T] */
  double *student, *r;
} TopkCase;

/* The op's definition (compute.h) in double. */
static double
topk_loss (gconstpointer p)
{
  const TopkCase *c = p;
  g_autofree double *ls = g_new (double, c->V);
  g_autofree gboolean *top = g_new (gboolean, c->V);
  double total = 0.0;
  for (int t = 0; t < c->T; t++)
    {
      d_log_softmax (c->student + (gsize) t * c->V, c->V, c->tau, ls);
      double rest = 0.0, kl = 0.0;
      for (int j = 0; j < c->V; j++)
        top[j] = FALSE;
      for (int i = 0; i < c->k; i++)
        top[c->ids[t * c->k + i]] = TRUE;
      for (int j = 0; j < c->V; j++)
        rest += top[j] ? 0.0 : exp (ls[j]);
      for (int i = 0; i < c->k; i++)
        {
          double lp = c->logp[t * c->k + i];
          kl += lp == -INFINITY ? 0.0 : exp (lp) * (lp - ls[c->ids[t * c->k + i]]);
        }
      if (c->rest[t] != -INFINITY)
        kl += exp (c->rest[t]) * (c->rest[t] - log (rest));
      total += c->r[t] * c->tau * c->tau * kl;
    }
  return total;
}

/* kl_topk_back (reference and CPU kernel) against finite differences, at
 * temperature 2.5: row 0 a teacher's true top-k (masses summing to 1),
 * row 1 the same with logits near 300 (the max subtracted), row 2 log p
 * that do not sum to 1 (the sum P in the gradient shows), row 3 a rest of
 * no mass (p_rest = 0) and a bucket of no mass (log p = -inf). */
static void
test_kl_topk_back (void)
{
  enum { T = 4, V = 9, K = 3 };
  const gint32 ids[T * K] = { 4, 0, 7, 8, 2, 5, 1, 3, 6, 2, 4, 0 };
  float logp[T * K], rest[T];
  /* Row 0 and 1: a teacher distribution over V at 2.5. */
  g_autofree float *teacher = g_new (float, V);
  lp_test_fill (teacher, V, 120, 4.0);
  double lt[V];
  double mx = -INFINITY, sum = 0.0;
  for (int j = 0; j < V; j++)
    mx = MAX (mx, teacher[j] / 2.5);
  for (int j = 0; j < V; j++)
    sum += exp (teacher[j] / 2.5 - mx);
  for (int j = 0; j < V; j++)
    lt[j] = teacher[j] / 2.5 - mx - log (sum);
  for (int t = 0; t < 2; t++)
    {
      double in_top = 0.0;
      for (int i = 0; i < K; i++)
        {
          logp[t * K + i] = (float) lt[ids[t * K + i]];
          in_top += exp (lt[ids[t * K + i]]);
        }
      rest[t] = (float) log1p (-in_top);
    }
  const float odd[K] = { -0.3f, -1.9f, -0.8f };
  memcpy (logp + 2 * K, odd, sizeof odd);
  rest[2] = -0.2f;
  const float none[K] = { -0.1f, -INFINITY, -2.4f };
  memcpy (logp + 3 * K, none, sizeof none);
  rest[3] = -INFINITY;

  TopkCase c = { .T = T, .V = V, .k = K, .tau = 2.5, .ids = ids, .logp = logp, .rest = rest };
  LpCTensor *student = random_tensor2 (T, V, 121, 4.0, NULL);
  for (int j = 0; j < V; j++)
    fdata (student)[1 * V + j] += 300.0f;
  c.student = to_double (fdata (student), (gsize) T * V);
  LpCTensor *dy = random_tensor2 (T, 1, 122, 1.0, &c.r);
  LpCTensor *id_t = tensor2 (LP_DTYPE_I32, T, K), *lp_t = tensor2_from (LP_DTYPE_F32, T, K, logp);
  lp_ctensor_write (id_t, 0, ids, sizeof ids);
  LpCTensor *rest_t = tensor (LP_DTYPE_F32, 1, (gint64[]){ T });
  lp_ctensor_write (rest_t, 0, rest, sizeof rest);
  LpCNode n = node_new (LP_COP_KL_TOPK_BACK);
  n.src[0] = dy;
  n.src[1] = student;
  n.src[2] = id_t;
  n.src[3] = lp_t;
  n.src[4] = rest_t;
  n.f[0] = (float) c.tau;
  n.dst[0] = tensor2 (LP_DTYPE_F32, T, V);
  run_ref_and_cpu (&n);
  assert_fd ("kl_topk_back", topk_loss, &c, c.student, (gsize) T * V, fdata (n.dst[0]));
  /* The forward's value against the definition, per row (dy one-hot).  The
   * reference rounds z / tau to f32 first (as kl's does): near 120 (row 1)
   * by up to 3.8e-6, times tau^2 = 6.25 in the loss: 3e-5 bounds it. */
  LpCNode f = node_new (LP_COP_KL_TOPK);
  f.n_src = 4, f.n_dst = 1;
  f.src[0] = student, f.src[1] = id_t, f.src[2] = lp_t, f.src[3] = rest_t;
  f.f[0] = (float) c.tau;
  f.dst[0] = tensor (LP_DTYPE_F32, 1, (gint64[]){ T });
  lp_cop_info (LP_COP_KL_TOPK)->ref (&f);
  double *r = c.r;
  for (int t = 0; t < T; t++)
    {
      double one[T] = { 0 };
      one[t] = 1.0;
      c.r = one;
      double want = topk_loss (&c);
      g_assert_cmpfloat (fabs (fdata (f.dst[0])[t] - want), <=, 3e-5 * MAX (1.0, fabs (want)));
    }
  c.r = r;
  lp_ctensor_free (f.dst[0]);
  lp_ctensor_free (student);
  lp_ctensor_free (dy);
  lp_ctensor_free (id_t);
  lp_ctensor_free (lp_t);
  lp_ctensor_free (rest_t);
  lp_ctensor_free (n.dst[0]);
  g_free (c.student);
  g_free (c.r);
}

static double
mse_loss (gconstpointer p)
{
  const LossCase *c = p;
  double s = 0.0;
  for (int t = 0; t < c->T; t++)
    {
      double m = 0.0;
      for (int j = 0; j < c->V; j++)
        m += (c->a[t * c->V + j] - c->b[t * c->V + j]) * (c->a[t * c->V + j] - c->b[t * c->V + j]);
      s += c->r[t] * m / c->V;
    }
  return s;
}

/* d/da, and d/db as the graph records it: mse_back with a and b swapped. */
static void
test_mse_back (void)
{
  LossCase c = { .T = 3, .V = 7 };
  LpCTensor *a = random_tensor2 (c.T, c.V, 120, 1.0, &c.a);
  LpCTensor *b = random_tensor2 (c.T, c.V, 121, 1.0, &c.b);
  LpCTensor *dy = random_tensor2 (c.T, 1, 122, 1.0, &c.r);
  for (int side = 0; side < 2; side++)
    {
      LpCNode n = node_new (LP_COP_MSE_BACK);
      n.src[0] = dy;
      n.src[1] = side == 0 ? a : b;
      n.src[2] = side == 0 ? b : a;
      n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, c.V);
      run_ref_and_cpu (&n);
      assert_fd (side == 0 ? "mse_back d(a)" : "mse_back d(b)", mse_loss, &c, side == 0 ? c.a : c.b,
                 (gsize) c.T * c.V, fdata (n.dst[0]));
      lp_ctensor_free (n.dst[0]);
    }
  lp_ctensor_free (a);
  lp_ctensor_free (b);
  lp_ctensor_free (dy);
  g_free (c.a);
  g_free (c.b);
  g_free (c.r);
}

/* ---- graph level: lp_cgraph_backward over a block-shaped graph ---- */

/* GRAPH_TOL: the graph computes forward and backward in f32 through about
 * twenty ops (sgemm, float softmaxes, f16 and grid weights decoded to f32),
 * each adding about 1e-7 relative to its operands: the gradients come out
 * within 3e-7 of the largest (seen); 2e-5 leaves a factor of 50 while a
 * wrong term (a missing path, a transposed product) is off by far more. */
#define GRAPH_TOL 2e-5

/* A node of `op` over the given operands (NULL for an absent optional one),
 * its results allocated by the graph. */
static LpCNode *
graph_add (LpCGraph *g, LpCOp op, int n_src, ...)
{
  LpCTensor *src[LP_CNODE_MAX_SRC] = { NULL };
  va_list ap;
  va_start (ap, n_src);
  for (int i = 0; i < n_src; i++)
    src[i] = va_arg (ap, LpCTensor *);
  va_end (ap);
  g_autoptr (GError) error = NULL;
  LpCNode *n = lp_cgraph_add (g, op, src, n_src, NULL, 0, &error);
  g_assert_no_error (error);
  return n;
}

static void
graph_run (LpCGraph *g)
{
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
}

/* The gradient the graph holds for t, read to the host (t must have one). */
static float *
graph_grad (LpCGraph *g, const LpCTensor *t)
{
  LpCTensor *d = lp_cgraph_grad (g, t);
  if (d == NULL)
    g_error ("graph: no gradient for %s", t->name);
  g_assert_cmpint (lp_ctensor_n_elements (d), ==, lp_ctensor_n_elements (t));
  float *x = g_new (float, lp_ctensor_n_elements (d));
  lp_ctensor_read (d, 0, x, d->n_bytes);
  return x;
}

/* The trainable parameters of the block; wk (f16) and w3 (an integer grid)
 * are frozen weights of other forms that the gradient flows through. */
enum { P_TABLE, P_NORM1, P_WQ, P_WV, P_WO, P_NORM2, P_W1, P_W2, P_HEAD, N_PARAMS };
static const char *const param_names[N_PARAMS] = { "table", "attn_norm", "wq", "wv", "wo",
                                                   "ffn_norm", "w1", "w2", "head" };

typedef struct {
  int T, past, V, D, F, H, Hkv, hd;
  double eps;
  const gint32 *ids, *targets;
  float inv_freq[8];
  gint64 shape[N_PARAMS][2];
  double *p[N_PARAMS];      /* the parameters, as the graph holds them in f32 */
  double *wk, *w3;          /* the frozen weights' effective values [Hkv*hd, D], [F, D] */
  double *k_past, *v_past;  /* the cache's earlier rows [past, Hkv*hd] */
  double *dy;               /* [T]: the loss is sum_t dy[t] ce[t] */
} Block;

/* The block in float64: embed, attention with a cache of `past` positions
 * (rope at positions past ..), the SwiGLU FFN, the head, cross-entropy. */
static double
block_loss (gconstpointer p)
{
  const Block *b = p;
  int T = b->T, D = b->D, F = b->F, V = b->V, nq = b->H * b->hd, nkv = b->Hkv * b->hd, T_kv = b->past + T;
  g_autofree double *x = g_new (double, T * D), *h = g_new (double, T * D), *q0 = g_new (double, T * nq),
                    *q = g_new (double, T * nq), *k0 = g_new (double, T * nkv), *K = g_new (double, T_kv * nkv),
                    *Vv = g_new (double, T_kv * nkv), *a = g_new (double, T * nq), *o = g_new (double, T * D),
                    *gg = g_new (double, T * F), *u = g_new (double, T * F), *f = g_new (double, T * D),
                    *logits = g_new (double, T * V), *ce = g_new (double, T);
  for (int t = 0; t < T; t++)
    memcpy (x + t * D, b->p[P_TABLE] + b->ids[t] * D, sizeof (double) * D);
  d_rmsnorm (T, D, x, b->p[P_NORM1], b->eps, h);
  d_matmul (T, nq, D, h, b->p[P_WQ], q0);
  d_rope (LP_ROPE_NORMAL, T, b->H, b->hd, b->past, b->inv_freq, q0, q);
  d_matmul (T, nkv, D, h, b->wk, k0);
  memcpy (K, b->k_past, sizeof (double) * b->past * nkv);
  d_rope (LP_ROPE_NORMAL, T, b->Hkv, b->hd, b->past, b->inv_freq, k0, K + b->past * nkv);
  memcpy (Vv, b->v_past, sizeof (double) * b->past * nkv);
  d_matmul (T, nkv, D, h, b->p[P_WV], Vv + b->past * nkv);
  d_attention (T, T_kv, b->H, b->Hkv, b->hd, q, K, Vv, a);
  d_matmul (T, D, nq, a, b->p[P_WO], o);
  for (int e = 0; e < T * D; e++)
    x[e] += o[e];
  d_rmsnorm (T, D, x, b->p[P_NORM2], b->eps, h);
  d_matmul (T, F, D, h, b->p[P_W1], gg);
  d_matmul (T, F, D, h, b->w3, u);
  for (int e = 0; e < T * F; e++)
    gg[e] = gg[e] / (1.0 + exp (-gg[e])) * u[e];
  d_matmul (T, D, F, gg, b->p[P_W2], f);
  for (int e = 0; e < T * D; e++)
    x[e] += f[e];
  d_matmul (T, V, D, x, b->p[P_HEAD], logits);
  d_cross_entropy (T, V, logits, b->targets, ce);
  return dot (b->dy, ce, T);
}

/* A parameter tensor [rows, cols] of values 1 + [-spread, spread) (offset
 * 1: a norm's weights) or [-spread, spread), named, and its double copy. */
static LpCTensor *
param_tensor (const char *name, gint64 rows, gint64 cols, guint32 seed, double offset, double spread, double **as_double)
{
  g_autoptr (GError) error = NULL;
  gint64 shape[2] = { rows, cols };
  LpCTensor *t = lp_ctensor_new (cpu, LP_DTYPE_F32, 2, shape, name, &error);
  g_assert_no_error (error);
  lp_test_fill (fdata (t), (gsize) (rows * cols), seed, spread);
  for (gint64 e = 0; e < rows * cols; e++)
    fdata (t)[e] += (float) offset;
  *as_double = to_double (fdata (t), (gsize) (rows * cols));
  return t;
}

/* embed -> rmsnorm -> q, k (f16), v -> rope -> set_rows into a KV cache
 * holding 3 earlier positions -> GQA attention -> wo -> add -> rmsnorm ->
 * w1, w3 (an integer grid) -> swiglu -> w2 -> add -> head ->
 * cross_entropy (one target ignored), differentiated by lp_cgraph_backward:
 * every trainable parameter's gradient against float64 finite differences
 * of the whole block's loss; frozen weights, ids and targets get none. */
static void
test_graph_block (void)
{
  static const gint32 ids[] = { 5, 2, 5, 11, 0 }, targets[] = { 2, 5, -1, 0, 15 };
  Block b = { .T = 5, .past = 3, .V = 16, .D = 16, .F = 24, .H = 4, .Hkv = 2, .hd = 4, .eps = 1e-5,
              .ids = ids, .targets = targets };
  int T = b.T, D = b.D, F = b.F, nq = b.H * b.hd, nkv = b.Hkv * b.hd, T_kv = b.past + T;
  for (int i = 0; i < b.hd / 2; i++)
    b.inv_freq[i] = (float) pow (10000.0, -2.0 * i / b.hd);
  const gint64 shapes[N_PARAMS][2] = { { b.V, D }, { 1, D }, { nq, D }, { nkv, D }, { D, nq },
                                       { 1, D },   { F, D }, { D, F },  { b.V, D } };
  LpCTensor *p[N_PARAMS];
  for (int i = 0; i < N_PARAMS; i++)
    {
      gboolean norm = i == P_NORM1 || i == P_NORM2;
      p[i] = param_tensor (param_names[i], shapes[i][0], shapes[i][1], 200 + i, norm ? 1.0 : 0.0,
                           norm ? 0.2 : i == P_TABLE ? 1.0 : 0.4, &b.p[i]);
      lp_ctensor_set_trainable (p[i], TRUE);
    }
  /* wk stored in f16: its effective weights are the f16 values. */
  g_autofree float *wk32 = g_new (float, nkv * D);
  g_autofree guint16 *wk16 = g_new (guint16, nkv * D);
  lp_test_fill (wk32, (gsize) nkv * D, 220, 0.4);
  g_assert_true (lp_dtype_from_f32 (LP_DTYPE_F16, wk32, wk16, (gsize) nkv * D, NULL));
  g_assert_true (lp_dtype_to_f32 (LP_DTYPE_F16, wk16, wk32, (gsize) nkv * D, NULL));
  b.wk = to_double (wk32, (gsize) nkv * D);
  LpCTensor *wk = tensor2_from (LP_DTYPE_F16, nkv, D, wk16);
  /* w3 an integer grid: 4 bits, groups of 8, act-order. */
  g_autoptr (LpIntGrid) grid = lp_test_int_grid (F, D, 4, 8, 221);
  for (gsize e = 0; e < (gsize) F * grid->n_groups; e++)
    grid->scales[e] = lp_f32_to_f16 (0.05f); /* weights of the order of the others' */
  g_autofree float *w3f = g_new (float, F * D);
  lp_int_grid_dequantize (grid, w3f);
  b.w3 = to_double (w3f, (gsize) F * D);
  LpCTensor *w3[4] = { tensor2_from (LP_DTYPE_I8, F, D, grid->codes),
                       tensor2_from (LP_DTYPE_I16, F, grid->n_groups, grid->scales),
                       tensor2_from (LP_DTYPE_I8, F, grid->n_groups, grid->zeros), ids_tensor (grid->g_idx, D) };
  /* The cache: `past` earlier rows, the rest written by set_rows. */
  LpCTensor *kc = random_tensor2 (T_kv, nkv, 222, 1.0, NULL), *vc = random_tensor2 (T_kv, nkv, 223, 1.0, NULL);
  b.k_past = to_double (fdata (kc), (gsize) b.past * nkv);
  b.v_past = to_double (fdata (vc), (gsize) b.past * nkv);
  LpCTensor *id_t = ids_tensor (ids, T), *tg_t = ids_tensor (targets, T);
  LpCTensor *freq = tensor2_from (LP_DTYPE_F32, 1, b.hd / 2, b.inv_freq);
  LpCTensor *dy = random_tensor2 (T, 1, 224, 1.0, &b.dy);

  g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
  LpCTensor *x = graph_add (g, LP_COP_EMBED, 2, p[P_TABLE], id_t)->dst[0];
  LpCNode *n = graph_add (g, LP_COP_RMSNORM, 2, x, p[P_NORM1]);
  n->f[0] = (float) b.eps;
  LpCTensor *h = n->dst[0];
  LpCTensor *rot[2] = { graph_add (g, LP_COP_MATMUL, 2, h, p[P_WQ])->dst[0], graph_add (g, LP_COP_MATMUL, 2, h, wk)->dst[0] };
  for (int j = 0; j < 2; j++)
    {
      n = graph_add (g, LP_COP_ROPE, 2, rot[j], freq);
      n->i[0] = LP_ROPE_NORMAL, n->i[1] = j == 0 ? b.H : b.Hkv, n->i[2] = b.hd, n->i[3] = b.past;
      rot[j] = n->dst[0];
    }
  graph_add (g, LP_COP_SET_ROWS, 2, rot[1], kc)->i[0] = b.past;
  graph_add (g, LP_COP_SET_ROWS, 2, graph_add (g, LP_COP_MATMUL, 2, h, p[P_WV])->dst[0], vc)->i[0] = b.past;
  n = graph_add (g, LP_COP_ATTENTION, 3, rot[0], kc, vc);
  n->i[0] = b.H, n->i[1] = b.Hkv, n->i[2] = b.hd;
  LpCTensor *o = graph_add (g, LP_COP_MATMUL, 2, n->dst[0], p[P_WO])->dst[0];
  LpCTensor *x2 = graph_add (g, LP_COP_ADD, 2, x, o)->dst[0];
  n = graph_add (g, LP_COP_RMSNORM, 2, x2, p[P_NORM2]);
  n->f[0] = (float) b.eps;
  LpCTensor *h2 = n->dst[0];
  LpCTensor *gate = graph_add (g, LP_COP_MATMUL, 2, h2, p[P_W1])->dst[0];
  n = graph_add (g, LP_COP_MATMUL_GRID, 5, h2, w3[0], w3[1], w3[2], w3[3]);
  n->i[0] = grid->bits, n->i[1] = grid->group_size;
  LpCTensor *s = graph_add (g, LP_COP_SWIGLU, 2, gate, n->dst[0])->dst[0];
  LpCTensor *x3 = graph_add (g, LP_COP_ADD, 2, x2, graph_add (g, LP_COP_MATMUL, 2, s, p[P_W2])->dst[0])->dst[0];
  LpCTensor *logits = graph_add (g, LP_COP_MATMUL, 2, x3, p[P_HEAD])->dst[0];
  LpCTensor *ce = graph_add (g, LP_COP_CROSS_ENTROPY, 2, logits, tg_t)->dst[0];
  graph_run (g);

  /* The f32 graph's forward is the float64 block's. */
  g_autofree float *ce_host = g_new (float, T);
  lp_ctensor_read (ce, 0, ce_host, ce->n_bytes);
  g_autofree double *ce_d = to_double (ce_host, T);
  double loss = block_loss (&b);
  g_assert_cmpfloat (fabs (dot (b.dy, ce_d, T) - loss), <=, 1e-5 * MAX (1.0, fabs (loss)));

  g_autoptr (GError) error = NULL;
  g_assert_true (lp_cgraph_backward (g, ce, dy, &error));
  g_assert_no_error (error);
  graph_run (g);
  for (int i = 0; i < N_PARAMS; i++)
    {
      g_autofree float *grad = graph_grad (g, p[i]);
      g_autofree char *what = g_strdup_printf ("graph: d%s", param_names[i]);
      assert_fd_tol (what, block_loss, &b, b.p[i], (gsize) (shapes[i][0] * shapes[i][1]), grad, GRAPH_TOL);
    }
  /* The cache's gradient is its earlier rows' (set_rows wrote over the
   * others: their old contents reached nothing). */
  g_autofree float *dkc = graph_grad (g, kc), *dvc = graph_grad (g, vc);
  for (int side = 0; side < 2; side++)
    {
      const float *d = side == 0 ? dkc : dvc;
      assert_fd_tol (side == 0 ? "graph: d(k cache)" : "graph: d(v cache)", block_loss, &b,
                     side == 0 ? b.k_past : b.v_past, (gsize) b.past * nkv, d, GRAPH_TOL);
      for (int e = b.past * nkv; e < T_kv * nkv; e++)
        g_assert_cmpfloat (d[e], ==, 0.0f);
    }
  /* Frozen weights, ids, targets and the frequencies: no gradient. */
  const LpCTensor *none[] = { wk, w3[0], w3[1], w3[2], w3[3], id_t, tg_t, freq };
  for (gsize i = 0; i < G_N_ELEMENTS (none); i++)
    g_assert_null (lp_cgraph_grad (g, none[i]));

  for (int i = 0; i < N_PARAMS; i++)
    {
      lp_ctensor_free (p[i]);
      g_free (b.p[i]);
    }
  for (int j = 0; j < 4; j++)
    lp_ctensor_free (w3[j]);
  LpCTensor *rest[] = { wk, kc, vc, id_t, tg_t, freq, dy };
  for (gsize i = 0; i < G_N_ELEMENTS (rest); i++)
    lp_ctensor_free (rest[i]);
  g_free (b.wk);
  g_free (b.w3);
  g_free (b.k_past);
  g_free (b.v_past);
  g_free (b.dy);
}

/* The losses' graph: s = 0.5 (x W^T + r0 + bias) with r0 matmul's added
 * term and bias one row broadcast over T; loss_t = KL (s, teacher) at
 * temperature 2 + MSE (s, goal) + KL_TOPK (s, the teacher's top 2 at
 * temperature 2).  s feeds every loss (its gradients sum). */
enum { L_W, L_R0, L_BIAS, L_GOAL, N_LOSS_PARAMS };
static const char *const loss_param_names[N_LOSS_PARAMS] = { "W", "r0", "bias", "goal" };

typedef struct {
  int T, N, K;
  double tau;
  double *x, *teacher, *dy;
  double *p[N_LOSS_PARAMS];
  TopkCase topk; /* its ids, log p and rest; student and r set per call */
} LossGraph;

static double
loss_graph_loss (gconstpointer p)
{
  const LossGraph *c = p;
  int T = c->T, N = c->N;
  g_autofree double *s = g_new (double, T * N), *kl = g_new (double, T);
  d_matmul (T, N, c->K, c->x, c->p[L_W], s);
  for (int t = 0; t < T; t++)
    for (int j = 0; j < N; j++)
      s[t * N + j] = 0.5 * (s[t * N + j] + c->p[L_R0][t * N + j] + c->p[L_BIAS][j]);
  d_kl (T, N, s, c->teacher, c->tau, kl);
  double loss = dot (c->dy, kl, T);
  TopkCase topk = c->topk;
  topk.student = s;
  topk.r = c->dy;
  loss += topk_loss (&topk);
  for (int t = 0; t < T; t++)
    {
      double m = 0.0;
      for (int j = 0; j < N; j++)
        m += (s[t * N + j] - c->p[L_GOAL][t * N + j]) * (s[t * N + j] - c->p[L_GOAL][t * N + j]);
      loss += c->dy[t] * m / N;
    }
  return loss;
}

/* Matmul's added term, a broadcast bias (row_sum), scale, KL at a
 * temperature and MSE on both sides, summed: each trainable tensor's
 * gradient against float64 finite differences.  A teacher marked
 * trainable is refused with one clear error. */
static void
test_graph_losses (void)
{
  LossGraph c = { .T = 4, .N = 6, .K = 5, .tau = 2.0 };
  const gint64 shapes[N_LOSS_PARAMS][2] = { { c.N, c.K }, { c.T, c.N }, { 1, c.N }, { c.T, c.N } };
  LpCTensor *p[N_LOSS_PARAMS];
  for (int i = 0; i < N_LOSS_PARAMS; i++)
    {
      p[i] = param_tensor (loss_param_names[i], shapes[i][0], shapes[i][1], 300 + i, 0.0, 1.0, &c.p[i]);
      lp_ctensor_set_trainable (p[i], TRUE);
    }
  LpCTensor *x = random_tensor2 (c.T, c.K, 310, 1.0, &c.x);
  LpCTensor *teacher = random_tensor2 (c.T, c.N, 311, 3.0, &c.teacher);
  LpCTensor *dy = random_tensor2 (c.T, 1, 312, 1.0, &c.dy);
  /* The teacher's top 2 at tau, from its logits (as doubles, as d_kl sees them). */
  enum { K = 2 };
  gint32 ids[4 * K];
  float logp[4 * K], rest[4];
  g_assert_cmpint (c.T, ==, 4);
  lp_logits_topk (fdata (teacher), c.T, c.N, K, c.tau, ids, logp, rest);
  c.topk = (TopkCase) { .T = c.T, .V = c.N, .k = K, .tau = c.tau, .ids = ids, .logp = logp, .rest = rest };
  LpCTensor *id_t = tensor2 (LP_DTYPE_I32, c.T, K), *lp_t = tensor2_from (LP_DTYPE_F32, c.T, K, logp);
  LpCTensor *rest_t = tensor2_from (LP_DTYPE_F32, c.T, 1, rest);
  lp_ctensor_write (id_t, 0, ids, sizeof ids);
  for (int attempt = 0; attempt < 3; attempt++)
    {
      /* The second time the teacher is trainable, the third its top-k's
       * log p: an error, no gradients. */
      lp_ctensor_set_trainable (teacher, attempt == 1);
      lp_ctensor_set_trainable (lp_t, attempt == 2);
      g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
      LpCTensor *h = graph_add (g, LP_COP_MATMUL, 3, x, p[L_W], p[L_R0])->dst[0];
      LpCNode *n = graph_add (g, LP_COP_SCALE, 1, graph_add (g, LP_COP_ADD, 2, h, p[L_BIAS])->dst[0]);
      n->f[0] = 0.5f;
      LpCTensor *s = n->dst[0];
      n = graph_add (g, LP_COP_KL, 2, s, teacher);
      n->f[0] = (float) c.tau;
      LpCTensor *loss = graph_add (g, LP_COP_ADD, 2, n->dst[0], graph_add (g, LP_COP_MSE, 2, s, p[L_GOAL])->dst[0])->dst[0];
      n = graph_add (g, LP_COP_KL_TOPK, 4, s, id_t, lp_t, rest_t);
      n->f[0] = (float) c.tau;
      loss = graph_add (g, LP_COP_ADD, 2, loss, n->dst[0])->dst[0];
      graph_run (g);
      g_autoptr (GError) error = NULL;
      gboolean ok = lp_cgraph_backward (g, loss, dy, &error);
      if (attempt > 0)
        {
          g_assert_false (ok);
          lp_test_assert_error_contains (error, attempt == 1 ? "op kl:" : "op kl_topk:", "teacher", NULL);
          g_assert_null (strchr (error->message, '\n'));
          continue;
        }
      g_assert_no_error (error);
      graph_run (g);
      for (int i = 0; i < N_LOSS_PARAMS; i++)
        {
          g_autofree float *grad = graph_grad (g, p[i]);
          g_autofree char *what = g_strdup_printf ("graph: d%s", loss_param_names[i]);
          assert_fd_tol (what, loss_graph_loss, &c, c.p[i], (gsize) (shapes[i][0] * shapes[i][1]), grad, GRAPH_TOL);
        }
      g_assert_null (lp_cgraph_grad (g, x));
      g_assert_null (lp_cgraph_grad (g, teacher));
    }
  for (int i = 0; i < N_LOSS_PARAMS; i++)
    {
      lp_ctensor_free (p[i]);
      g_free (c.p[i]);
    }
  lp_ctensor_free (x);
  lp_ctensor_free (teacher);
  lp_ctensor_free (dy);
  lp_ctensor_free (id_t);
  lp_ctensor_free (lp_t);
  lp_ctensor_free (rest_t);
  g_free (c.x);
  g_free (c.teacher);
  g_free (c.dy);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  cpu = lp_backend_cpu_new ();
  g_test_add_func ("/backward/embed", test_embed_back);
  g_test_add_func ("/backward/matmul-x-dense", test_matmul_back_x_dense);
  g_test_add_func ("/backward/matmul-x-grid", test_matmul_back_x_grid);
  g_test_add_func ("/backward/matmul-w", test_matmul_back_w);
  g_test_add_func ("/backward/rmsnorm", test_rmsnorm_back);
  g_test_add_func ("/backward/rope", test_rope_back);
  g_test_add_func ("/backward/attention", test_attention_back);
  g_test_add_func ("/backward/swiglu", test_swiglu_back);
  g_test_add_func ("/backward/row-sum", test_row_sum);
  g_test_add_func ("/backward/cross-entropy", test_cross_entropy_back);
  g_test_add_func ("/backward/kl", test_kl_back);
  g_test_add_func ("/backward/kl-topk", test_kl_topk_back);
  g_test_add_func ("/backward/mse", test_mse_back);
  g_test_add_func ("/backward/dequant-grid", test_dequant_grid);
  g_test_add_func ("/backward/fake-quant", test_fake_quant);
  g_test_add_func ("/backward/fake-quant-scales-refused", test_fake_quant_scales_refused);
  g_test_add_func ("/backward/graph-block", test_graph_block);
  g_test_add_func ("/backward/graph-losses", test_graph_losses);
  int rc = g_test_run ();
  lp_backend_unref (cpu);
  return rc;
}
