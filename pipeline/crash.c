/* llmpress — naming the node that crashed.  The handler does only what is
 * async-signal-safe: write() of a line formatted before the node started,
 * then the default action of the signal, so the exit status still says
 * how the process died (and a core is dumped where enabled). */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "crash.h"

/* initial-exec: the handler must not make the first access of a dynamic
 * TLS block (that may allocate); libllmpress is linked, never dlopen()ed. */
static __thread const char *context __attribute__ ((tls_model ("initial-exec")));

void
lp_crash_set_context (const char *line)
{
  context = line;
}

static void
say (const char *s)
{
  size_t n = strlen (s);
  while (n > 0)
    {
      ssize_t w = write (STDERR_FILENO, s, n);
      if (w <= 0)
        return;
      s += w;
      n -= (size_t) w;
    }
}

static const char *
signal_name (int sig)
{
  switch (sig)
    {
    case SIGSEGV: return "SIGSEGV (invalid memory access)";
    case SIGBUS: return "SIGBUS (bus error: a mapped file shrank?)";
    case SIGFPE: return "SIGFPE (arithmetic exception)";
    case SIGILL: return "SIGILL (illegal instruction)";
    case SIGABRT: return "SIGABRT (aborted)";
    default: return "a fatal signal";
    }
}

static void
on_crash (int sig)
{
  const char *line = context;
  say (line != NULL ? line : "llmpress: error: crashed: ");
  say (signal_name (sig));
  say ("\n");
  /* Die of it: blocked while we run, it is delivered on return. */
  signal (sig, SIG_DFL);
  raise (sig);
}

void
lp_crash_handler_install (void)
{
  static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_crash;
  sigemptyset (&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (gsize i = 0; i < G_N_ELEMENTS (sigs); i++)
    sigaction (sigs[i], &sa, NULL);
}
