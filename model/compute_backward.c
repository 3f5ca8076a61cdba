/* llmpress — the compute graph's backward half: each backward op's plain C
 * reference (lp_cop_X_ref, the definition, in double, rounded once to f32)
 * and CPU kernel (lp_cop_X_cpu: OpenBLAS for the products, float loops
 * for the rest), and each forward op's lp_cop_X_backward, which records the nodes
 * computing its operands' gradients (compute.h lists every op's operands).
 *
 * Kernels read and write their tensors' host memory: they run on the CPU
 * backend, where a tensor's buf is its host memory.  A tensor is read as a
 * matrix of rows of its last dimension. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <cblas.h>

#include "lp-internal.h"

#include "compute-internal.h"

/* ---- host memory ---- */

static float *
fdata (const LpCTensor *t)
{
  return t->buf;
}

static const gint32 *
idata (const LpCTensor *t)
{
  return t->buf;
}

/* ---- the weight of matmul_back_x, a few rows at a time ---- */

/* W[N,K] as a matmul reads it: dense (src1 in f32, f16, bf16 or a block
 * type) or the integer grid (src1 .. src4, as matmul_grid takes them). */
typedef struct {
  const LpCTensor *dense; /* NULL for the grid */
  LpIntGrid grid;
  gint64 N, K;
} WeightRows;

static void
weight_rows_init (WeightRows *w, const LpCNode *node)
{
  const LpCTensor *src1 = node->src[1];
  gboolean grid = node->n_src >= 3 && node->src[2] != NULL;
  *w = (WeightRows) { .dense = grid ? NULL : src1, .N = lp_ctensor_rows (src1), .K = lp_ctensor_cols (src1) };
  if (grid)
    w->grid = lp_cop_node_grid (node);
}

/* Rows j0 .. j0 + n - 1 of W into out[n, K] as f32 (lp_int_grid_dequantize_rows
 * and lp_dtype_to_f32 define the weights, as for the forward). */
static void
weight_rows_decode (const WeightRows *w, gint64 j0, gint64 n, float *out)
{
  if (w->dense == NULL)
    {
      lp_int_grid_dequantize_rows (&w->grid, j0, n, out);
      return;
    }
  guint64 row_bytes = 0;
  g_assert (lp_dtype_row_bytes (w->dense->dtype, (guint64) w->K, &row_bytes, NULL));
  g_assert (lp_dtype_to_f32 (w->dense->dtype, (const guint8 *) w->dense->buf + (gsize) j0 * row_bytes, out,
                             (gsize) (n * w->K), NULL));
}

/* ---- embed_back: dst[V,D] = scatter-add of dy[T,D] rows at ids[T] ---- */

void
lp_cop_embed_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]);
  const gint32 *ids = idata (node->src[1]);
  gint64 T = lp_ctensor_rows (node->src[0]), D = lp_ctensor_cols (node->src[0]), V = node->i[0];
  g_autofree double *acc = g_new0 (double, (gsize) (V * D));
  for (gint64 t = 0; t < T; t++)
    if (ids[t] >= 0 && ids[t] < V) /* the forward refused any other id: nothing flowed */
      for (gint64 d = 0; d < D; d++)
        acc[ids[t] * D + d] += dy[t * D + d];
  for (gint64 e = 0; e < V * D; e++)
    fdata (node->dst[0])[e] = (float) acc[e];
}

/* Float sums in token order, straight into the result. */
void
lp_cop_embed_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]);
  const gint32 *ids = idata (node->src[1]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[0]), D = lp_ctensor_cols (node->src[0]), V = node->i[0];
  memset (dst, 0, (gsize) (V * D) * sizeof (float));
  for (gint64 t = 0; t < T; t++)
    if (ids[t] >= 0 && ids[t] < V)
      {
        float *row = dst + (gsize) ids[t] * D;
        for (gint64 d = 0; d < D; d++)
          row[d] += dy[t * D + d];
      }
}

/* ---- matmul_back_x: dst[T,K] = dy[T,N] W[N,K] ---- */

void
lp_cop_matmul_back_x_ref (const LpCNode *node)
{
  WeightRows w;
  weight_rows_init (&w, node);
  const float *dy = fdata (node->src[0]);
  float *dx = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[0]), N = w.N, K = w.K;
  g_autofree float *W = g_new (float, (gsize) (N * K)); /* whole in f32: the definition */
  weight_rows_decode (&w, 0, N, W);
  for (gint64 t = 0; t < T; t++)
    for (gint64 k = 0; k < K; k++)
      {
        double acc = 0.0;
        for (gint64 j = 0; j < N; j++)
          acc += (double) dy[t * N + j] * W[j * K + k];
        dx[t * K + k] = (float) acc;
      }
}

/* f32 weights straight into sgemm; any other form decoded about 4 MiB of
 * rows at a time (as the forward's gemm_w does), each block's rows adding
 * their share dy[:, j0:j0+nb] W[j0:j0+nb, :] into dx. */
void
lp_cop_matmul_back_x_cpu (const LpCNode *node)
{
  WeightRows w;
  weight_rows_init (&w, node);
  const float *dy = fdata (node->src[0]);
  float *dx = fdata (node->dst[0]);
  int T = (int) lp_ctensor_rows (node->src[0]), N = (int) w.N, K = (int) w.K;
  if (w.dense != NULL && w.dense->dtype == LP_DTYPE_F32)
    {
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, N, 1.0f, dy, N, w.dense->buf, K, 0.0f, dx, K);
      return;
    }
  int rows = MAX (1, MIN (N, (int) ((4u << 20) / (sizeof (float) * (gsize) MAX (K, 1)))));
  g_autofree float *wr = g_new (float, (gsize) rows * K);
  for (int j0 = 0; j0 < N; j0 += rows)
    {
      int nb = MIN (rows, N - j0);
      weight_rows_decode (&w, j0, nb, wr);
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, nb, 1.0f, dy + j0, N, wr, K,
                   j0 == 0 ? 0.0f : 1.0f, dx, K);
    }
}

