/* llmpress factorize plugin: low-rank decompositions of the linear weights.
 *   factorize.svd   truncated SVD, W ≈ A B (no data)
 *   factorize.asvd  activation-aware SVD (SVD-LLM): truncation whitened by the
 *                   calibration Hessian, a global rank allocation, optional update
 *   factorize.compensate  CALDERA: a compressed model plus quantized low-rank
 *                   factors fitted to the reference's outputs (base + adapter)
 * The factorized weights are low-rank tensors (form.h): saved as
 * <name>.lr_a / <name>.lr_b, run by the forward pass as two products. */
#include "config.h"

#include "factorize.h"

static const LpInputSpec model_input[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to factorize" },
  { .name = NULL }
};

static const LpParamSpec svd_params[] = {
  FACTORIZE_COMMON_PARAMS,
  { .name = NULL }
};

static const LpPassInfo svd_pass = {
  .name = "factorize.svd",
  .summary = "truncated SVD of the linear weights into two thinner matrices W = A B (rank=, ratio= or energy=)",
  .params = svd_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = factorize_svd_run,
};

static const LpParamSpec asvd_params[] = {
  FACTORIZE_COMMON_PARAMS,
  { .name = "damp", .type = LP_PARAM_FLOAT, .default_value = "0.01", .min = 0, .max = 10,
    .help = "this fraction of the Hessian's mean diagonal is added to its diagonal before the Cholesky "
    "factorization (a Hessian not positive definite after it is an error)", .flags = LP_PARAM_RANGE },
  { .name = "update", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "refit A to the undamped Hessian after truncation: A = W H B^T (B H B^T)^-1, the least output error "
    "for the kept B" },
  { .name = "allocation", .type = LP_PARAM_ENUM, .default_value = "relative", .choices = asvd_allocations,
    .help = "how ratio= spreads the budget: relative (greedily, the components removing the largest fraction of "
    "their layer's output energy per parameter first), output (the same by absolute output error), uniform "
    "(every weight keeps the same fraction)" },
  { .name = NULL }
};

static const LpPassInfo asvd_pass = {
  .name = "factorize.asvd",
  .summary = "activation-aware SVD (SVD-LLM): truncation that minimises each layer's output error on the "
  "calibration data; ratio= is one budget over all layers, allocated by their whitened spectra",
  .params = asvd_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = factorize_asvd_run,
};

static const LpPassInfo *const passes[] = { &svd_pass, &asvd_pass, &fz_compensate_pass, NULL };

LP_PLUGIN_DEFINE ("factorize", PACKAGE_VERSION, "MIT", passes)
