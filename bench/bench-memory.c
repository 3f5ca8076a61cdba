/* make bench: peak resident memory of load ! quantize.rtn ! save against
 * depth (model/pages.c, model/spill.c: the memory design).
 *  1. Twins: synthetic models of 4 and 32 layers (D = 512, F = 1376, 8
 *     heads, 4 KV heads, V = 2048, f16) written with `llmpress synth`, then
 *     the chain into Q8_0 run by `llmpress run` as a child process (with a
 *     cache of its own, as a user's run stores every output); its peak RSS
 *     (wait4's ru_maxrss) beside the input's size, and the ratio 32 : 4
 *     (target: at most 1.2).
 *  2. With LLMPRESS_BENCH_BIG=1 only (minutes to hours): a model larger than
 *     this machine's memory (D = 8192, F = 22016, 64 heads, 8 KV heads, V =
 *     2048, f16; LLMPRESS_BENCH_BIG_LAYERS layers, default 21: 29 GB) through
 *     the chain into Q4_0 without the cache (it would store another copy of
 *     the input): peak RSS (target: under 4 GB) and time, beside the bytes
 *     read and written per second and the memory bandwidth (triad) measured
 *     in the same run.  Skipped when the disk lacks room for twice the
 *     input (synth holds its tensors in a spill file while writing).
 * Files go to a temporary directory in the current one (LLMPRESS_BENCH_DIR
 * to choose) and are removed.  Prints figures; never fails on time. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <glib/gstdio.h>

#include <llmpress/llmpress.h>

#include "benchutil.h"
#include "../tests/peak-rss.h"

static const char *bin;

/* llmpress synth PATH with the shape given; its peak RSS and s[0] wall,
 * s[1] CPU seconds (user + system), or FALSE. */
static gboolean
synth (const char *path, int dim, int ffn, int layers, int heads, int kv_heads, guint64 *peak, double s[2])
{
  g_autofree char *d = g_strdup_printf ("%d", dim), *f = g_strdup_printf ("%d", ffn);
  g_autofree char *l = g_strdup_printf ("%d", layers), *h = g_strdup_printf ("%d", heads);
  g_autofree char *k = g_strdup_printf ("%d", kv_heads);
  const char *argv[] = { bin, "synth", path, "--dim", d, "--ffn", f, "--layers", l, "--heads", h,
                         "--kv-heads", k, "--vocab", "2048", "-t", "f16", NULL };
  int rc = peak_rss_run (argv, NULL, peak, &s[0], &s[1]);
  if (rc != 0)
    printf ("llmpress synth %s failed (status %d)\n", path, rc);
  return rc == 0;
}

/* load ! quantize.rtn format=FORMAT ! save into dir/out.gguf; its peak RSS
 * and s[0] wall, s[1] CPU seconds, or FALSE. */
static gboolean
chain (const char *in, const char *format, const char *dir, const char *cache, guint64 *peak, double s[2])
{
  g_autofree char *spec = g_strdup_printf ("load path=%s ! quantize.rtn format=%s ! save path=out.gguf", in, format);
  const char *argv[] = { bin, "run", "-q", "-p", spec, "-o", dir, cache ? "--cache-dir" : "--no-cache", cache, NULL };
  int rc = peak_rss_run (argv, NULL, peak, &s[0], &s[1]);
  if (rc != 0)
    printf ("llmpress run %s failed (status %d)\n", spec, rc);
  return rc == 0;
}

static void
twins (const char *tmp)
{
  const int depth[2] = { 4, 32 };
  guint64 rss[2] = { 0, 0 };
  for (int i = 0; i < 2; i++)
    {
      g_autofree char *name = g_strdup_printf ("m%d.gguf", depth[i]);
      g_autofree char *in = g_build_filename (tmp, name, NULL);
      g_autofree char *out = g_strdup_printf ("%s/out%d", tmp, depth[i]);
      g_autofree char *cache = g_strdup_printf ("%s/cache%d", tmp, depth[i]);
      guint64 synth_peak;
      double synth_s[2], s[2];
      if (!synth (in, 512, 1376, depth[i], 8, 4, &synth_peak, synth_s)
          || !chain (in, "q8_0", out, cache, &rss[i], s))
        return;
      g_autofree char *path = g_build_filename (out, "out.gguf", NULL);
      printf ("%2d layers: input %6.1f MB f16, output %6.1f MB q8_0: peak RSS %6.1f MB in %.2f s (%.2f s CPU)\n",
              depth[i], lp_path_size (in) / 1e6, lp_path_size (path) / 1e6, rss[i] / 1e6, s[0], s[1]);
    }
  if (rss[0] == 0)
    printf ("peak RSS: not reported by wait4 here\n");
  else
    printf ("peak RSS 32 : 4 layers = %.2f (target <= 1.2; input 8x larger)\n", (double) rss[1] / rss[0]);
}

