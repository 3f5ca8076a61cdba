#version 450
// C[M,N] = alpha * op(A) op(B) + beta * C, f32 in, f32 accumulate.
// op(A)[i,k] = trans_a ? A[k*lda+i] : A[i*lda+k];
// op(B)[k,j] = trans_b ? B[j*ldb+k] : B[k*ldb+j].
// A work group computes a (WY*TM) x (WX*TN) tile of C, staging BK-deep
// slices of A and B in shared memory; each thread owns TM x TN outputs
// strided by the group size (conflict-free shared reads).  Work-group size
// and BK are specialization constants; TM, TN are fixed at 4.
//
// Built twice (Makefile.inc): gemm.spv as it stands, and gemm_f16.spv with
// B_F16 defined, where B holds f16 weight rows read directly (16-bit
// storage) and kept as float16_t in shared memory (fp16 arithmetic types):
// half the shared memory, and no f32 copy of the weights on the device.
// Each f16 value widens to f32 exactly and the products run in f32 in the
// same order, so both builds give the same bits for the same weights.  The
// f16 build declares the Float16 and 16-bit storage capabilities: its
// module exists only on a device created with those features.
#ifdef B_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define BTYPE float16_t
#else
#define BTYPE float
#endif
layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 2) const uint BK = 16;
#define TM 4
#define TN 4
#define WX gl_WorkGroupSize.x
#define WY gl_WorkGroupSize.y
#define BM (WY * TM)
#define BN (WX * TN)

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };
layout(std430, binding = 1) readonly buffer BBuf { BTYPE b[]; };
layout(std430, binding = 2) buffer CBuf { float c[]; };

layout(push_constant) uniform Params {
  uint M, N, K, lda, ldb, ldc, trans_a, trans_b;
  float alpha, beta;
} p;

shared float As[BK * BM]; // [k][m]
shared BTYPE Bs[BK * BN]; // [k][n]

void main ()
{
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  uint tid = ty * WX + tx, nthreads = WX * WY;
  uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
  float acc[TM][TN];
  for (uint i = 0; i < TM; i++)
    for (uint j = 0; j < TN; j++)
      acc[i][j] = 0.0;

  for (uint k0 = 0; k0 < p.K; k0 += BK)
    {
      for (uint e = tid; e < BM * BK; e += nthreads)
        {
          // Neighbouring threads read neighbouring addresses in either layout.
          uint mm = p.trans_a != 0 ? e % BM : e / BK;
          uint kk = p.trans_a != 0 ? e / BM : e % BK;
          uint gm = m0 + mm, gk = k0 + kk;
          float v = 0.0;
          if (gm < p.M && gk < p.K)
            v = p.trans_a != 0 ? a[gk * p.lda + gm] : a[gm * p.lda + gk];
          As[kk * BM + mm] = v;
        }
      for (uint e = tid; e < BN * BK; e += nthreads)
        {
          uint nn = p.trans_b != 0 ? e / BK : e % BN;
          uint kk = p.trans_b != 0 ? e % BK : e / BN;
          uint gn = n0 + nn, gk = k0 + kk;
          BTYPE v = BTYPE (0.0);
          if (gn < p.N && gk < p.K)
            v = p.trans_b != 0 ? b[gn * p.ldb + gk] : b[gk * p.ldb + gn];
          Bs[kk * BN + nn] = v;
        }
      barrier ();
      for (uint kk = 0; kk < BK; kk++)
        {
          float ar[TM], br[TN];
          for (uint i = 0; i < TM; i++)
            ar[i] = As[kk * BM + ty + i * WY];
          for (uint j = 0; j < TN; j++)
            br[j] = float (Bs[kk * BN + tx + j * WX]);
          for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN; j++)
              acc[i][j] = fma (ar[i], br[j], acc[i][j]);
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
          // beta == 0 must not read C: it may hold anything (NaN included).
          c[idx] = p.beta == 0.0 ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * c[idx];
        }
    }
}
