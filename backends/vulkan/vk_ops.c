/* llmpress Vulkan backend — the ops, and the module's entry point.
 *
 * Each op tiles its operands so that no buffer exceeds the device's binding
 * limit (lavapipe: 128 MiB), and hands shapes it cannot tile (one row
 * larger than a binding, head dims above 256) to the CPU fallback.
 * Extension point: a new op adds a shader to shaders/, an id in
 * vk-internal.h, a function here, and a line in supports_op(). */
#include "config.h"

#include <math.h>
#include <string.h>
#include <gmodule.h>

#include "vk-internal.h"

#define CTX(be) ((LpVkCtx *) (be)->priv)
#define F4 sizeof (float)
/* The attention shader keeps 4 output dims per thread. */
/* gemm_i8's K slice in shared memory: 8 packed words, 32 int8. */
#define GEMM_I8_BK4 8

static gsize
floats_per_binding (LpVkCtx *ctx)
{
  return (gsize) (ctx->max_binding / F4);
}

guint32
lp_vk_groups (LpVkCtx *ctx, gsize n)
{
  return (guint32) MAX (1, MIN ((n + ctx->wg_size - 1) / ctx->wg_size, ctx->max_groups_x));
}

static gboolean
vk_supports_op (LpBackend *be, LpOp op)
{
  /* Cholesky and the triangular inverse are sequential and small next to
   * the products around them. */
  return op != LP_OP_CHOLESKY && op != LP_OP_TRI_INVERSE;
}

/* ---- GEMM ---- */

enum { SLOT_A, SLOT_B, SLOT_C, SLOT_RAW, SLOT_D, SLOT_E };

/* shader: VK_SH_GEMM, or VK_SH_GEMM_F16 with B in f16 (the same push). */
static void
gemm_dispatch (LpVkCtx *ctx, VkShaderId shader, int a, int b, int c, const LpVkGemmPush *p)
{
  const LpVkBuf *bufs[3] = { &ctx->fr->slots[a], &ctx->fr->slots[b], &ctx->fr->slots[c] };
  lp_vk_gemm_dispatch (ctx, shader, bufs, p);
}

/* Below this K, f32 products skip shared memory (gemm_direct.comp): the
 * same sums in the same order, so the same bits. */
#define GEMM_DIRECT_MAX_K 256

void
lp_vk_gemm_dispatch (LpVkCtx *ctx, VkShaderId shader, const LpVkBuf *const *abc, const LpVkGemmPush *p)
{
  if (shader == VK_SH_GEMM && p->K <= GEMM_DIRECT_MAX_K)
    {
      /* Rows of A and B as vec4s where they line up (gemm_direct.comp's VEC4). */
      gboolean vec4 = !p->trans_a && p->K % 4 == 0 && p->lda % 4 == 0 && p->ldb % 4 == 0;
      shader = vec4 && p->trans_b                 ? VK_SH_GEMM_DIRECT4
               : vec4 && !p->trans_b && p->N % 4 == 0 ? VK_SH_GEMM_DIRECT4_BROWS
                                                      : VK_SH_GEMM_DIRECT;
    }
  guint32 spec[3] = { ctx->gemm_wx, ctx->gemm_wy, ctx->gemm_bk };
  guint32 bm = ctx->gemm_wy * 4, bn = ctx->gemm_wx * 4;
  if (shader == VK_SH_GEMM_DIRECT4 || shader == VK_SH_GEMM_DIRECT4_BROWS)
    {
      /* 8 rows of sums an invocation: half the threads down, the same tile. */
      spec[1] /= 2;
    }
  lp_vk_dispatch_bufs (ctx, shader, spec, 3, abc, 3, p, sizeof *p, (p->N + bn - 1) / bn, (p->M + bm - 1) / bm);
}

typedef struct {
  guint32 n;
} CountPush;

/* n elements of `type` in SLOT_RAW to f32 in `dst`. */
static void
dequant_dispatch (LpVkCtx *ctx, LpDType type, gsize n, int dst)
{
  guint32 spec[2] = { ctx->wg_size, (guint32) type };
  int bindings[2] = { SLOT_RAW, dst };
  CountPush p = { (guint32) n };
  lp_vk_dispatch (ctx, VK_SH_DEQUANT, spec, 2, bindings, 2, &p, sizeof p, lp_vk_groups (ctx, n), 1);
}

/* The types shaders/dequant.comp decodes: every 16-bit float and block
 * type lp_dtype_to_f32 reads, bit for bit.  The plain f32/f64/integer types
 * are left to the CPU (nothing to decode, or no 64-bit types in core). */
