/* llmpress — .safetensors files (Hugging Face's tensor container).
 *
 * Layout: a u64 little-endian header length N, N bytes of UTF-8 JSON
 *   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [...],
 *    "data_offsets": [begin, end]}, ...}
 * then the data; offsets count from the first byte after the header.
 * Reading maps the file: tensors are slices of the mapping, never copies. */
#pragma once

#include <glib.h>
#include <llmpress/tensor.h>

G_BEGIN_DECLS

typedef struct _LpSafetensors LpSafetensors;

/* Map and check a file: every entry's dtype, shape and byte range (in range,
 * size matching shape x dtype, no two tensors overlapping). */
LpSafetensors *lp_safetensors_open (const char *path, GError **error);
void lp_safetensors_free (LpSafetensors *st);

const char *lp_safetensors_path (const LpSafetensors *st);
/* Tensors named as in the file, in data-offset order (borrowed). */
guint lp_safetensors_n_tensors (const LpSafetensors *st);
LpTensor *lp_safetensors_tensor_at (const LpSafetensors *st, guint i);
LpTensor *lp_safetensors_tensor (const LpSafetensors *st, const char *name); /* NULL if absent */
/* The __metadata__ map, str -> str (borrowed; empty when the file has none). */
GHashTable *lp_safetensors_metadata (const LpSafetensors *st);

/* safetensors dtype name ("F32", "BF16", ...) of an LpDType, NULL when the
 * format has none (quantized types); and back (FALSE when not one we read). */
const char *lp_safetensors_dtype_name (LpDType dtype);
gboolean lp_safetensors_dtype_from_name (const char *name, LpDType *out);

/* Write n tensors (in this order, under their names) atomically.  `metadata`
 * (str -> str, may be NULL) becomes __metadata__, with "format": "pt" added
 * unless it has a "format" key.  The header is padded with spaces to a
 * multiple of 8 bytes, as the reference implementation does. */
gboolean lp_safetensors_write (const char *path, LpTensor *const *tensors, guint n,
                               GHashTable *metadata, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpSafetensors, lp_safetensors_free)

G_END_DECLS
