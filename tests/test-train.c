/* The trainer (train.h, compress/train.c) and the optimizer's ops.
 *
 * - AdamW (LP_COP_ADAMW) against a step computed by hand in double, the
 *   CPU kernel against the reference, a keep-mask's zeros untouched;
 *   LP_COP_SUM_SQ against a sum in double.
 * - The end-to-end gradient (cross-entropy and KL at a temperature, block
 *   by block with recomputation) of small synthetic models (tied and
 *   separate heads, q/k/v biases) against central finite differences of the
 *   whole loss: the loss computed in double by this file from the plain
 *   forward pass's logits (lp_forward_logits on a copy of the model with
 *   one weight moved by +-h).  The same for the block-wise MSE.
 * - The step: pruned weights stay exactly 0; save/restore gives back the
 *   parameters bit for bit; a NaN gradient changes nothing; a pattern that
 *   matches nothing fails with one line; LoRA trains A and B and merges.
 * - The same short run on the Vulkan device equals the CPU's (when one is
 *   there), and 20 steps of KL self-distillation on stories260K lower the
 *   held-out KL.
 *
 * Finite differences (FD_H, FD_TOL below): the forward pass is f32, so the
 * loss carries rounding of about 1e-8 to 1e-7 absolute; central differences
 * at h = 1e-3 turn that into up to 5e-5 of noise on a derivative, and err
 * by h^2 f''' ~ 1e-6 (weights of order 0.3).  Seen: |fd - g| <= 1e-4 with
 * the largest entries of each gradient between 0.05 and 0.7.  The check is
 * on the 3 largest entries of each gradient (where a missing path, a
 * doubled term or a transposed product shows) and 3 random ones:
 * |fd - g| <= FD_TOL max |g| + FD_ABS. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"
#include <llmpress/compute.h>
#include <llmpress/forward.h>
#include <llmpress/synth.h>
#include <llmpress/train.h>

#include "train-internal.h"

#define FD_H 1e-3
#define FD_TOL 1e-3
#define FD_ABS 1e-4

/* ---- the optimizer's ops ---- */

static LpCTensor *
vec_tensor (LpBackend *be, gint64 n, const float *x)
{
  g_autoptr (GError) error = NULL;
  LpCTensor *t = lp_ctensor_new (be, LP_DTYPE_F32, 1, &n, "x", &error);
  g_assert_no_error (error);
  lp_ctensor_write (t, 0, x, t->n_bytes);
  return t;
}

static void
read_vec (const LpCTensor *t, float *out)
{
  lp_ctensor_read (t, 0, out, t->n_bytes);
}

/* Two AdamW steps on 4 weights, one pruned, against the formulas in double. */
static void
test_adamw_op (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  const float p0[4] = { 0.5f, -1.25f, 0.0f, 2.0f }, g0[4] = { 0.1f, -0.3f, 7.0f, 0.0f }, keep[4] = { 1, 1, 0, 1 };
  const float zero[4] = { 0 };
  LpCTensor *p = vec_tensor (cpu, 4, p0), *g = vec_tensor (cpu, 4, g0), *m = vec_tensor (cpu, 4, zero),
            *v = vec_tensor (cpu, 4, zero), *k = vec_tensor (cpu, 4, keep);
  /* The hyperparameters as the node holds them (f32). */
  const double lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
  double P[4], M[4] = { 0 }, V[4] = { 0 };
  for (int i = 0; i < 4; i++)
    P[i] = p0[i];
  for (int step = 1; step <= 2; step++)
    {
      g_autoptr (LpCGraph) gr = lp_cgraph_new (cpu);
      LpCNode *n = lp_cgraph_add (gr, LP_COP_ADAMW, (LpCTensor *[]){ p, g, m, v, k }, 5, NULL, 0, &error);
      g_assert_no_error (error);
      g_assert_true (n->dst[0] == p && n->dst[1] == m && n->dst[2] == v);
      n->i[0] = step;
      const float f[6] = { lr, b1, b2, eps, wd, gs };
      memcpy (n->f, f, sizeof f);
      g_assert_true (lp_cgraph_compute (gr, &error));
      g_assert_no_error (error);
      for (int i = 0; i < 4; i++)
        {
          if (keep[i] == 0)
            continue;
          double gi = gs * g0[i];
          M[i] = b1 * M[i] + (1 - b1) * gi;
          V[i] = b2 * V[i] + (1 - b2) * gi * gi;
          double mh = M[i] / (1 - pow (b1, step)), vh = V[i] / (1 - pow (b2, step));
          P[i] -= lr * (mh / (sqrt (vh) + eps) + wd * P[i]);
        }
    }
  float pf[4], mf[4], vf[4];
  read_vec (p, pf);
  read_vec (m, mf);
  read_vec (v, vf);
  for (int i = 0; i < 4; i++)
    {
      g_assert_cmpfloat_with_epsilon (pf[i], P[i], 1e-6 * MAX (1.0, fabs (P[i])));
      g_assert_cmpfloat_with_epsilon (mf[i], M[i], 1e-6 * MAX (1e-3, fabs (M[i])));
      g_assert_cmpfloat_with_epsilon (vf[i], V[i], 1e-6 * MAX (1e-6, fabs (V[i])));
    }
  /* The pruned weight and its moments never moved, despite its gradient. */
  g_assert_cmpfloat (pf[2], ==, 0.0f);
  g_assert_cmpfloat (mf[2], ==, 0.0f);
  g_assert_cmpfloat (vf[2], ==, 0.0f);
  /* A first step moves each weight by about lr (Adam's normalised step). */
  g_assert_cmpfloat (fabs (pf[0] - p0[0]), >, 0.015);
  LpCTensor *all[] = { p, g, m, v, k };
  for (gsize i = 0; i < G_N_ELEMENTS (all); i++)
    lp_ctensor_free (all[i]);
}

/* The CPU kernels against the references on random data (in f32 against
 * double: 1e-6 relative), and SUM_SQ's total against a double sum. */
