/* The Vulkan backend against the C reference kernels, on whatever Vulkan
 * device is there (lavapipe in CI), with the Khronos validation layer on:
 * the module reports every validation error as a g_critical, fatal here.
 * Each op runs three ways: host-visible memory used directly, through
 * staging copies (the discrete-GPU path), and with bindings capped small so
 * every op tiles; the ops with fast paths (gemm_i8 by integer dot product,
 * gemm_w reading f16 weights) a fourth way, with LLMPRESS_VULKAN_DISABLE
 * turning those off, so both paths are checked on a device that has them.
 * Skips with the reason when there is no Vulkan device.
 *
 * Tolerances (relative Frobenius error against lp_ref_*, which accumulates
 * in double): GEMM/SYRK/attention 1e-5 (f32 accumulation over K <= 300),
 * element-wise ops 1e-6, dequantization and int8 GEMM exact (the same
 * int32 sums and f32 roundings as lp_ref_gemm_i8), f16 weights the bits of
 * the f32 product of the same values, integer-grid products the GEMM's
 * 1e-5 with the decoded weights exact, forward logits 1e-4,
 * stories260K perplexity within 1e-3 of the CPU backend's; group-wise RTN
 * as check_quantize_groups states. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

typedef enum { MODE_DIRECT, MODE_STAGING, MODE_TILED, MODE_NO_FAST, MODE_COUNT } Mode;
static const char *const mode_names[MODE_COUNT] = { "direct", "staging", "tiled (4..64 KiB bindings)",
                                                    "direct, fast paths off" };

#ifdef HAVE_VULKAN
/* The device's name carries the fast paths in use (", int-dot, float16"):
 * each must be there exactly when the device offers it and the mode does
 * not turn it off.  A device without one says so. */
