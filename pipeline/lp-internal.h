/* llmpress — helpers shared inside libllmpress, not part of the SDK. */
#pragma once

#include <glib.h>
#include <llmpress/llmpress.h>

/* Symbols the SDK exports; everything else in the library stays hidden. */
#define LP_API __attribute__ ((visibility ("default")))

/* g_set_error in LP_ERROR, with the message passed through lp_error_escape:
 * one line, no byte a terminal would act on, whatever a file held. */
#define lp_set_error(err, code, ...) lp_error_set ((err), (code), __VA_ARGS__)
void lp_error_set (GError **error, int code, const char *fmt, ...) G_GNUC_PRINTF (3, 4);
/* For a list of problems, one a line: each line escaped, the newlines kept. */
void lp_error_set_lines (GError **error, int code, const char *lines);
/* `text` with newlines, other control characters, bytes that are not UTF-8
 * and line-breaking or bidi-reordering characters written as \n, \r, \t,
 * \xNN or \uNNNN (keep_newlines: '\n' kept).  Escaping twice changes
 * nothing more. */
char *lp_error_escape (const char *text, gboolean keep_newlines);

/* What is at `path`, for "found ..." in messages: "a character device",
 * "a FIFO", "a directory", "a regular file of N bytes", "nothing", ... */
char *lp_path_describe (const char *path);

/* Prefix an existing error with "<what>: ". */
void lp_error_prefix (GError **error, const char *what);

/* JSON helpers (json.c) for the readers of JSON-bearing formats. */
#include <json-glib/json-glib.h>

/* What a node holds, for "found ..." in messages: 42, "text", an object, ... */
char *lp_json_describe (JsonNode *node);
/* Deepest nesting of arrays and objects the JSON readers accept: every JSON
 * file is parsed by lp_json_parse_object, which refuses deeper input before
 * json-glib's recursive parser sees it. */
#define LP_JSON_MAX_DEPTH 256
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

