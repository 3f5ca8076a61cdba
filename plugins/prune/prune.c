/* llmpress prune plugin: the passes and their parameter tables.
 *   prune.magnitude  smallest |W|
 *   prune.wanda      smallest |W| * ||X_j|| per output row (Sun et al. 2023)
 *   prune.sparsegpt  OBS reconstruction against the layer Hessian (Frantar & Alistarh 2023)
 *   prune.layers     whole blocks of least influence (1 - cos(in, out), Men et al. 2024)
 *   prune.channels   FFN channels and KV groups of least importance: a smaller dense model */
#include "config.h"

#include "prune-common.h"
#include "prune-passes.h"

static const char *const scopes[] = { "tensor", "row", NULL };

static const LpInputSpec model_input[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to prune" },
  { .name = NULL }
};

static const LpParamSpec magnitude_params[] = {
  PRUNE_COMMON_PARAMS,
  { .name = "scope", .type = LP_PARAM_ENUM, .default_value = "tensor", .choices = scopes,
    .help = "unstructured quota: over the whole tensor, or the same in every row" },
  { .name = NULL }
};

static const LpPassInfo magnitude_pass = {
  .name = "prune.magnitude",
  .summary = "prune the weights of smallest magnitude (unstructured or N:M), stored as zeros with a mask",
  .params = magnitude_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = prune_magnitude_run,
};

static const LpParamSpec wanda_params[] = {
  PRUNE_COMMON_PARAMS,
  { .name = "scope", .type = LP_PARAM_ENUM, .default_value = "row", .choices = scopes,
    .help = "unstructured quota: the same in every output row (the paper's choice), or over the whole tensor" },
  { .name = NULL }
};

static const LpPassInfo wanda_pass = {
  .name = "prune.wanda",
  .summary = "Wanda: prune by |W| x input activation norm on the calibration data, per output row or N:M",
  .params = wanda_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = prune_wanda_run,
};

static const LpParamSpec sparsegpt_params[] = {
  PRUNE_COMMON_PARAMS,
  { .name = "block_size", .type = LP_PARAM_INT, .default_value = "128", .min = 1, .max = 1 << 20,
    .help = "columns per lazy-update block (the unstructured mask is chosen per block; rounded up to a multiple of M)",
    .flags = LP_PARAM_RANGE },
  { .name = "damp", .type = LP_PARAM_FLOAT, .default_value = "0.01", .min = 1e-6, .max = 1,
    .help = "dampening: this fraction of the Hessian's mean diagonal is added to its diagonal (raised tenfold, up to "
    "three times, when that is not enough)",
    .flags = LP_PARAM_RANGE },
  { .name = NULL }
};

static const LpPassInfo sparsegpt_pass = {
  .name = "prune.sparsegpt",
  .summary = "SparseGPT: prune and reconstruct each layer against its calibration Hessian (unstructured or N:M)",
  .params = sparsegpt_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = prune_sparsegpt_run,
};

static const LpParamSpec layers_params[] = {
  { .name = "n", .type = LP_PARAM_INT, .default_value = "1", .min = 1, .max = 1 << 20,
    .help = "blocks to remove (unless ratio= is given)", .flags = LP_PARAM_RANGE },
  { .name = "ratio", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 1,
    .help = "fraction of the blocks to remove, rounded (instead of n=)", .flags = LP_PARAM_RANGE },
  { .name = NULL }
};

static const LpPassInfo layers_pass = {
  .name = "prune.layers",
  .summary = "remove whole blocks of least influence (1 - cos(input, output) on the calibration data)",
  .params = layers_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = prune_layers_run,
};

static const LpParamSpec channels_params[] = {
  { .name = "ffn_ratio", .type = LP_PARAM_FLOAT, .default_value = "0.25", .min = 0, .max = 1,
    .help = "fraction of the FFN intermediate channels removed in every block, in [0, 1)", .flags = LP_PARAM_RANGE },
  { .name = "kv_ratio", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 1,
    .help = "fraction of the key/value groups (a KV head and the query heads reading it) removed in every block, in [0, 1)",
    .flags = LP_PARAM_RANGE },
  { .name = NULL }
};

static const LpPassInfo channels_pass = {
  .name = "prune.channels",
  .summary = "remove FFN channels and KV groups of least importance (||W[:,j]||^2 sum x_j^2): a smaller dense model",
  .params = channels_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = prune_channels_run,
};

static const LpPassInfo *const passes[] = { &magnitude_pass, &wanda_pass, &sparsegpt_pass, &layers_pass,
                                            &channels_pass, NULL };

LP_PLUGIN_DEFINE ("prune", PACKAGE_VERSION, "MIT", passes)
