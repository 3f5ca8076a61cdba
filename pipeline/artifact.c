/* llmpress — artifacts: a model, metrics, statistics or teacher logits, refcounted. */
#include "config.h"

#include "lp-internal.h"

struct _LpArtifact {
  gint ref_count;
  LpArtifactKind kind;
  LpModel *model;
  LpMeta *metrics;
  LpStats *stats;
  LpLogits *logits;
};

const char *
lp_artifact_kind_name (LpArtifactKind kind)
{
  switch (kind)
    {
    case LP_ARTIFACT_MODEL:
      return "model";
    case LP_ARTIFACT_METRICS:
      return "metrics";
    case LP_ARTIFACT_STATS:
      return "stats";
    case LP_ARTIFACT_LOGITS:
      return "logits";
    default:
      return "nothing";
    }
}

/* A new artifact of `kind`, its content still to be set. */
static LpArtifact *
artifact_new (LpArtifactKind kind)
{
  LpArtifact *a = g_new0 (LpArtifact, 1);
  a->ref_count = 1;
  a->kind = kind;
  return a;
}

LpArtifact *
lp_artifact_new_model (LpModel *model)
{
  g_return_val_if_fail (model != NULL, NULL);
  LpArtifact *a = artifact_new (LP_ARTIFACT_MODEL);
  a->model = lp_model_ref (model);
  return a;
}

LpArtifact *
lp_artifact_new_metrics (LpMeta *metrics)
{
  g_return_val_if_fail (metrics != NULL, NULL);
  LpArtifact *a = artifact_new (LP_ARTIFACT_METRICS);
  a->metrics = metrics;
  return a;
}

LpArtifact *
lp_artifact_new_stats (LpStats *stats)
{
  g_return_val_if_fail (stats != NULL, NULL);
  LpArtifact *a = artifact_new (LP_ARTIFACT_STATS);
  a->stats = lp_stats_ref (stats);
  return a;
}

LpStats *
lp_artifact_get_stats (const LpArtifact *artifact)
{
  return artifact ? artifact->stats : NULL;
}

LpArtifact *
lp_artifact_new_logits (LpLogits *logits)
{
  g_return_val_if_fail (logits != NULL, NULL);
  LpArtifact *a = artifact_new (LP_ARTIFACT_LOGITS);
  a->logits = lp_logits_ref (logits);
  return a;
}

LpLogits *
lp_artifact_get_logits (const LpArtifact *artifact)
{
  return artifact ? artifact->logits : NULL;
}

LpArtifact *
lp_artifact_ref (LpArtifact *artifact)
{
  g_return_val_if_fail (artifact != NULL, NULL);
  g_atomic_int_inc (&artifact->ref_count);
  return artifact;
}

void
lp_artifact_unref (LpArtifact *artifact)
{
  if (artifact == NULL || !g_atomic_int_dec_and_test (&artifact->ref_count))
    return;
  if (artifact->model)
    lp_model_unref (artifact->model);
  if (artifact->metrics)
    lp_meta_free (artifact->metrics);
  if (artifact->stats)
    lp_stats_unref (artifact->stats);
  if (artifact->logits)
    lp_logits_unref (artifact->logits);
  g_free (artifact);
}

LpArtifactKind
lp_artifact_kind (const LpArtifact *artifact)
{
  return artifact ? artifact->kind : LP_ARTIFACT_NONE;
}

LpModel *
lp_artifact_get_model (const LpArtifact *artifact)
{
  return artifact ? artifact->model : NULL;
}

const LpMeta *
lp_artifact_get_metrics (const LpArtifact *artifact)
{
  return artifact ? artifact->metrics : NULL;
}

double
lp_model_bits_per_weight (const LpModel *model)
{
  gint64 n = lp_model_n_params (model);
  return n > 0 ? 8.0 * (double) lp_model_n_bytes (model) / (double) n : 0.0;
}

