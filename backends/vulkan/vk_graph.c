/* llmpress Vulkan backend — compute graphs (compute.h): every node of a
 * graph_compute call recorded into one command buffer over the tensors'
 * resident buffers, a barrier only where a dispatch reads or overwrites
 * what an earlier one of the same stretch wrote (or read), one submit, one
 * wait.
 *
 * Each op has a record_* function that turns the node into dispatches of
 * the shaders in shaders/; supports_node says which nodes those can run
 * (types, shapes, the binding limit), the rest run on the CPU (the graph
 * core copies their operands across).  Scratch buffers a node needs (a
 * weight dequantized to f32, RMSNorm's row scales) come from the pool and
 * go back once the run is done. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "vk-internal.h"
#include <llmpress/error.h>

#define CTX(be) ((LpVkCtx *) (be)->priv)
#define F4 sizeof (float)

/* Operand i's buffer. */
#define BUF(t) (&((LpVkTensor *) (t)->buf)->b)

/* ---- shapes ---- */

static gint64
n_elements (const LpCTensor *t)
{
  gint64 n = 1;
  for (int d = 0; d < t->n_dims; d++)
    n *= t->shape[d];
  return n;
}

static gint64
cols_of (const LpCTensor *t)
{
  return t->n_dims > 0 ? t->shape[t->n_dims - 1] : 1;
}

static gint64
rows_of (const LpCTensor *t)
{
  gint64 c = cols_of (t);
  return c > 0 ? n_elements (t) / c : 0;
}

/* ---- one run: barriers where they are needed, scratch ---- */

typedef struct {
  LpVkCtx *ctx;
  GPtrArray *written; /* VkBuffer handles written since the last barrier */
  GPtrArray *read;    /* ... and read */
  GPtrArray *scratch; /* LpVkTensor, back to the pool after the wait */
  GError **error;
} Run;

static gboolean
in_set (GPtrArray *set, VkBuffer b)
{
  for (guint i = 0; i < set->len; i++)
    if (set->pdata[i] == (gpointer) b)
      return TRUE;
  return FALSE;
}

/* Before a command that reads bufs[] and writes those whose bit is set in
 * `writes`: a barrier if it reads or writes what an earlier command of the
 * stretch wrote, or writes what one read. */
static void
hazard (Run *r, const LpVkBuf *const *bufs, int n, guint32 writes)
{
  gboolean need = FALSE;
  for (int i = 0; i < n && !need; i++)
    need = in_set (r->written, bufs[i]->buf) || ((writes >> i & 1) && in_set (r->read, bufs[i]->buf));
  if (need)
    {
      lp_vk_barrier (r->ctx);
      g_ptr_array_set_size (r->written, 0);
      g_ptr_array_set_size (r->read, 0);
    }
  for (int i = 0; i < n; i++)
    g_ptr_array_add ((writes >> i & 1) ? r->written : r->read, (gpointer) bufs[i]->buf);
}

static void
dispatch (Run *r, VkShaderId shader, const guint32 *spec, int n_spec, const LpVkBuf *const *bufs, int n,
          guint32 writes, const void *push, gsize push_size, guint32 gx, guint32 gy)
{
  hazard (r, bufs, n, writes);
  lp_vk_dispatch_bufs (r->ctx, shader, spec, n_spec, bufs, n, push, push_size, gx, gy);
}

/* A 1-D dispatch of ctx->wg_size work groups over n elements. */
static void
dispatch_1d (Run *r, VkShaderId shader, const LpVkBuf *const *bufs, int n, guint32 writes, const void *push,
             gsize push_size, gsize n_elements)
{
  guint32 spec[1] = { r->ctx->wg_size };
  dispatch (r, shader, spec, 1, bufs, n, writes, push, push_size, lp_vk_groups (r->ctx, n_elements), 1);
}

/* A row-wise shader over T rows: a work group a row (its reductions in
 * shared memory), or, with one_each (the shader's ROWS specialization),
 * an invocation a row, for rows short enough that the group's reductions
 * would be mostly barriers. */
static void
dispatch_rows (Run *r, VkShaderId shader, gboolean one_each, const LpVkBuf *const *bufs, int n, guint32 writes,
               const void *push, gsize push_size, guint32 T)
{
  guint32 spec[2] = { one_each ? 64 : r->ctx->wg_size, one_each };
  dispatch (r, shader, spec, 2, bufs, n, writes, push, push_size, one_each ? (T + 63) / 64 : T, 1);
}

static void
copy (Run *r, LpVkBuf *src, VkDeviceSize src_off, LpVkBuf *dst, VkDeviceSize dst_off, gsize n)
{
  if (n == 0)
    return;
  const LpVkBuf *bufs[2] = { src, dst };
  hazard (r, bufs, 2, 1u << 1);
  VkBufferCopy region = { .srcOffset = src_off, .dstOffset = dst_off, .size = n };
  vkCmdCopyBuffer (lp_vk_cmd (r->ctx), src->buf, dst->buf, 1, &region);
}

static LpVkBuf *
scratch (Run *r, gsize bytes)
{
  LpVkTensor *t = lp_vk_tensor_take (r->ctx, bytes, r->error);
  if (t == NULL)
    return NULL;
  g_ptr_array_add (r->scratch, t);
  return &t->b;
}

static void
gemm (Run *r, VkShaderId shader, const LpVkBuf *a, const LpVkBuf *b, const LpVkBuf *c, const LpVkGemmPush *p)
{
  const LpVkBuf *abc[3] = { a, b, c };
  hazard (r, abc, 3, 1u << 2);
  lp_vk_gemm_dispatch (r->ctx, shader, abc, p);
}

