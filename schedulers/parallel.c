/* llmpress — the parallel scheduler: a ready queue over the DAG.  Worker
 * threads take the ready job with the longest path to a sink first, as long
 * as the running jobs' memory estimates fit the budget and a device is free
 * for device jobs.  The outputs do not depend on the order: a job sees only
 * its inputs, and its seed comes from its name. */
#include "config.h"

#include "lp-internal.h"
#include "scheduler.h"

typedef struct {
  LpSchedule *s;
  GMutex lock;
  GCond cond;
  guint *deps_left;     /* per job */
  gboolean *started;
  guint n_done;
  guint n_running;
  guint64 mem_running;
  guint dev_running;
  GError *error;        /* first failure: stop starting jobs */
} State;

/* The best job that may start now, or G_MAXUINT.  Called with the lock held. */
static guint
pick (State *st)
{
  LpSchedule *s = st->s;
  guint best = G_MAXUINT;
  for (guint i = 0; i < s->n_jobs; i++)
    {
      const LpSchedJob *j = &s->jobs[i];
      if (st->started[i] || st->deps_left[i] > 0)
        continue;
      /* A job bigger than the whole budget still runs, alone. */
      if (s->memory_limit > 0 && st->n_running > 0 && st->mem_running + j->memory > s->memory_limit)
        continue;
      if (j->device && s->n_devices > 0 && st->dev_running >= s->n_devices)
        continue;
      if (best == G_MAXUINT || j->priority > s->jobs[best].priority)
        best = i;
    }
  return best;
}

static gpointer
worker (gpointer data)
{
  State *st = data;
  LpSchedule *s = st->s;
  g_mutex_lock (&st->lock);
  for (;;)
    {
      if (st->error != NULL || st->n_done == s->n_jobs)
        break;
      guint i = pick (st);
      if (i == G_MAXUINT)
        {
          /* Nothing can start: if nothing runs either, the rest is unreachable. */
          if (st->n_running == 0)
            {
              if (st->error == NULL)
                g_set_error (&st->error, LP_ERROR, LP_ERROR_FAILED, "scheduler: %u jobs can never start",
                             s->n_jobs - st->n_done);
              break;
            }
          g_cond_wait (&st->cond, &st->lock);
          continue;
        }
      const LpSchedJob *j = &s->jobs[i];
      st->started[i] = TRUE;
      st->n_running++;
      st->mem_running += j->memory;
      st->dev_running += j->device;
      g_mutex_unlock (&st->lock);

      GError *e = NULL;
      gboolean ok = s->exec (s->user_data, i, &e);

      g_mutex_lock (&st->lock);
      st->n_running--;
      st->mem_running -= j->memory;
      st->dev_running -= j->device;
      st->n_done++;
      if (!ok && st->error == NULL)
        st->error = e;
      else if (!ok)
        g_error_free (e);
      for (guint k = 0; k < j->n_successors; k++)
        st->deps_left[j->successors[k]]--;
      g_cond_broadcast (&st->cond);
    }
  g_cond_broadcast (&st->cond);
  g_mutex_unlock (&st->lock);
  return NULL;
}

gboolean
lp_schedule_parallel (LpSchedule *schedule, GError **error)
{
  State st = { 0 };
  st.s = schedule;
  g_mutex_init (&st.lock);
  g_cond_init (&st.cond);
  st.deps_left = g_new0 (guint, schedule->n_jobs);
  st.started = g_new0 (gboolean, schedule->n_jobs);
  for (guint i = 0; i < schedule->n_jobs; i++)
    st.deps_left[i] = schedule->jobs[i].n_deps;
  guint n = MAX (1, MIN (schedule->n_threads, schedule->n_jobs));
  g_autoptr (GPtrArray) threads = g_ptr_array_new ();
  for (guint t = 0; t < n; t++)
    g_ptr_array_add (threads, g_thread_new ("llmpress-job", worker, &st));
  for (guint t = 0; t < threads->len; t++)
    g_thread_join (threads->pdata[t]);
  g_free (st.deps_left);
  g_free (st.started);
  g_mutex_clear (&st.lock);
  g_cond_clear (&st.cond);
  if (st.error != NULL)
    {
      g_propagate_error (error, st.error);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_schedule_run (const char *name, LpSchedule *schedule, GError **error)
{
  if (g_strcmp0 (name, "sequential") == 0)
    return lp_schedule_sequential (schedule, error);
  if (g_strcmp0 (name, "parallel") == 0)
    return lp_schedule_parallel (schedule, error);
  g_set_error (error, LP_ERROR, LP_ERROR_INVALID, "unknown scheduler '%s': expected sequential or parallel", name);
  return FALSE;
}
