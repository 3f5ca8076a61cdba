/* bench-vulkan, part 4: a whole model's tokens/s on the CPU and on the
 * device, stories260K when ../shared has it (LLMPRESS_SHARED_DIR), else a
 * synthetic model of the same shape:
 *   forward            lp_forward_logits on one window (the forward pass
 *                      evaluation runs: a graph a block, weights resident);
 *   forward+backward   one graph of the whole model with its cross-entropy
 *                      loss and every weight trainable, differentiated by
 *                      lp_cgraph_backward (a training step's work, less the
 *                      update): on the device one submission;
 *   train step         the trainer (train.h) on every block weight:
 *                      lp_trainer_accumulate_e2e (cross-entropy and KL
 *                      against the model's own logits, alpha 0.5: a graph
 *                      a block forward, then a graph a block recomputed and
 *                      differentiated) and lp_trainer_step (AdamW).
 * Median of 3 runs after a warm-up (pipelines compiled, weights uploaded). */
#include "config.h"

#include <stdio.h>

#include <llmpress/llmpress.h>
#include <llmpress/compute.h>

#include "benchutil.h"

#define REPS 3

/* The model's weights on one backend, uploaded once (f32: what the
 * backward ops train). */
typedef struct {
  LpBackend *be;
  LpModel *m;
  LpModelConfig c;
  GHashTable *w; /* name -> LpCTensor */
  LpCTensor *inv_freq;
} Weights;

static LpCTensor *
weight (Weights *ws, const char *name)
{
  LpCTensor *t = g_hash_table_lookup (ws->w, name);
  if (t != NULL)
    return t;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) f32 = lp_tensor_convert (lp_model_tensor (ws->m, name), LP_DTYPE_F32, &error);
  if (f32 != NULL)
    t = lp_ctensor_from_tensor (ws->be, f32, &error);
  if (t == NULL)
    g_error ("%s: %s", name, error->message);
  lp_ctensor_set_trainable (t, TRUE);
  g_hash_table_insert (ws->w, g_strdup (name), t);
  return t;
}

static void
weights_init (Weights *ws, LpBackend *be, LpModel *m)
{
  ws->be = be;
  ws->m = m;
  ws->c = *lp_model_config (m);
  ws->w = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) lp_ctensor_free);
  g_autoptr (GError) error = NULL;
  g_autofree float *freq = lp_rope_inv_freq (m, &error);
  gint64 half = ws->c.head_dim / 2;
  ws->inv_freq = freq ? lp_ctensor_new (be, LP_DTYPE_F32, 1, &half, "inv_freq", &error) : NULL;
  if (ws->inv_freq == NULL)
    g_error ("%s", error->message);
  lp_ctensor_write (ws->inv_freq, 0, freq, ws->inv_freq->n_bytes);
}

static void
weights_clear (Weights *ws)
{
  g_hash_table_unref (ws->w);
  lp_ctensor_free (ws->inv_freq);
}

/* One node's result (the graph allocates it). */
static LpCTensor *
op (LpCGraph *g, LpCOp o, LpCTensor *a, LpCTensor *b, LpCTensor *c, LpCNode **node)
{
  LpCTensor *src[3] = { a, b, c };
  g_autoptr (GError) error = NULL;
  LpCNode *n = lp_cgraph_add (g, o, src, c ? 3 : b ? 2 : 1, NULL, 0, &error);
  if (n == NULL)
    g_error ("%s", error->message);
  if (node)
    *node = n;
  return n->dst[0];
}

static LpCTensor *
layer_weight (Weights *ws, int layer, const char *what)
{
  g_autofree char *name = g_strdup_printf ("blk.%d.%s", layer, what);
  return weight (ws, name);
}

static LpCTensor *
norm (LpCGraph *g, Weights *ws, LpCTensor *x, LpCTensor *w)
{
  LpCNode *n;
  LpCTensor *y = op (g, LP_COP_RMSNORM, x, w, NULL, &n);
  n->f[0] = (float) ws->c.norm_eps;
  return y;
}

