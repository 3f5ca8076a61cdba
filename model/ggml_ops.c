/* llmpress — ggml's CPU ops other than the matmuls, restated bit for bit.
 *
 * eval --llama-cpp must compute what llama.cpp's CPU backend computes: not
 * only its roundings (forward_ggml.c) but its f32 arithmetic in its order,
 * or an 8-bit rounding somewhere flips and the difference spreads through
 * the layers.  Each function here restates one ggml-cpu function as
 * llama-cpp-python 0.3.36's libggml-cpu.so runs it (its disassembly is the
 * reference; it is built for AVX-512, so its vector paths work on 16 lanes),
 * in plain C: the order of every f32 operation, the f64 sums, the lane
 * order of its vector sums (arrays of partial sums), and fmaf where its
 * vector code fuses a multiply-add.  tests/test-eval.c compares each with
 * llama.cpp's own tensors, memcmp-equal.  The libm functions it calls
 * (expf, sinf, cosf, powf) are called here too, so the results are the
 * same where both run on the same C library. */
#include "config.h"

#include <math.h>

#include "forward-internal.h"

/* ggml's vector code keeps each multiply and add separate unless it fuses
 * them explicitly (fmaf here): a compiler may not contract them. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* The lanes of ggml's AVX-512 vectors. */
#define LANES 16

