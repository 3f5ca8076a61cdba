/* Compute graphs on the Vulkan device (compute.h) against the CPU backend,
 * under the Khronos validation layer with its synchronization checks (every
 * error it reports is a g_critical, fatal here): every op's node, forward and backward, with the
 * device's buffers; a chain of dependent nodes in one submission (the
 * barriers); the staging path; the buffer pool; the stories260K
 * perplexity through graphs.  Skips with the reason when there is no
 * Vulkan device.
 *
 * Tolerances (relative Frobenius error against the CPU kernels):
 *   products and attention 1e-5 (f32 sums in another order; the CPU's in
 *   double for some), row-wise reductions 1e-5, element-wise ops 1e-6,
 *   copies and gathers exact; the losses 1e-5 (the CPU's log-softmax is in
 *   double, the device's in f32); AdamW 1e-6 (element-wise, the bias
 *   corrections from the host on both), the sum of squares 1e-5 (the CPU's
 *   in double); stories260K perplexity within 1e-3. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"
#include <llmpress/compute.h>

/* How an operand is filled. */
typedef enum {
  FILL_RANDOM, /* uniform in [-1, 1] (then converted to its dtype) */
  FILL_IDS,    /* i32 in [0, range) */
  FILL_TARGETS,/* i32 in [0, range), every fourth -1 (not scored) */
  FILL_BYTES,  /* i8 in [0, range): grid codes and zeros */
  FILL_SCALES, /* i16: f16 bits of values in [0.01, 0.1]; f32: those values */
  FILL_FREQ,   /* RoPE's inv_freq: 10000^(-2i / (2n)) */
  FILL_ABS,    /* |uniform in [-1, 1]| (AdamW's second moments) */
  FILL_MASK,   /* f32 0 or 1 (a keep-mask), about one in three 0 */
  FILL_GROUPS, /* i32 g_idx: i / range (the plain groups) */
  FILL_TOPK,   /* i32 rows of distinct ids in [0, range): a teacher's top-k */
} Fill;

typedef struct {
  LpDType dtype;
  int n_dims;
  gint64 shape[3];
  Fill fill;
  gint64 range;
} Operand;

typedef struct {
  const char *path;
  LpCOp op;
  int n_src;
  Operand src[LP_CNODE_MAX_SRC];
  gint64 i[4];
  float f;
  double tol;
  Operand dst; /* given (embed_back: V is a parameter) when n_dims > 0 */
  const float *fv; /* all of f[] when given (AdamW's six) */
} OpCase;

#define F32(...) { LP_DTYPE_F32, 2, { __VA_ARGS__ }, FILL_RANDOM, 0 }
#define VEC(n) { LP_DTYPE_F32, 1, { n }, FILL_RANDOM, 0 }
#define TYPED(t, ...) { t, 2, { __VA_ARGS__ }, FILL_RANDOM, 0 }
#define IDS(n, range) { LP_DTYPE_I32, 1, { n }, FILL_IDS, range }
#define TARGETS(n, range) { LP_DTYPE_I32, 1, { n }, FILL_TARGETS, range }
#define FREQ(n) { LP_DTYPE_F32, 1, { n }, FILL_FREQ, 0 }
#define ABSV(n) { LP_DTYPE_F32, 1, { n }, FILL_ABS, 0 }
#define MASK(n) { LP_DTYPE_F32, 1, { n }, FILL_MASK, 0 }
/* AdamW's lr, beta1, beta2, eps, weight decay, gradient scale. */
static const float adamw_f[8] = { 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f };
#define TOPK(rows, k, range) { LP_DTYPE_I32, 2, { rows, k }, FILL_TOPK, range }
/* An integer grid of 33 rows, 40 columns, groups of 16 (3 a row), 4 bits. */
#define GRID_33x40 { LP_DTYPE_I8, 2, { 33, 40 }, FILL_BYTES, 16 }, { LP_DTYPE_I16, 2, { 33, 3 }, FILL_SCALES, 0 }, \
                   { LP_DTYPE_I8, 2, { 33, 3 }, FILL_BYTES, 16 }, { LP_DTYPE_I32, 1, { 40 }, FILL_IDS, 3 }

/* The same grid trained (fake_quant, dequant_grid): its scales as f32;
 * g_idx arbitrary, or the plain groups of 16. */
