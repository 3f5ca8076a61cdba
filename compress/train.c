/* llmpress — the trainer (train.h): gradients by back-propagating the
 * forward pass's own graphs, accumulated on the backend, and AdamW as a
 * backend op.
 *
 * The trainer holds an LpForward over a derived copy of the student (LoRA
 * adapters in place of the weights they wrap); the tensors it trains are
 * uploaded trainable into the forward pass's own slots
 * (lp_forward_weight_train), so every graph the forward pass records reads
 * the current parameters, and lp_trainer_logits / lp_trainer_block are the
 * forward pass itself.
 *
 * End to end (accumulate_e2e): one forward graph a stage, each block's
 * input residual kept [T, D]; the head graph (final norm, head, the losses)
 * differentiated down to the last residual; then block by block from the
 * last, a graph that recomputes the block from its saved input and is
 * differentiated with dy = the gradient from the graph above (activation
 * recomputation: one block's activations at a time); last the embedding
 * lookup when the table trains.  Each graph adds its parameters' gradients
 * into their accumulators with ADD nodes of its own, so gradients never
 * leave the backend.
 *
 * This file sits in compress/ because rebuilding a block-type tensor after
 * training calls the quantizer (quant.c). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"

#include "compute-internal.h"
#include "forward-internal.h"
#include "train-internal.h"

/* One trainable parameter of a trained tensor's form. */
typedef struct {
  LpCTensor *p;          /* borrowed: the form's parameter (f32) */
  LpCTensor *keep;       /* borrowed: its keep-mask, or NULL */
  LpCTensor *grad, *m, *v; /* owned, f32 of p's shape: the accumulated gradient, AdamW's moments */
  LpCTensor *saved[3];   /* owned snapshots of p, m, v (save_state), or NULL */
} TrainParam;

/* One tensor trained. */
typedef struct {
  char *name;
  LpFormWeights *w;      /* borrowed: the forward pass's slot holds it */
  int layer;             /* its block, or -1 (embedding, final norm, head) */
  gboolean lora;         /* an adapter the trainer put over the student's weight */
} TrainTensor;

struct _LpTrainer {
  LpModel *student;      /* ref */
  LpModel *model;        /* derived from student: adapters over the LoRA weights */
  LpForward *fw;
  LpBackend *be;         /* fw's (borrowed) */
  LpModelConfig c;
  LpTrainOptions opt;
  GPtrArray *tensors;    /* TrainTensor * */
  GArray *params;        /* TrainParam */
  int lowest;            /* the lowest block with trained tensors (n_layers: none) */
  gboolean embed_trains; /* the lookup's table is a trained parameter */
  gint64 step;           /* AdamW steps taken (bias correction) */
  gint64 saved_step;
  gboolean saved;
  LpCTensor **resid;     /* [n_layers + 1]: each block's input residual [T, D], then the head's */
  int resid_T;
};

/* ---- setup ---- */

static void
train_tensor_free (gpointer p)
{
  TrainTensor *tt = p;
  g_free (tt->name);
  g_free (tt);
}

static void
params_clear (LpTrainer *tr)
{
  for (guint i = 0; i < tr->params->len; i++)
    {
      TrainParam *tp = &g_array_index (tr->params, TrainParam, i);
      lp_ctensor_free (tp->grad);
      lp_ctensor_free (tp->m);
      lp_ctensor_free (tp->v);
      for (int k = 0; k < 3; k++)
        lp_ctensor_free (tp->saved[k]);
    }
  g_array_set_size (tr->params, 0);
}

static void
resid_clear (LpTrainer *tr)
{
  if (tr->resid == NULL)
    return;
  for (int l = 0; l <= tr->c.n_layers; l++)
    lp_ctensor_free (tr->resid[l]);
  g_clear_pointer (&tr->resid, g_free);
  tr->resid_T = 0;
}

void
lp_trainer_free (LpTrainer *tr)
{
  if (tr == NULL)
    return;
  resid_clear (tr);
  if (tr->params)
    params_clear (tr);
  g_clear_pointer (&tr->params, g_array_unref);
  g_clear_pointer (&tr->tensors, g_ptr_array_unref);
  lp_forward_free (tr->fw);
  if (tr->model)
    lp_model_unref (tr->model);
  if (tr->student)
    lp_model_unref (tr->student);
  g_free (tr);
}

/* A zeroed f32 tensor shaped like t on be. */
static LpCTensor *
zeros_like (LpBackend *be, const LpCTensor *t, const char *what, GError **error)
{
  g_autofree char *name = g_strdup_printf ("%s.%s", t->name ? t->name : "param", what);
  LpCTensor *z = lp_ctensor_new (be, LP_DTYPE_F32, t->n_dims, t->shape, name, error);
  if (z == NULL)
    return NULL;
  g_autofree float *zero = g_new0 (float, MAX (lp_ctensor_n_elements (t), 1));
  lp_ctensor_write (z, 0, zero, z->n_bytes);
  return z;
}