/* ---- weights as the gemm shader reads them ---- */

typedef struct {
  guint32 n;
} CountPush;

typedef struct {
  guint32 rows, cols, G, group, has_g_idx;
} GridPush;

/* Whether the node's weight is an integer grid (src[w] the codes, then the
 * scales, zeros and g_idx). */
static gboolean
is_grid (const LpCNode *node, int w)
{
  return node->op == LP_COP_MATMUL_GRID || (node->op == LP_COP_MATMUL_BACK_X && node->src[w + 1] != NULL);
}

/* The weight W [N,K] of the node (src[w] on) as f32 rows or, with the f16
 * fast path, f16 rows: as stored, or decoded into a scratch buffer. */
static const LpVkBuf *
weight (Run *r, const LpCNode *node, int w, int N, int K, VkShaderId *shader)
{
  const LpCTensor *W = node->src[w];
  *shader = VK_SH_GEMM;
  if (!is_grid (node, w))
    {
      if (W->dtype == LP_DTYPE_F32)
        return BUF (W);
      if (W->dtype == LP_DTYPE_F16 && (r->ctx->fast & LP_VK_FAST_F16))
        {
          *shader = VK_SH_GEMM_F16;
          return BUF (W);
        }
    }
  gsize n = (gsize) N * K;
  LpVkBuf *f = scratch (r, n * F4);
  if (f == NULL)
    return NULL;
  if (is_grid (node, w))
    {
      const LpCTensor *scales = node->src[w + 1], *zeros = node->src[w + 2], *g_idx = node->src[w + 3];
      gint64 G = cols_of (scales);
      GridPush p = { (guint32) N, (guint32) K, (guint32) G, (guint32) MAX (node->i[1], 1), g_idx != NULL };
      const LpVkBuf *bufs[5] = { BUF (W), BUF (scales), g_idx ? BUF (g_idx) : BUF (W), f, BUF (zeros) };
      dispatch_1d (r, VK_SH_DEQUANT_GRID_SPLIT, bufs, 5, 1u << 3, &p, sizeof p, n);
    }
  else
    {
      guint32 spec[2] = { r->ctx->wg_size, (guint32) W->dtype };
      CountPush p = { (guint32) n };
      const LpVkBuf *bufs[2] = { BUF (W), f };
      dispatch (r, VK_SH_DEQUANT, spec, 2, bufs, 2, 1u << 1, &p, sizeof p, lp_vk_groups (r->ctx, n), 1);
    }
  return f;
}

/* ---- forward ops ---- */

typedef struct {
  guint32 T, D, V;
} EmbedPush;

/* embed: dst[T,D] = table[ids[t]]; embed_back: dst[V,D] = the rows of
 * dy[T,D] added up at ids (a thread per column: the columns are what runs
 * in parallel). */
static gboolean
record_embed (Run *r, const LpCNode *n)
{
  gboolean back = n->op == LP_COP_EMBED_BACK;
  const LpCTensor *rows = n->src[0], *dst = n->dst[0];
  const LpCTensor *table = back ? dst : rows, *tokens = back ? rows : dst;
  EmbedPush p = { (guint32) rows_of (tokens), (guint32) cols_of (dst), (guint32) rows_of (table) };
  const LpVkBuf *bufs[3] = { BUF (rows), BUF (n->src[1]), BUF (dst) };
  dispatch_1d (r, back ? VK_SH_EMBED_BACK : VK_SH_EMBED, bufs, 3, 1u << 2, &p, sizeof p,
               back ? p.D : (gsize) p.T * p.D);
  return TRUE;
}

/* dst[T,N] = x[T,K] W[N,K]^T (+ acc): the accumulator copied into dst
 * first, then the product added to it (beta 1). */
static gboolean
record_matmul (Run *r, const LpCNode *n)
{
  const LpCTensor *x = n->src[0], *dst = n->dst[0];
  const LpCTensor *acc = n->op == LP_COP_MATMUL_GRID ? n->src[5] : n->src[2];
  int T = (int) rows_of (x), K = (int) cols_of (x), N = (int) cols_of (dst);
  VkShaderId shader;
  const LpVkBuf *w = weight (r, n, 1, N, K, &shader);
  if (w == NULL)
    return FALSE;
  if (acc != NULL && acc->buf != dst->buf)
    copy (r, BUF (acc), 0, BUF (dst), 0, dst->n_bytes);
  LpVkGemmPush p = { (guint32) T, (guint32) N, (guint32) K, (guint32) K, (guint32) K, (guint32) N, 0, 1, 1.0f,
                     acc != NULL ? 1.0f : 0.0f };
  gemm (r, shader, BUF (x), w, BUF (dst), &p);
  return TRUE;
}

typedef struct {
  guint32 D, row0;
  float eps;
  guint32 n_rows;
} NormPush;

/* Rows up to this long are normalized one an invocation (rmsnorm.comp's
 * ROWS). */
#define NORM_ROWS_MAX_D 256

static gboolean
record_rmsnorm (Run *r, const LpCNode *n)
{
  const LpCTensor *x = n->src[0], *dst = n->dst[0];
  guint32 T = (guint32) rows_of (x);
  NormPush p = { (guint32) cols_of (x), 0, n->f[0], T };
  const LpVkBuf *bufs[3] = { BUF (x), BUF (n->src[1]), BUF (dst) };
  dispatch_rows (r, VK_SH_RMSNORM, p.D <= NORM_ROWS_MAX_D, bufs, 3, 1u << 2, &p, sizeof p, T);
  return TRUE;
}