static guint64
disk_free (const char *dir)
{
  struct statvfs v;
  return statvfs (dir, &v) == 0 ? (guint64) v.f_bavail * v.f_frsize : 0;
}

static void
big (const char *tmp)
{
  const char *env = g_getenv ("LLMPRESS_BENCH_BIG_LAYERS");
  int layers = env ? atoi (env) : 21;
  const gint64 D = 8192, F = 22016, V = 2048, kv = 1024;
  /* f16: per layer q, o (D x D), k, v (kv x D), gate, up, down (F x D);
   * embeddings, norms. */
  guint64 bytes = 2 * ((guint64) layers * (2 * D * D + 2 * kv * D + 3 * F * D + 2 * D) + V * D + D);
  double ram = (double) sysconf (_SC_PHYS_PAGES) * sysconf (_SC_PAGESIZE);
  printf ("big model: %d layers, %.1f GB f16 (memory %.1f GB)\n", layers, bytes / 1e9, ram / 1e9);
  if (disk_free (tmp) < bytes * 2 + bytes / 2)
    {
      printf ("big model: skipped: %.1f GB free in %s, needs %.1f GB\n", disk_free (tmp) / 1e9, tmp,
              (bytes * 2 + bytes / 2) / 1e9);
      return;
    }
  double bw = bench_triad_gbs ((gsize) 8 << 20, 5, TRUE);
  printf ("memory bandwidth (triad, 3 x 64 MiB, %d threads): %.2f GB/s\n", lp_threads (), bw);
  g_autofree char *in = g_build_filename (tmp, "big.gguf", NULL);
  g_autofree char *out = g_build_filename (tmp, "outbig", NULL);
  guint64 synth_peak, peak;
  double synth_s[2], s[2];
  if (!synth (in, (int) D, (int) F, layers, 64, 8, &synth_peak, synth_s))
    return;
  guint64 in_bytes = lp_path_size (in);
  printf ("synth: %.1f GB written in %.1f s (%.1f s CPU, %.0f MB/s): peak RSS %.2f GB\n", in_bytes / 1e9,
          synth_s[0], synth_s[1], in_bytes / 1e6 / synth_s[0], synth_peak / 1e9);
  gboolean ok = chain (in, "q4_0", out, NULL, &peak, s);
  g_unlink (in);
  if (!ok)
    return;
  g_autofree char *path = g_build_filename (out, "out.gguf", NULL);
  guint64 out_bytes = lp_path_size (path);
  printf ("load ! quantize.rtn q4_0 ! save: %.1f GB in, %.1f GB out in %.1f s (%.1f s CPU): peak RSS %.2f GB "
          "(target < 4); read %.0f MB/s, written %.0f MB/s (triad %.2f GB/s)\n", in_bytes / 1e9, out_bytes / 1e9, s[0],
          s[1], peak / 1e9, in_bytes / 1e6 / s[0], out_bytes / 1e6 / s[0], bw);
}

/* rm -r of the files this wrote (a flat tree of depth 3 at most). */
static void
remove_tree (const char *path)
{
  GDir *d = g_dir_open (path, 0, NULL);
  if (d != NULL)
    {
      const char *name;
      while ((name = g_dir_read_name (d)) != NULL)
        {
          g_autofree char *child = g_build_filename (path, name, NULL);
          remove_tree (child);
        }
      g_dir_close (d);
      g_rmdir (path);
    }
  else
    g_unlink (path);
}

int
main (void)
{
  setvbuf (stdout, NULL, _IOLBF, 0);
  bin = g_getenv ("LLMPRESS_BIN") ? g_getenv ("LLMPRESS_BIN") : "cli/llmpress";
  if (!g_getenv ("LLMPRESS_PLUGIN_PATH"))
    g_setenv ("LLMPRESS_PLUGIN_PATH", "plugins/.libs", TRUE);
  const char *where = g_getenv ("LLMPRESS_BENCH_DIR") ? g_getenv ("LLMPRESS_BENCH_DIR") : ".";
  g_autofree char *tmpl = g_build_filename (where, "bench-memory-XXXXXX", NULL);
  if (g_mkdtemp (tmpl) == NULL)
    {
      printf ("%s: cannot create a directory\n", tmpl);
      return 1;
    }
  twins (tmpl);
  if (g_strcmp0 (g_getenv ("LLMPRESS_BENCH_BIG"), "1") == 0)
    big (tmpl);
  else
    printf ("big model (larger than memory): LLMPRESS_BENCH_BIG=1 to run it (minutes)\n");
  remove_tree (tmpl);
  return 0;
}