/* The block a tensor name belongs to, or -1. */
static int
tensor_layer (const char *name)
{
  int layer, end = 0;
  return sscanf (name, "blk.%d.%n", &layer, &end) == 1 && end > 0 ? layer : -1;
}

/* Whether `name` trains under `opt`: a weight the forward pass reads,
 * matching `trainable` (NULL: every block weight), in block opt->layer when
 * that is >= 0. */
static gboolean
tensor_chosen (const LpTrainOptions *opt, const char *name)
{
  int layer = tensor_layer (name);
  gboolean top = strcmp (name, "token_embd.weight") == 0 || strcmp (name, "output.weight") == 0
                 || strcmp (name, "output_norm.weight") == 0;
  if (layer < 0 && !top)
    return FALSE;
  if (opt->layer >= 0 && layer != opt->layer)
    return FALSE;
  return opt->trainable ? lp_tensor_pattern_match (opt->trainable, name) : layer >= 0;
}

/* LoRA: t becomes base (frozen) + scale B A with A [R, K] ~ U(-1/sqrt K,
 * 1/sqrt K) drawn from `rng`, B [N, R] = 0 (the product starts at 0: the
 * model is unchanged until B moves). */
static LpTensor *
lora_wrap (LpTensor *t, const LpTrainOptions *opt, GRand *rng, GError **error)
{
  gint64 N = t->shape[0], K = t->shape[1], R = opt->lora_rank;
  g_autoptr (LpTensor) a = lp_tensor_new (t->name, LP_DTYPE_F32, 2, (gint64[]){ R, K }, error);
  g_autoptr (LpTensor) b = a ? lp_tensor_new (t->name, LP_DTYPE_F32, 2, (gint64[]){ N, R }, error) : NULL;
  if (b == NULL)
    return NULL;
  float *ad = lp_tensor_data_mut (a), bound = (float) (1.0 / sqrt ((double) K));
  for (gint64 e = 0; e < R * K; e++)
    ad[e] = (float) g_rand_double_range (rng, -bound, bound);
  memset (lp_tensor_data_mut (b), 0, lp_tensor_n_bytes (b));
  return lp_tensor_new_adapter (t, a, b, opt->lora_alpha / (double) R, error);
}

/* The tensor `name` of tr->model uploaded trainable, its parameters given
 * their accumulators and moments. */
static gboolean
tensor_add (LpTrainer *tr, const char *name, gboolean lora, GError **error)
{
  LpFormTrain how = tr->opt.quantized == LP_TRAIN_QUANT_SCALES ? LP_FORM_TRAIN_SCALES : LP_FORM_TRAIN_VALUES;
  if (tr->opt.adapter_base && !lora)
    how |= LP_FORM_TRAIN_BASE;
  LpFormWeights *w = lp_forward_weight_train (tr->fw, name, how, error);
  if (w == NULL)
    return FALSE;
  TrainTensor *tt = g_new0 (TrainTensor, 1);
  tt->name = g_strdup (name);
  tt->w = w;
  tt->layer = tensor_layer (name);
  tt->lora = lora;
  g_ptr_array_add (tr->tensors, tt);
  for (int i = 0; i < w->n_trainable; i++)
    {
      if (w->params[i]->dtype != LP_DTYPE_F32)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "tensor %s: parameter %d: expected f32 to train, found %s", name, i,
                        lp_dtype_name (w->params[i]->dtype));
          return FALSE;
        }
      TrainParam tp = { .p = w->params[i], .keep = w->keep[i] };
      g_array_append_val (tr->params, tp);
      TrainParam *q = &g_array_index (tr->params, TrainParam, tr->params->len - 1);
      if ((q->grad = zeros_like (tr->be, q->p, "grad", error)) == NULL
          || (q->m = zeros_like (tr->be, q->p, "adam_m", error)) == NULL
          || (q->v = zeros_like (tr->be, q->p, "adam_v", error)) == NULL)
        return FALSE;
    }
  if (tt->layer >= 0)
    tr->lowest = MIN (tr->lowest, tt->layer);
  return TRUE;
}