/* Positions a RoPE node reaches: pos0 + T. */
static guint
rope_positions (const LpCNode *n)
{
  return (guint) (n->i[3] + rows_of (n->src[0]));
}

/* inv_freq's table of (cos, sin) covers the node's positions: built by the
 * host in double, as lp_ref_rope computes the angles, when the tensor was
 * written since or the table is too short (then for twice the positions
 * asked, up to what one binding holds).  Before the run is recorded: on a
 * device the host cannot map, reading inv_freq is a run of its own. */
static gboolean
rope_table (LpVkCtx *ctx, const LpCNode *n, GError **error)
{
  LpVkTensor *inv = n->src[1]->buf;
  guint half = (guint) (n->i[2] / 2), need = rope_positions (n);
  if (inv->rope_cs.buf != VK_NULL_HANDLE && inv->rope_gen == inv->gen && inv->rope_half == half
      && inv->rope_positions >= need)
    return TRUE;
  gsize most = ctx->max_binding / (2 * F4 * half);
  guint positions = (guint) MIN (MAX ((gsize) need * 2, 1024), most);
  g_autofree float *freq = g_new (float, half);
  if (inv->b.map != NULL)
    memcpy (freq, inv->b.map, half * F4);
  else
    lp_vk_copy_out (ctx, &inv->b, 0, freq, half * F4);
  gsize bytes = (gsize) positions * half * 2 * F4;
  g_autofree float *cs = g_new (float, (gsize) positions * half * 2);
  for (guint pos = 0; pos < positions; pos++)
    for (guint i = 0; i < half; i++)
      {
        double angle = (double) pos * freq[i];
        cs[((gsize) pos * half + i) * 2] = (float) cos (angle);
        cs[((gsize) pos * half + i) * 2 + 1] = (float) sin (angle);
      }
  lp_vk_buf_free (ctx, &inv->rope_cs);
  if (!lp_vk_buf_alloc (ctx, &inv->rope_cs, bytes, FALSE, error))
    return FALSE;
  if (inv->rope_cs.map != NULL)
    memcpy (inv->rope_cs.map, cs, bytes);
  else
    lp_vk_copy_in (ctx, &inv->rope_cs, 0, cs, bytes);
  inv->rope_positions = positions;
  inv->rope_half = half;
  inv->rope_gen = inv->gen;
  return TRUE;
}

static gboolean
record_rope (Run *r, const LpCNode *n)
{
  const LpCTensor *x = n->src[0], *dst = n->dst[0];
  LpVkTensor *inv = n->src[1]->buf;
  guint32 T = (guint32) rows_of (x), heads = (guint32) n->i[1], hd = (guint32) n->i[2];
  LpVkRopePush p = { T, heads, hd, n->i[0] == LP_ROPE_NEOX ? 1 : 0, (guint32) n->i[3], n->op == LP_COP_ROPE_BACK };
  const LpVkBuf *bufs[3] = { BUF (x), &inv->rope_cs, BUF (dst) };
  dispatch_1d (r, VK_SH_ROPE, bufs, 3, 1u << 2, &p, sizeof p, (gsize) T * heads * (hd / 2));
  return TRUE;
}

static gboolean
record_attention (Run *r, const LpCNode *n)
{
  const LpCTensor *q = n->src[0], *k = n->src[1], *v = n->src[2], *dst = n->dst[0];
  guint32 T = (guint32) rows_of (q), T_kv = (guint32) rows_of (k), H = (guint32) n->i[0];
  guint32 hd = (guint32) n->i[2];
  LpVkAttnPush p = { T, T_kv, H, (guint32) n->i[1], hd, (float) (1.0 / sqrt ((double) hd)) };
  const LpVkBuf *bufs[4] = { BUF (q), BUF (k), BUF (v), BUF (dst) };
  if (hd <= LP_VK_ATTN_ROWS_MAX_HD && hd % 4 == 0)
    {
      /* 16 invocations of 8 rows (attention_rows.comp's R) a group. */
      guint32 spec[2] = { 16, hd / 4 };
      dispatch (r, VK_SH_ATTENTION_ROWS, spec, 2, bufs, 4, 1u << 3, &p, sizeof p, (T + 127) / 128, H);
      return TRUE;
    }
  guint32 spec[1] = { LP_VK_ATTN_WG };
  dispatch (r, VK_SH_ATTENTION, spec, 1, bufs, 4, 1u << 3, &p, sizeof p, H, T);
  return TRUE;
}

static gboolean
record_swiglu (Run *r, const LpCNode *n)
{
  CountPush p = { (guint32) n_elements (n->dst[0]) };
  const LpVkBuf *bufs[3] = { BUF (n->src[0]), BUF (n->src[1]), BUF (n->dst[0]) };
  dispatch_1d (r, VK_SH_SWIGLU, bufs, 3, 1u << 2, &p, sizeof p, p.n);
  return TRUE;
}

/* eltwise.comp's modes. */
enum { ELT_ADD, ELT_SCALE, ELT_SWIGLU_BACK };

typedef struct {
  guint32 n, nb, mode;
  float f;
} EltPush;

