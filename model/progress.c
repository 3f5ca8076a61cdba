/* llmpress — progress bars and periodic progress lines on stderr. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "lp-internal.h"
#include <llmpress/progress.h>

/* Set once by the command (--quiet), read by every thread. */
static gint quiet;
/* Every line llmpress writes to stderr while it works (warnings, progress,
 * a run's node lines) is written under this lock: threads of one run (the
 * parallel scheduler's nodes, evaluation workers) never interleave their
 * lines or a bar's redraw. */
static GMutex stderr_lock;

void
lp_stderr_lock (void)
{
  g_mutex_lock (&stderr_lock);
}

void
lp_stderr_unlock (void)
{
  g_mutex_unlock (&stderr_lock);
}

struct _LpProgress {
  char *what;
  char *unit;
  gint64 total, done;
  gint64 start_us, last_us;
  gboolean tty;
};

void
lp_progress_set_quiet (gboolean q)
{
  g_atomic_int_set (&quiet, q);
}

void
lp_warn (const char *format, ...)
{
  if (g_atomic_int_get (&quiet))
    return;
  va_list ap;
  va_start (ap, format);
  g_autofree char *msg = g_strdup_vprintf (format, ap);
  va_end (ap);
  lp_stderr_lock ();
  fprintf (stderr, "llmpress: warning: %s\n", msg);
  lp_stderr_unlock ();
}

LpProgress *
lp_progress_new (const char *what, const char *unit, gint64 total)
{
  LpProgress *p = g_new0 (LpProgress, 1);
  p->what = g_strdup (what);
  p->unit = g_strdup (unit);
  p->total = total;
  p->start_us = p->last_us = g_get_monotonic_time ();
  p->tty = isatty (STDERR_FILENO);
  return p;
}

static void
render (LpProgress *p, gboolean final)
{
  double secs = (g_get_monotonic_time () - p->start_us) / 1e6;
  double rate = secs > 0 ? p->done / secs : 0.0;
  double eta = rate > 0 && p->total > p->done ? (p->total - p->done) / rate : 0.0;
  double frac = p->total > 0 ? (double) p->done / p->total : 1.0;
  lp_stderr_lock ();
  if (p->tty)
    {
      char bar[31];
      int fill = (int) (frac * 30);
      for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
      bar[30] = '\0';
      fprintf (stderr, "\r%s [%s] %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " %s, %.1f/s, %s %.0fs%s",
               p->what, bar, p->done, p->total, p->unit, rate, final ? "took" : "ETA", final ? secs : eta,
               final ? "\n" : "\033[K");
    }
  else
    fprintf (stderr, "%s: %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " %s (%.0f%%), %.1f/s, %s %.0fs\n",
             p->what, p->done, p->total, p->unit, 100.0 * frac, rate, final ? "took" : "ETA", final ? secs : eta);
  fflush (stderr);
  lp_stderr_unlock ();
}

void
lp_progress_update (LpProgress *p, gint64 done)
{
  p->done = done;
  if (g_atomic_int_get (&quiet))
    return;
  gint64 now = g_get_monotonic_time ();
  /* Redraw a bar 5 times a second; print a plain line every 5 seconds. */
  if (now - p->last_us >= (p->tty ? 200000 : 5000000))
    {
      p->last_us = now;
      render (p, FALSE);
    }
}

void
lp_progress_finish (LpProgress *p)
{
  if (p == NULL)
    return;
  if (!g_atomic_int_get (&quiet) && (p->tty || (g_get_monotonic_time () - p->start_us) > 1000000))
    render (p, TRUE);
  g_free (p->what);
  g_free (p->unit);
  g_free (p);
}