LpTrainer *
lp_trainer_new (LpModel *student, LpBackend *be, const LpTrainOptions *options, GError **error)
{
  g_return_val_if_fail (student != NULL && options != NULL, NULL);
  const LpModelConfig *c = lp_model_config (student);
  if (options->layer >= c->n_layers || options->layer < -1)
    {
      lp_set_error (error, LP_ERROR_INVALID, "trainer: layer %d: expected -1 or 0..%" G_GINT64_FORMAT, options->layer,
                    c->n_layers - 1);
      return NULL;
    }
  if (options->lora_rank < 0 || !(options->beta1 >= 0 && options->beta1 < 1) || !(options->beta2 >= 0 && options->beta2 < 1)
      || !(options->eps > 0) || !(options->weight_decay >= 0))
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "trainer: expected lora_rank >= 0, beta1 and beta2 in [0, 1), eps > 0, weight decay >= 0, found %d, %g, %g, %g, %g",
                    options->lora_rank, options->beta1, options->beta2, options->eps, options->weight_decay);
      return NULL;
    }
  g_autoptr (LpTrainer) tr = g_new0 (LpTrainer, 1);
  tr->student = lp_model_ref (student);
  tr->c = *c;
  tr->opt = *options;
  tr->tensors = g_ptr_array_new_with_free_func (train_tensor_free);
  tr->params = g_array_new (FALSE, TRUE, sizeof (TrainParam));
  tr->lowest = (int) c->n_layers;
  tr->model = lp_model_derive (student);

  /* The tensors chosen, in the model's order; under LoRA the 2-D ones of
   * the blocks and the head, wrapped in adapters. */
  g_autoptr (GPtrArray) chosen = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GRand) rng = g_rand_new_with_seed_array ((const guint32[]){ (guint32) options->seed,
                                                                         (guint32) (options->seed >> 32) }, 2);
  for (guint i = 0; i < lp_model_n_tensors (tr->model); i++)
    {
      LpTensor *t = lp_model_tensor_at (tr->model, i);
      if (!tensor_chosen (options, t->name))
        continue;
      /* LoRA wraps the matrices the forward pass multiplies by (not the lookup's table). */
      if (options->lora_rank > 0 && (t->n_dims != 2 || strcmp (t->name, "token_embd.weight") == 0))
        continue;
      g_ptr_array_add (chosen, g_strdup (t->name));
      if (options->lora_rank > 0)
        {
          g_autoptr (LpTensor) a = lora_wrap (t, options, rng, error);
          if (a == NULL)
            return NULL;
          lp_model_set_tensor (tr->model, a); /* t goes (the student keeps its own) */
        }
    }
  if (chosen->len == 0)
    {
      char where[32] = "";
      if (options->layer >= 0)
        g_snprintf (where, sizeof where, " in block %d", options->layer);
      lp_set_error (error, LP_ERROR_INVALID, "trainer: trainable=%s: expected at least one %s%s to train, found none",
                    options->trainable ? lp_tensor_pattern_text (options->trainable) : "(every block weight)",
                    options->lora_rank > 0 ? "linear weight" : "weight", where);
      return NULL;
    }
  tr->fw = lp_forward_new (tr->model, be, error);
  if (tr->fw == NULL)
    return NULL;
  tr->be = tr->fw->be;
  for (guint i = 0; i < chosen->len; i++)
    if (!tensor_add (tr, chosen->pdata[i], options->lora_rank > 0, error))
      return NULL;
  /* The lookup reads a trained table: its gradient comes from the embedding too. */
  const LpForwardWeight *top = lp_forward_top_weights (tr->fw, FALSE, error);
  if (top == NULL)
    return NULL;
  LpCTensor *table = lp_forward_embed_table (top);
  for (guint i = 0; i < tr->params->len; i++)
    tr->embed_trains |= g_array_index (tr->params, TrainParam, i).p == table;
  return g_steal_pointer (&tr);
}

int
lp_trainer_n_tensors (const LpTrainer *tr)
{
  return (int) tr->tensors->len;
}

gint64
lp_trainer_n_params (const LpTrainer *tr)
{
  gint64 n = 0;
  for (guint i = 0; i < tr->params->len; i++)
    n += lp_ctensor_n_elements (g_array_index (tr->params, TrainParam, i).p);
  return n;
}

/* ---- recording helpers ---- */

/* Add every trained parameter's gradient in r's graph (after
 * lp_cgraph_backward) into its accumulator: nodes of the same graph. */
static void
rec_accumulate (LpTrainer *tr, LpForwardRec *r)
{
  for (guint i = 0; i < tr->params->len && r->error == NULL; i++)
    {
      TrainParam *tp = &g_array_index (tr->params, TrainParam, i);
      LpCTensor *d = lp_cgraph_grad (r->g, tp->p);
      if (d == NULL)
        continue;
      LpCTensor *src[2] = { tp->grad, d };
      lp_cgraph_add (r->g, LP_COP_ADD, src, 2, &tp->grad, 1, &r->error);
    }
}

/* dst = x (same shape) on the backend, bit for bit: set_rows from row 0. */
static void
rec_copy (LpForwardRec *r, LpCTensor *x, LpCTensor *dst)
{
  if (r->error != NULL || x == NULL)
    return;
  LpCTensor *src[2] = { x, dst };
  LpCNode *n = lp_cgraph_add (r->g, LP_COP_SET_ROWS, src, 2, NULL, 0, &r->error);
  if (n != NULL)
    n->i[0] = 0;
}

