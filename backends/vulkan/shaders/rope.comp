#version 450
// Rotate pairs of src[T, n_heads*hd] into dst (which may be src).
// cs[p][i] = (cos, sin) of p * inv_freq[i] for positions p, computed by the
// host in double precision: device sin/cos are only required to be
// accurate to 2^-11 near zero, far worse than the reference at positions in
// the thousands.  Row t sits at position pos0 + t.
// style 0 (NORMAL) rotates (2i, 2i+1); style 1 (NEOX) rotates (i, i+hd/2).
// inverse 1 rotates by the opposite angle: the transpose of the rotation,
// which is RoPE's backward.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer XBuf { float x[]; };
layout(std430, binding = 1) readonly buffer CSBuf { vec2 cs[]; };
layout(std430, binding = 2) writeonly buffer YBuf { float y[]; };

layout(push_constant) uniform Params {
  uint T, n_heads, hd, style, pos0, inverse;
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
      vec2 r = cs[(p.pos0 + t) * half_hd + i];
      float s = p.inverse != 0 ? -r.y : r.y;
      float x0 = x[ia], x1 = x[ib];
      y[ia] = x0 * r.x - x1 * s;
      y[ib] = x0 * s + x1 * r.x;
    }
}