static void
check_fast_paths (LpBackend *be, const GPtrArray *devices, Mode mode)
{
  const char *at = strstr (be->device_name, "[vulkan:");
  g_assert_nonnull (at);
  guint index = (guint) g_ascii_strtoull (at + strlen ("[vulkan:"), NULL, 10);
  g_assert_cmpuint (index, <, devices->len);
  const LpDeviceInfo *d = devices->pdata[index];
  struct {
    const char *tag, *what;
    gboolean offered;
  } paths[] = {
    { ", int-dot", "integer dot product (gemm_i8 by OpSDot)", d->int_dot },
    { ", float16", "16-bit storage and fp16 arithmetic (gemm_w reads f16 weights)", d->storage16 && d->float16 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (paths); i++)
    {
      gboolean want = paths[i].offered && mode != MODE_NO_FAST;
      g_assert_true ((strstr (be->device_name, paths[i].tag) != NULL) == want);
      if (!paths[i].offered)
        g_test_message ("%s: the device does not offer %s: only the core path is checked", d->name, paths[i].what);
    }
}
#endif

/* The device, or NULL after g_test_skip with the reason. */
static LpBackend *
open_vulkan (Mode mode, gsize max_binding)
{
  if (!lp_test_have_vulkan ())
    return NULL; /* always, in a build without Vulkan */
#ifdef HAVE_VULKAN
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = lp_backend_list_devices ("vulkan", &error);
  g_assert_no_error (error);
  if (mode == MODE_STAGING)
    g_setenv ("LLMPRESS_VULKAN_STAGING", "1", TRUE);
  if (mode == MODE_TILED)
    {
      g_autofree char *cap = g_strdup_printf ("%" G_GSIZE_FORMAT, max_binding);
      g_setenv ("LLMPRESS_VULKAN_MAX_BINDING", cap, TRUE);
    }
  if (mode == MODE_NO_FAST)
    g_setenv ("LLMPRESS_VULKAN_DISABLE", "int-dot, float16", TRUE);
  LpBackend *be = lp_backend_new ("vulkan", &error);
  g_unsetenv ("LLMPRESS_VULKAN_STAGING");
  g_unsetenv ("LLMPRESS_VULKAN_MAX_BINDING");
  g_unsetenv ("LLMPRESS_VULKAN_DISABLE");
  if (be == NULL && g_error_matches (error, LP_ERROR, LP_ERROR_MISSING))
    {
      /* The validation layer is not installed: CI installs it. */
      g_test_skip (error->message);
      return NULL;
    }
  g_assert_no_error (error);
  g_assert_cmpstr (be->ops->name, ==, "vulkan");
  g_test_message ("%s: %s", mode_names[mode], be->device_name);
  check_fast_paths (be, devices, mode);
  return be;
#else
  return NULL;
#endif
}

/* ---- each op, three or four ways ---- */

static void
check_gemm (LpBackend *be)
{
  static const int shapes[][3] = { { 1, 1, 1 }, { 37, 29, 53 }, { 64, 64, 64 }, { 130, 67, 200 }, { 3, 300, 17 } };
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (int tb = 0; tb < 2; tb++)
      for (int with_beta = 0; with_beta < 2; with_beta++)
        {
          int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
          /* Leading dimensions above the minimum: strided rows. */
          int lda = K + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
          int b_rows = tb ? N : K;
          g_autofree float *A = g_new (float, (gsize) M * lda), *B = g_new (float, (gsize) b_rows * ldb);
          g_autofree float *C = g_new (float, (gsize) M * ldc), *R = g_new (float, (gsize) M * ldc);
          lp_test_fill (A, (gsize) M * lda, 1 + s, 1);
          lp_test_fill (B, (gsize) b_rows * ldb, 2 + s, 1);
          lp_test_fill (C, (gsize) M * ldc, 3 + s, 1);
          memcpy (R, C, sizeof (float) * M * ldc);
          float beta = with_beta ? 0.25f : 0.0f;
          lp_gemm (be, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, C, ldc);
          lp_ref_gemm (tb, M, N, K, 0.5f, A, lda, B, ldb, beta, R, ldc);
          /* Padding columns of C untouched too. */
          lp_test_assert_close (C, R, (gsize) M * ldc, 1e-5);
        }
}

/* Where each block type keeps its scales: random bytes there could spell Inf
 * or NaN (whose products and payloads the two sides need not agree on), so
 * random blocks get finite values in these fields. */
typedef struct {
  LpDType type;
  int f16[2]; /* byte offsets of f16 scales (-1: none) */
  int f32;    /* byte offset of an f32 scale (-1: none) */
} ScaleFields;

static const ScaleFields scale_fields[] = {
  { LP_DTYPE_Q4_0, { 0, -1 }, -1 },   { LP_DTYPE_Q4_1, { 0, 2 }, -1 },    { LP_DTYPE_Q5_0, { 0, -1 }, -1 },
  { LP_DTYPE_Q5_1, { 0, 2 }, -1 },    { LP_DTYPE_Q8_0, { 0, -1 }, -1 },   { LP_DTYPE_Q8_1, { 0, 2 }, -1 },
  { LP_DTYPE_Q2_K, { 80, 82 }, -1 },  { LP_DTYPE_Q3_K, { 108, -1 }, -1 }, { LP_DTYPE_Q4_K, { 0, 2 }, -1 },
  { LP_DTYPE_Q5_K, { 0, 2 }, -1 },    { LP_DTYPE_Q6_K, { 208, -1 }, -1 }, { LP_DTYPE_Q8_K, { -1, -1 }, 0 },
  { LP_DTYPE_IQ4_NL, { 0, -1 }, -1 },
};

/* Random bytes for `n_blocks` blocks of `type`, every code value possible,
 * with finite scales: any finite f16 (subnormals too), or an f32 within
 * 2^+-30 so that no product is subnormal (devices may flush those). */
static void
random_blocks (LpDType type, guint8 *dst, gsize n_blocks, GRand *r)
{
  const ScaleFields *sf = NULL;
  for (gsize i = 0; i < G_N_ELEMENTS (scale_fields); i++)
    if (scale_fields[i].type == type)
      sf = &scale_fields[i];
  g_assert_nonnull (sf);
  gsize size = lp_dtype_info (type)->type_size;
  for (gsize b = 0; b < n_blocks; b++)
    {
      guint8 *blk = dst + b * size;
      for (gsize i = 0; i < size; i++)
        blk[i] = (guint8) g_rand_int_range (r, 0, 256);
      for (int k = 0; k < 2; k++)
        if (sf->f16[k] >= 0 && (blk[sf->f16[k] + 1] & 0x7c) == 0x7c)
          blk[sf->f16[k] + 1] &= ~0x40; /* exponent 31 (Inf/NaN) becomes 15 */
      if (sf->f32 >= 0)
        {
          guint32 bits = (g_rand_int (r) & 0x807fffffu) | (guint32) g_rand_int_range (r, 127 - 30, 127 + 31) << 23;
          memcpy (blk + sf->f32, &bits, 4);
        }
    }
}

/* W[N,K] as `type`: f32/f16/bf16 converted from random floats; block types
 * quantized from them where lp_dtype_from_f32 can (all but q8_1 and q8_k),
 * with every third row (every row for q8_1/q8_k) random blocks instead. */
static guint8 *
make_weight (LpDType type, int N, int K, guint32 seed, gsize *bytes)
{
  guint64 row_bytes;
  g_assert_true (lp_dtype_row_bytes (type, K, &row_bytes, NULL));
  *bytes = (gsize) row_bytes * N;
  guint8 *w = g_malloc (*bytes);
  g_autofree float *f = g_new (float, (gsize) N * K);
  lp_test_fill (f, (gsize) N * K, seed, 1);
  gboolean converted = lp_dtype_from_f32 (type, f, w, (gsize) N * K, NULL);
  const LpDTypeInfo *info = lp_dtype_info (type);
  if (info->block_size == 1)
    {
      g_assert_true (converted);
      return w;
    }
  g_assert_true (converted || type == LP_DTYPE_Q8_1 || type == LP_DTYPE_Q8_K);
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  for (int row = 0; row < N; row++)
    if (!converted || row % 3 == 2)
      random_blocks (type, w + row * row_bytes, K / info->block_size, r);
  return w;
}

/* Every type the device reads (and f32).  K = 256, one K-quant super-block
 * a row; with 8 KiB bindings (tiled mode) a tile holds 8 rows of W and 8
 * of A, so the 45 x 19 product runs as 6 x 3 tiles, the last ones partial,
 * and the dequantization as 6 chunks. */
static void
check_gemm_w (LpBackend *be)
{
  static const LpDType types[] = {
    LP_DTYPE_F32,  LP_DTYPE_F16,  LP_DTYPE_BF16, LP_DTYPE_Q4_0, LP_DTYPE_Q4_1, LP_DTYPE_Q5_0,
    LP_DTYPE_Q5_1, LP_DTYPE_Q8_0, LP_DTYPE_Q8_1, LP_DTYPE_Q2_K, LP_DTYPE_Q3_K, LP_DTYPE_Q4_K,
    LP_DTYPE_Q5_K, LP_DTYPE_Q6_K, LP_DTYPE_Q8_K, LP_DTYPE_IQ4_NL,
  };
  int M = 19, N = 45, K = 256;
  for (gsize t = 0; t < G_N_ELEMENTS (types); t++)
    {
      gsize bytes;
      g_autofree guint8 *W = make_weight (types[t], N, K, 7 + t, &bytes);
      int lda = K + 1, ldc = N + 2;
      g_autofree float *A = g_new (float, (gsize) M * lda), *C = g_new (float, (gsize) M * ldc),
                       *R = g_new (float, (gsize) M * ldc);
      lp_test_fill (A, (gsize) M * lda, 8, 1);
      lp_test_fill (C, (gsize) M * ldc, 9, 1);
      memcpy (R, C, sizeof (float) * M * ldc);
      lp_gemm_w (be, M, N, K, A, lda, types[t], W, 1.0f, C, ldc);
      lp_ref_gemm_w (M, N, K, A, lda, types[t], W, 1.0f, R, ldc);
      g_test_message ("gemm_w and dequantize: %s", lp_dtype_name (types[t]));
      lp_test_assert_close (C, R, (gsize) M * ldc, 1e-5);
      if (types[t] == LP_DTYPE_F16)
        {
          /* f16 weights read directly (float16 fast path) or dequantized
           * first: either way the bits of the f32 product of the same values. */
          g_autofree float *W32 = g_new (float, (gsize) N * K), *F = g_new (float, (gsize) M * ldc);
          g_assert_true (lp_dtype_to_f32 (LP_DTYPE_F16, W, W32, (gsize) N * K, NULL));
          lp_test_fill (F, (gsize) M * ldc, 9, 1);
          lp_gemm_w (be, M, N, K, A, lda, LP_DTYPE_F32, W32, 1.0f, F, ldc);
          g_assert_cmpmem (C, sizeof (float) * M * ldc, F, sizeof (float) * M * ldc);
        }

      /* Dequantization is exact: the C code's operations in its order, each
       * correctly rounded, as on the CPU. */
      gsize n = (gsize) N * K;
      g_autofree float *d = g_new (float, n), *dr = g_new (float, n);
      g_assert_true (lp_dequantize (be, types[t], W, n, d));
      g_assert_true (lp_dtype_to_f32 (types[t], W, dr, n, NULL));
      g_assert_cmpmem (d, n * sizeof (float), dr, n * sizeof (float));
    }
}

/* int8 GEMM, bit for bit (lp_test_check_gemm_i8); in the tiled mode's
 * 8 KiB bindings the row of 9001 goes to the CPU. */
static void
check_gemm_i8 (LpBackend *be)
{
  lp_test_check_gemm_i8 (be);
}

/* The integer grid decoded on the device then the f32 product, against
 * lp_ref_gemm_grid (lp_test_check_gemm_grid: act-order g_idx, a short last
 * group, K not a multiple of 4, beta 0 and 1, and the decoded weights bit
 * for bit).  With 8 KiB bindings a tile holds 8 rows of a 256-column grid:
 * 45 rows decode as 6 tiles, the last one partial, and the row of 2100
 * goes to the CPU. */
static void
check_gemm_grid (LpBackend *be)
{
  lp_test_check_gemm_grid (be);
}

static void
check_syrk (LpBackend *be)
{
  static const int shapes[][2] = { { 41, 17 }, { 300, 70 }, { 1, 3 } };
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], n = shapes[s][1], ldx = n + 3;
      g_autofree float *X = g_new (float, (gsize) T * ldx), *H = g_new (float, (gsize) n * n),
                       *R = g_new (float, (gsize) n * n);
      lp_test_fill (X, (gsize) T * ldx, 20 + s, 1);
      /* Accumulates onto what H holds (a symmetric start). */
      for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
          H[i * n + j] = R[i * n + j] = (float) (i + j) / n;
      lp_syrk (be, T, n, X, ldx, H);
      lp_ref_syrk (T, n, X, ldx, R);
      lp_test_assert_close (H, R, (gsize) n * n, 1e-5);
    }
}

