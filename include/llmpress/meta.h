/* llmpress — typed key/value metadata, the model's "everything that is not a
 * tensor": general.*, tokenizer.*, quantization records, ...
 *
 * The value model is GGUF's (same type ids), because GGUF is the richest of the
 * formats we read: every reader translates what it finds into GGUF keys
 * (tokenizer.ggml.tokens, ...), and every writer reads them back out.
 * Keys keep their insertion order so files are written deterministically. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  LP_VALUE_U8 = 0,
  LP_VALUE_I8 = 1,
  LP_VALUE_U16 = 2,
  LP_VALUE_I16 = 3,
  LP_VALUE_U32 = 4,
  LP_VALUE_I32 = 5,
  LP_VALUE_F32 = 6,
  LP_VALUE_BOOL = 7,
  LP_VALUE_STRING = 8,
  LP_VALUE_ARRAY = 9,
  LP_VALUE_U64 = 10,
  LP_VALUE_I64 = 11,
  LP_VALUE_F64 = 12,
  LP_VALUE_COUNT = 13,
} LpValueType;

typedef struct _LpValue LpValue;

/* A scalar or an array.  Scalars keep their value in the union; an array holds
 * n_elems elements of elem_type packed in `array` (numbers: little-endian
 * native C types; bool: one byte each; strings: char* each, NUL-terminated;
 * nested arrays: LpValue* each). */
struct _LpValue {
  LpValueType type;
  LpValueType elem_type;  /* arrays only */
  guint64 n_elems;        /* arrays only */
  union {
    guint64 u;            /* U8..U64, BOOL */
    gint64 i;             /* I8..I64 */
    double f;             /* F32, F64 */
    char *s;              /* STRING (owned) */
    gpointer array;       /* ARRAY (owned) */
  };
};

const char *lp_value_type_name (LpValueType type);
/* Size of one element of `type` inside an array (strings and arrays: a pointer). */
gsize lp_value_elem_size (LpValueType type);
void lp_value_free (LpValue *v);
LpValue *lp_value_copy (const LpValue *v);
gboolean lp_value_equal (const LpValue *a, const LpValue *b);
/* Human-readable rendering (arrays abbreviated after `max_elems`). g_free() it. */
char *lp_value_to_string (const LpValue *v, guint max_elems);

typedef struct _LpMeta LpMeta;

LpMeta *lp_meta_new (void);
LpMeta *lp_meta_copy (const LpMeta *meta);
void lp_meta_free (LpMeta *meta);

guint lp_meta_n_keys (const LpMeta *meta);
/* i-th key in insertion order. */
const char *lp_meta_key (const LpMeta *meta, guint i);
const LpValue *lp_meta_get (const LpMeta *meta, const char *key);
gboolean lp_meta_has (const LpMeta *meta, const char *key);
void lp_meta_remove (LpMeta *meta, const char *key);
/* Take ownership of v; replaces an existing key in place (order kept). */
void lp_meta_set (LpMeta *meta, const char *key, LpValue *v);

void lp_meta_set_u32 (LpMeta *meta, const char *key, guint32 v);
void lp_meta_set_i32 (LpMeta *meta, const char *key, gint32 v);
void lp_meta_set_u64 (LpMeta *meta, const char *key, guint64 v);
void lp_meta_set_f32 (LpMeta *meta, const char *key, float v);
void lp_meta_set_bool (LpMeta *meta, const char *key, gboolean v);
void lp_meta_set_string (LpMeta *meta, const char *key, const char *v);
/* Copies: n elements of elem_type at `data` (strings: const char *const *). */
void lp_meta_set_array (LpMeta *meta, const char *key, LpValueType elem_type, guint64 n,
                        gconstpointer data);

/* Typed getters: FALSE when absent; with error set (LP_ERROR_FORMAT) when
 * present with a type that cannot be converted (integer getters accept every
 * integer type whose value fits, float getters every number). */
gboolean lp_meta_get_int (const LpMeta *meta, const char *key, gint64 *out, GError **error);
gboolean lp_meta_get_float (const LpMeta *meta, const char *key, double *out, GError **error);
gboolean lp_meta_get_bool (const LpMeta *meta, const char *key, gboolean *out, GError **error);
/* Borrowed string or NULL. */
const char *lp_meta_get_string (const LpMeta *meta, const char *key);
/* Borrowed array value of the given element type, or NULL (error set if the
 * key exists with another type). */
const LpValue *lp_meta_get_array (const LpMeta *meta, const char *key, LpValueType elem_type,
                                  GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpMeta, lp_meta_free)

G_END_DECLS
