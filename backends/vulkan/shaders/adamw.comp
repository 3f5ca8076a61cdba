#version 450
// One AdamW step in place over n parameters (LP_COP_ADAMW; compute_optim.c
// is the definition): g = gs grad; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// param -= lr (m c1 / (sqrt (v c2) + eps) + wd param), c1 and c2 the bias
// corrections computed by the host.  Where keep is 0 (has_keep) nothing moves.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer PBuf { float param[]; };
layout(std430, binding = 1) readonly buffer GBuf { float grad[]; };
layout(std430, binding = 2) buffer MBuf { float m[]; };
layout(std430, binding = 3) buffer VBuf { float v[]; };
layout(std430, binding = 4) readonly buffer KBuf { float keep[]; };

layout(push_constant) uniform Params {
  uint n, has_keep;
  float lr, b1, b2, eps, wd, gs, c1, c2;
} p;

void main ()
{
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
    {
      if (p.has_keep != 0u && keep[i] == 0.0)
        continue;
      float g = p.gs * grad[i];
      float mi = p.b1 * m[i] + (1.0 - p.b1) * g, vi = p.b2 * v[i] + (1.0 - p.b2) * g * g;
      float pi = param[i];
      param[i] = pi - p.lr * (mi * p.c1 / (sqrt (vi * p.c2) + p.eps) + p.wd * pi);
      m[i] = mi;
      v[i] = vi;
    }
}