static void
check_rmsnorm (LpBackend *be)
{
  static const int shapes[][2] = { { 5, 64 }, { 3, 1000 }, { 70, 7 } };
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], D = shapes[s][1];
      g_autofree float *x = g_new (float, (gsize) T * D), *w = g_new (float, D), *y = g_new (float, (gsize) T * D),
                       *r = g_new (float, (gsize) T * D);
      lp_test_fill (x, (gsize) T * D, 30 + s, 2);
      lp_test_fill (w, D, 31 + s, 1);
      lp_rmsnorm (be, T, D, x, w, 1e-5f, y);
      lp_ref_rmsnorm (T, D, x, w, 1e-5f, r);
      lp_test_assert_close (y, r, (gsize) T * D, 1e-6);
      lp_rmsnorm (be, T, D, x, w, 1e-5f, x); /* in place */
      lp_test_assert_close (x, r, (gsize) T * D, 1e-6);
    }
}

static void
check_rope (LpBackend *be)
{
  static const int shapes[][4] = { { 7, 3, 8, 0 }, { 33, 4, 64, 100 }, { 2, 1, 2, 4000 } };
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (int style = 0; style < 2; style++)
      {
        int T = shapes[s][0], nh = shapes[s][1], hd = shapes[s][2], pos0 = shapes[s][3];
        gsize n = (gsize) T * nh * hd;
        g_autofree float *x = g_new (float, n), *r = g_new (float, n), *f = g_new (float, hd / 2);
        lp_test_fill (x, n, 40 + s, 1);
        memcpy (r, x, n * sizeof (float));
        for (int i = 0; i < hd / 2; i++)
          f[i] = (float) pow (10000.0, -2.0 * i / hd);
        LpRopeStyle st = style ? LP_ROPE_NEOX : LP_ROPE_NORMAL;
        lp_rope (be, st, T, nh, hd, pos0, f, x);
        lp_ref_rope (st, T, nh, hd, pos0, f, r);
        lp_test_assert_close (x, r, n, 1e-6);
      }
}

