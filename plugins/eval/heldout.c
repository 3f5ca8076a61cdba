/* llmpress eval plugin — eval.heldout: perplexity on the calibration data's
 * held-out windows, the slots of the calibration cut that no sample took
 * (lp_calibration_heldout).  A choice made by this score (select by= it)
 * is made on calibration-side tokens only: never on a sample the
 * compression fitted, never outside calibration_range, so never on an
 * evaluation split kept disjoint from that range. */
#include "config.h"

#include "eval.h"

static const LpParamSpec heldout_params[] = {
  { .name = "max_windows", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = G_MAXINT32,
    .help = "score at most this many held-out windows (the first in the data's order); 0 = all of them",
    .flags = LP_PARAM_RANGE },
  { .name = NULL }
};

static const LpInputSpec heldout_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model to measure" },
  { .name = "reference", .kind = LP_ARTIFACT_MODEL, .optional = TRUE,
    .help = "the uncompressed model: adds KL divergence and top-1 agreement" },
  { .name = NULL }
};

/* The first n held-out windows as one token stream that lp_eval_run cuts
 * back into exactly those windows: each without its leading BOS (eval puts
 * it back), so they follow each other with a stride of seq_len - 1
 * (seq_len when the model adds no BOS). */
static GArray *
heldout_stream (LpCalibration *cal, int n, gint32 bos)
{
  int L = lp_calibration_seq_len (cal), lead = bos >= 0 ? 1 : 0;
  GArray *s = g_array_sized_new (FALSE, FALSE, sizeof (gint32), (guint) n * (guint) (L - lead));
  for (int i = 0; i < n; i++)
    g_array_append_vals (s, lp_calibration_heldout (cal, i) + lead, (guint) (L - lead));
  return s;
}

static gboolean
heldout_run (LpPassContext *ctx, GError **error)
{
  LpModel *model = lp_pass_context_get_input_model (ctx, "input");
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, error);
  if (cal == NULL)
    return FALSE;
  int have = lp_calibration_n_heldout (cal), want = (int) lp_pass_context_get_int (ctx, "max_windows");
  if (have == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: calibration data: expected held-out windows beside the %d samples, "
                    "found none (hint: a longer calibration_range or fewer calibration_samples)",
                    lp_pass_context_node_name (ctx), lp_calibration_n_samples (cal));
      return FALSE;
    }
  int n = want > 0 ? MIN (want, have) : have;
  g_autoptr (GArray) stream = heldout_stream (cal, n, lp_tokens_bos (model));
  LpEvalOptions o = { .ctx = lp_calibration_seq_len (cal), .max_windows = n,
                      .reference = lp_pass_context_get_input_model (ctx, "reference"),
                      .backend = lp_pass_context_get_backend (ctx),
                      .device_memory = lp_pass_context_get_device_memory (ctx) };
  LpEvalResult r;
  if (!lp_eval_run (model, (const gint32 *) stream->data, stream->len, &o, &r, error))
    return FALSE;
  g_autoptr (LpMeta) m = lp_meta_new ();
  eval_result_to_meta (&r, m);
  lp_meta_set_u64 (m, "heldout_available", (guint64) have);
  lp_pass_context_log (ctx, LP_LOG_INFO, "held-out perplexity %.4f over %d of the %d calibration windows no sample "
                       "took (%d tokens each)", r.ppl, r.n_windows, have, r.ctx);
  lp_pass_context_set_output_metrics (ctx, g_steal_pointer (&m));
  return TRUE;
}

const LpPassInfo eval_heldout_pass = {
  .name = "eval.heldout",
  .summary = "perplexity (KL and top-1 with a reference) on the calibration data's held-out windows: the slots of "
  "the calibration cut (calibration_range, windows of calibration_seq_len) that no calibration sample took",
  .params = heldout_params,
  .inputs = heldout_inputs,
  .output = LP_ARTIFACT_METRICS,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = heldout_run,
};