static void
test_optim_kernels (void)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  const gint64 n = 1000;
  g_autofree float *x = g_new (float, n), *gr = g_new (float, n), *mm = g_new (float, n), *vv = g_new (float, n),
                   *kp = g_new (float, n);
  lp_test_fill (x, n, 1, 1.0);
  lp_test_fill (gr, n, 2, 0.1);
  lp_test_fill (mm, n, 3, 0.01);
  lp_test_fill (vv, n, 4, 1e-4);
  for (gint64 i = 0; i < n; i++)
    {
      vv[i] = fabsf (vv[i]);
      kp[i] = i % 3 != 0;
    }
  const float f[6] = { 1e-3f, 0.9f, 0.99f, 1e-8f, 0.01f, 0.7f };
  float *res[2][3];
  for (int side = 0; side < 2; side++)
    {
      LpCTensor *t[5] = { vec_tensor (cpu, n, x), vec_tensor (cpu, n, gr), vec_tensor (cpu, n, mm),
                          vec_tensor (cpu, n, vv), vec_tensor (cpu, n, kp) };
      LpCNode node = { .op = LP_COP_ADAMW, .n_src = 5, .n_dst = 3, .src = { t[0], t[1], t[2], t[3], t[4] },
                       .dst = { t[0], t[2], t[3] }, .i = { 7 } };
      memcpy (node.f, f, sizeof f);
      if (side == 0)
        lp_cop_info (LP_COP_ADAMW)->cpu (&node);
      else
        lp_cop_info (LP_COP_ADAMW)->ref (&node);
      for (int j = 0; j < 3; j++)
        {
          res[side][j] = g_new (float, n);
          read_vec (node.dst[j], res[side][j]);
        }
      for (int i = 0; i < 5; i++)
        lp_ctensor_free (t[i]);
    }
  for (int j = 0; j < 3; j++)
    {
      lp_test_assert_close (res[0][j], res[1][j], n, 1e-6);
      g_free (res[0][j]);
      g_free (res[1][j]);
    }
  /* sum_sq, chained over two tensors. */
  g_autoptr (LpCGraph) g = lp_cgraph_new (cpu);
  LpCTensor *a = lp_cgraph_tensor (g, LP_DTYPE_F32, 1, &n, "a", &error), *b = lp_cgraph_tensor (g, LP_DTYPE_F32, 1, &n, "b", &error);
  lp_ctensor_write (a, 0, x, a->n_bytes);
  lp_ctensor_write (b, 0, gr, b->n_bytes);
  LpCNode *s1 = lp_cgraph_add (g, LP_COP_SUM_SQ, (LpCTensor *[]){ a }, 1, NULL, 0, &error);
  LpCNode *s2 = lp_cgraph_add (g, LP_COP_SUM_SQ, (LpCTensor *[]){ b, s1->dst[0] }, 2, NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_ctensor_n_elements (s2->dst[0]), ==, 1);
  g_assert_true (lp_cgraph_compute (g, &error));
  double want = 0.0;
  for (gint64 i = 0; i < n; i++)
    want += (double) x[i] * x[i] + (double) gr[i] * gr[i];
  float got;
  lp_ctensor_read (s2->dst[0], 0, &got, sizeof got);
  g_assert_cmpfloat_with_epsilon (got, want, 1e-6 * want);
}

/* ---- models ---- */

/* A small synthetic model with weights large enough that the loss is far
 * from flat (sd 0.3; norms 1 +- 0.3; biases +-0.2): every path carries a
 * gradient of order 1e-2. */
static LpModel *
train_model_sized (LpArch arch, gboolean untied, guint32 seed, gint64 dim, gint64 ffn_dim)
{
  g_autoptr (GError) error = NULL;
  LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
  o.arch = arch;
  o.dim = dim;
  o.ffn_dim = ffn_dim;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.n_vocab = 260;
  o.ctx_len = 64;
  o.seed = seed;
  o.untied = untied;
  g_autoptr (LpModel) m = lp_model_synth (&o, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      gint64 n = lp_tensor_n_elements (t);
      g_autoptr (LpTensor) c = lp_tensor_new (t->name, LP_DTYPE_F32, t->n_dims, t->shape, &error);
      float *d = lp_tensor_data_mut (c);
      lp_test_fill (d, n, seed * 131 + i, t->n_dims == 2 ? 0.5 : 0.3);
      if (g_str_has_suffix (t->name, "norm.weight"))
        for (gint64 e = 0; e < n; e++)
          d[e] += 1.0f;
      lp_model_set_tensor (m, c);
    }
  return g_steal_pointer (&m);
}

static LpModel *
train_model (LpArch arch, gboolean untied, guint32 seed)
{
  return train_model_sized (arch, untied, seed, 16, 24);
}

/* m with element e of tensor `name` moved by delta (a new model). */
static LpModel *
model_moved (LpModel *m, const char *name, gint64 e, double delta)
{
  g_autoptr (GError) error = NULL;
  LpTensor *t = lp_model_tensor (m, name);
  g_autoptr (LpTensor) c = lp_tensor_new (t->name, LP_DTYPE_F32, t->n_dims, t->shape, &error);
  memcpy (lp_tensor_data_mut (c), lp_tensor_data (t), lp_tensor_n_bytes (t));
  ((float *) lp_tensor_data_mut (c))[e] += (float) delta;
  LpModel *out = lp_model_derive (m);
  lp_model_set_tensor (out, c);
  return out;
}

/* ---- the end-to-end loss in double ---- */

typedef struct {
  int T, V;
  const gint32 *tokens, *targets;
  const float *teacher; /* [T, V] */
  double temperature, alpha;
  /* k > 0: the teacher as its top-k at the temperature instead (ids [T, k],
   * log p [T, k], the rest's log p [T]), the loss over the k + 1 buckets. */
  int k;
  const gint32 *ids;
  const float *logp, *rest;
} E2e;

/* log-softmax of x[V] / tau in double. */
static void
log_softmax_d (const float *x, int V, double tau, double *out)
{
  double mx = -INFINITY, s = 0.0;
  for (int i = 0; i < V; i++)
    mx = MAX (mx, x[i] / tau);
  for (int i = 0; i < V; i++)
    s += exp (x[i] / tau - mx);
  for (int i = 0; i < V; i++)
    out[i] = x[i] / tau - mx - log (s);
}

/* alpha mean CE over scored targets + (1 - alpha) mean tau^2 KL over the
 * positions, from the model's logits. */
static double
e2e_loss (LpModel *m, const E2e *c)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_assert_no_error (error);
  g_autofree float *logits = g_new (float, c->T * c->V);
  g_assert_true (lp_forward_logits (fw, c->tokens, c->T, NULL, logits, &error));
  g_assert_no_error (error);
  g_autofree double *ls = g_new (double, c->V), *lt = g_new (double, c->V);
  double ce = 0.0, kl = 0.0;
  int n = 0;
  for (int t = 0; t < c->T; t++)
    {
      const float *row = logits + t * c->V;
      if (c->targets && c->targets[t] >= 0)
        {
          log_softmax_d (row, c->V, 1.0, ls);
          ce -= ls[c->targets[t]];
          n++;
        }
      if (c->k > 0)
        {
          /* The buckets: each id, and every other token together. */
          log_softmax_d (row, c->V, c->temperature, ls);
          double rest = 0.0, k = 0.0;
          for (int i = 0; i < c->V; i++)
            {
              gboolean top = FALSE;
              for (int j = 0; j < c->k; j++)
                top |= c->ids[t * c->k + j] == i;
              rest += top ? 0.0 : exp (ls[i]);
            }
          for (int j = 0; j < c->k; j++)
            {
              double lp = c->logp[t * c->k + j];
              k += exp (lp) * (lp - ls[c->ids[t * c->k + j]]);
            }
          k += exp (c->rest[t]) * (c->rest[t] - log (rest));
          kl += c->temperature * c->temperature * k;
        }
      else if (c->teacher)
        {
          log_softmax_d (row, c->V, c->temperature, ls);
          log_softmax_d (c->teacher + t * c->V, c->V, c->temperature, lt);
          double k = 0.0;
          for (int i = 0; i < c->V; i++)
            k += exp (lt[i]) * (lt[i] - ls[i]);
          kl += c->temperature * c->temperature * k;
        }
    }
  return c->alpha * (n ? ce / n : 0.0) + (1.0 - c->alpha) * kl / c->T;
}

/* The trainer's gradient of tensor `name` against central differences of
 * `loss` at its 3 largest entries and 3 random ones. */
typedef double (*LossFn) (LpModel *m, gconstpointer data);
/* m with element e of what tensor `name` trains moved by delta (a new model). */
typedef LpModel *(*MoveFn) (LpModel *m, const char *name, gint64 e, double delta);

