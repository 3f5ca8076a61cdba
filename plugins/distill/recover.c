/* distill.recover: train a compressed student toward a teacher on the
 * calibration data, with the LpTrainer (train.h), so every weight trains in
 * its own form: pruned weights stay exactly zero, quantized ones end on
 * their own grid.
 *
 * Objectives:
 *   e2e        KL(teacher || student) at temperature T over the next-token
 *              distributions, mixed with the data's cross-entropy by alpha,
 *              back-propagated through the whole model.
 *   blockwise  for each block in turn, the MSE between the student block's
 *              output and the teacher block's, the student block reading the
 *              student's own stream so far (sequential: the blocks before it
 *              already trained) and the teacher's output on the teacher's
 *              own stream as the target (as OmniQuant and EfficientQAT's
 *              block-wise stage do).
 *
 * The loop: AdamW, linear warmup then cosine decay, gradient clipping,
 * micro_batch sequences x accumulate micro-batches a step; the last
 * `holdout` calibration samples are kept out of training and measured every
 * eval_every steps (perplexity; block output MSE block-wise), the best
 * state kept (lp_trainer_save_state) and restored at the end; patience
 * stops early.  A non-finite or exploding loss restores the last good state,
 * halves the learning rate once and says so; a second one is an error.
 *
 * Shapes: N calibration samples, T tokens a sequence, D model dim, V vocab. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <llmpress/train.h>

#include "distill.h"

/* A step whose loss exceeds this many times the first step's has exploded. */
#define RECOVER_EXPLODE_FACTOR 10.0
/* Teacher logits of the training samples are kept when they fit in this. */
#define RECOVER_TEACHER_CACHE_BYTES (G_GUINT64_CONSTANT (512) << 20)

enum { OBJECTIVE_E2E, OBJECTIVE_BLOCKWISE };
enum { SCHEDULE_COSINE, SCHEDULE_CONSTANT };

typedef struct {
  LpPassContext *ctx;
  LpModel *teacher;
  LpBackend *be;
  LpCalibration *cal;          /* borrowed from the context */
  const LpTensorPattern *trainable;
  LpTrainOptions topt;
  int objective;
  int T, N, n_train, n_hold;   /* sequence length, samples, of which trained and held out */
  int steps, warmup, schedule, micro_batch, accumulate, eval_every, patience;
  double lr, clip, temperature, alpha;
  gboolean lr_halved;          /* once in the run (the blocks after it keep the halved rate) */
  gboolean merge;
  /* Sample order: a seeded shuffle of the training samples, redrawn each epoch. */
  GRand *rng;
  int *order, next;
  /* e2e: the teacher's forward pass and its logits of the training samples. */
  LpLogits *teacher_topk;      /* offline: its top-k (teacher_logits=), borrowed; NULL: run teacher_fw */
  LpForward *teacher_fw;
  float *teacher_logits;       /* [n_train, T, V] when cached, else [T, V] scratch */
  guint8 *teacher_have;        /* [n_train] or NULL (not cached) */
  gint32 *targets;             /* [T] */
  float *logits;               /* [T, V] */
  /* blockwise: the residual streams of every sample. */
  float *xs, *xt;              /* [N, T, D]: student input of the block, teacher output of the block */
  float *y;                    /* [T, D] */
  /* Progress over the whole run. */
  gint64 t0;
  gint64 steps_done, steps_total;
  double holdout_before, holdout_after; /* e2e: held-out perplexity before training and of the state kept */
} Recover;

/* ---- parameters ---- */

