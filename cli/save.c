/* llmpress CLI — the --type/--format choices and writing a model, shared by
 * the commands that produce one (convert, synth). */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>

#include "cli.h"

gboolean
lp_cli_save_options (const char *command, const char *type, const char *format, const char *overflow,
                     LpSaveOptions *out)
{
  *out = (LpSaveOptions) LP_SAVE_OPTIONS_INIT;
  if (type != NULL)
    {
      LpDType t;
      if (!lp_dtype_from_name (type, &t) || (t != LP_DTYPE_F32 && t != LP_DTYPE_F16 && t != LP_DTYPE_BF16))
        {
          lp_cli_usage_error (command, "--type: expected f32, f16 or bf16, found '%s'", type);
          return FALSE;
        }
      out->dtype = t;
    }
  if (overflow != NULL && strcmp (overflow, "error") != 0 && strcmp (overflow, "clamp") != 0)
    {
      lp_cli_usage_error (command, "--f16-overflow: expected error or clamp, found '%s'", overflow);
      return FALSE;
    }
  out->overflow = g_strcmp0 (overflow, "clamp") == 0 ? LP_OVERFLOW_CLAMP : LP_OVERFLOW_ERROR;
  if (format != NULL && !lp_format_from_name (format, &out->format))
    {
      lp_cli_usage_error (command, "--format: expected gguf, hf (or safetensors) or llama2c, found '%s'", format);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_cli_save_model (LpModel *model, const char *path, const LpSaveOptions *options, GError **error)
{
  LpSaveOptions opts = *options;
  if (opts.format == LP_FORMAT_UNKNOWN)
    opts.format = lp_format_detect (path);
  if (!lp_model_save (model, path, &opts, error))
    return FALSE;
  guint64 size = lp_path_size (path);
  g_autofree char *human = g_format_size (size);
  g_autofree char *params = g_strdup_printf ("%" G_GINT64_FORMAT, lp_model_n_params (model));
  printf ("wrote %s: %s, %s, %u tensors, %s parameters, %s (%" G_GUINT64_FORMAT " bytes)\n", path,
          lp_format_name (opts.format), lp_arch_info (lp_model_config (model)->arch)->name,
          lp_model_n_tensors (model), params, human, size);
  return TRUE;
}
