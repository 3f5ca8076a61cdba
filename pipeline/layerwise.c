/* llmpress — layer-wise compression driven by calibration (see layerwise.h). */
#include "config.h"

#include <stdio.h>

#include "lp-internal.h"
#include <llmpress/layerwise.h>

typedef struct {
  LpPassContext *ctx;
  LpModel *work;
  const LpTensorPattern *targets, *ignore;
  LpLayerwiseFunc func;
  gpointer user_data;
  guint64 done, total;
} Walk;

static gboolean
selected (const Walk *w, const char *name)
{
  return lp_tensor_pattern_match (w->targets, name) && !(w->ignore && lp_tensor_pattern_match (w->ignore, name));
}

/* The selected linear weights of block l that exist in the model, in
 * forward order (name strings owned by the array). */
static GPtrArray *
block_weights (const Walk *w, int l, LpLinearInput which)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  for (const char *const *c = lp_linear_input_consumers (which); *c; c++)
    {
      char *name = g_strdup_printf ("blk.%d.%s", l, *c);
      if (selected (w, name) && lp_model_tensor (w->work, name) != NULL)
        g_ptr_array_add (names, name);
      else
        g_free (name);
    }
  return names;
}

static gboolean
on_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  Walk *w = user_data;
  for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
    {
      g_autoptr (GPtrArray) names = block_weights (w, layer, (LpLinearInput) in);
      for (guint i = 0; i < names->len; i++)
        {
          LpTensor *t = lp_model_tensor (w->work, names->pdata[i]);
          LpTensor *rep = NULL;
          if (!w->func (w->user_data, t, &stats[in], &rep, error))
            {
              lp_error_prefix (error, names->pdata[i]);
              return FALSE;
            }
          if (rep)
            {
              lp_model_set_tensor (w->work, rep);
              lp_tensor_unref (rep);
            }
          lp_pass_context_progress (w->ctx, ++w->done, w->total, names->pdata[i]);
          if (lp_pass_context_cancelled (w->ctx))
            {
              lp_set_error (error, LP_ERROR_FAILED, "interrupted");
              return FALSE;
            }
        }
    }
  return TRUE;
}

gboolean
lp_layerwise_run (LpPassContext *ctx, LpModel *work, LpCalibWhat what, const LpTensorPattern *targets,
                  const LpTensorPattern *ignore, LpLayerwiseFunc func, gpointer user_data, GError **error)
{
  g_return_val_if_fail (ctx && work && targets && func, FALSE);
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  Walk w = { ctx, work, targets, ignore, func, user_data, 0, 0 };
  const LpModelConfig *c = lp_model_config (work);
  for (int l = 0; l < c->n_layers; l++)
    for (int in = 0; in < LP_LINEAR_IN_COUNT; in++)
      {
        g_autoptr (GPtrArray) names = block_weights (&w, l, (LpLinearInput) in);
        w.total += names->len;
      }
  if (w.total == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "targets: expected at least one linear weight of a block, found none matching '%s'",
                    lp_tensor_pattern_text (targets));
      return FALSE;
    }
  LpModel *original = lp_pass_context_get_input_model (ctx, "input");
  return lp_calibration_run (cal, original ? original : work, work, lp_pass_context_get_backend (ctx), what, on_block,
                             &w, error);
}
