/* llmpress — the CPU kernels' worker threads (see compute-internal.h's
 * lp_cpu_parallel_for).
 *
 * Decoding one token runs a few hundred matrix-vector products of a few
 * hundred microseconds each; a thread created per product, or a job queue,
 * would cost as much as the product.  So the workers are started once and
 * kept, each waiting on a condition variable for the next job; the caller
 * takes the first share itself.  One job at a time: a call made while the
 * pool is busy (another thread's job, or a kernel called from a worker)
 * runs serially in its caller, which is what that caller's own parallelism
 * (evaluation windows on their threads) wants anyway. */
#include "config.h"

#include <stdlib.h>

#include "lp-internal.h"
#include <llmpress/backend.h>

#include "compute-internal.h"

static struct {
  GMutex lock;        /* the fields below */
  GCond wake, done;
  GMutex busy;        /* held by the caller whose job runs */
  int n_workers;      /* started (ids 1 .. n_workers) */
  guint64 gen;        /* bumped for every job */
  int pending;        /* workers' shares not done */
  int parts;          /* shares of the current job (the caller's is 0) */
  int n;
  LpRangeFn fn;
  void *data;
} pool;

typedef struct {
  int id;
  guint64 seen; /* the last job this worker looked at */
} Worker;

static gpointer
worker_main (gpointer arg)
{
  Worker *w = arg;
  g_mutex_lock (&pool.lock);
  for (;;)
    {
      while (pool.gen == w->seen)
        g_cond_wait (&pool.wake, &pool.lock);
      w->seen = pool.gen;
      if (w->id >= pool.parts)
        continue;
      LpRangeFn fn = pool.fn;
      void *data = pool.data;
      int i0 = (int) ((gint64) pool.n * w->id / pool.parts), i1 = (int) ((gint64) pool.n * (w->id + 1) / pool.parts);
      g_mutex_unlock (&pool.lock);
      fn (data, i0, i1);
      g_mutex_lock (&pool.lock);
      if (--pool.pending == 0)
        g_cond_signal (&pool.done);
    }
  return NULL;
}

void
lp_cpu_parallel_for (int n, int grain, LpRangeFn fn, void *data)
{
  int parts = MIN (lp_threads (), n / MAX (grain, 1));
  if (parts <= 1 || !g_mutex_trylock (&pool.busy))
    {
      if (n > 0)
        fn (data, 0, n);
      return;
    }
  g_mutex_lock (&pool.lock);
  /* Workers start here, seeing the jobs before this one as seen. */
  for (; pool.n_workers < parts - 1; pool.n_workers++)
    {
      Worker *w = g_new (Worker, 1);
      w->id = pool.n_workers + 1;
      w->seen = pool.gen;
      g_thread_unref (g_thread_new ("llmpress-cpu", worker_main, w));
    }
  pool.fn = fn;
  pool.data = data;
  pool.n = n;
  pool.parts = parts;
  pool.pending = parts - 1;
  pool.gen++;
  g_cond_broadcast (&pool.wake);
  g_mutex_unlock (&pool.lock);
  fn (data, 0, n / parts);
  g_mutex_lock (&pool.lock);
  while (pool.pending > 0)
    g_cond_wait (&pool.done, &pool.lock);
  g_mutex_unlock (&pool.lock);
  g_mutex_unlock (&pool.busy);
}