static gboolean
record_eltwise (Run *r, const LpCNode *n)
{
  const LpCTensor *dst = n->dst[0];
  EltPush p = { (guint32) n_elements (dst), 1, ELT_ADD, n->f[0] };
  const LpVkBuf *a = BUF (n->src[0]), *b = a, *c = a, *d = BUF (dst), *e = d;
  guint32 writes = 1u << 3;
  switch (n->op)
    {
    case LP_COP_ADD:
      b = BUF (n->src[1]);
      p.nb = (guint32) n_elements (n->src[1]);
      break;
    case LP_COP_SCALE:
      p.mode = ELT_SCALE;
      break;
    default: /* LP_COP_SWIGLU_BACK */
      p.mode = ELT_SWIGLU_BACK;
      b = BUF (n->src[1]);
      c = BUF (n->src[2]);
      e = BUF (n->dst[1]);
      writes |= 1u << 4;
      break;
    }
  const LpVkBuf *bufs[5] = { a, b, c, d, e };
  dispatch_1d (r, VK_SH_ELTWISE, bufs, 5, writes, &p, sizeof p, p.n);
  return TRUE;
}

/* src1 rows i[0] .. i[0] + T - 1 = src0: a copy (dst is src1). */
static gboolean
record_set_rows (Run *r, const LpCNode *n)
{
  const LpCTensor *src = n->src[0], *cache = n->src[1], *dst = n->dst[0];
  if (dst->buf != cache->buf)
    copy (r, BUF (cache), 0, BUF (dst), 0, cache->n_bytes);
  copy (r, BUF (src), 0, BUF (dst), (VkDeviceSize) n->i[0] * cols_of (cache) * F4, src->n_bytes);
  return TRUE;
}

/* loss.comp's modes. */
enum { LOSS_CE, LOSS_KL, LOSS_MSE, LOSS_CE_BACK, LOSS_KL_BACK, LOSS_MSE_BACK };

typedef struct {
  guint32 V, mode;
  float f;
  guint32 n_rows;
} LossPush;

/* Rows up to this long are a loss.comp invocation each (its ROWS). */
#define LOSS_ROWS_MAX_V 1024

static gboolean
record_loss (Run *r, const LpCNode *n)
{
  gboolean back = n->op == LP_COP_CROSS_ENTROPY_BACK || n->op == LP_COP_KL_BACK || n->op == LP_COP_MSE_BACK;
  /* The backward ops take dy first, then the forward op's operands. */
  const LpCTensor *a = n->src[back ? 1 : 0], *b = n->src[back ? 2 : 1];
  guint32 T = (guint32) rows_of (a);
  LossPush p = { (guint32) cols_of (a), 0, n->f[0], T };
  const LpVkBuf *ba = BUF (a), *bb = ba, *tg = ba, *dy = back ? BUF (n->src[0]) : ba;
  switch (n->op)
    {
    case LP_COP_CROSS_ENTROPY:
    case LP_COP_CROSS_ENTROPY_BACK:
      p.mode = back ? LOSS_CE_BACK : LOSS_CE;
      tg = BUF (b);
      break;
    case LP_COP_KL:
    case LP_COP_KL_BACK:
      p.mode = back ? LOSS_KL_BACK : LOSS_KL;
      bb = BUF (b);
      break;
    default:
      p.mode = back ? LOSS_MSE_BACK : LOSS_MSE;
      bb = BUF (b);
      break;
    }
  const LpVkBuf *bufs[5] = { ba, bb, tg, dy, BUF (n->dst[0]) };
  dispatch_rows (r, VK_SH_LOSS, p.V <= LOSS_ROWS_MAX_V, bufs, 5, 1u << 4, &p, sizeof p, T);
  return TRUE;
}

/* kl_topk.comp's push constants; its modes. */
typedef struct {
  guint32 V, k, mode;
  float f;
  guint32 n_rows, W;
} KlTopkPush;

enum { KL_TOPK_FORWARD, KL_TOPK_BACKWARD };

/* kl_topk and its backward: one dispatch, the ids' bit mask [T, W] in a
 * scratch buffer the shader builds. */
static gboolean
record_kl_topk (Run *r, const LpCNode *n)
{
  gboolean back = n->op == LP_COP_KL_TOPK_BACK;
  LpCTensor *const *s = n->src + (back ? 1 : 0); /* student, ids, log p, rest */
  guint32 T = (guint32) rows_of (s[0]), V = (guint32) cols_of (s[0]);
  KlTopkPush p = { V, (guint32) cols_of (s[1]), back ? KL_TOPK_BACKWARD : KL_TOPK_FORWARD, n->f[0], T, (V + 31) / 32 };
  LpVkBuf *mark = scratch (r, (gsize) T * p.W * sizeof (guint32));
  if (mark == NULL)
    return FALSE;
  const LpVkBuf *dy = back ? BUF (n->src[0]) : BUF (s[3]); /* the forward reads none: any buffer */
  const LpVkBuf *bufs[7] = { BUF (s[0]), BUF (s[1]), BUF (s[2]), BUF (s[3]), dy, BUF (n->dst[0]), mark };
  dispatch_rows (r, VK_SH_KL_TOPK, V <= LOSS_ROWS_MAX_V, bufs, 7, 1u << 5 | 1u << 6, &p, sizeof p, T);
  return TRUE;
}

/* ---- backward ops ---- */

