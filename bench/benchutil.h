/* make bench: helpers shared by the benchmark programs. */
#pragma once

#include <stdlib.h>
#include <glib.h>

static int
bench_cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

/* Median of n timings (sorts v). */
static inline double
median (double *v, int n)
{
  qsort (v, n, sizeof (double), bench_cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Seconds on the monotonic clock. */
static inline double
now (void)
{
  return g_get_monotonic_time () / 1e6;
}
