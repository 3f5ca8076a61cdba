/* llmpress — the forward ops' kernels: for each op X, lp_cop_X_cpu (the CPU
 * backend's kernel) and lp_cop_X_ref (its plain C definition).
 *
 * A CPU kernel reads and writes its operands' `buf` as host memory: the CPU
 * backend's buffers are host memory, and the graph copies a device's
 * operands to the host before it runs a kernel the device lacks.
 *
 * The matrix kernels here are the CPU backend's too (cpu_backend.c calls
 * lp_cpu_gemm_w, lp_cpu_gemm_grid and lp_cpu_attention), so that the
 * forward pass on graphs computes exactly what the op-by-op backend did.
 * Where a plain loop is already the CPU's best (norms, rotations,
 * element-wise ops, the losses), the CPU kernel is the reference itself. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <cblas.h>

#include "lp-internal.h"

#include "compute-internal.h"
#include "gemv-x86.h"

/* ---- operand access ---- */

static float *
f32 (const LpCTensor *t)
{
  return t->buf;
}

static const gint32 *
i32 (const LpCTensor *t)
{
  return t->buf;
}

/* dst = src when they are different buffers (an op computed in place after). */
static void
copy_into (const LpCTensor *dst, const LpCTensor *src)
{
  if (dst->buf != src->buf)
    memcpy (dst->buf, src->buf, src->n_bytes);
}

/* ---- row-wise kernels on every thread ----
 * Norms, rotations and the gated unit treat each row (element) alone: the
 * CPU kernels run the reference's loop over ranges of rows on every
 * thread (lp_parallel_for), each row computed as the reference computes
 * it, so both give the same bits.  Run on one core, they left the others
 * waiting between the GEMMs. */

/* Rows a range: about 32K values, a few microseconds of work (the
 * thread hand-off costs about that). */
static gint64
row_grain (gint64 cols)
{
  return MAX (1, 32768 / MAX (cols, 1));
}

/* ---- shared CPU kernels (also the CPU backend's ops) ---- */

/* Rows j0 .. j0 + n - 1 of a weight W[N, K] into out[n, K] as f32. */
typedef void (*DecodeRows) (const void *W, int K, int j0, int n, float *out);

/* C = A W^T + beta C with W decoded a block of rows at a time (about 4 MiB
 * of f32), so a large weight is never whole in f32. */
static void
gemm_decoded (int M, int N, int K, const float *A, int lda, DecodeRows decode, const void *W, float beta, float *C,
              int ldc)
{
  int rows = MAX (1, MIN (N, (int) ((4u << 20) / (sizeof (float) * (gsize) MAX (K, 1)))));
  g_autofree float *w = g_new (float, (gsize) rows * K);
  for (int j0 = 0; j0 < N; j0 += rows)
    {
      int nb = MIN (rows, N - j0);
      decode (W, K, j0, nb, w);
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, nb, K, 1.0f, A, lda, w, K, beta, C + j0, ldc);
    }
}

typedef struct {
  LpDType type;
  const void *data;
} TypedRows;

static void
decode_typed_rows (const void *W, int K, int j0, int n, float *out)
{
  const TypedRows *t = W;
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (t->type, (guint64) K, &row_bytes, NULL));
  g_assert (lp_dtype_to_f32 (t->type, (const guint8 *) t->data + (gsize) j0 * row_bytes, out, (gsize) n * K, NULL));
}

void
lp_cpu_gemm_w (int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta, float *C,
               int ldc)
{
  /* A few rows (decoding): W read once as stored, no GEMM set-up. */
  if (lp_cpu_gemv_supports (M, K, wtype))
    {
      lp_cpu_gemv_w (M, N, K, A, lda, wtype, W, beta, C, ldc);
      return;
    }
  if (wtype == LP_DTYPE_F32)
    {
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, W, K, beta, C, ldc);
      return;
    }
  TypedRows t = { wtype, W };
  gemm_decoded (M, N, K, A, lda, decode_typed_rows, &t, beta, C, ldc);
}

