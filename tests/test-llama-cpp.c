/* llama.cpp itself as the oracle (llama-cpp-python, when python3 has it; the
 * tests skip with the reason otherwise), on the shipped demo model:
 * - preset=: llama-quantize (llama_model_quantize) on the same f32 GGUF writes
 *   every tensor in the type quantize.rtn preset=... chose, with the same
 *   bytes (RTN without an imatrix is quantize_row_<type>_ref in both);
 * - the quick start's GGUF (specs/default.ini, GPTQ into Q4_K_M) loads in
 *   llama.cpp, and its perplexity over one window there agrees with
 *   `llmpress eval` on the same tokens. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

static const char oracle[] =
  "import sys, numpy as np\n"
  "import llama_cpp\n"
  "from gguf import GGUFReader\n"
  "cmd = sys.argv[1]\n"
  "if cmd == 'quantize':\n"
  "    src, dst, mix, ours = sys.argv[2:6]\n"
  "    p = llama_cpp.llama_model_quantize_default_params()\n"
  "    p.ftype = getattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_' + mix)\n"
  "    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p) != 0: sys.exit('llama_model_quantize failed')\n"
  "    theirs = {t.name: t for t in GGUFReader(dst).tensors}\n"
  "    mine = {t.name: t for t in GGUFReader(ours).tensors}\n"
  "    bad = 0\n"
  "    if sorted(theirs) != sorted(mine): print('tensor names differ'); bad += 1\n"
  "    for name, t in sorted(theirs.items()):\n"
  "        m = mine.get(name)\n"
  "        if m is None: continue\n"
  "        if m.tensor_type != t.tensor_type:\n"
  "            print('type differs:', name, 'llama.cpp', t.tensor_type.name, 'ours', m.tensor_type.name); bad += 1\n"
  "        elif not np.array_equal(np.asarray(m.data).view(np.uint8), np.asarray(t.data).view(np.uint8)):\n"
  "            print('bytes differ:', name, t.tensor_type.name); bad += 1\n"
  "    print(mix, 'tensors', len(theirs), 'bad', bad)\n"
  "    sys.exit(1 if bad else 0)\n"
  "elif cmd == 'ppl':\n"
  "    model, text, n, toks = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]\n"
  "    llm = llama_cpp.Llama(model_path=model, n_ctx=n, logits_all=True, verbose=False)\n"
  "    ids = llm.tokenize(open(text, 'rb').read(), add_bos=True)[:n]\n"
  "    np.array(ids[1:], dtype='<u4').tofile(toks)\n"
  "    llm.eval(ids)\n"
  "    logits = np.asarray(llm.scores[:n], dtype=np.float64)\n"
  "    logits -= logits.max(axis=1, keepdims=True)\n"
  "    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))\n"
  "    nll = -np.mean([logp[i, ids[i + 1]] for i in range(n - 1)])\n"
  "    print('ppl %.6f' % np.exp(nll))\n";

/* contrib/demo/NAME in the source tree. */
static char *
demo_path (const char *name)
{
  return g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "..", "contrib", "demo", name, NULL);
}

static void
test_preset_matches_llama_quantize (gconstpointer data)
{
  const char *mix = data;
  if (!lp_test_python_has ("llama_cpp, gguf, numpy", "no llama.cpp oracle (llama-cpp-python)"))
    return;
  g_autofree char *demo = demo_path ("stories260K.gguf");
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), mix, NULL);
  /* Both quantize the same tensors: the demo GGUF as we hold it (its
   * output.weight is a copy of token_embd.weight, which the loader ties, so
   * token_embd takes the output head's rule in both). */
  g_autofree char *model = g_build_filename (dir, "f32.gguf", NULL);
  g_autofree char *err = NULL;
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  const char *convert[] = { "convert", demo, model, NULL };
  if (lp_test_run_cliv (NULL, &err, convert) != 0)
    g_error ("%s", err);
  g_autofree char *p = g_strdup_printf ("load path=%s ! quantize.rtn preset=%s ! save path=ours.gguf", model, mix);
  const char *run[] = { "run", "--no-cache", "-q", "-o", dir, "-p", p, NULL };
  g_clear_pointer (&err, g_free);
  if (lp_test_run_cliv (NULL, &err, run) != 0)
    g_error ("%s", err);
  g_autofree char *ours = g_build_filename (dir, "ours.gguf", NULL);
  g_autofree char *theirs = g_build_filename (dir, "llama-quantize.gguf", NULL);
  const char *args[] = { "quantize", model, theirs, mix, ours, NULL };
  g_autofree char *out = lp_test_python_run (oracle, args);
  g_assert_nonnull (strstr (out, " bad 0"));
}