/* dx[T,K] = dy[T,N] W[N,K]: the gemm with B not transposed. */
static gboolean
record_matmul_back_x (Run *r, const LpCNode *n)
{
  const LpCTensor *dy = n->src[0], *dst = n->dst[0];
  int T = (int) rows_of (dy), N = (int) cols_of (dy), K = (int) cols_of (dst);
  VkShaderId shader;
  const LpVkBuf *w = weight (r, n, 1, N, K, &shader);
  if (w == NULL)
    return FALSE;
  LpVkGemmPush p = { (guint32) T, (guint32) K, (guint32) N, (guint32) N, (guint32) K, (guint32) K, 0, 0, 1.0f, 0.0f };
  gemm (r, shader, BUF (dy), w, BUF (dst), &p);
  return TRUE;
}

/* dW[N,K] = dy[T,N]^T x[T,K]: the gemm with A transposed. */
static gboolean
record_matmul_back_w (Run *r, const LpCNode *n)
{
  const LpCTensor *dy = n->src[0], *x = n->src[1];
  int T = (int) rows_of (dy), N = (int) cols_of (dy), K = (int) cols_of (x);
  LpVkGemmPush p = { (guint32) N, (guint32) K, (guint32) T, (guint32) N, (guint32) K, (guint32) K, 1, 0, 1.0f, 0.0f };
  gemm (r, VK_SH_GEMM, BUF (dy), BUF (x), BUF (n->dst[0]), &p);
  return TRUE;
}

typedef struct {
  guint32 D, mode;
  float eps;
  guint32 n_rows;
} NormBackPush;

typedef struct {
  guint32 T, n, mode;
} ColSumPush;

static gboolean
record_rmsnorm_back (Run *r, const LpCNode *n)
{
  const LpCTensor *dy = n->src[0], *x = n->src[1];
  guint32 T = (guint32) rows_of (x), D = (guint32) cols_of (x);
  gboolean one_each = D <= NORM_ROWS_MAX_D;
  NormBackPush p = { D, n->op == LP_COP_RMSNORM_BACK ? 0 : 1, n->f[0], T };
  if (n->op == LP_COP_RMSNORM_BACK)
    {
      const LpVkBuf *bufs[4] = { BUF (dy), BUF (x), BUF (n->src[2]), BUF (n->dst[0]) };
      dispatch_rows (r, VK_SH_RMSNORM_BACK, one_each, bufs, 4, 1u << 3, &p, sizeof p, T);
      return TRUE;
    }
  /* The weight's gradient: each row's 1 / rms, then the column sums. */
  LpVkBuf *rs = scratch (r, (gsize) T * F4);
  if (rs == NULL)
    return FALSE;
  const LpVkBuf *bufs[4] = { BUF (dy), BUF (x), BUF (x), rs };
  dispatch_rows (r, VK_SH_RMSNORM_BACK, one_each, bufs, 4, 1u << 3, &p, sizeof p, T);
  ColSumPush c = { T, D, 1 };
  const LpVkBuf *cbufs[4] = { BUF (dy), BUF (x), rs, BUF (n->dst[0]) };
  dispatch_1d (r, VK_SH_COLSUM, cbufs, 4, 1u << 3, &c, sizeof c, D);
  return TRUE;
}

static gboolean
record_row_sum (Run *r, const LpCNode *n)
{
  const LpCTensor *x = n->src[0];
  ColSumPush c = { (guint32) rows_of (x), (guint32) cols_of (x), 0 };
  const LpVkBuf *bufs[4] = { BUF (x), BUF (x), BUF (x), BUF (n->dst[0]) };
  dispatch_1d (r, VK_SH_COLSUM, bufs, 4, 1u << 3, &c, sizeof c, c.n);
  return TRUE;
}

typedef struct {
  guint32 T, T_kv, H, Hkv, hd;
  float scale;
  guint32 pass;
} AttnBackPush;

static gboolean
record_attention_back (Run *r, const LpCNode *n)
{
  const LpCTensor *dy = n->src[0], *q = n->src[1], *k = n->src[2], *v = n->src[3];
  guint32 T = (guint32) rows_of (q), T_kv = (guint32) rows_of (k), H = (guint32) n->i[0];
  guint32 Hkv = (guint32) n->i[1], hd = (guint32) n->i[2];
  LpVkBuf *st = scratch (r, (gsize) T * H * 2 * F4);
  if (st == NULL)
    return FALSE;
  AttnBackPush p = { T, T_kv, H, Hkv, hd, (float) (1.0 / sqrt ((double) hd)), 0 };
  const LpVkBuf *bufs[8] = { BUF (dy), BUF (q), BUF (k), BUF (v), BUF (n->dst[0]), BUF (n->dst[1]), BUF (n->dst[2]), st };
  if (hd <= LP_VK_ATTN_ROWS_MAX_HD && hd % 4 == 0)
    {
      /* 16 invocations of 4 rows (attention_back_rows.comp's R) a group. */
      guint32 spec[2] = { 16, hd / 4 };
      dispatch (r, VK_SH_ATTENTION_BACK_ROWS, spec, 2, bufs, 8, 1u << 4 | 1u << 7, &p, sizeof p, (T + 63) / 64, H);
      p.pass = 1;
      dispatch (r, VK_SH_ATTENTION_BACK_ROWS, spec, 2, bufs, 8, 1u << 5 | 1u << 6, &p, sizeof p, (T_kv + 63) / 64,
                Hkv);
      return TRUE;
    }
  guint32 spec[1] = { LP_VK_ATTN_WG };
  dispatch (r, VK_SH_ATTENTION_BACK, spec, 1, bufs, 8, 1u << 4 | 1u << 7, &p, sizeof p, H, T);
  p.pass = 1;
  dispatch (r, VK_SH_ATTENTION_BACK, spec, 1, bufs, 8, 1u << 5 | 1u << 6, &p, sizeof p, Hkv, T_kv);
  return TRUE;
}

