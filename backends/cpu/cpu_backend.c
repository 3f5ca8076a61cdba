/* llmpress — the CPU backend: OpenBLAS for matrix products, LAPACKE for
 * factorizations, plain loops for the memory-bound element-wise ops.
 * Always present; supports every op; the reference other backends are
 * tested against (after lp_ref_* which defines each op). */
#include "config.h"

#include <stdlib.h>

#include <math.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>

#include "lp-internal.h"
#include <llmpress/backend.h>
#include "compute-internal.h"

static gboolean
cpu_supports_op (LpBackend *be, LpOp op)
{
  return TRUE;
}

static void
cpu_gemm (LpBackend *be, gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc)
{
  cblas_sgemm (CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
               lda, B, ldb, beta, C, ldc);
}

static void
cpu_syrk (LpBackend *be, int T, int n, const float *X, int ldx, float *H)
{
  /* ssyrk fills one triangle at half the flops of a gemm; mirror it after. */
  cblas_ssyrk (CblasRowMajor, CblasLower, CblasTrans, n, T, 1.0f, X, ldx, 1.0f, H, n);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      H[(gsize) i * n + j] = H[(gsize) j * n + i];
}

static void
cpu_rmsnorm (LpBackend *be, int T, int D, const float *x, const float *w, float eps, float *y)
{
  lp_ref_rmsnorm (T, D, x, w, eps, y);
}

static void
cpu_rope (LpBackend *be, LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, float *x)
{
  lp_ref_rope (style, T, n_heads, hd, pos0, inv_freq, x);
}

static void
cpu_attention (LpBackend *be, int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k,
               const float *v, float *out)
{
  lp_cpu_attention (T, T_kv, H, Hkv, hd, q, k, v, out);
}

static void
cpu_swiglu (LpBackend *be, int n, const float *gate, const float *up, float *out)
{
  lp_ref_swiglu (n, gate, up, out);
}

/* Tiles of the triangle moves below: a 32 x 32 tile of source and
 * destination both stay in the first cache level. */
#define TRI_TILE 32

/* dst[i*dr + j*dc] = src[i*sr + j*sc] for i >= j: a lower triangle moved
 * between row-major (stride lda, 1) and column-major (1, n) storage, a tile
 * at a time (LAPACKE's row-major entry points make the same copy element by
 * element, a cache miss a value). */
static void
lower_move (int n, const float *src, gsize sr, gsize sc, float *dst, gsize dr, gsize dc)
{
  for (int i0 = 0; i0 < n; i0 += TRI_TILE)
    for (int j0 = 0; j0 <= i0; j0 += TRI_TILE)
      for (int i = i0; i < MIN (i0 + TRI_TILE, n); i++)
        for (int j = j0; j < MIN (j0 + TRI_TILE, i + 1); j++)
          dst[i * dr + j * dc] = src[i * sr + j * sc];
}

/* LAPACK's column-major spotrf / strtri on the lower triangle, moved there
 * and back by tiles: the same LAPACK call on the same values as LAPACKE's
 * row-major entry points (so the same bits), without their per-element
 * transposes and NaN scan (a third of the time of both on n = 1536). */
static gboolean
cpu_cholesky (LpBackend *be, int n, float *A, int lda)
{
  g_autofree float *S = g_new (float, (gsize) n * n);
  lower_move (n, A, lda, 1, S, 1, n);
  lapack_int info = LAPACKE_spotrf_work (LAPACK_COL_MAJOR, 'L', n, S, n);
  lower_move (n, S, 1, n, A, lda, 1);
  if (info != 0)
    return FALSE;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      A[(gsize) i * lda + j] = 0.0f;
  return TRUE;
}

static gboolean
cpu_tri_inverse (LpBackend *be, int n, float *L, int lda)
{
  g_autofree float *S = g_new (float, (gsize) n * n);
  lower_move (n, L, lda, 1, S, 1, n);
  lapack_int info = LAPACKE_strtri_work (LAPACK_COL_MAJOR, 'L', 'N', n, S, n);
  lower_move (n, S, 1, n, L, lda, 1);
  return info == 0;
}

