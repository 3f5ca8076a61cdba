/* llmpress inspect: what a model file holds — format, hyper-parameters,
 * tensors and their storage cost, tokenizer — as text or JSON. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "cli.h"
#include "lp-internal.h"

static const char *
rope_scaling_name (LpRopeScalingType t)
{
  switch (t)
    {
    case LP_ROPE_SCALING_LINEAR: return "linear";
    case LP_ROPE_SCALING_LLAMA3: return "llama3";
    case LP_ROPE_SCALING_NONE: break;
    }
  return "none";
}

static double
bits_per_weight (guint64 bytes, gint64 n)
{
  return n > 0 ? 8.0 * (double) bytes / (double) n : 0.0;
}

/* Tokenizer facts from the tokenizer.ggml.* keys; FALSE when there are none. */
typedef struct {
  const char *model;   /* tokenizer.ggml.model or NULL */
  gint64 n_vocab;      /* tokens in tokenizer.ggml.tokens, -1 when absent */
  gint64 bos, eos;     /* -1 when absent or "none" */
} TokenizerSummary;

static gint64
token_id (const LpMeta *meta, const char *key)
{
  gint64 v;
  /* GGUF files from llama.cpp say "no such token" with UINT32_MAX. */
  if (!lp_meta_get_int (meta, key, &v, NULL) || v < 0 || v == G_MAXUINT32)
    return -1;
  return v;
}

static gboolean
tokenizer_summary (const LpMeta *meta, TokenizerSummary *s)
{
  gboolean any = FALSE;
  for (guint i = 0; i < lp_meta_n_keys (meta) && !any; i++)
    any = g_str_has_prefix (lp_meta_key (meta, i), "tokenizer.ggml.");
  if (!any)
    return FALSE;
  s->model = lp_meta_get_string (meta, "tokenizer.ggml.model");
  const LpValue *tokens = lp_meta_get_array (meta, "tokenizer.ggml.tokens", LP_VALUE_STRING, NULL);
  s->n_vocab = tokens ? (gint64) tokens->n_elems : -1;
  s->bos = token_id (meta, "tokenizer.ggml.bos_token_id");
  s->eos = token_id (meta, "tokenizer.ggml.eos_token_id");
  return TRUE;
}