/* ---- the optimizer ---- */

typedef struct {
  guint32 n, has_keep;
  float lr, b1, b2, eps, wd, gs, c1, c2;
} AdamWPush;

/* In place over param, m and v; the bias corrections from the host in
 * double, as the CPU kernel takes them. */
static gboolean
record_adamw (Run *r, const LpCNode *n)
{
  const LpCTensor *keep = n->src[4];
  double step = (double) MAX (n->i[0], 1);
  AdamWPush p = { (guint32) n_elements (n->src[0]), keep != NULL, n->f[0], n->f[1], n->f[2], n->f[3], n->f[4],
                  n->f[5], (float) (1.0 / (1.0 - pow (n->f[1], step))), (float) (1.0 / (1.0 - pow (n->f[2], step))) };
  const LpVkBuf *bufs[5] = { BUF (n->src[0]), BUF (n->src[1]), BUF (n->src[2]), BUF (n->src[3]),
                             keep ? BUF (keep) : BUF (n->src[1]) };
  dispatch_1d (r, VK_SH_ADAMW, bufs, 5, 1u << 0 | 1u << 2 | 1u << 3, &p, sizeof p, p.n);
  return TRUE;
}

typedef struct {
  guint32 n, pass, has_acc;
} SumSqPush;

/* Work groups' partial sums into a scratch buffer, then one group adds them. */
static gboolean
record_sum_sq (Run *r, const LpCNode *n)
{
  const LpCTensor *x = n->src[0], *acc = n->src[1];
  gsize count = (gsize) n_elements (x);
  guint32 groups = lp_vk_groups (r->ctx, count);
  LpVkBuf *part = scratch (r, (gsize) groups * F4);
  if (part == NULL)
    return FALSE;
  SumSqPush p = { (guint32) count, 0, acc != NULL };
  const LpVkBuf *bufs[4] = { BUF (x), acc ? BUF (acc) : BUF (x), part, BUF (n->dst[0]) };
  dispatch_1d (r, VK_SH_SUM_SQ, bufs, 4, 1u << 2, &p, sizeof p, count);
  p.pass = 1;
  p.n = groups;
  guint32 spec[1] = { r->ctx->wg_size };
  dispatch (r, VK_SH_SUM_SQ, spec, 1, bufs, 4, 1u << 3, &p, sizeof p, 1, 1);
  return TRUE;
}

/* ---- training an integer grid ---- */

typedef struct {
  guint32 N, K, G, maxq, group, mode;
} GridTrainPush;

/* grid_train.comp's modes, in the order of the ops. */
static gboolean
record_grid_train (Run *r, const LpCNode *n)
{
  static const LpCOp modes[] = { LP_COP_FAKE_QUANT, LP_COP_FAKE_QUANT_BACK, LP_COP_DEQUANT_GRID,
                                 LP_COP_DEQUANT_GRID_BACK };
  guint32 mode = 0;
  while (modes[mode] != n->op)
    mode++;
  /* The grid's operands from src[first]: latent or codes, scales, zeros, g_idx. */
  int first = mode == 0 || mode == 2 ? 0 : 1;
  const LpCTensor *w = n->src[first], *scales = n->src[first + 1], *dst = n->dst[0];
  GridTrainPush p = { (guint32) rows_of (w), (guint32) cols_of (w), (guint32) cols_of (scales),
                      (guint32) ((1 << n->i[0]) - 1), (guint32) n->i[1], mode };
  const LpVkBuf *a = BUF (n->src[0]), *bx = mode == 1 ? BUF (w) : a, *codes = mode >= 2 ? BUF (w) : a;
  const LpVkBuf *bufs[7] = { a, bx, codes, BUF (scales), BUF (n->src[first + 2]), BUF (n->src[first + 3]), BUF (dst) };
  dispatch_1d (r, VK_SH_GRID_TRAIN, bufs, 7, 1u << 6, &p, sizeof p, mode == 3 ? (gsize) p.N * p.G : (gsize) p.N * p.K);
  return TRUE;
}

/* ---- the op table of this backend ---- */

typedef gboolean (*RecordFn) (Run *r, const LpCNode *n);

