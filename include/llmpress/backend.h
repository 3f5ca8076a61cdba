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

G_BEGIN_DECLS

#define LP_BACKEND_API_VERSION 1

typedef enum {
  LP_OP_GEMM,        /* C = alpha * A * op(B) + beta * C */
  LP_OP_SYRK,        /* H += X^T X (Hessian accumulation) */
  LP_OP_RMSNORM,
  LP_OP_ROPE,
  LP_OP_ATTENTION,   /* causal GQA attention with softmax */
  LP_OP_SWIGLU,
  LP_OP_CHOLESKY,    /* in-place lower Cholesky factor of an SPD matrix */
  LP_OP_COUNT,
} LpOp;

typedef struct _LpBackend LpBackend;

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

/* The CPU backend (OpenBLAS/LAPACKE); a new reference each call. */
LpBackend *lp_backend_cpu_new (void);
/* Threads OpenBLAS may use for one call; returns the previous count.  Work
 * split into many small independent jobs (evaluation windows of a small
 * model) runs faster one job per core with single-threaded BLAS than with
 * every tiny GEMM split across cores.  Process-wide. */
int lp_cpu_blas_set_threads (int n);

/* By name: "cpu", "auto" (first GPU if any, else CPU), "vulkan[:N]". */
LpBackend *lp_backend_new (const char *name, GError **error);
LpBackend *lp_backend_ref (LpBackend *be);
void lp_backend_unref (LpBackend *be);

/* The backend that runs `op`: be itself if it supports it, else its fallback. */
LpBackend *lp_backend_for_op (LpBackend *be, LpOp op);

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

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpBackend, lp_backend_unref)

G_END_DECLS
