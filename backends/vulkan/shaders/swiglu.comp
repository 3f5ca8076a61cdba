#version 450
// out = silu(gate) * up, element-wise.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer GBuf { float g[]; };
layout(std430, binding = 1) readonly buffer UBuf { float u[]; };
layout(std430, binding = 2) writeonly buffer OBuf { float o[]; };

layout(push_constant) uniform Params {
  uint n;
} p;

void main ()
{
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
    {
      float v = g[i];
      o[i] = v / (1.0 + exp (-v)) * u[i];
    }
}
