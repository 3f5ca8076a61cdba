/* llmpress — the pass context: what a running pass may ask the runner for. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>

#include "lp-internal.h"
#include "context-private.h"

void
lp_pass_context_init (LpPassContext *ctx, LpNode *node, LpArtifact **inputs, LpParamValue **values,
                      LpRunShared *shared)
{
  memset (ctx, 0, sizeof *ctx);
  ctx->node = node;
  ctx->inputs = inputs;
  ctx->values = values;
  ctx->shared = shared;
  ctx->backend_name = "cpu";
}

void
lp_pass_context_clear (LpPassContext *ctx)
{
  if (ctx->scratch_dir)
    lp_remove_tree (ctx->scratch_dir);
  g_clear_pointer (&ctx->scratch_dir, g_free);
  g_clear_pointer (&ctx->output, lp_artifact_unref);
  g_clear_pointer (&ctx->calibration, lp_calibration_free);
}

const char *
lp_pass_context_node_name (LpPassContext *ctx)
{
  return ctx->node->name;
}

LpArtifact *
lp_pass_context_get_input (LpPassContext *ctx, const char *input)
{
  for (guint i = 0; i < ctx->node->inputs->len; i++)
    {
      LpNodeInput *in = ctx->node->inputs->pdata[i];
      if (strcmp (in->spec->name, input) == 0)
        return ctx->inputs[i];
    }
  g_return_val_if_fail (lp_pass_info_find_input (ctx->node->pass->info, input) != NULL, NULL);
  return NULL;
}

/* The index in node->inputs of branch i of a declared input, -1 if none. */
static int
branch_index (LpPassContext *ctx, const char *input, guint i)
{
  for (guint k = 0; k < ctx->node->inputs->len; k++)
    {
      LpNodeInput *in = ctx->node->inputs->pdata[k];
      if (strcmp (in->spec->name, input) == 0 && i-- == 0)
        return (int) k;
    }
  return -1;
}

guint
lp_pass_context_get_n_branches (LpPassContext *ctx)
{
  guint n = 0;
  for (guint k = 0; k < ctx->node->inputs->len; k++)
    n += strcmp (((LpNodeInput *) ctx->node->inputs->pdata[k])->spec->name, "input") == 0;
  return MAX (n, 1);
}

LpArtifact *
lp_pass_context_get_input_branch (LpPassContext *ctx, const char *input, guint i)
{
  int k = branch_index (ctx, input, i);
  return k < 0 ? NULL : ctx->inputs[k];
}

const char *
lp_pass_context_get_input_branch_name (LpPassContext *ctx, const char *input, guint i)
{
  int k = branch_index (ctx, input, i);
  return k < 0 ? NULL : ((LpNodeInput *) ctx->node->inputs->pdata[k])->source->name;
}

LpModel *
lp_pass_context_get_input_model (LpPassContext *ctx, const char *input)
{
  return lp_artifact_get_model (lp_pass_context_get_input (ctx, input));
}

/* The value of a declared parameter of the expected type(s). */
static const LpParamValue *
param (LpPassContext *ctx, const char *name, guint type_mask)
{
  const LpPassInfo *info = ctx->node->pass->info;
  guint i = 0;
  for (const LpParamSpec *s = info->params; s && s->name; s++, i++)
    if (strcmp (s->name, name) == 0)
      {
        if (!((1u << s->type) & type_mask))
          {
            g_critical ("pass %s: parameter %s is a %s, read with the wrong getter", info->name, name,
                        lp_param_type_name (s->type));
            return NULL;
          }
        return ctx->values[i];
      }
  g_critical ("pass %s: no parameter named %s", info->name, name);
  return NULL;
}

#define BIT(t) (1u << (t))

gboolean
lp_pass_context_get_bool (LpPassContext *ctx, const char *name)
{
  return lp_param_value_get_bool (param (ctx, name, BIT (LP_PARAM_BOOL)));
}

gint64
lp_pass_context_get_int (LpPassContext *ctx, const char *name)
{
  return lp_param_value_get_int (param (ctx, name, BIT (LP_PARAM_INT)));
}