static void
print_text (LpModel *model)
{
  const LpModelConfig *c = lp_model_config (model);
  LpMeta *meta = lp_model_meta (model);
  printf ("model:         %s\n", lp_model_source (model));
  printf ("format:        %s\n", lp_format_name (lp_model_source_format (model)));
  printf ("architecture:  %s\n", lp_arch_info (c->arch)->name);
  printf ("parameters:    %" G_GINT64_FORMAT "\n\n", lp_model_n_params (model));

  printf ("hyper-parameters:\n");
  printf ("  dim                 %" G_GINT64_FORMAT "\n", c->dim);
  printf ("  ffn_dim             %" G_GINT64_FORMAT "\n", c->ffn_dim);
  printf ("  n_layers            %" G_GINT64_FORMAT "\n", c->n_layers);
  printf ("  n_heads             %" G_GINT64_FORMAT "\n", c->n_heads);
  printf ("  n_kv_heads          %" G_GINT64_FORMAT "\n", c->n_kv_heads);
  printf ("  head_dim            %" G_GINT64_FORMAT "\n", c->head_dim);
  printf ("  n_vocab             %" G_GINT64_FORMAT "\n", c->n_vocab);
  printf ("  context_length      %" G_GINT64_FORMAT "\n", c->ctx_len);
  printf ("  rope_theta          %g\n", c->rope_theta);
  printf ("  rope_scaling        %s", rope_scaling_name (c->rope_scaling));
  if (c->rope_scaling == LP_ROPE_SCALING_LINEAR)
    printf (" (factor %g)", c->rope_factor);
  else if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3)
    printf (" (factor %g, low_freq_factor %g, high_freq_factor %g, original context %" G_GINT64_FORMAT ")",
            c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_ctx);
  printf ("\n  rms_eps             %g\n", c->norm_eps);
  printf ("  tied_embeddings     %s\n\n",
          c->tied_embeddings ? "yes (the output head is token_embd.weight)" : "no");

  /* Aligned like gguf-dump: index, name, shape, type, bytes, bits/weight. */
  guint n = lp_model_n_tensors (model);
  g_autoptr (GPtrArray) shapes = g_ptr_array_new_with_free_func (g_free);
  int name_w = 4, shape_w = 5;
  for (guint i = 0; i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      char *shape = lp_tensor_shape_string (t);
      g_ptr_array_add (shapes, shape);
      name_w = MAX (name_w, (int) strlen (t->name));
      shape_w = MAX (shape_w, (int) strlen (shape));
    }
  printf ("tensors: %u\n", n);
  printf ("  %5s  %-*s  %-*s  %-5s  %12s  %7s\n", "#", name_w, "name", shape_w, "shape", "type", "bytes", "bits/w");
  for (guint i = 0; i < n; i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      gsize bytes = lp_tensor_n_bytes (t);
      printf ("  %5u  %-*s  %-*s  %-5s  %12" G_GSIZE_FORMAT "  %7.2f\n", i, name_w, t->name, shape_w,
              (const char *) shapes->pdata[i], lp_dtype_name (t->dtype), bytes,
              bits_per_weight (bytes, lp_tensor_n_elements (t)));
    }
  guint64 total = lp_model_n_bytes (model);
  g_autofree char *human = g_format_size (total);
  printf ("total: %" G_GUINT64_FORMAT " bytes (%s), %.2f bits per weight\n", total, human,
          bits_per_weight (total, lp_model_n_params (model)));

  printf ("\n");
  TokenizerSummary tok;
  if (tokenizer_summary (meta, &tok))
    {
      printf ("tokenizer:     %s", tok.model ? tok.model : "(no tokenizer.ggml.model)");
      if (tok.n_vocab >= 0)
        printf (", %" G_GINT64_FORMAT " tokens", tok.n_vocab);
      if (tok.bos >= 0)
        printf (", bos %" G_GINT64_FORMAT, tok.bos);
      if (tok.eos >= 0)
        printf (", eos %" G_GINT64_FORMAT, tok.eos);
      printf ("\n");
    }
  printf ("metadata:      %u keys\n", lp_meta_n_keys (meta));
}

static void
add_int_or_null (JsonBuilder *b, const char *name, gint64 v)
{
  json_builder_set_member_name (b, name);
  if (v >= 0)
    json_builder_add_int_value (b, v);
  else
    json_builder_add_null_value (b);
}

