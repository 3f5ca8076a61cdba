/* llmpress — helpers shared inside libllmpress, not part of the SDK. */
#pragma once

#include <glib.h>
#include <llmpress/llmpress.h>

/* Symbols the SDK exports; everything else in the library stays hidden. */
#define LP_API __attribute__ ((visibility ("default")))

/* g_set_error in LP_ERROR. */
#define lp_set_error(err, code, ...) g_set_error ((err), LP_ERROR, (code), __VA_ARGS__)

/* Prefix an existing error with "<what>: ". */
void lp_error_prefix (GError **error, const char *what);

/* JSON helpers (json.c) for the readers of JSON-bearing formats. */
#include <json-glib/json-glib.h>

/* What a node holds, for "found ..." in messages: 42, "text", an object, ... */
char *lp_json_describe (JsonNode *node);
/* Turn json-glib's "<data>:LINE:COL: Parse error: WHAT" into
 * "<path>: <where> line LINE column COL: expected valid JSON, found WHAT". */
void lp_json_set_parse_error (GError **error, const char *path, const char *where,
                              const GError *json_error);
/* Read a whole JSON file whose root must be an object (ref'd root node). */
JsonNode *lp_json_load_object (const char *path, GError **error);
