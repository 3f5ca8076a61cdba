/* llmpress — .safetensors reading (mapped, checked) and writing. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include <llmpress/safetensors.h>

/* The reference implementation refuses headers above 100 MB: so do we, rather
 * than handing a hostile length to the JSON parser. */
#define ST_MAX_HEADER G_GUINT64_CONSTANT (100000000)

static const struct {
  const char *name;
  LpDType dtype;
} st_dtypes[] = {
  { "F64", LP_DTYPE_F64 }, { "F32", LP_DTYPE_F32 }, { "F16", LP_DTYPE_F16 },
  { "BF16", LP_DTYPE_BF16 }, { "I64", LP_DTYPE_I64 }, { "I32", LP_DTYPE_I32 },
  { "I16", LP_DTYPE_I16 }, { "I8", LP_DTYPE_I8 },
};

/* Published safetensors dtypes with no LpDType: told apart from garbage. */
static const char *const st_unsupported[] = {
  "BOOL", "U8", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
};

const char *
lp_safetensors_dtype_name (LpDType dtype)
{
  for (gsize i = 0; i < G_N_ELEMENTS (st_dtypes); i++)
    if (st_dtypes[i].dtype == dtype)
      return st_dtypes[i].name;
  return NULL;
}

gboolean
lp_safetensors_dtype_from_name (const char *name, LpDType *out)
{
  for (gsize i = 0; i < G_N_ELEMENTS (st_dtypes); i++)
    if (strcmp (st_dtypes[i].name, name) == 0)
      {
        *out = st_dtypes[i].dtype;
        return TRUE;
      }
  return FALSE;
}

static const char *
known_dtype_names (void)
{
  return "F64, F32, F16, BF16, I64, I32, I16, I8";
}

struct _LpSafetensors {
  char *path;
  GMappedFile *mf;
  GPtrArray *tensors;   /* LpTensor*, by data offset */
  GHashTable *by_name;  /* name -> LpTensor* (borrowed from tensors) */
  GHashTable *metadata; /* str -> str */
};

void
lp_safetensors_free (LpSafetensors *st)
{
  if (st == NULL)
    return;
  g_ptr_array_unref (st->tensors);
  g_hash_table_unref (st->by_name);
  g_hash_table_unref (st->metadata);
  if (st->mf != NULL)
    g_mapped_file_unref (st->mf);
  g_free (st->path);
  g_free (st);
}

const char *
lp_safetensors_path (const LpSafetensors *st)
{
  return st->path;
}

guint
lp_safetensors_n_tensors (const LpSafetensors *st)
{
  return st->tensors->len;
}

LpTensor *
lp_safetensors_tensor_at (const LpSafetensors *st, guint i)
{
  g_return_val_if_fail (i < st->tensors->len, NULL);
  return st->tensors->pdata[i];
}

LpTensor *
lp_safetensors_tensor (const LpSafetensors *st, const char *name)
{
  return g_hash_table_lookup (st->by_name, name);
}

GHashTable *
lp_safetensors_metadata (const LpSafetensors *st)
{
  return st->metadata;
}

/* A non-negative JSON integer. */
static gboolean
node_get_u64 (JsonNode *n, const char *path, const char *key, const char *what, guint64 *out, GError **error)
{
  if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_INT64 && json_node_get_int (n) >= 0)
    {
      *out = (guint64) json_node_get_int (n);
      return TRUE;
    }
  g_autofree char *found = lp_json_describe (n);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: header key \"%s\": %s: expected a non-negative integer, found %s",
                path, key, what, found);
  return FALSE;
}

typedef struct {
  LpTensor *t;
  guint64 begin, end;
} Entry;