/* x * f (a new graph tensor). */
static LpCTensor *
rec_scale (LpForwardRec *r, LpCTensor *x, double f)
{
  if (r->error != NULL || x == NULL)
    return NULL;
  LpCNode *n = lp_cgraph_add (r->g, LP_COP_SCALE, &x, 1, NULL, 0, &r->error);
  if (n == NULL)
    return NULL;
  n->f[0] = (float) f;
  return n->dst[0];
}

/* A graph tensor of `dtype` and shape holding host `data`. */
static LpCTensor *
rec_const (LpForwardRec *r, LpDType dtype, int n_dims, const gint64 *shape, const void *data, const char *name)
{
  if (r->error != NULL)
    return NULL;
  LpCTensor *t = lp_cgraph_tensor (r->g, dtype, n_dims, shape, name, &r->error);
  if (t != NULL)
    lp_ctensor_write (t, 0, data, t->n_bytes);
  return t;
}

/* A [T] tensor of value v: the gradient fed to a per-token loss. */
static LpCTensor *
rec_fill (LpForwardRec *r, int T, double v)
{
  g_autofree float *x = g_new (float, T);
  for (int t = 0; t < T; t++)
    x[t] = (float) v;
  return rec_const (r, LP_DTYPE_F32, 1, (gint64[]){ T }, x, "dloss");
}

static void
rec_backward (LpForwardRec *r, LpCTensor *y, LpCTensor *dy)
{
  if (r->error == NULL && y != NULL && dy != NULL)
    lp_cgraph_backward (r->g, y, dy, &r->error);
}

/* The sum of a [n] tensor read back, in double. */
static double
read_sum (const LpCTensor *t)
{
  gint64 n = lp_ctensor_n_elements (t);
  g_autofree float *x = g_new (float, MAX (n, 1));
  lp_ctensor_read (t, 0, x, t->n_bytes);
  double s = 0.0;
  for (gint64 i = 0; i < n; i++)
    s += x[i];
  return s;
}

/* The saved residual streams for T tokens (reallocated when T changes);
 * trainable, so a graph that starts from one yields its gradient. */
static gboolean
resid_ensure (LpTrainer *tr, int T, GError **error)
{
  if (tr->resid != NULL && tr->resid_T == T)
    return TRUE;
  resid_clear (tr);
  tr->resid = g_new0 (LpCTensor *, tr->c.n_layers + 1);
  tr->resid_T = T;
  for (int l = 0; l <= tr->c.n_layers; l++)
    {
      tr->resid[l] = lp_ctensor_new (tr->be, LP_DTYPE_F32, 2, (gint64[]){ T, tr->c.dim }, "residual", error);
      if (tr->resid[l] == NULL)
        {
          resid_clear (tr);
          return FALSE;
        }
      lp_ctensor_set_trainable (tr->resid[l], TRUE);
    }
  return TRUE;
}

/* ---- end to end ---- */

/* An offline teacher's top-k for T positions is usable: k in 1 .. V, and
 * each position's ids distinct tokens (kl_topk's buckets must not overlap).
 * One line naming the first bad id otherwise. */
static gboolean
topk_ok (const LpTeacherLogits *teacher, int T, gint64 V, GError **error)
{
  if (teacher->k < 1 || teacher->k > V || teacher->topk_ids == NULL || teacher->topk_logp == NULL
      || teacher->rest_logp == NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID, "trainer: teacher top-k: expected k from 1 to %" G_GINT64_FORMAT
                    " with ids, log-probabilities and the rest's, found k %d%s", V, teacher->k,
                    teacher->topk_ids && teacher->topk_logp && teacher->rest_logp ? "" : " and arrays missing");
      return FALSE;
    }
  g_autofree guint8 *seen = g_new0 (guint8, V);
  gboolean ok = TRUE;
  for (int t = 0; t < T && ok; t++)
    {
      const gint32 *ids = teacher->topk_ids + (gsize) t * teacher->k;
      int i = 0;
      for (; i < teacher->k && ok; i++)
        {
          ok = ids[i] >= 0 && ids[i] < V && !seen[ids[i]];
          if (!ok)
            lp_set_error (error, LP_ERROR_INVALID, "trainer: teacher top-k: position %d, id %d: expected a token below "
                          "%" G_GINT64_FORMAT " not already among the position's, found %d", t, i, V, ids[i]);
          else
            seen[ids[i]] = 1;
        }
      for (int j = 0; ok && j < teacher->k; j++) /* cleared for the next position */
        seen[ids[j]] = 0;
    }
  return ok;
}

/* The distillation term recorded on the student's logits [T, V]: the
 * per-token temperature^2 KL (teacher || student) [T], against the
 * teacher's logits (online) or its top-k and rest bucket (offline:
 * kl_topk, the log-probabilities taken at `temperature`). */
