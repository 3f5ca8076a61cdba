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

#include "lp-internal.h"

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

/* Tokenizer next to the checkpoint: tokenizer.bin, or tok<V>.bin. */
static char *
find_tokenizer (const char *path, gint64 n_vocab)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *tok_v = g_strdup_printf ("tok%" G_GINT64_FORMAT ".bin", n_vocab);
  const char *candidates[] = { "tokenizer.bin", tok_v };
  for (gsize i = 0; i < G_N_ELEMENTS (candidates); i++)
    {
      char *p = g_build_filename (dir, candidates[i], NULL);
      if (g_file_test (p, G_FILE_TEST_IS_REGULAR))
        return p;
      g_free (p);
    }
  return NULL;
}

char *
lp_llama2c_implicit_tokenizer (const char *path)
{
  /* Only vocab_size matters (tok<V>.bin); a file too short for a header
   * is no checkpoint. */
  gint32 h[7];
  FILE *f = fopen (path, "rb");
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
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  if (c.n_heads > 0 && c.dim % c.n_heads != 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: header: dim %" G_GINT64_FORMAT " is not a multiple of n_heads %" G_GINT64_FORMAT,
                    path, c.dim, c.n_heads);
      return NULL;
    }
  if (!lp_model_config_check (&c, path, error))
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
  /* The vocabulary goes beside the model as tokenizer.bin, and first: a
   * failure then never leaves a model without its vocabulary. */
  if (lp_meta_has (lp_model_meta (model), "tokenizer.ggml.tokens"))
    {
      g_autofree char *dir = g_path_get_dirname (path);
      g_autofree char *tok = g_build_filename (dir, "tokenizer.bin", NULL);
      if (!lp_tokenizer_write_llama2c (lp_model_meta (model), tok, error))
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