/* ---- matmul_back_w: dst[N,K] = dy[T,N]^T x[T,K] ---- */

void
lp_cop_matmul_back_w_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *x = fdata (node->src[1]);
  float *dw = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[0]), N = lp_ctensor_cols (node->src[0]), K = lp_ctensor_cols (node->src[1]);
  for (gint64 j = 0; j < N; j++)
    for (gint64 k = 0; k < K; k++)
      {
        double acc = 0.0;
        for (gint64 t = 0; t < T; t++)
          acc += (double) dy[t * N + j] * x[t * K + k];
        dw[j * K + k] = (float) acc;
      }
}

void
lp_cop_matmul_back_w_cpu (const LpCNode *node)
{
  int T = (int) lp_ctensor_rows (node->src[0]), N = (int) lp_ctensor_cols (node->src[0]), K = (int) lp_ctensor_cols (node->src[1]);
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, N, K, T, 1.0f, fdata (node->src[0]), N,
               fdata (node->src[1]), K, 0.0f, fdata (node->dst[0]), K);
}

/* ---- rmsnorm_back: y = x r w with r = 1 / sqrt (mean (x^2) + eps) ----
 * dy/dx: dx_i = r w_i dy_i - x_i r^3 / D sum_j w_j dy_j x_j;
 * dy/dw: dw_i = sum_t dy_ti x_ti r_t. */

void
lp_cop_rmsnorm_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *x = fdata (node->src[1]), *w = fdata (node->src[2]);
  float *dx = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), D = lp_ctensor_cols (node->src[1]);
  for (gint64 t = 0; t < T; t++)
    {
      const float *xr = x + t * D, *dyr = dy + t * D;
      double ss = 0.0, dot = 0.0;
      for (gint64 d = 0; d < D; d++)
        {
          ss += (double) xr[d] * xr[d];
          dot += (double) w[d] * dyr[d] * xr[d];
        }
      double r = 1.0 / sqrt (ss / D + node->f[0]);
      double c = r * r * r * dot / D;
      for (gint64 d = 0; d < D; d++)
        dx[t * D + d] = (float) (r * w[d] * dyr[d] - c * xr[d]);
    }
}

/* Float loops the compiler vectorises. */
void
lp_cop_rmsnorm_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *x = fdata (node->src[1]), *w = fdata (node->src[2]);
  float *dx = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), D = lp_ctensor_cols (node->src[1]);
  for (gint64 t = 0; t < T; t++)
    {
      const float *xr = x + t * D, *dyr = dy + t * D;
      float ss = 0.0f, dot = 0.0f;
      for (gint64 d = 0; d < D; d++)
        {
          ss += xr[d] * xr[d];
          dot += w[d] * dyr[d] * xr[d];
        }
      float r = 1.0f / sqrtf (ss / (float) D + node->f[0]);
      float c = r * r * r * dot / (float) D;
      float *dxr = dx + t * D;
      for (gint64 d = 0; d < D; d++)
        dxr[d] = r * w[d] * dyr[d] - c * xr[d];
    }
}

void
lp_cop_rmsnorm_back_w_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *x = fdata (node->src[1]);
  float *dw = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), D = lp_ctensor_cols (node->src[1]);
  g_autofree double *acc = g_new0 (double, D);
  for (gint64 t = 0; t < T; t++)
    {
      const float *xr = x + t * D;
      double ss = 0.0;
      for (gint64 d = 0; d < D; d++)
        ss += (double) xr[d] * xr[d];
      double r = 1.0 / sqrt (ss / D + node->f[0]);
      for (gint64 d = 0; d < D; d++)
        acc[d] += (double) dy[t * D + d] * xr[d] * r;
    }
  for (gint64 d = 0; d < D; d++)
    dw[d] = (float) acc[d];
}

void
lp_cop_rmsnorm_back_w_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *x = fdata (node->src[1]);
  float *dw = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), D = lp_ctensor_cols (node->src[1]);
  memset (dw, 0, (gsize) D * sizeof (float));
  for (gint64 t = 0; t < T; t++)
    {
      const float *xr = x + t * D, *dyr = dy + t * D;
      float ss = 0.0f;
      for (gint64 d = 0; d < D; d++)
        ss += xr[d] * xr[d];
      float r = 1.0f / sqrtf (ss / (float) D + node->f[0]);
      for (gint64 d = 0; d < D; d++)
        dw[d] += dyr[d] * xr[d] * r;
    }
}

/* ---- rope_back: the rotation's transpose, a rotation by minus the angle ---- */

/* The forward's definition (lp_ref_rope) with the frequencies negated:
 * cos is even and sin odd, so that is exactly the transposed rotation. */
void
lp_cop_rope_back_ref (const LpCNode *node)
{
  const LpCTensor *dy = node->src[0];
  int half = (int) node->i[2] / 2;
  g_autofree float *neg = g_new (float, half);
  for (int i = 0; i < half; i++)
    neg[i] = -fdata (node->src[1])[i];
  memcpy (fdata (node->dst[0]), fdata (dy), (gsize) lp_ctensor_n_elements (dy) * sizeof (float));
  lp_ref_rope ((LpRopeStyle) node->i[0], (int) lp_ctensor_rows (dy), (int) node->i[1], (int) node->i[2], (int) node->i[3], neg,
               fdata (node->dst[0]));
}

/* The same numbers, each position's cos and sin computed once for all its
 * heads rather than once a head. */
