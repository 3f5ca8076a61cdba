/* llmpress — training a model's weights on the compute graph.
 *
 * Gradients come from back-propagating the forward pass's own graphs
 * (forward.c records every block; nothing here writes a layer a second
 * time): lp_cgraph_backward over a block's graph, one block at a time, with
 * the block recomputed from its saved input (activation recomputation), so
 * memory stays near one block's activations plus one residual stream [T, D]
 * per layer.  Gradients accumulate on the backend across calls (micro-batches)
 * until lp_trainer_step applies AdamW, itself a backend op (LP_COP_ADAMW), so
 * a whole step stays on the device.
 *
 * What trains respects what came before, through each weight's form
 * (form.h): a masked weight's pruned entries get no gradient and stay exactly
 * zero; an integer-grid weight trains its latent values through a
 * straight-through estimator on its own grid (LP_TRAIN_QUANT_STE) or its
 * scales with the codes fixed (LP_TRAIN_QUANT_SCALES), and is rebuilt on the
 * same grid; a ggml block type trains f32 latent weights and is
 * re-quantized to the same type; low-rank factors train as factors; an
 * adapter trains A and B, each in its own form (factors on a grid stay on
 * it: CALDERA's quantized L and R), over its frozen base (or the base
 * too, in its form, with adapter_base).
 *
 * Shapes: T tokens, D model dim, V vocab, k teacher top-k. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/model.h>
#include <llmpress/params.h>

G_BEGIN_DECLS

typedef struct _LpTrainer LpTrainer;

typedef enum {
  LP_TRAIN_QUANT_STE,    /* latent weights, forward through the grid (straight-through) */
  LP_TRAIN_QUANT_SCALES, /* the grid's scales only; codes and zeros fixed */
} LpTrainQuantMode;

typedef struct {
  /* Tensors to train (globs, as params.h parses them); NULL: every
   * weight of the blocks (linear and norms). */
  const LpTensorPattern *trainable;
  /* Only block `layer`'s tensors (>= 0, block-wise reconstruction: only
   * its weights are uploaded trainable), or the whole model (-1). */
  int layer;
  LpTrainQuantMode quantized;
  /* An adapter's base (CALDERA's Q) trains too, in its own form as
   * `quantized` says, beside A and B; FALSE: frozen. */
  gboolean adapter_base;
  /* > 0: the chosen linear weights become base (frozen) + LoRA adapter of
   * this rank (A ~ U(-1/sqrt K, 1/sqrt K) from `seed`, B = 0, scale
   * lora_alpha / lora_rank), and only A and B train. */
  int lora_rank;
  double lora_alpha;
  guint64 seed;
  /* AdamW. */
  double beta1, beta2, eps, weight_decay;
} LpTrainOptions;

#define LP_TRAIN_OPTIONS_INIT { .trainable = NULL, .layer = -1, .quantized = LP_TRAIN_QUANT_STE, \
                                .lora_rank = 0, .lora_alpha = 16.0, .seed = 0,                   \
                                .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0 }

/* The teacher's next-token distributions for T positions: its logits
 * [T, V] (online), or its top-k (offline: ids [T, k], log-probabilities at
 * the distillation temperature [T, k], and the log-probability of all the
 * other tokens together [T], the rest bucket). */
typedef struct {
  const float *logits;
  int k;
  const gint32 *topk_ids;
  const float *topk_logp;
  const float *rest_logp;
} LpTeacherLogits;

/* Losses of one call, averaged over the scored tokens. */
typedef struct {
  double loss;  /* what was differentiated: alpha ce + (1 - alpha) kl, or the block's mse */
  double ce, kl, mse;
  int n_tokens;
} LpTrainLoss;

/* A trainer over a copy of `student`'s tensors (student is not changed);
 * the tensors chosen by `options` are uploaded trainable on `be` (NULL:
 * the CPU).  Fails (one line) when nothing matches `trainable`, or a
 * chosen tensor's form cannot train. */
LpTrainer *lp_trainer_new (LpModel *student, LpBackend *be, const LpTrainOptions *options, GError **error);
void lp_trainer_free (LpTrainer *tr);
/* Tensors trained and their trainable parameters (for the progress line). */
int lp_trainer_n_tensors (const LpTrainer *tr);
gint64 lp_trainer_n_params (const LpTrainer *tr);

/* End to end: the student's logits for tokens[T] (BOS first), loss =
 * alpha * cross-entropy against targets[T] (< 0: not scored; NULL: alpha
 * must be 0) + (1 - alpha) * temperature^2 KL (teacher || student) at
 * `temperature` (teacher NULL: alpha must be 1).  The gradient of
 * weight * loss is added to the accumulated gradients, block by block with
 * recomputation. */
gboolean lp_trainer_accumulate_e2e (LpTrainer *tr, const gint32 *tokens, const gint32 *targets, int T,
                                    const LpTeacherLogits *teacher, double temperature, double alpha, double weight,
                                    LpTrainLoss *loss, GError **error);
/* Block-wise: block `layer` on input x[T, D]; loss = mean squared error
 * between its output and y[T, D] (the teacher block's output); the
 * gradient of weight * loss is accumulated. */
gboolean lp_trainer_accumulate_block (LpTrainer *tr, int layer, const float *x, const float *y, int T, double weight,
                                      LpTrainLoss *loss, GError **error);
/* One AdamW step at learning rate lr over the accumulated gradients,
 * clipped to global norm `clip` first (0: not clipped); the gradients are
 * then zeroed.  *grad_norm (may be NULL): the norm before clipping.  A
 * non-finite norm leaves every weight unchanged and returns FALSE with
 * LP_ERROR_FAILED and a message saying so (the caller restores a good state). */
gboolean lp_trainer_step (LpTrainer *tr, double lr, double clip, double *grad_norm, GError **error);
/* The student as trained so far (rebuilt in each weight's form) in the
 * same LpForward the trainer uses: logits[T, V] for evaluation. */
gboolean lp_trainer_logits (LpTrainer *tr, const gint32 *tokens, int T, float *logits, GError **error);
/* Block `layer`'s output y[T, D] for input x[T, D] with the current weights. */
gboolean lp_trainer_block (LpTrainer *tr, int layer, const float *x, float *y, int T, GError **error);

/* Snapshots of the trained parameters and the optimizer's state (on the
 * backend): the best state so far, or the last good one to go back to. */
gboolean lp_trainer_save_state (LpTrainer *tr, GError **error);
gboolean lp_trainer_restore_state (LpTrainer *tr, GError **error);

/* A new model: `student` with every trained tensor rebuilt in its form
 * (masks kept, grids and block types re-quantized onto the same grid or
 * type, adapters merged when `merge`, else kept as adapters). */
LpModel *lp_trainer_model (LpTrainer *tr, gboolean merge, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpTrainer, lp_trainer_free)

G_END_DECLS
