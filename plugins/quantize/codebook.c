/* llmpress quantize plugin — quantize.codebook: weight sharing through a
 * codebook of non-uniform levels.
 *
 * format=kmeans (the default): each group of `group` inputs of a row (0: the
 * whole row, as SqueezeLLM) gets its own 2^bits levels, learned by weighted
 * k-means on the original weights, each input weighted by the Hessian
 * diagonal (lp_kmeans_1d); the weights become codes into them, held in the
 * codebook form (model/form_codebook.c: f16 levels and packed codes, saved
 * as extra tensors in our GGUF and read back).  With gptq=true the codes are
 * chosen in GPTQ's column sweep (q_gptq_prepare, lp_obs_sweep) against the
 * fixed levels, each column's error spread over the later ones.
 *
 * format=iq4_nl: llama.cpp's IQ4_NL, a fixed 16-level codebook
 * (lp_iq4nl_levels, denser near zero) under one f16 scale per block of 32
 * inputs, 4.5 bits per weight like Q4_0, which llama.cpp runs as it is.
 * Each block's scale is searched as ggml's quantize_iq4_nl searches it, the
 * error weighted by the calibration Hessian's diagonal (H = X^T X: the
 * output error a weight's change causes, up to the cross terms) in place of
 * llama.cpp's imatrix.  With gptq=true the codes are then chosen column by
 * column with GPTQ's error feedback (gptq.c's sweep through the grid view,
 * quant.h); with gptq=false each value is rounded to its nearest level.
 *
 * Per weight W[R, C] with its input Hessian H[C, C] (lp_layerwise_run,
 * sequential: each layer calibrated on the layers already quantized).  Rows
 * whose length the block does not divide fall back to f16 as llama-quantize
 * does (reported), the same tensors as quantize.rtn format=q4_0 keeps. */
#include "config.h"

#include "quantize.h"

static const char *const codebook_formats[] = { "kmeans", "iq4_nl", NULL };
enum { FORMAT_KMEANS, FORMAT_IQ4_NL };

static const LpParamSpec codebook_params[] = {
  { .name = "format", .type = LP_PARAM_ENUM, .default_value = "kmeans", .choices = codebook_formats,
    .help = "the codebook: kmeans (2^bits f16 levels per group learned by Hessian-weighted k-means: our codebook "
    "form, which llama.cpp does not read) or iq4_nl (llama.cpp's IQ4_NL: 16 fixed non-uniform levels times a "
    "per-block scale, blocks of 32, 4.5 bits per weight)" },
  { .name = "bits", .type = LP_PARAM_INT, .default_value = "4", .min = 1, .max = 8,
    .help = "kmeans: bits per code (2^bits levels per group)", .flags = LP_PARAM_RANGE },
  { .name = "group", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 1 << 20,
    .help = "kmeans: inputs of a row sharing one codebook; 0 = the whole row (a tensor whose rows it does not "
    "divide gets one per row, reported)", .flags = LP_PARAM_RANGE },
  { .name = "iters", .type = LP_PARAM_INT, .default_value = "50", .min = 1, .max = 10000,
    .help = "kmeans: at most this many k-means rounds per group", .flags = LP_PARAM_RANGE },
  { .name = "gptq", .type = LP_PARAM_BOOL, .default_value = "true",
    .help = "choose the codes with GPTQ's error feedback across columns (else each value rounds to its nearest "
    "level); the levels (kmeans) or block scales (iq4_nl) are fitted against the Hessian diagonal either way" },
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "blk.*",
    .help = "tensors to quantize (2-D weights only: norms and other vectors stay as they are)" },
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "tensors left as they are" },
  { .name = "allow_requantize", .type = LP_PARAM_BOOL, .default_value = "false",
    .help = "quantize tensors that are already quantized (from their dequantized values; quality suffers)" },
  Q_GPTQ_PARAMS,
  { .name = NULL }
};

static const LpInputSpec codebook_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to quantize" },
  { .name = NULL }
};

typedef struct {
  LpPassContext *ctx;
  QOptions o;
  QGptqSettings s;
  gboolean gptq;
  gboolean kmeans;
  int bits, group, iters;
  double loss;                 /* GPTQ's OBS loss estimates, summed */
  QGptqFactor factor;          /* of the input below, shared by its weights */
  int factor_layer, factor_in;
} Codebook;

