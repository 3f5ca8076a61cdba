/* llmpress — GGUF writer: version 3, little-endian, alignment 32, laid out
 * the way llama.cpp's gguf-py writes it (layout in gguf-format.h).
 *
 * The whole file goes through LpAtomicFile, so a failure at any point leaves
 * neither output nor temporary file. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "gguf-format.h"
#include "grid-blocks.h"
#include "lp-internal.h"

/* llama.cpp refuses tensor names of GGML_MAX_NAME (64) bytes or more. */
#define GGUF_MAX_NAME 64

/* One tensor as it will be written. */
typedef struct {
  LpTensor *src;    /* owned ref */
  LpDType dtype;    /* type written (converted from src->dtype when different) */
  guint64 n_bytes;
  guint64 offset;   /* from the start of the data section */
  LpOverflow overflow;  /* converting to f16/bf16 */
  guint64 *n_clamped;   /* counts values clamped (may be NULL) */
  const LpIntGrid *grid;       /* written as dtype's blocks (src's form holds it), or NULL */
  LpGridBlockChange *change;   /* what encoding the grid changed */
} OutTensor;

static void
out_tensor_clear (gpointer p)
{
  lp_tensor_unref (((OutTensor *) p)->src);
}

static gboolean
is_float (LpDType t)
{
  return t == LP_DTYPE_F32 || t == LP_DTYPE_F16 || t == LP_DTYPE_BF16 || t == LP_DTYPE_F64;
}

/* llama.cpp's llama_ftype for a model whose 2-D weights are mostly `t`;
 * -1 when there is none.  K-quants map to the _M mixtures llama-quantize
 * calls by that type's name. */
static int
ftype_of (LpDType t)
{
  switch (t)
    {
    case LP_DTYPE_F32: return 0;
    case LP_DTYPE_F16: return 1;
    case LP_DTYPE_Q4_0: return 2;
    case LP_DTYPE_Q4_1: return 3;
    case LP_DTYPE_Q8_0: return 7;
    case LP_DTYPE_Q5_0: return 8;
    case LP_DTYPE_Q5_1: return 9;
    case LP_DTYPE_Q2_K: return 10;
    case LP_DTYPE_Q3_K: return 12;
    case LP_DTYPE_Q4_K: return 15;
    case LP_DTYPE_Q5_K: return 17;
    case LP_DTYPE_Q6_K: return 18;
    case LP_DTYPE_IQ4_NL: return 25;
    case LP_DTYPE_BF16: return 32;
    default: return -1;
    }
}

/* llama3 RoPE frequency factors {hd/2}, computed as llama.cpp's
 * convert_hf_to_gguf.py does (in float32, as its torch tensors are), with its
 * defaults for parameters the config leaves at zero. */
