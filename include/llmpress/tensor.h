/* llmpress — a named n-dimensional tensor.
 *
 * Shapes are row-major as in numpy / safetensors: shape[0] is the outermost
 * dimension and shape[n_dims-1] is contiguous.  A linear weight of a layer
 * mapping D inputs to F outputs has shape {F, D}.  (GGUF writes the same data
 * with ne[0] = D, ne[1] = F: the readers and writers reverse the order.)
 *
 * The data is a GBytes: either owned memory or a slice of a mapped file, so
 * loading a model never copies its weights.  Tensors are refcounted. */
#pragma once

#include <glib.h>
#include <llmpress/dtype.h>

G_BEGIN_DECLS

#define LP_MAX_DIMS 4

typedef struct _LpTensor LpTensor;

struct _LpTensor {
  /*< private >*/
  gint ref_count;
  /*< public, read-only >*/
  char *name;
  LpDType dtype;
  int n_dims;
  gint64 shape[LP_MAX_DIMS];
  GBytes *data;
  /* Optional keep-mask of a pruned tensor: one bit per element, row-major,
   * bit (i % 8) of byte (i / 8); a 0 bit marks a pruned element, which is 0
   * in `data` (and must stay 0 through later passes).  NULL: dense. */
  GBytes *mask;
};

/* Check a shape (1..4 dims, each >= 0, element count and byte size not
 * overflowing, innermost dim a multiple of the block size) and return the
 * byte size.  `what` names the tensor in the message. */
gboolean lp_tensor_shape_bytes (const char *what, LpDType dtype, int n_dims, const gint64 *shape,
                                guint64 *out_bytes, GError **error);

/* New zero-filled tensor. */
LpTensor *lp_tensor_new (const char *name, LpDType dtype, int n_dims, const gint64 *shape,
                         GError **error);
/* Wrap existing bytes (ref taken); fails if the byte count does not match. */
LpTensor *lp_tensor_new_from_bytes (const char *name, LpDType dtype, int n_dims,
                                    const gint64 *shape, GBytes *data, GError **error);
/* New f32 tensor holding a copy of `values` (n = product of shape). */
LpTensor *lp_tensor_new_f32 (const char *name, int n_dims, const gint64 *shape,
                             const float *values, GError **error);

LpTensor *lp_tensor_ref (LpTensor *t);
void lp_tensor_unref (LpTensor *t);

gint64 lp_tensor_n_elements (const LpTensor *t);
gsize lp_tensor_n_bytes (const LpTensor *t);
/* Elements in one row (the innermost dimension) and number of rows. */
gint64 lp_tensor_row_length (const LpTensor *t);
gint64 lp_tensor_n_rows (const LpTensor *t);
const void *lp_tensor_data (const LpTensor *t);
/* Writable data: only valid for tensors made by lp_tensor_new*() and not shared. */
void *lp_tensor_data_mut (LpTensor *t);

/* Dense f32 copy of the values (dequantizing if needed); g_free() it. */
float *lp_tensor_dup_f32 (const LpTensor *t, GError **error);
/* The same values in another type (f32/f16/bf16 targets); a ref of t if equal. */
LpTensor *lp_tensor_convert (LpTensor *t, LpDType dtype, GError **error);
/* Copy with a new name (data shared). */
LpTensor *lp_tensor_rename (LpTensor *t, const char *name);

/* A tensor sharing t's data, with `mask` (ref taken; NULL clears it).
 * Fails when the mask's size is not ceil(n_elements / 8) bytes. */
LpTensor *lp_tensor_with_mask (LpTensor *t, GBytes *mask, GError **error);
/* Whether element i is kept (TRUE for a tensor without a mask). */
gboolean lp_tensor_mask_keeps (const LpTensor *t, gint64 i);
/* Fraction of pruned elements: by the mask, or 0 without one. */
double lp_tensor_sparsity (const LpTensor *t);
/* A keep-mask for n values: kept where the value is non-zero. */
GBytes *lp_mask_from_nonzero (const float *values, gint64 n);

/* "64x512" style, outermost first. g_free() it. */
char *lp_tensor_shape_string (const LpTensor *t);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpTensor, lp_tensor_unref)

G_END_DECLS
