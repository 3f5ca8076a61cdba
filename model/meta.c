/* llmpress — typed key/value metadata in GGUF's value model. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"

struct _LpMeta {
  GPtrArray *keys;    /* char*, insertion order (owned) */
  GHashTable *values; /* key (borrowed from keys) -> LpValue* (owned) */
};

static const char *const value_type_names[LP_VALUE_COUNT] = {
  "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *
lp_value_type_name (LpValueType type)
{
  return (type >= 0 && type < LP_VALUE_COUNT) ? value_type_names[type] : "invalid";
}

gsize
lp_value_elem_size (LpValueType type)
{
  switch (type)
    {
    case LP_VALUE_U8: case LP_VALUE_I8: case LP_VALUE_BOOL: return 1;
    case LP_VALUE_U16: case LP_VALUE_I16: return 2;
    case LP_VALUE_U32: case LP_VALUE_I32: case LP_VALUE_F32: return 4;
    case LP_VALUE_U64: case LP_VALUE_I64: case LP_VALUE_F64: return 8;
    case LP_VALUE_STRING: case LP_VALUE_ARRAY: return sizeof (gpointer);
    default: g_return_val_if_reached (0);
    }
}

static void
array_free (LpValueType elem_type, gpointer array, guint64 n)
{
  if (elem_type == LP_VALUE_STRING)
    for (guint64 i = 0; i < n; i++)
      g_free (((char **) array)[i]);
  else if (elem_type == LP_VALUE_ARRAY)
    for (guint64 i = 0; i < n; i++)
      lp_value_free (((LpValue **) array)[i]);
  g_free (array);
}

void
lp_value_free (LpValue *v)
{
  if (v == NULL)
    return;
  if (v->type == LP_VALUE_STRING)
    g_free (v->s);
  else if (v->type == LP_VALUE_ARRAY)
    array_free (v->elem_type, v->array, v->n_elems);
  g_free (v);
}

static gpointer
array_copy (LpValueType elem_type, gconstpointer src, guint64 n)
{
  gsize es = lp_value_elem_size (elem_type);
  gpointer out = g_malloc0_n (MAX (n, 1), es);
  if (elem_type == LP_VALUE_STRING)
    for (guint64 i = 0; i < n; i++)
      ((char **) out)[i] = g_strdup (((const char *const *) src)[i]);
  else if (elem_type == LP_VALUE_ARRAY)
    for (guint64 i = 0; i < n; i++)
      ((LpValue **) out)[i] = lp_value_copy (((LpValue *const *) src)[i]);
  else if (n > 0)
    memcpy (out, src, n * es);
  return out;
}

LpValue *
lp_value_copy (const LpValue *v)
{
  LpValue *c = g_new0 (LpValue, 1);
  *c = *v;
  if (v->type == LP_VALUE_STRING)
    c->s = g_strdup (v->s);
  else if (v->type == LP_VALUE_ARRAY)
    c->array = array_copy (v->elem_type, v->array, v->n_elems);
  return c;
}

gboolean
lp_value_equal (const LpValue *a, const LpValue *b)
{
  if (a->type != b->type)
    return FALSE;
  switch (a->type)
    {
    case LP_VALUE_STRING:
      return g_strcmp0 (a->s, b->s) == 0;
    case LP_VALUE_F32:
    case LP_VALUE_F64:
      return a->f == b->f || (isnan (a->f) && isnan (b->f));
    case LP_VALUE_ARRAY:
      if (a->elem_type != b->elem_type || a->n_elems != b->n_elems)
        return FALSE;
      if (a->elem_type == LP_VALUE_STRING)
        {
          for (guint64 i = 0; i < a->n_elems; i++)
            if (g_strcmp0 (((char **) a->array)[i], ((char **) b->array)[i]) != 0)
              return FALSE;
          return TRUE;
        }
      if (a->elem_type == LP_VALUE_ARRAY)
        {
          for (guint64 i = 0; i < a->n_elems; i++)
            if (!lp_value_equal (((LpValue **) a->array)[i], ((LpValue **) b->array)[i]))
              return FALSE;
          return TRUE;
        }
      return a->n_elems == 0
             || memcmp (a->array, b->array, a->n_elems * lp_value_elem_size (a->elem_type)) == 0;
    default:
      return a->u == b->u;
    }
}

static void
append_elem (GString *s, LpValueType t, gconstpointer p)
{
  switch (t)
    {
    case LP_VALUE_U8: g_string_append_printf (s, "%u", *(const guint8 *) p); break;
    case LP_VALUE_I8: g_string_append_printf (s, "%d", *(const gint8 *) p); break;
    case LP_VALUE_U16: g_string_append_printf (s, "%u", *(const guint16 *) p); break;
    case LP_VALUE_I16: g_string_append_printf (s, "%d", *(const gint16 *) p); break;
    case LP_VALUE_U32: g_string_append_printf (s, "%u", *(const guint32 *) p); break;
    case LP_VALUE_I32: g_string_append_printf (s, "%d", *(const gint32 *) p); break;
    case LP_VALUE_U64: g_string_append_printf (s, "%" G_GUINT64_FORMAT, *(const guint64 *) p); break;
    case LP_VALUE_I64: g_string_append_printf (s, "%" G_GINT64_FORMAT, *(const gint64 *) p); break;
    case LP_VALUE_F32: g_string_append_printf (s, "%g", *(const float *) p); break;
    case LP_VALUE_F64: g_string_append_printf (s, "%g", *(const double *) p); break;
    case LP_VALUE_BOOL: g_string_append (s, *(const guint8 *) p ? "true" : "false"); break;
    case LP_VALUE_STRING:
      {
        g_autofree char *e = g_strescape (*(char *const *) p, NULL);
        g_string_append_printf (s, "\"%s\"", e);
        break;
      }
    case LP_VALUE_ARRAY:
      {
        g_autofree char *inner = lp_value_to_string (*(LpValue *const *) p, 4);
        g_string_append (s, inner);
        break;
      }
    default: break;
    }
}

char *
lp_value_to_string (const LpValue *v, guint max_elems)
{
  GString *s = g_string_new (NULL);
  switch (v->type)
    {
    case LP_VALUE_U8: case LP_VALUE_U16: case LP_VALUE_U32: case LP_VALUE_U64:
      g_string_append_printf (s, "%" G_GUINT64_FORMAT, v->u);
      break;
    case LP_VALUE_I8: case LP_VALUE_I16: case LP_VALUE_I32: case LP_VALUE_I64:
      g_string_append_printf (s, "%" G_GINT64_FORMAT, v->i);
      break;
    case LP_VALUE_F32: case LP_VALUE_F64:
      g_string_append_printf (s, "%g", v->f);
      break;
    case LP_VALUE_BOOL:
      g_string_append (s, v->u ? "true" : "false");
      break;
    case LP_VALUE_STRING:
      append_elem (s, LP_VALUE_STRING, &v->s);
      break;
    case LP_VALUE_ARRAY:
      {
        gsize es = lp_value_elem_size (v->elem_type);
        g_string_append_c (s, '[');
        for (guint64 i = 0; i < v->n_elems && i < max_elems; i++)
          {
            if (i)
              g_string_append (s, ", ");
            append_elem (s, v->elem_type, (const guint8 *) v->array + i * es);
          }
        if (v->n_elems > max_elems)
          g_string_append_printf (s, ", ... (%" G_GUINT64_FORMAT " %s)", v->n_elems,
                                  lp_value_type_name (v->elem_type));
        g_string_append_c (s, ']');
        break;
      }
    default:
      break;
    }
  return g_string_free (s, FALSE);
}

LpMeta *
lp_meta_new (void)
{
  LpMeta *m = g_new0 (LpMeta, 1);
  m->keys = g_ptr_array_new_with_free_func (g_free);
  m->values = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) lp_value_free);
  return m;
}

