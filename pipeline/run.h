/* llmpress — running a validated graph: cache planning, scheduling, the pass
 * context, the report.  Not part of the SDK. */
#pragma once

#include <stdio.h>
#include <glib.h>
#include "graph.h"
#include "cache.h"

G_BEGIN_DECLS

typedef struct {
  const char *scheduler;     /* "sequential" | "parallel"; NULL: parallel when jobs > 1 */
  guint jobs;                /* 0: 1 */
  guint64 memory_limit;      /* bytes; 0: none */
  guint64 device_memory;     /* bytes of weights a forward pass keeps on the backend; 0: no limit */
  const char *cache_dir;     /* NULL: lp_cache_default_dir () */
  gboolean no_cache;
  gboolean explain;          /* print why each node ran or was reused */
  gboolean dry_run;          /* plan and explain only */
  gboolean quiet;            /* no progress or logs on stderr */
  const char *output_dir;    /* report.json and relative output paths; NULL: "." */
  const char *backend;       /* overrides [pipeline] backend; default "cpu" */
  const char *calibration;   /* overrides [pipeline] calibration */
  FILE *out;                 /* explain lines and the table; NULL: stdout */
} LpRunOptions;

typedef struct _LpRun LpRun;

LpRun *lp_run_new (LpGraph *graph, const LpRunOptions *options, GError **error);
void lp_run_free (LpRun *run);
/* Plan (keys, cache lookups), run what must run, write report.json. */
gboolean lp_run_execute (LpRun *run, GError **error);
/* The per-node table. */
void lp_run_print_table (LpRun *run, FILE *out);
/* Ask running passes to stop (signal-safe: sets a flag). */
void lp_run_cancel (LpRun *run);

/* Resolve a node's relative path parameters against the output directory
 * (outputs) or the current directory (inputs): the path a node will use. */
char *lp_run_resolve_path (const char *output_dir, const LpParamSpec *spec, const char *path);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpRun, lp_run_free)

G_END_DECLS
