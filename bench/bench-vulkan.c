/* make bench: the Vulkan backend beside the CPU backend, same shapes, same run.
 *  1. GEMM GFLOP/s: a square product (n^3) and a weight product
 *     (T x D times D x D^T, the forward pass's shape), f32 weights, f16
 *     weights (gemm_w: read as f16 on a device with the float16 fast path,
 *     else dequantized on the device) and q4_k weights (dequantized on the
 *     device), and the same shape in int8 (gemm_i8, W8A8: int8 activations
 *     and weights, exact int32 sums) as GOP/s (integer dot product on a
 *     device with that fast path).
 *  2. Hessian accumulation H += X^T X (T tokens, n inputs) as GFLOP/s of
 *     the 2 T n^2 the device computes (the CPU's ssyrk computes half).
 *  3. Group-wise RTN (quantize_groups, int4 groups of 128) as GB/s of f32
 *     weights read, with and without the clip search (81 ranges a group).
 *  4. A whole model's forward and forward+backward tokens/s (bench-model.c).
 * The device: argv[1] ("vulkan", "vulkan:N"), else LLMPRESS_DEVICE, else the
 * first usable Vulkan device.  On a CPU device (lavapipe) the shapes are
 * scaled down 4x unless LLMPRESS_BENCH_FULL=1: it is a correctness device.
 * Figures include host<->device transfers.  Never fails on time; prints why
 * the Vulkan figures are missing when there is no device. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"

typedef enum { OP_GEMM, OP_GEMM_F16, OP_GEMM_Q4_K, OP_GEMM_I8, OP_SYRK } BenchOp;

typedef struct {
  int M, N, K;
  float *A, *B, *C;
  guint16 *B16;
  guint8 *Bq; /* B as q4_k, only for OP_GEMM_Q4_K */
  gint8 *A8, *B8;  /* A and B as int8 */
  float *sa, *sb;  /* their per-row scales */
} Operands;

static void
run_once (LpBackend *be, BenchOp op, Operands *o)
{
  switch (op)
    {
    case OP_GEMM:
      lp_gemm (be, TRUE, o->M, o->N, o->K, 1.0f, o->A, o->K, o->B, o->K, 0.0f, o->C, o->N);
      break;
    case OP_GEMM_F16:
      lp_gemm_w (be, o->M, o->N, o->K, o->A, o->K, LP_DTYPE_F16, o->B16, 0.0f, o->C, o->N);
      break;
    case OP_GEMM_Q4_K:
      lp_gemm_w (be, o->M, o->N, o->K, o->A, o->K, LP_DTYPE_Q4_K, o->Bq, 0.0f, o->C, o->N);
      break;
    case OP_GEMM_I8:
      lp_gemm_i8 (be, o->M, o->N, o->K, o->A8, o->K, o->sa, o->B8, o->K, o->sb, 0.0f, o->C, o->N);
      break;
    case OP_SYRK:
      /* X[T=M, n=K], H[n, n] */
      lp_syrk (be, o->M, o->K, o->A, o->K, o->C);
      break;
    }
}

/* Median GFLOP/s (int8: GOP/s) of `reps` runs after one warm-up (pipelines compiled,
 * buffers allocated). */
static double
gflops (LpBackend *be, BenchOp op, Operands *o, int reps)
{
  double t[8];
  run_once (be, op, o);
  for (int r = 0; r < reps; r++)
    {
      double t0 = now ();
      run_once (be, op, o);
      t[r] = now () - t0;
    }
  double flops = op == OP_SYRK ? 2.0 * o->M * (double) o->K * o->K : 2.0 * o->M * (double) o->N * o->K;
  return flops / median (t, reps) / 1e9;
}

static Operands *
operands_new (BenchOp op, int M, int N, int K)
{
  Operands *o = g_new0 (Operands, 1);
  o->M = M, o->N = N, o->K = K;
  gsize c = MAX ((gsize) M * N, (gsize) K * K);
  o->A = g_new (float, (gsize) M * K);
  o->B = g_new (float, (gsize) N * K);
  o->B16 = g_new (guint16, (gsize) N * K);
  o->C = g_new0 (float, c);
  for (gsize i = 0; i < (gsize) M * K; i++)
    o->A[i] = (float) ((i * 7) % 13) * 0.01f;
  for (gsize i = 0; i < (gsize) N * K; i++)
    o->B[i] = (float) ((i * 5) % 11) * 0.01f;
  lp_dtype_from_f32 (LP_DTYPE_F16, o->B, o->B16, (gsize) N * K, NULL);
  guint64 q_bytes;
  if (op == OP_GEMM_Q4_K && lp_dtype_row_bytes (LP_DTYPE_Q4_K, (guint64) N * K, &q_bytes, NULL))
    {
      /* Quantizing takes seconds at full size: only where it is measured. */
      o->Bq = g_malloc (q_bytes);
      lp_dtype_from_f32 (LP_DTYPE_Q4_K, o->B, o->Bq, (gsize) N * K, NULL);
    }
  o->A8 = g_new (gint8, (gsize) M * K);
  o->B8 = g_new (gint8, (gsize) N * K);
  for (gsize i = 0; i < (gsize) M * K; i++)
    o->A8[i] = (gint8) ((i * 7) % 255 - 127);
  for (gsize i = 0; i < (gsize) N * K; i++)
    o->B8[i] = (gint8) ((i * 5) % 255 - 127);
  o->sa = g_new (float, M);
  o->sb = g_new (float, N);
  for (int i = 0; i < M; i++)
    o->sa[i] = 0.01f;
  for (int j = 0; j < N; j++)
    o->sb[j] = 0.02f;
  return o;
}

