/* llmpress fuzz targets — seeds made by the library's own writers from a
 * small synthetic model, so each fuzzer starts from a well-formed file of
 * its format (the corpus is written at run time, never committed). */
#include <glib/gstdio.h>
#include <llmpress/llmpress.h>
#include <string.h>

#include "fuzz.h"

LpModel *
lp_fuzz_tiny_model (void)
{
  LpSynthOptions o = LP_SYNTH_OPTIONS_INIT;
  o.dim = 16;
  o.ffn_dim = 32;
  o.n_layers = 1;
  o.n_heads = 2;
  o.n_kv_heads = 1;
  o.n_vocab = 260;
  o.ctx_len = 16;
  GError *error = NULL;
  LpModel *m = lp_model_synth (&o, &error);
  if (m == NULL)
    g_error ("lp_model_synth: %s", error->message);
  return m;
}

static gboolean
save (LpModel *model, const char *path, const char *format, GError **error)
{
  LpSaveOptions opts = LP_SAVE_OPTIONS_INIT;
  if (strcmp (format, "hf-sharded") == 0)
    return lp_hf_save_sharded (model, path, &opts, 4096, error);
  if (!lp_format_from_name (strcmp (format, "hf") == 0 ? "hf" : format, &opts.format))
    g_error ("unknown format %s", format);
  return lp_model_save (model, path, &opts, error);
}

const char *
lp_fuzz_model_dir (const char *format)
{
  static GHashTable *dirs;
  if (dirs == NULL)
    dirs = g_hash_table_new (g_str_hash, g_str_equal);
  const char *dir = g_hash_table_lookup (dirs, format);
  if (dir != NULL)
    return dir;
  char *d = g_build_filename (lp_fuzz_dir (), format, NULL);
  g_autoptr (LpModel) model = lp_fuzz_tiny_model ();
  GError *error = NULL;
  gboolean is_dir = strcmp (format, "llama2c") != 0;
  if (!is_dir)
    g_mkdir (d, 0700);
  g_autofree char *target = is_dir ? g_strdup (d) : g_build_filename (d, "tiny.bin", NULL);
  if (!save (model, target, format, &error))
    g_error ("%s: %s", target, error->message);
  g_hash_table_insert (dirs, (gpointer) format, d);
  return d;
}

static gboolean
copy_file (const char *from, const char *dir, const char *name, GError **error)
{
  g_autofree char *data = NULL;
  gsize len;
  if (!g_file_get_contents (from, &data, &len, error))
    return FALSE;
  g_autofree char *to = g_build_filename (dir, name, NULL);
  return g_file_set_contents (to, data, len, error);
}

static gboolean
write_text (const char *dir, const char *name, const char *text, GError **error)
{
  g_autofree char *to = g_build_filename (dir, name, NULL);
  return g_file_set_contents (to, text, -1, error);
}

/* A legacy imatrix.dat: two entries, then the trailing chunk count and
 * dataset name llama.cpp appends. */
static gboolean
write_legacy_imatrix (const char *dir, GError **error)
{
  GByteArray *b = g_byte_array_new ();
  gint32 n = 2;
  g_byte_array_append (b, (guint8 *) &n, 4);
  const char *names[2] = { "blk.0.attn_q.weight", "blk.0.ffn_down.weight" };
  for (int e = 0; e < 2; e++)
    {
      gint32 len = (gint32) strlen (names[e]), ncall = 3, nval = 4 + 4 * e;
      g_byte_array_append (b, (guint8 *) &len, 4);
      g_byte_array_append (b, (const guint8 *) names[e], len);
      g_byte_array_append (b, (guint8 *) &ncall, 4);
      g_byte_array_append (b, (guint8 *) &nval, 4);
      for (gint32 j = 0; j < nval; j++)
        {
          float v = 0.25f * (float) (j + 1);
          g_byte_array_append (b, (guint8 *) &v, 4);
        }
    }
  gint32 chunks = 10, dlen = 4;
  g_byte_array_append (b, (guint8 *) &chunks, 4);
  g_byte_array_append (b, (guint8 *) &dlen, 4);
  g_byte_array_append (b, (const guint8 *) "data", 4);
  g_autofree char *to = g_build_filename (dir, "legacy.dat", NULL);
  gboolean ok = g_file_set_contents (to, (const char *) b->data, b->len, error);
  g_byte_array_unref (b);
  return ok;
}

/* Our stats GGUF (llama.cpp's imatrix tensors and ours) for the tiny model's
 * shapes. */
static gboolean
write_stats (const char *dir, GError **error)
{
  g_autoptr (LpStats) stats = lp_stats_new ();
  LpActStats block[LP_LINEAR_IN_COUNT];
  double sq[32], ab[32];
  float h[32 * 32];
  for (int j = 0; j < 32; j++)
    sq[j] = ab[j] = 0.5 + j;
  for (int j = 0; j < 32 * 32; j++)
    h[j] = (j % 33) == 0 ? 2.0f : 0.1f;
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      int n = w == LP_LINEAR_IN_DOWN ? 32 : 16;
      block[w] = (LpActStats) { .layer = 0, .which = w, .n = n, .n_tokens = 7, .sum_sq = sq, .sum_abs = ab,
                                   .hessian = w == LP_LINEAR_IN_QKV ? h : NULL };
    }
  lp_stats_add_block (stats, block);
  g_autofree char *to = g_build_filename (dir, "stats.gguf", NULL);
  return lp_stats_save (stats, to, error);
}

/* Teacher logits of the tiny model's vocabulary: 2 windows of 5 tokens,
 * its top 4 of made-up logits, and a set with k = V (no rest: -inf). */