static LpCTensor *
rope (LpCGraph *g, Weights *ws, LpCTensor *x, gint64 heads)
{
  LpCNode *n;
  LpCTensor *y = op (g, LP_COP_ROPE, x, ws->inv_freq, NULL, &n);
  n->i[0] = lp_arch_info (ws->c.arch)->rope_style;
  n->i[1] = heads, n->i[2] = ws->c.head_dim, n->i[3] = 0;
  return y;
}

/* The model's loss over T tokens predicting the next ones, as one graph,
 * then its backward: every weight's gradient. */
static void
train_step (Weights *ws, LpCTensor *ids, LpCTensor *targets, LpCTensor *dy)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCGraph) g = lp_cgraph_new (ws->be);
  const LpModelConfig *c = &ws->c;
  LpCTensor *x = op (g, LP_COP_EMBED, weight (ws, "token_embd.weight"), ids, NULL, NULL);
  for (int l = 0; l < c->n_layers; l++)
    {
      LpCTensor *h = norm (g, ws, x, layer_weight (ws, l, "attn_norm.weight"));
      LpCTensor *q = rope (g, ws, op (g, LP_COP_MATMUL, h, layer_weight (ws, l, "attn_q.weight"), NULL, NULL), c->n_heads);
      LpCTensor *k = rope (g, ws, op (g, LP_COP_MATMUL, h, layer_weight (ws, l, "attn_k.weight"), NULL, NULL),
                           c->n_kv_heads);
      LpCTensor *v = op (g, LP_COP_MATMUL, h, layer_weight (ws, l, "attn_v.weight"), NULL, NULL);
      LpCNode *att;
      LpCTensor *a = op (g, LP_COP_ATTENTION, q, k, v, &att);
      att->i[0] = c->n_heads, att->i[1] = c->n_kv_heads, att->i[2] = c->head_dim;
      x = op (g, LP_COP_MATMUL, a, layer_weight (ws, l, "attn_output.weight"), x, NULL);
      h = norm (g, ws, x, layer_weight (ws, l, "ffn_norm.weight"));
      LpCTensor *gate = op (g, LP_COP_MATMUL, h, layer_weight (ws, l, "ffn_gate.weight"), NULL, NULL);
      LpCTensor *up = op (g, LP_COP_MATMUL, h, layer_weight (ws, l, "ffn_up.weight"), NULL, NULL);
      LpCTensor *s = op (g, LP_COP_SWIGLU, gate, up, NULL, NULL);
      x = op (g, LP_COP_MATMUL, s, layer_weight (ws, l, "ffn_down.weight"), x, NULL);
    }
  LpCTensor *h = norm (g, ws, x, weight (ws, "output_norm.weight"));
  LpCTensor *head = weight (ws, c->tied_embeddings ? "token_embd.weight" : "output.weight");
  LpCTensor *loss = op (g, LP_COP_CROSS_ENTROPY, op (g, LP_COP_MATMUL, h, head, NULL, NULL), targets, NULL, NULL);
  if (!lp_cgraph_backward (g, loss, dy, &error) || !lp_cgraph_compute (g, &error))
    g_error ("forward+backward: %s", error->message);
}

static LpCTensor *
ids_tensor (LpBackend *be, const gint32 *ids, int T)
{
  gint64 shape = T;
  LpCTensor *t = lp_ctensor_new (be, LP_DTYPE_I32, 1, &shape, "ids", NULL);
  lp_ctensor_write (t, 0, ids, (gsize) T * sizeof (gint32));
  return t;
}

/* Median tokens/s of the forward pass (logits of T tokens). */
static double
forward_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpForward) fw = lp_forward_new (m, be, &error);
  g_autofree float *logits = g_new (float, (gsize) T * lp_model_config (m)->n_vocab);
  double t[REPS];
  for (int r = -1; r < REPS; r++)
    {
      double t0 = now ();
      if (fw == NULL || !lp_forward_logits (fw, toks, T, NULL, logits, &error))
        g_error ("forward: %s", error->message);
      if (r >= 0)
        t[r] = now () - t0;
    }
  return T / median (t, REPS);
}