static void
check_attention (LpBackend *be)
{
  /* T, T_kv, H, Hkv, hd: no history, GQA, KV history, one query over many
   * keys (several 64-key chunks), MHA, a head dim the device declines. */
  static const int shapes[][5] = {
    { 16, 16, 4, 4, 8 }, { 40, 40, 8, 2, 64 }, { 3, 70, 4, 2, 100 }, { 1, 200, 2, 1, 16 }, { 9, 9, 2, 1, 300 },
  };
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int T = shapes[s][0], T_kv = shapes[s][1], H = shapes[s][2], Hkv = shapes[s][3], hd = shapes[s][4];
      gsize nq = (gsize) T * H * hd, nkv = (gsize) T_kv * Hkv * hd;
      g_autofree float *q = g_new (float, nq), *k = g_new (float, nkv), *v = g_new (float, nkv);
      g_autofree float *o = g_new (float, nq), *r = g_new (float, nq);
      lp_test_fill (q, nq, 50 + s, 1);
      lp_test_fill (k, nkv, 51 + s, 1);
      lp_test_fill (v, nkv, 52 + s, 1);
      lp_attention (be, T, T_kv, H, Hkv, hd, q, k, v, o);
      lp_ref_attention (T, T_kv, H, Hkv, hd, q, k, v, r);
      lp_test_assert_close (o, r, nq, 1e-5);
    }
}

static void
check_swiglu (LpBackend *be)
{
  static const int sizes[] = { 1, 1000, 20000 };
  for (gsize s = 0; s < G_N_ELEMENTS (sizes); s++)
    {
      int n = sizes[s];
      g_autofree float *g = g_new (float, n), *u = g_new (float, n), *o = g_new (float, n), *r = g_new (float, n);
      lp_test_fill (g, n, 60 + s, 4);
      lp_test_fill (u, n, 61 + s, 1);
      lp_swiglu (be, n, g, u, o);
      lp_ref_swiglu (n, g, u, r);
      lp_test_assert_close (o, r, n, 1e-6);
    }
}

/* ---- group-wise RTN ---- */

/* A group's imp-weighted squared reconstruction error, in double. */
static double
group_sq_error (const float *w, const float *imp, int n, const guint8 *codes, guint16 scale, guint8 zero)
{
  double s = lp_f16_to_f32 (scale), err = 0;
  for (int j = 0; j < n; j++)
    {
      double d = s * ((int) codes[j] - (int) zero) - w[j];
      err += (imp ? imp[j] : 1.0) * d * d;
    }
  return err;
}

/* Whether code is the rounding of x / scale + zero (clamped) for the
 * device's own scale and zero, either neighbour accepted within 1e-3 of a
 * tie (the device's division is not correctly rounded). */
static gboolean
code_is_nearest (float x, guint16 scale, guint8 zero, int maxq, guint8 code)
{
  double v = CLAMP ((double) x / lp_f16_to_f32 (scale), -1e6, 1e6);
  double lo = floor (v), frac = v - lo;
  int a = CLAMP ((int) nearbyint (v) + zero, 0, maxq);
  if (code == a)
    return TRUE;
  if (fabs (frac - 0.5) >= 1e-3)
    return FALSE;
  int other = CLAMP ((int) (frac < 0.5 ? lo + 1 : lo) + zero, 0, maxq);
  return code == other;
}

/* W[R, ldw]: uniform values with a few outliers (so that clip search has a
 * range to shrink), and rows that stress the fit: all zero (range [-1, 1]),
 * all non-negative (zero clamped to 1), tiny (subnormal f16 scales). */
static void
fill_weights (float *W, int R, int C, int ldw, guint32 seed)
{
  lp_test_fill (W, (gsize) R * ldw, seed, 0.05);
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  for (gsize i = 0; i < (gsize) R * ldw; i++)
    if (g_rand_int_range (r, 0, 50) == 0)
      W[i] *= 6;
    else if (g_rand_int_range (r, 0, 10) == 0)
      W[i] = 0; /* pruned */
  for (int c = 0; c < C; c++)
    {
      W[c] = 0;
      W[ldw + c] = fabsf (W[ldw + c]);
      W[2 * ldw + c] *= 1e-4f;
    }
}

/* Against lp_ref_quantize_groups.  Tolerance (the device may differ from
 * the reference at exact rounding boundaries of its inexact division, and
 * sums clip-search errors in f32 where the reference uses double): for
 * every group, the device's scale within 1 f16 ulp of the reference's and
 * its zero within 1; every code the rounding of w / scale + zero for the
 * device's own scale and zero (code_is_nearest); each group's squared
 * error at most the reference's times 1 + 1e-3 (+ 1e-12); and at least 99%
 * of the groups identical to the reference. */