static void
check_fd_moved (LpModel *m, const char *name, gint64 n, const float *grad, MoveFn move, LossFn loss,
                gconstpointer data)
{
  gint64 pick[6];
  double gmax = 0.0;
  for (int k = 0; k < 3; k++)
    {
      pick[k] = -1;
      for (gint64 e = 0; e < n; e++)
        {
          gboolean taken = FALSE;
          for (int j = 0; j < k; j++)
            taken |= pick[j] == e;
          if (!taken && (pick[k] < 0 || fabsf (grad[e]) > fabsf (grad[pick[k]])))
            pick[k] = e;
        }
    }
  gmax = fabsf (grad[pick[0]]);
  g_assert_cmpfloat (gmax, >, 1e-4); /* the check can fail */
  g_autoptr (GRand) r = g_rand_new_with_seed (n);
  for (int k = 3; k < 6; k++)
    pick[k] = g_rand_int_range (r, 0, (gint32) n);
  double worst = 0.0;
  for (int k = 0; k < 6; k++)
    {
      g_autoptr (LpModel) up = move (m, name, pick[k], FD_H), dn = move (m, name, pick[k], -FD_H);
      double fd = (loss (up, data) - loss (dn, data)) / (2 * FD_H);
      double err = fabs (fd - grad[pick[k]]);
      worst = MAX (worst, err);
      if (err > FD_TOL * gmax + FD_ABS)
        g_error ("%s[%" G_GINT64_FORMAT "]: gradient %.6g, finite differences %.6g (largest %.3g)", name, pick[k],
                 grad[pick[k]], fd, gmax);
    }
  g_test_message ("%s: largest gradient %.3g, worst |fd - g| %.3g", name, gmax, worst);
}

/* The same for a tensor's own values. */
static void
check_fd (LpModel *m, const char *name, const float *grad, LossFn loss, gconstpointer data)
{
  check_fd_moved (m, name, lp_tensor_n_elements (lp_model_tensor (m, name)), grad, model_moved, loss, data);
}

static double
e2e_loss_fn (LpModel *m, gconstpointer data)
{
  return e2e_loss (m, data);
}

/* The case's teacher as the trainer takes it: its logits, or its top-k. */
static LpTeacherLogits
e2e_teacher (const E2e *c)
{
  if (c->k > 0)
    return (LpTeacherLogits) { .k = c->k, .topk_ids = c->ids, .topk_logp = c->logp, .rest_logp = c->rest };
  return (LpTeacherLogits) { .logits = c->teacher };
}

/* Every tensor's accumulated gradient in tr against finite differences of c's loss. */
static void
check_e2e_fd_all (LpTrainer *tr, LpModel *m, const E2e *c)
{
  g_autoptr (GError) error = NULL;
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const char *name = lp_model_tensor_at (m, i)->name;
      g_autofree float *grad = g_new (float, lp_tensor_n_elements (lp_model_tensor_at (m, i)));
      g_assert_true (lp_trainer_grad (tr, name, 0, grad, &error));
      g_assert_no_error (error);
      check_fd (m, name, grad, e2e_loss_fn, c);
    }
}

/* Tokens, next-token targets (the last not scored), a random teacher. */
static E2e
e2e_case (int T, int V, gint32 *tokens, gint32 *targets, float *teacher, guint32 seed)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  for (int t = 0; t <= T; t++)
    {
      gint32 id = g_rand_int_range (r, 0, V);
      if (t < T)
        tokens[t] = id;
      if (t > 0)
        targets[t - 1] = t == T ? -1 : id;
    }
  lp_test_fill (teacher, (gsize) T * V, seed + 1, 3.0);
  return (E2e) { .T = T, .V = V, .tokens = tokens, .targets = targets, .teacher = teacher, .temperature = 2.0,
                 .alpha = 0.4 };
}

/* Every weight of the model trains (the embedding, the norms, each linear,
 * the head); each tensor's accumulated gradient against finite
 * differences.  Accumulated twice at weight 0.5: the sum is the gradient. */
static void
check_e2e_grad (LpArch arch, gboolean untied)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (arch, untied, 3);
  const int T = 7, V = (int) lp_model_config (m)->n_vocab;
  gint32 tokens[7], targets[7];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 11);
  g_autoptr (LpTensorPattern) all = lp_tensor_pattern_new ("*");
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = all;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  LpTeacherLogits tl = { .logits = teacher };
  LpTrainLoss loss;
  for (int k = 0; k < 2; k++)
    {
      g_assert_true (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &tl, c.temperature, c.alpha, 0.5, &loss, &error));
      g_assert_no_error (error);
    }
  /* The loss it reports is the forward pass's. */
  double want = e2e_loss (m, &c);
  g_assert_cmpfloat (fabs (loss.loss - want), <, 1e-5 * want);
  g_assert_cmpint (loss.n_tokens, ==, T);
  g_assert_cmpint (lp_trainer_n_tensors (tr), ==, (int) lp_model_n_tensors (m));
  g_assert_cmpint (lp_trainer_n_params (tr), ==, lp_model_n_params (m));
  check_e2e_fd_all (tr, m, &c);
}

/* An offline teacher (its top 16 of 260 at temperature 2, as distill.teacher
 * keeps it): every tensor's gradient against finite differences of the
 * loss over the buckets; with k = V - 1 the buckets are the tokens and the
 * loss is the full teacher's; ids repeated in a position are refused. */
static void
test_e2e_grad_topk (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, TRUE, 4);
  enum { T = 7, K = 16 };
  const int V = (int) lp_model_config (m)->n_vocab;
  gint32 tokens[T], targets[T], ids[T * K];
  float logp[T * K], rest[T];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 13);
  lp_logits_topk (teacher, T, V, K, c.temperature, ids, logp, rest);
  c.k = K, c.ids = ids, c.logp = logp, c.rest = rest;
  g_autoptr (LpTensorPattern) all = lp_tensor_pattern_new ("*");
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = all;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  LpTeacherLogits tl = e2e_teacher (&c);
  LpTrainLoss loss;
  g_assert_true (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &tl, c.temperature, c.alpha, 1.0, &loss, &error));
  g_assert_no_error (error);
  double want = e2e_loss (m, &c);
  g_assert_cmpfloat (fabs (loss.loss - want), <, 1e-5 * want);
  check_e2e_fd_all (tr, m, &c);

  /* k = V - 1: the full teacher's loss. */
  g_autofree gint32 *all_ids = g_new (gint32, T * (V - 1));
  g_autofree float *all_logp = g_new (float, T * (V - 1));
  lp_logits_topk (teacher, T, V, V - 1, c.temperature, all_ids, all_logp, rest);
  LpTeacherLogits full = { .logits = teacher }, nearly = { .k = V - 1, .topk_ids = all_ids, .topk_logp = all_logp,
                                                           .rest_logp = rest };
  LpTrainLoss lf, ln;
  g_assert_true (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &full, c.temperature, 0.0, 1.0, &lf, &error));
  g_assert_true (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &nearly, c.temperature, 0.0, 1.0, &ln, &error));
  g_assert_no_error (error);
  g_test_message ("KL: full teacher %.7f, top %d of %d %.7f, top %d %.7f", lf.kl, V - 1, V, ln.kl, K, loss.kl);
  g_assert_cmpfloat (fabs (lf.kl - ln.kl), <, 1e-5 * lf.kl);
  g_assert_cmpfloat (loss.kl, <, lf.kl); /* merged buckets: never more */

  /* A position whose ids repeat one. */
  ids[3 * K + 5] = ids[3 * K + 2];
  g_assert_false (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &tl, c.temperature, c.alpha, 1.0, &loss, &error));
  lp_test_assert_error_contains (error, "trainer: teacher top-k: position 3, id 5: expected a token below 260 not already "
                                 "among the position's, found", NULL);
  g_assert_null (strchr (error->message, '\n'));
}

static void
test_e2e_grad_tied (void)
{
  check_e2e_grad (LP_ARCH_LLAMA, FALSE);
}

