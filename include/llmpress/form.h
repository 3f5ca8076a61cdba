/* llmpress — weight forms: how a weight is held.
 *
 * A linear weight W [N, K] (N outputs, K inputs) has a form: dense (f32,
 * f16, bf16), a ggml block type, an integer grid (codes, scales, zeros,
 * g_idx), masked (another form plus a fixed keep-mask), low-rank (A [N, R]
 * B [R, K]), base + adapter (LoRA).  Each form is one file in model/
 * (form_<name>.c) defining an LpFormClass; form.c holds the registration
 * table and the dispatch below.  Nothing outside a form's file asks which
 * form a weight is: callers ask the form (its bytes, its mask, its matmul,
 * what to write) through these functions.
 *
 * A tensor's form is t->form (lp_tensor_form); NULL means the dense or
 * block form its dtype says.  Whatever the form, t->data holds the values
 * in t->dtype (the form materialized), so every reader of values works
 * unchanged; the form adds what is compressed.
 *
 * Adding a form: write model/form_<name>.c defining `const LpFormClass
 * lp_form_<name>_class` and its constructor, declare both below, list the
 * class in form.c's table and the file in pipeline/Makefile.inc. */
#pragma once

#include <glib.h>
#include <llmpress/tensor.h>
#include <llmpress/meta.h>
#include <llmpress/model.h>
#include <llmpress/backend.h>

G_BEGIN_DECLS

typedef struct _LpFormClass LpFormClass;

/* An instance: each form's own struct begins with this. */
struct _LpForm {
  /*< private >*/
  const LpFormClass *klass;
  gint ref_count;
};

/* A tensor a form writes in place of its weight, named <weight><suffix>. */
typedef struct {
  const char *suffix;   /* ".lr_a" */
  gboolean weight_rows; /* its rows are the weight's rows: a writer that reorders
                         * a weight's rows (HF's Q/K) reorders this part's too */
} LpFormPart;

/* Methods left NULL mean: no mask, no grid, not quantized, written as its
 * own values, no keys, nothing to restore. */
struct _LpFormClass {
  const char *name;         /* "low-rank": the value of llmpress.form.<tensor> in a file */
  const LpFormPart *parts;  /* what save writes (ended by a NULL suffix); NULL: the weight's own values */
  void (*finalize) (LpForm *form);
  /* out[n, K] = rows r0 .. r0 + n - 1 of W as f32 (FALSE: a type no reader knows). */
  gboolean (*materialize_rows) (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out,
                                GError **error);
  /* Bytes the form takes (what a file or a device holds for W). */
  guint64 (*storage_bytes) (const LpForm *form, const LpTensor *t);
  /* Whether W is already quantized (a quantizer asks before quantizing again). */
  gboolean (*is_quantized) (const LpForm *form, const LpTensor *t);
  /* The keep-mask (one bit an element, row-major; 0 = pruned), or NULL. */
  GBytes *(*mask) (const LpForm *form);
  /* The integer grid W's values lie on, or NULL. */
  const LpIntGrid *(*int_grid) (const LpForm *form);
  /* The form of t's values with `mask` instead of this one's (NULL: none).
   * NULL method: wrapped in the masked form (or kept, for no mask). */
  LpForm *(*with_mask) (LpForm *form, GBytes *mask);
  /* y[T, N] = x[T, K] W^T + beta y on be (the backend's fast path for the
   * form where it has one). */
  void (*gemm) (const LpForm *form, const LpTensor *t, LpBackend *be, int T, const float *x, int ldx, float beta,
                float *y);
  /* The tensors written for t: its parts (class->parts, in that order,
   * named <t->name><suffix>) or t itself. */
  GPtrArray *(*save_tensors) (const LpForm *form, LpTensor *t, GError **error);
  /* Keys a reader needs to rebuild the form, into a file's metadata. */
  void (*save_meta) (const LpForm *form, const LpTensor *t, LpMeta *meta);
  /* After reading a file: rebuild this form's tensors of `model` from
   * their parts and metadata (parts removed). */
  gboolean (*restore) (LpModel *model, GError **error);
};

LpForm *lp_form_ref (LpForm *form);
void lp_form_unref (LpForm *form);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpForm, lp_form_unref)
/* An instance's struct zeroed, of `size` bytes, with its class set. */
gpointer lp_form_alloc (const LpFormClass *klass, gsize size);
const char *lp_form_name (const LpForm *form);

/* t's form: t->form, or the dense or block one its dtype says (borrowed). */
const LpForm *lp_tensor_form (const LpTensor *t);
/* A tensor of `name`, `shape` holding `values` (f32, materialized by the
 * caller) with `form` (ref taken). */
LpTensor *lp_tensor_new_form (const char *name, int n_dims, const gint64 *shape, const float *values,
                              LpForm *form, GError **error);
/* A tensor sharing t's name and data with `form` (ref taken; NULL: the dense or block form). */
LpTensor *lp_tensor_with_form (LpTensor *t, LpForm *form);
/* Rows r0 .. r0 + n - 1 of t as f32 (out[n, K]), computed by its form. */
gboolean lp_tensor_materialize_rows (const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error);
/* A form held as its stored values (t->data in t->dtype), as the dense and
 * block forms are: its rows and its bytes. */
gboolean lp_form_values_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out,
                              GError **error);
