/* llmpress eval — perplexity, KL to a reference, size and speed. */
#include "config.h"

#include <stdio.h>
#include <json-glib/json-glib.h>

#include "cli.h"
#include "lp-internal.h"

static char *opt_data, *opt_reference, *opt_backend, *opt_tokenizer, *opt_device_memory;
static int opt_ctx, opt_max_windows;
static gboolean opt_json, opt_llama_cpp, opt_quiet;

static const GOptionEntry entries[] = {
  { "data", 'd', 0, G_OPTION_ARG_FILENAME, &opt_data, "Text file, or a .u16/.u32 token file (required)", "FILE" },
  { "ctx", 'c', 0, G_OPTION_ARG_INT, &opt_ctx, "Window length, BOS included (default: model context, at most 512)", "N" },
  { "reference", 'r', 0, G_OPTION_ARG_FILENAME, &opt_reference, "Reference model for KL divergence and top-1 agreement", "MODEL" },
  { "llama-cpp", 0, 0, G_OPTION_ARG_NONE, &opt_llama_cpp, "llama-perplexity's convention (chunks of ctx cut from BOS + data, second half scored) and llama.cpp's CPU arithmetic (its roundings; its exact logits for a Llama model with Q4_1/Q8_0 weights)", NULL },
  { "max-windows", 0, 0, G_OPTION_ARG_INT, &opt_max_windows, "Evaluate at most N windows", "N" },
  { "backend", 0, 0, G_OPTION_ARG_STRING, &opt_backend, "cpu, auto or vulkan[:N] (default: LLMPRESS_DEVICE, else cpu)", "B" },
  { "tokenizer", 0, 0, G_OPTION_ARG_FILENAME, &opt_tokenizer, "llama2.c tokenizer.bin for a .bin model", "PATH" },
  { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "Print the result as JSON", NULL },
  { "quiet", 'q', 0, G_OPTION_ARG_NONE, &opt_quiet, "No progress output", NULL },
  LP_CLI_DEVICE_MEMORY_ENTRY (opt_device_memory),
  { NULL }
};

/* The result as JSON text; non-finite numbers go out as null, named in an
 * "error" member and in `bad`. */
static char *
eval_json (const char *model_path, const LpEvalResult *r, GString *bad)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "model");
  json_builder_add_string_value (b, model_path);
  json_builder_set_member_name (b, "data");
  json_builder_add_string_value (b, opt_data);
  json_builder_set_member_name (b, "convention");
  json_builder_add_string_value (b, opt_llama_cpp ? "llama.cpp" : "all-after-bos");
#define NUM(name, v) lp_json_add_finite (b, name, v, bad)
#define INT(name, v) (json_builder_set_member_name (b, name), json_builder_add_int_value (b, v))
  INT ("ctx", r->ctx);
  INT ("windows", r->n_windows);
  INT ("tokens_scored", r->n_scored);
  NUM ("nll", r->nll);
  NUM ("nll_stderr", r->nll_stderr);
  NUM ("perplexity", r->ppl);
  if (r->have_reference)
    {
      NUM ("kl", r->kl);
      NUM ("top1", r->top1);
    }
  INT ("n_params", r->n_params);
  INT ("bytes", (gint64) r->n_bytes);
  NUM ("bits_per_weight", r->bits_per_weight);
  NUM ("seconds", r->seconds);
  NUM ("tokens_per_s", r->tokens_per_s);
#undef NUM
#undef INT
  lp_json_add_nonfinite_error (b, bad);
  json_builder_end_object (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  return json_generator_to_data (gen, NULL);
}

