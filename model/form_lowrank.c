/* llmpress — the low-rank form: W [N, K] = A [N, R] B [R, K] (form.h), what
 * the factorize passes produce.
 *
 * Materialize: rows of A times B (the tensor's data holds A B in f32).
 * Matmul: two products, y = (x B^T) A^T, never forming W.  Bytes: the two
 * factors', (N + K) R floats against N K.  Training: both factors are the
 * parameters (dA = dY^T (x B^T), dB = (dY A)^T x).
 *
 * Written (GGUF, safetensors / Hugging Face alike) as <name>.lr_a [N, R] and
 * <name>.lr_b [R, K] with llmpress.form.<name> = "low-rank" in the
 * metadata; a Hugging Face writer reorders A's rows as it reorders W's
 * (Q/K).  A runtime that knows no such form (llama.cpp, transformers) finds
 * <name> missing and refuses the file, naming it: it never computes with
 * wrong weights.  Readers rebuild the form and drop the parts. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

extern const LpFormClass lp_form_low_rank_class;

typedef struct {
  LpForm parent;
  LpTensor *a; /* [N, R] f32 */
  LpTensor *b; /* [R, K] f32 */
} LowRankForm;

static const LpFormPart low_rank_parts[] = {
  { ".lr_a", TRUE },
  { ".lr_b", FALSE },
  { NULL, FALSE },
};

#define LR(form) ((const LowRankForm *) (form))

static void
low_rank_finalize (LpForm *form)
{
  LowRankForm *f = (LowRankForm *) form;
  lp_tensor_unref (f->a);
  lp_tensor_unref (f->b);
}

/* out[n, K] = A[r0 .. r0 + n, R] B[R, K]. */
static gboolean
low_rank_materialize_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  const LpTensor *a = LR (form)->a, *b = LR (form)->b;
  int R = (int) b->shape[0], K = (int) b->shape[1];
  lp_ref_gemm (FALSE, (int) n, K, R, 1.0f, (const float *) lp_tensor_data (a) + r0 * R, R, lp_tensor_data (b), K,
               0.0f, out, K);
  return TRUE;
}

static guint64
low_rank_storage_bytes (const LpForm *form, const LpTensor *t)
{
  return lp_tensor_n_bytes (LR (form)->a) + lp_tensor_n_bytes (LR (form)->b);
}

/* params: A [N, R], B [R, K], both trainable. */
static gboolean
low_rank_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error)
{
  w->n_trainable = 2;
  if (train)
    return lp_form_weights_add_trainable (w, LR (form)->a, error) != NULL
           && lp_form_weights_add_trainable (w, LR (form)->b, error) != NULL;
  return lp_form_weights_add_values (w, LR (form)->a, TRUE, error) != NULL
         && lp_form_weights_add_values (w, LR (form)->b, TRUE, error) != NULL;
}

/* The new factors A and B. */
static LpTensor *
low_rank_trained (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error)
{
  g_autoptr (LpTensor) a = lp_form_weights_read_param (w, 0, LR (form)->a, error);
  g_autoptr (LpTensor) b = a ? lp_form_weights_read_param (w, 1, LR (form)->b, error) : NULL;
  return b ? lp_tensor_new_low_rank (t->name, a, b, error) : NULL;
}

/* y = (x B^T) A^T (+ acc): two nodes, W never formed. */
static LpCTensor *
low_rank_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc,
                 GError **error)
{
  LpCTensor *xb = lp_form_matmul_node (g, x, w->params[1], NULL, error);
  return xb ? lp_form_matmul_node (g, xb, w->params[0], acc, error) : NULL;
}

static GPtrArray *
low_rank_save_tensors (const LpForm *form, LpTensor *t, GError **error)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_ptr_array_add (out, lp_form_part_tensor (&lp_form_low_rank_class, 0, t->name, LR (form)->a));
  g_ptr_array_add (out, lp_form_part_tensor (&lp_form_low_rank_class, 1, t->name, LR (form)->b));
  return out;
}

static void
low_rank_save_meta (const LpForm *form, const LpTensor *t, LpMeta *meta)
{
  g_autofree char *key = lp_form_meta_key (t->name);
  lp_meta_set_string (meta, key, lp_form_low_rank_class.name);
}

