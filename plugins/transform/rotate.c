/* llmpress transform plugin — transform.rotate: QuaRot / SpinQuant's
 * rotations that fold into the weights, leaving the model the same function.
 *
 * Weights are [out, in] (y = x W^T for a row x).  Residual stream h [D]:
 *  1. Each RMSNorm's weight g goes into the linears that read its output,
 *     W ← W diag(g) (attn_norm → attn_q, attn_k, attn_v; ffn_norm →
 *     ffn_gate, ffn_up; output_norm → the head), and g ← 1.
 *  2. The residual stream becomes h Q for an orthogonal Q [D, D]: the
 *     embedding rows E ← E Q, every linear reading it W ← W Q (input side),
 *     every linear writing it (attn_output, ffn_down) W ← Q^T W (output
 *     side).  An RMSNorm without weight commutes with Q (||h Q|| = ||h||),
 *     so every layer sees what it saw before.
 *  3. Per layer, one orthogonal H [hd, hd] between attn_v and attn_output:
 *     each head's values v ← v H (attn_v's rows of each KV head
 *     Wv ← H^T Wv, a Q/K/V bias b ← b H), and attn_output's input columns
 *     of every query head Wo ← Wo blockdiag(H).  Attention mixes a head's
 *     value rows linearly, so its output is o H and Wo undoes it; one H for
 *     every head of a layer makes this exact whatever the GQA grouping.
 * The head is then E diag(g_out) Q while the embedding is E Q: a tied model
 * gets its own output.weight (untied, and logged) unless output_norm is all
 * ones.  Every weight written is
 * f32; norms, RoPE and the architecture are unchanged, so llama.cpp and
 * transformers run the result as it is.  The metadata records what was
 * done: llmpress.rotate.params, .residual and .heads (which matrices; every
 * layer's heads draw their own of the same construction). */
#include "config.h"

#include <string.h>

#include "transform.h"

static const LpInputSpec rotate_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to rotate (dense f32/f16/bf16 weights)" },
  { .name = NULL }
};

static const LpParamSpec rotate_params[] = {
  { .name = "kind", .type = LP_PARAM_ENUM, .default_value = "hadamard", .choices = rotation_kinds,
    .help = "hadamard: a randomized Hadamard matrix (Walsh-Hadamard, or Paley x Walsh-Hadamard for orders "
    "such as 12, 20, 36 x 2^k; random signs, normalised) where this order has one, else a random orthogonal "
    "one (the log says which); random: always the Q of a Gaussian matrix's QR (Haar-distributed)" },
  { .name = "seed", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = (double) G_MAXINT64,
    .help = "draws the signs and Gaussian matrices (left out: the node's own seed from the pipeline's)",
    .flags = LP_PARAM_HAS_MIN },
  { .name = "heads", .type = LP_PARAM_BOOL, .default_value = "true",
    .help = "also rotate each layer's attention heads between attn_v and attn_output (one head_dim x head_dim "
    "rotation per layer)" },
  { .name = "dequantize", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "accept ggml block-quantized weights (a Q4_1 GGUF) and rotate their dequantized values (written "
    "f32); integer-grid, masked, low-rank and adapter weights are always refused: rotate first" },
  { .name = NULL }
};

typedef struct {
  LpPassContext *ctx;
  LpBackend *be;
  LpModel *in, *work;
  const LpModelConfig *c;
  int D, hd;
  float *q, *qt;   /* [D, D] the residual rotation and its transpose */
  float *h;        /* [hd, hd] the current layer's head rotation (NULL: heads=false) */
  float *ht;       /* [hd, hd] its transpose */
} Rotate;

/* --- checks ---------------------------------------------------------------- */

/* Llama-family with RMSNorm: the architectures whose blocks are exactly the
 * tensors lp_arch_tensor_specs lists (norm, q/k/v(+bias), o, norm, gate,
 * up, down).  A new architecture must be looked at before it is added. */
static gboolean
check_arch (const LpModel *m, GError **error)
{
  const LpModelConfig *c = lp_model_config (m);
  switch (c->arch)
    {
    case LP_ARCH_LLAMA:
    case LP_ARCH_MISTRAL:
    case LP_ARCH_QWEN2:
      break;
    default:
      lp_set_error (error, LP_ERROR_INVALID, "%s: architecture %s: expected a Llama-family model with RMSNorm (%s)",
                    lp_model_source (m) ? lp_model_source (m) : "model", lp_arch_info (c->arch)->name,
                    lp_arch_known_names ());
      return FALSE;
    }
  /* A tensor we do not know might read or write the residual stream
   * (a q/k norm, a bias on the output side): rotating around it would
   * change the function, so it is refused rather than left alone. */
  g_autoptr (GPtrArray) specs = lp_arch_tensor_specs (c);
  g_autoptr (GHashTable) known = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < specs->len; i++)
    g_hash_table_add (known, ((LpTensorSpec *) specs->pdata[i])->name);
  g_hash_table_add (known, "rope_freqs.weight"); /* RoPE frequencies: not weights of the stream */
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const char *name = lp_model_tensor_at (m, i)->name;
      if (!g_hash_table_contains (known, name))
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "%s: unexpected tensor for a %s model: transform.rotate knows the Llama-family tensors "
                        "only (embedding, attn_norm, attn_q/k/v/output, ffn_norm, ffn_gate/up/down, output_norm, "
                        "output)",
                        name, lp_arch_info (c->arch)->name);
          return FALSE;
        }
    }
  return lp_model_validate (m, error);
}

