#version 450
// C[M,N] = float(sum_k A[i,k] B[j,k]) * (sa[i] * sb[j]) + beta * C, the
// definition of lp_ref_gemm_i8, bit for bit.
// A[M,K4] and B[N,K4] are int8 rows packed 4 a uint (element 4w+q in byte q
// of word w), K padded to K4 = ceil(K/4) words with zeros on the host, so
// the padding adds nothing.  s holds sa[M] then sb[N] (one binding for
// both: a run binds 4 buffers).  The sums are exact int32 (K < 2^17).
//
// The tile pattern of gemm.comp: a work group computes a (WY*TM) x (WX*TN)
// tile of C, staging BK4-word slices of A and B rows in shared memory; each
// thread owns TM x TN outputs strided by the group size.
//
// Built twice (Makefile.inc): gemm_i8.spv multiplies the bytes out
// (bitfieldExtract, integer multiply-add; core Vulkan), gemm_i8_dot.spv with
// INT_DOT defined uses OpSDot on the packed words
// (VK_KHR_shader_integer_dot_product).  That build declares the dot-product
// capabilities, so its module exists only on a device created with the
// feature.  glslang has no GL_EXT_integer_dot_product yet: the instruction
// is declared through GL_EXT_spirv_intrinsics (capabilities 6019
// DotProduct, 6018 DotProductInput4x8BitPacked; opcode 4450 OpSDot).
#ifdef INT_DOT
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction (extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int sdot4x8 (uint a, uint b, spirv_literal int fmt);
#endif

layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 2) const uint BK4 = 8;
#define TM 4
#define TN 4
#define WX gl_WorkGroupSize.x
#define WY gl_WorkGroupSize.y
#define BM (WY * TM)
#define BN (WX * TN)

layout(std430, binding = 0) readonly buffer ABuf { uint a[]; };
layout(std430, binding = 1) readonly buffer BBuf { uint b[]; };
layout(std430, binding = 2) readonly buffer SBuf { float s[]; };
layout(std430, binding = 3) buffer CBuf { float c[]; };

layout(push_constant) uniform Params {
  uint M, N, K4, ldc;
  float beta;
} p;

shared uint As[BK4 * BM]; // [k4][m]
shared uint Bs[BK4 * BN]; // [k4][n]

#ifndef INT_DOT
ivec4 bytes_of (uint w)
{
  int v = int (w);
  return ivec4 (bitfieldExtract (v, 0, 8), bitfieldExtract (v, 8, 8), bitfieldExtract (v, 16, 8),
                bitfieldExtract (v, 24, 8));
}
#endif

void main ()
{
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  uint tid = ty * WX + tx, nthreads = WX * WY;
  uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
  int acc[TM][TN];
  for (uint i = 0; i < TM; i++)
    for (uint j = 0; j < TN; j++)
      acc[i][j] = 0;

  for (uint k0 = 0; k0 < p.K4; k0 += BK4)
    {
      // Neighbouring threads read neighbouring words of a row.
      for (uint e = tid; e < BM * BK4; e += nthreads)
        {
          uint mm = e / BK4, kk = e % BK4, gm = m0 + mm, gk = k0 + kk;
          As[kk * BM + mm] = gm < p.M && gk < p.K4 ? a[gm * p.K4 + gk] : 0u;
        }
      for (uint e = tid; e < BN * BK4; e += nthreads)
        {
          uint nn = e / BK4, kk = e % BK4, gn = n0 + nn, gk = k0 + kk;
          Bs[kk * BN + nn] = gn < p.N && gk < p.K4 ? b[gn * p.K4 + gk] : 0u;
        }
      barrier ();
      for (uint kk = 0; kk < BK4; kk++)
        {
#ifdef INT_DOT
          uint ar[TM], br[TN];
          for (uint i = 0; i < TM; i++)
            ar[i] = As[kk * BM + ty + i * WY];
          for (uint j = 0; j < TN; j++)
            br[j] = Bs[kk * BN + tx + j * WX];
          for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN; j++)
              acc[i][j] += sdot4x8 (ar[i], br[j], 0); // 0: PackedVectorFormat4x8Bit
#else
          // Unpacked once per slice, used TN (TM) times.
          ivec4 ar[TM], br[TN];
          for (uint i = 0; i < TM; i++)
            ar[i] = bytes_of (As[kk * BM + ty + i * WY]);
          for (uint j = 0; j < TN; j++)
            br[j] = bytes_of (Bs[kk * BN + tx + j * WX]);
          for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN; j++)
              {
                ivec4 q = ar[i] * br[j];
                acc[i][j] += q.x + q.y + q.z + q.w;
              }
#endif
        }
      barrier ();
    }

  for (uint i = 0; i < TM; i++)
    {
      uint gm = m0 + ty + i * WY;
      if (gm >= p.M)
        continue;
      for (uint j = 0; j < TN; j++)
        {
          uint gn = n0 + tx + j * WX;
          if (gn >= p.N)
            continue;
          uint idx = gm * p.ldc + gn;
          // precise: no fused multiply-add, the reference's two roundings.
          // beta == 0 must not read C: it may hold anything (NaN included).
          precise float v = float (acc[i][j]) * (s[gm] * s[p.M + gn]);
          if (p.beta != 0.0)
            v = v + p.beta * c[idx];
          c[idx] = v;
        }
    }
}
