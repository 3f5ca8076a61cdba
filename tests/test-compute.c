/* The compute graph: every forward op's CPU kernel against its plain C
 * reference, tensors' write/read round trip, the per-node CPU fallback
 * through a backend that declines some ops, and the forward pass's weight
 * budget. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"
#include "compute-internal.h"
#include "forward-internal.h"

/* ---- helpers ---- */

static LpCTensor *
tensor_f32 (LpBackend *be, int n_dims, const gint64 *shape, guint32 seed, double scale)
{
  g_autoptr (GError) error = NULL;
  LpCTensor *t = lp_ctensor_new (be, LP_DTYPE_F32, n_dims, shape, "t", &error);
  g_assert_no_error (error);
  g_autofree float *x = g_new (float, lp_ctensor_n_elements (t));
  lp_test_fill (x, lp_ctensor_n_elements (t), seed, scale);
  lp_ctensor_write (t, 0, x, t->n_bytes);
  return t;
}

static LpCTensor *
tensor_bytes (LpBackend *be, LpDType dtype, int n_dims, const gint64 *shape, const void *data)
{
  g_autoptr (GError) error = NULL;
  LpCTensor *t = lp_ctensor_new (be, dtype, n_dims, shape, "t", &error);
  g_assert_no_error (error);
  lp_ctensor_write (t, 0, data, t->n_bytes);
  return t;
}

static float *
read_f32 (const LpCTensor *t)
{
  float *x = g_new (float, lp_ctensor_n_elements (t));
  lp_ctensor_read (t, 0, x, t->n_bytes);
  return x;
}

/* Keeps the tensors a check made, freed at the end of the check. */
static GPtrArray *
pool_new (void)
{
  return g_ptr_array_new_with_free_func ((GDestroyNotify) lp_ctensor_free);
}

static LpCTensor *
pooled (GPtrArray *pool, LpCTensor *t)
{
  g_ptr_array_add (pool, t);
  return t;
}

/* Run `op` over src with the CPU kernel (through a graph on the CPU
 * backend) and with the reference (on copies of the results), and compare
 * every result within rel_tol.  A result that is also an operand (set_rows)
 * starts from the same values on both sides. */
static void
check_op (LpCOp op, LpCTensor *const *src, int n_src, const gint64 *params_i, const float *params_f, double rel_tol)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
  g_autoptr (GError) error = NULL;
  LpCNode *n = lp_cgraph_add (g, op, src, n_src, NULL, 0, &error);
  g_assert_no_error (error);
  if (params_i)
    memcpy (n->i, params_i, sizeof n->i);
  if (params_f)
    memcpy (n->f, params_f, sizeof n->f);
  /* The reference's node: the same operands, results of its own. */
  g_autoptr (GPtrArray) pool = pool_new ();
  LpCNode r = *n;
  for (int j = 0; j < n->n_dst; j++)
    {
      LpCTensor *d = n->dst[j];
      g_autofree guint8 *init = g_malloc (d->n_bytes);
      lp_ctensor_read (d, 0, init, d->n_bytes);
      r.dst[j] = pooled (pool, tensor_bytes (cpu, d->dtype, d->n_dims, d->shape, init));
      for (int i = 0; i < n->n_src; i++)
        if (n->src[i] == d)
          r.src[i] = r.dst[j];
    }
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  lp_cop_info (op)->ref (&r);
  for (int j = 0; j < n->n_dst; j++)
    {
      g_autofree float *a = read_f32 (n->dst[j]), *b = read_f32 (r.dst[j]);
      lp_test_assert_close (a, b, lp_ctensor_n_elements (n->dst[j]), rel_tol);
    }
}

/* ---- kernels against references ---- */

static void
test_matmul (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  static const int shapes[][3] = { { 1, 7, 13 }, { 37, 29, 53 }, { 64, 96, 256 }, { 5, 300, 64 } };
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
      g_autoptr (GPtrArray) pool = pool_new ();
      LpCTensor *x = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, K }, 10 + s, 1));
      LpCTensor *w = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ N, K }, 20 + s, 0.5));
      LpCTensor *acc = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, N }, 30 + s, 2));
      check_op (LP_COP_MATMUL, (LpCTensor *[]){ x, w }, 2, NULL, NULL, 1e-5);
      check_op (LP_COP_MATMUL, (LpCTensor *[]){ x, w, acc }, 3, NULL, NULL, 1e-5);
      /* The weight as stored in f16 and in a block type. */
      g_autofree float *wf = read_f32 (w);
      static const LpDType types[] = { LP_DTYPE_F16, LP_DTYPE_BF16, LP_DTYPE_Q8_0 };
      for (guint t = 0; t < G_N_ELEMENTS (types); t++)
        {
          if (K % lp_dtype_info (types[t])->block_size != 0)
            continue;
          guint64 row_bytes = 0;
          g_assert_true (lp_dtype_row_bytes (types[t], K, &row_bytes, NULL));
          g_autofree guint8 *bytes = g_malloc (N * row_bytes);
          g_assert_true (lp_dtype_from_f32 (types[t], wf, bytes, (gsize) N * K, NULL));
          LpCTensor *wq = pooled (pool, tensor_bytes (cpu, types[t], 2, (gint64[]){ N, K }, bytes));
          check_op (LP_COP_MATMUL, (LpCTensor *[]){ x, wq, acc }, 3, NULL, NULL, 1e-5);
        }
    }
}

static void
test_matmul_grid (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  static const int shapes[][5] = { { 3, 16, 64, 32, 4 }, { 9, 33, 100, 24, 3 }, { 1, 8, 128, 128, 8 } };
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], N = shapes[s][1], K = shapes[s][2], group = shapes[s][3], bits = shapes[s][4];
      g_autoptr (LpIntGrid) W = lp_test_int_grid (N, K, bits, group, 40 + s);
      g_autoptr (GPtrArray) pool = pool_new ();
      LpCTensor *x = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, K }, 41 + s, 1));
      LpCTensor *codes = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I8, 2, (gint64[]){ N, K }, W->codes));
      LpCTensor *scales = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I16, 2, (gint64[]){ N, W->n_groups }, W->scales));
      LpCTensor *zeros = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I8, 2, (gint64[]){ N, W->n_groups }, W->zeros));
      LpCTensor *g_idx = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I32, 1, (gint64[]){ K }, W->g_idx));
      LpCTensor *acc = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, N }, 42 + s, 1));
      gint64 p[8] = { bits, group };
      check_op (LP_COP_MATMUL_GRID, (LpCTensor *[]){ x, codes, scales, zeros, g_idx }, 5, p, NULL, 1e-5);
      check_op (LP_COP_MATMUL_GRID, (LpCTensor *[]){ x, codes, scales, zeros, g_idx, acc }, 6, p, NULL, 1e-5);
    }
}