static LpCTensor *
rec_teacher_kl (LpForwardRec *r, LpCTensor *logits, const LpTeacherLogits *teacher, double temperature, int T)
{
  if (r->error != NULL || logits == NULL)
    return NULL;
  gint64 V = logits->shape[1];
  LpCNode *n = NULL;
  if (teacher->logits != NULL)
    {
      LpCTensor *src[2] = { logits, rec_const (r, LP_DTYPE_F32, 2, (gint64[]){ T, V }, teacher->logits, "teacher") };
      n = src[1] ? lp_cgraph_add (r->g, LP_COP_KL, src, 2, NULL, 0, &r->error) : NULL;
    }
  else if (topk_ok (teacher, T, V, &r->error))
    {
      gint64 k = teacher->k;
      LpCTensor *src[4] = { logits, rec_const (r, LP_DTYPE_I32, 2, (gint64[]){ T, k }, teacher->topk_ids, "teacher ids"),
                            rec_const (r, LP_DTYPE_F32, 2, (gint64[]){ T, k }, teacher->topk_logp, "teacher log p"),
                            rec_const (r, LP_DTYPE_F32, 1, (gint64[]){ T }, teacher->rest_logp, "teacher rest") };
      n = src[1] && src[2] && src[3] ? lp_cgraph_add (r->g, LP_COP_KL_TOPK, src, 4, NULL, 0, &r->error) : NULL;
    }
  if (n == NULL)
    return NULL;
  n->f[0] = (float) temperature;
  return n->dst[0];
}

static gboolean
e2e_args_ok (const LpTrainer *tr, const gint32 *targets, int T, const LpTeacherLogits *teacher, double temperature,
             double alpha, GError **error)
{
  const char *why = NULL;
  if (T < 1)
    why = "at least one token";
  else if (!(alpha >= 0.0 && alpha <= 1.0))
    why = "alpha in [0, 1]";
  else if (alpha > 0.0 && targets == NULL)
    why = "targets when alpha > 0";
  else if (alpha < 1.0 && teacher == NULL)
    why = "a teacher when alpha < 1";
  else if (alpha < 1.0 && !(temperature > 0.0))
    why = "a temperature > 0";
  if (why == NULL)
    return TRUE;
  lp_set_error (error, LP_ERROR_INVALID, "trainer: expected %s, found T %d, alpha %g, temperature %g%s%s", why, T, alpha,
                temperature, targets ? "" : ", no targets", teacher ? "" : ", no teacher");
  return FALSE;
}

gboolean
lp_trainer_accumulate_e2e (LpTrainer *tr, const gint32 *tokens, const gint32 *targets, int T,
                           const LpTeacherLogits *teacher, double temperature, double alpha, double weight,
                           LpTrainLoss *loss, GError **error)
{
  if (!e2e_args_ok (tr, targets, T, teacher, temperature, alpha, error) || !resid_ensure (tr, T, error))
    return FALSE;
  int L = (int) tr->c.n_layers;
  LpForwardRec r, prev;

  /* Forward, each block's input kept. */
  lp_forward_rec_begin (&r, tr->fw);
  rec_copy (&r, lp_forward_rec_embed (&r, tokens, T), tr->resid[0]);
  gboolean ok = lp_forward_rec_compute (&r, error);
  lp_forward_rec_end (&r);
  for (int l = 0; ok && l < L; l++)
    {
      lp_forward_rec_begin (&r, tr->fw);
      rec_copy (&r, lp_forward_rec_block (&r, l, tr->resid[l], NULL, NULL), tr->resid[l + 1]);
      ok = lp_forward_rec_compute (&r, error);
      lp_forward_rec_end (&r);
    }
  if (!ok)
    return FALSE;

  /* The head and the losses: alpha mean CE over the scored targets +
   * (1 - alpha) mean KL over the T positions, differentiated at `weight`. */
  int n_scored = 0;
  for (int t = 0; targets != NULL && t < T; t++)
    n_scored += targets[t] >= 0;
  lp_forward_rec_begin (&r, tr->fw);
  LpCTensor *logits = lp_forward_rec_head (&r, tr->resid[L]);
  LpCTensor *ce = NULL, *kl = NULL, *total = NULL;
  if (alpha > 0.0)
    {
      LpCTensor *src[2] = { logits, rec_const (&r, LP_DTYPE_I32, 1, (gint64[]){ T }, targets, "targets") };
      LpCNode *n = src[0] && src[1] ? lp_cgraph_add (r.g, LP_COP_CROSS_ENTROPY, src, 2, NULL, 0, &r.error) : NULL;
      ce = n ? n->dst[0] : NULL;
      total = rec_scale (&r, ce, n_scored > 0 ? alpha / n_scored : 0.0);
    }
  if (alpha < 1.0)
    {
      kl = rec_teacher_kl (&r, logits, teacher, temperature, T);
      LpCTensor *term = rec_scale (&r, kl, (1.0 - alpha) / T);
      if (total != NULL && term != NULL)
        {
          LpCTensor *src[2] = { total, term };
          LpCNode *n = lp_cgraph_add (r.g, LP_COP_ADD, src, 2, NULL, 0, &r.error);
          total = n ? n->dst[0] : NULL;
        }
      else
        total = term;
    }
  rec_backward (&r, total, rec_fill (&r, T, weight));
  rec_accumulate (tr, &r);
  if (!lp_forward_rec_compute (&r, error))
    {
      lp_forward_rec_end (&r);
      return FALSE;
    }
  LpTrainLoss l = { .n_tokens = alpha < 1.0 ? T : n_scored };
  l.ce = ce && n_scored > 0 ? read_sum (ce) / n_scored : 0.0;
  l.kl = kl ? read_sum (kl) / T : 0.0;
  l.loss = alpha * l.ce + (1.0 - alpha) * l.kl;
  LpCTensor *dx = lp_cgraph_grad (r.g, tr->resid[L]);

  /* Back through the blocks, each recomputed from its saved input; the
   * graph above stays until the one below has read its dx. */
  int stop = tr->embed_trains ? 0 : tr->lowest;
  for (int b = L - 1; b >= stop; b--)
    {
      prev = r;
      lp_forward_rec_begin (&r, tr->fw);
      rec_backward (&r, lp_forward_rec_block (&r, b, tr->resid[b], NULL, NULL), dx);
      rec_accumulate (tr, &r);
      ok = lp_forward_rec_compute (&r, error);
      lp_forward_rec_end (&prev);
      if (!ok)
        {
          lp_forward_rec_end (&r);
          return FALSE;
        }
      dx = lp_cgraph_grad (r.g, tr->resid[b]);
    }
  /* The lookup's table. */
  if (tr->embed_trains)
    {
      prev = r;
      lp_forward_rec_begin (&r, tr->fw);
      rec_backward (&r, lp_forward_rec_embed (&r, tokens, T), dx);
      rec_accumulate (tr, &r);
      ok = lp_forward_rec_compute (&r, error);
      lp_forward_rec_end (&prev);
    }
  lp_forward_rec_end (&r);
  if (ok && loss != NULL)
    *loss = l;
  return ok;
}