LpMeta *
lp_meta_copy (const LpMeta *meta)
{
  LpMeta *c = lp_meta_new ();
  for (guint i = 0; i < meta->keys->len; i++)
    {
      const char *k = meta->keys->pdata[i];
      lp_meta_set (c, k, lp_value_copy (g_hash_table_lookup (meta->values, k)));
    }
  return c;
}

void
lp_meta_free (LpMeta *meta)
{
  if (meta == NULL)
    return;
  g_hash_table_destroy (meta->values);
  g_ptr_array_unref (meta->keys);
  g_free (meta);
}

guint
lp_meta_n_keys (const LpMeta *meta)
{
  return meta->keys->len;
}

const char *
lp_meta_key (const LpMeta *meta, guint i)
{
  g_return_val_if_fail (i < meta->keys->len, NULL);
  return meta->keys->pdata[i];
}

const LpValue *
lp_meta_get (const LpMeta *meta, const char *key)
{
  return g_hash_table_lookup (meta->values, key);
}

gboolean
lp_meta_has (const LpMeta *meta, const char *key)
{
  return g_hash_table_contains (meta->values, key);
}

void
lp_meta_remove (LpMeta *meta, const char *key)
{
  for (guint i = 0; i < meta->keys->len; i++)
    if (strcmp (meta->keys->pdata[i], key) == 0)
      {
        g_hash_table_remove (meta->values, key);
        g_ptr_array_remove_index (meta->keys, i);
        return;
      }
}

void
lp_meta_set (LpMeta *meta, const char *key, LpValue *v)
{
  gpointer orig_key;
  if (g_hash_table_lookup_extended (meta->values, key, &orig_key, NULL))
    {
      g_hash_table_insert (meta->values, orig_key, v);
      return;
    }
  char *k = g_strdup (key);
  g_ptr_array_add (meta->keys, k);
  g_hash_table_insert (meta->values, k, v);
}

