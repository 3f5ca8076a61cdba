/* llmpress — the compute graph's op table and kernels, inside libllmpress.
 *
 * Each op X has lp_cop_X_cpu (the CPU backend's kernel), lp_cop_X_ref (the
 * plain C definition) and, when differentiable, lp_cop_X_backward (records
 * the gradient nodes).  Forward kernels live in compute_forward.c, backward
 * ones in compute_backward.c; the table in compute_ops.c names them. */
#pragma once

#include <llmpress/compute.h>

void lp_cop_embed_cpu (const LpCNode *node);
void lp_cop_embed_ref (const LpCNode *node);
gboolean lp_cop_embed_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_matmul_cpu (const LpCNode *node);
void lp_cop_matmul_ref (const LpCNode *node);
gboolean lp_cop_matmul_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_matmul_grid_cpu (const LpCNode *node);
void lp_cop_matmul_grid_ref (const LpCNode *node);
gboolean lp_cop_matmul_grid_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_rmsnorm_cpu (const LpCNode *node);
void lp_cop_rmsnorm_ref (const LpCNode *node);
gboolean lp_cop_rmsnorm_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_rope_cpu (const LpCNode *node);
void lp_cop_rope_ref (const LpCNode *node);
gboolean lp_cop_rope_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_attention_cpu (const LpCNode *node);
void lp_cop_attention_ref (const LpCNode *node);
gboolean lp_cop_attention_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_swiglu_cpu (const LpCNode *node);
void lp_cop_swiglu_ref (const LpCNode *node);
gboolean lp_cop_swiglu_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_add_cpu (const LpCNode *node);
void lp_cop_add_ref (const LpCNode *node);
gboolean lp_cop_add_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_scale_cpu (const LpCNode *node);
void lp_cop_scale_ref (const LpCNode *node);
gboolean lp_cop_scale_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_set_rows_cpu (const LpCNode *node);
void lp_cop_set_rows_ref (const LpCNode *node);
gboolean lp_cop_set_rows_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_cross_entropy_cpu (const LpCNode *node);
void lp_cop_cross_entropy_ref (const LpCNode *node);
gboolean lp_cop_cross_entropy_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_kl_cpu (const LpCNode *node);
void lp_cop_kl_ref (const LpCNode *node);
gboolean lp_cop_kl_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_mse_cpu (const LpCNode *node);
void lp_cop_mse_ref (const LpCNode *node);
gboolean lp_cop_mse_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error);
void lp_cop_embed_back_cpu (const LpCNode *node);
void lp_cop_embed_back_ref (const LpCNode *node);
void lp_cop_matmul_back_x_cpu (const LpCNode *node);
void lp_cop_matmul_back_x_ref (const LpCNode *node);
void lp_cop_matmul_back_w_cpu (const LpCNode *node);
void lp_cop_matmul_back_w_ref (const LpCNode *node);
void lp_cop_rmsnorm_back_cpu (const LpCNode *node);
void lp_cop_rmsnorm_back_ref (const LpCNode *node);
void lp_cop_rmsnorm_back_w_cpu (const LpCNode *node);
void lp_cop_rmsnorm_back_w_ref (const LpCNode *node);
void lp_cop_rope_back_cpu (const LpCNode *node);
void lp_cop_rope_back_ref (const LpCNode *node);
void lp_cop_attention_back_cpu (const LpCNode *node);
void lp_cop_attention_back_ref (const LpCNode *node);
void lp_cop_swiglu_back_cpu (const LpCNode *node);
void lp_cop_swiglu_back_ref (const LpCNode *node);
void lp_cop_row_sum_cpu (const LpCNode *node);
void lp_cop_row_sum_ref (const LpCNode *node);
void lp_cop_cross_entropy_back_cpu (const LpCNode *node);
void lp_cop_cross_entropy_back_ref (const LpCNode *node);
void lp_cop_kl_back_cpu (const LpCNode *node);
void lp_cop_kl_back_ref (const LpCNode *node);
void lp_cop_mse_back_cpu (const LpCNode *node);
void lp_cop_mse_back_ref (const LpCNode *node);
void lp_cop_adamw_cpu (const LpCNode *node);
void lp_cop_adamw_ref (const LpCNode *node);
void lp_cop_sum_sq_cpu (const LpCNode *node);
void lp_cop_sum_sq_ref (const LpCNode *node);
void lp_cop_fake_quant_cpu (const LpCNode *node);
void lp_cop_fake_quant_ref (const LpCNode *node);
gboolean lp_cop_fake_quant_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                                     LpCTensor **dsrc, GError **error);
void lp_cop_fake_quant_back_cpu (const LpCNode *node);
void lp_cop_fake_quant_back_ref (const LpCNode *node);
void lp_cop_dequant_grid_cpu (const LpCNode *node);
void lp_cop_dequant_grid_ref (const LpCNode *node);
gboolean lp_cop_dequant_grid_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                                       LpCTensor **dsrc, GError **error);
void lp_cop_dequant_grid_back_cpu (const LpCNode *node);
void lp_cop_dequant_grid_back_ref (const LpCNode *node);
void lp_cop_kl_topk_cpu (const LpCNode *node);
void lp_cop_kl_topk_ref (const LpCNode *node);
gboolean lp_cop_kl_topk_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                                  LpCTensor **dsrc, GError **error);
void lp_cop_kl_topk_back_cpu (const LpCNode *node);
void lp_cop_kl_topk_back_ref (const LpCNode *node);

