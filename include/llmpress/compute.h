/* llmpress — the compute graph: ops over backend-owned tensors, forward and
 * backward side by side.
 *
 * A computation (one transformer block, a whole forward pass, a training
 * step) is recorded as a list of nodes over LpCTensors and executed by a
 * backend as a whole: the CPU runs each node's kernel in order; a device
 * records every node into one command buffer (barriers between dependent
 * dispatches), submits once and waits once.  A node the backend does not
 * support runs on the CPU (its operands are copied across for that node);
 * lp_cgraph_describe says which.
 *
 * Tensors live in backend memory from lp_ctensor_new to lp_ctensor_free;
 * host memory is touched only by lp_ctensor_write / lp_ctensor_read (and
 * lp_ctensor_host for a CPU tensor).  Weights are tensors like any other:
 * uploaded once and kept by whoever holds the handle.
 *
 * Every op is defined by its plain C reference (lp_ref_*, compute-ref.h
 * in model/), has a CPU kernel, and, for differentiable ops, backward ops
 * recorded by lp_cgraph_backward.  Shapes are row-major, outermost first:
 * T tokens, D model dim, F ffn dim, V vocab, H heads, Hkv key/value heads,
 * hd head dim, N output rows of a weight, K its input columns. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>

G_BEGIN_DECLS

typedef struct _LpCTensor LpCTensor;
typedef struct _LpCNode LpCNode;
typedef struct _LpCGraph LpCGraph;

typedef enum {
  /* ---- forward ---- */
  LP_COP_EMBED,         /* dst[T,D] = src0[ids[t], :]; src0 table [V,D] (f32 or any type lp_dtype_to_f32 reads), src1 ids i32 [T] */
  LP_COP_MATMUL,        /* dst[T,N] = src0[T,K] src1[N,K]^T (+ src2[T,N] when given); src1 f32, f16, bf16 or a block type;
                         * i[0] 1: src0 rounded to 8 bits a block first, as llama.cpp's CPU backend does, where src1 is
                         * Q8_0, Q4_0 or Q4_1 (integer dot products; the CPU's kernels only) */
  LP_COP_MATMUL_GRID,   /* the same, W an integer grid: src1 codes u8 [N,K] as i8 bits, src2 scales f16 bits as i16 [N,G],
                         * src3 zeros u8 [N,G] as i8 bits, src4 g_idx i32 [K], src5 acc (optional); i[0] bits, i[1] group size */
  LP_COP_RMSNORM,       /* dst[T,D] = src0 / sqrt (mean (src0^2) + f[0]) * src1[D] */
  LP_COP_ROPE,          /* dst[T, n*hd] = src0 rotated; src1 inv_freq [hd/2]; i[0] LpRopeStyle, i[1] heads n, i[2] hd, i[3] pos0 */
  LP_COP_ATTENTION,     /* dst[T,H*hd] = softmax (q k^T / sqrt (hd), causal) v; src0 q [T,H*hd], src1 k, src2 v [T_kv,Hkv*hd];
                         * i[0] H, i[1] Hkv, i[2] hd; query row t sits at position T_kv - T + t */
  LP_COP_SWIGLU,        /* dst = silu (src0) * src1, element-wise */
  LP_COP_ADD,           /* dst = src0 + src1; src1 has src0's shape, or one row (a bias, broadcast over rows) */
  LP_COP_SCALE,         /* dst = f[0] * src0 */
  LP_COP_SET_ROWS,      /* src1 rows i[0] .. i[0] + T - 1 = src0[T, n]; dst is src1 (a KV cache written in place) */
  LP_COP_CROSS_ENTROPY, /* dst[T] = -log softmax (src0[t])[src1[t]]; src0 logits [T,V], src1 targets i32 [T] (< 0: 0, not scored) */
  LP_COP_KL,            /* dst[T] = f[0]^2 KL (softmax (src1[t] / f[0]) || softmax (src0[t] / f[0])); src0 student, src1 teacher [T,V] */
  LP_COP_MSE,           /* dst[T] = mean over the row of (src0 - src1)^2 */
  /* ---- backward (recorded by lp_cgraph_backward; dy is the gradient of the forward node's dst) ---- */
  LP_COP_EMBED_BACK,        /* dst[V,D] = scatter-add of dy rows at ids; src0 dy, src1 ids, i[0] V */
  LP_COP_MATMUL_BACK_X,     /* dst[T,K] = dy[T,N] W[N,K]; src0 dy, src1 W (as LP_COP_MATMUL reads it, or the grid's srcs) */
  LP_COP_MATMUL_BACK_W,     /* dst[N,K] = dy[T,N]^T x[T,K]; src0 dy, src1 x */
  LP_COP_RMSNORM_BACK,      /* dst[T,D] = dx; src0 dy, src1 x, src2 w; f[0] eps */
  LP_COP_RMSNORM_BACK_W,    /* dst[D] = sum_t dy * x / rms; src0 dy, src1 x; f[0] eps */
  LP_COP_ROPE_BACK,         /* dst = dy rotated back (the transpose of the rotation); params as LP_COP_ROPE */
  LP_COP_ATTENTION_BACK,    /* dst dq, dst1 dk, dst2 dv; src0 dy, src1 q, src2 k, src3 v; params as LP_COP_ATTENTION */
  LP_COP_SWIGLU_BACK,       /* dst d(gate), dst1 d(up); src0 dy, src1 gate, src2 up */
  LP_COP_ROW_SUM,           /* dst[1,n] = sum over rows of src0[T,n] (a broadcast bias's gradient) */
  LP_COP_CROSS_ENTROPY_BACK,/* dst[T,V] = dy[t] (softmax (logits[t]) - onehot (target[t])); src0 dy [T], src1 logits, src2 targets */
  LP_COP_KL_BACK,           /* dst[T,V] = d/d(student); src0 dy [T], src1 student, src2 teacher; f[0] temperature */
  LP_COP_MSE_BACK,          /* dst[T,n] = dy[t] * 2 (src0 - src1) / n; src0 dy [T], src1 a, src2 b (gradient w.r.t. a) */
  /* ---- the optimizer (train.h; not differentiated) ---- */
  LP_COP_ADAMW,             /* one AdamW step in place: src0 param, src1 grad, src2 m, src3 v (f32, one shape), src4
                             * keep-mask (f32 0/1, optional: where 0 nothing moves); dst0 = src0, dst1 = src2, dst2 =
                             * src3.  g = f[5] grad; m = f[1] m + (1 - f[1]) g; v = f[2] v + (1 - f[2]) g^2;
                             * param -= f[0] (m / (1 - f[1]^i[0]) / (sqrt (v / (1 - f[2]^i[0])) + f[3]) + f[4] param)
                             * (f: lr, beta1, beta2, eps, weight decay (decoupled), grad scale; i[0] step >= 1) */
  LP_COP_SUM_SQ,            /* dst[1] = sum of src0's squares (+ src1[0] when given: a running total) */
  /* ---- training an integer-grid weight (model/form_grid.c), appended after the rest ---- */
  LP_COP_FAKE_QUANT,        /* dst[N,K] = (clamp (round (src0 / s) + z, 0, 2^i[0] - 1) - z) s with s = src1[n, g_idx[k]],
                             * z = src2[n, g_idx[k]] (lp_int_quantize's rounding): src0 latent f32 [N,K], src1 scales f32
                             * [N,G], src2 zeros u8 as i8 [N,G], src3 g_idx i32 [K]; i[0] bits, i[1] group size when
                             * g_idx[k] = k / group for every k (else 0).  Differentiated w.r.t. the latent only
                             * (straight-through: fake_quant_back) */
  LP_COP_FAKE_QUANT_BACK,   /* dst[N,K] = dy where round (src1 / s) + z lies in [0, 2^i[0] - 1], else 0 (the clipped
                             * straight-through estimator); src0 dy, src1 .. src4 as fake_quant's src0 .. src3 */
  LP_COP_DEQUANT_GRID,      /* dst[N,K] = (src0 - z) s: src0 codes u8 as i8 [N,K], src1 scales f32 [N,G], src2 zeros,
                             * src3 g_idx, i[] as fake_quant's.  Differentiated w.r.t. the scales (dequant_grid_back) */
  LP_COP_DEQUANT_GRID_BACK, /* dst[N,G] = sum over the columns k of group g of dy[n,k] (code[n,k] - z[n,g]); src0 dy
                             * [N,K], src1 .. src4 as dequant_grid's src0 .. src3 (the scales unread but for G) */
  /* ---- appended for distillation from an offline teacher (its top-k, LpLogits in logits.h) ---- */
  LP_COP_KL_TOPK,       /* dst[T] = f[0]^2 sum over the k + 1 buckets b of p_b (log p_b - log q_b); src0 student logits
                         * [T,V]; the teacher: src1 ids i32 [T,k] (distinct, < V), src2 their log p [T,k], src3 log p of
                         * the rest bucket [T] (every other token together); q = softmax (src0[t] / f[0]), q_rest = its
                         * mass off the row's ids; a bucket with p = 0 adds 0 */
  LP_COP_KL_TOPK_BACK,  /* dst[T,V] = d/d(student) of kl_topk times dy; src0 dy [T], src1 student, src2 ids, src3 log p,
                         * src4 log p rest; f[0] temperature */
  LP_COP_COUNT,
} LpCOp;

