/* LoRA adapters as files runtimes load: a GGUF LoRA (llama.cpp) and a PEFT
 * directory (transformers, vLLM) written from adapter forms and read back
 * onto the base (the same logits), their names and metadata checked with
 * gguf-py and the safetensors module, base + adapter against the merged
 * model's perplexity on stories260K, the save / load adapter= / merge
 * passes of a pipeline, and bad adapters. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

#define N_TOKENS 64

static char *
tmp_path (const char *name)
{
  return g_build_filename (lp_test_tmpdir (), name, NULL);
}

/* stories260K (llama2.c with tok512 beside it), or NULL after a skip. */
static LpModel *
stories (void)
{
  g_autofree char *mp = lp_test_shared_path ("models/stories260K/stories260K.bin");
  if (mp == NULL)
    return NULL;
  g_autoptr (GError) error = NULL;
  LpModel *m = lp_model_load (mp, NULL, &error);
  g_assert_no_error (error);
  return m;
}

/* The rank and scale of layer l's adapters: ranks 4 and 2 alternate (PEFT
 * writes a rank_pattern), and the last layer's scale is not alpha / r of
 * the first's (PEFT: alpha_pattern; GGUF: folded into B). */
static int
layer_rank (int l)
{
  return l % 2 == 0 ? 4 : 2;
}

static double
layer_scale (int l, int n_layers)
{
  return l == n_layers - 1 ? 0.3 : 1.5 / layer_rank (l);
}

/* base with random small adapters (A, B uniform in +-0.05) on every linear
 * weight of every block, except the last block's attn_v (so target_modules
 * must name the v_proj modules one by one). */
static LpModel *
with_adapters (LpModel *base, guint32 seed)
{
  static const char *const linear[] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" };
  int L = (int) lp_model_config (base)->n_layers;
  LpModel *m = lp_model_derive (base);
  for (int l = 0; l < L; l++)
    for (gsize j = 0; j < G_N_ELEMENTS (linear); j++)
      {
        if (l == L - 1 && strcmp (linear[j], "attn_v") == 0)
          continue;
        g_autofree char *name = g_strdup_printf ("blk.%d.%s.weight", l, linear[j]);
        LpTensor *w = lp_model_tensor (base, name);
        g_assert_nonnull (w);
        gint64 R = layer_rank (l), as[2] = { R, w->shape[1] }, bs[2] = { w->shape[0], R };
        g_autofree float *av = g_new (float, as[0] * as[1]);
        g_autofree float *bv = g_new (float, bs[0] * bs[1]);
        lp_test_fill (av, as[0] * as[1], seed++, 0.05);
        lp_test_fill (bv, bs[0] * bs[1], seed++, 0.05);
        g_autoptr (GError) error = NULL;
        g_autoptr (LpTensor) a = lp_tensor_new_f32 ("a", 2, as, av, &error);
        g_autoptr (LpTensor) b = lp_tensor_new_f32 ("b", 2, bs, bv, &error);
        g_autoptr (LpTensor) t = lp_tensor_new_adapter (w, a, b, layer_scale (l, L), &error);
        g_assert_no_error (error);
        lp_model_set_tensor (m, t);
      }
  return m;
}

/* logits[T, V] of BOS + the first tokens of the TinyStories split. */
static float *
logits_of (LpModel *m)
{
  g_autofree char *dp = lp_test_shared_path ("data/tinystories-valid-head.tok512.u16");
  g_assert_nonnull (dp);
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) toks = lp_tokens_load (dp, m, &error);
  g_assert_no_error (error);
  gint32 tokens[N_TOKENS];
  tokens[0] = 1;
  memcpy (tokens + 1, toks->data, (N_TOKENS - 1) * sizeof (gint32));
  LpForward *fw = lp_forward_new (m, NULL, &error);
  g_assert_no_error (error);
  float *logits = g_new (float, (gsize) N_TOKENS * lp_model_config (m)->n_vocab);
  g_assert_true (lp_forward_logits (fw, tokens, N_TOKENS, NULL, logits, &error));
  g_assert_no_error (error);
  lp_forward_free (fw);
  return logits;
}

