/* Test-only plugin: test.scale multiplies every f32 tensor by a factor,
 * optionally after sleeping, so the scheduler tests can see two branches
 * overlap and compare outputs byte for byte; test.mask prunes; test.crash
 * dies of a signal; test.logits digests teacher logits. */
#include "config.h"

#include <signal.h>
#include <stdlib.h>
#include <llmpress/llmpress.h>

static const LpParamSpec scale_params[] = {
  { .name = "factor", .type = LP_PARAM_FLOAT, .default_value = "1", .min = -1000, .max = 1000,
    .help = "what every f32 weight is multiplied by", .flags = LP_PARAM_RANGE },
  { .name = "sleep_ms", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 60000,
    .help = "sleep this long first", .flags = LP_PARAM_RANGE },
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "*", .help = "tensors to scale" },
  { .name = "note", .type = LP_PARAM_STRING, .help = "free text (does not change the result)",
    .flags = LP_PARAM_NO_CACHE_KEY },
  { .name = NULL }
};

static const LpInputSpec scale_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the model" },
  { .name = NULL }
};

static gboolean
scale_run (LpPassContext *ctx, GError **error)
{
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  double factor = lp_pass_context_get_float (ctx, "factor");
  gint64 ms = lp_pass_context_get_int (ctx, "sleep_ms");
  const LpTensorPattern *targets = lp_pass_context_get_tensors (ctx, "targets");
  for (gint64 t = 0; t < ms; t += 10)
    {
      if (lp_pass_context_cancelled (ctx))
        {
          lp_set_error (error, LP_ERROR_FAILED, "cancelled");
          return FALSE;
        }
      g_usleep (10000);
    }
  /* A new model sharing what it does not change: the input may be cached
   * or read by another branch. */
  g_autoptr (LpModel) out = lp_model_derive (in);
  for (guint i = 0; i < lp_model_n_tensors (in); i++)
    {
      LpTensor *t = lp_model_tensor_at (in, i);
      if (t->dtype != LP_DTYPE_F32 || !lp_tensor_pattern_match (targets, t->name))
        continue;
      g_autoptr (LpTensor) s = lp_tensor_new (t->name, LP_DTYPE_F32, t->n_dims, t->shape, error);
      if (s == NULL)
        return FALSE;
      const float *src = lp_tensor_data (t);
      float *dst = lp_tensor_data_mut (s);
      for (gint64 j = 0; j < lp_tensor_n_elements (t); j++)
        dst[j] = (float) (src[j] * factor);
      lp_model_set_tensor (out, s);
    }
  lp_pass_context_set_output_model (ctx, out);
  return TRUE;
}

static const LpPassInfo scale_pass = {
  .name = "test.scale",
  .summary = "multiply f32 weights by a factor (tests only)",
  .params = scale_params,
  .inputs = scale_inputs,
  .output = LP_ARTIFACT_MODEL,
  .run = scale_run,
};

/* test.mask: prune every other element (even flat index) of the 2-D f32
 * targets, with a keep-mask, as a pruning pass leaves them. */
static const LpParamSpec mask_params[] = {
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "blk.*", .help = "tensors to prune" },
  { .name = NULL }
};

static gboolean
mask_run (LpPassContext *ctx, GError **error)
{
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  const LpTensorPattern *targets = lp_pass_context_get_tensors (ctx, "targets");
  g_autoptr (LpModel) out = lp_model_derive (in);
  for (guint i = 0; i < lp_model_n_tensors (in); i++)
    {
      LpTensor *t = lp_model_tensor_at (in, i);
      if (t->dtype != LP_DTYPE_F32 || t->n_dims != 2 || !lp_tensor_pattern_match (targets, t->name))
        continue;
      gint64 n = lp_tensor_n_elements (t);
      g_autofree float *v = g_memdup2 (lp_tensor_data (t), sizeof (float) * n);
      for (gint64 j = 0; j < n; j += 2)
        v[j] = 0.f;
      g_autoptr (LpTensor) d = lp_tensor_new_f32 (t->name, t->n_dims, t->shape, v, error);
      if (d == NULL)
        return FALSE;
      g_autoptr (GBytes) mask = lp_mask_from_nonzero (v, n);
      g_autoptr (LpTensor) m = lp_tensor_with_mask (d, mask, error);
      if (m == NULL)
        return FALSE;
      lp_model_set_tensor (out, m);
    }
  lp_pass_context_set_output_model (ctx, out);
  return TRUE;
}

