/* make bench: training-step speed of one transformer block on the compute
 * graph (model/cgraph.c), on the CPU and any backend named.
 *  1. Peak sgemm of this machine's OpenBLAS (2048^3), measured in the same run.
 *  2. One Llama-shaped block (D 2048, F 5632, 32 heads, 4 kv heads, T 512)
 *     recorded as a graph: the forward alone, then forward + backward
 *     (lp_cgraph_backward; every weight and the block's input trainable, a
 *     random gradient for its output): tokens/s, achieved GFLOP/s and the
 *     fraction of the measured peak.
 * Times lp_cgraph_compute only (recording a graph allocates its tensors);
 * medians of several repetitions.  Usage: bench-backward [BACKEND...]
 * (lp_backend_new's names, "cpu" when none: "cpu vulkan" prints both).
 * Prints figures; never fails on time. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <cblas.h>

#include <llmpress/llmpress.h>
#include <llmpress/compute.h>

#include "benchutil.h"

typedef struct {
  int T, D, F, H, Hkv, hd;
} BlockShape;

enum { W_NORM1, W_Q, W_K, W_V, W_O, W_NORM2, W_1, W_3, W_2, N_WEIGHTS };

/* The block's weights, its input and the rope frequencies: made once. */
typedef struct {
  LpCTensor *w[N_WEIGHTS], *x, *freq, *dy;
} BlockTensors;

static LpCTensor *
filled (LpBackend *be, gint64 rows, gint64 cols, guint32 seed, float offset, float scale)
{
  gint64 shape[2] = { rows, cols };
  LpCTensor *t = lp_ctensor_new (be, LP_DTYPE_F32, 2, shape, NULL, NULL);
  if (t == NULL)
    {
      fprintf (stderr, "bench-backward: out of memory for a %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " tensor\n",
               rows, cols);
      exit (1);
    }
  float *x = g_new (float, rows * cols);
  GRand *r = g_rand_new_with_seed (seed);
  for (gint64 e = 0; e < rows * cols; e++)
    x[e] = offset + scale * (float) g_rand_double_range (r, -1, 1);
  g_rand_free (r);
  lp_ctensor_write (t, 0, x, t->n_bytes);
  g_free (x);
  return t;
}

static void
block_tensors_init (BlockTensors *b, LpBackend *be, const BlockShape *s)
{
  int D = s->D, nq = s->H * s->hd, nkv = s->Hkv * s->hd;
  const gint64 shapes[N_WEIGHTS][2] = { { 1, D }, { nq, D }, { nkv, D }, { nkv, D }, { D, nq },
                                        { 1, D }, { s->F, D }, { s->F, D }, { D, s->F } };
  for (int i = 0; i < N_WEIGHTS; i++)
    {
      gboolean norm = i == W_NORM1 || i == W_NORM2;
      b->w[i] = filled (be, shapes[i][0], shapes[i][1], 10 + i, norm ? 1.0f : 0.0f, norm ? 0.1f : 0.02f);
      lp_ctensor_set_trainable (b->w[i], TRUE);
    }
  b->x = filled (be, s->T, D, 1, 0.0f, 1.0f);
  lp_ctensor_set_trainable (b->x, TRUE);
  b->dy = filled (be, s->T, D, 2, 0.0f, 1e-3f);
  float *f = g_new (float, s->hd / 2);
  for (int i = 0; i < s->hd / 2; i++)
    f[i] = (float) pow (10000.0, -2.0 * i / s->hd);
  gint64 fshape[1] = { s->hd / 2 };
  b->freq = lp_ctensor_new (be, LP_DTYPE_F32, 1, fshape, NULL, NULL);
  lp_ctensor_write (b->freq, 0, f, b->freq->n_bytes);
  g_free (f);
}

static void
block_tensors_clear (BlockTensors *b)
{
  for (int i = 0; i < N_WEIGHTS; i++)
    lp_ctensor_free (b->w[i]);
  lp_ctensor_free (b->x);
  lp_ctensor_free (b->dy);
  lp_ctensor_free (b->freq);
}

static LpCNode *
add (LpCGraph *g, LpCOp op, LpCTensor *a, LpCTensor *b, LpCTensor *c)
{
  LpCTensor *src[3] = { a, b, c };
  GError *error = NULL;
  LpCNode *n = lp_cgraph_add (g, op, src, c ? 3 : b ? 2 : 1, NULL, 0, &error);
  if (n == NULL)
    {
      fprintf (stderr, "bench-backward: %s\n", error->message);
      exit (1);
    }
  return n;
}

/* x + attention (rmsnorm (x)) then + ffn (rmsnorm (.)): a Llama block;
 * returns its output. */
