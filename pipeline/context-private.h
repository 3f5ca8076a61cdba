/* llmpress — the pass context as the runner builds it.  Not part of the SDK. */
#pragma once

#include <glib.h>
#include <llmpress/context.h>
#include "graph.h"

/* Shared by every context of one run: where messages go (written under
 * lp_stderr_lock, one line at a time). */
typedef struct {
  gboolean quiet;
  gboolean tty;
  gint cancelled;         /* atomic */
  gint64 t0;              /* run start, monotonic microseconds */
} LpRunShared;

struct _LpPassContext {
  LpNode *node;
  LpArtifact **inputs;    /* per node->inputs entry (borrowed) */
  LpParamValue **values;  /* per declared parameter, paths resolved (borrowed) */
  LpArtifact *output;     /* owned */
  const char *backend_name;
  LpBackend *backend;
  guint64 device_memory;     /* --device-memory: bytes of weights a forward pass keeps on the backend (0: no limit) */
  const char *calibration_path;
  const LpPipelineSettings *settings; /* calibration sampling */
  LpCalibration *calibration;         /* built on first use (owned) */
  guint64 seed;
  LpRunShared *shared;
  char *scratch_dir;
  gint64 last_progress;   /* throttles progress lines */
};

void lp_pass_context_init (LpPassContext *ctx, LpNode *node, LpArtifact **inputs,
                           LpParamValue **values, LpRunShared *shared);
/* Removes the scratch directory, drops the output. */
void lp_pass_context_clear (LpPassContext *ctx);
