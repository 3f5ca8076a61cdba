/* llmpress — what the AVX2 row kernels of gemv.c and gemv_q8.c share:
 * their target attribute and two small helpers.  Not SDK. */
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <string.h>
#include <immintrin.h>
#include <glib.h>

#define LP_GEMV_X86 1
/* Compiled for AVX2 + FMA whatever the build's -march; called only where
 * lp_cpu_have_avx2 () says the CPU has them. */
#define X86_TARGET __attribute__ ((target ("avx2,fma,f16c")))
#define X86_INLINE X86_TARGET static inline __attribute__ ((always_inline))

/* The sum of v's 8 lanes (ggml's hsum_float_8 order). */
X86_INLINE float
lp_x86_hsum (__m256 v)
{
  __m128 s = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

/* The f16 at p (little-endian, unaligned) as a float. */
X86_INLINE float
lp_x86_f16 (const guint8 *p)
{
  guint16 h;
  memcpy (&h, p, 2);
  return _cvtsh_ss (h);
}
#endif
