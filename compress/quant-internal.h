/* llmpress — shared pieces of the block quantizers (quant*.c), not SDK. */
#pragma once

#include <math.h>
#include <string.h>
#include <glib.h>
#include <llmpress/quant.h>

#include "dtype-blocks.h"

/* How a value's code follows from LpBlockParams.qa / qb (ggml's expressions). */
enum {
  LP_RULE_TRUNC_BIAS,   /* Q4_0/Q5_0: (int)(x*qa + bias + 0.5), capped; qa = 1/d unrounded */
  LP_RULE_TRUNC_MIN,    /* Q4_1/Q5_1: (int)((x - qb)*qa + 0.5), capped */
  LP_RULE_ROUND,        /* Q8_0: roundf (x*qa) */
  LP_RULE_NEAREST_MUL,  /* make_qx_quants codes: nearest (qa*x) clamped */
  LP_RULE_QKX3,         /* make_qkx3_quants codes: v = qa*(x - qb); v > 0 ? nearest (min (v, max)) : 0 */
  LP_RULE_DIV_MIN,      /* K types with a min: nearest ((x + qb)/qa) clamped */
  LP_RULE_DIV,          /* Q3_K/Q6_K: nearest (x/qa) clamped */
  LP_RULE_LEVELS,       /* IQ4_NL: the level of lp_iq4nl_levels nearest qa*x; value = step * level */
};

#define LP_GROUP_MAX_EPS 1e-15f

/* ggml's nearest_int: round half to even via the 1.5*2^23 trick, for |f| < 2^22. */
static inline int
lp_nearest_int (float fval)
{
  float val = fval + 12582912.f;
  int i;
  memcpy (&i, &val, sizeof (int));
  return (i & 0x007fffff) - 0x00400000;
}

/* ggml's scans keep the first extreme of a block (x[j] < min replaces,
 * ties do not); an order-free min and max find the same values, but when
 * an extreme is 0 it may be -0 for +0 or back, and Q4_1's stored min keeps
 * the sign: such an extreme becomes the block's first zero. */
static inline void
lp_qfirst_zero_extremes (const float *x, int n, float *min, float *max)
{
  for (int j = 0; j < n && (*min == 0 || *max == 0); j++)
    if (x[j] == 0)
      {
        *min = *min == 0 ? x[j] : *min;
        *max = *max == 0 ? x[j] : *max;
        break;
      }
}

/* quantize_row_q{4,5}_0_ref's signed max: the first value of largest
 * magnitude, with its sign (+0 when all are 0), from the block's min and
 * max; only a tie of +max and -min needs the order. */
static inline float
lp_qsigned_absmax (const float *x, int n, float min, float max)
{
  if (max > -min)
    return max;
  if (-min > max)
    return min;
  if (max > 0)
    for (int j = 0; j < n; j++)
      if (fabsf (x[j]) == max)
        return x[j];
  return 0;
}

/* ggml's scale searches (ggml-quants.c), same arithmetic in the same order.
 * L receives codes; see each definition for its convention. */
float lp_make_qx_quants (int n, int nmax, const float *x, gint8 *L, int rmse_type, const float *qw,
                         float *out_iscale);
float lp_make_q3_quants (int n, int nmax, const float *x, gint8 *L, gboolean do_rmse);
float lp_make_qkx2_quants (int n, int nmax, const float *x, const float *weights, guint8 *L,
                           float *the_min, guint8 *Laux, float rmin, float rdelta, int nstep,
                           gboolean use_mad);
float lp_make_qkx3_quants (int n, int nmax, const float *x, const float *weights, guint8 *L,
                           float *the_min, guint8 *Laux, float rmin, float rdelta, int nstep,
                           gboolean use_mad, float *out_iscale, float *out_qmin);
float lp_make_qp_quants (int n, int nmax, const float *x, guint8 *L, const float *quant_weights);

/* ggml's best_index_int8 over lp_iq4nl_levels: the nearest level's index. */
int lp_iq4nl_nearest (float x);

