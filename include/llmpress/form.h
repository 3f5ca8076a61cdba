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
 * lp_form_<name>_class` and a constructor (declared below), add the class to
 * form.c's table (an extern line and an entry) and the file to
 * pipeline/Makefile.inc.  model/form_lowrank.c is the example. */
#pragma once

#include <glib.h>
#include <llmpress/tensor.h>
#include <llmpress/meta.h>
#include <llmpress/model.h>
#include <llmpress/backend.h>
#include <llmpress/compute.h>

G_BEGIN_DECLS

typedef struct _LpFormClass LpFormClass;

/* What a quantized form trains: its values (latent f32 weights, the
 * forward reading them through the form's grid: a straight-through
 * estimator), or its scales alone (codes and zeros fixed).  Forms that are
 * not quantized train their parameters either way. */
typedef enum { LP_FORM_TRAIN_VALUES, LP_FORM_TRAIN_SCALES } LpFormTrain;
/* OR'ed into `how`: a wrapped base (an adapter's: CALDERA's Q under L R)
 * trains too, as `how` says, instead of staying frozen. */
#define LP_FORM_TRAIN_BASE 0x100
typedef struct _LpFormWeights LpFormWeights;

#define LP_FORM_MAX_PARAMS 6

/* A weight's form in backend memory, for compute graphs: uploaded once
 * (lp_form_weights_new) and used by every graph that multiplies by it.
 * params are the form's tensors on the backend (dense: W as stored; grid:
 * codes, scales, zeros, g_idx, or its f32 values; low-rank: A, B; adapter:
 * A, B over its base's weights).  With `train`, params[0 .. n_trainable-1]
 * are marked trainable, f32 copies the optimizer may update in place (the
 * model's tensor is never written): dense and block types W as f32 (a
 * block type's decoded values are its latent weights); grid, `how` VALUES:
 * the latent f32 W [N, K] read through the grid (LP_COP_FAKE_QUANT), then
 * its f32 scales, zeros, g_idx; `how` SCALES: the f32 scales [N, G]
 * (LP_COP_DEQUANT_GRID), then the codes, zeros, g_idx; masked: its base's,
 * with keep[] for the W-shaped one; low-rank: A, B; adapter: A, B (its
 * base frozen in w->base), each uploaded for training in its own form
 * (w->parts: a factor on an integer grid trains as the grid does, so it
 * stays on it), params[0], params[1] being theirs; with LP_FORM_TRAIN_BASE
 * its base trains too, in its own form (parts[2], params[2]).  lp_cgraph_backward computes their gradients,
 * lp_form_weights_grad maps them back to the form's parameters, and
 * lp_form_weights_trained rebuilds the tensor from them. */
struct _LpFormWeights {
  /*< public, read-only >*/
  LpTensor *src;              /* the tensor uploaded (ref) */
  LpBackend *be;              /* borrowed: the caller keeps it alive */
  int n_params, n_trainable;
  LpCTensor *params[LP_FORM_MAX_PARAMS];
  LpCTensor *values;          /* W's values as stored in one tensor (one of params, or base's), or NULL */
  LpFormWeights *base;        /* the wrapped form's own (an adapter's base), or NULL */
  LpFormWeights *parts[3];    /* trained: sub-tensors in their own forms (an adapter's A, B, base), or NULL */
  gint64 i[2];                /* integer parameters of the form's nodes (a grid's bits and group size) */
  gsize bytes;                /* backend bytes held (borrowed host memory included) */
  /* Training: params[i]'s keep-mask, f32 0/1 of its shape, or NULL (the
   * masked form sets it; the optimizer multiplies the gradient by it, so
   * pruned entries never move). */
  LpCTensor *keep[LP_FORM_MAX_PARAMS];
  /* Training: what the form trains (read by upload when train is TRUE),
   * and whether a wrapped base trains too (LP_FORM_TRAIN_BASE given). */
  LpFormTrain how;
  gboolean train_base;
  /*< private >*/
  gboolean borrowed[LP_FORM_MAX_PARAMS]; /* params[i] wraps src's host memory (the CPU) */
  gboolean shared[LP_FORM_MAX_PARAMS];   /* params[i] is one of parts[]' (freed with it) */
};

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
  /* Upload t's form into w (w->src, w->be set; params empty), marking the
   * trainable parameters when `train`. */
  gboolean (*upload) (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train, GError **error);
  /* Record y[T, N] = x[T, K] W^T (+ acc[T, N]) in g; the result, or NULL
   * with the error. */
  LpCTensor *(*matmul) (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc,
                        GError **error);
  /* The gradient of trainable parameter i (grad, host f32 of its shape) as
   * the form's parameter takes it; NULL method: as it is. */
  void (*map_grad) (const LpForm *form, const LpFormWeights *w, int i, float *grad);
  /* The tensors written for t: its parts (class->parts, in that order,
   * named <t->name><suffix>) or t itself. */
  GPtrArray *(*save_tensors) (const LpForm *form, LpTensor *t, GError **error);
  /* Keys a reader needs to rebuild the form, into a file's metadata. */
  void (*save_meta) (const LpForm *form, const LpTensor *t, LpMeta *meta);
  /* After training: a new tensor of this form holding w's trained
   * parameters (read back from the backend), on the same mask and grid (a
   * grid's latent values rounded onto it; scales stored as the grid stores
   * them).  A block type's latent values come back as an f32 tensor in
   * the same form otherwise: the trainer converts it to t's type, since
   * quantizers sit above model/.  NULL method: the values form's
   * (lp_form_values_trained). */
  LpTensor *(*trained) (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error);
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
/* A tensor sharing t's name and data with `form` (ref taken; NULL: the dense or block form). */
LpTensor *lp_tensor_with_form (LpTensor *t, LpForm *form);
/* Rows r0 .. r0 + n - 1 of t as f32 (out[n, K]), computed by its form. */
gboolean lp_tensor_materialize_rows (const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error);
/* A form held as its stored values (t->data in t->dtype), as the dense and
 * block forms are: its rows and its bytes. */
gboolean lp_form_values_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out,
                              GError **error);
guint64 lp_form_values_bytes (const LpForm *form, const LpTensor *t);
/* ... uploaded as stored (as f32 latent weights when trained and quantized), one trainable parameter ... */
gboolean lp_form_values_upload (const LpForm *form, const LpTensor *t, LpFormWeights *w, gboolean train,
                                GError **error);
/* ... trained: rebuilt from parameter 0 (f32 [t's shape]) in t's dtype
 * (f16 / bf16 rounded to nearest), or, for a block type, as f32 latent
 * values without a form (the trainer quantizes them to t->dtype: the
 * quantizers sit above model/) ... */
LpTensor *lp_form_values_trained (const LpForm *form, LpTensor *t, const LpFormWeights *w, GError **error);
/* ... and multiplied by one LP_COP_MATMUL node over them. */
LpCTensor *lp_form_values_matmul (const LpForm *form, const LpFormWeights *w, LpCGraph *g, LpCTensor *x,
                                  LpCTensor *acc, GError **error);
/* Bits per weight of t's form: storage bytes * 8 / elements. */
double lp_tensor_bits_per_weight (const LpTensor *t);

/* ---- graphs ---- */
/* t's form uploaded to be (see LpFormWeights). */
LpFormWeights *lp_form_weights_new (LpTensor *t, LpBackend *be, gboolean train, GError **error);
/* t's values alone, whatever its form (a norm, a bias, an embedding table):
 * as stored (f32 when they are not a type the kernels decode, or with
 * as_stored FALSE) in w->values; no product, nothing trainable. */
LpFormWeights *lp_form_weights_new_values (LpTensor *t, LpBackend *be, gboolean as_stored, GError **error);
/* The same, for training with `how` (lp_form_weights_new with train TRUE is `how` VALUES). */
LpFormWeights *lp_form_weights_new_train (LpTensor *t, LpBackend *be, LpFormTrain how, GError **error);
/* After training: t rebuilt from w's trained parameters (the form's trained method). */
LpTensor *lp_form_weights_trained (const LpFormWeights *w, GError **error);
void lp_form_weights_free (LpFormWeights *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpFormWeights, lp_form_weights_free)
/* Record y[T, N] = x[T, K] W^T (+ acc) in g: the form's nodes. */
LpCTensor *lp_form_weights_matmul (const LpFormWeights *w, LpCGraph *g, LpCTensor *x, LpCTensor *acc,
                                   GError **error);
/* After lp_cgraph_backward: trainable parameter i's gradient in host f32
 * (out holds its elements), as the form's parameter takes it (masked:
 * zero where pruned).  FALSE when the graph holds none. */
gboolean lp_form_weights_grad (const LpFormWeights *w, LpCGraph *g, int i, float *out, GError **error);
/* For a form's upload: t's values as a parameter of w, as stored (f32 or a
 * type the kernels decode) or as f32 (as_stored FALSE, or a type they do
 * not); on the CPU an f32 or stored tensor wraps t's memory. */
LpCTensor *lp_form_weights_add_values (LpFormWeights *w, const LpTensor *t, gboolean as_stored, GError **error);
/* For a form's upload with train: t's values as a new f32 parameter of w,
 * a copy (the optimizer updates it in place, never t). */
LpCTensor *lp_form_weights_add_trainable (LpFormWeights *w, const LpTensor *t, GError **error);
/* For a form's upload with train: `part` (a tensor of the form's, say an
 * adapter's factor) uploaded for training in its own form, as w's next
 * part; its trainable parameters become w's next parameters (shared, not
 * copied: the optimizer's updates are the part's).  Returns the part. */
LpFormWeights *lp_form_weights_add_part (LpFormWeights *w, LpTensor *part, GError **error);
/* For a form's trained: parameter i of w (f32, as many elements as
 * `like`) read back as a new f32 tensor of like's name and shape. */
LpTensor *lp_form_weights_read_param (const LpFormWeights *w, int i, const LpTensor *like, GError **error);
/* For a form's upload: a new parameter of w, of `dtype` and `shape`, holding `data`. */
LpCTensor *lp_form_weights_add (LpFormWeights *w, LpDType dtype, int n_dims, const gint64 *shape, const void *data,
                                GError **error);
/* For a form's matmul: one LP_COP_MATMUL node, y = x W^T (+ acc). */
LpCTensor *lp_form_matmul_node (LpCGraph *g, LpCTensor *x, LpCTensor *W, LpCTensor *acc, GError **error);

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
/* t's keep-mask as a tensor of its own, <name>.keep_mask (i8, the bytes
 * of lp_tensor_mask), which a reader makes t's mask again: what the
 * artifact cache writes beside t.  NULL when t has no mask. */
LpTensor *lp_tensor_mask_part (const LpTensor *t);
/* A masked form over base (NULL: the dense or block form of t's dtype). */
LpForm *lp_form_masked_new (LpForm *base, GBytes *mask);

/* ---- integer grids (the grid form) ---- */
/* An f32 tensor of shape {rows, cols} holding the grid's weights, with the
 * grid's form (ref taken on grid) and `mask` (may be NULL). */
LpTensor *lp_tensor_new_int_grid (const char *name, int n_dims, const gint64 *shape, LpIntGrid *grid,
                                  GBytes *mask, GError **error);
/* The integer grid t's values lie on, or NULL (borrowed). */
const LpIntGrid *lp_tensor_int_grid (const LpTensor *t);
/* t's integer grid as the tensors that hold it exactly, <name>.grid_codes
 * (i8 [R, C]), .grid_scales (f16 [R, G]), .grid_zeros (i8 [R, G]),
 * .grid_gidx (i32 [C]), with its keys (llmpress.grid.<name>.bits, .group,
 * .symmetric) put into meta: what the artifact cache writes, so
 * that a reader rebuilds the grid, not only its values.  NULL when t has
 * no grid or its values are not exactly the grid's (a mask over it). */
GPtrArray *lp_tensor_grid_parts (const LpTensor *t, LpMeta *meta);
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

/* ---- learned codebooks (form_codebook.c) ----
 * W [N, K] = levels[r, k / group, code (r, k)]: each group of `group`
 * inputs of a row (group divides K) has its own 2^bits f16 levels.  codes
 * [N, K] one byte each (below 2^bits), levels [N, K / group, 2^bits] f16
 * bits.  Held and written packed: <name>.cb_codes (i8 [N, ceil (K bits / 8)],
 * bits LSB first) and <name>.cb_levels (f16 [N, K / group * 2^bits]), with
 * llmpress.form.<name> = "codebook", .bits and .group in the metadata. */
LpTensor *lp_tensor_new_codebook (const char *name, gint64 rows, gint64 cols, int bits, int group,
                                  const guint8 *codes, const guint16 *levels, GError **error);
/* t's bits and group, FALSE when t is not in the codebook form. */
gboolean lp_tensor_codebook_info (const LpTensor *t, int *bits, int *group);

/* ---- base + adapter (form_adapter.c) ----
 * W = base + scale B A with A [R, K], B [N, R] (LoRA's lora_A, lora_B).
 * Written as the base's tensors plus <name>.lora_a and <name>.lora_b, with
 * llmpress.form.<name> = "adapter" and llmpress.form.<name>.scale. */
LpTensor *lp_tensor_new_adapter (LpTensor *base, LpTensor *a, LpTensor *b, double scale, GError **error);
/* t's base (its own form), A [R, K], B [N, R] (borrowed) and scale; FALSE
 * when t is not an adapter (any out pointer may be NULL). */
gboolean lp_tensor_adapter_parts (const LpTensor *t, LpTensor **base, LpTensor **a, LpTensor **b, double *scale);
/* An adapter folded into one dense tensor of t's name: base + scale B A, in
 * the base's type when it is plain f32/f16/bf16 (*dequantized FALSE), else
 * f32 (*dequantized TRUE: a quantized or grid base is not re-quantized). */
LpTensor *lp_tensor_adapter_merged (LpTensor *t, gboolean *dequantized, GError **error);

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
