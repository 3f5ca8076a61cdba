/* llmpress distill plugin — distill.teacher, the teacher's top-k logits as
 * an artifact (teacher.c), for the plugin's pass list (distill.c). */
#pragma once

#include <llmpress/llmpress.h>

extern const LpPassInfo lp_distill_teacher_pass;
