/* Test-only LD_PRELOAD shim: makes the I/O calls llmpress writes files
 * with fail as a full or broken disk would, so the tests can check what a
 * command leaves behind.  Controlled by the environment, read once:
 *
 *   LLMPRESS_FAULT_ON     write | fsync | rename | mkdir   (default write)
 *   LLMPRESS_FAULT_ERRNO  ENOSPC | EIO | EROFS             (default ENOSPC)
 *   LLMPRESS_FAULT_MATCH  only files whose path contains this (default: all)
 *   LLMPRESS_FAULT_AFTER  write: let this many bytes through first (default 0)
 *
 * Only regular files count for write and fsync (never a pipe, a terminal
 * or stderr).  LpAtomicFile writes with write(2), which this replaces;
 * glibc's stdio would call its internal write, out of our reach. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int fault_errno = ENOSPC;
static const char *fault_on = "write";
static const char *fault_match;
static long long fault_after;
static long long written;   /* bytes let through so far (matching files) */
static int ready;

static void
setup (void)
{
  if (ready)
    return;
  const char *e = getenv ("LLMPRESS_FAULT_ERRNO");
  if (e && strcmp (e, "EIO") == 0)
    fault_errno = EIO;
  else if (e && strcmp (e, "EROFS") == 0)
    fault_errno = EROFS;
  if (getenv ("LLMPRESS_FAULT_ON"))
    fault_on = getenv ("LLMPRESS_FAULT_ON");
  fault_match = getenv ("LLMPRESS_FAULT_MATCH");
  if (getenv ("LLMPRESS_FAULT_AFTER"))
    fault_after = atoll (getenv ("LLMPRESS_FAULT_AFTER"));
  ready = 1;
}

static int
path_matches (const char *path)
{
  return fault_match == NULL || (path != NULL && strstr (path, fault_match) != NULL);
}

/* A regular file whose path matches. */
static int
fd_matches (int fd)
{
  struct stat st;
  if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode))
    return 0;
  if (fault_match == NULL)
    return 1;
  char link[64], path[4096];
  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink (link, path, sizeof path - 1);
  if (n <= 0)
    return 0;
  path[n] = '\0';
  return path_matches (path);
}

ssize_t
write (int fd, const void *buf, size_t count)
{
  static ssize_t (*real) (int, const void *, size_t);
  if (real == NULL)
    real = (ssize_t (*) (int, const void *, size_t)) dlsym (RTLD_NEXT, "write");
  setup ();
  if (strcmp (fault_on, "write") == 0 && count > 0 && fd_matches (fd))
    {
      long long left = fault_after - __atomic_load_n (&written, __ATOMIC_RELAXED);
      if (left <= 0)
        {
          errno = fault_errno;
          return -1;
        }
      if ((long long) count > left)
        count = (size_t) left; /* a short write, then the failure */
      ssize_t w = real (fd, buf, count);
      if (w > 0)
        __atomic_add_fetch (&written, w, __ATOMIC_RELAXED);
      return w;
    }
  return real (fd, buf, count);
}

int
fsync (int fd)
{
  static int (*real) (int);
  if (real == NULL)
    real = (int (*) (int)) dlsym (RTLD_NEXT, "fsync");
  setup ();
  if (strcmp (fault_on, "fsync") == 0 && fd_matches (fd))
    {
      errno = fault_errno;
      return -1;
    }
  return real (fd);
}

int
rename (const char *from, const char *to)
{
  static int (*real) (const char *, const char *);
  if (real == NULL)
    real = (int (*) (const char *, const char *)) dlsym (RTLD_NEXT, "rename");
  setup ();
  if (strcmp (fault_on, "rename") == 0 && path_matches (to))
    {
      errno = fault_errno;
      return -1;
    }
  return real (from, to);
}

int
mkdir (const char *path, mode_t mode)
{
  static int (*real) (const char *, mode_t);
  if (real == NULL)
    real = (int (*) (const char *, mode_t)) dlsym (RTLD_NEXT, "mkdir");
  setup ();
  if (strcmp (fault_on, "mkdir") == 0 && path_matches (path))
    {
      errno = fault_errno;
      return -1;
    }
  return real (path, mode);
}
