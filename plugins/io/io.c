/* llmpress io plugin: `load` reads every format the library reads (with a
 * LoRA adapter applied on request), `save` writes GGUF, a safetensors
 * directory or a llama2.c checkpoint and the model's adapters as a GGUF
 * LoRA or a PEFT directory, `merge` folds adapters into their weights. */
#include "config.h"

#include <llmpress/llmpress.h>

static const LpParamSpec load_params[] = {
  { .name = "path", .type = LP_PARAM_PATH,
    .help = "the model: a GGUF file, a Hugging Face directory (config.json + *.safetensors) or a llama2.c checkpoint",
    .flags = LP_PARAM_REQUIRED },
  { .name = "tokenizer", .type = LP_PARAM_PATH,
    .help = "llama2.c only: the tokenizer.bin to use (default: <stem>.tokenizer.bin, tokenizer.bin or tok<V>.bin beside the checkpoint)" },
  { .name = "adapter", .type = LP_PARAM_PATH,
    .help = "a LoRA adapter to apply: a GGUF LoRA file (llama.cpp's --lora) or a PEFT directory (adapter_config.json + "
    "adapter_model.safetensors); the weights it names become base + adapter for every later pass" },
  { .name = NULL }
};

static gboolean
load_run (LpPassContext *ctx, GError **error)
{
  LpLoadOptions opts = { lp_pass_context_get_string (ctx, "tokenizer") };
  const char *path = lp_pass_context_get_string (ctx, "path");
  const char *adapter = lp_pass_context_get_string (ctx, "adapter");
  g_autoptr (LpModel) model = lp_model_load (path, &opts, error);
  if (model == NULL)
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "%s: %s, %" G_GINT64_FORMAT " parameters", path,
                       lp_format_name (lp_model_source_format (model)), lp_model_n_params (model));
  if (adapter != NULL)
    {
      guint n = 0;
      LpModel *with = lp_model_apply_adapter (model, adapter, &n, error);
      if (with == NULL)
        return FALSE;
      lp_model_unref (model);
      model = with;
      lp_pass_context_log (ctx, LP_LOG_INFO, "%s: a LoRA adapter on %u weights", adapter, n);
    }
  lp_pass_context_set_output_model (ctx, model);
  return TRUE;
}

static const LpPassInfo load_pass = {
  .name = "load",
  .summary = "read a model (GGUF, Hugging Face safetensors directory, llama2.c)",
  .params = load_params,
  .inputs = NULL,
  .output = LP_ARTIFACT_MODEL,
  .run = load_run,
};

static const char *const save_formats[] = { "auto", "gguf", "safetensors", "llama2c", NULL };
static const char *const save_dtypes[] = { "keep", "f32", "f16", "bf16", NULL };
static const char *const save_quant_formats[] = { "gptq", "compressed-tensors", NULL };
static const char *const save_overflows[] = { "error", "clamp", NULL };
static const char *const save_adapter_formats[] = { "auto", "gguf", "peft", NULL };

static const LpParamSpec save_params[] = {
  { .name = "path", .type = LP_PARAM_PATH,
    .help = "where to write the model (relative to the run's output directory); written atomically.  With adapter=: "
    "the base, without its adapters",
    .flags = LP_PARAM_OUTPUT },
  { .name = "adapter", .type = LP_PARAM_PATH,
    .help = "where to write the model's LoRA adapters, for a runtime to apply over the base at path= (either may be "
    "given alone); written atomically",
    .flags = LP_PARAM_OUTPUT },
  { .name = "adapter_format", .type = LP_PARAM_ENUM, .default_value = "auto", .choices = save_adapter_formats,
    .help = "gguf: a GGUF LoRA adapter (llama.cpp --lora); peft: a PEFT directory (adapter_config.json + "
    "adapter_model.safetensors: transformers, vLLM); auto: gguf for a .gguf name, else peft" },
  { .name = "format", .type = LP_PARAM_ENUM, .default_value = "auto", .choices = save_formats,
    .help = "file format; auto: from the name (.gguf, .bin = llama2.c, a directory = safetensors)" },
  { .name = "dtype", .type = LP_PARAM_ENUM, .default_value = "keep", .choices = save_dtypes,
    .help = "type of the float tensors (the adapter's factors too); keep: as they are (compressed tensors are never converted)" },
  { .name = "quant_format", .type = LP_PARAM_ENUM, .default_value = "gptq", .choices = save_quant_formats,
    .help = "how a safetensors directory holds integer-grid layers: AutoGPTQ's qweight/qzeros/scales/g_idx, or "
    "compressed-tensors pack-quantized (llm-compressor, vLLM; 4 or 8 bits)" },
  { .name = "f16_overflow", .type = LP_PARAM_ENUM, .default_value = "error", .choices = save_overflows,
    .help = "dtype f16 (or bf16) and a finite value beyond its range (|x| > 65504 for f16): error names the tensor, "
    "element and value; clamp writes the largest finite value and says how many were clamped" },
  { .name = NULL }
};

static const LpInputSpec model_input[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model" },
  { .name = NULL }
};