static void
check_quantize_groups (LpBackend *be)
{
  /* R, C, group (0: per channel), bits, importance, clip search, symmetric.
   * C = 1000 falls back to the CPU when tiled. */
  static const int cases[][7] = {
    { 40, 300, 128, 4, 1, 1, 0 }, { 37, 300, 32, 3, 0, 0, 1 }, { 24, 256, 0, 8, 1, 0, 0 },
    { 30, 100, 32, 2, 0, 1, 0 },  { 33, 64, 32, 4, 1, 1, 1 },  { 20, 256, 128, 8, 0, 1, 1 },
    { 45, 200, 32, 4, 0, 0, 0 },  { 6, 1000, 128, 3, 1, 1, 0 },
  };
  gsize groups = 0, identical = 0;
  for (gsize k = 0; k < G_N_ELEMENTS (cases); k++)
    {
      int R = cases[k][0], C = cases[k][1], ldw = C + 3;
      LpGroupQuant q = { cases[k][3], cases[k][2] ? cases[k][2] : C, cases[k][6], cases[k][5] };
      int G = (C + q.group - 1) / q.group, maxq = (1 << q.bits) - 1;
      g_autofree float *W = g_new (float, (gsize) R * ldw), *imp = NULL;
      fill_weights (W, R, C, ldw, 80 + k);
      if (cases[k][4])
        {
          imp = g_new (float, C);
          lp_test_fill (imp, C, 90 + k, 1);
          for (int c = 0; c < C; c++)
            imp[c] = 0.01f + imp[c] * imp[c];
        }
      g_autofree guint8 *codes = g_new (guint8, (gsize) R * C), *ref_codes = g_new (guint8, (gsize) R * C);
      g_autofree guint16 *scales = g_new (guint16, (gsize) R * G), *ref_scales = g_new (guint16, (gsize) R * G);
      g_autofree guint8 *zeros = g_new (guint8, (gsize) R * G), *ref_zeros = g_new (guint8, (gsize) R * G);
      lp_quantize_groups (be, R, C, W, ldw, imp, &q, codes, scales, zeros);
      lp_ref_quantize_groups (R, C, W, ldw, imp, &q, ref_codes, ref_scales, ref_zeros);
      for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
          {
            gsize i = (gsize) r * G + g, c0 = (gsize) g * q.group;
            int n = MIN (q.group, C - (int) c0);
            const float *w = W + (gsize) r * ldw + c0;
            const guint8 *cd = codes + (gsize) r * C + c0, *cr = ref_codes + (gsize) r * C + c0;
            if (abs ((int) scales[i] - (int) ref_scales[i]) > 1 || abs ((int) zeros[i] - (int) ref_zeros[i]) > 1)
              g_error ("case %" G_GSIZE_FORMAT ", row %d, group %d: scale %04x zero %u, the reference %04x %u", k, r, g,
                       scales[i], zeros[i], ref_scales[i], ref_zeros[i]);
            for (int j = 0; j < n; j++)
              if (!code_is_nearest (w[j], scales[i], zeros[i], maxq, cd[j]))
                g_error ("case %" G_GSIZE_FORMAT ", row %d, column %d: code %u for %g on scale %g zero %u", k, r,
                         (int) c0 + j, cd[j], w[j], lp_f16_to_f32 (scales[i]), zeros[i]);
            const float *gi = imp ? imp + c0 : NULL;
            double e = group_sq_error (w, gi, n, cd, scales[i], zeros[i]);
            double er = group_sq_error (w, gi, n, cr, ref_scales[i], ref_zeros[i]);
            g_assert_cmpfloat (e, <=, er * (1 + 1e-3) + 1e-12);
            groups++;
            identical += scales[i] == ref_scales[i] && zeros[i] == ref_zeros[i] && memcmp (cd, cr, n) == 0;
          }
    }
  g_test_message ("quantize_groups: %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " groups identical to the reference",
                  identical, groups);
  g_assert_cmpfloat ((double) identical, >=, 0.99 * groups);
}

typedef struct {
  const char *path;
  void (*check) (LpBackend *be);
  gsize tiled_binding; /* small enough that the shapes above span several tiles */
  gboolean fast_paths; /* it has a fast path: run with them off too */
} OpCheck;

static const OpCheck op_checks[] = {
  { "/vulkan/gemm", check_gemm, 16 << 10, FALSE },
  { "/vulkan/gemm-w-and-dequantize", check_gemm_w, 8 << 10, TRUE },
  { "/vulkan/gemm-i8", check_gemm_i8, 8 << 10, TRUE },
  { "/vulkan/gemm-grid", check_gemm_grid, 8 << 10, FALSE },
  { "/vulkan/syrk", check_syrk, 32 << 10, FALSE },
  { "/vulkan/rmsnorm", check_rmsnorm, 64 << 10, FALSE },
  { "/vulkan/rope", check_rope, 64 << 10, FALSE },
  { "/vulkan/attention", check_attention, 64 << 10, FALSE },
  { "/vulkan/swiglu", check_swiglu, 64 << 10, FALSE },
  /* 1024 floats: 3 rows of 300 a tile, and 1000 columns go to the CPU. */
  { "/vulkan/quantize-groups", check_quantize_groups, 4 << 10, FALSE },
};

static void
run_op_check (gconstpointer data)
{
  const OpCheck *c = data;
  for (Mode m = 0; m < (c->fast_paths ? MODE_COUNT : MODE_NO_FAST); m++)
    {
      g_autoptr (LpBackend) be = open_vulkan (m, c->tiled_binding);
      if (be == NULL)
        return;
      c->check (be);
    }
}

/* ---- selection, fallback, the forward pass ---- */

