/* llmpress — Karpathy's llama2.c checkpoints (run.c's format).
 *
 * Header: 7 int32 — dim D, hidden_dim F, n_layers L, n_heads H, n_kv_heads Hkv,
 * vocab_size V (negative: the classifier is NOT shared with the embedding),
 * seq_len.  Then fp32 arrays, layer-major where noted:
 *   token_embedding_table [V][D]
 *   rms_att_weight [L][D]
 *   wq [L][H*hd][D]   wk [L][Hkv*hd][D]   wv [L][Hkv*hd][D]   wo [L][D][H*hd]
 *   rms_ffn_weight [L][D]
 *   w1 [L][F][D] (gate)   w2 [L][D][F] (down)   w3 [L][F][D] (up)
 *   rms_final_weight [D]
 *   freq_cis_real [seq_len][hd/2]   freq_cis_imag [seq_len][hd/2]  (unused: RoPE is recomputed)
 *   wcls [V][D] when V < 0
 * Q/K rows are in Meta's interleaved RoPE order, which is our canonical order. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#include "lp-internal.h"
#include "formats-internal.h"
#include "tokenizer-internal.h"

/* The arrays in file order: GGUF suffix, per-layer, shape selector. */
typedef enum { A_EMB, A_D, A_Q, A_KV, A_O, A_UP, A_DOWN, A_FREQ, A_CLS } ArrayShape;

typedef struct {
  const char *name; /* "blk.%d." prefix added when per_layer */
  gboolean per_layer;
  ArrayShape shape;
} Llama2cArray;

static const Llama2cArray llama2c_arrays[] = {
  { "token_embd.weight", FALSE, A_EMB },
  { "attn_norm.weight", TRUE, A_D },
  { "attn_q.weight", TRUE, A_Q },
  { "attn_k.weight", TRUE, A_KV },
  { "attn_v.weight", TRUE, A_KV },
  { "attn_output.weight", TRUE, A_O },
  { "ffn_norm.weight", TRUE, A_D },
  { "ffn_gate.weight", TRUE, A_UP },
  { "ffn_down.weight", TRUE, A_DOWN },
  { "ffn_up.weight", TRUE, A_UP },
  { "output_norm.weight", FALSE, A_D },
  { NULL, FALSE, A_FREQ }, /* freq_cis_real */
  { NULL, FALSE, A_FREQ }, /* freq_cis_imag */
  { "output.weight", FALSE, A_CLS },
};

static int
array_shape (const LpModelConfig *c, ArrayShape s, gint64 shape[2])
{
  gint64 q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
  switch (s)
    {
    case A_EMB: case A_CLS: shape[0] = c->n_vocab; shape[1] = c->dim; return 2;
    case A_D: shape[0] = c->dim; return 1;
    case A_Q: shape[0] = q; shape[1] = c->dim; return 2;
    case A_KV: shape[0] = kv; shape[1] = c->dim; return 2;
    case A_O: shape[0] = c->dim; shape[1] = q; return 2;
    case A_UP: shape[0] = c->ffn_dim; shape[1] = c->dim; return 2;
    case A_DOWN: shape[0] = c->dim; shape[1] = c->ffn_dim; return 2;
    case A_FREQ: shape[0] = c->ctx_len; shape[1] = c->head_dim / 2; return 2;
    }
  g_assert_not_reached ();
}

/* The tokenizer files a llama2.c checkpoint at `path` would pick up, most
 * preferred first: "<stem>.tokenizer.bin", "tokenizer.bin", "tok<V>.bin". */
static GPtrArray *
tokenizer_candidates (const char *path, gint64 n_vocab)
{
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *base = g_path_get_basename (path);
  if (g_str_has_suffix (base, ".bin"))
    base[strlen (base) - 4] = '\0';
  g_autofree char *own = g_strdup_printf ("%s.tokenizer.bin", base);
  g_autofree char *tok_v = g_strdup_printf ("tok%" G_GINT64_FORMAT ".bin", n_vocab);
  g_ptr_array_add (out, g_build_filename (dir, own, NULL));
  g_ptr_array_add (out, g_build_filename (dir, "tokenizer.bin", NULL));
  g_ptr_array_add (out, g_build_filename (dir, tok_v, NULL));
  return out;
}

/* Tokenizer next to the checkpoint: <stem>.tokenizer.bin (written when a
 * tokenizer.bin of another model was already there), tokenizer.bin, or
 * tok<V>.bin. */
static char *
find_tokenizer (const char *path, gint64 n_vocab)
{
  g_autoptr (GPtrArray) cands = tokenizer_candidates (path, n_vocab);
  for (guint i = 0; i < cands->len; i++)
    if (g_file_test (cands->pdata[i], G_FILE_TEST_IS_REGULAR))
      return g_strdup (cands->pdata[i]);
  return NULL;
}

/* Where the vocabulary of a checkpoint written at `path` goes: tokenizer.bin
 * when there is none or it holds these very bytes (then it is left alone:
 * *skip), else <stem>.tokenizer.bin, which the loader looks for first, so a
 * tokenizer.bin that other checkpoints in the folder use is never replaced. */
