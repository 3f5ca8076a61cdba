#version 450
// y[row] = x[row] / sqrt(mean(x[row]^2) + eps) * w, one row per work group
// (a power-of-two group size, specialized), or with ROWS one row per
// invocation: for short rows (a small model's D), where the group's
// reduction would be mostly barriers.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool ROWS = false;

layout(std430, binding = 0) readonly buffer XBuf { float x[]; };
layout(std430, binding = 1) readonly buffer WBuf { float w[]; };
layout(std430, binding = 2) writeonly buffer YBuf { float y[]; };

layout(push_constant) uniform Params {
  uint D, row0;
  float eps;
  uint n_rows; // with ROWS
} p;

shared float partial[gl_WorkGroupSize.x];

void main ()
{
  if (ROWS)
    {
      uint row = gl_GlobalInvocationID.x;
      if (row >= p.n_rows)
        return;
      uint base = (p.row0 + row) * p.D;
      float s = 0.0;
      for (uint d = 0; d < p.D; d++)
        s = fma (x[base + d], x[base + d], s);
      float scale = 1.0 / sqrt (s / float (p.D) + p.eps);
      for (uint d = 0; d < p.D; d++)
        y[base + d] = x[base + d] * scale * w[d];
      return;
    }
  uint tid = gl_LocalInvocationID.x, n = gl_WorkGroupSize.x;
  uint base = (p.row0 + gl_WorkGroupID.x) * p.D;
  float s = 0.0;
  for (uint d = tid; d < p.D; d += n)
    s = fma (x[base + d], x[base + d], s);
  partial[tid] = s;
  barrier ();
  for (uint stride = n / 2; stride > 0; stride /= 2)
    {
      if (tid < stride)
        partial[tid] += partial[tid + stride];
      barrier ();
    }
  float scale = 1.0 / sqrt (partial[0] / float (p.D) + p.eps);
  for (uint d = tid; d < p.D; d += n)
    y[base + d] = x[base + d] * scale * w[d];
}
