/* make bench: single-token decoding speed (what `llmpress generate` does).
 *  1. Memory bandwidth of this machine, measured in the same run (triad).
 *  2. SmolLM2-135M-Instruct Q4_1 (when ../shared has it): a prompt of
 *     PROMPT token ids through lp_forward_logits with a KV cache, then STEPS
 *     single-token steps, each timed; decode tokens/s from the median step.
 *     Twice: with f32 activations, and with 8-bit ones (integer products,
 *     lp_forward_set_int8_activations: what generate runs).
 *  3. llama.cpp on the same model, prompt and steps, in the same run, when
 *     python3 imports llama_cpp (llama-cpp-python; e.g.
 *     PATH=/work/venv/bin:$PATH), on lp_threads () threads: its tokens/s
 *     and ours over it.
 *  4. The bound those steps have on this machine: a step reads every weight
 *     once (the blocks' matrices and norms, the head; the embedding only a
 *     row) and the KV cache so far, so tokens/s cannot exceed
 *     bandwidth / bytes per step.  Printed with the ratio achieved / bound,
 *     and the CPU time of a step (on a shared machine, wall time includes
 *     the wait for a core).  The triad runs on lp_threads () threads
 *     (LLMPRESS_THREADS), as the steps do.
 * Prints figures; never fails on time. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

enum { PROMPT = 16, STEPS = 32 };

/* llama.cpp's decoding of the same token ids: argv model, threads, prompt
 * length, steps; prints the median step's wall and CPU seconds. */
static const char llama_cpp_script[] =
  "import sys, time\n"
  "import numpy as np\n"
  "from llama_cpp import Llama\n"
  "path, threads, P, S = sys.argv[1], int (sys.argv[2]), int (sys.argv[3]), int (sys.argv[4])\n"
  "m = Llama (model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=P + S + 8, logits_all=True,\n"
  "           verbose=False)\n"
  "V = m.n_vocab ()\n"
  "m.eval ([(1 + i * 7919) % V for i in range (P)])\n"
  "t, c = [], []\n"
  "for s in range (S):\n"
  "    nxt = int (np.argmax (m.scores[m.n_tokens - 1]))\n"
  "    t0, c0 = time.perf_counter (), time.process_time ()\n"
  "    m.eval ([nxt])\n"
  "    t.append (time.perf_counter () - t0)\n"
  "    c.append (time.process_time () - c0)\n"
  "print (float (np.median (t)), float (np.median (c)))\n";

/* llama.cpp's median decoding step in seconds (and its CPU seconds in
 * *cpu), or 0 (why printed) when python3 or llama_cpp is absent. */
static double
llama_cpp_step (const char *path, double *cpu)
{
  g_autofree char *threads = g_strdup_printf ("%d", lp_threads ());
  g_autofree char *prompt = g_strdup_printf ("%d", PROMPT), *steps = g_strdup_printf ("%d", STEPS);
  const char *argv[] = { "python3", "-c", llama_cpp_script, path, threads, prompt, steps, NULL };
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      printf ("llama.cpp: skipped (python3 with llama_cpp, e.g. PATH=/work/venv/bin:$PATH: %s)\n",
              err && *err ? g_strstrip (err) : "not found");
      return 0.0;
    }
  char *end = NULL;
  double wall = g_ascii_strtod (out, &end);
  *cpu = g_ascii_strtod (end, NULL);
  return wall;
}

/* Prefill PROMPT token ids, then STEPS greedy single-token steps: the
 * median step's wall and CPU seconds. */
static gboolean
decode (LpModel *m, gboolean int8, double *prefill, double *step, double *step_cpu, GError **error)
{
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, error);
  if (fw == NULL)
    return FALSE;
  lp_forward_set_int8_activations (fw, int8);
  const LpModelConfig *c = lp_model_config (m);
  int V = (int) c->n_vocab;
  g_autoptr (LpKVCache) cache = lp_kv_cache_new (c, PROMPT + STEPS + 1);
  g_autofree float *logits = g_new (float, (gsize) PROMPT * V);
  gint32 prompt[PROMPT];
  for (int i = 0; i < PROMPT; i++)
    prompt[i] = (gint32) ((1 + i * 7919) % V);
  double t0 = now ();
  if (!lp_forward_logits (fw, prompt, PROMPT, cache, logits, error))
    return FALSE;
  *prefill = now () - t0;
  const float *last = logits + (gsize) (PROMPT - 1) * V;
  double t[STEPS], cpu[STEPS];
  for (int s = 0; s < STEPS; s++)
    {
      gint32 next = 0; /* greedy, as generate --temp 0 */
      for (int i = 1; i < V; i++)
        if (last[i] > last[next])
          next = i;
      t0 = now ();
      double c0 = bench_cpu_now ();
      if (!lp_forward_logits (fw, &next, 1, cache, logits, error))
        return FALSE;
      t[s] = now () - t0;
      cpu[s] = bench_cpu_now () - c0;
      last = logits;
    }
  *step = median (t, STEPS);
  *step_cpu = median (cpu, STEPS);
  return TRUE;
}

