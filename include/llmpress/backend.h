/* llmpress — compute backends.
 *
 * A backend executes the heavy kernels of the forward pass and of the
 * compression passes.  The CPU backend (OpenBLAS + LAPACKE) is always present
 * and supports every op; other backends (Vulkan) answer supports_op() and the
 * caller falls back to the CPU for anything they decline.
 *
 * All ops take and return host memory (row-major float arrays); a device
 * backend moves data as it needs.  Dimension names: T tokens, D model dim,
 * F ffn dim, H heads, Hkv key/value heads, hd head dim. */
#pragma once

#include <glib.h>
#include <llmpress/arch.h>
#include <llmpress/dtype.h>
#include <llmpress/tensor.h>

G_BEGIN_DECLS

#define LP_BACKEND_API_VERSION 6

typedef enum {
  LP_OP_GEMM,        /* C = alpha * A * op(B) + beta * C */
  LP_OP_SYRK,        /* H += X^T X (Hessian accumulation) */
  LP_OP_RMSNORM,
  LP_OP_ROPE,
  LP_OP_ATTENTION,   /* causal GQA attention with softmax */
  LP_OP_SWIGLU,
  LP_OP_CHOLESKY,    /* in-place lower Cholesky factor of an SPD matrix */
  LP_OP_GEMM_W,      /* C = A * W^T + beta * C, W in any type lp_dtype_to_f32 reads */
  LP_OP_DEQUANTIZE,  /* a block-quantized (or 16-bit) row to f32 */
  LP_OP_TRI_INVERSE, /* in-place inverse of a lower triangular matrix */
  LP_OP_QUANTIZE_GROUPS, /* group-wise round-to-nearest onto the plain integer grid */
  LP_OP_GEMM_I8,     /* C = diag(sa) A8 B8^T diag(sb) + beta * C, exact int32 sums */
  LP_OP_GEMM_GRID,   /* C = A * W^T + beta * C, W a plain integer grid (LpIntGrid) */
  LP_OP_COUNT,
} LpOp;

typedef struct _LpBackend LpBackend;
typedef struct _LpCNode LpCNode; /* compute.h */

/* How quantize_groups rounds: groups of `group` consecutive columns of a
 * row (the last one shorter when group does not divide the row), `bits`
 * bits (2..8), symmetric or with a zero point, and optionally GPTQ's search
 * over shrunk ranges. */
typedef struct {
  int bits;
  int group;
  gboolean symmetric;
  gboolean clip_search;
} LpGroupQuant;

/* What a backend implements.  Every function pointer is required unless
 * noted; ops a backend cannot run are declined by supports_op(). */
