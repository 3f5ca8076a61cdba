/* llmpress — group-wise RTN onto the integer grid, fast: lp_int_fit and the
 * CPU backend's quantize_groups.  The definition is the reference in
 * intgrid.c (lp_ref_int_fit, lp_ref_quantize_groups); these give the same
 * scales, zeros and codes (test-forward compares the CPU backend with it
 * byte for byte), with
 *   - the clip search's 81 candidate ranges as lanes: each candidate's
 *     squared error is still summed value by value in the reference's order,
 *     81 sums side by side, then the first least one is taken;
 *   - rounding as the 1.5 * 2^23 trick instead of a libm nearbyintf call
 *     (the same result in the default rounding mode for |v| <= 1e6);
 *   - the rows on every thread (lp_parallel_for). */
#include "config.h"

#include <math.h>

#include <llmpress/backend.h>

#include "lp-internal.h"

/* As in quant_fast.c: GCC's -O2 cost model leaves the lane loops scalar,
 * and -ftrapping-math keeps a float select as a branch; neither option
 * changes a value. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize ("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif

/* The full range and its 80 shrinks p = 1 - i/100 (lp_ref_int_fit), padded
 * with copies of the first to a multiple of 8 lanes. */
#define N_CANDIDATES 81
#define N_LANES 88

/* nearbyintf (v) as an int for |v| < 2^22, in the default rounding mode. */
static inline int
round_even (float v)
{
  union { float f; int i; } u = { v + 12582912.f };
  return (u.i & 0x007fffff) - 0x00400000;
}

/* lp_int_quantize's code for x on (s, zero): the same expressions. */
static inline int
grid_code (float s, int zero, int maxq, float x)
{
  float v = s > 0 ? x / s : 0.f;
  v = v > 1e6f ? 1e6f : v < -1e6f ? -1e6f : v;
  int c = round_even (v) + zero;
  c = c < 0 ? 0 : c;
  return c > maxq ? maxq : c;
}

/* lp_ref_int_fit for one group of n values (rows = 1).  On x86-64 a second
 * copy for AVX2 (no FMA, which would fuse and so change roundings), chosen
 * at load time. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__ ((target_clones ("avx2", "default")))
#endif
static void
fit_group (const float *x, int n, const float *imp, int bits, gboolean symmetric, gboolean clip_search,
           guint16 *scale, guint8 *zero)
{
  int maxq = (1 << bits) - 1;
  float lo = 0, hi = 0;
  for (int j = 0; j < n; j++)
    {
      lo = MIN (lo, x[j]);
      hi = MAX (hi, x[j]);
    }
  lp_int_range_params (lo, hi, maxq, symmetric, scale, zero);
  if (!clip_search)
    return;
  guint16 hs[N_LANES];
  guint8 zs[N_LANES];
  float s[N_LANES];
  int z[N_LANES];
  double err[N_LANES];
  hs[0] = *scale;
  zs[0] = *zero;
  for (int i = 1; i < N_CANDIDATES; i++)
    {
      float p = 1.f - (float) i / 100.f;
      lp_int_range_params (p * lo, p * hi, maxq, symmetric, &hs[i], &zs[i]);
    }
  for (int k = 0; k < N_LANES; k++)
    {
      int c = k < N_CANDIDATES ? k : 0;
      s[k] = lp_f16_to_f32 (hs[c]);
      z[k] = zs[c];
      err[k] = 0;
    }
  for (int j = 0; j < n; j++)
    {
      const float xj = x[j], wj = imp ? imp[j] : 1.f;
      for (int k = 0; k < N_LANES; k++)
        {
          const int c = grid_code (s[k], z[k], maxq, xj);
          const float d = s[k] * (float) (c - z[k]) - xj;
          err[k] += wj * d * d;
        }
    }
  double best = err[0];
  for (int i = 1; i < N_CANDIDATES; i++)
    if (err[i] < best)
      {
        best = err[i];
        *scale = hs[i];
        *zero = zs[i];
      }
}

void
lp_int_fit (const float *x, gint64 ldx, gint64 rows, int n, const float *imp, int bits, gboolean symmetric,
            gboolean clip_search, guint16 *scale, guint8 *zero)
{
  if (rows == 1)
    fit_group (x, n, imp, bits, symmetric, clip_search, scale, zero);
  else
    lp_ref_int_fit (x, ldx, rows, n, imp, bits, symmetric, clip_search, scale, zero);
}

typedef struct {
  int cols, ldw, G;
  const float *W, *imp;
  const LpGroupQuant *q;
  guint8 *codes;
  guint16 *scales;
  guint8 *zeros;
} GroupsJob;

static void
quantize_rows (gint64 r0, gint64 r1, gpointer data)
{
  const GroupsJob *j = data;
  const LpGroupQuant *q = j->q;
  int maxq = (1 << q->bits) - 1;
  for (gint64 r = r0; r < r1; r++)
    for (int g = 0; g < j->G; g++)
      {
        int c0 = g * q->group, n = MIN (q->group, j->cols - c0);
        const float *x = j->W + (gsize) r * j->ldw + c0;
        gsize k = (gsize) r * j->G + g;
        fit_group (x, n, j->imp ? j->imp + c0 : NULL, q->bits, q->symmetric, q->clip_search, &j->scales[k],
                   &j->zeros[k]);
        float s = lp_f16_to_f32 (j->scales[k]);
        int zero = j->zeros[k];
        guint8 *code = j->codes + (gsize) r * j->cols + c0;
        for (int i = 0; i < n; i++)
          code[i] = (guint8) grid_code (s, zero, maxq, x[i]);
      }
}

void
lp_cpu_quantize_groups (int rows, int cols, const float *W, int ldw, const float *imp, const LpGroupQuant *q,
                        guint8 *codes, guint16 *scales, guint8 *zeros)
{
  GroupsJob job = { cols, ldw, (cols + q->group - 1) / q->group, W, imp, q, codes, scales, zeros };
  /* a range of rows is at least ~16K values: enough to amortise a hand-off */
  lp_parallel_for (rows, MAX (1, 16384 / MAX (cols, 1)), quantize_rows, &job);
}
