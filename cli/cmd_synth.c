/* llmpress synth: write a small deterministic model (lp_model_synth). */
#include "config.h"

#include "cli.h"
#include "lp-internal.h"

#include <llmpress/synth.h>

int
lp_cmd_synth (int argc, char **argv)
{
  LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
  g_autofree char *arch = NULL, *seed = NULL, *type = NULL, *format = NULL;
  const GOptionEntry entries[] = {
    { "arch", 'a', 0, G_OPTION_ARG_STRING, &arch, "Architecture: llama, mistral or qwen2 (default: llama)", "ARCH" },
    { "dim", 0, 0, G_OPTION_ARG_INT64, &o.dim, "Model dimension D (default: 64)", "N" },
    { "ffn", 0, 0, G_OPTION_ARG_INT64, &o.ffn_dim, "Feed-forward dimension F (default: 172)", "N" },
    { "layers", 0, 0, G_OPTION_ARG_INT64, &o.n_layers, "Number of layers L (default: 2)", "N" },
    { "heads", 0, 0, G_OPTION_ARG_INT64, &o.n_heads, "Attention heads H (default: 8)", "N" },
    { "kv-heads", 0, 0, G_OPTION_ARG_INT64, &o.n_kv_heads, "Key/value heads (default: 4)", "N" },
    { "vocab", 0, 0, G_OPTION_ARG_INT64, &o.n_vocab, "Vocabulary size V, at least 259 (default: 512)", "N" },
    { "ctx", 0, 0, G_OPTION_ARG_INT64, &o.ctx_len, "Context length (default: 512)", "N" },
    { "seed", 's', 0, G_OPTION_ARG_STRING, &seed, "Seed of the weights, 0 to 2^64-1 (default: 0)", "N" },
    { "untied", 0, 0, G_OPTION_ARG_NONE, &o.untied, "Give the model its own output head instead of sharing the embedding", NULL },
    { "type", 't', 0, G_OPTION_ARG_STRING, &type, "Store the weights as f32, f16 or bf16 (default: f32)", "TYPE" },
    { "format", 'f', 0, G_OPTION_ARG_STRING, &format, "Output format: gguf, hf (safetensors) or llama2c (default: from OUT)", "FORMAT" },
    { NULL },
  };
  if (!lp_cli_parse ("synth", "OUT", "Write a small deterministic Llama-architecture model with random weights.",
                     "The weights come from the seed alone: the same options always give\n"
                     "byte-identical files, on every machine.  The vocabulary is\n"
                     "SentencePiece-style (<unk> <s> </s>, 256 byte tokens, printable pieces).\n"
                     "OUT is written as convert writes (see llmpress convert --help).\n\n"
                     "Example:\n  llmpress synth tiny.gguf --dim 128 --layers 4 --seed 7",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2)
    return lp_cli_usage_error ("synth", "expected OUT, found %d argument%s", argc - 1, argc == 2 ? "" : "s");
  if (arch != NULL)
    {
      const LpArchInfo *info = lp_arch_lookup (arch);
      if (info == NULL)
        return lp_cli_usage_error ("synth", "--arch: expected one of %s, found '%s'", lp_arch_known_names (), arch);
      o.arch = info->arch;
    }
  if (seed != NULL && !g_ascii_string_to_unsigned (seed, 10, 0, G_MAXUINT64, &o.seed, NULL))
    return lp_cli_usage_error ("synth", "--seed: expected an integer from 0 to %" G_GUINT64_FORMAT ", found '%s'",
                               G_MAXUINT64, seed);

  LpSaveOptions save;
  if (!lp_cli_save_options ("synth", type, format, NULL, &save))
    return LP_EXIT_USAGE;
  GError *error = NULL;
  /* Tensors made in the output type go to a spill file beside the output
   * (none: in memory), so a model larger than memory can be written. */
  g_autofree char *dir = g_path_get_dirname (argv[1]);
  g_autoptr (LpSpill) spill = lp_spill_enabled () ? lp_spill_new (dir, NULL) : NULL;
  g_autoptr (LpModel) model = lp_model_synth_spilled (&o, save.dtype >= 0 ? (LpDType) save.dtype : LP_DTYPE_F32,
                                                      spill, &error);
  if (model == NULL || !lp_cli_save_model (model, argv[1], &save, &error))
    return lp_cli_fail (error);
  return LP_EXIT_OK;
}
