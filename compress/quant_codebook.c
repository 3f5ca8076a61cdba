/* llmpress — learned codebooks: the levels of a group of weights by
 * weighted k-means in one dimension (SqueezeLLM's non-uniform quantization,
 * the weights being each input's Hessian diagonal), and the nearest level
 * of a value. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"

int
lp_levels_nearest (const float *levels, int k, float x)
{
  /* levels ascending: the first level above x, then the closer of it and
   * the one below (ties to the lower) */
  int lo = 0, hi = k;
  while (lo < hi)
    {
      int mid = (lo + hi) / 2;
      if (levels[mid] <= x)
        lo = mid + 1;
      else
        hi = mid;
    }
  if (lo == 0)
    return 0;
  if (lo == k)
    return k - 1;
  return x - levels[lo - 1] <= levels[lo] - x ? lo - 1 : lo;
}

typedef struct {
  float x, w;
} Point;

static int
cmp_float (const void *a, const void *b)
{
  float x = *(const float *) a, y = *(const float *) b;
  return x < y ? -1 : x > y;
}

static int
cmp_point (const void *a, const void *b)
{
  float x = ((const Point *) a)->x, y = ((const Point *) b)->x;
  return x < y ? -1 : x > y;
}

/* The levels at the weighted quantiles (i + 1/2) / k of the sorted points. */
static void
init_quantiles (const Point *p, int n, int k, double total, float *levels)
{
  double acc = 0;
  int j = 0;
  for (int i = 0; i < k; i++)
    {
      double target = (i + 0.5) / k * total;
      while (j < n - 1 && acc + p[j].w < target)
        acc += p[j++].w;
      levels[i] = p[j].x;
    }
}

/* f16 levels, ascending: rounding keeps the order (it is monotone). */
static void
round_f16 (float *levels, int k)
{
  for (int i = 0; i < k; i++)
    levels[i] = lp_f16_to_f32 (lp_f32_to_f16 (levels[i]));
}

void
lp_kmeans_1d (const float *x, const float *w, int n, int k, int iters, float *levels)
{
  g_return_if_fail (n > 0 && k > 0);
  g_autofree Point *p = g_new (Point, n);
  double total = 0;
  for (int i = 0; i < n; i++)
    {
      p[i].x = x[i];
      p[i].w = w ? w[i] : 1.f;
      total += p[i].w;
    }
  /* No weight anywhere (dead inputs): every value counts the same. */
  if (!(total > 0))
    for (int i = 0; i < n; i++)
      p[i].w = 1.f, total = n;
  qsort (p, n, sizeof *p, cmp_point);
  init_quantiles (p, n, k, total, levels);
  g_autofree double *sx = g_new (double, k);
  g_autofree double *sw = g_new (double, k);
  for (int it = 0; it < iters; it++)
    {
      memset (sx, 0, sizeof (double) * k);
      memset (sw, 0, sizeof (double) * k);
      for (int i = 0; i < n; i++)
        {
          int c = lp_levels_nearest (levels, k, p[i].x);
          sx[c] += (double) p[i].w * p[i].x;
          sw[c] += p[i].w;
        }
      gboolean moved = FALSE;
      for (int c = 0; c < k; c++)
        if (sw[c] > 0)
          {
            float v = (float) (sx[c] / sw[c]);
            moved |= v != levels[c];
            levels[c] = v; /* an empty level stays where it was */
          }
      if (!moved)
        break;
    }
  /* Lloyd keeps centroids ordered in one dimension (each is the mean of a
   * contiguous run of sorted points), but equal ones may swap: sort. */
  qsort (levels, k, sizeof (float), cmp_float);
  round_f16 (levels, k);
}