typedef struct {
  guint api_version;        /* LP_BACKEND_API_VERSION */
  const char *name;         /* "cpu", "vulkan" */
  gboolean (*supports_op) (LpBackend *be, LpOp op);

  /* C[M,N] = alpha * A[M,K] * (trans_b ? B[N,K]^T : B[K,N]) + beta * C. */
  void (*gemm) (LpBackend *be, gboolean trans_b, int M, int N, int K, float alpha, const float *A,
                int lda, const float *B, int ldb, float beta, float *C, int ldc);
  /* H[n,n] (lower and upper both written) += X[T,n]^T X[T,n]. */
  void (*syrk) (LpBackend *be, int T, int n, const float *X, int ldx, float *H);
  /* y[T,D] = x / sqrt(mean(x^2) + eps) * w. x and y may alias. */
  void (*rmsnorm) (LpBackend *be, int T, int D, const float *x, const float *w, float eps, float *y);
  /* Rotate q/k rows in place: x[T, n_heads*hd], positions pos0..pos0+T-1,
   * inv_freq[hd/2] the per-pair angular frequencies. */
  void (*rope) (LpBackend *be, LpRopeStyle style, int T, int n_heads, int hd, int pos0,
                const float *inv_freq, float *x);
  /* out[T, H*hd] = softmax(q k^T / sqrt(hd), causal) v, per head, with
   * k/v[T_kv, Hkv*hd] where the query at row t has absolute position
   * T_kv - T + t (a KV cache of T_kv - T earlier positions precedes). */
  void (*attention) (LpBackend *be, int T, int T_kv, int H, int Hkv, int hd, const float *q,
                     const float *k, const float *v, float *out);
  /* out[T,F] = silu(gate) * up. out may alias gate. */
  void (*swiglu) (LpBackend *be, int n, const float *gate, const float *up, float *out);
  /* Lower Cholesky factor of A[n,n] (row-major) in place; FALSE when not SPD. */
  gboolean (*cholesky) (LpBackend *be, int n, float *A, int lda);
  /* C[M,N] = A[M,K] * W[N,K]^T + beta * C, W stored as `wtype` (row-major,
   * rows of K elements, K a multiple of the type's block size).  The weight
   * product of the forward pass, without materializing W in f32.  A device
   * that cannot read `wtype` hands the call to its fallback (Vulkan decodes
   * f16, bf16 and every block type itself; f64 and the integers go to the
   * CPU). */
  void (*gemm_w) (LpBackend *be, int M, int N, int K, const float *A, int lda, LpDType wtype,
                  const void *W, float beta, float *C, int ldc);
  /* dst[n] = src (n elements of `type`, n a multiple of its block size);
   * FALSE when the type cannot be read. */
  gboolean (*dequantize) (LpBackend *be, LpDType type, const void *src, gsize n, float *dst);
  /* L[n,n] (row-major, lower triangular, the upper part zero) replaced by its
   * inverse, also lower triangular; FALSE when a diagonal entry is zero. */
  gboolean (*tri_inverse) (LpBackend *be, int n, float *L, int lda);
  /* Group-wise RTN onto the integer grid (LpIntGrid's layout, tensor.h):
   * see lp_ref_quantize_groups, which defines it. */
  void (*quantize_groups) (LpBackend *be, int rows, int cols, const float *W, int ldw, const float *imp,
                           const LpGroupQuant *q, guint8 *codes, guint16 *scales, guint8 *zeros);
  /* C[M,N] = sa[i] * sb[j] * sum_k A[i,k] B[j,k] + beta * C with A[M,K] and
   * B[N,K] int8 rows (strides lda, ldb) and per-row scales sa[M], sb[N]: the
   * product of int8 weights with per-channel scales and activations
   * quantized per token (W8A8).  The sums are exact (int32; K < 2^17). */
  void (*gemm_i8) (LpBackend *be, int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B,
                   int ldb, const float *sb, float beta, float *C, int ldc);
  /* C[M,N] = A[M,K] * W^T + beta * C with W the plain integer grid of N rows
   * and K columns (W->rows == N, W->cols == K), its weights as
   * lp_int_grid_dequantize defines them: gemm_w for GPTQ / compressed-tensors
   * checkpoints, so that a device receives the codes (a byte a weight, the
   * group scales and zeros, g_idx) rather than 4 bytes a weight in f32.
   * Vulkan decodes the grid itself; a shape it cannot tile goes to the CPU. */
  void (*gemm_grid) (LpBackend *be, int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta,
                     float *C, int ldc);

  /* ---- backend-owned memory and whole graphs (compute.h) ---- */
  /* A buffer of `bytes` in the backend's memory (uninitialised); NULL with
   * an error when it cannot be had. */
  gpointer (*buffer_new) (LpBackend *be, gsize bytes, GError **error);
  void (*buffer_free) (LpBackend *be, gpointer buf);
  void (*buffer_write) (LpBackend *be, gpointer buf, gsize offset, const void *src, gsize n);
  void (*buffer_read) (LpBackend *be, gpointer buf, gsize offset, void *dst, gsize n);
  /* Whether this backend runs the node (op, types and shapes). */
  gboolean (*supports_node) (LpBackend *be, const LpCNode *node);
  /* Run nodes[0..n-1] in order, every operand in this backend's buffers and
   * every node supported: on a device one submission and one wait. */
  gboolean (*graph_compute) (LpBackend *be, LpCNode *const *nodes, int n, GError **error);

  void (*destroy) (LpBackend *be);
} LpBackendOps;

struct _LpBackend {
  const LpBackendOps *ops;
  char *device_name;     /* "cpu (OpenBLAS, 2 threads)", "NVIDIA H100 ..." */
  char *numeric_class;   /* results are bit-identical within one class: cache keys use it */
  LpBackend *fallback;   /* the CPU backend, for ops this one declines (NULL for the CPU) */
  gint ref_count;
  gpointer priv;
};

