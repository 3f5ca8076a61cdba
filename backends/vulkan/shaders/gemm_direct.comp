#version 450
// C[M,N] = alpha * op(A) op(B) + beta * C like gemm.comp (the same push
// constants and work-group tiles), without shared memory: each invocation
// reads its 4 rows of op(A) and 4 columns of op(B) itself and keeps 4 x 4
// sums.  For products with a short K (a small model's K = 64 .. 256),
// where staging BK-deep slices through shared memory costs two barriers a
// slice for little reuse; the caches serve the neighbours' repeated reads.
// The sums run over k in order with one fma a term, as gemm.comp's do.
//
// Built twice (Makefile.inc): with VEC4 defined, for op(A) = A, op(B) = B^T
// (x W^T, the forward's product) with K, lda and ldb multiples of 4, rows
// are read 4 floats at a time and each invocation keeps 8 x 4 sums (a
// sixth of the loads a product: on lavapipe loads, not arithmetic, are the
// cost); the terms and their order are the same.  With B_ROWS as well, the
// same for op(B) = B (dy W, the backward's product; N a multiple of 4 too):
// row k of B gives the invocation's 4 columns in one vec4.
layout(local_size_x_id = 0, local_size_y_id = 1) in;
#ifdef VEC4
// 8 x 4 sums an invocation (the host halves the group's height: the same
// 64 x 64 tile): a vec4 of A loaded serves 16 products, one of B 32.  (8 x 8
// is faster still on lavapipe but takes twice as long to compile, which
// every process without a shader cache pays.)
#define TM 8
#define TN 4
#else
#define TM 4
#define TN 4
#endif

#ifdef VEC4
layout(std430, binding = 0) readonly buffer ABuf { vec4 a[]; };
layout(std430, binding = 1) readonly buffer BBuf { vec4 b[]; };
#else
layout(std430, binding = 0) readonly buffer ABuf { float a[]; };
layout(std430, binding = 1) readonly buffer BBuf { float b[]; };
#endif
layout(std430, binding = 2) buffer CBuf { float c[]; };

layout(push_constant) uniform Params {
  uint M, N, K, lda, ldb, ldc, trans_a, trans_b;
  float alpha, beta;
} p;

void main ()
{
  uint m0 = gl_WorkGroupID.y * gl_WorkGroupSize.y * TM + gl_LocalInvocationID.y * TM;
  uint n0 = gl_WorkGroupID.x * gl_WorkGroupSize.x * TN + gl_LocalInvocationID.x * TN;
  if (m0 >= p.M || n0 >= p.N)
    return;
  // Rows and columns past the edge repeat the last one (read, not written).
  uint mi[TM], nj[TN];
  for (uint i = 0; i < TM; i++)
    mi[i] = min (m0 + i, p.M - 1);
  for (uint j = 0; j < TN; j++)
    nj[j] = min (n0 + j, p.N - 1);
  float acc[TM][TN];
  for (uint i = 0; i < TM; i++)
    for (uint j = 0; j < TN; j++)
      acc[i][j] = 0.0;
#ifdef VEC4
  uint lda4 = p.lda / 4, ldb4 = p.ldb / 4;
  for (uint k4 = 0; k4 < p.K / 4; k4++)
    {
      vec4 ar[TM];
      for (uint i = 0; i < TM; i++)
        ar[i] = a[mi[i] * lda4 + k4];
#ifdef B_ROWS
      // op(B) = B: row k's 4 columns n0 .. n0+3 in one vec4.
      for (uint kk = 0; kk < 4; kk++)
        {
          vec4 bk = b[(k4 * 4 + kk) * ldb4 + n0 / 4];
          for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN; j++)
              acc[i][j] = fma (ar[i][kk], bk[j], acc[i][j]);
        }
#else
      vec4 br[TN];
      for (uint j = 0; j < TN; j++)
        br[j] = b[nj[j] * ldb4 + k4];
      for (uint kk = 0; kk < 4; kk++)
        for (uint i = 0; i < TM; i++)
          for (uint j = 0; j < TN; j++)
            acc[i][j] = fma (ar[i][kk], br[j][kk], acc[i][j]);
#endif
    }
#else
  for (uint k = 0; k < p.K; k++)
    {
      float ar[TM], br[TN];
      for (uint i = 0; i < TM; i++)
        ar[i] = p.trans_a != 0 ? a[k * p.lda + mi[i]] : a[mi[i] * p.lda + k];
      for (uint j = 0; j < TN; j++)
        br[j] = p.trans_b != 0 ? b[nj[j] * p.ldb + k] : b[k * p.ldb + nj[j]];
      for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++)
          acc[i][j] = fma (ar[i], br[j], acc[i][j]);
    }
#endif
  for (uint i = 0; i < TM; i++)
    {
      uint gm = m0 + i;
      if (gm >= p.M)
        break;
      for (uint j = 0; j < TN; j++)
        {
          uint gn = n0 + j;
          if (gn >= p.N)
            break;
          uint idx = gm * p.ldc + gn;
          // beta == 0 must not read C: it may hold anything (NaN included).
          c[idx] = p.beta == 0.0 ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * c[idx];
        }
    }
}
