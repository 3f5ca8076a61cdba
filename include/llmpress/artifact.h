/* llmpress — an artifact: what flows along an edge of a pipeline graph.
 *
 * A model (LpModel, shared, never mutated once published: a pass that
 * changes a model builds a new LpModel sharing the unchanged tensors), a
 * set of metrics (an ordered LpMeta of scalars: integers, floats, strings,
 * booleans), activation statistics (LpStats) or a teacher's top-k logits
 * (LpLogits).  Refcounted, because one artifact may feed several branches and
 * sit in the cache at the same time. */
#pragma once

#include <glib.h>
#include <llmpress/meta.h>
#include <llmpress/model.h>
#include <llmpress/stats.h>
#include <llmpress/logits.h>

G_BEGIN_DECLS

typedef enum {
  LP_ARTIFACT_NONE = 0,    /* a pass that only writes files (save) */
  LP_ARTIFACT_MODEL = 1,
  LP_ARTIFACT_METRICS = 2,
  LP_ARTIFACT_STATS = 3,   /* activation statistics (LpStats, stats.h) */
  LP_ARTIFACT_LOGITS = 4,  /* a teacher's top-k next-token distributions (LpLogits, logits.h) */
} LpArtifactKind;

typedef struct _LpArtifact LpArtifact;

const char *lp_artifact_kind_name (LpArtifactKind kind);

/* Takes a ref on model. */
LpArtifact *lp_artifact_new_model (LpModel *model);
/* Takes ownership of metrics. */
LpArtifact *lp_artifact_new_metrics (LpMeta *metrics);

LpArtifact *lp_artifact_ref (LpArtifact *artifact);
void lp_artifact_unref (LpArtifact *artifact);

LpArtifactKind lp_artifact_kind (const LpArtifact *artifact);
/* Takes a ref on stats. */
LpArtifact *lp_artifact_new_stats (LpStats *stats);
/* Takes a ref on logits. */
LpArtifact *lp_artifact_new_logits (LpLogits *logits);
/* Borrowed; NULL when the artifact is not of that kind. */
LpModel *lp_artifact_get_model (const LpArtifact *artifact);
LpStats *lp_artifact_get_stats (const LpArtifact *artifact);
LpLogits *lp_artifact_get_logits (const LpArtifact *artifact);
const LpMeta *lp_artifact_get_metrics (const LpArtifact *artifact);

/* Average storage bits per parameter over every tensor (0 for an empty model). */
double lp_model_bits_per_weight (const LpModel *model);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpArtifact, lp_artifact_unref)

G_END_DECLS
