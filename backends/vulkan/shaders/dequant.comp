#version 450
// Element i of a row-major run of `type` (ggml numbering, LpDType) to f32:
// every type lp_dtype_to_f32 decodes but the plain f32/f64/integer ones.
// The reference for each layout and formula is the C code (model/dtype.c,
// model/dtype_blocks.c); results must match it bit for bit, so
// every expression below has the C code's operands, order and precision, and
// each one holding an addition is `precise`: otherwise the compiler may fuse
// a*b+c into an fma, which rounds once instead of twice.  (With f16 scales
// the products before an addition happen to be exact, so an fma would agree
// today; `precise` keeps the result the C code's whatever the scales.)
// The source is read as 32-bit words and bytes are picked out of them, so no
// 8/16-bit storage feature is needed and blocks need no alignment (a q8_0
// block is 34 bytes, a q2_k block 84).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TYPE = 1;

const uint F16 = 1u, Q4_0 = 2u, Q4_1 = 3u, Q5_0 = 6u, Q5_1 = 7u, Q8_0 = 8u, Q8_1 = 9u, Q2_K = 10u,
           Q3_K = 11u, Q4_K = 12u, Q5_K = 13u, Q6_K = 14u, Q8_K = 15u, IQ4_NL = 20u, BF16 = 30u;

layout(std430, binding = 0) readonly buffer SBuf { uint src[]; };
layout(std430, binding = 1) writeonly buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint n;
} p;

uint byte_at (uint off)
{
  return (src[off >> 2] >> ((off & 3u) * 8u)) & 0xffu;
}

int s8_at (uint off)
{
  return int (byte_at (off) << 24) >> 24; // sign-extend
}

float f16_at (uint off)
{
  return unpackHalf2x16 (byte_at (off) | (byte_at (off + 1u) << 8)).x;
}

// ---- 32-value blocks: element j < 16 in the low nibble of byte j of the
// codes, element j + 16 in its high nibble; Q5's fifth bit of element j is
// bit j of the 32-bit qh.

uint nibble (uint qs, uint j)
{
  uint b = byte_at (qs + (j & 15u));
  return j < 16u ? b & 15u : b >> 4;
}

uint fifth_bit (uint qh, uint j)
{
  return ((byte_at (qh + j / 8u) >> (j % 8u)) & 1u) << 4;
}

// q8_0 (34 bytes): f16 d, 32 int8; d * q.
float q8_0 (uint i)
{
  uint blk = (i / 32u) * 34u, j = i % 32u;
  return f16_at (blk) * float (s8_at (blk + 2u + j));
}

// q8_1 (36 bytes): f16 d, f16 s (unused here), 32 int8; q * d.
float q8_1 (uint i)
{
  uint blk = (i / 32u) * 36u, j = i % 32u;
  return float (s8_at (blk + 4u + j)) * f16_at (blk);
}

// q4_0 (18 bytes): f16 d, 16 bytes of nibbles; (q - 8) * d.
float q4_0 (uint i)
{
  uint blk = (i / 32u) * 18u;
  return float (int (nibble (blk + 2u, i % 32u)) - 8) * f16_at (blk);
}

// iq4_nl (18 bytes): f16 d, 16 bytes of nibbles indexing ggml's fixed
// non-uniform levels (model/dtype_blocks.c's lp_iq4nl_levels); d * level.
const int IQ4NL_LEVELS[16] = int[16] (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);

float iq4_nl (uint i)
{
  uint blk = (i / 32u) * 18u;
  return f16_at (blk) * float (IQ4NL_LEVELS[nibble (blk + 2u, i % 32u)]);
}

// q4_1 (20 bytes): f16 d, f16 m, 16 bytes of nibbles; q * d + m.
float q4_1 (uint i)
{
  uint blk = (i / 32u) * 20u;
  precise float r = float (nibble (blk + 4u, i % 32u)) * f16_at (blk) + f16_at (blk + 2u);
  return r;
}

// q5_0 (22 bytes): f16 d, u32 qh, 16 bytes of nibbles; (q - 16) * d.
float q5_0 (uint i)
{
  uint blk = (i / 32u) * 22u, j = i % 32u;
  uint q = nibble (blk + 6u, j) | fifth_bit (blk + 2u, j);
  return float (int (q) - 16) * f16_at (blk);
}

// q5_1 (24 bytes): f16 d, f16 m, u32 qh, 16 bytes of nibbles; q * d + m.
float q5_1 (uint i)
{
  uint blk = (i / 32u) * 24u, j = i % 32u;
  uint q = nibble (blk + 8u, j) | fifth_bit (blk + 4u, j);
  precise float r = float (q) * f16_at (blk) + f16_at (blk + 2u);
  return r;
}

// ---- K-quants, 256-value super-blocks.  Q2/Q3/Q6 hold 128-value halves:
// element e of a half is quarter k = e / 32 (bit field k of the byte, 2 bits
// wide) at byte l = e % 32, in sub-block of 16 values e / 16.  Q4/Q5 hold
// 64-value chunks: the first 32 in low nibbles, the next 32 in high nibbles.

// q2_k (84 bytes): scales[16] (low nibble scale, high nibble min), qs[64],
// f16 d, f16 dmin; (d * sc) * q - dmin * m.
float q2_k (uint i)
{
  uint blk = (i / 256u) * 84u, e = i % 256u, half_ = e / 128u, r = e % 128u;
  uint s = byte_at (blk + r / 16u + 8u * half_);
  uint q = (byte_at (blk + 16u + 32u * half_ + r % 32u) >> (2u * (r / 32u))) & 3u;
  float dl = f16_at (blk + 80u) * float (s & 15u);
  float ml = f16_at (blk + 82u) * float (s >> 4);
  precise float v = dl * float (q) - ml;
  return v;
}