/* Each tensor marked low-rank comes back from its two parts. */
static gboolean
low_rank_restore (LpModel *model, GError **error)
{
  g_autoptr (GPtrArray) names = lp_model_forms_marked (model, lp_form_low_rank_class.name);
  for (guint i = 0; i < names->len; i++)
    {
      LpTensor *parts[2];
      if (!lp_model_form_parts (model, &lp_form_low_rank_class, names->pdata[i], parts, error))
        return FALSE;
      g_autoptr (LpTensor) t = lp_tensor_new_low_rank (names->pdata[i], parts[0], parts[1], error);
      if (t == NULL)
        {
          lp_error_prefix (error, lp_model_source (model) ? lp_model_source (model) : "model");
          return FALSE;
        }
      lp_model_form_rebuilt (model, &lp_form_low_rank_class, t);
    }
  return TRUE;
}

const LpFormClass lp_form_low_rank_class = {
  .name = "low-rank",
  .parts = low_rank_parts,
  .finalize = low_rank_finalize,
  .materialize_rows = low_rank_materialize_rows,
  .storage_bytes = low_rank_storage_bytes,
  .save_tensors = low_rank_save_tensors,
  .save_meta = low_rank_save_meta,
  .restore = low_rank_restore,
  .upload = low_rank_upload,
  .matmul = low_rank_matmul,
  .trained = low_rank_trained,
};

LpTensor *
lp_form_factor_f32 (LpTensor *t, const char *what, GError **error)
{
  if (t->n_dims != 2 || (t->dtype != LP_DTYPE_F32 && t->dtype != LP_DTYPE_F16 && t->dtype != LP_DTYPE_BF16))
    {
      g_autofree char *shape = lp_tensor_shape_string (t);
      lp_set_error (error, LP_ERROR_INVALID, "%s %s: expected a 2-D f32, f16 or bf16 matrix, found %s %s", what,
                    t->name, lp_dtype_name (t->dtype), shape);
      return NULL;
    }
  if (t->dtype == LP_DTYPE_F32)
    return lp_tensor_ref (t);
  g_autofree float *v = lp_tensor_dup_f32 (t, error);
  return v ? lp_tensor_new_f32 (t->name, 2, t->shape, v, error) : NULL;
}

LpTensor *
lp_tensor_new_low_rank (const char *name, LpTensor *a_in, LpTensor *b_in, GError **error)
{
  g_autoptr (LpTensor) a = lp_form_factor_f32 (a_in, "low-rank factor A", error);
  g_autoptr (LpTensor) b = a ? lp_form_factor_f32 (b_in, "low-rank factor B", error) : NULL;
  if (b == NULL)
    return NULL;
  if (a->shape[1] != b->shape[0] || a->shape[1] < 1 || a->shape[0] > G_MAXINT || b->shape[1] > G_MAXINT
      || a->shape[1] > G_MAXINT)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "tensor %s: low-rank factors: expected A [N, R] and B [R, K] with R >= 1, found A %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                    " and B %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT,
                    name, a->shape[0], a->shape[1], b->shape[0], b->shape[1]);
      return NULL;
    }
  LowRankForm *f = lp_form_alloc (&lp_form_low_rank_class, sizeof (LowRankForm));
  f->a = g_steal_pointer (&a);
  f->b = g_steal_pointer (&b);
  g_autoptr (LpForm) form = &f->parent;
  gint64 shape[2] = { f->a->shape[0], f->b->shape[1] };
  g_autoptr (LpTensor) t = lp_tensor_new (name, LP_DTYPE_F32, 2, shape, error);
  if (t == NULL)
    return NULL;
  low_rank_materialize_rows (form, t, 0, shape[0], lp_tensor_data_mut (t), NULL);
  t->form = g_steal_pointer (&form);
  return g_steal_pointer (&t);
}

gboolean
lp_tensor_low_rank_factors (const LpTensor *t, LpTensor **a, LpTensor **b)
{
  if (t->form == NULL || t->form->klass != &lp_form_low_rank_class)
    return FALSE;
  *a = LR (t->form)->a;
  *b = LR (t->form)->b;
  return TRUE;
}