static void
cpu_gemm_w (LpBackend *be, int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W,
            float beta, float *C, int ldc)
{
  lp_cpu_gemm_w (M, N, K, A, lda, wtype, W, beta, C, ldc);
}

static void
cpu_gemm_grid (LpBackend *be, int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C,
               int ldc)
{
  lp_cpu_gemm_grid (M, N, K, A, lda, W, beta, C, ldc);
}

/* int8 values and their partial sums are exact in f32 up to 2^24, which a
 * run of 1024 products of magnitude at most 128^2 reaches: sgemm over
 * 1024-deep slices of K, each slice's (integral) result added in int32. */
#define I8_EXACT_K 1024

static void
cpu_gemm_i8 (LpBackend *be, int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B, int ldb,
             const float *sb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  int kc = MIN (MAX (K, 1), I8_EXACT_K);
  g_autofree float *a = g_new (float, (gsize) M * kc), *b = g_new (float, (gsize) N * kc);
  g_autofree float *part = g_new (float, (gsize) M * N);
  g_autofree gint32 *acc = g_new0 (gint32, (gsize) M * N);
  for (int k0 = 0; k0 < K; k0 += kc)
    {
      int kn = MIN (kc, K - k0);
      for (int i = 0; i < M; i++)
        for (int k = 0; k < kn; k++)
          a[(gsize) i * kc + k] = A[(gsize) i * lda + k0 + k];
      for (int j = 0; j < N; j++)
        for (int k = 0; k < kn; k++)
          b[(gsize) j * kc + k] = B[(gsize) j * ldb + k0 + k];
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, kn, 1.0f, a, kc, b, kc, 0.0f, part, N);
      for (gsize e = 0; e < (gsize) M * N; e++)
        acc[e] += (gint32) part[e];
    }
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++)
      {
        float v = (float) acc[(gsize) i * N + j] * (sa[i] * sb[j]);
        float *c = &C[(gsize) i * ldc + j];
        *c = beta != 0.0f ? v + beta * *c : v;
      }
}

static gboolean
cpu_dequantize (LpBackend *be, LpDType type, const void *src, gsize n, float *dst)
{
  return lp_dtype_to_f32 (type, src, dst, n, NULL);
}

static void
cpu_quantize_groups (LpBackend *be, int rows, int cols, const float *W, int ldw, const float *imp,
                     const LpGroupQuant *q, guint8 *codes, guint16 *scales, guint8 *zeros)
{
  lp_cpu_quantize_groups (rows, cols, W, ldw, imp, q, codes, scales, zeros);
}

/* ---- buffers and graphs: host memory, each node's CPU kernel in order ----
 *
 * Freed buffers of 1 MiB and more are kept (up to POOL_CAP bytes, the
 * oldest let go first) for the next request of the same size: a forward
 * pass allocates the same activations layer after layer and window after
 * window, and each allocation that glibc serves with fresh pages (above
 * its mmap threshold, or after trimming the heap) is a page fault and a
 * page cleared per 4 KiB before the first product writes it.  Measured on
 * eval's head (logits blocks of 100 MB for SmolLM2). */
#define POOL_MIN ((gsize) 1 << 20)
#define POOL_CAP ((gsize) 512 << 20)
/* Each buffer's size before it, in a header that keeps malloc's alignment. */
#define HEADER 64

typedef struct {
  LpBackend base;
  GMutex lock;
  GQueue kept; /* headers of freed buffers, oldest first */
  gsize kept_bytes;
} CpuBackend;

static gsize
buffer_size (gconstpointer header)
{
  gsize bytes;
  memcpy (&bytes, header, sizeof bytes);
  return bytes;
}