/* Every adapter of `want` is in `got` with the same A (bit for bit) and the
 * same scale B A (within f32 rounding: a file holds one scale, a weight
 * whose scale differs has the ratio in its B), blk.0.attn_q's B and scale
 * bit for bit (its scale is the file's; PEFT permutes its rows and back);
 * and the same logits. */
static void
assert_same_adapters (LpModel *want, LpModel *got)
{
  guint n = 0;
  for (guint i = 0; i < lp_model_n_tensors (want); i++)
    {
      LpTensor *t = lp_model_tensor_at (want, i), *a, *b, *ga, *gb, *gbase;
      double scale, gscale;
      if (!lp_tensor_adapter_parts (t, NULL, &a, &b, &scale))
        continue;
      LpTensor *g = lp_model_tensor (got, t->name);
      g_assert_nonnull (g);
      g_assert_true (lp_tensor_adapter_parts (g, &gbase, &ga, &gb, &gscale));
      g_assert_null (gbase->form);
      g_assert_true (g_bytes_equal (a->data, ga->data));
      if (strcmp (t->name, "blk.0.attn_q.weight") == 0)
        {
          g_assert_true (g_bytes_equal (b->data, gb->data));
          g_assert_cmpfloat (scale, ==, gscale);
        }
      /* The product's values: t's data holds base + scale B A. */
      lp_test_assert_close (lp_tensor_data (g), lp_tensor_data (t), (gsize) lp_tensor_n_elements (t), 1e-6);
      n++;
    }
  g_assert_cmpuint (n, ==, 34);
  g_autofree float *lw = logits_of (want);
  g_autofree float *lg = logits_of (got);
  lp_test_assert_close (lg, lw, (gsize) N_TOKENS * lp_model_config (want)->n_vocab, 1e-6);
}