static void
decode_grid_rows (const void *W, int K, int j0, int n, float *out)
{
  lp_int_grid_dequantize_rows (W, j0, n, out);
}

void
lp_cpu_gemm_grid (int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C, int ldc)
{
  gemm_decoded (M, N, K, A, lda, decode_grid_rows, W, beta, C, ldc);
}

void
lp_cpu_softmax_causal_row (float *row, int last, int T_kv)
{
  LpExpKernel k = lp_exp_kernel_best ();
  float sum = lp_exp_store_sum (k, row, last + 1, lp_exp_row_max (k, row, last + 1));
  float inv = 1.0f / sum;
  for (int j = 0; j <= last; j++)
    row[j] *= inv;
  for (int j = last + 1; j < T_kv; j++)
    row[j] = 0.0f;
}

/* The two loops of attending with one query: its dot products with the
 * key rows (scores[j] = q . k_j), and the value rows added with weights.
 * Plain C, and AVX2 chosen at run time (decoding runs them for every
 * cached position, head and layer).  The AVX2 loops compute each value
 * with the plain loops' operations in their order (8 keys side by side;
 * 8 elements of the output side by side; mul then add, no FMA: compiled
 * without it), so both give the same bits and decoding the same text. */
typedef struct {
  void (*scores) (const float *q, const float *k, gsize stride, int n_keys, int hd, float scale, float *s);
  void (*axpy) (float *y, float a, const float *x, int n);
} RowOps;

