/* llmpress eval plugin — select: keeps the best branch of a sweep.
 *
 * A gathering pass (LP_PASS_GATHERS): `input` holds every branch of the
 * swept node it reads (gptq[seed=0] ... gptq[seed=7]) and `by` the metrics
 * of each, paired by the spec's lists; the model whose `by` metric is least
 * (goal=max: greatest) goes on, unchanged but for its metadata, which
 * records the choice and every score (llmpress.select).  SpinQuant chooses
 * its rotation on calibration data in this spirit: a sweep of rotation
 * seeds, each quantized by the quantizer that follows, scored by
 * eval.heldout, keeps the one that quantizes best without looking at the
 * evaluation data.  It costs what the branches cost: every branch is
 * computed (and held in memory together while select runs). */
#include "config.h"

#include "eval.h"

static const char *const select_goals[] = { "min", "max", NULL };

static const LpParamSpec select_params[] = {
  { .name = "metric", .type = LP_PARAM_STRING, .default_value = "perplexity",
    .help = "the metric of the by= node's output to compare (perplexity, nll, kl, top1, ...: what that pass writes)" },
  { .name = "goal", .type = LP_PARAM_ENUM, .default_value = "min", .choices = select_goals,
    .help = "min: keep the branch whose metric is least (ties: the first in the sweep's order); max: greatest" },
  { .name = NULL }
};

static const LpInputSpec select_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the swept node whose branches compete: one model per branch" },
  { .name = "by", .kind = LP_ARTIFACT_METRICS,
    .help = "the node that scores each branch (an eval or eval.heldout below input): its metric= decides" },
  { .name = NULL }
};

/* The metric `key` of branch i's scores as a number; FALSE with an error
 * naming the node and the keys it has when it is absent or not a number. */
static gboolean
branch_score (LpPassContext *ctx, guint i, const char *key, double *out, GError **error)
{
  const char *node = lp_pass_context_get_input_branch_name (ctx, "by", i);
  const LpMeta *m = lp_artifact_get_metrics (lp_pass_context_get_input_branch (ctx, "by", i));
  if (m != NULL && lp_meta_get_float (m, key, out, NULL))
    return TRUE;
  const LpValue *v = m ? lp_meta_get (m, key) : NULL;
  g_autoptr (GString) keys = g_string_new (NULL);
  for (guint k = 0; m && k < lp_meta_n_keys (m) && k < 12; k++)
    g_string_append_printf (keys, "%s%s", k ? ", " : "", lp_meta_key (m, k));
  lp_set_error (error, LP_ERROR_INVALID, "%s: metric=%s: expected a number in %s's metrics, found %s (it has: %s)",
                lp_pass_context_node_name (ctx), key, node, v ? lp_value_type_name (v->type) : "none", keys->str);
  return FALSE;
}

static gboolean
select_run (LpPassContext *ctx, GError **error)
{
  const char *key = lp_pass_context_get_string (ctx, "metric");
  gboolean least = lp_pass_context_get_enum (ctx, "goal") == 0;
  guint n = lp_pass_context_get_n_branches (ctx), best = 0;
  double best_score = 0;
  g_autoptr (GString) scores = g_string_new (NULL);
  for (guint i = 0; i < n; i++)
    {
      double s;
      if (!branch_score (ctx, i, key, &s, error))
        return FALSE;
      g_string_append_printf (scores, "%s%s %.6g", i ? ", " : "", lp_pass_context_get_input_branch_name (ctx, "input", i), s);
      if (i == 0 || (least ? s < best_score : s > best_score))
        best = i, best_score = s;
    }
  const char *chosen = lp_pass_context_get_input_branch_name (ctx, "input", best);
  g_autofree char *what = g_strdup_printf ("%s: %s %s %.6g, the %s of %u by %s (%s)", chosen,
                                           lp_pass_context_get_input_branch_name (ctx, "by", best), key, best_score,
                                           least ? "least" : "greatest", n, key, scores->str);
  lp_pass_context_log (ctx, LP_LOG_INFO, "kept %s", what);
  /* A copy sharing the tensors: the branch's own artifact stays as cached. */
  g_autoptr (LpModel) out = lp_model_derive (lp_artifact_get_model (lp_pass_context_get_input_branch (ctx, "input", best)));
  lp_meta_set_string (lp_model_meta (out), "llmpress.select", what);
  lp_pass_context_set_output_model (ctx, out);
  return TRUE;
}

const LpPassInfo select_pass = {
  .name = "select",
  .summary = "keep the best branch of a sweep: the model of input= whose by= metric is least (or greatest), "
  "recorded in its metadata with every branch's score",
  .params = select_params,
  .inputs = select_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_GATHERS,
  .run = select_run,
};