static void
test_attention (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  /* T, T_kv (a KV cache of T_kv - T earlier positions), H, Hkv, hd: MHA, GQA, MQA. */
  static const int shapes[][5] = { { 7, 7, 4, 4, 8 }, { 5, 9, 4, 2, 8 }, { 1, 12, 6, 1, 16 }, { 33, 40, 8, 4, 4 },
                                   { 1, 70, 9, 3, 64 }, { 2, 30, 4, 2, 20 } }; /* decoding SmolLM2; hd past the vectors */
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], T_kv = shapes[s][1], H = shapes[s][2], Hkv = shapes[s][3], hd = shapes[s][4];
      g_autoptr (GPtrArray) pool = pool_new ();
      LpCTensor *q = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, H * hd }, 50 + s, 2));
      LpCTensor *k = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T_kv, Hkv * hd }, 60 + s, 2));
      LpCTensor *v = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T_kv, Hkv * hd }, 70 + s, 1));
      check_op (LP_COP_ATTENTION, (LpCTensor *[]){ q, k, v }, 3, (gint64[8]){ H, Hkv, hd }, NULL, 1e-5);
    }
}

static void
test_elementwise (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GPtrArray) pool = pool_new ();
  int T = 11, D = 24, H = 3, hd = 8;
  LpCTensor *x = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, D }, 80, 3));
  LpCTensor *y = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, D }, 81, 1));
  LpCTensor *w = pooled (pool, tensor_f32 (cpu, 1, (gint64[]){ D }, 82, 1));
  LpCTensor *bias = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ 1, D }, 83, 1));
  LpCTensor *inv_freq = pooled (pool, tensor_f32 (cpu, 1, (gint64[]){ hd / 2 }, 84, 0.5));
  check_op (LP_COP_RMSNORM, (LpCTensor *[]){ x, w }, 2, NULL, (float[8]){ 1e-5f }, 1e-6);
  for (int style = 0; style < 2; style++)
    for (int pos0 = 0; pos0 < 20; pos0 += 17)
      check_op (LP_COP_ROPE, (LpCTensor *[]){ x, inv_freq }, 2,
                (gint64[8]){ style == 0 ? LP_ROPE_NORMAL : LP_ROPE_NEOX, H, hd, pos0 }, NULL, 1e-6);
  check_op (LP_COP_SWIGLU, (LpCTensor *[]){ x, y }, 2, NULL, NULL, 1e-6);
  check_op (LP_COP_ADD, (LpCTensor *[]){ x, y }, 2, NULL, NULL, 0);
  check_op (LP_COP_ADD, (LpCTensor *[]){ x, bias }, 2, NULL, NULL, 0);
  check_op (LP_COP_SCALE, (LpCTensor *[]){ x }, 1, NULL, (float[8]){ -0.75f }, 0);
  LpCTensor *cache = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ 3 * T, D }, 85, 1));
  check_op (LP_COP_SET_ROWS, (LpCTensor *[]){ x, cache }, 2, (gint64[8]){ T + 2 }, NULL, 0);
}

/* The row-wise kernels over enough rows that the CPU's run on several
 * threads (lp_parallel_for, ranges of about 32K values): each row is the
 * reference's, to the bit; and attention with its softmax rows spread,
 * over several blocks of queries (lp_cpu_attention's causal blocks). */
static void
test_rows_threaded (void)
{
  lp_threads_set (3);
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GPtrArray) pool = pool_new ();
  int T = 4100, D = 24, H = 3, hd = 8;
  LpCTensor *x = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, D }, 90, 3));
  LpCTensor *y = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, D }, 91, 1));
  LpCTensor *w = pooled (pool, tensor_f32 (cpu, 1, (gint64[]){ D }, 92, 1));
  LpCTensor *inv_freq = pooled (pool, tensor_f32 (cpu, 1, (gint64[]){ hd / 2 }, 93, 0.5));
  check_op (LP_COP_RMSNORM, (LpCTensor *[]){ x, w }, 2, NULL, (float[8]){ 1e-5f }, 0);
  for (int style = 0; style < 2; style++)
    check_op (LP_COP_ROPE, (LpCTensor *[]){ x, inv_freq }, 2,
              (gint64[8]){ style == 0 ? LP_ROPE_NORMAL : LP_ROPE_NEOX, H, hd, 5 }, NULL, 0);
  check_op (LP_COP_SWIGLU, (LpCTensor *[]){ x, y }, 2, NULL, NULL, 0);
  check_op (LP_COP_SWIGLU, (LpCTensor *[]){ x, y }, 2, (gint64[8]){ 1 }, NULL, 0); /* libm's expf (--llama-cpp) */
  /* T, T_kv: blocks of queries (128, 128, 44), the last one short; with a cache of 20 positions */
  static const int shapes[][2] = { { 300, 300 }, { 150, 170 } };
  for (guint i = 0; i < G_N_ELEMENTS (shapes); i++)
    {
      int Ta = shapes[i][0], Tkv = shapes[i][1], Ha = 4, Hkva = 2, hda = 8;
      LpCTensor *q = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ Ta, Ha * hda }, 94 + i, 2));
      LpCTensor *k = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ Tkv, Hkva * hda }, 96 + i, 2));
      LpCTensor *v = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ Tkv, Hkva * hda }, 98 + i, 1));
      check_op (LP_COP_ATTENTION, (LpCTensor *[]){ q, k, v }, 3, (gint64[8]){ Ha, Hkva, hda }, NULL, 1e-5);
    }
  lp_threads_set (0);
}

/* The add of a bias, checked against values computed here (not only the
 * reference): row t of the result is x[t] + b. */
static void
test_add_broadcast_values (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
  float xs[6] = { 1, 2, 3, 4, 5, 6 }, bs[3] = { 10, 20, 30 };
  LpCTensor *x = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ 2, 3 }, "x", NULL);
  LpCTensor *b = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ 1, 3 }, "b", NULL);
  lp_ctensor_write (x, 0, xs, sizeof xs);
  lp_ctensor_write (b, 0, bs, sizeof bs);
  LpCNode *n = lp_cgraph_add (g, LP_COP_ADD, (LpCTensor *[]){ x, b }, 2, NULL, 0, NULL);
  g_assert_true (lp_cgraph_compute (g, NULL));
  float out[6];
  lp_ctensor_read (n->dst[0], 0, out, sizeof out);
  float want[6] = { 11, 22, 33, 14, 25, 36 };
  for (int i = 0; i < 6; i++)
    g_assert_cmpfloat (out[i], ==, want[i]);
}