static gboolean
save_run (LpPassContext *ctx, GError **error)
{
  LpModel *model = lp_pass_context_get_input_model (ctx, "input");
  const char *path = lp_pass_context_get_string (ctx, "path");
  const char *adapter = lp_pass_context_get_string (ctx, "adapter");
  static const LpFormat formats[] = { LP_FORMAT_UNKNOWN, LP_FORMAT_GGUF, LP_FORMAT_HF, LP_FORMAT_LLAMA2C };
  static const int dtypes[] = { -1, LP_DTYPE_F32, LP_DTYPE_F16, LP_DTYPE_BF16 };
  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  opts.format = formats[lp_pass_context_get_enum (ctx, "format")];
  opts.dtype = dtypes[lp_pass_context_get_enum (ctx, "dtype")];
  opts.compressed_tensors = lp_pass_context_get_enum (ctx, "quant_format") == 1;
  opts.overflow = lp_pass_context_get_enum (ctx, "f16_overflow") == 1 ? LP_OVERFLOW_CLAMP : LP_OVERFLOW_ERROR;
  if (path == NULL && adapter == NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID, "save: expected path= (the model) or adapter= (its LoRA adapters), found neither");
      return FALSE;
    }
  /* The adapter first: it is what a model may lack (no adapter: nothing is written). */
  if (adapter != NULL)
    {
      static const LpAdapterFormat adapter_formats[] = { LP_ADAPTER_FORMAT_AUTO, LP_ADAPTER_FORMAT_GGUF,
                                                         LP_ADAPTER_FORMAT_PEFT };
      LpAdapterFormat af = adapter_formats[lp_pass_context_get_enum (ctx, "adapter_format")];
      if (!lp_model_save_adapter (model, adapter, af, opts.dtype, path, error))
        return FALSE;
      lp_pass_context_log (ctx, LP_LOG_INFO, "wrote %s", adapter);
    }
  if (path == NULL)
    return TRUE;
  g_autoptr (LpModel) base = adapter != NULL ? lp_model_adapter_bases (model, NULL) : lp_model_ref (model);
  if (!lp_model_save (base, path, &opts, error))
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "wrote %s", path);
  return TRUE;
}

static const LpPassInfo save_pass = {
  .name = "save",
  .summary = "write a model as GGUF, a safetensors directory or a llama2.c checkpoint, and/or its LoRA adapters (GGUF LoRA, PEFT)",
  .params = save_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_NONE,
  .run = save_run,
};

/* Adapters folded into their weights.  It is no factorization (nothing is
 * decomposed) but a change of how weights are held, like load and save,
 * so it lives here, beside the adapter files. */
static const LpParamSpec merge_params[] = {
  { .name = NULL }
};

static gboolean
merge_run (LpPassContext *ctx, GError **error)
{
  LpModel *model = lp_pass_context_get_input_model (ctx, "input");
  guint merged = 0, dequantized = 0;
  g_autoptr (LpModel) out = lp_model_merge_adapters (model, &merged, &dequantized, error);
  if (out == NULL)
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "merged %u adapters into their weights", merged);
  if (dequantized > 0)
    lp_pass_context_log (ctx, LP_LOG_WARNING,
                         "%u of them over quantized weights are now f32 (base + adapter exactly); quantize again to "
                         "shrink them", dequantized);
  lp_pass_context_set_output_model (ctx, out);
  return TRUE;
}

static const LpPassInfo merge_pass = {
  .name = "merge",
  .summary = "fold every LoRA adapter into its weight: dense f32/f16/bf16 bases keep their type, quantized ones become f32",
  .params = merge_params,
  .inputs = model_input,
  .output = LP_ARTIFACT_MODEL,
  .run = merge_run,
};

/* Activation statistics to and from files: our GGUF (which llama.cpp reads
 * as an imatrix) and llama.cpp's imatrix files. */
static const LpParamSpec load_stats_params[] = {
  { .name = "path", .type = LP_PARAM_PATH,
    .help = "statistics: an llmpress stats GGUF, a llama.cpp imatrix GGUF or a legacy imatrix.dat",
    .flags = LP_PARAM_REQUIRED },
  { .name = NULL }
};

static gboolean
load_stats_run (LpPassContext *ctx, GError **error)
{
  g_autoptr (LpStats) stats = lp_stats_load (lp_pass_context_get_string (ctx, "path"), error);
  if (stats == NULL)
    return FALSE;
  g_autoptr (LpArtifact) a = lp_artifact_new_stats (stats);
  lp_pass_context_set_output (ctx, a);
  return TRUE;
}

static const LpPassInfo load_stats_pass = {
  .name = "load_stats",
  .summary = "read activation statistics (llmpress stats GGUF, llama.cpp imatrix)",
  .params = load_stats_params,
  .inputs = NULL,
  .output = LP_ARTIFACT_STATS,
  .run = load_stats_run,
};

static const LpParamSpec save_stats_params[] = {
  { .name = "path", .type = LP_PARAM_PATH,
    .help = "where to write the statistics as GGUF (also a llama.cpp imatrix: llama-quantize --imatrix reads it)",
    .flags = LP_PARAM_REQUIRED | LP_PARAM_OUTPUT },
  { .name = NULL }
};

static const LpInputSpec stats_input[] = {
  { .name = "input", .kind = LP_ARTIFACT_STATS, .help = "the statistics" },
  { .name = NULL }
};

static gboolean
save_stats_run (LpPassContext *ctx, GError **error)
{
  LpStats *stats = lp_artifact_get_stats (lp_pass_context_get_input (ctx, "input"));
  const char *path = lp_pass_context_get_string (ctx, "path");
  if (!lp_stats_save (stats, path, error))
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO, "wrote %s", path);
  return TRUE;
}

static const LpPassInfo save_stats_pass = {
  .name = "save_stats",
  .summary = "write activation statistics as GGUF (readable by llama-quantize --imatrix)",
  .params = save_stats_params,
  .inputs = stats_input,
  .output = LP_ARTIFACT_NONE,
  .run = save_stats_run,
};

static const LpPassInfo *const passes[] = { &load_pass, &save_pass, &merge_pass, &load_stats_pass, &save_stats_pass, NULL };

LP_PLUGIN_DEFINE ("io", PACKAGE_VERSION, "MIT", passes)