double
lp_pass_context_get_float (LpPassContext *ctx, const char *name)
{
  return lp_param_value_get_float (param (ctx, name, BIT (LP_PARAM_FLOAT)));
}

const char *
lp_pass_context_get_string (LpPassContext *ctx, const char *name)
{
  return lp_param_value_get_string (
    param (ctx, name, BIT (LP_PARAM_STRING) | BIT (LP_PARAM_ENUM) | BIT (LP_PARAM_PATH) | BIT (LP_PARAM_TENSORS)));
}

int
lp_pass_context_get_enum (LpPassContext *ctx, const char *name)
{
  return lp_param_value_get_enum (param (ctx, name, BIT (LP_PARAM_ENUM)));
}

const LpTensorPattern *
lp_pass_context_get_tensors (LpPassContext *ctx, const char *name)
{
  return lp_param_value_get_tensors (param (ctx, name, BIT (LP_PARAM_TENSORS)));
}

gboolean
lp_pass_context_param_is_set (LpPassContext *ctx, const char *name)
{
  guint i = 0;
  for (const LpParamSpec *s = ctx->node->pass->info->params; s && s->name; s++, i++)
    if (strcmp (s->name, name) == 0)
      return ctx->node->given[i];
  g_critical ("pass %s: no parameter named %s", ctx->node->pass->info->name, name);
  return FALSE;
}

void
lp_pass_context_set_output (LpPassContext *ctx, LpArtifact *artifact)
{
  g_return_if_fail (artifact != NULL);
  lp_artifact_ref (artifact);
  g_clear_pointer (&ctx->output, lp_artifact_unref);
  ctx->output = artifact;
}

void
lp_pass_context_set_output_model (LpPassContext *ctx, LpModel *model)
{
  g_autoptr (LpArtifact) a = lp_artifact_new_model (model);
  lp_pass_context_set_output (ctx, a);
}

void
lp_pass_context_set_output_metrics (LpPassContext *ctx, LpMeta *metrics)
{
  g_autoptr (LpArtifact) a = lp_artifact_new_metrics (metrics);
  lp_pass_context_set_output (ctx, a);
}

LpBackend *
lp_pass_context_get_backend (LpPassContext *ctx)
{
  return ctx->backend;
}

guint64
lp_pass_context_get_device_memory (LpPassContext *ctx)
{
  return ctx->device_memory;
}

const char *
lp_pass_context_get_backend_name (LpPassContext *ctx)
{
  return ctx->backend_name;
}

LpCalibration *
lp_pass_context_get_calibration (LpPassContext *ctx, GError **error)
{
  if (ctx->calibration != NULL)
    return ctx->calibration;
  /* Its cache key leaves the calibration data out: reading it would let a
   * stale result be reused. */
  if (!lp_pass_uses_calibration (ctx->node->pass))
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: pass %s reads the calibration data but does not declare LP_PASS_USES_CALIBRATION in its "
                    "flags (a plugin bug)", ctx->node->name, ctx->node->pass->info->name);
      return NULL;
    }
  if (ctx->calibration_path == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING,
                    "%s needs calibration data: give [pipeline] calibration=FILE in the spec or --calib FILE",
                    ctx->node->name);
      return NULL;
    }
  LpModel *model = lp_pass_context_get_input_model (ctx, "input");
  if (model == NULL)
    {
      lp_set_error (error, LP_ERROR_MISSING, "%s: calibration needs an input model to tokenize with", ctx->node->name);
      return NULL;
    }
  const LpPipelineSettings *s = ctx->settings;
  g_autoptr (GArray) tokens = lp_tokens_load (ctx->calibration_path, model, error);
  if (tokens == NULL)
    return NULL;
  gint64 start = s ? s->calib_start : 0, end = s && s->calib_end >= 0 ? s->calib_end : (gint64) tokens->len;
  if (end > (gint64) tokens->len)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: calibration_range: expected an end within the %u tokens, found %" G_GINT64_FORMAT,
                    ctx->calibration_path, tokens->len, end);
      return NULL;
    }
  gint32 bos = lp_tokens_bos (model); /* BOS-led samples when the model adds BOS */
  LpCalibOptions o = LP_CALIB_OPTIONS_INIT;
  if (s)
    {
      o.n_samples = (int) s->calib_samples;
      o.seq_len = (int) s->calib_seq_len;
      o.mode = s->calib_independent ? LP_CALIB_INDEPENDENT : LP_CALIB_SEQUENTIAL;
      o.seed = s->seed;
    }
  ctx->calibration = lp_calibration_new ((const gint32 *) tokens->data + start, end - start, bos, &o, error);
  if (ctx->calibration == NULL)
    lp_error_prefix (error, ctx->calibration_path);
  return ctx->calibration;
}

