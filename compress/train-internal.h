/* llmpress — the trainer's insides the tests read (not part of the SDK). */
#pragma once

#include <llmpress/train.h>
#include <llmpress/form.h>

/* Trained tensor `name`'s parameter i: its accumulated gradient into out
 * (host f32, the parameter's elements); FALSE when it has none. */
gboolean lp_trainer_grad (LpTrainer *tr, const char *name, int i, float *out, GError **error);
/* Trained tensor `name`'s weights on the backend (borrowed), or NULL. */
LpFormWeights *lp_trainer_weights (LpTrainer *tr, const char *name);
