/* llmpress — how many threads the heavy loops use, and the loop that
 * spreads work over them.
 *
 * One count serves everything: quantization (RTN into block types and
 * integer grids), the OBS sweeps of GPTQ/SparseGPT, evaluation windows, the
 * factorize tasks and OpenBLAS.  It is, in order: what lp_threads_set chose
 * (the CLI's `-t N` / `--threads N`), the LLMPRESS_THREADS environment
 * variable, every core this process may run on. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The thread count in force (>= 1). */
int lp_threads (void);
/* Use n threads (n >= 1) from now on, OpenBLAS's included (unless
 * lp_cpu_blas_threads_init chose its count already); 0 goes back to the
 * default.  Call it before work starts: the count is process-wide. */
void lp_threads_set (int n);
/* A thread count from text ("4"): FALSE with a message naming `what` and
 * the text unless it is an integer in [1, 4096]. */
gboolean lp_threads_parse (const char *what, const char *text, int *n, GError **error);

/* Work on items [begin, end): one call handles a contiguous range. */
typedef void (*LpParallelFunc) (gint64 begin, gint64 end, gpointer user_data);
/* Run func over [0, n) in contiguous ranges of at least `grain` items on up
 * to lp_threads () threads, the caller's included; returns when every range
 * is done.  Ranges never overlap, so a func that writes only its items'
 * outputs gives the same result with any thread count.  Nested calls (func
 * calling lp_parallel_for) are allowed: a caller never waits for a range
 * nobody has started. */
void lp_parallel_for (gint64 n, gint64 grain, LpParallelFunc func, gpointer user_data);

G_END_DECLS