static LpTensor *
llama3_rope_freqs (const LpModelConfig *c, const char *path, GError **error)
{
  float factor = c->rope_factor > 0 ? (float) c->rope_factor : 8.0f;
  float lo = c->rope_low_freq_factor > 0 ? (float) c->rope_low_freq_factor : 1.0f;
  float hi = c->rope_high_freq_factor > 0 ? (float) c->rope_high_freq_factor : 4.0f;
  float old_ctx = c->rope_orig_ctx > 0 ? (float) c->rope_orig_ctx : 8192.0f;
  float lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
  if (lo_wavelen == hi_wavelen)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: llama3 rope scaling: expected low_freq_factor != high_freq_factor, found both %g", path, lo);
      return NULL;
    }
  gint64 half = c->head_dim / 2;
  g_autofree float *f = g_new (float, half);
  for (gint64 i = 0; i < half; i++)
    {
      float freq = 1.0f / powf ((float) c->rope_theta, (float) (2 * i) / (float) c->head_dim);
      float wavelen = (float) (2 * G_PI) / freq;
      if (wavelen < hi_wavelen)
        f[i] = 1.0f;
      else if (wavelen > lo_wavelen)
        f[i] = factor;
      else
        {
          float smooth = (old_ctx / wavelen - lo) / (hi - lo);
          f[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
  return lp_tensor_new_f32 ("rope_freqs.weight", 1, &half, f, error);
}

/* Decide every tensor's output type and place it in the data section. */
static gboolean layout_tensors (GArray *out, const char *path, int dtype, GError **error);

/* How integer grids are written: as the ggml block type that holds their
 * weights (grid_blocks.c; one no block type fits keeps its f32 values),
 * as their values (an output type asked for: as every weight), or as
 * their parts, masks written too (LpSaveOptions.exact_forms: the cache). */
typedef enum { GRID_AS_BLOCKS, GRID_AS_VALUES, GRID_AS_PARTS } GridMode;

/* A grid's block type, when GRID_AS_BLOCKS.  `other` gets the name, type
 * and reason of each grid not in the smallest type. */
static void
plan_grid (OutTensor *o, GridMode mode, GString *other)
{
  const LpIntGrid *g = lp_tensor_int_grid (o->src);
  if (g == NULL || mode != GRID_AS_BLOCKS)
    return;
  const char *why = NULL;
  LpDType type = lp_grid_block_type (g, lp_tensor_mask (o->src) != NULL, &why);
  if (why != NULL)
    g_string_append_printf (other, "%s%s as %s (%s)", other->len ? ", " : "", o->src->name, lp_dtype_name (type), why);
  if (type == LP_DTYPE_F32)
    return;
  o->dtype = type;
  o->grid = g;
}

static GArray *
plan_tensors (LpModel *model, const char *path, int dtype, GridMode mode, LpMeta *grid_meta, GError **error)
{
  g_autoptr (GString) other = g_string_new (NULL);
  const LpModelConfig *c = lp_model_config (model);
  GArray *out = g_array_new (FALSE, TRUE, sizeof (OutTensor));
  g_array_set_clear_func (out, out_tensor_clear);
  if (c->rope_scaling == LP_ROPE_SCALING_LLAMA3 && lp_model_tensor (model, "rope_freqs.weight") == NULL)
    {
      LpTensor *rf = llama3_rope_freqs (c, path, error);
      if (rf == NULL)
        goto fail;
      OutTensor o = { rf, LP_DTYPE_F32, 0, 0 };
      g_array_append_val (out, o);
    }
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      /* What the tensor's form writes: its values, or its parts. */
      g_autoptr (GPtrArray) parts = lp_tensor_save_tensors (lp_model_tensor_at (model, i), error);
      if (parts == NULL)
        {
          lp_error_prefix (error, path);
          goto fail;
        }
      for (guint j = 0; j < parts->len; j++)
        {
          LpTensor *t = parts->pdata[j];
          g_autoptr (GPtrArray) exact = mode == GRID_AS_PARTS ? lp_tensor_grid_parts (t, grid_meta) : NULL;
          if (exact == NULL)
            {
              exact = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
              g_ptr_array_add (exact, lp_tensor_ref (t));
            }
          LpTensor *mask = mode == GRID_AS_PARTS ? lp_tensor_mask_part (t) : NULL;
          if (mask != NULL)
            g_ptr_array_add (exact, mask);
          for (guint k = 0; k < exact->len; k++)
            {
              LpTensor *p = exact->pdata[k];
              OutTensor o = { lp_tensor_ref (p), p->dtype, 0, 0 };
              plan_grid (&o, mode, other);
              g_array_append_val (out, o);
            }
        }
    }
  if (other->len > 0)
    lp_warn ("%s: integer grids not in their smallest ggml block type: %s", path, other->str);
  if (layout_tensors (out, path, dtype, error))
    return out;

fail:
  g_array_unref (out);
  return NULL;
}

/* Check every tensor, choose its written type and give it its aligned offset. */
static gboolean
layout_tensors (GArray *out, const char *path, int dtype, GError **error)
{
  guint64 offset = 0;
  for (guint i = 0; i < out->len; i++)
    {
      OutTensor *o = &g_array_index (out, OutTensor, i);
      LpTensor *t = o->src;
      if (strlen (t->name) >= GGUF_MAX_NAME)
        {
          lp_set_error (error, LP_ERROR_INVALID, "%s: tensor %s: expected a name shorter than %d bytes (llama.cpp's limit), found %" G_GSIZE_FORMAT,
                        path, t->name, GGUF_MAX_NAME, strlen (t->name));
          return FALSE;
        }
      if (lp_dtype_info (t->dtype) == NULL)
        {
          lp_set_error (error, LP_ERROR_INVALID, "%s: tensor %s: expected a GGUF tensor type, found unknown type id %d",
                        path, t->name, (int) t->dtype);
          return FALSE;
        }
      /* An output type converts every weight: float tensors, and ggml block
       * types dequantized (a quantized model's dense copy).  Norms and
       * biases stay f32, as llama.cpp keeps them. */
      if (dtype >= 0 && (is_float (t->dtype) || lp_dtype_info (t->dtype)->block_size > 1))
        o->dtype = t->n_dims >= 2 ? (LpDType) dtype : LP_DTYPE_F32;
      guint64 src_bytes;
      GError *local = NULL;
      if (!lp_tensor_shape_bytes (t->name, t->dtype, t->n_dims, t->shape, &src_bytes, &local)
          || !lp_tensor_shape_bytes (t->name, o->dtype, t->n_dims, t->shape, &o->n_bytes, &local))
        {
          lp_set_error (error, local->code, "%s: %s", path, local->message);
          g_error_free (local);
          return FALSE;
        }
      if (src_bytes != lp_tensor_n_bytes (t))
        {
          lp_set_error (error, LP_ERROR_INVALID, "%s: tensor %s: expected %" G_GUINT64_FORMAT " bytes for its shape and type, found %" G_GSIZE_FORMAT,
                        path, t->name, src_bytes, lp_tensor_n_bytes (t));
          return FALSE;
        }
      o->offset = offset;
      offset += (o->n_bytes + LP_GGUF_DEFAULT_ALIGNMENT - 1) / LP_GGUF_DEFAULT_ALIGNMENT * LP_GGUF_DEFAULT_ALIGNMENT;
    }
  return TRUE;
}

/* The model's meta refreshed for this file: arch keys from the config,
 * file type and quantization version from the tensors as written. */
static LpMeta *
file_meta (LpModel *model, const GArray *tensors)
{
  LpMeta *meta = lp_meta_copy (lp_model_meta (model));
  lp_model_config_to_meta (lp_model_config (model), meta);
  lp_model_forms_save_meta (model, meta);
  if (lp_meta_has (meta, "general.alignment"))
    lp_meta_set_u32 (meta, "general.alignment", LP_GGUF_DEFAULT_ALIGNMENT);

  guint counts[LP_DTYPE_COUNT] = { 0 };
  gboolean quantized = FALSE;
  for (guint i = 0; i < tensors->len; i++)
    {
      const OutTensor *o = &g_array_index (tensors, OutTensor, i);
      if (o->src->n_dims >= 2)
        counts[o->dtype]++;
      if (lp_dtype_info (o->dtype)->block_size > 1)
        quantized = TRUE;
    }
  int major = -1;
  for (int t = 0; t < LP_DTYPE_COUNT; t++)
    if (counts[t] > 0 && (major < 0 || counts[t] > counts[major]))
      major = t;
  int ftype = major >= 0 ? ftype_of ((LpDType) major) : -1;
  if (ftype >= 0)
    lp_meta_set_u32 (meta, "general.file_type", (guint32) ftype);
  else
    lp_meta_remove (meta, "general.file_type");
  if (quantized)
    lp_meta_set_u32 (meta, "general.quantization_version", 2);
  else
    lp_meta_remove (meta, "general.quantization_version");
  return meta;
}

/* Keys in llama.cpp's usual order: general.architecture, general.*,
 * <arch>.*, tokenizer.*, the rest; each group in its existing order. */
static GPtrArray *
ordered_keys (const LpMeta *meta, const char *arch)
{
  g_autofree char *arch_prefix = g_strconcat (arch, ".", NULL);
  GPtrArray *keys = g_ptr_array_new ();
  for (int group = 0; group < 5; group++)
    for (guint i = 0; i < lp_meta_n_keys (meta); i++)
      {
        const char *k = lp_meta_key (meta, i);
        int g = strcmp (k, "general.architecture") == 0 ? 0
                : g_str_has_prefix (k, "general.")     ? 1
                : g_str_has_prefix (k, arch_prefix)    ? 2
                : g_str_has_prefix (k, "tokenizer.")   ? 3
                                                       : 4;
        if (g == group)
          g_ptr_array_add (keys, (gpointer) k);
      }
  return keys;
}

static void
put_u32 (GByteArray *b, guint32 x)
{
  x = GUINT32_TO_LE (x);
  g_byte_array_append (b, (const guint8 *) &x, 4);
}

static void
put_u64 (GByteArray *b, guint64 x)
{
  x = GUINT64_TO_LE (x);
  g_byte_array_append (b, (const guint8 *) &x, 8);
}

static void
put_string (GByteArray *b, const char *s)
{
  gsize n = strlen (s);
  put_u64 (b, n);
  g_byte_array_append (b, (const guint8 *) s, n);
}

static void
put_scalar (GByteArray *b, LpValueType type, const LpValue *v)
{
  guint8 buf[8];
  switch (type)
    {
    case LP_VALUE_U8: case LP_VALUE_BOOL: buf[0] = (guint8) v->u; break;
    case LP_VALUE_I8: buf[0] = (guint8) (gint8) v->i; break;
    case LP_VALUE_U16: { guint16 x = GUINT16_TO_LE ((guint16) v->u); memcpy (buf, &x, 2); break; }
    case LP_VALUE_I16: { gint16 x = GINT16_TO_LE ((gint16) v->i); memcpy (buf, &x, 2); break; }
    case LP_VALUE_U32: { guint32 x = GUINT32_TO_LE ((guint32) v->u); memcpy (buf, &x, 4); break; }
    case LP_VALUE_I32: { gint32 x = GINT32_TO_LE ((gint32) v->i); memcpy (buf, &x, 4); break; }
    case LP_VALUE_U64: { guint64 x = GUINT64_TO_LE (v->u); memcpy (buf, &x, 8); break; }
    case LP_VALUE_I64: { gint64 x = GINT64_TO_LE (v->i); memcpy (buf, &x, 8); break; }
    case LP_VALUE_F32: { float x = (float) v->f; memcpy (buf, &x, 4); break; }
    case LP_VALUE_F64: memcpy (buf, &v->f, 8); break;
    default: g_assert_not_reached ();
    }
  g_byte_array_append (b, buf, lp_value_elem_size (type));
}

/* The value without its type tag (arrays: element type, count, elements). */
static void
put_value_body (GByteArray *b, const LpValue *v)
{
  if (v->type == LP_VALUE_STRING)
    put_string (b, v->s);
  else if (v->type != LP_VALUE_ARRAY)
    put_scalar (b, v->type, v);
  else
    {
      put_u32 (b, v->elem_type);
      put_u64 (b, v->n_elems);
      if (v->elem_type == LP_VALUE_STRING)
        for (guint64 i = 0; i < v->n_elems; i++)
          put_string (b, ((char **) v->array)[i]);
      else if (v->elem_type == LP_VALUE_ARRAY)
        for (guint64 i = 0; i < v->n_elems; i++)
          put_value_body (b, ((LpValue **) v->array)[i]);
      else
        {
          /* Packed native elements are little-endian already. */
          G_STATIC_ASSERT (G_BYTE_ORDER == G_LITTLE_ENDIAN);
          g_byte_array_append (b, v->array, v->n_elems * lp_value_elem_size (v->elem_type));
        }
    }
}

/* GGUF strings are UTF-8 (gguf-py and our reader refuse anything else):
 * never write a file that cannot be read back. */
static gboolean
check_utf8 (const char *s, const char *path, const char *key, gint64 index, GError **error)
{
  const char *end;
  if (g_utf8_validate (s, -1, &end))
    return TRUE;
  g_autofree char *where = index < 0 ? g_strdup ("") : g_strdup_printf ("[%" G_GINT64_FORMAT "]", index);
  lp_set_error (error, LP_ERROR_INVALID, "%s: key %s%s: expected a UTF-8 string, found byte 0x%02x at position %" G_GSIZE_FORMAT,
                path, key, where, (guint8) *end, (gsize) (end - s));
  return FALSE;
}

static gboolean
check_value_utf8 (const LpValue *v, const char *path, const char *key, GError **error)
{
  if (v->type == LP_VALUE_STRING)
    return check_utf8 (v->s, path, key, -1, error);
  if (v->type != LP_VALUE_ARRAY)
    return TRUE;
  for (guint64 i = 0; i < v->n_elems; i++)
    if ((v->elem_type == LP_VALUE_STRING && !check_utf8 (((char **) v->array)[i], path, key, (gint64) i, error))
        || (v->elem_type == LP_VALUE_ARRAY && !check_value_utf8 (((LpValue **) v->array)[i], path, key, error)))
      return FALSE;
  return TRUE;
}

static GByteArray *
build_header (const LpMeta *meta, const char *arch, const GArray *tensors)
{
  GByteArray *b = g_byte_array_new ();
  g_byte_array_append (b, (const guint8 *) LP_GGUF_MAGIC, 4);
  put_u32 (b, LP_GGUF_VERSION);
  put_u64 (b, tensors->len);
  put_u64 (b, lp_meta_n_keys (meta));
  g_autoptr (GPtrArray) keys = ordered_keys (meta, arch);
  for (guint i = 0; i < keys->len; i++)
    {
      const LpValue *v = lp_meta_get (meta, keys->pdata[i]);
      put_string (b, keys->pdata[i]);
      put_u32 (b, v->type);
      put_value_body (b, v);
    }
  for (guint i = 0; i < tensors->len; i++)
    {
      const OutTensor *o = &g_array_index (tensors, OutTensor, i);
      put_string (b, o->src->name);
      put_u32 (b, (guint32) o->src->n_dims);
      for (int d = o->src->n_dims - 1; d >= 0; d--)
        put_u64 (b, (guint64) o->src->shape[d]);
      put_u32 (b, o->dtype);
      put_u64 (b, o->offset);
    }
  static const guint8 zeros[LP_GGUF_DEFAULT_ALIGNMENT] = { 0 };
  g_byte_array_append (b, zeros, (LP_GGUF_DEFAULT_ALIGNMENT - b->len % LP_GGUF_DEFAULT_ALIGNMENT) % LP_GGUF_DEFAULT_ALIGNMENT);
  return b;
}

/* A grid's blocks, logged per tensor at debug level (G_MESSAGES_DEBUG). */
static guint8 *
grid_blocks (const OutTensor *o)
{
  guint8 *blocks = g_malloc (o->n_bytes);
  LpGridBlockChange c = { 0 };
  lp_grid_blocks_encode (o->grid, o->dtype, blocks, &c);
  g_debug ("%s: %s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " weights changed, by at most %.3g", o->src->name,
           lp_dtype_name (o->dtype), c.n_changed, c.n_weights, c.max_change);
  o->change->n_weights += c.n_weights;
  o->change->n_changed += c.n_changed;
  o->change->max_change = MAX (o->change->max_change, c.max_change);
  return blocks;
}

static gboolean
write_tensor (LpAtomicFile *af, const char *path, const OutTensor *o, guint64 *pos, GError **error)
{
  static const guint8 zeros[LP_GGUF_DEFAULT_ALIGNMENT] = { 0 };
  g_autofree guint8 *blocks = NULL;
  g_autoptr (LpTensor) t = NULL;
  const void *data;
  gsize n = o->n_bytes;
  if (o->grid != NULL)
    data = blocks = grid_blocks (o);
  else
    {
      /* Converted one at a time, so an f16 copy of the whole model never exists. */
      t = lp_tensor_convert_range (o->src, o->dtype, o->overflow, o->n_clamped, error);
      if (t == NULL)
        {
          lp_error_prefix (error, path);
          return FALSE;
        }
      n = lp_tensor_n_bytes (t);
      data = lp_tensor_data (t);
    }
  gsize pad = (LP_GGUF_DEFAULT_ALIGNMENT - n % LP_GGUF_DEFAULT_ALIGNMENT) % LP_GGUF_DEFAULT_ALIGNMENT;
  g_assert (*pos == o->offset && n == o->n_bytes);
  if (!lp_atomic_file_write (af, data, n, error) || !lp_atomic_file_write (af, zeros, pad, error))
    return FALSE;
  *pos += n + pad;
  return TRUE;
}

static gboolean write_file (const char *path, const LpMeta *meta, const char *arch, const GArray *tensors,
                            GError **error);

gboolean
lp_gguf_save (LpModel *model, const char *path, const LpSaveOptions *options, GError **error)
{
  int dtype = options != NULL ? options->dtype : -1;
  if (dtype >= 0 && dtype != LP_DTYPE_F32 && dtype != LP_DTYPE_F16 && dtype != LP_DTYPE_BF16)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: output type: expected f32, f16 or bf16 (quantizing is a pass), found %s",
                    path, lp_dtype_name ((LpDType) dtype));
      return FALSE;
    }
  GridMode mode = dtype >= 0 ? GRID_AS_VALUES : options != NULL && options->exact_forms ? GRID_AS_PARTS : GRID_AS_BLOCKS;
  g_autoptr (LpMeta) grid_meta = lp_meta_new ();
  g_autoptr (GArray) tensors = plan_tensors (model, path, dtype, mode, grid_meta, error);
  if (tensors == NULL)
    return FALSE;
  guint64 clamped = 0;
  LpGridBlockChange change = { 0 };
  for (guint i = 0; i < tensors->len; i++)
    {
      g_array_index (tensors, OutTensor, i).overflow = options != NULL ? options->overflow : LP_OVERFLOW_ERROR;
      g_array_index (tensors, OutTensor, i).n_clamped = &clamped;
      g_array_index (tensors, OutTensor, i).change = &change;
    }
  g_autoptr (LpMeta) meta = file_meta (model, tensors);
  for (guint i = 0; i < lp_meta_n_keys (grid_meta); i++)
    lp_meta_set (meta, lp_meta_key (grid_meta, i), lp_value_copy (lp_meta_get (grid_meta, lp_meta_key (grid_meta, i))));
  if (!write_file (path, meta, lp_arch_info (lp_model_config (model)->arch)->name, tensors, error))
    return FALSE;
  lp_warn_clamped (path, (LpDType) dtype, clamped);
  if (change.n_changed > 0)
    lp_warn ("%s: integer grids as ggml blocks: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
             " weights changed, by at most %.3g (the offset m = -scale * zero of Q4_1 / Q5_1 rounded to f16)",
             path, change.n_changed, change.n_weights, change.max_change);
  return TRUE;
}

