/* llmpress distill plugin — the passes' run functions and what they share. */
#pragma once

#include <llmpress/llmpress.h>

#include "teacher-pass.h"

/* distill.recover: train the student (input) toward the teacher. */
gboolean distill_recover_run (LpPassContext *ctx, GError **error);

/* Whether `teacher` can teach `student`: the same architecture, vocabulary
 * and tokenizer (tokenizer.ggml.* keys), and with `same_blocks` the same
 * model dimension and number of blocks (block-wise targets line up only
 * then).  The error is one line naming what differs. */
gboolean distill_check_teacher (LpModel *student, LpModel *teacher, gboolean same_blocks, GError **error);
