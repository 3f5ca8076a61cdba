/* llmpress — Optimal Brain Surgeon column sweeps, the one engine behind
 * SparseGPT (Frantar & Alistarh 2023) and GPTQ (Frantar et al. 2022).
 *
 * Both compress a linear layer W[rows, n] (rows = outputs, n = inputs) against
 * its input Hessian H = X^T X [n, n]: they walk the columns left to right,
 * replace column c by a chosen value q (0 where pruned, a grid value where
 * quantized) and spread the error over the columns not yet visited,
 *
 *   err_r = (W[r,c] - q_r) / U[c,c]        W[r, c+1:] -= err_r * U[c, c+1:]
 *
 * where U is the upper Cholesky factor of H^-1 (H^-1 = U^T U).  Updates are
 * applied lazily: inside a block of `block_size` columns one column at a
 * time, to the columns after the block by one GEMM per block (on the backend).
 * Rows never interact, so the result does not depend on how rows are split.
 *
 * Usage:
 *   lp_obs_prepare (be, n, H, 0.01, dead, NULL, &error);   H now holds U
 *   (zero W[:, j] for every dead[j])
 *   LpObsSweep s = { my_block_begin, my_column, me };
 *   lp_obs_sweep (be, rows, n, W, n, H, 128, &s, &loss, &error); */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>

G_BEGIN_DECLS

/* Turn H[n,n] (row-major, symmetric, both triangles) into U in place:
 *  - a dead input channel (H[j,j] == 0: it never fired) gets H[j,j] = 1 and
 *    dead[j] = TRUE (dead may be NULL); the caller zeroes W[:, j], as the
 *    reference SparseGPT/GPTQ code does;
 *  - damping: damp * mean(diag H) is added to the diagonal (damp 0.01 in the
 *    papers); when the result is not positive definite the damping is raised
 *    tenfold, up to three times, and *damp_used (may be NULL) says what held;
 *  - H^-1 from the Cholesky factor (lp_cholesky on the backend), then U, the
 *    upper Cholesky factor of H^-1, with the strictly lower part zeroed.
 * Fails (naming the damping tried) on NaN/Inf in H or when no damping helps. */
gboolean lp_obs_prepare (LpBackend *be, int n, float *H, double damp, gboolean *dead, double *damp_used,
                         GError **error);

/* What a pass decides during a sweep.  Rows are independent, so the sweep
 * hands the column callback a range of rows [r0, r1) and calls it from
 * several threads at once on disjoint ranges: it may write state of its own
 * rows only.  For one range the calls come in column order.  block_begin is
 * called once per block, for all rows, from one thread, before any column of
 * the block. */
typedef struct {
  /* Optional (may be NULL): the block of columns [c0, c1) is about to be
   * swept.  W[rows, ldw] holds the current values: columns >= c0 carry the
   * updates of every earlier column (SparseGPT picks its mask here from
   * W^2 / diag(U)^2 over the whole block; GPTQ may fit a group's grid). */
  gboolean (*block_begin) (gpointer user_data, int c0, int c1, const float *W, int ldw, int rows, const float *U,
                           int n, GError **error);
  /* Required: choose column c for rows [r0, r1).  W[r*ldw + c] is the
   * current value of row r (the block's later columns are current too);
   * write the value to keep for row r into q[r - r0]. */
  gboolean (*column) (gpointer user_data, int c, int r0, int r1, const float *W, int ldw, float *q,
                      GError **error);
  gpointer user_data;
} LpObsSweep;

/* Sweep W[rows, n] (leading dimension ldw) with U from lp_obs_prepare in
 * blocks of block_size columns, rows split over the machine's cores.  On
 * return column c of W holds the chosen values q.  loss (may be NULL) gets
 * the sum over rows and columns of (w - q)^2 / U[c,c]^2: without damping,
 * exactly the squared output error ||(W_before - W_after) X^T||^2 the sweep
 * added.  The first error of a callback is passed on. */
gboolean lp_obs_sweep (LpBackend *be, int rows, int n, float *W, int ldw, const float *U, int block_size,
                       const LpObsSweep *sweep, double *loss, GError **error);

/* The definition, for tests: one thread, all rows at once, every column's
 * error applied at once to all later columns (no lazy blocks, no GEMM);
 * block_begin called for the same blocks. */
gboolean lp_ref_obs_sweep (int rows, int n, float *W, int ldw, const float *U, int block_size,
                           const LpObsSweep *sweep, double *loss, GError **error);

G_END_DECLS
