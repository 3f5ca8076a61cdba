/* llmpress — artifacts: a model or metrics, refcounted. */
#include "config.h"

#include "lp-internal.h"

struct _LpArtifact {
  gint ref_count;
  LpArtifactKind kind;
  LpModel *model;
  LpMeta *metrics;
  LpStats *stats;
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
    default:
      return "nothing";
    }
}

LpArtifact *
lp_artifact_new_model (LpModel *model)
{
  g_return_val_if_fail (model != NULL, NULL);
  LpArtifact *a = g_new0 (LpArtifact, 1);
  a->ref_count = 1;
  a->kind = LP_ARTIFACT_MODEL;
  a->model = lp_model_ref (model);
  return a;
}

LpArtifact *
lp_artifact_new_metrics (LpMeta *metrics)
{
  g_return_val_if_fail (metrics != NULL, NULL);
  LpArtifact *a = g_new0 (LpArtifact, 1);
  a->ref_count = 1;
  a->kind = LP_ARTIFACT_METRICS;
  a->metrics = metrics;
  return a;
}

LpArtifact *
lp_artifact_new_stats (LpStats *stats)
{
  g_return_val_if_fail (stats != NULL, NULL);
  LpArtifact *a = g_new0 (LpArtifact, 1);
  a->ref_count = 1;
  a->kind = LP_ARTIFACT_STATS;
  a->stats = lp_stats_ref (stats);
  return a;
}

LpStats *
lp_artifact_get_stats (const LpArtifact *artifact)
{
  return artifact ? artifact->stats : NULL;
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

