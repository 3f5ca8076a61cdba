/* llmpress — low-rank error compensation of a compressed linear weight,
 * as CALDERA does it (Saha et al. 2024, "Compressing Large Language Models
 * using Low Rank and Low Precision Decomposition"): W [N, K] ≈ Q + L R with
 * Q [N, K] on a low-precision grid, L [N, R] and R [R, K] low-rank and
 * themselves quantized, fitted to the layer's output on calibration data,
 *
 *   min ||X (W - Q - L R)^T||_F^2 = tr ((W - Q - L R) H (W - Q - L R)^T),
 *
 * H = X^T X [K, K] the Hessian of the layer's input.  Alternating
 * (CALDERA's Algorithm 1):
 *  - LR step, Q fixed: the activation-aware SVD of the residual W - Q
 *    (lowrank.h: whitened by the Cholesky factor of H, truncated to R),
 *    split as L = U_R (orthonormal columns: every row of L has entries of
 *    one size, so a row's group quantizes well) and R = Σ_R V_R^T C^-1 (a
 *    row of R is one component: its own scale); then, with quantized
 *    factors, CALDERA's LPLR rounds: L quantized, R refitted by least
 *    squares against it (R = (L^T L)^-1 L^T (W - Q), whatever H is) and
 *    quantized, L refitted against the quantized R with the data
 *    (L = (W - Q) H R^T (R H R^T)^-1) and quantized again;
 *  - Q step, L R fixed (requantize): W - L R re-quantized onto Q's own grid
 *    (same bits, group size, zero-point rule, g_idx) by the GPTQ sweep with
 *    the Hessian (obs.h; CALDERA's LDLQ), every group's scale and zero
 *    fitted from W - L R before the sweep (static groups).
 * The iterate of least output error is kept.  The factors are held on a
 * plain integer grid of factor_bits bits, groups of factor_group columns
 * along each row (L's rows have R values), or as f16. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/tensor.h>

G_BEGIN_DECLS

typedef struct {
  int rank;            /* R: 1 .. min (N, K) */
  int iterations;      /* LR steps (>= 1); with requantize a Q step before each one after the first */
  int factor_bits;     /* 2..8: L and R on an integer grid; 0 or 16: f16 */
  int factor_group;    /* columns sharing a factor scale and zero (capped at the row length) */
  gboolean requantize; /* alternate re-quantization of Q (an integer grid without a mask; else Q stays) */
  double damp;         /* fraction of mean diag(H) added to its diagonal (whitening and sweep) */
} LpCompensateOptions;

#define LP_COMPENSATE_OPTIONS_INIT { 8, 3, 4, 32, TRUE, 0.01 }

/* W [N, K] (the reference, f32 row-major) approximated from q (the
 * compressed weight, [N, K], any form) with H [K, K]: the adapter tensor
 * (form.h) base Q + 1.0 · B A with A = R [R, K] and B = L [N, R], named as q.
 * errors[0 .. iterations] (may be NULL) gets the output error of Q alone,
 * then after each iteration (of its Q and L R).  NULL with an error when
 * the rank does not fit, H is not positive definite after damping, or the
 * shapes differ. */
LpTensor *lp_compensate_layer (LpBackend *be, const LpTensor *q, const float *W, const float *H,
                               const LpCompensateOptions *o, double *errors, GError **error);

/* Bytes the two factors of a rank-r compensation of an N x K weight take:
 * L [N, r] and R [r, K] on the grid of (bits, group), or f16 (bits 0 or 16). */
guint64 lp_compensate_factor_bytes (gint64 n, gint64 k, int rank, int bits, int group);

/* tr (D H D^T) for D [N, K] and H [K, K]: the squared output error D makes
 * on the data H summarises (in double). */
double lp_output_error (LpBackend *be, gint64 n, gint64 k, const float *D, const float *H);

G_END_DECLS