guint64 lp_form_values_bytes (const LpForm *form, const LpTensor *t);
/* y[T, N] = x[T, K] t^T + beta y through t's form. */
void lp_tensor_gemm (const LpTensor *t, LpBackend *be, int T, const float *x, int ldx, float beta, float *y);
/* Bits per weight of t's form: storage bytes * 8 / elements. */
double lp_tensor_bits_per_weight (const LpTensor *t);

/* ---- masks (the masked form) ---- */
/* A tensor sharing t's data, with `mask` (ref taken; NULL clears it).
 * Fails when the mask's size is not ceil(n_elements / 8) bytes. */
LpTensor *lp_tensor_with_mask (LpTensor *t, GBytes *mask, GError **error);
/* t's keep-mask, or NULL (borrowed). */
GBytes *lp_tensor_mask (const LpTensor *t);
/* Whether element i is kept (TRUE for a tensor without a mask). */
gboolean lp_tensor_mask_keeps (const LpTensor *t, gint64 i);
/* Fraction of pruned elements: by the mask, or 0 without one. */
double lp_tensor_sparsity (const LpTensor *t);
/* A keep-mask for n values: kept where the value is non-zero. */
GBytes *lp_mask_from_nonzero (const float *values, gint64 n);
/* A masked form over base (NULL: the dense or block form of t's dtype). */
LpForm *lp_form_masked_new (LpForm *base, GBytes *mask);

/* ---- integer grids (the grid form) ---- */
/* An f32 tensor of shape {rows, cols} holding the grid's weights, with the
 * grid's form (ref taken on grid) and `mask` (may be NULL). */
LpTensor *lp_tensor_new_int_grid (const char *name, int n_dims, const gint64 *shape, LpIntGrid *grid,
                                  GBytes *mask, GError **error);
/* The integer grid t's values lie on, or NULL (borrowed). */
const LpIntGrid *lp_tensor_int_grid (const LpTensor *t);
/* Whether a tensor is already quantized: a block type or an integer grid. */
gboolean lp_tensor_is_quantized (const LpTensor *t);
/* Bytes of the tensor's form: the grid's packed bytes, the factors', ...,
 * or lp_tensor_n_bytes for a dense or block tensor. */
guint64 lp_tensor_storage_bytes (const LpTensor *t);

/* ---- low-rank (form_lowrank.c) ----
 * W = A B with A [N, R], B [R, K] (f32).  Written as <name>.lr_a and
 * <name>.lr_b with llmpress.form.<name> = "low-rank" in the metadata. */
LpTensor *lp_tensor_new_low_rank (const char *name, LpTensor *a, LpTensor *b, GError **error);
/* A factor as f32 (a ref when it is): 2-D f32, f16 or bf16, else an error naming `what`. */
LpTensor *lp_form_factor_f32 (LpTensor *t, const char *what, GError **error);
/* t's factors (borrowed), FALSE when t is not low-rank. */
gboolean lp_tensor_low_rank_factors (const LpTensor *t, LpTensor **a, LpTensor **b);

/* ---- base + adapter (form_adapter.c) ----
 * W = base + scale B A with A [R, K], B [N, R] (LoRA's lora_A, lora_B).
 * Written as the base's tensors plus <name>.lora_a and <name>.lora_b, with
 * llmpress.form.<name> = "adapter" and llmpress.form.<name>.scale. */
LpTensor *lp_tensor_new_adapter (LpTensor *base, LpTensor *a, LpTensor *b, double scale, GError **error);

/* ---- the registration table and what writers and readers call ---- */
/* Every registered class, NULL-terminated, in restore order. */
const LpFormClass *const *lp_form_classes (void);
/* The tensors to write for t (owned array of refs): t itself, or its form's parts. */
GPtrArray *lp_tensor_save_tensors (LpTensor *t, GError **error);
/* Every tensor's form keys into `meta` (a writer's copy of the model's). */
void lp_model_forms_save_meta (const LpModel *model, LpMeta *meta);
/* After reading: every form rebuilt from its parts and keys. */
gboolean lp_model_forms_restore (LpModel *model, GError **error);
/* When `name` is a form's part <weight><suffix>: the part and the length of
 * <weight>; NULL otherwise. */
const LpFormPart *lp_form_part_find (const char *name, gsize *weight_len);
/* Tensors marked llmpress.form.<tensor> = class_name in model's metadata (owned names). */
GPtrArray *lp_model_forms_marked (const LpModel *model, const char *class_name);
/* The metadata key marking tensor `name`'s form (g_free it). */
char *lp_form_meta_key (const char *name);
/* For a form's save_tensors: `part` (a ref) renamed <name><suffix of klass's part i>. */
LpTensor *lp_form_part_tensor (const LpFormClass *klass, int i, const char *name, LpTensor *part);
/* For a form's restore: every part of tensor `name` (klass->parts order,
 * borrowed) into parts[]; FALSE with an error naming the first one missing. */
gboolean lp_model_form_parts (LpModel *model, const LpFormClass *klass, const char *name, LpTensor **parts,
                              GError **error);
/* For a form's restore: t (rebuilt) replaces its parts and its key in model. */
void lp_model_form_rebuilt (LpModel *model, const LpFormClass *klass, LpTensor *t);

G_END_DECLS