static void
test_gguf_roundtrip (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autoptr (LpModel) m = with_adapters (base, 11);
  g_autofree char *path = tmp_path ("rt.lora.gguf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_save_adapter (m, path, LP_ADAPTER_FORMAT_AUTO, -1, NULL, &error));
  g_assert_no_error (error);
  guint n = 0;
  g_autoptr (LpModel) back = lp_model_apply_adapter (base, path, &n, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (n, ==, 34);
  assert_same_adapters (m, back);
}

static void
test_peft_roundtrip (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autoptr (LpModel) m = with_adapters (base, 23);
  g_autofree char *path = tmp_path ("rt-peft");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_save_adapter (m, path, LP_ADAPTER_FORMAT_AUTO, -1, NULL, &error));
  g_assert_no_error (error);
  g_autofree char *manifest = g_build_filename (path, ".llmpress-output", NULL);
  g_assert_true (g_file_test (manifest, G_FILE_TEST_EXISTS));
  g_autoptr (LpModel) back = lp_model_apply_adapter (base, path, NULL, &error);
  g_assert_no_error (error);
  assert_same_adapters (m, back);
  /* Written again over itself (its manifest says it is ours): allowed. */
  g_assert_true (lp_model_save_adapter (m, path, LP_ADAPTER_FORMAT_PEFT, LP_DTYPE_F16, NULL, &error));
  g_assert_no_error (error);
}

/* Base + adapter, evaluated, equals the merged dense model (Done means:
 * within 1e-4 in perplexity), and the adapter did change the model. */
static void
test_merge_ppl (void)
{
  g_autoptr (LpModel) base = stories ();
  g_autofree char *dp = base ? lp_test_shared_path ("data/tinystories-valid-head.tok512.u16") : NULL;
  if (dp == NULL)
    return;
  g_autoptr (LpModel) m = with_adapters (base, 37);
  g_autoptr (GError) error = NULL;
  guint merged = 0, deq = 0;
  g_autoptr (LpModel) dense = lp_model_merge_adapters (m, &merged, &deq, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (merged, ==, 34);
  g_assert_cmpuint (deq, ==, 0);
  for (guint i = 0; i < lp_model_n_tensors (dense); i++)
    {
      LpTensor *t = lp_model_tensor_at (dense, i);
      g_assert_null (t->form);
      g_assert_cmpint (t->dtype, ==, LP_DTYPE_F32);
    }
  g_autoptr (GArray) toks = lp_tokens_load (dp, m, &error);
  g_assert_no_error (error);
  /* The whole split (769 windows) for the two compared; 40 to see the adapter matters. */
  LpEvalOptions o = { .ctx = 512 }, few = { .ctx = 512, .max_windows = 40 };
  LpEvalResult rb, rf, ra, rm;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, &ra, &error));
  g_assert_true (lp_eval_run (dense, (gint32 *) toks->data, toks->len, &o, &rm, &error));
  g_assert_true (lp_eval_run (base, (gint32 *) toks->data, toks->len, &few, &rb, &error));
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &few, &rf, &error));
  g_assert_no_error (error);
  g_test_message ("stories260K ppl, 769 windows: base + adapter %.6f, merged %.6f (|diff| %.2e); 40 windows: base %.6f, "
                  "base + adapter %.6f", ra.ppl, rm.ppl, fabs (ra.ppl - rm.ppl), rb.ppl, rf.ppl);
  g_assert_cmpint (ra.n_windows, ==, 769);
  g_assert_cmpfloat (fabs (ra.ppl - rm.ppl), <, 1e-4);
  g_assert_cmpfloat (fabs (rf.ppl - rb.ppl), >, 1e-3);
  /* An f16 base stays f16 when merged. */
  g_autoptr (LpTensor) w16 = lp_tensor_convert (lp_model_tensor (base, "blk.0.attn_q.weight"), LP_DTYPE_F16, &error);
  LpTensor *a, *b;
  double s;
  g_assert_true (lp_tensor_adapter_parts (lp_model_tensor (m, "blk.0.attn_q.weight"), NULL, &a, &b, &s));
  g_autoptr (LpTensor) ad16 = lp_tensor_new_adapter (w16, a, b, s, &error);
  g_assert_no_error (error);
  gboolean dq = TRUE;
  g_autoptr (LpTensor) m16 = lp_tensor_adapter_merged (ad16, &dq, &error);
  g_assert_no_error (error);
  g_assert_false (dq);
  g_assert_cmpint (m16->dtype, ==, LP_DTYPE_F16);
  /* A grid base becomes f32 holding base + adapter exactly (not re-quantized). */
  g_autoptr (LpIntGrid) grid = lp_test_int_grid (64, 64, 3, 32, 5);
  gint64 shape[2] = { 64, 64 };
  g_autoptr (LpTensor) q = lp_tensor_new_int_grid ("blk.0.attn_q.weight", 2, shape, grid, NULL, &error);
  g_autoptr (LpTensor) adq = lp_tensor_new_adapter (q, a, b, s, &error);
  g_autoptr (LpTensor) mq = lp_tensor_adapter_merged (adq, &dq, &error);
  g_assert_no_error (error);
  g_assert_true (dq);
  g_assert_cmpint (mq->dtype, ==, LP_DTYPE_F32);
  g_assert_null (mq->form);
  g_assert_true (g_bytes_equal (mq->data, adq->data));
}

/* Run python3 with `script` and args; FALSE after a skip when python3 or a
 * module it imports is missing. */
static gboolean
python_check (const char *modules, const char *script, const char *const *args)
{
  g_autofree char *probe = g_strdup_printf ("import %s", modules);
  const char *check[] = { "python3", "-c", probe, NULL };
  int status = -1;
  if (!g_spawn_sync (NULL, (char **) check, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_autofree char *why = g_strdup_printf ("python3 with %s is not available", modules);
      g_test_skip (why);
      return FALSE;
    }
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) "python3");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, (gpointer) script);
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  g_ptr_array_add (argv, NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error));
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("python3 check failed: %s%s", out, err);
  g_test_message ("%s", out);
  return TRUE;
}

/* gguf-py reads the GGUF LoRA as llama.cpp's loader would check it: the
 * keys, a .lora_a/.lora_b pair per weight named after a tensor of the base
 * file, with base ne0 == a ne0, base ne1 == b ne1, a ne1 == b ne0. */
