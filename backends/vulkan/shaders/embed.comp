#version 450
// dst[t, :] = table[ids[t], :] (f32 rows of D); an id outside 0..V-1 gives
// a row of zeros (the host checks ids before they get here).
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer TBuf { float table[]; };
layout(std430, binding = 1) readonly buffer IBuf { int ids[]; };
layout(std430, binding = 2) writeonly buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint T, D, V;
} p;

void main ()
{
  uint n = p.T * p.D, stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < n; e += stride)
    {
      uint t = e / p.D, d = e % p.D;
      int id = ids[t];
      dst[e] = id >= 0 && uint (id) < p.V ? table[uint (id) * p.D + d] : 0.0;
    }
}