/* A loadable backend module (backends/<name>/, installed in
 * $(pkglibdir)/backends) exports one function, LP_BACKEND_MODULE_ENTRY,
 * returning this description.  The loader checks api_version and
 * struct_size before calling anything else. */
typedef enum {
  LP_DEVICE_OTHER,
  LP_DEVICE_INTEGRATED_GPU,
  LP_DEVICE_DISCRETE_GPU,
  LP_DEVICE_VIRTUAL_GPU,
  LP_DEVICE_CPU,
} LpDeviceType;

/* What a module sees of one device, usable or not. */
typedef struct {
  int index;                 /* the N of "vulkan:N" */
  char *name;                /* "NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 15.0.6, 256 bits)" */
  LpDeviceType type;
  guint32 vendor_id, device_id;
  char *driver;              /* "llvmpipe Mesa 22.3.6 (LLVM 15.0.6)" */
  char *api_version;         /* "1.3.230" */
  guint64 device_local_bytes;/* largest device-local heap */
  guint64 host_visible_bytes;/* largest host-visible heap */
  guint64 max_binding_bytes; /* one storage-buffer binding (maxStorageBufferRange) */
  guint subgroup_size;
  gboolean storage16, float16, int8, int_dot, coopmat;
  gboolean usable;
  char *skip_reason;         /* why not usable (NULL when usable) */
} LpDeviceInfo;

void lp_device_info_free (LpDeviceInfo *info);

#define LP_BACKEND_MODULE_ENTRY "lp_backend_module_init"

typedef struct {
  guint api_version;         /* LP_BACKEND_API_VERSION */
  gsize struct_size;         /* sizeof (LpBackendModule) */
  const char *name;          /* "vulkan" */
  /* Every device, with the reason each unusable one is skipped (LpDeviceInfo*,
   * freed with the array); NULL with an error when the API itself is absent
   * (no loader, no driver). */
  GPtrArray *(*list_devices) (GError **error);
  /* Open device `index` of list_devices(); the caller sets the fallback. */
  LpBackend *(*open) (int index, GError **error);
} LpBackendModule;

typedef const LpBackendModule *(*LpBackendModuleInit) (void);

/* The module of that name (from LLMPRESS_BACKEND_PATH, then the install
 * directory), loaded once and kept; NULL with the reason when absent. */
const LpBackendModule *lp_backend_module_get (const char *name, GError **error);
/* The devices a module sees (see LpBackendModule.list_devices). */
GPtrArray *lp_backend_list_devices (const char *module, GError **error);

/* The CPU backend (OpenBLAS/LAPACKE); a new reference each call. */
LpBackend *lp_backend_cpu_new (void);
/* OpenBLAS's thread count is process-wide (OpenBLAS 0.3 has no per-thread
 * setting), so it is chosen once per process and not changed while work
 * runs: two nodes of the parallel scheduler would race on it (the one
 * exception: lp_calibration_run of a small model switches it to one thread
 * for its duration where nothing chose it and nothing else runs BLAS).  The first
 * lp_cpu_blas_threads_init (n > 0) before any BLAS call sets it and returns
 * TRUE (capped to lp_threads (), threads.h); later calls change nothing and
 * return FALSE.  Without one it is lp_threads_set's count (the CLI's -t N,
 * LLMPRESS_THREADS) when that was called, else OpenBLAS's own choice
 * (OPENBLAS_NUM_THREADS, else every core).  A program
 * that mostly runs many small independent jobs (evaluation windows of a
 * small model: lp_eval_blas_threads) asks for 1 and lets the library spread
 * the jobs over the cores instead. */
gboolean lp_cpu_blas_threads_init (int n);
/* The count in force. */
int lp_cpu_blas_threads (void);

/* By name: "cpu", "auto" (first GPU if any, else CPU: a device that is
 * itself a CPU, such as lavapipe, is never chosen), "vulkan" (the first
 * usable Vulkan device, CPU devices included), "vulkan:N".  NULL: the
 * LLMPRESS_DEVICE environment variable, else "cpu".  Only an explicit
 * Vulkan request fails when no device is there; "auto" falls back quietly. */
LpBackend *lp_backend_new (const char *name, GError **error);
LpBackend *lp_backend_ref (LpBackend *be);
void lp_backend_unref (LpBackend *be);