/* Bytes of weights one decoding step reads. */
static double
step_weight_bytes (LpModel *m)
{
  const LpModelConfig *c = lp_model_config (m);
  double bytes = 0;
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      LpTensor *t = lp_model_tensor_at (m, i);
      /* An untied embedding table is only looked up: one row a token. */
      if (!c->tied_embeddings && strcmp (t->name, "token_embd.weight") == 0)
        continue;
      bytes += (double) lp_tensor_n_bytes (t);
    }
  return bytes;
}

int
main (void)
{
  const int reps = 5;
  double bw = bench_triad_gbs ((gsize) 8 << 20, reps, TRUE);
  printf ("memory bandwidth (triad, 3 x 64 MiB, %d threads): %.2f GB/s (median of %d)\n", lp_threads (), bw, reps);

  const char *shared = g_getenv ("LLMPRESS_SHARED_DIR");
  g_autofree char *path
    = g_build_filename (shared ? shared : "../shared", "models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf", NULL);
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      printf ("decode SmolLM2-135M: skipped (%s absent)\n", path);
      return 0;
    }
  GError *error = NULL;
  g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
  if (m == NULL)
    {
      fprintf (stderr, "bench-generate: %s\n", error->message);
      return 1;
    }
  const LpModelConfig *c = lp_model_config (m);
  /* The KV cache read at the median step: keys and values of every layer. */
  double kv = 2.0 * c->n_layers * (PROMPT + STEPS / 2) * c->n_kv_heads * c->head_dim * sizeof (float);
  double bytes = step_weight_bytes (m) + kv;
  double bound = bw * 1e9 / bytes;
  double ours = 0.0, ours_cpu = 0.0;
  for (int int8 = 0; int8 <= 1; int8++)
    {
      const char *how = int8 ? "8-bit activations" : "f32 activations";
      double prefill, step, step_cpu;
      if (!decode (m, int8, &prefill, &step, &step_cpu, &error))
        {
          fprintf (stderr, "bench-generate: %s\n", error->message);
          return 1;
        }
      printf ("prefill SmolLM2-135M Q4_1, %s, %d tokens: %.1f ms (%.0f tokens/s)\n", how, PROMPT, prefill * 1e3,
              PROMPT / prefill);
      printf ("decode SmolLM2-135M Q4_1, %s: %.1f tokens/s (median of %d steps, %.1f ms), bound %.0f tokens/s "
              "(%.1f MB a step at the triad bandwidth): %.0f%% of it\n",
              how, 1.0 / step, STEPS, step * 1e3, bound, bytes / 1e6, 100.0 / step / bound);
      printf ("decode SmolLM2-135M Q4_1, %s: %.1f ms of CPU time a step (median, all %d threads; %.1f tokens/s per "
              "CPU second)\n",
              how, step_cpu * 1e3, lp_threads (), 1.0 / step_cpu);
      ours = 1.0 / step;
      ours_cpu = step_cpu;
    }
  double ref_cpu = 0.0, ref = llama_cpp_step (path, &ref_cpu);
  if (ref > 0.0)
    {
      printf ("decode SmolLM2-135M Q4_1, llama.cpp (llama-cpp-python, %d threads, same run): %.1f tokens/s "
              "(median of %d steps, %.1f ms), %.1f ms of CPU time a step\n",
              lp_threads (), 1.0 / ref, STEPS, ref * 1e3, ref_cpu * 1e3);
      printf ("decode SmolLM2-135M Q4_1, ours (8-bit) / llama.cpp: %.2f in tokens/s, %.2f in CPU time a step\n",
              ours * ref, ref_cpu / ours_cpu);
    }
  return 0;
}