static const RecordFn records[LP_COP_COUNT] = {
  [LP_COP_EMBED] = record_embed,
  [LP_COP_MATMUL] = record_matmul,
  [LP_COP_MATMUL_GRID] = record_matmul,
  [LP_COP_RMSNORM] = record_rmsnorm,
  [LP_COP_ROPE] = record_rope,
  [LP_COP_ATTENTION] = record_attention,
  [LP_COP_SWIGLU] = record_swiglu,
  [LP_COP_ADD] = record_eltwise,
  [LP_COP_SCALE] = record_eltwise,
  [LP_COP_SET_ROWS] = record_set_rows,
  [LP_COP_CROSS_ENTROPY] = record_loss,
  [LP_COP_KL] = record_loss,
  [LP_COP_MSE] = record_loss,
  [LP_COP_EMBED_BACK] = record_embed,
  [LP_COP_MATMUL_BACK_X] = record_matmul_back_x,
  [LP_COP_MATMUL_BACK_W] = record_matmul_back_w,
  [LP_COP_RMSNORM_BACK] = record_rmsnorm_back,
  [LP_COP_RMSNORM_BACK_W] = record_rmsnorm_back,
  [LP_COP_ROPE_BACK] = record_rope,
  [LP_COP_ATTENTION_BACK] = record_attention_back,
  [LP_COP_SWIGLU_BACK] = record_eltwise,
  [LP_COP_ROW_SUM] = record_row_sum,
  [LP_COP_CROSS_ENTROPY_BACK] = record_loss,
  [LP_COP_KL_BACK] = record_loss,
  [LP_COP_MSE_BACK] = record_loss,
  [LP_COP_ADAMW] = record_adamw,
  [LP_COP_SUM_SQ] = record_sum_sq,
  [LP_COP_FAKE_QUANT] = record_grid_train,
  [LP_COP_FAKE_QUANT_BACK] = record_grid_train,
  [LP_COP_DEQUANT_GRID] = record_grid_train,
  [LP_COP_DEQUANT_GRID_BACK] = record_grid_train,
  [LP_COP_KL_TOPK] = record_kl_topk,
  [LP_COP_KL_TOPK_BACK] = record_kl_topk,
};

/* ---- which nodes the device runs ---- */

static gboolean
is_f32 (const LpCTensor *t)
{
  return t != NULL && t->dtype == LP_DTYPE_F32;
}

/* The weight operands from src[w] on: a type the device reads, within the
 * binding limit once decoded to f32. */
static gboolean
weight_ok (LpVkCtx *ctx, const LpCNode *n, int w, gint64 N, gint64 K)
{
  const LpCTensor *W = n->src[w];
  gboolean f32_scratch = (guint64) N * K * F4 <= ctx->max_binding;
  if (is_grid (n, w))
    {
      const LpCTensor *scales = n->src[w + 1], *zeros = n->src[w + 2], *g_idx = n->src[w + 3];
      return W->dtype == LP_DTYPE_I8 && scales != NULL && scales->dtype == LP_DTYPE_I16 && zeros != NULL
             && zeros->dtype == LP_DTYPE_I8 && (g_idx == NULL || g_idx->dtype == LP_DTYPE_I32) && f32_scratch
             && n_elements (W) == N * K && rows_of (scales) == N
             && n_elements (zeros) == n_elements (scales)
             && (g_idx != NULL || n->i[1] > 0);
    }
  if (W->dtype == LP_DTYPE_F32 || (W->dtype == LP_DTYPE_F16 && (ctx->fast & LP_VK_FAST_F16)))
    return TRUE;
  return lp_vk_device_reads (W->dtype) && f32_scratch;
}

