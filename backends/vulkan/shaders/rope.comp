#version 450
// Rotate pairs of x[T, n_heads*hd] in place.  cs[t][i] = (cos, sin) of
// (pos0 + t) * inv_freq[i], computed by the host in double precision:
// device sin/cos are only required to be accurate to 2^-11 near zero, far
// worse than the reference at positions in the thousands.
// style 0 (NORMAL) rotates (2i, 2i+1); style 1 (NEOX) rotates (i, i+hd/2).
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer XBuf { float x[]; };
layout(std430, binding = 1) readonly buffer CSBuf { vec2 cs[]; };

layout(push_constant) uniform Params {
  uint T, n_heads, hd, style;
} p;

void main ()
{
  uint half_hd = p.hd / 2;
  uint total = p.T * p.n_heads * half_hd;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride)
    {
      uint i = e % half_hd;
      uint th = e / half_hd; // t * n_heads + h
      uint t = th / p.n_heads;
      uint base = th * p.hd;
      uint ia = base + (p.style == 0 ? 2 * i : i);
      uint ib = base + (p.style == 0 ? 2 * i + 1 : i + half_hd);
      vec2 r = cs[t * half_hd + i];
      float x0 = x[ia], x1 = x[ib];
      x[ia] = x0 * r.x - x1 * r.y;
      x[ib] = x0 * r.y + x1 * r.x;
    }
}