static void
test_devices_and_selection (void)
{
  g_autoptr (LpBackend) be = open_vulkan (MODE_DIRECT, 0);
  if (be == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = lp_backend_list_devices ("vulkan", &error);
  g_assert_no_error (error);
  gboolean any_gpu = FALSE;
  for (guint i = 0; i < devices->len; i++)
    {
      const LpDeviceInfo *d = devices->pdata[i];
      g_assert_cmpint (d->index, ==, i);
      g_assert_nonnull (d->name);
      g_assert_true (d->usable == (d->skip_reason == NULL));
      any_gpu |= d->usable && (d->type == LP_DEVICE_DISCRETE_GPU || d->type == LP_DEVICE_INTEGRATED_GPU);
    }
  /* auto never picks a CPU device such as lavapipe. */
  g_autoptr (LpBackend) au = lp_backend_new ("auto", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (au->ops->name, ==, any_gpu ? "vulkan" : "cpu");

  g_autofree char *bad = g_strdup_printf ("vulkan:%u", devices->len);
  g_assert_null (lp_backend_new (bad, &error));
  lp_test_assert_error_contains (error, bad, "index below", NULL);
  g_clear_error (&error);
  g_assert_null (lp_backend_new ("vulkan:x", &error));
  lp_test_assert_error_contains (error, "vulkan:N", "\"vulkan:x\"", NULL);
  g_clear_error (&error);
  g_assert_null (lp_backend_new ("vulkanic", &error));
  lp_test_assert_error_contains (error, "expected cpu, auto or vulkan[:N]", NULL);
  g_clear_error (&error);
  /* A fast path that does not exist is an error, not silently ignored. */
  g_setenv ("LLMPRESS_VULKAN_DISABLE", "float16,int8", TRUE);
  g_assert_null (lp_backend_new ("vulkan", &error));
  g_unsetenv ("LLMPRESS_VULKAN_DISABLE");
  lp_test_assert_error_contains (error, "LLMPRESS_VULKAN_DISABLE", "\"int8\"", "int-dot, float16", NULL);
  g_clear_error (&error);

  /* LLMPRESS_DEVICE is the default. */
  g_setenv ("LLMPRESS_DEVICE", "vulkan:0", TRUE);
  g_autoptr (LpBackend) env = lp_backend_new (NULL, &error);
  g_unsetenv ("LLMPRESS_DEVICE");
  g_assert_no_error (error);
  g_assert_cmpstr (env->ops->name, ==, "vulkan");

  char *out = NULL;
  g_assert_cmpint (lp_test_run_cli (&out, NULL, "devices", NULL), ==, 0);
  g_assert_nonnull (strstr (out, "vulkan:0"));
  g_assert_nonnull (strstr (out, "auto: "));
  g_free (out);
}

static void
test_fallback (void)
{
  g_autoptr (LpBackend) be = open_vulkan (MODE_DIRECT, 0);
  if (be == NULL)
    return;
  g_assert_true (lp_backend_for_op (be, LP_OP_GEMM) == be);
  g_assert_true (lp_backend_for_op (be, LP_OP_CHOLESKY) == be->fallback);
  g_assert_cmpstr (be->fallback->ops->name, ==, "cpu");
  g_autofree char *desc = lp_backend_describe (be);
  g_assert_nonnull (strstr (desc, "on the CPU: cholesky"));
  /* The declined op still runs, on the CPU, through the same call. */
  int n = 12;
  g_autofree float *A = g_new0 (float, n * n), *R = g_new0 (float, n * n), *X = g_new (float, 30 * n);
  lp_test_fill (X, 30 * n, 70, 1);
  lp_syrk (be, 30, n, X, n, A);
  for (int i = 0; i < n; i++)
    A[i * n + i] += 1.0f;
  memcpy (R, A, sizeof (float) * n * n);
  g_assert_true (lp_cholesky (be, n, A, n));
  g_assert_true (lp_ref_cholesky (n, R, n));
  lp_test_assert_close (A, R, n * n, 1e-5);
  /* A type the device does not read (i32) falls back inside the op. */
  gint32 ints[32];
  float f[32], fr[32];
  for (int i = 0; i < 32; i++)
    ints[i] = i - 16;
  g_assert_true (lp_dequantize (be, LP_DTYPE_I32, ints, 32, f));
  g_assert_true (lp_dtype_to_f32 (LP_DTYPE_I32, ints, fr, 32, NULL));
  g_assert_cmpmem (f, sizeof f, fr, sizeof fr);
}

static void
test_forward_synth (void)
{
  g_autoptr (LpBackend) vk = open_vulkan (MODE_DIRECT, 0);
  if (vk == NULL)
    return;
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (GError) error = NULL;
  LpSynthOptions so = LP_SYNTH_OPTIONS_INIT;
  so.untied = TRUE;
  g_autoptr (LpModel) m = lp_model_synth (&so, &error);
  g_assert_no_error (error);
  const LpModelConfig *c = lp_model_config (m);
  int T = 40, V = (int) c->n_vocab;
  gint32 toks[40];
  for (int i = 0; i < T; i++)
    toks[i] = (i * 37 + 11) % V;
  g_autoptr (LpForward) fv = lp_forward_new (m, vk, &error);
  g_autoptr (LpForward) fc = lp_forward_new (m, cpu, &error);
  g_assert_no_error (error);
  g_autofree float *lv = g_new (float, (gsize) T * V), *lc = g_new (float, (gsize) T * V);
  g_assert_true (lp_forward_logits (fv, toks, T, NULL, lv, &error));
  g_assert_true (lp_forward_logits (fc, toks, T, NULL, lc, &error));
  lp_test_assert_close (lv, lc, (gsize) T * V, 1e-4);

  /* Incremental decoding (KV history) on the device matches the full pass. */
  g_autoptr (LpKVCache) cache = lp_kv_cache_new (c, T);
  g_autofree float *li = g_new (float, (gsize) T * V);
  g_assert_true (lp_forward_logits (fv, toks, T - 5, cache, li, &error));
  for (int t = T - 5; t < T; t++)
    g_assert_true (lp_forward_logits (fv, toks + t, 1, cache, li + (gsize) t * V, &error));
  g_assert_no_error (error);
  lp_test_assert_close (li, lc, (gsize) T * V, 1e-4);
}

/* The weights of stories260K's layers stored in a mix of the types the
 * device decodes (rows of 172 cannot hold 32-blocks: 16-bit there). */
static void
quantize_layers (LpModel *m)
{
  static const LpDType blocks[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q5_0, LP_DTYPE_Q4_1, LP_DTYPE_Q5_1, LP_DTYPE_Q4_0 };
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const LpTensor *t = lp_model_tensor_at (m, i);
      if (t->n_dims == 2 && g_str_has_prefix (t->name, "blk."))
        g_ptr_array_add (names, g_strdup (t->name));
    }
  for (guint i = 0; i < names->len; i++)
    {
      LpTensor *t = lp_model_tensor (m, names->pdata[i]);
      LpDType type = lp_tensor_row_length (t) % 32 == 0 ? blocks[i % G_N_ELEMENTS (blocks)]
                     : i % 2                            ? LP_DTYPE_F16
                                                        : LP_DTYPE_BF16;
      g_autoptr (GError) error = NULL;
      g_autoptr (LpTensor) q = lp_tensor_convert (t, type, &error);
      g_assert_no_error (error);
      lp_model_set_tensor (m, q);
    }
}

/* For the stories260K tests: the paths of `model` and of the token file in
 * ../shared, and a Vulkan device; NULL (the test skipped, with the reason)
 * when any of them is missing. */
static LpBackend *
stories_open (const char *model, char **mp, char **dp)
{
  *mp = lp_test_shared_path (model);
  *dp = *mp ? lp_test_shared_path ("data/tinystories-valid-head.tok512.u16") : NULL;
  return *dp ? open_vulkan (MODE_DIRECT, 0) : NULL;
}

/* m's perplexity on `windows` windows of 512 tokens of dp, on the device
 * (rv) and on the CPU (rc). */
static void
eval_on_both (LpModel *m, const char *dp, LpBackend *vk, int windows, LpEvalResult *rv, LpEvalResult *rc)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) toks = lp_tokens_load (dp, m, &error);
  g_assert_no_error (error);
  LpEvalOptions o = { .ctx = 512, .max_windows = windows, .backend = vk };
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, rv, &error));
  g_assert_no_error (error);
  o.backend = NULL;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, rc, &error));
  g_assert_no_error (error);
}