void
lp_cop_rope_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *inv_freq = fdata (node->src[1]);
  float *dx = fdata (node->dst[0]);
  gboolean normal = node->i[0] == LP_ROPE_NORMAL;
  int n_heads = (int) node->i[1], hd = (int) node->i[2], pos0 = (int) node->i[3], half = hd / 2;
  gint64 T = lp_ctensor_rows (node->src[0]);
  g_autofree float *cs = g_new (float, 2 * (gsize) half);
  for (gint64 t = 0; t < T; t++)
    {
      for (int i = 0; i < half; i++)
        {
          double angle = (double) (pos0 + t) * -inv_freq[i];
          cs[2 * i] = (float) cos (angle);
          cs[2 * i + 1] = (float) sin (angle);
        }
      for (int h = 0; h < n_heads; h++)
        {
          const float *src = dy + (t * n_heads + h) * hd;
          float *v = dx + (t * n_heads + h) * hd;
          for (int i = 0; i < half; i++)
            {
              int a = normal ? 2 * i : i, b = normal ? 2 * i + 1 : i + half;
              float c = cs[2 * i], s = cs[2 * i + 1], x0 = src[a], x1 = src[b];
              v[a] = x0 * c - x1 * s;
              v[b] = x0 * s + x1 * c;
            }
        }
    }
}

/* ---- attention_back ----
 * Per query row t and head h (key/value head kh = h / (H / Hkv)), with
 * p = softmax (q k^T / sqrt (hd)) over the causal keys s <= T_kv - T + t:
 *   dp_s = dy . v_s,  ds_s = p_s (dp_s - sum_s' p_s' dp_s'),
 *   dq = sum_s ds_s k_s / sqrt (hd),  dk_s += ds_s q / sqrt (hd),  dv_s += p_s dy. */

void
lp_cop_attention_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *q = fdata (node->src[1]), *k = fdata (node->src[2]),
              *v = fdata (node->src[3]);
  float *dq = fdata (node->dst[0]), *dk = fdata (node->dst[1]), *dv = fdata (node->dst[2]);
  int H = (int) node->i[0], Hkv = (int) node->i[1], hd = (int) node->i[2], group = H / Hkv;
  gint64 T = lp_ctensor_rows (node->src[1]), T_kv = lp_ctensor_rows (node->src[2]), past = T_kv - T;
  double scale = 1.0 / sqrt ((double) hd);
  gsize n_kv = (gsize) (T_kv * Hkv * hd);
  g_autofree double *p = g_new (double, T_kv), *dp = g_new (double, T_kv);
  g_autofree double *dk_acc = g_new0 (double, n_kv), *dv_acc = g_new0 (double, n_kv);
  for (gint64 t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      {
        const float *qr = q + (t * H + h) * hd, *dyr = dy + (t * H + h) * hd;
        int kh = h / group;
        gint64 last = past + t;
        double mx = -INFINITY, sum = 0.0, dot_p_dp = 0.0;
        for (gint64 s = 0; s <= last; s++)
          {
            const float *kr = k + (s * Hkv + kh) * hd, *vr = v + (s * Hkv + kh) * hd;
            double qk = 0.0, dyv = 0.0;
            for (int d = 0; d < hd; d++)
              {
                qk += (double) qr[d] * kr[d];
                dyv += (double) dyr[d] * vr[d];
              }
            p[s] = qk * scale;
            dp[s] = dyv;
            mx = MAX (mx, p[s]);
          }
        for (gint64 s = 0; s <= last; s++)
          sum += (p[s] = exp (p[s] - mx));
        for (gint64 s = 0; s <= last; s++)
          dot_p_dp += (p[s] /= sum) * dp[s];
        for (int d = 0; d < hd; d++)
          {
            double acc = 0.0;
            for (gint64 s = 0; s <= last; s++)
              acc += p[s] * (dp[s] - dot_p_dp) * k[(s * Hkv + kh) * hd + d];
            dq[(t * H + h) * hd + d] = (float) (acc * scale);
          }
        for (gint64 s = 0; s <= last; s++)
          {
            double ds = p[s] * (dp[s] - dot_p_dp) * scale;
            for (int d = 0; d < hd; d++)
              {
                dk_acc[(s * Hkv + kh) * hd + d] += ds * qr[d];
                dv_acc[(s * Hkv + kh) * hd + d] += p[s] * dyr[d];
              }
          }
      }
  for (gsize e = 0; e < n_kv; e++)
    {
      dk[e] = (float) dk_acc[e];
      dv[e] = (float) dv_acc[e];
    }
}

/* Head by head with five GEMMs, as the forward runs two: the head's
 * probabilities P are recomputed from q and k (the forward kept none), so
 * only two T x T_kv matrices exist at a time, whatever the number of heads
 * or blocks.  dk and dv sum over the query heads sharing a key/value head. */
void
lp_cop_attention_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *q = fdata (node->src[1]), *k = fdata (node->src[2]),
              *v = fdata (node->src[3]);
  float *dq = fdata (node->dst[0]), *dk = fdata (node->dst[1]), *dv = fdata (node->dst[2]);
  int H = (int) node->i[0], Hkv = (int) node->i[1], hd = (int) node->i[2], group = H / Hkv;
  int T = (int) lp_ctensor_rows (node->src[1]), T_kv = (int) lp_ctensor_rows (node->src[2]), past = T_kv - T;
  int ldq = H * hd, ldk = Hkv * hd;
  float scale = 1.0f / sqrtf ((float) hd);
  g_autofree float *P = g_new (float, (gsize) T * T_kv), *dS = g_new (float, (gsize) T * T_kv);
  memset (dk, 0, (gsize) T_kv * ldk * sizeof (float));
  memset (dv, 0, (gsize) T_kv * ldk * sizeof (float));
  for (int h = 0; h < H; h++)
    {
      const float *qh = q + (gsize) h * hd, *dyh = dy + (gsize) h * hd;
      int kh = h / group;
      const float *kk = k + (gsize) kh * hd, *vk = v + (gsize) kh * hd;
      /* P = softmax (scale q k^T), dS = dy v^T (for now dP). */
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, T_kv, hd, scale, qh, ldq, kk, ldk, 0.0f, P, T_kv);
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, T_kv, hd, 1.0f, dyh, ldq, vk, ldk, 0.0f, dS, T_kv);
      for (int t = 0; t < T; t++)
        {
          float *pr = P + (gsize) t * T_kv, *dr = dS + (gsize) t * T_kv;
          int last = past + t;
          lp_cpu_softmax_causal_row (pr, last, T_kv);
          float dot = 0.0f;
          for (int s = 0; s <= last; s++)
            dot += pr[s] * dr[s];
          for (int s = 0; s < T_kv; s++)
            dr[s] = pr[s] * (dr[s] - dot) * scale; /* P is 0 past `last`: so is dS */
        }
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T_kv, 1.0f, dS, T_kv, kk, ldk, 0.0f,
                   dq + (gsize) h * hd, ldq);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, T_kv, hd, T, 1.0f, dS, T_kv, qh, ldq, 1.0f,
                   dk + (gsize) kh * hd, ldk);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, T_kv, hd, T, 1.0f, P, T_kv, dyh, ldq, 1.0f,
                   dv + (gsize) kh * hd, ldk);
    }
}

