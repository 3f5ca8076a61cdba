/* llmpress — the SDK umbrella header. */
#pragma once

#include <llmpress/version.h>
#include <llmpress/error.h>
#include <llmpress/dtype.h>
#include <llmpress/tensor.h>
#include <llmpress/meta.h>
#include <llmpress/arch.h>
#include <llmpress/model.h>
#include <llmpress/safetensors.h>
#include <llmpress/tokenizer.h>
#include <llmpress/fileutil.h>
#include <llmpress/synth.h>
#include <llmpress/backend.h>
#include <llmpress/forward.h>
#include <llmpress/progress.h>
#include <llmpress/eval.h>
#include <llmpress/calibration.h>
#include <llmpress/stats.h>
#include <llmpress/artifact.h>
#include <llmpress/params.h>
#include <llmpress/context.h>
#include <llmpress/plugin.h>
#include <llmpress/quant.h>
#include <llmpress/obs.h>
#include <llmpress/layerwise.h>
#include <llmpress/sparsity.h>