static void
test_e2e_grad_untied (void)
{
  check_e2e_grad (LP_ARCH_LLAMA, TRUE);
}

static void
test_e2e_grad_bias (void)
{
  check_e2e_grad (LP_ARCH_QWEN2, TRUE);
}


/* End to end with only block 1 trained (layer = 1): the backward stops
 * there, and its gradients are those of the whole model's trainer, bit for
 * bit (the same graphs above it). */
static void
test_e2e_layer (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, FALSE, 23);
  const int T = 7, V = 260;
  gint32 tokens[7], targets[7];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 24);
  LpTeacherLogits tl = { .logits = teacher };
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  g_autoptr (LpTrainer) all = lp_trainer_new (m, NULL, &o, &error);
  o.layer = 1;
  g_autoptr (LpTrainer) one = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_trainer_n_tensors (all), ==, 2 * lp_trainer_n_tensors (one));
  LpTrainer *trs[2] = { all, one };
  for (int k = 0; k < 2; k++)
    g_assert_true (lp_trainer_accumulate_e2e (trs[k], tokens, targets, T, &tl, c.temperature, c.alpha, 1.0, NULL, &error));
  g_assert_no_error (error);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      if (!g_str_has_prefix (t->name, "blk.1."))
        continue;
      gsize bytes = lp_tensor_n_bytes (t);
      g_autofree float *ga = g_malloc (bytes), *g1 = g_malloc (bytes);
      g_assert_true (lp_trainer_grad (all, t->name, 0, ga, &error));
      g_assert_true (lp_trainer_grad (one, t->name, 0, g1, &error));
      g_assert_cmpmem (ga, bytes, g1, bytes);
    }
}

/* ---- block-wise ---- */

typedef struct {
  int layer, T, D;
  const float *x, *y; /* [T, D] */
} BlockCase;

/* mean over tokens of the rows' mean squared error of block(x) against y. */
static double
block_loss_fn (LpModel *m, gconstpointer data)
{
  const BlockCase *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_autofree float *out = g_memdup2 (c->x, (gsize) c->T * c->D * sizeof (float));
  g_assert_true (lp_forward_block (fw, c->layer, out, c->T, NULL, NULL, &error));
  g_assert_no_error (error);
  double s = 0.0;
  for (int e = 0; e < c->T * c->D; e++)
    s += ((double) out[e] - c->y[e]) * ((double) out[e] - c->y[e]);
  return s / (c->T * c->D);
}

/* Block 1's weights (the default choice with layer = 1) against finite
 * differences of the block's MSE; block 0 trains nothing. */
static void
test_block_grad (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_QWEN2, TRUE, 5);
  const int T = 6, D = 16;
  float x[6 * 16], y[6 * 16];
  lp_test_fill (x, T * D, 21, 1.0);
  lp_test_fill (y, T * D, 22, 1.0);
  BlockCase c = { 1, T, D, x, y };
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.layer = 1;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  g_assert_cmpint (lp_trainer_n_tensors (tr), ==, 12); /* 2 norms, 7 matrices, 3 biases */
  LpTrainLoss loss;
  g_assert_true (lp_trainer_accumulate_block (tr, 1, x, y, T, 1.0, &loss, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (fabs (loss.mse - block_loss_fn (m, &c)), <, 1e-6 * loss.mse);
  g_assert_cmpfloat (loss.loss, ==, loss.mse);
  float out[6 * 16];
  g_assert_true (lp_trainer_block (tr, 1, x, out, T, &error));
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const char *name = lp_model_tensor_at (m, i)->name;
      if (!g_str_has_prefix (name, "blk.1."))
        {
          g_assert_null (lp_trainer_weights (tr, name));
          continue;
        }
      g_autofree float *grad = g_new (float, lp_tensor_n_elements (lp_model_tensor_at (m, i)));
      g_assert_true (lp_trainer_grad (tr, name, 0, grad, &error));
      check_fd (m, name, grad, block_loss_fn, &c);
    }
}

/* ---- the step ---- */

static void
read_param (LpTrainer *tr, const char *name, float *out)
{
  LpFormWeights *w = lp_trainer_weights (tr, name);
  g_assert_nonnull (w);
  lp_ctensor_read (w->params[0], 0, out, w->params[0]->n_bytes);
}

/* A few steps of e2e training of everything on a fixed batch: the losses. */
static void
train_steps (LpTrainer *tr, const E2e *c, int steps, double lr, double *losses)
{
  g_autoptr (GError) error = NULL;
  LpTeacherLogits tl = e2e_teacher (c);
  for (int s = 0; s < steps; s++)
    {
      LpTrainLoss loss;
      g_assert_true (lp_trainer_accumulate_e2e (tr, c->tokens, c->targets, c->T, &tl, c->temperature, c->alpha, 1.0,
                                                &loss, &error));
      g_assert_no_error (error);
      double norm = 0.0;
      g_assert_true (lp_trainer_step (tr, lr, 1.0, &norm, &error));
      g_assert_no_error (error);
      g_assert_cmpfloat (norm, >, 0.0);
      if (losses)
        losses[s] = loss.loss;
    }
}

/* Tensor `name` of m with its even elements pruned (the masked form, a
 * mask kept); the masked tensor, borrowed from m. */
static LpTensor *
prune_even (LpModel *m, const char *name)
{
  g_autoptr (GError) error = NULL;
  LpTensor *t = lp_model_tensor (m, name);
  gint64 n = lp_tensor_n_elements (t);
  g_autoptr (LpTensor) c = lp_tensor_new (name, LP_DTYPE_F32, t->n_dims, t->shape, &error);
  float *d = lp_tensor_data_mut (c);
  memcpy (d, lp_tensor_data (t), lp_tensor_n_bytes (t));
  for (gint64 e = 0; e < n; e += 2)
    d[e] = 0.0f;
  g_autoptr (GBytes) mask = lp_mask_from_nonzero (d, n);
  g_autoptr (LpTensor) masked = lp_tensor_with_mask (c, mask, &error);
  g_assert_no_error (error);
  lp_model_set_tensor (m, masked);
  return lp_model_tensor (m, name);
}

/* A pruned linear weight (the masked form) trains with its zeros kept
 * exactly, and comes back masked; the loss goes down. */
static void
test_keep_mask (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, FALSE, 7);
  const char *name = "blk.0.ffn_up.weight";
  LpTensor *masked = prune_even (m, name);
  gint64 n = lp_tensor_n_elements (masked);
  g_autofree float *d = g_memdup2 (lp_tensor_data (masked), lp_tensor_n_bytes (masked));

  const int T = 7, V = 260;
  gint32 tokens[7], targets[7];
  g_autofree float *teacher = g_new (float, T * V);
  E2e ec = e2e_case (T, V, tokens, targets, teacher, 12);
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  g_assert_nonnull (lp_trainer_weights (tr, name)->keep[0]);
  double losses[5];
  train_steps (tr, &ec, 5, 1e-2, losses);
  g_assert_cmpfloat (losses[4], <, losses[0]);
  g_autofree float *p = g_new (float, n);
  read_param (tr, name, p);
  gint64 moved = 0;
  for (gint64 e = 0; e < n; e++)
    {
      if (e % 2 == 0)
        g_assert_cmpfloat (p[e], ==, 0.0f);
      else
        moved += p[e] != d[e];
    }
  g_assert_cmpint (moved, >, n / 4);
  g_autoptr (LpModel) out = lp_trainer_model (tr, TRUE, &error);
  g_assert_no_error (error);
  LpTensor *back = lp_model_tensor (out, name);
  g_assert_nonnull (lp_tensor_mask (back));
  g_assert_cmpfloat (lp_tensor_sparsity (back), ==, 0.5);
  const float *bv = lp_tensor_data (back);
  for (gint64 e = 0; e < n; e += 2)
    g_assert_cmpfloat (bv[e], ==, 0.0f);
  /* The student itself never changed. */
  g_assert_true (lp_model_tensor (m, name) == masked);
  g_assert_cmpmem (lp_tensor_data (masked), lp_tensor_n_bytes (masked), d, n * sizeof (float));
}

