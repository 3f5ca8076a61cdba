#version 450
// The sum of squares of n floats (LP_COP_SUM_SQ), in two passes:
//   pass 0: work group w writes part[w], the sum over its invocations'
//           strided elements of a[i]^2;
//   pass 1: one work group writes dst[0] = sum of part[0 .. n) (+ acc[0]
//           when has_acc).
// Each invocation sums in float, the group reduces in shared memory.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };
layout(std430, binding = 1) readonly buffer AccBuf { float acc[]; };
layout(std430, binding = 2) buffer PartBuf { float part[]; };
layout(std430, binding = 3) writeonly buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint n, pass, has_acc;
} p;

shared float red[gl_WorkGroupSize.x];

void main ()
{
  uint tid = gl_LocalInvocationID.x;
  float s = 0.0;
  if (p.pass == 0u)
    {
      uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
      for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
        s += a[i] * a[i];
    }
  else
    for (uint i = tid; i < p.n; i += gl_WorkGroupSize.x)
      s += part[i];
  red[tid] = s;
  barrier ();
  for (uint k = gl_WorkGroupSize.x / 2; k > 0; k /= 2)
    {
      if (tid < k)
        red[tid] += red[tid + k];
      barrier ();
    }
  if (tid != 0u)
    return;
  if (p.pass == 0u)
    part[gl_WorkGroupID.x] = red[0];
  else
    dst[0] = red[0] + (p.has_acc != 0u ? acc[0] : 0.0);
}
