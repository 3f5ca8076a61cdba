/* llmpress — format detection and the load/save dispatch shared by every
 * format: post-load checks, and the never-overwrite-the-input rule. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include "formats-internal.h"

static const char *const format_names[] = {
  [LP_FORMAT_UNKNOWN] = "unknown",
  [LP_FORMAT_GGUF] = "gguf",
  [LP_FORMAT_HF] = "hf",
  [LP_FORMAT_LLAMA2C] = "llama2c",
};

const char *
lp_format_name (LpFormat format)
{
  return format_names[format];
}

gboolean
lp_format_from_name (const char *name, LpFormat *out)
{
  if (g_ascii_strcasecmp (name, "safetensors") == 0)
    {
      *out = LP_FORMAT_HF;
      return TRUE;
    }
  for (int i = 1; i < (int) G_N_ELEMENTS (format_names); i++)
    if (g_ascii_strcasecmp (name, format_names[i]) == 0)
      {
        *out = (LpFormat) i;
        return TRUE;
      }
  return FALSE;
}

LpFormat
lp_format_detect (const char *path)
{
  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    return LP_FORMAT_HF;
  /* Only a regular file is opened: a FIFO would block here. */
  FILE *f = g_file_test (path, G_FILE_TEST_IS_REGULAR) ? fopen (path, "rb") : NULL;
  if (f != NULL)
    {
      char magic[4] = { 0 };
      size_t n = fread (magic, 1, 4, f);
      fclose (f);
      if (n == 4 && memcmp (magic, "GGUF", 4) == 0)
        return LP_FORMAT_GGUF;
    }
  if (g_str_has_suffix (path, ".gguf"))
    return LP_FORMAT_GGUF;
  if (g_str_has_suffix (path, ".safetensors") || g_str_has_suffix (path, "/"))
    return LP_FORMAT_HF;
  if (g_str_has_suffix (path, ".bin"))
    return LP_FORMAT_LLAMA2C;
  /* An existing regular file that is none of the above: llama2.c has no magic. */
  if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
    return LP_FORMAT_LLAMA2C;
  /* A path that does not exist yet and has no extension: a directory to create.
   * One that exists (a device, a FIFO) is no directory. */
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    return LP_FORMAT_UNKNOWN;
  const char *base = strrchr (path, '/');
  base = base ? base + 1 : path;
  return strchr (base, '.') == NULL ? LP_FORMAT_HF : LP_FORMAT_UNKNOWN;
}

/* Converters such as llama.cpp's write a shared classifier twice: when
 * output.weight is a byte-for-byte copy of token_embd.weight, keep one. */
static void
dedupe_tied_head (LpModel *model)
{
  LpTensor *emb = lp_model_tensor (model, "token_embd.weight");
  LpTensor *out = lp_model_tensor (model, "output.weight");
  if (emb == NULL || out == NULL || emb->dtype != out->dtype || emb->n_dims != out->n_dims
      || memcmp (emb->shape, out->shape, sizeof emb->shape) != 0 || !g_bytes_equal (emb->data, out->data))
    return;
  lp_model_remove_tensor (model, "output.weight");
  lp_model_config_mut (model)->tied_embeddings = TRUE;
}

GPtrArray *
lp_model_load_files (const char *path, const LpLoadOptions *options)
{
  GPtrArray *files = g_ptr_array_new_with_free_func (g_free);
  LpFormat format = g_file_test (path, G_FILE_TEST_EXISTS) ? lp_format_detect (path) : LP_FORMAT_UNKNOWN;
  if (format == LP_FORMAT_HF && !g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      /* lp_model_load reads the directory of a model.safetensors. */
      g_ptr_array_add (files, g_path_get_dirname (path));
      return files;
    }
  g_ptr_array_add (files, g_strdup (path));
  if (format == LP_FORMAT_LLAMA2C)
    {
      char *tok = options && options->tokenizer_path ? g_strdup (options->tokenizer_path)
                                                     : lp_llama2c_implicit_tokenizer (path);
      if (tok != NULL)
        g_ptr_array_add (files, tok);
    }
  return files;
}