static void
test_gguf_python (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autoptr (LpModel) m = with_adapters (base, 41);
  g_autofree char *lora = tmp_path ("py.lora.gguf");
  g_autofree char *bpath = tmp_path ("py-base.gguf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_save_adapter (m, lora, LP_ADAPTER_FORMAT_GGUF, LP_DTYPE_F16, NULL, &error));
  g_assert_true (lp_model_save (base, bpath, NULL, &error));
  g_assert_no_error (error);
  const char *script =
    "import sys, gguf\n"
    "a = gguf.GGUFReader(sys.argv[1]); b = gguf.GGUFReader(sys.argv[2])\n"
    "def s(r, k):\n"
    "    f = r.fields[k]; return bytes(f.parts[f.data[0]]).decode()\n"
    "assert s(a, 'general.type') == 'adapter', s(a, 'general.type')\n"
    "assert s(a, 'adapter.type') == 'lora'\n"
    "assert s(a, 'general.architecture') == s(b, 'general.architecture') == 'llama'\n"
    "f = a.fields['adapter.lora.alpha']\n"
    "assert f.types[0] == gguf.GGUFValueType.FLOAT32, f.types\n"
    "alpha = float(f.parts[f.data[0]][0])\n"
    "assert abs(alpha - 1.5) < 1e-6, alpha\n"
    "base = {t.name: [int(x) for x in t.shape] for t in b.tensors}\n"
    "ts = {t.name: t for t in a.tensors}\n"
    "n = 0\n"
    "for name, t in ts.items():\n"
    "    assert name.endswith('.lora_a') or name.endswith('.lora_b'), name\n"
    "    assert t.tensor_type == gguf.GGMLQuantizationType.F16, t.tensor_type\n"
    "    if not name.endswith('.lora_a'): continue\n"
    "    w = name[:-len('.lora_a')]; la = [int(x) for x in t.shape]; lb = [int(x) for x in ts[w + '.lora_b'].shape]\n"
    "    assert w in base, w\n"
    "    assert base[w][0] == la[0] and base[w][1] == lb[1] and la[1] == lb[0], (w, base[w], la, lb)\n"
    "    n += 1\n"
    "assert n == 34, n\n"
    "print('gguf-py: %d LoRA pairs, alpha %g' % (n, alpha))\n";
  const char *args[] = { lora, bpath, NULL };
  python_check ("gguf", script, args);
}

/* The PEFT directory as transformers and vLLM read it: the config's
 * fields, the module names, every module's alpha / r the global one (vLLM
 * reads neither pattern), and, with numpy, that the HF base written by
 * lp_model_save plus scale B A is the merged model written the same way
 * (B's q/k rows in HF's order as the base's). */
static void
test_peft_python (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autoptr (LpModel) m = with_adapters (base, 43);
  g_autofree char *dir = tmp_path ("py-peft");
  g_autofree char *hf_base = tmp_path ("py-hf-base");
  g_autofree char *hf_merged = tmp_path ("py-hf-merged");
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) bases = lp_model_adapter_bases (m, NULL);
  g_autoptr (LpModel) merged = lp_model_merge_adapters (m, NULL, NULL, &error);
  g_assert_true (lp_model_save_adapter (m, dir, LP_ADAPTER_FORMAT_PEFT, -1, hf_base, &error));
  g_assert_true (lp_model_save (bases, hf_base, NULL, &error));
  g_assert_true (lp_model_save (merged, hf_merged, NULL, &error));
  g_assert_no_error (error);
  const char *script =
    "import sys, json, numpy as np\n"
    "from safetensors.numpy import load_file\n"
    "d, hb, hm = sys.argv[1:4]\n"
    "c = json.load(open(d + '/adapter_config.json'))\n"
    "assert c['peft_type'] == 'LORA' and c['task_type'] == 'CAUSAL_LM' and c['bias'] == 'none'\n"
    "assert c['fan_in_fan_out'] is False and c['use_rslora'] is False and c['base_model_name_or_path'] == hb\n"
    "assert c['r'] == 4 and c['lora_alpha'] == 1.5, (c['r'], c['lora_alpha'])\n"
    "tm = c['target_modules']\n"
    "assert 'q_proj' in tm and 'down_proj' in tm and 'v_proj' not in tm and 'model.layers.0.self_attn.v_proj' in tm, tm\n"
    "assert c['rank_pattern'].get('model.layers.1.self_attn.q_proj') == 2 and 'model.layers.0.self_attn.q_proj' not in c['rank_pattern']\n"
    "assert c['alpha_pattern'].get('model.layers.1.mlp.up_proj') == 0.75 and 'model.layers.4.mlp.up_proj' not in c['alpha_pattern'], c['alpha_pattern']\n"
    "w = load_file(d + '/adapter_model.safetensors')\n"
    "base = load_file(hb + '/model.safetensors'); mer = load_file(hm + '/model.safetensors')\n"
    "P = 'base_model.model.'\n"
    "mods = sorted(k[len(P):-len('.lora_A.weight')] for k in w if k.endswith('.lora_A.weight'))\n"
    "assert len(mods) == 34 and len(w) == 68, (len(mods), len(w))\n"
    "worst = 0\n"
    "for mod in mods:\n"
    "    A = w[P + mod + '.lora_A.weight']; B = w[P + mod + '.lora_B.weight']\n"
    "    W = base[mod + '.weight']\n"
    "    assert A.shape == (B.shape[1], W.shape[1]) and B.shape[0] == W.shape[0], (mod, A.shape, B.shape, W.shape)\n"
    "    r = A.shape[0]\n"
    "    alpha = c['alpha_pattern'].get(mod, c['lora_alpha']); assert c['rank_pattern'].get(mod, c['r']) == r\n"
    "    assert alpha / r == c['lora_alpha'] / c['r'], (mod, alpha, r)  # vLLM reads no pattern\n"
    "    D = W.astype(np.float64) + (alpha / r) * (B.astype(np.float64) @ A.astype(np.float64))\n"
    "    worst = max(worst, float(np.abs(D - mer[mod + '.weight']).max()))\n"
    "assert worst < 1e-6, worst\n"
    "print('peft: %d modules, base + alpha/r B A = merged within %.2e' % (len(mods), worst))\n";
  const char *args[] = { dir, hf_base, hf_merged, NULL };
  python_check ("safetensors, numpy", script, args);
}