/* Every tensor dense float (or block-quantized with dequantize=true). */
static gboolean
check_forms (const LpModel *m, gboolean dequantize, GError **error)
{
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const LpTensor *t = lp_model_tensor_at (m, i);
      const char *form = lp_form_name (lp_tensor_form (t));
      gboolean float_dense = strcmp (form, "dense") == 0
                             && (t->dtype == LP_DTYPE_F32 || t->dtype == LP_DTYPE_F16 || t->dtype == LP_DTYPE_BF16);
      if (float_dense || (dequantize && strcmp (form, "blocks") == 0))
        continue;
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: %s %s weight: expected dense f32/f16/bf16 (rotate before quantizing, pruning or "
                    "factorizing%s)",
                    t->name, lp_dtype_name (t->dtype), form,
                    strcmp (form, "blocks") == 0 ? "; dequantize=true rotates its dequantized values" : "");
      return FALSE;
    }
  return TRUE;
}

/* --- products --------------------------------------------------------------- */

static float *
transpose_new (const float *a, int n)
{
  float *t = g_new (float, (gsize) n * n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      t[(gsize) j * n + i] = a[(gsize) i * n + j];
  return t;
}

/* a [M, K] b [K, N] (row-major) as a new [M, N]. */
static float *
product_new (Rotate *r, const float *a, gint64 m, gint64 k, const float *b, gint64 n)
{
  float *c = g_new (float, (gsize) (m * n));
  lp_gemm (r->be, FALSE, (int) m, (int) n, (int) k, 1.0f, a, (int) k, b, (int) n, 0.0f, c, (int) n);
  return c;
}

/* w [N, K] ← w diag(g): the norm weight g [K] folded into the reader. */
static void
scale_columns (float *w, gint64 n, gint64 k, const float *g)
{
  for (gint64 i = 0; i < n; i++)
    for (gint64 j = 0; j < k; j++)
      w[i * k + j] *= g[j];
}

/* --- reading and writing tensors ------------------------------------------ */

static float *
read_f32 (Rotate *r, const char *name, GError **error)
{
  LpTensor *t = lp_model_tensor (r->in, name);
  g_assert (t != NULL); /* check_arch validated the model */
  float *v = lp_tensor_dup_f32 (t, error);
  if (v != NULL && !lp_values_check_finite (name, v, lp_tensor_n_elements (t), error))
    g_clear_pointer (&v, g_free);
  return v;
}

/* values (taken) as f32 tensor `name` of the work model, shaped like `like`. */
static gboolean
write_f32 (Rotate *r, const char *name, const char *like, float *values, GError **error)
{
  g_autofree float *v = values;
  const LpTensor *t = lp_model_tensor (r->in, like);
  g_autoptr (LpTensor) out = lp_tensor_new_f32 (name, t->n_dims, t->shape, v, error);
  if (out == NULL)
    return FALSE;
  lp_model_set_tensor (r->work, out);
  return TRUE;
}

/* Norm `name` [D] read into *g and replaced by ones. */
static gboolean
take_norm (Rotate *r, const char *name, float **g, GError **error)
{
  *g = read_f32 (r, name, error);
  if (*g == NULL)
    return FALSE;
  float *ones = g_new (float, r->D);
  for (int i = 0; i < r->D; i++)
    ones[i] = 1.0f;
  return write_f32 (r, name, name, ones, error);
}

/* A reader of the residual stream: W [N, D] ← W diag(g) Q (g NULL: no norm). */
static float *
rotate_reader (Rotate *r, const char *name, const float *g, GError **error)
{
  LpTensor *t = lp_model_tensor (r->in, name);
  g_autofree float *w = read_f32 (r, name, error);
  if (w == NULL)
    return NULL;
  gint64 n = lp_tensor_n_rows (t);
  if (g != NULL)
    scale_columns (w, n, r->D, g);
  return product_new (r, w, n, r->D, r->q, r->D);
}

/* --- the blocks ------------------------------------------------------------- */

static char *
layer_name (int l, const char *what)
{
  return g_strdup_printf ("blk.%d.%s", l, what);
}

/* attn_v [Hkv hd, D] (already rotated on its input): each KV head's rows
 * ← H^T rows; its bias (if any) b ← b H per head. */
static gboolean
rotate_values (Rotate *r, int l, float *wv, GError **error)
{
  gint64 n_kv = r->c->n_kv_heads, hd = r->hd;
  for (gint64 h = 0; h < n_kv; h++)
    {
      float *rows = wv + h * hd * r->D;
      g_autofree float *out = product_new (r, r->ht, hd, hd, rows, r->D);
      memcpy (rows, out, sizeof (float) * hd * r->D);
    }
  g_autofree char *bias = layer_name (l, "attn_v.bias");
  if (lp_model_tensor (r->in, bias) == NULL)
    return TRUE;
  g_autofree float *b = read_f32 (r, bias, error);
  if (b == NULL)
    return FALSE;
  /* [Hkv, hd] rows times H. */
  return write_f32 (r, bias, bias, product_new (r, b, n_kv, hd, r->h, hd), error);
}

static gboolean
rotate_attention (Rotate *r, int l, GError **error)
{
  g_autofree char *norm = layer_name (l, "attn_norm.weight");
  g_autofree float *g = NULL;
  if (!take_norm (r, norm, &g, error))
    return FALSE;
  static const char *const readers[] = { "attn_q.weight", "attn_k.weight", "attn_v.weight" };
  for (guint i = 0; i < G_N_ELEMENTS (readers); i++)
    {
      g_autofree char *name = layer_name (l, readers[i]);
      float *w = rotate_reader (r, name, g, error);
      if (w == NULL || (i == 2 && r->h != NULL && !rotate_values (r, l, w, error)))
        {
          g_free (w);
          return FALSE;
        }
      if (!write_f32 (r, name, name, w, error))
        return FALSE;
    }
  /* attn_output [D, H hd] ← Q^T Wo blockdiag(H): as [D H, hd] rows times H. */
  g_autofree char *name = layer_name (l, "attn_output.weight");
  g_autofree float *wo = read_f32 (r, name, error);
  if (wo == NULL)
    return FALSE;
  gint64 qdim = r->c->n_heads * r->hd;
  if (r->h != NULL)
    {
      float *heads = product_new (r, wo, r->D * r->c->n_heads, r->hd, r->h, r->hd);
      g_free (wo);
      wo = heads;
    }
  return write_f32 (r, name, name, product_new (r, r->qt, r->D, r->D, wo, qdim), error);
}

static gboolean
rotate_ffn (Rotate *r, int l, GError **error)
{
  g_autofree char *norm = layer_name (l, "ffn_norm.weight");
  g_autofree float *g = NULL;
  if (!take_norm (r, norm, &g, error))
    return FALSE;
  static const char *const readers[] = { "ffn_gate.weight", "ffn_up.weight" };
  for (guint i = 0; i < G_N_ELEMENTS (readers); i++)
    {
      g_autofree char *name = layer_name (l, readers[i]);
      float *w = rotate_reader (r, name, g, error);
      if (w == NULL || !write_f32 (r, name, name, w, error))
        return FALSE;
    }
  /* ffn_down [D, F] ← Q^T Wd. */
  g_autofree char *name = layer_name (l, "ffn_down.weight");
  g_autofree float *wd = read_f32 (r, name, error);
  return wd != NULL && write_f32 (r, name, name, product_new (r, r->qt, r->D, r->D, wd, r->c->ffn_dim), error);
}

/* Embedding E Q; head (the embedding when tied) diag(g_out) Q, as output.weight. */
static gboolean
rotate_ends (Rotate *r, GError **error)
{
  g_autofree float *g = NULL;
  if (!take_norm (r, "output_norm.weight", &g, error))
    return FALSE;
  float *e = rotate_reader (r, "token_embd.weight", NULL, error);
  if (e == NULL || !write_f32 (r, "token_embd.weight", "token_embd.weight", e, error))
    return FALSE;
  /* With output_norm all ones a tied head is still the embedding: it stays tied. */
  gboolean ones = TRUE;
  for (int i = 0; i < r->D; i++)
    ones = ones && g[i] == 1.0f;
  gboolean tied = r->c->tied_embeddings;
  if (tied && ones)
    return TRUE;
  const char *head = tied ? "token_embd.weight" : "output.weight";
  float *w = rotate_reader (r, head, g, error);
  if (w == NULL || !write_f32 (r, "output.weight", head, w, error))
    return FALSE;
  if (tied)
    {
      lp_model_config_mut (r->work)->tied_embeddings = FALSE;
      lp_pass_context_log (r->ctx, LP_LOG_INFO,
                           "untied: the head (output_norm folded in) differs from the embedding now; written as "
                           "output.weight [%" G_GINT64_FORMAT ", %d]",
                           r->c->n_vocab, r->D);
    }
  return TRUE;
}

/* --- the pass ---------------------------------------------------------------- */

/* Q [n, n] and its transpose; `key` (NULL after the first layer's heads)
 * names the metadata entry that records which matrix it is, and logs it. */
static gboolean
draw_rotation (Rotate *r, RotationKind kind, GRand *rng, int n, const char *key, float **q, float **qt,
               GError **error)
{
  g_autofree char *how = NULL;
  *q = rotation_new (kind, n, rng, &how, error);
  if (*q == NULL)
    return FALSE;
  *qt = transpose_new (*q, n);
  if (key != NULL)
    {
      g_autofree char *full = g_strdup_printf ("llmpress.rotate.%s", key);
      lp_meta_set_string (lp_model_meta (r->work), full, how);
      lp_pass_context_log (r->ctx, LP_LOG_INFO, "%s [%d, %d]: %s", key, n, n, how);
    }
  return TRUE;
}

static gboolean
rotate_model (Rotate *r, RotationKind kind, GRand *rng, gboolean heads, GError **error)
{
  if (!draw_rotation (r, kind, rng, r->D, "residual", &r->q, &r->qt, error))
    return FALSE;
  for (int l = 0; l < (int) r->c->n_layers; l++)
    {
      g_clear_pointer (&r->h, g_free);
      g_clear_pointer (&r->ht, g_free);
      if (heads && !draw_rotation (r, kind, rng, r->hd, l == 0 ? "heads" : NULL, &r->h, &r->ht,
                                   error))
        return FALSE;
      if (!rotate_attention (r, l, error) || !rotate_ffn (r, l, error))
        return FALSE;
      if (lp_pass_context_cancelled (r->ctx))
        {
          lp_set_error (error, LP_ERROR_FAILED, "%s: cancelled", lp_pass_context_node_name (r->ctx));
          return FALSE;
        }
      lp_pass_context_progress (r->ctx, (guint64) l + 1, (guint64) r->c->n_layers, "rotate");
    }
  return rotate_ends (r, error);
}

static gboolean
rotate_run (LpPassContext *ctx, GError **error)
{
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  gboolean heads = lp_pass_context_get_bool (ctx, "heads");
  if (!check_arch (in, error) || !check_forms (in, lp_pass_context_get_bool (ctx, "dequantize"), error))
    return FALSE;
  RotationKind kind = (RotationKind) lp_pass_context_get_enum (ctx, "kind");
  guint64 seed = lp_pass_context_param_is_set (ctx, "seed") ? (guint64) lp_pass_context_get_int (ctx, "seed")
                                                             : lp_pass_context_get_seed (ctx);
  guint32 words[2] = { (guint32) seed, (guint32) (seed >> 32) };
  GRand *rng = g_rand_new_with_seed_array (words, 2);
  g_autoptr (LpBackend) cpu = lp_pass_context_get_backend (ctx) ? NULL : lp_backend_new ("cpu", NULL);
  Rotate r = {
    .ctx = ctx, .be = cpu ? cpu : lp_pass_context_get_backend (ctx), .in = in, .work = lp_model_derive (in),
    .c = lp_model_config (in), .D = (int) lp_model_config (in)->dim, .hd = (int) lp_model_config (in)->head_dim,
  };
  gboolean ok = r.be != NULL && rotate_model (&r, kind, rng, heads, error);
  if (r.be == NULL)
    lp_set_error (error, LP_ERROR_FAILED, "no CPU backend");
  if (ok)
    {
      g_autofree char *desc = g_strdup_printf ("kind=%s seed=%" G_GUINT64_FORMAT " heads=%s", rotation_kinds[kind],
                                               seed, heads ? "true" : "false");
      lp_meta_set_string (lp_model_meta (r.work), "llmpress.rotate.params", desc);
      lp_pass_context_log (ctx, LP_LOG_INFO, "rotated (%s): norms folded, residual stream D=%d, heads hd=%d%s",
                           desc, r.D, r.hd, heads ? "" : " left alone");
      lp_pass_context_set_output_model (ctx, r.work);
    }
  g_rand_free (rng);
  g_free (r.q);
  g_free (r.qt);
  g_free (r.h);
  g_free (r.ht);
  lp_model_unref (r.work);
  return ok;
}

const LpPassInfo transform_rotate_pass = {
  .name = "transform.rotate",
  .summary = "rotate the residual stream (and each layer's attention heads) by orthogonal matrices folded into "
  "the weights, RMSNorm weights folded first: the same function, outliers spread (QuaRot / SpinQuant), so "
  "a quantizer after it does better",
  .params = rotate_params,
  .inputs = rotate_inputs,
  .output = LP_ARTIFACT_MODEL,
  .run = rotate_run,
};
