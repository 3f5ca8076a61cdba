/* llmpress — GGUF reader (versions 2 and 3, little-endian), as llama.cpp
 * and gguf-py write it (layout in gguf-format.h).
 *
 * The file is mapped and every tensor is a slice of the mapping, so loading
 * copies no weights.  Every structural fact is checked before it is used;
 * the message names the file, the byte offset and the key or tensor. */
#include "config.h"

#include <string.h>

#include "gguf-format.h"
#include "formats-internal.h"

/* Nested arrays deeper than this are refused (the stack, not the spec, sets
 * the limit: llama.cpp itself never writes nesting beyond one level). */
#define GGUF_MAX_DEPTH 8

typedef struct {
  char *name;
  LpDType dtype;
  int n_dims;
  gint64 shape[LP_MAX_DIMS]; /* row-major: shape[0] = ne[n_dims-1] */
  guint64 offset;            /* from the start of the data section */
  guint64 n_bytes;
} GgufTensorInfo;

typedef struct {
  LpByteReader r;
  LpMeta *meta;      /* filled, borrowed */
  GArray *tensors;   /* GgufTensorInfo */
  guint64 data_start;
} GgufParse;

static void
tensor_info_clear (gpointer p)
{
  g_free (((GgufTensorInfo *) p)->name);
}

/* "what" or "what[index]" for messages about array elements. */
static char *
describe (const char *what, gint64 index)
{
  return index < 0 ? g_strdup (what) : g_strdup_printf ("%s[%" G_GINT64_FORMAT "]", what, index);
}

/* A GGUF string: u64 length + UTF-8 bytes. */
static gboolean
read_string (LpByteReader *r, const char *what, gint64 index, char **out, GError **error)
{
  gsize at = r->off;
  guint64 len;
  if (!lp_byte_reader_u64 (r, &len, what, error))
    return FALSE;
  gsize left = r->size - r->off;
  if (len > left)
    {
      g_autofree char *w = describe (what, index);
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: offset %" G_GSIZE_FORMAT ": %s: expected a string length of at most %" G_GSIZE_FORMAT " (the rest of the file), found %" G_GUINT64_FORMAT,
                    r->path, at, w, left, len);
      return FALSE;
    }
  const guint8 *p;
  lp_byte_reader_bytes (r, len, &p, what, NULL);
  const char *end;
  if (!g_utf8_validate_len ((const char *) p, len, &end))
    {
      g_autofree char *w = describe (what, index);
      guint8 bad = *(const guint8 *) end;
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: offset %" G_GSIZE_FORMAT ": %s: expected a UTF-8 string, found %s byte 0x%02x at offset %" G_GSIZE_FORMAT,
                    r->path, at, w, bad == 0 ? "a NUL" : "an invalid", bad,
                    (gsize) ((const guint8 *) end - r->base));
      return FALSE;
    }
  *out = g_strndup ((const char *) p, len);
  return TRUE;
}

/* Smallest encoding of one array element of `type`: bounds an element
 * count by what the rest of the file can hold. */
static gsize
min_encoded_size (LpValueType type)
{
  switch (type)
    {
    case LP_VALUE_STRING: return 8;     /* u64 length */
    case LP_VALUE_ARRAY: return 4 + 8;  /* u32 type + u64 count */
    default: return lp_value_elem_size (type);
    }
}

static gboolean
check_value_type (LpByteReader *r, gsize at, guint32 type, const char *what, GError **error)
{
  if (type < LP_VALUE_COUNT)
    return TRUE;
  lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected a value type 0..%d, found %u",
                r->path, at, what, LP_VALUE_COUNT - 1, type);
  return FALSE;
}