/* A GGUF LoRA written by gguf-py's GGUFWriter (what convert_lora_to_gguf.py
 * writes with): f16 factors on two weights, alpha 6 at rank 3, read onto
 * stories260K: each weight is base + 2 B A. */
static void
test_gguf_from_python (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autofree char *path = tmp_path ("from-gguf-py.gguf");
  const char *script =
    "import sys, numpy as np, gguf\n"
    "w = gguf.GGUFWriter(sys.argv[1], 'llama')\n"
    "w.add_type('adapter'); w.add_string('adapter.type', 'lora'); w.add_float32('adapter.lora.alpha', 6.0)\n"
    "for name, n in (('blk.0.attn_q.weight', 64), ('blk.3.ffn_down.weight', 64)):\n"
    "    k = 64 if 'attn' in name else 172\n"
    "    a = np.array([[((i * 7 + j) % 5 - 2) / 8 for j in range(k)] for i in range(3)], dtype=np.float16)\n"
    "    b = np.array([[((i * 3 + j) % 7 - 3) / 16 for j in range(3)] for i in range(n)], dtype=np.float16)\n"
    "    w.add_tensor(name + '.lora_a', a); w.add_tensor(name + '.lora_b', b)\n"
    "w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()\n"
    "print('wrote', sys.argv[1])\n";
  const char *args[] = { path, NULL };
  if (!python_check ("gguf, numpy", script, args))
    return;
  g_autoptr (GError) error = NULL;
  guint n = 0;
  g_autoptr (LpModel) m = lp_model_apply_adapter (base, path, &n, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (n, ==, 2);
  const char *names[2] = { "blk.0.attn_q.weight", "blk.3.ffn_down.weight" };
  for (int t = 0; t < 2; t++)
    {
      LpTensor *w = lp_model_tensor (base, names[t]), *got = lp_model_tensor (m, names[t]);
      double scale;
      g_assert_true (lp_tensor_adapter_parts (got, NULL, NULL, NULL, &scale));
      g_assert_cmpfloat (scale, ==, 2.0);
      gint64 N = w->shape[0], K = w->shape[1];
      const float *bw = lp_tensor_data (w), *gw = lp_tensor_data (got);
      for (gint64 i = 0; i < N; i++)
        for (gint64 j = 0; j < K; j++)
          {
            double d = 0;
            for (int r = 0; r < 3; r++)
              d += (((i * 3 + r) % 7 - 3) / 16.0) * (((r * 7 + j) % 5 - 2) / 8.0);
            g_assert_cmpfloat (fabs (gw[i * K + j] - (bw[i * K + j] + 2.0 * d)), <, 1e-6);
          }
    }
}

/* An adapter file with the tensors named rename_from* renamed rename_to*,
 * or one A given extra columns, by hand. */
static char *
edited_lora (const char *name, const char *type, const char *arch, const char *rename_from, const char *rename_to,
             gint64 extra_cols)
{
  g_autoptr (LpModel) base = stories ();
  g_autoptr (LpModel) m = with_adapters (base, 5);
  g_autofree char *good = tmp_path ("edit-src.gguf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_save_adapter (m, good, LP_ADAPTER_FORMAT_GGUF, -1, NULL, &error));
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) ts = lp_gguf_read_tensors (good, meta, &error);
  g_assert_no_error (error);
  lp_meta_set_string (meta, "general.type", type);
  lp_meta_set_string (meta, "general.architecture", arch);
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  for (guint i = 0; i < ts->len; i++)
    {
      LpTensor *t = ts->pdata[i];
      if (rename_from && g_str_has_prefix (t->name, rename_from))
        {
          g_autofree char *renamed = g_strconcat (rename_to, t->name + strlen (rename_from), NULL);
          g_ptr_array_add (out, lp_tensor_rename (t, renamed));
        }
      else if (extra_cols && strcmp (t->name, "blk.2.ffn_up.weight.lora_a") == 0)
        {
          gint64 s[2] = { t->shape[0], t->shape[1] + extra_cols };
          g_ptr_array_add (out, lp_tensor_new ("blk.2.ffn_up.weight.lora_a", LP_DTYPE_F32, 2, s, &error));
        }
      else
        g_ptr_array_add (out, lp_tensor_ref (t));
    }
  char *path = tmp_path (name);
  g_assert_true (lp_gguf_write (path, meta, out, &error));
  g_assert_no_error (error);
  return path;
}

static void
assert_apply_fails (LpModel *base, const char *path, const char *f1, const char *f2)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_apply_adapter (base, path, NULL, &error);
  g_assert_null (m);
  lp_test_assert_error_contains (error, path, f1, f2, NULL);
  g_assert_null (strchr (error->message, '\n'));
}

