/* llmpress convert: read a model in one format, write it in another. */
#include "config.h"

#include <string.h>

#include "cli.h"

int
lp_cmd_convert (int argc, char **argv)
{
  g_autofree char *type = NULL, *format = NULL, *tokenizer = NULL, *quant_format = NULL, *overflow = NULL;
  const GOptionEntry entries[] = {
    { "type", 't', 0, G_OPTION_ARG_STRING, &type, "Store weights as f32, f16 or bf16, quantized ones dequantized (default: as read)", "TYPE" },
    { "format", 'f', 0, G_OPTION_ARG_STRING, &format, "Output format: gguf, hf (safetensors) or llama2c (default: from OUT)", "FORMAT" },
    { "quant-format", 0, 0, G_OPTION_ARG_STRING, &quant_format,
      "Integer-grid layers in a safetensors directory: gptq (default) or compressed-tensors", "QFORMAT" },
    LP_CLI_OVERFLOW_ENTRY (overflow),
    LP_CLI_TOKENIZER_ENTRY (tokenizer),
    { NULL },
  };
  if (!lp_cli_parse ("convert", "IN OUT", "Convert a model between GGUF, Hugging Face (safetensors) and llama2.c.",
                     "OUT's format is taken from --format, else from its name: .gguf is GGUF,\n"
                     ".bin is llama2.c, a directory (or a name without extension) is Hugging Face.\n"
                     "The input is never overwritten; the output appears only when complete.\n"
                     "Missing directories above OUT are created.  An existing directory is\n"
                     "written into only when empty or a previous llmpress output (other files\n"
                     "in it are kept); a symlink at OUT is replaced, never followed.\n"
                     "--type dequantizes ggml block types (Q4_1, Q8_0, Q4_K, ...) too: that is how\n"
                     "a quantized GGUF's dense model is made (norms and biases stay f32).  Without\n"
                     "it, integer grids (GPTQ, AWQ, compressed-tensors) go into GGUF as the block\n"
                     "type holding the same weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; f32 where none\n"
                     "does, reported); --type f32 keeps them dense.  A Hugging Face directory\n"
                     "cannot hold block types: they are written dequantized, as f32 unless --type\n"
                     "says otherwise.\n\n"
                     "Example:\n  llmpress convert stories260K.bin stories260K-f16.gguf --type f16\n"
                     "  llmpress convert SmolLM2-135M-Instruct.Q4_1.gguf smollm2-f32.gguf --type f32\n"
                     "  llmpress convert gptq-checkpoint/ model.gguf",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 3)
    return lp_cli_usage_error ("convert", "expected IN and OUT, found %d argument%s", argc - 1, argc == 2 ? "" : "s");

  LpSaveOptions save;
  if (!lp_cli_save_options ("convert", type, format, overflow, &save))
    return LP_EXIT_USAGE;
  if (quant_format != NULL && strcmp (quant_format, "gptq") != 0 && strcmp (quant_format, "compressed-tensors") != 0)
    return lp_cli_usage_error ("convert", "--quant-format: expected gptq or compressed-tensors, found '%s'", quant_format);
  save.compressed_tensors = quant_format != NULL && strcmp (quant_format, "compressed-tensors") == 0;
  GError *error = NULL;
  LpLoadOptions load = { tokenizer };
  g_autoptr (LpModel) model = lp_model_load (argv[1], &load, &error);
  if (model == NULL || !lp_cli_save_model (model, argv[2], &save, &error))
    return lp_cli_fail (error);
  return LP_EXIT_OK;
}
