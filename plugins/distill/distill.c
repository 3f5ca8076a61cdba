/* llmpress distill plugin: knowledge distillation that wins back what
 * pruning and quantization cost.
 *   distill.recover  train the compressed student toward a teacher (block-wise
 *                    reconstruction or end-to-end logit distillation) on the
 *                    calibration data, in each weight's own form
 *   distill.teacher  the teacher's top-k logits on the calibration samples, computed once,
 *                    as an artifact any number of students read (teacher_logits=) */
#include "config.h"

#include "distill.h"
#include "teacher-pass.h"

static const char *const objectives[] = { "e2e", "blockwise", NULL };
static const char *const quantized_modes[] = { "ste", "scales", NULL };
static const char *const schedules[] = { "cosine", "constant", NULL };

static const LpInputSpec recover_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the student: the compressed model to train" },
  { .name = "teacher", .kind = LP_ARTIFACT_MODEL,
    .help = "the teacher: a model with the student's vocabulary and tokenizer (e.g. teacher=load, the uncompressed one)" },
  DISTILL_TEACHER_LOGITS_INPUT,
  { .name = NULL }
};

static const LpParamSpec recover_params[] = {
  { .name = "objective", .type = LP_PARAM_ENUM, .default_value = "e2e", .choices = objectives,
    .help = "e2e: KL divergence to the teacher's next-token distributions through the whole model (mixed with the "
    "data's cross-entropy by alpha); blockwise: each block in turn trained to reproduce the teacher block's output "
    "(MSE) from the student's own input" },
  { .name = "temperature", .type = LP_PARAM_FLOAT, .default_value = "1", .min = 0.01, .max = 100,
    .help = "e2e: distillation temperature T (the KL term is scaled by T^2)", .flags = LP_PARAM_RANGE },
  { .name = "alpha", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 1,
    .help = "e2e: weight of the data's cross-entropy; 1 - alpha goes to the KL term", .flags = LP_PARAM_RANGE },
  { .name = "trainable", .type = LP_PARAM_TENSORS, .default_value = "blk.*",
    .help = "tensors to train (globs); the rest stay frozen. Pruned weights stay zero, quantized ones stay on "
    "their grid" },
  { .name = "quantized", .type = LP_PARAM_ENUM, .default_value = "ste", .choices = quantized_modes,
    .help = "a quantized tensor trains its latent weights through a straight-through estimator (ste) or its "
    "scales only (scales); either way it ends on the same grid" },
  { .name = "adapter_base", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "a student's adapters (base + B A, e.g. factorize.compensate's Q + L R) train their base too, in "
    "its own form as quantized= says; false: A and B alone" },
  { .name = "lora_rank", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 1 << 16,
    .help = "> 0: train LoRA adapters of this rank over the frozen trainable weights instead of the weights",
    .flags = LP_PARAM_RANGE },
  { .name = "lora_alpha", .type = LP_PARAM_FLOAT, .default_value = "16", .min = 0, .max = 1e6,
    .help = "LoRA scale numerator: the adapter is scaled by lora_alpha / lora_rank", .flags = LP_PARAM_RANGE },
  { .name = "merge", .type = LP_PARAM_BOOL, .default_value = "true",
    .help = "fold LoRA adapters into their weights (false: keep them as adapters)" },
  { .name = "lr", .type = LP_PARAM_FLOAT, .default_value = "0.001", .min = 0, .max = 1e9,
    .help = "peak learning rate (AdamW)", .flags = LP_PARAM_HAS_MIN | LP_PARAM_HAS_MAX },
  { .name = "beta1", .type = LP_PARAM_FLOAT, .default_value = "0.9", .min = 0, .max = 0.999999,
    .help = "AdamW first-moment decay", .flags = LP_PARAM_RANGE },
  { .name = "beta2", .type = LP_PARAM_FLOAT, .default_value = "0.999", .min = 0, .max = 0.999999,
    .help = "AdamW second-moment decay", .flags = LP_PARAM_RANGE },
  { .name = "eps", .type = LP_PARAM_FLOAT, .default_value = "1e-8", .min = 0, .max = 1,
    .help = "AdamW epsilon", .flags = LP_PARAM_RANGE },
  { .name = "weight_decay", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 1,
    .help = "AdamW decoupled weight decay", .flags = LP_PARAM_RANGE },
  { .name = "warmup", .type = LP_PARAM_INT, .default_value = "10", .min = 0, .max = G_MAXINT32,
    .help = "steps of linear learning-rate warmup", .flags = LP_PARAM_RANGE },
  { .name = "schedule", .type = LP_PARAM_ENUM, .default_value = "cosine", .choices = schedules,
    .help = "learning rate after warmup: cosine decay to 0 over the remaining steps, or constant" },
  { .name = "clip", .type = LP_PARAM_FLOAT, .default_value = "1", .min = 0, .max = 1e9,
    .help = "clip the gradient's global norm to this (0: no clipping)", .flags = LP_PARAM_RANGE },
  { .name = "micro_batch", .type = LP_PARAM_INT, .default_value = "4", .min = 1, .max = 1 << 20,
    .help = "sequences per micro-batch", .flags = LP_PARAM_RANGE },
  { .name = "seq_len", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 1 << 24,
    .help = "tokens per training sequence (the first of each calibration sample); 0: the calibration's "
    "calibration_seq_len", .flags = LP_PARAM_RANGE },
  { .name = "accumulate", .type = LP_PARAM_INT, .default_value = "1", .min = 1, .max = 1 << 20,
    .help = "micro-batches whose gradients are accumulated into one optimizer step", .flags = LP_PARAM_RANGE },
  { .name = "steps", .type = LP_PARAM_INT, .default_value = "100", .min = 1, .max = G_MAXINT32,
    .help = "optimizer steps (per block with objective=blockwise)", .flags = LP_PARAM_RANGE },
  { .name = "tokens", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = G_MAXINT64,
    .help = "train on this many tokens instead of steps= (rounded up to whole steps); 0: use steps=",
    .flags = LP_PARAM_HAS_MIN },
  { .name = "eval_every", .type = LP_PARAM_INT, .default_value = "25", .min = 0, .max = G_MAXINT32,
    .help = "measure the held-out split every this many steps and keep the best state (0: only before and "
    "after training)", .flags = LP_PARAM_RANGE },
  { .name = "holdout", .type = LP_PARAM_INT, .default_value = "8", .min = 0, .max = 1 << 20,
    .help = "calibration samples held out of training for that measurement (perplexity; block output MSE with "
    "objective=blockwise); 0: none, the last state is kept", .flags = LP_PARAM_RANGE },
  { .name = "patience", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = G_MAXINT32,
    .help = "stop after this many held-out measurements without improvement (0: never stop early)",
    .flags = LP_PARAM_RANGE },
  { .name = "seed", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = G_MAXINT64,
    .help = "seed of the sample order and the LoRA initialisation (default: the node's seed from [pipeline] "
    "seed=)", .flags = LP_PARAM_HAS_MIN },
  { .name = NULL }
};

static const LpPassInfo recover_pass = {
  .name = "distill.recover",
  .summary = "knowledge distillation: train a pruned or quantized student toward a teacher on the calibration data "
  "(block-wise MSE or end-to-end KL), keeping masks and grids",
  .params = recover_params,
  .inputs = recover_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION | LP_PASS_USES_DEVICE,
  .run = distill_recover_run,
};

static const LpPassInfo *const passes[] = {
  &recover_pass,
  &lp_distill_teacher_pass,
  NULL
};

LP_PLUGIN_DEFINE ("distill", PACKAGE_VERSION, "MIT", passes)
