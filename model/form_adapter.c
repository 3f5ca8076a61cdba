/* llmpress — the adapter form: a base weight plus a low-rank update,
 * W [N, K] = base + scale B [N, R] A [R, K] (LoRA; form.h).
 *
 * The base keeps its own form (dense, quantized, masked): QLoRA is an
 * adapter over a grid.  Materialize: the base's rows plus scale B A (the
 * tensor's data holds that sum in f32).  Matmul: the base's own product
 * plus scale (x A^T) B^T.  Bytes: the base's plus the two factors' as
 * given (an f16 factor counts 2 bytes a value, a factor on an integer grid
 * its packed grid: CALDERA's quantized L and R).  Training: A and B are the
 * parameters, each trained in its own form (a grid factor by its latent
 * values through the grid, straight-through; rebuilt on the same grid);
 * the base is frozen unless LP_FORM_TRAIN_BASE says it trains too.
 *
 * Written as the base writes itself under <name>, plus <name>.lora_a [R, K]
 * and <name>.lora_b [N, R] as given (f16 stays f16; a grid factor writes
 * itself as the grid form does) with llmpress.form.<name> = "adapter" and
 * llmpress.form.<name>.scale; a Hugging Face writer reorders B's rows as it
 * reorders W's (Q/K).  A runtime that knows no adapters reads the base
 * alone (the update is lost, the file still loads); readers rebuild the
 * adapter and drop the parts. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

extern const LpFormClass lp_form_adapter_class;

typedef struct {
  LpForm parent;
  LpTensor *base; /* [N, K], its own form */
  LpTensor *a;    /* [R, K] f32 */
  LpTensor *b;    /* [N, R] f32 */
  LpTensor *a_in; /* A and B as given (f16, f32, an integer grid): what is stored and written */
  LpTensor *b_in;
  float scale;
} AdapterForm;

static const LpFormPart adapter_parts[] = {
  { ".lora_a", FALSE },
  { ".lora_b", TRUE },
  { NULL, FALSE },
};

#define AD(form) ((const AdapterForm *) (form))

static void
adapter_finalize (LpForm *form)
{
  AdapterForm *f = (AdapterForm *) form;
  lp_tensor_unref (f->base);
  lp_tensor_unref (f->a);
  lp_tensor_unref (f->b);
  lp_tensor_unref (f->a_in);
  lp_tensor_unref (f->b_in);
}

/* out[n, K] = base rows + scale B[r0 .. r0 + n, R] A[R, K]. */
static gboolean
adapter_materialize_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  const AdapterForm *f = AD (form);
  int R = (int) f->a->shape[0], K = (int) f->a->shape[1];
  if (!lp_tensor_materialize_rows (f->base, r0, n, out, error))
    return FALSE;
  lp_ref_gemm (FALSE, (int) n, K, R, f->scale, (const float *) lp_tensor_data (f->b) + r0 * R, R,
               lp_tensor_data (f->a), K, 1.0f, out, K);
  return TRUE;
}

static guint64
adapter_storage_bytes (const LpForm *form, const LpTensor *t)
{
  const AdapterForm *f = AD (form);
  return lp_tensor_storage_bytes (f->base) + lp_tensor_storage_bytes (f->a_in) + lp_tensor_storage_bytes (f->b_in);
}

static gboolean
adapter_is_quantized (const LpForm *form, const LpTensor *t)
{
  return lp_tensor_is_quantized (AD (form)->base);
}

/* The base's own weights (frozen, unless w->train_base: then parts[2]),
 * and A [R, K], B [N, R]: trained, each in its own form (w->parts), so a factor on an integer grid trains
 * through it (its latent values read through fake_quant, or its scales)
 * and an f16 one comes back f16: the factors keep their bytes. */
static gboolean
adapter_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error)
{
  const AdapterForm *f = AD (form);
  if (train)
    {
      if (lp_form_weights_add_part (w, f->a_in, error) == NULL || lp_form_weights_add_part (w, f->b_in, error) == NULL
          || (w->train_base && lp_form_weights_add_part (w, f->base, error) == NULL))
        return FALSE;
      w->n_trainable = w->n_params;
      if (w->train_base)
        return TRUE;
    }
  w->base = lp_form_weights_new (f->base, w->be, FALSE, error);
  if (w->base == NULL)
    return FALSE;
  w->bytes += w->base->bytes;
  if (train)
    return TRUE;
  w->n_trainable = 2;
  return lp_form_weights_add_values (w, f->a, TRUE, error) != NULL
         && lp_form_weights_add_values (w, f->b, TRUE, error) != NULL;
}

