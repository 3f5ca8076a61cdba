/* llmpress — the codebook form (weight sharing): W [N, K] with each group
 * of `group` inputs of a row drawing its values from its own 2^bits levels,
 * W[r, k] = levels[r, k / group, code (r, k)] (form.h); what
 * quantize.codebook's learned (k-means) codebooks produce.
 *
 * Held as the codes packed `bits` per weight (LSB first, each row padded to
 * a whole byte; i8 [N, ceil (K bits / 8)]) and the levels as f16
 * [N, K / group * 2^bits]: N K bits / 8 + 2 N (K / group) 2^bits bytes.
 * Materialize: each code looked up in its group's levels (the tensor's data
 * holds W in f32, which every kernel and backend reads).  Training trains
 * those values (a dense result: the codebook does not survive it).
 *
 * Written as <name>.cb_codes and <name>.cb_levels with llmpress.form.<name>
 * = "codebook" and llmpress.form.<name>.bits / .group in the metadata; a
 * runtime that knows no such form finds <name> missing and refuses the
 * file.  Readers rebuild the form and drop the parts. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

extern const LpFormClass lp_form_codebook_class;

typedef struct {
  LpForm parent;
  int bits, group;
  LpTensor *codes;  /* i8 [N, row_bytes] packed */
  LpTensor *levels; /* f16 [N, G * 2^bits] */
} CodebookForm;

static const LpFormPart codebook_parts[] = {
  { ".cb_codes", TRUE },
  { ".cb_levels", TRUE },
  { NULL, FALSE },
};

#define CB(form) ((const CodebookForm *) (form))

static void
codebook_finalize (LpForm *form)
{
  CodebookForm *f = (CodebookForm *) form;
  lp_tensor_unref (f->codes);
  lp_tensor_unref (f->levels);
}

/* Code k of a packed row (bits LSB first, a code may straddle two bytes). */
static int
code_at (const guint8 *row, int bits, gint64 k)
{
  gint64 bit = k * bits;
  guint v = row[bit / 8] | (bit % 8 + bits > 8 ? (guint) row[bit / 8 + 1] << 8 : 0);
  return (int) ((v >> (bit % 8)) & ((1u << bits) - 1));
}

static gsize
packed_row_bytes (gint64 cols, int bits)
{
  return (gsize) ((cols * bits + 7) / 8);
}

static gboolean
codebook_materialize_rows (const LpForm *form, const LpTensor *t, gint64 r0, gint64 n, float *out, GError **error)
{
  const CodebookForm *f = CB (form);
  gint64 K = t->shape[1], L = (gint64) 1 << f->bits, per_row = f->levels->shape[1];
  gsize rb = packed_row_bytes (K, f->bits);
  const guint8 *codes = lp_tensor_data (f->codes);
  const guint8 *levels = lp_tensor_data (f->levels);
  for (gint64 r = r0; r < r0 + n; r++)
    for (gint64 k = 0; k < K; k++)
      {
        gint64 li = r * per_row + (k / f->group) * L + code_at (codes + r * rb, f->bits, k);
        *out++ = lp_f16_to_f32 ((guint16) (levels[2 * li] | (levels[2 * li + 1] << 8)));
      }
  return TRUE;
}

static guint64
codebook_storage_bytes (const LpForm *form, const LpTensor *t)
{
  return lp_tensor_n_bytes (CB (form)->codes) + lp_tensor_n_bytes (CB (form)->levels);
}

static gboolean
codebook_is_quantized (const LpForm *form, const LpTensor *t)
{
  return TRUE;
}

static GPtrArray *
codebook_save_tensors (const LpForm *form, LpTensor *t, GError **error)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_ptr_array_add (out, lp_form_part_tensor (&lp_form_codebook_class, 0, t->name, CB (form)->codes));
  g_ptr_array_add (out, lp_form_part_tensor (&lp_form_codebook_class, 1, t->name, CB (form)->levels));
  return out;
}

static char *
sub_key (const char *name, const char *what)
{
  g_autofree char *key = lp_form_meta_key (name);
  return g_strconcat (key, ".", what, NULL);
}

static void
codebook_save_meta (const LpForm *form, const LpTensor *t, LpMeta *meta)
{
  g_autofree char *key = lp_form_meta_key (t->name);
  g_autofree char *bits = sub_key (t->name, "bits"), *group = sub_key (t->name, "group");
  lp_meta_set_string (meta, key, lp_form_codebook_class.name);
  lp_meta_set_u32 (meta, bits, (guint32) CB (form)->bits);
  lp_meta_set_u32 (meta, group, (guint32) CB (form)->group);
}