static float
dot_plain (const float *a, const float *b, int n)
{
  float s = 0.0f;
  for (int i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

static void
scores_plain (const float *q, const float *k, gsize stride, int n_keys, int hd, float scale, float *s)
{
  for (int j = 0; j < n_keys; j++)
    s[j] = dot_plain (q, k + (gsize) j * stride, hd) * scale;
}

static void
axpy_plain (float *y, float a, const float *x, int n)
{
  for (int i = 0; i < n; i++)
    y[i] += a * x[i];
}

#ifdef LP_GEMV_X86
#define X86_EXACT __attribute__ ((target ("avx2")))

X86_EXACT static void
scores_x86 (const float *q, const float *k, gsize stride, int n_keys, int hd, float scale, float *s)
{
  int j = 0;
  if (stride * 8 <= G_MAXINT32)
    {
      __m256i idx = _mm256_mullo_epi32 (_mm256_setr_epi32 (0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32 ((int) stride));
      for (; j + 8 <= n_keys; j += 8)
        {
          const float *kj = k + (gsize) j * stride;
          __m256 acc = _mm256_setzero_ps ();
          for (int d = 0; d < hd; d++)
            acc = _mm256_add_ps (acc, _mm256_mul_ps (_mm256_set1_ps (q[d]), _mm256_i32gather_ps (kj + d, idx, 4)));
          _mm256_storeu_ps (s + j, _mm256_mul_ps (acc, _mm256_set1_ps (scale)));
        }
    }
  scores_plain (q, k + (gsize) j * stride, stride, n_keys - j, hd, scale, s + j);
}

X86_EXACT static void
axpy_x86 (float *y, float a, const float *x, int n)
{
  __m256 av = _mm256_set1_ps (a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps (y + i, _mm256_add_ps (_mm256_loadu_ps (y + i), _mm256_mul_ps (av, _mm256_loadu_ps (x + i))));
  axpy_plain (y + i, a, x + i, n - i);
}
#endif

static RowOps
row_ops (void)
{
#ifdef LP_GEMV_X86
  if (lp_cpu_have_avx2 ())
    return (RowOps) { scores_x86, axpy_x86 };
#endif
  return (RowOps) { scores_plain, axpy_plain };
}

/* Attention of a few queries (decoding: T = 1 against the KV cache): each
 * score a dot product, each output row a sum of value rows.  Two GEMMs of
 * one row per head would cost more in BLAS set-up than in arithmetic. */
static void
attention_rows (int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k, const float *v, float *out)
{
  int group = H / Hkv, past = T_kv - T;
  float scale = 1.0f / sqrtf ((float) hd);
  RowOps ops = row_ops ();
  g_autofree float *s = g_new (float, T_kv);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      {
        const float *qr = q + ((gsize) t * H + h) * hd;
        int kh = h / group, last = past + t;
        ops.scores (qr, k + (gsize) kh * hd, (gsize) Hkv * hd, last + 1, hd, scale, s);
        lp_cpu_softmax_causal_row (s, last, last + 1);
        float *o = out + ((gsize) t * H + h) * hd;
        memset (o, 0, sizeof (float) * hd);
        for (int j = 0; j <= last; j++)
          ops.axpy (o, s[j], v + ((gsize) j * Hkv + kh) * hd, hd);
      }
}

/* Softmax of score rows [t0, t1) of one head and block (row t sees keys 0 .. past + t of T_kv). */
typedef struct {
  float *s;
  int past, T_kv;
} SoftmaxRows;

static void
softmax_rows (gint64 t0, gint64 t1, gpointer data)
{
  const SoftmaxRows *j = data;
  for (gint64 t = t0; t < t1; t++)
    lp_cpu_softmax_causal_row (j->s + (gsize) t * j->T_kv, j->past + (int) t, j->T_kv);
}

/* Queries a block in lp_cpu_attention: a block sees the keys up to its
 * last query's only, so the two products skip most of the masked upper
 * triangle (at T = 512, 4 blocks: 5/8 of the full products), while each
 * stays thick enough for BLAS's speed. */
enum { ATTN_QUERY_BLOCK = 128 };

/* Attention as two GEMMs per head and block of queries (scores, then
 * weighted values), so the quadratic part runs at BLAS speed, the softmax
 * rows between them on every thread; a few queries by attention_rows. */
void
lp_cpu_attention (int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k, const float *v, float *out)
{
  if (T <= LP_GEMV_MAX_ROWS)
    {
      attention_rows (T, T_kv, H, Hkv, hd, q, k, v, out);
      return;
    }
  int group = H / Hkv, past = T_kv - T, QB = MIN (T, ATTN_QUERY_BLOCK);
  float scale = 1.0f / sqrtf ((float) hd);
  g_autofree float *s = g_new (float, (gsize) QB * T_kv);
  for (int h = 0; h < H; h++)
    for (int t0 = 0; t0 < T; t0 += QB)
      {
        /* queries t0 .. t1 - 1 against keys 0 .. n_k - 1: s[t1 - t0, n_k] */
        int kh = h / group, t1 = MIN (T, t0 + QB), n_k = past + t1;
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, n_k, hd, scale, q + ((gsize) t0 * H + h) * hd,
                     H * hd, k + (gsize) kh * hd, Hkv * hd, 0.0f, s, n_k);
        lp_parallel_for (t1 - t0, row_grain (n_k), softmax_rows, &(SoftmaxRows){ s, past + t0, n_k });
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hd, n_k, 1.0f, s, n_k, v + (gsize) kh * hd,
                     Hkv * hd, 0.0f, out + ((gsize) t0 * H + h) * hd, H * hd);
      }
}

double
lp_log_sum_exp (const float *logits, int V)
{
  double mx = -INFINITY;
  for (int i = 0; i < V; i++)
    mx = MAX (mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < V; i++)
    sum += exp (logits[i] - mx);
  return mx + log (sum);
}

void
lp_log_softmax (const float *logits, int V, double *out)
{
  double lse = lp_log_sum_exp (logits, V);
  for (int i = 0; i < V; i++)
    out[i] = logits[i] - lse;
}

/* ---- embed: dst[T,D] = table[ids[t], :] ---- */

void
lp_cop_embed_ref (const LpCNode *node)
{
  const LpCTensor *table = node->src[0], *ids = node->src[1];
  gint64 T = lp_ctensor_n_elements (ids), D = lp_ctensor_cols (table), V = lp_ctensor_rows (table);
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (table->dtype, (guint64) D, &row_bytes, NULL));
  for (gint64 t = 0; t < T; t++)
    {
      gint32 id = i32 (ids)[t];
      g_assert (id >= 0 && id < V); /* checked where the ids come in */
      g_assert (lp_dtype_to_f32 (table->dtype, (const guint8 *) table->buf + (gsize) id * row_bytes,
                                 f32 (node->dst[0]) + (gsize) t * D, D, NULL));
    }
}

void
lp_cop_embed_cpu (const LpCNode *node)
{
  lp_cop_embed_ref (node);
}

/* ---- matmul: dst[T,N] = x[T,K] W[N,K]^T (+ acc[T,N]) ---- */

void
lp_cop_matmul_cpu (const LpCNode *node)
{
  const LpCTensor *x = node->src[0], *w = node->src[1], *acc = node->src[2], *y = node->dst[0];
  int M = (int) lp_ctensor_rows (x), K = (int) lp_ctensor_cols (x), N = (int) w->shape[0];
  /* The accumulation is sgemm's beta = 1 onto the addend, as x += a W^T
   * was computed before graphs: the same sums in the same order. */
  if (acc != NULL)
    copy_into (y, acc);
  if (node->i[0] && lp_cpu_gemm_q8_supports (K, w->dtype))
    lp_cpu_gemm_q8 (M, N, K, f32 (x), K, w->dtype, w->buf, acc != NULL ? 1.0f : 0.0f, f32 (y), N);
  else
    lp_cpu_gemm_w (M, N, K, f32 (x), K, w->dtype, w->buf, acc != NULL ? 1.0f : 0.0f, f32 (y), N);
}

void
lp_cop_matmul_ref (const LpCNode *node)
{
  const LpCTensor *x = node->src[0], *w = node->src[1], *acc = node->src[2], *y = node->dst[0];
  int M = (int) lp_ctensor_rows (x), K = (int) lp_ctensor_cols (x), N = (int) w->shape[0];
  if (acc != NULL)
    copy_into (y, acc);
  if (node->i[0] && lp_cpu_gemm_q8_supports (K, w->dtype))
    lp_cpu_gemm_q8_ref (M, N, K, f32 (x), K, w->dtype, w->buf, acc != NULL ? 1.0f : 0.0f, f32 (y), N);
  else
    lp_ref_gemm_w (M, N, K, f32 (x), K, w->dtype, w->buf, acc != NULL ? 1.0f : 0.0f, f32 (y), N);
}

/* ---- matmul_grid: the same with W an integer grid ---- */

LpIntGrid
lp_cop_node_grid (const LpCNode *node)
{
  const LpCTensor *codes = node->src[1], *scales = node->src[2];
  LpIntGrid g = {
    .bits = (int) node->i[0],
    .group_size = (int) node->i[1],
    .rows = codes->shape[0],
    .cols = lp_ctensor_cols (codes),
    .n_groups = (int) lp_ctensor_cols (scales),
    .codes = codes->buf,
    .scales = scales->buf,
    .zeros = node->src[3]->buf,
    .g_idx = node->src[4]->buf,
  };
  return g;
}

void
lp_cop_matmul_grid_cpu (const LpCNode *node)
{
  const LpCTensor *x = node->src[0], *acc = node->src[5], *y = node->dst[0];
  LpIntGrid g = lp_cop_node_grid (node);
  if (acc != NULL)
    copy_into (y, acc);
  int M = (int) lp_ctensor_rows (x), N = (int) g.rows, K = (int) g.cols;
  lp_cpu_gemm_grid (M, N, K, f32 (x), K, &g, acc != NULL ? 1.0f : 0.0f, f32 (y), N);
}

void
lp_cop_matmul_grid_ref (const LpCNode *node)
{
  const LpCTensor *x = node->src[0], *acc = node->src[5], *y = node->dst[0];
  LpIntGrid g = lp_cop_node_grid (node);
  if (acc != NULL)
    copy_into (y, acc);
  int M = (int) lp_ctensor_rows (x), N = (int) g.rows, K = (int) g.cols;
  lp_ref_gemm_grid (M, N, K, f32 (x), K, &g, acc != NULL ? 1.0f : 0.0f, f32 (y), N);
}

/* ---- rmsnorm: dst = x / sqrt (mean (x^2) + eps) * w ---- */

void
lp_cop_rmsnorm_ref (const LpCNode *node)
{
  const LpCTensor *x = node->src[0];
  int T = (int) lp_ctensor_rows (x), D = (int) lp_ctensor_cols (x);
  lp_ref_rmsnorm (T, D, f32 (x), f32 (node->src[1]), node->f[0], f32 (node->dst[0]));
}

static void
rmsnorm_rows (gint64 t0, gint64 t1, gpointer data)
{
  const LpCNode *node = data;
  gsize D = (gsize) lp_ctensor_cols (node->src[0]);
  lp_ref_rmsnorm ((int) (t1 - t0), (int) D, f32 (node->src[0]) + t0 * D, f32 (node->src[1]), node->f[0],
                  f32 (node->dst[0]) + t0 * D);
}

void
lp_cop_rmsnorm_cpu (const LpCNode *node)
{
  const LpCTensor *x = node->src[0];
  lp_parallel_for (lp_ctensor_rows (x), row_grain (lp_ctensor_cols (x)), rmsnorm_rows, (gpointer) node);
}

/* ---- rope: dst = x rotated at positions i[3] .. ---- */

void
lp_cop_rope_ref (const LpCNode *node)
{
  const LpCTensor *x = node->src[0];
  copy_into (node->dst[0], x);
  int T = (int) lp_ctensor_rows (x);
  lp_ref_rope ((LpRopeStyle) node->i[0], T, (int) node->i[1], (int) node->i[2], (int) node->i[3], f32 (node->src[1]),
               f32 (node->dst[0]));
}

/* Rows [t0, t1) of lp_cop_rope_ref: the reference on those rows, from
 * their own first position. */
static void
rope_rows (gint64 t0, gint64 t1, gpointer data)
{
  const LpCNode *node = data;
  const LpCTensor *x = node->src[0];
  gsize cols = (gsize) lp_ctensor_cols (x);
  float *dst = f32 (node->dst[0]) + t0 * cols;
  if (node->dst[0]->buf != x->buf)
    memcpy (dst, f32 (x) + t0 * cols, (gsize) (t1 - t0) * cols * sizeof (float));
  lp_ref_rope ((LpRopeStyle) node->i[0], (int) (t1 - t0), (int) node->i[1], (int) node->i[2], (int) (node->i[3] + t0),
               f32 (node->src[1]), dst);
}

void
lp_cop_rope_cpu (const LpCNode *node)
{
  const LpCTensor *x = node->src[0];
  lp_parallel_for (lp_ctensor_rows (x), row_grain (lp_ctensor_cols (x)), rope_rows, (gpointer) node);
}

/* ---- attention ---- */

void
lp_cop_attention_cpu (const LpCNode *node)
{
  const LpCTensor *q = node->src[0], *k = node->src[1];
  int T = (int) lp_ctensor_rows (q), T_kv = (int) lp_ctensor_rows (k);
  lp_cpu_attention (T, T_kv, (int) node->i[0], (int) node->i[1], (int) node->i[2], f32 (q), f32 (k), f32 (node->src[2]),
                    f32 (node->dst[0]));
}

void
lp_cop_attention_ref (const LpCNode *node)
{
  const LpCTensor *q = node->src[0], *k = node->src[1];
  int T = (int) lp_ctensor_rows (q), T_kv = (int) lp_ctensor_rows (k);
  lp_ref_attention (T, T_kv, (int) node->i[0], (int) node->i[1], (int) node->i[2], f32 (q), f32 (k), f32 (node->src[2]),
                    f32 (node->dst[0]));
}

/* ---- swiglu: dst = silu (gate) * up ----
 * i[0] = 1: with libm's expf (lp_ref_swiglu), the numerics --llama-cpp was
 * validated with; 0: with the vector exp (exp_rows.c), whose plain C
 * kernel is the reference's, to the bit. */

static void
swiglu_elements (const LpCNode *node, LpExpKernel k, gint64 e0, gint64 e1)
{
  const float *gate = f32 (node->src[0]) + e0, *up = f32 (node->src[1]) + e0;
  float *out = f32 (node->dst[0]) + e0;
  if (node->i[0])
    lp_ref_swiglu ((int) (e1 - e0), gate, up, out);
  else
    lp_exp_silu_mul (k, (int) (e1 - e0), gate, up, out);
}

void
lp_cop_swiglu_ref (const LpCNode *node)
{
  swiglu_elements (node, LP_EXP_PLAIN, 0, lp_ctensor_n_elements (node->src[0]));
}

static void
swiglu_range (gint64 e0, gint64 e1, gpointer data)
{
  swiglu_elements (data, lp_exp_kernel_best (), e0, e1);
}

void
lp_cop_swiglu_cpu (const LpCNode *node)
{
  lp_parallel_for (lp_ctensor_n_elements (node->src[0]), row_grain (1), swiglu_range, (gpointer) node);
}

/* ---- add: dst = a + b, b of a's shape or one row broadcast ---- */

void
lp_cop_add_ref (const LpCNode *node)
{
  const LpCTensor *a = node->src[0], *b = node->src[1];
  gint64 n = lp_ctensor_n_elements (a), nb = lp_ctensor_n_elements (b);
  const float *pa = f32 (a), *pb = f32 (b);
  float *y = f32 (node->dst[0]);
  for (gint64 e = 0; e < n; e++)
    y[e] = pa[e] + pb[e % nb];
}

void
lp_cop_add_cpu (const LpCNode *node)
{
  lp_cop_add_ref (node);
}

/* ---- scale: dst = f[0] * x ---- */

void
lp_cop_scale_ref (const LpCNode *node)
{
  gint64 n = lp_ctensor_n_elements (node->src[0]);
  const float *x = f32 (node->src[0]);
  float *y = f32 (node->dst[0]);
  for (gint64 e = 0; e < n; e++)
    y[e] = node->f[0] * x[e];
}

void
lp_cop_scale_cpu (const LpCNode *node)
{
  lp_cop_scale_ref (node);
}

/* ---- set_rows: rows i[0] .. of the cache (dst = src1) = src0 ---- */

void
lp_cop_set_rows_ref (const LpCNode *node)
{
  const LpCTensor *x = node->src[0], *cache = node->dst[0];
  gsize row_bytes = (gsize) lp_ctensor_cols (cache) * sizeof (float);
  memcpy ((guint8 *) cache->buf + (gsize) node->i[0] * row_bytes, x->buf, (gsize) lp_ctensor_rows (x) * row_bytes);
}

void
lp_cop_set_rows_cpu (const LpCNode *node)
{
  lp_cop_set_rows_ref (node);
}

/* ---- cross_entropy: dst[t] = -log softmax (logits[t])[target[t]] ---- */

void
lp_cop_cross_entropy_ref (const LpCNode *node)
{
  const LpCTensor *logits = node->src[0];
  gint64 T = lp_ctensor_rows (logits);
  int V = (int) lp_ctensor_cols (logits);
  g_autofree double *lp = g_new (double, V);
  for (gint64 t = 0; t < T; t++)
    {
      gint32 target = i32 (node->src[1])[t];
      if (target < 0)
        {
          f32 (node->dst[0])[t] = 0.0f;
          continue;
        }
      lp_log_softmax (f32 (logits) + (gsize) t * V, V, lp);
      f32 (node->dst[0])[t] = (float) -lp[target];
    }
}

void
lp_cop_cross_entropy_cpu (const LpCNode *node)
{
  lp_cop_cross_entropy_ref (node);
}

/* ---- kl: dst[t] = tau^2 KL (softmax (teacher/tau) || softmax (student/tau)) ---- */

void
lp_cop_kl_ref (const LpCNode *node)
{
  const LpCTensor *student = node->src[0], *teacher = node->src[1];
  gint64 T = lp_ctensor_rows (student);
  int V = (int) lp_ctensor_cols (student);
  float tau = node->f[0];
  g_autofree float *s = g_new (float, V), *te = g_new (float, V);
  g_autofree double *ls = g_new (double, V), *lt = g_new (double, V);
  for (gint64 t = 0; t < T; t++)
    {
      for (int i = 0; i < V; i++)
        {
          s[i] = f32 (student)[(gsize) t * V + i] / tau;
          te[i] = f32 (teacher)[(gsize) t * V + i] / tau;
        }
      lp_log_softmax (s, V, ls);
      lp_log_softmax (te, V, lt);
      double kl = 0.0;
      for (int i = 0; i < V; i++)
        kl += exp (lt[i]) * (lt[i] - ls[i]);
      f32 (node->dst[0])[t] = (float) ((double) tau * tau * kl);
    }
}

void
lp_cop_kl_cpu (const LpCNode *node)
{
  lp_cop_kl_ref (node);
}

/* ---- kl_topk: dst[t] = tau^2 sum_b p_b (log p_b - log q_b) over the teacher's
 * k ids and the rest bucket ---- */

void
lp_topk_mark (const gint32 *ids, gint64 k, gint64 V, guint8 *mark, guint8 value)
{
  for (gint64 i = 0; i < k; i++)
    if (ids[i] >= 0 && ids[i] < V)
      mark[ids[i]] = value;
}

double
lp_topk_log_rest (const double *log_q, const guint8 *mark, gint64 V)
{
  double mx = -INFINITY, sum = 0.0;
  for (gint64 v = 0; v < V; v++)
    if (!mark[v])
      mx = MAX (mx, log_q[v]);
  if (mx == -INFINITY)
    return -INFINITY;
  for (gint64 v = 0; v < V; v++)
    if (!mark[v])
      sum += exp (log_q[v] - mx);
  return mx + log (sum);
}

/* One bucket's p (log p - log q); 0 when p = 0 (the limit of p log p). */
static double
kl_term (double log_p, double log_q)
{
  return log_p == -INFINITY ? 0.0 : exp (log_p) * (log_p - log_q);
}

void
lp_cop_kl_topk_ref (const LpCNode *node)
{
  const LpCTensor *student = node->src[0];
  gint64 T = lp_ctensor_rows (student), k = lp_ctensor_cols (node->src[1]);
  int V = (int) lp_ctensor_cols (student);
  float tau = node->f[0];
  g_autofree float *s = g_new (float, V);
  g_autofree double *lq = g_new (double, V);
  g_autofree guint8 *mark = g_new0 (guint8, V);
  for (gint64 t = 0; t < T; t++)
    {
      const gint32 *ids = i32 (node->src[1]) + t * k;
      const float *lp = f32 (node->src[2]) + t * k;
      for (int v = 0; v < V; v++)
        s[v] = f32 (student)[(gsize) t * V + v] / tau;
      lp_log_softmax (s, V, lq);
      lp_topk_mark (ids, k, V, mark, 1);
      double kl = kl_term (f32 (node->src[3])[t], lp_topk_log_rest (lq, mark, V));
      for (gint64 i = 0; i < k; i++)
        if (ids[i] >= 0 && ids[i] < V)
          kl += kl_term (lp[i], lq[ids[i]]);
      lp_topk_mark (ids, k, V, mark, 0);
      f32 (node->dst[0])[t] = (float) ((double) tau * tau * kl);
    }
}

/* In float: one pass for the max, one for exp and the sums of all tokens
 * and of the rest (summed directly, not as 1 - the top-k's mass, which
 * cancels when the top-k hold nearly all of it). */
void
lp_cop_kl_topk_cpu (const LpCNode *node)
{
  const LpCTensor *student = node->src[0];
  gint64 T = lp_ctensor_rows (student), V = lp_ctensor_cols (student), k = lp_ctensor_cols (node->src[1]);
  float tau = node->f[0], inv_tau = 1.0f / tau;
  g_autofree guint8 *mark = g_new0 (guint8, V);
  for (gint64 t = 0; t < T; t++)
    {
      const float *z = f32 (student) + t * V;
      const gint32 *ids = i32 (node->src[1]) + t * k;
      const float *lp = f32 (node->src[2]) + t * k;
      float mx = -INFINITY, sum = 0.0f, rest = 0.0f;
      for (gint64 v = 0; v < V; v++)
        mx = MAX (mx, z[v] * inv_tau);
      lp_topk_mark (ids, k, V, mark, 1);
      for (gint64 v = 0; v < V; v++)
        {
          float e = expf (z[v] * inv_tau - mx);
          sum += e;
          rest += mark[v] ? 0.0f : e;
        }
      lp_topk_mark (ids, k, V, mark, 0);
      float lse = mx + logf (sum), lr = f32 (node->src[3])[t];
      float kl = lr == -INFINITY ? 0.0f : expf (lr) * (lr - (logf (rest) - logf (sum)));
      for (gint64 i = 0; i < k; i++)
        if (ids[i] >= 0 && ids[i] < V && lp[i] != -INFINITY)
          kl += expf (lp[i]) * (lp[i] - (z[ids[i]] * inv_tau - lse));
      f32 (node->dst[0])[t] = tau * tau * kl;
    }
}

/* ---- mse: dst[t] = mean over the row of (a - b)^2 ---- */

void
lp_cop_mse_ref (const LpCNode *node)
{
  const LpCTensor *a = node->src[0];
  gint64 T = lp_ctensor_rows (a), n = lp_ctensor_cols (a);
  for (gint64 t = 0; t < T; t++)
    {
      double acc = 0.0;
      for (gint64 i = 0; i < n; i++)
        {
          double d = (double) f32 (a)[t * n + i] - f32 (node->src[1])[t * n + i];
          acc += d * d;
        }
      f32 (node->dst[0])[t] = (float) (acc / n);
    }
}

void
lp_cop_mse_cpu (const LpCNode *node)
{
  lp_cop_mse_ref (node);
}

/* ---- fake_quant and dequant_grid: W [N,K] from a grid's scales and zeros ---- */

/* latent: the latent weights rounded onto the grid, by lp_int_quantize
 * itself, so that the forward computes exactly the values the trained
 * weights are rounded to at the end (form_grid.c); else (code - z) s. */
static void
grid_weights (const LpCNode *node, gboolean latent)
{
  LpCGridArgs a = lp_cgrid_args (node, 0);
  const float *x = a.w;
  const guint8 *codes = a.w;
  float *dst = f32 (node->dst[0]);
  guint8 code;
  for (gint64 n = 0; n < a.N; n++)
    for (gint64 k = 0; k < a.K; k++)
      {
        gint64 e = n * a.K + k, j = n * a.G + a.g_idx[k];
        dst[e] = latent ? lp_int_quantize (a.scales[j], a.zeros[j], a.maxq, x[e], &code)
                        : a.scales[j] * (float) ((int) codes[e] - (int) a.zeros[j]);
      }
}

void
lp_cop_fake_quant_ref (const LpCNode *node)
{
  grid_weights (node, TRUE);
}

void
lp_cop_fake_quant_cpu (const LpCNode *node)
{
  grid_weights (node, TRUE);
}

void
lp_cop_dequant_grid_ref (const LpCNode *node)
{
  grid_weights (node, FALSE);
}

void
lp_cop_dequant_grid_cpu (const LpCNode *node)
{
  grid_weights (node, FALSE);
}
