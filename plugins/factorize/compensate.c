/* llmpress factorize plugin — factorize.compensate: low-rank error
 * compensation of a compressed model, CALDERA-style (compensate.h).
 *
 * Input: the compressed model (quantized on the integer grid by
 * quantize.rtn / quantize.gptq, and/or pruned); reference: the original.
 * Each selected weight becomes an adapter (form.h): the compressed base Q
 * (re-quantized onto its own grid when requantize, by a GPTQ sweep with
 * the Hessian) plus L R, L [N, R] and R [R, K] on an integer grid of
 * factor_bits bits (or f16), fitted layer by layer to the reference's
 * output on the calibration data (sequential calibration: each block sees
 * the blocks already compensated).  The rank is rank=, or with bpw= the
 * largest one rank (capped at each weight's min(N, K)) that keeps the
 * selected weights together within bpw bits per weight, Q, L, R and all
 * their scales and zeros counted (as lp_tensor_bits_per_weight counts the
 * result).
 *
 * Everything that can be checked before calibration is: the reference's
 * tensors and shapes, the rank against each shape, the budget. */
#include "config.h"

#include <math.h>

#include <llmpress/llmpress.h>

#include "factorize.h"

static const LpParamSpec compensate_params[] = {
  { .name = "rank", .type = LP_PARAM_INT, .default_value = "8", .min = 0, .max = 1 << 20,
    .help = "rank R of the compensation L [N, R] R [R, K] of every selected weight (1 .. min(N, K)); 0 = from bpw=",
    .flags = LP_PARAM_RANGE },
  { .name = "bpw", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 64,
    .help = "bits per weight budget instead of rank=: the largest rank (capped at each weight's min(N, K)) with "
    "which the selected weights' Q, L, R and their scales and zeros together take at most this many bits per "
    "weight; 0 = use rank=",
    .flags = LP_PARAM_RANGE },
  { .name = "iterations", .type = LP_PARAM_INT, .default_value = "3", .min = 1, .max = 100,
    .help = "alternations: an activation-aware LR fit of the residual, then (requantize) Q re-quantized from "
    "W - LR, then LR again; the iterate of least output error is kept",
    .flags = LP_PARAM_RANGE },
  { .name = "factor_bits", .type = LP_PARAM_INT, .default_value = "4", .min = 0, .max = 16,
    .help = "L and R on an integer grid of this many bits (2..8), fitted with CALDERA's LPLR rounds; 0 or 16 = f16",
    .flags = LP_PARAM_RANGE },
  { .name = "factor_group", .type = LP_PARAM_INT, .default_value = "32", .min = 1, .max = 1 << 20,
    .help = "factor grid: columns sharing a scale and zero (at most a row: L's rows hold R values)",
    .flags = LP_PARAM_RANGE },
  { .name = "requantize", .type = LP_PARAM_BOOL, .default_value = "true",
    .help = "alternate re-quantization of Q from W - LR onto Q's own grid (bits, groups, zero rule) by a GPTQ "
    "sweep with the Hessian, groups fitted first (static); Q not on an integer grid (a block type, dense) or "
    "masked (pruned) stays as it is" },
  { .name = "damp", .type = LP_PARAM_FLOAT, .default_value = "0.01", .min = 0, .max = 1,
    .help = "this fraction of the mean Hessian diagonal is added to its diagonal (whitening and sweep); a Hessian "
    "still not positive definite is an error", .flags = LP_PARAM_RANGE },
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "blk.*",
    .help = "weights to compensate (2-D weights only)" },
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "weights left as they are" },
  { .name = NULL }
};

static const LpInputSpec compensate_inputs[] = {
  { .name = "input", .kind = LP_ARTIFACT_MODEL, .help = "the compressed model (quantized and/or pruned)" },
  { .name = "reference", .kind = LP_ARTIFACT_MODEL, .help = "the original model whose layers' outputs to approach" },
  { .name = NULL }
};

typedef struct {
  LpPassContext *ctx;
  LpModel *reference;
  LpCompensateOptions o;
  GHashTable *ranks;     /* weight name -> rank (GINT_TO_POINTER) */
  double err_before, err_after;
  guint64 bytes, elements;
} Compensate;

static gboolean
selected (const LpTensorPattern *targets, const LpTensorPattern *ignore, const LpTensor *t)
{
  return t->n_dims == 2 && lp_tensor_pattern_match (targets, t->name) && !lp_tensor_pattern_match (ignore, t->name);
}