static gboolean
write_logits (LpModel *model, const char *dir, GError **error)
{
  gint64 V = lp_model_config (model)->n_vocab;
  g_autofree char *digest = lp_model_vocab_digest (model);
  g_autofree float *logits = g_new (float, 5 * V);
  for (gint64 e = 0; e < 5 * V; e++)
    logits[e] = (float) ((e * 7919) % 101) / 10.0f;
  const gint32 tokens[5] = { 1, 40, 41, 259, 3 };
  const int ks[2] = { 4, (int) V };
  for (int c = 0; c < 2; c++)
    {
      g_autoptr (LpLogits) lg = lp_logits_new (2, 5, ks[c], V, 1.5, digest, error);
      if (lg == NULL || !lp_logits_set_window (lg, 0, tokens, logits, error)
          || !lp_logits_set_window (lg, 1, tokens, logits, error))
        return FALSE;
      g_autofree char *name = g_strdup_printf ("top%d.gguf", ks[c]);
      g_autofree char *to = g_build_filename (dir, name, NULL);
      if (!lp_logits_save (lg, to, error))
        return FALSE;
    }
  return TRUE;
}

/* Specs in the tree (specs/ and the tests' examples come from the seeds
 * folder; these reach every pass family). */
static const char *const inline_seeds[] = {
  "load path=${model} ! save path=out.gguf",
  "load path=m.gguf ! prune.magnitude sparsity=0.5 ! quantize.rtn format=q4_0 ! save path=o.gguf",
  "load path=m.gguf ! calibrate hessians=true ! s:save_stats path=s.gguf",
  "t:load path=a.gguf ! prune.wanda sparsity=0.5 pattern=2:4 ! eval data=${data} ctx=${ctx}",
  "load path=m.gguf ! quantize.gptq format=int bits=4 group_size=32 ! save path=o quant_format=compressed-tensors",
  "load path=m.gguf ! prune.layers n=1 ! prune.channels ffn_ratio=0.25 ! quantize.awq format=q4_k ! save path=x.gguf",
};

gboolean
lp_fuzz_make_seeds (const char *target, const char *dir, GError **error)
{
  if (g_mkdir_with_parents (dir, 0700) != 0)
    {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: cannot create the seed directory", dir);
      return FALSE;
    }
  g_autoptr (LpModel) model = lp_fuzz_tiny_model ();
  LpMeta *meta = lp_model_meta (model);
  if (strcmp (target, "gguf") == 0)
    {
      g_autofree char *p = g_build_filename (dir, "tiny.gguf", NULL);
      return save (model, p, "gguf", error);
    }
  if (strcmp (target, "safetensors") == 0 || strcmp (target, "hf-config") == 0)
    {
      const char *hf = lp_fuzz_model_dir ("hf");
      g_autofree char *st = g_build_filename (hf, "model.safetensors", NULL);
      g_autofree char *cfg = g_build_filename (hf, "config.json", NULL);
      return strcmp (target, "safetensors") == 0 ? copy_file (st, dir, "tiny.safetensors", error)
                                                 : copy_file (cfg, dir, "config.json", error);
    }
  if (strcmp (target, "hf-index") == 0)
    {
      g_autofree char *idx = g_build_filename (lp_fuzz_model_dir ("hf-sharded"), "model.safetensors.index.json", NULL);
      return copy_file (idx, dir, "model.safetensors.index.json", error);
    }
  if (strcmp (target, "tokenizer-json") == 0)
    {
      g_autofree char *sub = g_build_filename (lp_fuzz_dir (), "tokjson", NULL);
      g_mkdir (sub, 0700);
      g_autofree char *p = g_build_filename (sub, "tokenizer.json", NULL);
      return lp_tokenizer_write_hf (meta, sub, error) && copy_file (p, dir, "tokenizer.json", error);
    }
  if (strcmp (target, "tokenizer-model") == 0)
    {
      g_autofree char *p = g_build_filename (dir, "tokenizer.model", NULL);
      return lp_tokenizer_write_spm (meta, p, error);
    }
  if (strcmp (target, "tokenizer-bin") == 0)
    {
      g_autofree char *p = g_build_filename (dir, "tokenizer.bin", NULL);
      return lp_tokenizer_write_llama2c (meta, p, error);
    }
  if (strcmp (target, "llama2c") == 0)
    {
      g_autofree char *p = g_build_filename (lp_fuzz_model_dir ("llama2c"), "tiny.bin", NULL);
      return copy_file (p, dir, "tiny.bin", error);
    }
  if (strcmp (target, "imatrix") == 0)
    return write_legacy_imatrix (dir, error) && write_stats (dir, error);
  if (strcmp (target, "logits") == 0)
    return write_logits (model, dir, error);
  if (strcmp (target, "spec-ini") == 0)
    {
      const char *specs = g_getenv ("LLMPRESS_SPECS_DIR");
      g_autoptr (GDir) d = specs ? g_dir_open (specs, 0, NULL) : NULL;
      const char *name;
      while (d && (name = g_dir_read_name (d)) != NULL)
        if (g_str_has_suffix (name, ".ini"))
          {
            g_autofree char *p = g_build_filename (specs, name, NULL);
            if (!copy_file (p, dir, name, error))
              return FALSE;
          }
      return TRUE;
    }
  if (strcmp (target, "spec-inline") == 0)
    {
      for (gsize i = 0; i < G_N_ELEMENTS (inline_seeds); i++)
        {
          g_autofree char *name = g_strdup_printf ("inline-%" G_GSIZE_FORMAT, i);
          if (!write_text (dir, name, inline_seeds[i], error))
            return FALSE;
        }
      return TRUE;
    }
  g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT, "unknown fuzz target %s", target);
  return FALSE;
}