/* Decode one little-endian scalar of `type` at p into v. */
static gboolean
decode_scalar (LpValueType type, const guint8 *p, LpValue *v)
{
  switch (type)
    {
    case LP_VALUE_U8: v->u = p[0]; break;
    case LP_VALUE_I8: v->i = (gint8) p[0]; break;
    case LP_VALUE_BOOL: v->u = p[0]; return p[0] <= 1;
    case LP_VALUE_U16: { guint16 x; memcpy (&x, p, 2); v->u = GUINT16_FROM_LE (x); break; }
    case LP_VALUE_I16: { gint16 x; memcpy (&x, p, 2); v->i = GINT16_FROM_LE (x); break; }
    case LP_VALUE_U32: { guint32 x; memcpy (&x, p, 4); v->u = GUINT32_FROM_LE (x); break; }
    case LP_VALUE_I32: { gint32 x; memcpy (&x, p, 4); v->i = GINT32_FROM_LE (x); break; }
    case LP_VALUE_U64: { guint64 x; memcpy (&x, p, 8); v->u = GUINT64_FROM_LE (x); break; }
    case LP_VALUE_I64: { gint64 x; memcpy (&x, p, 8); v->i = GINT64_FROM_LE (x); break; }
    case LP_VALUE_F32: { float x; memcpy (&x, p, 4); v->f = x; break; }
    case LP_VALUE_F64: { double x; memcpy (&x, p, 8); v->f = x; break; }
    default: g_assert_not_reached ();
    }
  return TRUE;
}

static gboolean
bad_bool (LpByteReader *r, gsize at, const char *what, gint64 index, guint8 found, GError **error)
{
  g_autofree char *w = describe (what, index);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected a bool (0 or 1), found %u",
                r->path, at, w, found);
  return FALSE;
}

static LpValue *read_array (LpByteReader *r, const char *what, gint64 index, int depth, GError **error);

/* The value of a key (or an array element) whose type is already read. */
static LpValue *
read_value (LpByteReader *r, LpValueType type, const char *what, int depth, GError **error)
{
  if (type == LP_VALUE_ARRAY)
    return read_array (r, what, -1, depth, error);
  LpValue *v = g_new0 (LpValue, 1);
  v->type = type;
  gsize at = r->off;
  if (type == LP_VALUE_STRING)
    {
      if (read_string (r, what, -1, &v->s, error))
        return v;
    }
  else
    {
      const guint8 *p;
      if (lp_byte_reader_bytes (r, lp_value_elem_size (type), &p, what, error))
        {
          if (decode_scalar (type, p, v))
            return v;
          bad_bool (r, at, what, -1, p[0], error);
        }
    }
  lp_value_free (v);
  return NULL;
}

/* u32 element type, u64 count, elements. */
static LpValue *
read_array (LpByteReader *r, const char *what, gint64 index, int depth, GError **error)
{
  gsize type_at = r->off;
  guint32 et;
  if (!lp_byte_reader_u32 (r, &et, what, error))
    return NULL;
  g_autofree char *w = describe (what, index);
  if (!check_value_type (r, type_at, et, w, error))
    return NULL;
  gsize count_at = r->off;
  guint64 n;
  if (!lp_byte_reader_u64 (r, &n, what, error))
    return NULL;
  guint64 most = (r->size - r->off) / min_encoded_size (et);
  if (n > most)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: offset %" G_GSIZE_FORMAT ": %s: array of %s: expected at most %" G_GUINT64_FORMAT " elements (what the rest of the file holds), found %" G_GUINT64_FORMAT,
                    r->path, count_at, w, lp_value_type_name (et), most, n);
      return NULL;
    }
  if (et == LP_VALUE_ARRAY && depth >= GGUF_MAX_DEPTH)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected arrays nested at most %d deep, found deeper",
                    r->path, type_at, w, GGUF_MAX_DEPTH);
      return NULL;
    }
  LpValue *v = g_new0 (LpValue, 1);
  v->type = LP_VALUE_ARRAY;
  v->elem_type = et;
  v->n_elems = n;
  gsize es = lp_value_elem_size (et);
  v->array = g_malloc0_n (MAX (n, 1), es);
  if (et == LP_VALUE_STRING)
    {
      for (guint64 i = 0; i < n; i++)
        if (!read_string (r, w, (gint64) i, &((char **) v->array)[i], error))
          goto fail;
    }
  else if (et == LP_VALUE_ARRAY)
    {
      for (guint64 i = 0; i < n; i++)
        if ((((LpValue **) v->array)[i] = read_array (r, w, (gint64) i, depth + 1, error)) == NULL)
          goto fail;
    }
  else
    {
      const guint8 *p;
      gsize at = r->off;
      lp_byte_reader_bytes (r, n * es, &p, what, NULL); /* fits: checked against `most` */
      if (et == LP_VALUE_BOOL)
        for (guint64 i = 0; i < n; i++)
          if (p[i] > 1)
            {
              bad_bool (r, at + i, w, (gint64) i, p[i], error);
              goto fail;
            }
      /* Packed little-endian elements are the array's in-memory layout. */
      G_STATIC_ASSERT (G_BYTE_ORDER == G_LITTLE_ENDIAN);
      memcpy (v->array, p, n * es);
    }
  return v;

