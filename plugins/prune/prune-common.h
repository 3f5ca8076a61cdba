/* llmpress prune plugin — what the weight-pruning passes (magnitude, Wanda,
 * SparseGPT) share: their common parameters, the per-layer sparsity profile,
 * and turning a selection into a masked tensor plus its metadata. */
#pragma once

#include <llmpress/llmpress.h>
#include <llmpress/layerwise.h>

/* The parameters every weight-pruning pass declares (first in its table). */
#define PRUNE_DEFAULT_TARGETS                                                                   \
  "blk.*.attn_q.weight,blk.*.attn_k.weight,blk.*.attn_v.weight,blk.*.attn_output.weight,"     \
  "blk.*.ffn_gate.weight,blk.*.ffn_up.weight,blk.*.ffn_down.weight"

#define PRUNE_COMMON_PARAMS                                                                                       \
  { .name = "sparsity", .type = LP_PARAM_FLOAT, .default_value = "0.5", .min = 0, .max = 1,                       \
    .help = "fraction of each targeted tensor's weights to prune, in [0, 1) (unstructured only; N:M "             \
    "implies 1 - N/M)",                                                                                           \
    .flags = LP_PARAM_RANGE },                                                                                    \
  { .name = "pattern", .type = LP_PARAM_STRING, .default_value = "unstructured",                                  \
    .help = "unstructured, or N:M: at most N of every M consecutive weights of a row kept (2:4, 4:8)" },          \
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = PRUNE_DEFAULT_TARGETS,                          \
    .help = "tensors to prune: globs, comma-separated (default: every linear weight of the blocks)" },            \
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "tensors left dense" },              \
  { .name = "profile", .type = LP_PARAM_ENUM, .default_value = "uniform", .choices = prune_profiles,              \
    .help = "per-layer sparsity: uniform, or owl (outlier-weighted: layers with more outlier scores "             \
    "keep more weights, the mean stays `sparsity`)" },                                                            \
  { .name = "owl_m", .type = LP_PARAM_FLOAT, .default_value = "5", .min = 1, .max = 1000,                         \
    .help = "owl: a score is an outlier above this many times its layer's mean score", .flags = LP_PARAM_RANGE }, \
  { .name = "owl_lambda", .type = LP_PARAM_FLOAT, .default_value = "0.08", .min = 0, .max = 0.5,                  \
    .help = "owl: layer sparsities spread over sparsity +- this", .flags = LP_PARAM_RANGE }

extern const char *const prune_profiles[];

typedef struct {
  LpPassContext *ctx;
  const char *method;
  double sparsity;
  LpSparsityPattern pattern;
  const LpTensorPattern *targets;
  const LpTensorPattern *ignore;
  LpModel *work;            /* the output, derived from the input */
  double *layer_sparsity;   /* [n_layers]: the profile */
  int n_layers;
  guint64 n_pruned, n_total;
} PruneJob;

/* Read and check the common parameters; derive the output model. */
gboolean prune_job_init (PruneJob *job, LpPassContext *ctx, const char *method, GError **error);
void prune_job_clear (PruneJob *job);
/* Whether the job prunes this tensor (targets, not ignore). */
gboolean prune_job_wants (const PruneJob *job, const char *name);
/* The sparsity of the tensor's layer (the profile; `sparsity` outside blocks). */
double prune_job_sparsity_for (const PruneJob *job, const char *name);
/* The values of t as f32, checked finite and against the pattern (messages
 * name t when `named`); g_free(). */
float *prune_job_values (const PruneJob *job, const LpTensor *t, gboolean named, GError **error);
/* Check every targeted tensor of the input before any calibration runs. */
gboolean prune_job_check_input (const PruneJob *job, GError **error);
/* OWL: the profile from each layer's scores (score (t, values, user) fills
 * scores[n] for one targeted tensor). */
typedef gboolean (*PruneScoreFunc) (gpointer user_data, const LpTensor *t, const float *values, float *scores,
                                    GError **error);
gboolean prune_job_profile (PruneJob *job, LpModel *model, PruneScoreFunc score, gpointer user_data,
                            GError **error);
/* OWL for the calibrated passes: the profile from Wanda's metric on the
 * input model's statistics (no-op with profile=uniform). */
gboolean prune_owl_profile (PruneJob *job, GError **error);
/* The masked tensor for t (values with pruned[] zeroed); counted and
 * recorded in the metadata.  Owned. */
LpTensor *prune_job_make_tensor (PruneJob *job, const LpTensor *t, const float *values, const guint8 *pruned,
                                 GError **error);
/* Record the totals and publish the model; fails when nothing was pruned
 * because no tensor matched. */
gboolean prune_job_publish (PruneJob *job, GError **error);

/* Bail out of a loop when the user interrupted the run. */
gboolean prune_check_cancelled (LpPassContext *ctx, GError **error);

/* Layer of "blk.<l>.*", -1 for other names. */
int prune_tensor_layer (const char *name);