/* The real model's perplexity on the device and on the CPU: f32 weights,
 * then (fewer windows: lavapipe is slow) block-quantized and 16-bit ones,
 * which the forward pass hands to the device as stored. */
static void
test_stories_ppl (void)
{
  g_autofree char *mp = NULL, *dp = NULL;
  g_autoptr (LpBackend) vk = stories_open ("models/stories260K/stories260K-f32.gguf", &mp, &dp);
  if (vk == NULL)
    return;
  for (int quantized = 0; quantized < 2; quantized++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (LpModel) m = lp_model_load (mp, NULL, &error);
      g_assert_no_error (error);
      if (quantized)
        quantize_layers (m);
      int windows = quantized ? 3 : 20;
      LpEvalResult rv, rc;
      /* The GGUF declares 128 (the converter's default); it was trained on
       * 512: evaluation warns on stderr and goes on. */
      eval_on_both (m, dp, vk, windows, &rv, &rc);
      g_test_message ("stories260K%s, %d windows: ppl %.6f on %s, %.6f on the CPU (%.0f vs %.0f tokens/s)",
                      quantized ? " (layers q8_0/q5_0/q4_1/q5_1/q4_0/f16/bf16)" : "", windows, rv.ppl,
                      vk->device_name, rc.ppl, rv.tokens_per_s, rc.tokens_per_s);
      g_assert_cmpfloat (fabs (rv.ppl - rc.ppl), <, 1e-3);
    }
}

/* quantize.rtn with --backend vulkan, end to end through the CLI (under the
 * validation layer, inherited): the pass runs group-wise RTN with clip
 * search on the device (groups of 32, ffn_down's rows of 172 ending in a
 * group of 12).  Against the same run on the CPU: at least 99% of the
 * integer-grid groups identical (check_quantize_groups' tolerance) and of
 * the weights (the GPTQ layout does not fit the MLP's 172 rows or columns:
 * those are saved as their dense values), and the saved models score the
 * same perplexity on the CPU within 1e-3. */
