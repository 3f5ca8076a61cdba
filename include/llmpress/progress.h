/* llmpress — progress reporting for long loops (layers, samples, windows).
 * On a terminal: a bar redrawn in place with rate and ETA; otherwise a plain
 * line every few seconds.  Everything goes to stderr; lp_progress_set_quiet()
 * (the CLI's --quiet) silences it. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _LpProgress LpProgress;

void lp_progress_set_quiet (gboolean quiet);
/* A warning for the user ("llmpress: warning: ..." on stderr), unless quiet. */
void lp_warn (const char *format, ...) G_GNUC_PRINTF (1, 2);
/* `what` names the loop ("eval windows"); `unit` the items ("windows"). */
LpProgress *lp_progress_new (const char *what, const char *unit, gint64 total);
void lp_progress_update (LpProgress *p, gint64 done);
/* Final line and free; NULL accepted. */
void lp_progress_finish (LpProgress *p);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpProgress, lp_progress_finish)

G_END_DECLS
