/* llmpress generate — sample text from a model, to eyeball it. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static char *opt_prompt, *opt_tokenizer, *opt_backend, *opt_device_memory;
static int opt_n = 64, opt_top_k = 40;
static double opt_temp = 0.8, opt_top_p = 0.95;
static gint64 opt_seed = -1;
static gboolean opt_f32;

static const GOptionEntry entries[] = {
  { "prompt", 'p', 0, G_OPTION_ARG_STRING, &opt_prompt, "Text to continue (default: start from BOS alone)", "TEXT" },
  { "n-predict", 'n', 0, G_OPTION_ARG_INT, &opt_n, "Tokens to generate (default 64)", "N" },
  { "temp", 0, 0, G_OPTION_ARG_DOUBLE, &opt_temp, "Temperature; 0 = greedy (default 0.8)", "T" },
  { "top-k", 0, 0, G_OPTION_ARG_INT, &opt_top_k, "Sample among the K most likely tokens; 0 = all (default 40)", "K" },
  { "top-p", 0, 0, G_OPTION_ARG_DOUBLE, &opt_top_p, "Nucleus sampling threshold (default 0.95)", "P" },
  { "seed", 's', 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed (default: from the clock, printed)", "S" },
  { "backend", 0, 0, G_OPTION_ARG_STRING, &opt_backend, "cpu, auto or vulkan[:N] (default: LLMPRESS_DEVICE, else cpu)", "B" },
  { "f32-activations", 0, 0, G_OPTION_ARG_NONE, &opt_f32,
    "Multiply Q4_0/Q4_1/Q8_0 weights with f32 activations (slower) instead of 8-bit ones as llama.cpp does", NULL },
  { "tokenizer", 0, 0, G_OPTION_ARG_FILENAME, &opt_tokenizer, "llama2.c tokenizer.bin for a .bin model", "PATH" },
  LP_CLI_DEVICE_MEMORY_ENTRY (opt_device_memory),
  { NULL }
};

typedef struct {
  int id;
  float p;
} Cand;

static int
cmp_cand (gconstpointer a, gconstpointer b)
{
  float pa = ((const Cand *) a)->p, pb = ((const Cand *) b)->p;
  return pa < pb ? 1 : pa > pb ? -1 : ((const Cand *) a)->id - ((const Cand *) b)->id;
}

/* Greedy at temp 0; otherwise temperature, top-k, then top-p. */
static int
sample (const float *logits, int V, GRand *rng)
{
  if (opt_temp <= 0.0)
    {
      int best = 0;
      for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
          best = i;
      return best;
    }
  g_autofree Cand *c = g_new (Cand, V);
  float mx = -INFINITY;
  for (int i = 0; i < V; i++)
    mx = MAX (mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < V; i++)
    {
      c[i].id = i;
      c[i].p = expf ((float) ((logits[i] - mx) / opt_temp));
      sum += c[i].p;
    }
  qsort (c, V, sizeof (Cand), cmp_cand);
  int keep = opt_top_k > 0 ? MIN (opt_top_k, V) : V;
  double cum = 0.0, kept = 0.0;
  for (int i = 0; i < keep; i++)
    {
      cum += c[i].p / sum;
      if (cum >= opt_top_p)
        {
          keep = i + 1;
          break;
        }
    }
  for (int i = 0; i < keep; i++)
    kept += c[i].p;
  double r = g_rand_double (rng) * kept;
  for (int i = 0; i < keep; i++)
    if ((r -= c[i].p) <= 0)
      return c[i].id;
  return c[keep - 1].id;
}

int
lp_cmd_generate (int argc, char **argv)
{
  if (!lp_cli_parse ("generate", "MODEL", "Generate text from a model.",
                     "Example:\n  llmpress generate stories260K.bin -p \"Once upon a time\" -n 100 --temp 0",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2)
    return lp_cli_usage_error ("generate", "expected one MODEL, found %d arguments", argc - 1);
  if (opt_n < 0)
    return lp_cli_usage_error ("generate", "-n: expected a count >= 0, found %d", opt_n);
  guint64 device_memory = 0;
  if (!lp_cli_parse_device_memory ("generate", opt_device_memory, &device_memory))
    return LP_EXIT_USAGE;
  GError *error = NULL;
  LpLoadOptions lo = { opt_tokenizer };
  g_autoptr (LpModel) model = lp_model_load (argv[1], &lo, &error);
  if (model == NULL)
    return lp_cli_fail (error);
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (lp_model_meta (model), &error);
  if (tok == NULL)
    return lp_cli_fail (error);
  g_autoptr (LpBackend) be = lp_backend_new (opt_backend, &error);
  if (be == NULL)
    return lp_cli_fail (error);
  g_autoptr (LpForward) fw = lp_forward_new (model, be, &error);
  if (fw == NULL)
    return lp_cli_fail (error);
  lp_forward_set_device_memory (fw, device_memory);
  /* llama.cpp's numerics and speed: Q4_0/Q4_1/Q8_0 products in integers. */
  lp_forward_set_int8_activations (fw, !opt_f32);

  const LpModelConfig *c = lp_model_config (model);
  g_autoptr (GArray) ids = NULL;
  if (opt_prompt && *opt_prompt)
    ids = lp_tokenizer_encode (tok, opt_prompt, -1, lp_tokenizer_adds_bos (tok), &error); /* BOS as the model says */
  else
    {
      ids = g_array_new (FALSE, FALSE, sizeof (gint32));
      gint32 bos = lp_tokenizer_bos (tok);
      g_array_append_val (ids, bos);
    }
  if (ids == NULL)
    return lp_cli_fail (error);
  int max_tokens = (int) ids->len + opt_n;
  if (opt_seed < 0)
    {
      opt_seed = g_get_real_time () % 1000000;
      fprintf (stderr, "seed %" G_GINT64_FORMAT "\n", opt_seed);
    }
  g_autoptr (GRand) rng = g_rand_new_with_seed ((guint32) opt_seed);
  g_autoptr (LpKVCache) cache = lp_kv_cache_new (c, max_tokens);
  int V = (int) c->n_vocab;
  g_autofree float *logits = g_new (float, (gsize) ids->len * V);
  if (opt_prompt)
    fputs (opt_prompt, stdout);
  if (!lp_forward_logits (fw, (const gint32 *) ids->data, ids->len, cache, logits, &error))
    return lp_cli_fail (error);
  const float *last = logits + (gsize) (ids->len - 1) * V;
  gint32 prev = g_array_index (ids, gint32, ids->len - 1);
  for (int i = 0; i < opt_n; i++)
    {
      gint32 next = sample (last, V, rng);
      if (next == lp_tokenizer_eos (tok))
        break;
      gsize len;
      g_autofree char *piece = lp_tokenizer_decode_piece (tok, prev, next, &len);
      fwrite (piece, 1, len, stdout);
      fflush (stdout);
      prev = next;
      if (i + 1 == opt_n)
        break;
      if (!lp_forward_logits (fw, &next, 1, cache, logits, &error))
        return lp_cli_fail (error);
      last = logits;
    }
  fputc ('\n', stdout);
  return LP_EXIT_OK;
}