/* The backend that runs `op`: be itself if it supports it, else its fallback. */
LpBackend *lp_backend_for_op (LpBackend *be, LpOp op);
/* "gemm", "syrk", ... */
const char *lp_op_name (LpOp op);
/* One line for --explain: the device, and the ops that fall back to the CPU
 * ("llvmpipe (...) [vulkan:0]; on the CPU: cholesky"). */
char *lp_backend_describe (LpBackend *be);

/* Dispatching wrappers (fall back per op). */
void lp_gemm (LpBackend *be, gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void lp_syrk (LpBackend *be, int T, int n, const float *X, int ldx, float *H);
void lp_rmsnorm (LpBackend *be, int T, int D, const float *x, const float *w, float eps, float *y);
void lp_rope (LpBackend *be, LpRopeStyle style, int T, int n_heads, int hd, int pos0,
              const float *inv_freq, float *x);
void lp_attention (LpBackend *be, int T, int T_kv, int H, int Hkv, int hd, const float *q,
                   const float *k, const float *v, float *out);
void lp_swiglu (LpBackend *be, int n, const float *gate, const float *up, float *out);
gboolean lp_cholesky (LpBackend *be, int n, float *A, int lda);
void lp_gemm_w (LpBackend *be, int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W,
                float beta, float *C, int ldc);
gboolean lp_dequantize (LpBackend *be, LpDType type, const void *src, gsize n, float *dst);
gboolean lp_tri_inverse (LpBackend *be, int n, float *L, int lda);
void lp_quantize_groups (LpBackend *be, int rows, int cols, const float *W, int ldw, const float *imp,
                         const LpGroupQuant *q, guint8 *codes, guint16 *scales, guint8 *zeros);
void lp_gemm_i8 (LpBackend *be, int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B,
                 int ldb, const float *sb, float beta, float *C, int ldc);
void lp_gemm_grid (LpBackend *be, int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta,
                   float *C, int ldc);

/* Plain C reference kernels: the definition of each op, used by tests to
 * check every optimised or device implementation. */
void lp_ref_gemm (gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
void lp_ref_syrk (int T, int n, const float *X, int ldx, float *H);
void lp_ref_rmsnorm (int T, int D, const float *x, const float *w, float eps, float *y);
void lp_ref_rope (LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, float *x);
void lp_ref_attention (int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k,
                       const float *v, float *out);
void lp_ref_swiglu (int n, const float *gate, const float *up, float *out);
gboolean lp_ref_cholesky (int n, float *A, int lda);
gboolean lp_ref_tri_inverse (int n, float *L, int lda);
/* W[rows, cols] (stride ldw) in groups of q->group columns per row,
 * G = ceil (cols / group) groups a row.  A group's range [lo, hi] is
 * [min (0, w), max (0, w)] (symmetric: [-a, a], a = max |w|; all zero:
 * [-1, 1]); scale = (hi - lo) / (2^bits - 1) rounded to f16 (the smallest
 * normal f16 if that is 0); zero = round (-lo / scale) clamped to
 * 1..2^bits-1 (symmetric: 2^(bits-1)).  With clip_search the ranges
 * p [lo, hi], p = 0.99, 0.98 .. 0.20, are tried too and the first of least
 * sum_c imp[c] (dq(w) - w)^2 kept (imp[cols] per column, NULL for 1).
 * code = clamp (round (w / scale) + zero, 0, 2^bits - 1), dq = scale (code - zero).
 * Writes codes[rows * cols], scales[rows * G] (f16 bits), zeros[rows * G]. */
void lp_ref_quantize_groups (int rows, int cols, const float *W, int ldw, const float *imp, const LpGroupQuant *q,
                             guint8 *codes, guint16 *scales, guint8 *zeros);
void lp_ref_gemm_i8 (int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B, int ldb,
                     const float *sb, float beta, float *C, int ldc);
/* W dequantized a row at a time (lp_dtype_to_f32), then lp_ref_gemm. */
void lp_ref_gemm_w (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta,
                    float *C, int ldc);
/* W's weights materialized whole (lp_int_grid_dequantize), then lp_ref_gemm. */
void lp_ref_gemm_grid (int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C,
                       int ldc);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpBackend, lp_backend_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpDeviceInfo, lp_device_info_free)

G_END_DECLS
