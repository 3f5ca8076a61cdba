#version 450
// Training an integer-grid weight (model/form_grid.c; the ops' definitions
// are lp_cop_fake_quant_ref and its kin in model/compute_*.c).  For W [N,K],
// G groups a row, group g = g_idx[k] of column k, s = scales[n, g] (f32),
// z = zeros[n, g] (bytes, four to a word), maxq = 2^bits - 1:
//
//   mode 0, fake_quant:        out[n,k] = (clamp (c, 0, maxq) - z) s,  c = roundEven (x[n,k] / s) + z
//   mode 1, fake_quant_back:   out[n,k] = dy[n,k] where 0 <= c <= maxq, else 0 (clipped straight-through)
//   mode 2, dequant_grid:      out[n,k] = (code[n,k] - z) s            (codes bytes, four to a word)
//   mode 3, dequant_grid_back: out[n,g] = sum over group g's columns k, in order, of dy[n,k] (code[n,k] - z)
//
// c is lp_int_round's: x / s clamped to +-1e6 before rounding half to even
// (nearbyintf), 0 where s <= 0.  Modes 0-2 run a thread an element; mode 3
// a thread a (row, group), over the group's own columns when g_idx is the
// plain k / group (group > 0), else over every column asking g_idx.
// `precise` keeps the compiler from contracting or reassociating: the
// products round once, as the C code's do.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };      // latent x (mode 0) or dy (1, 3)
layout(std430, binding = 1) readonly buffer XBuf { float x[]; };      // latent x (mode 1)
layout(std430, binding = 2) readonly buffer CodeBuf { uint codes[]; }; // [N,K] bytes (modes 2, 3)
layout(std430, binding = 3) readonly buffer ScaleBuf { float scales[]; }; // [N,G]
layout(std430, binding = 4) readonly buffer ZeroBuf { uint zeros[]; }; // [N,G] bytes
layout(std430, binding = 5) readonly buffer GIdxBuf { int g_idx[]; };  // [K]
layout(std430, binding = 6) writeonly buffer OutBuf { float outv[]; }; // [N,K], or [N,G] (mode 3)

layout(push_constant) uniform Params {
  uint N, K, G, maxq, group, mode;
} p;

uint byte_at (uint i, bool zero)
{
  uint w = zero ? zeros[i >> 2] : codes[i >> 2];
  return (w >> ((i & 3u) * 8u)) & 0xffu;
}

// lp_int_round: the code before clamping.
int code_of (float v, float s, int z)
{
  float q = s > 0.0 ? v / s : 0.0;
  return int (roundEven (clamp (q, -1e6, 1e6))) + z;
}

void main ()
{
  uint i = gl_GlobalInvocationID.x;
  if (p.mode == 3u)
    {
      if (i >= p.N * p.G)
        return;
      uint n = i / p.G, g = i % p.G;
      int z = int (byte_at (i, true));
      uint k0 = p.group > 0u ? g * p.group : 0u;
      uint k1 = p.group > 0u ? min (p.K, k0 + p.group) : p.K;
      precise float acc = 0.0;
      for (uint k = k0; k < k1; k++)
        if (p.group > 0u || uint (g_idx[k]) == g)
          acc += a[n * p.K + k] * float (int (byte_at (n * p.K + k, false)) - z);
      outv[i] = acc;
      return;
    }
  if (i >= p.N * p.K)
    return;
  uint j = (i / p.K) * p.G + uint (g_idx[i % p.K]);
  float s = scales[j];
  int z = int (byte_at (j, true));
  if (p.mode == 0u)
    {
      precise float v = s * float (clamp (code_of (a[i], s, z), 0, int (p.maxq)) - z);
      outv[i] = v;
    }
  else if (p.mode == 1u)
    {
      int c = code_of (x[i], s, z);
      outv[i] = c >= 0 && c <= int (p.maxq) ? a[i] : 0.0;
    }
  else
    {
      precise float v = s * float (int (byte_at (i, false)) - z);
      outv[i] = v;
    }
}
