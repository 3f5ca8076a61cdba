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
  { "input", LP_ARTIFACT_MODEL, FALSE, "the model to prune" },
  { NULL }
};

static const LpParamSpec magnitude_params[] = {
  PRUNE_COMMON_PARAMS,
  { "scope", LP_PARAM_ENUM, "tensor", 0, 0, scopes,
    "unstructured quota: over the whole tensor, or the same in every row" },
  { NULL }
};

static const LpPassInfo magnitude_pass = {
  .name = "prune.magnitude",
  .summary = "prune the weights of smallest magnitude (unstructured or N:M), stored as zeros with a mask",
  .params = magnitude_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = prune_magnitude_run,
};

static const LpParamSpec wanda_params[] = {
  PRUNE_COMMON_PARAMS,
  { "scope", LP_PARAM_ENUM, "row", 0, 0, scopes,
    "unstructured quota: the same in every output row (the paper's choice), or over the whole tensor" },
  { NULL }
};

static const LpPassInfo wanda_pass = {
  .name = "prune.wanda",
  .summary = "Wanda: prune by |W| x input activation norm on the calibration data, per output row or N:M",
  .params = wanda_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = prune_wanda_run,
};

static const LpParamSpec sparsegpt_params[] = {
  PRUNE_COMMON_PARAMS,
  { "block_size", LP_PARAM_INT, "128", 1, 1 << 20, NULL,
    "columns per lazy-update block (the unstructured mask is chosen per block; rounded up to a multiple of M)",
    LP_PARAM_RANGE },
  { "damp", LP_PARAM_FLOAT, "0.01", 1e-6, 1, NULL,
    "dampening: this fraction of the Hessian's mean diagonal is added to its diagonal (raised tenfold, up to "
    "three times, when that is not enough)", LP_PARAM_RANGE },
  { NULL }
};

static const LpPassInfo sparsegpt_pass = {
  .name = "prune.sparsegpt",
  .summary = "SparseGPT: prune and reconstruct each layer against its calibration Hessian (unstructured or N:M)",
  .params = sparsegpt_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = prune_sparsegpt_run,
};

static const LpParamSpec layers_params[] = {
  { "n", LP_PARAM_INT, "1", 1, 1 << 20, NULL, "blocks to remove (unless ratio= is given)", LP_PARAM_RANGE },
  { "ratio", LP_PARAM_FLOAT, "0", 0, 1, NULL, "fraction of the blocks to remove, rounded (instead of n=)",
    LP_PARAM_RANGE },
  { NULL }
};

static const LpPassInfo layers_pass = {
  .name = "prune.layers",
  .summary = "remove whole blocks of least influence (1 - cos(input, output) on the calibration data)",
  .params = layers_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = prune_layers_run,
};

static const LpParamSpec channels_params[] = {
  { "ffn_ratio", LP_PARAM_FLOAT, "0.25", 0, 1, NULL,
    "fraction of the FFN intermediate channels removed in every block, in [0, 1)", LP_PARAM_RANGE },
  { "kv_ratio", LP_PARAM_FLOAT, "0", 0, 1, NULL,
    "fraction of the key/value groups (a KV head and the query heads reading it) removed in every block, in [0, 1)",
    LP_PARAM_RANGE },
  { NULL }
};

static const LpPassInfo channels_pass = {
  .name = "prune.channels",
  .summary = "remove FFN channels and KV groups of least importance (||W[:,j]||^2 sum x_j^2): a smaller dense model",
  .params = channels_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = prune_channels_run,
};

static const LpPassInfo *const passes[] = { &magnitude_pass, &wanda_pass, &sparsegpt_pass, &layers_pass,
                                            &channels_pass, NULL };

LP_PLUGIN_DEFINE ("prune", PACKAGE_VERSION, "MIT", passes)