static void
print_json (LpModel *model)
{
  const LpModelConfig *c = lp_model_config (model);
  LpMeta *meta = lp_model_meta (model);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  /* Loading checked the config, so this stays empty; if not, null + "error". */
  g_autoptr (GString) bad = g_string_new (NULL);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "path");
  json_builder_add_string_value (b, lp_model_source (model));
  json_builder_set_member_name (b, "format");
  json_builder_add_string_value (b, lp_format_name (lp_model_source_format (model)));
  json_builder_set_member_name (b, "architecture");
  json_builder_add_string_value (b, lp_arch_info (c->arch)->name);

  json_builder_set_member_name (b, "config");
  json_builder_begin_object (b);
  const struct { const char *name; gint64 v; } ints[] = {
    { "dim", c->dim }, { "ffn_dim", c->ffn_dim }, { "n_layers", c->n_layers },
    { "n_heads", c->n_heads }, { "n_kv_heads", c->n_kv_heads }, { "head_dim", c->head_dim },
    { "n_vocab", c->n_vocab }, { "context_length", c->ctx_len },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (ints); i++)
    {
      json_builder_set_member_name (b, ints[i].name);
      json_builder_add_int_value (b, ints[i].v);
    }
  lp_json_add_finite (b, "rope_theta", c->rope_theta, bad);
  json_builder_set_member_name (b, "rope_scaling");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, rope_scaling_name (c->rope_scaling));
  if (c->rope_scaling != LP_ROPE_SCALING_NONE)
    {
      lp_json_add_finite (b, "factor", c->rope_factor, bad);
    }
  if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3)
    {
      lp_json_add_finite (b, "low_freq_factor", c->rope_low_freq_factor, bad);
      lp_json_add_finite (b, "high_freq_factor", c->rope_high_freq_factor, bad);
      json_builder_set_member_name (b, "original_context_length");
      json_builder_add_int_value (b, c->rope_orig_ctx);
    }
  json_builder_end_object (b);
  lp_json_add_finite (b, "rms_eps", c->norm_eps, bad);
  json_builder_set_member_name (b, "tied_embeddings");
  json_builder_add_boolean_value (b, c->tied_embeddings);
  json_builder_end_object (b);

  gint64 n_params = lp_model_n_params (model);
  guint64 n_bytes = lp_model_n_bytes (model);
  json_builder_set_member_name (b, "n_params");
  json_builder_add_int_value (b, n_params);
  json_builder_set_member_name (b, "n_bytes");
  json_builder_add_int_value (b, (gint64) n_bytes);
  lp_json_add_finite (b, "bits_per_weight", bits_per_weight (n_bytes, n_params), bad);

  json_builder_set_member_name (b, "tensors");
  json_builder_begin_array (b);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      gsize bytes = lp_tensor_n_bytes (t);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "name");
      json_builder_add_string_value (b, t->name);
      json_builder_set_member_name (b, "shape");
      json_builder_begin_array (b);
      for (int d = 0; d < t->n_dims; d++)
        json_builder_add_int_value (b, t->shape[d]);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "type");
      json_builder_add_string_value (b, lp_dtype_name (t->dtype));
      json_builder_set_member_name (b, "bytes");
      json_builder_add_int_value (b, (gint64) bytes);
      lp_json_add_finite (b, "bits_per_weight", bits_per_weight (bytes, lp_tensor_n_elements (t)), bad);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "tokenizer");
  TokenizerSummary tok;
  if (tokenizer_summary (meta, &tok))
    {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "model");
      if (tok.model)
        json_builder_add_string_value (b, tok.model);
      else
        json_builder_add_null_value (b);
      add_int_or_null (b, "n_vocab", tok.n_vocab);
      add_int_or_null (b, "bos_id", tok.bos);
      add_int_or_null (b, "eos_id", tok.eos);
      json_builder_end_object (b);
    }
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "n_metadata_keys");
  json_builder_add_int_value (b, lp_meta_n_keys (meta));
  lp_json_add_nonfinite_error (b, bad);
  json_builder_end_object (b);

  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_pretty (gen, TRUE);
  json_generator_set_root (gen, root);
  g_autofree char *text = json_generator_to_data (gen, NULL);
  printf ("%s\n", text);
}

int
lp_cmd_inspect (int argc, char **argv)
{
  gboolean json = FALSE;
  g_autofree char *tokenizer = NULL;
  const GOptionEntry entries[] = {
    { "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print one JSON object instead of text", NULL },
    LP_CLI_TOKENIZER_ENTRY (tokenizer),
    { NULL },
  };
  if (!lp_cli_parse ("inspect", "MODEL", "Show a model's format, architecture, hyper-parameters, tensors and tokenizer.",
                     "MODEL is a GGUF file, a llama2.c checkpoint or a Hugging Face directory.\n"
                     "The tensor table gives each tensor's row-major shape (outermost first),\n"
                     "storage type, bytes and bits per weight.  --json prints the same facts\n"
                     "with stable field names: format, architecture, config{...}, n_params,\n"
                     "n_bytes, bits_per_weight, tensors[{name, shape, type, bytes,\n"
                     "bits_per_weight}], tokenizer{model, n_vocab, bos_id, eos_id}, n_metadata_keys.\n\n"
                     "Example:\n  llmpress inspect stories260K.gguf --json",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2)
    return lp_cli_usage_error ("inspect", "expected one MODEL, found %d arguments", argc - 1);
  GError *error = NULL;
  LpLoadOptions load = { tokenizer };
  g_autoptr (LpModel) model = lp_model_load (argv[1], &load, &error);
  if (model == NULL)
    return lp_cli_fail (error);
  if (json)
    print_json (model);
  else
    print_text (model);
  return LP_EXIT_OK;
}