static void
test_embed_and_losses (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GPtrArray) pool = pool_new ();
  int V = 40, D = 32, T = 9;
  LpCTensor *table = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ V, D }, 90, 1));
  gint32 ids[9] = { 0, 39, 7, 7, 12, 1, 38, 20, 3 };
  LpCTensor *tid = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I32, 1, (gint64[]){ T }, ids));
  check_op (LP_COP_EMBED, (LpCTensor *[]){ table, tid }, 2, NULL, NULL, 0);
  /* An f16 table is read as stored. */
  g_autofree float *tf = read_f32 (table);
  g_autoptr (LpTensor) t32 = lp_tensor_new_f32 ("e", 2, (gint64[]){ V, D }, tf, NULL);
  g_autoptr (LpTensor) t16 = lp_tensor_convert (t32, LP_DTYPE_F16, NULL);
  LpCTensor *table16 = pooled (pool, lp_ctensor_from_tensor (cpu, t16, NULL));
  check_op (LP_COP_EMBED, (LpCTensor *[]){ table16, tid }, 2, NULL, NULL, 0);

  LpCTensor *logits = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, V }, 91, 4));
  LpCTensor *teacher = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, V }, 92, 4));
  gint32 targets[9] = { 3, -1, 0, 39, 5, 5, -1, 17, 2 };
  LpCTensor *tt = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I32, 1, (gint64[]){ T }, targets));
  check_op (LP_COP_CROSS_ENTROPY, (LpCTensor *[]){ logits, tt }, 2, NULL, NULL, 0);
  check_op (LP_COP_KL, (LpCTensor *[]){ logits, teacher }, 2, NULL, (float[8]){ 2.0f }, 0);
  check_op (LP_COP_MSE, (LpCTensor *[]){ logits, teacher }, 2, NULL, NULL, 0);

  /* Values worked out here: a row of equal logits scores log V; a target
   * below 0 scores 0; KL of a distribution with itself is 0. */
  g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
  LpCTensor *flat = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ 2, V }, "flat", NULL);
  g_autofree float *zeros = g_new0 (float, 2 * V);
  lp_ctensor_write (flat, 0, zeros, flat->n_bytes);
  gint32 tg[2] = { 4, -1 };
  LpCTensor *tgt = lp_cgraph_tensor (g, LP_DTYPE_I32, 1, (gint64[]){ 2 }, "tgt", NULL);
  lp_ctensor_write (tgt, 0, tg, sizeof tg);
  LpCNode *ce = lp_cgraph_add (g, LP_COP_CROSS_ENTROPY, (LpCTensor *[]){ flat, tgt }, 2, NULL, 0, NULL);
  LpCNode *kl = lp_cgraph_add (g, LP_COP_KL, (LpCTensor *[]){ logits, logits }, 2, NULL, 0, NULL);
  kl->f[0] = 1.0f;
  g_assert_true (lp_cgraph_compute (g, NULL));
  float out[2];
  lp_ctensor_read (ce->dst[0], 0, out, sizeof out);
  g_assert_cmpfloat_with_epsilon (out[0], log (V), 1e-6);
  g_assert_cmpfloat (out[1], ==, 0.0f);
  g_autofree float *k = read_f32 (kl->dst[0]);
  for (int t = 0; t < T; t++)
    g_assert_cmpfloat_with_epsilon (k[t], 0.0, 1e-7);
}

/* One node of `op` over src on the CPU; its result [n] read back. */
static float *
run_node (LpBackend *cpu, LpCOp op, LpCTensor *const *src, int n_src, float tau)
{
  g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
  g_autoptr (GError) error = NULL;
  LpCNode *n = lp_cgraph_add (g, op, src, n_src, NULL, 0, &error);
  g_assert_no_error (error);
  n->f[0] = tau;
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  return read_f32 (n->dst[0]);
}

/* kl_topk: the CPU kernel against the reference (forward and backward),
 * for a teacher reduced to its top-k by lp_logits_topk at several k; with
 * k = V - 1 (the rest one token) and k = V (no rest) the buckets are the
 * tokens, so loss and gradient equal kl's; with fewer, the buckets merge
 * tokens, and KL over a coarser partition is never larger (it grows with
 * k). */
static void
test_kl_topk (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GPtrArray) pool = pool_new ();
  enum { T = 9, V = 40 };
  const float tau = 2.0f;
  LpCTensor *student = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, V }, 95, 4));
  LpCTensor *teacher = pooled (pool, tensor_f32 (cpu, 2, (gint64[]){ T, V }, 96, 4));
  LpCTensor *dy = pooled (pool, tensor_f32 (cpu, 1, (gint64[]){ T }, 97, 1));
  g_autofree float *tl = read_f32 (teacher);
  g_autofree float *kl = run_node (cpu, LP_COP_KL, (LpCTensor *[]){ student, teacher }, 2, tau);
  g_autofree float *kl_back = run_node (cpu, LP_COP_KL_BACK, (LpCTensor *[]){ dy, student, teacher }, 3, tau);
  const int ks[] = { 1, 2, 5, 20, V - 1, V };
  float last[T];
  for (int t = 0; t < T; t++)
    last[t] = 0.0f;
  for (guint c = 0; c < G_N_ELEMENTS (ks); c++)
    {
      int k = ks[c];
      g_autofree gint32 *ids = g_new (gint32, T * k);
      g_autofree float *logp = g_new (float, T * k), *rest = g_new (float, T);
      lp_logits_topk (tl, T, V, k, tau, ids, logp, rest);
      LpCTensor *id_t = pooled (pool, tensor_bytes (cpu, LP_DTYPE_I32, 2, (gint64[]){ T, k }, ids));
      LpCTensor *lp_t = pooled (pool, tensor_bytes (cpu, LP_DTYPE_F32, 2, (gint64[]){ T, k }, logp));
      LpCTensor *rest_t = pooled (pool, tensor_bytes (cpu, LP_DTYPE_F32, 1, (gint64[]){ T }, rest));
      LpCTensor *src[5] = { dy, student, id_t, lp_t, rest_t };
      check_op (LP_COP_KL_TOPK, src + 1, 4, NULL, (float[8]){ tau }, 1e-5);
      check_op (LP_COP_KL_TOPK_BACK, src, 5, NULL, (float[8]){ tau }, 1e-5);
      g_autofree float *loss = run_node (cpu, LP_COP_KL_TOPK, src + 1, 4, tau);
      g_autofree float *grad = run_node (cpu, LP_COP_KL_TOPK_BACK, src, 5, tau);
      g_test_message ("k = %d: kl_topk row 0 %.6f, kl %.6f", k, loss[0], kl[0]);
      for (int t = 0; t < T; t++)
        {
          g_assert_cmpfloat (loss[t], >=, last[t] - 1e-5f);
          g_assert_cmpfloat (loss[t], <=, kl[t] + 1e-5f * MAX (1.0f, kl[t]));
          last[t] = loss[t];
        }
      if (k >= V - 1)
        {
          lp_test_assert_close (loss, kl, T, 1e-5);
          lp_test_assert_close (grad, kl_back, T * V, 1e-5);
        }
    }
  /* The top-k's order and masses: decreasing log p, and with the rest they sum to 1. */
  enum { K = 5 };
  gint32 ids[T * K];
  float logp[T * K], rest[T];
  lp_logits_topk (tl, T, V, K, tau, ids, logp, rest);
  for (int t = 0; t < T; t++)
    {
      double mass = exp (rest[t]);
      for (int i = 0; i < K; i++)
        {
          mass += exp (logp[t * K + i]);
          if (i > 0)
            g_assert_cmpfloat (logp[t * K + i], <=, logp[t * K + i - 1]);
          for (int j = 0; j < V; j++)
            if (tl[t * V + j] > tl[t * V + ids[t * K + i]])
              {
                gboolean kept = FALSE;
                for (int m = 0; m < i; m++)
                  kept |= ids[t * K + m] == j;
                g_assert_true (kept); /* every likelier token came before */
              }
        }
      g_assert_cmpfloat (fabs (mass - 1.0), <, 1e-6);
    }
}

