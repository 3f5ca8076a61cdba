#version 450
// RMSNorm's backward, one row per work group: with r = 1 / sqrt (mean (x^2) + eps),
//   mode 0: dx = r w dy - x r^3 sum (dy w x) / D   (y = x r w)
//   mode 1: rs[row] = r only (for the weight's gradient, colsum.comp).
// With ROWS, one row an invocation instead (rows up to 256, where a group's
// reduction would be mostly barriers).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool ROWS = false;

layout(std430, binding = 0) readonly buffer DyBuf { float dy[]; };
layout(std430, binding = 1) readonly buffer XBuf { float x[]; };
layout(std430, binding = 2) readonly buffer WBuf { float w[]; };
layout(std430, binding = 3) writeonly buffer DxBuf { float dx[]; };

layout(push_constant) uniform Params {
  uint D, mode;
  float eps;
  uint n_rows; // with ROWS
} p;

shared float ss[gl_WorkGroupSize.x];
shared float sd[gl_WorkGroupSize.x];

void main ()
{
  uint tid = ROWS ? 0u : gl_LocalInvocationID.x, n = ROWS ? 1u : gl_WorkGroupSize.x;
  uint row = ROWS ? gl_GlobalInvocationID.x : gl_WorkGroupID.x, base = row * p.D;
  if (ROWS && row >= p.n_rows)
    return;
  float s = 0.0, sdot = 0.0;
  for (uint d = tid; d < p.D; d += n)
    {
      float xv = x[base + d];
      s = fma (xv, xv, s);
      if (p.mode == 0u)
        sdot = fma (dy[base + d] * w[d], xv, sdot);
    }
  if (!ROWS)
    {
      ss[tid] = s;
      sd[tid] = sdot;
      barrier ();
      for (uint stride = n / 2; stride > 0; stride /= 2)
        {
          if (tid < stride)
            {
              ss[tid] += ss[tid + stride];
              sd[tid] += sd[tid + stride];
            }
          barrier ();
        }
      s = ss[0];
      sdot = sd[0];
    }
  float r = 1.0 / sqrt (s / float (p.D) + p.eps);
  if (p.mode == 1u)
    {
      if (tid == 0u)
        dx[row] = r;
      return;
    }
  float k = r * r * r * sdot / float (p.D);
  for (uint d = tid; d < p.D; d += n)
    dx[base + d] = r * w[d] * dy[base + d] - x[base + d] * k;
}