/* The CPU's matrix kernels, shared by the ops above and the CPU backend's
 * op-by-op entry points (cpu_backend.c), so both compute the same sums.
 * C[M,N] = A[M,K] W[N,K]^T + beta C, W stored as wtype (decoded a few rows
 * at a time); the same with W an integer grid; causal GQA attention with
 * k/v[T_kv, Hkv*hd] (backend.h's attention). */
void lp_cpu_gemm_w (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
                    int ldc);
void lp_cpu_gemm_grid (int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C,
                       int ldc);
void lp_cpu_attention (int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k, const float *v,
                       float *out);
/* C[M,N] = A[M,K] W[N,K]^T + beta C for M <= LP_GEMV_MAX_ROWS (gemv.c):
 * each row of W read once, as stored, and dotted with the M rows of A
 * (AVX2 where the CPU has it, over the worker threads); beta = 0 ignores C.
 * _ref: the plain C row kernels, one thread, the same sums' definition.
 * lp_cpu_gemv_supports: M and wtype (f32, f16, Q8_0, Q4_0, Q4_1; K a
 * multiple of their block) are ones it takes. */
#define LP_GEMV_MAX_ROWS 8
gboolean lp_cpu_gemv_supports (int M, int K, LpDType wtype);
void lp_cpu_gemv_w (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
                    int ldc);
void lp_cpu_gemv_w_ref (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta,
                        float *C, int ldc);
/* Matmul nodes recorded into g from now on multiply activations rounded
 * to 8 bits (compute.h's LP_COP_MATMUL i[0]; for the CPU backend). */
void lp_cgraph_set_int8_matmul (LpCGraph *g, gboolean on);
/* Whether this x86 CPU runs the AVX2 + FMA kernels (asked once). */
gboolean lp_cpu_have_avx2 (void);
/* Whether this CPU runs AVX-512F (asked once; FALSE off x86-64 GCC builds). */
gboolean lp_cpu_have_avx512 (void);
/* Column j of C[M, ldc] = out[M] + beta C (beta = 0: C not read); inline:
 * the row kernels store every output through it. */
static inline void
lp_cpu_gemv_store (float *C, int ldc, int j, int M, const float *out, float beta)
{
  for (int m = 0; m < M; m++)
    {
      float *c = &C[(gsize) m * ldc + j];
      *c = beta == 0.0f ? out[m] : out[m] + beta * *c;
    }
}
/* One block of 32 activations rounded as ggml's quantize_row_q8_0 /
 * quantize_row_q8_1 do (gemv_q8.c): q = round (x 127 / amax) half to even,
 * d = f16 (amax / 127), s = f16 (d sum (q)) with d in f32 (Q8_1's stored
 * sum, which a Q4_1 weight's minimum multiplies), isum = sum (q). */
typedef struct {
  gint8 q[32];
  float d, s;
  int isum;
} LpQ8Block;
void lp_q8_block_quantize (const float *x, LpQ8Block *out);
/* C[M,N] = q8(A)[M,K] W[N,K]^T + beta C (gemv_q8.c): A's rows rounded to
 * LpQ8Block, W (Q8_0, Q4_0, Q4_1; K a multiple of 32) read as stored,
 * integer dot products per block as llama.cpp's CPU backend computes them;
 * beta = 0 ignores C.  Any M (LP_GEMV_MAX_ROWS rows of A a pass over W),
 * AVX2 over the worker threads; _ref: the plain C row kernel, one thread. */
gboolean lp_cpu_gemm_q8_supports (int K, LpDType wtype);
void lp_cpu_gemm_q8 (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
                     int ldc);
void lp_cpu_gemm_q8_ref (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta,
                         float *C, int ldc);
