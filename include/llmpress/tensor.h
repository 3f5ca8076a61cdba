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

#include <math.h>
#include <glib.h>
#include <llmpress/dtype.h>

G_BEGIN_DECLS

#define LP_MAX_DIMS 4

typedef struct _LpTensor LpTensor;
typedef struct _LpIntGrid LpIntGrid;
typedef struct _LpForm LpForm;

struct _LpTensor {
  /*< private >*/
  gint ref_count;
  /*< public, read-only >*/
  char *name;
  LpDType dtype;
  int n_dims;
  gint64 shape[LP_MAX_DIMS];
  GBytes *data; /* the values in `dtype`, whatever the form (its materialization) */
  /* How the weight is held (form.h: masked, integer grid, low-rank, ...);
   * NULL: the dense or block form `dtype` says.  Ask it through
   * lp_tensor_form and the lp_tensor_* functions of form.h. */
  LpForm *form;
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

/* Done reading t for now: when its data is a slice of a read-only file
 * mapping (a loaded or spilled model), drop its resident pages (read back
 * from the file if touched again), so a pass streaming through a model
 * larger than memory does not end up holding it all.  Does nothing for
 * memory that is not file-backed. */
void lp_tensor_release_pages (LpTensor *t);

/* Dense f32 copy of the values (dequantizing if needed); g_free() it. */
float *lp_tensor_dup_f32 (const LpTensor *t, GError **error);
/* The same values in another type (f32/f16/bf16 targets); a ref of t if equal. */
LpTensor *lp_tensor_convert (LpTensor *t, LpDType dtype, GError **error);
/* Copy with a new name (data and form shared). */
LpTensor *lp_tensor_rename (LpTensor *t, const char *name);

/* ---- plain integer grid ----
 *
 * The compressed form of a tensor quantized on an integer grid of `bits`
 * bits with per-row groups of `group_size` input columns (the last group of
 * a row may be shorter when group_size does not divide the row):
 *
 *   w[r, c] = scale[r, g] * (code[r, c] - zero[r, g]),   g = g_idx[c]
 *
 * codes in [0, 2^bits - 1], integer zero points in the same range (so 0 is
 * exactly representable: a pruned weight stays 0), scales stored as f16
 * bits as GPTQ checkpoints store them.  g_idx is the group of each input
 * column: c / group_size, or a permutation of it after GPTQ's act-order.
 * Shapes: rows R (outputs), cols C (inputs), groups G per row. */
struct _LpIntGrid {
  /*< private >*/
  gint ref_count;
  /*< public >*/
  int bits;           /* 2..8 */
  int group_size;     /* columns per group */
  gboolean symmetric; /* zero = 2^(bits-1) everywhere */
  gint64 rows, cols;
  int n_groups;       /* G = ceil (cols / group_size) */
  guint8 *codes;      /* [R, C] one code per byte */
  guint16 *scales;    /* [R, G] f16 bits */
  guint8 *zeros;      /* [R, G] */
  gint32 *g_idx;      /* [C] */
};

/* A zeroed grid (codes, scales, zeros 0; g_idx[c] = c / group_size). */
LpIntGrid *lp_int_grid_new (gint64 rows, gint64 cols, int bits, int group_size, gboolean symmetric,
                            GError **error);
LpIntGrid *lp_int_grid_ref (LpIntGrid *grid);
void lp_int_grid_unref (LpIntGrid *grid);
/* The effective weights w[R, C]. */
void lp_int_grid_dequantize (const LpIntGrid *grid, float *out);
/* Rows r0 .. r0 + n - 1 of them: out[n, C]. */
void lp_int_grid_dequantize_rows (const LpIntGrid *grid, gint64 r0, gint64 n, float *out);
/* Scale (f16 bits) and zero of one group of the grid: the values x[rows, n]
 * (leading dim ldx) with per-column weights imp[n] (NULL: all 1), fitted as
 * lp_ref_quantize_groups (backend.h) defines: min/max, or with clip_search
 * the shrink of that range with the least weighted squared error. */
void lp_int_fit (const float *x, gint64 ldx, gint64 rows, int n, const float *imp, int bits, gboolean symmetric,
                 gboolean clip_search, guint16 *scale, guint8 *zero);
/* The code of x on (scale, zero) before clamping to the grid's range
 * (what a straight-through estimator asks: was x inside the grid?). */
static inline int
lp_int_round (float scale, int zero, float x)
{
  float v = scale > 0 ? x / scale : 0.f;
  return (int) nearbyintf (v > 1e6f ? 1e6f : v < -1e6f ? -1e6f : v) + zero;
}
/* The code of x on (scale, zero) (maxq = 2^bits - 1) and its value. */
static inline float
lp_int_quantize (float scale, int zero, int maxq, float x, guint8 *code)
{
  int c = lp_int_round (scale, zero, x);
  c = c < 0 ? 0 : c > maxq ? maxq : c;
  *code = (guint8) c;
  return scale * (float) (c - zero);
}
/* Bytes the grid takes packed (codes and zeros at `bits` bits, f16 scales,
 * and an int32 g_idx when it is not the plain c / group_size: as
 * compressed-tensors stores it, which writes g_idx only after act-order; a
 * plain one is implied by the group size). */
guint64 lp_int_grid_n_bytes (const LpIntGrid *grid);
/* Whether g_idx is the plain c / group_size (no act-order): implied by the
 * group size, so formats need not store it. */
gboolean lp_int_grid_plain_g_idx (const LpIntGrid *grid);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpIntGrid, lp_int_grid_unref)

/* "64x512" style, outermost first. g_free() it. */
char *lp_tensor_shape_string (const LpTensor *t);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpTensor, lp_tensor_unref)

G_END_DECLS