static const LpPassInfo mask_pass = {
  .name = "test.mask",
  .summary = "prune every other weight of 2-D tensors, with a keep-mask (tests only)",
  .params = mask_params,
  .inputs = scale_inputs,
  .output = LP_ARTIFACT_MODEL,
  .run = mask_run,
};

/* test.crash: dies of a signal, as a buggy plugin would, so the tests can
 * check that the run names the node and leaves the cache sound. */
static const LpParamSpec crash_params[] = {
  { .name = "signal", .type = LP_PARAM_STRING, .default_value = "segv",
    .help = "segv (a NULL write), abrt (abort()) or fpe (raise SIGFPE)" },
  { .name = NULL }
};

/* Not instrumented by UBSan: under --enable-sanitizers the NULL write must
 * reach the kernel as a real SIGSEGV, not stop at UBSan's report. */
__attribute__ ((no_sanitize ("undefined"))) static gboolean
crash_run (LpPassContext *ctx, GError **error)
{
  const char *how = lp_pass_context_get_string (ctx, "signal");
  if (g_strcmp0 (how, "abrt") == 0)
    abort ();
  if (g_strcmp0 (how, "fpe") == 0)
    raise (SIGFPE);
  volatile int *volatile nowhere = NULL;
  *nowhere = 1;
  lp_set_error (error, LP_ERROR_FAILED, "survived signal=%s", how);
  return FALSE;
}

static const LpPassInfo crash_pass = {
  .name = "test.crash",
  .summary = "crash with a signal (tests only)",
  .params = crash_params,
  .inputs = scale_inputs,
  .output = LP_ARTIFACT_MODEL,
  .run = crash_run,
};

/* test.logits reads teacher logits (LP_ARTIFACT_LOGITS) and reports what
 * it was given: the sizes, the temperature, and a SHA-256 of every array's
 * bytes, so a test can see two readers (and a second run, from the cache)
 * got the same bits.  `salt` changes the cache key, not the result. */
static const LpParamSpec logits_params[] = {
  { .name = "salt", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 1000000,
    .help = "any number: a new one makes the node run again", .flags = LP_PARAM_RANGE },
  { .name = NULL }
};

static const LpInputSpec logits_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_LOGITS, .help = "the teacher logits" },
  { .name = NULL }
};

static gboolean
logits_run (LpPassContext *ctx, GError **error)
{
  LpLogits *lg = lp_artifact_get_logits (lp_pass_context_get_input (ctx, "input"));
  int N = lp_logits_n_windows (lg), L = lp_logits_seq_len (lg), k = lp_logits_k (lg);
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  for (int i = 0; i < N; i++)
    {
      const gint32 *ids;
      const float *logp, *rest;
      lp_logits_window (lg, i, &ids, &logp, &rest);
      g_checksum_update (sum, (const guchar *) lp_logits_tokens (lg, i), (gssize) L * 4);
      g_checksum_update (sum, (const guchar *) ids, (gssize) L * k * 4);
      g_checksum_update (sum, (const guchar *) logp, (gssize) L * k * 4);
      g_checksum_update (sum, (const guchar *) rest, (gssize) L * 4);
    }
  LpMeta *m = lp_meta_new ();
  lp_meta_set_u64 (m, "windows", (guint64) N);
  lp_meta_set_u64 (m, "seq_len", (guint64) L);
  lp_meta_set_u64 (m, "k", (guint64) k);
  lp_meta_set_u64 (m, "n_vocab", (guint64) lp_logits_n_vocab (lg));
  lp_meta_set_f32 (m, "temperature", (float) lp_logits_temperature (lg));
  lp_meta_set_string (m, "digest", g_checksum_get_string (sum));
  lp_meta_set_string (m, "vocab_digest", lp_logits_vocab_digest (lg));
  lp_pass_context_set_output_metrics (ctx, m);
  (void) error;
  return TRUE;
}

static const LpPassInfo logits_pass = {
  .name = "test.logits",
  .summary = "report teacher logits' sizes and a digest of their bytes",
  .params = logits_params,
  .inputs = logits_inputs,
  .output = LP_ARTIFACT_METRICS,
  .run = logits_run,
};

static const LpPassInfo *const passes[] = { &scale_pass, &mask_pass, &crash_pass, &logits_pass, NULL };

LP_PLUGIN_DEFINE ("testpass", "1.0", "MIT", passes)