static void
test_ctensor_round_trip (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCTensor) t = lp_ctensor_new (cpu, LP_DTYPE_F32, 2, (gint64[]){ 5, 7 }, "rt", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (t->n_bytes, ==, 5 * 7 * sizeof (float));
  g_assert_cmpint (lp_ctensor_n_elements (t), ==, 35);
  g_assert_nonnull (lp_ctensor_host (t));
  float x[35], y[35], part[4];
  lp_test_fill (x, 35, 1, 1);
  lp_ctensor_write (t, 0, x, sizeof x);
  lp_ctensor_read (t, 0, y, sizeof y);
  g_assert_cmpmem (x, sizeof x, y, sizeof y);
  /* Byte ranges. */
  float four[4] = { 1, 2, 3, 4 };
  lp_ctensor_write (t, 10 * sizeof (float), four, sizeof four);
  lp_ctensor_read (t, 9 * sizeof (float), part, sizeof part);
  g_assert_cmpfloat (part[0], ==, x[9]);
  g_assert_cmpfloat (part[1], ==, 1);
  g_assert_cmpfloat (part[3], ==, 3);
  /* A model tensor as stored (f16 bytes kept). */
  g_autoptr (LpTensor) mt = lp_tensor_new_f32 ("m", 2, (gint64[]){ 5, 8 }, (float[40]){ 1, -2, 0.5f }, NULL);
  g_autoptr (LpTensor) mh = lp_tensor_convert (mt, LP_DTYPE_F16, NULL);
  g_autoptr (LpCTensor) c = lp_ctensor_from_tensor (cpu, mh, &error);
  g_assert_no_error (error);
  g_assert_cmpint (c->dtype, ==, LP_DTYPE_F16);
  g_assert_cmpuint (c->n_bytes, ==, lp_tensor_n_bytes (mh));
  g_assert_cmpmem (lp_ctensor_host (c), c->n_bytes, lp_tensor_data (mh), lp_tensor_n_bytes (mh));
  /* A shape no backend can hold is refused with a message. */
  g_autoptr (LpCTensor) bad = lp_ctensor_new (cpu, LP_DTYPE_F32, 2, (gint64[]){ -1, 4 }, "bad", &error);
  g_assert_null (bad);
  g_assert_nonnull (error);
}

/* ---- the CPU fallback ---- */

/* A test backend: host memory behind handles of its own (so the graph must
 * copy operands across for a node it declines), running only rmsnorm, add
 * and scale; it counts what it ran. */
typedef struct {
  int graph_calls, nodes_run;
} TestPriv;

typedef struct {
  gsize n;
  guint8 data[];
} TestBuf;

static gpointer
tb_new (LpBackend *be, gsize bytes, GError **error)
{
  TestBuf *b = g_malloc (sizeof (TestBuf) + MAX (bytes, 1));
  b->n = bytes;
  return b;
}

static void
tb_free (LpBackend *be, gpointer buf)
{
  g_free (buf);
}

static void
tb_write (LpBackend *be, gpointer buf, gsize offset, const void *src, gsize n)
{
  TestBuf *b = buf;
  g_assert_cmpuint (offset + n, <=, b->n);
  memcpy (b->data + offset, src, n);
}

static void
tb_read (LpBackend *be, gpointer buf, gsize offset, void *dst, gsize n)
{
  TestBuf *b = buf;
  g_assert_cmpuint (offset + n, <=, b->n);
  memcpy (dst, b->data + offset, n);
}

/* Of the op-by-op API, only the integer grid's product: the forward pass
 * then hands it grids' codes (a device's path) rather than f32 weights. */
static gboolean
tb_supports_op (LpBackend *be, LpOp op)
{
  return op == LP_OP_GEMM_GRID;
}

static gboolean
tb_supports_node (LpBackend *be, const LpCNode *node)
{
  return node->op == LP_COP_RMSNORM || node->op == LP_COP_ADD || node->op == LP_COP_SCALE;
}

static gboolean
tb_graph_compute (LpBackend *be, LpCNode *const *nodes, int n, GError **error)
{
  TestPriv *p = be->priv;
  p->graph_calls++;
  for (int k = 0; k < n; k++)
    {
      g_assert_true (tb_supports_node (be, nodes[k]));
      /* Run the kernel on the data behind our handles. */
      LpCNode local = *nodes[k];
      LpCTensor views[LP_CNODE_MAX_SRC + LP_CNODE_MAX_DST];
      int nv = 0;
      for (int i = 0; i < local.n_src; i++)
        if (local.src[i])
          {
            g_assert_true (local.src[i]->be == be);
            views[nv] = *local.src[i];
            views[nv].buf = ((TestBuf *) local.src[i]->buf)->data;
            local.src[i] = &views[nv++];
          }
      for (int j = 0; j < local.n_dst; j++)
        {
          views[nv] = *local.dst[j];
          views[nv].buf = ((TestBuf *) local.dst[j]->buf)->data;
          local.dst[j] = &views[nv++];
        }
      lp_cop_info (local.op)->cpu (&local);
      p->nodes_run++;
    }
  return TRUE;
}

static void
tb_destroy (LpBackend *be)
{
  g_free (be->priv);
  g_free (be);
}

static const LpBackendOps test_ops = {
  .api_version = LP_BACKEND_API_VERSION,
  .name = "test",
  .supports_op = tb_supports_op,
  .buffer_new = tb_new,
  .buffer_free = tb_free,
  .buffer_write = tb_write,
  .buffer_read = tb_read,
  .supports_node = tb_supports_node,
  .graph_compute = tb_graph_compute,
  .destroy = tb_destroy,
};

static LpBackend *
test_backend_new (void)
{
  LpBackend *be = g_new0 (LpBackend, 1);
  be->ops = &test_ops;
  be->ref_count = 1;
  be->device_name = g_strdup ("test device");
  be->numeric_class = g_strdup ("test");
  be->fallback = lp_backend_cpu_new ();
  be->priv = g_new0 (TestPriv, 1);
  return be;
}