fail:
  lp_value_free (v);
  return NULL;
}

static gboolean
read_header (GgufParse *g, guint64 *n_tensors, guint64 *n_kv, GError **error)
{
  LpByteReader *r = &g->r;
  if (r->size < 4 || memcmp (r->base, LP_GGUF_MAGIC, 4) != 0)
    {
      GString *found = g_string_new (NULL);
      for (gsize i = 0; i < MIN (r->size, 4); i++)
        if (g_ascii_isprint (r->base[i]) && r->base[i] != '"' && r->base[i] != '\\')
          g_string_append_c (found, (char) r->base[i]);
        else
          g_string_append_printf (found, "\\x%02x", r->base[i]);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset 0: expected magic \"GGUF\", found \"%s\"%s",
                    r->path, found->str, r->size < 4 ? " (file too short)" : "");
      g_string_free (found, TRUE);
      return FALSE;
    }
  r->off = 4;
  guint32 version;
  if (!lp_byte_reader_u32 (r, &version, "version", error))
    return FALSE;
  guint32 swapped = GUINT32_SWAP_LE_BE (version);
  if (version != 2 && version != 3)
    {
      if (version == 1)
        lp_set_error (error, LP_ERROR_UNSUPPORTED,
                      "%s: offset 4: version: expected 2 or 3, found 1 (GGUF v1 is obsolete: convert the model again with a current llama.cpp)",
                      r->path);
      else if (swapped >= 1 && swapped <= 3)
        lp_set_error (error, LP_ERROR_UNSUPPORTED,
                      "%s: offset 4: version: expected 2 or 3 little-endian, found %u big-endian (big-endian GGUF files are not supported)",
                      r->path, swapped);
      else
        lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: offset 4: version: expected 2 or 3, found %u",
                      r->path, version);
      return FALSE;
    }
  if (!lp_byte_reader_u64 (r, n_tensors, "tensor count", error)
      || !lp_byte_reader_u64 (r, n_kv, "key/value count", error))
    return FALSE;
  /* Smallest tensor info: empty name (8), n_dims (4), one ne (8), type (4), offset (8). */
  guint64 left = r->size - r->off;
  struct { const char *what; guint64 n; guint64 min; gsize at; } counts[] = {
    { "tensor count", *n_tensors, 8 + 4 + 8 + 4 + 8, 8 },
    { "key/value count", *n_kv, 8 + 4 + 1, 16 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (counts); i++)
    if (counts[i].n > left / counts[i].min)
      {
        lp_set_error (error, LP_ERROR_FORMAT,
                      "%s: offset %" G_GSIZE_FORMAT ": %s: expected at most %" G_GUINT64_FORMAT " (what the file can hold), found %" G_GUINT64_FORMAT,
                      r->path, counts[i].at, counts[i].what, left / counts[i].min, counts[i].n);
        return FALSE;
      }
  return TRUE;
}

static gboolean
read_kvs (GgufParse *g, guint64 n_kv, GError **error)
{
  LpByteReader *r = &g->r;
  for (guint64 i = 0; i < n_kv; i++)
    {
      gsize key_at = r->off;
      g_autofree char *key_what = g_strdup_printf ("key #%" G_GUINT64_FORMAT " name", i);
      g_autofree char *key = NULL;
      if (!read_string (r, key_what, -1, &key, error))
        return FALSE;
      g_autofree char *what = g_strdup_printf ("key %s", key);
      if (lp_meta_has (g->meta, key))
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected each key once, found it again",
                        r->path, key_at, what);
          return FALSE;
        }
      gsize type_at = r->off;
      guint32 type;
      if (!lp_byte_reader_u32 (r, &type, what, error) || !check_value_type (r, type_at, type, what, error))
        return FALSE;
      LpValue *v = read_value (r, (LpValueType) type, what, 0, error);
      if (v == NULL)
        return FALSE;
      lp_meta_set (g->meta, key, v);
    }
  return TRUE;
}

