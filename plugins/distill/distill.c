/* llmpress distill plugin: knowledge distillation.
 *   distill.teacher  the teacher's top-k logits on the calibration samples,
 *                    as an artifact any number of students read
 * (Branch h-logits: distill.recover is written on h-distill; this list
 * gains it there.) */
#include "config.h"

#include "teacher-pass.h"

static const LpPassInfo *const passes[] = { &lp_distill_teacher_pass, NULL };

LP_PLUGIN_DEFINE ("distill", PACKAGE_VERSION, "MIT", passes)