/* One small block (norm, matmul, bias, rope, attention, residual add,
 * swiglu, scale, set_rows into a cache, loss) recorded on `be` from the same
 * host inputs; returns the loss and the cache, read back. */
static void
run_block (LpBackend *be, float *loss, float *cache_out, char **describe)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  int T = 6, D = 16, H = 2, hd = 8;
  g_autofree float *buf = g_new (float, 4 * D * D);
  LpCTensor *x = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ T, D }, "x", &error);
  LpCTensor *nw = lp_cgraph_tensor (g, LP_DTYPE_F32, 1, (gint64[]){ D }, "norm", &error);
  LpCTensor *w = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ D, D }, "w", &error);
  LpCTensor *b = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ 1, D }, "b", &error);
  LpCTensor *f = lp_cgraph_tensor (g, LP_DTYPE_F32, 1, (gint64[]){ hd / 2 }, "inv_freq", &error);
  LpCTensor *cache = lp_cgraph_tensor (g, LP_DTYPE_F32, 2, (gint64[]){ 2 * T, D }, "cache", &error);
  gint32 tg[6] = { 1, 0, 15, 3, -1, 7 };
  LpCTensor *targets = lp_cgraph_tensor (g, LP_DTYPE_I32, 1, (gint64[]){ T }, "targets", &error);
  g_assert_no_error (error);
  LpCTensor *fill[] = { x, nw, w, b, f, cache };
  for (guint i = 0; i < G_N_ELEMENTS (fill); i++)
    {
      lp_test_fill (buf, lp_ctensor_n_elements (fill[i]), 100 + i, 1);
      lp_ctensor_write (fill[i], 0, buf, fill[i]->n_bytes);
    }
  lp_ctensor_write (targets, 0, tg, sizeof tg);
#define ADD(op, ...) lp_cgraph_add (g, op, (LpCTensor *[]){ __VA_ARGS__ }, \
                                    G_N_ELEMENTS (((LpCTensor *[]){ __VA_ARGS__ })), NULL, 0, &error)
  LpCNode *n = ADD (LP_COP_RMSNORM, x, nw);
  n->f[0] = 1e-5f;
  LpCTensor *h = n->dst[0];
  LpCTensor *q = ADD (LP_COP_MATMUL, h, w)->dst[0];
  q = ADD (LP_COP_ADD, q, b)->dst[0];
  n = ADD (LP_COP_ROPE, q, f);
  n->i[0] = LP_ROPE_NORMAL, n->i[1] = H, n->i[2] = hd, n->i[3] = 0;
  q = n->dst[0];
  n = ADD (LP_COP_SET_ROWS, q, cache);
  n->i[0] = T;
  n = ADD (LP_COP_ATTENTION, q, q, h);
  n->i[0] = H, n->i[1] = H, n->i[2] = hd;
  LpCTensor *a = ADD (LP_COP_MATMUL, n->dst[0], w, x)->dst[0];
  LpCTensor *s = ADD (LP_COP_SWIGLU, a, h)->dst[0];
  n = ADD (LP_COP_SCALE, s);
  n->f[0] = 3.0f;
  LpCTensor *ce = ADD (LP_COP_CROSS_ENTROPY, n->dst[0], targets)->dst[0];
#undef ADD
  g_assert_no_error (error);
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  lp_ctensor_read (ce, 0, loss, T * sizeof (float));
  lp_ctensor_read (cache, 0, cache_out, cache->n_bytes);
  *describe = lp_cgraph_describe (g);
}

static void
test_fallback (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (LpBackend) tb = test_backend_new ();
  float la[6], lb[6], ca[12 * 16], cb[12 * 16];
  g_autofree char *da = NULL, *db = NULL;
  run_block (cpu, la, ca, &da);
  run_block (tb, lb, cb, &db);
  /* Kernels are the same on both sides: the same bits. */
  g_assert_cmpmem (la, sizeof la, lb, sizeof lb);
  g_assert_cmpmem (ca, sizeof ca, cb, sizeof cb);
  /* rmsnorm, then add; then scale: three runs on the device, the rest on the CPU. */
  TestPriv *p = tb->priv;
  g_assert_cmpint (p->graph_calls, ==, 3);
  g_assert_cmpint (p->nodes_run, ==, 3);
  g_assert_cmpstr (db, ==, "test device; on the CPU: matmul, rope, attention, swiglu, set_rows, cross_entropy");
  g_assert_false (strstr (da, "on the CPU") != NULL);
  for (int t = 0; t < 6; t++)
    g_assert_true (isfinite (la[t]));
}

/* ---- the forward pass's weights ---- */

static void
logits_of (LpForward *fw, const gint32 *toks, int T, float *out)
{
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_forward_logits (fw, toks, T, NULL, out, &error));
  g_assert_no_error (error);
}

/* A budget smaller than the model's weights: layers are dropped and
 * uploaded again, and the logits are the same bits. */
static void
test_weight_budget (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (7);
  const int T = 10, V = 64;
  gint32 toks[10] = { 1, 4, 9, 16, 25, 36, 49, 0, 11, 63 };
  g_autofree float *a = g_new (float, T * V), *b = g_new (float, T * V);
  g_autoptr (LpForward) fa = lp_forward_new (m, NULL, NULL);
  logits_of (fa, toks, T, a);
  guint64 all_bytes = 0, all_uploads = 0, bytes = 0, uploads = 0;
  lp_forward_weight_stats (fa, &all_bytes, &all_uploads);
  /* Kept across calls: a second window uploads nothing. */
  logits_of (fa, toks, T, b);
  lp_forward_weight_stats (fa, &bytes, &uploads);
  g_assert_cmpuint (uploads, ==, all_uploads);
  g_assert_cmpuint (bytes, ==, all_bytes);
  g_assert_cmpmem (a, T * V * sizeof (float), b, T * V * sizeof (float));

  g_autoptr (LpForward) fb = lp_forward_new (m, NULL, NULL);
  guint64 budget = all_bytes / 3;
  lp_forward_set_device_memory (fb, budget);
  for (int window = 0; window < 2; window++)
    {
      memset (b, 0, T * V * sizeof (float));
      logits_of (fb, toks, T, b);
      g_assert_cmpmem (a, T * V * sizeof (float), b, T * V * sizeof (float));
    }
  lp_forward_weight_stats (fb, &bytes, &uploads);
  g_assert_cmpuint (bytes, <=, budget + all_bytes / 2);
  g_assert_cmpuint (bytes, <, all_bytes);
  g_assert_cmpuint (uploads, >, 2 * all_uploads - 2); /* every layer again in the second window */
  /* Lifting the budget keeps what is there; shrinking it drops to within it. */
  lp_forward_set_device_memory (fb, 1);
  lp_forward_weight_stats (fb, &bytes, NULL);
  g_assert_cmpuint (bytes, <, all_bytes / 2);
}