static LpValue *
value_new (LpValueType type)
{
  LpValue *v = g_new0 (LpValue, 1);
  v->type = type;
  return v;
}

void
lp_meta_set_u32 (LpMeta *meta, const char *key, guint32 x)
{
  LpValue *v = value_new (LP_VALUE_U32);
  v->u = x;
  lp_meta_set (meta, key, v);
}

void
lp_meta_set_i32 (LpMeta *meta, const char *key, gint32 x)
{
  LpValue *v = value_new (LP_VALUE_I32);
  v->i = x;
  lp_meta_set (meta, key, v);
}

void
lp_meta_set_u64 (LpMeta *meta, const char *key, guint64 x)
{
  LpValue *v = value_new (LP_VALUE_U64);
  v->u = x;
  lp_meta_set (meta, key, v);
}

void
lp_meta_set_f32 (LpMeta *meta, const char *key, float x)
{
  LpValue *v = value_new (LP_VALUE_F32);
  v->f = x;
  lp_meta_set (meta, key, v);
}

void
lp_meta_set_bool (LpMeta *meta, const char *key, gboolean x)
{
  LpValue *v = value_new (LP_VALUE_BOOL);
  v->u = x ? 1 : 0;
  lp_meta_set (meta, key, v);
}

void
lp_meta_set_string (LpMeta *meta, const char *key, const char *x)
{
  LpValue *v = value_new (LP_VALUE_STRING);
  v->s = g_strdup (x);
  lp_meta_set (meta, key, v);
}

void
lp_meta_set_array (LpMeta *meta, const char *key, LpValueType elem_type, guint64 n,
                   gconstpointer data)
{
  LpValue *v = value_new (LP_VALUE_ARRAY);
  v->elem_type = elem_type;
  v->n_elems = n;
  v->array = array_copy (elem_type, data, n);
  lp_meta_set (meta, key, v);
}

static gboolean
is_unsigned (LpValueType t)
{
  return t == LP_VALUE_U8 || t == LP_VALUE_U16 || t == LP_VALUE_U32 || t == LP_VALUE_U64;
}

static gboolean
is_signed (LpValueType t)
{
  return t == LP_VALUE_I8 || t == LP_VALUE_I16 || t == LP_VALUE_I32 || t == LP_VALUE_I64;
}

gboolean
lp_meta_get_int (const LpMeta *meta, const char *key, gint64 *out, GError **error)
{
  const LpValue *v = lp_meta_get (meta, key);
  if (v == NULL)
    return FALSE;
  if (is_unsigned (v->type) && v->u <= G_MAXINT64)
    *out = (gint64) v->u;
  else if (is_signed (v->type))
    *out = v->i;
  else if (is_unsigned (v->type))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "key %s: expected an integer below 2^63, found %" G_GUINT64_FORMAT, key, v->u);
      return FALSE;
    }
  else
    {
      lp_set_error (error, LP_ERROR_FORMAT, "key %s: expected an integer, found %s", key,
                    lp_value_type_name (v->type));
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_meta_get_float (const LpMeta *meta, const char *key, double *out, GError **error)
{
  const LpValue *v = lp_meta_get (meta, key);
  if (v == NULL)
    return FALSE;
  if (v->type == LP_VALUE_F32 || v->type == LP_VALUE_F64)
    *out = v->f;
  else if (is_unsigned (v->type))
    *out = (double) v->u;
  else if (is_signed (v->type))
    *out = (double) v->i;
  else
    {
      lp_set_error (error, LP_ERROR_FORMAT, "key %s: expected a number, found %s", key,
                    lp_value_type_name (v->type));
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_meta_get_bool (const LpMeta *meta, const char *key, gboolean *out, GError **error)
{
  const LpValue *v = lp_meta_get (meta, key);
  if (v == NULL)
    return FALSE;
  if (v->type != LP_VALUE_BOOL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "key %s: expected bool, found %s", key,
                    lp_value_type_name (v->type));
      return FALSE;
    }
  *out = v->u != 0;
  return TRUE;
}

const char *
lp_meta_get_string (const LpMeta *meta, const char *key)
{
  const LpValue *v = lp_meta_get (meta, key);
  return (v != NULL && v->type == LP_VALUE_STRING) ? v->s : NULL;
}

const LpValue *
lp_meta_get_array (const LpMeta *meta, const char *key, LpValueType elem_type, GError **error)
{
  const LpValue *v = lp_meta_get (meta, key);
  if (v == NULL)
    return NULL;
  if (v->type != LP_VALUE_ARRAY || v->elem_type != elem_type)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "key %s: expected array of %s, found %s%s%s", key,
                    lp_value_type_name (elem_type), lp_value_type_name (v->type),
                    v->type == LP_VALUE_ARRAY ? " of " : "",
                    v->type == LP_VALUE_ARRAY ? lp_value_type_name (v->elem_type) : "");
      return NULL;
    }
  return v;
}