#define LP_CNODE_MAX_SRC 6
#define LP_CNODE_MAX_DST 3

/* A tensor of the compute graph.  dtype: LP_DTYPE_F32 for activations and
 * gradients, LP_DTYPE_I32 for token ids and g_idx, a weight's stored type
 * (f16, bf16, a block type) for a weight read as stored, LP_DTYPE_I8 /
 * LP_DTYPE_I16 for a grid's bytes and f16 scales. */
struct _LpCTensor {
  /*< public, read-only >*/
  LpDType dtype;
  int n_dims;
  gint64 shape[LP_MAX_DIMS]; /* outermost first */
  gsize n_bytes;
  LpBackend *be;             /* borrowed: the graph or owner keeps the backend alive */
  gpointer buf;              /* the backend's handle (for the CPU: the host memory) */
  char *name;                /* for messages and --explain; may be NULL */
  /*< private >*/
  gboolean trainable;        /* lp_cgraph_backward computes its gradient */
};

struct _LpCNode {
  LpCOp op;
  int n_src, n_dst;
  LpCTensor *src[LP_CNODE_MAX_SRC]; /* NULL for an absent optional operand */
  LpCTensor *dst[LP_CNODE_MAX_DST];
  gint64 i[8];                      /* integer parameters, as each op documents */
  float f[8];                       /* float parameters */
};