static char *
tokenizer_destination (const char *path, GBytes *bytes, gboolean *skip)
{
  g_autoptr (GPtrArray) cands = tokenizer_candidates (path, 0);
  const char *own = cands->pdata[0], *shared = cands->pdata[1];
  *skip = FALSE;
  GStatBuf st;
  if (g_lstat (shared, &st) != 0)
    return g_strdup (shared);
  g_autofree char *have = NULL;
  gsize n = 0;
  if (g_file_test (shared, G_FILE_TEST_IS_REGULAR) && g_file_get_contents (shared, &have, &n, NULL)
      && n == g_bytes_get_size (bytes) && memcmp (have, g_bytes_get_data (bytes, NULL), n) == 0)
    {
      *skip = TRUE;
      return g_strdup (shared);
    }
  lp_warn ("%s holds another vocabulary; writing this model's as %s (read first by llama2.c loading in llmpress)",
           shared, own);
  return g_strdup (own);
}

char *
lp_llama2c_implicit_tokenizer (const char *path)
{
  /* Only vocab_size matters (tok<V>.bin); a file too short for a header
   * is no checkpoint. */
  gint32 h[7];
  /* Only a regular file is opened: a FIFO would block here. */
  FILE *f = g_file_test (path, G_FILE_TEST_IS_REGULAR) ? fopen (path, "rb") : NULL;
  if (f == NULL)
    return NULL;
  gboolean ok = fread (h, sizeof h, 1, f) == 1;
  fclose (f);
  if (!ok || h[5] == 0 || h[5] == G_MININT32)
    return NULL;
  return find_tokenizer (path, h[5] < 0 ? -(gint64) h[5] : h[5]);
}

LpModel *
lp_llama2c_load (const char *path, const char *tokenizer_path, GError **error)
{
  g_autoptr (GMappedFile) mf = lp_map_file (path, error);
  if (mf == NULL)
    return NULL;
  g_autoptr (GBytes) all = g_mapped_file_get_bytes (mf);
  LpByteReader r;
  lp_byte_reader_init (&r, path, g_bytes_get_data (all, NULL), g_bytes_get_size (all));

  static const char *const fields[7] = { "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                         "vocab_size", "seq_len" };
  gint32 h[7];
  for (int i = 0; i < 7; i++)
    {
      g_autofree char *what = g_strdup_printf ("int32 header field %s", fields[i]);
      if (!lp_byte_reader_i32 (&r, &h[i], what, error))
        return NULL;
    }
  LpModelConfig c;
  lp_model_config_init (&c, LP_ARCH_LLAMA);
  c.dim = h[0];
  c.ffn_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.n_vocab = h[5] < 0 ? -(gint64) h[5] : h[5];
  c.ctx_len = h[6];
  c.tied_embeddings = h[5] > 0;
  const char *keys[LP_CONFIG_N_KEYS] = {
    [LP_CONFIG_DIM] = "header dim", [LP_CONFIG_FFN] = "header hidden_dim", [LP_CONFIG_LAYERS] = "header n_layers",
    [LP_CONFIG_HEADS] = "header n_heads", [LP_CONFIG_KV_HEADS] = "header n_kv_heads",
    [LP_CONFIG_VOCAB] = "header vocab_size", [LP_CONFIG_CTX] = "header seq_len",
  };
  if (!lp_model_config_derive_head_dim (&c, path, keys, error) || !lp_model_config_check_keys (&c, path, keys, error))
    return NULL;

  g_autoptr (LpModel) model = lp_model_new (&c);
  for (gsize a = 0; a < G_N_ELEMENTS (llama2c_arrays); a++)
    {
      const Llama2cArray *arr = &llama2c_arrays[a];
      if (arr->shape == A_CLS && c.tied_embeddings)
        continue;
      gint64 shape[2];
      int nd = array_shape (&c, arr->shape, shape);
      gint64 reps = arr->per_layer ? c.n_layers : 1;
      for (gint64 l = 0; l < reps; l++)
        {
          g_autofree char *name = arr->name == NULL ? g_strdup ("freq_cis")
                                  : arr->per_layer ? g_strdup_printf ("blk.%" G_GINT64_FORMAT ".%s", l, arr->name)
                                                   : g_strdup (arr->name);
          guint64 bytes;
          if (!lp_tensor_shape_bytes (name, LP_DTYPE_F32, nd, shape, &bytes, error))
            return NULL;
          gsize off = r.off;
          g_autofree char *what = g_strdup_printf ("fp32 array %s", name);
          if (!lp_byte_reader_skip (&r, bytes, what, error))
            return NULL;
          if (arr->name == NULL)
            continue;
          g_autoptr (GBytes) slice = g_bytes_new_from_bytes (all, off, bytes);
          g_autoptr (LpTensor) t = lp_tensor_new_from_bytes (name, LP_DTYPE_F32, nd, shape, slice, error);
          if (t == NULL)
            return NULL;
          lp_model_set_tensor (model, t);
        }
    }
  if (r.off != r.size)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": expected end of file, found %" G_GSIZE_FORMAT " more bytes (header does not match the weights)",
                    path, r.off, r.size - r.off);
      return NULL;
    }

  LpMeta *meta = lp_model_meta (model);
  lp_meta_set_string (meta, "general.architecture", "llama");
  lp_meta_set_string (meta, "general.name", "llama");
  g_autofree char *tok = tokenizer_path ? g_strdup (tokenizer_path) : find_tokenizer (path, c.n_vocab);
  if (tok != NULL && !lp_tokenizer_read_llama2c (tok, c.n_vocab, meta, error))
    return NULL;
  lp_model_set_source (model, path, LP_FORMAT_LLAMA2C);
  lp_model_set_tokenizer_source (model, tok);
  return g_steal_pointer (&model);
}