static void
test_bad_adapters (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autofree char *missing = edited_lora ("bad-missing.gguf", "adapter", "llama", "blk.1.attn_q.weight.",
                                          "blk.9.attn_q.weight.", 0);
  assert_apply_fails (base, missing, "blk.9.attn_q.weight", "wrong base model");
  g_autofree char *shape = edited_lora ("bad-shape.gguf", "adapter", "llama", NULL, NULL, 3);
  assert_apply_fails (base, shape, "blk.2.ffn_up.weight", "expected A [R, 64]");
  g_autofree char *half = edited_lora ("bad-half.gguf", "adapter", "llama", "blk.1.attn_q.weight.lora_a", "blk.1.attn_q.weight.lora_x", 0);
  assert_apply_fails (base, half, "blk.1.attn_q.weight.lora_x", ".lora_a or .lora_b");
  g_autofree char *model = edited_lora ("bad-type.gguf", "model", "llama", NULL, NULL, 0);
  assert_apply_fails (base, model, "general.type", "\"model\"");
  g_autofree char *arch = edited_lora ("bad-arch.gguf", "adapter", "qwen2", NULL, NULL, 0);
  assert_apply_fails (base, arch, "general.architecture", "qwen2");
  /* A base model is no adapter. */
  g_autofree char *bpath = tmp_path ("bad-base.gguf");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_save (base, bpath, NULL, &error));
  assert_apply_fails (base, bpath, "general.type", "expected \"adapter\"");
  g_autofree char *none = tmp_path ("bad-none");
  assert_apply_fails (base, none, "no such file", NULL);
  /* A PEFT adapter of another model's modules. */
  g_autoptr (LpModel) m = with_adapters (base, 7);
  g_autofree char *peft = tmp_path ("bad-peft");
  g_assert_true (lp_model_save_adapter (m, peft, LP_ADAPTER_FORMAT_PEFT, -1, NULL, &error));
  g_assert_no_error (error);
  g_autoptr (LpModel) tiny = lp_test_tiny_model (3);
  assert_apply_fails (tiny, peft, "self_attn", "wrong base model");
  /* A config PEFT writes for what we do not apply: refused by name. */
  g_autofree char *cfg = g_build_filename (peft, "adapter_config.json", NULL);
  g_autofree char *cfg_text = lp_test_read_text (cfg);
  const char *edits[][3] = {
    { "\"fan_in_fan_out\" : false", "\"fan_in_fan_out\" : true", "fan_in_fan_out" },
    { "\"use_dora\" : false", "\"use_dora\" : true", "use_dora" },
    { "\"peft_type\" : \"LORA\"", "\"peft_type\" : \"IA3\"", "peft_type" },
    { "\"r\" : 4", "\"r\" : 8", "expected rank 8" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (edits); i++)
    {
      g_assert_nonnull (strstr (cfg_text, edits[i][0]));
      g_auto (GStrv) parts = g_strsplit (cfg_text, edits[i][0], 2);
      g_autofree char *edited = g_strjoinv (edits[i][1], parts);
      lp_test_write_text (cfg, edited);
      assert_apply_fails (base, peft, edits[i][2], NULL);
    }
  lp_test_write_text (cfg, cfg_text);
  /* An adapter over weights that have one already. */
  assert_apply_fails (m, peft, "has one already", "merge it first");
  /* Never over the model's own input. */
  g_autoptr (LpModel) from_file = lp_model_load (bpath, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) fm = with_adapters (from_file, 9);
  g_autofree char *before = NULL, *after = NULL;
  gsize n_before = 0, n_after = 0;
  g_assert_true (g_file_get_contents (bpath, &before, &n_before, NULL));
  g_assert_false (lp_model_save_adapter (fm, bpath, LP_ADAPTER_FORMAT_GGUF, -1, NULL, &error));
  lp_test_assert_error_contains (error, "refusing to write", NULL);
  g_clear_error (&error);
  g_assert_true (g_file_get_contents (bpath, &after, &n_after, NULL));
  g_assert_true (n_before == n_after && memcmp (before, after, n_before) == 0);
  /* Writing the adapters of a model without any: refused, nothing written. */
  g_autofree char *out = tmp_path ("bad-noadapter.gguf");
  g_assert_false (lp_model_save_adapter (base, out, LP_ADAPTER_FORMAT_AUTO, -1, NULL, &error));
  lp_test_assert_error_contains (error, "expected a model with adapters", NULL);
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
}

