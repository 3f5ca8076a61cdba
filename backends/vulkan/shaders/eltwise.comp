#version 450
// Element-wise ops over n floats, by mode:
//   0 ADD          d = a + b[i % nb]   (nb = n, or one row broadcast over rows)
//   1 SCALE        d = f * a
//   2 SWIGLU_BACK  a = dy, b = gate, c = up: d = d(gate), e = d(up) of silu (gate) * up
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };
layout(std430, binding = 1) readonly buffer BBuf { float b[]; };
layout(std430, binding = 2) readonly buffer CBuf { float c[]; };
layout(std430, binding = 3) writeonly buffer DBuf { float d[]; };
layout(std430, binding = 4) writeonly buffer EBuf { float e[]; };

layout(push_constant) uniform Params {
  uint n, nb, mode;
  float f;
} p;

void main ()
{
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
    {
      if (p.mode == 0u)
        d[i] = a[i] + b[i % p.nb];
      else if (p.mode == 1u)
        d[i] = p.f * a[i];
      else
        {
          float g = b[i], s = 1.0 / (1.0 + exp (-g));
          d[i] = a[i] * c[i] * s * (1.0 + g * (1.0 - s));
          e[i] = a[i] * g * s;
        }
    }
}