static int
entry_cmp (gconstpointer a, gconstpointer b)
{
  const Entry *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

static JsonNode *
entry_member (JsonObject *o, const char *path, const char *key, const char *member, GError **error)
{
  JsonNode *n = json_object_get_member (o, member);
  if (n == NULL)
    lp_set_error (error, LP_ERROR_FORMAT, "%s: header key \"%s\": expected member %s, found none",
                  path, key, member);
  return n;
}

static gboolean
parse_dtype (JsonObject *o, const char *path, const char *key, LpDType *dtype, GError **error)
{
  JsonNode *n = entry_member (o, path, key, "dtype", error);
  if (n == NULL)
    return FALSE;
  const char *name = JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING
                     ? json_node_get_string (n) : NULL;
  if (name != NULL && lp_safetensors_dtype_from_name (name, dtype))
    return TRUE;
  g_autofree char *found = lp_json_describe (n);
  gboolean published = FALSE;
  for (gsize i = 0; name != NULL && i < G_N_ELEMENTS (st_unsupported); i++)
    published |= strcmp (name, st_unsupported[i]) == 0;
  lp_set_error (error, published ? LP_ERROR_UNSUPPORTED : LP_ERROR_FORMAT,
                "%s: header key \"%s\": dtype: expected one of %s, found %s%s", path, key,
                known_dtype_names (), found, published ? " (a safetensors type llmpress does not handle)" : "");
  return FALSE;
}

/* Shape and its byte size, every multiplication checked. */
static gboolean
parse_shape (JsonObject *o, const char *path, const char *key, LpDType dtype, int *n_dims,
             gint64 *shape, guint64 *bytes, GError **error)
{
  JsonNode *n = entry_member (o, path, key, "shape", error);
  if (n == NULL)
    return FALSE;
  if (!JSON_NODE_HOLDS_ARRAY (n))
    {
      g_autofree char *found = lp_json_describe (n);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: header key \"%s\": shape: expected an array of integers, found %s",
                    path, key, found);
      return FALSE;
    }
  JsonArray *a = json_node_get_array (n);
  guint len = json_array_get_length (a);
  if (len < 1 || len > LP_MAX_DIMS)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: header key \"%s\": shape: expected 1 to %d dimensions, found %u",
                    path, key, LP_MAX_DIMS, len);
      return FALSE;
    }
  guint64 count = 1;
  gboolean overflow = FALSE;
  for (guint i = 0; i < len; i++)
    {
      g_autofree char *what = g_strdup_printf ("shape[%u]", i);
      guint64 d;
      if (!node_get_u64 (json_array_get_element (a, i), path, key, what, &d, error))
        return FALSE;
      shape[i] = (gint64) d;
      overflow |= !g_uint64_checked_mul (&count, count, d);
    }
  *n_dims = (int) len;
  guint64 elem = lp_dtype_info (dtype)->type_size;
  if (overflow || !g_uint64_checked_mul (bytes, count, elem) || *bytes > G_MAXSIZE / 2)
    {
      GString *s = g_string_new (NULL);
      for (guint i = 0; i < len; i++)
        g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: header key \"%s\": shape [%s]: expected a byte size that fits in memory, found an overflow",
                    path, key, s->str);
      g_string_free (s, TRUE);
      return FALSE;
    }
  return TRUE;
}

static gboolean
parse_entry (JsonNode *node, const char *path, const char *key, GBytes *data, Entry *out, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      g_autofree char *found = lp_json_describe (node);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: header key \"%s\": expected an object with dtype, shape and data_offsets, found %s",
                    path, key, found);
      return FALSE;
    }
  JsonObject *o = json_node_get_object (node);
  LpDType dtype;
  int n_dims;
  gint64 shape[LP_MAX_DIMS];
  guint64 bytes;
  if (!parse_dtype (o, path, key, &dtype, error)
      || !parse_shape (o, path, key, dtype, &n_dims, shape, &bytes, error))
    return FALSE;

  JsonNode *off = entry_member (o, path, key, "data_offsets", error);
  if (off == NULL)
    return FALSE;
  if (!JSON_NODE_HOLDS_ARRAY (off) || json_array_get_length (json_node_get_array (off)) != 2)
    {
      g_autofree char *found = JSON_NODE_HOLDS_ARRAY (off)
                               ? g_strdup_printf ("an array of %u", json_array_get_length (json_node_get_array (off)))
                               : lp_json_describe (off);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: header key \"%s\": data_offsets: expected [begin, end], found %s",
                    path, key, found);
      return FALSE;
    }
  JsonArray *a = json_node_get_array (off);
  guint64 begin, end;
  if (!node_get_u64 (json_array_get_element (a, 0), path, key, "data_offsets[0]", &begin, error)
      || !node_get_u64 (json_array_get_element (a, 1), path, key, "data_offsets[1]", &end, error))
    return FALSE;
  gsize size = g_bytes_get_size (data);
  if (end < begin || end > size)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: header key \"%s\": data_offsets: expected begin <= end <= %" G_GSIZE_FORMAT " (the data size), found [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "]",
                    path, key, size, begin, end);
      return FALSE;
    }
  if (end - begin != bytes)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: header key \"%s\": data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "]: expected %" G_GUINT64_FORMAT " bytes (shape x %s size), found %" G_GUINT64_FORMAT,
                    path, key, begin, end, bytes, lp_safetensors_dtype_name (dtype), end - begin);
      return FALSE;
    }
  g_autoptr (GBytes) slice = g_bytes_new_from_bytes (data, begin, bytes);
  GError *local = NULL;
  out->t = lp_tensor_new_from_bytes (key, dtype, n_dims, shape, slice, &local);
  if (out->t == NULL)
    {
      lp_set_error (error, local->code, "%s: %s", path, local->message);
      g_error_free (local);
      return FALSE;
    }
  out->begin = begin;
  out->end = end;
  return TRUE;
}