/* ---- block-wise ---- */

gboolean
lp_trainer_accumulate_block (LpTrainer *tr, int layer, const float *x, const float *y, int T, double weight,
                             LpTrainLoss *loss, GError **error)
{
  if (layer < 0 || layer >= tr->c.n_layers || T < 1)
    {
      lp_set_error (error, LP_ERROR_INVALID, "trainer: block %d, %d tokens: expected a block in 0..%" G_GINT64_FORMAT " and at least one token",
                    layer, T, tr->c.n_layers - 1);
      return FALSE;
    }
  LpForwardRec r;
  lp_forward_rec_begin (&r, tr->fw);
  LpCTensor *out = lp_forward_rec_block (&r, layer, lp_forward_rec_input (&r, x, T), NULL, NULL);
  LpCTensor *src[2] = { out, lp_forward_rec_input (&r, y, T) };
  LpCNode *n = out && src[1] ? lp_cgraph_add (r.g, LP_COP_MSE, src, 2, NULL, 0, &r.error) : NULL;
  LpCTensor *mse = n ? n->dst[0] : NULL;
  /* The mean over the tokens of each row's mean squared error. */
  rec_backward (&r, mse, rec_fill (&r, T, weight / T));
  rec_accumulate (tr, &r);
  gboolean ok = lp_forward_rec_compute (&r, error);
  if (ok && loss != NULL)
    {
      double m = read_sum (mse) / T;
      *loss = (LpTrainLoss) { .loss = m, .mse = m, .n_tokens = T };
    }
  lp_forward_rec_end (&r);
  return ok;
}

/* ---- the step ---- */

/* Every accumulator zeroed from the host (which also clears a NaN or an
 * infinity a scale by 0 would keep). */
static void
grads_clear (LpTrainer *tr)
{
  for (guint i = 0; i < tr->params->len; i++)
    {
      TrainParam *tp = &g_array_index (tr->params, TrainParam, i);
      g_autofree float *zero = g_new0 (float, MAX (lp_ctensor_n_elements (tp->grad), 1));
      lp_ctensor_write (tp->grad, 0, zero, tp->grad->n_bytes);
    }
}

/* The global norm of the accumulated gradients: SUM_SQ nodes chained over
 * every accumulator, one float read back. */
static gboolean
grads_norm (LpTrainer *tr, double *norm, GError **error)
{
  LpForwardRec r;
  lp_forward_rec_begin (&r, tr->fw);
  LpCTensor *sum = NULL;
  for (guint i = 0; i < tr->params->len && r.error == NULL; i++)
    {
      LpCTensor *src[2] = { g_array_index (tr->params, TrainParam, i).grad, sum };
      LpCNode *n = lp_cgraph_add (r.g, LP_COP_SUM_SQ, src, sum ? 2 : 1, NULL, 0, &r.error);
      sum = n ? n->dst[0] : NULL;
    }
  gboolean ok = lp_forward_rec_compute (&r, error);
  if (ok)
    {
      float ss = 0.0f;
      lp_ctensor_read (sum, 0, &ss, sizeof ss);
      *norm = sqrt ((double) ss);
    }
  lp_forward_rec_end (&r);
  return ok;
}