static void
operands_free (Operands *o)
{
  g_free (o->A);
  g_free (o->B);
  g_free (o->B16);
  g_free (o->Bq);
  g_free (o->A8);
  g_free (o->B8);
  g_free (o->sa);
  g_free (o->sb);
  g_free (o->C);
  g_free (o);
}

/* Median GB/s of f32 weights W[R, C] through quantize_groups, as gflops(). */
static double
rtn_gbps (LpBackend *be, int R, int C, gboolean clip_search, int reps)
{
  gsize n = (gsize) R * C;
  g_autofree float *W = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    W[i] = (float) ((i * 7) % 13) * 0.01f - 0.06f;
  g_autofree guint8 *codes = g_new (guint8, n), *zeros = g_new (guint8, n / 128 + R);
  g_autofree guint16 *scales = g_new (guint16, n / 128 + R);
  LpGroupQuant q = { 4, 128, FALSE, clip_search };
  double t[8];
  lp_quantize_groups (be, R, C, W, C, NULL, &q, codes, scales, zeros);
  for (int r = 0; r < reps; r++)
    {
      double t0 = now ();
      lp_quantize_groups (be, R, C, W, C, NULL, &q, codes, scales, zeros);
      t[r] = now () - t0;
    }
  return n * sizeof (float) / median (t, reps) / 1e9;
}

int
main (int argc, char **argv)
{
  const char *name = argc > 1 ? argv[1] : g_getenv ("LLMPRESS_DEVICE");
  if (name == NULL || !g_str_has_prefix (name, "vulkan"))
    name = "vulkan";
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  g_autoptr (LpBackend) vk = lp_backend_new (name, &error);
  printf ("CPU:    %s\n", cpu->device_name);
  if (vk == NULL)
    printf ("Vulkan: no figures: %s\n", error->message);
  else
    printf ("Vulkan: %s\n", vk->device_name);

  gboolean small = FALSE;
  if (vk != NULL)
    {
      g_autoptr (GPtrArray) devices = lp_backend_list_devices ("vulkan", NULL);
      for (guint i = 0; devices && i < devices->len; i++)
        {
          const LpDeviceInfo *d = devices->pdata[i];
          if (d->type == LP_DEVICE_CPU && g_str_has_prefix (vk->device_name, d->name))
            small = g_strcmp0 (g_getenv ("LLMPRESS_BENCH_FULL"), "1") != 0;
        }
      if (small)
        printf ("(a CPU Vulkan device: shapes divided by 4; LLMPRESS_BENCH_FULL=1 for the full ones)\n");
    }
  int s = small ? 4 : 1;
  struct {
    const char *label;
    BenchOp op;
    int M, N, K;
  } cases[] = {
    { "GEMM n^3", OP_GEMM, 2048 / s, 2048 / s, 2048 / s },
    { "weights f32 T x D x D", OP_GEMM, 512 / s, 4096 / s, 4096 / s },
    { "weights f16 T x D x D", OP_GEMM_F16, 512 / s, 4096 / s, 4096 / s },
    { "weights q4_k T x D x D", OP_GEMM_Q4_K, 512 / s, 4096 / s, 4096 / s },
    { "int8 W8A8 T x D x D", OP_GEMM_I8, 512 / s, 4096 / s, 4096 / s },
    { "Hessian T, n", OP_SYRK, 4096 / s, 0, 4096 / s },
  };
  printf ("\n%-24s %16s %12s %12s   (int8: GOP/s)\n", "op", "shape", "CPU GFLOP/s", "Vulkan");
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      Operands *o = operands_new (cases[i].op, cases[i].M, cases[i].N, cases[i].K);
      g_autofree char *shape = cases[i].op == OP_SYRK ? g_strdup_printf ("T%d n%d", o->M, o->K)
                                                      : g_strdup_printf ("%dx%dx%d", o->M, o->N, o->K);
      double c = gflops (cpu, cases[i].op, o, 3);
      if (vk != NULL)
        printf ("%-24s %16s %12.1f %12.1f\n", cases[i].label, shape, c, gflops (vk, cases[i].op, o, 3));
      else
        printf ("%-24s %16s %12.1f %12s\n", cases[i].label, shape, c, "-");
      fflush (stdout);
      operands_free (o);
    }

  /* The clip search does 81 times the work: a quarter of the rows. */
  printf ("\n%-24s %16s %12s %12s\n", "op", "shape", "CPU GB/s", "Vulkan");
  for (int clip = 0; clip < 2; clip++)
    {
      int R = (clip ? 1024 : 4096) / s, C = 4096 / s;
      const char *label = clip ? "RTN int4 g128, clip" : "RTN int4 g128";
      g_autofree char *shape = g_strdup_printf ("%dx%d", R, C);
      double c = rtn_gbps (cpu, R, C, clip, 3);
      if (vk != NULL)
        printf ("%-24s %16s %12.4f %12.4f\n", label, shape, c, rtn_gbps (vk, R, C, clip, 3));
      else
        printf ("%-24s %16s %12.4f %12s\n", label, shape, c, "-");
      fflush (stdout);
    }
  bench_model (cpu, vk);
  return 0;
}