static gboolean
recover_read_params (Recover *r, GError **error)
{
  LpPassContext *ctx = r->ctx;
  r->objective = lp_pass_context_get_enum (ctx, "objective");
  r->temperature = lp_pass_context_get_float (ctx, "temperature");
  r->alpha = lp_pass_context_get_float (ctx, "alpha");
  r->trainable = lp_pass_context_get_tensors (ctx, "trainable");
  r->lr = lp_pass_context_get_float (ctx, "lr");
  r->clip = lp_pass_context_get_float (ctx, "clip");
  r->warmup = (int) lp_pass_context_get_int (ctx, "warmup");
  r->schedule = lp_pass_context_get_enum (ctx, "schedule");
  r->micro_batch = (int) lp_pass_context_get_int (ctx, "micro_batch");
  r->accumulate = (int) lp_pass_context_get_int (ctx, "accumulate");
  r->steps = (int) lp_pass_context_get_int (ctx, "steps");
  r->eval_every = (int) lp_pass_context_get_int (ctx, "eval_every");
  r->n_hold = (int) lp_pass_context_get_int (ctx, "holdout");
  r->patience = (int) lp_pass_context_get_int (ctx, "patience");
  r->merge = lp_pass_context_get_bool (ctx, "merge");

  LpTrainOptions o = LP_TRAIN_OPTIONS_INIT;
  o.trainable = r->trainable;
  o.quantized = lp_pass_context_get_enum (ctx, "quantized") == 0 ? LP_TRAIN_QUANT_STE : LP_TRAIN_QUANT_SCALES;
  o.adapter_base = lp_pass_context_get_bool (ctx, "adapter_base");
  o.lora_rank = (int) lp_pass_context_get_int (ctx, "lora_rank");
  o.lora_alpha = lp_pass_context_get_float (ctx, "lora_alpha");
  o.seed = lp_pass_context_param_is_set (ctx, "seed") ? (guint64) lp_pass_context_get_int (ctx, "seed")
                                                      : lp_pass_context_get_seed (ctx);
  o.beta1 = lp_pass_context_get_float (ctx, "beta1");
  o.beta2 = lp_pass_context_get_float (ctx, "beta2");
  o.eps = lp_pass_context_get_float (ctx, "eps");
  o.weight_decay = lp_pass_context_get_float (ctx, "weight_decay");
  r->topt = o;

  if (lp_pass_context_get_int (ctx, "tokens") > 0 && lp_pass_context_param_is_set (ctx, "steps"))
    {
      lp_set_error (error, LP_ERROR_INVALID, "steps= and tokens=: expected one of them, found both");
      return FALSE;
    }
  if (r->patience > 0 && r->n_hold == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "patience=%d with holdout=0: expected held-out samples to measure", r->patience);
      return FALSE;
    }
  return TRUE;
}

/* Whether any tensor of `model` (of block `layer`, or any when < 0) matches trainable=. */
static gboolean
recover_layer_trains (const Recover *r, LpModel *model, int layer)
{
  g_autofree char *prefix = layer >= 0 ? g_strdup_printf ("blk.%d.", layer) : NULL;
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      const char *name = lp_model_tensor_at (model, i)->name;
      if ((prefix == NULL || g_str_has_prefix (name, prefix)) && lp_tensor_pattern_match (r->trainable, name))
        return TRUE;
    }
  return FALSE;
}

/* The samples: the calibration's, cut to T tokens, the last n_hold held out. */
static gboolean
recover_read_samples (Recover *r, GError **error)
{
  r->cal = lp_pass_context_get_calibration (r->ctx, error);
  if (r->cal == NULL)
    return FALSE;
  int L = lp_calibration_seq_len (r->cal);
  r->N = lp_calibration_n_samples (r->cal);
  r->T = (int) lp_pass_context_get_int (r->ctx, "seq_len");
  if (r->T == 0)
    r->T = L;
  if (r->T > L || r->T < 2)
    {
      lp_set_error (error, LP_ERROR_INVALID, "seq_len=%d: expected 2 to the calibration's calibration_seq_len (%d)",
                    r->T, L);
      return FALSE;
    }
  r->n_train = r->N - r->n_hold;
  if (r->n_train < 1)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "training data: %d calibration samples with holdout=%d leave none to train on (expected "
                    "calibration_samples above holdout)", r->N, r->n_hold);
      return FALSE;
    }
  gint64 per_step = (gint64) r->micro_batch * r->accumulate * r->T;
  gint64 tokens = lp_pass_context_get_int (r->ctx, "tokens");
  if (tokens > 0)
    r->steps = (int) MIN ((tokens + per_step - 1) / per_step, G_MAXINT32);
  r->rng = g_rand_new_with_seed ((guint32) (r->topt.seed ^ (r->topt.seed >> 32)));
  r->order = g_new (int, r->n_train);
  r->next = r->n_train;
  return TRUE;
}