/* save_state, two steps, restore_state: the parameters bit for bit as
 * saved; and the step after the restore is the step after the save. */
static void
test_save_restore (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, TRUE, 8);
  const int T = 7, V = 260;
  gint32 tokens[7], targets[7];
  g_autofree float *teacher = g_new (float, T * V);
  E2e ec = e2e_case (T, V, tokens, targets, teacher, 13);
  g_autoptr (LpTensorPattern) all = lp_tensor_pattern_new ("*");
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = all;
  o.weight_decay = 0.01;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  g_assert_false (lp_trainer_restore_state (tr, &error)); /* nothing saved yet */
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
  g_clear_error (&error);
  train_steps (tr, &ec, 1, 1e-2, NULL);
  const char *names[] = { "token_embd.weight", "blk.1.attn_v.weight", "output.weight", "blk.0.ffn_norm.weight" };
  const int N = G_N_ELEMENTS (names);
  float *saved[4], *after[4];
  g_assert_true (lp_trainer_save_state (tr, &error));
  for (int i = 0; i < N; i++)
    {
      saved[i] = g_new (float, lp_tensor_n_elements (lp_model_tensor (m, names[i])));
      read_param (tr, names[i], saved[i]);
    }
  train_steps (tr, &ec, 1, 1e-2, NULL);
  for (int i = 0; i < N; i++)
    {
      after[i] = g_new (float, lp_tensor_n_elements (lp_model_tensor (m, names[i])));
      read_param (tr, names[i], after[i]);
    }
  train_steps (tr, &ec, 1, 1e-2, NULL);
  g_assert_true (lp_trainer_restore_state (tr, &error));
  g_assert_no_error (error);
  for (int i = 0; i < N; i++)
    {
      gsize bytes = lp_tensor_n_elements (lp_model_tensor (m, names[i])) * sizeof (float);
      g_autofree float *now = g_malloc (bytes);
      read_param (tr, names[i], now);
      g_assert_cmpmem (now, bytes, saved[i], bytes);
      g_assert_true (memcmp (after[i], saved[i], bytes) != 0);
    }
  /* Moments and step count came back too: the same step again. */
  train_steps (tr, &ec, 1, 1e-2, NULL);
  for (int i = 0; i < N; i++)
    {
      gsize bytes = lp_tensor_n_elements (lp_model_tensor (m, names[i])) * sizeof (float);
      g_autofree float *now = g_malloc (bytes);
      read_param (tr, names[i], now);
      g_assert_cmpmem (now, bytes, after[i], bytes);
      g_free (saved[i]);
      g_free (after[i]);
    }
}

/* A NaN in the teacher makes the gradient NaN: the step refuses, says so,
 * leaves every weight as it was; the next good batch steps. */
static void
test_nan_step (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, FALSE, 9);
  const int T = 7, V = 260;
  gint32 tokens[7], targets[7];
  g_autofree float *teacher = g_new (float, T * V);
  E2e ec = e2e_case (T, V, tokens, targets, teacher, 14);
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  train_steps (tr, &ec, 1, 1e-2, NULL);
  const char *name = "blk.1.ffn_gate.weight";
  gsize bytes = lp_tensor_n_bytes (lp_model_tensor (m, name));
  g_autofree float *before = g_malloc (bytes), *now = g_malloc (bytes);
  read_param (tr, name, before);
  teacher[3 * V + 5] = NAN;
  LpTeacherLogits tl = { .logits = teacher };
  LpTrainLoss loss;
  g_assert_true (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &tl, 2.0, 0.4, 1.0, &loss, &error));
  g_assert_true (isnan (loss.kl));
  double norm = 0.0;
  g_assert_false (lp_trainer_step (tr, 1e-2, 1.0, &norm, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_FAILED);
  g_assert_false (isfinite (norm));
  g_test_message ("%s", error->message);
  g_assert_null (strchr (error->message, '\n'));
  g_clear_error (&error);
  read_param (tr, name, now);
  g_assert_cmpmem (now, bytes, before, bytes);
  teacher[3 * V + 5] = 0.0f;
  train_steps (tr, &ec, 1, 1e-2, NULL);
  read_param (tr, name, now);
  g_assert_true (memcmp (now, before, bytes) != 0);
}