/* ---- swiglu_back: y = silu (g) u = g sigma (g) u ----
 * dg = dy u sigma (g) (1 + g (1 - sigma (g))), du = dy silu (g). */

void
lp_cop_swiglu_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *gate = fdata (node->src[1]), *up = fdata (node->src[2]);
  float *dg = fdata (node->dst[0]), *du = fdata (node->dst[1]);
  gint64 n = lp_ctensor_n_elements (node->src[1]);
  for (gint64 e = 0; e < n; e++)
    {
      double g = gate[e], sig = 1.0 / (1.0 + exp (-g));
      dg[e] = (float) (dy[e] * up[e] * sig * (1.0 + g * (1.0 - sig)));
      du[e] = (float) (dy[e] * g * sig);
    }
}

void
lp_cop_swiglu_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *gate = fdata (node->src[1]), *up = fdata (node->src[2]);
  float *dg = fdata (node->dst[0]), *du = fdata (node->dst[1]);
  gint64 n = lp_ctensor_n_elements (node->src[1]);
  for (gint64 e = 0; e < n; e++)
    {
      float g = gate[e], sig = 1.0f / (1.0f + expf (-g));
      dg[e] = dy[e] * up[e] * sig * (1.0f + g * (1.0f - sig));
      du[e] = dy[e] * g * sig;
    }
}

/* ---- row_sum: dst[1,n] = sum over the rows of src0[T,n] ---- */

void
lp_cop_row_sum_ref (const LpCNode *node)
{
  const float *x = fdata (node->src[0]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[0]), n = lp_ctensor_cols (node->src[0]);
  for (gint64 j = 0; j < n; j++)
    {
      double acc = 0.0;
      for (gint64 t = 0; t < T; t++)
        acc += x[t * n + j];
      dst[j] = (float) acc;
    }
}

/* Row after row into the sums: contiguous reads. */
void
lp_cop_row_sum_cpu (const LpCNode *node)
{
  const float *x = fdata (node->src[0]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[0]), n = lp_ctensor_cols (node->src[0]);
  memset (dst, 0, (gsize) n * sizeof (float));
  for (gint64 t = 0; t < T; t++)
    for (gint64 j = 0; j < n; j++)
      dst[j] += x[t * n + j];
}

/* ---- fake_quant_back: the clipped straight-through estimator ---- */

/* round (x / s) + z is lp_int_round, the code fake_quant clamped: the
 * gradient passes where it was not clamped and stops where it was.  Only
 * the rounding is treated as the identity (Bengio, Leonard and Courville
 * 2013, the straight-through estimator); where the clamp acted the
 * forward really is flat in x, so 0 is its true derivative, not an
 * estimate.  The mask tests the rounded code, as PyTorch's
 * fake_quantize_per_channel_affine backward does (TensorFlow's
 * FakeQuantWithMinMaxVarsGradient tests the unrounded value against the
 * range, which differs only within half a step of its ends): it is then
 * exactly "the clamp did nothing", the same test the forward made. */
void
lp_cop_fake_quant_back_ref (const LpCNode *node)
{
  LpCGridArgs a = lp_cgrid_args (node, 1);
  const float *dy = fdata (node->src[0]), *x = a.w;
  float *dst = fdata (node->dst[0]);
  for (gint64 n = 0; n < a.N; n++)
    for (gint64 k = 0; k < a.K; k++)
      {
        gint64 e = n * a.K + k, j = n * a.G + a.g_idx[k];
        int c = lp_int_round (a.scales[j], a.zeros[j], x[e]);
        dst[e] = c >= 0 && c <= a.maxq ? dy[e] : 0.0f;
      }
}

void
lp_cop_fake_quant_back_cpu (const LpCNode *node)
{
  lp_cop_fake_quant_back_ref (node);
}

/* ---- dequant_grid_back: dst[N,G] = sum over group g's columns of dy (code - z) ---- */

void
lp_cop_dequant_grid_back_ref (const LpCNode *node)
{
  LpCGridArgs a = lp_cgrid_args (node, 1);
  const float *dy = fdata (node->src[0]);
  const guint8 *codes = a.w;
  float *dst = fdata (node->dst[0]);
  g_autofree double *acc = g_new (double, a.G);
  for (gint64 n = 0; n < a.N; n++)
    {
      memset (acc, 0, (gsize) a.G * sizeof (double));
      for (gint64 k = 0; k < a.K; k++)
        {
          gint64 g = a.g_idx[k];
          acc[g] += (double) dy[n * a.K + k] * ((int) codes[n * a.K + k] - (int) a.zeros[n * a.G + g]);
        }
      for (gint64 g = 0; g < a.G; g++)
        dst[n * a.G + g] = (float) acc[g];
    }
}