/* The passes: load adapter= (a PEFT directory) ! merge ! save, and load
 * adapter= ! save adapter= alone (only the adapter written); a bad adapter
 * is one line, exit 1. */
static void
test_pipeline (void)
{
  g_autoptr (LpModel) base = stories ();
  if (base == NULL)
    return;
  g_autoptr (LpModel) m = with_adapters (base, 51);
  g_autofree char *bpath = tmp_path ("pipe-base.gguf");
  g_autofree char *peft = tmp_path ("pipe-peft");
  g_autoptr (GError) error = NULL;
  g_assert_true (lp_model_save (base, bpath, NULL, &error));
  g_assert_true (lp_model_save_adapter (m, peft, LP_ADAPTER_FORMAT_PEFT, -1, NULL, &error));
  g_assert_no_error (error);
  g_autofree char *out = tmp_path ("pipe-out");
  g_autofree char *spec1 = tmp_path ("merge.ini");
  g_autofree char *text1 = g_strdup_printf ("[load]\npath=%s\nadapter=%s\n\n[merge]\n\n[save]\npath=merged.gguf\n", bpath, peft);
  lp_test_write_text (spec1, text1);
  g_autofree char *o = NULL, *e = NULL;
  int st = lp_test_run_cli (&o, &e, "run", spec1, "-o", out, "--no-cache", "-q", NULL);
  if (st != 0)
    g_error ("run %s: exit %d: %s", spec1, st, e);
  g_autofree char *mpath = g_build_filename (out, "merged.gguf", NULL);
  g_autoptr (LpModel) merged = lp_model_load (mpath, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpModel) want = lp_model_merge_adapters (m, NULL, NULL, &error);
  for (guint i = 0; i < lp_model_n_tensors (want); i++)
    {
      LpTensor *t = lp_model_tensor_at (want, i);
      LpTensor *g = lp_model_tensor (merged, t->name);
      g_assert_nonnull (g);
      g_assert_null (g->form);
      lp_test_assert_close (lp_tensor_data (g), lp_tensor_data (t), (gsize) lp_tensor_n_elements (t), 1e-6);
    }

  /* Only the adapter: a GGUF LoRA, no base file. */
  g_autofree char *spec2 = tmp_path ("adapter-only.ini");
  g_autofree char *text2 = g_strdup_printf ("[load]\npath=%s\nadapter=%s\n\n[save]\nadapter=only.lora.gguf\n", bpath, peft);
  lp_test_write_text (spec2, text2);
  g_clear_pointer (&e, g_free);
  st = lp_test_run_cli (NULL, &e, "run", spec2, "-o", out, "--no-cache", "-q", NULL);
  if (st != 0)
    g_error ("run %s: exit %d: %s", spec2, st, e);
  g_autofree char *lora = g_build_filename (out, "only.lora.gguf", NULL);
  g_autoptr (LpModel) back = lp_model_apply_adapter (base, lora, NULL, &error);
  g_assert_no_error (error);
  assert_same_adapters (m, back);

  /* Base and adapter from one save: the base without its adapters. */
  g_autofree char *spec3 = tmp_path ("both.ini");
  g_autofree char *text3 = g_strdup_printf ("[load]\npath=%s\nadapter=%s\n\n[save]\npath=b.gguf\nadapter=b-peft\n", bpath, lora);
  lp_test_write_text (spec3, text3);
  g_clear_pointer (&e, g_free);
  st = lp_test_run_cli (NULL, &e, "run", spec3, "-o", out, "--no-cache", "-q", NULL);
  if (st != 0)
    g_error ("run %s: exit %d: %s", spec3, st, e);
  g_autofree char *b2 = g_build_filename (out, "b.gguf", NULL);
  g_autofree char *p2 = g_build_filename (out, "b-peft", NULL);
  g_autoptr (LpModel) base2 = lp_model_load (b2, NULL, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < lp_model_n_tensors (base2); i++)
    g_assert_null (lp_model_tensor_at (base2, i)->form);
  g_autoptr (LpModel) back2 = lp_model_apply_adapter (base2, p2, NULL, &error);
  g_assert_no_error (error);
  assert_same_adapters (m, back2);

  /* A bad adapter: exit 1, one line naming it. */
  g_autofree char *spec4 = tmp_path ("bad.ini");
  g_autofree char *text4 = g_strdup_printf ("[load]\npath=%s\nadapter=%s\n\n[save]\npath=never.gguf\n", bpath, bpath);
  lp_test_write_text (spec4, text4);
  g_clear_pointer (&e, g_free);
  st = lp_test_run_cli (NULL, &e, "run", spec4, "-o", out, "--no-cache", "-q", NULL);
  g_assert_cmpint (st, ==, 1);
  g_assert_cmpuint (lp_test_count_lines (e), ==, 1);
  g_assert_nonnull (strstr (e, "general.type"));
  g_autofree char *never = g_build_filename (out, "never.gguf", NULL);
  g_assert_false (g_file_test (never, G_FILE_TEST_EXISTS));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/adapter/gguf-roundtrip", test_gguf_roundtrip);
  g_test_add_func ("/adapter/peft-roundtrip", test_peft_roundtrip);
  g_test_add_func ("/adapter/merge-ppl", test_merge_ppl);
  g_test_add_func ("/adapter/gguf-python", test_gguf_python);
  g_test_add_func ("/adapter/peft-python", test_peft_python);
  g_test_add_func ("/adapter/gguf-from-python", test_gguf_from_python);
  g_test_add_func ("/adapter/bad", test_bad_adapters);
  g_test_add_func ("/adapter/pipeline", test_pipeline);
  return g_test_run ();
}