gboolean
lp_vk_device_reads (LpDType t)
{
  switch (t)
    {
    case LP_DTYPE_F16:
    case LP_DTYPE_BF16:
    case LP_DTYPE_Q4_0:
    case LP_DTYPE_Q4_1:
    case LP_DTYPE_Q5_0:
    case LP_DTYPE_Q5_1:
    case LP_DTYPE_Q8_0:
    case LP_DTYPE_Q8_1:
    case LP_DTYPE_Q2_K:
    case LP_DTYPE_Q3_K:
    case LP_DTYPE_Q4_K:
    case LP_DTYPE_Q5_K:
    case LP_DTYPE_Q6_K:
    case LP_DTYPE_Q8_K:
    case LP_DTYPE_IQ4_NL:
      return TRUE;
    default:
      return FALSE;
    }
}

/* Tiled products alternate their tiles between the two frames
 * (lp_vk_run_submit), so the host uploads the next tile (a block of weights,
 * streaming) while the device computes this one.  Each frame's B slot keeps
 * the column block it last held: b_load says whether this tile must upload
 * its block into the frame it is recorded in. */
typedef struct {
  int held[LP_VK_FRAMES];
} BHeld;
#define B_HELD_INIT { { -1, -1 } }
G_STATIC_ASSERT (LP_VK_FRAMES == 2);

static gboolean
b_load (LpVkCtx *ctx, BHeld *b, int j0)
{
  int f = (int) (ctx->fr - ctx->frames);
  gboolean load = b->held[f] != j0;
  b->held[f] = j0;
  return load;
}

/* One product, B either f32 (trans_b or not), W rows of `wtype`, or the
 * rows of an integer grid (`grid` set, B unused). */
typedef struct {
  int M, N, K;
  float alpha, beta;
  const float *A;
  int lda;
  gboolean trans_b;
  const void *B;
  int ldb;
  LpDType wtype;
  float *C;
  int ldc;
  const LpIntGrid *grid;
} GemmJob;

/* Staging bytes grid_decode takes for nb rows: its three uploads, each
 * rounded as staging space is handed out (16 bytes). */
static gsize
grid_upload_bytes (const LpIntGrid *g, int nb)
{
  gsize codes = (gsize) nb * g->cols, params = (gsize) nb * g->n_groups * 4, g_idx = (gsize) g->cols * 4;
  return codes + params + g_idx + 3 * 16;
}

typedef struct {
  guint32 rows, cols, G;
} GridPush;

/* Rows j0 .. j0 + nb - 1 of the grid decoded into slot `dst` (nb x K f32)
 * by shaders/dequant_grid.comp: the codes uploaded as they are (a byte
 * each, 4 to a word), each group's scale and zero packed into one word,
 * and g_idx.  Every binding is at most nb x K words, so whatever tiles the
 * f32 product fits. */
static void
grid_decode (LpVkCtx *ctx, const LpIntGrid *g, int j0, int nb, int dst)
{
  gsize K = (gsize) g->cols, G = (gsize) g->n_groups;
  gsize code_bytes = (gsize) nb * K, n_params = (gsize) nb * G;
  g_autofree guint32 *params = g_new (guint32, n_params);
  const guint16 *scales = g->scales + (gsize) j0 * G;
  const guint8 *zeros = g->zeros + (gsize) j0 * G;
  for (gsize i = 0; i < n_params; i++)
    params[i] = scales[i] | (guint32) zeros[i] << 16;
  lp_vk_slot (ctx, SLOT_RAW, (code_bytes + 3) & ~(gsize) 3);
  lp_vk_upload (ctx, SLOT_RAW, g->codes + (gsize) j0 * K, 1, code_bytes, code_bytes);
  lp_vk_slot (ctx, SLOT_D, n_params * 4);
  lp_vk_upload (ctx, SLOT_D, params, 1, n_params * 4, n_params * 4);
  lp_vk_slot (ctx, SLOT_E, K * 4);
  lp_vk_upload (ctx, SLOT_E, g->g_idx, 1, K * 4, K * 4);
  lp_vk_slot (ctx, dst, code_bytes * F4);
  lp_vk_barrier (ctx);
  guint32 spec[1] = { ctx->wg_size };
  int bindings[4] = { SLOT_RAW, SLOT_D, SLOT_E, dst };
  GridPush p = { (guint32) nb, (guint32) K, (guint32) G };
  lp_vk_dispatch (ctx, VK_SH_DEQUANT_GRID, spec, 1, bindings, 4, &p, sizeof p, lp_vk_groups (ctx, code_bytes), 1);
}

/* C[i0:i0+mb, j0:j0+nb], submitted without waiting (gemm_run waits); B's
 * block is uploaded (and dequantized, or decoded from the integer grid)
 * only when load_b: it stays in the frame's slot for the frame's next row
 * block.  f16 weights are read as they are when the device has the float16
 * fast path, else dequantized to f32 first: the same bits either way
 * (gemm.comp). */
