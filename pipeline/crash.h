/* llmpress — when a pass crashes the process (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGABRT), say which node it was before dying of the signal.
 * Not part of the SDK. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Install the handlers (the command line does, once). */
void lp_crash_handler_install (void);
/* What this thread is running, as the start of the line the handler writes
 * ("llmpress: error: spec.ini:4: [node] (pass p) crashed: "), or NULL.  The
 * string must live until it is replaced: the handler may only write(). */
void lp_crash_set_context (const char *line);

G_END_DECLS
