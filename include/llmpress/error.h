/* llmpress — error domain shared by the library, the plugins and the CLI. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define LP_ERROR (lp_error_quark ())
GQuark lp_error_quark (void);

/* Every run-time failure is reported as a GError in LP_ERROR.  The message
 * names the file, the byte offset / line / key, what was expected and what
 * was found — on one line. */
typedef enum {
  LP_ERROR_FAILED,       /* anything else */
  LP_ERROR_IO,           /* open/read/write/rename failed */
  LP_ERROR_FORMAT,       /* a file is malformed: bad magic, truncated, out of range */
  LP_ERROR_UNSUPPORTED,  /* well-formed but not something we handle (unknown arch, type) */
  LP_ERROR_INVALID,      /* a bad argument or parameter from the user */
  LP_ERROR_MISSING,      /* a required tensor, key or file is absent */
} LpErrorCode;

/* Set *error (when error is not NULL) to a GError in LP_ERROR with `code`
 * and the printf-formatted message, made safe to print on one line:
 * newlines, other control characters, bytes that are not UTF-8 and
 * line-breaking or bidi-reordering characters are written as \n, \xNN or
 * \uNNNN, so a name read from a file cannot fake a second message.  How
 * passes report errors: lp_set_error (error, LP_ERROR_INVALID, "...", ...). */
void lp_error_set (GError **error, int code, const char *fmt, ...) G_GNUC_PRINTF (3, 4);
#define lp_set_error(err, code, ...) lp_error_set ((err), (code), __VA_ARGS__)

G_END_DECLS