static void
gemm_tile (LpVkCtx *ctx, const GemmJob *j, int i0, int mb, int j0, int nb, gboolean load_b)
{
  gsize K = (gsize) j->K;
  guint64 row_bytes = K * F4;
  if (j->wtype != LP_DTYPE_F32)
    g_assert (lp_dtype_row_bytes (j->wtype, K, &row_bytes, NULL));
  gboolean f16 = j->wtype == LP_DTYPE_F16 && (ctx->fast & LP_VK_FAST_F16);
  gsize b_bytes = j->wtype == LP_DTYPE_F32 ? nb * K * F4 : nb * row_bytes;
  gsize c_bytes = (gsize) mb * nb * F4;
  gsize b_staging = j->grid ? grid_upload_bytes (j->grid, nb) : b_bytes;
  lp_vk_run_begin (ctx, (load_b ? b_staging : 0) + mb * K * F4 + c_bytes * (j->beta != 0.0f ? 2 : 1) + 64);
  lp_vk_slot (ctx, SLOT_A, mb * K * F4);
  lp_vk_upload (ctx, SLOT_A, j->A + (gsize) i0 * j->lda, mb, K * F4, (gsize) j->lda * F4);
  if (load_b)
    {
      if (j->grid)
        grid_decode (ctx, j->grid, j0, nb, SLOT_B);
      else if (f16)
        {
          lp_vk_slot (ctx, SLOT_B, b_bytes);
          lp_vk_upload (ctx, SLOT_B, (const guint8 *) j->B + (gsize) j0 * row_bytes, 1, b_bytes, b_bytes);
        }
      else if (j->wtype != LP_DTYPE_F32)
        {
          lp_vk_slot (ctx, SLOT_B, nb * K * F4);
          lp_vk_slot (ctx, SLOT_RAW, b_bytes);
          lp_vk_upload (ctx, SLOT_RAW, (const guint8 *) j->B + (gsize) j0 * row_bytes, 1, b_bytes, b_bytes);
          lp_vk_barrier (ctx);
          dequant_dispatch (ctx, j->wtype, nb * K, SLOT_B);
        }
      else
        {
          lp_vk_slot (ctx, SLOT_B, nb * K * F4);
          if (j->trans_b)
            lp_vk_upload (ctx, SLOT_B, (const float *) j->B + (gsize) j0 * j->ldb, nb, K * F4, (gsize) j->ldb * F4);
          else
            lp_vk_upload (ctx, SLOT_B, (const float *) j->B + j0, K, nb * F4, (gsize) j->ldb * F4);
        }
    }
  lp_vk_slot (ctx, SLOT_C, c_bytes);
  float *c = j->C + (gsize) i0 * j->ldc + j0;
  if (j->beta != 0.0f)
    lp_vk_upload (ctx, SLOT_C, c, mb, nb * F4, (gsize) j->ldc * F4);
  lp_vk_barrier (ctx);
  gboolean tb = j->trans_b || j->wtype != LP_DTYPE_F32;
  LpVkGemmPush p = { (guint32) mb, (guint32) nb, (guint32) K, (guint32) K, tb ? (guint32) K : (guint32) nb,
                 (guint32) nb, 0, tb, j->alpha, j->beta };
  gemm_dispatch (ctx, f16 ? VK_SH_GEMM_F16 : VK_SH_GEMM, SLOT_A, SLOT_B, SLOT_C, &p);
  lp_vk_download (ctx, SLOT_C, c, mb, nb * F4, (gsize) j->ldc * F4);
  lp_vk_run_submit (ctx);
}

/* FALSE when one row of K floats does not fit a binding. */
static gboolean
gemm_run (LpVkCtx *ctx, const GemmJob *j)
{
  gsize lim = floats_per_binding (ctx);
  if (j->K <= 0 || (gsize) j->K > lim)
    return FALSE;
  if (j->M == 0 || j->N == 0)
    return TRUE;
  int nb = (int) MIN ((gsize) j->N, lim / j->K);
  int mb = (int) MIN ((gsize) j->M, MIN (lim / j->K, lim / nb));
  BHeld held = B_HELD_INIT;
  g_mutex_lock (&ctx->lock);
  for (int j0 = 0; j0 < j->N; j0 += nb)
    for (int i0 = 0; i0 < j->M; i0 += mb)
      gemm_tile (ctx, j, i0, MIN (mb, j->M - i0), j0, MIN (nb, j->N - j0), b_load (ctx, &held, j0));
  lp_vk_run_wait (ctx);
  g_mutex_unlock (&ctx->lock);
  return TRUE;
}