/* Nearest level in every block, the scales searched against diag(H). */
static LpTensor *
round_weight (Codebook *cb, const LpTensor *t, const float *H, int n, GError **error)
{
  g_autofree float *W = lp_tensor_dup_f32 (t, error);
  if (W == NULL || !q_check_input (&cb->o, t, W, error))
    return NULL;
  gboolean odd;
  QGrid grid = q_grid_for (&cb->o, t->name, n, &odd);
  q_log_grid (cb->ctx, t, &grid, odd);
  g_autofree float *imp = g_new (float, n);
  for (int j = 0; j < n; j++)
    imp[j] = H[(gsize) j * n + j];
  gint64 lost = 0;
  LpTensor *out = q_round (lp_pass_context_get_backend (cb->ctx), &grid, t, W, imp, &lost, error);
  if (out != NULL)
    q_log_mask_lost (cb->ctx, t, &grid, lost);
  return out;
}

/* ---- learned codebooks ---- */

/* One tensor's codebooks while its codes are chosen. */
typedef struct {
  int rows, cols, group, k;
  const int *perm;   /* sweep position -> column, or NULL */
  float *levels;     /* [R, G, k] ascending */
  guint8 *codes;     /* [R, C] */
} Learned;

/* Column perm[s] (or s) of rows [r0, r1): the nearest level of its group. */
static gboolean
learned_column (gpointer user_data, int s, int r0, int r1, const float *W, int ldw, float *out, GError **error)
{
  Learned *l = user_data;
  int c = l->perm ? l->perm[s] : s, g = c / l->group, G = l->cols / l->group;
  for (int r = r0; r < r1; r++)
    {
      const float *lv = l->levels + ((gsize) r * G + g) * l->k;
      int code = lp_levels_nearest (lv, l->k, W[(gsize) r * ldw + s]);
      l->codes[(gsize) r * l->cols + c] = (guint8) code;
      out[r - r0] = lv[code];
    }
  return TRUE;
}

/* W[R, C] (original order) onto learned levels: each group's fitted from W
 * weighted by diag(H), then codes by GPTQ's sweep or by nearest level. */
static LpTensor *
learned_weight (Codebook *cb, const LpTensor *t, const float *H, int n, GError **error)
{
  g_autofree float *W = lp_tensor_dup_f32 (t, error);
  if (W == NULL || !q_check_input (&cb->o, t, W, error))
    return NULL;
  int rows = (int) lp_tensor_n_rows (t);
  Learned l = { rows, n, cb->group > 0 && n % cb->group == 0 ? cb->group : n, 1 << cb->bits };
  if (cb->group > 0 && l.group != cb->group)
    lp_pass_context_log (cb->ctx, LP_LOG_INFO, "%s: rows of %d values are not a multiple of group=%d: one codebook "
                         "per row", t->name, n, cb->group);
  LpBackend *be = lp_pass_context_get_backend (cb->ctx);
  if (cb->gptq && !q_gptq_prepare (be, &cb->s, rows, n, W, H, &cb->factor, error))
    return NULL;
  int G = n / l.group;
  g_autofree float *imp = g_new (float, n);
  for (int j = 0; j < n; j++)
    imp[j] = H[(gsize) j * n + j];
  l.levels = g_new (float, (gsize) rows * G * l.k);
  l.codes = g_new (guint8, (gsize) rows * n);
  g_autofree float *levels_owned = l.levels;
  g_autofree guint8 *codes_owned = l.codes;
  for (int r = 0; r < rows; r++)
    for (int g = 0; g < G; g++)
      lp_kmeans_1d (W + (gsize) r * n + g * l.group, imp + g * l.group, l.group, l.k, cb->iters,
                    l.levels + ((gsize) r * G + g) * l.k);
  LpObsSweep sweep = { NULL, learned_column, &l };
  if (cb->gptq)
    {
      /* act-order: the sweep runs over W's columns in f's order */
      g_autofree float *Ws = NULL;
      l.perm = cb->factor.perm;
      if (l.perm)
        {
          Ws = g_new (float, (gsize) rows * n);
          for (int r = 0; r < rows; r++)
            for (int s = 0; s < n; s++)
              Ws[(gsize) r * n + s] = W[(gsize) r * n + l.perm[s]];
        }
      double loss = 0;
      if (!lp_obs_sweep (be, rows, n, Ws ? Ws : W, n, cb->factor.U, cb->s.block_size, &sweep, &loss, error))
        return NULL;
      cb->loss += loss;
    }
  else
    {
      g_autofree float *col = g_new (float, rows);
      for (int c = 0; c < n; c++)
        learned_column (&l, c, 0, rows, W, n, col, NULL);
    }
  g_autofree guint16 *half = g_new (guint16, (gsize) rows * G * l.k);
  for (gsize i = 0; i < (gsize) rows * G * l.k; i++)
    half[i] = lp_f32_to_f16 (l.levels[i]);
  return lp_tensor_new_codebook (t->name, rows, n, cb->bits, l.group, l.codes, half, error);
}