/* The next training sample, each epoch in a new seeded order. */
static int
recover_next_sample (Recover *r)
{
  if (r->next == r->n_train)
    {
      for (int i = 0; i < r->n_train; i++)
        r->order[i] = i;
      for (int i = r->n_train - 1; i > 0; i--)
        {
          int j = g_rand_int_range (r->rng, 0, i + 1), t = r->order[i];
          r->order[i] = r->order[j];
          r->order[j] = t;
        }
      r->next = 0;
    }
  return r->order[r->next++];
}

static double
recover_lr (const Recover *r, int step)
{
  if (step <= r->warmup)
    return r->lr * step / (r->warmup + 1);
  if (r->schedule == SCHEDULE_CONSTANT)
    return r->lr;
  double progress = (double) (step - r->warmup - 1) / MAX (r->steps - r->warmup, 1);
  return r->lr * 0.5 * (1.0 + cos (G_PI * progress));
}

static gboolean
recover_cancelled (Recover *r, GError **error)
{
  if (!lp_pass_context_cancelled (r->ctx))
    return FALSE;
  lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (r->ctx));
  return TRUE;
}

/* ---- objectives: one training sample's gradient, and the held-out measure ---- */

typedef struct {
  const char *measure;  /* "perplexity", "mse" */
  gboolean (*accumulate) (Recover *r, LpTrainer *tr, int layer, int sample, double weight, LpTrainLoss *loss,
                          GError **error);
  gboolean (*holdout) (Recover *r, LpTrainer *tr, int layer, double *value, GError **error);
} Objective;

/* The teacher's logits of training sample i [T, V] (cached when they fit). */
static const float *
e2e_teacher_logits (Recover *r, int i, const gint32 *tokens, GError **error)
{
  gsize TV = (gsize) r->T * lp_model_config (r->teacher)->n_vocab;
  float *out = r->teacher_have ? r->teacher_logits + (gsize) i * TV : r->teacher_logits;
  if (r->teacher_have && r->teacher_have[i])
    return out;
  if (!lp_forward_logits (r->teacher_fw, tokens, r->T, NULL, out, error))
    return NULL;
  if (r->teacher_have)
    r->teacher_have[i] = 1;
  return out;
}

static gboolean
e2e_accumulate (Recover *r, LpTrainer *tr, int layer, int sample, double weight, LpTrainLoss *loss, GError **error)
{
  const gint32 *tokens = lp_calibration_sample (r->cal, sample);
  for (int t = 0; t + 1 < r->T; t++)
    r->targets[t] = tokens[t + 1];
  r->targets[r->T - 1] = -1;
  LpTeacherLogits teacher = { 0 };
  if (r->alpha < 1.0 && r->teacher_topk != NULL)
    distill_teacher_logits_sample (r->teacher_topk, sample, &teacher);
  else if (r->alpha < 1.0)
    {
      teacher.logits = e2e_teacher_logits (r, sample, tokens, error);
      if (teacher.logits == NULL)
        return FALSE;
    }
  return lp_trainer_accumulate_e2e (tr, tokens, r->targets, r->T, r->alpha < 1.0 ? &teacher : NULL, r->temperature,
                                    r->alpha, weight, loss, error);
}

/* Perplexity of the held-out samples: every token after the first scored. */
static gboolean
e2e_holdout (Recover *r, LpTrainer *tr, int layer, double *value, GError **error)
{
  int V = (int) lp_model_config (r->teacher)->n_vocab;
  double nll = 0.0;
  gint64 n = 0;
  for (int s = r->n_train; s < r->N; s++)
    {
      const gint32 *tokens = lp_calibration_sample (r->cal, s);
      if (!lp_trainer_logits (tr, tokens, r->T, r->logits, error))
        return FALSE;
      for (int t = 0; t + 1 < r->T; t++, n++)
        {
          const float *row = r->logits + (gsize) t * V;
          float mx = row[0];
          for (int v = 1; v < V; v++)
            mx = MAX (mx, row[v]);
          double sum = 0.0;
          for (int v = 0; v < V; v++)
            sum += exp ((double) row[v] - mx);
          nll += mx + log (sum) - row[tokens[t + 1]];
        }
    }
  *value = exp (nll / (double) n);
  return TRUE;
}