/* Bits the selected weights take compensated at rank r (each capped at its
 * min(N, K)), Q's own bits included. */
static double
planned_bits (GPtrArray *sel, int r, const LpCompensateOptions *o)
{
  double bits = 0;
  for (guint i = 0; i < sel->len; i++)
    {
      const LpTensor *t = sel->pdata[i];
      gint64 n = t->shape[0], k = t->shape[1];
      int rt = (int) MIN (r, MIN (n, k));
      bits += 8.0 * (double) (lp_tensor_storage_bytes (t)
                              + lp_compensate_factor_bytes (n, k, rt, o->factor_bits, o->factor_group));
    }
  return bits;
}

/* bpw=: one rank for every selected weight (capped at its min(N, K)), the
 * largest keeping them all together within the budget; 0 when rank 1 does
 * not fit. */
static int
budget_rank (GPtrArray *sel, double bpw, const LpCompensateOptions *o, double *elements)
{
  int max_rank = 0;
  *elements = 0;
  for (guint i = 0; i < sel->len; i++)
    {
      const LpTensor *t = sel->pdata[i];
      max_rank = MAX (max_rank, (int) MIN (t->shape[0], t->shape[1]));
      *elements += (double) lp_tensor_n_elements (t);
    }
  int best = 0;
  for (int r = 1; r <= max_rank && planned_bits (sel, r, o) <= bpw * *elements; r++)
    best = r;
  return best;
}

/* Every selected weight: its reference of the same shape, its rank. */
static gboolean
plan (Compensate *c, LpModel *in, const LpTensorPattern *targets, const LpTensorPattern *ignore, double bpw,
      int rank, GError **error)
{
  g_autoptr (GPtrArray) sel = g_ptr_array_new ();
  for (guint i = 0; i < lp_model_n_tensors (in); i++)
    {
      LpTensor *t = lp_model_tensor_at (in, i);
      if (!selected (targets, ignore, t))
        continue;
      LpTensor *ref = lp_model_tensor (c->reference, t->name);
      g_autofree char *shape = lp_tensor_shape_string (t);
      if (ref == NULL || ref->n_dims != 2 || ref->shape[0] != t->shape[0] || ref->shape[1] != t->shape[1])
        {
          g_autofree char *rshape = ref ? lp_tensor_shape_string (ref) : NULL;
          lp_set_error (error, LP_ERROR_INVALID, "reference: tensor %s: expected %s as in the input, found %s",
                        t->name, shape, ref ? rshape : "no such tensor");
          return FALSE;
        }
      gint64 max_rank = MIN (t->shape[0], t->shape[1]);
      if (bpw == 0 && (rank < 1 || rank > max_rank))
        {
          lp_set_error (error, LP_ERROR_INVALID, "rank=%d: expected 1..%" G_GINT64_FORMAT " for tensor %s (%s)%s",
                        rank, max_rank, t->name, shape, rank == 0 ? " (rank=0 needs bpw=)" : "");
          return FALSE;
        }
      g_ptr_array_add (sel, t);
    }
  if (sel->len == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "targets=%s: no 2-D weight of the input selected",
                    lp_tensor_pattern_text (targets));
      return FALSE;
    }
  if (bpw > 0)
    {
      double elements;
      rank = budget_rank (sel, bpw, &c->o, &elements);
      if (rank == 0)
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "bpw=%g cannot be met: the %u selected weights take %.4f bits per weight compressed, %.4f "
                        "with a rank-1 compensation",
                        bpw, sel->len, planned_bits (sel, 0, &c->o) / elements, planned_bits (sel, 1, &c->o) / elements);
          return FALSE;
        }
      lp_pass_context_log (c->ctx, LP_LOG_INFO, "bpw=%g: rank %d, %.4f bits per weight planned", bpw, rank,
                           planned_bits (sel, rank, &c->o) / elements);
    }
  for (guint i = 0; i < sel->len; i++)
    {
      const LpTensor *t = sel->pdata[i];
      int r = (int) MIN (rank, MIN (t->shape[0], t->shape[1]));
      g_hash_table_insert (c->ranks, g_strdup (t->name), GINT_TO_POINTER (r));
    }
  return TRUE;
}

