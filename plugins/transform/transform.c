/* llmpress transform plugin: transforms that leave the model the same
 * function but change its weights, so that what comes after does better.
 *   transform.rotate  QuaRot / SpinQuant's absorbable rotations: RMSNorm
 *                     weights folded into the linears that read them, the
 *                     residual stream rotated by an orthogonal Q and each
 *                     attention head's values by an orthogonal H, all folded
 *                     into the weights (a standard Llama-family model still). */
#include "config.h"

#include "transform.h"

static const LpPassInfo *const passes[] = { &transform_rotate_pass, NULL };

LP_PLUGIN_DEFINE ("transform", PACKAGE_VERSION, "MIT", passes)