static gboolean
read_alignment (GgufParse *g, guint64 *alignment, GError **error)
{
  *alignment = LP_GGUF_DEFAULT_ALIGNMENT;
  const LpValue *v = lp_meta_get (g->meta, "general.alignment");
  if (v == NULL)
    return TRUE;
  gint64 a = 0;
  if (lp_meta_get_int (g->meta, "general.alignment", &a, NULL) && a > 0 && a <= (1 << 30) && (a & (a - 1)) == 0)
    {
      *alignment = (guint64) a;
      return TRUE;
    }
  g_autofree char *found = lp_value_to_string (v, 4);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: key general.alignment: expected a power of two up to 2^30, found %s %s",
                g->r.path, lp_value_type_name (v->type), found);
  return FALSE;
}

static gboolean
read_tensor_info (GgufParse *g, guint64 i, guint64 alignment, GHashTable *seen, GError **error)
{
  LpByteReader *r = &g->r;
  GgufTensorInfo ti = { 0 };
  gsize name_at = r->off;
  g_autofree char *name_what = g_strdup_printf ("tensor #%" G_GUINT64_FORMAT " name", i);
  if (!read_string (r, name_what, -1, &ti.name, error))
    return FALSE;
  g_array_append_val (g->tensors, ti); /* owns the name from here */
  g_autofree char *what = g_strdup_printf ("tensor %s", ti.name);
  if (g_hash_table_contains (seen, ti.name))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected each tensor name once, found it again",
                    r->path, name_at, what);
      return FALSE;
    }
  g_hash_table_add (seen, ti.name);

  gsize at = r->off;
  guint32 n_dims;
  if (!lp_byte_reader_u32 (r, &n_dims, what, error))
    return FALSE;
  if (n_dims < 1 || n_dims > LP_MAX_DIMS)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected 1 to %d dimensions, found %u",
                    r->path, at, what, LP_MAX_DIMS, n_dims);
      return FALSE;
    }
  ti.n_dims = (int) n_dims;
  for (guint32 d = 0; d < n_dims; d++)
    {
      at = r->off;
      guint64 ne;
      if (!lp_byte_reader_u64 (r, &ne, what, error))
        return FALSE;
      if (ne > G_MAXINT64)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: ne[%u]: expected at most 2^63-1, found %" G_GUINT64_FORMAT " (dimensions overflow)",
                        r->path, at, what, d, ne);
          return FALSE;
        }
      ti.shape[n_dims - 1 - d] = (gint64) ne;
    }
  at = r->off;
  guint32 type;
  if (!lp_byte_reader_u32 (r, &type, what, error))
    return FALSE;
  if (lp_dtype_info ((int) type) == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: offset %" G_GSIZE_FORMAT ": %s: expected a known tensor type id, found %u",
                    r->path, at, what, type);
      return FALSE;
    }
  ti.dtype = (LpDType) type;
  GError *local = NULL;
  if (!lp_tensor_shape_bytes (ti.name, ti.dtype, ti.n_dims, ti.shape, &ti.n_bytes, &local))
    {
      GString *ne = g_string_new (NULL);
      for (int d = ti.n_dims - 1; d >= 0; d--)
        g_string_append_printf (ne, "%" G_GINT64_FORMAT "%s", ti.shape[d], d ? ", " : "");
      lp_set_error (error, local->code, "%s: offset %" G_GSIZE_FORMAT ": %s; found ne = [%s], type %s", r->path,
                    name_at, local->message, ne->str, lp_dtype_name (ti.dtype));
      g_string_free (ne, TRUE);
      g_error_free (local);
      return FALSE;
    }
  at = r->off;
  if (!lp_byte_reader_u64 (r, &ti.offset, what, error))
    return FALSE;
  if (ti.offset % alignment != 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: offset %" G_GSIZE_FORMAT ": %s: data offset: expected a multiple of the alignment %" G_GUINT64_FORMAT ", found %" G_GUINT64_FORMAT,
                    r->path, at, what, alignment, ti.offset);
      return FALSE;
    }
  g_array_index (g->tensors, GgufTensorInfo, g->tensors->len - 1) = ti;
  return TRUE;
}