/* Bad input: one line each. */
static void
test_bad_input (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, FALSE, 10);
  g_autoptr (LpTensorPattern) none = lp_tensor_pattern_new ("blk.*.attn_qq.weight");
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = none;
  g_assert_null (lp_trainer_new (m, NULL, &o, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
  g_test_message ("%s", error->message);
  g_assert_null (strchr (error->message, '\n'));
  g_assert_nonnull (strstr (error->message, "blk.*.attn_qq.weight"));
  g_clear_error (&error);
  o.trainable = NULL;
  o.layer = 5;
  g_assert_null (lp_trainer_new (m, NULL, &o, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
  g_clear_error (&error);
  o.layer = -1;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  gint32 tokens[2] = { 1, 2 };
  /* alpha 0 without a teacher; a token out of the vocabulary. */
  g_assert_false (lp_trainer_accumulate_e2e (tr, tokens, tokens, 2, NULL, 1.0, 0.0, 1.0, NULL, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
  g_clear_error (&error);
  tokens[1] = 999;
  g_assert_false (lp_trainer_accumulate_e2e (tr, tokens, tokens, 2, NULL, 1.0, 1.0, 1.0, NULL, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (lp_trainer_step (tr, -1.0, 0.0, NULL, &error));
  g_assert_error (error, LP_ERROR, LP_ERROR_INVALID);
}

/* ---- quantized weights ---- */

/* t rounded to nearest on a 4-bit asymmetric grid, groups of 16. */
static LpTensor *
rtn_grid (LpTensor *t)
{
  g_autoptr (GError) error = NULL;
  gint64 N = t->shape[0], K = t->shape[1];
  g_autoptr (LpIntGrid) grid = lp_int_grid_new (N, K, 4, 16, FALSE, &error);
  const float *x = lp_tensor_data (t);
  for (gint64 n = 0; n < N; n++)
    for (int g = 0; g < grid->n_groups; g++)
      {
        guint16 *scale = &grid->scales[n * grid->n_groups + g];
        guint8 *zero = &grid->zeros[n * grid->n_groups + g];
        lp_int_fit (x + n * K + g * 16, K, 1, 16, NULL, 4, FALSE, FALSE, scale, zero);
        for (int k = g * 16; k < (g + 1) * 16; k++)
          lp_int_quantize (lp_f16_to_f32 (*scale), *zero, 15, x[n * K + k], &grid->codes[n * K + k]);
      }
  LpTensor *q = lp_tensor_new_int_grid (t->name, 2, t->shape, grid, NULL, &error);
  g_assert_no_error (error);
  return q;
}

/* The two quantized weights of the tests below. */
#define GRID_NAME "blk.0.ffn_gate.weight"
#define Q8_NAME "blk.1.attn_v.weight"

/* A model (D 32, F 64: rows of whole q8_0 blocks) with GRID_NAME rounded
 * onto rtn_grid's grid and Q8_NAME in q8_0 (both returned, borrowed from
 * the model), and a trainer of those two with `o` (its pattern set here). */
static LpTrainer *
quantized_trainer (guint32 seed, LpTrainOptions *o, LpModel **model, LpTensor **grid, LpTensor **q8)
{
  g_autoptr (GError) error = NULL;
  LpModel *m = train_model_sized (LP_ARCH_LLAMA, TRUE, seed, 32, 64);
  g_autoptr (LpTensor) g = rtn_grid (lp_model_tensor (m, GRID_NAME));
  LpTensor *q = NULL;
  g_assert_true (lp_quantize_tensor (lp_model_tensor (m, Q8_NAME), LP_DTYPE_Q8_0, NULL, &q, &error));
  lp_model_set_tensor (m, g);
  lp_model_set_tensor (m, q);
  lp_tensor_unref (q);
  g_autoptr (LpTensorPattern) pat = lp_tensor_pattern_new (GRID_NAME "," Q8_NAME);
  o->trainable = pat;
  LpTrainer *tr = lp_trainer_new (m, NULL, o, &error);
  g_assert_no_error (error);
  o->trainable = NULL;
  *model = m;
  *grid = lp_model_tensor (m, GRID_NAME);
  *q8 = lp_model_tensor (m, Q8_NAME);
  return tr;
}

/* An integer-grid weight and a q8_0 one train (the grid's latent values
 * through the straight-through estimator, or its scales alone): the loss
 * goes down, the grid comes back with the same bits, groups and zeros
 * (and scales, or codes), the q8_0 weight as q8_0. */
static void
check_quantized (LpTrainQuantMode mode)
{
  g_autoptr (GError) error = NULL;
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.quantized = mode;
  g_autoptr (LpModel) m = NULL;
  LpTensor *grid, *q8;
  g_autoptr (LpTrainer) tr = quantized_trainer (19, &o, &m, &grid, &q8);
  const int T = 9, V = 260;
  gint32 tokens[9], targets[9];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 20);
  const char *gname = GRID_NAME, *qname = Q8_NAME;
  double losses[6];
  train_steps (tr, &c, 6, 3e-2, losses);
  g_test_message ("%s: loss %.5f -> %.5f", mode == LP_TRAIN_QUANT_STE ? "ste" : "scales", losses[0], losses[5]);
  g_assert_cmpfloat (losses[5], <, losses[0]);
  g_autoptr (LpModel) out = lp_trainer_model (tr, TRUE, &error);
  g_assert_no_error (error);
  const LpIntGrid *g0 = lp_tensor_int_grid (grid), *g1 = lp_tensor_int_grid (lp_model_tensor (out, gname));
  g_assert_nonnull (g1);
  g_assert_cmpint (g1->bits, ==, 4);
  g_assert_cmpint (g1->group_size, ==, 16);
  gsize nk = (gsize) (g0->rows * g0->cols), ng = (gsize) (g0->rows * g0->n_groups);
  g_assert_cmpmem (g1->zeros, ng, g0->zeros, ng);
  gboolean same_scales = memcmp (g1->scales, g0->scales, ng * 2) == 0, same_codes = memcmp (g1->codes, g0->codes, nk) == 0;
  g_assert_true (mode == LP_TRAIN_QUANT_STE ? same_scales && !same_codes : same_codes && !same_scales);
  LpTensor *q1 = lp_model_tensor (out, qname);
  g_assert_cmpint (q1->dtype, ==, LP_DTYPE_Q8_0);
  g_assert_true (memcmp (lp_tensor_data (q1), lp_tensor_data (q8), lp_tensor_n_bytes (q8)) != 0);
}

static void
test_quantized_ste (void)
{
  check_quantized (LP_TRAIN_QUANT_STE);
}

static void
test_quantized_scales (void)
{
  check_quantized (LP_TRAIN_QUANT_SCALES);
}

/* ---- LoRA ---- */

/* m with element e of adapter `name`'s B moved by delta. */
static LpModel *
lora_b_moved (LpModel *m, const char *name, gint64 e, double delta)
{
  g_autoptr (GError) error = NULL;
  LpTensor *t = lp_model_tensor (m, name);
  g_autoptr (GPtrArray) parts = lp_tensor_save_tensors (t, &error); /* base, lora_a, lora_b */
  g_assert_no_error (error);
  g_assert_cmpuint (parts->len, ==, 3);
  LpTensor *b = parts->pdata[2];
  g_autofree float *bv = lp_tensor_dup_f32 (b, &error);
  bv[e] += (float) delta;
  g_autoptr (LpTensor) nb = lp_tensor_new_f32 (b->name, 2, b->shape, bv, &error);
  g_autoptr (LpTensor) base = lp_tensor_rename (parts->pdata[0], name);
  g_autoptr (LpTensor) moved = lp_tensor_new_adapter (base, parts->pdata[1], nb, 4.0 / 2, &error);
  g_assert_no_error (error);
  LpModel *out = lp_model_derive (m);
  lp_model_set_tensor (out, moved);
  return out;
}

/* Rank-2 adapters over two kinds of linear weight: at the start (B = 0)
 * the model is the student's and A gets no gradient; B's gradient against
 * finite differences; a few steps lower the loss; kept as adapters the
 * trained model computes what the trainer does, merged (f32 base) too. */
static void
test_lora (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = train_model (LP_ARCH_LLAMA, TRUE, 17);
  const int T = 7, V = 260;
  gint32 tokens[7], targets[7];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 18);
  g_autoptr (LpTensorPattern) pat = lp_tensor_pattern_new ("blk.*.attn_q.weight, blk.*.ffn_down.weight, blk.*.attn_norm.weight");
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = pat;
  o.lora_rank = 2;
  o.lora_alpha = 4.0;
  o.seed = 5;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, NULL, &o, &error);
  g_assert_no_error (error);
  /* Norms do not train under LoRA; per layer q: 2 x 16 + 16 x 2, down: 2 x 24 + 16 x 2. */
  g_assert_cmpint (lp_trainer_n_tensors (tr), ==, 4);
  g_assert_cmpint (lp_trainer_n_params (tr), ==, 2 * (64 + 80));
  g_autofree float *l0 = g_new (float, T * V), *l1 = g_new (float, T * V);
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_assert_true (lp_forward_logits (fw, tokens, T, NULL, l0, &error));
  g_assert_true (lp_trainer_logits (tr, tokens, T, l1, &error));
  g_assert_cmpmem (l0, T * V * sizeof (float), l1, T * V * sizeof (float));

  LpTeacherLogits tl = { .logits = teacher };
  g_assert_true (lp_trainer_accumulate_e2e (tr, tokens, targets, T, &tl, c.temperature, c.alpha, 1.0, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) start = lp_trainer_model (tr, FALSE, &error);
  g_assert_no_error (error);
  const char *names[] = { "blk.0.attn_q.weight", "blk.1.ffn_down.weight" };
  for (int k = 0; k < 2; k++)
    {
      LpFormWeights *w = lp_trainer_weights (tr, names[k]);
      g_assert_cmpint (w->n_trainable, ==, 2);
      gint64 na = lp_ctensor_n_elements (w->params[0]), nb = lp_ctensor_n_elements (w->params[1]);
      g_autofree float *ga = g_new (float, na), *gb = g_new (float, nb);
      g_assert_true (lp_trainer_grad (tr, names[k], 0, ga, &error));
      g_assert_true (lp_trainer_grad (tr, names[k], 1, gb, &error));
      for (gint64 e = 0; e < na; e++)
        g_assert_cmpfloat (ga[e], ==, 0.0f);
      check_fd_moved (start, names[k], nb, gb, lora_b_moved, e2e_loss_fn, &c);
    }
  g_assert_true (lp_trainer_step (tr, 1e-2, 0.0, NULL, &error));
  double losses[4];
  train_steps (tr, &c, 4, 1e-2, losses);
  g_assert_cmpfloat (losses[3], <, losses[0]);

  g_assert_true (lp_trainer_logits (tr, tokens, T, l1, &error));
  for (int merge = 0; merge < 2; merge++)
    {
      g_autoptr (LpModel) out = lp_trainer_model (tr, merge, &error);
      g_assert_no_error (error);
      LpTensor *q = lp_model_tensor (out, names[0]);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (q)), ==, merge ? "dense" : "adapter");
      g_assert_true (lp_model_tensor (out, "blk.0.attn_k.weight") == lp_model_tensor (m, "blk.0.attn_k.weight"));
      g_autoptr (LpForward) fo = lp_forward_new (out, NULL, &error);
      g_assert_true (lp_forward_logits (fo, tokens, T, NULL, l0, &error));
      g_assert_no_error (error);
      lp_test_assert_close (l0, l1, T * V, 1e-6);
    }
}

/* QLoRA: adapters over a grid and a q8_0 weight (frozen); merged, each
 * comes back in its base's form (the grid's bits, groups, scales and
 * zeros; q8_0), kept, as adapters over the untouched bases. */
static void
test_lora_quantized (void)
{
  g_autoptr (GError) error = NULL;
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.lora_rank = 4;
  g_autoptr (LpModel) m = NULL;
  LpTensor *grid, *q8;
  g_autoptr (LpTrainer) tr = quantized_trainer (21, &o, &m, &grid, &q8);
  const int T = 9, V = 260;
  gint32 tokens[9], targets[9];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 22);
  const char *gname = GRID_NAME, *qname = Q8_NAME;
  double losses[4];
  train_steps (tr, &c, 4, 1e-2, losses);
  g_assert_cmpfloat (losses[3], <, losses[0]);
  g_autoptr (LpModel) merged = lp_trainer_model (tr, TRUE, &error);
  g_assert_no_error (error);
  const LpIntGrid *g0 = lp_tensor_int_grid (grid), *g1 = lp_tensor_int_grid (lp_model_tensor (merged, gname));
  g_assert_nonnull (g1);
  gsize ng = (gsize) (g0->rows * g0->n_groups);
  g_assert_cmpmem (g1->scales, ng * 2, g0->scales, ng * 2);
  g_assert_true (memcmp (g1->codes, g0->codes, (gsize) (g0->rows * g0->cols)) != 0);
  g_assert_cmpint (lp_model_tensor (merged, qname)->dtype, ==, LP_DTYPE_Q8_0);
  g_autoptr (LpModel) kept = lp_trainer_model (tr, FALSE, &error);
  g_assert_no_error (error);
  for (int k = 0; k < 2; k++)
    {
      LpTensor *a = lp_model_tensor (kept, k ? qname : gname);
      g_assert_cmpstr (lp_form_name (lp_tensor_form (a)), ==, "adapter");
      g_assert_true (lp_tensor_is_quantized (a));
    }
}

/* ---- on the Vulkan device ---- */

/* A trainer of every weight on `be`: one accumulation's gradients of each
 * tensor, then the losses of 3 steps and the parameters they leave. */
typedef struct {
  float *grad[32], *param[32];
  double losses[3];
} RunResult;

static void
vk_run (LpBackend *be, LpModel *m, const E2e *c, RunResult *out)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensorPattern) all = lp_tensor_pattern_new ("*");
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = all;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, be, &o, &error);
  g_assert_no_error (error);
  LpTeacherLogits tl = e2e_teacher (c);
  g_assert_true (lp_trainer_accumulate_e2e (tr, c->tokens, c->targets, c->T, &tl, c->temperature, c->alpha, 1.0, NULL,
                                            &error));
  g_assert_no_error (error);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      out->grad[i] = g_new (float, lp_tensor_n_elements (t));
      g_assert_true (lp_trainer_grad (tr, t->name, 0, out->grad[i], &error));
    }
  g_assert_true (lp_trainer_step (tr, 1e-2, 0.0, NULL, &error));
  g_assert_no_error (error);
  train_steps (tr, c, 3, 1e-2, out->losses);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      out->param[i] = g_new (float, lp_tensor_n_elements (t));
      read_param (tr, t->name, out->param[i]);
    }
}

