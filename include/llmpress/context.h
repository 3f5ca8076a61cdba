/* llmpress — what a running pass sees: its inputs, its parameters, the
 * backend, the calibration service, progress, logging, cancellation and a
 * scratch directory.  The runner owns the context; everything returned is
 * borrowed and lives until run() returns. */
#pragma once

#include <glib.h>
#include <llmpress/artifact.h>
#include <llmpress/params.h>

G_BEGIN_DECLS

typedef struct _LpPassContext LpPassContext;
#include <llmpress/backend.h>
#include <llmpress/calibration.h>

typedef enum {
  LP_LOG_ERROR,
  LP_LOG_WARNING,
  LP_LOG_INFO,
  LP_LOG_DEBUG,
} LpLogLevel;

/* The node's name in the spec ("prune" for [prune]). */
const char *lp_pass_context_node_name (LpPassContext *ctx);

/* The artifact connected to a declared input, or NULL for an optional input
 * left unconnected. */
LpArtifact *lp_pass_context_get_input (LpPassContext *ctx, const char *input);
/* The same, as a model (NULL when absent). */
LpModel *lp_pass_context_get_input_model (LpPassContext *ctx, const char *input);

/* A gathering pass (LP_PASS_GATHERS): how many branches its inputs hold,
 * the artifact of branch i (0 <= i < n) on a declared input, and that
 * branch's node name ("gptq[bits=3]").  Any other pass holds one branch. */
guint lp_pass_context_get_n_branches (LpPassContext *ctx);
LpArtifact *lp_pass_context_get_input_branch (LpPassContext *ctx, const char *input, guint i);
const char *lp_pass_context_get_input_branch_name (LpPassContext *ctx, const char *input, guint i);

/* Parameter values, parsed and range-checked before the run started (from
 * the spec or the declared default).  Asking for an undeclared name or the
 * wrong type is a programming error. */
gboolean lp_pass_context_get_bool (LpPassContext *ctx, const char *name);
gint64 lp_pass_context_get_int (LpPassContext *ctx, const char *name);
double lp_pass_context_get_float (LpPassContext *ctx, const char *name);
/* STRING, ENUM and PATH parameters (paths already resolved); NULL for an
 * optional parameter with no default that the spec left out. */
const char *lp_pass_context_get_string (LpPassContext *ctx, const char *name);
/* ENUM: index in `choices`. */
int lp_pass_context_get_enum (LpPassContext *ctx, const char *name);
const LpTensorPattern *lp_pass_context_get_tensors (LpPassContext *ctx, const char *name);
/* Whether the spec gave the parameter (rather than the default applying). */
gboolean lp_pass_context_param_is_set (LpPassContext *ctx, const char *name);

/* Publish the result (takes a ref / ownership). */
void lp_pass_context_set_output (LpPassContext *ctx, LpArtifact *artifact);
void lp_pass_context_set_output_model (LpPassContext *ctx, LpModel *model);
void lp_pass_context_set_output_metrics (LpPassContext *ctx, LpMeta *metrics);

/* The backend the run was given (NULL: none yet) and its name ("cpu"). */
LpBackend *lp_pass_context_get_backend (LpPassContext *ctx);
const char *lp_pass_context_get_backend_name (LpPassContext *ctx);
/* Bytes of weights a forward pass may keep on the backend (--device-memory;
 * 0: no limit): for lp_forward_set_device_memory and LpEvalOptions. */
guint64 lp_pass_context_get_device_memory (LpPassContext *ctx);
/* The calibration samples: cut from the calibration data ([pipeline]
 * calibration= / --calib) as [pipeline] calibration_samples, _seq_len,
 * _range and _mode say, tokenized with the "input" model's vocabulary when
 * the data is text.  NULL with an error when no calibration data was given
 * or it cannot be read.  Built on first use; borrowed. */
LpCalibration *lp_pass_context_get_calibration (LpPassContext *ctx, GError **error);
/* The calibration data path (NULL when not given, or when the pass does not
 * declare LP_PASS_USES_CALIBRATION). */
const char *lp_pass_context_get_calibration_path (LpPassContext *ctx);
/* A seed for this node: the pipeline's seed mixed with the node name, so a
 * node gets the same one whatever the schedule. */
guint64 lp_pass_context_get_seed (LpPassContext *ctx);

/* Progress of the current step (`what` may be NULL). */
void lp_pass_context_progress (LpPassContext *ctx, guint64 done, guint64 total, const char *what);
void lp_pass_context_log (LpPassContext *ctx, LpLogLevel level, const char *format, ...)
  G_GNUC_PRINTF (3, 4);
/* TRUE once the user interrupted the run: return FALSE with an error soon. */
gboolean lp_pass_context_cancelled (LpPassContext *ctx);
/* A private directory, created on first use and removed after the pass. */
const char *lp_pass_context_get_scratch_dir (LpPassContext *ctx, GError **error);

G_END_DECLS