/* Header (keys in llama.cpp's order for `arch`), then the tensors. */
static gboolean
write_file (const char *path, const LpMeta *meta, const char *arch, const GArray *tensors, GError **error)
{
  for (guint i = 0; i < lp_meta_n_keys (meta); i++)
    {
      const char *k = lp_meta_key (meta, i);
      if (!check_utf8 (k, path, k, -1, error) || !check_value_utf8 (lp_meta_get (meta, k), path, k, error))
        return FALSE;
    }
  g_autoptr (GByteArray) header = build_header (meta, arch, tensors);

  LpAtomicFile *af = lp_atomic_file_new (path, error);
  if (af == NULL)
    return FALSE;
  if (!lp_atomic_file_write (af, header->data, header->len, error))
    goto fail;
  guint64 pos = 0;
  for (guint i = 0; i < tensors->len; i++)
    {
      if (!write_tensor (af, path, &g_array_index (tensors, OutTensor, i), &pos, error))
        goto fail;
      /* Written: its mapped pages need not stay (a model larger than memory). */
      lp_tensor_release_pages (g_array_index (tensors, OutTensor, i).src);
    }
  return lp_atomic_file_commit (af, error);

fail:
  lp_atomic_file_abort (af);
  return FALSE;
}

gboolean
lp_gguf_write (const char *path, const LpMeta *meta, GPtrArray *tensors, GError **error)
{
  g_autoptr (GArray) out = g_array_new (FALSE, TRUE, sizeof (OutTensor));
  g_array_set_clear_func (out, out_tensor_clear);
  for (guint i = 0; i < tensors->len; i++)
    {
      LpTensor *t = tensors->pdata[i];
      OutTensor o = { lp_tensor_ref (t), t->dtype, 0, 0 };
      g_array_append_val (out, o);
    }
  if (!layout_tensors (out, path, -1, error))
    return FALSE;
  const char *arch = lp_meta_get_string (meta, "general.architecture");
  return write_file (path, meta, arch ? arch : "", out, error);
}