// q3_k (110 bytes): hmask[32] (third bit: bit 4 * half + quarter of byte
// l, set means no -4), qs[64] (low 2 bits), scales[12] (16 6-bit scales
// biased by 32: low 4 bits in nibbles of bytes 0-7, high 2 bits in 8-11),
// f16 d; (d * (sc - 32)) * (q - 4 * !hbit).
float q3_k (uint i)
{
  uint blk = (i / 256u) * 110u, e = i % 256u, half_ = e / 128u, r = e % 128u;
  uint quarter = r / 32u, l = r % 32u, is = r / 16u + 8u * half_;
  uint low = is < 8u ? byte_at (blk + 96u + is) & 15u : byte_at (blk + 96u + is - 8u) >> 4;
  uint high = (byte_at (blk + 104u + is % 4u) >> (2u * (is / 4u))) & 3u;
  int sc = int (low | (high << 4)) - 32;
  int q = int ((byte_at (blk + 32u + 32u * half_ + l) >> (2u * quarter)) & 3u);
  if ((byte_at (blk + l) & (1u << (4u * half_ + quarter))) == 0u)
    q -= 4;
  float dl = f16_at (blk + 108u) * float (sc);
  return dl * float (q);
}

// Q4_K / Q5_K: scale and min of sub-block j (0..7) from the 12 bytes at s
// (get_scale_min_k4).
uvec2 scale_min_k4 (uint s, uint j)
{
  if (j < 4u)
    return uvec2 (byte_at (s + j) & 63u, byte_at (s + j + 4u) & 63u);
  return uvec2 ((byte_at (s + j + 4u) & 15u) | ((byte_at (s + j - 4u) >> 6) << 4),
                (byte_at (s + j + 4u) >> 4) | ((byte_at (s + j) >> 6) << 4));
}

// q4_k (144 bytes): f16 d, f16 dmin, scales[12], qs[128];
// q5_k (176 bytes): the same with qh[32] (fifth bit of element l of
// sub-block j: bit j of byte l) before qs.  (d * sc) * q - dmin * m.
float q45_k (uint i, bool five)
{
  uint blk = (i / 256u) * (five ? 176u : 144u), e = i % 256u;
  uint sub = e / 32u, l = e % 32u;
  uint ql = byte_at (blk + (five ? 48u : 16u) + 32u * (sub / 2u) + l);
  uint q = (sub % 2u) == 0u ? ql & 15u : ql >> 4;
  if (five)
    q += ((byte_at (blk + 16u + l) >> sub) & 1u) * 16u;
  uvec2 sm = scale_min_k4 (blk + 4u, sub);
  float dl = f16_at (blk) * float (sm.x);
  float ml = f16_at (blk + 2u) * float (sm.y);
  precise float v = dl * float (q) - ml;
  return v;
}

// q6_k (210 bytes): ql[128] (low nibbles), qh[64] (high 2 bits), int8
// scales[16], f16 d.  In a half, quarter k takes the nibble k / 2 of ql byte
// 32 * (k % 2) + l and bit field k of qh byte l; d * sc * (q - 32).
float q6_k (uint i)
{
  uint blk = (i / 256u) * 210u, e = i % 256u, half_ = e / 128u, r = e % 128u;
  uint quarter = r / 32u, l = r % 32u;
  uint lo = (byte_at (blk + 64u * half_ + 32u * (quarter % 2u) + l) >> (4u * (quarter / 2u))) & 15u;
  uint hi = (byte_at (blk + 128u + 32u * half_ + l) >> (2u * quarter)) & 3u;
  int q = int (lo | (hi << 4)) - 32;
  int sc = s8_at (blk + 192u + 8u * half_ + l / 16u + 2u * quarter);
  return f16_at (blk + 208u) * float (sc) * float (q);
}

// q8_k (292 bytes): f32 d, int8 qs[256], int16 bsums[16] (unused); d * q.
float q8_k (uint i)
{
  uint blk = (i / 256u) * 292u;
  uint d = byte_at (blk) | (byte_at (blk + 1u) << 8) | (byte_at (blk + 2u) << 16) | (byte_at (blk + 3u) << 24);
  return uintBitsToFloat (d) * float (s8_at (blk + 4u + i % 256u));
}

float element (uint i)
{
  switch (TYPE)
    {
    case F16:
      return f16_at (2u * i);
    case BF16:
      return uintBitsToFloat ((byte_at (2u * i) | (byte_at (2u * i + 1u) << 8)) << 16);
    case Q4_0:
      return q4_0 (i);
    case Q4_1:
      return q4_1 (i);
    case IQ4_NL:
      return iq4_nl (i);
    case Q5_0:
      return q5_0 (i);
    case Q5_1:
      return q5_1 (i);
    case Q8_0:
      return q8_0 (i);
    case Q8_1:
      return q8_1 (i);
    case Q2_K:
      return q2_k (i);
    case Q3_K:
      return q3_k (i);
    case Q4_K:
      return q45_k (i, false);
    case Q5_K:
      return q45_k (i, true);
    case Q6_K:
      return q6_k (i);
    default: // Q8_K: vk_ops.c dispatches only the types above
      return q8_k (i);
    }
}

void main ()
{
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
    dst[i] = element (i);
}