static gboolean
parse_metadata (JsonNode *node, const char *path, GHashTable *out, GError **error)
{
  if (JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (JSON_NODE_HOLDS_OBJECT (node))
    {
      JsonObject *o = json_node_get_object (node);
      g_autoptr (GList) keys = json_object_get_members (o);
      for (GList *l = keys; l != NULL; l = l->next)
        {
          JsonNode *v = json_object_get_member (o, l->data);
          if (!JSON_NODE_HOLDS_VALUE (v) || json_node_get_value_type (v) != G_TYPE_STRING)
            {
              g_autofree char *found = lp_json_describe (v);
              lp_set_error (error, LP_ERROR_FORMAT, "%s: header key __metadata__.%s: expected a string, found %s",
                            path, (const char *) l->data, found);
              return FALSE;
            }
          g_hash_table_insert (out, g_strdup (l->data), g_strdup (json_node_get_string (v)));
        }
      return TRUE;
    }
  g_autofree char *found = lp_json_describe (node);
  lp_set_error (error, LP_ERROR_FORMAT, "%s: header key __metadata__: expected an object of strings, found %s",
                path, found);
  return FALSE;
}

LpSafetensors *
lp_safetensors_open (const char *path, GError **error)
{
  g_autoptr (LpSafetensors) st = g_new0 (LpSafetensors, 1);
  st->path = g_strdup (path);
  st->tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  st->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  st->mf = lp_map_file (path, error);
  if (st->mf == NULL)
    return NULL;
  g_autoptr (GBytes) all = g_mapped_file_get_bytes (st->mf);
  LpByteReader r;
  lp_byte_reader_init (&r, path, g_bytes_get_data (all, NULL), g_bytes_get_size (all));
  guint64 n;
  if (!lp_byte_reader_u64 (&r, &n, "u64 header length", error))
    return NULL;
  n = GUINT64_FROM_LE (n);
  guint64 room = r.size - 8;
  if (n > room || n > ST_MAX_HEADER)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset 0: header length: expected at most %" G_GUINT64_FORMAT " (%s), found %" G_GUINT64_FORMAT,
                    path, MIN (room, ST_MAX_HEADER), n > room ? "the bytes after it" : "the format's limit", n);
      return NULL;
    }
  g_autoptr (JsonNode) root = lp_json_parse_object (path, "header", (const char *) r.base + 8, n, 8, error);
  if (root == NULL)
    return NULL;

  g_autoptr (GBytes) data = g_bytes_new_from_bytes (all, 8 + n, r.size - 8 - n);
  JsonObject *obj = json_node_get_object (root);
  g_autoptr (GList) keys = json_object_get_members (obj);
  g_autoptr (GArray) entries = g_array_new (FALSE, FALSE, sizeof (Entry));
  gboolean ok = TRUE;
  for (GList *l = keys; l != NULL && ok; l = l->next)
    {
      const char *key = l->data;
      JsonNode *node = json_object_get_member (obj, key);
      if (strcmp (key, "__metadata__") == 0)
        {
          ok = parse_metadata (node, path, st->metadata, error);
          continue;
        }
      Entry e;
      ok = parse_entry (node, path, key, data, &e, error);
      if (ok)
        g_array_append_val (entries, e);
    }
  if (ok)
    {
      g_array_sort (entries, entry_cmp);
      /* The tensor reaching furthest so far: any later non-empty tensor must start after it. */
      const Entry *reach = NULL;
      for (guint i = 0; i < entries->len && ok; i++)
        {
          const Entry *e = &g_array_index (entries, Entry, i);
          if (reach != NULL && e->end > e->begin && e->begin < reach->end)
            {
              lp_set_error (error, LP_ERROR_FORMAT,
                            "%s: header key \"%s\": data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] overlap \"%s\" [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "]: expected begin >= %" G_GUINT64_FORMAT ", found %" G_GUINT64_FORMAT,
                            path, e->t->name, e->begin, e->end, reach->t->name, reach->begin, reach->end,
                            reach->end, e->begin);
              ok = FALSE;
            }
          if (reach == NULL || e->end > reach->end)
            reach = e;
        }
    }
  for (guint i = 0; i < entries->len; i++)
    {
      LpTensor *t = g_array_index (entries, Entry, i).t;
      if (ok)
        {
          g_ptr_array_add (st->tensors, t);
          g_hash_table_insert (st->by_name, t->name, t);
        }
      else
        lp_tensor_unref (t);
    }
  return ok ? g_steal_pointer (&st) : NULL;
}