static void
test_stories_rtn (void)
{
  g_autofree char *mp = NULL, *dp = NULL;
  g_autoptr (LpBackend) vk = stories_open ("models/stories260K/stories260K.bin", &mp, &dp);
  if (vk == NULL)
    return;
  static const char *const backends[2] = { "vulkan", "cpu" };
  LpModel *m[2];
  for (int b = 0; b < 2; b++)
    {
      g_autofree char *dir = g_build_filename (lp_test_tmpdir (), backends[b], NULL);
      g_autofree char *pipeline = g_strdup_printf ("load path=%s ! quantize.rtn bits=4 group_size=32 clip_search=true "
                                                   "! save path=%s/q.safetensors",
                                                   mp, dir);
      char *err = NULL;
      int status = lp_test_run_cli (NULL, &err, "run", "-q", "--no-cache", "--backend", backends[b], "-o", dir, "-p",
                                    pipeline, NULL);
      if (status != 0 || strstr (err, "CRITICAL") != NULL)
        g_error ("--backend %s: exit %d: %s", backends[b], status, err);
      g_free (err);
      g_autofree char *saved = g_build_filename (dir, "q.safetensors", NULL);
      g_autoptr (GError) error = NULL;
      m[b] = lp_model_load (saved, NULL, &error);
      g_assert_no_error (error);
    }
  gsize groups = 0, identical = 0, weights = 0, same_weights = 0;
  for (guint i = 0; i < lp_model_n_tensors (m[0]); i++)
    {
      const LpTensor *t = lp_model_tensor_at (m[0], i);
      const LpTensor *u = lp_model_tensor (m[1], t->name);
      g_assert_nonnull (u);
      g_autoptr (GError) error = NULL;
      g_autofree float *x = lp_tensor_dup_f32 (t, &error), *y = lp_tensor_dup_f32 (u, &error);
      g_assert_no_error (error);
      gsize n_el = (gsize) lp_tensor_n_elements (t);
      g_assert_cmpint (lp_tensor_n_elements (u), ==, n_el);
      for (gsize e = 0; e < n_el; e++)
        same_weights += x[e] == y[e];
      weights += n_el;
      g_assert_true ((lp_tensor_int_grid (t) == NULL) == (lp_tensor_int_grid (u) == NULL));
      if (lp_tensor_int_grid (t) == NULL)
        continue;
      const LpIntGrid *a = lp_tensor_int_grid (t), *c = lp_tensor_int_grid (u);
      for (gint64 r = 0; r < a->rows; r++)
        for (int g = 0; g < a->n_groups; g++)
          {
            gint64 k = r * a->n_groups + g, c0 = (gint64) g * a->group_size;
            gsize n = (gsize) MIN (a->group_size, a->cols - c0);
            groups++;
            identical += a->scales[k] == c->scales[k] && a->zeros[k] == c->zeros[k]
                         && memcmp (a->codes + r * a->cols + c0, c->codes + r * a->cols + c0, n) == 0;
          }
    }
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) toks = lp_tokens_load (dp, m[0], &error);
  g_assert_no_error (error);
  LpEvalOptions o = { .ctx = 512, .max_windows = 10 };
  LpEvalResult rv, rc;
  g_assert_true (lp_eval_run (m[0], (gint32 *) toks->data, toks->len, &o, &rv, &error));
  g_assert_true (lp_eval_run (m[1], (gint32 *) toks->data, toks->len, &o, &rc, &error));
  g_assert_no_error (error);
  g_test_message ("stories260K int4 g32 RTN: %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " groups and %" G_GSIZE_FORMAT
                  " of %" G_GSIZE_FORMAT " weights as on the CPU; ppl %.6f (quantized on the device), %.6f (on the CPU)",
                  identical, groups, same_weights, weights, rv.ppl, rc.ppl);
  g_assert_cmpuint (groups, >, 0);
  g_assert_cmpfloat ((double) identical, >=, 0.99 * groups);
  g_assert_cmpfloat ((double) same_weights, >=, 0.99 * weights);
  g_assert_cmpfloat (fabs (rv.ppl - rc.ppl), <, 1e-3);
  lp_model_unref (m[0]);
  lp_model_unref (m[1]);
}

/* A GPTQ checkpoint's layers through gemm_grid: stories260K quantized with
 * GPTQ act-order (int4, groups of 32) on the CPU and saved as
 * compressed-tensors, reloaded with its integer grids (g_idx permuted),
 * scores the same perplexity on the device, which decodes the grids
 * itself, as on the CPU, within 1e-3 (3 windows: lavapipe is slow). */
static void
test_stories_gptq (void)
{
  g_autofree char *mp = NULL, *dp = NULL;
  g_autoptr (LpBackend) vk = stories_open ("models/stories260K/stories260K.bin", &mp, &dp);
  if (vk == NULL)
    return;
  g_autofree char *dir = g_build_filename (lp_test_tmpdir (), "gptq", NULL);
  g_autofree char *text = g_strdup_printf ("[pipeline]\ncalibration=%s\ncalibration_samples=32\ncalibration_seq_len=256\n"
                                           "calibration_range=300000:\n[load]\npath=%s\n[q]\npass=quantize.gptq\n"
                                           "input=load\nbits=4\ngroup_size=32\nact_order=true\n[save]\npass=save\n"
                                           "input=q\npath=%s/q.safetensors\n",
                                           dp, mp, dir);
  g_autofree char *spec = lp_test_write_file ("gptq.ini", text, strlen (text));
  char *err = NULL;
  int status = lp_test_run_cli (NULL, &err, "run", "-q", "--no-cache", "--backend", "cpu", "-o", dir, spec, NULL);
  if (status != 0)
    g_error ("gptq: exit %d: %s", status, err);
  g_free (err);
  g_autofree char *saved = g_build_filename (dir, "q.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (saved, NULL, &error);
  g_assert_no_error (error);
  guint grids = 0, act_order = 0;
  for (guint i = 0; i < lp_model_n_tensors (m); i++)
    {
      const LpIntGrid *g = lp_tensor_int_grid (lp_model_tensor_at (m, i));
      if (g == NULL)
        continue;
      grids++;
      for (gint64 c = 0; c < g->cols; c++)
        if (g->g_idx[c] != c / g->group_size)
          {
            act_order++;
            break;
          }
    }
  g_assert_cmpuint (act_order, >, 0);
  LpEvalResult rv, rc;
  eval_on_both (m, dp, vk, 3, &rv, &rc);
  g_test_message ("stories260K GPTQ act-order int4 g32 (%u integer grids, %u with g_idx permuted), 3 windows: "
                  "ppl %.9f on %s, %.9f on the CPU",
                  grids, act_order, rv.ppl, vk->device_name, rc.ppl);
  g_assert_cmpfloat (fabs (rv.ppl - rc.ppl), <, 1e-3);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* Every run here under the Khronos validation layer. */
  g_setenv ("LLMPRESS_VULKAN_VALIDATION", "1", TRUE);
  for (gsize i = 0; i < G_N_ELEMENTS (op_checks); i++)
    g_test_add_data_func (op_checks[i].path, &op_checks[i], run_op_check);
  g_test_add_func ("/vulkan/devices-and-selection", test_devices_and_selection);
  g_test_add_func ("/vulkan/fallback", test_fallback);
  g_test_add_func ("/vulkan/forward-synth", test_forward_synth);
  g_test_add_func ("/vulkan/stories260K-ppl", test_stories_ppl);
  g_test_add_func ("/vulkan/stories260K-rtn", test_stories_rtn);
  g_test_add_func ("/vulkan/stories260K-gptq", test_stories_gptq);
  return g_test_run ();
}