/* The tensor of the form over packed codes and levels, checked. */
static LpTensor *
codebook_new (const char *name, gint64 cols, int bits, int group, LpTensor *codes, LpTensor *levels, GError **error)
{
  gint64 rows = codes->shape[0];
  if (bits < 1 || bits > 8 || group < 1 || cols < 1 || cols % group != 0 || codes->dtype != LP_DTYPE_I8
      || levels->dtype != LP_DTYPE_F16 || codes->n_dims != 2 || levels->n_dims != 2
      || codes->shape[1] != (gint64) packed_row_bytes (cols, bits) || levels->shape[0] != rows
      || levels->shape[1] != cols / group << bits)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "tensor %s: codebook: expected i8 codes [N, ceil (K bits / 8)] and f16 levels [N, K / group "
                    "2^bits] with 1 <= bits <= 8 and group dividing K, found bits %d, group %d, K %" G_GINT64_FORMAT
                    ", codes %s, levels %s",
                    name, bits, group, cols, lp_dtype_name (codes->dtype), lp_dtype_name (levels->dtype));
      return NULL;
    }
  CodebookForm *f = lp_form_alloc (&lp_form_codebook_class, sizeof (CodebookForm));
  f->bits = bits;
  f->group = group;
  f->codes = lp_tensor_ref (codes);
  f->levels = lp_tensor_ref (levels);
  g_autoptr (LpForm) form = &f->parent;
  gint64 shape[2] = { rows, cols };
  g_autoptr (LpTensor) t = lp_tensor_new (name, LP_DTYPE_F32, 2, shape, error);
  if (t == NULL)
    return NULL;
  codebook_materialize_rows (form, t, 0, rows, lp_tensor_data_mut (t), NULL);
  t->form = g_steal_pointer (&form);
  return g_steal_pointer (&t);
}

/* Each tensor marked codebook comes back from its parts, bits and group. */
static gboolean
codebook_restore (LpModel *model, GError **error)
{
  const char *src = lp_model_source (model) ? lp_model_source (model) : "model";
  g_autoptr (GPtrArray) names = lp_model_forms_marked (model, lp_form_codebook_class.name);
  for (guint i = 0; i < names->len; i++)
    {
      const char *name = names->pdata[i];
      g_autofree char *bits_key = sub_key (name, "bits"), *group_key = sub_key (name, "group");
      gint64 bits, group;
      LpTensor *parts[2];
      if (!lp_meta_get_int (lp_model_meta (model), bits_key, &bits, error)
          || !lp_meta_get_int (lp_model_meta (model), group_key, &group, error))
        {
          lp_error_prefix (error, src);
          return FALSE;
        }
      if (!lp_model_form_parts (model, &lp_form_codebook_class, name, parts, error))
        return FALSE;
      gint64 groups = bits >= 1 && bits <= 8 ? parts[1]->shape[1] >> bits : 0;
      g_autoptr (LpTensor) t = codebook_new (name, groups * group, (int) bits, (int) group, parts[0], parts[1], error);
      if (t == NULL)
        {
          lp_error_prefix (error, src);
          return FALSE;
        }
      lp_model_form_rebuilt (model, &lp_form_codebook_class, t);
      lp_meta_remove (lp_model_meta (model), bits_key);
      lp_meta_remove (lp_model_meta (model), group_key);
    }
  return TRUE;
}

const LpFormClass lp_form_codebook_class = {
  .name = "codebook",
  .parts = codebook_parts,
  .finalize = codebook_finalize,
  .materialize_rows = codebook_materialize_rows,
  .storage_bytes = codebook_storage_bytes,
  .is_quantized = codebook_is_quantized,
  .save_tensors = codebook_save_tensors,
  .save_meta = codebook_save_meta,
  .restore = codebook_restore,
  .upload = lp_form_values_upload,
  .matmul = lp_form_values_matmul,
};

LpTensor *
lp_tensor_new_codebook (const char *name, gint64 rows, gint64 cols, int bits, int group, const guint8 *codes,
                        const guint16 *levels, GError **error)
{
  if (bits < 1 || bits > 8 || rows < 1 || cols < 1 || group < 1 || cols % group != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "tensor %s: codebook: expected 1 <= bits <= 8 and a group dividing the %" G_GINT64_FORMAT
                    " columns, found bits %d, group %d",
                    name, cols, bits, group);
      return NULL;
    }
  gsize rb = packed_row_bytes (cols, bits);
  guint8 *packed = g_malloc0 (rb * rows);
  for (gint64 r = 0; r < rows; r++)
    for (gint64 k = 0; k < cols; k++)
      {
        gint64 bit = k * bits;
        guint v = (guint) (codes[r * cols + k] & ((1u << bits) - 1)) << (bit % 8);
        guint8 *p = packed + r * rb + bit / 8;
        p[0] |= v & 0xff;
        if (v >> 8)
          p[1] |= v >> 8;
      }
  g_autoptr (GBytes) cb = g_bytes_new_take (packed, rb * rows);
  gint64 cshape[2] = { rows, (gint64) rb }, lshape[2] = { rows, cols / group << bits };
  g_autofree char *cname = g_strconcat (name, codebook_parts[0].suffix, NULL);
  g_autofree char *lname = g_strconcat (name, codebook_parts[1].suffix, NULL);
  g_autoptr (LpTensor) ct = lp_tensor_new_from_bytes (cname, LP_DTYPE_I8, 2, cshape, cb, error);
  g_autoptr (GBytes) lb = ct ? g_bytes_new (levels, sizeof (guint16) * rows * lshape[1]) : NULL;
  g_autoptr (LpTensor) lt = ct ? lp_tensor_new_from_bytes (lname, LP_DTYPE_F16, 2, lshape, lb, error) : NULL;
  return lt ? codebook_new (name, cols, bits, group, ct, lt, error) : NULL;
}

gboolean
lp_tensor_codebook_info (const LpTensor *t, int *bits, int *group)
{
  if (t->form == NULL || t->form->klass != &lp_form_codebook_class)
    return FALSE;
  *bits = CB (t->form)->bits;
  *group = CB (t->form)->group;
  return TRUE;
}