/* The same training on the device and on the CPU (one weight pruned: its
 * zeros stay exactly 0 there too), with the teacher's logits and with its
 * top 16 (kl_topk): gradients within 1e-4
 * (relative Frobenius: each block's f32 sums in another order, through
 * two blocks and the head), losses within 1e-5 relative, and after 4 AdamW
 * steps of 1e-2 the parameters within 1e-4 relative (Adam's step is m /
 * sqrt (v): a gradient's rounding moves it by far less than lr). */
static void
test_vulkan_train (void)
{
  if (!lp_test_have_vulkan ())
    return;
  g_autoptr (GError) error = NULL;
  g_setenv ("LLMPRESS_VULKAN_VALIDATION", "1", TRUE);
  g_autoptr (LpBackend) vk = lp_backend_new ("vulkan", &error);
  if (vk == NULL && g_error_matches (error, LP_ERROR, LP_ERROR_MISSING))
    {
      g_test_skip (error->message); /* the validation layer is not installed */
      return;
    }
  g_assert_no_error (error);
  g_autoptr (LpModel) m = train_model (LP_ARCH_QWEN2, TRUE, 15);
  LpTensor *masked = prune_even (m, "blk.1.ffn_up.weight"); /* its keep-mask on the device */
  const int T = 9, V = 260;
  gint32 tokens[9], targets[9];
  g_autofree float *teacher = g_new (float, T * V);
  E2e c = e2e_case (T, V, tokens, targets, teacher, 16);
  enum { K = 16 };
  gint32 ids[9 * K];
  float logp[9 * K], rest[9];
  lp_logits_topk (teacher, T, V, K, c.temperature, ids, logp, rest);
  for (int topk = 0; topk < 2; topk++)
    {
      if (topk)
        c.k = K, c.ids = ids, c.logp = logp, c.rest = rest;
      RunResult rv = { 0 }, rc = { 0 };
      vk_run (vk, m, &c, &rv);
      vk_run (NULL, m, &c, &rc);
      for (guint i = 0; i < lp_model_n_tensors (m); i++)
        {
          gint64 n = lp_tensor_n_elements (lp_model_tensor_at (m, i));
          if (lp_model_tensor_at (m, i) == masked)
            for (gint64 e = 0; e < n; e += 2)
              g_assert_cmpfloat (rv.param[i][e], ==, 0.0f);
          lp_test_assert_close (rv.grad[i], rc.grad[i], n, 1e-4);
          lp_test_assert_close (rv.param[i], rc.param[i], n, 1e-4);
          g_free (rv.grad[i]);
          g_free (rc.grad[i]);
          g_free (rv.param[i]);
          g_free (rc.param[i]);
        }
      for (int s = 0; s < 3; s++)
        g_assert_cmpfloat (fabs (rv.losses[s] - rc.losses[s]), <=, 1e-5 * rc.losses[s]);
      g_test_message ("%s: losses on %s: %.7f %.7f %.7f; on the CPU %.7f %.7f %.7f",
                      topk ? "the teacher's top 16" : "the teacher's logits", vk->device_name, rv.losses[0],
                      rv.losses[1], rv.losses[2], rc.losses[0], rc.losses[1], rc.losses[2]);
    }
}