static gint
compare_offsets (gconstpointer a, gconstpointer b)
{
  const GgufTensorInfo *x = *(GgufTensorInfo *const *) a, *y = *(GgufTensorInfo *const *) b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor inside the file, and no two sharing bytes. */
static gboolean
check_extents (GgufParse *g, GError **error)
{
  const char *path = g->r.path;
  guint64 size = g->r.size;
  g_autoptr (GPtrArray) order = g_ptr_array_new ();
  for (guint i = 0; i < g->tensors->len; i++)
    {
      GgufTensorInfo *t = &g_array_index (g->tensors, GgufTensorInfo, i);
      guint64 start, end;
      if (!g_uint64_checked_add (&start, g->data_start, t->offset)
          || !g_uint64_checked_add (&end, start, t->n_bytes) || end > size)
        {
          lp_set_error (error, LP_ERROR_FORMAT,
                        "%s: tensor %s: expected its %" G_GUINT64_FORMAT " bytes at data offset %" G_GUINT64_FORMAT " (file offset %" G_GUINT64_FORMAT ") within the file, found end of file at %" G_GUINT64_FORMAT,
                        path, t->name, t->n_bytes, t->offset, g->data_start + t->offset, size);
          return FALSE;
        }
      g_ptr_array_add (order, t);
    }
  g_ptr_array_sort (order, compare_offsets);
  for (guint i = 1; i < order->len; i++)
    {
      const GgufTensorInfo *a = order->pdata[i - 1], *b = order->pdata[i];
      if (a->offset + a->n_bytes > b->offset && a->n_bytes > 0 && b->n_bytes > 0)
        {
          lp_set_error (error, LP_ERROR_FORMAT,
                        "%s: tensor %s: expected data after tensor %s ends at data offset %" G_GUINT64_FORMAT ", found it at %" G_GUINT64_FORMAT " (the two overlap)",
                        path, b->name, a->name, a->offset + a->n_bytes, b->offset);
          return FALSE;
        }
    }
  return TRUE;
}

/* Header and key/values; with tensors, the tensor infos and their extents too. */
static gboolean
gguf_parse (GgufParse *g, gboolean with_tensors, GError **error)
{
  guint64 n_tensors, n_kv, alignment;
  if (!read_header (g, &n_tensors, &n_kv, error) || !read_kvs (g, n_kv, error))
    return FALSE;
  if (!with_tensors)
    return TRUE;
  if (!read_alignment (g, &alignment, error))
    return FALSE;
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint64 i = 0; i < n_tensors; i++)
    if (!read_tensor_info (g, i, alignment, seen, error))
      return FALSE;
  g->data_start = (g->r.off + alignment - 1) / alignment * alignment;
  return check_extents (g, error);
}

static void
gguf_parse_init (GgufParse *g, const char *path, GBytes *all, LpMeta *meta)
{
  memset (g, 0, sizeof *g);
  lp_byte_reader_init (&g->r, path, g_bytes_get_data (all, NULL), g_bytes_get_size (all));
  g->meta = meta;
  g->tensors = g_array_new (FALSE, TRUE, sizeof (GgufTensorInfo));
  g_array_set_clear_func (g->tensors, tensor_info_clear);
}

/* The whole file, mapped; the GBytes keeps the mapping alive, and its
 * pages can be released tensor by tensor (lp_tensor_release_pages). */
static GBytes *
map_bytes (const char *path, GError **error)
{
  return lp_map_file_bytes (path, error);
}

LpMeta *
lp_gguf_read_meta (const char *path, GError **error)
{
  g_autoptr (GBytes) all = map_bytes (path, error);
  if (all == NULL)
    return NULL;
  g_autoptr (LpMeta) meta = lp_meta_new ();
  GgufParse g;
  gguf_parse_init (&g, path, all, meta);
  gboolean ok = gguf_parse (&g, FALSE, error);
  g_array_unref (g.tensors);
  return ok ? g_steal_pointer (&meta) : NULL;
}

static const GgufTensorInfo *
find_info (const GgufParse *g, const char *name)
{
  for (guint i = 0; i < g->tensors->len; i++)
    if (strcmp (g_array_index (g->tensors, GgufTensorInfo, i).name, name) == 0)
      return &g_array_index (g->tensors, GgufTensorInfo, i);
  return NULL;
}