float
lp_ggml_v_expf (float x)
{
  /* ggml_v_expf (AVX-512F): exp(x) = 2^n * j(b), n = round(x log2 e) by
   * the 1.5 * 2^23 trick, b = x - n ln 2 in two parts, j a degree-5
   * polynomial; every step an FMA, as in vfmadd/vfnmadd; the scale by 2^n
   * is vscalefps (ldexpf: both round a subnormal result once). */
  const float r = 0x1.8p23f;
  float z = fmaf (x, 0x1.715476p+0f, r);
  float n = z - r;
  float b = fmaf (-n, 0x1.7f7d1cp-20f, fmaf (-n, 0x1.62e4p-1f, x));
  float u = b * b;
  float j = fmaf (fmaf (fmaf (0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf (0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                  fmaf (0x1.ffffecp-1f, b, 1.0f));
  if (isnan (n))
    return n;
  /* Beyond 2^±192 the vector code blends in 0 or infinity. */
  if (fabsf (n) > 192.0f)
    return n <= 0.0f ? 0.0f : INFINITY;
  return ldexpf (j, (int) n);
}

float
lp_ggml_reduce16 (const float *v)
{
  /* _mm512_reduce_add_ps as the compiler lowered it: the upper 256 bits
   * onto the lower, then 128 onto 128, then lanes 2,3 onto 0,1, then lane 1
   * onto lane 0. */
  float a[8], b[4];
  for (int i = 0; i < 8; i++)
    a[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; i++)
    b[i] = a[i] + a[i + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

void
lp_ggml_rms_norm_mul (const float *x, const float *w, float *dst, int T, int D, float eps)
{
  /* ggml_compute_forward_rms_norm_mul_fused (what ggml_cpu_try_fuse_ops
   * runs for RMS_NORM followed by MUL; the unfused pair gives the same
   * bits): squares in f32 summed in order in f64, the mean rounded to f32,
   * then (x * scale) * w. */
  for (int t = 0; t < T; t++)
    {
      const float *xt = x + (gsize) t * D;
      float *yt = dst + (gsize) t * D;
      double sum = 0.0;
      for (int i = 0; i < D; i++)
        sum += (double) (xt[i] * xt[i]);
      float mean = (float) (sum / D);
      float scale = 1.0f / sqrtf (mean + eps);
      for (int i = 0; i < D; i++)
        yt[i] = (xt[i] * scale) * w[i];
    }
}

void
lp_ggml_rope_cache (float p, int n_dims, float freq_base, float freq_scale, float attn_factor, float *cache)
{
  /* ggml_rope_cache_init with rope_yarn at ext_factor 0: theta from the
   * position, multiplied by theta_scale in f32 at each pair. */
  float theta_scale = powf (freq_base, -2.0f / (float) n_dims);
  float theta = p;
  for (int i0 = 0; i0 < n_dims; i0 += 2)
    {
      float th = theta * freq_scale;
      cache[i0] = cosf (th) * attn_factor;
      cache[i0 + 1] = sinf (th) * attn_factor;
      theta *= theta_scale;
    }
}

void
lp_ggml_rope (const float *x, float *dst, const gint32 *pos, int T, int H, int hd, int n_dims, float freq_base,
              float freq_scale, float attn_factor)
{
  /* ggml_compute_forward_rope_f32, normal mode (rotate_pairs): each pair
   * (x0, x1) rotated by one vfmaddsub, which fuses the products with x0
   * (x0 cos - x1 sin, x0 sin + x1 cos: the x1 products rounded first); the
   * dimensions past n_dims copied.  That is its AVX-512 loop, 8 pairs at a
   * time; the pairs past a multiple of 8 go through 4-pair and unfused
   * 1-pair tails, not restated here. */
  g_return_if_fail (n_dims % 16 == 0 && n_dims <= hd);
  g_autofree float *cache = g_new (float, n_dims);
  for (int t = 0; t < T; t++)
    {
      lp_ggml_rope_cache ((float) pos[t], n_dims, freq_base, freq_scale, attn_factor, cache);
      for (int h = 0; h < H; h++)
        {
          const float *s = x + ((gsize) t * H + h) * hd;
          float *d = dst + ((gsize) t * H + h) * hd;
          for (int i0 = 0; i0 < n_dims; i0 += 2)
            {
              float c = cache[i0], sn = cache[i0 + 1], x0 = s[i0], x1 = s[i0 + 1];
              d[i0] = fmaf (x0, c, -(x1 * sn));
              d[i0 + 1] = fmaf (x0, sn, x1 * c);
            }
          for (int i = n_dims; i < hd; i++)
            d[i] = s[i];
        }
    }
}

double
lp_ggml_vec_soft_max (int n, float *y, const float *x, float max)
{
  /* ggml_vec_soft_max_f32: y = exp(x - max) by ggml_v_expf 16 at a time,
   * each vector's sum reduced in f32 and added to an f64 sum; the last
   * n % 16 by libm's expf, added one by one. */
  double sum = 0.0;
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    {
      for (int l = 0; l < LANES; l++)
        y[i + l] = lp_ggml_v_expf (x[i + l] - max);
      sum += (double) lp_ggml_reduce16 (y + i);
    }
  for (; i < n; i++)
    {
      y[i] = expf (x[i] - max);
      sum += (double) y[i];
    }
  return sum;
}

void
lp_ggml_soft_max (const float *x, const float *mask, int mask_rows, float *dst, int rows, int n, float scale)
{
  /* ggml_compute_forward_soft_max_f32 without ALiBi (max_bias 0: slope 1)
   * or sinks: x * scale, + mask (an FMA with the slope, exact at 1), the
   * max, ggml_vec_soft_max_f32, then times f32 (1 / sum).  Row r reads
   * mask row r % mask_rows (the mask is shared by the heads). */
  g_autofree float *w = g_new (float, n);
  for (int r = 0; r < rows; r++)
    {
      const float *xr = x + (gsize) r * n;
      const float *mr = mask ? mask + (gsize) (r % mask_rows) * n : NULL;
      float *yr = dst + (gsize) r * n;
      for (int i = 0; i < n; i++)
        w[i] = xr[i] * scale;
      if (mr)
        for (int i = 0; i < n; i++)
          w[i] = fmaf (mr[i], 1.0f, w[i]);
      float max = -INFINITY;
      for (int i = 0; i < n; i++)
        max = fmaxf (max, w[i]);
      double sum = lp_ggml_vec_soft_max (n, yr, w, max);
      float inv = (float) (1.0 / sum);
      for (int i = 0; i < n; i++)
        yr[i] *= inv;
    }
}

void
lp_ggml_swiglu (const float *gate, const float *up, float *dst, int rows, int n)
{
  /* ggml_vec_swiglu_f32 on each row: silu(g) * u with ggml_v_silu,
   * g / (1 + ggml_v_expf(0 - g)), 16 at a time; the last n % 16 with
   * libm's expf. */
  for (int r = 0; r < rows; r++)
    {
      const float *g = gate + (gsize) r * n, *u = up + (gsize) r * n;
      float *y = dst + (gsize) r * n;
      int i = 0;
      for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
          y[i + l] = (g[i + l] / (1.0f + lp_ggml_v_expf (0.0f - g[i + l]))) * u[i + l];
      for (; i < n; i++)
        y[i] = (g[i] / (1.0f + expf (-g[i]))) * u[i];
    }
}
