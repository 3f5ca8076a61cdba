/* prune.layers: drop whole transformer blocks (ShortGPT, Men et al. 2024).
 * Block Influence of block l = mean over calibration tokens of
 * 1 - cos(x_l, x_{l+1}), its input and output residual streams, measured on
 * the unpruned model; the blocks of least influence go, the rest are
 * renumbered, the config's layer count follows. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "prune-common.h"
#include "prune-passes.h"
#include "structure.h"

/* 1 - cos(a, b) summed over T rows of D. */
static double
sum_one_minus_cos (const float *a, const float *b, int T, int D)
{
  double s = 0;
  for (int t = 0; t < T; t++)
    {
      double ab = 0, aa = 0, bb = 0;
      for (int d = 0; d < D; d++)
        {
          double x = a[(gsize) t * D + d], y = b[(gsize) t * D + d];
          ab += x * y, aa += x * x, bb += y * y;
        }
      s += aa > 0 && bb > 0 ? 1.0 - ab / sqrt (aa * bb) : 0.0;
    }
  return s;
}

static gboolean
block_influence (LpPassContext *ctx, LpModel *model, double *bi, GError **error)
{
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  g_autoptr (LpForward) fw = lp_forward_new (model, lp_pass_context_get_backend (ctx), error);
  if (fw == NULL)
    return FALSE;
  lp_forward_set_device_memory (fw, lp_pass_context_get_device_memory (ctx));
  const LpModelConfig *c = lp_model_config (model);
  int L = lp_calibration_seq_len (cal), D = (int) c->dim, N = lp_calibration_n_samples (cal);
  g_autofree float *x = g_new (float, (gsize) L * D), *prev = g_new (float, (gsize) L * D);
  memset (bi, 0, sizeof (double) * c->n_layers);
  for (int i = 0; i < N; i++)
    {
      if (!lp_forward_embed (fw, lp_calibration_sample (cal, i), L, x, error))
        return FALSE;
      for (int l = 0; l < c->n_layers; l++)
        {
          memcpy (prev, x, sizeof (float) * L * D);
          if (!lp_forward_block (fw, l, x, L, NULL, NULL, error))
            return FALSE;
          bi[l] += sum_one_minus_cos (prev, x, L, D);
        }
      lp_pass_context_progress (ctx, i + 1, N, "samples");
      if (prune_check_cancelled (ctx, error))
        return FALSE;
    }
  for (int l = 0; l < c->n_layers; l++)
    bi[l] /= (double) N * L;
  return TRUE;
}

/* How many blocks go: round(ratio * layers) when ratio= is given, else n
 * (default 1); never all of them. */
static gboolean
layers_to_remove (LpPassContext *ctx, gint64 n_layers, int *out, GError **error)
{
  gint64 n = lp_pass_context_get_int (ctx, "n");
  double ratio = lp_pass_context_get_float (ctx, "ratio");
  gboolean has_n = lp_pass_context_param_is_set (ctx, "n"), has_ratio = lp_pass_context_param_is_set (ctx, "ratio");
  if (has_n && has_ratio)
    {
      lp_set_error (error, LP_ERROR_INVALID, "expected one of n= or ratio=, found both");
      return FALSE;
    }
  if (has_ratio)
    n = llround (ratio * (double) n_layers);
  if (n < 1 || n >= n_layers)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s removes %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " blocks: expected at least 1 "
                    "and at most %" G_GINT64_FORMAT " (a model keeps one block)", has_ratio ? "ratio" : "n", n, n_layers,
                    n_layers - 1);
      return FALSE;
    }
  *out = (int) n;
  return TRUE;
}

/* Rename "blk.<old>.rest" to "blk.<new>.rest", and its metadata key. */
static LpTensor *
renumber (LpTensor *t, int new_layer, LpMeta *meta)
{
  const char *rest = strchr (t->name + 4, '.');
  g_autofree char *name = g_strdup_printf ("blk.%d%s", new_layer, rest);
  g_autofree char *old_key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
  const LpValue *v = lp_meta_get (meta, old_key);
  if (v != NULL)
    {
      g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", name);
      lp_meta_set (meta, key, lp_value_copy (v));
      lp_meta_remove (meta, old_key);
    }
  return lp_tensor_rename (t, name);
}

static void
drop_blocks (LpModel *input, LpModel *work, const guint8 *keep, int n_layers)
{
  int *new_index = g_new (int, n_layers);
  for (int l = 0, k = 0; l < n_layers; l++)
    new_index[l] = keep[l] ? k++ : -1;
  LpMeta *meta = lp_model_meta (work);
  /* Remove every block tensor first (and their metadata), then put the kept
   * ones back under their new numbers in the input's order. */
  for (guint i = 0; i < lp_model_n_tensors (input); i++)
    {
      LpTensor *t = lp_model_tensor_at (input, i);
      if (prune_tensor_layer (t->name) >= 0)
        lp_model_remove_tensor (work, t->name);
    }
  g_autoptr (GPtrArray) renamed = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  for (guint i = 0; i < lp_model_n_tensors (input); i++)
    {
      LpTensor *t = lp_model_tensor_at (input, i);
      int l = prune_tensor_layer (t->name);
      if (l >= 0 && l < n_layers && new_index[l] >= 0)
        g_ptr_array_add (renamed, renumber (t, new_index[l], meta));
      else if (l >= 0)
        {
          g_autofree char *key = g_strdup_printf ("llmpress.sparsity.tensor.%s", t->name);
          if (l < n_layers) /* a removed block's metadata key */
            lp_meta_remove (meta, key);
        }
    }
  for (guint i = 0; i < renamed->len; i++)
    lp_model_set_tensor (work, renamed->pdata[i]);
  g_free (new_index);
}

gboolean
prune_layers_run (LpPassContext *ctx, GError **error)
{
  LpModel *input = lp_pass_context_get_input_model (ctx, "input");
  int n_layers = (int) lp_model_config (input)->n_layers, n_remove;
  if (!layers_to_remove (ctx, n_layers, &n_remove, error))
    return FALSE;
  g_autofree double *bi = g_new (double, n_layers);
  if (!block_influence (ctx, input, bi, error))
    return FALSE;
  g_autofree guint8 *keep = g_new (guint8, n_layers);
  prune_keep_highest (bi, n_layers, n_layers - n_remove, keep);
  g_autoptr (GArray) removed = g_array_new (FALSE, FALSE, sizeof (gint32));
  for (int l = 0; l < n_layers; l++)
    {
      lp_pass_context_log (ctx, LP_LOG_INFO, "block %d: influence %.6f%s", l, bi[l], keep[l] ? "" : " (removed)");
      if (!keep[l])
        {
          gint32 v = l;
          g_array_append_val (removed, v);
        }
    }
  g_autoptr (LpModel) work = lp_model_derive (input);
  lp_model_config_mut (work)->n_layers = n_layers - n_remove;
  drop_blocks (input, work, keep, n_layers);
  lp_meta_set_array (lp_model_meta (work), "llmpress.prune.removed_layers", LP_VALUE_I32, removed->len, removed->data);
  if (!lp_model_validate (work, error))
    return FALSE;
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}