static LpModel *
build_model (GgufParse *g, LpModel *model, GBytes *all, GError **error)
{
  const char *path = g->r.path;
  LpModelConfig c;
  if (!lp_model_config_from_meta (&c, g->meta, path, error))
    return NULL;
  if (c.n_vocab == 0)
    {
      /* Converters often leave <arch>.vocab_size out: the embedding says it. */
      const GgufTensorInfo *emb = find_info (g, "token_embd.weight");
      if (emb == NULL || emb->n_dims != 2)
        {
          lp_set_error (error, LP_ERROR_MISSING,
                        "%s: key %s.vocab_size: expected it, or a 2-D tensor token_embd.weight to take it from, found neither",
                        path, lp_arch_info (c.arch)->name);
          return NULL;
        }
      c.n_vocab = emb->shape[0];
    }
  if (!lp_model_config_check_gguf (&c, g->meta, path, error))
    return NULL;
  c.tied_embeddings = find_info (g, "output.weight") == NULL;
  *lp_model_config_mut (model) = c;
  for (guint i = 0; i < g->tensors->len; i++)
    {
      const GgufTensorInfo *ti = &g_array_index (g->tensors, GgufTensorInfo, i);
      g_autoptr (GBytes) slice = g_bytes_new_from_bytes (all, g->data_start + ti->offset, ti->n_bytes);
      g_autoptr (LpTensor) t = lp_tensor_new_from_bytes (ti->name, ti->dtype, ti->n_dims, ti->shape, slice, error);
      if (t == NULL)
        return NULL;
      lp_model_set_tensor (model, t);
    }
  lp_model_set_source (model, path, LP_FORMAT_GGUF);
  return model;
}

LpModel *
lp_gguf_load (const char *path, GError **error)
{
  g_autoptr (GBytes) all = map_bytes (path, error);
  if (all == NULL)
    return NULL;
  /* The config is only known after the key/values are read: parse straight
   * into the model's meta (no copy of big vocabularies) and set it then. */
  LpModelConfig placeholder;
  lp_model_config_init (&placeholder, LP_ARCH_LLAMA);
  g_autoptr (LpModel) model = lp_model_new (&placeholder);
  GgufParse g;
  gguf_parse_init (&g, path, all, lp_model_meta (model));
  gboolean ok = gguf_parse (&g, TRUE, error) && build_model (&g, model, all, error) != NULL;
  g_array_unref (g.tensors);
  return ok ? g_steal_pointer (&model) : NULL;
}

GPtrArray *
lp_gguf_read_tensors (const char *path, LpMeta *meta, GError **error)
{
  return lp_gguf_read_tensors_at (path, meta, NULL, error);
}

GPtrArray *
lp_gguf_read_tensors_at (const char *path, LpMeta *meta, GArray **offsets, GError **error)
{
  g_autoptr (GBytes) all = map_bytes (path, error);
  if (all == NULL)
    return NULL;
  GgufParse g;
  gguf_parse_init (&g, path, all, meta);
  GPtrArray *out = NULL;
  if (gguf_parse (&g, TRUE, error))
    {
      out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
      if (offsets != NULL)
        *offsets = g_array_sized_new (FALSE, FALSE, sizeof (guint64), g.tensors->len);
      for (guint i = 0; i < g.tensors->len; i++)
        {
          const GgufTensorInfo *ti = &g_array_index (g.tensors, GgufTensorInfo, i);
          if (offsets != NULL)
            {
              guint64 at = g.data_start + ti->offset; /* check_extents made sure it fits */
              g_array_append_val (*offsets, at);
            }
          g_autoptr (GBytes) slice = g_bytes_new_from_bytes (all, g.data_start + ti->offset, ti->n_bytes);
          LpTensor *t = lp_tensor_new_from_bytes (ti->name, ti->dtype, ti->n_dims, ti->shape, slice, error);
          if (t == NULL)
            {
              g_clear_pointer (&out, g_ptr_array_unref);
              if (offsets != NULL)
                g_clear_pointer (offsets, g_array_unref);
              break;
            }
          g_ptr_array_add (out, t);
        }
    }
  g_array_unref (g.tensors);
  return out;
}