/* Float sums, column after column of each row. */
void
lp_cop_dequant_grid_back_cpu (const LpCNode *node)
{
  LpCGridArgs a = lp_cgrid_args (node, 1);
  const float *dy = fdata (node->src[0]);
  const guint8 *codes = a.w;
  float *dst = fdata (node->dst[0]);
  memset (dst, 0, (gsize) (a.N * a.G) * sizeof (float));
  for (gint64 n = 0; n < a.N; n++)
    for (gint64 k = 0; k < a.K; k++)
      {
        gint64 j = n * a.G + a.g_idx[k];
        dst[j] += dy[n * a.K + k] * (float) ((int) codes[n * a.K + k] - (int) a.zeros[j]);
      }
}

/* ---- softmax of one row, max-subtracted (so exp never overflows) ---- */

/* p[V] = softmax (z / tau) in double: z / tau rounded to f32 first, as the
 * forward (lp_cop_kl_ref) computes it, then the forward's lp_log_softmax
 * (max-subtracted).  scaled[V] is scratch. */
static void
softmax_ref (const float *z, int V, float tau, float *scaled, double *p)
{
  for (int j = 0; j < V; j++)
    scaled[j] = z[j] / tau;
  lp_log_softmax (scaled, V, p);
  for (int j = 0; j < V; j++)
    p[j] = exp (p[j]);
}

/* The same in float: exp of values <= 0, sums of terms <= 1. */
static void
softmax_cpu (const float *z, gint64 n, float tau, float *p)
{
  float inv_tau = 1.0f / tau, mx = -INFINITY, sum = 0.0f;
  for (gint64 j = 0; j < n; j++)
    mx = MAX (mx, z[j] * inv_tau);
  for (gint64 j = 0; j < n; j++)
    sum += (p[j] = expf (z[j] * inv_tau - mx));
  float inv = 1.0f / sum;
  for (gint64 j = 0; j < n; j++)
    p[j] *= inv;
}

/* ---- cross_entropy_back: dst[t] = dy[t] (softmax (logits[t]) - onehot (target[t])) ---- */

/* Whether row t is scored: targets < 0 are not.  Ids past the vocabulary
 * are refused where targets come in; should one reach here it gets no
 * gradient rather than a write out of bounds. */
static gboolean
target_scored (gint32 target, gint64 V)
{
  return target >= 0 && target < V;
}

void
lp_cop_cross_entropy_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *logits = fdata (node->src[1]);
  const gint32 *target = idata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]);
  int V = (int) lp_ctensor_cols (node->src[1]);
  g_autofree float *scaled = g_new (float, V);
  g_autofree double *p = g_new (double, V);
  for (gint64 t = 0; t < T; t++)
    {
      float *row = dst + t * V;
      if (!target_scored (target[t], V))
        {
          memset (row, 0, (gsize) V * sizeof (float));
          continue;
        }
      softmax_ref (logits + t * V, V, 1.0f, scaled, p);
      p[target[t]] -= 1.0;
      for (int j = 0; j < V; j++)
        row[j] = (float) (dy[t] * p[j]);
    }
}

void
lp_cop_cross_entropy_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *logits = fdata (node->src[1]);
  const gint32 *target = idata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), V = lp_ctensor_cols (node->src[1]);
  for (gint64 t = 0; t < T; t++)
    {
      float *row = dst + t * V;
      if (!target_scored (target[t], V))
        {
          memset (row, 0, (gsize) V * sizeof (float));
          continue;
        }
      softmax_cpu (logits + t * V, V, 1.0f, row);
      row[target[t]] -= 1.0f;
      for (gint64 j = 0; j < V; j++)
        row[j] *= dy[t];
    }
}

/* ---- kl_back: the loss tau^2 sum p_T (log p_T - log p_S), p = softmax (z / tau),
 * has d/d(student) = tau (p_S - p_T) (the tau^2 and the 1/tau of z / tau). ---- */

void
lp_cop_kl_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *student = fdata (node->src[1]), *teacher = fdata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  float tau = node->f[0];
  gint64 T = lp_ctensor_rows (node->src[1]);
  int V = (int) lp_ctensor_cols (node->src[1]);
  g_autofree float *scaled = g_new (float, V);
  g_autofree double *ps = g_new (double, V), *pt = g_new (double, V);
  for (gint64 t = 0; t < T; t++)
    {
      softmax_ref (student + t * V, V, tau, scaled, ps);
      softmax_ref (teacher + t * V, V, tau, scaled, pt);
      for (int j = 0; j < V; j++)
        dst[t * V + j] = (float) (dy[t] * (double) tau * (ps[j] - pt[j]));
    }
}

void
lp_cop_kl_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *student = fdata (node->src[1]), *teacher = fdata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  float tau = node->f[0];
  gint64 T = lp_ctensor_rows (node->src[1]), V = lp_ctensor_cols (node->src[1]);
  g_autofree float *pt = g_new (float, V);
  for (gint64 t = 0; t < T; t++)
    {
      float *row = dst + t * V, c = dy[t] * tau;
      softmax_cpu (student + t * V, V, tau, row);
      softmax_cpu (teacher + t * V, V, tau, pt);
      for (gint64 j = 0; j < V; j++)
        row[j] = c * (row[j] - pt[j]);
    }
}

/* ---- kl_topk_back: the gradient of kl_topk w.r.t. the student's logits z.
 * With q = softmax (z / tau), P = sum_b p_b over the k + 1 buckets (1 up to
 * rounding), d log q_i / dz_j = (delta_ij - q_j) / tau for a top-k id i and
 * d log q_rest / dz_j = ([j in rest] q_j / q_rest - q_j) / tau, so
 *   dL/dz_j = tau (P q_j - p_j)                  for j one of the ids,
 *   dL/dz_j = tau q_j (P - p_rest / q_rest)      for j in the rest,
 * times dy[t].  q_j / q_rest is taken as exp (log q_j - log q_rest), so a
 * rest mass that underflows in q alone does not divide 0 by 0. ---- */