/* The same base (untouched, or rebuilt in its own form when it trained)
 * with A and B rebuilt in their own forms (the same grid, or dtype), the
 * same scale. */
static LpTensor *
adapter_trained (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error)
{
  const AdapterForm *f = AD (form);
  g_autoptr (LpTensor) a = lp_form_weights_trained (w->parts[0], error);
  g_autoptr (LpTensor) b = a ? lp_form_weights_trained (w->parts[1], error) : NULL;
  g_autoptr (LpTensor) base = b && w->parts[2] ? lp_form_weights_trained (w->parts[2], error)
                                               : b ? lp_tensor_ref (f->base) : NULL;
  return base ? lp_tensor_new_adapter (base, a, b, f->scale, error) : NULL;
}

/* Factor i's product y = x F^T (+ acc): through its own form when trained. */
static LpCTensor *
factor_matmul (const LpFormWeights *w, int i, LpCGraph *g, LpCTensor *x, LpCTensor *acc, GError **error)
{
  return w->parts[i] ? lp_form_weights_matmul (w->parts[i], g, x, acc, error)
                     : lp_form_matmul_node (g, x, w->params[i], acc, error);
}

/* y = x base^T (+ acc) + (scale x A^T) B^T. */
static LpCTensor *
adapter_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc,
                GError **error)
{
  LpCTensor *y = lp_form_weights_matmul (w->base ? w->base : w->parts[2], g, x, acc, error);
  LpCTensor *xa = y ? factor_matmul (w, 0, g, x, NULL, error) : NULL;
  LpCNode *s = xa ? lp_cgraph_add (g, LP_COP_SCALE, &xa, 1, NULL, 0, error) : NULL;
  if (s == NULL)
    return NULL;
  s->f[0] = AD (form)->scale;
  return factor_matmul (w, 1, g, s->dst[0], y, error);
}

static GPtrArray *
adapter_save_tensors (const LpForm *form, LpTensor *t, GError **error)
{
  const AdapterForm *f = AD (form);
  GPtrArray *out = lp_tensor_save_tensors (f->base, error);
  if (out == NULL)
    return NULL;
  g_ptr_array_add (out, lp_form_part_tensor (&lp_form_adapter_class, 0, t->name, f->a_in));
  g_ptr_array_add (out, lp_form_part_tensor (&lp_form_adapter_class, 1, t->name, f->b_in));
  return out;
}

static void
adapter_save_meta (const LpForm *form, const LpTensor *t, LpMeta *meta)
{
  const AdapterForm *f = AD (form);
  const LpForm *bf = lp_tensor_form (f->base);
  if (bf->klass->save_meta)
    bf->klass->save_meta (bf, f->base, meta);
  g_autofree char *key = lp_form_meta_key (t->name);
  g_autofree char *scale_key = g_strconcat (key, ".scale", NULL);
  lp_meta_set_string (meta, key, lp_form_adapter_class.name);
  lp_meta_set_f32 (meta, scale_key, f->scale);
}

/* Each tensor marked adapter comes back from its base (already in its own
 * form, under the weight's name), its two parts and its scale. */
static gboolean
adapter_restore (LpModel *model, GError **error)
{
  const char *src = lp_model_source (model) ? lp_model_source (model) : "model";
  g_autoptr (GPtrArray) names = lp_model_forms_marked (model, lp_form_adapter_class.name);
  for (guint i = 0; i < names->len; i++)
    {
      const char *name = names->pdata[i];
      LpTensor *base = lp_model_tensor (model, name), *parts[2];
      g_autofree char *key = lp_form_meta_key (name);
      g_autofree char *scale_key = g_strconcat (key, ".scale", NULL);
      double scale;
      if (base == NULL || !lp_meta_get_float (lp_model_meta (model), scale_key, &scale, NULL))
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected the base weight and %s (%s = %s), found %s missing",
                        src, name, scale_key, key, lp_form_adapter_class.name, base == NULL ? name : scale_key);
          return FALSE;
        }
      if (!lp_model_form_parts (model, &lp_form_adapter_class, name, parts, error))
        return FALSE;
      g_autoptr (LpTensor) t = lp_tensor_new_adapter (base, parts[0], parts[1], scale, error);
      if (t == NULL)
        {
          lp_error_prefix (error, src);
          return FALSE;
        }
      lp_model_form_rebuilt (model, &lp_form_adapter_class, t);
      lp_meta_remove (lp_model_meta (model), scale_key);
    }
  return TRUE;
}