#define TRAIN_GRID_33x40 { LP_DTYPE_F32, 2, { 33, 3 }, FILL_SCALES, 0 }, { LP_DTYPE_I8, 2, { 33, 3 }, FILL_BYTES, 16 }, \
                         { LP_DTYPE_I32, 1, { 40 }, FILL_IDS, 3 }
#define TRAIN_GRID_33x40_PLAIN { LP_DTYPE_F32, 2, { 33, 3 }, FILL_SCALES, 0 }, \
                               { LP_DTYPE_I8, 2, { 33, 3 }, FILL_BYTES, 16 }, { LP_DTYPE_I32, 1, { 40 }, FILL_GROUPS, 16 }
#define CODES_33x40 { LP_DTYPE_I8, 2, { 33, 40 }, FILL_BYTES, 16 }

static const OpCase op_cases[] = {
  /* ---- forward ---- */
  { "/vulkan-graph/embed", LP_COP_EMBED, 2, { F32 (50, 24), IDS (7, 50) }, .tol = 0 },
  { "/vulkan-graph/matmul", LP_COP_MATMUL, 2, { F32 (9, 40), F32 (33, 40) }, .tol = 1e-5 },
  /* K not a multiple of 4 (gemm_direct's scalar build), K past 256 (the
   * tiled gemm.comp). */
  { "/vulkan-graph/matmul-k37", LP_COP_MATMUL, 2, { F32 (9, 37), F32 (33, 37) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul-k300", LP_COP_MATMUL, 2, { F32 (70, 300), F32 (65, 300) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul-acc", LP_COP_MATMUL, 3, { F32 (9, 40), F32 (33, 40), F32 (9, 33) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul-f16", LP_COP_MATMUL, 2, { F32 (9, 40), TYPED (LP_DTYPE_F16, 33, 40) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul-bf16", LP_COP_MATMUL, 2, { F32 (9, 40), TYPED (LP_DTYPE_BF16, 33, 40) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul-q8_0", LP_COP_MATMUL, 2, { F32 (9, 64), TYPED (LP_DTYPE_Q8_0, 33, 64) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul-q4_k", LP_COP_MATMUL, 2, { F32 (5, 256), TYPED (LP_DTYPE_Q4_K, 7, 256) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul_grid", LP_COP_MATMUL_GRID, 5, { F32 (9, 40), GRID_33x40 }, { 4, 16 }, .tol = 1e-5 },
  { "/vulkan-graph/rmsnorm", LP_COP_RMSNORM, 2, { F32 (9, 40), VEC (40) }, .f = 1e-5f, .tol = 1e-5 },
  /* Rows past 256: a work group a row. */
  { "/vulkan-graph/rmsnorm-wide", LP_COP_RMSNORM, 2, { F32 (9, 300), VEC (300) }, .f = 1e-5f, .tol = 1e-5 },
  { "/vulkan-graph/rope", LP_COP_ROPE, 2, { F32 (7, 24), FREQ (4) }, { LP_ROPE_NORMAL, 3, 8, 5 }, .tol = 1e-6 },
  { "/vulkan-graph/rope-neox", LP_COP_ROPE, 2, { F32 (7, 24), FREQ (4) }, { LP_ROPE_NEOX, 3, 8, 900 }, .tol = 1e-6 },
  { "/vulkan-graph/attention", LP_COP_ATTENTION, 3, { F32 (6, 32), F32 (10, 16), F32 (10, 16) }, { 4, 2, 8 },
    .tol = 1e-5 },
  /* More rows than one group of attention_rows.comp holds (128), a head of
   * 12; a head of 40, past its 32: attention.comp. */
  { "/vulkan-graph/attention-rows", LP_COP_ATTENTION, 3, { F32 (150, 24), F32 (160, 12), F32 (160, 12) }, { 2, 1, 12 },
    .tol = 1e-5 },
  { "/vulkan-graph/attention-hd40", LP_COP_ATTENTION, 3, { F32 (6, 80), F32 (10, 40), F32 (10, 40) }, { 2, 1, 40 },
    .tol = 1e-5 },
  { "/vulkan-graph/swiglu", LP_COP_SWIGLU, 2, { F32 (9, 40), F32 (9, 40) }, .tol = 1e-6 },
  { "/vulkan-graph/add", LP_COP_ADD, 2, { F32 (9, 40), F32 (9, 40) }, .tol = 0 },
  { "/vulkan-graph/add-bias", LP_COP_ADD, 2, { F32 (9, 40), F32 (1, 40) }, .tol = 0 },
  { "/vulkan-graph/scale", LP_COP_SCALE, 1, { F32 (9, 40) }, .f = 0.37f, .tol = 0 },
  { "/vulkan-graph/set_rows", LP_COP_SET_ROWS, 2, { F32 (3, 16), F32 (12, 16) }, { 4 }, .tol = 0 },
  { "/vulkan-graph/cross_entropy", LP_COP_CROSS_ENTROPY, 2, { F32 (7, 50), TARGETS (7, 50) }, .tol = 1e-5 },
  /* Rows past 1024: a work group a row. */
  { "/vulkan-graph/cross_entropy-wide", LP_COP_CROSS_ENTROPY, 2, { F32 (5, 1500), TARGETS (5, 1500) }, .tol = 1e-5 },
  { "/vulkan-graph/kl", LP_COP_KL, 2, { F32 (7, 50), F32 (7, 50) }, .f = 2.0f, .tol = 1e-5 },
  { "/vulkan-graph/mse", LP_COP_MSE, 2, { F32 (7, 50), F32 (7, 50) }, .tol = 1e-5 },
  /* A teacher's top-k: short rows (an invocation a row), rows past 1024 (a
   * work group a row), and k = V - 1 (the rest one token). */
  { "/vulkan-graph/kl_topk", LP_COP_KL_TOPK, 4, { F32 (7, 50), TOPK (7, 5, 50), F32 (7, 5), VEC (7) }, .f = 2.0f,
    .tol = 1e-5 },
  { "/vulkan-graph/kl_topk-wide", LP_COP_KL_TOPK, 4, { F32 (5, 1500), TOPK (5, 64, 1500), F32 (5, 64), VEC (5) },
    .f = 2.0f, .tol = 1e-5 },
  { "/vulkan-graph/kl_topk-all-but-one", LP_COP_KL_TOPK, 4, { F32 (7, 50), TOPK (7, 49, 50), F32 (7, 49), VEC (7) },
    .f = 0.5f, .tol = 1e-5 },
  /* ---- backward ---- */
  { "/vulkan-graph/embed_back", LP_COP_EMBED_BACK, 2, { F32 (7, 24), IDS (7, 4) }, { 10 }, .tol = 1e-6,
    .dst = F32 (10, 24) },
  { "/vulkan-graph/matmul_back_x", LP_COP_MATMUL_BACK_X, 2, { F32 (9, 33), F32 (33, 40) }, .tol = 1e-5 },
  /* Every dimension a multiple of 4: gemm_direct's VEC4 B_ROWS build. */
  { "/vulkan-graph/matmul_back_x-vec4", LP_COP_MATMUL_BACK_X, 2, { F32 (9, 32), F32 (32, 40) }, .tol = 1e-5 },
  { "/vulkan-graph/matmul_back_x-f16", LP_COP_MATMUL_BACK_X, 2, { F32 (9, 33), TYPED (LP_DTYPE_F16, 33, 40) },
    .tol = 1e-5 },
  { "/vulkan-graph/matmul_back_x-grid", LP_COP_MATMUL_BACK_X, 5, { F32 (9, 33), GRID_33x40 }, { 4, 16 },
    .tol = 1e-5 },
  { "/vulkan-graph/matmul_back_w", LP_COP_MATMUL_BACK_W, 2, { F32 (9, 33), F32 (9, 40) }, .tol = 1e-5 },
  { "/vulkan-graph/rmsnorm_back", LP_COP_RMSNORM_BACK, 3, { F32 (9, 40), F32 (9, 40), VEC (40) }, .f = 1e-5f,
    .tol = 1e-5 },
  { "/vulkan-graph/rmsnorm_back-wide", LP_COP_RMSNORM_BACK, 3, { F32 (9, 300), F32 (9, 300), VEC (300) }, .f = 1e-5f,
    .tol = 1e-5 },
  { "/vulkan-graph/kl_back-wide", LP_COP_KL_BACK, 3, { VEC (5), F32 (5, 1500), F32 (5, 1500) }, .f = 2.0f, .tol = 1e-5 },
  { "/vulkan-graph/rmsnorm_back_w", LP_COP_RMSNORM_BACK_W, 2, { F32 (9, 40), F32 (9, 40) }, .f = 1e-5f,
    .tol = 1e-5 },
  { "/vulkan-graph/rope_back", LP_COP_ROPE_BACK, 2, { F32 (7, 24), FREQ (4) }, { LP_ROPE_NORMAL, 3, 8, 5 },
    .tol = 1e-6 },
  { "/vulkan-graph/attention_back", LP_COP_ATTENTION_BACK, 4, { F32 (6, 32), F32 (6, 32), F32 (10, 16), F32 (10, 16) },
    { 4, 2, 8 }, .tol = 1e-5 },
  { "/vulkan-graph/attention_back-rows", LP_COP_ATTENTION_BACK, 4,
    { F32 (150, 24), F32 (150, 24), F32 (160, 12), F32 (160, 12) }, { 2, 1, 12 }, .tol = 1e-5 },
  { "/vulkan-graph/attention_back-hd40", LP_COP_ATTENTION_BACK, 4,
    { F32 (6, 80), F32 (6, 80), F32 (10, 40), F32 (10, 40) }, { 2, 1, 40 }, .tol = 1e-5 },
  { "/vulkan-graph/swiglu_back", LP_COP_SWIGLU_BACK, 3, { F32 (9, 40), F32 (9, 40), F32 (9, 40) }, .tol = 1e-6 },
  { "/vulkan-graph/row_sum", LP_COP_ROW_SUM, 1, { F32 (9, 40) }, .tol = 1e-6 },
  { "/vulkan-graph/cross_entropy_back", LP_COP_CROSS_ENTROPY_BACK, 3, { VEC (7), F32 (7, 50), TARGETS (7, 50) },
    .tol = 1e-5 },
  { "/vulkan-graph/kl_back", LP_COP_KL_BACK, 3, { VEC (7), F32 (7, 50), F32 (7, 50) }, .f = 2.0f, .tol = 1e-5 },
  { "/vulkan-graph/mse_back", LP_COP_MSE_BACK, 3, { VEC (7), F32 (7, 50), F32 (7, 50) }, .tol = 1e-5 },
  /* ---- the optimizer ---- */
  { "/vulkan-graph/adamw", LP_COP_ADAMW, 4, { VEC (1000), VEC (1000), VEC (1000), ABSV (1000) }, { 3 }, .tol = 1e-6,
    .fv = adamw_f },
  { "/vulkan-graph/adamw-keep", LP_COP_ADAMW, 5, { VEC (1000), VEC (1000), VEC (1000), ABSV (1000), MASK (1000) }, { 1 },
    .tol = 1e-6, .fv = adamw_f },
  /* More elements than one work group's pass covers; a running total. */
  { "/vulkan-graph/sum_sq", LP_COP_SUM_SQ, 1, { VEC (100000) }, .tol = 1e-5 },
  { "/vulkan-graph/sum_sq-acc", LP_COP_SUM_SQ, 2, { VEC (777), ABSV (1) }, .tol = 1e-5 },
  /* ---- training an integer grid: latent weights in [-1, 1] over scales
   * in [0.01, 0.1] and zeros in [0, 16) at 4 bits, so that some codes
   * clamp and some do not ---- */
  { "/vulkan-graph/fake_quant", LP_COP_FAKE_QUANT, 4, { F32 (33, 40), TRAIN_GRID_33x40 }, { 4, 0 }, .tol = 0 },
  { "/vulkan-graph/fake_quant_back", LP_COP_FAKE_QUANT_BACK, 5, { F32 (33, 40), F32 (33, 40), TRAIN_GRID_33x40 },
    { 4, 0 }, .tol = 0 },
  { "/vulkan-graph/dequant_grid", LP_COP_DEQUANT_GRID, 4, { CODES_33x40, TRAIN_GRID_33x40 }, { 4, 0 }, .tol = 0 },
  { "/vulkan-graph/dequant_grid_back", LP_COP_DEQUANT_GRID_BACK, 5, { F32 (33, 40), CODES_33x40, TRAIN_GRID_33x40 },
    { 4, 0 }, .tol = 1e-6 },
  { "/vulkan-graph/dequant_grid_back-plain", LP_COP_DEQUANT_GRID_BACK, 5,
    { F32 (33, 40), CODES_33x40, TRAIN_GRID_33x40_PLAIN }, { 4, 16 }, .tol = 1e-6 },
  { "/vulkan-graph/kl_topk_back", LP_COP_KL_TOPK_BACK, 5, { VEC (7), F32 (7, 50), TOPK (7, 5, 50), F32 (7, 5), VEC (7) },
    .f = 2.0f, .tol = 1e-5 },
  { "/vulkan-graph/kl_topk_back-wide", LP_COP_KL_TOPK_BACK, 5,
    { VEC (5), F32 (5, 1500), TOPK (5, 64, 1500), F32 (5, 64), VEC (5) }, .f = 2.0f, .tol = 1e-5 },
  { "/vulkan-graph/kl_topk_back-all-but-one", LP_COP_KL_TOPK_BACK, 5,
    { VEC (7), F32 (7, 50), TOPK (7, 49, 50), F32 (7, 49), VEC (7) }, .f = 0.5f, .tol = 1e-5 },
};

/* The device under validation, or NULL after g_test_skip with the reason. */
static LpBackend *
open_vulkan (gboolean staging)
{
  if (!lp_test_have_vulkan ())
    return NULL;
  g_autoptr (GError) error = NULL;
  if (staging)
    g_setenv ("LLMPRESS_VULKAN_STAGING", "1", TRUE);
  LpBackend *be = lp_backend_new ("vulkan", &error);
  g_unsetenv ("LLMPRESS_VULKAN_STAGING");
  if (be == NULL && g_error_matches (error, LP_ERROR, LP_ERROR_MISSING))
    {
      g_test_skip (error->message); /* the validation layer is not installed */
      return NULL;
    }
  g_assert_no_error (error);
  g_assert_cmpstr (be->ops->name, ==, "vulkan");
  g_assert_nonnull (be->ops->graph_compute);
  return be;
}

/* The operand's bytes, the same for a seed on every backend. */
static void *
operand_bytes (const Operand *o, guint32 seed, gsize *n_bytes)
{
  gint64 n = 1;
  for (int d = 0; d < o->n_dims; d++)
    n *= o->shape[d];
  guint64 bytes = 0;
  g_assert_true (lp_dtype_row_bytes (o->dtype, (guint64) n, &bytes, NULL));
  *n_bytes = (gsize) bytes;
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  guint8 *out = g_malloc0 (MAX (bytes, 1));
  switch (o->fill)
    {
    case FILL_RANDOM:
      {
        g_autofree float *x = g_new (float, n);
        lp_test_fill (x, (gsize) n, seed, 1.0);
        if (o->dtype == LP_DTYPE_F32)
          memcpy (out, x, bytes);
        else
          g_assert_true (lp_dtype_from_f32 (o->dtype, x, out, (gsize) n, NULL));
        break;
      }
    case FILL_IDS:
    case FILL_TARGETS:
      for (gint64 i = 0; i < n; i++)
        ((gint32 *) out)[i] = o->fill == FILL_TARGETS && i % 4 == 3 ? -1 : g_rand_int_range (r, 0, (gint32) o->range);
      break;
    case FILL_BYTES:
      for (gint64 i = 0; i < n; i++)
        out[i] = (guint8) g_rand_int_range (r, 0, (gint32) o->range);
      break;
    case FILL_SCALES:
      for (gint64 i = 0; i < n; i++)
        {
          guint16 h = lp_f32_to_f16 ((float) g_rand_double_range (r, 0.01, 0.1));
          if (o->dtype == LP_DTYPE_F32)
            ((float *) out)[i] = lp_f16_to_f32 (h);
          else
            ((guint16 *) out)[i] = h;
        }
      break;
    case FILL_GROUPS:
      for (gint64 i = 0; i < n; i++)
        ((gint32 *) out)[i] = (gint32) (i / o->range);
      break;
    case FILL_TOPK:
      {
        /* A partial Fisher-Yates shuffle of 0 .. range - 1 a row. */
        g_autofree gint32 *perm = g_new (gint32, o->range);
        for (gint64 row = 0; row < o->shape[0]; row++)
          {
            for (gint64 v = 0; v < o->range; v++)
              perm[v] = (gint32) v;
            for (gint64 i = 0; i < o->shape[1]; i++)
              {
                gint64 j = g_rand_int_range (r, (gint32) i, (gint32) o->range);
                gint32 t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
                ((gint32 *) out)[row * o->shape[1] + i] = perm[i];
              }
          }
        break;
      }
    case FILL_FREQ:
      for (gint64 i = 0; i < n; i++)
        ((float *) out)[i] = (float) pow (10000.0, -(double) i / (double) n);
      break;
    case FILL_ABS:
      lp_test_fill ((float *) out, (gsize) n, seed, 1.0);
      for (gint64 i = 0; i < n; i++)
        ((float *) out)[i] = fabsf (((float *) out)[i]);
      break;
    case FILL_MASK:
      for (gint64 i = 0; i < n; i++)
        ((float *) out)[i] = g_rand_int_range (r, 0, 3) != 0;
      break;
    }
  return out;
}

static LpCTensor *
operand_new (LpCGraph *g, const Operand *o, guint32 seed)
{
  g_autoptr (GError) error = NULL;
  gsize n_bytes = 0;
  g_autofree void *bytes = operand_bytes (o, seed, &n_bytes);
  LpCTensor *t = lp_cgraph_tensor (g, o->dtype, o->n_dims, o->shape, NULL, &error);
  g_assert_no_error (error);
  lp_ctensor_write (t, 0, bytes, n_bytes);
  return t;
}

/* The case's node in a new graph on `be`, computed; its results read back
 * into res[j] (f32). */
static void
run_case (LpBackend *be, const OpCase *c, float **res, gsize *n_res, int *n_dst)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  LpCTensor *src[LP_CNODE_MAX_SRC] = { NULL };
  for (int i = 0; i < c->n_src; i++)
    src[i] = operand_new (g, &c->src[i], 100 + i);
  LpCTensor *dst = c->dst.n_dims > 0 ? lp_cgraph_tensor (g, LP_DTYPE_F32, c->dst.n_dims, c->dst.shape, NULL, &error)
                                     : NULL;
  g_assert_no_error (error);
  LpCNode *n = lp_cgraph_add (g, c->op, src, c->n_src, dst ? &dst : NULL, dst ? 1 : 0, &error);
  g_assert_no_error (error);
  memcpy (n->i, c->i, sizeof c->i);
  n->f[0] = c->f;
  if (c->fv != NULL)
    memcpy (n->f, c->fv, sizeof n->f);
  /* The device must run it, not hand it to the CPU. */
  if (be->fallback != NULL)
    g_assert_true (be->ops->supports_node (be, n));
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  *n_dst = n->n_dst;
  for (int j = 0; j < n->n_dst; j++)
    {
      n_res[j] = (gsize) lp_ctensor_n_elements (n->dst[j]);
      res[j] = g_new (float, MAX (n_res[j], 1));
      lp_ctensor_read (n->dst[j], 0, res[j], n->dst[j]->n_bytes);
    }
}

static void
test_op (gconstpointer data)
{
  const OpCase *c = data;
  g_autoptr (LpBackend) vk = open_vulkan (FALSE);
  if (vk == NULL)
    return;
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  float *rv[LP_CNODE_MAX_DST] = { NULL }, *rc[LP_CNODE_MAX_DST] = { NULL };
  gsize nv[LP_CNODE_MAX_DST], nc[LP_CNODE_MAX_DST];
  int dv = 0, dc = 0;
  run_case (vk, c, rv, nv, &dv);
  run_case (cpu, c, rc, nc, &dc);
  g_assert_cmpint (dv, ==, dc);
  for (int j = 0; j < dv; j++)
    {
      g_assert_cmpuint (nv[j], ==, nc[j]);
      if (c->tol == 0)
        g_assert_cmpmem (rv[j], nv[j] * sizeof (float), rc[j], nc[j] * sizeof (float));
      else
        lp_test_assert_close (rv[j], rc[j], nv[j], c->tol);
      g_free (rv[j]);
      g_free (rc[j]);
    }
}

/* A block's worth of dependent nodes in one submission, each reading what
 * the one before wrote (and one overwriting what an earlier one read):
 * wrong or missing barriers show as differences from the CPU. */
static float *
run_chain (LpBackend *be, int T, int D, gsize *n_out)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCGraph) g = lp_cgraph_new (be);
  const Operand xo = F32 (T, D), wo = F32 (D, D), no = VEC (D), fo = FREQ (D / 8);
  LpCTensor *x = operand_new (g, &xo, 1), *w = operand_new (g, &wo, 2), *nw = operand_new (g, &no, 3);
  LpCTensor *freq = operand_new (g, &fo, 4);
#define ADD(op, ...) lp_cgraph_add (g, op, (LpCTensor *[]){ __VA_ARGS__ }, \
                                    G_N_ELEMENTS (((LpCTensor *[]){ __VA_ARGS__ })), NULL, 0, &error)
  LpCNode *norm = ADD (LP_COP_RMSNORM, x, nw);
  norm->f[0] = 1e-5f;
  LpCNode *q = ADD (LP_COP_MATMUL, norm->dst[0], w);
  LpCNode *rq = ADD (LP_COP_ROPE, q->dst[0], freq);
  rq->i[0] = LP_ROPE_NORMAL, rq->i[1] = 4, rq->i[2] = D / 4, rq->i[3] = 0;
  LpCNode *att = ADD (LP_COP_ATTENTION, rq->dst[0], rq->dst[0], q->dst[0]);
  att->i[0] = 4, att->i[1] = 4, att->i[2] = D / 4;
  LpCNode *o = ADD (LP_COP_MATMUL, att->dst[0], w, x); /* the residual as the accumulator */
  LpCNode *sw = ADD (LP_COP_SWIGLU, o->dst[0], norm->dst[0]);
  LpCNode *sc = ADD (LP_COP_SCALE, sw->dst[0]);
  sc->f[0] = 0.5f;
  LpCNode *sum = ADD (LP_COP_ADD, sc->dst[0], o->dst[0]);
  /* Overwrite rows of norm's output, read by q and swiglu before. */
  LpCNode *set = lp_cgraph_add (g, LP_COP_SET_ROWS, (LpCTensor *[]){ sum->dst[0], norm->dst[0] }, 2, NULL, 0, &error);
  set->i[0] = 0;
  LpCNode *last = ADD (LP_COP_MATMUL, norm->dst[0], w, sum->dst[0]);
#undef ADD
  g_assert_no_error (error);
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  g_autofree char *where = lp_cgraph_describe (g);
  g_test_message ("chain: %s", where);
  if (be->fallback != NULL)
    g_assert_null (strstr (where, "on the CPU"));
  *n_out = (gsize) T * D;
  float *out = g_new (float, *n_out);
  lp_ctensor_read (last->dst[0], 0, out, *n_out * sizeof (float));
  return out;
}

static void
check_chain (gboolean staging)
{
  g_autoptr (LpBackend) vk = open_vulkan (staging);
  if (vk == NULL)
    return;
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  gsize nv, nc;
  g_autofree float *v = run_chain (vk, 37, 64, &nv), *c = run_chain (cpu, 37, 64, &nc);
  g_assert_cmpuint (nv, ==, nc);
  lp_test_assert_close (v, c, nv, 1e-5);
}

static void
test_chain (void)
{
  check_chain (FALSE);
}

/* Every buffer write and read through the staging buffer and copy
 * commands (the discrete-GPU path), on lavapipe too. */
static void
test_chain_staging (void)
{
  check_chain (TRUE);
}

/* Buffers: partial writes and reads land where they should, and a freed
 * buffer is handed out again for the same size (the pool) rather than
 * allocated anew. */
static void
test_buffers (void)
{
  g_autoptr (LpBackend) vk = open_vulkan (FALSE);
  if (vk == NULL)
    return;
  g_autoptr (GError) error = NULL;
  const gsize n = 1000;
  g_autofree float *x = g_new (float, n), *y = g_new0 (float, n);
  lp_test_fill (x, n, 7, 1);
  gpointer a = vk->ops->buffer_new (vk, n * sizeof (float), &error);
  g_assert_no_error (error);
  vk->ops->buffer_write (vk, a, 0, x, n * sizeof (float));
  vk->ops->buffer_write (vk, a, 40, x + 500, 100 * sizeof (float));
  vk->ops->buffer_read (vk, a, 0, y, n * sizeof (float));
  memcpy (x + 10, x + 500, 100 * sizeof (float));
  g_assert_cmpmem (x, n * sizeof (float), y, n * sizeof (float));
  float part[3];
  vk->ops->buffer_read (vk, a, 8, part, sizeof part);
  g_assert_cmpmem (part, sizeof part, x + 2, sizeof part);
  vk->ops->buffer_free (vk, a);
  gpointer b = vk->ops->buffer_new (vk, n * sizeof (float) - 12, &error);
  g_assert_no_error (error);
  g_assert_true (b == a);
  vk->ops->buffer_free (vk, b);
  /* Zero bytes is a buffer too (an empty tensor). */
  gpointer z = vk->ops->buffer_new (vk, 0, &error);
  g_assert_no_error (error);
  g_assert_nonnull (z);
  vk->ops->buffer_free (vk, z);
}

/* A head dim above the attention shader's 4 x 64. */
#define BIG_HD 264

/* What the device declines goes to the CPU: a head dim above the attention
 * shader's limit, an embedding table it does not decode. */
static void
test_declines (void)
{
  g_autoptr (LpBackend) vk = open_vulkan (FALSE);
  if (vk == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpCGraph) g = lp_cgraph_new (vk);
  const Operand qo = F32 (2, 2 * (BIG_HD)), to = TYPED (LP_DTYPE_F16, 10, 8), io = IDS (3, 10);
  LpCTensor *q = operand_new (g, &qo, 1), *table = operand_new (g, &to, 2), *ids = operand_new (g, &io, 3);
  LpCNode *att = lp_cgraph_add (g, LP_COP_ATTENTION, (LpCTensor *[]){ q, q, q }, 3, NULL, 0, &error);
  att->i[0] = 2, att->i[1] = 2, att->i[2] = BIG_HD;
  g_assert_false (vk->ops->supports_node (vk, att));
  LpCNode *emb = lp_cgraph_add (g, LP_COP_EMBED, (LpCTensor *[]){ table, ids }, 2, NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_false (vk->ops->supports_node (vk, emb));
  g_assert_true (lp_cgraph_compute (g, &error));
  g_assert_no_error (error);
  g_autofree char *where = lp_cgraph_describe (g);
  g_assert_nonnull (strstr (where, "on the CPU: embed, attention"));
}

/* stories260K's perplexity with the forward pass on graphs on the device,
 * every op of it there, against the CPU's. */
static void
test_stories_ppl (void)
{
  g_autofree char *mp = lp_test_shared_path ("models/stories260K/stories260K-f32.gguf");
  g_autofree char *dp = mp ? lp_test_shared_path ("data/tinystories-valid-head.tok512.u16") : NULL;
  if (dp == NULL)
    return;
  g_autoptr (LpBackend) vk = open_vulkan (FALSE);
  if (vk == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (mp, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GArray) toks = lp_tokens_load (dp, m, &error);
  g_assert_no_error (error);
  /* Every op of the forward pass on the device. */
  g_autoptr (LpForward) fw = lp_forward_new (m, vk, &error);
  g_assert_no_error (error);
  g_autofree char *where = lp_forward_describe (fw, &error);
  g_assert_no_error (error);
  g_test_message ("forward: %s", where);
  g_assert_null (strstr (where, "on the CPU"));
  LpEvalOptions o = { .ctx = 512, .max_windows = 4, .backend = vk };
  LpEvalResult rv, rc;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, &rv, &error));
  g_assert_no_error (error);
  o.backend = NULL;
  g_assert_true (lp_eval_run (m, (gint32 *) toks->data, toks->len, &o, &rc, &error));
  g_assert_no_error (error);
  g_test_message ("stories260K, 4 windows: ppl %.6f on %s, %.6f on the CPU", rv.ppl, vk->device_name, rc.ppl);
  g_assert_cmpfloat (fabs (rv.ppl - rc.ppl), <, 1e-3);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* Every run here under the Khronos validation layer, its synchronization
   * checks on: a missing barrier between dependent dispatches is an error
   * even on a device (lavapipe) that happens to run them in order. */
  g_setenv ("LLMPRESS_VULKAN_VALIDATION", "1", TRUE);
  g_setenv ("VK_LAYER_ENABLES", "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT", FALSE);
  for (gsize i = 0; i < G_N_ELEMENTS (op_cases); i++)
    g_test_add_data_func (op_cases[i].path, &op_cases[i], test_op);
  g_test_add_func ("/vulkan-graph/chain", test_chain);
  g_test_add_func ("/vulkan-graph/chain-staging", test_chain_staging);
  g_test_add_func ("/vulkan-graph/buffers", test_buffers);
  g_test_add_func ("/vulkan-graph/declines", test_declines);
  g_test_add_func ("/vulkan-graph/stories260K-ppl", test_stories_ppl);
  return g_test_run ();
}