/* fn (data, i0, i1) on rows [i0, i1). */
typedef void (*LpRangeFn) (void *data, int i0, int i1);
/* rows (data, j0, j1) over the N rows of a weight [N, K]: split over the
 * threads (lp_parallel_for) in shares worth a hand-off, or in the caller
 * (serial). */
void lp_cpu_gemv_split (int N, int K, LpRangeFn rows, void *data, gboolean serial);
/* Row t of one head's attention probabilities, in place: the scaled scores
 * row[0 .. last] replaced by their softmax (max-subtracted), row[last + 1 ..
 * T_kv - 1] (the causal mask) by 0.  Attention forward and backward. */
void lp_cpu_softmax_causal_row (float *row, int last, int T_kv);
/* The grid operands of a matmul_grid or matmul_back_x node (src1 codes,
 * src2 scales, src3 zeros, src4 g_idx; i[0] bits, i[1] group size) seen as
 * an LpIntGrid borrowing their memory. */
LpIntGrid lp_cop_node_grid (const LpCNode *node);
/* log-softmax of one row of logits[V] into out[V], in double. */
void lp_log_softmax (const float *logits, int V, double *out);
/* log sum exp of logits[V], in double: what lp_log_softmax subtracts. */
double lp_log_sum_exp (const float *logits, int V);

/* Bytes of freed buffers the CPU backend keeps for reuse (cpu_backend.c). */
gsize lp_cpu_pool_bytes (LpBackend *be);

/* exp over rows (exp_rows.c): the same bits from every kernel. */
typedef enum { LP_EXP_PLAIN, LP_EXP_AVX2, LP_EXP_AVX512 } LpExpKernel;
gboolean lp_exp_kernel_available (LpExpKernel k);
/* The fastest kernel this CPU runs. */
LpExpKernel lp_exp_kernel_best (void);
/* e^x within 2 ulp (exp_rows.c says how): what each kernel computes. */
float lp_exp_ref (float x);
/* x[i] = e^(x[i] - shift) for i < n; returns their float sum. */
float lp_exp_store_sum (LpExpKernel k, float *x, int n, float shift);
/* The sum of e^(x[i] - shift), i < n, each term a float, summed in double. */
double lp_exp_sum (LpExpKernel k, const float *x, int n, float shift);
/* max of x[0 .. n - 1] (-inf for n = 0). */
float lp_exp_row_max (LpExpKernel k, const float *x, int n);
/* out[i] = silu (gate[i]) up[i], as gate / (1 + e^-gate) * up. */
void lp_exp_silu_mul (LpExpKernel k, int n, const float *gate, const float *up, float *out);
/* lp_log_sum_exp with the exp of lp_exp_ref (to a few float ulp of the
 * terms, summed in double): the default forward's eval. */
double lp_cpu_log_sum_exp (const float *logits, int V);

/* The operands of fake_quant, fake_quant_back, dequant_grid and
 * dequant_grid_back (from src[first]: values or codes [N,K], scales f32
 * [N,G], zeros [N,G], g_idx [K]) as flat arrays. */
typedef struct {
  gint64 N, K, G;
  int maxq;
  const void *w;       /* latent f32 or codes u8 [N,K] */
  const float *scales; /* [N,G] */
  const guint8 *zeros; /* [N,G] */
  const gint32 *g_idx; /* [K] */
} LpCGridArgs;

static inline LpCGridArgs
lp_cgrid_args (const LpCNode *node, int first)
{
  const LpCTensor *w = node->src[first], *s = node->src[first + 1];
  LpCGridArgs a = { w->shape[0], w->shape[w->n_dims - 1], s->shape[s->n_dims - 1], (1 << node->i[0]) - 1,
                    w->buf, s->buf, node->src[first + 2]->buf, node->src[first + 3]->buf };
  return a;
}
/* kl_topk's rest bucket: mark[v] = value for each of a row's k teacher ids
 * that is a token (0 <= id < V; the others name no token and are left out
 * of every bucket), and, of a student's log q[V] (double), the log of the
 * mass of the tokens not marked (-inf when every token is). */
void lp_topk_mark (const gint32 *ids, gint64 k, gint64 V, guint8 *mark, guint8 value);
double lp_topk_log_rest (const double *log_q, const guint8 *mark, gint64 V);

/* A tensor's innermost dimension, and the number of rows above it. */
static inline gint64
lp_ctensor_cols (const LpCTensor *t)
{
  return t->shape[t->n_dims - 1];
}

static inline gint64
lp_ctensor_rows (const LpCTensor *t)
{
  gint64 n = 1;
  for (int d = 0; d < t->n_dims - 1; d++)
    n *= t->shape[d];
  return n;
}