const LpFormClass lp_form_adapter_class = {
  .name = "adapter",
  .parts = adapter_parts,
  .finalize = adapter_finalize,
  .materialize_rows = adapter_materialize_rows,
  .storage_bytes = adapter_storage_bytes,
  .is_quantized = adapter_is_quantized,
  .save_tensors = adapter_save_tensors,
  .save_meta = adapter_save_meta,
  .restore = adapter_restore,
  .upload = adapter_upload,
  .matmul = adapter_matmul,
  .trained = adapter_trained,
};

LpTensor *
lp_tensor_new_adapter (LpTensor *base, LpTensor *a_in, LpTensor *b_in, double scale, GError **error)
{
  g_autoptr (LpTensor) a = lp_form_factor_f32 (a_in, "adapter factor A", error);
  g_autoptr (LpTensor) b = a ? lp_form_factor_f32 (b_in, "adapter factor B", error) : NULL;
  if (b == NULL)
    return NULL;
  if (base->n_dims != 2 || a->shape[0] != b->shape[1] || a->shape[0] < 1 || a->shape[1] != base->shape[1]
      || b->shape[0] != base->shape[0])
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "tensor %s: adapter: expected A [R, %" G_GINT64_FORMAT "] and B [%" G_GINT64_FORMAT ", R] with R >= 1, found A %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                    " and B %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT,
                    base->name, base->shape[base->n_dims - 1], base->shape[0], a->shape[0], a->shape[1], b->shape[0], b->shape[1]);
      return NULL;
    }
  AdapterForm *f = lp_form_alloc (&lp_form_adapter_class, sizeof (AdapterForm));
  f->base = lp_tensor_ref (base);
  f->a = g_steal_pointer (&a);
  f->b = g_steal_pointer (&b);
  f->a_in = lp_tensor_ref (a_in);
  f->b_in = lp_tensor_ref (b_in);
  f->scale = (float) scale;
  g_autoptr (LpForm) form = &f->parent;
  g_autoptr (LpTensor) t = lp_tensor_new (base->name, LP_DTYPE_F32, 2, base->shape, error);
  if (t == NULL || !adapter_materialize_rows (form, t, 0, base->shape[0], lp_tensor_data_mut (t), error))
    return NULL;
  t->form = g_steal_pointer (&form);
  return g_steal_pointer (&t);
}

gboolean
lp_tensor_adapter_parts (const LpTensor *t, LpTensor **base, LpTensor **a, LpTensor **b, double *scale)
{
  if (t->form == NULL || t->form->klass != &lp_form_adapter_class)
    return FALSE;
  const AdapterForm *f = AD (t->form);
  if (base)
    *base = f->base;
  if (a)
    *a = f->a;
  if (b)
    *b = f->b;
  if (scale)
    *scale = f->scale;
  return TRUE;
}

/* The sum t's data already holds (base + scale B A in f32), in the base's
 * float type when the base is a plain float tensor (f32 stays exact; f16 and
 * bf16 round once), else f32: a quantized or grid base is not re-quantized
 * here (that would undo the correction; a quantize pass may follow).  A
 * masked base loses its mask: B A fills the pruned entries. */
LpTensor *
lp_tensor_adapter_merged (LpTensor *t, gboolean *dequantized, GError **error)
{
  LpTensor *base;
  g_return_val_if_fail (lp_tensor_adapter_parts (t, &base, NULL, NULL, NULL), NULL);
  gboolean plain = !lp_tensor_is_quantized (base)
                   && (base->dtype == LP_DTYPE_F32 || base->dtype == LP_DTYPE_F16 || base->dtype == LP_DTYPE_BF16);
  if (dequantized)
    *dequantized = !plain;
  g_autoptr (LpTensor) values = lp_tensor_new_from_bytes (t->name, LP_DTYPE_F32, t->n_dims, t->shape, t->data, error);
  if (values == NULL)
    return NULL;
  if (!plain)
    return g_steal_pointer (&values);
  return lp_tensor_convert_range (values, base->dtype, LP_OVERFLOW_ERROR, NULL, error);
}
