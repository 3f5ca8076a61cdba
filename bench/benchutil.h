/* make bench: helpers shared by the benchmark programs. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/threads.h>

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

/* Seconds of CPU time this process has used, all its threads: on a shared
 * machine a step's wall time includes waiting for a core, its CPU time not. */
static inline double
bench_cpu_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The peak resident memory of this process (VmHWM) in MiB since the last
 * bench_peak_rss_reset, or since it started; 0 where /proc cannot say. */
static inline double
bench_peak_rss_mib (void)
{
  g_autofree char *status = NULL;
  if (!g_file_get_contents ("/proc/self/status", &status, NULL, NULL))
    return 0;
  const char *hwm = strstr (status, "VmHWM:");
  return hwm ? g_ascii_strtod (hwm + 6, NULL) / 1024 : 0; /* kB */
}

/* Start bench_peak_rss_mib's count again from what is resident now (Linux:
 * writing 5 to /proc/self/clear_refs). */
static inline void
bench_peak_rss_reset (void)
{
  FILE *f = fopen ("/proc/self/clear_refs", "w");
  if (f != NULL)
    {
      fputs ("5", f);
      fclose (f);
    }
}

/* Peak sgemm GFLOP/s of this machine's OpenBLAS: median of `reps` n^3
 * products (at most 16), after a warm-up. */
static inline double
bench_peak_sgemm (int n, int reps)
{
  float *a = g_new (float, (gsize) n * n), *b = g_new (float, (gsize) n * n), *c = g_new (float, (gsize) n * n);
  for (gsize i = 0; i < (gsize) n * n; i++)
    a[i] = b[i] = (float) (i % 7) * 0.1f;
  double t[16];
  reps = MIN (reps, 16);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n); /* warm-up */
  for (int r = 0; r < reps; r++)
    {
      double t0 = now ();
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
      t[r] = now () - t0;
    }
  g_free (a);
  g_free (b);
  g_free (c);
  return 2.0 * n * n * (double) n / median (t, reps) / 1e9;
}

/* Memory bandwidth in GB/s: a STREAM-like triad a[i] = b[i] + 3 c[i] over
 * three arrays of n doubles (the 3 streams counted: 2 read, 1 written), on
 * one thread or on lp_threads () (threaded), median of `reps` (at most 16). */
typedef struct {
  double *a, *b, *c;
} BenchTriad;

static inline void
bench_triad_range (gint64 i0, gint64 i1, gpointer data)
{
  BenchTriad *t = data;
  for (gint64 i = i0; i < i1; i++)
    t->a[i] = t->b[i] + 3.0 * t->c[i];
}

static inline double
bench_triad_gbs (gsize n, int reps, gboolean threaded)
{
  BenchTriad t = { g_new (double, n), g_new (double, n), g_new (double, n) };
  for (gsize i = 0; i < n; i++)
    t.a[i] = 0, t.b[i] = 1.0 + (double) (i % 5), t.c[i] = 2.0 - (double) (i % 3);
  double s[16];
  reps = MIN (reps, 16);
  for (int r = 0; r < reps; r++)
    {
      double t0 = now ();
      if (threaded)
        lp_parallel_for ((gint64) n, 1 << 16, bench_triad_range, &t);
      else
        bench_triad_range (0, (gint64) n, &t);
      s[r] = now () - t0;
    }
  volatile double sink = t.a[n / 2];
  (void) sink;
  g_free (t.a);
  g_free (t.b);
  g_free (t.c);
  return 3.0 * n * sizeof (double) / median (s, reps) / 1e9;
}

/* bench-vulkan's model section (bench-model.c): forward and forward+backward
 * tokens/s on the CPU and on the device (NULL: CPU figures only). */
void bench_model (LpBackend *cpu, LpBackend *vk);