/* The forward pass on a backend whose buffers are not host memory and
 * which runs few ops: weights uploaded, the KV cache in its memory, the
 * other ops on the CPU with their operands copied across; the same bits as
 * on the CPU, in full and incrementally, and the same under a budget. */
static void
test_forward_on_test_backend (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (8);
  g_autoptr (LpBackend) tb = test_backend_new ();
  const int T = 9, V = 64;
  gint32 toks[9] = { 2, 3, 5, 7, 11, 13, 17, 19, 23 };
  g_autofree float *a = g_new (float, T * V), *b = g_new (float, T * V), *c = g_new (float, T * V);
  g_autoptr (LpForward) fc = lp_forward_new (m, NULL, NULL);
  g_autoptr (LpForward) ft = lp_forward_new (m, tb, NULL);
  logits_of (fc, toks, T, a);
  logits_of (ft, toks, T, b);
  g_assert_cmpmem (a, T * V * sizeof (float), b, T * V * sizeof (float));
  g_assert_cmpint (((TestPriv *) tb->priv)->nodes_run, >, 0);
  g_autoptr (LpKVCache) cache = lp_kv_cache_new (lp_model_config (m), T + 1);
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_forward_logits (ft, toks, 4, cache, c, &error));
  for (int t = 4; t < T; t++)
    g_assert_true (lp_forward_logits (ft, toks + t, 1, cache, c + t * V, &error));
  g_assert_no_error (error);
  lp_test_assert_close (c, a, T * V, 1e-5);
  /* The cache lives on the backend it was first used with. */
  g_assert_false (lp_forward_logits (fc, toks, 1, cache, c, &error));
  lp_test_assert_error_contains (error, "KV cache", "test device", NULL);
  g_clear_error (&error);
  /* The description names the ops the device declines. */
  g_autofree char *d = lp_forward_describe (ft, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (d, ==, "test device; on the CPU: embed, matmul, rope, attention, swiglu");
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autofree char *dc = lp_forward_describe (fc, &error);
  g_assert_cmpstr (dc, ==, cpu->device_name);
}

/* Integer-grid weights: on the CPU the f32 values they carry, on a backend
 * that multiplies grids the codes (matmul_grid, here run on the CPU with
 * its operands copied across); the same logits within rounding. */