static void
vk_gemm (LpBackend *be, gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
         int ldb, float beta, float *C, int ldc)
{
  GemmJob j = { M, N, K, alpha, beta, A, lda, trans_b, B, ldb, LP_DTYPE_F32, C, ldc };
  if (!gemm_run (CTX (be), &j))
    be->fallback->ops->gemm (be->fallback, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void
vk_gemm_w (LpBackend *be, int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta,
           float *C, int ldc)
{
  GemmJob j = { M, N, K, 1.0f, beta, A, lda, TRUE, W, K, wtype, C, ldc };
  if ((wtype != LP_DTYPE_F32 && !lp_vk_device_reads (wtype)) || !gemm_run (CTX (be), &j))
    be->fallback->ops->gemm_w (be->fallback, M, N, K, A, lda, wtype, W, beta, C, ldc);
}

/* The grid's rows decoded on the device a tile at a time (grid_decode),
 * then the f32 product: a byte a weight crosses the bus, not four. */
static void
vk_gemm_grid (LpBackend *be, int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C,
              int ldc)
{
  GemmJob j = { M, N, K, 1.0f, beta, A, lda, TRUE, NULL, K, LP_DTYPE_F32, C, ldc, W };
  if (!gemm_run (CTX (be), &j))
    be->fallback->ops->gemm_grid (be->fallback, M, N, K, A, lda, W, beta, C, ldc);
}

/* ---- int8 GEMM ---- */

typedef struct {
  guint32 M, N, K4, ldc;
  float beta;
} GemmI8Push;

/* One gemm_i8 call: A[M,K], B[N,K] int8 rows, packed for the device into
 * k4 words a row (K padded with zeros to a multiple of 4). */
typedef struct {
  int M, N, K;
  const gint8 *A;
  int lda;
  const float *sa;
  const gint8 *B;
  int ldb;
  const float *sb;
  float beta;
  float *C;
  int ldc;
  gsize k4;
} GemmI8Job;

/* C[i0:i0+mb, j0:j0+nb], submitted without waiting; B's packed rows are
 * uploaded only when load_b and stay in the frame's slot (see BHeld).  The
 * scales of the tile's rows and columns share one binding: sa[i0..] then
 * sb[j0..]. */
static void
gemm_i8_tile (LpVkCtx *ctx, const GemmI8Job *j, int i0, int mb, int j0, int nb, gboolean load_b, float *scales)
{
  gsize row_bytes = j->k4 * 4, c_bytes = (gsize) mb * nb * F4, s_bytes = (gsize) (mb + nb) * F4;
  lp_vk_run_begin (ctx, (load_b ? nb * row_bytes : 0) + mb * row_bytes + s_bytes
                            + c_bytes * (j->beta != 0.0f ? 2 : 1) + 64);
  lp_vk_slot (ctx, SLOT_A, mb * row_bytes);
  lp_vk_upload_padded (ctx, SLOT_A, j->A + (gsize) i0 * j->lda, mb, (gsize) j->K, (gsize) j->lda, row_bytes);
  if (load_b)
    {
      lp_vk_slot (ctx, SLOT_B, nb * row_bytes);
      lp_vk_upload_padded (ctx, SLOT_B, j->B + (gsize) j0 * j->ldb, nb, (gsize) j->K, (gsize) j->ldb, row_bytes);
    }
  memcpy (scales, j->sa + i0, mb * F4);
  memcpy (scales + mb, j->sb + j0, nb * F4);
  lp_vk_slot (ctx, SLOT_D, s_bytes);
  lp_vk_upload (ctx, SLOT_D, scales, 1, s_bytes, s_bytes);
  lp_vk_slot (ctx, SLOT_C, c_bytes);
  float *c = j->C + (gsize) i0 * j->ldc + j0;
  if (j->beta != 0.0f)
    lp_vk_upload (ctx, SLOT_C, c, mb, nb * F4, (gsize) j->ldc * F4);
  lp_vk_barrier (ctx);
  guint32 spec[3] = { ctx->gemm_wx, ctx->gemm_wy, GEMM_I8_BK4 };
  int bindings[4] = { SLOT_A, SLOT_B, SLOT_D, SLOT_C };
  GemmI8Push p = { (guint32) mb, (guint32) nb, (guint32) j->k4, (guint32) nb, j->beta };
  guint32 bm = ctx->gemm_wy * 4, bn = ctx->gemm_wx * 4;
  VkShaderId shader = (ctx->fast & LP_VK_FAST_INT_DOT) ? VK_SH_GEMM_I8_DOT : VK_SH_GEMM_I8;
  lp_vk_dispatch (ctx, shader, spec, 3, bindings, 4, &p, sizeof p, (nb + bn - 1) / bn, (mb + bm - 1) / bm);
  lp_vk_download (ctx, SLOT_C, c, mb, nb * F4, (gsize) j->ldc * F4);
  lp_vk_run_submit (ctx);
}

/* Tiles of C such that every binding fits: packed rows of A and B, C's
 * block, and the scales (mb + nb floats: each at most a quarter binding).
 * One packed row larger than a binding, or K = 0 (empty bindings), go to
 * the CPU. */
static void
vk_gemm_i8 (LpBackend *be, int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B, int ldb,
            const float *sb, float beta, float *C, int ldc)
{
  LpVkCtx *ctx = CTX (be);
  GemmI8Job j = { M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc, ((gsize) MAX (K, 0) + 3) / 4 };
  gsize lim = (gsize) ctx->max_binding, row_bytes = j.k4 * 4;
  if (K <= 0 || row_bytes > lim)
    {
      be->fallback->ops->gemm_i8 (be->fallback, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc);
      return;
    }
  if (M <= 0 || N <= 0)
    return;
  /* Work-group counts stay within the limit too: 64 outputs a group a side. */
  gsize groups = (gsize) ctx->max_groups_x * ctx->gemm_wx * 4;
  int nb = (int) MIN ((gsize) N, MIN (lim / row_bytes, MIN (lim / (4 * F4), groups)));
  int mb = (int) MIN ((gsize) M, MIN (MIN (lim / row_bytes, lim / (4 * F4)), MIN (lim / ((gsize) nb * F4), groups)));
  g_autofree float *scales = g_new (float, mb + nb);
  BHeld held = B_HELD_INIT;
  g_mutex_lock (&ctx->lock);
  for (int j0 = 0; j0 < N; j0 += nb)
    for (int i0 = 0; i0 < M; i0 += mb)
      gemm_i8_tile (ctx, &j, i0, MIN (mb, M - i0), j0, MIN (nb, N - j0), b_load (ctx, &held, j0), scales);
  lp_vk_run_wait (ctx);
  g_mutex_unlock (&ctx->lock);
}

/* H += X^T X as op(A) op(B) with A = B = X (A transposed), X streamed in
 * row chunks while H stays on the device. */
static void
vk_syrk (LpBackend *be, int T, int n, const float *X, int ldx, float *H)
{
  LpVkCtx *ctx = CTX (be);
  gsize lim = floats_per_binding (ctx);
  if (n <= 0 || (gsize) n * n > lim)
    {
      be->fallback->ops->syrk (be->fallback, T, n, X, ldx, H);
      return;
    }
  if (T <= 0)
    return;
  int tc = (int) MIN ((gsize) T, lim / n);
  gsize h_bytes = (gsize) n * n * F4;
  g_mutex_lock (&ctx->lock);
  for (int t0 = 0; t0 < T; t0 += tc)
    {
      int rows = MIN (tc, T - t0);
      gboolean first = t0 == 0, last = t0 + rows >= T;
      lp_vk_run_begin (ctx, (gsize) rows * n * F4 + (first ? h_bytes : 0) + (last ? h_bytes : 0) + 64);
      if (first)
        {
          lp_vk_slot (ctx, SLOT_C, h_bytes);
          lp_vk_upload (ctx, SLOT_C, H, 1, h_bytes, h_bytes);
        }
      lp_vk_slot (ctx, SLOT_A, (gsize) rows * n * F4);
      lp_vk_upload (ctx, SLOT_A, X + (gsize) t0 * ldx, rows, n * F4, (gsize) ldx * F4);
      lp_vk_barrier (ctx);
      LpVkGemmPush p = { (guint32) n, (guint32) n, (guint32) rows, (guint32) n, (guint32) n, (guint32) n, 1, 0, 1.0f, 1.0f };
      gemm_dispatch (ctx, VK_SH_GEMM, SLOT_A, SLOT_A, SLOT_C, &p);
      if (last)
        lp_vk_download (ctx, SLOT_C, H, 1, h_bytes, h_bytes);
      lp_vk_run_end (ctx);
    }
  g_mutex_unlock (&ctx->lock);
}

/* ---- row-wise ops ---- */

typedef struct {
  guint32 D, row0;
  float eps;
} NormPush;

static void
vk_rmsnorm (LpBackend *be, int T, int D, const float *x, const float *w, float eps, float *y)
{
  LpVkCtx *ctx = CTX (be);
  gsize lim = floats_per_binding (ctx);
  if (D <= 0 || (gsize) D > lim)
    {
      be->fallback->ops->rmsnorm (be->fallback, T, D, x, w, eps, y);
      return;
    }
  int rows = (int) MIN ((gsize) T, MIN (lim / D, ctx->max_groups_x));
  gsize row_bytes = (gsize) D * F4;
  g_mutex_lock (&ctx->lock);
  for (int r0 = 0; r0 < T; r0 += rows)
    {
      int rr = MIN (rows, T - r0);
      lp_vk_run_begin (ctx, 2 * rr * row_bytes + row_bytes + 64);
      lp_vk_slot (ctx, SLOT_A, rr * row_bytes);
      lp_vk_upload (ctx, SLOT_A, x + (gsize) r0 * D, rr, row_bytes, row_bytes);
      if (r0 == 0)
        {
          lp_vk_slot (ctx, SLOT_B, row_bytes);
          lp_vk_upload (ctx, SLOT_B, w, 1, row_bytes, row_bytes);
        }
      lp_vk_slot (ctx, SLOT_C, rr * row_bytes);
      lp_vk_barrier (ctx);
      guint32 spec[1] = { ctx->wg_size };
      int bindings[3] = { SLOT_A, SLOT_B, SLOT_C };
      NormPush p = { (guint32) D, 0, eps };
      lp_vk_dispatch (ctx, VK_SH_RMSNORM, spec, 1, bindings, 3, &p, sizeof p, (guint32) rr, 1);
      lp_vk_download (ctx, SLOT_C, y + (gsize) r0 * D, rr, row_bytes, row_bytes);
      lp_vk_run_end (ctx);
    }
  g_mutex_unlock (&ctx->lock);
}


static void
vk_rope (LpBackend *be, LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, float *x)
{
  LpVkCtx *ctx = CTX (be);
  gsize lim = floats_per_binding (ctx);
  gsize row = (gsize) n_heads * hd;
  int half = hd / 2;
  if (row == 0 || row > lim || half == 0)
    {
      be->fallback->ops->rope (be->fallback, style, T, n_heads, hd, pos0, inv_freq, x);
      return;
    }
  int rows = (int) MIN ((gsize) T, MIN (lim / row, lim / (2 * half)));
  g_autofree float *cs = g_new (float, (gsize) rows * 2 * half);
  g_mutex_lock (&ctx->lock);
  for (int r0 = 0; r0 < T; r0 += rows)
    {
      int rr = MIN (rows, T - r0);
      /* The same angles as lp_ref_rope, in double. */
      for (int t = 0; t < rr; t++)
        for (int i = 0; i < half; i++)
          {
            double angle = (double) (pos0 + r0 + t) * inv_freq[i];
            cs[((gsize) t * half + i) * 2] = (float) cos (angle);
            cs[((gsize) t * half + i) * 2 + 1] = (float) sin (angle);
          }
      gsize x_bytes = rr * row * F4, cs_bytes = (gsize) rr * half * 2 * F4;
      lp_vk_run_begin (ctx, 2 * x_bytes + cs_bytes + 64);
      lp_vk_slot (ctx, SLOT_A, x_bytes);
      lp_vk_upload (ctx, SLOT_A, x + (gsize) r0 * row, 1, x_bytes, x_bytes);
      lp_vk_slot (ctx, SLOT_B, cs_bytes);
      lp_vk_upload (ctx, SLOT_B, cs, 1, cs_bytes, cs_bytes);
      lp_vk_barrier (ctx);
      guint32 spec[1] = { ctx->wg_size };
      int bindings[3] = { SLOT_A, SLOT_B, SLOT_A };
      LpVkRopePush p = { (guint32) rr, (guint32) n_heads, (guint32) hd, style == LP_ROPE_NEOX ? 1 : 0, 0, 0 };
      lp_vk_dispatch (ctx, VK_SH_ROPE, spec, 1, bindings, 3, &p, sizeof p, lp_vk_groups (ctx, (gsize) rr * n_heads * half), 1);
      lp_vk_download (ctx, SLOT_A, x + (gsize) r0 * row, 1, x_bytes, x_bytes);
      lp_vk_run_end (ctx);
    }
  g_mutex_unlock (&ctx->lock);
}


/* Query rows in chunks; keys and values uploaded once.  A chunk of rows
 * t0..t0+tc-1 sees T_kv - T + t0 + tc keys at most. */
static void
vk_attention (LpBackend *be, int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k, const float *v,
              float *out)
{
  LpVkCtx *ctx = CTX (be);
  gsize lim = floats_per_binding (ctx);
  gsize qrow = (gsize) H * hd, kvrow = (gsize) Hkv * hd;
  if (hd <= 0 || hd > LP_VK_ATTN_MAX_HD || Hkv <= 0 || H % Hkv != 0 || (guint) H > ctx->max_groups_x || qrow > lim
      || (gsize) T_kv * kvrow > lim || T <= 0)
    {
      be->fallback->ops->attention (be->fallback, T, T_kv, H, Hkv, hd, q, k, v, out);
      return;
    }
  int rows = (int) MIN ((gsize) T, MIN (lim / qrow, 65535));
  gsize kv_bytes = (gsize) T_kv * kvrow * F4;
  g_mutex_lock (&ctx->lock);
  for (int t0 = 0; t0 < T; t0 += rows)
    {
      int rr = MIN (rows, T - t0);
      gsize q_bytes = rr * qrow * F4;
      lp_vk_run_begin (ctx, 2 * q_bytes + (t0 == 0 ? 2 * kv_bytes : 0) + 64);
      lp_vk_slot (ctx, SLOT_A, q_bytes);
      lp_vk_upload (ctx, SLOT_A, q + (gsize) t0 * qrow, 1, q_bytes, q_bytes);
      if (t0 == 0)
        {
          lp_vk_slot (ctx, SLOT_B, kv_bytes);
          lp_vk_upload (ctx, SLOT_B, k, 1, kv_bytes, kv_bytes);
          lp_vk_slot (ctx, SLOT_C, kv_bytes);
          lp_vk_upload (ctx, SLOT_C, v, 1, kv_bytes, kv_bytes);
        }
      lp_vk_slot (ctx, SLOT_D, q_bytes);
      lp_vk_barrier (ctx);
      guint32 spec[1] = { LP_VK_ATTN_WG };
      int bindings[4] = { SLOT_A, SLOT_B, SLOT_C, SLOT_D };
      LpVkAttnPush p = { (guint32) rr, (guint32) (T_kv - T + t0 + rr), (guint32) H, (guint32) Hkv, (guint32) hd,
                     (float) (1.0 / sqrt ((double) hd)) };
      lp_vk_dispatch (ctx, VK_SH_ATTENTION, spec, 1, bindings, 4, &p, sizeof p, (guint32) H, (guint32) rr);
      lp_vk_download (ctx, SLOT_D, out + (gsize) t0 * qrow, 1, q_bytes, q_bytes);
      lp_vk_run_end (ctx);
    }
  g_mutex_unlock (&ctx->lock);
}

static void
vk_swiglu (LpBackend *be, int n, const float *gate, const float *up, float *out)
{
  LpVkCtx *ctx = CTX (be);
  gsize chunk = floats_per_binding (ctx);
  g_mutex_lock (&ctx->lock);
  for (gsize i0 = 0; i0 < (gsize) MAX (n, 0); i0 += chunk)
    {
      gsize c = MIN (chunk, (gsize) n - i0), bytes = c * F4;
      lp_vk_run_begin (ctx, 3 * bytes + 64);
      lp_vk_slot (ctx, SLOT_A, bytes);
      lp_vk_upload (ctx, SLOT_A, gate + i0, 1, bytes, bytes);
      lp_vk_slot (ctx, SLOT_B, bytes);
      lp_vk_upload (ctx, SLOT_B, up + i0, 1, bytes, bytes);
      lp_vk_slot (ctx, SLOT_C, bytes);
      lp_vk_barrier (ctx);
      guint32 spec[1] = { ctx->wg_size };
      int bindings[3] = { SLOT_A, SLOT_B, SLOT_C };
      CountPush p = { (guint32) c };
      lp_vk_dispatch (ctx, VK_SH_SWIGLU, spec, 1, bindings, 3, &p, sizeof p, lp_vk_groups (ctx, c), 1);
      lp_vk_download (ctx, SLOT_C, out + i0, 1, bytes, bytes);
      lp_vk_run_end (ctx);
    }
  g_mutex_unlock (&ctx->lock);
}

static gboolean
vk_dequantize (LpBackend *be, LpDType type, const void *src, gsize n, float *dst)
{
  LpVkCtx *ctx = CTX (be);
  const LpDTypeInfo *info = lp_dtype_info (type);
  if (!lp_vk_device_reads (type) || info == NULL || n % info->block_size != 0)
    return be->fallback->ops->dequantize (be->fallback, type, src, n, dst);
  gsize lim = floats_per_binding (ctx);
  gsize blocks = MIN (lim / info->block_size, (gsize) ctx->max_binding / info->type_size);
  g_mutex_lock (&ctx->lock);
  for (gsize b0 = 0; b0 * info->block_size < n; b0 += blocks)
    {
      gsize nb = MIN (blocks, n / info->block_size - b0);
      gsize raw = nb * info->type_size, count = nb * info->block_size;
      lp_vk_run_begin (ctx, raw + count * F4 + 64);
      lp_vk_slot (ctx, SLOT_RAW, raw);
      lp_vk_upload (ctx, SLOT_RAW, (const guint8 *) src + b0 * info->type_size, 1, raw, raw);
      lp_vk_slot (ctx, SLOT_B, count * F4);
      lp_vk_barrier (ctx);
      dequant_dispatch (ctx, type, count, SLOT_B);
      lp_vk_download (ctx, SLOT_B, dst + b0 * info->block_size, 1, count * F4, count * F4);
      lp_vk_run_end (ctx);
    }
  g_mutex_unlock (&ctx->lock);
  return TRUE;
}

/* ---- group-wise RTN onto the integer grid ---- */

typedef struct {
  guint32 rows, cols, G, group, bits, symmetric, clip_search;
} QuantPush;

/* The shrink factors of the reference's clip search (p = 1 - i/100,
 * i = 1..80), then the column importances: the shader's aux binding. */
#define QG_SHRINK 80

/* Tiles of rows: W and the codes (one uint each) are rows x cols words, so
 * one row of cols (and the aux table) must fit a binding, else the CPU. */
static void
vk_quantize_groups (LpBackend *be, int rows, int cols, const float *W, int ldw, const float *imp,
                    const LpGroupQuant *q, guint8 *codes, guint16 *scales, guint8 *zeros)
{
  LpVkCtx *ctx = CTX (be);
  gsize lim = floats_per_binding (ctx);
  if (cols <= 0 || (gsize) cols + QG_SHRINK > lim)
    {
      be->fallback->ops->quantize_groups (be->fallback, rows, cols, W, ldw, imp, q, codes, scales, zeros);
      return;
    }
  if (rows <= 0)
    return;
  int G = (cols + q->group - 1) / q->group;
  int tile = (int) MIN ((gsize) rows, lim / cols);
  gsize aux_bytes = ((gsize) QG_SHRINK + cols) * F4;
  g_autofree float *aux = g_new (float, QG_SHRINK + cols);
  for (int i = 1; i <= QG_SHRINK; i++)
    aux[i - 1] = 1.f - (float) i / 100.f;
  for (int c = 0; c < cols; c++)
    aux[QG_SHRINK + c] = imp ? imp[c] : 1.f;
  g_autofree guint32 *tcodes = g_new (guint32, (gsize) tile * cols), *tparams = g_new (guint32, (gsize) tile * G);
  g_mutex_lock (&ctx->lock);
  for (int r0 = 0; r0 < rows; r0 += tile)
    {
      int rr = MIN (tile, rows - r0);
      gsize w_bytes = (gsize) rr * cols * F4, p_bytes = (gsize) rr * G * 4;
      lp_vk_run_begin (ctx, 2 * w_bytes + p_bytes + (r0 == 0 ? aux_bytes : 0) + 64);
      lp_vk_slot (ctx, SLOT_A, w_bytes);
      lp_vk_upload (ctx, SLOT_A, W + (gsize) r0 * ldw, rr, cols * F4, (gsize) ldw * F4);
      if (r0 == 0)
        {
          lp_vk_slot (ctx, SLOT_B, aux_bytes);
          lp_vk_upload (ctx, SLOT_B, aux, 1, aux_bytes, aux_bytes);
        }
      lp_vk_slot (ctx, SLOT_C, w_bytes);
      lp_vk_slot (ctx, SLOT_D, p_bytes);
      lp_vk_barrier (ctx);
      guint32 spec[1] = { ctx->wg_size };
      int bindings[4] = { SLOT_A, SLOT_B, SLOT_C, SLOT_D };
      QuantPush p = { (guint32) rr, (guint32) cols, (guint32) G, (guint32) q->group, (guint32) q->bits,
                      q->symmetric ? 1 : 0, q->clip_search ? 1 : 0 };
      lp_vk_dispatch (ctx, VK_SH_QUANTIZE_GROUPS, spec, 1, bindings, 4, &p, sizeof p,
                      lp_vk_groups (ctx, (gsize) rr * G), 1);
      lp_vk_download (ctx, SLOT_C, tcodes, 1, w_bytes, w_bytes);
      lp_vk_download (ctx, SLOT_D, tparams, 1, p_bytes, p_bytes);
      lp_vk_run_end (ctx);
      /* The shader writes words (no 8/16-bit storage): narrow them here. */
      for (gsize i = 0; i < (gsize) rr * cols; i++)
        codes[(gsize) r0 * cols + i] = (guint8) tcodes[i];
      for (gsize i = 0; i < (gsize) rr * G; i++)
        {
          scales[(gsize) r0 * G + i] = (guint16) (tparams[i] & 0xffff);
          zeros[(gsize) r0 * G + i] = (guint8) (tparams[i] >> 16);
        }
    }
  g_mutex_unlock (&ctx->lock);
}

static gboolean
vk_cholesky (LpBackend *be, int n, float *A, int lda)
{
  return be->fallback->ops->cholesky (be->fallback, n, A, lda);
}

static void
vk_destroy (LpBackend *be)
{
  lp_vk_ctx_free (CTX (be));
  g_free (be);
}

static const LpBackendOps vk_ops = {
  .api_version = LP_BACKEND_API_VERSION,
  .name = "vulkan",
  .supports_op = vk_supports_op,
  .gemm = vk_gemm,
  .syrk = vk_syrk,
  .rmsnorm = vk_rmsnorm,
  .rope = vk_rope,
  .attention = vk_attention,
  .swiglu = vk_swiglu,
  .cholesky = vk_cholesky,
  .gemm_w = vk_gemm_w,
  .dequantize = vk_dequantize,
  .gemm_i8 = vk_gemm_i8,
  .quantize_groups = vk_quantize_groups,
  .gemm_grid = vk_gemm_grid,
  .buffer_new = lp_vk_buffer_new,
  .buffer_free = lp_vk_buffer_free,
  .buffer_write = lp_vk_buffer_write,
  .buffer_read = lp_vk_buffer_read,
  .supports_node = lp_vk_supports_node,
  .graph_compute = lp_vk_graph_compute,
  .destroy = vk_destroy,
};

static LpBackend *
vk_open (int index, GError **error)
{
  char *name = NULL, *numeric_class = NULL;
  LpVkCtx *ctx = lp_vk_ctx_new (index, &name, &numeric_class, error);
  if (ctx == NULL)
    return NULL;
  LpBackend *be = g_new0 (LpBackend, 1);
  be->ops = &vk_ops;
  be->ref_count = 1;
  be->device_name = name;
  be->numeric_class = numeric_class;
  be->priv = ctx;
  return be;
}

static const LpBackendModule vk_module = {
  .api_version = LP_BACKEND_API_VERSION,
  .struct_size = sizeof (LpBackendModule),
  .name = "vulkan",
  .list_devices = lp_vk_list_devices,
  .open = vk_open,
};

G_MODULE_EXPORT const LpBackendModule *lp_backend_module_init (void);

const LpBackendModule *
lp_backend_module_init (void)
{
  return &vk_module;
}