gboolean
lp_trainer_step (LpTrainer *tr, double lr, double clip, double *grad_norm, GError **error)
{
  if (!(lr >= 0.0) || !(clip >= 0.0))
    {
      lp_set_error (error, LP_ERROR_INVALID, "trainer: step: expected lr >= 0 and clip >= 0, found %g and %g", lr, clip);
      return FALSE;
    }
  double norm = 0.0;
  if (!grads_norm (tr, &norm, error))
    return FALSE;
  if (grad_norm != NULL)
    *grad_norm = norm;
  if (!isfinite (norm))
    {
      /* Nothing applied; the accumulators start again from zero. */
      grads_clear (tr);
      lp_set_error (error, LP_ERROR_FAILED, "trainer: step %" G_GINT64_FORMAT ": the gradient norm is %g: no weight changed",
                    tr->step + 1, norm);
      return FALSE;
    }
  double scale = clip > 0.0 && norm > clip ? clip / norm : 1.0;
  tr->step++;
  LpForwardRec r;
  lp_forward_rec_begin (&r, tr->fw);
  for (guint i = 0; i < tr->params->len && r.error == NULL; i++)
    {
      TrainParam *tp = &g_array_index (tr->params, TrainParam, i);
      LpCTensor *src[5] = { tp->p, tp->grad, tp->m, tp->v, tp->keep };
      LpCNode *n = lp_cgraph_add (r.g, LP_COP_ADAMW, src, 5, NULL, 0, &r.error);
      if (n == NULL)
        break;
      n->i[0] = tr->step;
      const float f[6] = { (float) lr, (float) tr->opt.beta1, (float) tr->opt.beta2, (float) tr->opt.eps,
                           (float) tr->opt.weight_decay, (float) scale };
      memcpy (n->f, f, sizeof f);
      /* The accumulator, read, starts again from zero (finite here). */
      n = lp_cgraph_add (r.g, LP_COP_SCALE, &tp->grad, 1, &tp->grad, 1, &r.error);
      if (n != NULL)
        n->f[0] = 0.0f;
    }
  gboolean ok = lp_forward_rec_compute (&r, error);
  lp_forward_rec_end (&r);
  return ok;
}

/* ---- the current weights ---- */

gboolean
lp_trainer_logits (LpTrainer *tr, const gint32 *tokens, int T, float *logits, GError **error)
{
  return lp_forward_logits (tr->fw, tokens, T, NULL, logits, error);
}

gboolean
lp_trainer_block (LpTrainer *tr, int layer, const float *x, float *y, int T, GError **error)
{
  if (layer < 0 || layer >= tr->c.n_layers)
    {
      lp_set_error (error, LP_ERROR_INVALID, "trainer: block %d: expected 0..%" G_GINT64_FORMAT, layer,
                    tr->c.n_layers - 1);
      return FALSE;
    }
  memmove (y, x, (gsize) T * tr->c.dim * sizeof (float));
  return lp_forward_block (tr->fw, layer, y, T, NULL, NULL, error);
}

/* ---- snapshots ---- */

/* Copy each parameter's p, m, v into its snapshot (save) or back (restore),
 * on the backend: one graph of exact copies. */
static gboolean
state_copy (LpTrainer *tr, gboolean save, GError **error)
{
  LpForwardRec r;
  lp_forward_rec_begin (&r, tr->fw);
  for (guint i = 0; i < tr->params->len && r.error == NULL; i++)
    {
      TrainParam *tp = &g_array_index (tr->params, TrainParam, i);
      LpCTensor *live[3] = { tp->p, tp->m, tp->v };
      for (int k = 0; k < 3 && r.error == NULL; k++)
        {
          if (tp->saved[k] == NULL
              && (tp->saved[k] = lp_ctensor_new (tr->be, LP_DTYPE_F32, live[k]->n_dims, live[k]->shape, "saved",
                                                 &r.error)) == NULL)
            break;
          rec_copy (&r, save ? live[k] : tp->saved[k], save ? tp->saved[k] : live[k]);
        }
    }
  gboolean ok = lp_forward_rec_compute (&r, error);
  lp_forward_rec_end (&r);
  return ok;
}

gboolean
lp_trainer_save_state (LpTrainer *tr, GError **error)
{
  if (!state_copy (tr, TRUE, error))
    return FALSE;
  tr->saved = TRUE;
  tr->saved_step = tr->step;
  return TRUE;
}

