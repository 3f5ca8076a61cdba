/* llmpress — typed pass parameters and tensor-name patterns.
 *
 * A pass declares its parameters once, as a table of LpParamSpec; the spec
 * parser, `llmpress describe`, the cache key and the getters of the pass
 * context all read that one table. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  LP_PARAM_BOOL,     /* true/false, yes/no, on/off, 1/0 */
  LP_PARAM_INT,      /* 64-bit signed */
  LP_PARAM_FLOAT,    /* double */
  LP_PARAM_STRING,
  LP_PARAM_ENUM,     /* one of `choices` */
  LP_PARAM_PATH,     /* a file or directory; relative paths are resolved by the runner */
  LP_PARAM_TENSORS,  /* comma-separated globs over tensor names: "blk.*.ffn_*,output.weight" */
} LpParamType;

typedef enum {
  LP_PARAM_FLAG_NONE = 0,
  LP_PARAM_HAS_MIN = 1 << 0,   /* `min` applies (int, float) */
  LP_PARAM_HAS_MAX = 1 << 1,   /* `max` applies (int, float) */
  LP_PARAM_REQUIRED = 1 << 2,  /* no default: the spec must give it */
  LP_PARAM_OUTPUT = 1 << 3,    /* a path the pass writes (resolved against -o; two nodes
                                * may not write the same one) */
  LP_PARAM_NO_CACHE_KEY = 1 << 4, /* does not change the result (verbosity, ...) */
} LpParamFlags;

#define LP_PARAM_RANGE (LP_PARAM_HAS_MIN | LP_PARAM_HAS_MAX)

/* One parameter.  `default_value` is written as it would be in a spec
 * ("0.5", "true", "blk.*") and parsed by the same code; NULL with
 * LP_PARAM_REQUIRED.  A table ends with an entry whose name is NULL. */
typedef struct {
  const char *name;
  LpParamType type;
  const char *default_value;
  double min, max;              /* with LP_PARAM_HAS_MIN / HAS_MAX */
  const char *const *choices;   /* LP_PARAM_ENUM: NULL-terminated */
  const char *help;
  guint flags;                  /* LpParamFlags */
  gpointer reserved[2];
} LpParamSpec;

const char *lp_param_type_name (LpParamType type);

/* A parsed value of one of the types above. */
typedef struct _LpParamValue LpParamValue;
typedef struct _LpTensorPattern LpTensorPattern;

/* Parse `text` for `spec`: type, range and choices checked.  The error says
 * what was expected and what was found ("expected a float in [0, 1], found
 * 1.5"), without a location: the caller prefixes it. */
LpParamValue *lp_param_value_parse (const LpParamSpec *spec, const char *text, GError **error);
void lp_param_value_free (LpParamValue *value);
/* Canonical text: the same value always gives the same string (cache keys). */
const char *lp_param_value_canonical (const LpParamValue *value);
LpParamType lp_param_value_type (const LpParamValue *value);
/* Typed reads (the value must be of that type). */
const char *lp_param_value_get_string (const LpParamValue *value);
gboolean lp_param_value_get_bool (const LpParamValue *value);
gint64 lp_param_value_get_int (const LpParamValue *value);
double lp_param_value_get_float (const LpParamValue *value);
int lp_param_value_get_enum (const LpParamValue *value);
const LpTensorPattern *lp_param_value_get_tensors (const LpParamValue *value);

/* A list of globs over tensor names (GLib GPatternSpec syntax: `*` and `?`).
 * The empty list matches nothing. */

LpTensorPattern *lp_tensor_pattern_new (const char *globs);
void lp_tensor_pattern_free (LpTensorPattern *pattern);
gboolean lp_tensor_pattern_match (const LpTensorPattern *pattern, const char *name);
/* As given, for messages. */
const char *lp_tensor_pattern_text (const LpTensorPattern *pattern);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpParamValue, lp_param_value_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpTensorPattern, lp_tensor_pattern_free)

G_END_DECLS