/* Op-specific types and shapes. */
static gboolean
node_shapes_ok (LpVkCtx *ctx, const LpCNode *n)
{
  const LpCTensor *const *s = (const LpCTensor *const *) n->src;
  const LpCTensor *d = n->dst[0];
  guint32 groups = ctx->max_groups_x;
  switch (n->op)
    {
    case LP_COP_EMBED:
      return is_f32 (s[0]) && s[1]->dtype == LP_DTYPE_I32 && cols_of (s[0]) == cols_of (d);
    case LP_COP_MATMUL:
    case LP_COP_MATMUL_GRID:
      {
        gint64 N = cols_of (d), K = cols_of (s[0]);
        const LpCTensor *acc = n->op == LP_COP_MATMUL_GRID ? s[5] : s[2];
        return is_f32 (s[0]) && weight_ok (ctx, n, 1, N, K) && (acc == NULL || is_f32 (acc))
               && (rows_of (s[0]) + 63) / 64 <= groups && (N + 63) / 64 <= groups;
      }
    case LP_COP_MATMUL_BACK_X:
      {
        gint64 N = cols_of (s[0]), K = cols_of (d);
        return is_f32 (s[0]) && weight_ok (ctx, n, 1, N, K) && (rows_of (s[0]) + 63) / 64 <= groups
               && (K + 63) / 64 <= groups;
      }
    case LP_COP_MATMUL_BACK_W:
      return is_f32 (s[0]) && is_f32 (s[1]) && (cols_of (s[0]) + 63) / 64 <= groups
             && (cols_of (s[1]) + 63) / 64 <= groups;
    case LP_COP_RMSNORM:
    case LP_COP_RMSNORM_BACK:
    case LP_COP_RMSNORM_BACK_W:
    case LP_COP_CROSS_ENTROPY:
    case LP_COP_KL:
    case LP_COP_MSE:
    case LP_COP_CROSS_ENTROPY_BACK:
    case LP_COP_KL_BACK:
    case LP_COP_MSE_BACK:
      return rows_of (n->op >= LP_COP_EMBED_BACK ? s[1] : s[0]) <= groups;
    case LP_COP_ROPE:
    case LP_COP_ROPE_BACK:
      {
        gint64 hd = n->i[2], half = hd / 2;
        return is_f32 (s[0]) && is_f32 (s[1]) && half > 0 && hd % 2 == 0 && n->i[3] >= 0
               && n_elements (s[1]) >= half && cols_of (s[0]) == n->i[1] * hd
               && (guint64) rope_positions (n) * 2 * half * F4 <= ctx->max_binding;
      }
    case LP_COP_ATTENTION:
    case LP_COP_ATTENTION_BACK:
      {
        gint64 H = n->i[0], Hkv = n->i[1], hd = n->i[2];
        int q = n->op == LP_COP_ATTENTION ? 0 : 1;
        gint64 T = rows_of (s[q]), T_kv = rows_of (s[q + 1]);
        return hd > 0 && hd <= LP_VK_ATTN_MAX_HD && Hkv > 0 && H % Hkv == 0 && H <= groups && T <= groups
               && T_kv >= T && T_kv <= groups;
      }
    case LP_COP_SET_ROWS:
      return cols_of (s[0]) == cols_of (s[1]) && n->i[0] >= 0 && n->i[0] + rows_of (s[0]) <= rows_of (s[1])
             && s[0]->dtype == s[1]->dtype && d->n_bytes == s[1]->n_bytes;
    case LP_COP_EMBED_BACK:
      return s[1]->dtype == LP_DTYPE_I32;
    case LP_COP_ADAMW:
      for (int i = 0; i < 5; i++)
        if (s[i] != NULL && (!is_f32 (s[i]) || n_elements (s[i]) != n_elements (s[0])))
          return FALSE;
      return TRUE;
    case LP_COP_SUM_SQ:
      return is_f32 (s[0]) && (s[1] == NULL || is_f32 (s[1]));
    case LP_COP_FAKE_QUANT:
    case LP_COP_FAKE_QUANT_BACK:
    case LP_COP_DEQUANT_GRID:
    case LP_COP_DEQUANT_GRID_BACK:
      {
        /* dy first for the backward ops; the grid's operands after it. */
        int f = n->op == LP_COP_FAKE_QUANT || n->op == LP_COP_DEQUANT_GRID ? 0 : 1;
        gboolean codes = n->op == LP_COP_DEQUANT_GRID || n->op == LP_COP_DEQUANT_GRID_BACK;
        return (f == 0 || is_f32 (s[0])) && s[f]->dtype == (codes ? LP_DTYPE_I8 : LP_DTYPE_F32) && is_f32 (s[f + 1])
               && s[f + 2]->dtype == LP_DTYPE_I8 && s[f + 3]->dtype == LP_DTYPE_I32 && n->i[0] >= 1 && n->i[0] <= 8
               && n_elements (s[f + 2]) == n_elements (s[f + 1]) && rows_of (s[f + 1]) == rows_of (s[f])
               && n_elements (s[f + 3]) == cols_of (s[f]);
      }
    case LP_COP_KL_TOPK:
    case LP_COP_KL_TOPK_BACK:
      {
        /* The student, then ids (i32), log p and the rest's (f32); the mask within a binding. */
        const LpCTensor *const *t = s + (n->op == LP_COP_KL_TOPK_BACK ? 1 : 0);
        gint64 T = rows_of (t[0]), V = cols_of (t[0]);
        return is_f32 (t[0]) && t[1]->dtype == LP_DTYPE_I32 && is_f32 (t[2]) && is_f32 (t[3]) && rows_of (t[1]) == T
               && n_elements (t[3]) == T && T <= groups && (guint64) T * ((V + 31) / 32) * 4 <= ctx->max_binding;
      }
    default:
      return TRUE;
    }
}

gboolean
lp_vk_supports_node (LpBackend *be, const LpCNode *n)
{
  LpVkCtx *ctx = CTX (be);
  if (n->op >= LP_COP_COUNT || records[n->op] == NULL)
    return FALSE;
  /* Every operand in this backend's memory, within one binding; the
   * activations f32 (all but the weights, ids, targets and grids). */
  for (int i = 0; i < n->n_src + n->n_dst; i++)
    {
      const LpCTensor *t = i < n->n_src ? n->src[i] : n->dst[i - n->n_src];
      if (t == NULL)
        continue;
      if (t->be != be || t->buf == NULL || t->n_bytes > ctx->max_binding
          || n_elements (t) > G_MAXUINT32 / 2)
        return FALSE;
      if (i >= n->n_src && t->dtype != LP_DTYPE_F32 && n->op != LP_COP_SET_ROWS)
        return FALSE;
    }
  return node_shapes_ok (ctx, n);
}

/* ---- graph_compute ---- */

gboolean
lp_vk_graph_compute (LpBackend *be, LpCNode *const *nodes, int n, GError **error)
{
  LpVkCtx *ctx = CTX (be);
  gboolean ok = TRUE;
  g_mutex_lock (&ctx->lock);
  for (int i = 0; i < n && ok; i++)
    if (nodes[i]->op == LP_COP_ROPE || nodes[i]->op == LP_COP_ROPE_BACK)
      ok = rope_table (ctx, nodes[i], error);
  Run r = { ctx, g_ptr_array_new (), g_ptr_array_new (), g_ptr_array_new (), error };
  if (ok)
    {
      lp_vk_run_begin (ctx, 0);
      for (int i = 0; i < n && ok; i++)
        {
          const LpCNode *node = nodes[i];
          g_assert (records[node->op] != NULL);
          ok = records[node->op](&r, node);
          for (int j = 0; j < node->n_dst; j++)
            if (node->dst[j] != NULL)
              ((LpVkTensor *) node->dst[j]->buf)->gen++;
        }
      /* A failed recording is still submitted: the frame must not be left
       * half-recorded (what ran is harmless, the caller sees the error). */
      lp_vk_run_end (ctx);
    }
  for (guint i = 0; i < r.scratch->len; i++)
    lp_vk_tensor_give (ctx, r.scratch->pdata[i]);
  g_ptr_array_unref (r.scratch);
  g_ptr_array_unref (r.written);
  g_ptr_array_unref (r.read);
  g_mutex_unlock (&ctx->lock);
  return ok;
}