static void
test_forward_grid_weights (void)
{
  g_autoptr (LpModel) m = lp_test_tiny_model (9);
  static const struct {
    const char *name;
    int N, K, bits, group;
  } grids[] = { { "blk.0.attn_q.weight", 32, 32, 4, 16 }, { "blk.1.ffn_down.weight", 32, 48, 3, 32 } };
  for (guint i = 0; i < G_N_ELEMENTS (grids); i++)
    {
      g_autoptr (LpIntGrid) grid = lp_test_int_grid (grids[i].N, grids[i].K, grids[i].bits, grids[i].group, 90 + i);
      g_autoptr (GError) error = NULL;
      g_autoptr (LpTensor) t = lp_tensor_new_int_grid (grids[i].name, 2, (gint64[]){ grids[i].N, grids[i].K }, grid,
                                                       NULL, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (m, t);
    }
  g_autoptr (LpBackend) tb = test_backend_new ();
  const int T = 7, V = 64;
  gint32 toks[7] = { 5, 10, 15, 20, 25, 30, 35 };
  g_autofree float *a = g_new (float, T * V), *b = g_new (float, T * V);
  g_autoptr (LpForward) fc = lp_forward_new (m, NULL, NULL);
  g_autoptr (LpForward) ft = lp_forward_new (m, tb, NULL);
  logits_of (fc, toks, T, a);
  logits_of (ft, toks, T, b);
  lp_test_assert_close (b, a, T * V, 1e-5);
  g_autoptr (GError) error = NULL;
  g_autofree char *d = lp_forward_describe (ft, &error);
  g_assert_no_error (error);
  g_assert_nonnull (strstr (d, "matmul_grid"));
}

/* ---- exp over rows (exp_rows.c) ---- */

/* Distance in ulps between two floats of one sign (+inf is one past FLT_MAX). */
static gint64
ulps (float a, float b)
{
  gint32 ia, ib;
  memcpy (&ia, &a, 4);
  memcpy (&ib, &b, 4);
  return ABS ((gint64) ia - ib);
}

/* The worst distance in ulps of f(x) from e^x in double rounded to float
 * over every 61st float of [-104, 89] (both signs: subnormal results, the
 * overflow edge); *worst_x gets its x. */
static gint64
exp_sweep_ulps (float (*f) (float), float *worst_x)
{
  gint64 worst = 0;
  *worst_x = 0.0f;
  guint32 bounds[2][2] = { { 0x00000000u, 0x42b20000u /* 89 */ }, { 0x80000000u, 0xc2d00000u /* -104 */ } };
  for (int sign = 0; sign < 2; sign++)
    for (guint32 b = bounds[sign][0]; b <= bounds[sign][1]; b += 61)
      {
        float x;
        memcpy (&x, &b, 4);
        gint64 u = ulps (f (x), (float) exp ((double) x));
        if (u > worst)
          worst = u, *worst_x = x;
      }
  return worst;
}

/* ggml_ops.c's restatement of ggml's vector exp against e^x in double:
 * every 61st float of [-104, 89]; its subnormal results (2^n scaled once)
 * and what it blends in past 2^+-192.  tests/test-eval.c checks it bit for
 * bit against llama.cpp; this says it is an exp without llama.cpp. */
static void
test_ggml_v_expf (void)
{
  float worst_x;
  gint64 worst = exp_sweep_ulps (lp_ggml_v_expf, &worst_x);
  g_test_message ("lp_ggml_v_expf: worst %" G_GINT64_FORMAT " ulp (x = %.9g)", worst, worst_x);
  g_assert_cmpint (worst, <=, 2);
  g_assert_cmpfloat (lp_ggml_v_expf (0.0f), ==, 1.0f);
  g_assert_cmpfloat (lp_ggml_v_expf (-INFINITY), ==, 0.0f);
  g_assert_cmpfloat (lp_ggml_v_expf (-200.0f), ==, 0.0f);
  g_assert_true (isinf (lp_ggml_v_expf (INFINITY)) && lp_ggml_v_expf (200.0f) > 0);
  g_assert_true (isnan (lp_ggml_v_expf (NAN)));
}

/* max |ours - want| over n values against a double reference. */
static double
max_abs_diff (const float *ours, const double *want, gsize n)
{
  double d = 0.0;
  for (gsize i = 0; i < n; i++)
    d = MAX (d, fabs (ours[i] - want[i]));
  return d;
}

/* ggml_ops.c's RMS norm, RoPE, softmax and SwiGLU against plain double
 * formulas, on rows whose lengths are not multiples of 16 (the scalar tails
 * llama.cpp's shapes never reach). */
static void
test_ggml_ops_reference (void)
{
  enum { T = 3, D = 37, H = 2, HD = 18 };
  float x[T * D], w[D], y[T * D], g[T * D];
  double want[T * D];
  lp_test_fill (x, T * D, 5, 3.0);
  lp_test_fill (w, D, 6, 1.0);
  lp_test_fill (g, T * D, 7, 4.0);

  /* RMS norm times the weight. */
  lp_ggml_rms_norm_mul (x, w, y, T, D, 1e-5f);
  for (int t = 0; t < T; t++)
    {
      double ss = 0.0;
      for (int i = 0; i < D; i++)
        ss += (double) x[t * D + i] * x[t * D + i];
      for (int i = 0; i < D; i++)
        want[t * D + i] = x[t * D + i] / sqrt (ss / D + 1e-5) * w[i];
    }
  g_assert_cmpfloat (max_abs_diff (y, want, T * D), <, 1e-5);

  /* Softmax with a scale and a causal mask: masked values exactly 0. */
  float mask[T * D];
  for (int t = 0; t < T; t++)
    for (int i = 0; i < D; i++)
      mask[t * D + i] = i <= D - T + t ? 0.0f : -INFINITY;
  lp_ggml_soft_max (x, mask, T, y, T, D, 0.5f);
  for (int t = 0; t < T; t++)
    {
      double mx = -INFINITY, sum = 0.0;
      for (int i = 0; i < D; i++)
        mx = MAX (mx, 0.5 * x[t * D + i] + mask[t * D + i]);
      for (int i = 0; i < D; i++)
        sum += want[t * D + i] = exp (0.5 * x[t * D + i] + mask[t * D + i] - mx);
      for (int i = 0; i < D; i++)
        {
          want[t * D + i] /= sum;
          if (mask[t * D + i] != 0.0f)
            g_assert_cmpfloat (y[t * D + i], ==, 0.0f);
        }
    }
  g_assert_cmpfloat (max_abs_diff (y, want, T * D), <, 1e-6);

  /* SwiGLU. */
  lp_ggml_swiglu (g, x, y, T, D);
  for (int i = 0; i < T * D; i++)
    want[i] = g[i] / (1.0 + exp (-(double) g[i])) * x[i];
  g_assert_cmpfloat (max_abs_diff (y, want, T * D), <, 1e-5);

  /* RoPE, normal mode: pairs rotated by p * base^(-2i/n_dims) for the
   * first 16 of 18 dimensions, the rest copied. */
  gint32 pos[T] = { 0, 1, 7 };
  float q[T * H * HD];
  double wq[T * H * HD];
  lp_test_fill (q, T * H * HD, 8, 2.0);
  lp_ggml_rope (q, y, pos, T, H, HD, 16, 10000.0f, 1.0f, 1.0f);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      {
        const float *s = q + (t * H + h) * HD;
        double *d = wq + (t * H + h) * HD;
        for (int i = 0; i < 16; i += 2)
          {
            double th = pos[t] * pow (10000.0, -(double) i / 16);
            d[i] = s[i] * cos (th) - s[i + 1] * sin (th);
            d[i + 1] = s[i] * sin (th) + s[i + 1] * cos (th);
          }
        d[16] = s[16];
        d[17] = s[17];
      }
  g_assert_cmpfloat (max_abs_diff (y, wq, T * H * HD), <, 1e-5);
}

/* lp_exp_ref against e^x in double rounded to float: every 61st float of
 * [-104, 89] (both signs; subnormal results, the overflow edge) and the
 * edges themselves; within the 2 ulp that exp_rows.c states. */
static void
test_exp_ref_error (void)
{
  float worst_x;
  gint64 worst = exp_sweep_ulps (lp_exp_ref, &worst_x);
  /* ln FLT_MAX and its neighbours, the last subnormal and zero results, +-0 */
  float ln_max = logf (FLT_MAX), edges[] = { 0.0f, -0.0f, ln_max, nextafterf (ln_max, 0.0f),
                                              nextafterf (ln_max, 100.0f), -87.33654f, -103.27893f, -103.97208f,
                                              -104.0f, 88.0f, -0.34657359f, 0.34657359f, 1e-8f, -1e-8f };
  for (guint i = 0; i < G_N_ELEMENTS (edges); i++)
    {
      gint64 u = ulps (lp_exp_ref (edges[i]), (float) exp ((double) edges[i]));
      if (u > worst)
        worst = u, worst_x = edges[i];
    }
  g_test_message ("lp_exp_ref: worst %" G_GINT64_FORMAT " ulp (x = %.9g)", worst, worst_x);
  g_assert_cmpint (worst, <=, 2);
  /* what is not a number to round */
  g_assert_cmpfloat (lp_exp_ref (-INFINITY), ==, 0.0f);
  g_assert_cmpfloat (lp_exp_ref (-1e30f), ==, 0.0f);
  g_assert_cmpfloat (lp_exp_ref (-150.5f), ==, 0.0f);
  g_assert_true (isinf (lp_exp_ref (INFINITY)) && lp_exp_ref (INFINITY) > 0);
  g_assert_true (isinf (lp_exp_ref (89.0f)) && isinf (lp_exp_ref (1e30f)));
  g_assert_true (isnan (lp_exp_ref (NAN)));
  g_assert_cmpfloat (lp_exp_ref (0.0f), ==, 1.0f);
}

/* One row of every kind of value the kernels meet, of length n: random
 * logits, -inf (masked), large negatives, zero, the overflow edge. */
static void
exp_row (float *x, int n, guint32 seed)
{
  lp_test_fill (x, n, seed, 8.0);
  float special[] = { -INFINITY, -1e30f, -200.0f, -104.0f, -103.5f, -90.0f, -87.5f, 0.0f, -0.0f, 88.7f, 88.72283f };
  for (int i = 0; i < n; i += 7)
    x[i] = special[(i / 7) % G_N_ELEMENTS (special)];
}

/* Each kernel this CPU runs against the plain C reference, to the bit:
 * the values stored, their float sum, their double sum, the max and
 * swiglu, on rows of every length around the 16 lanes and at a head's V;
 * swiglu near libm's too. */
static void
test_exp_kernels (void)
{
  int lengths[] = { 0, 1, 7, 8, 15, 16, 17, 31, 33, 100, 511, 4099, 49152 };
  for (LpExpKernel k = LP_EXP_AVX2; k <= LP_EXP_AVX512; k++)
    {
      if (!lp_exp_kernel_available (k))
        {
          g_test_message ("exp kernel %d: not on this CPU", k);
          continue;
        }
      for (guint l = 0; l < G_N_ELEMENTS (lengths); l++)
        for (int shift_kind = 0; shift_kind < 3; shift_kind++)
          {
            int n = lengths[l];
            g_autofree float *x = g_new (float, n + 1), *a = g_new (float, n + 1), *b = g_new (float, n + 1);
            exp_row (x, n, 40 + l);
            /* the row's max (softmax, log-sum-exp), 0 (overflow reachable), a big shift */
            float shift = shift_kind == 0 ? lp_exp_row_max (LP_EXP_PLAIN, x, n) : shift_kind == 1 ? 0.0f : 50.0f;
            g_assert_cmpfloat (lp_exp_row_max (k, x, n), ==, lp_exp_row_max (LP_EXP_PLAIN, x, n));
            memcpy (a, x, sizeof (float) * n);
            memcpy (b, x, sizeof (float) * n);
            a[n] = b[n] = 7.0f; /* past the row: left alone */
            float sa = lp_exp_store_sum (LP_EXP_PLAIN, a, n, shift), sb = lp_exp_store_sum (k, b, n, shift);
            g_assert_cmpmem (a, sizeof (float) * (n + 1), b, sizeof (float) * (n + 1));
            g_assert_cmpmem (&sa, 4, &sb, 4);
            double da = lp_exp_sum (LP_EXP_PLAIN, x, n, shift), db = lp_exp_sum (k, x, n, shift);
            g_assert_cmpmem (&da, 8, &db, 8);
            for (int i = 0; i < n; i++)
              g_assert_cmpmem (&a[i], 4, &(float){ lp_exp_ref (x[i] - shift) }, 4);
            /* swiglu with the row as gate (its +-inf and edges included) */
            lp_test_fill (b, n, 60 + l, 2.0);
            g_autofree float *ya = g_new (float, n + 1), *yb = g_new (float, n + 1), *want = g_new (float, n + 1);
            lp_exp_silu_mul (LP_EXP_PLAIN, n, x, b, ya);
            lp_exp_silu_mul (k, n, x, b, yb);
            g_assert_cmpmem (ya, sizeof (float) * n, yb, sizeof (float) * n);
            lp_ref_swiglu (n, x, b, want);
            for (int i = 0; i < n; i++)
              if (isfinite (want[i]))
                g_assert_cmpfloat (fabsf (ya[i] - want[i]), <=, 1e-6f * fabsf (want[i]) + 1e-37f);
              else
                g_assert_cmpmem (&ya[i], 4, &want[i], 4);
          }
    }
}

/* lp_cpu_log_sum_exp against lp_log_sum_exp (libm's exp in double) on
 * rows of logits: within float rounding of the terms. */
static void
test_log_sum_exp (void)
{
  int V = 49152;
  g_autofree float *x = g_new (float, V);
  for (int r = 0; r < 4; r++)
    {
      lp_test_fill (x, V, 90 + r, 3.0 + 10.0 * r);
      if (r == 3)
        for (int i = 0; i < V; i += 3)
          x[i] = -INFINITY;
      double want = lp_log_sum_exp (x, V), got = lp_cpu_log_sum_exp (x, V);
      g_assert_cmpfloat (fabs (got - want), <=, 4e-7 * MAX (1.0, fabs (want)));
    }
}

/* The CPU backend keeps freed buffers of 1 MiB and more, up to 512 MiB,
 * for the next tensor of the same size; smaller ones go back to malloc. */
static void
test_cpu_buffer_pool (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  gint64 mib = 1 << 18; /* floats */
  LpCTensor *a = lp_ctensor_new (cpu, LP_DTYPE_F32, 1, (gint64[]){ 2 * mib }, "a", &error);
  g_assert_no_error (error);
  gpointer a_buf = a->buf;
  lp_ctensor_write (a, 0, (float[]){ 1, 2, 3 }, 12);
  lp_ctensor_free (a);
  g_assert_cmpuint (lp_cpu_pool_bytes (cpu), ==, 2 << 20);
  /* another size: a new buffer; the same size: the kept one */
  LpCTensor *b = lp_ctensor_new (cpu, LP_DTYPE_F32, 1, (gint64[]){ 2 * mib + 1 }, "b", &error);
  g_assert_true (b->buf != a_buf);
  LpCTensor *c = lp_ctensor_new (cpu, LP_DTYPE_F32, 2, (gint64[]){ 2, mib }, "c", &error);
  g_assert_true (c->buf == a_buf);
  g_assert_cmpuint (lp_cpu_pool_bytes (cpu), ==, 0);
  lp_ctensor_free (b);
  lp_ctensor_free (c);
  g_assert_cmpuint (lp_cpu_pool_bytes (cpu), ==, (4 << 20) + 4);
  /* small: not kept */
  lp_ctensor_free (lp_ctensor_new (cpu, LP_DTYPE_F32, 1, (gint64[]){ 1000 }, "s", &error));
  g_assert_cmpuint (lp_cpu_pool_bytes (cpu), ==, (4 << 20) + 4);
  /* over the cap: the oldest let go (never written, so never paged in) */
  LpCTensor *big[3];
  for (int i = 0; i < 3; i++)
    big[i] = lp_ctensor_new (cpu, LP_DTYPE_F32, 1, (gint64[]){ 200 * mib }, "big", &error);
  g_assert_no_error (error);
  for (int i = 0; i < 3; i++)
    lp_ctensor_free (big[i]);
  g_assert_cmpuint (lp_cpu_pool_bytes (cpu), ==, (gsize) 400 << 20);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/compute/matmul", test_matmul);
  g_test_add_func ("/compute/matmul-grid", test_matmul_grid);
  g_test_add_func ("/compute/attention", test_attention);
  g_test_add_func ("/compute/exp-ref-error", test_exp_ref_error);
  g_test_add_func ("/compute/exp-kernels", test_exp_kernels);
  g_test_add_func ("/compute/ggml-v-expf", test_ggml_v_expf);
  g_test_add_func ("/compute/ggml-ops-reference", test_ggml_ops_reference);
  g_test_add_func ("/compute/log-sum-exp", test_log_sum_exp);
  g_test_add_func ("/compute/elementwise", test_elementwise);
  g_test_add_func ("/compute/rows-threaded", test_rows_threaded);
  g_test_add_func ("/compute/add-broadcast", test_add_broadcast_values);
  g_test_add_func ("/compute/embed-losses", test_embed_and_losses);
  g_test_add_func ("/compute/kl-topk", test_kl_topk);
  g_test_add_func ("/compute/ctensor-round-trip", test_ctensor_round_trip);
  g_test_add_func ("/compute/fallback", test_fallback);
  g_test_add_func ("/compute/cpu-buffer-pool", test_cpu_buffer_pool);
  g_test_add_func ("/compute/weight-budget", test_weight_budget);
  g_test_add_func ("/compute/forward-on-test-backend", test_forward_on_test_backend);
  g_test_add_func ("/compute/forward-grid-weights", test_forward_grid_weights);
  return g_test_run ();
}