/* specs/default.ini's output in llama.cpp: it loads, and its perplexity over
 * one window of 128 tokens (BOS first, every later token scored) matches
 * `llmpress eval --ctx 128` on the same token ids.  llama.cpp multiplies
 * q5_0/q8_0 rows by 8-bit-quantized activations where we dequantize to f32,
 * hence the 0.5% tolerance. */
static void
test_default_spec_runs_in_llama_cpp (void)
{
  if (!lp_test_python_has ("llama_cpp, gguf, numpy", "no llama.cpp oracle (llama-cpp-python)"))
    return;
  g_autofree char *model = demo_path ("stories260K.gguf");
  g_autofree char *text = demo_path ("tinystories-eval.txt");
  g_autofree char *calib = demo_path ("tinystories-calib.txt");
  g_autofree char *spec = g_build_filename (g_getenv ("LLMPRESS_SPECS_DIR"), "default.ini", NULL);
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "default", NULL);
  g_autofree char *mdef = g_strdup_printf ("model=%s", model), *ddef = g_strdup_printf ("data=%s", text),
                  *cdef = g_strdup_printf ("calib=%s", calib);
  g_autofree char *err = NULL;
  const char *run[] = { "run", spec, "-D", mdef, "-D", ddef, "-D", cdef, "-D", "ctx=128", "-D", "windows=4",
                        "-D", "calib_samples=8", "-D", "calib_seq_len=128", "-o", dir, "--no-cache", "-q", NULL };
  if (lp_test_run_cliv (NULL, &err, run) != 0)
    g_error ("%s", err);
  g_autofree char *saved = g_build_filename (dir, "model.gguf", NULL);
  g_autofree char *toks = g_build_filename (dir, "window.u32", NULL);
  const char *args[] = { "ppl", saved, text, "128", toks, NULL };
  g_autofree char *out = lp_test_python_run (oracle, args);
  double theirs = 0;
  g_assert_cmpint (sscanf (out, "ppl %lf", &theirs), ==, 1);
  g_autofree char *json = NULL;
  g_clear_pointer (&err, g_free);
  const char *eval[] = { "eval", saved, "--data", toks, "--ctx", "128", NULL };
  if (lp_test_run_cliv (&json, &err, eval) != 0)
    g_error ("%s", err);
  const char *at = strstr (json, "perplexity");
  g_assert_nonnull (at);
  double ours = 0;
  g_assert_cmpint (sscanf (at + strcspn (at, "0123456789"), "%lf", &ours), ==, 1);
  g_test_message ("quick start GGUF, one window of 128 tokens: perplexity %.5f in llama.cpp, %.5f in llmpress eval",
                  theirs, ours);
  g_assert_cmpfloat (fabs (theirs - ours) / ours, <, 5e-3);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  static const char *const mixes[] = { "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q3_K_M", "Q3_K_L", "Q3_K_S", "Q2_K",
                                       "Q6_K" };
  for (guint i = 0; i < G_N_ELEMENTS (mixes); i++)
    {
      g_autofree char *name = g_strdup_printf ("/llama-cpp/preset/%s", mixes[i]);
      g_test_add_data_func (name, mixes[i], test_preset_matches_llama_quantize);
    }
  g_test_add_func ("/llama-cpp/default-spec", test_default_spec_runs_in_llama_cpp);
  return g_test_run ();
}
