#version 450
// Rows of a plain integer grid (GPTQ / compressed-tensors, LpIntGrid in
// include/llmpress/tensor.h) to f32, as lp_int_grid_dequantize defines them:
//
//   w[r, c] = f16 scale[r, g] * (code[r, c] - zero[r, g]),   g = g_idx[c]
//
// for a tile of `rows` rows of `cols` columns, G groups a row.  Core Vulkan
// 1.2 only (no 8/16-bit storage): the codes come packed 4 to a word (byte
// i of the tile's codes in byte i % 4 of word i / 4, the host's bytes as
// they are, so rows need no alignment) and each group's scale (f16 bits)
// and zero as one word, scale | zero << 16.  The result is the C code's bit
// for bit: unpackHalf2x16 is exact, the difference of two small integers
// is exact in f32, and the one product rounds once; `precise` keeps the
// compiler from reassociating or contracting it with anything else.
//
// Built twice (Makefile.inc): with SPLIT_PARAMS defined, for the compute
// graph, the scales (f16 bits, two to a word) and the zeros (bytes, four to
// a word) are the model's own tensors, bound as they are, and without
// g_idx (has_g_idx 0) column c is in group c / group.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer CodeBuf { uint codes[]; };   // [rows, cols] bytes
layout(std430, binding = 1) readonly buffer ParamBuf { uint params[]; }; // [rows, G] (split: scales, 2 a word)
layout(std430, binding = 2) readonly buffer GIdxBuf { int g_idx[]; };    // [cols]
layout(std430, binding = 3) writeonly buffer WBuf { float w[]; };        // [rows, cols]
#ifdef SPLIT_PARAMS
layout(std430, binding = 4) readonly buffer ZeroBuf { uint zeros[]; };  // [rows, G] bytes

layout(push_constant) uniform Params {
  uint rows, cols, G, group, has_g_idx;
} p;

// The scale | zero << 16 word of the unsplit layout.
uint param_at (uint j)
{
  uint scale = (params[j >> 1] >> ((j & 1u) * 16u)) & 0xffffu;
  uint zero = (zeros[j >> 2] >> ((j & 3u) * 8u)) & 0xffu;
  return scale | zero << 16;
}
#else
layout(push_constant) uniform Params {
  uint rows, cols, G;
} p;
#endif

void main ()
{
  uint n = p.rows * p.cols, stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += stride)
    {
      uint r = i / p.cols, c = i % p.cols;
      uint code = (codes[i >> 2] >> ((i & 3u) * 8u)) & 0xffu;
#ifdef SPLIT_PARAMS
      uint param = param_at (r * p.G + (p.has_g_idx != 0u ? uint (g_idx[c]) : c / p.group));
#else
      uint param = params[r * p.G + uint (g_idx[c])];
#endif
      float scale = unpackHalf2x16 (param & 0xffffu).x;
      precise float v = scale * float (int (code) - int (param >> 16));
      w[i] = v;
    }
}