/* One op's description: the table every backend and lp_cgraph_backward read. */
typedef struct {
  const char *name;     /* "matmul", "rmsnorm_back", ... */
  int n_src, n_dst;     /* operands it takes (optional ones included) and results */
  /* The CPU kernel (the backend that supports every op). */
  void (*cpu) (const LpCNode *node);
  /* The plain C reference: the op's definition (tests compare every kernel with it). */
  void (*ref) (const LpCNode *node);
  /* Record in g the gradients of the node's operands: dsrc[i] for each
   * operand i with need[i], given dy[j], the gradients of its results
   * (NULL: zero).  NULL for ops that are not differentiated (the backward
   * ops themselves). */
  gboolean (*backward) (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                        LpCTensor **dsrc, GError **error);
} LpCOpInfo;

const LpCOpInfo *lp_cop_info (LpCOp op);

/* Tensors: allocated on `be` (uninitialised), written and read whole or by
 * byte ranges.  NULL with an error when the backend cannot allocate. */
LpCTensor *lp_ctensor_new (LpBackend *be, LpDType dtype, int n_dims, const gint64 *shape, const char *name,
                           GError **error);
void lp_ctensor_free (LpCTensor *t);
void lp_ctensor_write (LpCTensor *t, gsize offset, const void *src, gsize n);
void lp_ctensor_read (const LpCTensor *t, gsize offset, void *dst, gsize n);
/* The host memory of a tensor on the CPU backend (NULL on a device). */
void *lp_ctensor_host (const LpCTensor *t);
gint64 lp_ctensor_n_elements (const LpCTensor *t);
/* A new tensor on `be` holding the values of a model tensor as stored. */
LpCTensor *lp_ctensor_from_tensor (LpBackend *be, const LpTensor *t, GError **error);

/* A graph owns the tensors it creates (lp_cgraph_tensor) and the nodes;
 * tensors made elsewhere (weights, inputs) are borrowed. */
LpCGraph *lp_cgraph_new (LpBackend *be);
void lp_cgraph_free (LpCGraph *g);
LpBackend *lp_cgraph_backend (LpCGraph *g);
/* A tensor owned by the graph, allocated on its backend. */
LpCTensor *lp_cgraph_tensor (LpCGraph *g, LpDType dtype, int n_dims, const gint64 *shape, const char *name,
                             GError **error);
/* Append a node; returns it (the caller fills i[] / f[] before computing).
 * Results are allocated by the graph when dst is NULL. */
LpCNode *lp_cgraph_add (LpCGraph *g, LpCOp op, LpCTensor *const *src, int n_src, LpCTensor *const *dst,
                        int n_dst, GError **error);
/* Run every node not run yet, in order: one submission on a device. */
gboolean lp_cgraph_compute (LpCGraph *g, GError **error);
/* Mark a tensor whose gradient lp_cgraph_backward must produce. */
void lp_ctensor_set_trainable (LpCTensor *t, gboolean trainable);
/* Record the backward nodes of every node so far, given dy, the gradient of
 * `y` (same shape).  Gradients of tensors used more than once are summed.
 * Then lp_cgraph_grad (g, t) is t's gradient (a graph tensor), for t
 * trainable or any tensor on the path from a trainable one to y. */
gboolean lp_cgraph_backward (LpCGraph *g, LpCTensor *y, LpCTensor *dy, GError **error);
LpCTensor *lp_cgraph_grad (LpCGraph *g, const LpCTensor *t);
/* One line for --explain: the backend, and the ops of this graph that ran on the CPU instead. */
char *lp_cgraph_describe (LpCGraph *g);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpCGraph, lp_cgraph_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpCTensor, lp_ctensor_free)

G_END_DECLS
