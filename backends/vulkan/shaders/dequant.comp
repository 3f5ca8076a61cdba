#version 450
// Element i of a row-major run of `type` (ggml numbering: 1 f16, 30 bf16,
// 8 q8_0, 2 q4_0) to f32.  The source is read as 32-bit words and bytes are
// picked out of them, so no 8/16-bit storage feature is needed and blocks
// need no alignment (a q8_0 block is 34 bytes).
// q8_0: f16 scale, 32 int8 codes.  q4_0: f16 scale, 16 bytes, element j in
// the low nibble of byte j, element j+16 in its high nibble, (code-8)*scale.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TYPE = 1;

layout(std430, binding = 0) readonly buffer SBuf { uint src[]; };
layout(std430, binding = 1) writeonly buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint n;
} p;

uint byte_at (uint off)
{
  return (src[off >> 2] >> ((off & 3u) * 8u)) & 0xffu;
}

float f16_at (uint off)
{
  return unpackHalf2x16 (byte_at (off) | (byte_at (off + 1u) << 8)).x;
}

void main ()
{
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
    {
      float r;
      if (TYPE == 1u)
        r = f16_at (2u * i);
      else if (TYPE == 30u)
        r = uintBitsToFloat ((byte_at (2u * i) | (byte_at (2u * i + 1u) << 8)) << 16);
      else if (TYPE == 8u)
        {
          uint blk = (i / 32u) * 34u, j = i % 32u;
          int code = int (byte_at (blk + 2u + j) << 24) >> 24; // sign-extend
          r = f16_at (blk) * float (code);
        }
      else // q4_0
        {
          uint blk = (i / 32u) * 18u, j = i % 32u;
          uint bytev = byte_at (blk + 2u + (j & 15u));
          uint code = j < 16u ? bytev & 15u : bytev >> 4;
          r = float (int (code) - 8) * f16_at (blk);
        }
      dst[i] = r;
    }
}