static gboolean
on_weight (gpointer user_data, LpTensor *weight, const LpActStats *stats, LpTensor **replacement, GError **error)
{
  Compensate *c = user_data;
  gpointer rank;
  if (!g_hash_table_lookup_extended (c->ranks, weight->name, NULL, &rank))
    return TRUE;
  if (stats->hessian == NULL || stats->n != weight->shape[1])
    {
      lp_set_error (error, LP_ERROR_FAILED, "no Hessian of %" G_GINT64_FORMAT " inputs from the calibration",
                    weight->shape[1]);
      return FALSE;
    }
  g_autofree float *W = lp_tensor_dup_f32 (lp_model_tensor (c->reference, weight->name), error);
  if (W == NULL)
    return FALSE;
  LpCompensateOptions o = c->o;
  o.rank = GPOINTER_TO_INT (rank);
  g_autofree double *errors = g_new (double, o.iterations + 1);
  *replacement = lp_compensate_layer (lp_pass_context_get_backend (c->ctx), weight, W, stats->hessian, &o, errors,
                                      error);
  if (*replacement == NULL)
    return FALSE;
  double best = errors[1];
  GString *trace = g_string_new (NULL);
  for (int i = 1; i <= o.iterations; i++)
    {
      best = MIN (best, errors[i]);
      g_string_append_printf (trace, " %.4g", errors[i] / (errors[0] > 0 ? errors[0] : 1));
    }
  c->err_before += errors[0];
  c->err_after += best;
  c->bytes += lp_tensor_storage_bytes (*replacement);
  c->elements += (guint64) lp_tensor_n_elements (*replacement);
  lp_pass_context_log (c->ctx, LP_LOG_INFO, "%s: rank %d, %.4f bits per weight; output error relative to Q alone:%s",
                       weight->name, o.rank, lp_tensor_bits_per_weight (*replacement), trace->str);
  g_string_free (trace, TRUE);
  return TRUE;
}

static gboolean
compensate_run (LpPassContext *ctx, GError **error)
{
  g_autoptr (GHashTable) ranks = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  Compensate c = { ctx, lp_pass_context_get_input_model (ctx, "reference") };
  c.ranks = ranks;
  c.o = (LpCompensateOptions) LP_COMPENSATE_OPTIONS_INIT;
  c.o.iterations = (int) lp_pass_context_get_int (ctx, "iterations");
  c.o.factor_bits = (int) lp_pass_context_get_int (ctx, "factor_bits");
  c.o.factor_group = (int) lp_pass_context_get_int (ctx, "factor_group");
  c.o.requantize = lp_pass_context_get_bool (ctx, "requantize");
  c.o.damp = lp_pass_context_get_float (ctx, "damp");
  if (!(c.o.factor_bits == 0 || c.o.factor_bits == 16 || (c.o.factor_bits >= 2 && c.o.factor_bits <= 8)))
    {
      lp_set_error (error, LP_ERROR_INVALID, "factor_bits=%d: expected 2..8 (an integer grid), or 0 or 16 (f16)",
                    c.o.factor_bits);
      return FALSE;
    }
  const LpTensorPattern *targets = lp_pass_context_get_tensors (ctx, "targets");
  const LpTensorPattern *ignore = lp_pass_context_get_tensors (ctx, "ignore");
  LpModel *in = lp_pass_context_get_input_model (ctx, "input");
  if (!plan (&c, in, targets, ignore, lp_pass_context_get_float (ctx, "bpw"),
             (int) lp_pass_context_get_int (ctx, "rank"), error))
    return FALSE;
  g_autoptr (LpModel) work = lp_model_derive (in);
  if (!lp_layerwise_run (ctx, work, LP_CALIB_HESSIAN, targets, ignore, on_weight, &c, error))
    return FALSE;
  lp_pass_context_log (ctx, LP_LOG_INFO,
                       "%u weights compensated: %.4f bits per weight (Q, L, R, scales and zeros); output error "
                       "%.6g -> %.6g (x%.4f); the model: %.3f bits per weight",
                       g_hash_table_size (ranks), c.elements ? 8.0 * (double) c.bytes / (double) c.elements : 0.0,
                       c.err_before, c.err_after, c.err_before > 0 ? c.err_after / c.err_before : 0.0,
                       lp_model_bits_per_weight (work));
  lp_pass_context_set_output_model (ctx, work);
  return TRUE;
}

const LpPassInfo fz_compensate_pass = {
  .name = "factorize.compensate",
  .summary = "CALDERA: compensate a compressed model's error by quantized low-rank factors, W = Q + L R, fitted "
             "to the reference's layer outputs; the result is base + adapter",
  .params = compensate_params,
  .inputs = compensate_inputs,
  .output = LP_ARTIFACT_MODEL,
  .flags = LP_PASS_USES_CALIBRATION,
  .run = compensate_run,
};