static const Objective objective_e2e = { "perplexity", e2e_accumulate, e2e_holdout };

static gboolean
block_accumulate (Recover *r, LpTrainer *tr, int layer, int sample, double weight, LpTrainLoss *loss, GError **error)
{
  gsize TD = (gsize) r->T * lp_model_config (r->teacher)->dim;
  return lp_trainer_accumulate_block (tr, layer, r->xs + sample * TD, r->xt + sample * TD, r->T, weight, loss, error);
}

/* Mean squared error of the block's output on the held-out samples. */
static gboolean
block_holdout (Recover *r, LpTrainer *tr, int layer, double *value, GError **error)
{
  gsize TD = (gsize) r->T * lp_model_config (r->teacher)->dim;
  double se = 0.0;
  for (int s = r->n_train; s < r->N; s++)
    {
      if (!lp_trainer_block (tr, layer, r->xs + s * TD, r->y, r->T, error))
        return FALSE;
      const float *target = r->xt + s * TD;
      for (gsize k = 0; k < TD; k++)
        se += ((double) r->y[k] - target[k]) * ((double) r->y[k] - target[k]);
    }
  *value = se / ((double) TD * (r->N - r->n_train));
  return TRUE;
}

static const Objective objective_block = { "mse", block_accumulate, block_holdout };

/* ---- the loop ---- */

static void
recover_report_step (Recover *r, int layer, int step, const LpTrainLoss *sum, double lr)
{
  r->steps_done++;
  lp_pass_context_progress (r->ctx, (guint64) r->steps_done, (guint64) r->steps_total, "steps");
  int every = MAX (r->steps / 10, 1);
  if (step % every != 0 && step != r->steps && step != 1)
    return;
  double s = (double) (g_get_monotonic_time () - r->t0) / 1e6;
  double tok = (double) r->steps_done * r->micro_batch * r->accumulate * r->T;
  double eta = s / (double) r->steps_done * (double) (r->steps_total - r->steps_done);
  g_autofree char *where = layer >= 0 ? g_strdup_printf ("block %d ", layer) : g_strdup ("");
  if (layer >= 0)
    lp_pass_context_log (r->ctx, LP_LOG_INFO, "%sstep %d/%d: mse %.6g, lr %.3g, %.0f tokens/s, eta %.0fs", where,
                         step, r->steps, sum->mse, lr, tok / MAX (s, 1e-9), eta);
  else
    lp_pass_context_log (r->ctx, LP_LOG_INFO, "step %d/%d: loss %.5f (kl %.5f, ce %.5f), lr %.3g, %.0f tokens/s, eta %.0fs",
                         step, r->steps, sum->loss, sum->kl, sum->ce, lr, tok / MAX (s, 1e-9), eta);
}

/* One optimizer step: micro_batch x accumulate samples' gradients, then
 * AdamW.  *bad (owned), when the loss or the gradient norm is not finite or
 * the loss exploded: what happened (no weight changed unless it exploded). */
static gboolean
recover_step (Recover *r, LpTrainer *tr, const Objective *obj, int layer, double lr, double first_loss,
              LpTrainLoss *sum, char **bad, GError **error)
{
  int n = r->micro_batch * r->accumulate;
  memset (sum, 0, sizeof *sum);
  for (int k = 0; k < n; k++)
    {
      LpTrainLoss l = { 0 };
      if (!obj->accumulate (r, tr, layer, recover_next_sample (r), 1.0 / n, &l, error))
        return FALSE;
      sum->loss += l.loss / n;
      sum->kl += l.kl / n;
      sum->ce += l.ce / n;
      sum->mse += l.mse / n;
      sum->n_tokens += l.n_tokens;
    }
  double norm = 0.0;
  g_autoptr (GError) step_error = NULL;
  gboolean stepped = lp_trainer_step (tr, lr, r->clip, &norm, &step_error);
  if (!stepped && isfinite (norm) && isfinite (sum->loss))
    {
      g_propagate_error (error, g_steal_pointer (&step_error));
      return FALSE;
    }
  if (!isfinite (sum->loss) || !stepped)
    *bad = g_strdup_printf ("loss %g, gradient norm %g", sum->loss, norm);
  else if (isfinite (first_loss) && sum->loss > RECOVER_EXPLODE_FACTOR * first_loss)
    *bad = g_strdup_printf ("loss %g, over %g times the first step's %g", sum->loss, RECOVER_EXPLODE_FACTOR, first_loss);
  return TRUE;
}

