/* llmpress — the thread count (threads.h) and lp_parallel_for: one shared
 * GThreadPool; the caller works too, claiming ranges from the same counter
 * as the pool's threads, so nested and concurrent calls never deadlock. */
#include "config.h"

#include <stdlib.h>

#include "lp-internal.h"

#define LP_THREADS_MAX 4096

static gint chosen; /* lp_threads_set's count, 0: none */

gboolean
lp_threads_parse (const char *what, const char *text, int *n, GError **error)
{
  char *end = NULL;
  gint64 v = text ? g_ascii_strtoll (text, &end, 10) : 0;
  if (text == NULL || end == text || *end != '\0' || v < 1 || v > LP_THREADS_MAX)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: expected a thread count in [1, %d], found '%s'", what,
                    LP_THREADS_MAX, text ? text : "");
      return FALSE;
    }
  *n = (int) v;
  return TRUE;
}

/* The cores this process may run on, asked once: glib reads
 * /sys/devices/system/cpu/online for it (an open, a read and a close), and
 * decoding asks for the thread count a few hundred times a token. */
static int
cores (void)
{
  static gint n;
  if (g_atomic_int_get (&n) == 0)
    g_atomic_int_set (&n, (int) MAX (g_get_num_processors (), 1));
  return g_atomic_int_get (&n);
}

/* LLMPRESS_THREADS when it holds a count, else every core (the variable
 * read each time: cheap, and a test may set it). */
static int
default_threads (void)
{
  int n;
  const char *env = g_getenv ("LLMPRESS_THREADS");
  if (env != NULL && lp_threads_parse ("LLMPRESS_THREADS", env, &n, NULL))
    return n;
  return cores ();
}

int
lp_threads (void)
{
  int n = g_atomic_int_get (&chosen);
  return n > 0 ? n : default_threads ();
}

void
lp_threads_set (int n)
{
  g_return_if_fail (n >= 0 && n <= LP_THREADS_MAX);
  g_atomic_int_set (&chosen, n);
  lp_cpu_blas_threads_follow (lp_threads ());
}

/* ---- lp_parallel_for ---- */

typedef struct {
  gint ref;        /* the caller and each task pushed to the pool */
  LpParallelFunc func;
  gpointer user_data;
  gint64 n, chunk;
  gint n_chunks;
  gint next;       /* the next range to claim */
  gint done;       /* ranges finished */
  GMutex lock;
  GCond cond;
} Job;

static void
job_unref (Job *job)
{
  if (!g_atomic_int_dec_and_test (&job->ref))
    return;
  g_mutex_clear (&job->lock);
  g_cond_clear (&job->cond);
  g_free (job);
}

/* Claim and run ranges until none is left. */
static void
run_ranges (Job *job)
{
  for (;;)
    {
      gint c = g_atomic_int_add (&job->next, 1);
      if (c >= job->n_chunks)
        return;
      gint64 begin = (gint64) c * job->chunk;
      job->func (begin, MIN (job->n, begin + job->chunk), job->user_data);
      if (g_atomic_int_add (&job->done, 1) + 1 == job->n_chunks)
        {
          g_mutex_lock (&job->lock);
          g_cond_broadcast (&job->cond);
          g_mutex_unlock (&job->lock);
        }
    }
}

static void
pool_task (gpointer data, gpointer unused)
{
  Job *job = data;
  run_ranges (job);
  job_unref (job);
}

/* The shared pool, sized to the count in force (the caller is the extra
 * thread). */
static GThreadPool *
shared_pool (int threads)
{
  static GThreadPool *pool;
  static GMutex lock;
  g_mutex_lock (&lock);
  if (pool == NULL)
    pool = g_thread_pool_new (pool_task, NULL, threads - 1, FALSE, NULL);
  else if (g_thread_pool_get_max_threads (pool) != threads - 1)
    g_thread_pool_set_max_threads (pool, threads - 1, NULL);
  g_mutex_unlock (&lock);
  return pool;
}

void
lp_parallel_for (gint64 n, gint64 grain, LpParallelFunc func, gpointer user_data)
{
  g_return_if_fail (func != NULL);
  if (n <= 0)
    return;
  int threads = lp_threads ();
  gint64 ranges = (n + MAX (grain, 1) - 1) / MAX (grain, 1);
  if (threads == 1 || ranges == 1)
    {
      func (0, n, user_data);
      return;
    }
  /* A few ranges a thread, so that one slow range does not leave the
   * others idle. */
  ranges = MIN (ranges, (gint64) threads * 4);
  Job *job = g_new0 (Job, 1);
  job->func = func;
  job->user_data = user_data;
  job->n = n;
  job->chunk = (n + ranges - 1) / ranges;
  job->n_chunks = (gint) ((n + job->chunk - 1) / job->chunk);
  g_mutex_init (&job->lock);
  g_cond_init (&job->cond);
  int helpers = MIN (threads - 1, job->n_chunks - 1);
  job->ref = 1 + helpers;
  GThreadPool *pool = shared_pool (threads);
  for (int i = 0; i < helpers; i++)
    g_thread_pool_push (pool, job, NULL);
  run_ranges (job);
  g_mutex_lock (&job->lock);
  while (g_atomic_int_get (&job->done) < job->n_chunks)
    g_cond_wait (&job->cond, &job->lock);
  g_mutex_unlock (&job->lock);
  job_unref (job);
}
