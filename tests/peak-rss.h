/* Run a command as a child process and measure its peak resident set size
 * (wait4's rusage ru_maxrss: the most of the child's memory ever resident,
 * mapped file pages included).  Shared by tests/test-memory and
 * bench/bench-memory. */
#pragma once

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <glib.h>

/* argv[0] is a path; extra_env ("NAME=VALUE" strings, NULL-terminated, may
 * be NULL) is added to this process's environment.  stdout goes to
 * /dev/null.  Returns the exit status (-1: it could not run or was killed),
 * the peak RSS in bytes in *peak (0 where the system does not report it),
 * the wall time in *seconds and, when cpu_seconds is not NULL, the child's
 * user + system CPU time there (wall time on a shared machine says little). */
static inline int
peak_rss_run (const char *const *argv, const char *const *extra_env, guint64 *peak, double *seconds,
              double *cpu_seconds)
{
  *peak = 0;
  gint64 t0 = g_get_monotonic_time ();
  pid_t pid = fork ();
  if (pid < 0)
    return -1;
  if (pid == 0)
    {
      for (const char *const *e = extra_env; e && *e; e++)
        putenv ((char *) *e);
      FILE *null = freopen ("/dev/null", "w", stdout);
      (void) null;
      execv (argv[0], (char *const *) argv);
      _exit (127);
    }
  int status = 0;
  struct rusage ru;
  memset (&ru, 0, sizeof ru);
  while (wait4 (pid, &status, 0, &ru) < 0)
    if (errno != EINTR)
      return -1;
  *seconds = (double) (g_get_monotonic_time () - t0) / 1e6;
  *peak = (guint64) ru.ru_maxrss * 1024; /* kilobytes on Linux */
  if (cpu_seconds != NULL)
    *cpu_seconds = (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
                   + (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}