void
lp_read_set_add_model (LpReadSet *rs, const char *path, const char *tokenizer, const char *what)
{
  /* What lp_model_load reads: the file or directory, and the tokenizer a
   * llama2.c checkpoint picks up beside it. */
  LpLoadOptions opts = { tokenizer };
  g_autoptr (GPtrArray) files = lp_model_load_files (path, &opts);
  g_autofree char *tok_what = g_strdup_printf ("the tokenizer of %s", what);
  lp_read_set_add (rs, path, what);
  for (guint i = 0; i < files->len; i++)
    if (strcmp (files->pdata[i], path) != 0)
      lp_read_set_add (rs, files->pdata[i], g_file_test (files->pdata[i], G_FILE_TEST_IS_DIR) ? what : tok_what);
}

LpModel *
lp_model_load (const char *path, const LpLoadOptions *options, GError **error)
{
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: no such file or directory", path);
      return NULL;
    }
  if (!lp_input_check (path, TRUE, error))
    return NULL;
  LpFormat format = lp_format_detect (path);
  LpModel *model = NULL;
  switch (format)
    {
    case LP_FORMAT_GGUF:
      model = lp_gguf_load (path, error);
      break;
    case LP_FORMAT_HF:
      {
        /* A path to model.safetensors means its directory. */
        g_autofree char *dir = g_file_test (path, G_FILE_TEST_IS_DIR) ? g_strdup (path) : g_path_get_dirname (path);
        model = lp_hf_load (dir, error);
        break;
      }
    case LP_FORMAT_LLAMA2C:
      model = lp_llama2c_load (path, options ? options->tokenizer_path : NULL, error);
      break;
    default:
      {
        g_autofree char *found = lp_path_describe (path);
        lp_set_error (error, LP_ERROR_UNSUPPORTED,
                      "%s: expected a GGUF file, a llama2.c checkpoint or a Hugging Face directory, found %s", path,
                      found);
        return NULL;
      }
    }
  if (model == NULL)
    return NULL;
  if (lp_model_source (model) == NULL)
    lp_model_set_source (model, path, format);
  if (!lp_model_forms_restore (model, error))
    {
      lp_model_unref (model);
      return NULL;
    }
  dedupe_tied_head (model);
  lp_model_drop_bad_token_ids (model);
  if (!lp_model_validate (model, error))
    {
      lp_model_unref (model);
      return NULL;
    }
  return model;
}

gboolean
lp_model_check_output (LpModel *model, const char *path, GError **error)
{
  const char *src = lp_model_source (model);
  if (src == NULL)
    return TRUE;
  g_autoptr (LpReadSet) reads = lp_read_set_new ();
  lp_read_set_add_model (reads, src, lp_model_tokenizer_source (model), "the model's own input");
  g_autofree char *why = lp_read_set_conflict (reads, path);
  if (why == NULL)
    return TRUE;
  lp_set_error (error, LP_ERROR_INVALID, "%s: refusing to write: it %s (hint: write elsewhere)", path, why);
  return FALSE;
}

gboolean
lp_model_save (LpModel *model, const char *path, const LpSaveOptions *options, GError **error)
{
  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  if (options != NULL)
    opts = *options;
  if (opts.format == LP_FORMAT_UNKNOWN)
    opts.format = lp_format_detect (path);
  if (opts.format == LP_FORMAT_UNKNOWN)
    {
      /* A device or FIFO at the path has no format to tell: say what it is. */
      g_autofree char *created = NULL;
      if (!lp_output_prepare (path, FALSE, &created, error))
        return FALSE;
      lp_output_unprepare (path, created);
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: cannot tell the output format from the name: expected .gguf, .bin, or a directory (or give a format)", path);
      return FALSE;
    }
  if (!lp_model_check_output (model, path, error))
    return FALSE;
  switch (opts.format)
    {
    case LP_FORMAT_GGUF:
      return lp_gguf_save (model, path, &opts, error);
    case LP_FORMAT_HF:
      return lp_hf_save (model, path, &opts, error);
    case LP_FORMAT_LLAMA2C:
      return lp_llama2c_save (model, path, &opts, error);
    default:
      g_assert_not_reached ();
    }
}