static gboolean
on_weight (gpointer user_data, LpTensor *weight, const LpActStats *stats, LpTensor **replacement, GError **error)
{
  Codebook *cb = user_data;
  if (!q_gptq_factor_follow (&cb->factor, &cb->factor_layer, &cb->factor_in, stats, error))
    return FALSE;
  if (stats->n != lp_tensor_row_length (weight))
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: Hessian of %d inputs, expected %" G_GINT64_FORMAT, weight->name,
                    stats->n, lp_tensor_row_length (weight));
      return FALSE;
    }
  if (cb->kmeans)
    {
      *replacement = learned_weight (cb, weight, stats->hessian, stats->n, error);
      return *replacement != NULL;
    }
  if (!cb->gptq)
    {
      *replacement = round_weight (cb, weight, stats->hessian, stats->n, error);
      return *replacement != NULL;
    }
  *replacement = q_gptq_weight (cb->ctx, &cb->o, &cb->s, weight, stats->hessian, stats->n, &cb->factor, &cb->loss,
                                error);
  return *replacement != NULL;
}

static gboolean
codebook_run (LpPassContext *ctx, GError **error)
{
  Codebook cb = { ctx, .factor_layer = -1 };
  cb.o.format = LP_DTYPE_IQ4_NL;
  cb.o.allow_requantize = lp_pass_context_get_bool (ctx, "allow_requantize");
  cb.o.targets = lp_pass_context_get_tensors (ctx, "targets");
  cb.o.ignore = lp_pass_context_get_tensors (ctx, "ignore");
  cb.gptq = lp_pass_context_get_bool (ctx, "gptq");
  cb.kmeans = lp_pass_context_get_enum (ctx, "format") == FORMAT_KMEANS;
  cb.bits = (int) lp_pass_context_get_int (ctx, "bits");
  cb.group = (int) lp_pass_context_get_int (ctx, "group");
  cb.iters = (int) lp_pass_context_get_int (ctx, "iters");
  static const char *const kmeans_only[] = { "bits", "group", "iters" };
  for (guint i = 0; !cb.kmeans && i < G_N_ELEMENTS (kmeans_only); i++)
    if (lp_pass_context_param_is_set (ctx, kmeans_only[i]))
      {
        lp_set_error (error, LP_ERROR_INVALID, "%s: only applies to format=kmeans; format=iq4_nl fixes its own "
                      "codebook (expected no %s, found one)", kmeans_only[i], kmeans_only[i]);
        return FALSE;
      }
  q_gptq_settings_read (ctx, &cb.s);
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  if (!q_check_model (&cb.o, in, error))
    return FALSE;
  g_autoptr (LpModel) work = lp_model_derive (in);
  gboolean ok = lp_layerwise_run (ctx, work, LP_CALIB_HESSIAN, cb.o.targets, cb.o.ignore, on_weight, &cb, error);
  q_gptq_factor_clear (&cb.factor);
  if (!ok)
    return FALSE;
  if (cb.gptq)
    lp_pass_context_log (ctx, LP_LOG_INFO, "OBS loss %.6g over all weights", cb.loss);
  lp_pass_context_log (ctx, LP_LOG_INFO, "%s codebooks, %.3f bits per weight",
                       cb.kmeans ? "k-means" : lp_dtype_name (cb.o.format), lp_model_bits_per_weight (work));
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}

const LpPassInfo q_codebook_pass = {
  .name = "quantize.codebook",
  .summary = "weight sharing: non-uniform codebooks learned per group by Hessian-weighted k-means, or llama.cpp's "
             "IQ4_NL with block scales searched against the Hessian diagonal; codes with GPTQ's error feedback",
  .params = codebook_params,
  .inputs = codebook_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = codebook_run,
};