const char *
lp_pass_context_get_calibration_path (LpPassContext *ctx)
{
  return lp_pass_uses_calibration (ctx->node->pass) ? ctx->calibration_path : NULL;
}

guint64
lp_pass_context_get_seed (LpPassContext *ctx)
{
  return ctx->seed;
}

/* On a terminal a progress line is redrawn in place; elsewhere (logs, CI)
 * every line stays. */
static void
emit (LpPassContext *ctx, const char *level, const char *msg, gboolean progress)
{
  LpRunShared *sh = ctx->shared;
  if (sh == NULL || sh->quiet)
    return;
  double t = (g_get_monotonic_time () - sh->t0) / 1e6;
  lp_stderr_lock ();
  fprintf (stderr, "%s[%7.2fs] %s: %s%s%s", sh->tty ? "\r\033[K" : "", t, ctx->node->name, level, msg,
           progress && sh->tty ? "" : "\n");
  fflush (stderr);
  lp_stderr_unlock ();
}

void
lp_pass_context_progress (LpPassContext *ctx, guint64 done, guint64 total, const char *what)
{
  /* At most a line every half second, plus the last one. */
  gint64 now = g_get_monotonic_time ();
  if (done < total && now - ctx->last_progress < 500000)
    return;
  ctx->last_progress = now;
  g_autofree char *msg = total ? g_strdup_printf ("%s%s%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT " (%.0f%%)",
                                                   what ? what : "", what ? " " : "", done, total,
                                                   100.0 * (double) done / (double) total)
                               : g_strdup_printf ("%s%s%" G_GUINT64_FORMAT, what ? what : "", what ? " " : "", done);
  emit (ctx, "", msg, TRUE);
}

void
lp_pass_context_log (LpPassContext *ctx, LpLogLevel level, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *msg = g_strdup_vprintf (format, ap);
  va_end (ap);
  static const char *const prefix[] = { "error: ", "warning: ", "", "debug: " };
  if (level == LP_LOG_DEBUG && g_getenv ("LLMPRESS_DEBUG") == NULL)
    return;
  if (level > LP_LOG_WARNING && ctx->shared && ctx->shared->quiet)
    return;
  /* Warnings and errors are shown even with --quiet. */
  if (ctx->shared && ctx->shared->quiet)
    {
      fprintf (stderr, "%s: %s%s\n", ctx->node->name, prefix[level], msg);
      return;
    }
  emit (ctx, prefix[CLAMP (level, LP_LOG_ERROR, LP_LOG_DEBUG)], msg, FALSE);
}

gboolean
lp_pass_context_cancelled (LpPassContext *ctx)
{
  return ctx->shared && g_atomic_int_get (&ctx->shared->cancelled);
}

const char *
lp_pass_context_get_scratch_dir (LpPassContext *ctx, GError **error)
{
  if (ctx->scratch_dir == NULL)
    {
      g_autofree char *tmpl = g_strdup_printf ("llmpress-%s-XXXXXX", ctx->node->name);
      GError *e = NULL;
      ctx->scratch_dir = g_dir_make_tmp (tmpl, &e);
      if (ctx->scratch_dir == NULL)
        {
          lp_set_error (error, LP_ERROR_IO, "%s: cannot create a scratch directory: %s", ctx->node->name, e->message);
          g_error_free (e);
          return NULL;
        }
    }
  return ctx->scratch_dir;
}