static LpCTensor *
block_record (LpCGraph *g, const BlockTensors *b, const BlockShape *s)
{
  LpCNode *n = add (g, LP_COP_RMSNORM, b->x, b->w[W_NORM1], NULL);
  n->f[0] = 1e-5f;
  LpCTensor *h = n->dst[0];
  LpCTensor *qk[2] = { add (g, LP_COP_MATMUL, h, b->w[W_Q], NULL)->dst[0], add (g, LP_COP_MATMUL, h, b->w[W_K], NULL)->dst[0] };
  for (int j = 0; j < 2; j++)
    {
      n = add (g, LP_COP_ROPE, qk[j], b->freq, NULL);
      n->i[0] = LP_ROPE_NORMAL, n->i[1] = j == 0 ? s->H : s->Hkv, n->i[2] = s->hd, n->i[3] = 0;
      qk[j] = n->dst[0];
    }
  n = add (g, LP_COP_ATTENTION, qk[0], qk[1], add (g, LP_COP_MATMUL, h, b->w[W_V], NULL)->dst[0]);
  n->i[0] = s->H, n->i[1] = s->Hkv, n->i[2] = s->hd;
  LpCTensor *x2 = add (g, LP_COP_ADD, b->x, add (g, LP_COP_MATMUL, n->dst[0], b->w[W_O], NULL)->dst[0], NULL)->dst[0];
  n = add (g, LP_COP_RMSNORM, x2, b->w[W_NORM2], NULL);
  n->f[0] = 1e-5f;
  h = n->dst[0];
  LpCTensor *act = add (g, LP_COP_SWIGLU, add (g, LP_COP_MATMUL, h, b->w[W_1], NULL)->dst[0],
                        add (g, LP_COP_MATMUL, h, b->w[W_3], NULL)->dst[0], NULL)->dst[0];
  return add (g, LP_COP_ADD, x2, add (g, LP_COP_MATMUL, act, b->w[W_2], NULL)->dst[0], NULL)->dst[0];
}

/* Seconds of lp_cgraph_compute over a freshly recorded block, with its
 * backward recorded too when `backward`. */
static double
block_time (LpBackend *be, const BlockTensors *b, const BlockShape *s, gboolean backward)
{
  GError *error = NULL;
  LpCGraph *g = lp_cgraph_new (be);
  LpCTensor *y = block_record (g, b, s);
  if (backward && !lp_cgraph_backward (g, y, b->dy, &error))
    {
      fprintf (stderr, "bench-backward: %s\n", error->message);
      exit (1);
    }
  double t0 = now ();
  if (!lp_cgraph_compute (g, &error))
    {
      fprintf (stderr, "bench-backward: %s\n", error->message);
      exit (1);
    }
  double secs = now () - t0;
  lp_cgraph_free (g);
  return secs;
}

/* Median seconds of `reps` runs after a warm-up. */
static double
block_median (LpBackend *be, const BlockTensors *b, const BlockShape *s, gboolean backward, int reps)
{
  double t[16];
  reps = MIN (reps, 16);
  block_time (be, b, s, backward);
  for (int r = 0; r < reps; r++)
    t[r] = block_time (be, b, s, backward);
  return median (t, reps);
}

int
main (int argc, char **argv)
{
  int reps = 3;
  double peak = bench_peak_sgemm (2048, 5);
  printf ("OpenBLAS %s, %d threads: sgemm 2048^3 peak %.1f GFLOP/s (median of 5)\n", openblas_get_corename (),
          openblas_get_num_threads (), peak);

  BlockShape s = { .T = 512, .D = 2048, .F = 5632, .H = 32, .Hkv = 4, .hd = 64 };
  /* FLOPs, 2 a multiply-add.  Forward: the seven weight products and
   * attention's two T x T_kv products a head (causal, counted in full as
   * the GEMMs compute them).  Backward: dx and dW for every weight (twice
   * the forward's), attention's five products a head (the scores
   * recomputed, dP, dq, dk, dv). */
  double T = s.T, D = s.D, F = s.F, nq = s.H * s.hd, nkv = s.Hkv * s.hd;
  double linear = 2.0 * T * (2 * D * nq + 2 * D * nkv + 3 * D * F);
  double attn = 2.0 * T * T * s.hd * s.H;
  double fwd_flops = linear + 2 * attn, bwd_flops = 2 * linear + 5 * attn;

  /* The backends named on the command line (lp_backend_new's names), the
   * CPU when none: one row pair each, the same block. */
  const char *const cpu_only[] = { "cpu" };
  const char *const *names = argc > 1 ? (const char *const *) argv + 1 : cpu_only;
  int n_names = argc > 1 ? argc - 1 : 1;
  for (int i = 0; i < n_names; i++)
    {
      GError *error = NULL;
      LpBackend *be = lp_backend_new (names[i], &error);
      if (be == NULL)
        {
          printf ("block on %s: skipped (%s)\n", names[i], error->message);
          g_clear_error (&error);
          continue;
        }
      BlockTensors b;
      block_tensors_init (&b, be, &s);
      double fwd = block_median (be, &b, &s, FALSE, reps);
      double both = block_median (be, &b, &s, TRUE, reps);
      printf ("block (D %d, F %d, %d heads, %d kv heads, T %d) on %s, median of %d:\n", s.D, s.F, s.H, s.Hkv, s.T,
              be->device_name, reps);
      printf ("  forward:            %8.0f tokens/s  %.3f s  %6.1f GFLOP/s = %3.0f%% of peak sgemm\n", T / fwd, fwd,
              fwd_flops / fwd / 1e9, 100.0 * fwd_flops / fwd / 1e9 / peak);
      printf ("  forward + backward: %8.0f tokens/s  %.3f s  %6.1f GFLOP/s = %3.0f%% of peak sgemm\n", T / both, both,
              (fwd_flops + bwd_flops) / both / 1e9, 100.0 * (fwd_flops + bwd_flops) / both / 1e9 / peak);
      block_tensors_clear (&b);
      lp_backend_unref (be);
    }
  return 0;
}