void
lp_cop_kl_topk_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *student = fdata (node->src[1]), *logp = fdata (node->src[3]);
  const float *rest_logp = fdata (node->src[4]);
  const gint32 *all_ids = idata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  float tau = node->f[0];
  gint64 T = lp_ctensor_rows (node->src[1]), k = lp_ctensor_cols (node->src[2]);
  int V = (int) lp_ctensor_cols (node->src[1]);
  g_autofree float *scaled = g_new (float, V);
  g_autofree double *lq = g_new (double, V), *g = g_new (double, V);
  g_autofree guint8 *mark = g_new0 (guint8, V);
  for (gint64 t = 0; t < T; t++)
    {
      const gint32 *ids = all_ids + t * k;
      const float *lp = logp + t * k;
      for (int j = 0; j < V; j++)
        scaled[j] = student[t * V + j] / tau;
      lp_log_softmax (scaled, V, lq);
      lp_topk_mark (ids, k, V, mark, 1);
      double l_rest = lp_topk_log_rest (lq, mark, V), p_rest = exp (rest_logp[t]), P = p_rest;
      for (gint64 i = 0; i < k; i++)
        if (ids[i] >= 0 && ids[i] < V)
          P += exp (lp[i]);
      for (int j = 0; j < V; j++)
        {
          double q = exp (lq[j]);
          g[j] = P * q - (mark[j] || p_rest == 0.0 ? 0.0 : p_rest * exp (lq[j] - l_rest));
        }
      for (gint64 i = 0; i < k; i++)
        if (ids[i] >= 0 && ids[i] < V)
          g[ids[i]] -= exp (lp[i]);
      lp_topk_mark (ids, k, V, mark, 0);
      for (int j = 0; j < V; j++)
        dst[t * V + j] = (float) (dy[t] * (double) tau * g[j]);
    }
}

/* In float: the row's exp (z / tau - max) written into dst, its sums over
 * all tokens and over the rest, then each entry scaled in place. */
void
lp_cop_kl_topk_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *student = fdata (node->src[1]), *logp = fdata (node->src[3]);
  const float *rest_logp = fdata (node->src[4]);
  const gint32 *all_ids = idata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  float tau = node->f[0], inv_tau = 1.0f / tau;
  gint64 T = lp_ctensor_rows (node->src[1]), V = lp_ctensor_cols (node->src[1]), k = lp_ctensor_cols (node->src[2]);
  g_autofree guint8 *mark = g_new0 (guint8, V);
  for (gint64 t = 0; t < T; t++)
    {
      const float *z = student + t * V;
      const gint32 *ids = all_ids + t * k;
      const float *lp = logp + t * k;
      float *row = dst + t * V, mx = -INFINITY, sum = 0.0f, rest = 0.0f;
      for (gint64 j = 0; j < V; j++)
        mx = MAX (mx, z[j] * inv_tau);
      lp_topk_mark (ids, k, V, mark, 1);
      for (gint64 j = 0; j < V; j++)
        {
          row[j] = expf (z[j] * inv_tau - mx);
          sum += row[j];
          rest += mark[j] ? 0.0f : row[j];
        }
      float p_rest = expf (rest_logp[t]), P = p_rest, c = dy[t] * tau;
      for (gint64 i = 0; i < k; i++)
        if (ids[i] >= 0 && ids[i] < V)
          P += expf (lp[i]);
      /* Every entry as a rest token's, then the ids' put right. */
      float a = c * P / sum, b = rest > 0.0f ? c * p_rest / rest : 0.0f;
      for (gint64 j = 0; j < V; j++)
        row[j] *= mark[j] ? a : a - b;
      for (gint64 i = 0; i < k; i++)
        if (ids[i] >= 0 && ids[i] < V)
          row[ids[i]] -= c * expf (lp[i]);
      lp_topk_mark (ids, k, V, mark, 0);
    }
}

/* ---- mse_back: dst[T,n] = dy[t] 2 (a - b) / n (the gradient w.r.t. a) ---- */

void
lp_cop_mse_back_ref (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *a = fdata (node->src[1]), *b = fdata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), n = lp_ctensor_cols (node->src[1]);
  for (gint64 t = 0; t < T; t++)
    for (gint64 j = 0; j < n; j++)
      dst[t * n + j] = (float) (2.0 * dy[t] * ((double) a[t * n + j] - b[t * n + j]) / n);
}

void
lp_cop_mse_back_cpu (const LpCNode *node)
{
  const float *dy = fdata (node->src[0]), *a = fdata (node->src[1]), *b = fdata (node->src[2]);
  float *dst = fdata (node->dst[0]);
  gint64 T = lp_ctensor_rows (node->src[1]), n = lp_ctensor_cols (node->src[1]);
  for (gint64 t = 0; t < T; t++)
    {
      float c = 2.0f * dy[t] / (float) n;
      for (gint64 j = 0; j < n; j++)
        dst[t * n + j] = c * (a[t * n + j] - b[t * n + j]);
    }
}

/* ---- recording the backward nodes ---- */

/* A graph-owned f32 gradient shaped like t, named "d<name>". */
static LpCTensor *
grad_like (LpCGraph *g, const LpCTensor *t, GError **error)
{
  g_autofree char *name = t->name ? g_strconcat ("d", t->name, NULL) : NULL;
  return lp_cgraph_tensor (g, LP_DTYPE_F32, t->n_dims, t->shape, name, error);
}

/* Append `op` over src[n_src] with n_dst results shaped like like[] (new
 * gradients, returned in out[]) and the forward node's parameters. */
static LpCNode *
record (LpCGraph *g, LpCOp op, const LpCNode *fwd, LpCTensor *const *src, int n_src, const LpCTensor *const *like,
        int n_dst, LpCTensor **out, GError **error)
{
  for (int j = 0; j < n_dst; j++)
    if ((out[j] = grad_like (g, like[j], error)) == NULL)
      return NULL;
  LpCNode *n = lp_cgraph_add (g, op, src, n_src, out, n_dst, error);
  if (n == NULL)
    return NULL;
  memcpy (n->i, fwd->i, sizeof n->i);
  memcpy (n->f, fwd->f, sizeof n->f);
  return n;
}