/* ---- stories260K ---- */

static int
cmp_float (gconstpointer a, gconstpointer b)
{
  float x = *(const float *) a, y = *(const float *) b;
  return (x > y) - (x < y);
}

/* Mean KL (teacher || student) over windows of T tokens, in double. */
static double
heldout_kl (LpTrainer *tr, const gint32 *windows, int n, int T, const float *teacher, int V)
{
  g_autoptr (GError) error = NULL;
  g_autofree float *logits = g_new (float, (gsize) T * V);
  g_autofree double *ls = g_new (double, V), *lt = g_new (double, V);
  double kl = 0.0;
  for (int w = 0; w < n; w++)
    {
      g_assert_true (lp_trainer_logits (tr, windows + w * T, T, logits, &error));
      g_assert_no_error (error);
      for (int t = 0; t < T; t++)
        {
          log_softmax_d (logits + (gsize) t * V, V, 1.0, ls);
          log_softmax_d (teacher + ((gsize) w * T + t) * V, V, 1.0, lt);
          for (int i = 0; i < V; i++)
            kl += exp (lt[i]) * (lt[i] - ls[i]);
        }
    }
  return kl / (n * T);
}

/* The real model: its block matrices pruned to 50% by magnitude (each
 * tensor's smallest), then 20 steps of end-to-end KL distillation from the
 * dense model (self-distillation) on training windows from token 300000
 * on: the KL on held-out windows (from the first 300000) goes down, and
 * every pruned weight is still 0. */
static void
test_stories_distill (void)
{
  g_autofree char *mp = lp_test_shared_path ("models/stories260K/stories260K-f32.gguf");
  g_autofree char *dp = mp ? lp_test_shared_path ("data/tinystories-valid-head.tok512.u16") : NULL;
  if (dp == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) dense = lp_model_load (mp, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) toks = lp_tokens_load (dp, dense, &error);
  g_assert_no_error (error);
  const LpModelConfig *cfg = lp_model_config (dense);
  const int T = 128, V = (int) cfg->n_vocab, n_train = 20, n_held = 2;
  const gint32 bos = 1; /* tok512's <s> */

  g_autoptr (LpModel) student = lp_model_derive (dense);
  for (guint i = 0; i < lp_model_n_tensors (dense); i++)
    {
      LpTensor *t = lp_model_tensor_at (dense, i);
      if (!g_str_has_prefix (t->name, "blk.") || t->n_dims != 2)
        continue;
      gint64 n = lp_tensor_n_elements (t);
      g_autofree float *v = lp_tensor_dup_f32 (t, &error), *mag = g_new (float, n);
      for (gint64 e = 0; e < n; e++)
        mag[e] = fabsf (v[e]);
      qsort (mag, n, sizeof (float), cmp_float);
      for (gint64 e = 0; e < n; e++)
        if (fabsf (v[e]) <= mag[n / 2 - 1])
          v[e] = 0.0f;
      g_autoptr (LpTensor) p = lp_tensor_new_f32 (t->name, t->n_dims, t->shape, v, &error);
      g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, n);
      g_autoptr (LpTensor) masked = lp_tensor_with_mask (p, mask, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (student, masked);
    }

  /* Windows and the teacher's logits for them. */
  g_autofree gint32 *train = g_new (gint32, n_train * T), *held = g_new (gint32, n_held * T);
  for (int w = 0; w < n_train; w++)
    lp_tokens_window ((gint32 *) toks->data, 300000 + (gsize) w * T, T, bos, train + w * T);
  for (int w = 0; w < n_held; w++)
    lp_tokens_window ((gint32 *) toks->data, (gsize) w * T, T, bos, held + w * T);
  g_autoptr (LpForward) tf = lp_forward_new (dense, NULL, &error);
  g_autofree float *t_train = g_new (float, (gsize) n_train * T * V), *t_held = g_new (float, (gsize) n_held * T * V);
  for (int w = 0; w < n_train; w++)
    g_assert_true (lp_forward_logits (tf, train + w * T, T, NULL, t_train + (gsize) w * T * V, &error));
  for (int w = 0; w < n_held; w++)
    g_assert_true (lp_forward_logits (tf, held + w * T, T, NULL, t_held + (gsize) w * T * V, &error));
  g_assert_no_error (error);

  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  g_autoptr (LpTrainer) tr = lp_trainer_new (student, NULL, &o, &error);
  g_assert_no_error (error);
  double before = heldout_kl (tr, held, n_held, T, t_held, V), first = 0.0, last = 0.0;
  for (int s = 0; s < n_train; s++)
    {
      LpTeacherLogits tl = { .logits = t_train + (gsize) s * T * V };
      LpTrainLoss loss;
      g_assert_true (lp_trainer_accumulate_e2e (tr, train + s * T, NULL, T, &tl, 1.0, 0.0, 1.0, &loss, &error));
      g_assert_no_error (error);
      g_assert_true (lp_trainer_step (tr, 2e-3, 1.0, NULL, &error));
      g_assert_no_error (error);
      if (s == 0)
        first = loss.kl;
      last = loss.kl;
    }
  double after = heldout_kl (tr, held, n_held, T, t_held, V);
  g_test_message ("stories260K pruned 50%%: held-out KL %.5f -> %.5f after %d steps (training KL %.5f -> %.5f)", before,
                  after, n_train, first, last);
  g_assert_cmpfloat (after, <, 0.9 * before);
  g_autoptr (LpModel) out = lp_trainer_model (tr, TRUE, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < lp_model_n_tensors (out); i++)
    {
      LpTensor *t = lp_model_tensor_at (out, i);
      GBytes *mask = lp_tensor_mask (lp_model_tensor (student, t->name));
      if (mask == NULL)
        continue;
      g_assert_nonnull (lp_tensor_mask (t));
      const float *v = lp_tensor_data (t);
      for (gint64 e = 0; e < lp_tensor_n_elements (t); e++)
        if (!lp_tensor_mask_keeps (t, e))
          g_assert_cmpfloat (v[e], ==, 0.0f);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/train/adamw-op", test_adamw_op);
  g_test_add_func ("/train/optim-kernels", test_optim_kernels);
  g_test_add_func ("/train/e2e-grad/tied", test_e2e_grad_tied);
  g_test_add_func ("/train/e2e-grad/untied", test_e2e_grad_untied);
  g_test_add_func ("/train/e2e-grad/qkv-bias", test_e2e_grad_bias);
  g_test_add_func ("/train/e2e-grad/teacher-topk", test_e2e_grad_topk);
  g_test_add_func ("/train/e2e-layer", test_e2e_layer);
  g_test_add_func ("/train/block-grad", test_block_grad);
  g_test_add_func ("/train/keep-mask", test_keep_mask);
  g_test_add_func ("/train/save-restore", test_save_restore);
  g_test_add_func ("/train/nan-step", test_nan_step);
  g_test_add_func ("/train/bad-input", test_bad_input);
  g_test_add_func ("/train/quantized/ste", test_quantized_ste);
  g_test_add_func ("/train/quantized/scales", test_quantized_scales);
  g_test_add_func ("/train/lora", test_lora);
  g_test_add_func ("/train/lora-quantized", test_lora_quantized);
  g_test_add_func ("/train/vulkan", test_vulkan_train);
  g_test_add_func ("/train/stories260K-distill", test_stories_distill);
  return g_test_run ();
}