gboolean
lp_llama2c_save (LpModel *model, const char *path, const LpSaveOptions *options, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  if (c->arch != LP_ARCH_LLAMA)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: llama2.c holds only the llama architecture, found %s",
                    path, lp_arch_info (c->arch)->name);
      return FALSE;
    }
  if (c->head_dim * c->n_heads != c->dim)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED,
                    "%s: llama2.c needs head_dim = dim / n_heads, found head_dim %" G_GINT64_FORMAT " with dim %" G_GINT64_FORMAT " and %" G_GINT64_FORMAT " heads",
                    path, c->head_dim, c->dim, c->n_heads);
      return FALSE;
    }
  if (options != NULL && options->dtype >= 0 && options->dtype != LP_DTYPE_F32)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: llama2.c checkpoints are fp32 only, asked for %s",
                    path, lp_dtype_name (options->dtype));
      return FALSE;
    }
  /* The vocabulary goes beside the model, and first: a failure then never
   * leaves a model without its vocabulary. */
  if (lp_meta_has (lp_model_meta (model), "tokenizer.ggml.tokens"))
    {
      g_autoptr (GBytes) bytes = lp_tokenizer_llama2c_bytes (lp_model_meta (model), path, error);
      if (bytes == NULL)
        return FALSE;
      gboolean skip;
      g_autofree char *tok = tokenizer_destination (path, bytes, &skip);
      gsize n;
      const void *data = g_bytes_get_data (bytes, &n);
      if (!skip && (!lp_model_check_output (model, tok, error) || !lp_tok_write_file (tok, data, n, NULL, 0, error)))
        return FALSE;
    }
  LpAtomicFile *af = lp_atomic_file_new (path, error);
  if (af == NULL)
    return FALSE;
  gint32 h[7] = { (gint32) c->dim, (gint32) c->ffn_dim, (gint32) c->n_layers, (gint32) c->n_heads,
                  (gint32) c->n_kv_heads, (gint32) (c->tied_embeddings ? c->n_vocab : -c->n_vocab),
                  (gint32) c->ctx_len };
  if (!lp_atomic_file_write (af, h, sizeof h, error))
    goto fail;
  for (gsize a = 0; a < G_N_ELEMENTS (llama2c_arrays); a++)
    {
      const Llama2cArray *arr = &llama2c_arrays[a];
      if (arr->shape == A_CLS && c->tied_embeddings)
        continue;
      if (arr->name == NULL)
        {
          /* freq_cis_real then _imag: cos/sin of pos * theta^(-2i/hd), as run.c's exporter wrote. */
          gboolean imag = llama2c_arrays[a - 1].name == NULL;
          gint64 half = c->head_dim / 2;
          g_autofree float *row = g_new (float, half);
          for (gint64 pos = 0; pos < c->ctx_len; pos++)
            {
              for (gint64 i = 0; i < half; i++)
                {
                  double freq = 1.0 / pow (c->rope_theta, (double) (2 * i) / c->head_dim);
                  row[i] = (float) (imag ? sin (pos * freq) : cos (pos * freq));
                }
              if (!lp_atomic_file_write (af, row, half * sizeof (float), error))
                goto fail;
            }
          continue;
        }
      gint64 reps = arr->per_layer ? c->n_layers : 1;
      for (gint64 l = 0; l < reps; l++)
        {
          g_autofree char *name = arr->per_layer ? g_strdup_printf ("blk.%" G_GINT64_FORMAT ".%s", l, arr->name)
                                                 : g_strdup (arr->name);
          LpTensor *t = lp_model_tensor (model, name);
          if (t == NULL)
            {
              lp_set_error (error, LP_ERROR_MISSING, "%s: tensor %s: needed by llama2.c, not in the model", path, name);
              goto fail;
            }
          g_autofree float *f = lp_tensor_dup_f32 (t, error);
          if (f == NULL || !lp_atomic_file_write (af, f, lp_tensor_n_elements (t) * sizeof (float), error))
            goto fail;
        }
    }
  return lp_atomic_file_commit (af, error);

fail:
  lp_atomic_file_abort (af);
  return FALSE;
}