/* One result shaped like `like`, or NULL. */
static LpCTensor *
record1 (LpCGraph *g, LpCOp op, const LpCNode *fwd, LpCTensor *const *src, int n_src, const LpCTensor *like,
         GError **error)
{
  LpCTensor *out = NULL;
  return record (g, op, fwd, src, n_src, &like, 1, &out, error) ? out : NULL;
}

/* A graph-owned tensor holding `data` (written now, at recording time). */
static LpCTensor *
constant (LpCGraph *g, LpDType dtype, int n_dims, const gint64 *shape, const void *data, gsize n_bytes,
          GError **error)
{
  LpCTensor *t = lp_cgraph_tensor (g, dtype, n_dims, shape, NULL, error);
  if (t != NULL)
    lp_ctensor_write (t, 0, data, n_bytes);
  return t;
}

/* Every backward below starts so: no gradient flows in (dy NULL), none out. */
#define NO_DY_NO_GRADIENT(dy) \
  G_STMT_START { if ((dy) == NULL) return TRUE; } G_STMT_END

/* The table: dsrc[0] = embed_back (dy, ids).  ids get none. */
gboolean
lp_cop_embed_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                       LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[0])
    return TRUE;
  LpCTensor *src[2] = { dy[0], node->src[1] };
  LpCTensor *out = NULL;
  const LpCTensor *like = node->src[0];
  LpCNode *n = record (g, LP_COP_EMBED_BACK, node, src, 2, &like, 1, &out, error);
  if (n == NULL)
    return FALSE;
  n->i[0] = node->src[0]->shape[0];
  dsrc[0] = out;
  return TRUE;
}

/* dx = dy W (W as the forward read it: src1, or the grid's src1..src4),
 * dW = dy^T x for a dense weight, and the added term's gradient is dy. */
static gboolean
matmul_backward (LpCGraph *g, const LpCNode *node, LpCTensor *dy, const gboolean *need, LpCTensor **dsrc,
                 int n_weight_src, int acc, GError **error)
{
  if (need[0])
    {
      LpCTensor *src[5] = { dy };
      for (int s = 1; s <= n_weight_src; s++)
        src[s] = node->src[s];
      if ((dsrc[0] = record1 (g, LP_COP_MATMUL_BACK_X, node, src, 1 + n_weight_src, node->src[0], error)) == NULL)
        return FALSE;
    }
  if (n_weight_src == 1 && need[1])
    {
      LpCTensor *src[2] = { dy, node->src[0] };
      if ((dsrc[1] = record1 (g, LP_COP_MATMUL_BACK_W, node, src, 2, node->src[1], error)) == NULL)
        return FALSE;
    }
  if (node->src[acc] != NULL && need[acc])
    dsrc[acc] = dy; /* d(x W^T + acc)/d(acc) is the identity */
  return TRUE;
}

gboolean
lp_cop_matmul_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                        LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  return matmul_backward (g, node, dy[0], need, dsrc, 1, 2, error);
}

/* Only dx: the codes, scales, zeros and g_idx are integers here.  A grid's
 * own parameters (scales and zeros, or latent weights through a
 * straight-through estimator) train through its weight form, which
 * records their gradients from dW = dy^T x (model/forms). */
gboolean
lp_cop_matmul_grid_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                             LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  return matmul_backward (g, node, dy[0], need, dsrc, 4, 5, error);
}

gboolean
lp_cop_rmsnorm_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                         LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (need[0])
    {
      LpCTensor *src[3] = { dy[0], node->src[0], node->src[1] };
      if ((dsrc[0] = record1 (g, LP_COP_RMSNORM_BACK, node, src, 3, node->src[0], error)) == NULL)
        return FALSE;
    }
  if (need[1])
    {
      LpCTensor *src[2] = { dy[0], node->src[0] };
      if ((dsrc[1] = record1 (g, LP_COP_RMSNORM_BACK_W, node, src, 2, node->src[1], error)) == NULL)
        return FALSE;
    }
  return TRUE;
}

/* The frequencies are constants of the architecture: no gradient. */
gboolean
lp_cop_rope_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[0])
    return TRUE;
  LpCTensor *src[2] = { dy[0], node->src[1] };
  return (dsrc[0] = record1 (g, LP_COP_ROPE_BACK, node, src, 2, node->src[0], error)) != NULL;
}

/* One node gives dq, dk and dv together (they share the probabilities);
 * the ones not needed are left unused. */
gboolean
lp_cop_attention_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                           LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[0] && !need[1] && !need[2])
    return TRUE;
  LpCTensor *src[4] = { dy[0], node->src[0], node->src[1], node->src[2] };
  const LpCTensor *like[3] = { node->src[0], node->src[1], node->src[2] };
  LpCTensor *out[3] = { NULL };
  if (record (g, LP_COP_ATTENTION_BACK, node, src, 4, like, 3, out, error) == NULL)
    return FALSE;
  for (int j = 0; j < 3; j++)
    if (need[j])
      dsrc[j] = out[j];
  return TRUE;
}

gboolean
lp_cop_swiglu_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                        LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[0] && !need[1])
    return TRUE;
  LpCTensor *src[3] = { dy[0], node->src[0], node->src[1] };
  const LpCTensor *like[2] = { node->src[0], node->src[1] };
  LpCTensor *out[2] = { NULL };
  if (record (g, LP_COP_SWIGLU_BACK, node, src, 3, like, 2, out, error) == NULL)
    return FALSE;
  for (int j = 0; j < 2; j++)
    if (need[j])
      dsrc[j] = out[j];
  return TRUE;
}

/* dy for both terms; a bias broadcast over the rows gets dy's row sum. */
gboolean
lp_cop_add_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                     LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (need[0])
    dsrc[0] = dy[0];
  if (need[1])
    {
      if (lp_ctensor_n_elements (node->src[1]) == lp_ctensor_n_elements (node->src[0]))
        dsrc[1] = dy[0];
      else if ((dsrc[1] = record1 (g, LP_COP_ROW_SUM, node, &dy[0], 1, node->src[1], error)) == NULL)
        return FALSE;
    }
  return TRUE;
}

