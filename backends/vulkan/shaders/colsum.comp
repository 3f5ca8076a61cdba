#version 450
// dst[j] = sum over rows t of a[t, j]            (mode 0: a broadcast bias's gradient)
//        = sum over rows t of a[t, j] b[t, j] r[t] (mode 1: RMSNorm's weight gradient,
//          r the rows' 1 / rms).
// One thread per column, the rows in order: the reference's summation order.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };
layout(std430, binding = 1) readonly buffer BBuf { float b[]; };
layout(std430, binding = 2) readonly buffer RBuf { float r[]; };
layout(std430, binding = 3) writeonly buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint T, n, mode;
} p;

void main ()
{
  uint j = gl_GlobalInvocationID.x;
  if (j >= p.n)
    return;
  float s = 0.0;
  for (uint t = 0; t < p.T; t++)
    s += p.mode == 0u ? a[t * p.n + j] : a[t * p.n + j] * b[t * p.n + j] * r[t];
  dst[j] = s;
}
