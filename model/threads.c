/* llmpress — the thread count (threads.h) and lp_parallel_for: workers of
 * its own that spin briefly between jobs; the caller works too, claiming
 * ranges from the same counter as the workers, so nested and concurrent
 * calls never deadlock. */
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

/* ---- lp_parallel_for ----
 *
 * Workers of our own that stay: a call posts its job on a list and runs
 * ranges itself at once; a worker between jobs spins a while on the post
 * counter before it sleeps, so back-to-back calls (RTN tensor by tensor,
 * some 100 us each) find it awake instead of paying a wake-up and a
 * hand-off per call, which cost as much as a 576 x 576 tensor. */

/* How long an idle worker, or a caller waiting for the ranges others took,
 * spins before it sleeps: a few tensors' worth, short enough that an idle
 * process gives the cores back at once. */
#define SPIN_US 200

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause ()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__ ("yield")
#else
#define cpu_relax() ((void) 0)
#endif

typedef struct {
  LpParallelFunc func;
  gpointer user_data;
  gint64 n, chunk;
  gint n_chunks;
  gint next;        /* the next range to claim */
  gint helpers;     /* workers that joined (under pool.lock) */
  gint max_helpers; /* lp_threads () - 1 when posted */
  gint busy;        /* workers inside the job now */
} Job;

static struct {
  GMutex lock;
  GCond wake;    /* a job posted, for sleeping workers */
  GCond left;    /* a worker left a job, for sleeping callers */
  GQueue jobs;   /* posted jobs with ranges left to claim */
  gint posted;   /* counts posts: what spinning workers watch */
  int sleeping;  /* workers waiting on wake */
  int workers;   /* started so far; they never exit */
} pool;

/* Whether `done` holds, checked with pauses (and a yield now and then)
 * for up to SPIN_US. */
static gboolean
spin_until (gboolean (*done) (gpointer), gpointer data)
{
  gint64 end = 0;
  for (guint i = 1;; i++)
    {
      if (done (data))
        return TRUE;
      cpu_relax ();
      if (i % 64 == 0)
        {
          /* on cores shared with other processes, let them run while we
           * wait: a thread that spins its share away is the one the
           * scheduler preempts later in the middle of a range (measured:
           * pure spinning was slower than the old pool under load) */
          g_thread_yield ();
          gint64 t = g_get_monotonic_time ();
          if (end == 0)
            end = t + SPIN_US;
          else if (t >= end)
            return done (data);
        }
    }
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
    }
}

/* Under pool.lock: the first posted job a worker may join, counted as
 * joined; jobs with no range left come off the list. */
static Job *
join_job (void)
{
  for (GList *l = pool.jobs.head; l != NULL;)
    {
      Job *job = l->data;
      GList *next = l->next;
      if (g_atomic_int_get (&job->next) >= job->n_chunks)
        g_queue_delete_link (&pool.jobs, l);
      else if (job->helpers < job->max_helpers)
        {
          job->helpers++;
          g_atomic_int_inc (&job->busy);
          return job;
        }
      l = next;
    }
  return NULL;
}

static gboolean
posted_since (gpointer seen)
{
  return g_atomic_int_get (&pool.posted) != GPOINTER_TO_INT (seen);
}

static gpointer
worker (gpointer unused)
{
  for (;;)
    {
      g_mutex_lock (&pool.lock);
      gint seen = g_atomic_int_get (&pool.posted);
      Job *job = join_job ();
      g_mutex_unlock (&pool.lock);
      if (job != NULL)
        {
          run_ranges (job);
          /* The caller may return (and free the job) once busy is 0, so
           * the job is not touched after the decrement. */
          if (g_atomic_int_dec_and_test (&job->busy))
            {
              g_mutex_lock (&pool.lock);
              g_cond_broadcast (&pool.left);
              g_mutex_unlock (&pool.lock);
            }
          continue;
        }
      if (spin_until (posted_since, GINT_TO_POINTER (seen)))
        continue;
      g_mutex_lock (&pool.lock);
      pool.sleeping++;
      while (g_atomic_int_get (&pool.posted) == seen)
        g_cond_wait (&pool.wake, &pool.lock);
      pool.sleeping--;
      g_mutex_unlock (&pool.lock);
    }
  return NULL;
}

/* Post a job, starting workers up to its count first (a thread that cannot
 * start is no error: the caller runs whatever no worker claims). */
static void
post_job (Job *job)
{
  g_mutex_lock (&pool.lock);
  while (pool.workers < job->max_helpers)
    {
      GThread *t = g_thread_try_new ("lp-worker", worker, NULL, NULL);
      if (t == NULL)
        break;
      g_thread_unref (t);
      pool.workers++;
    }
  g_queue_push_tail (&pool.jobs, job);
  g_atomic_int_inc (&pool.posted);
  if (pool.sleeping > 0)
    g_cond_broadcast (&pool.wake);
  g_mutex_unlock (&pool.lock);
}

static gboolean
job_left (gpointer job)
{
  return g_atomic_int_get (&((Job *) job)->busy) == 0;
}

/* After the caller's own ranges (so none is left to claim): take the job
 * off the list, so no worker joins any more, and wait for those inside. */
static void
finish_job (Job *job)
{
  g_mutex_lock (&pool.lock);
  g_queue_remove (&pool.jobs, job);
  g_mutex_unlock (&pool.lock);
  if (spin_until (job_left, job))
    return;
  g_mutex_lock (&pool.lock);
  while (g_atomic_int_get (&job->busy) > 0)
    g_cond_wait (&pool.left, &pool.lock);
  g_mutex_unlock (&pool.lock);
}

void
lp_parallel_for (gint64 n, gint64 grain, LpParallelFunc func, gpointer user_data)
{
  g_return_if_fail (func != NULL);
  if (n <= 0)
    return;
  int threads = lp_threads ();
  /* whole grains: a range of n / ranges items is at least one */
  gint64 ranges = MAX (n / MAX (grain, 1), 1);
  if (threads == 1 || ranges == 1)
    {
      func (0, n, user_data);
      return;
    }
  /* A few ranges a thread, so that one slow range does not leave the
   * others idle. */
  ranges = MIN (ranges, (gint64) threads * 4);
  Job job = { .func = func, .user_data = user_data, .n = n };
  job.chunk = (n + ranges - 1) / ranges;
  job.n_chunks = (gint) ((n + job.chunk - 1) / job.chunk);
  job.max_helpers = MIN (threads - 1, job.n_chunks - 1);
  post_job (&job);
  run_ranges (&job);
  finish_job (&job);
}