gboolean
lp_cop_scale_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                       LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[0])
    return TRUE;
  return (dsrc[0] = record1 (g, LP_COP_SCALE, node, &dy[0], 1, node->src[0], error)) != NULL;
}

/* dst (= src1, a cache) took src0[T,n] at rows i[0] .. i[0] + T - 1.  The
 * rows' gradient is read back from the destination's gradient (an embed
 * lookup of those rows); the rest of the cache keeps its gradient, the
 * overwritten rows' old contents get none (a copy of dy with zeros
 * written over those rows). */
gboolean
lp_cop_set_rows_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                          LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  gint64 T = lp_ctensor_rows (node->src[0]), n = lp_ctensor_cols (node->src[0]);
  if (need[0])
    {
      g_autofree gint32 *rows = g_new (gint32, T);
      for (gint64 t = 0; t < T; t++)
        rows[t] = (gint32) (node->i[0] + t);
      LpCTensor *src[2] = { dy[0], constant (g, LP_DTYPE_I32, 1, &T, rows, (gsize) T * sizeof (gint32), error) };
      if (src[1] == NULL
          || (dsrc[0] = record1 (g, LP_COP_EMBED, node, src, 2, node->src[0], error)) == NULL)
        return FALSE;
    }
  if (need[1])
    {
      /* A copy of dy (scale by 1: record copies f[] from the node given). */
      const LpCNode by_one = { .op = LP_COP_SCALE, .f = { 1.0f } };
      LpCTensor *copy = record1 (g, LP_COP_SCALE, &by_one, &dy[0], 1, node->src[1], error);
      if (copy == NULL)
        return FALSE;
      g_autofree float *zeros = g_new0 (float, (gsize) (T * n));
      gint64 shape[2] = { T, n };
      LpCTensor *src[2] = { constant (g, LP_DTYPE_F32, 2, shape, zeros, (gsize) (T * n) * sizeof (float), error),
                            copy };
      if (src[0] == NULL)
        return FALSE;
      LpCNode *set = lp_cgraph_add (g, LP_COP_SET_ROWS, src, 2, &copy, 1, error);
      if (set == NULL)
        return FALSE;
      set->i[0] = node->i[0];
      dsrc[1] = copy;
    }
  return TRUE;
}

/* The logits' gradient; targets get none. */
gboolean
lp_cop_cross_entropy_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                               LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[0])
    return TRUE;
  LpCTensor *src[3] = { dy[0], node->src[0], node->src[1] };
  return (dsrc[0] = record1 (g, LP_COP_CROSS_ENTROPY_BACK, node, src, 3, node->src[0], error)) != NULL;
}

/* The student's gradient.  The teacher is a target: distillation never
 * trains it, and kl_back does not define its gradient, so asking for it is
 * an error rather than a silent zero. */
gboolean
lp_cop_kl_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                    LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (need[1])
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "op kl: no gradient for the teacher (%s): it is a target",
                    node->src[1]->name ? node->src[1]->name : "src1");
      return FALSE;
    }
  if (!need[0])
    return TRUE;
  LpCTensor *src[3] = { dy[0], node->src[0], node->src[1] };
  return (dsrc[0] = record1 (g, LP_COP_KL_BACK, node, src, 3, node->src[0], error)) != NULL;
}

/* The student's gradient; the teacher's top-k (ids, log-probabilities, the
 * rest) is a target, as for kl. */
gboolean
lp_cop_kl_topk_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                         LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  for (int i = 1; i < 4; i++)
    if (need[i])
      {
        lp_set_error (error, LP_ERROR_UNSUPPORTED, "op kl_topk: no gradient for the teacher (%s): it is a target",
                      node->src[i]->name ? node->src[i]->name : "its top-k");
        return FALSE;
      }
  if (!need[0])
    return TRUE;
  LpCTensor *src[5] = { dy[0], node->src[0], node->src[1], node->src[2], node->src[3] };
  return (dsrc[0] = record1 (g, LP_COP_KL_TOPK_BACK, node, src, 5, node->src[0], error)) != NULL;
}

/* (a - b)^2 is symmetric: b's gradient is mse_back with the two swapped. */
gboolean
lp_cop_mse_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                     LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  for (int j = 0; j < 2; j++)
    if (need[j])
      {
        LpCTensor *src[3] = { dy[0], node->src[j], node->src[1 - j] };
        if ((dsrc[j] = record1 (g, LP_COP_MSE_BACK, node, src, 3, node->src[j], error)) == NULL)
          return FALSE;
      }
  return TRUE;
}

/* The latent weights' gradient through the straight-through estimator.
 * The grid's scales are constants here (a grid trains its latent values
 * or its scales, never both); asking for theirs is an error. */
gboolean
lp_cop_fake_quant_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                            LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (need[1])
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "op fake_quant: no gradient for the scales (%s): train them with dequant_grid",
                    node->src[1]->name ? node->src[1]->name : "src1");
      return FALSE;
    }
  if (!need[0])
    return TRUE;
  LpCTensor *src[5] = { dy[0], node->src[0], node->src[1], node->src[2], node->src[3] };
  return (dsrc[0] = record1 (g, LP_COP_FAKE_QUANT_BACK, node, src, 5, node->src[0], error)) != NULL;
}

/* The scales' gradient; the codes, zeros and g_idx are integers. */
gboolean
lp_cop_dequant_grid_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                              LpCTensor **dsrc, GError **error)
{
  NO_DY_NO_GRADIENT (dy[0]);
  if (!need[1])
    return TRUE;
  LpCTensor *src[5] = { dy[0], node->src[0], node->src[1], node->src[2], node->src[3] };
  return (dsrc[1] = record1 (g, LP_COP_DEQUANT_GRID_BACK, node, src, 5, node->src[1], error)) != NULL;
}