/* Train tr (block `layer`, or the whole model when < 0) for r->steps steps. */
static gboolean
recover_train (Recover *r, LpTrainer *tr, const Objective *obj, int layer, GError **error)
{
  gboolean measure = r->n_hold > 0;
  double best = INFINITY, first_loss = NAN;
  int best_step = 0, since_best = 0, last = 0;
  gboolean at_best = TRUE;
  g_autofree char *where = layer >= 0 ? g_strdup_printf ("block %d: ", layer) : g_strdup ("");
  if (measure && !obj->holdout (r, tr, layer, &best, error))
    return FALSE;
  if (measure)
    lp_pass_context_log (r->ctx, LP_LOG_INFO, "%sheld-out %s %.6g before training (%d samples of %d tokens)", where,
                         obj->measure, best, r->n_hold, r->T);
  double before = best;
  if (!lp_trainer_save_state (tr, error))
    return FALSE;
  for (int step = 1; step <= r->steps; step++)
    {
      if (recover_cancelled (r, error))
        return FALSE;
      double lr = (r->lr_halved ? 0.5 : 1.0) * recover_lr (r, step);
      LpTrainLoss sum;
      g_autofree char *bad = NULL;
      if (!recover_step (r, tr, obj, layer, lr, first_loss, &sum, &bad, error))
        return FALSE;
      last = step;
      if (bad)
        {
          if (r->lr_halved)
            {
              lp_set_error (error, LP_ERROR_FAILED,
                            "lr=%g: %straining diverged again at step %d (%s) after the learning rate was halved; "
                            "expected a smaller lr=", r->lr, where, step, bad);
              return FALSE;
            }
          if (!lp_trainer_restore_state (tr, error))
            return FALSE;
          r->lr_halved = TRUE;
          at_best = TRUE;
          lp_pass_context_log (r->ctx, LP_LOG_WARNING,
                               "%sstep %d: training diverged (%s): restored the weights of step %d and halved the "
                               "learning rate to %g", where, step, bad, best_step, r->lr * 0.5);
          recover_report_step (r, layer, step, &sum, lr);
          continue;
        }
      if (!isfinite (first_loss))
        first_loss = sum.loss;
      at_best = FALSE;
      recover_report_step (r, layer, step, &sum, lr);
      gboolean checkpoint = (r->eval_every > 0 && step % r->eval_every == 0) || step == r->steps;
      if (!checkpoint)
        continue;
      if (!measure)
        {
          /* No held-out split: the last good state is the latest one. */
          best_step = step;
          if (!lp_trainer_save_state (tr, error))
            return FALSE;
          at_best = TRUE;
          continue;
        }
      double v;
      if (!obj->holdout (r, tr, layer, &v, error))
        return FALSE;
      gboolean better = v < best;
      lp_pass_context_log (r->ctx, LP_LOG_INFO, "%sstep %d: held-out %s %.6g%s", where, step, obj->measure, v,
                           better ? " (best so far)" : "");
      if (better)
        {
          best = v;
          best_step = step;
          since_best = 0;
          if (!lp_trainer_save_state (tr, error))
            return FALSE;
          at_best = TRUE;
        }
      else if (r->patience > 0 && ++since_best >= r->patience)
        {
          lp_pass_context_log (r->ctx, LP_LOG_INFO, "%sstopping early at step %d: no improvement in %d measurements",
                               where, step, r->patience);
          r->steps_done += r->steps - step;
          break;
        }
    }
  if (measure && !at_best && !lp_trainer_restore_state (tr, error))
    return FALSE;
  if (measure)
    lp_pass_context_log (r->ctx, LP_LOG_INFO, "%sheld-out %s %.6g -> %.6g (the state of step %d of %d)", where,
                         obj->measure, before, best, best_step, last);
  if (layer < 0)
    {
      r->holdout_before = before;
      r->holdout_after = best;
    }
  return TRUE;
}