gboolean
lp_trainer_restore_state (LpTrainer *tr, GError **error)
{
  if (!tr->saved)
    {
      lp_set_error (error, LP_ERROR_INVALID, "trainer: restore: expected a saved state, found none (save_state first)");
      return FALSE;
    }
  if (!state_copy (tr, FALSE, error))
    return FALSE;
  tr->step = tr->saved_step;
  grads_clear (tr);
  return TRUE;
}

/* ---- the trained model ---- */

/* A trained tensor (its form rebuilt by lp_form_weights_trained) in
 * orig's type: a block type's latent values come back as f32 and are
 * quantized to it again, on orig's mask. */
static LpTensor *
requantized (LpTensor *t, LpTensor *orig, GError **error)
{
  const LpDTypeInfo *info = lp_dtype_info (orig->dtype);
  if (t->dtype == orig->dtype || info == NULL || info->block_size <= 1)
    return lp_tensor_ref (t);
  LpTensor *q = NULL;
  if (!lp_quantize_tensor (t, orig->dtype, NULL, &q, error))
    return NULL;
  g_autoptr (LpTensor) owned = q;
  GBytes *mask = lp_tensor_mask (orig);
  return mask ? lp_tensor_with_mask (owned, mask, error) : g_steal_pointer (&owned);
}

/* A merged adapter's values (base + scale B A, f32) in the form of its
 * base: the base's form given these values as its trained ones (a mask's
 * zeros kept, rounded onto the same grid, re-quantized to the same block
 * type, f16 / bf16 rounded). */
static LpTensor *
merged_in_form (LpTensor *merged, LpTensor *base, GError **error)
{
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (LpFormWeights) w = lp_form_weights_new_train (base, cpu, LP_FORM_TRAIN_VALUES, error);
  if (w == NULL)
    return NULL;
  gint64 n = lp_tensor_n_elements (base);
  if (w->n_trainable < 1 || lp_ctensor_n_elements (w->params[0]) != n)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED,
                    "tensor %s: merging an adapter into its %s base: not possible (its form holds no values to merge into: keep the adapter, merge=false)",
                    base->name, lp_form_name (lp_tensor_form (base)));
      return NULL;
    }
  g_autofree float *v = lp_tensor_dup_f32 (merged, error);
  if (v == NULL)
    return NULL;
  for (gint64 e = 0; e < n; e++)
    if (!lp_tensor_mask_keeps (base, e))
      v[e] = 0.0f;
  lp_ctensor_write (w->params[0], 0, v, w->params[0]->n_bytes);
  g_autoptr (LpTensor) t = lp_form_weights_trained (w, error);
  return t ? requantized (t, base, error) : NULL;
}

/* One trained tensor as the new model holds it. */
static LpTensor *
tensor_trained (LpTrainer *tr, const TrainTensor *tt, gboolean merge, GError **error)
{
  g_autoptr (LpTensor) t = lp_form_weights_trained (tt->w, error);
  if (t == NULL)
    return NULL;
  LpTensor *orig = lp_model_tensor (tr->student, tt->name);
  if (tt->lora)
    return merge ? merged_in_form (t, orig, error) : g_steal_pointer (&t);
  return requantized (t, orig, error);
}

LpModel *
lp_trainer_model (LpTrainer *tr, gboolean merge, GError **error)
{
  g_autoptr (LpModel) out = lp_model_derive (tr->student);
  for (guint i = 0; i < tr->tensors->len; i++)
    {
      g_autoptr (LpTensor) t = tensor_trained (tr, tr->tensors->pdata[i], merge, error);
      if (t == NULL)
        return NULL;
      lp_model_set_tensor (out, t);
    }
  return g_steal_pointer (&out);
}

/* ---- inside the library (train-internal.h) ---- */

gboolean
lp_trainer_grad (LpTrainer *tr, const char *name, int i, float *out, GError **error)
{
  for (guint k = 0; k < tr->tensors->len; k++)
    {
      const TrainTensor *tt = tr->tensors->pdata[k];
      if (strcmp (tt->name, name) != 0 || i < 0 || i >= tt->w->n_trainable)
        continue;
      for (guint j = 0; j < tr->params->len; j++)
        {
          TrainParam *tp = &g_array_index (tr->params, TrainParam, j);
          if (tp->p == tt->w->params[i])
            {
              lp_ctensor_read (tp->grad, 0, out, tp->grad->n_bytes);
              return TRUE;
            }
        }
    }
  lp_set_error (error, LP_ERROR_INVALID, "trainer: tensor %s: parameter %d: expected a trained one, found none", name, i);
  return FALSE;
}

LpFormWeights *
lp_trainer_weights (LpTrainer *tr, const char *name)
{
  for (guint k = 0; k < tr->tensors->len; k++)
    {
      TrainTensor *tt = tr->tensors->pdata[k];
      if (strcmp (tt->name, name) == 0)
        return tt->w;
    }
  return NULL;
}
