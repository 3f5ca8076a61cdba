/* llmpress prune plugin — the passes' run functions, one file each. */
#pragma once

#include <llmpress/llmpress.h>

gboolean prune_magnitude_run (LpPassContext *ctx, GError **error);
gboolean prune_wanda_run (LpPassContext *ctx, GError **error);
gboolean prune_sparsegpt_run (LpPassContext *ctx, GError **error);
gboolean prune_layers_run (LpPassContext *ctx, GError **error);
gboolean prune_channels_run (LpPassContext *ctx, GError **error);