static gboolean
recover_new_trainer (Recover *r, LpModel *student, int layer, LpTrainer **out, GError **error)
{
  LpTrainOptions o = r->topt;
  o.layer = layer;
  *out = lp_trainer_new (student, r->be, &o, error);
  if (*out == NULL)
    return FALSE;
  g_autofree char *where = layer >= 0 ? g_strdup_printf ("block %d: ", layer) : g_strdup ("");
  lp_pass_context_log (r->ctx, LP_LOG_INFO, "%straining %d tensors, %" G_GINT64_FORMAT " parameters", where,
                       lp_trainer_n_tensors (*out), lp_trainer_n_params (*out));
  return TRUE;
}

/* ---- the two objectives' runs ---- */

static LpModel *
recover_e2e (Recover *r, LpModel *student, GError **error)
{
  gint64 V = lp_model_config (r->teacher)->n_vocab;
  gsize TV = (gsize) r->T * V;
  if (r->teacher_topk == NULL)
    {
      r->teacher_fw = lp_forward_new (r->teacher, r->be, error);
      if (r->teacher_fw == NULL)
        return NULL;
      gboolean cache = (guint64) r->n_train * TV * sizeof (float) <= RECOVER_TEACHER_CACHE_BYTES;
      r->teacher_logits = g_new (float, cache ? (gsize) r->n_train * TV : TV);
      r->teacher_have = cache ? g_new0 (guint8, r->n_train) : NULL;
    }
  r->targets = g_new (gint32, r->T);
  r->logits = g_new (float, TV);
  r->steps_total = r->steps;
  g_autoptr (LpTrainer) tr = NULL;
  if (!recover_new_trainer (r, student, -1, &tr, error) || !recover_train (r, tr, &objective_e2e, -1, error))
    return NULL;
  return lp_trainer_model (tr, r->merge, error);
}

/* Block `layer` of `model` applied to every sample's stream x [N, T, D], in place. */
static gboolean
recover_advance (Recover *r, LpForward *fw, LpTrainer *tr, int layer, float *x, GError **error)
{
  gsize TD = (gsize) r->T * lp_model_config (r->teacher)->dim;
  for (int s = 0; s < r->N; s++)
    {
      float *xi = x + s * TD;
      if (tr ? !lp_trainer_block (tr, layer, xi, r->y, r->T, error) : !lp_forward_block (fw, layer, xi, r->T, NULL, NULL, error))
        return FALSE;
      if (tr)
        memcpy (xi, r->y, TD * sizeof (float));
    }
  return TRUE;
}

/* Every sample's embedding [N, T, D] by `model`. */
static float *
recover_embed (Recover *r, LpForward *fw, GError **error)
{
  gsize TD = (gsize) r->T * lp_model_config (r->teacher)->dim;
  g_autofree float *x = g_new (float, (gsize) r->N * TD);
  for (int s = 0; s < r->N; s++)
    if (!lp_forward_embed (fw, lp_calibration_sample (r->cal, s), r->T, x + s * TD, error))
      return NULL;
  return g_steal_pointer (&x);
}

