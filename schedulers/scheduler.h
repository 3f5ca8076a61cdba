/* llmpress — schedulers: order the jobs of a run over a DAG.  They know
 * nothing of passes or caches: run.c hands them jobs with dependencies,
 * a priority, a memory estimate and a device flag, and a function to run
 * one job.  Not part of the SDK. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  guint n_deps;          /* jobs that must finish first */
  guint *successors;     /* jobs that wait for this one */
  guint n_successors;
  double priority;       /* longest path to a sink: higher first */
  guint64 memory;        /* estimated peak bytes while it runs */
  gboolean device;       /* holds an accelerator while it runs */
} LpSchedJob;

/* Run job i; thread-safe for the parallel scheduler. */
typedef gboolean (*LpSchedExecFunc) (gpointer user_data, guint job, GError **error);

typedef struct {
  LpSchedJob *jobs;      /* in a topological order */
  guint n_jobs;
  LpSchedExecFunc exec;
  gpointer user_data;
  guint n_threads;       /* parallel: at most this many jobs at once */
  guint64 memory_limit;  /* parallel: admit while the running estimates fit (0: none) */
  guint n_devices;       /* parallel: device jobs at once (0: no limit, CPU backend) */
} LpSchedule;

/* One job at a time, in the given order; stops at the first failure. */
gboolean lp_schedule_sequential (LpSchedule *schedule, GError **error);
/* A ready queue, highest priority first, limited by threads, memory and
 * devices; a job too big for the budget runs alone.  On a failure no new job
 * starts, the running ones finish, and the first error is returned. */
gboolean lp_schedule_parallel (LpSchedule *schedule, GError **error);
/* By name ("sequential", "parallel"). */
gboolean lp_schedule_run (const char *name, LpSchedule *schedule, GError **error);

G_END_DECLS
