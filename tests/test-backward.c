/* The compute graph's backward ops (model/compute_backward.c): for every
 * op, the reference backward against central finite differences of the
 * forward computed in float64 (small double versions of each forward's
 * definition below), and the CPU kernel against the reference; then a
 * block-shaped graph's loss differentiated by lp_cgraph_backward against
 * finite differences of the whole graph.
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
 *   loops): about sqrt (n) 6e-8 relative for n terms, a few 1e-6 for the
 *   few hundred terms here; 1e-4 leaves room for cancellation. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"
#include <llmpress/compute.h>

#define FD_TOL 1e-5
#define CPU_TOL 1e-4

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
 * grad[n] within FD_TOL of the largest difference quotient. */
static void
assert_fd (const char *what, LossFn loss, gconstpointer ctx, double *x, gsize n, const float *grad)
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
  assert_close (msg, grad, fd, n, FD_TOL);
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

static void
test_attention_back (void)
{
  AttnCase c = { .T = 4, .T_kv = 7, .H = 4, .Hkv = 2, .hd = 8 };
  LpCTensor *q = random_tensor2 (c.T, c.H * c.hd, 70, 1.0, &c.q);
  LpCTensor *k = random_tensor2 (c.T_kv, c.Hkv * c.hd, 71, 1.0, &c.k);
  LpCTensor *v = random_tensor2 (c.T_kv, c.Hkv * c.hd, 72, 1.0, &c.v);
  LpCTensor *dy = random_tensor2 (c.T, c.H * c.hd, 73, 1.0, &c.r);
  LpCNode n = node_new (LP_COP_ATTENTION_BACK);
  n.src[0] = dy;
  n.src[1] = q;
  n.src[2] = k;
  n.src[3] = v;
  n.i[0] = c.H;
  n.i[1] = c.Hkv;
  n.i[2] = c.hd;
  n.dst[0] = tensor2 (LP_DTYPE_F32, c.T, c.H * c.hd);
  n.dst[1] = tensor2 (LP_DTYPE_F32, c.T_kv, c.Hkv * c.hd);
  n.dst[2] = tensor2 (LP_DTYPE_F32, c.T_kv, c.Hkv * c.hd);
  run_ref_and_cpu (&n);
  assert_fd ("attention_back dq", attention_loss, &c, c.q, (gsize) c.T * c.H * c.hd, fdata (n.dst[0]));
  assert_fd ("attention_back dk", attention_loss, &c, c.k, (gsize) c.T_kv * c.Hkv * c.hd, fdata (n.dst[1]));
  assert_fd ("attention_back dv", attention_loss, &c, c.v, (gsize) c.T_kv * c.Hkv * c.hd, fdata (n.dst[2]));
  for (int j = 0; j < 3; j++)
    lp_ctensor_free (n.dst[j]);
  lp_ctensor_free (q);
  lp_ctensor_free (k);
  lp_ctensor_free (v);
  lp_ctensor_free (dy);
  g_free (c.q);
  g_free (c.k);
  g_free (c.v);
  g_free (c.r);
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
  g_test_add_func ("/backward/mse", test_mse_back);
  int rc = g_test_run ();
  lp_backend_unref (cpu);
  return rc;
}
