/* llmpress — helpers shared inside libllmpress, not part of the SDK. */
#pragma once

#include <glib.h>
#include <llmpress/llmpress.h>

/* Symbols the SDK exports; everything else in the library stays hidden. */
#define LP_API __attribute__ ((visibility ("default")))

/* g_set_error in LP_ERROR. */
#define lp_set_error(err, code, ...) g_set_error ((err), LP_ERROR, (code), __VA_ARGS__)

/* The tokenizer file a model was read with, when it is a file of its own
 * (llama2.c): an output must never replace it either. */
void lp_model_set_tokenizer_source (LpModel *model, const char *path);
const char *lp_model_tokenizer_source (const LpModel *model);

/* Prefix an existing error with "<what>: ". */
void lp_error_prefix (GError **error, const char *what);

/* JSON helpers (json.c) for the readers of JSON-bearing formats. */
#include <json-glib/json-glib.h>

/* What a node holds, for "found ..." in messages: 42, "text", an object, ... */
char *lp_json_describe (JsonNode *node);
/* Parse `len` bytes of JSON whose root must be an object (ref'd root node).
 * Messages name `path`, the byte offset (`base` + position, for invalid UTF-8
 * or a non-object root) or json-glib's line and column, prefixed by `where`
 * ("header") when not NULL. */
JsonNode *lp_json_parse_object (const char *path, const char *where, const char *text, gsize len,
                                gsize base, GError **error);
/* Read a whole JSON file whose root must be an object. */
JsonNode *lp_json_load_object (const char *path, GError **error);
/* strcmp for g_ptr_array_sort over an array of strings (it passes char **). */
int lp_compare_str_ptr (gconstpointer a, gconstpointer b);

