/* llmpress distill plugin — distill.teacher, the teacher's top-k logits as
 * an artifact (teacher.c), for the plugin's pass list (distill.c); and what
 * a student's pass (distill.recover) needs to read them. */
#pragma once

#include <llmpress/llmpress.h>
#include <llmpress/train.h>

extern const LpPassInfo lp_distill_teacher_pass;

/* The declaration of a student pass's optional input that takes them. */
#define DISTILL_TEACHER_LOGITS_INPUT                                                                               \
  { .name = "teacher_logits", .kind = LP_ARTIFACT_LOGITS, .optional = TRUE,                                       \
    .help = "e2e: the teacher's top-k logits on the calibration samples (a distill.teacher node), computed once for " \
            "every student and used instead of running the teacher; training runs at their temperature" }

/* The teacher logits connected to input "teacher_logits", checked for this
 * student: its vocabulary, the calibration samples it trains on (cal), an
 * e2e objective, and the temperature (*temperature: the student's, set
 * when `temperature_set`; the logits' is written back, since a rest bucket
 * cannot be moved to another temperature).  *out NULL when unconnected.
 * FALSE with one line otherwise. */
gboolean distill_teacher_logits_input (LpPassContext *ctx, LpModel *student, LpCalibration *cal, gboolean e2e,
                                       gboolean temperature_set, double *temperature, LpLogits **out,
                                       GError **error);
/* Sample i's top-k as the trainer takes it (train.h). */
void distill_teacher_logits_sample (LpLogits *lg, int sample, LpTeacherLogits *out);