static LpModel *
recover_blockwise (Recover *r, LpModel *student, GError **error)
{
  int n_layers = (int) lp_model_config (student)->n_layers;
  g_autoptr (LpForward) tfw = lp_forward_new (r->teacher, r->be, error);
  g_autoptr (LpForward) sfw = tfw ? lp_forward_new (student, r->be, error) : NULL;
  if (sfw == NULL || (r->xt = recover_embed (r, tfw, error)) == NULL || (r->xs = recover_embed (r, sfw, error)) == NULL)
    return NULL;
  g_clear_pointer (&sfw, lp_forward_free);
  r->y = g_new (float, (gsize) r->T * lp_model_config (student)->dim);
  r->steps_total = 0;
  for (int l = 0; l < n_layers; l++)
    r->steps_total += recover_layer_trains (r, student, l) ? r->steps : 0;
  g_autoptr (LpModel) current = lp_model_ref (student);
  for (int l = 0; l < n_layers; l++)
    {
      /* The target: the teacher's block l on the teacher's own stream. */
      if (!recover_advance (r, tfw, NULL, l, r->xt, error))
        return NULL;
      if (!recover_layer_trains (r, current, l))
        {
          /* Nothing of this block trains: the student's stream goes through it as it is. */
          g_autoptr (LpForward) fw = lp_forward_new (current, r->be, error);
          if (fw == NULL || !recover_advance (r, fw, NULL, l, r->xs, error))
            return NULL;
          continue;
        }
      g_autoptr (LpTrainer) tr = NULL;
      if (!recover_new_trainer (r, current, l, &tr, error) || !recover_train (r, tr, &objective_block, l, error))
        return NULL;
      LpModel *next = lp_trainer_model (tr, r->merge, error);
      if (next == NULL || !recover_advance (r, NULL, tr, l, r->xs, error))
        {
          g_clear_pointer (&next, lp_model_unref);
          return NULL;
        }
      g_clear_pointer (&current, lp_model_unref);
      current = next;
    }
  return g_steal_pointer (&current);
}

static void
recover_clear (Recover *r)
{
  g_clear_pointer (&r->rng, g_rand_free);
  g_clear_pointer (&r->order, g_free);
  g_clear_pointer (&r->teacher_fw, lp_forward_free);
  g_clear_pointer (&r->teacher_logits, g_free);
  g_clear_pointer (&r->teacher_have, g_free);
  g_clear_pointer (&r->targets, g_free);
  g_clear_pointer (&r->logits, g_free);
  g_clear_pointer (&r->xs, g_free);
  g_clear_pointer (&r->xt, g_free);
  g_clear_pointer (&r->y, g_free);
}

static void
recover_record (Recover *r, LpModel *out)
{
  LpMeta *m = lp_model_meta (out);
  lp_meta_set_string (m, "llmpress.distill.objective", r->objective == OBJECTIVE_E2E ? "e2e" : "blockwise");
  lp_meta_set_u64 (m, "llmpress.distill.steps", (guint64) r->steps);
  lp_meta_set_u64 (m, "llmpress.distill.seq_len", (guint64) r->T);
  if (r->n_hold > 0 && r->objective == OBJECTIVE_E2E)
    {
      lp_meta_set_f32 (m, "llmpress.distill.holdout_perplexity_before", (float) r->holdout_before);
      lp_meta_set_f32 (m, "llmpress.distill.holdout_perplexity_after", (float) r->holdout_after);
    }
}

gboolean
distill_recover_run (LpPassContext *ctx, GError **error)
{
  Recover r = { .ctx = ctx, .holdout_before = NAN, .holdout_after = NAN };
  LpModel *student = lp_pass_context_get_input_model (ctx, "input");
  r.teacher = lp_pass_context_get_input_model (ctx, "teacher");
  r.be = lp_pass_context_get_backend (ctx);
  if (!recover_read_params (&r, error)
      || !distill_check_teacher (student, r.teacher, r.objective == OBJECTIVE_BLOCKWISE, error))
    return FALSE;
  if (!recover_layer_trains (&r, student, -1))
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "trainable=%s: expected globs matching tensors of the student (named like blk.0.attn_q.weight), "
                    "found none", lp_tensor_pattern_text (r.trainable));
      return FALSE;
    }
  g_autoptr (LpModel) out = NULL;
  if (recover_read_samples (&r, error)
      && distill_teacher_logits_input (ctx, student, r.cal, r.objective == OBJECTIVE_E2E,
                                       lp_pass_context_param_is_set (ctx, "temperature"), &r.temperature,
                                       &r.teacher_topk, error))
    {
      r.t0 = g_get_monotonic_time ();
      out = r.objective == OBJECTIVE_E2E ? recover_e2e (&r, student, error) : recover_blockwise (&r, student, error);
    }
  if (out != NULL)
    {
      recover_record (&r, out);
      lp_pass_context_set_output_model (ctx, out);
    }
  recover_clear (&r);
  return out != NULL;
}
