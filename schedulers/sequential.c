/* llmpress — the sequential scheduler: one job at a time, in the given
 * topological order.  The reference the parallel scheduler must match. */
#include "config.h"

#include "scheduler.h"

gboolean
lp_schedule_sequential (LpSchedule *schedule, GError **error)
{
  for (guint i = 0; i < schedule->n_jobs; i++)
    if (!schedule->exec (schedule->user_data, i, error))
      return FALSE;
  return TRUE;
}