/* A kept buffer of exactly `bytes` (its header), taken from the pool; NULL when none. */
static gpointer
pool_take (CpuBackend *cb, gsize bytes)
{
  gpointer found = NULL;
  g_mutex_lock (&cb->lock);
  for (GList *l = cb->kept.tail; l != NULL; l = l->prev)
    if (buffer_size (l->data) == bytes)
      {
        found = l->data;
        g_queue_delete_link (&cb->kept, l);
        cb->kept_bytes -= bytes;
        break;
      }
  g_mutex_unlock (&cb->lock);
  return found;
}

static gpointer
cpu_buffer_new (LpBackend *be, gsize bytes, GError **error)
{
  gpointer header = bytes >= POOL_MIN ? pool_take ((CpuBackend *) be, bytes) : NULL;
  if (header == NULL && bytes <= G_MAXSIZE - HEADER)
    header = g_try_malloc (HEADER + bytes);
  if (header == NULL)
    {
      lp_set_error (error, LP_ERROR_FAILED, "cpu: out of memory for a buffer of %" G_GSIZE_FORMAT " bytes", bytes);
      return NULL;
    }
  memcpy (header, &bytes, sizeof bytes);
  return (guint8 *) header + HEADER;
}

static void
cpu_buffer_free (LpBackend *be, gpointer buf)
{
  CpuBackend *cb = (CpuBackend *) be;
  gpointer header = (guint8 *) buf - HEADER;
  gsize bytes = buffer_size (header);
  if (bytes < POOL_MIN || bytes > POOL_CAP)
    {
      g_free (header);
      return;
    }
  GSList *evicted = NULL; /* freed outside the lock */
  g_mutex_lock (&cb->lock);
  while (cb->kept_bytes + bytes > POOL_CAP)
    {
      gpointer old = g_queue_pop_head (&cb->kept);
      cb->kept_bytes -= buffer_size (old);
      evicted = g_slist_prepend (evicted, old);
    }
  g_queue_push_tail (&cb->kept, header);
  cb->kept_bytes += bytes;
  g_mutex_unlock (&cb->lock);
  g_slist_free_full (evicted, g_free);
}

gsize
lp_cpu_pool_bytes (LpBackend *be)
{
  g_return_val_if_fail (lp_backend_is_cpu (be), 0);
  CpuBackend *cb = (CpuBackend *) be;
  g_mutex_lock (&cb->lock);
  gsize bytes = cb->kept_bytes;
  g_mutex_unlock (&cb->lock);
  return bytes;
}

static void
cpu_buffer_write (LpBackend *be, gpointer buf, gsize offset, const void *src, gsize n)
{
  memcpy ((guint8 *) buf + offset, src, n);
}

static void
cpu_buffer_read (LpBackend *be, gpointer buf, gsize offset, void *dst, gsize n)
{
  memcpy (dst, (const guint8 *) buf + offset, n);
}

static gboolean
cpu_supports_node (LpBackend *be, const LpCNode *node)
{
  return TRUE;
}

static gboolean
cpu_graph_compute (LpBackend *be, LpCNode *const *nodes, int n, GError **error)
{
  for (int i = 0; i < n; i++)
    lp_cop_info (nodes[i]->op)->cpu (nodes[i]);
  return TRUE;
}

static void
cpu_destroy (LpBackend *be)
{
  CpuBackend *cb = (CpuBackend *) be;
  g_queue_clear_full (&cb->kept, g_free);
  g_mutex_clear (&cb->lock);
  g_free (cb);
}

