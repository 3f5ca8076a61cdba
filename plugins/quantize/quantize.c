/* llmpress quantize plugin: quantize.rtn, quantize.gptq, quantize.awq, quantize.codebook. */
#include "config.h"

#include "quantize.h"

static const LpPassInfo *const passes[] = { &q_rtn_pass, &q_gptq_pass, &q_awq_pass, &q_codebook_pass, NULL };

LP_PLUGIN_DEFINE ("quantize", PACKAGE_VERSION, "MIT", passes)
