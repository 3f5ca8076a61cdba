/* llmpress — the optimizer's ops (compute.h): LP_COP_ADAMW, one AdamW step
 * over a parameter in place, and LP_COP_SUM_SQ, the sum of squares behind
 * the global gradient norm.  Each has its plain C reference (in double,
 * rounded once to f32) and its CPU kernel (float, as a device computes it).
 *
 * AdamW is Loshchilov & Hutter's: the weight decay is decoupled from the
 * gradient (param -= lr wd param beside the Adam update, not added to g),
 * with Adam's bias correction by step i[0] (PyTorch's torch.optim.AdamW).
 * A keep-mask (the masked form's) freezes its zeros completely: neither
 * the parameter nor its moments move there, so a pruned weight stays
 * exactly 0. */
#include "config.h"

#include <math.h>

#include "compute-internal.h"

static float *
f32 (const LpCTensor *t)
{
  return t->buf;
}

/* The bias corrections 1 / (1 - beta^step), in double. */
static void
adamw_corrections (const LpCNode *node, double *c1, double *c2)
{
  double step = (double) MAX (node->i[0], 1);
  *c1 = 1.0 / (1.0 - pow (node->f[1], step));
  *c2 = 1.0 / (1.0 - pow (node->f[2], step));
}

void
lp_cop_adamw_ref (const LpCNode *node)
{
  float *p = f32 (node->dst[0]), *m = f32 (node->dst[1]), *v = f32 (node->dst[2]);
  const float *g = f32 (node->src[1]), *keep = node->src[4] ? f32 (node->src[4]) : NULL;
  double lr = node->f[0], b1 = node->f[1], b2 = node->f[2], eps = node->f[3], wd = node->f[4], gs = node->f[5];
  double c1, c2;
  adamw_corrections (node, &c1, &c2);
  gint64 n = lp_ctensor_n_elements (node->src[0]);
  for (gint64 i = 0; i < n; i++)
    {
      if (keep != NULL && keep[i] == 0.0f)
        continue;
      double gi = gs * g[i];
      double mi = b1 * m[i] + (1.0 - b1) * gi, vi = b2 * v[i] + (1.0 - b2) * gi * gi;
      double pi = p[i];
      p[i] = (float) (pi - lr * (mi * c1 / (sqrt (vi * c2) + eps) + wd * pi));
      m[i] = (float) mi;
      v[i] = (float) vi;
    }
}

void
lp_cop_adamw_cpu (const LpCNode *node)
{
  float *p = f32 (node->dst[0]), *m = f32 (node->dst[1]), *v = f32 (node->dst[2]);
  const float *g = f32 (node->src[1]), *keep = node->src[4] ? f32 (node->src[4]) : NULL;
  float lr = node->f[0], b1 = node->f[1], b2 = node->f[2], eps = node->f[3], wd = node->f[4], gs = node->f[5];
  double c1d, c2d;
  adamw_corrections (node, &c1d, &c2d);
  float c1 = (float) c1d, c2 = (float) c2d;
  gint64 n = lp_ctensor_n_elements (node->src[0]);
  for (gint64 i = 0; i < n; i++)
    {
      if (keep != NULL && keep[i] == 0.0f)
        continue;
      float gi = gs * g[i];
      float mi = b1 * m[i] + (1.0f - b1) * gi, vi = b2 * v[i] + (1.0f - b2) * gi * gi;
      p[i] -= lr * (mi * c1 / (sqrtf (vi * c2) + eps) + wd * p[i]);
      m[i] = mi;
      v[i] = vi;
    }
}

void
lp_cop_sum_sq_ref (const LpCNode *node)
{
  const float *x = f32 (node->src[0]);
  gint64 n = lp_ctensor_n_elements (node->src[0]);
  double s = node->src[1] ? f32 (node->src[1])[0] : 0.0;
  for (gint64 i = 0; i < n; i++)
    s += (double) x[i] * x[i];
  f32 (node->dst[0])[0] = (float) s;
}

/* In double too: a sum of millions of squares in float would lose the
 * small ones, and the norm decides clipping. */
void
lp_cop_sum_sq_cpu (const LpCNode *node)
{
  lp_cop_sum_sq_ref (node);
}