static const LpBackendOps cpu_ops = {
  .api_version = LP_BACKEND_API_VERSION,
  .name = "cpu",
  .supports_op = cpu_supports_op,
  .gemm = cpu_gemm,
  .syrk = cpu_syrk,
  .rmsnorm = cpu_rmsnorm,
  .rope = cpu_rope,
  .attention = cpu_attention,
  .swiglu = cpu_swiglu,
  .cholesky = cpu_cholesky,
  .gemm_w = cpu_gemm_w,
  .dequantize = cpu_dequantize,
  .tri_inverse = cpu_tri_inverse,
  .quantize_groups = cpu_quantize_groups,
  .gemm_i8 = cpu_gemm_i8,
  .gemm_grid = cpu_gemm_grid,
  .buffer_new = cpu_buffer_new,
  .buffer_free = cpu_buffer_free,
  .buffer_write = cpu_buffer_write,
  .buffer_read = cpu_buffer_read,
  .supports_node = cpu_supports_node,
  .graph_compute = cpu_graph_compute,
  .destroy = cpu_destroy,
};

gboolean
lp_backend_is_cpu (const LpBackend *be)
{
  return be->ops == &cpu_ops;
}

LpBackend *
lp_backend_cpu_new (void)
{
  /* LLMPRESS_THREADS sets OpenBLAS's threads too (where nothing chose them
   * yet), for programs that never call lp_threads_set. */
  if (g_getenv ("LLMPRESS_THREADS") != NULL)
    lp_cpu_blas_threads_follow (lp_threads ());
  CpuBackend *cb = g_new0 (CpuBackend, 1);
  g_mutex_init (&cb->lock);
  g_queue_init (&cb->kept);
  LpBackend *be = &cb->base;
  be->ops = &cpu_ops;
  be->ref_count = 1;
  be->device_name = g_strdup_printf ("cpu (OpenBLAS %s, %d threads)", openblas_get_corename (),
                                     openblas_get_num_threads ());
  be->numeric_class = g_strdup ("cpu-f32");
  return be;
}

static gint blas_chosen;

gboolean
lp_cpu_blas_threads_init (int n)
{
  g_return_val_if_fail (n > 0, FALSE);
  if (!g_atomic_int_compare_and_exchange (&blas_chosen, 0, 1))
    return FALSE;
  openblas_set_num_threads (MIN (n, lp_threads ()));
  return TRUE;
}

void
lp_cpu_blas_threads_follow (int n)
{
  if (!g_atomic_int_get (&blas_chosen))
    openblas_set_num_threads (n);
}

int
lp_cpu_blas_threads (void)
{
  return openblas_get_num_threads ();
}

/* Up to this model width, jobs of one sample or window each, spread over
 * the cores with OpenBLAS on one thread, beat each GEMM on every core: at
 * SmolLM2-135M's 576, GEMMs of 512 x 576 left OpenBLAS's other threads
 * spinning between them (bench-passes: GPTQ and SparseGPT, eval). */
#define PER_CORE_MAX_DIM 1024

gboolean
lp_cpu_blas_per_core_width (gint64 dim)
{
  return dim <= PER_CORE_MAX_DIM;
}

static gint blas_shared; /* lp_cpu_blas_threads_set_shared */

void
lp_cpu_blas_threads_set_shared (gboolean shared)
{
  g_atomic_int_set (&blas_shared, shared ? 1 : 0);
}

/* Whether someone chose OpenBLAS's count: this process (lp_cpu_blas_threads_init)
 * or its user, through the variables OpenBLAS reads when it starts. */
static gboolean
blas_count_explicit (void)
{
  return g_atomic_int_get (&blas_chosen) || g_getenv ("OPENBLAS_NUM_THREADS") != NULL
         || g_getenv ("GOTO_NUM_THREADS") != NULL || g_getenv ("OMP_NUM_THREADS") != NULL;
}

int
lp_cpu_blas_threads_push (int n)
{
  g_return_val_if_fail (n > 0, 0);
  int was = openblas_get_num_threads ();
  if (n >= was || blas_count_explicit () || g_atomic_int_get (&blas_shared))
    return 0;
  openblas_set_num_threads (n);
  return was;
}

void
lp_cpu_blas_threads_pop (int was)
{
  if (was > 0)
    openblas_set_num_threads (was);
}