gboolean
lp_safetensors_write (const char *path, LpTensor *const *tensors, guint n, GHashTable *metadata,
                      GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "__metadata__");
  json_builder_begin_object (b);
  /* Sorted keys: the same metadata always gives the same bytes. */
  g_autoptr (GPtrArray) keys = g_ptr_array_new ();
  if (metadata != NULL)
    {
      GHashTableIter it;
      gpointer k;
      g_hash_table_iter_init (&it, metadata);
      while (g_hash_table_iter_next (&it, &k, NULL))
        g_ptr_array_add (keys, k);
      g_ptr_array_sort (keys, lp_compare_str_ptr);
    }
  if (metadata == NULL || !g_hash_table_contains (metadata, "format"))
    {
      json_builder_set_member_name (b, "format");
      json_builder_add_string_value (b, "pt");
    }
  for (guint i = 0; i < keys->len; i++)
    {
      json_builder_set_member_name (b, keys->pdata[i]);
      json_builder_add_string_value (b, g_hash_table_lookup (metadata, keys->pdata[i]));
    }
  json_builder_end_object (b);

  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  guint64 offset = 0;
  for (guint i = 0; i < n; i++)
    {
      const LpTensor *t = tensors[i];
      const char *dt = lp_safetensors_dtype_name (t->dtype);
      if (dt == NULL)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: tensor %s: expected one of %s, found type %s (no safetensors equivalent)",
                        path, t->name, known_dtype_names (), lp_dtype_name (t->dtype));
          return FALSE;
        }
      if (strcmp (t->name, "__metadata__") == 0 || !g_hash_table_add (seen, t->name))
        {
          lp_set_error (error, LP_ERROR_INVALID, "%s: tensor %s: expected a unique tensor name, found it twice (or reserved)",
                        path, t->name);
          return FALSE;
        }
      json_builder_set_member_name (b, t->name);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "dtype");
      json_builder_add_string_value (b, dt);
      json_builder_set_member_name (b, "shape");
      json_builder_begin_array (b);
      for (int d = 0; d < t->n_dims; d++)
        json_builder_add_int_value (b, t->shape[d]);
      json_builder_end_array (b);
      guint64 size = lp_tensor_n_bytes (t);
      json_builder_set_member_name (b, "data_offsets");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, (gint64) offset);
      json_builder_add_int_value (b, (gint64) (offset + size));
      json_builder_end_array (b);
      json_builder_end_object (b);
      offset += size;
    }
  json_builder_end_object (b);

  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  gsize len;
  g_autofree char *json = json_generator_to_data (gen, &len);
  GString *header = g_string_new_len (json, len);
  while (header->len % 8 != 0)
    g_string_append_c (header, ' ');
  guint64 hlen = GUINT64_TO_LE ((guint64) header->len);

  LpAtomicFile *af = lp_atomic_file_new (path, error);
  gboolean ok = af != NULL && lp_atomic_file_write (af, &hlen, 8, error)
                && lp_atomic_file_write (af, header->str, header->len, error);
  g_string_free (header, TRUE);
  for (guint i = 0; i < n && ok; i++)
    ok = lp_atomic_file_write (af, lp_tensor_data (tensors[i]), lp_tensor_n_bytes (tensors[i]), error);
  if (af == NULL)
    return FALSE;
  if (!ok)
    {
      lp_atomic_file_abort (af);
      return FALSE;
    }
  return lp_atomic_file_commit (af, error);
}