int
lp_cmd_eval (int argc, char **argv)
{
  if (!lp_cli_parse ("eval", "MODEL", "Measure a model's perplexity on a data set.",
                     "Windows are BOS + (ctx-1) tokens (ctx tokens for a model that adds no BOS,\n"
                     "tokenizer.ggml.add_bos_token=false), every token after the first scored.\n"
                     "With --llama-cpp, llama-perplexity's convention: the data with BOS in front\n"
                     "(when the model adds BOS) is cut into chunks of ctx tokens, each chunk's first\n"
                     "token becomes BOS (when the model adds BOS) and tokens from ctx/2 on are scored;\n"
                     "--max-windows is its --chunks; and the forward pass computes as llama.cpp's CPU\n"
                     "backend does by default: activations rounded to 8 bits (Q8_0/Q8_1/Q8_K blocks)\n"
                     "or f16 before a quantized or f16 weight, an f16 KV cache, f16 attention\n"
                     "probabilities.  A result that is NaN or infinite (a broken model)\n"
                     "fails with exit status 1; --json then still prints JSON, with null for such\n"
                     "numbers and an \"error\" member naming them.\n\n"
                     "Example:\n  llmpress eval stories260K.bin --data valid.tok512.u16 --ctx 512",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2)
    return lp_cli_usage_error ("eval", "expected one MODEL, found %d arguments", argc - 1);
  guint64 device_memory = 0;
  if (!lp_cli_parse_device_memory ("eval", opt_device_memory, &device_memory))
    return LP_EXIT_USAGE;
  if (opt_data == NULL)
    return lp_cli_usage_error ("eval", "--data FILE is required");
  lp_progress_set_quiet (opt_quiet);
  GError *error = NULL;
  LpLoadOptions lo = { opt_tokenizer };
  g_autoptr (LpModel) model = lp_model_load (argv[1], &lo, &error);
  if (model == NULL)
    return lp_cli_fail (error);
  g_autoptr (LpModel) reference = NULL;
  if (opt_reference && (reference = lp_model_load (opt_reference, &lo, &error)) == NULL)
    return lp_cli_fail (error);
  /* Evaluating is all this process does: it chooses OpenBLAS's threads for
   * that, once, before any backend or worker exists. */
  int blas_threads = lp_eval_blas_threads (model);
  if (blas_threads > 0)
    lp_cpu_blas_threads_init (blas_threads);
  g_autoptr (LpBackend) be = lp_backend_new (opt_backend, &error);
  if (be == NULL)
    return lp_cli_fail (error);
  g_autoptr (GArray) tokens = lp_tokens_load (opt_data, model, &error);
  if (tokens == NULL)
    return lp_cli_fail (error);
  LpEvalOptions eo = { opt_ctx, opt_llama_cpp, opt_max_windows, reference, be, device_memory };
  LpEvalResult r;
  if (!lp_eval_run (model, (const gint32 *) tokens->data, tokens->len, &eo, &r, &error))
    return lp_cli_fail (error);
  /* The JSON is made either way: it names the numbers that are not finite. */
  g_autoptr (GString) bad = g_string_new (NULL);
  g_autofree char *json = eval_json (argv[1], &r, bad);
  if (opt_json)
    printf ("%s\n", json);
  /* A model whose outputs are NaN or infinite fails, whatever the format. */
  if (bad->len > 0)
    {
      fprintf (stderr, "llmpress: %s: not finite: %s\n", argv[1], bad->str);
      return LP_EXIT_FAILURE;
    }
  if (!opt_json)
    {
      printf ("model        %s\n", argv[1]);
      printf ("data         %s (%u tokens)\n", opt_data, tokens->len);
      printf ("windows      %d x %d tokens (%s), %" G_GINT64_FORMAT " tokens scored\n", r.n_windows, r.ctx,
              opt_llama_cpp ? "llama.cpp convention" : "BOS + ctx-1, all scored", r.n_scored);
      printf ("nll          %.5f +/- %.5f nats/token\n", r.nll, r.nll_stderr);
      printf ("perplexity   %.4f\n", r.ppl);
      if (r.have_reference)
        {
          printf ("kl           %.6f nats/token (vs %s)\n", r.kl, opt_reference);
          printf ("top-1        %.2f%%\n", 100.0 * r.top1);
        }
      printf ("size         %" G_GUINT64_FORMAT " bytes, %" G_GINT64_FORMAT " parameters, %.3f bits/weight\n", r.n_bytes,
              r.n_params, r.bits_per_weight);
      /* Where the forward pass ran: the device, and its ops that ran on the CPU. */
      g_autoptr (LpForward) fw = lp_forward_new (model, be, NULL);
      g_autofree char *where = fw ? lp_forward_describe (fw, NULL) : NULL;
      printf ("speed        %.0f tokens/s (%s)\n", r.tokens_per_s, where ? where : be->device_name);
    }
  return LP_EXIT_OK;
}