/* Fit one block as ggml does: parameters, and in `codes` the codes ggml writes. */
void lp_qfit_block32 (LpDType type, const float *x, const float *w, float sigma2, LpBlockParams *p,
                      int *codes);
void lp_qfit_kblock (LpDType type, const float *x, const float *w, LpBlockParams *p, int *codes);
/* Q4_K / Q5_K: the 8 sub-block scales and mins of a super-block onto 6-bit
 * codes Ls, Lm under the f16 super-scales d, m: max / 63 without importance
 * (sw NULL), make_qp_quants weighted by the sub-blocks' weight sums sw. */
void lp_qk45_super_scales (const float *scales, const float *mins, const float *sw, guint8 *Ls, guint8 *Lm,
                           guint16 *d, guint16 *m);
/* Q4_K / Q5_K's 8 6-bit scales and 8 6-bit mins in 12 bytes. */
void lp_qencode_scales_k4 (const guint8 *ls, const guint8 *lm, guint8 *dst);
void lp_qpack_kblock (const LpBlockParams *p, const int *codes, guint8 *dst);


/* A row of n values (a multiple of the block size, checked finite) into dst:
 * the reference (each block fitted and packed alone, quant.c), and the fast
 * kernels (quant_fast.c), which write the same bytes for the cases they take
 * and return FALSE for the others. */
void lp_qref_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
gboolean lp_qfast_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
/* The two behind lp_qfast_row: the 32-value types in AVX2 intrinsics
 * (quant_fast_x86.c; FALSE on other CPUs and builds), and the kernels in
 * plain C that the compiler vectorises (quant_fast.c). */
gboolean lp_qx86_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
/* lp_qx86_row on a row not yet checked: -1 when it does not take the case,
 * else 1 when every value was finite and 0 when one was not (dst then holds
 * no meaningful bytes).  The check rides on the kernel's own loads. */
int lp_qx86_row_checked (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
/* The x86 block kernels' read-ahead, the values of a block 8 KiB on (four
 * AVX-512 steps of sixteen blocks, eight AVX2 steps of eight): without it
 * the hardware prefetcher alone leaves a streamed row at 12-16 GB/s of
 * input a core on Zen 5, with it 19-21, near what a plain read-and-write
 * loop gets.  A prefetch
 * never faults: reading past the row's end is harmless. */
static inline void
lp_qprefetch_block (const float *x)
{
  __builtin_prefetch (x + 2048);
  __builtin_prefetch (x + 2048 + 16);
}

/* The same two in AVX-512F intrinsics, sixteen blocks at a time, a row's
 * last blocks by the AVX2 kernels (quant_fast_x512.c; -1 / FALSE where the
 * CPU or the build has no AVX-512). */
int lp_qx512_row_checked (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
gboolean lp_qx512_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
/* Q4_K / Q5_K with their search in AVX-512 intrinsics (quant_ksearch_x86.c;
 * FALSE for other types, CPUs and builds); the rest is lp_qfast_row_portable's. */
gboolean lp_qx86_krow (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
/* make_qkx2_quants (importance FALSE) / make_qkx3_quants (TRUE) with ggml's
 * Q4_K (nmax 15) / Q5_K (31) arguments on n_lanes (1 .. 48) sub-blocks of
 * 32 values at once, x and w as [value][sub-block]: codes L, each
 * sub-block's scale and -min.  Only where lp_cpu_have_avx512 (). */
/* The 32 values of sub-block j of nsb (1 .. 6) super-blocks at src as column
 * j of dst, for 48 columns (past 8 * nsb: the last super-block's again).
 * Only where lp_cpu_have_avx512 (). */
void lp_qx86_ktranspose (const float *src, int nsb, float (*dst)[48]);
void lp_qx86_ksearch (int n_lanes, int nmax, gboolean importance, const float (*x)[48], const float (*w)[48],
                      int (*L)[48], float *scale, float *the_min);
gboolean lp_qfast_row_portable (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst);