/* Median tokens/s of forward+backward (train_step) over T tokens. */
static double
train_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T)
{
  Weights ws;
  weights_init (&ws, be, m);
  g_autofree float *ones = g_new (float, T);
  for (int t = 0; t < T; t++)
    ones[t] = 1.0f / T; /* the mean loss */
  gint64 shape = T;
  g_autoptr (LpCTensor) ids = ids_tensor (be, toks, T), targets = ids_tensor (be, toks + 1, T);
  g_autoptr (LpCTensor) dy = lp_ctensor_new (be, LP_DTYPE_F32, 1, &shape, "dloss", NULL);
  lp_ctensor_write (dy, 0, ones, (gsize) T * sizeof (float));
  double t[REPS];
  for (int r = -1; r < REPS; r++)
    {
      double t0 = now ();
      train_step (&ws, ids, targets, dy);
      if (r >= 0)
        t[r] = now () - t0;
    }
  weights_clear (&ws);
  return T / median (t, REPS);
}

/* Median tokens/s of the trainer's step (accumulate_e2e + AdamW) over T tokens. */
static double
trainer_tps (LpBackend *be, LpModel *m, const gint32 *toks, int T)
{
  g_autoptr (GError) error = NULL;
  gint64 V = lp_model_config (m)->n_vocab;
  g_autofree float *teacher = g_new (float, (gsize) T * V);
  g_autoptr (LpForward) fw = lp_forward_new (m, be, &error);
  if (fw == NULL || !lp_forward_logits (fw, toks, T, NULL, teacher, &error))
    g_error ("teacher: %s", error->message);
  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  g_autoptr (LpTrainer) tr = lp_trainer_new (m, be, &o, &error);
  if (tr == NULL)
    g_error ("trainer: %s", error->message);
  LpTeacherLogits tl = { .logits = teacher };
  double t[REPS];
  for (int r = -1; r < REPS; r++)
    {
      double t0 = now ();
      if (!lp_trainer_accumulate_e2e (tr, toks, toks + 1, T, &tl, 1.0, 0.5, 1.0, NULL, &error)
          || !lp_trainer_step (tr, 1e-4, 1.0, NULL, &error))
        g_error ("train step: %s", error->message);
      if (r >= 0)
        t[r] = now () - t0;
    }
  return T / median (t, REPS);
}

typedef double (*TokensPerS) (LpBackend *be, LpModel *m, const gint32 *toks, int T);

/* One line: the pass's tokens/s on the CPU and on the device. */
static void
print_row (const char *label, TokensPerS tps, LpBackend *cpu, LpBackend *vk, LpModel *m, const gint32 *toks, int T)
{
  printf ("%-24s %12.0f", label, tps (cpu, m, toks, T));
  fflush (stdout);
  if (vk != NULL)
    printf (" %12.0f\n", tps (vk, m, toks, T));
  else
    printf (" %12s\n", "-");
  fflush (stdout);
}

void
bench_model (LpBackend *cpu, LpBackend *vk)
{
  g_autoptr (GError) error = NULL;
  const char *dir = g_getenv ("LLMPRESS_SHARED_DIR");
  g_autofree char *path = g_build_filename (dir && *dir ? dir : "../shared", "models", "stories260K",
                                            "stories260K-f32.gguf", NULL);
  g_autoptr (LpModel) m = NULL;
  const char *what = "stories260K";
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    m = lp_model_load (path, NULL, &error);
  if (m == NULL)
    {
      LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
      o.n_layers = 5;
      m = lp_model_synth (&o, &error);
      what = "synthetic (stories260K's shape; no ../shared)";
    }
  if (m == NULL)
    g_error ("%s", error->message);
  const int T = 512;
  const LpModelConfig *c = lp_model_config (m);
  g_autofree gint32 *toks = g_new (gint32, T + 1);
  for (int i = 0; i <= T; i++)
    toks[i] = (gint32) ((i * 37 + 11) % c->n_vocab);
  printf ("\nmodel: %s, D %" G_GINT64_FORMAT ", L %" G_GINT64_FORMAT ", %d tokens a window\n", what, c->dim,
          c->n_layers, T);
  printf ("%-24s %12s %12s   (tokens/s)\n", "pass", "CPU", "Vulkan");
  print_row ("forward", forward_tps, cpu, vk, m, toks, T);
  print_row ("forward+backward", train_tps, cpu, vk, m, toks, T);
  print_row ("train step", trainer_tps, cpu, vk, m, toks, T);
}
