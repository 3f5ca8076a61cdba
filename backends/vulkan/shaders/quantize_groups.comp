#version 450
// Group-wise round-to-nearest onto the integer grid, as lp_ref_quantize_groups
// (model/intgrid.c) defines it: one invocation per (row, group) of a tile
// of rows.  For each group: the range [min (0, w), max (0, w)] (symmetric:
// [-a, a]), its f16 scale and zero, with clip_search the shrunk ranges
// p [lo, hi] tried too and the first of least weighted squared error kept;
// then every code.
//
// Core Vulkan 1.2 only: no 8/16-bit storage, so each code is written as one
// uint and the host narrows them; a group's scale (f16 bits) and zero go
// out packed as scale | zero << 16.  f32 -> f16 is done with integer bit
// operations, round to nearest even exactly as lp_f32_to_f16 (packHalf2x16
// leaves the rounding mode to the implementation), and f16 -> f32 too, so
// that subnormal f16 scales are not flushed.
//
// `precise` keeps the compiler from fusing a*b+c into an fma, which the C
// reference does not do: the products and differences round as in C.
// Division is whatever the device gives (not correctly rounded on every
// driver), so results may differ from the reference at exact rounding
// boundaries; tests/test-vulkan.c states the tolerance.  The reference sums
// the error of a candidate range in double; this sums in f32, which can only
// change the choice between ranges of nearly equal error.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer WBuf { float w[]; };   // [rows, cols] the tile
// aux[0..79]: the shrink factors p = 1 - i/100, i = 1..80, computed on the
// host as the reference does (float division there is correctly rounded);
// aux[80 + c]: the importance of column c (1 when the caller gave none).
layout(std430, binding = 1) readonly buffer ABuf { float aux[]; };
layout(std430, binding = 2) writeonly buffer CBuf { uint codes[]; }; // [rows, cols]
layout(std430, binding = 3) writeonly buffer PBuf { uint params[]; }; // [rows, G]

layout(push_constant) uniform Params {
  uint rows, cols, G, group, bits, symmetric, clip_search;
} p;

const uint N_SHRINK = 80u;

uint f32_to_f16 (float f)
{
  uint x = floatBitsToUint (f);
  uint sign = (x >> 16) & 0x8000u;
  uint absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) // Inf or NaN
    return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0u);
  if (absx >= 0x477ff000u) // rounds to >= 65520: overflow to Inf
    return sign | 0x7c00u;
  if (absx < 0x38800000u)
    {
      // Subnormal (or zero) result: the mantissa is round-half-even of
      // |f| * 2^24 = M * 2^(E - 126), M the 24-bit significand.
      uint E = absx >> 23;
      if (E < 102u) // |f| < 2^-25: below half the smallest subnormal
        return sign;
      uint M = (absx & 0x7fffffu) | 0x800000u;
      uint shift = 126u - E; // 14..24
      uint q = M >> shift, rest = M & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
      if (rest > mid || (rest == mid && (q & 1u) != 0u))
        q++;
      return sign | q;
    }
  uint h = (((absx >> 23) - 112u) << 10) | ((absx & 0x7fffffu) >> 13);
  uint rest = absx & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0u))
    h++; // may carry into the exponent: still correct
  return sign | h;
}

float f16_to_f32 (uint h)
{
  float sign = (h & 0x8000u) != 0u ? -1.0 : 1.0;
  uint e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0u) // subnormal: m * 2^-24, exact in f32
    return sign * float (m) * 5.9604644775390625e-8;
  if (e == 31u)
    return uintBitsToFloat (((h & 0x8000u) << 16) | 0x7f800000u | (m << 13));
  return uintBitsToFloat (((h & 0x8000u) << 16) | ((e + 112u) << 23) | (m << 13));
}

// range_params of the reference: scale (f16 bits) and zero for [lo, hi].
void range_params (float lo, float hi, int maxq, out uint scale, out uint zero)
{
  if (p.symmetric != 0u)
    {
      float a = max (abs (lo), abs (hi));
      lo = -a;
      hi = a;
    }
  if (lo == 0.0 && hi == 0.0)
    {
      lo = -1.0;
      hi = 1.0;
    }
  precise float s = (hi - lo) / float (maxq);
  uint h = f32_to_f16 (s);
  // An f16 scale must not round to 0 (tiny groups): the smallest normal.
  if (f16_to_f32 (h) == 0.0)
    h = 0x0400u;
  int z = p.symmetric != 0u ? (maxq + 1) / 2 : int (roundEven (-lo / f16_to_f32 (h)));
  scale = h;
  zero = uint (clamp (z, 1, maxq));
}

// lp_int_quantize: the code of x, and its value through `value`.
uint quantize (float s, int zero, int maxq, float x, out float value)
{
  float v = s > 0.0 ? x / s : 0.0;
  v = v > 1e6 ? 1e6 : v < -1e6 ? -1e6 : v;
  int c = clamp (int (roundEven (v)) + zero, 0, maxq);
  precise float dq = s * float (c - zero);
  value = dq;
  return uint (c);
}

// sum_j imp[j] (dq(w_j) - w_j)^2 over the group at w[base], columns c0..
float group_error (uint base, uint c0, uint n, int maxq, uint scale, uint zero)
{
  float s = f16_to_f32 (scale);
  precise float err = 0.0;
  for (uint j = 0u; j < n; j++)
    {
      float x = w[base + j], dq;
      quantize (s, int (zero), maxq, x, dq);
      precise float d = dq - x;
      precise float t = aux[N_SHRINK + c0 + j] * d * d;
      err += t;
    }
  return err;
}

void main ()
{
  int maxq = (1 << p.bits) - 1;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint k = gl_GlobalInvocationID.x; k < p.rows * p.G; k += stride)
    {
      uint r = k / p.G, c0 = (k % p.G) * p.group;
      uint n = min (p.group, p.cols - c0), base = r * p.cols + c0;
      // The range always holds 0, so that 0 stays exact (pruned weights).
      float lo = 0.0, hi = 0.0;
      for (uint j = 0u; j < n; j++)
        {
          lo = min (lo, w[base + j]);
          hi = max (hi, w[base + j]);
        }
      uint scale, zero;
      range_params (lo, hi, maxq, scale, zero);
      if (p.clip_search != 0u)
        {
          float best = group_error (base, c0, n, maxq, scale, zero);
          for (uint i = 0u; i < N_SHRINK; i++)
            {
              precise float plo = aux[i] * lo, phi = aux[i] * hi;
              uint s, z;
              range_params (plo, phi, maxq, s, z);
              float e = group_error (base, c0, n, maxq, s, z);
              if (e < best)
                {
                  best = e;
                  scale = s;
                  zero = z;
                }
            }
        }
      params[k] = scale | (zero << 16);
      float s = f16_to_f32 (scale), dq;
      for (uint j = 0u; j < n; j++)
        codes[base + j] = quantize (s, int (zero), maxq, w[base + j], dq);
    }
}
